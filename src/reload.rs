//! Live reload (SIGHUP, `systemctl reload`): the config file the pool was started with is read
//! again with the same loader and validation as `run` and `check-config`, and what can change
//! without touching connected miners is applied.
//!
//! - An invalid file is rejected whole: every error is logged with its JSON path and the
//!   running config stays.
//! - Applied live: port difficulties (new logins), ports added (they start listening) and
//!   removed (they stop accepting; their sessions finish), `varDiff` (open sessions step inside
//!   new bounds at their next retarget), `fixedDiff`, `shareTrust`, `banning`, the stratum
//!   limits and caps, `allow`/`deny`, PROXY protocol, the TLS certificate (read again), the
//!   payment and unlocker settings (the blocked-addresses file is read every payment run), and
//!   the log level.
//! - Everything else is named in one "needs a restart" line and left as it runs.
//!
//! [`plan`] is the pure part (what changed, what needs a restart); [`Reloader`] applies it.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use actix::prelude::*;
use arc_swap::ArcSwap;

use crate::accounting::payments::{PaymentProcessor, UpdatePaymentSettings};
use crate::accounting::unlocker::{BlockUnlocker, UpdateUnlockerSettings};
use crate::config::{Config, PortConfig, TlsMode};
use crate::jobs::{JobDistributor, Subscribe};
use crate::stratum::supervisor::{ApplyPort, RetirePort};
use crate::stratum::{PortSupervisor, PortSupervisors, StratumContext};
use crate::upgrade::{Listener, ListenerKind};

/// Sets the process's log filter; `Err` says why a filter was not applied.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

struct Source {
    path: PathBuf,
    log_level: Option<LogLevelSetter>,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

/// Names the config file a reload reads and, when the log filter is not fixed by `RUST_LOG`,
/// how to change the log level. Called once by the binary before the pool starts.
pub fn install(path: PathBuf, log_level: Option<LogLevelSetter>) {
    let _ = SOURCE.set(Source { path, log_level });
}

/// What a reload would change, section by section.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Settings applied live, by JSON name (`ports.3333.diff`, `banning`, ...).
    pub changed: Vec<String>,
    /// Settings that differ but only take effect after a restart.
    pub restart: Vec<String>,
    /// Ports to open.
    pub added: Vec<PortConfig>,
    /// Ports to close (their sessions finish).
    pub removed: Vec<u16>,
    /// Ports kept whose `diff` or `desc` changed.
    pub updated: Vec<PortConfig>,
}

impl Plan {
    /// True when the new file changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.restart.is_empty()
    }
}

/// Compares the running config with a newly loaded one.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    let old_ports: BTreeMap<u16, &PortConfig> = old.ports.iter().map(|p| (p.port, p)).collect();
    let new_ports: BTreeMap<u16, &PortConfig> = new.ports.iter().map(|p| (p.port, p)).collect();
    for (port, config) in &new_ports {
        match old_ports.get(port) {
            None => {
                plan.changed.push(format!("ports.{port} added (diff {}, TLS {})", config.diff, config.tls.as_str()));
                plan.added.push((*config).clone());
            }
            Some(before) if before.tls != config.tls => {
                // A listener's TLS mode is fixed by its supervisor: remove and re-add the port.
                plan.restart.push(format!("ports.{port}.tls"));
            }
            Some(before) if *before != *config => {
                if before.diff != config.diff {
                    plan.changed.push(format!("ports.{port}.diff {} -> {}", before.diff, config.diff));
                }
                if before.desc != config.desc {
                    plan.changed.push(format!("ports.{port}.desc"));
                }
                plan.updated.push((*config).clone());
            }
            Some(_) => {}
        }
    }
    for port in old_ports.keys().filter(|p| !new_ports.contains_key(p)) {
        plan.changed.push(format!("ports.{port} removed"));
        plan.removed.push(*port);
    }
    let (a, b) = (&old.pool_server, &new.pool_server);
    let live = [
        ("varDiff", old.var_diff != new.var_diff),
        ("fixedDiff", old.fixed_diff != new.fixed_diff),
        ("shareTrust", old.share_trust != new.share_trust),
        ("banning", old.banning != new.banning),
        ("poolServer limits (rateLimits, sharesInFlight, caps, timeouts)", old.limits != new.limits),
        ("poolServer.maxConnections", a.max_connections != b.max_connections),
        ("poolServer.maxConnectionsPerIp", a.max_connections_per_ip != b.max_connections_per_ip),
        ("poolServer.allow", a.allow != b.allow),
        ("poolServer.deny", a.deny != b.deny),
        ("poolServer.proxyProtocol", a.proxy_protocol != b.proxy_protocol),
        ("poolServer.minerTimeout", a.miner_timeout != b.miner_timeout),
        ("poolServer TLS certificate", a.tls != b.tls),
        ("payments", old.payments != new.payments),
        ("logging.level", old.logging != new.logging),
    ];
    let mut old_unlocker = old.block_unlocker.clone();
    old_unlocker.lease_ttl = new.block_unlocker.lease_ttl;
    let unlocker = [("blockUnlocker", old_unlocker != new.block_unlocker)];
    plan.changed.extend(live.iter().chain(&unlocker).filter(|(_, changed)| *changed).map(|(name, _)| name.to_string()));
    let restart = [
        ("coin", old.coin != new.coin),
        ("symbol", old.symbol != new.symbol),
        ("poolHost", old.pool_host != new.pool_host),
        ("poolAddress", old.pool_address != new.pool_address),
        (
            "coin display settings (coinUnits, coinDecimalPlaces, coinDifficultyTarget, cn*)",
            old.coin_units != new.coin_units
                || old.coin_decimal_places != new.coin_decimal_places
                || old.coin_difficulty_target != new.coin_difficulty_target
                || old.cn_algorithm != new.cn_algorithm
                || old.cn_variant != new.cn_variant
                || old.cn_blob_type != new.cn_blob_type
                || old.is_random_x != new.is_random_x,
        ),
        ("daemon", old.daemon != new.daemon),
        ("walletApi", old.wallet_api != new.wallet_api),
        ("poolServer.enabled", a.enabled != b.enabled),
        ("poolServer.bindIp", a.bind_ip != b.bind_ip),
        ("poolServer.blockRefreshInterval", a.block_refresh_interval != b.block_refresh_interval),
        ("poolServer.templateRefreshInterval", a.template_refresh_interval != b.template_refresh_interval),
        ("poolServer.instanceId", a.instance_id != b.instance_id),
        ("poolServer.reserveSize", a.reserve_size != b.reserve_size),
        ("randomx", old.randomx != new.randomx),
        ("pplns", old.pplns != new.pplns),
        ("blockUnlocker.leaseTtl", old.block_unlocker.lease_ttl != new.block_unlocker.lease_ttl),
        ("api", old.api != new.api),
        ("redis", old.redis != new.redis),
        ("metrics", old.metrics != new.metrics),
        ("charts", old.charts != new.charts),
        ("monitoring", old.monitoring != new.monitoring),
    ];
    plan.restart.extend(restart.iter().filter(|(_, changed)| *changed).map(|(name, _)| name.to_string()));
    plan
}

/// Puts back into `new` every setting that needs a restart (the ones [`plan`] lists under
/// `restart`), so the config the running actors see stays consistent: for example the payment
/// processor's settle time keeps following the lease TTL the leader election really uses.
pub fn keep_running_values(running: &Config, new: &mut Config) {
    new.coin.clone_from(&running.coin);
    new.symbol.clone_from(&running.symbol);
    new.pool_host.clone_from(&running.pool_host);
    new.pool_address = running.pool_address;
    new.coin_units = running.coin_units;
    new.coin_decimal_places = running.coin_decimal_places;
    new.coin_difficulty_target = running.coin_difficulty_target;
    new.cn_algorithm.clone_from(&running.cn_algorithm);
    new.cn_variant = running.cn_variant;
    new.cn_blob_type = running.cn_blob_type;
    new.is_random_x = running.is_random_x;
    new.daemon = running.daemon.clone();
    new.wallet_api = running.wallet_api.clone();
    let (server, old) = (&mut new.pool_server, &running.pool_server);
    server.enabled = old.enabled;
    server.bind_ip = old.bind_ip;
    server.block_refresh_interval = old.block_refresh_interval;
    server.template_refresh_interval = old.template_refresh_interval;
    server.instance_id = old.instance_id;
    server.reserve_size = old.reserve_size;
    new.randomx = running.randomx.clone();
    new.pplns = running.pplns.clone();
    new.block_unlocker.lease_ttl = running.block_unlocker.lease_ttl;
    new.api = running.api.clone();
    new.redis = running.redis.clone();
    new.metrics = running.metrics.clone();
    new.charts = running.charts.clone();
    new.monitoring = running.monitoring.clone();
    // A listener's TLS mode is fixed by its supervisor.
    for port in &mut new.ports {
        if let Some(old) = running.ports.iter().find(|p| p.port == port.port) {
            port.tls = old.tls;
        }
    }
}

/// The stratum side a reload reaches.
struct Stratum {
    shared: Arc<StratumContext>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    distributor: Addr<JobDistributor>,
    /// The supervisors by port, kept current as ports come and go.
    ports: BTreeMap<u16, Addr<PortSupervisor>>,
}

/// The running stratum side, as started (the supervisors in `config.ports` order).
pub(crate) struct StratumParts {
    pub(crate) shared: Arc<StratumContext>,
    pub(crate) arbiters: Arc<Vec<ArbiterHandle>>,
    pub(crate) distributor: Addr<JobDistributor>,
    pub(crate) supervisors: Vec<Addr<PortSupervisor>>,
}

/// Applies reloaded configs to a running pool. One per process, driven by SIGHUP.
pub struct Reloader {
    /// The running config, shared with the API (`/stats`, `/admin_ports` describe what runs).
    current: Arc<ArcSwap<Config>>,
    stratum: Option<Stratum>,
    unlocker: Option<Addr<BlockUnlocker>>,
    payments: Option<Addr<PaymentProcessor>>,
    /// Every port supervisor (shared with the pool): ports added here are counted in the
    /// connection figures and stop accepting at shutdown.
    supervisors: PortSupervisors,
    /// The listening sockets an upgrade hands over (shared with the pool): ports added here
    /// are handed over too, removed ones are not.
    handoff: Arc<Mutex<Vec<Listener>>>,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is invalid; every line is one problem.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A port could not be opened or the TLS certificate not loaded.
    #[error("{0}")]
    Apply(String),
}

impl Reloader {
    pub(crate) fn new(
        current: Arc<ArcSwap<Config>>,
        stratum: Option<StratumParts>,
        unlocker: Option<Addr<BlockUnlocker>>,
        payments: Option<Addr<PaymentProcessor>>,
        supervisors: PortSupervisors,
        handoff: Arc<Mutex<Vec<Listener>>>,
    ) -> Reloader {
        let stratum = stratum.map(|parts| Stratum {
            shared: parts.shared,
            arbiters: parts.arbiters,
            distributor: parts.distributor,
            ports: current.load().ports.iter().map(|p| p.port).zip(parts.supervisors).collect(),
        });
        Reloader { current, stratum, unlocker, payments, supervisors, handoff }
    }

    /// Reads the config file again and applies it; logs the outcome either way.
    pub fn reload(&mut self) {
        let Some(source) = SOURCE.get() else {
            tracing::warn!("SIGHUP: reload rejected: this process was not started from a config file");
            crate::metrics::config_reload(false);
            return;
        };
        let file = source.path.display().to_string();
        tracing::info!("SIGHUP: reloading {file}");
        match self.reload_from(source) {
            Ok(plan) if plan.is_empty() => {
                crate::metrics::config_reload(true);
                tracing::info!("reload applied: {file} is unchanged");
            }
            Ok(plan) => {
                crate::metrics::config_reload(true);
                if !plan.restart.is_empty() {
                    tracing::warn!(
                        "reload: needs a restart: {} (these keep their running values)",
                        plan.restart.join(", ")
                    );
                }
                let changed =
                    if plan.changed.is_empty() { "nothing live".to_string() } else { plan.changed.join(", ") };
                tracing::info!("reload applied: {changed}");
            }
            Err(ReloadError::Invalid(errors)) => {
                crate::metrics::config_reload(false);
                for error in &errors {
                    tracing::error!("reload: {error}");
                }
                tracing::error!(
                    "reload rejected: {file} has {} error(s); the running configuration is kept",
                    errors.len()
                );
            }
            Err(ReloadError::Apply(why)) => {
                crate::metrics::config_reload(false);
                tracing::error!("reload rejected: {why}; the running configuration is kept");
            }
        }
    }

    fn reload_from(&mut self, source: &Source) -> Result<Plan, ReloadError> {
        let (new, warnings) = Config::load(&source.path).map_err(|e| {
            let mut lines: Vec<String> = e.warnings().iter().map(|w| format!("warning: {w}")).collect();
            lines.extend(e.to_string().lines().map(str::to_string));
            ReloadError::Invalid(lines)
        })?;
        for warning in &warnings {
            tracing::warn!("{}: {warning}", source.path.display());
        }
        let running = self.current.load_full();
        let mut plan = plan(&running, &new);
        let mut new = new;
        keep_running_values(&running, &mut new);
        let new = Arc::new(new);
        if let Some(stratum) = &mut self.stratum {
            // Everything that can fail comes first, so a failure leaves nothing half applied.
            let tls = if new.ports.iter().any(|p| p.tls != TlsMode::Off) {
                let hosts = std::slice::from_ref(&new.pool_host);
                let tls = crate::stratum::transport::load_tls(&new.pool_server.tls, hosts)
                    .map_err(|e| ReloadError::Apply(format!("TLS certificate: {e}")))?;
                Some(tls)
            } else {
                None
            };
            let mut listeners = Vec::new();
            for port in &plan.added {
                let listener = PortSupervisor::bind(new.pool_server.bind_ip, port.port).map_err(|e| {
                    ReloadError::Apply(format!("cannot open port {}:{}: {e}", new.pool_server.bind_ip, port.port))
                })?;
                listeners.push((port.clone(), listener));
            }
            if let Some(tls) = tls {
                stratum.shared.transport.set_tls(tls.acceptor);
            }
            stratum.shared.apply(new.clone());
            for port in &plan.updated {
                if let Some(supervisor) = stratum.ports.get(&port.port) {
                    supervisor.do_send(ApplyPort(port.clone()));
                }
            }
            for port in &plan.removed {
                if let Some(supervisor) = stratum.ports.remove(port) {
                    supervisor.do_send(RetirePort);
                }
                let mut handoff = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
                handoff.retain(|l| !(l.kind == ListenerKind::Stratum && l.port == *port));
            }
            for (port, listener) in listeners {
                let number = port.port;
                match Listener::dup(ListenerKind::Stratum, number, listener.as_fd()) {
                    Ok(dup) => self.handoff.lock().unwrap_or_else(|e| e.into_inner()).push(dup),
                    Err(e) => tracing::warn!("port {number} cannot be handed to an upgrade's new process: {e}"),
                }
                crate::metrics::register_port_series(number);
                let supervisor =
                    PortSupervisor::new(port, listener, stratum.shared.clone(), stratum.arbiters.clone()).start();
                stratum.distributor.do_send(Subscribe(supervisor.clone().recipient()));
                self.supervisors.push(supervisor.clone());
                stratum.ports.insert(number, supervisor);
            }
        } else {
            // Not running stratum here: nothing opens or closes.
            plan.changed.retain(|c| !c.starts_with("ports."));
            plan.restart.retain(|c| !c.starts_with("ports."));
            plan.added.clear();
            plan.removed.clear();
            plan.updated.clear();
        }
        if let Some(unlocker) = &self.unlocker {
            unlocker.do_send(UpdateUnlockerSettings(crate::app::unlocker_settings(&new)));
        }
        if let Some(payments) = &self.payments {
            payments.do_send(UpdatePaymentSettings(crate::app::payment_settings(&new)));
        }
        if running.logging != new.logging {
            match &source.log_level {
                Some(set) => {
                    if let Err(e) = set(&new.logging.level) {
                        tracing::warn!("reload: log level not changed: {e}");
                    }
                }
                None => tracing::warn!("reload: log level not changed: RUST_LOG is set and overrides logging.level"),
            }
        }
        self.current.store(new);
        Ok(plan)
    }
}

/// Subscribes to SIGHUP now (its default action would end the process), before the pool starts.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}): a reload signal would stop the pool");
            None
        }
    }
}

/// Reloads on every SIGHUP, one reload at a time.
pub fn spawn(mut hangups: tokio::signal::unix::Signal, mut reloader: Reloader) {
    actix::spawn(async move {
        while hangups.recv().await.is_some() {
            reloader.reload();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let base = r#"{"poolAddress": "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF", "walletApi": {"apiKey": "k"}, "ports": [{"port": 3333, "diff": 1000}, {"port": 5555, "diff": 5000}]}"#;
        let mut value: serde_json::Value = serde_json::from_str(base).unwrap();
        let patch: serde_json::Value = serde_json::from_str(text).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            value[k] = v.clone();
        }
        Config::from_json_str(&value.to_string(), "config.json").unwrap().0
    }

    #[test]
    fn an_identical_file_changes_nothing() {
        assert!(plan(&config("{}"), &config("{}")).is_empty());
    }

    #[test]
    fn port_changes_are_live_and_named() {
        let old = config("{}");
        let new = config(
            r#"{"ports": [{"port": 3333, "diff": 2000}, {"port": 7777, "diff": 9000}], "banning": {"enabled": true}}"#,
        );
        let plan = plan(&old, &new);
        assert_eq!(plan.updated.iter().map(|p| (p.port, p.diff)).collect::<Vec<_>>(), vec![(3333, 2000)]);
        assert_eq!(plan.added.iter().map(|p| p.port).collect::<Vec<_>>(), vec![7777]);
        assert_eq!(plan.removed, vec![5555]);
        assert!(plan.changed.contains(&"ports.3333.diff 1000 -> 2000".to_string()), "{:?}", plan.changed);
        assert!(plan.changed.contains(&"banning".to_string()), "{:?}", plan.changed);
        assert!(plan.restart.is_empty(), "{:?}", plan.restart);
    }

    #[test]
    fn what_needs_a_restart_keeps_its_running_value() {
        let running = config("{}");
        let text = r#"{"coin": "other", "symbol": "X", "poolHost": "h", "coinDecimalPlaces": 2,
            "daemon": {"port": 1}, "walletApi": {"port": 2, "apiKey": "other"},
            "poolServer": {"bindIp": "127.0.0.1", "blockRefreshInterval": 500, "instanceId": "01020304"},
            "randomx": {"mode": "light"}, "pplns": {"windowFactor": 3}, "blockUnlocker": {"leaseTtl": 60},
            "api": {"port": 9}, "redis": {"db": 3}, "metrics": {"port": 9100}, "monitoring": {"checkInterval": 5},
            "ports": [{"port": 3333, "diff": 1000, "tls": "on"}, {"port": 5555, "diff": 7000}],
            "varDiff": {"minDiff": 500}}"#;
        let mut new = config(text);
        assert!(!plan(&running, &new).restart.is_empty());
        keep_running_values(&running, &mut new);
        let after = plan(&running, &new);
        assert!(after.restart.is_empty(), "every restart-only setting is put back: {:?}", after.restart);
        assert_eq!(after.changed, vec!["ports.5555.diff 5000 -> 7000".to_string(), "varDiff".to_string()]);
    }

    #[test]
    fn settings_that_need_a_restart_are_named_and_the_rest_still_applies() {
        let old = config("{}");
        let new = config(r#"{"coin": "other", "redis": {"port": 6380}, "varDiff": {"minDiff": 500}}"#);
        let plan = plan(&old, &new);
        assert_eq!(plan.restart, vec!["coin".to_string(), "redis".to_string()]);
        assert_eq!(plan.changed, vec!["varDiff".to_string()]);
    }
}
