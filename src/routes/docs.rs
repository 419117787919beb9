//! The API's own descriptions: `GET /openapi.json` (OpenAPI 3.1, generated
//! from the handlers by `crate::openapi`, which start-up hands to the app as
//! an [`OpenApiDocument`]), `GET /asyncapi.json` (AsyncAPI 3.0 for
//! `/ws/chat`, see [`crate::asyncapi`]) and Swagger UI at `/docs/`, served
//! from files compiled into the binary.

use std::sync::{Arc, LazyLock};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use parley_actors::ChatError;
use utoipa_swagger_ui::Config;

use crate::error::ApiResult;
use crate::{asyncapi, schema};

/// The OpenAPI document as JSON. Built from every handler's description,
/// this one's included, so it is made at start-up and handed to the app.
pub struct OpenApiDocument(pub &'static str);

/// The OpenAPI 3.1 description of every route.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "api descriptions",
    responses((status = 200, description = "An OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json(document: web::Data<OpenApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(document.0)
}

/// The AsyncAPI 3.0 description of the `/ws/chat` frames.
#[utoipa::path(
    get,
    path = "/asyncapi.json",
    tag = "api descriptions",
    responses((status = 200, description = "An AsyncAPI 3.0 document", body = Object))
)]
pub async fn asyncapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(mime::APPLICATION_JSON)
        .body(asyncapi::JSON)
}

/// Swagger UI lives at `/docs/` (its assets are relative to that).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "api descriptions",
    responses((status = 308, description = "Redirects to `/docs/`",
        headers(("Location" = String, description = "`/docs/`"))))
)]
pub async fn swagger_ui_root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// Swagger UI for `/openapi.json`: `/docs/` is the page, the rest its assets.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "api descriptions",
    params(("file" = String, Path, description = "An asset; empty for the page")),
    responses(
        (status = 200, description = "The page or one of its assets", content_type = "*/*", body = schema::Binary),
        (status = 404, response = schema::NotFound),
        (status = 500, response = schema::InternalError),
    )
)]
pub async fn swagger_ui(file: web::Path<String>) -> ApiResult<HttpResponse> {
    static CONFIG: LazyLock<Arc<Config<'static>>> =
        LazyLock::new(|| Arc::new(Config::new(["/openapi.json"])));
    let asset = utoipa_swagger_ui::serve(&file, CONFIG.clone())
        .map_err(|err| ChatError::internal_msg(format_args!("swagger ui: {err}")))?
        .ok_or_else(|| ChatError::not_found("file: no such Swagger UI file"))?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.bytes.into_owned()))
}
