//! The REST routes and the WebSocket endpoint (DESIGN.md sections 2 and 3).
//! Handlers validate input, ask the actors (or read the store), and map the
//! answer to the response; none of them writes to the database.

mod auth;
mod client;
mod devices;
mod files;
mod groups;
pub(crate) mod messages;
mod ws;

use actix_web::{web, HttpResponse};
use parley_actors::ChatError;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/auth/register", "POST").route(web::post().to(auth::register)))
        .service(resource("/auth/login", "POST").route(web::post().to(auth::login)))
        .service(resource("/auth/logout", "POST").route(web::post().to(auth::logout)))
        .service(resource("/auth/password", "POST").route(web::post().to(auth::change_password)))
        .service(resource("/auth/account", "DELETE").route(web::delete().to(auth::delete_account)))
        .service(
            resource("/messages/private", "POST").route(web::post().to(messages::send_private)),
        )
        .service(
            resource("/messages/private/{username}", "GET")
                .route(web::get().to(messages::private_history)),
        )
        .service(
            resource("/messages/{message_id}/read", "POST")
                .route(web::post().to(messages::mark_read)),
        )
        .service(
            resource("/groups", "GET, POST")
                .route(web::get().to(groups::mine))
                .route(web::post().to(groups::create)),
        )
        .service(
            resource("/groups/{group_id}/messages", "GET, POST")
                .route(web::get().to(groups::messages))
                .route(web::post().to(groups::post_message)),
        )
        .service(
            resource("/groups/{group_id}/members", "GET, POST")
                .route(web::get().to(groups::members))
                .route(web::post().to(groups::add_member)),
        )
        .service(
            resource("/groups/{group_id}/members/{username}", "DELETE, PATCH")
                .route(web::delete().to(groups::remove_member))
                .route(web::patch().to(groups::change_role)),
        )
        .service(
            resource("/devices", "GET, POST")
                .route(web::get().to(devices::list))
                .route(web::post().to(devices::register)),
        )
        .service(
            resource("/devices/{device_id}", "DELETE").route(web::delete().to(devices::remove)),
        )
        .service(resource("/files/upload", "POST").route(web::post().to(files::upload)))
        .service(resource("/files/{file_id}", "GET").route(web::get().to(files::download)))
        .service(resource("/ws/chat", "GET").route(web::get().to(ws::chat)))
        .service(resource("/", "GET").route(web::get().to(client::index)))
        .service(resource("/app.js", "GET").route(web::get().to(client::app_js)))
        .service(resource("/style.css", "GET").route(web::get().to(client::style_css)));
}

/// A resource that answers methods it has no route for with 405, the error
/// body and an `Allow` header listing `allow`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError(ChatError::MethodNotAllowed(allow)))
    }))
}

/// Any path no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ChatError::not_found("no such route").into())
}
