//! The helper leaves the laptop as it found it (DESIGN principle 6):
//! `warren down` removes the TUN, the routes to the deployment's prefixes and
//! the journal; and after `kill -9` while connected, the next helper started
//! with the same state dir undoes the leftovers before it even opens its
//! socket. Laptop and workspace namespaces, real binaries; needs root.

use std::net::IpAddr;
use std::time::{Duration, Instant};
use warren_e2e::helper::Status;
use warren_e2e::netns::{ip, AgentOptions, HelperOptions, LabAgent, LabHelper, TunnelLab};
use warren_e2e::poll_until;
use warren_proto::ipc::SessionState;

/// The deployment's two prefixes, from the session.
fn prefixes(status: &Status) -> (String, String) {
    let d = status
        .session
        .deployment
        .as_ref()
        .expect("a connected session names its deployment");
    (d.ipv4_prefix.clone(), d.ipv6_prefix.clone())
}

/// Asserts the helper's TUN, both deployment routes and the journal exist.
fn assert_connected_changes(lab: &TunnelLab, helper: &LabHelper, status: &Status) {
    let (v4, v6) = prefixes(status);
    assert!(lab.tun_exists(helper), "no TUN while connected");
    let routes = lab.helper_routes(helper, status);
    for p in [&v4, &v6] {
        assert!(
            routes.iter().any(|r| r.split_whitespace().any(|w| w == p)),
            "no route to {p} while connected; routes through the TUN: {routes:?}"
        );
    }
    assert!(
        helper.journal().is_file(),
        "the helper changed the network without a journal"
    );
}

/// An agent `ws/api` and a helper connected to it, with the TUN, routes and
/// journal checked in place.
fn connected(lab: &TunnelLab) -> (LabAgent, LabHelper, Status) {
    let agent = lab.agent(AgentOptions::new("ws", "api"));
    let helper = lab.helper(HelperOptions::default());
    let status = lab.login_up(&helper);
    lab.wait_agent(&helper, "ws", "api");
    assert_connected_changes(lab, &helper, &status);
    (agent, helper, status)
}

#[test]
fn warren_down_leaves_no_tun_route_or_journal() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-cleanup-down", &[]) else {
        return;
    };
    let (_agent, mut helper, status) = connected(&lab);

    let start = Instant::now();
    helper.cli.run_ok(&["down"]);
    helper
        .cli
        .wait_state(SessionState::Disconnected, Duration::from_secs(10));
    let clean = poll_until(Duration::from_secs(5), || {
        let left = (
            lab.tun_exists(&helper),
            lab.helper_routes(&helper, &status),
            helper.journal().exists(),
        );
        (!left.0 && left.1.is_empty() && !left.2).then_some(())
    });
    assert!(
        clean.is_some(),
        "after `warren down`: TUN exists {}, routes {:?}, journal {:?}",
        lab.tun_exists(&helper),
        lab.helper_routes(&helper, &status),
        std::fs::read_to_string(helper.journal()).ok()
    );
    eprintln!("`warren down` cleaned up in {:?}", start.elapsed());
    assert!(helper.is_running(), "the helper died on `warren down`");
}

#[test]
fn a_new_helper_undoes_what_a_killed_one_left() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-cleanup-crash", &[]) else {
        return;
    };
    let (_agent, mut helper, status) = connected(&lab);
    let journal = helper.journal();
    let tun = helper.options.tun_name.clone();

    helper.kill9();
    assert!(
        journal.is_file(),
        "a killed helper had no chance to clear its journal, yet it is gone"
    );
    // Linux TUNs are not persistent: the kernel removes the device (and its
    // routes) with the dead helper's file descriptor.
    let kernel_removed = poll_until(Duration::from_secs(5), || {
        (!lab.tun_exists(&helper)).then_some(())
    })
    .is_some();
    eprintln!("after kill -9: journal kept, kernel removed the TUN: {kernel_removed}");
    // So that the next helper has real leftovers to undo, put back what the
    // journal lists, as a device that outlived its helper would look: a
    // persistent TUN of the same name with the device's addresses and the
    // deployment's routes.
    if kernel_removed {
        let ns = lab.net.laptop.as_str();
        ip(&["-n", ns, "tuntap", "add", "dev", &tun, "mode", "tun"]);
        let device = status
            .session
            .device
            .as_ref()
            .expect("a connected session has a device");
        for a in &device.addresses {
            let plen = if matches!(a, IpAddr::V4(_)) { 32 } else { 128 };
            ip(&["-n", ns, "addr", "add", &format!("{a}/{plen}"), "dev", &tun]);
        }
        ip(&["-n", ns, "link", "set", &tun, "up"]);
        let (v4, v6) = prefixes(&status);
        ip(&["-n", ns, "route", "add", &v4, "dev", &tun]);
        ip(&["-n", ns, "-6", "route", "add", &v6, "dev", &tun]);
    }
    assert_connected_changes(&lab, &helper, &status);

    // Same state dir: the new helper finds the journal. Its socket appears
    // only after recovery, so everything must be gone by then.
    let start = Instant::now();
    let helper2 = lab.helper(HelperOptions::default());
    let socket_after = start.elapsed();
    let tun_left = lab.tun_exists(&helper2);
    let routes_left = lab.helper_routes(&helper2, &status);
    let journal_left = std::fs::read_to_string(helper2.journal()).ok();
    eprintln!(
        "new helper's socket after {socket_after:?}: TUN left {tun_left}, routes left {routes_left:?}, journal left {}",
        journal_left.is_some()
    );
    assert!(!tun_left, "the new helper left the dead one's TUN {tun}");
    assert!(
        routes_left.is_empty(),
        "the new helper left the dead one's routes: {routes_left:?}"
    );
    assert!(
        journal_left.is_none(),
        "the new helper left the dead one's journal: {journal_left:?}"
    );
    let log = helper2.stderr();
    assert!(
        log.contains("undoing network changes left by a previous helper"),
        "the new helper did not say it undid the leftovers:\n{log}"
    );

    // And it connects normally afterwards (the CLI still holds the token).
    helper2.cli.up();
    helper2
        .cli
        .wait_state(SessionState::Connected, Duration::from_secs(15));
    let back = poll_until(Duration::from_secs(10), || {
        lab.tun_exists(&helper2).then_some(())
    });
    assert!(back.is_some(), "no TUN after `warren up` on the new helper");
}
