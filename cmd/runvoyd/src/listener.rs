//! The HTTP/1.1 listener: hyper's connection builder with the limits `axum::serve` cannot set.
//!
//! * A connection with no request in flight (before its first request, between keep-alive
//!   requests, or sending its headers slowly) is closed after `idle_timeout`: idle sockets
//!   opened by someone without a key cannot pile up.
//! * At most `max_connections` HTTP connections are open at once. When a new one arrives at the
//!   limit, the oldest idle connection is closed to make room; when every connection is busy, the
//!   new one gets a 503 and is closed at once, so it never waits in the kernel's queue.
//! * hyper answers some malformed requests itself (400, 414, 431) with an empty body; those
//!   answers are rewritten on the wire into the API's JSON error body (see [`JsonErrors`]).
//!
//! Upgraded connections (WebSockets) leave this accounting once the handshake is done; the API
//! limits them per user. Handlers see the peer address as `ConnectInfo<SocketAddr>`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use runvoy_api::links::LocalAddr;
use runvoy_proto::{ErrorBody, codes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// Limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a connection may stay without a request in flight (including the time it
    /// takes to send a request's headers) before it is closed.
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once.
    pub max_connections: usize,
}

/// One open connection, as the eviction and idle logic see it.
struct Conn {
    /// Requests whose response has not been fully sent yet.
    in_flight: AtomicUsize,
    /// When the connection last became idle, in ms since `Registry::epoch`.
    idle_since_ms: AtomicU64,
    /// Notified to close the connection now.
    close: Notify,
}

/// Open connections by accept order (lowest id = oldest).
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        self.conns.lock().expect("registry").insert(id, c.clone());
        (id, c)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().expect("registry").remove(&id);
    }

    /// Closes the oldest connection with no request in flight; false when every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut conns = self.conns.lock().expect("registry");
        let Some(id) = conns
            .iter()
            .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(c) = conns.remove(&id) {
            c.close.notify_one();
        }
        true
    }

    fn idle_for(&self, c: &Conn) -> Option<Duration> {
        if c.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = c.idle_since_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }
}

/// Counts a request as in flight until its response body is dropped (sent or abandoned).
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (at most `drain` long) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    drain: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(BTreeMap::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if registry.evict_oldest_idle() => {
                tokio::time::timeout(Duration::from_millis(500), permits.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (id, conn) = registry.add();
        let (app, registry, mut stop_rx) = (app.clone(), registry.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, remote, app, &registry, &conn, limits, &mut stop_rx).await;
            registry.remove(id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a permit: all of them back means every connection is done.
    if tokio::time::timeout(drain, permits.acquire_many(max as u32))
        .await
        .is_err()
    {
        tracing::warn!("some HTTP connections did not finish in time");
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    registry: &Arc<Registry>,
    conn: &Arc<Conn>,
    limits: Limits,
    stop_rx: &mut watch::Receiver<bool>,
) {
    // The address the client reached this server at: links fall back to it (never to the
    // client's own `Host` header; see `runvoy_api::links`).
    let local = stream.local_addr().ok().map(LocalAddr);
    let service = {
        let (registry, conn) = (registry.clone(), conn.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InFlight::new(conn.clone(), registry.clone());
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(remote));
            if let Some(l) = local {
                req.extensions_mut().insert(l);
            }
            let app = app.clone();
            async move {
                let resp = match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                };
                // The guard lives as long as the body, so a long streamed answer is not idle.
                Ok::<_, Infallible>(resp.map(|b| {
                    Body::new(b.map_frame(move |f| {
                        let _held = &guard;
                        f
                    }))
                }))
            }
        })
    };
    let io = TokioIo::new(JsonErrors::new(stream));
    let mut served = std::pin::pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.idle_timeout)
            .serve_connection(io, service)
            .with_upgrades()
    );
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut idle_check = tokio::time::interval(tick);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client = %remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = conn.close.notified() => {
                tracing::debug!(client = %remote, "idle connection closed to make room");
                return;
            }
            _ = idle_check.tick() => {
                if registry.idle_for(conn).is_some_and(|d| d >= limits.idle_timeout) {
                    tracing::debug!(client = %remote, "idle connection timed out");
                    return;
                }
            }
            r = stop_rx.wait_for(|s| *s), if !stopping => {
                stopping = true;
                if r.is_ok() {
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let resp = error_response(
        503,
        "Service Unavailable",
        codes::SERVICE_UNAVAILABLE,
        "too many open connections; try again",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&resp).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A complete HTTP/1.1 response carrying the API's JSON error body; the connection closes after.
fn error_response(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_owned(),
        code: code.to_owned(),
        details: None,
        lock: None,
    })
    .expect("error body serialises");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The JSON answer replacing hyper's own empty answer to a request it could not parse.
fn json_for_auto_error(head: &[u8]) -> Option<Vec<u8>> {
    // hyper's automatic answers are exactly a status line, `content-length: 0`, `date` and
    // maybe `connection: close`. Every answer of the application carries other headers
    // (content-type, x-request-id), so nothing else can look like this.
    let text = std::str::from_utf8(head).ok()?;
    if text.len() > 256 || !text.ends_with("\r\n\r\n") {
        return None;
    }
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let (status, reason, code, message) = match lines.next()? {
        "HTTP/1.1 400 Bad Request" => (
            400,
            "Bad Request",
            codes::INVALID_REQUEST,
            "malformed HTTP request",
        ),
        "HTTP/1.1 414 URI Too Long" => (
            414,
            "URI Too Long",
            codes::URI_TOO_LONG,
            "the request URI is too long",
        ),
        "HTTP/1.1 431 Request Header Fields Too Large" => (
            431,
            "Request Header Fields Too Large",
            codes::HEADERS_TOO_LARGE,
            "the request headers are too large",
        ),
        _ => return None,
    };
    let mut saw_length = false;
    for l in lines {
        let l = l.to_ascii_lowercase();
        if l == "content-length: 0" {
            saw_length = true;
        } else if !(l.starts_with("date: ") || l == "connection: close") {
            return None;
        }
    }
    saw_length.then(|| error_response(status, reason, code, message))
}

/// A TCP stream that rewrites hyper's automatic, empty-bodied error answers (400 malformed
/// request, 414 URI too long, 431 headers too large) into the API's JSON error answer, so that
/// every error a client can get has the same shape.
pub struct JsonErrors<T> {
    inner: T,
    /// Replacement bytes still to write.
    pending: Vec<u8>,
    written: usize,
}

impl<T> JsonErrors<T> {
    fn new(inner: T) -> Self {
        JsonErrors {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = json_for_auto_error(buf) {
            this.pending = replacement;
            // hyper believes its answer went out; the replacement is flushed on the next
            // write, flush or shutdown.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // Writes stay unvectored so that an answer's head arrives in one piece in `poll_write`.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::json_for_auto_error;

    #[test]
    fn only_hypers_own_empty_error_answers_are_rewritten() {
        let auto = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                     date: Tue, 01 Dec 2026 21:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_for_auto_error(auto).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "));
        assert!(out.contains("\"code\":\"HEADERS_TOO_LARGE\""));
        let app = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                    content-length: 0\r\nx-request-id: abc\r\n\r\n";
        assert!(json_for_auto_error(app).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(json_for_auto_error(ok).is_none());
    }
}
