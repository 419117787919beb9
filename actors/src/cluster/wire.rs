//! What nodes say to each other through the engine: a JSON header line, and
//! for a push the frame's bytes after it, as encoded once by the sender (so a
//! frame is never re-encoded per node). Written and read only by
//! [`super::relay`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use super::CloseCause;
use crate::hub::{Push, PushedMessage};
use crate::metrics::MessageKind;

/// Identifies one running node (random at start).
pub type NodeId = u64;

/// One event on the engine, as sent by node `from`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// The frame after the header goes to every socket of `users`, except
    /// the sender's socket `origin` on node `from`.
    Deliver {
        users: Vec<i64>,
        origin: Option<u64>,
        message: Option<WireMessage>,
    },
    Close {
        user: i64,
        cause: CloseCause,
    },
    Account {
        user: i64,
        token_generation: i64,
        deleted: bool,
    },
    Revoked {
        jti: String,
        expires_at: i64,
    },
    ForgetName {
        key: String,
    },
    Group {
        group_id: i64,
    },
    /// `user`'s first socket on `from` opened (`online`), or the last closed.
    Presence {
        user: i64,
        username: String,
        online: bool,
    },
    /// A device's first socket on `from` opened (`connected`), or its last closed.
    DeviceLink {
        device: i64,
        connected: bool,
    },
    DeviceRemoved {
        device: i64,
    },
    /// Every user with a socket open on `from`, and every device with a
    /// socket bound to it there (one chunk of them).
    Roster {
        users: Vec<(i64, String)>,
        #[serde(default)]
        devices: Vec<i64>,
    },
    /// A node (re)joined: the others answer with their rosters.
    Hello,
    /// The sender is alive (a heartbeat).
    Alive,
    /// Sent by a node to itself through the engine (see `Broker::flush`).
    Marker {
        marker: u64,
    },
}

/// A message frame's facts a socket needs ([`PushedMessage`] on the wire).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireMessage {
    pub id: i64,
    pub group: bool,
    /// When the first node accepted it, in Unix microseconds.
    pub accepted_us: u64,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

impl WireMessage {
    pub fn from_pushed(message: &PushedMessage) -> WireMessage {
        WireMessage {
            id: message.id,
            group: message.kind == MessageKind::Group,
            accepted_us: unix_micros()
                .saturating_sub(message.accepted_at.elapsed().as_micros() as u64),
        }
    }

    /// The accepting node's clock and ours may differ; a time in our future
    /// counts as now.
    pub fn to_pushed(&self) -> PushedMessage {
        let age = Duration::from_micros(unix_micros().saturating_sub(self.accepted_us));
        let now = Instant::now();
        PushedMessage {
            id: self.id,
            kind: if self.group {
                MessageKind::Group
            } else {
                MessageKind::Private
            },
            accepted_at: now.checked_sub(age).unwrap_or(now),
        }
    }
}

/// The header line, then (for a push) the frame.
pub fn encode(envelope: &Envelope, frame: Option<&ByteString>) -> Bytes {
    let header = serde_json::to_vec(envelope).expect("an envelope always serialises");
    let frame_len = frame.map_or(0, |frame| frame.len());
    let mut out = BytesMut::with_capacity(header.len() + 1 + frame_len);
    out.put_slice(&header);
    out.put_u8(b'\n');
    if let Some(frame) = frame {
        out.put_slice(frame.as_bytes());
    }
    out.freeze()
}

/// The envelope and, for a push, the frame; `None` for bytes no node wrote.
pub fn decode(bytes: &[u8]) -> Option<(Envelope, Option<Push>)> {
    let split = bytes.iter().position(|&byte| byte == b'\n')?;
    let envelope: Envelope = serde_json::from_slice(&bytes[..split]).ok()?;
    let push = match &envelope.event {
        Event::Deliver { message, .. } => {
            let frame = ByteString::try_from(Bytes::copy_from_slice(&bytes[split + 1..])).ok()?;
            Some(Push {
                frame,
                message: message.as_ref().map(WireMessage::to_pushed),
            })
        }
        _ => None,
    };
    Some((envelope, push))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_crosses_the_wire_with_its_frame_and_message_facts() {
        let frame = ByteString::from_static(r#"{"type":"message","content":"a\nb"}"#);
        let pushed = PushedMessage {
            id: 42,
            kind: MessageKind::Group,
            accepted_at: Instant::now(),
        };
        let envelope = Envelope {
            from: 7,
            event: Event::Deliver {
                users: vec![1, 2],
                origin: Some(9),
                message: Some(WireMessage::from_pushed(&pushed)),
            },
        };
        let (decoded, push) = decode(&encode(&envelope, Some(&frame))).expect("decodes");
        assert_eq!(decoded.from, 7);
        assert!(
            matches!(decoded.event, Event::Deliver { ref users, origin: Some(9), .. } if users == &[1, 2])
        );
        let push = push.expect("a deliver carries a push");
        assert_eq!(push.frame, frame);
        let message = push.message.expect("with its message facts");
        assert_eq!((message.id, message.kind), (42, MessageKind::Group));
        assert!(message.accepted_at.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn bytes_no_node_wrote_are_ignored() {
        assert!(decode(b"hello").is_none());
        assert!(decode(b"{\"from\":1,\"t\":\"nonsense\"}\n").is_none());
        assert!(decode(
            b"{\"from\":1,\"t\":\"deliver\",\"users\":[1],\"origin\":null,\"message\":null}\n\xff"
        )
        .is_none());
    }
}
