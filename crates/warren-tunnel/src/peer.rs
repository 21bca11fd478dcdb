//! One entry of the peer table: a boringtun `Tunn`, the peer's routes and
//! endpoint, the packets waiting for its handshake, and the mirror of its
//! timers. The table hands it the shared output queues and scratch buffer.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

use crate::timers::{Mirror, REFRESH_AFTER, REJECT_AFTER_TIME};
use crate::types::{key_id, Counters, OwnedTransmit, PeerKey, TunnelEvent};

/// WireGuard message types (first byte of every message).
pub(crate) const MSG_INIT: u8 = 1;
pub(crate) const MSG_RESPONSE: u8 = 2;
pub(crate) const MSG_COOKIE: u8 = 3;
pub(crate) const MSG_DATA: u8 = 4;

/// Undrained events kept at most; older ones are discarded (and counted) so a
/// driver that forgets `poll_event` cannot grow memory without bound.
const EVENT_QUEUE_CAP: usize = 4096;
/// Undrained datagrams kept at most, for the same reason.
const TRANSMIT_QUEUE_CAP: usize = 65536;

/// Everything the table produces besides the data-path return values.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub transmits: VecDeque<OwnedTransmit>,
    pub events: VecDeque<TunnelEvent>,
    pub counters: Counters,
}

impl Outputs {
    /// Queues a datagram for `dst`, or counts it as unsendable.
    pub fn transmit(&mut self, dst: Option<SocketAddr>, payload: &[u8]) {
        let Some(dst) = dst else {
            self.counters.dropped_no_endpoint += 1;
            return;
        };
        if self.transmits.len() >= TRANSMIT_QUEUE_CAP {
            self.transmits.pop_front();
            self.counters.dropped_transmits += 1;
        }
        self.transmits.push_back(OwnedTransmit {
            dst,
            payload: payload.to_vec(),
        });
    }

    pub fn event(&mut self, event: TunnelEvent) {
        if self.events.len() >= EVENT_QUEUE_CAP {
            self.events.pop_front();
            self.counters.dropped_events += 1;
        }
        self.events.push_back(event);
    }
}

pub(crate) struct Peer {
    pub key: PeerKey,
    pub tunn: Tunn,
    /// The 24-bit index boringtun puts in the upper bits of our receiver
    /// indices; inbound responses and data are routed by it.
    pub index: u32,
    /// Distinguishes this peer from an earlier occupant of the same slot in
    /// the timer heap.
    pub generation: u64,
    pub addresses: Vec<IpAddr>,
    /// The endpoint the coordinator last configured; a learned (roamed)
    /// endpoint is only overridden when this changes.
    pub configured_endpoint: Option<SocketAddr>,
    pub endpoint: Option<SocketAddr>,
    /// The path layer chose the endpoint ([`crate::Tunnel::set_path_endpoint`]):
    /// neither roaming nor the directory moves it any more.
    pub pinned: bool,
    pub persistent_keepalive: Option<Duration>,
    pub queue: VecDeque<Vec<u8>>,
    pub timers: Mirror,
    /// The deadline this peer has in the table's heap, if any.
    pub scheduled: Option<Instant>,
    pub handshakes: u64,
}

impl Peer {
    /// Whether boringtun has a current session, i.e. `Tunn::encapsulate` will
    /// encrypt rather than queue. Both check the same session slot, so asking
    /// first keeps boringtun's own unbounded-silent queue unused and ours (bounded,
    /// counted) authoritative.
    pub fn has_session(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }

    /// Runs boringtun's timers if its notion of "now" is older than
    /// [`REFRESH_AFTER`], so event timestamps stay as fresh as with upstream's
    /// 250 ms tick while traffic flows.
    pub fn refresh(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        if now.saturating_duration_since(self.timers.last_tick) >= REFRESH_AFTER {
            self.tick(now, out, scratch);
        }
    }

    /// Runs boringtun's `update_timers` once and handles its output.
    pub fn tick(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        self.timers.last_tick = now;
        match self.tunn.update_timers(scratch) {
            TunnResult::WriteToNetwork(msg) => {
                if msg.first() == Some(&MSG_INIT) {
                    self.timers.on_initiation_sent(now);
                } else {
                    self.timers.on_sent(now, false);
                }
                out.transmit(self.endpoint, msg);
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) if !self.timers.expired => {
                self.expire(now, out);
            }
            _ => {}
        }
        if let Some(established) = self.timers.session_established {
            if !self.timers.stale_reported && now > established + REJECT_AFTER_TIME {
                self.timers.stale_reported = true;
                tracing::debug!(peer = %key_id(&self.key), "session expired, peer is stale");
                out.event(TunnelEvent::SessionExpired { peer: self.key });
            }
        }
    }

    /// boringtun dropped every key of this peer; so do we with its queue.
    fn expire(&mut self, now: Instant, out: &mut Outputs) {
        let had_activity = self.timers.session_established.is_some()
            || self.timers.handshake_in_progress
            || !self.queue.is_empty();
        let dropped = self.queue.len();
        self.queue.clear();
        out.counters.dropped_on_expiry += dropped as u64;
        self.timers.on_expired(now);
        if had_activity {
            tracing::debug!(peer = %key_id(&self.key), dropped, "connection expired, keys dropped");
            out.event(TunnelEvent::ConnectionExpired {
                peer: self.key,
                dropped,
            });
        }
    }

    /// Our persistent keepalive (boringtun's fires on a fixed period even
    /// amid traffic, and cannot be changed in place): send one when nothing
    /// was sent for the interval.
    pub fn persistent_keepalive(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        let Some(interval) = self.persistent_keepalive else {
            return;
        };
        if now.saturating_duration_since(self.timers.last_sent) < interval {
            return;
        }
        if self.has_session() {
            if let TunnResult::WriteToNetwork(msg) = self.tunn.encapsulate(&[], scratch) {
                self.timers.on_sent(now, false);
                out.transmit(self.endpoint, msg);
            }
        } else {
            self.initiate(now, out, scratch);
        }
    }

    /// Starts a handshake unless one is in progress.
    pub fn initiate(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        if let TunnResult::WriteToNetwork(msg) =
            self.tunn.format_handshake_initiation(scratch, false)
        {
            self.timers.on_initiation_sent(now);
            out.transmit(self.endpoint, msg);
        }
    }

    /// Sends a new initiation now even if one is in flight (it went to an
    /// endpoint that turned out dead).
    pub fn reinitiate(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        if let TunnResult::WriteToNetwork(msg) =
            self.tunn.format_handshake_initiation(scratch, true)
        {
            self.timers.on_initiation_sent(now);
            out.transmit(self.endpoint, msg);
        }
    }

    /// Sends the packets that waited for a session, oldest first.
    pub fn flush(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        while !self.queue.is_empty() && self.has_session() {
            let Some(packet) = self.queue.pop_front() else {
                break;
            };
            if let TunnResult::WriteToNetwork(msg) = self.tunn.encapsulate(&packet, scratch) {
                self.timers.on_sent(now, true);
                out.transmit(self.endpoint, msg);
            }
        }
    }

    /// Sends whatever boringtun queued internally. The table never lets it
    /// queue data, but its timers can queue a keepalive while sessionless.
    pub fn drain_boringtun_queue(&mut self, now: Instant, out: &mut Outputs, scratch: &mut [u8]) {
        // boringtun's queue holds at most 256 packets; the bound only guards
        // against a library change turning this into an endless loop.
        for _ in 0..=256 {
            match self.tunn.decapsulate(None, &[], scratch) {
                TunnResult::WriteToNetwork(msg) => {
                    self.timers.on_sent(now, msg.len() > 32);
                    out.transmit(self.endpoint, msg);
                }
                _ => break,
            }
        }
    }

    /// An authenticated datagram came from `from`: follow the peer there.
    pub fn roam(&mut self, from: SocketAddr, out: &mut Outputs) {
        if !self.pinned && self.endpoint != Some(from) {
            tracing::debug!(peer = %key_id(&self.key), endpoint = %from, "peer endpoint changed");
            self.endpoint = Some(from);
            out.event(TunnelEvent::EndpointChanged {
                peer: self.key,
                endpoint: from,
            });
        }
    }
}
