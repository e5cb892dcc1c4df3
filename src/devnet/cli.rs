//! `pastella-pool devnet`: flags and the foreground run.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{start, DevnetConfig, DevnetError, DEFAULT_WALLET_ADDRESS};
use crate::chain::Address;

/// Flags of `pastella-pool devnet` (every one is described in docs/DEVNET.md).
#[derive(Debug, Clone, clap::Args)]
pub struct DevnetArgs {
    /// Interface to listen on. The control endpoints answer loopback clients only.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Port of the simulated Pastellad RPC (0 = any free port).
    #[arg(long, value_name = "PORT", default_value_t = 21001)]
    pub daemon_port: u16,
    /// Port of the simulated wallet API (0 = any free port).
    #[arg(long, value_name = "PORT", default_value_t = 21002)]
    pub wallet_port: u16,
    /// Port of the control endpoints, up even while the daemon refuses connections.
    #[arg(long, value_name = "PORT", default_value_t = 21003)]
    pub control_port: u16,
    /// Fixed network difficulty (e.g. 10 for blocks in a few CPU hashes); without it the
    /// real LWMA-2 runs, starting at 1000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub difficulty: Option<u64>,
    /// Other miners find a block every SECONDS (fractions allowed); without it the chain
    /// only grows by your blocks and POST /devnet/mine.
    #[arg(long, value_name = "SECONDS")]
    pub block_time: Option<f64>,
    /// Keep the chain, mempool and wallet in FILE across restarts (memory only without it).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// The wallet API key (the real wallet's --rpc-password), sent as X-API-KEY.
    #[arg(long, value_name = "KEY", default_value = "devnet-api-key")]
    pub api_key: String,
    /// The wallet file name /wallet/open accepts.
    #[arg(long, value_name = "NAME", default_value = "pool.wallet")]
    pub wallet_file: String,
    /// Its password.
    #[arg(long, value_name = "PASSWORD", default_value = "devnet")]
    pub wallet_password: String,
    /// The wallet's address (coinbase outputs to it count as the wallet's balance).
    #[arg(long, value_name = "ADDRESS", default_value = DEFAULT_WALLET_ADDRESS, value_parser = parse_address)]
    pub wallet_address: Address,
    /// Start with no wallet open, like a freshly started wallet API (default: open).
    #[arg(long)]
    pub wallet_closed: bool,
}

fn parse_address(text: &str) -> Result<Address, String> {
    Address::parse(text).map_err(|e| format!("{e} (error {})", e.code()))
}

impl DevnetArgs {
    /// The devnet configuration these flags describe.
    pub fn config(&self) -> Result<DevnetConfig, DevnetError> {
        let block_time = match self.block_time {
            None => None,
            Some(s) => match Duration::try_from_secs_f64(s) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => None,
                Err(_) => {
                    return Err(DevnetError::Control(format!(
                        "--block-time must be a positive number of seconds, got {s}"
                    )))
                }
            },
        };
        Ok(DevnetConfig {
            bind: self.bind,
            daemon_port: self.daemon_port,
            wallet_port: self.wallet_port,
            control_port: self.control_port,
            difficulty: self.difficulty,
            block_time,
            data: self.data.clone(),
            api_key: self.api_key.clone(),
            wallet_file: self.wallet_file.clone(),
            wallet_password: self.wallet_password.clone(),
            wallet_address: self.wallet_address,
            wallet_open: !self.wallet_closed,
        })
    }
}

/// Runs the devnet in the foreground until Ctrl-C (or SIGTERM), then saves and stops.
pub async fn run(args: DevnetArgs) -> Result<(), DevnetError> {
    let config = args.config()?;
    let handle = start(config.clone()).await?;
    let state = handle.state();
    let rule = if config.difficulty.is_some() { "fixed" } else { "LWMA-2" };
    println!(
        "devnet: Pastellad RPC  http://{}  (height {}, difficulty {} {rule})",
        handle.daemon_addr, state.block_count, state.difficulty
    );
    println!(
        "devnet: wallet API     http://{}  (X-API-KEY {}, wallet {:?} password {:?}, {}, address {})",
        handle.wallet_addr,
        config.api_key,
        config.wallet_file,
        config.wallet_password,
        if config.wallet_open { "open" } else { "closed" },
        state.wallet.address
    );
    println!("devnet: control        http://{}/devnet/state", handle.control_addr);
    match &config.data {
        Some(path) => println!("devnet: data file      {}", path.display()),
        None => println!("devnet: in memory (use --data FILE to keep the chain)"),
    }
    match config.block_time {
        Some(every) => println!("devnet: other miners   a block every {} s", every.as_secs_f64()),
        None => println!("devnet: other miners   only on POST /devnet/mine (use --block-time SECONDS)"),
    }
    println!("devnet: Ctrl-C stops");
    wait_for_shutdown().await;
    println!("devnet: stopping");
    handle.stop().await;
    Ok(())
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
