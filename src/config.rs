//! The typed pool configuration, read from `config.json`.
//!
//! Two shapes are accepted because operators arrive with either:
//! - the seed document's format: stratum settings (`ports`, `varDiff`, `poolAddress`, ...) at
//!   top level, `ports` an object keyed by port number (`{"3333": {"diff": 5000, "desc": ".."}}`);
//! - the old Node.js pool's `config.json`: the same settings inside `poolServer`, `ports` an
//!   array (`[{"port": 3333, "difficulty": 5000, "desc": ".."}]`).
//!
//! Where a setting appears in both places the top-level one wins (with a warning). Keys this
//! pool does not use produce a warning naming their JSON path, never an error, so an old config
//! keeps loading. Every invalid value is an error naming its JSON path, the value and what is
//! allowed, and loading reports all of them at once rather than stopping at the first.
//!
//! Loading runs in three steps: the text is parsed into a JSON tree (syntax errors carry
//! line:column); the tree is deserialized into lenient `Raw*` structs whose fields are all
//! optional (type errors carry the path; the offending key is dropped and deserialization
//! retried, so every type error is found); then `build` applies defaults, aliases and range
//! checks and produces [`Config`].

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::chain::params::{COIN, MAX_TX_OUTPUTS, MINED_MONEY_UNLOCK_WINDOW, MINIMUM_FEE};
use crate::chain::Address;

/// The whole pool configuration, validated; every field holds its effective value.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `coin`: the Redis key prefix (`<coin>:...`) and the coin's display name.
    pub coin: String,
    /// `symbol`: ticker shown by the API.
    pub symbol: String,
    /// `poolHost`: the host name miners connect to, shown by the API.
    pub pool_host: String,
    /// `poolAddress` (old: `poolServer.poolAddress`): the wallet block rewards are paid to.
    pub pool_address: Address,
    /// `coinUnits`: atomic units per PAS; always 100000000.
    pub coin_units: u64,
    /// `coinDecimalPlaces`: decimals the API and front end display.
    pub coin_decimal_places: u32,
    /// `coinDifficultyTarget`: block time in seconds, used for API estimates.
    pub coin_difficulty_target: u64,
    /// `cnAlgorithm`: always `"randomx"` (stored lower-case).
    pub cn_algorithm: String,
    /// `cnVariant`: reported by the API for front ends that show it.
    pub cn_variant: u32,
    /// `cnBlobType`: always 0, the CryptoNote block blob Pastella uses.
    pub cn_blob_type: u32,
    /// `isRandomX`: always true.
    pub is_random_x: bool,
    /// `daemon`: the Pastellad JSON-RPC endpoint.
    pub daemon: DaemonConfig,
    /// `walletApi`: the Pastella wallet API used for payouts.
    pub wallet_api: WalletApiConfig,
    /// `poolServer`: stratum listener settings.
    pub pool_server: PoolServerConfig,
    /// `ports` (old: `poolServer.ports`): stratum ports, sorted by port, unique, at least one.
    pub ports: Vec<PortConfig>,
    /// `varDiff` (old: `poolServer.varDiff`).
    pub var_diff: VarDiffConfig,
    /// `fixedDiff` (old: `poolServer.fixedDiff`).
    pub fixed_diff: FixedDiffConfig,
    /// `banning` (old: `poolServer.banning`).
    pub banning: BanningConfig,
    /// `shareTrust` (old: `poolServer.shareTrust`).
    pub share_trust: ShareTrustConfig,
    /// `randomx`: how shares are verified.
    pub randomx: RandomXConfig,
    /// `payments`: the payout processor.
    pub payments: PaymentsConfig,
    /// `blockUnlocker`: maturing found blocks and splitting their reward.
    pub block_unlocker: BlockUnlockerConfig,
    /// `pplns`: the payout window.
    pub pplns: PplnsConfig,
    /// `api`: the HTTP stats API.
    pub api: ApiConfig,
    /// `redis`: the store.
    pub redis: RedisConfig,
    /// `metrics`: the Prometheus exporter.
    pub metrics: MetricsConfig,
    /// `charts`: the chart series the stats collector keeps.
    pub charts: ChartsConfig,
    /// `monitoring`: daemon/wallet health recording.
    pub monitoring: MonitoringConfig,
    /// `logging`: the log filter.
    pub logging: LoggingConfig,
    /// Stratum abuse limits (`poolServer.allow`, rate limits, caps, timeouts).
    pub limits: StratumLimitsConfig,
    /// `upgrade`: the zero-downtime binary upgrade (docs/OPERATIONS.md).
    pub upgrade: UpgradeConfig,
}

/// `daemon`: where Pastellad's JSON-RPC listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// `host`, default `127.0.0.1`.
    pub host: String,
    /// `port`, default 21001 (Pastellad's RPC port).
    pub port: u16,
    /// `timeoutMs`: per-request timeout, default 5000 ms.
    pub timeout: Duration,
}

/// `walletApi`: the Pastella wallet API (REST) that sends payouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletApiConfig {
    /// `host`, default `127.0.0.1`.
    pub host: String,
    /// `port`, default 21002.
    pub port: u16,
    /// `apiKey`: sent as `X-API-KEY` (the wallet API's `--rpc-password`); required when
    /// payments are enabled.
    pub api_key: String,
    /// `walletFile`: the wallet file the API opens (or creates).
    pub wallet_file: String,
    /// `walletPassword`: that file's password.
    pub wallet_password: String,
    /// `timeoutMs` (old: `timeout`): per-request timeout, default 30000 ms; sends can be slow.
    pub timeout: Duration,
}

/// `poolServer`: the stratum listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolServerConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `bindIp`: the address every stratum port listens on, default `0.0.0.0`.
    pub bind_ip: IpAddr,
    /// `blockRefreshInterval` (ms, also top level): how often the daemon is polled for a new
    /// block, default 100 ms, 10..=60000.
    pub block_refresh_interval: Duration,
    /// `templateRefreshInterval` (s): a fresh template (new transactions, timestamp) is fetched
    /// at least this often even without a new block, default 30 s, 1..=3600.
    pub template_refresh_interval: Duration,
    /// `minerTimeout` (s, also top level): a silent miner is dropped after this, default 600 s.
    pub miner_timeout: Duration,
    /// `maxConnections`: across all ports, default 200000.
    pub max_connections: usize,
    /// `maxConnectionsPerIp`: default 10000 (farms and proxies share one IP).
    pub max_connections_per_ip: usize,
    /// `instanceId`: 4 bytes in every extra nonce that keep the work of several stratum nodes
    /// disjoint; `None` draws a random one at start.
    pub instance_id: Option<[u8; 4]>,
    /// `reserveSize`: extra-nonce bytes asked from the daemon, default 17, 16..=127 (the extra
    /// nonce and an xmr-node-proxy's two nonces).
    pub reserve_size: usize,
    /// `allow`: CIDR list (or bare IPs) of trusted farm NATs and proxies, default empty. Where an
    /// address matches both `allow` and `deny`, the more specific prefix decides.
    pub allow: Vec<IpNet>,
    /// `deny`: CIDR list (or bare IPs) refused at accept, default empty.
    pub deny: Vec<IpNet>,
    /// `proxyProtocol`: PROXY v1/v2 headers from load balancers.
    pub proxy_protocol: ProxyProtocolConfig,
    /// TLS for ports whose `tls` is `on` or `auto`.
    pub tls: TlsConfig,
}

/// `poolServer.proxyProtocol`: the PROXY protocol (v1 text, v2 binary) that HAProxy and cloud
/// load balancers prepend to each connection to pass the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocolConfig {
    /// `enabled`, default false.
    pub enabled: bool,
    /// `trusted`: CIDR list of the load balancers allowed to send a header; a header from any
    /// other address refuses the connection.
    pub trusted: Vec<IpNet>,
    /// `required`, default false: a trusted connection without a header is refused.
    pub required: bool,
    /// `timeout` (s): the header (or a client's first bytes) must arrive within this, default 5.
    pub timeout: Duration,
}

/// The stratum TLS certificate (old pool keys `poolServer.sslCert`, `sslKey`, `sslCA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `sslCert`: PEM certificate chain; with `sslKey`. Unset: a self-signed one is used.
    pub cert: Option<PathBuf>,
    /// `sslKey`: PEM private key of `sslCert`.
    pub key: Option<PathBuf>,
    /// `sslCA`: PEM intermediate certificates sent after `sslCert`.
    pub ca: Option<PathBuf>,
    /// `tlsSelfSignedDir`: where the self-signed certificate is generated on first start and
    /// kept (`cert.pem`, `key.pem`), default `tls`.
    pub self_signed_dir: PathBuf,
    /// `tlsHandshakeTimeout` (s): a TLS handshake must finish within this, default 10.
    pub handshake_timeout: Duration,
}

/// How a stratum port speaks TLS (`ports.<port>.tls`; the old `ssl: true` means `on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain TCP only (default).
    #[default]
    Off,
    /// TLS only.
    On,
    /// TLS or plain, told apart by the first byte (0x16 starts a TLS handshake).
    Auto,
}

impl TlsMode {
    /// The name used in the config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::On => "on",
            TlsMode::Auto => "auto",
        }
    }
}

/// The stratum side's defences against hostile clients (keys under `poolServer`, documented
/// with their reasons in docs/STRATUM.md).
#[derive(Debug, Clone, PartialEq)]
pub struct StratumLimitsConfig {
    /// `allow`: CIDR blocks (trusted farm NATs, proxies) exempt from per-IP and per-subnet caps
    /// and rate limits, never from share checks or bans. Default empty.
    pub allow: Vec<ipnet::IpNet>,
    /// `maxConnectionsPerSubnet`: open connections per IPv4 /24 or IPv6 /64, default 1024.
    pub max_connections_per_subnet: usize,
    /// `loginTimeout` (s): a connection without a valid login after this is closed, default 60.
    pub login_timeout: Duration,
    /// `lineTimeout` (s): a request line started but not finished within this closes the
    /// connection (slowloris), default 10.
    pub line_timeout: Duration,
    /// `sharesInFlight`: verification caps.
    pub shares_in_flight: SharesInFlightConfig,
    /// `rateLimits`: per-IP token buckets.
    pub rate_limits: RateLimitsConfig,
}

/// `poolServer.sharesInFlight`: shares waiting for or under RandomX verification at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharesInFlightConfig {
    /// `perSession`, default 32.
    pub per_session: usize,
    /// `perIp`, default 256.
    pub per_ip: usize,
}

/// One token bucket's rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// `perSecond`: refill rate, > 0.
    pub per_second: f64,
    /// `burst`: tokens saved up, >= 1.
    pub burst: u64,
}

/// `poolServer.rateLimits`: requests per IP (MoneroOcean's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitsConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `login`: 5/s, burst 100.
    pub login: RateLimitConfig,
    /// `submit`: 250/s, burst 5000.
    pub submit: RateLimitConfig,
    /// `getjob`: 5/s, burst 20.
    pub getjob: RateLimitConfig,
    /// `keepalived`: 2/s, burst 10.
    pub keepalived: RateLimitConfig,
}

impl StratumLimitsConfig {
    /// True if `ip` is in `poolServer.allow` (exempt from per-IP caps and rate limits). The
    /// running pool asks `Transport::is_allowed`, which also lets a longer `deny` prefix win;
    /// a denied address never gets as far as the caps.
    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// One stratum port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// The TCP port.
    pub port: u16,
    /// The starting difficulty (`diff`, old: `difficulty`), >= 1.
    pub diff: u64,
    /// `desc`: shown in the start-up log and by the API.
    pub desc: String,
    /// `tls`: `off` (default), `on` or `auto` (old: `ssl: true` = `on`).
    pub tls: TlsMode,
}

/// `varDiff`: per-miner difficulty retargeting (spec §8.4).
#[derive(Debug, Clone, PartialEq)]
pub struct VarDiffConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `minDiff`, default 100.
    pub min_diff: u64,
    /// `maxDiff`, default 100000000.
    pub max_diff: u64,
    /// `targetTime`: wanted seconds between a miner's shares, default 30.
    pub target_time: u64,
    /// `retargetTime`: seconds between retargets, default 15.
    pub retarget_time: u64,
    /// `variancePercent`: tolerated deviation from `targetTime`, default 30.
    pub variance_percent: f64,
    /// `maxJump`: largest change per retarget in percent, default 50.
    pub max_jump: f64,
}

/// `fixedDiff`: miners choosing their difficulty with `ADDRESS<separator>DIFF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedDiffConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `addressSeparator`: a one-character string, default `"."`.
    pub address_separator: char,
}

/// `banning`: IP bans for mostly-invalid shares (spec §8.6).
#[derive(Debug, Clone, PartialEq)]
pub struct BanningConfig {
    /// `enabled`, default false.
    pub enabled: bool,
    /// `time` (s): ban length, default 120.
    pub time: Duration,
    /// `invalidPercent`: ban when invalid/valid reaches this, default 80.
    pub invalid_percent: f64,
    /// `checkThreshold`: shares counted before judging, default 30.
    pub check_threshold: u32,
}

/// `shareTrust`: skipping verification of some shares from miners with a clean record
/// (spec §8.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareTrustConfig {
    /// `enabled`, default false.
    pub enabled: bool,
    /// `min`: lowest verification probability in percent, default 10.
    pub min: u32,
    /// `stepDown`: percent the probability falls per valid share, default 3.
    pub step_down: u32,
    /// `threshold`: valid shares before any trust, default 10.
    pub threshold: u32,
    /// `penalty`: valid shares needed again after an invalid one, default 30.
    pub penalty: u32,
}

/// How RandomX hashes are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomXMode {
    /// 2 GiB dataset, fast hashing (`"fast"`).
    Fast,
    /// 256 MiB cache only, several times slower (`"light"`): small machines and tests.
    Light,
}

/// `randomx`: the share verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomXConfig {
    /// `mode`: `"fast"` (default) or `"light"`.
    pub mode: RandomXMode,
    /// `threads`: verifier threads, 0 (default) = one per core.
    pub threads: usize,
    /// `hugePages`: ask for huge pages for the dataset, default true.
    pub huge_pages: bool,
}

/// `payments`: the payout processor (spec §8.9). Amounts are atomic units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentsConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `interval` (s): between payout runs, default 300, >= 5.
    pub interval: Duration,
    /// `maxAddresses`: recipients per transaction, default 15, 1..=89 (the wallet's 90-output
    /// cap includes the change output).
    pub max_addresses: usize,
    /// `transferFee`: the fee per transaction, default 1000 (the network minimum).
    pub transfer_fee: u64,
    /// `dynamicTransferFee`, default true.
    pub dynamic_transfer_fee: bool,
    /// `minerPayFee`: deduct the fee from the payouts, default true.
    pub miner_pay_fee: bool,
    /// `minPayment`: the default payout threshold, default 100000 (0.001 PAS).
    pub min_payment: u64,
    /// `maxPayment`: the highest threshold a miner may choose; `None` = no limit.
    pub max_payment: Option<u64>,
    /// `maxTransactionAmount`: total paid per transaction, default 10000000000 (100 PAS).
    pub max_transaction_amount: u64,
    /// `denomination`: payouts are rounded down to a multiple of this, default 1.
    pub denomination: u64,
    /// `blockedAddressesFile`: JSON list of addresses never paid, reloaded every run.
    pub blocked_addresses_file: PathBuf,
    /// `lookupRounds`: payment rounds in a row a transaction must be absent from the wallet
    /// (neither in its mempool view nor in a block, and its prepared hash unknown) before its
    /// batch counts as not sent, or a finalized one as dropped. Default 3, >= 2.
    pub lookup_rounds: u64,
    /// `holdAfter` (s): an unresolved (`unknown`) batch older than this is `held` for the
    /// operator. Default 3600, >= 1.
    pub hold_after: Duration,
}

/// `blockUnlocker`: maturing found blocks and crediting their reward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockUnlockerConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `interval` (s): between checks, default 10.
    pub interval: Duration,
    /// `depth`: confirmations before crediting, default 10, never below coinbase maturity.
    pub depth: u64,
    /// `poolFee` (percent, 2 decimals) in basis points: 1 % = 100.
    pub pool_fee_bps: u32,
    /// `finderReward` (percent) in basis points.
    pub finder_reward_bps: u32,
    /// `soloFee` (percent) in basis points; `None` = solo miners pay `poolFee`.
    pub solo_fee_bps: Option<u32>,
    /// `leaseTtl` (s): the Redis lease that lets exactly one process run the unlocker and
    /// payments; another process takes over at most this long after the holder dies. Default 15.
    pub lease_ttl: Duration,
    /// `payoutRecordDays`: how long a resolved block's window and per-address credits are kept
    /// for `/get_block_payouts` and `verify-block` (Redis TTL), default 90.
    pub payout_record_days: u64,
}

/// `pplns`: the payout window.
#[derive(Debug, Clone, PartialEq)]
pub struct PplnsConfig {
    /// `windowFactor`: the window is this many times the network difficulty, default 2.
    pub window_factor: f64,
}

/// `api`: the HTTP stats API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `bindIp`, default `0.0.0.0`.
    pub bind_ip: IpAddr,
    /// `port`, default 8117.
    pub port: u16,
    /// `hashrateWindow` (s): shares counted for hashrates, default 600.
    pub hashrate_window: Duration,
    /// `updateInterval` (s): stats recomputation period, default 5.
    pub update_interval: Duration,
    /// `blocks`: matured blocks listed in `/stats`, default 30.
    pub blocks: usize,
    /// `payments`: payments listed in `/stats`, default 30.
    pub payments: usize,
    /// `password`: for the admin routes; empty = admin routes refused (unless
    /// `passwordlessLoopbackAdmin`).
    pub password: String,
    /// `trustProxyIP`: take the client IP from `X-Forwarded-For`, default false.
    pub trust_proxy_ip: bool,
    /// `maxPayoutLevel` (atomic units): the highest payout level `/set_miner_payout_level`
    /// accepts, default 1000 x `payments.minPayment` (and never above `payments.maxPayment`).
    pub max_payout_level: u64,
    /// `payoutLevelIpAge` (s): `/set_miner_payout_level` is accepted only from an IP that
    /// logged in to mine for the address within this time, default 86400, at least 7200 (long
    /// sessions renew the record hourly).
    pub payout_level_ip_age: Duration,
    /// `payoutLevelPerHour`: `/set_miner_payout_level` requests allowed per client IP per hour
    /// (refused ones count too), default 10.
    pub payout_level_per_hour: u64,
    /// `passwordlessLoopbackAdmin`: admin routes answer a loopback request without a password
    /// (the old pool's rule), default false: a reverse proxy on the same host makes every
    /// visitor look local, so only an operator with no proxy in front should opt in.
    pub passwordless_loopback_admin: bool,
}

/// `redis`: the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `host`, default `127.0.0.1`.
    pub host: String,
    /// `port`, default 6379.
    pub port: u16,
    /// `db`: the database number, default 0.
    pub db: i64,
    /// `password` (old: `auth`); `None` or empty = no AUTH.
    pub password: Option<String>,
    /// `allowEviction`: run the unlocker and payments even when Redis's `maxmemory-policy` may
    /// evict keys (anything but `noeviction`), default false: evicted balances are lost money.
    pub allow_eviction: bool,
    /// `sentinels`: `"host:port"` of Redis Sentinels; when set, the master is found (and found
    /// again after a failover) through them and `host`/`port` are not used. Default empty.
    pub sentinels: Vec<String>,
    /// `masterName`: the master's name in the sentinels' configuration, default `mymaster`.
    pub master_name: String,
    /// `waitReplicas`: replicas that must acknowledge each money write and share flush (`WAIT`)
    /// before it counts as done, default 0 (off, for a single Redis); 1 with Sentinel.
    pub wait_replicas: u32,
    /// `waitTimeoutMs`: how long a `WAIT` may take before the step fails (and is retried),
    /// default 2000 ms.
    pub wait_timeout: Duration,
}

/// `metrics`: the Prometheus exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `bindIp` of the separate listener, default `127.0.0.1`.
    pub bind_ip: IpAddr,
    /// `port`: a separate listener; `None` = served at `/metrics` on the API port.
    pub port: Option<u16>,
}

/// One chart series (spec §8.10); JSON keys `enabled`, `updateInterval`, `stepInterval`,
/// `maximumPeriod`, all in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartSeries {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `updateInterval`: how often a value is sampled.
    pub update_interval: Duration,
    /// `stepInterval`: samples within one step are merged into one point.
    pub step_interval: Duration,
    /// `maximumPeriod`: older points are dropped.
    pub maximum_period: Duration,
}

/// `charts.pool`: pool-wide series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCharts {
    /// `hashrate`, default 60/1800/86400 s.
    pub hashrate: ChartSeries,
    /// `miners`, default 60/1800/86400 s.
    pub miners: ChartSeries,
    /// `workers`, default 60/1800/86400 s.
    pub workers: ChartSeries,
    /// `difficulty`, default 1800/10800/604800 s.
    pub difficulty: ChartSeries,
}

/// `charts.user`: per-miner series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCharts {
    /// `hashrate`, default 180/1800/86400 s.
    pub hashrate: ChartSeries,
    /// `workerHashrate` (old: `worker_hashrate`), default 60/60/86400 s.
    pub worker_hashrate: ChartSeries,
    /// `payments.enabled`: the per-miner payments chart, default true.
    pub payments_enabled: bool,
}

/// `charts.blocks`: the blocks-per-day chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCharts {
    /// `enabled`, default true.
    pub enabled: bool,
    /// `days`: how many days it covers, default 30.
    pub days: u32,
}

/// `charts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartsConfig {
    /// `charts.pool`.
    pub pool: PoolCharts,
    /// `charts.user`.
    pub user: UserCharts,
    /// `charts.blocks`.
    pub blocks: BlockCharts,
}

/// `monitoring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringConfig {
    /// `checkInterval` (s; old: `monitoring.daemon.checkInterval`): how often daemon and wallet
    /// status is recorded, default 60.
    pub check_interval: Duration,
}

/// `logging`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `level` (old: `logging.console.level`): a tracing `EnvFilter` directive such as `info`
    /// or `info,pastella_pool::stratum=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

/// `upgrade`: how `pastella-pool upgrade` hands the listening sockets to a new process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// `socket`: the unix control socket the running pool listens on, default
    /// `pastella-pool.sock` (relative paths are relative to the working directory).
    pub socket: PathBuf,
    /// `drainSeconds`: over how long the old process closes its miners, default 60.
    pub drain: Duration,
    /// `binary`: the executable to start as the new process; default: the path this process
    /// was started from (the file an upgrade replaced).
    pub binary: Option<PathBuf>,
}

/// A part of the pool that `run --module` can start on its own, so one machine can run only
/// stratum and another the unlocker and payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    /// The stratum ports, share verification and block submission.
    Stratum,
    /// The block unlocker.
    Unlocker,
    /// The payment processor.
    Payments,
    /// The HTTP API (and `/metrics` when it shares the API port).
    Api,
}

impl Module {
    /// Every module, in start-up order.
    pub fn all() -> Vec<Module> {
        vec![Module::Stratum, Module::Unlocker, Module::Payments, Module::Api]
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Module::Stratum => "stratum",
            Module::Unlocker => "unlocker",
            Module::Payments => "payments",
            Module::Api => "api",
        }
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One invalid value: where it is in the JSON and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON path as written in the file, e.g. `ports.3333.diff` or `poolServer.ports[0].port`.
    pub path: String,
    /// What is wrong, starting with a verb: `must be >= 1, got 0`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.message)
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        /// The file as named by the caller.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{file}:{line}:{column}: invalid JSON: {message}")]
    Syntax {
        /// The file as named by the caller.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// The JSON was read but values are missing, mistyped or out of range; one line per error.
    #[error("{}", render_field_errors(.file, .errors))]
    Invalid {
        /// The file as named by the caller.
        file: String,
        /// Every problem found: type errors first, then the range checks in file order.
        errors: Vec<FieldError>,
        /// The warnings a valid file would have had; an unknown key often explains an error
        /// (a misspelt `poolAdress` next to "poolAddress is required").
        warnings: Vec<String>,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. } | ConfigError::Syntax { file, .. } | ConfigError::Invalid { file, .. } => {
                file
            }
        }
    }

    /// The invalid values (empty for read and syntax errors).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }

    /// Warnings found before the file was rejected (empty for read and syntax errors).
    pub fn warnings(&self) -> &[String] {
        match self {
            ConfigError::Invalid { warnings, .. } => warnings,
            _ => &[],
        }
    }
}

fn render_field_errors(file: &str, errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("{file}: {e}")).collect();
    lines.join("\n")
}

impl Config {
    /// Reads, parses and validates a config file; on success also returns the warnings
    /// (unknown keys, overridden aliases) the operator should see.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::from_json_str(&text, &file)
    }

    /// Parses and validates config text; `file_label` prefixes every error line.
    pub fn from_json_str(text: &str, file_label: &str) -> Result<(Config, Vec<String>), ConfigError> {
        let file = file_label.to_string();
        let value: Value = serde_json::from_str(text).map_err(|e| syntax_error(&file, &e))?;
        let mut check = Check::default();
        let mut warnings = Vec::new();
        if !value.is_object() {
            // serde would read a struct from an array by position; a config never is one.
            check.fail("(document)", format!("must be a JSON object {{...}}, got {}", json_kind(&value)));
            return Err(ConfigError::Invalid { file, errors: check.errors, warnings });
        }
        let config = match deserialize_raw(value, &mut check) {
            Some((raw, unknown)) => {
                warnings.extend(unknown.into_iter().map(|path| format!("unknown key \"{path}\" ignored")));
                build(raw, &mut check, &mut warnings)
            }
            None => None,
        };
        match config {
            Some(config) if check.errors.is_empty() => Ok((config, warnings)),
            _ => Err(ConfigError::Invalid { file, errors: check.errors, warnings }),
        }
    }

    /// The Redis key prefix (`coin`); every key is `<prefix>:...`.
    pub fn redis_prefix(&self) -> &str {
        &self.coin
    }

    /// The effective configuration as readable lines, secrets masked, for `check-config` and
    /// the start-up log.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> fmt::Result {
        let c = self;
        writeln!(
            out,
            "coin:          {} ({}), Redis prefix \"{}:\", {} units/coin, {} decimals, {} s blocks, {} variant {} blob type {}",
            c.coin,
            c.symbol,
            c.redis_prefix(),
            c.coin_units,
            c.coin_decimal_places,
            c.coin_difficulty_target,
            c.cn_algorithm,
            c.cn_variant,
            c.cn_blob_type
        )?;
        writeln!(out, "pool:          host {}, address {}", c.pool_host, c.pool_address)?;
        writeln!(
            out,
            "daemon:        http://{}:{} (timeout {} ms)",
            c.daemon.host,
            c.daemon.port,
            c.daemon.timeout.as_millis()
        )?;
        let w = &c.wallet_api;
        writeln!(
            out,
            "walletApi:     http://{}:{} (timeout {} ms), apiKey {}, walletFile {:?}, walletPassword {}",
            w.host,
            w.port,
            w.timeout.as_millis(),
            mask(&w.api_key),
            w.wallet_file,
            mask(&w.wallet_password)
        )?;
        let s = &c.pool_server;
        writeln!(
            out,
            "poolServer:    {}, bind {}, block poll {} ms, template refresh {} s, miner timeout {} s, max connections {} ({} per IP), reserve {} bytes, instance id {}",
            on_off(s.enabled),
            s.bind_ip,
            s.block_refresh_interval.as_millis(),
            s.template_refresh_interval.as_secs(),
            s.miner_timeout.as_secs(),
            s.max_connections,
            s.max_connections_per_ip,
            s.reserve_size,
            s.instance_id.map_or_else(|| "random".to_string(), hex::encode)
        )?;
        for p in &c.ports {
            writeln!(out, "  port {}:    diff {}, {:?}, TLS {}", p.port, p.diff, p.desc, p.tls.as_str())?;
        }
        let v = &c.var_diff;
        writeln!(
            out,
            "varDiff:       {}, diff {}..{}, target {} s, retarget {} s, variance {} %, max jump {} %",
            on_off(v.enabled),
            v.min_diff,
            v.max_diff,
            v.target_time,
            v.retarget_time,
            v.variance_percent,
            v.max_jump
        )?;
        writeln!(
            out,
            "fixedDiff:     {}, separator {:?}",
            on_off(c.fixed_diff.enabled),
            c.fixed_diff.address_separator.to_string()
        )?;
        let b = &c.banning;
        writeln!(
            out,
            "banning:       {}, {} s ban at >= {} % invalid, judged every {} shares",
            on_off(b.enabled),
            b.time.as_secs(),
            b.invalid_percent,
            b.check_threshold
        )?;
        let t = &c.share_trust;
        writeln!(
            out,
            "shareTrust:    {}, min {} %, step down {} %, threshold {}, penalty {}",
            on_off(t.enabled),
            t.min,
            t.step_down,
            t.threshold,
            t.penalty
        )?;
        let r = &c.randomx;
        writeln!(
            out,
            "randomx:       {} mode, {} threads, huge pages {}",
            match r.mode {
                RandomXMode::Fast => "fast",
                RandomXMode::Light => "light",
            },
            if r.threads == 0 { "all-cores".to_string() } else { r.threads.to_string() },
            on_off(r.huge_pages)
        )?;
        let p = &c.payments;
        writeln!(
            out,
            "payments:      {}, every {} s, <= {} addresses and {} per tx, fee {} (dynamic {}, miner pays {}), min {}, max {}, denomination {}, blocked list {:?}, lookup rounds {}, hold after {} s",
            on_off(p.enabled),
            p.interval.as_secs(),
            p.max_addresses,
            pas(p.max_transaction_amount),
            pas(p.transfer_fee),
            on_off(p.dynamic_transfer_fee),
            on_off(p.miner_pay_fee),
            pas(p.min_payment),
            p.max_payment.map_or_else(|| "none".to_string(), pas),
            pas(p.denomination),
            p.blocked_addresses_file,
            p.lookup_rounds,
            p.hold_after.as_secs()
        )?;
        let u = &c.block_unlocker;
        writeln!(
            out,
            "blockUnlocker: {}, every {} s, depth {}, pool fee {}, finder reward {}, solo fee {}, leader lease {} s, payout records kept {} days",
            on_off(u.enabled),
            u.interval.as_secs(),
            u.depth,
            percent(u.pool_fee_bps),
            percent(u.finder_reward_bps),
            u.solo_fee_bps.map_or_else(|| "same as pool fee".to_string(), percent),
            u.lease_ttl.as_secs(),
            u.payout_record_days
        )?;
        writeln!(out, "pplns:         window {} x network difficulty", c.pplns.window_factor)?;
        let a = &c.api;
        writeln!(
            out,
            "api:           {}, {}:{}, hashrate window {} s, update every {} s, {} blocks, {} payments, password {}, trust proxy IP {}, payout level <= {}, from IPs seen within {} s, {} changes/h per IP",
            on_off(a.enabled),
            a.bind_ip,
            a.port,
            a.hashrate_window.as_secs(),
            a.update_interval.as_secs(),
            a.blocks,
            a.payments,
            mask(&a.password),
            on_off(a.trust_proxy_ip),
            pas(a.max_payout_level),
            a.payout_level_ip_age.as_secs(),
            a.payout_level_per_hour
        )?;
        writeln!(
            out,
            "redis:         {}:{} db {}, password {}",
            c.redis.host,
            c.redis.port,
            c.redis.db,
            c.redis.password.as_deref().map_or("(none)", mask)
        )?;
        if !c.redis.sentinels.is_empty() {
            writeln!(
                out,
                "redis HA:      master \"{}\" via sentinels {}; WAIT {} replica(s), {} ms",
                c.redis.master_name,
                c.redis.sentinels.join(", "),
                c.redis.wait_replicas,
                c.redis.wait_timeout.as_millis()
            )?;
        }
        let m = &c.metrics;
        match m.port {
            Some(port) => writeln!(out, "metrics:       {}, {}:{}/metrics", on_off(m.enabled), m.bind_ip, port)?,
            None => writeln!(out, "metrics:       {}, /metrics on the API port", on_off(m.enabled))?,
        }
        let u = &c.upgrade;
        writeln!(out, "upgrade:       control socket {}, drain {} s", u.socket.display(), u.drain.as_secs())?;
        let ch = &c.charts;
        for (name, series) in [
            ("pool.hashrate", &ch.pool.hashrate),
            ("pool.miners", &ch.pool.miners),
            ("pool.workers", &ch.pool.workers),
            ("pool.difficulty", &ch.pool.difficulty),
            ("user.hashrate", &ch.user.hashrate),
            ("user.workerHashrate", &ch.user.worker_hashrate),
        ] {
            writeln!(
                out,
                "charts.{name}: {}, update {} s, step {} s, keep {} s",
                on_off(series.enabled),
                series.update_interval.as_secs(),
                series.step_interval.as_secs(),
                series.maximum_period.as_secs()
            )?;
        }
        writeln!(
            out,
            "charts:        user payments {}, blocks {} ({} days)",
            on_off(ch.user.payments_enabled),
            on_off(ch.blocks.enabled),
            ch.blocks.days
        )?;
        writeln!(out, "monitoring:    every {} s", c.monitoring.check_interval.as_secs())?;
        write!(out, "logging:       {}", c.logging.level)
    }
}

impl RedisConfig {
    /// `redis://[:password@]host:port/db`. The password is percent-encoded (every byte but
    /// `A-Z a-z 0-9 - . _ ~`) so any password survives URL parsing; an IPv6 host is bracketed.
    /// Contains the password: never log it.
    pub fn url(&self) -> String {
        let auth = match self.password.as_deref() {
            Some(p) if !p.is_empty() => format!(":{}@", percent_encode(p)),
            _ => String::new(),
        };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{}", self.port, self.db)
    }

    /// Where the store connects: this Redis, or the master the sentinels name, and how many
    /// replicas must acknowledge money writes.
    pub fn target(&self) -> crate::store::RedisTarget {
        crate::store::RedisTarget {
            url: self.url(),
            sentinels: self.sentinels.clone(),
            master_name: self.master_name.clone(),
            wait: crate::store::ReplicaWait { replicas: self.wait_replicas, timeout: self.wait_timeout },
        }
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn mask(secret: &str) -> &'static str {
    if secret.is_empty() {
        "(empty)"
    } else {
        "****"
    }
}

fn on_off(enabled: bool) -> &'static str {
    if enabled {
        "on"
    } else {
        "off"
    }
}

/// Atomic units as written in the config, with the PAS value beside them.
fn pas(atomic: u64) -> String {
    let whole = atomic / COIN;
    let frac = atomic % COIN;
    if frac == 0 {
        format!("{atomic} ({whole} PAS)")
    } else {
        let digits = format!("{frac:08}");
        format!("{atomic} ({whole}.{} PAS)", digits.trim_end_matches('0'))
    }
}

fn percent(bps: u32) -> String {
    format!("{}.{:02} %", bps / 100, bps % 100)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn syntax_error(file: &str, error: &serde_json::Error) -> ConfigError {
    // serde_json appends " at line L column C"; line and column get their own fields.
    let text = error.to_string();
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    ConfigError::Syntax { file: file.to_string(), line: error.line(), column: error.column(), message }
}

// ---------------------------------------------------------------------------------------------
// Step 2: lenient deserialization. Every field is optional so that a missing key means
// "default", `null` too (the old pool writes `"auth": null`), and unknown keys are reported by
// serde_ignored instead of rejected.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawConfig {
    coin: Option<String>,
    symbol: Option<String>,
    pool_host: Option<String>,
    pool_address: Option<String>,
    coin_units: Option<u64>,
    coin_decimal_places: Option<u32>,
    coin_difficulty_target: Option<u64>,
    cn_algorithm: Option<String>,
    cn_variant: Option<u32>,
    cn_blob_type: Option<u32>,
    is_random_x: Option<bool>,
    daemon: Option<RawDaemon>,
    wallet_api: Option<RawWalletApi>,
    pool_server: Option<RawPoolServer>,
    ports: Option<RawPorts>,
    var_diff: Option<RawVarDiff>,
    fixed_diff: Option<RawFixedDiff>,
    banning: Option<RawBanning>,
    share_trust: Option<RawShareTrust>,
    block_refresh_interval: Option<u64>,
    miner_timeout: Option<u64>,
    randomx: Option<RawRandomX>,
    payments: Option<RawPayments>,
    block_unlocker: Option<RawBlockUnlocker>,
    pplns: Option<RawPplns>,
    api: Option<RawApi>,
    redis: Option<RawRedis>,
    metrics: Option<RawMetrics>,
    charts: Option<RawCharts>,
    monitoring: Option<RawMonitoring>,
    logging: Option<RawLogging>,
    upgrade: Option<RawUpgrade>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawDaemon {
    host: Option<String>,
    port: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawWalletApi {
    host: Option<String>,
    port: Option<u64>,
    api_key: Option<String>,
    wallet_file: Option<String>,
    wallet_password: Option<String>,
    timeout_ms: Option<u64>,
    /// The old pool's spelling of `timeoutMs` (also milliseconds).
    timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawPoolServer {
    enabled: Option<bool>,
    bind_ip: Option<String>,
    block_refresh_interval: Option<u64>,
    template_refresh_interval: Option<u64>,
    miner_timeout: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_ip: Option<u64>,
    instance_id: Option<String>,
    reserve_size: Option<u64>,
    pool_address: Option<String>,
    ports: Option<RawPorts>,
    var_diff: Option<RawVarDiff>,
    fixed_diff: Option<RawFixedDiff>,
    banning: Option<RawBanning>,
    share_trust: Option<RawShareTrust>,
    allow: Option<Vec<String>>,
    max_connections_per_subnet: Option<u64>,
    login_timeout: Option<u64>,
    line_timeout: Option<u64>,
    shares_in_flight: Option<RawSharesInFlight>,
    rate_limits: Option<RawRateLimits>,
    deny: Option<Vec<String>>,
    proxy_protocol: Option<RawProxyProtocol>,
    ssl_cert: Option<String>,
    ssl_key: Option<String>,
    #[serde(rename = "sslCA")]
    ssl_ca: Option<String>,
    tls_self_signed_dir: Option<String>,
    tls_handshake_timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawSharesInFlight {
    per_session: Option<u64>,
    per_ip: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawRateLimits {
    enabled: Option<bool>,
    login: Option<RawRateLimit>,
    submit: Option<RawRateLimit>,
    getjob: Option<RawRateLimit>,
    keepalived: Option<RawRateLimit>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawRateLimit {
    per_second: Option<f64>,
    burst: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawProxyProtocol {
    enabled: Option<bool>,
    trusted: Option<Vec<String>>,
    required: Option<bool>,
    timeout: Option<u64>,
}

/// `ports` in either shape; a visitor rather than an untagged enum so that errors inside an
/// entry keep their path.
enum RawPorts {
    /// Seed format: `{"3333": {...}}`, keys kept as text to report bad ones by path.
    Object(Vec<(String, RawPort)>),
    /// Old pool: `[{"port": 3333, ...}]`.
    List(Vec<RawPort>),
}

impl<'de> Deserialize<'de> for RawPorts {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortsVisitor;
        impl<'de> Visitor<'de> for PortsVisitor {
            type Value = RawPorts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object keyed by port number or an array of {\"port\", \"difficulty\", \"desc\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPorts, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawPort>()? {
                    entries.push(entry);
                }
                Ok(RawPorts::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawPorts, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<RawPort>()? {
                    entries.push(entry);
                }
                Ok(RawPorts::List(entries))
            }
        }
        deserializer.deserialize_any(PortsVisitor)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawPort {
    port: Option<u64>,
    diff: Option<u64>,
    /// The old pool's spelling of `diff`.
    difficulty: Option<u64>,
    desc: Option<String>,
    tls: Option<String>,
    /// The old pool's TLS switch (`true` = `tls: "on"`).
    ssl: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawVarDiff {
    enabled: Option<bool>,
    min_diff: Option<u64>,
    max_diff: Option<u64>,
    target_time: Option<u64>,
    retarget_time: Option<u64>,
    variance_percent: Option<f64>,
    max_jump: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawFixedDiff {
    enabled: Option<bool>,
    address_separator: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawBanning {
    enabled: Option<bool>,
    time: Option<u64>,
    invalid_percent: Option<f64>,
    check_threshold: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawShareTrust {
    enabled: Option<bool>,
    min: Option<u32>,
    step_down: Option<u32>,
    threshold: Option<u32>,
    penalty: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawRandomX {
    mode: Option<String>,
    threads: Option<u64>,
    huge_pages: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawPayments {
    enabled: Option<bool>,
    interval: Option<u64>,
    max_addresses: Option<u64>,
    transfer_fee: Option<u64>,
    dynamic_transfer_fee: Option<bool>,
    miner_pay_fee: Option<bool>,
    min_payment: Option<u64>,
    max_payment: Option<u64>,
    max_transaction_amount: Option<u64>,
    denomination: Option<u64>,
    blocked_addresses_file: Option<String>,
    lookup_rounds: Option<u64>,
    hold_after: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawBlockUnlocker {
    enabled: Option<bool>,
    interval: Option<u64>,
    depth: Option<u64>,
    pool_fee: Option<f64>,
    finder_reward: Option<f64>,
    solo_fee: Option<f64>,
    dev_donation: Option<f64>,
    network_fee: Option<f64>,
    lease_ttl: Option<u64>,
    payout_record_days: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawPplns {
    window_factor: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawApi {
    enabled: Option<bool>,
    bind_ip: Option<String>,
    port: Option<u64>,
    hashrate_window: Option<u64>,
    update_interval: Option<u64>,
    blocks: Option<u64>,
    payments: Option<u64>,
    password: Option<String>,
    #[serde(rename = "trustProxyIP", alias = "trustProxyIp")]
    trust_proxy_ip: Option<bool>,
    max_payout_level: Option<u64>,
    payout_level_ip_age: Option<u64>,
    payout_level_per_hour: Option<u64>,
    passwordless_loopback_admin: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawRedis {
    host: Option<String>,
    port: Option<u64>,
    db: Option<i64>,
    password: Option<String>,
    /// The old pool's spelling of `password`.
    auth: Option<String>,
    allow_eviction: Option<bool>,
    sentinels: Option<Vec<String>>,
    master_name: Option<String>,
    wait_replicas: Option<u64>,
    wait_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawMetrics {
    enabled: Option<bool>,
    bind_ip: Option<String>,
    port: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawCharts {
    pool: Option<RawPoolCharts>,
    user: Option<RawUserCharts>,
    blocks: Option<RawBlockCharts>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawPoolCharts {
    hashrate: Option<RawSeries>,
    miners: Option<RawSeries>,
    workers: Option<RawSeries>,
    difficulty: Option<RawSeries>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawUserCharts {
    hashrate: Option<RawSeries>,
    worker_hashrate: Option<RawSeries>,
    /// The old pool's spelling of `workerHashrate`.
    #[serde(rename = "worker_hashrate")]
    worker_hashrate_old: Option<RawSeries>,
    payments: Option<RawToggle>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawSeries {
    enabled: Option<bool>,
    update_interval: Option<u64>,
    step_interval: Option<u64>,
    maximum_period: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawToggle {
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawBlockCharts {
    enabled: Option<bool>,
    days: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawMonitoring {
    check_interval: Option<u64>,
    /// Old pool: `monitoring.daemon.checkInterval`.
    daemon: Option<RawCheck>,
    /// Old pool: `monitoring.wallet.checkInterval`.
    wallet: Option<RawCheck>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawCheck {
    check_interval: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawUpgrade {
    socket: Option<String>,
    drain_seconds: Option<u64>,
    binary: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawLogging {
    level: Option<String>,
    /// Old pool: `logging.console.level`.
    console: Option<RawConsoleLogging>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawConsoleLogging {
    level: Option<String>,
}

/// Deserializes the tree, recording each type error and dropping the offending value so the
/// next attempt finds the next one. Returns `None` when a type error cannot be removed: then
/// nothing more can be checked.
fn deserialize_raw(mut value: Value, check: &mut Check) -> Option<(RawConfig, Vec<String>)> {
    // Every round deletes a member or blanks an array element; a path failing twice means the
    // blanking did not help, which ends the loop.
    let mut failed: Vec<String> = Vec::new();
    loop {
        let mut unknown = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        let result: Result<RawConfig, _> =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&value, &mut on_unknown));
        let error = match result {
            Ok(raw) => return Some((raw, unknown)),
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let path = render_path(&segments);
        let shown = if path.is_empty() { "(document)" } else { &path };
        check.fail(shown, format!("has the wrong type: {}", tidy_serde_message(&error.inner().to_string())));
        if failed.contains(&path) || !drop_value(&mut value, &segments) {
            return None;
        }
        failed.push(path);
    }
}

fn render_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => join(&ignored_path(parent), key),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Removes the value at `segments`: an object member is deleted (so the default applies), an
/// array element becomes `{}` (so later indices keep their meaning). False if not found.
fn drop_value(root: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = root;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key),
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(map)) => map.shift_remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
            Some(item) => {
                *item = Value::Object(serde_json::Map::new());
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// serde names Rust types in its messages; the operator needs JSON words.
fn tidy_serde_message(message: &str) -> String {
    const WORDS: [(&str, &str); 7] = [
        ("expected u64", "expected a whole number >= 0"),
        ("expected u32", "expected a whole number >= 0"),
        ("expected u16", "expected a whole number >= 0"),
        ("expected usize", "expected a whole number >= 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ];
    let mut out = message.to_string();
    if let Some(i) = out.find("expected struct ") {
        let rest = &out[i + "expected struct ".len()..];
        let end = rest.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap_or(rest.len());
        out = format!("{}expected an object{}", &out[..i], &rest[end..]);
    }
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Step 3: defaults, aliases and range checks.

/// Collects field errors; the first error for a path wins, and errors below a path that
/// already failed (a section with the wrong type) are dropped as consequences.
#[derive(Default)]
struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        let covered = self.errors.iter().any(|e| {
            path == e.path
                || path.strip_prefix(e.path.as_str()).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        });
        if !covered {
            self.errors.push(FieldError { path: path.to_string(), message: message.into() });
        }
    }

    fn at_least<T: PartialOrd + fmt::Display + Copy>(&mut self, path: &str, value: T, min: T) -> T {
        if value < min {
            self.fail(path, format!("must be >= {min}, got {value}"));
        }
        value
    }

    fn between<T: PartialOrd + fmt::Display + Copy>(&mut self, path: &str, value: T, lo: T, hi: T) -> T {
        if value < lo || value > hi {
            self.fail(path, format!("must be between {lo} and {hi}, got {value}"));
        }
        value
    }

    fn port(&mut self, path: &str, value: u64) -> u16 {
        match u16::try_from(value) {
            Ok(port) if port != 0 => port,
            _ => {
                self.fail(path, format!("must be a TCP port (1 to 65535), got {value}"));
                0
            }
        }
    }

    fn usize(&mut self, path: &str, value: u64) -> usize {
        usize::try_from(value).unwrap_or_else(|_| {
            self.fail(path, format!("is too large, got {value}"));
            0
        })
    }

    fn ip(&mut self, path: &str, text: Option<String>, default: IpAddr) -> IpAddr {
        match text {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.fail(
                    path,
                    format!("must be an IP address such as \"0.0.0.0\", \"127.0.0.1\" or \"::\", got {text:?}"),
                );
                default
            }),
        }
    }

    /// A list of CIDR networks; a bare address is its single-host network.
    fn cidrs(&mut self, path: &str, list: Option<Vec<String>>) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (index, text) in list.unwrap_or_default().into_iter().enumerate() {
            let parsed = text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => self.fail(
                    &format!("{path}[{index}]"),
                    format!("must be a CIDR network such as \"10.0.0.0/8\" or an IP address, got {text:?}"),
                ),
            }
        }
        nets
    }

    fn host(&mut self, path: &str, text: Option<String>) -> String {
        let host = text.unwrap_or_else(|| "127.0.0.1".to_string());
        if host.trim().is_empty() {
            self.fail(path, "must be a host name or IP address, got \"\"");
        }
        host
    }

    /// `redis.sentinels`: each entry `host:port` (IPv6 as `[::1]:26379`).
    fn sentinels(&mut self, path: &str, entries: Vec<String>) -> Vec<String> {
        for (i, entry) in entries.iter().enumerate() {
            let port = entry.rsplit_once(':').and_then(|(host, port)| {
                (!host.trim().is_empty()).then(|| port.parse::<u16>().ok()).flatten().filter(|p| *p != 0)
            });
            if port.is_none() {
                self.fail(
                    &format!("{path}[{i}]"),
                    format!("must be \"host:port\" such as \"10.0.0.5:26379\", got {entry:?}"),
                );
            }
        }
        entries
    }

    /// `redis.masterName`: a Sentinel master name (no spaces).
    fn master_name(&mut self, path: &str, name: Option<String>) -> String {
        let name = name.unwrap_or_else(|| "mymaster".to_string());
        if name.is_empty() || name.contains(char::is_whitespace) {
            self.fail(path, format!("must be the master's name from sentinel.conf (no spaces), got {name:?}"));
        }
        name
    }

    /// A percentage with at most two decimals as basis points (1 % = 100).
    fn percent_bps(&mut self, path: &str, value: f64) -> u32 {
        if !(0.0..=100.0).contains(&value) {
            self.fail(path, format!("must be between 0 and 100 (percent), got {value}"));
            return 0;
        }
        let scaled = value * 100.0;
        let bps = scaled.round();
        // Money math is integer basis points; refuse rather than silently round 1.234 %.
        if (scaled - bps).abs() > 1e-6 {
            self.fail(path, format!("must have at most 2 decimal places (percent), got {value}"));
        }
        bps as u32
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Resolves a setting that may be written at top level (seed format) or inside `poolServer`
/// (old pool): the top-level one wins. Returns the value and the path it came from.
fn prefer<T>(
    top: Option<T>,
    top_path: &str,
    old: Option<T>,
    old_path: &str,
    warnings: &mut Vec<String>,
) -> Option<(T, String)> {
    match (top, old) {
        (Some(top), Some(_)) => {
            warnings.push(format!("\"{old_path}\" ignored: \"{top_path}\" is also set and takes precedence"));
            Some((top, top_path.to_string()))
        }
        (Some(top), None) => Some((top, top_path.to_string())),
        (None, Some(old)) => Some((old, old_path.to_string())),
        (None, None) => None,
    }
}

/// Like [`prefer`], falling back to the default under the top-level path.
fn prefer_or_default<T: Default>(
    top: Option<T>,
    top_path: &str,
    old: Option<T>,
    old_path: &str,
    warnings: &mut Vec<String>,
) -> (T, String) {
    prefer(top, top_path, old, old_path, warnings).unwrap_or_else(|| (T::default(), top_path.to_string()))
}

/// Builds the typed config. Returns `None` only when something required is missing; range
/// errors are in `check` (the caller rejects the config if there are any).
fn build(raw: RawConfig, check: &mut Check, warnings: &mut Vec<String>) -> Option<Config> {
    let coin = raw.coin.unwrap_or_else(|| "pastella".to_string());
    if coin.is_empty() || coin.chars().any(|c| c.is_whitespace() || matches!(c, ':' | '*' | '?' | '[' | ']')) {
        check.fail(
            "coin",
            format!(
                "must be a name without spaces, ':' or glob characters (it prefixes every Redis key), got {coin:?}"
            ),
        );
    }
    let symbol = raw.symbol.unwrap_or_else(|| "PAS".to_string());
    let pool_host = raw.pool_host.unwrap_or_else(|| "127.0.0.1".to_string());
    if pool_host.trim().is_empty() {
        check.fail("poolHost", "must be the host name miners connect to, got \"\"");
    }

    let mut server = raw.pool_server.unwrap_or_default();
    let limits = build_limits(&mut server, check);
    let pool_address =
        match prefer(raw.pool_address, "poolAddress", server.pool_address, "poolServer.poolAddress", warnings) {
            None => {
                check.fail("poolAddress", "is required: the pool wallet's PAS1... address that block rewards pay");
                None
            }
            Some((text, path)) => match Address::parse(&text) {
                Ok(address) => Some(address),
                Err(e) => {
                    check.fail(&path, format!("is not a valid Pastella address ({text:?}): {e}"));
                    None
                }
            },
        };

    let coin_units = raw.coin_units.unwrap_or(COIN);
    if coin_units != COIN {
        check.fail("coinUnits", format!("must be {COIN} (Pastella amounts have 8 decimals), got {coin_units}"));
    }
    let coin_difficulty_target = check.at_least("coinDifficultyTarget", raw.coin_difficulty_target.unwrap_or(30), 1);
    let cn_algorithm = raw.cn_algorithm.unwrap_or_else(|| "randomx".to_string());
    if !cn_algorithm.eq_ignore_ascii_case("randomx") {
        check.fail("cnAlgorithm", format!("must be \"randomx\" (Pastella mines RandomX rx/0), got {cn_algorithm:?}"));
    }
    let cn_blob_type = raw.cn_blob_type.unwrap_or(0);
    if cn_blob_type != 0 {
        check.fail("cnBlobType", format!("must be 0 (Pastella blocks are CryptoNote blob type 0), got {cn_blob_type}"));
    }
    let is_random_x = raw.is_random_x.unwrap_or(true);
    if !is_random_x {
        check.fail("isRandomX", "must be true (Pastella mines RandomX), got false");
    }

    let daemon = build_daemon(raw.daemon.unwrap_or_default(), check);
    let block_refresh = prefer(
        raw.block_refresh_interval,
        "blockRefreshInterval",
        server.block_refresh_interval,
        "poolServer.blockRefreshInterval",
        warnings,
    );
    let miner_timeout =
        prefer(raw.miner_timeout, "minerTimeout", server.miner_timeout, "poolServer.minerTimeout", warnings);
    let ports = prefer(raw.ports, "ports", server.ports, "poolServer.ports", warnings);
    let var_diff = prefer_or_default(raw.var_diff, "varDiff", server.var_diff, "poolServer.varDiff", warnings);
    let fixed_diff =
        prefer_or_default(raw.fixed_diff, "fixedDiff", server.fixed_diff, "poolServer.fixedDiff", warnings);
    let banning = prefer_or_default(raw.banning, "banning", server.banning, "poolServer.banning", warnings);
    let share_trust =
        prefer_or_default(raw.share_trust, "shareTrust", server.share_trust, "poolServer.shareTrust", warnings);

    let pool_server = PoolServerConfig {
        enabled: server.enabled.unwrap_or(true),
        bind_ip: check.ip("poolServer.bindIp", server.bind_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        block_refresh_interval: Duration::from_millis(match block_refresh {
            Some((ms, path)) => check.between(&path, ms, 10, 60_000),
            None => 100,
        }),
        template_refresh_interval: Duration::from_secs(check.between(
            "poolServer.templateRefreshInterval",
            server.template_refresh_interval.unwrap_or(30),
            1,
            3600,
        )),
        miner_timeout: Duration::from_secs(match miner_timeout {
            Some((secs, path)) => check.at_least(&path, secs, 30),
            None => 600,
        }),
        max_connections: {
            let n = check.at_least("poolServer.maxConnections", server.max_connections.unwrap_or(200_000), 1);
            check.usize("poolServer.maxConnections", n)
        },
        max_connections_per_ip: {
            let n =
                check.at_least("poolServer.maxConnectionsPerIp", server.max_connections_per_ip.unwrap_or(10_000), 1);
            check.usize("poolServer.maxConnectionsPerIp", n)
        },
        instance_id: server.instance_id.and_then(|text| parse_instance_id("poolServer.instanceId", &text, check)),
        reserve_size: {
            let size = server.reserve_size.unwrap_or(17);
            let needed = crate::jobs::PROXY_RESERVED_LEN as u64;
            if !(needed..=127).contains(&size) {
                check.fail(
                    "poolServer.reserveSize",
                    format!("must be between {needed} and 127, got {size} (every job writes an 8-byte extra nonce there, and xmr-node-proxy jobs a 4-byte pool nonce and a 4-byte worker nonce after it; 17 is the usual value)"),
                );
            }
            size as usize
        },
        allow: limits.allow.clone(),
        deny: check.cidrs("poolServer.deny", server.deny),
        proxy_protocol: build_proxy_protocol(server.proxy_protocol.unwrap_or_default(), check),
        tls: TlsConfig {
            cert: server.ssl_cert.map(PathBuf::from),
            key: server.ssl_key.map(PathBuf::from),
            ca: server.ssl_ca.map(PathBuf::from),
            self_signed_dir: PathBuf::from(server.tls_self_signed_dir.unwrap_or_else(|| "tls".to_string())),
            handshake_timeout: Duration::from_secs(check.between(
                "poolServer.tlsHandshakeTimeout",
                server.tls_handshake_timeout.unwrap_or(10),
                1,
                300,
            )),
        },
    };
    if pool_server.tls.cert.is_some() != pool_server.tls.key.is_some() {
        let missing = if pool_server.tls.cert.is_some() { "poolServer.sslKey" } else { "poolServer.sslCert" };
        check.fail(missing, "is required when the other of sslCert/sslKey is set (a PEM file path)");
    }

    let ports = build_ports(ports, check, warnings);
    let var_diff = build_var_diff(var_diff, check);
    let fixed_diff = build_fixed_diff(fixed_diff, check);
    let banning = build_banning(banning, check);
    let share_trust = build_share_trust(share_trust, check);
    let randomx = build_randomx(raw.randomx.unwrap_or_default(), check);
    let payments = build_payments(raw.payments.unwrap_or_default(), check);
    let wallet_api = build_wallet_api(raw.wallet_api.unwrap_or_default(), &payments, check, warnings);
    let block_unlocker = build_block_unlocker(raw.block_unlocker.unwrap_or_default(), check);
    let window_factor = raw.pplns.unwrap_or_default().window_factor.unwrap_or(2.0);
    if !(window_factor > 0.0 && window_factor <= 100.0) {
        check.fail("pplns.windowFactor", format!("must be > 0 and <= 100, got {window_factor}"));
    }
    let api = build_api(raw.api.unwrap_or_default(), &payments, check);
    let redis = build_redis(raw.redis.unwrap_or_default(), check, warnings);
    let metrics = build_metrics(raw.metrics.unwrap_or_default(), check);
    check_listeners(&pool_server, &ports, &api, &metrics, check);
    let charts = build_charts(raw.charts.unwrap_or_default(), check, warnings);
    let monitoring = build_monitoring(raw.monitoring.unwrap_or_default(), check);
    let logging = build_logging(raw.logging.unwrap_or_default(), check, warnings);
    let upgrade = build_upgrade(raw.upgrade.unwrap_or_default(), check);

    Some(Config {
        coin,
        symbol,
        pool_host,
        pool_address: pool_address?,
        coin_units,
        coin_decimal_places: raw.coin_decimal_places.unwrap_or(8),
        coin_difficulty_target,
        cn_algorithm: cn_algorithm.to_ascii_lowercase(),
        cn_variant: raw.cn_variant.unwrap_or(0),
        cn_blob_type,
        is_random_x,
        daemon,
        wallet_api,
        pool_server,
        ports,
        var_diff,
        fixed_diff,
        banning,
        share_trust,
        randomx,
        payments,
        block_unlocker,
        pplns: PplnsConfig { window_factor },
        api,
        redis,
        metrics,
        charts,
        monitoring,
        logging,
        limits,
        upgrade,
    })
}

fn build_upgrade(raw: RawUpgrade, check: &mut Check) -> UpgradeConfig {
    let socket = raw.socket.unwrap_or_else(|| "pastella-pool.sock".to_string());
    if socket.is_empty() {
        check.fail("upgrade.socket", "must be a path, got \"\"");
    } else if socket.len() > 100 {
        // sun_path holds 108 bytes; a longer path cannot be bound.
        check.fail("upgrade.socket", format!("must be at most 100 bytes (a unix socket path), got {}", socket.len()));
    }
    let drain = raw.drain_seconds.unwrap_or(60);
    if !(1..=3600).contains(&drain) {
        check.fail("upgrade.drainSeconds", format!("must be between 1 and 3600, got {drain}"));
    }
    if raw.binary.as_deref() == Some("") {
        check.fail("upgrade.binary", "must be a path, got \"\"");
    }
    UpgradeConfig {
        socket: PathBuf::from(socket),
        drain: Duration::from_secs(drain),
        binary: raw.binary.filter(|b| !b.is_empty()).map(PathBuf::from),
    }
}

/// The `poolServer` keys of [`StratumLimitsConfig`] (taken out of `server`).
fn build_limits(server: &mut RawPoolServer, check: &mut Check) -> StratumLimitsConfig {
    // A bare address is its own /32 or /128. Parsed here once; the transport's accept policy
    // (`PoolServerConfig::allow`) is a copy of this list.
    let allow = check.cidrs("poolServer.allow", server.allow.take());
    let per_subnet = check.at_least(
        "poolServer.maxConnectionsPerSubnet",
        server.max_connections_per_subnet.take().unwrap_or(1024),
        1,
    );
    let in_flight = server.shares_in_flight.take().unwrap_or_default();
    let per_session = check.at_least("poolServer.sharesInFlight.perSession", in_flight.per_session.unwrap_or(32), 1);
    let per_ip = check.at_least("poolServer.sharesInFlight.perIp", in_flight.per_ip.unwrap_or(256), 1);
    let rates = server.rate_limits.take().unwrap_or_default();
    let mut rate = |key: &str, raw: Option<RawRateLimit>, per_second: f64, burst: u64| {
        let raw = raw.unwrap_or_default();
        let per_second = raw.per_second.unwrap_or(per_second);
        if !(per_second > 0.0 && per_second.is_finite()) {
            check.fail(&format!("poolServer.rateLimits.{key}.perSecond"), format!("must be > 0, got {per_second}"));
        }
        let burst = check.at_least(&format!("poolServer.rateLimits.{key}.burst"), raw.burst.unwrap_or(burst), 1);
        RateLimitConfig { per_second, burst }
    };
    let rate_limits = RateLimitsConfig {
        enabled: rates.enabled.unwrap_or(true),
        login: rate("login", rates.login, 5.0, 100),
        submit: rate("submit", rates.submit, 250.0, 5000),
        getjob: rate("getjob", rates.getjob, 5.0, 20),
        keepalived: rate("keepalived", rates.keepalived, 2.0, 10),
    };
    StratumLimitsConfig {
        allow,
        max_connections_per_subnet: check.usize("poolServer.maxConnectionsPerSubnet", per_subnet),
        login_timeout: Duration::from_secs(check.between(
            "poolServer.loginTimeout",
            server.login_timeout.take().unwrap_or(60),
            1,
            3600,
        )),
        line_timeout: Duration::from_secs(check.between(
            "poolServer.lineTimeout",
            server.line_timeout.take().unwrap_or(10),
            1,
            600,
        )),
        shares_in_flight: SharesInFlightConfig {
            per_session: check.usize("poolServer.sharesInFlight.perSession", per_session),
            per_ip: check.usize("poolServer.sharesInFlight.perIp", per_ip),
        },
        rate_limits,
    }
}

fn parse_instance_id(path: &str, text: &str, check: &mut Check) -> Option<[u8; 4]> {
    let mut id = [0u8; 4];
    match hex::decode_to_slice(text, &mut id) {
        Ok(()) => Some(id),
        Err(_) => {
            check.fail(path, format!("must be 8 hex characters (4 bytes, unique per stratum node), got {text:?}"));
            None
        }
    }
}

fn build_daemon(raw: RawDaemon, check: &mut Check) -> DaemonConfig {
    DaemonConfig {
        host: check.host("daemon.host", raw.host),
        port: check.port("daemon.port", raw.port.unwrap_or(21001)),
        timeout: Duration::from_millis(check.at_least("daemon.timeoutMs", raw.timeout_ms.unwrap_or(5000), 100)),
    }
}

fn build_wallet_api(
    raw: RawWalletApi,
    payments: &PaymentsConfig,
    check: &mut Check,
    warnings: &mut Vec<String>,
) -> WalletApiConfig {
    let api_key = raw.api_key.unwrap_or_default();
    if payments.enabled && api_key.is_empty() {
        check.fail("walletApi.apiKey", "is required while payments are enabled: the wallet API's --rpc-password");
    }
    let timeout = match prefer(raw.timeout_ms, "walletApi.timeoutMs", raw.timeout, "walletApi.timeout", warnings) {
        Some((ms, path)) => check.at_least(&path, ms, 100),
        None => 30_000,
    };
    WalletApiConfig {
        host: check.host("walletApi.host", raw.host),
        port: check.port("walletApi.port", raw.port.unwrap_or(21002)),
        api_key,
        wallet_file: raw.wallet_file.unwrap_or_default(),
        wallet_password: raw.wallet_password.unwrap_or_default(),
        timeout: Duration::from_millis(timeout),
    }
}

fn build_ports(raw: Option<(RawPorts, String)>, check: &mut Check, warnings: &mut Vec<String>) -> Vec<PortConfig> {
    let Some((raw, base)) = raw else {
        check.fail(
            "ports",
            "is required: at least one stratum port, e.g. {\"3333\": {\"diff\": 5000, \"desc\": \"Low end hardware\"}}",
        );
        return Vec::new();
    };
    // (port, its path for duplicate reports)
    let mut found: Vec<(PortConfig, String)> = Vec::new();
    let mut entry = |path: String, key: Option<u16>, raw: RawPort, check: &mut Check| {
        let port = match (key, raw.port) {
            (Some(key), Some(inner)) if inner != u64::from(key) => {
                check.fail(&join(&path, "port"), format!("must match the key {key} or be left out, got {inner}"));
                Some(key)
            }
            (Some(key), _) => Some(key),
            (None, Some(inner)) => Some(check.port(&join(&path, "port"), inner)),
            (None, None) => {
                check.fail(&join(&path, "port"), "is required");
                None
            }
        };
        let diff = match (raw.diff, raw.difficulty) {
            (Some(diff), other) => {
                if other.is_some() {
                    warnings.push(format!(
                        "\"{}\" ignored: \"{}\" is also set and takes precedence",
                        join(&path, "difficulty"),
                        join(&path, "diff")
                    ));
                }
                Some(check.at_least(&join(&path, "diff"), diff, 1))
            }
            (None, Some(diff)) => Some(check.at_least(&join(&path, "difficulty"), diff, 1)),
            (None, None) => {
                // Named in the spelling of the file's format, so that a dropped mistyped value
                // is not reported a second time as missing.
                let key = if key.is_some() { "diff" } else { "difficulty" };
                check.fail(&join(&path, key), "is required: the port's starting difficulty");
                None
            }
        };
        let tls = match (raw.tls.as_deref(), raw.ssl) {
            (None, ssl) => {
                if ssl == Some(true) {
                    TlsMode::On
                } else {
                    TlsMode::Off
                }
            }
            (Some(text), ssl) => {
                let mode = match text {
                    "off" => TlsMode::Off,
                    "on" => TlsMode::On,
                    "auto" => TlsMode::Auto,
                    _ => {
                        check.fail(&join(&path, "tls"), format!("must be \"off\", \"on\" or \"auto\", got {text:?}"));
                        TlsMode::Off
                    }
                };
                if ssl.is_some_and(|ssl| ssl != (mode != TlsMode::Off)) {
                    check.fail(&join(&path, "ssl"), format!("contradicts \"tls\": {text:?}; set only one of them"));
                }
                mode
            }
        };
        if let (Some(port), Some(diff)) = (port, diff) {
            let desc = raw.desc.unwrap_or_default();
            found.push((PortConfig { port, diff, desc, tls }, path));
        }
    };
    match raw {
        RawPorts::Object(entries) => {
            for (key, raw) in entries {
                let path = join(&base, &key);
                let port = match key.parse::<u64>() {
                    Ok(n) => check.port(&path, n),
                    Err(_) => {
                        check.fail(
                            &path,
                            format!("is not a port number: keys of \"{base}\" must be TCP ports (1 to 65535)"),
                        );
                        0
                    }
                };
                if port != 0 {
                    entry(path, Some(port), raw, check);
                }
            }
        }
        RawPorts::List(entries) => {
            for (index, raw) in entries.into_iter().enumerate() {
                entry(format!("{base}[{index}]"), None, raw, check);
            }
        }
    }
    if found.is_empty() {
        check.fail(&base, "must list at least one stratum port");
    }
    found.sort_by_key(|(p, _)| p.port);
    for pair in found.windows(2) {
        if pair[0].0.port == pair[1].0.port {
            check.fail(&pair[1].1, format!("duplicates port {} of {}", pair[1].0.port, pair[0].1));
        }
    }
    found.into_iter().map(|(p, _)| p).collect()
}

fn build_proxy_protocol(raw: RawProxyProtocol, check: &mut Check) -> ProxyProtocolConfig {
    let config = ProxyProtocolConfig {
        enabled: raw.enabled.unwrap_or(false),
        trusted: check.cidrs("poolServer.proxyProtocol.trusted", raw.trusted),
        required: raw.required.unwrap_or(false),
        timeout: Duration::from_secs(check.between(
            "poolServer.proxyProtocol.timeout",
            raw.timeout.unwrap_or(5),
            1,
            60,
        )),
    };
    if config.enabled && config.trusted.is_empty() {
        check.fail(
            "poolServer.proxyProtocol.trusted",
            "must list the load balancers' addresses (e.g. [\"127.0.0.1/32\"]) when enabled is true, got []",
        );
    }
    config
}

fn build_var_diff((raw, base): (RawVarDiff, String), check: &mut Check) -> VarDiffConfig {
    let p = |key: &str| join(&base, key);
    let min_diff = check.at_least(&p("minDiff"), raw.min_diff.unwrap_or(100), 1);
    let max_diff = raw.max_diff.unwrap_or(100_000_000);
    if max_diff < min_diff {
        check.fail(&p("maxDiff"), format!("must be >= minDiff ({min_diff}), got {max_diff}"));
    }
    let variance_percent = raw.variance_percent.unwrap_or(30.0);
    if !(0.0..100.0).contains(&variance_percent) {
        check.fail(&p("variancePercent"), format!("must be >= 0 and < 100, got {variance_percent}"));
    }
    let max_jump = raw.max_jump.unwrap_or(50.0);
    if !(max_jump > 0.0 && max_jump <= 1000.0) {
        check.fail(&p("maxJump"), format!("must be > 0 and <= 1000 (percent), got {max_jump}"));
    }
    VarDiffConfig {
        enabled: raw.enabled.unwrap_or(true),
        min_diff,
        max_diff,
        target_time: check.at_least(&p("targetTime"), raw.target_time.unwrap_or(30), 1),
        retarget_time: check.at_least(&p("retargetTime"), raw.retarget_time.unwrap_or(15), 1),
        variance_percent,
        max_jump,
    }
}

fn build_fixed_diff((raw, base): (RawFixedDiff, String), check: &mut Check) -> FixedDiffConfig {
    let path = join(&base, "addressSeparator");
    let text = raw.address_separator.unwrap_or_else(|| ".".to_string());
    let mut chars = text.chars();
    let address_separator = match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_alphanumeric() && !c.is_whitespace() => c,
        (Some(c), None) => {
            check.fail(
                &path,
                format!("must not be a letter, digit or space (it would split addresses), got {:?}", c.to_string()),
            );
            '.'
        }
        _ => {
            check.fail(&path, format!("must be a single character, got {text:?}"));
            '.'
        }
    };
    FixedDiffConfig { enabled: raw.enabled.unwrap_or(true), address_separator }
}

fn build_banning((raw, base): (RawBanning, String), check: &mut Check) -> BanningConfig {
    let p = |key: &str| join(&base, key);
    let invalid_percent = raw.invalid_percent.unwrap_or(80.0);
    if !(invalid_percent > 0.0 && invalid_percent <= 100.0) {
        check.fail(&p("invalidPercent"), format!("must be > 0 and <= 100, got {invalid_percent}"));
    }
    BanningConfig {
        enabled: raw.enabled.unwrap_or(false),
        time: Duration::from_secs(check.at_least(&p("time"), raw.time.unwrap_or(120), 1)),
        invalid_percent,
        check_threshold: check.at_least(&p("checkThreshold"), raw.check_threshold.unwrap_or(30), 1),
    }
}

fn build_share_trust((raw, base): (RawShareTrust, String), check: &mut Check) -> ShareTrustConfig {
    let p = |key: &str| join(&base, key);
    ShareTrustConfig {
        enabled: raw.enabled.unwrap_or(false),
        min: check.between(&p("min"), raw.min.unwrap_or(10), 0, 100),
        step_down: check.between(&p("stepDown"), raw.step_down.unwrap_or(3), 0, 100),
        threshold: raw.threshold.unwrap_or(10),
        penalty: raw.penalty.unwrap_or(30),
    }
}

fn build_randomx(raw: RawRandomX, check: &mut Check) -> RandomXConfig {
    let mode = match raw.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("fast") => RandomXMode::Fast,
        Some("light") => RandomXMode::Light,
        Some(_) => {
            check
                .fail("randomx.mode", format!("must be \"fast\" or \"light\", got {:?}", raw.mode.unwrap_or_default()));
            RandomXMode::Fast
        }
    };
    RandomXConfig {
        mode,
        threads: check.usize("randomx.threads", raw.threads.unwrap_or(0)),
        huge_pages: raw.huge_pages.unwrap_or(true),
    }
}

fn build_payments(raw: RawPayments, check: &mut Check) -> PaymentsConfig {
    let max_addresses = raw.max_addresses.unwrap_or(15);
    let max_outputs = MAX_TX_OUTPUTS as u64 - 1;
    if !(1..=max_outputs).contains(&max_addresses) {
        check.fail(
            "payments.maxAddresses",
            format!(
                "must be between 1 and {max_outputs} (a transaction has at most {MAX_TX_OUTPUTS} outputs, one is the change), got {max_addresses}"
            ),
        );
    }
    let transfer_fee = raw.transfer_fee.unwrap_or(MINIMUM_FEE);
    if transfer_fee < MINIMUM_FEE {
        check.fail(
            "payments.transferFee",
            format!("must be >= {MINIMUM_FEE} (the network's minimum fee), got {transfer_fee}"),
        );
    }
    let dynamic_transfer_fee = raw.dynamic_transfer_fee.unwrap_or(true);
    let miner_pay_fee = raw.miner_pay_fee.unwrap_or(true);
    let min_payment = check.at_least("payments.minPayment", raw.min_payment.unwrap_or(100_000), 1);
    if dynamic_transfer_fee && miner_pay_fee && min_payment <= transfer_fee {
        check.fail(
            "payments.minPayment",
            format!(
                "must be > transferFee ({transfer_fee}) while miners pay the fee, or payouts would be zero, got {min_payment}"
            ),
        );
    }
    if let Some(max) = raw.max_payment {
        if max < min_payment {
            check.fail("payments.maxPayment", format!("must be >= minPayment ({min_payment}) or null, got {max}"));
        }
    }
    let max_transaction_amount = raw.max_transaction_amount.unwrap_or(100 * COIN);
    if max_transaction_amount < min_payment {
        let hint = if max_transaction_amount == 0 { " (the old pool read 0 as 10000000000; write that)" } else { "" };
        check.fail(
            "payments.maxTransactionAmount",
            format!("must be >= minPayment ({min_payment}){hint}, got {max_transaction_amount}"),
        );
    }
    let blocked = raw.blocked_addresses_file.unwrap_or_else(|| "payment_blocked.json".to_string());
    if blocked.trim().is_empty() {
        check.fail("payments.blockedAddressesFile", "must be a file path, got \"\"");
    }
    PaymentsConfig {
        enabled: raw.enabled.unwrap_or(true),
        interval: Duration::from_secs(check.at_least("payments.interval", raw.interval.unwrap_or(300), 1)),
        max_addresses: max_addresses as usize,
        transfer_fee,
        dynamic_transfer_fee,
        miner_pay_fee,
        min_payment,
        max_payment: raw.max_payment,
        max_transaction_amount,
        denomination: check.at_least("payments.denomination", raw.denomination.unwrap_or(1), 1),
        blocked_addresses_file: PathBuf::from(blocked),
        lookup_rounds: check.at_least("payments.lookupRounds", raw.lookup_rounds.unwrap_or(3), 2),
        hold_after: Duration::from_secs(check.at_least("payments.holdAfter", raw.hold_after.unwrap_or(3600), 1)),
    }
}

fn build_block_unlocker(raw: RawBlockUnlocker, check: &mut Check) -> BlockUnlockerConfig {
    let depth = raw.depth.unwrap_or(MINED_MONEY_UNLOCK_WINDOW);
    if depth < MINED_MONEY_UNLOCK_WINDOW {
        check.fail(
            "blockUnlocker.depth",
            format!(
                "must be >= {MINED_MONEY_UNLOCK_WINDOW} (coinbase outputs unlock after {MINED_MONEY_UNLOCK_WINDOW} blocks; paying earlier spends money the wallet cannot send yet), got {depth}"
            ),
        );
    }
    let pool_fee_bps = check.percent_bps("blockUnlocker.poolFee", raw.pool_fee.unwrap_or(1.0));
    let finder_reward_bps = check.percent_bps("blockUnlocker.finderReward", raw.finder_reward.unwrap_or(1.0));
    if pool_fee_bps + finder_reward_bps > 10_000 {
        check.fail(
            "blockUnlocker.finderReward",
            format!(
                "plus poolFee must be <= 100 (percent), got {} + {}",
                percent(finder_reward_bps),
                percent(pool_fee_bps)
            ),
        );
    }
    let solo_fee_bps = raw.solo_fee.map(|fee| check.percent_bps("blockUnlocker.soloFee", fee));
    for (key, value) in [("devDonation", raw.dev_donation), ("networkFee", raw.network_fee)] {
        if let Some(value) = value.filter(|v| *v != 0.0) {
            check.fail(
                &format!("blockUnlocker.{key}"),
                format!("is not supported by this pool, must be 0, got {value}"),
            );
        }
    }
    BlockUnlockerConfig {
        enabled: raw.enabled.unwrap_or(true),
        interval: Duration::from_secs(check.at_least("blockUnlocker.interval", raw.interval.unwrap_or(10), 1)),
        depth,
        pool_fee_bps,
        finder_reward_bps,
        solo_fee_bps,
        lease_ttl: Duration::from_secs(check.at_least("blockUnlocker.leaseTtl", raw.lease_ttl.unwrap_or(15), 2)),
        payout_record_days: check.between(
            "blockUnlocker.payoutRecordDays",
            raw.payout_record_days.unwrap_or(90),
            1,
            36_500,
        ),
    }
}

fn build_api(raw: RawApi, payments: &PaymentsConfig, check: &mut Check) -> ApiConfig {
    let min = payments.min_payment;
    let max_payout_level = raw.max_payout_level.unwrap_or(min.saturating_mul(1000));
    if max_payout_level < min {
        check.fail("api.maxPayoutLevel", format!("must be >= payments.minPayment ({min}), got {max_payout_level}"));
    }
    ApiConfig {
        enabled: raw.enabled.unwrap_or(true),
        bind_ip: check.ip("api.bindIp", raw.bind_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        port: check.port("api.port", raw.port.unwrap_or(8117)),
        hashrate_window: Duration::from_secs(check.at_least(
            "api.hashrateWindow",
            raw.hashrate_window.unwrap_or(600),
            60,
        )),
        update_interval: Duration::from_secs(check.at_least("api.updateInterval", raw.update_interval.unwrap_or(5), 1)),
        blocks: check.usize("api.blocks", raw.blocks.unwrap_or(30)),
        payments: check.usize("api.payments", raw.payments.unwrap_or(30)),
        password: raw.password.unwrap_or_default(),
        trust_proxy_ip: raw.trust_proxy_ip.unwrap_or(false),
        max_payout_level,
        payout_level_ip_age: Duration::from_secs(check.at_least(
            "api.payoutLevelIpAge",
            raw.payout_level_ip_age.unwrap_or(86_400),
            // Sessions renew their IP record hourly: a shorter age would lock out long sessions.
            7200,
        )),
        payout_level_per_hour: check.at_least("api.payoutLevelPerHour", raw.payout_level_per_hour.unwrap_or(10), 1),
        passwordless_loopback_admin: raw.passwordless_loopback_admin.unwrap_or(false),
    }
}

fn build_redis(raw: RawRedis, check: &mut Check, warnings: &mut Vec<String>) -> RedisConfig {
    let password = prefer(raw.password, "redis.password", raw.auth, "redis.auth", warnings)
        .map(|(password, _)| password)
        .filter(|password| !password.is_empty());
    RedisConfig {
        host: check.host("redis.host", raw.host),
        port: check.port("redis.port", raw.port.unwrap_or(6379)),
        db: check.at_least("redis.db", raw.db.unwrap_or(0), 0),
        password,
        allow_eviction: raw.allow_eviction.unwrap_or(false),
        sentinels: check.sentinels("redis.sentinels", raw.sentinels.unwrap_or_default()),
        master_name: check.master_name("redis.masterName", raw.master_name),
        wait_replicas: u32::try_from(check.between("redis.waitReplicas", raw.wait_replicas.unwrap_or(0), 0, 16))
            .unwrap_or(0),
        wait_timeout: Duration::from_millis(check.between(
            "redis.waitTimeoutMs",
            raw.wait_timeout_ms.unwrap_or(2000),
            1,
            60_000,
        )),
    }
}

fn build_metrics(raw: RawMetrics, check: &mut Check) -> MetricsConfig {
    MetricsConfig {
        enabled: raw.enabled.unwrap_or(true),
        bind_ip: check.ip("metrics.bindIp", raw.bind_ip, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port: raw.port.map(|port| check.port("metrics.port", port)),
    }
}

/// Two listeners on one port would fail at start-up with a bare "address in use"; say which.
fn check_listeners(
    server: &PoolServerConfig,
    ports: &[PortConfig],
    api: &ApiConfig,
    metrics: &MetricsConfig,
    check: &mut Check,
) {
    let mut taken: Vec<(u16, &str)> = Vec::new();
    if server.enabled {
        taken.extend(ports.iter().map(|p| (p.port, "a stratum port")));
    }
    if api.enabled && api.port != 0 {
        if let Some((_, what)) = taken.iter().find(|(port, _)| *port == api.port) {
            check.fail("api.port", format!("must differ from {what}, got {}", api.port));
        }
        taken.push((api.port, "api.port"));
    }
    if let (true, Some(port)) = (metrics.enabled, metrics.port) {
        if let Some((_, what)) = taken.iter().find(|(p, _)| *p == port && port != 0) {
            check.fail(
                "metrics.port",
                format!("must differ from {what} (leave it out to serve /metrics on the API port), got {port}"),
            );
        }
    }
}

fn build_series(
    raw: Option<RawSeries>,
    path: &str,
    (update, step, keep): (u64, u64, u64),
    check: &mut Check,
) -> ChartSeries {
    let raw = raw.unwrap_or_default();
    let p = |key: &str| join(path, key);
    let step_interval = check.at_least(&p("stepInterval"), raw.step_interval.unwrap_or(step), 1);
    let maximum_period = raw.maximum_period.unwrap_or(keep);
    if maximum_period < step_interval {
        check.fail(&p("maximumPeriod"), format!("must be >= stepInterval ({step_interval}), got {maximum_period}"));
    }
    ChartSeries {
        enabled: raw.enabled.unwrap_or(true),
        update_interval: Duration::from_secs(check.at_least(
            &p("updateInterval"),
            raw.update_interval.unwrap_or(update),
            1,
        )),
        step_interval: Duration::from_secs(step_interval),
        maximum_period: Duration::from_secs(maximum_period),
    }
}

fn build_charts(raw: RawCharts, check: &mut Check, warnings: &mut Vec<String>) -> ChartsConfig {
    let pool = raw.pool.unwrap_or_default();
    let user = raw.user.unwrap_or_default();
    let blocks = raw.blocks.unwrap_or_default();
    let (worker_hashrate, worker_path) = prefer_or_default(
        user.worker_hashrate.map(Some),
        "charts.user.workerHashrate",
        user.worker_hashrate_old.map(Some),
        "charts.user.worker_hashrate",
        warnings,
    );
    let days = check.at_least("charts.blocks.days", blocks.days.unwrap_or(30), 1);
    let days = u32::try_from(days).unwrap_or_else(|_| {
        check.fail("charts.blocks.days", format!("is too large, got {days}"));
        30
    });
    ChartsConfig {
        pool: PoolCharts {
            hashrate: build_series(pool.hashrate, "charts.pool.hashrate", (60, 1800, 86_400), check),
            miners: build_series(pool.miners, "charts.pool.miners", (60, 1800, 86_400), check),
            workers: build_series(pool.workers, "charts.pool.workers", (60, 1800, 86_400), check),
            difficulty: build_series(pool.difficulty, "charts.pool.difficulty", (1800, 10_800, 604_800), check),
        },
        user: UserCharts {
            hashrate: build_series(user.hashrate, "charts.user.hashrate", (180, 1800, 86_400), check),
            worker_hashrate: build_series(worker_hashrate, &worker_path, (60, 60, 86_400), check),
            payments_enabled: user.payments.and_then(|p| p.enabled).unwrap_or(true),
        },
        blocks: BlockCharts { enabled: blocks.enabled.unwrap_or(true), days },
    }
}

fn build_monitoring(raw: RawMonitoring, check: &mut Check) -> MonitoringConfig {
    let old_daemon = raw.daemon.and_then(|d| d.check_interval);
    let old_wallet = raw.wallet.and_then(|w| w.check_interval);
    // One timer records both; the old pool had one per module and they were always equal.
    let (secs, path) = match (raw.check_interval, old_daemon, old_wallet) {
        (Some(s), _, _) => (s, "monitoring.checkInterval"),
        (None, Some(s), _) => (s, "monitoring.daemon.checkInterval"),
        (None, None, Some(s)) => (s, "monitoring.wallet.checkInterval"),
        (None, None, None) => (60, "monitoring.checkInterval"),
    };
    MonitoringConfig { check_interval: Duration::from_secs(check.at_least(path, secs, 1)) }
}

fn build_logging(raw: RawLogging, check: &mut Check, warnings: &mut Vec<String>) -> LoggingConfig {
    let (level, path) =
        prefer(raw.level, "logging.level", raw.console.and_then(|c| c.level), "logging.console.level", warnings)
            .unwrap_or_else(|| ("info".to_string(), "logging.level".to_string()));
    if let Err(why) = validate_filter(&level) {
        check.fail(
            &path,
            format!(
                "must be a log filter such as \"info\" or \"info,pastella_pool::stratum=debug\" ({why}), got {level:?}"
            ),
        );
    }
    LoggingConfig { level }
}

/// Checks a filter the way `EnvFilter` will read it, and also rejects a bare word that is not a
/// level: `EnvFilter` would take `"verbose"` as a target name and silently log nothing useful.
fn validate_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if filter.trim().is_empty() {
        return Err("empty".to_string());
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!("{directive:?} is not one of {}", LEVELS.join(", ")));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_to_basis_points() {
        let mut check = Check::default();
        assert_eq!(check.percent_bps("a", 1.0), 100);
        assert_eq!(check.percent_bps("b", 0.07), 7);
        assert_eq!(check.percent_bps("c", 1.23), 123);
        assert_eq!(check.percent_bps("d", 100.0), 10_000);
        assert!(check.errors.is_empty());
        check.percent_bps("e", 1.234);
        check.percent_bps("f", 100.5);
        let paths: Vec<&str> = check.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["e", "f"]);
    }

    #[test]
    fn errors_below_a_failed_path_are_consequences() {
        let mut check = Check::default();
        check.fail("ports.3333", "x");
        check.fail("ports.3333.diff", "y");
        check.fail("ports.3333", "z");
        check.fail("ports.33333", "w");
        assert_eq!(check.errors.len(), 2);
    }

    #[test]
    fn serde_messages_speak_json() {
        assert_eq!(
            tidy_serde_message("invalid type: string \"abc\", expected u64"),
            "invalid type: string \"abc\", expected a whole number >= 0"
        );
        assert_eq!(
            tidy_serde_message("invalid type: integer `5`, expected struct RawDaemon"),
            "invalid type: integer `5`, expected an object"
        );
    }

    #[test]
    fn redis_url_encodes_the_password() {
        let mut redis = RedisConfig {
            host: "127.0.0.1".into(),
            port: 6379,
            db: 2,
            password: None,
            allow_eviction: false,
            sentinels: Vec::new(),
            master_name: "mymaster".into(),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(2),
        };
        assert_eq!(redis.url(), "redis://127.0.0.1:6379/2");
        redis.password = Some("p@ss:w/rd".into());
        assert_eq!(redis.url(), "redis://:p%40ss%3Aw%2Frd@127.0.0.1:6379/2");
        redis.host = "::1".into();
        redis.password = None;
        assert_eq!(redis.url(), "redis://[::1]:6379/2");
    }

    #[test]
    fn log_filters() {
        assert!(validate_filter("info").is_ok());
        assert!(validate_filter("WARN").is_ok());
        assert!(validate_filter("info,pastella_pool::stratum=debug").is_ok());
        assert!(validate_filter("verbose").is_err());
        assert!(validate_filter("").is_err());
        assert!(validate_filter("pastella_pool=loud").is_err());
    }

    #[test]
    fn amounts_in_pas() {
        assert_eq!(pas(100_000), "100000 (0.001 PAS)");
        assert_eq!(pas(10_000_000_000), "10000000000 (100 PAS)");
        assert_eq!(pas(1), "1 (0.00000001 PAS)");
    }
}
