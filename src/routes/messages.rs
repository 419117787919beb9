//! Private messages (`POST /messages/private`, `GET /messages/private/{username}`)
//! and what any message goes through after it is sent: read receipts,
//! edits, deletions and reactions (`/messages/{message_id}...`).

use actix_web::{web, HttpResponse};
use parley_actors::model::{
    DeliveryStatus, KindedMessage, PrivateMessage, Reaction, Timestamp, UserRef,
};
use parley_actors::persistence::{MarkRead, MessageChange, Stored};
use parley_actors::protocol::{Conversation, MessageFields};
use parley_actors::{ask, validate, ChatError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{path_id, Json, Paging};
use crate::routes::groups::PostedGroupMessage;
use crate::schema;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct NewPrivateMessage {
    /// The recipient's username (case-insensitive); not the sender.
    #[schema(example = "bob")]
    recipient: String,
    #[schema(min_length = 1, max_length = 8192, example = "hi bob")]
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
    /// A message of this conversation that this one answers.
    #[schema(minimum = 1)]
    reply_to: Option<i64>,
}

/// A private message as REST shows it.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PrivateMessage)]
pub struct PrivateMessageView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    recipient: &'a str,
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    #[schema(value_type = schema::DeliveryStatus)]
    status: DeliveryStatus,
    /// The message of this conversation it answers.
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

impl<'a> From<&'a PrivateMessage> for PrivateMessageView<'a> {
    fn from(m: &'a PrivateMessage) -> Self {
        let lifecycle = &m.lifecycle;
        PrivateMessageView {
            id: m.id,
            content: &m.content,
            sender: &m.sender,
            recipient: &m.recipient,
            timestamp: m.timestamp,
            status: m.status,
            reply_to: lifecycle.reply_to,
            edited_at: lifecycle.edited_at,
            deleted: lifecycle.deleted,
            reactions: &lifecycle.reactions,
        }
    }
}

/// Sends a private message. It reaches every socket of the recipient and of
/// the sender; `status` is `delivered` if a recipient socket got it.
#[utoipa::path(
    post,
    path = "/messages/private",
    tag = "messages",
    security(("bearer" = [])),
    request_body = NewPrivateMessage,
    responses(
        (status = 200, description = "The stored message", body = PrivateMessageView),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(sender = %user.username))]
pub async fn send_private(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<NewPrivateMessage>,
) -> ApiResult<HttpResponse> {
    let fields = MessageFields {
        content: body.content,
        message_type: body.message_type,
        content_type: body.content_type,
        client_id: None,
        reply_to: body.reply_to,
    };
    let message = state.chat.outgoing(user, fields, None)?;
    let to = Conversation::User(body.recipient);
    let stored = state.chat.send_and_wait(to, message).await?;
    match &stored {
        Stored::Private(message) => {
            Ok(HttpResponse::Ok().json(PrivateMessageView::from(&**message)))
        }
        _ => Err(ChatError::internal_msg("a private send stored something else").into()),
    }
}

/// The conversation between the caller and `username`, both directions, one
/// page in ascending id.
#[utoipa::path(
    get,
    path = "/messages/private/{username}",
    summary = "The conversation with one user, a page at a time",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("username" = String, Path, description = "The other party (case-insensitive)"),
        schema::PagingParams,
    ),
    responses(
        (status = 200, description = "One page of the conversation, ascending id", body = [PrivateMessageView]),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn private_history(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    username: web::Path<String>,
    Paging(page): Paging,
) -> ApiResult<HttpResponse> {
    let other = state
        .chat
        .user(&username)
        .await?
        .ok_or_else(|| ChatError::not_found("username: no such user"))?;
    let messages = state
        .chat
        .history()
        .private_page(&user, &other, page)
        .await?;
    let views: Vec<PrivateMessageView> = messages.iter().map(|m| (&**m).into()).collect();
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadReceipt {
    id: i64,
    /// Always `read`.
    #[schema(value_type = schema::DeliveryStatus)]
    status: DeliveryStatus,
}

/// `POST /messages/{message_id}/read`: the recipient marks a private message
/// read, or a group member moves their read cursor.
#[utoipa::path(
    post,
    path = "/messages/{message_id}/read",
    summary = "Marks a message read",
    tag = "messages",
    security(("bearer" = [])),
    params(("message_id" = i64, Path, minimum = 1, description = "A private or group message id")),
    responses(
        (status = 200, description = "The message is read", body = ReadReceipt),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(reader = %user.username))]
pub async fn mark_read(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    message_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let message_id = path_id("message_id", &message_id)?;
    ask(
        state.chat.persistence(),
        MarkRead {
            reader: user,
            message_id,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(ReadReceipt {
        id: message_id,
        status: DeliveryStatus::Read,
    }))
}

/// A message of either kind, as an edit, deletion or reaction leaves it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageView<'a> {
    Private(PrivateMessageView<'a>),
    Group(PostedGroupMessage<'a>),
}

impl<'a> From<&'a KindedMessage> for MessageView<'a> {
    fn from(m: &'a KindedMessage) -> Self {
        match m {
            KindedMessage::Private(m) => MessageView::Private(m.into()),
            KindedMessage::Group(m) => MessageView::Group(m.into()),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct MessageEdit {
    /// The new text, checked as a send's; the old text is not kept.
    #[schema(min_length = 1, max_length = 8192, example = "hi bob (edited)")]
    content: String,
}

#[derive(Deserialize, ToSchema)]
pub struct NewReaction {
    /// One emoji (at most 16 characters, no spaces); replaces the caller's
    /// earlier reaction to this message.
    #[schema(
        min_length = 1,
        max_length = 16,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F]*$",
        example = "👍"
    )]
    emoji: String,
}

/// Applies a change to a message the caller can see and answers with its
/// new state.
async fn change(
    state: &AppState,
    by: UserRef,
    message_id: i64,
    change: MessageChange,
) -> ApiResult<HttpResponse> {
    let changed = state.chat.change(by, message_id, change).await?;
    let message = KindedMessage::from(changed);
    Ok(HttpResponse::Ok().json(MessageView::from(&message)))
}

/// The sender replaces a message's text. Everyone who can see the message
/// gets its new state (`message_updated`); `edited_at` marks it from then on.
#[utoipa::path(
    patch,
    path = "/messages/{message_id}",
    summary = "Edits a message",
    operation_id = "edit_message",
    tag = "messages",
    security(("bearer" = [])),
    params(("message_id" = i64, Path, minimum = 1, description = "A private or group message id")),
    request_body = MessageEdit,
    responses(
        (status = 200, description = "The edited message", body = MessageView),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn edit(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    message_id: web::Path<String>,
    Json(body): Json<MessageEdit>,
) -> ApiResult<HttpResponse> {
    let message_id = path_id("message_id", &message_id)?;
    validate::content(&body.content, state.chat.settings().max_content_chars)?;
    change(&state, user, message_id, MessageChange::Edit(body.content)).await
}

/// Deletes a message: its sender may, and in a group its owner or an admin.
/// The message stays as a tombstone (`deleted: true`, empty content, no
/// reactions) so ids and pages stay as they were; files it mentioned are
/// no longer shared through it. Deleting a tombstone again changes nothing.
#[utoipa::path(
    delete,
    path = "/messages/{message_id}",
    summary = "Deletes a message, leaving a tombstone",
    operation_id = "delete_message",
    tag = "messages",
    security(("bearer" = [])),
    params(("message_id" = i64, Path, minimum = 1, description = "A private or group message id")),
    responses(
        (status = 200, description = "The tombstone", body = MessageView),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn delete(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    message_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let message_id = path_id("message_id", &message_id)?;
    change(&state, user, message_id, MessageChange::Delete).await
}

/// Sets the caller's one reaction to a message they can see (replacing an
/// earlier one); setting the same again changes nothing.
#[utoipa::path(
    put,
    path = "/messages/{message_id}/reaction",
    summary = "Reacts to a message",
    operation_id = "react",
    tag = "messages",
    security(("bearer" = [])),
    params(("message_id" = i64, Path, minimum = 1, description = "A private or group message id")),
    request_body = NewReaction,
    responses(
        (status = 200, description = "The message with its reactions", body = MessageView),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn react(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    message_id: web::Path<String>,
    Json(body): Json<NewReaction>,
) -> ApiResult<HttpResponse> {
    let message_id = path_id("message_id", &message_id)?;
    validate::emoji(&body.emoji)?;
    change(
        &state,
        user,
        message_id,
        MessageChange::React(Some(body.emoji)),
    )
    .await
}

/// Takes back the caller's reaction to a message (nothing changes if there
/// was none).
#[utoipa::path(
    delete,
    path = "/messages/{message_id}/reaction",
    summary = "Takes back a reaction",
    operation_id = "unreact",
    tag = "messages",
    security(("bearer" = [])),
    params(("message_id" = i64, Path, minimum = 1, description = "A private or group message id")),
    responses(
        (status = 200, description = "The message with its reactions", body = MessageView),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 429, response = schema::TooManyRequests),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn unreact(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    message_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let message_id = path_id("message_id", &message_id)?;
    change(&state, user, message_id, MessageChange::React(None)).await
}
