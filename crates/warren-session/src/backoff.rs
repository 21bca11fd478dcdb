//! Exponential backoff with jitter, capped, from a deterministic generator,
//! and the one reading of `WARREN_BACKOFF_MAX_MS` (the cap's override) that
//! the helper and the agent share.
//!
//! The jitter source is seeded by the driver so tests can replay exact
//! delays; the generator (SplitMix64) needs no crate and no IO.

use std::time::Duration;

/// The environment variable that overrides the reconnect delay's cap, in
/// milliseconds (tests set it low so reconnects happen quickly).
pub const BACKOFF_MAX_ENV: &str = "WARREN_BACKOFF_MAX_MS";

/// `WARREN_BACKOFF_MAX_MS` holds something that is not a number of
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{BACKOFF_MAX_ENV}={value:?} is not a whole number of milliseconds; unset it (the cap is then {} s) or set it to e.g. 30000", Backoff::DEFAULT_CAP.as_secs())]
pub struct BackoffCapError {
    pub value: String,
}

/// The reconnect cap from `WARREN_BACKOFF_MAX_MS`, or
/// [`Backoff::DEFAULT_CAP`] when it is unset.
pub fn backoff_cap_from_env() -> Result<Duration, BackoffCapError> {
    match std::env::var_os(BACKOFF_MAX_ENV) {
        None => parse_backoff_cap(None),
        Some(value) => parse_backoff_cap(Some(&value.to_string_lossy())),
    }
}

/// The cap for a value of `WARREN_BACKOFF_MAX_MS` (`None`: unset). Empty
/// counts as unset; 0 becomes 1 ms, the shortest delay [`Backoff`] keeps.
pub fn parse_backoff_cap(value: Option<&str>) -> Result<Duration, BackoffCapError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Backoff::DEFAULT_CAP);
    };
    value
        .parse::<u64>()
        .map(|ms| Duration::from_millis(ms.max(1)))
        .map_err(|_| BackoffCapError {
            value: value.to_string(),
        })
}

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

    /// [`Backoff::DEFAULT_BASE`] growing to `cap` (a cap below the base
    /// lowers the base too).
    pub fn with_cap(cap: Duration, seed: u64) -> Self {
        Self::new(Self::DEFAULT_BASE.min(cap), cap, seed)
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
    fn the_cap_override_is_parsed_once_with_a_clear_error() {
        assert_eq!(parse_backoff_cap(None), Ok(Backoff::DEFAULT_CAP));
        assert_eq!(parse_backoff_cap(Some(" ")), Ok(Backoff::DEFAULT_CAP));
        assert_eq!(
            parse_backoff_cap(Some("200")),
            Ok(Duration::from_millis(200))
        );
        assert_eq!(parse_backoff_cap(Some("0")), Ok(Duration::from_millis(1)));
        for bad in ["2s", "-5", "1.5", "lots"] {
            let err = parse_backoff_cap(Some(bad)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("WARREN_BACKOFF_MAX_MS"), "{text}");
            assert!(text.contains(bad), "{text}");
            assert!(text.contains("unset it"), "{text}");
        }
    }

    #[test]
    fn a_low_cap_lowers_the_base() {
        let mut b = Backoff::with_cap(Duration::from_millis(100), 3);
        assert_eq!(b.cap(), Duration::from_millis(100));
        assert!(b.delay(0) <= Duration::from_millis(100));
        let mut d = Backoff::with_cap(Backoff::DEFAULT_CAP, 3);
        assert!(d.delay(0) <= Backoff::DEFAULT_BASE);
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
