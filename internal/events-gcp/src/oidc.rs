//! Verification of the Google-signed OIDC token on every push (Pub/Sub, Eventarc, Scheduler).
//!
//! Checks: `Authorization: Bearer JWT`; header `alg` RS256 with a `kid` found in the JWKS (fetched
//! from the configured URL, cached, fetched again when a token names an unknown `kid` or the
//! cache is an hour old); signature; `exp` (60 s leeway; tokens may be up to an hour old, so `iat`
//! is not limited); `iss` `https://accounts.google.com` or `accounts.google.com`; `aud` the
//! configured audience; `email` the configured push service account with `email_verified`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// Google's OAuth2 signing keys.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Issuers of Google ID tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// How long fetched keys are used before they are fetched again (Google rotates them over days).
pub const KEYS_TTL: Duration = Duration::from_secs(3600);

/// What a push token must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The `aud` the subscription, trigger or Scheduler job was configured with.
    pub audience: String,
    /// The service account the token is minted for (`email`).
    pub service_account: String,
    /// Where the signing keys are (a JWKS document).
    pub jwks_url: String,
    /// Least time between two fetches caused by unknown `kid`s, so a stream of forged tokens
    /// cannot make runvoyd hammer the key endpoint.
    pub min_refresh: Duration,
}

impl OidcConfig {
    /// Google's keys, refreshed at most every 5 s for unknown `kid`s.
    pub fn google(audience: String, service_account: String) -> Self {
        OidcConfig {
            audience,
            service_account,
            jwks_url: GOOGLE_JWKS_URL.into(),
            min_refresh: Duration::from_secs(5),
        }
    }
}

/// Why a push was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token (401).
    #[error("missing bearer token")]
    Missing,
    /// A token that does not verify (401).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The signing keys could not be fetched, so nothing can be verified (503: retried).
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// The claims runvoy reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The service account the token was minted for.
    #[serde(default)]
    pub email: Option<String>,
    /// Google sends a boolean; older tokens a string.
    #[serde(default)]
    pub email_verified: Option<serde_json::Value>,
    /// Subject (the service account's unique id).
    #[serde(default)]
    pub sub: Option<String>,
}

struct Cached {
    keys: JwkSet,
    fetched: Instant,
}

/// Verifies push tokens against a cached JWKS.
pub struct Verifier {
    cfg: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Option<Cached>>,
    /// Serialises fetches; holds when the last one happened.
    fetching: Mutex<Option<Instant>>,
}

impl Verifier {
    /// A verifier; keys are fetched on first use.
    pub fn new(cfg: OidcConfig) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Arc::new(Verifier {
            cfg,
            http,
            keys: RwLock::new(None),
            fetching: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// Checks an `Authorization` header value.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Claims, AuthError> {
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("header: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!("algorithm {:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("no kid".into()))?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[&self.cfg.audience]);
        v.set_issuer(&GOOGLE_ISSUERS);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let c = data.claims;
        if c.email.as_deref() != Some(self.cfg.service_account.as_str()) {
            return Err(AuthError::Invalid(format!(
                "email {:?} is not the push service account",
                c.email.as_deref().unwrap_or("")
            )));
        }
        let verified = match &c.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        if !verified {
            return Err(AuthError::Invalid("email not verified".into()));
        }
        Ok(c)
    }

    /// The key for `kid`, fetching the set when it is unknown or stale.
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        {
            let keys = self.keys.read().await;
            if let Some(c) = keys.as_ref()
                && c.fetched.elapsed() < KEYS_TTL
                && let Some(k) = c.keys.find(kid)
            {
                return DecodingKey::from_jwk(k).map_err(|e| AuthError::Invalid(e.to_string()));
            }
        }
        let mut last = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(c) = self.keys.read().await.as_ref()
            && c.fetched.elapsed() < KEYS_TTL
            && let Some(k) = c.keys.find(kid)
        {
            return DecodingKey::from_jwk(k).map_err(|e| AuthError::Invalid(e.to_string()));
        }
        let (have, stale) = match self.keys.read().await.as_ref() {
            Some(c) => (true, c.fetched.elapsed() >= KEYS_TTL),
            None => (false, true),
        };
        let recently = last.is_some_and(|t| t.elapsed() < self.cfg.min_refresh);
        if stale || !recently {
            let fetched = self.fetch().await;
            *last = Some(Instant::now());
            match fetched {
                Ok(set) => {
                    *self.keys.write().await = Some(Cached {
                        keys: set,
                        fetched: Instant::now(),
                    })
                }
                // Without any key nothing can be verified: the push is retried later.
                Err(e) if !have => return Err(e),
                // Stale keys still verify tokens signed before a rotation.
                Err(e) => tracing::warn!(error = %e, "could not refresh the push signing keys"),
            }
        }
        let keys = self.keys.read().await;
        let k = keys
            .as_ref()
            .and_then(|c| c.keys.find(kid))
            .ok_or_else(|| AuthError::Invalid(format!("unknown signing key {kid:?}")))?;
        DecodingKey::from_jwk(k).map_err(|e| AuthError::Invalid(e.to_string()))
    }

    async fn fetch(&self) -> Result<JwkSet, AuthError> {
        let url = &self.cfg.jwks_url;
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| AuthError::KeysUnavailable(format!("{url}: {e}")))?;
        if !r.status().is_success() {
            return Err(AuthError::KeysUnavailable(format!(
                "{url}: HTTP {}",
                r.status()
            )));
        }
        let set: JwkSet = r
            .json()
            .await
            .map_err(|e| AuthError::KeysUnavailable(format!("{url}: not a JWKS: {e}")))?;
        tracing::info!(url = %url, keys = set.keys.len(), "push signing keys fetched");
        Ok(set)
    }
}
