//! Resumable WebSocket log stream.
//!
//! The server promises records in `seq` order without gaps or duplicates on one connection, but a
//! connection can drop at any time (a proxy timeout, a server restart, a laptop changing
//! networks). [`LogFollower`] hides that: it remembers the last delivered `seq`, reconnects with
//! capped exponential backoff asking for `after_seq = last`, drops anything already delivered and
//! treats a gap as a broken connection.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use runvoy_proto::ws::Frame;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::{Client, ClientError};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Reconnection policy of a [`LogFollower`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowOptions {
    /// Wait before the second attempt after a drop (the first is immediate); doubles each time.
    pub initial_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Give up when no record could be received for this long since the stream broke.
    pub give_up_after: Duration,
    /// Treat a connection as broken when nothing at all (not even the server's keep-alive ping,
    /// sent every 20 s) arrives for this long, or when its handshake takes this long: a
    /// connection that died without a close (a laptop asleep, a NAT forgetting it) is then
    /// re-established instead of waited on forever.
    pub idle_timeout: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            give_up_after: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(65),
        }
    }
}

/// State while the stream is broken.
#[derive(Debug)]
struct Outage {
    since: Instant,
    next_attempt: Instant,
    delay: Duration,
    last_error: String,
}

/// A change of a [`LogFollower`]'s connection, for telling a person at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream broke after it had been up (the reason); the follower is reconnecting.
    Lost(String),
    /// The stream is up again after a [`StreamEvent::Lost`].
    Resumed,
}

/// Callback of [`LogFollower::on_connection_change`].
#[derive(Clone)]
struct Notify(std::sync::Arc<dyn Fn(StreamEvent) + Send + Sync>);

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notify")
    }
}

/// Follows one execution's log stream; see the module docs. Create with [`Client::follow_logs`].
#[derive(Debug)]
pub struct LogFollower {
    client: Client,
    id: String,
    last_seq: u64,
    opts: FollowOptions,
    first_url: Option<String>,
    ws: Option<Ws>,
    outage: Option<Outage>,
    done: bool,
    reconnects: u32,
    notify: Option<Notify>,
    /// A connection was up at least once.
    connected_once: bool,
    /// A [`StreamEvent::Lost`] was reported and no [`StreamEvent::Resumed`] yet.
    lost_reported: bool,
}

impl LogFollower {
    pub(crate) fn new(client: Client, id: &str, after_seq: u64, opts: FollowOptions) -> Self {
        LogFollower {
            client,
            id: id.to_string(),
            last_seq: after_seq,
            opts,
            first_url: None,
            ws: None,
            outage: None,
            done: false,
            reconnects: 0,
            notify: None,
            connected_once: false,
            lost_reported: false,
        }
    }

    /// Calls `f` when the stream breaks after having been up and when it is back, so a person
    /// can be told at once rather than only when the follower gives up.
    pub fn on_connection_change(mut self, f: impl Fn(StreamEvent) + Send + Sync + 'static) -> Self {
        self.notify = Some(Notify(std::sync::Arc::new(f)));
        self
    }

    /// Uses `url` (a `websocket_url` from `POST /run` or a logs page, token included) for the
    /// first connection, saving a request. Later connections always fetch a fresh token.
    pub fn with_websocket_url(mut self, url: impl Into<String>) -> Self {
        self.first_url = Some(url.into());
        self
    }

    /// Replaces the reconnection policy.
    pub fn with_options(mut self, opts: FollowOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The execution being followed.
    pub fn execution_id(&self) -> &str {
        &self.id
    }

    /// The `seq` of the last record returned (or the starting `after_seq`).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many times the stream had to be re-established.
    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    /// True once the disconnect frame has been returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next frame: each record exactly once, in order, then the [`Frame::Disconnect`], then
    /// `Ok(None)`.
    ///
    /// Errors are final: the execution is unknown or forbidden, or the stream stayed broken for
    /// longer than [`FollowOptions::give_up_after`].
    ///
    /// Cancel-safe: dropping the future loses no record, so it can be raced in `select!` or
    /// polled with `now_or_never` to see whether a frame is already waiting.
    pub async fn next(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(ws) = self.ws.as_mut() else {
                self.connect().await?;
                continue;
            };
            let idle = self.opts.idle_timeout;
            let Ok(next) = tokio::time::timeout(idle, ws.next()).await else {
                self.broken(format!(
                    "no data on the log stream for {}s",
                    idle.as_secs_f64()
                ));
                continue;
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.broken(format!(
                        "log stream error: {}",
                        crate::error::full_chain(&e)
                    ));
                    continue;
                }
                None => {
                    self.broken("log stream closed before the execution finished".into());
                    continue;
                }
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => {
                    self.broken("log stream closed before the execution finished".into());
                    continue;
                }
                Message::Binary(_) => {
                    self.broken("unexpected binary frame on the log stream".into());
                    continue;
                }
                _ => continue,
            };
            match Frame::parse(text.as_str()) {
                Ok(Frame::Log(ev)) => {
                    if ev.seq <= self.last_seq {
                        continue;
                    }
                    if ev.seq != self.last_seq + 1 {
                        self.broken(format!(
                            "log stream skipped records: expected seq {}, got {}",
                            self.last_seq + 1,
                            ev.seq
                        ));
                        continue;
                    }
                    self.last_seq = ev.seq;
                    self.outage = None;
                    return Ok(Some(Frame::Log(ev)));
                }
                Ok(Frame::Disconnect(d)) => {
                    if d.lines > self.last_seq {
                        self.broken(format!(
                            "log stream ended at seq {} but the execution has {} records",
                            self.last_seq, d.lines
                        ));
                        continue;
                    }
                    self.done = true;
                    if let Some(mut ws) = self.ws.take() {
                        // Best effort: the server closes right after this frame anyway.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
                    }
                    return Ok(Some(Frame::Disconnect(d)));
                }
                Err(e) => self.broken(format!("malformed log stream frame: {e}")),
            }
        }
    }

    /// Turns the follower into a `Stream` that ends after the disconnect frame or an error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Frame, ClientError>> {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut f = state?;
            match f.next().await {
                Ok(Some(frame)) => Some((Ok(frame), Some(f))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// Records a failure; the next call to [`Self::connect`] waits for the backoff.
    fn broken(&mut self, error: String) {
        self.ws = None;
        let now = Instant::now();
        tracing::debug!(execution_id = %self.id, last_seq = self.last_seq, %error, "log stream broken");
        if self.connected_once
            && !self.lost_reported
            && let Some(n) = &self.notify
        {
            self.lost_reported = true;
            (n.0)(StreamEvent::Lost(error.clone()));
        }
        match &mut self.outage {
            None => {
                self.outage = Some(Outage {
                    since: now,
                    next_attempt: now,
                    delay: self.opts.initial_delay,
                    last_error: error,
                });
            }
            Some(o) => {
                o.next_attempt = now + o.delay;
                o.delay = (o.delay * 2).min(self.opts.max_delay);
                o.last_error = error;
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        if let Some(o) = &self.outage {
            if o.since.elapsed() >= self.opts.give_up_after {
                return Err(ClientError::Transport {
                    message: format!(
                        "gave up following the logs of {} after {}s: {}",
                        self.id,
                        self.opts.give_up_after.as_secs(),
                        o.last_error
                    ),
                    connect: false,
                });
            }
            // Never sleep past the deadline, so giving up happens on time.
            let deadline = o.since + self.opts.give_up_after;
            tokio::time::sleep_until(o.next_attempt.min(deadline)).await;
            self.reconnects += 1;
        }
        let url = match self.first_url.take() {
            Some(u) => u,
            None => match self
                .client
                .logs_page(&self.id, self.last_seq, Some(1))
                .await
            {
                Ok(page) => page.websocket_url,
                Err(e) if e.is_retryable() => {
                    self.broken(e.to_string());
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        };
        let url = resume_url(&url, self.last_seq)?;
        install_tls_provider();
        let connecting = tokio_tungstenite::connect_async(url.as_str());
        let Ok(connected) = tokio::time::timeout(self.opts.idle_timeout, connecting).await else {
            self.broken("the log stream handshake did not complete".into());
            return Ok(());
        };
        match connected {
            Ok((ws, _)) => {
                tracing::debug!(execution_id = %self.id, after_seq = self.last_seq, "log stream connected");
                self.ws = Some(ws);
                self.connected_once = true;
                if std::mem::take(&mut self.lost_reported)
                    && let Some(n) = &self.notify
                {
                    (n.0)(StreamEvent::Resumed);
                }
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp.body().clone().unwrap_or_default();
                let err = ClientError::from_response(status, &body);
                // 401: the token expired between fetching and using it; the next attempt
                // fetches a fresh one.
                if status == 401 || err.is_retryable() {
                    self.broken(err.to_string());
                } else {
                    return Err(err);
                }
            }
            Err(e) => self.broken(format!(
                "cannot connect to the log stream: {}",
                crate::error::full_chain(&e)
            )),
        }
        Ok(())
    }
}

/// `websocket_url` with `after_seq` set (replacing any present) and a `ws[s]` scheme.
fn resume_url(url: &str, after_seq: u64) -> Result<Url, ClientError> {
    let mut u = Url::parse(url)
        .map_err(|e| ClientError::Protocol(format!("invalid websocket_url {url:?}: {e}")))?;
    let scheme = match u.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(ClientError::Protocol(format!(
                "invalid websocket_url scheme {other:?}"
            )));
        }
    };
    let _ = u.set_scheme(scheme);
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "after_seq")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("after_seq", &after_seq.to_string());
    Ok(u)
}

/// Makes ring the process's rustls provider unless one is installed. tokio-tungstenite builds its
/// TLS config from the process default, which rustls only picks by itself when exactly one
/// provider is compiled in; a build that also links aws-lc-rs (the Google client libraries bring
/// it) would otherwise panic on the first `wss://` connection.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider is already the default: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_url_sets_after_seq() {
        assert_eq!(
            resume_url("ws://h:1/api/v1/executions/e/logs/ws?token=T", 7)
                .unwrap()
                .as_str(),
            "ws://h:1/api/v1/executions/e/logs/ws?token=T&after_seq=7"
        );
        assert_eq!(
            resume_url("https://h/x?after_seq=3&token=T", 0)
                .unwrap()
                .as_str(),
            "wss://h/x?token=T&after_seq=0"
        );
        assert!(resume_url("ftp://h/x", 0).is_err());
    }
}
