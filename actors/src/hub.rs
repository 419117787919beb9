//! The hub: which sockets each user has open, and the one seam through which
//! everything reaches a socket. Sessions register and unregister themselves;
//! the persistence actor, rooms and sessions push through it. It is a plain
//! concurrent map, not an actor, so a push costs no extra message hop.

use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use bytestring::ByteString;
use dashmap::DashMap;
use smallvec::SmallVec;

use crate::session::{Disconnect, Push, SessionActor};

/// Identifies one open socket for the life of the process.
pub type SessionId = u64;

/// One open socket of a user.
#[derive(Clone)]
pub struct Socket {
    pub session: SessionId,
    pub addr: Addr<SessionActor>,
}

#[derive(Default)]
pub struct Hub {
    /// user id → that user's open sockets (most users have one or two).
    users: DashMap<i64, SmallVec<[Socket; 1]>>,
    next_session: AtomicU64,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a socket; true if it is the user's first (the user just came online).
    pub fn register(&self, user: i64, socket: Socket) -> bool {
        let mut sockets = self.users.entry(user).or_default();
        sockets.push(socket);
        sockets.len() == 1
    }

    /// Removes a socket; true if it was the user's last (the user went offline).
    pub fn unregister(&self, user: i64, session: SessionId) -> bool {
        let removed = self.users.remove_if_mut(&user, |_, sockets| {
            sockets.retain(|socket| socket.session != session);
            sockets.is_empty()
        });
        removed.is_some()
    }

    pub fn is_online(&self, user: i64) -> bool {
        self.users.contains_key(&user)
    }

    /// Number of users with at least one open socket.
    pub fn online_users(&self) -> usize {
        self.users.len()
    }

    /// Pushes an already encoded frame to every open socket of `user` except
    /// `except` (the socket a message came from). Returns how many sockets
    /// took it. A socket whose bounded queue is full is a slow consumer: it is
    /// told to close (1008) and will catch up with `sync` after reconnecting.
    pub fn push(&self, user: i64, push: &Push, except: Option<SessionId>) -> usize {
        let Some(sockets) = self.users.get(&user) else {
            return 0;
        };
        let mut reached = 0;
        for socket in sockets.iter().filter(|s| Some(s.session) != except) {
            match socket.addr.try_send(push.clone()) {
                Ok(()) => reached += 1,
                Err(SendError::Full(_)) => {
                    tracing::warn!(
                        user,
                        session = socket.session,
                        "slow consumer; closing socket"
                    );
                    socket.addr.do_send(Disconnect::slow_consumer());
                }
                // Already stopping; it unregisters itself.
                Err(SendError::Closed(_)) => {}
            }
        }
        reached
    }

    /// Pushes one event frame (not a message) to every socket of several users.
    pub fn push_to_all(&self, users: impl IntoIterator<Item = i64>, frame: &ByteString) {
        let push = Push::event(frame.clone());
        for user in users {
            self.push(user, &push, None);
        }
    }
}
