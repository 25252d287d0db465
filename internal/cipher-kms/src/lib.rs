//! A Cloud KMS key-encryption key for [`runvoy_cipher::EnvelopeCipher`]: data keys are wrapped
//! and unwrapped by `POST {base}/v1/{keyName}:encrypt` and `:decrypt` (Cloud KMS REST v1),
//! so the key that protects every stored secret never leaves KMS.
//!
//! Every call sends CRC32C checksums of what it sends (`plaintextCrc32c`, `ciphertextCrc32c`,
//! `additionalAuthenticatedDataCrc32c`) and checks those KMS returns (`ciphertextCrc32c`,
//! `plaintextCrc32c`, `verifiedPlaintextCrc32c`, `verifiedAdditionalAuthenticatedDataCrc32c`);
//! a mismatch means corruption in transit, and the call is retried like a 429/5xx answer, with
//! jittered exponential backoff. Permission, missing-key and disabled-key answers are not
//! retried and name the key.

mod adc;
#[cfg(feature = "fake")]
pub mod fake;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use runvoy_cipher::{Kek, Zeroizing};
use runvoy_domain::ports::CipherError;
use zeroize::Zeroize;

pub use adc::GoogleAdc;
use wire::{DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, ErrorBody};

/// Cloud KMS's REST endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";

/// A bad KMS configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The key name is not `projects/*/locations/*/keyRings/*/cryptoKeys/*`.
    #[error(
        "{0:?} is not a Cloud KMS key name: expected \
         projects/PROJECT/locations/LOCATION/keyRings/KEY_RING/cryptoKeys/KEY"
    )]
    KeyName(String),
    /// The endpoint is not an http(s) URL.
    #[error("{0:?} is not an http(s) URL for the KMS endpoint")]
    Endpoint(String),
}

/// A validated CryptoKey resource name, `projects/*/locations/*/keyRings/*/cryptoKeys/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKeyName(String);

impl KmsKeyName {
    /// Checks the shape and the characters of each id (KMS ids are `[a-zA-Z0-9_-]{1,63}`;
    /// project ids may also hold `.` and `:`, as domain-scoped ones do).
    pub fn parse(s: &str) -> Result<KmsKeyName, ConfigError> {
        let bad = || ConfigError::KeyName(s.to_owned());
        let parts: Vec<&str> = s.split('/').collect();
        let [p, project, l, location, r, ring, k, key] = parts[..] else {
            return Err(bad());
        };
        if (p, l, r, k) != ("projects", "locations", "keyRings", "cryptoKeys") {
            return Err(bad());
        }
        let id = |v: &str, extra: &[char]| {
            (1..=63).contains(&v.len())
                && v.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c)
                })
        };
        if !(id(project, &['.', ':']) && id(location, &[]) && id(ring, &[]) && id(key, &[])) {
            return Err(bad());
        }
        Ok(KmsKeyName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KmsKeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Gives OAuth2 access tokens for KMS calls. Errors: [`CipherError::Transient`] is retried,
/// anything else is final.
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// A valid access token (providers cache and refresh it themselves).
    async fn token(&self) -> Result<String, CipherError>;
}

/// Always the same token: for tests and fakes.
pub struct StaticToken(pub String);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<String, CipherError> {
        Ok(self.0.clone())
    }
}

/// How often and how fast failed calls are tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: usize,
    /// Delay before the first retry (doubling, with jitter).
    pub min_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1))
            .with_jitter()
    }
}

/// How to reach a key.
pub struct KmsConfig {
    /// The CryptoKey that wraps data keys.
    pub key: KmsKeyName,
    /// Base URL, [`DEFAULT_ENDPOINT`] in production.
    pub endpoint: String,
    /// Where access tokens come from.
    pub tokens: Arc<dyn TokenProvider>,
    /// Retries of 429/5xx answers, network errors and corrupt answers.
    pub retry: RetryPolicy,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
}

impl KmsConfig {
    /// The production endpoint, default retries and a 30 s request limit.
    pub fn new(key: KmsKeyName, tokens: Arc<dyn TokenProvider>) -> Self {
        KmsConfig {
            key,
            endpoint: DEFAULT_ENDPOINT.into(),
            tokens,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A data-key wrapper backed by a Cloud KMS CryptoKey (purpose ENCRYPT_DECRYPT).
pub struct KmsKek {
    key: KmsKeyName,
    id: String,
    base: String,
    http: reqwest::Client,
    tokens: Arc<dyn TokenProvider>,
    retry: RetryPolicy,
}

/// One attempt's failure: retried, or final.
#[derive(Debug)]
enum Failure {
    Retry(String),
    Final(CipherError),
}

impl KmsKek {
    /// A client for `config.key`; no call is made yet.
    pub fn new(config: KmsConfig) -> Result<KmsKek, ConfigError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        match url::Url::parse(&endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(ConfigError::Endpoint(config.endpoint)),
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|_| ConfigError::Endpoint(config.endpoint.clone()))?;
        Ok(KmsKek {
            id: format!("gcp-kms:{}", config.key),
            key: config.key,
            base: endpoint,
            http,
            tokens: config.tokens,
            retry: config.retry,
        })
    }

    /// The key.
    pub fn key(&self) -> &KmsKeyName {
        &self.key
    }

    /// Runs `attempt` with retries; a last retryable failure becomes [`CipherError::Transient`].
    async fn with_retries<T, F, Fut>(&self, method: &str, attempt: F) -> Result<T, CipherError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let attempts = self.retry.attempts.max(1);
        attempt
            .retry(self.retry.builder())
            .when(|f| matches!(f, Failure::Retry(_)))
            .notify(|f, delay| {
                if let Failure::Retry(why) = f {
                    tracing::warn!(key = %self.key, method, error = %why, ?delay, "KMS call failed; retrying");
                }
            })
            .await
            .map_err(|f| match f {
                Failure::Retry(why) => CipherError::Transient(format!(
                    "KMS {method} with key {}: {why} (gave up after {attempts} attempts)",
                    self.key
                )),
                Failure::Final(e) => e,
            })
    }

    /// One POST to `{base}/v1/{key}:{method}`; the answer parsed, or the failure classified.
    async fn post<Resp: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        body: &[u8],
    ) -> Result<Resp, Failure> {
        let token = self.tokens.token().await.map_err(|e| match e {
            CipherError::Transient(m) => Failure::Retry(format!("no access token: {m}")),
            other => Failure::Final(other),
        })?;
        let url = format!("{}/v1/{}:{method}", self.base, self.key);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("request to {url} failed: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Retry(format!("reading the answer of {url} failed: {e}")))?;
        if !status.is_success() {
            return Err(self.classify(method, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Retry(format!(
                "malformed answer ({status}, {} bytes): {e}",
                bytes.len()
            ))
        })
    }

    /// Maps an error answer (Google's `{"error": {code, message, status}}`, or whatever a proxy
    /// sent) to a retry or a final, explained error.
    fn classify(&self, method: &str, status: StatusCode, body: &[u8]) -> Failure {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => (b.error.status, b.error.message),
            Err(_) => (
                status
                    .canonical_reason()
                    .unwrap_or("")
                    .to_uppercase()
                    .replace(' ', "_"),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        };
        let key = &self.key;
        let said = format!("{} {code}: {message}", status.as_u16());
        match status.as_u16() {
            429 | 500 | 502 | 503 | 504 => Failure::Retry(format!("KMS answered {said}")),
            401 => Failure::Final(CipherError::KeyUnavailable(format!(
                "KMS did not accept runvoyd's credentials for key {key} ({said})"
            ))),
            403 => Failure::Final(CipherError::KeyUnavailable(format!(
                "permission denied on KMS key {key} ({said}); runvoyd's service account needs \
                 cloudkms.cryptoKeyVersions.useToEncrypt and useToDecrypt on it \
                 (roles/cloudkms.cryptoKeyEncrypterDecrypter), and the key must exist"
            ))),
            404 => Failure::Final(CipherError::KeyUnavailable(format!(
                "KMS key {key} does not exist ({said})"
            ))),
            400 if code == "FAILED_PRECONDITION" => {
                Failure::Final(CipherError::KeyUnavailable(format!(
                    "KMS key {key} cannot be used: its primary version is disabled, destroyed or \
                     not yet enabled, or the key is not for ENCRYPT_DECRYPT ({said})"
                )))
            }
            // KMS checked a checksum we sent and it did not match what arrived.
            400 if message.to_ascii_lowercase().contains("checksum") => {
                Failure::Retry(format!("KMS says the request arrived corrupted ({said})"))
            }
            400 if method == "decrypt" => Failure::Final(CipherError::Invalid(format!(
                "KMS key {key} could not decrypt the data key: it was altered, wrapped by \
                 another key, or for other associated data ({said})"
            ))),
            _ => Failure::Final(CipherError::KeyUnavailable(format!(
                "KMS {method} with key {key} was refused ({said})"
            ))),
        }
    }

    async fn encrypt_once(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, Failure> {
        let r: EncryptResponse = self.post("encrypt", body).await?;
        if !r.verified_plaintext_crc32c {
            return Err(Failure::Retry(
                "corrupt in transit: KMS did not verify plaintextCrc32c".into(),
            ));
        }
        if !aad.is_empty() && !r.verified_additional_authenticated_data_crc32c {
            return Err(Failure::Retry(
                "corrupt in transit: KMS did not verify additionalAuthenticatedDataCrc32c".into(),
            ));
        }
        let ciphertext = wire::unb64(&r.ciphertext)
            .map_err(|e| Failure::Retry(format!("malformed answer: ciphertext: {e}")))?;
        if r.ciphertext_crc32c != Some(wire::crc32c(&ciphertext) as u64) {
            return Err(Failure::Retry(format!(
                "corrupt in transit: ciphertextCrc32c {:?} does not match the ciphertext",
                r.ciphertext_crc32c
            )));
        }
        if ciphertext.is_empty() {
            return Err(Failure::Retry("malformed answer: no ciphertext".into()));
        }
        // "Check this field to verify that the intended resource was used for encryption."
        let version_of = format!("{}/cryptoKeyVersions/", self.key);
        if !r.name.starts_with(&version_of) {
            return Err(Failure::Final(CipherError::KeyUnavailable(format!(
                "KMS encrypted with {:?}, which is not a version of key {}",
                r.name, self.key
            ))));
        }
        Ok(ciphertext)
    }

    async fn decrypt_once(&self, body: &[u8]) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let mut r: DecryptResponse = self.post("decrypt", body).await?;
        let decoded = wire::unb64(&r.plaintext);
        r.plaintext.zeroize();
        let plaintext = Zeroizing::new(
            decoded.map_err(|e| Failure::Retry(format!("malformed answer: plaintext: {e}")))?,
        );
        if r.plaintext_crc32c != Some(wire::crc32c(&plaintext) as u64) {
            return Err(Failure::Retry(format!(
                "corrupt in transit: plaintextCrc32c {:?} does not match the plaintext",
                r.plaintext_crc32c
            )));
        }
        Ok(plaintext)
    }
}

#[async_trait]
impl Kek for KmsKek {
    fn kind(&self) -> &str {
        "gcp-kms"
    }

    fn id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, data_key: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut req = EncryptRequest {
            plaintext: wire::b64(data_key),
            additional_authenticated_data: wire::b64(aad),
            plaintext_crc32c: Some(wire::crc32c(data_key) as u64),
            additional_authenticated_data_crc32c: (!aad.is_empty())
                .then(|| wire::crc32c(aad) as u64),
        };
        let body = Zeroizing::new(serde_json::to_vec(&req).expect("a JSON body"));
        req.plaintext.zeroize();
        self.with_retries("encrypt", || self.encrypt_once(&body, aad))
            .await
    }

    async fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CipherError> {
        if wrapped.is_empty() {
            return Err(CipherError::Invalid("no wrapped data key".into()));
        }
        let req = DecryptRequest {
            ciphertext: wire::b64(wrapped),
            additional_authenticated_data: wire::b64(aad),
            ciphertext_crc32c: Some(wire::crc32c(wrapped) as u64),
            additional_authenticated_data_crc32c: (!aad.is_empty())
                .then(|| wire::crc32c(aad) as u64),
        };
        let body = serde_json::to_vec(&req).expect("a JSON body");
        self.with_retries("decrypt", || self.decrypt_once(&body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_validated() {
        for ok in [
            "projects/p-1/locations/global/keyRings/runvoy/cryptoKeys/secrets",
            "projects/example.com:proj/locations/europe-west1/keyRings/r_1/cryptoKeys/K-2",
            "projects/123456789/locations/us/keyRings/r/cryptoKeys/k",
        ] {
            assert_eq!(KmsKeyName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "secrets",
            "projects/p/locations/global/keyRings/r",
            "projects/p/locations/global/keyRings/r/cryptoKeys/",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/p/locations/global/keyrings/r/cryptoKeys/k",
            "projects//locations/global/keyRings/r/cryptoKeys/k",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k:encrypt",
            "projects/p/locations/glo bal/keyRings/r/cryptoKeys/k",
            "/projects/p/locations/global/keyRings/r/cryptoKeys/k",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k?x=1",
        ] {
            let err = KmsKeyName::parse(bad).unwrap_err();
            assert!(err.to_string().contains("cryptoKeys/KEY"), "{bad}: {err}");
        }
        let long = format!(
            "projects/p/locations/l/keyRings/r/cryptoKeys/{}",
            "k".repeat(64)
        );
        assert!(KmsKeyName::parse(&long).is_err());
    }

    #[test]
    fn endpoints_are_validated() {
        let key = KmsKeyName::parse("projects/p/locations/l/keyRings/r/cryptoKeys/k").unwrap();
        let tokens: Arc<dyn TokenProvider> = Arc::new(StaticToken("t".into()));
        for bad in ["", "cloudkms.googleapis.com", "ftp://x", "http://"] {
            let mut c = KmsConfig::new(key.clone(), tokens.clone());
            c.endpoint = bad.into();
            assert!(KmsKek::new(c).is_err(), "{bad:?}");
        }
        let mut c = KmsConfig::new(key, tokens);
        c.endpoint = "http://127.0.0.1:9/".into();
        let k = KmsKek::new(c).unwrap();
        assert_eq!(k.base, "http://127.0.0.1:9");
        assert_eq!(
            k.id(),
            "gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k"
        );
    }
}
