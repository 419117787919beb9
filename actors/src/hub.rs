//! The hub: which sockets each user has open on this node, and the two
//! messages a socket takes from the rest of the core ([`Pushes`] of encoded
//! frames, and [`Disconnect`]). Sessions register and unregister
//! themselves; every push reaches it through the delivery seam
//! ([`crate::cluster::Broker`]), straight on one node or on its way back
//! from the engine in a cluster. It is a plain concurrent map, not an actor,
//! so a push costs no extra message hop. It knows sockets only as
//! [`Recipient`]s, never the session actor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytestring::ByteString;
use dashmap::DashMap;
use smallvec::SmallVec;

use crate::metrics::MessageKind;

/// Identifies one open socket for the life of the process.
pub type SessionId = u64;

/// An encoded frame for one socket.
#[derive(Clone)]
pub struct Push {
    pub frame: ByteString,
    /// Set when the frame carries a message.
    pub message: Option<PushedMessage>,
}

/// What a socket needs to know about a message frame it is pushed.
#[derive(Debug, Clone, Copy)]
pub struct PushedMessage {
    /// Lets a socket skip what a `sync` already replayed to it.
    pub id: i64,
    pub kind: MessageKind,
    /// When the server accepted the message, for the delivery latency metric.
    pub accepted_at: Instant,
}

impl Push {
    pub fn message(message: PushedMessage, frame: ByteString) -> Self {
        Push {
            frame,
            message: Some(message),
        }
    }

    /// Any other frame: presence, receipts, typing, membership events.
    pub fn event(frame: ByteString) -> Self {
        Push {
            frame,
            message: None,
        }
    }
}

/// What a socket takes in one mailbox message: one frame, or every frame
/// one commit delivers to it (fewer actor hops, a shorter queue).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pushes {
    pub frames: SmallVec<[Push; 1]>,
    /// The frames' place in the socket's [`Backlog`], given back when this
    /// message is dropped: once the session has taken it, or when it was
    /// never queued.
    _counted: Option<Counted>,
}

impl Pushes {
    /// One frame outside the socket's backlog (a presence snapshot the
    /// session asks for itself).
    pub fn one(push: Push) -> Self {
        Pushes {
            frames: smallvec::smallvec![push],
            _counted: None,
        }
    }
}

/// How many pushed frames a socket has not yet taken from its mailbox. The
/// mailbox bounds messages, and one message may carry a whole commit's
/// frames, so the bound on frames (`--socket-queue`) is kept here: beyond
/// it the socket is a slow consumer.
pub struct Backlog {
    frames: AtomicUsize,
    capacity: usize,
}

impl Backlog {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Backlog {
            frames: AtomicUsize::new(0),
            capacity,
        })
    }

    /// Counts `frames` in, or None if they do not fit.
    fn count(self: &Arc<Self>, frames: usize) -> Option<Counted> {
        self.frames
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + frames <= self.capacity).then_some(queued + frames)
            })
            .ok()
            .map(|_| Counted {
                backlog: self.clone(),
                frames,
            })
    }
}

/// Frames counted in a [`Backlog`]; dropping it counts them out.
struct Counted {
    backlog: Arc<Backlog>,
    frames: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.backlog.frames.fetch_sub(self.frames, Ordering::AcqRel);
    }
}

/// Frames for several users, gathered so that each socket gets all of its
/// frames in one mailbox message, in the order they were added.
#[derive(Default)]
pub struct Deliveries {
    entries: Vec<Delivery>,
}

struct Delivery {
    users: SmallVec<[i64; 2]>,
    push: Push,
    /// The socket a message came from: it gets an ack instead.
    origin: Option<SessionId>,
}

impl Deliveries {
    /// Adds a frame for every socket of `users` but `origin`; its index in
    /// what [`Hub::push_all`] returns.
    pub fn add(&mut self, users: &[i64], push: Push, origin: Option<SessionId>) -> usize {
        self.entries.push(Delivery {
            users: users.iter().copied().collect(),
            push,
            origin,
        });
        self.entries.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each frame with its users and origin, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&[i64], &Push, Option<SessionId>)> {
        self.entries
            .iter()
            .map(|entry| (&entry.users[..], &entry.push, entry.origin))
    }
}

/// Why the server closes a socket; the session turns it into a close code
/// and reason for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The socket's outbound queue is full: the client does not read fast enough.
    SlowConsumer,
    /// The server is shutting down.
    GoingAway,
    /// The user deleted their account.
    AccountDeleted,
    /// The user changed their password: the token this socket was opened
    /// with no longer works.
    PasswordChanged,
    /// The account could not be checked (the database failed); the client
    /// may reconnect.
    AccountUnknown,
    /// The device this socket was bound to was deleted.
    DeviceRemoved,
}

/// Close the socket, saying why.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Disconnect(pub CloseReason);

/// One open socket of a user, as the hub and the device registry reach it.
#[derive(Clone)]
pub struct Socket {
    pub session: SessionId,
    /// Takes pushes, at most `backlog`'s capacity of frames queued (see
    /// [`Hub::push`]).
    pub push: Recipient<Pushes>,
    pub backlog: Arc<Backlog>,
    pub close: Recipient<Disconnect>,
}

impl Socket {
    /// Queues `frames` for the socket unless they would overflow its
    /// backlog (a slow consumer).
    fn offer(&self, frames: SmallVec<[Push; 1]>) -> Offer {
        let Some(counted) = self.backlog.count(frames.len()) else {
            return Offer::Overflowed;
        };
        let pushes = Pushes {
            frames,
            _counted: Some(counted),
        };
        match self.push.try_send(pushes) {
            Ok(()) => Offer::Queued,
            Err(SendError::Full(_)) => Offer::Overflowed,
            // Already stopping; it unregisters itself.
            Err(SendError::Closed(_)) => Offer::Closed,
        }
    }
}

/// What became of frames offered to a socket.
enum Offer {
    Queued,
    Overflowed,
    Closed,
}

/// An online user: their sockets, and when their contacts were told so.
struct Online {
    /// Set when `online` went out to the contacts. A socket opened later
    /// learns of this user from its presence snapshot instead; one opened
    /// earlier got the announcement. Keying the snapshot on this instant, not
    /// on when the first socket opened, keeps a contact from hearing both.
    announced: Option<Instant>,
    sockets: SmallVec<[Entry; 1]>,
}

/// A socket as the hub keeps it.
struct Entry {
    socket: Socket,
    /// Its queue overflowed and it was told to close: push nothing more to it
    /// (so its memory stays bounded while the client does not read).
    overflowed: bool,
}

#[derive(Default)]
pub struct Hub {
    /// user id → that user's open sockets (most users have one or two).
    users: DashMap<i64, Online>,
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
        let mut online = self.users.entry(user).or_insert_with(|| Online {
            announced: None,
            sockets: SmallVec::new(),
        });
        online.sockets.push(Entry {
            socket,
            overflowed: false,
        });
        online.sockets.len() == 1
    }

    /// Removes a socket; true if it was the user's last (the user went offline).
    pub fn unregister(&self, user: i64, session: SessionId) -> bool {
        let removed = self.users.remove_if_mut(&user, |_, online| {
            online
                .sockets
                .retain(|entry| entry.socket.session != session);
            online.sockets.is_empty()
        });
        removed.is_some()
    }

    pub fn is_online(&self, user: i64) -> bool {
        self.users.contains_key(&user)
    }

    /// Whether a push to the user would reach a socket: one that is open
    /// and not already closing as a slow consumer.
    pub fn is_reachable(&self, user: i64) -> bool {
        self.users
            .get(&user)
            .is_some_and(|online| online.sockets.iter().any(|entry| !entry.overflowed))
    }

    /// Records that the user's contacts are being told they are online;
    /// false if the user has no socket open any more (nothing to announce).
    pub fn mark_announced(&self, user: i64) -> bool {
        match self.users.get_mut(&user) {
            Some(mut online) => {
                online.announced = Some(Instant::now());
                true
            }
            None => false,
        }
    }

    /// When the user's contacts were told they are online, if they are online.
    pub fn announced_online_at(&self, user: i64) -> Option<Instant> {
        self.users.get(&user).and_then(|online| online.announced)
    }

    /// Pushes an already encoded frame to every open socket of `user` except
    /// `except` (the socket a message came from). Returns how many sockets
    /// took it. A socket whose bounded queue is full is a slow consumer: it is
    /// told to close (1008) and will catch up with `sync` after reconnecting.
    pub fn push(&self, user: i64, push: &Push, except: Option<SessionId>) -> usize {
        let Some(online) = self.users.get(&user) else {
            return 0;
        };
        let mut reached = 0;
        let mut overflowed = SmallVec::<[SessionId; 1]>::new();
        let receivers = online
            .sockets
            .iter()
            .filter(|entry| !entry.overflowed && Some(entry.socket.session) != except);
        for entry in receivers {
            match entry.socket.offer(smallvec::smallvec![push.clone()]) {
                Offer::Queued => reached += 1,
                Offer::Overflowed => overflowed.push(entry.socket.session),
                Offer::Closed => {}
            }
        }
        drop(online);
        if !overflowed.is_empty() {
            self.close_slow(user, &overflowed);
        }
        reached
    }

    /// Pushes gathered frames, each socket's in one mailbox message (see
    /// [`Hub::push`] for who gets what and for slow consumers). Returns, per
    /// frame in the order added, whether a socket took it.
    pub fn push_all(&self, deliveries: &Deliveries) -> Vec<bool> {
        /// One socket's frames, and which deliveries they came from.
        type Frames = (SessionId, SmallVec<[Push; 1]>, SmallVec<[usize; 1]>);
        let mut by_user: HashMap<i64, SmallVec<[Frames; 1]>> = HashMap::new();
        for (index, delivery) in deliveries.entries.iter().enumerate() {
            for &user in &delivery.users {
                let Some(online) = self.users.get(&user) else {
                    continue;
                };
                let receivers = online.sockets.iter().filter(|entry| {
                    !entry.overflowed && Some(entry.socket.session) != delivery.origin
                });
                for entry in receivers {
                    let sockets = by_user.entry(user).or_default();
                    let session = entry.socket.session;
                    let at = match sockets.iter().position(|frames| frames.0 == session) {
                        Some(at) => at,
                        None => {
                            sockets.push((session, SmallVec::new(), SmallVec::new()));
                            sockets.len() - 1
                        }
                    };
                    sockets[at].1.push(delivery.push.clone());
                    sockets[at].2.push(index);
                }
            }
        }
        let mut reached = vec![false; deliveries.entries.len()];
        for (user, sockets) in by_user {
            let Some(online) = self.users.get(&user) else {
                continue;
            };
            let mut overflowed = SmallVec::<[SessionId; 1]>::new();
            for (session, frames, indices) in sockets {
                let Some(entry) = online.sockets.iter().find(|e| e.socket.session == session)
                else {
                    continue;
                };
                match entry.socket.offer(frames) {
                    Offer::Queued => indices.iter().for_each(|&index| reached[index] = true),
                    Offer::Overflowed => overflowed.push(session),
                    Offer::Closed => {}
                }
            }
            drop(online);
            if !overflowed.is_empty() {
                self.close_slow(user, &overflowed);
            }
        }
        reached
    }

    /// Marks sockets whose queue is full and tells each, once, to close with
    /// 1008. The close is queued behind the frames the client has yet to read.
    fn close_slow(&self, user: i64, sessions: &[SessionId]) {
        let Some(mut online) = self.users.get_mut(&user) else {
            return;
        };
        for entry in online.sockets.iter_mut() {
            if sessions.contains(&entry.socket.session) && !entry.overflowed {
                entry.overflowed = true;
                tracing::warn!(
                    user,
                    session = entry.socket.session,
                    "slow consumer; closing socket"
                );
                entry
                    .socket
                    .close
                    .do_send(Disconnect(CloseReason::SlowConsumer));
            }
        }
    }

    /// Tells every open socket of one user to close.
    pub fn close_user(&self, user: i64, reason: CloseReason) {
        if let Some(online) = self.users.get(&user) {
            for entry in online.sockets.iter() {
                entry.socket.close.do_send(Disconnect(reason));
            }
        }
    }

    /// Tells every open socket to close (at shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for online in self.users.iter() {
            for entry in online.sockets.iter() {
                entry.socket.close.do_send(Disconnect(reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_counts_frames_until_their_message_is_dropped() {
        let backlog = Backlog::new(4);
        let first = backlog.count(3).expect("3 of 4 fit");
        assert!(backlog.count(2).is_none(), "5 of 4 do not fit");
        let second = backlog.count(1).expect("the 4th fits");
        drop(first);
        assert!(backlog.count(4).is_none(), "1 still queued");
        drop(second);
        assert!(
            backlog.count(4).is_some(),
            "all taken: the whole capacity is free"
        );
    }
}
