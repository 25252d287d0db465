//! Error paths of the KMS key-encryption key, with wiremock standing in for KMS.

use std::sync::Arc;
use std::time::Duration;

use runvoy_cipher::Kek;
use runvoy_cipher_kms::wire::{b64, crc32c};
use runvoy_cipher_kms::{KmsConfig, KmsKek, KmsKeyName, RetryPolicy, StaticToken};
use runvoy_domain::ports::CipherError;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "projects/p/locations/global/keyRings/runvoy/cryptoKeys/secrets";
const ATTEMPTS: usize = 4;

fn kek(server: &MockServer) -> KmsKek {
    let mut c = KmsConfig::new(
        KmsKeyName::parse(KEY).unwrap(),
        Arc::new(StaticToken("tok".into())),
    );
    c.endpoint = server.uri();
    c.retry = RetryPolicy {
        attempts: ATTEMPTS,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    KmsKek::new(c).unwrap()
}

fn encrypt_path() -> wiremock::matchers::PathExactMatcher {
    path(format!("/v1/{KEY}:encrypt"))
}

fn decrypt_path() -> wiremock::matchers::PathExactMatcher {
    path(format!("/v1/{KEY}:decrypt"))
}

/// A correct encrypt answer for `ciphertext`.
fn encrypted(ciphertext: &[u8]) -> serde_json::Value {
    json!({
        "name": format!("{KEY}/cryptoKeyVersions/3"),
        "ciphertext": b64(ciphertext),
        "ciphertextCrc32c": crc32c(ciphertext).to_string(),
        "verifiedPlaintextCrc32c": true,
        "verifiedAdditionalAuthenticatedDataCrc32c": true,
        "protectionLevel": "SOFTWARE"
    })
}

fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message, "status": status}
    }))
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn encrypt_sends_base64_and_checksums_as_int64_strings() {
    let server = MockServer::start().await;
    let (dek, aad) = ([9u8; 32], b"runvoy aad");
    Mock::given(method("POST"))
        .and(encrypt_path())
        .and(header("authorization", "Bearer tok"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "plaintext": b64(&dek),
            "additionalAuthenticatedData": b64(aad),
            "plaintextCrc32c": crc32c(&dek).to_string(),
            "additionalAuthenticatedDataCrc32c": crc32c(aad).to_string(),
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(encrypted(b"wrapped")))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(kek(&server).wrap(&dek, aad).await.unwrap(), b"wrapped");
}

#[tokio::test]
async fn decrypt_sends_checksums_and_checks_the_plaintext_checksum() {
    let server = MockServer::start().await;
    let (wrapped, aad) = (b"wrapped-key".to_vec(), b"aad");
    Mock::given(method("POST"))
        .and(decrypt_path())
        .and(body_json(json!({
            "ciphertext": b64(&wrapped),
            "additionalAuthenticatedData": b64(aad),
            "ciphertextCrc32c": crc32c(&wrapped).to_string(),
            "additionalAuthenticatedDataCrc32c": crc32c(aad).to_string(),
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "plaintext": b64(&[5u8; 32]),
            "plaintextCrc32c": crc32c(&[5u8; 32]).to_string(),
            "usedPrimary": true
        })))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        &kek(&server).unwrap(&wrapped, aad).await.unwrap()[..],
        &[5u8; 32]
    );
}

#[tokio::test]
async fn a_429_then_200_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(encrypt_path())
        .respond_with(google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(encrypt_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(encrypted(b"ct")))
        .mount(&server)
        .await;
    assert_eq!(kek(&server).wrap(&[1; 32], b"a").await.unwrap(), b"ct");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn a_500_then_200_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(decrypt_path())
        .respond_with(google_error(500, "INTERNAL", "Internal error encountered."))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(decrypt_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "plaintext": b64(b"k"), "plaintextCrc32c": crc32c(b"k").to_string()
        })))
        .mount(&server)
        .await;
    assert_eq!(&kek(&server).unwrap(b"w", b"a").await.unwrap()[..], b"k");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn a_503_that_lasts_gives_up_after_the_attempts_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::Transient(m)
            if m.contains("503 UNAVAILABLE") && m.contains(KEY) && m.contains("4 attempts")),
        "{err}"
    );
    assert_eq!(requests(&server).await, ATTEMPTS);
}

#[tokio::test]
async fn a_403_is_final_and_names_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(
            403,
            "PERMISSION_DENIED",
            &format!("Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource '{KEY}' (or it may not exist)."),
        ))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m)
            if m.contains(KEY) && m.contains("PERMISSION_DENIED") && m.contains("roles/cloudkms.cryptoKeyEncrypterDecrypter")),
        "{err}"
    );
    assert_eq!(requests(&server).await, 1, "not retried");
}

#[tokio::test]
async fn a_404_is_final_and_names_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(404, "NOT_FOUND", &format!("{KEY} not found.")))
        .mount(&server)
        .await;
    let err = kek(&server).unwrap(b"w", b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains(KEY) && m.contains("does not exist")),
        "{err}"
    );
    assert_eq!(requests(&server).await, 1, "not retried");
}

#[tokio::test]
async fn a_disabled_key_is_final() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(
            400,
            "FAILED_PRECONDITION",
            &format!("{KEY}/cryptoKeyVersions/1 is not enabled, current state is: DISABLED."),
        ))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains(KEY) && m.contains("disabled")),
        "{err}"
    );
    assert_eq!(requests(&server).await, 1, "not retried");
}

#[tokio::test]
async fn an_undecryptable_data_key_is_invalid_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(
            400,
            "INVALID_ARGUMENT",
            "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
        ))
        .mount(&server)
        .await;
    let err = kek(&server).unwrap(b"w", b"a").await.unwrap_err();
    assert!(matches!(err, CipherError::Invalid(_)), "{err}");
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn a_wrong_ciphertext_checksum_is_rejected_as_corrupt_in_transit() {
    let server = MockServer::start().await;
    let mut body = encrypted(b"ct");
    body["ciphertextCrc32c"] = json!((crc32c(b"ct") ^ 1).to_string());
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::Transient(m) if m.contains("corrupt in transit") && m.contains("ciphertextCrc32c")),
        "{err}"
    );
    assert_eq!(
        requests(&server).await,
        ATTEMPTS,
        "a limited number of retries"
    );
}

#[tokio::test]
async fn a_corrupt_answer_then_a_good_one_succeeds() {
    let server = MockServer::start().await;
    let mut bad = encrypted(b"ct");
    bad["verifiedPlaintextCrc32c"] = json!(false);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bad))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(encrypted(b"ct")))
        .mount(&server)
        .await;
    assert_eq!(kek(&server).wrap(&[1; 32], b"a").await.unwrap(), b"ct");
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn unverified_checksums_and_a_missing_ciphertext_checksum_are_rejected() {
    for (field, value) in [
        ("verifiedPlaintextCrc32c", json!(false)),
        ("verifiedAdditionalAuthenticatedDataCrc32c", json!(false)),
        ("ciphertextCrc32c", serde_json::Value::Null),
    ] {
        let server = MockServer::start().await;
        let mut body = encrypted(b"ct");
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
        assert!(
            matches!(&err, CipherError::Transient(m) if m.contains("corrupt in transit")),
            "{field}: {err}"
        );
    }
}

#[tokio::test]
async fn a_wrong_plaintext_checksum_on_decrypt_is_rejected() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "plaintext": b64(b"key"), "plaintextCrc32c": (crc32c(b"key") ^ 1).to_string()
        })))
        .mount(&server)
        .await;
    let err = kek(&server).unwrap(b"w", b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::Transient(m) if m.contains("corrupt in transit") && m.contains("plaintextCrc32c")),
        "{err}"
    );
    assert_eq!(requests(&server).await, ATTEMPTS);
}

#[tokio::test]
async fn an_encryption_by_another_key_is_refused() {
    let server = MockServer::start().await;
    let mut body = encrypted(b"ct");
    body["name"] =
        json!("projects/p/locations/global/keyRings/runvoy/cryptoKeys/other/cryptoKeyVersions/1");
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains("cryptoKeys/other")),
        "{err}"
    );
}

#[tokio::test]
async fn a_malformed_body_is_retried_then_reported() {
    for (status, body) in [
        (200, "<html>Bad gateway</html>"),
        (200, r#"{"ciphertext": 12}"#),
        (
            200,
            r#"{"ciphertext": "%%% not base64", "ciphertextCrc32c": "1", "verifiedPlaintextCrc32c": true, "verifiedAdditionalAuthenticatedDataCrc32c": true}"#,
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string(body))
            .mount(&server)
            .await;
        let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
        assert!(
            matches!(&err, CipherError::Transient(m) if m.contains("malformed answer")),
            "{body}: {err}"
        );
        assert_eq!(requests(&server).await, ATTEMPTS, "{body}");
    }
}

#[tokio::test]
async fn a_non_google_error_body_is_still_classified_by_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>502</html>"))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::Transient(m) if m.contains("502 BAD_GATEWAY")),
        "{err}"
    );
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_string("Forbidden"))
        .mount(&server)
        .await;
    let err = kek(&server).wrap(&[1; 32], b"a").await.unwrap_err();
    assert!(
        matches!(&err, CipherError::KeyUnavailable(m) if m.contains(KEY)),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut c = KmsConfig::new(
        KmsKeyName::parse(KEY).unwrap(),
        Arc::new(StaticToken("tok".into())),
    );
    c.endpoint = format!("http://{addr}");
    c.retry = RetryPolicy {
        attempts: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    let err = KmsKek::new(c)
        .unwrap()
        .wrap(&[1; 32], b"a")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CipherError::Transient(m) if m.contains("2 attempts")),
        "{err}"
    );
}
