//! What the coordinator and its worker shards say to each other. In-process shards get these
//! over channels; worker processes as JSON lines on stdin (commands) and stdout (events).

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::hashing::HashMode;
use crate::mix::{Arrivals, Mix};
use crate::stats::{FanoutStats, FinalStats, PhaseStats, Prepared, Progress, RampStats, RawStats};
use crate::tls::Trust;

/// Everything a shard needs to know, fixed for the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardPlan {
    /// This shard's number.
    pub shard: usize,
    /// Global index of this shard's first miner.
    pub first_miner: u64,
    /// Miners in this shard.
    pub miners: u64,
    /// Pool stratum addresses; miner `i` uses `pools[i % len]`.
    pub pools: Vec<SocketAddr>,
    /// Loopback source addresses; miner `i` binds `sources[i % len]` (empty: let the kernel pick).
    pub sources: Vec<Ipv4Addr>,
    /// Connects per second started by this shard.
    pub ramp_rate: f64,
    /// Distinct miner addresses (miner `i` uses address `i % addresses`).
    pub addresses: u64,
    /// Salt of the address derivation.
    pub address_salt: u64,
    /// Worker names are this prefix and the miner index.
    pub worker_prefix: String,
    /// `agent` sent at login.
    pub agent: String,
    /// A session silent this long sends `keepalived`, s.
    pub keepalive_s: f64,
    /// connect() timeout, ms.
    pub connect_timeout_ms: u64,
    /// A request unanswered this long counts as timed out, ms (xmrig: 20 s).
    pub response_timeout_ms: u64,
    /// RandomX mode for precomputing shares and the raw rate.
    pub hash_mode: HashMode,
    /// Hashing threads.
    pub hash_threads: usize,
    /// tokio worker threads of a worker process.
    pub runtime_threads: usize,
    /// The shard ends itself at this `mono_us` time whatever happens.
    pub hard_deadline_us: u64,
    /// `--tls`: sessions connect over TLS and accept this certificate; `None`: plain TCP.
    #[serde(default)]
    pub tls: Option<Trust>,
}

/// How a share phase offers load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Load {
    /// Shares at scheduled times regardless of answers (latency at an offered rate).
    Open {
        /// Total shares per second from this shard.
        rate: f64,
        /// Phase length, s.
        seconds: f64,
        /// Spacing.
        arrivals: Arrivals,
        /// Sessions used (0 = every logged-in session).
        sessions: usize,
    },
    /// Each session keeps `depth` shares in flight (the throughput ceiling).
    Closed {
        /// Sessions used.
        sessions: usize,
        /// Shares in flight per session.
        depth: usize,
        /// Phase length, s.
        seconds: f64,
        /// Valid shares to precompute across the sessions.
        stock: usize,
    },
}

/// A share phase to prepare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSpec {
    /// Phase id.
    pub id: u32,
    /// The load.
    pub load: Load,
    /// The share mix (closed loops send valid shares only).
    pub mix: Mix,
    /// RNG seed for arrival times and fake results.
    pub seed: u64,
}

/// Coordinator -> shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Connect and log in every miner at the ramp rate; answer [`Event::RampDone`].
    Ramp,
    /// Start watching for a job of at least `min_height`; answer [`Event::Armed`].
    Arm {
        /// The height of the block about to be mined.
        min_height: u64,
    },
    /// Stop watching; answer [`Event::Fanout`] with latencies from `t0_us` (`mono_us`).
    CollectFanout {
        /// When the block was requested.
        t0_us: u64,
    },
    /// Measure the raw hash rate for `seconds`; answer [`Event::Raw`].
    Raw {
        /// Hashing time, s.
        seconds: f64,
    },
    /// Plan and precompute a share phase; answer [`Event::Prepared`].
    Prepare(PhaseSpec),
    /// Run the prepared phase; answer [`Event::PhaseDone`].
    Go {
        /// Phase id.
        id: u32,
    },
    /// Close everything; answer [`Event::Final`] and end.
    Stop,
}

/// Shard -> coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    /// Counters, every second.
    Progress(Progress),
    /// Every miner connected and logged in, or failed.
    RampDone(Box<RampStats>),
    /// Watching for the fan-out job.
    Armed,
    /// Every alive session has the fan-out job (sent as soon as it happens).
    FanoutComplete,
    /// One fan-out round.
    Fanout(Box<FanoutStats>),
    /// The raw hash rate.
    Raw(RawStats),
    /// A phase is ready to go (or cannot run).
    Prepared(Prepared),
    /// A phase ended and every answer is in (or timed out).
    PhaseDone(Box<PhaseStats>),
    /// Closing figures; the shard ends after this.
    Final(Box<FinalStats>),
    /// Something the shard cannot recover from.
    Fatal(String),
}
