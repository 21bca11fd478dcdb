//! A mirror of boringtun's per-peer timer state, kept in the caller's clock, so
//! the table can say *when* boringtun's `update_timers` next has work to do
//! instead of calling it every 250 ms like boringtun's own device does.
//!
//! boringtun keeps its timers private; we record the same events (packet sent,
//! received, handshake started, session established) as they pass through the
//! table, and derive the instants at which one of boringtun's conditions can
//! become true. An instant that turns out to be early only costs one spurious
//! `update_timers` call; the rules below are chosen so an instant is never
//! *late*: boringtun stamps events with the time of its last `update_timers`
//! call (never later than ours), so its conditions come true no later than ours.

use std::time::{Duration, Instant};

/// boringtun `REKEY_AFTER_TIME`: the initiator re-handshakes a session this old
/// when it sends.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// boringtun `REJECT_AFTER_TIME`: sessions this old are discarded.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// boringtun `REKEY_ATTEMPT_TIME`: handshake retries give up after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// boringtun `REKEY_TIMEOUT`: a handshake initiation is retried after this long.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// boringtun `KEEPALIVE_TIMEOUT`: a passive keepalive after receiving data and
/// sending nothing for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// boringtun `COOKIE_EXPIRATION_TIME`.
pub const COOKIE_EXPIRATION_TIME: Duration = Duration::from_secs(120);
/// All keys are zeroed this long after the latest handshake (3 × REJECT_AFTER_TIME).
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(540);

/// boringtun discards a session when its age is *strictly greater* than
/// REJECT_AFTER_TIME; asking a hair later guarantees the condition holds.
const STRICT_MARGIN: Duration = Duration::from_millis(1);

/// How stale boringtun's notion of "now" may get before a packet operation
/// refreshes it with `update_timers`. boringtun stamps events with the time of
/// its last `update_timers` call; its own device calls it every 250 ms, so
/// refreshing at the same granularity (and only when traffic flows) keeps its
/// timestamps as accurate as upstream without an idle tick.
pub const REFRESH_AFTER: Duration = Duration::from_millis(250);

/// Event times of one peer, mirroring boringtun's `Timers`.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Reference point boringtun measures from: creation, or the last time it
    /// cleared its timers (after expiry). Unset timers equal it.
    pub epoch: Instant,
    pub session_established: Option<Instant>,
    /// Same as `session_established`, but starts at `epoch` (boringtun's value
    /// for "never").
    pub session_established_raw: Instant,
    pub is_initiator: bool,
    pub handshake_in_progress: bool,
    pub handshake_started: Instant,
    pub handshake_last_sent: Instant,
    pub last_sent: Instant,
    pub last_received: Instant,
    pub last_data_sent: Instant,
    pub last_data_received: Instant,
    pub cookie_received: Option<Instant>,
    /// When `update_timers` last ran.
    pub last_tick: Instant,
    /// Connection expired (keys dropped); boringtun does nothing more until
    /// the next handshake initiation.
    pub expired: bool,
    /// SessionExpired was reported for the current session.
    pub stale_reported: bool,
}

impl Mirror {
    pub fn new(now: Instant) -> Self {
        Mirror {
            epoch: now,
            session_established: None,
            session_established_raw: now,
            is_initiator: false,
            handshake_in_progress: false,
            handshake_started: now,
            handshake_last_sent: now,
            last_sent: now,
            last_received: now,
            last_data_sent: now,
            last_data_received: now,
            cookie_received: None,
            last_tick: now,
            expired: false,
            stale_reported: false,
        }
    }

    /// boringtun's `Timers::clear`: every timer jumps to now.
    fn clear(&mut self, now: Instant) {
        self.epoch = now;
        self.session_established_raw = now;
        self.handshake_started = now;
        self.handshake_last_sent = now;
        self.last_sent = now;
        self.last_received = now;
        self.last_data_sent = now;
        self.last_data_received = now;
    }

    /// We formatted a handshake initiation.
    pub fn on_initiation_sent(&mut self, now: Instant) {
        if self.expired {
            // boringtun clears its timers when it starts over after expiry.
            self.clear(now);
            self.expired = false;
        }
        if !self.handshake_in_progress {
            self.handshake_started = now;
        }
        self.handshake_in_progress = true;
        self.handshake_last_sent = now;
        self.last_sent = now;
    }

    /// A handshake completed (we answered an initiation, or got a response).
    pub fn on_session_established(&mut self, now: Instant, initiator: bool) {
        self.session_established = Some(now);
        self.session_established_raw = now;
        self.is_initiator = initiator;
        // Answering an initiation moves our own pending one aside in boringtun
        // (it no longer retries it); a response completes ours.
        self.handshake_in_progress = false;
        self.stale_reported = false;
        self.last_received = now;
        self.last_sent = now;
    }

    pub fn on_sent(&mut self, now: Instant, data: bool) {
        self.last_sent = now;
        if data {
            self.last_data_sent = now;
        }
    }

    pub fn on_received(&mut self, now: Instant, data: bool) {
        self.last_received = now;
        if data {
            self.last_data_received = now;
        }
    }

    /// boringtun reported the connection expired and dropped every key.
    pub fn on_expired(&mut self, now: Instant) {
        self.expired = true;
        self.handshake_in_progress = false;
        self.session_established = None;
        self.clear(now);
    }

    /// The earliest instant after the last `update_timers` run at which
    /// boringtun's `update_timers` (or our persistent keepalive, or the stale
    /// report) may have something to do. `None`: nothing will happen until
    /// the next packet.
    pub fn next_deadline(&self, persistent_keepalive: Option<Duration>) -> Option<Instant> {
        let after = self.last_tick;
        let mut best: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > after && !matches!(best, Some(b) if b <= t) {
                best = Some(t);
            }
        };

        if let Some(iv) = persistent_keepalive {
            consider(self.last_sent + iv);
        }
        if self.expired {
            // boringtun returns early from update_timers until a new
            // initiation; nothing to wait for.
            return best;
        }
        if let Some(est) = self.session_established {
            if !self.stale_reported {
                consider(est + REJECT_AFTER_TIME + STRICT_MARGIN);
            }
        }
        consider(self.session_established_raw + ZERO_KEYS_AFTER);
        if let Some(c) = self.cookie_received {
            consider(c + COOKIE_EXPIRATION_TIME);
        }
        if self.handshake_in_progress {
            consider(self.handshake_started + REKEY_ATTEMPT_TIME);
            consider(self.handshake_last_sent + REKEY_TIMEOUT);
        } else {
            let est = self.session_established_raw;
            if self.is_initiator && self.last_data_sent > est {
                consider(est + REKEY_AFTER_TIME);
            }
            if self.is_initiator && self.last_data_received > est {
                consider(est + REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT);
            }
            if self.last_data_sent > self.last_received {
                consider(self.last_received + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
            }
            if self.last_data_received > self.last_sent {
                consider(self.last_sent + KEEPALIVE_TIMEOUT);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_peer_only_waits_for_key_zeroing() {
        let t0 = Instant::now();
        let m = Mirror::new(t0);
        assert_eq!(m.next_deadline(None), Some(t0 + ZERO_KEYS_AFTER));
    }

    #[test]
    fn pending_handshake_retries_after_rekey_timeout() {
        let t0 = Instant::now();
        let mut m = Mirror::new(t0);
        m.on_initiation_sent(t0);
        assert_eq!(m.next_deadline(None), Some(t0 + REKEY_TIMEOUT));
    }

    #[test]
    fn idle_session_waits_until_it_goes_stale() {
        let t0 = Instant::now();
        let mut m = Mirror::new(t0);
        m.on_initiation_sent(t0);
        let t1 = t0 + Duration::from_millis(20);
        m.on_session_established(t1, true);
        m.last_tick = t1;
        assert_eq!(
            m.next_deadline(None),
            Some(t1 + REJECT_AFTER_TIME + STRICT_MARGIN)
        );
        // A persistent keepalive comes first when configured.
        assert_eq!(
            m.next_deadline(Some(Duration::from_secs(25))),
            Some(t1 + Duration::from_secs(25))
        );
    }

    #[test]
    fn data_received_without_reply_asks_for_a_keepalive() {
        let t0 = Instant::now();
        let mut m = Mirror::new(t0);
        m.on_session_established(t0, false);
        let t1 = t0 + Duration::from_secs(1);
        m.on_received(t1, true);
        assert_eq!(m.next_deadline(None), Some(t0 + KEEPALIVE_TIMEOUT));
    }

    #[test]
    fn deadlines_already_handled_are_not_repeated() {
        let t0 = Instant::now();
        let mut m = Mirror::new(t0);
        m.on_session_established(t0, false);
        m.on_received(t0 + Duration::from_secs(1), true);
        m.last_tick = t0 + KEEPALIVE_TIMEOUT;
        // The keepalive instant has passed; the next one is the stale report.
        assert_eq!(
            m.next_deadline(None),
            Some(t0 + REJECT_AFTER_TIME + STRICT_MARGIN)
        );
    }
}
