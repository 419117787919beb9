//! Who may do what: forged and revoked tokens, who may download a file, and
//! an authorization matrix over every route and every client frame type.

use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use crate::helpers::*;

/// The signing secret the token tests give the server, so they can forge
/// tokens that differ from a real one only in what they test.
const SECRET: &str = "access-test-secret";

/// Unpadded base64url (RFC 4648 §5), as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A token with `header` over the payload of the real `token`, signed as
/// HS256 with [`SECRET`] (what the server would accept if it ignored the
/// header's algorithm).
fn resigned(token: &str, header: &Value) -> String {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let signing_input = format!("{}.{payload}", base64url(header.to_string().as_bytes()));
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HMAC signing works");
    format!("{signing_input}.{signature}")
}

/// Asserts that `token` is refused on REST and on the socket handshake.
async fn assert_token_refused(app: &TestApp, token: &str, what: &str) {
    let response = app.list_devices(token).await;
    assert_eq!(
        response.status().as_u16(),
        401,
        "{what}: REST should be 401"
    );
    assert_error(response, 401).await;
    assert_handshake_status(app.ws_try_connect("", Some(token)).await, 401);
    let query = format!("token={token}");
    assert_handshake_status(app.ws_try_connect(&query, None).await, 401);
}

/// Asserts that `token` works on REST and on the socket handshake.
async fn assert_token_works(app: &TestApp, token: &str) {
    json_ok(app.list_devices(token).await).await;
    let ws = app.ws_connect(token).await;
    ws_close(ws).await;
}

api_test!(
    tokens_claiming_alg_none_or_rs256_are_401,
    config(|c| c.jwt_secret = Some(SECRET.to_string())),
    |app| async move {
        let alice = app.create_user("alice").await;
        // The control: re-signing the real payload the way the forgeries
        // are signed gives a working token, so only the algorithm differs.
        let control = resigned(&alice.token, &json!({"alg": "HS256", "typ": "JWT"}));
        assert_token_works(&app, &control).await;

        let payload = alice.token.split('.').nth(1).unwrap();
        let none_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
        let signature = alice.token.rsplit('.').next().unwrap();
        for (what, token) in [
            (
                "alg none, no signature",
                format!("{none_header}.{payload}."),
            ),
            (
                "alg none with the real signature",
                format!("{none_header}.{payload}.{signature}"),
            ),
            (
                "RS256 header, HMAC signature with the secret",
                resigned(&alice.token, &json!({"alg": "RS256", "typ": "JWT"})),
            ),
            (
                "HS512 signed with the secret",
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(Algorithm::HS512),
                    &serde_json::from_slice::<Value>(&base64url_decode(payload)).unwrap(),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap(),
            ),
        ] {
            assert_token_refused(&app, &token, what).await;
        }
    }
);

/// Decodes unpadded base64url (the inverse of [`base64url`]).
fn base64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(value(c)) << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

api_test!(
    a_deleted_accounts_tokens_are_401_and_its_sockets_close,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let second_token = app.login_token("alice", &alice.password).await;
        let mut first = app.ws_connect(&alice.token).await;
        let mut second = app.ws_connect(&second_token).await;
        let mut bobs = app.ws_connect(&bob.token).await;

        // The wrong password deletes nothing.
        assert_error(
            app.delete_account(&alice.token, "not the password").await,
            403,
        )
        .await;
        json_ok(app.list_devices(&alice.token).await).await;

        let response = app.delete_account(&alice.token, &alice.password).await;
        assert_eq!(response.status().as_u16(), 204);
        for (ws, what) in [
            (&mut first, "the socket of the deleting token"),
            (&mut second, "another socket of the account"),
        ] {
            wait_closed(ws, what).await;
        }
        for token in [&alice.token, &second_token] {
            assert_token_refused(&app, token, "a deleted account's token").await;
        }
        assert_error(
            app.login(&json!({"username": "alice", "password": alice.password}))
                .await,
            401,
        )
        .await;
        // Other users are untouched.
        let ack = ws_send_and_recv(&mut bobs, &socket_message("carol", "x", "c1")).await;
        assert_error_frame(&ack, 404);
        assert_token_works(&app, &bob.token).await;
    }
);

api_test!(logging_out_revokes_that_token_only, |app| async move {
    let alice = app.create_user("alice").await;
    let other = app.login_token("alice", &alice.password).await;
    let response = app.post_raw("/auth/logout", &alice.token, None, "").await;
    assert_eq!(response.status().as_u16(), 204, "logout is 204");
    assert_token_refused(&app, &alice.token, "a logged-out token").await;
    assert_error(
        app.post_raw("/auth/logout", &alice.token, None, "").await,
        401,
    )
    .await;
    assert_token_works(&app, &other).await;
    assert_error(app.post_raw("/auth/logout", "", None, "").await, 401).await;
});

api_test!(
    changing_the_password_revokes_every_older_token_and_closes_its_sockets,
    |app| async move {
        let alice = app.create_user("alice").await;
        let older = app.login_token("alice", &alice.password).await;
        let change =
            |current: &str, new: &str| json!({"current_password": current, "new_password": new});

        // A wrong current password is 403 (as documented) and changes nothing.
        assert_error_naming(
            app.post_json(
                "/auth/password",
                &alice.token,
                &change("wrong password", "brand new password"),
            )
            .await,
            403,
            "password",
        )
        .await;
        // A too-short new password is 400 naming it.
        assert_error_naming(
            app.post_json(
                "/auth/password",
                &alice.token,
                &change(&alice.password, "short"),
            )
            .await,
            400,
            "new_password",
        )
        .await;
        assert_token_works(&app, &older).await;
        let mut open_before = app.ws_connect(&older).await;

        let body = json_ok(
            app.post_json(
                "/auth/password",
                &older,
                &change(&alice.password, "brand new password"),
            )
            .await,
        )
        .await;
        assert_eq!(body["token_type"], "bearer");
        let fresh = str_field(&body, "access_token").to_string();
        assert_eq!(
            wait_closed(
                &mut open_before,
                "a socket opened before the password change"
            )
            .await,
            Some(1000),
            "closed normally, so the client signs in again"
        );
        assert_token_works(&app, &fresh).await;
        for token in [&alice.token, &older] {
            assert_token_refused(&app, token, "a token from before the password change").await;
        }
        assert_error(
            app.login(&json!({"username": "alice", "password": alice.password}))
                .await,
            401,
        )
        .await;
        let relogged = app.login_token("alice", "brand new password").await;
        assert_token_works(&app, &relogged).await;
    }
);

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

async fn upload(app: &TestApp, user: &TestUser, name: &str, bytes: &[u8]) -> (String, String) {
    let body = json_ok(app.upload_file(&user.token, name, bytes.to_vec()).await).await;
    (
        str_field(&body, "file_id").to_string(),
        str_field(&body, "url").to_string(),
    )
}

/// Downloads `file_id` as `user` and returns the status (and, for 404, the
/// detail); a 200 must be the bytes with the safe headers.
async fn download_status(app: &TestApp, user: &TestUser, file_id: &str, bytes: &[u8]) -> u16 {
    let response = app.download_file(&user.token, file_id).await;
    let status = response.status().as_u16();
    if status == 200 {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(
            header(reqwest::header::CONTENT_TYPE),
            "application/octet-stream"
        );
        assert_eq!(header(reqwest::header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert!(header(reqwest::header::CONTENT_DISPOSITION).starts_with("attachment"));
        assert!(response.bytes().await.unwrap().as_ref() == bytes);
    } else {
        let body = assert_error(response, status).await;
        assert_eq!(
            body["detail"], "file_id: no such file",
            "a hidden file answers exactly like a missing one"
        );
    }
    status
}

api_test!(
    only_the_uploader_and_those_who_see_a_message_mentioning_a_file_may_download_it,
    |app| async move {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        // HTML, so a browser would render it if the headers let it.
        let html = b"<html><script>alert(1)</script></html>";

        // Private: only once a private message mentions it (by id).
        let (private_file, _) = upload(&app, &alice, "page.html", html).await;
        assert_eq!(
            download_status(&app, &alice, &private_file, html).await,
            200
        );
        assert_eq!(download_status(&app, &bob, &private_file, html).await, 404);
        app.send_text(&alice, "bob", &format!("file {private_file}"))
            .await;
        assert_eq!(download_status(&app, &bob, &private_file, html).await, 200);
        assert_eq!(
            download_status(&app, &carol, &private_file, html).await,
            404
        );

        // Group: members while they are members (by url).
        let group = app.create_group_with(&alice, "g", &[&bob]).await;
        let (group_file, url) = upload(&app, &bob, "notes.html", html).await;
        app.send_group_text(&bob, group, &format!("see {url}"))
            .await;
        assert_eq!(download_status(&app, &alice, &group_file, html).await, 200);
        assert_eq!(download_status(&app, &carol, &group_file, html).await, 404);
        json_ok(
            app.add_member(&alice.token, &group.to_string(), "carol")
                .await,
        )
        .await;
        assert_eq!(
            download_status(&app, &carol, &group_file, html).await,
            200,
            "a new member sees the group's history, files included"
        );
        let removed = app
            .remove_member(&alice.token, &group.to_string(), "carol")
            .await;
        assert_eq!(removed.status().as_u16(), 204);
        assert_eq!(
            download_status(&app, &carol, &group_file, html).await,
            404,
            "a former member no longer sees the group's files"
        );
        // The uploader always may; the unknown id answers the same 404.
        assert_eq!(download_status(&app, &bob, &group_file, html).await, 200);
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_eq!(download_status(&app, &alice, &unknown, html).await, 404);
    }
);

api_test!(
    an_upload_over_the_limit_leaves_no_file_behind,
    config(|c| c.max_upload_bytes = 1024),
    |app| async move {
        let alice = app.create_user("alice").await;
        let files_dir = app.data_dir.join("files");
        let listing = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&files_dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let (kept, _) = upload(&app, &alice, "small.bin", &[7; 100]).await;
        assert_eq!(listing(), vec![kept.clone()]);
        for size in [1025, 256 * 1024] {
            assert_error(
                app.upload_file(&alice.token, "big.bin", vec![1; size])
                    .await,
                413,
            )
            .await;
            assert_eq!(
                listing(),
                vec![kept.clone()],
                "a refused upload of {size} bytes leaves nothing (not even a partial file)"
            );
        }
    }
);

// ---------------------------------------------------------------------------
// The authorization matrix
// ---------------------------------------------------------------------------

/// Who calls, from the least privileged up (cells run in this order, so a
/// destructive owner call comes after the others have tried).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Anonymous,
    Stranger,
    Member,
    Owner,
}

/// What a row sends.
#[derive(Clone, Copy)]
enum Body {
    None,
    /// JSON with `{placeholders}` (see [`Fixture::fill`]).
    Json(&'static str),
    /// A new account per cell.
    Registration,
    /// Alice's username and password.
    Login,
    /// The caller's own password, changed.
    PasswordChange,
    /// The caller's own password.
    AccountDeletion,
    /// A small multipart upload.
    Upload,
    /// A WebSocket handshake (101 when accepted).
    Handshake,
}

struct Row {
    method: &'static str,
    /// The route as the server's `routes!` table names it.
    route: &'static str,
    /// The path requested, with `{placeholders}`.
    path: &'static str,
    body: Body,
    /// The caller acts on their own account: each cell uses a new user.
    own_account: bool,
    /// Expected status for [owner, member, stranger, anonymous].
    expect: [u16; 4],
}

const fn row(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Body,
    expect: [u16; 4],
) -> Row {
    Row {
        method,
        route,
        path,
        body,
        own_account: false,
        expect,
    }
}

const fn own(method: &'static str, route: &'static str, body: Body, expect: [u16; 4]) -> Row {
    Row {
        method,
        route,
        path: route,
        body,
        own_account: true,
        expect,
    }
}

/// Owner is alice: she owns group `{group}` (members bob, erin, frank,
/// grace), sent private message `{pm}` to bob and `{gm}` to the group,
/// uploaded `{pfile}` (mentioned in `{pm}`) and `{gfile}` (mentioned in
/// `{gm}`), and registered the device `xyzzy-phone`. Member is bob, stranger
/// is carol. `{peer}` is the owner's conversation partner (bob for alice,
/// alice for the others); `{newcomer}` and `{victim}` differ per caller so
/// each cell has its own target.
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //   method    route                                     path                                  body                                                 owner member stranger anonymous
    row("POST",   "/auth/register",                         "/auth/register",                      Body::Registration,                                  [200, 200, 200, 200]),
    row("POST",   "/auth/login",                            "/auth/login",                         Body::Login,                                         [200, 200, 200, 200]),
    own("GET",    "/auth/me",                                                                      Body::None,                                          [200, 200, 200, 401]),
    own("POST",   "/auth/logout",                                                                  Body::None,                                          [204, 204, 204, 401]),
    own("POST",   "/auth/password",                                                                Body::PasswordChange,                                [200, 200, 200, 401]),
    own("DELETE", "/auth/account",                                                                 Body::AccountDeletion,                               [204, 204, 204, 401]),
    row("POST",   "/messages/private",                      "/messages/private",                   Body::Json(r#"{"recipient":"alice","content":"hello"}"#), [400, 200, 200, 401]),
    row("GET",    "/messages/private/{username}",           "/messages/private/{peer}",            Body::None,                                          [200, 200, 200, 401]),
    row("POST",   "/messages/{message_id}/read",            "/messages/{pm}/read",                 Body::None,                                          [403, 200, 404, 401]),
    row("POST",   "/messages/{message_id}/read",            "/messages/{gm}/read",                 Body::None,                                          [200, 200, 404, 401]),
    row("PATCH",  "/messages/{message_id}",                 "/messages/{pm}",                      Body::Json(r#"{"content":"xyzzy private {pfile}"}"#), [200, 403, 404, 401]),
    row("PATCH",  "/messages/{message_id}",                 "/messages/{gm}",                      Body::Json(r#"{"content":"xyzzy group {gfile}"}"#),  [200, 403, 404, 401]),
    row("DELETE", "/messages/{message_id}",                 "/messages/{spare_pm}",                Body::None,                                          [200, 403, 404, 401]),
    row("DELETE", "/messages/{message_id}",                 "/messages/{spare_gm}",                Body::None,                                          [200, 403, 404, 401]),
    row("PUT",    "/messages/{message_id}/reaction",        "/messages/{pm}/reaction",             Body::Json(r#"{"emoji":"👍"}"#),                     [200, 200, 404, 401]),
    row("PUT",    "/messages/{message_id}/reaction",        "/messages/{gm}/reaction",             Body::Json(r#"{"emoji":"👍"}"#),                     [200, 200, 404, 401]),
    row("DELETE", "/messages/{message_id}/reaction",        "/messages/{pm}/reaction",             Body::None,                                          [200, 200, 404, 401]),
    row("DELETE", "/messages/{message_id}/reaction",        "/messages/{gm}/reaction",             Body::None,                                          [200, 200, 404, 401]),
    row("GET",    "/search",                                "/search?q=xyzzy",                     Body::None,                                          [200, 200, 200, 401]),
    row("GET",    "/conversations",                         "/conversations",                      Body::None,                                          [200, 200, 200, 401]),
    row("GET",    "/groups",                                "/groups",                             Body::None,                                          [200, 200, 200, 401]),
    row("POST",   "/groups",                                "/groups",                             Body::Json(r#"{"name":"another"}"#),                 [200, 200, 200, 401]),
    row("GET",    "/groups/{group_id}/messages",            "/groups/{group}/messages",            Body::None,                                          [200, 200, 403, 401]),
    row("POST",   "/groups/{group_id}/messages",            "/groups/{group}/messages",            Body::Json(r#"{"content":"hi"}"#),                   [200, 200, 403, 401]),
    row("GET",    "/groups/{group_id}/members",             "/groups/{group}/members",             Body::None,                                          [200, 200, 403, 401]),
    row("POST",   "/groups/{group_id}/members",             "/groups/{group}/members",             Body::Json(r#"{"username":"{newcomer}"}"#),          [200, 403, 403, 401]),
    row("PATCH",  "/groups/{group_id}/members/{username}",  "/groups/{group}/members/erin",        Body::Json(r#"{"role":"admin"}"#),                   [200, 403, 403, 401]),
    row("DELETE", "/groups/{group_id}/members/{username}",  "/groups/{group}/members/{victim}",    Body::None,                                          [204, 403, 403, 401]),
    row("GET",    "/devices",                               "/devices",                            Body::None,                                          [200, 200, 200, 401]),
    row("POST",   "/devices",                               "/devices",                            Body::Json(r#"{"device_id":"xyzzy-phone"}"#),        [200, 409, 409, 401]),
    row("DELETE", "/devices/{device_id}",                   "/devices/xyzzy-phone",                Body::None,                                          [204, 404, 404, 401]),
    row("POST",   "/files/upload",                          "/files/upload",                       Body::Upload,                                        [200, 200, 200, 401]),
    row("GET",    "/files/{file_id}",                       "/files/{pfile}",                      Body::None,                                          [200, 200, 404, 401]),
    row("GET",    "/files/{file_id}",                       "/files/{gfile}",                      Body::None,                                          [200, 200, 404, 401]),
    row("GET",    "/ws/chat",                               "/ws/chat",                            Body::Handshake,                                     [101, 101, 101, 401]),
    row("GET",    "/",                                      "/",                                   Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/app.js",                                "/app.js",                             Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/style.css",                             "/style.css",                          Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/openapi.json",                          "/openapi.json",                       Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/asyncapi.json",                         "/asyncapi.json",                      Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/docs",                                  "/docs",                               Body::None,                                          [308, 308, 308, 308]),
    row("GET",    "/docs/{file:.*}",                        "/docs/",                              Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/healthz",                               "/healthz",                            Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/readyz",                                "/readyz",                             Body::None,                                          [200, 200, 200, 200]),
    row("GET",    "/metrics",                               "/metrics",                            Body::None,                                          [200, 200, 200, 200]),
];

/// What a client frame should get back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    /// An `ack`.
    Ack,
    /// An `error` frame with this code.
    Error(u16),
    /// No `error` frame (read and typing answer nothing when they work).
    Quiet,
    /// The replay and `synced`.
    Synced,
}

/// Client frames with `{placeholders}`, and the reply for [owner, member,
/// stranger] (anonymous callers cannot open a socket: see `/ws/chat` above).
#[rustfmt::skip]
const FRAMES: &[(&str, &str, [Reply; 3])] = &[
    //  frame type                 frame                                                                            owner             member            stranger
    ("send private (to alice)", r#"{"type":"message","recipient":"alice","content":"hi","client_id":"p"}"#,  [Reply::Error(400), Reply::Ack,     Reply::Ack]),
    ("send group",              r#"{"type":"message","group_id":{group},"content":"hi","client_id":"g"}"#,   [Reply::Ack,        Reply::Ack,     Reply::Error(403)]),
    ("read private message",    r#"{"type":"read","message_id":{pm}}"#,                                       [Reply::Error(403), Reply::Quiet,   Reply::Error(404)]),
    ("read group message",      r#"{"type":"read","message_id":{gm}}"#,                                       [Reply::Quiet,      Reply::Quiet,   Reply::Error(404)]),
    ("typing (to alice)",       r#"{"type":"typing","recipient":"alice"}"#,                                   [Reply::Error(400), Reply::Quiet,   Reply::Quiet]),
    ("typing (group)",          r#"{"type":"typing","group_id":{group}}"#,                                    [Reply::Quiet,      Reply::Quiet,   Reply::Error(403)]),
    ("sync",                    r#"{"type":"sync","since":0}"#,                                               [Reply::Synced,     Reply::Synced,  Reply::Synced]),
];

/// Appears in everything the owner keeps private; a stranger's or an
/// anonymous caller's successful answer must not contain it.
const MARKER: &str = "xyzzy";

struct Fixture {
    alice: TestUser,
    bob: TestUser,
    carol: TestUser,
    group: i64,
    pm: i64,
    gm: i64,
    /// Messages only the deletion rows use.
    spare_pm: i64,
    spare_gm: i64,
    pfile: String,
    gfile: String,
}

impl Fixture {
    async fn new(app: &TestApp) -> Fixture {
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;
        let mut others = Vec::new();
        for name in ["erin", "frank", "grace", "heidi", "ivan"] {
            others.push(app.create_user(name).await);
        }
        let members = [&bob, &others[0], &others[1], &others[2]];
        let group = app.create_group_with(&alice, "xyzzy-room", &members).await;
        let (pfile, _) = upload(app, &alice, "p.txt", b"xyzzy private bytes").await;
        let (gfile, gurl) = upload(app, &alice, "g.txt", b"xyzzy group bytes").await;
        let pm = int_field(
            &app.send_text(&alice, "bob", &format!("xyzzy private {pfile}"))
                .await,
            "id",
        );
        let gm = int_field(
            &app.send_group_text(&alice, group, &format!("xyzzy group {gurl}"))
                .await,
            "id",
        );
        let spare_pm = int_field(&app.send_text(&alice, "bob", "xyzzy spare").await, "id");
        let spare_gm = int_field(
            &app.send_group_text(&alice, group, "xyzzy spare").await,
            "id",
        );
        json_ok(
            app.register_device(&alice.token, &json!({"device_id": "xyzzy-phone"}))
                .await,
        )
        .await;
        Fixture {
            spare_pm,
            spare_gm,
            alice,
            bob,
            carol,
            group,
            pm,
            gm,
            pfile,
            gfile,
        }
    }

    fn user(&self, caller: Caller) -> Option<&TestUser> {
        match caller {
            Caller::Owner => Some(&self.alice),
            Caller::Member => Some(&self.bob),
            Caller::Stranger => Some(&self.carol),
            Caller::Anonymous => None,
        }
    }

    /// `template` with its placeholders filled in for `caller`.
    fn fill(&self, template: &str, caller: Caller) -> String {
        let owner = caller == Caller::Owner;
        template
            .replace("{group}", &self.group.to_string())
            .replace("{pm}", &self.pm.to_string())
            .replace("{gm}", &self.gm.to_string())
            .replace("{spare_pm}", &self.spare_pm.to_string())
            .replace("{spare_gm}", &self.spare_gm.to_string())
            .replace("{pfile}", &self.pfile)
            .replace("{gfile}", &self.gfile)
            .replace("{peer}", if owner { "bob" } else { "alice" })
            .replace("{newcomer}", if owner { "heidi" } else { "ivan" })
            .replace("{victim}", if owner { "frank" } else { "grace" })
    }
}

/// Runs one cell: the status, and the body text.
async fn call(
    app: &TestApp,
    row: &Row,
    fixture: &Fixture,
    caller: Caller,
    cell: usize,
) -> (u16, String) {
    // Calls on one's own account use a new account per cell.
    let fresh;
    let user = if row.own_account && caller != Caller::Anonymous {
        fresh = app.create_user(&format!("own{cell}")).await;
        Some(&fresh)
    } else {
        fixture.user(caller)
    };
    let token = user.map_or("", |u| u.token.as_str());
    let password = user.map_or("whatever password", |u| u.password.as_str());
    let path = fixture.fill(row.path, caller);
    if let Body::Handshake = row.body {
        return match app.ws_try_connect("", user.map(|u| u.token.as_str())).await {
            Ok(ws) => {
                ws_close(ws).await;
                (101, String::new())
            }
            Err(tungstenite::Error::Http(_)) => {
                // Again over plain HTTP, to read the refusal's whole body.
                let bearer = user.map(|u| format!("Bearer {}", u.token));
                let response = app.ws_refusal("", bearer.as_deref()).await;
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => panic!("GET /ws/chat as {caller:?}: {e}"),
        };
    }
    let method = reqwest::Method::from_bytes(row.method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(&path));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    request = match row.body {
        Body::None | Body::Handshake => request,
        Body::Json(template) => request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(fixture.fill(template, caller)),
        Body::Registration => {
            let name = format!("reg{cell}");
            request.json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "long enough"}))
        }
        Body::Login => {
            request.json(&json!({"username": "alice", "password": fixture.alice.password}))
        }
        Body::PasswordChange => {
            request.json(&json!({"current_password": password, "new_password": "another password"}))
        }
        Body::AccountDeletion => request.json(&json!({ "password": password })),
        Body::Upload => request.multipart(Form::new().part(
            "file",
            Part::bytes(b"plain".to_vec()).file_name("plain.txt"),
        )),
    };
    let response = request
        .send()
        .await
        .expect("the request reaches the server");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Sends a client frame and returns what answered it.
async fn frame_reply(ws: &mut WsStream, frame: &str) -> (Reply, Vec<Value>) {
    ws_send_text(ws, frame).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Read and typing answer only when refused: quiet for a while is success.
        let wait = if frame.contains("\"read\"") || frame.contains("\"typing\"") {
            QUIET.min(left)
        } else {
            left
        };
        let Some(reply) = ws_try_recv(ws, wait).await else {
            return (Reply::Quiet, seen);
        };
        match reply["type"].as_str() {
            Some("ack") => return (Reply::Ack, seen),
            Some("synced") => return (Reply::Synced, seen),
            Some("error") => {
                assert_error_frame(&reply, reply["code"].as_u64().unwrap_or(0) as u16);
                return (
                    Reply::Error(reply["code"].as_u64().unwrap_or(0) as u16),
                    seen,
                );
            }
            _ => seen.push(reply),
        }
    }
}

api_test!(
    every_route_and_frame_answers_each_kind_of_caller_as_documented,
    |app| async move {
        let fixture = Fixture::new(&app).await;
        let mut wrong = Vec::new();

        // Every route of the server has a row.
        for (method, route) in parley::routes::ROUTES {
            assert!(
                MATRIX
                    .iter()
                    .any(|r| r.method == *method && r.route == *route),
                "{method} {route} has no row in the authorization matrix"
            );
        }

        // Frames first: owner, member and stranger each on their own socket.
        let callers = [Caller::Owner, Caller::Member, Caller::Stranger];
        let mut sockets = Vec::new();
        for caller in callers {
            sockets.push(app.ws_connect(&fixture.user(caller).unwrap().token).await);
        }
        for (what, template, expected) in FRAMES {
            for (i, caller) in callers.iter().enumerate().rev() {
                let frame = fixture.fill(template, *caller);
                let (got, before) = frame_reply(&mut sockets[i], &frame).await;
                if got != expected[i] {
                    wrong.push(format!(
                        "frame {what} as {caller:?}: expected {:?}, got {got:?}",
                        expected[i]
                    ));
                }
                if *caller == Caller::Stranger
                    && before.iter().any(|f| f.to_string().contains(MARKER))
                {
                    wrong.push(format!("frame {what} as {caller:?} leaked: {before:?}"));
                }
            }
        }
        for ws in sockets {
            ws_close(ws).await;
        }

        // Then every route, least privileged caller first.
        let mut cell = 0;
        for row in MATRIX {
            for caller in [
                Caller::Anonymous,
                Caller::Stranger,
                Caller::Member,
                Caller::Owner,
            ] {
                cell += 1;
                let expected = row.expect[match caller {
                    Caller::Owner => 0,
                    Caller::Member => 1,
                    Caller::Stranger => 2,
                    Caller::Anonymous => 3,
                }];
                let (status, body) = call(&app, row, &fixture, caller, cell).await;
                let endpoint = format!("{} {}", row.method, fixture.fill(row.path, caller));
                if status != expected {
                    wrong.push(format!(
                        "{endpoint} as {caller:?}: expected {expected}, got {status} {body}"
                    ));
                } else if status >= 400 {
                    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if parsed["code"] != status || !parsed["detail"].is_string() {
                        wrong.push(format!(
                            "{endpoint} as {caller:?}: {status} without the error body: {body}"
                        ));
                    }
                }
                let outsider = matches!(caller, Caller::Stranger | Caller::Anonymous);
                if outsider && status < 300 && body.contains(MARKER) {
                    wrong.push(format!(
                        "{endpoint} as {caller:?} leaked the owner's data: {body}"
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "cells that disagree with the contract:\n{}",
            wrong.join("\n")
        );
        // The fixture changed only as the owner's cells changed it.
        let roles = app.member_roles(&fixture.alice.token, fixture.group).await;
        let names: Vec<&str> = roles.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"heidi") && !names.contains(&"ivan") && !names.contains(&"frank"),
            "{roles:?}"
        );
    }
);
