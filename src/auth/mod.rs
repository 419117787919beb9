//! Who is calling: password hashing, access tokens, and the extractor that
//! turns a bearer token into the caller's identity for HTTP handlers.

pub mod password;
pub mod token;

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use parley_actors::model::UserRef;
use parley_actors::ChatError;

use crate::error::ApiError;
use crate::startup::AppState;

/// The authenticated caller, from `Authorization: Bearer <jwt>`.
pub struct AuthUser(pub UserRef);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, None).map(AuthUser))
    }
}

/// Checks the bearer token of a request (or, for browsers opening a
/// WebSocket, the `?token=` query parameter passed as `query_token`).
pub fn authenticate(req: &HttpRequest, query_token: Option<&str>) -> Result<UserRef, ApiError> {
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
    Ok(state.tokens.verify(token)?)
}
