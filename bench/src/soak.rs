//! The pure parts of the chaos soak (`bench/run soak`, `src/bin/soak.rs`):
//! the seeded random numbers that make a run replayable, the schedule of
//! disturbances (one of each kind first, so even a short run covers them
//! all, then random), the timings scaled to the run's length, the
//! comparison of `warren status` with the coordinator's truth, and the
//! growth figure of the helper's memory and descriptors. Kept apart from
//! the lab so each rule is unit-tested.

use crate::report::median;
use std::collections::BTreeMap;
use std::time::Duration;

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same run of events, which is what a replay needs; no statistical
/// quality beyond that is asked of it.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration in `lo..=hi`, to the millisecond.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_millis(self.range(lo.as_millis() as u64, hi.as_millis() as u64))
    }

    /// One element of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// The disturbances the soak injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// `kill -9` of `warrend`, then a new one on the same state dir and
    /// `warren up`.
    HelperKill,
    /// SIGSTOP to `warrend`, SIGCONT later.
    HelperFreeze,
    /// `kill -9` of one `warren-agent`, then started again.
    AgentKill,
    /// `kill -9` of the coordinator, then started again on the same
    /// database and address.
    CoordinatorKill,
    /// `tc netem` loss, delay and reordering on the lab's link, then
    /// cleared.
    Netem,
    /// Several admin commands at once: workspaces and agents added and
    /// removed.
    AdminBurst,
}

impl EventKind {
    /// Every kind, in the order of the first round. The helper kill comes
    /// first so that the helper started after it lives through the rest of
    /// a short run and gives the longest memory series.
    pub const ALL: [EventKind; 6] = [
        EventKind::HelperKill,
        EventKind::AdminBurst,
        EventKind::AgentKill,
        EventKind::CoordinatorKill,
        EventKind::Netem,
        EventKind::HelperFreeze,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::HelperKill => "helper_kill",
            EventKind::HelperFreeze => "helper_freeze",
            EventKind::AgentKill => "agent_kill",
            EventKind::CoordinatorKill => "coordinator_kill",
            EventKind::Netem => "netem",
            EventKind::AdminBurst => "admin_burst",
        }
    }

    /// Relative weight in the random part: a helper kill restarts the
    /// memory series, so it is rarer than the cheap disturbances.
    fn weight(self) -> u64 {
        match self {
            EventKind::HelperKill => 2,
            EventKind::HelperFreeze => 2,
            EventKind::CoordinatorKill => 2,
            EventKind::AgentKill => 3,
            EventKind::Netem => 3,
            EventKind::AdminBurst => 4,
        }
    }
}

/// Which event comes next: every kind once in [`EventKind::ALL`]'s order,
/// then weighted random picks.
#[derive(Debug, Default)]
pub struct Schedule {
    issued: usize,
}

impl Schedule {
    pub fn next(&mut self, rng: &mut Rng) -> EventKind {
        self.next_allowed(rng, |_| true)
    }

    /// Like [`Schedule::next`], but the random part picks only among the
    /// kinds `allowed` accepts (all of them if it accepts none). The first
    /// round is never skipped: it is what makes a short run cover every
    /// kind.
    pub fn next_allowed(
        &mut self,
        rng: &mut Rng,
        allowed: impl Fn(EventKind) -> bool,
    ) -> EventKind {
        let i = self.issued;
        self.issued += 1;
        if let Some(k) = EventKind::ALL.get(i) {
            return *k;
        }
        let mut kinds: Vec<EventKind> =
            EventKind::ALL.into_iter().filter(|k| allowed(*k)).collect();
        if kinds.is_empty() {
            kinds = EventKind::ALL.to_vec();
        }
        let total: u64 = kinds.iter().map(|k| k.weight()).sum();
        let mut r = rng.range(0, total - 1);
        for k in &kinds {
            if r < k.weight() {
                return *k;
            }
            r -= k.weight();
        }
        // The weights sum to `total`, so the loop always returns.
        kinds[0]
    }
}

/// How long things last, scaled to the run's length so that a 2-minute
/// run still fits a round of every kind while a 30-minute one gets the
/// long freezes and netem spells the issue asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub run: Duration,
    /// Pause between two events (random within).
    pub gap: (Duration, Duration),
    /// How long the helper stays frozen: up to 200 s, and at most about a
    /// ninth of the run.
    pub freeze: (Duration, Duration),
    /// How long netem stays on the link.
    pub netem: (Duration, Duration),
    /// How long the coordinator or an agent stays dead.
    pub down: (Duration, Duration),
    /// How often invariants are checked between events.
    pub check_every: Duration,
    /// Quiet time before a check.
    pub quiet: Duration,
    /// How long a check may retry before it counts as failed: the helper's
    /// reconnect backoff is capped at 1 s in the lab, but a loaded 2-core
    /// machine running debug builds of 22 processes is slow.
    pub settle: Duration,
    /// A new helper's first stretch, not sampled for the growth figure.
    pub warmup: Duration,
    /// How long a helper lives at least before the next helper kill, so
    /// one of them gives a long enough memory series.
    pub helper_life: Duration,
}

impl Timing {
    pub fn for_run(secs: u64) -> Timing {
        let s = |v: u64| Duration::from_secs(v);
        let freeze_max = (secs / 9).clamp(2, 200);
        let gap_max = (secs / 45).clamp(3, 40);
        let netem_max = (secs / 12).clamp(4, 30);
        let down_max = (secs / 60).clamp(2, 10);
        Timing {
            run: s(secs),
            gap: (s(gap_max / 4).max(s(1)), s(gap_max)),
            freeze: (s((freeze_max / 4).max(1)), s(freeze_max)),
            netem: (s((netem_max / 3).max(2)), s(netem_max)),
            down: (s(1), s(down_max)),
            check_every: s(10),
            quiet: s(3),
            settle: s(60),
            warmup: s(secs / 8).clamp(s(10), s(60)),
            helper_life: s(secs / 6).max(s(60)),
        }
    }
}

/// What differs between the coordinator's truth and the helper's view,
/// each as `workspace/agent` (or a workspace name); empty lists mean the
/// two agree. Both sides are multisets, so an agent listed twice (an old
/// and a new copy) counts as stale.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ViewDiff {
    pub missing_agents: Vec<String>,
    pub stale_agents: Vec<String>,
    pub missing_workspaces: Vec<String>,
    pub stale_workspaces: Vec<String>,
}

impl ViewDiff {
    pub fn is_empty(&self) -> bool {
        self.missing_agents.is_empty()
            && self.stale_agents.is_empty()
            && self.missing_workspaces.is_empty()
            && self.stale_workspaces.is_empty()
    }
}

impl std::fmt::Display for ViewDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "missing agents {:?}, stale agents {:?}, missing workspaces {:?}, stale workspaces {:?}",
            self.missing_agents, self.stale_agents, self.missing_workspaces, self.stale_workspaces
        )
    }
}

/// `want` minus `have` and `have` minus `want`, counting duplicates.
fn multiset_diff(want: &[String], have: &[String]) -> (Vec<String>, Vec<String>) {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for w in want {
        *count.entry(w).or_default() += 1;
    }
    for h in have {
        *count.entry(h).or_default() -= 1;
    }
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    for (k, n) in count {
        for _ in 0..n.max(0) {
            missing.push(k.to_string());
        }
        for _ in 0..(-n).max(0) {
            extra.push(k.to_string());
        }
    }
    (missing, extra)
}

/// Compares the truth (`workspace/agent` names and workspace names from
/// the coordinator's admin commands) with the helper's status.
pub fn compare_views(
    truth_agents: &[String],
    truth_workspaces: &[String],
    status_agents: &[String],
    status_workspaces: &[String],
) -> ViewDiff {
    let (missing_agents, stale_agents) = multiset_diff(truth_agents, status_agents);
    let (missing_workspaces, stale_workspaces) = multiset_diff(truth_workspaces, status_workspaces);
    ViewDiff {
        missing_agents,
        stale_agents,
        missing_workspaces,
        stale_workspaces,
    }
}

/// Growth of a sampled figure: the median of the last `window` samples
/// against the median of the first `window`, in percent. `None` with
/// fewer than two windows' worth of samples.
pub fn growth_percent(samples: &[f64], window: usize) -> Option<(f64, f64, f64)> {
    let window = window.max(1);
    if samples.len() < 2 * window {
        return None;
    }
    let start = median(&samples[..window]);
    let end = median(&samples[samples.len() - window..]);
    if start <= 0.0 {
        return None;
    }
    Some((start, end, (end - start) / start * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..20).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..20).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let v = r.range(3, 9);
            assert!((3..=9).contains(&v), "{v}");
        }
        assert_eq!(r.range(5, 5), 5);
        assert_eq!(r.range(6, 2), 6);
        let d = r.duration(Duration::from_secs(1), Duration::from_secs(2));
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
    }

    #[test]
    fn every_kind_comes_first_then_all_kinds_keep_coming() {
        let mut rng = Rng::new(1);
        let mut s = Schedule::default();
        let first: Vec<EventKind> = (0..EventKind::ALL.len())
            .map(|_| s.next(&mut rng))
            .collect();
        assert_eq!(first, EventKind::ALL);
        let mut seen = BTreeMap::new();
        for _ in 0..600 {
            *seen.entry(s.next(&mut rng)).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), EventKind::ALL.len(), "{seen:?}");
        // Weighted: admin bursts (4) clearly more often than helper kills (2).
        assert!(seen[&EventKind::AdminBurst] > seen[&EventKind::HelperKill]);

        // A kind that is not allowed stays out of the random part, but
        // never out of the first round.
        let mut s = Schedule::default();
        let no_kill = |k: EventKind| k != EventKind::HelperKill;
        let first: Vec<EventKind> = (0..EventKind::ALL.len())
            .map(|_| s.next_allowed(&mut rng, no_kill))
            .collect();
        assert_eq!(first, EventKind::ALL);
        for _ in 0..300 {
            assert_ne!(s.next_allowed(&mut rng, no_kill), EventKind::HelperKill);
        }
        assert!(EventKind::ALL.contains(&s.next_allowed(&mut rng, |_| false)));
    }

    #[test]
    fn timings_scale_with_the_run() {
        let short = Timing::for_run(120);
        assert_eq!(short.freeze.1, Duration::from_secs(13));
        assert!(
            short.freeze.1 <= Duration::from_secs(12 + 1),
            "≈ 10 % of the run"
        );
        assert!(short.gap.1 <= Duration::from_secs(3));
        let long = Timing::for_run(1800);
        assert_eq!(long.freeze.1, Duration::from_secs(200));
        assert_eq!(long.gap.1, Duration::from_secs(40));
        assert!(long.netem.1 > short.netem.1);
        assert_eq!(short.warmup, Duration::from_secs(15));
        assert_eq!(long.warmup, Duration::from_secs(60));
        assert_eq!(short.helper_life, Duration::from_secs(60));
        assert_eq!(long.helper_life, Duration::from_secs(300));
        for t in [&short, &long] {
            assert!(t.gap.0 <= t.gap.1 && t.freeze.0 <= t.freeze.1);
            assert!(t.netem.0 <= t.netem.1 && t.down.0 <= t.down.1);
        }
    }

    #[test]
    fn views_compare_as_multisets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let same = compare_views(
            &s(&["ws0/a0", "ws0/a1"]),
            &s(&["ws0"]),
            &s(&["ws0/a1", "ws0/a0"]),
            &s(&["ws0"]),
        );
        assert!(same.is_empty(), "{same}");
        let d = compare_views(
            &s(&["ws0/a0", "ws1/x3"]),
            &s(&["ws0", "ws1"]),
            &s(&["ws0/a0", "ws0/a0", "b2/x1"]),
            &s(&["ws0", "b2"]),
        );
        assert_eq!(d.missing_agents, s(&["ws1/x3"]));
        assert_eq!(d.stale_agents, s(&["b2/x1", "ws0/a0"]));
        assert_eq!(d.missing_workspaces, s(&["ws1"]));
        assert_eq!(d.stale_workspaces, s(&["b2"]));
        assert!(!d.is_empty());
        assert!(d.to_string().contains("ws1/x3"));
    }

    #[test]
    fn growth_compares_medians_of_the_first_and_last_windows() {
        assert_eq!(growth_percent(&[1.0, 2.0, 3.0], 2), None);
        // One spike at the start and one at the end do not count.
        let v = [100.0, 500.0, 100.0, 100.0, 101.0, 102.0, 900.0, 102.0];
        let (start, end, g) = growth_percent(&v, 3).unwrap();
        assert_eq!((start, end), (100.0, 102.0));
        assert!((g - 2.0).abs() < 1e-9, "{g}");
        let (_, _, g) = growth_percent(&[10.0, 10.0, 11.0, 11.0], 2).unwrap();
        assert!((g - 10.0).abs() < 1e-9, "{g}");
        assert_eq!(growth_percent(&[0.0, 0.0, 1.0, 1.0], 2), None);
    }
}
