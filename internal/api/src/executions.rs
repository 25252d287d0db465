//! Execution handlers: run, list, get, kill, logs, health, reconcile.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runvoy_domain::ports::ListQuery;
use runvoy_domain::service::{Caller, KillOutcome};
use runvoy_proto::{HealthResponse, KillResponse, LogsResponse, RunRequest, RunResponse, Status};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Scope;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::links::LinkBase;

/// Builds the WebSocket URL (with a fresh token) for following an execution.
pub(crate) fn websocket_url(
    st: &AppState,
    base: &LinkBase,
    id: &str,
    user: &runvoy_domain::User,
) -> String {
    let base = base.0.clone();
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base
    };
    let token = st
        .tokens
        .mint(id, &user.email, &user.key_hash, st.service.clock.now_ms());
    format!(
        "{}/api/v1/executions/{id}/logs/ws?token={token}",
        ws_base.trim_end_matches('/')
    )
}

/// Starts a command.
#[utoipa::path(post, path = "/api/v1/run", request_body = RunRequest,
    responses((status = 202, body = RunResponse), (status = 400, body = runvoy_proto::ErrorBody),
               (status = 401, body = runvoy_proto::ErrorBody),
               (status = 429, body = runvoy_proto::ErrorBody,
                description = "EXECUTION_LIMIT_REACHED: the caller or the server has as many unfinished executions as allowed; nothing was created"),
               (status = 503, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    base: LinkBase,
    Json(req): Json<RunRequest>,
) -> Result<Response, ApiError> {
    let e = st.service.run(&caller, req).await?;
    tracing::info!(execution_id = %e.id, image = %e.image, "execution started");
    let body = RunResponse {
        websocket_url: websocket_url(&st, &base, &e.id, &caller.user),
        execution_id: e.id,
        status: e.status,
        command: e.command,
        argv: e.argv,
        image_id: e.image,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// Query of `GET /executions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Page size, 1–1000 (default 50).
    limit: Option<usize>,
    /// Comma-separated statuses.
    status: Option<String>,
    /// Cursor from a previous page.
    cursor: Option<String>,
}

/// Lists executions as a bare JSON array, newest first (only the caller's own for developers
/// and viewers). When more match, a `Link: <…>; rel="next"` header gives the next page's URL.
#[utoipa::path(get, path = "/api/v1/executions", params(ListParams),
    responses((status = 200, body = [runvoy_proto::Execution],
               headers(("Link" = String, description = "`<URL>; rel=\"next\"` when more executions match"))),
              (status = 400, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let mut statuses = Vec::new();
    for s in p
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
    {
        statuses.push(Status::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown status {s:?}; use STARTING, RUNNING, SUCCEEDED, FAILED, STOPPED or TERMINATING"
            ))
        })?);
    }
    if let Some(c) = &p.cursor {
        let ok = c.split_once('-').is_some_and(|(ms, id)| {
            ms.parse::<i64>().is_ok() && runvoy_domain::valid_execution_id(id)
        });
        if !ok {
            return Err(ApiError::invalid("malformed cursor"));
        }
    }
    // Only validated values go into the Link URL (digits, status names, the checked cursor),
    // so it needs no percent-encoding.
    let status_filter: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let status_filter = status_filter.join(",");
    let q = ListQuery {
        limit,
        statuses,
        created_by: (scope == Scope::Own).then(|| caller.user.email.clone()),
        cursor: p.cursor,
    };
    let (rows, next) = st.service.list(&q).await?;
    let body: Vec<runvoy_proto::Execution> = rows.iter().map(|e| e.to_api()).collect();
    let mut resp = axum::Json(body).into_response();
    if let Some(cursor) = next {
        let link = next_link(p.limit, &status_filter, &cursor);
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            resp.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(resp)
}

/// `<…>; rel="next"` for the page after `cursor`, keeping the request's limit and status filter.
fn next_link(limit: Option<usize>, status: &str, cursor: &str) -> String {
    let mut q = Vec::new();
    if let Some(l) = limit {
        q.push(format!("limit={l}"));
    }
    if !status.is_empty() {
        q.push(format!("status={status}"));
    }
    q.push(format!("cursor={cursor}"));
    format!("</api/v1/executions?{}>; rel=\"next\"", q.join("&"))
}

/// Reads one execution (also served at `/status`).
#[utoipa::path(get, path = "/api/v1/executions/{id}", params(("id" = String, Path)),
    responses((status = 200, body = runvoy_proto::Execution), (status = 404, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<runvoy_proto::Execution>, ApiError> {
    Ok(axum::Json(st.service.get(&id).await?.to_api()))
}

/// Kills an execution: SIGTERM, then SIGKILL after the grace period. An execution that is
/// already over is left alone; the answer is 200 with its (terminal) status either way.
#[utoipa::path(delete, path = "/api/v1/executions/{id}", params(("id" = String, Path)),
    responses((status = 200, body = KillResponse), (status = 404, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn kill(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    tracing::info!(execution_id = %id, "kill requested");
    let body = match st.service.kill(&caller, &id).await? {
        KillOutcome::AlreadyTerminal => {
            let e = st.service.get(&id).await?;
            KillResponse {
                execution_id: id,
                message: format!("execution already finished ({})", e.status),
                status: e.status,
                exit_code: e.exit_code,
            }
        }
        KillOutcome::Started => KillResponse {
            execution_id: id,
            message: "execution termination initiated".into(),
            status: Status::Terminating,
            exit_code: None,
        },
    };
    Ok(axum::Json(body).into_response())
}

/// Query of `GET /executions/{id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsParams {
    /// Return records with `seq` greater than this (default 0).
    after_seq: Option<u64>,
    /// Page size, 1–10000 (default 1000).
    limit: Option<usize>,
}

/// Stored log records after a seq, paged, with a WebSocket URL to follow.
#[utoipa::path(get, path = "/api/v1/executions/{id}/logs", params(("id" = String, Path), LogsParams),
    responses((status = 200, body = LogsResponse), (status = 404, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn logs(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    base: LinkBase,
    Path(id): Path<String>,
    Query(p): Query<LogsParams>,
) -> Result<axum::Json<LogsResponse>, ApiError> {
    let limit = p.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 10000"));
    }
    let (e, recs, has_more) = st
        .service
        .logs(&id, p.after_seq.unwrap_or(0), limit)
        .await?;
    Ok(axum::Json(LogsResponse {
        websocket_url: websocket_url(&st, &base, &id, &caller.user),
        execution_id: e.id.clone(),
        status: e.status,
        events: recs.iter().map(|r| r.to_event(&e.id)).collect(),
        has_more,
        logs_complete: e.logs_complete,
    }))
}

/// Public health and version.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = HealthResponse)))]
pub(crate) async fn health(State(st): State<AppState>) -> axum::Json<HealthResponse> {
    axum::Json(HealthResponse {
        status: "ok".into(),
        version: st.version.clone(),
        backend: st.backend.clone(),
        provider: st.backend.clone(),
        isolation: st.isolation.clone(),
        limits: st.limits.clone(),
    })
}

/// Runs a full reconcile sweep now and returns its report.
#[utoipa::path(post, path = "/api/v1/health/reconcile",
    responses((status = 200, description = "the sweep report")), security(("api_key" = [])))]
pub(crate) async fn reconcile(State(st): State<AppState>) -> Result<Response, ApiError> {
    let report = st.service.processor.sweep("api").await?;
    Ok(axum::Json(serde_json::json!({ "status": "ok", "report": report })).into_response())
}
