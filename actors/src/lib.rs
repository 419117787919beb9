//! Parley's actors and the store beneath them. [`Chat::start`] connects the
//! database and starts the long-lived actors; the HTTP layer (the `parley`
//! crate) holds the returned [`Chat`] handle and talks to the actors through
//! it with typed messages.
//!
//! The modules, from the bottom up (each uses only those above it in this
//! list; `tests/structure/import_cycles.py` checks that no two use each
//! other, directly or around a circle):
//!
//! - [`error`], [`model`], [`protocol`], [`validate`], [`metrics`],
//!   [`limits`]: the error type, plain records, the wire protocol, input
//!   checks, counters and rate limits.
//! - [`store`]: the database (reads from anywhere; writes only from the writer).
//! - [`hub`]: user → this node's open sockets, and the [`hub::Push`] and
//!   [`hub::Disconnect`] messages a socket takes.
//! - [`cluster`]: the delivery seam every push goes through ([`cluster::Broker`]):
//!   straight into the hub on a single node, through Redis or NATS in a cluster.
//! - [`caches`], [`history`]: names, conversations, accounts and revoked
//!   tokens; the newest messages of each active conversation and group.
//! - [`persistence`]: the only writer; group commit.
//! - [`room`], [`devices`], [`presence`]: one actor per active group
//!   (membership and fan-out) and its registry; device records and which
//!   are connected; who hears that a user came online.
//! - [`chat`]: the [`Chat`] handle over all of the above.
//! - [`session`]: one actor per WebSocket.

pub mod caches;
pub mod chat;
pub mod cluster;
pub mod devices;
pub mod error;
pub mod history;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod persistence;
pub mod presence;
pub mod protocol;
pub mod room;
pub mod session;
pub mod store;
pub mod validate;

#[cfg(test)]
pub(crate) mod test_support;

pub use chat::{Chat, ChatSettings, DEFAULT_SOCKET_QUEUE};
pub use error::{ask, ChatError, ChatResult};
