//! The WebSocket wire protocol of `/ws/chat` (DESIGN.md section 3): what a
//! client may send and what the server pushes. Only (de)serialisation lives
//! here; the session actor decides what a frame means.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::error::{ChatError, ChatResult};
use crate::model::{
    AnyMessage, DeliveryStatus, GroupMessage, Lifecycle, PrivateMessage, Reaction, Timestamp,
};

/// A client frame as it arrives: one flat struct so a frame is parsed in a
/// single pass (no buffering as an internally tagged enum would need), then
/// checked into a [`ClientFrame`].
#[derive(Debug, Deserialize)]
struct RawClientFrame {
    #[serde(rename = "type")]
    kind: String,
    recipient: Option<String>,
    group_id: Option<i64>,
    content: Option<String>,
    message_type: Option<String>,
    content_type: Option<String>,
    client_id: Option<String>,
    message_id: Option<i64>,
    since: Option<i64>,
    reply_to: Option<i64>,
}

/// Where a message or typing notice goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// A private conversation with this user (name as the client wrote it).
    User(String),
    Group(i64),
}

/// A message a client sends over the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendMessage {
    pub to: Conversation,
    pub message: MessageFields,
}

/// What a sender writes in a message, over the socket or REST, before it is
/// checked and its defaults are filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFields {
    pub content: String,
    /// Defaults to [`DEFAULT_MESSAGE_TYPE`].
    pub message_type: Option<String>,
    /// Defaults to [`DEFAULT_CONTENT_TYPE`].
    pub content_type: Option<String>,
    /// The client's idempotency key: a resend with the same key is stored once.
    pub client_id: Option<String>,
    /// The message of the same conversation this one answers.
    pub reply_to: Option<i64>,
}

/// A checked client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Message(SendMessage),
    Typing(Conversation),
    Read { message_id: i64 },
    Sync { since: i64 },
}

pub const DEFAULT_MESSAGE_TYPE: &str = "text";
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// A frame that could not be understood, with the client's `client_id` when
/// one could still be read, so the client can match the error to its send.
#[derive(Debug)]
pub struct FrameError {
    pub error: ChatError,
    pub client_id: Option<String>,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let raw: RawClientFrame = serde_json::from_str(text).map_err(|err| FrameError {
            error: ChatError::invalid(format!("malformed frame: {err}")),
            client_id: salvage_client_id(text),
        })?;
        let client_id = raw.client_id.clone();
        raw.check().map_err(|error| FrameError { error, client_id })
    }
}

fn salvage_client_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct OnlyClientId {
        client_id: Option<String>,
    }
    serde_json::from_str::<OnlyClientId>(text)
        .ok()
        .and_then(|frame| frame.client_id)
}

impl RawClientFrame {
    fn check(self) -> ChatResult<ClientFrame> {
        match self.kind.as_str() {
            "message" => Ok(ClientFrame::Message(SendMessage {
                to: conversation(self.recipient, self.group_id)?,
                message: MessageFields {
                    content: self
                        .content
                        .ok_or_else(|| ChatError::invalid("content: missing field"))?,
                    message_type: self.message_type,
                    content_type: self.content_type,
                    client_id: self.client_id,
                    reply_to: self.reply_to,
                },
            })),
            "typing" => Ok(ClientFrame::Typing(conversation(
                self.recipient,
                self.group_id,
            )?)),
            "read" => Ok(ClientFrame::Read {
                message_id: self
                    .message_id
                    .ok_or_else(|| ChatError::invalid("message_id: missing field"))?,
            }),
            "sync" => {
                let since = self
                    .since
                    .ok_or_else(|| ChatError::invalid("since: missing field"))?;
                if since < 0 {
                    return Err(ChatError::invalid("since: must not be negative"));
                }
                Ok(ClientFrame::Sync { since })
            }
            other => Err(ChatError::invalid(format!(
                "type: unknown frame type {other:?}; expected message, typing, read or sync"
            ))),
        }
    }
}

fn conversation(recipient: Option<String>, group_id: Option<i64>) -> ChatResult<Conversation> {
    match (recipient, group_id) {
        (Some(recipient), None) => Ok(Conversation::User(recipient)),
        (None, Some(group_id)) => Ok(Conversation::Group(group_id)),
        (None, None) => Err(ChatError::invalid(
            "recipient: missing field (or group_id for a group)",
        )),
        (Some(_), Some(_)) => Err(ChatError::invalid(
            "recipient: give either recipient or group_id, not both",
        )),
    }
}

/// Everything the server pushes. Serialised once per event with [`encode`],
/// however many sockets receive it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Message(MessageFrame<'a>),
    /// A message was edited, deleted or reacted to: its whole new state, to
    /// everyone who can see it (and replayed by `sync`).
    #[serde(rename = "message_updated")]
    MessageUpdated(MessageFrame<'a>),
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        id: i64,
        timestamp: Timestamp,
        status: DeliveryStatus,
    },
    Status {
        user: &'a str,
        status: Presence,
        timestamp: Timestamp,
    },
    Receipt {
        message_id: i64,
        user: &'a str,
        status: DeliveryStatus,
        timestamp: Timestamp,
    },
    Typing {
        user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        recipient: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group_id: Option<i64>,
    },
    /// Someone joined a group; to its members, the newcomer included.
    #[serde(rename = "member_added")]
    MemberAdded {
        group_id: i64,
        user: &'a str,
        role: &'static str,
        by: &'a str,
        timestamp: Timestamp,
    },
    /// Someone left or was removed from a group; to the members left and
    /// to the one who went (`by` is themself when they left).
    #[serde(rename = "member_removed")]
    MemberRemoved {
        group_id: i64,
        user: &'a str,
        by: &'a str,
        timestamp: Timestamp,
    },
    /// A member's role changed; to every member. A transfer of ownership
    /// is two of these: the new owner's and the old owner's (now admin).
    #[serde(rename = "role_changed")]
    RoleChanged {
        group_id: i64,
        user: &'a str,
        role: &'static str,
        by: &'a str,
        timestamp: Timestamp,
    },
    Synced {
        last_id: i64,
        /// True when the replay stopped at its size limit: sync again from `last_id`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        more: bool,
    },
    Error {
        detail: &'a str,
        code: u16,
        timestamp: Timestamp,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
    },
}

/// A `message` frame: private (with `recipient` and `status`) or group (with
/// `group_id`); what happened to it since it was sent is in [`Changes`].
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MessageFrame<'a> {
    Private {
        id: i64,
        sender: &'a str,
        recipient: &'a str,
        content: &'a str,
        timestamp: Timestamp,
        message_type: &'a str,
        content_type: &'a str,
        status: DeliveryStatus,
        #[serde(flatten)]
        changes: Changes<'a>,
    },
    Group {
        id: i64,
        group_id: i64,
        sender: &'a str,
        content: &'a str,
        timestamp: Timestamp,
        message_type: &'a str,
        content_type: &'a str,
        #[serde(flatten)]
        changes: Changes<'a>,
    },
}

/// A message's [`Lifecycle`] on the wire: each field only when set, so a
/// plain message's frame is as it always was.
#[derive(Debug, Serialize)]
pub struct Changes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "<[Reaction]>::is_empty")]
    pub reactions: &'a [Reaction],
    /// On `message_updated` frames and replays of changed messages: the
    /// change's place in the id sequence, for the client's `sync` cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_id: Option<i64>,
}

impl<'a> Changes<'a> {
    pub fn of(lifecycle: &'a Lifecycle, change_id: Option<i64>) -> Self {
        Changes {
            reply_to: lifecycle.reply_to,
            edited_at: lifecycle.edited_at,
            deleted: lifecycle.deleted,
            reactions: &lifecycle.reactions,
            change_id,
        }
    }
}

impl<'a> From<&'a PrivateMessage> for MessageFrame<'a> {
    fn from(m: &'a PrivateMessage) -> Self {
        MessageFrame::Private {
            id: m.id,
            sender: &m.sender,
            recipient: &m.recipient,
            content: &m.content,
            timestamp: m.timestamp,
            message_type: &m.message_type,
            content_type: &m.content_type,
            status: m.status,
            changes: Changes::of(&m.lifecycle, None),
        }
    }
}

impl<'a> MessageFrame<'a> {
    /// The frame for a message of either kind, with the status to show.
    pub fn of(m: &'a AnyMessage, status: Option<DeliveryStatus>) -> Self {
        let changes = Changes::of(&m.lifecycle, m.change_id);
        match m.group_id {
            Some(group_id) => MessageFrame::Group {
                id: m.id,
                group_id,
                sender: &m.sender,
                content: &m.content,
                timestamp: m.timestamp,
                message_type: &m.message_type,
                content_type: &m.content_type,
                changes,
            },
            // The schema gives every message either a group or a recipient.
            None => MessageFrame::Private {
                id: m.id,
                sender: &m.sender,
                recipient: m.recipient.as_deref().unwrap_or_default(),
                content: &m.content,
                timestamp: m.timestamp,
                message_type: &m.message_type,
                content_type: &m.content_type,
                status: status.unwrap_or(DeliveryStatus::Sent),
                changes,
            },
        }
    }
}

impl<'a> From<&'a GroupMessage> for MessageFrame<'a> {
    fn from(m: &'a GroupMessage) -> Self {
        MessageFrame::Group {
            id: m.id,
            group_id: m.group_id,
            sender: &m.sender,
            content: &m.content,
            timestamp: m.timestamp,
            message_type: &m.message_type,
            content_type: &m.content_type,
            changes: Changes::of(&m.lifecycle, None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

/// Serialises a frame once into a cheaply clonable text payload.
pub fn encode(frame: &ServerFrame<'_>) -> ByteString {
    // Serialising these plain structs into a String cannot fail.
    ByteString::from(serde_json::to_string(frame).expect("server frames always serialise"))
}

/// The `error` frame for a failed request.
pub fn error_frame(error: &ChatError, client_id: Option<&str>) -> ByteString {
    let detail = error.to_string();
    encode(&ServerFrame::Error {
        detail: &detail,
        code: error.status(),
        timestamp: Timestamp::now(),
        client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_missing_content_names_the_field_and_keeps_the_client_id() {
        let err = ClientFrame::parse(r#"{"type":"message","recipient":"bob","client_id":"c9"}"#)
            .unwrap_err();
        assert!(err.error.to_string().starts_with("content:"));
        assert_eq!(err.client_id.as_deref(), Some("c9"));
    }

    #[test]
    fn a_malformed_frame_is_invalid() {
        let err = ClientFrame::parse("{not json").unwrap_err();
        assert_eq!(err.error.status(), 400);
        let err = ClientFrame::parse(r#"{"type":"dance"}"#).unwrap_err();
        assert!(err.error.to_string().starts_with("type:"));
    }

    #[test]
    fn frames_serialise_with_their_type_tag() {
        let text = encode(&ServerFrame::Synced {
            last_id: 57,
            more: false,
        });
        assert_eq!(&*text, r#"{"type":"synced","last_id":57}"#);
        let text = encode(&ServerFrame::Typing {
            user: "alice",
            recipient: None,
            group_id: Some(7),
        });
        assert_eq!(&*text, r#"{"type":"typing","user":"alice","group_id":7}"#);
    }
}
