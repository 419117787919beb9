//! Settings, from command-line flags or `PARLEY_*` environment variables
//! (DESIGN.md section 5). `main` parses them; tests build them with
//! [`Config::for_data_dir`], which ignores the environment.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use parley_actors::cluster::EngineUrl;
use parley_actors::limits::Rate;
use parley_actors::store::Durability;
use parley_actors::ChatSettings;

#[derive(Debug, Clone, Parser)]
#[command(name = "parley", version, about = "A real-time chat server")]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "PARLEY_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// `sqlite://path/to/file.db` or `postgres://user@host/db`. Default: SQLite in the data dir.
    #[arg(long, env = "PARLEY_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Where uploaded files, the generated JWT secret and the default SQLite database live.
    #[arg(long, env = "PARLEY_DATA_DIR", default_value = "parley-data")]
    pub data_dir: PathBuf,

    /// Secret for signing tokens (HS256). Without it one is generated once and kept in the data dir.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// How long an access token is valid: seconds, or with a unit (`90s`, `15m`, `24h`, `7d`).
    #[arg(long, env = "PARLEY_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Largest accepted upload, in bytes.
    #[arg(long, env = "PARLEY_MAX_UPLOAD_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    /// Longest message content, in characters.
    #[arg(long, env = "PARLEY_MAX_CONTENT_CHARS", default_value_t = 8192)]
    pub max_content_chars: usize,

    /// Log filter: a level (`info`, `debug`) or per-module directives (`parley=debug,sqlx=warn`).
    #[arg(long, env = "PARLEY_LOG", default_value = "info")]
    pub log: String,

    /// `pretty` for people, `json` for machines.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// SQLite only: `full` fsyncs every commit before acknowledging it (an ack
    /// survives a power cut); `normal` fsyncs only at checkpoints (an ack
    /// survives the server crashing, not the machine).
    #[arg(long, env = "PARLEY_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,

    /// Frames that may wait for one socket; a socket whose client lets more
    /// pile up is closed with 1008 (the client reconnects and syncs).
    #[arg(long, env = "PARLEY_SOCKET_QUEUE", default_value_t = parley_actors::DEFAULT_SOCKET_QUEUE)]
    pub socket_queue: usize,

    /// `on` or `off`: rate limits on message sends (per user) and on logins
    /// and registrations (per client address). Turn off for load tests and
    /// test suites that register many users from one address.
    #[arg(long, env = "PARLEY_RATE_LIMITS", value_enum, default_value_t = Switch::On)]
    pub rate_limits: Switch,

    /// Messages a user may send per second (REST and socket together).
    #[arg(long, env = "PARLEY_MESSAGE_RATE", default_value_t = 20.0)]
    pub message_rate: f64,

    /// Messages a user may send in a burst after a quiet spell.
    #[arg(long, env = "PARLEY_MESSAGE_BURST", default_value_t = 50.0)]
    pub message_burst: f64,

    /// Logins plus registrations per minute from one client address (also the burst).
    #[arg(long, env = "PARLEY_AUTH_RATE", default_value_t = 10.0)]
    pub auth_rate: f64,

    /// Password hashes (logins, registrations, password checks) that may
    /// wait or run at once; beyond it they are refused at once with 503 and
    /// Retry-After. Default: about one second of hashing work, from one hash
    /// timed at start.
    #[arg(long, env = "PARLEY_HASH_QUEUE")]
    pub hash_queue: Option<NonZeroUsize>,

    /// `on` or `off`: while the rest of the server keeps its CPU busy,
    /// admit password hashes only at the rate the CPU it leaves over (beyond
    /// a quarter of its cores, kept for sockets) can hash, and at least one
    /// a second; the rest get 503 and Retry-After. Off for test suites,
    /// whose clients share the server's process and its CPU clock.
    #[arg(long, env = "PARLEY_HASH_SPARE_CPU", value_enum, default_value_t = Switch::On)]
    pub hash_spare_cpu: Switch,

    /// HTTP worker threads. Default: one per CPU core.
    #[arg(long, env = "PARLEY_WORKERS")]
    pub workers: Option<usize>,

    /// How often the server pings each WebSocket.
    #[arg(long, env = "PARLEY_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A WebSocket silent (no frame, ping or pong) for this long is closed.
    #[arg(long, env = "PARLEY_CLIENT_TIMEOUT", default_value = "45s", value_parser = parse_duration)]
    pub client_timeout: Duration,

    /// A group's room (its member set and fan-out in memory) with no
    /// activity for this long stops; the next use starts it again.
    #[arg(long, env = "PARLEY_ROOM_IDLE", default_value = "5m", value_parser = parse_duration)]
    pub room_idle: Duration,

    /// Memory for the newest messages of active conversations and groups,
    /// in MiB: history pages within them are answered without the
    /// database. 0 turns the cache off (it is always off in a cluster).
    #[arg(
        long,
        env = "PARLEY_HISTORY_CACHE_MB",
        default_value_t = (parley_actors::history::DEFAULT_BUDGET_BYTES / (1024 * 1024)) as f64
    )]
    pub history_cache_mb: f64,

    /// Run as one node of a cluster: the pub/sub engine every node shares
    /// (`redis://HOST:PORT` or `nats://HOST:PORT`). Needs a Postgres
    /// database, the same for every node. Unset: a single node.
    #[arg(long, env = "PARLEY_CLUSTER", value_parser = EngineUrl::parse)]
    pub cluster: Option<EngineUrl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Largest JSON request body, in bytes (message content is at most 8192
/// characters of up to 4 bytes, plus the other fields).
pub const MAX_JSON_BODY: usize = 64 * 1024;

impl Config {
    /// The documented defaults, ignoring the environment, with everything
    /// kept under `data_dir`.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let command = Config::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["parley"]);
        let mut config =
            Config::from_arg_matches(&matches).expect("the defaults are valid settings");
        config.data_dir = data_dir.into();
        config
    }

    /// The database URL in effect: the configured one, or SQLite in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("parley.db").display()),
        }
    }

    pub fn chat_settings(&self) -> ChatSettings {
        ChatSettings {
            max_content_chars: self.max_content_chars,
            heartbeat_interval: self.heartbeat_interval,
            client_timeout: self.client_timeout,
            socket_queue: self.socket_queue,
            room_idle: self.room_idle,
            durability: match self.sqlite_sync {
                SqliteSync::Full => Durability::Full,
                SqliteSync::Normal => Durability::Normal,
            },
            message_rate: (self.rate_limits == Switch::On)
                .then(|| Rate::per_second(self.message_rate, self.message_burst)),
            cluster: self.cluster.clone(),
            // Negative or NaN is 0 (off); `as` saturates.
            history_cache_bytes: (self.history_cache_mb * 1024.0 * 1024.0) as usize,
            ..ChatSettings::default()
        }
    }

    /// Logins and registrations per client address, when limited.
    pub fn auth_rate(&self) -> Option<Rate> {
        (self.rate_limits == Switch::On).then(|| Rate::per_minute(self.auth_rate, self.auth_rate))
    }
}

/// Parses `90`, `90s`, `500ms`, `15m`, `24h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let seconds = |factor: u64| Duration::from_secs(number.saturating_mul(factor));
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86400)),
        _ => Err(format!(
            "{text:?}: unknown unit {unit:?}; use ms, s, m, h or d"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::for_data_dir("/tmp/parley-test");
        assert_eq!(config.bind, "127.0.0.1:8080");
        assert_eq!(config.token_ttl, Duration::from_secs(86400));
        assert_eq!(config.max_upload_bytes, 25 * 1024 * 1024);
        assert_eq!(
            config.effective_database_url(),
            "sqlite:///tmp/parley-test/parley.db"
        );
    }
}
