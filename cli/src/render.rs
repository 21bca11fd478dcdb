//! How `warren status` and `warren watch` show the helper's state: a table
//! for people and one JSON object for scripts.

use serde_json::json;
use warren_ipc::StateMirror;
use warren_proto::ipc::{Handshake, PathKind, PeerStats, SessionInfo, SessionState, TunnelState};

/// The `tunnel` object of one agent in `--json` output.
fn tunnel_json(stats: &PeerStats, now_ms: u64) -> serde_json::Value {
    let handshake = stats.handshake(now_ms);
    let age = match handshake {
        Handshake::Recent { age_s } | Handshake::Stale { age_s } => Some(age_s),
        Handshake::Never => None,
    };
    json!({
        "handshake": handshake.as_str(),
        "last_handshake_ms": stats.last_handshake_ms,
        "handshake_age_s": age,
        "rx_bytes": stats.rx_bytes,
        "tx_bytes": stats.tx_bytes,
        "rtt_ms": stats.rtt_us.map(|us| us as f64 / 1000.0),
        "endpoint": stats.endpoint,
        "path": stats.path(now_ms).as_str(),
        "relay": stats.relay,
        "remote": stats.endpoint,
    })
}

/// `{"helper_version", "session", "workspaces", "agents"}`, workspaces sorted
/// by (owner, name) and agents by (workspace name, agent name); each agent
/// carries `tunnel` (its WireGuard figures at wall-clock `now_ms`, or null
/// when the tunnel has none).
pub fn status_json(helper_version: &str, mirror: &StateMirror, now_ms: u64) -> serde_json::Value {
    let session = mirror
        .session
        .clone()
        .unwrap_or_else(SessionInfo::disconnected);
    let agents: Vec<serde_json::Value> = mirror
        .sorted_agents()
        .into_iter()
        .map(|agent| {
            let mut v = json!(agent);
            if let Some(obj) = v.as_object_mut() {
                let tunnel = mirror
                    .stats
                    .get(&agent.id)
                    .map(|s| tunnel_json(s, now_ms))
                    .unwrap_or(serde_json::Value::Null);
                obj.insert("tunnel".into(), tunnel);
            }
            v
        })
        .collect();
    json!({
        "helper_version": helper_version,
        "session": session,
        "workspaces": mirror.sorted_workspaces(),
        "agents": agents,
    })
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "0.42 ms", "12 ms".
pub fn human_rtt(us: u64) -> String {
    if us < 10_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{} ms", us / 1000)
    }
}

/// The PATH cell: "direct", "relayed via HOST" or "none".
pub fn path_cell(stats: &PeerStats, now_ms: u64) -> String {
    match stats.path(now_ms) {
        PathKind::Relayed => {
            let relay = stats.relay.as_deref().unwrap_or("?");
            // The host, without the port: that is how people name a relay.
            let host = relay
                .rsplit_once(':')
                .map_or(relay, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            format!("relayed via {host}")
        }
        kind => kind.as_str().to_string(),
    }
}

/// One line describing the session.
pub fn session_line(s: &SessionInfo) -> String {
    let mut line = format!("Session: {}", s.state);
    match s.state {
        SessionState::Connected | SessionState::Connecting => {
            if let Some(user) = &s.user {
                line.push_str(&format!(" as {user}"));
            }
            if let Some(url) = &s.url {
                line.push_str(&format!(" to {url}"));
            }
        }
        SessionState::Reconnecting | SessionState::Failed => {
            if let Some(url) = &s.url {
                line.push_str(&format!(" ({url})"));
            }
            if let Some(reason) = &s.reason {
                line.push_str(&format!(" — {reason}"));
            }
            if let Some(ms) = s.retry_in_ms {
                line.push_str(&format!(" (retrying in {})", human_ms(ms)));
            }
        }
        SessionState::Disconnected => {
            if let Some(reason) = &s.reason {
                line.push_str(&format!(" — {reason}"));
            }
        }
    }
    line
}

/// "Tunnel: up on warren0, UDP port 51820" while connected, or why it
/// failed; nothing when the helper runs without a data plane or the session
/// is not connected.
pub fn tunnel_line(s: &SessionInfo) -> Option<String> {
    let t = s.tunnel.as_ref()?;
    match (s.state, t.state) {
        (_, TunnelState::Failed) => Some(format!(
            "Tunnel: failed — {}",
            t.error.as_deref().unwrap_or("see the helper's log")
        )),
        (SessionState::Connected | SessionState::Reconnecting, state) => {
            let mut line = format!(
                "Tunnel: {} on {}, UDP port {}",
                state.as_str(),
                t.interface,
                t.listen_port
            );
            // A running tunnel can still carry a problem (the DNS stub).
            if let Some(note) = &t.error {
                line.push_str(&format!(" — {note}"));
            }
            Some(line)
        }
        _ => None,
    }
}

/// "Warning: …" for each thing the helper refused or cut from what the
/// coordinator sent (an agent left out, endpoints ignored, the cap).
pub fn notice_lines(s: &SessionInfo) -> Vec<String> {
    s.notices
        .iter()
        .map(|n| format!("Warning: {}", n.message))
        .collect()
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{} s", ms.div_ceil(1000))
    }
}

/// The session line, then WORKSPACE / AGENT / DNS NAME / STATUS rows, plus
/// HANDSHAKE / RX / TX / RTT / ENDPOINT once the tunnel reports figures
/// (handshake freshness at wall-clock `now_ms`).
pub fn render_table(mirror: &StateMirror, now_ms: u64) -> String {
    let session = mirror
        .session
        .clone()
        .unwrap_or_else(SessionInfo::disconnected);
    let mut out = session_line(&session);
    out.push('\n');
    if let Some(line) = tunnel_line(&session) {
        out.push_str(&line);
        out.push('\n');
    }
    for line in notice_lines(&session) {
        out.push_str(&line);
        out.push('\n');
    }
    if mirror.workspaces.is_empty() && mirror.agents.is_empty() {
        out.push_str("No workspaces yet.\n");
        return out;
    }
    let me = session.user.as_deref();
    let ws_label = |owner: &str, name: &str| {
        if Some(owner) == me || me.is_none() {
            name.to_string()
        } else {
            format!("{owner}/{name}")
        }
    };

    let with_tunnel = !mirror.stats.is_empty();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for agent in mirror.sorted_agents() {
        let ws = match mirror.workspaces.get(&agent.workspace_id) {
            Some(w) => ws_label(&w.owner, &w.name),
            None => agent.workspace_id.clone(),
        };
        let mut row = vec![
            ws,
            agent.name.clone(),
            agent.primary_dns_name().unwrap_or("-").to_string(),
            if agent.online { "online" } else { "offline" }.to_string(),
        ];
        if with_tunnel {
            match mirror.stats.get(&agent.id) {
                Some(s) => row.extend([
                    s.handshake(now_ms).to_string(),
                    path_cell(s, now_ms),
                    human_bytes(s.rx_bytes),
                    human_bytes(s.tx_bytes),
                    s.rtt_us.map(human_rtt).unwrap_or_else(|| "-".into()),
                    s.endpoint
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]),
                None => row.extend([
                    "never".into(),
                    "none".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]),
            }
        }
        rows.push(row);
    }
    // Workspaces with no agent still deserve a line.
    for w in mirror.sorted_workspaces() {
        if !mirror.agents.values().any(|a| a.workspace_id == w.id) {
            rows.push(vec![
                ws_label(&w.owner, &w.name),
                "-".into(),
                "-".into(),
                "no agents".into(),
            ]);
        }
    }
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));

    let mut header = vec!["WORKSPACE", "AGENT", "DNS NAME", "STATUS"];
    if with_tunnel {
        header.extend(["HANDSHAKE", "PATH", "RX", "TX", "RTT", "ENDPOINT"]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out.push('\n');
    let mut push_row = |cells: &[&str]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push_row(&cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::Event;
    use warren_proto::model::{Agent, Workspace};

    fn ws(id: &str, name: &str, owner: &str) -> Workspace {
        Workspace {
            id: id.into(),
            name: name.into(),
            owner: owner.into(),
        }
    }

    fn agent(id: &str, name: &str, ws: &str, online: bool, dns: &[&str]) -> Agent {
        Agent {
            id: id.into(),
            name: name.into(),
            workspace_id: ws.into(),
            public_key: Some("k".into()),
            addresses: vec!["100.64.0.2".parse().unwrap()],
            endpoints: vec![],
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            online,
        }
    }

    fn mirror(session: SessionInfo, w: Vec<Workspace>, a: Vec<Agent>) -> StateMirror {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &Event::State {
                part: 0,
                last: true,
                session,
                workspaces: w,
                agents: a,
                stats: vec![],
            },
        )
        .unwrap();
        m
    }

    fn connected() -> SessionInfo {
        SessionInfo {
            state: SessionState::Connected,
            url: Some("https://c.example".into()),
            user: Some("alice".into()),
            ..SessionInfo::disconnected()
        }
    }

    fn sample() -> StateMirror {
        mirror(
            connected(),
            vec![
                ws("w2", "web", "alice"),
                ws("w1", "api", "alice"),
                ws("w3", "db", "bob"),
                ws("w4", "empty", "alice"),
            ],
            vec![
                agent("a3", "main", "w2", false, &["main.web.alice.warren"]),
                agent(
                    "a1",
                    "main",
                    "w1",
                    true,
                    &["main.api.alice.warren", "api.warren"],
                ),
                agent("a2", "gpu", "w1", true, &["gpu.api.alice.warren"]),
                agent("a4", "main", "w3", true, &[]),
            ],
        )
    }

    const NOW: u64 = 1_800_000_000_000;

    fn with_stats(mut m: StateMirror) -> StateMirror {
        let stat = |id: &str, ago_ms: Option<u64>, rx, rtt| PeerStats {
            agent_id: id.into(),
            last_handshake_ms: ago_ms.map(|ago| NOW - ago),
            rx_bytes: rx,
            tx_bytes: 2048,
            rtt_us: rtt,
            endpoint: Some("10.0.0.2:51820".parse().unwrap()),
            relay: None,
            no_path: false,
        };
        let stats = vec![
            stat("a1", Some(4_200), 1_572_864, Some(420)),
            stat("a2", Some(200_000), 10, Some(12_345)),
            stat("a4", None, 0, None),
        ];
        m.apply(1, &Event::PeerStats { stats }).unwrap();
        m
    }

    #[test]
    fn table_shows_handshake_freshness_and_traffic() {
        let table = render_table(&with_stats(sample()), NOW);
        let expected = "\
Session: connected as alice to https://c.example

WORKSPACE  AGENT  DNS NAME               STATUS     HANDSHAKE         PATH    RX       TX       RTT      ENDPOINT
api        gpu    gpu.api.alice.warren   online     stale             none    10 B     2.0 KiB  12 ms    10.0.0.2:51820
api        main   api.warren             online     handshake 4s ago  direct  1.5 MiB  2.0 KiB  0.42 ms  10.0.0.2:51820
bob/db     main   -                      online     never             none    0 B      2.0 KiB  -        10.0.0.2:51820
empty      -      -                      no agents
web        main   main.web.alice.warren  offline    never             none    -        -        -        -
";
        assert_eq!(table, expected);
    }

    #[test]
    fn json_carries_tunnel_figures_per_agent() {
        let v = status_json("0.1.0", &with_stats(sample()), NOW);
        let by_id = |id: &str| {
            v["agents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == id)
                .unwrap()["tunnel"]
                .clone()
        };
        let a1 = by_id("a1");
        assert_eq!(a1["handshake"], "recent");
        assert_eq!(a1["handshake_age_s"], 4);
        assert_eq!(a1["rx_bytes"], 1_572_864);
        assert_eq!(a1["rtt_ms"], 0.42);
        assert_eq!(a1["endpoint"], "10.0.0.2:51820");
        assert_eq!(a1["path"], "direct");
        assert_eq!(a1["relay"], serde_json::Value::Null);
        assert_eq!(a1["remote"], "10.0.0.2:51820");
        assert_eq!(by_id("a2")["handshake"], "stale");
        assert_eq!(by_id("a2")["path"], "none", "a stale handshake is no path");
        assert_eq!(by_id("a4")["handshake"], "never");
        assert_eq!(by_id("a4")["last_handshake_ms"], serde_json::Value::Null);
        assert_eq!(by_id("a3"), serde_json::Value::Null);
    }

    #[test]
    fn the_path_cell_names_the_relay_host() {
        let mut s = PeerStats {
            agent_id: "a".into(),
            last_handshake_ms: Some(NOW - 1_000),
            rx_bytes: 0,
            tx_bytes: 0,
            rtt_us: None,
            endpoint: Some("203.0.113.9:3478".parse().unwrap()),
            relay: None,
            no_path: false,
        };
        assert_eq!(path_cell(&s, NOW), "direct");
        s.relay = Some("turn1.example.com:3478".into());
        assert_eq!(path_cell(&s, NOW), "relayed via turn1.example.com");
        s.relay = Some("[2001:db8::1]:3478".into());
        assert_eq!(path_cell(&s, NOW), "relayed via 2001:db8::1");
        // The path layer lost every path: none, however fresh the handshake.
        s.no_path = true;
        assert_eq!(path_cell(&s, NOW), "none");
        s.no_path = false;
        s.last_handshake_ms = None;
        assert_eq!(path_cell(&s, NOW), "none");
    }

    #[test]
    fn tunnel_line_says_where_it_runs_or_why_it_failed() {
        use warren_proto::ipc::TunnelInfo;
        let mut s = connected();
        assert_eq!(tunnel_line(&s), None, "no data plane, no line");
        s.tunnel = Some(TunnelInfo {
            state: TunnelState::Up,
            error: None,
            interface: "warren0".into(),
            listen_port: 51820,
            generation: 1,
        });
        assert_eq!(
            tunnel_line(&s).unwrap(),
            "Tunnel: up on warren0, UDP port 51820"
        );
        s.tunnel = Some(TunnelInfo {
            state: TunnelState::Failed,
            error: Some("run the helper as root".into()),
            interface: "warren0".into(),
            listen_port: 51820,
            generation: 1,
        });
        assert_eq!(
            tunnel_line(&s).unwrap(),
            "Tunnel: failed — run the helper as root"
        );
        s.state = SessionState::Disconnected;
        s.tunnel.as_mut().unwrap().state = TunnelState::Down;
        assert_eq!(tunnel_line(&s), None);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(human_rtt(420), "0.42 ms");
        assert_eq!(human_rtt(12_345), "12 ms");
    }

    #[test]
    fn table_lists_agents_sorted_with_short_names() {
        let table = render_table(&sample(), NOW);
        let expected = "\
Session: connected as alice to https://c.example

WORKSPACE  AGENT  DNS NAME               STATUS
api        gpu    gpu.api.alice.warren   online
api        main   api.warren             online
bob/db     main   -                      online
empty      -      -                      no agents
web        main   main.web.alice.warren  offline
";
        assert_eq!(table, expected);
    }

    #[test]
    fn empty_table_and_session_lines() {
        let m = mirror(SessionInfo::disconnected(), vec![], vec![]);
        assert_eq!(
            render_table(&m, NOW),
            "Session: disconnected\nNo workspaces yet.\n"
        );
        let reconnecting = SessionInfo {
            state: SessionState::Reconnecting,
            url: Some("https://c.example".into()),
            reason: Some("can't reach the coordinator".into()),
            retry_in_ms: Some(2500),
            ..SessionInfo::disconnected()
        };
        assert_eq!(
            session_line(&reconnecting),
            "Session: reconnecting (https://c.example) — can't reach the coordinator (retrying in 3 s)"
        );
    }

    #[test]
    fn notices_are_warnings_under_the_session_and_in_json() {
        use warren_proto::ipc::{Notice, NoticeKind};
        let mut session = connected();
        session.notices = vec![Notice {
            kind: NoticeKind::AgentRefused,
            agent_id: Some("a9".into()),
            message: "agent db (a9) was left out: its address 10.1.2.3 is outside the deployment's ranges; ask the deployment's administrator".into(),
        }];
        let m = mirror(session, vec![], vec![]);
        let table = render_table(&m, NOW);
        assert!(
            table.contains("\nWarning: agent db (a9) was left out: its address 10.1.2.3"),
            "{table}"
        );
        let v = status_json("0.1.0", &m, NOW);
        assert_eq!(v["session"]["notices"][0]["kind"], "agent_refused");
        assert_eq!(v["session"]["notices"][0]["agent_id"], "a9");
    }

    #[test]
    fn json_shape_and_sorting() {
        let v = status_json("0.1.0", &sample(), NOW);
        let obj = v.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["agents", "helper_version", "session", "workspaces"]);
        assert_eq!(v["helper_version"], "0.1.0");
        assert_eq!(v["session"]["state"], "connected");
        assert_eq!(v["session"]["user"], "alice");
        let ws: Vec<_> = v["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                format!(
                    "{}/{}",
                    w["owner"].as_str().unwrap(),
                    w["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(ws, ["alice/api", "alice/empty", "alice/web", "bob/db"]);
        let agents: Vec<_> = v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        // (workspace name, agent name): api/gpu, api/main, db/main, web/main.
        assert_eq!(agents, ["a2", "a1", "a4", "a3"]);
        // Round-trips into the proto types.
        let _: Vec<Agent> = serde_json::from_value(v["agents"].clone()).unwrap();
        let _: SessionInfo = serde_json::from_value(v["session"].clone()).unwrap();
    }
}
