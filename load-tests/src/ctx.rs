//! What every scenario needs: the target, an HTTP client, the options shared
//! by all subcommands, this run's id, progress bars and log lines.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use crate::net::Target;

pub struct Ctx {
    /// The first node: where the REST calls that need one place go.
    pub target: Target,
    /// Every node (`--url a,b,…`); socket `n` goes to `targets[n % len]`.
    pub targets: Vec<Target>,
    /// Round-robin counter for REST calls spread over the nodes.
    pub rest_turn: AtomicUsize,
    pub http: reqwest::Client,
    pub quiet: bool,
    pub json: bool,
    /// The server processes (one per node) whose CPU and memory are summed.
    pub server_pids: Vec<u32>,
    /// The `username → token` cache.
    pub accounts_path: PathBuf,
    /// What `seed` wrote for `history`, and reusable groups.
    pub state_path: PathBuf,
    /// Unique to this run; in every `client_id` and message content, so
    /// resends are never mistaken for earlier runs' messages (the server
    /// keeps `client_id`s forever) and frames of other runs are told apart.
    pub run_id: String,
    /// Registrations and logins in flight at once while preparing accounts.
    pub auth_concurrency: usize,
    /// Socket handshakes in flight at once.
    pub connect_concurrency: usize,
    /// How long to wait for stragglers after the send phase.
    pub drain_timeout: Duration,
    /// Prefix of the load users' names.
    pub user_prefix: String,
    /// `--threads`, passed on to child processes.
    pub threads: Option<usize>,
}

impl Ctx {
    /// How many nodes the run spreads over.
    pub fn nodes(&self) -> usize {
        self.targets.len()
    }

    /// The node socket number `n` connects to (round-robin).
    pub fn target_for(&self, n: usize) -> &Target {
        &self.targets[n % self.targets.len()]
    }

    /// A node for the next REST call (round-robin; always the first with one node).
    pub fn rest_base(&self) -> &str {
        let turn = self.rest_turn.fetch_add(1, Relaxed);
        &self.target_for(turn).http_base
    }

    /// The name of load user number `n` (shared by the scenarios, so accounts
    /// made for one are reused by the next).
    pub fn user(&self, n: usize) -> String {
        format!("{}{n:05}", self.user_prefix)
    }

    pub fn users(&self, range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| self.user(n)).collect()
    }

    fn bars_visible(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// A progress bar counting to `len` (hidden when quiet or not a TTY).
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.bars_visible() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A progress line for a phase measured in seconds.
    pub fn timer_bar(&self, secs: u64, what: &str) -> ProgressBar {
        if !self.bars_visible() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(secs.max(1));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{elapsed_precise}] {wide_bar} {msg}")
                .expect("valid template"),
        );
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A line for people on stderr (not with `--quiet`).
    pub fn log(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("parley-load: {}", line.as_ref());
        }
    }
}

/// A run id: 8 hex digits from the clock and the process id.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:08x}", (mixed >> 32) as u32)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Where the caches live by default: `target/parley-load/` of this workspace
/// (or of `CARGO_TARGET_DIR`), else `./target/parley-load/`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("parley-load");
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if workspace.join("Cargo.toml").exists() {
        return workspace.join("target").join("parley-load");
    }
    PathBuf::from("target").join("parley-load")
}
