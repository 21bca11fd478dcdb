//! The WireGuard peers the directory implies, keyed by agent id, and the
//! [`PeerChange`]s that keep the data plane's table in step with it.
//!
//! A directory change arrives as a diff and leaves as a diff: upserting one
//! agent costs one hash lookup and at most two changes, whatever the size of
//! the directory. The reverse index (key → agent) lets statistics, which the
//! data plane reports by key, find their agent without encoding anything.

use std::collections::HashMap;

use warren_proto::model::{Agent, AgentId};
use warren_tunnel::{PeerConfig, PeerKey};

/// One edit of the data plane's peer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Add this peer or replace its configuration (sessions survive).
    Upsert(PeerConfig),
    /// Remove the peer with this key.
    Remove(PeerKey),
}

/// Agent id → the peer it is, plus key → agent.
#[derive(Debug, Default)]
pub struct PeerTable {
    by_agent: HashMap<AgentId, PeerConfig>,
    by_key: HashMap<PeerKey, AgentId>,
}

/// The peer an agent is: one with a valid key and at least one tunnel
/// address; its first announced endpoint is where handshakes go. Agents not
/// registered yet (no key) are no peer.
pub fn peer_config(agent: &Agent) -> Option<PeerConfig> {
    let key = agent
        .public_key
        .as_deref()
        .and_then(warren_tunnel::parse_key);
    let Some(public_key) = key else {
        if agent.public_key.is_some() {
            tracing::warn!(agent = %agent.name, "ignoring an agent with a malformed WireGuard key");
        }
        return None;
    };
    if agent.addresses.is_empty() {
        return None;
    }
    Some(PeerConfig {
        public_key,
        addresses: agent.addresses.clone(),
        endpoint: agent.endpoints.first().copied(),
        persistent_keepalive: None,
        candidates: agent.endpoints.clone(),
    })
}

impl PeerTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings `agent`'s peer in line with what the directory now says and
    /// appends the changes the data plane needs (none if nothing it cares
    /// about moved).
    pub fn upsert_agent(&mut self, agent: &Agent, out: &mut Vec<PeerChange>) {
        let mut new = peer_config(agent);
        if let Some(cfg) = &new {
            if let Some(owner) = self.by_key.get(&cfg.public_key) {
                if owner != &agent.id {
                    // One key, two agents: the first keeps it. Letting the
                    // second in would hand it the other agent's traffic.
                    tracing::warn!(
                        agent = %agent.name,
                        owner = %owner,
                        "ignoring an agent that announces another agent's WireGuard key"
                    );
                    new = None;
                }
            }
        }
        let old = self.by_agent.get(&agent.id);
        if old == new.as_ref() {
            return;
        }
        if let Some(old) = old {
            if new.as_ref().map(|n| n.public_key) != Some(old.public_key) {
                let key = old.public_key;
                self.by_key.remove(&key);
                self.by_agent.remove(&agent.id);
                out.push(PeerChange::Remove(key));
            }
        }
        if let Some(cfg) = new {
            self.by_key.insert(cfg.public_key, agent.id.clone());
            self.by_agent.insert(agent.id.clone(), cfg.clone());
            out.push(PeerChange::Upsert(cfg));
        }
    }

    /// Forgets the agent's peer, if it had one.
    pub fn remove_agent(&mut self, id: &str, out: &mut Vec<PeerChange>) {
        if let Some(cfg) = self.by_agent.remove(id) {
            self.by_key.remove(&cfg.public_key);
            out.push(PeerChange::Remove(cfg.public_key));
        }
    }

    /// The agent whose peer has this key.
    pub fn agent_of(&self, key: &PeerKey) -> Option<&AgentId> {
        self.by_key.get(key)
    }

    /// The key of the agent's peer.
    pub fn key_of(&self, agent: &str) -> Option<PeerKey> {
        self.by_agent.get(agent).map(|c| c.public_key)
    }

    /// Every peer (a tunnel that starts gets them all at once).
    pub fn configs(&self) -> impl Iterator<Item = &PeerConfig> {
        self.by_agent.values()
    }

    pub fn len(&self) -> usize {
        self.by_agent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(k: [u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    fn agent(id: &str, key: Option<String>, addrs: &[&str], eps: &[&str]) -> Agent {
        Agent {
            id: id.to_string(),
            name: id.to_string(),
            workspace_id: "ws".to_string(),
            public_key: key,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
            dns_names: vec![],
            online: true,
        }
    }

    #[test]
    fn only_agents_with_a_valid_key_and_an_address_are_peers() {
        let key = [7u8; 32];
        let mut t = PeerTable::new();
        let mut out = Vec::new();
        for a in [
            agent(
                "good",
                Some(b64(key)),
                &["100.64.0.9", "fd12::9"],
                &["10.1.0.2:51820", "[fd00::2]:51820"],
            ),
            agent("unregistered", None, &["100.64.0.10"], &[]),
            agent("badkey", Some("not-a-key".into()), &["100.64.0.11"], &[]),
            agent("short", Some("AAAA".into()), &["100.64.0.12"], &[]),
            agent("noaddr", Some(b64([8; 32])), &[], &[]),
        ] {
            t.upsert_agent(&a, &mut out);
        }
        assert_eq!(t.len(), 1);
        let [PeerChange::Upsert(cfg)] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert_eq!(cfg.public_key, key);
        assert_eq!(cfg.addresses.len(), 2);
        assert_eq!(cfg.endpoint, Some("10.1.0.2:51820".parse().unwrap()));
        assert_eq!(t.agent_of(&key).map(String::as_str), Some("good"));
    }

    #[test]
    fn changes_are_minimal_diffs() {
        let mut t = PeerTable::new();
        let mut out = Vec::new();
        let a = agent("a", Some(b64([1; 32])), &["100.64.0.2"], &[]);
        t.upsert_agent(&a, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();

        // Same peer (only the online flag moved): nothing to do.
        let mut offline = a.clone();
        offline.online = false;
        t.upsert_agent(&offline, &mut out);
        assert!(out.is_empty(), "{out:?}");

        // A new endpoint: one upsert.
        let moved = agent("a", Some(b64([1; 32])), &["100.64.0.2"], &["10.0.0.9:1"]);
        t.upsert_agent(&moved, &mut out);
        assert!(matches!(out.as_slice(), [PeerChange::Upsert(c)] if c.endpoint.is_some()));
        out.clear();

        // A new key (the agent was re-created): remove the old, add the new.
        let rekeyed = agent("a", Some(b64([2; 32])), &["100.64.0.2"], &[]);
        t.upsert_agent(&rekeyed, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], PeerChange::Remove([1; 32]));
        assert!(matches!(&out[1], PeerChange::Upsert(c) if c.public_key == [2; 32]));
        assert_eq!(t.agent_of(&[1; 32]), None);
        out.clear();

        // Unregistered again: just removed.
        t.upsert_agent(&agent("a", None, &["100.64.0.2"], &[]), &mut out);
        assert_eq!(out, vec![PeerChange::Remove([2; 32])]);
        assert!(t.is_empty());
        out.clear();
        t.remove_agent("a", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn an_agent_cannot_take_a_siblings_key() {
        let mut t = PeerTable::new();
        let mut out = Vec::new();
        t.upsert_agent(
            &agent("a", Some(b64([1; 32])), &["100.64.0.2"], &[]),
            &mut out,
        );
        t.upsert_agent(
            &agent("b", Some(b64([1; 32])), &["100.64.0.3"], &[]),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(t.agent_of(&[1; 32]).map(String::as_str), Some("a"));
        assert_eq!(t.key_of("b"), None);
    }
}
