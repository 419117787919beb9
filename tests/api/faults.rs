//! Faults (issue 5): what Parley promises when things go wrong around it.
//!
//! - A `kill -9` loses nothing that was acknowledged.
//! - SIGTERM closes every socket with 1001, commits what was accepted and
//!   exits 0.
//! - An unreachable Postgres makes database requests fail fast with 503
//!   while sockets stay open, and the server recovers by itself.
//! - A client too slow to read is closed with 1008 and costs bounded memory.
//! - A client that stops answering pings is closed; one that answers stays.
//! - After a restart, a name the server learns from a read is forgotten when
//!   its account is deleted.
//!
//! The process-level tests run the real `parley` binary as a child process
//! (`CARGO_BIN_EXE_parley`), learn its port from its JSON log line
//! "parley is listening", and kill only that child, by its handle.

use std::collections::{HashMap, HashSet};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

// ---------------------------------------------------------------------------
// A server in a child process.
// ---------------------------------------------------------------------------

/// What stays the same across restarts of a child server: its data dir, its
/// database and its JWT secret (so tokens stay valid after a restart).
pub(crate) struct Fixture {
    backend: Backend,
    data_dir: tempfile::TempDir,
    database_url: Option<String>,
    secret: String,
    /// Extra `PARLEY_*` settings.
    pub(crate) env: Vec<(&'static str, String)>,
    /// Dropped last: drops the Postgres database.
    _database: Option<PostgresDatabase>,
}

impl Fixture {
    /// `None` (after saying so) for Postgres when it is not configured.
    pub(crate) async fn new(backend: Backend, test: &str) -> Option<Fixture> {
        let (database, database_url) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let admin_url = postgres_admin_url(test)?;
                let (database, url) = PostgresDatabase::create(&admin_url).await;
                (Some(database), Some(url))
            }
        };
        Some(Fixture {
            backend,
            data_dir: tempfile::tempdir().expect("create a temp data dir"),
            database_url,
            secret: format!("faults-secret-{}", uuid::Uuid::new_v4().simple()),
            env: Vec::new(),
            _database: database,
        })
    }

    /// Starts `parley` on `127.0.0.1:0` and waits for its "listening" line.
    pub(crate) async fn start(&self) -> ChildServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        // Settings come only from here, never from the test's environment.
        for (name, _) in std::env::vars() {
            if name.starts_with("PARLEY_") {
                command.env_remove(name);
            }
        }
        command
            .env("PARLEY_BIND", "127.0.0.1:0")
            .env("PARLEY_DATA_DIR", self.data_dir.path())
            .env("PARLEY_JWT_SECRET", &self.secret)
            .env("PARLEY_RATE_LIMITS", "off")
            .env("PARLEY_LOG_FORMAT", "json")
            .env("PARLEY_LOG", "info")
            .env("PARLEY_WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &self.database_url {
            command.env("PARLEY_DATABASE_URL", url);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the parley binary");
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["fields"]["message"] == "parley is listening" {
                        if let Some(port) = event["fields"]["port"].as_u64() {
                            let _ = port_tx.send(port as u16);
                        }
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(port) = port_rx.try_recv() {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "parley exited ({status}) before listening; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "parley did not log \"parley is listening\" within 20 s; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ChildServer {
            app: TestApp::for_port(port, self.backend, self.data_dir.path()),
            child,
            log,
        }
    }
}

/// A running `parley` child process; killed (by its handle) on drop.
pub(crate) struct ChildServer {
    pub(crate) app: TestApp,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap it.
    pub(crate) fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
    }

    /// SIGTERM (to this child only).
    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with our own child's pid and a valid signal.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits up to `bound` for the child to exit; its status and how long it took.
    async fn wait_exit(&mut self, bound: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < bound,
                "parley did not exit within {bound:?} of SIGTERM; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The server's resident set size and its anonymous part, in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} missing from /proc status"))
        };
        (field("VmRSS:"), field("RssAnon:"))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Traffic: pipelined socket sends and what came back.
// ---------------------------------------------------------------------------

/// One message a test sent, by `client_id`.
#[derive(Clone)]
struct Sent {
    sender: String,
    content: String,
    /// The group, or `None` for a private message.
    group: Option<i64>,
}

/// How far a socket's reader got: acks counted, and whether it stopped
/// (the socket closed or broke), which also stops its sender.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    ended: AtomicBool,
}

impl Progress {
    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }
}

/// What a socket's reader saw.
#[derive(Default)]
struct Seen {
    /// client_id → acked id.
    acks: HashMap<String, i64>,
    /// `error` frames.
    errors: Vec<Value>,
    /// Ids of `message` frames pushed to this socket, in arrival order.
    messages: Vec<i64>,
    /// The close frame's code, if the server closed with one.
    close: Option<u16>,
}

/// Sends `frames` (client_id, frame) over `sink` without waiting for acks,
/// stopping quietly if the socket breaks (the server may be killed).
/// When `window` is `Some((n, acked, base))`, at most `n` sends are
/// unacknowledged at once (`acked` counts this socket's acks, `base` of
/// them came before these frames).
async fn pipeline(
    sink: &mut futures_util::stream::SplitSink<WsStream, Message>,
    frames: &[Value],
    window: Option<(usize, &Progress, usize)>,
) -> usize {
    let mut sent = 0;
    for frame in frames {
        if let Some((window, progress, base)) = window {
            while sent + base >= window + progress.acked() {
                if progress.ended.load(Ordering::SeqCst) {
                    return sent;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if sink.send(Message::text(frame.to_string())).await.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

/// Reads `stream` until `stop(seen)` holds, the server closes it, or it
/// breaks. Fails if nothing at all arrives for `idle`.
async fn read_until(
    stream: &mut futures_util::stream::SplitStream<WsStream>,
    seen: &mut Seen,
    progress: &Progress,
    idle: Duration,
    stop: impl Fn(&Seen) -> bool,
) {
    if read_frames(stream, seen, &progress.acked, idle, stop).await {
        progress.ended.store(true, Ordering::SeqCst);
    }
}

/// [`read_until`]'s loop; true if the socket ended (closed or broke).
async fn read_frames(
    stream: &mut futures_util::stream::SplitStream<WsStream>,
    seen: &mut Seen,
    acked: &AtomicUsize,
    idle: Duration,
    stop: impl Fn(&Seen) -> bool,
) -> bool {
    while !stop(seen) {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a socket got nothing, not even a close, for {idle:?} (after {} acks, {} messages)",
                    seen.acks.len(),
                    seen.messages.len()
                )
            });
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                match frame["type"].as_str() {
                    Some("ack") => {
                        let client_id = str_field(&frame, "client_id").to_string();
                        seen.acks.insert(client_id, int_field(&frame, "id"));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Some("error") => seen.errors.push(frame),
                    Some("message") => seen.messages.push(int_field(&frame, "id")),
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                seen.close = frame.map(|f| u16::from(f.code));
                return true;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return true,
        }
    }
    false
}

/// A socket for `token` whose client side has a 4 KiB receive buffer, so
/// that a client that does not read fills the server's queue after a few
/// dozen frames instead of after megabytes of kernel buffers.
async fn ws_connect_small_buffer(app: &TestApp, token: &str) -> WsStream {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("set the receive buffer");
    let addr: SocketAddr = format!("127.0.0.1:{}", app.port).parse().unwrap();
    let stream = socket.connect(addr).await.expect("connect");
    let mut request = format!("{}/ws/chat", app.ws_address)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header"),
    );
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("the handshake finishes")
    .expect("the handshake succeeds");
    ws_wait_ready(&mut ws).await;
    ws
}

/// Every message of `user`'s conversation with `other`, or of `group`
/// (`other` ignored), paged with `after`: id → (sender, content).
async fn all_stored(
    app: &TestApp,
    token: &str,
    other: &str,
    group: Option<i64>,
) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let query = format!("after={after}&limit=500");
        let response = match group {
            Some(group) => app.group_messages(token, &group.to_string(), &query).await,
            None => app.private_history(token, other, &query).await,
        };
        let page = json_ok(response).await;
        let page = array(&page, "history page");
        for message in page {
            out.push((
                int_field(message, "id"),
                str_field(message, "sender").to_string(),
                str_field(message, "content").to_string(),
            ));
        }
        if page.len() < 500 {
            return out;
        }
        after = out.last().map(|m| m.0).unwrap();
    }
}

/// Acked ⇒ stored: every acknowledged message is in history under its id,
/// from its sender, with its content; nothing stored was never sent, and
/// nothing is stored twice.
async fn assert_acked_are_stored(
    app: &TestApp,
    reader: &TestUser,
    private_with: &str,
    group: Option<i64>,
    sent: &HashMap<String, Sent>,
    acks: &HashMap<String, i64>,
) {
    let mut stored = all_stored(app, &reader.token, private_with, None).await;
    if let Some(group) = group {
        stored.extend(all_stored(app, &reader.token, "", Some(group)).await);
    }
    let by_id: HashMap<i64, (String, String)> = stored
        .iter()
        .map(|(id, sender, content)| (*id, (sender.clone(), content.clone())))
        .collect();
    assert_eq!(by_id.len(), stored.len(), "an id is listed twice");
    for (client_id, id) in acks {
        let want = &sent[client_id];
        let (sender, content) = by_id.get(id).unwrap_or_else(|| {
            panic!(
                "message {id} (client_id {client_id}) was acked but is not stored \
                 ({} stored, {} acked)",
                stored.len(),
                acks.len()
            )
        });
        assert_eq!(sender, &want.sender, "sender of acked message {id}");
        assert_eq!(content, &want.content, "content of acked message {id}");
    }
    let sent_contents: HashSet<&str> = sent.values().map(|s| s.content.as_str()).collect();
    let mut stored_contents = HashSet::new();
    for (id, _, content) in &stored {
        assert!(
            sent_contents.contains(content.as_str()),
            "message {id} was stored but never sent: {content:?}"
        );
        assert!(
            stored_contents.insert(content.as_str()),
            "{content:?} is stored twice"
        );
    }
}

/// The value of an unlabelled series in `/metrics`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .get("/metrics", "")
        .await
        .text()
        .await
        .expect("read /metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

/// Polls `/metrics` until `series` equals `value`, for at most [`WAIT`].
async fn wait_metric(app: &TestApp, series: &str, value: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = metric(app, series).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} should become {value}, still {now} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// kill -9 and SIGTERM
// ---------------------------------------------------------------------------

/// Three senders over their own sockets: alice → bob, bob → alice (private)
/// and carol → the group of all three. Returns the users, the group and
/// the frames each sends (by socket), all recorded in `sent`.
struct Traffic {
    alice: TestUser,
    bob: TestUser,
    carol: TestUser,
    group: i64,
    frames: Vec<Vec<Value>>,
    sent: HashMap<String, Sent>,
}

async fn traffic(app: &TestApp, per_socket: usize, tag: &str) -> Traffic {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let carol = app.create_user("carol").await;
    let group = app
        .create_group_with(&alice, "faults", &[&bob, &carol])
        .await;
    let mut sent = HashMap::new();
    let mut frames = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..per_socket {
        for (socket, (sender, prefix)) in [(&alice, "a"), (&bob, "b"), (&carol, "c")]
            .into_iter()
            .enumerate()
        {
            let client_id = format!("{prefix}-{i}");
            let content = format!("{tag} from {} #{i}", sender.username);
            let (frame, to_group) = match socket {
                0 => (socket_message("bob", &content, &client_id), None),
                1 => (socket_message("alice", &content, &client_id), None),
                _ => (
                    group_socket_message(group, &content, &client_id),
                    Some(group),
                ),
            };
            frames[socket].push(frame);
            sent.insert(
                client_id,
                Sent {
                    sender: sender.username.clone(),
                    content,
                    group: to_group,
                },
            );
        }
    }
    Traffic {
        alice,
        bob,
        carol,
        group,
        frames,
        sent,
    }
}

async fn acked_messages_survive_kill_9(backend: Backend) {
    let Some(fixture) = Fixture::new(backend, "faults::acked_messages_survive_kill_9").await else {
        return;
    };
    let mut server = fixture.start().await;
    const PER_SOCKET: usize = 1500;
    let t = traffic(&server.app, PER_SOCKET, "kill9").await;
    let mut sockets = Vec::new();
    for user in [&t.alice, &t.bob, &t.carol] {
        sockets.push(server.app.ws_connect(&user.token).await.split());
    }

    // Kill once a third of the acks are in, with up to 100 sends per socket
    // in flight (the window keeps all three sockets moving together).
    let acked: Vec<Progress> = (0..3).map(|_| Progress::default()).collect();
    let total = || acked.iter().map(Progress::acked).sum::<usize>();
    let threshold = PER_SOCKET;
    let mut seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    {
        let sends = sockets
            .iter_mut()
            .zip(&t.frames)
            .zip(seen.iter_mut())
            .zip(&acked)
            .map(|((((sink, stream), frames), seen), acked)| async move {
                tokio::join!(
                    pipeline(sink, frames, Some((100, acked, 0))),
                    read_until(stream, seen, acked, Duration::from_secs(15), |_| false),
                )
            });
        let killer = async {
            let started = Instant::now();
            while total() < threshold {
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "only {} acks within 15 s",
                    total()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            server.kill_9();
        };
        tokio::join!(futures_util::future::join_all(sends), killer);
    }
    let acks: HashMap<String, i64> = seen.iter().flat_map(|s| s.acks.clone()).collect();
    for s in &seen {
        eprintln!(
            "kill -9: a socket saw {} acks and {} messages",
            s.acks.len(),
            s.messages.len()
        );
        assert!(s.errors.is_empty(), "error frames: {:?}", s.errors);
    }
    assert!(
        acks.len() < 3 * PER_SOCKET,
        "the kill should land mid-stream, but all {} sends were acked",
        acks.len()
    );
    assert!(acks.len() >= threshold);

    // Same data dir and database, a new process.
    let server = fixture.start().await;
    assert_acked_are_stored(&server.app, &t.alice, "bob", Some(t.group), &t.sent, &acks).await;
    // The idempotency keys survived too: resending an acked send stores
    // nothing new and names the first id.
    let (client_id, id) = acks
        .iter()
        .find(|(client_id, _)| t.sent[*client_id].group.is_some())
        .expect("at least one group send was acked");
    let mut ws = server.app.ws_connect(&t.carol.token).await;
    let resend = group_socket_message(t.group, &t.sent[client_id].content, client_id);
    let ack = ws_send_until_ack(&mut ws, &resend).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(int_field(&ack, "id"), *id, "a resend after restart: {ack}");
    drop(server);
}

#[actix_web::test]
async fn acked_messages_survive_kill_9_sqlite() {
    acked_messages_survive_kill_9(Backend::Sqlite).await;
}

#[actix_web::test]
async fn acked_messages_survive_kill_9_postgres() {
    acked_messages_survive_kill_9(Backend::Postgres).await;
}

async fn sigterm_closes_sockets_with_1001_exits_0_and_keeps_acked_messages(backend: Backend) {
    let Some(fixture) = Fixture::new(
        backend,
        "faults::sigterm_closes_sockets_with_1001_exits_0_and_keeps_acked_messages",
    )
    .await
    else {
        return;
    };
    let mut server = fixture.start().await;
    const PER_SOCKET: usize = 300;
    let t = traffic(&server.app, PER_SOCKET, "sigterm").await;
    let mut sockets = Vec::new();
    for user in [&t.alice, &t.bob, &t.carol] {
        sockets.push(server.app.ws_connect(&user.token).await.split());
    }
    let acked = Progress::default();
    let mut seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    {
        let acked = &acked;
        let sends = sockets.iter_mut().zip(&t.frames).zip(seen.iter_mut()).map(
            |(((sink, stream), frames), seen)| async move {
                tokio::join!(
                    pipeline(sink, frames, None),
                    read_until(stream, seen, acked, WAIT, |seen| seen.acks.len()
                        == PER_SOCKET),
                )
            },
        );
        futures_util::future::join_all(sends).await;
    }
    let acks: HashMap<String, i64> = seen.iter().flat_map(|s| s.acks.clone()).collect();
    assert_eq!(acks.len(), 3 * PER_SOCKET, "every send is acked");

    // Idle HTTP connections would hold a graceful stop until they time out.
    server.app.client = reqwest::Client::new();
    server.terminate();
    let signalled = Instant::now();
    for ((_, stream), seen) in sockets.iter_mut().zip(seen.iter_mut()) {
        read_until(stream, seen, &acked, Duration::from_secs(10), |_| false).await;
        assert_eq!(
            seen.close,
            Some(u16::from(CloseCode::Away)),
            "every socket is closed with 1001 at SIGTERM"
        );
    }
    let (status, took) = server.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "parley should exit 0 after SIGTERM, got {status}; log:\n{}",
        server.log_text()
    );
    assert!(
        server
            .log_text()
            .contains("all accepted writes are committed"),
        "the shutdown should report its flush; log:\n{}",
        server.log_text()
    );
    eprintln!(
        "SIGTERM: exited in {:?} ({took:?} after the sockets closed)",
        signalled.elapsed()
    );

    let server = fixture.start().await;
    assert_acked_are_stored(&server.app, &t.bob, "alice", Some(t.group), &t.sent, &acks).await;
}

#[actix_web::test]
async fn sigterm_closes_sockets_with_1001_exits_0_and_keeps_acked_messages_sqlite() {
    sigterm_closes_sockets_with_1001_exits_0_and_keeps_acked_messages(Backend::Sqlite).await;
}

#[actix_web::test]
async fn sigterm_closes_sockets_with_1001_exits_0_and_keeps_acked_messages_postgres() {
    sigterm_closes_sockets_with_1001_exits_0_and_keeps_acked_messages(Backend::Postgres).await;
}

/// After a restart the server knows no names; it learns them from reads
/// (here a history request). A name learned that way must still be
/// forgotten when its account is deleted.
async fn a_name_learned_after_a_restart_is_forgotten_when_its_account_is_deleted(backend: Backend) {
    let Some(fixture) = Fixture::new(
        backend,
        "faults::a_name_learned_after_a_restart_is_forgotten_when_its_account_is_deleted",
    )
    .await
    else {
        return;
    };
    let mut server = fixture.start().await;
    let alice = server.app.create_user("alice").await;
    let bob = server.app.create_user("bob").await;
    server.kill_9();

    let server = fixture.start().await;
    let app = &server.app;
    let history = app.private_history(&alice.token, "bob", "").await;
    assert_eq!(
        history.status().as_u16(),
        200,
        "bob is found after the restart"
    );
    let deleted = app.delete_account(&bob.token, &bob.password).await;
    assert_eq!(deleted.status().as_u16(), 204, "bob deletes his account");

    assert_error(app.private_history(&alice.token, "bob", "").await, 404).await;
    assert_error(
        app.send_private(&alice.token, &json!({"recipient": "bob", "content": "hi"}))
            .await,
        404,
    )
    .await;
}

#[actix_web::test]
async fn a_name_learned_after_a_restart_is_forgotten_when_its_account_is_deleted_sqlite() {
    a_name_learned_after_a_restart_is_forgotten_when_its_account_is_deleted(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_name_learned_after_a_restart_is_forgotten_when_its_account_is_deleted_postgres() {
    a_name_learned_after_a_restart_is_forgotten_when_its_account_is_deleted(Backend::Postgres)
        .await;
}

// ---------------------------------------------------------------------------
// Postgres unreachable
// ---------------------------------------------------------------------------

/// A TCP proxy in front of Postgres that the test can cut (every proxied
/// connection is closed and new ones are dropped on accept) and restore.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (is_up, conns) = (up.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !is_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `(host:port of the URL, the URL with host:port replaced by `to`)`.
fn redirect_url(url: &str, to: SocketAddr) -> (String, String) {
    let start = url.find("://").expect("a URL with a scheme") + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    let upstream = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    let redirected = format!("{}{}{}", &url[..start + host_start], to, &url[end..]);
    (upstream, redirected)
}

/// Postgres only: this is a scenario about losing the network path to a
/// database server; SQLite is a file inside the process and has no such
/// failure.
///
/// While the proxy is cut, requests that need the database answer 503 with
/// the error body within a few seconds, and an open socket's send gets an
/// `error` frame while the socket stays open; once restored, the same
/// server serves again without a restart, and what was acked before the
/// cut is stored.
#[actix_web::test]
async fn when_postgres_is_unreachable_requests_fail_fast_with_503_and_recover() {
    const TEST: &str =
        "faults::when_postgres_is_unreachable_requests_fail_fast_with_503_and_recover";
    let Some(admin_url) = postgres_admin_url(TEST) else {
        return;
    };
    let (upstream, _) = redirect_url(&admin_url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream).await;
    let proxy_addr = proxy.addr;
    let app = spawn_app_with(Backend::Postgres, TEST, |config| {
        let url = config.database_url.take().expect("a Postgres URL");
        config.database_url = Some(redirect_url(&url, proxy_addr).1);
    })
    .await
    .expect("Postgres is configured");

    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let mut ws = app.ws_connect(&alice.token).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let ack = ws_send_until_ack(
            &mut ws,
            &socket_message("bob", &format!("before the cut #{i}"), &format!("pre-{i}")),
        )
        .await;
        acked.push(assert_ack(&ack, &format!("pre-{i}"), "sent"));
    }
    acked.push(int_field(
        &app.send_text(&alice, "bob", "over REST before the cut")
            .await,
        "id",
    ));

    proxy.cut();
    let bound = Duration::from_secs(5);
    let started = Instant::now();
    let response = app
        .send_private(
            &alice.token,
            &json!({"recipient": "bob", "content": "during the cut"}),
        )
        .await;
    assert_error(response, 503).await;
    assert!(
        started.elapsed() < bound,
        "a send without a database should fail within {bound:?}, took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_error(app.private_history(&alice.token, "bob", "").await, 503).await;
    assert!(
        started.elapsed() < bound,
        "a history read without a database should fail within {bound:?}, took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let reply = ws_send_until_ack(&mut ws, &socket_message("bob", "cut", "during")).await;
    assert_error_frame(&reply, 503);
    assert_eq!(reply["client_id"], "during", "{reply}");
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    // The socket is still open and its session answers.
    ws_wait_ready(&mut ws).await;

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app
            .send_private(
                &alice.token,
                &json!({"recipient": "bob", "content": "after"}),
            )
            .await;
        if response.status().as_u16() == 200 {
            acked.push(int_field(&json_ok(response).await, "id"));
            break;
        }
        assert_error(response, 503).await;
        assert!(
            Instant::now() < deadline,
            "sends still fail 10 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ack = ws_send_until_ack(&mut ws, &socket_message("bob", "back", "post")).await;
    acked.push(assert_ack(&ack, "post", "sent"));
    let stored = app
        .history_ids(&bob.token, "alice", "after=0&limit=500")
        .await;
    for id in &acked {
        assert!(
            stored.contains(id),
            "acked message {id} is missing: {stored:?}"
        );
    }
    ws_close(ws).await;
}

// ---------------------------------------------------------------------------
// Slow consumers
// ---------------------------------------------------------------------------

api_test!(
    a_socket_that_does_not_read_is_closed_with_1008_and_the_others_get_everything,
    config(|c| c.socket_queue = 64),
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "busy", &[&bob, &carol]).await;
        let (mut alice_sink, mut alice_stream) = app.ws_connect(&alice.token).await.split();
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let carol_ws = ws_connect_small_buffer(&app, &carol.token).await;

        // 1,000 × 8 KB is more than the socket buffers between the server
        // and carol hold while she does not read (the server's send buffer
        // alone may grow to 4 MiB), so her queue of 64 frames overflows.
        const COUNT: usize = 1000;
        let filler = "x".repeat(8000);
        let frames: Vec<Value> = (0..COUNT)
            .map(|i| group_socket_message(group, &format!("{i} {filler}"), &format!("s-{i}")))
            .collect();
        let acked = Progress::default();
        let mut alice_seen = Seen::default();
        let mut bob_seen = Seen::default();
        let (bob_sink, mut bob_stream) = bob_ws.split();
        let unused = Progress::default();
        // At most 32 sends in flight: a commit then fans out at most 32
        // messages at once, which a socket that reads absorbs in its queue
        // of 64. (A queue smaller than one commit's fan-out closes even a
        // client that reads.)
        tokio::join!(
            pipeline(&mut alice_sink, &frames, Some((32, &acked, 0))),
            read_until(&mut alice_stream, &mut alice_seen, &acked, WAIT, |s| s
                .acks
                .len()
                == COUNT),
            read_until(&mut bob_stream, &mut bob_seen, &unused, WAIT, |s| s
                .messages
                .len()
                == COUNT),
        );
        assert!(alice_seen.errors.is_empty(), "{:?}", alice_seen.errors);
        let mut ids: Vec<i64> = (0..COUNT)
            .map(|i| alice_seen.acks[&format!("s-{i}")])
            .collect();
        assert_ascending(&ids, "acks");
        assert_eq!(bob_seen.messages, ids, "bob gets every message, in order");
        assert!(bob_seen.close.is_none());

        // Carol reads now: what fit in the buffers, then the close.
        let (_carol_sink, mut carol_stream) = carol_ws.split();
        let mut carol_seen = Seen::default();
        read_until(&mut carol_stream, &mut carol_seen, &unused, WAIT, |_| false).await;
        assert_eq!(
            carol_seen.close,
            Some(1008),
            "the slow reader is closed with 1008 (policy)"
        );
        assert!(
            carol_seen.messages.len() < COUNT,
            "the slow reader should not have everything buffered for her ({} of {COUNT})",
            carol_seen.messages.len()
        );
        // She reconnects and syncs: nothing is lost.
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let (replayed, _) = ws_sync(&mut carol_ws, 0).await;
        let replayed: HashSet<i64> = ids_of(&replayed).into_iter().collect();
        ids.retain(|id| !replayed.contains(id));
        assert!(ids.is_empty(), "missing after sync: {ids:?}");
        // Bob's socket is still fine.
        bob_ws = bob_sink.reunite(bob_stream).expect("the same socket");
        ws_wait_ready(&mut bob_ws).await;
    }
);

/// Sends `frames[range]` with at most 200 unacknowledged at once (so the
/// server's in-flight memory is the same in every phase) and reads until
/// all of them are acked.
async fn send_windowed(
    sink: &mut futures_util::stream::SplitSink<WsStream, Message>,
    stream: &mut futures_util::stream::SplitStream<WsStream>,
    seen: &mut Seen,
    acked: &Progress,
    frames: &[Value],
    range: std::ops::Range<usize>,
) {
    let base = acked.acked();
    let end = range.end;
    tokio::join!(
        pipeline(sink, &frames[range], Some((200, acked, base))),
        read_until(stream, seen, acked, WAIT, |s| s.acks.len() == end),
    );
}

/// Memory stays bounded while sockets never read: 40 sockets of one member
/// of a busy group never read a byte while another member posts 10,000
/// messages. The server runs as a child process so that `/proc/PID/status`
/// is the server's memory alone.
///
/// SQLite only: what is measured is the fan-out to sockets (hub, session
/// mailboxes, WebSocket buffers), which is the same code on both backends;
/// with Postgres the database's own memory is in another process and the
/// difference would tell nothing more.
#[actix_web::test]
async fn memory_stays_bounded_while_sockets_do_not_read() {
    let mut fixture = Fixture::new(
        Backend::Sqlite,
        "faults::memory_stays_bounded_while_sockets_do_not_read",
    )
    .await
    .expect("SQLite always runs");
    // A small queue so that the non-readers overflow well before the first
    // measurement; the default (1024) bounds memory the same way, later.
    fixture.env.push(("PARLEY_SOCKET_QUEUE", "64".to_string()));
    let server = fixture.start().await;
    let app = &server.app;
    let alice = app.create_user("alice").await;
    let carol = app.create_user("carol").await;
    let group = app.create_group_with(&alice, "busy", &[&carol]).await;
    const IDLE_SOCKETS: usize = 40;
    let mut idle = Vec::new();
    for _ in 0..IDLE_SOCKETS {
        idle.push(ws_connect_small_buffer(app, &carol.token).await);
    }
    let (mut sink, mut stream) = app.ws_connect(&alice.token).await.split();
    wait_metric(app, "parley_open_sockets", (IDLE_SOCKETS + 1) as f64).await;

    let filler = "y".repeat(200);
    let frames: Vec<Value> = (0..10_000)
        .map(|i| group_socket_message(group, &format!("{i} {filler}"), &format!("m-{i}")))
        .collect();
    let acked = Progress::default();
    let mut seen = Seen::default();
    send_windowed(&mut sink, &mut stream, &mut seen, &acked, &frames, 0..2_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_2k, anon_2k) = server.rss_kib();
    send_windowed(
        &mut sink,
        &mut stream,
        &mut seen,
        &acked,
        &frames,
        2_000..10_000,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_10k, anon_10k) = server.rss_kib();
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);
    assert_eq!(seen.acks.len(), 10_000);
    eprintln!("RSS: {rss_2k} KiB after 2,000 posts, {rss_10k} KiB after 10,000 (anon {anon_2k} → {anon_10k})");

    // Had the 40 idle sockets kept what was pushed to them, the 8,000 posts
    // between the measurements would cost 40 × 8,000 queued frames (about
    // 100 bytes of envelope each, plus the ~300-byte frame encoded once),
    // over 30 MiB, and over 80 MiB once written into per-socket buffers.
    // What legitimately grows is SQLite's page cache for ~3 MB of new rows
    // and allocator slack, a few MiB. 16 MiB sits well between the two.
    let growth = rss_10k.saturating_sub(rss_2k);
    assert!(
        growth < 16 * 1024,
        "RSS grew by {growth} KiB from 2,000 to 10,000 posts with non-reading sockets \
         ({rss_2k} → {rss_10k} KiB)"
    );
    // The idle sockets were dropped as slow consumers, not kept.
    wait_metric(app, "parley_open_sockets", 1.0).await;
    drop(idle);
}

// ---------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------

api_test!(
    a_client_that_stops_answering_pings_is_closed_and_one_that_answers_stays,
    config(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.client_timeout = Duration::from_millis(600);
    }),
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        app.send_text(&alice, "bob", "we are contacts").await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "faults-phone"}))
                .await,
        )
        .await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let alice_ws = app
            .ws_connect_query("device_id=faults-phone", Some(&alice.token))
            .await;
        app.poll_device(&alice.token, "faults-phone", "login_status true", |d| {
            d["login_status"] == true
        })
        .await;
        assert_eq!(metric(&app, "parley_open_sockets").await, 2.0);

        // Alice's client stops reading, so it answers no ping; bob reads
        // (and so answers pings) and hears that alice went offline.
        let started = Instant::now();
        loop {
            let frame = ws_try_recv(&mut bob_ws, WAIT)
                .await
                .expect("bob should hear that alice went offline");
            if frame["type"] == "status" && frame["user"] == "alice" && frame["status"] == "offline"
            {
                break;
            }
        }
        let offline_after = started.elapsed();
        assert!(
            offline_after < Duration::from_secs(3),
            "a silent client should be closed after about 600 ms, took {offline_after:?}"
        );
        let device = app
            .poll_device(&alice.token, "faults-phone", "login_status false", |d| {
                d["login_status"] == false
            })
            .await;
        assert!(!bool_field(&device, "login_status"));
        wait_metric(&app, "parley_open_sockets", 1.0).await;

        // Alice's socket got the server's close (after the pings she never read).
        let (_sink, mut alice_stream) = alice_ws.split();
        let mut alice_seen = Seen::default();
        let unused = Progress::default();
        read_until(&mut alice_stream, &mut alice_seen, &unused, WAIT, |_| false).await;
        assert!(
            alice_seen.close.is_some(),
            "the server should close a silent socket with a close frame"
        );

        // Bob keeps answering pings through more than three timeouts.
        ws_assert_quiet(
            &mut bob_ws,
            Duration::from_secs(2),
            "bob only answers pings",
        )
        .await;
        ws_wait_ready(&mut bob_ws).await;
        assert_eq!(metric(&app, "parley_open_sockets").await, 1.0);
    }
);
