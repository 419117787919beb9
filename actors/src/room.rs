//! A room actor per group: the authority on who is in the group, and the
//! fan-out of the group's messages to every open socket of every member.
//! Started on first use by [`Chat::room`], stopped after a while idle.
//! HTTP handlers and sessions ask it to check membership and to post; the
//! persistence actor hands it each committed message to fan out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use dashmap::mapref::entry::Entry;

use crate::error::{ChatError, ChatResult};
use crate::hub::SessionId;
use crate::model::UserRef;
use crate::persistence::{StoreMessage, Stored, Target};
use crate::store::MemberRow;
use crate::Chat;

/// How often an idle room checks whether to stop.
const IDLE_CHECK: Duration = Duration::from_secs(60);
/// How long a room stays up after its registry entry is gone, so a request
/// that looked it up just before still gets an answer.
const STOP_GRACE: Duration = Duration::from_secs(5);

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

/// A member as the room keeps it.
#[derive(Debug, Clone)]
pub struct Member {
    pub username: Arc<str>,
    pub role: Role,
}

pub struct RoomActor {
    group_id: i64,
    /// user id → member; the live member set every check and fan-out uses.
    members: HashMap<i64, Member>,
    chat: Chat,
    last_active: Instant,
}

// ---- Messages -------------------------------------------------------------

/// Is this user a member? Replies with their role, or 403.
#[derive(Message)]
#[rtype(result = "ChatResult<Role>")]
pub struct CheckMember {
    pub user: i64,
}

/// Post a message to the group (members only). Replies after COMMIT.
#[derive(Message)]
#[rtype(result = "ChatResult<Stored>")]
pub struct PostMessage {
    pub sender: UserRef,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    /// The sender's idempotency key, if any.
    pub client_id: Option<String>,
    /// The socket it came from (gets the ack instead of the message).
    pub origin: Option<SessionId>,
}

/// A committed group message to push to every member's sockets; sent by the
/// persistence actor in id order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FanOut {
    /// The `message` frame, encoded once for all recipients.
    pub frame: ByteString,
    /// The sender's socket that already got an ack.
    pub origin: Option<SessionId>,
}

// ---- Actor ------------------------------------------------------------------

impl RoomActor {
    fn new(group_id: i64, rows: Vec<MemberRow>, chat: Chat) -> Self {
        let members = rows
            .into_iter()
            .map(|row| {
                let member = Member {
                    username: row.username.into(),
                    role: Role::parse(&row.role).unwrap_or(Role::Member),
                };
                (row.user_id, member)
            })
            .collect();
        RoomActor {
            group_id,
            members,
            chat,
            last_active: Instant::now(),
        }
    }

    fn touch(&mut self) {
        self.last_active = Instant::now();
    }

    fn require_member(&self, user: i64) -> ChatResult<Role> {
        self.members
            .get(&user)
            .map(|member| member.role)
            .ok_or_else(|| ChatError::forbidden("group_id: you are not a member of this group"))
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_CHECK, |room, ctx| {
            if room.last_active.elapsed() < room.chat.settings.room_idle {
                return;
            }
            let me = ctx.address();
            room.chat
                .rooms
                .remove_if(&room.group_id, |_, addr| *addr == me);
            ctx.run_later(STOP_GRACE, |_, ctx| ctx.stop());
        });
    }
}

impl Handler<CheckMember> for RoomActor {
    type Result = ChatResult<Role>;

    fn handle(&mut self, msg: CheckMember, _: &mut Self::Context) -> Self::Result {
        self.touch();
        self.require_member(msg.user)
    }
}

impl Handler<PostMessage> for RoomActor {
    type Result = ResponseFuture<ChatResult<Stored>>;

    fn handle(&mut self, msg: PostMessage, ctx: &mut Self::Context) -> Self::Result {
        self.touch();
        if let Err(error) = self.require_member(msg.sender.id) {
            return Box::pin(async move { Err(error) });
        }
        let hub = &self.chat.hub;
        let sender = msg.sender.id;
        let anyone_online = self
            .members
            .keys()
            .any(|&user| user != sender && hub.is_online(user));
        // Queued now, in the order posts reach the room.
        let request = self.chat.persistence.send(StoreMessage {
            sender: msg.sender,
            to: Target::Group {
                group_id: self.group_id,
                room: ctx.address(),
                anyone_online,
            },
            content: msg.content,
            message_type: msg.message_type,
            content_type: msg.content_type,
            client_id: msg.client_id,
            origin: msg.origin,
        });
        Box::pin(async move { request.await? })
    }
}

impl Handler<FanOut> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: FanOut, _: &mut Self::Context) {
        for &user in self.members.keys() {
            self.chat.hub.push(user, &msg.frame, msg.origin);
        }
    }
}

// ---- Registry ---------------------------------------------------------------

impl Chat {
    /// The running room of a group, started (members loaded) on first use.
    /// 404 if the group does not exist.
    pub async fn room(&self, group_id: i64) -> ChatResult<Addr<RoomActor>> {
        if let Some(room) = self.running_room(group_id) {
            return Ok(room);
        }
        let members = self.store.group_members(group_id).await?;
        // Every group has at least its owner, so no members means no group.
        if members.is_empty() {
            return Err(ChatError::not_found("group_id: no such group"));
        }
        let start = || RoomActor::new(group_id, members, self.clone()).start_unbounded();
        let room = match self.rooms.entry(group_id) {
            Entry::Occupied(entry) if entry.get().connected() => entry.get().clone(),
            Entry::Occupied(mut entry) => {
                entry.insert(start());
                entry.get().clone()
            }
            Entry::Vacant(entry) => entry.insert(start()).clone(),
        };
        Ok(room)
    }

    /// The group's room if it is already running.
    pub fn running_room(&self, group_id: i64) -> Option<Addr<RoomActor>> {
        self.rooms
            .get(&group_id)
            .filter(|room| room.connected())
            .map(|room| room.clone())
    }
}

impl RoomActor {
    /// Starts with an unbounded mailbox so posts are never held back and reordered.
    fn start_unbounded(self) -> Addr<Self> {
        Self::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            self
        })
    }
}
