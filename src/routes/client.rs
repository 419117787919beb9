//! The bundled web client: static HTML, CSS and JavaScript compiled into the
//! binary (no CDN, no build step), served at `/`, `/app.js` and `/style.css`.

use actix_web::http::header::{CacheControl, CacheDirective, ContentType};
use actix_web::HttpResponse;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

fn asset(content_type: ContentType, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset(ContentType::html(), INDEX_HTML)
}

pub async fn app_js() -> HttpResponse {
    asset(
        ContentType(
            "text/javascript; charset=utf-8"
                .parse()
                .expect("a valid mime type"),
        ),
        APP_JS,
    )
}

pub async fn style_css() -> HttpResponse {
    asset(
        ContentType(
            "text/css; charset=utf-8"
                .parse()
                .expect("a valid mime type"),
        ),
        STYLE_CSS,
    )
}
