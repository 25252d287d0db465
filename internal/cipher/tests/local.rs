use std::os::unix::fs::PermissionsExt;

use runvoy_cipher::{EnvelopeCipher, KeyFileError, LocalKek, probe};
use runvoy_domain::ports::{Cipher, CipherError};
use runvoy_domain::testing::cipher_conformance;

fn cipher_in(dir: &std::path::Path) -> EnvelopeCipher {
    EnvelopeCipher::new(LocalKek::open_or_create(&dir.join("cipher.key")).expect("key"))
}

#[tokio::test]
async fn local_kek_passes_the_cipher_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher_in(dir.path());
    assert_eq!(c.kind(), "local");
    cipher_conformance(&c).await;
    probe(&c).await.expect("probe");
}

#[tokio::test]
async fn key_file_is_created_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cipher.key");
    let c = cipher_in(dir.path());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64, "32 bytes, hex");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["cipher.key"]);

    let sealed = c.encrypt(b"kept across restarts", b"aad").await.unwrap();
    let again = cipher_in(dir.path());
    assert_eq!(again.kek_id(), c.kek_id());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        again.decrypt(&sealed, b"aad").await.unwrap(),
        b"kept across restarts"
    );
}

#[tokio::test]
async fn another_key_does_not_open_a_value() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, cb) = (cipher_in(a.path()), cipher_in(b.path()));
    assert_ne!(ca.kek_id(), cb.kek_id());
    let sealed = ca.encrypt(b"v", b"aad").await.unwrap();
    assert!(matches!(
        cb.decrypt(&sealed, b"aad").await,
        Err(CipherError::KeyUnavailable(m)) if m.contains(ca.kek_id())
    ));
    // Even when the value claims the other key's identity, the key itself does not fit.
    let mut forged = sealed.clone();
    forged.kek = cb.kek_id().to_owned();
    assert!(matches!(
        cb.decrypt(&forged, b"aad").await,
        Err(CipherError::Invalid(_))
    ));
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cipher.key");
    LocalKek::open_or_create(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = LocalKek::open_or_create(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Exposed { mode: m, .. } if m == mode),
            "{mode:o}: {err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    LocalKek::open_or_create(&path).expect("owner-only read is fine");
}

#[test]
fn a_malformed_key_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cipher.key");
    for text in ["", "not hex\n", &"ab".repeat(31), &"ab".repeat(33)] {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = LocalKek::open_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Malformed { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "never replaced"
        );
    }
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalKek::open_or_create(&dir.path().join("no/such/cipher.key")).unwrap_err();
    assert!(matches!(err, KeyFileError::Io { .. }), "{err}");
}

#[test]
fn concurrent_first_starts_agree_on_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cipher.key");
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    runvoy_cipher::Kek::id(&LocalKek::open_or_create(&path).unwrap()).to_owned()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}
