//! How errors leave the HTTP layer: every failure becomes the contract's body
//! `{"detail", "code", "timestamp"}` with the status chosen by
//! [`ChatError::status`]. Server faults are logged with their cause and shown
//! to the client only as a generic detail. A 405 carries `Allow`; a 429,
//! and a 503 from shedding load, carry `Retry-After`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use parley_actors::error::retry_secs;
use parley_actors::model::Timestamp;
use parley_actors::ChatError;
use serde::Serialize;

/// The one error type HTTP handlers return.
#[derive(Debug)]
pub struct ApiError(pub ChatError);

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
    code: u16,
    timestamp: Timestamp,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        ApiError(error)
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(error: actix::MailboxError) -> Self {
        ApiError(error.into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.0.is_server_fault() {
            tracing::error!(error = ?self.0, "request failed");
        }
        let detail = self.0.to_string();
        let mut response = HttpResponse::build(self.status_code());
        if let ChatError::MethodNotAllowed(allow) = &self.0 {
            response.insert_header((header::ALLOW, *allow));
        }
        // A 429, and a 503 from shedding load, say when to come back.
        if let Some(retry_after) = self.0.retry_after() {
            response.insert_header((header::RETRY_AFTER, retry_secs(retry_after).to_string()));
        }
        response.json(ErrorBody {
            detail: &detail,
            code: self.0.status(),
            timestamp: Timestamp::now(),
        })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
