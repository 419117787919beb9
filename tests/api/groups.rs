//! POST /groups and GET /groups/{group_id}/messages on a group without
//! messages. Membership is in `group_membership.rs`; group sends and paging
//! over real messages in `group_messages.rs`.

use serde_json::{json, Value};

use crate::helpers::*;

fn assert_group(group: &Value, name: &str, description: &str, created_by: &str) {
    assert_has_fields(
        group,
        &["id", "name", "description", "created_at", "created_by"],
    );
    assert!(int_field(group, "id") > 0, "id should be positive: {group}");
    assert_eq!(str_field(group, "name"), name, "{group}");
    assert_eq!(str_field(group, "description"), description, "{group}");
    assert_recent(&group["created_at"], "created_at");
    assert_eq!(str_field(group, "created_by"), created_by, "{group}");
}

api_test!(creating_a_group_returns_it, |app| async move {
    let alice = app.create_user("Alice").await;
    let group = json_ok(
        app.create_group(
            &alice.token,
            &json!({"name": "Rustaceans", "description": "All things Rust"}),
        )
        .await,
    )
    .await;
    assert_group(&group, "Rustaceans", "All things Rust", "Alice");
});

api_test!(the_description_defaults_to_empty, |app| async move {
    let alice = app.create_user("alice").await;
    let group = json_ok(
        app.create_group(&alice.token, &json!({"name": "No description"}))
            .await,
    )
    .await;
    assert_group(&group, "No description", "", "alice");
});

api_test!(
    groups_get_distinct_ids_even_with_the_same_name,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let first = app.create_group_id(&alice, "Book club").await;
        let second = app.create_group_id(&alice, "Book club").await;
        let third = app.create_group_id(&bob, "Book club").await;
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert_ne!(first, third);
    }
);

api_test!(
    group_names_of_1_and_100_characters_are_accepted,
    |app| async move {
        let alice = app.create_user("alice").await;
        let long_name = "n".repeat(100);
        let long_description = "d".repeat(1000);
        for (name, description) in [
            ("x", ""),
            (long_name.as_str(), long_description.as_str()),
            ("ünïcödé 😀", ""),
        ] {
            let group = json_ok(
                app.create_group(
                    &alice.token,
                    &json!({"name": name, "description": description}),
                )
                .await,
            )
            .await;
            assert_group(&group, name, description, "alice");
        }
    }
);

api_test!(
    a_group_name_empty_or_over_100_characters_is_400_naming_name,
    |app| async move {
        let alice = app.create_user("alice").await;
        for name in [String::new(), "n".repeat(101)] {
            let response = app.create_group(&alice.token, &json!({"name": name})).await;
            assert_error_naming(response, 400, "name").await;
        }
    }
);

api_test!(
    a_description_over_1000_characters_is_400,
    |app| async move {
        let alice = app.create_user("alice").await;
        let response = app
            .create_group(
                &alice.token,
                &json!({"name": "g", "description": "d".repeat(1001)}),
            )
            .await;
        assert_error(response, 400).await;
    }
);

api_test!(
    creating_a_group_without_a_name_is_400_naming_name,
    |app| async move {
        let alice = app.create_user("alice").await;
        let response = app
            .create_group(&alice.token, &json!({"description": "nameless"}))
            .await;
        assert_error_naming(response, 400, "name").await;
    }
);

api_test!(
    creating_a_group_with_a_field_of_the_wrong_type_is_400_naming_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        for (field, value) in [
            ("name", json!(5)),
            ("name", json!(["g"])),
            ("description", json!(true)),
        ] {
            let mut body = json!({"name": "g", "description": "d"});
            body[field] = value;
            assert_error_naming(app.create_group(&alice.token, &body).await, 400, field).await;
        }
    }
);

api_test!(the_creator_reads_an_empty_message_list, |app| async move {
    let alice = app.create_user("alice").await;
    let group = app.create_group_id(&alice, "g").await;
    for query in [
        "",
        "limit=10",
        "after=0",
        "before=1000&limit=500",
        "limit=100000",
    ] {
        let messages = json_ok(
            app.group_messages(&alice.token, &group.to_string(), query)
                .await,
        )
        .await;
        assert_eq!(
            array(&messages, "group messages").len(),
            0,
            "?{query}: {messages}"
        );
    }
});

api_test!(
    private_messages_do_not_show_up_in_a_group,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await;
        app.send_text(&alice, "bob", "private").await;
        let messages = json_ok(
            app.group_messages(&alice.token, &group.to_string(), "")
                .await,
        )
        .await;
        assert_eq!(array(&messages, "group messages").len(), 0, "{messages}");
    }
);

api_test!(someone_outside_the_group_is_403, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let group = app.create_group_id(&alice, "g").await;
    assert_error(
        app.group_messages(&bob.token, &group.to_string(), "").await,
        403,
    )
    .await;
    // Bob's own group does not let him into Alice's.
    app.create_group_id(&bob, "bobs").await;
    assert_error(
        app.group_messages(&bob.token, &group.to_string(), "").await,
        403,
    )
    .await;
});

api_test!(an_unknown_group_is_404, |app| async move {
    let alice = app.create_user("alice").await;
    let group = app.create_group_id(&alice, "g").await;
    for unknown in [group + 1, group + 1_000_000] {
        assert_error(
            app.group_messages(&alice.token, &unknown.to_string(), "")
                .await,
            404,
        )
        .await;
    }
});

api_test!(a_non_integer_group_id_is_400, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_group_id(&alice, "g").await;
    for bad in ["abc", "1.5", "1e3"] {
        assert_error(app.group_messages(&alice.token, bad, "").await, 400).await;
    }
});

api_test!(invalid_group_paging_parameters_are_400, |app| async move {
    let alice = app.create_user("alice").await;
    let group = app.create_group_id(&alice, "g").await.to_string();
    for query in [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "before=-1",
        "before=abc",
        "before=1.5",
        "after=-1",
        "after=x",
        "after=1.5",
    ] {
        let response = app.group_messages(&alice.token, &group, query).await;
        let status = response.status().as_u16();
        assert_eq!(status, 400, "?{query} should be 400, got {status}");
        assert_error(response, 400).await;
    }
});
