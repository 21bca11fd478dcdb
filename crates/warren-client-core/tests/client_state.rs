//! Simulated-time tests of the whole client state: what used to be checked
//! only end to end (connected only once the directory is real, a snapshot
//! that replaces every agent, stale statistics, ping targets, a tunnel that
//! dies and comes back) runs here in microseconds, deterministically.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use warren_client_core::lifecycle::RETRY_CAP;
use warren_client_core::{
    ClientConfig, ClientState, Command, Event, NameChange, PeerChange, PeerReport, SessionKeys,
};
use warren_proto::ipc::{ErrorCode, SessionState, TunnelState};
use warren_proto::model::Agent;
use warren_proto::Secret;
use warren_session::ConnectFailure;

mod common;
use common::*;

#[test]
fn connected_only_once_the_first_full_directory_is_applied() {
    let mut s = Sim::new();
    let g = s.start();
    assert_eq!(s.state(), SessionState::Connecting);
    s.c.handle_control_connected(s.now, g, welcome());
    assert_eq!(
        s.state(),
        SessionState::Connecting,
        "a Welcome alone is not connected: the list is not real yet"
    );
    assert!(s.commands().is_empty(), "no tunnel before the directory");

    s.c.handle_control_update(
        s.now,
        g,
        snapshot(0, true, vec![ws("api")], vec![agent("a1", "api", 1)]),
    );
    assert_eq!(s.state(), SessionState::Connecting, "first part only");
    s.c.handle_control_update(
        s.now,
        g,
        snapshot(0, false, vec![ws("web")], vec![agent("a2", "web", 2)]),
    );
    assert_eq!(s.state(), SessionState::Connected);
    let cmds = s.commands();
    let up = cmds
        .iter()
        .find_map(|c| match c {
            Command::TunnelUp(up) => Some(up),
            _ => None,
        })
        .expect("the tunnel starts with the connection");
    assert_eq!(up.peers.len(), 2, "the Up carries every peer");
    assert_eq!(up.names.len(), 4, "and every name");
    assert_eq!(up.plan.routes.len(), 2);
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::TunnelChanges { .. })),
        "no diffs before or with the first Up: {cmds:?}"
    );
    // Subscribers saw the directory before (or with) the Connected state.
    let events = s.events();
    let connected_at = events
        .iter()
        .position(|e| matches!(e, Event::SessionChanged(i) if i.state == SessionState::Connected))
        .expect("Connected published");
    let dir_at = events
        .iter()
        .rposition(|e| matches!(e, Event::Directory(_)))
        .unwrap();
    assert!(dir_at < connected_at, "{events:?}");
    // A stale generation's update changes nothing.
    s.c.handle_control_update(s.now, g + 7, diff(1, vec![], vec!["a1"]));
    assert_eq!(s.c.agent_count(), 2);
}

#[test]
fn a_snapshot_that_replaces_every_agent_is_reconciled_as_diffs() {
    let mut s = Sim::new();
    let (g, up) = s.connect(vec![agent("a1", "api", 1), agent("a2", "web", 2)]);

    // The laptop sleeps; the connection is lost; the tunnel stays up.
    s.c.handle_control_failed(s.now, g, ConnectFailure::Lost("asleep".into()));
    assert_eq!(s.state(), SessionState::Reconnecting);
    let cmds = s.commands();
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::TunnelDown { .. })),
        "a reconnect keeps the tunnel: {cmds:?}"
    );
    // Backoff, then a new connection whose snapshot has only new agents.
    s.now += Duration::from_secs(1);
    let g2 = s.retry();
    assert!(g2 > g);
    s.c.handle_control_connected(s.now, g2, welcome());
    s.c.handle_control_update(
        s.now,
        g2,
        snapshot(
            0,
            false,
            vec![ws("api"), ws("web")],
            vec![agent("b1", "api", 3), agent("b2", "web", 4)],
        ),
    );
    assert_eq!(s.state(), SessionState::Connected);
    let cmds = s.commands();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let Command::TunnelChanges {
        generation,
        peers,
        names,
    } = &cmds[0]
    else {
        panic!("{cmds:?}");
    };
    assert_eq!(*generation, up, "the running tunnel gets the diff");
    let mut removed: Vec<_> = peers
        .iter()
        .filter_map(|p| match p {
            PeerChange::Remove(k) => Some(k[0]),
            _ => None,
        })
        .collect();
    removed.sort();
    let mut added: Vec<_> = peers
        .iter()
        .filter_map(|p| match p {
            PeerChange::Upsert(c) => Some(c.public_key[0]),
            _ => None,
        })
        .collect();
    added.sort();
    assert_eq!(removed, vec![1, 2], "old agents leave the peer table");
    assert_eq!(added, vec![3, 4]);
    // The names stayed the same but moved to the new agents' addresses.
    let new_addr: IpAddr = "100.64.1.3".parse().unwrap();
    assert!(names.iter().any(|n| matches!(n,
        NameChange::Upsert { name, addresses } if name == "api.warren" && addresses.contains(&new_addr))));
    assert_eq!(s.c.peer_count(), 2);
    assert_eq!(s.c.name_count(), 4);
    let mut ids: Vec<_> = s.c.agents().map(|a| a.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["b1", "b2"]);
    let events = s.events();
    let deleted: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Directory(d) => Some(d.deleted_agents.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(deleted, vec!["a1", "a2"], "subscribers are told too");
}

#[test]
fn one_agent_diff_is_one_peer_change_whatever_the_directory_size() {
    let mut s = Sim::new();
    let agents: Vec<Agent> = (0..2000u32)
        .map(|i| {
            let mut a = agent(&format!("a{i}"), &format!("ws{i}"), 1);
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            a.public_key = Some(b64(k));
            a.addresses = vec![IpAddr::from([100, 64, (i >> 8) as u8, i as u8])];
            a
        })
        .collect();
    let mut moved = agents[1234].clone();
    let (g, up) = s.connect(agents);
    moved.endpoints = vec!["10.1.2.3:4".parse().unwrap()];
    s.c.handle_control_update(s.now, g, diff(1, vec![moved], vec![]));
    let cmds = s.commands();
    let [Command::TunnelChanges {
        generation,
        peers,
        names,
    }] = cmds.as_slice()
    else {
        panic!("{cmds:?}");
    };
    assert_eq!(*generation, up);
    assert_eq!(peers.len(), 1);
    assert!(names.is_empty(), "names did not change");
    // An agent removed: one removal, plus its names.
    s.c.handle_control_update(s.now, g, diff(2, vec![], vec!["a7"]));
    let cmds = s.commands();
    let [Command::TunnelChanges { peers, names, .. }] = cmds.as_slice() else {
        panic!("{cmds:?}");
    };
    assert_eq!(peers.len(), 1);
    assert_eq!(names.len(), 2);
}

#[test]
fn stats_for_an_old_key_or_an_old_tunnel_are_ignored() {
    let mut s = Sim::new();
    let (g, up) = s.connect(vec![agent("a1", "api", 1)]);
    let report = |k: u8, rx: u64| PeerReport {
        key: key(k),
        last_handshake_ms: Some(1_700_000_000_000),
        rx_bytes: rx,
        tx_bytes: 1,
        rtt_us: Some(900),
        endpoint: None,
        relay: None,
        no_path: false,
    };
    s.c.handle_stats(s.now, up, vec![report(1, 10)]);
    let events = s.events();
    assert!(
        matches!(events.as_slice(), [Event::Stats(st)] if st[0].agent_id == "a1" && st[0].rx_bytes == 10),
        "{events:?}"
    );
    // The agent is re-created with a new key: its old figures go, and a
    // late report for the old key is attributed to nobody.
    let mut rekeyed = agent("a1", "api", 2);
    rekeyed.id = "a1".into();
    s.c.handle_control_update(s.now, g, diff(1, vec![rekeyed], vec![]));
    assert_eq!(s.c.peer_stats().count(), 0, "old key's figures dropped");
    s.events();
    s.c.handle_stats(s.now, up, vec![report(1, 99)]);
    assert!(s.events().is_empty(), "old key ignored");
    // A report of an older tunnel generation is ignored.
    s.c.handle_stats(s.now, up - 1, vec![report(2, 5)]);
    assert!(s.events().is_empty(), "old generation ignored");
    s.c.handle_stats(s.now, up, vec![report(2, 5)]);
    assert_eq!(s.c.peer_stats().next().unwrap().rx_bytes, 5);
}

#[test]
fn ping_targets_resolve_by_name_address_and_agent_id() {
    let mut s = Sim::new();
    let mut db = agent("a3", "db", 3);
    db.addresses = vec!["fd00::1:3".parse().unwrap()];
    db.name = "db".into();
    s.connect(vec![agent("a1", "api", 1), agent("a2", "web", 2), db]);
    let t = s.c.resolve_ping("api.warren", None).unwrap();
    assert_eq!(
        (t.agent_id.as_str(), t.address.to_string().as_str()),
        ("a1", "100.64.1.1")
    );
    assert_eq!(t.name, "api.warren", "the shortest name is shown");
    let t =
        s.c.resolve_ping("MAIN.web.alice.warren.", Some(250))
            .unwrap();
    assert_eq!(t.agent_id, "a2");
    assert_eq!(t.timeout, Duration::from_millis(250));
    assert_eq!(s.c.resolve_ping("fd00::1:1", None).unwrap().agent_id, "a1");
    assert_eq!(s.c.resolve_ping("a2", None).unwrap().agent_id, "a2");
    assert_eq!(s.c.resolve_ping("web/main", None).unwrap().agent_id, "a2");
    let db = s.c.resolve_ping("db", None).unwrap();
    assert_eq!(db.address.to_string(), "fd00::1:3", "only IPv6: that one");
    let ambiguous = s.c.resolve_ping("main", None).unwrap_err();
    assert_eq!(ambiguous.code, ErrorCode::BadRequest);
    assert!(ambiguous.message.contains("api.warren"), "{ambiguous:?}");
    assert!(s.c.resolve_ping("100.64.9.9", None).is_err());

    // Not connected: a clear reason.
    s.c.handle_stop(s.now);
    let e = s.c.resolve_ping("api.warren", None).unwrap_err();
    assert!(e.message.contains("warren up"), "{e:?}");
    // No data plane at all.
    let c = ClientState::new(ClientConfig::default());
    assert!(c
        .resolve_ping("x", None)
        .unwrap_err()
        .message
        .contains("--no-tunnel"));
}

#[test]
fn a_tunnel_that_dies_is_failed_then_retried_with_the_full_lists() {
    let mut s = Sim::new();
    let (g, up) = s.connect(vec![agent("a1", "api", 1)]);
    assert_eq!(s.tunnel_state(), TunnelState::Up);
    s.c.handle_stats(
        s.now,
        up,
        vec![PeerReport {
            key: key(1),
            last_handshake_ms: Some(1),
            rx_bytes: 1,
            tx_bytes: 1,
            rtt_us: None,
            endpoint: None,
            relay: None,
            no_path: false,
        }],
    );
    s.events();

    // The TUN was deleted under the data plane.
    s.c.handle_tunnel_report(
        s.now,
        up,
        TunnelState::Failed,
        Some("the TUN device went away".into()),
    );
    let info = s.c.session_info(s.now);
    assert_eq!(info.state, SessionState::Connected, "the session stays");
    let tunnel = info.tunnel.unwrap();
    assert_eq!(tunnel.state, TunnelState::Failed);
    assert_eq!(tunnel.error.as_deref(), Some("the TUN device went away"));
    assert_eq!(tunnel.generation, up);
    let events = s.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Stats(st) if st[0].last_handshake_ms.is_none())),
        "figures are cleared: {events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::SessionChanged(i) if i.tunnel.as_ref().unwrap().state == TunnelState::Failed)));

    // A diff while it is down is not sent (the retry carries everything).
    s.c.handle_control_update(s.now, g, diff(1, vec![agent("a2", "web", 2)], vec![]));
    assert!(s.commands().is_empty());

    let at = s.c.poll_timeout().expect("a retry is scheduled");
    assert!(at - s.now <= Duration::from_secs(1));
    s.now = at;
    s.c.handle_timeout(s.now);
    let cmds = s.commands();
    let [Command::TunnelUp(retry)] = cmds.as_slice() else {
        panic!("{cmds:?}");
    };
    assert_eq!(retry.generation, up + 1);
    assert_eq!(
        retry.peers.len(),
        2,
        "the retry has the agent added meanwhile"
    );
    // The old generation's late report is ignored.
    s.c.handle_tunnel_report(s.now, up, TunnelState::Up, None);
    assert_eq!(s.tunnel_state(), TunnelState::Starting);
    s.c.handle_tunnel_report(s.now, up + 1, TunnelState::Up, None);
    assert_eq!(s.tunnel_state(), TunnelState::Up);
    assert_eq!(s.c.poll_timeout(), None, "idle: nothing scheduled");

    // Down and up again works.
    s.c.handle_stop(s.now);
    let cmds = s.commands();
    assert!(
        matches!(cmds.as_slice(), [.., Command::TunnelDown { generation }] if *generation == up + 1)
            || cmds.iter().any(|c| matches!(c, Command::TunnelDown { .. })),
        "{cmds:?}"
    );
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::TunnelChanges { .. })),
        "no per-peer removal on the way down: {cmds:?}"
    );
    s.c.handle_tunnel_report(s.now, up + 1, TunnelState::Down, None);
    assert_eq!(s.tunnel_state(), TunnelState::Down);
    let (_, up3) = s.connect(vec![agent("a1", "api", 1)]);
    assert!(up3 > up + 1);
    assert_eq!(s.tunnel_state(), TunnelState::Up);
    assert!(RETRY_CAP >= Duration::from_secs(1));
}

#[test]
fn a_gap_in_the_stream_resubscribes() {
    let mut s = Sim::new();
    let (g, _) = s.connect(vec![agent("a1", "api", 1)]);
    s.c.handle_control_update(s.now, g, diff(5, vec![], vec!["a1"]));
    let cmds = s.commands();
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::DisconnectControl { generation } if *generation == g)),
        "{cmds:?}"
    );
    assert_eq!(s.state(), SessionState::Reconnecting);
    assert_eq!(s.c.agent_count(), 1, "the gap changed nothing");
}

#[test]
fn bad_start_requests_get_a_clear_error_and_change_nothing() {
    let mut s = Sim::new();
    let e =
        s.c.handle_start(
            s.now,
            "coord.example",
            Secret::new("t"),
            None,
            SessionKeys::from_secret([1; 32]),
            None,
        )
        .unwrap_err();
    assert!(e.message.contains("https://"), "{e:?}");
    let e =
        s.c.handle_start(
            s.now,
            "https://coord.example",
            Secret::new(""),
            None,
            SessionKeys::from_secret([1; 32]),
            None,
        )
        .unwrap_err();
    assert!(e.message.contains("warren login"), "{e:?}");
    assert!(s.commands().is_empty());
    assert_eq!(s.state(), SessionState::Disconnected);
    assert!(s.c.handle_reconnect(s.now).is_err());
}

#[test]
fn plain_http_is_refused_unless_the_coordinator_is_on_loopback() {
    let start = |s: &mut Sim, url: &str| {
        s.c.handle_start(
            s.now,
            url,
            Secret::new("wut_id_secret"),
            None,
            SessionKeys::from_secret([1; 32]),
            None,
        )
    };
    for url in [
        "http://coord.example",
        "http://10.9.0.1:8080",
        "http://203.0.113.12:443/",
        "http://[fd00::1]:80",
        "http://127.0.0.1.example.com",
    ] {
        let mut s = Sim::new();
        let e = start(&mut s, url).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{url}");
        assert!(
            e.message.contains("use https://") && e.message.contains("unencrypted"),
            "{url}: {e:?}"
        );
        assert!(s.commands().is_empty(), "{url}: nothing is sent");
        assert_eq!(s.state(), SessionState::Disconnected);
    }
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:8080/",
        "http://[::1]:8080",
        "https://10.9.0.1:8443",
    ] {
        let mut s = Sim::new();
        start(&mut s, url).unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert!(s.next_connection().is_some(), "{url}");
    }
}

#[test]
fn without_a_data_plane_the_directory_is_kept_but_no_peers_or_names() {
    let mut c = ClientState::new(ClientConfig::default());
    let now = Instant::now();
    c.handle_start(
        now,
        "https://coord.example",
        Secret::new("wut_id_secret"),
        None,
        SessionKeys::from_secret([9; 32]),
        None,
    )
    .unwrap();
    let g = std::iter::from_fn(|| c.poll_command())
        .find_map(|cmd| match cmd {
            Command::ConnectControl(cc) => Some(cc.generation),
            _ => None,
        })
        .unwrap();
    c.handle_control_connected(now, g, welcome());
    c.handle_control_update(
        now,
        g,
        snapshot(0, false, vec![ws("api")], vec![agent("a1", "api", 1)]),
    );
    assert_eq!(c.session_info(now).state, SessionState::Connected);
    assert_eq!(c.agent_count(), 1);
    assert_eq!((c.peer_count(), c.name_count()), (0, 0));
    assert!(c.session_info(now).tunnel.is_none());
    let cmds: Vec<_> = std::iter::from_fn(|| c.poll_command()).collect();
    assert!(cmds.is_empty(), "{cmds:?}");
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, Event::Directory(_))));
}
