//! `GET /search`: full-text search over the messages a caller may see —
//! ranking, who finds what (also after leaving a group), the `with` and
//! `group_id` filters, paging, and input that must never break the query.

use serde_json::Value;

use crate::helpers::*;

/// The id of a message as a send helper returned it.
fn id(message: &Value) -> i64 {
    int_field(message, "id")
}

/// The results of a search body.
fn results(body: &Value) -> &Vec<Value> {
    array(&body["results"], "search results")
}

/// Asserts that a result has exactly the fields history shows plus `rank`.
fn assert_result_fields(result: &Value, private: bool) {
    let fields: &[&str] = if private {
        &[
            "id",
            "sender",
            "recipient",
            "content",
            "timestamp",
            "status",
            "rank",
        ]
    } else {
        &[
            "id",
            "group_id",
            "sender",
            "content",
            "timestamp",
            "message_type",
            "rank",
        ]
    };
    assert_has_fields(result, fields);
    let object = result.as_object().expect("a result is an object");
    assert_eq!(object.len(), fields.len(), "no other fields: {result}");
    assert!(result["rank"].is_number(), "rank is a number: {result}");
    assert_timestamp(&result["timestamp"], "timestamp");
}

api_test!(
    a_message_holding_the_word_more_often_ranks_first_and_equal_ranks_come_newest_first,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let once = id(&app
            .send_text(&alice, "bob", "lunch at noon with the whole team today")
            .await);
        let thrice = id(&app.send_text(&alice, "bob", "lunch lunch lunch").await);
        app.send_text(&alice, "bob", "dinner at eight").await;
        let body = app.search_ok(&alice.token, &[("q", "lunch")]).await;
        let found = results(&body);
        let ids: Vec<i64> = found.iter().map(id).collect();
        assert_eq!(ids, [thrice, once], "the better match first: {body}");
        assert!(
            found[0]["rank"].as_f64() > found[1]["rank"].as_f64(),
            "rank is higher for the better match: {body}"
        );
        assert_eq!(body["more"], false);

        // Two messages alike rank alike; the newer one comes first.
        let older = id(&app.send_text(&alice, "bob", "tea time").await);
        let newer = id(&app.send_text(&alice, "bob", "tea time").await);
        let body = app.search_ok(&alice.token, &[("q", "tea")]).await;
        let found = results(&body);
        assert_eq!(found.iter().map(id).collect::<Vec<_>>(), [newer, older]);
        assert_eq!(found[0]["rank"], found[1]["rank"], "{body}");

        // Several words: every one must be in the message.
        let both = id(&app.send_text(&alice, "bob", "tea and lunch").await);
        assert_eq!(app.search_ids(&alice.token, "lunch tea", &[]).await, [both]);
    }
);

api_test!(
    only_the_two_users_of_a_conversation_find_its_messages,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let secret = id(&app.send_text(&alice, "bob", "the secret plans").await);
        let reply = id(&app.send_text(&bob, "alice", "secret noted").await);
        let theirs = id(&app.send_text(&carol, "bob", "no secret here").await);

        for (user, expected) in [
            (&alice, vec![reply, secret]),
            (&bob, vec![theirs, reply, secret]),
        ] {
            let mut found = app.search_ids(&user.token, "secret", &[]).await;
            found.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(
                found, expected,
                "{} finds their own conversations",
                user.username
            );
        }
        assert_eq!(
            app.search_ids(&carol.token, "secret", &[]).await,
            [theirs],
            "carol finds only her own message to bob"
        );
        assert!(app.search_ids(&carol.token, "plans", &[]).await.is_empty());
        assert!(
            app.search_ids(&carol.token, "plans", &[("with", "alice")])
                .await
                .is_empty(),
            "carol has no conversation with alice to search"
        );

        let body = app.search_ok(&bob.token, &[("q", "plans")]).await;
        let found = results(&body);
        assert_eq!(found.len(), 1, "{body}");
        assert_result_fields(&found[0], true);
        assert_private_message(&found[0], "alice", "bob", "the secret plans");
    }
);

api_test!(
    with_and_group_id_limit_the_search_to_one_conversation_or_group,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let to_bob = id(&app.send_text(&alice, "bob", "quarterly report").await);
        let to_carol = id(&app.send_text(&alice, "carol", "quarterly report").await);
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let in_group = id(&app
            .send_group_text(&bob, group, "the quarterly report")
            .await);
        let other_group = app.create_group_id(&carol, "elsewhere").await;
        let g = group.to_string();

        let mut everything = app.search_ids(&alice.token, "report", &[]).await;
        everything.sort_unstable();
        assert_eq!(everything, [to_bob, to_carol, in_group]);
        assert_eq!(
            app.search_ids(&alice.token, "report", &[("with", "BOB")])
                .await,
            [to_bob],
            "with= names the other user, case-insensitively"
        );
        assert_eq!(
            app.search_ids(&carol.token, "report", &[("with", "alice")])
                .await,
            [to_carol]
        );
        let body = app
            .search_ok(&bob.token, &[("q", "report"), ("group_id", &g)])
            .await;
        let found = results(&body);
        assert_eq!(found.iter().map(id).collect::<Vec<_>>(), [in_group]);
        assert_result_fields(&found[0], false);
        assert_eq!(int_field(&found[0], "group_id"), group);
        assert_eq!(str_field(&found[0], "sender"), "bob");
        assert_eq!(str_field(&found[0], "content"), "the quarterly report");
        assert_eq!(str_field(&found[0], "message_type"), "text");

        assert_error_naming(
            app.search(&alice.token, &[("q", "report"), ("with", "nobody")])
                .await,
            404,
            "with",
        )
        .await;
        assert_error_naming(
            app.search(&alice.token, &[("q", "report"), ("with", "alice")])
                .await,
            400,
            "with",
        )
        .await;
        assert_error_naming(
            app.search(&alice.token, &[("q", "report"), ("group_id", "999999")])
                .await,
            404,
            "group_id",
        )
        .await;
        let other = other_group.to_string();
        assert_error_naming(
            app.search(&alice.token, &[("q", "report"), ("group_id", &other)])
                .await,
            403,
            "group_id",
        )
        .await;
        assert_error_naming(
            app.search(&carol.token, &[("q", "report"), ("group_id", &g)])
                .await,
            403,
            "group_id",
        )
        .await;
        assert_error_naming(
            app.search(
                &alice.token,
                &[("q", "report"), ("with", "bob"), ("group_id", &g)],
            )
            .await,
            400,
            "with",
        )
        .await;
    }
);

api_test!(
    a_member_who_left_finds_what_they_saw_and_nothing_posted_after,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let group = app.create_group_with(&alice, "team", &[&bob, &carol]).await;
        let g = group.to_string();
        let old = id(&app.send_group_text(&alice, group, "roadmap draft").await);

        // Bob leaves; carol is removed by the owner.
        assert_eq!(
            app.remove_member(&bob.token, &g, "bob")
                .await
                .status()
                .as_u16(),
            204
        );
        assert_eq!(
            app.remove_member(&alice.token, &g, "carol")
                .await
                .status()
                .as_u16(),
            204
        );
        let new = id(&app.send_group_text(&alice, group, "roadmap final").await);

        let mut members_view = app.search_ids(&alice.token, "roadmap", &[]).await;
        members_view.sort_unstable();
        assert_eq!(members_view, [old, new], "a member finds the whole history");
        for former in [&bob, &carol] {
            assert_eq!(
                app.search_ids(&former.token, "roadmap", &[]).await,
                [old],
                "{} finds what was there when they left, not what came after",
                former.username
            );
            assert_eq!(
                app.search_ids(&former.token, "roadmap", &[("group_id", &g)])
                    .await,
                [old],
                "the group filter works for a former member too"
            );
            assert!(app.search_ids(&former.token, "final", &[]).await.is_empty());
        }
        assert!(app.search_ids(&dave.token, "roadmap", &[]).await.is_empty());
        assert_error_naming(
            app.search(&dave.token, &[("q", "roadmap"), ("group_id", &g)])
                .await,
            403,
            "group_id",
        )
        .await;

        // Added again, bob sees the whole history, as any new member does.
        json_ok(app.add_member(&alice.token, &g, "bob").await).await;
        let mut again = app.search_ids(&bob.token, "roadmap", &[]).await;
        again.sort_unstable();
        assert_eq!(again, [old, new]);
        // And leaving a second time keeps what he could see by then.
        assert_eq!(
            app.remove_member(&bob.token, &g, "bob")
                .await
                .status()
                .as_u16(),
            204
        );
        let newest = id(&app.send_group_text(&alice, group, "roadmap revised").await);
        let mut after_second = app.search_ids(&bob.token, "roadmap", &[]).await;
        after_second.sort_unstable();
        assert_eq!(after_second, [old, new], "not {newest}");
    }
);

api_test!(
    before_offset_and_limit_page_through_a_ranking_that_new_messages_do_not_shift,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut sent = Vec::new();
        for text in [
            "status report one",
            "status",
            "status status",
            "a status report that runs on for quite a few words",
            "status update",
        ] {
            sent.push(id(&app.send_text(&alice, "bob", text).await));
        }
        let whole = app.search_ids(&alice.token, "status", &[]).await;
        let mut all = whole.clone();
        all.sort_unstable();
        assert_eq!(all, sent, "one page holds every match");

        // A client pins the set with `before` just above the newest it knows.
        let pin = (sent[4] + 1).to_string();
        let page = |offset| pinned_page(&app, &alice.token, &pin, offset);
        let first = page("0").await;
        // A new match arrives between the pages; the pinned pages do not see
        // it, so nothing repeats and nothing is skipped.
        let late = id(&app
            .send_text(&alice, "bob", "status status status status")
            .await);
        let second = page("2").await;
        let third = page("4").await;
        let mut paged = Vec::new();
        for (body, more) in [(&first, true), (&second, true), (&third, false)] {
            assert_eq!(body["more"], more, "{body}");
            paged.extend(results(body).iter().map(id));
        }
        assert_eq!(paged, whole, "the pages, in order, are the ranking");
        assert!(
            app.search_ids(&alice.token, "status", &[])
                .await
                .contains(&late),
            "unpinned, the new match is found"
        );
        assert_eq!(
            app.search_ids(&alice.token, "status", &[("before", &sent[2].to_string())])
                .await
                .len(),
            2,
            "before= keeps only smaller ids"
        );
        assert_eq!(
            app.search_ids(&alice.token, "status", &[("offset", "1000")])
                .await,
            Vec::<i64>::new()
        );
        assert_eq!(
            app.search_ids(&alice.token, "status", &[("limit", "5000")])
                .await
                .len(),
            6,
            "a limit above 100 is read as 100"
        );
        for (name, value) in [
            ("limit", "0"),
            ("limit", "-3"),
            ("limit", "ten"),
            ("offset", "-1"),
            ("offset", "1001"),
            ("offset", "1.5"),
            ("before", "-1"),
            ("before", "abc"),
            ("group_id", "abc"),
            ("group_id", "0"),
        ] {
            assert_error_naming(
                app.search(&alice.token, &[("q", "status"), (name, value)])
                    .await,
                400,
                name,
            )
            .await;
        }
    }
);

/// One page of two results for "status", pinned below `before`.
async fn pinned_page(app: &TestApp, token: &str, before: &str, offset: &str) -> Value {
    app.search_ok(
        token,
        &[
            ("q", "status"),
            ("before", before),
            ("offset", offset),
            ("limit", "2"),
        ],
    )
    .await
}

api_test!(
    quotes_operators_and_punctuation_in_q_are_plain_text_and_never_an_error,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let hello = id(&app
            .send_text(&alice, "bob", r#"he said "hello" to bob@example.com"#)
            .await);
        let gate = id(&app
            .send_text(&alice, "bob", "NEAR the OR gate, not AND")
            .await);
        let pi = id(&app
            .send_text(&alice, "bob", "pi is 3.14, see https://example.org/pi-day")
            .await);
        for (q, expected) in [
            (r#""hello"#, vec![hello]),
            (r#"hello""#, vec![hello]),
            (r#""""hello""""#, vec![hello]),
            ("hello*", vec![hello]),
            ("*hello", vec![hello]),
            ("-hello", vec![hello]),
            ("hello -bob", vec![hello]),
            ("hello OR nothing", vec![]),
            ("OR", vec![gate]),
            ("AND", vec![gate]),
            ("NOT gate", vec![gate]),
            ("NEAR(", vec![gate]),
            ("NEAR(gate or)", vec![gate]),
            ("NEAR(gate or, 5)", vec![]),
            ("content:hello", vec![]),
            ("{content}: hello", vec![]),
            ("^hello", vec![hello]),
            ("(hello)", vec![hello]),
            ("hello:", vec![hello]),
            ("'hello'", vec![hello]),
            ("hello; DROP TABLE messages; --", vec![]),
            ("bob@example.com", vec![hello]),
            ("example", vec![hello, pi]),
            ("3.14", vec![pi]),
            ("14", vec![pi]),
            ("pi-day", vec![pi]),
            ("https://example.org", vec![pi]),
        ] {
            let mut found = app.search_ids(&alice.token, q, &[]).await;
            found.sort_unstable();
            assert_eq!(found, expected, "q = {q:?}");
        }
        for q in ["*", "\"", "\"\"", "-", "()", ":^*", "\"*\" - \"\""] {
            assert_error_naming(app.search(&alice.token, &[("q", q)]).await, 400, "q").await;
        }
        assert_eq!(
            app.search_ids(&alice.token, "hello", &[]).await,
            [hello],
            "the index survived every one of those"
        );
    }
);

api_test!(
    words_match_case_insensitively_in_any_script_and_cjk_runs_are_one_word,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let french = id(&app.send_text(&alice, "bob", "Crème brûlée à l'ÉCOLE").await);
        let russian = id(&app.send_text(&alice, "bob", "Привет, мир").await);
        let spaced = id(&app.send_text(&alice, "bob", "你好 世界").await);
        let punctuated = id(&app.send_text(&alice, "bob", "你好，朋友").await);
        let run = id(&app.send_text(&alice, "bob", "你好世界").await);
        let shout = id(&app.send_text(&alice, "bob", "HELLO THERE").await);
        for (q, expected) in [
            ("hello", vec![shout]),
            ("Hello There", vec![shout]),
            ("école", vec![french]),
            ("CRÈME BRÛLÉE", vec![french]),
            // Diacritics are part of a word.
            ("creme", vec![]),
            ("ПРИВЕТ", vec![russian]),
            ("мир", vec![russian]),
            // A run of CJK characters without spaces or punctuation is one word.
            ("你好", vec![spaced, punctuated]),
            ("世界", vec![spaced]),
            ("你好世界", vec![run]),
            ("朋友", vec![punctuated]),
        ] {
            let mut found = app.search_ids(&alice.token, q, &[]).await;
            found.sort_unstable();
            assert_eq!(found, expected, "q = {q:?}");
        }
    }
);

api_test!(
    an_empty_blank_or_overlong_q_is_400_naming_q,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let message = id(&app.send_text(&alice, "bob", &"x".repeat(200)).await);
        assert_error_naming(app.search(&alice.token, &[]).await, 400, "q").await;
        for q in ["", "   ", "\t\n"] {
            assert_error_naming(app.search(&alice.token, &[("q", q)]).await, 400, "q").await;
        }
        assert_error_naming(
            app.search(&alice.token, &[("q", &"x".repeat(201))]).await,
            400,
            "q",
        )
        .await;
        assert_error_naming(
            app.search(&alice.token, &[("q", &"好".repeat(201))]).await,
            400,
            "q",
        )
        .await;
        let padded = format!("   {}   ", "x".repeat(200));
        assert_eq!(
            app.search_ids(&alice.token, &padded, &[]).await,
            [message],
            "200 characters after trimming are allowed"
        );
        assert_error(app.search("", &[("q", "x")]).await, 401).await;
    }
);

/// Postgres only (SQLite's index has no pending list): the store's
/// background upkeep merges the search index's pending entries, so that the
/// writer's own inserts never have to, and what it merged stays searchable.
#[actix_web::test]
async fn tidying_the_store_on_postgres_leaves_the_search_index_nothing_pending() {
    use sqlx::Connection as _;
    const TEST: &str =
        "search::tidying_the_store_on_postgres_leaves_the_search_index_nothing_pending";
    let Some(app) = spawn_app_with(Backend::Postgres, TEST, |_| {}).await else {
        return;
    };
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let message = app
            .send_text(&alice, "bob", &format!("pending entry {i} lunch"))
            .await;
        sent.push(id(&message));
    }

    let chat = app.chat.as_ref().expect("the server runs in this process");
    chat.store().tidy().await.expect("the store is tidied");
    let mut conn = sqlx::PgConnection::connect(&app.database_url())
        .await
        .expect("connect to the test database");
    let pending_pages: i64 =
        sqlx::query_scalar("SELECT gin_clean_pending_list('messages_search'::regclass)")
            .fetch_one(&mut conn)
            .await
            .expect("read what is left pending");
    assert_eq!(pending_pages, 0, "the upkeep merged every pending entry");

    let mut found = app.search_ids(&alice.token, "lunch", &[]).await;
    found.sort_unstable();
    assert_eq!(found, sent, "every merged message is still found");
}
