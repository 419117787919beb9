//! `GET /search`: full-text search over the messages the caller may see,
//! best match first. The indexes are kept by the database (migration
//! `0003_search.sql`); this handler checks the input and the caller's
//! reach, and reads through the store.

use actix_web::{web, HttpRequest, HttpResponse};
use parley_actors::model::{
    DeliveryStatus, GroupReach, KindedMessage, Reaction, Search, SearchScope, Timestamp,
};
use parley_actors::{validate, ChatError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::path_id;
use crate::schema;
use crate::state::AppState;

/// Results per page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 20;
/// Results per page at most; a larger `limit` is read as this.
pub const MAX_LIMIT: i64 = 100;
/// How far into the ranked list a client may page: deeper pages cost a
/// sort of every match above them, and nobody reads that far.
pub const MAX_OFFSET: i64 = 1000;

/// A private message found by a search: as history shows it, with its rank.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrivateSearchHit<'a> {
    id: i64,
    content: &'a str,
    sender: &'a str,
    recipient: &'a str,
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    #[schema(value_type = schema::DeliveryStatus)]
    status: DeliveryStatus,
    /// The message of its conversation it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<i64>,
    /// When the sender last edited it (it is found by its current text only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    edited_at: Option<Timestamp>,
    /// Present when anyone reacted.
    #[serde(skip_serializing_if = "<[Reaction]>::is_empty")]
    #[schema(value_type = Vec<schema::Reaction>)]
    reactions: &'a [Reaction],
    /// Relevance, higher is better; comparable within one search only.
    rank: f64,
}

/// A group message found by a search: as history shows it, with its group
/// and its rank.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSearchHit<'a> {
    id: i64,
    group_id: i64,
    content: &'a str,
    sender: &'a str,
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
    message_type: &'a str,
    /// The message of its conversation it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<i64>,
    /// When the sender last edited it (it is found by its current text only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    edited_at: Option<Timestamp>,
    /// Present when anyone reacted.
    #[serde(skip_serializing_if = "<[Reaction]>::is_empty")]
    #[schema(value_type = Vec<schema::Reaction>)]
    reactions: &'a [Reaction],
    /// Relevance, higher is better; comparable within one search only.
    rank: f64,
}

/// One result: a private or a group message.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SearchResult<'a> {
    Private(PrivateSearchHit<'a>),
    Group(GroupSearchHit<'a>),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchResults<'a> {
    /// Best match first; among equal ranks, newest first.
    results: Vec<SearchResult<'a>>,
    /// Whether more results follow this page (at `offset + limit`).
    more: bool,
}

impl<'a> SearchResult<'a> {
    /// A found message, typed by kind as every other view of it is.
    fn of(message: &'a KindedMessage, rank: f64) -> Self {
        match message {
            KindedMessage::Private(m) => SearchResult::Private(PrivateSearchHit {
                id: m.id,
                content: &m.content,
                sender: &m.sender,
                recipient: &m.recipient,
                timestamp: m.timestamp,
                status: m.status,
                reply_to: m.lifecycle.reply_to,
                edited_at: m.lifecycle.edited_at,
                reactions: &m.lifecycle.reactions,
                rank,
            }),
            KindedMessage::Group(m) => SearchResult::Group(GroupSearchHit {
                id: m.id,
                group_id: m.group_id,
                content: &m.content,
                sender: &m.sender,
                timestamp: m.timestamp,
                message_type: &m.message_type,
                reply_to: m.lifecycle.reply_to,
                edited_at: m.lifecycle.edited_at,
                reactions: &m.lifecycle.reactions,
                rank,
            }),
        }
    }
}

/// The query string as sent; each value is checked by [`parse`] so that
/// its error names it.
#[derive(Deserialize)]
struct RawSearch {
    q: Option<String>,
    with: Option<String>,
    group_id: Option<String>,
    before: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

/// The checked query; `with` still to be looked up.
struct SearchRequest {
    words: Vec<String>,
    with: Option<String>,
    group_id: Option<i64>,
    before: Option<i64>,
    offset: i64,
    limit: i64,
}

fn parse(query: &str) -> Result<SearchRequest, ApiError> {
    let raw = web::Query::<RawSearch>::from_query(query)
        .map_err(|err| ChatError::invalid(format!("query: {err}")))?
        .into_inner();
    let number = |name: &str, value: Option<String>| -> Result<Option<i64>, ApiError> {
        value
            .map(|text| {
                text.parse::<i64>()
                    .map_err(|_| ChatError::invalid(format!("{name}: must be an integer")).into())
            })
            .transpose()
    };
    let q = raw.q.ok_or_else(|| ChatError::invalid("q: is required"))?;
    let words = validate::search_words(&q)?;
    if raw.with.is_some() && raw.group_id.is_some() {
        return Err(ChatError::invalid("with: cannot be combined with group_id").into());
    }
    let group_id = raw
        .group_id
        .map(|text| path_id("group_id", &text))
        .transpose()?;
    let before = number("before", raw.before)?;
    if before.is_some_and(|id| id < 0) {
        return Err(ChatError::invalid("before: must not be negative").into());
    }
    let offset = number("offset", raw.offset)?.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ChatError::invalid(format!("offset: must be 0-{MAX_OFFSET}")).into());
    }
    let limit = number("limit", raw.limit)?.unwrap_or(DEFAULT_LIMIT);
    if limit < 1 {
        return Err(ChatError::invalid("limit: must be at least 1").into());
    }
    Ok(SearchRequest {
        words,
        with: raw.with,
        group_id,
        before,
        offset,
        limit: limit.min(MAX_LIMIT),
    })
}

/// Searches the messages the caller may see: their private conversations,
/// their groups, and of a group they left what they could read until then.
/// Every word of `q` must be in a message (case-insensitively); results are
/// ranked by relevance.
#[utoipa::path(
    get,
    path = "/search",
    summary = "Full-text search over the caller's messages, best match first",
    operation_id = "search_messages",
    tag = "messages",
    security(("bearer" = [])),
    params(schema::SearchParams),
    responses(
        (status = 200, description = "One page of results, best match first", body = SearchResults),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(caller = %user.username))]
pub async fn search(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    request: HttpRequest,
) -> ApiResult<HttpResponse> {
    let wanted = parse(request.query_string())?;
    let scope = if let Some(name) = &wanted.with {
        let other = state
            .chat
            .user(name)
            .await?
            .ok_or_else(|| ChatError::not_found("with: no such user"))?;
        if other.id == user.id {
            return Err(ChatError::invalid("with: must be another user").into());
        }
        SearchScope::Conversation {
            user_lo: user.id.min(other.id),
            user_hi: user.id.max(other.id),
        }
    } else if let Some(group_id) = wanted.group_id {
        let up_to = match state.chat.store().group_reach(group_id, user.id).await? {
            GroupReach::Whole => None,
            GroupReach::UpTo(id) => Some(id),
            GroupReach::Outsider => {
                return Err(
                    ChatError::forbidden("group_id: you are not a member of this group").into(),
                )
            }
            GroupReach::NoSuchGroup => {
                return Err(ChatError::not_found("group_id: no such group").into())
            }
        };
        SearchScope::Group { group_id, up_to }
    } else {
        SearchScope::Visible { user: user.id }
    };
    let limit = wanted.limit;
    let mut hits = state
        .chat
        .store()
        .search(&Search {
            words: wanted.words,
            scope,
            before: wanted.before,
            offset: wanted.offset,
            // One more than asked: whether it exists is `more`.
            limit: limit + 1,
        })
        .await?;
    let more = hits.len() as i64 > limit;
    hits.truncate(limit as usize);
    let found: Vec<(KindedMessage, f64)> = hits
        .into_iter()
        .map(|hit| (hit.message.into(), hit.rank))
        .collect();
    let results = found
        .iter()
        .map(|(message, rank)| SearchResult::of(message, *rank))
        .collect();
    Ok(HttpResponse::Ok().json(SearchResults { results, more }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(query: &str) -> u16 {
        match parse(query) {
            Ok(_) => 200,
            Err(error) => error.0.status(),
        }
    }

    #[test]
    fn the_query_follows_the_documented_ranges() {
        let request = parse("q=hello").unwrap();
        assert_eq!(
            (request.offset, request.limit, request.before),
            (0, DEFAULT_LIMIT, None)
        );
        assert_eq!(parse("q=a&limit=500").unwrap().limit, MAX_LIMIT);
        assert_eq!(parse("q=a&offset=1000").unwrap().offset, 1000);
        assert_eq!(parse("q=a&group_id=7").unwrap().group_id, Some(7));
        for good in ["q=a&before=0", "q=a&limit=1", "q=a&with=bob"] {
            assert_eq!(status(good), 200, "{good}");
        }
        for bad in [
            "",
            "q=",
            "q=%20%20",
            "q=a&limit=0",
            "q=a&limit=x",
            "q=a&offset=-1",
            "q=a&offset=1001",
            "q=a&before=-1",
            "q=a&before=1.5",
            "q=a&group_id=0",
            "q=a&group_id=abc",
            "q=a&with=bob&group_id=1",
        ] {
            assert_eq!(status(bad), 400, "{bad}");
        }
    }
}
