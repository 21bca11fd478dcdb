//! The IPC protocol between the GUI/CLI and the helper.
//!
//! Every message is one frame (see [`crate::frame`]). Both sides open with
//! [`Hello`]; a different major version ends the connection with an
//! [`ErrorCode::VersionMismatch`] error naming both versions. Requests carry
//! an `id`; replies carry `reply_to`; events carry neither. After `Subscribe`
//! the helper sends a full state (possibly in several `State` parts, because a
//! frame is capped at 1 MiB) and then diffs.

use crate::model::{Agent, AgentId, DeploymentInfo, Workspace, WorkspaceId};
use crate::Secret;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Protocol name carried in [`Hello`].
pub const PROTOCOL: &str = "warren-ipc";
/// This build's IPC protocol version.
pub const VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

/// A protocol version; peers with different `major` cannot talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// First message in each direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub version: ProtocolVersion,
    /// Version of the program that sent it (e.g. `0.1.0`).
    pub app_version: String,
}

impl Hello {
    pub fn new(app_version: impl Into<String>) -> Self {
        Self {
            protocol: PROTOCOL.to_string(),
            version: VERSION,
            app_version: app_version.into(),
        }
    }

    /// Checks that `theirs` can talk to `self`; the error names both sides.
    pub fn check_compatible(&self, theirs: &Hello) -> Result<(), IpcError> {
        if theirs.protocol != PROTOCOL {
            return Err(IpcError::new(
                ErrorCode::VersionMismatch,
                format!(
                    "the other side speaks protocol {:?}, not {PROTOCOL:?}; is this socket really the Warren helper?",
                    theirs.protocol
                ),
            ));
        }
        if theirs.version.major != self.version.major {
            return Err(IpcError::new(
                ErrorCode::VersionMismatch,
                format!(
                    "version mismatch: this side is {} (protocol {}), the other is {} (protocol {}); install matching versions of the Warren app and helper",
                    self.app_version, self.version, theirs.app_version, theirs.version
                ),
            ));
        }
        Ok(())
    }
}

/// What a GUI or CLI sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Hello(Hello),
    Request { id: u64, request: Request },
}

/// A request to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Connect to a coordinator with a user token (the helper never stores it).
    Start {
        url: String,
        token: Secret,
        /// Extra trusted CA certificate (PEM) for a self-hosted coordinator.
        #[serde(default)]
        ca: Option<String>,
    },
    /// Disconnect and forget the token.
    Stop,
    /// Drop the coordinator connection and connect again now.
    Reconnect,
    /// Session summary (small; the full list comes from `Subscribe`).
    Status,
    /// Stream the full state and then diffs on this connection.
    Subscribe,
}

/// What the helper sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HelperMessage {
    Hello(Hello),
    Reply {
        reply_to: u64,
        reply: Reply,
    },
    /// `seq` restarts at 0 with every `State` part 0 and grows by one per event.
    Event {
        seq: u64,
        event: Event,
    },
    /// A connection-level error (not an answer to a request). Usually the
    /// helper closes the connection after sending it.
    Error(IpcError),
}

/// The answer to one request.
// Replies are built, sent and dropped one at a time; boxing the status
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Status(StatusReport),
    Error(IpcError),
}

/// An error with a machine-readable code and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer is neither root nor in the helper's group.
    PermissionDenied,
    VersionMismatch,
    FrameTooLarge,
    Malformed,
    /// The first message was not `Hello`, or a request was out of place.
    Protocol,
    BadRequest,
    /// A subscriber did not keep up and was disconnected.
    SlowSubscriber,
    Internal,
}

/// Session summary returned by `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub helper_version: String,
    pub session: SessionInfo,
    pub workspace_count: usize,
    pub agent_count: usize,
}

/// The helper's session, as shown to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub state: SessionState,
    /// Coordinator URL of the current (or last) session.
    #[serde(default)]
    pub url: Option<String>,
    /// The signed-in user, once the coordinator said who it is.
    #[serde(default)]
    pub user: Option<String>,
    /// Why the session is reconnecting or failed, in words a person can act on.
    #[serde(default)]
    pub reason: Option<String>,
    /// When reconnecting: milliseconds until the next attempt.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
    /// Reconnect attempts since the last successful connection.
    #[serde(default)]
    pub attempt: u32,
    /// This device as registered for the current session.
    #[serde(default)]
    pub device: Option<DeviceInfo>,
    #[serde(default)]
    pub deployment: Option<DeploymentInfo>,
}

impl SessionInfo {
    pub fn disconnected() -> Self {
        Self {
            state: SessionState::Disconnected,
            url: None,
            user: None,
            reason: None,
            retry_in_ms: None,
            attempt: 0,
            device: None,
            deployment: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Disconnected,
    Connecting,
    Connected,
    Reconnecting,
    Failed,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Disconnected => "disconnected",
            SessionState::Connecting => "connecting",
            SessionState::Connected => "connected",
            SessionState::Reconnecting => "reconnecting",
            SessionState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// This device's identity in the current session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    /// Per-session WireGuard public key (base64).
    pub public_key: String,
    pub addresses: Vec<IpAddr>,
}

/// A streamed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Part of the full state. Part 0 replaces whatever the receiver had;
    /// parts 1.. add to it; the state is complete after the part with `last`.
    State {
        part: u32,
        last: bool,
        session: SessionInfo,
        #[serde(default)]
        workspaces: Vec<Workspace>,
        #[serde(default)]
        agents: Vec<Agent>,
    },
    /// A diff of workspaces and agents.
    PeerUpdate {
        #[serde(default)]
        upserted_workspaces: Vec<Workspace>,
        #[serde(default)]
        upserted_agents: Vec<Agent>,
        #[serde(default)]
        deleted_workspaces: Vec<WorkspaceId>,
        #[serde(default)]
        deleted_agents: Vec<AgentId>,
    },
    /// The session changed (state events coalesce: only the latest matters).
    SessionChanged { session: SessionInfo },
    /// One line of the helper's log.
    Log { line: LogLine },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}
