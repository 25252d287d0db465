//! Secrets: named values a run injects into its command's environment. The store keeps only
//! metadata and the value sealed by the [`crate::ports::Cipher`]; the associated data binds the
//! sealed value to the secret's name, so it cannot be copied onto another secret.

use crate::ports::Sealed;

/// A stored secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Unique name (`valid_secret_name`).
    pub name: String,
    /// The environment variable the value is injected as.
    pub key_name: String,
    /// Free text.
    pub description: String,
    /// The value, sealed with [`secret_aad`] of `name`.
    pub value: Sealed,
    /// Email of the creator: the owner, who may reveal it.
    pub created_by: String,
    /// Epoch ms.
    pub created_at_ms: i64,
    /// Email of the last writer.
    pub updated_by: String,
    /// Epoch ms of the last write.
    pub updated_at_ms: i64,
    /// Request that created it.
    pub created_by_request_id: String,
    /// Request that last changed it.
    pub modified_by_request_id: String,
}

/// A change applied atomically by [`crate::ports::Store::update_secret`]; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPatch {
    /// New environment variable name.
    pub key_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New sealed value.
    pub value: Option<Sealed>,
    /// Who changes it.
    pub updated_by: String,
    /// When (epoch ms).
    pub updated_at_ms: i64,
    /// The request changing it.
    pub request_id: String,
}

impl Secret {
    /// Applies a patch in place (what every store does inside its transaction).
    pub fn apply(&mut self, p: &SecretPatch) {
        if let Some(k) = &p.key_name {
            self.key_name = k.clone();
        }
        if let Some(d) = &p.description {
            self.description = d.clone();
        }
        if let Some(v) = &p.value {
            self.value = v.clone();
        }
        self.updated_by = p.updated_by.clone();
        self.updated_at_ms = p.updated_at_ms;
        self.modified_by_request_id = p.request_id.clone();
    }
}

/// The associated data a secret's value is sealed with: its name under a label of its own.
pub fn secret_aad(name: &str) -> Vec<u8> {
    format!("runvoy-secret:{name}").into_bytes()
}

/// Most bytes of a secret name.
pub const MAX_SECRET_NAME: usize = 128;
/// Most bytes of a secret value.
pub const MAX_SECRET_VALUE: usize = 64 * 1024;
/// Most bytes of a description.
pub const MAX_SECRET_DESCRIPTION: usize = 1024;
/// Most secrets one run may name.
pub const MAX_RUN_SECRETS: usize = 32;

/// Secret names: 1 to 128 of `[A-Za-z0-9._-]`, starting with a letter or digit, so that they
/// are safe in URL paths, document ids and file names.
pub fn valid_secret_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_SECRET_NAME
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Environment names a secret may not be injected as: the runner's and sidecar's own settings
/// (`RUNVOY_*`) and the loader's and shell's, which would change what runs.
pub fn reserved_key_name(k: &str) -> bool {
    k.starts_with("RUNVOY_")
        || k.starts_with("LD_")
        || matches!(k, "PATH" | "HOME" | "IFS" | "ENV" | "BASH_ENV" | "SHELL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_secret_name("github-token") && valid_secret_name("a.b_C9"));
        assert!(!valid_secret_name("") && !valid_secret_name("-x") && !valid_secret_name("a/b"));
        assert!(!valid_secret_name(&"a".repeat(129)) && valid_secret_name(&"a".repeat(128)));
        assert!(reserved_key_name("RUNVOY_COMMAND") && reserved_key_name("LD_PRELOAD"));
        assert!(!reserved_key_name("GITHUB_TOKEN"));
        assert_ne!(secret_aad("a"), secret_aad("b"));
    }
}
