//! Domain errors. Each maps to one stable API error code.

use crate::ports::{ComputeError, StoreError};

/// What can go wrong in a domain operation.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller sent something invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// Not allowed for this caller (403).
    #[error("{0}")]
    Forbidden(String),
    /// The run names an image this compute backend cannot run (400 `IMAGE_NOT_SUPPORTED`).
    #[error("{0}")]
    ImageNotSupported(String),
    /// The run names an image that is not registered (400 `IMAGE_NOT_FOUND`).
    #[error("{0}")]
    ImageNotFound(String),
    /// The name matches several registered images (409 `IMAGE_AMBIGUOUS`).
    #[error("{0}")]
    ImageAmbiguous(String),
    /// Compute refused to prepare an image being registered (400 `IMAGE_REJECTED`).
    #[error("{0}")]
    ImageRejected(String),
    /// Conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The run asks for a lock an unfinished execution holds; nothing was created (409
    /// `LOCK_HELD`).
    #[error("{message}")]
    LockHeld {
        /// What to tell the caller.
        message: String,
        /// The lock and its holder.
        holder: Box<crate::ports::Lock>,
    },
    /// A limit on concurrent executions is reached; nothing was created (429).
    #[error("{0}")]
    LimitReached(String),
    /// No secret of that name (404 `SECRET_NOT_FOUND`).
    #[error("{0}")]
    SecretNotFound(String),
    /// A secret of that name exists; nothing was changed (409 `SECRET_EXISTS`).
    #[error("{0}")]
    SecretExists(String),
    /// A secret's field is invalid (400 `INVALID_SECRET`).
    #[error("{0}")]
    SecretInvalid(String),
    /// The cipher failed (503); nothing was changed.
    #[error("cipher unavailable: {0}")]
    Cipher(#[from] crate::ports::CipherError),
    /// The store failed (503).
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// Compute failed (503).
    #[error("compute unavailable: {0}")]
    Compute(#[from] ComputeError),
}
