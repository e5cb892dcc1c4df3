//! `api`: the stats API under a farm's load, without the farm's sessions. A writer puts
//! `--workers` workers' hashrate records into Redis in the pool's own format and at the rate
//! they would submit (one flush per second, as the ledger does: a record per worker with a
//! share in that second and one per address), after filling the whole window as if they had
//! been mining for `--window` seconds. Then two phases of `--seconds` each: *quiet* (writer and
//! probe only) and *polled* (`--clients` browsers polling the old frontend's pages too). The
//! probe times what a share flush costs on the same Redis (`ZADD hashrate` + `HINCRBY` in one
//! pipeline, every 100 ms), the writer times its own flush pipeline; per route the API's
//! latency; from Redis's `INFO` the time it spent on the collector's window reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::cli::ApiArgs;
use crate::histogram::Histogram;

/// The old frontend's polling, per open browser: (route label, path template, period s).
/// `{address}` is the browser's own miner, `{hours}` a random `inactiveHours`.
const PAGES: &[(&str, &str, u64)] = &[
    ("/stats", "/stats", 10),
    ("/stats_address", "/stats_address?address={address}", 10),
    ("/get_top10miners", "/get_top10miners?sortBy=hashrate&excludeInactive=true&inactiveHours={hours}&limit=10", 30),
    ("/get_blocks", "/get_blocks?page=1&limit=20", 60),
    ("/get_payments", "/get_payments?page=1&limit=20", 60),
];

/// Latencies of one phase.
#[derive(Default)]
struct Phase {
    /// Route → latency, µs.
    routes: BTreeMap<&'static str, Histogram>,
    /// Failed requests by route.
    errors: BTreeMap<&'static str, u64>,
    /// Probe round trips (`ZADD` + `HINCRBY`), µs.
    probe: Histogram,
    /// The writer's flush pipelines, µs.
    flush: Histogram,
}

fn summary(h: &Histogram) -> Value {
    json!({
        "count": h.count(),
        "p50_ms": h.percentile(50.0).map(|v| v as f64 / 1000.0),
        "p99_ms": h.percentile(99.0).map(|v| v as f64 / 1000.0),
        "max_ms": h.max().map(|v| v as f64 / 1000.0),
    })
}

fn address(i: u64) -> String {
    format!("PAS1farm{i:06}")
}

/// One flush of the workers whose share falls in second `t` (each worker submits every
/// `interval` s, at a fixed offset): the zset members, as the pool's flush script writes them.
fn flush_members(args: &ApiArgs, t: u64, node: u32) -> Vec<(u64, String)> {
    let mut members = Vec::new();
    let mut per_address: BTreeMap<u64, u64> = BTreeMap::new();
    let interval = args.share_interval.max(1);
    let ms = t * 1000 + 500;
    let mut w = t % interval;
    while w < args.workers {
        let a = w % args.addresses.max(1);
        let diff = args.difficulty;
        members.push((t, format!("{diff}:{}~rig{w}:{ms}:prop:{node:08x}", address(a))));
        *per_address.entry(a).or_default() += diff;
        w += interval;
    }
    for (a, diff) in per_address {
        members.push((t, format!("{diff}:{}:{ms}:prop:{node:08x}", address(a))));
    }
    members
}

async fn zadd(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    members: &[(u64, String)],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for chunk in members.chunks(1000) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key);
        for (score, member) in chunk {
            cmd.arg(*score).arg(member);
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.query_async(con).await
}

/// Redis's own account: (calls, µs) of `ZRANGEBYSCORE`, bytes sent to clients.
async fn redis_costs(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<(u64, u64, u64)> {
    let commands: String = redis::cmd("INFO").arg("commandstats").query_async(con).await?;
    let stats: String = redis::cmd("INFO").arg("stats").query_async(con).await?;
    let (mut calls, mut usec) = (0, 0);
    if let Some(line) = commands.lines().find_map(|l| l.strip_prefix("cmdstat_zrangebyscore:")) {
        for field in line.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => calls = v.parse().unwrap_or(0),
                Some(("usec", v)) => usec = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let out = stats
        .lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((calls, usec, out))
}

/// A counter or histogram sum from the pool's `/metrics` text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs the API load and prints (and with `--report` writes) the figures.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let client = redis::Client::open(format!("redis://{}/", args.redis)).context("the Redis address")?;
    // No response timeout: a slow answer is what is measured, not an error.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut con = client.get_multiplexed_async_connection_with_config(&config).await.context("connecting to Redis")?;
    let key = format!("{}:hashrate", args.prefix);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.clients)
        .build()
        .context("the HTTP client")?;
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();

    // The window as if the farm had been mining all along.
    let filled = Instant::now();
    let start = now();
    let mut members_written = 0u64;
    for t in start.saturating_sub(args.window)..start {
        let members = flush_members(&args, t, (t % 3) as u32);
        members_written += members.len() as u64;
        zadd(&mut con, &key, &members).await.context("filling the window")?;
    }
    let window_len: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut con).await?;
    println!(
        "window filled: {members_written} members for {} workers over {} s in {:.1} s (ZCARD {window_len})",
        args.workers,
        args.window,
        filled.elapsed().as_secs_f64()
    );

    let phase = Arc::new(Mutex::new(Phase::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Writer: one flush per second per simulated node, timed.
    {
        let (args, phase, stop, key) = (args.clone(), phase.clone(), stop.clone(), key.clone());
        let mut con = con.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let t = now();
                let members = flush_members(&args, t, (t % 3) as u32);
                let began = Instant::now();
                if zadd(&mut con, &key, &members).await.is_ok() {
                    phase.lock().await.flush.record(began.elapsed().as_micros() as u64);
                }
            }
        }));
    }
    // Probe: a share flush's commands, every 100 ms.
    {
        let (args, phase, stop, key) = (args.clone(), phase.clone(), stop.clone(), key.clone());
        let mut con = con.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let round = format!("{}:scores:prop:probe", args.prefix);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let t = now();
                let began = Instant::now();
                let mut pipe = redis::pipe();
                pipe.cmd("ZADD").arg(&key).arg(t).arg(format!("1:PAS1probe~p:{}:prop:probe{n}", t * 1000)).ignore();
                pipe.cmd("HINCRBY").arg(&round).arg("PAS1probe").arg(1).ignore();
                if pipe.query_async::<()>(&mut con).await.is_ok() {
                    phase.lock().await.probe.record(began.elapsed().as_micros() as u64);
                }
            }
        }));
    }

    let mut report = json!({
        "workers": args.workers, "addresses": args.addresses, "shareIntervalS": args.share_interval,
        "windowS": args.window, "windowMembers": window_len, "clients": args.clients, "seconds": args.seconds,
        "api": args.api,
    });
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (name, clients) in [("quiet", 0usize), ("polled", args.clients)] {
        // Let the collector reach a steady state before each phase.
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        *phase.lock().await = Phase::default();
        let before_redis = redis_costs(&mut con).await?;
        let before_metrics = http.get(format!("{}/metrics", args.api)).send().await?.text().await?;
        let began = Instant::now();
        polling.store(clients > 0, std::sync::atomic::Ordering::Relaxed);
        let mut browsers = Vec::new();
        for c in 0..clients {
            let (args, phase, polling, http) = (args.clone(), phase.clone(), polling.clone(), http.clone());
            browsers.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
                let mine = address(rng.gen_range(0..args.addresses.max(1)));
                // Each page's next poll; the first ones spread over its period.
                let mut next: Vec<f64> = PAGES.iter().map(|(_, _, p)| rng.gen_range(0.0..*p as f64)).collect();
                let started = Instant::now();
                while polling.load(std::sync::atomic::Ordering::Relaxed) {
                    let (i, at) =
                        next.iter().enumerate().fold((0, f64::MAX), |m, (i, t)| if *t < m.1 { (i, *t) } else { m });
                    let wait = at - started.elapsed().as_secs_f64();
                    if wait > 0.0 {
                        tokio::time::sleep(Duration::from_secs_f64(wait.min(1.0))).await;
                        continue;
                    }
                    let (route, template, period) = PAGES[i];
                    next[i] += period as f64;
                    let hours = format!("{:.2}", rng.gen_range(0.01..48.0));
                    let path = template.replace("{address}", &mine).replace("{hours}", &hours);
                    let t = Instant::now();
                    let ok = match http.get(format!("{}{path}", args.api)).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    let us = t.elapsed().as_micros() as u64;
                    let mut p = phase.lock().await;
                    if ok {
                        p.routes.entry(route).or_default().record(us);
                    } else {
                        *p.errors.entry(route).or_default() += 1;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        polling.store(false, std::sync::atomic::Ordering::Relaxed);
        for b in browsers {
            let _ = b.await;
        }
        let elapsed = began.elapsed().as_secs_f64();
        let after_redis = redis_costs(&mut con).await?;
        let after_metrics = http.get(format!("{}/metrics", args.api)).send().await?.text().await?;
        let delta = |name: &str| metric(&after_metrics, name) - metric(&before_metrics, name);
        let runs = delta("pastella_pool_collector_run_seconds_count");
        let p = phase.lock().await;
        let routes: serde_json::Map<String, Value> =
            p.routes.iter().map(|(r, h)| (r.to_string(), summary(h))).collect();
        let result = json!({
            "seconds": elapsed,
            "routes": routes,
            "errors": p.errors,
            "probe": summary(&p.probe),
            "flush": summary(&p.flush),
            "collector": {
                "runs": runs,
                "meanRunMs": if runs > 0.0 { delta("pastella_pool_collector_run_seconds_sum") / runs * 1000.0 } else { 0.0 },
                "windowMembersRead": delta("pastella_pool_collector_window_members_read_total"),
            },
            "redis": {
                "zrangebyscoreCalls": after_redis.0 - before_redis.0,
                "zrangebyscoreMs": (after_redis.1 - before_redis.1) as f64 / 1000.0,
                "bytesSentMB": (after_redis.2 - before_redis.2) as f64 / 1e6,
            },
        });
        println!("{name}: {}", serde_json::to_string_pretty(&result)?);
        report[name] = result;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(workers: u64, addresses: u64, interval: u64) -> ApiArgs {
        ApiArgs {
            redis: "127.0.0.1:1".into(),
            prefix: "pastella".into(),
            api: String::new(),
            workers,
            addresses,
            share_interval: interval,
            difficulty: 5000,
            window: 600,
            clients: 0,
            seconds: 0.0,
            settle: 0.0,
            report: None,
        }
    }

    #[test]
    fn every_worker_flushes_once_per_interval_with_its_address_record() {
        let a = args(10, 3, 4);
        let mut workers = std::collections::HashSet::new();
        let mut count = 0;
        for t in 100..104 {
            for (score, member) in flush_members(&a, t, 0) {
                assert_eq!(score, t);
                let parsed = pastella_pool::api::shapes::parse_hashrate(&member).expect("the pool's member format");
                if parsed.key.contains('~') {
                    assert!(workers.insert(parsed.key.to_string()), "one record per worker per interval");
                    count += 1;
                }
            }
        }
        assert_eq!(count, 10);
        // Second 100: workers 0, 4, 8 → addresses 0, 1, 2.
        let first = flush_members(&a, 100, 0);
        assert_eq!(first.len(), 3 + 3);
    }
}
