//! Errors returned by [`crate::Client`] and [`crate::LogFollower`].

use runvoy_proto::ErrorBody;

/// Why a call to the runvoy API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status.
    #[error("{message}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Api {
        /// HTTP status code.
        status: u16,
        /// Stable error code (`runvoy_proto::codes`), or `HTTP_<status>` when the body had none.
        code: String,
        /// Short summary.
        message: String,
        /// More detail, when the server gave some.
        details: Option<String>,
        /// With `LOCK_HELD`: the lock and the execution holding it.
        lock: Option<Box<runvoy_proto::LockHolder>>,
    },
    /// The server could not be reached or the connection broke.
    #[error("{message}")]
    Transport {
        /// What went wrong.
        message: String,
        /// True when no request reached the server (connection refused, DNS, connect timeout), so
        /// even a non-idempotent request can be retried without risk of running twice.
        connect: bool,
    },
    /// The server answered something that does not follow the API contract.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The base URL or another argument is unusable.
    #[error("{0}")]
    InvalidInput(String),
}

impl ClientError {
    /// A stable code for messages: the API code, or `UNREACHABLE` / `PROTOCOL_ERROR` /
    /// `INVALID_INPUT`.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code,
            ClientError::Transport { .. } => "UNREACHABLE",
            ClientError::Protocol(_) => "PROTOCOL_ERROR",
            ClientError::InvalidInput(_) => "INVALID_INPUT",
        }
    }

    /// True for transport errors.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// True when repeating an idempotent request may succeed: transport errors and the API's
    /// transient answers (429, 502, 503, 504).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// True when repeating a non-idempotent request (`POST /run`) cannot start a second
    /// execution: the first request never reached the server, or the server refused it before
    /// doing anything (429, 503).
    pub fn is_safe_to_resend(&self) -> bool {
        match self {
            ClientError::Transport { connect, .. } => *connect,
            ClientError::Api { status, .. } => matches!(status, 429 | 503),
            _ => false,
        }
    }

    /// Builds an [`ClientError::Api`] from a status and a response body, accepting bodies that
    /// are not the documented JSON (a proxy's HTML page, an empty body).
    pub fn from_response(status: u16, body: &[u8]) -> ClientError {
        if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
            return ClientError::Api {
                status,
                code: b.code,
                message: b.error,
                details: b.details.filter(|d| !d.is_empty()),
                lock: b.lock.map(Box::new),
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("unexpected status");
        let message = format!("HTTP {status} {reason}");
        let details = (!text.is_empty()).then(|| truncate(text, 200));
        ClientError::Api {
            status,
            code: format!("HTTP_{status}"),
            message,
            details,
            lock: None,
        }
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> ClientError {
        if e.is_decode() {
            return ClientError::Protocol(e.to_string());
        }
        if e.is_builder() {
            return ClientError::InvalidInput(e.to_string());
        }
        let target = e
            .url()
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|| "the server".into());
        let mut message = if e.is_connect() {
            format!("cannot reach {target}: {}", root_cause(&e))
        } else if e.is_timeout() {
            format!("no answer from {target} in time")
        } else {
            format!("request to {target} failed: {}", full_chain(&e))
        };
        if let Some(hint) = scheme_mismatch_hint(&target, &full_chain(&e)) {
            message.push_str(hint);
        }
        ClientError::Transport {
            message,
            connect: e.is_connect(),
        }
    }
}

/// A hint when the URL's scheme does not match the server: TLS spoken to a plain-HTTP server
/// (the answer is not a TLS record), or plain HTTP spoken to a TLS server.
fn scheme_mismatch_hint(target: &str, chain: &str) -> Option<&'static str> {
    let c = chain.to_ascii_lowercase();
    if target.starts_with("https://")
        && [
            "invalidcontenttype",
            "corrupt message",
            "wrong version number",
            "invalid tls",
        ]
        .iter()
        .any(|m| c.contains(m))
    {
        return Some(" (the server does not speak TLS: is it plain HTTP? try an http:// URL)");
    }
    if target.starts_with("http://")
        && [
            "invalid http version",
            "connection closed before message completed",
        ]
        .iter()
        .any(|m| c.contains(m))
    {
        return Some(" (is the server HTTPS? try an https:// URL)");
    }
    None
}

/// The innermost cause ("Connection refused (os error 111)"), the part a person can act on.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// reqwest's top-level message ("error sending request") hides the useful cause
/// ("Connection refused"), so include the source chain.
pub(crate) fn full_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_error_body() {
        let e = ClientError::from_response(
            404,
            br#"{"error":"execution not found","code":"NOT_FOUND","details":"abc"}"#,
        );
        assert_eq!(
            e,
            ClientError::Api {
                status: 404,
                code: "NOT_FOUND".into(),
                message: "execution not found".into(),
                details: Some("abc".into()),
                lock: None,
            }
        );
        assert_eq!(e.to_string(), "execution not found: abc");
        assert_eq!(e.code(), "NOT_FOUND");
        let e = ClientError::from_response(
            409,
            br#"{"error":"lock held","code":"LOCK_HELD","lock":{"name":"deploy","execution_id":"ab","held_by":"u@x","acquired_at":"2026-01-02T03:04:05Z"}}"#,
        );
        let ClientError::Api { lock: Some(l), .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((l.name.as_str(), l.execution_id.as_str()), ("deploy", "ab"));
        assert_eq!(e.code(), "LOCK_HELD");
    }

    #[test]
    fn falls_back_for_non_json_body() {
        let e = ClientError::from_response(502, b"<html>Bad gateway</html>");
        assert_eq!(e.code(), "HTTP_502");
        assert_eq!(
            e.to_string(),
            "HTTP 502 Bad Gateway: <html>Bad gateway</html>"
        );
        assert!(e.is_retryable());
        assert!(!e.is_safe_to_resend());
        let e = ClientError::from_response(500, b"");
        assert_eq!(e.to_string(), "HTTP 500 Internal Server Error");
    }
}
