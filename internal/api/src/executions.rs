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

/// Checks the policy's `USE` rule on each secret a run names: 404 `SECRET_NOT_FOUND` for one
/// that does not exist, 403 for one the caller may not use, before anything is stored.
async fn check_secret_use(
    st: &AppState,
    caller: &Caller,
    names: &[String],
) -> Result<(), ApiError> {
    use crate::policy::{ACTION_USE, Grant};
    if names.is_empty() {
        return Ok(());
    }
    let rule = crate::policy::lookup(ACTION_USE, "/secrets/{name}")
        .ok_or_else(|| ApiError::forbidden("no rule for using secrets"))?;
    let vault = st
        .vault
        .as_deref()
        .ok_or_else(|| ApiError::invalid("this server cannot deliver secrets to runs"))?;
    for name in names {
        let s = vault.get(name).await?;
        match rule.access.grant(caller.user.role) {
            Grant::All => {}
            Grant::Own if s.created_by == caller.user.email => {}
            _ => {
                return Err(ApiError::forbidden(format!(
                    "the {} role may not use secret {name:?}; nothing was started",
                    caller.user.role.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// Starts a command. Secrets it names are injected into the command's `.env` by the sidecar;
/// only their names travel with the run.
#[utoipa::path(post, path = "/api/v1/run", request_body = RunRequest,
    responses((status = 202, body = RunResponse), (status = 400, body = runvoy_proto::ErrorBody),
               (status = 401, body = runvoy_proto::ErrorBody),
               (status = 403, body = runvoy_proto::ErrorBody, description = "the caller may not use a secret the run names"),
               (status = 404, body = runvoy_proto::ErrorBody, description = "SECRET_NOT_FOUND: a secret the run names does not exist; nothing was created"),
               (status = 409, body = runvoy_proto::ErrorBody,
                description = "LOCK_HELD: the run's `lock` is held by an unfinished execution, named in the body's `lock` (`execution_id`, `held_by`, `acquired_at`); nothing was created"),
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
    check_secret_use(&st, &caller, &req.secrets).await?;
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
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Comma-separated statuses.
    status: Option<String>,
    /// Cursor from a previous page.
    cursor: Option<String>,
    /// Only executions created by this user (an email). Developers and viewers still see only
    /// their own: another user's email matches nothing.
    user: Option<String>,
    /// Only executions created at or after this time: RFC 3339 (`2026-01-02T03:04:05Z`) or a
    /// duration back from now (`30m`, `1h30m`, `2d`; units s, m, h, d, w).
    since: Option<String>,
}

/// Parses a duration such as `90s`, `30m`, `1h30m`, `2d` or `1w` to milliseconds: one or more
/// `NUMBER UNIT` pairs (units `s`, `m`, `h`, `d`, `w`), nothing else.
fn parse_since_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s.as_bytes();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 12 || digits == rest.len() {
            return None;
        }
        let n: i64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let unit: i64 = match rest[digits] {
            b's' => 1_000,
            b'm' => 60_000,
            b'h' => 3_600_000,
            b'd' => 86_400_000,
            b'w' => 7 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// The `since` filter as epoch ms: an RFC 3339 time, or `now_ms` minus a duration.
fn parse_since(s: &str, now_ms: i64) -> Result<i64, ApiError> {
    let s = s.trim();
    if let Some(d) = parse_since_duration(s) {
        return Ok(now_ms.saturating_sub(d));
    }
    runvoy_domain::clock::parse_rfc3339(s).ok_or_else(|| {
        ApiError::invalid(format!(
            "invalid since {s:?}: give an RFC 3339 time (2026-01-02T03:04:05Z) or a duration \
             (30m, 1h30m, 2d)"
        ))
    })
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    Query(mut p): Query<ListParams>,
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
    // An empty `cursor=` or `since=` is the parameter left blank, as a form sends it: absent.
    let blank = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    if blank(&p.cursor) {
        p.cursor = None;
    }
    if blank(&p.since) {
        p.since = None;
    }
    if let Some(c) = &p.cursor {
        let ok = c.split_once('-').is_some_and(|(ms, id)| {
            ms.parse::<i64>().is_ok() && runvoy_domain::valid_execution_id(id)
        });
        if !ok {
            return Err(ApiError::invalid("malformed cursor"));
        }
    }
    let user = match p.user.as_deref() {
        Some(u) => Some(runvoy_domain::auth::normalize_email(u).ok_or_else(|| {
            ApiError::invalid(format!("invalid user {u:?}: give an email address"))
        })?),
        None => None,
    };
    let since_ms = match p.since.as_deref() {
        Some(s) => Some(parse_since(s, st.service.clock.now_ms())?),
        None => None,
    };
    // Validated values go into the Link URL (digits, status names, the checked cursor); the
    // user and the since time (fixed as RFC 3339, so every page has the same bound) are
    // percent-encoded.
    let status_filter: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let mut filters = Vec::new();
    if !status_filter.is_empty() {
        filters.push(format!("status={}", status_filter.join(",")));
    }
    if let Some(u) = &user {
        filters.push(format!("user={}", query_escape(u)));
    }
    if let Some(t) = since_ms {
        filters.push(format!(
            "since={}",
            query_escape(&runvoy_domain::clock::rfc3339(t))
        ));
    }
    // Developers and viewers see only their own executions, whatever `user` asks for.
    let created_by = match (scope == Scope::Own, user) {
        (true, Some(u)) if u != caller.user.email => {
            return Ok(axum::Json(Vec::<runvoy_proto::Execution>::new()).into_response());
        }
        (true, _) => Some(caller.user.email.clone()),
        (false, u) => u,
    };
    let q = ListQuery {
        limit,
        statuses,
        created_by,
        since_ms,
        cursor: p.cursor,
    };
    let (rows, next) = st.service.list(&q).await?;
    let body: Vec<runvoy_proto::Execution> = rows.iter().map(|e| e.to_api()).collect();
    let mut resp = axum::Json(body).into_response();
    if let Some(cursor) = next {
        let link = next_link(p.limit, &filters, &cursor);
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            resp.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(resp)
}

/// `<…>; rel="next"` for the page after `cursor`, keeping the request's limit and filters
/// (`key=value`, already encoded).
fn next_link(limit: Option<usize>, filters: &[String], cursor: &str) -> String {
    let mut q = Vec::new();
    if let Some(l) = limit {
        q.push(format!("limit={l}"));
    }
    q.extend(filters.iter().cloned());
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
    #[param(minimum = 0)]
    after_seq: Option<u64>,
    /// Page size, 1–10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
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
        compute: st.compute.clone(),
        cipher: st.cipher.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_durations_and_times() {
        assert_eq!(parse_since_duration("90s"), Some(90_000));
        assert_eq!(parse_since_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_since_duration("2d"), Some(172_800_000));
        assert_eq!(parse_since_duration("1w"), Some(604_800_000));
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1h 30m",
            "-1h",
            "1.5h",
            "999999999999999d",
        ] {
            assert_eq!(parse_since_duration(bad), None, "{bad:?}");
        }
        let now = 10 * 86_400_000;
        assert_eq!(parse_since("1d", now).ok(), Some(9 * 86_400_000));
        assert_eq!(
            parse_since("1970-01-02T00:00:00Z", now).ok(),
            Some(86_400_000)
        );
        assert_eq!(
            parse_since("1970-01-02T01:00:00+01:00", now).ok(),
            Some(86_400_000)
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("2026-13-01T00:00:00Z", now).is_err());
    }

    #[test]
    fn link_keeps_filters_encoded() {
        let f = vec![
            "status=RUNNING".to_owned(),
            format!("user={}", query_escape("a+b@x.io")),
            format!("since={}", query_escape("2026-01-02T03:04:05.000Z")),
        ];
        assert_eq!(
            next_link(Some(5), &f, "1-ab"),
            "</api/v1/executions?limit=5&status=RUNNING&user=a%2Bb%40x.io\
             &since=2026-01-02T03%3A04%3A05.000Z&cursor=1-ab>; rel=\"next\""
        );
    }
}
