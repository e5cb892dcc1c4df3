//! What the harness reads from the kernel: a process's resident memory from
//! `/proc/<pid>/status`, its CPU time from its CPU-time clock (nanoseconds; `/proc/<pid>/stat`'s
//! clock ticks when that clock cannot be read), the machine, the monotonic clock shared by all
//! processes, and the open-file limit.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Memory and CPU of one process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// User + system CPU time, seconds (the scheduler's run time of all its threads, live and
    /// ended, to the nanosecond; a fan-out round of 10,000 deliveries at ~10 us each is 100 ms,
    /// so the 10 ms clock ticks of `/proc/<pid>/stat` would be a 10 % error).
    pub cpu_s: f64,
    /// Threads.
    pub threads: u64,
    /// Memory backed by transparent huge pages (`AnonHugePages` of smaps_rollup), KiB: a
    /// RandomX dataset without them hashes measurably slower.
    pub huge_kib: u64,
    /// Major page faults so far (pages read back from disk: code or data the kernel had
    /// reclaimed).
    pub major_faults: u64,
}

/// `VmRSS`, `VmHWM` and `Threads` from the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> (u64, u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

/// (utime + stime in clock ticks, major faults) from the text of `/proc/<pid>/stat` (the
/// command name may hold spaces and parentheses, so fields are counted after the last `)`).
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the man page, majflt 12, utime 14 and stime 15.
    let majflt: u64 = fields.get(9)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, majflt))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Samples process `pid`; `None` if it is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable clockid_t.
    let clock = (unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } == 0).then_some(clock);
    sample_at(Path::new(&format!("/proc/{pid}")), clock)
}

/// Samples this process.
pub fn sample_self() -> ProcSample {
    sample_at(Path::new("/proc/self"), Some(libc::CLOCK_PROCESS_CPUTIME_ID)).unwrap_or_default()
}

/// Seconds on a CPU-time clock; `None` if it cannot be read (the process is gone).
fn cpu_clock_s(clock: libc::clockid_t) -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

fn sample_at(dir: &Path, clock: Option<libc::clockid_t>) -> Option<ProcSample> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (rss_kib, hwm_kib, threads) = parse_status(&status);
    let (ticks, major_faults) = parse_stat(&stat)?;
    let huge_kib = std::fs::read_to_string(dir.join("smaps_rollup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("AnonHugePages:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    let cpu_s = clock.and_then(cpu_clock_s).unwrap_or(ticks as f64 / ticks_per_second());
    Some(ProcSample { rss_kib, hwm_kib, cpu_s, threads, huge_kib, major_faults })
}

/// Busy CPU seconds of the whole machine (all CPUs, everything but idle and iowait) from the
/// first line of `/proc/stat`.
pub fn parse_system_busy_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(total - idle)
}

/// Busy CPU seconds of the whole machine since boot.
pub fn system_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_system_busy_ticks(&text).unwrap_or(0) as f64 / ticks_per_second()
}

/// Microseconds on `CLOCK_MONOTONIC`: the same clock in every process of the machine, so worker
/// processes and the coordinator can compare timestamps.
pub fn mono_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Raises the soft open-file limit to the hard limit; returns (soft, hard) after the attempt.
pub fn raise_nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit to fill / read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// The machine, for the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory, MiB.
    pub mem_total_mib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// Host name.
    pub hostname: String,
}

/// Reads /proc for [`Machine`].
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    Machine {
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|r| r.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        mem_total_mib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024,
        kernel: read("/proc/sys/kernel/osrelease"),
        hostname: read("/proc/sys/kernel/hostname"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let text = "Name:\tpastella-pool\nVmHWM:\t  912344 kB\nVmRSS:\t  801220 kB\nThreads:\t7\n";
        assert_eq!(parse_status(text), (801_220, 912_344, 7));
        assert_eq!(parse_status(""), (0, 0, 0));
    }

    #[test]
    fn parses_stat_with_a_hostile_name() {
        let text = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 7 0 12345 \
                    1000000 200 18446744073709551615";
        assert_eq!(parse_stat(text), Some((325, 0)));
        assert_eq!(parse_stat("garbage"), None);
        let faults = "1 (x) S 1 1 1 0 -1 0 10 0 77 0 5 6 0 0";
        assert_eq!(parse_stat(faults), Some((11, 77)));
    }

    #[test]
    fn parses_machine_busy_time() {
        let text = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n";
        assert_eq!(parse_system_busy_ticks(text), Some(161));
        assert_eq!(parse_system_busy_ticks("intr 1"), None);
        assert!(system_busy_s() > 0.0);
    }

    #[test]
    fn samples_this_process() {
        let s = sample_self();
        assert!(s.rss_kib > 0);
        assert!(s.threads >= 1);
        assert!(sample(u32::MAX).is_none());
        let a = mono_us();
        assert!(mono_us() >= a);
    }

    #[test]
    fn another_process_cpu_time_comes_from_its_cpu_clock() {
        // Burn 3 ms of CPU: less than one clock tick, so only the CPU-time clock can see it.
        let before = sample(std::process::id()).unwrap().cpu_s;
        let start = sample_self().cpu_s;
        let mut x = 0u64;
        while sample_self().cpu_s - start < 0.003 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = sample(std::process::id()).unwrap().cpu_s;
        assert!(after - before >= 0.003, "{before} -> {after}");
    }
}
