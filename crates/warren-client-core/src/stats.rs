//! Per-agent tunnel statistics: the data plane reports figures per WireGuard
//! key; here they are attributed to the agent that key belongs to now.
//! Figures for a key no agent has any more (the agent was re-created with a
//! new key, or deleted) are dropped, never shown against another agent.

use std::collections::HashMap;
use std::net::SocketAddr;

use warren_proto::ipc::PeerStats;
use warren_proto::model::AgentId;
use warren_tunnel::PeerKey;

use crate::peers::PeerTable;

/// One peer's figures as the data plane measured them, in wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub key: PeerKey,
    /// Latest handshake, ms since the Unix epoch.
    pub last_handshake_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rtt_us: Option<u64>,
    pub endpoint: Option<SocketAddr>,
    /// The TURN server carrying the path (`HOST:PORT` as the coordinator
    /// named it), when it is relayed.
    pub relay: Option<String>,
    /// The path layer has no working path to the peer.
    pub no_path: bool,
}

/// The latest figures per agent, with the key they were measured for.
#[derive(Debug, Default)]
pub struct StatsBook {
    by_agent: HashMap<AgentId, (PeerKey, PeerStats)>,
}

impl StatsBook {
    /// Attributes `reports` through `peers`; returns what subscribers should
    /// be told (the reports that belong to a current agent).
    pub fn apply(&mut self, reports: Vec<PeerReport>, peers: &PeerTable) -> Vec<PeerStats> {
        let mut changed = Vec::with_capacity(reports.len());
        for r in reports {
            let Some(agent_id) = peers.agent_of(&r.key) else {
                continue;
            };
            let stats = PeerStats {
                agent_id: agent_id.clone(),
                last_handshake_ms: r.last_handshake_ms,
                rx_bytes: r.rx_bytes,
                tx_bytes: r.tx_bytes,
                rtt_us: r.rtt_us,
                endpoint: r.endpoint,
                relay: r.relay,
                no_path: r.no_path,
            };
            self.by_agent
                .insert(agent_id.clone(), (r.key, stats.clone()));
            changed.push(stats);
        }
        changed
    }

    /// Drops the agent's figures if they were for another key than `key`
    /// (or the agent has no peer any more).
    pub fn retain_key(&mut self, agent: &str, key: Option<PeerKey>) {
        if let Some((old, _)) = self.by_agent.get(agent) {
            if Some(*old) != key {
                self.by_agent.remove(agent);
            }
        }
    }

    /// Forgets every figure; returns each agent as "never", so subscribers
    /// drop what they show.
    pub fn clear(&mut self) -> Vec<PeerStats> {
        self.by_agent
            .drain()
            .map(|(agent_id, _)| PeerStats {
                agent_id,
                last_handshake_ms: None,
                rx_bytes: 0,
                tx_bytes: 0,
                rtt_us: None,
                endpoint: None,
                relay: None,
                no_path: false,
            })
            .collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &PeerStats> {
        self.by_agent.values().map(|(_, s)| s)
    }

    pub fn get(&self, agent: &str) -> Option<&PeerStats> {
        self.by_agent.get(agent).map(|(_, s)| s)
    }

    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }
}
