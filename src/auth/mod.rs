//! Who is calling: password hashing (and how much of the CPU it may take),
//! and the extractor that turns a bearer token (checked by [`crate::token`])
//! into the caller's identity for HTTP handlers.

pub mod password;
mod spare_cpu;

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use parley_actors::model::UserRef;
use parley_actors::ChatError;

use crate::error::ApiError;
use crate::state::AppState;
use crate::token::{self, VerifiedToken};

/// The authenticated caller, from `Authorization: Bearer <jwt>`.
pub struct AuthUser(pub UserRef);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(AuthUser(authenticate(&req, None).await?.user)) })
    }
}

/// The authenticated caller with their token's details (for logout).
pub struct AuthToken(pub VerifiedToken);

impl FromRequest for AuthToken {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(AuthToken(authenticate(&req, None).await?)) })
    }
}

/// Checks the bearer token of a request (or, for browsers opening a
/// WebSocket, the `?token=` query parameter passed as `query_token`):
/// signature, algorithm and expiry, then that it was not revoked by logout,
/// that no password change came after it, and that the account still exists.
pub async fn authenticate(
    req: &HttpRequest,
    query_token: Option<&str>,
) -> Result<VerifiedToken, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on the app");
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| {
                    value
                        .strip_prefix("Bearer ")
                        .or(value.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(|| {
                    ChatError::Unauthenticated(
                        "authorization: expected 'Bearer <token>'".to_owned(),
                    )
                })
        })
        .transpose()?;
    let token = header_token.or(query_token).ok_or_else(|| {
        ChatError::Unauthenticated("authorization: missing bearer token".to_owned())
    })?;
    let verified = state.tokens.verify(token)?;
    if state.chat.caches().is_revoked(&verified.jti) {
        return Err(token::rejected().into());
    }
    match state.chat.account(verified.user.id).await? {
        Some(account) if account.accepts(verified.generation) => Ok(verified),
        _ => Err(token::rejected().into()),
    }
}
