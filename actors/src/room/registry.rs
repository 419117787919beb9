//! The room registry: group id → its running room. Every message reaches a
//! room through here, so a room that goes idle can leave knowing nothing
//! more will reach it. HTTP handlers, sessions and the cluster listener
//! use it through the chat core; the rooms themselves leave it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::{Request, ToEnvelope};
use actix::prelude::*;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::RoomActor;
use crate::cluster::Broker;
use crate::error::{ChatError, ChatResult};
use crate::metrics::Metrics;
use crate::persistence::PersistenceActor;
use crate::store::{MemberRow, Store};

/// What rooms need from the rest of the chat core.
pub(crate) struct RoomDeps {
    /// Reads a group's members when its room starts (or reloads).
    pub store: Store,
    pub persistence: Addr<PersistenceActor>,
    /// Where membership events, typing and fan-outs go.
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<Metrics>,
    /// A room with no activity for this long stops (it restarts on next use).
    pub room_idle: Duration,
}

/// A handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct RoomRegistry {
    inner: Arc<Registry>,
}

struct Registry {
    rooms: DashMap<i64, RoomSlot>,
    deps: RoomDeps,
}

/// A running room as the registry keeps it.
struct RoomSlot {
    addr: Addr<RoomActor>,
    /// How many messages were queued at the room through this entry. Each
    /// is counted after it is queued, both under the entry's read lock; the
    /// room compares the count across an idle check (see `Retire`).
    queued: Arc<AtomicU64>,
}

impl RoomRegistry {
    pub(crate) fn new(deps: RoomDeps) -> Self {
        RoomRegistry {
            inner: Arc::new(Registry {
                rooms: DashMap::new(),
                deps,
            }),
        }
    }

    pub(super) fn deps(&self) -> &RoomDeps {
        &self.inner.deps
    }

    /// Asks the group's room, starting it (its members loaded) on first
    /// use, and waits for the answer; 404 if the group does not exist.
    pub async fn ask<M, T>(&self, group_id: i64, msg: M) -> ChatResult<T>
    where
        M: Message<Result = ChatResult<T>> + Send + 'static,
        T: Send + 'static,
        RoomActor: Handler<M>,
    {
        match self.queue(group_id, msg, for_answer).await {
            Ok(answer) => answer.await?,
            Err((error, _)) => Err(error),
        }
    }

    /// Queues `msg` at the group's room like [`RoomRegistry::ask`], answered
    /// some other way (a post's `Reply`); gives it back with the error if
    /// the group does not exist.
    pub async fn tell<M>(&self, group_id: i64, msg: M) -> Result<(), (ChatError, M)>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomActor: Handler<M>,
    {
        self.queue(group_id, msg, without_answer).await
    }

    /// Queues `msg` at the group's room if it is running; gives it back if not.
    pub fn tell_running<M>(&self, group_id: i64, msg: M) -> Result<(), M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RoomActor: Handler<M>,
    {
        self.queue_at_running(group_id, msg, without_answer)
    }

    /// Whether the group has a room in the registry.
    pub fn is_running(&self, group_id: i64) -> bool {
        self.inner.rooms.contains_key(&group_id)
    }

    /// Every message reaches a room through here, queued while the registry
    /// entry is held: what lets an idle room leave knowing nothing more
    /// will reach it (see `Retire`).
    pub(super) async fn queue<M, R>(
        &self,
        group_id: i64,
        msg: M,
        enqueue: fn(&Addr<RoomActor>, M) -> R,
    ) -> Result<R, (ChatError, M)> {
        let msg = match self.queue_at_running(group_id, msg, enqueue) {
            Ok(queued) => return Ok(queued),
            Err(msg) => msg,
        };
        let members = match self.deps().store.group_members(group_id).await {
            Ok(members) => members,
            Err(error) => return Err((error, msg)),
        };
        // Every group has at least its owner, so no members means no group.
        if members.is_empty() {
            return Err((ChatError::not_found("group_id: no such group"), msg));
        }
        let slot = match self.inner.rooms.entry(group_id) {
            Entry::Occupied(entry) if entry.get().addr.connected() => entry.into_ref(),
            Entry::Occupied(mut entry) => {
                entry.insert(self.start(group_id, members));
                entry.into_ref()
            }
            Entry::Vacant(entry) => entry.insert(self.start(group_id, members)),
        };
        Ok(slot.queue(msg, enqueue))
    }

    fn queue_at_running<M, R>(
        &self,
        group_id: i64,
        msg: M,
        enqueue: impl FnOnce(&Addr<RoomActor>, M) -> R,
    ) -> Result<R, M> {
        match self.inner.rooms.get(&group_id) {
            Some(slot) if slot.addr.connected() => Ok(slot.queue(msg, enqueue)),
            _ => Err(msg),
        }
    }

    fn start(&self, group_id: i64, members: Vec<MemberRow>) -> RoomSlot {
        let queued = Arc::new(AtomicU64::new(0));
        let room = RoomActor::new(group_id, members, self.clone(), queued.clone());
        // An unbounded mailbox: posts are never held back and reordered.
        let addr = RoomActor::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            room
        });
        RoomSlot { addr, queued }
    }

    /// Takes `room` out of the registry, if its entry is still the group's
    /// and, when `queued` is given, nothing was queued there since the
    /// count read `queued`. Decided under the entry's write lock, which
    /// every queueing holds for reading. True if it left.
    pub(super) fn leave(&self, group_id: i64, room: &Addr<RoomActor>, queued: Option<u64>) -> bool {
        let left = self.inner.rooms.remove_if(&group_id, |_, slot| {
            slot.addr == *room
                && queued.is_none_or(|queued| slot.queued.load(Ordering::Relaxed) == queued)
        });
        left.is_some()
    }
}

impl RoomSlot {
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
pub(super) fn for_answer<M>(room: &Addr<RoomActor>, msg: M) -> Request<RoomActor, M>
where
    M: Message + Send + 'static,
    M::Result: Send,
    RoomActor: Handler<M>,
    <RoomActor as Actor>::Context: ToEnvelope<RoomActor, M>,
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
