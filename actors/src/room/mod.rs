//! A room actor per group: the authority on who is in the group, and the
//! fan-out of the group's messages to every open socket of every member.
//! Started on first use through the [`RoomRegistry`], stopped after a while
//! idle. HTTP handlers and sessions ask it to check membership and to post
//! (always through the registry); the persistence actor hands it each
//! committed message to fan out ([`FanOut`]).

mod registry;

pub(crate) use registry::RoomDeps;
pub use registry::RoomRegistry;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::cluster::delivery_status;
use crate::error::{ChatError, ChatResult};
use crate::hub::{Deliveries, Push};
use crate::model::{AnyMessage, Role, Timestamp, UserRef};
use crate::persistence::{
    AddMember, ChangeMessage, FanOut, FanOutTo, GroupRoute, MessageChange, NewChange, NewMessage,
    Outgoing, RemoveMember, Reply, SetRoles, StoreMessage, Stored, Target,
};
use crate::protocol::{encode, ServerFrame};
use crate::store::MemberRow;

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
    /// The registry this room runs in, and what rooms need of the core.
    registry: RoomRegistry,
    last_active: Instant,
    /// Shared with this room's registry entry (see `RoomSlot::queued`).
    queued: Arc<AtomicU64>,
    /// One clone in every [`FanOutTo`] this room gave out: a room with
    /// posts whose fan-out is still to come is not idle. While one is out
    /// the room stays in the registry, so a group never has a second room
    /// running beside one with fan-outs still to do.
    tickets: Arc<()>,
    idle_check: Option<SpawnHandle>,
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
    pub message: Outgoing,
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

// ---- Actor ------------------------------------------------------------------

impl RoomActor {
    fn new(
        group_id: i64,
        rows: Vec<MemberRow>,
        registry: RoomRegistry,
        queued: Arc<AtomicU64>,
    ) -> Self {
        let mut room = RoomActor {
            group_id,
            members: HashMap::new(),
            member_ids: Arc::from([]),
            registry,
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
        self.registry.leave(self.group_id, &ctx.address(), None);
        self.stop_when_drained(ctx);
    }

    /// Nothing can queue here any more (the registry entry is gone): with
    /// its idle check cancelled, actix stops the room when its mailbox is
    /// empty and the last address of it (in a [`FanOutTo`]) is dropped.
    fn stop_when_drained(&mut self, ctx: &mut Context<Self>) {
        if let Some(idle_check) = self.idle_check.take() {
            ctx.cancel_future(idle_check);
        }
    }

    fn is_idle(&self) -> bool {
        self.last_active.elapsed() >= self.registry.deps().room_idle
            && Arc::strong_count(&self.tickets) == 1
    }

    fn touch(&mut self) {
        self.last_active = Instant::now();
    }

    /// Where the writer hands back a write of this room once committed.
    fn ticket(&self, ctx: &Context<Self>) -> FanOutTo {
        FanOutTo::new(ctx.address().recipient(), self.tickets.clone())
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
        self.registry.deps().broker.deliver(&users, &push, None);
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
        let deps = self.registry.deps();
        deps.metrics.rooms_running.inc();
        let every = (deps.room_idle / 2).clamp(IDLE_CHECK.0, IDLE_CHECK.1);
        let idle_check = ctx.run_interval(every, |room, ctx| {
            if room.is_idle() {
                let queued = room.queued.load(Ordering::Relaxed);
                ctx.address().do_send(Retire { queued });
            }
        });
        self.idle_check = Some(idle_check);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.registry.deps().metrics.rooms_running.dec();
    }
}

/// The end of an idle check, queued behind everything queued before it.
#[derive(Message)]
#[rtype(result = "()")]
struct Retire {
    /// `RoomSlot::queued` when the check began.
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
        if self
            .registry
            .leave(self.group_id, &ctx.address(), Some(msg.queued))
        {
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
        let sender = msg.message.sender.id;
        if let Err(error) = self.require_member(sender) {
            msg.reply.send(Err(error));
            return;
        }
        let deps = self.registry.deps();
        let others = self
            .member_ids
            .iter()
            .copied()
            .filter(|&user| user != sender);
        let status = delivery_status(&*deps.broker, others);
        // Queued now, in the order posts reach the room.
        deps.persistence.do_send(StoreMessage {
            message: NewMessage {
                message: msg.message,
                to: Target::Group {
                    group_id: self.group_id,
                    room: self.ticket(ctx),
                    members: self.member_ids.clone(),
                    status,
                },
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
        self.registry.deps().persistence.do_send(ChangeMessage {
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
            self.registry.deps().persistence.send(AddMember {
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
            self.registry.deps().persistence.send(RemoveMember {
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
            (changes, self.registry.deps().persistence.send(write))
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
        self.registry.deps().broker.deliver(&others, &push, None);
        Ok(())
    }
}

/// Reads the members again, before any later message is handled. A group
/// left with no members is gone, as when its last member leaves here.
impl Handler<Reload> for RoomActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Reload, _: &mut Self::Context) -> Self::Result {
        let store = self.registry.deps().store.clone();
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
        let broker = &self.registry.deps().broker;
        match <[_; 1]>::try_from(msg.frames) {
            Ok([(push, origin)]) => broker.deliver(&self.member_ids, &push, origin),
            Err(frames) => {
                let mut deliveries = Deliveries::default();
                for (push, origin) in frames {
                    deliveries.add(&self.member_ids, push, origin);
                }
                broker.deliver_all(&deliveries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::registry::for_answer;
    use super::*;
    use crate::chat::{Chat, ChatSettings};
    use crate::persistence::CreateGroup;
    use crate::protocol::MessageFields;
    use crate::test_support::{create_user, fresh_chat, fresh_chat_with};

    async fn create_group(chat: &Chat, owner: &UserRef) -> i64 {
        chat.persistence()
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
        chat.rooms()
            .ask(group, check())
            .await
            .expect("alice is a member");
        assert_eq!(chat.metrics().rooms_running.get(), 1);

        let deadline = Instant::now() + Duration::from_secs(5);
        while chat.metrics().rooms_running.get() > 0 {
            assert!(Instant::now() < deadline, "the idle room never stopped");
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        assert!(!chat.rooms().is_running(group), "it left the registry");

        chat.rooms()
            .ask(group, check())
            .await
            .expect("alice is a member");
        assert_eq!(chat.metrics().rooms_running.get(), 1, "one room again");
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
        let Ok(leave) = chat.rooms().queue(group, leave, for_answer).await else {
            panic!("the room starts");
        };
        let (reply, outcome) = Reply::channel();
        let fields = MessageFields {
            content: "posted while leaving".into(),
            client_id: Some("c1".into()),
            ..MessageFields::default()
        };
        let message = Outgoing::check(alice.clone(), fields, None, 8192).expect("a valid message");
        let post = PostMessage { message, reply };
        assert!(
            chat.rooms().tell_running(group, post).is_ok(),
            "the room runs"
        );
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
                chat.rooms()
                    .ask(group, CheckMember { user: alice.id })
                    .await,
                Err(ChatError::NotFound(_))
            ),
            "the group is gone"
        );
        drop(chat);
        let _ = std::fs::remove_dir_all(dir);
    }
}
