//! `{"type":"typing"}`: relayed to the recipient's sockets or the other
//! members' sockets, never stored, at most one per socket per conversation
//! per second.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Within this much of a burst, the one relayed notice must have arrived.
const RELAY: Duration = Duration::from_millis(700);

fn typing_to(recipient: &str) -> Value {
    json!({"type": "typing", "recipient": recipient})
}

fn typing_in(group: i64) -> Value {
    json!({"type": "typing", "group_id": group})
}

/// The frames (other than presence) that arrive on `ws` within `wait`.
async fn frames_within(ws: &mut WsStream, wait: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return frames;
        }
        match ws_try_recv(ws, left).await {
            Some(frame) if frame["type"] == "status" => {}
            Some(frame) => frames.push(frame),
            None => return frames,
        }
    }
}

api_test!(
    private_typing_reaches_every_socket_of_the_recipient_only,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("Bob").await;
        let carol = app.create_user("carol").await;
        let mut bob_phone = app.ws_connect(&bob.token).await;
        let mut bob_laptop = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        ws_send(&mut alice_ws, &typing_to("bob")).await;
        for ws in [&mut bob_phone, &mut bob_laptop] {
            let frame = ws_recv_skipping_presence(ws).await;
            assert_eq!(
                frame,
                json!({"type": "typing", "user": "alice", "recipient": "Bob"}),
            );
        }
        ws_assert_all_quiet(
            &mut [
                &mut alice_ws,
                &mut carol_ws,
                &mut bob_phone,
                &mut bob_laptop,
            ],
            QUIET,
            "one notice per recipient socket, and nothing to anyone else",
        )
        .await;
    }
);

api_test!(
    group_typing_reaches_every_other_member_but_not_the_sender,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let mut typing = app.ws_connect(&alice.token).await;
        let alice_other = app.ws_connect(&alice.token).await;
        let mut others = vec![
            app.ws_connect(&bob.token).await,
            app.ws_connect(&bob.token).await,
            app.ws_connect(&carol.token).await,
        ];
        let outsider = app.ws_connect(&dave.token).await;

        ws_send(&mut typing, &typing_in(group)).await;
        for ws in &mut others {
            let frame = ws_recv_skipping_presence(ws).await;
            assert_eq!(
                frame,
                json!({"type": "typing", "user": "alice", "group_id": group}),
            );
        }
        others.push(typing);
        others.push(alice_other);
        others.push(outsider);
        let mut all: Vec<&mut WsStream> = others.iter_mut().collect();
        ws_assert_all_quiet(
            &mut all,
            QUIET,
            "once per other member's socket; nothing to the sender's sockets or outsiders",
        )
        .await;
    }
);

api_test!(typing_is_never_stored, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let group = app.create_group_with(&alice, "g", &[&bob]).await;
    let mut bob_ws = app.ws_connect(&bob.token).await;
    let mut alice_ws = app.ws_connect(&alice.token).await;

    ws_send(&mut alice_ws, &typing_to("bob")).await;
    ws_send(&mut alice_ws, &typing_in(group)).await;
    let mut kinds = Vec::new();
    for _ in 0..2 {
        kinds.push(ws_recv_skipping_presence(&mut bob_ws).await["type"].clone());
    }
    assert_eq!(kinds, vec![json!("typing"), json!("typing")]);

    assert!(app.history_ids(&alice.token, "bob", "").await.is_empty());
    assert!(app
        .group_history_ids(&alice.token, group, "")
        .await
        .is_empty());
    assert_eq!(app.unread(&bob.token, group).await, 0);
    let (replayed, synced) = ws_sync(&mut bob_ws, 0).await;
    assert!(replayed.is_empty(), "sync replays no typing: {replayed:?}");
    assert_eq!(int_field(&synced, "last_id"), 0);
});

api_test!(
    typing_is_throttled_to_one_per_second_per_socket_and_conversation,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&carol]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut alice_other = app.ws_connect(&alice.token).await;

        for _ in 0..5 {
            ws_send(&mut alice_ws, &typing_to("bob")).await;
            ws_send(&mut alice_ws, &typing_in(group)).await;
        }
        let first = ws_recv_skipping_presence(&mut bob_ws).await;
        let relayed_at = tokio::time::Instant::now();
        assert_eq!(
            first,
            json!({"type": "typing", "user": "alice", "recipient": "bob"})
        );
        let (more_to_bob, to_carol) = tokio::join!(
            frames_within(&mut bob_ws, RELAY),
            frames_within(&mut carol_ws, RELAY)
        );
        assert!(
            more_to_bob.is_empty(),
            "five quick notices to bob relay one: got {more_to_bob:?} after the first"
        );
        assert_eq!(
            to_carol.len(),
            1,
            "the group is another conversation, throttled on its own: {to_carol:?}"
        );
        assert_eq!(to_carol[0]["group_id"], group);

        // Another socket of the same user has its own allowance.
        ws_send(&mut alice_other, &typing_to("bob")).await;
        let frame = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(frame["type"], "typing", "{frame}");

        // Typing on (a notice every 250 ms): one more is relayed once a
        // second has passed since the first, and only one.
        for k in 1..=5 {
            tokio::time::sleep_until(relayed_at + Duration::from_millis(250 * k)).await;
            ws_send(&mut alice_ws, &typing_to("bob")).await;
        }
        let again = frames_within(&mut bob_ws, RELAY).await;
        assert_eq!(
            again,
            vec![json!({"type": "typing", "user": "alice", "recipient": "bob"})],
            "relayed again after a second of typing"
        );
    }
);

api_test!(
    typing_to_a_group_you_are_not_in_is_an_error_frame_403,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await;
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let reply = ws_send_and_recv(&mut bob_ws, &typing_in(group)).await;
        assert_error_frame(&reply, 403);
        ws_assert_quiet(&mut alice_ws, QUIET, "nothing relayed into the group").await;
    }
);
