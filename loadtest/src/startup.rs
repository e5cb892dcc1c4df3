//! `startup`: starts a pool command and times, from the moment it is spawned, the first
//! accepted connection, the first job served to a login, and (with `--metrics`) the switch to
//! fast-mode verification. The pool is stopped with SIGTERM after each try.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cli::StartupArgs;
use crate::devnet::{fetch_metrics, metric_value};
use crate::wire::{self, Incoming};

/// One start of the pool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StartupTry {
    /// Spawn -> first TCP connection accepted, ms.
    pub accept_ms: f64,
    /// Spawn -> login answered with a job, ms.
    pub first_job_ms: f64,
    /// Spawn -> the pool reports fast-mode verification, ms (with --metrics).
    pub fast_mode_ms: Option<f64>,
    /// Logins answered with an error before the first job (e.g. "not ready").
    pub refused_logins: u64,
}

/// All tries and their medians.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StartupReport {
    /// The pool command.
    pub command: Vec<String>,
    /// Each try.
    pub tries: Vec<StartupTry>,
    /// Median spawn -> first job, ms.
    pub first_job_median_ms: f64,
    /// Median spawn -> fast mode, ms.
    pub fast_mode_median_ms: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the tries and prints the result.
pub async fn run(args: StartupArgs) -> anyhow::Result<StartupReport> {
    let mut report = StartupReport { command: args.command.clone(), ..Default::default() };
    for n in 1..=args.repeat.max(1) {
        let t = one_try(&args).await.with_context(|| format!("startup try {n}"))?;
        println!(
            "try {n}: accept {:.1} ms, first job {:.1} ms{}",
            t.accept_ms,
            t.first_job_ms,
            t.fast_mode_ms.map(|f| format!(", fast mode {f:.0} ms")).unwrap_or_default()
        );
        report.tries.push(t);
    }
    report.first_job_median_ms = median(report.tries.iter().map(|t| t.first_job_ms).collect());
    let fast: Vec<f64> = report.tries.iter().filter_map(|t| t.fast_mode_ms).collect();
    report.fast_mode_median_ms = (!fast.is_empty()).then(|| median(fast));
    println!(
        "startup: process start -> first job served: median {:.1} ms over {} tries{}",
        report.first_job_median_ms,
        report.tries.len(),
        report
            .fast_mode_median_ms
            .map(|f| format!("; -> fast-mode verification: median {:.1} s", f / 1000.0))
            .unwrap_or_default()
    );
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

async fn one_try(args: &StartupArgs) -> anyhow::Result<StartupTry> {
    let (out, err) = match &args.log {
        Some(path) => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            (Stdio::from(f.try_clone()?), Stdio::from(f))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", args.command))?;
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let result = probe(args, started, deadline, &mut child).await;
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    result
}

async fn probe(
    args: &StartupArgs,
    started: Instant,
    deadline: Instant,
    child: &mut tokio::process::Child,
) -> anyhow::Result<StartupTry> {
    let ms = |i: Instant| i.duration_since(started).as_secs_f64() * 1000.0;
    let mut t = StartupTry::default();
    let mut accepted = None;
    loop {
        if Instant::now() >= deadline {
            bail!("no job within {:.0} s", args.timeout);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the pool exited ({status}) before serving a job");
        }
        let Ok(stream) = tokio::net::TcpStream::connect(args.pool).await else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        accepted.get_or_insert_with(Instant::now);
        let (read, mut write) = stream.into_split();
        let login = crate::identity::address(1, 0);
        write.write_all(wire::login_line(1, &login, "startup", "pastella-loadtest startup").as_bytes()).await?;
        let mut lines = BufReader::new(read).lines();
        let line = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), lines.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => match wire::parse_line(line.as_bytes()) {
                Incoming::Reply { outcome: Ok(result), .. } if wire::parse_login_result(&result).is_ok() => {
                    t.first_job_ms = ms(Instant::now());
                    break;
                }
                _ => t.refused_logins += 1,
            },
            _ => t.refused_logins += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.accept_ms = accepted.map(ms).unwrap_or(0.0);
    if let Some(url) = &args.metrics {
        loop {
            if Instant::now() >= deadline {
                bail!("the pool was not in fast mode within {:.0} s", args.timeout);
            }
            if let Ok(text) = fetch_metrics(url).await {
                if metric_value(&text, "pastella_pool_randomx_fast_mode") == Some(1.0) {
                    t.fast_mode_ms = Some(ms(Instant::now()));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_tries() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
