//! The test harness: starts a real Parley server per test on `127.0.0.1:0`
//! with its own data directory and its own database (a temp SQLite file, or a
//! fresh Postgres database when `PARLEY_TEST_POSTGRES_URL` is set), and gives
//! one helper per endpoint plus the assertions the modules share.
//!
//! Tests are written once with [`api_test!`] and run against both backends.
//! The helpers are split by concern: `http` (one per endpoint), `assertions`
//! (responses and JSON fields) and `ws` (sockets and frames); everything is
//! re-exported here, so a test module needs only `use crate::helpers::*`.
//!
//! Postgres databases are named `parley_test_<uuid>` and dropped (`WITH
//! (FORCE)`) when the [`TestApp`] is dropped. If a run is killed before that,
//! leftovers can be removed by hand:
//!
//! ```sql
//! SELECT format('DROP DATABASE %I WITH (FORCE);', datname)
//!   FROM pg_database WHERE datname LIKE 'parley\_test\_%' \gexec
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use parley::config::Config;
use parley::startup::Application;
use sqlx::{Connection, Executor, PgConnection};

mod assertions;
mod http;
mod ws;

pub use assertions::*;
pub use http::raw_authorization;
pub use ws::*;

/// Writes a test once and runs it against SQLite (always) and Postgres (when
/// `PARLEY_TEST_POSTGRES_URL` is set):
///
/// ```ignore
/// api_test!(registering_returns_the_new_user, |app| async move { ... });
/// api_test!(an_upload_over_the_limit_is_413,
///     config(|c| c.max_upload_bytes = 1024),
///     |app| async move { ... });
/// ```
///
/// expands to `mod registering_returns_the_new_user { fn sqlite(); fn postgres(); }`.
macro_rules! api_test {
    ($name:ident, |$app:ident| $body:expr) => {
        api_test!($name, config(|_: &mut parley::config::Config| {}), |$app| {
            $body
        });
    };
    ($name:ident, config($configure:expr), |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let $app = $crate::helpers::spawn_app_with(
                    $crate::helpers::Backend::Sqlite,
                    module_path!(),
                    $configure,
                )
                .await
                .expect("the SQLite variant always runs");
                $body.await;
            }

            #[actix_web::test]
            async fn postgres() {
                let Some($app) = $crate::helpers::spawn_app_with(
                    $crate::helpers::Backend::Postgres,
                    module_path!(),
                    $configure,
                )
                .await
                else {
                    return;
                };
                $body.await;
            }
        }
    };
}

/// The environment variable naming the Postgres admin URL for the Postgres variants.
pub const POSTGRES_URL_VAR: &str = "PARLEY_TEST_POSTGRES_URL";

/// How long any single wait (a WebSocket frame, a handshake) may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a socket must stay quiet to count as "got nothing".
pub const QUIET: Duration = Duration::from_millis(500);

/// Message text that JSON and SQL must carry unchanged: quotes, backslashes,
/// control characters, non-ASCII, a line separator, markup, edge spaces,
/// and text that looks like JSON.
pub const AWKWARD_CONTENT: &str = "h\u{e9}llo \"quoted\" \\ back\nnew line\ttab \u{1}\u{1f}\u{7f} \
     \u{1F600} \u{2028} <b>&amp;</b> [1, {\"a\": null}]  ";

/// Which database a test's server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server and everything a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// `ws://127.0.0.1:PORT`
    pub ws_address: String,
    /// The port the server reported; the addresses above already use it.
    #[allow(dead_code)]
    pub port: u16,
    /// A client without proxies; it does not follow redirects.
    pub client: reqwest::Client,
    pub backend: Backend,
    /// The server's data directory (files, SQLite database).
    pub data_dir: PathBuf,
    /// `None` when the caller keeps the data dir (a server in a child process).
    _data_dir: Option<tempfile::TempDir>,
    /// Dropped after the data dir; drops the Postgres database.
    _database: Option<PostgresDatabase>,
    /// The chat core of a server started in this process (see [`start_node`]).
    pub chat: Option<parley_actors::Chat>,
}

/// A registered, logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// The admin URL for Postgres variants, or `None` after printing why the
/// variant is skipped.
pub fn postgres_admin_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // Written to the real stderr (not the captured one) so that the
            // skip shows up in `cargo test` output.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {POSTGRES_URL_VAR} is not set; Postgres variant of {test} not run"
            );
            None
        }
    }
}

/// Starts a server with default test settings on SQLite.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, "spawn_app", |_: &mut Config| {})
        .await
        .expect("SQLite always runs")
}

/// Starts a server on `backend`, letting the test adjust the config first.
/// Returns `None` (after saying so) for Postgres when it is not configured.
pub async fn spawn_app_with<F>(backend: Backend, test: &str, configure: F) -> Option<TestApp>
where
    F: FnOnce(&mut Config),
{
    let data_dir = tempfile::tempdir().expect("create a temp data dir");
    let mut config = Config::for_data_dir(data_dir.path());
    config.bind = "127.0.0.1:0".to_string();
    config.jwt_secret = Some(format!("test-secret-{}", uuid::Uuid::new_v4().simple()));
    // Tests register many users from one address and send in bursts; the
    // rate-limit tests turn the limits back on through `configure`.
    config.rate_limits = parley::config::Switch::Off;
    // The test process is the clients as well as the servers, so its CPU
    // clock says nothing about what a server's sockets leave to hashing.
    config.hash_spare_cpu = parley::config::Switch::Off;

    let database = match backend {
        Backend::Sqlite => {
            // The documented default: SQLite inside the (fresh) data dir.
            config.database_url = None;
            None
        }
        Backend::Postgres => {
            let admin_url = postgres_admin_url(test)?;
            let (database, url) = PostgresDatabase::create(&admin_url).await;
            config.database_url = Some(url);
            Some(database)
        }
    };
    configure(&mut config);

    let mut app = start_node(config, backend).await;
    app._data_dir = Some(data_dir);
    app._database = database;
    Some(app)
}

/// Starts a server in this process with exactly `config`; the caller keeps
/// its data dir and database alive (several nodes of a cluster share them).
pub async fn start_node(config: Config, backend: Backend) -> TestApp {
    let data_dir = config.data_dir.clone();
    let application = Application::build(config)
        .await
        .expect("the application builds");
    let port = application.port();
    let chat = application.chat();
    actix_web::rt::spawn(application.run_until_stopped());
    TestApp {
        chat: Some(chat),
        ..TestApp::for_port(port, backend, &data_dir)
    }
}

impl TestApp {
    /// The URL of the server's database (SQLite file or Postgres database).
    pub fn database_url(&self) -> String {
        match &self._database {
            Some(database) => with_database(&database.admin_url, &database.name),
            None => format!("sqlite://{}", self.data_dir.join("parley.db").display()),
        }
    }

    /// A client for a server the test started some other way (a child
    /// process) listening on `127.0.0.1:port`. The caller keeps the server's
    /// data dir and database alive; this only talks to it.
    pub fn for_port(port: u16, backend: Backend, data_dir: &std::path::Path) -> TestApp {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build a reqwest client");
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            ws_address: format!("ws://127.0.0.1:{port}"),
            port,
            client,
            backend,
            data_dir: data_dir.to_path_buf(),
            _data_dir: None,
            _database: None,
            chat: None,
        }
    }
}

/// A fresh Postgres database, dropped on drop.
pub(crate) struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    /// Creates `parley_test_<uuid>` and returns it with the URL pointing at it.
    pub(crate) async fn create(admin_url: &str) -> (PostgresDatabase, String) {
        let name = format!("parley_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {POSTGRES_URL_VAR}={admin_url}: {e}"));
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(admin_url, &name);
        (
            PostgresDatabase {
                admin_url: admin_url.to_string(),
                name,
            },
            url,
        )
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Our own runtime on our own thread: the test's runtime may be busy
        // or shutting down, and Drop cannot await.
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok(())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "warning: could not drop test database {}: {e} (see tests/api/helpers.rs for cleanup)",
                self.name
            ),
            Err(_) => eprintln!(
                "warning: dropping test database {} panicked (see tests/api/helpers.rs for cleanup)",
                self.name
            ),
        }
    }
}

/// `postgres://u@h:5432/postgres?x=y` with the path replaced by `/name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{name}?{query}"),
        None => format!("{root}/{name}"),
    }
}
