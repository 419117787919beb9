//! `GET /ws/chat`: authenticates the handshake (bearer header or `?token=`),
//! binds the socket to a device if `?device_id=` names one of the caller's,
//! and hands the connection to a session actor.

use actix_web::{web, HttpRequest, HttpResponse};
use parley_actors::devices::FindDevice;
use parley_actors::{ask, session};
use serde::Deserialize;

use crate::auth::authenticate;
use crate::error::ApiResult;
use crate::schema;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct SocketQuery {
    token: Option<String>,
    device_id: Option<String>,
}

/// Opens the chat WebSocket; its frames are described by `/asyncapi.json`.
/// Authenticated by `Authorization: Bearer <jwt>` or, for browsers, `?token=`.
#[utoipa::path(
    get,
    path = "/ws/chat",
    operation_id = "open_chat_socket",
    tag = "websocket",
    security(("bearer" = []), ("token" = [])),
    params(("device_id" = Option<String>, Query, description = "Binds the socket to one of the caller's registered devices")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (see /asyncapi.json)"),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn chat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<SocketQuery>,
) -> ApiResult<HttpResponse> {
    let token = authenticate(&req, query.token.as_deref()).await?;
    let user = token.user;
    let device = match &query.device_id {
        Some(device_id) => Some(
            ask(
                state.chat.devices(),
                FindDevice {
                    owner: user.id,
                    device_id: device_id.clone(),
                },
            )
            .await?,
        ),
        None => None,
    };
    Ok(session::serve(
        &req,
        payload,
        state.chat.clone(),
        user,
        device,
        token.generation,
    )?)
}
