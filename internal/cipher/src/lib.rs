//! The [`Cipher`] port by envelope encryption: every value gets a fresh random 256-bit data key,
//! is sealed with AES-256-GCM under it, and the data key is kept only wrapped by a
//! key-encryption key ([`Kek`]): the local key file ([`LocalKek`]) or Cloud KMS
//! (`runvoy-cipher-kms`).
//!
//! Both layers authenticate the caller's associated data, each under its own label: the value's
//! ciphertext with the sealed format's version and the KEK's identity too, the data key with the
//! version. A sealed value therefore opens only with the same associated data, under the same
//! KEK, in the same format. Data keys live in [`Zeroizing`] buffers and are wiped after use.

mod local;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use rand::TryRngCore;
use runvoy_domain::ports::{Cipher, CipherError, Sealed};
pub use zeroize::Zeroizing;

pub use local::{KeyFileError, LocalKek};

/// Length of a data key (AES-256).
pub const DATA_KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// A key-encryption key: wraps and unwraps data keys. Implementations authenticate `aad`.
#[async_trait]
pub trait Kek: Send + Sync + 'static {
    /// What guards the key, for `/health` (`local`, `gcp-kms`).
    fn kind(&self) -> &str;
    /// Stable identity of this key, kept in every sealed value (`local:<fingerprint>`,
    /// `gcp-kms:<key name>`).
    fn id(&self) -> &str;
    /// Encrypts a data key bound to `aad`.
    async fn wrap(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError>;
    /// Decrypts a wrapped data key; [`CipherError::Invalid`] when it was not wrapped by this key
    /// for `aad`.
    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CipherError>;
}

/// [`Cipher`] by envelope encryption under a [`Kek`].
pub struct EnvelopeCipher {
    kek: Box<dyn Kek>,
}

impl EnvelopeCipher {
    /// Seals under `kek`.
    pub fn new(kek: impl Kek) -> Self {
        EnvelopeCipher { kek: Box::new(kek) }
    }

    /// Identity of the key-encryption key (what [`Sealed::kek`] says).
    pub fn kek_id(&self) -> &str {
        self.kek.id()
    }
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CipherError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| CipherError::Transient(format!("the system random source failed: {e}")))
}

/// `label` then each part preceded by its length, so that no two different inputs give the
/// same bytes.
fn context(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = label.to_vec();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// What the value's ciphertext authenticates besides the caller's data.
fn value_aad(version: u32, kek: &str, aad: &[u8]) -> Vec<u8> {
    context(
        b"runvoy-sealed-value",
        &[&version.to_be_bytes(), kek.as_bytes(), aad],
    )
}

/// What the wrapped data key authenticates (the KEK checks it: KMS on decrypt).
fn key_aad(version: u32, aad: &[u8]) -> Vec<u8> {
    context(b"runvoy-data-key", &[&version.to_be_bytes(), aad])
}

/// AES-256-GCM under `key`, for a value or a wrapped data key.
pub(crate) fn seal_with(
    key: &[u8],
    nonce: &[u8; NONCE_LEN],
    msg: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CipherError> {
    let c = Aes256Gcm::new_from_slice(key)
        .map_err(|_| CipherError::Invalid(format!("a key must be {DATA_KEY_LEN} bytes")))?;
    c.encrypt(Nonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| CipherError::Invalid("value too large to encrypt".into()))
}

/// Opens [`seal_with`]'s output; `None` when authentication fails.
pub(crate) fn open_with(key: &[u8], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let c = Aes256Gcm::new_from_slice(key).ok()?;
    c.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

#[async_trait]
impl Cipher for EnvelopeCipher {
    fn kind(&self) -> &str {
        self.kek.kind()
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CipherError> {
        let version = Sealed::VERSION;
        let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        random_bytes(&mut data_key[..])?;
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let kek = self.kek.id().to_owned();
        let ciphertext = seal_with(
            &data_key[..],
            &nonce,
            plaintext,
            &value_aad(version, &kek, aad),
        )?;
        let wrapped_key = self.kek.wrap(&data_key[..], &key_aad(version, aad)).await?;
        Ok(Sealed {
            version,
            kek,
            wrapped_key,
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    async fn decrypt(&self, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.version != Sealed::VERSION {
            return Err(CipherError::Invalid(format!(
                "unknown sealed-value version {} (this server reads {})",
                sealed.version,
                Sealed::VERSION
            )));
        }
        if sealed.kek != self.kek.id() {
            return Err(CipherError::KeyUnavailable(format!(
                "the value was sealed under key {:?}, this server holds {:?}",
                sealed.kek,
                self.kek.id()
            )));
        }
        if sealed.nonce.len() != NONCE_LEN {
            return Err(CipherError::Invalid(format!(
                "nonce of {} bytes, expected {NONCE_LEN}",
                sealed.nonce.len()
            )));
        }
        let data_key = self
            .kek
            .unwrap(&sealed.wrapped_key, &key_aad(sealed.version, aad))
            .await?;
        if data_key.len() != DATA_KEY_LEN {
            return Err(CipherError::Invalid(format!(
                "unwrapped data key of {} bytes, expected {DATA_KEY_LEN}",
                data_key.len()
            )));
        }
        open_with(
            &data_key,
            &sealed.nonce,
            &sealed.ciphertext,
            &value_aad(sealed.version, &sealed.kek, aad),
        )
        .ok_or_else(|| {
            CipherError::Invalid(
                "authentication failed: the value was altered or sealed for other associated data"
                    .into(),
            )
        })
    }
}

/// One encrypt-and-decrypt round trip, as runvoyd makes at start: proves the key can be used
/// both ways before anything depends on it.
pub async fn probe(c: &dyn Cipher) -> Result<(), CipherError> {
    let mut value = Zeroizing::new([0u8; 32]);
    random_bytes(&mut value[..])?;
    let aad = b"runvoy:cipher-probe";
    let sealed = c.encrypt(&value[..], aad).await?;
    let back = Zeroizing::new(c.decrypt(&sealed, aad).await?);
    if back.as_slice() != value.as_slice() {
        return Err(CipherError::Invalid(
            "the round trip returned other bytes than were sealed".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_unambiguous() {
        assert_ne!(context(b"l", &[b"ab", b"c"]), context(b"l", &[b"a", b"bc"]));
        assert_ne!(context(b"l", &[b"", b"x"]), context(b"l", &[b"x", b""]));
        assert_ne!(value_aad(1, "k", b"a"), value_aad(1, "ka", b""));
    }
}
