//! One actor per open `/ws/chat` socket, as in Parley (`actors/src/session.rs`,
//! actix-web-actors 4.3): it parses each client frame, routes a `message`
//! through [`Relay::route`] (which queues the encoded frame on every
//! recipient socket) and answers with `ack`; what other sessions queue on
//! it arrives as a [`Push`] and is written as it is.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use actix_web_actors::ws;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::state::{now, Origin, Push, Refusal, Relay, To, UserId};

/// Ping the client this often; close it if nothing was heard for `TIMEOUT`.
const HEARTBEAT: Duration = Duration::from_secs(15);
const TIMEOUT: Duration = Duration::from_secs(45);

pub struct Session {
    pub id: u64,
    pub user: UserId,
    pub name: std::sync::Arc<str>,
    pub relay: web::Data<Relay>,
    pub last_heard: Instant,
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.relay
            .socket_opened(self.user, self.id, ctx.address().recipient());
        ctx.run_interval(HEARTBEAT, |session, ctx| {
            if session.last_heard.elapsed() > TIMEOUT {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.relay.socket_closed(self.user, self.id);
    }
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, Push(frame): Push, ctx: &mut Self::Context) {
        ctx.text(frame);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => {
                if let Some(reply) = self.on_text(&text) {
                    ctx.text(reply);
                }
            }
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                ctx.text(error_frame(
                    (400, "frame: send JSON in unfragmented text frames"),
                    None,
                ));
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(_) => {
                ctx.close(Some(ws::CloseCode::Protocol.into()));
                ctx.stop();
            }
        }
    }
}

/// A client frame, borrowing from the text where it can.
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    recipient: Option<Cow<'a, str>>,
    #[serde(default)]
    group_id: Option<i64>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(default)]
    since: Option<i64>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerFrame<'a> {
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        id: i64,
        timestamp: &'a str,
        status: &'a str,
    },
    Synced {
        last_id: i64,
    },
    Error {
        detail: &'a str,
        code: u16,
        timestamp: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
    },
}

fn encode(frame: &ServerFrame<'_>) -> ByteString {
    ByteString::from(serde_json::to_string(frame).expect("frames serialise"))
}

fn error_frame((code, detail): Refusal, client_id: Option<&str>) -> ByteString {
    encode(&ServerFrame::Error {
        detail,
        code,
        timestamp: &now(),
        client_id,
    })
}

impl Session {
    /// What this socket writes back for one client frame: `ack`, `synced`,
    /// `error`, or nothing.
    fn on_text(&mut self, text: &str) -> Option<ByteString> {
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => return Some(error_frame((400, "malformed frame"), None)),
        };
        let client_id = frame.client_id.as_deref();
        let reply = match &*frame.kind {
            "message" => {
                let to = match (frame.recipient.as_deref(), frame.group_id) {
                    (Some(name), None) => To::User(name),
                    (None, Some(group)) => To::Group(group),
                    _ => {
                        return Some(error_frame(
                            (400, "recipient: give either recipient or group_id"),
                            client_id,
                        ))
                    }
                };
                let Some(content) = frame.content.as_deref() else {
                    return Some(error_frame((400, "content: missing field"), client_id));
                };
                let origin = Origin {
                    user: self.user,
                    name: &self.name,
                    session: self.id,
                };
                match self.relay.route(
                    &origin,
                    to,
                    content,
                    frame.message_type.as_deref().unwrap_or("text"),
                    frame.content_type.as_deref().unwrap_or("text/plain"),
                ) {
                    Ok(routed) => encode(&ServerFrame::Ack {
                        client_id,
                        id: routed.id,
                        timestamp: &routed.timestamp,
                        status: routed.status,
                    }),
                    Err(refusal) => error_frame(refusal, client_id),
                }
            }
            // Nothing is stored, so there is nothing to replay.
            "sync" => encode(&ServerFrame::Synced {
                last_id: frame.since.unwrap_or(0),
            }),
            // Typing notices and read receipts are accepted and dropped.
            "typing" | "read" => return None,
            _ => error_frame((400, "type: unknown frame type"), client_id),
        };
        Some(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_errors_are_shaped_like_parleys() {
        let ack = encode(&ServerFrame::Ack {
            client_id: Some("r.1.2"),
            id: 9,
            timestamp: "t",
            status: "sent",
        });
        assert_eq!(
            &*ack,
            r#"{"type":"ack","client_id":"r.1.2","id":9,"timestamp":"t","status":"sent"}"#
        );
        let error: serde_json::Value =
            serde_json::from_str(&error_frame((404, "no"), None)).unwrap();
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], 404);
        assert!(error.get("client_id").is_none());
    }
}
