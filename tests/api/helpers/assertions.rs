//! Assertions on responses (status, the error body, timestamps) and
//! accessors for JSON fields that fail naming the field.

use reqwest::Response;
use serde_json::Value;

/// Asserts `status` and returns the body as JSON (panicking with the body if
/// it is not).
pub async fn json_status(response: Response, status: u16) -> Value {
    let method_url = response.url().to_string();
    let actual = response.status().as_u16();
    let text = response.text().await.expect("read the response body");
    assert_eq!(
        actual, status,
        "{method_url}: expected HTTP {status}, got {actual} with body {text}"
    );
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method_url}: the body is not JSON ({e}): {text:?}"))
}

/// Asserts 200 and returns the JSON body.
pub async fn json_ok(response: Response) -> Value {
    json_status(response, 200).await
}

/// Asserts an error response: HTTP `status`, a JSON content type and the
/// body `{detail: non-empty string, code: status, timestamp: RFC 3339}`.
/// Returns the body.
pub async fn assert_error(response: Response, status: u16) -> Value {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let url = response.url().to_string();
    let body = json_status(response, status).await;
    assert!(
        content_type.starts_with("application/json"),
        "{url}: an error body should be application/json, got Content-Type {content_type:?}"
    );
    assert_error_body(&body, status);
    body
}

/// Asserts `{detail, code, timestamp}` with `code == status`.
pub fn assert_error_body(body: &Value, status: u16) {
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("error `detail` should be a string: {body}"));
    assert!(!detail.trim().is_empty(), "error `detail` is empty: {body}");
    assert_eq!(
        body["code"].as_u64(),
        Some(u64::from(status)),
        "error `code` should equal the status {status}: {body}"
    );
    assert_timestamp(&body["timestamp"], "error timestamp");
}

/// Asserts that an error body's `detail` names `field`.
pub fn assert_detail_names(body: &Value, field: &str) {
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "error detail should name `{field}`: {body}"
    );
}

/// Asserts an error response and that its detail names `field`.
pub async fn assert_error_naming(response: Response, status: u16, field: &str) -> Value {
    let body = assert_error(response, status).await;
    assert_detail_names(&body, field);
    body
}

/// Asserts `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds) and
/// returns the instant.
pub fn assert_timestamp(value: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} should be a string timestamp, got {value}"));
    const SHAPE: &str = "0000-00-00T00:00:00.000Z";
    let shaped = text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE.bytes()).all(|(c, s)| match s {
            b'0' => c.is_ascii_digit(),
            _ => c == s,
        });
    assert!(
        shaped,
        "{what} should look like 2026-11-23T10:00:00.123Z (UTC, milliseconds, Z), got {text:?}"
    );
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what} is not RFC 3339 ({e}): {text:?}"))
        .with_timezone(&chrono::Utc)
}

/// Asserts a timestamp (as [`assert_timestamp`]) within five minutes of now.
pub fn assert_recent(value: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let at = assert_timestamp(value, what);
    let skew = (chrono::Utc::now() - at).num_seconds().abs();
    assert!(
        skew < 300,
        "{what} should be about now, got {at} ({skew} s away)"
    );
    at
}

/// The integer `field` of `object` (panics naming it otherwise).
pub fn int_field(object: &Value, field: &str) -> i64 {
    object[field]
        .as_i64()
        .unwrap_or_else(|| panic!("`{field}` should be an integer in {object}"))
}

/// The string `field` of `object` (panics naming it otherwise).
pub fn str_field<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` should be a string in {object}"))
}

/// The boolean `field` of `object` (panics naming it otherwise).
pub fn bool_field(object: &Value, field: &str) -> bool {
    object[field]
        .as_bool()
        .unwrap_or_else(|| panic!("`{field}` should be a boolean in {object}"))
}

/// `value` as an array (panics naming `what` otherwise).
pub fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} should be a JSON array, got {value}"))
}

/// Asserts that `object` is a JSON object with every one of `fields`.
pub fn assert_has_fields(object: &Value, fields: &[&str]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("expected a JSON object, got {object}"));
    for field in fields {
        assert!(
            map.contains_key(*field),
            "`{field}` is missing from {object}"
        );
    }
}

/// Asserts the shape of a private message as returned by REST.
pub fn assert_private_message(message: &Value, sender: &str, recipient: &str, content: &str) {
    assert_has_fields(
        message,
        &[
            "id",
            "content",
            "sender",
            "recipient",
            "timestamp",
            "status",
        ],
    );
    assert!(
        int_field(message, "id") > 0,
        "id should be positive: {message}"
    );
    assert_eq!(str_field(message, "content"), content, "content: {message}");
    assert_eq!(str_field(message, "sender"), sender, "sender: {message}");
    assert_eq!(
        str_field(message, "recipient"),
        recipient,
        "recipient: {message}"
    );
    assert_recent(&message["timestamp"], "message timestamp");
    let status = str_field(message, "status");
    assert!(
        ["sent", "delivered", "read"].contains(&status),
        "status should be sent, delivered or read: {message}"
    );
}
