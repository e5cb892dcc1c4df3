//! The run's report: one JSON document (`--report`) and the human summary printed at the end.
//! Latencies are microseconds in JSON and milliseconds in the summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::histogram::Summary;
use crate::mix::ShareKind;
use crate::procfs::Machine;
use crate::stats::KindStats;

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `pastella-loadtest <version>`.
    pub tool: String,
    /// `--label`.
    pub label: String,
    /// The command line.
    pub command: Vec<String>,
    /// Unix time of the start, s.
    pub started_unix: u64,
    /// Wall time of the run, s.
    pub duration_s: f64,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// How the run was set up.
    pub setup: Setup,
    /// Connecting and logging in.
    pub ramp: Option<RampReport>,
    /// Idle sessions: memory and CPU.
    pub idle: Option<IdleReport>,
    /// Job fan-out rounds.
    pub fanout: Vec<FanoutRound>,
    /// Every fan-out round's per-session latencies together, µs.
    pub fanout_all_us: Option<Summary>,
    /// Block request -> first session with the job, one value per round, µs.
    pub fanout_first_us: Option<Summary>,
    /// Raw hash rate of the harness's hashers (before and after the ceiling phase).
    pub raw: Vec<RawReport>,
    /// Share phases in the order run.
    pub phases: Vec<PhaseReport>,
    /// Verified-share throughput ceiling against the raw rate.
    pub ceiling: Option<CeilingReport>,
    /// The abuse phase: honest answer times with and without a flood.
    pub abuse: Option<AbuseReport>,
    /// Sessions at the end.
    pub sessions: EndReport,
    /// CPU time over the whole run.
    pub cpu: CpuReport,
}

/// How the run was set up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    /// Simulated miners.
    pub miners: u64,
    /// Harness processes.
    pub processes: usize,
    /// Pool stratum addresses.
    pub pools: Vec<String>,
    /// Pool process ids watched.
    pub pool_pids: Vec<u32>,
    /// Source addresses used.
    pub source_ips: usize,
    /// Open-file limit of the harness (soft, hard) after raising.
    pub nofile: (u64, u64),
    /// Open-file limits of the pool processes (soft), when readable.
    pub pool_nofile: Vec<u64>,
    /// Connects per second asked for.
    pub ramp_rate: f64,
    /// RandomX mode of the harness's hashers.
    pub hash_mode: String,
    /// Hashing threads.
    pub hash_threads: usize,
    /// How the miners connect: `tcp`, or `tls (...)` with `--tls`.
    #[serde(default)]
    pub transport: String,
}

/// Connecting and logging in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RampReport {
    /// Sessions attempted.
    pub attempted: u64,
    /// TCP connections made.
    pub connected: u64,
    /// Logins answered with a job.
    pub logged_in: u64,
    /// Connect failures by reason.
    pub connect_failures: BTreeMap<String, u64>,
    /// Login failures by reason.
    pub login_failures: BTreeMap<String, u64>,
    /// connect() duration, µs.
    pub connect_us: Summary,
    /// Login request -> result, µs.
    pub login_us: Summary,
    /// First connect to last answer, s.
    pub seconds: f64,
    /// Logins per second achieved.
    pub logins_per_s: f64,
}

/// Idle sessions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleReport {
    /// Logged-in sessions.
    pub sessions: u64,
    /// Pool RSS before the first connect, KiB (sum over pool processes).
    pub pool_rss_before_kib: u64,
    /// Pool RSS with every session logged in and settled, KiB.
    pub pool_rss_after_kib: u64,
    /// (after - before) / sessions, bytes.
    pub rss_per_session_bytes: f64,
    /// Pool CPU while idle, % of one core.
    pub pool_cpu_pct: f64,
    /// Harness CPU while idle, % of one core.
    pub harness_cpu_pct: f64,
    /// Harness RSS, KiB (all its processes).
    pub harness_rss_kib: u64,
    /// CPU of every other process on the machine meanwhile (other work skews the figures), %
    /// of one core.
    pub other_cpu_pct: f64,
    /// Length of the idle measurement, s.
    pub seconds: f64,
}

/// One fan-out round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutRound {
    /// Round number.
    pub round: usize,
    /// Height of the job that fanned out.
    pub job_height: u64,
    /// Duration of the `POST /devnet/mine` request, ms (the block exists by its end).
    pub mine_request_ms: f64,
    /// Sessions alive.
    pub alive: u64,
    /// Sessions that got the job.
    pub got: u64,
    /// Alive sessions that did not get it within the deadline.
    pub missing: u64,
    /// Block request -> job received, per session, µs.
    pub latency_us: Summary,
    /// Pool CPU during the round, % of one core.
    pub pool_cpu_pct: f64,
    /// Pool CPU time spent from the block request until every session had the job, ms.
    pub pool_cpu_ms: f64,
    /// The same for the harness (receiving the jobs), ms.
    pub harness_cpu_ms: f64,
    /// Pages the pool read back from disk during the round.
    pub pool_major_faults: u64,
    /// CPU of every other process on the machine meanwhile (other work skews the figures), %
    /// of one core.
    pub other_cpu_pct: f64,
}

/// The raw RandomX rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawReport {
    /// `light` or `fast`.
    pub mode: String,
    /// Threads.
    pub threads: usize,
    /// Hashes.
    pub hashes: u64,
    /// Seconds.
    pub seconds: f64,
    /// Hashes per second.
    pub hashes_per_s: f64,
    /// CPU seconds the hashing threads got.
    pub cpu_s: f64,
    /// Harness memory backed by transparent huge pages, KiB (the hasher's cache or dataset).
    pub harness_huge_kib: u64,
    /// Hashes per second with a full core per thread (hashes per thread-CPU-second x threads).
    pub hashes_per_s_full_cores: f64,
    /// Seconds spent building the cache or dataset first.
    pub build_s: f64,
    /// CPU of every other process on the machine meanwhile (other work skews the figures), %
    /// of one core.
    pub other_cpu_pct: f64,
}

/// The abuse phase: the same honest load without and with a flood of bogus submits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AbuseReport {
    /// Honest valid-share answer time p99 without the flood, µs.
    pub baseline_p99_us: Option<u64>,
    /// The same with the flood running, µs.
    pub flood_p99_us: Option<u64>,
    /// flood / baseline (the bound is 2).
    pub ratio: Option<f64>,
    /// What the flood sent and how the pool answered.
    pub flood: crate::abuse::FloodReport,
}

/// One share phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `ceiling`, `load-50%`, `per-miner-rate`, ...
    pub name: String,
    /// How load was offered.
    pub load: String,
    /// Offered shares per second (open loop), 0 for closed loops.
    pub offered_per_s: f64,
    /// Sessions submitting.
    pub sessions: u64,
    /// Share mix.
    pub mix: String,
    /// Submits sent.
    pub sent: u64,
    /// Accepted answers.
    pub accepted: u64,
    /// Accepted per second over the phase's steady window.
    pub accepted_per_s: f64,
    /// Answers by kind of share.
    pub kinds: BTreeMap<ShareKind, KindStats>,
    /// Answers that were not the one owed (a valid share rejected, an invalid one accepted, ...).
    pub unexpected: u64,
    /// Shares planned but not built, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Valid-share answer latency, µs.
    pub latency_valid_us: Summary,
    /// Every answer's latency, µs.
    pub latency_all_us: Summary,
    /// Open loop: sends more than 5 ms behind schedule.
    pub late_sends: u64,
    /// Closed loop: precomputed shares ran out before the end.
    pub stock_exhausted: bool,
    /// First send to last answer, s.
    pub seconds: f64,
    /// Pool CPU during the phase, % of one core.
    pub pool_cpu_pct: f64,
    /// Harness CPU during the phase, % of one core.
    pub harness_cpu_pct: f64,
    /// CPU of every other process on the machine meanwhile (other work skews the figures), %
    /// of one core.
    pub other_cpu_pct: f64,
    /// Hashes the harness computed beforehand for the valid shares.
    pub precompute_hashes: u64,
    /// Seconds those took.
    pub precompute_s: f64,
    /// Pages the pool read back from disk during the phase (code the kernel had reclaimed
    /// while it idled: each one stalls a thread for a disk read).
    pub pool_major_faults: u64,
    /// Pool RSS at the end of the phase, KiB.
    pub pool_rss_kib: u64,
    /// Of which backed by transparent huge pages, KiB.
    pub pool_huge_kib: u64,
    /// What the pool's own metrics say about the phase (single-pool runs with --pool-metrics).
    pub pool_side: Option<PoolSide>,
    /// Accepted per second, second by second.
    pub accepted_series: Vec<u64>,
    /// Slowest answer in each second, µs.
    pub max_latency_series_us: Vec<u64>,
}

/// A phase as the pool's Prometheus metrics saw it (deltas over the phase).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolSide {
    /// Verifications.
    pub verifications: f64,
    /// Mean RandomX time per verification, ms.
    pub hash_ms: f64,
    /// Mean wait for a verifier thread, ms.
    pub queue_wait_ms: f64,
    /// Share answers written.
    pub answers: f64,
    /// Mean time from reading a submit to writing its answer, ms.
    pub answer_ms: f64,
    /// Share of the verifier threads' time spent hashing (verifications x hash time / threads /
    /// phase length).
    pub verifier_busy: f64,
}

/// Throughput ceiling against the raw rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CeilingReport {
    /// Verified (accepted) shares per second through the pool.
    pub verified_per_s: f64,
    /// The harness's raw hashes per second on the same thread count (mean of the measurements
    /// before and after).
    pub raw_hashes_per_s: f64,
    /// verified / raw.
    pub ratio: f64,
    /// The raw rate with a full core per hashing thread (robust against other load).
    pub raw_full_cores_per_s: f64,
    /// verified / raw with full cores: the conservative ratio.
    pub ratio_full_cores: f64,
    /// One hash on one thread, ms (threads / raw rate).
    pub hash_time_ms: f64,
    /// The pool's own mean hashing time per verification in the ceiling phase, ms.
    pub pool_hash_ms: Option<f64>,
    /// Share of the pool's verifier-thread time spent hashing in the ceiling phase.
    pub verifier_busy: Option<f64>,
}

/// Sessions at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndReport {
    /// Still connected at the end.
    pub alive: u64,
    /// Lost before the end, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Answers matching no open request.
    pub unmatched_replies: u64,
    /// Lines a miner would not understand.
    pub unknown_lines: BTreeMap<String, u64>,
    /// Job pushes received.
    pub jobs_received: u64,
    /// keepalived sent / answered / failed.
    pub keepalives: (u64, u64, u64),
}

/// CPU seconds over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuReport {
    /// Pool processes.
    pub pool_s: f64,
    /// Harness processes.
    pub harness_s: f64,
    /// Other watched processes (`--watch-pid`), by label.
    pub others_s: BTreeMap<String, f64>,
    /// Pool peak RSS, KiB (sum of each process's peak).
    pub pool_hwm_kib: u64,
    /// Harness peak RSS, KiB.
    pub harness_hwm_kib: u64,
}

fn ms(us: Option<u64>) -> String {
    us.map(|v| format!("{:.1}", v as f64 / 1000.0)).unwrap_or_else(|| "-".into())
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

/// The human summary.
pub fn summary(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "== pastella-loadtest summary {}", if r.label.is_empty() { "" } else { &r.label });
    let _ = writeln!(
        o,
        "machine: {} x {}, {} MiB RAM, kernel {}",
        r.machine.cpus, r.machine.cpu_model, r.machine.mem_total_mib, r.machine.kernel
    );
    let s = &r.setup;
    let _ = writeln!(
        o,
        "setup: {} miners, {} harness process(es), {} pool port(s), {} source IPs, nofile {}/{}, pool nofile {:?}",
        s.miners,
        s.processes,
        s.pools.len(),
        s.source_ips,
        s.nofile.0,
        s.nofile.1,
        s.pool_nofile
    );
    if let Some(reason) = &r.aborted {
        let _ = writeln!(o, "ABORTED: {reason}");
    }
    if let Some(ramp) = &r.ramp {
        let _ = writeln!(
            o,
            "ramp: {}/{} logged in ({} connected) in {:.1} s ({:.0}/s); connect p50 {} p99 {} max {} ms; login p50 {} p99 {} max {} ms",
            ramp.logged_in,
            ramp.attempted,
            ramp.connected,
            ramp.seconds,
            ramp.logins_per_s,
            ms(ramp.connect_us.p50),
            ms(ramp.connect_us.p99),
            ms(ramp.connect_us.max),
            ms(ramp.login_us.p50),
            ms(ramp.login_us.p99),
            ms(ramp.login_us.max)
        );
        let _ = writeln!(o, "  connect failures: {}", counts(&ramp.connect_failures));
        let _ = writeln!(o, "  login failures:   {}", counts(&ramp.login_failures));
    }
    if let Some(idle) = &r.idle {
        let _ = writeln!(
            o,
            "idle: {} sessions{}, pool RSS {:.1} -> {:.1} MiB = {:.0} bytes/session; pool CPU {:.1} %, harness CPU {:.1} %, other {:.1} % (over {:.0} s); harness RSS {:.1} MiB",
            idle.sessions,
            if r.setup.transport.starts_with("tls") { format!(" over {}", r.setup.transport) } else { String::new() },
            idle.pool_rss_before_kib as f64 / 1024.0,
            idle.pool_rss_after_kib as f64 / 1024.0,
            idle.rss_per_session_bytes,
            idle.pool_cpu_pct,
            idle.harness_cpu_pct,
            idle.other_cpu_pct,
            idle.seconds,
            idle.harness_rss_kib as f64 / 1024.0
        );
    }
    if !r.fanout.is_empty() {
        let _ = writeln!(o, "fan-out (block request -> job at the miner, ms):");
        let _ = writeln!(
            o,
            "  round height   alive     got missing   first    p50    p99    max  mine-req  pool-cpu  pool-us/session  other"
        );
        for f in &r.fanout {
            let _ = writeln!(
                o,
                "  {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>8.1} {:>8.0}% {:>16.1} {:>5.0}%",
                f.round,
                f.job_height,
                f.alive,
                f.got,
                f.missing,
                ms(f.latency_us.min),
                ms(f.latency_us.p50),
                ms(f.latency_us.p99),
                ms(f.latency_us.max),
                f.mine_request_ms,
                f.pool_cpu_pct,
                if f.got > 0 { f.pool_cpu_ms * 1000.0 / f.got as f64 } else { 0.0 },
                f.other_cpu_pct
            );
        }
        if let Some(all) = &r.fanout_all_us {
            let _ = writeln!(
                o,
                "  all rounds: p50 {} p99 {} max {} ms over {} deliveries",
                ms(all.p50),
                ms(all.p99),
                ms(all.max),
                all.count
            );
        }
        if let Some(first) = &r.fanout_first_us {
            let _ = writeln!(
                o,
                "  block request -> first job out: p50 {} max {} ms over {} rounds",
                ms(first.p50),
                ms(first.max),
                first.count
            );
        }
    }
    for raw in &r.raw {
        let _ = writeln!(
            o,
            "raw RandomX ({} mode, {} threads): {:.1} H/s, {:.1} H/s with full cores ({} hashes in {:.1} s; build {:.1} s; other processes {:.0} % CPU; harness huge pages {:.0} MiB)",
            raw.mode,
            raw.threads,
            raw.hashes_per_s,
            raw.hashes_per_s_full_cores,
            raw.hashes,
            raw.seconds,
            raw.build_s,
            raw.other_cpu_pct,
            raw.harness_huge_kib as f64 / 1024.0
        );
    }
    if !r.phases.is_empty() {
        let _ = writeln!(o, "share phases (answer latency in ms):");
        let _ = writeln!(
            o,
            "  {:<16} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>6} {:>6} {:>6}",
            "phase",
            "offered/s",
            "sent",
            "accepted",
            "acc/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "unexp",
            "late",
            "pool%",
            "harn%",
            "other%"
        );
        for p in &r.phases {
            let _ = writeln!(
                o,
                "  {:<16} {:>9.1} {:>8} {:>8} {:>9.1} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5} {:>6.0} {:>6.0} {:>6.0}",
                p.name,
                p.offered_per_s,
                p.sent,
                p.accepted,
                p.accepted_per_s,
                ms(p.latency_valid_us.p50),
                ms(p.latency_valid_us.p99),
                ms(p.latency_valid_us.p999),
                ms(p.latency_valid_us.max),
                p.unexpected,
                p.late_sends,
                p.pool_cpu_pct,
                p.harness_cpu_pct,
                p.other_cpu_pct
            );
            for (kind, k) in &p.kinds {
                if *kind == ShareKind::Valid && k.rejected.is_empty() && k.timed_out == 0 && k.closed == 0 {
                    continue;
                }
                let _ = writeln!(
                    o,
                    "      {kind}: sent {} accepted {} rejected [{}] timed out {} closed {}",
                    k.sent,
                    k.accepted,
                    counts(&k.rejected),
                    k.timed_out,
                    k.closed
                );
            }
            if !p.skipped.is_empty() {
                let _ = writeln!(o, "      skipped: {}", counts(&p.skipped));
            }
            if let Some(ps) = &p.pool_side {
                let _ = writeln!(
                    o,
                    "      pool side: {:.0} verifications, {:.2} ms hashing + {:.2} ms queue each, answers {:.2} ms after the read (mean); verifier threads {:.0} % busy hashing",
                    ps.verifications,
                    ps.hash_ms,
                    ps.queue_wait_ms,
                    ps.answer_ms,
                    ps.verifier_busy * 100.0
                );
            }
            if p.pool_huge_kib > 0 {
                let _ = writeln!(
                    o,
                    "      pool RSS {:.0} MiB, {:.0} MiB of it in transparent huge pages",
                    p.pool_rss_kib as f64 / 1024.0,
                    p.pool_huge_kib as f64 / 1024.0
                );
            }
            if p.pool_major_faults > 0 {
                let _ =
                    writeln!(o, "      pool major page faults: {} (pages read back from disk)", p.pool_major_faults);
            }
            if p.stock_exhausted {
                let _ = writeln!(o, "      (precomputed shares ran out before the end: the ceiling may be higher)");
            }
        }
    }
    if let Some(c) = &r.ceiling {
        let _ = writeln!(
            o,
            "ceiling: {:.1} verified shares/s vs raw {:.1} H/s = {:.1} %; vs raw with full cores {:.1} H/s = {:.1} % (one hash = {:.2} ms per thread)",
            c.verified_per_s,
            c.raw_hashes_per_s,
            c.ratio * 100.0,
            c.raw_full_cores_per_s,
            c.ratio_full_cores * 100.0,
            c.hash_time_ms
        );
        if let (Some(hash_ms), Some(busy)) = (c.pool_hash_ms, c.verifier_busy) {
            let _ = writeln!(
                o,
                "  pool side: {hash_ms:.2} ms per verification hash, verifier threads {:.0} % busy hashing",
                busy * 100.0
            );
        }
    }
    if let Some(a) = &r.abuse {
        let f = &a.flood;
        let _ = writeln!(
            o,
            "abuse: honest valid-share p99 {:.1} ms without, {:.1} ms with the flood (x{:.2}, bound x2); flood: {} bogus submits \
             ({} fake block claims) over {} connections ({} refused) in {:.1} s; answers: {}",
            a.baseline_p99_us.unwrap_or(0) as f64 / 1000.0,
            a.flood_p99_us.unwrap_or(0) as f64 / 1000.0,
            a.ratio.unwrap_or(0.0),
            f.sent,
            f.fake_blocks,
            f.connections,
            f.refused,
            f.seconds,
            counts(&f.answers)
        );
    }
    let e = &r.sessions;
    let _ = writeln!(
        o,
        "sessions at the end: {} alive; dropped: {}; keepalives sent/ok/failed {}/{}/{}; unmatched replies {}; unknown lines: {}",
        e.alive,
        counts(&e.dropped),
        e.keepalives.0,
        e.keepalives.1,
        e.keepalives.2,
        e.unmatched_replies,
        counts(&e.unknown_lines)
    );
    let _ = writeln!(
        o,
        "cpu over the run: pool {:.1} s, harness {:.1} s{}; peak RSS pool {:.1} MiB, harness {:.1} MiB; {:.1} s wall",
        r.cpu.pool_s,
        r.cpu.harness_s,
        r.cpu.others_s.iter().map(|(k, v)| format!(", {k} {v:.1} s")).collect::<String>(),
        r.cpu.pool_hwm_kib as f64 / 1024.0,
        r.cpu.harness_hwm_kib as f64 / 1024.0,
        r.duration_s
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_mentions_every_section_present() {
        let mut r = Report { label: "t".into(), ..Default::default() };
        r.ramp = Some(RampReport {
            attempted: 10,
            logged_in: 9,
            login_failures: [("timeout".into(), 1)].into(),
            ..Default::default()
        });
        r.fanout.push(FanoutRound { round: 1, job_height: 5, alive: 9, got: 9, ..Default::default() });
        r.ceiling = Some(CeilingReport {
            verified_per_s: 70.0,
            raw_hashes_per_s: 75.0,
            ratio: 70.0 / 75.0,
            hash_time_ms: 26.7,
            ..Default::default()
        });
        r.aborted = Some("deadline".into());
        let text = summary(&r);
        for needle in ["ramp: 9/10", "timeout: 1", "fan-out", "ceiling: 70.0", "93.3 %", "ABORTED: deadline"] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.fanout.len(), 1);
    }
}
