//! Groups: creating and listing them, their messages, and their members.
//! Everything about one group is answered by that group's room actor.

use actix::Addr;
use actix_web::{web, HttpResponse};
use parley_actors::model::{GroupMessage, Timestamp, UserRef};
use parley_actors::persistence::{CreateGroup, Reply, Stored};
use parley_actors::room::{
    Add, ChangeRole, CheckMember, ListMembers, PostMessage, Remove, Role, RoomActor,
};
use parley_actors::{ask, validate, ChatError};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{path_id, Json, Paging};
use crate::routes::messages::message_types;
use crate::startup::AppState;

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

#[tracing::instrument(skip_all, fields(creator = %user.username))]
pub async fn create(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<NewGroup>,
) -> ApiResult<HttpResponse> {
    validate::group_name(&body.name)?;
    validate::text("description", &body.description, validate::DESCRIPTION_MAX)?;
    let group = ask(
        &state.chat.persistence,
        CreateGroup {
            creator: user,
            name: body.name,
            description: body.description,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(group))
}

/// A group message as REST shows it.
#[derive(Serialize)]
struct GroupMessageView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    timestamp: Timestamp,
    message_type: &'a str,
}

impl<'a> From<&'a GroupMessage> for GroupMessageView<'a> {
    fn from(m: &'a GroupMessage) -> Self {
        GroupMessageView {
            id: m.id,
            content: &m.content,
            sender: &m.sender,
            timestamp: m.timestamp,
            message_type: &m.message_type,
        }
    }
}

#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn messages(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Paging(page): Paging,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    let room = state.chat.room(group_id).await?;
    ask(&room, CheckMember { user: user.id }).await?;
    let messages = state.chat.store.group_history(group_id, page).await?;
    let views: Vec<GroupMessageView> = messages.iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /groups`: the caller's groups with their role and unread count.
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn mine(state: web::Data<AppState>, AuthUser(user): AuthUser) -> ApiResult<HttpResponse> {
    let groups = state.chat.store.groups_of(user.id).await?;
    Ok(HttpResponse::Ok().json(groups))
}

#[derive(Deserialize)]
pub struct NewGroupMessage {
    content: String,
    message_type: Option<String>,
    content_type: Option<String>,
}

#[derive(Serialize)]
struct PostedGroupMessage<'a> {
    id: i64,
    group_id: i64,
    sender: &'a str,
    content: &'a str,
    timestamp: Timestamp,
    message_type: &'a str,
    content_type: &'a str,
}

#[tracing::instrument(skip_all, fields(sender = %user.username))]
pub async fn post_message(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Json(body): Json<NewGroupMessage>,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    validate::content(&body.content, state.chat.settings.max_content_chars)?;
    let (message_type, content_type) = message_types(body.message_type, body.content_type)?;
    let room = state.chat.room(group_id).await?;
    state.chat.check_message_rate(user.id)?;
    let (reply, stored) = Reply::channel();
    room.do_send(PostMessage {
        sender: user,
        content: body.content,
        message_type,
        content_type,
        client_id: None,
        origin: None,
        reply,
    });
    let stored = stored.await?;
    let Stored::Group(m, _) = &stored else {
        return Err(ChatError::internal_msg("a group post stored something else").into());
    };
    Ok(HttpResponse::Ok().json(PostedGroupMessage {
        id: m.id,
        group_id: m.group_id,
        sender: &m.sender,
        content: &m.content,
        timestamp: m.timestamp,
        message_type: &m.message_type,
        content_type: &m.content_type,
    }))
}

#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn members(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let room = state.chat.room(path_id("group_id", &group_id)?).await?;
    let members = ask(&room, ListMembers { by: user.id }).await?;
    Ok(HttpResponse::Ok().json(members))
}

#[derive(Deserialize)]
pub struct NewMember {
    username: String,
}

/// A user named in a path or body, 404 if there is none. Asked only after
/// the room confirmed the caller is a member, so non-members learn nothing
/// but 403.
async fn named_user(
    state: &AppState,
    room: &Addr<RoomActor>,
    caller: i64,
    username: &str,
) -> ApiResult<UserRef> {
    ask(room, CheckMember { user: caller }).await?;
    Ok(state
        .chat
        .user(username)
        .await?
        .ok_or_else(|| ChatError::not_found("username: no such user"))?)
}

#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn add_member(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Json(body): Json<NewMember>,
) -> ApiResult<HttpResponse> {
    let room = state.chat.room(path_id("group_id", &group_id)?).await?;
    let new_member = named_user(&state, &room, user.id, &body.username).await?;
    let member = ask(
        &room,
        Add {
            by: user.id,
            user: new_member,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(member))
}

#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn remove_member(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (group_id, username) = path.into_inner();
    let room = state.chat.room(path_id("group_id", &group_id)?).await?;
    let member = named_user(&state, &room, user.id, &username).await?;
    ask(
        &room,
        Remove {
            by: user.id,
            user: member.id,
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct NewRole {
    role: String,
}

#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn change_role(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    path: web::Path<(String, String)>,
    Json(body): Json<NewRole>,
) -> ApiResult<HttpResponse> {
    let (group_id, username) = path.into_inner();
    let role = Role::parse(&body.role)
        .ok_or_else(|| ChatError::invalid("role: must be owner, admin or member"))?;
    let room = state.chat.room(path_id("group_id", &group_id)?).await?;
    let member = named_user(&state, &room, user.id, &username).await?;
    let member = ask(
        &room,
        ChangeRole {
            by: user.id,
            user: member.id,
            role,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(member))
}
