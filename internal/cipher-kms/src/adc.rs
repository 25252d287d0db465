//! Access tokens from Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, the
//! gcloud user's file, or the metadata server (Cloud Run, GCE), through `google-cloud-auth`,
//! which caches and refreshes them.

use async_trait::async_trait;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};
use runvoy_domain::ports::CipherError;

use crate::TokenProvider;

/// The scope of the tokens (KMS accepts cloud-platform; it is also what the metadata server
/// and `gcloud auth application-default login` grant).
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where Application Default Credentials come from, for error messages.
const WHERE: &str = "Application Default Credentials: the file in GOOGLE_APPLICATION_CREDENTIALS, \
                     `gcloud auth application-default login`, or the metadata server on Google \
                     Cloud";

/// Tokens from Application Default Credentials.
pub struct GoogleAdc {
    creds: AccessTokenCredentials,
}

impl GoogleAdc {
    /// Finds the credentials (no token is fetched yet); an unreadable or unsupported
    /// credentials file is an error here.
    pub fn new() -> Result<GoogleAdc, CipherError> {
        let creds = Builder::default()
            .with_scopes([SCOPE])
            .build_access_token_credentials()
            .map_err(|e| {
                CipherError::KeyUnavailable(format!(
                    "no usable Google Application Default Credentials: {e}"
                ))
            })?;
        Ok(GoogleAdc { creds })
    }
}

#[async_trait]
impl TokenProvider for GoogleAdc {
    async fn token(&self) -> Result<String, CipherError> {
        match self.creds.access_token().await {
            Ok(t) => Ok(t.token),
            Err(e) if e.is_transient() => Err(CipherError::Transient(format!(
                "getting a Google access token: {e} ({WHERE})"
            ))),
            Err(e) => Err(CipherError::KeyUnavailable(format!(
                "getting a Google access token: {e} ({WHERE})"
            ))),
        }
    }
}
