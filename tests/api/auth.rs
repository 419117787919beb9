//! POST /auth/register, POST /auth/login, and bearer-token checks on every
//! protected endpoint.

use std::time::Duration;

use crate::helpers::*;
use serde_json::{json, Value};

fn registration(username: &str) -> Value {
    json!({
        "username": username,
        "email": format!("{}@example.com", username.to_lowercase()),
        "password": "correct horse battery",
    })
}

api_test!(registering_returns_the_new_user, |app| async move {
    let body = json_ok(
        app.register(&json!({
            "username": "alice",
            "email": "alice@example.com",
            "password": "correct horse battery",
        }))
        .await,
    )
    .await;

    assert_has_fields(&body, &["id", "username", "email", "created_at"]);
    assert!(int_field(&body, "id") > 0, "id should be positive: {body}");
    assert_eq!(str_field(&body, "username"), "alice");
    assert_eq!(str_field(&body, "email"), "alice@example.com");
    assert_recent(&body["created_at"], "created_at");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| !k.to_lowercase().contains("password")),
        "the response must not carry the password or its hash: {body}"
    );
});

api_test!(me_is_the_callers_account_as_registered, |app| async move {
    let registered = json_ok(
        app.register(&json!({
            "username": "Alice",
            "email": "alice@example.com",
            "password": "correct horse battery",
        }))
        .await,
    )
    .await;
    let token = app.login_token("alice", "correct horse battery").await;
    let me = json_ok(app.get("/auth/me", &token).await).await;
    assert_eq!(me, registered);

    let bob = app.create_user("bob").await;
    let bobs = json_ok(app.get("/auth/me", &bob.token).await).await;
    assert_eq!(int_field(&bobs, "id"), bob.id, "{bobs}");
    assert_eq!(str_field(&bobs, "username"), "bob");

    let response = app.delete_account(&token, "correct horse battery").await;
    assert_eq!(response.status(), 204);
    assert_error(app.get("/auth/me", &token).await, 401).await;
});

api_test!(registered_users_get_distinct_ids, |app| async move {
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    assert!(alice.id > 0 && bob.id > 0);
    assert_ne!(alice.id, bob.id);
});

api_test!(
    the_username_and_email_are_shown_as_registered,
    |app| async move {
        let body = json_ok(
            app.register(&json!({
                "username": "Alice_Smith",
                "email": "Alice.Smith@Example.COM",
                "password": "correct horse battery",
            }))
            .await,
        )
        .await;
        assert_eq!(str_field(&body, "username"), "Alice_Smith");
        assert_eq!(str_field(&body, "email"), "Alice.Smith@Example.COM");
    }
);

api_test!(registering_a_taken_username_is_409, |app| async move {
    json_ok(app.register(&registration("alice")).await).await;
    let again = json!({
        "username": "alice",
        "email": "other@example.com",
        "password": "correct horse battery",
    });
    assert_error(app.register(&again).await, 409).await;
});

api_test!(usernames_are_unique_case_insensitively, |app| async move {
    json_ok(app.register(&registration("alice")).await).await;
    let again = json!({
        "username": "Alice",
        "email": "other@example.com",
        "password": "correct horse battery",
    });
    assert_error(app.register(&again).await, 409).await;
    let shouting = json!({
        "username": "ALICE",
        "email": "third@example.com",
        "password": "correct horse battery",
    });
    assert_error(app.register(&shouting).await, 409).await;
});

api_test!(
    registering_a_taken_email_is_409_in_any_case,
    |app| async move {
        json_ok(app.register(&registration("alice")).await).await;
        let same = json!({
            "username": "alice2",
            "email": "alice@example.com",
            "password": "correct horse battery",
        });
        assert_error(app.register(&same).await, 409).await;
        let other_case = json!({
            "username": "alice3",
            "email": "ALICE@Example.com",
            "password": "correct horse battery",
        });
        assert_error(app.register(&other_case).await, 409).await;
        let bob = app.create_user("bob").await;
        let bobs_email = json!({
            "username": "bobby",
            "email": bob.email.to_uppercase(),
            "password": "correct horse battery",
        });
        assert_error(app.register(&bobs_email).await, 409).await;
    }
);

api_test!(
    a_password_shorter_than_8_characters_is_400,
    |app| async move {
        let weak =
            json!({"username": "alice", "email": "alice@example.com", "password": "1234567"});
        assert_error(app.register(&weak).await, 400).await;
        let empty = json!({"username": "alice", "email": "alice@example.com", "password": ""});
        assert_error(app.register(&empty).await, 400).await;
        // The rejected attempts did not take the name.
        let ok = json!({"username": "alice", "email": "alice@example.com", "password": "12345678"});
        json_ok(app.register(&ok).await).await;
    }
);

api_test!(
    usernames_outside_3_to_32_allowed_characters_are_400,
    |app| async move {
        let too_long = "a".repeat(33);
        for bad in [
            "",
            "ab",
            too_long.as_str(),
            "has space",
            "bang!",
            "a/b",
            "ünïcode",
            "tab\tname",
            "at@sign",
        ] {
            let body = json!({"username": bad, "email": "x@example.com", "password": "correct horse battery"});
            let response = app.register(&body).await;
            assert_eq!(
                response.status().as_u16(),
                400,
                "username {bad:?} should be rejected"
            );
            assert_error(response, 400).await;
        }
    }
);

api_test!(
    usernames_of_3_and_32_allowed_characters_are_accepted,
    |app| async move {
        let longest = format!("A-z_0.9{}", "x".repeat(25));
        assert_eq!(longest.len(), 32);
        for (i, good) in ["a.b", "A_9", "a-b", longest.as_str()]
            .into_iter()
            .enumerate()
        {
            let body = json!({
                "username": good,
                "email": format!("user{i}@example.com"),
                "password": "correct horse battery",
            });
            let registered = json_ok(app.register(&body).await).await;
            assert_eq!(str_field(&registered, "username"), good);
        }
    }
);

api_test!(malformed_emails_are_400, |app| async move {
    for bad in [
        "",
        "not-an-email",
        "@example.com",
        "alice@",
        "alice example.com",
    ] {
        let body = json!({"username": "alice", "email": bad, "password": "correct horse battery"});
        let response = app.register(&body).await;
        assert_eq!(
            response.status().as_u16(),
            400,
            "email {bad:?} should be rejected"
        );
        assert_error(response, 400).await;
    }
});

api_test!(
    registering_without_a_required_field_is_400_naming_it,
    |app| async move {
        for field in ["username", "email", "password"] {
            let mut body = registration("alice");
            body.as_object_mut().unwrap().remove(field);
            assert_error_naming(app.register(&body).await, 400, field).await;
        }
    }
);

api_test!(
    registering_with_a_field_of_the_wrong_type_is_400_naming_it,
    |app| async move {
        for (field, value) in [
            ("username", json!(42)),
            ("email", json!(["a@b.c"])),
            ("password", json!(12345678)),
        ] {
            let mut body = registration("alice");
            body[field] = value;
            assert_error_naming(app.register(&body).await, 400, field).await;
        }
    }
);

api_test!(
    logging_in_returns_a_bearer_token_that_works,
    |app| async move {
        json_ok(app.register(&registration("alice")).await).await;
        let body = json_ok(
            app.login(&json!({"username": "alice", "password": "correct horse battery"}))
                .await,
        )
        .await;
        assert_has_fields(&body, &["access_token", "token_type"]);
        assert_eq!(str_field(&body, "token_type"), "bearer");
        let token = str_field(&body, "access_token");
        assert!(!token.is_empty(), "access_token is empty");
        let devices = json_ok(app.list_devices(token).await).await;
        assert_eq!(array(&devices, "GET /devices").len(), 0);
    }
);

api_test!(
    logging_in_is_case_insensitive_on_the_username,
    |app| async move {
        json_ok(app.register(&registration("Alice")).await).await;
        let token = app.login_token("aLiCe", "correct horse battery").await;
        json_ok(app.list_devices(&token).await).await;
        let token = app.login_token("ALICE", "correct horse battery").await;
        json_ok(app.list_devices(&token).await).await;
    }
);

api_test!(the_password_is_compared_exactly, |app| async move {
    json_ok(app.register(&registration("alice")).await).await;
    for wrong in [
        "Correct horse battery",
        "CORRECT HORSE BATTERY",
        "correct horse battery ",
        "correct horse batter",
    ] {
        let response = app
            .login(&json!({"username": "alice", "password": wrong}))
            .await;
        assert_error(response, 401).await;
    }
});

api_test!(
    a_wrong_password_and_an_unknown_user_get_the_same_401,
    |app| async move {
        json_ok(app.register(&registration("alice")).await).await;
        let wrong_password = assert_error(
            app.login(&json!({"username": "alice", "password": "wrong password!"}))
                .await,
            401,
        )
        .await;
        let unknown_user = assert_error(
            app.login(&json!({"username": "nobody", "password": "correct horse battery"}))
                .await,
            401,
        )
        .await;
        assert_eq!(
            wrong_password["detail"], unknown_user["detail"],
            "the two failures must not be told apart"
        );
    }
);

api_test!(
    logging_in_without_a_required_field_is_400_naming_it,
    |app| async move {
        json_ok(app.register(&registration("alice")).await).await;
        assert_error_naming(
            app.login(&json!({"username": "alice"})).await,
            400,
            "password",
        )
        .await;
        assert_error_naming(
            app.login(&json!({"password": "correct horse battery"}))
                .await,
            400,
            "username",
        )
        .await;
        assert_error_naming(
            app.login(&json!({"username": "alice", "password": 12345678}))
                .await,
            400,
            "password",
        )
        .await;
    }
);

/// One request to every protected endpoint, with the given Authorization
/// header value (or none).
fn protected_requests(
    app: &TestApp,
    authorization: Option<&str>,
) -> Vec<(String, reqwest::RequestBuilder)> {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("hello.txt"),
    );
    let requests = vec![
        (
            "POST /messages/private",
            app.client
                .post(app.url("/messages/private"))
                .json(&json!({"recipient": "alice", "content": "hi"})),
        ),
        (
            "GET /messages/private/alice",
            app.client.get(app.url("/messages/private/alice")),
        ),
        (
            "POST /groups",
            app.client
                .post(app.url("/groups"))
                .json(&json!({"name": "g"})),
        ),
        (
            "GET /groups/1/messages",
            app.client.get(app.url("/groups/1/messages")),
        ),
        (
            "POST /devices",
            app.client
                .post(app.url("/devices"))
                .json(&json!({"device_id": "d1"})),
        ),
        ("GET /devices", app.client.get(app.url("/devices"))),
        (
            "DELETE /devices/d1",
            app.client.delete(app.url("/devices/d1")),
        ),
        (
            "POST /files/upload",
            app.client.post(app.url("/files/upload")).multipart(form),
        ),
        (
            "GET /files/{id}",
            app.client
                .get(app.url(&format!("/files/{}", uuid::Uuid::new_v4()))),
        ),
    ];
    requests
        .into_iter()
        .map(|(label, request)| {
            let request = match authorization {
                Some(value) => request.headers(raw_authorization(value)),
                None => request,
            };
            (label.to_string(), request)
        })
        .collect()
}

async fn assert_all_unauthorized(app: &TestApp, authorization: Option<&str>) {
    for (label, request) in protected_requests(app, authorization) {
        let response = request
            .send()
            .await
            .expect("the request reaches the server");
        let status = response.status().as_u16();
        assert_eq!(
            status, 401,
            "{label} with Authorization {authorization:?} should be 401, got {status}"
        );
        assert_error(response, 401).await;
    }
}

api_test!(
    a_missing_token_is_401_on_every_protected_endpoint,
    |app| async move {
        app.create_user("alice").await;
        assert_all_unauthorized(&app, None).await;
    }
);

api_test!(
    a_garbage_token_is_401_on_every_protected_endpoint,
    |app| async move {
        let alice = app.create_user("alice").await;
        assert_all_unauthorized(&app, Some("Bearer not-a-jwt")).await;
        assert_all_unauthorized(&app, Some("Bearer ")).await;
        assert_all_unauthorized(&app, Some("Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==")).await;
        // The real token without its scheme.
        assert_all_unauthorized(&app, Some(&alice.token)).await;
    }
);

api_test!(a_token_with_a_tampered_signature_is_401, |app| async move {
    let alice = app.create_user("alice").await;
    json_ok(app.list_devices(&alice.token).await).await;
    // Change the first character of the signature (the last part).
    let signature_start = alice.token.rfind('.').expect("a JWT has dots") + 1;
    let first = alice.token[signature_start..]
        .chars()
        .next()
        .expect("a signature");
    let replacement = if first == 'A' { "B" } else { "A" };
    let mut tampered = alice.token.clone();
    tampered.replace_range(signature_start..signature_start + 1, replacement);
    assert_error(app.list_devices(&tampered).await, 401).await;
    // A token whose payload was swapped for another user's is also refused.
    let bob = app.create_user("bob").await;
    let alice_parts: Vec<&str> = alice.token.split('.').collect();
    let bob_parts: Vec<&str> = bob.token.split('.').collect();
    assert_eq!(
        alice_parts.len(),
        3,
        "a JWT has three parts: {}",
        alice.token
    );
    let forged = format!("{}.{}.{}", alice_parts[0], bob_parts[1], alice_parts[2]);
    assert_error(app.list_devices(&forged).await, 401).await;
});

api_test!(
    a_token_signed_with_another_secret_is_401,
    |app| async move {
        let other = spawn_app().await;
        let foreign = other.create_user("alice").await;
        app.create_user("alice").await;
        assert_error(app.list_devices(&foreign.token).await, 401).await;
    }
);

api_test!(
    an_expired_token_is_401,
    config(|c| c.token_ttl = Duration::from_secs(1)),
    |app| async move {
        let alice = app.create_user("alice").await;
        // Valid at first...
        json_ok(app.list_devices(&alice.token).await).await;
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        // ...and refused once it has expired (no leeway beyond the TTL).
        assert_error(app.list_devices(&alice.token).await, 401).await;
        // Logging in again gives a working token.
        let fresh = app.login_token("alice", &alice.password).await;
        json_ok(app.list_devices(&fresh).await).await;
    }
);
