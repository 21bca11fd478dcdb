//! Fuzz target: WireGuard datagrams from the network into the peer table
//! (`warren_tunnel::Tunnel`), packets from the TUN out through it, and, once
//! a real handshake with one peer has been made, arbitrary inner packets
//! encrypted by that peer (what a hostile agent can send through the tunnel).
//!
//! The input is one flags byte (bit 0: make the handshake first), then
//! operations `[op][len: u16 BE][bytes]`. Nothing may panic; only a peer's
//! own tunnel addresses come out of the tunnel as a packet's source (no
//! spoofing another agent or the LAN), and only ours as its destination (no
//! routing through this machine); datagrams go only to a configured
//! endpoint or back to the address a datagram came from (a cookie reply).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use warren_tunnel::{PeerConfig, PeerKey, StaticSecret, Tunnel, MIN_BUFFER};
use x25519_dalek::PublicKey;

const OURS: [u8; 32] = [1; 32];
const AGENT: [u8; 32] = [2; 32];

fn public(secret: [u8; 32]) -> PeerKey {
    PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes()
}

fn our_addresses() -> Vec<IpAddr> {
    vec![
        Ipv4Addr::new(100, 64, 0, 7).into(),
        "fd00::7".parse().unwrap(),
    ]
}

fn our_endpoint() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 51820))
}

/// The peers our table holds: the agent we can handshake with, one with a
/// key nobody holds, and one with no endpoint yet.
fn peers() -> Vec<PeerConfig> {
    let agent_addrs: Vec<IpAddr> = vec![
        Ipv4Addr::new(100, 64, 1, 2).into(),
        "fd00::1:2".parse::<Ipv6Addr>().unwrap().into(),
    ];
    vec![
        PeerConfig {
            public_key: public(AGENT),
            addresses: agent_addrs,
            endpoint: Some(SocketAddr::from(([192, 0, 2, 2], 51820))),
            persistent_keepalive: Some(25),
            candidates: vec![SocketAddr::from(([192, 0, 2, 2], 51820))],
        },
        PeerConfig {
            public_key: public([4; 32]),
            addresses: vec![Ipv4Addr::new(100, 64, 1, 3).into()],
            endpoint: Some(SocketAddr::from(([192, 0, 2, 3], 51820))),
            persistent_keepalive: None,
            candidates: vec![],
        },
        PeerConfig {
            public_key: public([5; 32]),
            addresses: vec!["fd00::1:4".parse::<Ipv6Addr>().unwrap().into()],
            endpoint: None,
            persistent_keepalive: None,
            candidates: vec![],
        },
    ]
}

struct Lab {
    now: Instant,
    ours: Tunnel,
    agent: Tunnel,
    configured: Vec<PeerConfig>,
    buf: Vec<u8>,
    agent_buf: Vec<u8>,
}

impl Lab {
    fn new() -> Lab {
        let now = Instant::now();
        let mut ours = Tunnel::new(StaticSecret::from(OURS));
        ours.set_local_addresses(our_addresses());
        let configured = peers();
        ours.set_peers(now, configured.clone())
            .expect("valid peers");
        let mut agent = Tunnel::new(StaticSecret::from(AGENT));
        agent
            .upsert_peer(
                now,
                PeerConfig {
                    public_key: public(OURS),
                    addresses: our_addresses(),
                    endpoint: Some(our_endpoint()),
                    persistent_keepalive: None,
                    candidates: vec![],
                },
            )
            .expect("valid peer");
        Lab {
            now,
            ours,
            agent,
            configured,
            buf: vec![0; 65_535 + MIN_BUFFER],
            agent_buf: vec![0; 65_535 + MIN_BUFFER],
        }
    }

    fn agent_endpoint(&self) -> SocketAddr {
        self.configured[0].endpoint.expect("configured")
    }

    /// Our table's answer to one datagram from `from`, checked.
    fn deliver(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let packet = match self
            .ours
            .decapsulate(self.now, from, datagram, &mut self.buf)
        {
            Ok(Some(packet)) => packet.to_vec(),
            Ok(None) | Err(_) => return None,
        };
        // Only the agent has keys to make a session; its packets carry only
        // its own addresses as their source.
        let src = source(&packet).expect("a decapsulated packet has a source");
        assert!(
            self.configured[0].addresses.contains(&src),
            "a packet from {src} came out of the agent's session"
        );
        let dst = destination(&packet).expect("a decapsulated packet has a destination");
        assert!(
            our_addresses().contains(&dst),
            "a packet to {dst} came out of the tunnel"
        );
        Some(packet)
    }

    /// Everything our table wants to send goes to a configured endpoint, or
    /// back to `from` (a cookie reply); datagrams for the agent reach it.
    fn pump(&mut self, from: Option<SocketAddr>) {
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = self.ours.poll_transmit() {
                moved = true;
                let known = self
                    .configured
                    .iter()
                    .any(|p| p.endpoint == Some(t.dst) || p.candidates.contains(&t.dst));
                assert!(known || Some(t.dst) == from, "sent to {}", t.dst);
                if t.dst == self.agent_endpoint() {
                    let _ = self.agent.decapsulate(
                        self.now,
                        our_endpoint(),
                        &t.payload,
                        &mut self.agent_buf,
                    );
                }
            }
            while let Some(t) = self.agent.poll_transmit() {
                moved = true;
                let from = self.agent_endpoint();
                self.deliver(from, &t.payload);
            }
            if !moved {
                break;
            }
        }
    }

    /// The agent encrypts `packet` (addressed to us) and we decrypt it.
    fn through_agent(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let datagram = match self
            .agent
            .encapsulate(self.now, packet, &mut self.agent_buf)
        {
            Ok(Some(t)) => t.payload.to_vec(),
            Ok(None) | Err(_) => {
                self.pump(None);
                return None;
            }
        };
        let from = self.agent_endpoint();
        let out = self.deliver(from, &datagram);
        self.pump(None);
        out
    }

    fn handshake(&mut self) {
        let ping = ipv4_packet(
            &[],
            Ipv4Addr::new(100, 64, 1, 2),
            Ipv4Addr::new(100, 64, 0, 7),
        );
        let _ = self.through_agent(&ping);
        assert!(
            self.through_agent(&ping).is_some(),
            "the handshake with the agent completes"
        );
    }
}

/// An IPv4 packet of protocol 253 (experimental) carrying `payload`.
fn ipv4_packet(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let len = (20 + payload.len()).min(65_535);
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(&payload[..len - 20]);
    p
}

fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            Some(Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]).into())
        }
        6 if packet.len() >= 40 => {
            let b: [u8; 16] = packet[8..24].try_into().ok()?;
            Some(Ipv6Addr::from(b).into())
        }
        _ => None,
    }
}

fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            Some(Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]).into())
        }
        6 if packet.len() >= 40 => {
            let b: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(Ipv6Addr::from(b).into())
        }
        _ => None,
    }
}

/// Makes arbitrary bytes into a packet the agent will route to us: the
/// destination is our address, everything else (source, lengths, protocol,
/// payload) stays the fuzzer's.
fn aim_at_us(bytes: &[u8]) -> Vec<u8> {
    let mut p = bytes.to_vec();
    if p.first().is_some_and(|b| b >> 4 == 6) {
        p.resize(p.len().max(40), 0);
        p[24..40].copy_from_slice(&"fd00::7".parse::<Ipv6Addr>().unwrap().octets());
    } else {
        p.resize(p.len().max(20), 0);
        p[0] = 0x40 | (p[0] & 0x0f);
        p[16..20].copy_from_slice(&[100, 64, 0, 7]);
    }
    p
}

const FROM: [SocketAddr; 3] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 51820),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 51820),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), 4444),
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lab = Lab::new();
    if flags & 1 == 1 {
        lab.handshake();
    }
    for (op, bytes) in warren_fuzz::ops(rest) {
        match op % 4 {
            // A datagram from the network, from a peer's address or not.
            0 => {
                let from = FROM[usize::from(op >> 2) % FROM.len()];
                lab.deliver(from, bytes);
                lab.pump(Some(from));
            }
            // A packet from this machine's TUN.
            1 => {
                let now = lab.now;
                if let Ok(Some(t)) = lab.ours.encapsulate(now, bytes, &mut lab.buf) {
                    let dst = t.dst;
                    assert!(lab.configured.iter().any(|p| p.endpoint == Some(dst)));
                }
                lab.pump(None);
            }
            // Any packet the agent can encrypt: a hostile agent's traffic.
            2 => {
                let packet = aim_at_us(bytes);
                if let Some(out) = lab.through_agent(&packet) {
                    // The tunnel hands on what was sent, no more.
                    assert!(out.len() <= packet.len());
                }
            }
            // Time passes: timers, rekeys, expiry.
            _ => {
                let secs = u64::from(bytes.first().copied().unwrap_or(1));
                lab.now += Duration::from_secs(secs);
                let now = lab.now;
                lab.ours.handle_timeout(now);
                lab.agent.handle_timeout(now);
                lab.pump(None);
                while lab.ours.poll_event().is_some() {}
            }
        }
    }
});
