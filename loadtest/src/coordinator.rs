//! The coordinator: splits the miners over worker shards (tasks in this process, or worker
//! processes when one process's file-descriptor limit is too small), runs the phases in order,
//! samples the pool's RSS and CPU from /proc around them, and assembles the report.
//!
//! Phases: ramp -> settle (idle memory) -> fan-out rounds -> per-miner-rate phase -> raw hash
//! rate -> throughput ceiling (closed loop) -> raw hash rate again -> load levels (open loop at %
//! of the ceiling).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::cli::RunArgs;
use crate::devnet::{fetch_metrics, metric_total, metric_value, Control};
use crate::histogram::Histogram;
use crate::messages::{Command, Event, Load, PhaseSpec, ShardPlan};
use crate::mix::Mix;
use crate::net::parse_sources;
use crate::procfs::{self, mono_us, ProcSample};
use crate::report::{
    self, AbuseReport, CeilingReport, CpuReport, EndReport, FanoutRound, IdleReport, PhaseReport, PoolSide, RampReport,
    RawReport, Report, Setup,
};
use crate::stats::{steady_rate, FanoutStats, FinalStats, PhaseStats, Prepared, Progress, RampStats, RawStats};
use crate::tls::Trust;

/// File descriptors a harness process keeps for itself (stdio, runtime, hashing, slack).
const FD_RESERVE: u64 = 100;

/// The way to one shard.
enum Link {
    Local(mpsc::UnboundedSender<Command>),
    Child { stdin: ChildStdin, child: Box<Child> },
}

impl Link {
    async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        match self {
            Link::Local(tx) => tx.send(command.clone()).map_err(|_| anyhow::anyhow!("shard ended")),
            Link::Child { stdin, .. } => {
                let mut line = serde_json::to_string(command)?;
                line.push('\n');
                stdin.write_all(line.as_bytes()).await.context("writing to a worker process")?;
                stdin.flush().await.context("writing to a worker process")
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Link::Local(_) => None,
            Link::Child { child, .. } => child.id(),
        }
    }
}

/// CPU and memory of the watched processes at one instant.
#[derive(Clone, Default)]
struct Sample {
    at: f64,
    pool: ProcSample,
    harness: ProcSample,
    others: BTreeMap<String, ProcSample>,
    pool_hwm_kib: u64,
    /// Busy CPU seconds of the whole machine.
    system_s: f64,
}

impl Sample {
    /// CPU seconds used by processes that are neither the pool, the harness nor watched.
    fn unaccounted_s(&self) -> f64 {
        self.system_s - self.pool.cpu_s - self.harness.cpu_s - self.others.values().map(|o| o.cpu_s).sum::<f64>()
    }
}

/// CPU use of the processes nobody watches between two samples, % of one core; never below 0
/// (the /proc files are read at slightly different instants).
fn other_pct(a: &Sample, b: &Sample) -> f64 {
    cpu_pct(a.unaccounted_s(), b.unaccounted_s(), b.at - a.at).max(0.0)
}

fn add(a: &mut ProcSample, b: &ProcSample) {
    a.rss_kib += b.rss_kib;
    a.hwm_kib += b.hwm_kib;
    a.cpu_s += b.cpu_s;
    a.threads += b.threads;
    a.major_faults += b.major_faults;
    a.huge_kib += b.huge_kib;
}

/// CPU use between two samples, % of one core.
fn cpu_pct(a: f64, b: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        ((b - a) / seconds * 100.0 * 10.0).round() / 10.0
    } else {
        0.0
    }
}

struct Coordinator {
    args: RunArgs,
    links: Vec<Link>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    progress: Vec<Progress>,
    started: Instant,
    deadline: Instant,
    last_print: Instant,
    last_sample: Sample,
    first_sample: Sample,
    phase: String,
    control: Option<Control>,
    report: Report,
    /// Started with the next share phase and stopped when it ends (the abuse phase).
    flood: Option<crate::abuse::FloodSpec>,
    flood_report: Option<crate::abuse::FloodReport>,
}

/// Runs `pastella-loadtest run`.
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let (soft, hard) = procfs::raise_nofile_limit();
    let processes = args.processes.max(1);
    let per_process = args.miners.div_ceil(processes as u64);
    if per_process + FD_RESERVE > soft {
        bail!(
            "{} miners over {} process(es) is {} connections per process, but a process may open only {} files \
             (hard limit {}); use --processes {} or more",
            args.miners,
            processes,
            per_process,
            soft,
            hard,
            args.miners.div_ceil(soft.saturating_sub(FD_RESERVE).max(1))
        );
    }
    if args.pools.is_empty() {
        bail!("no --pool given");
    }
    let pool_nofile: Vec<u64> = args.pool_pids.iter().map(|&pid| pool_nofile_limit(pid).unwrap_or(0)).collect();
    let per_pool = args.miners.div_ceil(args.pools.len() as u64);
    for (pid, limit) in args.pool_pids.iter().zip(&pool_nofile) {
        if *limit > 0 && per_pool + 50 > *limit {
            eprintln!(
                "warning: pool process {pid} may open only {limit} files but gets ~{per_pool} connections; \
                 expect refused connections (run more pool processes, one --pool each)"
            );
        }
    }
    let sources = parse_sources(&args.source_ips).map_err(anyhow::Error::msg)?;
    let tls = args.tls_trust().map_err(anyhow::Error::msg)?;
    let addresses = if args.addresses == 0 { args.miners } else { args.addresses };
    let started = Instant::now();
    let hard_deadline_us = mono_us() + ((args.max_seconds + 60.0) * 1e6) as u64;
    let (event_tx, events) = mpsc::unbounded_channel();
    let mut links = Vec::with_capacity(processes);
    for shard in 0..processes {
        let first = shard as u64 * per_process;
        let miners = per_process.min(args.miners.saturating_sub(first));
        let plan = ShardPlan {
            shard,
            first_miner: first,
            miners,
            pools: args.pools.clone(),
            sources: sources.clone(),
            ramp_rate: args.ramp_rate / processes as f64,
            addresses,
            address_salt: args.address_salt,
            worker_prefix: args.worker_prefix.clone(),
            agent: args.agent.clone(),
            keepalive_s: args.keepalive,
            connect_timeout_ms: args.connect_timeout_ms,
            response_timeout_ms: args.response_timeout_ms,
            hash_mode: args.hash_mode,
            hash_threads: args.hash_threads,
            runtime_threads: args.threads,
            hard_deadline_us,
            tls: tls.clone(),
        };
        let link = if processes == 1 {
            local_shard(plan, shard, event_tx.clone())
        } else {
            child_shard(plan, shard, event_tx.clone()).await?
        };
        links.push(link);
    }
    drop(event_tx);
    let machine = procfs::machine();
    let report = Report {
        tool: format!("pastella-loadtest {}", env!("CARGO_PKG_VERSION")),
        label: args.label.clone(),
        command: std::env::args().collect(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        machine,
        setup: Setup {
            miners: args.miners,
            processes,
            pools: args.pools.iter().map(|p| p.to_string()).collect(),
            pool_pids: args.pool_pids.clone(),
            source_ips: sources.len(),
            nofile: (soft, hard),
            pool_nofile,
            ramp_rate: args.ramp_rate,
            hash_mode: format!("{:?}", args.hash_mode).to_lowercase(),
            hash_threads: args.hash_threads,
            transport: match &tls {
                None => "tcp".into(),
                Some(Trust::Fingerprint(_)) => "tls (pinned fingerprint)".into(),
                Some(Trust::Any) => "tls (certificate not verified)".into(),
            },
        },
        ..Default::default()
    };
    let mut c = Coordinator {
        deadline: started + Duration::from_secs_f64(args.max_seconds),
        control: args.control.as_deref().map(Control::new),
        progress: vec![Progress::default(); processes],
        last_print: started,
        last_sample: Sample::default(),
        first_sample: Sample::default(),
        phase: "start".into(),
        links,
        events,
        started,
        args,
        report,
        flood: None,
        flood_report: None,
    };
    c.last_sample = c.sample();
    c.first_sample = c.last_sample.clone();
    let outcome = c.phases().await;
    if let Err(e) = &outcome {
        c.report.aborted = Some(format!("{e:#}"));
    }
    c.finish().await;
    Ok(c.report)
}

fn local_shard(plan: ShardPlan, index: usize, events: mpsc::UnboundedSender<(usize, Event)>) -> Link {
    let (tx, rx) = mpsc::unbounded_channel();
    let (shard_tx, mut shard_rx) = mpsc::unbounded_channel();
    tokio::spawn(crate::shard::run(plan, rx, shard_tx, true));
    tokio::spawn(async move {
        while let Some(e) = shard_rx.recv().await {
            if events.send((index, e)).is_err() {
                break;
            }
        }
    });
    Link::Local(tx)
}

async fn child_shard(
    plan: ShardPlan,
    index: usize,
    events: mpsc::UnboundedSender<(usize, Event)>,
) -> anyhow::Result<Link> {
    let exe = std::env::current_exe().context("finding the harness binary to start worker processes")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let mut first = serde_json::to_string(&plan)?;
    first.push('\n');
    stdin.write_all(first.as_bytes()).await.context("sending a worker its plan")?;
    stdin.flush().await.context("sending a worker its plan")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                    Ok(e) => {
                        if events.send((index, e)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = events.send((index, Event::Fatal(format!("unreadable event ({e}): {line}"))));
                    }
                },
                _ => {
                    let _ = events.send((index, Event::Fatal("the worker process ended its output".into())));
                    break;
                }
            }
        }
    });
    Ok(Link::Child { stdin, child: Box::new(child) })
}

/// The soft open-file limit of process `pid` (from /proc/<pid>/limits).
fn pool_nofile_limit(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

impl Coordinator {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn sample(&self) -> Sample {
        let mut s = Sample { at: self.elapsed(), system_s: procfs::system_busy_s(), ..Default::default() };
        for &pid in &self.args.pool_pids {
            if let Some(p) = procfs::sample(pid) {
                add(&mut s.pool, &p);
                s.pool_hwm_kib += p.hwm_kib;
            }
        }
        add(&mut s.harness, &procfs::sample_self());
        for link in &self.links {
            if let Some(p) = link.pid().and_then(procfs::sample) {
                add(&mut s.harness, &p);
            }
        }
        for (label, pid) in &self.args.watch_pids {
            if let Some(p) = procfs::sample(*pid) {
                s.others.insert(label.clone(), p);
            }
        }
        s
    }

    fn total_progress(&self) -> Progress {
        let mut t = Progress::default();
        self.progress.iter().for_each(|p| t.merge(p));
        t
    }

    fn print_progress(&mut self) {
        let now = self.sample();
        let prev = std::mem::replace(&mut self.last_sample, now.clone());
        let dt = now.at - prev.at;
        let p = self.total_progress();
        println!(
            "[{:>6.1}s] {:<14} conn {:>6} login {:>6} fail {:>4}/{:<4} alive {:>6} drop {:>4} | fanout {:>6} | shares {:>6}/{:<6} | pool {:>7.1} MiB {:>5.0}% cpu | harness {:>6.1} MiB {:>4.0}% cpu | other {:>4.0}%",
            self.elapsed(),
            self.phase,
            p.connected,
            p.logged_in,
            p.connect_failed,
            p.login_failed,
            p.alive,
            p.dropped,
            p.fanout_got,
            p.replies,
            p.submits,
            now.pool.rss_kib as f64 / 1024.0,
            cpu_pct(prev.pool.cpu_s, now.pool.cpu_s, dt),
            now.harness.rss_kib as f64 / 1024.0,
            cpu_pct(prev.harness.cpu_s, now.harness.cpu_s, dt),
            other_pct(&prev, &now),
        );
        self.last_print = Instant::now();
    }

    async fn broadcast(&mut self, command: &Command, shards: &[usize]) -> anyhow::Result<()> {
        for &i in shards {
            self.links[i].send(command).await.with_context(|| format!("sending {command:?} to worker {i}"))?;
        }
        Ok(())
    }

    fn all(&self) -> Vec<usize> {
        (0..self.links.len()).collect()
    }

    /// Waits until `pick` returned a value for every shard in `shards`, or `timeout`, or the
    /// run's deadline; prints progress meanwhile.
    async fn collect<T>(
        &mut self,
        what: &str,
        shards: &[usize],
        timeout: Duration,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut got: Vec<Option<T>> = (0..self.links.len()).map(|_| None).collect();
        let until = (Instant::now() + timeout).min(self.deadline);
        let every = Duration::from_secs_f64(self.args.progress_every.max(0.2));
        while shards.iter().any(|&i| got[i].is_none()) {
            let now = Instant::now();
            if now >= until {
                let missing: Vec<usize> = shards.iter().copied().filter(|&i| got[i].is_none()).collect();
                bail!(
                    "{what}: no answer from worker(s) {missing:?} within {:.0} s{}",
                    timeout.as_secs_f64(),
                    if until == self.deadline { " (the run's --max-seconds)" } else { "" }
                );
            }
            let next_print = self.last_print + every;
            let wait = until.min(next_print).saturating_duration_since(now);
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some((i, Event::Progress(p)))) => self.progress[i] = p,
                Ok(Some((i, Event::Fatal(e)))) => bail!("worker {i}: {e}"),
                Ok(Some((i, e))) => {
                    if let Some(v) = pick(e) {
                        got[i] = Some(v);
                    }
                }
                Ok(None) => bail!("{what}: every worker ended"),
                Err(_) => {}
            }
            if Instant::now() >= self.last_print + every {
                self.print_progress();
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    async fn pause(&mut self, seconds: f64) {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let _ = self.collect::<()>("pause", &[0], until.saturating_duration_since(Instant::now()), |_| None).await;
    }

    async fn phases(&mut self) -> anyhow::Result<()> {
        let all = self.all();
        if self.args.wait_fast > 0.0 {
            self.wait_fast().await?;
        }
        self.phase = "pool warm-up".into();
        self.wait_pool_steady().await;
        let before = self.sample();
        // Ramp.
        self.phase = "ramp".into();
        println!(
            "ramp: {} miners at {}/s over {} pool port(s) from {} source address(es), {} harness process(es)",
            self.args.miners,
            self.args.ramp_rate,
            self.args.pools.len(),
            self.report.setup.source_ips,
            self.links.len()
        );
        self.broadcast(&Command::Ramp, &all).await?;
        let ramp_time = Duration::from_secs_f64(
            self.args.miners as f64 / self.args.ramp_rate.max(1.0)
                + (self.args.connect_timeout_ms + self.args.response_timeout_ms) as f64 / 1000.0
                + 30.0,
        );
        let ramps =
            self.collect("ramp", &all, ramp_time, |e| if let Event::RampDone(r) = e { Some(*r) } else { None }).await?;
        let mut ramp = RampStats::default();
        ramps.iter().for_each(|r| ramp.merge(r));
        self.report.ramp = Some(RampReport {
            attempted: ramp.attempted,
            connected: ramp.connected,
            logged_in: ramp.logged_in,
            connect_failures: ramp.connect_failures.clone(),
            login_failures: ramp.login_failures.clone(),
            connect_us: ramp.connect_us.summary(),
            login_us: ramp.login_us.summary(),
            seconds: ramp.seconds,
            logins_per_s: if ramp.seconds > 0.0 { ramp.logged_in as f64 / ramp.seconds } else { 0.0 },
        });
        if ramp.logged_in == 0 {
            bail!("no miner could log in: {:?} {:?}", ramp.connect_failures, ramp.login_failures);
        }

        // Idle memory and CPU.
        self.phase = "settle".into();
        self.pause(self.args.settle).await;
        let idle_start = self.sample();
        self.pause(self.args.settle.max(2.0)).await;
        let idle_end = self.sample();
        let sessions = self.total_progress().alive;
        self.report.idle = Some(IdleReport {
            sessions,
            pool_rss_before_kib: before.pool.rss_kib,
            pool_rss_after_kib: idle_end.pool.rss_kib,
            rss_per_session_bytes: if sessions > 0 {
                ((idle_end.pool.rss_kib as f64 - before.pool.rss_kib as f64) * 1024.0 / sessions as f64).round()
            } else {
                0.0
            },
            pool_cpu_pct: cpu_pct(idle_start.pool.cpu_s, idle_end.pool.cpu_s, idle_end.at - idle_start.at),
            harness_cpu_pct: cpu_pct(idle_start.harness.cpu_s, idle_end.harness.cpu_s, idle_end.at - idle_start.at),
            harness_rss_kib: idle_end.harness.rss_kib,
            other_cpu_pct: other_pct(&idle_start, &idle_end),
            seconds: idle_end.at - idle_start.at,
        });

        // Fan-out rounds.
        if let Some(control) = self.control.clone() {
            let mut all_latencies = Histogram::new();
            let mut firsts = Histogram::new();
            for round in 1..=self.args.fanout_rounds {
                self.phase = format!("fanout {round}");
                let height = control.height().await.map_err(anyhow::Error::msg)?;
                // The job for the next block has the height of the block after the new top.
                let job_height = height + 2;
                self.broadcast(&Command::Arm { min_height: job_height }, &all).await?;
                self.collect("arming the fan-out", &all, Duration::from_secs(30), |e| {
                    matches!(e, Event::Armed).then_some(())
                })
                .await?;
                let s0 = self.sample();
                let t0 = mono_us();
                let mined = control.mine(1).await.map_err(anyhow::Error::msg)?;
                let mine_request_ms = (mono_us() - t0) as f64 / 1000.0;
                if mined + 1 != job_height {
                    eprintln!("warning: devnet top is {mined} after mining, expected {}", job_height - 1);
                }
                let deadline = Duration::from_secs_f64(self.args.fanout_deadline);
                let _ =
                    self.collect("fan-out", &all, deadline, |e| matches!(e, Event::FanoutComplete).then_some(())).await;
                let s1 = self.sample();
                self.broadcast(&Command::CollectFanout { t0_us: t0 }, &all).await?;
                let parts = self
                    .collect("fan-out results", &all, Duration::from_secs(30), |e| {
                        if let Event::Fanout(f) = e {
                            Some(*f)
                        } else {
                            None
                        }
                    })
                    .await?;
                let mut f = FanoutStats::default();
                parts.iter().for_each(|p| f.merge(p));
                all_latencies.merge(&f.latency_us);
                if let Some(first) = f.latency_us.min() {
                    firsts.record(first);
                }
                let r = FanoutRound {
                    round,
                    job_height,
                    mine_request_ms,
                    alive: f.alive,
                    got: f.got,
                    missing: f.missing,
                    latency_us: f.latency_us.summary(),
                    pool_cpu_pct: cpu_pct(s0.pool.cpu_s, s1.pool.cpu_s, s1.at - s0.at),
                    pool_cpu_ms: (s1.pool.cpu_s - s0.pool.cpu_s) * 1000.0,
                    pool_major_faults: s1.pool.major_faults.saturating_sub(s0.pool.major_faults),
                    harness_cpu_ms: (s1.harness.cpu_s - s0.harness.cpu_s) * 1000.0,
                    other_cpu_pct: other_pct(&s0, &s1),
                };
                println!(
                    "fan-out {round}: height {job_height}: {}/{} sessions got the job, p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} missing",
                    r.got,
                    r.alive,
                    r.latency_us.p50.unwrap_or(0) as f64 / 1000.0,
                    r.latency_us.p99.unwrap_or(0) as f64 / 1000.0,
                    r.latency_us.max.unwrap_or(0) as f64 / 1000.0,
                    r.missing
                );
                self.report.fanout.push(r);
                // Jitter, so rounds do not lock onto the pool's polling phase.
                let gap = self.args.fanout_gap * rand::thread_rng().gen_range(0.75..1.25);
                self.pause(gap).await;
            }
            if all_latencies.count() > 0 {
                self.report.fanout_all_us = Some(all_latencies.summary());
                self.report.fanout_first_us = Some(firsts.summary());
            }
        } else if self.args.fanout_rounds > 0 {
            println!("fan-out: skipped (no --control URL of the devnet)");
        }

        // Shares.
        let mut phase_id = 0u32;
        if self.args.rate_per_miner > 0.0 {
            phase_id += 1;
            self.phase = "per-miner rate".into();
            let specs: Vec<(usize, PhaseSpec)> = all
                .iter()
                .map(|&i| {
                    let rate = self.args.rate_per_miner * self.progress[i].alive as f64;
                    (
                        i,
                        PhaseSpec {
                            id: phase_id,
                            load: Load::Open {
                                rate,
                                seconds: self.args.rate_seconds,
                                arrivals: self.args.arrivals,
                                sessions: 0,
                            },
                            mix: self.args.mix.clone(),
                            seed: phase_id as u64,
                        },
                    )
                })
                .collect();
            let offered = self.args.rate_per_miner * self.total_progress().alive as f64;
            let name = "per-miner".to_string();
            let load = format!(
                "open loop, {:?} arrivals, {:.3e} shares/s from every miner",
                self.args.arrivals, self.args.rate_per_miner
            )
            .to_lowercase();
            let mix = self.args.mix.clone();
            self.share_phase(&name, &load, offered, &mix, specs).await?;
        }
        if self.args.raw_seconds > 0.0 {
            let raw = self.measure_raw("raw").await?;
            if self.args.ceiling_seconds > 0.0 && raw.rate() > 0.0 {
                self.ceiling(raw, &mut phase_id).await?;
            }
        }
        Ok(())
    }

    /// The raw hash rate of worker 0's hashers (the pool idles meanwhile).
    async fn measure_raw(&mut self, what: &str) -> anyhow::Result<RawStats> {
        self.phase = "raw hashing".into();
        println!(
            "{what}: hashing {:.0} s on {} {} thread(s) in worker 0",
            self.args.raw_seconds, self.args.hash_threads, self.report.setup.hash_mode,
        );
        self.broadcast(&Command::Raw { seconds: self.args.raw_seconds }, &[0]).await?;
        let s0 = self.sample();
        let raw = self
            .collect("raw hash rate", &[0], Duration::from_secs_f64(self.args.raw_seconds + 600.0), |e| {
                if let Event::Raw(r) = e {
                    Some(r)
                } else {
                    None
                }
            })
            .await?
            .remove(0);
        let s1 = self.sample();
        // The window includes a first hasher build; good enough to flag a busy machine.
        let mut report = raw_report(&raw, other_pct(&s0, &s1));
        report.harness_huge_kib = s1.harness.huge_kib;
        self.report.raw.push(report);
        println!("{what}: {:.1} H/s", raw.rate());
        Ok(raw)
    }

    async fn ceiling(&mut self, raw: RawStats, phase_id: &mut u32) -> anyhow::Result<()> {
        *phase_id += 1;
        self.phase = "ceiling".into();
        let sessions = self.args.busy_connections.max(1);
        // Headroom: the raw rate may have been measured low (a busy neighbour).
        let stock =
            (raw.cpu_rate() * self.args.ceiling_seconds * 1.3).ceil() as usize + sessions * self.args.busy_depth;
        let spec = PhaseSpec {
            id: *phase_id,
            load: Load::Closed { sessions, depth: self.args.busy_depth, seconds: self.args.ceiling_seconds, stock },
            mix: Mix::valid_only(),
            seed: *phase_id as u64,
        };
        let load = format!("closed loop, {} sessions x {} in flight", sessions, self.args.busy_depth);
        let stats = self.share_phase("ceiling", &load, 0.0, &Mix::valid_only(), vec![(0, spec)]).await?;
        let until = if stats.stock_exhausted { stats.feed_seconds } else { self.args.ceiling_seconds };
        let verified = steady_rate(&stats.accepted_per_s, 1, until).unwrap_or(0.0);
        // Raw speed drifts (huge pages, caches, neighbours): bracket the ceiling with two
        // measurements and compare with their mean.
        let after = self.measure_raw("raw again").await?;
        let raw_rate = (raw.rate() + after.rate()) / 2.0;
        let full = (raw.cpu_rate() + after.cpu_rate()) / 2.0;
        let ceiling = CeilingReport {
            verified_per_s: verified,
            raw_hashes_per_s: raw_rate,
            ratio: verified / raw_rate,
            raw_full_cores_per_s: full,
            ratio_full_cores: verified / full,
            hash_time_ms: raw.threads as f64 * 1000.0 / full,
            pool_hash_ms: self.report.phases.last().and_then(|p| p.pool_side.as_ref()).map(|p| p.hash_ms),
            verifier_busy: self.report.phases.last().and_then(|p| p.pool_side.as_ref()).map(|p| p.verifier_busy),
        };
        if let Some(p) = self.report.phases.last_mut() {
            p.accepted_per_s = verified;
        }
        println!(
            "ceiling: {:.1} verified shares/s = {:.1} % of the raw {:.1} H/s (before {:.1}, after {:.1})",
            verified,
            ceiling.ratio * 100.0,
            raw_rate,
            raw.rate(),
            after.rate()
        );
        self.report.ceiling = Some(ceiling);
        if verified <= 0.0 {
            return Ok(());
        }
        for level in self.args.levels.0.clone() {
            *phase_id += 1;
            let rate = verified * level / 100.0;
            self.phase = format!("load {level:.0}%");
            let spec = PhaseSpec {
                id: *phase_id,
                load: Load::Open {
                    rate,
                    seconds: self.args.level_seconds,
                    arrivals: self.args.arrivals,
                    sessions: self.args.level_sessions,
                },
                mix: self.args.level_mix.clone(),
                seed: *phase_id as u64,
            };
            let load = format!(
                "open loop, {:?} arrivals, {} sessions",
                self.args.arrivals,
                if self.args.level_sessions == 0 { "all".to_string() } else { self.args.level_sessions.to_string() }
            )
            .to_lowercase();
            let mix = self.args.level_mix.clone();
            self.share_phase(&format!("load-{level:.0}%"), &load, rate, &mix, vec![(0, spec)]).await?;
        }
        if self.args.abuse_submits > 0 {
            self.abuse(verified, phase_id).await?;
        }
        Ok(())
    }

    /// The first load level twice: without, then with a flood of bogus submits.
    async fn abuse(&mut self, verified: f64, phase_id: &mut u32) -> anyhow::Result<()> {
        let level = self.args.levels.0.first().copied().unwrap_or(50.0);
        let rate = verified * level / 100.0;
        let sources = parse_sources(&self.args.abuse_sources).map_err(anyhow::Error::msg)?;
        let mut p99 = Vec::new();
        for flooded in [false, true] {
            *phase_id += 1;
            self.phase = if flooded { "abuse: flood".into() } else { "abuse: baseline".into() };
            let spec = PhaseSpec {
                id: *phase_id,
                load: Load::Open {
                    rate,
                    seconds: self.args.level_seconds,
                    arrivals: self.args.arrivals,
                    sessions: self.args.level_sessions,
                },
                mix: self.args.level_mix.clone(),
                seed: *phase_id as u64,
            };
            if flooded {
                self.flood = Some(crate::abuse::FloodSpec {
                    pool: self.args.pools[0],
                    sources: sources.clone(),
                    batch: self.args.abuse_batch.max(1),
                    block_every: self.args.abuse_block_every,
                    at_least: self.args.abuse_submits,
                    login: crate::identity::address(self.args.address_salt ^ 0xf100d, 0),
                });
            }
            let name = if flooded { "abuse-flood" } else { "abuse-baseline" };
            let load = format!("open loop at {level:.0} % of the ceiling{}", if flooded { " + flood" } else { "" });
            let mix = self.args.level_mix.clone();
            self.share_phase(name, &load, rate, &mix, vec![(0, spec)]).await?;
            p99.push(self.report.phases.last().and_then(|p| p.latency_valid_us.p99));
        }
        let flood = self.flood_report.take().unwrap_or_default();
        let ratio = match (p99[0], p99[1]) {
            (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
            _ => None,
        };
        println!(
            "abuse: {} bogus submits ({} fake blocks) from {} connections; honest p99 {:.1} ms -> {:.1} ms (x{:.2})",
            flood.sent,
            flood.fake_blocks,
            flood.connections,
            p99[0].unwrap_or(0) as f64 / 1000.0,
            p99[1].unwrap_or(0) as f64 / 1000.0,
            ratio.unwrap_or(0.0)
        );
        self.report.abuse = Some(AbuseReport { baseline_p99_us: p99[0], flood_p99_us: p99[1], ratio, flood });
        Ok(())
    }

    /// Prepares (precomputes) a phase on the given shards, runs it, and records it.
    async fn share_phase(
        &mut self,
        name: &str,
        load: &str,
        offered: f64,
        mix: &Mix,
        specs: Vec<(usize, PhaseSpec)>,
    ) -> anyhow::Result<PhaseStats> {
        let shards: Vec<usize> = specs.iter().map(|(i, _)| *i).collect();
        let id = specs[0].1.id;
        println!("{name}: precomputing valid shares ({load})");
        for (i, spec) in specs {
            self.links[i].send(&Command::Prepare(spec)).await?;
        }
        let prepared: Vec<Prepared> = self
            .collect(&format!("{name}: precomputing"), &shards, Duration::from_secs(1800), |e| {
                if let Event::Prepared(p) = e {
                    Some(p)
                } else {
                    None
                }
            })
            .await?;
        if let Some(e) = prepared.iter().find_map(|p| p.error.clone()) {
            bail!("{name}: {e}");
        }
        let hashes: u64 = prepared.iter().map(|p| p.hashes).sum();
        let hash_s = prepared.iter().map(|p| p.hash_seconds + p.build_s).fold(0.0, f64::max);
        println!("{name}: {hashes} hashes in {hash_s:.1} s; running");
        let m0 = self.pool_metrics().await;
        let s0 = self.sample();
        self.broadcast(&Command::Go { id }, &shards).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flooding = self.flood.take().map(|spec| tokio::spawn(crate::abuse::flood(spec, stop.clone())));
        let limit = Duration::from_secs_f64(
            self.args.level_seconds.max(self.args.ceiling_seconds).max(self.args.rate_seconds)
                + self.args.response_timeout_ms as f64 / 1000.0
                + 30.0,
        );
        let parts =
            self.collect(name, &shards, limit, |e| if let Event::PhaseDone(p) = e { Some(*p) } else { None }).await?;
        stop.store(true, Ordering::Relaxed);
        if let Some(flooding) = flooding {
            self.flood_report = Some(flooding.await?);
        }
        let s1 = self.sample();
        let m1 = self.pool_metrics().await;
        let pool_side = match (m0, m1) {
            (Some(a), Some(b)) => pool_side(&a, &b, self.args.hash_threads, s1.at - s0.at),
            _ => None,
        };
        let mut stats = PhaseStats { id, ..Default::default() };
        parts.iter().for_each(|p| stats.merge(p));
        let unexpected = stats.kinds.iter().map(|(k, s)| s.unexpected(*k)).sum();
        let seconds = if offered > 0.0 { self.args.level_seconds.max(1.0) } else { stats.seconds };
        let steady = steady_rate(&stats.accepted_per_s, 0, seconds).unwrap_or(0.0);
        let p = PhaseReport {
            name: name.to_string(),
            load: load.to_string(),
            offered_per_s: offered,
            sessions: stats.sessions,
            mix: mix.to_string(),
            sent: stats.sent(),
            accepted: stats.accepted(),
            accepted_per_s: steady,
            kinds: stats.kinds.clone(),
            unexpected,
            skipped: stats.skipped.clone(),
            latency_valid_us: stats.latency_valid_us.summary(),
            latency_all_us: stats.latency_all_us.summary(),
            late_sends: stats.late_sends,
            stock_exhausted: stats.stock_exhausted,
            seconds: stats.seconds,
            pool_cpu_pct: cpu_pct(s0.pool.cpu_s, s1.pool.cpu_s, s1.at - s0.at),
            harness_cpu_pct: cpu_pct(s0.harness.cpu_s, s1.harness.cpu_s, s1.at - s0.at),
            other_cpu_pct: other_pct(&s0, &s1),
            precompute_hashes: hashes,
            precompute_s: hash_s,
            pool_side,
            pool_major_faults: s1.pool.major_faults.saturating_sub(s0.pool.major_faults),
            pool_rss_kib: s1.pool.rss_kib,
            pool_huge_kib: s1.pool.huge_kib,
            accepted_series: stats.accepted_per_s.clone(),
            max_latency_series_us: stats.max_latency_per_s.clone(),
        };
        println!(
            "{name}: sent {} accepted {} ({} unexpected answers); valid-share latency p50 {:.1} p99 {:.1} p99.9 {:.1} ms",
            p.sent,
            p.accepted,
            p.unexpected,
            p.latency_valid_us.p50.unwrap_or(0) as f64 / 1000.0,
            p.latency_valid_us.p99.unwrap_or(0) as f64 / 1000.0,
            p.latency_valid_us.p999.unwrap_or(0) as f64 / 1000.0
        );
        self.report.phases.push(p);
        Ok(stats)
    }

    /// Waits until the pool's RSS stops growing (its RandomX cache or dataset is built lazily
    /// at start), so the per-session memory is not inflated by it. At most two minutes.
    async fn wait_pool_steady(&mut self) {
        if self.args.pool_pids.is_empty() {
            return;
        }
        let until = Instant::now() + Duration::from_secs(120);
        let mut last = self.sample().pool.rss_kib;
        let mut steady = 0;
        while steady < 4 && Instant::now() < until {
            self.pause(0.5).await;
            let now = self.sample().pool.rss_kib;
            steady = if now.abs_diff(last) < 1024 { steady + 1 } else { 0 };
            last = now;
        }
    }

    /// The pool's share and verification counters, when there is one pool and its metrics URL.
    async fn pool_metrics(&self) -> Option<String> {
        let url = self.args.pool_metrics.as_ref().filter(|_| self.args.pools.len() == 1)?;
        fetch_metrics(url).await.ok()
    }

    async fn wait_fast(&mut self) -> anyhow::Result<()> {
        let Some(url) = self.args.pool_metrics.clone() else {
            bail!("--wait-fast needs --pool-metrics");
        };
        self.phase = "wait fast".into();
        let until = Instant::now() + Duration::from_secs_f64(self.args.wait_fast);
        loop {
            let text = fetch_metrics(&url).await.map_err(anyhow::Error::msg)?;
            if metric_value(&text, "pastella_pool_randomx_fast_mode") == Some(1.0) {
                println!("pool verifies in fast mode");
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("the pool was not in fast mode after {:.0} s ({url})", self.args.wait_fast);
            }
            self.pause(1.0).await;
        }
    }

    async fn finish(&mut self) {
        self.phase = "stop".into();
        let end = self.sample();
        let all = self.all();
        let _ = self.broadcast(&Command::Stop, &all).await;
        let finals = self
            .collect("stop", &all, Duration::from_secs(20), |e| if let Event::Final(f) = e { Some(*f) } else { None })
            .await
            .unwrap_or_default();
        let mut fin = FinalStats::default();
        finals.iter().for_each(|f| fin.merge(f));
        self.report.sessions = EndReport {
            alive: fin.alive,
            dropped: fin.dropped.clone(),
            unmatched_replies: fin.unmatched_replies,
            unknown_lines: fin.unknown_lines.clone(),
            jobs_received: fin.jobs_received,
            keepalives: (fin.keepalives_sent, fin.keepalives_ok, fin.keepalives_failed),
        };
        let first = self.first_sample.clone();
        let me = procfs::sample_self();
        self.report.cpu = CpuReport {
            pool_s: end.pool.cpu_s - first.pool.cpu_s,
            // Worker processes report their own totals at exit.
            harness_s: me.cpu_s + fin.cpu_s,
            others_s: end
                .others
                .iter()
                .map(|(k, v)| (k.clone(), v.cpu_s - first.others.get(k).map(|f| f.cpu_s).unwrap_or(0.0)))
                .collect(),
            pool_hwm_kib: end.pool_hwm_kib,
            harness_hwm_kib: me.hwm_kib + fin.hwm_kib,
        };
        for link in &mut self.links {
            if let Link::Child { child, .. } = link {
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
        self.report.duration_s = self.elapsed();
    }
}

/// Phase figures from two scrapes of the pool's metrics.
fn pool_side(before: &str, after: &str, threads: usize, seconds: f64) -> Option<PoolSide> {
    let delta = |name: &str| Some(metric_total(after, name)? - metric_total(before, name).unwrap_or(0.0));
    let per = |sum: f64, count: f64| if count > 0.0 { sum / count * 1000.0 } else { 0.0 };
    let verifications = delta("pastella_pool_verify_seconds_count")?;
    let hash_s = delta("pastella_pool_verify_seconds_sum")?;
    let answers = delta("pastella_pool_share_ack_seconds_count").unwrap_or(0.0);
    Some(PoolSide {
        verifications,
        hash_ms: per(hash_s, verifications),
        queue_wait_ms: per(
            delta("pastella_pool_verify_queue_wait_seconds_sum").unwrap_or(0.0),
            delta("pastella_pool_verify_queue_wait_seconds_count").unwrap_or(0.0),
        ),
        answers,
        answer_ms: per(delta("pastella_pool_share_ack_seconds_sum").unwrap_or(0.0), answers),
        verifier_busy: if seconds > 0.0 { hash_s / threads.max(1) as f64 / seconds } else { 0.0 },
    })
}

fn raw_report(raw: &RawStats, other_cpu_pct: f64) -> RawReport {
    RawReport {
        mode: raw.mode.clone(),
        threads: raw.threads,
        hashes: raw.hashes,
        seconds: raw.seconds,
        hashes_per_s: raw.rate(),
        cpu_s: raw.cpu_s,
        harness_huge_kib: 0,
        hashes_per_s_full_cores: raw.cpu_rate(),
        build_s: raw.build_s,
        other_cpu_pct,
    }
}

/// Prints the summary and writes the report file.
pub fn publish(report: &Report, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!();
    print!("{}", report::summary(report));
    if let Some(path) = path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing the report to {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_of_one_core() {
        assert_eq!(cpu_pct(10.0, 11.5, 1.0), 150.0);
        assert_eq!(cpu_pct(1.0, 1.0, 0.0), 0.0);
    }
}
