//! The API error type: every failure becomes `{"error","code","details"}` with a stable code.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runvoy_domain::DomainError;
use runvoy_proto::{ErrorBody, codes};

/// An HTTP error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code from [`runvoy_proto::codes`].
    pub code: &'static str,
    /// Summary.
    pub message: String,
    /// Optional detail.
    pub details: Option<String>,
    /// With `LOCK_HELD`: the lock and its holder (boxed: errors stay small).
    pub lock: Option<Box<runvoy_proto::LockHolder>>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            lock: None,
        }
    }
    /// Adds detail.
    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = Some(d.into());
        self
    }
    /// 400 INVALID_REQUEST.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }
    /// 404 NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }
    /// 403 FORBIDDEN.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, error = %self.message, details = ?self.details, "request failed");
        }
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
            details: self.details,
            lock: self.lock.map(|l| *l),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => ApiError::invalid(m),
            DomainError::NotFound(m) => ApiError::not_found(m),
            DomainError::Forbidden(m) => ApiError::forbidden(m),
            DomainError::ImageNotSupported(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::IMAGE_NOT_SUPPORTED, m)
            }
            DomainError::ImageNotFound(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::IMAGE_NOT_FOUND, m)
            }
            DomainError::ImageAmbiguous(m) => {
                ApiError::new(StatusCode::CONFLICT, codes::IMAGE_AMBIGUOUS, m)
            }
            DomainError::ImageRejected(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::IMAGE_REJECTED, m)
            }
            DomainError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, m),
            DomainError::LockHeld { message, holder } => {
                let mut e = ApiError::new(StatusCode::CONFLICT, codes::LOCK_HELD, message);
                e.lock = Some(Box::new(runvoy_proto::LockHolder {
                    name: holder.name,
                    execution_id: holder.execution_id,
                    held_by: holder.holder,
                    acquired_at: runvoy_domain::clock::rfc3339(holder.acquired_at_ms),
                }));
                e
            }
            DomainError::LimitReached(m) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::EXECUTION_LIMIT_REACHED,
                m,
            ),
            DomainError::SecretNotFound(m) => {
                ApiError::new(StatusCode::NOT_FOUND, codes::SECRET_NOT_FOUND, m)
            }
            DomainError::SecretExists(m) => {
                ApiError::new(StatusCode::CONFLICT, codes::SECRET_EXISTS, m)
            }
            DomainError::SecretInvalid(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_SECRET, m)
            }
            // The cipher's message names the key and the reason, never a value.
            DomainError::Cipher(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::SERVICE_UNAVAILABLE,
                "the encryption key is unavailable; nothing was changed, try again",
            )
            .details(e.to_string()),
            DomainError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::DATABASE_ERROR,
                "the store is unavailable; nothing was changed, try again",
            )
            .details(e.to_string()),
            DomainError::Compute(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::SERVICE_UNAVAILABLE,
                "compute is unavailable; try again",
            )
            .details(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    "the body is too large",
                )
            }
            other => ApiError::invalid("invalid request body").details(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid("invalid query string").details(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::invalid("invalid path").details(r.body_text())
    }
}
