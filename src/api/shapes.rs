//! Pure functions behind the API: parsing the old pool's Redis members (spec §9), the JSON
//! shapes of spec §10, hashrate figures from the `hashrate` window, chart series (§8.10).
//! No I/O here, so every rule has a unit test beside it.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

/// A JSON number written the way JavaScript prints it: integral values without `.0`.
pub fn num(v: f64) -> Value {
    if !v.is_finite() {
        return json!(0);
    }
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// JavaScript's `parseInt(text)`: leading blanks, optional sign, leading digits; `None` when
/// there are none (`NaN`).
pub fn parse_int(text: &str) -> Option<i64> {
    let t = text.trim_start();
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).take(18).collect();
    digits.parse::<i64>().ok().map(|v| sign * v)
}

/// JavaScript's `parseFloat(text)`: the longest leading decimal number; `None` for `NaN`.
pub fn parse_float(text: &str) -> Option<f64> {
    let t = text.trim_start().as_bytes();
    let mut i = 0;
    if matches!(t.first(), Some(b'+') | Some(b'-')) {
        i += 1;
    }
    let digits_start = i;
    while t.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut any = i > digits_start;
    if t.get(i) == Some(&b'.') {
        let mut j = i + 1;
        while t.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > i + 1 || any {
            any = any || j > i + 1;
            i = j;
        }
    }
    if !any {
        return None;
    }
    if matches!(t.get(i), Some(b'e') | Some(b'E')) {
        let mut j = i + 1;
        if matches!(t.get(j), Some(b'+') | Some(b'-')) {
            j += 1;
        }
        let exp_start = j;
        while t.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    std::str::from_utf8(&t[..i]).ok()?.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `parseInt(x) || default` with the result kept in `1..=max`.
pub fn page_param(text: Option<&str>, default: u64, max: u64) -> u64 {
    match text.and_then(parse_int) {
        Some(v) if v >= 1 => (v as u64).min(max),
        _ => default,
    }
}

/// One `hashrate` zset member: `<diff>:<key>:<unix ms>:<type>[:<instance>]`, `key` being an
/// address or `address~worker` (a worker name may itself contain `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashrateEntry<'a> {
    /// Σ job difficulty of the record.
    pub difficulty: u64,
    /// `address` or `address~worker`.
    pub key: &'a str,
    /// Unix milliseconds of the record.
    pub at_ms: u64,
    /// Solo shares.
    pub solo: bool,
}

/// Parses a `hashrate` member of either the old 4-field or this pool's 5-field format.
pub fn parse_hashrate(member: &str) -> Option<HashrateEntry<'_>> {
    let (diff, rest) = member.split_once(':')?;
    let (head, last) = rest.rsplit_once(':')?;
    // Old format ends with the type; this pool's adds the instance after it.
    let (head, typ) = if last == "prop" || last == "solo" { (head, last) } else { head.rsplit_once(':')? };
    if typ != "prop" && typ != "solo" {
        return None;
    }
    let (key, ms) = head.rsplit_once(':')?;
    Some(HashrateEntry { difficulty: diff.parse().ok()?, key, at_ms: ms.parse().unwrap_or(0), solo: typ == "solo" })
}

/// Pool-wide figures from the hashrate window.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WindowFigures {
    /// address → H/s (both types).
    pub miners: HashMap<String, u64>,
    /// `address~worker` → H/s.
    pub workers: HashMap<String, u64>,
    /// Distinct addresses mining prop / solo.
    pub miner_count: (u64, u64),
    /// Distinct `address~worker` mining prop / solo.
    pub worker_count: (u64, u64),
    /// Pool hashrate prop / solo, H/s.
    pub hashrate: (u64, u64),
    /// address → newest record (unix s).
    pub last_seen: HashMap<String, u64>,
    /// (address, worker) → newest record (unix s).
    pub worker_last_seen: HashMap<(String, String), u64>,
}

fn per_second(sum: u64, window: u64) -> u64 {
    ((sum as f64) / (window.max(1) as f64)).round() as u64
}

/// Computes the hashrates over `window` seconds from the window's members. Unlike the old
/// pool (spec §11.3 #9), the pool hashrate sums the per-address records, which exist for every
/// share, so miners without a worker name count too.
pub fn window_figures(members: &[String], window: u64) -> WindowFigures {
    let mut miners: HashMap<String, u64> = HashMap::new();
    let mut workers: HashMap<String, u64> = HashMap::new();
    let mut typed: HashMap<(String, bool), u64> = HashMap::new();
    let mut typed_workers: HashMap<(String, bool), ()> = HashMap::new();
    let mut f = WindowFigures::default();
    for member in members {
        let Some(e) = parse_hashrate(member) else { continue };
        let at = e.at_ms / 1000;
        if let Some((address, worker)) = e.key.split_once('~') {
            *workers.entry(e.key.to_string()).or_default() += e.difficulty;
            typed_workers.insert((e.key.to_string(), e.solo), ());
            let seen = f.worker_last_seen.entry((address.to_string(), worker.to_string())).or_default();
            *seen = (*seen).max(at);
        } else {
            *miners.entry(e.key.to_string()).or_default() += e.difficulty;
            *typed.entry((e.key.to_string(), e.solo)).or_default() += e.difficulty;
            let seen = f.last_seen.entry(e.key.to_string()).or_default();
            *seen = (*seen).max(at);
        }
    }
    let (mut prop, mut solo) = (0u64, 0u64);
    for ((_, is_solo), diff) in &typed {
        if *is_solo {
            solo += diff;
            f.miner_count.1 += 1;
        } else {
            prop += diff;
            f.miner_count.0 += 1;
        }
    }
    for (_, is_solo) in typed_workers.keys() {
        if *is_solo {
            f.worker_count.1 += 1;
        } else {
            f.worker_count.0 += 1;
        }
    }
    f.hashrate = (per_second(prop, window), per_second(solo, window));
    f.miners = miners.into_iter().map(|(k, v)| (k, per_second(v, window))).collect();
    f.workers = workers.into_iter().map(|(k, v)| (k, per_second(v, window))).collect();
    f
}

/// What became of a found block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// Waiting for `depth` confirmations (`blocks:candidates`).
    Pending,
    /// Matured on the main chain and credited.
    Confirmed,
    /// Not on the main chain.
    Orphaned,
}

impl BlockStatus {
    /// The API's name for it.
    pub fn name(self) -> &'static str {
        match self {
            BlockStatus::Pending => "pending",
            BlockStatus::Confirmed => "confirmed",
            BlockStatus::Orphaned => "orphaned",
        }
    }
}

/// A block from `blocks:candidates` or `blocks:matured`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRecord {
    /// Height.
    pub height: u64,
    /// `prop` or `solo`.
    pub solo: bool,
    /// Finder address.
    pub miner: String,
    /// Block id.
    pub hash: String,
    /// Unix seconds when found.
    pub timestamp: u64,
    /// Network difficulty.
    pub difficulty: u64,
    /// Σ job difficulty of the round the block closed.
    pub shares: u64,
    /// Round score.
    pub score: f64,
    /// The finder's score.
    pub finder_score: f64,
    /// Status, decided explicitly: a candidate is pending; a matured member with the orphan
    /// flag `1` (or the old `true`) is orphaned, otherwise confirmed (spec §11.3 #7).
    pub status: BlockStatus,
    /// Reward credited (confirmed blocks) in atomic units; 0 otherwise until filled from
    /// `blocks:info`.
    pub reward: u64,
}

impl BlockRecord {
    /// Parses a member; `matured` tells which zset it came from.
    pub fn parse(member: &str, height: u64, matured: bool) -> Option<BlockRecord> {
        let parts: Vec<&str> = member.split(':').collect();
        if parts.len() < 6 || (parts[0] != "prop" && parts[0] != "solo") {
            return None;
        }
        let int = |i: usize| parts.get(i).and_then(|v| parse_int(v)).filter(|v| *v > 0).unwrap_or(0) as u64;
        let float = |i: usize| parts.get(i).and_then(|v| parse_float(v)).unwrap_or(0.0);
        let (status, reward) = if !matured {
            (BlockStatus::Pending, 0)
        } else if parts.get(8).is_some_and(|f| *f == "1" || *f == "true") {
            (BlockStatus::Orphaned, 0)
        } else {
            (BlockStatus::Confirmed, int(9))
        };
        Some(BlockRecord {
            height,
            solo: parts[0] == "solo",
            miner: parts[1].to_string(),
            hash: parts[2].to_string(),
            timestamp: int(3),
            difficulty: int(4),
            shares: int(5),
            score: if parts.len() > 6 { float(6) } else { int(5) as f64 },
            finder_score: if parts.len() > 7 { float(7) } else { int(5) as f64 },
            status,
            reward,
        })
    }

    /// `round2(shares / difficulty * 100)`.
    pub fn effort(&self) -> f64 {
        if self.difficulty == 0 {
            return 0.0;
        }
        (self.shares as f64 / self.difficulty as f64 * 100.0 * 100.0).round() / 100.0
    }

    /// The `ApiBlock` object of spec §10.
    pub fn api_json(&self) -> Value {
        json!({
            "height": self.height,
            "type": if self.solo { "solo" } else { "prop" },
            "miner": self.miner,
            "hash": self.hash,
            "timestamp": self.timestamp,
            "difficulty": self.difficulty,
            "shares": self.shares,
            "effort": num(self.effort()),
            "status": self.status.name(),
            "reward": self.reward,
            "score": num(self.score),
            "minerScore": num(self.finder_score),
        })
    }
}

/// Parses `(member, height)` pairs, skipping unreadable members.
pub fn parse_blocks(members: &[(String, u64)], matured: bool) -> Vec<BlockRecord> {
    members.iter().filter_map(|(m, h)| BlockRecord::parse(m, *h, matured)).collect()
}

/// Pool-wide block totals (`totalBlocks`, `totalDiff`, ... of `/stats`, the admin figures).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BlockTotals {
    /// Blocks (all statuses) prop / solo.
    pub blocks: (u64, u64),
    /// Σ network difficulty prop / solo.
    pub diff: (u64, u64),
    /// Σ round shares prop / solo.
    pub shares: (u64, u64),
    /// Confirmed blocks prop / solo.
    pub confirmed: (u64, u64),
    /// Σ network difficulty of confirmed blocks prop / solo.
    pub confirmed_diff: (u64, u64),
    /// Σ round shares of confirmed blocks prop / solo.
    pub confirmed_shares: (u64, u64),
    /// Orphaned blocks.
    pub orphaned: u64,
    /// Σ rewards of confirmed blocks prop / solo (atomic units).
    pub revenue: (u64, u64),
}

impl BlockTotals {
    /// Adds blocks.
    pub fn add(&mut self, blocks: &[BlockRecord]) {
        for b in blocks {
            let pick = |pair: &mut (u64, u64), v: u64| {
                if b.solo {
                    pair.1 += v
                } else {
                    pair.0 += v
                }
            };
            pick(&mut self.blocks, 1);
            pick(&mut self.diff, b.difficulty);
            pick(&mut self.shares, b.shares);
            match b.status {
                BlockStatus::Confirmed => {
                    pick(&mut self.confirmed, 1);
                    pick(&mut self.confirmed_diff, b.difficulty);
                    pick(&mut self.confirmed_shares, b.shares);
                    pick(&mut self.revenue, b.reward);
                }
                BlockStatus::Orphaned => self.orphaned += 1,
                BlockStatus::Pending => {}
            }
        }
    }
}

/// `{"YYYY-MM-DD": count}` for the last `days` days (UTC), prop and solo, counting matured
/// blocks as the old pool's blocks chart does.
pub fn blocks_per_day(matured: &[BlockRecord], now: u64, days: u32) -> (Map<String, Value>, Map<String, Value>) {
    let today = now / 86_400;
    let first = today.saturating_sub(days as u64);
    let mut prop = BTreeMap::new();
    let mut solo = BTreeMap::new();
    for day in first..=today {
        prop.insert(day, 0u64);
        solo.insert(day, 0u64);
    }
    for b in matured {
        let day = b.timestamp / 86_400;
        if day < first || day > today {
            continue;
        }
        *if b.solo { &mut solo } else { &mut prop }.entry(day).or_default() += 1;
    }
    let to_map = |m: BTreeMap<u64, u64>| m.into_iter().map(|(d, n)| (day_name(d), json!(n))).collect();
    (to_map(prop), to_map(solo))
}

/// `YYYY-MM-DD` of a day number since the epoch (civil calendar, UTC).
pub fn day_name(day: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

/// A payment object: `{txHash, amount, fee, timestamp[, address]}` from a `payments:*` member
/// (`txHash:amount:fee:0[:destinations:firstAddress]`).
pub fn payment_json(member: &str, timestamp: u64, with_address: bool) -> Value {
    let parts: Vec<&str> = member.split(':').collect();
    let float = |i: usize| num(parts.get(i).and_then(|v| parse_float(v)).unwrap_or(0.0));
    let mut v = json!({
        "txHash": parts.first().copied().unwrap_or(""),
        "amount": float(1),
        "fee": float(2),
        "timestamp": timestamp,
    });
    if with_address {
        v["address"] = parts.get(5).filter(|a| !a.is_empty()).map_or(Value::Null, |a| json!(a));
    }
    v
}

/// How samples within one step are merged (spec §8.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Running average, rounded (hashrates, miners, difficulty).
    AvgRound,
    /// Maximum (workers).
    Max,
}

/// A chart series: `[[unix s, value, update count], …]`.
pub type Series = Vec<(u64, f64, u64)>;

/// Parses a stored series; anything unreadable is an empty series.
pub fn parse_series(json: Option<&str>) -> Series {
    let Some(text) = json else { return Vec::new() };
    let Ok(Value::Array(points)) = serde_json::from_str::<Value>(text) else { return Vec::new() };
    points
        .iter()
        .filter_map(|p| {
            let a = p.as_array()?;
            Some((
                a.first()?.as_f64()? as u64,
                a.get(1)?.as_f64().unwrap_or(0.0),
                a.get(2).and_then(Value::as_u64).unwrap_or(1),
            ))
        })
        .collect()
}

/// A series as the old pool stores it.
pub fn series_json(series: &Series) -> Value {
    Value::Array(series.iter().map(|(t, v, n)| json!([t, num(*v), n])).collect())
}

/// Adds a sample: a new point when the last one is older than `step`, otherwise merged into
/// it; points older than `max_period` are dropped.
pub fn add_sample(series: &mut Series, now: u64, value: f64, step: u64, max_period: u64, merge: Merge) {
    match series.last_mut() {
        Some(last) if now.saturating_sub(last.0) <= step => {
            match merge {
                Merge::AvgRound => last.1 = ((last.1 * last.2 as f64 + value) / (last.2 as f64 + 1.0)).round(),
                Merge::Max => last.1 = last.1.max(value),
            }
            last.2 += 1;
        }
        _ => series.push((now, value, 1)),
    }
    series.retain(|p| now.saturating_sub(p.0) <= max_period);
}

/// Mean of the points within the last 1, 6 and 24 hours (`hashrate_1h/6h/24h`), rounded to
/// whole H/s like every other hashrate of the API (the old API's `avgRound` convention).
pub fn averages(series: &Series, now: u64) -> [u64; 3] {
    let mut sums = [0.0; 3];
    let mut counts = [0u64; 3];
    for (t, v, _) in series {
        let age = now.saturating_sub(*t);
        for (i, hours) in [1u64, 6, 24].iter().enumerate() {
            if age <= hours * 3600 {
                sums[i] += v;
                counts[i] += 1;
            }
        }
    }
    [0, 1, 2].map(|i| (sums[i] / counts[i].max(1) as f64).round().max(0.0) as u64)
}

/// `address → score` from a `blocks:participants` entry (`addr:score,addr:score`).
pub fn parse_participants(entry: &str) -> HashMap<String, f64> {
    entry
        .split(',')
        .filter_map(|p| {
            let (a, s) = p.rsplit_once(':')?;
            Some((a.to_string(), parse_float(s)?))
        })
        .collect()
}

/// Sum of a hash of numbers (round scores).
pub fn sum_values(map: &HashMap<String, String>) -> f64 {
    map.values().filter_map(|v| parse_float(v)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(num(1.0).to_string(), "1");
        assert_eq!(num(9.09).to_string(), "9.09");
        assert_eq!(num(f64::NAN).to_string(), "0");
        assert_eq!(parse_int(" 12abc"), Some(12));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(parse_int("abc"), None);
        assert_eq!(parse_float("1.5PAS"), Some(1.5));
        assert_eq!(parse_float("0.001"), Some(0.001));
        assert_eq!(parse_float("x"), None);
        assert_eq!(page_param(Some("0"), 20, 100), 20);
        assert_eq!(page_param(Some("-4"), 1, 100), 1);
        assert_eq!(page_param(Some("500"), 20, 100), 100);
        assert_eq!(page_param(None, 20, 100), 20);
    }

    #[test]
    fn hashrate_members_of_both_formats() {
        let e = parse_hashrate("50:PASaddr~rig:1:2:1700000000000:prop:ab12cd34").unwrap();
        assert_eq!((e.difficulty, e.key, e.at_ms, e.solo), (50, "PASaddr~rig:1:2", 1_700_000_000_000, false));
        let e = parse_hashrate("7:PASaddr:1700000000000:solo").unwrap();
        assert_eq!((e.difficulty, e.key, e.solo), (7, "PASaddr", true));
        assert!(parse_hashrate("x:PASaddr:1:prop").is_none());
        assert!(parse_hashrate("garbage").is_none());
    }

    #[test]
    fn window_counts_every_address_once() {
        let members: Vec<String> = [
            "600:A~r1:1000:prop:i",
            "600:A:1000:prop:i",
            "1200:A~r2:2000:prop:i",
            "1200:A:2000:prop:i",
            "300:B~:3000:solo:i",
            "300:B:3000:solo:i",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = window_figures(&members, 600);
        assert_eq!(f.hashrate, (3, 1));
        assert_eq!(f.miner_count, (1, 1));
        assert_eq!(f.worker_count, (2, 1));
        assert_eq!(f.miners["A"], 3);
        assert_eq!(f.workers["A~r1"], 1);
        assert_eq!(f.last_seen["A"], 2);
        assert_eq!(f.worker_last_seen[&("A".to_string(), "r2".to_string())], 2);
    }

    #[test]
    fn block_status_is_explicit() {
        let c = BlockRecord::parse("prop:A:h1:100:1000:1500:1500:20", 10, false).unwrap();
        assert_eq!(c.status, BlockStatus::Pending);
        assert_eq!(c.effort(), 150.0);
        let ok = BlockRecord::parse("solo:A:h2:100:1000:333:333:333:0:500", 11, true).unwrap();
        assert_eq!((ok.status, ok.reward, ok.solo), (BlockStatus::Confirmed, 500, true));
        assert_eq!(ok.effort(), 33.3);
        let orphan = BlockRecord::parse("prop:A:h3:100:1000:10:10:10:1", 12, true).unwrap();
        assert_eq!((orphan.status, orphan.reward), (BlockStatus::Orphaned, 0));
        let old_orphan = BlockRecord::parse("prop:A:h3:100:1000:10:10:10:true:5", 12, true).unwrap();
        assert_eq!(old_orphan.status, BlockStatus::Orphaned);
        let v = ok.api_json();
        assert_eq!(v["status"], "confirmed");
        assert_eq!(v["effort"], json!(33.3));
        assert_eq!(v["type"], "solo");
        let mut totals = BlockTotals::default();
        totals.add(&[c, ok, orphan]);
        assert_eq!(totals.blocks, (2, 1));
        assert_eq!(totals.revenue, (0, 500));
        assert_eq!(totals.orphaned, 1);
    }

    #[test]
    fn days_are_civil_dates() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(19_723), "2024-01-01");
        assert_eq!(day_name(20_513), "2026-03-01");
        let b = BlockRecord::parse("prop:A:h:1772323200:1:1:1:1:0:1", 1, true).unwrap();
        let (prop, solo) = blocks_per_day(&[b], 1_772_323_200 + 100, 30);
        assert_eq!(prop.len(), 31);
        assert_eq!(prop["2026-03-01"], 1);
        assert_eq!(solo["2026-03-01"], 0);
    }

    #[test]
    fn payments() {
        let v = payment_json("abcd:1000:10:0:2:PASx", 5, true);
        assert_eq!(v, json!({"txHash":"abcd","amount":1000,"fee":10,"timestamp":5,"address":"PASx"}));
        let v = payment_json("abcd:1000:10:0", 5, true);
        assert_eq!(v["address"], Value::Null);
        let v = payment_json("abcd:1000:10:0", 5, false);
        assert!(v.get("address").is_none());
    }

    #[test]
    fn chart_series_merge_like_the_old_pool() {
        let mut s = Series::new();
        add_sample(&mut s, 1000, 10.0, 60, 3600, Merge::AvgRound);
        add_sample(&mut s, 1030, 21.0, 60, 3600, Merge::AvgRound);
        assert_eq!(s, vec![(1000, 16.0, 2)]);
        add_sample(&mut s, 1100, 5.0, 60, 3600, Merge::Max);
        add_sample(&mut s, 1110, 7.0, 60, 3600, Merge::Max);
        assert_eq!(s[1], (1100, 7.0, 2));
        add_sample(&mut s, 5000, 1.0, 60, 3600, Merge::AvgRound);
        assert_eq!(s.len(), 1, "old points dropped");
        let text = series_json(&s).to_string();
        assert_eq!(text, "[[5000,1,1]]");
        assert_eq!(parse_series(Some(&text)), s);
        assert_eq!(parse_series(Some("nonsense")), Series::new());
        let avg = averages(&vec![(0, 10.0, 1), (7200, 20.0, 1), (10_000, 30.0, 1)], 10_000);
        assert_eq!(avg, [25, 20, 20]);
        let avg = averages(&vec![(0, 31.0, 1), (1, 31.0, 1), (2, 33.0, 1)], 2);
        assert_eq!(avg, [32, 32, 32], "whole H/s, rounded (31.67 -> 32)");
    }

    #[test]
    fn participants_parse() {
        let p = parse_participants("A:10,B:2.5");
        assert_eq!(p["A"], 10.0);
        assert_eq!(p["B"], 2.5);
    }
}
