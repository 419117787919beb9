//! `{"type":"sync","since":N}`: replays every private and group message the
//! user may see with id > N in id order, then `synced`; marks replayed
//! private messages delivered; never loses or duplicates a message that
//! arrives while it runs.

use std::collections::BTreeSet;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

api_test!(
    sync_replays_every_private_and_group_message_the_user_may_see_in_id_order,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let ours = app.create_group_with(&alice, "ours", &[&bob]).await;
        let theirs = app.create_group_with(&carol, "theirs", &[&dave]).await;

        let mut expected = Vec::new();
        expected.push(int_field(&app.send_text(&alice, "bob", "a->b").await, "id"));
        expected.push(int_field(
            &app.send_group_text(&alice, ours, "ours 1").await,
            "id",
        ));
        app.send_text(&carol, "dave", "c->d").await;
        app.send_group_text(&carol, theirs, "theirs").await;
        expected.push(int_field(&app.send_text(&bob, "carol", "b->c").await, "id"));
        expected.push(int_field(
            &app.send_group_text(&bob, ours, "ours 2").await,
            "id",
        ));
        app.send_text(&alice, "dave", "a->d").await;
        expected.push(int_field(&app.send_text(&dave, "bob", "d->b").await, "id"));

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let (replayed, synced) = ws_sync(&mut bob_ws, 0).await;
        assert_eq!(ids_of(&replayed), expected, "bob's messages in id order");
        assert_eq!(int_field(&synced, "last_id"), expected[4], "{synced}");
        assert!(
            synced.get("more").is_none() || synced["more"] == false,
            "{synced}"
        );

        assert_private_frame(&replayed[0], "alice", "bob", "a->b");
        assert_group_frame(&replayed[1], ours, "alice", "ours 1");
        assert_private_frame(&replayed[2], "bob", "carol", "b->c");
        assert_group_frame(&replayed[3], ours, "bob", "ours 2");
        assert_private_frame(&replayed[4], "dave", "bob", "d->b");

        // From the middle: only what is newer.
        let (replayed, synced) = ws_sync(&mut bob_ws, expected[2]).await;
        assert_eq!(ids_of(&replayed), expected[3..].to_vec());
        assert_eq!(int_field(&synced, "last_id"), expected[4]);
    }
);

api_test!(
    a_reconnecting_client_syncs_exactly_the_50_messages_it_missed,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let elsewhere = app
            .create_group_with(&alice, "without bob", &[&carol])
            .await;

        // Bob is online and has seen everything up to `seen`.
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let first = app.send_text(&alice, "bob", "while online").await;
        let seen = int_field(&ws_recv_skipping_presence(&mut bob_ws).await, "id");
        assert_eq!(seen, int_field(&first, "id"));
        ws_close(bob_ws).await;

        // 50 messages for bob in a mix of private and group, REST and socket,
        // with messages he may not see in between.
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let mut expected = Vec::new();
        for i in 0..50 {
            let content = format!("missed {i}");
            let id = match i % 5 {
                0 => int_field(&app.send_text(&alice, "bob", &content).await, "id"),
                1 => int_field(&app.send_group_text(&alice, group, &content).await, "id"),
                2 => {
                    let frame = socket_message("bob", &content, &format!("p{i}"));
                    assert_ack(
                        &ws_send_until_ack(&mut carol_ws, &frame).await,
                        &format!("p{i}"),
                        "sent",
                    )
                }
                3 => {
                    let frame = group_socket_message(group, &content, &format!("g{i}"));
                    let ack = ws_send_until_ack(&mut carol_ws, &frame).await;
                    assert_eq!(ack["type"], "ack", "{ack}");
                    int_field(&ack, "id")
                }
                _ => int_field(&app.send_text(&carol, "bob", &content).await, "id"),
            };
            expected.push(id);
            if i % 10 == 0 {
                app.send_text(&alice, "carol", "not for bob").await;
                app.send_group_text(&carol, elsewhere, "not for bob either")
                    .await;
            }
        }

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut bob_other = app.ws_connect(&bob.token).await;
        let (replayed, synced) = ws_sync(&mut bob_ws, seen).await;
        for frame in &replayed {
            assert_eq!(
                frame["type"], "message",
                "only messages are replayed: {frame}"
            );
        }
        let ids = ids_of(&replayed);
        assert_eq!(ids.len(), 50, "exactly the 50 missed messages: {ids:?}");
        assert_eq!(ids, expected, "the missed messages in id order");
        let contents: Vec<String> = replayed
            .iter()
            .map(|f| str_field(f, "content").to_string())
            .collect();
        let wanted: Vec<String> = (0..50).map(|i| format!("missed {i}")).collect();
        assert_eq!(contents, wanted);
        assert_eq!(int_field(&synced, "last_id"), expected[49], "{synced}");
        ws_assert_all_quiet(
            &mut [&mut bob_ws, &mut bob_other],
            QUIET,
            "nothing after synced, and the replay goes to the syncing socket only",
        )
        .await;
    }
);

api_test!(
    sync_marks_replayed_private_messages_delivered_and_tells_every_sender_socket,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let already_read = int_field(&app.send_text(&alice, "bob", "m0").await, "id");
        json_ok(app.mark_read(&bob.token, &already_read.to_string()).await).await;
        let m1 = app.send_text(&alice, "bob", "m1").await;
        let m2 = app.send_text(&alice, "bob", "m2").await;
        for m in [&m1, &m2] {
            assert_eq!(str_field(m, "status"), "sent", "bob is offline: {m}");
        }
        let (m1, m2) = (int_field(&m1, "id"), int_field(&m2, "id"));
        let mut alice_phone = app.ws_connect(&alice.token).await;
        let mut alice_laptop = app.ws_connect(&alice.token).await;

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let (replayed, _) = ws_sync(&mut bob_ws, 0).await;
        assert_eq!(ids_of(&replayed), vec![already_read, m1, m2]);
        assert_eq!(str_field(&replayed[0], "status"), "read", "{}", replayed[0]);
        for frame in &replayed[1..] {
            assert_eq!(str_field(frame, "status"), "delivered", "{frame}");
        }

        for ws in [&mut alice_phone, &mut alice_laptop] {
            let mut receipts = Vec::new();
            for _ in 0..2 {
                let receipt = ws_recv_skipping_presence(ws).await;
                assert_eq!(receipt["type"], "receipt", "{receipt}");
                receipts.push(int_field(&receipt, "message_id"));
                assert_receipt(
                    &receipt,
                    int_field(&receipt, "message_id"),
                    "bob",
                    "delivered",
                );
            }
            receipts.sort_unstable();
            assert_eq!(receipts, vec![m1, m2], "one delivered receipt per message");
        }

        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        let statuses: Vec<&str> = array(&history, "history")
            .iter()
            .map(|m| str_field(m, "status"))
            .collect();
        assert_eq!(statuses, vec!["read", "delivered", "delivered"]);

        // A second sync replays them as delivered and tells alice nothing new.
        let (replayed, _) = ws_sync(&mut bob_ws, already_read).await;
        assert_eq!(ids_of(&replayed), vec![m1, m2]);
        ws_assert_all_quiet(
            &mut [&mut alice_phone, &mut alice_laptop],
            QUIET,
            "no second delivered receipt",
        )
        .await;
    }
);

api_test!(
    a_sync_racing_with_new_sends_loses_nothing_and_duplicates_nothing,
    |app| async move {
        const WAITING: usize = 300;
        const LIVE: usize = 100;
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&carol, "g", &[&bob]).await;

        // 300 messages wait for bob, who is offline.
        let (mut alice_tx, mut alice_rx) = app.ws_connect(&alice.token).await.split();
        let queue = async {
            for i in 0..WAITING {
                let frame = socket_message("bob", &format!("waiting {i}"), &format!("w{i}"));
                alice_tx
                    .feed(Message::text(frame.to_string()))
                    .await
                    .expect("queue a frame");
            }
            alice_tx.flush().await.expect("flush");
        };
        let acks = async {
            let mut ids = BTreeSet::new();
            while ids.len() < WAITING {
                let ack = ws_recv_skipping_presence(&mut alice_rx).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                ids.insert(int_field(&ack, "id"));
            }
            ids
        };
        let ((), mut all_ids) = tokio::join!(queue, acks);

        // Bob connects and syncs while carol sends 100 to the group.
        let (mut carol_tx, mut carol_rx) = app.ws_connect(&carol.token).await.split();
        let mut bob_ws = app.ws_connect(&bob.token).await;
        // Bob's sync goes out right after carol's first frame, so that her
        // messages commit while the replay is being read and written.
        let (started, start) = tokio::sync::oneshot::channel::<()>();
        let carol_sends = async {
            let mut started = Some(started);
            for i in 0..LIVE {
                let frame = group_socket_message(group, &format!("live {i}"), &format!("l{i}"));
                carol_tx
                    .send(Message::text(frame.to_string()))
                    .await
                    .expect("send a frame");
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
        };
        let carol_acks = async {
            let mut ids = BTreeSet::new();
            while ids.len() < LIVE {
                let ack = ws_recv_skipping_presence(&mut carol_rx).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                ids.insert(int_field(&ack, "id"));
            }
            ids
        };
        let bob_reads = async {
            start.await.expect("carol started");
            ws_send(&mut bob_ws, &json!({"type": "sync", "since": 0})).await;
            let (before, synced) = ws_recv_until_synced(&mut bob_ws).await;
            let last_id = int_field(&synced, "last_id");
            let mut seen: BTreeSet<i64> = BTreeSet::new();
            for frame in &before {
                assert_eq!(frame["type"], "message", "{frame}");
                seen.insert(int_field(frame, "id"));
            }
            let mut after = Vec::new();
            while seen.len() + after.len() < WAITING + LIVE {
                let frame = ws_recv_skipping_presence(&mut bob_ws).await;
                assert_eq!(frame["type"], "message", "{frame}");
                after.push(frame);
            }
            (before, last_id, after)
        };
        let ((), live_ids, (before, last_id, after)) =
            tokio::join!(carol_sends, carol_acks, bob_reads);
        all_ids.extend(&live_ids);
        assert_eq!(all_ids.len(), WAITING + LIVE);

        // Carol's first messages may reach bob live before the server reads
        // his `sync`; the replay (from the oldest waiting id) repeats those,
        // as the contract says. Only what commits during the replay must not
        // come twice.
        let before_ids = ids_of(&before);
        let oldest = *all_ids.first().expect("messages were sent");
        let replay_start = before_ids
            .iter()
            .position(|id| *id == oldest)
            .unwrap_or_else(|| panic!("the replay starts at {oldest}: {before_ids:?}"));
        let (pushed_first, replayed) = before_ids.split_at(replay_start);
        let after_ids = ids_of(&after);
        assert_ascending(pushed_first, "pushed before the sync was read");
        assert_ascending(replayed, "replayed before synced");
        assert_ascending(&after_ids, "live after synced");
        for id in pushed_first {
            assert!(
                live_ids.contains(id),
                "only carol's live messages came before the replay: {id}"
            );
            assert!(
                replayed.contains(id),
                "a message pushed before the sync is replayed: {id}"
            );
        }
        assert_eq!(
            replayed.last().copied(),
            Some(last_id),
            "synced names the last replayed id"
        );
        if let Some(first_live) = after_ids.first() {
            assert!(
                *first_live > last_id,
                "after synced only newer messages arrive: {first_live} <= {last_id}"
            );
        }
        let mut received = replayed.to_vec();
        received.extend(&after_ids);
        let distinct: BTreeSet<i64> = received.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            received.len(),
            "no duplicates from the replay on"
        );
        assert_eq!(
            distinct, all_ids,
            "every message exactly once from the replay on"
        );
        ws_assert_quiet(&mut bob_ws, QUIET, "nothing beyond the 400").await;
    }
);

api_test!(
    sync_skips_a_groups_messages_once_the_user_has_left,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let response = app
            .remove_member(&bob.token, &group.to_string(), "bob")
            .await;
        assert_eq!(response.status().as_u16(), 204);
        app.send_group_text(&alice, group, "bob is gone").await;
        let private = int_field(&app.send_text(&alice, "bob", "still private").await, "id");

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let (replayed, synced) = ws_sync(&mut bob_ws, 0).await;
        assert_eq!(ids_of(&replayed), vec![private], "{replayed:?}");
        assert_eq!(int_field(&synced, "last_id"), private);
    }
);

api_test!(
    a_sync_without_a_cursor_or_with_a_negative_one_gets_an_error_frame_400,
    |app| async move {
        let alice = app.create_user("alice").await;
        let mut ws = app.ws_connect(&alice.token).await;
        for frame in [
            json!({"type": "sync"}),
            json!({"type": "sync", "since": -1}),
            json!({"type": "sync", "since": "zero"}),
        ] {
            let reply = ws_send_and_recv(&mut ws, &frame).await;
            assert_error_frame(&reply, 400);
        }
        let (replayed, synced) = ws_sync(&mut ws, 0).await;
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(int_field(&synced, "last_id"), 0);
    }
);

api_test!(
    a_sync_cursor_above_every_id_does_not_silence_later_messages,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        // A cursor from elsewhere (say, before the server's data was reset).
        let (replayed, synced) = ws_sync(&mut bob_ws, 1_000_000).await;
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(int_field(&synced, "last_id"), 1_000_000);

        let private = app.send_text(&alice, "bob", "still reaches you").await;
        let frame = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(
            frame["id"], private["id"],
            "the private message is pushed: {frame}"
        );
        let posted = app.send_group_text(&alice, group, "so does this").await;
        let frame = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(
            frame["id"], posted["id"],
            "the group message is pushed: {frame}"
        );
    }
);

api_test!(
    one_sync_replays_at_most_5000_messages_and_says_more,
    |app| async move {
        const COUNT: usize = 5001;
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let (mut tx, mut rx) = app.ws_connect(&alice.token).await.split();
        let send_all = async {
            for i in 0..COUNT {
                let frame = socket_message("bob", &format!("n{i}"), &format!("c{i}"));
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

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let (replayed, synced) = ws_sync(&mut bob_ws, 0).await;
        assert_eq!(replayed.len(), 5000, "one sync replays 5000");
        assert_eq!(ids_of(&replayed), ids[..5000].to_vec());
        assert_eq!(int_field(&synced, "last_id"), ids[4999], "{synced}");
        assert_eq!(synced["more"], true, "{synced}");

        let (replayed, synced) = ws_sync(&mut bob_ws, ids[4999]).await;
        assert_eq!(ids_of(&replayed), vec![ids[5000]]);
        assert_eq!(int_field(&synced, "last_id"), ids[5000]);
        assert!(
            synced.get("more").is_none() || synced["more"] == false,
            "{synced}"
        );
    }
);
