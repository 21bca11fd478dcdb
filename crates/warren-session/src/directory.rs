//! The helper's view of the user's workspaces and agents.
//!
//! Applies the coordinator's [`WorkspaceUpdate`] stream and yields the
//! [`Delta`] to forward to subscribers. A snapshot *replaces* the view: the
//! deletions are computed here, never taken on trust, so after a laptop sleeps
//! and every workspace restarts the old agents cannot linger beside the new.

use crate::replica::{Replica, SeqGap, Sequence};
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
    /// A snapshot split into parts was interrupted by another update.
    #[error("workspace snapshot {expected} was interrupted by update {got}; resubscribing")]
    IncompleteSnapshot { expected: u64, got: u64 },
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
    workspaces: Replica<WorkspaceId, Workspace>,
    agents: Replica<AgentId, Agent>,
    /// Sequence of the current stream; unset until its snapshot arrives.
    seq: Sequence,
    /// The seq of a snapshot whose later parts are still to come.
    /// Deletions wait for the last part.
    staging: Option<u64>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the start of a new coordinator stream: the next update must be
    /// a snapshot. The current view stays visible until that snapshot
    /// replaces it, so a reconnect does not blank the user's list.
    pub fn begin_stream(&mut self) {
        self.seq.reset();
        self.abandon_snapshot();
    }

    /// True while a snapshot's later parts are still expected.
    pub fn is_staging(&self) -> bool {
        self.staging.is_some()
    }

    /// True once the current stream's snapshot has fully arrived.
    pub fn is_synced(&self) -> bool {
        self.seq.last().is_some() && self.staging.is_none()
    }

    pub fn apply(&mut self, update: WorkspaceUpdate) -> Result<Delta, DirectoryError> {
        if let Some(expected) = self.staging {
            if update.kind != UpdateKind::Snapshot || update.seq != expected {
                self.seq.reset();
                self.abandon_snapshot();
                return Err(DirectoryError::IncompleteSnapshot {
                    expected,
                    got: update.seq,
                });
            }
        }
        match update.kind {
            UpdateKind::Snapshot => Ok(self.apply_snapshot_part(update)),
            UpdateKind::Diff => {
                self.seq.advance(update.seq).map_err(|gap| match gap {
                    SeqGap {
                        expected_prev: None,
                        got,
                    } => DirectoryError::NoSnapshot { got },
                    SeqGap {
                        expected_prev: Some(expected_prev),
                        got,
                    } => DirectoryError::Gap { expected_prev, got },
                })?;
                Ok(self.apply_diff(update))
            }
        }
    }

    fn abandon_snapshot(&mut self) {
        self.staging = None;
        self.workspaces.cancel_snapshot();
        self.agents.cancel_snapshot();
    }

    /// Applies one part of a snapshot: upserts now, deletions (whatever the
    /// whole snapshot did not name) once the last part is in.
    fn apply_snapshot_part(&mut self, update: WorkspaceUpdate) -> Delta {
        if self.staging.is_none() {
            self.staging = Some(update.seq);
            self.workspaces.begin_snapshot();
            self.agents.begin_snapshot();
        }
        let mut delta = self.upsert(update.upserted_workspaces, update.upserted_agents);
        if update.more {
            return delta;
        }
        self.staging = None;
        self.seq.restart(update.seq);
        delta.deleted_agents = self.agents.end_snapshot();
        delta.deleted_workspaces = self.workspaces.end_snapshot();
        delta
    }

    /// Upserts, keeping in the delta only what really changed.
    fn upsert(&mut self, workspaces: Vec<Workspace>, agents: Vec<Agent>) -> Delta {
        let mut delta = Delta::default();
        for ws in workspaces {
            if let Some(ws) = self.workspaces.upsert(ws.id.clone(), ws) {
                delta.upserted_workspaces.push(ws.clone());
            }
        }
        for agent in agents {
            if let Some(agent) = self.agents.upsert(agent.id.clone(), agent) {
                delta.upserted_agents.push(agent.clone());
            }
        }
        delta
    }

    fn apply_diff(&mut self, update: WorkspaceUpdate) -> Delta {
        let mut deleted_agents = Vec::new();
        let mut deleted_workspaces = Vec::new();
        for id in update.deleted_agents {
            if self.agents.remove(&id).is_some() {
                deleted_agents.push(id);
            }
        }
        for id in update.deleted_workspaces {
            if self.workspaces.remove(&id).is_some() {
                // The coordinator lists a deleted workspace's agents too, but
                // an agent must never outlive its workspace here either way.
                deleted_agents.extend(self.agents.remove_where(|_, a| a.workspace_id == id));
                deleted_workspaces.push(id);
            }
        }
        Delta {
            deleted_agents,
            deleted_workspaces,
            ..self.upsert(update.upserted_workspaces, update.upserted_agents)
        }
    }

    /// Forgets everything (the session stopped) and says what was removed.
    pub fn clear(&mut self) -> Delta {
        self.seq.reset();
        self.staging = None;
        Delta {
            deleted_workspaces: self.workspaces.clear(),
            deleted_agents: self.agents.clear(),
            ..Delta::default()
        }
    }

    /// Workspaces in id order.
    pub fn workspaces(&self) -> impl Iterator<Item = &Workspace> {
        self.workspaces.values()
    }

    /// Agents in id order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    pub fn workspace_count(&self) -> usize {
        self.workspaces.len()
    }

    /// Whether an agent with this id is in the view.
    pub fn has_agent(&self, id: &str) -> bool {
        self.agents.contains_key(id)
    }

    /// Whether a workspace with this id is in the view.
    pub fn has_workspace(&self, id: &str) -> bool {
        self.workspaces.contains_key(id)
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
            more: false,
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
            more: false,
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
    fn snapshot_in_parts_deletes_only_after_the_last_part() {
        let mut d = Directory::new();
        d.apply(snapshot(
            0,
            vec![ws("w1"), ws("w2")],
            vec![agent("a1", "w1"), agent("a2", "w2")],
        ))
        .unwrap();
        d.begin_stream();
        let mut first = snapshot(0, vec![ws("w1")], vec![agent("b1", "w1")]);
        first.more = true;
        let delta = d.apply(first).unwrap();
        assert_eq!(delta.upserted_agents.len(), 1);
        assert!(
            delta.deleted_agents.is_empty(),
            "no deletion before the last part"
        );
        assert!(d.is_staging() && !d.is_synced());
        // A diff may not interrupt a snapshot.
        let mut probe = Directory::new();
        let mut part = snapshot(3, vec![], vec![]);
        part.more = true;
        probe.apply(part).unwrap();
        assert!(matches!(
            probe.apply(diff(4)),
            Err(DirectoryError::IncompleteSnapshot {
                expected: 3,
                got: 4
            })
        ));

        let delta = d
            .apply(snapshot(0, vec![], vec![agent("b2", "w1")]))
            .unwrap();
        assert_eq!(agent_ids(&d), vec!["b1", "b2"]);
        assert_eq!(delta.deleted_agents, vec!["a1", "a2"]);
        assert_eq!(delta.deleted_workspaces, vec!["w2"]);
        assert!(d.is_synced());
        d.apply(diff(1)).unwrap();
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
