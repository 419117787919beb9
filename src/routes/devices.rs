//! `POST /devices`, `GET /devices` and `DELETE /devices/{device_id}`, all
//! answered by the device registry actor.

use actix_web::{web, HttpResponse};
use parley_actors::devices::{AddDevice, ListDevices, RemoveDevice};
use parley_actors::model::Timestamp;
use parley_actors::persistence::RegisterDevice;
use parley_actors::{ask, validate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::schema::{self, Device};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct NewDevice {
    /// The client's own id for the device: 1–128 characters without spaces
    /// or control characters, unique across users.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F]+$",
        example = "laptop-1"
    )]
    device_id: String,
    /// Up to 100 characters; defaults to empty.
    #[serde(default)]
    #[schema(max_length = 100, example = "My laptop")]
    device_name: String,
    /// Defaults to `unknown`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*$",
        example = "desktop"
    )]
    device_type: Option<String>,
}

/// The registration response (no live fields).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisteredDevice<'a> {
    id: i64,
    device_id: &'a str,
    device_name: &'a str,
    device_type: &'a str,
    #[schema(value_type = String, format = DateTime)]
    registered_at: Timestamp,
}

/// Registers a device of the caller's, or updates the name and type of one
/// already registered (same `id`). A `device_id` of another user's is 409.
#[utoipa::path(
    post,
    path = "/devices",
    operation_id = "register_device",
    tag = "devices",
    security(("bearer" = [])),
    request_body = NewDevice,
    responses(
        (status = 200, description = "The device", body = RegisteredDevice),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(owner = %user.username))]
pub async fn register(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    Json(body): Json<NewDevice>,
) -> ApiResult<HttpResponse> {
    let device_type = body.device_type.unwrap_or_else(|| "unknown".to_owned());
    validate::device_id(&body.device_id)?;
    validate::text("device_name", &body.device_name, validate::DEVICE_NAME_MAX)?;
    validate::label("device_type", &device_type)?;
    let device = ask(
        state.chat.devices(),
        AddDevice(RegisterDevice {
            owner: user,
            device_id: body.device_id,
            device_name: body.device_name,
            device_type,
        }),
    )
    .await?;
    Ok(HttpResponse::Ok().json(RegisteredDevice {
        id: device.id,
        device_id: &device.device_id,
        device_name: &device.device_name,
        device_type: &device.device_type,
        registered_at: device.registered_at,
    }))
}

/// The caller's devices; `login_status` is true while a socket is bound to
/// the device.
#[utoipa::path(
    get,
    path = "/devices",
    operation_id = "list_devices",
    tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's devices", body = [Device]),
        (status = 401, response = schema::Unauthorized),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(owner = %user.username))]
pub async fn list(state: web::Data<AppState>, AuthUser(user): AuthUser) -> ApiResult<HttpResponse> {
    let devices = ask(state.chat.devices(), ListDevices { owner: user.id }).await?;
    Ok(HttpResponse::Ok().json(devices))
}

/// Deletes one of the caller's devices and closes the sockets bound to it.
#[utoipa::path(
    delete,
    path = "/devices/{device_id}",
    operation_id = "remove_device",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = String, Path, description = "The device's `device_id`")),
    responses(
        (status = 204, description = "The device is gone"),
        (status = 401, response = schema::Unauthorized),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
        (status = 503, response = schema::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(owner = %user.username))]
pub async fn remove(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    device_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    ask(
        state.chat.devices(),
        RemoveDevice {
            owner: user,
            device_id: device_id.into_inner(),
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
