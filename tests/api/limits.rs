//! Limits: WebSocket frame size, message content length, deeply nested JSON,
//! the rate limits on message sends (per user) and on logins and
//! registrations (per client address), and the password hashing queue
//! (503 at once beyond it).

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parley::config::Switch;
use reqwest::Response;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// The documented WebSocket frame limit.
const FRAME_LIMIT: usize = 64 * 1024;

/// What a socket got until the server closed it: the text frames (as JSON)
/// and the close code, if a close frame came. Fails after [`WAIT`].
async fn read_until_closed(ws: &mut WsStream) -> (Vec<Value>, Option<CloseCode>) {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the server did not close the socket within {WAIT:?}; got {frames:?}"),
            Ok(Some(Ok(Message::Text(text)))) => frames.push(
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("a text frame is not JSON ({e}): {text:?}")),
            ),
            Ok(Some(Ok(Message::Close(frame)))) => return (frames, frame.map(|f| f.code)),
            Ok(Some(Ok(_))) => continue,
            // The server may drop the connection right after its close frame.
            Ok(Some(Err(_))) | Ok(None) => return (frames, None),
        }
    }
}

/// The `Retry-After` header of a 429 (or a 503 from shedding load), as
/// whole seconds (at least 1).
fn retry_after(response: &Response) -> u64 {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .unwrap_or_else(|| {
            panic!(
                "a {} must carry Retry-After: {:?}",
                response.status(),
                response.headers()
            )
        })
        .to_str()
        .expect("Retry-After is text");
    let seconds: u64 = value
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After should be whole seconds, got {value:?}"));
    assert!(
        seconds >= 1,
        "Retry-After should be at least 1 s, got {seconds}"
    );
    seconds
}

/// Asserts a 429 with `Retry-After` and the error body; returns the seconds.
async fn assert_rate_limited(response: Response) -> u64 {
    let seconds = retry_after(&response);
    assert_error(response, 429).await;
    seconds
}

api_test!(
    a_websocket_frame_over_64_kib_closes_that_socket_with_1009_and_others_keep_working,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let mut bob_ws = app.ws_connect(&bob.token).await;
        let mut alice_ws = app.ws_connect(&alice.token).await;

        let content = "x".repeat(FRAME_LIMIT + 1024);
        let frame = socket_message("bob", &content, "big").to_string();
        assert!(frame.len() > FRAME_LIMIT);
        // The server may close before it has read the whole frame, so a
        // failed send is not an error here.
        let _ = tokio::time::timeout(WAIT, alice_ws.send(Message::text(frame))).await;
        let (frames, code) = read_until_closed(&mut alice_ws).await;
        for frame in frames.iter().filter(|f| f["type"] != "status") {
            // Anything said before the close is the 413 for the frame.
            assert_error_frame(frame, 413);
        }
        assert_eq!(
            code,
            Some(CloseCode::Size),
            "an oversize frame closes the socket with 1009; frames before it: {frames:?}"
        );

        // Nothing of it was stored or delivered, and bob's socket still works.
        ws_assert_quiet(
            &mut bob_ws,
            QUIET,
            "bob should get nothing of the oversize frame",
        )
        .await;
        let sent = app.send_text(&alice, "bob", "still here").await;
        let pushed = ws_recv_skipping_presence(&mut bob_ws).await;
        assert_private_frame(&pushed, "alice", "bob", "still here");
        assert_eq!(pushed["id"], sent["id"]);
        assert!(app.history_ids(&bob.token, "alice", "").await.len() == 1);
        // Alice can reconnect and send.
        let mut again = app.ws_connect(&alice.token).await;
        let ack = ws_send_and_recv(&mut again, &socket_message("bob", "back", "c1")).await;
        assert_ack(&ack, "c1", "delivered");
    }
);

api_test!(
    a_frame_under_the_limit_with_too_long_content_gets_an_error_naming_content,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut ws = app.ws_connect(&alice.token).await;
        let content = "y".repeat(FRAME_LIMIT - 200);
        let frame = socket_message("bob", &content, "long");
        assert!(frame.to_string().len() < FRAME_LIMIT);
        let error = ws_send_and_recv(&mut ws, &frame).await;
        assert_error_frame(&error, 400);
        assert_detail_names(&error, "content");
        assert_eq!(error["client_id"], "long", "{error}");
        // The socket is still usable.
        let ack = ws_send_and_recv(&mut ws, &socket_message("bob", "short", "ok")).await;
        assert_ack(&ack, "ok", "sent");
    }
);

api_test!(
    content_over_the_configured_limit_is_400_and_exactly_at_it_is_accepted,
    config(|c| c.max_content_chars = 100),
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let group = app.create_group_id(&alice, "limits").await;
        // Characters, not bytes: "é" is two bytes.
        let at_limit = "é".repeat(100);
        let over = "é".repeat(101);

        // REST, private and group.
        assert_error_naming(
            app.send_private(&alice.token, &json!({"recipient": "bob", "content": over}))
                .await,
            400,
            "content",
        )
        .await;
        app.send_text(&alice, "bob", &at_limit).await;
        assert_error_naming(
            app.post_group_message(&alice.token, &group.to_string(), &json!({"content": over}))
                .await,
            400,
            "content",
        )
        .await;
        app.send_group_text(&alice, group, &at_limit).await;

        // The socket, private and group.
        let mut ws = app.ws_connect(&alice.token).await;
        for (frame, at) in [
            (
                socket_message("bob", &over, "p-over"),
                socket_message("bob", &at_limit, "p-at"),
            ),
            (
                group_socket_message(group, &over, "g-over"),
                group_socket_message(group, &at_limit, "g-at"),
            ),
        ] {
            let error = ws_send_and_recv(&mut ws, &frame).await;
            assert_error_frame(&error, 400);
            assert_detail_names(&error, "content");
            assert_eq!(error["client_id"], frame["client_id"], "{error}");
            let ack = ws_send_and_recv(&mut ws, &at).await;
            assert_eq!(
                ack["type"], "ack",
                "content of exactly 100 characters: {ack}"
            );
        }
        // Only the four accepted messages were stored.
        assert_eq!(app.history_ids(&alice.token, "bob", "").await.len(), 2);
        assert_eq!(
            app.group_history_ids(&alice.token, group, "").await.len(),
            2
        );
    }
);

api_test!(
    deeply_nested_json_is_refused_with_the_error_body_and_nothing_breaks,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let arrays = "[".repeat(10_000);
        let objects = "{\"a\":".repeat(10_000);
        let inside_a_field = format!(
            "{{\"recipient\":\"bob\",\"content\":\"hi\",\"extra\":{}1{}}}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        for body in [&arrays, &objects, &inside_a_field] {
            for (path, token) in [
                ("/messages/private", alice.token.as_str()),
                ("/groups", alice.token.as_str()),
                ("/auth/login", ""),
            ] {
                let response = app
                    .post_raw(path, token, Some("application/json"), body.clone())
                    .await;
                let status = response.status().as_u16();
                let what = format!("POST {path} with {} bytes of nesting", body.len());
                if body == &inside_a_field && status == 200 {
                    // Unknown fields are skipped (without recursion), so
                    // this one may be accepted; it must not hurt the server.
                    continue;
                }
                assert!(
                    status == 400 || status == 413,
                    "{what} should be 400 or 413, got {status}"
                );
                assert_error(response, status).await;
            }
        }
        // The same over a socket: an error frame, and the socket stays open.
        let mut ws = app.ws_connect(&alice.token).await;
        let frame_nested = format!(
            "{{\"type\":\"message\",\"recipient\":\"bob\",\"content\":\"hi\",\"client_id\":\"n\",\"extra\":{}1{}}}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        for text in [&arrays, &objects] {
            ws_send_text(&mut ws, text).await;
            let error = ws_recv_skipping_presence(&mut ws).await;
            assert_error_frame(&error, 400);
        }
        // Nesting inside an unknown field: refused, or skipped and acked.
        ws_send_text(&mut ws, &frame_nested).await;
        let reply = ws_recv_skipping_presence(&mut ws).await;
        if reply["type"] == "error" {
            assert_error_frame(&reply, 400);
        } else {
            assert_ack(&reply, "n", "sent");
        }
        let ack = ws_send_and_recv(&mut ws, &socket_message("bob", "fine", "c1")).await;
        assert_ack(&ack, "c1", "sent");
        // The server still answers REST.
        let history = app.history_ids(&alice.token, "bob", "").await;
        assert!(!history.is_empty());
    }
);

api_test!(
    sends_beyond_the_burst_are_429_with_retry_after_until_the_bucket_refills,
    config(|c| {
        c.rate_limits = Switch::On;
        c.message_rate = 1.0;
        c.message_burst = 3.0;
        c.auth_rate = 1000.0;
    }),
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut ws = app.ws_connect(&alice.token).await;

        // The burst: three sends, REST and socket together.
        app.send_text(&alice, "bob", "1").await;
        app.send_group_text(&alice, group, "2").await;
        let ack = ws_send_until_ack(&mut ws, &socket_message("bob", "3", "c3")).await;
        assert_ack(&ack, "c3", "sent");

        // Then REST (private and group) is 429 with Retry-After...
        let private = app
            .send_private(&alice.token, &json!({"recipient": "bob", "content": "4"}))
            .await;
        let wait = assert_rate_limited(private).await;
        assert_eq!(wait, 1, "one token comes back within a second");
        assert_rate_limited(
            app.post_group_message(&alice.token, &group.to_string(), &json!({"content": "5"}))
                .await,
        )
        .await;
        // ...and the socket gets an error frame with 429 and the client_id.
        let error = ws_send_until_ack(&mut ws, &socket_message("bob", "6", "c6")).await;
        assert_error_frame(&error, 429);
        assert_eq!(error["client_id"], "c6", "{error}");
        let error = ws_send_until_ack(&mut ws, &group_socket_message(group, "7", "c7")).await;
        assert_error_frame(&error, 429);
        assert_eq!(error["client_id"], "c7", "{error}");

        // Bob has his own bucket.
        app.send_text(&bob, "alice", "bob is not limited").await;

        // After Retry-After the bucket has refilled and sends succeed again.
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let ack = ws_send_until_ack(&mut ws, &socket_message("bob", "8", "c8")).await;
        assert_ack(&ack, "c8", "sent");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        app.send_text(&alice, "bob", "9").await;

        // Only the accepted sends were stored.
        let stored: Vec<String> = array(
            &json_ok(app.private_history(&alice.token, "bob", "").await).await,
            "history",
        )
        .iter()
        .map(|m| str_field(m, "content").to_string())
        .collect();
        assert_eq!(stored, ["1", "3", "bob is not limited", "8", "9"]);
    }
);

api_test!(
    logins_and_registrations_beyond_the_per_address_limit_are_429,
    config(|c| {
        c.rate_limits = Switch::On;
        c.auth_rate = 4.0;
    }),
    |app| async move {
        // create_user is a registration and a login: two of the four.
        let alice = app.create_user("alice").await;
        // A failed login counts too.
        assert_error(
            app.login(&json!({"username": "alice", "password": "wrong password"}))
                .await,
            401,
        )
        .await;
        app.login_token("alice", &alice.password).await;
        // The fifth attempt, login or registration, is refused.
        let login = app
            .login(&json!({"username": "alice", "password": alice.password}))
            .await;
        assert_rate_limited(login).await;
        let registration = app
            .register(&json!({"username": "bob", "email": "bob@example.com", "password": "battery staple"}))
            .await;
        assert_rate_limited(registration).await;
        // The refused registration created nothing, and the token still works.
        json_ok(app.list_devices(&alice.token).await).await;
        assert_error(
            app.send_private(&alice.token, &json!({"recipient": "bob", "content": "hi"}))
                .await,
            404,
        )
        .await;
    }
);

/// How soon a refusal from the hashing queue must come: at once, so well
/// under the 10 s a hash may wait for a thread before it is given up.
const PROMPTLY: Duration = Duration::from_secs(2);

/// Sends `requests` at once; each answer with how long it took from its send.
async fn all_at_once<F, Fut>(requests: usize, request: F) -> Vec<(Response, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    futures_util::future::join_all((0..requests).map(|n| {
        let sent = request(n);
        async move {
            let started = Instant::now();
            let response = sent.await;
            (response, started.elapsed())
        }
    }))
    .await
}

/// Asserts a prompt 503 from the hashing queue: `Retry-After` and the error
/// body saying the server is busy.
async fn assert_shed(response: Response, took: Duration) {
    assert!(
        took < PROMPTLY,
        "a refusal should come at once, it took {took:?}"
    );
    retry_after(&response);
    let body = assert_error(response, 503).await;
    assert!(
        str_field(&body, "detail").contains("too busy"),
        "the detail should say the server is too busy: {body}"
    );
}

api_test!(
    logins_beyond_the_hashing_queue_are_refused_at_once_with_503_and_retry_after,
    config(|c| c.hash_queue = NonZeroUsize::new(1)),
    |app| async move {
        let alice = app.create_user("alice").await;
        const LOGINS: usize = 24;
        let client = &app;
        let answers = all_at_once(LOGINS, |_| {
            let body = json!({"username": "alice", "password": alice.password});
            async move { client.login(&body).await }
        })
        .await;
        let (mut answered, mut refused) = (0, 0);
        for (response, took) in answers {
            match response.status().as_u16() {
                200 => {
                    str_field(&json_ok(response).await, "access_token");
                    answered += 1;
                }
                503 => {
                    assert_shed(response, took).await;
                    refused += 1;
                }
                other => panic!(
                    "a login is answered or refused, got {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
        // One hash at a time: the first login in is answered, and logins
        // arriving while a hash runs are refused.
        assert!(answered >= 1, "no login was answered ({refused} refused)");
        assert!(refused >= 1, "no login was refused ({answered} answered)");
        // The queue is free again once the burst is over.
        let token = app.login_token("alice", &alice.password).await;
        json_ok(app.list_devices(&token).await).await;
    }
);

api_test!(
    registrations_beyond_the_hashing_queue_are_refused_at_once_and_create_nothing,
    config(|c| c.hash_queue = NonZeroUsize::new(1)),
    |app| async move {
        const REGISTRATIONS: usize = 16;
        let password = "correct horse battery";
        let client = &app;
        let answers = all_at_once(REGISTRATIONS, |n| {
            let body = json!({
                "username": format!("user{n}"),
                "email": format!("user{n}@example.com"),
                "password": password,
            });
            async move { client.register(&body).await }
        })
        .await;
        let mut registered = Vec::new();
        let mut refused = Vec::new();
        for (n, (response, took)) in answers.into_iter().enumerate() {
            match response.status().as_u16() {
                200 => {
                    assert_eq!(
                        str_field(&json_ok(response).await, "username"),
                        format!("user{n}")
                    );
                    registered.push(n);
                }
                503 => {
                    assert_shed(response, took).await;
                    refused.push(n);
                }
                other => panic!(
                    "a registration is answered or refused, got {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
        assert!(!registered.is_empty(), "no registration was answered");
        assert!(!refused.is_empty(), "no registration was refused");
        // The admitted accounts work; a refused one was never created, so
        // its name is free and its login is the same 401 as any unknown user.
        app.login_token(&format!("user{}", registered[0]), password)
            .await;
        let missing = format!("user{}", refused[0]);
        assert_error(
            app.login(&json!({"username": missing, "password": password}))
                .await,
            401,
        )
        .await;
        json_ok(
            app.register(&json!({
                "username": missing,
                "email": format!("{missing}@example.com"),
                "password": password,
            }))
            .await,
        )
        .await;
    }
);

api_test!(
    with_the_default_limits_normal_use_is_never_throttled,
    config(|c| c.rate_limits = Switch::On),
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let mut ws = app.ws_connect(&alice.token).await;
        let started = Instant::now();
        // Ten messages over about a second, REST and socket, private and group.
        for n in 0..10 {
            match n % 4 {
                0 => {
                    app.send_text(&alice, "bob", &format!("m{n}")).await;
                }
                1 => {
                    app.send_group_text(&alice, group, &format!("m{n}")).await;
                }
                2 => {
                    let id = format!("c{n}");
                    let ack =
                        ws_send_until_ack(&mut ws, &socket_message("bob", &format!("m{n}"), &id))
                            .await;
                    assert_ack(&ack, &id, "sent");
                }
                _ => {
                    let id = format!("c{n}");
                    let ack = ws_send_until_ack(
                        &mut ws,
                        &group_socket_message(group, &format!("m{n}"), &id),
                    )
                    .await;
                    assert_eq!(ack["type"], "ack", "{ack}");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        // A sync afterwards replays all ten.
        let mut other = app.ws_connect(&alice.token).await;
        let (replayed, synced) = ws_sync(&mut other, 0).await;
        assert_eq!(replayed.len(), 10, "{replayed:?}");
        assert_eq!(synced["last_id"], replayed[9]["id"]);
        // Two more logins are fine too (four of ten used so far).
        app.login_token("alice", &alice.password).await;
        app.login_token("bob", &bob.password).await;
    }
);

api_test!(
    with_rate_limits_off_a_burst_of_hundreds_passes,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let mut ws = app.ws_connect(&alice.token).await;
        const BURST: usize = 300;
        for n in 0..BURST {
            let frame = socket_message("bob", &format!("m{n}"), &format!("c{n}"));
            ws_send_text(&mut ws, &frame.to_string()).await;
        }
        let mut acked = std::collections::HashSet::new();
        while acked.len() < BURST {
            let frame = ws_recv_skipping_presence(&mut ws).await;
            assert_eq!(
                frame["type"], "ack",
                "every send of the burst is acked: {frame}"
            );
            acked.insert(str_field(&frame, "client_id").to_string());
        }
        // REST too, and more logins than the default per-address limit.
        for n in 0..60 {
            app.send_text(&alice, "bob", &format!("r{n}")).await;
        }
        for _ in 0..12 {
            app.login_token("alice", &alice.password).await;
        }
        assert_eq!(
            app.history_ids(&alice.token, "bob", "limit=500")
                .await
                .len(),
            BURST + 60
        );
    }
);
