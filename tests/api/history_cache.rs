//! The recent-history cache answers the newest pages of a conversation or
//! group from memory; what it holds must equal the database at every
//! moment. Users send (over REST and sockets, with resends and replies),
//! mark messages read, sync (which marks them delivered), edit, delete and
//! react, join and leave the group and delete their account, all at once,
//! while readers fill the cache and page through it. Again and again the
//! writer is held between two batches (`HoldWrites`), and at that moment
//! every cached thread is compared with the database, as are pages read
//! through the cache and straight from the store.

use std::sync::Arc;

use futures_util::future::join_all;
use parley_actors::history::THREAD_CAP;
use parley_actors::model::{Page, UserRef};
use parley_actors::persistence::HoldWrites;
use parley_actors::{ask, Chat};
use serde_json::{json, Value};

use crate::helpers::*;

/// How many rounds of each user's activity run at once.
const ROUNDS: usize = 12;

fn user_ref(user: &TestUser) -> UserRef {
    UserRef {
        id: user.id,
        username: user.username.as_str().into(),
    }
}

/// The pages every comparison reads, around the ids seen so far.
fn pages(ids: &[i64]) -> Vec<Page> {
    let mut pages = vec![
        Page {
            before: None,
            after: None,
            limit: 50,
        },
        Page {
            before: None,
            after: None,
            limit: 3,
        },
    ];
    for &id in ids.iter().step_by(7) {
        pages.push(Page {
            before: Some(id),
            after: None,
            limit: 5,
        });
        pages.push(Page {
            before: None,
            after: Some(id),
            limit: 4,
        });
    }
    pages
}

/// Asserts that a page read through the cache equals the page the store
/// reads (both newest last).
fn assert_same<M: PartialEq + std::fmt::Debug>(
    through_cache: &[Arc<M>],
    from_store: &[M],
    what: &str,
) {
    let through_cache: Vec<&M> = through_cache.iter().map(|m| &**m).collect();
    let from_store: Vec<&M> = from_store.iter().collect();
    assert_eq!(through_cache, from_store, "{what}");
}

/// Compares, with the writer held between two batches, each thread the
/// cache holds with the database, and each page read through the cache
/// with the same page read from the store. Returns how many cached threads
/// were compared.
async fn compare(chat: &Chat, pairs: &[(UserRef, UserRef)], group: i64, ids: &[i64]) -> usize {
    let held = ask(chat.persistence(), HoldWrites)
        .await
        .expect("the writer holds");
    let newest = Page {
        before: None,
        after: None,
        limit: THREAD_CAP as i64,
    };
    let history = chat.history();
    let store = chat.store();
    let mut compared = 0;
    for (a, b) in pairs {
        let stored = store.private_history(a, b, newest).await.expect("read");
        if let Some(cached) = history.cached_private(a.id, b.id) {
            assert_same(
                &cached,
                &stored,
                &format!("what is cached of {a:?} and {b:?}"),
            );
            compared += 1;
        }
        for page in pages(ids) {
            let cached = history.private_page(a, b, page).await.expect("a page");
            let stored = store.private_history(a, b, page).await.expect("a page");
            assert_same(
                &cached,
                &stored,
                &format!("page {page:?} of {a:?} and {b:?}"),
            );
        }
    }
    let stored = store
        .group_history(group, newest, chat.caches())
        .await
        .expect("read");
    if let Some(cached) = history.cached_group(group) {
        assert_same(&cached, &stored, "what is cached of the group");
        compared += 1;
    }
    for page in pages(ids) {
        let cached = history.group_page(group, page).await.expect("a page");
        let stored = store
            .group_history(group, page, chat.caches())
            .await
            .expect("a page");
        assert_same(&cached, &stored, &format!("group page {page:?}"));
    }
    drop(held);
    compared
}

/// The ids of the messages in a history page.
fn page_ids(page: &Value) -> Vec<i64> {
    array(page, "page")
        .iter()
        .map(|m| int_field(m, "id"))
        .collect()
}

api_test!(
    the_history_cache_equals_the_database_at_every_moment_under_concurrent_writes,
    // Room for about one full thread: threads are dropped and read again
    // all the time, so fills race with the writes.
    config(|c| c.history_cache_mb = 0.1),
    |app| async move {
        let chat = app.chat.clone().expect("the server runs in this process");
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let dave = app.create_user("dave").await;
        let eve = app.create_user("eve").await;
        let group = app.create_group_with(&alice, "g", &[&bob, &carol]).await;
        let everyone = [&alice, &bob, &carol, &dave, &eve];
        let pairs: Vec<(UserRef, UserRef)> = [
            (&alice, &bob),
            (&alice, &carol),
            (&bob, &carol),
            (&eve, &alice),
        ]
        .iter()
        .map(|(a, b)| (user_ref(a), user_ref(b)))
        .collect();

        // Some history first, then read it so the cache holds the threads.
        let mut ids = Vec::new();
        for n in 0..20 {
            ids.push(int_field(
                &app.send_text(&alice, "bob", &format!("a{n}")).await,
                "id",
            ));
            ids.push(int_field(
                &app.send_text(&bob, "carol", &format!("b{n}")).await,
                "id",
            ));
            ids.push(int_field(
                &app.send_group_text(&carol, group, &format!("c{n}")).await,
                "id",
            ));
        }
        ids.push(int_field(
            &app.send_text(&eve, "alice", "hello from eve").await,
            "id",
        ));
        for (a, b) in &pairs {
            let path = format!("/messages/private/{}", b.username);
            let token = &everyone.iter().find(|u| u.id == a.id).unwrap().token;
            json_ok(app.get(&path, token).await).await;
        }
        json_ok(
            app.get(&format!("/groups/{group}/messages"), &alice.token)
                .await,
        )
        .await;
        assert!(
            compare(&chat, &pairs, group, &ids).await >= 4,
            "the threads are cached"
        );

        let mut bob_socket = app.ws_connect(&bob.token).await;
        let senders = [
            (&alice, "bob"),
            (&bob, "carol"),
            (&carol, "alice"),
            (&bob, "alice"),
        ];
        let sends = senders.iter().map(|(from, to)| {
            let app = &app;
            async move {
                let mut sent = Vec::new();
                for n in 0..ROUNDS {
                    let body =
                        json!({"recipient": to, "content": format!("{} {n}", from.username)});
                    let message = json_ok(app.send_private(&from.token, &body).await).await;
                    sent.push(int_field(&message, "id"));
                    let post = app
                        .send_group_text(from, group, &format!("to the group {n}"))
                        .await;
                    sent.push(int_field(&post, "id"));
                }
                sent
            }
        });
        let socket_sends = async {
            let mut sent = Vec::new();
            for n in 0..ROUNDS {
                // Every third one is a resend of the one before.
                let key = if n % 3 == 2 { n - 1 } else { n };
                let client_id = format!("bob-{key}");
                let frame = socket_message("alice", &format!("from bob's socket {n}"), &client_id);
                let ack = ws_send_until_ack(&mut bob_socket, &frame).await;
                sent.push(int_field(&ack, "id"));
            }
            let (_, synced) = ws_sync(&mut bob_socket, 0).await;
            assert!(int_field(&synced, "last_id") > 0);
            sent
        };
        let readers = everyone.iter().map(|reader| {
            let app = &app;
            async move {
                for n in 0..ROUNDS {
                    let others = ["alice", "bob", "carol", "eve"];
                    let other = others[n % others.len()];
                    if other == reader.username {
                        continue;
                    }
                    let page = app
                        .get(&format!("/messages/private/{other}?limit=7"), &reader.token)
                        .await;
                    if page.status() == 200 {
                        let page: Value = page.json().await.expect("a JSON page");
                        // Reading marks the newest message read, when it is to us.
                        if let Some(last) = page_ids(&page).last() {
                            let _ = app.mark_read(&reader.token, &last.to_string()).await;
                        }
                    }
                    let _ = app
                        .get(&format!("/groups/{group}/messages?limit=5"), &reader.token)
                        .await;
                }
            }
        });
        let changes = async {
            // `ids` holds alice's to bob, bob's to carol and carol's to the
            // group, in turn: each is changed by its sender or reacted to by
            // someone who sees it.
            for (n, &id) in ids.iter().enumerate().take(ROUNDS * 2) {
                let (owner, viewer) = [(&alice, &bob), (&bob, &carol), (&carol, &alice)][n % 3];
                let reaction = format!("/messages/{id}/reaction");
                let message = format!("/messages/{id}");
                let answer = match n % 4 {
                    0 => {
                        app.put_json(&reaction, &viewer.token, &json!({"emoji": "👍"}))
                            .await
                    }
                    1 => {
                        let edit = json!({"content": format!("edited {n}")});
                        app.patch_json(&message, &owner.token, &edit).await
                    }
                    2 => app.delete(&message, &owner.token).await,
                    _ => {
                        app.put_json(&reaction, &owner.token, &json!({"emoji": "🎉"}))
                            .await
                    }
                };
                assert_eq!(answer.status(), 200, "change {n} of message {id}");
            }
        };
        let membership = async {
            for n in 0..ROUNDS / 2 {
                let group = group.to_string();
                if n % 2 == 0 {
                    let _ = app.add_member(&alice.token, &group, "dave").await;
                    let _ = app
                        .send_group_text(&dave, group.parse().unwrap(), "dave here")
                        .await;
                } else {
                    let _ = app.remove_member(&alice.token, &group, "dave").await;
                }
            }
            let _ = app.delete_account(&eve.token, &eve.password).await;
        };
        let checks = async {
            let mut compared = 0;
            for _ in 0..ROUNDS {
                compared += compare(&chat, &pairs, group, &ids).await;
                actix_web::rt::time::sleep(std::time::Duration::from_millis(15)).await;
            }
            compared
        };
        let (sent, socket_sent, _, (), (), compared) = tokio::join!(
            join_all(sends),
            socket_sends,
            join_all(readers),
            changes,
            membership,
            checks,
        );
        assert!(
            compared >= ROUNDS,
            "the cache was compared while it held threads"
        );
        let mut all: Vec<i64> = sent.into_iter().flatten().chain(socket_sent).collect();
        all.extend(&ids);
        all.sort_unstable();
        // Quiet again: everything sent is in the cache and the database alike.
        assert!(compare(&chat, &pairs, group, &all).await >= 4);
    }
);
