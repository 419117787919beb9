//! Parley's actors and the store beneath them. [`Chat::start`] connects the
//! database and starts the long-lived actors; the HTTP layer (the `parley`
//! crate) holds the returned [`Chat`] handle and talks to the actors through
//! it with typed messages.
//!
//! - [`session::SessionActor`]: one per WebSocket.
//! - [`room::RoomActor`]: one per active group; membership and fan-out.
//! - [`devices::DeviceRegistry`]: device records and which are connected.
//! - [`persistence::PersistenceActor`]: the only writer; group commit.
//! - [`hub::Hub`]: user → this node's open sockets.
//! - [`cluster::Broker`]: the delivery seam every push goes through: straight
//!   into the hub on a single node, through Redis or NATS in a cluster.

pub mod cluster;
pub mod devices;
pub mod error;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod persistence;
pub mod protocol;
pub mod room;
pub mod session;
pub mod store;
pub mod validate;

#[cfg(test)]
pub(crate) mod test_support;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;

pub use error::{ChatError, ChatResult};

use cluster::{Broker, LocalBroker};
use devices::DeviceRegistry;
use hub::Hub;
use model::{Timestamp, UserRef};
use persistence::{Directory, PersistenceActor};
use protocol::{encode, Presence, ServerFrame};
use store::Store;

/// How often rate-limit buckets that refilled are forgotten.
const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Presence look-ups (a user's contacts, read when their first socket opens
/// or their last closes) that may use the read pool at once. In a connect
/// storm the rest wait here, in order and without a deadline, instead of all
/// queueing for a pooled connection, where they crowded out requests and
/// timed out after the pool's 2 s acquire timeout (1,546 of 19,000 on
/// Postgres).
const PRESENCE_LOOKUPS: usize = 4;

/// How often the SQLite WAL is copied back into the database. A page
/// rewritten many times in between is copied once.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Tunables of the chat core (the HTTP layer fills them from its config).
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Longest message content, in characters.
    pub max_content_chars: usize,
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// How often the server pings each socket.
    pub heartbeat_interval: Duration,
    /// A socket silent for this long is closed.
    pub client_timeout: Duration,
    /// Frames that may wait for one socket before it counts as a slow consumer.
    pub socket_queue: usize,
    /// Presence is pushed to co-members of groups up to this size only; in
    /// bigger groups it would cost members² frames as people come and go.
    pub presence_group_limit: i64,
    /// A room with no activity for this long stops (it restarts on next use).
    pub room_idle: Duration,
    /// SQLite: whether each commit is fsynced before its ack.
    pub durability: store::Durability,
    /// Message sends per user (REST and socket together); `None` = unlimited.
    pub message_rate: Option<limits::Rate>,
    /// The engine shared with the other nodes of a cluster; `None` = a
    /// single node.
    pub cluster: Option<cluster::EngineUrl>,
}

/// Frames that may wait for one socket before it counts as a slow consumer.
/// One commit can hand a socket up to [`persistence::MAX_BATCH`] messages at
/// once, so this leaves a reading client room for several commits' worth.
pub const DEFAULT_SOCKET_QUEUE: usize = 4 * persistence::MAX_BATCH;

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            max_content_chars: 8192,
            max_frame_bytes: 64 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(45),
            socket_queue: DEFAULT_SOCKET_QUEUE,
            presence_group_limit: 100,
            room_idle: Duration::from_secs(300),
            durability: store::Durability::Full,
            message_rate: Some(limits::Rate::per_second(20.0, 50.0)),
            cluster: None,
        }
    }
}

/// A handle to the running chat core; cheap to clone.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<ChatInner>,
}

pub struct ChatInner {
    /// Read access to the database (writes go through `persistence`).
    pub store: Store,
    pub hub: Arc<Hub>,
    /// Where every push goes (this node's hub, or the cluster's engine).
    pub broker: Arc<dyn Broker>,
    pub directory: Arc<Directory>,
    pub metrics: Arc<metrics::Metrics>,
    pub persistence: Addr<PersistenceActor>,
    pub devices: Addr<DeviceRegistry>,
    /// group id → its running room.
    pub(crate) rooms: DashMap<i64, room::RoomSlot>,
    /// Sends per user, when limited.
    message_limiter: Option<limits::RateLimiter<i64>>,
    /// Permits for presence look-ups (see [`PRESENCE_LOOKUPS`]).
    presence_lookups: tokio::sync::Semaphore,
    pub settings: ChatSettings,
}

impl Deref for Chat {
    type Target = ChatInner;

    fn deref(&self) -> &ChatInner {
        &self.inner
    }
}

impl Chat {
    /// Connects the database (running migrations) and starts the long-lived
    /// actors on the current actix arbiter.
    pub async fn start(database_url: &str, settings: ChatSettings) -> ChatResult<Chat> {
        if settings.cluster.is_some() {
            cluster::relay::check_database(database_url)?;
        }
        let store = Store::connect(database_url, settings.durability).await?;
        let hub = Arc::new(Hub::new());
        let (broker, listener): (Arc<dyn Broker>, _) = match &settings.cluster {
            Some(url) => {
                let (broker, listener) =
                    cluster::relay::ClusterBroker::connect(url, hub.clone()).await?;
                (broker, Some(listener))
            }
            None => (Arc::new(LocalBroker::new(hub.clone())), None),
        };
        let directory = Arc::new(Directory::default());
        let now_secs = Timestamp::now().0 / 1000;
        for (jti, expires_at) in store.revoked_tokens(now_secs).await? {
            directory.revoked_tokens.insert(jti, expires_at);
        }
        let metrics = Arc::new(metrics::Metrics::new());
        let persistence =
            PersistenceActor::new(&store, broker.clone(), directory.clone(), metrics.clone())
                .start_unbounded();
        let devices =
            DeviceRegistry::new(store.clone(), persistence.clone(), broker.clone()).start();
        if store.needs_checkpoints() {
            let store = store.clone();
            actix::spawn(async move {
                let mut every = tokio::time::interval(CHECKPOINT_INTERVAL);
                loop {
                    every.tick().await;
                    let checkpointed = store.checkpoint().await;
                    if !store.needs_checkpoints() {
                        break;
                    }
                    if let Err(error) = checkpointed {
                        tracing::warn!(error = ?error, "WAL checkpoint failed");
                    }
                }
            });
        }
        let chat = Chat {
            inner: Arc::new(ChatInner {
                store,
                hub,
                broker,
                directory,
                metrics,
                persistence,
                devices,
                rooms: DashMap::new(),
                message_limiter: settings.message_rate.map(limits::RateLimiter::new),
                presence_lookups: tokio::sync::Semaphore::new(PRESENCE_LOOKUPS),
                settings,
            }),
        };
        if let Some(listener) = listener {
            listener.run(chat.clone());
        }
        let sweeper = chat.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(LIMITER_SWEEP_INTERVAL);
            loop {
                every.tick().await;
                if let Some(limiter) = &sweeper.message_limiter {
                    limiter.forget_idle();
                }
                let now = Timestamp::now().0 / 1000;
                sweeper
                    .directory
                    .revoked_tokens
                    .retain(|_, expires_at| *expires_at > now);
                sweeper
                    .persistence
                    .do_send(persistence::PurgeRevokedTokens { now });
            }
        });
        Ok(chat)
    }

    /// What token checks need about a user: cached after the first look.
    /// `None` if there is no such user.
    pub async fn account(&self, user: i64) -> ChatResult<Option<model::AccountState>> {
        if let Some(state) = self.directory.accounts.get(&user) {
            return Ok(Some(*state));
        }
        let state = self.store.account(user).await?;
        if let Some(state) = state {
            // A change committed meanwhile has already cached the newer state.
            self.directory.accounts.entry(user).or_insert(state);
        }
        Ok(state)
    }

    /// Whether a token id was revoked by logout.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.directory.revoked_tokens.contains_key(jti)
    }

    /// Takes one message send from the user's allowance; 429 when it is spent.
    pub fn check_message_rate(&self, user: i64) -> ChatResult<()> {
        match &self.message_limiter {
            Some(limiter) => limiter
                .check(&user)
                .map_err(|retry_after| ChatError::TooManyRequests { retry_after }),
            None => Ok(()),
        }
    }

    /// Closes every socket with 1001 (going away), at shutdown.
    pub fn close_all_sockets(&self) {
        self.hub.close_all(session::Disconnect::going_away);
    }

    /// Waits until every write accepted so far is committed (after this,
    /// every acknowledged message is on disk), then closes the database.
    pub async fn flush_and_close(&self) {
        if let Err(error) = self.persistence.send(persistence::Flush).await {
            tracing::error!(%error, "could not flush the persistence actor");
        }
        self.store.close().await;
    }

    /// Finds a user by name, case-insensitively.
    pub async fn user(&self, username: &str) -> ChatResult<Option<UserRef>> {
        let key = validate::lookup_key(username);
        if let Some(user) = self.directory.users.get(&key) {
            return Ok(Some(user.clone()));
        }
        let mark = self.directory.names_forgotten();
        let user = self.store.user_by_name(username).await?;
        if let Some(user) = &user {
            self.directory.remember_user(key, user.clone(), mark);
        }
        Ok(user)
    }

    /// A socket of `user` opened at `opened_at`. If it is the user's first
    /// (`first`), their online contacts hear `online`; either way the new
    /// socket is told which of its user's contacts were announced online
    /// before it opened, so a client starts with true presence dots (contacts
    /// announced later reach it through their own `online`).
    /// The contacts are read in the background; `online` goes out only if
    /// the user is still online by then.
    pub(crate) fn socket_opened(
        &self,
        user: UserRef,
        first: bool,
        opened_at: std::time::Instant,
        socket: Addr<session::SessionActor>,
    ) {
        let clustered = self.broker.is_clustered();
        if first {
            self.touch(&user);
            self.broker.presence_here(&user, Presence::Online);
        }
        let chat = self.clone();
        actix::spawn(async move {
            let Some(contacts) = chat.contacts(&user).await else {
                return;
            };
            // A cluster announces once it knows the user was offline on
            // every node (see `cluster::relay`).
            if first && !clustered && chat.hub.mark_announced(user.id) {
                chat.announce(&user, Presence::Online, &contacts);
            }
            let now = Timestamp::now();
            let online_before = |contact: &&UserRef| {
                chat.broker
                    .announced_online_at(contact.id)
                    .is_some_and(|announced| announced < opened_at)
            };
            for contact in contacts.iter().filter(online_before) {
                let frame = encode(&ServerFrame::Status {
                    user: &contact.username,
                    status: Presence::Online,
                    timestamp: now,
                });
                socket.do_send(session::Push::event(frame));
            }
        });
    }

    /// The last socket of `user` closed: their online contacts hear
    /// `offline`, unless the user came back meanwhile.
    pub(crate) fn last_socket_closed(&self, user: UserRef) {
        self.touch(&user);
        self.broker.presence_here(&user, Presence::Offline);
        if !self.broker.is_clustered() {
            self.announce_later(user, Presence::Offline);
        }
    }

    /// Tells the user's online contacts, once they are read, that the user
    /// is now online or offline, unless that changed again meanwhile.
    pub(crate) fn announce_later(&self, user: UserRef, presence: Presence) {
        let chat = self.clone();
        actix::spawn(async move {
            let Some(contacts) = chat.contacts(&user).await else {
                return;
            };
            if chat.broker.is_online(user.id) == (presence == Presence::Online) {
                chat.announce(&user, presence, &contacts);
            }
        });
    }

    /// Stamps the user's `last_seen`.
    fn touch(&self, user: &UserRef) {
        self.persistence.do_send(persistence::TouchUser {
            user: user.id,
            at: Timestamp::now(),
        });
    }

    async fn contacts(&self, user: &UserRef) -> Option<Vec<UserRef>> {
        let limit = self.settings.presence_group_limit;
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self.presence_lookups.acquire().await.ok()?;
        match self.store.contacts(user.id, limit).await {
            Ok(contacts) => Some(contacts),
            Err(error) => {
                tracing::warn!(error = ?error, "could not read contacts for presence");
                None
            }
        }
    }

    fn announce(&self, user: &UserRef, presence: Presence, contacts: &[UserRef]) {
        let frame = encode(&ServerFrame::Status {
            user: &user.username,
            status: presence,
            timestamp: Timestamp::now(),
        });
        let contacts: Vec<i64> = contacts.iter().map(|contact| contact.id).collect();
        self.broker
            .deliver(&contacts, &session::Push::event(frame), None);
    }
}

/// Sends a request to an actor and flattens the mailbox error into the reply.
pub async fn ask<A, M, T>(actor: &Addr<A>, msg: M) -> ChatResult<T>
where
    A: Actor + Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: Message<Result = ChatResult<T>> + Send + 'static,
    T: Send + 'static,
{
    actor.send(msg).await?
}
