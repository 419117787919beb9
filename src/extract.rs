//! Request extractors that fail with the contract's error body: JSON bodies
//! whose errors name the offending field, paging parameters, and ids in paths.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{http::header, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use parley_actors::model::{ActivityPosition, ConversationPage, Page};
use parley_actors::ChatError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::MAX_JSON_BODY;
use crate::error::ApiError;

/// A JSON body of at most [`MAX_JSON_BODY`] bytes. Accepted with or without a
/// JSON content type. Errors: 413 over the limit; 400 for malformed JSON,
/// a body that is not an object, a missing field or a field of the wrong
/// type, with a detail naming the field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared_length.is_some_and(|length| length > MAX_JSON_BODY) {
                return Err(too_large().into());
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|err| ChatError::invalid(format!("body: {err}")))?;
                if body.len() + chunk.len() > MAX_JSON_BODY {
                    return Err(too_large().into());
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
    }
}

fn too_large() -> ChatError {
    ChatError::TooLarge(format!(
        "body: larger than the limit of {MAX_JSON_BODY} bytes"
    ))
}

/// Parses a JSON object, naming the field at fault on error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    match first {
        None => return Err(ChatError::invalid("body: expected a JSON object, got nothing").into()),
        Some(b'{') => {}
        Some(_) => return Err(ChatError::invalid("body: expected a JSON object").into()),
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let detail = if path == "." || inner.is_syntax() || inner.is_eof() {
            // Missing fields are reported at the object itself, with the
            // field's name in serde's own message.
            format!("body: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        ChatError::invalid(detail).into()
    })
}

/// Parses an id from a path segment, naming the parameter on error.
pub fn path_id(name: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ChatError::invalid(format!("{name}: must be a positive integer")).into())
}

/// `?before=&after=&limit=` on message lists (DESIGN.md section 2, "Paging").
pub struct Paging(pub Page);

#[derive(Deserialize)]
struct RawPaging {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

impl FromRequest for Paging {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(parse_paging(req.query_string()).map(Paging))
    }
}

fn parse_paging(query: &str) -> Result<Page, ApiError> {
    let raw = web::Query::<RawPaging>::from_query(query)
        .map_err(|err| ChatError::invalid(format!("query: {err}")))?
        .into_inner();
    let before = number("before", raw.before)?;
    let after = number("after", raw.after)?;
    if before.is_some_and(|id| id < 0) {
        return Err(ChatError::invalid("before: must not be negative").into());
    }
    if after.is_some_and(|id| id < 0) {
        return Err(ChatError::invalid("after: must not be negative").into());
    }
    Ok(Page {
        before,
        after,
        limit: limit(raw.limit, Page::DEFAULT_LIMIT, Page::MAX_LIMIT)?,
    })
}

/// An optional integer query parameter, naming it on error.
fn number(name: &str, value: Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| ChatError::invalid(format!("{name}: must be an integer")).into())
        })
        .transpose()
}

/// `limit` as every list reads it: `default` when absent, at least 1, and
/// read as `max` above it.
fn limit(value: Option<String>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = number("limit", value)?.unwrap_or(default);
    if limit < 1 {
        return Err(ChatError::invalid("limit: must be at least 1").into());
    }
    Ok(limit.min(max))
}

/// `?before=&limit=` on `GET /conversations`: `before` is a cursor the
/// previous page returned as `next_before` (see [`format_cursor`]).
pub struct ConversationPaging {
    /// Only conversations below this position; the top when absent.
    pub before: ActivityPosition,
    /// 1..=100.
    pub limit: i64,
}

#[derive(Deserialize)]
struct RawConversationPaging {
    before: Option<String>,
    limit: Option<String>,
}

impl FromRequest for ConversationPaging {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(parse_conversation_paging(req.query_string()))
    }
}

fn parse_conversation_paging(query: &str) -> Result<ConversationPaging, ApiError> {
    let raw = web::Query::<RawConversationPaging>::from_query(query)
        .map_err(|err| ChatError::invalid(format!("query: {err}")))?
        .into_inner();
    let before = match raw.before {
        None => ActivityPosition::TOP,
        Some(cursor) => parse_cursor(&cursor).ok_or_else(|| {
            ChatError::invalid("before: must be a next_before value from an earlier page")
        })?,
    };
    Ok(ConversationPaging {
        before,
        limit: limit(
            raw.limit,
            ConversationPage::DEFAULT_LIMIT,
            ConversationPage::MAX_LIMIT,
        )?,
    })
}

/// The cursor that names a position in the conversation list:
/// `<milliseconds>.<message id>.<group id>`. Clients treat it as opaque;
/// it is spelled out so that a cursor stays readable in logs.
pub fn format_cursor(position: ActivityPosition) -> String {
    format!(
        "{}.{}.{}",
        position.at, position.message_id, position.group_id
    )
}

/// The inverse of [`format_cursor`]; `None` for anything it cannot have made.
fn parse_cursor(cursor: &str) -> Option<ActivityPosition> {
    let mut parts = cursor.split('.').map(|part| {
        // `parse` accepts a leading `+`, which `format_cursor` never writes.
        part.bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| part.parse::<i64>().ok())
            .flatten()
    });
    let position = ActivityPosition {
        at: parts.next()??,
        message_id: parts.next()??,
        group_id: parts.next()??,
    };
    parts.next().is_none().then_some(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: Option<i64>,
    }

    fn detail(result: Result<Body, ApiError>) -> String {
        result.unwrap_err().0.to_string()
    }

    #[test]
    fn json_errors_name_the_field() {
        assert!(detail(parse_json(br#"{"count":1}"#)).contains("name"));
        assert!(detail(parse_json(br#"{"name":5}"#)).starts_with("name:"));
        assert!(detail(parse_json(br#"{"name":"a","count":"x"}"#)).starts_with("count:"));
        assert!(detail(parse_json(br#"["a", 1]"#)).contains("object"));
        assert!(detail(parse_json(b"{nope")).starts_with("body:"));
    }

    #[test]
    fn paging_follows_the_contract() {
        let page = parse_paging("").unwrap();
        assert_eq!((page.before, page.after, page.limit), (None, None, 50));
        let page = parse_paging("before=10&limit=900").unwrap();
        assert_eq!((page.before, page.limit), (Some(10), 500));
        assert_eq!(parse_paging("after=0").unwrap().after, Some(0));
        for bad in ["limit=0", "limit=-1", "limit=abc", "before=-5", "after=1.5"] {
            assert_eq!(parse_paging(bad).unwrap_err().0.status(), 400, "{bad}");
        }
    }

    #[test]
    fn conversation_cursors_read_back_what_they_wrote_and_nothing_else() {
        let position = ActivityPosition {
            at: 1_795_000_000_123,
            message_id: 42,
            group_id: 0,
        };
        assert_eq!(parse_cursor(&format_cursor(position)), Some(position));
        let top = parse_conversation_paging("").unwrap();
        assert_eq!((top.before, top.limit), (ActivityPosition::TOP, 50));
        assert_eq!(parse_conversation_paging("limit=900").unwrap().limit, 100);
        for bad in [
            "before=",
            "before=1.2",
            "before=1.2.3.4",
            "before=1.-2.3",
            "before=1.+2.3",
            "before=a.b.c",
            "before=1..3",
            "limit=0",
            "limit=x",
        ] {
            assert_eq!(
                parse_conversation_paging(bad).err().map(|e| e.0.status()),
                Some(400),
                "{bad}"
            );
        }
    }
}
