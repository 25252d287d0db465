//! runvoy's HTTP and WebSocket API.
//!
//! [`router`] builds the whole axum application: `/api/v1/*` (authenticated unless public), the
//! log WebSocket, the OpenAPI document, and the embedded web app for every other path.

pub mod auth;
pub mod error;
mod executions;
mod extract;
mod health;
mod images;
pub mod links;
mod openapi;
pub mod policy;
pub mod ready;
pub mod secrets;
pub mod serverlog;
mod trace;
mod users;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, get, on};
use runvoy_domain::service::Service;
use runvoy_proto::codes;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{AuthLimiter, LastUsed, TokenSigner};
use crate::error::ApiError;

pub use openapi::ApiDoc;

/// Log streams one user may have open at once unless configured otherwise.
pub const DEFAULT_MAX_STREAMS_PER_USER: usize = 32;

/// Largest accepted request body: room for a run's standard input at its limit (base64 grows it
/// by a third) plus its command and environment.
pub const MAX_BODY_BYTES: usize = runvoy_proto::MAX_STDIN_BYTES / 3 * 4 + 512 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The orchestrator.
    pub service: Arc<Service>,
    /// WebSocket token signer.
    pub tokens: Arc<TokenSigner>,
    /// `last_used` throttle.
    pub last_used: Arc<LastUsed>,
    /// Per-address limit on failed authentications.
    pub auth_limiter: Arc<AuthLimiter>,
    /// Server version.
    pub version: String,
    /// Backend name (`local`, `gcp`).
    pub backend: String,
    /// Public base URL (e.g. `https://runvoy.example.com`) for links; see [`links`].
    pub public_url: Option<String>,
    /// The listener's own base URL (`http://127.0.0.1:8080`), for links when the connection's
    /// local address is unknown.
    pub listen_url: String,
    /// Peers whose `X-Forwarded-Host`/`-Proto` are believed when building links.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Open log streams per user, and the limit.
    pub streams: Arc<ws::StreamCounts>,
    /// Emails of users whose key, role or revocation changed on this instance: their open log
    /// streams re-check access at once instead of at the next periodic check.
    pub user_changes: tokio::sync::broadcast::Sender<String>,
    /// Becomes true when the server shuts down, so open WebSockets close (clients reconnect).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// How commands are isolated (`bubblewrap`, `none`), for `/health`.
    pub isolation: String,
    /// The compute adapter's platform name (shown by `/health`).
    pub compute: String,
    /// What protects stored secrets' keys (`local`, `gcp-kms`), for `/health`.
    pub cipher: String,
    /// How each execution limit is enforced, by limit name, for `/health`.
    pub limits: std::collections::BTreeMap<String, String>,
    /// What `GET /health/ready` checks.
    pub readiness: ready::Readiness,
    /// Secret operations; `None` on a server without a cipher.
    pub vault: Option<Arc<runvoy_domain::secrets::SecretVault>>,
    /// The signer of executions' secrets fetch tokens.
    pub secrets_fetch: Option<Arc<secrets::SecretsFetchSigner>>,
}

impl AppState {
    /// A state with a fresh `last_used` throttle.
    pub fn new(
        service: Arc<Service>,
        tokens: TokenSigner,
        version: String,
        backend: String,
        public_url: Option<String>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        AppState {
            shutdown,
            isolation: "none".into(),
            compute: String::new(),
            cipher: String::new(),
            limits: Default::default(),
            service,
            tokens: Arc::new(tokens),
            last_used: Arc::default(),
            auth_limiter: Arc::default(),
            version,
            backend,
            public_url,
            readiness: ready::Readiness::default(),
            vault: None,
            secrets_fetch: None,
            listen_url: "http://localhost".into(),
            trusted_proxies: Arc::default(),
            streams: Arc::new(ws::StreamCounts::new(DEFAULT_MAX_STREAMS_PER_USER)),
            user_changes: tokio::sync::broadcast::channel(256).0,
        }
    }

    /// Serves secrets from `vault` and hands them to executions whose fetch `signer` minted.
    pub fn with_secrets(
        mut self,
        vault: Arc<runvoy_domain::secrets::SecretVault>,
        signer: Arc<secrets::SecretsFetchSigner>,
    ) -> Self {
        self.vault = Some(vault);
        self.secrets_fetch = Some(signer);
        self
    }

    /// Sets what `GET /health/ready` checks.
    pub fn with_readiness(mut self, readiness: ready::Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Sets the listener's own base URL and the proxies trusted to name the public host.
    pub fn with_links(mut self, listen_url: String, trusted_proxies: Vec<ipnet::IpNet>) -> Self {
        self.listen_url = listen_url;
        self.trusted_proxies = Arc::new(trusted_proxies);
        self
    }

    /// Allows each user at most `n` open log streams.
    pub fn with_max_streams_per_user(mut self, n: usize) -> Self {
        self.streams = Arc::new(ws::StreamCounts::new(n));
        self
    }

    /// Allows `burst` failed authentications per client address, refilled at `per_minute`.
    pub fn with_auth_failure_limit(mut self, burst: u32, per_minute: u32) -> Self {
        self.auth_limiter = Arc::new(AuthLimiter::new(burst, per_minute));
        self
    }

    /// Records what protects stored secrets' keys (shown by `/health`).
    pub fn with_cipher(mut self, kind: &str) -> Self {
        self.cipher = kind.to_owned();
        self
    }

    /// Records which compute runs the commands (shown by `/health`).
    pub fn with_compute(mut self, platform: &str) -> Self {
        self.compute = platform.to_owned();
        self
    }

    /// Records how commands are isolated and how each limit is enforced (shown by `/health`).
    pub fn with_isolation(
        mut self,
        isolation: &str,
        limits: std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.isolation = isolation.to_owned();
        self.limits = limits;
        self
    }
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// One API route: method, template under `/api/v1`, handler.
pub(crate) type ApiRoute = (&'static str, &'static str, MethodRouter<AppState>);

fn route<H, T>(method: &'static str, path: &'static str, handler: H) -> ApiRoute
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let m = Method::from_bytes(method.as_bytes()).expect("valid method");
    let filter = MethodFilter::try_from(m).expect("routable method");
    (method, path, on(filter, handler))
}

/// Every API route. The router is built from this list only, and the policy test checks it
/// against [`policy::POLICY`] rule by rule.
pub(crate) fn api_routes() -> Vec<ApiRoute> {
    vec![
        route("GET", "/health", executions::health),
        route("GET", "/health/ready", ready::ready),
        route("GET", "/openapi.json", openapi::serve),
        // POST only: a safe method (a link preview, a prefetch) must never use the token up.
        route("POST", "/claim/{token}", users::claim),
        route("GET", "/executions/{id}/logs/ws", ws::handler),
        route("POST", "/run", executions::run),
        route("GET", "/executions", executions::list),
        route("GET", "/executions/{id}", executions::get),
        route("DELETE", "/executions/{id}", executions::kill),
        route("GET", "/executions/{id}/status", executions::get),
        route("GET", "/executions/{id}/logs", executions::logs),
        route("POST", "/health/reconcile", executions::reconcile),
        route("GET", "/health/reports", health::reports),
        route("GET", "/users", users::list),
        route("GET", "/users/", users::list),
        route("POST", "/users/create", users::create),
        route("POST", "/users/revoke", users::revoke),
        route("POST", "/users/set-role", users::set_role),
        route("POST", "/users/rotate-key", users::rotate_key),
        route("GET", "/users/me", users::me),
        route("GET", "/trace/{request_id}", trace::get),
        route("GET", "/images", images::list),
        route("POST", "/images/register", images::register),
        // A catch-all: image ids and references contain '/'.
        route("GET", "/images/{*id}", images::get),
        route("DELETE", "/images/{*id}", images::unregister),
        route("POST", "/secrets", secrets::create),
        route("GET", "/secrets", secrets::list),
        route("GET", "/secrets/{name}", secrets::get),
        route("PUT", "/secrets/{name}", secrets::update),
        route("DELETE", "/secrets/{name}", secrets::delete),
        route("POST", "/secrets/{name}/reveal", secrets::reveal),
        route("POST", "/executions/{id}/secrets", secrets::fetch),
    ]
}

/// Builds the application.
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new();
    for (method, path, handler) in api_routes() {
        // Fail at start-up rather than serve a route the policy does not know (which the access
        // layer would refuse on every call anyway).
        assert!(
            policy::lookup(method, path).is_some(),
            "{method} {path} has no access rule in policy::POLICY"
        );
        routes = routes.route(path, handler);
    }
    let routes = routes.route_layer(middleware::from_fn_with_state(state.clone(), auth::enforce));
    let api = Router::new()
        .merge(routes)
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            // API keys travel in headers (no cookies), so any origin may call the API: this is
            // what lets the web app talk to another runvoyd.
            CorsLayer::new()
                .allow_origin(AllowOrigin::mirror_request())
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    HeaderName::from_static("content-type"),
                    HeaderName::from_static("x-api-key"),
                    HeaderName::from_static("authorization"),
                    HeaderName::from_static("x-request-id"),
                ])
                .expose_headers([
                    HeaderName::from_static("x-request-id"),
                    HeaderName::from_static("x-correlation-id"),
                ])
                .max_age(std::time::Duration::from_secs(3600)),
        );
    Router::new()
        .nest("/api/v1", api)
        .route(
            "/api",
            get(|| async { ApiError::not_found("no such API route").into_response() }),
        )
        .with_state(state)
        .merge(runvoy_web::router())
        .layer(middleware::from_fn(auth::request_id))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    codes::INTERNAL_ERROR,
                    "internal error",
                )
                .into_response()
            },
        ))
}
