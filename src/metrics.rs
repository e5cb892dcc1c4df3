//! Every metric the pool exports, named in one place (`pastella_pool_*`, units in the names),
//! plus the Prometheus recorder setup. Call sites use the small functions below and never
//! spell a metric name themselves. `docs/METRICS.md` lists them with their meaning.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Stratum connections currently open, by port.
pub const STRATUM_CONNECTIONS: &str = "pastella_pool_stratum_connections";
/// Connections accepted, by port.
pub const STRATUM_CONNECTIONS_TOTAL: &str = "pastella_pool_stratum_connections_total";
/// Connections refused at accept, by reason.
pub const STRATUM_CONNECTIONS_REFUSED_TOTAL: &str = "pastella_pool_stratum_connections_refused_total";
/// Connections closed by the pool, by reason.
pub const STRATUM_DISCONNECTS_TOTAL: &str = "pastella_pool_stratum_disconnects_total";
/// Login attempts by result.
pub const STRATUM_LOGINS_TOTAL: &str = "pastella_pool_stratum_logins_total";
/// Time from accepting a connection to answering its login.
pub const STRATUM_LOGIN_SECONDS: &str = "pastella_pool_stratum_login_seconds";
/// Submitted shares by result.
pub const SHARES_TOTAL: &str = "pastella_pool_shares_total";
/// Sum of the job difficulty of accepted shares, by reward type.
pub const SHARES_DIFFICULTY_TOTAL: &str = "pastella_pool_shares_difficulty_total";
/// Time from reading a submit to writing its reply.
pub const SHARE_ACK_SECONDS: &str = "pastella_pool_share_ack_seconds";
/// RandomX hashing time of one verification, by mode.
pub const VERIFY_SECONDS: &str = "pastella_pool_verify_seconds";
/// Time a verification waited for a verifier thread.
pub const VERIFY_QUEUE_WAIT_SECONDS: &str = "pastella_pool_verify_queue_wait_seconds";
/// Verifications waiting for a thread.
pub const VERIFY_QUEUE_DEPTH: &str = "pastella_pool_verify_queue_depth";
/// 1 when the current seed is verified with the fast-mode dataset, 0 in light mode.
pub const RANDOMX_FAST_MODE: &str = "pastella_pool_randomx_fast_mode";
/// Dataset build progress of the newest seed, 0..1.
pub const RANDOMX_DATASET_PROGRESS: &str = "pastella_pool_randomx_dataset_progress_ratio";
/// Seconds from a template arriving to the last session of a port having its job.
pub const JOB_FANOUT_SECONDS: &str = "pastella_pool_job_fanout_seconds";
/// Seconds since the current template was fetched.
pub const TEMPLATE_AGE_SECONDS: &str = "pastella_pool_template_age_seconds";
/// Templates fetched, by reason (new_block, refresh).
pub const TEMPLATES_TOTAL: &str = "pastella_pool_templates_total";
/// Height of the block being mined.
pub const NETWORK_HEIGHT: &str = "pastella_pool_network_height";
/// Network difficulty of the block being mined.
pub const NETWORK_DIFFICULTY: &str = "pastella_pool_network_difficulty";
/// Daemon RPC latency, by method.
pub const DAEMON_RPC_SECONDS: &str = "pastella_pool_daemon_rpc_seconds";
/// Daemon RPC failures, by method and kind.
pub const DAEMON_RPC_ERRORS_TOTAL: &str = "pastella_pool_daemon_rpc_errors_total";
/// Block candidates submitted, by daemon answer.
pub const BLOCKS_SUBMITTED_TOTAL: &str = "pastella_pool_blocks_submitted_total";
/// Redis operation latency, by operation.
pub const REDIS_SECONDS: &str = "pastella_pool_redis_seconds";
/// Redis failures, by operation.
pub const REDIS_ERRORS_TOTAL: &str = "pastella_pool_redis_errors_total";
/// Share records written to Redis per flush.
pub const LEDGER_FLUSH_SHARES: &str = "pastella_pool_ledger_flush_shares";
/// Share records waiting for a Redis flush (kept across Redis outages).
pub const LEDGER_PENDING_SHARES: &str = "pastella_pool_ledger_pending_shares";
/// IP bans issued.
pub const BANS_TOTAL: &str = "pastella_pool_bans_total";
/// IPs currently banned.
pub const BANNED_IPS: &str = "pastella_pool_banned_ips";
/// Difficulty changes by vardiff, by direction.
pub const VARDIFF_RETARGETS_TOTAL: &str = "pastella_pool_vardiff_retargets_total";
/// Blocks resolved by the unlocker, by status (confirmed, orphaned).
pub const BLOCKS_TOTAL: &str = "pastella_pool_blocks_total";
/// Blocks found and not yet resolved.
pub const BLOCKS_PENDING: &str = "pastella_pool_blocks_pending";
/// Effort of the last resolved block: round shares / network difficulty.
pub const BLOCK_EFFORT_RATIO: &str = "pastella_pool_block_effort_ratio";
/// Atomic units credited to miners.
pub const CREDITED_ATOMIC_TOTAL: &str = "pastella_pool_credited_atomic_units_total";
/// Atomic units sent to miners.
pub const PAID_ATOMIC_TOTAL: &str = "pastella_pool_paid_atomic_units_total";
/// Atomic units owed to miners (unpaid balances).
pub const OWED_ATOMIC: &str = "pastella_pool_owed_atomic_units";
/// Payment batches by outcome (sent, released, unknown, held, dropped, deferred).
pub const PAYMENT_BATCHES_TOTAL: &str = "pastella_pool_payment_batches_total";
/// Wallet API failures, by call and kind.
pub const WALLET_ERRORS_TOTAL: &str = "pastella_pool_wallet_errors_total";
/// Wallet API latency, by call.
pub const WALLET_RPC_SECONDS: &str = "pastella_pool_wallet_rpc_seconds";
/// Seconds since the unlocker last completed a run (while leader).
pub const UNLOCKER_LAG_SECONDS: &str = "pastella_pool_unlocker_lag_seconds";
/// 1 while this process holds the unlocker/payments lease.
pub const LEADER: &str = "pastella_pool_leader";

/// API requests, by route and HTTP status.
pub const API_REQUESTS_TOTAL: &str = "pastella_pool_api_requests_total";
/// API request latency (long polls included), by route.
pub const API_REQUEST_SECONDS: &str = "pastella_pool_api_request_seconds";
/// API requests currently held by a long poll.
pub const API_LONGPOLLS: &str = "pastella_pool_api_longpolls";
/// Duration of one stats collector run.
pub const COLLECTOR_RUN_SECONDS: &str = "pastella_pool_collector_run_seconds";
/// Stats collector steps that failed, by step.
pub const COLLECTOR_ERRORS_TOTAL: &str = "pastella_pool_collector_errors_total";
/// Pool hashrate over `api.hashrateWindow`, by reward type.
pub const POOL_HASHRATE: &str = "pastella_pool_hashrate_hashes_per_second";
/// Addresses with shares in the hashrate window, by reward type.
pub const POOL_MINERS: &str = "pastella_pool_miners";
/// Workers with shares in the hashrate window, by reward type.
pub const POOL_WORKERS: &str = "pastella_pool_workers";
/// Current prop round: Σ share difficulty / network difficulty.
pub const ROUND_EFFORT_RATIO: &str = "pastella_pool_round_effort_ratio";
/// 1 when the collector's last daemon check succeeded.
pub const DAEMON_UP: &str = "pastella_pool_daemon_up";
/// 1 when the collector's last wallet API check succeeded.
pub const WALLET_UP: &str = "pastella_pool_wallet_up";
/// The daemon's own chain height (`/info` height).
pub const DAEMON_HEIGHT: &str = "pastella_pool_daemon_height";
/// The network height the daemon knows from its peers (`/info` network_height).
pub const DAEMON_NETWORK_HEIGHT: &str = "pastella_pool_daemon_network_height";
/// Payment batches in the journal not yet finalized or released.
pub const PAYMENT_BATCHES_OPEN: &str = "pastella_pool_payment_batches_open";
/// Age of the oldest open payment batch (0 when none).
pub const PAYMENT_BATCH_OLDEST_AGE_SECONDS: &str = "pastella_pool_payment_batch_oldest_age_seconds";

/// Installs the global Prometheus recorder and describes every metric. Call once, inside a
/// runtime; serve [`PrometheusHandle::render`] at `/metrics` and call `run_upkeep` periodically.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .set_buckets_for_metric(
            Matcher::Full(LEDGER_FLUSH_SHARES.into()),
            &[1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(STRATUM_CONNECTIONS, "Stratum connections currently open, by port.");
    describe_counter!(STRATUM_CONNECTIONS_TOTAL, "Stratum connections accepted, by port.");
    describe_counter!(STRATUM_CONNECTIONS_REFUSED_TOTAL, "Stratum connections refused at accept, by reason.");
    describe_counter!(STRATUM_DISCONNECTS_TOTAL, "Stratum connections closed by the pool, by reason.");
    describe_counter!(STRATUM_LOGINS_TOTAL, "Stratum login attempts, by result.");
    describe_counter!(
        STRATUM_REQUESTS_REFUSED_TOTAL,
        "Stratum requests refused before any work, by method and reason."
    );
    describe_counter!(VERIFY_CANCELLED_TOTAL, "Verifications dropped unhashed (session closed or IP banned).");
    describe_histogram!(
        STRATUM_LOGIN_SECONDS,
        Unit::Seconds,
        "Time from accepting a connection to answering its login."
    );
    describe_counter!(SHARES_TOTAL, "Submitted shares, by result.");
    describe_counter!(SHARES_DIFFICULTY_TOTAL, "Sum of job difficulty of accepted shares, by reward type.");
    describe_histogram!(SHARE_ACK_SECONDS, Unit::Seconds, "Time from reading a submit to writing its reply.");
    describe_histogram!(VERIFY_SECONDS, Unit::Seconds, "RandomX hashing time per verification, by mode.");
    describe_histogram!(VERIFY_QUEUE_WAIT_SECONDS, Unit::Seconds, "Time a verification waited for a verifier thread.");
    describe_gauge!(VERIFY_QUEUE_DEPTH, "Verifications waiting for a verifier thread.");
    describe_gauge!(RANDOMX_FAST_MODE, "1 when the current seed is verified in fast mode, 0 in light mode.");
    describe_gauge!(RANDOMX_DATASET_PROGRESS, "Build progress of the newest seed's RandomX dataset (0..1).");
    describe_histogram!(
        JOB_FANOUT_SECONDS,
        Unit::Seconds,
        "Template arrival to the last session of a port having its job."
    );
    describe_gauge!(TEMPLATE_AGE_SECONDS, Unit::Seconds, "Seconds since the current block template was fetched.");
    describe_counter!(TEMPLATES_TOTAL, "Block templates fetched, by reason.");
    describe_gauge!(NETWORK_HEIGHT, "Height of the block being mined.");
    describe_gauge!(NETWORK_DIFFICULTY, "Network difficulty of the block being mined.");
    describe_histogram!(DAEMON_RPC_SECONDS, Unit::Seconds, "Daemon RPC latency, by method.");
    describe_counter!(DAEMON_RPC_ERRORS_TOTAL, "Daemon RPC failures, by method and kind.");
    describe_counter!(BLOCKS_SUBMITTED_TOTAL, "Block candidates submitted, by daemon answer.");
    describe_counter!(BLOCK_CANDIDATES_TOTAL, "Steps in a block candidate's life, by outcome.");
    describe_histogram!(REDIS_SECONDS, Unit::Seconds, "Redis operation latency, by operation.");
    describe_counter!(REDIS_ERRORS_TOTAL, "Redis failures, by operation.");
    describe_histogram!(LEDGER_FLUSH_SHARES, "Share records written to Redis per flush.");
    describe_gauge!(LEDGER_PENDING_SHARES, "Share records waiting for a Redis flush.");
    describe_counter!(BANS_TOTAL, "IP bans issued.");
    describe_gauge!(BANNED_IPS, "IPs currently banned.");
    describe_counter!(VARDIFF_RETARGETS_TOTAL, "Vardiff difficulty changes, by direction.");
    describe_counter!(BLOCKS_TOTAL, "Blocks resolved by the unlocker, by status.");
    describe_gauge!(BLOCKS_PENDING, "Blocks found and not yet confirmed or orphaned.");
    describe_gauge!(BLOCK_EFFORT_RATIO, "Effort of the last resolved block (round shares / network difficulty).");
    describe_counter!(CREDITED_ATOMIC_TOTAL, "Atomic units credited to miners.");
    describe_counter!(PAID_ATOMIC_TOTAL, "Atomic units sent to miners.");
    describe_gauge!(OWED_ATOMIC, "Atomic units owed to miners (unpaid balances).");
    describe_counter!(PAYMENT_BATCHES_TOTAL, "Payment batches, by outcome.");
    describe_counter!(WALLET_ERRORS_TOTAL, "Wallet API failures, by kind.");
    describe_histogram!(WALLET_RPC_SECONDS, Unit::Seconds, "Wallet API latency, by call.");
    describe_gauge!(UNLOCKER_LAG_SECONDS, Unit::Seconds, "Seconds since the unlocker last completed a run.");
    describe_gauge!(LEADER, "1 while this process holds the unlocker/payments lease.");
    describe_counter!(API_REQUESTS_TOTAL, "API requests, by route and HTTP status.");
    describe_histogram!(API_REQUEST_SECONDS, Unit::Seconds, "API request latency (long polls included), by route.");
    describe_gauge!(API_LONGPOLLS, "API requests currently held by a long poll.");
    describe_histogram!(COLLECTOR_RUN_SECONDS, Unit::Seconds, "Duration of one stats collector run.");
    describe_counter!(COLLECTOR_ERRORS_TOTAL, "Stats collector steps that failed, by step.");
    describe_gauge!(POOL_HASHRATE, "Pool hashrate over the API hashrate window (H/s), by reward type.");
    describe_gauge!(POOL_MINERS, "Addresses with shares in the hashrate window, by reward type.");
    describe_gauge!(POOL_WORKERS, "Workers with shares in the hashrate window, by reward type.");
    describe_gauge!(ROUND_EFFORT_RATIO, "Current prop round: share difficulty so far / network difficulty.");
    describe_gauge!(DAEMON_UP, "1 when the stats collector's last daemon check succeeded.");
    describe_gauge!(WALLET_UP, "1 when the stats collector's last wallet API check succeeded.");
    describe_gauge!(DAEMON_HEIGHT, "The daemon's chain height.");
    describe_gauge!(DAEMON_NETWORK_HEIGHT, "The network height the daemon knows from its peers.");
    describe_gauge!(PAYMENT_BATCHES_OPEN, "Payment batches in the journal not yet finalized or released.");
    describe_gauge!(
        PAYMENT_BATCH_OLDEST_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest open payment batch (0 when none)."
    );
}

/// Creates, at zero, every series the dashboards and alert rules read, with the label sets the
/// call sites use (the Prometheus naming guide's "avoid missing metrics"): a fresh pool's panels
/// show 0 rather than "No data", and `increase()` sees the first event. `ports` are the stratum
/// ports. Gauges whose 0 would be a false alarm (`daemon_up`, `wallet_up`) start as NaN
/// (unknown) until their first check. New labelled metrics: add their label values here.
pub fn register_series(ports: &[u16]) {
    for port in ports {
        let port = port.to_string();
        gauge!(STRATUM_CONNECTIONS, "port" => port.clone()).increment(0.0);
        counter!(STRATUM_CONNECTIONS_TOTAL, "port" => port.clone()).increment(0);
        histogram_zero(histogram!(JOB_FANOUT_SECONDS, "port" => port));
    }
    for reason in ["limit_global", "limit_ip", "limit_subnet", "banned"] {
        counter!(STRATUM_CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in
        ["banned", "timeout", "login_timeout", "line_timeout", "flood", "bad_json", "http", "slow_reader", "fake_block"]
    {
        counter!(STRATUM_DISCONNECTS_TOTAL, "reason" => reason).increment(0);
    }
    // Sessions the old process closes during an upgrade's drain.
    counter!(STRATUM_DISCONNECTS_TOTAL, "reason" => "upgrade").increment(0);
    for result in ["ok", "invalid_address", "missing_login", "not_ready"] {
        counter!(STRATUM_LOGINS_TOTAL, "result" => result).increment(0);
    }
    let results = ["accepted", "block", "invalid", "duplicate", "low_difficulty", "stale", "malformed", "error"];
    for result in results {
        counter!(SHARES_TOTAL, "result" => result).increment(0);
    }
    for typ in ["prop", "solo"] {
        counter!(SHARES_DIFFICULTY_TOTAL, "type" => typ).increment(0);
        gauge!(POOL_HASHRATE, "type" => typ).increment(0.0);
        gauge!(POOL_MINERS, "type" => typ).increment(0.0);
        gauge!(POOL_WORKERS, "type" => typ).increment(0.0);
    }
    for mode in ["fast", "light"] {
        histogram_zero(histogram!(VERIFY_SECONDS, "mode" => mode));
    }
    gauge!(SESSION_CAPACITY).increment(0.0);
    gauge!(OPEN_FILES_LIMIT).increment(0.0);
    for reason in ["new_block", "refresh"] {
        counter!(TEMPLATES_TOTAL, "reason" => reason).increment(0);
    }
    for method in ["getblocktemplate", "submitblock", "getlastblockheader"] {
        histogram_zero(histogram!(DAEMON_RPC_SECONDS, "method" => method));
        for kind in ["unreachable", "not_synced", "rpc", "failed", "api", "http", "decode"] {
            counter!(DAEMON_RPC_ERRORS_TOTAL, "method" => method, "kind" => kind).increment(0);
        }
    }
    for result in ["accepted", "rejected", "error"] {
        counter!(BLOCKS_SUBMITTED_TOTAL, "result" => result).increment(0);
    }
    for op in ["flush_shares", "record_candidate", "credit_block", "lease_renew", "reserve_batch", "finalize_batch"] {
        histogram_zero(histogram!(REDIS_SECONDS, "op" => op));
        counter!(REDIS_ERRORS_TOTAL, "op" => op).increment(0);
    }
    for direction in ["up", "down"] {
        counter!(VARDIFF_RETARGETS_TOTAL, "direction" => direction).increment(0);
    }
    for status in ["confirmed", "orphaned"] {
        counter!(BLOCKS_TOTAL, "status" => status).increment(0);
    }
    for outcome in ["sent", "released", "unknown", "held", "dropped", "deferred"] {
        counter!(PAYMENT_BATCHES_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in ["found", "second_at_height", "retry", "resumed", "accepted", "rejected", "superseded"] {
        counter!(BLOCK_CANDIDATES_TOTAL, "outcome" => outcome).increment(0);
    }
    for method in ["login", "submit", "getjob", "keepalived"] {
        counter!(STRATUM_REQUESTS_REFUSED_TOTAL, "method" => method, "reason" => "rate").increment(0);
    }
    for reason in ["in_flight_session", "in_flight_ip"] {
        counter!(STRATUM_REQUESTS_REFUSED_TOTAL, "method" => "submit", "reason" => reason).increment(0);
    }
    for reason in ["rate_limited", "ip_not_seen"] {
        counter!(PAYOUT_LEVEL_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
    counter!(VERIFY_CANCELLED_TOTAL).increment(0);
    counter!(REDIS_FAILOVERS_TOTAL).increment(0);
    for call in ["balance", "prepare", "send_prepared", "transaction"] {
        histogram_zero(histogram!(WALLET_RPC_SECONDS, "call" => call));
        for kind in ["unreachable", "uncertain", "unauthorized", "decode"] {
            counter!(WALLET_ERRORS_TOTAL, "call" => call, "kind" => kind).increment(0);
        }
    }
    for step in ["redis", "daemon", "wallet", "charts", "status", "balances", "journal", "index"] {
        counter!(COLLECTOR_ERRORS_TOTAL, "step" => step).increment(0);
    }
    for route in ["/stats", "/live_stats", "/stats_address"] {
        counter!(API_REQUESTS_TOTAL, "route" => route, "status" => "200").increment(0);
        histogram_zero(histogram!(API_REQUEST_SECONDS, "route" => route));
    }
    counter!(BANS_TOTAL).increment(0);
    counter!(CREDITED_ATOMIC_TOTAL).increment(0);
    counter!(PAID_ATOMIC_TOTAL).increment(0);
    for h in [
        STRATUM_LOGIN_SECONDS,
        SHARE_ACK_SECONDS,
        VERIFY_QUEUE_WAIT_SECONDS,
        LEDGER_FLUSH_SHARES,
        COLLECTOR_RUN_SECONDS,
    ] {
        histogram_zero(histogram!(h));
    }
    for g in [
        VERIFY_QUEUE_DEPTH,
        RANDOMX_FAST_MODE,
        RANDOMX_DATASET_PROGRESS,
        TEMPLATE_AGE_SECONDS,
        NETWORK_HEIGHT,
        NETWORK_DIFFICULTY,
        LEDGER_PENDING_SHARES,
        BANNED_IPS,
        BLOCKS_PENDING,
        BLOCK_EFFORT_RATIO,
        OWED_ATOMIC,
        UNLOCKER_LAG_SECONDS,
        LEADER,
        API_LONGPOLLS,
        ROUND_EFFORT_RATIO,
        DAEMON_HEIGHT,
        DAEMON_NETWORK_HEIGHT,
        PAYMENT_BATCHES_OPEN,
        PAYMENT_BATCH_OLDEST_AGE_SECONDS,
        PAYMENT_BATCHES_UNKNOWN,
        PAYMENT_BATCHES_HELD,
        PAYMENT_BATCHES_DROPPED,
        ADDRESSES_QUARANTINED,
    ] {
        gauge!(g).increment(0.0);
    }
    for g in [DAEMON_UP, WALLET_UP] {
        let gauge = gauge!(g);
        gauge.set(f64::NAN);
    }
}

/// Registers a histogram without recording a sample (its buckets are exported at zero).
fn histogram_zero(_histogram: metrics::Histogram) {}

/// A stratum connection opened on `port`.
pub fn connection_opened(port: u16) {
    counter!(STRATUM_CONNECTIONS_TOTAL, "port" => port.to_string()).increment(1);
    gauge!(STRATUM_CONNECTIONS, "port" => port.to_string()).increment(1.0);
}

/// A stratum connection on `port` closed.
pub fn connection_closed(port: u16) {
    gauge!(STRATUM_CONNECTIONS, "port" => port.to_string()).decrement(1.0);
}

/// A connection refused at accept (`limit_global`, `limit_ip`, `banned`).
pub fn connection_refused(reason: &'static str) {
    counter!(STRATUM_CONNECTIONS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// The pool closed a connection (`timeout`, `flood`, `bad_json`, `banned`, `slow_reader`, ...).
pub fn disconnect(reason: &'static str) {
    counter!(STRATUM_DISCONNECTS_TOTAL, "reason" => reason).increment(1);
}

/// A login answered with `result` after `elapsed` since accept.
pub fn login(result: &'static str, elapsed: Duration) {
    counter!(STRATUM_LOGINS_TOTAL, "result" => result).increment(1);
    histogram!(STRATUM_LOGIN_SECONDS).record(elapsed.as_secs_f64());
}

/// A share answered with `result` after `ack` since it was read.
pub fn share(result: &'static str, ack: Duration) {
    counter!(SHARES_TOTAL, "result" => result).increment(1);
    histogram!(SHARE_ACK_SECONDS).record(ack.as_secs_f64());
}

/// An accepted share's job difficulty.
pub fn share_difficulty(solo: bool, difficulty: u64) {
    counter!(SHARES_DIFFICULTY_TOTAL, "type" => if solo { "solo" } else { "prop" }).increment(difficulty);
}

/// One RandomX verification.
pub fn verification(fast: bool, waited: Duration, hashing: Duration) {
    histogram!(VERIFY_SECONDS, "mode" => if fast { "fast" } else { "light" }).record(hashing.as_secs_f64());
    histogram!(VERIFY_QUEUE_WAIT_SECONDS).record(waited.as_secs_f64());
}

/// The verifier pool's state (sampled periodically).
pub fn verifier_state(queue_depth: usize, fast: bool, dataset_progress: f64) {
    gauge!(VERIFY_QUEUE_DEPTH).set(queue_depth as f64);
    gauge!(RANDOMX_FAST_MODE).set(if fast { 1.0 } else { 0.0 });
    gauge!(RANDOMX_DATASET_PROGRESS).set(dataset_progress);
}

/// Jobs for a new template reached every session of `port`.
pub fn job_fanout(port: u16, elapsed: Duration) {
    histogram!(JOB_FANOUT_SECONDS, "port" => port.to_string()).record(elapsed.as_secs_f64());
}

/// A new template was fetched (`new_block` or `refresh`).
pub fn template(reason: &'static str, height: u64, difficulty: u64) {
    counter!(TEMPLATES_TOTAL, "reason" => reason).increment(1);
    gauge!(NETWORK_HEIGHT).set(height as f64);
    gauge!(NETWORK_DIFFICULTY).set(difficulty as f64);
}

/// Age of the template being served.
pub fn template_age(age: Duration) {
    gauge!(TEMPLATE_AGE_SECONDS).set(age.as_secs_f64());
}

/// One daemon RPC call; `error` names the failure kind if it failed.
pub fn daemon_rpc(method: &'static str, elapsed: Duration, error: Option<&'static str>) {
    histogram!(DAEMON_RPC_SECONDS, "method" => method).record(elapsed.as_secs_f64());
    if let Some(kind) = error {
        counter!(DAEMON_RPC_ERRORS_TOTAL, "method" => method, "kind" => kind).increment(1);
    }
}

/// A block candidate's `submitblock` answer (`accepted`, `rejected`, `error`).
pub fn block_submitted(result: &'static str) {
    counter!(BLOCKS_SUBMITTED_TOTAL, "result" => result).increment(1);
}

/// One Redis operation.
pub fn redis(op: &'static str, elapsed: Duration, ok: bool) {
    histogram!(REDIS_SECONDS, "op" => op).record(elapsed.as_secs_f64());
    if !ok {
        counter!(REDIS_ERRORS_TOTAL, "op" => op).increment(1);
    }
}

/// A ledger flush wrote `records` share records; `pending` remain queued.
pub fn ledger_flush(records: usize, pending: usize) {
    histogram!(LEDGER_FLUSH_SHARES).record(records as f64);
    gauge!(LEDGER_PENDING_SHARES).set(pending as f64);
}

/// An IP was banned; `active` bans remain.
pub fn ban(active: usize) {
    counter!(BANS_TOTAL).increment(1);
    gauge!(BANNED_IPS).set(active as f64);
}

/// Number of IPs currently banned.
pub fn banned_ips(active: usize) {
    gauge!(BANNED_IPS).set(active as f64);
}

/// Vardiff changed a session's difficulty.
pub fn retarget(up: bool) {
    counter!(VARDIFF_RETARGETS_TOTAL, "direction" => if up { "up" } else { "down" }).increment(1);
}

/// The unlocker resolved a block.
pub fn block_resolved(confirmed: bool, effort: f64, credited: u64) {
    counter!(BLOCKS_TOTAL, "status" => if confirmed { "confirmed" } else { "orphaned" }).increment(1);
    gauge!(BLOCK_EFFORT_RATIO).set(effort);
    if credited > 0 {
        counter!(CREDITED_ATOMIC_TOTAL).increment(credited);
    }
}

/// Blocks waiting for maturity, and seconds since the unlocker last completed.
pub fn unlocker_state(pending: usize, lag: Duration) {
    gauge!(BLOCKS_PENDING).set(pending as f64);
    gauge!(UNLOCKER_LAG_SECONDS).set(lag.as_secs_f64());
}

/// A payment batch ended with `outcome` (`sent`, `released`, `unknown`, `held`, `dropped`, `deferred`).
pub fn payment_batch(outcome: &'static str, sent: u64) {
    counter!(PAYMENT_BATCHES_TOTAL, "outcome" => outcome).increment(1);
    if sent > 0 {
        counter!(PAID_ATOMIC_TOTAL).increment(sent);
    }
}

/// Atomic units owed to miners.
pub fn owed(amount: u64) {
    gauge!(OWED_ATOMIC).set(amount as f64);
}

/// One wallet API call; `error` names the failure kind.
pub fn wallet_rpc(call: &'static str, elapsed: Duration, error: Option<String>) {
    histogram!(WALLET_RPC_SECONDS, "call" => call).record(elapsed.as_secs_f64());
    if let Some(kind) = error {
        counter!(WALLET_ERRORS_TOTAL, "call" => call, "kind" => kind).increment(1);
    }
}

/// Whether this process holds the leader lease.
pub fn leader(holding: bool) {
    gauge!(LEADER).set(if holding { 1.0 } else { 0.0 });
}

/// One API request answered with `status` after `elapsed`.
pub fn api_request(route: &str, status: u16, elapsed: Duration) {
    counter!(API_REQUESTS_TOTAL, "route" => route.to_string(), "status" => status.to_string()).increment(1);
    histogram!(API_REQUEST_SECONDS, "route" => route.to_string()).record(elapsed.as_secs_f64());
}

/// Requests held by a long poll.
pub fn api_longpolls(held: usize) {
    gauge!(API_LONGPOLLS).set(held as f64);
}

/// A stats collector run took `elapsed`.
pub fn collector_run(elapsed: Duration) {
    histogram!(COLLECTOR_RUN_SECONDS).record(elapsed.as_secs_f64());
}

/// A stats collector step (`redis`, `daemon`, `wallet`, `charts`, ...) failed.
pub fn collector_error(step: &'static str) {
    counter!(COLLECTOR_ERRORS_TOTAL, "step" => step).increment(1);
}

/// Pool figures over the hashrate window, `(prop, solo)` each.
pub fn pool_figures(hashrate: (u64, u64), miners: (u64, u64), workers: (u64, u64)) {
    for (typ, h, m, w) in [("prop", hashrate.0, miners.0, workers.0), ("solo", hashrate.1, miners.1, workers.1)] {
        gauge!(POOL_HASHRATE, "type" => typ).set(h as f64);
        gauge!(POOL_MINERS, "type" => typ).set(m as f64);
        gauge!(POOL_WORKERS, "type" => typ).set(w as f64);
    }
}

/// Effort of the current prop round.
pub fn round_effort(ratio: f64) {
    gauge!(ROUND_EFFORT_RATIO).set(ratio);
}

/// Result of the collector's daemon check.
pub fn daemon_up(up: bool) {
    gauge!(DAEMON_UP).set(if up { 1.0 } else { 0.0 });
}

/// Result of the collector's wallet API check.
pub fn wallet_up(up: bool) {
    gauge!(WALLET_UP).set(if up { 1.0 } else { 0.0 });
}

/// The daemon's height and the network height it reports.
pub fn daemon_heights(height: u64, network_height: u64) {
    gauge!(DAEMON_HEIGHT).set(height as f64);
    gauge!(DAEMON_NETWORK_HEIGHT).set(network_height as f64);
}

/// Open payment batches and the oldest one's age.
pub fn payment_journal(open: u64, oldest_age: Duration) {
    gauge!(PAYMENT_BATCHES_OPEN).set(open as f64);
    gauge!(PAYMENT_BATCH_OLDEST_AGE_SECONDS).set(oldest_age.as_secs_f64());
}

/// Block candidates by outcome (`found`, `second_at_height`, `retry`, `resumed`, `accepted`,
/// `rejected`, `superseded`).
pub const BLOCK_CANDIDATES_TOTAL: &str = "pastella_pool_block_candidates_total";

/// One step in a block candidate's life (see [`BLOCK_CANDIDATES_TOTAL`]).
pub fn block_candidate(outcome: &'static str) {
    counter!(BLOCK_CANDIDATES_TOTAL, "outcome" => outcome).increment(1);
}

/// `/set_miner_payout_level` requests refused, by reason.
pub const PAYOUT_LEVEL_REFUSED_TOTAL: &str = "pastella_pool_payout_level_refused_total";

/// A `/set_miner_payout_level` request refused (`rate_limited`, `ip_not_seen`).
pub fn payout_level_refused(reason: &'static str) {
    counter!(PAYOUT_LEVEL_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// `pastella_pool_payment_batches_unknown`: journaled batches whose send had no definitive
/// outcome yet.
pub const PAYMENT_BATCHES_UNKNOWN: &str = "pastella_pool_payment_batches_unknown";
/// `pastella_pool_payment_batches_held`: batches left to the operator.
pub const PAYMENT_BATCHES_HELD: &str = "pastella_pool_payment_batches_held";
/// `pastella_pool_payment_batches_dropped`: finalized batches whose transaction never confirmed.
pub const PAYMENT_BATCHES_DROPPED: &str = "pastella_pool_payment_batches_dropped";
/// `pastella_pool_addresses_quarantined`: addresses never paid because the wallet cannot pay them.
pub const ADDRESSES_QUARANTINED: &str = "pastella_pool_addresses_quarantined";

/// The payment states that need attention, after each payment run.
pub fn payment_states(unknown: usize, held: usize, dropped: usize, quarantined: usize) {
    gauge!(PAYMENT_BATCHES_UNKNOWN).set(unknown as f64);
    gauge!(PAYMENT_BATCHES_HELD).set(held as f64);
    gauge!(PAYMENT_BATCHES_DROPPED).set(dropped as f64);
    gauge!(ADDRESSES_QUARANTINED).set(quarantined as f64);
}

/// 1 when Redis's `maxmemory-policy` may evict keys (anything but `noeviction`).
pub const REDIS_EVICTING_POLICY: &str = "pastella_pool_redis_evicting_policy";
/// 1 when Redis persists its data (AOF or RDB snapshots), 0 when a restart loses everything.
pub const REDIS_PERSISTENCE_ENABLED: &str = "pastella_pool_redis_persistence_enabled";

/// What Redis said about eviction and persistence (at start-up and on each `/health`).
pub fn redis_safety(evicting: bool, persisted: bool) {
    describe_gauge!(REDIS_EVICTING_POLICY, "1 when Redis's maxmemory-policy may evict keys (balances).");
    describe_gauge!(REDIS_PERSISTENCE_ENABLED, "1 when Redis persists its data (AOF or RDB snapshots).");
    gauge!(REDIS_EVICTING_POLICY).set(if evicting { 1.0 } else { 0.0 });
    gauge!(REDIS_PERSISTENCE_ENABLED).set(if persisted { 1.0 } else { 0.0 });
}

/// Seeds the RandomX engine keeps (current, next before an epoch switch, previous briefly).
pub const RANDOMX_SEEDS: &str = "pastella_pool_randomx_seeds";
/// RandomX caches allocated (256 MiB each).
pub const RANDOMX_CACHES: &str = "pastella_pool_randomx_caches";
/// RandomX datasets allocated, built or being built (about 2 GiB each).
pub const RANDOMX_DATASETS: &str = "pastella_pool_randomx_datasets";

/// The RandomX engine's seeds and the caches and datasets allocated in this process.
pub fn randomx_memory(seeds: usize, caches: usize, datasets: usize) {
    describe_gauge!(RANDOMX_SEEDS, "Seeds the RandomX engine keeps (current, next, previous).");
    describe_gauge!(RANDOMX_CACHES, "RandomX caches allocated (256 MiB each).");
    describe_gauge!(RANDOMX_DATASETS, "RandomX datasets allocated, built or being built (about 2 GiB each).");
    gauge!(RANDOMX_SEEDS).set(seeds as f64);
    gauge!(RANDOMX_CACHES).set(caches as f64);
    gauge!(RANDOMX_DATASETS).set(datasets as f64);
}

/// Stratum requests refused before any work, by method and reason (`rate`, `in_flight_session`,
/// `in_flight_ip`).
pub const STRATUM_REQUESTS_REFUSED_TOTAL: &str = "pastella_pool_stratum_requests_refused_total";
/// Verifications dropped unhashed because their session closed or their IP was banned.
pub const VERIFY_CANCELLED_TOTAL: &str = "pastella_pool_verify_cancelled_total";

/// A request refused by a rate limit or a verification cap.
pub fn request_refused(method: &'static str, reason: &'static str) {
    counter!(STRATUM_REQUESTS_REFUSED_TOTAL, "method" => method, "reason" => reason).increment(1);
}

/// A queued verification was dropped before hashing.
pub fn verification_cancelled() {
    counter!(VERIFY_CANCELLED_TOTAL).increment(1);
}

/// Redis Sentinel failovers the store followed to a new master.
pub const REDIS_FAILOVERS_TOTAL: &str = "pastella_pool_redis_failovers_total";

/// The store followed a Redis Sentinel failover to a new master.
pub fn redis_failover() {
    counter!(REDIS_FAILOVERS_TOTAL).increment(1);
}

/// Config reloads (SIGHUP), by result: `applied` or `rejected`.
pub const CONFIG_RELOADS_TOTAL: &str = "pastella_pool_config_reloads_total";
/// Unix time of the last applied config reload (0 until one is).
pub const CONFIG_LAST_RELOAD_SECONDS: &str = "pastella_pool_config_last_reload_timestamp_seconds";

/// Registers the reload series with zero values (called at start-up).
pub fn register_reload_series() {
    describe_counter!(CONFIG_RELOADS_TOTAL, "Config reloads (SIGHUP), by result: applied or rejected.");
    describe_gauge!(CONFIG_LAST_RELOAD_SECONDS, Unit::Seconds, "Unix time of the last applied config reload.");
    for result in ["applied", "rejected"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    gauge!(CONFIG_LAST_RELOAD_SECONDS).increment(0.0);
}

/// A config reload was applied (`true`) or rejected.
pub fn config_reload(applied: bool) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => if applied { "applied" } else { "rejected" }).increment(1);
    if applied {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        gauge!(CONFIG_LAST_RELOAD_SECONDS).set(now as f64);
    }
}

/// Registers the per-port series of a port opened by a config reload (the rest of
/// [`register_series`] is not run again: it would reset gauges such as `daemon_up`).
pub fn register_port_series(port: u16) {
    let port = port.to_string();
    gauge!(STRATUM_CONNECTIONS, "port" => port.clone()).increment(0.0);
    counter!(STRATUM_CONNECTIONS_TOTAL, "port" => port.clone()).increment(0);
    histogram_zero(histogram!(JOB_FANOUT_SECONDS, "port" => port));
}

/// Sessions this process can hold (the open-file limit less the pool's own descriptors, at
/// most `poolServer.maxConnections`).
pub const SESSION_CAPACITY: &str = "pastella_pool_session_capacity";
/// The open-file limit in force (after the pool raised its soft limit to the hard limit).
pub const OPEN_FILES_LIMIT: &str = "pastella_pool_open_files_limit";

/// This process's session capacity, set once when its stratum side starts.
pub fn session_capacity(sessions: u64, open_files: u64) {
    describe_gauge!(
        SESSION_CAPACITY,
        "Sessions this process can hold (open-file limit less 256, at most maxConnections)."
    );
    describe_gauge!(OPEN_FILES_LIMIT, "The open-file limit in force after raising the soft limit to the hard limit.");
    gauge!(SESSION_CAPACITY).set(sessions as f64);
    gauge!(OPEN_FILES_LIMIT).set(open_files as f64);
}

/// Journaled payment batches whose prepare had no answer yet (`preparing`).
pub const PAYMENT_BATCHES_PREPARING: &str = "pastella_pool_payment_batches_preparing";
/// Batches without a transaction hash kept because the wallet's locked balance may hold the
/// inputs of a transaction prepared for them (`preparing`, or held from it).
pub const PAYMENT_BATCHES_WAITING_INPUTS: &str = "pastella_pool_payment_batches_waiting_inputs";

/// After each payment run: batches being prepared, and those waiting for the wallet's inputs.
pub fn payment_batches_preparing(preparing: usize, waiting_inputs: usize) {
    describe_gauge!(PAYMENT_BATCHES_PREPARING, "Journaled payment batches whose prepare had no answer yet.");
    describe_gauge!(
        PAYMENT_BATCHES_WAITING_INPUTS,
        "Payment batches kept until the wallet's inputs are free (a lost prepare; rescan the wallet)."
    );
    gauge!(PAYMENT_BATCHES_PREPARING).set(preparing as f64);
    gauge!(PAYMENT_BATCHES_WAITING_INPUTS).set(waiting_inputs as f64);
}

/// `hashrate` window members the stats collector read from Redis.
pub const COLLECTOR_WINDOW_READ: &str = "pastella_pool_collector_window_members_read_total";
/// `hashrate` window members that left the collector's in-memory window by age.
pub const COLLECTOR_WINDOW_EXPIRED: &str = "pastella_pool_collector_window_members_expired_total";
/// Members the collector's in-memory hashrate window holds.
pub const COLLECTOR_WINDOW_MEMBERS: &str = "pastella_pool_collector_window_members";
/// Time one run spent bringing the hashrate window up to date (Redis reads included).
pub const COLLECTOR_WINDOW_SECONDS: &str = "pastella_pool_collector_window_seconds";
/// Full re-reads of the hashrate window because Redis's copy changed under the collector.
pub const COLLECTOR_WINDOW_RESYNCS_TOTAL: &str = "pastella_pool_collector_window_resyncs_total";

/// Describes the collector's window metrics (when the collector starts).
pub fn register_collector_window() {
    describe_counter!(COLLECTOR_WINDOW_READ, "Hashrate window members the stats collector read from Redis.");
    describe_counter!(COLLECTOR_WINDOW_EXPIRED, "Hashrate window members that left the collector's window by age.");
    describe_gauge!(COLLECTOR_WINDOW_MEMBERS, "Members the collector's in-memory hashrate window holds.");
    describe_histogram!(
        COLLECTOR_WINDOW_SECONDS,
        Unit::Seconds,
        "Time one collector run spent bringing the hashrate window up to date."
    );
    describe_counter!(COLLECTOR_WINDOW_RESYNCS_TOTAL, "Full re-reads of the hashrate window after a gap.");
    counter!(COLLECTOR_WINDOW_READ).increment(0);
    counter!(COLLECTOR_WINDOW_EXPIRED).increment(0);
    counter!(COLLECTOR_WINDOW_RESYNCS_TOTAL).increment(0);
}

/// One run's update of the hashrate window: members read, expired, held, time taken.
pub fn collector_window(read: u64, expired: u64, held: u64, elapsed: Duration) {
    counter!(COLLECTOR_WINDOW_READ).increment(read);
    counter!(COLLECTOR_WINDOW_EXPIRED).increment(expired);
    gauge!(COLLECTOR_WINDOW_MEMBERS).set(held as f64);
    histogram!(COLLECTOR_WINDOW_SECONDS).record(elapsed.as_secs_f64());
}

/// The collector re-read the whole hashrate window after a gap.
pub fn collector_window_resync() {
    counter!(COLLECTOR_WINDOW_RESYNCS_TOTAL).increment(1);
}
