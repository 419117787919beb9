//! The OpenAPI 3.1 description of the REST API, served at `GET /openapi.json`
//! (and shown by Swagger UI at `/docs/`). It is generated from the
//! `#[utoipa::path]` annotations on the handlers in [`crate::routes`] and
//! the `ToSchema` request and response types beside them; this module adds
//! the schemas of the records the actors hand back (which live in the
//! `parley-actors` crate), the error body, the shared error responses and
//! the security schemes.
//!
//! Response schemas are strict (`additionalProperties: false`, every field
//! required) so that the integration tests and the contract fuzzing
//! (`tests/contract/run.sh`) catch any drift between these documents and
//! what the server sends.

use std::sync::LazyLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;
use crate::schema::{
    BadRequest, BusyOrUnavailable, Conflict, DeliveryStatus, ErrorBody, Forbidden, InternalError,
    NotFound, PayloadTooLarge, Reaction, Role, TooManyRequests, Unauthorized, Unavailable,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parley",
        description = "A real-time chat server: REST for accounts, messages, groups, devices \
            and files; one WebSocket per device (`/ws/chat`, described by `/asyncapi.json`).\n\n\
            Timestamps are RFC 3339 UTC with milliseconds. Every error, of any route, has the \
            body `{detail, code, timestamp}` (schema `Error`); a known path with a method it \
            does not serve is 405 with an `Allow` header, and an unknown path is 404.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        routes::auth::register,
        routes::auth::login,
        routes::auth::me,
        routes::auth::logout,
        routes::auth::change_password,
        routes::auth::delete_account,
        routes::messages::send_private,
        routes::messages::private_history,
        routes::messages::mark_read,
        routes::messages::edit,
        routes::messages::delete,
        routes::messages::react,
        routes::messages::unreact,
        routes::search::search,
        routes::conversations::list,
        routes::groups::mine,
        routes::groups::create,
        routes::groups::messages,
        routes::groups::post_message,
        routes::groups::members,
        routes::groups::add_member,
        routes::groups::remove_member,
        routes::groups::change_role,
        routes::devices::list,
        routes::devices::register,
        routes::devices::remove,
        routes::files::upload,
        routes::files::download,
        routes::ws::chat,
        routes::client::index,
        routes::client::app_js,
        routes::client::style_css,
        routes::docs::openapi_json,
        routes::docs::asyncapi_json,
        routes::docs::swagger_ui_root,
        routes::docs::swagger_ui,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
    ),
    components(
        schemas(ErrorBody, DeliveryStatus, Role, Reaction),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            TooManyRequests,
            InternalError,
            Unavailable,
            BusyOrUnavailable,
        ),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Accounts and access tokens"),
        (name = "messages", description = "Private messages; receipts, edits, deletions and reactions of any message"),
        (name = "conversations", description = "The caller's conversation list"),
        (name = "groups", description = "Groups, their members and their messages"),
        (name = "devices", description = "The caller's devices"),
        (name = "files", description = "Uploads and downloads"),
        (name = "websocket", description = "The chat socket; frames in /asyncapi.json"),
        (name = "web client", description = "The bundled browser client"),
        (name = "api descriptions", description = "OpenAPI, AsyncAPI and Swagger UI"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    &JSON
}

/// Adds the two ways to authenticate: the bearer header (every protected
/// route) and `?token=` (the WebSocket handshake, for browsers).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <access_token>` from `POST /auth/login`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The access token as `?token=` (WebSocket handshake only, for browsers)",
            ))),
        );
    }
}
