//! The base URL of links the API hands out (`websocket_url`).
//!
//! A link carries a token, so it must never point where a client chose: `Host` and
//! `X-Forwarded-*` come from whoever sends the request. The base is, in order: `--public-url`;
//! the forwarded host and scheme when the peer is one of `--trusted-proxies`; else the address
//! the client connected to on this server (or the listener's own address).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::AppState;

/// The server-side address of the request's connection (an extension set by the listener).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// The base URL (`http://host:port`, no trailing slash) for links in answers to this request.
pub fn base_url(
    st: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    local: Option<SocketAddr>,
) -> String {
    if let Some(u) = &st.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let trusted = peer.is_some_and(|ip| {
        let ip = canonical(ip);
        st.trusted_proxies.iter().any(|n| n.contains(&ip))
    });
    if trusted {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        };
        let host = header("x-forwarded-host")
            .or_else(|| header("host"))
            .filter(|h| valid_host(h));
        let proto = match header("x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        if let Some(host) = host {
            return format!("{proto}://{host}");
        }
    }
    match local {
        Some(a) if !a.ip().is_unspecified() => format!("http://{a}"),
        _ => st.listen_url.trim_end_matches('/').to_owned(),
    }
}

/// Extracts the link base of the current request (see [`base_url`]).
#[derive(Debug, Clone)]
pub struct LinkBase(pub String);

impl axum::extract::FromRequestParts<AppState> for LinkBase {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let local = parts.extensions.get::<LocalAddr>().map(|l| l.0);
        Ok(LinkBase(base_url(st, &parts.headers, peer, local)))
    }
}

/// An IPv4 peer seen through an IPv6 socket (`::ffff:10.0.0.1`) matches IPv4 networks.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A host or `host:port` with nothing that could change the URL's meaning.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn hosts_cannot_smuggle_paths_or_credentials() {
        assert!(valid_host("runvoy.example.com:8443"));
        assert!(valid_host("[::1]:8080"));
        assert!(!valid_host("evil.example/x?"));
        assert!(!valid_host("user@evil.example"));
        assert!(!valid_host(""));
    }
}
