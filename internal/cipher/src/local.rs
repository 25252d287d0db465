//! The local key-encryption key: 32 random bytes in a 0600 file in runvoyd's data dir.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use runvoy_domain::ports::CipherError;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{DATA_KEY_LEN, Kek, NONCE_LEN, open_with, random_bytes, seal_with};

/// Why the local key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading, creating or syncing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file (or its directory).
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Group or others have some access to it.
    #[error(
        "{path} has mode {mode:04o}: the encryption key must be readable by its owner only \
         (chmod 600 {path})"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another user owns it (and could replace it).
    #[error("{path} is owned by uid {owner}, not by this process's uid {me}")]
    NotOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Not a key this code wrote. It is never replaced: what it sealed would be lost.
    #[error(
        "{path} does not hold a key ({DATA_KEY_LEN} bytes, hex); it is left as it is, since \
         replacing it would make every value sealed under it unreadable"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
}

/// The local key-encryption key, read from (or created in) a key file.
pub struct LocalKek {
    key: Zeroizing<[u8; DATA_KEY_LEN]>,
    id: String,
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKek").field("id", &self.id).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

impl LocalKek {
    /// Reads the key in `path`, or creates it there (mode 0600, written to a temporary file in
    /// the same directory, synced, then linked into place without replacing a file another
    /// process put there first). Refuses a file group or others can access, owned by another
    /// user, or not holding a key.
    pub fn open_or_create(path: &Path) -> Result<LocalKek, KeyFileError> {
        match Self::open(path) {
            Err(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        random_bytes(&mut key[..]).map_err(|e| KeyFileError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(&key[..])));
        // tempfile creates the file 0600 with O_EXCL.
        let mut tmp = tempfile::Builder::new()
            .prefix(".cipher-key-")
            .tempfile_in(dir)
            .map_err(io(dir))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(tmp.path()))?;
        tmp.write_all(text.as_bytes()).map_err(io(path))?;
        tmp.as_file().sync_all().map_err(io(path))?;
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            // Another runvoyd created it meanwhile: use that one.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::open(path);
            }
            Err(e) => return Err(io(path)(e.error)),
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(LocalKek::from_key(key))
    }

    /// Reads an existing key file, with the checks of [`LocalKek::open_or_create`].
    pub fn open(path: &Path) -> Result<LocalKek, KeyFileError> {
        let f = std::fs::File::open(path).map_err(io(path))?;
        let meta = f.metadata().map_err(io(path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        // SAFETY: plain syscall.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(KeyFileError::NotOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                me,
            });
        }
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut &f, &mut text).map_err(io(path))?;
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        hex::decode_to_slice(text.trim(), &mut key[..]).map_err(|_| KeyFileError::Malformed {
            path: path.to_owned(),
        })?;
        Ok(LocalKek::from_key(key))
    }

    fn from_key(key: Zeroizing<[u8; DATA_KEY_LEN]>) -> LocalKek {
        // A fingerprint, so a value names the key it needs without revealing anything of it.
        let digest = Sha256::new()
            .chain_update(b"runvoy-local-kek-id")
            .chain_update(&key[..])
            .finalize();
        LocalKek {
            id: format!("local:{}", hex::encode(&digest[..8])),
            key,
        }
    }
}

#[async_trait]
impl Kek for LocalKek {
    fn kind(&self) -> &str {
        "local"
    }

    fn id(&self) -> &str {
        &self.id
    }

    /// `nonce ‖ AES-256-GCM(data key)`.
    async fn wrap(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut out = nonce.to_vec();
        out.extend(seal_with(&self.key[..], &nonce, data_key, aad)?);
        Ok(out)
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        if wrapped.len() < NONCE_LEN {
            return Err(CipherError::Invalid("wrapped data key too short".into()));
        }
        let (nonce, ct) = wrapped.split_at(NONCE_LEN);
        open_with(&self.key[..], nonce, ct, aad)
            .map(Zeroizing::new)
            .ok_or_else(|| {
                CipherError::Invalid(
                    "the data key does not open with the local key: altered, or sealed for other \
                     associated data"
                        .into(),
                )
            })
    }
}
