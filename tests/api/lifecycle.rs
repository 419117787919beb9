//! What a message goes through after it is sent: replies (`reply_to`),
//! edits (`PATCH /messages/{id}`), deletions that leave a tombstone
//! (`DELETE /messages/{id}`) and reactions (`PUT`/`DELETE
//! /messages/{id}/reaction`). Each change reaches every socket of everyone
//! who can see the message as a `message_updated` frame, in order behind the
//! message itself, and `sync` replays it to a client that was away.

use serde_json::{json, Value};

use crate::helpers::*;

async fn edit(app: &TestApp, token: &str, id: i64, content: &str) -> reqwest::Response {
    app.patch_json(
        &format!("/messages/{id}"),
        token,
        &json!({ "content": content }),
    )
    .await
}

async fn delete(app: &TestApp, token: &str, id: i64) -> reqwest::Response {
    app.delete(&format!("/messages/{id}"), token).await
}

async fn react(app: &TestApp, token: &str, id: i64, emoji: &str) -> reqwest::Response {
    app.put_json(
        &format!("/messages/{id}/reaction"),
        token,
        &json!({ "emoji": emoji }),
    )
    .await
}

async fn unreact(app: &TestApp, token: &str, id: i64) -> reqwest::Response {
    app.delete(&format!("/messages/{id}/reaction"), token).await
}

/// The next `message_updated` frame (other frames but presence fail the test).
async fn next_update(ws: &mut WsStream) -> Value {
    let frame = ws_recv_skipping_presence(ws).await;
    assert_eq!(
        frame["type"], "message_updated",
        "expected an update: {frame}"
    );
    frame
}

/// The message with `id` in a history page.
fn find(history: &Value, id: i64) -> Value {
    array(history, "history")
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("message {id} is not in {history}"))
}

api_test!(
    a_reply_names_the_message_it_answers_in_the_push_the_ack_and_history,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let first = int_field(&app.send_text(&alice, "bob", "lunch?").await, "id");
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        // Over the socket...
        ws_send(
            &mut bob_ws,
            &json!({"type": "message", "recipient": "alice", "content": "yes",
                    "client_id": "r1", "reply_to": first}),
        )
        .await;
        let ack = ws_recv_skipping_presence(&mut bob_ws).await;
        let reply = assert_ack(&ack, "r1", "delivered");
        let pushed = ws_recv_skipping_presence(&mut alice_ws).await;
        assert_private_frame(&pushed, "bob", "alice", "yes");
        assert_eq!(pushed["reply_to"], first, "{pushed}");

        // ...and over REST.
        let sent = json_ok(
            app.send_private(
                &alice.token,
                &json!({"recipient": "bob", "content": "noon", "reply_to": reply}),
            )
            .await,
        )
        .await;
        assert_eq!(sent["reply_to"], reply, "{sent}");
        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_eq!(find(&history, reply)["reply_to"], first);
        assert_eq!(find(&history, int_field(&sent, "id"))["reply_to"], reply);
        assert!(
            find(&history, first).get("reply_to").is_none(),
            "a message that answers nothing has no reply_to: {history}"
        );
    }
);

api_test!(
    a_reply_must_answer_a_message_of_the_same_conversation,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let theirs = int_field(&app.send_text(&bob, "carol", "private").await, "id");
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let in_group = int_field(&app.send_group_text(&alice, group, "hi team").await, "id");

        for reply_to in [theirs, in_group, 999_999] {
            let body = json!({"recipient": "bob", "content": "re", "reply_to": reply_to});
            assert_error_naming(app.send_private(&alice.token, &body).await, 404, "reply_to").await;
        }
        let body = json!({"content": "re", "reply_to": theirs});
        assert_error_naming(
            app.post_group_message(&bob.token, &group.to_string(), &body)
                .await,
            404,
            "reply_to",
        )
        .await;
        let body = json!({"content": "re", "reply_to": in_group});
        let posted = json_ok(
            app.post_group_message(&bob.token, &group.to_string(), &body)
                .await,
        )
        .await;
        assert_eq!(posted["reply_to"], in_group);
        let body = json!({"recipient": "bob", "content": "re", "reply_to": "first"});
        assert_error(app.send_private(&alice.token, &body).await, 400).await;
        // Nor across conversations, even to a message the sender can see.
        let body = json!({"recipient": "alice", "content": "re", "reply_to": theirs});
        let own = int_field(&app.send_text(&carol, "alice", "hello alice").await, "id");
        assert_error_naming(app.send_private(&carol.token, &body).await, 404, "reply_to").await;
        let body = json!({"recipient": "alice", "content": "re", "reply_to": own});
        json_ok(app.send_private(&carol.token, &body).await).await;
    }
);

api_test!(
    an_edit_reaches_both_parties_and_shows_in_history_with_its_time,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let id = int_field(&app.send_text(&alice, "bob", "helo").await, "id");
        let mut alice_ws = app.ws_connect(&alice.token).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let edited = json_ok(edit(&app, &alice.token, id, "hello").await).await;
        assert_eq!(edited["content"], "hello");
        assert_recent(&edited["edited_at"], "edited_at");
        for ws in [&mut alice_ws, &mut bob_ws] {
            let frame = next_update(ws).await;
            assert_eq!(
                (frame["id"].as_i64(), &frame["content"]),
                (Some(id), &json!("hello"))
            );
            assert_eq!(frame["recipient"], "bob");
            assert_eq!(frame["edited_at"], edited["edited_at"]);
            assert!(int_field(&frame, "change_id") > id, "{frame}");
        }
        let history = json_ok(app.private_history(&bob.token, "alice", "").await).await;
        let message = find(&history, id);
        assert_eq!(message["content"], "hello");
        assert_eq!(message["edited_at"], edited["edited_at"]);
    }
);

api_test!(
    only_the_sender_edits_and_a_stranger_is_told_nothing_exists,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let id = int_field(&app.send_text(&alice, "bob", "mine").await, "id");
        assert_error_naming(edit(&app, &bob.token, id, "yours").await, 403, "message_id").await;
        assert_error_naming(edit(&app, &carol.token, id, "x").await, 404, "message_id").await;
        assert_error_naming(
            edit(&app, &alice.token, 999_999, "x").await,
            404,
            "message_id",
        )
        .await;
        assert_error_naming(edit(&app, &alice.token, id, "").await, 400, "content").await;
        assert_error(
            app.patch_json("/messages/0", &alice.token, &json!({"content": "x"}))
                .await,
            400,
        )
        .await;
        assert_error(
            app.patch_json(&format!("/messages/{id}"), &alice.token, &json!({}))
                .await,
            400,
        )
        .await;
        json_ok(delete(&app, &alice.token, id).await).await;
        assert_error_naming(
            edit(&app, &alice.token, id, "back").await,
            409,
            "message_id",
        )
        .await;
        let history = json_ok(app.private_history(&bob.token, "alice", "").await).await;
        assert_eq!(
            find(&history, id)["content"],
            "",
            "nobody's edit went through"
        );
    }
);

api_test!(
    a_deleted_message_stays_as_a_tombstone_and_pages_keep_their_ids,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut ids = Vec::new();
        for text in ["one", "two", "three"] {
            ids.push(int_field(&app.send_text(&alice, "bob", text).await, "id"));
        }
        json_ok(react(&app, &bob.token, ids[1], "👍").await).await;
        assert_error_naming(delete(&app, &bob.token, ids[1]).await, 403, "message_id").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;

        let tombstone = json_ok(delete(&app, &alice.token, ids[1]).await).await;
        assert_eq!(tombstone["deleted"], true);
        assert_eq!(tombstone["content"], "");
        assert!(tombstone.get("reactions").is_none(), "{tombstone}");
        let frame = next_update(&mut bob_ws).await;
        assert_eq!(
            (frame["id"].as_i64(), &frame["deleted"]),
            (Some(ids[1]), &json!(true))
        );
        assert_eq!(frame["content"], "");

        assert_eq!(app.history_ids(&bob.token, "alice", "").await, ids);
        let history = json_ok(app.private_history(&bob.token, "alice", "").await).await;
        assert_eq!(find(&history, ids[1])["deleted"], true);
        assert!(find(&history, ids[0]).get("deleted").is_none());
        // Deleting a tombstone again changes nothing and pushes nothing.
        let again = json_ok(delete(&app, &alice.token, ids[1]).await).await;
        assert_eq!(again["deleted"], true);
        ws_assert_quiet(
            &mut bob_ws,
            std::time::Duration::from_millis(300),
            "nothing changed",
        )
        .await;
        assert_error_naming(
            react(&app, &bob.token, ids[1], "👍").await,
            409,
            "message_id",
        )
        .await;
    }
);

api_test!(
    a_group_message_is_deleted_by_its_sender_an_admin_or_the_owner_only,
    |app| async move {
        let owner = app.create_user("owner").await;
        let admin = app.create_user("admin").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app
            .create_group_with(&owner, "team", &[&admin, &bob, &carol])
            .await;
        json_ok(
            app.change_role(&owner.token, &group.to_string(), "admin", "admin")
                .await,
        )
        .await;
        let mut ids = Vec::new();
        for text in ["a", "b", "c"] {
            ids.push(int_field(
                &app.send_group_text(&bob, group, text).await,
                "id",
            ));
        }
        let owners = int_field(&app.send_group_text(&owner, group, "mine").await, "id");

        assert_error_naming(delete(&app, &carol.token, ids[0]).await, 403, "message_id").await;
        assert_error_naming(delete(&app, &admin.token, owners).await, 403, "message_id").await;
        let stranger = app.create_user("stranger").await;
        assert_error_naming(
            delete(&app, &stranger.token, ids[0]).await,
            404,
            "message_id",
        )
        .await;
        assert_eq!(
            json_ok(delete(&app, &bob.token, ids[0]).await).await["deleted"],
            true
        );
        assert_eq!(
            json_ok(delete(&app, &admin.token, ids[1]).await).await["deleted"],
            true
        );
        assert_eq!(
            json_ok(delete(&app, &owner.token, ids[2]).await).await["deleted"],
            true
        );
        let history = json_ok(
            app.group_messages(&carol.token, &group.to_string(), "")
                .await,
        )
        .await;
        for id in &ids {
            assert_eq!(find(&history, *id)["deleted"], true, "{history}");
        }
        assert!(find(&history, owners).get("deleted").is_none());
    }
);

api_test!(
    a_file_mentioned_only_by_deleted_messages_is_no_longer_shared,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let upload = json_ok(
            app.upload_file(&alice.token, "plan.txt", b"the plan".to_vec())
                .await,
        )
        .await;
        let file_id = str_field(&upload, "file_id").to_string();
        let first = app
            .send_text(&alice, "bob", &format!("see /files/{file_id}"))
            .await;
        let second = app
            .send_text(&alice, "bob", &format!("again {file_id}"))
            .await;
        assert_eq!(app.download_file(&bob.token, &file_id).await.status(), 200);

        json_ok(delete(&app, &alice.token, int_field(&first, "id")).await).await;
        assert_eq!(
            app.download_file(&bob.token, &file_id).await.status(),
            200,
            "another message still shares it"
        );
        // An edit that drops the mention stops sharing it as well.
        json_ok(edit(&app, &alice.token, int_field(&second, "id"), "never mind").await).await;
        assert_error(app.download_file(&bob.token, &file_id).await, 404).await;
        assert_eq!(
            app.download_file(&alice.token, &file_id).await.status(),
            200,
            "the uploader still can"
        );
    }
);

api_test!(
    each_user_has_one_reaction_per_message_and_both_parties_see_every_change,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let id = int_field(&app.send_text(&alice, "bob", "party?").await, "id");
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let after_bob = json_ok(react(&app, &bob.token, id, "👍").await).await;
        assert_eq!(
            after_bob["reactions"],
            json!([{"emoji": "👍", "count": 1, "users": ["bob"]}])
        );
        let frame = next_update(&mut alice_ws).await;
        assert_eq!(frame["reactions"], after_bob["reactions"]);

        json_ok(react(&app, &alice.token, id, "👍").await).await;
        let changed = json_ok(react(&app, &bob.token, id, "🎉").await).await;
        assert_eq!(
            changed["reactions"],
            json!([{"emoji": "👍", "count": 1, "users": ["alice"]},
                   {"emoji": "🎉", "count": 1, "users": ["bob"]}]),
            "bob's reaction moved; alice's stayed"
        );
        assert_eq!(next_update(&mut alice_ws).await["reactions"][0]["count"], 2);
        assert_eq!(
            next_update(&mut alice_ws).await["reactions"],
            changed["reactions"]
        );

        // The same reaction again changes nothing.
        json_ok(react(&app, &bob.token, id, "🎉").await).await;
        ws_assert_quiet(
            &mut alice_ws,
            std::time::Duration::from_millis(300),
            "nothing changed",
        )
        .await;

        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_eq!(find(&history, id)["reactions"], changed["reactions"]);
        json_ok(unreact(&app, &alice.token, id).await).await;
        assert_eq!(
            next_update(&mut alice_ws).await["reactions"],
            json!([{"emoji": "🎉", "count": 1, "users": ["bob"]}])
        );
        // Taking back a reaction one does not have changes nothing either.
        json_ok(unreact(&app, &alice.token, id).await).await;
        ws_assert_quiet(
            &mut alice_ws,
            std::time::Duration::from_millis(300),
            "nothing changed",
        )
        .await;
        let last = json_ok(unreact(&app, &bob.token, id).await).await;
        assert!(last.get("reactions").is_none(), "{last}");
    }
);

api_test!(
    a_reaction_is_one_short_string_on_a_message_the_caller_can_see,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let id = int_field(&app.send_text(&alice, "bob", "hi").await, "id");
        for emoji in ["", "a b", "tab\t", &"🙂".repeat(17)] {
            assert_error_naming(react(&app, &bob.token, id, emoji).await, 400, "emoji").await;
        }
        assert_error(
            app.put_json(
                &format!("/messages/{id}/reaction"),
                &bob.token,
                &json!({"emoji": 5}),
            )
            .await,
            400,
        )
        .await;
        assert_error_naming(react(&app, &carol.token, id, "👍").await, 404, "message_id").await;
        assert_error_naming(unreact(&app, &carol.token, id).await, 404, "message_id").await;
        assert_error_naming(
            react(&app, &bob.token, 999_999, "👍").await,
            404,
            "message_id",
        )
        .await;
        let composed = "👩‍👩‍👧‍👦";
        let reacted = json_ok(react(&app, &bob.token, id, composed).await).await;
        assert_eq!(reacted["reactions"][0]["emoji"], composed);
    }
);

api_test!(
    every_member_sees_a_group_message_before_its_changes_in_order,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let group = app.create_group_with(&alice, "team", &[&bob, &carol]).await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut carol_ws = app.ws_connect(&carol.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        // Sent over the socket and changed at once over REST, before the
        // socket's ack is read: the changes are queued behind the message.
        ws_send(&mut alice_ws, &group_socket_message(group, "draft", "g1")).await;
        let ack = ws_recv_skipping_presence(&mut alice_ws).await;
        let id = assert_ack(&ack, "g1", "delivered");
        let (edited, reacted) = tokio::join!(
            edit(&app, &alice.token, id, "final"),
            react(&app, &carol.token, id, "👀"),
        );
        json_ok(edited).await;
        json_ok(reacted).await;
        for ws in [&mut bob_ws, &mut carol_ws] {
            let message = ws_recv_skipping_presence(ws).await;
            assert_group_frame(&message, group, "alice", "draft");
            let first = next_update(ws).await;
            let second = next_update(ws).await;
            assert!(
                int_field(&first, "change_id") < int_field(&second, "change_id"),
                "changes arrive in order: {first} then {second}"
            );
            assert_eq!(second["group_id"], group);
            assert_eq!(second["content"], "final");
            assert_eq!(second["reactions"][0]["users"], json!(["carol"]));
        }
        let history = json_ok(app.group_messages(&bob.token, &group.to_string(), "").await).await;
        let message = find(&history, id);
        assert_eq!(
            (&message["content"], &message["reactions"][0]["emoji"]),
            (&json!("final"), &json!("👀"))
        );
    }
);

api_test!(
    sync_replays_to_a_client_that_was_away_every_change_it_missed,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let mut ids = Vec::new();
        for text in ["one", "two", "three"] {
            ids.push(int_field(&app.send_text(&alice, "bob", text).await, "id"));
        }
        let in_group = int_field(&app.send_group_text(&alice, group, "g").await, "id");
        // Bob has seen everything up to here.
        let since = in_group;

        json_ok(edit(&app, &alice.token, ids[0], "one, edited").await).await;
        json_ok(edit(&app, &alice.token, ids[0], "one, edited twice").await).await;
        json_ok(delete(&app, &alice.token, ids[1]).await).await;
        json_ok(react(&app, &alice.token, in_group, "✅").await).await;
        let newer = int_field(&app.send_text(&alice, "bob", "four").await, "id");
        json_ok(react(&app, &alice.token, newer, "🔥").await).await;
        // A change bob cannot see is not replayed to him.
        let carol = app.create_user("carol").await;
        let hidden = int_field(&app.send_text(&alice, "carol", "not for bob").await, "id");
        json_ok(edit(&app, &alice.token, hidden, "still not for bob").await).await;
        let _ = carol;

        let mut bob_ws = app.ws_connect(&bob.token).await;
        let (replayed, synced) = ws_sync(&mut bob_ws, since).await;
        let kinds: Vec<(String, i64)> = replayed
            .iter()
            .map(|f| (str_field(f, "type").to_string(), int_field(f, "id")))
            .collect();
        assert_eq!(
            kinds,
            [
                ("message_updated".to_string(), ids[0]),
                ("message_updated".to_string(), ids[1]),
                ("message_updated".to_string(), in_group),
                ("message".to_string(), newer),
            ],
            "each changed message once, in its latest state, in sequence order: {replayed:?}"
        );
        assert_eq!(replayed[0]["content"], "one, edited twice");
        assert_recent(&replayed[0]["edited_at"], "edited_at");
        assert_eq!(
            (&replayed[1]["deleted"], &replayed[1]["content"]),
            (&json!(true), &json!(""))
        );
        assert_eq!(replayed[2]["reactions"][0]["emoji"], "✅");
        assert_eq!(replayed[2]["group_id"], group);
        assert_eq!(
            replayed[3]["reactions"][0]["emoji"], "🔥",
            "a new message comes as it is now"
        );
        let last_id = int_field(&synced, "last_id");
        assert_eq!(last_id, int_field(&replayed[3], "change_id"), "{synced}");

        // From there on nothing is left to replay; one more change comes next.
        let (replayed, synced) = ws_sync(&mut bob_ws, last_id).await;
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(int_field(&synced, "last_id"), last_id);
        json_ok(unreact(&app, &alice.token, in_group).await).await;
        let pushed = next_update(&mut bob_ws).await;
        let (replayed, _) = ws_sync(&mut bob_ws, last_id).await;
        assert_eq!(ids_of(&replayed), [in_group]);
        assert_eq!(replayed[0]["change_id"], pushed["change_id"]);
        assert!(replayed[0].get("reactions").is_none(), "{replayed:?}");
    }
);

api_test!(
    edits_and_reactions_count_against_the_message_rate_limit,
    config(|c| {
        c.rate_limits = parley::config::Switch::On;
        c.message_rate = 0.1;
        c.message_burst = 3.0;
        c.auth_rate = 1000.0;
    }),
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let id = int_field(&app.send_text(&alice, "bob", "hi").await, "id");
        json_ok(edit(&app, &alice.token, id, "hi!").await).await;
        json_ok(react(&app, &alice.token, id, "👍").await).await;
        // Alice's burst of three is spent: a send, an edit and a reaction.
        assert_error(react(&app, &alice.token, id, "🎉").await, 429).await;
        assert_error(delete(&app, &alice.token, id).await, 429).await;
        json_ok(react(&app, &bob.token, id, "🎉").await).await;
    }
);

api_test!(
    search_finds_an_edited_message_by_its_current_text_and_a_deleted_one_not_at_all,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let private = int_field(&app.send_text(&alice, "bob", "the walrus plan").await, "id");
        let in_group = int_field(
            &app.send_group_text(&alice, group, "walrus agenda").await,
            "id",
        );
        let mut found = app.search_ids(&bob.token, "walrus", &[]).await;
        found.sort_unstable();
        assert_eq!(found, [private, in_group]);

        let edited = json_ok(edit(&app, &alice.token, private, "the narwhal plan").await).await;
        json_ok(react(&app, &bob.token, private, "🐳").await).await;
        json_ok(delete(&app, &alice.token, in_group).await).await;
        assert!(
            app.search_ids(&bob.token, "walrus", &[]).await.is_empty(),
            "old words are gone"
        );
        assert!(
            app.search_ids(&bob.token, "agenda", &[]).await.is_empty(),
            "a tombstone has none"
        );
        let body = app.search_ok(&bob.token, &[("q", "narwhal")]).await;
        let hits = array(&body["results"], "search results");
        assert_eq!(hits.len(), 1, "{body}");
        assert_eq!(hits[0]["id"], private);
        assert_eq!(hits[0]["edited_at"], edited["edited_at"]);
        assert_eq!(hits[0]["reactions"][0]["emoji"], "🐳");
    }
);

api_test!(
    a_deleted_message_is_no_longer_unread_in_groups_or_the_conversation_list,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let mut doomed = Vec::new();
        for text in ["one", "two"] {
            app.send_text(&alice, "bob", text).await;
            app.send_group_text(&alice, group, text).await;
        }
        doomed.push(int_field(&app.send_text(&alice, "bob", "oops").await, "id"));
        doomed.push(int_field(
            &app.send_group_text(&alice, group, "oops").await,
            "id",
        ));
        assert_eq!(app.unread(&bob.token, group).await, 3);
        for id in doomed {
            json_ok(delete(&app, &alice.token, id).await).await;
        }
        assert_eq!(app.unread(&bob.token, group).await, 2);
        let list = json_ok(app.list_conversations(&bob.token, "").await).await;
        let unread: Vec<i64> = array(&list["conversations"], "conversations")
            .iter()
            .map(|entry| int_field(entry, "unread"))
            .collect();
        assert_eq!(unread, [2, 2], "{list}");
    }
);
