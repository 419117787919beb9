//! GET /ws/chat: the handshake, pushes of REST sends, socket sends and
//! acks, bursts, bad frames, presence and sync.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Sends a message over `ws` and returns its ack.
async fn send_over_socket(
    ws: &mut WsStream,
    recipient: &str,
    content: &str,
    client_id: &str,
) -> Value {
    ws_send(ws, &socket_message(recipient, content, client_id)).await;
    ws_recv_skipping_presence(ws).await
}

api_test!(a_bearer_header_opens_a_working_socket, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let mut ws = app.ws_connect_query("", Some(&alice.token)).await;
    let ack = send_over_socket(&mut ws, "bob", "hello", "c1").await;
    assert_ack(&ack, "c1", "sent");
});

api_test!(
    a_token_query_parameter_opens_a_working_socket,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut ws = app
            .ws_connect_query(&format!("token={}", alice.token), None)
            .await;
        let ack = send_over_socket(&mut ws, "bob", "hello", "c1").await;
        assert_ack(&ack, "c1", "sent");
        // The message was stored as alice's.
        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_private_message(&history[0], "alice", "bob", "hello");
    }
);

api_test!(
    a_missing_or_bad_token_refuses_the_handshake_with_401,
    |app| async move {
        let alice = app.create_user("alice").await;
        let mut tampered = alice.token.clone();
        tampered.push('x');
        let cases: [(String, Option<&str>); 5] = [
            (String::new(), None),
            (String::new(), Some("not-a-jwt")),
            (String::new(), Some(&tampered)),
            ("token=not-a-jwt".to_string(), None),
            (format!("token={tampered}"), None),
        ];
        for (query, bearer) in &cases {
            let refused = app.ws_try_connect(query, *bearer).await;
            assert_handshake_status(refused, 401);
            let authorization = bearer.map(|token| format!("Bearer {token}"));
            let response = app.ws_refusal(query, authorization.as_deref()).await;
            assert_error(response, 401).await;
        }
    }
);

api_test!(
    a_rest_message_is_pushed_to_the_recipient_and_to_the_senders_sockets,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let sent = json_ok(
            app.send_private(
                &alice.token,
                &json!({"recipient": "BOB", "content": "pushed"}),
            )
            .await,
        )
        .await;
        assert_private_message(&sent, "alice", "bob", "pushed");
        assert_eq!(
            str_field(&sent, "status"),
            "delivered",
            "bob had a socket open: {sent}"
        );
        let id = int_field(&sent, "id");

        let to_bob = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_private_frame(&to_bob, "alice", "bob", "pushed");
        assert_eq!(int_field(&to_bob, "id"), id);
        assert_eq!(to_bob["timestamp"], sent["timestamp"]);
        assert_eq!(str_field(&to_bob, "status"), "delivered");

        let to_alice = ws_recv_skipping_presence(&mut alice_ws).await;
        assert_private_frame(&to_alice, "alice", "bob", "pushed");
        assert_eq!(int_field(&to_alice, "id"), id);

        // Exactly once each.
        ws_assert_quiet(&mut bob_ws, QUIET, "bob got the message once").await;
        ws_assert_quiet(&mut alice_ws, QUIET, "alice got the message once").await;

        // The history remembers that it was delivered.
        let history = json_ok(app.private_history(&bob.token, "alice", "").await).await;
        assert_eq!(int_field(&history[0], "id"), id);
        assert_eq!(str_field(&history[0], "status"), "delivered", "{history}");
    }
);

api_test!(
    every_socket_of_the_recipient_gets_the_message,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_phone = app.ws_connect(&bob.token).await;
        let mut bob_laptop = app.ws_connect(&bob.token).await;
        let sent = app.send_text(&alice, "bob", "to both").await;
        for ws in [&mut bob_phone, &mut bob_laptop] {
            let frame = ws_recv_skipping_presence(ws).await;
            assert_private_frame(&frame, "alice", "bob", "to both");
            assert_eq!(frame["id"], sent["id"]);
        }
    }
);

api_test!(
    message_and_content_types_reach_the_socket,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        json_ok(
        app.send_private(
            &alice.token,
            &json!({"recipient": "bob", "content": "/files/x", "message_type": "image", "content_type": "image/png"}),
        )
        .await,
    )
    .await;
        let frame = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(frame["type"], "message", "{frame}");
        assert_eq!(frame["message_type"], "image", "{frame}");
        assert_eq!(frame["content_type"], "image/png", "{frame}");
        // Alice's socket sees her REST send too.
        ws_recv_skipping_presence(&mut alice_ws).await;

        ws_send(
            &mut alice_ws,
            &json!({
                "type": "message", "recipient": "bob", "content": "report",
                "message_type": "file", "content_type": "application/pdf", "client_id": "c-file",
            }),
        )
        .await;
        assert_ack(
            &ws_recv_skipping_presence(&mut alice_ws).await,
            "c-file",
            "delivered",
        );
        let frame = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(frame["message_type"], "file", "{frame}");
        assert_eq!(frame["content_type"], "application/pdf", "{frame}");
    }
);

api_test!(
    a_socket_message_is_acked_and_reaches_the_recipient_and_the_senders_other_sockets,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_sender = app.ws_connect(&alice.token).await;
        let mut alice_other = app.ws_connect(&alice.token).await;

        let ack = send_over_socket(&mut alice_sender, "Bob", "over the socket", "c1").await;
        let id = assert_ack(&ack, "c1", "delivered");

        let to_bob = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_private_frame(&to_bob, "alice", "bob", "over the socket");
        assert_eq!(int_field(&to_bob, "id"), id);
        assert_eq!(to_bob["timestamp"], ack["timestamp"]);

        let to_other = ws_recv_skipping_presence(&mut alice_other).await;
        assert_private_frame(&to_other, "alice", "bob", "over the socket");
        assert_eq!(int_field(&to_other, "id"), id);

        ws_assert_quiet(
            &mut alice_sender,
            QUIET,
            "the sending socket gets only the ack",
        )
        .await;

        // It was stored.
        let history = json_ok(app.private_history(&bob.token, "alice", "").await).await;
        let history = array(&history, "history");
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(int_field(&history[0], "id"), id);
        assert_private_message(&history[0], "alice", "bob", "over the socket");
    }
);

api_test!(
    an_ack_says_sent_when_the_recipient_has_no_socket,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let ack = send_over_socket(&mut alice_ws, "bob", "are you there?", "c1").await;
        let id = assert_ack(&ack, "c1", "sent");
        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_eq!(int_field(&history[0], "id"), id);
        assert_eq!(str_field(&history[0], "status"), "sent");
    }
);

api_test!(
    a_resent_client_id_is_acked_again_and_stored_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let first = assert_ack(
            &send_over_socket(&mut alice_ws, "bob", "once", "dup-1").await,
            "dup-1",
            "sent",
        );
        let again = send_over_socket(&mut alice_ws, "bob", "once", "dup-1").await;
        assert_eq!(again["type"], "ack", "{again}");
        assert_eq!(str_field(&again, "client_id"), "dup-1");
        assert_eq!(
            int_field(&again, "id"),
            first,
            "the resend is acked with the same id"
        );
        let other = assert_ack(
            &send_over_socket(&mut alice_ws, "bob", "once", "dup-2").await,
            "dup-2",
            "sent",
        );
        assert_ne!(other, first, "another client_id is another message");

        let ids = app.history_ids(&alice.token, "bob", "").await;
        assert_eq!(ids, vec![first, other], "stored once per client_id");
    }
);

api_test!(
    a_burst_of_200_socket_messages_all_arrive_in_id_order_and_are_all_acked,
    |app| async move {
        const COUNT: usize = 200;
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let alice_ws = app.ws_connect(&alice.token).await;
        let (mut alice_tx, mut alice_rx) = alice_ws.split();

        let send_all = async {
            for i in 0..COUNT {
                let frame = socket_message("bob", &format!("burst-{i}"), &format!("c{i}"));
                alice_tx
                    .feed(Message::text(frame.to_string()))
                    .await
                    .expect("queue a frame");
            }
            alice_tx.flush().await.expect("flush the burst");
        };
        let read_acks = async {
            let mut acks = BTreeMap::new();
            while acks.len() < COUNT {
                let frame = ws_recv_skipping_presence(&mut alice_rx).await;
                assert_eq!(
                    frame["type"], "ack",
                    "the sending socket gets acks only: {frame}"
                );
                let client_id = str_field(&frame, "client_id").to_string();
                let id = int_field(&frame, "id");
                assert!(
                    acks.insert(client_id.clone(), id).is_none(),
                    "{client_id} acked twice"
                );
            }
            acks
        };
        let read_messages = async {
            let mut received = Vec::with_capacity(COUNT);
            while received.len() < COUNT {
                let frame = ws_recv_skipping_presence(&mut bob_ws).await;
                assert_eq!(frame["type"], "message", "{frame}");
                assert_eq!(frame["sender"], "alice", "{frame}");
                received.push((
                    int_field(&frame, "id"),
                    str_field(&frame, "content").to_string(),
                ));
            }
            received
        };
        let ((), acks, received) = tokio::join!(send_all, read_acks, read_messages);

        let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "bob got the burst in ascending id order: {ids:?}"
        );
        let contents: BTreeSet<&str> = received
            .iter()
            .map(|(_, content)| content.as_str())
            .collect();
        assert_eq!(
            contents.len(),
            COUNT,
            "all {COUNT} distinct messages arrived"
        );
        for i in 0..COUNT {
            let content = format!("burst-{i}");
            let delivered = received
                .iter()
                .find(|(_, c)| *c == content)
                .unwrap_or_else(|| panic!("{content} did not reach bob"));
            assert_eq!(
                acks.get(&format!("c{i}")),
                Some(&delivered.0),
                "ack id of c{i} matches the delivered id"
            );
        }
        let stored = app
            .history_ids(&alice.token, "bob", "after=0&limit=500")
            .await;
        assert_eq!(stored, ids, "the stored conversation is the burst");
        ws_assert_quiet(&mut bob_ws, QUIET, "nothing beyond the burst").await;
    }
);

api_test!(
    a_malformed_frame_gets_an_error_frame_and_the_socket_stays_usable,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut ws = app.ws_connect(&alice.token).await;

        for bad in [
            "this is not json",
            "{\"type\": \"message\", ",
            "[1, 2, 3]",
            "42",
            r#"{"recipient": "bob", "content": "no type"}"#,
            r#"{"type": "teleport"}"#,
            r#"{"type": "message", "content": "no recipient"}"#,
            r#"{"type": "message", "recipient": 7, "content": "recipient of the wrong type"}"#,
        ] {
            ws_send_text(&mut ws, bad).await;
            let frame = ws_recv_skipping_presence(&mut ws).await;
            assert_eq!(
                frame["type"], "error",
                "{bad:?} should get an error frame, got {frame}"
            );
            assert_error_frame(&frame, 400);
        }

        let ack = send_over_socket(&mut ws, "bob", "still here", "after-errors").await;
        assert_ack(&ack, "after-errors", "sent");
        let ids = app.history_ids(&alice.token, "bob", "").await;
        assert_eq!(ids.len(), 1, "only the good frame was stored: {ids:?}");
    }
);

api_test!(
    an_invalid_socket_message_gets_an_error_frame_with_its_client_id,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut ws = app.ws_connect(&alice.token).await;

        let cases = [
            (
                json!({"type": "message", "recipient": "bob", "client_id": "no-content"}),
                400,
                "no-content",
            ),
            (socket_message("bob", "", "empty"), 400, "empty"),
            (
                socket_message("bob", &"a".repeat(8193), "too-long"),
                400,
                "too-long",
            ),
            (socket_message("alice", "self", "to-self"), 400, "to-self"),
            (
                socket_message("nobody", "hello?", "unknown"),
                404,
                "unknown",
            ),
        ];
        for (frame, code, client_id) in &cases {
            ws_send(&mut ws, frame).await;
            let reply = ws_recv_skipping_presence(&mut ws).await;
            assert_error_frame(&reply, *code);
            assert_eq!(
                reply["client_id"], *client_id,
                "the error names the client_id: {reply}"
            );
        }
        let ack = send_over_socket(&mut ws, "bob", "fine", "ok").await;
        assert_ack(&ack, "ok", "sent");
        assert_eq!(app.history_ids(&alice.token, "bob", "").await.len(), 1);
    }
);

api_test!(
    presence_reaches_a_contact_when_the_first_socket_opens_and_the_last_closes,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        app.send_text(&alice, "bob", "we are contacts now").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let alice_first = app.ws_connect(&alice.token).await;
        let online = ws_recv(&mut bob_ws).await;
        assert_eq!(online["type"], "status", "{online}");
        assert_eq!(online["user"], "alice", "{online}");
        assert_eq!(online["status"], "online", "{online}");
        assert_recent(&online["timestamp"], "status timestamp");

        // A second socket is not a second arrival...
        let alice_second = app.ws_connect(&alice.token).await;
        assert!(
            ws_try_recv(&mut bob_ws, QUIET).await.is_none(),
            "no second online"
        );
        // ...and closing one of two is not a departure.
        ws_close(alice_first).await;
        assert!(
            ws_try_recv(&mut bob_ws, QUIET).await.is_none(),
            "no offline while a socket is open"
        );

        ws_close(alice_second).await;
        let offline = ws_recv(&mut bob_ws).await;
        assert_eq!(offline["type"], "status", "{offline}");
        assert_eq!(offline["user"], "alice", "{offline}");
        assert_eq!(offline["status"], "offline", "{offline}");
        assert_recent(&offline["timestamp"], "status timestamp");
    }
);

api_test!(
    presence_names_the_user_as_registered_and_skips_strangers,
    |app| async move {
        let alice = app.create_user("Alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        app.send_text(&bob, "alice", "hi").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;

        let alice_ws = app.ws_connect(&alice.token).await;
        let online = ws_recv(&mut bob_ws).await;
        assert_eq!(online["type"], "status", "{online}");
        assert_eq!(online["user"], "Alice", "{online}");
        assert_eq!(online["status"], "online", "{online}");
        ws_close(alice_ws).await;
        let offline = ws_recv(&mut bob_ws).await;
        assert_eq!(offline["status"], "offline", "{offline}");

        assert!(
            ws_try_recv(&mut carol_ws, QUIET).await.is_none(),
            "carol shares nothing with alice and hears nothing"
        );
    }
);

api_test!(
    sync_replays_messages_after_the_cursor_then_says_synced,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let m1 = int_field(&app.send_text(&alice, "bob", "one").await, "id");
        app.send_text(&carol, "alice", "not bob's").await;
        let m2 = int_field(&app.send_text(&bob, "alice", "two").await, "id");
        let m3 = int_field(&app.send_text(&alice, "bob", "three").await, "id");
        app.send_text(&alice, "carol", "not bob's either").await;

        let mut bob_ws = app.ws_connect(&bob.token).await;

        ws_send(&mut bob_ws, &json!({"type": "sync", "since": m1})).await;
        let first = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_private_frame(&first, "bob", "alice", "two");
        assert_eq!(int_field(&first, "id"), m2);
        let second = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_private_frame(&second, "alice", "bob", "three");
        assert_eq!(int_field(&second, "id"), m3);
        let synced = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(synced["type"], "synced", "{synced}");
        assert_eq!(int_field(&synced, "last_id"), m3, "{synced}");

        ws_send(&mut bob_ws, &json!({"type": "sync", "since": 0})).await;
        let mut replayed = Vec::new();
        loop {
            let frame = ws_recv_skipping_presence(&mut bob_ws).await;
            if frame["type"] == "synced" {
                assert_eq!(int_field(&frame, "last_id"), m3, "{frame}");
                break;
            }
            assert_eq!(frame["type"], "message", "{frame}");
            replayed.push(int_field(&frame, "id"));
        }
        assert_eq!(replayed, vec![m1, m2, m3]);

        let nothing_new = m3 + 100;
        ws_send(&mut bob_ws, &json!({"type": "sync", "since": nothing_new})).await;
        let synced = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(synced["type"], "synced", "{synced}");
        assert_eq!(
            int_field(&synced, "last_id"),
            nothing_new,
            "with nothing replayed, last_id = since"
        );
    }
);
