//! A room actor per group: the authority on who is in the group, and the
//! fan-out of the group's messages to every open socket of every member.
//! Started on first use by [`Chat::ask_room`] or [`Chat::tell_room`],
//! stopped after a while idle. HTTP handlers and sessions ask it to check
//! membership and to post (always through the registry at the bottom of
//! this file); the persistence actor hands it each committed message to fan
//! out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use serde::Serialize;

use crate::error::{ChatError, ChatResult};
use crate::hub::SessionId;
use crate::model::{AnyMessage, Role, Timestamp, UserRef};
use crate::persistence::{
    AddMember, ChangeMessage, GroupRoute, MessageChange, NewChange, NewMessage, RemoveMember,
    Reply, SetRoles, StoreMessage, Stored, Target,
};
use crate::protocol::{encode, ServerFrame};
use crate::session::Push;
use crate::store::MemberRow;
use crate::Chat;

/// How often a room checks whether it is idle: twice per `room_idle`,
/// within these bounds.
const IDLE_CHECK: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));

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
    /// Shared with this room's registry entry (see [`RoomSlot::queued`]).
    queued: Arc<AtomicU64>,
    /// One clone in every [`RoomTicket`] this room gave out: a room with
    /// posts whose fan-out is still to come is not idle.
    tickets: Arc<()>,
    idle_check: Option<SpawnHandle>,
}

/// The room a post came from, carried with it through the writer until its
/// fan-out is queued back at the room (or the post is refused, or stored
/// as a resend, or delivered by a cluster's writer). While one is out the
/// room stays in the registry, so a group never has a second room running
/// beside one with fan-outs still to do.
#[derive(Clone)]
pub struct RoomTicket {
    room: Addr<RoomActor>,
    _outstanding: Arc<()>,
}

impl RoomTicket {
    /// Queues a committed message's fan-out at the room it came from.
    pub fn fan_out(self, fan_out: FanOut) {
        self.room.do_send(fan_out);
    }
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
    /// The message of this group it answers.
    pub reply_to: Option<i64>,
    pub reply: Reply<Stored>,
}

/// Edit, delete or react to one of the group's messages (members only; the
/// writer checks whose message it is). `reply` gets the new state after
/// COMMIT, or the refusal at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChangePost {
    pub by: UserRef,
    pub message_id: i64,
    pub change: MessageChange,
    pub reply: Reply<AnyMessage>,
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
    fn new(group_id: i64, rows: Vec<MemberRow>, chat: Chat, queued: Arc<AtomicU64>) -> Self {
        let mut room = RoomActor {
            group_id,
            members: HashMap::new(),
            member_ids: Arc::from([]),
            chat,
            last_active: Instant::now(),
            queued,
            tickets: Arc::new(()),
            idle_check: None,
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

    /// The group is gone (its last member left): leaves the registry at
    /// once, so later lookups find no group, and stops once it has answered
    /// what is already queued here (a post behind the last member's leave,
    /// say) and the writer has handed back every fan-out it owes.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.chat
            .rooms
            .remove_if(&self.group_id, |_, slot| slot.addr == me);
        self.stop_when_drained(ctx);
    }

    /// Nothing can queue here any more (the registry entry is gone): with
    /// its idle check cancelled, actix stops the room when its mailbox is
    /// empty and the last address of it (a [`RoomTicket`]) is dropped.
    fn stop_when_drained(&mut self, ctx: &mut Context<Self>) {
        if let Some(idle_check) = self.idle_check.take() {
            ctx.cancel_future(idle_check);
        }
    }

    fn is_idle(&self) -> bool {
        self.last_active.elapsed() >= self.chat.settings.room_idle
            && Arc::strong_count(&self.tickets) == 1
    }

    fn touch(&mut self) {
        self.last_active = Instant::now();
    }

    fn ticket(&self, ctx: &Context<Self>) -> RoomTicket {
        RoomTicket {
            room: ctx.address(),
            _outstanding: self.tickets.clone(),
        }
    }

    /// A member's name (empty for a user who is not one, which the checks
    /// before any change rule out).
    fn name_of(&self, user: i64) -> Arc<str> {
        self.members
            .get(&user)
            .map_or_else(|| Arc::from(""), |member| member.username.clone())
    }

    /// Pushes a membership event to every member's sockets, and to those of
    /// `leaver` (who is no longer one).
    fn announce(&self, frame: &ServerFrame<'_>, leaver: Option<i64>) {
        let users: Vec<i64> = self.member_ids.iter().copied().chain(leaver).collect();
        let push = Push::event(encode(frame));
        self.chat.broker.deliver(&users, &push, None);
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
        self.chat.metrics.rooms_running.inc();
        let every = (self.chat.settings.room_idle / 2).clamp(IDLE_CHECK.0, IDLE_CHECK.1);
        let idle_check = ctx.run_interval(every, |room, ctx| {
            if room.is_idle() {
                let queued = room.queued.load(Ordering::Relaxed);
                ctx.address().do_send(Retire { queued });
            }
        });
        self.idle_check = Some(idle_check);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.chat.metrics.rooms_running.dec();
    }
}

/// The end of an idle check, queued behind everything queued before it.
#[derive(Message)]
#[rtype(result = "()")]
struct Retire {
    /// [`RoomSlot::queued`] when the check began.
    queued: u64,
}

/// The room leaves the registry only if it is still idle and nothing was
/// queued through the registry since the check began. Both are decided
/// under the entry's write lock, which every queueing holds for reading:
/// once the entry is gone nothing more can reach this room, and everything
/// that did is answered, so the next lookup's new room is the only one.
impl Handler<Retire> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Retire, ctx: &mut Self::Context) {
        if !self.is_idle() {
            return;
        }
        let me = ctx.address();
        let left = self.chat.rooms.remove_if(&self.group_id, |_, slot| {
            slot.addr == me && slot.queued.load(Ordering::Relaxed) == msg.queued
        });
        if left.is_some() {
            self.stop_when_drained(ctx);
        }
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
                    room: self.ticket(ctx),
                    members: self.member_ids.clone(),
                    anyone_online,
                },
                content: msg.content,
                message_type: msg.message_type,
                content_type: msg.content_type,
                client_id: msg.client_id,
                origin: msg.origin,
                reply_to: msg.reply_to,
            },
            reply: msg.reply,
        });
    }
}

impl Handler<ChangePost> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: ChangePost, ctx: &mut Self::Context) {
        self.touch();
        if !self.members.contains_key(&msg.by.id) {
            // To an outsider the group's messages do not exist.
            let hidden = ChatError::not_found("message_id: no such message in your conversations");
            msg.reply.send(Err(hidden));
            return;
        }
        // Queued behind the group's earlier posts, so its new state reaches
        // every socket after the message itself.
        self.chat.persistence.do_send(ChangeMessage {
            change: NewChange {
                by: msg.by,
                message_id: msg.message_id,
                change: msg.change,
                group: Some(GroupRoute {
                    group_id: self.group_id,
                    room: self.ticket(ctx),
                    members: self.member_ids.clone(),
                }),
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
                    room.announce(
                        &ServerFrame::MemberAdded {
                            group_id: room.group_id,
                            user: &view.username,
                            role: view.role,
                            by: &room.name_of(msg.by),
                            timestamp: view.joined_at,
                        },
                        None,
                    );
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
        let names = (self.name_of(msg.user), self.name_of(msg.by));
        AtomicResponse::new(Box::pin(
            async move { request?.await? }
                .into_actor(self)
                .map(move |removed, room, ctx| {
                    removed?;
                    room.members.remove(&msg.user);
                    room.members_changed();
                    let (user, by) = names;
                    let frame = ServerFrame::MemberRemoved {
                        group_id: room.group_id,
                        user: &user,
                        by: &by,
                        timestamp: Timestamp::now(),
                    };
                    room.announce(&frame, Some(msg.user));
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
                let by = room.name_of(msg.by);
                let now = Timestamp::now();
                for (user, role) in changes? {
                    if let Some(member) = room.members.get_mut(&user) {
                        member.role = role;
                    }
                    room.announce(
                        &ServerFrame::RoleChanged {
                            group_id: room.group_id,
                            user: &room.name_of(user),
                            role: role.as_str(),
                            by: &by,
                            timestamp: now,
                        },
                        None,
                    );
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

/// A running room as the registry keeps it.
pub(crate) struct RoomSlot {
    addr: Addr<RoomActor>,
    /// How many messages were queued at the room through this entry. Each
    /// is counted after it is queued, both under the entry's read lock; the
    /// room compares the count across an idle check (see [`Retire`]).
    queued: Arc<AtomicU64>,
}

impl RoomSlot {
    fn start(group_id: i64, members: Vec<MemberRow>, chat: &Chat) -> Self {
        let queued = Arc::new(AtomicU64::new(0));
        let room = RoomActor::new(group_id, members, chat.clone(), queued.clone());
        RoomSlot {
            addr: room.start_unbounded(),
            queued,
        }
    }

    /// Queues a message by `enqueue` (which, the mailbox being unbounded,
    /// has queued it on return) and counts it.
    fn queue<M, R>(&self, msg: M, enqueue: impl FnOnce(&Addr<RoomActor>, M) -> R) -> R {
        let queued = enqueue(&self.addr, msg);
        self.queued.fetch_add(1, Ordering::Relaxed);
        queued
    }
}

/// Queues `msg` for its answer. (A message whose answer nobody awaits any
/// more is skipped by actix: messages sent for no answer use `do_send`.)
fn for_answer<M>(room: &Addr<RoomActor>, msg: M) -> Request<RoomActor, M>
where
    M: Message + Send + 'static,
    M::Result: Send,
    RoomActor: Handler<M>,
{
    room.send(msg)
}

fn without_answer<M>(room: &Addr<RoomActor>, msg: M)
where
    M: Message + Send + 'static,
    M::Result: Send,
    RoomActor: Handler<M>,
{
    room.do_send(msg);
}

impl Chat {
    /// Asks the group's room, starting it (its members loaded) on first
    /// use, and waits for the answer; 404 if the group does not exist.
    pub async fn ask_room<M, T>(&self, group_id: i64, msg: M) -> ChatResult<T>
    where
        M: Message<Result = ChatResult<T>> + Send + 'static,
        T: Send + 'static,
        RoomActor: Handler<M>,
    {
        match self.queue_at_room(group_id, msg, for_answer).await {
            Ok(answer) => answer.await?,
            Err((error, _)) => Err(error),
        }
    }

    /// Queues `msg` at the group's room like [`Chat::ask_room`], answered
    /// some other way (a post's [`Reply`]); gives it back with the error if
    /// the group does not exist.
    pub async fn tell_room<M>(&self, group_id: i64, msg: M) -> Result<(), (ChatError, M)>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomActor: Handler<M>,
    {
        self.queue_at_room(group_id, msg, without_answer).await
    }

    /// Queues `msg` at the group's room if it is running; gives it back if not.
    pub fn tell_running_room<M>(&self, group_id: i64, msg: M) -> Result<(), M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomActor: Handler<M>,
    {
        self.queue_at_running_room(group_id, msg, without_answer)
    }

    /// Every message reaches a room through here, queued while the registry
    /// entry is held: what lets an idle room leave knowing nothing more
    /// will reach it (see [`Retire`]).
    async fn queue_at_room<M, R>(
        &self,
        group_id: i64,
        msg: M,
        enqueue: fn(&Addr<RoomActor>, M) -> R,
    ) -> Result<R, (ChatError, M)> {
        let msg = match self.queue_at_running_room(group_id, msg, enqueue) {
            Ok(queued) => return Ok(queued),
            Err(msg) => msg,
        };
        let members = match self.store.group_members(group_id).await {
            Ok(members) => members,
            Err(error) => return Err((error, msg)),
        };
        // Every group has at least its owner, so no members means no group.
        if members.is_empty() {
            return Err((ChatError::not_found("group_id: no such group"), msg));
        }
        let slot = match self.rooms.entry(group_id) {
            Entry::Occupied(entry) if entry.get().addr.connected() => entry.into_ref(),
            Entry::Occupied(mut entry) => {
                entry.insert(RoomSlot::start(group_id, members, self));
                entry.into_ref()
            }
            Entry::Vacant(entry) => entry.insert(RoomSlot::start(group_id, members, self)),
        };
        Ok(slot.queue(msg, enqueue))
    }

    fn queue_at_running_room<M, R>(
        &self,
        group_id: i64,
        msg: M,
        enqueue: impl FnOnce(&Addr<RoomActor>, M) -> R,
    ) -> Result<R, M> {
        match self.rooms.get(&group_id) {
            Some(slot) if slot.addr.connected() => Ok(slot.queue(msg, enqueue)),
            _ => Err(msg),
        }
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
    use crate::test_support::{create_user, fresh_chat, fresh_chat_with};
    use crate::ChatSettings;

    async fn create_group(chat: &Chat, owner: &UserRef) -> i64 {
        chat.persistence
            .send(CreateGroup {
                creator: owner.clone(),
                name: "g".into(),
                description: String::new(),
            })
            .await
            .expect("the writer answers")
            .expect("the group is created")
            .id
    }

    #[actix::test]
    async fn an_idle_room_stops_and_the_next_use_starts_another() {
        let settings = ChatSettings {
            room_idle: Duration::from_millis(20),
            ..ChatSettings::default()
        };
        let (chat, dir) = fresh_chat_with("room-idle", settings).await;
        let alice = create_user(&chat, "alice").await;
        let group = create_group(&chat, &alice).await;
        let check = || CheckMember { user: alice.id };
        chat.ask_room(group, check())
            .await
            .expect("alice is a member");
        assert_eq!(chat.metrics.rooms_running.get(), 1);

        let deadline = Instant::now() + Duration::from_secs(5);
        while chat.metrics.rooms_running.get() > 0 {
            assert!(Instant::now() < deadline, "the idle room never stopped");
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        assert!(!chat.rooms.contains_key(&group), "it left the registry");

        chat.ask_room(group, check())
            .await
            .expect("alice is a member");
        assert_eq!(chat.metrics.rooms_running.get(), 1, "one room again");
        drop(chat);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[actix::test]
    async fn a_post_queued_behind_the_last_member_leaving_is_refused_not_dropped() {
        let (chat, dir) = fresh_chat("room-last-leave").await;
        let alice = create_user(&chat, "alice").await;
        let group = create_group(&chat, &alice).await;

        // Both are queued before the room runs: the leave first, the post
        // behind it while the leave waits for its commit.
        let leave = Remove {
            by: alice.id,
            user: alice.id,
        };
        let Ok(leave) = chat.queue_at_room(group, leave, for_answer).await else {
            panic!("the room starts");
        };
        let (reply, outcome) = Reply::channel();
        let post = PostMessage {
            accepted_at: Instant::now(),
            sender: alice.clone(),
            content: "posted while leaving".into(),
            message_type: "text".into(),
            content_type: "text/plain".into(),
            client_id: Some("c1".into()),
            origin: None,
            reply_to: None,
            reply,
        };
        assert!(chat.tell_running_room(group, post).is_ok(), "the room runs");
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
            matches!(
                chat.ask_room(group, CheckMember { user: alice.id }).await,
                Err(ChatError::NotFound(_))
            ),
            "the group is gone"
        );
        drop(chat);
        let _ = std::fs::remove_dir_all(dir);
    }
}
