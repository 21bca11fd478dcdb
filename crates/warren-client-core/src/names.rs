//! The DNS names the directory implies (each agent's names → its tunnel
//! addresses) and the [`NameChange`]s that keep the DNS stub in step.
//!
//! Each name has one owner: a second agent claiming a name another agent
//! holds is ignored (and logged) rather than allowed to take over its
//! traffic, and removing an agent removes only the names it owns.

use std::collections::HashMap;
use std::net::IpAddr;

use warren_proto::model::{Agent, AgentId};

/// One edit of the DNS stub's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameChange {
    /// Answer `name` with these addresses.
    Upsert {
        name: String,
        addresses: Vec<IpAddr>,
    },
    /// Stop answering `name`.
    Remove { name: String },
}

/// Name (lower case) → owner and addresses, plus each agent's names.
#[derive(Debug, Default)]
pub struct NameTable {
    by_name: HashMap<String, (AgentId, Vec<IpAddr>)>,
    by_agent: HashMap<AgentId, Vec<String>>,
}

impl NameTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings `agent`'s names in line with the directory and appends the
    /// stub's changes. An agent without an address has no names (nothing to
    /// answer with).
    pub fn upsert_agent(&mut self, agent: &Agent, out: &mut Vec<NameChange>) {
        let mut wanted: Vec<String> = if agent.addresses.is_empty() {
            Vec::new()
        } else {
            agent
                .dns_names
                .iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        wanted.sort_unstable();
        wanted.dedup();
        let old = self.by_agent.remove(&agent.id).unwrap_or_default();
        for name in &old {
            if wanted.binary_search(name).is_err() {
                self.by_name.remove(name);
                out.push(NameChange::Remove { name: name.clone() });
            }
        }
        let mut owned = Vec::with_capacity(wanted.len());
        for name in wanted {
            match self.by_name.get_mut(&name) {
                Some((owner, addresses)) if owner == &agent.id => {
                    if *addresses != agent.addresses {
                        addresses.clone_from(&agent.addresses);
                        out.push(NameChange::Upsert {
                            name: name.clone(),
                            addresses: agent.addresses.clone(),
                        });
                    }
                    owned.push(name);
                }
                Some((owner, _)) => {
                    tracing::warn!(%name, agent = %agent.name, %owner, "ignoring a DNS name another agent already has");
                }
                None => {
                    self.by_name
                        .insert(name.clone(), (agent.id.clone(), agent.addresses.clone()));
                    out.push(NameChange::Upsert {
                        name: name.clone(),
                        addresses: agent.addresses.clone(),
                    });
                    owned.push(name);
                }
            }
        }
        if !owned.is_empty() {
            self.by_agent.insert(agent.id.clone(), owned);
        }
    }

    /// Removes every name the agent owns.
    pub fn remove_agent(&mut self, id: &str, out: &mut Vec<NameChange>) {
        for name in self.by_agent.remove(id).unwrap_or_default() {
            self.by_name.remove(&name);
            out.push(NameChange::Remove { name });
        }
    }

    /// Every name and its addresses (a stub that starts gets them all).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[IpAddr])> {
        self.by_name
            .iter()
            .map(|(name, (_, addrs))| (name.as_str(), addrs.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, names: &[&str], addrs: &[&str]) -> Agent {
        Agent {
            id: id.into(),
            name: id.into(),
            workspace_id: "w".into(),
            public_key: None,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: vec![],
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            online: true,
        }
    }

    fn sorted(mut v: Vec<NameChange>) -> Vec<NameChange> {
        v.sort_by_key(|c| format!("{c:?}"));
        v
    }

    #[test]
    fn names_follow_the_agent_as_diffs() {
        let mut t = NameTable::new();
        let mut out = Vec::new();
        t.upsert_agent(
            &agent(
                "a",
                &["main.api.alice.warren", "API.warren."],
                &["100.64.0.5"],
            ),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(t.len(), 2);
        out.clear();

        // Unchanged: nothing.
        t.upsert_agent(
            &agent(
                "a",
                &["main.api.alice.warren", "api.warren"],
                &["100.64.0.5"],
            ),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");

        // Lost its short name, address moved: one removal, one upsert.
        t.upsert_agent(
            &agent("a", &["main.api.alice.warren"], &["100.64.0.6"]),
            &mut out,
        );
        assert_eq!(
            sorted(out.clone()),
            sorted(vec![
                NameChange::Remove {
                    name: "api.warren".into()
                },
                NameChange::Upsert {
                    name: "main.api.alice.warren".into(),
                    addresses: vec!["100.64.0.6".parse().unwrap()]
                },
            ])
        );
        out.clear();

        // No address: no names.
        t.upsert_agent(&agent("a", &["main.api.alice.warren"], &[]), &mut out);
        assert_eq!(
            out,
            vec![NameChange::Remove {
                name: "main.api.alice.warren".into()
            }]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_name_has_one_owner() {
        let mut t = NameTable::new();
        let mut out = Vec::new();
        t.upsert_agent(&agent("a", &["api.warren"], &["100.64.0.5"]), &mut out);
        t.upsert_agent(&agent("b", &["api.warren"], &["100.64.0.9"]), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        out.clear();
        // Removing the squatter leaves the owner's name alone.
        t.remove_agent("b", &mut out);
        assert!(out.is_empty());
        assert_eq!(
            t.entries().collect::<Vec<_>>(),
            vec![("api.warren", &["100.64.0.5".parse().unwrap()][..])]
        );
        t.remove_agent("a", &mut out);
        assert_eq!(
            out,
            vec![NameChange::Remove {
                name: "api.warren".into()
            }]
        );
    }
}
