//! The records Parley stores and hands between actors, the store and the HTTP
//! layer. Plain data: no behaviour beyond formatting.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

/// A point in time as Unix milliseconds: how it is stored (BIGINT on both
/// backends, so one query text and one row type serve SQLite and Postgres)
/// and serialised as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T10:00:00.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl From<i64> for Timestamp {
    fn from(millis: i64) -> Self {
        Timestamp(millis)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// Who a user is, as carried around by sessions and messages: cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: i64,
    /// The name as registered (original case); shown to other users.
    pub username: Arc<str>,
}

/// A registered user as returned by registration.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub email: String,
    #[sqlx(try_from = "i64")]
    pub created_at: Timestamp,
}

/// What login needs to check a password and issue a token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    /// Tokens carry it; a password change bumps it, so older tokens stop working.
    pub token_generation: i64,
}

/// What token checks need to know about an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    pub token_generation: i64,
    pub deleted: bool,
}

impl AccountState {
    /// Whether a token of this password generation still works.
    pub fn accepts(&self, token_generation: i64) -> bool {
        !self.deleted && self.token_generation == token_generation
    }
}

/// The lifecycle of a private message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Stored; no recipient socket has it yet.
    Sent,
    /// Pushed to at least one of the recipient's sockets.
    Delivered,
    /// The recipient marked it read.
    Read,
}

impl DeliveryStatus {
    pub fn parse(value: &str) -> Option<DeliveryStatus> {
        match value {
            "sent" => Some(DeliveryStatus::Sent),
            "delivered" => Some(DeliveryStatus::Delivered),
            "read" => Some(DeliveryStatus::Read),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
        }
    }
}

impl TryFrom<String> for DeliveryStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        DeliveryStatus::parse(&value).ok_or_else(|| format!("unknown message status {value:?}"))
    }
}

/// One emoji on a message and who chose it (each user has at most one
/// reaction per message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: i64,
    /// Usernames, in the order they reacted.
    pub users: Vec<String>,
}

/// What happened to a message after it was sent, shown in every view of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// The message of the same conversation this one answers.
    pub reply_to: Option<i64>,
    /// When its content was last edited (earlier texts are not kept).
    pub edited_at: Option<Timestamp>,
    /// A tombstone: the content is gone, the id stays.
    pub deleted: bool,
    pub reactions: Vec<Reaction>,
}

impl Lifecycle {
    /// From the stored columns; `reactions` is the JSON text the writer keeps.
    pub fn from_columns(
        reply_to: Option<i64>,
        edited_at: Option<i64>,
        deleted_at: Option<i64>,
        reactions: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Lifecycle {
            reply_to,
            edited_at: edited_at.map(Timestamp),
            deleted: deleted_at.is_some(),
            reactions: match reactions {
                Some(json) => serde_json::from_str(json)?,
                None => Vec::new(),
            },
        })
    }
}

/// A stored private message, with both parties' names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateMessage {
    pub id: i64,
    pub sender: String,
    pub recipient: String,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    pub timestamp: Timestamp,
    pub status: DeliveryStatus,
    pub lifecycle: Lifecycle,
}

/// A stored group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessage {
    pub id: i64,
    pub group_id: i64,
    pub sender: String,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    pub timestamp: Timestamp,
    pub lifecycle: Lifecycle,
}

/// A member's role in a group, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A group as created.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GroupRecord {
    pub id: i64,
    pub name: String,
    pub description: String,
    #[sqlx(try_from = "i64")]
    pub created_at: Timestamp,
    /// Username of the creator, who is the group's owner.
    pub created_by: String,
}

/// A registered device. `login_status` is not stored: the device registry
/// fills it in from the sockets currently bound to the device.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeviceRecord {
    pub id: i64,
    pub device_id: String,
    pub device_name: String,
    pub device_type: String,
    #[sqlx(try_from = "i64")]
    pub registered_at: Timestamp,
    #[sqlx(try_from = "OptionalMillis")]
    pub last_seen: Option<Timestamp>,
    #[sqlx(skip)]
    pub login_status: bool,
}

/// Adapter so a nullable BIGINT column decodes into `Option<Timestamp>`.
#[derive(Debug, sqlx::Type)]
#[sqlx(transparent)]
pub struct OptionalMillis(Option<i64>);

impl From<OptionalMillis> for Option<Timestamp> {
    fn from(value: OptionalMillis) -> Self {
        value.0.map(Timestamp)
    }
}

/// Metadata of an uploaded file; the bytes live under the data dir, named by `file_id`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRecord {
    pub file_id: String,
    pub uploader_id: i64,
    /// The client's name reduced to its last path component; metadata only.
    pub filename: String,
    pub size: i64,
    #[sqlx(try_from = "i64")]
    pub upload_time: Timestamp,
}

/// Which page of a message list to read. Bounds are exclusive ids; the page
/// is always returned in ascending id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only messages with a smaller id.
    pub before: Option<i64>,
    /// Only messages with a larger id; when set, the page starts just above it
    /// (paging forward); otherwise the page ends at the newest message allowed.
    pub after: Option<i64>,
    /// How many messages at most (1..=500).
    pub limit: i64,
}

impl Page {
    pub const DEFAULT_LIMIT: i64 = 50;
    pub const MAX_LIMIT: i64 = 500;
}

/// One of the caller's groups, as `GET /groups` lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GroupSummary {
    pub id: i64,
    pub name: String,
    pub description: String,
    #[sqlx(try_from = "i64")]
    pub created_at: Timestamp,
    pub created_by: String,
    /// The caller's role: `owner`, `admin` or `member`.
    pub role: String,
    /// Messages from others above the caller's read cursor.
    pub unread: i64,
}

/// A message of either kind, as `sync` replays it: private messages have
/// `recipient` and `status`, group messages `group_id`.
#[derive(Debug, Clone)]
pub struct AnyMessage {
    pub id: i64,
    pub sender: String,
    pub recipient: Option<String>,
    pub group_id: Option<i64>,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    pub timestamp: Timestamp,
    pub status: Option<String>,
    /// The sequence value of its last change, if it changed after it was sent.
    pub change_id: Option<i64>,
    pub lifecycle: Lifecycle,
}

/// A message of either kind, typed by kind.
#[derive(Debug, Clone)]
pub enum KindedMessage {
    Private(PrivateMessage),
    Group(GroupMessage),
}

impl From<AnyMessage> for KindedMessage {
    fn from(m: AnyMessage) -> Self {
        match m.group_id {
            Some(group_id) => KindedMessage::Group(GroupMessage {
                id: m.id,
                group_id,
                sender: m.sender,
                content: m.content,
                message_type: m.message_type,
                content_type: m.content_type,
                timestamp: m.timestamp,
                lifecycle: m.lifecycle,
            }),
            // The schema gives every message either a group or a recipient.
            None => KindedMessage::Private(PrivateMessage {
                id: m.id,
                sender: m.sender,
                recipient: m.recipient.unwrap_or_default(),
                content: m.content,
                message_type: m.message_type,
                content_type: m.content_type,
                timestamp: m.timestamp,
                status: m
                    .status
                    .as_deref()
                    .and_then(DeliveryStatus::parse)
                    .unwrap_or(DeliveryStatus::Sent),
                lifecycle: m.lifecycle,
            }),
        }
    }
}

/// A full-text search: which messages may match, and which slice of the
/// ranked list to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Every one of them must be in a message (see [`crate::validate::search_words`]).
    pub words: Vec<String>,
    pub scope: SearchScope,
    /// Only messages with a smaller id: a client pins its result set with
    /// it, so that later pages do not shift as new messages arrive.
    pub before: Option<i64>,
    /// How many of the best matches to skip.
    pub offset: i64,
    /// How many matches at most.
    pub limit: i64,
}

/// Which messages a search looks through; each holds only what the caller
/// may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchScope {
    /// The user's private conversations, the groups they are in, and what
    /// they could read of groups they left.
    Visible { user: i64 },
    /// One private conversation (lower user id first).
    Conversation { user_lo: i64, user_hi: i64 },
    /// One group, up to and including `up_to` (a former member's bound).
    Group { group_id: i64, up_to: Option<i64> },
}

/// How much of a group's history a user may search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupReach {
    /// A member: all of it.
    Whole,
    /// A former member: what existed when they left.
    UpTo(i64),
    /// Never a member of a group that exists.
    Outsider,
    /// No such group (or one whose last member left, as for group history).
    NoSuchGroup,
}

/// A message found by a search, with its relevance (higher is better;
/// comparable only within one search, and not across backends).
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub message: AnyMessage,
    pub rank: f64,
}

/// Where a conversation stands in the caller's conversation list, which is
/// ordered by these fields, largest first. Every conversation has exactly one
/// position, so a page ends at a position and the next page starts strictly
/// below it: nothing is listed twice or skipped unless its activity changes
/// while the list is paged (then it moves above the cursor, and the client
/// learns of it from the message that moved it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ActivityPosition {
    /// The last message's time, or when the caller joined a group that has
    /// no messages yet, in Unix milliseconds.
    pub at: i64,
    /// The last message's id, or 0 when there is none. Breaks ties between
    /// conversations active in the same millisecond in the order their
    /// messages were stored (ids are unique across private and group).
    pub message_id: i64,
    /// The group's id for a group without messages, else 0: breaks ties
    /// between such groups, which have no message id to tell them apart.
    pub group_id: i64,
}

impl ActivityPosition {
    /// Above every real position: the first page.
    pub const TOP: ActivityPosition = ActivityPosition {
        at: i64::MAX,
        message_id: i64::MAX,
        group_id: i64::MAX,
    };
}

/// One entry of `GET /conversations`: a private conversation or a group of
/// the caller, with its newest message and what the caller has not read.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    pub position: ActivityPosition,
    /// Private: messages to the caller not yet `read`. Group: messages from
    /// others above the caller's read cursor (as `GET /groups` counts them).
    pub unread: i64,
    pub kind: ConversationKind,
}

#[derive(Debug, Clone)]
pub enum ConversationKind {
    Private {
        /// The other party's name as registered (kept after their account is
        /// deleted, like the messages they sent).
        peer: String,
        last_message: PrivateMessage,
    },
    Group {
        group_id: i64,
        name: String,
        /// The caller's role: `owner`, `admin` or `member`.
        role: String,
        /// `None` until someone writes in the group.
        last_message: Option<GroupMessage>,
    },
}

/// A page of the caller's conversations, newest activity first.
#[derive(Debug, Clone)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationSummary>,
    /// Whether conversations below the page's last position exist.
    pub more: bool,
}

impl ConversationPage {
    /// At most 100 conversations per page; 50 unless asked otherwise.
    pub const DEFAULT_LIMIT: i64 = 50;
    pub const MAX_LIMIT: i64 = 100;
}
