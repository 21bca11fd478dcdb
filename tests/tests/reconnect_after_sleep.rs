//! The laptop-sleep bug: the coordinator goes away, every workspace restarts
//! (new agent ids and keys) and one is deleted, the coordinator comes back.
//! The helper must treat the new snapshot as a snapshot: afterwards both the
//! CLI and a subscribed GUI-style client hold exactly the new agents.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use warren_e2e::{Coordinator, Helper, MirrorWatcher, TestDir};
use warren_proto::ipc::SessionState;

const WORKSPACES: [&str; 3] = ["ws1", "ws2", "ws3"];
const AGENTS: [&str; 2] = ["a", "b"];

#[test]
fn snapshot_after_outage_replaces_state() {
    let dir = TestDir::new("reconnect");
    let mut coord = Coordinator::start(dir.path());
    let token = coord.user_with_token("alice");
    for ws in WORKSPACES {
        coord.add_workspace("alice", ws);
        for a in AGENTS {
            coord.add_agent("alice", ws, a);
        }
    }
    let helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());
    cli.login_up_connected(&coord.url, &token);
    // Connected (Welcome) comes before the first snapshot.
    let (st, _) = warren_e2e::wait_until(Duration::from_secs(5), "the six agents", || {
        cli.try_status().filter(|s| s.agents.len() == 6)
    });
    let old_ids: BTreeSet<String> = st.agent_ids().into_iter().collect();
    let old_keys: BTreeSet<Option<String>> =
        st.agents.iter().map(|a| a.public_key.clone()).collect();

    let watcher = MirrorWatcher::start(&helper.socket);
    watcher.wait(Duration::from_secs(5), "the full state", |m| {
        m.is_complete() && m.agents.len() == 6
    });

    // The coordinator vanishes; the helper notices and retries, saying why.
    coord.kill();
    let mut last = None;
    let st = warren_e2e::poll_until(Duration::from_secs(10), || {
        let s = cli.try_status()?;
        let unreachable = s.session.state == SessionState::Reconnecting
            && s
                .session
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("can't reach the coordinator"));
        last = Some(s.session.clone());
        unreachable.then_some(s)
    })
    .unwrap_or_else(|| {
        panic!("with the coordinator down, the session should be Reconnecting because it \"can't reach the coordinator\"; last: {last:?}")
    });
    assert!(st.session.retry_in_ms.is_some(), "{:?}", st.session);

    // While it is down, every workspace restarts and ws3 is deleted.
    for ws in WORKSPACES {
        for a in AGENTS {
            coord.rm_agent("alice", ws, a);
            coord.add_agent("alice", ws, a);
        }
    }
    coord.rm_workspace("alice", "ws3");

    coord.restart();
    let back = Instant::now();
    let expected: BTreeSet<(String, String)> = ["ws1", "ws2"]
        .iter()
        .flat_map(|ws| AGENTS.iter().map(move |a| (ws.to_string(), a.to_string())))
        .collect();

    // The CLI's view: connected again, exactly the four new agents.
    let mut last = None;
    let st = warren_e2e::poll_until(Duration::from_secs(5), || {
        let s = cli.try_status()?;
        let ok = s.session.state == SessionState::Connected
            && s.agents.len() == 4
            && s.agents.iter().all(|a| !old_ids.contains(&a.id));
        last = Some(s.clone());
        ok.then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "helper did not resync within 5 s of the coordinator's return; last status: {last:#?}"
        )
    });
    let took = back.elapsed();
    eprintln!("status resynced {took:?} after the coordinator came back");
    let seen: BTreeSet<(String, String)> = st
        .agents
        .iter()
        .map(|a| {
            let ws = st
                .workspaces
                .iter()
                .find(|w| w.id == a.workspace_id)
                .unwrap_or_else(|| panic!("agent {} has no listed workspace", a.name));
            (ws.name.clone(), a.name.clone())
        })
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(st.workspace_names(), vec!["ws1", "ws2"]);
    for a in &st.agents {
        assert!(
            !old_keys.contains(&a.public_key) || a.public_key.is_none(),
            "agent {} kept an old key",
            a.name
        );
    }

    // The subscriber's mirror says the same, with no stale agent.
    watcher.wait(Duration::from_secs(5), "the subscriber to resync", |m| {
        m.is_complete()
            && m.agents.len() == 4
            && m.agents.keys().all(|id| !old_ids.contains(id))
            && m.workspaces.values().all(|w| w.name != "ws3")
    });
    let m = watcher.mirror();
    let mirror_ids: BTreeSet<String> = m.agents.keys().cloned().collect();
    let status_ids: BTreeSet<String> = st.agent_ids().into_iter().collect();
    assert_eq!(mirror_ids, status_ids, "subscriber and status disagree");
    assert_eq!(
        m.session.as_ref().map(|s| s.state),
        Some(SessionState::Connected)
    );
    // Nothing was mixed in afterwards. Barrier: one more change made at the
    // coordinator now; the stream is ordered, so once the subscriber has it,
    // anything stale the helper would have sent after the resync has
    // arrived too.
    coord.add_agent("alice", "ws1", "late");
    watcher.wait(Duration::from_secs(5), "agent ws1/late", |m| {
        m.agents.values().any(|a| a.name == "late")
    });
    let m = watcher.mirror();
    let after: BTreeSet<String> = m.agents.keys().cloned().collect();
    assert_eq!(after.len(), 5, "{:?}", m.agents.keys());
    assert!(
        mirror_ids.is_subset(&after),
        "resynced agents went away: {after:?}"
    );
    assert!(
        after.is_disjoint(&old_ids),
        "stale agents came back: {after:?}"
    );
    assert!(
        m.workspaces.values().all(|w| w.name != "ws3"),
        "the deleted workspace came back"
    );
    assert!(watcher.ended().is_none(), "{:?}", watcher.ended());
}
