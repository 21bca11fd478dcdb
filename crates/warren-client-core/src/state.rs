//! [`ClientState`]: everything the helper decides, in one deterministic
//! state machine.
//!
//! It composes the session ([`Session`]), the workspace directory
//! ([`Directory`]), the WireGuard peers ([`PeerTable`]), the DNS names
//! ([`NameTable`]), the tunnel's lifecycle ([`Lifecycle`]), statistics
//! attribution ([`StatsBook`]) and ping-target resolution. The driver
//! (`warrend`'s engine) feeds it inputs with the current time through the
//! `handle_*` methods, carries out what [`ClientState::poll_command`] asks of
//! the IO edges (the coordinator connection, the data plane), forwards what
//! [`ClientState::poll_event`] says to subscribers, and calls
//! [`ClientState::handle_timeout`] at [`ClientState::poll_timeout`]. No
//! sockets, clocks or tasks here; an idle client has no timeout at all.
//!
//! A directory change flows through as a diff: the coordinator's update is
//! applied to the directory, whose [`Delta`] (only what changed) becomes
//! [`PeerChange`]s and [`NameChange`]s for the running tunnel and one
//! [`Event::Directory`] for subscribers. Only a tunnel that starts gets the
//! full lists.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use warren_netcfg::dns::DnsMode;
use warren_proto::control::{Welcome, WorkspaceUpdate};
use warren_proto::ipc::{
    ErrorCode, IpcError, PeerStats, SessionInfo, SessionState, StatusReport, TunnelInfo,
    TunnelState, PING_TIMEOUT_MS,
};
use warren_proto::limits::{check_coordinator_scheme, url_host_is_loopback};
use warren_proto::model::{Agent, AgentId, DeploymentInfo, Workspace};
use warren_proto::Secret;
use warren_session::{Backoff, ConnectFailure, Delta, Directory, Session, SessionConfig};
use warren_tunnel::{PeerConfig, StaticSecret};

use crate::confine::{check_device_addresses, confine, same_network, Policy};
use crate::keys::SessionKeys;
use crate::lifecycle::{Lifecycle, Order, Wanted};
use crate::names::{NameChange, NameTable};
use crate::peers::{PeerChange, PeerTable};
use crate::ping::{best_name, resolve_target};
use crate::plan::net_plan;
use crate::screen::{Rules, Screen};
use crate::stats::{PeerReport, StatsBook};

/// Facts about this helper's data plane that never change while it runs.
/// `None` in [`ClientConfig::tunnel`] means `--no-tunnel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelFacts {
    /// The TUN device's name.
    pub tun_name: String,
    /// The WireGuard socket's port (bound once, for the helper's lifetime).
    pub listen_port: u16,
    /// How the OS learns about the DNS stub (a concrete mode).
    pub dns_mode: DnsMode,
    /// The file the resolv.conf mode manages.
    pub resolv_conf: PathBuf,
}

/// How the client state is set up.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Seeds the jitter of every backoff (replayable in tests).
    pub seed: u64,
    pub tunnel: Option<TunnelFacts>,
    /// What any deployment may do to this machine (the local policy file).
    pub policy: Policy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backoff_base: Backoff::DEFAULT_BASE,
            backoff_cap: Backoff::DEFAULT_CAP,
            seed: 0,
            tunnel: None,
            policy: Policy::default(),
        }
    }
}

/// Open a coordinator connection as session generation `generation`.
#[derive(Debug, Clone)]
pub struct ConnectControl {
    pub generation: u64,
    pub url: String,
    pub token: Secret,
    pub ca: Option<String>,
    /// This session's WireGuard public key (base64), to register.
    pub public_key: String,
}

/// Start the data plane as generation `generation` with everything it needs.
pub struct TunnelUp {
    pub generation: u64,
    pub secret: StaticSecret,
    pub plan: warren_netcfg::NetPlan,
    pub peers: Vec<PeerConfig>,
    pub names: Vec<(String, Vec<IpAddr>)>,
}

// By hand, so the private key can never reach a log line.
impl std::fmt::Debug for TunnelUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelUp")
            .field("generation", &self.generation)
            .field("plan", &self.plan)
            .field("peers", &self.peers.len())
            .field("names", &self.names.len())
            .finish_non_exhaustive()
    }
}

/// What the IO edges must do.
#[derive(Debug)]
pub enum Command {
    /// Open a coordinator connection; report with `handle_control_*`.
    ConnectControl(ConnectControl),
    /// Close the connection of this generation, if it is still open.
    DisconnectControl { generation: u64 },
    /// Start (or restart) the data plane; report with
    /// [`ClientState::handle_tunnel_report`].
    TunnelUp(TunnelUp),
    /// Edit the running data plane of this generation (ignore if another
    /// runs: its own `TunnelUp` carried the full lists).
    TunnelChanges {
        generation: u64,
        peers: Vec<PeerChange>,
        names: Vec<NameChange>,
    },
    /// Stop the data plane and undo the OS configuration; report `Down`
    /// with this generation when done.
    TunnelDown { generation: u64 },
    /// Report current per-peer figures now (a subscriber arrived).
    ReportStats { generation: u64 },
}

/// What subscribers must be told.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    SessionChanged(Box<SessionInfo>),
    Directory(Delta),
    Stats(Vec<PeerStats>),
}

/// A ping to carry out: which agent, at which address, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget {
    pub agent_id: AgentId,
    /// The name to show (the agent's shortest DNS name).
    pub name: String,
    pub address: IpAddr,
    pub timeout: Duration,
    /// The tunnel generation to ping through.
    pub generation: u64,
}

/// The machine. See the module documentation.
#[derive(Debug)]
pub struct ClientState {
    facts: Option<TunnelFacts>,
    session: Session,
    directory: Directory,
    keys: Option<SessionKeys>,
    /// Welcome of the current generation, held until its first snapshot is
    /// applied: the session is shown as connected only once the list is real.
    pending_welcome: Option<(u64, Welcome)>,
    peers: PeerTable,
    names: NameTable,
    stats: StatsBook,
    policy: Policy,
    /// Checks every workspace update before the directory sees it.
    screen: Screen,
    /// The networks this machine has (the driver reads them before each
    /// registration), which a deployment's ranges must not overlap.
    host_networks: Vec<warren_netcfg::HostNetwork>,
    /// The deployment this session accepted: given at sign-in, or the first
    /// one the coordinator announced. A different one ends the session.
    pinned: Option<DeploymentInfo>,
    tunnel: Lifecycle,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
}

impl ClientState {
    pub fn new(config: ClientConfig) -> Self {
        let backoff = Backoff::new(config.backoff_base, config.backoff_cap, config.seed);
        ClientState {
            facts: config.tunnel,
            session: Session::new(backoff),
            directory: Directory::new(),
            keys: None,
            pending_welcome: None,
            peers: PeerTable::new(),
            names: NameTable::new(),
            stats: StatsBook::default(),
            policy: config.policy,
            screen: Screen::new(),
            host_networks: Vec::new(),
            pinned: None,
            tunnel: Lifecycle::new(config.seed.rotate_left(17) ^ 0x5752),
            commands: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- inputs -----

    /// A person signed in and asked to connect. `keys` is a fresh pair for
    /// this session (used only if a new session starts). `accepted` is the
    /// deployment the person accepted at sign-in, if the sign-in recorded
    /// it: the coordinator must announce the same ranges and suffix.
    pub fn handle_start(
        &mut self,
        now: Instant,
        url: &str,
        token: Secret,
        ca: Option<String>,
        keys: SessionKeys,
        accepted: Option<DeploymentInfo>,
    ) -> Result<(), IpcError> {
        let url = url.trim().trim_end_matches('/').to_string();
        // The CLI and the app check the same rule, but any member of the
        // helper's group can send `Start`: the token must not leave in clear.
        if let Err(problem) = check_coordinator_scheme(&url) {
            return Err(IpcError::new(
                ErrorCode::BadRequest,
                format!("the coordinator URL {url:?} can't be used: {problem}"),
            ));
        }
        if token.is_empty() {
            return Err(IpcError::new(
                ErrorCode::BadRequest,
                "no token given; sign in with `warren login` first",
            ));
        }
        let config = SessionConfig { url, token, ca };
        let same_deployment = match (&accepted, &self.pinned) {
            (Some(a), Some(p)) => same_network(a, p),
            (None, _) => true,
            (Some(_), None) => false,
        };
        if self.session.is_running_with(&config) && same_deployment {
            tracing::info!("start requested for the running session; nothing to do");
            return Ok(());
        }
        tracing::info!(url = %config.url, "starting a session");
        self.session.start(now, config, keys.public_base64());
        self.keys = Some(keys);
        self.pending_welcome = None;
        self.pinned = accepted;
        self.screen.reset();
        self.after_input(now);
        let delta = self.directory.clear();
        self.apply_delta(delta);
        Ok(())
    }

    /// Disconnect and forget the token.
    pub fn handle_stop(&mut self, now: Instant) {
        tracing::info!("stopping the session");
        self.session.stop(now);
        self.keys = None;
        self.pending_welcome = None;
        self.pinned = None;
        self.screen.reset();
        // The tunnel goes down first, so the directory's removal below is
        // not sent to it peer by peer.
        self.after_input(now);
        let delta = self.directory.clear();
        self.apply_delta(delta);
    }

    /// Reconnect now (a person asked).
    pub fn handle_reconnect(&mut self, now: Instant) -> Result<(), IpcError> {
        if !self.session.reconnect(now) {
            return Err(IpcError::new(
                ErrorCode::BadRequest,
                "not signed in: there is no session to reconnect; run `warren up` first",
            ));
        }
        tracing::info!("reconnecting on request");
        self.after_input(now);
        Ok(())
    }

    /// The UDP endpoints the driver is about to register (shown in the
    /// device info once connected).
    pub fn handle_local_endpoints(&mut self, endpoints: Vec<std::net::SocketAddr>) {
        self.session.set_endpoints(endpoints);
    }

    /// The networks this machine has now; the driver reads them just
    /// before passing on a registration ([`Self::handle_control_connected`]).
    /// Without a data plane (`--no-tunnel`) nothing is routed, so nothing
    /// can clash: they are not kept.
    pub fn handle_host_networks(&mut self, networks: Vec<warren_netcfg::HostNetwork>) {
        let Some(facts) = &self.facts else {
            self.host_networks.clear();
            return;
        };
        self.host_networks = networks
            .into_iter()
            .filter(|n| n.interface != facts.tun_name)
            .collect();
    }

    /// The coordinator accepted generation `generation`'s registration.
    /// Its deployment is checked first: one that asks for ranges or a
    /// suffix this machine does not allow, or that differs from the one
    /// this session accepted, ends the session with the reason.
    pub fn handle_control_connected(&mut self, now: Instant, generation: u64, welcome: Welcome) {
        if generation == self.session.generation() {
            match self.accept_deployment(&welcome) {
                Ok(rules) => {
                    self.screen.set_rules(rules);
                    self.directory.begin_stream();
                    self.pending_welcome = Some((generation, welcome));
                }
                Err(failure) => {
                    tracing::error!(?failure, "refusing the deployment");
                    self.commands
                        .push_back(Command::DisconnectControl { generation });
                    self.session.on_failure(now, generation, failure);
                }
            }
        }
        self.after_input(now);
    }

    /// The rules this deployment's updates are screened by, or why the
    /// deployment is refused.
    fn accept_deployment(&mut self, welcome: &Welcome) -> Result<Rules, ConnectFailure> {
        let deployment = &welcome.deployment;
        if let Some(pinned) = &self.pinned {
            if !same_network(pinned, deployment) {
                return Err(ConnectFailure::DeploymentChanged(format!(
                    "the deployment changed its network from {} to {}; sign in again to accept",
                    describe(pinned),
                    describe(deployment)
                )));
            }
        }
        let refused =
            |e: crate::confine::ConfineError| ConnectFailure::DeploymentRefused(e.to_string());
        let confined = confine(deployment, &self.policy, &self.host_networks).map_err(refused)?;
        check_device_addresses(&welcome.addresses, &confined).map_err(refused)?;
        let allow_local_endpoints = self
            .session
            .config()
            .is_some_and(|c| url_host_is_loopback(&c.url));
        self.pinned = Some(deployment.clone());
        Ok(Rules {
            confined,
            allow_local_endpoints,
            max_agents: self.policy.max_agents,
        })
    }

    /// A workspace update on generation `generation`'s stream.
    pub fn handle_control_update(
        &mut self,
        now: Instant,
        generation: u64,
        update: WorkspaceUpdate,
    ) {
        if generation != self.session.generation() {
            return;
        }
        let (kind, seq) = (update.kind, update.seq);
        let update = self.screen.screen(update, &self.directory);
        match self.directory.apply(update) {
            Ok(delta) => {
                tracing::debug!(
                    ?kind,
                    seq,
                    agents = self.directory.agent_count(),
                    upserted = delta.upserted_agents.len(),
                    deleted = delta.deleted_agents.len(),
                    "applied a workspace update"
                );
                self.apply_delta(delta);
                if self.directory.is_synced() {
                    if let Some((g, welcome)) = self.pending_welcome.take() {
                        if g == generation {
                            self.session.on_connected(now, generation, &welcome);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "workspace stream out of step");
                self.commands
                    .push_back(Command::DisconnectControl { generation });
                self.session
                    .on_failure(now, generation, ConnectFailure::Resync(e.to_string()));
            }
        }
        self.after_input(now);
    }

    /// Generation `generation`'s connection failed or ended.
    pub fn handle_control_failed(
        &mut self,
        now: Instant,
        generation: u64,
        failure: ConnectFailure,
    ) {
        if self
            .pending_welcome
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
        {
            self.pending_welcome = None;
        }
        self.session.on_failure(now, generation, failure);
        self.after_input(now);
    }

    /// The data plane of `generation` reached `state` (with the reason of a
    /// failure, or a note about a tunnel that runs without DNS).
    pub fn handle_tunnel_report(
        &mut self,
        now: Instant,
        generation: u64,
        state: TunnelState,
        error: Option<String>,
    ) {
        if self.tunnel.on_report(now, generation, state, error) {
            self.clear_stats();
        }
        self.after_input(now);
    }

    /// Per-peer figures from the data plane of `generation`. Figures of an
    /// older tunnel, or for a key no agent has now, are dropped.
    pub fn handle_stats(&mut self, _now: Instant, generation: u64, reports: Vec<PeerReport>) {
        if self.tunnel.accepting() != Some(generation) {
            tracing::debug!(generation, "ignoring figures of an old tunnel");
            return;
        }
        let changed = self.stats.apply(reports, &self.peers);
        if !changed.is_empty() {
            self.events.push_back(Event::Stats(changed));
        }
    }

    /// A subscriber arrived: the state it got carries figures up to 10 s
    /// old, so ask the data plane for fresh ones.
    pub fn handle_subscriber(&mut self) {
        if let Some(generation) = self.tunnel.accepting() {
            self.commands.push_back(Command::ReportStats { generation });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        if let Some(order) = self.tunnel.handle_timeout(now) {
            self.carry_out(order);
        }
        self.after_input(now);
    }

    // ----- outputs -----

    /// When [`ClientState::handle_timeout`] wants to run; `None` when
    /// nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.session.poll_timeout(), self.tunnel.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- queries -----

    pub fn session_info(&self, now: Instant) -> SessionInfo {
        let mut info = self.session.info(now);
        info.notices = self.screen.notices();
        info.tunnel = self.facts.as_ref().map(|f| TunnelInfo {
            state: self.tunnel.state(),
            error: self.tunnel.error().map(str::to_string),
            interface: f.tun_name.clone(),
            listen_port: f.listen_port,
            generation: self.tunnel.generation(),
        });
        info
    }

    pub fn status(&self, now: Instant, helper_version: &str) -> StatusReport {
        StatusReport {
            helper_version: helper_version.to_string(),
            session: self.session_info(now),
            workspace_count: self.directory.workspace_count(),
            agent_count: self.directory.agent_count(),
        }
    }

    pub fn workspaces(&self) -> impl Iterator<Item = &Workspace> {
        self.directory.workspaces()
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.directory.agents()
    }

    pub fn agent_count(&self) -> usize {
        self.directory.agent_count()
    }

    /// The latest figures per agent.
    pub fn peer_stats(&self) -> impl Iterator<Item = &PeerStats> {
        self.stats.values()
    }

    /// The peers the running tunnel should have (for tests and status).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The names the DNS stub should answer.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Which agent and address `target` means, if a ping is possible now.
    pub fn resolve_ping(
        &self,
        target: &str,
        timeout_ms: Option<u64>,
    ) -> Result<PingTarget, IpcError> {
        if self.facts.is_none() {
            return Err(IpcError::new(
                ErrorCode::Unreachable,
                "this helper runs without a tunnel (--no-tunnel), so it can't ping",
            ));
        }
        if self.tunnel.wanted().is_none() {
            return Err(IpcError::new(
                ErrorCode::Unreachable,
                "not connected: run `warren up` first",
            ));
        }
        let agents: Vec<&Agent> = self.directory.agents().collect();
        let (agent, address) = resolve_target(&agents, target)
            .map_err(|message| IpcError::new(ErrorCode::BadRequest, message))?;
        if agent.public_key.is_none() {
            return Err(IpcError::new(
                ErrorCode::Unreachable,
                format!(
                    "agent {} has not registered a WireGuard key yet; is it running?",
                    agent.name
                ),
            ));
        }
        Ok(PingTarget {
            agent_id: agent.id.clone(),
            name: best_name(agent).to_string(),
            address,
            timeout: Duration::from_millis(timeout_ms.unwrap_or(PING_TIMEOUT_MS).clamp(1, 60_000)),
            generation: self.tunnel.generation(),
        })
    }

    // ----- internals -----

    /// Carries out the session's actions, brings the tunnel in line and
    /// publishes a session change.
    fn after_input(&mut self, now: Instant) {
        while let Some(action) = self.session.poll_action() {
            match action {
                warren_session::Action::Connect { generation } => {
                    let (Some(config), Some(keys)) = (self.session.config(), self.keys.as_ref())
                    else {
                        continue;
                    };
                    self.commands
                        .push_back(Command::ConnectControl(ConnectControl {
                            generation,
                            url: config.url.clone(),
                            token: config.token.clone(),
                            ca: config.ca.clone(),
                            public_key: keys.public_base64(),
                        }));
                }
                warren_session::Action::Disconnect { generation } => {
                    self.commands
                        .push_back(Command::DisconnectControl { generation });
                }
            }
        }
        let session_changed = self.session.take_changed();
        if session_changed {
            // Only the session (state, key, device, deployment) decides
            // whether and how the tunnel runs.
            let wanted = self.wanted_tunnel(now);
            if let Some(order) = self.tunnel.want(wanted) {
                if matches!(order, Order::Down { .. }) {
                    self.clear_stats();
                }
                self.carry_out(order);
            }
        }
        if session_changed | self.tunnel.take_changed() | self.screen.take_changed() {
            let info = self.session_info(now);
            tracing::info!(
                state = %info.state,
                reason = info.reason.as_deref().unwrap_or(""),
                "session changed"
            );
            self.events.push_back(Event::SessionChanged(Box::new(info)));
        }
    }

    /// What the tunnel should run now: up while connected (kept through a
    /// reconnect, so open connections survive a blip), down once the
    /// session stops, fails or starts over with a new key.
    fn wanted_tunnel(&self, now: Instant) -> Option<Wanted> {
        let facts = self.facts.as_ref()?;
        let info = self.session.info(now);
        match info.state {
            SessionState::Reconnecting => self.tunnel.wanted().cloned(),
            SessionState::Connected => {
                // The deployment as it was checked, not as it was sent.
                let (keys, device, rules) =
                    (self.keys.as_ref()?, info.device?, self.screen.rules()?);
                match net_plan(
                    &facts.tun_name,
                    &device,
                    &rules.confined,
                    Some((facts.dns_mode, facts.resolv_conf.clone())),
                ) {
                    Ok(plan) => Some((keys.public_base64(), plan)),
                    Err(e) => {
                        tracing::error!(error = %e, "the tunnel can't start");
                        None
                    }
                }
            }
            _ => None,
        }
    }

    fn carry_out(&mut self, order: Order) {
        match order {
            Order::Up { generation } => {
                let (Some(keys), Some((_, plan))) = (&self.keys, self.tunnel.wanted()) else {
                    return;
                };
                let up = TunnelUp {
                    generation,
                    secret: keys.tunnel_secret(),
                    plan: plan.clone(),
                    peers: self.peers.configs().cloned().collect(),
                    names: self
                        .names
                        .entries()
                        .map(|(n, a)| (n.to_string(), a.to_vec()))
                        .collect(),
                };
                self.commands.push_back(Command::TunnelUp(up));
            }
            Order::Down { generation } => {
                self.commands.push_back(Command::TunnelDown { generation });
            }
        }
    }

    /// One directory change: to subscribers as is, to the tunnel as peer
    /// and name diffs.
    fn apply_delta(&mut self, delta: Delta) {
        if delta.is_empty() {
            return;
        }
        if self.facts.is_none() {
            // No data plane (`--no-tunnel`): nobody needs peers or names,
            // so a large directory costs no second copy of them.
            self.events.push_back(Event::Directory(delta));
            return;
        }
        let mut peers = Vec::new();
        let mut names = Vec::new();
        for id in &delta.deleted_agents {
            self.peers.remove_agent(id, &mut peers);
            self.names.remove_agent(id, &mut names);
            self.stats.retain_key(id, None);
        }
        for agent in &delta.upserted_agents {
            self.peers.upsert_agent(agent, &mut peers);
            self.names.upsert_agent(agent, &mut names);
            let key = self.peers.key_of(&agent.id);
            self.stats.retain_key(&agent.id, key);
        }
        if let Some(generation) = self.tunnel.accepting() {
            if !peers.is_empty() || !names.is_empty() {
                self.commands.push_back(Command::TunnelChanges {
                    generation,
                    peers,
                    names,
                });
            }
        }
        self.events.push_back(Event::Directory(delta));
    }

    /// Forgets all figures (the tunnel stopped) and tells subscribers.
    fn clear_stats(&mut self) {
        if self.stats.is_empty() {
            return;
        }
        let cleared = self.stats.clear();
        self.events.push_back(Event::Stats(cleared));
    }
}

/// "100.64.0.0/10, fd12::/48 and .warren", for messages.
fn describe(d: &DeploymentInfo) -> String {
    format!("{}, {} and .{}", d.ipv4_prefix, d.ipv6_prefix, d.suffix)
}
