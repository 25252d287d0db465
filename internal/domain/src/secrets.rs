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

/// A secret a run injects: which one and under which environment name. What travels with a
/// run (job spec, fetch token) instead of the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Environment variable name.
    pub key_name: String,
}

/// How an execution's sidecar fetches its secrets: a URL of runvoyd's and a short-lived token
/// good for this execution only (see `POST /api/v1/executions/{id}/secrets`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretsFetch {
    /// Where to POST the token.
    pub url: String,
    /// The token.
    pub token: String,
}

/// Mints the fetch of one execution's secrets (the API layer's HMAC tokens).
pub trait SecretsGrant: Send + Sync + 'static {
    /// The fetch for `execution_id`, good for `refs` only.
    fn grant(&self, execution_id: &str, refs: &[SecretRef]) -> SecretsFetch;
}

use std::sync::Arc;

use crate::error::DomainError;
use crate::model::valid_env_name;
use crate::ports::{Cipher, Clock, Store, StoreError};

/// Secret operations: validation, sealing and opening with the cipher, audit fields.
pub struct SecretVault {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The cipher sealing values.
    pub cipher: Arc<dyn Cipher>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
}

fn check_key_name(k: &str) -> Result<(), DomainError> {
    if !valid_env_name(k) || k.len() > 256 {
        return Err(DomainError::SecretInvalid(format!(
            "key_name {k:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most \
             256 bytes)"
        )));
    }
    if reserved_key_name(k) {
        return Err(DomainError::SecretInvalid(format!(
            "key_name {k} is reserved (RUNVOY_*, LD_*, PATH, HOME, IFS, ENV, BASH_ENV, SHELL)"
        )));
    }
    Ok(())
}

fn check_name(n: &str) -> Result<(), DomainError> {
    if valid_secret_name(n) {
        return Ok(());
    }
    Err(DomainError::SecretInvalid(format!(
        "secret name {n:?} is invalid: use 1 to {MAX_SECRET_NAME} letters, digits, '.', '_' or \
         '-', starting with a letter or digit"
    )))
}

fn check_value(v: &str) -> Result<(), DomainError> {
    if v.len() > MAX_SECRET_VALUE {
        return Err(DomainError::SecretInvalid(format!(
            "the value is longer than {MAX_SECRET_VALUE} bytes"
        )));
    }
    if v.contains('\0') {
        return Err(DomainError::SecretInvalid(
            "the value must not contain NUL bytes".into(),
        ));
    }
    Ok(())
}

fn check_description(d: &str) -> Result<(), DomainError> {
    if d.len() > MAX_SECRET_DESCRIPTION {
        return Err(DomainError::SecretInvalid(format!(
            "the description is longer than {MAX_SECRET_DESCRIPTION} bytes"
        )));
    }
    Ok(())
}

fn not_found(name: &str) -> DomainError {
    DomainError::SecretNotFound(format!("secret {name:?} not found"))
}

impl SecretVault {
    /// Creates a secret, its value sealed bound to its name. A name in use is refused with
    /// [`DomainError::SecretExists`] and the stored secret is untouched (the store's insert
    /// is the one atomic step).
    pub async fn create(
        &self,
        caller: &crate::service::Caller,
        name: &str,
        key_name: &str,
        description: &str,
        value: &str,
    ) -> Result<Secret, DomainError> {
        check_name(name)?;
        check_key_name(key_name)?;
        check_description(description)?;
        check_value(value)?;
        let sealed = self
            .cipher
            .encrypt(value.as_bytes(), &secret_aad(name))
            .await?;
        let now = self.clock.now_ms();
        let s = Secret {
            name: name.to_owned(),
            key_name: key_name.to_owned(),
            description: description.to_owned(),
            value: sealed,
            created_by: caller.user.email.clone(),
            created_at_ms: now,
            updated_by: caller.user.email.clone(),
            updated_at_ms: now,
            created_by_request_id: caller.request_id.clone(),
            modified_by_request_id: caller.request_id.clone(),
        };
        match self.store.create_secret(&s).await {
            Ok(()) => Ok(s),
            Err(StoreError::AlreadyExists(_)) => Err(DomainError::SecretExists(format!(
                "secret {name:?} already exists; nothing was changed (update it with PUT)"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a secret's metadata (the sealed value stays sealed).
    pub async fn get(&self, name: &str) -> Result<Secret, DomainError> {
        if !valid_secret_name(name) {
            return Err(not_found(name));
        }
        self.store
            .get_secret(name)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Every secret, sorted by name.
    pub async fn list(&self) -> Result<Vec<Secret>, DomainError> {
        Ok(self.store.list_secrets().await?)
    }

    /// Changes the named fields; a new value is sealed before anything is written, so a
    /// failure changes nothing.
    pub async fn update(
        &self,
        caller: &crate::service::Caller,
        name: &str,
        key_name: Option<&str>,
        description: Option<&str>,
        value: Option<&str>,
    ) -> Result<Secret, DomainError> {
        self.get(name).await?;
        if let Some(k) = key_name {
            check_key_name(k)?;
        }
        if let Some(d) = description {
            check_description(d)?;
        }
        if let Some(v) = value {
            check_value(v)?;
        }
        if key_name.is_none() && description.is_none() && value.is_none() {
            return Err(DomainError::SecretInvalid(
                "nothing to change: give key_name, description or value".into(),
            ));
        }
        let sealed = match value {
            Some(v) => Some(self.cipher.encrypt(v.as_bytes(), &secret_aad(name)).await?),
            None => None,
        };
        let patch = SecretPatch {
            key_name: key_name.map(str::to_owned),
            description: description.map(str::to_owned),
            value: sealed,
            updated_by: caller.user.email.clone(),
            updated_at_ms: self.clock.now_ms(),
            request_id: caller.request_id.clone(),
        };
        self.store
            .update_secret(name, &patch)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Deletes a secret.
    pub async fn delete(&self, name: &str) -> Result<Secret, DomainError> {
        if !valid_secret_name(name) {
            return Err(not_found(name));
        }
        self.store
            .delete_secret(name)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Opens a secret's value. Callers check who may see it; this only decrypts.
    pub async fn open(&self, s: &Secret) -> Result<String, DomainError> {
        let bytes = self.cipher.decrypt(&s.value, &secret_aad(&s.name)).await?;
        String::from_utf8(bytes).map_err(|_| {
            DomainError::Cipher(crate::ports::CipherError::Invalid(format!(
                "secret {:?} does not hold UTF-8",
                s.name
            )))
        })
    }
}
