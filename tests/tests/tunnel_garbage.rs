//! Hostile datagrams at the helper's WireGuard port do nothing to a working
//! session. A UDP relay in the workspace namespace sits between the helper
//! and the agent (the agent's registered endpoint is the relay) and records
//! the real agent→helper datagrams; then, from the relay's own socket (the
//! agent's address as the helper knows it), the test replays them
//! (handshake responses and data) and sends garbage of many sizes, with
//! WireGuard type bytes 1..4 and random contents (the agent's socket may
//! not send to the laptop directly, or its path layer would find that way).
//! Curls through the tunnel
//! must keep succeeding during and after, no new handshake may be forced,
//! and the helper must keep running. Needs root.

use rand::Rng;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use warren_e2e::netns::{
    agent_view, curl_in, http_url, in_netns, random_port, status_json, AgentOptions, HelperOptions,
    TunnelLab,
};
use warren_e2e::poll_until;

/// Most agent→helper datagrams the relay keeps for replay.
const RECORD_CAP: usize = 4096;

#[derive(Default)]
struct RelayStats {
    /// Datagrams helper→agent by WireGuard type (index 0: anything else).
    to_agent: [u64; 5],
    /// Datagrams agent→helper by type.
    to_helper: [u64; 5],
    /// Datagrams from neither side.
    strangers: u64,
    /// The first agent→helper datagrams, verbatim.
    recorded: Vec<Vec<u8>>,
}

/// The WireGuard message type (a type byte, then three zero bytes), or 0
/// for anything else (the path layer's STUN checks: a Binding success
/// starts 0x01 0x01, which is no handshake initiation).
fn kind(d: &[u8]) -> usize {
    match d {
        [t @ 1..=4, 0, 0, 0, ..] => *t as usize,
        _ => 0,
    }
}

/// A UDP relay between the helper and the agent, on one socket in the
/// workspace namespace.
struct Relay {
    socket: UdpSocket,
    addr: SocketAddr,
    helper: SocketAddr,
    stats: Arc<Mutex<RelayStats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(ns: &str, addr: SocketAddr, helper: SocketAddr, agent: SocketAddr) -> Relay {
        let socket = in_netns(ns, move || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("bind the relay on {addr}: {e}"));
        // Bounded waits so the loop notices `stop`.
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set the relay's read timeout");
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let socket = socket.try_clone().expect("clone the relay socket");
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let d = &buf[..n];
                    let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                    if from == helper {
                        s.to_agent[kind(d)] += 1;
                        let _ = socket.send_to(d, agent);
                    } else if from == agent {
                        s.to_helper[kind(d)] += 1;
                        if s.recorded.len() < RECORD_CAP {
                            s.recorded.push(d.to_vec());
                        }
                        let _ = socket.send_to(d, helper);
                    } else {
                        s.strangers += 1;
                    }
                }
            })
        };
        Relay {
            socket,
            addr,
            helper,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn stats<T>(&self, f: impl FnOnce(&RelayStats) -> T) -> T {
        f(&self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends `d` to the helper from the relay's socket (the agent's
    /// endpoint as the helper knows it).
    fn inject(&self, d: &[u8]) {
        // A refused send (e.g. ICMP from an earlier datagram) is no reason
        // to stop injecting.
        let _ = self.socket.send_to(d, self.helper);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Random datagrams: every size 0..=40 and sizes around the WireGuard
/// message sizes (cookie 64, response 92, initiation 148) up to 65000, each
/// with type byte 1..4 (with and without the zero reserved bytes) and a
/// fully random first byte.
fn garbage(rng: &mut impl Rng) -> Vec<Vec<u8>> {
    let mut sizes: Vec<usize> = (0..=40).collect();
    sizes.extend([
        47, 48, 63, 64, 65, 91, 92, 93, 147, 148, 149, 200, 500, 1000, 1280, 1400, 1500, 2000,
        8000, 65000,
    ]);
    let mut out = Vec::new();
    for &size in &sizes {
        for t in 0u8..=4 {
            for zero_reserved in [true, false] {
                let mut d = vec![0u8; size];
                rng.fill_bytes(&mut d);
                if size > 0 && t > 0 {
                    d[0] = t;
                    if zero_reserved {
                        for b in d.iter_mut().take(4).skip(1) {
                            *b = 0;
                        }
                    }
                }
                out.push(d);
            }
        }
    }
    out
}

/// `(InDatagrams, RcvbufErrors)` of namespace `ns`'s UDP counters: the
/// laptop namespace has no UDP but the helper's, so their growth is what
/// reached (or overflowed) the helper's socket.
fn udp_counters(ns: &str) -> (u64, u64) {
    let out = warren_e2e::netns::ns_command(ns, "cat")
        .arg("/proc/net/snmp")
        .output()
        .expect("read /proc/net/snmp in the laptop namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp: {text}");
    };
    let get = |field: &str| -> u64 {
        names
            .split_whitespace()
            .position(|n| n == field)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Udp {field} in /proc/net/snmp"))
    };
    (get("InDatagrams"), get("RcvbufErrors"))
}

#[test]
fn replayed_and_garbage_datagrams_do_not_disturb_a_session() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-garbage", &[]) else {
        return;
    };
    let (_http, page) = lab.serve_page("www", 8080);
    let ws_ip = IpAddr::V4(lab.net.workspace_ip);
    let helper_port = random_port();
    let relay_port = loop {
        let p = random_port();
        if p != 51820 {
            break p;
        }
    };
    let relay = Relay::start(
        &lab.net.workspace,
        SocketAddr::new(ws_ip, relay_port),
        SocketAddr::new(IpAddr::V4(lab.net.laptop_ip), helper_port),
        SocketAddr::new(ws_ip, 51820),
    );
    // The agent's path layer would find the helper straight from the
    // workspace; here only the relay may carry the session, so the agent's
    // own socket may not send to the laptop.
    warren_e2e::path_lab::nft(
        &lab.net.workspace,
        &format!(
            "table inet garbage {{\n  chain out {{\n    type filter hook output priority filter;\n    udp sport 51820 ip daddr != {ws_ip} drop\n    udp sport 51820 meta nfproto ipv6 drop\n  }}\n}}\n"
        ),
    );
    let mut agent = lab.agent(
        AgentOptions::new("ws", "api")
            .allow_ports("8080")
            .listen_port(51820)
            .endpoint(relay.addr),
    );
    let mut helper = lab.helper(HelperOptions::default().listen_port(helper_port));
    lab.login_up(&helper);
    let view = lab.wait_agent(&helper, "ws", "api");
    let url = http_url(view.v4(), 8080, "index.html");
    if lab
        .wait_page(&url, &page, Duration::from_secs(20))
        .is_none()
    {
        helper.print_log_tail(60);
        agent.print_log_tail(60);
        panic!("curl {url} never got the page through the relay");
    }
    // A little more traffic so there are data messages to replay.
    for _ in 0..5 {
        let r = lab.curl(&["-s", "--max-time", "3", &url]);
        assert!(r.ok() && r.text() == page, "curl through the relay failed");
    }
    let (to_agent, to_helper, recorded, strangers) =
        relay.stats(|s| (s.to_agent, s.to_helper, s.recorded.clone(), s.strangers));
    eprintln!(
        "relay before the attack: helper→agent by type {to_agent:?}, agent→helper {to_helper:?}, strangers {strangers}"
    );
    assert!(
        to_helper[2] >= 1 && to_helper[4] >= 1,
        "the session did not run through the relay (agent→helper by type {to_helper:?})"
    );
    let handshake_before = poll_until(Duration::from_secs(15), || {
        agent_view(&status_json(&helper.cli)?, "ws", "api")?.last_handshake_ms()
    })
    .expect("the helper never reported the agent's handshake time");
    let initiations_before = to_agent[1];

    // Curls keep running while the datagrams fly and for a while after.
    let stop_curls = Arc::new(AtomicBool::new(false));
    let curls_ok = Arc::new(AtomicU32::new(0));
    let curls = {
        let (ns, url, page, stop, ok_count) = (
            lab.net.laptop.clone(),
            url.clone(),
            page.clone(),
            stop_curls.clone(),
            curls_ok.clone(),
        );
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut slowest = Duration::ZERO;
            // Bounded in count as well as by the stop flag.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = curl_in(&ns, &["-s", "--max-time", "3", &url]);
                slowest = slowest.max(r.elapsed);
                if r.ok() && r.text() == page {
                    ok += 1;
                    ok_count.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.push((r.code, r.elapsed));
                }
            }
            (ok, failed, slowest)
        })
    };

    let mut rng = rand::thread_rng();
    let garbage = garbage(&mut rng);
    let udp_before = udp_counters(&lab.net.laptop);
    let mut sent = 0usize;
    let attack_start = Instant::now();
    for round in 0..10 {
        // Replays: the agent's real handshake responses and data, verbatim.
        for d in &recorded {
            relay.inject(d);
            sent += 1;
        }
        // Tampered copies: real receiver index, altered counter or payload.
        for d in recorded.iter().filter(|d| kind(d) == 4 && d.len() > 16) {
            let mut t = d.clone();
            let i = rng.gen_range(8..t.len());
            t[i] ^= 1 << rng.gen_range(0..8);
            relay.inject(&t);
            sent += 1;
        }
        for (i, d) in garbage.iter().enumerate() {
            relay.inject(d);
            sent += 1;
            // Pace the burst so it overlaps several curls.
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        eprintln!("round {round}: {sent} datagrams injected so far");
    }
    let attack = attack_start.elapsed();
    let udp_after = udp_counters(&lab.net.laptop);
    // Barrier instead of a pause: curls go on until three more have
    // succeeded after the last injected datagram. Their answers reach the
    // helper's socket behind every injected datagram, so once they are
    // through the helper has handled all of them, and the checks below
    // (no new handshake) see the attack's whole effect.
    let ok_at_attack_end = curls_ok.load(Ordering::SeqCst);
    let after = poll_until(Duration::from_secs(20), || {
        (curls_ok.load(Ordering::SeqCst) >= ok_at_attack_end + 3).then_some(())
    });
    stop_curls.store(true, Ordering::Relaxed);
    assert!(
        after.is_some(),
        "the tunnel did not carry three more curls within 20 s of the attack"
    );
    let (ok, failed, slowest) = curls.join().expect("the curl thread panicked");
    eprintln!(
        "injected {sent} datagrams ({} replayed records, {} garbage per round) in {attack:?}; curls during and after: {ok} ok, {} failed {failed:?}, slowest {slowest:?}",
        recorded.len(),
        garbage.len(),
        failed.len()
    );

    let delivered = udp_after.0 - udp_before.0;
    let overflowed = udp_after.1 - udp_before.1;
    eprintln!(
        "laptop UDP during the attack: {delivered} datagrams delivered to the helper's socket (incl. the curls' traffic), {overflowed} dropped on a full receive buffer"
    );
    assert!(
        delivered as usize >= sent / 2,
        "only {delivered} of {sent} injected datagrams reached the helper's socket: the attack missed"
    );
    assert!(helper.is_running(), "the helper died under garbage");
    assert!(ok >= 3, "too few curls ran during the attack ({ok})");
    assert!(
        failed.is_empty(),
        "curls failed during or after the attack: {failed:?}"
    );
    let r = lab.curl(&["-s", "--max-time", "3", &url]);
    assert!(
        r.ok() && r.text() == page,
        "the tunnel broke after the attack"
    );
    let (to_agent, to_helper) = relay.stats(|s| (s.to_agent, s.to_helper));
    eprintln!(
        "relay after the attack: helper→agent by type {to_agent:?} (type 3: cookie replies the garbage drew), agent→helper {to_helper:?}"
    );
    let initiations_after = to_agent[1];
    assert_eq!(
        initiations_after, initiations_before,
        "the helper started a new handshake because of the injected datagrams"
    );
    let handshake_after = agent_view(&status_json(&helper.cli).expect("status"), "ws", "api")
        .and_then(|v| v.last_handshake_ms());
    assert_eq!(
        handshake_after,
        Some(handshake_before),
        "the handshake time changed: the injected datagrams forced a new handshake"
    );
    assert!(agent.is_running(), "the agent died");
}
