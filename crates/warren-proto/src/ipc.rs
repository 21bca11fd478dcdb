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
use std::net::{IpAddr, SocketAddr};

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
        /// The deployment (ranges and suffix) the person accepted when
        /// signing in: the helper refuses a coordinator that announces
        /// another ("sign in again to accept").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<DeploymentInfo>,
    },
    /// Disconnect and forget the token.
    Stop,
    /// Drop the coordinator connection and connect again now.
    Reconnect,
    /// Session summary (small; the full list comes from `Subscribe`).
    Status,
    /// Stream the full state and then diffs on this connection.
    Subscribe,
    /// Send one ICMP echo through the tunnel to an agent and time the reply.
    Ping {
        /// An agent's DNS name, `workspace/agent`, agent name, id or tunnel
        /// address.
        target: String,
        /// How long to wait for the reply (default [`PING_TIMEOUT_MS`]).
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

/// How long the helper waits for an echo reply unless told otherwise.
pub const PING_TIMEOUT_MS: u64 = 2_000;

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
    Pong(PingReport),
    Error(IpcError),
}

/// The answer to a [`Request::Ping`] that got its echo reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PingReport {
    pub agent_id: AgentId,
    /// The agent's DNS name people type (or its name if it has none).
    pub name: String,
    /// The tunnel address that answered.
    pub address: IpAddr,
    /// Round-trip time through the tunnel, in microseconds.
    pub rtt_us: u64,
    /// Where the WireGuard datagrams went (the agent's current endpoint).
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
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
    /// A ping got no answer in time, or the tunnel can't carry it now.
    Unreachable,
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
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
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
    /// What `reason` is about, for programs: the app offers "Sign in again"
    /// on [`ReasonCode::SignInRequired`] rather than reading the words.
    /// Absent from helpers that predate it.
    #[serde(default)]
    pub reason_code: Option<ReasonCode>,
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
    /// The data plane; `None` when the helper runs without one
    /// (`--no-tunnel`).
    #[serde(default)]
    pub tunnel: Option<TunnelInfo>,
    /// What the helper refused or cut from what the coordinator sent while
    /// the session still runs (an agent outside the deployment's range, a
    /// reused key, unusable endpoints, too many agents), newest last, at
    /// most [`MAX_NOTICES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<Notice>,
}

/// Most notices a session keeps; older ones are summed up in the first.
pub const MAX_NOTICES: usize = 32;

/// Something the helper refused or cut from a running session's data, in
/// words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Notice {
    pub kind: NoticeKind,
    /// The agent it is about, if one (its id).
    #[serde(default)]
    pub agent_id: Option<String>,
    pub message: String,
}

/// What a [`Notice`] is about, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// An agent was left out of the directory (address outside the
    /// deployment's range, a key another agent holds, a malformed field).
    AgentRefused,
    /// Some of an agent's endpoints or names were ignored; the agent stays.
    AgentTrimmed,
    /// The deployment has more agents than this helper keeps.
    AgentsCapped,
    /// A kind from a newer helper that this program does not know.
    #[serde(other)]
    Other,
}

impl SessionInfo {
    pub fn disconnected() -> Self {
        Self {
            state: SessionState::Disconnected,
            url: None,
            user: None,
            reason: None,
            reason_code: None,
            retry_in_ms: None,
            attempt: 0,
            device: None,
            deployment: None,
            tunnel: None,
            notices: Vec::new(),
        }
    }
}

/// Why a session is reconnecting or failed, as a code (the words are in
/// [`SessionInfo::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The coordinator no longer accepts the token: only signing in again
    /// (with a new token) helps.
    SignInRequired,
    /// The coordinator refuses this client for another reason retrying
    /// cannot fix (an incompatible version).
    Refused,
    /// The coordinator could not be reached; the helper retries.
    Unreachable,
    /// An established connection ended; the helper retries.
    ConnectionLost,
    /// The update stream skipped ahead; the helper resubscribes.
    Resynchronizing,
    /// The deployment asked for a network this helper does not allow (a
    /// range outside the private ranges, one that overlaps this machine's
    /// networks, a public DNS suffix): only its administrator can fix it.
    DeploymentRefused,
    /// The deployment's ranges or suffix differ from those accepted at
    /// sign-in: signing in again accepts the new ones.
    DeploymentChanged,
    /// A code from a newer helper that this program does not know.
    #[serde(other)]
    Other,
}

/// The data plane's state, so a person sees why workspaces are unreachable
/// even though the session is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct TunnelInfo {
    pub state: TunnelState,
    /// Why it failed, in words a person can act on.
    #[serde(default)]
    pub error: Option<String>,
    /// The TUN device's name.
    pub interface: String,
    /// The WireGuard UDP port.
    pub listen_port: u16,
    /// Which start of the tunnel this is: every start (a new session key,
    /// a retry after a failure) gets the next number, and a report of an
    /// older one is stale.
    #[serde(default)]
    pub generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// Not running (not connected).
    Down,
    /// Being configured (TUN, addresses, routes).
    Starting,
    /// Carrying traffic.
    Up,
    /// Could not start, or stopped by itself (a TUN read error, the device
    /// deleted under it); see `error`. Retried with backoff while connected.
    Failed,
}

impl TunnelState {
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelState::Down => "down",
            TunnelState::Starting => "starting",
            TunnelState::Up => "up",
            TunnelState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
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
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DeviceInfo {
    pub id: String,
    /// Per-session WireGuard public key (base64).
    pub public_key: String,
    pub addresses: Vec<IpAddr>,
    /// UDP endpoints registered for this session's WireGuard socket.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
}

/// A streamed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
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
        /// The latest tunnel statistics of listed agents (any part).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stats: Vec<PeerStats>,
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
    /// Fresh tunnel statistics for some agents (every 10 s for agents whose
    /// numbers moved, and at once on a handshake change). Agents not listed
    /// keep their previous figures.
    PeerStats { stats: Vec<PeerStats> },
}

/// No handshake for this long makes a peer stale (WireGuard's
/// REJECT_AFTER_TIME: the session can no longer carry data without a new one).
pub const STALE_AFTER_MS: u64 = 180_000;

/// Tunnel statistics of the WireGuard peer of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PeerStats {
    pub agent_id: AgentId,
    /// Wall-clock time of the latest handshake, in ms since the Unix epoch.
    #[serde(default)]
    pub last_handshake_ms: Option<u64>,
    /// Inner bytes received from the agent.
    pub rx_bytes: u64,
    /// Inner bytes sent to the agent.
    pub tx_bytes: u64,
    /// Round-trip time of the latest handshake this side initiated, in µs.
    #[serde(default)]
    pub rtt_us: Option<u64>,
    /// Where datagrams to the agent go now (it can roam).
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// The TURN relay (`HOST:PORT`) the agent is reached through, when the
    /// path is relayed; `None` on a direct path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// The path layer has no working path to the agent (every check
    /// fails), however recent the last handshake: the path is `none`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_path: bool,
}

/// How datagrams reach an agent: `warren status`'s PATH column and the
/// `path` of its `--json` tunnel object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Straight to the agent's endpoint.
    Direct,
    /// Through a TURN relay.
    Relayed,
    /// No working path: no handshake yet, or the last one is stale.
    None,
}

impl PathKind {
    /// `"direct"`, `"relayed"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
            PathKind::None => "none",
        }
    }
}

/// How fresh a peer's handshake is, as the CLI and the app show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Within [`STALE_AFTER_MS`]; `age_s` seconds ago.
    Recent { age_s: u64 },
    /// Older than [`STALE_AFTER_MS`].
    Stale { age_s: u64 },
    /// No handshake yet in this session.
    Never,
}

impl PeerStats {
    /// The path at wall-clock `now_ms`: none without a fresh handshake or
    /// when the path layer has none, else relayed or direct.
    pub fn path(&self, now_ms: u64) -> PathKind {
        if self.no_path {
            return PathKind::None;
        }
        match self.handshake(now_ms) {
            Handshake::Recent { .. } if self.relay.is_some() => PathKind::Relayed,
            Handshake::Recent { .. } => PathKind::Direct,
            _ => PathKind::None,
        }
    }

    /// The handshake's freshness at wall-clock `now_ms`. A handshake time
    /// slightly in the future (clocks of two processes) counts as now.
    pub fn handshake(&self, now_ms: u64) -> Handshake {
        match self.last_handshake_ms {
            None => Handshake::Never,
            Some(at) => {
                let age_ms = now_ms.saturating_sub(at);
                let age_s = age_ms / 1000;
                if age_ms >= STALE_AFTER_MS {
                    Handshake::Stale { age_s }
                } else {
                    Handshake::Recent { age_s }
                }
            }
        }
    }
}

impl Handshake {
    /// `"recent"`, `"stale"` or `"never"` (for `--json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Recent { .. } => "recent",
            Handshake::Stale { .. } => "stale",
            Handshake::Never => "never",
        }
    }
}

impl std::fmt::Display for Handshake {
    /// "handshake 4s ago", "stale", "never".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handshake::Recent { age_s } => write!(f, "handshake {age_s}s ago"),
            Handshake::Stale { .. } => f.write_str("stale"),
            Handshake::Never => f.write_str("never"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(last: Option<u64>) -> PeerStats {
        PeerStats {
            agent_id: "a".into(),
            last_handshake_ms: last,
            rx_bytes: 0,
            tx_bytes: 0,
            rtt_us: None,
            endpoint: None,
            relay: None,
            no_path: false,
        }
    }

    #[test]
    fn reason_codes_travel_and_old_or_newer_peers_still_parse() {
        let failed = SessionInfo {
            state: SessionState::Failed,
            reason: Some("sign in again".into()),
            reason_code: Some(ReasonCode::SignInRequired),
            ..SessionInfo::disconnected()
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["reason_code"], "sign_in_required");
        assert_eq!(serde_json::from_value::<SessionInfo>(json).unwrap(), failed);
        // A helper from before the code: no field at all.
        let old: SessionInfo =
            serde_json::from_str(r#"{"state":"failed","reason":"rejected"}"#).unwrap();
        assert_eq!(old.reason_code, None);
        // A newer helper's code this build does not know.
        let newer: SessionInfo =
            serde_json::from_str(r#"{"state":"failed","reason_code":"quota_exceeded"}"#).unwrap();
        assert_eq!(newer.reason_code, Some(ReasonCode::Other));
    }

    #[test]
    fn handshake_freshness_switches_to_stale_at_three_minutes() {
        let now = 1_000_000_000;
        assert_eq!(stats(None).handshake(now), Handshake::Never);
        assert_eq!(
            stats(Some(now - 4_400)).handshake(now),
            Handshake::Recent { age_s: 4 }
        );
        assert_eq!(
            stats(Some(now - STALE_AFTER_MS + 1)).handshake(now),
            Handshake::Recent { age_s: 179 }
        );
        assert_eq!(
            stats(Some(now - STALE_AFTER_MS)).handshake(now),
            Handshake::Stale { age_s: 180 }
        );
        // Another process's clock a little ahead is "just now", not a panic.
        assert_eq!(
            stats(Some(now + 500)).handshake(now),
            Handshake::Recent { age_s: 0 }
        );
        assert_eq!(
            stats(Some(now - 4_000)).handshake(now).to_string(),
            "handshake 4s ago"
        );
        assert_eq!(stats(Some(0)).handshake(now).to_string(), "stale");
        assert_eq!(stats(None).handshake(now).to_string(), "never");
    }
}
