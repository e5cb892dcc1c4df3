//! How many miners this process can hold. Each session is a socket, so the open-file limit
//! bounds it: at start-up the pool raises its soft limit to the hard limit, keeps
//! [`RESERVED_FDS`] descriptors for itself (Redis, the daemon and wallet, the API, logs,
//! listeners) and reports what is left, capped by `poolServer.maxConnections`, in the log, on
//! `/health` and as a metric.

use serde_json::{json, Value};

/// Descriptors kept for everything that is not a miner.
pub const RESERVED_FDS: u64 = 256;

/// Where to raise the open-file limit, for the log and `/health`.
pub const HOW_TO_RAISE: &str = "raise the open-file hard limit: LimitNOFILE= in the systemd unit \
     (deploy/systemd ships 1048576), `ulimits: nofile:` in compose.yml, or `ulimit -Hn` / \
     /etc/security/limits.conf for a shell";

/// The figures that bound this process's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCapacity {
    /// The soft open-file limit in force (after raising it).
    pub open_file_limit: u64,
    /// The hard limit (the most the soft limit can be raised to without privileges).
    pub hard_limit: u64,
    /// `poolServer.maxConnections`.
    pub max_connections: u64,
}

impl SessionCapacity {
    /// Sessions this process can hold: what the open files leave after [`RESERVED_FDS`], and
    /// at most `maxConnections`.
    pub fn sessions(&self) -> u64 {
        self.open_file_limit.saturating_sub(RESERVED_FDS).min(self.max_connections)
    }

    /// True when the open-file limit, not `maxConnections`, is the bound.
    pub fn limited_by_open_files(&self) -> bool {
        self.open_file_limit.saturating_sub(RESERVED_FDS) < self.max_connections
    }

    /// `/health`'s `sessions` object, with the connections open now.
    pub fn json(&self, connected: u64) -> Value {
        let mut body = json!({
            "capacity": self.sessions(),
            "connected": connected,
            "openFileLimit": self.open_file_limit,
            "openFileHardLimit": self.hard_limit,
            "reservedFiles": RESERVED_FDS,
            "maxConnections": self.max_connections,
            "limitedBy": if self.limited_by_open_files() { "openFileLimit" } else { "maxConnections" },
        });
        if self.limited_by_open_files() {
            body["howToRaise"] = json!(HOW_TO_RAISE);
        }
        body
    }
}

/// Raises the soft open-file limit to the hard limit and returns the capacity that results.
pub fn raise_open_file_limit(max_connections: usize) -> SessionCapacity {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 };
    if read && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    SessionCapacity {
        open_file_limit: limit.rlim_cur,
        hard_limit: limit.rlim_max,
        max_connections: max_connections as u64,
    }
}

/// Says what bounds this process's sessions (once, when its stratum side starts): a log line
/// (a warning with how to raise it when the open-file limit is the bound) and the metrics.
pub fn report(capacity: &SessionCapacity) {
    if capacity.limited_by_open_files() {
        tracing::warn!(
            capacity = capacity.sessions(),
            open_files = capacity.open_file_limit,
            max_connections = capacity.max_connections,
            "Session capacity: {} miners (the open-file limit {} less {RESERVED_FDS} for the pool itself is below \
             poolServer.maxConnections {}); to hold more, {HOW_TO_RAISE}",
            capacity.sessions(),
            capacity.open_file_limit,
            capacity.max_connections
        );
    } else {
        tracing::info!(
            capacity = capacity.sessions(),
            open_files = capacity.open_file_limit,
            "Session capacity: {} miners (poolServer.maxConnections; open-file limit {})",
            capacity.sessions(),
            capacity.open_file_limit
        );
    }
    crate::metrics::session_capacity(capacity.sessions(), capacity.open_file_limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(open_files: u64, max_connections: u64) -> SessionCapacity {
        SessionCapacity { open_file_limit: open_files, hard_limit: open_files, max_connections }
    }

    #[test]
    fn the_open_file_limit_less_the_reserve_bounds_sessions() {
        let c = capacity(20_000, 200_000);
        assert_eq!(c.sessions(), 20_000 - RESERVED_FDS);
        assert!(c.limited_by_open_files());
        let body = c.json(12);
        assert_eq!(body["capacity"], 19_744);
        assert_eq!(body["connected"], 12);
        assert_eq!(body["limitedBy"], "openFileLimit");
        assert_eq!(body["howToRaise"], HOW_TO_RAISE);
    }

    #[test]
    fn max_connections_bounds_sessions_when_files_are_plenty() {
        let c = capacity(1_048_576, 200_000);
        assert_eq!(c.sessions(), 200_000);
        assert!(!c.limited_by_open_files());
        let body = c.json(0);
        assert_eq!(body["limitedBy"], "maxConnections");
        assert!(body.get("howToRaise").is_none());
    }

    #[test]
    fn a_limit_below_the_reserve_leaves_no_sessions() {
        assert_eq!(capacity(100, 10).sessions(), 0);
    }

    #[test]
    fn raising_reports_the_limit_in_force() {
        let c = raise_open_file_limit(50);
        assert!(c.open_file_limit >= 1 && c.open_file_limit <= c.hard_limit);
        assert_eq!(c.max_connections, 50);
    }
}
