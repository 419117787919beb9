//! GET /conversations: the caller's private conversations and groups in one
//! list, newest activity first, with last messages, unread counts and
//! cursor paging.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::*;

/// What names an entry: `private:<peer>` or `group:<id>`.
fn key(entry: &Value) -> String {
    match str_field(entry, "kind") {
        "private" => format!("private:{}", str_field(entry, "peer")),
        "group" => format!("group:{}", int_field(entry, "group_id")),
        kind => panic!("unknown conversation kind {kind:?} in {entry}"),
    }
}

fn group_key(group: i64) -> String {
    format!("group:{group}")
}

fn private_key(peer: &TestUser) -> String {
    format!("private:{}", peer.username)
}

/// One page for `query`, checked for the list's shape.
async fn page(app: &TestApp, token: &str, query: &str) -> Value {
    let page = json_ok(app.list_conversations(token, query).await).await;
    assert_has_fields(&page, &["conversations", "more", "next_before"]);
    let more = bool_field(&page, "more");
    assert_eq!(
        page["next_before"].is_string(),
        more,
        "next_before is given exactly when more follow: {page}"
    );
    page
}

/// The caller's whole list (it fits one page in these tests).
async fn entries(app: &TestApp, token: &str) -> Vec<Value> {
    let page = page(app, token, "limit=100").await;
    assert!(!bool_field(&page, "more"), "the list fits one page: {page}");
    array(&page["conversations"], "conversations").clone()
}

async fn keys(app: &TestApp, token: &str) -> Vec<String> {
    entries(app, token).await.iter().map(key).collect()
}

/// The caller's entry named `wanted` (which must be listed).
async fn entry(app: &TestApp, token: &str, wanted: &str) -> Value {
    entries(app, token)
        .await
        .into_iter()
        .find(|entry| key(entry) == wanted)
        .unwrap_or_else(|| panic!("{wanted} should be listed"))
}

async fn unread(app: &TestApp, token: &str, wanted: &str) -> i64 {
    int_field(&entry(app, token, wanted).await, "unread")
}

/// The list orders by millisecond first, so a step that must rank above the
/// previous one by time alone waits for the clock to move on.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

api_test!(
    conversations_are_listed_newest_activity_first_as_messages_arrive,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let team = app.create_group_with(&bob, "team", &[&alice]).await;
        assert_eq!(keys(&app, &alice.token).await, [group_key(team)]);

        app.send_text(&alice, "bob", "to bob").await;
        // Alice only received in this one.
        app.send_text(&carol, "alice", "from carol").await;
        app.send_group_text(&bob, team, "to the team").await;
        assert_eq!(
            keys(&app, &alice.token).await,
            [group_key(team), private_key(&carol), private_key(&bob)]
        );

        app.send_text(&bob, "alice", "back to alice").await;
        assert_eq!(
            keys(&app, &alice.token).await,
            [private_key(&bob), group_key(team), private_key(&carol)]
        );
        app.send_text(&alice, "carol", "and to carol").await;
        assert_eq!(
            keys(&app, &alice.token).await,
            [private_key(&carol), private_key(&bob), group_key(team)]
        );
        // Bob's list has his own view of the same activity.
        assert_eq!(
            keys(&app, &bob.token).await,
            [private_key(&alice), group_key(team)]
        );
    }
);

api_test!(
    each_entry_shows_its_last_message_as_history_shows_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("Bob").await;
        let team = app.create_group_with(&alice, "the team", &[&bob]).await;
        app.send_text(&alice, "Bob", "first").await;
        app.send_text(&bob, "alice", AWKWARD_CONTENT).await;
        app.send_group_text(&bob, team, "hello team").await;
        app.send_group_text(&alice, team, "hi Bob").await;

        let private = entry(&app, &alice.token, "private:Bob").await;
        assert_eq!(str_field(&private, "peer"), "Bob", "as registered");
        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        let newest = array(&history, "history")
            .last()
            .expect("a message")
            .clone();
        assert_eq!(private["last_message"], newest);
        assert_private_message(&private["last_message"], "Bob", "alice", AWKWARD_CONTENT);
        assert_eq!(private["last_activity"], newest["timestamp"]);
        assert_timestamp(&private["last_activity"], "last_activity");

        let group = entry(&app, &bob.token, &group_key(team)).await;
        assert_eq!(str_field(&group, "name"), "the team");
        assert_eq!(str_field(&group, "role"), "member");
        let history = json_ok(app.group_messages(&bob.token, &team.to_string(), "").await).await;
        let newest = array(&history, "group history")
            .last()
            .expect("a message")
            .clone();
        assert_eq!(group["last_message"], newest);
        assert_eq!(str_field(&group["last_message"], "content"), "hi Bob");
        assert_eq!(str_field(&group["last_message"], "sender"), "alice");
        assert_eq!(group["last_activity"], newest["timestamp"]);
        let owner = entry(&app, &alice.token, &group_key(team)).await;
        assert_eq!(str_field(&owner, "role"), "owner");
    }
);

api_test!(
    an_edited_reacted_or_deleted_last_message_shows_as_history_shows_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let team = app.create_group_with(&alice, "team", &[&bob]).await;
        let private = int_field(&app.send_text(&bob, "alice", "typo").await, "id");
        let posted = int_field(&app.send_group_text(&bob, team, "oops").await, "id");
        let before = keys(&app, &alice.token).await;

        let edit = serde_json::json!({"content": "fixed"});
        let path = format!("/messages/{private}");
        json_ok(app.patch_json(&path, &bob.token, &edit).await).await;
        let reaction = serde_json::json!({"emoji": "👍"});
        let path = format!("/messages/{private}/reaction");
        json_ok(app.put_json(&path, &alice.token, &reaction).await).await;
        json_ok(
            app.delete(&format!("/messages/{posted}"), &alice.token)
                .await,
        )
        .await;

        let listed = entry(&app, &alice.token, "private:bob").await;
        let history = json_ok(app.private_history(&alice.token, "bob", "").await).await;
        assert_eq!(listed["last_message"], history[0]);
        assert_eq!(str_field(&listed["last_message"], "content"), "fixed");
        assert_timestamp(&listed["last_message"]["edited_at"], "edited_at");
        assert_eq!(listed["last_message"]["reactions"][0]["emoji"], "👍");

        let listed = entry(&app, &alice.token, &group_key(team)).await;
        let history = json_ok(
            app.group_messages(&alice.token, &team.to_string(), "")
                .await,
        )
        .await;
        assert_eq!(listed["last_message"], history[0]);
        assert_eq!(listed["last_message"]["deleted"], true);
        // Changes are not new activity: the order stays as the messages left it.
        assert_eq!(keys(&app, &alice.token).await, before);
    }
);

api_test!(
    private_unread_counts_messages_to_the_caller_until_each_is_read,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut from_bob = Vec::new();
        for content in ["one", "two", "three"] {
            from_bob.push(int_field(
                &app.send_text(&bob, "alice", content).await,
                "id",
            ));
        }
        app.send_text(&alice, "bob", "reply").await;
        assert_eq!(unread(&app, &alice.token, "private:bob").await, 3);
        assert_eq!(
            unread(&app, &bob.token, "private:alice").await,
            1,
            "only messages to the caller count"
        );

        // Reading one out of order leaves the others unread.
        json_ok(app.mark_read(&alice.token, &from_bob[1].to_string()).await).await;
        assert_eq!(unread(&app, &alice.token, "private:bob").await, 2);
        for id in [from_bob[0], from_bob[2]] {
            json_ok(app.mark_read(&alice.token, &id.to_string()).await).await;
        }
        assert_eq!(unread(&app, &alice.token, "private:bob").await, 0);
        assert_eq!(unread(&app, &bob.token, "private:alice").await, 1);
    }
);

api_test!(
    group_unread_counts_messages_from_others_above_the_read_cursor,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let team = app.create_group_with(&alice, "team", &[&bob]).await;
        let mut from_bob = Vec::new();
        for content in ["one", "two", "three"] {
            let message = app.send_group_text(&bob, team, content).await;
            from_bob.push(int_field(&message, "id"));
        }
        app.send_group_text(&alice, team, "mine").await;
        assert_eq!(unread(&app, &alice.token, &group_key(team)).await, 3);
        assert_eq!(unread(&app, &bob.token, &group_key(team)).await, 1);

        json_ok(app.mark_read(&alice.token, &from_bob[1].to_string()).await).await;
        assert_eq!(unread(&app, &alice.token, &group_key(team)).await, 1);
        // The same count as GET /groups.
        assert_eq!(app.unread(&alice.token, team).await, 1);
        json_ok(app.mark_read(&alice.token, &from_bob[2].to_string()).await).await;
        assert_eq!(unread(&app, &alice.token, &group_key(team)).await, 0);
    }
);

api_test!(
    a_group_without_messages_is_listed_by_when_the_caller_joined,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let quiet = app.create_group_id(&alice, "quiet").await;
        next_millisecond().await;
        app.send_text(&alice, "bob", "hi").await;
        next_millisecond().await;
        json_ok(
            app.add_member(&alice.token, &quiet.to_string(), "bob")
                .await,
        )
        .await;

        // Alice created it before her message; Bob joined after it.
        assert_eq!(
            keys(&app, &alice.token).await,
            [private_key(&bob), group_key(quiet)]
        );
        assert_eq!(
            keys(&app, &bob.token).await,
            [group_key(quiet), private_key(&alice)]
        );
        let members = json_ok(app.group_members(&bob.token, &quiet.to_string()).await).await;
        for (user, member) in [(&alice, &members[0]), (&bob, &members[1])] {
            assert_eq!(str_field(member, "username"), user.username);
            let listed = entry(&app, &user.token, &group_key(quiet)).await;
            assert_eq!(listed["last_message"], Value::Null, "{listed}");
            assert_eq!(int_field(&listed, "unread"), 0);
            assert_eq!(
                listed["last_activity"], member["joined_at"],
                "{}'s entry is dated by when they joined",
                user.username
            );
        }

        // Its first message moves it by that message's time.
        next_millisecond().await;
        let first = app.send_group_text(&bob, quiet, "anyone?").await;
        let listed = entry(&app, &alice.token, &group_key(quiet)).await;
        assert_eq!(listed["last_activity"], first["timestamp"]);
        assert_eq!(
            int_field(&listed["last_message"], "id"),
            int_field(&first, "id")
        );
        assert_eq!(keys(&app, &alice.token).await[0], group_key(quiet));
    }
);

api_test!(
    paging_with_before_and_limit_lists_every_conversation_exactly_once,
    |app| async move {
        let alice = app.create_user("alice").await;
        let mut expected = BTreeSet::new();
        for name in ["bob", "carol", "dave", "erin"] {
            let peer = app.create_user(name).await;
            if name == "carol" {
                app.send_text(&peer, "alice", "hello alice").await;
            } else {
                app.send_text(&alice, name, "hello").await;
            }
            expected.insert(private_key(&peer));
        }
        let bob = app.create_user("bob2").await;
        for name in ["one", "two"] {
            let group = app.create_group_with(&alice, name, &[&bob]).await;
            app.send_group_text(&bob, group, name).await;
            expected.insert(group_key(group));
        }
        // Groups without messages, created at once so that several are
        // likely stored in one batch, in one millisecond: the cursor must
        // still tell them apart.
        let names: Vec<String> = (1..=6).map(|n| format!("empty {n}")).collect();
        let empty = join_all(names.iter().map(|name| app.create_group_id(&alice, name))).await;
        expected.extend(empty.into_iter().map(group_key));
        let everything = keys(&app, &alice.token).await;
        assert_eq!(everything.len(), expected.len());
        assert_eq!(
            everything.iter().cloned().collect::<BTreeSet<_>>(),
            expected
        );

        for limit in [1, 2, 3, 5, 11] {
            let mut seen = Vec::new();
            let mut query = format!("limit={limit}");
            loop {
                let page = page(&app, &alice.token, &query).await;
                let listed = array(&page["conversations"], "conversations");
                seen.extend(listed.iter().map(key));
                if !bool_field(&page, "more") {
                    assert!(listed.len() <= limit, "limit {limit}: {page}");
                    break;
                }
                assert_eq!(listed.len(), limit, "a page with more after it is full");
                let cursor = str_field(&page, "next_before");
                query = format!("before={cursor}&limit={limit}");
            }
            assert_eq!(
                seen, everything,
                "limit {limit}: every conversation once, in order"
            );
        }

        // No limit: up to 50, everything here.
        let first = page(&app, &alice.token, "").await;
        assert!(!bool_field(&first, "more"));
        assert_eq!(array(&first["conversations"], "conversations").len(), 12);
        // After eleven, the twelfth is the last: nothing more follows it.
        let last = page(&app, &alice.token, "limit=11").await;
        let below = page(
            &app,
            &alice.token,
            &format!("before={}", str_field(&last, "next_before")),
        )
        .await;
        assert_eq!(array(&below["conversations"], "conversations").len(), 1);
        assert!(!bool_field(&below, "more"));
    }
);

api_test!(
    a_user_without_conversations_gets_an_empty_list,
    |app| async move {
        let alice = app.create_user("alice").await;
        let page = page(&app, &alice.token, "").await;
        assert_eq!(page["conversations"], serde_json::json!([]));
        assert!(!bool_field(&page, "more"));
    }
);

api_test!(
    a_strangers_conversations_and_groups_are_never_listed,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        app.send_text(&carol, "dave", "between us").await;
        let theirs = app.create_group_with(&dave, "theirs", &[&carol]).await;
        app.send_group_text(&carol, theirs, "ours").await;
        app.send_text(&alice, "bob", "hi bob").await;
        let left = app.create_group_with(&bob, "left", &[&alice]).await;
        app.send_group_text(&bob, left, "still here?").await;
        assert_eq!(
            keys(&app, &alice.token).await,
            [group_key(left), private_key(&bob)]
        );

        // Leaving a group takes it off the list.
        let response = app
            .remove_member(&alice.token, &left.to_string(), "alice")
            .await;
        assert_eq!(response.status().as_u16(), 204);
        assert_eq!(keys(&app, &alice.token).await, [private_key(&bob)]);
        assert_eq!(
            keys(&app, &carol.token).await,
            [group_key(theirs), private_key(&dave)]
        );
    }
);

api_test!(
    a_deleted_peers_conversation_stays_with_its_messages,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        app.send_text(&alice, "bob", "hi bob").await;
        let last = app.send_text(&bob, "alice", "goodbye").await;
        let deleted = app.delete_account(&bob.token, &bob.password).await;
        assert_eq!(deleted.status().as_u16(), 204);

        let listed = entry(&app, &alice.token, "private:bob").await;
        assert_eq!(listed["last_message"], last);
        assert_eq!(int_field(&listed, "unread"), 1);
        // The name no longer resolves, as everywhere a username is looked up.
        assert_error(app.private_history(&alice.token, "bob", "").await, 404).await;
    }
);

api_test!(
    bad_paging_parameters_are_400_naming_the_parameter,
    |app| async move {
        let alice = app.create_user("alice").await;
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=abc", "limit"),
            ("limit=1.5", "limit"),
            ("before=abc", "before"),
            ("before=", "before"),
            ("before=17", "before"),
            ("before=1.2.3.4", "before"),
            ("before=1.-2.3", "before"),
        ] {
            assert_error_naming(
                app.list_conversations(&alice.token, query).await,
                400,
                field,
            )
            .await;
        }
        // Above the maximum is read as the maximum, as history paging does.
        json_ok(app.list_conversations(&alice.token, "limit=1000").await).await;
        assert_error(app.list_conversations("", "").await, 401).await;
    }
);
