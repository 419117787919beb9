//! `POST /auth/register` and `POST /auth/login`.

use actix_web::{web, HttpResponse};
use parley_actors::persistence::CreateUser;
use parley_actors::{ask, model::UserRef, validate, ChatError};
use serde::{Deserialize, Serialize};

use crate::auth::password;
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
    state: web::Data<AppState>,
    Json(body): Json<Registration>,
) -> ApiResult<HttpResponse> {
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
pub async fn login(state: web::Data<AppState>, Json(body): Json<Login>) -> ApiResult<HttpResponse> {
    let credentials = if validate::username(&body.username).is_ok() {
        state.chat.store.credentials(&body.username).await?
    } else {
        None
    };
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    // An unknown user is checked against a dummy hash: same cost, same answer.
    let matched = password::verify(body.password, stored_hash).await?;
    let user = match credentials {
        Some(credentials) if matched => UserRef {
            id: credentials.id,
            username: credentials.username.into(),
        },
        _ => {
            return Err(
                ChatError::Unauthenticated("invalid username or password".to_owned()).into(),
            )
        }
    };
    Ok(HttpResponse::Ok().json(AccessToken {
        access_token: state.tokens.issue(&user)?,
        token_type: "bearer",
    }))
}
