//! User handlers: create (with a one-time claim token), claim, list, revoke, set-role,
//! rotate-key. Keys and claim tokens appear only in the answers that hand them out, never in
//! logs.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runvoy_domain::DomainError;
use runvoy_domain::clock::rfc3339;
use runvoy_domain::service::Caller;
use runvoy_proto::{
    ClaimResponse, CreateUserRequest, CreateUserResponse, RevokeUserRequest, SetRoleRequest,
    UserChangeResponse, UserList,
};

use crate::AppState;
use crate::auth::{ClientAddr, RequestId, auth_failure};
use crate::error::ApiError;
use crate::extract::{Json, Path};

/// The API view of a user: never the key hash.
pub(crate) fn user_to_api(u: &runvoy_domain::User) -> runvoy_proto::User {
    let status = if u.revoked {
        "revoked"
    } else if u.claim_expires_at_ms.is_some() {
        "pending"
    } else {
        "active"
    };
    runvoy_proto::User {
        email: u.email.clone(),
        role: u.role.as_str().to_owned(),
        created_at: rfc3339(u.created_at_ms),
        revoked: u.revoked,
        status: status.to_owned(),
        last_used: u.last_used_ms.map(rfc3339),
        claim_expires_at: u.claim_expires_at_ms.map(rfc3339),
        created_by: u.created_by.clone(),
        created_by_request_id: u.created_by_request_id.clone(),
        modified_by_request_id: u.modified_by_request_id.clone(),
    }
}

/// Tells this instance's open log streams that a user changed, so theirs end at once when the
/// user lost access (no receiver is not an error: nobody is streaming).
fn notify_change(st: &AppState, email: &str) {
    let _ = st.user_changes.send(email.to_owned());
}

/// Lists users, sorted by email (also served at `/users/` for Go runvoy clients).
#[utoipa::path(get, path = "/api/v1/users",
    responses((status = 200, body = UserList), (status = 403, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn list(State(st): State<AppState>) -> Result<axum::Json<UserList>, ApiError> {
    let users = st.service.list_users().await?;
    Ok(axum::Json(UserList {
        users: users.iter().map(user_to_api).collect(),
    }))
}

/// Creates a user without a key and returns a one-time claim token valid for 15 minutes. A user
/// who has not claimed their key yet can be created again (re-invited): the earlier token
/// stops working.
#[utoipa::path(post, path = "/api/v1/users/create", request_body = CreateUserRequest,
    responses((status = 201, body = CreateUserResponse), (status = 400, body = runvoy_proto::ErrorBody),
              (status = 403, body = runvoy_proto::ErrorBody), (status = 409, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<CreateUserRequest>,
) -> Result<Response, ApiError> {
    let created = st
        .service
        .create_user(&caller, &req.email, &req.role)
        .await?;
    tracing::info!(email = %created.user.email, role = created.user.role.as_str(), "user created; claim token issued");
    let body = CreateUserResponse {
        user: user_to_api(&created.user),
        claim_token: created.claim_token,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Redeems a claim token: the user's new API key, exactly once. 409 when already used, 404
/// when unknown or expired. Only POST redeems: GET and HEAD (link previewers, prefetchers) get
/// 405 and leave the token usable.
#[utoipa::path(post, path = "/api/v1/claim/{token}", params(("token" = String, Path)),
    responses((status = 200, body = ClaimResponse), (status = 404, body = runvoy_proto::ErrorBody),
              (status = 409, body = runvoy_proto::ErrorBody), (status = 429, body = runvoy_proto::ErrorBody)))]
pub(crate) async fn claim(
    State(st): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(ClientAddr(ip)): Extension<ClientAddr>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    match st.service.claim_key(&token, &rid.0).await {
        Ok((user, key)) => {
            tracing::Span::current().record("user", user.email.as_str());
            tracing::info!(email = %user.email, client = %ip, "API key claimed");
            Ok(axum::Json(ClaimResponse {
                api_key: key,
                user_email: user.email,
                message: "API key claimed successfully".into(),
            })
            .into_response())
        }
        // Claim tokens are secrets: guessing them counts as a failed authentication.
        Err(e @ DomainError::NotFound(_)) => {
            tracing::info!(client = %ip, "rejected an unknown or expired claim token");
            Ok(auth_failure(&st, ip, e.into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Revokes a user's key; their next request gets 401. Never revokes the last active admin.
#[utoipa::path(post, path = "/api/v1/users/revoke", request_body = RevokeUserRequest,
    responses((status = 200, body = UserChangeResponse), (status = 404, body = runvoy_proto::ErrorBody),
              (status = 409, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn revoke(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RevokeUserRequest>,
) -> Result<axum::Json<UserChangeResponse>, ApiError> {
    let u = st.service.revoke_user(&caller, &req.email).await?;
    tracing::info!(email = %u.email, "user revoked");
    notify_change(&st, &u.email);
    Ok(axum::Json(UserChangeResponse {
        message: "user API key revoked successfully".into(),
        email: u.email.clone(),
        user: user_to_api(&u),
    }))
}

/// Changes a user's role, effective from their next request. Never demotes the last admin.
#[utoipa::path(post, path = "/api/v1/users/set-role", request_body = SetRoleRequest,
    responses((status = 200, body = UserChangeResponse), (status = 400, body = runvoy_proto::ErrorBody),
              (status = 404, body = runvoy_proto::ErrorBody), (status = 409, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn set_role(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SetRoleRequest>,
) -> Result<axum::Json<UserChangeResponse>, ApiError> {
    let u = st
        .service
        .set_user_role(&caller, &req.email, &req.role)
        .await?;
    tracing::info!(email = %u.email, role = u.role.as_str(), "user role changed");
    notify_change(&st, &u.email);
    Ok(axum::Json(UserChangeResponse {
        message: format!("role set to {}", u.role.as_str()),
        email: u.email.clone(),
        user: user_to_api(&u),
    }))
}

/// Replaces the caller's own API key; the new key is in this answer only and the old one stops
/// working at once.
#[utoipa::path(post, path = "/api/v1/users/rotate-key",
    responses((status = 200, body = ClaimResponse), (status = 409, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn rotate_key(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::Json<ClaimResponse>, ApiError> {
    let (u, key) = st.service.rotate_key(&caller).await?;
    tracing::info!(email = %u.email, "API key rotated");
    notify_change(&st, &u.email);
    Ok(axum::Json(ClaimResponse {
        api_key: key,
        user_email: u.email,
        message: "API key rotated; the previous key no longer works".into(),
    }))
}

/// The caller's own user (email and role), so a client can show only what the caller may do.
#[utoipa::path(get, path = "/api/v1/users/me",
    responses((status = 200, body = runvoy_proto::User), (status = 401, body = runvoy_proto::ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn me(Extension(caller): Extension<Caller>) -> axum::Json<runvoy_proto::User> {
    axum::Json(user_to_api(&caller.user))
}
