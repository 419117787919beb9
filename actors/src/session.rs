//! The session actor: one per open WebSocket on `/ws/chat`. It keeps the
//! socket alive with heartbeats, parses client frames (see [`crate::protocol`])
//! and turns them into requests to the persistence actor and rooms, and writes
//! what the hub pushes to it. Every use of `actix-web-actors` in Parley is in
//! this module.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use crate::chat::Chat;
use crate::devices::{DeviceConnected, DeviceDisconnected};
use crate::error::{ChatError, ChatResult};
use crate::hub::{Backlog, CloseReason, Disconnect, Push, Pushes, SessionId, Socket};
use crate::metrics::Rejection;
use crate::model::{AnyMessage, DeliveryStatus, UserRef};
use crate::persistence::{Ack, MarkDelivered, MarkRead, Reply, Stored};
use crate::protocol::{
    encode, error_frame, ClientFrame, Conversation, FrameError, MessageFrame, SendMessage,
    ServerFrame,
};
use crate::room::Typing;
use crate::validate;

/// Completes the WebSocket handshake for an authenticated user and starts
/// the session. `device` is the row id of the device the socket binds to;
/// `token_generation` is the one the handshake's token carried.
pub fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    chat: Chat,
    user: UserRef,
    device: Option<i64>,
    token_generation: i64,
) -> ChatResult<HttpResponse> {
    let max_frame_bytes = chat.settings().max_frame_bytes;
    let id = chat.hub().next_session_id();
    // Logged inside the handshake's request span, this ties the request id
    // to the session id that the session's own log lines carry.
    tracing::info!(session = id, user = %user.username, device, "websocket opened");
    let session = SessionActor {
        id,
        user,
        device,
        token_generation,
        chat,
        last_heard: Instant::now(),
        replayed_up_to: 0,
        typing_sent: HashMap::new(),
    };
    ws::WsResponseBuilder::new(session, req, payload)
        .frame_size(max_frame_bytes)
        .start()
        .map_err(|err| ChatError::invalid(format!("expected a WebSocket upgrade request: {err}")))
}

pub struct SessionActor {
    id: SessionId,
    user: UserRef,
    /// Row id of the device this socket is bound to (`?device_id=`), if any.
    device: Option<i64>,
    /// The password generation of the token the socket was opened with.
    token_generation: i64,
    chat: Chat,
    /// When the client last sent anything (a frame, ping or pong).
    last_heard: Instant,
    /// The highest message id a `sync` replayed here; live pushes of messages
    /// at or below it were already written and are skipped.
    replayed_up_to: i64,
    /// When this socket last relayed a typing notice, per conversation (for throttling).
    typing_sent: HashMap<Conversation, Instant>,
}

/// Messages read per query while replaying a `sync`.
const SYNC_PAGE: i64 = 500;
/// Most messages one `sync` replays; beyond it `synced` says `more`.
pub const SYNC_MAX: usize = 5000;
/// At most one typing notice per conversation per this interval.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);

impl Actor for SessionActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let chat = &self.chat;
        ctx.set_mailbox_capacity(chat.settings().socket_queue);
        let me = ctx.address();
        let socket = Socket {
            session: self.id,
            push: me.clone().recipient(),
            backlog: Backlog::new(chat.settings().socket_queue),
            close: me.clone().recipient(),
        };
        chat.metrics().open_sockets.inc();
        let opened_at = Instant::now();
        let first = chat.hub().register(self.user.id, socket);
        if first {
            chat.metrics().users_online.inc();
        }
        chat.presence()
            .socket_opened(self.user.clone(), first, opened_at, me.clone().recipient());
        if let Some(device) = self.device {
            chat.devices().do_send(DeviceConnected {
                device,
                session: self.id,
                close: me.recipient(),
            });
        }
        let (interval, timeout) = (
            chat.settings().heartbeat_interval,
            chat.settings().client_timeout,
        );
        ctx.run_interval(interval, move |session, ctx| {
            if session.last_heard.elapsed() > timeout {
                tracing::debug!(session = session.id, "client silent too long; closing");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("heartbeat timeout".into()),
                }));
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        self.recheck_account(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let chat = &self.chat;
        chat.metrics().open_sockets.dec();
        if chat.hub().unregister(self.user.id, self.id) {
            chat.metrics().users_online.dec();
            chat.presence().last_socket_closed(self.user.clone());
        }
        tracing::info!(session = self.id, user = %self.user.username, "websocket closed");
        if let Some(device) = self.device {
            chat.devices().do_send(DeviceDisconnected {
                device,
                session: self.id,
            });
        }
    }
}

impl SessionActor {
    /// The handshake checked the token before this socket was in the hub; a
    /// password change or account deletion that committed in between closed
    /// the user's other sockets but not this one. Checked again now that it
    /// is registered, no change can slip through: one that commits later
    /// finds this socket in the hub. No client frame is read until then.
    fn recheck_account(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let (chat, user) = (self.chat.clone(), self.user.id);
        let check = async move { chat.account(user).await };
        ctx.wait(check.into_actor(self).map(|account, session, ctx| {
            let closing = match account {
                Ok(Some(account)) if account.accepts(session.token_generation) => return,
                Ok(Some(account)) if !account.deleted => CloseReason::PasswordChanged,
                Ok(_) => CloseReason::AccountDeleted,
                Err(error) => {
                    tracing::error!(session = session.id, ?error, "cannot recheck the account");
                    CloseReason::AccountUnknown
                }
            };
            session.close(closing, ctx);
        }));
    }

    fn close(&mut self, reason: CloseReason, ctx: &mut ws::WebsocketContext<Self>) {
        use ws::CloseCode::{Away, Error, Normal, Policy};
        let (code, description) = match reason {
            CloseReason::SlowConsumer => (Policy, "too slow to read; reconnect and sync"),
            CloseReason::GoingAway => (Away, "server shutting down"),
            CloseReason::AccountDeleted => (Normal, "account deleted"),
            CloseReason::PasswordChanged => (Normal, "password changed"),
            CloseReason::AccountUnknown => (Error, "cannot check the account; reconnect"),
            CloseReason::DeviceRemoved => (Normal, "device removed"),
        };
        ctx.close(Some(ws::CloseReason {
            code,
            description: Some(description.into()),
        }));
        ctx.stop();
    }
}

impl Handler<Pushes> for SessionActor {
    type Result = ();

    fn handle(&mut self, mut pushes: Pushes, ctx: &mut Self::Context) {
        for push in std::mem::take(&mut pushes.frames) {
            if let Some(message) = push.message {
                if message.id <= self.replayed_up_to {
                    continue;
                }
                self.chat
                    .metrics()
                    .delivered(message.kind, message.accepted_at.elapsed());
            }
            ctx.text(push.frame);
        }
    }
}

/// The outcome of one of this socket's sends: written as `ack` or `error`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendOutcome {
    client_id: Option<String>,
    result: ChatResult<Ack>,
}

impl Handler<SendOutcome> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: SendOutcome, ctx: &mut Self::Context) {
        let client_id = msg.client_id.as_deref();
        let frame = match msg.result {
            Ok(ack) => encode(&ServerFrame::Ack {
                client_id,
                id: ack.id,
                timestamp: ack.timestamp,
                status: ack.status,
            }),
            Err(error) => {
                if error.is_server_fault() {
                    tracing::error!(error = ?error, "storing a message failed");
                }
                self.count_rejection(&error);
                error_frame(&error, client_id)
            }
        };
        ctx.text(frame);
    }
}

impl Handler<Disconnect> for SessionActor {
    type Result = ();

    fn handle(&mut self, Disconnect(reason): Disconnect, ctx: &mut Self::Context) {
        self.close(reason, ctx);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SessionActor {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                let error = ChatError::invalid("frame: send JSON in unfragmented text frames");
                ctx.text(error_frame(&error, None));
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => {
                let limit = self.chat.settings().max_frame_bytes;
                let error = ChatError::TooLarge(format!("frame: larger than {limit} bytes"));
                self.count_rejection(&error);
                ctx.text(error_frame(&error, None));
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some("frame too large".into()),
                }));
                ctx.stop();
            }
            Err(error) => {
                tracing::debug!(session = self.id, %error, "websocket protocol error");
                ctx.close(Some(ws::CloseCode::Protocol.into()));
                ctx.stop();
            }
        }
    }
}

impl SessionActor {
    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Message(send)) => self.on_send(send, ctx),
            Ok(ClientFrame::Typing(to)) => self.on_typing(to, ctx),
            Ok(ClientFrame::Read { message_id }) => self.on_read(message_id, ctx),
            Ok(ClientFrame::Sync { since }) => self.on_sync(since, ctx),
            Err(FrameError { error, client_id }) => {
                ctx.text(error_frame(&error, client_id.as_deref()));
            }
        }
    }

    fn count_rejection(&self, error: &ChatError) {
        if let Some(reason) = Rejection::for_status(error.status()) {
            self.chat.metrics().rejected(reason);
        }
    }

    fn on_send(&mut self, send: SendMessage, ctx: &mut ws::WebsocketContext<Self>) {
        let SendMessage { to, message } = send;
        let client_id = message.client_id.clone();
        let message = match self
            .chat
            .outgoing(self.user.clone(), message, Some(self.id))
        {
            Ok(message) => message,
            Err(error) => {
                self.count_rejection(&error);
                ctx.text(error_frame(&error, client_id.as_deref()));
                return;
            }
        };
        let reply = Self::ack_when_stored(ctx.address(), client_id);
        if let Some(queueing) = self.chat.send(to, message, reply) {
            // Hold later frames until the message is queued, so this
            // socket's sends keep their order.
            ctx.wait(queueing.into_actor(self));
        }
    }

    /// The reply for a send: once the message is committed (or refused),
    /// this socket's mailbox gets the outcome to write as `ack` or `error`.
    fn ack_when_stored(session: Addr<SessionActor>, client_id: Option<String>) -> Reply<Stored> {
        Reply::new(move |result: ChatResult<Stored>| {
            session.do_send(SendOutcome {
                client_id,
                result: result.map(|stored| stored.ack()),
            })
        })
    }

    fn on_read(&mut self, message_id: i64, ctx: &mut ws::WebsocketContext<Self>) {
        let request = self.chat.persistence().send(MarkRead {
            reader: self.user.clone(),
            message_id,
        });
        ctx.spawn(
            async move { request.await? }
                .into_actor(self)
                .map(|result, _, ctx| {
                    if let Err(error) = result {
                        ctx.text(error_frame(&error, None));
                    }
                }),
        );
    }

    /// Relays a typing notice (never stored), at most one per conversation per second.
    fn on_typing(&mut self, to: Conversation, ctx: &mut ws::WebsocketContext<Self>) {
        let now = Instant::now();
        let key = match &to {
            Conversation::User(name) => Conversation::User(validate::lookup_key(name)),
            Conversation::Group(id) => Conversation::Group(*id),
        };
        if let Some(last) = self.typing_sent.get(&key) {
            if now.duration_since(*last) < TYPING_INTERVAL {
                return;
            }
        }
        self.typing_sent
            .retain(|_, sent| now.duration_since(*sent) < TYPING_INTERVAL);
        self.typing_sent.insert(key, now);

        let chat = self.chat.clone();
        let sender = self.user.clone();
        let relay = async move {
            match to {
                Conversation::User(name) => {
                    let recipient = chat
                        .user(&name)
                        .await?
                        .ok_or_else(|| ChatError::not_found("recipient: no such user"))?;
                    // Like a private message to yourself (400), not an unknown user.
                    if recipient.id == sender.id {
                        return Err(ChatError::invalid("recipient: cannot be yourself"));
                    }
                    let frame = encode(&ServerFrame::Typing {
                        user: &sender.username,
                        recipient: Some(&recipient.username),
                        group_id: None,
                    });
                    chat.broker()
                        .deliver(&[recipient.id], &Push::event(frame), None);
                    Ok(())
                }
                Conversation::Group(group_id) => {
                    chat.rooms().ask(group_id, Typing { sender }).await
                }
            }
        };
        ctx.spawn(relay.into_actor(self).map(|result, _, ctx| {
            if let Err(error) = result {
                ctx.text(error_frame(&error, None));
            }
        }));
    }

    /// Replays what the user may see above `since`, then `synced`: every
    /// message above it (`message`) and every older one whose last change is
    /// above it (`message_updated`), in their current state and in sequence
    /// order. The socket reads nothing else until the replay is written (the
    /// actor waits), so messages committed meanwhile queue up and are then
    /// skipped if the replay already had them: nothing is lost, and nothing
    /// pushed during the replay is doubled. One pushed before the `sync`
    /// arrived is above `since` too and is replayed as the contract says;
    /// clients drop ids they already have.
    fn on_sync(&mut self, since: i64, ctx: &mut ws::WebsocketContext<Self>) {
        let store = self.chat.store().clone();
        let user = self.user.id;
        let fetch = async move {
            let mut messages = Vec::new();
            let mut cursor = since;
            let messages_full = loop {
                let page = store.visible_since(user, cursor, SYNC_PAGE).await?;
                let full = page.len() as i64 == SYNC_PAGE;
                cursor = page.last().map_or(cursor, |message| message.id);
                messages.extend(page);
                if !full || messages.len() >= SYNC_MAX {
                    break full;
                }
            };
            let changed = store.changed_since(user, since, SYNC_MAX as i64).await?;
            let changed_full = changed.len() >= SYNC_MAX;
            Ok::<_, ChatError>(Replay::merge(
                messages,
                messages_full,
                changed,
                changed_full,
            ))
        };
        ctx.wait(
            fetch
                .into_actor(self)
                .map(move |result, session, ctx| match result {
                    Ok(replay) => session.replay(since, replay, ctx),
                    Err(error) => ctx.text(error_frame(&error, None)),
                }),
        );
    }

    fn replay(&mut self, since: i64, replay: Replay, ctx: &mut ws::WebsocketContext<Self>) {
        let mut newly_delivered = false;
        for item in &replay.items {
            let message = &item.message;
            let mut status = message.status.as_deref().and_then(DeliveryStatus::parse);
            if item.changed {
                ctx.text(encode(&ServerFrame::MessageUpdated(MessageFrame::of(
                    message, status,
                ))));
                continue;
            }
            let to_me = message.recipient.as_deref() == Some(&*self.user.username);
            if to_me && status == Some(DeliveryStatus::Sent) {
                status = Some(DeliveryStatus::Delivered);
                newly_delivered = true;
            }
            ctx.text(encode(&ServerFrame::Message(MessageFrame::of(
                message, status,
            ))));
            self.replayed_up_to = self.replayed_up_to.max(message.id);
        }
        let last_id = replay.items.last().map_or(since, |item| item.position);
        ctx.text(encode(&ServerFrame::Synced {
            last_id,
            more: replay.more,
        }));
        if let (true, Some(up_to)) = (newly_delivered, replay.delivered_up_to) {
            self.chat.persistence().do_send(MarkDelivered {
                recipient: self.user.clone(),
                after: since,
                up_to,
            });
        }
    }
}

/// What one `sync` writes, in sequence order.
struct Replay {
    items: Vec<ReplayItem>,
    /// The replay stopped at its size limit.
    more: bool,
    /// Every new message up to this id is written by this replay.
    delivered_up_to: Option<i64>,
}

struct ReplayItem {
    /// The message's id, or for a changed older message its `change_id`.
    position: i64,
    changed: bool,
    message: AnyMessage,
}

impl Replay {
    /// Interleaves the new messages (read in id order) with the changed
    /// older ones (read in change order). A list that filled its limit may go
    /// on past what was read, so the replay stops at the lowest key (id,
    /// change id) such a list ended at; the next `sync` from there picks up
    /// the rest, each message exactly once.
    fn merge(
        messages: Vec<AnyMessage>,
        messages_full: bool,
        changed: Vec<AnyMessage>,
        changed_full: bool,
    ) -> Replay {
        let new = messages.into_iter().map(|message| ReplayItem {
            // A new message comes in its current state, changes included,
            // so it stands where its last change does.
            position: message
                .change_id
                .map_or(message.id, |change| change.max(message.id)),
            changed: false,
            message,
        });
        let changed = changed.into_iter().map(|message| ReplayItem {
            position: message.change_id.unwrap_or(message.id),
            changed: true,
            message,
        });
        let (new, changed): (Vec<_>, Vec<_>) = (new.collect(), changed.collect());
        let read_up_to = [
            (messages_full, new.last().map(|item| item.message.id)),
            (changed_full, changed.last().map(|item| item.position)),
        ];
        let horizon = read_up_to
            .into_iter()
            .filter_map(|(full, last)| full.then_some(last).flatten())
            .min()
            .unwrap_or(i64::MAX);
        let (mut items, left): (Vec<ReplayItem>, Vec<ReplayItem>) = new
            .into_iter()
            .chain(changed)
            .partition(|item| item.position <= horizon);
        items.sort_by_key(|item| item.position);
        let last_id = items.last().map(|item| item.position);
        // A new message left for the next replay (changed after the
        // horizon) may have a smaller id than the last position written.
        let first_left = left
            .iter()
            .filter(|item| !item.changed)
            .map(|item| item.message.id)
            .min();
        Replay {
            delivered_up_to: match (last_id, first_left) {
                (Some(last), Some(left)) => Some(last.min(left - 1)),
                (last, _) => last,
            },
            items,
            more: messages_full || changed_full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lifecycle, Timestamp};

    fn message(id: i64, change_id: Option<i64>) -> AnyMessage {
        AnyMessage {
            id,
            sender: "alice".into(),
            recipient: Some("bob".into()),
            group_id: None,
            content: String::new(),
            message_type: "text".into(),
            content_type: "text/plain".into(),
            timestamp: Timestamp(0),
            status: Some("sent".into()),
            change_id,
            lifecycle: Lifecycle::default(),
        }
    }

    fn positions(replay: &Replay) -> Vec<(i64, bool)> {
        replay
            .items
            .iter()
            .map(|item| (item.position, item.changed))
            .collect()
    }

    #[test]
    fn new_and_changed_messages_interleave_in_sequence_order() {
        let new = vec![message(11, None), message(12, Some(15)), message(14, None)];
        let changed = vec![message(3, Some(13)), message(5, Some(16))];
        let replay = Replay::merge(new, false, changed, false);
        assert_eq!(
            positions(&replay),
            [
                (11, false),
                (13, true),
                (14, false),
                (15, false),
                (16, true)
            ]
        );
        assert_eq!(replay.delivered_up_to, Some(16));
        assert!(!replay.more);
    }

    #[test]
    fn a_full_list_stops_the_replay_where_it_ended_and_nothing_is_marked_beyond() {
        // The new messages filled their limit at id 14; message 12 changed
        // later (20), so it waits for the next replay, as does the change at 18.
        let new = vec![message(11, None), message(12, Some(20)), message(14, None)];
        let changed = vec![message(3, Some(13)), message(5, Some(18))];
        let replay = Replay::merge(new, true, changed, false);
        assert_eq!(positions(&replay), [(11, false), (13, true), (14, false)]);
        assert!(replay.more);
        // Message 12 was not written: only 11 may be marked delivered.
        assert_eq!(replay.delivered_up_to, Some(11));
    }
}
