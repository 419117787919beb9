//! The REST routes and the WebSocket endpoint (DESIGN.md sections 2 and 3),
//! the bundled web client, and the API's own descriptions (`/openapi.json`,
//! `/asyncapi.json`, Swagger UI at `/docs/`). Handlers validate input, ask
//! the actors (or read the store), and map the answer to the response; none
//! of them writes to the database. Each handler carries its OpenAPI
//! description (`#[utoipa::path]`), collected by `crate::openapi`.

pub mod auth;
pub mod client;
pub mod conversations;
pub mod devices;
pub mod docs;
pub mod files;
pub mod groups;
pub mod messages;
pub mod ops;
pub mod search;
pub mod ws;

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use parley_actors::ChatError;

use crate::error::ApiError;
use crate::extract::parse_json;

/// Declares every route once: [`configure`] registers them and [`ROUTES`]
/// lists them (the OpenAPI tests compare that list with `/openapi.json`).
/// Each path is one resource whose `Allow` header (for 405) names exactly
/// the methods listed for it, in the order given.
macro_rules! routes {
    ($($path:literal => [$method:ident => $handler:expr $(, $more:ident => $more_handler:expr)* $(,)?]),* $(,)?) => {
        /// Every route [`configure`] registers, as `(method, path template)`
        /// in actix syntax (a `{name:regex}` segment is the parameter `name`).
        pub const ROUTES: &[(&str, &str)] = &[
            $(
                (stringify!($method), $path),
                $((stringify!($more), $path),)*
            )*
        ];

        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    resource($path, concat!(stringify!($method) $(, ", ", stringify!($more))*))
                        .route(web::method(Method::$method).to($handler))
                        $(.route(web::method(Method::$more).to($more_handler)))*,
                );
            )*
        }
    };
}

routes! {
    "/auth/register" => [POST => auth::register],
    "/auth/login" => [POST => auth::login],
    "/auth/me" => [GET => auth::me],
    "/auth/logout" => [POST => auth::logout],
    "/auth/password" => [POST => auth::change_password],
    "/auth/account" => [DELETE => auth::delete_account],
    "/messages/private" => [POST => messages::send_private],
    "/messages/private/{username}" => [GET => messages::private_history],
    "/messages/{message_id}" => [PATCH => messages::edit, DELETE => messages::delete],
    "/messages/{message_id}/read" => [POST => messages::mark_read],
    "/messages/{message_id}/reaction" => [PUT => messages::react, DELETE => messages::unreact],
    "/search" => [GET => search::search],
    "/conversations" => [GET => conversations::list],
    "/groups" => [GET => groups::mine, POST => groups::create],
    "/groups/{group_id}/messages" => [GET => groups::messages, POST => groups::post_message],
    "/groups/{group_id}/members" => [GET => groups::members, POST => groups::add_member],
    "/groups/{group_id}/members/{username}" => [
        DELETE => groups::remove_member,
        PATCH => groups::change_role,
    ],
    "/devices" => [GET => devices::list, POST => devices::register],
    "/devices/{device_id}" => [DELETE => devices::remove],
    "/files/upload" => [POST => files::upload],
    "/files/{file_id}" => [GET => files::download],
    "/ws/chat" => [GET => ws::chat],
    "/" => [GET => client::index],
    "/app.js" => [GET => client::app_js],
    "/style.css" => [GET => client::style_css],
    "/openapi.json" => [GET => docs::openapi_json],
    "/asyncapi.json" => [GET => docs::asyncapi_json],
    "/docs" => [GET => docs::swagger_ui_root],
    "/docs/{file:.*}" => [GET => docs::swagger_ui],
    "/healthz" => [GET => ops::healthz],
    "/readyz" => [GET => ops::readyz],
    "/metrics" => [GET => ops::metrics],
}

/// A resource that answers methods it has no route for with 405, the error
/// body and an `Allow` header listing `allow`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError(ChatError::MethodNotAllowed(allow)))
    }))
}

/// Runs `bytes` through [`parse_json`] as every JSON request body the API
/// accepts. For the fuzzer (`tests/fuzz`), which checks that no input makes
/// the parser panic; the results are dropped.
#[doc(hidden)]
pub fn parse_every_request_body(bytes: &[u8]) {
    let _ = parse_json::<auth::Registration>(bytes);
    let _ = parse_json::<auth::Login>(bytes);
    let _ = parse_json::<auth::PasswordChange>(bytes);
    let _ = parse_json::<auth::AccountDeletion>(bytes);
    let _ = parse_json::<messages::NewPrivateMessage>(bytes);
    let _ = parse_json::<messages::MessageEdit>(bytes);
    let _ = parse_json::<messages::NewReaction>(bytes);
    let _ = parse_json::<groups::NewGroup>(bytes);
    let _ = parse_json::<groups::NewGroupMessage>(bytes);
    let _ = parse_json::<groups::NewMember>(bytes);
    let _ = parse_json::<groups::NewRole>(bytes);
    let _ = parse_json::<devices::NewDevice>(bytes);
}

/// Any path no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ChatError::not_found("no such route").into())
}
