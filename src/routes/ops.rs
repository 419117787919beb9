//! Operations endpoints: `GET /healthz` (the process answers), `GET /readyz`
//! (the database and the persistence actor answer) and `GET /metrics`
//! (Prometheus text). Cheap and unauthenticated, for orchestrators and
//! scrapers.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use parley_actors::persistence::Ping;
use parley_actors::ChatError;
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::schema;
use crate::state::AppState;

/// How long readiness waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the health and readiness checks answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok` (health) or `ready` (readiness).
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The server answers", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The database answers a query and the persistence actor its mailbox.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let not_ready = |what: &str| ChatError::Unavailable(format!("{what} is not answering").into());
    tokio::time::timeout(READY_TIMEOUT, state.chat.store().ping())
        .await
        .map_err(|_| not_ready("the database"))??;
    tokio::time::timeout(READY_TIMEOUT, state.chat.persistence().send(Ping))
        .await
        .map_err(|_| not_ready("the persistence actor"))?
        .map_err(|_| not_ready("the persistence actor"))?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

/// Every metric in the Prometheus text format (README lists them).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4",
         content_type = "text/plain", body = String),
        (status = 500, response = schema::InternalError),
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&state.chat.metrics().registry.gather(), &mut text)
        .map_err(ChatError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
