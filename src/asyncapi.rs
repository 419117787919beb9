//! The AsyncAPI 3.0 description of the `/ws/chat` WebSocket (DESIGN.md §3),
//! served at `GET /asyncapi.json`: the handshake's authentication
//! (`Authorization: Bearer` or `?token=`) and `?device_id=`, every client
//! frame the server receives and every frame it sends, each with its JSON
//! Schema.
//!
//! It is kept by hand in `asyncapi.json` beside this file and must follow
//! `parley_actors::protocol` exactly: the integration tests
//! (`tests/api/asyncapi.rs`) validate real frames from socket traffic
//! against it, so a change to the protocol that is not made here fails them.

/// The document, as served.
pub const JSON: &str = include_str!("asyncapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_asyncapi_3_json() {
        let doc: serde_json::Value = serde_json::from_str(JSON).expect("asyncapi.json is JSON");
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["channels"]["chat"]["address"], "/ws/chat");
    }
}
