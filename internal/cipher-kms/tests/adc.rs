//! Application Default Credentials: an unusable credentials file is a clear, final error when
//! the provider is built. (Its own test binary: it sets a process-wide variable.)

use runvoy_cipher_kms::GoogleAdc;
use runvoy_domain::ports::CipherError;

#[test]
fn an_unusable_credentials_file_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("adc.json");
    std::fs::write(&file, "{ not json").unwrap();
    // SAFETY: the only test in this binary; no other thread reads the environment.
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &file) };
    let err = GoogleAdc::new()
        .err()
        .expect("a malformed file must be refused");
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains("Application Default Credentials")),
        "{err}"
    );
    std::fs::write(&file, r#"{"type": "no_such_type"}"#).unwrap();
    let err = GoogleAdc::new()
        .err()
        .expect("an unknown type must be refused");
    assert!(matches!(err, CipherError::KeyUnavailable(_)), "{err}");
}
