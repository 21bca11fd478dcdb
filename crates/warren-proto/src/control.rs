//! The control protocol between the coordinator and its clients (helpers and
//! agents).
//!
//! HTTP with a bearer token:
//! - `GET /api/v1/me` → [`Me`] (used by `warren login` to validate a token)
//! - `GET /api/v1/connect` → WebSocket carrying JSON text messages:
//!   the client sends [`ClientMessage::Register`] first; the coordinator answers
//!   [`ServerMessage::Welcome`] and then streams updates, each stream starting
//!   with a snapshot and continuing with diffs numbered by `seq`.
//!
//! Every error body is an [`ApiError`].

use crate::model::{Agent, AgentId, DeploymentInfo, Workspace, WorkspaceId};
use crate::Secret;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Version of the control protocol. A different major version is refused.
pub const CONTROL_VERSION: u32 = 1;

/// Path of the long-lived WebSocket.
pub const CONNECT_PATH: &str = "/api/v1/connect";
/// Path that tells a token's owner.
pub const ME_PATH: &str = "/api/v1/me";

/// The kind of credential a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A person's token, used by the helper and the CLI.
    User,
    /// An agent's token, bound to one agent of one workspace.
    Agent,
}

/// Answer to `GET /api/v1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub kind: TokenKind,
    pub user: String,
    /// Set for agent tokens.
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    pub deployment: DeploymentInfo,
    pub coordinator_version: String,
}

/// JSON error body of every failed request, and of [`ServerMessage::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code, e.g. `unauthorized`, `bad_request`, `not_found`.
    pub error: String,
    /// A sentence a person can act on.
    pub message: String,
}

/// Messages a client sends on the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message: the per-session WireGuard key and UDP endpoints.
    Register(Register),
    /// New endpoints (for example after a network change).
    Endpoints { endpoints: Vec<SocketAddr> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub protocol_version: u32,
    /// WireGuard public key, base64 (32 bytes).
    pub public_key: String,
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    #[serde(default)]
    pub hostname: Option<String>,
    pub app_version: String,
}

/// Messages the coordinator sends on the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome(Welcome),
    WorkspaceUpdate(WorkspaceUpdate),
    PeerUpdate(PeerUpdate),
    Error(ApiError),
    /// Fresh TURN credentials, sent on a live connection before the ones in
    /// [`Welcome::relays`] (or the previous `relays`) expire. Replaces the
    /// receiver's list whole.
    Relays {
        #[serde(default)]
        relays: Vec<Relay>,
    },
    /// A message type this build does not know (a newer coordinator's).
    /// Decoding it instead of failing keeps old clients connected; receivers
    /// ignore it. Never sent.
    #[serde(other)]
    Unknown,
}

/// A TURN server a client may allocate relayed addresses on, with
/// credentials in coturn's `use-auth-secret` scheme (the username is
/// `EXPIRY:ID`, the password `base64(HMAC-SHA1(secret, username))`), valid
/// until `expires_at`. At most [`crate::limits::MAX_RELAYS`] per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// `HOST:PORT` (UDP), a host name or an IP address.
    pub addr: String,
    pub username: String,
    pub password: Secret,
    /// Unix seconds after which the TURN server refuses these credentials.
    pub expires_at: u64,
}

/// The coordinator's answer to [`Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u32,
    pub coordinator_version: String,
    pub deployment: DeploymentInfo,
    pub user: String,
    pub kind: TokenKind,
    /// Device id (user tokens) or agent id (agent tokens).
    pub id: String,
    /// Tunnel addresses of this device or agent.
    pub addresses: Vec<IpAddr>,
    /// TURN relays with credentials for this connection; empty when the
    /// coordinator has none configured. Refreshed by
    /// [`ServerMessage::Relays`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<Relay>,
}

/// Whether an update replaces the receiver's state or changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// Replaces everything; the receiver computes deletions itself.
    Snapshot,
    /// Applies on top of the previous update; `seq` is the previous one's + 1.
    Diff,
}

/// The workspaces and agents a user may see, as a snapshot or a diff.
///
/// A large snapshot comes as several messages with the same `seq`, all but
/// the last marked `more: true`, so the receiver can decode and pass on one
/// part while the next is on the wire. The receiver computes deletions only
/// when the last part has arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceUpdate {
    pub kind: UpdateKind,
    pub seq: u64,
    /// Another part of this snapshot follows (snapshots only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    #[serde(default)]
    pub upserted_workspaces: Vec<Workspace>,
    #[serde(default)]
    pub upserted_agents: Vec<Agent>,
    #[serde(default)]
    pub deleted_workspaces: Vec<WorkspaceId>,
    #[serde(default)]
    pub deleted_agents: Vec<AgentId>,
}

/// A client device that an agent should accept as a WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPeer {
    pub id: String,
    pub user: String,
    pub public_key: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
}

/// The client devices an agent should accept, as a snapshot or a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUpdate {
    pub kind: UpdateKind,
    pub seq: u64,
    #[serde(default)]
    pub upserted: Vec<ClientPeer>,
    #[serde(default)]
    pub deleted: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Relay {
        Relay {
            addr: "turn1.example.com:3478".into(),
            username: "1700003600:dev1".into(),
            password: Secret::new("hunter2-base64"),
            expires_at: 1_700_003_600,
        }
    }

    #[test]
    fn relays_round_trip_and_the_password_never_prints() {
        let msg = ServerMessage::Relays {
            relays: vec![relay()],
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains(r#""type":"relays""#), "{json}");
        assert!(json.contains(r#""password":"hunter2-base64""#), "{json}");
        assert_eq!(serde_json::from_str::<ServerMessage>(&json).unwrap(), msg);
        assert!(!format!("{msg:?}").contains("hunter2"));
    }

    #[test]
    fn a_welcome_without_relays_is_the_old_wire_format() {
        let welcome = Welcome {
            protocol_version: CONTROL_VERSION,
            coordinator_version: "1".into(),
            deployment: DeploymentInfo {
                suffix: "warren".into(),
                ipv4_prefix: "100.64.0.0/10".into(),
                ipv6_prefix: "fd00::/48".into(),
            },
            user: "alice".into(),
            kind: TokenKind::User,
            id: "dev1".into(),
            addresses: vec![],
            relays: vec![],
        };
        let json = serde_json::to_string(&ServerMessage::Welcome(welcome.clone())).unwrap();
        assert!(!json.contains("relays"), "{json}");
        // An old coordinator's welcome (no `relays`) still decodes.
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&json).unwrap(),
            ServerMessage::Welcome(welcome.clone())
        );
        let with = Welcome {
            relays: vec![relay()],
            ..welcome
        };
        let json = serde_json::to_string(&ServerMessage::Welcome(with.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&json).unwrap(),
            ServerMessage::Welcome(with)
        );
    }

    #[test]
    fn an_unknown_message_type_decodes_as_unknown() {
        for json in [
            r#"{"type":"from_the_future"}"#,
            r#"{"type":"from_the_future","candidates":[{"a":1}],"n":2}"#,
        ] {
            assert_eq!(
                serde_json::from_str::<ServerMessage>(json).unwrap(),
                ServerMessage::Unknown,
                "{json}"
            );
        }
        // A known type with a broken body is still an error, not Unknown.
        assert!(serde_json::from_str::<ServerMessage>(r#"{"type":"relays","relays":5}"#).is_err());
        assert!(serde_json::from_str::<ServerMessage>(r#"{"no_type":1}"#).is_err());
    }
}
