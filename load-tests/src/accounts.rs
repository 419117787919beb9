//! Load users and their tokens. Argon2 makes every register and login cost
//! the server 10–20 ms of CPU, so tokens are kept in a cache file
//! (`username → token`) and reused by later runs; a stale cache (another
//! server, a fresh database) is noticed with one probe and rebuilt, and a
//! token refused at the WebSocket handshake is renewed by logging in again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::{stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::api::{self, Registered};
use crate::ctx::{unix_now, Ctx};
use crate::net::{self, ConnectError, Ws};
use crate::Failure;

/// Tokens older than this are renewed before use (they live 24 h by default).
const TOKEN_MAX_AGE_SECS: u64 = 23 * 3600;

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    token: String,
    /// When the token was issued (Unix seconds).
    obtained: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    /// The server these tokens belong to (`host:port`), for people reading the file.
    #[serde(default)]
    server: String,
    #[serde(default)]
    accounts: HashMap<String, Entry>,
}

pub struct Accounts {
    path: PathBuf,
    server: String,
    entries: Mutex<HashMap<String, Entry>>,
    /// Names whose entry changed since loading (merged into the file on save).
    changed: Mutex<Vec<String>>,
    /// The users exist already (made outside this tool): log in without
    /// trying to register first.
    pub users_exist: bool,
}

/// Reads a JSON file, or the default value if it is missing or unreadable.
pub fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Writes a JSON file atomically (temporary file, then rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Accounts {
    pub fn load(ctx: &Ctx) -> Accounts {
        let file: CacheFile = read_json(&ctx.accounts_path);
        Accounts {
            path: ctx.accounts_path.clone(),
            server: ctx
                .targets
                .iter()
                .map(|t| t.addr.to_string())
                .collect::<Vec<_>>()
                .join(","),
            entries: Mutex::new(file.accounts),
            changed: Mutex::new(Vec::new()),
            users_exist: false,
        }
    }

    fn cached(&self, name: &str) -> Option<Entry> {
        let entries = self.entries.lock().expect("accounts lock");
        entries
            .get(name)
            .filter(|e| unix_now().saturating_sub(e.obtained) < TOKEN_MAX_AGE_SECS)
            .cloned()
    }

    fn remember(&self, name: &str, token: String) {
        self.entries.lock().expect("accounts lock").insert(
            name.to_owned(),
            Entry {
                token,
                obtained: unix_now(),
            },
        );
        self.changed
            .lock()
            .expect("accounts lock")
            .push(name.to_owned());
    }

    /// Makes sure every name is a user with a working token; returns the
    /// tokens in the order of `names`. Registers and logs in
    /// `ctx.auth_concurrency` at a time, with a progress bar.
    pub async fn ensure(&self, ctx: &Ctx, names: &[String]) -> Result<Vec<String>, Failure> {
        let mut stale_cache = false;
        if let Some(probe) = names.iter().find_map(|n| self.cached(n)) {
            if !api::token_works(&ctx.http, &ctx.target.http_base, &probe.token).await? {
                ctx.log("cached tokens are not accepted by this server; renewing them");
                stale_cache = true;
            }
        }
        // (name, was it in the cache) for each name that needs a token.
        let todo: Vec<(String, bool)> = names
            .iter()
            .filter_map(|name| match self.cached(name) {
                Some(_) if !stale_cache => None,
                cached => Some((
                    name.clone(),
                    cached.is_some()
                        || self
                            .entries
                            .lock()
                            .expect("accounts lock")
                            .contains_key(name),
                )),
            })
            .collect();
        if !todo.is_empty() {
            ctx.log(format!(
                "preparing {} of {} accounts (register/login, {} at a time)",
                todo.len(),
                names.len(),
                ctx.auth_concurrency
            ));
            let bar = ctx.bar(todo.len() as u64, "accounts");
            let mut results = stream::iter(todo)
                .map(|(name, known)| async move {
                    let token = obtain(ctx, &name, known || self.users_exist).await?;
                    self.remember(&name, token);
                    Ok::<(), Failure>(())
                })
                .buffer_unordered(ctx.auth_concurrency.max(1));
            let mut first_error = None;
            let mut done = 0u64;
            while let Some(result) = results.next().await {
                bar.inc(1);
                done += 1;
                if let Err(error) = result {
                    first_error.get_or_insert(error);
                }
                // Save as we go: an interrupted run keeps what it paid for.
                if done % 500 == 0 {
                    self.save()?;
                }
            }
            bar.finish_and_clear();
            self.save()?;
            if let Some(error) = first_error {
                return Err(error);
            }
        }
        let entries = self.entries.lock().expect("accounts lock");
        Ok(names
            .iter()
            .map(|name| {
                entries
                    .get(name)
                    .map(|e| e.token.clone())
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Logs `name` in again (its token was refused) and returns the new token.
    pub async fn renew(&self, ctx: &Ctx, name: &str) -> Result<String, Failure> {
        let token = obtain(ctx, name, true).await?;
        self.remember(name, token.clone());
        Ok(token)
    }

    /// Merges the entries changed by this process into the cache file.
    pub fn save(&self) -> Result<(), Failure> {
        let changed: Vec<String> =
            std::mem::take(&mut *self.changed.lock().expect("accounts lock"));
        if changed.is_empty() {
            return Ok(());
        }
        let mut file: CacheFile = read_json(&self.path);
        file.server = self.server.clone();
        let entries = self.entries.lock().expect("accounts lock");
        for name in changed {
            if let Some(entry) = entries.get(&name) {
                file.accounts.insert(name, entry.clone());
            }
        }
        write_json(&self.path, &file)
    }

    /// Opens a socket for `name` (source address number `n`, on node
    /// `n % nodes`); if the token
    /// is refused, logs in again and retries once. Returns the socket and
    /// whether the token had to be renewed.
    pub async fn connect(
        &self,
        ctx: &Ctx,
        n: usize,
        name: &str,
        token: &str,
    ) -> Result<(Ws, bool), Failure> {
        let target = ctx.target_for(n);
        match net::open_socket(target, n, token).await {
            Ok(ws) => Ok((ws, false)),
            Err(ConnectError::Unauthorized) => {
                let token = self.renew(ctx, name).await?;
                let ws = net::open_socket(target, n, &token)
                    .await
                    .map_err(|e| format!("socket for {name}: {e}"))?;
                Ok((ws, true))
            }
            Err(e) => Err(format!("socket for {name}: {e}").into()),
        }
    }
}

/// Gets a token for `name`: log in first if the user probably exists
/// (`known`), register first otherwise; fall back to the other order.
async fn obtain(ctx: &Ctx, name: &str, known: bool) -> Result<String, Failure> {
    let (http, base) = (&ctx.http, ctx.rest_base());
    if known {
        if let Some(token) = api::login(http, base, name).await? {
            return Ok(token);
        }
        api::register(http, base, name).await?;
    } else if let Registered::Taken = api::register(http, base, name).await? {
        // Made by an earlier run whose cache we don't have: log in.
    }
    api::login(http, base, name).await?.ok_or_else(|| {
        format!(
            "login {name}: refused after registering (a user of that name with another password?)"
        )
        .into()
    })
}
