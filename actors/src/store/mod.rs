//! The database: connecting to SQLite or Postgres by URL scheme, running the
//! embedded migrations, and the queries. Reads go through [`Store`] from
//! anywhere; writes only from the persistence actor, inside its transactions.
//!
//! Every query is written once, in `queries.rs`, generic over the
//! [`Backend`], whose implementations for SQLite and Postgres hold what the
//! two dialects spell differently.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::error::{ChatError, ChatResult};
use crate::model::{
    AccountState, ActivityPosition, AnyMessage, ConversationKind, ConversationPage,
    ConversationSummary, Credentials, DeliveryStatus, DeviceRecord, FileRecord, GroupMessage,
    GroupReach, GroupSummary, Lifecycle, Page, PrivateMessage, Search, SearchHit, Timestamp,
    UserRecord, UserRef,
};

mod queries;

pub(crate) use queries::{MessageRow, Queries, Statements};

/// A database Parley runs on: sqlx's driver for it, and what Parley's SQL
/// says differently there. The queries and the writer's transaction are
/// written once, generic over it.
pub(crate) trait Backend: sqlx::Database {
    /// Whether the multi-row INSERT binds its parameters in order (`?`)
    /// rather than by number (`$n`).
    const POSITIONAL_PLACEHOLDERS: bool;
    /// Whether a history page is read as one JSON text rather than as rows
    /// (`history_statements` says why each backend reads it as it does).
    const HISTORY_AS_JSON: bool;
    /// What `message_for_change` appends to its SELECT to lock the row.
    const ROW_LOCK: &'static str;
    /// Full-text search (`search_statements`): what joins the index to
    /// `messages m`, the match of the words (`$1`), the rank (higher is
    /// better) and how the words are written for the match.
    const SEARCH_FROM: &'static str;
    const SEARCH_MATCH: &'static str;
    const SEARCH_RANK: &'static str;
    const SEARCH_SYNTAX: SearchSyntax;

    /// The statements built at first use, one set per backend (a `static`
    /// inside a generic function would be shared by both backends).
    fn statements() -> &'static Statements;

    /// How many rows a statement changed (sqlx gives each backend's result
    /// this method, but no trait has it).
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl Backend for sqlx::Sqlite {
    /// SQLite looks up a numbered parameter's name by a linear scan, so a
    /// statement with thousands of `$n` costs quadratic time to bind; `?`
    /// placeholders bind in order at no such cost.
    const POSITIONAL_PLACEHOLDERS: bool = true;
    const HISTORY_AS_JSON: bool = true;
    /// The writer is the only connection that writes: no row lock needed.
    const ROW_LOCK: &'static str = "";
    /// The FTS5 index joined to `messages m`, the match of the words in FTS5
    /// syntax, and the rank (`bm25` is lower for better matches).
    const SEARCH_FROM: &'static str = "messages_fts JOIN messages m ON m.id = messages_fts.rowid";
    const SEARCH_MATCH: &'static str = "messages_fts MATCH $1";
    const SEARCH_RANK: &'static str = "-bm25(messages_fts)";
    const SEARCH_SYNTAX: SearchSyntax = SearchSyntax::Fts5;

    fn statements() -> &'static Statements {
        static STATEMENTS: Statements = Statements::new();
        &STATEMENTS
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Backend for sqlx::Postgres {
    const POSITIONAL_PLACEHOLDERS: bool = false;
    const HISTORY_AS_JSON: bool = false;
    /// Each node of a cluster has a writer: a change locks its message's row.
    const ROW_LOCK: &'static str = " FOR UPDATE";
    /// `messages m` with the words (`$1`) as a tsquery of the same 'simple'
    /// configuration the stored `search_vector` uses, the match, and the rank
    /// (normalised by the message's length, as bm25 is on SQLite).
    const SEARCH_FROM: &'static str = "messages m CROSS JOIN plainto_tsquery('simple', $1) AS tsq";
    const SEARCH_MATCH: &'static str = "m.search_vector @@ tsq";
    const SEARCH_RANK: &'static str = "ts_rank(m.search_vector, tsq, 1)::float8";
    const SEARCH_SYNTAX: SearchSyntax = SearchSyntax::PlainWords;

    fn statements() -> &'static Statements {
        static STATEMENTS: Statements = Statements::new();
        &STATEMENTS
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// How a search's words are handed to the backend's full-text match.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SearchSyntax {
    /// An FTS5 query: each word an FTS5 string (so nothing in it is an
    /// operator), all of them required.
    Fts5,
    /// Words separated by spaces, for `plainto_tsquery`, which requires
    /// them all and reads no operators.
    PlainWords,
}

/// A connection pool of either backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    async fn close(&self) {
        match self {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Pool::Sqlite(pool) => pool.is_closed(),
            Pool::Postgres(pool) => pool.is_closed(),
        }
    }
}

/// Runs the same expression against whichever backend a [`Pool`] holds; `$q`
/// names the backend's [`Queries`] and `$pool` its pool inside `$body`.
macro_rules! on_backend {
    ($pool_enum:expr, |$q:ident, $pool:ident| $body:expr) => {
        match $pool_enum {
            $crate::store::Pool::Sqlite($pool) => {
                type $q = $crate::store::Queries<sqlx::Sqlite>;
                $body
            }
            $crate::store::Pool::Postgres($pool) => {
                type $q = $crate::store::Queries<sqlx::Postgres>;
                $body
            }
        }
    };
}

/// When a commit counts as done (SQLite; Postgres follows its own
/// `synchronous_commit` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each commit is fsynced before it is acknowledged: an ack survives a
    /// power cut or OS crash.
    #[default]
    Full,
    /// Commits reach the OS but are fsynced only at checkpoints: an ack
    /// survives the server process crashing or being killed, not a power
    /// cut or OS crash (the last commits may be lost then).
    Normal,
}

/// A private message as history reads it: the two parties are known to the
/// caller, so only the sender's id is read (no join with `users`). Read from
/// a JSON array in field order (SQLite) or a row (Postgres).
#[derive(Debug, serde::Deserialize, sqlx::FromRow)]
pub(crate) struct PrivateRow {
    pub id: i64,
    pub sender_id: i64,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    pub created_at: i64,
    pub status: String,
    pub reply_to: Option<i64>,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub reactions: Option<String>,
}

/// A group message as history reads it (the group is known to the caller,
/// the sender's name comes from [`Usernames`]). Read from a JSON array in
/// field order (SQLite) or a row (Postgres).
#[derive(Debug, serde::Deserialize, sqlx::FromRow)]
pub(crate) struct GroupRow {
    pub id: i64,
    pub sender_id: i64,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    pub created_at: i64,
    pub reply_to: Option<i64>,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub reactions: Option<String>,
}

/// A message found by a search, with its rank.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SearchRow {
    #[sqlx(flatten)]
    pub message: AnyRow,
    pub hit_rank: f64,
}

/// A message of either kind as `sync` reads it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AnyRow {
    pub id: i64,
    pub sender: String,
    pub recipient: Option<String>,
    pub group_id: Option<i64>,
    pub content: String,
    pub message_type: String,
    pub content_type: String,
    pub created_at: i64,
    pub status: Option<String>,
    pub reply_to: Option<i64>,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub reactions: Option<String>,
    pub change_id: Option<i64>,
}

impl AnyRow {
    pub(crate) fn into_message(self) -> ChatResult<AnyMessage> {
        Ok(AnyMessage {
            lifecycle: lifecycle(
                self.id,
                self.reply_to,
                self.edited_at,
                self.deleted_at,
                self.reactions.as_deref(),
            )?,
            id: self.id,
            sender: self.sender,
            recipient: self.recipient,
            group_id: self.group_id,
            content: self.content,
            message_type: self.message_type,
            content_type: self.content_type,
            timestamp: Timestamp(self.created_at),
            status: self.status,
            change_id: self.change_id,
        })
    }
}

/// A message's lifecycle columns, as every view shows them.
fn lifecycle(
    id: i64,
    reply_to: Option<i64>,
    edited_at: Option<i64>,
    deleted_at: Option<i64>,
    reactions: Option<&str>,
) -> ChatResult<Lifecycle> {
    Lifecycle::from_columns(reply_to, edited_at, deleted_at, reactions).map_err(|err| {
        ChatError::internal_msg(format_args!("message {id} has unreadable reactions: {err}"))
    })
}

/// User id → name, kept by the layers above (the chat core's caches) for
/// the store's reads that show names.
pub trait Usernames: Send + Sync {
    fn username(&self, id: i64) -> Option<Arc<str>>;
    fn remember_username(&self, id: i64, name: Arc<str>);
}

/// Who a message is between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageParties {
    pub sender: i64,
    /// Set for a private message.
    pub recipient: Option<i64>,
    /// Set for a group message.
    pub group_id: Option<i64>,
}

/// One entry of a conversation-list page as `conversations` reads it: a
/// group when `group_id` is set, else a private conversation. The message
/// columns are those of the last message, NULL for a group without one.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConversationRow {
    pub group_id: Option<i64>,
    pub activity: i64,
    pub last_key: i64,
    pub group_key: i64,
    pub role: Option<String>,
    pub peer: Option<String>,
    pub group_name: Option<String>,
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub content: Option<String>,
    pub message_type: Option<String>,
    pub content_type: Option<String>,
    pub status: Option<String>,
    pub reply_to: Option<i64>,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub reactions: Option<String>,
    pub unread: i64,
}

/// A member of a group as the room actor keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: i64,
    pub username: String,
    pub role: String,
    pub joined_at: i64,
}

/// Read access to the database, and the single-connection pool the
/// persistence actor writes through.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) read: Pool,
    pub(crate) write: Pool,
    /// The connection [`Store::tidy`] works through, off the writer's path.
    tidier: Pool,
}

/// WAL size, in pages, at which the SQLite writer checkpoints after a
/// commit (1 GiB at SQLite's default 4 KiB pages). That commit, and every
/// message queued behind it, waits for the checkpoint; under sustained
/// writes these rare slow commits set the latency tail, so the limit is set
/// high, at the price of a WAL file that large on a busy server
/// (measurements in `load-tests/README.md`, "The private p99 now").
const WRITER_CHECKPOINT_FRAMES: u32 = 262_144;

/// How long a request waits for a database connection before failing with
/// 503 instead of hanging (also how long an unreachable database is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

impl Store {
    /// Connects by URL scheme (`sqlite:` or `postgres:`/`postgresql:`),
    /// creating the SQLite file and its directory if needed, and runs the
    /// embedded migrations.
    pub async fn connect(url: &str, durability: Durability) -> ChatResult<Store> {
        let store = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, durability).await?
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Self::connect_postgres(url).await?
        } else {
            return Err(ChatError::invalid(
                "database URL: must start with sqlite: or postgres:",
            ));
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_sqlite(url: &str, durability: Durability) -> ChatResult<Store> {
        let synchronous = match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| ChatError::invalid(format!("database URL: {err}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(ACQUIRE_TIMEOUT)
            .foreign_keys(true)
            // A page cache big enough that a batch never spills mid-transaction,
            // statement journals in memory rather than temp files, and reads
            // through a memory map rather than a read() per page.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            .pragma("mmap_size", "268435456");
        // No `journal_size_limit`: shrinking the WAL file is an ftruncate the
        // writer makes when it restarts the WAL, inside a commit that every
        // queued message then waits for, and a large truncate can take the
        // file system tens of milliseconds. The file keeps its largest size
        // (about WRITER_CHECKPOINT_FRAMES pages) until the store is closed.
        if let Some(dir) = Path::new(options.get_filename()).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(ChatError::internal)?;
            }
        }
        // Opening the writer first creates the file and switches it to WAL
        // before any reader connects. A separate connection copies the WAL
        // back in the background (see `Store::tidy`), so the writer
        // never waits for the bulk of a copy. But the WAL starts over from
        // its beginning only in a transaction that began after every frame
        // was copied, and a writer that commits without pause has always
        // begun its next one before a background pass ends (the passes do
        // copy every frame there was when they started); so once the WAL
        // holds WRITER_CHECKPOINT_FRAMES pages the writer checkpoints after
        // its commit too, copying only what the background one has not yet,
        // and the WAL restarts.
        // No test before a connection is handed out: a SQLite connection is
        // a file in this process and cannot go stale as a network one can,
        // and the test is a round trip to the connection's own thread — on
        // one core, two context switches for every history read and batch.
        let pool = |size| {
            SqlitePoolOptions::new()
                .max_connections(size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
        };
        let write = pool(1)
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_FRAMES.to_string()),
            )
            .await?;
        let tidier = pool(1).connect_lazy_with(options.clone());
        let read = pool(8)
            .connect_with(options.read_only(true).create_if_missing(false))
            .await?;
        Ok(Store {
            read: Pool::Sqlite(read),
            write: Pool::Sqlite(write),
            tidier: Pool::Sqlite(tidier),
        })
    }

    async fn connect_postgres(url: &str) -> ChatResult<Store> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| ChatError::invalid(format!("database URL: {err}")))?;
        let pool = |size| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(ACQUIRE_TIMEOUT)
        };
        let write = pool(1).connect_with(options.clone()).await?;
        let tidier = pool(1).connect_lazy_with(options.clone());
        let read = pool(16).connect_lazy_with(options);
        Ok(Store {
            read: Pool::Postgres(read),
            write: Pool::Postgres(write),
            tidier: Pool::Postgres(tidier),
        })
    }

    async fn migrate(&self) -> ChatResult<()> {
        let result = match &self.write {
            Pool::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await,
            Pool::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await,
        };
        result.map_err(ChatError::internal)
    }

    /// Background upkeep, run every second or so until [`Store::close`] on
    /// a connection of its own, so that the writer never does it inline.
    /// SQLite: copies committed WAL pages back into the database without
    /// blocking the writer (a PASSIVE checkpoint).
    /// Postgres: moves the search index's pending entries into the index
    /// proper. A GIN index queues new entries in a pending list, and the
    /// insert that finds the list past `gin_pending_list_limit` (4 MB by
    /// default) merges the whole list itself: under sustained writes that
    /// insert is the writer's, every few seconds, and the merge (100 ms and
    /// more) holds every message queued behind it. An insert skips the
    /// merge while another one runs, so the writer pays it only if this
    /// falls behind (measurements in `load-tests/README.md`, "Postgres: the
    /// search index's pending list").
    pub async fn tidy(&self) -> ChatResult<()> {
        match &self.tidier {
            Pool::Sqlite(pool) => {
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(pool)
                    .await?;
            }
            Pool::Postgres(pool) => {
                sqlx::query("SELECT gin_clean_pending_list('messages_search'::regclass)")
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Closes every connection (at shutdown). On SQLite the writer first
    /// copies the whole WAL back and empties it, so a stopped server leaves
    /// everything in the database file.
    pub async fn close(&self) {
        self.tidier.close().await;
        self.read.close().await;
        if let Pool::Sqlite(pool) = &self.write {
            let emptied = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await;
            if let Err(error) = emptied {
                tracing::warn!(error = ?error, "could not empty the WAL at shutdown");
            }
        }
        self.write.close().await;
    }

    /// Whether [`Store::close`] has run: the background upkeep stops then
    /// (on SQLite, `close` empties the WAL itself).
    pub fn is_closed(&self) -> bool {
        self.tidier.is_closed()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> ChatResult<()> {
        on_backend!(&self.read, |Q, pool| Q::ping(pool).await)?;
        Ok(())
    }

    pub async fn user_by_name(&self, username: &str) -> ChatResult<Option<UserRef>> {
        if !crate::validate::storable(username) {
            return Ok(None);
        }
        let key = crate::validate::lookup_key(username);
        let row = on_backend!(&self.read, |Q, pool| Q::user_by_key(pool, &key).await)?;
        Ok(row.map(|(id, username)| UserRef {
            id,
            username: username.into(),
        }))
    }

    /// An account as registration returned it; `None` once it is deleted.
    pub async fn user_record(&self, id: i64) -> ChatResult<Option<UserRecord>> {
        Ok(on_backend!(&self.read, |Q, pool| Q::user_record(pool, id).await)?)
    }

    pub async fn credentials(&self, username: &str) -> ChatResult<Option<Credentials>> {
        if !crate::validate::storable(username) {
            return Ok(None);
        }
        let key = crate::validate::lookup_key(username);
        Ok(on_backend!(&self.read, |Q, pool| Q::credentials(
            pool, &key
        )
        .await)?)
    }

    /// A page of the private conversation between two users, ascending id.
    pub async fn private_history(
        &self,
        a: &UserRef,
        b: &UserRef,
        page: Page,
    ) -> ChatResult<Vec<PrivateMessage>> {
        let (lo, hi) = (a.id.min(b.id), a.id.max(b.id));
        let rows = on_backend!(&self.read, |Q, pool| {
            Q::private_history(pool, lo, hi, page).await
        })?;
        let (sent_by_a, sent_by_b) = (
            (a.username.to_string(), b.username.to_string()),
            (b.username.to_string(), a.username.to_string()),
        );
        rows.into_iter()
            .map(|row| {
                let (sender, recipient) = if row.sender_id == a.id {
                    sent_by_a.clone()
                } else {
                    sent_by_b.clone()
                };
                let status = DeliveryStatus::parse(&row.status).ok_or_else(|| {
                    ChatError::internal_msg(format_args!(
                        "message {} has status {:?}",
                        row.id, row.status
                    ))
                })?;
                Ok(PrivateMessage {
                    lifecycle: lifecycle(
                        row.id,
                        row.reply_to,
                        row.edited_at,
                        row.deleted_at,
                        row.reactions.as_deref(),
                    )?,
                    id: row.id,
                    sender,
                    recipient,
                    content: row.content,
                    message_type: row.message_type,
                    content_type: row.content_type,
                    timestamp: Timestamp(row.created_at),
                    status,
                })
            })
            .collect()
    }

    pub async fn group_members(&self, group_id: i64) -> ChatResult<Vec<MemberRow>> {
        Ok(on_backend!(&self.read, |Q, pool| {
            Q::group_members(pool, group_id).await
        })?)
    }

    /// A page of a group's messages, ascending id; the senders' names come
    /// from `names`, which learns those it did not know (a join with `users`
    /// per row costs more than a look-up in memory).
    pub async fn group_history(
        &self,
        group_id: i64,
        page: Page,
        names: &dyn Usernames,
    ) -> ChatResult<Vec<GroupMessage>> {
        let rows = on_backend!(&self.read, |Q, pool| {
            Q::group_history(pool, group_id, page).await
        })?;
        let mut senders = Vec::with_capacity(rows.len());
        for row in &rows {
            let name = match names.username(row.sender_id) {
                Some(name) => name,
                None => {
                    let id = row.sender_id;
                    let name: Arc<str> = on_backend!(&self.read, |Q, pool| Q::username(pool, id)
                        .await)?
                    .ok_or_else(|| {
                        ChatError::internal_msg(format_args!("message {} has no sender", row.id))
                    })?
                    .into();
                    names.remember_username(id, name.clone());
                    name
                }
            };
            senders.push(name);
        }
        rows.into_iter()
            .zip(senders)
            .map(|(row, sender)| {
                Ok(GroupMessage {
                    lifecycle: lifecycle(
                        row.id,
                        row.reply_to,
                        row.edited_at,
                        row.deleted_at,
                        row.reactions.as_deref(),
                    )?,
                    id: row.id,
                    group_id,
                    sender: sender.to_string(),
                    content: row.content,
                    message_type: row.message_type,
                    content_type: row.content_type,
                    timestamp: Timestamp(row.created_at),
                })
            })
            .collect()
    }

    pub async fn devices(&self, owner: i64) -> ChatResult<Vec<DeviceRecord>> {
        Ok(on_backend!(&self.read, |Q, pool| Q::devices(pool, owner).await)?)
    }

    pub async fn device(&self, owner: i64, device_id: &str) -> ChatResult<Option<DeviceRecord>> {
        if !crate::validate::storable(device_id) {
            return Ok(None);
        }
        Ok(on_backend!(&self.read, |Q, pool| {
            Q::device(pool, owner, device_id).await
        })?)
    }

    /// The file with this id; `None` for any id not of the server's form.
    pub async fn file(&self, file_id: &str) -> ChatResult<Option<FileRecord>> {
        if !crate::validate::is_file_id(file_id) {
            return Ok(None);
        }
        Ok(on_backend!(&self.read, |Q, pool| Q::file(pool, file_id).await)?)
    }

    /// The caller's groups with their role and unread count.
    pub async fn groups_of(&self, user: i64) -> ChatResult<Vec<GroupSummary>> {
        Ok(on_backend!(&self.read, |Q, pool| Q::groups_of(pool, user).await)?)
    }

    /// A page of `user`'s private conversations and groups with a position
    /// below `before`, newest activity first (see `ActivityPosition`).
    pub async fn conversations(
        &self,
        user: i64,
        before: ActivityPosition,
        limit: i64,
    ) -> ChatResult<ConversationPage> {
        // One row more than the page tells whether another page follows.
        let rows = on_backend!(&self.read, |Q, pool| {
            Q::conversations(pool, user, before, limit + 1).await
        })?;
        let more = rows.len() as i64 > limit;
        let conversations = rows
            .into_iter()
            .take(limit as usize)
            .map(conversation_summary)
            .collect::<ChatResult<_>>()?;
        Ok(ConversationPage {
            conversations,
            more,
        })
    }

    /// Up to `limit` messages above `after` that `user` may see, ascending id.
    pub async fn visible_since(
        &self,
        user: i64,
        after: i64,
        limit: i64,
    ) -> ChatResult<Vec<AnyMessage>> {
        let rows = on_backend!(&self.read, |Q, pool| {
            Q::visible_since(pool, user, after, limit).await
        })?;
        rows.into_iter().map(AnyRow::into_message).collect()
    }

    /// Up to `limit` messages at or below `since` that `user` may see and
    /// whose last change is above it, in change order: what a `sync` from
    /// `since` replays besides the new messages.
    pub async fn changed_since(
        &self,
        user: i64,
        since: i64,
        limit: i64,
    ) -> ChatResult<Vec<AnyMessage>> {
        let rows = on_backend!(&self.read, |Q, pool| {
            Q::changed_since(pool, user, since, limit).await
        })?;
        rows.into_iter().map(AnyRow::into_message).collect()
    }

    /// Who a message is between: its sender, and its recipient or group;
    /// `None` if there is no such message.
    pub async fn message_parties(&self, id: i64) -> ChatResult<Option<MessageParties>> {
        let row = on_backend!(&self.read, |Q, pool| Q::message_parties(pool, id).await)?;
        Ok(row.map(|(sender, recipient, group_id, _)| MessageParties {
            sender,
            recipient,
            group_id,
        }))
    }

    /// One slice of the messages matching a search, best first (ties: newest first).
    pub async fn search(&self, search: &Search) -> ChatResult<Vec<SearchHit>> {
        let rows = on_backend!(&self.read, |Q, pool| Q::search(pool, search).await)?;
        rows.into_iter()
            .map(|row| {
                Ok(SearchHit {
                    message: row.message.into_message()?,
                    rank: row.hit_rank,
                })
            })
            .collect()
    }

    /// How much of a group's history `user` may search.
    pub async fn group_reach(&self, group_id: i64, user: i64) -> ChatResult<GroupReach> {
        let (member, last_visible, has_members) = on_backend!(&self.read, |Q, pool| {
            Q::group_reach(pool, group_id, user).await
        })?;
        Ok(match (member, last_visible) {
            (true, _) => GroupReach::Whole,
            (false, Some(id)) => GroupReach::UpTo(id),
            (false, None) if has_members => GroupReach::Outsider,
            (false, None) => GroupReach::NoSuchGroup,
        })
    }

    /// A user's token generation and whether the account is deleted.
    pub async fn account(&self, user: i64) -> ChatResult<Option<AccountState>> {
        let row = on_backend!(&self.read, |Q, pool| Q::account(pool, user).await)?;
        Ok(row.map(|(token_generation, deleted_at)| AccountState {
            token_generation,
            deleted: deleted_at.is_some(),
        }))
    }

    /// Tokens revoked by logout that have not expired: (jti, expiry in Unix seconds).
    pub async fn revoked_tokens(&self, now_secs: i64) -> ChatResult<Vec<(String, i64)>> {
        Ok(on_backend!(&self.read, |Q, pool| {
            Q::revoked_tokens(pool, now_secs).await
        })?)
    }

    /// Whether `user` can see a message that mentions the file.
    pub async fn file_visible_to(&self, file_id: &str, user: i64) -> ChatResult<bool> {
        Ok(on_backend!(&self.read, |Q, pool| {
            Q::file_visible_to(pool, file_id, user).await
        })?)
    }

    /// Users who share a private conversation with `user`, or a group of at
    /// most `group_limit` members (presence in larger groups is not pushed).
    pub async fn contacts(&self, user: i64, group_limit: i64) -> ChatResult<Vec<UserRef>> {
        let rows = on_backend!(&self.read, |Q, pool| {
            Q::contacts(pool, user, group_limit).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, username)| UserRef {
                id,
                username: username.into(),
            })
            .collect())
    }
}

/// A conversation-list row as the model shows it. A column that the query's
/// joins guarantee but that came back NULL is a fault of the store.
fn conversation_summary(row: ConversationRow) -> ChatResult<ConversationSummary> {
    let position = ActivityPosition {
        at: row.activity,
        message_id: row.last_key,
        group_id: row.group_key,
    };
    let required = |value: Option<String>, column: &str| {
        value.ok_or_else(|| {
            ChatError::internal_msg(format_args!(
                "conversation list entry {position:?} has no {column}"
            ))
        })
    };
    let timestamp = Timestamp(row.activity);
    let lifecycle = lifecycle(
        row.last_key,
        row.reply_to,
        row.edited_at,
        row.deleted_at,
        row.reactions.as_deref(),
    )?;
    let kind = match row.group_id {
        Some(group_id) => ConversationKind::Group {
            group_id,
            name: required(row.group_name, "group name")?,
            role: required(row.role, "role")?,
            last_message: match row.last_key {
                0 => None,
                id => Some(GroupMessage {
                    id,
                    group_id,
                    sender: required(row.sender, "sender")?,
                    content: required(row.content, "content")?,
                    message_type: required(row.message_type, "message_type")?,
                    content_type: required(row.content_type, "content_type")?,
                    timestamp,
                    lifecycle,
                }),
            },
        },
        None => {
            let status = required(row.status, "status")?;
            let status = DeliveryStatus::parse(&status).ok_or_else(|| {
                ChatError::internal_msg(format_args!(
                    "message {} has status {status:?}",
                    row.last_key
                ))
            })?;
            ConversationKind::Private {
                peer: required(row.peer, "peer")?,
                last_message: PrivateMessage {
                    id: row.last_key,
                    sender: required(row.sender, "sender")?,
                    recipient: required(row.recipient, "recipient")?,
                    content: required(row.content, "content")?,
                    message_type: required(row.message_type, "message_type")?,
                    content_type: required(row.content_type, "content_type")?,
                    timestamp,
                    status,
                    lifecycle,
                },
            }
        }
    };
    Ok(ConversationSummary {
        position,
        unread: row.unread,
        kind,
    })
}

/// A directory of its own for one test's SQLite database (not created yet),
/// and the database's URL.
#[cfg(test)]
pub(crate) fn fresh_test_database(test: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "parley-{test}-{}-{}",
        std::process::id(),
        Timestamp::now().0
    ));
    let url = format!("sqlite://{}", dir.join("parley.db").display());
    (dir, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sqlite = Queries<sqlx::Sqlite>;

    /// A new SQLite store in a directory of its own: the directory, the
    /// database's URL and the store.
    async fn fresh_store(test: &str) -> (std::path::PathBuf, String, Store) {
        let (dir, url) = fresh_test_database(test);
        let store = Store::connect(&url, Durability::Full)
            .await
            .expect("create the database");
        (dir, url, store)
    }

    fn sqlite_pool(pool: &Pool) -> &SqlitePool {
        let Pool::Sqlite(pool) = pool else {
            panic!("a SQLite store");
        };
        pool
    }

    #[actix::test]
    async fn a_chunk_holding_resends_reports_only_the_rows_it_stored() {
        let (dir, _, store) = fresh_store("store-resends").await;
        let mut conn = sqlite_pool(&store.write)
            .acquire()
            .await
            .expect("the writer");
        let now = Timestamp::now();
        let alice = Sqlite::insert_user(&mut conn, "alice", "a@example.com", "hash", now)
            .await
            .expect("alice");
        let bob = Sqlite::insert_user(&mut conn, "bob", "b@example.com", "hash", now)
            .await
            .expect("bob");
        let conversation = Sqlite::conversation_id(&mut conn, alice.id, bob.id, now)
            .await
            .expect("their conversation");
        let row = |id: i64, client_id: &'static str| MessageRow {
            id,
            sender_id: alice.id,
            conversation_id: Some(conversation),
            recipient_id: Some(bob.id),
            group_id: None,
            content: "hi",
            message_type: "text",
            content_type: "text/plain",
            created_at: now,
            status: Some("sent"),
            client_id: Some(client_id),
            reply_to: None,
        };

        let first = [row(1, "a"), row(2, "b"), row(3, "c")];
        let stored = Sqlite::insert_messages(&mut conn, &first)
            .await
            .expect("store the first three");
        assert_eq!(stored, [1, 2, 3]);
        // One chunk of four whose second and fourth rows resend "b" and "a".
        let second = [row(4, "d"), row(5, "b"), row(6, "e"), row(7, "a")];
        let stored = Sqlite::insert_messages(&mut conn, &second)
            .await
            .expect("store the new ones");
        assert_eq!(stored, [4, 6], "the resends are not stored again");

        drop(conn);
        store.close().await;
        std::fs::remove_dir_all(dir).expect("remove the test directory");
    }

    #[actix::test]
    async fn closing_the_store_empties_the_wal_into_the_database() {
        let (dir, url, store) = fresh_store("store-close").await;
        assert!(
            dir.join("parley.db-wal").exists(),
            "the database is in WAL mode"
        );

        sqlx::query("CREATE TABLE written_before_close (note TEXT)")
            .execute(sqlite_pool(&store.write))
            .await
            .expect("write something into the WAL");
        let wal = dir.join("parley.db-wal");
        assert!(wal.metadata().expect("a WAL file").len() > 0);

        store.close().await;
        // SQLite removes the emptied file when its last connection closes,
        // unless a connection was still closing; either way nothing is in it.
        let left = wal.metadata().map(|meta| meta.len()).unwrap_or(0);
        assert_eq!(left, 0, "closing copied the WAL back and emptied it");
        let reopened = Store::connect(&url, Durability::Full)
            .await
            .expect("reopen the database");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE name = 'written_before_close'",
        )
        .fetch_one(sqlite_pool(&reopened.read))
        .await
        .expect("read the schema");
        assert_eq!(
            tables, 1,
            "what was written before closing is in the database"
        );
        reopened.close().await;
        std::fs::remove_dir_all(dir).expect("remove the test directory");
    }
}
