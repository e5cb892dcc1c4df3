//! The HTTP side: `/metrics` (Prometheus text format) and `/health`. The stats API of spec §10
//! and the status page are added here.

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Renders the Prometheus text format.
    pub metrics: PrometheusHandle,
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics)).route("/health", web::get().to(health));
}

async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}
