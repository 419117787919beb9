//! POST /messages/private and GET /messages/private/{username}, with paging.

use futures_util::StreamExt;
use serde_json::json;

use crate::helpers::*;

api_test!(sending_a_private_message_returns_it, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;

    let body = json_ok(
        app.send_private(
            &alice.token,
            &json!({
                "recipient": "bob",
                "content": "hello bob",
                "message_type": "text",
                "content_type": "text/plain",
            }),
        )
        .await,
    )
    .await;

    assert_private_message(&body, "alice", "bob", "hello bob");
    // Bob has no socket open, so the message is stored but not delivered.
    assert_eq!(str_field(&body, "status"), "sent", "{body}");
});

api_test!(optional_fields_may_be_left_out, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let body = app.send_text(&alice, "bob", "just content").await;
    assert_private_message(&body, "alice", "bob", "just content");
});

api_test!(content_round_trips_exactly, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let content = AWKWARD_CONTENT;
    let sent = app.send_text(&alice, "bob", content).await;
    assert_eq!(str_field(&sent, "content"), content);
    let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
    assert_eq!(str_field(&history[0], "content"), content);
});

api_test!(
    a_nul_character_in_stored_text_is_400_naming_the_field,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await.to_string();
        let with_nul = "before\u{0}after";
        let refused = [
            (
                app.send_private(
                    &alice.token,
                    &json!({"recipient": "bob", "content": with_nul}),
                )
                .await,
                "content",
            ),
            (
                app.post_group_message(&alice.token, &group, &json!({"content": with_nul}))
                    .await,
                "content",
            ),
            (
                app.create_group(&alice.token, &json!({"name": with_nul}))
                    .await,
                "name",
            ),
            (
                app.create_group(
                    &alice.token,
                    &json!({"name": "g2", "description": with_nul}),
                )
                .await,
                "description",
            ),
        ];
        let device = app
            .register_device(
                &alice.token,
                &json!({"device_id": "phone", "device_name": with_nul}),
            )
            .await;
        for (response, field) in refused.into_iter().chain([(device, "device_name")]) {
            assert_error_naming(response, 400, field).await;
        }

        let mut socket = app.ws_connect(&alice.token).await;
        ws_wait_ready(&mut socket).await;
        let frame =
            json!({"type": "message", "recipient": "bob", "content": "hi", "client_id": with_nul});
        let reply = ws_send_and_recv(&mut socket, &frame).await;
        assert_error_frame(&reply, 400);
        assert_detail_names(&reply, "client_id");

        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_eq!(array(&history, "history").len(), 0, "nothing was stored");
    }
);

api_test!(message_ids_increase, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let first = int_field(&app.send_text(&alice, "bob", "one").await, "id");
    let second = int_field(&app.send_text(&alice, "bob", "two").await, "id");
    assert!(second > first, "ids should increase: {first} then {second}");
});

api_test!(
    the_recipient_is_looked_up_case_insensitively_and_shown_as_registered,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("Bob").await;

        let body = app.send_text(&alice, "bOB", "hi").await;
        assert_private_message(&body, "alice", "Bob", "hi");

        for path_name in ["BOB", "bob", "Bob"] {
            let history = json_ok(app.private_history(&alice.token, path_name, "").await).await;
            let history = array(&history, "history");
            assert_eq!(history.len(), 1, "history with {path_name}: {history:?}");
            assert_eq!(str_field(&history[0], "recipient"), "Bob");
        }
    }
);

api_test!(
    the_conversation_lists_both_directions_in_ascending_id,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;

        let m1 = app.send_text(&alice, "bob", "a to b 1").await;
        app.send_text(&alice, "carol", "a to c").await;
        let m2 = app.send_text(&bob, "alice", "b to a").await;
        app.send_text(&carol, "bob", "c to b").await;
        let m3 = app.send_text(&alice, "bob", "a to b 2").await;
        let expected: Vec<i64> = [&m1, &m2, &m3].iter().map(|m| int_field(m, "id")).collect();

        for (viewer, other) in [(&alice, "bob"), (&bob, "alice")] {
            let history = json_ok(app.private_history(&viewer.token, other, "").await).await;
            let history = array(&history, "history");
            let ids: Vec<i64> = history.iter().map(|m| int_field(m, "id")).collect();
            assert_eq!(
                ids, expected,
                "{} sees the conversation with {other}",
                viewer.username
            );
            assert_private_message(&history[0], "alice", "bob", "a to b 1");
            assert_private_message(&history[1], "bob", "alice", "b to a");
            assert_private_message(&history[2], "alice", "bob", "a to b 2");
            for (listed, sent) in history.iter().zip([&m1, &m2, &m3]) {
                assert_eq!(
                    listed["timestamp"], sent["timestamp"],
                    "timestamps are stable"
                );
            }
        }
    }
);

api_test!(a_conversation_never_started_is_empty, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.create_user("carol").await;
    app.send_text(&bob, "carol", "not for alice").await;
    let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
    assert_eq!(array(&history, "history").len(), 0, "{history}");
});

api_test!(
    an_unknown_user_is_404_as_recipient_and_in_the_path,
    |app| async move {
        let alice = app.create_user("alice").await;
        let response = app
            .send_private(
                &alice.token,
                &json!({"recipient": "nobody", "content": "hi"}),
            )
            .await;
        assert_error(response, 404).await;
        assert_error(app.private_history(&alice.token, "nobody", "").await, 404).await;
    }
);

api_test!(
    sending_to_yourself_is_400_naming_recipient,
    |app| async move {
        let alice = app.create_user("alice").await;
        for me in ["alice", "ALICE"] {
            let response = app
                .send_private(
                    &alice.token,
                    &json!({"recipient": me, "content": "note to self"}),
                )
                .await;
            assert_error_naming(response, 400, "recipient").await;
        }
    }
);

api_test!(
    content_of_1_to_8192_characters_is_accepted,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        for content in [
            "x".to_string(),
            "a".repeat(8192),
            "é".repeat(8192),
            "😀".repeat(8192),
        ] {
            let body = app.send_text(&alice, "bob", &content).await;
            assert_eq!(str_field(&body, "content"), content);
        }
    }
);

api_test!(
    empty_or_over_8192_character_content_is_400_naming_content,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        for content in [String::new(), "a".repeat(8193), "é".repeat(8193)] {
            let response = app
                .send_private(
                    &alice.token,
                    &json!({"recipient": "bob", "content": content}),
                )
                .await;
            assert_error_naming(response, 400, "content").await;
        }
        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_eq!(
            array(&history, "history").len(),
            0,
            "nothing was stored: {history}"
        );
    }
);

api_test!(
    sending_without_a_required_field_is_400_naming_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        assert_error_naming(
            app.send_private(&alice.token, &json!({"content": "hi"}))
                .await,
            400,
            "recipient",
        )
        .await;
        assert_error_naming(
            app.send_private(&alice.token, &json!({"recipient": "bob"}))
                .await,
            400,
            "content",
        )
        .await;
    }
);

api_test!(
    sending_a_field_of_the_wrong_type_is_400_naming_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        for (field, value) in [
            ("recipient", json!(7)),
            ("content", json!(42)),
            ("content", json!(["hi"])),
            ("message_type", json!(1)),
            ("content_type", json!({"type": "text"})),
        ] {
            let mut body = json!({"recipient": "bob", "content": "hi"});
            body[field] = value;
            assert_error_naming(app.send_private(&alice.token, &body).await, 400, field).await;
        }
    }
);

/// Builds a seven-message conversation between alice and bob, with alice
/// writing to carol after each one so that the conversation's ids are not
/// contiguous. Returns (alice, bob, conversation ids, the noise ids).
async fn seven_message_conversation(app: &TestApp) -> (TestUser, TestUser, Vec<i64>, Vec<i64>) {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    app.create_user("carol").await;
    let mut ids = Vec::new();
    let mut noise = Vec::new();
    for i in 0..7 {
        let message = if i % 2 == 0 {
            app.send_text(&alice, "bob", &format!("m{i}")).await
        } else {
            app.send_text(&bob, "alice", &format!("m{i}")).await
        };
        ids.push(int_field(&message, "id"));
        noise.push(int_field(
            &app.send_text(&alice, "carol", &format!("noise{i}")).await,
            "id",
        ));
    }
    (alice, bob, ids, noise)
}

api_test!(
    without_a_cursor_the_newest_limit_messages_come_in_ascending_order,
    |app| async move {
        let (alice, bob, m, _) = seven_message_conversation(&app).await;
        assert_eq!(
            app.history_ids(&alice.token, "bob", "").await,
            m,
            "default limit 50 covers all"
        );
        assert_eq!(
            app.history_ids(&alice.token, "bob", "limit=3").await,
            m[4..7].to_vec()
        );
        assert_eq!(
            app.history_ids(&bob.token, "alice", "limit=3").await,
            m[4..7].to_vec()
        );
        assert_eq!(
            app.history_ids(&alice.token, "bob", "limit=1").await,
            vec![m[6]]
        );
        assert_eq!(app.history_ids(&alice.token, "bob", "limit=7").await, m);
        assert_eq!(app.history_ids(&alice.token, "bob", "limit=500").await, m);
    }
);

api_test!(
    before_pages_backwards_down_to_an_empty_page,
    |app| async move {
        let (alice, _bob, m, noise) = seven_message_conversation(&app).await;
        let page = |q: String| {
            let app = &app;
            let token = alice.token.clone();
            async move { app.history_ids(&token, "bob", &q).await }
        };
        assert_eq!(
            page(format!("before={}&limit=3", m[4])).await,
            m[1..4].to_vec()
        );
        assert_eq!(
            page(format!("before={}&limit=3", m[1])).await,
            vec![m[0]],
            "first page is short"
        );
        assert_eq!(
            page(format!("before={}&limit=3", m[0])).await,
            Vec::<i64>::new(),
            "nothing before the first"
        );
        assert_eq!(
            page(format!("before={}", m[6])).await,
            m[0..6].to_vec(),
            "default limit"
        );
        // A cursor need not be an id of this conversation.
        assert_eq!(
            page(format!("before={}&limit=2", noise[3])).await,
            m[2..4].to_vec()
        );
        // A cursor above every id gives the newest page.
        assert_eq!(
            page(format!("before={}&limit=2", noise[6] + 1000)).await,
            m[5..7].to_vec()
        );
    }
);

api_test!(
    after_pages_forwards_from_the_first_message_to_an_empty_page,
    |app| async move {
        let (alice, bob, m, noise) = seven_message_conversation(&app).await;
        let page = |q: String| {
            let app = &app;
            let token = alice.token.clone();
            async move { app.history_ids(&token, "bob", &q).await }
        };
        assert_eq!(
            page("after=0&limit=3".to_string()).await,
            m[0..3].to_vec(),
            "after=0 starts at the first"
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[2])).await,
            m[3..6].to_vec()
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[5])).await,
            vec![m[6]],
            "last page is short"
        );
        assert_eq!(
            page(format!("after={}&limit=3", m[6])).await,
            Vec::<i64>::new(),
            "nothing after the last"
        );
        assert_eq!(page("after=0".to_string()).await, m, "default limit");
        // A cursor need not be an id of this conversation.
        assert_eq!(
            page(format!("after={}&limit=2", noise[3])).await,
            m[4..6].to_vec()
        );
        // The other side sees the same pages.
        assert_eq!(
            app.history_ids(&bob.token, "alice", "after=0&limit=3")
                .await,
            m[0..3].to_vec()
        );
    }
);

api_test!(a_limit_above_500_is_read_as_500, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let app_ref = &app;
    let alice_ref = &alice;
    let mut ids: Vec<i64> = futures_util::stream::iter(0..501)
        .map(|i| async move {
            int_field(
                &app_ref.send_text(alice_ref, "bob", &format!("n{i}")).await,
                "id",
            )
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 501, "501 distinct ids");

    assert_eq!(
        app.history_ids(&alice.token, "bob", "limit=1000").await,
        ids[1..].to_vec()
    );
    assert_eq!(
        app.history_ids(&alice.token, "bob", "limit=501").await,
        ids[1..].to_vec()
    );
    assert_eq!(
        app.history_ids(&alice.token, "bob", "limit=500").await,
        ids[1..].to_vec()
    );
    assert_eq!(
        app.history_ids(&alice.token, "bob", "after=0&limit=100000")
            .await,
        ids[..500].to_vec()
    );
    assert_eq!(
        app.history_ids(&alice.token, "bob", "").await,
        ids[451..].to_vec(),
        "default 50"
    );
});

api_test!(invalid_paging_parameters_are_400, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    app.send_text(&alice, "bob", "hi").await;
    for query in [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "before=-1",
        "before=abc",
        "before=1.5",
        "after=-1",
        "after=abc",
        "after=1.5",
    ] {
        let response = app.private_history(&alice.token, "bob", query).await;
        let status = response.status().as_u16();
        assert_eq!(status, 400, "?{query} should be 400, got {status}");
        assert_error(response, 400).await;
    }
});
