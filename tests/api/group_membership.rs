//! Group membership and roles: `GET /groups`, `GET/POST
//! /groups/{id}/members`, `DELETE/PATCH /groups/{id}/members/{username}`,
//! and the 403 that every group route gives someone outside the group.

use serde_json::{json, Value};

use crate::helpers::*;

/// Asserts a member object `{username, role, joined_at}`.
fn assert_member(member: &Value, username: &str, role: &str) {
    assert_has_fields(member, &["username", "role", "joined_at"]);
    assert_eq!(str_field(member, "username"), username, "{member}");
    assert_eq!(str_field(member, "role"), role, "{member}");
    assert_recent(&member["joined_at"], "joined_at");
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

api_test!(
    the_creator_is_the_owner_and_the_only_member,
    |app| async move {
        let alice = app.create_user("Alice").await;
        let group = app.create_group_id(&alice, "g").await;
        let members = json_ok(app.group_members(&alice.token, &group.to_string()).await).await;
        let members = array(&members, "members");
        assert_eq!(members.len(), 1, "{members:?}");
        assert_member(&members[0], "Alice", "owner");

        let entry = app.my_group(&alice.token, group).await.expect("listed");
        assert_eq!(str_field(&entry, "role"), "owner", "{entry}");
        assert_eq!(int_field(&entry, "unread"), 0, "{entry}");
    }
);

api_test!(
    get_groups_lists_only_the_callers_groups_with_role_and_unread,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let shared = json_ok(
            app.create_group(
                &alice.token,
                &json!({"name": "Shared", "description": "both of us"}),
            )
            .await,
        )
        .await;
        let shared_id = int_field(&shared, "id");
        let alices_own = app.create_group_id(&alice, "Alice only").await;
        let bobs_own = app.create_group_id(&bob, "Bob only").await;
        json_ok(
            app.add_member(&alice.token, &shared_id.to_string(), "bob")
                .await,
        )
        .await;

        let listed = json_ok(app.list_groups(&bob.token).await).await;
        let listed = array(&listed, "GET /groups");
        let mut ids: Vec<i64> = listed.iter().map(|g| int_field(g, "id")).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![shared_id, bobs_own], "bob's groups: {listed:?}");
        for group in listed {
            assert_has_fields(
                group,
                &[
                    "id",
                    "name",
                    "description",
                    "created_at",
                    "created_by",
                    "role",
                    "unread",
                ],
            );
            assert_recent(&group["created_at"], "created_at");
            assert_eq!(int_field(group, "unread"), 0, "{group}");
        }
        let entry = listed
            .iter()
            .find(|g| g["id"] == shared_id)
            .expect("shared listed");
        assert_eq!(str_field(entry, "name"), "Shared");
        assert_eq!(str_field(entry, "description"), "both of us");
        assert_eq!(str_field(entry, "created_by"), "alice");
        assert_eq!(entry["created_at"], shared["created_at"]);
        assert_eq!(str_field(entry, "role"), "member", "{entry}");
        let own = listed.iter().find(|g| g["id"] == bobs_own).expect("own");
        assert_eq!(str_field(own, "role"), "owner", "{own}");

        let alices = json_ok(app.list_groups(&alice.token).await).await;
        let mut alice_ids: Vec<i64> = array(&alices, "GET /groups")
            .iter()
            .map(|g| int_field(g, "id"))
            .collect();
        alice_ids.sort_unstable();
        assert_eq!(alice_ids, vec![shared_id, alices_own]);

        let carols = json_ok(app.list_groups(&carol.token).await).await;
        assert_eq!(array(&carols, "GET /groups").len(), 0, "{carols}");
    }
);

api_test!(unread_counts_only_messages_from_others, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let group = app.create_group_with(&alice, "g", &[&bob]).await;
    app.send_group_text(&alice, group, "one").await;
    app.send_group_text(&alice, group, "two").await;
    app.send_group_text(&bob, group, "mine").await;
    assert_eq!(app.unread(&bob.token, group).await, 2);
    assert_eq!(app.unread(&alice.token, group).await, 1);
});

api_test!(
    members_are_listed_oldest_first_to_every_member,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("Carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let expected = pairs(&[("alice", "owner"), ("bob", "member"), ("Carol", "member")]);
        for viewer in [&alice, &bob, &carol] {
            assert_eq!(
                app.member_roles(&viewer.token, group).await,
                expected,
                "as seen by {}",
                viewer.username
            );
        }
        let members = json_ok(app.group_members(&bob.token, &group.to_string()).await).await;
        let joined: Vec<_> = array(&members, "members")
            .iter()
            .map(|m| assert_recent(&m["joined_at"], "joined_at"))
            .collect();
        assert!(
            joined.windows(2).all(|w| w[0] <= w[1]),
            "oldest first: {members}"
        );
    }
);

api_test!(
    adding_a_member_returns_the_member_object,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("Bob").await;
        let group = app.create_group_id(&alice, "g").await;
        // Looked up case-insensitively, shown as registered.
        let member = json_ok(
            app.add_member(&alice.token, &group.to_string(), "bOB")
                .await,
        )
        .await;
        assert_member(&member, "Bob", "member");
        let entry = app.my_group(&bob.token, group).await.expect("bob is in");
        assert_eq!(str_field(&entry, "role"), "member");
    }
);

api_test!(
    an_admin_may_add_members_but_a_plain_member_may_not,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        app.create_user("carol").await;
        app.create_user("dave").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let g = group.to_string();

        assert_error(app.add_member(&bob.token, &g, "carol").await, 403).await;
        json_ok(app.change_role(&alice.token, &g, "bob", "admin").await).await;
        let member = json_ok(app.add_member(&bob.token, &g, "carol").await).await;
        assert_member(&member, "carol", "member");
        json_ok(app.add_member(&alice.token, &g, "dave").await).await;
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[
                ("alice", "owner"),
                ("bob", "admin"),
                ("carol", "member"),
                ("dave", "member"),
            ])
        );
    }
);

api_test!(a_non_member_cannot_add_anyone, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.create_user("carol").await;
    let group = app.create_group_id(&alice, "g").await.to_string();
    assert_error(app.add_member(&bob.token, &group, "carol").await, 403).await;
    assert_error(app.add_member(&bob.token, &group, "bob").await, 403).await;
    assert_eq!(
        app.member_roles(&alice.token, group.parse().unwrap()).await,
        pairs(&[("alice", "owner")])
    );
});

api_test!(
    adding_an_unknown_user_is_404_and_an_existing_member_409,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let g = group.to_string();
        assert_error(app.add_member(&alice.token, &g, "nobody").await, 404).await;
        assert_error(app.add_member(&alice.token, &g, "bob").await, 409).await;
        assert_error(app.add_member(&alice.token, &g, "BOB").await, 409).await;
        assert_error(app.add_member(&alice.token, &g, "alice").await, 409).await;
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner"), ("bob", "member")])
        );
    }
);

api_test!(
    adding_without_a_username_or_with_one_of_the_wrong_type_is_400,
    |app| async move {
        let alice = app.create_user("alice").await;
        let group = app.create_group_id(&alice, "g").await;
        let path = format!("/groups/{group}/members");
        for body in [
            json!({}),
            json!({"username": 5}),
            json!({"username": ["bob"]}),
        ] {
            assert_error_naming(
                app.post_json(&path, &alice.token, &body).await,
                400,
                "username",
            )
            .await;
        }
    }
);

api_test!(
    every_member_route_on_an_unknown_group_is_404,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let unknown = (app.create_group_id(&alice, "g").await + 1000).to_string();
        assert_error(app.add_member(&alice.token, &unknown, "bob").await, 404).await;
        assert_error(app.group_members(&alice.token, &unknown).await, 404).await;
        assert_error(app.remove_member(&alice.token, &unknown, "bob").await, 404).await;
        assert_error(
            app.change_role(&alice.token, &unknown, "bob", "admin")
                .await,
            404,
        )
        .await;
        assert_error(
            app.post_group_message(&alice.token, &unknown, &json!({"content": "hi"}))
                .await,
            404,
        )
        .await;
    }
);

api_test!(the_owner_removes_anyone_with_204, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let carol = app.create_user("carol").await;
    let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
    let g = group.to_string();
    json_ok(app.change_role(&alice.token, &g, "bob", "admin").await).await;

    for name in ["bob", "CAROL"] {
        let response = app.remove_member(&alice.token, &g, name).await;
        assert_eq!(response.status().as_u16(), 204, "removing {name}");
    }
    assert_eq!(
        app.member_roles(&alice.token, group).await,
        pairs(&[("alice", "owner")])
    );
    assert!(app.my_group(&bob.token, group).await.is_none());
    assert_error(app.group_messages(&carol.token, &g, "").await, 403).await;
});

api_test!(
    an_admin_removes_plain_members_but_not_admins_or_the_owner,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let group = app
            .create_group_with(&alice, "g", &[&bob, &carol, &dave])
            .await;
        let g = group.to_string();
        json_ok(app.change_role(&alice.token, &g, "bob", "admin").await).await;
        json_ok(app.change_role(&alice.token, &g, "carol", "admin").await).await;

        assert_error(app.remove_member(&bob.token, &g, "carol").await, 403).await;
        assert_error(app.remove_member(&bob.token, &g, "alice").await, 403).await;
        let response = app.remove_member(&bob.token, &g, "dave").await;
        assert_eq!(response.status().as_u16(), 204);
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner"), ("bob", "admin"), ("carol", "admin")])
        );
    }
);

api_test!(
    a_plain_member_cannot_remove_someone_else,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let g = group.to_string();
        assert_error(app.remove_member(&bob.token, &g, "carol").await, 403).await;
        assert_error(app.remove_member(&bob.token, &g, "alice").await, 403).await;
        assert_eq!(app.member_roles(&alice.token, group).await.len(), 3);
    }
);

api_test!(
    a_member_or_admin_leaves_by_removing_themself,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let g = group.to_string();
        json_ok(app.change_role(&alice.token, &g, "carol", "admin").await).await;

        assert_eq!(
            app.remove_member(&bob.token, &g, "bob")
                .await
                .status()
                .as_u16(),
            204
        );
        assert_eq!(
            app.remove_member(&carol.token, &g, "Carol")
                .await
                .status()
                .as_u16(),
            204
        );
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner")])
        );
        for gone in [&bob, &carol] {
            assert!(app.my_group(&gone.token, group).await.is_none());
            assert_error(app.group_messages(&gone.token, &g, "").await, 403).await;
        }
    }
);

api_test!(
    the_owner_cannot_leave_while_others_remain,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let g = group.to_string();
        assert_error(app.remove_member(&alice.token, &g, "alice").await, 409).await;
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner"), ("bob", "member")])
        );
        // After handing the group over, the former owner (now admin) may leave.
        json_ok(app.change_role(&alice.token, &g, "bob", "owner").await).await;
        assert_eq!(
            app.remove_member(&alice.token, &g, "alice")
                .await
                .status()
                .as_u16(),
            204
        );
        assert_eq!(
            app.member_roles(&bob.token, group).await,
            pairs(&[("bob", "owner")])
        );
    }
);

api_test!(the_owner_alone_may_leave, |app| async move {
    let alice = app.create_user("alice").await;
    let group = app.create_group_id(&alice, "g").await;
    let response = app
        .remove_member(&alice.token, &group.to_string(), "alice")
        .await;
    assert_eq!(response.status().as_u16(), 204);
    assert!(app.my_group(&alice.token, group).await.is_none());
});

api_test!(removing_a_non_member_is_404, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let group = app.create_group_id(&alice, "g").await.to_string();
    assert_error(app.remove_member(&alice.token, &group, "bob").await, 404).await;
    assert_error(app.remove_member(&alice.token, &group, "nobody").await, 404).await;
});

api_test!(
    the_owner_changes_roles_and_gets_the_member_object,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("Bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let g = group.to_string();
        let member = json_ok(app.change_role(&alice.token, &g, "bob", "admin").await).await;
        assert_member(&member, "Bob", "admin");
        assert_eq!(
            str_field(&app.my_group(&bob.token, group).await.unwrap(), "role"),
            "admin"
        );
        let member = json_ok(app.change_role(&alice.token, &g, "BOB", "member").await).await;
        assert_member(&member, "Bob", "member");
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner"), ("Bob", "member")])
        );
    }
);

api_test!(only_the_owner_may_change_roles, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let carol = app.create_user("carol").await;
    let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
    let g = group.to_string();
    json_ok(app.change_role(&alice.token, &g, "bob", "admin").await).await;

    assert_error(app.change_role(&bob.token, &g, "carol", "admin").await, 403).await;
    assert_error(app.change_role(&bob.token, &g, "bob", "owner").await, 403).await;
    assert_error(
        app.change_role(&carol.token, &g, "carol", "admin").await,
        403,
    )
    .await;
    assert_error(
        app.change_role(&carol.token, &g, "alice", "member").await,
        403,
    )
    .await;
    assert_eq!(
        app.member_roles(&alice.token, group).await,
        pairs(&[("alice", "owner"), ("bob", "admin"), ("carol", "member")])
    );
});

api_test!(
    a_role_other_than_owner_admin_or_member_is_400,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let g = group.to_string();
        for body in [
            json!({"role": "superuser"}),
            json!({"role": ""}),
            json!({"role": 1}),
            json!({}),
        ] {
            let response = app.change_member(&alice.token, &g, "bob", &body).await;
            assert_error(response, 400).await;
        }
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner"), ("bob", "member")])
        );
    }
);

api_test!(making_someone_owner_transfers_ownership, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.create_user("carol").await;
    let group = app.create_group_with(&alice, "g", &[&bob]).await;
    let g = group.to_string();
    let member = json_ok(app.change_role(&alice.token, &g, "bob", "owner").await).await;
    assert_member(&member, "bob", "owner");
    assert_eq!(
        app.member_roles(&bob.token, group).await,
        pairs(&[("alice", "admin"), ("bob", "owner")])
    );
    assert_eq!(
        str_field(&app.my_group(&alice.token, group).await.unwrap(), "role"),
        "admin"
    );
    // The former owner is an admin now: no more role changes...
    assert_error(
        app.change_role(&alice.token, &g, "bob", "member").await,
        403,
    )
    .await;
    // ...but still an admin's rights.
    json_ok(app.add_member(&alice.token, &g, "carol").await).await;
    // The new owner has the owner's rights.
    json_ok(app.change_role(&bob.token, &g, "alice", "member").await).await;
    assert_eq!(
        app.member_roles(&bob.token, group).await,
        pairs(&[("alice", "member"), ("bob", "owner"), ("carol", "member")])
    );
});

api_test!(the_owner_changing_their_own_role_is_409, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let group = app.create_group_with(&alice, "g", &[&bob]).await;
    let g = group.to_string();
    for role in ["admin", "member", "owner"] {
        let response = app.change_role(&alice.token, &g, "alice", role).await;
        let status = response.status().as_u16();
        assert_eq!(status, 409, "owner -> {role} should be 409, got {status}");
        assert_error(response, 409).await;
    }
    assert_eq!(
        app.member_roles(&alice.token, group).await,
        pairs(&[("alice", "owner"), ("bob", "member")])
    );
});

api_test!(
    a_non_member_is_403_on_every_group_read_and_write,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let g = group.to_string();
        let id = int_field(
            &app.send_group_text(&alice, group, "members only").await,
            "id",
        );

        assert_error(app.group_messages(&carol.token, &g, "").await, 403).await;
        assert_error(
            app.post_group_message(&carol.token, &g, &json!({"content": "let me in"}))
                .await,
            403,
        )
        .await;
        assert_error(app.group_members(&carol.token, &g).await, 403).await;
        assert_error(app.add_member(&carol.token, &g, "carol").await, 403).await;
        assert_error(app.remove_member(&carol.token, &g, "bob").await, 403).await;
        assert_error(app.remove_member(&carol.token, &g, "carol").await, 403).await;
        assert_error(app.change_role(&carol.token, &g, "bob", "admin").await, 403).await;
        assert_error(
            app.change_role(&carol.token, &g, "carol", "owner").await,
            403,
        )
        .await;

        // Nothing changed.
        assert_eq!(
            app.group_history_ids(&alice.token, group, "").await,
            vec![id]
        );
        assert_eq!(
            app.member_roles(&alice.token, group).await,
            pairs(&[("alice", "owner"), ("bob", "member")])
        );
    }
);

api_test!(
    a_non_numeric_group_id_is_400_on_every_group_route,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        app.create_group_id(&alice, "g").await;
        for bad in ["abc", "1.5", "-x"] {
            assert_error(app.group_members(&alice.token, bad).await, 400).await;
            assert_error(app.add_member(&alice.token, bad, "bob").await, 400).await;
            assert_error(app.remove_member(&alice.token, bad, "bob").await, 400).await;
            assert_error(
                app.change_role(&alice.token, bad, "bob", "admin").await,
                400,
            )
            .await;
            assert_error(
                app.post_group_message(&alice.token, bad, &json!({"content": "hi"}))
                    .await,
                400,
            )
            .await;
        }
    }
);
