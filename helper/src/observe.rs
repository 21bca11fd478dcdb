//! What the data plane reports and answers besides moving packets:
//! per-peer statistics for subscribers (every [`STATS_INTERVAL`] for peers
//! whose numbers moved, and at once on a handshake change) and `warren ping`
//! (an ICMP echo sent into the tunnel and timed here, so the CLI needs no raw
//! socket and the round trip is exactly the tunnel's).
//!
//! Sans-IO like the tunnel itself: the data-plane loop hands it `now`, the
//! tunnel's events and every decrypted inbound packet, and sends what it
//! returns. The only side channel is the stats sender to the engine.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use warren_tunnel::{DropReason, PeerKey, PeerStats, Transmit, Tunnel, TunnelEvent};

/// How often moved numbers are reported without a handshake change.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// Echo payload: enough to carry a recognisable pattern, small enough for
/// any MTU.
const PING_PAYLOAD: &[u8; 16] = b"warren-ping-0001";
/// Pings waiting for their reply at once; more are refused, so a script
/// looping `warren ping` can't grow the helper.
pub const MAX_PENDING_PINGS: usize = 64;

pub use warren_client_core::PeerReport;

/// What the data plane tells the engine, tagged with the tunnel generation
/// it is about (the client state ignores older ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The peers whose figures changed.
    Stats {
        generation: u64,
        peers: Vec<PeerReport>,
    },
    /// The tunnel started, stopped, failed to start or died (with the
    /// reason, or a note about a tunnel that runs without DNS).
    Tunnel {
        generation: u64,
        state: warren_proto::ipc::TunnelState,
        error: Option<String>,
    },
    /// The path layer's candidates changed (server-reflexive and relayed
    /// addresses first): announce them to the coordinator.
    Candidates(Vec<SocketAddr>),
    /// This machine's addresses changed: the coordinator connection, bound
    /// to the old one, is replaced at once.
    NetworkChanged,
}

/// The data plane's reports to the engine.
pub type ReportSender = mpsc::UnboundedSender<Report>;
/// The engine's end of [`ReportSender`].
pub type ReportReceiver = mpsc::UnboundedReceiver<Report>;

/// A ping asked of the data plane.
#[derive(Debug)]
pub struct PingRequest {
    pub dst: IpAddr,
    pub timeout: Duration,
    pub reply: oneshot::Sender<Result<PingOutcome, PingError>>,
}

/// What the engine can ask of a running data plane besides packets.
#[derive(Debug)]
pub enum LoopRequest {
    /// Send an echo request and time the reply.
    Ping(PingRequest),
    /// Report moved figures now (a subscriber arrived and should not wait
    /// up to [`STATS_INTERVAL`] for current byte counts).
    Report,
}

/// A ping that came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingOutcome {
    pub rtt: Duration,
    /// Where the tunnel sends that agent's datagrams now.
    pub endpoint: Option<SocketAddr>,
}

/// Why a ping got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error("no reply within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("this device has no {0} tunnel address to ping from")]
    NoSource(&'static str),
    #[error("the tunnel dropped the echo request: {0}")]
    Dropped(DropReason),
    #[error("too many pings are already waiting for a reply; try again in a moment")]
    Busy,
    #[error("the tunnel is not running; connect with `warren up` first")]
    TunnelDown,
}

#[derive(Debug)]
struct Pending {
    dst: IpAddr,
    seq: u16,
    sent: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<PingOutcome, PingError>>,
}

/// The figures last reported for a peer; a report goes out when they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reported {
    last_handshake: Option<Instant>,
    /// `last_handshake` on the wall clock, converted once: converting the
    /// same instant again later can land a millisecond off, which would read
    /// as a new handshake.
    last_handshake_ms: Option<u64>,
    rx_bytes: u64,
    tx_bytes: u64,
    rtt: Option<Duration>,
    endpoint: Option<SocketAddr>,
    relay: Option<String>,
    no_path: bool,
}

impl From<&PeerStats> for Reported {
    fn from(s: &PeerStats) -> Self {
        Reported {
            last_handshake: s.last_handshake,
            last_handshake_ms: None,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rtt: s.rtt,
            endpoint: s.endpoint,
            relay: None,
            no_path: false,
        }
    }
}

/// Statistics and pings for one running tunnel.
#[derive(Debug)]
pub struct Observer {
    reports: ReportSender,
    /// The tunnel generation this observer's figures belong to.
    generation: u64,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    /// ICMP identifier of this tunnel's pings: replies with another one are
    /// the kernel's business and go to the TUN.
    ident: u16,
    next_seq: u16,
    pending: Vec<Pending>,
    reported: HashMap<PeerKey, Reported>,
    /// The latest `warren ping` round trip per peer. It measures the data
    /// path itself, so it replaces the handshake's round trip (which
    /// includes handshake crypto and boringtun's whole-millisecond clock).
    ping_rtt: HashMap<PeerKey, Duration>,
    next_report: Instant,
    report_now: bool,
    /// The TURN server carrying each relayed peer's path (from the path
    /// layer); peers on a direct path are absent.
    relays: HashMap<PeerKey, String>,
    /// Peers the path layer has no working path to.
    no_path: HashSet<PeerKey>,
}

/// Milliseconds since the Unix epoch of `at`, given the wall clock `wall_ms`
/// at the monotonic instant `now`.
fn wall_ms_of(at: Instant, now: Instant, wall_ms: u64) -> u64 {
    wall_ms.saturating_sub(now.saturating_duration_since(at).as_millis() as u64)
}

/// The wall clock now, in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Observer {
    /// `addresses` are this device's tunnel addresses (ping sources).
    pub fn new(
        now: Instant,
        addresses: &[IpAddr],
        reports: ReportSender,
        ident: u16,
        generation: u64,
    ) -> Self {
        let v4 = addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let v6 = addresses.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        Observer {
            reports,
            generation,
            v4,
            v6,
            ident,
            next_seq: 0,
            pending: Vec::new(),
            reported: HashMap::new(),
            ping_rtt: HashMap::new(),
            next_report: now + STATS_INTERVAL,
            report_now: false,
            relays: HashMap::new(),
            no_path: HashSet::new(),
        }
    }

    /// When [`Observer::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.pending
            .iter()
            .map(|p| p.deadline)
            .fold(self.next_report, Instant::min)
    }

    /// Reports moved figures when the interval is up; fails pings whose
    /// time is up.
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64, tunnel: &Tunnel) {
        if now >= self.next_report {
            self.report(now, wall_ms, tunnel);
        }
        let (due, waiting): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now >= p.deadline);
        self.pending = waiting;
        for p in due {
            let _ = p.reply.send(Err(PingError::Timeout(p.deadline - p.sent)));
        }
    }

    /// Notes a tunnel event: handshake changes are reported right away (at
    /// the next [`Observer::flush`]).
    pub fn on_event(&mut self, event: &TunnelEvent) {
        match event {
            TunnelEvent::HandshakeCompleted { peer, initiator } => {
                tracing::debug!(peer = %warren_tunnel::key_id(peer), initiator, "handshake completed");
                self.report_now = true;
            }
            TunnelEvent::SessionExpired { peer } => {
                tracing::debug!(peer = %warren_tunnel::key_id(peer), "session expired");
                self.report_now = true;
            }
            TunnelEvent::ConnectionExpired { peer, dropped } => {
                tracing::info!(peer = %warren_tunnel::key_id(peer), dropped, "no handshake with an agent; its queued packets were dropped");
                self.report_now = true;
            }
            TunnelEvent::EndpointChanged { peer, endpoint } => {
                tracing::info!(peer = %warren_tunnel::key_id(peer), %endpoint, "an agent's endpoint changed");
                self.report_now = true;
            }
        }
    }

    /// The path layer's choice for `peer`: the relay carrying it (by
    /// name), or none, or no working path at all.
    pub fn set_path(&mut self, peer: PeerKey, relay: Option<String>, no_path: bool) {
        let old = match relay.clone() {
            Some(r) => self.relays.insert(peer, r),
            None => self.relays.remove(&peer),
        };
        let was_none = if no_path {
            !self.no_path.insert(peer)
        } else {
            self.no_path.remove(&peer)
        };
        if old != relay || was_none != no_path {
            self.report_now = true;
        }
    }

    /// Sends the report an event asked for, if any.
    pub fn flush(&mut self, now: Instant, wall_ms: u64, tunnel: &Tunnel) {
        if self.report_now {
            self.report(now, wall_ms, tunnel);
        }
    }

    /// Reports every peer whose figures differ from the last report, and
    /// forgets peers the table no longer has.
    fn report(&mut self, now: Instant, wall_ms: u64, tunnel: &Tunnel) {
        self.report_now = false;
        self.next_report = now + STATS_INTERVAL;
        let mut changed = Vec::new();
        for key in tunnel.peer_keys() {
            let Some(stats) = tunnel.peer_stats(key) else {
                continue;
            };
            let mut figures = Reported::from(&stats);
            if let Some(rtt) = self.ping_rtt.get(key) {
                figures.rtt = Some(*rtt);
            }
            figures.relay = self.relays.get(key).cloned();
            figures.no_path = self.no_path.contains(key);
            let previous = self.reported.get(key);
            figures.last_handshake_ms = match previous {
                Some(p) if p.last_handshake == figures.last_handshake => p.last_handshake_ms,
                _ => figures
                    .last_handshake
                    .map(|at| wall_ms_of(at, now, wall_ms)),
            };
            if previous == Some(&figures) {
                continue;
            }
            changed.push(PeerReport {
                key: *key,
                last_handshake_ms: figures.last_handshake_ms,
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
                rtt_us: figures.rtt.map(|d| d.as_micros() as u64),
                endpoint: stats.endpoint,
                relay: figures.relay.clone(),
                no_path: figures.no_path,
            });
            self.reported.insert(*key, figures);
        }
        if self.reported.len() > tunnel.peer_count() {
            self.reported
                .retain(|key, _| tunnel.peer_stats(key).is_some());
            self.ping_rtt
                .retain(|key, _| tunnel.peer_stats(key).is_some());
            self.relays
                .retain(|key, _| tunnel.peer_stats(key).is_some());
            self.no_path.retain(|key| tunnel.peer_stats(key).is_some());
        }
        if changed.is_empty() {
            return;
        }
        let report = Report::Stats {
            generation: self.generation,
            peers: changed,
        };
        if self.reports.send(report).is_err() {
            tracing::debug!("the engine stopped listening for tunnel statistics");
        }
    }

    /// Handles a [`LoopRequest`]; a ping may return a datagram to send.
    pub fn probe<'a>(
        &mut self,
        now: Instant,
        probe: LoopRequest,
        tunnel: &mut Tunnel,
        out: &'a mut [u8],
    ) -> Option<Transmit<'a>> {
        match probe {
            LoopRequest::Ping(req) => self.ping(now, req, tunnel, out),
            LoopRequest::Report => {
                // Sent by the loop's next flush, with everything else moved.
                self.report_now = true;
                None
            }
        }
    }

    /// Encapsulates an echo request to `req.dst` into `out`. Returns the
    /// datagram to send, if the tunnel has a session (otherwise the tunnel
    /// queued it behind a handshake, which the loop's next flush sends).
    pub fn ping<'a>(
        &mut self,
        now: Instant,
        req: PingRequest,
        tunnel: &mut Tunnel,
        out: &'a mut [u8],
    ) -> Option<Transmit<'a>> {
        if self.pending.len() >= MAX_PENDING_PINGS {
            let _ = req.reply.send(Err(PingError::Busy));
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut packet = [0u8; 40 + 8 + PING_PAYLOAD.len()];
        let len = match (req.dst, self.v4, self.v6) {
            (IpAddr::V4(dst), Some(src), _) => echo_v4(&mut packet, src, dst, self.ident, seq),
            (IpAddr::V6(dst), _, Some(src)) => echo_v6(&mut packet, src, dst, self.ident, seq),
            (IpAddr::V4(_), None, _) => {
                let _ = req.reply.send(Err(PingError::NoSource("IPv4")));
                return None;
            }
            (IpAddr::V6(_), _, None) => {
                let _ = req.reply.send(Err(PingError::NoSource("IPv6")));
                return None;
            }
        };
        match tunnel.encapsulate(now, &packet[..len], out) {
            Ok(transmit) => {
                self.pending.push(Pending {
                    dst: req.dst,
                    seq,
                    sent: now,
                    deadline: now + req.timeout,
                    reply: req.reply,
                });
                transmit
            }
            Err(reason) => {
                let _ = req.reply.send(Err(PingError::Dropped(reason)));
                None
            }
        }
    }

    /// Whether `packet` (decrypted, from the tunnel) answers one of our
    /// pings; if so it is consumed here and must not reach the TUN.
    pub fn intercept(&mut self, now: Instant, packet: &[u8], tunnel: &Tunnel) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let Some((src, ident, seq)) = parse_echo_reply(packet) else {
            return false;
        };
        if ident != self.ident {
            return false;
        }
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.seq == seq && p.dst == src)
        else {
            // A late or duplicated reply to one of ours: still ours, not the
            // kernel's.
            return true;
        };
        let p = self.pending.swap_remove(i);
        let rtt = now.saturating_duration_since(p.sent);
        let key = tunnel.route(src);
        let endpoint = key
            .and_then(|key| tunnel.peer_stats(&key))
            .and_then(|s| s.endpoint);
        if let Some(key) = key {
            self.ping_rtt.insert(key, rtt);
            // Fresh figures for everyone watching, while someone cares.
            self.report_now = true;
        }
        let _ = p.reply.send(Ok(PingOutcome { rtt, endpoint }));
        true
    }

    /// Pings still waiting (for tests and the shutdown path).
    pub fn pending_pings(&self) -> usize {
        self.pending.len()
    }
}

/// The Internet checksum (RFC 1071) of `data`, starting from `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn icmp_echo(buf: &mut [u8], kind: u8, ident: u16, seq: u16) -> usize {
    buf[0] = kind;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&[0, 0]);
    buf[4..6].copy_from_slice(&ident.to_be_bytes());
    buf[6..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..8 + PING_PAYLOAD.len()].copy_from_slice(PING_PAYLOAD);
    8 + PING_PAYLOAD.len()
}

/// An IPv4 ICMP echo request; returns its length.
fn echo_v4(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16) -> usize {
    let icmp_len = icmp_echo(&mut buf[20..], 8, ident, seq);
    let icmp_sum = checksum(0, &buf[20..20 + icmp_len]);
    buf[22..24].copy_from_slice(&icmp_sum.to_be_bytes());
    let total = 20 + icmp_len;
    let header = &mut buf[..20];
    header[0] = 0x45;
    header[1] = 0;
    header[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    header[4..8].copy_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
    header[8] = 64;
    header[9] = 1; // ICMP
    header[10..12].copy_from_slice(&[0, 0]);
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(0, header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    total
}

/// The ICMPv6 checksum's pseudo-header sum (RFC 8200 §8.1).
fn pseudo_v6(src: &Ipv6Addr, dst: &Ipv6Addr, len: usize) -> u32 {
    let mut sum = 0u32;
    for addr in [src.octets(), dst.octets()] {
        for c in addr.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
    }
    sum + len as u32 + 58
}

/// An IPv6 ICMPv6 echo request; returns its length.
fn echo_v6(buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, ident: u16, seq: u16) -> usize {
    let icmp_len = icmp_echo(&mut buf[40..], 128, ident, seq);
    let sum = checksum(pseudo_v6(&src, &dst, icmp_len), &buf[40..40 + icmp_len]);
    buf[42..44].copy_from_slice(&sum.to_be_bytes());
    let header = &mut buf[..40];
    header[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    header[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    header[6] = 58; // ICMPv6
    header[7] = 64;
    header[8..24].copy_from_slice(&src.octets());
    header[24..40].copy_from_slice(&dst.octets());
    40 + icmp_len
}

/// `(source, identifier, sequence)` of an ICMP / ICMPv6 echo reply without
/// IPv6 extension headers (which ours never get).
fn parse_echo_reply(packet: &[u8]) -> Option<(IpAddr, u16, u16)> {
    let first = *packet.first()?;
    let (src, icmp) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if packet.len() < ihl + 8 || ihl < 20 || packet[9] != 1 {
                return None;
            }
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let icmp = &packet[ihl..];
            if icmp[0] != 0 {
                return None;
            }
            (IpAddr::V4(Ipv4Addr::from(src)), icmp)
        }
        6 => {
            if packet.len() < 48 || packet[6] != 58 {
                return None;
            }
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let icmp = &packet[40..];
            if icmp[0] != 129 {
                return None;
            }
            (IpAddr::V6(Ipv6Addr::from(src)), icmp)
        }
        _ => return None,
    };
    let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((src, ident, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_tunnel::{min_out_len, PeerConfig, StaticSecret};

    /// The reply a peer's stack would send to `request`.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let mut r = request.to_vec();
        match r[0] >> 4 {
            4 => {
                let (src, dst) = (r[12..16].to_vec(), r[16..20].to_vec());
                r[12..16].copy_from_slice(&dst);
                r[16..20].copy_from_slice(&src);
                r[20] = 0;
                r[22..24].copy_from_slice(&[0, 0]);
                let sum = checksum(0, &r[20..]);
                r[22..24].copy_from_slice(&sum.to_be_bytes());
            }
            _ => {
                let (src, dst) = (r[8..24].to_vec(), r[24..40].to_vec());
                r[8..24].copy_from_slice(&dst);
                r[24..40].copy_from_slice(&src);
                r[40] = 129;
            }
        }
        r
    }

    fn key(n: u8) -> (StaticSecret, PeerKey) {
        let secret = StaticSecret::from([n; 32]);
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([n; 32]));
        (secret, public.to_bytes())
    }

    /// Two tunnels joined in memory: ours (the laptop) and an agent.
    struct Pair {
        laptop: Tunnel,
        agent: Tunnel,
        agent_key: PeerKey,
    }

    const LAPTOP: &str = "100.64.0.1";
    const AGENT: &str = "100.64.0.2";
    const LAPTOP6: &str = "fd00::1";
    const AGENT6: &str = "fd00::2";
    const LAPTOP_UDP: &str = "10.0.0.1:1000";
    const AGENT_UDP: &str = "10.0.0.2:2000";

    fn pair(now: Instant) -> Pair {
        let (ls, lp) = key(1);
        let (as_, ap) = key(2);
        let mut laptop = Tunnel::new(ls);
        let mut agent = Tunnel::new(as_);
        laptop.set_local_addresses([LAPTOP.parse().unwrap(), LAPTOP6.parse().unwrap()]);
        agent.set_local_addresses([AGENT.parse().unwrap(), AGENT6.parse().unwrap()]);
        laptop
            .upsert_peer(
                now,
                PeerConfig {
                    public_key: ap,
                    addresses: vec![AGENT.parse().unwrap(), AGENT6.parse().unwrap()],
                    endpoint: Some(AGENT_UDP.parse().unwrap()),
                    persistent_keepalive: None,
                    candidates: Vec::new(),
                },
            )
            .unwrap();
        agent
            .upsert_peer(
                now,
                PeerConfig {
                    public_key: lp,
                    addresses: vec![LAPTOP.parse().unwrap(), LAPTOP6.parse().unwrap()],
                    endpoint: None,
                    persistent_keepalive: None,
                    candidates: Vec::new(),
                },
            )
            .unwrap();
        Pair {
            laptop,
            agent,
            agent_key: ap,
        }
    }

    /// Moves every queued datagram across until both sides are quiet;
    /// returns the packets the agent's side decrypted.
    fn shuttle(p: &mut Pair, now: Instant) -> Vec<Vec<u8>> {
        let mut delivered = Vec::new();
        let mut buf = vec![0u8; min_out_len(2048)];
        for _ in 0..20 {
            let mut moved = false;
            while let Some(t) = p.laptop.poll_transmit() {
                moved = true;
                if let Ok(Some(packet)) =
                    p.agent
                        .decapsulate(now, LAPTOP_UDP.parse().unwrap(), &t.payload, &mut buf)
                {
                    delivered.push(packet.to_vec());
                }
            }
            while let Some(t) = p.agent.poll_transmit() {
                moved = true;
                let _ = p
                    .laptop
                    .decapsulate(now, AGENT_UDP.parse().unwrap(), &t.payload, &mut buf);
            }
            if !moved {
                break;
            }
        }
        delivered
    }

    fn observer(now: Instant) -> (Observer, ReportReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let addrs = [LAPTOP.parse().unwrap(), LAPTOP6.parse().unwrap()];
        (Observer::new(now, &addrs, tx, 0x5752, 3), rx)
    }

    #[test]
    fn echo_requests_are_valid_and_replies_parse() {
        let mut buf = [0u8; 64];
        let n = echo_v4(
            &mut buf,
            LAPTOP.parse().unwrap(),
            AGENT.parse().unwrap(),
            7,
            9,
        );
        assert_eq!(n, 20 + 8 + 16);
        assert_eq!(checksum(0, &buf[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum(0, &buf[20..n]), 0, "ICMP checksum");
        assert_eq!(parse_echo_reply(&buf[..n]), None, "a request is no reply");
        let reply = reply_to(&buf[..n]);
        assert_eq!(
            parse_echo_reply(&reply),
            Some((AGENT.parse().unwrap(), 7, 9))
        );

        let (src, dst): (Ipv6Addr, Ipv6Addr) = (LAPTOP6.parse().unwrap(), AGENT6.parse().unwrap());
        let n = echo_v6(&mut buf, src, dst, 7, 10);
        assert_eq!(n, 40 + 8 + 16);
        assert_eq!(
            checksum(pseudo_v6(&src, &dst, n - 40), &buf[40..n]),
            0,
            "ICMPv6 checksum"
        );
        let reply = reply_to(&buf[..n]);
        assert_eq!(
            parse_echo_reply(&reply),
            Some((AGENT6.parse().unwrap(), 7, 10))
        );
        // Truncated or foreign packets are not replies.
        assert_eq!(parse_echo_reply(&reply[..30]), None);
        assert_eq!(parse_echo_reply(&[]), None);
        assert_eq!(parse_echo_reply(&[0x45; 19]), None);
    }

    #[test]
    fn ping_round_trip_is_timed_and_the_reply_is_consumed() {
        let t0 = Instant::now();
        let mut p = pair(t0);
        let (mut obs, mut stats) = observer(t0);
        let mut out = vec![0u8; min_out_len(2048)];
        for (dst, expect_src) in [(AGENT, AGENT), (AGENT6, AGENT6)] {
            let (tx, mut rx) = oneshot::channel();
            let req = PingRequest {
                dst: dst.parse().unwrap(),
                timeout: Duration::from_secs(2),
                reply: tx,
            };
            // Before the first handshake the request waits in the tunnel.
            if let Some(t) = obs.ping(t0, req, &mut p.laptop, &mut out) {
                let payload = t.payload.to_vec();
                let mut buf = vec![0u8; min_out_len(2048)];
                let got = p
                    .agent
                    .decapsulate(t0, LAPTOP_UDP.parse().unwrap(), &payload, &mut buf)
                    .unwrap()
                    .map(|x| x.to_vec());
                let request = got.expect("the agent decrypts the echo request");
                deliver_reply(&mut p, &mut obs, t0, &request);
            } else {
                let delivered = shuttle(&mut p, t0);
                let request = delivered
                    .last()
                    .expect("the request arrives after the handshake");
                deliver_reply(&mut p, &mut obs, t0 + Duration::from_millis(3), request);
            }
            let outcome = rx.try_recv().expect("answered").expect("a reply");
            assert!(outcome.rtt <= Duration::from_millis(3));
            assert_eq!(outcome.endpoint, Some(AGENT_UDP.parse().unwrap()));
            assert_eq!(obs.pending_pings(), 0, "{expect_src}");
            // The ping's round trip becomes the peer's reported RTT, at once.
            obs.flush(t0, 0, &p.laptop);
            let mut last = None;
            while let Ok(report) = stats.try_recv() {
                last = Some(report);
            }
            let report = stats_of(last.expect("a report after the reply"));
            assert_eq!(
                report[0].rtt_us,
                Some(outcome.rtt.as_micros() as u64),
                "{expect_src}"
            );
        }
    }

    fn deliver_reply(p: &mut Pair, obs: &mut Observer, now: Instant, request: &[u8]) {
        let reply = reply_to(request);
        let mut out = vec![0u8; min_out_len(2048)];
        let mut buf = vec![0u8; min_out_len(2048)];
        let t = p
            .agent
            .encapsulate(now, &reply, &mut out)
            .unwrap()
            .expect("the agent has a session");
        let datagram = t.payload.to_vec();
        let packet = p
            .laptop
            .decapsulate(now, AGENT_UDP.parse().unwrap(), &datagram, &mut buf)
            .unwrap()
            .expect("the laptop decrypts the reply")
            .to_vec();
        assert!(obs.intercept(now, &packet, &p.laptop), "reply not consumed");
    }

    #[test]
    fn unanswered_pings_time_out_and_foreign_replies_pass_through() {
        let t0 = Instant::now();
        let mut p = pair(t0);
        let (mut obs, _stats) = observer(t0);
        let mut out = vec![0u8; min_out_len(2048)];
        let (tx, mut rx) = oneshot::channel();
        obs.ping(
            t0,
            PingRequest {
                dst: AGENT.parse().unwrap(),
                timeout: Duration::from_millis(500),
                reply: tx,
            },
            &mut p.laptop,
            &mut out,
        );
        assert_eq!(obs.poll_timeout(), t0 + Duration::from_millis(500));
        // Someone else's echo reply (another identifier) is the kernel's.
        let mut buf = [0u8; 64];
        let n = echo_v4(
            &mut buf,
            AGENT.parse().unwrap(),
            LAPTOP.parse().unwrap(),
            1,
            0,
        );
        let mut foreign = buf[..n].to_vec();
        foreign[20] = 0;
        assert!(!obs.intercept(t0, &foreign, &p.laptop));
        obs.handle_timeout(t0 + Duration::from_millis(499), 0, &p.laptop);
        assert!(rx.try_recv().is_err(), "answered early");
        obs.handle_timeout(t0 + Duration::from_millis(500), 0, &p.laptop);
        assert_eq!(
            rx.try_recv().unwrap(),
            Err(PingError::Timeout(Duration::from_millis(500)))
        );
        assert_eq!(obs.pending_pings(), 0);
        assert_eq!(obs.poll_timeout(), t0 + STATS_INTERVAL);
    }

    #[test]
    fn pings_without_a_source_address_or_a_route_fail_at_once() {
        let t0 = Instant::now();
        let mut p = pair(t0);
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut obs = Observer::new(t0, &[LAPTOP.parse().unwrap()], tx, 1, 1);
        let mut out = vec![0u8; min_out_len(2048)];
        let (reply, mut rx) = oneshot::channel();
        obs.ping(
            t0,
            PingRequest {
                dst: AGENT6.parse().unwrap(),
                timeout: Duration::from_secs(1),
                reply,
            },
            &mut p.laptop,
            &mut out,
        );
        assert_eq!(rx.try_recv().unwrap(), Err(PingError::NoSource("IPv6")));
        let (reply, mut rx) = oneshot::channel();
        obs.ping(
            t0,
            PingRequest {
                dst: "100.64.9.9".parse().unwrap(),
                timeout: Duration::from_secs(1),
                reply,
            },
            &mut p.laptop,
            &mut out,
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            Err(PingError::Dropped(DropReason::UnknownDestination))
        );
        assert_eq!(obs.pending_pings(), 0);
    }

    fn stats_of(report: Report) -> Vec<PeerReport> {
        match report {
            Report::Stats { generation, peers } => {
                assert_eq!(generation, 3, "figures carry the tunnel's generation");
                peers
            }
            other => panic!("expected stats, got {other:?}"),
        }
    }

    #[test]
    fn stats_are_reported_on_handshake_and_then_only_when_they_move() {
        let t0 = Instant::now();
        let mut p = pair(t0);
        let (mut obs, mut stats) = observer(t0);
        let wall0 = 1_700_000_000_000u64;
        let mut out = vec![0u8; min_out_len(2048)];
        // Nothing has happened yet: the first report just lists the peer.
        obs.handle_timeout(t0 + STATS_INTERVAL, wall0, &p.laptop);
        let first = stats_of(
            stats
                .try_recv()
                .expect("the first report lists the new peer"),
        );
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].last_handshake_ms, None);
        obs.handle_timeout(t0 + 2 * STATS_INTERVAL, wall0, &p.laptop);
        assert!(
            stats.try_recv().is_err(),
            "unchanged figures were reported again"
        );

        // Traffic causes a handshake: reported at once, not after 10 s.
        let mut packet = [0u8; 64];
        let n = echo_v4(
            &mut packet,
            LAPTOP.parse().unwrap(),
            AGENT.parse().unwrap(),
            3,
            3,
        );
        let t1 = t0 + Duration::from_secs(21);
        let _ = p.laptop.encapsulate(t1, &packet[..n], &mut out);
        shuttle(&mut p, t1);
        while let Some(e) = p.laptop.poll_event() {
            obs.on_event(&e);
        }
        obs.flush(t1, wall0 + 21_000, &p.laptop);
        let report = stats_of(stats.try_recv().expect("a handshake is reported at once"));
        assert_eq!(report[0].key, p.agent_key);
        let at = report[0].last_handshake_ms.expect("handshake time");
        assert!((wall0 + 20_000..=wall0 + 21_000).contains(&at), "{at}");
        assert!(report[0].tx_bytes > 0);
        assert_eq!(report[0].endpoint, Some(AGENT_UDP.parse().unwrap()));
        // No event, no change: nothing more.
        obs.flush(t1, wall0 + 21_000, &p.laptop);
        assert!(stats.try_recv().is_err());
        // Moved bytes are reported later; the handshake time stays exactly
        // the same even if the wall clock reads a millisecond differently.
        let t2 = t1 + Duration::from_secs(3);
        let _ = p.laptop.encapsulate(t2, &packet[..n], &mut out);
        obs.handle_timeout(t1 + STATS_INTERVAL, wall0 + 21_000 + 10_001, &p.laptop);
        let later = stats_of(stats.try_recv().expect("moved bytes are reported"));
        assert_eq!(later[0].last_handshake_ms, Some(at));
        assert!(later[0].tx_bytes > report[0].tx_bytes);
    }
}
