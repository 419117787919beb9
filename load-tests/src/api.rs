//! The REST calls the scenarios make (DESIGN.md section 2): register, log
//! in, create groups and add members.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::Failure;

/// Every load user's password.
pub const PASSWORD: &str = "parley-load-password";

/// How often account preparation asks again after a 503 with
/// `Retry-After` (the server shed the hash under load), waiting as told.
const ATTEMPTS_WHEN_REFUSED: u32 = 10;

/// The `Retry-After` seconds of a response, if it has them.
fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
}

pub enum Registered {
    Created,
    /// 409: the name (or email) is taken, presumably by an earlier run.
    Taken,
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    format!("{status}: {}", body.chars().take(300).collect::<String>())
}

/// Registers `username`; a 503 with `Retry-After` is asked again after
/// the time it names, up to [`ATTEMPTS_WHEN_REFUSED`] times.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<Registered, Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = http
            .post(format!("{base}/auth/register"))
            .json(&json!({
                "username": username,
                "email": format!("{username}@load.example"),
                "password": PASSWORD,
            }))
            .send()
            .await?;
        match (response.status().as_u16(), retry_after(&response)) {
            (200 | 201, _) => return Ok(Registered::Created),
            (409, _) => return Ok(Registered::Taken),
            (503, Some(secs)) if attempt < ATTEMPTS_WHEN_REFUSED => {
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            _ => return Err(format!("register {username}: {}", error_text(response).await).into()),
        }
    }
}

/// What the server answered a login.
pub enum LoginAnswer {
    Token(String),
    /// 401: no such user, or a wrong password.
    Rejected,
    /// 503 with `Retry-After`: the server shed the login at once (its
    /// password hashing queue was full); retrying after that many seconds may work.
    Refused {
        retry_after: u64,
    },
}

/// Logs in, telling a refusal under load (503 with `Retry-After`) from an
/// error; any other status is an error.
pub async fn try_login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<LoginAnswer, Failure> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let response = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await?;
    match (response.status().as_u16(), retry_after(&response)) {
        (200, _) => Ok(LoginAnswer::Token(
            response.json::<Token>().await?.access_token,
        )),
        (401, _) => Ok(LoginAnswer::Rejected),
        (503, Some(retry_after)) => Ok(LoginAnswer::Refused { retry_after }),
        _ => Err(format!("login {username}: {}", error_text(response).await).into()),
    }
}

/// Logs in; `None` when the server answers 401 (no such user, or a wrong
/// password). A refusal under load is asked again after the `Retry-After`
/// it names, as a client would, and is an error after
/// [`ATTEMPTS_WHEN_REFUSED`] of them.
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<Option<String>, Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_login(http, base, username).await? {
            LoginAnswer::Token(token) => return Ok(Some(token)),
            LoginAnswer::Rejected => return Ok(None),
            LoginAnswer::Refused { retry_after } if attempt < ATTEMPTS_WHEN_REFUSED => {
                tokio::time::sleep(Duration::from_secs(retry_after)).await;
            }
            LoginAnswer::Refused { retry_after } => {
                return Err(format!(
                    "login {username}: 503 {attempt} times, the server is too busy to check \
                     passwords (Retry-After: {retry_after})"
                )
                .into())
            }
        }
    }
}

/// Whether `token` is accepted (an authenticated `GET /groups`).
pub async fn token_works(http: &reqwest::Client, base: &str, token: &str) -> Result<bool, Failure> {
    let response = http
        .get(format!("{base}/groups"))
        .bearer_auth(token)
        .send()
        .await?;
    match response.status().as_u16() {
        200 => Ok(true),
        401 => Ok(false),
        _ => Err(format!("GET /groups: {}", error_text(response).await).into()),
    }
}

pub async fn create_group(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> Result<i64, Failure> {
    #[derive(Deserialize)]
    struct Group {
        id: i64,
    }
    let response = http
        .post(format!("{base}/groups"))
        .bearer_auth(token)
        .json(&json!({"name": name, "description": "parley-load"}))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("create group {name}: {}", error_text(response).await).into());
    }
    Ok(response.json::<Group>().await?.id)
}

/// Adds `username` to the group (409 "already a member" counts as done).
pub async fn add_member(
    http: &reqwest::Client,
    base: &str,
    owner_token: &str,
    group: i64,
    username: &str,
) -> Result<(), Failure> {
    let response = http
        .post(format!("{base}/groups/{group}/members"))
        .bearer_auth(owner_token)
        .json(&json!({"username": username}))
        .send()
        .await?;
    match response.status().as_u16() {
        200 | 201 | 409 => Ok(()),
        _ => Err(format!(
            "add {username} to group {group}: {}",
            error_text(response).await
        )
        .into()),
    }
}

/// The member names of a group, or `None` if the caller can't see it.
pub async fn group_members(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    group: i64,
) -> Result<Option<Vec<String>>, Failure> {
    #[derive(Deserialize)]
    struct Member {
        username: String,
    }
    let response = http
        .get(format!("{base}/groups/{group}/members"))
        .bearer_auth(token)
        .send()
        .await?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let members: Vec<Member> = response.json().await?;
    Ok(Some(members.into_iter().map(|m| m.username).collect()))
}
