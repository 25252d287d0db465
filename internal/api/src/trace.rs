//! `GET /trace/{request_id}`: what one request did, from the store and the server's log store.

use axum::extract::State;
use runvoy_proto::{TraceLogLine, TraceResources, TraceResponse};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Path;
use crate::users::user_to_api;

/// The records a request created or last changed, and the server log lines carrying its id.
#[utoipa::path(get, path = "/api/v1/trace/{request_id}", params(("request_id" = String, Path, pattern = "^[A-Za-z0-9_-]{8,64}$")),
    responses((status = 200, body = TraceResponse), (status = 400, body = runvoy_proto::ErrorBody),
              (status = 403, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn get(
    State(st): State<AppState>,
    Path(request_id): Path<String>,
) -> Result<axum::Json<TraceResponse>, ApiError> {
    let t = st.service.trace(&request_id).await?;
    let logs = t
        .logs
        .iter()
        .map(|l| {
            let fields: serde_json::Value =
                serde_json::from_str(&l.line).unwrap_or(serde_json::Value::Null);
            let text = |k: &str| fields[k].as_str().unwrap_or_default().to_owned();
            TraceLogLine {
                timestamp: l.ts_ms,
                level: text("level"),
                message: text("message"),
                fields: fields.clone(),
            }
        })
        .collect();
    Ok(axum::Json(TraceResponse {
        request_id,
        logs,
        related_resources: TraceResources {
            executions: t.executions.iter().map(|e| e.to_api()).collect(),
            users: t.users.iter().map(user_to_api).collect(),
            images: t.images.iter().map(|i| i.to_api()).collect(),
        },
    }))
}
