//! The Application Default Credentials provider, end to end: an `authorized_user` credentials
//! file whose token endpoint is a local mock, and the Admin API receiving that token. Its own test
//! binary: it sets `GOOGLE_APPLICATION_CREDENTIALS` for the process.

use std::sync::Arc;

use runvoy_compute_cloudrun::{AdcTokenProvider, CloudRunCompute, CloudRunConfig, TokenProvider};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn adc_tokens_reach_the_admin_api() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.from-adc",
            "expires_in": 3600,
            "token_type": "Bearer"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/projects/p1/locations/r1/jobs"))
        .and(header("authorization", "Bearer ya29.from-adc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("adc.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({
            "type": "authorized_user",
            "client_id": "id.apps.googleusercontent.com",
            "client_secret": "not-a-secret",
            "refresh_token": "1//refresh",
            "token_uri": format!("{}/token", server.uri())
        }))
        .expect("json"),
    )
    .expect("write");
    // SAFETY: this test binary has this one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &file) };

    let adc = AdcTokenProvider::new().expect("credentials");
    assert_eq!(adc.token().await.expect("token"), "ya29.from-adc");
    let mut cfg = CloudRunConfig::new("p1", "r1", "sidecar:1");
    cfg.base_url = server.uri();
    let c = CloudRunCompute::new(cfg, Arc::new(adc)).expect("compute");
    use runvoy_domain::ports::Compute;
    assert!(c.list().await.expect("list with the ADC token").is_empty());
}
