//! Command-line flags. Every flag is described, with its unit and default, in docs/LOADTEST.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::hashing::HashMode;
use crate::mix::{Arrivals, Mix};
use crate::tls::{self, Trust};

/// Load generator for pastella-pool: simulated xmrig miners over real TCP.
#[derive(Parser)]
#[command(name = "pastella-loadtest", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run a load test against running pool(s) and a devnet. A flag given twice takes its last
    /// value (so `scripts/loadtest.sh`'s LOADTEST_ARGS can override the script's choices).
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Measure the raw RandomX hash rate of this machine (no pool needed).
    Raw(RawArgs),
    /// Start a pool command and time process start -> first job served to a login (and, with
    /// --metrics, -> fast-mode verification).
    Startup(StartupArgs),
    /// Internal: a worker process of `run --processes N` (reads its plan on stdin).
    #[command(hide = true)]
    Worker,
    /// The stats API under a farm's load: hashrate records of N workers written straight
    /// into Redis, and browsers polling the old frontend's pages (docs/LOADTEST.md, "API").
    Api(ApiArgs),
}

/// Flags of `api`.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Redis the pool uses.
    #[arg(long, value_name = "HOST:PORT")]
    pub redis: String,
    /// The pool's Redis key prefix (its `coin`).
    #[arg(long, default_value = "pastella")]
    pub prefix: String,
    /// The pool's API base URL (its `/metrics` must answer there too).
    #[arg(long, value_name = "URL")]
    pub api: String,
    /// Simulated workers.
    #[arg(long, default_value_t = 100_000)]
    pub workers: u64,
    /// Addresses they mine to (worker i mines to address i mod this).
    #[arg(long, default_value_t = 1000)]
    pub addresses: u64,
    /// Seconds between two shares of one worker.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub share_interval: u64,
    /// Job difficulty of every share.
    #[arg(long, default_value_t = 100_000)]
    pub difficulty: u64,
    /// Seconds of records written before the phases (the pool's `api.hashrateWindow`).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub window: u64,
    /// Browsers polling the API in the second phase.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Length of each phase.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub seconds: f64,
    /// Pause before each phase (the collector settles).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub settle: f64,
    /// Write the JSON result here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
}

/// Flags of `run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Pool stratum address; repeat for several pool processes (miner i uses pool i mod n).
    #[arg(long = "pool", value_name = "HOST:PORT", default_value = "127.0.0.1:3333")]
    pub pools: Vec<SocketAddr>,
    /// Process id of a pool process, to read its RSS and CPU from /proc; repeatable.
    #[arg(long = "pool-pid", value_name = "PID")]
    pub pool_pids: Vec<u32>,
    /// Another process to report CPU for, e.g. redis=1234; repeatable.
    #[arg(long = "watch-pid", value_name = "LABEL=PID", value_parser = parse_watch)]
    pub watch_pids: Vec<(String, u32)>,
    /// Devnet control base URL (mines the fan-out blocks); without it no fan-out rounds.
    #[arg(long, value_name = "URL")]
    pub control: Option<String>,
    /// Simulated miners (one TCP connection each).
    #[arg(long, default_value_t = 1000)]
    pub miners: u64,
    /// Harness processes (each holds at most ~19,900 connections under a 20,000 fd limit).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// New connections per second, all processes together.
    #[arg(long, value_name = "PER_S", default_value_t = 2000.0)]
    pub ramp_rate: f64,
    /// Loopback source addresses to spread connections over (FIRST-LAST or a comma list;
    /// empty: let the kernel choose 127.0.0.1).
    #[arg(long, value_name = "RANGE", default_value = "127.0.0.2-127.0.0.65")]
    pub source_ips: String,
    /// Distinct miner addresses (0: one per miner); miners share them round-robin with distinct worker names.
    #[arg(long, default_value_t = 0)]
    pub addresses: u64,
    /// Salt of the address derivation (same salt, same addresses in every run).
    #[arg(long, default_value_t = 1)]
    pub address_salt: u64,
    /// Worker-name prefix (worker = prefix + miner index).
    #[arg(long, default_value = "lt")]
    pub worker_prefix: String,
    /// `agent` string sent at login.
    #[arg(long, default_value = "XMRig/6.22.0 (pastella-loadtest)")]
    pub agent: String,
    /// Send `keepalived` after this many seconds without a message from the pool (xmrig: 60).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub keepalive: f64,
    /// connect() timeout.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// A request unanswered this long is counted as timed out (xmrig reconnects after 20 s).
    #[arg(long, value_name = "MS", default_value_t = 20_000)]
    pub response_timeout_ms: u64,
    /// Wait this long after the last login before measuring idle memory and CPU.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub settle: f64,
    /// Job fan-out rounds (each mines one devnet block).
    #[arg(long, default_value_t = 3)]
    pub fanout_rounds: usize,
    /// A session without the new job this long after the block request counts as missing.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub fanout_deadline: f64,
    /// Pause between fan-out rounds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub fanout_gap: f64,
    /// RandomX mode of the harness's hashers (use the pool's randomx.mode).
    #[arg(long, value_enum, default_value_t = HashMode::Light)]
    pub hash_mode: HashMode,
    /// Hashing threads (use the pool's randomx.threads).
    #[arg(long, default_value_t = 2)]
    pub hash_threads: usize,
    /// Raw hash-rate measurement length (0: skip it, and the ceiling with it).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub raw_seconds: f64,
    /// Throughput-ceiling phase length (0: skip; needs the raw rate).
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub ceiling_seconds: f64,
    /// Sessions keeping shares in flight during the ceiling phase.
    #[arg(long, default_value_t = 8)]
    pub busy_connections: usize,
    /// Shares in flight per busy session.
    #[arg(long, default_value_t = 2)]
    pub busy_depth: usize,
    /// Offered load levels, % of the measured ceiling (comma list; empty: none).
    #[arg(long, default_value = "50,90", value_parser = parse_levels)]
    pub levels: Levels,
    /// Length of each load-level phase.
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub level_seconds: f64,
    /// Sessions submitting in the load-level phases (0: all of worker 0's).
    #[arg(long, default_value_t = 8)]
    pub level_sessions: usize,
    /// Share mix of the load-level phases.
    #[arg(long, default_value = "valid=1")]
    pub level_mix: Mix,
    /// Every miner submits this many shares per second in the per-miner-rate phase (0: skip).
    #[arg(long, value_name = "PER_S", default_value_t = 0.0)]
    pub rate_per_miner: f64,
    /// Length of the per-miner-rate phase.
    #[arg(long, value_name = "SECONDS", default_value_t = 20.0)]
    pub rate_seconds: f64,
    /// Share mix of the per-miner-rate phase.
    #[arg(long, default_value = "valid=85,invalid=5,duplicate=5,stale=5")]
    pub mix: Mix,
    /// Spacing of open-loop submits.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,
    /// Pool Prometheus URL (e.g. http://127.0.0.1:8117/metrics), for --wait-fast.
    #[arg(long, value_name = "URL")]
    pub pool_metrics: Option<String>,
    /// Before the share phases, wait up to this long for the pool to verify in fast mode.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub wait_fast: f64,
    /// tokio worker threads per harness process.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The run stops itself after this long, whatever is left.
    #[arg(long, value_name = "SECONDS", default_value_t = 900.0)]
    pub max_seconds: f64,
    /// Print a progress line this often.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub progress_every: f64,
    /// Abuse phase (after the load levels): at least this many bogus submits, fake block
    /// claims among them, flood the pool while the honest sessions run the first load level
    /// again; their answer times are compared with the same level without the flood (0: skip).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub abuse_submits: u64,
    /// Source addresses of the flood, one connection each in turn (one address: one IP with
    /// many sessions; a range: a botnet); keep them outside the pool's `poolServer.allow`.
    #[arg(long, value_name = "RANGE", default_value = "127.0.9.1")]
    pub abuse_sources: String,
    /// Bogus submits pipelined per flood connection.
    #[arg(long, default_value_t = 500)]
    pub abuse_batch: u32,
    /// Every n-th bogus submit claims a block (a result of 64 zeros); 0: none.
    #[arg(long, default_value_t = 10)]
    pub abuse_block_every: u32,
    /// Every simulated miner connects over TLS (the pool port must serve TLS: `"tls": "on"` or
    /// `"auto"`); needs --tls-fingerprint or --tls-no-verify. The abuse flood stays plain.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: accept only the certificate whose DER has this SHA-256 (64 hex digits; the pool
    /// logs it at start, as `xmrig --tls-fingerprint` takes it).
    #[arg(long, value_name = "HEX", requires = "tls", value_parser = tls::parse_fingerprint)]
    pub tls_fingerprint: Option<String>,
    /// With --tls: accept any certificate without checking it (load tests only).
    #[arg(long, requires = "tls", conflicts_with = "tls_fingerprint")]
    pub tls_no_verify: bool,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Free text stored in the report (e.g. "10k light").
    #[arg(long, default_value = "")]
    pub label: String,
}

impl RunArgs {
    /// How sessions connect: `None` for plain TCP, else the certificate they accept.
    pub fn tls_trust(&self) -> Result<Option<Trust>, String> {
        match (self.tls, &self.tls_fingerprint, self.tls_no_verify) {
            (false, _, _) => Ok(None),
            (true, Some(pin), _) => Ok(Some(Trust::Fingerprint(pin.clone()))),
            (true, None, true) => Ok(Some(Trust::Any)),
            (true, None, false) => {
                Err("--tls needs --tls-fingerprint HEX (the pool logs its certificate's SHA-256 at \
                                        start) or --tls-no-verify"
                    .into())
            }
        }
    }
}

/// Flags of `raw`.
#[derive(Args, Debug, Clone)]
pub struct RawArgs {
    /// RandomX mode.
    #[arg(long, value_enum, default_value_t = HashMode::Light)]
    pub mode: HashMode,
    /// Hashing threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds to hash.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

/// Flags of `startup`.
#[derive(Args, Debug, Clone)]
pub struct StartupArgs {
    /// The stratum address the started pool listens on.
    #[arg(long, value_name = "HOST:PORT")]
    pub pool: SocketAddr,
    /// The pool's Prometheus URL: also time start -> fast-mode verification.
    #[arg(long, value_name = "URL")]
    pub metrics: Option<String>,
    /// Give up after this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub timeout: f64,
    /// Start the pool this many times (median reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// The pool's stdout/stderr go here (default: discarded).
    #[arg(long, value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// Write the JSON result here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// The pool command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Load levels in % of the ceiling.
#[derive(Debug, Clone, PartialEq)]
pub struct Levels(pub Vec<f64>);

fn parse_levels(text: &str) -> Result<Levels, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.trim_end_matches('%').parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 1000.0 => Ok(v),
            _ => Err(format!("--levels: {p:?} is not a percentage above 0 (e.g. 50,90)")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Levels)
}

fn parse_watch(text: &str) -> Result<(String, u32), String> {
    let (label, pid) = text.split_once('=').ok_or_else(|| format!("expected LABEL=PID, got {text:?}"))?;
    let pid = pid.parse().map_err(|_| format!("expected LABEL=PID with a numeric pid, got {text:?}"))?;
    Ok((label.to_string(), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels_and_watched_pids() {
        assert_eq!(parse_levels("50,90").unwrap(), Levels(vec![50.0, 90.0]));
        assert_eq!(parse_levels(" 25%, 75 ").unwrap(), Levels(vec![25.0, 75.0]));
        assert_eq!(parse_levels("").unwrap(), Levels(vec![]));
        assert!(parse_levels("fast").is_err());
        assert!(parse_levels("0").is_err());
        assert_eq!(parse_watch("redis=42").unwrap(), ("redis".to_string(), 42));
        assert!(parse_watch("redis").is_err());
        assert!(parse_watch("redis=x").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value_and_pools_add_up() {
        let cli = Cli::try_parse_from([
            "pastella-loadtest",
            "run",
            "--fanout-rounds",
            "5",
            "--pool",
            "127.0.0.1:3333",
            "--fanout-rounds",
            "30",
            "--pool",
            "127.0.0.1:3334",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.fanout_rounds, 30);
        assert_eq!(args.pools.len(), 2);
        assert_eq!(args.tls_trust(), Ok(None));
    }

    #[test]
    fn tls_needs_a_pin_or_an_explicit_no_verify() {
        let trust = |flags: &[&str]| {
            let cli = Cli::try_parse_from(["pastella-loadtest", "run"].iter().chain(flags)).map_err(|e| e.kind())?;
            let Command::Run(args) = cli.command else { panic!("not run") };
            Ok::<_, clap::error::ErrorKind>(args.tls_trust())
        };
        let pin = "AB".repeat(32);
        assert_eq!(trust(&["--tls", "--tls-fingerprint", &pin]), Ok(Ok(Some(Trust::Fingerprint("ab".repeat(32))))));
        assert_eq!(trust(&["--tls", "--tls-no-verify"]), Ok(Ok(Some(Trust::Any))));
        assert!(trust(&["--tls"]).unwrap().unwrap_err().contains("--tls-fingerprint"));
        assert!(trust(&["--tls-no-verify"]).is_err(), "needs --tls");
        assert!(trust(&["--tls", "--tls-no-verify", "--tls-fingerprint", &pin]).is_err(), "one or the other");
    }
}
