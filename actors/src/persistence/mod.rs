//! The persistence actor: the only writer to the database. HTTP handlers,
//! rooms and the device registry send it typed write messages; it drains its
//! mailbox into one transaction at a time (group commit), replies after
//! COMMIT, and then hands committed messages to delivery in id order.
//!
//! Batching adapts to load by itself: a write that arrives while no commit is
//! running starts one at once (no added latency when idle); writes that
//! arrive during a commit wait and all go into the next transaction, up to
//! [`MAX_BATCH`]. If a batch fails, its writes are retried one transaction
//! each, so one bad write cannot fail its neighbours.

mod batch;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::caches::Caches;
use crate::cluster::Broker;
use crate::error::{ChatError, ChatResult};
use crate::history::History;
use crate::hub::{Push, SessionId};
use crate::metrics::Metrics;
use crate::model::{
    AnyMessage, DeliveryStatus, DeviceRecord, FileRecord, GroupMessage, GroupRecord,
    PrivateMessage, Role, Timestamp, UserRecord, UserRef,
};
use crate::protocol::{MessageFields, DEFAULT_CONTENT_TYPE, DEFAULT_MESSAGE_TYPE};
use crate::store::{Pool, Store};
use crate::validate;

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// What a write needs from the rest of the system, during and after its transaction.
pub(crate) struct Shared {
    pub broker: Arc<dyn Broker>,
    pub caches: Arc<Caches>,
    pub history: Arc<History>,
    pub metrics: Arc<Metrics>,
}

// ---- Messages -------------------------------------------------------------

/// Register a user. Replies 409 naming `username` or `email` when taken.
#[derive(Message)]
#[rtype(result = "ChatResult<UserRecord>")]
pub struct CreateUser {
    /// As the user typed it; uniqueness is case-insensitive.
    pub username: String,
    pub email: String,
    /// The argon2id PHC string; the password itself never reaches an actor.
    pub password_hash: String,
}

/// Create a group owned by its creator.
#[derive(Message)]
#[rtype(result = "ChatResult<GroupRecord>")]
pub struct CreateGroup {
    pub creator: UserRef,
    pub name: String,
    pub description: String,
}

/// A message someone sends, checked and with its defaults filled in. Built
/// only by [`Outgoing::check`], whether it came over REST or a socket.
#[derive(Debug)]
pub struct Outgoing {
    /// When the server accepted it (for the delivery latency metric).
    pub accepted_at: Instant,
    pub sender: UserRef,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    /// The sender's idempotency key: a second message with the same key is not
    /// stored again; the reply then names the first one.
    pub client_id: Option<String>,
    /// The socket it came from, which gets the ack instead of the message frame.
    pub origin: Option<SessionId>,
    /// The message of the same conversation this one answers.
    pub reply_to: Option<i64>,
}

impl Outgoing {
    /// Checks what a sender wrote (content length, labels, `client_id`) and
    /// fills in the default message and content types.
    pub(crate) fn check(
        sender: UserRef,
        fields: MessageFields,
        origin: Option<SessionId>,
        max_content_chars: usize,
    ) -> ChatResult<Outgoing> {
        let message_type = fields
            .message_type
            .unwrap_or_else(|| DEFAULT_MESSAGE_TYPE.to_owned());
        let content_type = fields
            .content_type
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
        validate::content(&fields.content, max_content_chars)?;
        validate::label("message_type", &message_type)?;
        validate::label("content_type", &content_type)?;
        if let Some(client_id) = &fields.client_id {
            validate::client_id(client_id)?;
        }
        Ok(Outgoing {
            accepted_at: Instant::now(),
            sender,
            content: fields.content,
            message_type,
            content_type,
            client_id: fields.client_id,
            origin,
            reply_to: fields.reply_to,
        })
    }
}

/// Where a message goes.
pub enum Target {
    /// A private message to the user with this name (any case).
    User(String),
    /// A group message, already checked by the group's room, which fans it out.
    Group {
        group_id: i64,
        room: FanOutTo,
        /// The members when the room accepted it: a cluster delivers to them
        /// from the writer (on one node the room fans out).
        members: Arc<[i64]>,
        /// As [`crate::cluster::delivery_status`] decided when the room
        /// accepted it.
        status: DeliveryStatus,
    },
}

/// One commit's group messages and changes of one group, to push to every
/// member's sockets, each socket getting them all in one mailbox message:
/// handed back to the group's room, in commit order.
#[derive(Message, Default)]
#[rtype(result = "()")]
pub struct FanOut {
    /// Each frame (encoded once for all recipients) with the sender's
    /// socket that already got an ack instead, in id order.
    pub frames: Vec<(Push, Option<SessionId>)>,
}

/// The room a group write came from, carried with it through the writer
/// until its fan-out is queued back there (or the write is refused, or
/// stored as a resend, or delivered by a cluster's writer). `outstanding`
/// is the room's own count of such returns still to come: while one is
/// out, the room does not stop.
#[derive(Clone)]
pub struct FanOutTo {
    room: Recipient<FanOut>,
    _outstanding: Arc<()>,
}

impl FanOutTo {
    pub fn new(room: Recipient<FanOut>, outstanding: Arc<()>) -> Self {
        FanOutTo {
            room,
            _outstanding: outstanding,
        }
    }

    /// Queues a committed message's fan-out at the room it came from.
    pub fn fan_out(self, fan_out: FanOut) {
        self.room.do_send(fan_out);
    }
}

/// Where the outcome of a write goes once its transaction committed (or
/// failed): to a caller awaiting it ([`Reply::channel`]), or straight into
/// an actor's mailbox ([`Reply::new`]) so that a session sending many
/// messages keeps no future alive per message in flight.
///
/// Every write is answered exactly once. A reply dropped unanswered (its
/// message was still queued for an actor that stopped, or its batch
/// panicked) answers with a 500 as it goes, so no socket waits forever for
/// the ack of a `client_id`.
pub struct Reply<T>(Option<Box<dyn FnOnce(ChatResult<T>) + Send>>);

impl<T: Send + 'static> Reply<T> {
    pub fn new(deliver: impl FnOnce(ChatResult<T>) + Send + 'static) -> Self {
        Reply(Some(Box::new(deliver)))
    }

    /// A reply and the future that resolves to it.
    pub fn channel() -> (Self, impl std::future::Future<Output = ChatResult<T>>) {
        let (sender, receiver) = oneshot::channel();
        let reply = Reply::new(move |result| {
            // The asker may have gone away (a closed request); nothing to do then.
            let _ = sender.send(result);
        });
        let outcome = async move { receiver.await.unwrap_or_else(|_| Err(dropped_unanswered())) };
        (reply, outcome)
    }

    pub fn send(mut self, result: ChatResult<T>) {
        if let Some(deliver) = self.0.take() {
            deliver(result)
        }
    }
}

fn dropped_unanswered() -> ChatError {
    ChatError::internal_msg("a write was dropped unanswered")
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(deliver) = self.0.take() {
            tracing::error!("a write was dropped unanswered; answering it with an error");
            deliver(Err(dropped_unanswered()))
        }
    }
}

/// Store a message; after COMMIT it is delivered, then `reply` gets the outcome.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreMessage {
    pub message: NewMessage,
    pub reply: Reply<Stored>,
}

/// A message to store, and where it goes.
pub struct NewMessage {
    pub message: Outgoing,
    pub to: Target,
}

/// A stored message as its sender learns of it.
#[derive(Debug, Clone)]
pub enum Stored {
    Private(Arc<PrivateMessage>),
    /// A group message, with `delivered` if another member was online.
    Group(Arc<GroupMessage>, DeliveryStatus),
    /// The `client_id` was used before; nothing new was stored.
    Duplicate(Ack),
}

/// What an `ack` frame reports.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: i64,
    pub timestamp: Timestamp,
    pub status: DeliveryStatus,
}

impl Stored {
    pub fn ack(&self) -> Ack {
        match self {
            Stored::Private(m) => Ack {
                id: m.id,
                timestamp: m.timestamp,
                status: m.status,
            },
            Stored::Group(m, status) => Ack {
                id: m.id,
                timestamp: m.timestamp,
                status: *status,
            },
            Stored::Duplicate(ack) => *ack,
        }
    }
}

/// Edit, delete or react to a stored message. The writer checks it against
/// the stored row; after COMMIT everyone who can see the message gets its
/// new state (`message_updated`), then `reply` gets it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChangeMessage {
    pub change: NewChange,
    pub reply: Reply<AnyMessage>,
}

/// A change to a stored message.
pub struct NewChange {
    pub by: UserRef,
    pub message_id: i64,
    pub change: MessageChange,
    /// Set for a group message, which comes through its group's room (a
    /// private one comes straight from the caller).
    pub group: Option<GroupRoute>,
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// New content, checked like a send's (the sender only).
    Edit(String),
    /// Leave a tombstone (the sender, or a group's owner or an admin).
    Delete,
    /// Set the caller's one reaction (`Some`) or take it back (`None`).
    React(Option<String>),
}

/// The group a changed message belongs to, as its room passed it on.
#[derive(Clone)]
pub struct GroupRoute {
    pub group_id: i64,
    /// The room the change came through, which fans its new state out.
    pub room: FanOutTo,
    /// The members when the room passed it on (a cluster's writer delivers to them).
    pub members: Arc<[i64]>,
}

/// Register a device for its owner, or rename/retype it if the owner
/// registered it before. 409 if another user holds the `device_id`.
#[derive(Message)]
#[rtype(result = "ChatResult<DeviceRecord>")]
pub struct RegisterDevice {
    pub owner: UserRef,
    pub device_id: String,
    pub device_name: String,
    pub device_type: String,
}

/// Delete one of the owner's devices; replies with its row id, 404 if none.
#[derive(Message)]
#[rtype(result = "ChatResult<i64>")]
pub struct DeleteDevice {
    pub owner: UserRef,
    pub device_id: String,
}

/// Record that a device was seen (its socket opened or closed). Replies
/// whether the device still exists: a socket may bind to a device whose
/// deletion commits while its handshake is under way.
#[derive(Message)]
#[rtype(result = "ChatResult<bool>")]
pub struct TouchDevice {
    /// Row id of the device.
    pub device: i64,
    pub at: Timestamp,
}

/// Record an uploaded file whose bytes are already on disk.
#[derive(Message)]
#[rtype(result = "ChatResult<FileRecord>")]
pub struct StoreFile {
    pub file: FileRecord,
}

/// Add a member to a group (the room has checked the caller may). Replies
/// with the time they joined; 409 if they already are a member.
#[derive(Message)]
#[rtype(result = "ChatResult<Timestamp>")]
pub struct AddMember {
    pub group_id: i64,
    pub user: UserRef,
    pub role: Role,
}

/// Remove a member (the room has checked the caller may); 404 if not a member.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct RemoveMember {
    pub group_id: i64,
    pub user: i64,
}

/// Change members' roles in one transaction (two changes for an ownership transfer).
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct SetRoles {
    pub group_id: i64,
    /// (user id, new role)
    pub changes: Vec<(i64, Role)>,
}

/// Mark the recipient's `sent` messages with ids in (`after`, `up_to`] as
/// `delivered` (after a sync replayed them); each sender's sockets get a
/// `receipt`. Replies with how many changed.
#[derive(Message)]
#[rtype(result = "ChatResult<usize>")]
pub struct MarkDelivered {
    pub recipient: UserRef,
    pub after: i64,
    pub up_to: i64,
}

/// The reader read a message: a private one becomes `read` (recipient only;
/// the sender gets 403, anyone else 404) and the sender's sockets get a
/// `receipt`; a group one moves the reader's read cursor (members only, else 404).
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct MarkRead {
    pub reader: UserRef,
    pub message_id: i64,
}

/// Record when a user was last seen (first socket opened, last one closed).
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct TouchUser {
    pub user: i64,
    pub at: Timestamp,
}

/// Revoke one token (logout) until it would expire anyway.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct RevokeToken {
    pub jti: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Forget revocations of tokens that have expired by now.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct PurgeRevokedTokens {
    /// Unix seconds.
    pub now: i64,
}

/// Set a new password hash; every token issued before stops working.
/// Replies with the new token generation (for the token issued in return).
#[derive(Message)]
#[rtype(result = "ChatResult<i64>")]
pub struct ChangePassword {
    pub user: UserRef,
    pub password_hash: String,
}

/// Delete an account: its tokens stop working, its sockets close, its
/// name stays taken and its messages stay with their recipients.
#[derive(Message)]
#[rtype(result = "ChatResult<()>")]
pub struct DeleteAccount {
    pub user: UserRef,
}

// ---- The actor --------------------------------------------------------------

/// A write waiting for its transaction, with where its reply goes.
pub(crate) struct Pending<M, T> {
    pub msg: M,
    /// Filled in by the batch; sent only after COMMIT.
    pub result: Option<ChatResult<T>>,
    reply: Reply<T>,
}

impl<M, T: Send + 'static> Pending<M, T> {
    fn new(msg: M, reply: Reply<T>) -> Self {
        Pending {
            msg,
            result: None,
            reply,
        }
    }

    fn send_reply(self) {
        let result = self
            .result
            .unwrap_or_else(|| Err(ChatError::internal_msg("write finished without a result")));
        self.reply.send(result);
    }

    fn fail(self, error: ChatError) {
        self.reply.send(Err(error));
    }
}

/// Declares the queued form of every write and, for the request-reply
/// messages, their handlers: each only queues the write and returns a
/// future of the reply. (Message stores carry their own [`Reply`]; their
/// handler is below.)
macro_rules! writes {
    (
        asked { $($variant:ident($message:ty) -> $output:ty;)* }
        carrying_reply { $($fr_variant:ident($fr_message:ty) -> $fr_output:ty;)* }
    ) => {
        pub(crate) enum Write {
            $($variant(Pending<$message, $output>),)*
            $($fr_variant(Pending<$fr_message, $fr_output>),)*
        }

        impl Write {
            fn send_reply(self) {
                match self {
                    $(Write::$variant(p) => p.send_reply(),)*
                    $(Write::$fr_variant(p) => p.send_reply(),)*
                }
            }

            fn fail(self, error: ChatError) {
                match self {
                    $(Write::$variant(p) => p.fail(error),)*
                    $(Write::$fr_variant(p) => p.fail(error),)*
                }
            }

            /// Forgets the result of a rolled-back attempt before the write is retried.
            fn reset(&mut self) {
                match self {
                    $(Write::$variant(p) => p.result = None,)*
                    $(Write::$fr_variant(p) => p.result = None,)*
                }
            }
        }

        $(
            impl Handler<$message> for PersistenceActor {
                type Result = ResponseFuture<ChatResult<$output>>;

                fn handle(&mut self, msg: $message, ctx: &mut Self::Context) -> Self::Result {
                    let (reply, outcome) = Reply::channel();
                    self.enqueue(Write::$variant(Pending::new(msg, reply)), ctx);
                    Box::pin(outcome)
                }
            }
        )*
    };
}

writes! {
    asked {
    CreateUser(CreateUser) -> UserRecord;
    CreateGroup(CreateGroup) -> GroupRecord;
    RegisterDevice(RegisterDevice) -> DeviceRecord;
    DeleteDevice(DeleteDevice) -> i64;
    TouchDevice(TouchDevice) -> bool;
    StoreFile(StoreFile) -> FileRecord;
    AddMember(AddMember) -> Timestamp;
    RemoveMember(RemoveMember) -> ();
    SetRoles(SetRoles) -> ();
    MarkDelivered(MarkDelivered) -> usize;
    MarkRead(MarkRead) -> ();
    TouchUser(TouchUser) -> ();
    RevokeToken(RevokeToken) -> ();
    PurgeRevokedTokens(PurgeRevokedTokens) -> ();
    ChangePassword(ChangePassword) -> i64;
    DeleteAccount(DeleteAccount) -> ();
    }
    carrying_reply {
    StoreMessage(NewMessage) -> Stored;
    ChangeMessage(NewChange) -> AnyMessage;
    }
}

impl Handler<StoreMessage> for PersistenceActor {
    type Result = ();

    fn handle(&mut self, msg: StoreMessage, ctx: &mut Self::Context) {
        let pending = Pending::new(msg.message, msg.reply);
        self.enqueue(Write::StoreMessage(pending), ctx);
    }
}

impl Handler<ChangeMessage> for PersistenceActor {
    type Result = ();

    fn handle(&mut self, msg: ChangeMessage, ctx: &mut Self::Context) {
        let pending = Pending::new(msg.change, msg.reply);
        self.enqueue(Write::ChangeMessage(pending), ctx);
    }
}

pub struct PersistenceActor {
    pool: Pool,
    shared: Arc<Shared>,
    queue: Vec<Write>,
    committing: bool,
    /// Who asked to hear when everything queued so far is committed.
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Who asked to hold the writer at its next batch boundary.
    holds: Vec<oneshot::Sender<WritesHeld>>,
}

/// Answered at once from the mailbox: proves the actor is processing
/// messages (readiness checks).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for PersistenceActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

/// Reply once every write queued before it is committed (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for PersistenceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let (done, wait) = oneshot::channel();
        if self.committing || !self.queue.is_empty() {
            self.flush_waiters.push(done);
        } else {
            let _ = done.send(());
        }
        Box::pin(async move {
            let _ = wait.await;
        })
    }
}

/// Holds the writer at its next batch boundary: answered once the batch
/// being committed (if any) has applied its effects (pushes, caches); no
/// batch starts while the answer lives. Writes sent meanwhile queue up. For
/// looking at the database and the caches at one moment, as the history
/// cache's tests do; nothing that takes long.
#[derive(Message)]
#[rtype(result = "ChatResult<WritesHeld>")]
pub struct HoldWrites;

/// While this lives, the writer starts no batch.
pub struct WritesHeld {
    _release: oneshot::Sender<()>,
}

impl Handler<HoldWrites> for PersistenceActor {
    type Result = ResponseFuture<ChatResult<WritesHeld>>;

    fn handle(&mut self, _: HoldWrites, ctx: &mut Self::Context) -> Self::Result {
        let (hold, granted) = oneshot::channel();
        self.holds.push(hold);
        if !self.committing {
            self.commit_next_batch(ctx);
        }
        Box::pin(async move {
            granted
                .await
                .map_err(|_| ChatError::internal_msg("the writer stopped"))
        })
    }
}

impl PersistenceActor {
    pub fn new(
        store: &Store,
        broker: Arc<dyn Broker>,
        caches: Arc<Caches>,
        history: Arc<History>,
        metrics: Arc<Metrics>,
    ) -> Self {
        PersistenceActor {
            pool: store.write.clone(),
            shared: Arc::new(Shared {
                broker,
                caches,
                history,
                metrics,
            }),
            queue: Vec::new(),
            committing: false,
            flush_waiters: Vec::new(),
            holds: Vec::new(),
        }
    }

    fn enqueue(&mut self, write: Write, ctx: &mut Context<Self>) {
        self.queue.push(write);
        self.shared
            .metrics
            .persistence_queue
            .set(self.queue.len() as i64);
        if !self.committing {
            self.commit_next_batch(ctx);
        }
    }

    fn commit_next_batch(&mut self, ctx: &mut Context<Self>) {
        while let Some(hold) = self.holds.pop() {
            let (release, released) = oneshot::channel();
            if hold.send(WritesHeld { _release: release }).is_ok() {
                self.committing = true;
                let held = async move {
                    // Resolves when the holder drops its `WritesHeld`.
                    let _ = released.await;
                };
                ctx.spawn(held.into_actor(self).map(|(), actor, ctx| {
                    actor.committing = false;
                    actor.commit_next_batch(ctx);
                }));
                return;
            }
        }
        if self.queue.is_empty() {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
            return;
        }
        let take = self.queue.len().min(MAX_BATCH);
        let writes: Vec<Write> = self.queue.drain(..take).collect();
        let metrics = &self.shared.metrics;
        metrics.persistence_queue.set(self.queue.len() as i64);
        metrics.batch_size.observe(writes.len() as f64);
        let commit_timer = metrics.commit_seconds.start_timer();
        self.committing = true;
        let pool = self.pool.clone();
        let shared = self.shared.clone();
        let ordered = shared.broker.is_clustered()
            && writes
                .iter()
                .any(|write| matches!(write, Write::StoreMessage(_) | Write::ChangeMessage(_)));
        let commit = async move {
            let run = async {
                match pool {
                    Pool::Sqlite(pool) => batch::Batch::run(&pool, writes, &shared).await,
                    Pool::Postgres(pool) if ordered => {
                        // Other nodes commit too: one message commit at a
                        // time in the cluster, each with its pushes on the
                        // engine before the next, so every socket gets a
                        // conversation's messages in id order whichever node
                        // stored them. Other writes (presence stamps,
                        // accounts, receipts) need no such order.
                        let locked = cluster_lock(&pool).await;
                        batch::Batch::run(&pool, writes, &shared).await;
                        shared.broker.flush().await;
                        if locked {
                            cluster_unlock(&pool).await;
                        }
                    }
                    Pool::Postgres(pool) => batch::Batch::run(&pool, writes, &shared).await,
                }
            };
            // A panic while committing fails this batch (its writers get a
            // 500 as their replies are dropped) but not the actor: the next
            // batch runs as usual.
            if std::panic::AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("a write batch panicked; its writes failed, the writer goes on");
            }
            commit_timer.observe_duration();
        };
        ctx.spawn(commit.into_actor(self).map(|(), actor, ctx| {
            actor.committing = false;
            actor.commit_next_batch(ctx);
        }));
    }
}

impl Actor for PersistenceActor {
    type Context = Context<Self>;
}

/// The Postgres advisory lock the writers of a cluster take in turn.
const CLUSTER_COMMIT_LOCK: i64 = 0x7061_726c_6579;

/// Takes the cluster's commit lock on the writer's one connection (a
/// session lock: it outlives the transaction, until the pushes are out).
/// False if the database cannot be reached; the batch then fails as usual.
async fn cluster_lock(pool: &sqlx::PgPool) -> bool {
    let locked = sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(CLUSTER_COMMIT_LOCK)
        .execute(pool)
        .await;
    match locked {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "could not take the cluster's commit lock");
            false
        }
    }
}

/// Releases every hold this connection has on the lock. If this fails the
/// connection is broken, and Postgres releases the lock with it.
async fn cluster_unlock(pool: &sqlx::PgPool) {
    if let Err(error) = sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(pool)
        .await
    {
        tracing::warn!(%error, "could not release the cluster's commit lock");
    }
}

impl PersistenceActor {
    /// Starts the actor with an unbounded mailbox: a sender must never be
    /// parked with its message held back, or two writes from one sender could
    /// reach the database out of order.
    pub fn start_unbounded(self) -> Addr<Self> {
        Self::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            self
        })
    }
}

#[cfg(test)]
mod outgoing_tests {
    use super::*;
    use crate::protocol::{ClientFrame, Conversation, SendMessage};

    #[test]
    fn a_private_send_defaults_its_types() {
        let frame =
            ClientFrame::parse(r#"{"type":"message","recipient":"bob","content":"hi"}"#).unwrap();
        let ClientFrame::Message(SendMessage { to, message }) = frame else {
            panic!("a message frame");
        };
        assert_eq!(to, Conversation::User("bob".into()));
        let alice = UserRef {
            id: 1,
            username: "alice".into(),
        };
        let message = Outgoing::check(alice, message, None, 8192).expect("a valid message");
        assert_eq!(
            (
                message.content.as_str(),
                message.message_type.as_str(),
                message.content_type.as_str(),
                message.client_id,
                message.reply_to
            ),
            ("hi", "text", "text/plain", None, None)
        );
    }
}

#[cfg(test)]
mod tests {
    //! A panic inside a write batch must not take the writer down, nor leave
    //! the batch's other writes unanswered. The panic
    //! comes from the batch's own code path with no test hook: a write's
    //! [`Reply`] runs inside the batch (after COMMIT), so a reply that panics
    //! is a panic in the batch.

    use std::io::Write as _;
    use std::sync::Mutex;

    use super::*;
    use crate::test_support::{create_user, fresh_chat};

    /// Collects formatted log lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn store(sender: &UserRef, content: &str, reply: Reply<Stored>) -> StoreMessage {
        let fields = MessageFields {
            content: content.into(),
            ..MessageFields::default()
        };
        let message = Outgoing::check(sender.clone(), fields, None, 8192).expect("a valid message");
        StoreMessage {
            message: NewMessage {
                message,
                to: Target::User("bob".into()),
            },
            reply,
        }
    }

    #[actix::test]
    async fn a_panicking_batch_is_contained_logged_and_the_writer_goes_on() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // The actors run on this thread (the test's actix system).
        let _guard = tracing::subscriber::set_default(subscriber);

        let (chat, dir) = fresh_chat("panic-test").await;
        let users = [
            create_user(&chat, "alice").await,
            create_user(&chat, "bob").await,
        ];
        let alice = &users[0];

        let _ = std::io::stderr().write_all(b"(the panic below is the test's own)\n");
        // The first write keeps the writer busy, so the next two are queued
        // and committed together: the panicking reply, then a socket's.
        let (first, _) = Reply::channel();
        chat.persistence().do_send(store(alice, "first", first));
        chat.persistence().do_send(store(
            alice,
            "panics",
            Reply::new(|_| panic!("a reply that panics inside the batch")),
        ));
        let (socket_reply, socket_outcome) = oneshot::channel();
        chat.persistence().do_send(store(
            alice,
            "batched with the panic",
            Reply::new(move |result| {
                let _ = socket_reply.send(result);
            }),
        ));
        // Returns once those batches are over, whichever way they ended.
        chat.persistence()
            .send(Flush)
            .await
            .expect("the writer is alive");
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("a write batch panicked"),
            "the panic should be logged; logs:\n{logs}"
        );
        let answer = socket_outcome
            .await
            .expect("a write in the panicked batch is answered, not dropped");
        assert!(
            matches!(answer, Err(ChatError::Internal(_))),
            "it is answered with a 500, got {answer:?}"
        );

        let (reply, outcome) = Reply::channel();
        chat.persistence()
            .do_send(store(alice, "after the panic", reply));
        let stored = outcome
            .await
            .expect("the writer goes on after a panicking batch");
        let Stored::Private(message) = stored else {
            panic!("a private message is stored");
        };
        assert_eq!(message.content, "after the panic");
        let history = chat
            .store()
            .private_history(
                &users[0],
                &users[1],
                crate::model::Page {
                    before: None,
                    after: None,
                    limit: 500,
                },
            )
            .await
            .expect("read the history");
        assert!(
            history.iter().any(|m| m.id == message.id),
            "the write after the panic is committed"
        );
        drop(chat);
        let _ = std::fs::remove_dir_all(dir);
    }
}
