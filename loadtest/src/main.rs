//! # pastella-loadtest
//!
//! Simulates thousands of xmrig miners over real TCP against a running pastella-pool and
//! devnet, and measures what a farm operator cares about. How to run it: docs/LOADTEST.md.
//!
//! The map:
//! - [`cli`]: the flags.
//! - [`coordinator`]: the phases (ramp, idle memory, fan-out, shares), /proc sampling of the
//!   pool, the report; spreads miners over worker shards (tasks, or processes via `worker`).
//! - [`shard`]: one slice of the miners: a small reader task per connection, keepalives,
//!   response timeouts, the share scheduler.
//! - [`messages`]: coordinator <-> shard commands and events (JSON lines between processes).
//! - [`wire`]: the stratum lines a miner sends and parses; the pool's error messages as reasons.
//! - [`plan`], [`mix`]: which share goes where and when (mix interleaving, arrival times).
//! - [`hashing`]: the harness's own RandomX, to precompute valid shares and measure raw speed.
//! - [`histogram`], [`stats`], [`report`]: mergeable measurements and the summary.
//! - [`net`], [`procfs`], [`identity`], [`devnet`]: sockets, /proc, miner addresses, devnet control.
//! - [`tls`]: `--tls`, the rustls client of the simulated miners (pinned or unverified certificate).
//! - [`startup`]: timing a pool's start to its first job.
//! - [`api_load`]: `api`, the stats API polled by many browsers over a farm's hashrate window.

mod abuse;
mod api_load;
mod cli;
mod coordinator;
mod devnet;
mod hashing;
mod histogram;
mod identity;
mod messages;
mod mix;
mod net;
mod plan;
mod procfs;
mod report;
mod shard;
mod startup;
mod stats;
mod tls;
mod wire;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use cli::{Cli, Command, RawArgs};
use messages::ShardPlan;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => runtime(args.threads).and_then(|rt| {
            rt.block_on(async {
                let path = args.report.clone();
                let report = coordinator::run(*args).await?;
                coordinator::publish(&report, path.as_deref())?;
                Ok(if report.aborted.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
            })
        }),
        Command::Raw(args) => raw(&args).map(|_| ExitCode::SUCCESS),
        Command::Startup(args) => runtime(2).and_then(|rt| rt.block_on(startup::run(args)).map(|_| ExitCode::SUCCESS)),
        Command::Worker => worker(),
        Command::Api(args) => runtime(2).and_then(|rt| rt.block_on(api_load::run(args)).map(|_| ExitCode::SUCCESS)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pastella-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// `raw`: hashes a fixed blob on N threads and prints the rate.
fn raw(args: &RawArgs) -> anyhow::Result<()> {
    let seed = [0x5au8; 32];
    println!("building the RandomX {:?} hasher on {} thread(s)...", args.mode, args.threads);
    let mut engine = hashing::HashEngine::build(args.mode, seed, args.threads).map_err(anyhow::Error::msg)?;
    println!("built in {:.1} s; hashing {:.0} s", engine.build_s, args.seconds);
    let mut blob = vec![0u8; 76];
    blob[0] = 2;
    let (hashes, seconds, cpu_s) = engine.raw(&blob, 39, Duration::from_secs_f64(args.seconds));
    println!(
        "raw RandomX ({:?} mode, {} threads): {:.1} H/s ({hashes} hashes in {seconds:.1} s; {:.1} H/s per CPU-second \
         of a hashing thread, the threads got {:.0} % of their cores)",
        args.mode,
        engine.threads(),
        hashes as f64 / seconds,
        hashes as f64 / cpu_s,
        cpu_s / (seconds * engine.threads() as f64) * 100.0
    );
    Ok(())
}

/// A worker process: plan on the first stdin line, then commands; events on stdout.
fn worker() -> anyhow::Result<ExitCode> {
    let (soft, _) = procfs::raise_nofile_limit();
    let mut first = String::new();
    std::io::stdin().read_line(&mut first).context("reading the worker plan from stdin")?;
    let plan: ShardPlan = serde_json::from_str(&first).context("parsing the worker plan")?;
    if plan.miners + 100 > soft {
        anyhow::bail!(
            "worker {}: {} connections need more than the {soft} open files allowed",
            plan.shard,
            plan.miners
        );
    }
    let rt = runtime(plan.runtime_threads)?;
    rt.block_on(async move {
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str(&line) {
                    Ok(cmd) => {
                        if cmd_tx.send(cmd).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("worker: unreadable command ({e}): {line}"),
                }
            }
        });
        let writer = tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            while let Some(event) = ev_rx.recv().await {
                let last = matches!(event, messages::Event::Final(_));
                let Ok(mut line) = serde_json::to_string(&event) else { continue };
                line.push('\n');
                if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() || last {
                    break;
                }
            }
        });
        shard::run(plan, cmd_rx, ev_tx, false).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
