//! The REST calls `parley-load` makes, answered from memory: register and
//! log in (no hashing; tokens are opaque strings), groups and members, the
//! `/ws/chat` handshake, and history pages made up on the spot (50
//! messages shaped like Parley's, below the cursor, ascending).

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_actors::ws;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::session::Session;
use crate::state::{now, Refusal, Relay, UserId};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/register", web::post().to(register))
        .route("/auth/login", web::post().to(login))
        .route("/groups", web::get().to(my_groups))
        .route("/groups", web::post().to(create_group))
        .route("/groups/{group_id}/members", web::get().to(members))
        .route("/groups/{group_id}/members", web::post().to(add_member))
        .route("/groups/{group_id}/messages", web::get().to(group_history))
        .route(
            "/messages/private/{username}",
            web::get().to(private_history),
        )
        .route("/ws/chat", web::get().to(chat))
        .route("/healthz", web::get().to(healthz));
}

/// A refused request, answered with Parley's error body `{"detail", "code"}`.
#[derive(Debug)]
struct Refused(Refusal);

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Refused(refusal)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0 .1)
    }
}

impl ResponseError for Refused {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0 .0).unwrap_or(StatusCode::BAD_REQUEST)
    }

    fn error_response(&self) -> HttpResponse {
        let (code, detail) = self.0;
        HttpResponse::build(self.status_code()).json(json!({"detail": detail, "code": code}))
    }
}

type Answer = Result<HttpResponse, Refused>;

/// The caller, from `Authorization: Bearer …` or `?token=`.
fn caller(req: &HttpRequest, relay: &Relay) -> Result<UserId, Refusal> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let query = web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().token);
    let token = header.map(str::to_owned).or(query);
    token
        .and_then(|token| relay.directory().authenticate(&token))
        .ok_or((401, "missing or unknown token"))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    #[serde(default)]
    email: String,
    password: String,
}

async fn register(relay: web::Data<Relay>, body: web::Json<NewUser>) -> Answer {
    let mut directory = relay.directory_mut();
    let id = directory.register(&body.username, &body.email, &body.password)?;
    let user = directory.user(id);
    Ok(HttpResponse::Ok().json(json!({
        "id": id + 1,
        "username": &*user.name,
        "email": user.email,
        "created_at": user.created_at,
    })))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(relay: web::Data<Relay>, body: web::Json<Credentials>) -> Answer {
    let token = relay.new_token();
    let token = relay
        .directory_mut()
        .login(&body.username, &body.password, token)
        .ok_or((401, "invalid username or password"))?;
    Ok(HttpResponse::Ok().json(json!({"access_token": token, "token_type": "bearer"})))
}

async fn my_groups(req: HttpRequest, relay: web::Data<Relay>) -> Answer {
    let me = caller(&req, &relay)?;
    let directory = relay.directory();
    let groups: Vec<_> = directory
        .user(me)
        .groups
        .iter()
        .filter_map(|id| directory.groups.get(id).map(|g| (id, g)))
        .map(|(id, group)| {
            json!({
                "id": id,
                "name": group.name,
                "description": group.description,
                "role": if group.owner == me { "owner" } else { "member" },
                "unread": 0,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(groups))
}

#[derive(Deserialize)]
struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_group(
    req: HttpRequest,
    relay: web::Data<Relay>,
    body: web::Json<NewGroup>,
) -> Answer {
    let me = caller(&req, &relay)?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err((400, "name: 1-100 characters, not blank").into());
    }
    let mut directory = relay.directory_mut();
    let id = directory.create_group(me, &body.name, &body.description);
    let group = &directory.groups[&id];
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "name": group.name,
        "description": group.description,
        "created_at": group.created_at,
        "created_by": &*directory.user(me).name,
    })))
}

#[derive(Deserialize)]
struct NewMember {
    username: String,
}

fn group_id(path: &str) -> Result<i64, Refusal> {
    path.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or((400, "group_id: must be a positive integer"))
}

async fn add_member(
    req: HttpRequest,
    relay: web::Data<Relay>,
    path: web::Path<String>,
    body: web::Json<NewMember>,
) -> Answer {
    let me = caller(&req, &relay)?;
    let group = group_id(&path)?;
    let mut directory = relay.directory_mut();
    let user = directory
        .find(&body.username)
        .ok_or((404, "username: no such user"))?;
    directory.add_member(group, me, user)?;
    let joined = &directory.groups[&group]
        .members
        .last()
        .expect("just added")
        .1;
    Ok(HttpResponse::Ok().json(json!({
        "username": &*directory.user(user).name,
        "role": "member",
        "joined_at": joined,
    })))
}

async fn members(req: HttpRequest, relay: web::Data<Relay>, path: web::Path<String>) -> Answer {
    let me = caller(&req, &relay)?;
    let group = group_id(&path)?;
    let directory = relay.directory();
    let entry = directory
        .groups
        .get(&group)
        .ok_or((404, "group_id: no such group"))?;
    if !entry.has(me) {
        return Err((403, "not a member of this group").into());
    }
    let list: Vec<_> = entry
        .members
        .iter()
        .map(|(user, joined)| {
            json!({
                "username": &*directory.user(*user).name,
                "role": if *user == entry.owner { "owner" } else { "member" },
                "joined_at": joined,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `?before=&after=&limit=` as Parley reads it (limit 1..=500, default 50).
#[derive(Deserialize)]
struct PagingQuery {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// The ids of one page, ascending: the `limit` highest below `before`
/// (or the newest `limit` up to `last`), or the lowest above `after`.
pub fn page_ids(
    before: Option<i64>,
    after: Option<i64>,
    limit: i64,
    last: i64,
) -> std::ops::RangeInclusive<i64> {
    let limit = limit.clamp(1, MAX_LIMIT);
    if let Some(after) = after {
        let top = last.min(after.saturating_add(limit));
        return after + 1..=top;
    }
    let top = before.map_or(last, |before| before - 1);
    (top - limit + 1).max(1)..=top
}

/// A page request's `(before, after, limit)`.
type Paging = (Option<i64>, Option<i64>, i64);

fn paging(req: &HttpRequest) -> Result<Paging, Refusal> {
    let query = web::Query::<PagingQuery>::from_query(req.query_string())
        .map_err(|_| (400, "query: malformed"))?
        .into_inner();
    let number = |value: Option<String>, what: Refusal| {
        value
            .map(|text| text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or(what))
            .transpose()
    };
    let before = number(
        query.before,
        (400, "before: must be a non-negative integer"),
    )?;
    let after = number(query.after, (400, "after: must be a non-negative integer"))?;
    let limit =
        number(query.limit, (400, "limit: must be a positive integer"))?.unwrap_or(DEFAULT_LIMIT);
    Ok((before, after, limit))
}

/// 100 bytes of content, about what `seed` stores per message.
const CONTENT: &str = "relay history page: a message of about the size parley-load seeds, padded to one hundred bytes....";

#[derive(Serialize)]
struct PrivateView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    recipient: &'a str,
    timestamp: &'a str,
    status: &'static str,
}

#[derive(Serialize)]
struct GroupView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    timestamp: &'a str,
    message_type: &'static str,
}

async fn private_history(
    req: HttpRequest,
    relay: web::Data<Relay>,
    path: web::Path<String>,
) -> Answer {
    let me = caller(&req, &relay)?;
    let (before, after, limit) = paging(&req)?;
    let directory = relay.directory();
    let other = directory
        .find(&path)
        .ok_or((404, "username: no such user"))?;
    let names = [&*directory.user(me).name, &*directory.user(other).name];
    let timestamp = now();
    let page: Vec<PrivateView> = page_ids(before, after, limit, relay.last_id())
        .map(|id| {
            let from = (id % 2) as usize;
            PrivateView {
                id,
                content: CONTENT,
                sender: names[from],
                recipient: names[1 - from],
                timestamp: &timestamp,
                status: "read",
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(page))
}

async fn group_history(
    req: HttpRequest,
    relay: web::Data<Relay>,
    path: web::Path<String>,
) -> Answer {
    let me = caller(&req, &relay)?;
    let group = group_id(&path)?;
    let (before, after, limit) = paging(&req)?;
    let directory = relay.directory();
    let entry = directory
        .groups
        .get(&group)
        .ok_or((404, "group_id: no such group"))?;
    if !entry.has(me) {
        return Err((403, "not a member of this group").into());
    }
    let members = &entry.members;
    let timestamp = now();
    let page: Vec<GroupView> = page_ids(before, after, limit, relay.last_id())
        .map(|id| GroupView {
            id,
            content: CONTENT,
            sender: &directory.user(members[id as usize % members.len()].0).name,
            timestamp: &timestamp,
            message_type: "text",
        })
        .collect();
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /ws/chat`: a known token (header or `?token=`) opens a session.
async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    relay: web::Data<Relay>,
) -> Result<HttpResponse, actix_web::Error> {
    let me = caller(&req, &relay).map_err(Refused)?;
    let name = relay.directory().user(me).name.clone();
    let session = Session {
        id: relay.next_session(),
        user: me,
        name,
        relay: relay.clone(),
        last_heard: Instant::now(),
    };
    ws::WsResponseBuilder::new(session, &req, payload)
        .frame_size(64 * 1024)
        .start()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "relay": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_lie_below_the_cursor_in_ascending_order() {
        let ids: Vec<i64> = page_ids(Some(1000), None, 50, 5000).collect();
        assert_eq!(ids.len(), 50);
        assert_eq!(ids.first(), Some(&950));
        assert_eq!(ids.last(), Some(&999));
        // The newest page ends at the last id handed out.
        let newest: Vec<i64> = page_ids(None, None, 50, 5000).collect();
        assert_eq!((newest[0], newest[49]), (4951, 5000));
        // Near the start a page is shorter, and empty below the first id.
        assert_eq!(page_ids(Some(11), None, 50, 5000).count(), 10);
        assert_eq!(page_ids(Some(1), None, 50, 5000).count(), 0);
        assert_eq!(page_ids(None, None, 50, 0).count(), 0);
        let above: Vec<i64> = page_ids(None, Some(10), 5, 5000).collect();
        assert_eq!(above, vec![11, 12, 13, 14, 15]);
    }
}
