//! The behaviour every [`Cipher`] adapter must have.

use crate::ports::{Cipher, CipherError, Sealed};

/// Checks a [`Cipher`]: round trips (empty, small, 64 KiB values, through its serde form),
/// associated data binding, tamper detection in every sealed part, and that sealing twice
/// differs. Panics on the first violation.
pub async fn cipher_conformance(c: &dyn Cipher) {
    let aad = b"runvoy:secret:db-password";

    // Round trips, from empty to 64 KiB.
    let large: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    for value in [
        &b""[..],
        b"hunter2",
        b"\x00\xff binary \xc3\x28",
        &large[..],
    ] {
        let sealed = c.encrypt(value, aad).await.expect("encrypt");
        assert_eq!(sealed.version, Sealed::VERSION);
        assert!(!sealed.kek.is_empty(), "the sealed value names its key");
        assert!(
            value.is_empty() || !contains(&sealed.ciphertext, value),
            "the plaintext must not appear in the ciphertext"
        );
        let opened = c.decrypt(&sealed, aad).await.expect("decrypt");
        assert_eq!(opened, value, "round trip of {} bytes", value.len());
        // Through the serde form a store would keep.
        let json = serde_json::to_string(&sealed).expect("serialise");
        let back: Sealed = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, sealed);
        assert_eq!(c.decrypt(&back, aad).await.expect("decrypt"), value);
    }
    // Empty associated data is associated data too.
    let sealed = c.encrypt(b"v", b"").await.expect("encrypt");
    assert_eq!(c.decrypt(&sealed, b"").await.expect("decrypt"), b"v");
    assert_invalid(c.decrypt(&sealed, b"x").await, "empty aad, then some");

    // Sealing the same value twice gives unrelated results.
    let a = c.encrypt(b"same value", aad).await.expect("encrypt");
    let b = c.encrypt(b"same value", aad).await.expect("encrypt");
    assert_ne!(a.ciphertext, b.ciphertext, "two encryptions must differ");
    assert_ne!(
        a.wrapped_key, b.wrapped_key,
        "each value has its own data key"
    );
    assert_ne!(a.nonce, b.nonce);

    // Associated data binds the value to its record.
    assert_invalid(c.decrypt(&a, b"runvoy:secret:other").await, "other aad");
    assert_invalid(c.decrypt(&a, b"").await, "no aad");
    assert_invalid(
        c.decrypt(&a, b"runvoy:secret:db-password ").await,
        "aad with a trailing space",
    );

    // Every part is authenticated.
    let flip = |v: &mut Vec<u8>, i: usize| v[i] ^= 0x01;
    let mut t = a.clone();
    flip(&mut t.ciphertext, 0);
    assert_invalid(c.decrypt(&t, aad).await, "flipped ciphertext byte");
    let mut t = a.clone();
    let last = t.ciphertext.len() - 1;
    flip(&mut t.ciphertext, last);
    assert_invalid(c.decrypt(&t, aad).await, "flipped tag byte");
    let mut t = a.clone();
    t.ciphertext.truncate(4);
    assert_invalid(c.decrypt(&t, aad).await, "truncated ciphertext");
    let mut t = a.clone();
    t.ciphertext.clear();
    assert_invalid(c.decrypt(&t, aad).await, "empty ciphertext");
    let mut t = a.clone();
    flip(&mut t.nonce, 0);
    assert_invalid(c.decrypt(&t, aad).await, "flipped nonce");
    let mut t = a.clone();
    t.nonce.pop();
    assert_invalid(c.decrypt(&t, aad).await, "short nonce");
    let mut t = a.clone();
    let mid = t.wrapped_key.len() / 2;
    flip(&mut t.wrapped_key, mid);
    assert_invalid(c.decrypt(&t, aad).await, "flipped wrapped key");
    let mut t = a.clone();
    t.wrapped_key.clear();
    assert_invalid(c.decrypt(&t, aad).await, "no wrapped key");
    // Another value's data key does not open this one.
    let mut t = a.clone();
    t.wrapped_key = b.wrapped_key.clone();
    t.nonce = b.nonce.clone();
    assert_invalid(c.decrypt(&t, aad).await, "another value's data key");
    let mut t = a.clone();
    t.version = Sealed::VERSION + 1;
    assert_invalid(c.decrypt(&t, aad).await, "unknown version");
    // A value naming another key-encryption key is not opened with this one.
    let mut t = a.clone();
    t.kek.push_str("-other");
    assert!(
        matches!(
            c.decrypt(&t, aad).await,
            Err(CipherError::KeyUnavailable(_) | CipherError::Invalid(_))
        ),
        "a value of another key must be refused"
    );
    // The untouched value still opens.
    assert_eq!(c.decrypt(&a, aad).await.expect("decrypt"), b"same value");
}

fn assert_invalid(r: Result<Vec<u8>, CipherError>, what: &str) {
    match r {
        Err(CipherError::Invalid(_)) => {}
        other => panic!("{what}: expected CipherError::Invalid, got {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}
