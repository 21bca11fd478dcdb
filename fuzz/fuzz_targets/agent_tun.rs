//! Fuzz target: IP packets from the tunnel into the agent's userspace TCP/IP
//! stack (smoltcp behind `WorkspaceStack`), i.e. whatever a signed-in device
//! sends once its datagrams decrypt, plus the agent's side of each accepted
//! connection (reads, writes, closes) and time passing.
//!
//! Operations are `[op][len: u16 BE][bytes]`; a packet whose op has bit 1
//! set gets correct IPv4/TCP/UDP/ICMP checksums first, so the fuzzer gets
//! past them into the TCP state machine. Nothing may panic; connections are
//! only ever accepted on allowed ports; the stack sends only to the device's
//! endpoint; memory stays bounded (connections and buffered bytes).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use warren_agent::dataplane::{StackConfig, StackEvent, WorkspaceStack};
use warren_tunnel::{PeerConfig, StaticSecret};
use x25519_dalek::PublicKey;

const ALLOWED: [u16; 2] = [22, 8080];
const DEVICE_ENDPOINT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 51820);

fn stack(now: Instant) -> WorkspaceStack {
    let mut stack = WorkspaceStack::new(
        now,
        StackConfig {
            private_key: StaticSecret::from([2; 32]),
            addresses: vec!["100.64.2.1".parse().unwrap(), "fd00::2:1".parse().unwrap()],
            allow_ports: ALLOWED.to_vec(),
        },
    )
    .expect("a valid stack");
    let device = PublicKey::from(&x25519_dalek::StaticSecret::from([1; 32])).to_bytes();
    stack
        .set_peers(
            now,
            [PeerConfig {
                public_key: device,
                addresses: vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
                endpoint: Some(DEVICE_ENDPOINT),
                persistent_keepalive: None,
                candidates: vec![DEVICE_ENDPOINT],
            }],
        )
        .expect("a valid peer");
    stack
}

/// One's-complement sum of `bytes` (RFC 1071), folded later.
fn sum(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Where the transport checksum sits for this protocol, if it has one.
fn checksum_at(proto: u8) -> Option<usize> {
    match proto {
        6 => Some(16),     // TCP
        17 => Some(6),     // UDP
        1 | 58 => Some(2), // ICMP, ICMPv6
        _ => None,
    }
}

/// Sets the header and transport checksums of an IPv4 or IPv6 packet in
/// place, leaving everything else (including wrong lengths) as it is.
fn fix_checksums(p: &mut [u8]) {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < 20 || ihl > p.len() {
                return;
            }
            p[10..12].fill(0);
            let c = fold(sum(0, &p[..ihl]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let total = usize::from(u16::from_be_bytes([p[2], p[3]])).clamp(ihl, p.len());
            let proto = p[9];
            let Some(at) = checksum_at(proto) else { return };
            let (hdr, rest) = p.split_at_mut(ihl);
            let seg = &mut rest[..total - ihl];
            if seg.len() < at + 2 {
                return;
            }
            seg[at..at + 2].fill(0);
            let pseudo = if proto == 1 {
                0
            } else {
                let mut acc = sum(0, &hdr[12..20]);
                acc += u32::from(proto) + seg.len() as u32;
                acc
            };
            let c = fold(sum(pseudo, seg));
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        Some(6) if p.len() >= 40 => {
            let proto = p[6];
            let Some(at) = checksum_at(proto) else { return };
            let payload = usize::from(u16::from_be_bytes([p[4], p[5]])).min(p.len() - 40);
            let (hdr, rest) = p.split_at_mut(40);
            let seg = &mut rest[..payload];
            if seg.len() < at + 2 {
                return;
            }
            seg[at..at + 2].fill(0);
            let mut acc = sum(0, &hdr[8..40]);
            acc += seg.len() as u32 + u32::from(proto);
            let c = fold(sum(acc, seg));
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut stack = stack(now);
    let mut conns = Vec::new();
    let mut buf = vec![0u8; 4096];
    for (op, bytes) in warren_fuzz::ops(data) {
        match op % 4 {
            0 | 1 => {
                let mut packet = bytes.to_vec();
                if op & 2 != 0 {
                    fix_checksums(&mut packet);
                }
                stack.fuzz_packet_from_tunnel(now, &packet);
            }
            // The workspace side of a connection: write, read, close, abort.
            2 => {
                if conns.is_empty() {
                    continue;
                }
                let conn = conns[usize::from(op >> 4) % conns.len()];
                match (op >> 2) & 3 {
                    0 => {
                        stack.send(conn, bytes);
                    }
                    1 => {
                        stack.recv(conn, &mut buf);
                    }
                    2 => stack.close(conn),
                    _ => stack.abort(conn),
                }
                stack.poll(now);
            }
            // Time passes.
            _ => {
                let ms = u64::from(u16::from_be_bytes([
                    bytes.first().copied().unwrap_or(0),
                    bytes.get(1).copied().unwrap_or(100),
                ]));
                now += Duration::from_millis(ms);
                stack.handle_timeout(now);
            }
        }
        while let Some(event) = stack.poll_event() {
            if let StackEvent::NewConnection { conn, port, .. } = event {
                assert!(ALLOWED.contains(&port), "accepted on port {port}");
                conns.push(conn);
            }
        }
        conns.retain(|c| {
            if stack.is_closed(*c) {
                stack.release(*c);
                false
            } else {
                true
            }
        });
        while let Some(t) = stack.poll_transmit() {
            assert_eq!(t.dst, DEVICE_ENDPOINT, "the agent sent elsewhere");
        }
        // Each input op opens at most one connection.
        assert!(stack.connection_count() <= warren_fuzz::MAX_OPS);
    }
});
