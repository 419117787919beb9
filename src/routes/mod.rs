//! The REST routes and the WebSocket endpoint (DESIGN.md sections 2 and 3).
//! Handlers validate input, ask the actors (or read the store), and map the
//! answer to the response; none of them writes to the database.

mod auth;
mod devices;
mod files;
mod groups;
mod messages;
mod ws;

use actix_web::{web, HttpResponse};
use parley_actors::ChatError;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/auth/register", "POST").route(web::post().to(auth::register)))
        .service(resource("/auth/login", "POST").route(web::post().to(auth::login)))
        .service(
            resource("/messages/private", "POST").route(web::post().to(messages::send_private)),
        )
        .service(
            resource("/messages/private/{username}", "GET")
                .route(web::get().to(messages::private_history)),
        )
        .service(resource("/groups", "POST").route(web::post().to(groups::create)))
        .service(
            resource("/groups/{group_id}/messages", "GET").route(web::get().to(groups::messages)),
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
        .service(resource("/ws/chat", "GET").route(web::get().to(ws::chat)));
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
