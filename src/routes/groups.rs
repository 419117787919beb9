//! Groups: creating and listing them, their messages, and their members.
//! Everything about one group is answered by that group's room actor.

use actix_web::{web, HttpResponse};
use parley_actors::model::{GroupMessage, Reaction, Role, Timestamp, UserRef};
use parley_actors::persistence::{CreateGroup, Stored};
use parley_actors::protocol::{Conversation, MessageFields};
use parley_actors::room::{Add, ChangeRole, CheckMember, ListMembers, Remove};
use parley_actors::{ask, validate, ChatError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{path_id, Json, Paging};
use crate::schema::{self, Group, GroupSummary, Member};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct NewGroup {
    /// 1–100 characters, not blank.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S", example = "team")]
    name: String,
    /// Up to 1000 characters; defaults to empty.
    #[serde(default)]
    #[schema(max_length = 1000)]
    description: String,
}

/// Creates a group; the caller becomes its `owner`.
#[utoipa::path(
    post,
    path = "/groups",
    operation_id = "create_group",
    tag = "groups",
    security(("bearer" = [])),
    request_body = NewGroup,
    responses(
        (status = 200, description = "The new group", body = Group),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(creator = %user.username))]
pub async fn create(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<NewGroup>,
) -> ApiResult<HttpResponse> {
    validate::group_name(&body.name)?;
    validate::text("description", &body.description, validate::DESCRIPTION_MAX)?;
    let group = ask(
        state.chat.persistence(),
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
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GroupMessage)]
pub struct GroupMessageView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    message_type: &'a str,
    /// The message of this group it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<i64>,
    /// When the sender last edited it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    edited_at: Option<Timestamp>,
    /// Present (true) on a deleted message, whose content is then empty.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    /// Present when anyone reacted.
    #[serde(skip_serializing_if = "<[Reaction]>::is_empty")]
    #[schema(value_type = Vec<schema::Reaction>)]
    reactions: &'a [Reaction],
}

impl<'a> From<&'a GroupMessage> for GroupMessageView<'a> {
    fn from(m: &'a GroupMessage) -> Self {
        GroupMessageView {
            id: m.id,
            content: &m.content,
            sender: &m.sender,
            timestamp: m.timestamp,
            message_type: &m.message_type,
            reply_to: m.lifecycle.reply_to,
            edited_at: m.lifecycle.edited_at,
            deleted: m.lifecycle.deleted,
            reactions: &m.lifecycle.reactions,
        }
    }
}

/// One page of a group's history, ascending id. Members only.
#[utoipa::path(
    get,
    path = "/groups/{group_id}/messages",
    operation_id = "group_messages",
    tag = "groups",
    security(("bearer" = [])),
    params(schema::GroupIdParam, schema::PagingParams),
    responses(
        (status = 200, description = "One page of the group's messages, ascending id", body = [GroupMessageView]),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn messages(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Paging(page): Paging,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    let check = CheckMember { user: user.id };
    state.chat.rooms().ask(group_id, check).await?;
    let messages = state.chat.history().group_page(group_id, page).await?;
    let views: Vec<GroupMessageView> = messages.iter().map(|m| (&**m).into()).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /groups`: the caller's groups with their role and unread count.
#[utoipa::path(
    get,
    path = "/groups",
    summary = "The caller's groups with their role and unread count",
    operation_id = "list_groups",
    tag = "groups",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's groups", body = [GroupSummary]),
        (status = 401, response = schema::Unauthorized),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn mine(state: web::Data<AppState>, AuthUser(user): AuthUser) -> ApiResult<HttpResponse> {
    let groups = state.chat.store().groups_of(user.id).await?;
    Ok(HttpResponse::Ok().json(groups))
}

#[derive(Deserialize, ToSchema)]
pub struct NewGroupMessage {
    #[schema(min_length = 1, max_length = 8192, example = "hi all")]
    content: String,
    /// Defaults to `text`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$",
        example = "text"
    )]
    message_type: Option<String>,
    /// Defaults to `text/plain`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$",
        example = "text/plain"
    )]
    content_type: Option<String>,
    /// A message of this group that this one answers.
    #[schema(minimum = 1)]
    reply_to: Option<i64>,
}

/// A group message with its group, as a post (or a change) returns it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostedGroupMessage<'a> {
    id: i64,
    group_id: i64,
    sender: &'a str,
    content: &'a str,
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    message_type: &'a str,
    content_type: &'a str,
    /// The message of this group it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<i64>,
    /// When the sender last edited it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    edited_at: Option<Timestamp>,
    /// Present (true) on a deleted message, whose content is then empty.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    /// Present when anyone reacted.
    #[serde(skip_serializing_if = "<[Reaction]>::is_empty")]
    #[schema(value_type = Vec<schema::Reaction>)]
    reactions: &'a [Reaction],
}

impl<'a> From<&'a GroupMessage> for PostedGroupMessage<'a> {
    fn from(m: &'a GroupMessage) -> Self {
        PostedGroupMessage {
            id: m.id,
            group_id: m.group_id,
            sender: &m.sender,
            content: &m.content,
            timestamp: m.timestamp,
            message_type: &m.message_type,
            content_type: &m.content_type,
            reply_to: m.lifecycle.reply_to,
            edited_at: m.lifecycle.edited_at,
            deleted: m.lifecycle.deleted,
            reactions: &m.lifecycle.reactions,
        }
    }
}

/// Posts a message to a group the caller is a member of; every member's
/// sockets get it.
#[utoipa::path(
    post,
    path = "/groups/{group_id}/messages",
    operation_id = "post_group_message",
    tag = "groups",
    security(("bearer" = [])),
    params(schema::GroupIdParam),
    request_body = NewGroupMessage,
    responses(
        (status = 200, description = "The stored message", body = PostedGroupMessage),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(sender = %user.username))]
pub async fn post_message(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Json(body): Json<NewGroupMessage>,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    let fields = MessageFields {
        content: body.content,
        message_type: body.message_type,
        content_type: body.content_type,
        client_id: None,
        reply_to: body.reply_to,
    };
    let message = state.chat.outgoing(user, fields, None)?;
    let to = Conversation::Group(group_id);
    let stored = state.chat.send_and_wait(to, message).await?;
    let Stored::Group(m, _) = &stored else {
        return Err(ChatError::internal_msg("a group post stored something else").into());
    };
    Ok(HttpResponse::Ok().json(PostedGroupMessage::from(&**m)))
}

/// The group's members, oldest first. Members only.
#[utoipa::path(
    get,
    path = "/groups/{group_id}/members",
    operation_id = "group_members",
    tag = "groups",
    security(("bearer" = [])),
    params(schema::GroupIdParam),
    responses(
        (status = 200, description = "The members, oldest first", body = [Member]),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn members(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    let members = state
        .chat
        .rooms()
        .ask(group_id, ListMembers { by: user.id })
        .await?;
    Ok(HttpResponse::Ok().json(members))
}

#[derive(Deserialize, ToSchema)]
pub struct NewMember {
    /// The user to add (case-insensitive).
    #[schema(example = "bob")]
    username: String,
}

/// A user named in a path or body, 404 if there is none. Asked only after
/// the room confirmed the caller is a member, so non-members learn nothing
/// but 403.
async fn named_user(
    state: &AppState,
    group_id: i64,
    caller: i64,
    username: &str,
) -> ApiResult<UserRef> {
    state
        .chat
        .rooms()
        .ask(group_id, CheckMember { user: caller })
        .await?;
    Ok(state
        .chat
        .user(username)
        .await?
        .ok_or_else(|| ChatError::not_found("username: no such user"))?)
}

/// Adds a user as a plain `member`. The owner and admins only.
#[utoipa::path(
    post,
    path = "/groups/{group_id}/members",
    tag = "groups",
    security(("bearer" = [])),
    params(schema::GroupIdParam),
    request_body = NewMember,
    responses(
        (status = 200, description = "The new member", body = Member),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn add_member(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    group_id: web::Path<String>,
    Json(body): Json<NewMember>,
) -> ApiResult<HttpResponse> {
    let group_id = path_id("group_id", &group_id)?;
    let new_member = named_user(&state, group_id, user.id, &body.username).await?;
    let member = state
        .chat
        .rooms()
        .ask(
            group_id,
            Add {
                by: user.id,
                user: new_member,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(member))
}

/// Removes a member: the owner removes anyone, an admin plain members, and
/// anyone may remove themself (leave), except the owner while others remain
/// (409).
#[utoipa::path(
    delete,
    path = "/groups/{group_id}/members/{username}",
    tag = "groups",
    security(("bearer" = [])),
    params(schema::GroupIdParam, ("username" = String, Path, description = "The member to remove")),
    responses(
        (status = 204, description = "The member is removed"),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn remove_member(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (group_id, username) = path.into_inner();
    let group_id = path_id("group_id", &group_id)?;
    let member = named_user(&state, group_id, user.id, &username).await?;
    state
        .chat
        .rooms()
        .ask(
            group_id,
            Remove {
                by: user.id,
                user: member.id,
            },
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
pub struct NewRole {
    /// Making someone `owner` turns the old owner into an `admin`.
    #[schema(value_type = schema::Role)]
    role: String,
}

/// Changes a member's role. The owner only.
#[utoipa::path(
    patch,
    path = "/groups/{group_id}/members/{username}",
    tag = "groups",
    security(("bearer" = [])),
    params(schema::GroupIdParam, ("username" = String, Path, description = "The member whose role changes")),
    request_body = NewRole,
    responses(
        (status = 200, description = "The member with the new role", body = Member),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
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
    let group_id = path_id("group_id", &group_id)?;
    let member = named_user(&state, group_id, user.id, &username).await?;
    let member = state
        .chat
        .rooms()
        .ask(
            group_id,
            ChangeRole {
                by: user.id,
                user: member.id,
                role,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(member))
}
