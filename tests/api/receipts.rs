//! Message status and receipts: `sent` → `delivered` → `read`, by
//! `POST /messages/{id}/read` or `{"type":"read"}`; receipts to every socket
//! of the sender (and of the reader); group reads move the read cursor.

use serde_json::json;

use crate::helpers::*;

/// The `status` of message `id` in `viewer`'s conversation with `other`.
async fn status_of(app: &TestApp, viewer: &TestUser, other: &str, id: i64) -> String {
    let history = json_ok(app.private_history(&viewer.token, other, "").await).await;
    let message = array(&history, "history")
        .iter()
        .find(|m| int_field(m, "id") == id)
        .unwrap_or_else(|| panic!("message {id} is in the history: {history}"))
        .clone();
    str_field(&message, "status").to_string()
}

api_test!(
    a_private_message_goes_from_sent_to_delivered_to_read,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let sent = app.send_text(&alice, "bob", "hello").await;
        let id = int_field(&sent, "id");
        assert_eq!(str_field(&sent, "status"), "sent");
        assert_eq!(status_of(&app, &alice, "bob", id).await, "sent");

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let (replayed, _) = ws_sync(&mut bob_ws, 0).await;
        assert_eq!(str_field(&replayed[0], "status"), "delivered");
        // The history catches up shortly after the replay (it is not
        // promised by the time `synced` arrives).
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let status = status_of(&app, &alice, "bob", id).await;
            if status == "delivered" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replayed message should become delivered in history, still {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        let read = json_ok(app.mark_read(&bob.token, &id.to_string()).await).await;
        assert_eq!(read, json!({"id": id, "status": "read"}));
        assert_eq!(status_of(&app, &alice, "bob", id).await, "read");
        assert_eq!(status_of(&app, &bob, "alice", id).await, "read");

        // A message pushed to an open socket is delivered at once.
        let live = app.send_text(&alice, "bob", "live").await;
        assert_eq!(str_field(&live, "status"), "delivered");
        assert_eq!(
            status_of(&app, &bob, "alice", int_field(&live, "id")).await,
            "delivered"
        );
    }
);

api_test!(
    a_rest_read_reaches_every_socket_of_the_sender_and_of_the_reader,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let id = int_field(&app.send_text(&alice, "bob", "read me").await, "id");
        let mut alice_phone = app.ws_connect(&alice.token).await;
        let mut alice_laptop = app.ws_connect(&alice.token).await;
        let mut bob_phone = app.ws_connect(&bob.token).await;
        let mut bob_laptop = app.ws_connect(&bob.token).await;

        let read = json_ok(app.mark_read(&bob.token, &id.to_string()).await).await;
        assert_eq!(read, json!({"id": id, "status": "read"}));
        for ws in [
            &mut alice_phone,
            &mut alice_laptop,
            &mut bob_phone,
            &mut bob_laptop,
        ] {
            let receipt = ws_recv_skipping_presence(ws).await;
            assert_receipt(&receipt, id, "bob", "read");
        }
        ws_assert_all_quiet(
            &mut [
                &mut alice_phone,
                &mut alice_laptop,
                &mut bob_phone,
                &mut bob_laptop,
            ],
            QUIET,
            "one receipt per socket",
        )
        .await;
    }
);

api_test!(
    a_socket_read_reaches_every_socket_of_the_sender_and_of_the_reader,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut alice_phone = app.ws_connect(&alice.token).await;
        let mut alice_laptop = app.ws_connect(&alice.token).await;
        let mut bob_reader = app.ws_connect(&bob.token).await;
        let mut bob_other = app.ws_connect(&bob.token).await;

        // Sent over alice's phone: delivered to bob's sockets and her laptop.
        let ack = ws_send_and_recv(&mut alice_phone, &socket_message("bob", "read me", "c1")).await;
        let id = assert_ack(&ack, "c1", "delivered");
        for ws in [&mut alice_laptop, &mut bob_reader, &mut bob_other] {
            assert_eq!(int_field(&ws_recv_skipping_presence(ws).await, "id"), id);
        }

        ws_send(&mut bob_reader, &json!({"type": "read", "message_id": id})).await;
        for ws in [
            &mut alice_phone,
            &mut alice_laptop,
            &mut bob_reader,
            &mut bob_other,
        ] {
            let receipt = ws_recv_skipping_presence(ws).await;
            assert_receipt(&receipt, id, "bob", "read");
        }
        assert_eq!(status_of(&app, &alice, "bob", id).await, "read");
    }
);

api_test!(
    only_the_recipient_may_mark_a_private_message_read,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let id = int_field(&app.send_text(&alice, "bob", "for bob").await, "id");

        assert_error(app.mark_read(&alice.token, &id.to_string()).await, 403).await;
        assert_error(app.mark_read(&carol.token, &id.to_string()).await, 404).await;
        assert_error(
            app.mark_read(&bob.token, &(id + 1000).to_string()).await,
            404,
        )
        .await;
        assert_eq!(status_of(&app, &bob, "alice", id).await, "sent");

        // The same over the socket.
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let reply =
            ws_send_and_recv(&mut alice_ws, &json!({"type": "read", "message_id": id})).await;
        assert_error_frame(&reply, 403);
        let reply =
            ws_send_and_recv(&mut carol_ws, &json!({"type": "read", "message_id": id})).await;
        assert_error_frame(&reply, 404);
        let reply = ws_send_and_recv(
            &mut carol_ws,
            &json!({"type": "read", "message_id": id + 1000}),
        )
        .await;
        assert_error_frame(&reply, 404);
        // Bob has no socket open, so this is still `sent` (not delivered).
        assert_eq!(status_of(&app, &bob, "alice", id).await, "sent");
    }
);

api_test!(
    a_group_read_moves_the_cursor_lowers_unread_and_sends_no_receipt,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let m: Vec<i64> = {
            let mut ids = Vec::new();
            for i in 0..3 {
                ids.push(int_field(
                    &app.send_group_text(&alice, group, &format!("m{i}")).await,
                    "id",
                ));
            }
            ids
        };
        assert_eq!(app.unread(&bob.token, group).await, 3);
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let read = json_ok(app.mark_read(&bob.token, &m[1].to_string()).await).await;
        assert_eq!(read, json!({"id": m[1], "status": "read"}));
        assert_eq!(app.unread(&bob.token, group).await, 1);
        assert_eq!(
            app.unread(&alice.token, group).await,
            0,
            "alice's own messages"
        );

        ws_send(&mut bob_ws, &json!({"type": "read", "message_id": m[2]})).await;
        let deadline = std::time::Instant::now() + WAIT;
        while app.unread(&bob.token, group).await != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a socket read of the last message should bring unread to 0"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ws_assert_all_quiet(
            &mut [&mut alice_ws, &mut bob_ws],
            QUIET,
            "group reads send no receipt",
        )
        .await;

        // New messages from others count again; one's own do not.
        app.send_group_text(&alice, group, "new").await;
        app.send_group_text(&bob, group, "mine").await;
        assert_eq!(app.unread(&bob.token, group).await, 1);
    }
);

api_test!(
    reading_a_group_message_outside_the_group_is_404,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await;
        let id = int_field(
            &app.send_group_text(&alice, group, "members only").await,
            "id",
        );
        assert_error(app.mark_read(&bob.token, &id.to_string()).await, 404).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let reply = ws_send_and_recv(&mut bob_ws, &json!({"type": "read", "message_id": id})).await;
        assert_error_frame(&reply, 404);
    }
);
