//! `GET /asyncapi.json` against real socket traffic: every frame the tests
//! send and every frame the server pushes during a conversation (private and
//! group messages, acks, presence, receipts, typing, membership events,
//! sync, errors) matches
//! exactly one message the document describes for its direction, and every
//! documented message is seen. Frames the server refuses are refused by the
//! document's schemas too.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::openapi::{assert_valid, fetch_document, references, resolve, violations};

/// The document and its messages by direction, as `(name, payload schema)`.
struct Frames {
    doc: Value,
    /// What a client sends (the server's `receive` operations).
    client: Vec<(String, Value)>,
    /// What the server pushes (its `send` operations).
    server: Vec<(String, Value)>,
    /// The names of the messages frames matched so far.
    seen: BTreeSet<String>,
}

impl Frames {
    async fn load(app: &TestApp) -> Frames {
        let doc = fetch_document(app, "/asyncapi.json").await;
        let client = messages_of(&doc, "receive");
        let server = messages_of(&doc, "send");
        Frames {
            doc,
            client,
            server,
            seen: BTreeSet::new(),
        }
    }

    /// The name of the one message among `candidates` that `frame` matches.
    fn classify(&self, candidates: &[(String, Value)], frame: &Value, what: &str) -> String {
        let mut reasons = Vec::new();
        let matched: Vec<&String> = candidates
            .iter()
            .filter(|(name, schema)| {
                let errors = violations(schema, &self.doc, frame);
                if !errors.is_empty() {
                    reasons.push(format!("{name}: {}", errors.join("; ")));
                }
                errors.is_empty()
            })
            .map(|(name, _)| name)
            .collect();
        assert!(
            matched.len() == 1,
            "{what} {frame} should match exactly one documented message, matched {matched:?}; \
             the others fail with:\n  {}",
            reasons.join("\n  ")
        );
        matched[0].clone()
    }

    fn server_frame(&mut self, frame: &Value) {
        let name = self.classify(&self.server, frame, "the server frame");
        self.seen.insert(name);
    }

    fn client_frame(&mut self, frame: &Value) {
        let name = self.classify(&self.client, frame, "the client frame");
        self.seen.insert(name);
    }

    /// Whether any documented client message accepts `frame`.
    fn accepts_client_frame(&self, frame: &Value) -> bool {
        self.client
            .iter()
            .any(|(_, schema)| violations(schema, &self.doc, frame).is_empty())
    }

    /// Sends `frame` after checking it against the document.
    async fn send(&mut self, ws: &mut WsStream, frame: Value) {
        self.client_frame(&frame);
        ws_send(ws, &frame).await;
    }

    /// Reads frames (checking each one) until one satisfies `wanted`.
    async fn recv_until(&mut self, ws: &mut WsStream, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = ws_recv(ws).await;
            self.server_frame(&frame);
            if wanted(&frame) {
                return frame;
            }
        }
    }

    /// Reads (and checks) what is left on `ws` until it stays quiet.
    async fn drain(&mut self, ws: &mut WsStream) {
        while let Some(frame) = ws_try_recv(ws, QUIET).await {
            self.server_frame(&frame);
        }
    }
}

/// The messages of the operations with `action` on the chat channel.
fn messages_of(doc: &Value, action: &str) -> Vec<(String, Value)> {
    let operations = doc["operations"].as_object().expect("operations");
    let mut messages = Vec::new();
    for operation in operations.values().filter(|o| o["action"] == action) {
        assert_eq!(operation["channel"], json!({"$ref": "#/channels/chat"}));
        for reference in operation["messages"].as_array().expect("messages") {
            let message = resolve(doc, reference);
            let name = message["name"]
                .as_str()
                .expect("a message name")
                .to_string();
            let payload = message["payload"].clone();
            assert!(payload.is_object(), "{name} has a payload schema");
            messages.push((name, payload));
        }
    }
    assert!(!messages.is_empty(), "no {action} operation has messages");
    messages
}

fn kind(frame: &Value) -> &str {
    frame["type"].as_str().unwrap_or_default()
}

api_test!(
    the_asyncapi_document_is_well_formed_and_describes_the_handshake,
    |app| async move {
        let doc = fetch_document(&app, "/asyncapi.json").await;
        let shipped: Value = serde_json::from_str(parley::asyncapi::JSON).expect("JSON");
        assert_eq!(doc, shipped, "the server serves the shipped document");
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["defaultContentType"], "application/json");
        let channel = &doc["channels"]["chat"];
        assert_eq!(channel["address"], "/ws/chat");

        // Handshake: bearer header or ?token=, and ?device_id=.
        let binding = &channel["bindings"]["ws"];
        assert_eq!(binding["method"], "GET");
        assert!(binding["query"]["properties"]["token"].is_object());
        assert!(binding["query"]["properties"]["device_id"].is_object());
        assert!(binding["headers"]["properties"]["Authorization"].is_object());
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["type"], "http");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["token"]["type"], "httpApiKey");
        assert_eq!(schemes["token"]["in"], "query");
        assert_eq!(schemes["token"]["name"], "token");

        // Every reference resolves.
        let mut found = Vec::new();
        references(&doc, &mut found);
        for reference in &found {
            resolve(&doc, &json!({ "$ref": reference }));
        }

        // Every message's examples match it, and only it, in its direction.
        let frames = Frames::load(&app).await;
        for (direction, messages) in [("client", &frames.client), ("server", &frames.server)] {
            for (name, _) in messages.iter() {
                let message = &doc["components"]["messages"][name];
                let examples = message["examples"].as_array().expect("examples");
                assert!(!examples.is_empty(), "{name} has an example");
                for example in examples {
                    let matched = frames.classify(messages, &example["payload"], direction);
                    assert_eq!(&matched, name, "the example of {name}");
                }
            }
        }
    }
);

api_test!(
    real_socket_frames_match_the_asyncapi_document,
    |app| async move {
        let mut f = Frames::load(&app).await;
        let alice = app.create_user("alice").await;
        let bob = app.create_user("bob").await;
        // While bob is offline: a message he will get by sync (which makes
        // it delivered and sends alice a receipt); it also makes them contacts.
        let first = app.send_text(&alice, "bob", "are you there?").await;
        let first_id = int_field(&first, "id");
        json_ok(
            app.register_device(&bob.token, &json!({"device_id": "phone"}))
                .await,
        )
        .await;

        // Three ways through the handshake: bearer header; ?token=; ?token=
        // with ?device_id=.
        let mut a1 = app.ws_connect(&alice.token).await;
        let mut a2 = app
            .ws_connect_query(&format!("token={}", alice.token), None)
            .await;
        let mut b1 = app
            .ws_connect_query(&format!("token={}&device_id=phone", bob.token), None)
            .await;
        f.recv_until(&mut a1, |fr| kind(fr) == "status" && fr["user"] == "bob")
            .await;

        // sync → the missed message, then synced; alice gets a receipt.
        f.send(&mut b1, json!({"type": "sync", "since": 0})).await;
        let replayed = f.recv_until(&mut b1, |fr| kind(fr) == "message").await;
        assert_eq!(replayed["id"], first_id);
        f.recv_until(&mut b1, |fr| kind(fr) == "synced").await;
        f.recv_until(&mut a1, |fr| {
            kind(fr) == "receipt" && fr["status"] == "delivered"
        })
        .await;

        // A private message: ack to the sending socket, message frames to
        // the sender's other socket and to the recipient.
        f.send(
            &mut a1,
            json!({"type": "message", "recipient": "bob", "content": "hi bob",
                   "message_type": "text", "content_type": "text/plain", "client_id": "c1"}),
        )
        .await;
        let ack = f.recv_until(&mut a1, |fr| kind(fr) == "ack").await;
        let private_id = int_field(&ack, "id");
        f.recv_until(&mut a2, |fr| {
            kind(fr) == "message" && fr["id"] == private_id
        })
        .await;
        f.recv_until(&mut b1, |fr| {
            kind(fr) == "message" && fr["id"] == private_id
        })
        .await;
        // Optional fields may be null; no client_id means an ack without one.
        f.send(
            &mut a1,
            json!({"type": "message", "recipient": "bob", "content": "again",
                   "message_type": null, "content_type": null}),
        )
        .await;
        let ack = f.recv_until(&mut a1, |fr| kind(fr) == "ack").await;
        assert!(ack.get("client_id").is_none(), "{ack}");

        // A group message.
        let group = app.create_group_with(&alice, "team", &[&bob]).await;
        f.send(
            &mut a1,
            json!({"type": "message", "group_id": group, "content": "hi team", "client_id": "c2"}),
        )
        .await;
        let group_ack = f.recv_until(&mut a1, |fr| kind(fr) == "ack").await;
        let group_message_id = int_field(&group_ack, "id");
        f.recv_until(&mut b1, |fr| {
            kind(fr) == "message" && fr["group_id"] == group
        })
        .await;

        // A reply, then changes: edited, reacted to and deleted messages
        // reach everyone who sees them as message_updated.
        f.send(
            &mut b1,
            json!({"type": "message", "recipient": "alice", "content": "hello",
                   "reply_to": private_id, "client_id": "c4"}),
        )
        .await;
        f.recv_until(&mut b1, |fr| kind(fr) == "ack").await;
        f.recv_until(&mut a1, |fr| {
            kind(fr) == "message" && fr["reply_to"] == private_id
        })
        .await;
        let edited = app
            .patch_json(
                &format!("/messages/{private_id}"),
                &alice.token,
                &json!({"content": "hi bob!"}),
            )
            .await;
        json_ok(edited).await;
        f.recv_until(&mut b1, |fr| {
            kind(fr) == "message_updated" && fr["id"] == private_id
        })
        .await;
        let reacted = app
            .put_json(
                &format!("/messages/{group_message_id}/reaction"),
                &bob.token,
                &json!({"emoji": "👍"}),
            )
            .await;
        json_ok(reacted).await;
        f.recv_until(&mut a1, |fr| {
            kind(fr) == "message_updated" && fr["group_id"] == group
        })
        .await;
        json_ok(
            app.delete(&format!("/messages/{group_message_id}"), &alice.token)
                .await,
        )
        .await;
        let tombstone = f
            .recv_until(&mut b1, |fr| {
                kind(fr) == "message_updated" && fr["deleted"] == true
            })
            .await;
        assert_eq!(
            (&tombstone["group_id"], &tombstone["content"]),
            (&json!(group), &json!(""))
        );

        // Typing, private and in the group.
        f.send(&mut a1, json!({"type": "typing", "recipient": "bob"}))
            .await;
        f.recv_until(&mut b1, |fr| {
            kind(fr) == "typing" && fr.get("recipient").is_some()
        })
        .await;
        f.send(&mut a1, json!({"type": "typing", "group_id": group}))
            .await;
        f.recv_until(&mut b1, |fr| {
            kind(fr) == "typing" && fr["group_id"] == group
        })
        .await;

        // Reading: the sender gets a read receipt.
        f.send(&mut b1, json!({"type": "read", "message_id": private_id}))
            .await;
        f.recv_until(&mut a1, |fr| {
            kind(fr) == "receipt" && fr["message_id"] == private_id && fr["status"] == "read"
        })
        .await;

        // Frames the server refuses (with an error frame, the socket staying
        // open) are refused by the document's schemas too.
        let refused = [
            json!({"type": "message", "recipient": "bob", "client_id": "c3"}),
            json!({"type": "message", "content": "to nobody"}),
            json!({"type": "message", "recipient": "bob", "group_id": group, "content": "both"}),
            json!({"type": "message", "recipient": 7, "content": "a number"}),
            json!({"type": "message", "recipient": "bob", "content": null}),
            json!({"type": "typing"}),
            json!({"type": "typing", "recipient": "bob", "group_id": group}),
            json!({"type": "read"}),
            json!({"type": "read", "message_id": "42"}),
            json!({"type": "message", "recipient": "bob", "content": "x", "reply_to": "42"}),
            json!({"type": "sync"}),
            json!({"type": "sync", "since": -1}),
            json!({"type": "sync", "since": 1.5}),
            json!({"type": "dance"}),
            json!({"recipient": "bob", "content": "no type"}),
        ];
        for frame in refused {
            assert!(
                !f.accepts_client_frame(&frame),
                "the document accepts {frame}, which the server refuses"
            );
            ws_send(&mut a1, &frame).await;
            let error = f.recv_until(&mut a1, |fr| kind(fr) == "error").await;
            assert_error_frame(&error, 400);
        }

        // Membership events: bob's role changes, then alice removes him.
        let group_path = group.to_string();
        json_ok(
            app.change_role(&alice.token, &group_path, "bob", "admin")
                .await,
        )
        .await;
        f.recv_until(&mut b1, |fr| kind(fr) == "role_changed").await;
        let removed = app.remove_member(&alice.token, &group_path, "bob").await;
        assert_eq!(removed.status(), 204);
        f.recv_until(&mut b1, |fr| kind(fr) == "member_removed")
            .await;

        // Leaving: alice's sockets see bob go offline.
        ws_close(b1).await;
        f.recv_until(&mut a1, |fr| {
            kind(fr) == "status" && fr["status"] == "offline"
        })
        .await;
        f.drain(&mut a1).await;
        f.drain(&mut a2).await;

        let documented: BTreeSet<String> = f
            .client
            .iter()
            .chain(f.server.iter())
            .map(|(name, _)| name.clone())
            .collect();
        let unseen: Vec<_> = documented.difference(&f.seen).collect();
        assert!(
            unseen.is_empty(),
            "documented messages no real frame matched: {unseen:?}"
        );
        // And a frame with `more` (a replay cut at its limit) fits `synced`.
        let more = json!({"type": "synced", "last_id": 5000, "more": true});
        f.server_frame(&more);
        assert_valid(
            &json!({"$ref": "#/components/schemas/Synced"}),
            &f.doc,
            &more,
            "synced with more",
        );
    }
);
