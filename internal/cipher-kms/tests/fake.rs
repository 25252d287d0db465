//! The KMS key-encryption key against the in-repo fake of the KMS REST methods.

use std::sync::Arc;
use std::time::Duration;

use runvoy_cipher::{EnvelopeCipher, Kek, probe};
use runvoy_cipher_kms::fake::{FakeKms, KeyState};
use runvoy_cipher_kms::{KmsConfig, KmsKek, KmsKeyName, RetryPolicy, StaticToken};
use runvoy_domain::ports::{Cipher, CipherError};
use runvoy_domain::testing::cipher_conformance;

const KEY: &str = "projects/p/locations/global/keyRings/runvoy/cryptoKeys/secrets";

fn kek(fake: &FakeKms, key: &str, token: &str) -> KmsKek {
    let mut c = KmsConfig::new(
        KmsKeyName::parse(key).unwrap(),
        Arc::new(StaticToken(token.into())),
    );
    c.endpoint = fake.url().into();
    c.retry = RetryPolicy {
        attempts: 3,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    KmsKek::new(c).unwrap()
}

async fn fake_with_key() -> FakeKms {
    let fake = FakeKms::start("token-1").await;
    fake.add_key(KEY);
    fake
}

#[tokio::test]
async fn kms_kek_passes_the_cipher_conformance_suite_on_the_fake() {
    let fake = fake_with_key().await;
    let c = EnvelopeCipher::new(kek(&fake, KEY, "token-1"));
    assert_eq!(c.kind(), "gcp-kms");
    assert_eq!(c.kek_id(), format!("gcp-kms:{KEY}"));
    cipher_conformance(&c).await;
    probe(&c).await.expect("probe");
    let (enc, dec) = fake.calls();
    assert!(enc > 0 && dec > 0, "the data keys went through KMS");
}

#[tokio::test]
async fn a_ciphertext_of_another_kms_key_does_not_decrypt() {
    let fake = fake_with_key().await;
    let other = "projects/p/locations/global/keyRings/runvoy/cryptoKeys/other";
    fake.add_key(other);
    let a = kek(&fake, KEY, "token-1");
    let b = kek(&fake, other, "token-1");
    let wrapped = a.wrap(&[7u8; 32], b"aad").await.unwrap();
    assert_eq!(&a.unwrap(&wrapped, b"aad").await.unwrap()[..], &[7u8; 32]);
    let err = b.unwrap(&wrapped, b"aad").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::Invalid(m) if m.contains(other) && m.contains("INVALID_ARGUMENT")),
        "{err}"
    );
    // Same key name, another fake (another KMS key behind it): fails too.
    let elsewhere = fake_with_key().await;
    let err = kek(&elsewhere, KEY, "token-1")
        .unwrap(&wrapped, b"aad")
        .await
        .unwrap_err();
    assert!(matches!(err, CipherError::Invalid(_)), "{err}");
    // Other associated data.
    let err = a.unwrap(&wrapped, b"other").await.unwrap_err();
    assert!(matches!(err, CipherError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn key_problems_are_final_and_name_the_key() {
    let fake = fake_with_key().await;
    let k = kek(&fake, KEY, "token-1");

    fake.set_state(KEY, KeyState::Denied);
    let err = k.wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m)
            if m.contains(KEY) && m.contains("403 PERMISSION_DENIED") && m.contains("useToEncrypt")),
        "{err}"
    );

    fake.set_state(KEY, KeyState::Disabled);
    let err = k.wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains(KEY) && m.contains("FAILED_PRECONDITION")),
        "{err}"
    );

    let missing = kek(
        &fake,
        "projects/p/locations/global/keyRings/runvoy/cryptoKeys/none",
        "token-1",
    );
    let err = missing.wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains("cryptoKeys/none") && m.contains("404 NOT_FOUND")),
        "{err}"
    );

    fake.set_state(KEY, KeyState::Enabled);
    let err = kek(&fake, KEY, "wrong-token")
        .wrap(&[1; 32], b"a")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains("401 UNAUTHENTICATED")),
        "{err}"
    );
    // None of these was retried: one call each.
    assert_eq!(fake.calls().0, 4);
}

#[tokio::test]
async fn the_fake_checks_checksums_and_field_names_like_kms() {
    let fake = fake_with_key().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/{KEY}:encrypt", fake.url());
    let post = |body: serde_json::Value| http.post(&url).bearer_auth("token-1").json(&body).send();
    // A wrong plaintext checksum.
    let r = post(serde_json::json!({"plaintext": "c2VjcmV0", "plaintextCrc32c": "1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["code"], 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("checksum")
    );
    // An unknown field.
    let r = post(serde_json::json!({"plaintext": "c2VjcmV0", "plainText": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // No checksums sent: none verified, and the answer still carries ciphertextCrc32c as a string.
    let r = post(serde_json::json!({"plaintext": "c2VjcmV0"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["verifiedPlaintextCrc32c"], false);
    assert!(body["ciphertextCrc32c"].is_string());
    assert_eq!(body["name"], format!("{KEY}/cryptoKeyVersions/1"));
    // Over 64 KiB.
    let big = runvoy_cipher_kms::wire::b64(&vec![0u8; 64 * 1024 + 1]);
    let r = post(serde_json::json!({"plaintext": big})).await.unwrap();
    assert_eq!(r.status(), 400);
}
