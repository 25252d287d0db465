//! Request ids, the access layer (API keys, roles, ownership, failed-auth rate limit) and
//! WebSocket log tokens.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use runvoy_domain::User;
use runvoy_domain::auth::{hash_key, new_request_id, valid_request_id};
use runvoy_domain::service::Caller;
use runvoy_proto::codes;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;
use crate::policy::{self, Access, Grant, Resource};

/// The request id of the current request (an extension set by [`request_id`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Longest request target (path and query) the API accepts; longer → 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most request headers the API accepts; more → 431.
pub const MAX_HEADERS: usize = 100;
/// Largest total size of the request headers (names and values); larger → 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Refuses request targets and header sets over the API's limits with the usual JSON error
/// (the HTTP server's own, larger limits answer the same way; see `runvoyd`'s listener).
fn over_limits(req: &Request) -> Option<ApiError> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return Some(
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                codes::URI_TOO_LONG,
                "the request URI is too long",
            )
            .details(format!("at most {MAX_URI_BYTES} bytes")),
        );
    }
    let headers = req.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                codes::HEADERS_TOO_LARGE,
                "the request headers are too large",
            )
            .details(format!(
                "at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes"
            )),
        );
    }
    None
}

/// Assigns the request its id, records it in the tracing span and returns it as
/// `X-Request-Id`; marks API answers `Cache-Control: no-store`.
///
/// The id is always the server's own: it keys `GET /trace/{request_id}` and the
/// `*_by_request_id` columns, so a caller must not be able to choose one another request
/// already has. A well-formed `X-Request-Id` from the caller is kept only as a correlation id
/// (in the span as `correlation_id`, and echoed as `X-Correlation-Id`).
///
/// The span carries the route *template* (recorded by [`enforce`] once routed), never the raw
/// URI: paths and queries can hold secrets (`/claim/{token}`, the WebSocket `?token=`).
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = new_request_id();
    let correlation = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map(str::to_owned);
    let is_api = req.uri().path().starts_with("/api");
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        correlation_id = tracing::field::Empty,
        method = %req.method(),
        route = tracing::field::Empty,
        path = tracing::field::Empty,
        user = tracing::field::Empty
    );
    if let Some(c) = &correlation {
        span.record("correlation_id", c.as_str());
    }
    // Web app paths hold nothing secret and help when debugging; API paths are never recorded.
    if !is_api {
        span.record("path", req.uri().path());
    }
    let mut resp = match over_limits(&req) {
        Some(e) => span.in_scope(|| e.into_response()),
        None => {
            use tracing::Instrument;
            next.run(req).instrument(span.clone()).await
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    if let Some(v) = correlation.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert("x-correlation-id", v);
    }
    if is_api {
        // Answers carry keys (claim, rotate-key), tokens and logs: no cache may keep them.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    span.in_scope(|| tracing::info!(status = resp.status().as_u16(), "request done"));
    resp
}

/// Coarse `last_used` bookkeeping: one store write per user per minute at most.
#[derive(Debug, Default)]
pub struct LastUsed(Mutex<HashMap<String, i64>>);

const LAST_USED_EVERY_MS: i64 = 60_000;

/// The client's address (peer address of the connection), set by [`enforce`] for handlers.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// What an owner-scoped grant lets the caller see, set by [`enforce`] for list handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// Only the caller's own resources.
    Own,
}

/// Per-address limit on failed authentications (wrong or revoked key, bad WebSocket token,
/// unknown claim token). Successful requests are never limited, so a teammate behind the same
/// NAT as a misconfigured script keeps working.
pub struct AuthLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl AuthLimiter {
    /// Allows `burst` failures at once, refilled at `per_minute` a minute.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
        AuthLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(nz(per_minute)).allow_burst(nz(burst))),
        }
    }

    /// Records a failure from `ip`; returns how long to wait when it is over the limit.
    pub fn failed(&self, ip: IpAddr) -> Option<Duration> {
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&ip)
            .err()
            .map(|nu| nu.wait_time_from(DefaultClock::default().now()))
    }
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new(20, 20)
    }
}

/// Turns an authentication failure into a 429 when `ip` has failed too often.
pub(crate) fn auth_failure(st: &AppState, ip: IpAddr, err: ApiError) -> Response {
    match st.auth_limiter.failed(ip) {
        None => err.into_response(),
        Some(wait) => {
            let secs = wait.as_secs() + 1;
            tracing::warn!(client = %ip, "too many failed authentications");
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                "too many failed authentications from this address",
            )
            .details(format!("retry in {secs} s"))
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
    }
}

fn presented_key(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(k) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim().to_owned());
    }
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|k| k.trim().to_owned())
}

/// True when `key` hashes to `stored`, compared in constant time. The store already looked the
/// user up by this hash; this guards against any lookup that is not an exact match.
fn key_matches(key: &str, stored: &str) -> bool {
    hash_key(key).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// The one access layer in front of every API handler: finds the matched route's [`Rule`] in
/// the policy table, authenticates the API key when the rule needs one (reading the user from
/// the store on every request, so revocations and role changes apply on the next request on
/// every instance), checks the caller's role and ownership, and hands the handler the
/// [`Caller`] and its [`Scope`]. A route without a rule is refused.
pub async fn enforce(
    State(st): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    parts.extensions.insert(ClientAddr(ip));
    let span = tracing::Span::current();
    let template = matched.as_ref().map(|m| m.as_str()).unwrap_or("");
    span.record("route", template);
    let Some(rule) = policy::lookup(parts.method.as_str(), template) else {
        tracing::error!(method = %parts.method, route = template, "route has no access rule; refused");
        return ApiError::forbidden("this route has no access rule").into_response();
    };
    let Access::Key(resource, _) = rule.access else {
        // Public, or authenticated by its own token in the handler.
        return next.run(Request::from_parts(parts, body)).await;
    };
    let rid = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(new_request_id);
    let user = match authenticate(&st, &parts, ip).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    span.record("user", user.email.as_str());
    let scope = match rule.access.grant(user.role) {
        Grant::Deny => {
            return ApiError::forbidden(format!(
                "the {} role may not {} {}",
                user.role.as_str(),
                parts.method,
                template
            ))
            .into_response();
        }
        Grant::All => Scope::All,
        Grant::Own => match resource {
            Resource::None | Resource::ExecutionList => Scope::Own,
            Resource::Execution => {
                let id = match RawPathParams::from_request_parts(&mut parts, &()).await {
                    Ok(p) => p
                        .iter()
                        .find(|(k, _)| *k == "id")
                        .map(|(_, v)| v.to_owned())
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                match st.service.get(&id).await {
                    Ok(e) if e.created_by == user.email => Scope::Own,
                    Ok(_) => {
                        return ApiError::forbidden(
                            "this execution belongs to another user; your role may only use your own",
                        )
                        .into_response();
                    }
                    Err(e) => return ApiError::from(e).into_response(),
                }
            }
            Resource::Secret => {
                let name = match RawPathParams::from_request_parts(&mut parts, &()).await {
                    Ok(p) => p
                        .iter()
                        .find(|(k, _)| *k == "name")
                        .map(|(_, v)| v.to_owned())
                        .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let Some(vault) = st.vault.as_deref() else {
                    return ApiError::not_found("this server keeps no secrets").into_response();
                };
                match vault.get(&name).await {
                    Ok(s) if s.created_by == user.email => Scope::Own,
                    Ok(_) => {
                        return ApiError::forbidden(
                            "this secret belongs to another user; your role may only change or reveal your own",
                        )
                        .into_response();
                    }
                    Err(e) => return ApiError::from(e).into_response(),
                }
            }
        },
    };
    parts.extensions.insert(scope);
    parts.extensions.insert(Caller {
        user,
        request_id: rid,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// Checks the presented API key; answers 401 (or 429 after repeated failures) when it fails.
async fn authenticate(st: &AppState, parts: &Parts, ip: IpAddr) -> Result<User, Response> {
    let req = Request::from_parts(parts.clone(), axum::body::Body::empty());
    let Some(key) = presented_key(&req).filter(|k| !k.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "API key is required",
        )
        .details("send it as X-API-Key or Authorization: Bearer")
        .into_response());
    };
    let user = match st.service.store.user_by_key_hash(&hash_key(&key)).await {
        Ok(Some(u)) if key_matches(&key, &u.key_hash) => u,
        Ok(_) => {
            tracing::info!("rejected an invalid API key");
            return Err(auth_failure(
                st,
                ip,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    codes::INVALID_API_KEY,
                    "invalid API key",
                ),
            ));
        }
        Err(e) => {
            return Err(ApiError::from(runvoy_domain::DomainError::Store(e)).into_response());
        }
    };
    if user.revoked {
        tracing::info!(user = %user.email, "rejected a revoked API key");
        return Err(auth_failure(
            st,
            ip,
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::API_KEY_REVOKED,
                "this API key was revoked",
            ),
        ));
    }
    let now = st.service.clock.now_ms();
    let touch = {
        let mut m = st.last_used.0.lock().expect("last_used");
        let prev = m.get(&user.email).copied().unwrap_or(i64::MIN);
        if now.saturating_sub(prev) >= LAST_USED_EVERY_MS {
            m.insert(user.email.clone(), now);
            true
        } else {
            false
        }
    };
    if touch {
        let (store, email) = (st.service.store.clone(), user.email.clone());
        tokio::spawn(async move {
            let _ = store.touch_user(&email, now).await;
        });
    }
    Ok(user)
}

/// Signs and checks short-lived WebSocket tokens bound to a user, the user's current key and
/// an execution.
pub struct TokenSigner {
    key: Vec<u8>,
    ttl_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Execution id.
    e: String,
    /// User email.
    u: String,
    /// Fingerprint of the user's key hash when the token was minted (see [`key_fingerprint`]).
    k: String,
    /// Expiry, epoch ms.
    x: i64,
}

/// What a valid WebSocket token says.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// The user it was minted for.
    pub email: String,
    key_fingerprint: String,
}

impl TokenClaims {
    /// True when the user still has the key the token was minted under (not rotated since).
    pub fn key_matches(&self, key_hash: &str) -> bool {
        key_fingerprint(key_hash)
            .as_bytes()
            .ct_eq(self.key_fingerprint.as_bytes())
            .into()
    }
}

/// A short digest of a user's key hash: tokens carry it so that rotating the key kills them,
/// without the token (readable by whoever holds it) revealing the stored hash.
fn key_fingerprint(key_hash: &str) -> String {
    use sha2::Digest;
    let d = Sha256::digest(format!("runvoy-ws-token:{key_hash}").as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..12])
}

impl TokenSigner {
    /// A signer with a secret key and a lifetime.
    pub fn new(key: Vec<u8>, ttl_ms: i64) -> Self {
        TokenSigner { key, ttl_ms }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        m.update(payload.as_bytes());
        m
    }

    /// Mints a token for `user` (whose stored key hash is `key_hash`) to follow `execution_id`.
    pub fn mint(&self, execution_id: &str, user: &str, key_hash: &str, now_ms: i64) -> String {
        let claims = Claims {
            e: execution_id.to_owned(),
            u: user.to_owned(),
            k: key_fingerprint(key_hash),
            x: now_ms + self.ttl_ms,
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks a token's signature, expiry and execution; returns what it says about its user
    /// (whose current state the caller must still check).
    pub fn verify(
        &self,
        token: &str,
        execution_id: &str,
        now_ms: i64,
    ) -> Result<TokenClaims, &'static str> {
        let (payload, sig) = token.split_once('.').ok_or("malformed token")?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "malformed token")?;
        self.mac(payload)
            .verify_slice(&sig)
            .map_err(|_| "bad token signature")?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed token")?;
        if claims.x < now_ms {
            return Err("token expired");
        }
        if claims.e != execution_id {
            return Err("token is for another execution");
        }
        Ok(TokenClaims {
            email: claims.u,
            key_fingerprint: claims.k,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TokenSigner;

    #[test]
    fn tokens_are_bound_and_expire() {
        let s = TokenSigner::new(b"k".to_vec(), 1000);
        let t = s.mint("e1", "a@b", "hash1", 0);
        let c = s.verify(&t, "e1", 500).unwrap();
        assert_eq!(c.email, "a@b");
        assert!(c.key_matches("hash1"));
        assert!(!c.key_matches("hash2"), "a rotated key kills the token");
        assert!(s.verify(&t, "e2", 500).is_err());
        assert!(s.verify(&t, "e1", 1001).is_err());
        let other = TokenSigner::new(b"j".to_vec(), 1000);
        assert!(other.verify(&t, "e1", 0).is_err());
        let mut forged = t.clone();
        forged.insert(3, 'x');
        assert!(s.verify(&forged, "e1", 0).is_err());
    }
}
