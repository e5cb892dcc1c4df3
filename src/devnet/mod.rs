//! `pastella-pool devnet`: a simulated Pastellad and Pastella-Wallet-API on loopback, speaking
//! the real wire formats (spec §1, §2, §3, §6 and the real-node captures), for the integration
//! tests, the load generator and trying the pool without a real chain.
//!
//! - The daemon side ([`rpc`]) keeps a real chain from the real genesis block: templates built
//!   like `Core::getBlockTemplate`, submitted blocks checked like `Core::submitBlock` including
//!   RandomX (light mode, the seed of the block's height) and the difficulty (fixed, or the real
//!   LWMA-2), alternative blocks and chain switches by cumulative difficulty. Other miners add
//!   blocks every `block_time`, so the pool sees competition.
//! - The wallet side ([`wallet_api`]) holds one address whose balance comes from the coinbase
//!   outputs of main-chain blocks (locked for 10 blocks) minus what it sent; sends become
//!   mempool transactions that later templates carry and blocks confirm.
//! - Control endpoints ([`control`], under `/devnet/` on the daemon port and on a separate
//!   control port that stays up while the daemon refuses connections) mine, reorganise, break
//!   the daemon, make wallet sends fail, attach staking payouts and show the state.
//!
//! [`start`] runs it in-process (tests use port 0); [`DevnetArgs`] and [`run`] are the command.
//! Everything is documented for users in `docs/DEVNET.md`.

mod cli;
mod control;
mod http;
mod json;
mod ledger;
mod rpc;
mod wallet;
mod wallet_api;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chain::{Address, Hash, TxOut};
use crate::pow::{Mode, PowConfig, PowEngine, PowError};

pub use cli::{run, DevnetArgs};
pub use wallet::{Failure, FailureKind};

use ledger::Ledger;
use wallet::Wallet;

/// The address the docs use in examples; the devnet wallet's default address.
pub const DEFAULT_WALLET_ADDRESS: &str = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";
/// Where the simulated other miners are paid: the genesis recipient (spec §4).
pub const OTHER_MINERS_ADDRESS: &str = "PAS18z7m9DGbJFoVv6HiGoiwxNG5mLoniSEFWkguBKt59JSHPHjYaa";

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Interface to listen on (loopback unless you mean it).
    pub bind: IpAddr,
    /// Daemon RPC port (21001; 0 = any free port).
    pub daemon_port: u16,
    /// Wallet API port (21002; 0 = any).
    pub wallet_port: u16,
    /// Control port, up even while the daemon refuses connections (21003; 0 = any).
    pub control_port: u16,
    /// A fixed network difficulty; `None` runs the real LWMA-2.
    pub difficulty: Option<u64>,
    /// Other miners find a block this often; `None`: only on request.
    pub block_time: Option<Duration>,
    /// File keeping the chain, mempool and wallet across restarts; `None`: memory only.
    pub data: Option<PathBuf>,
    /// The wallet API's `--rpc-password` (the `X-API-KEY` value).
    pub api_key: String,
    /// The wallet file name `/wallet/open` accepts.
    pub wallet_file: String,
    /// Its password.
    pub wallet_password: String,
    /// The wallet's address.
    pub wallet_address: Address,
    /// Whether the wallet starts open (like an operator who opened it already) or closed (like
    /// a freshly started wallet API).
    pub wallet_open: bool,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        DevnetConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            daemon_port: 21001,
            wallet_port: 21002,
            control_port: 21003,
            difficulty: None,
            block_time: None,
            data: None,
            api_key: "devnet-api-key".into(),
            wallet_file: "pool.wallet".into(),
            wallet_password: "devnet".into(),
            wallet_address: Address::parse(DEFAULT_WALLET_ADDRESS).unwrap_or_else(|_| Address::from_key([0; 32])),
            wallet_open: true,
        }
    }
}

impl DevnetConfig {
    /// The defaults on free ports, for tests.
    pub fn ephemeral() -> Self {
        DevnetConfig { daemon_port: 0, wallet_port: 0, control_port: 0, ..DevnetConfig::default() }
    }
}

/// Why the devnet could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A port could not be bound.
    #[error("devnet: cannot listen for the {what} on {addr}: {source} (is another devnet or Pastellad running? pick another port)")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data file cannot be read or written.
    #[error("devnet: data file {path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// RandomX could not start.
    #[error("devnet: RandomX: {0}")]
    Pow(#[from] PowError),
    /// A control request was refused.
    #[error("devnet: {0}")]
    Control(String),
}

/// The simulated daemon's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonMode {
    /// Answer normally.
    Normal,
    /// Stop listening: connections are refused (the control port stays up).
    Refuse,
    /// Answer every RPC with HTTP 500 `{"status":"Failed","error":"Internal server error: …"}`.
    Error500,
    /// Not synced: `getblocktemplate` and `submitblock` answer the not-synced error, `/info`
    /// says `"synced": false`.
    NotSynced,
}

/// The devnet at a glance (`GET /devnet/state`).
#[derive(Debug, Clone, Serialize)]
pub struct DevnetState {
    /// Index of the top block.
    pub height: u64,
    /// Main-chain block count (what `/info` calls `height`).
    pub block_count: u64,
    /// Id of the top block.
    pub tip: Hash,
    /// Difficulty of the next block.
    pub difficulty: u64,
    /// The daemon's mode.
    pub daemon_mode: DaemonMode,
    /// Blocks off the main chain.
    pub alt_blocks: Vec<AltBlock>,
    /// Transactions waiting for a block.
    pub mempool: Vec<MempoolTx>,
    /// Staking payouts attached to heights.
    pub staking: Vec<StakingPayout>,
    /// The wallet.
    pub wallet: WalletSummary,
}

/// An alternative block in [`DevnetState`].
#[derive(Debug, Clone, Serialize)]
pub struct AltBlock {
    /// Block id.
    pub hash: Hash,
    /// Block index.
    pub height: u64,
    /// Parent id.
    pub prev_hash: Hash,
}

/// A mempool transaction in [`DevnetState`].
#[derive(Debug, Clone, Serialize)]
pub struct MempoolTx {
    /// Transaction hash.
    pub hash: Hash,
    /// Fee.
    pub fee: u64,
    /// Sum of the destinations.
    pub amount: u64,
    /// The recipients.
    pub destinations: Vec<Payment>,
}

/// One recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    /// Address as given to the wallet.
    pub address: String,
    /// Atomic units.
    pub amount: u64,
}

/// A staking payout in [`DevnetState`].
#[derive(Debug, Clone, Serialize)]
pub struct StakingPayout {
    /// Block index whose coinbase carries it (output 1).
    pub height: u64,
    /// Amount.
    pub amount: u64,
    /// Recipient.
    pub address: String,
}

/// The wallet in [`DevnetState`].
#[derive(Debug, Clone, Serialize)]
pub struct WalletSummary {
    /// Whether a wallet is open in the API.
    pub open: bool,
    /// Its address.
    pub address: String,
    /// `GET /balance` `unlocked`.
    pub unlocked: u64,
    /// `GET /balance` `locked`.
    pub locked: u64,
    /// Prepared, unsent transaction hashes.
    pub prepared: Vec<Hash>,
    /// Injected failures waiting for the next sends.
    pub pending_failures: Vec<Failure>,
}

/// What an address received from the devnet wallet (`GET /devnet/received/<address>`).
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// The address.
    pub address: String,
    /// Total of confirmed (main-chain) transfers.
    pub received: u64,
    /// Total of transfers still in the mempool.
    pub pending: u64,
    /// Each transfer.
    pub transactions: Vec<ReceivedTx>,
}

/// One transfer in [`Received`].
#[derive(Debug, Clone, Serialize)]
pub struct ReceivedTx {
    /// Transaction hash.
    pub hash: Hash,
    /// Amount to the address.
    pub amount: u64,
    /// Index of the confirming block; `None` while in the mempool.
    pub block_height: Option<u64>,
}

/// The result of a reorganisation.
#[derive(Debug, Clone, Serialize)]
pub struct Reorg {
    /// Former main-chain blocks, now alternative (orphaned).
    pub orphaned: Vec<Hash>,
    /// The new main-chain blocks.
    pub added: Vec<Hash>,
    /// New top index.
    pub height: u64,
    /// New tip.
    pub tip: Hash,
}

/// Chain and wallet under one lock: the wallet's balance reads the chain.
pub(crate) struct State {
    pub ledger: Ledger,
    pub wallet: Wallet,
}

/// Everything the listeners share.
pub(crate) struct Shared {
    pub config: DevnetConfig,
    state: Mutex<State>,
    pub engine: PowEngine,
    mode: watch::Sender<DaemonMode>,
    /// Bumped on every mode change, so a stale auto-resume does nothing.
    mode_generation: AtomicU64,
    pub start_time: u64,
    pub other_key: [u8; 32],
    pub staker_key: [u8; 32],
    dirty: AtomicBool,
    seeds: Mutex<(Hash, Hash)>,
    pub stop: CancellationToken,
}

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One RandomX engine per process: devnets started by tests in one binary share its light
/// caches (256 MiB and about a second each).
fn shared_engine() -> Result<PowEngine, PowError> {
    static ENGINE: OnceLock<PowEngine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let engine = PowEngine::new(PowConfig { mode: Mode::Light, threads: 2, dataset_threads: 1, huge_pages: false })?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mode(&self) -> DaemonMode {
        *self.mode.borrow()
    }

    /// Records that the chain or wallet changed: persist soon, prepare new seeds.
    pub fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        let seeds = {
            let state = self.lock();
            let next = state.ledger.count();
            (state.ledger.seed_for(next), state.ledger.seed_for(next + 1))
        };
        let mut prepared = self.seeds.lock().unwrap_or_else(|e| e.into_inner());
        if *prepared != seeds {
            *prepared = seeds;
            self.engine.prepare(&[seeds.0 .0, seeds.1 .0]);
        }
    }

    /// Sets the daemon's mode; `resume_after` returns it to normal later.
    pub fn set_mode(self: &Arc<Self>, mode: DaemonMode, resume_after: Option<Duration>) {
        let generation = self.mode_generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.mode.send_replace(mode);
        tracing::info!(?mode, "devnet: daemon mode");
        if let (Some(after), true) = (resume_after, mode != DaemonMode::Normal) {
            let shared = self.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(after) => {}
                    _ = shared.stop.cancelled() => return,
                }
                if shared.mode_generation.load(Ordering::Acquire) == generation {
                    shared.set_mode(DaemonMode::Normal, None);
                }
            });
        }
    }

    /// Mines `count` blocks of the simulated network paying `key` (the other miners' by
    /// default).
    pub fn mine(&self, count: u64, key: Option<[u8; 32]>) -> Vec<Hash> {
        let key = key.unwrap_or(self.other_key);
        let mut rng = rand::thread_rng();
        let mined = {
            let mut state = self.lock();
            (0..count).map(|_| state.ledger.mine_other(key, now(), &mut rng)).collect()
        };
        self.changed();
        mined
    }

    /// Replaces the last `depth` blocks with `depth + 1` blocks of the simulated network.
    pub fn reorg(&self, depth: u64) -> Result<Reorg, String> {
        let mut rng = rand::thread_rng();
        let result = {
            let mut state = self.lock();
            let (orphaned, added) = state.ledger.reorg(depth, self.other_key, now(), &mut rng)?;
            let top = state.ledger.top();
            Reorg { orphaned, added, height: top.height, tip: top.id }
        };
        self.changed();
        Ok(result)
    }

    /// Attaches a staking payout to the next block; returns its height.
    pub fn attach_staking(&self, amount: u64) -> u64 {
        let height = {
            let mut state = self.lock();
            let height = state.ledger.count();
            state.ledger.attach_staking(height, TxOut { amount, key: self.staker_key });
            height
        };
        self.changed();
        height
    }

    /// Queues `count` failures for the next wallet sends (or prepares, for the prepare kinds).
    pub fn fail_sends(&self, count: usize, failure: Failure) {
        let mut state = self.lock();
        for _ in 0..count {
            state.wallet.failures.push_back(failure.clone());
        }
        drop(state);
        self.dirty.store(true, Ordering::Release);
    }

    /// Restarts the wallet: prepared transactions are forgotten, their inputs stay locked.
    pub fn restart_wallet(&self) {
        self.lock().wallet.restart();
        self.dirty.store(true, Ordering::Release);
    }

    /// Drops mempool transactions (all, or `hash`) as if the network never mined them.
    pub fn drop_mempool(&self, hash: Option<Hash>) -> Vec<Hash> {
        let dropped = self.lock().ledger.drop_from_mempool(hash);
        self.changed();
        dropped
    }

    /// Makes the wallet reject `address` as a destination with error `code`; `in_validate`:
    /// `/addresses/validate` rejects it too.
    pub fn reject_address(&self, address: &str, code: i64, in_validate: bool) {
        self.lock().wallet.rejected.insert(address.to_string(), (code, in_validate));
    }

    /// Mines a block right after each of the next `count` transaction lookups is answered.
    pub fn mine_after_lookups(&self, count: u32) {
        self.lock().wallet.mine_after_lookups = count;
    }

    pub fn state(&self) -> DevnetState {
        let state = self.lock();
        let ledger = &state.ledger;
        let top = ledger.top();
        let (unlocked, locked) = state.wallet.balance(ledger);
        DevnetState {
            height: top.height,
            block_count: ledger.count(),
            tip: top.id,
            difficulty: ledger.difficulty_after(&top.id),
            daemon_mode: self.mode(),
            alt_blocks: ledger
                .alternative_blocks()
                .into_iter()
                .map(|b| AltBlock { hash: b.id, height: b.height, prev_hash: b.block.header.prev_id })
                .collect(),
            mempool: ledger
                .mempool()
                .into_iter()
                .map(|t| MempoolTx {
                    hash: t.hash,
                    fee: t.fee,
                    amount: t.amount(),
                    destinations: t
                        .destinations
                        .iter()
                        .map(|(address, amount)| Payment { address: address.clone(), amount: *amount })
                        .collect(),
                })
                .collect(),
            staking: ledger
                .staking()
                .iter()
                .map(|(h, o)| StakingPayout {
                    height: *h,
                    amount: o.amount,
                    address: Address::from_key(o.key).encode(),
                })
                .collect(),
            wallet: WalletSummary {
                open: state.wallet.open,
                address: state.wallet.address.encode(),
                unlocked,
                locked,
                prepared: state.wallet.prepared.iter().map(|p| p.tx.hash).collect(),
                pending_failures: state.wallet.failures.iter().cloned().collect(),
            },
        }
    }

    pub fn received(&self, address: &str) -> Received {
        let state = self.lock();
        let mut out = Received { address: address.to_string(), received: 0, pending: 0, transactions: Vec::new() };
        let mut txs: Vec<ReceivedTx> = state
            .ledger
            .txs()
            .filter(|t| state.wallet.sent.contains(&t.hash))
            .filter_map(|t| {
                let amount =
                    t.destinations.iter().filter(|(a, _)| a == address).map(|(_, v)| *v).fold(0, u64::saturating_add);
                if amount == 0 {
                    return None;
                }
                let block_height = state.ledger.tx(&t.hash).and_then(|(_, b)| b).map(|b| b.height);
                Some(ReceivedTx { hash: t.hash, amount, block_height })
            })
            .collect();
        txs.sort_by_key(|t| (t.block_height.unwrap_or(u64::MAX), t.hash));
        for t in &txs {
            match t.block_height {
                Some(_) => out.received = out.received.saturating_add(t.amount),
                None => out.pending = out.pending.saturating_add(t.amount),
            }
        }
        out.transactions = txs;
        out
    }

    /// Writes the data file now (no-op without one).
    pub async fn save(self: &Arc<Self>) -> Result<(), DevnetError> {
        let Some(path) = self.config.data.clone() else { return Ok(()) };
        self.dirty.store(false, Ordering::Release);
        let bytes = {
            let state = self.lock();
            let snapshot = DataFile {
                format: DATA_FORMAT.into(),
                ledger: state.ledger.snapshot(),
                wallet: state.wallet.snapshot(),
            };
            serde_json::to_vec(&snapshot)
                .map_err(|e| DevnetError::Data { path: path.clone(), message: e.to_string() })?
        };
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&target, &bytes)).await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DevnetError::Data { path, message: e.to_string() }),
            Err(e) => Err(DevnetError::Data { path, message: e.to_string() }),
        }
    }
}

const DATA_FORMAT: &str = "pastella-devnet/1";

/// The data file.
#[derive(Serialize, Deserialize)]
struct DataFile {
    format: String,
    ledger: ledger::LedgerSnapshot,
    wallet: wallet::WalletSnapshot,
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn load(config: &DevnetConfig, wallet: &mut Wallet) -> Result<Ledger, DevnetError> {
    let Some(path) = &config.data else { return Ok(Ledger::new(config.difficulty)) };
    let data_error = |message: String| DevnetError::Data { path: path.clone(), message };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::new(config.difficulty)),
        Err(e) => return Err(data_error(e.to_string())),
    };
    let file: DataFile =
        serde_json::from_slice(&bytes).map_err(|e| data_error(format!("not a devnet data file: {e}")))?;
    if file.format != DATA_FORMAT {
        return Err(data_error(format!("format {:?}, expected {DATA_FORMAT:?}", file.format)));
    }
    let ledger = Ledger::restore(&file.ledger, config.difficulty).map_err(data_error)?;
    wallet.restore(&file.wallet).map_err(data_error)?;
    Ok(ledger)
}

/// A running devnet. [`DevnetHandle::stop`] shuts it down (and writes the data file);
/// dropping the handle stops the listeners too, without the final write.
pub struct DevnetHandle {
    /// The daemon RPC address.
    pub daemon_addr: SocketAddr,
    /// The wallet API address.
    pub wallet_addr: SocketAddr,
    /// The control address.
    pub control_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl DevnetHandle {
    /// Stops every listener and background task, then writes the data file.
    pub async fn stop(mut self) {
        self.shared.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Err(error) = self.shared.save().await {
            tracing::warn!(%error, "devnet: final save failed");
        }
    }

    /// Main-chain block count.
    pub fn block_count(&self) -> u64 {
        self.shared.lock().ledger.count()
    }

    /// Mines `count` blocks of the simulated network now (`POST /devnet/mine`).
    pub fn mine(&self, count: u64) -> Vec<Hash> {
        self.shared.mine(count, None)
    }

    /// Mines `count` blocks paying `address`, without proof of work (`POST /devnet/mine` with
    /// `"address"`): funds a wallet or a test address quickly.
    pub fn mine_to(&self, count: u64, address: &Address) -> Vec<Hash> {
        self.shared.mine(count, Some(*address.key()))
    }

    /// `POST /devnet/reorg`.
    pub fn reorg(&self, depth: u64) -> Result<Reorg, DevnetError> {
        self.shared.reorg(depth).map_err(DevnetError::Control)
    }

    /// `POST /devnet/daemon`.
    pub fn set_daemon_mode(&self, mode: DaemonMode, resume_after: Option<Duration>) {
        self.shared.set_mode(mode, resume_after);
    }

    /// `POST /devnet/wallet/fail`.
    pub fn fail_wallet_sends(&self, count: usize, failure: Failure) {
        self.shared.fail_sends(count, failure);
    }

    /// `POST /devnet/wallet/restart`.
    pub fn restart_wallet(&self) {
        self.shared.restart_wallet();
    }

    /// `POST /devnet/mempool/drop`.
    pub fn drop_mempool(&self, hash: Option<Hash>) -> Vec<Hash> {
        self.shared.drop_mempool(hash)
    }

    /// `POST /devnet/wallet/reject`.
    pub fn reject_address(&self, address: &str, code: i64, in_validate: bool) {
        self.shared.reject_address(address, code, in_validate);
    }

    /// `POST /devnet/wallet/mine_after_lookup`.
    pub fn mine_after_lookups(&self, count: u32) {
        self.shared.mine_after_lookups(count);
    }

    /// `POST /devnet/staking`: returns the height whose coinbase will carry it.
    pub fn attach_staking(&self, amount: u64) -> u64 {
        self.shared.attach_staking(amount)
    }

    /// `GET /devnet/state`.
    pub fn state(&self) -> DevnetState {
        self.shared.state()
    }

    /// `GET /devnet/received/<address>`.
    pub fn received(&self, address: &str) -> Received {
        self.shared.received(address)
    }
}

impl Drop for DevnetHandle {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

fn bind(what: &'static str, ip: IpAddr, port: u16) -> Result<tokio::net::TcpListener, DevnetError> {
    let addr = SocketAddr::new(ip, port);
    http::bind(addr).map_err(|source| DevnetError::Bind { what, addr, source })
}

fn local_addr(what: &'static str, listener: &tokio::net::TcpListener, ip: IpAddr) -> Result<SocketAddr, DevnetError> {
    listener.local_addr().map_err(|source| DevnetError::Bind { what, addr: SocketAddr::new(ip, 0), source })
}

/// Starts the devnet: binds the three ports, loads the data file, starts building the RandomX
/// light cache for the current seed in the background and returns at once. Needs a tokio
/// runtime (an actix System is one).
pub async fn start(config: DevnetConfig) -> Result<DevnetHandle, DevnetError> {
    let mut wallet =
        Wallet::new(config.wallet_address, &config.wallet_file, &config.wallet_password, config.wallet_open);
    let ledger = load(&config, &mut wallet)?;
    let daemon_listener = bind("daemon RPC", config.bind, config.daemon_port)?;
    let wallet_listener = bind("wallet API", config.bind, config.wallet_port)?;
    let control_listener = bind("control endpoints", config.bind, config.control_port)?;
    let daemon_addr = local_addr("daemon RPC", &daemon_listener, config.bind)?;
    let wallet_addr = local_addr("wallet API", &wallet_listener, config.bind)?;
    let control_addr = local_addr("control endpoints", &control_listener, config.bind)?;
    let engine = shared_engine()?;
    let other_key = Address::parse(OTHER_MINERS_ADDRESS).map(|a| *a.key()).unwrap_or([0; 32]);
    let (mode, _) = watch::channel(DaemonMode::Normal);
    let shared = Arc::new(Shared {
        config: config.clone(),
        state: Mutex::new(State { ledger, wallet }),
        engine,
        mode,
        mode_generation: AtomicU64::new(0),
        start_time: now(),
        other_key,
        staker_key: ledger::derived_point("pastella devnet staker"),
        dirty: AtomicBool::new(false),
        seeds: Mutex::new((Hash::ZERO, Hash::ZERO)),
        stop: CancellationToken::new(),
    });
    // Starts the light-cache build for the current seeds in the background.
    shared.changed();
    shared.dirty.store(false, Ordering::Release);

    let mut tasks = Vec::new();
    let daemon_handler: http::Handler = {
        let shared = shared.clone();
        Arc::new(move |req| Box::pin(rpc::handle(shared.clone(), req)))
    };
    tasks.push(tokio::spawn(rpc::listen(shared.clone(), daemon_listener, daemon_addr, daemon_handler)));
    let wallet_handler: http::Handler = {
        let shared = shared.clone();
        Arc::new(move |req| Box::pin(wallet_api::handle(shared.clone(), req)))
    };
    tasks.push(tokio::spawn(http::serve(wallet_listener, wallet_handler, shared.stop.clone())));
    let control_handler: http::Handler = {
        let shared = shared.clone();
        Arc::new(move |req| Box::pin(control::handle(shared.clone(), req)))
    };
    tasks.push(tokio::spawn(http::serve(control_listener, control_handler, shared.stop.clone())));
    if let Some(every) = config.block_time.filter(|d| !d.is_zero()) {
        tasks.push(tokio::spawn(other_miners(shared.clone(), every)));
    }
    if config.data.is_some() {
        tasks.push(tokio::spawn(saver(shared.clone())));
    }
    tracing::info!(%daemon_addr, %wallet_addr, %control_addr, height = shared.lock().ledger.count(), "devnet started");
    Ok(DevnetHandle { daemon_addr, wallet_addr, control_addr, shared, tasks })
}

/// The simulated network: a block every `every`.
async fn other_miners(shared: Arc<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shared.stop.cancelled() => return,
        }
        if let Some(id) = shared.mine(1, None).first() {
            tracing::debug!(block = %id, "devnet: other miners found a block");
        }
    }
}

/// Writes the data file at most once a second while something changed.
async fn saver(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shared.stop.cancelled() => return,
        }
        if shared.dirty.load(Ordering::Acquire) {
            if let Err(error) = shared.save().await {
                tracing::warn!(%error, "devnet: save failed");
            }
        }
    }
}
