//! Presence: telling a user's contacts that the user came online or went
//! offline, and telling a new socket which of its user's contacts are
//! online. Sessions report their sockets opening and closing; in a cluster
//! the listener reports users whose state changed anywhere (through the
//! chat core).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::cluster::Broker;
use crate::hub::{Hub, Push, Pushes};
use crate::model::{Timestamp, UserRef};
use crate::persistence::{PersistenceActor, TouchUser};
use crate::protocol::{encode, Presence as Status, ServerFrame};
use crate::store::Store;

/// Presence look-ups (a user's contacts, read when their first socket opens
/// or their last closes) that may use the read pool at once. In a connect
/// storm the rest wait here, in order and without a deadline: queued for a
/// pooled connection instead, they would crowd out requests and fail the
/// pool's acquire timeout.
const PRESENCE_LOOKUPS: usize = 4;

/// A handle to presence; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    /// Stamps `last_seen`.
    persistence: Addr<PersistenceActor>,
    /// Presence is pushed to co-members of groups up to this size only; in
    /// bigger groups it would cost members² frames as people come and go.
    group_limit: i64,
    /// Permits for contact look-ups (see [`PRESENCE_LOOKUPS`]).
    lookups: tokio::sync::Semaphore,
    /// Where look-ups run: the arbiter the chat core started on, which
    /// outlives the HTTP workers and runs until the store is closed. On a
    /// worker's arbiter, a look-up still reading when the server stops would
    /// be dropped with that arbiter after its runtime has gone, and sqlx
    /// cannot hand back a pooled connection outside a runtime (it panics);
    /// here, closing the store waits for it instead.
    lookup_arbiter: ArbiterHandle,
}

impl Presence {
    pub(crate) fn new(
        store: Store,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        persistence: Addr<PersistenceActor>,
        group_limit: i64,
    ) -> Self {
        Presence {
            inner: Arc::new(Inner {
                store,
                hub,
                broker,
                persistence,
                group_limit,
                lookups: tokio::sync::Semaphore::new(PRESENCE_LOOKUPS),
                lookup_arbiter: Arbiter::current(),
            }),
        }
    }

    /// A socket of `user` opened at `opened_at`. If it is the user's first
    /// (`first`), their online contacts hear `online`; either way the new
    /// socket is told which of its user's contacts were announced online
    /// before it opened, so a client starts with true presence dots (contacts
    /// announced later reach it through their own `online`).
    /// The contacts are read in the background; `online` goes out only if
    /// the user is still online by then.
    pub fn socket_opened(
        &self,
        user: UserRef,
        first: bool,
        opened_at: Instant,
        socket: Recipient<Pushes>,
    ) {
        let broker = &self.inner.broker;
        let clustered = broker.is_clustered();
        if first {
            self.touch(&user);
            broker.presence_here(&user, Status::Online);
        }
        let presence = self.clone();
        self.in_background(async move {
            let Some(contacts) = presence.contacts(&user).await else {
                return;
            };
            let inner = &presence.inner;
            // A cluster announces once it knows the user was offline on
            // every node (see `cluster::relay`).
            if first && !clustered && inner.hub.mark_announced(user.id) {
                presence.announce(&user, Status::Online, &contacts);
            }
            let now = Timestamp::now();
            let online_before = |contact: &&UserRef| {
                inner
                    .broker
                    .announced_online_at(contact.id)
                    .is_some_and(|announced| announced < opened_at)
            };
            for contact in contacts.iter().filter(online_before) {
                let frame = encode(&ServerFrame::Status {
                    user: &contact.username,
                    status: Status::Online,
                    timestamp: now,
                });
                socket.do_send(Pushes::one(Push::event(frame)));
            }
        });
    }

    /// The last socket of `user` closed: their online contacts hear
    /// `offline`, unless the user came back meanwhile.
    pub fn last_socket_closed(&self, user: UserRef) {
        self.touch(&user);
        self.inner.broker.presence_here(&user, Status::Offline);
        if !self.inner.broker.is_clustered() {
            self.announce_later(user, Status::Offline);
        }
    }

    /// Tells the user's online contacts, once they are read, that the user
    /// is now online or offline, unless that changed again meanwhile.
    pub fn announce_later(&self, user: UserRef, status: Status) {
        let presence = self.clone();
        self.in_background(async move {
            let Some(contacts) = presence.contacts(&user).await else {
                return;
            };
            if presence.inner.broker.is_online(user.id) == (status == Status::Online) {
                presence.announce(&user, status, &contacts);
            }
        });
    }

    /// Runs a look-up and what follows it on the look-up arbiter. Once that
    /// arbiter has stopped the process is exiting and nobody is left to
    /// tell, so the look-up is skipped.
    fn in_background(&self, lookup: impl Future<Output = ()> + Send + 'static) {
        if !self.inner.lookup_arbiter.spawn(lookup) {
            tracing::debug!("presence look-up skipped: the server is stopping");
        }
    }

    /// Stamps the user's `last_seen`.
    fn touch(&self, user: &UserRef) {
        self.inner.persistence.do_send(TouchUser {
            user: user.id,
            at: Timestamp::now(),
        });
    }

    async fn contacts(&self, user: &UserRef) -> Option<Vec<UserRef>> {
        let inner = &self.inner;
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = inner.lookups.acquire().await.ok()?;
        match inner.store.contacts(user.id, inner.group_limit).await {
            Ok(contacts) => Some(contacts),
            Err(error) => {
                tracing::warn!(error = ?error, "could not read contacts for presence");
                None
            }
        }
    }

    fn announce(&self, user: &UserRef, status: Status, contacts: &[UserRef]) {
        let frame = encode(&ServerFrame::Status {
            user: &user.username,
            status,
            timestamp: Timestamp::now(),
        });
        let contacts: Vec<i64> = contacts.iter().map(|contact| contact.id).collect();
        self.inner
            .broker
            .deliver(&contacts, &Push::event(frame), None);
    }
}
