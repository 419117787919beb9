//! Accounts and tokens: `POST /auth/register`, `POST /auth/login`,
//! `POST /auth/logout`, `POST /auth/password` and `DELETE /auth/account`.

use actix_web::{web, HttpRequest, HttpResponse};
use parley_actors::persistence::{ChangePassword, CreateUser, DeleteAccount, RevokeToken};
use parley_actors::{ask, model::UserRef, validate, ChatError};
use serde::{Deserialize, Serialize};

use crate::auth::{password, AuthToken, AuthUser};
use crate::error::ApiResult;
use crate::extract::Json;
use crate::startup::AppState;

#[derive(Deserialize)]
pub struct Registration {
    username: String,
    email: String,
    password: String,
}

#[tracing::instrument(skip_all, fields(username = %body.username))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    Json(body): Json<Registration>,
) -> ApiResult<HttpResponse> {
    state.check_auth_rate(&req)?;
    validate::username(&body.username)?;
    validate::email(&body.email)?;
    validate::password(&body.password)?;
    let password_hash = password::hash(body.password).await?;
    let user = ask(
        &state.chat.persistence,
        CreateUser {
            username: body.username,
            email: body.email,
            password_hash,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Deserialize)]
pub struct Login {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct AccessToken {
    access_token: String,
    token_type: &'static str,
}

#[tracing::instrument(skip_all, fields(username = %body.username))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    Json(body): Json<Login>,
) -> ApiResult<HttpResponse> {
    state.check_auth_rate(&req)?;
    let credentials = if validate::username(&body.username).is_ok() {
        state.chat.store.credentials(&body.username).await?
    } else {
        None
    };
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    // An unknown user is checked against a dummy hash: same cost, same answer.
    let matched = password::verify(body.password, stored_hash).await?;
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
async fn confirm_password(state: &AppState, user: &UserRef, password: String) -> ApiResult<()> {
    let credentials = state.chat.store.credentials(&user.username).await?;
    let stored_hash = credentials
        .filter(|credentials| credentials.id == user.id)
        .map(|credentials| credentials.password_hash);
    if password::verify(password, stored_hash).await? {
        Ok(())
    } else {
        Err(ChatError::Forbidden("password: does not match".to_owned()).into())
    }
}

/// `POST /auth/logout`: revokes the token used for this request until it
/// would have expired. 204.
#[tracing::instrument(skip_all, fields(user = %token.user.username))]
pub async fn logout(
    state: web::Data<AppState>,
    AuthToken(token): AuthToken,
) -> ApiResult<HttpResponse> {
    ask(
        &state.chat.persistence,
        RevokeToken {
            jti: token.jti,
            expires_at: token.expires_at,
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /auth/password`: sets a new password. Every token issued before
/// stops working; the answer carries a fresh one, like login.
#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn change_password(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<PasswordChange>,
) -> ApiResult<HttpResponse> {
    validate::password(&body.new_password)
        .map_err(|_| ChatError::invalid("new_password: must be 8-1024 characters"))?;
    confirm_password(&state, &user, body.current_password).await?;
    let password_hash = password::hash(body.new_password).await?;
    let generation = ask(
        &state.chat.persistence,
        ChangePassword {
            user: user.clone(),
            password_hash,
        },
    )
    .await?;
    access_token(&state, &user, generation)
}

#[derive(Deserialize)]
pub struct AccountDeletion {
    password: String,
}

/// `DELETE /auth/account`: deletes the caller's account after checking the
/// password. Its tokens stop working and its sockets close; its name stays
/// taken; messages it sent stay with their recipients. 204.
#[tracing::instrument(skip_all, fields(user = %user.username))]
pub async fn delete_account(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<AccountDeletion>,
) -> ApiResult<HttpResponse> {
    confirm_password(&state, &user, body.password).await?;
    ask(&state.chat.persistence, DeleteAccount { user }).await?;
    Ok(HttpResponse::NoContent().finish())
}
