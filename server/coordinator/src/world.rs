//! The in-memory world `serve` streams from: a mirror of the database plus
//! who is online, cut into per-owner views, and the diffs between views.
//!
//! Pure data and functions, no IO, so the rules (DNS names, what a diff
//! holds) are tested directly.

use crate::addr::{self, Ula48};
use crate::db::{parse_endpoints, AgentRow, Rows, TokenRef, WorkspaceRow};
use std::collections::{BTreeMap, HashMap};
use warren_proto::control::{ClientPeer, PeerUpdate, UpdateKind, WorkspaceUpdate};
use warren_proto::model::{Agent, AgentId, Workspace, WorkspaceId};

/// The workspaces and agents one user sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerView {
    pub workspaces: BTreeMap<WorkspaceId, Workspace>,
    pub agents: BTreeMap<AgentId, Agent>,
}

/// The online client devices of one user, which that user's agents accept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    pub peers: BTreeMap<String, ClientPeer>,
}

/// DNS names of an agent: `agent.ws.owner.suffix`, plus `ws.suffix` when it
/// is the workspace's first (oldest) agent.
pub fn dns_names(
    agent: &str,
    workspace: &str,
    owner: &str,
    suffix: &str,
    first: bool,
) -> Vec<String> {
    let suffix = suffix.strip_suffix('.').unwrap_or(suffix);
    let mut names = vec![format!("{agent}.{workspace}.{owner}.{suffix}")];
    if first {
        names.push(format!("{workspace}.{suffix}"));
    }
    names
}

/// A mirror of the database rows `serve` needs, indexed for building views.
#[derive(Debug, Clone)]
pub struct Model {
    pub revision: i64,
    pub prefix: Ula48,
    pub suffix: String,
    pub users: HashMap<String, String>,
    pub workspaces: HashMap<String, WorkspaceRow>,
    pub agents: HashMap<String, AgentRow>,
    pub tokens: HashMap<String, TokenRef>,
    /// Workspace ids per owner id.
    ws_by_owner: HashMap<String, Vec<String>>,
    /// Agent ids per workspace id, oldest first.
    agents_by_ws: HashMap<String, Vec<String>>,
}

impl Model {
    pub fn new(rows: Rows, prefix: Ula48, suffix: String) -> Self {
        let mut ws_by_owner: HashMap<String, Vec<String>> = HashMap::new();
        for w in &rows.workspaces {
            ws_by_owner
                .entry(w.owner_id.clone())
                .or_default()
                .push(w.id.clone());
        }
        let mut agents_sorted = rows.agents;
        agents_sorted.sort_by_key(|a| a.seq);
        let mut agents_by_ws: HashMap<String, Vec<String>> = HashMap::new();
        for a in &agents_sorted {
            agents_by_ws
                .entry(a.workspace_id.clone())
                .or_default()
                .push(a.id.clone());
        }
        Self {
            revision: rows.revision,
            prefix,
            suffix,
            users: rows.users.into_iter().map(|u| (u.id, u.name)).collect(),
            workspaces: rows
                .workspaces
                .into_iter()
                .map(|w| (w.id.clone(), w))
                .collect(),
            agents: agents_sorted
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
            tokens: rows.tokens.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ws_by_owner,
            agents_by_ws,
        }
    }

    /// The owner (user id) of an agent.
    pub fn agent_owner(&self, agent_id: &str) -> Option<&str> {
        let a = self.agents.get(agent_id)?;
        Some(self.workspaces.get(&a.workspace_id)?.owner_id.as_str())
    }

    /// Builds what user `owner_id` sees; `online` tells whether an agent holds
    /// a live connection.
    pub fn owner_view(&self, owner_id: &str, online: impl Fn(&str) -> bool) -> OwnerView {
        let mut view = OwnerView::default();
        let Some(owner) = self.users.get(owner_id) else {
            return view;
        };
        for ws_id in self.ws_by_owner.get(owner_id).into_iter().flatten() {
            let Some(ws) = self.workspaces.get(ws_id) else {
                continue;
            };
            view.workspaces.insert(
                ws.id.clone(),
                Workspace {
                    id: ws.id.clone(),
                    name: ws.name.clone(),
                    owner: owner.clone(),
                },
            );
            let agent_ids = self.agents_by_ws.get(ws_id).into_iter().flatten();
            for (i, agent_id) in agent_ids.enumerate() {
                let Some(a) = self.agents.get(agent_id) else {
                    continue;
                };
                view.agents.insert(
                    a.id.clone(),
                    Agent {
                        id: a.id.clone(),
                        name: a.name.clone(),
                        workspace_id: ws.id.clone(),
                        public_key: a.public_key.clone(),
                        // Indexes come from the counter, which refuses
                        // out-of-range values when it hands them out.
                        addresses: addr::addresses(&self.prefix, a.address_index)
                            .unwrap_or_default(),
                        endpoints: parse_endpoints(&a.endpoints),
                        dns_names: dns_names(&a.name, &ws.name, owner, &self.suffix, i == 0),
                        online: a.is_static || online(&a.id),
                    },
                );
            }
        }
        view
    }
}

fn changed<'a, K: Ord, V: PartialEq + Clone + 'a>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> Vec<V> {
    new.iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(_, v)| v.clone())
        .collect()
}

fn gone<K: Ord + Clone, V>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Vec<K> {
    old.keys()
        .filter(|k| !new.contains_key(k))
        .cloned()
        .collect()
}

/// The snapshot (seq 0) of a view.
/// Items per snapshot message. Small enough that the receiver can decode and
/// forward one part while the next is encoded and on the wire; large enough
/// that the per-message overhead does not matter.
pub const SNAPSHOT_PART_ITEMS: usize = 2000;

/// A borrowed snapshot part, serialized exactly like
/// `ServerMessage::WorkspaceUpdate` so the view is never cloned to send it.
#[derive(serde::Serialize)]
struct SnapshotPart<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    kind: UpdateKind,
    seq: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
    upserted_workspaces: &'a [&'a Workspace],
    upserted_agents: &'a [&'a Agent],
}

/// How many messages the view's snapshot takes at `part_items` items each.
pub fn workspace_snapshot_parts(view: &OwnerView, part_items: usize) -> usize {
    (view.workspaces.len() + view.agents.len())
        .div_ceil(part_items.max(1))
        .max(1)
}

/// Part `part` of the view's snapshot as JSON: at most `part_items` items
/// (workspaces first, then agents); all but the last part say `more`. Built
/// one at a time so the first part is on the wire while the rest are encoded.
pub fn workspace_snapshot_part_json(
    view: &OwnerView,
    part_items: usize,
    part: usize,
) -> Result<String, serde_json::Error> {
    let part_items = part_items.max(1);
    let parts = workspace_snapshot_parts(view, part_items);
    let n_ws = view.workspaces.len();
    let start = part * part_items;
    let end = start + part_items;
    let workspaces: Vec<&Workspace> = view
        .workspaces
        .values()
        .skip(start.min(n_ws))
        .take(end.min(n_ws) - start.min(n_ws))
        .collect();
    let agents_from = start.saturating_sub(n_ws);
    let agents: Vec<&Agent> = view
        .agents
        .values()
        .skip(agents_from)
        .take(end.saturating_sub(n_ws) - agents_from)
        .collect();
    serde_json::to_string(&SnapshotPart {
        ty: "workspace_update",
        kind: UpdateKind::Snapshot,
        seq: 0,
        more: part + 1 < parts,
        upserted_workspaces: &workspaces,
        upserted_agents: &agents,
    })
}

/// What turns `old` into `new`, numbered `seq`; `None` when nothing changed.
/// A deleted workspace's agents are gone from `new` too, so they are listed
/// in `deleted_agents` along with it.
pub fn workspace_diff(old: &OwnerView, new: &OwnerView, seq: u64) -> Option<WorkspaceUpdate> {
    let update = WorkspaceUpdate {
        kind: UpdateKind::Diff,
        seq,
        more: false,
        upserted_workspaces: changed(&old.workspaces, &new.workspaces),
        upserted_agents: changed(&old.agents, &new.agents),
        deleted_workspaces: gone(&old.workspaces, &new.workspaces),
        deleted_agents: gone(&old.agents, &new.agents),
    };
    let empty = update.upserted_workspaces.is_empty()
        && update.upserted_agents.is_empty()
        && update.deleted_workspaces.is_empty()
        && update.deleted_agents.is_empty();
    (!empty).then_some(update)
}

pub fn peer_snapshot(view: &PeerView) -> PeerUpdate {
    PeerUpdate {
        kind: UpdateKind::Snapshot,
        seq: 0,
        upserted: view.peers.values().cloned().collect(),
        deleted: Vec::new(),
    }
}

pub fn peer_diff(old: &PeerView, new: &PeerView, seq: u64) -> Option<PeerUpdate> {
    let update = PeerUpdate {
        kind: UpdateKind::Diff,
        seq,
        upserted: changed(&old.peers, &new.peers),
        deleted: gone(&old.peers, &new.peers),
    };
    (!update.upserted.is_empty() || !update.deleted.is_empty()).then_some(update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::UserRow;

    fn agent_row(seq: i64, id: &str, ws: &str, name: &str) -> AgentRow {
        AgentRow {
            seq,
            id: id.into(),
            workspace_id: ws.into(),
            name: name.into(),
            address_index: seq,
            public_key: None,
            endpoints: "[]".into(),
            is_static: false,
        }
    }

    fn model(agents: Vec<AgentRow>) -> Model {
        let rows = Rows {
            revision: 1,
            users: vec![
                UserRow {
                    id: "u1".into(),
                    name: "alice".into(),
                },
                UserRow {
                    id: "u2".into(),
                    name: "bob".into(),
                },
            ],
            workspaces: vec![
                WorkspaceRow {
                    id: "w1".into(),
                    owner_id: "u1".into(),
                    name: "api".into(),
                },
                WorkspaceRow {
                    id: "w2".into(),
                    owner_id: "u1".into(),
                    name: "web".into(),
                },
                WorkspaceRow {
                    id: "w3".into(),
                    owner_id: "u2".into(),
                    name: "api".into(),
                },
            ],
            agents,
            tokens: vec![],
        };
        Model::new(
            rows,
            Ula48::parse("fd00:1:2::/48").unwrap(),
            "warren".into(),
        )
    }

    fn standard() -> Model {
        // Creation order differs from name order on purpose.
        model(vec![
            agent_row(1, "x1", "w1", "main"),
            agent_row(2, "x2", "w1", "aux"),
            agent_row(3, "x3", "w2", "main"),
            agent_row(4, "x4", "w3", "main"),
        ])
    }

    #[test]
    fn dns_names_follow_the_scheme() {
        assert_eq!(
            dns_names("main", "api", "alice", "warren", true),
            vec!["main.api.alice.warren", "api.warren"]
        );
        assert_eq!(
            dns_names("aux", "api", "alice", "dev.example.", false),
            vec!["aux.api.alice.dev.example"]
        );
    }

    #[test]
    fn first_agent_is_the_oldest_existing_one() {
        let m = standard();
        let v = m.owner_view("u1", |_| false);
        assert_eq!(
            v.agents["x1"].dns_names,
            vec!["main.api.alice.warren", "api.warren"]
        );
        assert_eq!(v.agents["x2"].dns_names, vec!["aux.api.alice.warren"]);
        // Once the oldest is gone, the next one takes over the short name.
        let m = model(vec![agent_row(2, "x2", "w1", "aux")]);
        let v = m.owner_view("u1", |_| false);
        assert_eq!(
            v.agents["x2"].dns_names,
            vec!["aux.api.alice.warren", "api.warren"]
        );
    }

    #[test]
    fn a_view_holds_only_its_owners_things() {
        let m = standard();
        let v = m.owner_view("u1", |id| id == "x3");
        assert_eq!(v.workspaces.len(), 2);
        assert!(v.workspaces.values().all(|w| w.owner == "alice"));
        assert_eq!(v.agents.keys().collect::<Vec<_>>(), vec!["x1", "x2", "x3"]);
        assert!(v.agents["x3"].online);
        assert!(!v.agents["x1"].online);
        assert_eq!(
            v.agents["x1"].addresses,
            vec![
                "100.64.0.1".parse::<std::net::IpAddr>().unwrap(),
                "fd00:1:2::1".parse().unwrap()
            ]
        );
        let bob = m.owner_view("u2", |_| false);
        assert_eq!(bob.agents.keys().collect::<Vec<_>>(), vec!["x4"]);
        assert_eq!(bob.agents["x4"].dns_names[0], "main.api.bob.warren");
        assert_eq!(m.owner_view("nobody", |_| true), OwnerView::default());
    }

    #[test]
    fn snapshot_lists_everything_and_diff_only_changes() {
        let m = standard();
        let v1 = m.owner_view("u1", |_| false);
        assert_eq!(workspace_snapshot_parts(&v1, SNAPSHOT_PART_ITEMS), 1);
        let json = workspace_snapshot_part_json(&v1, SNAPSHOT_PART_ITEMS, 0).unwrap();
        let warren_proto::control::ServerMessage::WorkspaceUpdate(snap) =
            serde_json::from_str(&json).unwrap()
        else {
            panic!("not a workspace update: {json}");
        };
        assert_eq!(snap.kind, UpdateKind::Snapshot);
        assert!(!snap.more);
        assert_eq!(snap.seq, 0);
        assert_eq!(snap.upserted_workspaces.len(), 2);
        assert_eq!(snap.upserted_agents.len(), 3);
        assert!(workspace_diff(&v1, &v1, 1).is_none());

        let v2 = m.owner_view("u1", |id| id == "x2");
        let d = workspace_diff(&v1, &v2, 5).unwrap();
        assert_eq!(d.kind, UpdateKind::Diff);
        assert_eq!(d.seq, 5);
        assert!(d.upserted_workspaces.is_empty());
        assert_eq!(d.upserted_agents.len(), 1);
        assert_eq!(d.upserted_agents[0].id, "x2");
        assert!(d.upserted_agents[0].online);
        assert!(d.deleted_workspaces.is_empty() && d.deleted_agents.is_empty());
    }

    #[test]
    fn deleted_workspace_lists_its_agents() {
        let before = standard().owner_view("u1", |_| false);
        let mut m = standard();
        m = {
            let rows = Rows {
                revision: 2,
                users: m
                    .users
                    .iter()
                    .map(|(id, name)| UserRow {
                        id: id.clone(),
                        name: name.clone(),
                    })
                    .collect(),
                workspaces: m
                    .workspaces
                    .values()
                    .filter(|w| w.id != "w1")
                    .cloned()
                    .collect(),
                agents: m
                    .agents
                    .values()
                    .filter(|a| a.workspace_id != "w1")
                    .cloned()
                    .collect(),
                tokens: vec![],
            };
            Model::new(rows, m.prefix, m.suffix.clone())
        };
        let after = m.owner_view("u1", |_| false);
        let d = workspace_diff(&before, &after, 1).unwrap();
        assert_eq!(d.deleted_workspaces, vec!["w1".to_string()]);
        let mut deleted = d.deleted_agents.clone();
        deleted.sort();
        assert_eq!(deleted, vec!["x1".to_string(), "x2".to_string()]);
        assert!(d.upserted_agents.is_empty() && d.upserted_workspaces.is_empty());
    }

    #[test]
    fn peer_diffs() {
        let peer = |id: &str, port: u16| ClientPeer {
            id: id.into(),
            user: "alice".into(),
            public_key: "k".into(),
            addresses: vec![],
            endpoints: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        };
        let mut a = PeerView::default();
        a.peers.insert("d1".into(), peer("d1", 1));
        a.peers.insert("d2".into(), peer("d2", 2));
        let mut b = a.clone();
        b.peers.remove("d1");
        b.peers.insert("d2".into(), peer("d2", 3));
        b.peers.insert("d3".into(), peer("d3", 4));
        assert_eq!(peer_snapshot(&a).upserted.len(), 2);
        let d = peer_diff(&a, &b, 1).unwrap();
        assert_eq!(d.deleted, vec!["d1".to_string()]);
        assert_eq!(
            d.upserted.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec!["d2", "d3"]
        );
        assert!(peer_diff(&b, &b, 2).is_none());
    }
}

#[cfg(test)]
mod snapshot_part_tests {
    use super::*;
    use warren_proto::control::ServerMessage;

    fn view(n_ws: usize, agents_per: usize) -> OwnerView {
        let mut v = OwnerView::default();
        for w in 0..n_ws {
            let id = format!("w{w:03}");
            v.workspaces.insert(
                id.clone(),
                Workspace {
                    id: id.clone(),
                    name: id.clone(),
                    owner: "alice".into(),
                },
            );
            for a in 0..agents_per {
                let aid = format!("{id}-a{a}");
                v.agents.insert(
                    aid.clone(),
                    Agent {
                        id: aid.clone(),
                        name: format!("a{a}"),
                        workspace_id: id.clone(),
                        public_key: None,
                        addresses: vec![],
                        endpoints: vec![],
                        dns_names: vec![],
                        online: false,
                    },
                );
            }
        }
        v
    }

    #[test]
    fn parts_decode_as_workspace_updates_and_cover_the_view_once() {
        for (n_ws, per, part) in [(0, 0, 7), (3, 2, 7), (10, 2, 7), (10, 2, 1), (7, 0, 2)] {
            let v = view(n_ws, per);
            let parts: Vec<String> = (0..workspace_snapshot_parts(&v, part))
                .map(|i| workspace_snapshot_part_json(&v, part, i).unwrap())
                .collect();
            let (mut ws, mut agents) = (Vec::new(), Vec::new());
            for (i, text) in parts.iter().enumerate() {
                let ServerMessage::WorkspaceUpdate(u) = serde_json::from_str(text).unwrap() else {
                    panic!("not a workspace update");
                };
                assert_eq!(u.kind, UpdateKind::Snapshot);
                assert_eq!(u.more, i + 1 < parts.len());
                assert!(u.upserted_workspaces.len() + u.upserted_agents.len() <= part);
                ws.extend(u.upserted_workspaces.into_iter().map(|w| w.id));
                agents.extend(u.upserted_agents.into_iter().map(|a| a.id));
            }
            assert_eq!(ws, v.workspaces.keys().cloned().collect::<Vec<_>>());
            assert_eq!(agents, v.agents.keys().cloned().collect::<Vec<_>>());
        }
    }
}
