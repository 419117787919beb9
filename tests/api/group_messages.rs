//! Group messages: REST and socket sends, fan-out to every socket of every
//! member (but not the sending socket), membership changes taking effect at
//! once, acks, validation and history paging at the edges.

use std::collections::BTreeSet;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

api_test!(
    posting_a_group_message_over_rest_returns_it_and_lists_it,
    |app| async move {
        let alice = app.create_user("Alice").await;
        let group = app.create_group_id(&alice, "g").await;
        let posted = app.send_group_text(&alice, group, "hello group").await;
        assert_has_fields(
            &posted,
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
        let id = int_field(&posted, "id");
        assert!(id > 0);
        assert_eq!(int_field(&posted, "group_id"), group);
        assert_eq!(str_field(&posted, "sender"), "Alice");
        assert_eq!(str_field(&posted, "content"), "hello group");
        assert_recent(&posted["timestamp"], "timestamp");
        assert_eq!(str_field(&posted, "message_type"), "text");
        assert_eq!(str_field(&posted, "content_type"), "text/plain");

        let typed = json_ok(
            app.post_group_message(
                &alice.token,
                &group.to_string(),
                &json!({"content": "/files/x", "message_type": "image", "content_type": "image/png"}),
            )
            .await,
        )
        .await;
        assert_eq!(str_field(&typed, "message_type"), "image");
        assert_eq!(str_field(&typed, "content_type"), "image/png");

        let history = json_ok(
            app.group_messages(&alice.token, &group.to_string(), "")
                .await,
        )
        .await;
        let history = array(&history, "group history");
        assert_eq!(history.len(), 2, "{history:?}");
        assert_has_fields(
            &history[0],
            &["id", "content", "sender", "timestamp", "message_type"],
        );
        assert_eq!(int_field(&history[0], "id"), id);
        assert_eq!(str_field(&history[0], "content"), "hello group");
        assert_eq!(str_field(&history[0], "sender"), "Alice");
        assert_eq!(history[0]["timestamp"], posted["timestamp"]);
        assert_eq!(str_field(&history[1], "message_type"), "image");
    }
);

api_test!(group_content_round_trips_exactly, |app| async move {
    let alice = app.create_user("alice").await;
    let group = app.create_group_id(&alice, "g").await;
    let posted = app.send_group_text(&alice, group, AWKWARD_CONTENT).await;
    assert_eq!(str_field(&posted, "content"), AWKWARD_CONTENT);
    let history = json_ok(
        app.group_messages(&alice.token, &group.to_string(), "")
            .await,
    )
    .await;
    assert_eq!(str_field(&history[0], "content"), AWKWARD_CONTENT);
});

api_test!(
    group_content_is_validated_like_private_content,
    |app| async move {
        let alice = app.create_user("alice").await;
        let group = app.create_group_id(&alice, "g").await.to_string();
        for content in [String::new(), "a".repeat(8193)] {
            let response = app
                .post_group_message(&alice.token, &group, &json!({"content": content}))
                .await;
            assert_error_naming(response, 400, "content").await;
        }
        assert_error_naming(
            app.post_group_message(&alice.token, &group, &json!({"message_type": "text"}))
                .await,
            400,
            "content",
        )
        .await;
        for (field, value) in [
            ("content", json!(5)),
            ("message_type", json!(1)),
            ("content_type", json!([])),
        ] {
            let mut body = json!({"content": "hi"});
            body[field] = value;
            assert_error_naming(
                app.post_group_message(&alice.token, &group, &body).await,
                400,
                field,
            )
            .await;
        }
        let long = "é".repeat(8192);
        let posted = json_ok(
            app.post_group_message(&alice.token, &group, &json!({"content": long}))
                .await,
        )
        .await;
        assert_eq!(str_field(&posted, "content"), long);
        assert_eq!(
            app.group_history_ids(&alice.token, group.parse().unwrap(), "")
                .await,
            vec![int_field(&posted, "id")],
            "only the valid message was stored"
        );
    }
);

api_test!(
    a_rest_group_message_reaches_every_socket_of_every_member_including_the_sender,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let mut sockets = vec![
            app.ws_connect(&alice.token).await,
            app.ws_connect(&alice.token).await,
            app.ws_connect(&bob.token).await,
            app.ws_connect(&bob.token).await,
            app.ws_connect(&carol.token).await,
        ];
        let outsider = app.ws_connect(&dave.token).await;

        let posted = app.send_group_text(&alice, group, "to everyone").await;
        for ws in &mut sockets {
            let frame = ws_recv_skipping_presence(ws).await;
            assert_group_frame(&frame, group, "alice", "to everyone");
            assert_eq!(frame["id"], posted["id"]);
            assert_eq!(frame["timestamp"], posted["timestamp"]);
        }
        sockets.push(outsider);
        let mut all: Vec<&mut WsStream> = sockets.iter_mut().collect();
        ws_assert_all_quiet(&mut all, QUIET, "once each, and nothing to dave").await;
    }
);

api_test!(
    a_socket_group_message_is_acked_and_reaches_every_other_socket_of_every_member,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let mut sending = app.ws_connect(&alice.token).await;
        let mut others = vec![
            app.ws_connect(&alice.token).await,
            app.ws_connect(&bob.token).await,
            app.ws_connect(&bob.token).await,
            app.ws_connect(&carol.token).await,
        ];
        let outsider = app.ws_connect(&dave.token).await;

        let ack = ws_send_and_recv(
            &mut sending,
            &json!({
                "type": "message", "group_id": group, "content": "over the socket",
                "message_type": "text", "client_id": "c2",
            }),
        )
        .await;
        let id = assert_ack(&ack, "c2", "delivered");
        // The ack comes after the commit: the message is in the history.
        assert_eq!(app.group_history_ids(&bob.token, group, "").await, vec![id]);

        for ws in &mut others {
            let frame = ws_recv_skipping_presence(ws).await;
            assert_group_frame(&frame, group, "alice", "over the socket");
            assert_eq!(int_field(&frame, "id"), id);
            assert_eq!(frame["timestamp"], ack["timestamp"]);
        }
        others.push(sending);
        others.push(outsider);
        let mut all: Vec<&mut WsStream> = others.iter_mut().collect();
        ws_assert_all_quiet(
            &mut all,
            QUIET,
            "the sending socket gets only the ack, the others the message once, dave nothing",
        )
        .await;
    }
);

api_test!(
    a_group_ack_says_sent_when_no_other_member_has_a_socket_open,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut sending = app.ws_connect(&alice.token).await;
        // The sender's own second socket is not another member.
        let mut second = app.ws_connect(&alice.token).await;

        let ack =
            ws_send_and_recv(&mut sending, &group_socket_message(group, "anyone?", "c1")).await;
        let id = assert_ack(&ack, "c1", "sent");
        let frame = ws_recv_skipping_presence(&mut second).await;
        assert_eq!(int_field(&frame, "id"), id);

        let bob_ws = app.ws_connect(&bob.token).await;
        let ack = ws_send_and_recv(&mut sending, &group_socket_message(group, "bob?", "c2")).await;
        assert_ack(&ack, "c2", "delivered");
        ws_close(bob_ws).await;
    }
);

api_test!(
    a_removed_member_stops_receiving_the_groups_messages_at_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let before = app.send_group_text(&alice, group, "before").await;
        for ws in [&mut bob_ws, &mut carol_ws, &mut alice_ws] {
            assert_eq!(ws_recv_skipping_presence(ws).await["id"], before["id"]);
        }

        let response = app
            .remove_member(&alice.token, &group.to_string(), "bob")
            .await;
        assert_eq!(response.status().as_u16(), 204);
        // Carol leaves by herself.
        let response = app
            .remove_member(&carol.token, &group.to_string(), "carol")
            .await;
        assert_eq!(response.status().as_u16(), 204);
        // Each hears of their own going (and alice of both) before anything else.
        for (ws, gone) in [
            (&mut bob_ws, &["bob"][..]),
            (&mut carol_ws, &["bob", "carol"][..]),
            (&mut alice_ws, &["bob", "carol"][..]),
        ] {
            for user in gone {
                let frame = ws_recv_skipping_presence(ws).await;
                assert_eq!(frame["type"], "member_removed", "{frame}");
                assert_eq!(frame["user"], *user, "{frame}");
            }
        }

        let after = app.send_group_text(&alice, group, "after, over REST").await;
        assert_eq!(
            ws_recv_skipping_presence(&mut alice_ws).await["id"],
            after["id"]
        );
        let ack = ws_send_and_recv(
            &mut alice_ws,
            &group_socket_message(group, "after, over the socket", "c1"),
        )
        .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        // No other member is left with a socket open.
        assert_eq!(str_field(&ack, "status"), "sent", "{ack}");

        ws_assert_all_quiet(
            &mut [&mut bob_ws, &mut carol_ws],
            QUIET,
            "bob was removed and carol left",
        )
        .await;

        // Their sockets can no longer write to the group either.
        let reply = ws_send_and_recv(
            &mut bob_ws,
            &group_socket_message(group, "still here?", "b1"),
        )
        .await;
        assert_error_frame(&reply, 403);
        let reply =
            ws_send_and_recv(&mut carol_ws, &json!({"type": "typing", "group_id": group})).await;
        assert_error_frame(&reply, 403);
        ws_assert_quiet(&mut alice_ws, QUIET, "nothing from former members").await;
    }
);

api_test!(
    an_added_members_open_sockets_start_receiving_the_groups_messages,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await;
        let mut bob_phone = app.ws_connect(&bob.token).await;
        let mut bob_laptop = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let not_yet = app.send_group_text(&alice, group, "not yet").await;
        assert_eq!(
            ws_recv_skipping_presence(&mut alice_ws).await["id"],
            not_yet["id"]
        );
        json_ok(
            app.add_member(&alice.token, &group.to_string(), "bob")
                .await,
        )
        .await;
        for ws in [&mut alice_ws, &mut bob_phone, &mut bob_laptop] {
            let frame = ws_recv_skipping_presence(ws).await;
            assert_eq!(frame["type"], "member_added", "{frame}");
        }

        let ack =
            ws_send_and_recv(&mut alice_ws, &group_socket_message(group, "welcome", "c1")).await;
        let id = assert_ack(&ack, "c1", "delivered");
        let posted = app.send_group_text(&alice, group, "welcome again").await;
        for ws in [&mut bob_phone, &mut bob_laptop] {
            let first = ws_recv_skipping_presence(ws).await;
            assert_group_frame(&first, group, "alice", "welcome");
            assert_eq!(int_field(&first, "id"), id);
            let second = ws_recv_skipping_presence(ws).await;
            assert_group_frame(&second, group, "alice", "welcome again");
            assert_eq!(second["id"], posted["id"]);
        }
    }
);

api_test!(
    a_socket_group_send_outside_the_group_gets_an_error_frame,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let reply =
            ws_send_and_recv(&mut bob_ws, &group_socket_message(group, "let me in", "c1")).await;
        assert_error_frame(&reply, 403);
        assert_eq!(reply["client_id"], "c1", "{reply}");
        let reply = ws_send_and_recv(
            &mut bob_ws,
            &group_socket_message(group + 1000, "anyone?", "c2"),
        )
        .await;
        assert_error_frame(&reply, 404);
        assert_eq!(reply["client_id"], "c2", "{reply}");

        assert!(app
            .group_history_ids(&alice.token, group, "")
            .await
            .is_empty());
        ws_assert_quiet(&mut alice_ws, QUIET, "nothing reached the group").await;
    }
);

api_test!(
    a_resent_group_client_id_is_acked_again_and_stored_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut alice_other = app.ws_connect(&alice.token).await;

        let frame = group_socket_message(group, "once", "dup-1");
        let first = assert_ack(
            &ws_send_and_recv(&mut alice_ws, &frame).await,
            "dup-1",
            "delivered",
        );
        assert_eq!(
            int_field(&ws_recv_skipping_presence(&mut alice_other).await, "id"),
            first
        );
        let again = ws_send_and_recv(&mut alice_ws, &frame).await;
        assert_eq!(again["type"], "ack", "{again}");
        assert_eq!(str_field(&again, "client_id"), "dup-1");
        assert_eq!(int_field(&again, "id"), first, "acked with the same id");
        // The same user's other socket resending it is the same message too.
        let third = ws_send_and_recv(&mut alice_other, &frame).await;
        assert_eq!(third["type"], "ack", "{third}");
        assert_eq!(int_field(&third, "id"), first, "acked with the same id");

        assert_eq!(
            app.group_history_ids(&bob.token, group, "").await,
            vec![first],
            "stored once"
        );
        let delivered = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(int_field(&delivered, "id"), first);
        ws_assert_all_quiet(
            &mut [&mut bob_ws, &mut alice_ws, &mut alice_other],
            QUIET,
            "the resends deliver no second copy",
        )
        .await;
    }
);

api_test!(
    a_resent_group_message_is_acked_with_the_status_of_its_first_ack,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let frame = group_socket_message(group, "seen live", "status-1");
        let first = assert_ack(
            &ws_send_and_recv(&mut alice_ws, &frame).await,
            "status-1",
            "delivered",
        );
        assert_eq!(
            int_field(&ws_recv_skipping_presence(&mut bob_ws).await, "id"),
            first
        );
        // Bob leaving changes nothing about a message he already got.
        ws_close(bob_ws).await;
        wait_for_status(&mut alice_ws, "bob", "offline").await;
        let again = ws_send_and_recv(&mut alice_ws, &frame).await;
        assert_eq!(int_field(&again, "id"), first, "{again}");
        assert_eq!(assert_ack(&again, "status-1", "delivered"), first);
    }
);

api_test!(
    a_client_id_resent_before_its_ack_arrives_is_still_stored_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        // A client that gives up waiting and resends at once: both copies
        // are in flight before the first ack.
        for frame in [
            group_socket_message(group, "quick", "fast-g"),
            socket_message("bob", "quick", "fast-p"),
        ] {
            let client_id = str_field(&frame, "client_id").to_string();
            ws_send(&mut alice_ws, &frame).await;
            ws_send(&mut alice_ws, &frame).await;
            let first = ws_recv_skipping_presence(&mut alice_ws).await;
            let second = ws_recv_skipping_presence(&mut alice_ws).await;
            for ack in [&first, &second] {
                assert_eq!(ack["type"], "ack", "{ack}");
                assert_eq!(str_field(ack, "client_id"), client_id, "{ack}");
            }
            assert_eq!(
                first["id"], second["id"],
                "{client_id}: one message, acked twice"
            );
            let delivered = ws_recv_skipping_presence(&mut bob_ws).await;
            assert_eq!(delivered["id"], first["id"]);
        }
        assert_eq!(app.group_history_ids(&bob.token, group, "").await.len(), 1);
        assert_eq!(app.history_ids(&bob.token, "alice", "").await.len(), 1);
        ws_assert_quiet(&mut bob_ws, QUIET, "no second copy").await;
    }
);

api_test!(
    different_users_may_reuse_the_same_client_id,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let a_group = assert_ack(
            &ws_send_and_recv(
                &mut alice_ws,
                &group_socket_message(group, "from alice", "c1"),
            )
            .await,
            "c1",
            "delivered",
        );
        // Bob's socket got alice's message first.
        assert_eq!(
            int_field(&ws_recv_skipping_presence(&mut bob_ws).await, "id"),
            a_group
        );
        let b_group = assert_ack(
            &ws_send_and_recv(&mut bob_ws, &group_socket_message(group, "from bob", "c1")).await,
            "c1",
            "delivered",
        );
        assert_ne!(a_group, b_group);
        assert_eq!(
            int_field(&ws_recv_skipping_presence(&mut alice_ws).await, "id"),
            b_group
        );
        assert_eq!(
            app.group_history_ids(&alice.token, group, "").await,
            vec![a_group, b_group]
        );

        let a_private = assert_ack(
            &ws_send_and_recv(&mut alice_ws, &socket_message("carol", "alice here", "p1")).await,
            "p1",
            "sent",
        );
        let b_private = assert_ack(
            &ws_send_and_recv(&mut bob_ws, &socket_message("carol", "bob here", "p1")).await,
            "p1",
            "sent",
        );
        assert_ne!(a_private, b_private);
        assert_eq!(
            app.history_ids(&carol.token, "alice", "").await,
            vec![a_private]
        );
        assert_eq!(
            app.history_ids(&carol.token, "bob", "").await,
            vec![b_private]
        );
    }
);

/// Seven messages in `group` from alternating members, with noise in another
/// group and a private conversation after each, so that the group's ids are
/// not contiguous. Returns (alice, the group, its ids, the largest noise id).
async fn seven_message_group(app: &TestApp) -> (TestUser, i64, Vec<i64>, i64) {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let group = app.create_group_with(&alice, "g", &[&bob]).await;
    let other = app.create_group_id(&alice, "other").await;
    let mut ids = Vec::new();
    let mut noise = 0;
    for i in 0..7 {
        let sender = if i % 2 == 0 { &alice } else { &bob };
        ids.push(int_field(
            &app.send_group_text(sender, group, &format!("m{i}")).await,
            "id",
        ));
        app.send_group_text(&alice, other, &format!("noise{i}"))
            .await;
        noise = int_field(&app.send_text(&alice, "bob", &format!("dm{i}")).await, "id");
    }
    (alice, group, ids, noise)
}

api_test!(
    group_paging_without_a_cursor_gives_the_newest_limit,
    |app| async move {
        let (alice, group, m, _) = seven_message_group(&app).await;
        let page = |q: &'static str| app.group_history_ids(&alice.token, group, q);
        assert_eq!(page("").await, m, "default limit 50 covers all");
        assert_eq!(page("limit=3").await, m[4..7].to_vec());
        assert_eq!(page("limit=1").await, vec![m[6]]);
        assert_eq!(page("limit=7").await, m);
        assert_eq!(page("limit=500").await, m);
        assert_eq!(page("limit=100000").await, m);
    }
);

api_test!(
    group_paging_backwards_returns_exact_windows_down_to_an_empty_page,
    |app| async move {
        let (alice, group, m, noise) = seven_message_group(&app).await;
        let page = |q: String| {
            let app = &app;
            let token = alice.token.clone();
            async move { app.group_history_ids(&token, group, &q).await }
        };
        assert_eq!(
            page(format!("before={}&limit=3", m[6])).await,
            m[3..6].to_vec()
        );
        assert_eq!(
            page(format!("before={}&limit=3", m[3])).await,
            m[0..3].to_vec()
        );
        assert_eq!(
            page(format!("before={}&limit=3", m[2])).await,
            m[0..2].to_vec(),
            "the first page is short"
        );
        assert_eq!(page(format!("before={}&limit=1", m[1])).await, vec![m[0]]);
        assert_eq!(
            page(format!("before={}&limit=3", m[0])).await,
            Vec::<i64>::new(),
            "nothing before the first"
        );
        assert_eq!(page("before=1".to_string()).await, Vec::<i64>::new());
        assert_eq!(
            page(format!("before={}", m[6])).await,
            m[0..6].to_vec(),
            "default limit"
        );
        // A cursor between two of the group's ids, and one above them all.
        assert_eq!(
            page(format!("before={}&limit=2", m[4] - 1)).await,
            m[2..4].to_vec()
        );
        assert_eq!(
            page(format!("before={}&limit=2", noise + 1000)).await,
            m[5..7].to_vec()
        );
    }
);

api_test!(
    group_paging_forwards_returns_exact_windows_up_to_an_empty_page,
    |app| async move {
        let (alice, group, m, noise) = seven_message_group(&app).await;
        let page = |q: String| {
            let app = &app;
            let token = alice.token.clone();
            async move { app.group_history_ids(&token, group, &q).await }
        };
        assert_eq!(
            page("after=0&limit=3".to_string()).await,
            m[0..3].to_vec(),
            "the first page"
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[2])).await,
            m[3..6].to_vec()
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[5])).await,
            vec![m[6]],
            "the last page is short"
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[3])).await,
            m[4..7].to_vec(),
            "an exact last page"
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[6])).await,
            Vec::<i64>::new(),
            "nothing after the last"
        );
        assert_eq!(
            page(format!("after={}", noise + 1000)).await,
            Vec::<i64>::new()
        );
        assert_eq!(page("after=0".to_string()).await, m, "default limit");
        assert_eq!(
            page(format!("after={}&limit=2", m[4] - 1)).await,
            m[4..6].to_vec()
        );
        // Another member sees the same pages.
        let bob = app.login_token("bob", "pw-bob-correct horse").await;
        assert_eq!(
            app.group_history_ids(&bob, group, "after=0&limit=3").await,
            m[0..3].to_vec()
        );
    }
);

api_test!(a_group_limit_above_500_is_read_as_500, |app| async move {
    const COUNT: usize = 501;
    let alice = app.create_user("alice").await;
    let group = app.create_group_id(&alice, "big").await;
    let (mut tx, mut rx) = app.ws_connect(&alice.token).await.split();
    let send_all = async {
        for i in 0..COUNT {
            let frame = group_socket_message(group, &format!("n{i}"), &format!("c{i}"));
            tx.feed(Message::text(frame.to_string()))
                .await
                .expect("queue a frame");
        }
        tx.flush().await.expect("flush");
    };
    let read_acks = async {
        let mut ids = BTreeSet::new();
        while ids.len() < COUNT {
            let ack = ws_recv_skipping_presence(&mut rx).await;
            assert_eq!(ack["type"], "ack", "{ack}");
            ids.insert(int_field(&ack, "id"));
        }
        ids
    };
    let ((), ids) = tokio::join!(send_all, read_acks);
    let ids: Vec<i64> = ids.into_iter().collect();

    let page = |q: &'static str| app.group_history_ids(&alice.token, group, q);
    assert_eq!(page("limit=1000").await, ids[1..].to_vec());
    assert_eq!(page("limit=501").await, ids[1..].to_vec());
    assert_eq!(page("after=0&limit=100000").await, ids[..500].to_vec());
    assert_eq!(page("").await, ids[451..].to_vec(), "default 50");
    assert_eq!(
        page("after=0").await,
        ids[..50].to_vec(),
        "default 50 from the start"
    );
});
