//! The retry schedule of a remote that owes work: jittered exponential backoff.
//!
//! Pure functions of the retry number and one random value, so the schedule is tested
//! without clocks. Retry `n` (from 0) waits about [`FIRST`]·2ⁿ, at most [`CAP`], spread
//! ±[`JITTER_PERCENT`] so that a hundred agents that lost the same remote do not all
//! come back to it in the same second; the spread is cut at the cap, never above it.
//! For one random value the delay never shrinks from one retry to the next.

use std::time::Duration;

/// The first retry comes about this long after the first failure.
pub const FIRST: Duration = Duration::from_secs(1);
/// No retry waits longer than this.
pub const CAP: Duration = Duration::from_secs(60);
/// Each delay is spread this many percent either side of its nominal value.
pub const JITTER_PERCENT: u64 = 20;

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// The delay before retry `retry` without jitter: `FIRST`·2^retry, at most `CAP`.
pub fn nominal(retry: u32) -> Duration {
    let first = ms(FIRST);
    let cap = ms(CAP);
    // 2^20 s is far past any cap; the shift stays well defined.
    let grown = first.saturating_mul(1u64 << retry.min(20));
    Duration::from_millis(grown.min(cap))
}

/// The range a jittered delay for retry `retry` falls in: ±JITTER_PERCENT around the
/// nominal value, cut at the cap.
pub fn bounds(retry: u32) -> (Duration, Duration) {
    let n = ms(nominal(retry));
    let lo = n * (100 - JITTER_PERCENT) / 100;
    let hi = (n * (100 + JITTER_PERCENT) / 100).min(ms(CAP));
    (Duration::from_millis(lo), Duration::from_millis(hi))
}

/// The delay before retry `retry`, placed in [`bounds`] by `random` (any 64 bits; the
/// same value always gives the same place in the range).
pub fn delay(retry: u32, random: u64) -> Duration {
    let (lo, hi) = bounds(retry);
    let (lo, hi) = (ms(lo), ms(hi));
    let span = u128::from(hi - lo);
    let offset = span * u128::from(random) / u128::from(u64::MAX);
    Duration::from_millis(lo + offset as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_near_one_second_and_doubles_to_the_cap() {
        assert_eq!(nominal(0), Duration::from_secs(1));
        assert_eq!(nominal(1), Duration::from_secs(2));
        assert_eq!(nominal(5), Duration::from_secs(32));
        assert_eq!(nominal(6), CAP);
        assert_eq!(nominal(u32::MAX), CAP);
        assert_eq!(
            bounds(0),
            (Duration::from_millis(800), Duration::from_millis(1200))
        );
        assert_eq!(bounds(10), (Duration::from_secs(48), CAP));
        assert_eq!(delay(0, 0), Duration::from_millis(800));
        assert_eq!(delay(0, u64::MAX), Duration::from_millis(1200));
    }

    /// A hundred agents with different random values spread over the window instead
    /// of all retrying at one moment.
    #[test]
    fn a_hundred_agents_do_not_retry_in_lockstep() {
        let mut seed = 0x5EED_u64;
        let mut next = || {
            // splitmix64
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for retry in [0, 3, 10] {
            let delays: Vec<Duration> = (0..100).map(|_| delay(retry, next())).collect();
            let (lo, hi) = bounds(retry);
            let min = delays.iter().min().copied().unwrap_or_default();
            let max = delays.iter().max().copied().unwrap_or_default();
            assert!(
                max - min >= (hi - lo) / 2,
                "retry {retry}: delays bunch in {min:?}..{max:?} of {lo:?}..{hi:?}"
            );
            let mut distinct = delays.clone();
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() > 50, "retry {retry}: {distinct:?}");
        }
    }

    proptest! {
        #[test]
        fn never_above_the_cap(retry in any::<u32>(), random in any::<u64>()) {
            prop_assert!(delay(retry, random) <= CAP);
        }

        #[test]
        fn jitter_stays_within_its_percent(retry in 0u32..64, random in any::<u64>()) {
            let d = ms(delay(retry, random));
            let n = ms(nominal(retry));
            prop_assert!(d * 100 >= n * (100 - JITTER_PERCENT), "{d} ms vs nominal {n} ms");
            prop_assert!(d * 100 <= n * (100 + JITTER_PERCENT), "{d} ms vs nominal {n} ms");
            let (lo, hi) = bounds(retry);
            prop_assert!(lo <= delay(retry, random) && delay(retry, random) <= hi);
        }

        #[test]
        fn grows_with_each_retry(retry in 0u32..64, random in any::<u64>()) {
            prop_assert!(delay(retry + 1, random) >= delay(retry, random));
            prop_assert!(nominal(retry + 1) >= nominal(retry));
            if nominal(retry + 1) < CAP {
                prop_assert_eq!(nominal(retry + 1), nominal(retry) * 2);
            }
        }
    }
}
