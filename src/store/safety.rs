//! Is this Redis safe to keep money in? Read at start-up and on every `/health`:
//! `maxmemory-policy` (any policy but `noeviction` may drop keys under memory pressure: with
//! `allkeys-lru`, as the old operator guide advises, a balance or a payment journal entry can
//! vanish silently) and persistence (`appendonly`, `save`: with neither, a Redis restart loses
//! every balance).

use super::{timed, Store, StoreError};

/// What Redis reported about eviction and persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSafety {
    /// `maxmemory-policy` (`noeviction`, `allkeys-lru`, ...).
    pub maxmemory_policy: String,
    /// `appendonly yes`.
    pub appendonly: bool,
    /// `save`: the RDB snapshot schedule, empty when snapshots are off.
    pub save: String,
}

impl RedisSafety {
    /// Reads the three settings from `CONFIG GET` replies (name, value pairs).
    pub fn from_pairs(pairs: &[(String, String)]) -> RedisSafety {
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string());
        RedisSafety {
            maxmemory_policy: get("maxmemory-policy").unwrap_or_default(),
            appendonly: get("appendonly").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            save: get("save").unwrap_or_default(),
        }
    }

    /// True when Redis may evict keys under memory pressure.
    pub fn evicting(&self) -> bool {
        self.maxmemory_policy != "noeviction"
    }

    /// How Redis persists its data: `aof`, `rdb`, `aof+rdb` or `none`.
    pub fn persistence(&self) -> &'static str {
        match (self.appendonly, !self.save.is_empty()) {
            (true, true) => "aof+rdb",
            (true, false) => "aof",
            (false, true) => "rdb",
            (false, false) => "none",
        }
    }

    /// True when something survives a Redis restart.
    pub fn persisted(&self) -> bool {
        self.persistence() != "none"
    }

    /// One line for the log and `/health`.
    pub fn detail(&self) -> String {
        let eviction = if self.evicting() {
            format!("maxmemory-policy {} EVICTS keys (balances can vanish; set noeviction)", self.maxmemory_policy)
        } else {
            "maxmemory-policy noeviction".to_string()
        };
        let persistence = match self.persistence() {
            "none" => "persistence NONE (a Redis restart loses every balance; set appendonly yes)".to_string(),
            p => format!("persistence {p}"),
        };
        format!("{eviction}; {persistence}")
    }
}

impl Store {
    /// `CONFIG GET maxmemory-policy`, `appendonly` and `save`.
    pub async fn redis_safety(&self) -> Result<RedisSafety, StoreError> {
        timed("config_get", async {
            let mut conn = self.conn();
            let mut pairs = Vec::new();
            for name in ["maxmemory-policy", "appendonly", "save"] {
                let reply: Vec<(String, String)> =
                    redis::cmd("CONFIG").arg("GET").arg(name).query_async(&mut conn).await?;
                pairs.extend(reply);
            }
            Ok(RedisSafety::from_pairs(&pairs))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::RedisSafety;

    fn safety(policy: &str, appendonly: &str, save: &str) -> RedisSafety {
        let pairs = [("maxmemory-policy", policy), ("appendonly", appendonly), ("save", save)];
        RedisSafety::from_pairs(&pairs.map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn only_noeviction_keeps_every_key() {
        assert!(!safety("noeviction", "yes", "").evicting());
        for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-ttl"] {
            assert!(safety(policy, "yes", "").evicting(), "{policy}");
        }
    }

    #[test]
    fn persistence_is_aof_or_rdb_snapshots() {
        assert_eq!(safety("noeviction", "yes", "").persistence(), "aof");
        assert_eq!(safety("noeviction", "no", "3600 1 300 100").persistence(), "rdb");
        assert_eq!(safety("noeviction", "yes", "3600 1").persistence(), "aof+rdb");
        let none = safety("noeviction", "no", "");
        assert!(!none.persisted());
        assert!(none.detail().contains("persistence NONE"), "{}", none.detail());
        assert!(safety("allkeys-lru", "yes", "").detail().contains("allkeys-lru EVICTS"));
    }
}
