//! Wiring: builds every actor from the config and runs until a signal.
//!
//! Start order: metrics, Redis, RandomX engine, share ledger, job distributor, one arbiter per
//! core for the sessions, one supervisor per port, the HTTP server. Shutdown stops taking
//! connections and submits, lets the submits in flight finish, and writes every pending share
//! and block candidate to Redis before exiting.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::accounting::leader::{LeaderElection, Lease, Resign};
use crate::accounting::ledger::{Drain, LedgerConfig, ShareLedger};
use crate::accounting::payments::{PaymentProcessor, PaymentSettings};
use crate::accounting::payouts::PayoutPolicy;
use crate::accounting::unlocker::{BlockUnlocker, UnlockerSettings};
use crate::config::{Config, Module, RandomXMode, TlsMode};
use crate::jobs::{DistributorConfig, JobDistributor, JobTemplate, ResumeSubmissions, Subscribe, UnsavedCandidates};
use crate::node::{DaemonClient, WalletClient};
use crate::pow::{Mode, PowConfig, PowEngine};
use crate::store::{CandidateResult, Store};
use crate::stratum::capacity::SessionCapacity;
use crate::stratum::supervisor::{GetPortStats, RetireSessions, StopAccepting, StopListening};
use crate::stratum::transport::load_tls;
use crate::stratum::{PortSupervisor, PortSupervisors, StratumContext};
use crate::upgrade::{Control, Event, Handover, Inherited, Listener, ListenerKind};

/// A running pool.
pub struct Pool {
    /// The effective config.
    pub config: Arc<Config>,
    /// Redis.
    pub store: Store,
    /// The verifier pool (stratum module only).
    pub engine: Option<PowEngine>,
    /// The share ledger (stratum module only).
    pub ledger: Option<Addr<ShareLedger>>,
    /// One supervisor per stratum port, ports added by a reload included (shared with the
    /// reloader; connection figures, drain and shutdown read it).
    supervisors: PortSupervisors,
    /// The template being mined.
    pub current: Arc<ArcSwapOption<JobTemplate>>,
    /// The running config: `config`, then what each accepted reload applied (the API shows it).
    running: Arc<ArcSwap<Config>>,
    /// Where the HTTP server listens, if the API module runs.
    pub http_addr: Option<SocketAddr>,
    /// The leader election (unlocker or payments module).
    pub leader: Option<Addr<LeaderElection>>,
    /// This process's instance id (extra nonce bytes 4..8, flush ids, lease holder).
    pub instance_id: [u8; 4],
    /// The Prometheus handle.
    pub metrics: PrometheusHandle,
    arbiters: Vec<Arbiter>,
    http: Option<actix_web::dev::ServerHandle>,
    /// The sessions' shared context (its submit gate is closed at shutdown).
    stratum: Option<Arc<StratumContext>>,
    /// Submits block candidates (shutdown waits until each is written to Redis).
    distributor: Option<Addr<JobDistributor>>,
    /// The session arbiters, where a port added by a reload starts its sessions.
    session_arbiters: Option<Arc<Vec<ArbiterHandle>>>,
    /// The block unlocker, if it runs here (a reload sends it new settings).
    unlocker: Option<Addr<BlockUnlocker>>,
    /// The payment processor, if it runs here (a reload sends it new settings).
    payments: Option<Addr<PaymentProcessor>>,
    /// How many sessions this process can hold (stratum module only).
    capacity: Option<SessionCapacity>,
    /// Duplicates of the listening sockets, handed to the new process by an upgrade.
    handoff: Arc<Mutex<Vec<Listener>>>,
}

/// Installs the metrics recorder once per process (tests start several pools, concurrently).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = crate::metrics::install().context("installing the metrics recorder")?;
    *handle = Some(installed.clone());
    Ok(installed)
}

fn pow_config(config: &Config) -> PowConfig {
    PowConfig {
        mode: match config.randomx.mode {
            RandomXMode::Fast => Mode::Fast,
            RandomXMode::Light => Mode::Light,
        },
        threads: config.randomx.threads,
        dataset_threads: 0,
        huge_pages: config.randomx.huge_pages,
    }
}

/// Starts the selected modules. Must run inside an actix `System`.
pub async fn start(config: Config, modules: &[Module]) -> anyhow::Result<Pool> {
    start_inheriting(config, modules, &mut Inherited::default()).await
}

/// [`start`], serving on the listening sockets `inherited` from the process this one upgrades
/// (ports it did not have are bound).
pub async fn start_inheriting(config: Config, modules: &[Module], inherited: &mut Inherited) -> anyhow::Result<Pool> {
    let config = Arc::new(config);
    let metrics = metrics_handle()?;
    let ports: Vec<u16> = config.ports.iter().map(|p| p.port).collect();
    crate::metrics::register_series(&ports);
    crate::metrics::register_reload_series();
    let redis = config.redis.target();
    let store = Store::connect_to(&redis, config.redis_prefix(), Duration::from_secs(30))
        .await
        .with_context(|| format!("connecting to Redis at {}", redis.describe()))?;
    check_redis_safety(&store, &config, modules).await?;
    let current: Arc<ArcSwapOption<JobTemplate>> = Arc::new(ArcSwapOption::empty());
    let mut pool = Pool {
        config: config.clone(),
        store: store.clone(),
        engine: None,
        ledger: None,
        supervisors: PortSupervisors::default(),
        current: current.clone(),
        running: Arc::new(ArcSwap::new(config.clone())),
        http_addr: None,
        leader: None,
        instance_id: config.pool_server.instance_id.unwrap_or_else(rand::random),
        metrics: metrics.clone(),
        arbiters: Vec::new(),
        http: None,
        stratum: None,
        distributor: None,
        session_arbiters: None,
        unlocker: None,
        payments: None,
        capacity: None,
        handoff: Arc::default(),
    };
    if modules.contains(&Module::Stratum) && config.pool_server.enabled {
        start_stratum(&mut pool, inherited).await?;
    }
    if modules.contains(&Module::Unlocker) || modules.contains(&Module::Payments) {
        start_money(&mut pool, modules).await?;
    }
    start_http(&mut pool, modules, inherited).await?;
    Ok(pool)
}

/// Refuses to run the unlocker or payments on a Redis that may evict keys (an evicted balance
/// is money lost without a trace) unless `redis.allowEviction` says so, and warns loudly when
/// Redis persists nothing.
async fn check_redis_safety(store: &Store, config: &Config, modules: &[Module]) -> anyhow::Result<()> {
    let money = modules.contains(&Module::Unlocker) || modules.contains(&Module::Payments);
    let safety = match store.redis_safety().await {
        Ok(safety) => safety,
        Err(e) => {
            tracing::warn!(
                "cannot read Redis's eviction and persistence settings ({e}); CONFIG may be disabled: make sure \
                 maxmemory-policy is noeviction and appendonly is yes"
            );
            return Ok(());
        }
    };
    crate::metrics::redis_safety(safety.evicting(), safety.persisted());
    if safety.evicting() {
        if money && !config.redis.allow_eviction {
            anyhow::bail!(
                "Redis maxmemory-policy is {}: under memory pressure Redis deletes keys, balances and the payment \
                 journal included, and nobody is told. Set `maxmemory-policy noeviction` in redis.conf (or \
                 `redis-cli CONFIG SET maxmemory-policy noeviction` then `CONFIG REWRITE`), or set \
                 redis.allowEviction: true in the config to run the unlocker and payments anyway",
                safety.maxmemory_policy
            );
        }
        tracing::warn!(
            "!!! Redis maxmemory-policy is {}: keys may be evicted under memory pressure; set noeviction !!!",
            safety.maxmemory_policy
        );
    }
    if !safety.persisted() {
        tracing::warn!(
            "!!! Redis persists NOTHING (appendonly no, save \"\"): a Redis restart loses every balance, share and \
             payment record. Set `appendonly yes` in redis.conf !!!"
        );
    }
    Ok(())
}

async fn start_stratum(pool: &mut Pool, inherited: &mut Inherited) -> anyhow::Result<()> {
    let config = pool.config.clone();
    let capacity = crate::stratum::capacity::raise_open_file_limit(config.pool_server.max_connections);
    crate::stratum::capacity::report(&capacity);
    pool.capacity = Some(capacity);
    let engine = PowEngine::new(pow_config(&config)).context("starting the RandomX verifier threads")?;
    let instance_id = pool.instance_id;
    let ledger = ShareLedger::new(
        pool.store.clone(),
        LedgerConfig {
            instance: hex::encode(instance_id),
            window_factor: config.pplns.window_factor,
            flush_every: Duration::from_secs(1),
        },
        pool.current.clone(),
    )
    .start();
    let daemon = DaemonClient::new(&config.daemon.host, config.daemon.port, config.daemon.timeout);
    let distributor = JobDistributor::new(
        daemon,
        DistributorConfig {
            poll_interval: config.pool_server.block_refresh_interval,
            refresh_interval: config.pool_server.template_refresh_interval,
            pool_address: config.pool_address,
            reserve_size: config.pool_server.reserve_size,
            instance_id,
        },
        engine.clone(),
        pool.current.clone(),
        pool.store.clone(),
    )
    .start();
    resume_submissions(&pool.store, &distributor).await;
    let mut context = StratumContext::new(
        config.clone(),
        engine.clone(),
        pool.current.clone(),
        ledger.clone().recipient(),
        distributor.clone().recipient(),
    );
    if config.ports.iter().any(|p| p.tls != TlsMode::Off) {
        let tls = load_tls(&config.pool_server.tls, std::slice::from_ref(&config.pool_host))
            .context("setting up TLS for the stratum ports (poolServer.sslCert/sslKey/tlsSelfSignedDir)")?;
        let origin = if tls.generated { "generated self-signed" } else { "loaded" };
        tracing::info!(
            "[Pool] TLS certificate {} ({origin}), SHA-256 fingerprint {} (xmrig --tls-fingerprint {})",
            tls.cert_path.display(),
            tls.fingerprint,
            tls.fingerprint
        );
        context = context.with_tls(tls.acceptor);
    }
    let shared = Arc::new(context);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    pool.arbiters = (0..cores).map(|_| Arbiter::new()).collect();
    let handles = Arc::new(pool.arbiters.iter().map(|a| a.handle()).collect::<Vec<_>>());
    for port in &config.ports {
        let listener = match inherited.take(ListenerKind::Stratum, port.port) {
            Some(listener) => PortSupervisor::inherit(listener)
                .with_context(|| format!("serving the inherited stratum port {}", port.port))?,
            None => PortSupervisor::bind(config.pool_server.bind_ip, port.port)
                .with_context(|| format!("binding stratum port {}:{}", config.pool_server.bind_ip, port.port))?,
        };
        pool.handoff.lock().unwrap_or_else(|e| e.into_inner()).push(
            Listener::dup(ListenerKind::Stratum, port.port, listener.as_fd())
                .with_context(|| format!("duplicating stratum port {} for upgrades", port.port))?,
        );
        let supervisor = PortSupervisor::new(port.clone(), listener, shared.clone(), handles.clone()).start();
        distributor.do_send(Subscribe(supervisor.clone().recipient()));
        pool.supervisors.push(supervisor);
    }
    spawn_stratum_reporting(pool, engine.clone());
    pool.engine = Some(engine);
    pool.ledger = Some(ledger);
    pool.stratum = Some(shared);
    pool.distributor = Some(distributor);
    pool.session_arbiters = Some(handles);
    Ok(())
}

/// Hands the candidates an earlier run left pending to the distributor, booking first any that
/// run never booked (killed between writing the candidate and its ledger flush). Runs before
/// the ports open, so the round it closes holds no share of this run.
async fn resume_submissions(store: &Store, distributor: &Addr<JobDistributor>) {
    let pending = match store.pending_submissions().await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!("cannot read the pending block submissions ({e}); they are resumed at the next start");
            return;
        }
    };
    for submission in &pending {
        let c = &submission.candidate;
        match store.record_candidate(c).await {
            Ok(CandidateResult::Recorded { window_total, .. }) => tracing::warn!(
                height = c.height,
                hash = %c.hash,
                window = window_total,
                "Booked a block candidate that an earlier run found but had not booked"
            ),
            Ok(CandidateResult::AlreadyRecorded) => {}
            Err(e) => tracing::error!(height = c.height, hash = %c.hash, "cannot book a pending block candidate ({e})"),
        }
    }
    if !pending.is_empty() {
        distributor.do_send(ResumeSubmissions(pending));
    }
}

/// The money side: one-time import of the old pool's balances, the leader election, and the
/// unlocker and payment processor that act only while this process holds the lease.
async fn start_money(pool: &mut Pool, modules: &[Module]) -> anyhow::Result<()> {
    let config = pool.config.clone();
    match pool.store.import_old_balances().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(addresses = n, "imported balances from the old pool's workers:<address> hashes"),
        Err(e) => anyhow::bail!("importing the old pool's balances: {e}"),
    }
    let lease = Lease::default();
    let instance = format!("{}-{}", hex::encode(pool.instance_id), std::process::id());
    let ttl = config.block_unlocker.lease_ttl;
    pool.leader = Some(LeaderElection::new(pool.store.clone(), instance, ttl, lease.clone()).start());
    let daemon = DaemonClient::new(&config.daemon.host, config.daemon.port, config.daemon.timeout);
    let u = &config.block_unlocker;
    if modules.contains(&Module::Unlocker) && u.enabled {
        let settings = unlocker_settings(&config);
        pool.unlocker = Some(BlockUnlocker::new(pool.store.clone(), daemon, lease.clone(), settings).start());
    }
    let p = &config.payments;
    if modules.contains(&Module::Payments) && p.enabled {
        let w = &config.wallet_api;
        let wallet = WalletClient::new(&w.host, w.port, &w.api_key, w.timeout);
        let settings = payment_settings(&config);
        pool.payments = Some(PaymentProcessor::new(pool.store.clone(), wallet, lease, settings).start());
    }
    Ok(())
}

/// The unlocker's settings from `blockUnlocker` (at start and at a reload).
pub(crate) fn unlocker_settings(config: &Config) -> UnlockerSettings {
    let u = &config.block_unlocker;
    UnlockerSettings {
        interval: u.interval,
        depth: u.depth,
        pool_fee_bps: u.pool_fee_bps,
        finder_reward_bps: u.finder_reward_bps,
        solo_fee_bps: u.solo_fee_bps.unwrap_or(u.pool_fee_bps),
        payout_keep: Duration::from_secs(u.payout_record_days * 86_400),
    }
}

/// The payment processor's settings from `payments` (at start and at a reload).
pub(crate) fn payment_settings(config: &Config) -> PaymentSettings {
    let (p, w) = (&config.payments, &config.wallet_api);
    let ttl = config.block_unlocker.lease_ttl;
    PaymentSettings {
        interval: p.interval,
        policy: PayoutPolicy {
            min_payment: p.min_payment,
            max_payment: p.max_payment,
            denomination: p.denomination,
            transfer_fee: p.transfer_fee,
            dynamic_transfer_fee: p.dynamic_transfer_fee,
            miner_pay_fee: p.miner_pay_fee,
            max_addresses: p.max_addresses,
            max_transaction_amount: p.max_transaction_amount,
        },
        blocked_file: p.blocked_addresses_file.clone(),
        wallet_file: w.wallet_file.clone(),
        wallet_password: w.wallet_password.clone(),
        daemon_host: config.daemon.host.clone(),
        daemon_port: config.daemon.port,
        pool_address: config.pool_address.encode(),
        settle_after: ttl + w.timeout + Duration::from_secs(2),
        lookup_rounds: p.lookup_rounds,
        hold_after: p.hold_after,
    }
}

/// Periodic figures: verifier state (metrics) and connection counts (Redis, for the API).
fn spawn_stratum_reporting(pool: &Pool, engine: PowEngine) {
    let registry = pool.supervisors.clone();
    let store = pool.store.clone();
    let metrics = pool.metrics.clone();
    actix::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut round = 0u64;
        loop {
            tick.tick().await;
            round += 1;
            metrics.run_upkeep();
            let status = engine.status();
            let (fast, progress) =
                status.seeds.first().map(|s| (s.fast_ready, s.dataset_progress)).unwrap_or((false, 0.0));
            crate::metrics::verifier_state(status.queue_depth, fast, progress);
            let (caches, datasets) = engine.memory_held();
            crate::metrics::randomx_memory(status.seeds.len(), caches, datasets);
            if round % 5 != 0 {
                continue;
            }
            let mut prop = std::collections::HashMap::<String, u64>::new();
            let mut solo = std::collections::HashMap::<String, u64>::new();
            let mut ports = Vec::new();
            for supervisor in &registry.snapshot() {
                let Ok(stats) = supervisor.send(GetPortStats).await else { continue };
                ports.push((stats.port, stats.connections as u64));
                for ((key, is_solo), count) in stats.workers {
                    *if is_solo { &mut solo } else { &mut prop }.entry(key).or_default() += count;
                }
            }
            let prop: Vec<_> = prop.into_iter().collect();
            let solo: Vec<_> = solo.into_iter().collect();
            if let Err(e) = store.write_connection_snapshot(&prop, &solo, &ports).await {
                tracing::debug!("connection snapshot not written: {e}");
            }
        }
    });
}

/// Starts the HTTP side: the stats API with its collector when the `api` module runs and
/// `api.enabled`, and `/metrics`: on the API port, or on its own listener when `metrics.port`
/// is set (also for a node without the API). The collector and the API's own Redis connection
/// live on an arbiter of their own and the handlers on the HTTP worker thread, so serving
/// `/stats` costs the stratum threads nothing.
async fn start_http(pool: &mut Pool, modules: &[Module], inherited: &mut Inherited) -> anyhow::Result<()> {
    let config = pool.config.clone();
    let api_on = modules.contains(&Module::Api) && config.api.enabled;
    let metrics_port = config.metrics.port.filter(|_| config.metrics.enabled);
    if !api_on && metrics_port.is_none() {
        return Ok(());
    }
    let arbiter = Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (redis, prefix) = (config.redis.target(), config.redis_prefix().to_string());
    arbiter.spawn(async move {
        let _ = tx.send(Store::connect_to(&redis, &prefix, Duration::from_secs(30)).await);
    });
    let store = rx
        .await
        .context("the API arbiter stopped")?
        .with_context(|| format!("connecting the API to Redis at {}", config.redis.target().describe()))?;
    let metrics = config.metrics.enabled.then(|| pool.metrics.clone());
    let state =
        crate::api::ApiState::new(pool.running.clone(), store, metrics, pool.supervisors.clone(), pool.current.clone());
    if let (Some(capacity), Some(stratum)) = (pool.capacity, &pool.stratum) {
        state.set_session_capacity(capacity, stratum.clone());
    }
    if api_on {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = state.shared().clone();
        arbiter.spawn(async move {
            let _ = tx.send(crate::api::StatsCollector::new(shared).start());
        });
        state.attach_collector(rx.await.context("the API arbiter stopped")?);
    }
    let app_state = state.clone();
    let mut server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(app_state.clone()))
            .wrap_fn(|req, srv| crate::api::cors_and_metrics(req, srv))
            .configure(crate::api::configure)
    })
    .workers(1)
    .disable_signals();
    if api_on {
        let listener = http_listener(pool, inherited, ListenerKind::Api, config.api.bind_ip, config.api.port)
            .with_context(|| format!("binding the API port {}:{}", config.api.bind_ip, config.api.port))?;
        server = server
            .listen(listener)
            .with_context(|| format!("serving the API port {}:{}", config.api.bind_ip, config.api.port))?;
        pool.http_addr = server.addrs().first().copied();
    }
    if let Some(port) = metrics_port {
        let bound_before = server.addrs().len();
        let listener = http_listener(pool, inherited, ListenerKind::Metrics, config.metrics.bind_ip, port)
            .with_context(|| format!("binding the metrics port {}:{port}", config.metrics.bind_ip))?;
        server = server
            .listen(listener)
            .with_context(|| format!("serving the metrics port {}:{port}", config.metrics.bind_ip))?;
        if let Some(addr) = server.addrs().get(bound_before) {
            state.set_metrics_listener(addr.port());
        }
    }
    let server = server.run();
    pool.http = Some(server.handle());
    actix::spawn(server);
    pool.arbiters.push(arbiter);
    if api_on {
        tracing::info!("[Api] Listening for API requests on port {}", config.api.port);
    }
    if let Some(port) = metrics_port {
        tracing::info!("[Metrics] Serving /metrics on {}:{port}", config.metrics.bind_ip);
    }
    Ok(())
}

/// The inherited HTTP listener of `kind` for `port`, or a new one; a duplicate is kept for the
/// next upgrade.
fn http_listener(
    pool: &mut Pool,
    inherited: &mut Inherited,
    kind: ListenerKind,
    ip: std::net::IpAddr,
    port: u16,
) -> std::io::Result<std::net::TcpListener> {
    let listener = match inherited.take(kind, port) {
        Some(listener) => listener,
        None => std::net::TcpListener::bind((ip, port))?,
    };
    pool.handoff.lock().unwrap_or_else(|e| e.into_inner()).push(Listener::dup(kind, port, listener.as_fd())?);
    Ok(listener)
}

impl Pool {
    /// Upgrade: the new process serves on the same listening sockets. Stops calling accept,
    /// closes the sessions gradually over `over` (each once its submits are answered, so its
    /// miner reconnects to the new process), then does everything [`Pool::shutdown`] does.
    /// When `hurry` completes first (SIGTERM: the service is being stopped), the sessions left
    /// are closed at once. Returns how many sessions it closed.
    pub async fn drain(self, over: Duration, hurry: impl std::future::Future<Output = ()>) -> usize {
        let mut hurry = std::pin::pin!(hurry);
        for supervisor in &self.supervisors.snapshot() {
            supervisor.do_send(StopListening);
        }
        self.handoff.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let total = self.connections().await;
        tracing::info!(sessions = total, "[Upgrade] draining {total} session(s) over {} s", over.as_secs());
        let started = tokio::time::Instant::now();
        let step = Duration::from_millis(100).min(over / (total.max(1) as u32));
        let mut asked = 0;
        while started.elapsed() < over {
            asked += self.retire(crate::upgrade::due(total, started.elapsed(), over).saturating_sub(asked)).await;
            tokio::select! {
                _ = &mut hurry => {
                    tracing::warn!("[Upgrade] stop signal during the drain: closing every session now");
                    break;
                }
                _ = tokio::time::sleep(step) => {}
            }
        }
        // Sessions accepted just before the accept loop stopped are asked too.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        let all_closed = loop {
            asked += self.retire(usize::MAX).await;
            if self.connections().await == 0 {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if !all_closed {
            tracing::warn!(
                open = self.connections().await,
                "[Upgrade] sessions still open after the drain; closing them"
            );
        }
        tracing::info!(sessions = asked, "[Upgrade] drained; flushing and exiting");
        self.shutdown().await;
        asked
    }

    async fn retire(&self, mut count: usize) -> usize {
        let mut asked = 0;
        for supervisor in &self.supervisors.snapshot() {
            if count == 0 {
                break;
            }
            let n = supervisor.send(RetireSessions(count)).await.unwrap_or(0);
            count -= n;
            asked += n;
        }
        asked
    }

    async fn connections(&self) -> usize {
        let mut total = 0;
        for supervisor in &self.supervisors.snapshot() {
            total += supervisor.send(GetPortStats).await.map(|s| s.connections).unwrap_or(0);
        }
        total
    }

    /// Stops accepting connections and submits, lets the submits in flight be verified and
    /// booked, writes every pending share and block candidate to Redis, and stops the threads.
    pub async fn shutdown(self) {
        for supervisor in &self.supervisors.snapshot() {
            supervisor.do_send(StopAccepting);
        }
        if let Some(shared) = &self.stratum {
            shared.submits.close();
            let settled = wait_until(SHUTDOWN_WAIT, || shared.submits.in_flight() == 0).await;
            if !settled {
                tracing::error!(
                    in_flight = shared.submits.in_flight(),
                    "submits still being verified at shutdown; their shares are not booked"
                );
            }
        }
        if let Some(ledger) = &self.ledger {
            match ledger.send(Drain(SHUTDOWN_WAIT)).await {
                Ok(true) => tracing::info!("all shares written to Redis"),
                _ => tracing::error!("shares could not all be written to Redis before exit"),
            }
        }
        if let Some(distributor) = &self.distributor {
            let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
            let (saved, unsaved) = loop {
                let unsaved = distributor.send(UnsavedCandidates).await.unwrap_or(0);
                if unsaved == 0 || tokio::time::Instant::now() >= deadline {
                    break (unsaved == 0, unsaved);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if saved {
                tracing::info!("every block candidate is in Redis (pending ones are resubmitted at the next start)");
            } else {
                tracing::error!(unsaved, "block candidates could not be written to Redis before exit");
            }
        }
        if let Some(leader) = &self.leader {
            let _ = leader.send(Resign).await;
        }
        if let Some(http) = &self.http {
            http.stop(true).await;
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// How long each shutdown step may wait (verifications, the share flush, candidate writes).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Runs until SIGINT or SIGTERM, then shuts down cleanly; SIGHUP reloads the config
/// ([`crate::reload`]).
pub async fn run(config: Config, modules: Vec<Module>) -> anyhow::Result<()> {
    let hangups = crate::reload::hangups();
    let mut inherited = Inherited::from_env().context("taking over the listening sockets of the running pool")?;
    let binary = crate::upgrade::resolve_binary(config.upgrade.binary.as_deref())
        .context("resolving this binary's path for upgrades (set upgrade.binary)")?;
    let pool = start_inheriting(config, &modules, &mut inherited).await?;
    if let Some(hangups) = hangups {
        crate::reload::spawn(hangups, pool.reloader());
    }
    let upgraded = inherited.is_upgrade();
    // Without its control socket the pool serves all the same; only upgrades are off.
    let mut control = match Control::bind(&pool.config.upgrade.socket, binary, modules.clone(), upgraded) {
        Ok(control) => Some(control),
        Err(e) => {
            tracing::error!("[Upgrade] `pastella-pool upgrade` cannot reach this pool: {e}");
            None
        }
    };
    inherited.serving();
    if upgraded {
        tracing::info!(pid = std::process::id(), "[Upgrade] serving on the inherited sockets");
    }
    tokio::select! {
        _ = wait_for_signal() => {
            tracing::info!("shutting down");
            pool.shutdown().await;
        }
        handover = next_upgrade(control.as_mut(), &pool.handoff) => {
            let Handover { pid, mut report } = handover;
            drop(control);
            let drain = pool.config.upgrade.drain;
            let sessions = pool.connections().await;
            tracing::info!(new_pid = pid, "[Upgrade] the new process serves; this one drains and exits");
            report.send(&Event::Serving { pid, sessions, drain_seconds: drain.as_secs() }).await;
            let sessions = pool.drain(drain, wait_for_signal()).await;
            report.send(&Event::Done { pid, sessions }).await;
        }
    }
    Ok(())
}

/// The next upgrade request that hands over, or never without a control socket.
async fn next_upgrade(control: Option<&mut Control>, handoff: &Mutex<Vec<Listener>>) -> Handover {
    match control {
        Some(control) => control.next_upgrade(handoff).await,
        None => std::future::pending().await,
    }
}

impl Pool {
    /// What a config reload needs to reach the running actors.
    fn reloader(&self) -> crate::reload::Reloader {
        let stratum = match (&self.stratum, &self.session_arbiters, &self.distributor) {
            (Some(shared), Some(arbiters), Some(distributor)) => Some(crate::reload::StratumParts {
                shared: shared.clone(),
                arbiters: arbiters.clone(),
                distributor: distributor.clone(),
                supervisors: self.supervisors.snapshot(),
            }),
            _ => None,
        };
        crate::reload::Reloader::new(
            self.running.clone(),
            stratum,
            self.unlocker.clone(),
            self.payments.clone(),
            self.supervisors.clone(),
            self.handoff.clone(),
        )
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
