//! The test harness: starts a real Parley server per test on `127.0.0.1:0`
//! with its own data directory and its own database (a temp SQLite file, or a
//! fresh Postgres database when `PARLEY_TEST_POSTGRES_URL` is set), and gives
//! one helper per endpoint plus the assertions the modules share.
//!
//! Tests are written once with [`api_test!`] and run against both backends.
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

use futures_util::{SinkExt, StreamExt};
use parley::config::Config;
use parley::startup::Application;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::multipart::{Form, Part};
use reqwest::Response;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

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

// ---------------------------------------------------------------------------
// Endpoint helpers. `token` is the bearer token; "" sends no Authorization.
// ---------------------------------------------------------------------------

fn authorized(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    if token.is_empty() {
        request
    } else {
        request.bearer_auth(token)
    }
}

impl TestApp {
    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        request
            .send()
            .await
            .expect("the request reaches the server")
    }

    /// POST `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(authorized(self.client.post(self.url(path)), token).json(body))
            .await
    }

    /// POST a raw body (no Content-Type unless given) to `path`.
    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = authorized(self.client.post(self.url(path)), token).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.send(authorized(self.client.get(self.url(path)), token))
            .await
    }

    /// POST /auth/register
    pub async fn register(&self, body: &Value) -> Response {
        self.post_json("/auth/register", "", body).await
    }

    /// POST /auth/login
    pub async fn login(&self, body: &Value) -> Response {
        self.post_json("/auth/login", "", body).await
    }

    /// POST /messages/private
    pub async fn send_private(&self, token: &str, body: &Value) -> Response {
        self.post_json("/messages/private", token, body).await
    }

    /// GET /messages/private/{username}?{query}
    pub async fn private_history(&self, token: &str, username: &str, query: &str) -> Response {
        self.get(
            &with_query(&format!("/messages/private/{username}"), query),
            token,
        )
        .await
    }

    /// POST /groups
    pub async fn create_group(&self, token: &str, body: &Value) -> Response {
        self.post_json("/groups", token, body).await
    }

    /// GET /groups/{group_id}/messages?{query}; `group_id` is a string so
    /// tests can pass non-integers.
    pub async fn group_messages(&self, token: &str, group_id: &str, query: &str) -> Response {
        self.get(
            &with_query(&format!("/groups/{group_id}/messages"), query),
            token,
        )
        .await
    }

    /// POST /devices
    pub async fn register_device(&self, token: &str, body: &Value) -> Response {
        self.post_json("/devices", token, body).await
    }

    /// GET /devices
    pub async fn list_devices(&self, token: &str) -> Response {
        self.get("/devices", token).await
    }

    /// DELETE /devices/{device_id}
    pub async fn delete_device(&self, token: &str, device_id: &str) -> Response {
        let url = self.url(&format!("/devices/{device_id}"));
        self.send(authorized(self.client.delete(url), token)).await
    }

    /// POST /files/upload with `bytes` as the multipart field `file`.
    pub async fn upload_file(&self, token: &str, filename: &str, bytes: Vec<u8>) -> Response {
        let part = Part::bytes(bytes)
            .file_name(filename.to_string())
            .mime_str("application/octet-stream")
            .expect("a valid mime type");
        self.upload_form(token, Form::new().part("file", part))
            .await
    }

    /// POST /files/upload with any multipart form.
    pub async fn upload_form(&self, token: &str, form: Form) -> Response {
        self.send(authorized(self.client.post(self.url("/files/upload")), token).multipart(form))
            .await
    }

    /// GET /files/{file_id}
    pub async fn download_file(&self, token: &str, file_id: &str) -> Response {
        self.get(&format!("/files/{file_id}"), token).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.send(authorized(self.client.delete(self.url(path)), token))
            .await
    }

    /// DELETE /auth/account, confirmed with `password`.
    pub async fn delete_account(&self, token: &str, password: &str) -> Response {
        self.send(
            authorized(self.client.delete(self.url("/auth/account")), token)
                .json(&json!({ "password": password })),
        )
        .await
    }

    /// PUT `body` as JSON to `path`.
    pub async fn put_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(authorized(self.client.put(self.url(path)), token).json(body))
            .await
    }

    /// PATCH `body` as JSON to `path`.
    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(authorized(self.client.patch(self.url(path)), token).json(body))
            .await
    }

    /// GET /groups (the caller's groups with role and unread count)
    pub async fn list_groups(&self, token: &str) -> Response {
        self.get("/groups", token).await
    }

    /// GET /conversations?{query} (the caller's conversations and groups)
    pub async fn list_conversations(&self, token: &str, query: &str) -> Response {
        self.get(&with_query("/conversations", query), token).await
    }

    /// POST /groups/{group_id}/messages; `group_id` is a string so tests can
    /// pass non-integers.
    pub async fn post_group_message(&self, token: &str, group_id: &str, body: &Value) -> Response {
        self.post_json(&format!("/groups/{group_id}/messages"), token, body)
            .await
    }

    /// GET /groups/{group_id}/members
    pub async fn group_members(&self, token: &str, group_id: &str) -> Response {
        self.get(&format!("/groups/{group_id}/members"), token)
            .await
    }

    /// POST /groups/{group_id}/members `{username}`
    pub async fn add_member(&self, token: &str, group_id: &str, username: &str) -> Response {
        self.post_json(
            &format!("/groups/{group_id}/members"),
            token,
            &json!({ "username": username }),
        )
        .await
    }

    /// DELETE /groups/{group_id}/members/{username}
    pub async fn remove_member(&self, token: &str, group_id: &str, username: &str) -> Response {
        self.delete(&format!("/groups/{group_id}/members/{username}"), token)
            .await
    }

    /// PATCH /groups/{group_id}/members/{username} with `body` (normally `{role}`).
    pub async fn change_member(
        &self,
        token: &str,
        group_id: &str,
        username: &str,
        body: &Value,
    ) -> Response {
        self.patch_json(
            &format!("/groups/{group_id}/members/{username}"),
            token,
            body,
        )
        .await
    }

    /// PATCH /groups/{group_id}/members/{username} `{role}`
    pub async fn change_role(
        &self,
        token: &str,
        group_id: &str,
        username: &str,
        role: &str,
    ) -> Response {
        self.change_member(token, group_id, username, &json!({ "role": role }))
            .await
    }

    /// POST /messages/{message_id}/read
    pub async fn mark_read(&self, token: &str, message_id: &str) -> Response {
        self.post_json(&format!("/messages/{message_id}/read"), token, &json!({}))
            .await
    }

    /// GET /search with `params` (URL-encoded here, so tests pass raw text).
    pub async fn search(&self, token: &str, params: &[(&str, &str)]) -> Response {
        self.send(authorized(self.client.get(self.url("/search")), token).query(params))
            .await
    }

    // -- composite helpers --------------------------------------------------

    /// Creates a group owned by `owner` with `members` added (as plain
    /// members, in order) and returns its id.
    pub async fn create_group_with(
        &self,
        owner: &TestUser,
        name: &str,
        members: &[&TestUser],
    ) -> i64 {
        let group = self.create_group_id(owner, name).await;
        for member in members {
            json_ok(
                self.add_member(&owner.token, &group.to_string(), &member.username)
                    .await,
            )
            .await;
        }
        group
    }

    /// Posts `content` to `group` over REST as `from` and returns the message.
    pub async fn send_group_text(&self, from: &TestUser, group: i64, content: &str) -> Value {
        json_ok(
            self.post_group_message(
                &from.token,
                &group.to_string(),
                &json!({"content": content}),
            )
            .await,
        )
        .await
    }

    /// The ids of `group`'s history for `query`.
    pub async fn group_history_ids(&self, token: &str, group: i64, query: &str) -> Vec<i64> {
        let body = json_ok(self.group_messages(token, &group.to_string(), query).await).await;
        array(&body, "group history")
            .iter()
            .map(|m| int_field(m, "id"))
            .collect()
    }

    /// The caller's entry for `group` in `GET /groups`, if listed.
    pub async fn my_group(&self, token: &str, group: i64) -> Option<Value> {
        let groups = json_ok(self.list_groups(token).await).await;
        array(&groups, "GET /groups")
            .iter()
            .find(|g| g["id"] == group)
            .cloned()
    }

    /// The caller's `unread` count for `group` (which must be listed).
    pub async fn unread(&self, token: &str, group: i64) -> i64 {
        let entry = self
            .my_group(token, group)
            .await
            .unwrap_or_else(|| panic!("group {group} should be in GET /groups"));
        int_field(&entry, "unread")
    }

    /// `(username, role)` of every member of `group`, as listed (oldest first).
    pub async fn member_roles(&self, token: &str, group: i64) -> Vec<(String, String)> {
        let members = json_ok(self.group_members(token, &group.to_string()).await).await;
        array(&members, "members")
            .iter()
            .map(|m| {
                (
                    str_field(m, "username").to_string(),
                    str_field(m, "role").to_string(),
                )
            })
            .collect()
    }

    /// Registers `username` (email `<username>@example.com`, a fixed strong
    /// password) and logs in.
    pub async fn create_user(&self, username: &str) -> TestUser {
        let email = format!("{}@example.com", username.to_lowercase());
        let password = format!("pw-{username}-correct horse");
        let registered = json_ok(
            self.register(&json!({"username": username, "email": email, "password": password}))
                .await,
        )
        .await;
        let id = int_field(&registered, "id");
        let token = self.login_token(username, &password).await;
        TestUser {
            id,
            username: username.to_string(),
            email,
            password,
            token,
        }
    }

    /// Logs in and returns the access token.
    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let body = json_ok(
            self.login(&json!({"username": username, "password": password}))
                .await,
        )
        .await;
        str_field(&body, "access_token").to_string()
    }

    /// Sends `content` from `from` to `to` over REST and returns the message.
    pub async fn send_text(&self, from: &TestUser, to: &str, content: &str) -> Value {
        json_ok(
            self.send_private(&from.token, &json!({"recipient": to, "content": content}))
                .await,
        )
        .await
    }

    /// The ids of the caller's conversation with `username` for `query`.
    pub async fn history_ids(&self, token: &str, username: &str, query: &str) -> Vec<i64> {
        let body = json_ok(self.private_history(token, username, query).await).await;
        array(&body, "history")
            .iter()
            .map(|m| int_field(m, "id"))
            .collect()
    }

    /// The body of a successful `GET /search` with `params`.
    pub async fn search_ok(&self, token: &str, params: &[(&str, &str)]) -> Value {
        json_ok(self.search(token, params).await).await
    }

    /// The ids `GET /search` finds for `q` (and further `params`), in order.
    pub async fn search_ids(&self, token: &str, q: &str, params: &[(&str, &str)]) -> Vec<i64> {
        let mut all = vec![("q", q)];
        all.extend_from_slice(params);
        let body = self.search_ok(token, &all).await;
        array(&body["results"], "search results")
            .iter()
            .map(|m| int_field(m, "id"))
            .collect()
    }

    /// Creates a group named `name` and returns its id.
    pub async fn create_group_id(&self, owner: &TestUser, name: &str) -> i64 {
        let group = json_ok(
            self.create_group(&owner.token, &json!({"name": name}))
                .await,
        )
        .await;
        int_field(&group, "id")
    }

    /// The caller's device entry with `device_id`, if listed.
    pub async fn device_entry(&self, token: &str, device_id: &str) -> Option<Value> {
        let devices = json_ok(self.list_devices(token).await).await;
        array(&devices, "GET /devices")
            .iter()
            .find(|d| d["device_id"] == device_id)
            .cloned()
    }

    /// Polls `GET /devices` every 100 ms until the entry for `device_id`
    /// satisfies `done` (returned), or fails after five seconds with `what`
    /// and the last entry seen. For eventual effects such as `login_status`.
    pub async fn poll_device(
        &self,
        token: &str,
        device_id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let entry = self.device_entry(token, device_id).await;
            if let Some(entry) = &entry {
                if done(entry) {
                    return entry.clone();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not happen within {WAIT:?}; last entry: {entry:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // -- WebSocket ----------------------------------------------------------

    /// Opens `/ws/chat?{query}` with an optional `Authorization: Bearer`.
    pub async fn ws_try_connect(
        &self,
        query: &str,
        bearer: Option<&str>,
    ) -> Result<WsStream, tungstenite::Error> {
        let url = with_query(&format!("{}/ws/chat", self.ws_address), query);
        let mut request = url
            .as_str()
            .into_client_request()
            .expect("a valid ws request");
        if let Some(token) = bearer {
            request.headers_mut().insert(
                AUTHORIZATION,
                format!("Bearer {token}").parse().expect("a valid header"),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, response))) => {
                assert_eq!(response.status().as_u16(), 101, "handshake status");
                Ok(ws)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => panic!("the WebSocket handshake to {url} did not finish within {WAIT:?}"),
        }
    }

    /// Opens a socket authenticated by header and waits until the server's
    /// session answers (see [`ws_wait_ready`]).
    pub async fn ws_connect(&self, token: &str) -> WsStream {
        self.ws_connect_query("", Some(token)).await
    }

    /// Opens a socket with `query` (e.g. `device_id=x` or `token=...`) and an
    /// optional bearer header, and waits until the session answers.
    pub async fn ws_connect_query(&self, query: &str, bearer: Option<&str>) -> WsStream {
        let mut ws = self
            .ws_try_connect(query, bearer)
            .await
            .unwrap_or_else(|e| panic!("the WebSocket handshake (query {query:?}) failed: {e}"));
        ws_wait_ready(&mut ws).await;
        ws
    }

    /// The handshake's refusal: status and (JSON) body, read over plain HTTP
    /// so that the whole body is available.
    pub async fn ws_refusal(&self, query: &str, authorization: Option<&str>) -> Response {
        let mut request = self
            .client
            .get(with_query(&self.url("/ws/chat"), query))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        self.send(request).await
    }
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

// ---------------------------------------------------------------------------
// Response assertions.
// ---------------------------------------------------------------------------

/// Asserts `status` and returns the body as JSON (panicking with the body if
/// it is not).
pub async fn json_status(response: Response, status: u16) -> Value {
    let method_url = response.url().to_string();
    let actual = response.status().as_u16();
    let text = response.text().await.expect("read the response body");
    assert_eq!(
        actual, status,
        "{method_url}: expected HTTP {status}, got {actual} with body {text}"
    );
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method_url}: the body is not JSON ({e}): {text:?}"))
}

/// Asserts 200 and returns the JSON body.
pub async fn json_ok(response: Response) -> Value {
    json_status(response, 200).await
}

/// Asserts an error response: HTTP `status`, a JSON content type and the
/// body `{detail: non-empty string, code: status, timestamp: RFC 3339}`.
/// Returns the body.
pub async fn assert_error(response: Response, status: u16) -> Value {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let url = response.url().to_string();
    let body = json_status(response, status).await;
    assert!(
        content_type.starts_with("application/json"),
        "{url}: an error body should be application/json, got Content-Type {content_type:?}"
    );
    assert_error_body(&body, status);
    body
}

/// Asserts `{detail, code, timestamp}` with `code == status`.
pub fn assert_error_body(body: &Value, status: u16) {
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("error `detail` should be a string: {body}"));
    assert!(!detail.trim().is_empty(), "error `detail` is empty: {body}");
    assert_eq!(
        body["code"].as_u64(),
        Some(u64::from(status)),
        "error `code` should equal the status {status}: {body}"
    );
    assert_timestamp(&body["timestamp"], "error timestamp");
}

/// Asserts that an error body's `detail` names `field`.
pub fn assert_detail_names(body: &Value, field: &str) {
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "error detail should name `{field}`: {body}"
    );
}

/// Asserts an error response and that its detail names `field`.
pub async fn assert_error_naming(response: Response, status: u16, field: &str) -> Value {
    let body = assert_error(response, status).await;
    assert_detail_names(&body, field);
    body
}

/// Asserts `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds) and
/// returns the instant.
pub fn assert_timestamp(value: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} should be a string timestamp, got {value}"));
    const SHAPE: &str = "0000-00-00T00:00:00.000Z";
    let shaped = text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE.bytes()).all(|(c, s)| match s {
            b'0' => c.is_ascii_digit(),
            _ => c == s,
        });
    assert!(
        shaped,
        "{what} should look like 2026-11-23T10:00:00.123Z (UTC, milliseconds, Z), got {text:?}"
    );
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what} is not RFC 3339 ({e}): {text:?}"))
        .with_timezone(&chrono::Utc)
}

/// Asserts a timestamp (as [`assert_timestamp`]) within five minutes of now.
pub fn assert_recent(value: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let at = assert_timestamp(value, what);
    let skew = (chrono::Utc::now() - at).num_seconds().abs();
    assert!(
        skew < 300,
        "{what} should be about now, got {at} ({skew} s away)"
    );
    at
}

/// The integer `field` of `object` (panics naming it otherwise).
pub fn int_field(object: &Value, field: &str) -> i64 {
    object[field]
        .as_i64()
        .unwrap_or_else(|| panic!("`{field}` should be an integer in {object}"))
}

/// The string `field` of `object` (panics naming it otherwise).
pub fn str_field<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` should be a string in {object}"))
}

/// The boolean `field` of `object` (panics naming it otherwise).
pub fn bool_field(object: &Value, field: &str) -> bool {
    object[field]
        .as_bool()
        .unwrap_or_else(|| panic!("`{field}` should be a boolean in {object}"))
}

/// `value` as an array (panics naming `what` otherwise).
pub fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} should be a JSON array, got {value}"))
}

/// Asserts that `object` is a JSON object with every one of `fields`.
pub fn assert_has_fields(object: &Value, fields: &[&str]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("expected a JSON object, got {object}"));
    for field in fields {
        assert!(
            map.contains_key(*field),
            "`{field}` is missing from {object}"
        );
    }
}

/// Asserts the shape of a private message as returned by REST.
pub fn assert_private_message(message: &Value, sender: &str, recipient: &str, content: &str) {
    assert_has_fields(
        message,
        &[
            "id",
            "content",
            "sender",
            "recipient",
            "timestamp",
            "status",
        ],
    );
    assert!(
        int_field(message, "id") > 0,
        "id should be positive: {message}"
    );
    assert_eq!(str_field(message, "content"), content, "content: {message}");
    assert_eq!(str_field(message, "sender"), sender, "sender: {message}");
    assert_eq!(
        str_field(message, "recipient"),
        recipient,
        "recipient: {message}"
    );
    assert_recent(&message["timestamp"], "message timestamp");
    let status = str_field(message, "status");
    assert!(
        ["sent", "delivered", "read"].contains(&status),
        "status should be sent, delivered or read: {message}"
    );
}

/// A header map with `Authorization: <value>` exactly as given, for odd auth cases.
pub fn raw_authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value.parse().expect("a valid header value"));
    headers
}

// ---------------------------------------------------------------------------
// WebSocket helpers. Every read has a timeout; pings and pongs are skipped.
// ---------------------------------------------------------------------------

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `frame` as a JSON text frame.
pub async fn ws_send(ws: &mut WsStream, frame: &Value) {
    ws_send_text(ws, &frame.to_string()).await;
}

/// Sends a raw text frame.
pub async fn ws_send_text(ws: &mut WsStream, text: &str) {
    tokio::time::timeout(WAIT, ws.send(Message::text(text.to_string())))
        .await
        .expect("sending a frame timed out")
        .expect("the socket accepts a frame");
}

/// The next JSON text frame within `wait`, or `None` if none arrives.
/// Control frames are skipped; a close or error fails the test.
pub async fn ws_try_recv<S>(ws: &mut S, wait: Duration) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let next = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(next) => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("the server sent a text frame that is not JSON ({e}): {text:?}")
                }))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(bytes))) => {
                panic!("unexpected binary frame of {} bytes", bytes.len())
            }
            Some(Ok(Message::Close(frame))) => panic!("the server closed the socket: {frame:?}"),
            Some(Err(e)) => panic!("the socket failed: {e}"),
            None => panic!("the socket ended"),
        }
    }
}

/// The next JSON text frame (waits at most [`WAIT`]).
pub async fn ws_recv<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    ws_try_recv(ws, WAIT)
        .await
        .unwrap_or_else(|| panic!("no frame arrived within {WAIT:?}"))
}

/// The next frame that is not a presence (`status`) frame; presence frames
/// arrive whenever contacts come and go and are skipped here.
pub async fn ws_recv_skipping_presence<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let frame = ws_recv(ws).await;
        if frame["type"] != "status" {
            return frame;
        }
    }
}

/// Asserts that no non-presence frame arrives within `wait`.
pub async fn ws_assert_quiet(ws: &mut WsStream, wait: Duration, why: &str) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        if let Some(frame) = ws_try_recv(ws, left).await {
            assert!(frame["type"] == "status", "{why}, but got {frame}");
        }
    }
}

/// Asserts, for all `sockets` at once, that no non-presence frame arrives
/// within `wait`.
pub async fn ws_assert_all_quiet(sockets: &mut [&mut WsStream], wait: Duration, why: &str) {
    futures_util::future::join_all(sockets.iter_mut().map(|ws| ws_assert_quiet(ws, wait, why)))
        .await;
}

/// Waits until the server's session for `ws` answers a frame: sends a text
/// frame that is not JSON and expects the `error` frame for it. After this
/// the session is registered and receives what its user receives.
pub async fn ws_wait_ready(ws: &mut WsStream) {
    ws_send_text(ws, "readiness probe (not JSON)").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws_try_recv(ws, left).await.unwrap_or_else(|| {
            panic!(
                "readiness probe: the session did not answer a non-JSON frame \
                 with an `error` frame within {WAIT:?}"
            )
        });
        match frame["type"].as_str() {
            // Presence frames can precede the answer.
            Some("status") => continue,
            Some("error") => return,
            _ => {
                panic!("readiness probe: a non-JSON frame should get an `error` frame, got {frame}")
            }
        }
    }
}

/// Reads `ws` until the server closes it (or the connection ends); fails
/// after [`WAIT`]. Returns the close frame's code, if one came.
pub async fn wait_closed(ws: &mut WsStream, what: &str) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("{what}: the socket was not closed within {WAIT:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
        }
    }
}

/// Reads until a `status` frame for `user` with `status` arrives.
pub async fn wait_for_status(ws: &mut WsStream, user: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws_try_recv(ws, left)
            .await
            .unwrap_or_else(|| panic!("no `{status}` for {user} within {WAIT:?}"));
        if frame["type"] == "status" && frame["user"] == user && frame["status"] == status {
            return frame;
        }
    }
}

/// Closes the socket and waits for the server's close (or the end of the stream).
pub async fn ws_close(mut ws: WsStream) {
    let _ = tokio::time::timeout(WAIT, ws.close(None)).await;
    let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// Asserts the private-message frame shape of DESIGN.md §3.
pub fn assert_private_frame(frame: &Value, sender: &str, recipient: &str, content: &str) {
    assert_eq!(
        frame["type"], "message",
        "expected a message frame, got {frame}"
    );
    assert_has_fields(
        frame,
        &[
            "id",
            "sender",
            "recipient",
            "content",
            "timestamp",
            "message_type",
            "content_type",
            "status",
        ],
    );
    assert!(int_field(frame, "id") > 0, "frame id: {frame}");
    assert_eq!(str_field(frame, "sender"), sender, "frame sender: {frame}");
    assert_eq!(
        str_field(frame, "recipient"),
        recipient,
        "frame recipient: {frame}"
    );
    assert_eq!(
        str_field(frame, "content"),
        content,
        "frame content: {frame}"
    );
    assert_recent(&frame["timestamp"], "frame timestamp");
    assert_eq!(
        str_field(frame, "message_type"),
        "text",
        "frame message_type: {frame}"
    );
    assert_eq!(
        str_field(frame, "content_type"),
        "text/plain",
        "frame content_type: {frame}"
    );
}

/// Asserts that a handshake was refused with HTTP `status` (and, when the
/// refusal's body arrived with its headers, that it is the error body).
pub fn assert_handshake_status(result: Result<WsStream, tungstenite::Error>, status: u16) {
    match result {
        Ok(_) => panic!("the handshake should be refused with {status}, but it was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(
                response.status().as_u16(),
                status,
                "the handshake should be refused with {status}"
            );
            if let Some(Ok(body)) = response
                .body()
                .as_deref()
                .filter(|b| !b.is_empty())
                .map(serde_json::from_slice::<Value>)
            {
                assert_error_body(&body, status);
            }
        }
        Err(e) => panic!("the handshake should be refused with HTTP {status}, got {e}"),
    }
}

/// Asserts an `error` frame with `code`.
pub fn assert_error_frame(frame: &Value, code: u16) {
    assert_eq!(
        frame["type"], "error",
        "expected an error frame, got {frame}"
    );
    assert_error_body(frame, code);
}

/// A client `message` frame to `recipient` with `client_id`.
pub fn socket_message(recipient: &str, content: &str, client_id: &str) -> Value {
    json!({"type": "message", "recipient": recipient, "content": content, "client_id": client_id})
}

/// A client `message` frame to `group` with `client_id`.
pub fn group_socket_message(group: i64, content: &str, client_id: &str) -> Value {
    json!({"type": "message", "group_id": group, "content": content, "client_id": client_id})
}

/// Asserts an `ack` for `client_id` with `status` and returns its id.
pub fn assert_ack(frame: &Value, client_id: &str, status: &str) -> i64 {
    assert_eq!(frame["type"], "ack", "expected an ack, got {frame}");
    assert_has_fields(frame, &["client_id", "id", "timestamp", "status"]);
    assert_eq!(str_field(frame, "client_id"), client_id, "{frame}");
    let id = int_field(frame, "id");
    assert!(id > 0, "{frame}");
    assert_recent(&frame["timestamp"], "ack timestamp");
    assert_eq!(str_field(frame, "status"), status, "{frame}");
    id
}

/// Asserts the group-message frame shape of DESIGN.md §3 (default types).
pub fn assert_group_frame(frame: &Value, group: i64, sender: &str, content: &str) {
    assert_eq!(
        frame["type"], "message",
        "expected a message frame, got {frame}"
    );
    assert_has_fields(
        frame,
        &[
            "id",
            "group_id",
            "sender",
            "content",
            "timestamp",
            "message_type",
            "content_type",
        ],
    );
    assert!(int_field(frame, "id") > 0, "frame id: {frame}");
    assert_eq!(
        int_field(frame, "group_id"),
        group,
        "frame group_id: {frame}"
    );
    assert_eq!(str_field(frame, "sender"), sender, "frame sender: {frame}");
    assert_eq!(
        str_field(frame, "content"),
        content,
        "frame content: {frame}"
    );
    assert_recent(&frame["timestamp"], "frame timestamp");
    assert_eq!(str_field(frame, "message_type"), "text", "{frame}");
    assert_eq!(str_field(frame, "content_type"), "text/plain", "{frame}");
    assert!(
        frame.get("recipient").is_none(),
        "a group frame has no recipient: {frame}"
    );
}

/// Asserts a `receipt` frame for `message_id` by `user` with `status`.
pub fn assert_receipt(frame: &Value, message_id: i64, user: &str, status: &str) {
    assert_eq!(frame["type"], "receipt", "expected a receipt, got {frame}");
    assert_has_fields(frame, &["message_id", "user", "status", "timestamp"]);
    assert_eq!(int_field(frame, "message_id"), message_id, "{frame}");
    assert_eq!(str_field(frame, "user"), user, "{frame}");
    assert_eq!(str_field(frame, "status"), status, "{frame}");
    assert_recent(&frame["timestamp"], "receipt timestamp");
}

/// Sends `frame` over `ws` and returns the next non-presence frame (the ack
/// or error for it).
pub async fn ws_send_and_recv(ws: &mut WsStream, frame: &Value) -> Value {
    ws_send(ws, frame).await;
    ws_recv_skipping_presence(ws).await
}

/// Sends `frame` over `ws` and returns the `ack` (or `error`) that answers
/// it, skipping anything else that arrives first (messages, receipts,
/// presence, typing) — for sockets that also receive traffic.
pub async fn ws_send_until_ack(ws: &mut WsStream, frame: &Value) -> Value {
    ws_send(ws, frame).await;
    loop {
        let reply = ws_recv(ws).await;
        if reply["type"] == "ack" || reply["type"] == "error" {
            return reply;
        }
    }
}

/// Reads non-presence frames up to and including `synced`; returns the
/// frames before it and the `synced` frame.
pub async fn ws_recv_until_synced<S>(ws: &mut S) -> (Vec<Value>, Value)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut before = Vec::new();
    loop {
        let frame = ws_recv_skipping_presence(ws).await;
        if frame["type"] == "synced" {
            return (before, frame);
        }
        before.push(frame);
    }
}

/// Sends `{"type":"sync","since":since}` and returns the replayed frames
/// and the `synced` frame (see [`ws_recv_until_synced`]).
pub async fn ws_sync(ws: &mut WsStream, since: i64) -> (Vec<Value>, Value) {
    ws_send(ws, &json!({"type": "sync", "since": since})).await;
    ws_recv_until_synced(ws).await
}

/// The `id` of every frame.
pub fn ids_of(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|f| int_field(f, "id")).collect()
}

/// Asserts that `ids` strictly increase.
pub fn assert_ascending(ids: &[i64], what: &str) {
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] >= pair[1]) {
        panic!(
            "{what}: ids should strictly increase, but {} is followed by {}: {ids:?}",
            pair[0], pair[1]
        );
    }
}
