//! The helper's view of the user's workspaces and agents.
//!
//! Applies the coordinator's [`WorkspaceUpdate`] stream and yields the
//! [`Delta`] to forward to subscribers. A snapshot *replaces* the view: the
//! deletions are computed here, never taken on trust, so after a laptop sleeps
//! and every workspace restarts the old agents cannot linger beside the new.

use std::collections::HashMap;
use warren_proto::control::{UpdateKind, WorkspaceUpdate};
use warren_proto::model::{Agent, AgentId, Workspace, WorkspaceId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// A diff's sequence number does not follow the previous update: some
    /// update was lost and the stream must be resubscribed.
    #[error("workspace update {got} does not follow {expected_prev}; resubscribing")]
    Gap { expected_prev: u64, got: u64 },
    /// A diff arrived before any snapshot on this stream.
    #[error("workspace diff {got} arrived before a snapshot; resubscribing")]
    NoSnapshot { got: u64 },
}

/// What changed, in the shape subscribers receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub upserted_workspaces: Vec<Workspace>,
    pub upserted_agents: Vec<Agent>,
    pub deleted_workspaces: Vec<WorkspaceId>,
    pub deleted_agents: Vec<AgentId>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.upserted_workspaces.is_empty()
            && self.upserted_agents.is_empty()
            && self.deleted_workspaces.is_empty()
            && self.deleted_agents.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Directory {
    workspaces: HashMap<WorkspaceId, Workspace>,
    agents: HashMap<AgentId, Agent>,
    /// Sequence number of the last update applied on the current stream;
    /// `None` until the stream's snapshot arrives.
    last_seq: Option<u64>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the start of a new coordinator stream: the next update must be
    /// a snapshot. The current view stays visible until that snapshot
    /// replaces it, so a reconnect does not blank the user's list.
    pub fn begin_stream(&mut self) {
        self.last_seq = None;
    }

    pub fn apply(&mut self, update: WorkspaceUpdate) -> Result<Delta, DirectoryError> {
        match update.kind {
            UpdateKind::Snapshot => Ok(self.apply_snapshot(update)),
            UpdateKind::Diff => {
                let Some(prev) = self.last_seq else {
                    return Err(DirectoryError::NoSnapshot { got: update.seq });
                };
                if update.seq != prev.wrapping_add(1) {
                    return Err(DirectoryError::Gap {
                        expected_prev: prev,
                        got: update.seq,
                    });
                }
                self.last_seq = Some(update.seq);
                Ok(self.apply_diff(update))
            }
        }
    }

    fn apply_snapshot(&mut self, update: WorkspaceUpdate) -> Delta {
        self.last_seq = Some(update.seq);
        let mut delta = Delta::default();

        let mut workspaces = HashMap::with_capacity(update.upserted_workspaces.len());
        for ws in update.upserted_workspaces {
            if self.workspaces.get(&ws.id) != Some(&ws) {
                delta.upserted_workspaces.push(ws.clone());
            }
            workspaces.insert(ws.id.clone(), ws);
        }
        let mut agents = HashMap::with_capacity(update.upserted_agents.len());
        for agent in update.upserted_agents {
            if self.agents.get(&agent.id) != Some(&agent) {
                delta.upserted_agents.push(agent.clone());
            }
            agents.insert(agent.id.clone(), agent);
        }
        // Deletions are whatever we had that the snapshot no longer names.
        delta.deleted_agents = self
            .agents
            .keys()
            .filter(|id| !agents.contains_key(*id))
            .cloned()
            .collect();
        delta.deleted_workspaces = self
            .workspaces
            .keys()
            .filter(|id| !workspaces.contains_key(*id))
            .cloned()
            .collect();
        delta.deleted_agents.sort();
        delta.deleted_workspaces.sort();
        self.workspaces = workspaces;
        self.agents = agents;
        delta
    }

    fn apply_diff(&mut self, update: WorkspaceUpdate) -> Delta {
        let mut delta = Delta::default();
        for id in update.deleted_agents {
            if self.agents.remove(&id).is_some() {
                delta.deleted_agents.push(id);
            }
        }
        for id in update.deleted_workspaces {
            if self.workspaces.remove(&id).is_some() {
                // The coordinator lists a deleted workspace's agents too, but
                // an agent must never outlive its workspace here either way.
                let orphans: Vec<AgentId> = self
                    .agents
                    .values()
                    .filter(|a| a.workspace_id == id)
                    .map(|a| a.id.clone())
                    .collect();
                for agent_id in orphans {
                    self.agents.remove(&agent_id);
                    delta.deleted_agents.push(agent_id);
                }
                delta.deleted_workspaces.push(id);
            }
        }
        for ws in update.upserted_workspaces {
            if self.workspaces.get(&ws.id) != Some(&ws) {
                self.workspaces.insert(ws.id.clone(), ws.clone());
                delta.upserted_workspaces.push(ws);
            }
        }
        for agent in update.upserted_agents {
            if self.agents.get(&agent.id) != Some(&agent) {
                self.agents.insert(agent.id.clone(), agent.clone());
                delta.upserted_agents.push(agent);
            }
        }
        delta
    }

    /// Forgets everything (the session stopped) and says what was removed.
    pub fn clear(&mut self) -> Delta {
        self.last_seq = None;
        let mut delta = Delta {
            deleted_workspaces: self.workspaces.drain().map(|(id, _)| id).collect(),
            deleted_agents: self.agents.drain().map(|(id, _)| id).collect(),
            ..Delta::default()
        };
        delta.deleted_workspaces.sort();
        delta.deleted_agents.sort();
        delta
    }

    pub fn workspaces(&self) -> impl Iterator<Item = &Workspace> {
        self.workspaces.values()
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    pub fn workspace_count(&self) -> usize {
        self.workspaces.len()
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(id: &str) -> Workspace {
        Workspace {
            id: id.into(),
            name: format!("name-{id}"),
            owner: "alice".into(),
        }
    }

    fn agent(id: &str, ws: &str) -> Agent {
        Agent {
            id: id.into(),
            name: format!("agent-{id}"),
            workspace_id: ws.into(),
            public_key: Some(format!("key-{id}")),
            addresses: vec![],
            endpoints: vec![],
            dns_names: vec![],
            online: true,
        }
    }

    fn snapshot(seq: u64, wss: Vec<Workspace>, agents: Vec<Agent>) -> WorkspaceUpdate {
        WorkspaceUpdate {
            kind: UpdateKind::Snapshot,
            seq,
            upserted_workspaces: wss,
            upserted_agents: agents,
            deleted_workspaces: vec![],
            deleted_agents: vec![],
        }
    }

    fn diff(seq: u64) -> WorkspaceUpdate {
        WorkspaceUpdate {
            kind: UpdateKind::Diff,
            seq,
            upserted_workspaces: vec![],
            upserted_agents: vec![],
            deleted_workspaces: vec![],
            deleted_agents: vec![],
        }
    }

    fn agent_ids(d: &Directory) -> Vec<String> {
        let mut ids: Vec<_> = d.agents().map(|a| a.id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn snapshot_after_sleep_replaces_old_agents_and_reports_deletions() {
        let mut d = Directory::new();
        d.apply(snapshot(
            0,
            vec![ws("w1"), ws("w2")],
            vec![agent("a1", "w1"), agent("a2", "w2")],
        ))
        .unwrap();
        d.apply(diff(1)).unwrap();

        // Reconnect: every workspace restarted (new agent ids), w2 deleted.
        d.begin_stream();
        let delta = d
            .apply(snapshot(0, vec![ws("w1")], vec![agent("b1", "w1")]))
            .unwrap();
        assert_eq!(agent_ids(&d), vec!["b1"]);
        assert_eq!(d.workspace_count(), 1);
        assert_eq!(delta.deleted_agents, vec!["a1", "a2"]);
        assert_eq!(delta.deleted_workspaces, vec!["w2"]);
        assert_eq!(delta.upserted_agents.len(), 1);
        // Unchanged workspace is not re-sent.
        assert!(delta.upserted_workspaces.is_empty());
    }

    #[test]
    fn diff_with_gap_is_refused_and_changes_nothing() {
        let mut d = Directory::new();
        d.apply(snapshot(0, vec![ws("w1")], vec![])).unwrap();
        let mut late = diff(2);
        late.upserted_agents.push(agent("a1", "w1"));
        assert_eq!(
            d.apply(late),
            Err(DirectoryError::Gap {
                expected_prev: 0,
                got: 2
            })
        );
        assert_eq!(d.agent_count(), 0);
    }

    #[test]
    fn diff_before_snapshot_is_refused() {
        let mut d = Directory::new();
        assert_eq!(d.apply(diff(1)), Err(DirectoryError::NoSnapshot { got: 1 }));
        d.apply(snapshot(5, vec![], vec![])).unwrap();
        d.begin_stream();
        assert!(d.apply(diff(6)).is_err());
    }

    #[test]
    fn deleting_a_workspace_removes_its_agents() {
        let mut d = Directory::new();
        d.apply(snapshot(
            0,
            vec![ws("w1"), ws("w2")],
            vec![agent("a1", "w1"), agent("a2", "w1"), agent("a3", "w2")],
        ))
        .unwrap();
        let mut u = diff(1);
        u.deleted_workspaces.push("w1".into());
        let delta = d.apply(u).unwrap();
        assert_eq!(agent_ids(&d), vec!["a3"]);
        let mut gone = delta.deleted_agents.clone();
        gone.sort();
        assert_eq!(gone, vec!["a1", "a2"]);
        assert_eq!(delta.deleted_workspaces, vec!["w1"]);
    }

    #[test]
    fn unchanged_upserts_produce_an_empty_delta() {
        let mut d = Directory::new();
        d.apply(snapshot(0, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        let mut u = diff(1);
        u.upserted_agents.push(agent("a1", "w1"));
        assert!(d.apply(u).unwrap().is_empty());
        let mut u = diff(2);
        let mut changed = agent("a1", "w1");
        changed.online = false;
        u.upserted_agents.push(changed);
        assert_eq!(d.apply(u).unwrap().upserted_agents.len(), 1);
    }

    #[test]
    fn clear_reports_everything_deleted() {
        let mut d = Directory::new();
        d.apply(snapshot(0, vec![ws("w1")], vec![agent("a1", "w1")]))
            .unwrap();
        let delta = d.clear();
        assert_eq!(delta.deleted_agents, vec!["a1"]);
        assert_eq!(delta.deleted_workspaces, vec!["w1"]);
        assert_eq!(d.agent_count(), 0);
    }
}
