//! One helper per endpoint, and the composite steps tests repeat (create a
//! user, a group, send a text). `token` is the bearer token; "" sends no
//! `Authorization`.

use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::multipart::{Form, Part};
use reqwest::Response;
use serde_json::{json, Value};

use super::*;

fn authorized(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    if token.is_empty() {
        request
    } else {
        request.bearer_auth(token)
    }
}

impl TestApp {
    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        request
            .send()
            .await
            .expect("the request reaches the server")
    }

    /// POST `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(authorized(self.client.post(self.url(path)), token).json(body))
            .await
    }

    /// POST a raw body (no Content-Type unless given) to `path`.
    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = authorized(self.client.post(self.url(path)), token).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    /// GET `path`.
    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.send(authorized(self.client.get(self.url(path)), token))
            .await
    }

    /// POST /auth/register
    pub async fn register(&self, body: &Value) -> Response {
        self.post_json("/auth/register", "", body).await
    }

    /// POST /auth/login
    pub async fn login(&self, body: &Value) -> Response {
        self.post_json("/auth/login", "", body).await
    }

    /// POST /messages/private
    pub async fn send_private(&self, token: &str, body: &Value) -> Response {
        self.post_json("/messages/private", token, body).await
    }

    /// GET /messages/private/{username}?{query}
    pub async fn private_history(&self, token: &str, username: &str, query: &str) -> Response {
        self.get(
            &with_query(&format!("/messages/private/{username}"), query),
            token,
        )
        .await
    }

    /// POST /groups
    pub async fn create_group(&self, token: &str, body: &Value) -> Response {
        self.post_json("/groups", token, body).await
    }

    /// GET /groups/{group_id}/messages?{query}; `group_id` is a string so
    /// tests can pass non-integers.
    pub async fn group_messages(&self, token: &str, group_id: &str, query: &str) -> Response {
        self.get(
            &with_query(&format!("/groups/{group_id}/messages"), query),
            token,
        )
        .await
    }

    /// POST /devices
    pub async fn register_device(&self, token: &str, body: &Value) -> Response {
        self.post_json("/devices", token, body).await
    }

    /// GET /devices
    pub async fn list_devices(&self, token: &str) -> Response {
        self.get("/devices", token).await
    }

    /// DELETE /devices/{device_id}
    pub async fn delete_device(&self, token: &str, device_id: &str) -> Response {
        let url = self.url(&format!("/devices/{device_id}"));
        self.send(authorized(self.client.delete(url), token)).await
    }

    /// POST /files/upload with `bytes` as the multipart field `file`.
    pub async fn upload_file(&self, token: &str, filename: &str, bytes: Vec<u8>) -> Response {
        let part = Part::bytes(bytes)
            .file_name(filename.to_string())
            .mime_str("application/octet-stream")
            .expect("a valid mime type");
        self.upload_form(token, Form::new().part("file", part))
            .await
    }

    /// POST /files/upload with any multipart form.
    pub async fn upload_form(&self, token: &str, form: Form) -> Response {
        self.send(authorized(self.client.post(self.url("/files/upload")), token).multipart(form))
            .await
    }

    /// GET /files/{file_id}
    pub async fn download_file(&self, token: &str, file_id: &str) -> Response {
        self.get(&format!("/files/{file_id}"), token).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.send(authorized(self.client.delete(self.url(path)), token))
            .await
    }

    /// DELETE /auth/account, confirmed with `password`.
    pub async fn delete_account(&self, token: &str, password: &str) -> Response {
        self.send(
            authorized(self.client.delete(self.url("/auth/account")), token)
                .json(&json!({ "password": password })),
        )
        .await
    }

    /// PUT `body` as JSON to `path`.
    pub async fn put_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(authorized(self.client.put(self.url(path)), token).json(body))
            .await
    }

    /// PATCH `body` as JSON to `path`.
    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(authorized(self.client.patch(self.url(path)), token).json(body))
            .await
    }

    /// GET /groups (the caller's groups with role and unread count)
    pub async fn list_groups(&self, token: &str) -> Response {
        self.get("/groups", token).await
    }

    /// GET /conversations?{query} (the caller's conversations and groups)
    pub async fn list_conversations(&self, token: &str, query: &str) -> Response {
        self.get(&with_query("/conversations", query), token).await
    }

    /// POST /groups/{group_id}/messages; `group_id` is a string so tests can
    /// pass non-integers.
    pub async fn post_group_message(&self, token: &str, group_id: &str, body: &Value) -> Response {
        self.post_json(&format!("/groups/{group_id}/messages"), token, body)
            .await
    }

    /// GET /groups/{group_id}/members
    pub async fn group_members(&self, token: &str, group_id: &str) -> Response {
        self.get(&format!("/groups/{group_id}/members"), token)
            .await
    }

    /// POST /groups/{group_id}/members `{username}`
    pub async fn add_member(&self, token: &str, group_id: &str, username: &str) -> Response {
        self.post_json(
            &format!("/groups/{group_id}/members"),
            token,
            &json!({ "username": username }),
        )
        .await
    }

    /// DELETE /groups/{group_id}/members/{username}
    pub async fn remove_member(&self, token: &str, group_id: &str, username: &str) -> Response {
        self.delete(&format!("/groups/{group_id}/members/{username}"), token)
            .await
    }

    /// PATCH /groups/{group_id}/members/{username} with `body` (normally `{role}`).
    pub async fn change_member(
        &self,
        token: &str,
        group_id: &str,
        username: &str,
        body: &Value,
    ) -> Response {
        self.patch_json(
            &format!("/groups/{group_id}/members/{username}"),
            token,
            body,
        )
        .await
    }

    /// PATCH /groups/{group_id}/members/{username} `{role}`
    pub async fn change_role(
        &self,
        token: &str,
        group_id: &str,
        username: &str,
        role: &str,
    ) -> Response {
        self.change_member(token, group_id, username, &json!({ "role": role }))
            .await
    }

    /// POST /messages/{message_id}/read
    pub async fn mark_read(&self, token: &str, message_id: &str) -> Response {
        self.post_json(&format!("/messages/{message_id}/read"), token, &json!({}))
            .await
    }

    /// GET /search with `params` (URL-encoded here, so tests pass raw text).
    pub async fn search(&self, token: &str, params: &[(&str, &str)]) -> Response {
        self.send(authorized(self.client.get(self.url("/search")), token).query(params))
            .await
    }

    // -- composite helpers --------------------------------------------------

    /// Creates a group owned by `owner` with `members` added (as plain
    /// members, in order) and returns its id.
    pub async fn create_group_with(
        &self,
        owner: &TestUser,
        name: &str,
        members: &[&TestUser],
    ) -> i64 {
        let group = self.create_group_id(owner, name).await;
        for member in members {
            json_ok(
                self.add_member(&owner.token, &group.to_string(), &member.username)
                    .await,
            )
            .await;
        }
        group
    }

    /// Posts `content` to `group` over REST as `from` and returns the message.
    pub async fn send_group_text(&self, from: &TestUser, group: i64, content: &str) -> Value {
        json_ok(
            self.post_group_message(
                &from.token,
                &group.to_string(),
                &json!({"content": content}),
            )
            .await,
        )
        .await
    }

    /// The ids of `group`'s history for `query`.
    pub async fn group_history_ids(&self, token: &str, group: i64, query: &str) -> Vec<i64> {
        let body = json_ok(self.group_messages(token, &group.to_string(), query).await).await;
        array(&body, "group history")
            .iter()
            .map(|m| int_field(m, "id"))
            .collect()
    }

    /// The caller's entry for `group` in `GET /groups`, if listed.
    pub async fn my_group(&self, token: &str, group: i64) -> Option<Value> {
        let groups = json_ok(self.list_groups(token).await).await;
        array(&groups, "GET /groups")
            .iter()
            .find(|g| g["id"] == group)
            .cloned()
    }

    /// The caller's `unread` count for `group` (which must be listed).
    pub async fn unread(&self, token: &str, group: i64) -> i64 {
        let entry = self
            .my_group(token, group)
            .await
            .unwrap_or_else(|| panic!("group {group} should be in GET /groups"));
        int_field(&entry, "unread")
    }

    /// `(username, role)` of every member of `group`, as listed (oldest first).
    pub async fn member_roles(&self, token: &str, group: i64) -> Vec<(String, String)> {
        let members = json_ok(self.group_members(token, &group.to_string()).await).await;
        array(&members, "members")
            .iter()
            .map(|m| {
                (
                    str_field(m, "username").to_string(),
                    str_field(m, "role").to_string(),
                )
            })
            .collect()
    }

    /// Registers `username` (email `<username>@example.com`, a fixed strong
    /// password) and logs in.
    pub async fn create_user(&self, username: &str) -> TestUser {
        let email = format!("{}@example.com", username.to_lowercase());
        let password = format!("pw-{username}-correct horse");
        let registered = json_ok(
            self.register(&json!({"username": username, "email": email, "password": password}))
                .await,
        )
        .await;
        let id = int_field(&registered, "id");
        let token = self.login_token(username, &password).await;
        TestUser {
            id,
            username: username.to_string(),
            email,
            password,
            token,
        }
    }

    /// Logs in and returns the access token.
    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let body = json_ok(
            self.login(&json!({"username": username, "password": password}))
                .await,
        )
        .await;
        str_field(&body, "access_token").to_string()
    }

    /// Sends `content` from `from` to `to` over REST and returns the message.
    pub async fn send_text(&self, from: &TestUser, to: &str, content: &str) -> Value {
        json_ok(
            self.send_private(&from.token, &json!({"recipient": to, "content": content}))
                .await,
        )
        .await
    }

    /// The ids of the caller's conversation with `username` for `query`.
    pub async fn history_ids(&self, token: &str, username: &str, query: &str) -> Vec<i64> {
        let body = json_ok(self.private_history(token, username, query).await).await;
        array(&body, "history")
            .iter()
            .map(|m| int_field(m, "id"))
            .collect()
    }

    /// The body of a successful `GET /search` with `params`.
    pub async fn search_ok(&self, token: &str, params: &[(&str, &str)]) -> Value {
        json_ok(self.search(token, params).await).await
    }

    /// The ids `GET /search` finds for `q` (and further `params`), in order.
    pub async fn search_ids(&self, token: &str, q: &str, params: &[(&str, &str)]) -> Vec<i64> {
        let mut all = vec![("q", q)];
        all.extend_from_slice(params);
        let body = self.search_ok(token, &all).await;
        array(&body["results"], "search results")
            .iter()
            .map(|m| int_field(m, "id"))
            .collect()
    }

    /// Creates a group named `name` and returns its id.
    pub async fn create_group_id(&self, owner: &TestUser, name: &str) -> i64 {
        let group = json_ok(
            self.create_group(&owner.token, &json!({"name": name}))
                .await,
        )
        .await;
        int_field(&group, "id")
    }

    /// The caller's device entry with `device_id`, if listed.
    pub async fn device_entry(&self, token: &str, device_id: &str) -> Option<Value> {
        let devices = json_ok(self.list_devices(token).await).await;
        array(&devices, "GET /devices")
            .iter()
            .find(|d| d["device_id"] == device_id)
            .cloned()
    }

    /// Polls `GET /devices` every 100 ms until the entry for `device_id`
    /// satisfies `done` (returned), or fails after five seconds with `what`
    /// and the last entry seen. For eventual effects such as `login_status`.
    pub async fn poll_device(
        &self,
        token: &str,
        device_id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let entry = self.device_entry(token, device_id).await;
            if let Some(entry) = &entry {
                if done(entry) {
                    return entry.clone();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not happen within {WAIT:?}; last entry: {entry:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub(super) fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// A header map with `Authorization: <value>` exactly as given, for odd auth cases.
pub fn raw_authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value.parse().expect("a valid header value"));
    headers
}
