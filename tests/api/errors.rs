//! The error contract across the API (DESIGN.md §4): unknown routes, wrong
//! methods, malformed or oversize JSON, and JSON without a content type.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// The largest JSON body the server must accept.
const JSON_LIMIT: usize = 64 * 1024;

api_test!(
    an_unknown_route_is_404_with_the_error_body,
    |app| async move {
        let alice = app.create_user("alice").await;
        for (method, path) in [
            (Method::GET, "/does-not-exist"),
            (Method::POST, "/auth/nope"),
            (Method::GET, "/groups/1/nope"),
            (Method::DELETE, "/nothing/here/at/all"),
        ] {
            for token in ["", alice.token.as_str()] {
                let mut request = app.client.request(method.clone(), app.url(path));
                if !token.is_empty() {
                    request = request.bearer_auth(token);
                }
                let response = request
                    .send()
                    .await
                    .expect("the request reaches the server");
                let status = response.status().as_u16();
                assert_eq!(status, 404, "{method} {path} should be 404, got {status}");
                assert_error(response, 404).await;
            }
        }
    }
);

api_test!(
    a_known_path_with_the_wrong_method_is_405_with_an_allow_header,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let group = app.create_group_id(&alice, "g").await;
        let file = uuid::Uuid::new_v4();
        let cases = [
            (Method::GET, "/auth/register".to_string(), "POST"),
            (Method::PUT, "/auth/login".to_string(), "POST"),
            (Method::DELETE, "/messages/private".to_string(), "POST"),
            (Method::POST, "/messages/private/bob".to_string(), "GET"),
            (Method::PATCH, "/groups".to_string(), "POST"),
            (Method::DELETE, format!("/groups/{group}/messages"), "GET"),
            (Method::PUT, "/devices".to_string(), "GET"),
            (Method::PUT, "/devices".to_string(), "POST"),
            (Method::POST, "/devices/phone-1".to_string(), "DELETE"),
            (Method::PUT, "/files/upload".to_string(), "POST"),
            (Method::DELETE, format!("/files/{file}"), "GET"),
        ];
        for (method, path, allowed) in cases {
            let response = app
                .client
                .request(method.clone(), app.url(&path))
                .bearer_auth(&alice.token)
                .json(&json!({}))
                .send()
                .await
                .expect("the request reaches the server");
            let status = response.status().as_u16();
            assert_eq!(status, 405, "{method} {path} should be 405, got {status}");
            let allow = response
                .headers()
                .get(reqwest::header::ALLOW)
                .unwrap_or_else(|| panic!("{method} {path}: a 405 needs an Allow header"))
                .to_str()
                .expect("an ASCII Allow header")
                .to_string();
            let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
            assert!(
                listed.contains(&allowed),
                "{method} {path}: Allow {allow:?} should list {allowed}"
            );
            assert!(
                !listed.contains(&method.as_str()),
                "{method} {path}: Allow {allow:?} lists {method}"
            );
            assert_error(response, 405).await;
        }
    }
);

api_test!(
    malformed_json_is_400_on_every_json_endpoint,
    |app| async move {
        let alice = app.create_user("alice").await;
        for path in [
            "/auth/register",
            "/auth/login",
            "/messages/private",
            "/groups",
            "/devices",
        ] {
            for body in [
                "{\"username\": \"a\",",
                "not json at all",
                "{'single': 'quotes'}",
                "",
                "{\"a\":1}}",
            ] {
                let response = app
                    .post_raw(
                        path,
                        &alice.token,
                        Some("application/json"),
                        body.to_string(),
                    )
                    .await;
                let status = response.status().as_u16();
                assert_eq!(
                    status, 400,
                    "POST {path} with {body:?} should be 400, got {status}"
                );
                assert_error(response, 400).await;
            }
        }
    }
);

api_test!(json_that_is_not_an_object_is_400, |app| async move {
    let alice = app.create_user("alice").await;
    for path in [
        "/auth/register",
        "/auth/login",
        "/messages/private",
        "/groups",
        "/devices",
    ] {
        for body in ["[]", "\"text\"", "null", "42", "true"] {
            let response = app
                .post_raw(
                    path,
                    &alice.token,
                    Some("application/json"),
                    body.to_string(),
                )
                .await;
            let status = response.status().as_u16();
            assert_eq!(
                status, 400,
                "POST {path} with {body} should be 400, got {status}"
            );
            assert_error(response, 400).await;
        }
    }
});

api_test!(
    json_bodies_are_accepted_without_a_content_type,
    |app| async move {
        let registration = json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"});
        let registered = json_ok(
            app.post_raw("/auth/register", "", None, registration.to_string())
                .await,
        )
        .await;
        assert_eq!(str_field(&registered, "username"), "alice");

        let login = json!({"username": "alice", "password": "correct horse battery"});
        let logged_in = json_ok(
            app.post_raw("/auth/login", "", None, login.to_string())
                .await,
        )
        .await;
        let token = str_field(&logged_in, "access_token").to_string();

        app.create_user("bob").await;
        let message = json!({"recipient": "bob", "content": "no content type"});
        let sent = json_ok(
            app.post_raw("/messages/private", &token, None, message.to_string())
                .await,
        )
        .await;
        assert_private_message(&sent, "alice", "bob", "no content type");

        let group = json!({"name": "plain"});
        let created = json_ok(
            app.post_raw("/groups", &token, None, group.to_string())
                .await,
        )
        .await;
        assert_eq!(str_field(&created, "name"), "plain");

        let device = json!({"device_id": "phone-1"});
        let registered = json_ok(
            app.post_raw("/devices", &token, None, device.to_string())
                .await,
        )
        .await;
        assert_eq!(str_field(&registered, "device_id"), "phone-1");
    }
);

api_test!(
    a_json_body_of_64_kib_is_accepted_and_one_byte_more_is_413,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let message = json!({"recipient": "bob", "content": "padded"}).to_string();
        // Whitespace after the value is still valid JSON.
        let padded = |len: usize| format!("{message}{}", " ".repeat(len - message.len()));

        let at_limit = padded(JSON_LIMIT);
        assert_eq!(at_limit.len(), JSON_LIMIT);
        let sent = json_ok(
            app.post_raw(
                "/messages/private",
                &alice.token,
                Some("application/json"),
                at_limit,
            )
            .await,
        )
        .await;
        assert_private_message(&sent, "alice", "bob", "padded");

        let over = padded(JSON_LIMIT + 1);
        let response = app
            .post_raw(
                "/messages/private",
                &alice.token,
                Some("application/json"),
                over,
            )
            .await;
        assert_error(response, 413).await;
    }
);

api_test!(
    an_oversize_json_body_is_413_on_every_json_endpoint,
    |app| async move {
        let alice = app.create_user("alice").await;
        app.create_user("bob").await;
        let huge = "x".repeat(70 * 1024);
        let cases = [
            (
                "/auth/register",
                json!({"username": huge, "email": "a@example.com", "password": "correct horse battery"}),
            ),
            (
                "/auth/login",
                json!({"username": "alice", "password": huge}),
            ),
            (
                "/messages/private",
                json!({"recipient": "bob", "content": huge}),
            ),
            ("/groups", json!({"name": "g", "description": huge})),
            ("/devices", json!({"device_id": "d", "device_name": huge})),
        ];
        for (path, body) in &cases {
            for content_type in [Some("application/json"), None] {
                let response = app
                    .post_raw(path, &alice.token, content_type, body.to_string())
                    .await;
                let status = response.status().as_u16();
                assert_eq!(
                    status, 413,
                    "POST {path} ({content_type:?}) should be 413, got {status}"
                );
                assert_error(response, 413).await;
            }
        }
        // Nothing oversize was stored.
        assert!(app.history_ids(&alice.token, "bob", "").await.is_empty());
    }
);

api_test!(the_server_keeps_working_after_errors, |app| async move {
    let alice = app.create_user("alice").await;
    app.create_user("bob").await;
    assert_error(
        app.post_raw("/messages/private", &alice.token, None, "{".to_string())
            .await,
        400,
    )
    .await;
    assert_error(app.get("/nope", "").await, 404).await;
    let sent = app.send_text(&alice, "bob", "after the errors").await;
    assert_private_message(&sent, "alice", "bob", "after the errors");
});
