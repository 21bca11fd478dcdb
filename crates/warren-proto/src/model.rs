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
