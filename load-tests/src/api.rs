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

/// Sends the request `request` builds; a 503 with `Retry-After` is sent
/// again after the time it names, as a client would, up to
/// [`ATTEMPTS_WHEN_REFUSED`] times in all. Gives back the last response.
async fn send_until_admitted(
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, Failure> {
    let mut attempt = 1;
    loop {
        let response = request().send().await?;
        match (response.status().as_u16(), retry_after(&response)) {
            (503, Some(secs)) if attempt < ATTEMPTS_WHEN_REFUSED => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            _ => return Ok(response),
        }
    }
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

/// Registers `username`, asking again after refusals under load
/// ([`send_until_admitted`]).
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<Registered, Failure> {
    let response = send_until_admitted(|| {
        http.post(format!("{base}/auth/register")).json(&json!({
            "username": username,
            "email": format!("{username}@load.example"),
            "password": PASSWORD,
        }))
    })
    .await?;
    match response.status().as_u16() {
        200 | 201 => Ok(Registered::Created),
        409 => Ok(Registered::Taken),
        _ => Err(format!("register {username}: {}", error_text(response).await).into()),
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

fn login_request(http: &reqwest::Client, base: &str, username: &str) -> reqwest::RequestBuilder {
    http.post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
}

/// A login's response as a [`LoginAnswer`]; any other status is an error.
async fn login_answer(response: reqwest::Response, username: &str) -> Result<LoginAnswer, Failure> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    match (response.status().as_u16(), retry_after(&response)) {
        (200, _) => Ok(LoginAnswer::Token(
            response.json::<Token>().await?.access_token,
        )),
        (401, _) => Ok(LoginAnswer::Rejected),
        (503, Some(retry_after)) => Ok(LoginAnswer::Refused { retry_after }),
        _ => Err(format!("login {username}: {}", error_text(response).await).into()),
    }
}

/// Logs in once, telling a refusal under load (503 with `Retry-After`)
/// from an error.
pub async fn try_login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<LoginAnswer, Failure> {
    let response = login_request(http, base, username).send().await?;
    login_answer(response, username).await
}

/// Logs in, asking again after refusals under load
/// ([`send_until_admitted`]); `None` when the server answers 401 (no such
/// user, or a wrong password).
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<Option<String>, Failure> {
    let response = send_until_admitted(|| login_request(http, base, username)).await?;
    match login_answer(response, username).await? {
        LoginAnswer::Token(token) => Ok(Some(token)),
        LoginAnswer::Rejected => Ok(None),
        LoginAnswer::Refused { retry_after } => Err(format!(
            "login {username}: 503 {ATTEMPTS_WHEN_REFUSED} times, the server is too busy to \
             check passwords (Retry-After: {retry_after})"
        )
        .into()),
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
