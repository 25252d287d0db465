//! Readiness: `GET /api/v1/health/ready`, whether this instance can do its work right now
//! (unlike `GET /health`, which only says the process answers).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runvoy_domain::health::StoreHealth;
use runvoy_proto::ReadyResponse;

use crate::AppState;

/// One extra readiness condition: `Some(reason)` while it is not met (e.g. the data dir is out
/// of space). Called on every readiness request, so it must be cheap.
pub type ReadinessCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What readiness looks at.
#[derive(Clone, Default)]
pub struct Readiness {
    /// Store write failures, reported by the `MonitoredStore` the service writes through.
    pub store: Option<Arc<StoreHealth>>,
    /// Further conditions.
    pub checks: Vec<ReadinessCheck>,
}

/// Ready (200) or not (503, with every reason): store writes failing, data dir out of space.
#[utoipa::path(get, path = "/api/v1/health/ready",
    responses((status = 200, body = ReadyResponse, description = "ready"),
               (status = 503, body = ReadyResponse, description = "not ready, with the reasons")))]
pub(crate) async fn ready(State(st): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if let Some(h) = &st.readiness.store
        && let Some(r) = h
            .check(st.service.store.as_ref(), st.service.clock.now_ms())
            .await
    {
        reasons.push(r);
    }
    reasons.extend(st.readiness.checks.iter().filter_map(|c| c()));
    if reasons.is_empty() {
        return axum::Json(ReadyResponse {
            status: "ready".into(),
            reasons,
        })
        .into_response();
    }
    tracing::warn!(reasons = ?reasons, "not ready");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(ReadyResponse {
            status: "not_ready".into(),
            reasons,
        }),
    )
        .into_response()
}
