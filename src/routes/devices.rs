//! `POST /devices`, `GET /devices` and `DELETE /devices/{device_id}`, all
//! answered by the device registry actor.

use actix_web::{web, HttpResponse};
use parley_actors::devices::{AddDevice, ListDevices, RemoveDevice};
use parley_actors::model::Timestamp;
use parley_actors::persistence::RegisterDevice;
use parley_actors::{ask, validate};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::startup::AppState;

#[derive(Deserialize)]
pub struct NewDevice {
    device_id: String,
    #[serde(default)]
    device_name: String,
    device_type: Option<String>,
}

/// The registration response (no live fields).
#[derive(Serialize)]
struct RegisteredDevice<'a> {
    id: i64,
    device_id: &'a str,
    device_name: &'a str,
    device_type: &'a str,
    registered_at: Timestamp,
}

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
        &state.chat.devices,
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

#[tracing::instrument(skip_all, fields(owner = %user.username))]
pub async fn list(state: web::Data<AppState>, AuthUser(user): AuthUser) -> ApiResult<HttpResponse> {
    let devices = ask(&state.chat.devices, ListDevices { owner: user.id }).await?;
    Ok(HttpResponse::Ok().json(devices))
}

#[tracing::instrument(skip_all, fields(owner = %user.username))]
pub async fn remove(
    state: web::Data<AppState>,
    AuthUser(user): AuthUser,
    device_id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    ask(
        &state.chat.devices,
        RemoveDevice {
            owner: user,
            device_id: device_id.into_inner(),
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
