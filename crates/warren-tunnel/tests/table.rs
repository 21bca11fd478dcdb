//! Peer-table behaviour that needs no time travel: handshakes, queuing,
//! routing, drops and their counters, snapshots and keys. Runs on boringtun's
//! real clock; the simulated-time cases are in `simtests/`.

mod support;

use std::net::IpAddr;

use support::{ip_packet, no_clock, udp, v4, v6, Datagram, Net};
use warren_tunnel::{
    key_id, ConfigError, DropReason, PeerConfig, StaticSecret, Tunnel, TunnelEvent,
};

const MSG_INIT: u8 = 1;
const MSG_DATA: u8 = 4;

/// A pair that completed its first handshake.
fn connected() -> Net {
    let mut net = Net::pair(no_clock);
    assert_eq!(net.send(0, 1, b"hello"), Ok(false));
    net.deliver_all();
    net
}

#[test]
fn first_handshake_delivers_the_first_packet() {
    let mut net = Net::pair(no_clock);
    assert_eq!(
        net.send(0, 1, b"hello"),
        Ok(false),
        "queued until the handshake"
    );
    assert_eq!(net.wire.len(), 1);
    assert_eq!(net.wire[0].kind(), MSG_INIT);
    assert_eq!(net.wire[0].to, net.nodes[1].udp);
    net.deliver_all();

    assert_eq!(net.payloads(1), vec![b"hello".to_vec()]);
    assert_eq!(net.handshakes(0).len(), 1);
    assert!(net.handshakes(0)[0].1, "node 0 initiated");
    assert_eq!(net.handshakes(1).len(), 1);
    assert!(!net.handshakes(1)[0].1);

    let a = net.nodes[0].tunnel.peer_stats(&net.key(1)).unwrap();
    assert!(a.last_handshake.is_some());
    assert_eq!(a.tx_bytes, 25, "20-byte header + 5 bytes");
    assert_eq!(a.queued, 0);
    assert!(a.rtt.is_some(), "the initiator measures the handshake RTT");
    let b = net.nodes[1].tunnel.peer_stats(&net.key(0)).unwrap();
    assert_eq!(b.rx_bytes, 25);
    assert_eq!(
        b.endpoint,
        Some(net.nodes[0].udp),
        "the agent learned the helper's endpoint"
    );

    // Both directions now go straight onto the wire, no new handshake.
    assert_eq!(net.send(0, 1, b"two"), Ok(true));
    assert_eq!(net.send(1, 0, b"back"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(1).last().unwrap(), b"two");
    assert_eq!(net.payloads(0), vec![b"back".to_vec()]);
    assert_eq!(net.sent_of_kind(net.nodes[0].udp, MSG_INIT).len(), 1);
    assert_eq!(net.sent_of_kind(net.nodes[1].udp, MSG_INIT).len(), 0);
}

#[test]
fn packets_sent_before_the_handshake_arrive_after_it_in_order() {
    let mut net = Net::pair(no_clock);
    let sent: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    for p in &sent {
        assert_eq!(net.send(0, 1, p), Ok(false));
    }
    assert_eq!(
        net.sent_of_kind(net.nodes[0].udp, MSG_INIT).len(),
        1,
        "one initiation for the whole queue"
    );
    assert_eq!(
        net.nodes[0].tunnel.peer_stats(&net.key(1)).unwrap().queued,
        20
    );
    net.deliver_all();
    assert_eq!(net.payloads(1), sent);
    assert_eq!(
        net.nodes[0].tunnel.peer_stats(&net.key(1)).unwrap().queued,
        0
    );
}

#[test]
fn the_queue_is_bounded_and_drops_the_oldest() {
    let mut net = Net::pair(no_clock);
    let n = warren_tunnel::MAX_QUEUED_PER_PEER + 10;
    for i in 0..n {
        assert_eq!(net.send(0, 1, &(i as u32).to_be_bytes()), Ok(false));
    }
    assert_eq!(net.nodes[0].tunnel.counters().dropped_queue_full, 10);
    net.deliver_all();
    let got = net.payloads(1);
    assert_eq!(got.len(), warren_tunnel::MAX_QUEUED_PER_PEER);
    assert_eq!(got[0], 10u32.to_be_bytes().to_vec(), "the 10 oldest went");
    assert_eq!(
        got.last().unwrap(),
        &((n - 1) as u32).to_be_bytes().to_vec()
    );
}

#[test]
fn the_responder_can_queue_too() {
    // The agent speaks first to a client whose endpoint it was told.
    let mut net = Net::new(no_clock);
    let a = net.add_node(udp(1, 1000), v4(1));
    let b = net.add_node(udp(2, 2000), v4(2));
    net.connect(a, b, true);
    net.connect(b, a, true);
    assert_eq!(net.send(b, a, b"from agent"), Ok(false));
    net.deliver_all();
    assert_eq!(net.payloads(a), vec![b"from agent".to_vec()]);
    assert_eq!(net.send(a, b, b"reply"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(b), vec![b"reply".to_vec()]);
}

#[test]
fn ipv6_routes_work_like_ipv4() {
    let mut net = Net::new(no_clock);
    let a = net.add_node(udp(1, 1000), v6(1));
    let b = net.add_node(udp(2, 2000), v6(2));
    net.connect(a, b, true);
    net.connect(b, a, false);
    assert_eq!(net.send(a, b, b"six"), Ok(false));
    net.deliver_all();
    assert_eq!(net.payloads(b), vec![b"six".to_vec()]);
    assert_eq!(net.send(b, a, b"back"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(a), vec![b"back".to_vec()]);
}

#[test]
fn a_packet_to_an_unknown_address_is_dropped_and_counted() {
    let mut net = connected();
    let before = net.wire.len();
    assert_eq!(
        net.send_to(0, v4(99), b"nobody"),
        Err(DropReason::UnknownDestination)
    );
    assert_eq!(
        net.send_raw(0, &ip_packet(v6(1), v6(99), b"nobody")),
        Err(DropReason::UnknownDestination)
    );
    assert_eq!(net.wire.len(), before, "nothing was sent");
    assert_eq!(
        net.nodes[0].tunnel.counters().dropped_unknown_destination,
        2
    );
    assert_eq!(
        net.send_raw(0, &[0x45, 0, 0]),
        Err(DropReason::MalformedPacket)
    );
    assert_eq!(net.send_raw(0, &[]), Err(DropReason::MalformedPacket));
    assert_eq!(net.nodes[0].tunnel.counters().dropped_malformed, 2);
}

#[test]
fn garbage_and_replays_are_dropped_without_touching_the_session() {
    let mut net = connected();
    let helper = net.nodes[0].udp;
    assert_eq!(net.send(0, 1, b"original"), Ok(true));
    let data = net.wire.back().cloned().unwrap();
    assert_eq!(data.kind(), MSG_DATA);
    net.deliver_all();
    assert_eq!(net.payloads(1).len(), 2);

    let attacker = udp(66, 6666);
    let agent = net.nodes[1].udp;
    let at = |payload: Vec<u8>, from| Datagram {
        from,
        to: agent,
        payload,
    };
    // Replays, from the original and from another address.
    assert_eq!(net.inject(data.clone()), Some(Err(DropReason::Rejected)));
    assert_eq!(
        net.inject(at(data.payload.clone(), attacker)),
        Some(Err(DropReason::Rejected))
    );
    // A forged data message for the live session.
    let mut forged = data.payload.clone();
    forged[8] = forged[8].wrapping_add(100); // a fresh counter
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        net.inject(at(forged, attacker)),
        Some(Err(DropReason::Rejected))
    );
    // Garbage of every shape.
    for junk in [
        vec![],
        vec![4],
        vec![0xff; 200],
        {
            let mut v = vec![0u8; 148];
            v[0] = 1;
            v
        },
        {
            let mut v = vec![0u8; 92];
            v[0] = 2;
            v
        },
        {
            let mut v = data.payload.clone();
            v[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
            v
        },
    ] {
        assert_eq!(
            net.inject(at(junk, attacker)),
            Some(Err(DropReason::Invalid))
        );
    }
    let counters = net.nodes[1].tunnel.counters();
    assert_eq!(counters.dropped_rejected, 3);
    assert_eq!(counters.dropped_invalid, 6);
    assert!(net.wire.is_empty(), "no reply to any of it");
    assert!(net.nodes[1].delivered.len() == 2, "nothing reached the TUN");
    assert_eq!(
        net.nodes[1]
            .tunnel
            .peer_stats(&net.key(0))
            .unwrap()
            .endpoint,
        Some(helper),
        "unauthenticated datagrams do not move the endpoint"
    );

    // The session still works both ways, without a new handshake.
    assert_eq!(net.send(0, 1, b"after"), Ok(true));
    assert_eq!(net.send(1, 0, b"reply"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(1).last().unwrap(), b"after");
    assert_eq!(net.payloads(0), vec![b"reply".to_vec()]);
    assert_eq!(net.handshakes(0).len(), 1);
}

#[test]
fn a_decrypted_packet_from_a_foreign_source_is_dropped() {
    let mut net = connected();
    let spoofed = ip_packet(v4(77), net.nodes[0].ip, b"spoof");
    assert_eq!(net.send_raw(1, &spoofed), Ok(true));
    let d = net.wire.pop_front().unwrap();
    assert_eq!(net.inject(d), Some(Err(DropReason::SourceNotAllowed)));
    assert_eq!(net.nodes[0].tunnel.counters().dropped_source_not_allowed, 1);
    assert!(net.nodes[0].delivered.is_empty());
}

#[test]
fn a_decrypted_packet_to_a_foreign_destination_is_dropped() {
    let mut net = connected();
    // A hostile agent routes a LAN address and another workspace's address
    // to the helper, as if the laptop were its router.
    let helper = net.nodes[0].ip;
    let lan: IpAddr = "192.168.1.10".parse().unwrap();
    let other_workspace = v4(99);
    let cfg = PeerConfig {
        public_key: net.key(0),
        addresses: vec![helper, lan, other_workspace],
        endpoint: Some(net.nodes[0].udp),
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    let now = net.now;
    net.nodes[1].tunnel.upsert_peer(now, cfg).unwrap();
    let agent = net.nodes[1].ip;
    let before = net.nodes[0].delivered.len();

    for dst in [lan, other_workspace] {
        let packet = ip_packet(agent, dst, b"through");
        assert_eq!(net.send_raw(1, &packet), Ok(true));
        let d = net.wire.pop_front().unwrap();
        assert_eq!(net.inject(d), Some(Err(DropReason::DestinationNotLocal)));
    }
    assert_eq!(
        net.nodes[0].tunnel.counters().dropped_destination_not_local,
        2
    );
    assert_eq!(
        net.nodes[0].delivered.len(),
        before,
        "nothing reached the TUN"
    );

    // The session is untouched: a packet to the helper's own address arrives.
    assert_eq!(net.send(1, 0, b"to you"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(0).last().unwrap(), b"to you");
    assert_eq!(net.handshakes(0).len(), 1);
}

/// Found by the `wireguard_peers` fuzz target: an IPv4 header whose total
/// length is below its own size came out of the tunnel as an empty or cut
/// packet.
#[test]
fn a_decrypted_packet_shorter_than_its_header_is_dropped() {
    let mut net = connected();
    let (agent, helper) = (net.nodes[1].ip, net.nodes[0].ip);
    let before = net.nodes[0].delivered.len();
    for (total, ihl) in [(0u16, 5u8), (12, 5), (40, 15)] {
        let mut packet = ip_packet(agent, helper, &[0; 20]);
        packet[0] = 0x40 | ihl;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        assert_eq!(net.send_raw(1, &packet), Ok(true));
        let d = net.wire.pop_front().unwrap();
        assert_eq!(net.inject(d), Some(Err(DropReason::MalformedPacket)));
    }
    assert_eq!(
        net.nodes[0].delivered.len(),
        before,
        "nothing reached the TUN"
    );
    assert_eq!(net.nodes[0].tunnel.counters().dropped_malformed, 3);
    assert_eq!(net.send(1, 0, b"still fine"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(0).last().unwrap(), b"still fine");
}

#[test]
fn a_table_without_local_addresses_drops_every_decrypted_packet() {
    let mut net = connected();
    net.nodes[0].tunnel.set_local_addresses([]);
    assert!(net.nodes[0].tunnel.local_addresses().is_empty());
    assert_eq!(net.send(1, 0, b"anyone?"), Ok(true));
    let d = net.wire.pop_front().unwrap();
    assert_eq!(net.inject(d), Some(Err(DropReason::DestinationNotLocal)));

    let own = net.nodes[0].ip;
    net.nodes[0].tunnel.set_local_addresses([own, v6(1)]);
    assert_eq!(net.send(1, 0, b"now"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(0).last().unwrap(), b"now");
}

#[test]
fn a_handshake_from_an_unknown_key_is_dropped() {
    let mut net = Net::pair(no_clock);
    let stranger = net.add_node(udp(3, 3000), v4(3));
    net.connect(stranger, 0, true);
    assert_eq!(net.send(stranger, 0, b"let me in"), Ok(false));
    let init = net.wire.pop_front().unwrap();
    assert_eq!(net.inject(init), Some(Err(DropReason::UnknownPeer)));
    assert_eq!(net.nodes[0].tunnel.counters().dropped_unknown_peer, 1);
    assert!(net.wire.is_empty());
}

#[test]
fn removing_a_peer_drops_and_counts_its_queued_packets() {
    let mut net = Net::pair(no_clock);
    for i in 0..3u8 {
        assert_eq!(net.send(0, 1, &[i]), Ok(false));
    }
    let b = net.key(1);
    assert_eq!(net.nodes[0].tunnel.remove_peer(&b), 3);
    assert_eq!(net.nodes[0].tunnel.remove_peer(&b), 0, "already gone");
    assert_eq!(net.nodes[0].tunnel.counters().dropped_on_peer_removal, 3);
    assert_eq!(net.nodes[0].tunnel.peer_stats(&b), None);
    assert_eq!(net.nodes[0].tunnel.route(net.nodes[1].ip), None);
    // The handshake already on the wire completes on the agent's side, but
    // the response finds no peer at the helper and nothing is delivered.
    net.deliver_all();
    assert!(net.nodes[1].delivered.is_empty());
    assert_eq!(net.nodes[0].tunnel.counters().dropped_invalid, 1);
    assert_eq!(net.send(0, 1, b"late"), Err(DropReason::UnknownDestination));
    assert_eq!(net.nodes[0].tunnel.poll_timeout(), None, "no timers left");
}

#[test]
fn a_snapshot_removes_peers_it_does_not_name_and_keeps_the_others_sessions() {
    let mut net = Net::pair(no_clock);
    let c = net.add_node(udp(3, 3000), v4(3));
    net.connect(0, c, true);
    net.connect(c, 0, false);
    assert_eq!(net.send(0, 1, b"to b"), Ok(false));
    assert_eq!(net.send(0, c, b"to c"), Ok(false));
    net.deliver_all();
    assert_eq!(net.payloads(1).len(), 1);
    assert_eq!(net.payloads(c).len(), 1);
    // One more packet for c that will wait: c's queue is empty, so send to a
    // fourth peer that is never reachable to check counting on snapshots.
    let d_key = Tunnel::generate().public_key();
    let now = net.now;
    net.nodes[0]
        .tunnel
        .upsert_peer(
            now,
            PeerConfig {
                public_key: d_key,
                addresses: vec![v4(4)],
                endpoint: Some(udp(4, 4000)),
                persistent_keepalive: None,
                candidates: Vec::new(),
            },
        )
        .unwrap();
    net.blackholes.push(udp(4, 4000));
    assert_eq!(net.send_to(0, v4(4), b"to d"), Ok(false));

    let b_cfg = PeerConfig {
        public_key: net.key(1),
        addresses: vec![net.nodes[1].ip],
        endpoint: Some(net.nodes[1].udp),
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    net.nodes[0].tunnel.set_peers(now, [b_cfg]).unwrap();
    assert_eq!(net.nodes[0].tunnel.peer_count(), 1);
    assert_eq!(net.nodes[0].tunnel.route(net.nodes[c].ip), None);
    assert_eq!(net.nodes[0].tunnel.route(v4(4)), None);
    assert_eq!(net.nodes[0].tunnel.counters().dropped_on_peer_removal, 1);
    assert_eq!(net.send(0, c, b"gone"), Err(DropReason::UnknownDestination));
    // b's session survived the snapshot: straight onto the wire.
    assert_eq!(net.send(0, 1, b"still here"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(1).last().unwrap(), b"still here");
    assert_eq!(net.handshakes(0).len(), 2, "b and c, no new one");
}

#[test]
fn upserting_the_same_key_updates_routes_in_place() {
    let mut net = connected();
    let now = net.now;
    let new_ip: IpAddr = v4(42);
    let cfg = PeerConfig {
        public_key: net.key(1),
        addresses: vec![new_ip, v6(42)],
        endpoint: Some(net.nodes[1].udp),
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    net.nodes[0].tunnel.upsert_peer(now, cfg).unwrap();
    assert_eq!(net.nodes[0].tunnel.route(new_ip), Some(net.key(1)));
    assert_eq!(net.nodes[0].tunnel.route(v6(42)), Some(net.key(1)));
    assert_eq!(net.nodes[0].tunnel.route(net.nodes[1].ip), None);
    assert_eq!(
        net.send_to(0, new_ip, b"moved"),
        Ok(true),
        "no new handshake"
    );
    assert_eq!(
        net.send(0, 1, b"old address"),
        Err(DropReason::UnknownDestination)
    );
}

#[test]
fn an_address_claimed_by_a_new_peer_moves_to_it() {
    let mut net = Net::pair(no_clock);
    let now = net.now;
    let other = Tunnel::generate().public_key();
    let cfg = PeerConfig {
        public_key: other,
        addresses: vec![net.nodes[1].ip],
        endpoint: None,
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    net.nodes[0].tunnel.upsert_peer(now, cfg).unwrap();
    assert_eq!(net.nodes[0].tunnel.route(net.nodes[1].ip), Some(other));
    // Removing the old owner later must not take the route with it.
    let b = net.key(1);
    net.nodes[0].tunnel.remove_peer(&b);
    assert_eq!(net.nodes[0].tunnel.route(net.nodes[1].ip), Some(other));
}

#[test]
fn a_peer_without_endpoint_cannot_be_reached_first() {
    let mut net = Net::pair(no_clock);
    // The agent does not know the helper's endpoint until it hears from it.
    assert_eq!(net.send(1, 0, b"hi"), Ok(false));
    assert!(net.wire.is_empty());
    assert_eq!(net.nodes[1].tunnel.counters().dropped_no_endpoint, 1);
}

#[test]
fn the_own_key_is_refused_as_a_peer() {
    let mut t = Tunnel::generate();
    let err = t
        .upsert_peer(
            std::time::Instant::now(),
            PeerConfig {
                public_key: t.public_key(),
                addresses: vec![v4(1)],
                endpoint: None,
                persistent_keepalive: None,
                candidates: Vec::new(),
            },
        )
        .unwrap_err();
    assert!(matches!(err, ConfigError::OwnKey(_)));
    assert!(err.to_string().contains("reconnect"));
    assert_eq!(t.peer_count(), 0);
}

#[test]
fn a_fresh_key_pair_gives_a_new_public_key() {
    let a = Tunnel::generate();
    let b = Tunnel::generate();
    assert_ne!(a.public_key(), b.public_key());
    let secret = StaticSecret::random();
    let expected = boringtun::x25519::PublicKey::from(&secret).to_bytes();
    assert_eq!(Tunnel::new(secret).public_key(), expected);
}

#[test]
fn debug_output_never_shows_the_private_key() {
    use base64::Engine as _;
    let secret = StaticSecret::random();
    let private_b64 = base64::engine::general_purpose::STANDARD.encode(secret.to_bytes());
    let private_hex: String = secret
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t = Tunnel::new(secret.clone());
    let dbg = format!("{t:?}");
    assert!(dbg.contains(&key_id(&t.public_key())));
    assert!(!dbg.contains(&private_b64[..12]));
    assert!(!dbg.contains(&private_hex[..16]));
    assert!(!dbg.contains(&format!("{:?}", secret.to_bytes())));
}

#[test]
fn small_buffers_are_refused_not_panicked_on() {
    let mut net = connected();
    let packet = ip_packet(net.nodes[0].ip, net.nodes[1].ip, &[0; 1000]);
    let mut small = [0u8; 1000];
    assert_eq!(
        net.nodes[0]
            .tunnel
            .encapsulate(net.now, &packet, &mut small),
        Err(DropReason::BufferTooSmall)
    );
    let mut tiny = [0u8; 100];
    let (now, from) = (net.now, net.nodes[0].udp);
    assert_eq!(
        net.nodes[1]
            .tunnel
            .decapsulate(now, from, &[4; 60], &mut tiny),
        Err(DropReason::BufferTooSmall)
    );
    assert_eq!(net.nodes[0].tunnel.counters().dropped_buffer_too_small, 1);
}

#[test]
fn events_name_the_peer() {
    let net = connected();
    let b = net.key(1);
    assert!(net.nodes[0].events.iter().any(|(_, e)| *e
        == TunnelEvent::HandshakeCompleted {
            peer: b,
            initiator: true
        }));
    let a = net.key(0);
    assert!(net.nodes[1].events.iter().any(|(_, e)| *e
        == TunnelEvent::EndpointChanged {
            peer: a,
            endpoint: net.nodes[0].udp
        }));
}

#[test]
fn an_agent_restarted_with_a_new_key_is_reached_after_the_snapshot() {
    let mut net = connected();
    // The agent restarts: same tunnel address, new key, new port.
    let reborn = net.add_node(udp(2, 51999), net.nodes[1].ip);
    net.connect(reborn, 0, false);
    let cfg = PeerConfig {
        public_key: net.key(reborn),
        addresses: vec![net.nodes[reborn].ip],
        endpoint: Some(net.nodes[reborn].udp),
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    let now = net.now;
    net.nodes[0].tunnel.set_peers(now, [cfg]).unwrap();
    assert_eq!(
        net.nodes[0].tunnel.route(net.nodes[1].ip),
        Some(net.key(reborn))
    );
    assert_eq!(net.send(0, reborn, b"welcome back"), Ok(false));
    net.deliver_all();
    assert_eq!(net.payloads(reborn), vec![b"welcome back".to_vec()]);
    assert_eq!(net.send(reborn, 0, b"thanks"), Ok(true));
    net.deliver_all();
    assert_eq!(net.payloads(0), vec![b"thanks".to_vec()]);
}

#[test]
fn an_endpoint_the_path_layer_pinned_moves_neither_by_roaming_nor_by_the_directory() {
    let mut net = connected();
    let b = net.key(1);
    let pinned = udp(9, 3478);
    let now = std::time::Instant::now();
    assert!(net.nodes[0].tunnel.set_path_endpoint(now, &b, pinned));
    assert!(!net.nodes[0].tunnel.set_path_endpoint(now, &[9; 32], pinned));
    // An authenticated datagram from B, arriving from another address (a
    // relay forwarding it, say), does not move A's endpoint for B.
    assert_eq!(net.send(1, 0, b"via a relay"), Ok(true));
    let mut d = net.wire.pop_front().expect("B's datagram");
    d.from = udp(8, 40000);
    assert_eq!(
        net.inject(d),
        Some(Ok(Some(ip_packet(v4(2), v4(1), b"via a relay"))))
    );
    let endpoint = |net: &Net| net.nodes[0].tunnel.peer_stats(&b).unwrap().endpoint;
    assert_eq!(endpoint(&net), Some(pinned));
    // Nor does the directory announcing another endpoint.
    let cfg = PeerConfig {
        public_key: b,
        addresses: vec![v4(2)],
        endpoint: Some(udp(7, 51820)),
        persistent_keepalive: None,
        candidates: vec![udp(7, 51820)],
    };
    net.nodes[0].tunnel.upsert_peer(now, cfg).unwrap();
    assert_eq!(endpoint(&net), Some(pinned));
}

#[test]
fn a_handshake_waiting_on_a_dead_endpoint_goes_again_at_once_on_a_new_path() {
    let mut net = Net::pair(no_clock);
    let b = net.key(1);
    assert_eq!(net.send(0, 1, b"hello"), Ok(false));
    // The first initiation is lost (the endpoint the directory gave is dead).
    let lost = net.wire.pop_front().expect("the first initiation");
    assert_eq!(lost.kind(), MSG_INIT);
    let now = std::time::Instant::now();
    let real = net.nodes[1].udp;
    assert!(net.nodes[0].tunnel.set_path_endpoint(now, &b, real));
    net.drain(0);
    let again: Vec<_> = net.wire.iter().filter(|d| d.kind() == MSG_INIT).collect();
    assert_eq!(again.len(), 1, "a new initiation without waiting 5 s");
    assert_eq!(again[0].to, real);
    net.deliver_all();
    assert_eq!(net.payloads(1), vec![b"hello".to_vec()]);
    // With a fresh session, a path that answers again starts nothing.
    assert!(net.nodes[0].tunnel.set_path_endpoint(now, &b, real));
    net.drain(0);
    assert!(net.wire.iter().all(|d| d.kind() != MSG_INIT));
}
