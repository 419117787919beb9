//! `POST /messages/private` and `GET /messages/private/{username}`.

use actix_web::{web, HttpResponse};
use parley_actors::model::{DeliveryStatus, PrivateMessage, Timestamp};
use parley_actors::persistence::{MarkRead, NewMessage, Reply, StoreMessage, Stored, Target};
use parley_actors::protocol::{DEFAULT_CONTENT_TYPE, DEFAULT_MESSAGE_TYPE};
use parley_actors::{ask, validate, ChatError};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{path_id, Json, Paging};
use crate::startup::AppState;

#[derive(Deserialize)]
pub struct NewPrivateMessage {
    recipient: String,
    content: String,
    message_type: Option<String>,
    content_type: Option<String>,
}

/// A private message as REST shows it.
#[derive(Serialize)]
struct PrivateMessageView<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    recipient: &'a str,
    timestamp: Timestamp,
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
        .private_history(user.id, other.id, page)
        .await?;
    let views: Vec<PrivateMessageView> = messages.iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Serialize)]
struct ReadReceipt {
    id: i64,
    status: DeliveryStatus,
}

/// `POST /messages/{message_id}/read`: the recipient marks a private message
/// read, or a group member moves their read cursor.
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
