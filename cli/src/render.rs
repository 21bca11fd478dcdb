//! How `warren status` and `warren watch` show the helper's state: a table
//! for people and one JSON object for scripts.

use serde_json::json;
use warren_ipc::StateMirror;
use warren_proto::ipc::{SessionInfo, SessionState};
use warren_proto::model::Agent;

/// `{"helper_version", "session", "workspaces", "agents"}`, workspaces sorted
/// by (owner, name) and agents by (workspace name, agent name).
pub fn status_json(helper_version: &str, mirror: &StateMirror) -> serde_json::Value {
    let session = mirror
        .session
        .clone()
        .unwrap_or_else(SessionInfo::disconnected);
    json!({
        "helper_version": helper_version,
        "session": session,
        "workspaces": mirror.sorted_workspaces(),
        "agents": mirror.sorted_agents(),
    })
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

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{} s", ms.div_ceil(1000))
    }
}

/// The shortest DNS name (ties: alphabetical), the one people type.
fn best_dns_name(agent: &Agent) -> &str {
    agent
        .dns_names
        .iter()
        .min_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)))
        .map(String::as_str)
        .unwrap_or("-")
}

/// The session line, then WORKSPACE / AGENT / DNS NAME / STATUS rows.
pub fn render_table(mirror: &StateMirror) -> String {
    let session = mirror
        .session
        .clone()
        .unwrap_or_else(SessionInfo::disconnected);
    let mut out = session_line(&session);
    out.push('\n');
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

    let mut rows: Vec<[String; 4]> = Vec::new();
    for agent in mirror.sorted_agents() {
        let ws = match mirror.workspaces.get(&agent.workspace_id) {
            Some(w) => ws_label(&w.owner, &w.name),
            None => agent.workspace_id.clone(),
        };
        rows.push([
            ws,
            agent.name.clone(),
            best_dns_name(agent).to_string(),
            if agent.online { "online" } else { "offline" }.to_string(),
        ]);
    }
    // Workspaces with no agent still deserve a line.
    for w in mirror.sorted_workspaces() {
        if !mirror.agents.values().any(|a| a.workspace_id == w.id) {
            rows.push([
                ws_label(&w.owner, &w.name),
                "-".into(),
                "-".into(),
                "no agents".into(),
            ]);
        }
    }
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));

    let header = ["WORKSPACE", "AGENT", "DNS NAME", "STATUS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out.push('\n');
    let mut push_row = |cells: [&str; 4]| {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(header);
    for row in &rows {
        push_row([&row[0], &row[1], &row[2], &row[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::Event;
    use warren_proto::model::Workspace;

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

    #[test]
    fn table_lists_agents_sorted_with_short_names() {
        let table = render_table(&sample());
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
            render_table(&m),
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
    fn json_shape_and_sorting() {
        let v = status_json("0.1.0", &sample());
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
