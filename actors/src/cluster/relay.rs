//! The cluster broker: every node publishes what it delivers, closes and
//! changes to one subject on the engine, and applies what it hears there, its
//! own events included. Pushes reach this node's sockets only on their way
//! back from the engine, so every node applies them in the engine's one
//! order (the writer keeps commits of different nodes in id order; see
//! `persistence`). Presence is a view every node keeps from the events:
//! which nodes hold a socket of each user, and which nodes are alive
//! (heartbeats); a node silent for the client timeout is dropped with its
//! users. What the other nodes change reaches the rest of this node
//! through [`NodeEvents`], which the chat core implements. Started with the
//! chat core when it runs with `--cluster`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Envelope, Event, NodeId, WireMessage};
use super::{Broker, Change, CloseCause, EngineUrl};
use crate::error::{ChatError, ChatResult};
use crate::hub::{Deliveries, Hub, Push, SessionId};
use crate::model::{AccountState, UserRef};
use crate::protocol::Presence;

/// The longest the writer waits for its pushes to reach the engine before
/// it lets the next commit go (the engine is then down: pushes are lost and
/// clients catch up with `sync`).
const FLUSH_WAIT: Duration = Duration::from_secs(1);
/// After a failed publish, events are dropped for this long instead of each
/// batch waiting for a dead engine.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);
/// Events published in one round trip at most.
const PUBLISH_BATCH: usize = 1024;
/// Users per roster event (well under NATS's default 1 MiB payload).
const ROSTER_CHUNK: usize = 2000;

/// What an engine hands the listener.
pub enum Inbound {
    /// Subscribed (again): the node re-announces itself.
    Connected,
    /// The subscription was lost; the engine reconnects by itself.
    Disconnected,
    Event(Bytes),
}

/// A pub/sub engine: one subject, publish in order, hear everything.
pub trait Engine: Send + Sync + 'static {
    /// Publishes `events` in order; `Ok` once the engine has taken them all.
    fn publish<'a>(&'a self, events: &'a [Bytes]) -> BoxFuture<'a, Result<(), String>>;

    /// Hears the subject until the process ends, reconnecting by itself,
    /// and hands every event (in the engine's order) to `inbox`.
    fn listen(self: Arc<Self>, inbox: mpsc::UnboundedSender<Inbound>) -> BoxFuture<'static, ()>;
}

/// What this node does with what the cluster tells it: the caches, rooms,
/// devices and presence above the broker react through this, so the broker
/// names none of them.
pub trait NodeEvents: Send + Sync + 'static {
    /// Another node changed an account (password, deletion).
    fn account_changed(&self, user: i64, state: AccountState);
    /// Another node revoked a token (logout) until `expires_at` (Unix seconds).
    fn token_revoked(&self, jti: String, expires_at: i64);
    /// Another node deleted the account with this lookup key.
    fn name_forgotten(&self, key: &str);
    /// Another node changed a group's members or roles.
    fn group_changed(&self, group_id: i64);
    /// Another node deleted a device: its sockets here close.
    fn device_removed(&self, device: i64);
    /// The user came online or went offline in the cluster as a whole:
    /// their contacts hear it.
    fn presence_changed(&self, user: UserRef, presence: Presence);
}

/// How the listener keeps time: the heartbeat it sends, and how long a
/// silent node is waited for before its users count as offline.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub node_timeout: Duration,
}

/// The subject (Redis channel, NATS subject) every node of a cluster shares.
pub const SUBJECT: &str = "parley.events";

enum Outgoing {
    Event(Bytes),
    /// A marker event: the flush waiting for it is done when it comes back.
    Marker(u64, Bytes),
}

/// Flushes waiting for their marker to come back from the engine, by marker.
type PendingFlushes = Arc<DashMap<u64, oneshot::Sender<()>>>;

/// Where a user is online, as this node has heard.
struct Seen {
    username: Arc<str>,
    nodes: SmallVec<[NodeId; 2]>,
    /// When this node heard that the user came online (for the snapshot).
    since: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Unchanged,
    CameOnline,
    WentOffline,
}

#[derive(Default)]
struct PresenceView {
    users: DashMap<i64, Seen>,
}

impl PresenceView {
    fn set(&self, user: i64, username: &str, node: NodeId, online: bool) -> Transition {
        if online {
            let mut seen = self.users.entry(user).or_insert_with(|| Seen {
                username: username.into(),
                nodes: SmallVec::new(),
                since: Instant::now(),
            });
            let first = seen.nodes.is_empty();
            if !seen.nodes.contains(&node) {
                seen.nodes.push(node);
            }
            if first {
                Transition::CameOnline
            } else {
                Transition::Unchanged
            }
        } else {
            let removed = self.users.remove_if_mut(&user, |_, seen| {
                seen.nodes.retain(|held| *held != node);
                seen.nodes.is_empty()
            });
            if removed.is_some() {
                Transition::WentOffline
            } else {
                Transition::Unchanged
            }
        }
    }

    /// Forgets a node; the users it alone held.
    fn drop_node(&self, node: NodeId) -> Vec<UserRef> {
        let mut gone = Vec::new();
        self.users.retain(|&user, seen| {
            seen.nodes.retain(|held| *held != node);
            if seen.nodes.is_empty() {
                gone.push(UserRef {
                    id: user,
                    username: seen.username.clone(),
                });
                false
            } else {
                true
            }
        });
        gone
    }

    /// The users this view holds on `node`.
    fn held_by(&self, node: NodeId) -> Vec<UserRef> {
        self.users
            .iter()
            .filter(|seen| seen.nodes.contains(&node))
            .map(|seen| UserRef {
                id: *seen.key(),
                username: seen.username.clone(),
            })
            .collect()
    }
}

/// Liveness of the other nodes, and of this node's own subscription.
#[derive(Default)]
struct Liveness {
    /// Other node → when it was last heard.
    nodes: HashMap<NodeId, Instant>,
    /// Since when the subscription is up; `None` while it is down (nobody
    /// is declared dead while this node cannot hear).
    connected_since: Option<Instant>,
}

pub struct ClusterBroker {
    me: NodeId,
    hub: Arc<Hub>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    pending_flushes: PendingFlushes,
    next_marker: std::sync::atomic::AtomicU64,
    view: PresenceView,
    /// Users with a socket open on this node, as the sessions report them
    /// (the view learns them only through the engine).
    here: DashMap<i64, Arc<str>>,
    /// Device → the other nodes with a socket bound to it.
    devices_elsewhere: DashMap<i64, SmallVec<[NodeId; 1]>>,
    /// Devices with a socket bound to them on this node.
    devices_here: DashMap<i64, ()>,
    liveness: Mutex<Liveness>,
}

/// The half of a cluster broker that hears the engine; run it with the chat.
pub struct Listener {
    broker: Arc<ClusterBroker>,
    inbox: mpsc::UnboundedReceiver<Inbound>,
}

impl ClusterBroker {
    /// Connects to the engine and starts publishing; events are heard once
    /// [`Listener::run`] is called.
    pub async fn connect(
        url: &EngineUrl,
        hub: Arc<Hub>,
    ) -> ChatResult<(Arc<ClusterBroker>, Listener)> {
        let engine: Arc<dyn Engine> = match url {
            EngineUrl::Redis(url) => {
                Arc::new(super::redis_engine::RedisEngine::connect(url).await?)
            }
            EngineUrl::Nats(url) => Arc::new(super::nats_engine::NatsEngine::connect(url).await?),
        };
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let (inbound, inbox) = mpsc::unbounded_channel();
        let pending_flushes = PendingFlushes::default();
        actix::spawn(publish_loop(
            engine.clone(),
            outgoing,
            pending_flushes.clone(),
        ));
        actix::spawn(engine.listen(inbound));
        let broker = Arc::new(ClusterBroker {
            me: random_node_id(),
            hub,
            outbox,
            pending_flushes,
            next_marker: std::sync::atomic::AtomicU64::new(0),
            view: PresenceView::default(),
            here: DashMap::new(),
            devices_elsewhere: DashMap::new(),
            devices_here: DashMap::new(),
            liveness: Mutex::new(Liveness::default()),
        });
        tracing::info!(node = broker.me, engine = ?url, "joined the cluster");
        Ok((broker.clone(), Listener { broker, inbox }))
    }

    fn encode(&self, event: Event, frame: Option<&bytestring::ByteString>) -> Bytes {
        let envelope = Envelope {
            from: self.me,
            event,
        };
        wire::encode(&envelope, frame)
    }

    fn publish(&self, event: Event, frame: Option<&bytestring::ByteString>) {
        // The publisher runs as long as the process; a send fails only at exit.
        let _ = self.outbox.send(Outgoing::Event(self.encode(event, frame)));
    }

    fn publish_roster(&self) {
        let users: Vec<(i64, String)> = self
            .here
            .iter()
            .map(|entry| (*entry.key(), entry.value().to_string()))
            .collect();
        let devices: Vec<i64> = self.devices_here.iter().map(|entry| *entry.key()).collect();
        for chunk in users.chunks(ROSTER_CHUNK) {
            let event = Event::Roster {
                users: chunk.to_vec(),
                devices: Vec::new(),
            };
            self.publish(event, None);
        }
        for chunk in devices.chunks(ROSTER_CHUNK) {
            let event = Event::Roster {
                users: Vec::new(),
                devices: chunk.to_vec(),
            };
            self.publish(event, None);
        }
    }

    fn link_device(&self, device: i64, node: NodeId, connected: bool) {
        if connected {
            let mut nodes = self.devices_elsewhere.entry(device).or_default();
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        } else {
            self.devices_elsewhere.remove_if_mut(&device, |_, nodes| {
                nodes.retain(|held| *held != node);
                nodes.is_empty()
            });
        }
    }

    fn forget_devices_of(&self, node: NodeId) {
        self.devices_elsewhere.retain(|_, nodes| {
            nodes.retain(|held| *held != node);
            !nodes.is_empty()
        });
    }

    fn heard(&self, node: NodeId) {
        if node != self.me {
            let mut liveness = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
            liveness.nodes.insert(node, Instant::now());
        }
    }

    /// Whether this node is the one that announces for dead nodes' users:
    /// the lowest id among the nodes alive.
    fn announces_for_the_dead(&self, liveness: &Liveness) -> bool {
        liveness.nodes.keys().all(|&node| node > self.me)
    }
}

impl Broker for ClusterBroker {
    fn deliver(&self, users: &[i64], push: &Push, origin: Option<SessionId>) {
        if users.is_empty() {
            return;
        }
        let event = Event::Deliver {
            users: users.to_vec(),
            origin,
            message: push.message.as_ref().map(WireMessage::from_pushed),
        };
        self.publish(event, Some(&push.frame));
    }

    /// Each frame is its own event on the engine; the nodes push them as
    /// they come.
    fn deliver_all(&self, deliveries: &Deliveries) {
        for (users, push, origin) in deliveries.iter() {
            self.deliver(users, push, origin);
        }
    }

    fn close_user(&self, user: i64, cause: CloseCause) {
        self.hub.close_user(user, cause.reason());
        self.publish(Event::Close { user, cause }, None);
    }

    fn share(&self, change: Change) {
        let event = match change {
            Change::Account(user, state) => Event::Account {
                user,
                token_generation: state.token_generation,
                deleted: state.deleted,
            },
            Change::Revoked { jti, expires_at } => Event::Revoked { jti, expires_at },
            Change::ForgetName(key) => Event::ForgetName { key },
            Change::Group(group_id) => Event::Group { group_id },
            Change::DeviceRemoved(device) => Event::DeviceRemoved { device },
        };
        self.publish(event, None);
    }

    fn presence_here(&self, user: &UserRef, presence: Presence) {
        let online = presence == Presence::Online;
        if online {
            self.here.insert(user.id, user.username.clone());
        } else {
            self.here.remove(&user.id);
        }
        let event = Event::Presence {
            user: user.id,
            username: user.username.to_string(),
            online,
        };
        self.publish(event, None);
    }

    fn is_online(&self, user: i64) -> bool {
        self.view.users.contains_key(&user) || self.hub.is_online(user)
    }

    fn is_reachable(&self, user: i64) -> bool {
        self.view.users.contains_key(&user) || self.hub.is_reachable(user)
    }

    fn deliver_to(&self, user: i64, push: &Push, origin: Option<SessionId>) -> Option<bool> {
        self.deliver(&[user], push, origin);
        None
    }

    fn announced_online_at(&self, user: i64) -> Option<Instant> {
        self.view.users.get(&user).map(|seen| seen.since)
    }

    fn device_here(&self, device: i64, connected: bool) {
        if connected {
            self.devices_here.insert(device, ());
        } else {
            self.devices_here.remove(&device);
        }
        self.publish(Event::DeviceLink { device, connected }, None);
    }

    fn device_connected_elsewhere(&self, device: i64) -> bool {
        self.devices_elsewhere.contains_key(&device)
    }

    fn is_clustered(&self) -> bool {
        true
    }

    /// Publishes a marker and waits until it comes back: the engine has
    /// then taken everything published before it, and queued it for every
    /// subscriber ahead of anything another node publishes later. (A
    /// client-side flush is not enough: NATS's only writes the socket, and
    /// another node's later events could still be read first.)
    fn flush(&self) -> BoxFuture<'static, ()> {
        let marker = self
            .next_marker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done, flushed) = oneshot::channel();
        self.pending_flushes.insert(marker, done);
        let bytes = self.encode(Event::Marker { marker }, None);
        let _ = self.outbox.send(Outgoing::Marker(marker, bytes));
        let pending = self.pending_flushes.clone();
        Box::pin(async move {
            if tokio::time::timeout(FLUSH_WAIT, flushed).await.is_err() {
                pending.remove(&marker);
            }
        })
    }
}

impl Listener {
    /// Applies what the engine says, and beats the heart, for as long as the
    /// process runs.
    pub fn run(self, node: Arc<dyn NodeEvents>, timing: Timing) {
        let Listener { broker, mut inbox } = self;
        let heart = broker.clone();
        let beat_node = node.clone();
        actix::spawn(async move {
            while let Some(inbound) = inbox.recv().await {
                apply(&broker, &*node, inbound);
            }
        });
        actix::spawn(async move {
            let mut every = tokio::time::interval(timing.heartbeat);
            loop {
                every.tick().await;
                heart.publish(Event::Alive, None);
                sweep(&heart, &*beat_node, timing.node_timeout);
            }
        });
    }
}

fn apply(broker: &ClusterBroker, node: &dyn NodeEvents, inbound: Inbound) {
    let bytes = match inbound {
        Inbound::Connected => return rejoin(broker, node),
        Inbound::Disconnected => {
            tracing::warn!("lost the cluster engine; live pushes pause until it is back");
            let mut liveness = broker.liveness.lock().unwrap_or_else(|e| e.into_inner());
            liveness.connected_since = None;
            return;
        }
        Inbound::Event(bytes) => bytes,
    };
    let Some((Envelope { from, event }, push)) = wire::decode(&bytes) else {
        tracing::warn!(bytes = bytes.len(), "ignored an event no Parley node wrote");
        return;
    };
    broker.heard(from);
    let mine = from == broker.me;
    match event {
        Event::Deliver { users, origin, .. } => {
            if let Some(push) = push {
                let except = if mine { origin } else { None };
                for user in users {
                    broker.hub.push(user, &push, except);
                }
            }
        }
        Event::Close { user, cause } if !mine => {
            broker.hub.close_user(user, cause.reason());
        }
        Event::Account {
            user,
            token_generation,
            deleted,
        } if !mine => {
            let state = AccountState {
                token_generation,
                deleted,
            };
            node.account_changed(user, state);
        }
        Event::Revoked { jti, expires_at } if !mine => node.token_revoked(jti, expires_at),
        Event::ForgetName { key } if !mine => node.name_forgotten(&key),
        Event::Group { group_id } if !mine => node.group_changed(group_id),
        Event::Presence {
            user,
            username,
            online,
        } => {
            let transition = broker.view.set(user, &username, from, online);
            if mine {
                announce(node, user, username.into(), transition);
            }
        }
        Event::Roster { users, devices } if !mine => {
            for (user, username) in users {
                broker.view.set(user, &username, from, true);
            }
            for device in devices {
                broker.link_device(device, from, true);
            }
        }
        Event::DeviceLink { device, connected } if !mine => {
            broker.link_device(device, from, connected);
        }
        Event::DeviceRemoved { device } if !mine => {
            broker.devices_elsewhere.remove(&device);
            node.device_removed(device);
        }
        Event::Hello if !mine => broker.publish_roster(),
        Event::Marker { marker } if mine => {
            if let Some((_, done)) = broker.pending_flushes.remove(&marker) {
                let _ = done.send(());
            }
        }
        _ => {}
    }
}

/// Subscribed again: this node's own part of the view is set from its
/// sockets (events of its own may have been lost meanwhile), and it asks
/// the others for theirs.
fn rejoin(broker: &ClusterBroker, node: &dyn NodeEvents) {
    {
        let mut liveness = broker.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        liveness.connected_since = Some(now);
        // Everyone gets a full timeout to be heard again.
        for heard in liveness.nodes.values_mut() {
            *heard = now;
        }
    }
    let held: Vec<UserRef> = broker.view.held_by(broker.me);
    for user in &held {
        if !broker.here.contains_key(&user.id) {
            let transition = broker.view.set(user.id, &user.username, broker.me, false);
            announce(node, user.id, user.username.clone(), transition);
        }
    }
    let here: Vec<(i64, Arc<str>)> = broker
        .here
        .iter()
        .map(|entry| (*entry.key(), entry.value().clone()))
        .collect();
    for (user, username) in here {
        let transition = broker.view.set(user, &username, broker.me, true);
        announce(node, user, username, transition);
    }
    broker.publish(Event::Hello, None);
    broker.publish_roster();
}

/// Drops nodes not heard for `timeout`, with their users; the lowest live
/// node tells those users' contacts they are offline.
fn sweep(broker: &ClusterBroker, node: &dyn NodeEvents, timeout: Duration) {
    let (dead, announcer) = {
        let mut liveness = broker.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let hearing = liveness
            .connected_since
            .is_some_and(|since| since.elapsed() > timeout);
        if !hearing {
            return;
        }
        let mut dead = Vec::new();
        liveness.nodes.retain(|&node, heard| {
            let alive = heard.elapsed() <= timeout;
            if !alive {
                dead.push(node);
            }
            alive
        });
        (dead, broker.announces_for_the_dead(&liveness))
    };
    for silent in dead {
        broker.forget_devices_of(silent);
        let gone = broker.view.drop_node(silent);
        tracing::warn!(
            node = silent,
            users = gone.len(),
            "a node went silent; its users are offline"
        );
        if announcer {
            for user in gone {
                announce(node, user.id, user.username, Transition::WentOffline);
            }
        }
    }
}

fn announce(node: &dyn NodeEvents, user: i64, username: Arc<str>, transition: Transition) {
    let presence = match transition {
        Transition::Unchanged => return,
        Transition::CameOnline => Presence::Online,
        Transition::WentOffline => Presence::Offline,
    };
    node.presence_changed(UserRef { id: user, username }, presence);
}

async fn publish_loop(
    engine: Arc<dyn Engine>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    pending_flushes: PendingFlushes,
) {
    let mut events = Vec::new();
    let mut markers = Vec::new();
    let mut paused_until: Option<Instant> = None;
    while let Some(first) = outgoing.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Event(bytes) => events.push(bytes),
                Outgoing::Marker(marker, bytes) => {
                    events.push(bytes);
                    markers.push(marker);
                }
            }
            if events.len() < PUBLISH_BATCH {
                next = outgoing.try_recv().ok();
            }
        }
        let paused = paused_until.is_some_and(|until| Instant::now() < until);
        let mut published = false;
        if !paused {
            match engine.publish(&events).await {
                Ok(()) => {
                    published = true;
                    if paused_until.take().is_some() {
                        tracing::info!("publishing to the cluster engine again");
                    }
                }
                Err(error) => {
                    if paused_until.is_none() {
                        tracing::warn!(%error, "cannot publish to the cluster engine; pushes are lost until it is back (clients catch up with sync)");
                    }
                    paused_until = Some(Instant::now() + PUBLISH_RETRY);
                }
            }
        }
        events.clear();
        // A marker that did not go out will not come back: its flush is
        // over now rather than at its time-out.
        for marker in markers.drain(..) {
            if !published {
                if let Some((_, done)) = pending_flushes.remove(&marker) {
                    let _ = done.send(());
                }
            }
        }
    }
}

fn random_node_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Refuses what a cluster cannot run on.
pub fn check_database(database_url: &str) -> ChatResult<()> {
    if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(())
    } else {
        Err(ChatError::invalid(
            "cluster: several nodes need one shared Postgres database (--database-url postgres://…); SQLite is one process's file",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_online_while_any_node_holds_a_socket_and_offline_when_the_last_goes() {
        let view = PresenceView::default();
        assert_eq!(view.set(1, "alice", 10, true), Transition::CameOnline);
        assert_eq!(view.set(1, "alice", 20, true), Transition::Unchanged);
        assert_eq!(view.set(1, "alice", 10, false), Transition::Unchanged);
        assert_eq!(view.set(1, "alice", 20, false), Transition::WentOffline);
        assert_eq!(view.set(1, "alice", 20, false), Transition::Unchanged);
    }

    #[test]
    fn dropping_a_dead_node_takes_only_the_users_it_alone_held() {
        let view = PresenceView::default();
        view.set(1, "alice", 10, true);
        view.set(2, "bob", 10, true);
        view.set(2, "bob", 20, true);
        let gone = view.drop_node(10);
        assert_eq!(gone.iter().map(|user| user.id).collect::<Vec<_>>(), vec![1]);
        assert!(view.users.contains_key(&2));
        assert_eq!(view.held_by(20).len(), 1);
    }
}
