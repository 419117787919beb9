//! Orderings of events that once broke a promise of the README's
//! "Guarantees". Each test forces its ordering deterministically, by
//! completing a step inside the server process (through the chat core's
//! actors) at the moment the race needs it, rather than by timing.

use std::pin::Pin;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::FromRequest;
use parley_actors::devices::FindDevice;
use parley_actors::model::UserRef;
use parley_actors::{ask, session, Chat};
use serde_json::json;

use crate::helpers::*;

/// A WebSocket whose handshake checks (token, device) were made earlier by
/// the test; [`LateSocket::open`] then starts the session exactly as
/// `GET /ws/chat` does after those checks. The test reads what the server
/// writes to it; the client never sends anything.
struct LateSocket {
    body: BoxBody,
    /// Bytes received and not yet parsed into frames.
    unread: Vec<u8>,
}

/// A frame the server wrote to a [`LateSocket`].
#[derive(Debug)]
enum ServerFrame {
    Text(serde_json::Value),
    Close {
        code: u16,
        reason: String,
    },
    /// A ping.
    Other,
}

impl LateSocket {
    fn open(chat: &Chat, user: &TestUser, device: Option<i64>, token_generation: i64) -> Self {
        let request = actix_web::test::TestRequest::get()
            .uri("/ws/chat")
            .insert_header(("upgrade", "websocket"))
            .insert_header(("connection", "upgrade"))
            .insert_header(("sec-websocket-version", "13"))
            .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_request();
        // A client that stays connected and silent.
        let stream = futures_util::stream::pending::<
            Result<actix_web::web::Bytes, actix_web::error::PayloadError>,
        >();
        let stream: Pin<Box<dyn futures_util::Stream<Item = _>>> = Box::pin(stream);
        let mut payload = actix_web::dev::Payload::Stream { payload: stream };
        let payload = actix_web::web::Payload::from_request(&request, &mut payload)
            .into_inner()
            .expect("a payload extractor never fails");
        let user = UserRef {
            id: user.id,
            username: user.username.as_str().into(),
        };
        let response = session::serve(
            &request,
            payload,
            chat.clone(),
            user,
            device,
            token_generation,
        )
        .expect("the upgrade request is well formed");
        assert_eq!(response.status(), 101);
        LateSocket {
            body: response.into_body(),
            unread: Vec::new(),
        }
    }

    /// The next frame, or `None` if none comes within `wait`.
    async fn next_frame(&mut self, wait: Duration) -> Option<ServerFrame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Some(frame);
            }
            let chunk = futures_util::future::poll_fn(|cx| Pin::new(&mut self.body).poll_next(cx));
            match tokio::time::timeout_at(deadline, chunk).await {
                Ok(Some(Ok(bytes))) => self.unread.extend_from_slice(&bytes),
                Ok(Some(Err(error))) => panic!("the socket's stream failed: {error}"),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Takes one whole frame off `unread` (server frames are unmasked).
    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let [first, second, ..] = self.unread[..] else {
            return None;
        };
        let (header, len) = match second & 0x7f {
            126 => (
                4,
                u16::from_be_bytes(self.unread.get(2..4)?.try_into().ok()?) as usize,
            ),
            127 => (
                10,
                u64::from_be_bytes(self.unread.get(2..10)?.try_into().ok()?) as usize,
            ),
            len => (2, len as usize),
        };
        let body = self.unread.get(header..header + len)?.to_vec();
        self.unread.drain(..header + len);
        Some(match first & 0x0f {
            0x1 => ServerFrame::Text(serde_json::from_slice(&body).expect("text frames are JSON")),
            0x8 => ServerFrame::Close {
                code: u16::from_be_bytes([body[0], body[1]]),
                reason: String::from_utf8_lossy(&body[2..]).into_owned(),
            },
            _ => ServerFrame::Other,
        })
    }

    /// Reads until the server closes the socket; returns the close reason.
    async fn closed_with(&mut self) -> (u16, String) {
        self.read_until_closed().await.1
    }

    /// Reads until the server closes the socket; returns the ids of the
    /// messages written before the close, and the close reason.
    async fn read_until_closed(&mut self) -> (Vec<i64>, (u16, String)) {
        let mut messages = Vec::new();
        while let Some(frame) = self.next_frame(WAIT).await {
            match frame {
                ServerFrame::Text(text) if text["type"] == "message" => {
                    messages.push(int_field(&text, "id"));
                }
                ServerFrame::Close { code, reason } => return (messages, (code, reason)),
                ServerFrame::Text(_) | ServerFrame::Other => {}
            }
        }
        panic!("the server did not close the socket within {WAIT:?}");
    }

    /// Asserts the server writes no close frame within [`QUIET`].
    async fn assert_stays_open(&mut self) {
        while let Some(frame) = self.next_frame(QUIET).await {
            assert!(
                !matches!(frame, ServerFrame::Close { .. }),
                "the server closed the socket: {frame:?}"
            );
        }
    }
}

fn chat_of(app: &TestApp) -> &Chat {
    app.chat.as_ref().expect("the server runs in this process")
}

/// The password generation a handshake would have checked alice's token against.
async fn token_generation(chat: &Chat, user: &TestUser) -> i64 {
    chat.account(user.id)
        .await
        .expect("the account can be read")
        .expect("the account exists")
        .token_generation
}

api_test!(
    a_socket_whose_token_was_checked_before_a_password_change_is_closed,
    |app| async move {
        let chat = chat_of(&app);
        let alice = app.create_user("alice").await;
        // The handshake checks alice's token...
        let checked = token_generation(chat, &alice).await;
        // ...then the password change commits and closes her sockets...
        let change =
            json!({"current_password": alice.password, "new_password": "brand new password"});
        let fresh = json_ok(app.post_json("/auth/password", &alice.token, &change).await).await;
        // ...and only then does the socket register.
        let mut late = LateSocket::open(chat, &alice, None, checked);
        assert_eq!(late.closed_with().await, (1000, "password changed".into()));

        // A socket opened with the new token's generation stays.
        let current = token_generation(chat, &alice).await;
        assert_ne!(current, checked, "{fresh}");
        LateSocket::open(chat, &alice, None, current)
            .assert_stays_open()
            .await;
    }
);

api_test!(
    a_socket_whose_token_was_checked_before_the_account_was_deleted_is_closed,
    |app| async move {
        let chat = chat_of(&app);
        let alice = app.create_user("alice").await;
        let checked = token_generation(chat, &alice).await;
        let response = app.delete_account(&alice.token, &alice.password).await;
        assert!(response.status().is_success(), "{response:?}");
        let mut late = LateSocket::open(chat, &alice, None, checked);
        assert_eq!(late.closed_with().await, (1000, "account deleted".into()));
    }
);

api_test!(
    a_socket_bound_to_a_device_removed_during_its_handshake_is_closed,
    |app| async move {
        let chat = chat_of(&app);
        let alice = app.create_user("alice").await;
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "phone"}))
                .await,
        )
        .await;
        let generation = token_generation(chat, &alice).await;
        // The handshake finds the device...
        let find = |device_id: &str| FindDevice {
            owner: alice.id,
            device_id: device_id.to_string(),
        };
        let phone = ask(chat.devices(), find("phone"))
            .await
            .expect("alice's phone");
        // ...the device is removed (no socket is bound to it yet)...
        let removed = app.delete_device(&alice.token, "phone").await;
        assert!(removed.status().is_success(), "{removed:?}");
        // ...and then the socket binds to it.
        let mut late = LateSocket::open(chat, &alice, Some(phone), generation);
        assert_eq!(late.closed_with().await, (1000, "device removed".into()));

        // Registered again, the device binds sockets as before.
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "phone"}))
                .await,
        )
        .await;
        let phone = ask(chat.devices(), find("phone"))
            .await
            .expect("alice's phone");
        let mut bound = LateSocket::open(chat, &alice, Some(phone), generation);
        bound.assert_stays_open().await;
        app.poll_device(
            &alice.token,
            "phone",
            "the phone shows logged in",
            |device| device["login_status"] == true,
        )
        .await;
    }
);

api_test!(
    a_message_is_acked_delivered_only_if_a_socket_of_the_recipient_took_it,
    config(|c| c.socket_queue = 4),
    |app| async move {
        let chat = chat_of(&app);
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let generation = token_generation(chat, &bob).await;
        // Bob's socket registers on its first poll, then never reads: its
        // queue of 4 fills, and the push that finds it full closes it (1008).
        let mut bob_socket = LateSocket::open(chat, &bob, None, generation);
        assert!(bob_socket.next_frame(Duration::ZERO).await.is_none());

        let mut acks = Vec::new();
        for i in 0..20 {
            let sent = app.send_text(&alice, "bob", &format!("m{i}")).await;
            acks.push((
                int_field(&sent, "id"),
                str_field(&sent, "status").to_string(),
            ));
        }
        let (got, close) = bob_socket.read_until_closed().await;
        assert_eq!(close.0, 1008, "{close:?}");
        let acked_delivered: Vec<i64> = acks
            .iter()
            .filter(|(_, status)| status == "delivered")
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(acked_delivered, got, "acks: {acks:?}");
        assert!(got.len() < acks.len(), "the queue overflowed: {acks:?}");
        // The rows say the same as the acks.
        let history = json_ok(app.private_history(&alice.token, "bob", "limit=50").await).await;
        let stored: Vec<(i64, String)> = array(&history, "history")
            .iter()
            .map(|m| (int_field(m, "id"), str_field(m, "status").to_string()))
            .collect();
        let mut acked = acks.clone();
        acked.sort();
        let mut stored = stored;
        stored.sort();
        assert_eq!(stored, acked);
    }
);

api_test!(
    a_group_message_is_acked_delivered_only_if_another_member_can_take_it,
    config(|c| c.socket_queue = 4),
    |app| async move {
        let chat = chat_of(&app);
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let generation = token_generation(chat, &bob).await;
        let mut bob_socket = LateSocket::open(chat, &bob, None, generation);
        assert!(bob_socket.next_frame(Duration::ZERO).await.is_none());
        let mut alice_ws = app.ws_connect(&alice.token).await;
        // Bob's only socket overflows and is closing: from then on no
        // member but the sender can take the group's messages.
        let mut statuses = Vec::new();
        while statuses.last().map(String::as_str) != Some("sent") {
            assert!(
                statuses.len() < 20,
                "no ack turned 'sent' as bob's only socket overflowed: {statuses:?}"
            );
            let client_id = format!("fill-{}", statuses.len());
            let frame = group_socket_message(group, "fill", &client_id);
            let ack = ws_send_and_recv(&mut alice_ws, &frame).await;
            statuses.push(str_field(&ack, "status").to_string());
        }
        let frame = group_socket_message(group, "after", "after");
        assert_ack(
            &ws_send_and_recv(&mut alice_ws, &frame).await,
            "after",
            "sent",
        );
        let (got, close) = bob_socket.read_until_closed().await;
        assert_eq!(close.0, 1008, "{close:?}");
        let delivered = statuses
            .iter()
            .filter(|status| *status == "delivered")
            .count();
        assert!(got.len() <= delivered, "{got:?} {statuses:?}");
    }
);

/// Another client of the database holding the messages table's write lock,
/// so that the server's next message commit waits until [`release`].
///
/// [`release`]: MessageWriteLock::release
enum MessageWriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl MessageWriteLock {
    async fn take(app: &TestApp) -> Self {
        use sqlx::{Connection, Executor};
        let url = app.database_url();
        match app.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("open the SQLite file");
                conn.execute("BEGIN IMMEDIATE")
                    .await
                    .expect("take SQLite's write lock");
                MessageWriteLock::Sqlite(conn)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .expect("connect to Postgres");
                conn.execute("BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE")
                    .await
                    .expect("lock the messages table");
                MessageWriteLock::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        use sqlx::Executor;
        match self {
            MessageWriteLock::Sqlite(mut conn) => conn.execute("ROLLBACK").await.map(|_| ()),
            MessageWriteLock::Postgres(mut conn) => conn.execute("ROLLBACK").await.map(|_| ()),
        }
        .expect("release the lock");
    }
}

/// Longer than several idle periods of the room below, and shorter than
/// SQLite's busy timeout (2 s), after which the commit would fail instead.
const COMMIT_HELD_FOR: Duration = Duration::from_millis(1200);

api_test!(
    a_group_post_whose_commit_outlasts_the_rooms_idle_time_is_still_pushed_live,
    config(|c| c.room_idle = Duration::from_millis(100)),
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        // The room accepts the post and hands it to the writer, whose commit
        // then waits while the room has been idle for twelve idle periods.
        let lock = MessageWriteLock::take(&app).await;
        let rooms_running = || chat_of(&app).metrics().rooms_running.get();
        let (posted, ()) = tokio::join!(app.send_group_text(&alice, group, "held"), async {
            tokio::time::sleep(COMMIT_HELD_FOR / 2).await;
            // Meanwhile the group is used again: by the same room.
            json_ok(app.group_members(&bob.token, &group.to_string()).await).await;
            assert_eq!(rooms_running(), 1, "one room for the group");
            tokio::time::sleep(COMMIT_HELD_FOR / 2).await;
            lock.release().await;
        });
        let pushed = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(pushed["id"], posted["id"], "{pushed}");

        // The room stops once idle with nothing owed, and starts again.
        let deadline = tokio::time::Instant::now() + WAIT;
        while rooms_running() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the idle room never stopped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = app.send_group_text(&alice, group, "later").await;
        let pushed = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(pushed["id"], again["id"], "{pushed}");
    }
);
