//! Split DNS follows the directory live (issue 4): while connected, a
//! workspace added with an agent resolves from the laptop namespace within
//! 1 s of the admin command, and after `warren-coord workspace rm` its names
//! are NXDOMAIN within 1 s. Measured from the admin command's exit to the
//! first matching `dig` answer through the namespace's resolv.conf
//! (resolv.conf mode, a test dnsmasq as the previous resolver); the host's
//! `/etc/resolv.conf` is checked to be untouched.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use warren_e2e::netns::{
    agent_view, random_wireguard_key, status_json, HelperOptions, HostResolvConf, TunnelLab, USER,
};
use warren_e2e::poll_until;
use warren_netcfg::dns::resolv_conf;

const ORIGINAL: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n";
const ROUNDS: usize = 3;
const LIMIT: Duration = Duration::from_secs(1);

#[test]
fn workspaces_added_resolve_and_removed_ones_are_nxdomain_within_a_second() {
    let host = HostResolvConf::snapshot();
    let Some(lab) = TunnelLab::start_or_skip("dns-names-live", &["dig", "/usr/sbin/dnsmasq"])
    else {
        return;
    };
    let outside = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let _dnsmasq = lab.dnsmasq(Ipv4Addr::LOCALHOST, &[("outside.test", outside)]);
    let resolv = lab.net.own_resolv_conf(ORIGINAL);
    // One workspace from the start, so the stub is up with names.
    lab.add_wireguard_peer("ws", "main", &random_wireguard_key(), &[]);
    let helper = lab.helper(HelperOptions::default().dns_mode("resolv-conf"));
    let status = lab.login_up(&helper);
    let stubs = status
        .session
        .device
        .as_ref()
        .expect("a connected session has a device")
        .addresses
        .clone();
    let want = resolv_conf::render(ORIGINAL, &stubs);
    let ours = poll_until(Duration::from_secs(10), || {
        (std::fs::read_to_string(&resolv).ok()? == want).then_some(())
    });
    assert!(ours.is_some(), "resolv.conf never pointed at the stub");
    let main = format!("main.ws.{USER}.warren");
    let first = poll_until(Duration::from_secs(10), || {
        let d = lab.dig(&[&main, "A"]);
        (d.noerror() && !d.addresses.is_empty()).then_some(())
    });
    if first.is_none() {
        helper.print_log_tail(40);
        panic!("{main} never resolved");
    }

    let mut added = Vec::new();
    let mut removed = Vec::new();
    for round in 0..ROUNDS {
        let ws = format!("late{round}");
        let full = format!("box.{ws}.{USER}.warren");
        let short = format!("{ws}.warren");
        let before = lab.dig(&[&full, "A"]);
        assert!(
            before.nxdomain(),
            "{full} resolves before it exists:\n{}",
            before.output
        );

        // Add: the workspace, then its agent (a plain WireGuard peer: the
        // coordinator allocates its addresses at once).
        lab.ensure_workspace(&ws);
        let admin = Instant::now();
        lab.add_wireguard_peer(&ws, "box", &random_wireguard_key(), &[]);
        let admin_took = admin.elapsed();
        let start = Instant::now();
        let got = poll_until(Duration::from_secs(5), || {
            let d = lab.dig(&[&full, "A"]);
            (d.noerror() && !d.addresses.is_empty()).then_some(d)
        });
        let took = start.elapsed();
        let Some(got) = got else {
            helper.print_log_tail(40);
            panic!("{full} did not resolve within 5 s of `agent add`");
        };
        eprintln!(
            "round {round}: {full} resolved {took:?} after `agent add` exited (the command took {admin_took:?})"
        );
        added.push(took);

        // The answer is what the coordinator allocated, A and AAAA, and the
        // workspace's short name points at the same agent.
        let view = agent_view(
            &status_json(&helper.cli).expect("warren status --json"),
            &ws,
            "box",
        )
        .expect("the new agent is listed in status");
        let (v4, v6) = (view.v4(), view.v6());
        assert_eq!(got.addresses, [v4], "{full} A:\n{}", got.output);
        for (name, qtype, addr) in [(&full, "AAAA", v6), (&short, "A", v4), (&short, "AAAA", v6)] {
            let d = lab.dig(&[name, qtype]);
            assert!(
                d.noerror() && d.addresses == [addr],
                "dig {name} {qtype} should give {addr}:\n{}",
                d.output
            );
        }

        // Remove the workspace (and with it its agent).
        let admin = Instant::now();
        lab.coord.admin(&["workspace", "rm", "--owner", USER, &ws]);
        let admin_took = admin.elapsed();
        let start = Instant::now();
        let gone = poll_until(Duration::from_secs(5), || {
            (lab.dig(&[&full, "A"]).nxdomain() && lab.dig(&[&short, "A"]).nxdomain()).then_some(())
        });
        let took = start.elapsed();
        if gone.is_none() {
            helper.print_log_tail(40);
            panic!(
                "{full} / {short} not NXDOMAIN within 5 s of `workspace rm`:\n{}",
                lab.dig(&[&full, "A"]).output
            );
        }
        eprintln!(
            "round {round}: {full} and {short} NXDOMAIN {took:?} after `workspace rm` exited (the command took {admin_took:?})"
        );
        removed.push(took);
        // The workspace that stayed still resolves.
        assert!(lab.dig(&[&main, "A"]).noerror(), "{main} stopped resolving");
    }

    let max_added = added.iter().max().copied().unwrap_or_default();
    let max_removed = removed.iter().max().copied().unwrap_or_default();
    eprintln!("added -> resolves: {added:?} (max {max_added:?}); removed -> NXDOMAIN: {removed:?} (max {max_removed:?})");
    assert!(
        max_added <= LIMIT,
        "an added workspace took {max_added:?} (> {LIMIT:?}) to resolve: {added:?}"
    );
    assert!(
        max_removed <= LIMIT,
        "a removed workspace took {max_removed:?} (> {LIMIT:?}) to become NXDOMAIN: {removed:?}"
    );

    helper.cli.run_ok(&["down"]);
    assert_eq!(
        std::fs::read_to_string(&resolv).ok().as_deref(),
        Some(ORIGINAL),
        "resolv.conf after down"
    );
    host.assert_unchanged();
}
