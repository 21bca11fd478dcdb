//! What a subscriber knows after applying the events it received (sans-IO).
//!
//! A `State` (part 0 up to its last part) replaces everything: once the last
//! part is in, whatever it did not name is gone, so agents that vanished while
//! we weren't looking disappear. Diffs apply on top, strictly in `seq` order.
//! A gap is reported so the caller can resubscribe instead of showing a state
//! that silently drifted. The collections are [`warren_session::Replica`]s,
//! the same snapshot-then-diff collection the helper's directory uses.

use warren_proto::ipc::{Event, PeerStats, SessionInfo};
use warren_proto::model::{Agent, AgentId, Workspace, WorkspaceId};
use warren_session::{Replica, SeqGap, Sequence};

/// Why an event could not be applied. The mirror is unchanged; resubscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    #[error("missed events from the helper (expected #{expected}, got #{got}); resubscribing")]
    Gap { expected: u64, got: u64 },
    #[error("the helper sent an update before the full state; resubscribing")]
    NotReady,
    #[error("the helper sent state part {got} where part {expected} was expected; resubscribing")]
    PartOutOfOrder { expected: u32, got: u32 },
}

/// The helper's state as seen by one subscriber. The collections iterate in
/// id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateMirror {
    pub session: Option<SessionInfo>,
    pub workspaces: Replica<WorkspaceId, Workspace>,
    pub agents: Replica<AgentId, Agent>,
    /// Latest tunnel statistics per agent (only agents the tunnel knows).
    pub stats: Replica<AgentId, PeerStats>,
    /// The IPC stream's order: a `State` part 0 is event 0, and every later
    /// event must carry the next number.
    seq: Sequence,
    /// Next expected `State` part while the state is incomplete.
    next_part: u32,
    complete: bool,
}

impl StateMirror {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event received with `seq`.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), MirrorError> {
        if let Event::State { part: 0, .. } = event {
            if seq != 0 {
                return Err(MirrorError::Gap {
                    expected: 0,
                    got: seq,
                });
            }
            // A new state, even over an unfinished one: what it does not name
            // goes when its last part is in.
            self.workspaces.begin_snapshot();
            self.agents.begin_snapshot();
            self.stats.begin_snapshot();
            self.seq.restart(0);
            self.next_part = 0;
            self.complete = false;
            return self.apply_state_part(event);
        }

        // Checked on a copy: a refused event must leave the mirror as it was.
        let mut next = self.seq;
        next.advance(seq).map_err(|gap| match gap {
            SeqGap {
                expected_prev: None,
                ..
            } => MirrorError::NotReady,
            SeqGap {
                expected_prev: Some(prev),
                got,
            } => MirrorError::Gap {
                expected: prev.wrapping_add(1),
                got,
            },
        })?;
        match event {
            Event::State { .. } => self.apply_state_part(event)?,
            Event::PeerUpdate {
                upserted_workspaces,
                upserted_agents,
                deleted_workspaces,
                deleted_agents,
            } => {
                self.upsert(upserted_workspaces, upserted_agents);
                for id in deleted_agents {
                    self.agents.remove(id);
                    self.stats.remove(id);
                }
                for id in deleted_workspaces {
                    self.workspaces.remove(id);
                }
                if !deleted_workspaces.is_empty() {
                    let orphans = self
                        .agents
                        .remove_where(|_, a| deleted_workspaces.contains(&a.workspace_id));
                    self.forget_stats(&orphans);
                }
            }
            Event::SessionChanged { session } => self.session = Some(session.clone()),
            Event::Log { .. } => {}
            Event::PeerStats { stats } => self.upsert_stats(stats),
        }
        self.seq = next;
        Ok(())
    }

    /// Applies the next part of a `State` whose part 0 began the snapshot.
    fn apply_state_part(&mut self, event: &Event) -> Result<(), MirrorError> {
        let Event::State {
            part,
            last,
            session,
            workspaces,
            agents,
            stats,
        } = event
        else {
            return Ok(());
        };
        if self.complete || *part != self.next_part {
            // After the last part only a new part 0 may start a state.
            let expected = if self.complete { 0 } else { self.next_part };
            return Err(MirrorError::PartOutOfOrder {
                expected,
                got: *part,
            });
        }
        self.session = Some(session.clone());
        self.upsert(workspaces, agents);
        self.upsert_stats(stats);
        self.next_part += 1;
        if *last {
            self.complete = true;
            self.workspaces.end_snapshot();
            let gone = self.agents.end_snapshot();
            self.forget_stats(&gone);
            self.stats.end_snapshot();
        }
        Ok(())
    }

    fn upsert_stats(&mut self, stats: &[PeerStats]) {
        for s in stats {
            // Stats can race an agent's deletion; keep only known agents.
            if self.agents.contains_key(&s.agent_id) {
                self.stats.upsert(s.agent_id.clone(), s.clone());
            }
        }
    }

    fn forget_stats(&mut self, agents: &[AgentId]) {
        for id in agents {
            self.stats.remove(id);
        }
    }

    fn upsert(&mut self, workspaces: &[Workspace], agents: &[Agent]) {
        for w in workspaces {
            self.workspaces.upsert(w.id.clone(), w.clone());
        }
        for a in agents {
            self.agents.upsert(a.id.clone(), a.clone());
        }
    }

    /// The helper's number of the last event applied (the mirror is the
    /// helper's state as of that event), once a `State` started the stream.
    pub fn last_seq(&self) -> Option<u64> {
        self.seq.last()
    }

    /// Whether the last `State` part has arrived (the mirror is worth showing).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Forgets everything, e.g. before resubscribing.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Workspaces sorted by (owner, name), as people read them.
    pub fn sorted_workspaces(&self) -> Vec<&Workspace> {
        let mut v: Vec<&Workspace> = self.workspaces.values().collect();
        v.sort_by(|a, b| (&a.owner, &a.name, &a.id).cmp(&(&b.owner, &b.name, &b.id)));
        v
    }

    /// Agents sorted by (workspace name, agent name). An agent whose
    /// workspace is unknown sorts by its workspace id.
    pub fn sorted_agents(&self) -> Vec<&Agent> {
        let mut v: Vec<&Agent> = self.agents.values().collect();
        v.sort_by(|a, b| {
            let ka = (self.workspace_name(a), &a.name, &a.id);
            let kb = (self.workspace_name(b), &b.name, &b.id);
            ka.cmp(&kb)
        });
        v
    }

    /// The name of an agent's workspace (its id if the workspace is unknown).
    pub fn workspace_name<'a>(&'a self, agent: &'a Agent) -> &'a str {
        self.workspaces
            .get(&agent.workspace_id)
            .map(|w| w.name.as_str())
            .unwrap_or(agent.workspace_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::{LogLine, SessionState};

    fn ws(id: &str, name: &str, owner: &str) -> Workspace {
        Workspace {
            id: id.into(),
            name: name.into(),
            owner: owner.into(),
        }
    }

    fn agent(id: &str, name: &str, ws: &str) -> Agent {
        Agent {
            id: id.into(),
            name: name.into(),
            workspace_id: ws.into(),
            public_key: None,
            addresses: vec![],
            endpoints: vec![],
            dns_names: vec![],
            online: true,
        }
    }

    fn session(state: SessionState) -> SessionInfo {
        SessionInfo {
            state,
            ..SessionInfo::disconnected()
        }
    }

    fn state(part: u32, last: bool, w: Vec<Workspace>, a: Vec<Agent>) -> Event {
        Event::State {
            part,
            last,
            session: session(SessionState::Connected),
            workspaces: w,
            agents: a,
            stats: vec![],
        }
    }

    fn diff(uw: Vec<Workspace>, ua: Vec<Agent>, dw: &[&str], da: &[&str]) -> Event {
        Event::PeerUpdate {
            upserted_workspaces: uw,
            upserted_agents: ua,
            deleted_workspaces: dw.iter().map(|s| s.to_string()).collect(),
            deleted_agents: da.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn snapshot_replaces_everything() {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &state(
                0,
                true,
                vec![ws("w1", "api", "alice")],
                vec![agent("a-old", "main", "w1")],
            ),
        )
        .unwrap();
        m.apply(
            1,
            &diff(vec![], vec![agent("a-other", "db", "w1")], &[], &[]),
        )
        .unwrap();
        assert_eq!(m.agents.len(), 2);
        // After a sleep the workspace restarted with a new agent: the new
        // snapshot must not keep the old ones.
        m.apply(
            0,
            &state(
                0,
                true,
                vec![ws("w1", "api", "alice")],
                vec![agent("a-new", "main", "w1")],
            ),
        )
        .unwrap();
        assert_eq!(m.agents.keys().collect::<Vec<_>>(), vec!["a-new"]);
        assert!(m.is_complete());
    }

    #[test]
    fn multi_part_state() {
        let mut m = StateMirror::new();
        m.apply(0, &state(0, false, vec![ws("w1", "api", "alice")], vec![]))
            .unwrap();
        assert!(!m.is_complete());
        m.apply(1, &state(1, false, vec![], vec![agent("a1", "main", "w1")]))
            .unwrap();
        assert!(!m.is_complete());
        m.apply(
            2,
            &state(
                2,
                true,
                vec![ws("w2", "web", "bob")],
                vec![agent("a2", "x", "w2")],
            ),
        )
        .unwrap();
        assert!(m.is_complete());
        assert_eq!(m.workspaces.len(), 2);
        assert_eq!(m.agents.len(), 2);
        // A stray part after the last one is refused.
        assert_eq!(
            m.apply(3, &state(3, true, vec![], vec![])),
            Err(MirrorError::PartOutOfOrder {
                expected: 0,
                got: 3
            })
        );
    }

    #[test]
    fn a_multi_part_state_replaces_once_its_last_part_is_in() {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &state(
                0,
                true,
                vec![ws("w1", "api", "alice"), ws("w2", "web", "alice")],
                vec![agent("a1", "main", "w1"), agent("a2", "main", "w2")],
            ),
        )
        .unwrap();
        m.apply(
            1,
            &Event::PeerStats {
                stats: vec![stats("a1", 5), stats("a2", 6)],
            },
        )
        .unwrap();
        // A resubscription's state in parts: the old view stays readable
        // until the last part, then what the new state did not name goes,
        // stats included.
        m.apply(0, &state(0, false, vec![ws("w1", "api", "alice")], vec![]))
            .unwrap();
        assert!(!m.is_complete());
        assert_eq!(m.agents.len(), 2);
        let mut part = state(1, true, vec![], vec![agent("a1", "main", "w1")]);
        if let Event::State { stats: s, .. } = &mut part {
            s.push(stats("a1", 9));
        }
        m.apply(1, &part).unwrap();
        assert!(m.is_complete());
        assert_eq!(m.workspaces.keys().collect::<Vec<_>>(), vec!["w1"]);
        assert_eq!(m.agents.keys().collect::<Vec<_>>(), vec!["a1"]);
        assert_eq!(m.stats.keys().collect::<Vec<_>>(), vec!["a1"]);
        assert_eq!(m.stats["a1"].rx_bytes, 9);
        // A state without stats drops the old ones.
        m.apply(0, &state(0, true, vec![], vec![agent("a1", "main", "w1")]))
            .unwrap();
        assert!(m.stats.is_empty());
    }

    #[test]
    fn a_refused_part_changes_nothing() {
        let mut m = StateMirror::new();
        m.apply(0, &state(0, false, vec![ws("w1", "api", "a")], vec![]))
            .unwrap();
        let before = m.clone();
        assert!(m
            .apply(1, &state(2, true, vec![ws("w2", "web", "a")], vec![]))
            .is_err());
        assert_eq!(m, before);
        // The refused event did not consume its number.
        m.apply(1, &state(1, true, vec![], vec![])).unwrap();
        assert!(m.is_complete());
    }

    #[test]
    fn skipped_part_is_refused() {
        let mut m = StateMirror::new();
        m.apply(0, &state(0, false, vec![], vec![])).unwrap();
        assert_eq!(
            m.apply(1, &state(2, true, vec![], vec![])),
            Err(MirrorError::PartOutOfOrder {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn deleted_workspace_removes_its_agents() {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &state(
                0,
                true,
                vec![ws("w1", "api", "alice"), ws("w2", "web", "alice")],
                vec![
                    agent("a1", "main", "w1"),
                    agent("a2", "gpu", "w1"),
                    agent("a3", "main", "w2"),
                ],
            ),
        )
        .unwrap();
        m.apply(1, &diff(vec![], vec![], &["w1"], &[])).unwrap();
        assert_eq!(m.workspaces.keys().collect::<Vec<_>>(), vec!["w2"]);
        assert_eq!(m.agents.keys().collect::<Vec<_>>(), vec!["a3"]);
        m.apply(2, &diff(vec![], vec![], &[], &["a3"])).unwrap();
        assert!(m.agents.is_empty());
    }

    #[test]
    fn upsert_replaces_an_agent() {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &state(
                0,
                true,
                vec![ws("w1", "api", "a")],
                vec![agent("a1", "main", "w1")],
            ),
        )
        .unwrap();
        let mut changed = agent("a1", "main", "w1");
        changed.online = false;
        m.apply(1, &diff(vec![], vec![changed.clone()], &[], &[]))
            .unwrap();
        assert_eq!(m.agents["a1"], changed);
    }

    fn stats(id: &str, rx: u64) -> warren_proto::ipc::PeerStats {
        warren_proto::ipc::PeerStats {
            agent_id: id.into(),
            last_handshake_ms: Some(1_000),
            rx_bytes: rx,
            tx_bytes: 0,
            rtt_us: Some(400),
            endpoint: None,
            relay: None,
            no_path: false,
        }
    }

    #[test]
    fn stats_follow_their_agents() {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &state(
                0,
                true,
                vec![ws("w1", "api", "a"), ws("w2", "web", "a")],
                vec![agent("a1", "main", "w1"), agent("a2", "main", "w2")],
            ),
        )
        .unwrap();
        let update = |s| Event::PeerStats { stats: s };
        m.apply(
            1,
            &update(vec![stats("a1", 5), stats("a2", 7), stats("ghost", 1)]),
        )
        .unwrap();
        assert_eq!(m.stats.len(), 2, "stats of an unknown agent are ignored");
        // A partial update leaves the others alone.
        m.apply(2, &update(vec![stats("a1", 9)])).unwrap();
        assert_eq!(m.stats["a1"].rx_bytes, 9);
        assert_eq!(m.stats["a2"].rx_bytes, 7);
        // Deleting an agent, or its workspace, drops its stats.
        m.apply(3, &diff(vec![], vec![], &[], &["a1"])).unwrap();
        assert!(!m.stats.contains_key("a1"));
        m.apply(4, &diff(vec![], vec![], &["w2"], &[])).unwrap();
        assert!(m.stats.is_empty());
        // A new state starts from nothing.
        m.apply(5, &update(vec![stats("a2", 1)])).unwrap();
        m.apply(0, &state(0, true, vec![], vec![])).unwrap();
        assert!(m.stats.is_empty());
    }

    #[test]
    fn gap_is_detected_and_changes_nothing() {
        let mut m = StateMirror::new();
        m.apply(0, &state(0, true, vec![], vec![])).unwrap();
        m.apply(1, &diff(vec![ws("w1", "api", "a")], vec![], &[], &[]))
            .unwrap();
        let before = m.clone();
        assert_eq!(
            m.apply(3, &diff(vec![ws("w2", "web", "a")], vec![], &[], &[])),
            Err(MirrorError::Gap {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(m, before);
        // A replayed seq is a gap too.
        assert!(matches!(
            m.apply(1, &diff(vec![], vec![], &[], &[])),
            Err(MirrorError::Gap { .. })
        ));
        // Log events count in the sequence.
        let log = Event::Log {
            line: LogLine {
                time_ms: 1,
                level: "INFO".into(),
                target: "t".into(),
                message: "m".into(),
            },
        };
        m.apply(2, &log).unwrap();
        m.apply(
            3,
            &Event::SessionChanged {
                session: session(SessionState::Reconnecting),
            },
        )
        .unwrap();
        assert_eq!(
            m.session.as_ref().unwrap().state,
            SessionState::Reconnecting
        );
    }

    #[test]
    fn diff_before_state_is_not_ready() {
        let mut m = StateMirror::new();
        assert_eq!(
            m.apply(0, &diff(vec![], vec![], &[], &[])),
            Err(MirrorError::NotReady)
        );
        assert_eq!(
            m.apply(5, &state(0, true, vec![], vec![])),
            Err(MirrorError::Gap {
                expected: 0,
                got: 5
            })
        );
        assert!(!m.is_complete());
    }

    #[test]
    fn sorting() {
        let mut m = StateMirror::new();
        m.apply(
            0,
            &state(
                0,
                true,
                vec![
                    ws("w1", "zeta", "alice"),
                    ws("w2", "api", "bob"),
                    ws("w3", "web", "alice"),
                ],
                vec![
                    agent("a1", "main", "w1"),
                    agent("a2", "b", "w2"),
                    agent("a3", "a", "w2"),
                    agent("a4", "main", "w3"),
                ],
            ),
        )
        .unwrap();
        let ws: Vec<_> = m
            .sorted_workspaces()
            .iter()
            .map(|w| w.id.as_str())
            .collect();
        assert_eq!(ws, vec!["w3", "w1", "w2"]);
        let ags: Vec<_> = m.sorted_agents().iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ags, vec!["a3", "a2", "a4", "a1"]);
    }
}
