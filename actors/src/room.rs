//! A room actor per group: the authority on who is in the group, and the
//! fan-out of the group's messages to every open socket of every member.
//! Started on first use by [`Chat::room`], stopped after a while idle.
//! HTTP handlers and sessions ask it to check membership and to post; the
//! persistence actor hands it each committed message to fan out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use serde::Serialize;

use crate::error::{ChatError, ChatResult};
use crate::hub::SessionId;
use crate::model::Timestamp;
use crate::model::UserRef;
use crate::persistence::{
    AddMember, NewMessage, RemoveMember, Reply, SetRoles, StoreMessage, Stored, Target,
};
use crate::protocol::{encode, ServerFrame};
use crate::session::Push;
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
    pub joined_at: Timestamp,
}

/// A member as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub username: String,
    pub role: &'static str,
    pub joined_at: Timestamp,
}

impl Member {
    fn view(&self) -> MemberView {
        MemberView {
            username: self.username.to_string(),
            role: self.role.as_str(),
            joined_at: self.joined_at,
        }
    }
}

pub struct RoomActor {
    group_id: i64,
    /// user id → member; the live member set every check and fan-out uses.
    members: HashMap<i64, Member>,
    /// The keys of `members`, shared with each post (a cluster's writer
    /// delivers to them); rebuilt when the members change.
    member_ids: Arc<[i64]>,
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

/// Post a message to the group (members only); `reply` gets the outcome
/// after COMMIT (or the refusal at once).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PostMessage {
    /// When the server accepted it (for the delivery latency metric).
    pub accepted_at: Instant,
    pub sender: UserRef,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    /// The sender's idempotency key, if any.
    pub client_id: Option<String>,
    /// The socket it came from (gets the ack instead of the message).
    pub origin: Option<SessionId>,
    pub reply: Reply<Stored>,
}

/// The members, oldest first (members only).
#[derive(Message)]
#[rtype(result = "ChatResult<Vec<MemberView>>")]
pub struct ListMembers {
    pub by: i64,
}

/// Add a user to the group (owner or admin only).
#[derive(Message)]
#[rtype(result = "ChatResult<MemberView>")]
pub struct Add {
    /// Who asks.
    pub by: i64,
    pub user: UserRef,
}

/// Remove a member: the owner removes anyone, an admin removes plain
/// members, and anyone may remove themself (leave) — except the owner while
/// others remain.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct Remove {
    pub by: i64,
    pub user: i64,
}

/// Change a member's role (owner only). Making someone `owner` transfers
/// ownership; the previous owner becomes an admin.
#[derive(Message)]
#[rtype(result = "ChatResult<MemberView>")]
pub struct ChangeRole {
    pub by: i64,
    pub user: i64,
    pub role: Role,
}

/// A member is typing: relayed to the other members' sockets, never stored.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct Typing {
    pub sender: UserRef,
}

/// Another node changed the group's members or roles: read them again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;

/// A committed group message to push to every member's sockets; sent by the
/// persistence actor in id order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FanOut {
    /// The `message` frame, encoded once for all recipients.
    pub push: Push,
    /// The sender's socket that already got an ack.
    pub origin: Option<SessionId>,
}

// ---- Actor ------------------------------------------------------------------

impl RoomActor {
    fn new(group_id: i64, rows: Vec<MemberRow>, chat: Chat) -> Self {
        let mut room = RoomActor {
            group_id,
            members: HashMap::new(),
            member_ids: Arc::from([]),
            chat,
            last_active: Instant::now(),
        };
        room.set_members(rows);
        room
    }

    fn set_members(&mut self, rows: Vec<MemberRow>) {
        self.members = rows
            .into_iter()
            .map(|row| {
                let member = Member {
                    username: row.username.into(),
                    role: Role::parse(&row.role).unwrap_or(Role::Member),
                    joined_at: Timestamp(row.joined_at),
                };
                (row.user_id, member)
            })
            .collect();
        self.members_changed();
    }

    fn members_changed(&mut self) {
        self.member_ids = self.members.keys().copied().collect();
    }

    /// Leaves the registry at once, so later lookups start afresh, and
    /// stops after [`STOP_GRACE`]: a stopping actor drops its mailbox, and
    /// requests already queued here (a post behind the last member's leave,
    /// say) still get their answer.
    fn retire(&self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.chat
            .rooms
            .remove_if(&self.group_id, |_, addr| *addr == me);
        ctx.run_later(STOP_GRACE, |_, ctx| ctx.stop());
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

    fn member(&self, user: i64) -> ChatResult<&Member> {
        self.members
            .get(&user)
            .ok_or_else(|| ChatError::not_found("username: not a member of this group"))
    }

    /// Whether `by` may remove `user` (see [`Remove`]).
    fn check_removal(&self, by: i64, user: i64) -> ChatResult<()> {
        let by_role = self.require_member(by)?;
        let target_role = self.member(user)?.role;
        if by == user {
            return if target_role == Role::Owner && self.members.len() > 1 {
                Err(ChatError::conflict(
                    "username: the owner cannot leave while others remain; transfer ownership first",
                ))
            } else {
                Ok(())
            };
        }
        match (by_role, target_role) {
            (Role::Owner, _) | (Role::Admin, Role::Member) => Ok(()),
            (Role::Admin, _) => Err(ChatError::forbidden(
                "username: admins can remove only plain members",
            )),
            (Role::Member, _) => Err(ChatError::forbidden(
                "group_id: only the owner or an admin can remove members",
            )),
        }
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_CHECK, |room, ctx| {
            if room.last_active.elapsed() < room.chat.settings.room_idle {
                return;
            }
            room.retire(ctx);
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
    type Result = ();

    fn handle(&mut self, msg: PostMessage, ctx: &mut Self::Context) {
        self.touch();
        if let Err(error) = self.require_member(msg.sender.id) {
            msg.reply.send(Err(error));
            return;
        }
        let broker = &self.chat.broker;
        let sender = msg.sender.id;
        let anyone_online = self
            .members
            .keys()
            .any(|&user| user != sender && broker.is_reachable(user));
        // Queued now, in the order posts reach the room.
        self.chat.persistence.do_send(StoreMessage {
            message: NewMessage {
                accepted_at: msg.accepted_at,
                sender: msg.sender,
                to: Target::Group {
                    group_id: self.group_id,
                    room: ctx.address(),
                    members: self.member_ids.clone(),
                    anyone_online,
                },
                content: msg.content,
                message_type: msg.message_type,
                content_type: msg.content_type,
                client_id: msg.client_id,
                origin: msg.origin,
            },
            reply: msg.reply,
        });
    }
}

impl Handler<ListMembers> for RoomActor {
    type Result = ChatResult<Vec<MemberView>>;

    fn handle(&mut self, msg: ListMembers, _: &mut Self::Context) -> Self::Result {
        self.touch();
        self.require_member(msg.by)?;
        let mut members: Vec<MemberView> = self.members.values().map(Member::view).collect();
        members.sort_by(|a, b| (a.joined_at, &a.username).cmp(&(b.joined_at, &b.username)));
        Ok(members)
    }
}

/// Membership changes wait for their commit before the room reads its next
/// message (an atomic response), so the live member set always matches what
/// is stored and two changes never race.
impl Handler<Add> for RoomActor {
    type Result = AtomicResponse<Self, ChatResult<MemberView>>;

    fn handle(&mut self, msg: Add, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let allowed = match self.require_member(msg.by) {
            Ok(Role::Owner | Role::Admin) => Ok(()),
            Ok(Role::Member) => Err(ChatError::forbidden(
                "group_id: only the owner or an admin can add members",
            )),
            Err(error) => Err(error),
        }
        .and_then(|()| match self.members.contains_key(&msg.user.id) {
            true => Err(ChatError::conflict(
                "username: already a member of this group",
            )),
            false => Ok(()),
        });
        let request = allowed.map(|()| {
            self.chat.persistence.send(AddMember {
                group_id: self.group_id,
                user: msg.user.clone(),
                role: Role::Member,
            })
        });
        AtomicResponse::new(Box::pin(
            async move { request?.await? }
                .into_actor(self)
                .map(move |joined_at, room, _| {
                    let member = Member {
                        username: msg.user.username,
                        role: Role::Member,
                        joined_at: joined_at?,
                    };
                    let view = member.view();
                    room.members.insert(msg.user.id, member);
                    room.members_changed();
                    Ok(view)
                }),
        ))
    }
}

impl Handler<Remove> for RoomActor {
    type Result = AtomicResponse<Self, ChatResult<()>>;

    fn handle(&mut self, msg: Remove, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let request = self.check_removal(msg.by, msg.user).map(|()| {
            self.chat.persistence.send(RemoveMember {
                group_id: self.group_id,
                user: msg.user,
            })
        });
        AtomicResponse::new(Box::pin(
            async move { request?.await? }
                .into_actor(self)
                .map(move |removed, room, ctx| {
                    removed?;
                    room.members.remove(&msg.user);
                    room.members_changed();
                    if room.members.is_empty() {
                        // The last member left: the group is gone (404 from
                        // now on, as a fresh lookup finds no members).
                        room.retire(ctx);
                    }
                    Ok(())
                }),
        ))
    }
}

impl Handler<ChangeRole> for RoomActor {
    type Result = AtomicResponse<Self, ChatResult<MemberView>>;

    fn handle(&mut self, msg: ChangeRole, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let changes = match (self.require_member(msg.by), self.member(msg.user)) {
            (Ok(Role::Owner), Ok(_)) if msg.by == msg.user => Err(ChatError::conflict(
                "username: the owner keeps that role until making another member owner",
            )),
            (Ok(Role::Owner), Ok(_)) if msg.role == Role::Owner => {
                Ok(vec![(msg.user, Role::Owner), (msg.by, Role::Admin)])
            }
            (Ok(Role::Owner), Ok(_)) => Ok(vec![(msg.user, msg.role)]),
            (Ok(_), Ok(_)) => Err(ChatError::forbidden(
                "group_id: only the owner can change roles",
            )),
            (Err(error), _) | (_, Err(error)) => Err(error),
        };
        let request = changes.map(|changes| {
            let write = SetRoles {
                group_id: self.group_id,
                changes: changes.clone(),
            };
            (changes, self.chat.persistence.send(write))
        });
        AtomicResponse::new(Box::pin(
            async move {
                let (changes, request) = request?;
                request.await??;
                Ok(changes)
            }
            .into_actor(self)
            .map(move |changes: ChatResult<Vec<(i64, Role)>>, room, _| {
                for (user, role) in changes? {
                    if let Some(member) = room.members.get_mut(&user) {
                        member.role = role;
                    }
                }
                Ok(room.member(msg.user)?.view())
            }),
        ))
    }
}

impl Handler<Typing> for RoomActor {
    type Result = ChatResult<()>;

    fn handle(&mut self, msg: Typing, _: &mut Self::Context) -> Self::Result {
        self.require_member(msg.sender.id)?;
        let push = Push::event(encode(&ServerFrame::Typing {
            user: &msg.sender.username,
            recipient: None,
            group_id: Some(self.group_id),
        }));
        let others: Vec<i64> = self
            .members
            .keys()
            .copied()
            .filter(|&user| user != msg.sender.id)
            .collect();
        self.chat.broker.deliver(&others, &push, None);
        Ok(())
    }
}

/// Reads the members again, before any later message is handled. A group
/// left with no members is gone, as when its last member leaves here.
impl Handler<Reload> for RoomActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Reload, _: &mut Self::Context) -> Self::Result {
        let store = self.chat.store.clone();
        let group_id = self.group_id;
        AtomicResponse::new(Box::pin(
            async move { store.group_members(group_id).await }
                .into_actor(self)
                .map(move |rows, room, ctx| match rows {
                    Ok(rows) if rows.is_empty() => {
                        room.set_members(rows);
                        room.retire(ctx);
                    }
                    Ok(rows) => room.set_members(rows),
                    // Members stay as they were; the next lookup after an
                    // idle stop reads them afresh.
                    Err(error) => tracing::warn!(error = ?error, group_id, "could not reload a group's members"),
                }),
        ))
    }
}

impl Handler<FanOut> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: FanOut, _: &mut Self::Context) {
        for &user in self.members.keys() {
            self.chat.hub.push(user, &msg.push, msg.origin);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::CreateGroup;
    use crate::test_support::{create_user, fresh_chat};

    #[actix::test]
    async fn a_post_queued_behind_the_last_member_leaving_is_refused_not_dropped() {
        let (chat, dir) = fresh_chat("room-last-leave").await;
        let alice = create_user(&chat, "alice").await;
        let group = chat
            .persistence
            .send(CreateGroup {
                creator: alice.clone(),
                name: "solo".into(),
                description: String::new(),
            })
            .await
            .expect("the writer answers")
            .expect("the group is created");
        let room = chat.room(group.id).await.expect("the room starts");

        // Both are queued before the room runs: the leave first, the post
        // behind it while the leave waits for its commit.
        let leave = room.send(Remove {
            by: alice.id,
            user: alice.id,
        });
        let (reply, outcome) = Reply::channel();
        room.do_send(PostMessage {
            accepted_at: Instant::now(),
            sender: alice.clone(),
            content: "posted while leaving".into(),
            message_type: "text".into(),
            content_type: "text/plain".into(),
            client_id: Some("c1".into()),
            origin: None,
            reply,
        });
        leave
            .await
            .expect("the room answers")
            .expect("the last member may leave");
        let answer = outcome.await;
        assert!(
            matches!(answer, Err(ChatError::Forbidden(_))),
            "the post is refused as from a non-member, got {answer:?}"
        );
        assert!(
            matches!(chat.room(group.id).await, Err(ChatError::NotFound(_))),
            "the group is gone"
        );
        drop(chat);
        let _ = std::fs::remove_dir_all(dir);
    }
}
