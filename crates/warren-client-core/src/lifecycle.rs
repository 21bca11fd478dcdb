//! The tunnel's lifecycle as a state machine with generations.
//!
//! The client state says what the tunnel should run (a key and a
//! [`NetPlan`]) or that it should not run; this machine turns that into
//! numbered `Up` / `Down` orders for the data-plane driver and follows the
//! driver's reports. Every `Up` gets a new generation, and a report or a
//! statistic of an older generation is stale and ignored, so a slow report
//! from a tunnel already replaced can never overwrite the current one.
//!
//! A data plane that fails (could not start, or died by itself: a TUN read
//! error, the device deleted under it) is reported `Failed` by its driver
//! after the driver undid what it set up; this machine then retries with
//! backoff for as long as the tunnel is wanted.

use std::time::{Duration, Instant};

use warren_netcfg::NetPlan;
use warren_proto::ipc::TunnelState;
use warren_session::Backoff;

/// What the tunnel should run: the session's public key (base64) and plan.
pub type Wanted = (String, NetPlan);

/// First retry after a failure; doubles (with jitter) up to [`RETRY_CAP`].
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to bring a failed tunnel back.
pub const RETRY_CAP: Duration = Duration::from_secs(30);

/// An order for the data-plane driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Start the tunnel as generation `generation` (replacing whatever runs).
    Up { generation: u64 },
    /// Stop the tunnel and undo the OS configuration; report `Down` with
    /// this generation once done.
    Down { generation: u64 },
}

/// The machine.
#[derive(Debug)]
pub struct Lifecycle {
    generation: u64,
    /// What the driver was last told to run.
    wanted: Option<Wanted>,
    state: TunnelState,
    error: Option<String>,
    retry_at: Option<Instant>,
    attempt: u32,
    backoff: Backoff,
    changed: bool,
}

impl Lifecycle {
    pub fn new(seed: u64) -> Self {
        Lifecycle {
            generation: 0,
            wanted: None,
            state: TunnelState::Down,
            error: None,
            retry_at: None,
            attempt: 0,
            backoff: Backoff::new(RETRY_BASE, RETRY_CAP, seed),
            changed: false,
        }
    }

    /// The generation of the latest order.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn state(&self) -> TunnelState {
        self.state
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// What the tunnel was last told to run.
    pub fn wanted(&self) -> Option<&Wanted> {
        self.wanted.as_ref()
    }

    /// The generation whose data plane takes peer and name diffs: one that
    /// was ordered up and has not failed. (A failed one gets everything
    /// again with its next `Up`.)
    pub fn accepting(&self) -> Option<u64> {
        match (self.wanted.is_some(), self.state) {
            (true, TunnelState::Starting | TunnelState::Up) => Some(self.generation),
            _ => None,
        }
    }

    /// Whether state or error changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn set(&mut self, state: TunnelState, error: Option<String>) {
        if (self.state, &self.error) != (state, &error) {
            self.state = state;
            self.error = error;
            self.changed = true;
        }
    }

    /// The tunnel should run `wanted` (`None`: not at all).
    pub fn want(&mut self, wanted: Option<Wanted>) -> Option<Order> {
        if wanted == self.wanted {
            return None;
        }
        self.retry_at = None;
        self.attempt = 0;
        match wanted {
            Some(w) => {
                self.wanted = Some(w);
                self.generation += 1;
                self.set(TunnelState::Starting, None);
                Some(Order::Up {
                    generation: self.generation,
                })
            }
            None => {
                self.wanted = None;
                // The state turns Down when the driver reports the OS
                // restored, so `warren down` can wait for exactly that.
                Some(Order::Down {
                    generation: self.generation,
                })
            }
        }
    }

    /// The driver says where generation `generation` got to. Returns true
    /// when the tunnel stopped carrying traffic (its figures are void).
    pub fn on_report(
        &mut self,
        now: Instant,
        generation: u64,
        state: TunnelState,
        error: Option<String>,
    ) -> bool {
        if generation != self.generation {
            tracing::debug!(
                generation,
                current = self.generation,
                ?state,
                "ignoring a report of an old tunnel"
            );
            return false;
        }
        match (state, self.wanted.is_some()) {
            (TunnelState::Up, true) => {
                self.attempt = 0;
                self.set(TunnelState::Up, error);
                false
            }
            (TunnelState::Down, false) => {
                self.set(TunnelState::Down, None);
                true
            }
            (TunnelState::Failed | TunnelState::Down, true) => {
                let reason = error.unwrap_or_else(|| "the data plane stopped".to_string());
                let delay = self.backoff.delay(self.attempt);
                self.attempt = self.attempt.saturating_add(1);
                self.retry_at = Some(now + delay);
                tracing::warn!(
                    generation,
                    %reason,
                    retry_in_ms = delay.as_millis() as u64,
                    "the tunnel is not carrying traffic; trying again"
                );
                self.set(TunnelState::Failed, Some(reason));
                true
            }
            // Up or Starting after a Down order, or Failed while stopping:
            // the Down report that follows settles it.
            _ => false,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Time to try a failed tunnel again?
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Order> {
        let due = self.retry_at.is_some_and(|at| at <= now);
        if !due || self.wanted.is_none() {
            return None;
        }
        self.retry_at = None;
        self.generation += 1;
        // The reason stays visible while the next attempt starts.
        let reason = self.error.clone();
        self.set(TunnelState::Starting, reason);
        Some(Order::Up {
            generation: self.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: u8) -> Wanted {
        (
            format!("key{n}"),
            NetPlan {
                mtu: 1280 + u16::from(n),
                ..NetPlan::default()
            },
        )
    }

    #[test]
    fn up_down_and_stale_reports() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(1);
        assert_eq!(l.want(Some(plan(1))), Some(Order::Up { generation: 1 }));
        assert_eq!(l.state(), TunnelState::Starting);
        assert_eq!(l.want(Some(plan(1))), None, "same plan: no new order");
        assert_eq!(l.accepting(), Some(1));
        assert!(!l.on_report(t0, 1, TunnelState::Up, None));
        assert_eq!(l.state(), TunnelState::Up);

        // A new key restarts as a new generation; generation 1's late
        // failure is ignored.
        assert_eq!(l.want(Some(plan(2))), Some(Order::Up { generation: 2 }));
        assert!(!l.on_report(t0, 1, TunnelState::Failed, Some("old".into())));
        assert_eq!(l.state(), TunnelState::Starting);
        l.on_report(t0, 2, TunnelState::Up, None);

        // Down is shown only once the driver says the OS is restored.
        assert_eq!(l.want(None), Some(Order::Down { generation: 2 }));
        assert_eq!(l.state(), TunnelState::Up);
        assert_eq!(l.accepting(), None);
        assert!(l.on_report(t0, 2, TunnelState::Down, None));
        assert_eq!(l.state(), TunnelState::Down);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_failed_tunnel_is_retried_with_backoff_while_wanted() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(7);
        l.want(Some(plan(1)));
        l.on_report(t0, 1, TunnelState::Up, None);
        // The data plane died by itself.
        assert!(l.on_report(
            t0,
            1,
            TunnelState::Failed,
            Some("the TUN device is gone".into())
        ));
        assert_eq!(l.state(), TunnelState::Failed);
        assert_eq!(l.error(), Some("the TUN device is gone"));
        assert_eq!(l.accepting(), None);
        let first = l.poll_timeout().expect("a retry is scheduled");
        assert!(
            first > t0 && first <= t0 + RETRY_BASE * 2,
            "{:?}",
            first - t0
        );
        assert_eq!(l.handle_timeout(first - Duration::from_millis(1)), None);
        assert_eq!(l.handle_timeout(first), Some(Order::Up { generation: 2 }));
        assert_eq!(l.state(), TunnelState::Starting);
        // It fails again: the next wait is longer (backoff), up to the cap.
        l.on_report(first, 2, TunnelState::Failed, Some("again".into()));
        let second = l.poll_timeout().unwrap();
        assert!(second - first >= first - t0, "no backoff");
        assert!(second - first <= RETRY_CAP);
        l.handle_timeout(second);
        l.on_report(second, 3, TunnelState::Up, None);
        assert_eq!(l.state(), TunnelState::Up);
        assert_eq!(l.error(), None);

        // Not wanted any more: no retry after a failure.
        l.on_report(second, 3, TunnelState::Failed, Some("x".into()));
        assert_eq!(l.want(None), Some(Order::Down { generation: 3 }));
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.handle_timeout(second + RETRY_CAP * 2), None);
        l.on_report(second, 3, TunnelState::Down, None);
        assert_eq!(l.state(), TunnelState::Down);
    }
}
