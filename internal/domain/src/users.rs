//! Users and their keys: create with a one-time claim token, claim, list, revoke, change role,
//! rotate; and the audit trace of a request.
//!
//! Keys exist in plaintext only in the answer that hands them out: a user is created without a
//! key, and the key is generated when the claim token is redeemed.

use crate::auth::{self, CLAIM_TTL_MS};
use crate::error::DomainError;
use crate::model::{Execution, Role, User};
use crate::ports::{Claim, ClaimOutcome, ServerLogLine, StoreError, UserChange, UserUpdate};
use crate::service::{Caller, Service};

/// Who created users that no request created (`runvoyd` start-up, `runvoyd admin create`).
pub const SERVER_ACTOR: &str = "runvoyd";

/// At most this many server log lines are returned by a trace.
pub const TRACE_LOG_LIMIT: usize = 1000;

/// Parses a role name, with a message listing the valid ones.
pub fn parse_role(s: &str) -> Result<Role, DomainError> {
    Role::parse(s).ok_or_else(|| {
        DomainError::Invalid(format!(
            "unknown role {s:?}; use admin, operator, developer or viewer"
        ))
    })
}

fn parse_email(s: &str) -> Result<String, DomainError> {
    auth::normalize_email(s)
        .ok_or_else(|| DomainError::Invalid(format!("{s:?} is not a valid email address")))
}

/// A user with a key, created outside any API request (first admin, `runvoyd admin create`).
pub fn server_created_user(email: &str, role: Role, key_hash: String, now_ms: i64) -> User {
    User {
        email: email.to_owned(),
        role,
        key_hash,
        created_at_ms: now_ms,
        revoked: false,
        last_used_ms: None,
        claim_expires_at_ms: None,
        created_by: SERVER_ACTOR.to_owned(),
        created_by_request_id: String::new(),
        modified_by_request_id: String::new(),
    }
}

/// Validates an email for a user created outside the API; returns it normalised.
pub fn checked_email(s: &str) -> Result<String, DomainError> {
    parse_email(s)
}

/// A newly created user and the secret that lets them get their key.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    /// The stored user (unclaimed).
    pub user: User,
    /// The one-time claim token (only its hash is stored).
    pub claim_token: String,
}

/// What one request touched, for `GET /trace/{request_id}`.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Executions it created or last changed.
    pub executions: Vec<Execution>,
    /// Users it created or last changed.
    pub users: Vec<User>,
    /// Images it registered or last changed (a default moved to or from them).
    pub images: Vec<crate::images::Image>,
    /// The server's log lines carrying its id, oldest first.
    pub logs: Vec<ServerLogLine>,
}

fn last_admin() -> DomainError {
    DomainError::Conflict(
        "refused: at least one active admin must remain (make another user admin first)".into(),
    )
}

impl Service {
    /// Creates an unclaimed user and a claim token valid for [`CLAIM_TTL_MS`]. A user who has
    /// not claimed their key yet is replaced (re-invited, with a new token; the earlier one
    /// stops working); a claimed or revoked user is a conflict.
    pub async fn create_user(
        &self,
        caller: &Caller,
        email: &str,
        role: &str,
    ) -> Result<CreatedUser, DomainError> {
        let email = parse_email(email)?;
        let role = parse_role(role)?;
        let now = self.clock.now_ms();
        // An expired unclaimed user must not block creating it again.
        self.store.purge_unclaimed(now).await?;
        let user = User {
            email: email.clone(),
            role,
            key_hash: auth::unclaimed_key_hash(),
            created_at_ms: now,
            revoked: false,
            last_used_ms: None,
            claim_expires_at_ms: Some(now + CLAIM_TTL_MS),
            created_by: caller.user.email.clone(),
            created_by_request_id: caller.request_id.clone(),
            modified_by_request_id: caller.request_id.clone(),
        };
        let token = auth::new_claim_token();
        let claim = Claim {
            token_hash: auth::hash_key(&token),
            email: email.clone(),
            created_at_ms: now,
            expires_at_ms: now + CLAIM_TTL_MS,
        };
        match self.store.create_user_with_claim(&user, &claim).await {
            Ok(()) => Ok(CreatedUser {
                user,
                claim_token: token,
            }),
            Err(StoreError::AlreadyExists(_)) => Err(DomainError::Conflict(format!(
                "user {email} already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Redeems a claim token: generates the user's key and returns it (the only time it exists
    /// in plaintext). Unknown or expired → NotFound; already used → Conflict.
    pub async fn claim_key(
        &self,
        token: &str,
        request_id: &str,
    ) -> Result<(User, String), DomainError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(DomainError::Invalid("a claim token is required".into()));
        }
        let key = auth::new_api_key();
        match self
            .store
            .redeem_claim(
                &auth::hash_key(token),
                &auth::hash_key(&key),
                self.clock.now_ms(),
                request_id,
            )
            .await?
        {
            ClaimOutcome::Claimed(u) => Ok((u, key)),
            ClaimOutcome::AlreadyClaimed => Err(DomainError::Conflict(
                "this claim token was already used; ask an admin for a new user or key".into(),
            )),
            ClaimOutcome::NotFound => Err(DomainError::NotFound(
                "invalid or expired claim token".into(),
            )),
        }
    }

    /// Every user (expired unclaimed ones left out), sorted by email.
    pub async fn list_users(&self) -> Result<Vec<User>, DomainError> {
        let now = self.clock.now_ms();
        let mut users = self.store.list_users().await?;
        users.retain(|u| u.claim_expires_at_ms.is_none_or(|x| x >= now));
        Ok(users)
    }

    async fn change_user(
        &self,
        caller: &Caller,
        email: &str,
        change: UserChange,
    ) -> Result<User, DomainError> {
        let email = parse_email(email)?;
        let not_found = || DomainError::NotFound(format!("user {email} not found"));
        let current = self
            .store
            .user_by_email(&email)
            .await?
            .ok_or_else(not_found)?;
        if matches!(change, UserChange::Role(_)) && current.revoked {
            return Err(DomainError::Conflict(format!(
                "user {email} is revoked; create a new user instead"
            )));
        }
        match self
            .store
            .update_user(&email, &change, &caller.request_id)
            .await?
        {
            UserUpdate::Updated(u) => Ok(u),
            UserUpdate::NotFound => Err(not_found()),
            UserUpdate::LastAdmin => Err(last_admin()),
        }
    }

    /// Revokes a user's key; their next request fails. Never removes the last active admin.
    pub async fn revoke_user(&self, caller: &Caller, email: &str) -> Result<User, DomainError> {
        self.change_user(caller, email, UserChange::Revoke).await
    }

    /// Changes a user's role; it applies from their next request. Never demotes the last admin.
    pub async fn set_user_role(
        &self,
        caller: &Caller,
        email: &str,
        role: &str,
    ) -> Result<User, DomainError> {
        let role = parse_role(role)?;
        self.change_user(caller, email, UserChange::Role(role))
            .await
    }

    /// Replaces the caller's key with a new one, returned once; the old key stops working.
    pub async fn rotate_key(&self, caller: &Caller) -> Result<(User, String), DomainError> {
        let key = auth::new_api_key();
        match self
            .store
            .update_user(
                &caller.user.email,
                &UserChange::KeyHash(auth::hash_key(&key)),
                &caller.request_id,
            )
            .await?
        {
            UserUpdate::Updated(u) => Ok((u, key)),
            UserUpdate::NotFound | UserUpdate::LastAdmin => Err(DomainError::Conflict(
                "this key can no longer be rotated (the user was revoked)".into(),
            )),
        }
    }

    /// The records a request created or changed and the server log lines carrying its id.
    pub async fn trace(&self, request_id: &str) -> Result<Trace, DomainError> {
        if !auth::valid_request_id(request_id) {
            return Err(DomainError::Invalid(
                "a request id is 8 to 64 characters of letters, digits, - and _".into(),
            ));
        }
        Ok(Trace {
            executions: self.store.executions_by_request(request_id).await?,
            users: self.store.users_by_request(request_id).await?,
            // Images are few: filtering the list is one read, and no store needs an index.
            images: self
                .store
                .list_images()
                .await?
                .into_iter()
                .filter(|i| {
                    i.created_by_request_id == request_id || i.modified_by_request_id == request_id
                })
                .collect(),
            logs: self.store.server_logs(request_id, TRACE_LOG_LIMIT).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_with_a_clear_message() {
        assert_eq!(parse_role(" Operator ").unwrap(), Role::Operator);
        let Err(DomainError::Invalid(m)) = parse_role("root") else {
            panic!()
        };
        assert!(m.contains("admin, operator, developer or viewer"));
    }
}
