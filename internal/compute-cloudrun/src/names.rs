//! Job names derived from images.

use sha2::{Digest, Sha256};

/// Longest job name this adapter derives. Cloud Run names an execution `{job}-{5 characters}`
/// and its task `{execution}-task{index}`; 49 keeps both within a 63-character DNS label.
const MAX_DERIVED: usize = 49;

/// Whether `name` is a valid Cloud Run job id: 1 to 63 characters, lowercase ASCII letters,
/// digits and hyphens, starting with a letter and not ending with a hyphen (a DNS label that
/// starts with a letter).
pub fn valid_job_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Hex of the first 8 bytes of the image reference's SHA-256: the label value that names the
/// image (label values cannot hold `/`, `:` or `@`).
pub(crate) fn image_hash(image: &str) -> String {
    hex::encode(&Sha256::digest(image.as_bytes())[..8])
}

/// The job that runs `image`: `runvoy-{last path segment}-{hash}`. Deterministic, distinct for
/// distinct references (the hash covers the whole reference, tag and digest included), and a
/// valid job name whatever the reference holds.
pub fn job_name(image: &str) -> String {
    let hash = &image_hash(image)[..10];
    let repo = image.rsplit('/').next().unwrap_or(image);
    let repo = repo.split(['@', ':']).next().unwrap_or(repo);
    let mut slug = String::new();
    for c in repo.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let room = MAX_DERIVED - "runvoy-".len() - 1 - hash.len();
    slug.truncate(room);
    let slug = slug.trim_matches('-');
    let name = if slug.is_empty() {
        format!("runvoy-{hash}")
    } else {
        format!("runvoy-{slug}-{hash}")
    };
    debug_assert!(valid_job_name(&name));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_valid_deterministic_and_distinct() {
        let images = [
            "alpine",
            "docker.io/library/alpine:3.20",
            "docker.io/library/alpine:3.21",
            "europe-docker.pkg.dev/p/r/Terraform_Tools@sha256:abcdef",
            "ghcr.io/x/---",
            "localhost:5000/a/very-long-repository-name-that-goes-on-and-on-and-on:tag",
        ];
        let names: Vec<String> = images.iter().map(|i| job_name(i)).collect();
        for (i, n) in images.iter().zip(&names) {
            assert!(valid_job_name(n), "{i} -> {n}");
            assert!(n.len() <= MAX_DERIVED, "{n}");
            assert_eq!(&job_name(i), n);
        }
        let mut uniq = names.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), names.len());
        assert!(names[1].starts_with("runvoy-alpine-"));
        assert!(names[3].starts_with("runvoy-terraform-tools-"));
        assert!(names[4].starts_with("runvoy-") && !names[4].contains("--"));
    }

    #[test]
    fn name_rules() {
        for ok in ["a", "runvoy-x-1", &"a".repeat(63)] {
            assert!(valid_job_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!valid_job_name(bad), "{bad}");
        }
    }
}
