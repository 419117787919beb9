//! The one error type of Parley's domain. Actors return it; the HTTP layer and
//! the WebSocket session turn it into the contract's error body, both through
//! [`ChatError::status`], the single place where an error gets its code.

use std::fmt;
use std::time::Duration;

/// Why a request failed, in terms a client can act on.
///
/// Client-caused variants carry a human-readable detail that names the
/// offending field or resource. Server faults keep their cause for the log and
/// show clients only a generic detail.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The input is malformed or out of range (400).
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials that do not prove who the caller is (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist, or its existence is hidden from the caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not for this method (405); holds the `Allow` header value.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The request clashes with existing state: a taken name, a duplicate member (409).
    #[error("{0}")]
    Conflict(String),
    /// A body, file or frame above its limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A rate limit was hit (429); retrying after `retry_after` will work.
    #[error("too many requests; retry in {} s", retry_secs(*retry_after))]
    TooManyRequests { retry_after: Duration },
    /// A dependency (the database) is unreachable right now; retrying later may work (503).
    #[error("service temporarily unavailable")]
    Unavailable(#[source] BoxedCause),
    /// The server sheds load (503): it refused at once work it could not
    /// start soon, such as a password hash with the hashing queue full.
    /// Retrying after `retry_after` may work. Nothing failed, so there is no
    /// cause to log; `task` completes "the server is too busy to …".
    #[error("the server is too busy to {task}; retry in {} s", retry_secs(*retry_after))]
    Overloaded {
        task: &'static str,
        retry_after: Duration,
    },
    /// A fault inside the server (500). The cause is logged, never shown.
    #[error("internal server error")]
    Internal(#[source] BoxedCause),
}

/// A retry delay as `Retry-After` states it: whole seconds, rounded up, at least 1.
pub fn retry_secs(delay: Duration) -> u64 {
    delay.as_secs_f64().ceil().max(1.0) as u64
}

/// The hidden cause of a server-side failure.
pub type BoxedCause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl ChatError {
    /// The HTTP status (also used as `code` in WebSocket `error` frames).
    pub fn status(&self) -> u16 {
        match self {
            ChatError::Invalid(_) => 400,
            ChatError::Unauthenticated(_) => 401,
            ChatError::Forbidden(_) => 403,
            ChatError::NotFound(_) => 404,
            ChatError::MethodNotAllowed(_) => 405,
            ChatError::Conflict(_) => 409,
            ChatError::TooLarge(_) => 413,
            ChatError::TooManyRequests { .. } => 429,
            ChatError::Internal(_) => 500,
            ChatError::Unavailable(_) | ChatError::Overloaded { .. } => 503,
        }
    }

    /// Whether this is the server's fault (logged with its cause, detail
    /// kept generic). Shedding load is a decision, not a fault.
    pub fn is_server_fault(&self) -> bool {
        self.status() >= 500 && !matches!(self, ChatError::Overloaded { .. })
    }

    /// When a retry may work, for a `Retry-After` header: set for 429 and
    /// for a 503 from shedding load.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ChatError::TooManyRequests { retry_after }
            | ChatError::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the failure is the database being out of reach (503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ChatError::Unavailable(_))
    }

    /// Classifies a database error without consuming it.
    pub fn from_ref(error: &sqlx::Error) -> ChatError {
        if is_connection_error(error) {
            ChatError::Unavailable(error.to_string().into())
        } else {
            ChatError::internal_msg(error)
        }
    }

    /// Wraps any error as an internal fault.
    pub fn internal(cause: impl Into<BoxedCause>) -> Self {
        ChatError::Internal(cause.into())
    }

    /// An internal fault described by a message (for broken invariants such as a dead actor).
    pub fn internal_msg(message: impl fmt::Display) -> Self {
        ChatError::Internal(message.to_string().into())
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        ChatError::Invalid(detail.into())
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ChatError::NotFound(detail.into())
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ChatError::Forbidden(detail.into())
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        ChatError::Conflict(detail.into())
    }
}

impl From<sqlx::Error> for ChatError {
    /// Unique violations become 409 naming the field (found from the constraint
    /// name on Postgres, from the message on SQLite, which names the index);
    /// a lost or exhausted connection becomes 503; the rest are 500.
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let constraint = db.constraint().unwrap_or_else(|| db.message());
                let taken = ["username", "email", "device_id"]
                    .into_iter()
                    .find(|field| constraint.contains(field));
                match taken {
                    Some(field) => ChatError::Conflict(format!("{field}: already taken")),
                    None => ChatError::Internal(err.into()),
                }
            }
            _ if is_connection_error(&err) => ChatError::Unavailable(err.into()),
            _ => ChatError::Internal(err.into()),
        }
    }
}

/// Errors that mean the database cannot be reached right now.
fn is_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
        // Postgres: the server is shutting down or refuses connections.
        code.starts_with("57P") || code.starts_with("08")
    }))
}

impl From<actix::MailboxError> for ChatError {
    fn from(err: actix::MailboxError) -> Self {
        ChatError::internal_msg(format_args!("actor mailbox: {err}"))
    }
}

pub type ChatResult<T> = Result<T, ChatError>;

/// Sends a request to an actor and flattens the mailbox error into the reply.
pub async fn ask<A, M, T>(actor: &actix::Addr<A>, msg: M) -> ChatResult<T>
where
    A: actix::Actor + actix::Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: actix::Message<Result = ChatResult<T>> + Send + 'static,
    T: Send + 'static,
{
    actor.send(msg).await?
}
