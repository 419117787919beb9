//! The chat core as one handle: [`Chat::start`] connects the database and
//! starts the long-lived actors and background loops; the HTTP layer and
//! the sessions hold the returned [`Chat`] and reach each named part
//! (store, caches, writer, rooms, devices, presence, limits, metrics)
//! through it. It owns the one path a sent message takes into the core
//! ([`Chat::outgoing`], [`Chat::send`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::caches::Caches;
use crate::cluster::relay::{ClusterBroker, NodeEvents, Timing};
use crate::cluster::{Broker, EngineUrl, LocalBroker};
use crate::devices::{DeviceRegistry, DeviceRemovedElsewhere};
use crate::error::{ChatError, ChatResult};
use crate::history::{self, History, HistoryCache};
use crate::hub::{CloseReason, Hub, SessionId};
use crate::limits::{Rate, SendAllowance};
use crate::metrics::Metrics;
use crate::model::{AccountState, AnyMessage, Timestamp, UserRef};
use crate::persistence::{
    self, ChangeMessage, MessageChange, NewChange, NewMessage, Outgoing, PersistenceActor, Reply,
    StoreMessage, Stored, Target,
};
use crate::presence::Presence;
use crate::protocol::{Conversation, MessageFields, Presence as Status};
use crate::room::{ChangePost, PostMessage, Reload, RoomDeps, RoomRegistry};
use crate::store::{Durability, Store};

/// How often rate-limit buckets that refilled, and revocations of expired
/// tokens, are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How often the store is tidied ([`Store::tidy`]): the SQLite WAL copied
/// back into the database (a page rewritten many times in between is copied
/// once), or the Postgres search index's pending entries merged (well before
/// the writer's own inserts would: the list reached their 4 MB limit every
/// 4 s at 7,000 messages/s in the measurements).
const TIDY_INTERVAL: Duration = Duration::from_secs(1);

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
    pub durability: Durability,
    /// Message sends per user (REST and socket together); `None` = unlimited.
    pub message_rate: Option<Rate>,
    /// The engine shared with the other nodes of a cluster; `None` = a
    /// single node.
    pub cluster: Option<EngineUrl>,
    /// Bytes the recent-history cache may hold; 0 turns it off (it is off
    /// in a cluster whatever this says).
    pub history_cache_bytes: usize,
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
            durability: Durability::Full,
            message_rate: Some(Rate::per_second(20.0, 50.0)),
            cluster: None,
            history_cache_bytes: history::DEFAULT_BUDGET_BYTES,
        }
    }
}

/// A handle to the running chat core; cheap to clone.
#[derive(Clone)]
pub struct Chat {
    parts: Arc<Parts>,
}

struct Parts {
    /// Read access to the database (writes go through `persistence`).
    store: Store,
    /// This node's open sockets.
    hub: Arc<Hub>,
    /// Where every push goes (this node's hub, or the cluster's engine).
    broker: Arc<dyn Broker>,
    caches: Arc<Caches>,
    history: Arc<History>,
    persistence: Addr<PersistenceActor>,
    devices: Addr<DeviceRegistry>,
    rooms: RoomRegistry,
    presence: Presence,
    send_allowance: SendAllowance,
    metrics: Arc<Metrics>,
    settings: ChatSettings,
}

impl Chat {
    /// Connects the database (running migrations) and starts the long-lived
    /// actors on the current actix arbiter.
    pub async fn start(database_url: &str, settings: ChatSettings) -> ChatResult<Chat> {
        if settings.cluster.is_some() {
            crate::cluster::relay::check_database(database_url)?;
        }
        let store = Store::connect(database_url, settings.durability).await?;
        let hub = Arc::new(Hub::new());
        let (broker, listener): (Arc<dyn Broker>, _) = match &settings.cluster {
            Some(url) => {
                let (broker, listener) = ClusterBroker::connect(url, hub.clone()).await?;
                (broker, Some(listener))
            }
            None => (Arc::new(LocalBroker::new(hub.clone())), None),
        };
        let caches = Arc::new(Caches::load(store.clone(), unix_seconds()).await?);
        // Other nodes' writers would not reach this node's cache.
        let history_budget = match broker.is_clustered() {
            true => 0,
            false => settings.history_cache_bytes,
        };
        let metrics = Arc::new(Metrics::new());
        let history = Arc::new(History::new(
            store.clone(),
            caches.clone(),
            HistoryCache::new(history_budget),
            metrics.clone(),
        ));
        let persistence = PersistenceActor::new(
            &store,
            broker.clone(),
            caches.clone(),
            history.clone(),
            metrics.clone(),
        )
        .start_unbounded();
        let devices =
            DeviceRegistry::new(store.clone(), persistence.clone(), broker.clone()).start();
        let rooms = RoomRegistry::new(RoomDeps {
            store: store.clone(),
            persistence: persistence.clone(),
            broker: broker.clone(),
            metrics: metrics.clone(),
            room_idle: settings.room_idle,
        });
        let presence = Presence::new(
            store.clone(),
            hub.clone(),
            broker.clone(),
            persistence.clone(),
            settings.presence_group_limit,
        );
        let chat = Chat {
            parts: Arc::new(Parts {
                store,
                hub,
                broker,
                caches,
                history,
                persistence,
                devices,
                rooms,
                presence,
                send_allowance: SendAllowance::new(settings.message_rate),
                metrics,
                settings,
            }),
        };
        if let Some(listener) = listener {
            let timing = Timing {
                heartbeat: chat.settings().heartbeat_interval,
                node_timeout: chat.settings().client_timeout,
            };
            listener.run(Arc::new(chat.clone()), timing);
        }
        chat.keep_tidying();
        chat.keep_sweeping();
        Ok(chat)
    }

    /// Read access to the database (every write goes through [`Chat::persistence`]).
    pub fn store(&self) -> &Store {
        &self.parts.store
    }

    /// This node's open sockets.
    pub fn hub(&self) -> &Hub {
        &self.parts.hub
    }

    /// Where every push goes.
    pub fn broker(&self) -> &dyn Broker {
        &*self.parts.broker
    }

    pub fn caches(&self) -> &Caches {
        &self.parts.caches
    }

    /// History pages, from memory when it can.
    pub fn history(&self) -> &History {
        &self.parts.history
    }

    /// The only writer.
    pub fn persistence(&self) -> &Addr<PersistenceActor> {
        &self.parts.persistence
    }

    pub fn devices(&self) -> &Addr<DeviceRegistry> {
        &self.parts.devices
    }

    /// The groups' rooms; every message to a room goes through here.
    pub fn rooms(&self) -> &RoomRegistry {
        &self.parts.rooms
    }

    pub fn presence(&self) -> &Presence {
        &self.parts.presence
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.parts.metrics
    }

    pub fn settings(&self) -> &ChatSettings {
        &self.parts.settings
    }

    /// Finds a user by name, case-insensitively.
    pub async fn user(&self, username: &str) -> ChatResult<Option<UserRef>> {
        self.caches().user(username).await
    }

    /// What token checks need about a user; `None` if there is no such user.
    pub async fn account(&self, user: i64) -> ChatResult<Option<AccountState>> {
        self.caches().account(user).await
    }

    /// Takes one message send or change from the user's allowance; 429 when
    /// it is spent.
    pub fn take_send_allowance(&self, user: i64) -> ChatResult<()> {
        self.parts.send_allowance.take(user)
    }

    /// The one way a message someone sends enters the core, over REST or a
    /// socket: checked and with its defaults filled in, then taken from the
    /// sender's allowance. `origin` is the socket it came from, if any.
    pub fn outgoing(
        &self,
        sender: UserRef,
        fields: MessageFields,
        origin: Option<SessionId>,
    ) -> ChatResult<Outgoing> {
        let max_content_chars = self.settings().max_content_chars;
        let message = Outgoing::check(sender, fields, origin, max_content_chars)?;
        self.take_send_allowance(message.sender.id)?;
        Ok(message)
    }

    /// Hands a checked message on to be stored: a private one straight to
    /// the writer, a group one through its room, which checks membership.
    /// `reply` gets the outcome after COMMIT, or the refusal.
    ///
    /// A group whose room is not running needs it started first, which
    /// takes a database read: then the returned future does that, and a
    /// sender's next message must wait for it, or the two could be stored
    /// out of order.
    pub fn send(
        &self,
        to: Conversation,
        message: Outgoing,
        reply: Reply<Stored>,
    ) -> Option<impl Future<Output = ()> + 'static> {
        let group_id = match to {
            Conversation::User(recipient) => {
                self.persistence().do_send(StoreMessage {
                    message: NewMessage {
                        message,
                        to: Target::User(recipient),
                    },
                    reply,
                });
                return None;
            }
            Conversation::Group(group_id) => group_id,
        };
        let post = PostMessage { message, reply };
        let post = self.rooms().tell_running(group_id, post).err()?;
        let rooms = self.rooms().clone();
        Some(async move {
            if let Err((error, post)) = rooms.tell(group_id, post).await {
                post.reply.send(Err(error));
            }
        })
    }

    /// [`Chat::send`] for a caller that waits for the outcome (a REST send).
    pub async fn send_and_wait(&self, to: Conversation, message: Outgoing) -> ChatResult<Stored> {
        let (reply, stored) = Reply::channel();
        if let Some(queueing) = self.send(to, message, reply) {
            queueing.await;
        }
        stored.await
    }

    /// Edits, deletes or reacts to a message `by` can see: a group message
    /// through its group's room (members only), a private one straight to
    /// the writer, which checks whose message it is. Answers with the
    /// message's new state after COMMIT.
    pub async fn change(
        &self,
        by: UserRef,
        message_id: i64,
        change: MessageChange,
    ) -> ChatResult<AnyMessage> {
        self.take_send_allowance(by.id)?;
        let hidden = || ChatError::not_found("message_id: no such message in your conversations");
        let parties = self
            .store()
            .message_parties(message_id)
            .await?
            .ok_or_else(hidden)?;
        let (reply, changed) = Reply::channel();
        match parties.group_id {
            Some(group_id) => {
                let post = ChangePost {
                    by,
                    message_id,
                    change,
                    reply,
                };
                if let Err((error, post)) = self.rooms().tell(group_id, post).await {
                    post.reply.send(Err(error));
                }
            }
            None => self.persistence().do_send(ChangeMessage {
                change: NewChange {
                    by,
                    message_id,
                    change,
                    group: None,
                },
                reply,
            }),
        }
        changed.await
    }

    /// Closes every socket with 1001 (going away), at shutdown.
    pub fn close_all_sockets(&self) {
        self.hub().close_all(CloseReason::GoingAway);
    }

    /// Waits until every write accepted so far is committed (after this,
    /// every acknowledged message is on disk), then closes the database.
    pub async fn flush_and_close(&self) {
        if let Err(error) = self.persistence().send(persistence::Flush).await {
            tracing::error!(%error, "could not flush the persistence actor");
        }
        self.store().close().await;
    }

    /// Tidies the store in the background until it is closed.
    fn keep_tidying(&self) {
        let store = self.store().clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(TIDY_INTERVAL);
            loop {
                every.tick().await;
                let tidied = store.tidy().await;
                if store.is_closed() {
                    break;
                }
                if let Err(error) = tidied {
                    tracing::warn!(error = ?error, "background store upkeep failed");
                }
            }
        });
    }

    /// Forgets, now and then, what no longer matters: send allowances that
    /// refilled and revocations of tokens that expired.
    fn keep_sweeping(&self) {
        let chat = self.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                every.tick().await;
                chat.parts.send_allowance.forget_idle();
                let now = unix_seconds();
                chat.caches().forget_expired_revocations(now);
                chat.persistence()
                    .do_send(persistence::PurgeRevokedTokens { now });
            }
        });
    }
}

/// What the other nodes of a cluster change reaches this node's parts.
impl NodeEvents for Chat {
    fn account_changed(&self, user: i64, state: AccountState) {
        self.caches().set_account(user, state);
    }

    fn token_revoked(&self, jti: String, expires_at: i64) {
        self.caches().revoke(jti, expires_at);
    }

    fn name_forgotten(&self, key: &str) {
        self.caches().forget_user(key);
    }

    fn group_changed(&self, group_id: i64) {
        // A room not running reads the members when it starts.
        let _ = self.rooms().tell_running(group_id, Reload);
    }

    fn device_removed(&self, device: i64) {
        self.devices().do_send(DeviceRemovedElsewhere { device });
    }

    fn presence_changed(&self, user: UserRef, presence: Status) {
        self.presence().announce_later(user, presence);
    }
}

fn unix_seconds() -> i64 {
    Timestamp::now().0 / 1000
}
