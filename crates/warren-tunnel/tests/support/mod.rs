//! Test harness shared by the crate's tests and the simulated-time tests in
//! `simtests/`: several `Tunnel`s wired through a simulated UDP network with a
//! simulated clock. The clock hook lets `simtests` move boringtun's mock clock
//! in lockstep with the `now` handed to the tables.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use warren_tunnel::{
    min_out_len, DropReason, PeerConfig, PeerKey, StaticSecret, Tunnel, TunnelEvent,
};

/// Bound on datagrams delivered by one `deliver_all`, so a ping-pong bug fails
/// the test instead of hanging it.
const MAX_DELIVERIES: usize = 100_000;
/// Bound on timer wake-ups handled by one `advance`.
const MAX_WAKEUPS: usize = 100_000;

/// A datagram on the simulated wire.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

impl Datagram {
    pub fn kind(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }
}

/// One device: a table, its UDP address and its tunnel address.
pub struct Node {
    pub tunnel: Tunnel,
    pub udp: SocketAddr,
    pub ip: IpAddr,
    /// Packets the table handed to the TUN.
    pub delivered: Vec<Vec<u8>>,
    pub events: Vec<(Duration, TunnelEvent)>,
    /// Drops reported by `decapsulate`.
    pub rx_drops: Vec<DropReason>,
    /// Times `handle_timeout` was called because its deadline passed.
    pub wakeups: usize,
}

/// The simulated network.
pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub wire: VecDeque<Datagram>,
    /// Every datagram that was put on the wire, for replay and inspection.
    pub log: Vec<(Duration, Datagram)>,
    /// Datagrams to these addresses vanish (an unreachable peer).
    pub blackholes: Vec<SocketAddr>,
    clock_hook: fn(Duration),
    buf: Vec<u8>,
}

pub fn v4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(100, 64, 0, n))
}

pub fn v6(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0, 0, 0, n))
}

pub fn udp(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), port)
}

/// A minimal IP packet (header with the right length field, then `payload`).
/// Checksums are not filled in: nothing on this path checks them.
pub fn ip_packet(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + payload.len();
            let mut p = vec![0u8; total];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p[20..].copy_from_slice(payload);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40 + payload.len()];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p[40..].copy_from_slice(payload);
            p
        }
        _ => panic!("mixed address families"),
    }
}

impl Net {
    /// A network with no nodes; `clock_hook` is called with every time step.
    pub fn new(clock_hook: fn(Duration)) -> Self {
        let start = Instant::now();
        Net {
            start,
            now: start,
            nodes: Vec::new(),
            wire: VecDeque::new(),
            log: Vec::new(),
            blackholes: Vec::new(),
            clock_hook,
            buf: vec![0; 70_000],
        }
    }

    /// Adds a node with a fresh key, whose table owns `ip`.
    pub fn add_node(&mut self, udp: SocketAddr, ip: IpAddr) -> usize {
        let mut tunnel = Tunnel::new(StaticSecret::random());
        tunnel.set_local_addresses([ip]);
        self.nodes.push(Node {
            tunnel,
            udp,
            ip,
            delivered: Vec::new(),
            events: Vec::new(),
            rx_drops: Vec::new(),
            wakeups: 0,
        });
        self.nodes.len() - 1
    }

    pub fn key(&self, i: usize) -> PeerKey {
        self.nodes[i].tunnel.public_key()
    }

    /// Makes `j` a peer of `i`, with `j`'s endpoint if `with_endpoint`.
    pub fn connect(&mut self, i: usize, j: usize, with_endpoint: bool) {
        let cfg = PeerConfig {
            public_key: self.key(j),
            addresses: vec![self.nodes[j].ip],
            endpoint: with_endpoint.then_some(self.nodes[j].udp),
            persistent_keepalive: None,
            candidates: Vec::new(),
        };
        let now = self.now;
        self.nodes[i]
            .tunnel
            .upsert_peer(now, cfg)
            .expect("valid peer config");
    }

    /// A helper (node 0, knows endpoints) and an agent (node 1, learns them).
    pub fn pair(clock_hook: fn(Duration)) -> Self {
        let mut net = Net::new(clock_hook);
        let a = net.add_node(udp(1, 51820), v4(1));
        let b = net.add_node(udp(2, 51820), v4(2));
        net.connect(a, b, true);
        net.connect(b, a, false);
        net
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Node `i` sends an IP packet to `dst` carrying `payload`.
    pub fn send_to(&mut self, i: usize, dst: IpAddr, payload: &[u8]) -> Result<bool, DropReason> {
        let packet = ip_packet(self.nodes[i].ip, dst, payload);
        self.send_raw(i, &packet)
    }

    /// Node `i` sends a packet to node `j`'s tunnel address.
    pub fn send(&mut self, i: usize, j: usize, payload: &[u8]) -> Result<bool, DropReason> {
        let dst = self.nodes[j].ip;
        self.send_to(i, dst, payload)
    }

    /// Hands `packet` to node `i`'s table as if read from its TUN. `Ok(true)`
    /// if it went straight onto the wire.
    pub fn send_raw(&mut self, i: usize, packet: &[u8]) -> Result<bool, DropReason> {
        let now = self.now;
        let from = self.nodes[i].udp;
        let mut buf = std::mem::take(&mut self.buf);
        assert!(buf.len() >= min_out_len(packet.len()));
        let result = self.nodes[i].tunnel.encapsulate(now, packet, &mut buf);
        let sent = match result {
            Ok(Some(t)) => {
                let d = Datagram {
                    from,
                    to: t.dst,
                    payload: t.payload.to_vec(),
                };
                self.put(d);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        self.buf = buf;
        self.drain(i);
        sent
    }

    fn put(&mut self, d: Datagram) {
        self.log.push((self.elapsed(), d.clone()));
        self.wire.push_back(d);
    }

    /// Moves node `i`'s queued transmits to the wire and records its events.
    pub fn drain(&mut self, i: usize) {
        let from = self.nodes[i].udp;
        while let Some(t) = self.nodes[i].tunnel.poll_transmit() {
            self.put(Datagram {
                from,
                to: t.dst,
                payload: t.payload,
            });
        }
        let at = self.elapsed();
        while let Some(e) = self.nodes[i].tunnel.poll_event() {
            self.nodes[i].events.push((at, e));
        }
    }

    /// Delivers one datagram to whichever node has the destination address.
    /// Returns what the receiving table said.
    pub fn inject(&mut self, d: Datagram) -> Option<Result<Option<Vec<u8>>, DropReason>> {
        if self.blackholes.contains(&d.to) {
            return None;
        }
        let j = self.nodes.iter().position(|n| n.udp == d.to)?;
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.nodes[j]
            .tunnel
            .decapsulate(now, d.from, &d.payload, &mut buf)
            .map(|p| p.map(|p| p.to_vec()));
        self.buf = buf;
        match &result {
            Ok(Some(p)) => self.nodes[j].delivered.push(p.clone()),
            Ok(None) => {}
            Err(e) => self.nodes[j].rx_drops.push(*e),
        }
        self.drain(j);
        Some(result)
    }

    /// Delivers everything on the wire, including replies, until it is quiet.
    pub fn deliver_all(&mut self) {
        for _ in 0..MAX_DELIVERIES {
            let Some(d) = self.wire.pop_front() else {
                return;
            };
            self.inject(d);
        }
        panic!("the network never went quiet");
    }

    /// The earliest deadline over all nodes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| n.tunnel.poll_timeout())
            .min()
    }

    fn step_to(&mut self, t: Instant) {
        if t > self.now {
            (self.clock_hook)(t - self.now);
            self.now = t;
        }
    }

    /// Lets `d` of simulated time pass, waking tables at their deadlines
    /// (only then) and delivering what they send.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..MAX_WAKEUPS {
            self.deliver_all();
            match self.next_deadline() {
                Some(at) if at <= target => {
                    self.step_to(at);
                    let now = self.now;
                    for i in 0..self.nodes.len() {
                        if self.nodes[i]
                            .tunnel
                            .poll_timeout()
                            .is_some_and(|t| t <= now)
                        {
                            self.nodes[i].wakeups += 1;
                            self.nodes[i].tunnel.handle_timeout(now);
                            self.drain(i);
                        }
                    }
                }
                _ => {
                    self.step_to(target);
                    self.deliver_all();
                    return;
                }
            }
        }
        panic!("more than {MAX_WAKEUPS} timer wake-ups in one advance");
    }

    /// Handshake-completed events of node `i`.
    pub fn handshakes(&self, i: usize) -> Vec<(Duration, bool)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(at, e)| match e {
                TunnelEvent::HandshakeCompleted { initiator, .. } => Some((*at, *initiator)),
                _ => None,
            })
            .collect()
    }

    /// Payloads (after the IP header) node `i` received.
    pub fn payloads(&self, i: usize) -> Vec<Vec<u8>> {
        self.nodes[i]
            .delivered
            .iter()
            .map(|p| {
                let header = if p[0] >> 4 == 4 { 20 } else { 40 };
                p[header..].to_vec()
            })
            .collect()
    }

    /// Datagrams on the log of a WireGuard message type, sent by `from`.
    pub fn sent_of_kind(&self, from: SocketAddr, kind: u8) -> Vec<(Duration, Datagram)> {
        self.log
            .iter()
            .filter(|(_, d)| d.from == from && d.kind() == kind)
            .cloned()
            .collect()
    }
}

/// Clock hook for tests that run on boringtun's real clock.
pub fn no_clock(_: Duration) {}
