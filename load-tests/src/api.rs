//! The REST calls the scenarios make (DESIGN.md section 2): register, log
//! in, create groups and add members.

use serde::Deserialize;
use serde_json::json;

use crate::Failure;

/// Every load user's password.
pub const PASSWORD: &str = "parley-load-password";

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

pub async fn register(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<Registered, Failure> {
    let response = http
        .post(format!("{base}/auth/register"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@load.example"),
            "password": PASSWORD,
        }))
        .send()
        .await?;
    match response.status().as_u16() {
        200 | 201 => Ok(Registered::Created),
        409 => Ok(Registered::Taken),
        _ => Err(format!("register {username}: {}", error_text(response).await).into()),
    }
}

/// Logs in; `None` when the server answers 401 (no such user, or a wrong password).
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
) -> Result<Option<String>, Failure> {
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
    }
    let response = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await?;
    match response.status().as_u16() {
        200 => Ok(Some(response.json::<Token>().await?.access_token)),
        401 => Ok(None),
        _ => Err(format!("login {username}: {}", error_text(response).await).into()),
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
