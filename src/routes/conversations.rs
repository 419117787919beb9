//! `GET /conversations`: the caller's private conversations and groups in
//! one list, newest activity first, each with its last message and unread
//! count, read from the store a page at a time.

use actix_web::{web, HttpResponse};
use parley_actors::model::{ConversationKind, ConversationSummary, Timestamp};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::{format_cursor, ConversationPaging};
use crate::routes::groups::GroupMessageView;
use crate::routes::messages::PrivateMessageView;
use crate::schema;
use crate::state::AppState;

/// One conversation of the list, told apart by `kind`. Its last message is
/// shown as that conversation's history shows it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = Conversation)]
pub enum ConversationView<'a> {
    Private(PrivateConversation<'a>),
    Group(GroupConversation<'a>),
}

/// A private conversation: a user the caller sent a message to or received
/// one from.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateConversation<'a> {
    /// Always `private`.
    #[schema(schema_with = private_kind)]
    kind: &'static str,
    /// The other party (kept when their account is deleted).
    peer: &'a str,
    last_message: PrivateMessageView<'a>,
    /// Messages to the caller that are not `read` yet.
    #[schema(minimum = 0)]
    unread: i64,
    /// The last message's time.
    #[schema(value_type = String, format = DateTime)]
    last_activity: Timestamp,
}

/// A group the caller is a member of.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupConversation<'a> {
    /// Always `group`.
    #[schema(schema_with = group_kind)]
    kind: &'static str,
    group_id: i64,
    name: &'a str,
    /// The caller's role.
    #[schema(value_type = schema::Role)]
    role: &'a str,
    /// Null until someone writes in the group.
    #[schema(required = true)]
    last_message: Option<GroupMessageView<'a>>,
    /// Messages from others above the caller's read cursor (as `GET /groups`).
    #[schema(minimum = 0)]
    unread: i64,
    /// The last message's time, or when the caller joined a group without
    /// messages.
    #[schema(value_type = String, format = DateTime)]
    last_activity: Timestamp,
}

const PRIVATE: &str = "private";
const GROUP: &str = "group";

fn private_kind() -> impl Into<RefOr<Schema>> {
    one_string(PRIVATE)
}

fn group_kind() -> impl Into<RefOr<Schema>> {
    one_string(GROUP)
}

/// A string schema allowing `value` only.
fn one_string(value: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([value]))
}

impl<'a> From<&'a ConversationSummary> for ConversationView<'a> {
    fn from(entry: &'a ConversationSummary) -> Self {
        let last_activity = Timestamp(entry.position.at);
        match &entry.kind {
            ConversationKind::Private { peer, last_message } => {
                ConversationView::Private(PrivateConversation {
                    kind: PRIVATE,
                    peer,
                    last_message: last_message.into(),
                    unread: entry.unread,
                    last_activity,
                })
            }
            ConversationKind::Group {
                group_id,
                name,
                role,
                last_message,
            } => ConversationView::Group(GroupConversation {
                kind: GROUP,
                group_id: *group_id,
                name,
                role,
                last_message: last_message.as_ref().map(Into::into),
                unread: entry.unread,
                last_activity,
            }),
        }
    }
}

/// A page of the conversation list.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConversationList)]
pub struct ConversationListView<'a> {
    /// Newest activity first.
    conversations: Vec<ConversationView<'a>>,
    /// Whether older conversations follow this page.
    more: bool,
    /// Pass as `?before=` for the next page; null when `more` is false.
    #[schema(required = true, example = "1795000000123.42.0")]
    next_before: Option<String>,
}

/// The caller's private conversations and groups, newest activity first:
/// a conversation's activity is its last message, or for a group without
/// messages the time the caller joined it. Page with `?before=` set to the
/// previous page's `next_before`.
#[utoipa::path(
    get,
    path = "/conversations",
    summary = "The caller's conversations and groups, newest activity first",
    operation_id = "list_conversations",
    tag = "conversations",
    security(("bearer" = [])),
    params(schema::ConversationPagingParams),
    responses(
        (status = 200, description = "One page of the caller's conversations", body = ConversationListView),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn list(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    paging: ConversationPaging,
) -> ApiResult<HttpResponse> {
    let page = state
        .chat
        .store()
        .conversations(user.id, paging.before, paging.limit)
        .await?;
    let next_before = page
        .conversations
        .last()
        .filter(|_| page.more)
        .map(|entry| format_cursor(entry.position));
    Ok(HttpResponse::Ok().json(ConversationListView {
        conversations: page.conversations.iter().map(Into::into).collect(),
        more: page.more,
        next_before,
    }))
}
