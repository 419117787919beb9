//! The delivery seam: how a push, a socket close or a cache change reaches
//! every node. The writer, rooms, sessions and presence hand everything that
//! leaves this node's actors to the [`Broker`] held by [`crate::Chat`]; it is
//! chosen at start: [`LocalBroker`] for a single node (straight into the
//! [`Hub`], as before clustering), or [`relay::ClusterBroker`] over Redis
//! ([`redis_engine`]) or NATS ([`nats_engine`]) for several nodes on one
//! Postgres.

pub mod nats_engine;
pub mod redis_engine;
pub mod relay;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::hub::{CloseReason, Deliveries, Hub, Push, SessionId};
use crate::model::{AccountState, DeliveryStatus, UserRef};
use crate::protocol::Presence;

/// Why every socket of a user is closed on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseCause {
    PasswordChanged,
    AccountDeleted,
}

impl CloseCause {
    pub fn reason(self) -> CloseReason {
        match self {
            CloseCause::PasswordChanged => CloseReason::PasswordChanged,
            CloseCause::AccountDeleted => CloseReason::AccountDeleted,
        }
    }
}

/// A fact this node committed that other nodes cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A password change or account deletion: what token checks need.
    Account(i64, AccountState),
    /// A token revoked by logout, until its expiry (Unix seconds).
    Revoked { jti: String, expires_at: i64 },
    /// An account is gone: forget its name (the lookup key).
    ForgetName(String),
    /// A group's members or roles changed: rooms elsewhere reload them.
    Group(i64),
    /// A device was deleted: sockets bound to it close on every node.
    DeviceRemoved(i64),
}

/// Where everything that reaches sockets, or other nodes, goes.
pub trait Broker: Send + Sync + 'static {
    /// Pushes a frame to every open socket of `users` on every node, except
    /// `origin` (the socket of this node a message came from). One node's
    /// pushes reach every socket in the order they were handed over.
    fn deliver(&self, users: &[i64], push: &Push, origin: Option<SessionId>);

    /// [`Broker::deliver`] for several frames at once: a socket of this
    /// node gets all of its frames in one mailbox message.
    fn deliver_all(&self, deliveries: &Deliveries);

    /// Closes every socket of `user` on every node.
    fn close_user(&self, user: i64, cause: CloseCause);

    /// Tells the other nodes of a change this node has already applied.
    fn share(&self, change: Change);

    /// A user's first socket on this node opened, or their last one here
    /// closed. A cluster works out whether that changes their presence
    /// anywhere and announces it; a single node announces it itself.
    fn presence_here(&self, user: &UserRef, presence: Presence);

    /// Whether the user has a socket open on any node.
    fn is_online(&self, user: i64) -> bool;

    /// Whether a push to the user would reach a socket on some node (one
    /// not closing as a slow consumer): what makes a message `delivered`.
    fn is_reachable(&self, user: i64) -> bool;

    /// [`Broker::deliver`] to one user, saying whether a socket took the
    /// push when this node can know (a cluster's other nodes do not say).
    fn deliver_to(&self, user: i64, push: &Push, origin: Option<SessionId>) -> Option<bool>;

    /// A device's first socket on this node opened (`connected`), or its
    /// last one here closed.
    fn device_here(&self, device: i64, connected: bool);

    /// Whether another node has a socket bound to the device.
    fn device_connected_elsewhere(&self, device: i64) -> bool;

    /// When this node learnt that the user came online, if they are online.
    fn announced_online_at(&self, user: i64) -> Option<Instant>;

    /// Whether other nodes exist: presence is then announced by the broker,
    /// and commits are ordered across nodes.
    fn is_clustered(&self) -> bool;

    /// Resolves once everything handed over so far has reached the engine
    /// (at once on a single node), or after a bounded wait if it cannot.
    fn flush(&self) -> BoxFuture<'static, ()>;
}

/// A message's delivery status when it is stored: `delivered` if a push now
/// would reach a socket of one of its `recipients` (anyone's but the
/// sender's), else `sent`. The one place this is decided, for private and
/// group messages alike.
pub fn delivery_status(
    broker: &dyn Broker,
    mut recipients: impl Iterator<Item = i64>,
) -> DeliveryStatus {
    if recipients.any(|user| broker.is_reachable(user)) {
        DeliveryStatus::Delivered
    } else {
        DeliveryStatus::Sent
    }
}

/// A single node: every push goes straight into this process's hub.
pub struct LocalBroker {
    hub: Arc<Hub>,
}

impl LocalBroker {
    pub fn new(hub: Arc<Hub>) -> Self {
        LocalBroker { hub }
    }
}

impl Broker for LocalBroker {
    fn deliver(&self, users: &[i64], push: &Push, origin: Option<SessionId>) {
        for &user in users {
            self.hub.push(user, push, origin);
        }
    }

    fn deliver_all(&self, deliveries: &Deliveries) {
        self.hub.push_all(deliveries);
    }

    fn close_user(&self, user: i64, cause: CloseCause) {
        self.hub.close_user(user, cause.reason());
    }

    fn share(&self, _: Change) {}

    fn presence_here(&self, _: &UserRef, _: Presence) {}

    fn is_online(&self, user: i64) -> bool {
        self.hub.is_online(user)
    }

    fn is_reachable(&self, user: i64) -> bool {
        self.hub.is_reachable(user)
    }

    fn deliver_to(&self, user: i64, push: &Push, origin: Option<SessionId>) -> Option<bool> {
        Some(self.hub.push(user, push, origin) > 0)
    }

    fn device_here(&self, _: i64, _: bool) {}

    fn device_connected_elsewhere(&self, _: i64) -> bool {
        false
    }

    fn announced_online_at(&self, user: i64) -> Option<Instant> {
        self.hub.announced_online_at(user)
    }

    fn is_clustered(&self) -> bool {
        false
    }

    fn flush(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// What `--cluster` names: the engine and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineUrl {
    Redis(String),
    Nats(String),
}

impl EngineUrl {
    /// `redis://…` (or `rediss://`) or `nats://…`.
    pub fn parse(url: &str) -> Result<EngineUrl, String> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(EngineUrl::Redis(url.to_string()))
        } else if url.starts_with("nats://") {
            Ok(EngineUrl::Nats(url.to_string()))
        } else {
            Err(format!(
                "cluster URL {url:?}: must start with redis:// or nats://"
            ))
        }
    }
}
