//! The bundled web client: static HTML, CSS and JavaScript compiled into the
//! binary (no CDN, no build step), served at `/`, `/app.js` and `/style.css`.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::HttpResponse;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

/// The bundled web client's page.
#[utoipa::path(
    get,
    path = "/",
    tag = "web client",
    responses((status = 200, description = "The web client", content_type = "text/html", body = String))
)]
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The web client's script.
#[utoipa::path(
    get,
    path = "/app.js",
    tag = "web client",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String))
)]
pub async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The web client's style sheet.
#[utoipa::path(
    get,
    path = "/style.css",
    tag = "web client",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String))
)]
pub async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
