//! The built-in status page at `/`: plain HTML, CSS and JavaScript compiled into the binary.
//! It reads the API with relative URLs (`stats`, `stats_address`, `get_block_payouts`), so it works wherever the
//! API is served, with no build step and nothing fetched from elsewhere.

use actix_web::HttpResponse;

const INDEX: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/status.js");
const STYLE: &str = include_str!("static/status.css");

/// `GET /`.
pub async fn index() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(INDEX)
}

/// `GET /status.js`.
pub async fn script() -> HttpResponse {
    HttpResponse::Ok().content_type("application/javascript; charset=utf-8").body(SCRIPT)
}

/// `GET /status.css`.
pub async fn style() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").body(STYLE)
}
