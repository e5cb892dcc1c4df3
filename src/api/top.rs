//! `/get_top10miners` from memory: every known miner's totals, kept by the collector and
//! sorted both ways once per run, so a request costs no Redis whatever its `limit`,
//! `excludeInactive` or `inactiveHours`.

use serde_json::{json, Value};

/// One known miner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// Address.
    pub miner: String,
    /// H/s over the hashrate window.
    pub hashrate: u64,
    /// Newest share, unix s (0: never).
    pub last_share: u64,
    /// Σ difficulty of every share (`workers:<address>` `hashes`).
    pub hashes: u64,
}

/// The rows, in both orders the route offers.
#[derive(Debug, Default)]
pub struct TopTable {
    /// By hashes, then hashrate, descending.
    by_hashes: Vec<TopRow>,
    /// Indexes into `by_hashes`, by hashrate, then hashes, descending.
    by_hashrate: Vec<u32>,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopQuery {
    /// Sort by hashrate (else by hashes).
    pub by_hashrate: bool,
    /// Rows wanted.
    pub limit: usize,
    /// Only miners with a share within `inactive_secs` of `now`.
    pub exclude_inactive: bool,
    /// `inactiveHours` in seconds.
    pub inactive_secs: i64,
}

impl TopTable {
    /// Sorts `rows` both ways (ties broken by address, so answers are stable).
    pub fn new(mut rows: Vec<TopRow>) -> TopTable {
        rows.sort_by(|a, b| b.hashes.cmp(&a.hashes).then(b.hashrate.cmp(&a.hashrate)).then(a.miner.cmp(&b.miner)));
        let mut by_hashrate: Vec<u32> = (0..rows.len() as u32).collect();
        by_hashrate.sort_by(|a, b| {
            let (a, b) = (&rows[*a as usize], &rows[*b as usize]);
            b.hashrate.cmp(&a.hashrate).then(b.hashes.cmp(&a.hashes)).then(a.miner.cmp(&b.miner))
        });
        TopTable { by_hashes: rows, by_hashrate }
    }

    /// Known miners.
    pub fn len(&self) -> usize {
        self.by_hashes.len()
    }

    /// True when no miner is known.
    pub fn is_empty(&self) -> bool {
        self.by_hashes.is_empty()
    }

    /// The route's JSON for `query` at `now` (unix s).
    pub fn answer(&self, query: TopQuery, now: i64) -> Value {
        let active = |r: &TopRow| {
            !query.exclude_inactive || (r.last_share > 0 && now - r.last_share as i64 <= query.inactive_secs)
        };
        let order: Box<dyn Iterator<Item = &TopRow>> = if query.by_hashrate {
            Box::new(self.by_hashrate.iter().map(|i| &self.by_hashes[*i as usize]))
        } else {
            Box::new(self.by_hashes.iter())
        };
        let list: Vec<Value> = order
            .filter(|r| active(r))
            .take(query.limit)
            .map(|r| json!({"miner": r.miner, "hashrate": r.hashrate, "lastShare": r.last_share, "hashes": r.hashes}))
            .collect();
        let sort_by = if query.by_hashrate { "hashrate" } else { "hashes" };
        let total = list.len();
        json!({"miners": list, "sortBy": sort_by, "excludeInactive": query.exclude_inactive, "total": total})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(miner: &str, hashrate: u64, last_share: u64, hashes: u64) -> TopRow {
        TopRow { miner: miner.into(), hashrate, last_share, hashes }
    }

    fn miners(v: &Value) -> Vec<&str> {
        v["miners"].as_array().unwrap().iter().map(|m| m["miner"].as_str().unwrap()).collect()
    }

    #[test]
    fn sorts_both_ways_and_filters_by_any_inactive_period() {
        let table = TopTable::new(vec![
            row("A", 10, 1000, 500),
            row("B", 30, 0, 900),
            row("C", 20, 400, 500),
            row("D", 50, 990, 10),
        ]);
        let q = TopQuery { by_hashrate: false, limit: 10, exclude_inactive: false, inactive_secs: 86_400 };
        assert_eq!(miners(&table.answer(q, 1000)), ["B", "C", "A", "D"], "equal hashes: the higher hashrate first");
        let by_rate = TopQuery { by_hashrate: true, ..q };
        assert_eq!(miners(&table.answer(by_rate, 1000)), ["D", "B", "C", "A"]);
        // Active within 10 s, then within 600 s: B never shared, C 600 s ago.
        let recent = TopQuery { exclude_inactive: true, inactive_secs: 10, ..by_rate };
        assert_eq!(miners(&table.answer(recent, 1000)), ["D", "A"]);
        let ten_minutes = TopQuery { inactive_secs: 600, ..recent };
        assert_eq!(miners(&table.answer(ten_minutes, 1000)), ["D", "C", "A"]);
        let one = table.answer(TopQuery { limit: 1, ..ten_minutes }, 1000);
        let expected = json!({"miners": [{"miner": "D", "hashrate": 50, "lastShare": 990, "hashes": 10}],
                              "sortBy": "hashrate", "excludeInactive": true, "total": 1});
        assert_eq!(one, expected);
    }
}
