//! Simulated-time tests of the peer table: boringtun is built with its
//! `mock-instant` clock, which the harness advances in lockstep with the `now`
//! it passes to the tables. Minutes of WireGuard timers run in milliseconds,
//! deterministically. The mock clock is per thread, so tests run in parallel.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::{udp, Net};
use warren_tunnel::{PeerConfig, TunnelEvent};

const MSG_INIT: u8 = 1;
const MSG_DATA: u8 = 4;
/// A WireGuard keepalive: a data message with an empty payload.
const KEEPALIVE_LEN: usize = 32;

fn mock_clock(d: Duration) {
    mock_instant::MockClock::advance(d);
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A helper (0) and an agent (1) after their first handshake and packet.
fn connected() -> Net {
    let mut net = Net::pair(mock_clock);
    assert_eq!(net.send(0, 1, b"hello"), Ok(false));
    net.deliver_all();
    assert_eq!(net.payloads(1), vec![b"hello".to_vec()]);
    net
}

fn events_of(net: &Net, i: usize, pred: impl Fn(&TunnelEvent) -> bool) -> Vec<Duration> {
    net.nodes[i]
        .events
        .iter()
        .filter(|(_, e)| pred(e))
        .map(|(at, _)| *at)
        .collect()
}

fn is_stale(e: &TunnelEvent) -> bool {
    matches!(e, TunnelEvent::SessionExpired { .. })
}

fn is_expired(e: &TunnelEvent) -> bool {
    matches!(e, TunnelEvent::ConnectionExpired { .. })
}

#[test]
fn first_handshake_and_queued_packets_in_order() {
    let mut net = Net::pair(mock_clock);
    for i in 0..10u8 {
        assert_eq!(net.send(0, 1, &[i; 3]), Ok(false));
    }
    net.advance(Duration::from_millis(1));
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 3]).collect();
    assert_eq!(net.payloads(1), want);
    assert_eq!(net.handshakes(0).len(), 1);
    assert_eq!(net.handshakes(1).len(), 1);
}

#[test]
fn an_idle_tunnel_sleeps_until_its_session_expires() {
    let mut net = connected();

    // Nothing to do for either side until the session expires, 180 s after
    // the handshake: no 250 ms tick, no 10 s tick.
    for (i, node) in net.nodes.iter().enumerate() {
        let next = node.tunnel.poll_timeout().unwrap() - net.now;
        println!("after the handshake, idle node {i} next wakes in {next:?}");
        assert!(next >= secs(180) && next <= secs(181), "{next:?}");
    }
    net.advance(secs(179));
    assert_eq!((net.nodes[0].wakeups, net.nodes[1].wakeups), (0, 0));
    assert_eq!(
        net.log.len(),
        4,
        "init, response, keepalive, hello: nothing since"
    );

    // Ten idle minutes cost two wake-ups each (stale at 180 s, keys dropped
    // at 540 s), not 2,400 ticks.
    net.advance(secs(600) - net.elapsed());
    println!(
        "wake-ups over 10 idle minutes: helper {}, agent {}",
        net.nodes[0].wakeups, net.nodes[1].wakeups
    );
    assert_eq!(net.nodes[0].wakeups, 2);
    assert_eq!(net.nodes[1].wakeups, 2);
    // Expired connections need nothing more until traffic comes back.
    assert_eq!(net.nodes[0].tunnel.poll_timeout(), None);
    assert_eq!(net.nodes[1].tunnel.poll_timeout(), None);
    assert_eq!(net.log.len(), 4, "an idle tunnel sends nothing");
}

#[test]
fn data_without_a_reply_gets_a_passive_keepalive_after_10_s() {
    let mut net = connected();
    net.advance(secs(1));
    assert_eq!(net.send(0, 1, b"no reply to this"), Ok(true));
    net.advance(Duration::from_millis(1));
    let next = net.nodes[1].tunnel.poll_timeout().unwrap() - net.now;
    assert!(next <= secs(9), "{next:?}");
    net.advance(secs(20));
    let keepalives = net.sent_of_kind(net.nodes[1].udp, MSG_DATA);
    println!(
        "agent keepalives at {:?}",
        keepalives.iter().map(|k| k.0).collect::<Vec<_>>()
    );
    assert_eq!(keepalives.len(), 1);
    assert_eq!(keepalives[0].1.payload.len(), KEEPALIVE_LEN);
    assert!(keepalives[0].0 >= secs(10) && keepalives[0].0 <= secs(11));
}

#[test]
fn a_lost_initiation_is_retried_after_5_s_and_the_queue_survives() {
    let mut net = Net::pair(mock_clock);
    assert_eq!(net.send(0, 1, b"one"), Ok(false));
    assert_eq!(net.send(0, 1, b"two"), Ok(false));
    let lost = net.wire.pop_front().unwrap();
    assert_eq!(lost.kind(), MSG_INIT);
    let next = net.nodes[0].tunnel.poll_timeout().unwrap() - net.now;
    assert_eq!(next, secs(5));
    net.advance(secs(6));
    let inits = net.sent_of_kind(net.nodes[0].udp, MSG_INIT);
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[1].0, secs(5));
    assert_eq!(net.payloads(1), vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn handshake_attempts_give_up_after_90_s_and_drop_the_queue() {
    let mut net = Net::pair(mock_clock);
    let agent = net.nodes[1].udp;
    net.blackholes.push(agent);
    for i in 0..4u8 {
        assert_eq!(net.send(0, 1, &[i]), Ok(false));
    }
    net.advance(secs(120));
    let inits = net.sent_of_kind(net.nodes[0].udp, MSG_INIT);
    println!(
        "initiations at {:?}",
        inits.iter().map(|(t, _)| t.as_secs()).collect::<Vec<_>>()
    );
    assert!((17..=19).contains(&inits.len()), "{}", inits.len());
    for w in inits.windows(2) {
        assert!(w[1].0 - w[0].0 >= secs(5), "retries are 5 s apart");
    }
    let expired: Vec<_> = net.nodes[0]
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            TunnelEvent::ConnectionExpired { dropped, .. } => Some((*at, *dropped)),
            _ => None,
        })
        .collect();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].0 >= secs(90) && expired[0].0 <= secs(91));
    assert_eq!(expired[0].1, 4);
    assert_eq!(net.nodes[0].tunnel.counters().dropped_on_expiry, 4);
    assert_eq!(net.nodes[0].tunnel.poll_timeout(), None, "gave up: quiet");

    // The agent comes back; new traffic starts a new handshake.
    net.blackholes.clear();
    assert_eq!(net.send(0, 1, b"again"), Ok(false));
    net.advance(secs(1));
    assert_eq!(net.payloads(1), vec![b"again".to_vec()]);
}

#[test]
fn rekey_after_120_s_of_traffic_without_losing_packets() {
    let mut net = connected();
    let mut sent_ab = 1;
    let mut sent_ba = 0;
    for i in 0..200u32 {
        let p = i.to_be_bytes();
        assert!(net.send(0, 1, &p).is_ok());
        sent_ab += 1;
        assert!(net.send(1, 0, &p).is_ok());
        sent_ba += 1;
        net.advance(secs(1));
    }
    let hs = net.handshakes(0);
    println!("helper handshakes at {hs:?}");
    assert!(hs.len() >= 2, "{hs:?}");
    assert!(hs[1].1, "the initiator rekeys");
    assert!(
        hs[1].0 >= secs(120) && hs[1].0 <= secs(122),
        "rekey at {:?}",
        hs[1].0
    );
    assert_eq!(net.handshakes(1).len(), hs.len());
    assert_eq!(
        net.payloads(1).len(),
        sent_ab,
        "nothing lost across the rekey"
    );
    assert_eq!(net.payloads(0).len(), sent_ba);
    assert!(events_of(&net, 0, is_stale).is_empty());
    assert!(events_of(&net, 1, is_stale).is_empty());
    let stats = net.nodes[0].tunnel.peer_stats(&net.key(1)).unwrap();
    assert_eq!(stats.handshakes, hs.len() as u64);
    assert_eq!(stats.last_handshake, Some(net.start + hs.last().unwrap().0));
}

#[test]
fn expiry_goes_stale_after_3_min_drops_keys_at_540_s_and_rehandshakes() {
    let mut net = connected();
    assert_eq!(net.send(1, 0, b"reply"), Ok(true));
    net.advance(secs(600));

    for i in 0..2 {
        let stale = events_of(&net, i, is_stale);
        let expired = events_of(&net, i, is_expired);
        println!("node {i}: stale at {stale:?}, keys dropped at {expired:?}");
        assert_eq!(stale.len(), 1);
        assert!(stale[0] > secs(180) && stale[0] <= secs(181));
        assert_eq!(expired.len(), 1);
        assert!(expired[0] >= secs(540) && expired[0] <= secs(541));
    }
    assert_eq!(net.handshakes(0).len(), 1);

    // Traffic afterwards re-handshakes and gets through.
    assert_eq!(net.send(0, 1, b"back again"), Ok(false));
    net.advance(secs(1));
    assert_eq!(net.payloads(1).last().unwrap(), b"back again");
    assert_eq!(net.handshakes(0).len(), 2);
    assert_eq!(net.send(1, 0, b"and back"), Ok(true));
    net.advance(secs(1));
    assert_eq!(net.payloads(0).last().unwrap(), b"and back");
}

#[test]
fn traffic_after_the_session_went_stale_rehandshakes_before_key_zeroing() {
    let mut net = connected();
    net.advance(secs(200));
    assert_eq!(events_of(&net, 0, is_stale).len(), 1);
    assert_eq!(net.send(0, 1, b"late"), Ok(false), "no session: queued");
    net.advance(secs(1));
    assert_eq!(net.payloads(1).last().unwrap(), b"late");
    assert_eq!(net.handshakes(0).len(), 2);
    // The new session postpones key zeroing: nothing expires at 540 s.
    net.advance(secs(400));
    assert!(events_of(&net, 0, is_expired).is_empty());
}

#[test]
fn a_roaming_agent_is_followed_to_its_new_address() {
    let mut net = connected();
    net.advance(secs(30));
    let old = net.nodes[1].udp;
    let new = udp(9, 40000);
    net.nodes[1].udp = new;

    assert_eq!(net.send(1, 0, b"from the new address"), Ok(true));
    net.advance(Duration::from_millis(10));
    assert_eq!(net.payloads(0), vec![b"from the new address".to_vec()]);
    let stats = net.nodes[0].tunnel.peer_stats(&net.key(1)).unwrap();
    assert_eq!(stats.endpoint, Some(new));
    let b = net.key(1);
    assert!(net.nodes[0].events.iter().any(|(_, e)| *e
        == TunnelEvent::EndpointChanged {
            peer: b,
            endpoint: new
        }));

    // A coordinator update that repeats the old configured endpoint does not
    // undo what authenticated traffic taught us.
    let cfg = PeerConfig {
        public_key: net.key(1),
        addresses: vec![net.nodes[1].ip],
        endpoint: Some(old),
        persistent_keepalive: None,
        candidates: Vec::new(),
    };
    let now = net.now;
    net.nodes[0].tunnel.upsert_peer(now, cfg).unwrap();

    assert_eq!(net.send(0, 1, b"reply"), Ok(true));
    assert_eq!(net.wire.back().unwrap().to, new, "replies follow");
    net.advance(Duration::from_millis(10));
    assert_eq!(net.payloads(1).last().unwrap(), b"reply");
    assert!(net.log.iter().all(|(at, d)| *at < secs(30) || d.to != old));
    assert_eq!(net.handshakes(0).len(), 1, "roaming needs no handshake");
}

#[test]
fn persistent_keepalive_fires_on_its_interval_only() {
    let mut net = connected();
    let cfg = PeerConfig {
        public_key: net.key(1),
        addresses: vec![net.nodes[1].ip],
        endpoint: Some(net.nodes[1].udp),
        persistent_keepalive: Some(25),
        candidates: Vec::new(),
    };
    let now = net.now;
    net.nodes[0].tunnel.upsert_peer(now, cfg).unwrap();
    let next = net.nodes[0].tunnel.poll_timeout().unwrap() - net.now;
    assert!(next <= secs(25), "{next:?}");
    net.advance(secs(101));
    let keepalives: Vec<Duration> = net
        .sent_of_kind(net.nodes[0].udp, MSG_DATA)
        .into_iter()
        .filter(|(at, d)| *at > Duration::ZERO && d.payload.len() == KEEPALIVE_LEN)
        .map(|(at, _)| at)
        .collect();
    println!("helper keepalives at {keepalives:?}");
    assert_eq!(keepalives.len(), 4);
    for w in keepalives.windows(2) {
        assert_eq!(w[1] - w[0], secs(25));
    }
    assert!(net.nodes[0].wakeups <= 5, "{}", net.nodes[0].wakeups);
}

#[test]
fn an_agent_removed_by_a_snapshot_loses_its_queue_and_its_timers() {
    let mut net = Net::pair(mock_clock);
    let agent = net.nodes[1].udp;
    net.blackholes.push(agent);
    for i in 0..5u8 {
        assert_eq!(net.send(0, 1, &[i]), Ok(false));
    }
    net.advance(secs(7));
    let inits_before = net.sent_of_kind(net.nodes[0].udp, MSG_INIT).len();
    let now = net.now;
    net.nodes[0].tunnel.set_peers(now, []).unwrap();
    assert_eq!(net.nodes[0].tunnel.counters().dropped_on_peer_removal, 5);
    assert_eq!(net.nodes[0].tunnel.poll_timeout(), None);
    net.advance(secs(100));
    assert_eq!(
        net.sent_of_kind(net.nodes[0].udp, MSG_INIT).len(),
        inits_before,
        "no more handshakes for a removed peer"
    );
    assert_eq!(net.nodes[0].wakeups, 1, "only the retry before removal");
}

#[test]
fn simultaneous_initiations_from_both_sides_settle() {
    let mut net = Net::new(mock_clock);
    let a = net.add_node(udp(1, 1000), support::v4(1));
    let b = net.add_node(udp(2, 2000), support::v4(2));
    net.connect(a, b, true);
    net.connect(b, a, true);
    assert_eq!(net.send(a, b, b"from a"), Ok(false));
    assert_eq!(net.send(b, a, b"from b"), Ok(false));
    net.advance(secs(1));
    assert_eq!(net.payloads(b), vec![b"from a".to_vec()]);
    assert_eq!(net.payloads(a), vec![b"from b".to_vec()]);
    // Both directions keep working afterwards, and nobody keeps retrying.
    net.advance(secs(30));
    assert_eq!(net.send(a, b, b"later a"), Ok(true));
    assert_eq!(net.send(b, a, b"later b"), Ok(true));
    net.advance(secs(1));
    assert_eq!(net.payloads(b).last().unwrap(), b"later a");
    assert_eq!(net.payloads(a).last().unwrap(), b"later b");
    let inits = net.sent_of_kind(net.nodes[a].udp, MSG_INIT).len()
        + net.sent_of_kind(net.nodes[b].udp, MSG_INIT).len();
    assert_eq!(inits, 2);
}
