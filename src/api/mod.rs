//! The HTTP side: the stats API of spec §10 (the old React frontend keeps working against it),
//! the admin routes, `/workers`, `/health`, the built-in status page at `/` and `/metrics`.
//!
//! - [`collector`]: the StatsCollector actor. Every `api.updateInterval` it reads the hashrate
//!   window, rounds, blocks and payments from Redis and the last block from the daemon, keeps
//!   the chart series and the monitoring status, and publishes a [`Snapshot`] with the `/stats`
//!   JSON already rendered. Requests read the snapshot; long polls wake on the next one.
//! - [`window`]: the hashrate window in memory, brought up to date from the newest part of the
//!   Redis zset each run (a full read only at start or when Redis changed under it).
//! - [`top`]: `/get_top10miners` from the collector's table of known miners, no Redis.
//! - [`shapes`]: pure parsing of the old Redis members and the JSON shapes.
//! - `routes`, `admin`, `page`, `block_payouts`: the handlers.
//!
//! Every route answers at `/<route>` and at `/api/<route>` (the operator guide's nginx site
//! forwards `/api/stats` unchanged). Every response carries `Access-Control-Allow-Origin: *`
//! and `Cache-Control: no-cache`; `OPTIONS` on any path is a 204 with the CORS headers; an
//! unknown path is a 404 `Invalid API call`.

pub mod collector;
pub mod shapes;
pub mod top;
pub mod window;

mod admin;
mod block_payouts;
mod page;
pub(crate) mod routes;

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use actix::Addr;
use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse};
use arc_swap::{ArcSwap, ArcSwapOption};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::jobs::JobTemplate;
use crate::store::Store;
use crate::stratum::capacity::SessionCapacity;
use crate::stratum::{PortSupervisors, StratumContext};

pub use collector::{Snapshot, StatsCollector};

/// Shared state of the HTTP handlers (cheap to clone).
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Shared>,
}

/// What the handlers and the collector share.
pub struct Shared {
    /// The running config: the start-up one, replaced by every accepted reload (SIGHUP) with
    /// what the reload applied (settings that need a restart keep their running values).
    pub running: Arc<ArcSwap<Config>>,
    /// The API's own Redis connection (driven on the API's arbiter, not the stratum threads).
    pub store: Store,
    /// Renders `/metrics` when it is served on the API port; `None` when `metrics.port` moves
    /// it to its own listener or metrics are disabled.
    pub metrics: Option<PrometheusHandle>,
    /// The latest figures, replaced by every collector run.
    pub snapshot: ArcSwap<Snapshot>,
    /// Bumped after every collector run; long polls wait on it.
    pub updates: tokio::sync::watch::Sender<u64>,
    /// The collector (health checks run there, next to its daemon and wallet clients).
    pub collector: OnceLock<Addr<StatsCollector>>,
    /// Stratum port supervisors of this process, for live connection counts (the list a
    /// reload adds ports to).
    pub supervisors: PortSupervisors,
    /// The template being mined, when this process runs stratum.
    pub current: Arc<ArcSwapOption<JobTemplate>>,
    /// Admin sessions (`sid` cookie).
    pub sessions: admin::Sessions,
    /// `/get_top10miners` answers of the current snapshot, by query.
    pub top_cache: Mutex<routes::TopCache>,
    /// Requests currently held by a long poll.
    pub longpolls: AtomicUsize,
    /// Port of the separate `metrics.port` listener (0: none). That listener answers only
    /// `/metrics`, and the API port then does not.
    pub metrics_listener: AtomicU16,
    /// This process's session capacity and its open connections, when it runs stratum.
    pub capacity: OnceLock<(SessionCapacity, Arc<StratumContext>)>,
}

/// Long polls held at once; beyond this they are answered at once.
pub const MAX_LONGPOLLS: usize = 10_000;

impl ApiState {
    /// State for the handlers; the collector is attached with [`ApiState::attach_collector`].
    pub fn new(
        running: Arc<ArcSwap<Config>>,
        store: Store,
        metrics: Option<PrometheusHandle>,
        supervisors: PortSupervisors,
        current: Arc<ArcSwapOption<JobTemplate>>,
    ) -> ApiState {
        let snapshot = Snapshot::empty(&running.load());
        ApiState {
            inner: Arc::new(Shared {
                running,
                store,
                metrics,
                snapshot: ArcSwap::from_pointee(snapshot),
                updates: tokio::sync::watch::channel(0).0,
                collector: OnceLock::new(),
                supervisors,
                current,
                sessions: admin::Sessions::default(),
                top_cache: Mutex::new(routes::TopCache::default()),
                longpolls: AtomicUsize::new(0),
                metrics_listener: AtomicU16::new(0),
                capacity: OnceLock::new(),
            }),
        }
    }

    /// Attaches the running collector.
    pub fn attach_collector(&self, collector: Addr<StatsCollector>) {
        let _ = self.inner.collector.set(collector);
    }

    /// Marks `port` as the separate metrics listener.
    pub fn set_metrics_listener(&self, port: u16) {
        self.inner.metrics_listener.store(port, Ordering::Release);
    }

    /// Reports `capacity` and `stratum`'s open connections on `/health`.
    pub fn set_session_capacity(&self, capacity: SessionCapacity, stratum: Arc<StratumContext>) {
        let _ = self.inner.capacity.set((capacity, stratum));
    }

    /// `/health`'s `sessions` object, when this process runs stratum.
    pub fn sessions_json(&self) -> Option<serde_json::Value> {
        self.inner.capacity.get().map(|(capacity, stratum)| capacity.json(stratum.limits.total() as u64))
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner
    }
}

impl Shared {
    /// The running config (see [`Shared::running`]).
    pub fn config(&self) -> Arc<Config> {
        self.running.load_full()
    }
}

impl std::ops::Deref for ApiState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// Registers the routes of the API port: every route at `/<route>` and `/api/<route>`, the
/// status page, `/metrics` (when served here) and the 404 fallback. Wrap the app with
/// [`cors_and_metrics`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page::index))
        .route("/index.html", web::get().to(page::index))
        .route("/status.js", web::get().to(page::script))
        .route("/status.css", web::get().to(page::style))
        .route("/metrics", web::get().to(metrics));
    cfg.service(web::scope("/api").configure(routes::register).default_service(web::to(not_found)));
    routes::register(cfg);
    cfg.default_service(web::to(not_found));
}

/// Routes of the separate `metrics.port` listener.
pub fn configure_metrics_only(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics)).default_service(web::to(not_found));
}

async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    match &state.metrics {
        Some(handle) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render()),
        None => not_found().await,
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().content_type("text/plain").body("Invalid API call")
}

/// The route name for metrics: the matched pattern without the `/api` prefix.
fn route_label(pattern: Option<String>) -> String {
    match pattern {
        Some(p) => p.strip_prefix("/api").filter(|r| !r.is_empty()).unwrap_or(&p).to_string(),
        None => "unmatched".to_string(),
    }
}

/// Middleware: answers `OPTIONS` with 204 and the CORS headers, adds
/// `Access-Control-Allow-Origin: *` and `Cache-Control: no-cache` to every response, and
/// records request counts and latency per route.
pub fn cors_and_metrics<S>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> futures_util::future::LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<actix_web::dev::ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
    S::Future: 'static,
{
    if req.method() == Method::OPTIONS {
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, PUT, DELETE, OPTIONS"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type, accept"))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "10"))
            .finish();
        let res = req.into_response(response);
        return Box::pin(async move { Ok(res) });
    }
    let listener = req.app_data::<web::Data<ApiState>>().map_or(0, |s| s.metrics_listener.load(Ordering::Acquire));
    if listener != 0 && (req.app_config().local_addr().port() == listener) != (req.path() == "/metrics") {
        let res = req.into_response(
            HttpResponse::NotFound()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .content_type("text/plain")
                .body("Invalid API call"),
        );
        return Box::pin(async move { Ok(res) });
    }
    let started = Instant::now();
    let fut = srv.call(req);
    Box::pin(async move {
        let mut res = fut.await?;
        let headers = res.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, header::HeaderValue::from_static("*"));
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
        }
        let route = route_label(res.request().match_pattern());
        crate::metrics::api_request(&route, res.status().as_u16(), started.elapsed());
        Ok(res)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_drop_the_api_prefix() {
        assert_eq!(super::route_label(Some("/api/stats".into())), "/stats");
        assert_eq!(super::route_label(Some("/stats".into())), "/stats");
        assert_eq!(super::route_label(Some("/api".into())), "/api");
        assert_eq!(super::route_label(None), "unmatched");
    }
}
