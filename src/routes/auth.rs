//! Accounts and tokens: `POST /auth/register`, `POST /auth/login`,
//! `GET /auth/me`, `POST /auth/logout`, `POST /auth/password` and
//! `DELETE /auth/account`.

use actix_web::{web, HttpRequest, HttpResponse};
use parley_actors::persistence::{ChangePassword, CreateUser, DeleteAccount, RevokeToken};
use parley_actors::{ask, model::UserRef, validate, ChatError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::password::Hashing;
use crate::auth::{AuthToken, AuthUser};
use crate::error::ApiResult;
use crate::extract::Json;
use crate::schema::{self, User};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct Registration {
    /// 3–32 of letters, digits, `_`, `.` and `-`; unique case-insensitively.
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9_.-]+$",
        example = "alice"
    )]
    username: String,
    /// `local@domain.tld` of at most 254 bytes, without spaces or control
    /// characters; unique case-insensitively.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1F\x7F-\x9F]+@[^@\s.\x00-\x1F\x7F-\x9F]+(\.[^@\s.\x00-\x1F\x7F-\x9F]+)+$",
        example = "alice@example.com"
    )]
    email: String,
    #[schema(min_length = 8, max_length = 1024, example = "correct horse")]
    password: String,
}

/// Creates an account. Open to anyone; limited per client address.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = Registration,
    responses(
        (status = 200, description = "The new account", body = User),
        (status = 400, response = schema::BadRequest),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::BusyOrUnavailable),
    )
)]
#[tracing::instrument(skip_all, fields(username = %body.username))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    hashing: web::Data<Hashing>,
    Json(body): Json<Registration>,
) -> ApiResult<HttpResponse> {
    state.check_auth_rate(&req)?;
    validate::username(&body.username)?;
    validate::email(&body.email)?;
    validate::password(&body.password)?;
    let password_hash = hashing.hash(body.password).await?;
    let user = ask(
        state.chat.persistence(),
        CreateUser {
            username: body.username,
            email: body.email,
            password_hash,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Deserialize, ToSchema)]
pub struct Login {
    /// Looked up case-insensitively.
    #[schema(example = "alice")]
    username: String,
    #[schema(example = "correct horse")]
    password: String,
}

/// A bearer token (a JWT) for `Authorization: Bearer <access_token>`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessToken {
    access_token: String,
    #[schema(schema_with = schema::bearer_token_type)]
    token_type: &'static str,
}

/// Exchanges a username and password for an access token. An unknown user
/// and a wrong password get the same 401.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = Login,
    responses(
        (status = 200, description = "A fresh access token", body = AccessToken),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::BusyOrUnavailable),
    )
)]
#[tracing::instrument(skip_all, fields(username = %body.username))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    hashing: web::Data<Hashing>,
    Json(body): Json<Login>,
) -> ApiResult<HttpResponse> {
    state.check_auth_rate(&req)?;
    let credentials = if validate::username(&body.username).is_ok() {
        state.chat.store().credentials(&body.username).await?
    } else {
        None
    };
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    // An unknown user is checked against a dummy hash: same cost, same answer.
    let matched = hashing.verify(body.password, stored_hash).await?;
    let credentials = match credentials {
        Some(credentials) if matched => credentials,
        _ => return Err(wrong_credentials().into()),
    };
    let user = UserRef {
        id: credentials.id,
        username: credentials.username.into(),
    };
    access_token(&state, &user, credentials.token_generation)
}

fn wrong_credentials() -> ChatError {
    ChatError::Unauthenticated("invalid username or password".to_owned())
}

fn access_token(state: &AppState, user: &UserRef, generation: i64) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(AccessToken {
        access_token: state.tokens.issue(user, generation)?,
        token_type: "bearer",
    }))
}

/// Checks the caller's current password (on the hashing pool, like login).
async fn confirm_password(
    state: &AppState,
    hashing: &Hashing,
    user: &UserRef,
    password: String,
) -> ApiResult<()> {
    let credentials = state.chat.store().credentials(&user.username).await?;
    let stored_hash = credentials
        .filter(|credentials| credentials.id == user.id)
        .map(|credentials| credentials.password_hash);
    if hashing.verify(password, stored_hash).await? {
        Ok(())
    } else {
        Err(ChatError::Forbidden("password: does not match".to_owned()).into())
    }
}

/// `GET /auth/me`: the caller's account, as registration returned it.
#[utoipa::path(
    get,
    path = "/auth/me",
    summary = "The caller's account",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account the token belongs to", body = User),
        (status = 401, response = schema::Unauthorized),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn me(state: web::Data<AppState>, AuthUser(user): AuthUser) -> ApiResult<HttpResponse> {
    // The token was checked against a live account; one deleted since is
    // answered like its tokens from now on.
    let account = state
        .chat
        .store()
        .user_record(user.id)
        .await?
        .ok_or_else(crate::token::rejected)?;
    Ok(HttpResponse::Ok().json(account))
}

/// `POST /auth/logout`: revokes the token used for this request until it
/// would have expired. 204.
#[utoipa::path(
    post,
    path = "/auth/logout",
    summary = "Revokes the token used for this request",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The token no longer works"),
        (status = 401, response = schema::Unauthorized),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(user = %token.user.username))]
pub async fn logout(
    state: web::Data<AppState>,
    AuthToken(token): AuthToken,
) -> ApiResult<HttpResponse> {
    ask(
        state.chat.persistence(),
        RevokeToken {
            jti: token.jti,
            expires_at: token.expires_at,
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    current_password: String,
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

/// `POST /auth/password`: sets a new password. Every token issued before
/// stops working; the answer carries a fresh one, like login.
#[utoipa::path(
    post,
    path = "/auth/password",
    summary = "Sets a new password; the caller's older tokens stop working",
    tag = "auth",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 200, description = "A fresh access token; older tokens stop working", body = AccessToken),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::BusyOrUnavailable),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn change_password(
    state: web::Data<AppState>,
    hashing: web::Data<Hashing>,
    AuthUser(user): AuthUser,
    Json(body): Json<PasswordChange>,
) -> ApiResult<HttpResponse> {
    validate::password(&body.new_password)
        .map_err(|_| ChatError::invalid("new_password: must be 8-1024 characters"))?;
    confirm_password(&state, &hashing, &user, body.current_password).await?;
    let password_hash = hashing.hash(body.new_password).await?;
    let generation = ask(
        state.chat.persistence(),
        ChangePassword {
            user: user.clone(),
            password_hash,
        },
    )
    .await?;
    access_token(&state, &user, generation)
}

#[derive(Deserialize, ToSchema)]
pub struct AccountDeletion {
    /// The account's current password.
    password: String,
}

/// `DELETE /auth/account`: deletes the caller's account after checking the
/// password. Its tokens stop working and its sockets close; its name stays
/// taken; messages it sent stay with their recipients. 204.
#[utoipa::path(
    delete,
    path = "/auth/account",
    summary = "Deletes the caller's account",
    tag = "auth",
    security(("bearer" = [])),
    request_body = AccountDeletion,
    responses(
        (status = 204, description = "The account is gone; its tokens stop working"),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::BusyOrUnavailable),
    )
)]
#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn delete_account(
    state: web::Data<AppState>,
    hashing: web::Data<Hashing>,
    AuthUser(user): AuthUser,
    Json(body): Json<AccountDeletion>,
) -> ApiResult<HttpResponse> {
    confirm_password(&state, &hashing, &user, body.password).await?;
    ask(state.chat.persistence(), DeleteAccount { user }).await?;
    Ok(HttpResponse::NoContent().finish())
}
