//! The `pastella-pool` command line: run the pool, check a config, run the devnet.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pastella_pool::config::{Config, Module};
use pastella_pool::store::Store;
use tracing_subscriber::EnvFilter;

/// Exit code for an unusable config file (also clap's code for bad arguments).
const EXIT_CONFIG: u8 = 2;

/// Mining pool server for Pastella (PAS), a RandomX proof-of-work coin.
#[derive(Parser)]
#[command(name = "pastella-pool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pool (all modules, or the ones named with --module).
    Run(RunArgs),
    /// Validate a config file: print its warnings and the effective configuration, or every
    /// error (exit code 2).
    CheckConfig(ConfigArg),
    /// Run a simulated Pastellad and wallet API on loopback for tests and trials.
    Devnet(DevnetArgs),
    /// Check the books in Redis: per address credited = balance + pending + paid + fees, the
    /// confirmed blocks' credits equal to what the balances were credited, no block resolved
    /// twice, payment batches held or dropped, and (with payments enabled) the wallet's
    /// balance against what the books owe. Read-only; safe while the pool runs. Exit code 0 if
    /// they balance, 1 if not.
    Audit(ConfigArg),
    /// Payment batches that need the operator: list them, or settle a held one.
    Payments(PaymentsArgs),
    /// Recompute a confirmed block's split from its stored window, fee and finder reward (the
    /// terms it was credited with) and compare it with what was credited, to the atomic unit.
    /// Read-only. Exit code 0 if equal, 1 naming every difference, 2 if the block cannot be
    /// checked (not found, not confirmed, record expired).
    VerifyBlock(VerifyBlockArgs),
    /// Zero-downtime upgrade: the running pool (found through the config's `upgrade.socket`)
    /// starts the binary on disk with this config, hands it its listening sockets, closes its
    /// miners over `upgrade.drainSeconds` and exits once its shares are flushed. Exit code 0 when
    /// the new process serves and the old one is done; 2 for an invalid config, 1 otherwise
    /// (the running pool then serves on, unchanged).
    Upgrade(ConfigArg),
}

#[derive(Args)]
struct VerifyBlockArgs {
    /// The block: its height, or its id (64 hex digits).
    block: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args)]
struct PaymentsArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    action: PaymentsAction,
}

#[derive(Subcommand)]
enum PaymentsAction {
    /// Batches in flight (unknown, held, ...), dropped payments and quarantined addresses.
    List,
    /// Settles a held batch as sent or not sent; refused when the wallet shows otherwise.
    Resolve(ResolveArgs),
}

#[derive(Args)]
struct ResolveArgs {
    /// The batch id (from `payments list`).
    batch: String,
    /// The transaction was sent: pending → paid. The wallet must list it.
    #[arg(long, conflicts_with = "not_sent", required_unless_present = "not_sent")]
    sent: bool,
    /// It was not sent: its prepared transaction is deleted from the wallet, then pending →
    /// balance. The wallet must not list it.
    #[arg(long)]
    not_sent: bool,
}

#[derive(Args)]
struct ConfigArg {
    /// Path of the JSON config file (seed-document or old Node.js pool format).
    #[arg(long, short = 'c', value_name = "PATH", default_value = "config.json")]
    config: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// A module to run; repeat to run several. Lets one machine serve only stratum while
    /// another runs the unlocker and payments.
    #[arg(long = "module", short = 'm', value_name = "NAME", value_enum, default_value = "all")]
    modules: Vec<ModuleArg>,
}

/// Arguments of `devnet` (every flag is described in docs/DEVNET.md).
type DevnetArgs = pastella_pool::devnet::DevnetArgs;

/// What `--module` accepts.
#[derive(Clone, Copy, ValueEnum)]
enum ModuleArg {
    /// Every module.
    All,
    /// The stratum ports, share verification and block submission.
    Stratum,
    /// The block unlocker (crediting matured blocks).
    Unlocker,
    /// The payment processor.
    Payments,
    /// The HTTP stats API.
    Api,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig(args) => check_config(&args),
        Command::Run(args) => run(&args),
        Command::Devnet(args) => devnet(args),
        Command::Audit(args) => audit(&args),
        Command::Payments(args) => payments(&args),
        Command::VerifyBlock(args) => verify_block(&args),
        Command::Upgrade(args) => upgrade(&args),
    }
}

/// Exit code of `verify-block` when the block cannot be checked.
const EXIT_UNVERIFIABLE: u8 = 2;

fn verify_block(args: &VerifyBlockArgs) -> ExitCode {
    use pastella_pool::accounting::verify;
    let (config, runtime) = match load_with_runtime(&args.config, ExitCode::from(EXIT_UNVERIFIABLE)) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let redis = config.redis.target();
    let is_hash = args.block.len() == 64 && args.block.bytes().all(|b| b.is_ascii_hexdigit());
    let height = args.block.parse::<u64>().ok().filter(|_| !is_hash);
    if !is_hash && height.is_none() {
        eprintln!("error: {}: not a block height nor a block id (64 hex digits)", args.block);
        return ExitCode::from(EXIT_UNVERIFIABLE);
    }
    let result = runtime.block_on(async {
        let store = Store::connect_to(&redis, config.redis_prefix(), Duration::from_secs(10)).await?;
        let hash = match height {
            Some(height) => store.block_hashes_at(height).await?.into_iter().next(),
            None => Some(args.block.to_ascii_lowercase()),
        };
        match hash {
            Some(hash) => store.block_payout(&hash).await,
            None => Ok(None),
        }
    });
    let payout = match result {
        Ok(Some(payout)) => payout,
        Ok(None) => {
            eprintln!("error: block {}: the pool has no record of it", args.block);
            return ExitCode::from(EXIT_UNVERIFIABLE);
        }
        Err(e) => {
            eprintln!("error: Redis at {}: {e}", redis.describe());
            return ExitCode::from(EXIT_UNVERIFIABLE);
        }
    };
    let amount = |v: u64| format!("{v} ({} {})", coins(v, config.coin_units), config.symbol);
    println!(
        "block {} at height {} ({}, {})",
        payout.hash,
        payout.height,
        if payout.solo { "solo" } else { "prop" },
        payout.status
    );
    println!("  finder:        {}", payout.finder);
    println!("  reward:        {}", payout.reward.map_or_else(|| "unknown".to_string(), amount));
    println!(
        "  window:        {} of N = {} difficulty units, {} address(es)",
        payout.window_total,
        payout.window_size,
        payout.window.len()
    );
    if let Some(p) = &payout.partial {
        println!("  oldest record: {} counted {} of its {}", p.address, p.counted, p.record);
    }
    let differences = match verify::differences(&payout) {
        Ok(differences) => differences,
        Err(e) => {
            eprintln!("cannot verify: {e}");
            return ExitCode::from(EXIT_UNVERIFIABLE);
        }
    };
    println!("  pool fee:      {} ({} bps)", amount(payout.pool_fee), payout.fee_bps.unwrap_or(0));
    println!("  finder reward: {} ({} bps)", amount(payout.finder_reward), payout.finder_bps.unwrap_or(0));
    println!("  dust:          {}", amount(payout.dust));
    println!("  credited:      {} to {} address(es)", amount(payout.credited), payout.credits.len());
    if differences.is_empty() {
        println!("OK: the split recomputed from the stored window equals the credits, to the atomic unit");
        ExitCode::SUCCESS
    } else {
        for d in &differences {
            println!("DIFFERENT: {d}");
        }
        println!("{} difference(s)", differences.len());
        ExitCode::FAILURE
    }
}

fn wallet_client(config: &Config) -> pastella_pool::node::WalletClient {
    let w = &config.wallet_api;
    pastella_pool::node::WalletClient::new(&w.host, w.port, &w.api_key, w.timeout.min(Duration::from_secs(30)))
}

fn payments(args: &PaymentsArgs) -> ExitCode {
    use pastella_pool::accounting::payments::{resolve_held, Resolution};
    let (config, runtime) = match load_with_runtime(&args.config, ExitCode::FAILURE) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let redis = config.redis.target();
    runtime.block_on(async {
        let store = match Store::connect_to(&redis, config.redis_prefix(), Duration::from_secs(10)).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("error: Redis at {}: {e}", redis.describe());
                return ExitCode::FAILURE;
            }
        };
        match &args.action {
            PaymentsAction::List => match list_payments(&store).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            PaymentsAction::Resolve(r) => {
                let outcome = if r.sent { Resolution::Sent } else { Resolution::NotSent };
                match resolve_held(&store, &wallet_client(&config), &r.batch, outcome).await {
                    Ok(Resolution::Sent) => {
                        println!("batch {}: recorded as sent (pending -> paid)", r.batch);
                        ExitCode::SUCCESS
                    }
                    Ok(Resolution::NotSent) => {
                        println!(
                            "batch {}: recorded as not sent (pending -> balance); if the wallet still shows locked funds, rescan it (PUT /reset)",
                            r.batch
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("refused: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

async fn list_payments(store: &Store) -> Result<(), pastella_pool::store::StoreError> {
    let journal = store.journal().await?;
    println!("batches in flight: {}", journal.len());
    for e in &journal {
        println!(
            "  {}  {:<8}  tx {}  {} destination(s), {} atomic units  absent rounds {}  {}",
            e.id,
            e.state,
            e.tx_hash.as_deref().unwrap_or("-"),
            e.destinations.len(),
            e.total(),
            e.absent_rounds,
            e.error.as_deref().unwrap_or("")
        );
    }
    let dropped = store.dropped().await?;
    println!("finalized but never confirmed (dropped): {}", dropped.len());
    for e in &dropped {
        println!("  {}  tx {}  {} atomic units", e.id, e.tx_hash.as_deref().unwrap_or("-"), e.total());
    }
    let quarantined = store.quarantined().await?;
    println!("quarantined addresses (never paid, balance kept): {}", quarantined.len());
    for (address, reason) in &quarantined {
        println!("  {address}  {reason}");
    }
    Ok(())
}

/// Atomic units as a decimal coin amount (`coin_units` a power of ten, as configs have it).
fn coins(atomic: u64, coin_units: u64) -> String {
    let units = coin_units.max(1);
    let decimals = units.ilog10() as usize;
    let (whole, fraction) = (atomic / units, atomic % units);
    if decimals == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{fraction:0decimals$}")
    }
}

fn audit(args: &ConfigArg) -> ExitCode {
    let (config, runtime) = match load_with_runtime(args, ExitCode::FAILURE) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let redis = config.redis.target();
    let result = runtime.block_on(async {
        let store = Store::connect_to(&redis, config.redis_prefix(), Duration::from_secs(10)).await?;
        let audit = store.audit().await?;
        // The wallet is only the pool's business when it pays.
        let wallet = if config.payments.enabled {
            Some(pastella_pool::accounting::payments::wallet_books(&store, &wallet_client(&config)).await)
        } else {
            None
        };
        Ok::<_, pastella_pool::store::StoreError>((audit, wallet))
    });
    let (audit, wallet) = match result {
        Ok(audit) => audit,
        Err(e) => {
            eprintln!("error: Redis at {}: {e}", redis.describe());
            return ExitCode::FAILURE;
        }
    };
    let amount = |v: u64| format!("{v} ({} {})", coins(v, config.coin_units), config.symbol);
    println!("credited to balances: {}", amount(audit.credited));
    println!("  balance (owed):      {}", amount(audit.balance));
    println!("  pending (in flight): {} in {} journaled batch(es)", amount(audit.pending), audit.in_flight_batches);
    println!("  paid:                {}", amount(audit.paid));
    println!("  fees (charged):      {}", amount(audit.fees));
    println!(
        "blocks: {} confirmed crediting {}, {} orphaned",
        audit.blocks_confirmed,
        amount(audit.credited_by_blocks),
        audit.blocks_orphaned
    );
    println!(
        "payments: {} unknown, {} held, {} dropped; {} quarantined address(es)",
        audit.unknown_batches.len(),
        audit.held_batches.len(),
        audit.dropped_batches.len(),
        audit.quarantined.len()
    );
    for (address, reason) in &audit.quarantined {
        println!("  quarantined {address}: {reason}");
    }
    for (id, why) in &audit.waiting_inputs {
        println!("  waiting for the wallet's inputs: batch {id}: {why}");
    }
    let mut problems = audit.problems();
    match wallet {
        Some(Ok(books)) => {
            println!(
                "wallet: {} unlocked, {} locked; the books owe {} ({} young block rewards, {} batches in flight, {} payments unconfirmed)",
                amount(books.unlocked),
                amount(books.locked),
                amount(books.owed),
                amount(books.immature),
                books.batches_in_flight,
                books.payments_unconfirmed
            );
            problems.extend(books.problems());
        }
        Some(Err(e)) => problems.push(format!("cannot check the wallet's balance against the books: {e}")),
        None => {}
    }
    if problems.is_empty() {
        println!("OK: the books balance to the atomic unit");
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("PROBLEM: {problem}");
        }
        ExitCode::FAILURE
    }
}

/// Loads the config, or prints every error to stderr and returns the exit code.
fn load(args: &ConfigArg) -> Result<(Config, Vec<String>), ExitCode> {
    Config::load(&args.config).map_err(|error| {
        for warning in error.warnings() {
            eprintln!("warning: {warning}");
        }
        eprintln!("{error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The config and a one-thread runtime, for the commands that ask Redis (and the wallet) once;
/// `failure` is the exit code when no runtime can be built.
fn load_with_runtime(args: &ConfigArg, failure: ExitCode) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let (config, _) = load(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("error: {e}");
        failure
    })?;
    Ok((config, runtime))
}

fn check_config(args: &ConfigArg) -> ExitCode {
    let (config, warnings) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in &warnings {
        println!("warning: {warning}");
    }
    println!("{}", config.summary());
    println!("{}: OK", args.config.display());
    ExitCode::SUCCESS
}

fn run(args: &RunArgs) -> ExitCode {
    let (config, warnings) = match load(&args.config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed_by_env = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.logging.level));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .event_format(pastella_pool::log_format::PoolFormat::default())
        .with_filter_reloading();
    let filter_handle = subscriber.reload_handle();
    subscriber.init();
    // A reload may change the level unless RUST_LOG fixed it.
    let set_level: Option<pastella_pool::reload::LogLevelSetter> = (!fixed_by_env).then(|| {
        Box::new(move |level: &str| {
            let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            filter_handle.reload(filter).map_err(|e| e.to_string())
        }) as pastella_pool::reload::LogLevelSetter
    });
    let path = std::fs::canonicalize(&args.config.config).unwrap_or_else(|_| args.config.config.clone());
    pastella_pool::reload::install(path, set_level);
    for warning in &warnings {
        tracing::warn!("{}: {warning}", args.config.config.display());
    }
    let modules = selected_modules(&args.modules);
    for line in config.summary().lines() {
        tracing::info!("{line}");
    }
    let system = actix::System::new();
    match system.block_on(pastella_pool::app::run(config, modules)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Printed, not only logged, so no log filter can hide why the pool stopped.
            eprintln!("error: {error:#}");
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn upgrade(args: &ConfigArg) -> ExitCode {
    use pastella_pool::upgrade::request;
    let config = match load(args) {
        Ok((config, _)) => config,
        Err(code) => {
            eprintln!("upgrade refused: the running pool is untouched");
            return code;
        }
    };
    let result = request(&config.upgrade.socket, &args.config, say_upgrade_event);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upgrade failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one step of an upgrade (a failure is printed by the caller, to stderr).
fn say_upgrade_event(event: &pastella_pool::upgrade::Event) {
    use pastella_pool::upgrade::Event;
    match event {
        Event::Started { pid } => println!("new process started (pid {pid}), handing it the listening sockets"),
        Event::Serving { pid, sessions, drain_seconds } => {
            println!(
                "new process (pid {pid}) serves; the old one closes its {sessions} session(s) over {drain_seconds} s"
            )
        }
        Event::Done { pid, sessions } => println!(
            "upgrade done: {sessions} session(s) drained to the new process (pid {pid}); the old process flushed its \
             shares and exits"
        ),
        Event::Failed { .. } => {}
    }
}

fn selected_modules(args: &[ModuleArg]) -> Vec<Module> {
    let mut modules: Vec<Module> = args
        .iter()
        .flat_map(|arg| match arg {
            ModuleArg::All => Module::all(),
            ModuleArg::Stratum => vec![Module::Stratum],
            ModuleArg::Unlocker => vec![Module::Unlocker],
            ModuleArg::Payments => vec![Module::Payments],
            ModuleArg::Api => vec![Module::Api],
        })
        .collect();
    modules.sort();
    modules.dedup();
    modules
}

/// Runs the simulated Pastellad and wallet API in the foreground until Ctrl-C.
fn devnet(args: DevnetArgs) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pastella_pool::devnet::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::coins;

    #[test]
    fn atomic_units_print_as_coins() {
        assert_eq!(coins(0, 100_000_000), "0.00000000");
        assert_eq!(coins(123_456_789, 100_000_000), "1.23456789");
        assert_eq!(coins(5, 1), "5");
        assert_eq!(coins(1_050, 100), "10.50");
    }
}
