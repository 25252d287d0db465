//! Request ids, API-key authentication and WebSocket log tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use runvoy_domain::auth::{hash_key, new_request_id, valid_request_id};
use runvoy_domain::service::Caller;
use runvoy_proto::codes;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AppState;
use crate::error::ApiError;

/// The request id of the current request (an extension set by [`request_id`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Assigns a request id (the caller's `X-Request-Id` when well-formed), records it in the
/// tracing span and returns it as `X-Request-Id`.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), route = %req.uri().path(), user = tracing::field::Empty);
    let mut resp = {
        use tracing::Instrument;
        next.run(req).instrument(span.clone()).await
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    span.in_scope(|| tracing::info!(status = resp.status().as_u16(), "request done"));
    resp
}

/// Coarse `last_used` bookkeeping: one store write per user per minute at most.
#[derive(Debug, Default)]
pub struct LastUsed(Mutex<HashMap<String, i64>>);

const LAST_USED_EVERY_MS: i64 = 60_000;

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

/// Authenticates `X-API-Key` / `Authorization: Bearer` and stores the [`Caller`] in the request.
pub async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(new_request_id);
    let Some(key) = presented_key(&req).filter(|k| !k.is_empty()) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "API key is required",
        )
        .details("send it as X-API-Key or Authorization: Bearer")
        .into_response();
    };
    let user = match st.service.store.user_by_key_hash(&hash_key(&key)).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_API_KEY,
                "invalid API key",
            )
            .into_response();
        }
        Err(e) => return ApiError::from(runvoy_domain::DomainError::Store(e)).into_response(),
    };
    if user.revoked {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::API_KEY_REVOKED,
            "this API key was revoked",
        )
        .into_response();
    }
    tracing::Span::current().record("user", user.email.as_str());
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
    req.extensions_mut().insert(Caller {
        user,
        request_id: rid,
    });
    next.run(req).await
}

/// Signs and checks short-lived WebSocket tokens bound to a user and an execution.
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
    /// Expiry, epoch ms.
    x: i64,
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

    /// Mints a token for `user` to follow `execution_id`.
    pub fn mint(&self, execution_id: &str, user: &str, now_ms: i64) -> String {
        let claims = Claims {
            e: execution_id.to_owned(),
            u: user.to_owned(),
            x: now_ms + self.ttl_ms,
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks a token for `execution_id`; returns the user's email.
    pub fn verify(
        &self,
        token: &str,
        execution_id: &str,
        now_ms: i64,
    ) -> Result<String, &'static str> {
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
        Ok(claims.u)
    }
}

#[cfg(test)]
mod tests {
    use super::TokenSigner;

    #[test]
    fn tokens_are_bound_and_expire() {
        let s = TokenSigner::new(b"k".to_vec(), 1000);
        let t = s.mint("e1", "a@b", 0);
        assert_eq!(s.verify(&t, "e1", 500).unwrap(), "a@b");
        assert!(s.verify(&t, "e2", 500).is_err());
        assert!(s.verify(&t, "e1", 1001).is_err());
        let other = TokenSigner::new(b"j".to_vec(), 1000);
        assert!(other.verify(&t, "e1", 0).is_err());
        let mut forged = t.clone();
        forged.insert(3, 'x');
        assert!(s.verify(&forged, "e1", 0).is_err());
    }
}
