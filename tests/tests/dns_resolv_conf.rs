//! Split DNS in the `/etc/resolv.conf` mode, end to end (issue 4): a laptop
//! namespace with its own resolv.conf naming a `dnsmasq` (the resolver that
//! was there before), `warrend --dns-mode resolv-conf` connected to a real
//! coordinator. While connected, programs using the system resolver
//! (`getent`, `dig`, UDP and TCP) find agents by name, unknown names under
//! the suffix are NXDOMAIN, other types of known names are NOERROR without
//! records, and outside names still reach dnsmasq (on 127.0.0.1 or ::1);
//! a previous resolver that never answers stays a timeout. `warren down`, a
//! SIGTERM, a `kill -9` followed by a new helper, and a foreign rewrite of
//! the file all leave it byte-identical to what it should be. The host's
//! own `/etc/resolv.conf` is checked to be untouched in every test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warren_e2e::helper::Status;
use warren_e2e::netns::{
    in_netns, AgentOptions, DigAnswer, Dnsmasq, HelperOptions, HostResolvConf, LabHelper,
    TunnelLab, USER,
};
use warren_e2e::poll_until;
use warren_netcfg::dns::resolv_conf;

/// The laptop's resolv.conf before Warren: a comment, the lab's dnsmasq,
/// a search list and options, odd spacing and no final newline, so a
/// restore that is merely "equivalent" would show.
const ORIGINAL: &str = "# the DNS test laptop: dnsmasq on 127.0.0.1\nnameserver 127.0.0.1\nsearch lab.example\noptions timeout:1 attempts:2   \n\n# end";

/// The name dnsmasq answers, and its address.
const OUTSIDE: &str = "outside.test";
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

const TOOLS: &[&str] = &["dig", "getent", "/usr/sbin/dnsmasq"];

/// A connected DNS lab: dnsmasq, the namespace's resolv.conf, a helper in
/// the resolv.conf mode and the session's status.
struct DnsLab {
    host: HostResolvConf,
    resolv: PathBuf,
    dnsmasq: Dnsmasq,
    helper: LabHelper,
    status: Status,
    lab: TunnelLab,
}

fn outside_addr() -> IpAddr {
    IpAddr::V4(OUTSIDE_ADDR)
}

/// Starts the lab, dnsmasq, gives the laptop namespace [`ORIGINAL`], checks
/// dnsmasq answers through it, then starts the helper and connects.
fn connect(name: &str) -> Option<DnsLab> {
    connect_with(name, ORIGINAL, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// [`connect`] with another original resolv.conf, whose nameserver is a
/// dnsmasq on `listen`.
fn connect_with(name: &str, original: &str, listen: IpAddr) -> Option<DnsLab> {
    let host = HostResolvConf::snapshot();
    let lab = TunnelLab::start_or_skip(name, TOOLS)?;
    let dnsmasq = lab.dnsmasq(listen, &[(OUTSIDE, outside_addr())]);
    let resolv = lab.net.own_resolv_conf(original);
    let before = lab.dig(&[OUTSIDE, "A"]);
    assert!(
        before.noerror() && before.addresses == [outside_addr()],
        "before connecting, the namespace's resolver (dnsmasq) does not answer {OUTSIDE}:\n{}",
        before.output
    );
    assert_eq!(
        before.server,
        Some(listen),
        "dig did not use the namespace's own resolv.conf:\n{}",
        before.output
    );
    let helper = lab.helper(HelperOptions::default().dns_mode("resolv-conf"));
    let status = lab.login_up(&helper);
    Some(DnsLab {
        host,
        resolv,
        dnsmasq,
        helper,
        status,
        lab,
    })
}

impl DnsLab {
    fn read(&self) -> String {
        std::fs::read_to_string(&self.resolv).expect("read the namespace's resolv.conf")
    }

    /// This device's tunnel addresses: where the stub listens.
    fn stub_addresses(&self) -> Vec<IpAddr> {
        self.status
            .session
            .device
            .as_ref()
            .expect("a connected session has a device")
            .addresses
            .clone()
    }

    /// Waits (10 s) until the namespace's resolv.conf is exactly Warren's
    /// rendering of `original`; returns how long that took.
    fn wait_ours(&self, original: &str) -> Duration {
        let want = resolv_conf::render(original, &self.stub_addresses());
        let start = Instant::now();
        let got = poll_until(Duration::from_secs(10), || {
            (self.read() == want).then_some(())
        });
        if got.is_none() {
            self.helper.print_log_tail(40);
            panic!(
                "the namespace's resolv.conf never became Warren's:\nwant:\n{want}\ngot:\n{}",
                self.read()
            );
        }
        start.elapsed()
    }

    /// Registers a plain WireGuard peer as agent `ws/main`, waits until
    /// resolv.conf is Warren's rendering of `original` and the stub answers
    /// the agent's full name for `rtype`; returns that name.
    fn with_main_agent(&self, original: &str, rtype: &str) -> String {
        let full = format!("main.ws.{USER}.warren");
        self.lab.add_wireguard_peer(
            "ws",
            "main",
            &warren_e2e::netns::random_wireguard_key(),
            &[],
        );
        self.wait_ours(original);
        self.dig_until_answered(&[&full, rtype]);
        full
    }

    /// `dig` until it gives addresses (the stub loads names as the
    /// directory arrives), 10 s at most; then the answer.
    fn dig_until_answered(&self, args: &[&str]) -> DigAnswer {
        let found = poll_until(Duration::from_secs(10), || {
            let d = self.lab.dig(args);
            (d.noerror() && !d.addresses.is_empty()).then_some(d)
        });
        found.unwrap_or_else(|| {
            self.helper.print_log_tail(40);
            panic!(
                "dig {args:?} never answered:\n{}",
                self.lab.dig(args).output
            )
        })
    }

    /// `warren down`, then the file must already be `expected` byte for
    /// byte (down returns only after the OS is restored), and the backup and
    /// journal gone.
    fn down_and_expect(&self, expected: &str) -> Duration {
        let start = Instant::now();
        self.helper.cli.run_ok(&["down"]);
        let took = start.elapsed();
        let after = std::fs::read(&self.resolv).expect("read resolv.conf after down");
        assert!(
            after == expected.as_bytes(),
            "right after `warren down` the namespace's resolv.conf is not what it should be:\nwant: {expected:?}\ngot:  {:?}",
            String::from_utf8_lossy(&after)
        );
        let backup = self.helper.state_dir.join("resolv.conf.before-warren");
        assert!(
            !backup.exists(),
            "the backup {} is left after down",
            backup.display()
        );
        let journal_gone = poll_until(Duration::from_secs(5), || {
            (!self.helper.journal().exists()).then_some(())
        });
        assert!(
            journal_gone.is_some(),
            "the journal is left after down: {:?}",
            std::fs::read_to_string(self.helper.journal()).ok()
        );
        took
    }
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v.dedup();
    v
}

#[test]
fn names_resolve_outside_names_reach_the_old_resolver_and_down_restores_the_file() {
    let Some(t) = connect("dns-resolv-conf") else {
        return;
    };
    let lab = &t.lab;
    let _agent = lab.agent(AgentOptions::new("ws", "main"));
    let view = lab.wait_agent(&t.helper, "ws", "main");
    let (v4, v6) = (view.v4(), view.v6());
    let full = format!("main.ws.{USER}.warren");
    let short = "ws.warren".to_string();
    let mut names = view.agent.dns_names.clone();
    names.sort();
    assert_eq!(
        names,
        sorted_strings(&[&full, &short]),
        "the coordinator's names for ws/main"
    );

    let took = t.wait_ours(ORIGINAL);
    eprintln!(
        "resolv.conf pointed at the stub {:?} {took:?} after `warren up` reported Connected:\n{}",
        t.stub_addresses(),
        t.read()
    );

    // dig over UDP and TCP, A and AAAA, both names, and a name in odd case.
    let first = t.dig_until_answered(&[&full, "A"]);
    eprintln!(
        "first answer for {full} after the stub came up: {:?}",
        first.addresses
    );
    let stubs = t.stub_addresses();
    for name in [full.as_str(), short.as_str(), "MAIN.Ws.Alice.WARREN"] {
        for (qtype, want) in [("A", v4), ("AAAA", v6)] {
            for tcp in [false, true] {
                let mut args = vec![name, qtype];
                if tcp {
                    args.push("+tcp");
                }
                let d = lab.dig(&args);
                assert!(
                    d.noerror() && d.addresses == [want],
                    "dig {args:?} should give {want}:\n{}",
                    d.output
                );
                assert!(
                    d.server.is_some_and(|s| stubs.contains(&s)) && d.tcp == tcp,
                    "dig {args:?} was not answered by the stub {stubs:?} over {}:\n{}",
                    if tcp { "TCP" } else { "UDP" },
                    d.output
                );
                eprintln!(
                    "dig {args:?} -> {:?} from {:?} in {:?}",
                    d.addresses, d.server, d.elapsed
                );
            }
        }
    }

    // Other types of a known name: NOERROR without records (HTTPS and
    // SVCB included, so clients fall back to A/AAAA), never NXDOMAIN.
    for qtype in ["HTTPS", "SVCB", "TXT", "MX"] {
        let d = lab.dig(&[&full, qtype]);
        assert!(
            d.noerror() && d.output.contains("ANSWER: 0"),
            "dig {full} {qtype} should be NOERROR with no answer:\n{}",
            d.output
        );
    }

    // The stub listens on both tunnel addresses, UDP and TCP.
    for stub in &stubs {
        let at = format!("@{stub}");
        for tcp in [false, true] {
            let mut args = vec![at.as_str(), full.as_str(), "AAAA"];
            if tcp {
                args.push("+tcp");
            }
            let d = lab.dig(&args);
            assert!(
                d.noerror() && d.addresses == [v6] && d.server == Some(*stub),
                "dig {args:?} should give {v6} from {stub}:\n{}",
                d.output
            );
        }
    }

    // The system resolver (glibc through the namespace's resolv.conf).
    let both = sorted(vec![v4, v6]);
    for name in [&full, &short] {
        assert_eq!(
            lab.getent("ahosts", name),
            Some(both.clone()),
            "getent ahosts {name}"
        );
        assert_eq!(
            lab.getent("ahostsv4", name),
            Some(vec![v4]),
            "getent ahostsv4 {name}"
        );
    }
    // `getent hosts` asks for IPv6 first and prints that one.
    assert_eq!(
        lab.getent("hosts", &full),
        Some(vec![v6]),
        "getent hosts {full}"
    );

    // Unknown names under the suffix: NXDOMAIN from the stub, over UDP and
    // TCP, and getent finds nothing.
    for unknown in [
        format!("nope.ws.{USER}.warren"),
        "nosuchws.warren".to_string(),
    ] {
        for tcp in [false, true] {
            let mut args = vec![unknown.as_str(), "A"];
            if tcp {
                args.push("+tcp");
            }
            let d = lab.dig(&args);
            assert!(
                d.nxdomain(),
                "dig {args:?} should be NXDOMAIN:\n{}",
                d.output
            );
        }
        assert_eq!(lab.getent("ahosts", &unknown), None, "getent {unknown}");
    }

    // Outside names go to dnsmasq, through the stub, over UDP and TCP.
    let asked_before = t.dnsmasq.queries_for(OUTSIDE);
    for tcp in [false, true] {
        let mut args = vec![OUTSIDE, "A"];
        if tcp {
            args.push("+tcp");
        }
        let d = lab.dig(&args);
        assert!(
            d.noerror() && d.addresses == [outside_addr()],
            "dig {args:?} should be answered by dnsmasq through the stub:\n{}",
            d.output
        );
        assert!(
            d.server.is_some_and(|s| stubs.contains(&s)),
            "dig {args:?} did not go through the stub:\n{}",
            d.output
        );
        eprintln!(
            "dig {args:?} (forwarded) -> {:?} in {:?}",
            d.addresses, d.elapsed
        );
    }
    assert_eq!(
        lab.getent("ahostsv4", OUTSIDE),
        Some(vec![outside_addr()]),
        "getent ahostsv4 {OUTSIDE}"
    );
    let asked = t.dnsmasq.queries_for(OUTSIDE) - asked_before;
    assert!(
        asked >= 3,
        "dnsmasq logged {asked} queries for {OUTSIDE} (want the UDP and TCP digs and getent's):\n{}",
        t.dnsmasq.log()
    );
    // And names under the suffix never reach it.
    assert_eq!(
        t.dnsmasq.queries_for(&full),
        0,
        "the stub forwarded a workspace name:\n{}",
        t.dnsmasq.log()
    );

    let took = t.down_and_expect(ORIGINAL);
    eprintln!("`warren down` restored resolv.conf byte for byte in {took:?}");
    // dnsmasq is the resolver again, directly.
    let d = lab.dig(&[OUTSIDE, "A"]);
    assert!(
        d.noerror() && d.server == Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "after down, dnsmasq should answer {OUTSIDE} directly:\n{}",
        d.output
    );
    assert!(
        lab.getent("ahosts", &full).is_none(),
        "{full} still resolves after down"
    );
    t.host.assert_unchanged();
}

fn sorted_strings(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn a_new_helper_restores_the_file_a_killed_one_left() {
    let Some(mut t) = connect("dns-crash") else {
        return;
    };
    let full = t.with_main_agent(ORIGINAL, "A");
    let backup = t.helper.state_dir.join("resolv.conf.before-warren");
    assert_eq!(
        std::fs::read_to_string(&backup).ok().as_deref(),
        Some(ORIGINAL),
        "while connected, the backup holds the original"
    );

    t.helper.kill9();
    assert!(
        resolv_conf::is_ours(&t.read()),
        "a killed helper had no chance to restore resolv.conf, yet it is not Warren's:\n{}",
        t.read()
    );
    assert!(
        t.helper.journal().is_file(),
        "the killed helper's journal is gone"
    );

    // Same state dir: the new helper finds the journal and the backup, and
    // its socket appears only after recovery.
    let start = Instant::now();
    let helper2 = t
        .lab
        .helper(HelperOptions::default().dns_mode("resolv-conf"));
    let socket_after = start.elapsed();
    let now = std::fs::read(&t.resolv).expect("read resolv.conf");
    eprintln!(
        "new helper's socket after {socket_after:?}; resolv.conf restored: {}",
        now == ORIGINAL.as_bytes()
    );
    assert!(
        now == ORIGINAL.as_bytes(),
        "when the new helper's socket appeared, resolv.conf was not the original:\n{:?}",
        String::from_utf8_lossy(&now)
    );
    assert!(!backup.exists(), "the new helper left the backup behind");
    assert!(
        !helper2.journal().exists(),
        "the new helper left the dead one's journal"
    );

    // It connects again, with the real original as the backup (not the
    // dead helper's rendering), and disconnects back to it.
    helper2.cli.up();
    let status = helper2.cli.wait_state(
        warren_proto::ipc::SessionState::Connected,
        Duration::from_secs(15),
    );
    t.helper = helper2;
    t.status = status;
    t.wait_ours(ORIGINAL);
    t.dig_until_answered(&[&full, "A"]);
    let d = t.lab.dig(&[OUTSIDE, "A"]);
    assert!(
        d.noerror() && d.addresses == [outside_addr()],
        "outside names are not forwarded after the restart:\n{}",
        d.output
    );
    t.down_and_expect(ORIGINAL);
    t.host.assert_unchanged();
}

#[test]
fn a_foreign_rewrite_is_reasserted_and_survives_down() {
    let Some(t) = connect("dns-foreign") else {
        return;
    };
    let full = t.with_main_agent(ORIGINAL, "A");

    // "Another program" (a DHCP client) switches the laptop to a different
    // resolver: a second dnsmasq on 127.0.0.2 that answers the outside name
    // with another address, so it is visible which one the stub forwards to.
    let other_addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
    let other = t
        .lab
        .dnsmasq(Ipv4Addr::new(127, 0, 0, 2), &[(OUTSIDE, other_addr)]);
    let foreign = "nameserver 127.0.0.2\nsearch x\n";
    write_in_place(&t.resolv, foreign);
    let start = Instant::now();
    let want = resolv_conf::render(foreign, &t.stub_addresses());
    let back = poll_until(Duration::from_secs(5), || (t.read() == want).then_some(()));
    let took = start.elapsed();
    assert!(
        back.is_some(),
        "the helper did not put its entry back within 5 s; resolv.conf:\n{}",
        t.read()
    );
    eprintln!("the helper put its entry back {took:?} after a foreign rewrite");
    assert!(
        took <= Duration::from_secs(1),
        "the helper took {took:?} (> 1 s) to put its entry back"
    );
    let backup = t.helper.state_dir.join("resolv.conf.before-warren");
    assert_eq!(
        std::fs::read_to_string(&backup).ok().as_deref(),
        Some(foreign),
        "the other program's version is the new backup"
    );

    // Names still resolve, and outside names now go to the new resolver.
    t.dig_until_answered(&[&full, "A"]);
    let forwarded = poll_until(Duration::from_secs(5), || {
        let d = t.lab.dig(&[OUTSIDE, "A"]);
        (d.noerror() && d.addresses == [other_addr]).then_some(d)
    });
    assert!(
        forwarded.is_some(),
        "after the rewrite the stub does not forward to the new resolver 127.0.0.2:\n{}\ndnsmasq 127.0.0.2 log:\n{}",
        t.lab.dig(&[OUTSIDE, "A"]).output,
        other.log()
    );
    assert!(other.queries_for(OUTSIDE) >= 1, "{}", other.log());

    // On disconnect the other program's version stays, byte for byte.
    let took = t.down_and_expect(foreign);
    eprintln!("`warren down` left the other program's resolv.conf in {took:?}");
    t.host.assert_unchanged();
}

/// Rewrites `path` in place (truncate and write, same inode), as a program
/// that edits resolv.conf would; a rename would not reach the bind mount.
fn write_in_place(path: &Path, content: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open the namespace's resolv.conf");
    f.write_all(content.as_bytes())
        .expect("rewrite the namespace's resolv.conf");
}

#[test]
fn a_stopped_helper_restores_the_file() {
    let Some(mut t) = connect("dns-sigterm") else {
        return;
    };
    t.with_main_agent(ORIGINAL, "A");
    // The service manager stops the helper while connected.
    let start = Instant::now();
    t.helper.terminate(Duration::from_secs(10));
    let took = start.elapsed();
    let after = std::fs::read(&t.resolv).expect("read resolv.conf");
    eprintln!("SIGTERM while connected: the helper exited after {took:?}");
    assert!(
        after == ORIGINAL.as_bytes(),
        "after the helper stopped (SIGTERM), resolv.conf is not the original:\n{:?}\nhelper log:\n{}",
        String::from_utf8_lossy(&after),
        t.helper.stderr()
    );
    assert!(
        !t.helper.journal().exists(),
        "the stopped helper left its journal"
    );
    t.host.assert_unchanged();
}

#[test]
fn an_upstream_that_never_answers_stays_a_timeout() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let host = HostResolvConf::snapshot();
    let Some(lab) = TunnelLab::start_or_skip("dns-blackhole", TOOLS) else {
        return;
    };
    // The previous resolver is a black hole: it takes UDP queries and TCP
    // connections on 127.0.0.1:53 and never answers.
    let (udp, tcp) = in_netns(&lab.net.laptop, || {
        (
            std::net::UdpSocket::bind("127.0.0.1:53").expect("bind the black hole (UDP)"),
            std::net::TcpListener::bind("127.0.0.1:53").expect("bind the black hole (TCP)"),
        )
    });
    let stop = Arc::new(AtomicBool::new(false));
    let udp_seen = Arc::new(AtomicUsize::new(0));
    let tcp_seen = Arc::new(AtomicUsize::new(0));
    let hole = {
        let (stop, udp_seen, tcp_seen) = (stop.clone(), udp_seen.clone(), tcp_seen.clone());
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        tcp.set_nonblocking(true).expect("nonblocking listener");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: the test ends long before this.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if udp.recv_from(&mut buf).is_ok() {
                    udp_seen.fetch_add(1, Ordering::Relaxed);
                }
                while let Ok((conn, _)) = tcp.accept() {
                    tcp_seen.fetch_add(1, Ordering::Relaxed);
                    held.push(conn);
                }
            }
        })
    };
    let resolv = lab.net.own_resolv_conf("nameserver 127.0.0.1\n");
    lab.add_wireguard_peer(
        "ws",
        "main",
        &warren_e2e::netns::random_wireguard_key(),
        &[],
    );
    let helper = lab.helper(HelperOptions::default().dns_mode("resolv-conf"));
    let status = lab.login_up(&helper);
    let full = format!("main.ws.{USER}.warren");
    let ok = poll_until(Duration::from_secs(10), || {
        let d = lab.dig(&[&full, "A"]);
        (d.noerror() && !d.addresses.is_empty()).then_some(())
    });
    assert!(ok.is_some(), "{full} never resolved");

    // The stub forgets a forwarded query after 5 s; wait past that for any
    // reply (an invented SERVFAIL would come then), over UDP and TCP at once.
    let stub = status
        .session
        .device
        .as_ref()
        .and_then(|d| d.addresses.iter().copied().find(IpAddr::is_ipv4))
        .expect("the device has an IPv4 tunnel address");
    let query = dns_query(0x5a5a, "outside.test");
    let wait = Duration::from_millis(6500);
    let start = Instant::now();
    let (udp_reply, tcp_reply) = in_netns(&lab.net.laptop, move || {
        let q = query.clone();
        let tcp = std::thread::spawn(move || -> Option<Vec<u8>> {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::new(stub, 53),
                Duration::from_secs(2),
            )
            .expect("connect to the stub over TCP");
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend(&q);
            c.write_all(&framed).expect("send the TCP query");
            c.set_read_timeout(Some(wait)).expect("read timeout");
            let mut buf = [0u8; 512];
            match c.read(&mut buf) {
                // Closed without an answer: still no answer.
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            }
        });
        let u = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind a client socket");
        u.send_to(&query, (stub, 53)).expect("send the UDP query");
        u.set_read_timeout(Some(wait)).expect("read timeout");
        let mut buf = [0u8; 512];
        let udp = u.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
        (udp, tcp.join().expect("the TCP client thread"))
    });
    eprintln!(
        "queries for an outside name with a black-hole upstream: UDP reply {:?}, TCP reply {:?} after waiting {:?}",
        udp_reply.as_ref().map(|r| r.len()),
        tcp_reply.as_ref().map(|r| r.len()),
        start.elapsed()
    );
    assert!(
        udp_reply.is_none(),
        "the previous resolver never answers, yet the stub answered over UDP: {udp_reply:?}"
    );
    assert!(
        tcp_reply.is_none(),
        "the previous resolver never answers, yet the stub answered over TCP: {tcp_reply:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = hole.join();
    let (u, c) = (
        udp_seen.load(Ordering::Relaxed),
        tcp_seen.load(Ordering::Relaxed),
    );
    assert!(
        u >= 1,
        "the stub never forwarded the UDP query to the previous resolver"
    );
    assert!(
        c >= 1,
        "the stub never forwarded the TCP query to the previous resolver"
    );
    // Workspace names are unaffected by a dead upstream.
    let d = lab.dig(&[&full, "A"]);
    assert!(d.noerror(), "{}", d.output);

    helper.cli.run_ok(&["down"]);
    assert_eq!(
        std::fs::read_to_string(&resolv).ok().as_deref(),
        Some("nameserver 127.0.0.1\n")
    );
    host.assert_unchanged();
}

/// A plain recursive query for `name` IN A, in wire format.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

#[test]
fn outside_names_reach_an_ipv6_previous_resolver() {
    let original = "nameserver ::1\n";
    let Some(t) = connect_with("dns-upstream-v6", original, "::1".parse().expect("literal")) else {
        return;
    };
    t.with_main_agent(original, "AAAA");
    let stubs = t.stub_addresses();
    for tcp in [false, true] {
        let mut args = vec![OUTSIDE, "A"];
        if tcp {
            args.push("+tcp");
        }
        let d = t.lab.dig(&args);
        assert!(
            d.noerror()
                && d.addresses == [outside_addr()]
                && d.server.is_some_and(|s| stubs.contains(&s)),
            "dig {args:?} should be forwarded by the stub to dnsmasq on [::1]:\n{}",
            d.output
        );
    }
    assert!(
        t.dnsmasq.queries_for(OUTSIDE) >= 2,
        "dnsmasq on ::1 did not get the forwarded queries:\n{}",
        t.dnsmasq.log()
    );
    t.down_and_expect(original);
    t.host.assert_unchanged();
}
