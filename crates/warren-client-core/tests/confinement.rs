//! Simulated-time tests of what a hostile coordinator can't do: ranges
//! outside the private ones or over this machine's networks, public DNS
//! suffixes or ones that shadow LAN or special-use names, a device address
//! outside the ranges and a deployment that changes mid-session end the
//! session with a reason; agents outside the
//! ranges, with a sibling's key or over the cap are left out, and unusable
//! endpoints and foreign names are cut, each with a notice.

mod common;
use common::*;

use warren_client_core::confine::Policy;
use warren_client_core::{ClientConfig, ClientState, Command, PeerChange};
use warren_netcfg::HostNetwork;
use warren_proto::control::Welcome;
use warren_proto::ipc::{NoticeKind, ReasonCode, SessionState};
use warren_proto::model::DeploymentInfo;
use warren_session::ConnectFailure;

fn with_deployment(v4: &str, v6: &str, suffix: &str) -> Welcome {
    let mut w = welcome();
    w.deployment = DeploymentInfo {
        suffix: suffix.into(),
        ipv4_prefix: v4.into(),
        ipv6_prefix: v6.into(),
    };
    w
}

/// Starts a session, answers with `welcome`, and returns the commands.
fn answer(s: &mut Sim, welcome: Welcome) -> Vec<Command> {
    let g = s.start();
    s.c.handle_control_connected(s.now, g, welcome);
    s.commands()
}

fn assert_refused(s: &Sim, commands: &[Command], code: ReasonCode, words: &str) {
    let info = s.c.session_info(s.now);
    assert_eq!(info.state, SessionState::Failed, "{info:?}");
    assert_eq!(info.reason_code, Some(code));
    let reason = info.reason.unwrap_or_default();
    assert!(reason.contains(words), "{words:?} not in {reason:?}");
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::DisconnectControl { .. })),
        "the connection is closed"
    );
    assert!(
        !commands.iter().any(|c| matches!(c, Command::TunnelUp(_))),
        "no tunnel, no route, no DNS"
    );
}

#[test]
fn ranges_outside_the_private_ones_end_the_session() {
    for (v4, v6, asked) in [
        ("0.0.0.0/1", "fd00::/48", "0.0.0.0/1"),
        ("100.64.0.0/10", "2000::/3", "2000::/3"),
        ("10.9.0.0/25", "fd00::/48", "10.9.0.0/25"),
    ] {
        let mut s = Sim::new();
        let commands = answer(&mut s, with_deployment(v4, v6, "warren"));
        assert_refused(&s, &commands, ReasonCode::DeploymentRefused, asked);
        // A snapshot that still arrives changes nothing.
        s.c.handle_control_update(
            s.now,
            1,
            snapshot(0, false, vec![ws("api")], vec![agent("a1", "api", 1)]),
        );
        assert_eq!(s.c.agent_count(), 0);
    }
}

#[test]
fn a_range_over_this_machines_lan_is_refused_naming_it() {
    let mut s = Sim::new();
    s.c.handle_host_networks(vec![
        HostNetwork {
            network: "0.0.0.0/0".parse().unwrap(),
            interface: "eth0".into(),
        },
        HostNetwork {
            network: "100.100.7.0/24".parse().unwrap(),
            interface: "wlan0".into(),
        },
    ]);
    let commands = answer(&mut s, welcome());
    assert_refused(
        &s,
        &commands,
        ReasonCode::DeploymentRefused,
        "overlaps 100.100.7.0/24 on wlan0",
    );

    // The deployment's own routes on Warren's TUN are no conflict (a
    // reconnect while the tunnel is up sees them).
    let mut s = Sim::new();
    s.c.handle_host_networks(vec![HostNetwork {
        network: "100.64.0.0/10".parse().unwrap(),
        interface: facts().tun_name,
    }]);
    s.connect(vec![agent("a1", "api", 1)]);
    assert_eq!(s.state(), SessionState::Connected);

    // Without a data plane nothing is routed, so a clash doesn't matter.
    let mut s = Sim {
        c: ClientState::new(ClientConfig::default()),
        now: std::time::Instant::now(),
    };
    s.c.handle_host_networks(vec![HostNetwork {
        network: "100.100.7.0/24".parse().unwrap(),
        interface: "wlan0".into(),
    }]);
    let g = s.start();
    s.c.handle_control_connected(s.now, g, welcome());
    s.c.handle_control_update(s.now, g, snapshot(0, false, vec![ws("api")], vec![]));
    assert_eq!(s.state(), SessionState::Connected);
}

#[test]
fn a_device_address_outside_the_ranges_or_a_public_suffix_is_refused() {
    let mut s = Sim::new();
    let mut w = welcome();
    w.addresses = vec!["10.9.0.1".parse().unwrap()];
    let commands = answer(&mut s, w);
    assert_refused(&s, &commands, ReasonCode::DeploymentRefused, "10.9.0.1");

    for suffix in ["com", "co.uk"] {
        let mut s = Sim::new();
        let commands = answer(
            &mut s,
            with_deployment("100.64.0.0/10", "fd00::/48", suffix),
        );
        assert_refused(
            &s,
            &commands,
            ReasonCode::DeploymentRefused,
            "public suffix",
        );
    }
}

#[test]
fn a_suffix_that_shadows_lan_or_special_use_names_ends_the_session() {
    for (suffix, words) in [
        ("local", "multicast DNS"),
        ("localhost", "loopback"),
        ("test", "`test`"),
        ("invalid", "`invalid`"),
        ("example", "`example`"),
        ("home.arpa", "home networks"),
        ("lan", "home routers"),
        ("home", "home routers"),
        ("corp", "offices"),
        ("internal", "offices"),
        ("intranet", "offices"),
        ("private", "private networks"),
        ("arpa", "`arpa`"),
        ("in-addr.arpa", "IPv4 reverse"),
        ("ip6.arpa", "IPv6 reverse"),
        ("10.in-addr.arpa", "IPv4 reverse"),
        ("0.0.0.0.c.f.ip6.arpa", "IPv6 reverse"),
        ("printer.local", "multicast DNS"),
    ] {
        let mut s = Sim::new();
        let commands = answer(
            &mut s,
            with_deployment("100.64.0.0/10", "fd00::/48", suffix),
        );
        assert_refused(&s, &commands, ReasonCode::DeploymentRefused, words);
        assert_refused(
            &s,
            &commands,
            ReasonCode::DeploymentRefused,
            "allow_suffixes",
        );
    }
    // A name of the deployment's own under a private-use one is fine.
    let mut s = Sim::new();
    let g = s.start();
    s.c.handle_control_connected(
        s.now,
        g,
        with_deployment("100.64.0.0/10", "fd00::/48", "warren.internal"),
    );
    assert_ne!(s.state(), SessionState::Failed);
    // The machine's policy may allow one, as it may a public suffix.
    let mut s = Sim {
        c: ClientState::new(ClientConfig {
            seed: 42,
            tunnel: Some(facts()),
            policy: Policy::from_toml("allow_suffixes = [\"lan\"]").unwrap(),
            ..ClientConfig::default()
        }),
        now: std::time::Instant::now(),
    };
    let g = s.start();
    s.c.handle_control_connected(
        s.now,
        g,
        with_deployment("100.64.0.0/10", "fd00::/48", "lan"),
    );
    assert_ne!(s.state(), SessionState::Failed);
}

#[test]
fn a_deployment_that_changes_its_network_ends_the_session() {
    let mut s = Sim::new();
    let (g, up) = s.connect(vec![agent("a1", "api", 1)]);
    s.c.handle_control_failed(s.now, g, ConnectFailure::Lost("reset".into()));
    assert_eq!(s.state(), SessionState::Reconnecting);
    s.commands();
    let g2 = s.retry();
    s.c.handle_control_connected(
        s.now,
        g2,
        with_deployment("100.64.0.0/10", "fd00::/48", "other"),
    );
    let commands = s.commands();
    let info = s.c.session_info(s.now);
    assert_eq!(info.state, SessionState::Failed);
    assert_eq!(info.reason_code, Some(ReasonCode::DeploymentChanged));
    assert!(info.reason.unwrap().contains("sign in again to accept"));
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::TunnelDown { generation } if *generation == up)),
        "the old deployment's tunnel comes down: {commands:?}"
    );
}

#[test]
fn the_deployment_accepted_at_sign_in_is_the_one_allowed() {
    let mut s = Sim::new();
    let g = s.start_with(
        "https://coord.example",
        Some(DeploymentInfo {
            suffix: "warren".into(),
            ipv4_prefix: "100.64.0.0/16".into(),
            ipv6_prefix: "fd00::/48".into(),
        }),
    );
    s.c.handle_control_connected(s.now, g, welcome());
    let commands = s.commands();
    assert_refused(
        &s,
        &commands,
        ReasonCode::DeploymentChanged,
        "100.64.0.0/16",
    );
}

#[test]
fn agents_outside_the_ranges_or_with_a_siblings_key_are_left_out() {
    let mut s = Sim::new();
    let mut outside = agent("bad", "api", 3);
    outside.addresses = vec!["192.168.1.1".parse().unwrap()];
    let mut twin = agent("twin", "api", 4);
    twin.public_key = agent("a1", "api", 1).public_key;
    s.connect(vec![
        agent("a1", "api", 1),
        outside,
        twin,
        agent("a2", "api", 2),
    ]);
    assert_eq!(s.state(), SessionState::Connected);
    let ids: Vec<&str> = s.c.agents().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"], "the rest of the directory is kept");
    assert_eq!(s.c.peer_count(), 2);
    let notices = s.c.session_info(s.now).notices;
    let about = |id: &str| {
        notices
            .iter()
            .find(|n| n.agent_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no notice about {id}: {notices:?}"))
    };
    assert_eq!(about("bad").kind, NoticeKind::AgentRefused);
    assert!(about("bad").message.contains("192.168.1.1"));
    assert!(about("twin").message.contains("key of agent a1"));
}

#[test]
fn an_agent_that_goes_bad_in_a_diff_is_removed() {
    let mut s = Sim::new();
    let (g, up) = s.connect(vec![agent("a1", "api", 1), agent("a2", "api", 2)]);
    let mut moved = agent("a2", "api", 2);
    moved.addresses = vec!["8.8.8.8".parse().unwrap()];
    s.c.handle_control_update(s.now, g, diff(1, vec![moved], vec![]));
    assert_eq!(s.c.agent_count(), 1);
    let removed = s.commands().into_iter().any(|c| match c {
        Command::TunnelChanges {
            generation, peers, ..
        } => generation == up && peers.iter().any(|p| matches!(p, PeerChange::Remove(_))),
        _ => false,
    });
    assert!(removed, "its peer is removed from the tunnel");
    // Fixed again: back, and its notice gone.
    s.c.handle_control_update(s.now, g, diff(2, vec![agent("a2", "api", 2)], vec![]));
    assert_eq!(s.c.agent_count(), 2);
    assert!(s.c.session_info(s.now).notices.is_empty());
}

#[test]
fn unusable_endpoints_and_foreign_names_are_cut_and_the_agent_kept() {
    let mut s = Sim::new();
    let mut noisy = agent("a1", "api", 1);
    noisy.endpoints = vec![
        "127.0.0.1:22".parse().unwrap(),
        "224.0.0.1:51820".parse().unwrap(),
        "0.0.0.0:0".parse().unwrap(),
        "255.255.255.255:1".parse().unwrap(),
    ];
    noisy.endpoints.extend((0..1000u32).map(|i| {
        format!("203.0.113.{}:{}", i % 250 + 1, 1000 + i)
            .parse::<std::net::SocketAddr>()
            .unwrap()
    }));
    noisy.dns_names.push("www.example.com".into());
    s.connect(vec![noisy]);
    let kept = s.c.agents().next().unwrap();
    assert_eq!(kept.endpoints.len(), 16);
    assert!(kept
        .endpoints
        .iter()
        .all(|e| e.ip().to_string().starts_with("203.0.113.")));
    assert_eq!(kept.dns_names, ["main.api.alice.warren", "api.warren"]);
    let notices = s.c.session_info(s.now).notices;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].kind, NoticeKind::AgentTrimmed);
    for words in [
        "127.0.0.1:22 is a loopback address",
        "1004 endpoints",
        "www.example.com",
    ] {
        assert!(
            notices[0].message.contains(words),
            "{words:?} not in {:?}",
            notices[0].message
        );
    }
}

#[test]
fn a_coordinator_on_loopback_may_announce_loopback_endpoints() {
    let mut s = Sim::new();
    let g = s.start_with("http://127.0.0.1:8080", None);
    s.c.handle_control_connected(s.now, g, welcome());
    let mut local = agent("a1", "api", 1);
    local.endpoints = vec!["127.0.0.1:51820".parse().unwrap()];
    s.c.handle_control_update(s.now, g, snapshot(0, false, vec![ws("api")], vec![local]));
    assert_eq!(s.state(), SessionState::Connected);
    assert_eq!(s.c.agents().next().unwrap().endpoints.len(), 1);
    assert!(s.c.session_info(s.now).notices.is_empty());
}

#[test]
fn agents_over_the_cap_are_left_out_with_one_notice() {
    let policy = Policy::from_toml("max_agents = 10").unwrap();
    let mut s = Sim {
        c: ClientState::new(ClientConfig {
            seed: 42,
            tunnel: Some(facts()),
            policy,
            ..ClientConfig::default()
        }),
        now: std::time::Instant::now(),
    };
    let agents: Vec<_> = (1..=25u8)
        .map(|n| agent(&format!("a{n:02}"), "api", n))
        .collect();
    let (g, _) = s.connect(agents);
    assert_eq!(s.c.agent_count(), 10);
    let notices = s.c.session_info(s.now).notices;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].kind, NoticeKind::AgentsCapped);
    assert!(notices[0].message.contains("10 this helper keeps"));
    // One leaves: one newcomer gets its place, the next does not.
    let kept: Vec<String> = s.c.agents().map(|a| a.id.clone()).collect();
    s.c.handle_control_update(
        s.now,
        g,
        diff(
            1,
            vec![agent("b1", "api", 101), agent("b2", "api", 102)],
            vec![&kept[0]],
        ),
    );
    assert_eq!(s.c.agent_count(), 10);
    assert!(s.c.agents().any(|a| a.id == "b1"));
    assert!(!s.c.agents().any(|a| a.id == "b2"));
}

#[test]
fn a_key_may_move_to_a_re_added_agent_in_a_new_snapshot() {
    let mut s = Sim::new();
    let (g, _) = s.connect(vec![agent("old", "api", 1)]);
    s.c.handle_control_failed(s.now, g, ConnectFailure::Lost("sleep".into()));
    s.commands();
    let g2 = s.retry();
    s.c.handle_control_connected(s.now, g2, welcome());
    // The agent was removed and added again: a new id, the same key.
    s.c.handle_control_update(
        s.now,
        g2,
        snapshot(0, false, vec![ws("api")], vec![agent("new", "api", 1)]),
    );
    let ids: Vec<&str> = s.c.agents().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["new"]);
    assert!(s.c.session_info(s.now).notices.is_empty());
}
