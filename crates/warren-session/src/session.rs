//! The session state machine: Disconnected → Connecting → Connected →
//! Reconnecting (backoff) → Failed.
//!
//! The driver owns the sockets. It tells the machine what happened
//! (`start`, `on_connected`, `on_failure`, `handle_timeout`) and carries out
//! what the machine asks ([`Action`]). Every connection attempt has a
//! generation number; results from an older generation are ignored, so a
//! slow, cancelled attempt can never overwrite a newer session.

use crate::backoff::Backoff;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use warren_proto::control::Welcome;
use warren_proto::ipc::{DeviceInfo, ReasonCode, SessionInfo, SessionState};
use warren_proto::model::DeploymentInfo;
use warren_proto::Secret;

/// Where and as whom to connect. The token lives only in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub url: String,
    pub token: Secret,
    /// Extra trusted CA certificate (PEM).
    pub ca: Option<String>,
}

/// Why a connection attempt failed or an established connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The coordinator answered 401: retrying cannot help.
    Unauthorized,
    /// The coordinator refused for another reason retrying cannot fix
    /// (incompatible version, malformed registration). Carries its message.
    Rejected(String),
    /// No answer: network down, DNS, refused, timeout, 5xx, TLS trouble.
    Unreachable(String),
    /// An established connection ended.
    Lost(String),
    /// The update stream skipped a sequence number; resubscribe.
    Resync(String),
    /// The deployment asked for a network this client does not allow; the
    /// message names what and why. Retrying cannot fix it.
    DeploymentRefused(String),
    /// The deployment's ranges or suffix differ from those accepted when
    /// the session started; the message says what changed.
    DeploymentChanged(String),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection with the current config; report its outcome with
    /// this generation.
    Connect { generation: u64 },
    /// Close the connection of this generation, if it is still open.
    Disconnect { generation: u64 },
}

#[derive(Debug)]
pub struct Session {
    state: SessionState,
    config: Option<SessionConfig>,
    generation: u64,
    /// Failed attempts since the last successful connection.
    attempt: u32,
    backoff: Backoff,
    retry_at: Option<Instant>,
    reason: Option<(ReasonCode, String)>,
    user: Option<String>,
    device: Option<DeviceInfo>,
    deployment: Option<DeploymentInfo>,
    /// The per-session public key, set by `start`.
    public_key: Option<String>,
    /// The WireGuard socket's endpoints, as registered with the coordinator.
    endpoints: Vec<std::net::SocketAddr>,
    actions: VecDeque<Action>,
    changed: bool,
}

impl Session {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            state: SessionState::Disconnected,
            config: None,
            generation: 0,
            attempt: 0,
            backoff,
            retry_at: None,
            reason: None,
            user: None,
            device: None,
            deployment: None,
            public_key: None,
            endpoints: Vec::new(),
            actions: VecDeque::new(),
            changed: false,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn config(&self) -> Option<&SessionConfig> {
        self.config.as_ref()
    }

    /// The generation of the current (or last) connection attempt.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `start` with this config would change nothing: the same
    /// deployment and token, and a session that is up or on its way up.
    pub fn is_running_with(&self, config: &SessionConfig) -> bool {
        self.config.as_ref() == Some(config)
            && matches!(
                self.state,
                SessionState::Connecting | SessionState::Connected | SessionState::Reconnecting
            )
    }

    /// The UDP endpoints the next registration announces (shown in the
    /// device info once connected).
    pub fn set_endpoints(&mut self, endpoints: Vec<std::net::SocketAddr>) {
        self.endpoints = endpoints;
    }

    /// Begins a new session with a fresh per-session `public_key`, dropping
    /// any previous one.
    pub fn start(&mut self, _now: Instant, config: SessionConfig, public_key: String) {
        self.close_current();
        self.config = Some(config);
        self.public_key = Some(public_key);
        self.user = None;
        self.device = None;
        self.deployment = None;
        self.attempt = 0;
        self.reason = None;
        self.connect_now(SessionState::Connecting);
    }

    /// Ends the session and forgets its token.
    pub fn stop(&mut self, _now: Instant) {
        self.close_current();
        self.config = None;
        self.public_key = None;
        self.user = None;
        self.device = None;
        self.deployment = None;
        self.attempt = 0;
        self.reason = None;
        self.set_state(SessionState::Disconnected);
    }

    /// A person asked to reconnect: drop the connection and try again now,
    /// even from `Failed` (they may have fixed the cause).
    pub fn reconnect(&mut self, _now: Instant) -> bool {
        if self.config.is_none() {
            return false;
        }
        self.close_current();
        self.attempt = 0;
        self.reason = None;
        self.connect_now(SessionState::Connecting);
        true
    }

    pub fn on_connected(&mut self, _now: Instant, generation: u64, welcome: &Welcome) {
        if generation != self.generation || self.config.is_none() {
            return;
        }
        self.attempt = 0;
        self.reason = None;
        self.retry_at = None;
        self.user = Some(welcome.user.clone());
        self.deployment = Some(welcome.deployment.clone());
        self.device = self.public_key.as_ref().map(|key| DeviceInfo {
            id: welcome.id.clone(),
            public_key: key.clone(),
            addresses: welcome.addresses.clone(),
            endpoints: self.endpoints.clone(),
        });
        self.set_state(SessionState::Connected);
    }

    pub fn on_failure(&mut self, now: Instant, generation: u64, failure: ConnectFailure) {
        if generation != self.generation || self.config.is_none() {
            return;
        }
        if !matches!(
            self.state,
            SessionState::Connecting | SessionState::Connected | SessionState::Reconnecting
        ) {
            return;
        }
        let url = self
            .config
            .as_ref()
            .map(|c| c.url.clone())
            .unwrap_or_default();
        match failure {
            ConnectFailure::Unauthorized => {
                self.fail(
                    ReasonCode::SignInRequired,
                    "The coordinator rejected your token — sign in again with `warren login`."
                        .to_string(),
                );
            }
            ConnectFailure::Rejected(message) => {
                self.fail(
                    ReasonCode::Refused,
                    format!("The coordinator at {url} refused this client: {message}"),
                );
            }
            ConnectFailure::DeploymentRefused(message) => {
                self.fail(ReasonCode::DeploymentRefused, message);
            }
            ConnectFailure::DeploymentChanged(message) => {
                self.fail(ReasonCode::DeploymentChanged, message);
            }
            ConnectFailure::Unreachable(detail) => {
                self.schedule_retry(
                    now,
                    ReasonCode::Unreachable,
                    format!("can't reach the coordinator at {url}: {detail}"),
                );
            }
            ConnectFailure::Lost(detail) => {
                self.schedule_retry(
                    now,
                    ReasonCode::ConnectionLost,
                    format!("lost the connection to the coordinator: {detail}"),
                );
            }
            ConnectFailure::Resync(detail) => {
                self.schedule_retry(
                    now,
                    ReasonCode::Resynchronizing,
                    format!("resynchronizing with the coordinator: {detail}"),
                );
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.retry_at {
            if now >= at && self.state == SessionState::Reconnecting {
                self.retry_at = None;
                self.connect_now(SessionState::Reconnecting);
            }
        }
    }

    /// When the driver should call `handle_timeout` next; `None` when
    /// nothing is scheduled (an idle helper sleeps).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// True once after anything a person would see has changed.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn info(&self, now: Instant) -> SessionInfo {
        SessionInfo {
            state: self.state,
            url: self.config.as_ref().map(|c| c.url.clone()),
            user: self.user.clone(),
            reason: self.reason.as_ref().map(|(_, words)| words.clone()),
            reason_code: self.reason.as_ref().map(|(code, _)| *code),
            retry_in_ms: self
                .retry_at
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            attempt: self.attempt,
            device: self.device.clone(),
            deployment: self.deployment.clone(),
            // The client state, which owns the data plane and the
            // directory's checks, fills these in.
            tunnel: None,
            notices: Vec::new(),
        }
    }

    fn fail(&mut self, code: ReasonCode, reason: String) {
        self.retry_at = None;
        self.reason = Some((code, reason));
        self.device = None;
        self.set_state(SessionState::Failed);
    }

    fn schedule_retry(&mut self, now: Instant, code: ReasonCode, reason: String) {
        let delay: Duration = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        self.retry_at = Some(now + delay);
        self.reason = Some((code, reason));
        self.set_state(SessionState::Reconnecting);
        // Forces SessionChanged even when already Reconnecting: the reason
        // and countdown changed.
        self.changed = true;
    }

    fn connect_now(&mut self, state: SessionState) {
        self.generation += 1;
        self.retry_at = None;
        self.actions.push_back(Action::Connect {
            generation: self.generation,
        });
        self.set_state(state);
        self.changed = true;
    }

    fn close_current(&mut self) {
        if matches!(
            self.state,
            SessionState::Connecting | SessionState::Connected | SessionState::Reconnecting
        ) {
            self.actions.push_back(Action::Disconnect {
                generation: self.generation,
            });
        }
        self.retry_at = None;
    }

    fn set_state(&mut self, state: SessionState) {
        if self.state != state {
            self.state = state;
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::control::{TokenKind, CONTROL_VERSION};

    fn config() -> SessionConfig {
        SessionConfig {
            url: "https://coord.example".into(),
            token: Secret::new("wut_0123456789abcdef_secret"),
            ca: None,
        }
    }

    fn welcome() -> Welcome {
        Welcome {
            protocol_version: CONTROL_VERSION,
            coordinator_version: "0.1.0".into(),
            deployment: DeploymentInfo {
                suffix: "warren".into(),
                ipv4_prefix: "100.64.0.0/10".into(),
                ipv6_prefix: "fd00:1:2::/48".into(),
            },
            user: "alice".into(),
            kind: TokenKind::User,
            id: "dev-1".into(),
            addresses: vec!["100.64.0.1".parse().unwrap()],
            relays: vec![],
        }
    }

    fn session() -> Session {
        Session::new(Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            42,
        ))
    }

    fn drain(s: &mut Session) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    #[test]
    fn start_connects_and_reports_connected() {
        let t0 = Instant::now();
        let mut s = session();
        assert_eq!(s.poll_timeout(), None, "idle session schedules nothing");
        s.start(t0, config(), "pk".into());
        assert_eq!(s.state(), SessionState::Connecting);
        assert_eq!(drain(&mut s), vec![Action::Connect { generation: 1 }]);
        s.on_connected(t0, 1, &welcome());
        let info = s.info(t0);
        assert_eq!(info.state, SessionState::Connected);
        assert_eq!(info.user.as_deref(), Some("alice"));
        assert_eq!(info.device.unwrap().public_key, "pk");
        assert_eq!(
            s.poll_timeout(),
            None,
            "connected session schedules nothing"
        );
        assert!(s.take_changed());
        assert!(!s.take_changed());
    }

    #[test]
    fn unauthorized_fails_with_sign_in_again_and_does_not_retry() {
        let t0 = Instant::now();
        let mut s = session();
        s.start(t0, config(), "pk".into());
        drain(&mut s);
        s.on_failure(t0, 1, ConnectFailure::Unauthorized);
        let info = s.info(t0);
        assert_eq!(info.state, SessionState::Failed);
        assert_eq!(info.reason_code, Some(ReasonCode::SignInRequired));
        assert!(info.reason.unwrap().contains("sign in again"));
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t0 + Duration::from_secs(3600));
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn lost_connection_backs_off_exponentially_capped_at_30s() {
        let mut now = Instant::now();
        let mut s = session();
        s.start(now, config(), "pk".into());
        drain(&mut s);
        s.on_connected(now, 1, &welcome());
        s.on_failure(now, 1, ConnectFailure::Lost("reset".into()));
        assert_eq!(s.state(), SessionState::Reconnecting);
        let mut last_delay = Duration::ZERO;
        for attempt in 0..12u32 {
            let at = s.poll_timeout().expect("retry scheduled");
            let delay = at - now;
            assert!(delay <= Duration::from_secs(30), "{delay:?}");
            if attempt < 5 {
                assert!(
                    delay >= last_delay / 2,
                    "grows: {delay:?} after {last_delay:?}"
                );
            }
            last_delay = delay;
            let info = s.info(now);
            let (code, expected) = if attempt == 0 {
                (ReasonCode::ConnectionLost, "lost the connection")
            } else {
                (ReasonCode::Unreachable, "can't reach the coordinator")
            };
            assert!(info.reason.as_ref().unwrap().contains(expected));
            assert_eq!(info.reason_code, Some(code));
            assert_eq!(info.retry_in_ms, Some(delay.as_millis() as u64));
            // Nothing happens before the deadline.
            s.handle_timeout(at - Duration::from_millis(1));
            assert!(drain(&mut s).is_empty());
            now = at;
            s.handle_timeout(now);
            let gen = match drain(&mut s).as_slice() {
                [Action::Connect { generation }] => *generation,
                other => panic!("expected one connect, got {other:?}"),
            };
            s.on_failure(now, gen, ConnectFailure::Unreachable("refused".into()));
        }
        assert!(last_delay >= Duration::from_secs(15));
    }

    #[test]
    fn stale_generation_results_are_ignored() {
        let t0 = Instant::now();
        let mut s = session();
        s.start(t0, config(), "pk1".into());
        drain(&mut s);
        // The user restarts before the first attempt finished.
        s.start(t0, config(), "pk2".into());
        assert_eq!(
            drain(&mut s),
            vec![
                Action::Disconnect { generation: 1 },
                Action::Connect { generation: 2 }
            ]
        );
        s.on_failure(t0, 1, ConnectFailure::Unauthorized);
        assert_eq!(s.state(), SessionState::Connecting);
        s.on_connected(t0, 2, &welcome());
        assert_eq!(s.info(t0).device.unwrap().public_key, "pk2");
    }

    #[test]
    fn stop_disconnects_and_forgets_the_token() {
        let t0 = Instant::now();
        let mut s = session();
        s.start(t0, config(), "pk".into());
        drain(&mut s);
        s.on_connected(t0, 1, &welcome());
        s.stop(t0);
        assert_eq!(drain(&mut s), vec![Action::Disconnect { generation: 1 }]);
        assert!(s.config().is_none());
        let info = s.info(t0);
        assert_eq!(info.state, SessionState::Disconnected);
        assert!(info.user.is_none() && info.device.is_none());
        assert!(!s.reconnect(t0), "nothing to reconnect after stop");
    }

    #[test]
    fn manual_reconnect_recovers_from_failed() {
        let t0 = Instant::now();
        let mut s = session();
        s.start(t0, config(), "pk".into());
        drain(&mut s);
        s.on_failure(t0, 1, ConnectFailure::Rejected("version 2 required".into()));
        assert_eq!(s.state(), SessionState::Failed);
        assert_eq!(s.info(t0).reason_code, Some(ReasonCode::Refused));
        assert!(s.reconnect(t0));
        assert_eq!(drain(&mut s), vec![Action::Connect { generation: 2 }]);
        assert_eq!(s.state(), SessionState::Connecting);
        assert!(s.info(t0).reason.is_none());
        assert!(s.info(t0).reason_code.is_none());
    }

    #[test]
    fn same_config_is_recognized_as_running() {
        let t0 = Instant::now();
        let mut s = session();
        assert!(!s.is_running_with(&config()));
        s.start(t0, config(), "pk".into());
        assert!(s.is_running_with(&config()));
        let mut other = config();
        other.token = Secret::new("different");
        assert!(!s.is_running_with(&other));
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let t0 = Instant::now();
        let mut s = session();
        s.start(t0, config(), "pk".into());
        let dump = format!("{s:?}");
        assert!(!dump.contains("secret"), "{dump}");
    }
}
