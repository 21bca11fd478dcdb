//! In-process micro-benchmark of the data path: encapsulate on one table and
//! decapsulate on another, 1280-byte packets, one core. Prints MB/s of inner
//! packets (and a JSON line in the bench format), next to the same loop on
//! two bare boringtun `Tunn`s, so the table's own cost shows; asserts nothing.
//!
//! Run with `cargo run --release -p warren-tunnel --example throughput [SECONDS]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use warren_tunnel::{min_out_len, PeerConfig, StaticSecret, Tunnel};

const PACKET: usize = 1280;

fn packet(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        unreachable!("the benchmark uses IPv4")
    };
    let mut p = vec![0xabu8; PACKET];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    p
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (a_ip, b_ip) = (
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)),
    );
    let a_udp = SocketAddr::from(([127, 0, 0, 1], 1));
    let b_udp = SocketAddr::from(([127, 0, 0, 2], 2));
    let mut a = Tunnel::generate();
    let mut b = Tunnel::generate();
    a.set_local_addresses([a_ip]);
    b.set_local_addresses([b_ip]);
    let now = Instant::now();
    let peer = |key, ip, udp| PeerConfig {
        public_key: key,
        addresses: vec![ip],
        endpoint: Some(udp),
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    a.upsert_peer(now, peer(b.public_key(), b_ip, b_udp))
        .expect("valid peer");
    b.upsert_peer(now, peer(a.public_key(), a_ip, a_udp))
        .expect("valid peer");

    // Handshake: run the message exchange to completion.
    let to_b = packet(a_ip, b_ip);
    let mut wire = vec![0u8; min_out_len(PACKET)];
    let mut tun = vec![0u8; min_out_len(PACKET)];
    let _ = a.encapsulate(now, &to_b, &mut wire);
    for _ in 0..10 {
        while let Some(t) = a.poll_transmit() {
            let _ = b.decapsulate(now, a_udp, &t.payload, &mut tun);
        }
        while let Some(t) = b.poll_transmit() {
            let _ = a.decapsulate(now, b_udp, &t.payload, &mut tun);
        }
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut packets = 0u64;
    loop {
        // One clock read per batch, as a driver reading a batch of packets does.
        let now = Instant::now();
        for _ in 0..1024 {
            let len = match a.encapsulate(now, &to_b, &mut wire) {
                Ok(Some(t)) => t.payload.len(),
                other => panic!("no session after the handshake: {other:?}"),
            };
            match b.decapsulate(now, a_udp, &wire[..len], &mut tun) {
                Ok(Some(p)) => assert_eq!(p.len(), PACKET),
                other => panic!("decapsulation failed: {other:?}"),
            }
            packets += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mb_s = packets as f64 * PACKET as f64 / elapsed / 1e6;
    let bare = bare_boringtun(&to_b, seconds);
    println!(
        "warren-tunnel encapsulate+decapsulate, {PACKET}-byte packets, one core: {packets} packets in {elapsed:.2} s = {mb_s:.0} MB/s ({:.2} Gbit/s)",
        mb_s * 8.0 / 1000.0
    );
    println!("bare boringtun Tunn pair, same loop: {bare:.0} MB/s");
    println!(
        "{{\"bench\": \"tunnel-core\", \"metric\": \"encap_decap_throughput\", \"value\": {mb_s:.1}, \"unit\": \"MB/s\", \"baseline\": \"boringtun-tunn\", \"baseline_value\": {bare:.1}, \"ratio\": {:.3}}}",
        mb_s / bare
    );
}

/// The same loop on two bare `Tunn`s (no routing, no timers), in MB/s.
fn bare_boringtun(packet: &[u8], seconds: u64) -> f64 {
    let (ka, kb) = (StaticSecret::random(), StaticSecret::random());
    let (pa, pb) = (
        boringtun::x25519::PublicKey::from(&ka),
        boringtun::x25519::PublicKey::from(&kb),
    );
    let mut a = Tunn::new(ka, pb, None, None, 1, None);
    let mut b = Tunn::new(kb, pa, None, None, 2, None);
    let mut wire = vec![0u8; min_out_len(PACKET)];
    let mut back = vec![0u8; min_out_len(PACKET)];
    let mut tun = vec![0u8; min_out_len(PACKET)];
    // Handshake: initiation, response, confirming keepalive.
    let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut wire, false) else {
        panic!("no initiation")
    };
    let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, init, &mut back) else {
        panic!("no response")
    };
    let TunnResult::WriteToNetwork(ka) = a.decapsulate(None, resp, &mut tun) else {
        panic!("no keepalive")
    };
    let _ = b.decapsulate(None, ka, &mut wire);

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut packets = 0u64;
    loop {
        for _ in 0..1024 {
            let TunnResult::WriteToNetwork(msg) = a.encapsulate(packet, &mut wire) else {
                panic!("no session")
            };
            let len = msg.len();
            match b.decapsulate(None, &wire[..len], &mut tun) {
                TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p.len(), PACKET),
                other => panic!("decapsulation failed: {other:?}"),
            }
            packets += 1;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    packets as f64 * PACKET as f64 / start.elapsed().as_secs_f64() / 1e6
}
