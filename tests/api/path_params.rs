//! Odd values in every path parameter (and the names and ids that requests
//! carry elsewhere): NUL, dot segments, percent-encoded slashes, over-long
//! and non-UTF-8 values each get 400 or 404 with the contract's error body
//! on both backends, never a 500, and no value reaches outside the files
//! directory. Requests go out byte for byte as written here (an HTTP
//! client library would resolve `..` before sending).

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Values that name nothing; each is written into the request line as is.
fn odd_values() -> Vec<String> {
    [
        "nul%00byte",
        "%00",
        "..",
        "%2e%2e",
        ".",
        "a%2Fb",
        "..%2F..%2Fjwt-secret",
        "%2e%2e%2fjwt-secret",
        "%ff%fe",
        "%C0%AE%C0%AE",
        "%20",
        "%E2%80%AE",
    ]
    .into_iter()
    .map(String::from)
    .chain(std::iter::once("x".repeat(4000)))
    .collect()
}

/// Sends one request with `path` exactly as given; its status and body.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

/// Asserts a 400 or 404 (or the listed status) with the error body.
fn assert_refused(what: &str, status: u16, body: &str, allowed: &[u16]) {
    assert!(
        allowed.contains(&status),
        "{what}: expected one of {allowed:?}, got {status} {body}"
    );
    let start = body
        .find('{')
        .unwrap_or_else(|| panic!("{what}: no JSON body: {body:?}"));
    let end = body.rfind('}').expect("a JSON object");
    let parsed: Value = serde_json::from_str(&body[start..=end])
        .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {body:?}"));
    assert_error_body(&parsed, status);
}

api_test!(
    every_string_path_parameter_answers_odd_values_with_the_error_body,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let upload = json_ok(
            app.upload_file(&alice.token, "a.txt", b"bytes".to_vec())
                .await,
        )
        .await;
        let file_id = str_field(&upload, "file_id").to_string();
        let role = json!({"role": "admin"});
        for value in odd_values() {
            let cases: [(&str, String, Option<&Value>); 5] = [
                ("GET", format!("/files/{value}"), None),
                ("GET", format!("/messages/private/{value}"), None),
                ("DELETE", format!("/devices/{value}"), None),
                ("DELETE", format!("/groups/{group}/members/{value}"), None),
                (
                    "PATCH",
                    format!("/groups/{group}/members/{value}"),
                    Some(&role),
                ),
            ];
            for (method, path, body) in cases {
                let (status, text) = raw(&app, method, &path, &alice.token, body).await;
                let what = format!("{method} {}", &path[..path.len().min(80)]);
                // `.` and `..` as a whole segment may leave the route: 404 either way.
                assert_refused(&what, status, &text, &[400, 404]);
                assert!(
                    !text.contains("bytes") && !text.contains("secret"),
                    "{what} leaked: {text}"
                );
            }
        }
        // The real file is still there and served only by its exact id.
        assert_eq!(
            app.download_file(&alice.token, &file_id).await.status(),
            200
        );
        for near in [
            format!("{file_id}%00"),
            format!("%20{file_id}"),
            file_id.to_uppercase().replace('-', ""),
        ] {
            let (status, text) =
                raw(&app, "GET", &format!("/files/{near}"), &alice.token, None).await;
            assert_refused(&near, status, &text, &[404]);
        }
    }
);

api_test!(
    every_numeric_path_parameter_answers_odd_values_with_400_or_404,
    |app| async move {
        let alice = app.create_user("alice").await;
        let content = json!({"content": "x"});
        let emoji = json!({"emoji": "👍"});
        for value in odd_values() {
            let cases: [(&str, String, Option<&Value>); 6] = [
                ("GET", format!("/groups/{value}/messages"), None),
                ("GET", format!("/groups/{value}/members"), None),
                ("POST", format!("/messages/{value}/read"), None),
                ("PATCH", format!("/messages/{value}"), Some(&content)),
                ("PUT", format!("/messages/{value}/reaction"), Some(&emoji)),
                ("DELETE", format!("/groups/{value}/members/bob"), None),
            ];
            for (method, path, body) in cases {
                let (status, text) = raw(&app, method, &path, &alice.token, body).await;
                let what = format!("{method} {}", &path[..path.len().min(80)]);
                // A dot segment can turn the path into another route's,
                // whose methods then differ: 405 with the error body too.
                assert_refused(&what, status, &text, &[400, 404, 405]);
            }
        }
    }
);

api_test!(
    a_nul_in_a_name_or_id_anywhere_names_nothing_on_either_backend,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        let nul = "bo\u{0}b";
        let send = json!({"recipient": nul, "content": "hi"});
        assert_error_naming(
            app.send_private(&alice.token, &send).await,
            404,
            "recipient",
        )
        .await;
        assert_error_naming(
            app.add_member(&alice.token, &group.to_string(), nul).await,
            404,
            "username",
        )
        .await;
        assert_error(
            app.login(&json!({"username": nul, "password": "whatever it is"}))
                .await,
            401,
        )
        .await;
        assert_error_naming(
            app.search(&alice.token, &[("q", "hi"), ("with", nul)])
                .await,
            404,
            "with",
        )
        .await;
        let refused = app
            .ws_refusal(&format!("token={}&device_id=a%00b", alice.token), None)
            .await;
        assert_error(refused, 404).await;

        let mut ws = app.ws_connect(&alice.token).await;
        ws_send(&mut ws, &json!({"type": "typing", "recipient": nul})).await;
        assert_error_frame(&ws_recv_skipping_presence(&mut ws).await, 404);
        ws_send(&mut ws, &socket_message(nul, "hi", "c1")).await;
        let frame = ws_recv_skipping_presence(&mut ws).await;
        assert_error_frame(&frame, 404);
        assert_eq!(frame["client_id"], "c1");
        // Everything still works afterwards.
        app.send_text(&alice, "bob", "still here").await;
    }
);
