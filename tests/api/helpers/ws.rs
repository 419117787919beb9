//! WebSocket helpers: opening sockets, reading frames (every read has a
//! timeout; pings and pongs are skipped) and asserting frame shapes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::AUTHORIZATION;
use reqwest::Response;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::http::with_query;
use super::*;

impl TestApp {
    /// Opens `/ws/chat?{query}` with an optional `Authorization: Bearer`.
    pub async fn ws_try_connect(
        &self,
        query: &str,
        bearer: Option<&str>,
    ) -> Result<WsStream, tungstenite::Error> {
        let url = with_query(&format!("{}/ws/chat", self.ws_address), query);
        let mut request = url
            .as_str()
            .into_client_request()
            .expect("a valid ws request");
        if let Some(token) = bearer {
            request.headers_mut().insert(
                AUTHORIZATION,
                format!("Bearer {token}").parse().expect("a valid header"),
            );
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, response))) => {
                assert_eq!(response.status().as_u16(), 101, "handshake status");
                Ok(ws)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => panic!("the WebSocket handshake to {url} did not finish within {WAIT:?}"),
        }
    }

    /// Opens a socket authenticated by header and waits until the server's
    /// session answers (see [`ws_wait_ready`]).
    pub async fn ws_connect(&self, token: &str) -> WsStream {
        self.ws_connect_query("", Some(token)).await
    }

    /// Opens a socket with `query` (e.g. `device_id=x` or `token=...`) and an
    /// optional bearer header, and waits until the session answers.
    pub async fn ws_connect_query(&self, query: &str, bearer: Option<&str>) -> WsStream {
        let mut ws = self
            .ws_try_connect(query, bearer)
            .await
            .unwrap_or_else(|e| panic!("the WebSocket handshake (query {query:?}) failed: {e}"));
        ws_wait_ready(&mut ws).await;
        ws
    }

    /// The handshake's refusal: status and (JSON) body, read over plain HTTP
    /// so that the whole body is available.
    pub async fn ws_refusal(&self, query: &str, authorization: Option<&str>) -> Response {
        let mut request = self
            .client
            .get(with_query(&self.url("/ws/chat"), query))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        self.send(request).await
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `frame` as a JSON text frame.
pub async fn ws_send(ws: &mut WsStream, frame: &Value) {
    ws_send_text(ws, &frame.to_string()).await;
}

/// Sends a raw text frame.
pub async fn ws_send_text(ws: &mut WsStream, text: &str) {
    tokio::time::timeout(WAIT, ws.send(Message::text(text.to_string())))
        .await
        .expect("sending a frame timed out")
        .expect("the socket accepts a frame");
}

/// The next JSON text frame within `wait`, or `None` if none arrives.
/// Control frames are skipped; a close or error fails the test.
pub async fn ws_try_recv<S>(ws: &mut S, wait: Duration) -> Option<Value>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let next = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(next) => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("the server sent a text frame that is not JSON ({e}): {text:?}")
                }))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(bytes))) => {
                panic!("unexpected binary frame of {} bytes", bytes.len())
            }
            Some(Ok(Message::Close(frame))) => panic!("the server closed the socket: {frame:?}"),
            Some(Err(e)) => panic!("the socket failed: {e}"),
            None => panic!("the socket ended"),
        }
    }
}

/// The next JSON text frame (waits at most [`WAIT`]).
pub async fn ws_recv<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    ws_try_recv(ws, WAIT)
        .await
        .unwrap_or_else(|| panic!("no frame arrived within {WAIT:?}"))
}

/// The next frame that is not a presence (`status`) frame; presence frames
/// arrive whenever contacts come and go and are skipped here.
pub async fn ws_recv_skipping_presence<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let frame = ws_recv(ws).await;
        if frame["type"] != "status" {
            return frame;
        }
    }
}

/// Asserts that no non-presence frame arrives within `wait`.
pub async fn ws_assert_quiet(ws: &mut WsStream, wait: Duration, why: &str) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        if let Some(frame) = ws_try_recv(ws, left).await {
            assert!(frame["type"] == "status", "{why}, but got {frame}");
        }
    }
}

/// Asserts, for all `sockets` at once, that no non-presence frame arrives
/// within `wait`.
pub async fn ws_assert_all_quiet(sockets: &mut [&mut WsStream], wait: Duration, why: &str) {
    futures_util::future::join_all(sockets.iter_mut().map(|ws| ws_assert_quiet(ws, wait, why)))
        .await;
}

/// Waits until the server's session for `ws` answers a frame: sends a text
/// frame that is not JSON and expects the `error` frame for it. After this
/// the session is registered and receives what its user receives.
pub async fn ws_wait_ready(ws: &mut WsStream) {
    ws_send_text(ws, "readiness probe (not JSON)").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws_try_recv(ws, left).await.unwrap_or_else(|| {
            panic!(
                "readiness probe: the session did not answer a non-JSON frame \
                 with an `error` frame within {WAIT:?}"
            )
        });
        match frame["type"].as_str() {
            // Presence frames can precede the answer.
            Some("status") => continue,
            Some("error") => return,
            _ => {
                panic!("readiness probe: a non-JSON frame should get an `error` frame, got {frame}")
            }
        }
    }
}

/// Reads `ws` until the server closes it (or the connection ends); fails
/// after [`WAIT`]. Returns the close frame's code, if one came.
pub async fn wait_closed(ws: &mut WsStream, what: &str) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("{what}: the socket was not closed within {WAIT:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
        }
    }
}

/// Reads until a `status` frame for `user` with `status` arrives.
pub async fn wait_for_status(ws: &mut WsStream, user: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = ws_try_recv(ws, left)
            .await
            .unwrap_or_else(|| panic!("no `{status}` for {user} within {WAIT:?}"));
        if frame["type"] == "status" && frame["user"] == user && frame["status"] == status {
            return frame;
        }
    }
}

/// Closes the socket and waits for the server's close (or the end of the stream).
pub async fn ws_close(mut ws: WsStream) {
    let _ = tokio::time::timeout(WAIT, ws.close(None)).await;
    let _ = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// Asserts the private-message frame shape of DESIGN.md §3.
pub fn assert_private_frame(frame: &Value, sender: &str, recipient: &str, content: &str) {
    assert_eq!(
        frame["type"], "message",
        "expected a message frame, got {frame}"
    );
    assert_has_fields(
        frame,
        &[
            "id",
            "sender",
            "recipient",
            "content",
            "timestamp",
            "message_type",
            "content_type",
            "status",
        ],
    );
    assert!(int_field(frame, "id") > 0, "frame id: {frame}");
    assert_eq!(str_field(frame, "sender"), sender, "frame sender: {frame}");
    assert_eq!(
        str_field(frame, "recipient"),
        recipient,
        "frame recipient: {frame}"
    );
    assert_eq!(
        str_field(frame, "content"),
        content,
        "frame content: {frame}"
    );
    assert_recent(&frame["timestamp"], "frame timestamp");
    assert_eq!(
        str_field(frame, "message_type"),
        "text",
        "frame message_type: {frame}"
    );
    assert_eq!(
        str_field(frame, "content_type"),
        "text/plain",
        "frame content_type: {frame}"
    );
}

/// Asserts that a handshake was refused with HTTP `status` (and, when the
/// refusal's body arrived with its headers, that it is the error body).
pub fn assert_handshake_status(result: Result<WsStream, tungstenite::Error>, status: u16) {
    match result {
        Ok(_) => panic!("the handshake should be refused with {status}, but it was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(
                response.status().as_u16(),
                status,
                "the handshake should be refused with {status}"
            );
            if let Some(Ok(body)) = response
                .body()
                .as_deref()
                .filter(|b| !b.is_empty())
                .map(serde_json::from_slice::<Value>)
            {
                assert_error_body(&body, status);
            }
        }
        Err(e) => panic!("the handshake should be refused with HTTP {status}, got {e}"),
    }
}

/// Asserts an `error` frame with `code`.
pub fn assert_error_frame(frame: &Value, code: u16) {
    assert_eq!(
        frame["type"], "error",
        "expected an error frame, got {frame}"
    );
    assert_error_body(frame, code);
}

/// A client `message` frame to `recipient` with `client_id`.
pub fn socket_message(recipient: &str, content: &str, client_id: &str) -> Value {
    json!({"type": "message", "recipient": recipient, "content": content, "client_id": client_id})
}

/// A client `message` frame to `group` with `client_id`.
pub fn group_socket_message(group: i64, content: &str, client_id: &str) -> Value {
    json!({"type": "message", "group_id": group, "content": content, "client_id": client_id})
}

/// Asserts an `ack` for `client_id` with `status` and returns its id.
pub fn assert_ack(frame: &Value, client_id: &str, status: &str) -> i64 {
    assert_eq!(frame["type"], "ack", "expected an ack, got {frame}");
    assert_has_fields(frame, &["client_id", "id", "timestamp", "status"]);
    assert_eq!(str_field(frame, "client_id"), client_id, "{frame}");
    let id = int_field(frame, "id");
    assert!(id > 0, "{frame}");
    assert_recent(&frame["timestamp"], "ack timestamp");
    assert_eq!(str_field(frame, "status"), status, "{frame}");
    id
}

/// Asserts the group-message frame shape of DESIGN.md §3 (default types).
pub fn assert_group_frame(frame: &Value, group: i64, sender: &str, content: &str) {
    assert_eq!(
        frame["type"], "message",
        "expected a message frame, got {frame}"
    );
    assert_has_fields(
        frame,
        &[
            "id",
            "group_id",
            "sender",
            "content",
            "timestamp",
            "message_type",
            "content_type",
        ],
    );
    assert!(int_field(frame, "id") > 0, "frame id: {frame}");
    assert_eq!(
        int_field(frame, "group_id"),
        group,
        "frame group_id: {frame}"
    );
    assert_eq!(str_field(frame, "sender"), sender, "frame sender: {frame}");
    assert_eq!(
        str_field(frame, "content"),
        content,
        "frame content: {frame}"
    );
    assert_recent(&frame["timestamp"], "frame timestamp");
    assert_eq!(str_field(frame, "message_type"), "text", "{frame}");
    assert_eq!(str_field(frame, "content_type"), "text/plain", "{frame}");
    assert!(
        frame.get("recipient").is_none(),
        "a group frame has no recipient: {frame}"
    );
}

/// Asserts a `receipt` frame for `message_id` by `user` with `status`.
pub fn assert_receipt(frame: &Value, message_id: i64, user: &str, status: &str) {
    assert_eq!(frame["type"], "receipt", "expected a receipt, got {frame}");
    assert_has_fields(frame, &["message_id", "user", "status", "timestamp"]);
    assert_eq!(int_field(frame, "message_id"), message_id, "{frame}");
    assert_eq!(str_field(frame, "user"), user, "{frame}");
    assert_eq!(str_field(frame, "status"), status, "{frame}");
    assert_recent(&frame["timestamp"], "receipt timestamp");
}

/// Sends `frame` over `ws` and returns the next non-presence frame (the ack
/// or error for it).
pub async fn ws_send_and_recv(ws: &mut WsStream, frame: &Value) -> Value {
    ws_send(ws, frame).await;
    ws_recv_skipping_presence(ws).await
}

/// Sends `frame` over `ws` and returns the `ack` (or `error`) that answers
/// it, skipping anything else that arrives first (messages, receipts,
/// presence, typing) — for sockets that also receive traffic.
pub async fn ws_send_until_ack(ws: &mut WsStream, frame: &Value) -> Value {
    ws_send(ws, frame).await;
    loop {
        let reply = ws_recv(ws).await;
        if reply["type"] == "ack" || reply["type"] == "error" {
            return reply;
        }
    }
}

/// Reads non-presence frames up to and including `synced`; returns the
/// frames before it and the `synced` frame.
pub async fn ws_recv_until_synced<S>(ws: &mut S) -> (Vec<Value>, Value)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let mut before = Vec::new();
    loop {
        let frame = ws_recv_skipping_presence(ws).await;
        if frame["type"] == "synced" {
            return (before, frame);
        }
        before.push(frame);
    }
}

/// Sends `{"type":"sync","since":since}` and returns the replayed frames
/// and the `synced` frame (see [`ws_recv_until_synced`]).
pub async fn ws_sync(ws: &mut WsStream, since: i64) -> (Vec<Value>, Value) {
    ws_send(ws, &json!({"type": "sync", "since": since})).await;
    ws_recv_until_synced(ws).await
}

/// The `id` of every frame.
pub fn ids_of(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|f| int_field(f, "id")).collect()
}

/// Asserts that `ids` strictly increase.
pub fn assert_ascending(ids: &[i64], what: &str) {
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] >= pair[1]) {
        panic!(
            "{what}: ids should strictly increase, but {} is followed by {}: {ids:?}",
            pair[0], pair[1]
        );
    }
}
