//! Exponential backoff with jitter, capped, from a deterministic generator.
//!
//! The jitter source is seeded by the driver so tests can replay exact
//! delays; the generator (SplitMix64) needs no crate and no IO.

use std::time::Duration;

/// Reconnect delays: `base * 2^attempt`, capped, with "equal jitter" (the
/// delay is uniformly drawn from the upper half), so a fleet of helpers that
/// lost the coordinator at the same moment does not return in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    rng: u64,
}

impl Backoff {
    pub const DEFAULT_BASE: Duration = Duration::from_millis(500);
    pub const DEFAULT_CAP: Duration = Duration::from_secs(30);

    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self {
            base: base.max(Duration::from_millis(1)),
            cap: cap.max(Duration::from_millis(1)),
            rng: seed,
        }
    }

    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX));
        let ceiling = exp.min(self.cap);
        let half = ceiling / 2;
        let span = (ceiling - half).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    fn next(&mut self) -> u64 {
        // SplitMix64: tiny, well distributed, deterministic.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 7);
        for attempt in 0..40 {
            let d = b.delay(attempt);
            let ceiling = (Duration::from_millis(500) * 2u32.saturating_pow(attempt.min(20)))
                .min(Duration::from_secs(30));
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            assert!(
                d >= ceiling / 2,
                "attempt {attempt}: {d:?} < half of {ceiling:?}"
            );
        }
        assert!(b.delay(100) <= Duration::from_secs(30));
    }

    #[test]
    fn jitter_differs_between_seeds() {
        let mut a = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 1);
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), 2);
        let da: Vec<_> = (0..8).map(|i| a.delay(i)).collect();
        let db: Vec<_> = (0..8).map(|i| b.delay(i)).collect();
        assert_ne!(da, db);
    }
}
