//! Every SQL statement Parley runs, written once as [`Queries`], generic
//! over the [`Backend`]: [`Store`](crate::store::Store) reads through it,
//! and the persistence actor's transaction writes through it.
//!
//! The text is identical for both backends, except for the placeholders of
//! the multi-row INSERT (see `POSITIONAL_PLACEHOLDERS`), history pages read
//! as JSON on SQLite (`HISTORY_AS_JSON`), the row lock of a change and the
//! full-text search (`SEARCH_*`). Numbered parameters must first appear in
//! order ($1 before $2 ...): SQLite numbers `$n` parameters by first
//! appearance.

use std::marker::PhantomData;
use std::sync::OnceLock;

use sqlx::{Arguments, ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use crate::model::{
    ActivityPosition, Credentials, DeviceRecord, FileRecord, GroupSummary, Page, Search,
    SearchScope, Timestamp, UserRecord,
};
use crate::store::{AnyRow, Backend, ConversationRow, GroupRow, MemberRow, PrivateRow, SearchRow};

/// Parley's queries on the backend `DB`, called as `Queries::<DB>::query`
/// (never built: it only names the backend).
pub(crate) struct Queries<DB>(PhantomData<DB>);

/// The bounds say what sqlx must offer on `DB` for these queries (all of it
/// is offered by SQLite and Postgres); Rust does not carry a trait's
/// where-clauses to where the trait is used, so they are stated here, and
/// again on the writer's `Batch`, the only generic caller.
impl<DB: Backend> Queries<DB>
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
    pub async fn ping<'e, E: Executor<'e, Database = DB>>(ex: E) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(ex).await.map(|_| ())
    }

    pub async fn user_by_key<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        key: &str,
    ) -> Result<Option<(i64, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, username FROM users WHERE username_key = $1 AND deleted_at IS NULL",
        )
        .bind(key)
        .fetch_optional(ex)
        .await
    }

    /// A user's name, deleted or not (history shows the names of senders
    /// who have since deleted their account).
    pub async fn username<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        id: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await
    }

    pub async fn user_record<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        id: i64,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, username, email, created_at FROM users WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(ex)
        .await
    }

    pub async fn credentials<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        key: &str,
    ) -> Result<Option<Credentials>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, username, password_hash, token_generation FROM users \
             WHERE username_key = $1 AND deleted_at IS NULL",
        )
        .bind(key)
        .fetch_optional(ex)
        .await
    }

    /// A user's token generation, and whether the account is deleted.
    pub async fn account<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        id: i64,
    ) -> Result<Option<(i64, Option<i64>)>, sqlx::Error> {
        sqlx::query_as("SELECT token_generation, deleted_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await
    }

    /// Revoked tokens that have not expired yet: (jti, expiry in Unix seconds).
    pub async fn revoked_tokens<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        now_secs: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(now_secs)
            .fetch_all(ex)
            .await
    }

    /// Whether `user` can see a message that mentions the file.
    pub async fn file_visible_to<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        file_id: &str,
        user: i64,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT r.message_id FROM file_refs r JOIN messages m ON m.id = r.message_id \
             WHERE r.file_id = $1 \
               AND (m.conversation_id IN (SELECT id FROM conversations WHERE user_lo = $2 OR user_hi = $2) \
                 OR m.group_id IN (SELECT group_id FROM group_members WHERE user_id = $2)) \
             LIMIT 1",
        )
        .bind(file_id)
        .bind(user)
        .fetch_optional(ex)
        .await?;
        Ok(found.is_some())
    }

    pub async fn private_history<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        user_lo: i64,
        user_hi: i64,
        page: Page,
    ) -> Result<Vec<PrivateRow>, sqlx::Error> {
        let statements = DB::statements().private_history.get_or_init(|| {
            history_statements::<DB>(
                "m.id, m.sender_id, m.content, m.message_type, m.content_type, m.created_at, m.status, \
                 m.reply_to, m.edited_at, m.deleted_at, m.reactions",
                "FROM messages m WHERE m.conversation_id = \
                 (SELECT id FROM conversations WHERE user_lo = $1 AND user_hi = $2)",
                3,
            )
        });
        Self::history_page(
            ex,
            statements,
            &[user_lo, user_hi],
            page,
            |row: &PrivateRow| row.id,
        )
        .await
    }

    pub async fn group_history<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        group_id: i64,
        page: Page,
    ) -> Result<Vec<GroupRow>, sqlx::Error> {
        let statements = DB::statements().group_history.get_or_init(|| {
            history_statements::<DB>(
                "m.id, m.sender_id, m.content, m.message_type, m.content_type, m.created_at, \
                 m.reply_to, m.edited_at, m.deleted_at, m.reactions",
                "FROM messages m WHERE m.group_id = $1",
                2,
            )
        });
        Self::history_page(ex, statements, &[group_id], page, |row: &GroupRow| row.id).await
    }

    /// Reads `page` with the [`history_statements`] pair `statements`,
    /// whose leading parameters are `keys`, and gives its rows in ascending
    /// id order.
    async fn history_page<'e, E, T>(
        ex: E,
        statements: &'static [String; 2],
        keys: &[i64],
        page: Page,
        id: impl Fn(&T) -> i64,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        E: Executor<'e, Database = DB>,
        T: serde::de::DeserializeOwned + for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        let (after, before, forward) = bounds(page);
        let mut arguments = DB::Arguments::default();
        for &value in keys.iter().chain(&[after, before, page.limit]) {
            arguments.add(value).map_err(sqlx::Error::Encode)?;
        }
        let [forward_sql, backward_sql] = statements;
        let sql = if forward { forward_sql } else { backward_sql };
        let mut rows: Vec<T> = if DB::HISTORY_AS_JSON {
            let page: String = sqlx::query_scalar_with(sql, arguments)
                .fetch_one(ex)
                .await?;
            serde_json::from_str(&page).map_err(|err| sqlx::Error::Decode(Box::new(err)))?
        } else {
            sqlx::query_as_with(sql, arguments).fetch_all(ex).await?
        };
        rows.sort_unstable_by_key(id);
        Ok(rows)
    }

    pub async fn group_members<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        group_id: i64,
    ) -> Result<Vec<MemberRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT gm.user_id, u.username, gm.role, gm.joined_at \
             FROM group_members gm JOIN users u ON u.id = gm.user_id \
             WHERE gm.group_id = $1 ORDER BY gm.joined_at, gm.user_id",
        )
        .bind(group_id)
        .fetch_all(ex)
        .await
    }

    pub async fn devices<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        owner: i64,
    ) -> Result<Vec<DeviceRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, device_id, device_name, device_type, registered_at, last_seen \
             FROM devices WHERE user_id = $1 ORDER BY id",
        )
        .bind(owner)
        .fetch_all(ex)
        .await
    }

    pub async fn device<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        owner: i64,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, device_id, device_name, device_type, registered_at, last_seen \
             FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(owner)
        .bind(device_id)
        .fetch_optional(ex)
        .await
    }

    pub async fn file<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        file_id: &str,
    ) -> Result<Option<FileRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT file_id, uploader_id, filename, size, upload_time FROM files WHERE file_id = $1",
        )
        .bind(file_id)
        .fetch_optional(ex)
        .await
    }

    pub async fn contacts<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        user: i64,
        group_limit: i64,
    ) -> Result<Vec<(i64, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT u.id, u.username FROM users u WHERE u.deleted_at IS NULL AND u.id IN ( \
               SELECT user_hi FROM conversations WHERE user_lo = $1 \
               UNION SELECT user_lo FROM conversations WHERE user_hi = $1 \
               UNION SELECT other.user_id FROM group_members mine \
                 JOIN chat_groups g ON g.id = mine.group_id AND g.member_count <= $2 \
                 JOIN group_members other ON other.group_id = mine.group_id \
                 WHERE mine.user_id = $1 AND other.user_id <> mine.user_id)",
        )
        .bind(user)
        .bind(group_limit)
        .fetch_all(ex)
        .await
    }

    pub async fn groups_of<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        user: i64,
    ) -> Result<Vec<GroupSummary>, sqlx::Error> {
        sqlx::query_as(
            "SELECT g.id, g.name, g.description, g.created_at, u.username AS created_by, gm.role, \
               (SELECT COUNT(*) FROM messages m \
                 WHERE m.group_id = g.id AND m.id > gm.read_cursor AND m.sender_id <> gm.user_id \
                   AND m.deleted_at IS NULL) AS unread \
             FROM group_members gm \
             JOIN chat_groups g ON g.id = gm.group_id JOIN users u ON u.id = g.created_by \
             WHERE gm.user_id = $1 ORDER BY g.id",
        )
        .bind(user)
        .fetch_all(ex)
        .await
    }

    /// One page of `user`'s conversation list: up to `limit` private
    /// conversations and groups whose [`ActivityPosition`] is below `before`,
    /// largest first, each with its last message and unread count.
    ///
    /// Cost: every conversation and group of the user is visited on every page,
    /// each with one backward seek in `messages_conversation` or
    /// `messages_group` for its last message, and the whole set is sorted; only
    /// the page's entries then get their details and unread counts. A group's
    /// count is a range scan above the read cursor. A private count has no
    /// cursor to start from (any message may be marked read on its own), so it
    /// reads every message of the conversation through `messages_conversation`:
    /// it grows with the conversation's length. An index on unread messages
    /// would bound it by the unread count, at the price of a write on every
    /// private send and status change; not added until a measurement asks.
    ///
    /// A conversation without messages (none is stored so today) has no
    /// activity: its NULL position fails the cursor comparison, so it is left
    /// out rather than listed at the bottom.
    ///
    /// [`ActivityPosition`]: crate::model::ActivityPosition
    pub async fn conversations<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        user: i64,
        before: ActivityPosition,
        limit: i64,
    ) -> Result<Vec<ConversationRow>, sqlx::Error> {
        sqlx::query_as(
            "WITH page AS ( \
               SELECT * FROM ( \
                 SELECT e.conversation_id, e.group_id, e.peer_id, e.role, e.read_cursor, e.last_id, \
                   COALESCE(lm.created_at, e.joined_at) AS activity, \
                   COALESCE(e.last_id, 0) AS last_key, \
                   CASE WHEN e.last_id IS NULL THEN e.group_id ELSE 0 END AS group_key \
                 FROM ( \
                   SELECT c.id AS conversation_id, NULL AS group_id, \
                     CASE WHEN c.user_lo = $1 THEN c.user_hi ELSE c.user_lo END AS peer_id, \
                     NULL AS role, NULL AS joined_at, 0 AS read_cursor, \
                     (SELECT m.id FROM messages m WHERE m.conversation_id = c.id \
                       ORDER BY m.id DESC LIMIT 1) AS last_id \
                   FROM conversations c WHERE c.user_lo = $1 OR c.user_hi = $1 \
                   UNION ALL \
                   SELECT NULL, gm.group_id, NULL, gm.role, gm.joined_at, gm.read_cursor, \
                     (SELECT m.id FROM messages m WHERE m.group_id = gm.group_id \
                       ORDER BY m.id DESC LIMIT 1) \
                   FROM group_members gm WHERE gm.user_id = $1 \
                 ) AS e LEFT JOIN messages lm ON lm.id = e.last_id \
               ) AS entries \
               WHERE (activity, last_key, group_key) < ($2, $3, $4) \
               ORDER BY activity DESC, last_key DESC, group_key DESC \
               LIMIT $5 \
             ) \
             SELECT page.group_id, page.activity, page.last_key, page.group_key, page.role, \
               p.username AS peer, g.name AS group_name, s.username AS sender, r.username AS recipient, \
               lm.content, lm.message_type, lm.content_type, lm.status, \
               lm.reply_to, lm.edited_at, lm.deleted_at, lm.reactions, \
               CASE WHEN page.group_id IS NULL \
                 THEN (SELECT COUNT(*) FROM messages u WHERE u.conversation_id = page.conversation_id \
                         AND u.recipient_id = $1 AND u.status <> 'read' AND u.deleted_at IS NULL) \
                 ELSE (SELECT COUNT(*) FROM messages u WHERE u.group_id = page.group_id \
                         AND u.id > page.read_cursor AND u.sender_id <> $1 AND u.deleted_at IS NULL) \
               END AS unread \
             FROM page \
             LEFT JOIN users p ON p.id = page.peer_id \
             LEFT JOIN chat_groups g ON g.id = page.group_id \
             LEFT JOIN messages lm ON lm.id = page.last_id \
             LEFT JOIN users s ON s.id = lm.sender_id \
             LEFT JOIN users r ON r.id = lm.recipient_id \
             ORDER BY page.activity DESC, page.last_key DESC, page.group_key DESC",
        )
        .bind(user)
        .bind(before.at)
        .bind(before.message_id)
        .bind(before.group_id)
        .bind(limit)
        .fetch_all(ex)
        .await
    }

    /// Up to `limit` messages with id above `after` that `user` may see: their
    /// private conversations and every group they are in, ascending id.
    pub async fn visible_since<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        user: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let sql = DB::statements().visible_since.get_or_init(|| {
            format!(
                "{} WHERE {VISIBLE_TO_USER} AND m.id > $2 ORDER BY m.id LIMIT $3",
                any_message_select()
            )
        });
        sqlx::query_as(sql)
            .bind(user)
            .bind(after)
            .bind(limit)
            .fetch_all(ex)
            .await
    }

    /// Up to `limit` messages with id at or below `since` that `user` may see
    /// and whose last change is above it, in change order.
    pub async fn changed_since<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        user: i64,
        since: i64,
        limit: i64,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let sql = DB::statements().changed_since.get_or_init(|| {
            format!(
                "{} WHERE m.change_id > $2 AND m.id <= $2 AND {VISIBLE_TO_USER} \
                 ORDER BY m.change_id LIMIT $3",
                any_message_select()
            )
        });
        sqlx::query_as(sql)
            .bind(user)
            .bind(since)
            .bind(limit)
            .fetch_all(ex)
            .await
    }

    /// One message as `sync` reads it (the writer reads a changed message back
    /// with it, to push its new state).
    pub async fn any_message<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        id: i64,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        let statement = &DB::statements().any_message;
        let sql = statement.get_or_init(|| format!("{} WHERE m.id = $1", any_message_select()));
        sqlx::query_as(sql).bind(id).fetch_optional(ex).await
    }

    /// Who a message is between: (sender id, recipient id, group id, status).
    pub async fn message_parties<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        id: i64,
    ) -> Result<Option<(i64, Option<i64>, Option<i64>, Option<String>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT sender_id, recipient_id, group_id, status FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(ex)
        .await
    }

    /// One slice of the messages matching every word of `search` within its
    /// scope, best first and newest first among equals.
    pub async fn search<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        search: &Search,
    ) -> Result<Vec<SearchRow>, sqlx::Error> {
        let [visible, conversation, group] = search_statements::<DB>();
        let text = search_text::<DB>(&search.words);
        let query = match search.scope {
            SearchScope::Visible { user } => sqlx::query_as(visible).bind(text).bind(user),
            SearchScope::Conversation { user_lo, user_hi } => sqlx::query_as(conversation)
                .bind(text)
                .bind(user_lo)
                .bind(user_hi),
            SearchScope::Group { group_id, up_to } => sqlx::query_as(group)
                .bind(text)
                .bind(group_id)
                .bind(up_to.unwrap_or(i64::MAX)),
        };
        query
            .bind(search.before.unwrap_or(i64::MAX))
            .bind(search.limit)
            .bind(search.offset)
            .fetch_all(ex)
            .await
    }

    /// For a group and a user: (whether they are a member, the bound recorded
    /// when they last left, whether the group has any members).
    pub async fn group_reach<'e, E: Executor<'e, Database = DB>>(
        ex: E,
        group_id: i64,
        user: i64,
    ) -> Result<(bool, Option<i64>, bool), sqlx::Error> {
        sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2), \
               (SELECT last_visible_id FROM group_departures WHERE group_id = $1 AND user_id = $2), \
               EXISTS (SELECT 1 FROM group_members WHERE group_id = $1)",
        )
        .bind(group_id)
        .bind(user)
        .fetch_one(ex)
        .await
    }

    // ---- Writes: called only by the persistence actor, inside its transaction.

    pub async fn insert_user(
        conn: &mut DB::Connection,
        username: &str,
        email: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<UserRecord, sqlx::Error> {
        sqlx::query_as(
            "INSERT INTO users (username, username_key, email, email_key, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, username, email, created_at",
        )
        .bind(username)
        .bind(crate::validate::lookup_key(username))
        .bind(email)
        .bind(crate::validate::lookup_key(email))
        .bind(password_hash)
        .bind(now.0)
        .fetch_one(&mut *conn)
        .await
    }

    /// Creates a group with its creator as owner; returns the group id.
    pub async fn insert_group(
        conn: &mut DB::Connection,
        name: &str,
        description: &str,
        creator: i64,
        now: Timestamp,
    ) -> Result<i64, sqlx::Error> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO chat_groups (name, description, created_by, created_at, member_count) \
             VALUES ($1, $2, $3, $4, 1) RETURNING id",
        )
        .bind(name)
        .bind(description)
        .bind(creator)
        .bind(now.0)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(id)
        .bind(creator)
        .bind(now.0)
        .execute(&mut *conn)
        .await?;
        Ok(id)
    }

    /// The id of the conversation between two users, created on first use.
    pub async fn conversation_id(
        conn: &mut DB::Connection,
        user_lo: i64,
        user_hi: i64,
        now: Timestamp,
    ) -> Result<i64, sqlx::Error> {
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM conversations WHERE user_lo = $1 AND user_hi = $2")
                .bind(user_lo)
                .bind(user_hi)
                .fetch_optional(&mut *conn)
                .await?;
        match existing {
            Some(id) => Ok(id),
            None => {
                sqlx::query_scalar(
                    "INSERT INTO conversations (user_lo, user_hi, created_at) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(user_lo)
                .bind(user_hi)
                .bind(now.0)
                .fetch_one(&mut *conn)
                .await
            }
        }
    }

    /// Reserves `count` message ids; returns the last one (the ids are
    /// `last - count + 1 ..= last`). Rolled back with the batch, so no gaps
    /// are left by failed batches.
    pub async fn reserve_message_ids(
        conn: &mut DB::Connection,
        count: i64,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE id_sequence SET last_id = last_id + $1 WHERE name = 'messages' RETURNING last_id",
        )
        .bind(count)
        .fetch_one(&mut *conn)
        .await
    }

    /// Inserts rows whose ids are already reserved; returns the ids actually
    /// inserted. A row missing from the answer had a `client_id` its sender
    /// used before (the unique index decides, so resends are idempotent).
    ///
    /// Each INSERT reports only how many rows it stored: a RETURNING clause
    /// would hand every row across from sqlx-sqlite's connection thread on its
    /// own, and on one core each hand-over is a pair of context switches. Only a
    /// chunk that stored fewer rows than it was given (a resend) reads back
    /// which of its ids exist.
    pub async fn insert_messages(
        conn: &mut DB::Connection,
        rows: &[MessageRow<'_>],
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut inserted = Vec::with_capacity(rows.len());
        let mut rest = rows;
        while !rest.is_empty() {
            let size = *INSERT_CHUNKS
                .iter()
                .find(|&&size| size <= rest.len())
                .expect("chunk sizes end with 1");
            let (chunk, tail) = rest.split_at(size);
            let mut query = sqlx::query(insert_messages_sql::<DB>(size));
            for row in chunk {
                query = query
                    .bind(row.id)
                    .bind(row.sender_id)
                    .bind(row.conversation_id)
                    .bind(row.recipient_id)
                    .bind(row.group_id)
                    .bind(row.content)
                    .bind(row.message_type)
                    .bind(row.content_type)
                    .bind(row.created_at.0)
                    .bind(row.status)
                    .bind(row.client_id)
                    .bind(row.reply_to);
            }
            let stored = DB::rows_affected(&query.execute(&mut *conn).await?);
            if stored == chunk.len() as u64 {
                inserted.extend(chunk.iter().map(|row| row.id));
            } else {
                let (first, last) = (chunk[0].id, chunk[chunk.len() - 1].id);
                let ids: Vec<i64> =
                    sqlx::query_scalar("SELECT id FROM messages WHERE id >= $1 AND id <= $2")
                        .bind(first)
                        .bind(last)
                        .fetch_all(&mut *conn)
                        .await?;
                inserted.extend(ids);
            }
            rest = tail;
        }
        Ok(inserted)
    }

    /// What was stored earlier under a sender's `client_id`: (id, created_at, status).
    pub async fn message_by_client_id(
        conn: &mut DB::Connection,
        sender_id: i64,
        client_id: &str,
    ) -> Result<(i64, i64, Option<String>), sqlx::Error> {
        sqlx::query_as(
            "SELECT id, created_at, status FROM messages WHERE sender_id = $1 AND client_id = $2",
        )
        .bind(sender_id)
        .bind(client_id)
        .fetch_one(&mut *conn)
        .await
    }

    /// Registers a device, or updates name and type when the caller re-registers
    /// their own `device_id`. `None` when another user owns that `device_id`.
    pub async fn upsert_device(
        conn: &mut DB::Connection,
        owner: i64,
        device_id: &str,
        device_name: &str,
        device_type: &str,
        now: Timestamp,
    ) -> Result<Option<DeviceRecord>, sqlx::Error> {
        sqlx::query_as(
            "INSERT INTO devices (user_id, device_id, device_name, device_type, registered_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (device_id) DO UPDATE SET device_name = excluded.device_name, \
               device_type = excluded.device_type \
             WHERE devices.user_id = excluded.user_id \
             RETURNING id, device_id, device_name, device_type, registered_at, last_seen",
        )
        .bind(owner)
        .bind(device_id)
        .bind(device_name)
        .bind(device_type)
        .bind(now.0)
        .fetch_optional(&mut *conn)
        .await
    }

    /// Deletes the caller's device; its row id, or `None` if the caller has no such device.
    pub async fn delete_device(
        conn: &mut DB::Connection,
        owner: i64,
        device_id: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("DELETE FROM devices WHERE user_id = $1 AND device_id = $2 RETURNING id")
            .bind(owner)
            .bind(device_id)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Stamps a device's `last_seen`; false if the device no longer exists.
    pub async fn touch_device(
        conn: &mut DB::Connection,
        at: Timestamp,
        device: i64,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query("UPDATE devices SET last_seen = $1 WHERE id = $2")
            .bind(at.0)
            .bind(device)
            .execute(&mut *conn)
            .await
            .map(|done| DB::rows_affected(&done) > 0)
    }

    pub async fn insert_file(
        conn: &mut DB::Connection,
        file: &FileRecord,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO files (file_id, uploader_id, filename, size, upload_time) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&file.file_id)
        .bind(file.uploader_id)
        .bind(&file.filename)
        .bind(file.size)
        .bind(file.upload_time.0)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    /// Adds a member; false if they already are one.
    pub async fn insert_member(
        conn: &mut DB::Connection,
        group_id: i64,
        user: i64,
        role: &str,
        now: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (group_id, user_id) DO NOTHING RETURNING user_id",
        )
        .bind(group_id)
        .bind(user)
        .bind(role)
        .bind(now.0)
        .fetch_optional(&mut *conn)
        .await?;
        if inserted.is_some() {
            Self::change_member_count(conn, group_id, 1).await?;
        }
        Ok(inserted.is_some())
    }

    /// Removes a member; false if they were not one.
    pub async fn delete_member(
        conn: &mut DB::Connection,
        group_id: i64,
        user: i64,
    ) -> Result<bool, sqlx::Error> {
        let deleted: Option<i64> = sqlx::query_scalar(
            "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2 RETURNING user_id",
        )
        .bind(group_id)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        if deleted.is_some() {
            Self::change_member_count(conn, group_id, -1).await?;
        }
        Ok(deleted.is_some())
    }

    async fn change_member_count(
        conn: &mut DB::Connection,
        group_id: i64,
        by: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE chat_groups SET member_count = member_count + $1 WHERE id = $2")
            .bind(by)
            .bind(group_id)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    pub async fn update_role(
        conn: &mut DB::Connection,
        role: &str,
        group_id: i64,
        user: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE group_members SET role = $1 WHERE group_id = $2 AND user_id = $3")
            .bind(role)
            .bind(group_id)
            .bind(user)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    pub async fn is_member(
        conn: &mut DB::Connection,
        group_id: i64,
        user: i64,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM group_members WHERE group_id = $1 AND user_id = $2",
        )
        .bind(group_id)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(found.is_some())
    }

    /// Marks `recipient`'s messages with ids in (`after`, `up_to`] still `sent`
    /// as `delivered`; returns (message id, sender id) of each one changed.
    pub async fn mark_delivered(
        conn: &mut DB::Connection,
        recipient: i64,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "UPDATE messages SET status = 'delivered' \
             WHERE recipient_id = $1 AND status = 'sent' AND id > $2 AND id <= $3 \
             RETURNING id, sender_id",
        )
        .bind(recipient)
        .bind(after)
        .bind(up_to)
        .fetch_all(&mut *conn)
        .await
    }

    /// Sets private messages stored as `delivered` back to `sent`.
    pub async fn mark_undelivered(
        conn: &mut DB::Connection,
        ids: &[i64],
    ) -> Result<(), sqlx::Error> {
        for &id in ids {
            sqlx::query(
                "UPDATE messages SET status = 'sent' WHERE id = $1 AND status = 'delivered'",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    pub async fn mark_read(conn: &mut DB::Connection, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE messages SET status = 'read' WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Moves a member's read cursor up to `id` (never down).
    pub async fn advance_read_cursor(
        conn: &mut DB::Connection,
        id: i64,
        group_id: i64,
        user: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE group_members SET read_cursor = $1 \
             WHERE group_id = $2 AND user_id = $3 AND read_cursor < $1",
        )
        .bind(id)
        .bind(group_id)
        .bind(user)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    pub async fn touch_user(
        conn: &mut DB::Connection,
        at: Timestamp,
        user: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET last_seen = $1 WHERE id = $2")
            .bind(at.0)
            .bind(user)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Records that a message mentions a file (if such a file exists).
    pub async fn insert_file_ref(
        conn: &mut DB::Connection,
        file_id: &str,
        message_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO file_refs (file_id, message_id) \
             SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM files WHERE file_id = $1) \
             ON CONFLICT (file_id, message_id) DO NOTHING",
        )
        .bind(file_id)
        .bind(message_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    pub async fn insert_revoked_token(
        conn: &mut DB::Connection,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    pub async fn purge_revoked_tokens(
        conn: &mut DB::Connection,
        now_secs: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now_secs)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Sets a new password hash and invalidates every token issued before;
    /// returns the new token generation.
    pub async fn change_password(
        conn: &mut DB::Connection,
        password_hash: &str,
        user: i64,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE users SET password_hash = $1, token_generation = token_generation + 1 \
             WHERE id = $2 RETURNING token_generation",
        )
        .bind(password_hash)
        .bind(user)
        .fetch_one(&mut *conn)
        .await
    }

    /// Marks an account deleted; false if it already was.
    pub async fn delete_account(
        conn: &mut DB::Connection,
        at: Timestamp,
        user: i64,
    ) -> Result<bool, sqlx::Error> {
        let deleted: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL RETURNING id",
        )
        .bind(at.0)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(deleted.is_some())
    }

    /// Where a message is, for checking a reply to it: (conversation id, group id).
    pub async fn message_place(
        conn: &mut DB::Connection,
        id: i64,
    ) -> Result<Option<(Option<i64>, Option<i64>)>, sqlx::Error> {
        sqlx::query_as("SELECT conversation_id, group_id FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    /// What a change to a message must check, read under the row's lock on
    /// Postgres (so two nodes' writers change one message in turn): (sender id,
    /// recipient id, group id, deleted, reactions JSON).
    pub async fn message_for_change(
        conn: &mut DB::Connection,
        id: i64,
    ) -> Result<Option<(i64, Option<i64>, Option<i64>, bool, Option<String>)>, sqlx::Error> {
        let sql = DB::statements().message_for_change.get_or_init(|| {
            format!(
                "SELECT sender_id, recipient_id, group_id, deleted_at IS NOT NULL, reactions \
                 FROM messages WHERE id = $1{ROW_LOCK}",
                ROW_LOCK = DB::ROW_LOCK,
            )
        });
        sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    /// The role of a group member, if they are one.
    pub async fn member_role(
        conn: &mut DB::Connection,
        group_id: i64,
        user: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Replaces a message's content and stamps the edit and the change.
    pub async fn edit_message(
        conn: &mut DB::Connection,
        content: &str,
        edited_at: Timestamp,
        change_id: i64,
        id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE messages SET content = $1, edited_at = $2, change_id = $3 WHERE id = $4",
        )
        .bind(content)
        .bind(edited_at.0)
        .bind(change_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    /// Makes a message a tombstone: no content, no reactions, no file mentions.
    pub async fn delete_message(
        conn: &mut DB::Connection,
        deleted_at: Timestamp,
        change_id: i64,
        id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE messages SET content = '', reactions = NULL, deleted_at = $1, change_id = $2 \
             WHERE id = $3",
        )
        .bind(deleted_at.0)
        .bind(change_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Self::delete_file_refs(conn, id).await
    }

    /// Forgets which files a message mentions (before it is edited or deleted).
    pub async fn delete_file_refs(
        conn: &mut DB::Connection,
        message_id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM file_refs WHERE message_id = $1")
            .bind(message_id)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Stores a message's reactions (JSON, or NULL for none) and stamps the change.
    pub async fn set_reactions(
        conn: &mut DB::Connection,
        reactions: Option<&str>,
        change_id: i64,
        id: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE messages SET reactions = $1, change_id = $2 WHERE id = $3")
            .bind(reactions)
            .bind(change_id)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

/// The exclusive id bounds of a page, and whether it is read upwards.
fn bounds(page: Page) -> (i64, i64, bool) {
    (
        page.after.unwrap_or(0),
        page.before.unwrap_or(i64::MAX),
        page.after.is_some(),
    )
}

/// The two statements (forward, backward) that read one page of history:
/// `columns` (`alias.column` each, `m` being `messages`) from `source`, the
/// `FROM ... WHERE ...` part, whose page id bounds and limit are the three
/// parameters from `first_bound` on.
///
/// On SQLite the page is one JSON text, an array holding an array of
/// `columns` per message, because SQLite hands each row from its
/// connection's thread to the caller separately, and for a 50-message page
/// those hand-offs and per-value copies cost more than the query. Postgres
/// sends every row of a result in one reply, and building the JSON there
/// (`json_build_array` looks up each value's type output per call) costs it
/// more than the rows: a page's statement took 157 µs as rows against
/// 200 µs as JSON. The JSON array's order is not promised (an ORDER BY
/// inside the aggregate would sort again what the page's ORDER BY sorted),
/// so [`Queries::history_page`] puts either in id order.
fn history_statements<DB: Backend>(columns: &str, source: &str, first_bound: usize) -> [String; 2] {
    let (after, before, limit) = (first_bound, first_bound + 1, first_bound + 2);
    let page = |order: &str| {
        format!(
            "SELECT {columns} {source} AND m.id > ${after} AND m.id < ${before} \
             ORDER BY m.id {order} LIMIT ${limit}"
        )
    };
    if !DB::HISTORY_AS_JSON {
        return [page("ASC"), page("DESC")];
    }
    let names: Vec<&str> = columns
        .split(", ")
        .map(|column| column.split_once('.').map_or(column, |(_, name)| name))
        .collect();
    let names = names.join(", ");
    let json_page = |order: &str| {
        format!(
            "SELECT COALESCE(json_group_array(json_array({names})), '[]') FROM ({}) AS page",
            page(order)
        )
    };
    [json_page("ASC"), json_page("DESC")]
}

/// The columns of an [`AnyRow`], `m` being `messages`, `s` its sender and
/// `r` its recipient (see [`SENDER_AND_RECIPIENT`]).
const ANY_MESSAGE_FIELDS: &str =
    "m.id, s.username AS sender, r.username AS recipient, m.group_id, m.content, \
     m.message_type, m.content_type, m.created_at, m.status, m.reply_to, m.edited_at, \
     m.deleted_at, m.reactions, m.change_id";
const SENDER_AND_RECIPIENT: &str =
    "JOIN users s ON s.id = m.sender_id LEFT JOIN users r ON r.id = m.recipient_id";

/// Messages as [`AnyRow`]s, for a WHERE clause to follow.
fn any_message_select() -> String {
    format!("SELECT {ANY_MESSAGE_FIELDS} FROM messages m {SENDER_AND_RECIPIENT}")
}

/// Messages `$1` may see: their private conversations and every group they are in.
const VISIBLE_TO_USER: &str =
    "(m.conversation_id IN (SELECT id FROM conversations WHERE user_lo = $1 OR user_hi = $1) \
      OR m.group_id IN (SELECT group_id FROM group_members WHERE user_id = $1))";

/// The search statements for the three scopes (all that the user may see,
/// one conversation, one group), in that order. `$1` is the match text; each
/// scope's own parameters follow, then the `before` bound, limit and offset.
fn search_statements<DB: Backend>() -> &'static [String; 3] {
    DB::statements().search.get_or_init(|| {
        let statement = |scope: &str, next: usize| {
            let (before, limit, offset) = (next, next + 1, next + 2);
            format!(
                "SELECT {ANY_MESSAGE_FIELDS}, {SEARCH_RANK} AS hit_rank \
                 FROM {SEARCH_FROM} {SENDER_AND_RECIPIENT} \
                 WHERE {SEARCH_MATCH} AND {scope} AND m.id < ${before} \
                 ORDER BY hit_rank DESC, m.id DESC LIMIT ${limit} OFFSET ${offset}",
                SEARCH_RANK = DB::SEARCH_RANK,
                SEARCH_FROM = DB::SEARCH_FROM,
                SEARCH_MATCH = DB::SEARCH_MATCH,
            )
        };
        [
            // A former member's bound is a correlated lookup, so a group
            // left and joined again is covered whole by the membership.
            statement(
                "(m.conversation_id IN (SELECT id FROM conversations WHERE user_lo = $2 OR user_hi = $2) \
                  OR m.group_id IN (SELECT group_id FROM group_members WHERE user_id = $2) \
                  OR m.id <= (SELECT d.last_visible_id FROM group_departures d \
                              WHERE d.user_id = $2 AND d.group_id = m.group_id))",
                3,
            ),
            statement(
                "m.conversation_id = (SELECT id FROM conversations WHERE user_lo = $2 AND user_hi = $3)",
                4,
            ),
            statement("m.group_id = $2 AND m.id <= $3", 4),
        ]
    })
}

/// The words of a search as the backend's match text (see `SEARCH_SYNTAX`).
fn search_text<DB: Backend>(words: &[String]) -> String {
    match DB::SEARCH_SYNTAX {
        crate::store::SearchSyntax::Fts5 => words
            .iter()
            .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" AND "),
        crate::store::SearchSyntax::PlainWords => words.join(" "),
    }
}

/// A message row to insert: either `conversation_id` + `recipient_id` (private)
/// or `group_id` (group).
pub struct MessageRow<'a> {
    pub id: i64,
    pub sender_id: i64,
    pub conversation_id: Option<i64>,
    pub recipient_id: Option<i64>,
    pub group_id: Option<i64>,
    pub content: &'a str,
    pub message_type: &'a str,
    pub content_type: &'a str,
    pub created_at: Timestamp,
    pub status: Option<&'static str>,
    pub client_id: Option<&'a str>,
    pub reply_to: Option<i64>,
}

/// Rows per INSERT statement, largest first: a batch is cut into these so
/// that only a handful of distinct statements are ever prepared, and (as
/// powers of two) a batch of up to 256 rows takes at most eight of them.
const INSERT_CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];
const MESSAGE_COLUMNS: usize = 12;

fn insert_messages_sql<DB: Backend>(rows: usize) -> &'static str {
    let statements = DB::statements().insert_messages.get_or_init(|| {
        INSERT_CHUNKS
            .iter()
            .map(|&rows| {
                let values: Vec<String> = (0..rows)
                    .map(|row| {
                        let first = row * MESSAGE_COLUMNS + 1;
                        let params: Vec<String> = (first..first + MESSAGE_COLUMNS)
                            .map(|n| match DB::POSITIONAL_PLACEHOLDERS {
                                true => "?".to_owned(),
                                false => format!("${n}"),
                            })
                            .collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO messages (id, sender_id, conversation_id, recipient_id, group_id, \
                     content, message_type, content_type, created_at, status, client_id, reply_to) \
                     VALUES {} \
                     ON CONFLICT (sender_id, client_id) WHERE client_id IS NOT NULL DO NOTHING",
                    values.join(", ")
                )
            })
            .collect()
    });
    let index = INSERT_CHUNKS
        .iter()
        .position(|&size| size == rows)
        .expect("a chunk size");
    &statements[index]
}

/// The statements built at first use rather than written out, one set per
/// backend (see [`Backend::statements`]), each named after its query.
pub(crate) struct Statements {
    private_history: OnceLock<[String; 2]>,
    group_history: OnceLock<[String; 2]>,
    visible_since: OnceLock<String>,
    changed_since: OnceLock<String>,
    any_message: OnceLock<String>,
    search: OnceLock<[String; 3]>,
    insert_messages: OnceLock<Vec<String>>,
    message_for_change: OnceLock<String>,
}

impl Statements {
    pub(crate) const fn new() -> Statements {
        Statements {
            private_history: OnceLock::new(),
            group_history: OnceLock::new(),
            visible_since: OnceLock::new(),
            changed_since: OnceLock::new(),
            any_message: OnceLock::new(),
            search: OnceLock::new(),
            insert_messages: OnceLock::new(),
            message_for_change: OnceLock::new(),
        }
    }
}
