//! [`PathSelector`]: which way datagrams to one peer take — straight to it,
//! through one of the TURN relays, or nowhere yet — given what the ICE
//! checks and the relay allocations report.
//!
//! The rules are the ones people notice:
//!
//! * A direct path wins whenever there is one, at once: moving from a relay
//!   to a direct path changes only where WireGuard sends, so connections in
//!   flight survive the move.
//! * A working relay is used as soon as it is ready once [`DIRECT_GRACE`]
//!   has passed since the checks began without a direct path: nobody waits
//!   for every direct check to time out (that takes many seconds behind a
//!   symmetric NAT).
//! * A lost relay fails over to another ready one (the client keeps two
//!   allocations for this), a lost direct path falls back to a relay, and
//!   with nothing left the path is [`Path::None`] until something comes back.
//!
//! Sans-IO with explicit time, like the rest of the client core: the caller
//! feeds reports with `now`, reads [`PathSelector::current`] and the
//! changes from [`PathSelector::poll_change`], and calls
//! [`PathSelector::handle_timeout`] at [`PathSelector::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a fresh start waits for a direct path before it takes a ready
/// relay: about two check round trips on a continent-wide path, short
/// enough that a person never sees it.
pub const DIRECT_GRACE: Duration = Duration::from_millis(600);

/// Which relay (an index into the client's relay list, stable while the
/// list is).
pub type RelayId = usize;

/// Where datagrams to the peer go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to the peer at `remote`.
    Direct { remote: SocketAddr },
    /// Through relay `relay` (the TURN server at `server`), which forwards
    /// to the peer's `remote` address.
    Relayed {
        relay: RelayId,
        server: SocketAddr,
        remote: SocketAddr,
    },
    /// No working path yet, or none left.
    None,
}

/// See the module documentation.
#[derive(Debug)]
pub struct PathSelector {
    /// When the current round of checks began (start, or after a network
    /// change); the grace runs from here.
    checks_began: Instant,
    direct: Option<SocketAddr>,
    /// Ready relayed paths: server and the peer address it forwards to.
    relays: BTreeMap<RelayId, (SocketAddr, SocketAddr)>,
    current: Path,
    changes: VecDeque<Path>,
}

impl PathSelector {
    /// A selector whose checks begin at `now`.
    pub fn new(now: Instant) -> Self {
        PathSelector {
            checks_began: now,
            direct: None,
            relays: BTreeMap::new(),
            current: Path::None,
            changes: VecDeque::new(),
        }
    }

    /// The path datagrams take now.
    pub fn current(&self) -> Path {
        self.current
    }

    /// The next change of [`Self::current`], oldest first.
    pub fn poll_change(&mut self) -> Option<Path> {
        self.changes.pop_front()
    }

    /// When [`Self::handle_timeout`] has work: the end of the grace, if a
    /// relay waits for it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waiting =
            self.direct.is_none() && !self.relays.is_empty() && matches!(self.current, Path::None);
        waiting.then_some(self.checks_began + DIRECT_GRACE)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.decide(now);
    }

    /// The checks start over (the network changed, the peer restarted):
    /// what was known stays in use until reports say otherwise, and the
    /// grace runs again for paths found from here.
    pub fn restart_checks(&mut self, now: Instant) {
        self.checks_began = now;
    }

    /// ICE nominated a direct pair: the peer answers at `remote`.
    pub fn direct_ready(&mut self, now: Instant, remote: SocketAddr) {
        self.direct = Some(remote);
        self.decide(now);
    }

    /// The direct pair stopped answering.
    pub fn direct_lost(&mut self, now: Instant) {
        self.direct = None;
        self.decide(now);
    }

    /// Relay `relay` (the TURN server `server`) carries datagrams to the
    /// peer's `remote` address: its allocation, permission and channel are
    /// up and a check through it was answered.
    pub fn relay_ready(
        &mut self,
        now: Instant,
        relay: RelayId,
        server: SocketAddr,
        remote: SocketAddr,
    ) {
        self.relays.insert(relay, (server, remote));
        self.decide(now);
    }

    /// Relay `relay` is gone (its allocation failed or expired, the server
    /// stopped answering).
    pub fn relay_lost(&mut self, now: Instant, relay: RelayId) {
        self.relays.remove(&relay);
        self.decide(now);
    }

    fn decide(&mut self, now: Instant) {
        let next = if let Some(remote) = self.direct {
            Path::Direct { remote }
        } else if let Some(relayed) = self.pick_relay(now) {
            relayed
        } else {
            Path::None
        };
        if next != self.current {
            self.current = next;
            self.changes.push_back(next);
        }
    }

    /// The relay to use, if any may be used now: the one in use if it is
    /// still ready (no needless hops between equals), else the first ready
    /// one. A fresh start waits out the grace; once a relay or a direct path
    /// has carried traffic, a failover doesn't wait.
    fn pick_relay(&self, now: Instant) -> Option<Path> {
        let in_use = match self.current {
            Path::Relayed { relay, .. } => Some(relay),
            _ => None,
        };
        let had_a_path = !matches!(self.current, Path::None);
        if !had_a_path && now < self.checks_began + DIRECT_GRACE {
            return None;
        }
        let (relay, (server, remote)) = in_use
            .and_then(|id| self.relays.get(&id).map(|r| (id, *r)))
            .or_else(|| self.relays.iter().next().map(|(id, r)| (*id, *r)))?;
        Some(Path::Relayed {
            relay,
            server,
            remote,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "198.51.100.7:51820";
    const RELAYED_1: &str = "203.0.113.10:49152";
    const RELAYED_2: &str = "203.0.113.11:49160";
    const TURN_1: &str = "203.0.113.10:3478";
    const TURN_2: &str = "203.0.113.11:3478";

    fn relayed(relay: RelayId) -> Path {
        let (server, remote) = match relay {
            1 => (TURN_1, RELAYED_1),
            _ => (TURN_2, RELAYED_2),
        };
        Path::Relayed {
            relay,
            server: addr(server),
            remote: addr(remote),
        }
    }

    fn changes(s: &mut PathSelector) -> Vec<Path> {
        std::iter::from_fn(|| s.poll_change()).collect()
    }

    #[test]
    fn a_direct_path_is_used_at_once() {
        let t0 = Instant::now();
        let mut s = PathSelector::new(t0);
        assert_eq!(s.current(), Path::None);
        assert_eq!(s.poll_timeout(), None, "nothing to wait for");
        s.direct_ready(t0 + Duration::from_millis(60), addr(PEER));
        assert_eq!(changes(&mut s), [Path::Direct { remote: addr(PEER) }]);
    }

    #[test]
    fn a_ready_relay_waits_only_for_the_grace_not_for_every_check() {
        let t0 = Instant::now();
        let mut s = PathSelector::new(t0);
        s.relay_ready(
            t0 + Duration::from_millis(200),
            1,
            addr(TURN_1),
            addr(RELAYED_1),
        );
        assert_eq!(s.current(), Path::None, "a direct path may still come");
        assert_eq!(s.poll_timeout(), Some(t0 + DIRECT_GRACE));
        s.handle_timeout(t0 + DIRECT_GRACE);
        assert_eq!(changes(&mut s), [relayed(1)]);
        assert_eq!(s.poll_timeout(), None);
        // A relay that is ready only after the grace is used at once.
        let mut s = PathSelector::new(t0);
        s.relay_ready(
            t0 + Duration::from_secs(2),
            2,
            addr(TURN_2),
            addr(RELAYED_2),
        );
        assert_eq!(s.current(), relayed(2));
    }

    #[test]
    fn a_direct_path_found_within_the_grace_beats_the_relay() {
        let t0 = Instant::now();
        let mut s = PathSelector::new(t0);
        s.relay_ready(
            t0 + Duration::from_millis(100),
            1,
            addr(TURN_1),
            addr(RELAYED_1),
        );
        s.direct_ready(t0 + Duration::from_millis(300), addr(PEER));
        s.handle_timeout(t0 + DIRECT_GRACE);
        assert_eq!(changes(&mut s), [Path::Direct { remote: addr(PEER) }]);
    }

    #[test]
    fn a_lost_relay_fails_over_to_the_other_at_once() {
        let t0 = Instant::now();
        let mut s = PathSelector::new(t0);
        let later = t0 + Duration::from_secs(1);
        s.relay_ready(later, 1, addr(TURN_1), addr(RELAYED_1));
        s.relay_ready(later, 2, addr(TURN_2), addr(RELAYED_2));
        assert_eq!(s.current(), relayed(1));
        // The second relay coming back or going doesn't move the path.
        s.relay_lost(later, 2);
        s.relay_ready(later, 2, addr(TURN_2), addr(RELAYED_2));
        assert_eq!(changes(&mut s), [relayed(1)]);
        s.relay_lost(later + Duration::from_secs(5), 1);
        assert_eq!(changes(&mut s), [relayed(2)]);
        s.relay_lost(later + Duration::from_secs(6), 2);
        assert_eq!(changes(&mut s), [Path::None]);
    }

    #[test]
    fn relayed_moves_to_direct_when_one_opens_and_back_when_it_closes() {
        let t0 = Instant::now();
        let mut s = PathSelector::new(t0);
        let later = t0 + Duration::from_secs(1);
        s.relay_ready(later, 1, addr(TURN_1), addr(RELAYED_1));
        s.direct_ready(later + Duration::from_secs(8), addr(PEER));
        s.direct_lost(later + Duration::from_secs(20));
        assert_eq!(
            changes(&mut s),
            [relayed(1), Path::Direct { remote: addr(PEER) }, relayed(1)],
            "a lost direct path falls back to the relay without a new grace"
        );
    }

    #[test]
    fn restarting_the_checks_keeps_the_path_in_use() {
        let t0 = Instant::now();
        let mut s = PathSelector::new(t0);
        s.direct_ready(t0, addr(PEER));
        s.restart_checks(t0 + Duration::from_secs(30));
        assert_eq!(s.current(), Path::Direct { remote: addr(PEER) });
        assert_eq!(s.poll_timeout(), None);
    }
}
