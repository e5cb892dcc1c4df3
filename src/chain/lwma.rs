//! The network difficulty: LWMA-2 as the daemon runs it (`nextDifficultyV5`, CORE
//! `src/pastellacore/Difficulty.cpp`, spec §5.1), and the window `Core::getDifficultyForNextBlock`
//! feeds it.

use super::params::{DIFFICULTY_TARGET, STARTING_DIFFICULTY};

/// `DIFFICULTY_WINDOW`: solve times averaged.
pub const DIFFICULTY_WINDOW: usize = 60;
/// Blocks the algorithm reads (`DIFFICULTY_WINDOW + 1`).
pub const DIFFICULTY_BLOCKS_COUNT: usize = DIFFICULTY_WINDOW + 1;

/// How many of the newest blocks (ending at the top block) the daemon passes to
/// [`next_difficulty`] when the top block has index `top_index`: `min(top_index, 61)`, so the
/// genesis block never counts and LWMA starts once the top index reaches 61.
pub fn window_len(top_index: u64) -> usize {
    usize::try_from(top_index).unwrap_or(usize::MAX).min(DIFFICULTY_BLOCKS_COUNT)
}

/// `nextDifficultyV5`: the difficulty of the next block from the timestamps and cumulative
/// difficulties of the last [`window_len`] blocks, oldest first.
///
/// The C++ code divides by the weighted solve-time sum without a guard and multiplies in
/// `int64_t`; here the arithmetic is 128-bit and a non-positive sum takes the upper clamp, so
/// every input gives an answer (never below 1) instead of undefined behaviour.
pub fn next_difficulty(timestamps: &[u64], cumulative_difficulties: &[u64]) -> u64 {
    let n = DIFFICULTY_WINDOW;
    if timestamps.len() < n + 1 || cumulative_difficulties.len() < n + 1 {
        return STARTING_DIFFICULTY;
    }
    let t = DIFFICULTY_TARGET as i128;
    let mut weighted: i128 = 0;
    let mut last_three: i128 = 0;
    for i in 1..=n {
        let solve = timestamps[i] as i128 - timestamps[i - 1] as i128;
        let solve = solve.clamp(-4 * t, 6 * t);
        weighted += solve * i as i128;
        if i > n - 3 {
            last_three += solve;
        }
    }
    let work = cumulative_difficulties[n] as i128 - cumulative_difficulties[0] as i128;
    let prev = cumulative_difficulties[n] as i128 - cumulative_difficulties[n - 1] as i128;
    let upper = prev * 150 / 100;
    let lower = prev * 67 / 100;
    let mut next = if weighted > 0 { work * t * (n as i128 + 1) * 99 / (100 * 2 * weighted) } else { upper };
    next = next.min(upper).max(lower);
    if last_three < 8 * t / 10 {
        next = next.max(prev * 108 / 100);
    }
    u64::try_from(next.max(1)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `len` blocks with constant `solve` seconds and constant difficulty `d`.
    fn steady(len: usize, solve: u64, d: u64) -> (Vec<u64>, Vec<u64>) {
        let ts = (0..len as u64).map(|i| 1_772_132_400 + i * solve).collect();
        let cd = (0..len as u64).map(|i| 1 + i * d).collect();
        (ts, cd)
    }

    #[test]
    fn starting_difficulty_until_61_blocks() {
        let (ts, cd) = steady(60, 30, 5000);
        assert_eq!(next_difficulty(&ts, &cd), 1000);
        assert_eq!(window_len(0), 0);
        assert_eq!(window_len(60), 60);
        assert_eq!(window_len(61), 61);
        assert_eq!(window_len(5000), 61);
    }

    #[test]
    fn on_target_blocks_keep_difficulty_at_99_percent() {
        // next = 60·D·T·61·99 / (200·T·1830) = 0.99·D exactly.
        let (ts, cd) = steady(61, 30, 1000);
        assert_eq!(next_difficulty(&ts, &cd), 990);
        let (ts, cd) = steady(61, 30, 100_000);
        assert_eq!(next_difficulty(&ts, &cd), 99_000);
    }

    #[test]
    fn fast_blocks_raise_by_at_most_half() {
        let (ts, cd) = steady(61, 1, 1000);
        assert_eq!(next_difficulty(&ts, &cd), 1500);
        // Identical timestamps: the weighted sum is 0, which the C++ code would divide by.
        let (ts, cd) = steady(61, 0, 1000);
        assert_eq!(next_difficulty(&ts, &cd), 1500);
    }

    #[test]
    fn slow_blocks_lower_by_at_most_a_third() {
        let (ts, cd) = steady(61, 300, 1000);
        assert_eq!(next_difficulty(&ts, &cd), 670);
    }

    #[test]
    fn three_quick_blocks_bump_by_eight_percent() {
        // On-target window but the last three blocks came at once: 0.99·D → 1.08·D.
        let (mut ts, cd) = steady(61, 30, 1000);
        ts[58] = ts[57];
        ts[59] = ts[57];
        ts[60] = ts[57];
        assert!(next_difficulty(&ts, &cd) >= 1080);
    }

    #[test]
    fn never_below_one_and_never_panics() {
        let (ts, cd) = steady(61, 1000, 1);
        assert_eq!(next_difficulty(&ts, &cd), 1);
        let ts: Vec<u64> = (0..61).map(|i| if i % 2 == 0 { u64::MAX } else { 0 }).collect();
        let cd: Vec<u64> = (0..61).map(|i| i * (u64::MAX / 61)).collect();
        let _ = next_difficulty(&ts, &cd);
    }
}
