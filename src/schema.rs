//! The schemas and responses the route handlers' OpenAPI annotations
//! (`#[utoipa::path]`) share: the records the actors hand back (which live
//! in the `parley-actors` crate), the error body, the shared error responses
//! and the common parameters. [`crate::openapi`] assembles the document
//! from the handlers and these.

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToResponse, ToSchema};

// ---- Shared schemas ----------------------------------------------------------

/// The body of every error response, REST or WebSocket (DESIGN.md §4).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// Human-readable; for bad input it starts with the offending field's name.
    #[schema(example = "content: must not be empty")]
    pub detail: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599, example = 400)]
    pub code: u16,
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// The lifecycle of a private message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Stored; no recipient socket has it yet.
    Sent,
    /// Pushed to at least one of the recipient's sockets.
    Delivered,
    /// The recipient marked it read.
    Read,
}

/// One emoji on a message and who chose it (one reaction per user per message).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reaction {
    #[schema(example = "👍")]
    emoji: String,
    #[schema(minimum = 1)]
    count: i64,
    /// Usernames, in the order they reacted.
    users: Vec<String>,
}

/// A member's role in a group.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

/// `token_type` of an access token: always `bearer`.
pub fn bearer_token_type() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["bearer"]))
}

/// Bytes of any kind (a download, a Swagger UI asset).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// The multipart form of `POST /files/upload` (other fields are skipped).
#[derive(ToSchema)]
pub struct FileUpload {
    /// The file's bytes; its file name is kept as metadata.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

// ---- Records the actors return (defined in parley-actors) ---------------------

/// A registered user (`model::UserRecord`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: i64,
    /// As registered (original case).
    pub username: String,
    pub email: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A group as created (`model::GroupRecord`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub description: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The creator's username; the creator is the group's owner.
    pub created_by: String,
}

/// One of the caller's groups (`model::GroupSummary`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSummary {
    pub id: i64,
    pub name: String,
    pub description: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_by: String,
    /// The caller's role.
    pub role: Role,
    /// Messages from others above the caller's read cursor.
    #[schema(minimum = 0)]
    pub unread: i64,
}

/// A group member (`room::MemberView`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub username: String,
    pub role: Role,
    #[schema(format = DateTime)]
    pub joined_at: String,
}

/// A registered device with its live state (`model::DeviceRecord`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: i64,
    pub device_id: String,
    pub device_name: String,
    pub device_type: String,
    #[schema(format = DateTime)]
    pub registered_at: String,
    /// When a socket bound to the device last opened or closed; null until then.
    #[schema(format = DateTime, required = true)]
    pub last_seen: Option<String>,
    /// Whether a socket is bound to the device now.
    pub login_status: bool,
}

// ---- Parameters ------------------------------------------------------------------

/// History paging (DESIGN.md §2 "Paging"): no cursor gives the newest
/// `limit` messages; the page is always in ascending id.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PagingParams {
    /// Only messages with a smaller id.
    #[param(minimum = 0, nullable = false)]
    pub before: Option<i64>,
    /// Only messages with a larger id, starting just above it (`0`: from the first).
    #[param(minimum = 0, nullable = false)]
    pub after: Option<i64>,
    /// How many at most: default 50; above 500 is read as 500.
    #[param(minimum = 1, nullable = false)]
    pub limit: Option<i64>,
}

/// `GET /search` (see the operation's description).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The words to find, all of them, case-insensitively: 1–200 characters
    /// with at least one letter or digit. Anything else only separates
    /// words; no search syntax is read.
    #[param(min_length = 1, max_length = 200, example = "lunch friday")]
    pub q: String,
    /// Only the private conversation with this user (case-insensitive).
    #[param(nullable = false)]
    pub with: Option<String>,
    /// Only this group (a member, or a former member for what they saw);
    /// not together with `with`.
    #[param(minimum = 1, nullable = false)]
    pub group_id: Option<i64>,
    /// Only messages with a smaller id: pins the result set while paging.
    #[param(minimum = 0, nullable = false)]
    pub before: Option<i64>,
    /// How many of the best results to skip: default 0, at most 1000.
    #[param(minimum = 0, maximum = 1000, nullable = false)]
    pub offset: Option<i64>,
    /// How many results at most: default 20; above 100 is read as 100.
    #[param(minimum = 1, nullable = false)]
    pub limit: Option<i64>,
}

/// Conversation-list paging: no cursor gives the newest `limit`
/// conversations; `before` continues below the previous page.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationPagingParams {
    /// The previous page's `next_before`.
    #[param(nullable = false, example = "1795000000123.42.0")]
    pub before: Option<String>,
    /// How many at most: default 50; above 100 is read as 100.
    #[param(minimum = 1, nullable = false)]
    pub limit: Option<i64>,
}

/// A group in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GroupIdParam {
    /// The group's id.
    #[param(minimum = 1)]
    pub group_id: i64,
}

// ---- Error responses -----------------------------------------------------------

macro_rules! error_responses {
    ($($name:ident => $description:literal),* $(,)?) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description, stringify!($name)))
            }
        }
    )*};
}

error_responses! {
    BadRequest => "Bad input: malformed JSON, a missing field or one of the wrong type, \
        a value out of range; `detail` starts with the field's name",
    Unauthorized => "Missing, malformed, expired or revoked credentials",
    Forbidden => "The caller may not do this",
    NotFound => "No such resource (or it is hidden from the caller)",
    Conflict => "Clashes with existing state",
    PayloadTooLarge => "The body or file is above its limit",
    TooManyRequests => "Rate limited; retry after `Retry-After` seconds",
    InternalError => "A fault in the server; the detail says nothing more",
    Unavailable => "The database cannot be reached right now",
    BusyOrUnavailable => "The server is too busy to check passwords right now (with \
        `Retry-After`: it refused at once rather than keep the request waiting), or the \
        database cannot be reached",
}

fn error_response(description: &str, name: &str) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    let retry_after = match name {
        "TooManyRequests" => Some("Seconds until a retry will work"),
        "BusyOrUnavailable" => Some(
            "When the server was too busy: seconds until a retry may work (an estimate of \
            when the password checks now waiting will have finished)",
        ),
        _ => None,
    };
    if let Some(description) = retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                )
                .description(Some(description))
                .build(),
        );
    }
    response.build().into()
}
