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
    /// twice. Read-only; safe while the pool runs. Exit code 0 if they balance, 1 if not.
    Audit(ConfigArg),
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
    }
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
    let (config, _) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = config.redis.url();
    let result = runtime.block_on(async {
        let store = Store::connect(&url, config.redis_prefix(), Duration::from_secs(10)).await?;
        store.audit().await
    });
    let audit = match result {
        Ok(audit) => audit,
        Err(e) => {
            eprintln!("error: Redis at {}: {e}", pastella_pool::store::redact(&url));
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
    let problems = audit.problems();
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .event_format(pastella_pool::log_format::PoolFormat::default())
        .init();
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
