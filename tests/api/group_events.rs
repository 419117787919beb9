//! Membership events on the socket: `member_added`, `member_removed` and
//! `role_changed` reach every member's sockets and those of the user
//! concerned, so a client learns of a new group, a departure or a new role
//! at once.

use serde_json::Value;

use crate::helpers::*;

/// The next frame of `kind` on `ws`, skipping presence; fails on any other.
async fn next_event(ws: &mut WsStream, kind: &str) -> Value {
    let frame = ws_recv_skipping_presence(ws).await;
    assert_eq!(frame["type"], kind, "{frame}");
    assert_recent(&frame["timestamp"], "timestamp");
    frame
}

/// Alice's group with bob and carol as members, and a socket of each.
async fn group_of_three(app: &TestApp) -> ([TestUser; 3], i64, [WsStream; 3]) {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let carol = app.create_user("carol").await;
    let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
    let sockets = [
        app.ws_connect(&alice.token).await,
        app.ws_connect(&bob.token).await,
        app.ws_connect(&carol.token).await,
    ];
    ([alice, bob, carol], group, sockets)
}

fn assert_event(frame: &Value, group: i64, user: &str, by: &str) {
    assert_eq!(int_field(frame, "group_id"), group, "{frame}");
    assert_eq!(str_field(frame, "user"), user, "{frame}");
    assert_eq!(str_field(frame, "by"), by, "{frame}");
}

api_test!(
    adding_a_member_tells_the_members_and_the_newcomer_at_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_phone = app.ws_connect(&carol.token).await;
        let mut carol_laptop = app.ws_connect(&carol.token).await;
        let mut dave_ws = app.ws_connect(&dave.token).await;

        json_ok(
            app.add_member(&alice.token, &group.to_string(), "carol")
                .await,
        )
        .await;
        for ws in [
            &mut alice_ws,
            &mut bob_ws,
            &mut carol_phone,
            &mut carol_laptop,
        ] {
            let added = next_event(ws, "member_added").await;
            assert_event(&added, group, "carol", "alice");
            assert_eq!(str_field(&added, "role"), "member");
        }
        ws_assert_quiet(&mut dave_ws, QUIET, "an outsider hears nothing").await;
    }
);

api_test!(
    leaving_or_being_removed_tells_the_members_and_the_one_who_went,
    |app| async move {
        let ([alice, _, carol], group, [mut alice_ws, mut bob_ws, mut carol_ws]) =
            group_of_three(&app).await;

        let removed = app
            .remove_member(&alice.token, &group.to_string(), "bob")
            .await;
        assert_eq!(removed.status(), 204);
        for ws in [&mut alice_ws, &mut bob_ws, &mut carol_ws] {
            assert_event(
                &next_event(ws, "member_removed").await,
                group,
                "bob",
                "alice",
            );
        }
        let left = app
            .remove_member(&carol.token, &group.to_string(), "carol")
            .await;
        assert_eq!(left.status(), 204);
        for ws in [&mut alice_ws, &mut carol_ws] {
            assert_event(
                &next_event(ws, "member_removed").await,
                group,
                "carol",
                "carol",
            );
        }
        ws_assert_quiet(&mut bob_ws, QUIET, "a former member hears no more").await;
    }
);

api_test!(
    a_role_change_tells_every_member_and_a_transfer_tells_both_roles,
    |app| async move {
        let ([alice, bob, _], group, [mut alice_ws, mut bob_ws, mut carol_ws]) =
            group_of_three(&app).await;

        json_ok(
            app.change_role(&alice.token, &group.to_string(), "bob", "admin")
                .await,
        )
        .await;
        for ws in [&mut alice_ws, &mut bob_ws, &mut carol_ws] {
            let changed = next_event(ws, "role_changed").await;
            assert_event(&changed, group, "bob", "alice");
            assert_eq!(str_field(&changed, "role"), "admin");
        }
        json_ok(
            app.change_role(&alice.token, &group.to_string(), "carol", "owner")
                .await,
        )
        .await;
        for ws in [&mut alice_ws, &mut bob_ws, &mut carol_ws] {
            let mut roles = Vec::new();
            for _ in 0..2 {
                let changed = next_event(ws, "role_changed").await;
                assert_eq!(str_field(&changed, "by"), "alice", "{changed}");
                roles.push((
                    str_field(&changed, "user").to_string(),
                    str_field(&changed, "role").to_string(),
                ));
            }
            roles.sort();
            assert_eq!(
                roles,
                [
                    ("alice".into(), "admin".into()),
                    ("carol".into(), "owner".into())
                ]
            );
        }
        // A refused change tells nobody.
        let refused = app
            .change_role(&bob.token, &group.to_string(), "alice", "member")
            .await;
        assert_error(refused, 403).await;
        ws_assert_all_quiet(
            &mut [&mut alice_ws, &mut bob_ws, &mut carol_ws],
            QUIET,
            "a refused change is not announced",
        )
        .await;
    }
);
