//! The image registry: image references, deterministic image ids, registration with one
//! default image, and the resolution of the image a run or a request names.
//!
//! An image id is `<name>:<tag>-<8 hex>` (`<name>@<digest>-<8 hex>` for a digest), the hex being
//! the start of a SHA-256 over the registry, the name, the tag and the configuration (cpu,
//! memory, timeout, service account). The registry is part of the hash, so
//! `ghcr.io/acme/tool:1` and `docker.io/acme/tool:1` never share an id; the same reference and
//! configuration always give the same id, which is what makes registering twice a no-op.

use sha2::{Digest, Sha256};

use crate::error::DomainError;
use crate::model::{MAX_TIMEOUT_SECS, Resources};
use crate::ports::{MakeDefault, Registered};
use crate::service::{Caller, Service};

/// Longest image reference accepted, in bytes.
pub const MAX_IMAGE_REF: usize = 256;
/// Longest image id: a reference at its longest, `:latest` and `-` with 8 hex digits.
pub const MAX_IMAGE_ID: usize = MAX_IMAGE_REF + 16;
/// Longest service account accepted, in bytes.
pub const MAX_SERVICE_ACCOUNT: usize = 254;
/// The registry of a reference that names none (what Docker pulls from).
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A registered image as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Deterministic id (see the module documentation).
    pub id: String,
    /// The reference as registered: what compute pulls.
    pub image: String,
    /// Registry host (`docker.io` when the reference names none).
    pub registry: String,
    /// Repository path without the registry.
    pub name: String,
    /// Tag, digest (`sha256:…`) or `tag@digest`; `latest` when the reference has neither.
    pub tag: String,
    /// CPU for runs in this image, in thousandths of a core (`None`: the server's default).
    pub cpu_millis: Option<u64>,
    /// Memory for runs in this image, in MiB.
    pub memory_mb: Option<u64>,
    /// Timeout of runs in this image that set none, in seconds.
    pub timeout_secs: Option<u64>,
    /// Identity runs in this image get from compute (a Cloud Run service account).
    pub service_account: Option<String>,
    /// Runs that name no image use this one. At most one image is the default.
    pub is_default: bool,
    /// Email of the user who registered it.
    pub created_by: String,
    /// When it was registered (epoch ms).
    pub created_at_ms: i64,
    /// Request that registered it.
    pub created_by_request_id: String,
    /// Last request that changed it (registered it, or moved the default to or from it).
    pub modified_by_request_id: String,
}

/// What compute needs to know about an image to run commands in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The image id.
    pub id: String,
    /// The reference to pull.
    pub image: String,
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Default timeout in seconds.
    pub timeout_secs: Option<u64>,
    /// Service account of the runs.
    pub service_account: Option<String>,
}

impl Image {
    /// What compute needs of it.
    pub fn spec(&self) -> ImageSpec {
        ImageSpec {
            id: self.id.clone(),
            image: self.image.clone(),
            cpu_millis: self.cpu_millis,
            memory_mb: self.memory_mb,
            timeout_secs: self.timeout_secs,
            service_account: self.service_account.clone(),
        }
    }

    /// The API representation.
    pub fn to_api(&self) -> runvoy_proto::ImageInfo {
        runvoy_proto::ImageInfo {
            image_id: self.id.clone(),
            image: self.image.clone(),
            registry: self.registry.clone(),
            image_name: self.name.clone(),
            image_tag: self.tag.clone(),
            cpu: self.cpu_millis.map(|m| m as f64 / 1000.0),
            memory: self.memory_mb,
            timeout: self.timeout_secs,
            service_account: self.service_account.clone(),
            is_default: self.is_default,
            created_by: self.created_by.clone(),
            created_at: crate::clock::rfc3339(self.created_at_ms),
            created_by_request_id: self.created_by_request_id.clone(),
            modified_by_request_id: self.modified_by_request_id.clone(),
        }
    }
}

/// A parsed image reference: `[registry/]name[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, lower-case (`docker.io` when none is named).
    pub registry: String,
    /// Repository path (`library/` dropped from Docker Hub's official images, as Docker shows
    /// them).
    pub name: String,
    /// The tag, when given.
    pub tag: Option<String>,
    /// The digest (`sha256:<64 hex>`), when given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// The tag part shown and hashed: `tag`, `digest`, `tag@digest`, or `latest`.
    pub fn tag_part(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => format!("{t}@{d}"),
            (Some(t), None) => t.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// True when the reference names a tag or a digest (not just a repository).
    pub fn is_pinned(&self) -> bool {
        self.tag.is_some() || self.digest.is_some()
    }

    /// The id prefix: `name:tag`, `name@digest` or `name:tag@digest`.
    fn short(&self) -> String {
        match (&self.tag, &self.digest) {
            (None, Some(d)) => format!("{}@{d}", self.name),
            _ => format!("{}:{}", self.name, self.tag_part()),
        }
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && !c.contains("..")
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    (1..=128).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

fn valid_digest(d: &str) -> bool {
    let Some((algo, hex)) = d.split_once(':') else {
        return false;
    };
    let algo_ok = !algo.is_empty()
        && algo
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c));
    let hex_ok = hex.len() >= 32
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    algo_ok && hex_ok && (algo != "sha256" || hex.len() == 64)
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

/// Parses and checks an image reference. The registry is the first path segment when it
/// contains `.` or `:` or is `localhost`; the tag defaults to `latest`; a digest
/// (`@sha256:<64 hex>`) is kept. The message says what is wrong.
pub fn parse_reference(s: &str) -> Result<ImageRef, String> {
    parse_bounded(s, MAX_IMAGE_REF)
}

fn parse_bounded(s: &str, max: usize) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("the image reference is empty".into());
    }
    if s.len() > max {
        return Err(format!(
            "the image reference is longer than {MAX_IMAGE_REF} characters"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c)))
    {
        return Err(format!(
            "the image reference contains {c:?}; use letters, digits and . _ - / : @ only"
        ));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            if !valid_digest(d) {
                return Err(format!(
                    "invalid digest {d:?}: use ALGORITHM:HEX, e.g. sha256: and 64 hex digits"
                ));
            }
            (r, Some(d.to_owned()))
        }
        None => (s, None),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let has_registry = segments.len() > 1
        && (segments[0].contains('.') || segments[0].contains(':') || segments[0] == "localhost");
    let (registry, path) = if has_registry {
        if !valid_registry(segments[0]) {
            return Err(format!("invalid registry {:?}", segments[0]));
        }
        (segments[0].to_ascii_lowercase(), &segments[1..])
    } else {
        (DEFAULT_REGISTRY.to_owned(), &segments[..])
    };
    let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
        DEFAULT_REGISTRY.to_owned()
    } else {
        registry
    };
    let (last, tag) = match path.last().and_then(|l| l.split_once(':')) {
        Some((n, t)) => {
            if !valid_tag(t) {
                return Err(format!(
                    "invalid tag {t:?}: use at most 128 letters, digits, _ . -, not starting \
                     with . or -"
                ));
            }
            (n, Some(t.to_owned()))
        }
        None => (path.last().copied().unwrap_or_default(), None),
    };
    let mut parts: Vec<&str> = path[..path.len().saturating_sub(1)].to_vec();
    parts.push(last);
    for p in &parts {
        if p.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "invalid repository name {p:?}: repository names must be lower-case"
            ));
        }
        if !valid_component(p) {
            return Err(format!(
                "invalid repository name component {p:?}: use lower-case letters, digits and \
                 . _ -, starting and ending with a letter or digit"
            ));
        }
    }
    if registry == DEFAULT_REGISTRY && parts.len() == 2 && parts[0] == "library" {
        parts.remove(0);
    }
    Ok(ImageRef {
        registry,
        name: parts.join("/"),
        tag,
        digest,
    })
}

/// The configuration that is part of an image's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Timeout in seconds.
    pub timeout_secs: Option<u64>,
    /// Service account.
    pub service_account: Option<String>,
}

/// The deterministic id of a reference with a configuration. No field can hold a newline, so
/// the hashed text is unambiguous.
pub fn image_id(r: &ImageRef, c: &ImageConfig) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let text = format!(
        "runvoy-image-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        r.registry,
        r.name,
        r.tag_part(),
        opt(c.cpu_millis),
        opt(c.memory_mb),
        opt(c.timeout_secs),
        c.service_account.as_deref().unwrap_or("-"),
    );
    let digest = Sha256::digest(text.as_bytes());
    format!("{}-{}", r.short(), hex::encode(&digest[..4]))
}

/// True when `s` has the shape of an image id (`<reference>-<8 hex>`): only such strings are
/// looked up by id, so no odd name ever reaches a store's key space.
pub fn is_image_id(s: &str) -> bool {
    s.len() <= MAX_IMAGE_ID
        && s.rsplit_once('-').is_some_and(|(r, hex)| {
            hex.len() == 8
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                // The id's prefix may be longer than the reference (`:latest` added).
                && parse_bounded(r, MAX_IMAGE_ID).is_ok()
        })
}

/// What a name resolved to among the registered images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Exactly one image.
    One(Box<Image>),
    /// Several images match; their ids.
    Ambiguous(Vec<String>),
    /// None.
    None,
}

/// Finds the image `query` names among `images`: its id; else the reference exactly as
/// registered; else the same registry, name and tag (`latest` when the query names no tag,
/// then any tag of that name).
pub fn resolve(images: &[Image], query: &str) -> Resolved {
    let pick = |m: Vec<&Image>| match m.len() {
        0 => Resolved::None,
        1 => Resolved::One(Box::new(m[0].clone())),
        _ => Resolved::Ambiguous(m.iter().map(|i| i.id.clone()).collect()),
    };
    if let Some(i) = images.iter().find(|i| i.id == query) {
        return Resolved::One(Box::new(i.clone()));
    }
    let exact: Vec<&Image> = images.iter().filter(|i| i.image == query).collect();
    if !exact.is_empty() {
        return pick(exact);
    }
    let Ok(r) = parse_reference(query) else {
        return Resolved::None;
    };
    let same_name = |i: &&Image| i.registry == r.registry && i.name == r.name;
    let tagged: Vec<&Image> = images
        .iter()
        .filter(same_name)
        .filter(|i| i.tag == r.tag_part())
        .collect();
    if !tagged.is_empty() || r.is_pinned() {
        return pick(tagged);
    }
    pick(images.iter().filter(same_name).collect())
}

fn ambiguous(query: &str, ids: &[String]) -> DomainError {
    DomainError::ImageAmbiguous(format!(
        "{query:?} matches {} registered images ({}); name one by its image id",
        ids.len(),
        ids.join(", ")
    ))
}

/// Checks an image's cpu and memory against the server's maxima for runs: an image cannot give
/// its runs more than a run could ask for itself.
pub(crate) fn check_image_resources(
    what: &str,
    cpu_millis: Option<u64>,
    memory_mb: Option<u64>,
    max: &Resources,
) -> Result<(), DomainError> {
    let check = |name: &str, unit: &str, asked: Option<u64>, max: Option<u64>| match (asked, max) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(DomainError::Invalid(format!(
            "{what} sets {name}, and this server does not let runs change {name}"
        ))),
        (Some(a), Some(m)) if a > m => Err(DomainError::Invalid(format!(
            "{what} sets {name} {a}{unit}, above this server's maximum of {m}{unit}"
        ))),
        _ => Ok(()),
    };
    check("memory", " MiB", memory_mb, max.memory_mb)?;
    check("cpu", "/1000 cores", cpu_millis, max.cpu_millis)
}

/// The result of [`Service::register_image`].
#[derive(Debug, Clone)]
pub struct RegisteredImage {
    /// The image as stored now.
    pub image: Image,
    /// False when the same image and configuration was registered already (nothing new was
    /// stored; only the default may have moved).
    pub created: bool,
}

/// The image a run executes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunImage {
    /// Recorded on the execution: the image id, or the server's default image name when no
    /// registered image applies.
    pub id: String,
    /// Given to compute: the reference to pull.
    pub reference: String,
    /// The registered image, when one applies.
    pub image: Option<Image>,
}

impl Service {
    /// Registers an image (idempotent: the same reference and configuration give the same id
    /// and store nothing new). The first image becomes the default unless `is_default` is
    /// false; `is_default: true` moves the default to it. Compute prepares the image first
    /// ([`crate::ports::Compute::prepare_image`]), so a registered image is one it accepted.
    pub async fn register_image(
        &self,
        caller: &Caller,
        req: &runvoy_proto::RegisterImageRequest,
    ) -> Result<RegisteredImage, DomainError> {
        let r = parse_reference(&req.image).map_err(DomainError::Invalid)?;
        let cpu_millis = match req.cpu {
            None => None,
            Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => {
                Some(((c * 1000.0).round() as u64).max(1))
            }
            Some(c) => {
                return Err(DomainError::Invalid(format!(
                    "cpu must be above 0 and at most 1024 cores, got {c}"
                )));
            }
        };
        if req.memory == Some(0) {
            return Err(DomainError::Invalid("memory must be above 0 MiB".into()));
        }
        if let Some(t) = req.timeout
            && (t == 0 || t > MAX_TIMEOUT_SECS)
        {
            return Err(DomainError::Invalid(format!(
                "timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds"
            )));
        }
        if let Some(sa) = &req.service_account
            && (sa.is_empty()
                || sa.len() > MAX_SERVICE_ACCOUNT
                || !sa
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"@._-".contains(&c)))
        {
            return Err(DomainError::Invalid(format!(
                "service_account must be 1 to {MAX_SERVICE_ACCOUNT} letters, digits and @ . _ - \
                 (e.g. runner@my-project.iam.gserviceaccount.com)"
            )));
        }
        check_image_resources(
            &format!("image {}", req.image),
            cpu_millis,
            req.memory,
            &self.config.max_resources,
        )?;
        let config = ImageConfig {
            cpu_millis,
            memory_mb: req.memory,
            timeout_secs: req.timeout,
            service_account: req.service_account.clone(),
        };
        let now = self.clock.now_ms();
        let image = Image {
            id: image_id(&r, &config),
            image: req.image.clone(),
            registry: r.registry.clone(),
            name: r.name.clone(),
            tag: r.tag_part(),
            cpu_millis,
            memory_mb: req.memory,
            timeout_secs: req.timeout,
            service_account: req.service_account.clone(),
            is_default: false,
            created_by: caller.user.email.clone(),
            created_at_ms: now,
            created_by_request_id: caller.request_id.clone(),
            modified_by_request_id: caller.request_id.clone(),
        };
        self.compute
            .prepare_image(&image.spec())
            .await
            .map_err(|e| match e {
                crate::ports::ComputeError::Rejected(m) => DomainError::ImageRejected(format!(
                    "compute cannot run image {}: {m}",
                    req.image
                )),
                other => DomainError::Compute(other),
            })?;
        let default = match req.is_default {
            Some(true) => MakeDefault::Yes,
            Some(false) => MakeDefault::No,
            None => MakeDefault::IfNone,
        };
        let Registered { image, created } = self.store.register_image(&image, default).await?;
        Ok(RegisteredImage { image, created })
    }

    /// Every registered image, sorted by id.
    pub async fn list_images(&self) -> Result<Vec<Image>, DomainError> {
        Ok(self.store.list_images().await?)
    }

    /// The image `query` names: its id, or a reference that matches exactly one registered
    /// image (404 when none, 409 `IMAGE_AMBIGUOUS` when several).
    pub async fn get_image(&self, query: &str) -> Result<Image, DomainError> {
        if let Some(i) = self.image_by_id(query).await? {
            return Ok(i);
        }
        match resolve(&self.store.list_images().await?, query) {
            Resolved::One(i) => Ok(*i),
            Resolved::Ambiguous(ids) => Err(ambiguous(query, &ids)),
            Resolved::None => Err(DomainError::NotFound(format!(
                "image {query} is not registered"
            ))),
        }
    }

    /// Removes a registered image (named as for [`Service::get_image`]). Removing the default
    /// leaves no default: runs that name no image then use the server's default image.
    /// Executions that ran in it keep its id.
    pub async fn unregister_image(&self, query: &str) -> Result<Image, DomainError> {
        let image = self.get_image(query).await?;
        self.store
            .delete_image(&image.id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("image {query} is not registered")))
    }

    /// The image a run executes in: the registered image it names (or the default image when
    /// it names none), else the server's default image. Refuses an unknown image, an
    /// ambiguous name, and an image this compute cannot run.
    pub(crate) async fn image_for_run(&self, asked: Option<&str>) -> Result<RunImage, DomainError> {
        let host = &self.config.default_image;
        let registered = match asked {
            Some(q) => match self.image_by_id(q).await? {
                Some(i) => Some(i),
                None => match resolve(&self.store.list_images().await?, q) {
                    Resolved::One(i) => Some(*i),
                    Resolved::Ambiguous(ids) => return Err(ambiguous(q, &ids)),
                    Resolved::None if q == host => None,
                    Resolved::None if !self.compute.runs_images() => {
                        return Err(self.not_supported(q, None));
                    }
                    Resolved::None => {
                        return Err(DomainError::ImageNotFound(format!(
                            "image {q} is not registered; register it first (runvoy images \
                             register {q}) or leave out the image to use the default"
                        )));
                    }
                },
            },
            None => self
                .store
                .list_images()
                .await?
                .into_iter()
                .find(|i| i.is_default),
        };
        let Some(image) = registered else {
            return Ok(RunImage {
                id: host.clone(),
                reference: host.clone(),
                image: None,
            });
        };
        // The compute that runs the host's own programs runs only the host image, whatever
        // it is registered as.
        if !self.compute.runs_images() && image.image != *host {
            return Err(self.not_supported(&image.image, Some(&image.id)));
        }
        Ok(RunImage {
            id: image.id.clone(),
            reference: image.image.clone(),
            image: Some(image),
        })
    }

    /// The image of id `id`; `None` without asking the store when `id` has no id's shape.
    async fn image_by_id(&self, id: &str) -> Result<Option<Image>, DomainError> {
        if !is_image_id(id) {
            return Ok(None);
        }
        Ok(self.store.get_image(id).await?)
    }

    fn not_supported(&self, reference: &str, id: Option<&str>) -> DomainError {
        let named = match id {
            Some(id) => format!("image {reference:?} (image id {id})"),
            None => format!("image {reference:?}"),
        };
        DomainError::ImageNotSupported(format!(
            "the {} compute backend runs commands with this machine's own programs and cannot \
             run {named}; name image {:?} or leave out the image (when the default registered \
             image is one this backend cannot run, make {:?} the default or unregister it); \
             images run only on a compute backend that runs containers",
            self.compute.platform(),
            self.config.default_image,
            self.config.default_image,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        parse_reference(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn references_split_into_registry_name_and_tag() {
        let a = r("alpine");
        assert_eq!(
            (a.registry.as_str(), a.name.as_str(), a.tag_part().as_str()),
            ("docker.io", "alpine", "latest")
        );
        assert!(!a.is_pinned());
        let g = r("ghcr.io/acme/tools/cli:1.2.3");
        assert_eq!(
            (g.registry.as_str(), g.name.as_str(), g.tag.as_deref()),
            ("ghcr.io", "acme/tools/cli", Some("1.2.3"))
        );
        let l = r("localhost/app");
        assert_eq!((l.registry.as_str(), l.name.as_str()), ("localhost", "app"));
        let p = r("registry.example.com:5000/team/app:v2");
        assert_eq!(p.registry, "registry.example.com:5000");
        assert_eq!(p.tag.as_deref(), Some("v2"));
        let port = r("myhost:5000/app");
        assert_eq!(
            (port.registry.as_str(), port.name.as_str()),
            ("myhost:5000", "app")
        );
        // A first segment without '.', ':' or localhost is part of the name.
        let n = r("acme/app:1");
        assert_eq!(
            (n.registry.as_str(), n.name.as_str()),
            ("docker.io", "acme/app")
        );
        // Docker Hub's official images, however they are written.
        for s in [
            "alpine:3.19",
            "docker.io/alpine:3.19",
            "docker.io/library/alpine:3.19",
            "index.docker.io/library/alpine:3.19",
            "library/alpine:3.19",
        ] {
            let x = r(s);
            assert_eq!(
                (x.registry.as_str(), x.name.as_str(), x.tag_part().as_str()),
                ("docker.io", "alpine", "3.19"),
                "{s}"
            );
        }
        let d = format!("alpine@sha256:{}", "a".repeat(64));
        let x = r(&d);
        assert_eq!(x.tag, None);
        assert_eq!(x.digest, Some(format!("sha256:{}", "a".repeat(64))));
        assert_eq!(x.tag_part(), format!("sha256:{}", "a".repeat(64)));
        let both = r(&format!("alpine:3.19@sha256:{}", "b".repeat(64)));
        assert_eq!(both.tag_part(), format!("3.19@sha256:{}", "b".repeat(64)));
        assert!(both.is_pinned());
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        let long = "a".repeat(MAX_IMAGE_REF + 1);
        for bad in [
            "",
            " alpine",
            "alpine ",
            "alp ine",
            "alpine\n",
            "Alpine",
            "acme/App:1",
            "alpine:",
            "alpine:-x",
            "alpine:a:b",
            "/alpine",
            "alpine/",
            "a//b",
            "-alpine",
            "alpine-",
            "a..b",
            "alpine@sha256:abc",
            "alpine@sha256:",
            "alpine@",
            "alpine@md5",
            "ghcr.io:x/app",
            "ghcr..io/app",
            "alpine$",
            "é",
            long.as_str(),
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_reference(&"a".repeat(MAX_IMAGE_REF)).is_ok());
        assert!(
            parse_reference("Alpine")
                .unwrap_err()
                .contains("lower-case")
        );
    }

    #[test]
    fn ids_are_deterministic_and_include_the_registry_and_the_configuration() {
        let c = ImageConfig::default();
        let id = image_id(&r("alpine:3.19"), &c);
        assert_eq!(id, image_id(&r("alpine:3.19"), &c), "deterministic");
        assert_eq!(id, image_id(&r("docker.io/library/alpine:3.19"), &c));
        assert!(id.starts_with("alpine:3.19-"), "{id}");
        let hex = id.rsplit_once('-').unwrap().1;
        assert_eq!(hex.len(), 8);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            image_id(&r("alpine"), &c).split_once('-').unwrap().0,
            "alpine:latest"
        );
        // The same name and tag in two registries: two ids (the Go runvoy's collision).
        let hub = image_id(&r("acme/tool:1"), &c);
        let ghcr = image_id(&r("ghcr.io/acme/tool:1"), &c);
        let local = image_id(&r("localhost:5000/acme/tool:1"), &c);
        assert!(hub.starts_with("acme/tool:1-") && ghcr.starts_with("acme/tool:1-"));
        assert_ne!(hub, ghcr);
        assert_ne!(ghcr, local);
        // Each configuration field changes the id.
        let variants = [
            ImageConfig {
                cpu_millis: Some(500),
                ..c.clone()
            },
            ImageConfig {
                memory_mb: Some(512),
                ..c.clone()
            },
            ImageConfig {
                timeout_secs: Some(60),
                ..c.clone()
            },
            ImageConfig {
                service_account: Some("sa@p.iam.gserviceaccount.com".into()),
                ..c.clone()
            },
        ];
        let mut ids: Vec<String> = variants
            .iter()
            .map(|v| image_id(&r("alpine:3.19"), v))
            .collect();
        ids.push(id.clone());
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "{ids:?}");
        let digest = format!("alpine@sha256:{}", "c".repeat(64));
        assert!(
            image_id(&r(&digest), &c).starts_with(&format!("alpine@sha256:{}-", "c".repeat(64)))
        );
        assert_ne!(
            image_id(&r("alpine:3.19"), &c),
            image_id(&r("alpine:3.20"), &c)
        );
    }

    #[test]
    fn only_id_shaped_names_are_looked_up_by_id() {
        let id = image_id(&r("ghcr.io/acme/tool:1"), &ImageConfig::default());
        assert!(is_image_id(&id), "{id}");
        let longest = image_id(&r(&"a".repeat(MAX_IMAGE_REF)), &ImageConfig::default());
        assert_eq!(longest.len(), MAX_IMAGE_ID);
        assert!(is_image_id(&longest));
        for not in [
            "alpine",
            "alpine:3.19",
            "alpine:3.19-0123abc",
            "alpine:3.19-0123ABCD",
            "alpine:3.19-0123abcg",
            ".",
            "__x__-01234567",
            "-01234567",
        ] {
            assert!(!is_image_id(not), "{not}");
        }
        // A tag can look like an id's tail; it is then looked up by id first, then by name.
        assert!(is_image_id("alpine:1.0-deadbeef"));
    }

    fn img(reference: &str, config: ImageConfig, is_default: bool) -> Image {
        let p = r(reference);
        Image {
            id: image_id(&p, &config),
            image: reference.into(),
            registry: p.registry.clone(),
            name: p.name.clone(),
            tag: p.tag_part(),
            cpu_millis: config.cpu_millis,
            memory_mb: config.memory_mb,
            timeout_secs: config.timeout_secs,
            service_account: config.service_account,
            is_default,
            created_by: "a@x.io".into(),
            created_at_ms: 0,
            created_by_request_id: "r".into(),
            modified_by_request_id: "r".into(),
        }
    }

    #[test]
    fn names_resolve_only_when_unambiguous() {
        let a319 = img("alpine:3.19", ImageConfig::default(), true);
        let a320 = img("alpine:3.20", ImageConfig::default(), false);
        let big = img(
            "alpine:3.20",
            ImageConfig {
                memory_mb: Some(2048),
                ..Default::default()
            },
            false,
        );
        let ghcr = img("ghcr.io/acme/tool:1", ImageConfig::default(), false);
        let all = vec![a319.clone(), a320.clone(), big.clone(), ghcr.clone()];
        let one = |q: &str| match resolve(&all, q) {
            Resolved::One(i) => i.id,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(one(&a319.id), a319.id);
        assert_eq!(one(&big.id), big.id);
        assert_eq!(one("alpine:3.19"), a319.id);
        assert_eq!(one("docker.io/library/alpine:3.19"), a319.id);
        assert_eq!(one("ghcr.io/acme/tool:1"), ghcr.id);
        assert_eq!(
            one("ghcr.io/acme/tool"),
            ghcr.id,
            "any tag of an unambiguous name"
        );
        assert!(matches!(resolve(&all, "alpine:3.20"), Resolved::Ambiguous(ids) if ids.len() == 2));
        assert!(matches!(resolve(&all, "alpine"), Resolved::Ambiguous(ids) if ids.len() == 3));
        assert_eq!(
            resolve(&all, "acme/tool:1"),
            Resolved::None,
            "another registry"
        );
        assert_eq!(resolve(&all, "alpine:3.21"), Resolved::None);
        assert_eq!(resolve(&all, "not a ref"), Resolved::None);
        // `latest` wins for a name without a tag, as Docker reads it.
        let latest = img("alpine", ImageConfig::default(), false);
        let mut with_latest = all.clone();
        with_latest.push(latest.clone());
        assert!(matches!(resolve(&with_latest, "alpine"), Resolved::One(i) if i.id == latest.id));
    }

    mod service {
        use std::sync::{Arc, Mutex};

        use async_trait::async_trait;
        use runvoy_proto::{RegisterImageRequest, RunRequest, RunResources};

        use super::super::*;
        use crate::clock::ManualClock;
        use crate::hub::LogHub;
        use crate::model::{JobSpec, Role};
        use crate::ports::{Compute, ComputeError, ComputeState, LogSource, Store};
        use crate::processor::Processor;
        use crate::service::{Caller, Service, ServiceConfig};
        use crate::testing::{FakeCompute, FakeLogSource, MemStore};

        /// A compute that runs images or not, records what it started and prepared, and
        /// refuses to prepare images whose reference contains `bad`.
        struct Spy {
            inner: FakeCompute,
            images: bool,
            started: Mutex<Vec<JobSpec>>,
            prepared: Mutex<Vec<ImageSpec>>,
        }

        #[async_trait]
        impl Compute for Spy {
            fn platform(&self) -> &str {
                "spy"
            }
            fn runs_images(&self) -> bool {
                self.images
            }
            async fn prepare_image(&self, image: &ImageSpec) -> Result<(), ComputeError> {
                if image.image.contains("bad") {
                    return Err(ComputeError::Rejected("no such repository".into()));
                }
                if image.image.contains("flaky") {
                    return Err(ComputeError::Unavailable("admin API down".into()));
                }
                self.prepared.lock().unwrap().push(image.clone());
                Ok(())
            }
            async fn start(&self, spec: &JobSpec) -> Result<(), ComputeError> {
                self.started.lock().unwrap().push(spec.clone());
                self.inner.start(spec).await
            }
            async fn state(&self, id: &str) -> Result<ComputeState, ComputeError> {
                self.inner.state(id).await
            }
            async fn kill(&self, id: &str) -> Result<(), ComputeError> {
                self.inner.kill(id).await
            }
            async fn list(&self) -> Result<Vec<String>, ComputeError> {
                self.inner.list().await
            }
            async fn cleanup(&self, id: &str) -> Result<bool, ComputeError> {
                self.inner.cleanup(id).await
            }
        }

        fn service(images: bool) -> (Service, Arc<Spy>, Arc<MemStore>) {
            let spy = Arc::new(Spy {
                inner: FakeCompute::new(),
                images,
                started: Mutex::default(),
                prepared: Mutex::default(),
            });
            let store = Arc::new(MemStore::new());
            let clock = Arc::new(ManualClock::new(1_800_000_000_000));
            let hub = Arc::new(LogHub::new());
            let source: Arc<dyn LogSource> = Arc::new(FakeLogSource::new());
            let compute: Arc<dyn Compute> = spy.clone();
            let processor = Arc::new(Processor::new(
                store.clone(),
                compute.clone(),
                source,
                hub.clone(),
                clock.clone(),
                10,
            ));
            let mut config = ServiceConfig::new("local");
            config.max_resources = Resources {
                memory_mb: Some(4096),
                cpu_millis: Some(2000),
                pids: None,
                workspace_mb: None,
            };
            let svc = Service {
                store: store.clone(),
                compute,
                hub,
                clock,
                processor,
                config,
                admission: Default::default(),
                secrets_grant: None,
            };
            (svc, spy, store)
        }

        fn caller(rid: &str) -> Caller {
            Caller {
                user: crate::users::server_created_user("ops@x.io", Role::Operator, "h".into(), 0),
                request_id: rid.into(),
            }
        }

        fn reg(image: &str) -> RegisterImageRequest {
            RegisterImageRequest {
                image: image.into(),
                ..Default::default()
            }
        }

        fn run(image: Option<&str>) -> RunRequest {
            RunRequest {
                command: "true".into(),
                image: image.map(str::to_owned),
                ..Default::default()
            }
        }

        #[tokio::test]
        async fn the_first_image_is_the_default_and_set_default_moves_it() {
            let (svc, spy, _) = service(true);
            let a = svc
                .register_image(&caller("r1"), &reg("alpine:3.19"))
                .await
                .unwrap();
            assert!(a.created && a.image.is_default);
            assert_eq!(a.image.created_by, "ops@x.io");
            assert_eq!(spy.prepared.lock().unwrap().len(), 1, "compute prepared it");
            let again = svc
                .register_image(&caller("r2"), &reg("alpine:3.19"))
                .await
                .unwrap();
            assert!(!again.created);
            assert_eq!(again.image.id, a.image.id);
            assert_eq!(again.image.created_by_request_id, "r1");
            let b = svc
                .register_image(
                    &caller("r3"),
                    &RegisterImageRequest {
                        is_default: Some(true),
                        ..reg("ghcr.io/acme/tool:1")
                    },
                )
                .await
                .unwrap();
            assert!(b.image.is_default);
            let all = svc.list_images().await.unwrap();
            let defaults: Vec<&str> = all
                .iter()
                .filter(|i| i.is_default)
                .map(|i| i.id.as_str())
                .collect();
            assert_eq!(defaults, vec![b.image.id.as_str()]);
            // Unregistering the default leaves none: runs fall back to the server's image.
            svc.unregister_image("ghcr.io/acme/tool:1").await.unwrap();
            assert!(
                svc.list_images()
                    .await
                    .unwrap()
                    .iter()
                    .all(|i| !i.is_default)
            );
            let e = svc.run(&caller("r4"), run(None)).await.unwrap();
            assert_eq!(e.image, "local");
            assert!(matches!(
                svc.unregister_image("ghcr.io/acme/tool:1").await,
                Err(DomainError::NotFound(_))
            ));
        }

        #[tokio::test]
        async fn runs_resolve_their_image_and_inherit_its_limits() {
            let (svc, spy, _) = service(true);
            // No image registered: the server's default image, as before.
            let e = svc.run(&caller("r0"), run(None)).await.unwrap();
            assert_eq!(e.image, "local");
            let img = svc
                .register_image(
                    &caller("r1"),
                    &RegisterImageRequest {
                        cpu: Some(0.5),
                        memory: Some(1024),
                        timeout: Some(300),
                        ..reg("ghcr.io/acme/tool:1")
                    },
                )
                .await
                .unwrap()
                .image;
            assert_eq!(img.cpu_millis, Some(500));
            // Without an image: the default, its reference given to compute, its id recorded.
            let e = svc.run(&caller("r2"), run(None)).await.unwrap();
            assert_eq!(e.image, img.id);
            assert_eq!(e.timeout_secs, Some(300));
            let spec = spy.started.lock().unwrap().last().cloned().unwrap();
            assert_eq!(spec.image, "ghcr.io/acme/tool:1");
            assert_eq!(spec.timeout_secs, Some(300));
            assert_eq!(spec.resources.memory_mb, Some(1024));
            assert_eq!(spec.resources.cpu_millis, Some(500));
            // By id and by name:tag; what the run sets itself wins.
            for q in [img.id.as_str(), "ghcr.io/acme/tool:1", "ghcr.io/acme/tool"] {
                let mut r = run(Some(q));
                r.timeout = Some(5);
                r.resources = Some(RunResources {
                    memory_mb: Some(64),
                    ..Default::default()
                });
                let e = svc.run(&caller("r3"), r).await.unwrap();
                assert_eq!(
                    (e.image.as_str(), e.timeout_secs),
                    (img.id.as_str(), Some(5)),
                    "{q}"
                );
                let spec = spy.started.lock().unwrap().last().cloned().unwrap();
                assert_eq!(spec.resources.memory_mb, Some(64));
                assert_eq!(spec.resources.cpu_millis, Some(500));
            }
            // Unknown and ambiguous images are refused before anything is stored.
            let before = spy.started.lock().unwrap().len();
            assert!(matches!(
                svc.run(&caller("r4"), run(Some("alpine:9"))).await,
                Err(DomainError::ImageNotFound(_))
            ));
            svc.register_image(
                &caller("r5"),
                &RegisterImageRequest {
                    memory: Some(2048),
                    ..reg("ghcr.io/acme/tool:1")
                },
            )
            .await
            .unwrap();
            let Err(DomainError::ImageAmbiguous(m)) = svc
                .run(&caller("r6"), run(Some("ghcr.io/acme/tool:1")))
                .await
            else {
                panic!("ambiguous");
            };
            assert!(m.contains(&img.id), "{m}");
            assert_eq!(spy.started.lock().unwrap().len(), before);
        }

        #[tokio::test]
        async fn registration_checks_its_input_and_what_compute_says() {
            let (svc, spy, store) = service(true);
            for bad in [
                reg("Alpine"),
                reg("alpine latest"),
                RegisterImageRequest {
                    cpu: Some(0.0),
                    ..reg("alpine")
                },
                RegisterImageRequest {
                    cpu: Some(f64::NAN),
                    ..reg("alpine")
                },
                RegisterImageRequest {
                    memory: Some(0),
                    ..reg("alpine")
                },
                RegisterImageRequest {
                    timeout: Some(0),
                    ..reg("alpine")
                },
                RegisterImageRequest {
                    service_account: Some("a b".into()),
                    ..reg("alpine")
                },
                // Above the server's maxima for runs.
                RegisterImageRequest {
                    memory: Some(8192),
                    ..reg("alpine")
                },
                RegisterImageRequest {
                    cpu: Some(3.0),
                    ..reg("alpine")
                },
            ] {
                let r = svc.register_image(&caller("r"), &bad).await;
                assert!(matches!(r, Err(DomainError::Invalid(_))), "{bad:?}: {r:?}");
            }
            assert!(matches!(
                svc.register_image(&caller("r"), &reg("ghcr.io/acme/bad:1"))
                    .await,
                Err(DomainError::ImageRejected(_))
            ));
            assert!(matches!(
                svc.register_image(&caller("r"), &reg("ghcr.io/acme/flaky:1"))
                    .await,
                Err(DomainError::Compute(ComputeError::Unavailable(_)))
            ));
            assert!(
                store.list_images().await.unwrap().is_empty(),
                "nothing stored"
            );
            assert!(spy.prepared.lock().unwrap().is_empty());
        }

        #[tokio::test]
        async fn a_compute_that_runs_no_images_runs_only_the_host_image() {
            let (svc, _, _) = service(false);
            // Registered on every backend.
            let alpine = svc
                .register_image(&caller("r1"), &reg("alpine:3.19"))
                .await
                .unwrap();
            assert!(alpine.image.is_default);
            // But a run in it, named or by default, is refused.
            for r in [
                run(Some("alpine:3.19")),
                run(Some(&alpine.image.id)),
                run(None),
            ] {
                let res = svc.run(&caller("r2"), r).await;
                let Err(DomainError::ImageNotSupported(m)) = res else {
                    panic!("{res:?}");
                };
                assert!(m.contains("alpine:3.19"), "{m}");
            }
            // An unregistered image is refused as one this backend cannot run.
            assert!(matches!(
                svc.run(&caller("r3"), run(Some("debian:12"))).await,
                Err(DomainError::ImageNotSupported(_))
            ));
            // The host image registered as the default: runs without an image use it.
            let host = svc
                .register_image(
                    &caller("r4"),
                    &RegisterImageRequest {
                        is_default: Some(true),
                        timeout: Some(60),
                        ..reg("local")
                    },
                )
                .await
                .unwrap()
                .image;
            let e = svc.run(&caller("r5"), run(None)).await.unwrap();
            assert_eq!(
                (e.image.as_str(), e.timeout_secs),
                (host.id.as_str(), Some(60))
            );
            let e = svc.run(&caller("r6"), run(Some("local"))).await.unwrap();
            assert_eq!(e.image, host.id);
        }
    }
}
