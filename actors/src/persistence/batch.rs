//! One group-commit transaction of the persistence actor: [`Batch::run`]
//! runs a batch of writes in one transaction on either backend, generic over
//! the [`Backend`]. Domain refusals (unknown recipient, foreign device)
//! become that write's error and do not disturb the batch; a database error
//! aborts the batch, which is then retried one write per transaction.

use std::marker::PhantomData;
use std::sync::Arc;

use bytestring::ByteString;
use sqlx::{ColumnIndex, Connection, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::cluster::{Change, CloseCause};
use crate::error::{ChatError, ChatResult};
use crate::history::{pair, HistoryChange};
use crate::hub::{Push, PushedMessage, SessionId};
use crate::metrics::MessageKind;
use crate::model::{
    AccountState, AnyMessage, DeliveryStatus, GroupMessage, GroupRecord, KindedMessage, Lifecycle,
    PrivateMessage, Reaction, Role, Timestamp, UserRef,
};
use crate::persistence::{
    Ack, FanOut, FanOutTo, GroupRoute, MarkRead, MessageChange, NewChange, NewMessage, Outgoing,
    Shared, Stored, Target, Write,
};
use crate::protocol::{encode, MessageFrame, ServerFrame};
use crate::store::{Backend, MessageRow, Queries};

/// What to do once the transaction has committed, in the order the writes ran.
enum Effect {
    CacheUser(String, UserRef),
    CacheConversation((i64, i64), i64),
    DeliverPrivate {
        push: Push,
        recipient: i64,
        sender: i64,
        origin: Option<crate::hub::SessionId>,
        /// What the row and the ack say; `delivered` is checked by the push.
        status: DeliveryStatus,
    },
    DeliverGroup {
        group_id: i64,
        room: FanOutTo,
        members: std::sync::Arc<[i64]>,
        push: Push,
        /// The sender's socket, which gets the ack instead.
        origin: Option<crate::hub::SessionId>,
    },
    CacheAccount(i64, AccountState),
    Revoke(String, i64),
    /// The account is gone: forget its name.
    ForgetName(UserRef),
    /// Every socket of this user was opened with a token that no longer
    /// works (password changed, account deleted): close them, saying why.
    CloseSockets(i64, CloseCause),
    /// A group's members or roles changed (other nodes' rooms reload).
    GroupChanged(i64),
    /// A frame for every socket of these users.
    Push {
        users: smallvec::SmallVec<[i64; 2]>,
        frame: ByteString,
    },
    /// A group message's new state, for every member's sockets (through the
    /// room, behind the group's messages committed before it).
    GroupChange {
        group: GroupRoute,
        frame: ByteString,
    },
    /// What the history cache must learn to stay equal to the database.
    History(HistoryChange),
}

/// Each group's frames of one commit, in commit order, for one `FanOut` per
/// group: a member's socket then gets all of them in one mailbox message.
#[derive(Default)]
struct FanOuts {
    groups: Vec<(i64, FanOutTo, FanOut)>,
}

impl FanOuts {
    fn add(&mut self, group_id: i64, room: FanOutTo, push: Push, origin: Option<SessionId>) {
        let fan_out = match self.groups.iter_mut().find(|(id, ..)| *id == group_id) {
            Some((.., fan_out)) => fan_out,
            None => {
                self.groups.push((group_id, room, FanOut::default()));
                &mut self.groups.last_mut().expect("just pushed").2
            }
        };
        fan_out.frames.push((push, origin));
    }

    /// Hands each group's frames back to its room.
    fn send(self) {
        for (_, room, fan_out) in self.groups {
            room.fan_out(fan_out);
        }
    }
}

/// A private message stored as `delivered` whose push no socket of its
/// recipient took (the socket closed or overflowed after the status was
/// decided). Its copy for the sender's other sockets waits until the
/// status is corrected.
struct Missed {
    push: Push,
    sender: i64,
    recipient: i64,
    origin: Option<crate::hub::SessionId>,
}

/// Where a message goes, once its recipient or group is known.
enum Resolved {
    Private {
        recipient: UserRef,
        conversation: i64,
        status: DeliveryStatus,
    },
    Group {
        group_id: i64,
        room: FanOutTo,
        members: std::sync::Arc<[i64]>,
        status: DeliveryStatus,
    },
}

/// The writer's transaction on the backend `DB` (never built: it only names
/// the backend).
pub(crate) struct Batch<DB>(PhantomData<DB>);

/// The same bounds as on [`Queries`], which the batch calls: Rust does not
/// carry them over by itself.
impl<DB: Backend> Batch<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    bool: Type<DB> + for<'r> Decode<'r, DB>,
    f64: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    pub(crate) async fn run(pool: &Pool<DB>, mut writes: Vec<Write>, shared: &Shared) {
        let mut effects = Vec::new();
        match Self::apply_all(pool, &mut writes, shared, &mut effects).await {
            Ok(()) => Self::finish(pool, writes, effects, shared).await,
            Err(error) if ChatError::from_ref(&error).is_unavailable() => {
                // The database is unreachable: retrying write by write would
                // only make each writer wait again. Fail them all now (503).
                tracing::warn!(
                    %error,
                    writes = writes.len(),
                    "database unavailable; failing the batch"
                );
                for write in writes {
                    write.fail(ChatError::Unavailable(error.to_string().into()));
                }
            }
            Err(error) => {
                if writes.len() > 1 {
                    tracing::debug!(
                        %error,
                        writes = writes.len(),
                        "batch failed; retrying its writes one by one"
                    );
                }
                for mut write in writes {
                    write.reset();
                    let mut effects = Vec::new();
                    match Self::apply_all(
                        pool,
                        std::slice::from_mut(&mut write),
                        shared,
                        &mut effects,
                    )
                    .await
                    {
                        Ok(()) => Self::finish(pool, vec![write], effects, shared).await,
                        Err(error) => {
                            let error = ChatError::from(error);
                            if error.is_server_fault() {
                                tracing::error!(error = ?error, "write failed");
                            }
                            write.fail(error);
                        }
                    }
                }
            }
        }
    }

    async fn apply_all(
        pool: &Pool<DB>,
        writes: &mut [Write],
        shared: &Shared,
        effects: &mut Vec<Effect>,
    ) -> Result<(), sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut rest = writes;
        while !rest.is_empty() {
            // Consecutive message stores go in together, as multi-row INSERTs.
            let run = rest
                .iter()
                .take_while(|write| matches!(write, Write::StoreMessage(_)))
                .count()
                .max(1);
            let (now, tail) = rest.split_at_mut(run);
            Self::apply(&mut tx, now, shared, effects).await?;
            rest = tail;
        }
        tx.commit().await
    }

    /// Carries out the effects of a committed batch, then answers its writes.
    async fn finish(
        pool: &Pool<DB>,
        mut writes: Vec<Write>,
        effects: Vec<Effect>,
        shared: &Shared,
    ) {
        let missed = Self::run_effects(effects, shared);
        if !missed.is_empty() {
            Self::undeliver(pool, &mut writes, missed, shared).await;
        }
        for write in writes {
            write.send_reply();
        }
    }

    fn run_effects(effects: Vec<Effect>, shared: &Shared) -> Vec<Missed> {
        let mut missed = Vec::new();
        let mut fan_outs = FanOuts::default();
        for effect in effects {
            match effect {
                Effect::CacheUser(key, user) => {
                    shared.caches.remember_user(key, user);
                }
                Effect::CacheConversation(pair, id) => {
                    shared.caches.remember_conversation(pair, id);
                }
                Effect::DeliverPrivate {
                    push,
                    recipient,
                    sender,
                    origin,
                    status,
                } => {
                    shared.metrics.accepted(MessageKind::Private);
                    if status != DeliveryStatus::Delivered || shared.broker.is_clustered() {
                        shared.broker.deliver(&[recipient, sender], &push, origin);
                    } else if shared.broker.deliver_to(recipient, &push, origin) == Some(false) {
                        missed.push(Missed {
                            push,
                            sender,
                            recipient,
                            origin,
                        });
                    } else {
                        shared.broker.deliver(&[sender], &push, origin);
                    }
                }
                Effect::DeliverGroup {
                    group_id,
                    room,
                    members,
                    push,
                    origin,
                } => {
                    shared.metrics.accepted(MessageKind::Group);
                    if shared.broker.is_clustered() {
                        shared.broker.deliver(&members, &push, origin);
                    } else {
                        fan_outs.add(group_id, room, push, origin);
                    }
                }
                Effect::Push { users, frame } => {
                    shared.broker.deliver(&users, &Push::event(frame), None)
                }
                Effect::GroupChange { group, frame } => {
                    let push = Push::event(frame);
                    if shared.broker.is_clustered() {
                        shared.broker.deliver(&group.members, &push, None);
                    } else {
                        fan_outs.add(group.group_id, group.room, push, None);
                    }
                }
                Effect::CacheAccount(user, state) => {
                    shared.caches.set_account(user, state);
                    shared.broker.share(Change::Account(user, state));
                }
                Effect::Revoke(jti, expires_at) => {
                    shared.caches.revoke(jti.clone(), expires_at);
                    shared.broker.share(Change::Revoked { jti, expires_at });
                }
                Effect::ForgetName(user) => {
                    let key = crate::validate::lookup_key(&user.username);
                    shared.caches.forget_user(&key);
                    shared.broker.share(Change::ForgetName(key));
                }
                Effect::CloseSockets(user, cause) => shared.broker.close_user(user, cause),
                Effect::GroupChanged(group_id) => shared.broker.share(Change::Group(group_id)),
                Effect::History(change) => shared.history.cache().apply(change),
            }
        }
        fan_outs.send();
        missed
    }

    /// Sets the missed messages back to `sent`, in their rows (before anyone
    /// can be answered or mark them read: the writer runs one batch at a time)
    /// and in their acks, and then gives the sender's other sockets their copy.
    /// If the update fails the rows stay `delivered`, and so do the acks.
    async fn undeliver(
        pool: &Pool<DB>,
        writes: &mut [Write],
        missed: Vec<Missed>,
        shared: &Shared,
    ) {
        let ids: Vec<i64> = missed
            .iter()
            .filter_map(|m| m.push.message.map(|pushed| pushed.id))
            .collect();
        let corrected = match pool.acquire().await {
            Ok(mut conn) => Queries::<DB>::mark_undelivered(&mut conn, &ids).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &corrected {
            tracing::warn!(%error, ?ids, "cannot set missed messages back to 'sent'");
        }
        for Missed {
            mut push,
            sender,
            recipient,
            origin,
        } in missed
        {
            let message = push
                .message
                .and_then(|pushed| Self::stored_private(writes, pushed.id));
            if let (Ok(()), Some(message)) = (&corrected, message) {
                let message = Arc::make_mut(message);
                message.status = DeliveryStatus::Sent;
                push.frame = encode(&ServerFrame::Message((&*message).into()));
                let key = pair(sender, recipient);
                let change = HistoryChange::PrivateStatus(key, message.id, DeliveryStatus::Sent);
                shared.history.cache().apply(change);
            }
            shared.broker.deliver(&[sender], &push, origin);
        }
    }

    /// The private message a write of this batch stored under `id`.
    fn stored_private(writes: &mut [Write], id: i64) -> Option<&mut Arc<PrivateMessage>> {
        writes.iter_mut().find_map(|write| match write {
            Write::StoreMessage(p) => match &mut p.result {
                Some(Ok(Stored::Private(message))) if message.id == id => Some(message),
                _ => None,
            },
            _ => None,
        })
    }

    /// Applies one write, or a run of message stores.
    async fn apply(
        conn: &mut DB::Connection,
        writes: &mut [Write],
        shared: &Shared,
        effects: &mut Vec<Effect>,
    ) -> Result<(), sqlx::Error> {
        let now = Timestamp::now();
        let [write] = writes else {
            return Self::store_messages(conn, writes, now, shared, effects).await;
        };
        match write {
            Write::CreateUser(p) => {
                let m = &p.msg;
                let user =
                    Queries::<DB>::insert_user(conn, &m.username, &m.email, &m.password_hash, now)
                        .await?;
                effects.push(Effect::CacheUser(
                    crate::validate::lookup_key(&user.username),
                    UserRef {
                        id: user.id,
                        username: user.username.as_str().into(),
                    },
                ));
                p.result = Some(Ok(user));
            }
            Write::CreateGroup(p) => {
                let m = &p.msg;
                let id =
                    Queries::<DB>::insert_group(conn, &m.name, &m.description, m.creator.id, now)
                        .await?;
                p.result = Some(Ok(GroupRecord {
                    id,
                    name: m.name.clone(),
                    description: m.description.clone(),
                    created_at: now,
                    created_by: m.creator.username.to_string(),
                }));
            }
            Write::StoreMessage(_) => {
                Self::store_messages(conn, writes, now, shared, effects).await?;
            }
            Write::RegisterDevice(p) => {
                let m = &p.msg;
                let device = Queries::<DB>::upsert_device(
                    conn,
                    m.owner.id,
                    &m.device_id,
                    &m.device_name,
                    &m.device_type,
                    now,
                )
                .await?;
                p.result = Some(device.ok_or_else(|| {
                    ChatError::conflict("device_id: already registered by another user")
                }));
            }
            Write::DeleteDevice(p) => {
                let device_id = &p.msg.device_id;
                let deleted = match crate::validate::storable(device_id) {
                    true => Queries::<DB>::delete_device(conn, p.msg.owner.id, device_id).await?,
                    false => None,
                };
                p.result =
                    Some(deleted.ok_or_else(|| ChatError::not_found("device_id: no such device")));
            }
            Write::TouchDevice(p) => {
                let exists = Queries::<DB>::touch_device(conn, p.msg.at, p.msg.device).await?;
                p.result = Some(Ok(exists));
            }
            Write::StoreFile(p) => {
                Queries::<DB>::insert_file(conn, &p.msg.file).await?;
                p.result = Some(Ok(p.msg.file.clone()));
            }
            Write::AddMember(p) => {
                let m = &p.msg;
                let added =
                    Queries::<DB>::insert_member(conn, m.group_id, m.user.id, m.role.as_str(), now)
                        .await?;
                if added {
                    effects.push(Effect::GroupChanged(m.group_id));
                }
                p.result = Some(if added {
                    Ok(now)
                } else {
                    Err(ChatError::conflict(
                        "username: already a member of this group",
                    ))
                });
            }
            Write::RemoveMember(p) => {
                let removed =
                    Queries::<DB>::delete_member(conn, p.msg.group_id, p.msg.user).await?;
                if removed {
                    effects.push(Effect::GroupChanged(p.msg.group_id));
                }
                p.result = Some(if removed {
                    Ok(())
                } else {
                    Err(ChatError::not_found("username: not a member of this group"))
                });
            }
            Write::SetRoles(p) => {
                for (user, role) in &p.msg.changes {
                    Queries::<DB>::update_role(conn, role.as_str(), p.msg.group_id, *user).await?;
                }
                effects.push(Effect::GroupChanged(p.msg.group_id));
                p.result = Some(Ok(()));
            }
            Write::MarkDelivered(p) => {
                let m = &p.msg;
                let changed =
                    Queries::<DB>::mark_delivered(conn, m.recipient.id, m.after, m.up_to).await?;
                for &(message_id, sender) in &changed {
                    let key = pair(sender, m.recipient.id);
                    let change =
                        HistoryChange::PrivateStatus(key, message_id, DeliveryStatus::Delivered);
                    effects.push(Effect::History(change));
                    let to = smallvec::smallvec![sender];
                    effects.push(Self::receipt(
                        to,
                        message_id,
                        &m.recipient,
                        DeliveryStatus::Delivered,
                        now,
                    ));
                }
                p.result = Some(Ok(changed.len()));
            }
            Write::MarkRead(p) => {
                p.result = Some(Self::mark_read(conn, &p.msg, now, effects).await?);
            }
            Write::ChangeMessage(p) => {
                p.result = Some(Self::change_message(conn, &p.msg, now, effects).await?);
            }
            Write::TouchUser(p) => {
                Queries::<DB>::touch_user(conn, p.msg.at, p.msg.user).await?;
                p.result = Some(Ok(()));
            }
            Write::RevokeToken(p) => {
                Queries::<DB>::insert_revoked_token(conn, &p.msg.jti, p.msg.expires_at).await?;
                effects.push(Effect::Revoke(p.msg.jti.clone(), p.msg.expires_at));
                p.result = Some(Ok(()));
            }
            Write::PurgeRevokedTokens(p) => {
                Queries::<DB>::purge_revoked_tokens(conn, p.msg.now).await?;
                p.result = Some(Ok(()));
            }
            Write::ChangePassword(p) => {
                let user = p.msg.user.id;
                let token_generation =
                    Queries::<DB>::change_password(conn, &p.msg.password_hash, user).await?;
                let state = AccountState {
                    token_generation,
                    deleted: false,
                };
                effects.push(Effect::CacheAccount(user, state));
                effects.push(Effect::CloseSockets(user, CloseCause::PasswordChanged));
                p.result = Some(Ok(token_generation));
            }
            Write::DeleteAccount(p) => {
                let user = &p.msg.user;
                if Queries::<DB>::delete_account(conn, now, user.id).await? {
                    let state = AccountState {
                        token_generation: i64::MIN,
                        deleted: true,
                    };
                    effects.push(Effect::CacheAccount(user.id, state));
                    effects.push(Effect::ForgetName(user.clone()));
                    effects.push(Effect::CloseSockets(user.id, CloseCause::AccountDeleted));
                }
                p.result = Some(Ok(()));
            }
        }
        Ok(())
    }

    /// A `receipt` for every socket of `to`.
    fn receipt(
        to: smallvec::SmallVec<[i64; 2]>,
        message_id: i64,
        by: &UserRef,
        status: DeliveryStatus,
        at: Timestamp,
    ) -> Effect {
        Effect::Push {
            users: to,
            frame: encode(&ServerFrame::Receipt {
                message_id,
                user: &by.username,
                status,
                timestamp: at,
            }),
        }
    }

    async fn mark_read(
        conn: &mut DB::Connection,
        m: &MarkRead,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<ChatResult<()>, sqlx::Error> {
        let hidden = || ChatError::not_found("message_id: no such message in your conversations");
        let parties = Queries::<DB>::message_parties(&mut *conn, m.message_id).await?;
        let Some((sender, recipient, group, status)) = parties else {
            return Ok(Err(hidden()));
        };
        let reader = m.reader.id;
        if let Some(group_id) = group {
            if !Queries::<DB>::is_member(conn, group_id, reader).await? {
                return Ok(Err(hidden()));
            }
            Queries::<DB>::advance_read_cursor(conn, m.message_id, group_id, reader).await?;
            return Ok(Ok(()));
        }
        if recipient != Some(reader) {
            return Ok(Err(if sender == reader {
                ChatError::forbidden("message_id: only the recipient can mark a message read")
            } else {
                hidden()
            }));
        }
        if status.as_deref() != Some(DeliveryStatus::Read.as_str()) {
            Queries::<DB>::mark_read(conn, m.message_id).await?;
            let key = pair(sender, reader);
            let change = HistoryChange::PrivateStatus(key, m.message_id, DeliveryStatus::Read);
            effects.push(Effect::History(change));
            // The reader's other devices learn it too, to clear their unread marks.
            let to = smallvec::smallvec![sender, reader];
            effects.push(Self::receipt(
                to,
                m.message_id,
                &m.reader,
                DeliveryStatus::Read,
                now,
            ));
        }
        Ok(Ok(()))
    }

    /// Edits, deletes or reacts to a message after checking the caller may;
    /// the new state is pushed after COMMIT to everyone who can see it. A
    /// change that changes nothing (deleting a tombstone, the same reaction
    /// again) is answered with the message as it is, and pushes nothing.
    async fn change_message(
        conn: &mut DB::Connection,
        m: &NewChange,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Result<ChatResult<AnyMessage>, sqlx::Error> {
        let hidden = || ChatError::not_found("message_id: no such message in your conversations");
        let Some((sender, recipient, group_id, deleted, reactions)) =
            Queries::<DB>::message_for_change(conn, m.message_id).await?
        else {
            return Ok(Err(hidden()));
        };
        let by = m.by.id;
        // A group message must come through its own room; a private one only
        // from one of its two parties.
        let role = match (&m.group, group_id) {
            (Some(route), Some(group_id)) if route.group_id == group_id => {
                match Queries::<DB>::member_role(conn, group_id, by).await? {
                    Some(role) => Role::parse(&role),
                    None => return Ok(Err(hidden())),
                }
            }
            (None, None) if by == sender || recipient == Some(by) => None,
            _ => return Ok(Err(hidden())),
        };
        let is_deleted = || ChatError::conflict("message_id: the message was deleted");
        let change_id = match &m.change {
            MessageChange::Edit(content) => {
                if sender != by {
                    return Ok(Err(ChatError::forbidden(
                        "message_id: only its sender can edit a message",
                    )));
                }
                if deleted {
                    return Ok(Err(is_deleted()));
                }
                let change_id = Queries::<DB>::reserve_message_ids(conn, 1).await?;
                Queries::<DB>::edit_message(conn, content, now, change_id, m.message_id).await?;
                Queries::<DB>::delete_file_refs(conn, m.message_id).await?;
                for file_id in crate::validate::mentioned_file_ids(content) {
                    Queries::<DB>::insert_file_ref(conn, file_id, m.message_id).await?;
                }
                Some(change_id)
            }
            MessageChange::Delete => {
                if sender != by && !Self::may_moderate(conn, role, group_id, sender).await? {
                    return Ok(Err(ChatError::forbidden(
                        "message_id: only its sender can delete a message, or in a group the owner \
                         (any message) or an admin (a plain member's)",
                    )));
                }
                if deleted {
                    None
                } else {
                    let change_id = Queries::<DB>::reserve_message_ids(conn, 1).await?;
                    Queries::<DB>::delete_message(conn, now, change_id, m.message_id).await?;
                    Some(change_id)
                }
            }
            MessageChange::React(emoji) => {
                if deleted {
                    return Ok(Err(is_deleted()));
                }
                let before: Vec<Reaction> = match reactions.as_deref() {
                    Some(json) => {
                        serde_json::from_str(json).map_err(|err| sqlx::Error::Decode(err.into()))?
                    }
                    None => Vec::new(),
                };
                let after = Self::react(&before, &m.by.username, emoji.as_deref());
                if after == before {
                    None
                } else {
                    let json = match after.is_empty() {
                        true => None,
                        false => {
                            let json = serde_json::to_string(&after);
                            Some(json.map_err(|err| sqlx::Error::Encode(err.into()))?)
                        }
                    };
                    let change_id = Queries::<DB>::reserve_message_ids(conn, 1).await?;
                    Queries::<DB>::set_reactions(conn, json.as_deref(), change_id, m.message_id)
                        .await?;
                    Some(change_id)
                }
            }
        };
        let row = Queries::<DB>::any_message(&mut *conn, m.message_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let message = row
            .into_message()
            .map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
        if change_id.is_some() {
            let status = message.status.as_deref().and_then(DeliveryStatus::parse);
            let frame = encode(&ServerFrame::MessageUpdated(MessageFrame::of(
                &message, status,
            )));
            match m.group.clone() {
                Some(group) => effects.push(Effect::GroupChange { group, frame }),
                None => effects.push(Effect::Push {
                    users: std::iter::once(sender).chain(recipient).collect(),
                    frame,
                }),
            }
            let change = match KindedMessage::from(message.clone()) {
                KindedMessage::Private(changed) => {
                    let key = pair(sender, recipient.unwrap_or(sender));
                    HistoryChange::PrivateChanged(key, changed)
                }
                KindedMessage::Group(changed) => HistoryChange::GroupChanged(changed),
            };
            effects.push(Effect::History(change));
        }
        Ok(Ok(message))
    }

    /// Whether a group member of `role` may delete `sender`'s message: the
    /// owner anyone's, an admin a plain member's (or a former member's), as
    /// with removing members.
    async fn may_moderate(
        conn: &mut DB::Connection,
        role: Option<Role>,
        group_id: Option<i64>,
        sender: i64,
    ) -> Result<bool, sqlx::Error> {
        Ok(match (role, group_id) {
            (Some(Role::Owner), _) => true,
            (Some(Role::Admin), Some(group_id)) => {
                let sender_role = Queries::<DB>::member_role(conn, group_id, sender).await?;
                matches!(
                    sender_role.as_deref().and_then(Role::parse),
                    None | Some(Role::Member)
                )
            }
            _ => false,
        })
    }

    /// `reactions` with `user`'s reaction replaced by `emoji` (or removed).
    fn react(reactions: &[Reaction], user: &str, emoji: Option<&str>) -> Vec<Reaction> {
        let mut after: Vec<Reaction> = reactions
            .iter()
            .cloned()
            .filter_map(|mut reaction| {
                reaction.users.retain(|name| name != user);
                reaction.count = reaction.users.len() as i64;
                (reaction.count > 0).then_some(reaction)
            })
            .collect();
        if let Some(emoji) = emoji {
            match after.iter_mut().find(|reaction| reaction.emoji == emoji) {
                Some(reaction) => {
                    reaction.users.push(user.to_owned());
                    reaction.count += 1;
                }
                None => after.push(Reaction {
                    emoji: emoji.to_owned(),
                    count: 1,
                    users: vec![user.to_owned()],
                }),
            }
        }
        after
    }

    /// Stores a run of messages: resolves each target (refusals become that
    /// write's error), reserves ids for the rest in one statement, inserts them
    /// in a few multi-row statements, and answers each write in id order.
    async fn store_messages(
        conn: &mut DB::Connection,
        run: &mut [Write],
        now: Timestamp,
        shared: &Shared,
        effects: &mut Vec<Effect>,
    ) -> Result<(), sqlx::Error> {
        let mut accepted = Vec::with_capacity(run.len());
        for (index, write) in run.iter_mut().enumerate() {
            let Write::StoreMessage(p) = write else {
                continue;
            };
            let checked = match Self::resolve(conn, &p.msg, now, shared, effects).await? {
                Ok(target) => Self::check_reply(conn, p.msg.message.reply_to, &target)
                    .await?
                    .map(|()| target),
                Err(refusal) => Err(refusal),
            };
            match checked {
                Ok(target) => accepted.push((index, target)),
                Err(refusal) => p.result = Some(Err(refusal)),
            }
        }
        if accepted.is_empty() {
            return Ok(());
        }
        let count = accepted.len() as i64;
        let first_id = Queries::<DB>::reserve_message_ids(conn, count).await? - count + 1;
        let rows: Vec<MessageRow> = accepted
            .iter()
            .zip(first_id..)
            .filter_map(|((index, target), id)| match &run[*index] {
                Write::StoreMessage(p) => Some(Self::message_row(&p.msg.message, target, id, now)),
                _ => None,
            })
            .collect();
        let mut inserted = Queries::<DB>::insert_messages(conn, &rows).await?;
        drop(rows);
        inserted.sort_unstable();
        for ((index, target), id) in accepted.into_iter().zip(first_id..) {
            let Write::StoreMessage(p) = &mut run[index] else {
                continue;
            };
            let result = if inserted.binary_search(&id).is_ok() {
                for file_id in crate::validate::mentioned_file_ids(&p.msg.message.content) {
                    Queries::<DB>::insert_file_ref(conn, file_id, id).await?;
                }
                Ok(Self::stored(&p.msg.message, target, id, now, effects))
            } else {
                Self::duplicate(conn, &p.msg.message).await?
            };
            p.result = Some(result);
        }
        Ok(())
    }

    /// A reply must answer a message of the same conversation.
    async fn check_reply(
        conn: &mut DB::Connection,
        reply_to: Option<i64>,
        target: &Resolved,
    ) -> Result<ChatResult<()>, sqlx::Error> {
        let Some(reply_to) = reply_to else {
            return Ok(Ok(()));
        };
        let place = Queries::<DB>::message_place(conn, reply_to).await?;
        let same = match (target, place) {
            (Resolved::Private { conversation, .. }, Some((Some(other), None))) => {
                *conversation == other
            }
            (Resolved::Group { group_id, .. }, Some((None, Some(other)))) => *group_id == other,
            _ => false,
        };
        Ok(match same {
            true => Ok(()),
            false => Err(ChatError::not_found(
                "reply_to: no such message in this conversation",
            )),
        })
    }

    /// Finds the recipient (and the conversation) or takes the group the room
    /// checked; refuses an unknown recipient (404) or oneself (400).
    async fn resolve(
        conn: &mut DB::Connection,
        m: &NewMessage,
        now: Timestamp,
        shared: &Shared,
        effects: &mut Vec<Effect>,
    ) -> Result<ChatResult<Resolved>, sqlx::Error> {
        let sender = &m.message.sender;
        let name = match &m.to {
            Target::Group {
                group_id,
                room,
                members,
                status,
            } => {
                return Ok(Ok(Resolved::Group {
                    group_id: *group_id,
                    room: room.clone(),
                    members: members.clone(),
                    status: *status,
                }))
            }
            Target::User(name) => name,
        };
        let no_such_user = || ChatError::not_found("recipient: no such user");
        if !crate::validate::storable(name) {
            return Ok(Err(no_such_user()));
        }
        let key = crate::validate::lookup_key(name);
        let cached = shared.caches.cached_user(&key);
        let recipient = match cached {
            Some(user) => user,
            None => match Queries::<DB>::user_by_key(&mut *conn, &key).await? {
                Some((id, username)) => {
                    let user = UserRef {
                        id,
                        username: username.into(),
                    };
                    effects.push(Effect::CacheUser(key, user.clone()));
                    user
                }
                None => return Ok(Err(no_such_user())),
            },
        };
        if recipient.id == sender.id {
            return Ok(Err(ChatError::invalid(
                "recipient: cannot send a private message to yourself",
            )));
        }
        let pair = (sender.id.min(recipient.id), sender.id.max(recipient.id));
        let cached = shared.caches.conversation(pair);
        let conversation = match cached {
            Some(id) => id,
            None => {
                let id = Queries::<DB>::conversation_id(conn, pair.0, pair.1, now).await?;
                effects.push(Effect::CacheConversation(pair, id));
                id
            }
        };
        let recipients = std::iter::once(recipient.id);
        let status = crate::cluster::delivery_status(&*shared.broker, recipients);
        Ok(Ok(Resolved::Private {
            recipient,
            conversation,
            status,
        }))
    }

    fn message_row<'a>(
        m: &'a Outgoing,
        target: &Resolved,
        id: i64,
        now: Timestamp,
    ) -> MessageRow<'a> {
        let (conversation_id, recipient_id, group_id, status) = match target {
            Resolved::Private {
                recipient,
                conversation,
                status,
            } => (
                Some(*conversation),
                Some(recipient.id),
                None,
                Some(status.as_str()),
            ),
            // A group row keeps its ack's status only so that a resend of its
            // `client_id` is answered as the first send was; no view reads it.
            Resolved::Group {
                group_id, status, ..
            } => (None, None, Some(*group_id), Some(status.as_str())),
        };
        MessageRow {
            id,
            sender_id: m.sender.id,
            conversation_id,
            recipient_id,
            group_id,
            content: &m.content,
            message_type: &m.message_type,
            content_type: &m.content_type,
            created_at: now,
            status,
            client_id: m.client_id.as_deref(),
            reply_to: m.reply_to,
        }
    }

    /// The stored message, with its delivery queued for after COMMIT.
    fn stored(
        m: &Outgoing,
        target: Resolved,
        id: i64,
        now: Timestamp,
        effects: &mut Vec<Effect>,
    ) -> Stored {
        match target {
            Resolved::Private {
                recipient, status, ..
            } => {
                let message = Arc::new(PrivateMessage {
                    id,
                    sender: m.sender.username.to_string(),
                    recipient: recipient.username.to_string(),
                    content: m.content.clone(),
                    message_type: m.message_type.clone(),
                    content_type: m.content_type.clone(),
                    timestamp: now,
                    status,
                    lifecycle: Lifecycle {
                        reply_to: m.reply_to,
                        ..Lifecycle::default()
                    },
                });
                let key = pair(m.sender.id, recipient.id);
                effects.push(Effect::History(HistoryChange::PrivateStored(
                    key,
                    message.clone(),
                )));
                effects.push(Effect::DeliverPrivate {
                    push: Push::message(
                        PushedMessage {
                            id,
                            kind: MessageKind::Private,
                            accepted_at: m.accepted_at,
                        },
                        encode(&ServerFrame::Message((&*message).into())),
                    ),
                    recipient: recipient.id,
                    sender: m.sender.id,
                    origin: m.origin,
                    status,
                });
                Stored::Private(message)
            }
            Resolved::Group {
                group_id,
                room,
                members,
                status,
            } => {
                let message = Arc::new(GroupMessage {
                    id,
                    group_id,
                    sender: m.sender.username.to_string(),
                    content: m.content.clone(),
                    message_type: m.message_type.clone(),
                    content_type: m.content_type.clone(),
                    timestamp: now,
                    lifecycle: Lifecycle {
                        reply_to: m.reply_to,
                        ..Lifecycle::default()
                    },
                });
                effects.push(Effect::History(HistoryChange::GroupStored(message.clone())));
                effects.push(Effect::DeliverGroup {
                    group_id,
                    room,
                    members,
                    push: Push::message(
                        PushedMessage {
                            id,
                            kind: MessageKind::Group,
                            accepted_at: m.accepted_at,
                        },
                        encode(&ServerFrame::Message((&*message).into())),
                    ),
                    origin: m.origin,
                });
                Stored::Group(message, status)
            }
        }
    }

    /// The reply to a resend: the first message stored under this `client_id`.
    async fn duplicate(
        conn: &mut DB::Connection,
        m: &Outgoing,
    ) -> Result<ChatResult<Stored>, sqlx::Error> {
        let client_id = m.client_id.as_deref().unwrap_or_default();
        let (id, created_at, status) =
            Queries::<DB>::message_by_client_id(conn, m.sender.id, client_id).await?;
        let status = status
            .as_deref()
            .and_then(DeliveryStatus::parse)
            .unwrap_or(DeliveryStatus::Sent);
        Ok(Ok(Stored::Duplicate(Ack {
            id,
            timestamp: Timestamp(created_at),
            status,
        })))
    }
}
