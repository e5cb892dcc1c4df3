//! The hashrate window kept in memory and brought up to date incrementally, so a collector run
//! reads only the part of the `hashrate` zset written since the last one (spec §9: member
//! `<diff>:<key>:<unix ms>:<type>[:<instance>]`, score = unix seconds of the writer's flush).
//!
//! Each run reads the members with score ≥ a cursor (`overlap` seconds behind the collector's
//! clock, so a flush that reached Redis a little after its own timestamp, or a node whose clock
//! lags, is still seen); members already held are recognised by their text and skipped. Entries
//! older than the window leave the running sums. The same read returns how many members Redis
//! has from `overlap` seconds into the window on (`ZCOUNT`, in one `MULTI`; the window's first
//! seconds are left out because another API node whose clock runs ahead trims them first), and
//! the window must then hold exactly that many there: when it does not
//! (a write older than the cursor, a member removed by someone else, a flushed database, another
//! collector trimming with a clock ahead of ours) the window is rebuilt from a full read. A
//! fresh window (start, restart, changed `hashrateWindow`) is a full read too. A full read goes
//! in slices of a few seconds of records each (a 100,000-worker window is ~270 MB: one reply of
//! that size blocks Redis for seconds and outlasts the client's timeout), then the ordinary read.
//!
//! Per-key sums give the same [`WindowFigures`] as [`shapes::window_figures`] over the same
//! members, provided a member's time is its score's second (true of every writer: this pool
//! and the old one take both from one clock reading), so entries leave in time order.

use std::collections::{BTreeMap, HashMap};

use super::shapes::{self, WindowFigures};

/// One member held in the window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Difficulty of the record.
    difficulty: u64,
    /// Index into [`HashrateWindow::keys`]; `u32::MAX` for a member that does not parse (held
    /// only so the count matches Redis's).
    key: u32,
    /// Solo record.
    solo: bool,
}

const UNPARSED: u32 = u32::MAX;

/// Running sums of one `address` or `address~worker`, per type (`[prop, solo]`).
#[derive(Debug, Default, Clone)]
struct Sums {
    name: String,
    difficulty: [u64; 2],
    records: [u64; 2],
    last_seen: u64,
}

/// What one [`HashrateWindow::apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Members read from Redis.
    pub read: u64,
    /// Members new to the window (the rest were already held from an earlier read).
    pub added: u64,
    /// Entries that left the window by age.
    pub expired: u64,
    /// The window holds as many members as Redis says it has; when false, [`HashrateWindow`]
    /// has reset itself and the next read must be a full one.
    pub consistent: bool,
}

/// The `hashrate` window and its per-key sums.
#[derive(Debug)]
pub struct HashrateWindow {
    /// Window length, seconds (`api.hashrateWindow`).
    window: u64,
    /// How far behind the collector's clock each read starts, seconds.
    overlap: u64,
    /// Next read starts here (unix s); `None` until the first full read.
    cursor: Option<u64>,
    /// Entries by score.
    entries: BTreeMap<u64, Vec<Entry>>,
    /// Members with a score at or after the cursor (the next read sees them again).
    recent: HashMap<String, u64>,
    /// Per-key sums; slots of keys that left the window are reused.
    keys: Vec<Sums>,
    /// Key name → slot.
    slots: HashMap<String, u32>,
    /// Free slots.
    free: Vec<u32>,
    /// Members held, parsed or not.
    len: u64,
}

impl HashrateWindow {
    /// An empty window of `window` seconds whose reads start `overlap` seconds behind the clock.
    pub fn new(window: u64, overlap: u64) -> HashrateWindow {
        HashrateWindow {
            window: window.max(1),
            overlap,
            cursor: None,
            entries: BTreeMap::new(),
            recent: HashMap::new(),
            keys: Vec::new(),
            slots: HashMap::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Window length, seconds.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Members held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True until a full read was applied (and again after a reset).
    pub fn needs_full_read(&self) -> bool {
        self.cursor.is_none()
    }

    /// The first score the next read must cover, for a window starting at `window_start`.
    pub fn read_from(&self, window_start: u64) -> u64 {
        self.cursor.map_or(window_start, |c| c.max(window_start))
    }

    /// Forgets everything; the next read is a full one.
    pub fn reset(&mut self) {
        *self = HashrateWindow::new(self.window, self.overlap);
    }

    /// Where a full read taken at `now` stops reading in slices: the rest, from here on, is
    /// the ordinary read (one `MULTI` with the size check).
    pub fn slices_end(&self, now: u64) -> u64 {
        now.saturating_sub(self.overlap)
    }

    /// Loads one slice of a full read: members with scores in `[from, to)`, `to` ≤
    /// [`slices_end`](Self::slices_end). Slices are read one by one, each bounded, so a large
    /// window never needs one huge reply; the read that follows the last slice (from its end)
    /// checks the result against Redis's size.
    pub fn load_slice(&mut self, to: u64, members: Vec<(String, u64)>) -> u64 {
        let n = members.len() as u64;
        for (member, score) in members {
            self.insert(&member, score);
        }
        self.cursor = Some(self.cursor.unwrap_or(0).max(to));
        n
    }

    /// Where the size check starts: members in the window's first `overlap` seconds are left
    /// out of it, since another API node whose clock runs a little ahead trims them before
    /// this one does (each collector trims with its own clock).
    pub fn check_from(&self, window_start: u64) -> u64 {
        window_start + self.overlap
    }

    /// Applies one read taken at `now`: `members` (member, score) with score ≥
    /// [`read_from`](Self::read_from), and `redis_count`, how many members Redis has with a
    /// score ≥ [`check_from`](Self::check_from), read atomically with them.
    pub fn apply(&mut self, window_start: u64, now: u64, members: Vec<(String, u64)>, redis_count: u64) -> Applied {
        let mut applied = Applied { read: members.len() as u64, ..Applied::default() };
        let keep_from = now.saturating_sub(self.overlap).max(self.cursor.unwrap_or(0));
        for (member, score) in members {
            if score < window_start || self.recent.contains_key(&member) {
                continue;
            }
            self.insert(&member, score);
            applied.added += 1;
            if score >= keep_from {
                self.recent.insert(member, score);
            }
        }
        applied.expired = self.expire(window_start);
        self.recent.retain(|_, score| *score >= keep_from);
        self.cursor = Some(keep_from);
        let unchecked: u64 = self.entries.range(..self.check_from(window_start)).map(|(_, e)| e.len() as u64).sum();
        applied.consistent = self.len - unchecked == redis_count;
        if !applied.consistent {
            self.reset();
        }
        applied
    }

    fn insert(&mut self, member: &str, score: u64) {
        self.len += 1;
        let Some(e) = shapes::parse_hashrate(member) else {
            self.entries.entry(score).or_default().push(Entry { difficulty: 0, key: UNPARSED, solo: false });
            return;
        };
        let at = e.at_ms / 1000;
        let slot = match self.slots.get(e.key) {
            Some(slot) => *slot,
            None => {
                let sums = Sums { name: e.key.to_string(), ..Sums::default() };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.keys[slot as usize] = sums;
                        slot
                    }
                    None => {
                        self.keys.push(sums);
                        (self.keys.len() - 1) as u32
                    }
                };
                self.slots.insert(e.key.to_string(), slot);
                slot
            }
        };
        let sums = &mut self.keys[slot as usize];
        let t = usize::from(e.solo);
        sums.difficulty[t] += e.difficulty;
        sums.records[t] += 1;
        sums.last_seen = sums.last_seen.max(at);
        self.entries.entry(score).or_default().push(Entry { difficulty: e.difficulty, key: slot, solo: e.solo });
    }

    /// Drops entries with a score before `window_start`; answers how many.
    fn expire(&mut self, window_start: u64) -> u64 {
        let kept = self.entries.split_off(&window_start);
        let old = std::mem::replace(&mut self.entries, kept);
        let mut expired = 0;
        for entry in old.into_values().flatten() {
            expired += 1;
            self.len -= 1;
            if entry.key == UNPARSED {
                continue;
            }
            let sums = &mut self.keys[entry.key as usize];
            let t = usize::from(entry.solo);
            sums.difficulty[t] -= entry.difficulty;
            sums.records[t] -= 1;
            if sums.records == [0, 0] {
                self.slots.remove(&sums.name);
                *sums = Sums::default();
                self.free.push(entry.key);
            }
        }
        expired
    }

    /// The figures over the window, as [`shapes::window_figures`] computes them from the members.
    pub fn figures(&self) -> WindowFigures {
        let per_second = |sum: u64| ((sum as f64) / (self.window as f64)).round() as u64;
        let mut f = WindowFigures::default();
        let (mut prop, mut solo) = (0u64, 0u64);
        for sums in self.slots.values().map(|slot| &self.keys[*slot as usize]) {
            let total = per_second(sums.difficulty[0] + sums.difficulty[1]);
            if let Some((address, worker)) = sums.name.split_once('~') {
                f.workers.insert(sums.name.clone(), total);
                f.worker_count.0 += u64::from(sums.records[0] > 0);
                f.worker_count.1 += u64::from(sums.records[1] > 0);
                f.worker_last_seen.insert((address.to_string(), worker.to_string()), sums.last_seen);
            } else {
                f.miners.insert(sums.name.clone(), total);
                f.miner_count.0 += u64::from(sums.records[0] > 0);
                f.miner_count.1 += u64::from(sums.records[1] > 0);
                f.last_seen.insert(sums.name.clone(), sums.last_seen);
                prop += sums.difficulty[0];
                solo += sums.difficulty[1];
            }
        }
        f.hashrate = (per_second(prop), per_second(solo));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A stand-in for the `hashrate` zset: member → score, trimmed as the collector's read trims.
    #[derive(Default)]
    struct Zset(BTreeMap<String, u64>);

    impl Zset {
        /// The collector's `MULTI`: trim, read from `from`, `ZCOUNT` from `check`.
        fn read(&mut self, window_start: u64, from: u64, check: u64) -> (Vec<(String, u64)>, u64) {
            self.0.retain(|_, s| *s >= window_start);
            let members = self.0.iter().filter(|(_, s)| **s >= from).map(|(m, s)| (m.clone(), *s)).collect();
            (members, self.0.values().filter(|s| **s >= check).count() as u64)
        }

        fn full(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }

        /// A slice `[from, to)` (no trim: the slices of a full read are plain reads).
        fn slice(&self, from: u64, to: u64) -> Vec<(String, u64)> {
            self.0.iter().filter(|(_, s)| **s >= from && **s < to).map(|(m, s)| (m.clone(), *s)).collect()
        }
    }

    /// What the collector does: a full read in slices of 7 s when needed, then the read.
    fn run(w: &mut HashrateWindow, z: &mut Zset, now: u64) -> Applied {
        let start = now.saturating_sub(w.window());
        let full = |w: &mut HashrateWindow, z: &mut Zset| {
            let mut from = start;
            while from < w.slices_end(now) {
                let to = (from + 7).min(w.slices_end(now));
                w.load_slice(to, z.slice(from, to));
                from = to;
            }
        };
        if w.needs_full_read() {
            full(w, z);
        }
        let (members, len) = z.read(start, w.read_from(start), w.check_from(start));
        let applied = w.apply(start, now, members, len);
        if !applied.consistent {
            full(w, z);
            let (members, len) = z.read(start, w.read_from(start), w.check_from(start));
            assert!(w.apply(start, now, members, len).consistent, "nothing changed during the full read");
        }
        applied
    }

    fn member(rng: &mut impl Rng, at_s: u64, node: u32) -> String {
        let address = format!("PAS1addr{}", rng.gen_range(0..40));
        let key = match rng.gen_range(0..3) {
            0 => address,
            1 => format!("{address}~rig{}", rng.gen_range(0..5)),
            _ => format!("{address}~rig:{}", rng.gen_range(0..2)),
        };
        let typ = if rng.gen_bool(0.2) { "solo" } else { "prop" };
        let ms = at_s * 1000 + rng.gen_range(0..1000);
        if rng.gen_bool(0.1) {
            format!("{}:{key}:{ms}:{typ}", rng.gen_range(0..100_000u64)) // the old pool's format
        } else {
            format!("{}:{key}:{ms}:{typ}:{node:08x}", rng.gen_range(0..100_000u64))
        }
    }

    #[test]
    fn incremental_figures_equal_a_full_recomputation_through_many_runs_and_expiry() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let (window, overlap) = (60, 10);
        let mut w = HashrateWindow::new(window, overlap);
        let mut z = Zset::default();
        let mut now = 1_000_000u64;
        let mut resyncs = 0;
        for step in 0..400 {
            // Several nodes write each second; some flushes land late (up to `overlap` s).
            for _ in 0..rng.gen_range(1..4) {
                now += 1;
                for node in 0..3u32 {
                    for _ in 0..rng.gen_range(0..6) {
                        let lag = if rng.gen_bool(0.2) { rng.gen_range(0..overlap) } else { 0 };
                        let at = now - lag;
                        z.0.insert(member(&mut rng, at, node), at);
                    }
                }
            }
            if step % 50 == 49 {
                z.0.insert("garbage-member".into(), now); // counted, never parsed
            }
            if !run(&mut w, &mut z, now).consistent {
                resyncs += 1;
            }
            let expected = shapes::window_figures(&z.full(), window);
            assert_eq!(w.figures(), expected, "run {step}");
            assert_eq!(w.len(), z.0.len() as u64);
        }
        assert_eq!(resyncs, 0, "late writes inside the overlap never force a full read");
        assert!(w.keys.len() < 400, "slots of keys that left the window are reused");
    }

    #[test]
    fn a_write_older_than_the_cursor_or_a_removal_forces_a_full_read() {
        let mut w = HashrateWindow::new(600, 5);
        let mut z = Zset::default();
        z.0.insert("10:A:1000000000:prop:1".into(), 1_000_000);
        assert!(w.needs_full_read());
        assert!(run(&mut w, &mut z, 1_000_010).consistent, "the first read is a full one");
        assert!(!w.needs_full_read());
        assert!(run(&mut w, &mut z, 1_000_020).consistent);
        // A node whose clock lags by a minute: older than the cursor, missed by the read.
        z.0.insert("20:A:960000000:prop:2".into(), 1_000_020 - 60);
        assert!(!run(&mut w, &mut z, 1_000_030).consistent);
        assert_eq!(w.figures().miners["A"], (30.0f64 / 600.0).round() as u64);
        assert_eq!(w.figures(), shapes::window_figures(&z.full(), 600));
        // Someone else removed a member (another collector's trim, a FLUSHDB).
        z.0.clear();
        assert!(!run(&mut w, &mut z, 1_000_040).consistent);
        assert!(w.figures().miners.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn another_api_node_trimming_with_its_clock_ahead_forces_no_full_read() {
        let mut w = HashrateWindow::new(600, 15);
        let mut z = Zset::default();
        for t in 1_000_000..1_000_100 {
            z.0.insert(format!("10:A:{}:prop:1", t * 1000), t);
        }
        run(&mut w, &mut z, 1_000_100);
        for now in 1_000_600..1_000_700 {
            // The other node, 10 s ahead, trims first.
            z.0.retain(|_, s| *s >= now + 10 - 600);
            assert!(run(&mut w, &mut z, now).consistent, "at {now}");
        }
    }

    #[test]
    fn a_member_read_twice_in_the_overlap_counts_once() {
        let mut w = HashrateWindow::new(600, 30);
        let mut z = Zset::default();
        z.0.insert("600:A~r:1000000000:prop:1".into(), 1_000_000);
        z.0.insert("600:A:1000000000:prop:1".into(), 1_000_000);
        run(&mut w, &mut z, 1_000_001);
        for now in 1_000_002..1_000_020 {
            let applied = run(&mut w, &mut z, now);
            assert!(applied.consistent);
            assert_eq!(applied.added, 0);
        }
        let f = w.figures();
        assert_eq!((f.miners["A"], f.workers["A~r"], f.hashrate), (1, 1, (1, 0)));
        // Past the window everything leaves.
        let applied = run(&mut w, &mut z, 1_000_000 + 601);
        assert_eq!((applied.expired, applied.consistent), (2, true));
        assert_eq!(w.figures(), WindowFigures::default());
    }
}
