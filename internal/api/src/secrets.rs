//! Secret handlers: create, list, show, update, delete, reveal; and the internal route an
//! execution's sidecar fetches its secrets from with a single-use token.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use runvoy_domain::Secret;
use runvoy_domain::clock::rfc3339;
use runvoy_domain::secrets::{SecretRef, SecretsFetch, SecretsGrant};
use runvoy_domain::service::Caller;
use runvoy_proto::{
    CreateSecretRequest, DeleteSecretResponse, FetchedSecret, RevealedSecret, SecretInfo,
    SecretList, SecretsFetchRequest, SecretsFetchResponse, UpdateSecretRequest, codes,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, Path};

pub(crate) fn info(s: &Secret) -> SecretInfo {
    SecretInfo {
        name: s.name.clone(),
        key_name: s.key_name.clone(),
        description: s.description.clone(),
        created_by: s.created_by.clone(),
        created_at: rfc3339(s.created_at_ms),
        updated_by: s.updated_by.clone(),
        updated_at: rfc3339(s.updated_at_ms),
        created_by_request_id: s.created_by_request_id.clone(),
        modified_by_request_id: s.modified_by_request_id.clone(),
    }
}

fn vault(st: &AppState) -> Result<&runvoy_domain::secrets::SecretVault, ApiError> {
    st.vault.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::SERVICE_UNAVAILABLE,
            "this server keeps no secrets (no cipher configured)",
        )
    })
}

/// Creates a secret; its value is stored only sealed by the cipher. A name in use is refused
/// with 409 `SECRET_EXISTS` and the existing secret keeps its value.
#[utoipa::path(post, path = "/api/v1/secrets", request_body = CreateSecretRequest,
    responses((status = 201, body = SecretInfo, description = "created (the value is never returned)"),
              (status = 400, body = runvoy_proto::ErrorBody, description = "INVALID_SECRET: a bad name, key_name, description or value"),
              (status = 403, body = runvoy_proto::ErrorBody),
              (status = 409, body = runvoy_proto::ErrorBody, description = "SECRET_EXISTS: the name is taken; nothing was changed"),
              (status = 503, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<CreateSecretRequest>,
) -> Result<Response, ApiError> {
    let s = vault(&st)?
        .create(
            &caller,
            &req.name,
            &req.key_name,
            &req.description,
            &req.value,
        )
        .await?;
    tracing::info!(secret = %s.name, key_name = %s.key_name, "secret created");
    Ok((StatusCode::CREATED, axum::Json(info(&s))).into_response())
}

/// Every secret's metadata, sorted by name. Values are never listed.
#[utoipa::path(get, path = "/api/v1/secrets",
    responses((status = 200, body = SecretList), (status = 403, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(State(st): State<AppState>) -> Result<axum::Json<SecretList>, ApiError> {
    let all = vault(&st)?.list().await?;
    Ok(axum::Json(SecretList {
        total: all.len(),
        secrets: all.iter().map(info).collect(),
    }))
}

/// One secret's metadata (never its value: see `POST /api/v1/secrets/{name}/reveal`).
#[utoipa::path(get, path = "/api/v1/secrets/{name}", params(("name" = String, Path)),
    responses((status = 200, body = SecretInfo),
              (status = 404, body = runvoy_proto::ErrorBody, description = "SECRET_NOT_FOUND")),
    security(("api_key" = [])))]
pub(crate) async fn get(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<SecretInfo>, ApiError> {
    Ok(axum::Json(info(&vault(&st)?.get(&name).await?)))
}

/// Changes a secret's key name, description and/or value (absent fields are kept). Developers
/// may change only their own secrets.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", params(("name" = String, Path)),
    request_body = UpdateSecretRequest,
    responses((status = 200, body = SecretInfo),
              (status = 400, body = runvoy_proto::ErrorBody, description = "INVALID_SECRET"),
              (status = 403, body = runvoy_proto::ErrorBody),
              (status = 404, body = runvoy_proto::ErrorBody, description = "SECRET_NOT_FOUND")),
    security(("api_key" = [])))]
pub(crate) async fn update(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<UpdateSecretRequest>,
) -> Result<axum::Json<SecretInfo>, ApiError> {
    let s = vault(&st)?
        .update(
            &caller,
            &name,
            req.key_name.as_deref(),
            req.description.as_deref(),
            req.value.as_deref(),
        )
        .await?;
    tracing::info!(secret = %s.name, key_name = %s.key_name, value_changed = req.value.is_some(), "secret updated");
    Ok(axum::Json(info(&s)))
}

/// Deletes a secret. Developers may delete only their own.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", params(("name" = String, Path)),
    responses((status = 200, body = DeleteSecretResponse),
              (status = 403, body = runvoy_proto::ErrorBody),
              (status = 404, body = runvoy_proto::ErrorBody, description = "SECRET_NOT_FOUND")),
    security(("api_key" = [])))]
pub(crate) async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<DeleteSecretResponse>, ApiError> {
    let s = vault(&st)?.delete(&name).await?;
    tracing::info!(secret = %s.name, "secret deleted");
    Ok(axum::Json(DeleteSecretResponse {
        name: s.name,
        message: "secret deleted".into(),
    }))
}

/// The value in clear: only for the secret's owner (its creator) or an admin, and audited in
/// the server log (who, which secret; never the value). POST so that nothing caches or
/// prefetches it.
#[utoipa::path(post, path = "/api/v1/secrets/{name}/reveal", params(("name" = String, Path)),
    responses((status = 200, body = RevealedSecret),
              (status = 403, body = runvoy_proto::ErrorBody, description = "not the owner nor an admin"),
              (status = 404, body = runvoy_proto::ErrorBody, description = "SECRET_NOT_FOUND")),
    security(("api_key" = [])))]
pub(crate) async fn reveal(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<axum::Json<RevealedSecret>, ApiError> {
    let v = vault(&st)?;
    let s = v.get(&name).await?;
    let value = v.open(&s).await?;
    tracing::warn!(secret = %s.name, revealed_to = %caller.user.email, owner = %s.created_by, "secret value revealed");
    Ok(axum::Json(RevealedSecret {
        secret: info(&s),
        value,
    }))
}

/// What a fetch token says.
#[derive(Serialize, Deserialize)]
struct FetchClaims {
    /// Execution id.
    e: String,
    /// Expiry, epoch ms.
    x: i64,
    /// The secrets this execution may fetch.
    s: Vec<SecretRef>,
}

/// Mints and checks the single-use tokens an execution's sidecar fetches its secrets with:
/// HMAC-SHA256 under a label of their own (a log-stream token is never one of these), bound
/// to the execution and its secret references, short-lived. Each execution's fetch is
/// answered once per server process.
pub struct SecretsFetchSigner {
    key: Vec<u8>,
    ttl_ms: i64,
    base_url: String,
    clock: std::sync::Arc<dyn runvoy_domain::ports::Clock>,
    used: Mutex<HashSet<String>>,
}

impl SecretsFetchSigner {
    /// A signer; the sidecar POSTs to `{base_url}/api/v1/executions/{id}/secrets`.
    pub fn new(
        key: Vec<u8>,
        ttl_ms: i64,
        base_url: String,
        clock: std::sync::Arc<dyn runvoy_domain::ports::Clock>,
    ) -> Self {
        SecretsFetchSigner {
            key,
            ttl_ms,
            base_url: base_url.trim_end_matches('/').to_owned(),
            clock,
            used: Mutex::default(),
        }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        m.update(b"runvoy-secrets-fetch:");
        m.update(payload.as_bytes());
        m
    }

    fn verify(&self, token: &str, execution_id: &str) -> Result<Vec<SecretRef>, &'static str> {
        let (payload, sig) = token.split_once('.').ok_or("malformed token")?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "malformed token")?;
        self.mac(payload)
            .verify_slice(&sig)
            .map_err(|_| "bad token signature")?;
        let c: FetchClaims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed token")?;
        if c.x < self.clock.now_ms() {
            return Err("token expired");
        }
        if c.e != execution_id {
            return Err("token is for another execution");
        }
        Ok(c.s)
    }
}

impl SecretsGrant for SecretsFetchSigner {
    fn grant(&self, execution_id: &str, refs: &[SecretRef]) -> SecretsFetch {
        let claims = FetchClaims {
            e: execution_id.to_owned(),
            x: self.clock.now_ms() + self.ttl_ms,
            s: refs.to_vec(),
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        SecretsFetch {
            url: format!("{}/api/v1/executions/{execution_id}/secrets", self.base_url),
            token: format!("{payload}.{sig}"),
        }
    }
}

fn bad_token(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        codes::INVALID_TOKEN,
        format!("secrets fetch refused: {why}"),
    )
}

/// The values of an execution's secrets, for its sidecar: authenticated by the execution's
/// single-use fetch token (not an API key), answered once, only while the execution is
/// unfinished. The answer is the only place values leave the server besides a reveal.
#[utoipa::path(post, path = "/api/v1/executions/{id}/secrets", params(("id" = String, Path)),
    request_body = SecretsFetchRequest,
    responses((status = 200, body = SecretsFetchResponse),
              (status = 401, body = runvoy_proto::ErrorBody, description = "INVALID_TOKEN: bad, expired or used token"),
              (status = 404, body = runvoy_proto::ErrorBody, description = "SECRET_NOT_FOUND: deleted since the run started"),
              (status = 409, body = runvoy_proto::ErrorBody, description = "the execution has finished")))]
pub(crate) async fn fetch(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<SecretsFetchRequest>,
) -> Result<axum::Json<SecretsFetchResponse>, ApiError> {
    let signer = st
        .secrets_fetch
        .as_deref()
        .ok_or_else(|| bad_token("this server hands out no secrets"))?;
    let refs = signer.verify(&req.token, &id).map_err(bad_token)?;
    let e = st
        .service
        .get(&id)
        .await
        .map_err(|_| bad_token("no such execution"))?;
    if e.status.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::CONFLICT,
            "the execution has finished",
        ));
    }
    if signer.used.lock().expect("used").contains(&id) {
        tracing::warn!(execution_id = %id, "a used secrets fetch token was presented again");
        return Err(bad_token("token already used"));
    }
    let v = vault(&st)?;
    let mut out = Vec::with_capacity(refs.len());
    for r in &refs {
        let s = v.get(&r.name).await?;
        out.push(FetchedSecret {
            name: r.name.clone(),
            key_name: r.key_name.clone(),
            value: v.open(&s).await?,
        });
    }
    // Marked only once the values are in hand, so a passing cipher failure can be retried;
    // of concurrent fetches only the one that marks it first gets an answer.
    if !signer.used.lock().expect("used").insert(id.clone()) {
        return Err(bad_token("token already used"));
    }
    tracing::info!(execution_id = %id, secrets = refs.len(), "secrets handed to the execution");
    Ok(axum::Json(SecretsFetchResponse { secrets: out }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runvoy_domain::clock::ManualClock;
    use std::sync::Arc;

    #[test]
    fn fetch_tokens_are_bound_to_their_execution_and_expire() {
        let clock = Arc::new(ManualClock::new(1_000));
        let s = SecretsFetchSigner::new(b"k".to_vec(), 500, "http://h:1/".into(), clock.clone());
        let refs = vec![SecretRef {
            name: "db".into(),
            key_name: "DB".into(),
        }];
        let f = s.grant("e1", &refs);
        assert_eq!(f.url, "http://h:1/api/v1/executions/e1/secrets");
        assert_eq!(s.verify(&f.token, "e1").unwrap(), refs);
        assert!(
            s.verify(&f.token, "e2").is_err(),
            "another execution's token"
        );
        let other = SecretsFetchSigner::new(b"j".to_vec(), 500, "http://h".into(), clock.clone());
        assert!(other.verify(&f.token, "e1").is_err(), "another key");
        // A token with other references is not signed by this key.
        let (_, sig) = f.token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({"e": "e1", "x": 99_999, "s": [
                {"name": "all", "key_name": "ALL"}
            ]}))
            .unwrap(),
        );
        assert!(s.verify(&format!("{forged}.{sig}"), "e1").is_err());
        clock.advance_ms(501);
        assert!(s.verify(&f.token, "e1").is_err(), "expired");
    }
}
