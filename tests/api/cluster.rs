//! Several nodes as one server: three real Parley nodes in this process, on
//! port 0, sharing one fresh Postgres database, one data dir and one engine,
//! a Redis or NATS server the test starts on a free loopback port (so it can
//! also restart it). Every test runs on both engines. Postgres is required
//! (a cluster refuses SQLite); without `PARLEY_TEST_POSTGRES_URL` the tests
//! say they are skipped, as the other Postgres variants do. A missing
//! `redis-server` or `nats-server` fails the test, naming the package.
//! The SIGKILL test runs the real binary twice as child processes instead
//! (`faults::Fixture`), so that one node can be killed.

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parley::config::{Config, Switch};
use parley_actors::cluster::EngineUrl;
use serde_json::json;

use crate::helpers::*;

#[derive(Clone, Copy, Debug)]
enum EngineKind {
    Redis,
    Nats,
}

/// An engine server of the test's own, killed when dropped.
struct EngineServer {
    kind: EngineKind,
    port: u16,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl EngineServer {
    fn start(kind: EngineKind) -> EngineServer {
        let port = free_port();
        let child = Self::spawn(kind, port);
        let server = EngineServer { kind, port, child };
        server.wait_listening();
        server
    }

    fn spawn(kind: EngineKind, port: u16) -> Child {
        let (program, args, package): (&str, Vec<String>, &str) = match kind {
            EngineKind::Redis => (
                "redis-server",
                [
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .map(String::from)
                .to_vec(),
                "redis-server",
            ),
            EngineKind::Nats => (
                "nats-server",
                ["-a", "127.0.0.1", "-p", &port.to_string()]
                    .map(String::from)
                    .to_vec(),
                "nats-server",
            ),
        };
        let path = ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| format!("{dir}/{program}"))
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or_else(|| program.to_string());
        Command::new(&path)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {program} ({error}): the cluster tests need it; install Debian's {package} package (.ci/run does)")
            })
    }

    fn wait_listening(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?} did not listen on port {} within {WAIT:?}",
                self.kind,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> EngineUrl {
        match self.kind {
            EngineKind::Redis => EngineUrl::Redis(format!("redis://127.0.0.1:{}", self.port)),
            EngineKind::Nats => EngineUrl::Nats(format!("nats://127.0.0.1:{}", self.port)),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts a new, empty one on the same port.
    fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.kind, self.port);
        self.wait_listening();
    }
}

impl Drop for EngineServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TestCluster {
    nodes: Vec<TestApp>,
    engine: EngineServer,
    database_url: String,
    secret: String,
    data_dir: tempfile::TempDir,
    _database: PostgresDatabase,
}

impl TestCluster {
    /// Starts one more node, configured as the others.
    async fn add_node(&mut self) {
        let mut config = Config::for_data_dir(self.data_dir.path());
        config.bind = "127.0.0.1:0".into();
        config.database_url = Some(self.database_url.clone());
        config.jwt_secret = Some(self.secret.clone());
        config.rate_limits = Switch::Off;
        config.cluster = Some(self.engine.url());
        config.heartbeat_interval = HEARTBEAT;
        config.client_timeout = NODE_TIMEOUT;
        self.nodes.push(start_node(config, Backend::Postgres).await);
    }
}

/// Heartbeats and timeouts short enough for a test to see a node die.
const HEARTBEAT: Duration = Duration::from_millis(200);
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// `nodes` nodes on one fresh Postgres database and one new engine server.
async fn spawn_cluster(kind: EngineKind, nodes: usize, test: &str) -> Option<TestCluster> {
    let admin_url = postgres_admin_url(test)?;
    let (database, database_url) = PostgresDatabase::create(&admin_url).await;
    let mut cluster = TestCluster {
        nodes: Vec::new(),
        engine: EngineServer::start(kind),
        database_url,
        secret: format!("cluster-secret-{}", uuid::Uuid::new_v4().simple()),
        data_dir: tempfile::tempdir().expect("a temp data dir"),
        _database: database,
    };
    for _ in 0..nodes {
        cluster.add_node().await;
    }
    Some(cluster)
}

/// Writes a cluster test once and runs it on Redis and on NATS.
macro_rules! cluster_test {
    ($name:ident, $nodes:expr, |$cluster:ident| $body:expr) => {
        mod $name {
            use super::*;

            #[actix_web::test]
            #[allow(unused_mut)]
            async fn redis() {
                let Some(mut $cluster) =
                    spawn_cluster(EngineKind::Redis, $nodes, module_path!()).await
                else {
                    return;
                };
                $body.await;
            }

            #[actix_web::test]
            #[allow(unused_mut)]
            async fn nats() {
                let Some(mut $cluster) =
                    spawn_cluster(EngineKind::Nats, $nodes, module_path!()).await
                else {
                    return;
                };
                $body.await;
            }
        }
    };
}

/// The next frame that is not presence (another node's presence may
/// arrive at any time).
async fn next_frame(ws: &mut WsStream) -> serde_json::Value {
    ws_recv_skipping_presence(ws).await
}

/// Tries `attempt` every 50 ms until it gives `Some`, for up to [`WAIT`]:
/// what one node does reaches the others through the engine a moment later.
async fn eventually<T, F, Attempt>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Attempt,
    Attempt: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `from` → `to` on `node` until the send says `delivered`: `to`'s
/// sockets elsewhere are then known on `node`. Returns how many it sent.
async fn wait_until_delivered_status(node: &TestApp, from: &TestUser, to: &str) -> usize {
    let sent = &std::cell::Cell::new(0);
    let what = format!("{to} showing as online to {}", from.username);
    eventually(&what, move || async move {
        let message = node.send_text(from, to, "are you there?").await;
        sent.set(sent.get() + 1);
        (message["status"] == "delivered").then(|| sent.get())
    })
    .await
}

cluster_test!(
    private_and_group_messages_reach_every_socket_on_every_node,
    3,
    |cluster| async move {
        let [a, b, c] = &cluster.nodes[..] else {
            unreachable!("three nodes")
        };
        let alice = a.create_user("alice").await;
        let bob = b.create_user("bob").await;
        let carol = c.create_user("carol").await;
        let mut alice_a = a.ws_connect(&alice.token).await;
        let mut alice_b = b.ws_connect(&alice.token).await;
        let mut bob_b = b.ws_connect(&bob.token).await;
        let mut bob_c = c.ws_connect(&bob.token).await;
        let mut carol_c = c.ws_connect(&carol.token).await;

        // A private message sent on node a reaches both of bob's sockets
        // (nodes b and c) and alice's other socket (node b); her sending
        // socket gets the ack.
        let probes = wait_until_delivered_status(a, &alice, "bob").await;
        for ws in [&mut bob_b, &mut bob_c, &mut alice_b] {
            for _ in 0..probes {
                assert_private_frame(&next_frame(ws).await, "alice", "bob", "are you there?");
            }
        }
        let ack = ws_send_until_ack(&mut alice_a, &socket_message("bob", "hi bob", "c1")).await;
        let id = assert_ack(&ack, "c1", "delivered");
        for ws in [&mut bob_b, &mut bob_c, &mut alice_b] {
            let frame = next_frame(ws).await;
            assert_private_frame(&frame, "alice", "bob", "hi bob");
            assert_eq!(int_field(&frame, "id"), id);
        }

        // A group created on node a, posted to on node c over REST: every
        // member's every socket hears it, the poster's own included.
        let group = a.create_group_id(&alice, "everyone").await;
        for user in ["bob", "carol"] {
            json_ok(a.add_member(&alice.token, &group.to_string(), user).await).await;
        }
        // Each member's every socket hears who joined from then on.
        for (ws, joined) in [
            (&mut alice_a, &["bob", "carol"][..]),
            (&mut alice_b, &["bob", "carol"][..]),
            (&mut bob_b, &["bob", "carol"][..]),
            (&mut bob_c, &["bob", "carol"][..]),
            (&mut carol_c, &["carol"][..]),
        ] {
            for user in joined {
                let frame = next_frame(ws).await;
                assert_eq!(frame["type"], "member_added", "{frame}");
                assert_eq!(frame["user"], *user, "{frame}");
            }
        }
        let posted = c.send_group_text(&carol, group, "hello all").await;
        for ws in [
            &mut alice_a,
            &mut alice_b,
            &mut bob_b,
            &mut bob_c,
            &mut carol_c,
        ] {
            let frame = next_frame(ws).await;
            assert_group_frame(&frame, group, "carol", "hello all");
            assert_eq!(int_field(&frame, "id"), int_field(&posted, "id"));
        }

        // A member added on node a may post on node b, whose room was
        // already running with the old members: it reloads them.
        let dave = a.create_user("dave").await;
        let mut dave_b = b.ws_connect(&dave.token).await;
        json_ok(a.add_member(&alice.token, &group.to_string(), "dave").await).await;
        let (dave, group_path) = (&dave, &group.to_string());
        eventually("node b learning that dave joined", move || async move {
            let body = json!({"content": "dave here", "message_type": "text"});
            let response = b.post_group_message(&dave.token, group_path, &body).await;
            if response.status().as_u16() == 200 {
                return Some(());
            }
            assert_error(response, 403).await;
            None
        })
        .await;
        for ws in [&mut alice_a, &mut bob_c, &mut carol_c, &mut dave_b] {
            let joined = next_frame(ws).await;
            assert_eq!(joined["type"], "member_added", "{joined}");
            assert_eq!(joined["user"], "dave", "{joined}");
            assert_group_frame(&next_frame(ws).await, group, "dave", "dave here");
        }
    }
);

cluster_test!(
    edits_reactions_and_deletions_reach_every_socket_on_every_node_in_order,
    2,
    |cluster| async move {
        let [a, b] = &cluster.nodes[..] else {
            unreachable!("two nodes")
        };
        let alice = a.create_user("alice").await;
        let bob = b.create_user("bob").await;
        let mut alice_a = a.ws_connect(&alice.token).await;
        let mut bob_b = b.ws_connect(&bob.token).await;

        // Private: sent on a, edited on b, reacted to on a.
        let sent = a.send_text(&alice, "bob", "helo").await;
        let id = int_field(&sent, "id");
        let path = format!("/messages/{id}");
        json_ok(
            b.patch_json(&path, &alice.token, &json!({"content": "hello"}))
                .await,
        )
        .await;
        let reaction = json!({"emoji": "👋"});
        json_ok(
            a.put_json(&format!("{path}/reaction"), &bob.token, &reaction)
                .await,
        )
        .await;
        for ws in [&mut alice_a, &mut bob_b] {
            // Sent over REST, so both parties' sockets get the message first.
            assert_private_frame(&next_frame(ws).await, "alice", "bob", "helo");
            let frame = next_frame(ws).await;
            assert_eq!(
                (&frame["type"], &frame["content"]),
                (&json!("message_updated"), &json!("hello"))
            );
            let reacted = next_frame(ws).await;
            assert_eq!(reacted["type"], "message_updated", "{reacted}");
            assert_eq!(reacted["reactions"][0]["users"], json!(["bob"]));
            assert!(int_field(&frame, "change_id") < int_field(&reacted, "change_id"));
        }

        // Group: posted on a, reacted to on b, deleted on a.
        let group = a.create_group_id(&alice, "team").await;
        json_ok(a.add_member(&alice.token, &group.to_string(), "bob").await).await;
        for ws in [&mut alice_a, &mut bob_b] {
            assert_eq!(next_frame(ws).await["type"], "member_added");
        }
        let posted = a.send_group_text(&alice, group, "lunch?").await;
        let group_path = format!("/messages/{}", int_field(&posted, "id"));
        let yes = json!({"emoji": "👍"});
        json_ok(
            b.put_json(&format!("{group_path}/reaction"), &bob.token, &yes)
                .await,
        )
        .await;
        json_ok(a.delete(&group_path, &alice.token).await).await;
        for ws in [&mut alice_a, &mut bob_b] {
            assert_group_frame(&next_frame(ws).await, group, "alice", "lunch?");
            let reacted = next_frame(ws).await;
            assert_eq!(
                (&reacted["type"], &reacted["group_id"]),
                (&json!("message_updated"), &json!(group))
            );
            assert_eq!(reacted["reactions"][0]["emoji"], "👍");
            let tombstone = next_frame(ws).await;
            assert_eq!(
                (&tombstone["deleted"], &tombstone["content"]),
                (&json!(true), &json!(""))
            );
        }
    }
);

cluster_test!(
    messages_sent_on_different_nodes_reach_each_socket_in_id_order,
    3,
    |cluster| async move {
        let [a, b, c] = &cluster.nodes[..] else {
            unreachable!("three nodes")
        };
        let alice = a.create_user("alice").await;
        let bob = a.create_user("bob").await;
        let mut watchers = vec![
            a.ws_connect(&bob.token).await,
            b.ws_connect(&bob.token).await,
            c.ws_connect(&alice.token).await,
        ];
        const EACH: usize = 20;
        // Both write at once through different nodes.
        let sends = [(a, &alice, "bob"), (b, &bob, "alice"), (c, &alice, "bob")].map(
            |(node, from, to)| async move {
                for n in 0..EACH {
                    node.send_text(from, to, &format!("{} {n}", from.username))
                        .await;
                }
            },
        );
        futures_util::future::join_all(sends).await;
        for ws in &mut watchers {
            let mut ids = Vec::new();
            // bob hears all 60 (he sent 20); alice's socket on c did not send.
            while ids.len() < 3 * EACH {
                ids.push(int_field(&next_frame(ws).await, "id"));
            }
            assert_ascending(&ids, "one conversation's messages on one socket");
        }
    }
);

cluster_test!(
    presence_and_its_snapshot_cross_nodes,
    2,
    |cluster| async move {
        let [a, b] = &cluster.nodes[..] else {
            unreachable!("two nodes")
        };
        let alice = a.create_user("alice").await;
        let bob = b.create_user("bob").await;
        a.send_text(&alice, "bob", "we are contacts now").await;

        // A push of a message stored just before a socket opens may still
        // reach it (it travels through the engine), so no readiness probe.
        let mut bob_b = b
            .ws_try_connect("", Some(&bob.token))
            .await
            .expect("bob connects to node b");
        // bob's own node must have heard itself come online before alice's
        // snapshot can show him: wait until a send to him says delivered.
        wait_until_delivered_status(a, &alice, "bob").await;
        // (Her own sends may still be on their way to this socket, so no
        // readiness probe here.)
        let alice_a = a
            .ws_try_connect("", Some(&alice.token))
            .await
            .expect("alice connects to node a");
        let online = wait_for_status(&mut bob_b, "alice", "online").await;
        assert_eq!(online["user"], "alice");

        // A second socket of alice on node b learns from its snapshot that bob
        // is online.
        let mut alice_b = b
            .ws_try_connect("", Some(&alice.token))
            .await
            .expect("alice connects to node b");
        wait_for_status(&mut alice_b, "bob", "online").await;

        // alice leaves both nodes: bob hears offline once, when the last goes.
        ws_close(alice_b).await;
        ws_close(alice_a).await;
        wait_for_status(&mut bob_b, "alice", "offline").await;
    }
);

cluster_test!(
    a_node_started_later_learns_who_is_online_from_the_others,
    1,
    |cluster| async move {
        let alice = cluster.nodes[0].create_user("alice").await;
        let bob = cluster.nodes[0].create_user("bob").await;
        cluster.nodes[0].send_text(&bob, "alice", "hi").await;
        let _alice_ws = cluster.nodes[0]
            .ws_try_connect("", Some(&alice.token))
            .await
            .expect("alice connects");

        // The new node hears of alice from the first node's roster.
        cluster.add_node().await;
        let late = &cluster.nodes[1];
        wait_until_delivered_status(late, &bob, "alice").await;
        let mut bob_ws = late
            .ws_try_connect("", Some(&bob.token))
            .await
            .expect("bob connects to the new node");
        wait_for_status(&mut bob_ws, "alice", "online").await;
    }
);

cluster_test!(
    a_password_change_or_logout_on_one_node_holds_on_every_node,
    3,
    |cluster| async move {
        let [a, b, c] = &cluster.nodes[..] else {
            unreachable!("three nodes")
        };
        let alice = a.create_user("alice").await;
        let second = b.login_token("alice", &alice.password).await;
        // Each node has checked (and cached) the token before the change.
        for node in [a, b, c] {
            json_ok(node.get("/groups", &alice.token).await).await;
        }
        let mut on_b = b.ws_connect(&alice.token).await;
        let mut on_c = c.ws_connect(&second).await;

        let change =
            json!({"current_password": alice.password, "new_password": "brand new password"});
        json_ok(a.post_json("/auth/password", &alice.token, &change).await).await;
        assert_eq!(
            wait_closed(&mut on_b, "alice's socket on node b").await,
            Some(1000)
        );
        assert_eq!(
            wait_closed(&mut on_c, "alice's socket on node c").await,
            Some(1000)
        );
        for node in [b, c] {
            assert_error(node.get("/groups", &alice.token).await, 401).await;
        }

        // A logout on node a refuses that token on node c too.
        let fresh = a.login_token("alice", "brand new password").await;
        json_ok(c.get("/groups", &fresh).await).await;
        let response = a.post_raw("/auth/logout", &fresh, None, "").await;
        assert_eq!(response.status().as_u16(), 204);
        let fresh = &fresh;
        eventually("node c refusing a logged-out token", move || async move {
            (c.get("/groups", fresh).await.status().as_u16() == 401).then_some(())
        })
        .await;
    }
);

cluster_test!(
    a_devices_sockets_on_any_node_count_and_its_deletion_closes_them_all,
    3,
    |cluster| async move {
        let [a, b, c] = &cluster.nodes[..] else {
            unreachable!("three nodes")
        };
        let alice = a.create_user("alice").await;
        json_ok(
            a.register_device(&alice.token, &json!({"device_id": "phone"}))
                .await,
        )
        .await;
        let mut on_b = b
            .ws_connect_query("device_id=phone", Some(&alice.token))
            .await;
        let on_c = c
            .ws_connect_query("device_id=phone", Some(&alice.token))
            .await;
        // Node a has no socket of the device, yet lists it as logged in.
        a.poll_device(
            &alice.token,
            "phone",
            "login_status true on node a",
            |entry| entry["login_status"] == true,
        )
        .await;

        // One of the two sockets closing leaves the device logged in.
        ws_close(on_c).await;
        tokio::time::sleep(QUIET).await;
        let entry = a.device_entry(&alice.token, "phone").await.expect("listed");
        assert_eq!(
            entry["login_status"], true,
            "still bound on node b: {entry}"
        );

        let mut again_c = c
            .ws_connect_query("device_id=phone", Some(&alice.token))
            .await;
        let response = a.delete_device(&alice.token, "phone").await;
        assert_eq!(response.status().as_u16(), 204);
        for (ws, what) in [
            (&mut on_b, "the device's socket on node b"),
            (&mut again_c, "the device's socket on node c"),
        ] {
            assert_eq!(wait_closed(ws, what).await, Some(1000));
        }
        assert!(a.device_entry(&alice.token, "phone").await.is_none());
    }
);

cluster_test!(
    an_engine_restart_loses_no_acked_message_and_live_delivery_resumes,
    2,
    |cluster| async move {
        let alice = cluster.nodes[0].create_user("alice").await;
        let bob = cluster.nodes[1].create_user("bob").await;
        let mut bob_ws = cluster.nodes[1].ws_connect(&bob.token).await;
        let first = cluster.nodes[0].send_text(&alice, "bob", "before").await;
        let first_id = int_field(&first, "id");
        assert_eq!(int_field(&next_frame(&mut bob_ws).await, "id"), first_id);

        cluster.engine.stop();
        // Sent while the engine is down: acked (it is in Postgres), pushed to
        // nobody; bob's sync finds it.
        let during = cluster.nodes[0].send_text(&alice, "bob", "during").await;
        let during_id = int_field(&during, "id");
        cluster.engine.restart();

        // Live delivery resumes once both nodes are back on the engine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let after_id = loop {
            let after = cluster.nodes[0].send_text(&alice, "bob", "after").await;
            let id = int_field(&after, "id");
            // Pushes held back during the outage may come first.
            let mut pushed = false;
            while let Some(frame) = ws_try_recv(&mut bob_ws, Duration::from_millis(300)).await {
                pushed |= frame["type"] == "message" && int_field(&frame, "id") == id;
            }
            if pushed {
                break id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "live delivery did not resume after the engine restart"
            );
        };
        let (replayed, _) = ws_sync(&mut bob_ws, first_id).await;
        let ids = ids_of(&replayed);
        assert!(
            ids.contains(&during_id),
            "the message sent during the outage is replayed: {ids:?}"
        );
        assert!(
            ids.contains(&after_id),
            "the replay holds everything since: {ids:?}"
        );
        let history = cluster.nodes[1].history_ids(&bob.token, "alice", "").await;
        assert!(history.contains(&during_id) && history.contains(&first_id));
    }
);

/// Two `parley` child processes on one engine; the one holding both
/// users' sockets is killed with SIGKILL mid-stream.
async fn a_killed_node_loses_no_acked_message_and_its_client_syncs_gaplessly_elsewhere(
    kind: EngineKind,
    test: &str,
) {
    let Some(mut fixture) = crate::faults::Fixture::new(Backend::Postgres, test).await else {
        return;
    };
    let engine = EngineServer::start(kind);
    let cluster_url = match engine.url() {
        EngineUrl::Redis(url) | EngineUrl::Nats(url) => url,
    };
    fixture.env.push(("PARLEY_CLUSTER", cluster_url));
    fixture
        .env
        .push(("PARLEY_HEARTBEAT_INTERVAL", "200ms".into()));
    fixture.env.push(("PARLEY_CLIENT_TIMEOUT", "3s".into()));
    let mut doomed = fixture.start().await;
    let survivor = fixture.start().await;
    let alice = doomed.app.create_user("alice").await;
    let bob = doomed.app.create_user("bob").await;
    // carol, a contact of alice's on the other node, watches her presence.
    let carol = survivor.app.create_user("carol").await;
    survivor.app.send_text(&carol, "alice", "hello").await;
    // (That message may still be on its way to these sockets: no probe.)
    let mut carol_ws = survivor
        .app
        .ws_try_connect("", Some(&carol.token))
        .await
        .expect("carol connects");
    let mut alice_ws = doomed
        .app
        .ws_try_connect("", Some(&alice.token))
        .await
        .expect("alice connects");
    wait_for_status(&mut carol_ws, "alice", "online").await;
    let mut bob_ws = doomed.app.ws_connect(&bob.token).await;

    // Acked one by one, then a burst whose acks are still coming when the
    // node dies.
    let mut acked = Vec::new();
    for n in 0..10 {
        let ack = ws_send_until_ack(
            &mut alice_ws,
            &socket_message("bob", &format!("m{n}"), &format!("c{n}")),
        )
        .await;
        acked.push(int_field(&ack, "id"));
    }
    for n in 10..40 {
        ws_send(
            &mut alice_ws,
            &socket_message("bob", &format!("m{n}"), &format!("c{n}")),
        )
        .await;
    }
    while let Some(frame) = ws_try_recv(&mut alice_ws, Duration::from_millis(30)).await {
        if frame["type"] == "ack" {
            acked.push(int_field(&frame, "id"));
        }
    }
    let mut live = Vec::new();
    while let Some(frame) = ws_try_recv(&mut bob_ws, Duration::from_millis(30)).await {
        if frame["type"] == "message" {
            live.push(int_field(&frame, "id"));
        }
    }
    doomed.kill_9();
    assert!(acked.len() >= 10, "the acks before the kill: {acked:?}");

    // bob reconnects to the surviving node and syncs from the last message
    // he saw.
    let since = live.last().copied().unwrap_or(0);
    let mut bob_again = survivor.app.ws_connect(&bob.token).await;
    let (replayed, _) = ws_sync(&mut bob_again, since).await;
    let replayed = ids_of(&replayed);
    assert_ascending(&replayed, "the replay after the kill");
    assert!(
        replayed.iter().all(|id| *id > since),
        "nothing already seen live comes again: {replayed:?} after {since}"
    );
    let seen: HashSet<i64> = live.iter().chain(&replayed).copied().collect();
    let missing: Vec<i64> = acked
        .iter()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acked but never seen by bob: {missing:?}"
    );
    let history: HashSet<i64> = survivor
        .app
        .history_ids(&bob.token, "alice", "limit=100")
        .await
        .into_iter()
        .collect();
    assert!(
        acked.iter().all(|id| history.contains(id)),
        "every acked message is stored"
    );
    // The dead node's users go offline once it has been silent for the
    // client timeout (3 s here).
    wait_for_status(&mut carol_ws, "alice", "offline").await;
    drop(engine);
}

#[actix_web::test]
async fn a_killed_node_loses_no_acked_message_and_its_client_syncs_gaplessly_elsewhere_redis() {
    a_killed_node_loses_no_acked_message_and_its_client_syncs_gaplessly_elsewhere(
        EngineKind::Redis,
        module_path!(),
    )
    .await;
}

#[actix_web::test]
async fn a_killed_node_loses_no_acked_message_and_its_client_syncs_gaplessly_elsewhere_nats() {
    a_killed_node_loses_no_acked_message_and_its_client_syncs_gaplessly_elsewhere(
        EngineKind::Nats,
        module_path!(),
    )
    .await;
}

#[actix_web::test]
async fn a_cluster_on_sqlite_is_refused_at_start_naming_postgres() {
    let data_dir = tempfile::tempdir().expect("a temp data dir");
    let mut config = Config::for_data_dir(data_dir.path());
    config.bind = "127.0.0.1:0".into();
    config.cluster = Some(EngineUrl::Redis("redis://127.0.0.1:1".into()));
    let refused = parley::startup::Application::build(config).await;
    let error = refused
        .err()
        .expect("a cluster on SQLite does not start")
        .to_string();
    assert!(
        error.contains("Postgres"),
        "the error names what is needed: {error}"
    );
}
