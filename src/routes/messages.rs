//! `POST /messages/private` and `GET /messages/private/{username}`.

use actix_web::{web, HttpResponse};
use parley_actors::model::{DeliveryStatus, PrivateMessage, Timestamp};
use parley_actors::persistence::{MarkRead, NewMessage, Reply, StoreMessage, Stored, Target};
use parley_actors::protocol::{DEFAULT_CONTENT_TYPE, DEFAULT_MESSAGE_TYPE};
use parley_actors::{ask, validate, ChatError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{path_id, Json, Paging};
use crate::openapi;
use crate::startup::AppState;

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
    #[schema(value_type = openapi::DeliveryStatus)]
    status: DeliveryStatus,
}

impl<'a> From<&'a PrivateMessage> for PrivateMessageView<'a> {
    fn from(m: &'a PrivateMessage) -> Self {
        PrivateMessageView {
            id: m.id,
            content: &m.content,
            sender: &m.sender,
            recipient: &m.recipient,
            timestamp: m.timestamp,
            status: m.status,
        }
    }
}

/// Message and content types: defaulted when absent, checked when given.
pub fn message_types(
    message_type: Option<String>,
    content_type: Option<String>,
) -> ApiResult<(String, String)> {
    let message_type = message_type.unwrap_or_else(|| DEFAULT_MESSAGE_TYPE.to_owned());
    let content_type = content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    validate::label("message_type", &message_type)?;
    validate::label("content_type", &content_type)?;
    Ok((message_type, content_type))
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
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 429, response = openapi::TooManyRequests),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(sender = %user.username))]
pub async fn send_private(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<NewPrivateMessage>,
) -> ApiResult<HttpResponse> {
    validate::content(&body.content, state.chat.settings.max_content_chars)?;
    let (message_type, content_type) = message_types(body.message_type, body.content_type)?;
    state.chat.check_message_rate(user.id)?;
    let (reply, stored) = Reply::channel();
    state.chat.persistence.do_send(StoreMessage {
        message: NewMessage {
            accepted_at: std::time::Instant::now(),
            sender: user,
            to: Target::User(body.recipient),
            content: body.content,
            message_type,
            content_type,
            client_id: None,
            origin: None,
        },
        reply,
    });
    let stored = stored.await?;
    match &stored {
        Stored::Private(message) => Ok(HttpResponse::Ok().json(PrivateMessageView::from(message))),
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
        openapi::PagingParams,
    ),
    responses(
        (status = 200, description = "One page of the conversation, ascending id", body = [PrivateMessageView]),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::Unavailable),
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
        .store
        .private_history(&user, &other, page)
        .await?;
    let views: Vec<PrivateMessageView> = messages.iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadReceipt {
    id: i64,
    /// Always `read`.
    #[schema(value_type = openapi::DeliveryStatus)]
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
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, response = openapi::Forbidden),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::InternalError),
        (status = 503, response = openapi::Unavailable),
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
        &state.chat.persistence,
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
