//! Admin routes (spec §10) and their authorisation.
//!
//! A request passes when it carries `?password=` equal to `api.password` (compared in
//! constant time; an empty configured password never matches), when it carries a valid `sid`
//! session cookie (random, 24 h, set on a password login). The old pool also let any loopback
//! request in without a password; a reverse proxy on the same host (`location / { proxy_pass
//! http://127.0.0.1:8117; }`, or the old frontend's `location /api/`) then publishes every
//! miner's balance, so that rule applies only when the operator sets
//! `api.passwordlessLoopbackAdmin`, and even then never to a request that came through a proxy
//! (an `X-Forwarded-For`, `X-Real-IP` or `Forwarded` header, or a path under `/api/`).
//! `X-Forwarded-For` is used as the client address only when `api.trustProxyIP` is set. The
//! password is never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use sha3::{Digest, Sha3_256};
use subtle::ConstantTimeEq;

use super::routes::{json_text, json_value, Params};
use super::shapes;
use super::ApiState;

/// How long an admin session cookie is valid.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 1024;

/// Admin sessions by `sid`.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// A new random session id.
    pub fn create(&self) -> String {
        let id = hex::encode(rand::random::<[u8; 24]>());
        let mut map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, at| at.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), Instant::now());
        id
    }

    /// True for a live session.
    pub fn valid(&self, id: &str) -> bool {
        let map = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).is_some_and(|at| at.elapsed() < SESSION_TTL)
    }
}

/// Registers the admin routes.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route("/miners_hashrate", web::route().to(miners_hashrate))
        .route("/workers_hashrate", web::route().to(workers_hashrate))
        .route("/admin_stats", web::route().to(admin_stats))
        .route("/admin_users", web::route().to(admin_users))
        .route("/admin_monitoring", web::route().to(admin_monitoring))
        .route("/admin_log", web::route().to(admin_log))
        .route("/admin_ports", web::route().to(admin_ports))
        .route("/admin_payments", web::route().to(admin_payments));
}

/// The client address: the peer, or the last `X-Forwarded-For` entry (the one the trusted
/// proxy itself saw) when `trust_proxy` is set.
pub fn client_ip(req: &HttpRequest, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        if let Some(ip) = forwarded.and_then(|v| v.rsplit(',').next()).and_then(|v| v.trim().parse().ok()) {
            return Some(ip);
        }
    }
    req.peer_addr().map(|a| a.ip())
}

fn proxied(req: &HttpRequest) -> bool {
    let h = req.headers();
    h.contains_key("x-forwarded-for")
        || h.contains_key("x-real-ip")
        || h.contains_key(header::FORWARDED)
        || req.path().starts_with("/api/")
}

fn is_local(ip: IpAddr, bind: IpAddr) -> bool {
    let loopback = match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    };
    loopback || (!bind.is_unspecified() && ip == bind)
}

/// Constant-time password check (both sides hashed first, so the length leaks nothing).
pub fn password_matches(sent: &str, configured: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    let a = Sha3_256::digest(sent.as_bytes());
    let b = Sha3_256::digest(configured.as_bytes());
    a.ct_eq(&b).into()
}

fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    let header = req.headers().get(header::COOKIE)?.to_str().ok()?;
    header.split(';').find_map(|c| {
        let (k, v) = c.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// An admin request without valid credentials.
struct Refused;

fn refused() -> HttpResponse {
    HttpResponse::Unauthorized().content_type("text/plain").body("Invalid password")
}

/// Authorises an admin request: `Ok(Some(sid))` when a password login created a session,
/// `Ok(None)` when it passed otherwise.
fn authorize(state: &ApiState, req: &HttpRequest) -> Result<Option<String>, Refused> {
    let api = &state.config().api;
    let params = Params::of(req);
    let sent = params.get("password");
    let ip = client_ip(req, api.trust_proxy_ip);
    if sent.is_none() {
        if api.passwordless_loopback_admin && ip.is_some_and(|ip| is_local(ip, api.bind_ip)) && !proxied(req) {
            return Ok(None);
        }
        if cookie(req, "sid").is_some_and(|sid| state.sessions.valid(&sid)) {
            return Ok(None);
        }
    }
    if !sent.is_some_and(|p| password_matches(p, &api.password)) {
        return Err(Refused);
    }
    tracing::info!("Admin authorized from {}", ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()));
    Ok(Some(state.sessions.create()))
}

fn with_session(mut response: HttpResponse, sid: Option<String>) -> HttpResponse {
    if let Some(sid) = sid {
        let expires = header::HttpDate::from(SystemTime::now() + SESSION_TTL);
        let value =
            format!("sid={sid}; Path=/; Max-Age={}; Expires={expires}; HttpOnly; SameSite=Lax", SESSION_TTL.as_secs());
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

macro_rules! authorized {
    ($state:expr, $req:expr) => {
        match authorize(&$state, &$req) {
            Ok(sid) => sid,
            Err(Refused) => return refused(),
        }
    };
}

async fn miners_hashrate(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    with_session(json_text(state.snapshot.load().miners_hashrate_json.clone()), sid)
}

async fn workers_hashrate(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    with_session(json_text(state.snapshot.load().workers_hashrate_json.clone()), sid)
}

async fn admin_stats(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    let (balances, known) = match tokio::try_join!(state.store.all_balances(), state.store.known_miners()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("API: {e}");
            return with_session(json_value(&json!({"error": "Error collecting stats"})), sid);
        }
    };
    let owed: u64 = balances.iter().map(|(_, b)| b.balance + b.pending).sum();
    let paid: u64 = balances.iter().map(|(_, b)| b.paid).sum();
    let t = state.snapshot.load().totals.clone();
    // Fixed against the old pool (spec §11.3 #7): revenue is the credited block reward (not
    // the finder score), only confirmed blocks count as unlocked, orphans are counted.
    with_session(
        json_value(&json!({
            "totalOwed": owed,
            "totalPaid": paid,
            "totalRevenue": t.revenue.0,
            "totalRevenueSolo": t.revenue.1,
            "totalDiff": t.confirmed_diff.0,
            "totalDiffSolo": t.confirmed_diff.1,
            "totalShares": t.confirmed_shares.0,
            "totalSharesSolo": t.confirmed_shares.1,
            "blocksOrphaned": t.orphaned,
            "blocksUnlocked": t.confirmed.0,
            "blocksUnlockedSolo": t.confirmed.1,
            "totalWorkers": known.len(),
        })),
        sid,
    )
}

async fn admin_users(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    let result = async {
        let known = state.store.known_miners().await?;
        let addresses: Vec<String> = known.iter().map(|(a, _)| a.clone()).collect();
        let totals = state.store.miner_totals(&addresses).await?;
        let balances = state.store.balance_maps(&addresses).await?;
        Ok::<_, crate::store::StoreError>((addresses, totals, balances))
    }
    .await;
    let (addresses, totals, balances) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("API: {e}");
            return with_session(json_value(&json!({"error": "Error collecting users stats"})), sid);
        }
    };
    let snapshot = state.snapshot.load();
    let mut users = Map::new();
    for ((address, (hashes, last)), money) in addresses.iter().zip(totals).zip(balances) {
        let amount = |f: &str| money.get(f).and_then(|v| shapes::parse_int(v)).unwrap_or(0).max(0) as u64;
        let figures = snapshot.miners.get(address).copied().unwrap_or_default();
        users.insert(
            address.clone(),
            json!({
                // Owed to the miner: credited and not yet sent (including a batch in flight).
                "pending": (amount("balance") + amount("pending")).to_string(),
                "paid": amount("paid").to_string(),
                "lastShare": last,
                "hashes": hashes,
                "childWallet": null,
                "hashrate": figures.hashrate,
                "roundScore": shapes::num(figures.round_score),
                "roundHashes": figures.round_hashes,
            }),
        );
    }
    with_session(json_value(&Value::Object(users)), sid)
}

async fn admin_monitoring(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    let status = state.store.read_status(&["daemon", "wallet"]).await.unwrap_or_default();
    let mut monitoring = Map::new();
    for (i, module) in ["daemon", "wallet"].iter().enumerate() {
        let mut entry: Map<String, Value> =
            status.get(i).map(|m| m.iter().map(|(k, v)| (k.clone(), json!(v))).collect()).unwrap_or_default();
        for field in ["lastCheck", "lastStatus", "lastResponse"] {
            entry.entry(field.to_string()).or_insert_with(|| json!(if field == "lastStatus" { "unknown" } else { "" }));
        }
        monitoring.insert(module.to_string(), Value::Object(entry));
    }
    // The pool logs to stdout/journald, not to files: there are no log files to list.
    with_session(json_value(&json!({"monitoring": monitoring, "logs": {}})), sid)
}

async fn admin_log(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    let params = Params::of(&req);
    let file = params.get("file").unwrap_or_default();
    let valid =
        file.strip_suffix(".log").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_alphanumeric() || c == '_'));
    let response = if valid {
        HttpResponse::NotFound()
            .content_type("text/plain")
            .body("log file not found: the pool logs to its standard output")
    } else {
        HttpResponse::BadRequest().content_type("text/plain").body("wrong log file")
    };
    with_session(response, sid)
}

async fn admin_ports(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    let mut ports = Map::new();
    let supervisors = state.supervisors.snapshot();
    if !supervisors.is_empty() {
        for supervisor in &supervisors {
            if let Ok(stats) = supervisor.send(crate::stratum::supervisor::GetPortStats).await {
                ports.insert(stats.port.to_string(), json!(stats.connections));
            }
        }
    } else {
        let list: Vec<u16> = state.config().ports.iter().map(|p| p.port).collect();
        let users = state.store.port_users(&list).await.unwrap_or_default();
        for (port, users) in list.iter().zip(users) {
            let n = users.as_deref().and_then(shapes::parse_int).unwrap_or(0).max(0);
            ports.insert(port.to_string(), json!(n));
        }
    }
    // The shape the frontend's Admin page reads (spec §11.3 #7): {"ports": {"3333": users}}.
    with_session(json_value(&json!({"ports": ports})), sid)
}

/// Payment batches and addresses that need the operator: in flight (unknown, held, ...),
/// finalized but never confirmed (dropped), and quarantined addresses.
async fn admin_payments(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    let sid = authorized!(state, req);
    let result = async {
        let journal = state.store.journal().await?;
        let dropped = state.store.dropped().await?;
        let quarantined = state.store.quarantined().await?;
        Ok::<_, crate::store::StoreError>((journal, dropped, quarantined))
    }
    .await;
    let (journal, dropped, quarantined) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("API: {e}");
            return with_session(json_value(&json!({"error": "Error collecting payments"})), sid);
        }
    };
    let batch = |e: &crate::store::JournalEntry| {
        json!({
            "id": e.id,
            "state": e.state,
            "txHash": e.tx_hash,
            "created": e.created_ms,
            "updated": e.updated_ms,
            "absentRounds": e.absent_rounds,
            "error": e.error,
            "waitingInputs": e.waiting_inputs,
            "destinations": e.destinations.len(),
            "amount": e.total(),
        })
    };
    with_session(
        json_value(&json!({
            "inFlight": journal.iter().map(batch).collect::<Vec<_>>(),
            "dropped": dropped.iter().map(batch).collect::<Vec<_>>(),
            "quarantined": quarantined,
        })),
        sid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_compare_whole() {
        assert!(password_matches("secret", "secret"));
        assert!(!password_matches("secre", "secret"));
        assert!(!password_matches("", ""));
        assert!(!password_matches("anything", ""));
    }

    #[test]
    fn local_addresses() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(is_local("127.0.0.1".parse().unwrap(), any));
        assert!(is_local("::1".parse().unwrap(), any));
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap(), any));
        assert!(!is_local("127.0.0.2".parse().unwrap(), any));
        assert!(!is_local("10.0.0.1".parse().unwrap(), any));
        assert!(is_local("10.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn sessions_expire_and_are_random() {
        let s = Sessions::default();
        let a = s.create();
        let b = s.create();
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert!(s.valid(&a));
        assert!(!s.valid("nope"));
    }
}
