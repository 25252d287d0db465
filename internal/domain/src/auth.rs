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

/// Prefix of one-time claim tokens.
pub const CLAIM_PREFIX: &str = "rvc_";

/// How long a claim token stays valid: 15 minutes.
pub const CLAIM_TTL_MS: i64 = 15 * 60 * 1000;

/// A new one-time claim token: `rvc_` + 64 hex characters (256 bits).
pub fn new_claim_token() -> String {
    format!("{CLAIM_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The `key_hash` of a user whose key does not exist yet. It contains `:`, which no SHA-256 hex
/// digest does, so no key can ever match it; the random part keeps the column unique.
pub fn unclaimed_key_hash() -> String {
    format!("unclaimed:{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Normalises and checks an email address: trimmed, lower-cased, `local@domain` where the
/// domain is dot-separated labels of letters, digits and `-` (`localhost` is accepted).
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim().to_ascii_lowercase();
    if e.len() > 254 {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    (local_ok && domain_ok).then_some(e)
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

    #[test]
    fn claim_tokens_and_placeholders() {
        let t = super::new_claim_token();
        assert!(t.starts_with("rvc_") && t.len() == 68);
        let p = super::unclaimed_key_hash();
        assert_ne!(p, super::unclaimed_key_hash());
        assert!(hex::decode(&p).is_err());
    }

    #[test]
    fn emails() {
        use super::normalize_email as n;
        assert_eq!(
            n(" Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(n("admin@localhost").as_deref(), Some("admin@localhost"));
        assert_eq!(n("a.b+c@x-y.io").as_deref(), Some("a.b+c@x-y.io"));
        for bad in [
            "", "a", "@x", "a@", "a@@b", "a b@c", "a@b..c", "a@-b", ".a@b", "a@b_c",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }
}
