//! runvoy's HTTP and WebSocket API.
//!
//! [`router`] builds the whole axum application: `/api/v1/*` (authenticated unless public), the
//! log WebSocket, the OpenAPI document, and the embedded web app for every other path.

pub mod auth;
pub mod error;
mod executions;
mod extract;
mod health;
mod openapi;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use runvoy_domain::service::Service;
use runvoy_proto::codes;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{LastUsed, TokenSigner};
use crate::error::ApiError;

pub use openapi::ApiDoc;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The orchestrator.
    pub service: Arc<Service>,
    /// WebSocket token signer.
    pub tokens: Arc<TokenSigner>,
    /// `last_used` throttle.
    pub last_used: Arc<LastUsed>,
    /// Server version.
    pub version: String,
    /// Backend name (`local`, `gcp`).
    pub backend: String,
    /// Public base URL (e.g. `https://runvoy.example.com`); derived from the request when unset.
    pub public_url: Option<String>,
    /// Becomes true when the server shuts down, so open WebSockets close (clients reconnect).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
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
            service,
            tokens: Arc::new(tokens),
            last_used: Arc::default(),
            version,
            backend,
            public_url,
        }
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

/// Builds the application.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/run", post(executions::run))
        .route("/executions", get(executions::list))
        .route(
            "/executions/{id}",
            get(executions::get).delete(executions::kill),
        )
        .route("/executions/{id}/status", get(executions::get))
        .route("/executions/{id}/logs", get(executions::logs))
        .route("/health/reconcile", post(executions::reconcile))
        .route("/health/reports", get(health::reports))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let public = Router::new()
        .route("/health", get(executions::health))
        .route("/openapi.json", get(openapi::serve))
        .route("/executions/{id}/logs/ws", get(ws::handler));
    let api = Router::new()
        .merge(authed)
        .merge(public)
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
                .expose_headers([HeaderName::from_static("x-request-id")])
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
