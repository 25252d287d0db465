//! The log WebSocket: backlog after `after_seq`, live records, then one completion frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use runvoy_domain::follow::{FollowItem, Follower};
use runvoy_proto::codes;
use runvoy_proto::ws::Disconnect;
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::{ClientAddr, TokenClaims, auth_failure};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::policy::{self, Grant};

/// Query of the WebSocket route.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct WsParams {
    /// Token from a `websocket_url`.
    token: Option<String>,
    /// Resume after this seq (default 0).
    #[param(minimum = 0)]
    after_seq: Option<u64>,
}

/// Keep-alive ping interval, so idle proxies do not cut quiet executions. Access is checked
/// again at each ping too, for changes made on another instance; changes made through this
/// instance's API re-check at once (see [`AppState::user_changes`]).
const PING_EVERY: Duration = Duration::from_secs(20);

/// Per-socket WebSocket buffers. The clients send nothing but control frames, and the server
/// sends one record (at most 64 KiB of output, base64 or escaped) per frame: small buffers are
/// enough, and tungstenite's defaults (128 KiB read + 128 KiB write, unbounded write backlog)
/// multiplied by thousands of sockets are most of the server's memory.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;
/// Hard cap on what one socket may queue. Sends wait for a slow reader (backpressure) once
/// `WRITE_BUFFER` is queued, so only a single oversized frame could reach it; tungstenite's
/// default is unbounded.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
const MAX_INCOMING_MESSAGE: usize = 16 * 1024;

/// Open log streams per user, with a limit per user.
#[derive(Debug)]
pub struct StreamCounts {
    max_per_user: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl StreamCounts {
    /// A counter allowing `max_per_user` streams per user.
    pub fn new(max_per_user: usize) -> Self {
        StreamCounts {
            max_per_user: max_per_user.max(1),
            open: Mutex::default(),
        }
    }

    /// Takes a slot for one more stream of `email`, or `None` when the user is at the limit.
    fn try_open(self: &Arc<Self>, email: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().expect("stream counts");
        let n = open.entry(email.to_owned()).or_insert(0);
        if *n >= self.max_per_user {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            counts: self.clone(),
            email: email.to_owned(),
        })
    }
}

/// One open stream of a user; frees its slot when dropped.
struct StreamSlot {
    counts: Arc<StreamCounts>,
    email: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().expect("stream counts");
        if let Some(n) = open.get_mut(&self.email) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.email);
            }
        }
    }
}

/// Streams an execution's log records. The handshake is refused (401) for a missing, bad,
/// expired or foreign token, or when its user was revoked or has rotated their key since the
/// token was minted; 429 when the user already has as many streams open as allowed.
#[utoipa::path(get, path = "/api/v1/executions/{id}/logs/ws", params(("id" = String, Path), WsParams),
    responses((status = 101, description = "WebSocket of LogEvent frames then a Disconnect frame"),
               (status = 401, body = runvoy_proto::ErrorBody), (status = 404, body = runvoy_proto::ErrorBody),
               (status = 429, body = runvoy_proto::ErrorBody)))]
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
    let claims = match st.tokens.verify(&token, &id, st.service.clock.now_ms()) {
        Ok(c) => c,
        Err(m) => {
            tracing::info!(reason = m, "rejected a WebSocket token");
            return Ok(auth_failure(&st, ip, unauthorized(m)));
        }
    };
    // Read on every handshake (and again while streaming): a token dies with its user's key
    // (revocation or rotation), and follows the user's role (a token minted before a demotion
    // does not outlive the access it was minted under).
    match may_follow(&st, &claims, &id).await? {
        Access::Allowed => {
            tracing::Span::current().record("user", claims.email.as_str());
        }
        Access::Revoked => {
            tracing::info!(user = %claims.email, "rejected a WebSocket token of a revoked user or replaced key");
            return Ok(auth_failure(
                &st,
                ip,
                unauthorized("the token's user or key is no longer valid"),
            ));
        }
        Access::NotCovered => {
            tracing::info!(user = %claims.email, "rejected a WebSocket token its user's role no longer covers");
            return Err(unauthorized(
                "the token's user may no longer follow this execution",
            ));
        }
    };
    let Some(slot) = st.streams.try_open(&claims.email) else {
        tracing::info!(user = %claims.email, "refused a log stream over the per-user limit");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::TOO_MANY_STREAMS,
            "too many open log streams for this user",
        )
        .details(format!(
            "at most {} at once; close one first",
            st.streams.max_per_user
        )));
    };
    let follower = st.service.follow(&id, p.after_seq.unwrap_or(0)).await?;
    let upgrade = upgrade
        .map_err(|r| ApiError::invalid("expected a WebSocket upgrade").details(r.body_text()))?;
    let shutdown = st.shutdown.clone();
    // Subscribed before the handshake completes, so no change between here and the first
    // poll is missed.
    let changes = st.user_changes.subscribe();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_INCOMING_MESSAGE)
        .max_frame_size(MAX_INCOMING_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            stream(socket, follower, id, shutdown, changes, st, claims).await;
        })
        .into_response())
}

async fn stream(
    socket: WebSocket,
    mut follower: Follower,
    id: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut changes: broadcast::Receiver<String>,
    st: AppState,
    claims: TokenClaims,
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
                        if tx.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                        // A close without a code reads as 1005 "no status" in browsers, which
                        // clients take for a lost connection: say it is a normal end.
                        let _ = tx.send(Message::Close(Some(CloseFrame {
                            code: axum::extract::ws::close_code::NORMAL,
                            reason: "execution completed".into(),
                        }))).await;
                        await_close_reply(&mut rx).await;
                        return;
                    }
                    Ok(None) => return,
                    Err(err) => {
                        // Close with "try again later" so clients reconnect and resume.
                        tracing::warn!(execution_id = %id, error = %err, "log stream interrupted");
                        let _ = tx.send(Message::Close(Some(CloseFrame {
                            code: 1013,
                            reason: "temporarily unavailable, reconnect".into(),
                        }))).await;
                        return;
                    }
                }
            }
            msg = rx.next() => {
                match msg {
                    Some(Ok(Message::Close(_))) => {
                        // The close reply is queued by the protocol layer; flushing sends it,
                        // so the client sees a clean close rather than a dropped connection.
                        let _ = tx.close().await;
                        return;
                    }
                    None | Some(Err(_)) => return,
                    _ => {} // clients need not send anything; ignore pings/text
                }
            }
            _ = stopping(&mut shutdown) => {
                // 1012: service restart; clients reconnect and resume from their last seq.
                let _ = tx.send(Message::Close(Some(CloseFrame {
                    code: 1012,
                    reason: "server restarting, reconnect".into(),
                }))).await;
                return;
            }
            changed = changes.recv() => {
                let ours = match changed {
                    Ok(email) => email == claims.email,
                    // Missed some: check rather than risk missing ours.
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => false,
                };
                if ours && lost_access(&st, &claims, &id).await {
                    let _ = tx.send(access_lost_frame()).await;
                    return;
                }
            }
            _ = ping.tick() => {
                if lost_access(&st, &claims, &id).await {
                    let _ = tx.send(access_lost_frame()).await;
                    return;
                }
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// 1008 (policy violation): the stream ended with its user's access; clients must not retry
/// with the same token.
fn access_lost_frame() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1008,
        reason: "access to this execution was revoked".into(),
    }))
}

/// True when the token's user was revoked, rotated their key or lost access to the execution.
/// A store failure keeps the stream (the next check decides).
async fn lost_access(st: &AppState, claims: &TokenClaims, id: &str) -> bool {
    matches!(
        may_follow(st, claims, id).await,
        Ok(Access::Revoked | Access::NotCovered)
    )
}

/// How long to wait for the client's reply to our close frame before dropping the connection.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);

/// Reads (and discards) until the client answers our close frame or goes away, so the TCP
/// connection is closed only after the closing handshake.
async fn await_close_reply(rx: &mut futures_util::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Whether a token's user may (still) follow an execution.
enum Access {
    Allowed,
    Revoked,
    NotCovered,
}

async fn may_follow(st: &AppState, claims: &TokenClaims, id: &str) -> Result<Access, ApiError> {
    let user = match st.service.store.user_by_email(&claims.email).await {
        Ok(Some(u)) if !u.revoked && claims.key_matches(&u.key_hash) => u,
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
