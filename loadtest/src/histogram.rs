//! A log-linear latency histogram: exact below 256, then 128 buckets per power of two (under
//! 0.8 % relative error), mergeable and serializable as sparse (bucket, count) pairs so that
//! worker processes can ship theirs to the coordinator.
//!
//! Values are plain `u64`s; the harness records microseconds.

use serde::{Deserialize, Serialize};

/// Buckets per power of two above the exact range.
const SUB: u64 = 128;
/// log2(SUB).
const SUB_BITS: u32 = 7;
/// Number of buckets needed for any `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) * SUB as usize) + SUB as usize;

/// Bucket index of `v`.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS
    let shift = e - SUB_BITS;
    (shift as u64 * SUB + (v >> shift)) as usize
}

/// Largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let m = i % SUB + SUB;
    ((m + 1) << shift).wrapping_sub(1).max(m << shift)
}

/// A latency histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += v as u128;
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.count == 0 { other.min } else { self.min.min(other.min) };
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value, if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value, if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Arithmetic mean, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at percentile `p` (0..=100): the smallest bucket bound with at least
    /// `ceil(p/100 * count)` values at or below it, clamped to the recorded min and max, so it
    /// never under-reports by more than one bucket width and is exact at the extremes.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The usual figures, for reports.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            min: self.min(),
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
            p999: self.percentile(99.9),
            max: self.max(),
            mean: self.mean().map(|m| (m * 10.0).round() / 10.0),
        }
    }
}

/// Percentiles of a histogram (all in the recorded unit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min: Option<u64>,
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// Largest.
    pub max: Option<u64>,
    /// Mean.
    pub mean: Option<f64>,
}

/// Wire form: non-empty buckets only.
#[derive(Serialize, Deserialize)]
struct Sparse {
    buckets: Vec<(u32, u64)>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buckets = self.counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| (i as u32, c)).collect();
        Sparse { buckets, count: self.count, min: self.min, max: self.max, sum: self.sum }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Histogram, D::Error> {
        let sparse = Sparse::deserialize(d)?;
        let mut counts = Vec::new();
        for (i, c) in sparse.buckets {
            let i = i as usize;
            if i >= BUCKETS {
                return Err(serde::de::Error::custom(format!("histogram bucket {i} out of range")));
            }
            if counts.len() <= i {
                counts.resize(i + 1, 0);
            }
            counts[i] += c;
        }
        Ok(Histogram { counts, count: sparse.count, min: sparse.min, max: sparse.max, sum: sparse.sum })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_256_and_tight_above() {
        for v in 0..256u64 {
            assert_eq!(upper(index(v)), v);
        }
        for v in [256u64, 257, 1000, 4095, 4096, 123_456, 10_000_000, u64::MAX / 3, u64::MAX] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            let up = upper(i);
            assert!(up >= v, "{v}: upper {up}");
            assert!((up - v) as f64 <= v as f64 / SUB as f64, "{v}: upper {up} too loose");
            if i > 0 {
                assert!(upper(i - 1) < v, "{v} belongs to an earlier bucket");
            }
        }
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let within = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.01;
        assert!(within(h.percentile(50.0).unwrap(), 5_000), "{:?}", h.percentile(50.0));
        assert!(within(h.percentile(99.0).unwrap(), 9_900));
        assert!(within(h.percentile(99.9).unwrap(), 9_990));
        assert_eq!(h.percentile(100.0), Some(10_000));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.mean(), Some(5000.5));
    }

    #[test]
    fn percentiles_never_exceed_the_recorded_extremes() {
        let mut h = Histogram::new();
        h.record(1_000_003);
        assert_eq!(h.percentile(50.0), Some(1_000_003));
        assert_eq!(h.percentile(99.9), Some(1_000_003));
        assert_eq!(Histogram::new().percentile(50.0), None);
        assert_eq!(Histogram::new().summary().count, 0);
    }

    #[test]
    fn p99_sees_a_slow_tail() {
        let mut h = Histogram::new();
        for _ in 0..980 {
            h.record(100);
        }
        for _ in 0..20 {
            h.record(50_000);
        }
        assert_eq!(h.percentile(50.0), Some(100));
        assert_eq!(h.percentile(98.0), Some(100));
        assert!(h.percentile(99.0).unwrap() >= 50_000 - 50_000 / 128);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in (0..5000u64).map(|i| i * 37 % 100_000) {
            a.record(v);
            all.record(v);
        }
        for v in (0..3000u64).map(|i| 1_000_000 + i * 11) {
            b.record(v);
            all.record(v);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, all);
        let mut empty = Histogram::new();
        empty.merge(&b);
        assert_eq!(empty.min(), b.min());
        b.merge(&Histogram::new());
        assert_eq!(b.count(), 3000);
    }

    #[test]
    fn survives_a_json_round_trip() {
        let mut h = Histogram::new();
        for v in [3u64, 3, 900, 77_777, 5_000_000_000] {
            h.record(v);
        }
        let text = serde_json::to_string(&h).unwrap();
        let back: Histogram = serde_json::from_str(&text).unwrap();
        assert_eq!(back.summary(), h.summary());
        assert_eq!(back.count(), 5);
        assert!(
            serde_json::from_str::<Histogram>(r#"{"buckets":[[999999,1]],"count":1,"min":0,"max":0,"sum":0}"#).is_err()
        );
    }
}
