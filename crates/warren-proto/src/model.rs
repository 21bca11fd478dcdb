//! The data model both streams carry: workspaces, agents and the deployment.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Opaque identifier of a workspace (unique per deployment, never reused).
pub type WorkspaceId = String;
/// Opaque identifier of an agent (a new one every time an agent is re-added).
pub type AgentId = String;

/// A workspace owned by one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub owner: String,
}

/// An agent: the process inside a workspace that terminates the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub workspace_id: WorkspaceId,
    /// WireGuard public key (base64), once the agent has registered.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Tunnel addresses allocated by the coordinator (one IPv6, one IPv4).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// UDP endpoints the agent reported.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// `agent.ws.owner.suffix`, plus `ws.suffix` for a workspace's first agent.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Whether the agent currently holds a control connection.
    #[serde(default)]
    pub online: bool,
}

impl Agent {
    /// The one name to show and offer for this agent: the shortest of its
    /// DNS names (what people type; `ws.suffix` for a workspace's first
    /// agent), ties broken by byte order, so every client picks the same
    /// one whatever order the coordinator listed them in. The CLI, the tray
    /// and `warrend`'s ping use this; the UI's `ui/src/names.ts` is checked
    /// against the cases the tests below write to `ui/src/names.cases.json`.
    pub fn primary_dns_name(&self) -> Option<&str> {
        self.dns_names
            .iter()
            .min_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
            .map(String::as_str)
    }
}

/// Facts about the deployment every client needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DeploymentInfo {
    /// DNS suffix for workspace names, e.g. `warren`.
    pub suffix: String,
    /// The deployment's IPv4 range (inside 100.64.0.0/10), e.g. `100.64.0.0/10`.
    pub ipv4_prefix: String,
    /// The deployment's IPv6 ULA /48, e.g. `fd12:3456:789a::/48`.
    pub ipv6_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::Agent;
    use std::path::Path;

    fn agent(names: &[&str]) -> Agent {
        Agent {
            id: "a1".into(),
            name: "main".into(),
            workspace_id: "w1".into(),
            public_key: None,
            addresses: vec![],
            endpoints: vec![],
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            online: true,
        }
    }

    #[test]
    fn primary_dns_name_is_the_shortest_then_the_first_in_byte_order() {
        assert_eq!(agent(&[]).primary_dns_name(), None);
        assert_eq!(
            agent(&["main.api.alice.warren", "api.warren"]).primary_dns_name(),
            Some("api.warren")
        );
        // Ties: byte order, whatever order the names came in.
        assert_eq!(
            agent(&["b.warren", "a.warren"]).primary_dns_name(),
            Some("a.warren")
        );
        assert_eq!(
            agent(&["a.warren", "b.warren"]).primary_dns_name(),
            Some("a.warren")
        );
        // Byte order puts upper case first.
        assert_eq!(agent(&["b.w", "B.w"]).primary_dns_name(), Some("B.w"));
        // Length in bytes: "é" is two.
        assert_eq!(
            agent(&["éé.warren", "zzz.warren"]).primary_dns_name(),
            Some("zzz.warren")
        );
    }

    /// Inputs for the cases the UI's TypeScript rule is checked against,
    /// chosen where a careless port would differ: order, ties, case, and
    /// lengths and order of non-ASCII text (bytes vs UTF-16 units).
    const SHARED_CASES: &[&[&str]] = &[
        &[],
        &["main.api.alice.warren"],
        &["main.api.alice.warren", "api.warren"],
        &["api.warren", "main.api.alice.warren"],
        &["b.warren", "a.warren", "c.warren"],
        &["b.w", "B.w"],
        &["same.warren", "same.warren"],
        &["zzz.warren", "éé.warren"],
        &["\u{1F600}.w", "\u{FF21}a.w"],
    ];

    /// The committed `ui/src/names.cases.json` is what the Rust rule says
    /// for [`SHARED_CASES`]; the UI's Vitest reads it. Run with
    /// `WARREN_UPDATE_BINDINGS=1` to rewrite it after changing the rule.
    #[test]
    fn ui_primary_name_cases_are_current() {
        let cases: Vec<serde_json::Value> = SHARED_CASES
            .iter()
            .map(|names| {
                serde_json::json!({
                    "dns_names": names,
                    "primary": agent(names).primary_dns_name(),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&cases).unwrap() + "\n";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/names.cases.json");
        if std::env::var_os("WARREN_UPDATE_BINDINGS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, text,
            "ui/src/names.cases.json is out of date: run `WARREN_UPDATE_BINDINGS=1 cargo test -p warren-proto`"
        );
    }
}
