//! `GET /openapi.json` against the server itself: every registered route is
//! documented and every documented operation is served; the document is
//! well formed; and real responses of every operation, successes and errors,
//! validate against the schemas the document gives them (with the `$ref`s
//! into `#/components` resolved by embedding the components).

use std::collections::{BTreeMap, BTreeSet};

use parley::config::Switch;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

// ---------------------------------------------------------------------------
// Shared with `asyncapi.rs`: JSON Schema validation against a document.
// ---------------------------------------------------------------------------

/// GETs a JSON document served by the app.
pub async fn fetch_document(app: &TestApp, path: &str) -> Value {
    let response = app.get(path, "").await;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{path} should be application/json, got {content_type:?}"
    );
    json_ok(response).await
}

/// Compiles `schema` (JSON Schema 2020-12, as OpenAPI 3.1 uses) with the
/// document's `components` embedded, so that `#/components/...` references
/// resolve. Formats (`date-time`, `uuid`) are checked.
pub fn compile(schema: &Value, document: &Value) -> jsonschema::Validator {
    let mut root = match schema {
        Value::Object(_) => schema.clone(),
        Value::Bool(_) => json!({"allOf": [schema]}),
        other => panic!("not a schema: {other}"),
    };
    root["components"] = document["components"].clone();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema does not compile ({e}): {schema}"))
}

/// The reasons `instance` fails `schema`, empty if it is valid.
pub fn violations(schema: &Value, document: &Value, instance: &Value) -> Vec<String> {
    compile(schema, document)
        .iter_errors(instance)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

/// Asserts that `instance` is valid against `schema`.
pub fn assert_valid(schema: &Value, document: &Value, instance: &Value, what: &str) {
    let errors = violations(schema, document, instance);
    assert!(
        errors.is_empty(),
        "{what} does not match its documented schema {schema}:\n  {}\ninstance: {instance}",
        errors.join("\n  ")
    );
}

/// Follows a local `$ref` (`#/a/b/c`) in `document`, if `value` is one.
pub fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references are used: {reference}"));
            let target = document
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} does not resolve"));
            resolve(document, target)
        }
        None => value,
    }
}

/// Every `$ref` string anywhere in `value`.
pub fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// The OpenAPI side.
// ---------------------------------------------------------------------------

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// An actix path template as OpenAPI writes it: `{name:regex}` → `{name}`.
fn openapi_template(actix: &str) -> String {
    let mut out = String::new();
    let mut rest = actix;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("balanced braces") + start;
        let name = rest[start + 1..end].split(':').next().unwrap_or_default();
        out.push_str(&rest[..start]);
        out.push('{');
        out.push_str(name);
        out.push('}');
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `(METHOD, path)` of every operation in the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The `(METHOD, path)` of every route `parley::routes::configure` registers.
fn registered_routes() -> BTreeSet<(String, String)> {
    parley::routes::ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), openapi_template(path)))
        .collect()
}

/// Whether a concrete request path fits an OpenAPI path template.
fn fits_template(path: &str, template: &str) -> bool {
    let (mut path, mut template) = (path, template);
    loop {
        match template.find('{') {
            None => return path == template,
            Some(start) => {
                if path.get(..start) != Some(&template[..start]) {
                    return false;
                }
                let end = template[start..].find('}').expect("balanced braces") + start;
                template = &template[end + 1..];
                path = &path[start..];
                // A parameter is one segment (possibly empty).
                let segment_end = path.find('/').unwrap_or(path.len());
                path = &path[segment_end..];
            }
        }
    }
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Checks responses against `/openapi.json` and remembers which statuses of
/// which operations were seen.
struct Contract {
    doc: Value,
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl Contract {
    async fn load(app: &TestApp) -> Contract {
        Contract {
            doc: fetch_document(app, "/openapi.json").await,
            seen: BTreeMap::new(),
        }
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        self.doc["paths"]
            .get(template)
            .and_then(|item| item.get(method.to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("{method} {template} is not documented"))
    }

    /// The documented response of `method template` for `status`, resolved.
    fn documented(&self, method: &str, template: &str, status: u16) -> &Value {
        let operation = self.operation(method, template);
        let response = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| {
                panic!(
                    "{method} {template} answered {status}, which it does not document (it documents {:?})",
                    operation["responses"].as_object().map(|r| r.keys().collect::<Vec<_>>())
                )
            });
        resolve(&self.doc, response)
    }

    /// Checks that `response` is what the document says `method template`
    /// answers with its status: a documented status, the documented headers
    /// and content type, and a JSON body valid against the documented schema
    /// (or no body where none is documented). Returns the JSON body, or
    /// `Value::Null` for other bodies.
    async fn check(&mut self, method: &str, template: &str, response: reqwest::Response) -> Value {
        let status = response.status().as_u16();
        let path = response.url().path().to_string();
        assert!(
            fits_template(&path, template),
            "the test sent {path}, which is not an instance of {template}"
        );
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("read the body");
        let what = format!("{method} {path} → {status}");
        let documented = self.documented(method, template, status).clone();
        if let Some(documented_headers) = documented.get("headers").and_then(Value::as_object) {
            for name in documented_headers.keys() {
                assert!(
                    headers.contains_key(name.as_str()),
                    "{what}: the documented header {name} is missing"
                );
            }
        }
        let json = match documented.get("content").and_then(Value::as_object) {
            None => {
                assert!(
                    body.is_empty(),
                    "{what}: no body is documented, got {:?}",
                    String::from_utf8_lossy(&body)
                );
                Value::Null
            }
            Some(content) => {
                let content_type = headers
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(essence)
                    .unwrap_or_default();
                let media = content
                    .get(&content_type)
                    .or_else(|| content.get("*/*"))
                    .unwrap_or_else(|| {
                        panic!(
                            "{what}: Content-Type {content_type:?} is not documented (documented: {:?})",
                            content.keys().collect::<Vec<_>>()
                        )
                    });
                if content_type == "application/json" {
                    let json: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                        panic!(
                            "{what}: the body is not JSON ({e}): {:?}",
                            String::from_utf8_lossy(&body)
                        )
                    });
                    let schema = media.get("schema").unwrap_or_else(|| {
                        panic!("{what}: application/json is documented without a schema")
                    });
                    assert_valid(schema, &self.doc, &json, &what);
                    json
                } else {
                    Value::Null
                }
            }
        };
        self.record(method, template, status);
        json
    }

    fn record(&mut self, method: &str, template: &str, status: u16) {
        self.seen
            .entry((method.to_string(), template.to_string()))
            .or_default()
            .insert(status);
    }

    /// Asserts that every documented operation was seen succeeding, and
    /// failing too if it documents a client error.
    fn assert_every_operation_checked(&self) {
        let mut missing = Vec::new();
        for (method, template) in documented_operations(&self.doc) {
            let operation = self.operation(&method, &template);
            let documented: Vec<u16> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter_map(|status| status.parse().ok())
                .collect();
            let seen = self
                .seen
                .get(&(method.clone(), template.clone()))
                .cloned()
                .unwrap_or_default();
            if !seen.iter().any(|status| *status < 400) {
                missing.push(format!(
                    "{method} {template}: no successful response checked"
                ));
            }
            let client_errors = documented.iter().any(|s| (400..500).contains(s));
            if client_errors && !seen.iter().any(|s| (400..500).contains(s)) {
                missing.push(format!("{method} {template}: no error response checked"));
            }
        }
        assert!(
            missing.is_empty(),
            "not covered:\n  {}",
            missing.join("\n  ")
        );
    }
}

/// A request with an optional bearer token and JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request
        .send()
        .await
        .expect("the request reaches the server")
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

api_test!(
    every_registered_route_is_documented_and_every_documented_route_is_registered,
    |app| async move {
        let doc = fetch_document(&app, "/openapi.json").await;
        let documented = documented_operations(&doc);
        let registered = registered_routes();
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "registered routes missing from /openapi.json: {undocumented:?}"
        );
        let unregistered: Vec<_> = documented.difference(&registered).collect();
        assert!(
            unregistered.is_empty(),
            "documented operations no route serves: {unregistered:?}"
        );
    }
);

api_test!(
    the_live_server_serves_every_documented_operation_as_documented,
    |app| async move {
        // Each operation, called without credentials or body and with every
        // path parameter set to 1, is routed (no "no such route" 404, no
        // 405) and answers with a documented status and body.
        let mut contract = Contract::load(&app).await;
        for (method, template) in documented_operations(&contract.doc) {
            let path = template
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "1"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let response = send(&app, method.clone(), &path, "", None).await;
            let body = contract.check(method.as_str(), &template, response).await;
            assert_ne!(
                body["detail"], "no such route",
                "{method} {path} is documented but not routed"
            );
        }
    }
);

api_test!(
    the_document_is_openapi_3_1_with_consistent_operations,
    |app| async move {
        let doc = fetch_document(&app, "/openapi.json").await;
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Parley");
        let bearer = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(
            (&bearer["type"], &bearer["scheme"], &bearer["bearerFormat"]),
            (&json!("http"), &json!("bearer"), &json!("JWT"))
        );

        // Every reference resolves; every component schema compiles.
        let mut found = Vec::new();
        references(&doc, &mut found);
        assert!(!found.is_empty());
        for reference in &found {
            resolve(&doc, &json!({ "$ref": reference }));
        }
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            assert!(
                jsonschema::meta::is_valid(schema),
                "components.schemas.{name} is not a valid JSON Schema: {schema}"
            );
            compile(schema, &doc);
        }

        let mut operation_ids = BTreeSet::new();
        for (method, template) in documented_operations(&doc) {
            let operation = &doc["paths"][&template][method.to_ascii_lowercase()];
            let what = format!("{method} {template}");
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(
                operation_ids.insert(id.to_string()),
                "{what}: operationId {id} is not unique"
            );
            let responses = operation["responses"].as_object().expect("responses");
            let documents = |status: &str| responses.contains_key(status);

            // Every path parameter is declared, and only those.
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().expect("a name"))
                .collect();
            let in_template: BTreeSet<&str> = template
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_template, "{what}: path parameters");

            // Protected operations say so and document 401; every error
            // response uses the error body.
            let protected = operation.get("security").is_some();
            let public = [
                "/auth/register",
                "/auth/login",
                "/",
                "/app.js",
                "/style.css",
                "/healthz",
                "/readyz",
                "/metrics",
            ]
            .contains(&template.as_str())
                || template.starts_with("/docs")
                || template.ends_with(".json");
            assert_eq!(protected, !public, "{what}: security");
            if protected || template == "/auth/login" {
                assert!(documents("401"), "{what}: documents no 401");
            }
            let json_body = operation["requestBody"]["content"]
                .get("application/json")
                .is_some();
            if json_body {
                assert!(
                    documents("400") && documents("413"),
                    "{what}: a JSON body can be 400 or 413"
                );
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let response = resolve(&doc, response);
                    assert_eq!(
                        response["content"]["application/json"]["schema"],
                        json!({"$ref": "#/components/schemas/Error"}),
                        "{what}: {status} should have the error body"
                    );
                }
            }
        }
    }
);

api_test!(
    the_documented_schemas_reject_what_the_server_never_sends,
    |app| async move {
        // The validation these tests rely on is strict: formats are checked,
        // response objects are closed, and types are exact.
        let doc = fetch_document(&app, "/openapi.json").await;
        let error = json!({"$ref": "#/components/schemas/Error"});
        let good = json!({"detail": "x", "code": 400, "timestamp": "2026-11-23T10:00:00.123Z"});
        assert_valid(&error, &doc, &good, "a good error body");
        let bad = [
            json!({"detail": "x", "code": 400, "timestamp": "yesterday"}),
            json!({"detail": "x", "code": "400", "timestamp": "2026-11-23T10:00:00.123Z"}),
            json!({"detail": "x", "timestamp": "2026-11-23T10:00:00.123Z"}),
            json!({"detail": "x", "code": 400, "timestamp": "2026-11-23T10:00:00.123Z", "extra": 1}),
        ];
        for body in bad {
            assert!(
                !violations(&error, &doc, &body).is_empty(),
                "accepted {body}"
            );
        }
        let device = json!({"$ref": "#/components/schemas/Device"});
        let mut entry = json!({"id": 1, "device_id": "d", "device_name": "", "device_type": "unknown",
        "registered_at": "2026-11-23T10:00:00.123Z", "last_seen": null, "login_status": false});
        assert_valid(&device, &doc, &entry, "a device never seen");
        entry
            .as_object_mut()
            .expect("an object")
            .remove("last_seen");
        assert!(
            !violations(&device, &doc, &entry).is_empty(),
            "last_seen is required"
        );
        let upload = json!({"$ref": "#/components/schemas/UploadedFile"});
        let file = json!({"file_id": "not-a-uuid", "filename": "f", "size": 1,
        "upload_time": "2026-11-23T10:00:00.123Z", "url": "/files/not-a-uuid"});
        assert!(
            !violations(&upload, &doc, &file).is_empty(),
            "file_id is a UUID"
        );
    }
);

api_test!(
    real_responses_of_every_operation_match_their_documented_schemas,
    config(|c| c.max_upload_bytes = 4096),
    |app| async move {
        let mut c = Contract::load(&app).await;
        let post = Method::POST;
        let get = Method::GET;
        let delete = Method::DELETE;

        // -- auth ------------------------------------------------------------
        let alice_password = "correct horse battery";
        let registration =
            json!({"username": "alice", "email": "alice@example.com", "password": alice_password});
        let alice = c
            .check("POST", "/auth/register", app.register(&registration).await)
            .await;
        assert_eq!(alice["username"], "alice");
        c.check("POST", "/auth/register", app.register(&registration).await)
            .await; // 409
        c.check(
            "POST",
            "/auth/register",
            app.register(&json!({"username": "x"})).await,
        )
        .await; // 400
        let login = json!({"username": "alice", "password": alice_password});
        let token = c
            .check("POST", "/auth/login", app.login(&login).await)
            .await;
        let alice_token = str_field(&token, "access_token").to_string();
        let wrong = json!({"username": "alice", "password": "not the password"});
        c.check("POST", "/auth/login", app.login(&wrong).await)
            .await; // 401
        c.check("POST", "/auth/login", app.login(&json!({})).await)
            .await; // 400
        c.check("GET", "/auth/me", app.get("/auth/me", &alice_token).await)
            .await;
        c.check("GET", "/auth/me", app.get("/auth/me", "").await)
            .await; // 401

        let bob = app.create_user("bob").await;
        let carol = app.create_user("carol").await;

        let change = json!({"current_password": carol.password, "new_password": "a new password"});
        let fresh = c
            .check(
                "POST",
                "/auth/password",
                app.post_json("/auth/password", &carol.token, &change).await,
            )
            .await;
        let carol_token = str_field(&fresh, "access_token").to_string();
        let wrong_change = json!({"current_password": "nope nope", "new_password": "another one"});
        c.check(
            "POST",
            "/auth/password",
            app.post_json("/auth/password", &carol_token, &wrong_change)
                .await,
        )
        .await; // 403

        let dave = app.create_user("dave").await;
        let goodbye = json!({"password": dave.password});
        c.check(
            "DELETE",
            "/auth/account",
            send(
                &app,
                delete.clone(),
                "/auth/account",
                &dave.token,
                Some(&json!({"password": "wrong one"})),
            )
            .await,
        )
        .await; // 403
        c.check(
            "DELETE",
            "/auth/account",
            send(
                &app,
                delete.clone(),
                "/auth/account",
                &dave.token,
                Some(&goodbye),
            )
            .await,
        )
        .await; // 204

        let erin = app.create_user("erin").await;
        c.check(
            "POST",
            "/auth/logout",
            send(&app, post.clone(), "/auth/logout", &erin.token, None).await,
        )
        .await; // 204
        c.check(
            "POST",
            "/auth/logout",
            send(&app, post.clone(), "/auth/logout", &erin.token, None).await,
        )
        .await; // 401: revoked

        // -- private messages --------------------------------------------------
        let message = c
            .check(
                "POST",
                "/messages/private",
                app.send_private(
                    &alice_token,
                    &json!({"recipient": "bob", "content": "hi bob"}),
                )
                .await,
            )
            .await;
        let message_id = int_field(&message, "id");
        c.check(
            "POST",
            "/messages/private",
            app.send_private(
                &alice_token,
                &json!({"recipient": "nobody", "content": "hi"}),
            )
            .await,
        )
        .await; // 404
        c.check(
            "POST",
            "/messages/private",
            app.send_private(&alice_token, &json!({"recipient": "bob", "content": ""}))
                .await,
        )
        .await; // 400
        let huge = json!({"recipient": "bob", "content": "x".repeat(70 * 1024)});
        c.check(
            "POST",
            "/messages/private",
            app.send_private(&alice_token, &huge).await,
        )
        .await; // 413
        c.check(
            "POST",
            "/messages/private",
            app.send_private("", &json!({"recipient": "bob", "content": "hi"}))
                .await,
        )
        .await; // 401

        let history = c
            .check(
                "GET",
                "/messages/private/{username}",
                app.private_history(&bob.token, "alice", "").await,
            )
            .await;
        assert_eq!(array(&history, "history").len(), 1);
        c.check(
            "GET",
            "/messages/private/{username}",
            app.private_history(&bob.token, "alice", "limit=0").await,
        )
        .await; // 400
        c.check(
            "GET",
            "/messages/private/{username}",
            app.private_history(&bob.token, "nobody", "").await,
        )
        .await; // 404

        let read = format!("/messages/{message_id}/read");
        c.check(
            "POST",
            "/messages/{message_id}/read",
            app.mark_read(&alice_token, &message_id.to_string()).await,
        )
        .await; // 403: the sender
        let receipt = c
            .check(
                "POST",
                "/messages/{message_id}/read",
                send(&app, post.clone(), &read, &bob.token, None).await,
            )
            .await;
        assert_eq!(receipt, json!({"id": message_id, "status": "read"}));
        c.check(
            "POST",
            "/messages/{message_id}/read",
            app.mark_read(&bob.token, "abc").await,
        )
        .await; // 400
        c.check(
            "POST",
            "/messages/{message_id}/read",
            app.mark_read(&bob.token, "999999").await,
        )
        .await; // 404
                // A read message shows as read.
        let history = c
            .check(
                "GET",
                "/messages/private/{username}",
                app.private_history(&alice_token, "bob", "after=0&limit=10")
                    .await,
            )
            .await;
        assert_eq!(history[0]["status"], "read");

        // -- edits, reactions and deletions -------------------------------------
        let patch = Method::PATCH;
        let put = Method::PUT;
        let edit_path = format!("/messages/{message_id}");
        let edited = c
            .check(
                "PATCH",
                "/messages/{message_id}",
                send(
                    &app,
                    patch.clone(),
                    &edit_path,
                    &alice_token,
                    Some(&json!({"content": "hi bob, edited"})),
                )
                .await,
            )
            .await;
        assert_eq!(edited["content"], "hi bob, edited");
        assert_recent(&edited["edited_at"], "edited_at");
        c.check(
            "PATCH",
            "/messages/{message_id}",
            send(
                &app,
                patch.clone(),
                &edit_path,
                &bob.token,
                Some(&json!({"content": "not mine"})),
            )
            .await,
        )
        .await; // 403
        c.check(
            "PATCH",
            "/messages/{message_id}",
            send(
                &app,
                patch,
                "/messages/abc",
                &bob.token,
                Some(&json!({"content": "x"})),
            )
            .await,
        )
        .await; // 400
        let reaction_path = format!("/messages/{message_id}/reaction");
        let reacted = c
            .check(
                "PUT",
                "/messages/{message_id}/reaction",
                send(
                    &app,
                    put.clone(),
                    &reaction_path,
                    &bob.token,
                    Some(&json!({"emoji": "👍"})),
                )
                .await,
            )
            .await;
        assert_eq!(
            reacted["reactions"],
            json!([{"emoji": "👍", "count": 1, "users": ["bob"]}])
        );
        c.check(
            "PUT",
            "/messages/{message_id}/reaction",
            send(
                &app,
                put,
                &reaction_path,
                &bob.token,
                Some(&json!({"emoji": "x".repeat(17)})),
            )
            .await,
        )
        .await; // 400
        let unreacted = c
            .check(
                "DELETE",
                "/messages/{message_id}/reaction",
                send(&app, delete.clone(), &reaction_path, &bob.token, None).await,
            )
            .await;
        assert!(unreacted.get("reactions").is_none(), "{unreacted}");
        c.check(
            "DELETE",
            "/messages/{message_id}/reaction",
            send(
                &app,
                delete.clone(),
                "/messages/999999/reaction",
                &bob.token,
                None,
            )
            .await,
        )
        .await; // 404
        c.check(
            "DELETE",
            "/messages/{message_id}",
            send(&app, delete.clone(), &edit_path, &carol_token, None).await,
        )
        .await; // 404: not carol's conversation
        let doomed = app.send_text(&bob, "alice", "delete me").await;
        let doomed_path = format!("/messages/{}", int_field(&doomed, "id"));
        let tombstone = c
            .check(
                "DELETE",
                "/messages/{message_id}",
                send(&app, delete.clone(), &doomed_path, &bob.token, None).await,
            )
            .await;
        assert_eq!(
            (&tombstone["deleted"], &tombstone["content"]),
            (&json!(true), &json!(""))
        );

        // -- groups ------------------------------------------------------------
        let group = c
            .check(
                "POST",
                "/groups",
                app.create_group(&alice_token, &json!({"name": "team", "description": "us"}))
                    .await,
            )
            .await;
        let group_id = int_field(&group, "id");
        let g = group_id.to_string();
        c.check(
            "POST",
            "/groups",
            app.create_group(&alice_token, &json!({"name": " "})).await,
        )
        .await; // 400
        c.check("GET", "/groups", app.list_groups(&alice_token).await)
            .await;
        c.check("GET", "/groups", app.list_groups("").await).await; // 401

        let member = c
            .check(
                "POST",
                "/groups/{group_id}/members",
                app.add_member(&alice_token, &g, "bob").await,
            )
            .await;
        assert_eq!(member["role"], "member");
        c.check(
            "POST",
            "/groups/{group_id}/members",
            app.add_member(&alice_token, &g, "bob").await,
        )
        .await; // 409
        c.check(
            "POST",
            "/groups/{group_id}/members",
            app.add_member(&alice_token, &g, "nobody").await,
        )
        .await; // 404
        c.check(
            "POST",
            "/groups/{group_id}/members",
            app.add_member(&carol_token, &g, "carol").await,
        )
        .await; // 403
        c.check(
            "POST",
            "/groups/{group_id}/members",
            app.add_member(&alice_token, &g, "carol").await,
        )
        .await;

        c.check(
            "GET",
            "/groups/{group_id}/members",
            app.group_members(&bob.token, &g).await,
        )
        .await;
        c.check(
            "GET",
            "/groups/{group_id}/members",
            app.group_members(&bob.token, "x").await,
        )
        .await; // 400

        c.check(
            "PATCH",
            "/groups/{group_id}/members/{username}",
            app.change_role(&alice_token, &g, "bob", "admin").await,
        )
        .await;
        c.check(
            "PATCH",
            "/groups/{group_id}/members/{username}",
            app.change_role(&alice_token, &g, "bob", "emperor").await,
        )
        .await; // 400
        c.check(
            "PATCH",
            "/groups/{group_id}/members/{username}",
            app.change_role(&bob.token, &g, "carol", "admin").await,
        )
        .await; // 403

        c.check(
            "POST",
            "/groups/{group_id}/messages",
            app.post_group_message(&bob.token, &g, &json!({"content": "hello team"}))
                .await,
        )
        .await;
        c.check(
            "POST",
            "/groups/{group_id}/messages",
            app.post_group_message(&bob.token, "999999", &json!({"content": "hello?"}))
                .await,
        )
        .await; // 404
        let messages = c
            .check(
                "GET",
                "/groups/{group_id}/messages",
                app.group_messages(&carol_token, &g, "").await,
            )
            .await;
        assert_eq!(array(&messages, "group history").len(), 1);
        c.check(
            "GET",
            "/groups/{group_id}/messages",
            app.group_messages(&carol_token, &g, "before=-1").await,
        )
        .await; // 400
        c.check(
            "GET",
            "/groups/{group_id}/messages",
            app.group_messages(&erin.token, &g, "").await,
        )
        .await; // 401
                // The group's read cursor moves; GET /groups shows unread counts.
        let group_message_id = int_field(&messages[0], "id");
        c.check(
            "POST",
            "/messages/{message_id}/read",
            app.mark_read(&carol_token, &group_message_id.to_string())
                .await,
        )
        .await;
        let mine = c
            .check("GET", "/groups", app.list_groups(&carol_token).await)
            .await;
        assert_eq!(mine[0]["unread"], 0);
        let group_reaction = format!("/messages/{group_message_id}/reaction");
        let reacted = c
            .check(
                "PUT",
                "/messages/{message_id}/reaction",
                send(
                    &app,
                    Method::PUT,
                    &group_reaction,
                    &carol_token,
                    Some(&json!({"emoji": "🎉"})),
                )
                .await,
            )
            .await;
        assert_eq!(reacted["group_id"], group_id);

        // -- the conversation list: a private conversation, a group with
        // messages and one without, over two pages.
        app.create_group_id(&bob, "quiet").await;
        let list = c
            .check(
                "GET",
                "/conversations",
                app.list_conversations(&bob.token, "").await,
            )
            .await;
        let kinds: Vec<&str> = array(&list["conversations"], "conversations")
            .iter()
            .map(|entry| str_field(entry, "kind"))
            .collect();
        assert_eq!(kinds, ["group", "group", "private"]);
        let first = c
            .check(
                "GET",
                "/conversations",
                app.list_conversations(&bob.token, "limit=2").await,
            )
            .await;
        let next = format!("before={}", str_field(&first, "next_before"));
        let rest = c
            .check(
                "GET",
                "/conversations",
                app.list_conversations(&bob.token, &next).await,
            )
            .await;
        assert_eq!(rest["more"], false);
        c.check(
            "GET",
            "/conversations",
            app.list_conversations(&bob.token, "before=nope").await,
        )
        .await; // 400
        c.check(
            "GET",
            "/conversations",
            app.list_conversations("", "").await,
        )
        .await; // 401

        c.check(
            "DELETE",
            "/groups/{group_id}/members/{username}",
            app.remove_member(&alice_token, &g, "alice").await,
        )
        .await; // 409: the owner cannot leave while others remain
        c.check(
            "DELETE",
            "/groups/{group_id}/members/{username}",
            app.remove_member(&alice_token, &g, "carol").await,
        )
        .await; // 204
        c.check(
            "DELETE",
            "/groups/{group_id}/members/{username}",
            app.remove_member(&carol_token, &g, "bob").await,
        )
        .await; // 403: no longer a member

        // -- search ----------------------------------------------------------------
        // Results of both kinds, each valid against its own schema.
        let found = c
            .check(
                "GET",
                "/search",
                app.search(&bob.token, &[("q", "hi bob")]).await,
            )
            .await;
        assert_eq!(found["results"][0]["id"], message_id);
        let found = c
            .check(
                "GET",
                "/search",
                app.search(&carol_token, &[("q", "team"), ("group_id", &g)])
                    .await,
            )
            .await;
        assert_eq!(
            found["results"][0]["content"], "hello team",
            "carol, removed, still finds what she saw"
        );
        c.check(
            "GET",
            "/search",
            app.search(&bob.token, &[("q", " ")]).await,
        )
        .await; // 400
        c.check(
            "GET",
            "/search",
            app.search(&bob.token, &[("q", "hi"), ("with", "nobody")])
                .await,
        )
        .await; // 404
        let outsider = app.create_user("outsider").await;
        c.check(
            "GET",
            "/search",
            app.search(&outsider.token, &[("q", "team"), ("group_id", &g)])
                .await,
        )
        .await; // 403
        c.check(
            "GET",
            "/search",
            app.search(&erin.token, &[("q", "hi")]).await,
        )
        .await; // 401

        // -- devices -------------------------------------------------------------
        let device =
            json!({"device_id": "laptop-1", "device_name": "Laptop", "device_type": "desktop"});
        c.check(
            "POST",
            "/devices",
            app.register_device(&alice_token, &device).await,
        )
        .await;
        c.check(
            "POST",
            "/devices",
            app.register_device(&bob.token, &device).await,
        )
        .await; // 409
        c.check(
            "POST",
            "/devices",
            app.register_device(&bob.token, &json!({"device_id": ""}))
                .await,
        )
        .await; // 400
        let devices = c
            .check("GET", "/devices", app.list_devices(&alice_token).await)
            .await;
        assert_eq!(devices[0]["last_seen"], Value::Null);
        // With a socket bound to it, the device is online and seen.
        let ws = app
            .ws_connect_query("device_id=laptop-1", Some(&alice_token))
            .await;
        app.poll_device(&alice_token, "laptop-1", "online and seen", |d| {
            d["login_status"] == true && d["last_seen"].is_string()
        })
        .await;
        c.check("GET", "/devices", app.list_devices(&alice_token).await)
            .await;
        ws_close(ws).await;
        c.check("GET", "/devices", app.list_devices("").await).await; // 401
        c.check(
            "DELETE",
            "/devices/{device_id}",
            app.delete_device(&alice_token, "laptop-1").await,
        )
        .await; // 204
        c.check(
            "DELETE",
            "/devices/{device_id}",
            app.delete_device(&alice_token, "laptop-1").await,
        )
        .await; // 404

        // -- files -----------------------------------------------------------------
        let uploaded = c
            .check(
                "POST",
                "/files/upload",
                app.upload_file(&alice_token, "notes.txt", b"some bytes".to_vec())
                    .await,
            )
            .await;
        let file_id = str_field(&uploaded, "file_id").to_string();
        c.check(
            "POST",
            "/files/upload",
            app.upload_file(&alice_token, "big.bin", vec![0; 8192])
                .await,
        )
        .await; // 413
        let not_a_file = Form::new().part("other", Part::text("x"));
        c.check(
            "POST",
            "/files/upload",
            app.upload_form(&alice_token, not_a_file).await,
        )
        .await; // 400
        c.check(
            "GET",
            "/files/{file_id}",
            app.download_file(&alice_token, &file_id).await,
        )
        .await;
        c.check(
            "GET",
            "/files/{file_id}",
            app.download_file(&bob.token, &file_id).await,
        )
        .await; // 404: not shared with bob
        c.check(
            "GET",
            "/files/{file_id}",
            app.download_file("", &file_id).await,
        )
        .await; // 401

        // -- the socket's handshake -----------------------------------------------------
        let ws = app.ws_try_connect("", Some(&alice_token)).await;
        assert!(ws.is_ok(), "the handshake is accepted");
        c.record("GET", "/ws/chat", 101);
        assert!(c.documented("GET", "/ws/chat", 101)["content"].is_null());
        ws_close(ws.expect("a socket")).await;
        c.check("GET", "/ws/chat", app.ws_refusal("", None).await)
            .await; // 401
        c.check(
            "GET",
            "/ws/chat",
            app.ws_refusal("device_id=unknown", Some(&format!("Bearer {alice_token}")))
                .await,
        )
        .await; // 404
        c.check("GET", "/ws/chat", app.get("/ws/chat", &alice_token).await)
            .await; // 400: not an upgrade

        // -- the web client and the descriptions ------------------------------------
        for path in [
            "/",
            "/app.js",
            "/style.css",
            "/openapi.json",
            "/asyncapi.json",
            "/docs",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            c.check("GET", path, send(&app, get.clone(), path, "", None).await)
                .await;
        }
        c.check("GET", "/docs/{file}", app.get("/docs/", "").await)
            .await;
        c.check(
            "GET",
            "/docs/{file}",
            app.get("/docs/swagger-ui.css", "").await,
        )
        .await;
        c.check(
            "GET",
            "/docs/{file}",
            app.get("/docs/no-such-file", "").await,
        )
        .await; // 404

        c.assert_every_operation_checked();
    }
);

api_test!(
    rate_limited_responses_match_their_documented_schema,
    config(|c| {
        c.rate_limits = Switch::On;
        c.auth_rate = 3.0;
        c.message_rate = 0.01;
        c.message_burst = 1.0;
    }),
    |app| async move {
        let mut c = Contract::load(&app).await;
        // Registration and login share one allowance per address.
        let alice = app.create_user("alice").await;
        let bob =
            json!({"username": "bob", "email": "bob@example.com", "password": "battery staple"});
        c.check("POST", "/auth/register", app.register(&bob).await)
            .await;
        let carol = json!({"username": "carol", "email": "carol@example.com", "password": "battery staple"});
        let limited = c
            .check("POST", "/auth/register", app.register(&carol).await)
            .await;
        assert_eq!(limited["code"], 429);
        let login = json!({"username": "alice", "password": alice.password});
        c.check("POST", "/auth/login", app.login(&login).await)
            .await;
        assert_eq!(
            c.seen[&("POST".to_string(), "/auth/login".to_string())],
            BTreeSet::from([429])
        );

        // Message sends share one allowance per user.
        let hi = json!({"recipient": "bob", "content": "hi"});
        c.check(
            "POST",
            "/messages/private",
            app.send_private(&alice.token, &hi).await,
        )
        .await;
        c.check(
            "POST",
            "/messages/private",
            app.send_private(&alice.token, &hi).await,
        )
        .await;
        let group = app.create_group_id(&alice, "team").await.to_string();
        c.check(
            "POST",
            "/groups/{group_id}/messages",
            app.post_group_message(&alice.token, &group, &json!({"content": "hi"}))
                .await,
        )
        .await;
        for operation in ["/messages/private", "/groups/{group_id}/messages"] {
            assert!(
                c.seen[&("POST".to_string(), operation.to_string())].contains(&429),
                "POST {operation} should have been rate limited"
            );
        }
    }
);
