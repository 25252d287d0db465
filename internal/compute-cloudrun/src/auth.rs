//! OAuth access tokens for the Admin API.

use async_trait::async_trait;

/// Scope the Cloud Run Admin API accepts.
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Hands out an OAuth 2.0 access token for each request (implementations cache and refresh).
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// A valid access token, or why none can be had.
    async fn token(&self) -> Result<String, String>;
}

/// A fixed token: for tests and the in-repo fake, which accept any.
#[derive(Debug, Clone)]
pub struct StaticToken(pub String);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

/// Tokens from Application Default Credentials (the metadata server on Cloud Run,
/// `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's user credentials elsewhere), through Google's
/// `google-cloud-auth` crate, which caches and refreshes them.
#[derive(Debug, Clone)]
pub struct AdcTokenProvider {
    creds: google_cloud_auth::credentials::AccessTokenCredentials,
}

impl AdcTokenProvider {
    /// Loads Application Default Credentials with the `cloud-platform` scope.
    pub fn new() -> Result<AdcTokenProvider, String> {
        let creds = google_cloud_auth::credentials::Builder::default()
            .with_scopes([CLOUD_PLATFORM_SCOPE])
            .build_access_token_credentials()
            .map_err(|e| format!("loading Application Default Credentials: {e}"))?;
        Ok(AdcTokenProvider { creds })
    }
}

#[async_trait]
impl TokenProvider for AdcTokenProvider {
    async fn token(&self) -> Result<String, String> {
        self.creds
            .access_token()
            .await
            .map(|t| t.token)
            .map_err(|e| format!("getting an access token: {e}"))
    }
}
