//! Presence `status` frames: to contacts only (a shared private
//! conversation or a shared group), on the first socket opening and the last
//! closing, on every socket of each contact.

use serde_json::Value;

use crate::helpers::*;

fn assert_status(frame: &Value, user: &str, status: &str) {
    assert_eq!(
        frame["type"], "status",
        "expected a status frame, got {frame}"
    );
    assert_eq!(str_field(frame, "user"), user, "{frame}");
    assert_eq!(str_field(frame, "status"), status, "{frame}");
    assert_recent(&frame["timestamp"], "status timestamp");
}

/// Asserts that no frame at all (presence included) arrives on `ws` within [`QUIET`].
async fn assert_silent(ws: &mut WsStream, why: &str) {
    if let Some(frame) = ws_try_recv(ws, QUIET).await {
        panic!("{why}, but got {frame}");
    }
}

/// Asserts that nothing arrives on `ws` within [`QUIET`] except presence
/// of users other than `user`.
async fn assert_nothing_about(ws: &mut WsStream, user: &str, why: &str) {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws_try_recv(ws, left).await {
            None => return,
            Some(frame) if frame["type"] == "status" && frame["user"] != user => {}
            Some(frame) => panic!("{why}, but got {frame}"),
        }
    }
}

api_test!(
    sharing_a_group_makes_users_contacts_for_presence,
    |app| async move {
        let alice = app.create_user("alice").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        // Alice and carol never wrote to each other; they share a group.
        app.create_group_with(&alice, "g", &[&carol]).await;
        let mut carol_phone = app.ws_connect(&carol.token).await;
        let mut carol_laptop = app.ws_connect(&carol.token).await;
        let mut dave_ws = app.ws_connect(&dave.token).await;

        let alice_ws = app.ws_connect(&alice.token).await;
        for ws in [&mut carol_phone, &mut carol_laptop] {
            assert_status(&ws_recv(ws).await, "alice", "online");
        }
        ws_close(alice_ws).await;
        for ws in [&mut carol_phone, &mut carol_laptop] {
            assert_status(&ws_recv(ws).await, "alice", "offline");
        }
        assert_silent(&mut dave_ws, "dave shares nothing with alice").await;
    }
);

api_test!(
    a_contact_through_both_a_conversation_and_a_group_hears_each_change_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        app.create_group_with(&alice, "g", &[&bob]).await;
        app.send_text(&alice, "bob", "and we talk privately").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let alice_ws = app.ws_connect(&alice.token).await;
        assert_status(&ws_recv(&mut bob_ws).await, "alice", "online");
        assert_silent(&mut bob_ws, "a single online").await;
        ws_close(alice_ws).await;
        assert_status(&ws_recv(&mut bob_ws).await, "alice", "offline");
        assert_silent(&mut bob_ws, "a single offline").await;
    }
);

api_test!(
    a_user_who_shares_nothing_hears_no_presence,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        // Bob and carol share things with others, not with alice.
        app.send_text(&bob, "carol", "hi").await;
        app.create_group_with(&bob, "g", &[&carol]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;

        let alice_ws = app.ws_connect(&alice.token).await;
        ws_close(alice_ws).await;
        tokio::join!(
            assert_nothing_about(&mut bob_ws, "alice", "bob shares nothing with alice"),
            assert_nothing_about(&mut carol_ws, "alice", "carol shares nothing with alice"),
        );
    }
);

api_test!(
    someone_who_becomes_a_contact_while_the_user_is_online_hears_the_offline,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_id(&alice, "g").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let alice_ws = app.ws_connect(&alice.token).await;

        // While alice is online, bob joins her group and carol gets her first message.
        json_ok(
            app.add_member(&alice.token, &group.to_string(), "bob")
                .await,
        )
        .await;
        app.send_text(&alice, "carol", "hello").await;
        let frame = ws_recv_skipping_presence(&mut carol_ws).await;
        assert_eq!(frame["type"], "message", "{frame}");
        let frame = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_eq!(frame["type"], "member_added", "{frame}");

        ws_close(alice_ws).await;
        let (to_bob, to_carol) = tokio::join!(ws_recv(&mut bob_ws), ws_recv(&mut carol_ws));
        assert_status(&to_bob, "alice", "offline");
        assert_status(&to_carol, "alice", "offline");
    }
);

api_test!(
    a_removed_member_who_shares_nothing_else_hears_no_presence,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let response = app
            .remove_member(&alice.token, &group.to_string(), "bob")
            .await;
        assert_eq!(response.status().as_u16(), 204);
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let alice_ws = app.ws_connect(&alice.token).await;
        ws_close(alice_ws).await;
        assert_silent(&mut bob_ws, "bob no longer shares anything with alice").await;
    }
);

api_test!(
    a_new_socket_is_told_which_contacts_are_online_already,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        app.send_text(&alice, &bob.username, "hi bob").await;
        app.create_group_with(&alice, "g", &[&carol]).await;
        // Bob (private contact) and dave (a stranger) are online, carol is not.
        let _bob_ws = app.ws_connect(&bob.token).await;
        let _dave_ws = app.ws_connect(&dave.token).await;

        // Opened without the helpers' readiness probe, which skips status frames.
        for device in ["phone", "laptop"] {
            let mut alice_ws = app
                .ws_try_connect("", Some(&alice.token))
                .await
                .expect("the handshake succeeds");
            assert_status(&ws_recv(&mut alice_ws).await, "bob", "online");
            let why = format!(
                "alice's {device} hears only contacts already online ({} is not)",
                carol.username
            );
            assert_silent(&mut alice_ws, &why).await;
        }
    }
);
