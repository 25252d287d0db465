//! The log WebSocket: backlog after `after_seq`, live records, then one completion frame.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use runvoy_domain::follow::{FollowItem, Follower};
use runvoy_proto::codes;
use runvoy_proto::ws::Disconnect;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::{ClientAddr, auth_failure};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::policy::{self, Grant};

/// Query of the WebSocket route.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct WsParams {
    /// Token from a `websocket_url`.
    token: Option<String>,
    /// Resume after this seq (default 0).
    after_seq: Option<u64>,
}

/// Keep-alive ping interval, so idle proxies do not cut quiet executions.
const PING_EVERY: Duration = Duration::from_secs(20);

/// Streams an execution's log records. The handshake is refused (401) for a missing, bad,
/// expired or foreign token, or when its user was revoked.
#[utoipa::path(get, path = "/api/v1/executions/{id}/logs/ws", params(("id" = String, Path), WsParams),
    responses((status = 101, description = "WebSocket of LogEvent frames then a Disconnect frame"),
               (status = 401, body = runvoy_proto::ErrorBody), (status = 404, body = runvoy_proto::ErrorBody)))]
pub(crate) async fn handler(
    State(st): State<AppState>,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(id): Path<String>,
    Query(p): Query<WsParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let unauthorized =
        |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, codes::INVALID_TOKEN, m.to_owned());
    let token = p
        .token
        .ok_or_else(|| unauthorized("a token is required (take websocket_url from the API)"))?;
    let email = match st.tokens.verify(&token, &id, st.service.clock.now_ms()) {
        Ok(e) => e,
        Err(m) => {
            tracing::info!(reason = m, "rejected a WebSocket token");
            return Ok(auth_failure(&st, ip, unauthorized(m)));
        }
    };
    // Read on every handshake (and again while streaming): a token dies with its user's key,
    // and follows the user's role (a token minted before a demotion does not outlive the
    // access it was minted under).
    match may_follow(&st, &email, &id).await? {
        Access::Allowed => {
            tracing::Span::current().record("user", email.as_str());
        }
        Access::Revoked => {
            tracing::info!(user = %email, "rejected a WebSocket token of a revoked user");
            return Ok(auth_failure(
                &st,
                ip,
                unauthorized("the token's user is no longer valid"),
            ));
        }
        Access::NotCovered => {
            tracing::info!(user = %email, "rejected a WebSocket token its user's role no longer covers");
            return Err(unauthorized(
                "the token's user may no longer follow this execution",
            ));
        }
    };
    let follower = st.service.follow(&id, p.after_seq.unwrap_or(0)).await?;
    let upgrade = upgrade
        .map_err(|r| ApiError::invalid("expected a WebSocket upgrade").details(r.body_text()))?;
    let shutdown = st.shutdown.clone();
    Ok(upgrade
        .on_upgrade(move |socket| stream(socket, follower, id, shutdown, st, email))
        .into_response())
}

async fn stream(
    socket: WebSocket,
    mut follower: Follower,
    id: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    st: AppState,
    email: String,
) {
    let (mut tx, mut rx) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            item = follower.next() => {
                match item {
                    Ok(Some(FollowItem::Records(recs))) => {
                        for r in recs.iter() {
                            let text = serde_json::to_string(&r.event_ref(&id)).expect("event serialises");
                            if tx.feed(Message::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                        if tx.flush().await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(FollowItem::Done(e))) => {
                        let d = Disconnect {
                            kind: "disconnect".into(),
                            reason: "execution_completed".into(),
                            status: e.status,
                            exit_code: e.exit_code,
                            timed_out: e.timed_out,
                            lines: e.log_lines.unwrap_or(0),
                        };
                        let text = serde_json::to_string(&d).expect("frame serialises");
                        let _ = tx.send(Message::Text(text.into())).await;
                        let _ = tx.send(Message::Close(None)).await;
                        return;
                    }
                    Ok(None) => return,
                    Err(err) => {
                        // Close with "try again later" so clients reconnect and resume.
                        tracing::warn!(execution_id = %id, error = %err, "log stream interrupted");
                        let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                            code: 1013,
                            reason: "temporarily unavailable, reconnect".into(),
                        }))).await;
                        return;
                    }
                }
            }
            msg = rx.next() => {
                match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    _ => {} // clients need not send anything; ignore pings/text
                }
            }
            _ = stopping(&mut shutdown) => {
                // 1012: service restart; clients reconnect and resume from their last seq.
                let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1012,
                    reason: "server restarting, reconnect".into(),
                }))).await;
                return;
            }
            _ = ping.tick() => {
                // An open stream ends with its user's access: revocation or a demotion closes
                // it within one ping interval (1008: policy violation; clients must not retry
                // with the same token).
                if let Ok(Access::Revoked | Access::NotCovered) = may_follow(&st, &email, &id).await {
                    let _ = tx.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1008,
                        reason: "access to this execution was revoked".into(),
                    }))).await;
                    return;
                }
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether a token's user may (still) follow an execution.
enum Access {
    Allowed,
    Revoked,
    NotCovered,
}

async fn may_follow(st: &AppState, email: &str, id: &str) -> Result<Access, ApiError> {
    let user = match st.service.store.user_by_email(email).await {
        Ok(Some(u)) if !u.revoked => u,
        Ok(_) => return Ok(Access::Revoked),
        Err(e) => return Err(runvoy_domain::DomainError::Store(e).into()),
    };
    let grant = policy::lookup("GET", "/executions/{id}/logs")
        .map_or(Grant::Deny, |r| r.access.grant(user.role));
    let allowed = match grant {
        Grant::All => true,
        Grant::Own => st.service.get(id).await?.created_by == user.email,
        Grant::Deny => false,
    };
    Ok(if allowed {
        Access::Allowed
    } else {
        Access::NotCovered
    })
}

/// Resolves when the server starts shutting down.
async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        // The sender is gone only when the server is gone: never resolve spuriously.
        std::future::pending::<()>().await;
    }
}
