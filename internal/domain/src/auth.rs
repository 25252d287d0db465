//! API key and token primitives (no I/O).

use sha2::{Digest, Sha256};

/// Prefix of every API key, so secret scanners can recognise leaked keys.
pub const KEY_PREFIX: &str = "rvk_";

/// A new high-entropy API key: `rvk_` + 64 hex characters (256 bits).
pub fn new_api_key() -> String {
    format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// SHA-256 of a key, hex. Keys are stored only in this form.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A random request id: 32 lowercase hex characters.
pub fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// True when a caller-supplied request id is acceptable (8–64 of `[A-Za-z0-9_-]`).
pub fn valid_request_id(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_prefixed_and_hashes_stable() {
        let k = super::new_api_key();
        assert!(k.starts_with("rvk_") && k.len() == 68);
        assert_eq!(super::hash_key("a"), super::hash_key("a"));
        assert_ne!(super::hash_key(&k), k);
        assert!(super::valid_request_id("abcdefgh-123"));
        assert!(!super::valid_request_id("bad id with spaces"));
    }
}
