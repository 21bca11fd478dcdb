//! The helper's engine: one task that owns all session state.
//!
//! It drives the sans-IO [`Session`] and [`Directory`] from three inputs —
//! client requests, coordinator events and its own timer — and fans the
//! results out to subscribers through their bounded queues. It never awaits
//! a client or the network, so a hung GUI cannot stall the coordinator
//! stream and a slow coordinator cannot stall a `Status` request.

use crate::control_task::{self, ControlEvent};
use crate::events::{self, EncodedEvent};
use crate::keys::SessionKeys;
use crate::observe::{PeerReport, PingError, PingRequest, Report, StatsReceiver};
use crate::subscribers::{Outgoing, SubscriberQueue};
use crate::tunnel_driver::{self, TunnelCommand, TunnelManager};
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use warren_control::ControlConfig;
use warren_proto::control::{Register, Welcome, CONTROL_VERSION};
use warren_proto::frame::encode;
use warren_proto::ipc::{
    ErrorCode, HelperMessage, IpcError, LogLine, PeerStats, PingReport, Reply, Request,
    SessionInfo, SessionState, StatusReport, TunnelInfo, TunnelState, PING_TIMEOUT_MS,
};
use warren_proto::model::{Agent, AgentId};
use warren_session::{Action, Backoff, ConnectFailure, Directory, Session, SessionConfig};

#[derive(Debug)]
pub struct EngineConfig {
    /// Cap of the reconnect backoff.
    pub backoff_cap: Duration,
    /// Initial reconnect delay.
    pub backoff_base: Duration,
    pub app_version: String,
    pub hostname: Option<String>,
    /// The data plane, unless `warrend` runs with `--no-tunnel`, and its
    /// statistics.
    pub tunnel: Option<(TunnelManager, StatsReceiver)>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            backoff_cap: Backoff::DEFAULT_CAP,
            backoff_base: Backoff::DEFAULT_BASE,
            app_version: crate::VERSION.to_string(),
            hostname: None,
            tunnel: None,
        }
    }
}

/// A request from one client, with the queue its answer goes to.
#[derive(Debug)]
pub struct Command {
    pub id: u64,
    pub request: Request,
    pub queue: Arc<SubscriberQueue>,
}

/// Cheap handle the connection tasks use to reach the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

impl EngineHandle {
    /// Hands a request to the engine. Waits only if the engine's inbox is
    /// full, which slows down the requesting client alone.
    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }
}

pub struct Engine {
    config: EngineConfig,
    session: Session,
    directory: Directory,
    keys: Option<SessionKeys>,
    subscribers: Vec<Arc<SubscriberQueue>>,
    tasks: HashMap<u64, JoinHandle<()>>,
    control_tx: mpsc::Sender<ControlEvent>,
    control_rx: mpsc::Receiver<ControlEvent>,
    commands: mpsc::Receiver<Command>,
    logs: Option<broadcast::Receiver<LogLine>>,
    /// Welcome of the current generation, held until its first snapshot is
    /// applied: the session is shown as connected only once the list is real.
    pending_welcome: Option<(u64, Welcome)>,
    /// What the tunnel was last told to run: public key and plan.
    tunnel_up: Option<(String, warren_netcfg::NetPlan)>,
    /// The directory changed since the tunnel's peers were last set.
    peers_dirty: bool,
    tunnel: Option<TunnelManager>,
    stats_rx: Option<StatsReceiver>,
    /// Agent of each WireGuard key in the directory (base64 as registered).
    key_index: HashMap<String, AgentId>,
    /// Latest tunnel statistics per agent, with the key they were for.
    peer_stats: HashMap<AgentId, (String, PeerStats)>,
    /// The data plane as last reported (or asked for), and why it failed.
    tunnel_state: (TunnelState, Option<String>),
    /// `tunnel_state` changed since subscribers were told.
    tunnel_changed: bool,
}

/// Starts the engine task.
pub fn spawn(
    config: EngineConfig,
    logs: Option<broadcast::Receiver<LogLine>>,
) -> (EngineHandle, JoinHandle<()>) {
    let (tx, commands) = mpsc::channel(256);
    let (control_tx, control_rx) = mpsc::channel(64);
    let seed = rand::random::<u64>();
    let mut config = config;
    let (tunnel, stats_rx) = match config.tunnel.take() {
        Some((manager, stats)) => (Some(manager), Some(stats)),
        None => (None, None),
    };
    let engine = Engine {
        session: Session::new(Backoff::new(config.backoff_base, config.backoff_cap, seed)),
        config,
        directory: Directory::new(),
        keys: None,
        subscribers: Vec::new(),
        tasks: HashMap::new(),
        control_tx,
        control_rx,
        commands,
        logs,
        pending_welcome: None,
        tunnel_up: None,
        peers_dirty: false,
        tunnel,
        stats_rx,
        key_index: HashMap::new(),
        peer_stats: HashMap::new(),
        tunnel_state: (TunnelState::Down, None),
        tunnel_changed: false,
    };
    let task = tokio::spawn(engine.run());
    (EngineHandle { tx }, task)
}

fn reply_frame(id: u64, reply: Reply) -> Option<Vec<u8>> {
    match encode(&HelperMessage::Reply {
        reply_to: id,
        reply,
    }) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!(error = %e, "could not encode a reply");
            None
        }
    }
}

fn error_reply(id: u64, code: ErrorCode, message: impl Into<String>) -> Option<Vec<u8>> {
    reply_frame(id, Reply::Error(IpcError::new(code, message)))
}

impl Engine {
    async fn run(mut self) {
        loop {
            let deadline = self.session.poll_timeout();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                Some(event) = self.control_rx.recv() => self.handle_control(event),
                line = recv_log(&mut self.logs) => {
                    if let Some(line) = line {
                        self.broadcast_log(&line);
                    }
                }
                report = recv_report(&mut self.stats_rx) => match report {
                    Some(Report::Stats(stats)) => self.handle_stats(stats),
                    Some(Report::Tunnel(state, error)) => self.handle_tunnel_state(state, error),
                    None => {}
                },
                _ = sleep_until(deadline) => {
                    self.session.handle_timeout(Instant::now());
                }
            }
            self.after_step();
        }
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }

    fn session_info(&self) -> SessionInfo {
        let mut info = self.session.info(Instant::now());
        info.tunnel = self.tunnel.as_ref().map(|m| TunnelInfo {
            state: self.tunnel_state.0,
            error: self.tunnel_state.1.clone(),
            interface: m.tun_name().to_string(),
            listen_port: m.port(),
        });
        info
    }

    /// The data plane reports where it got to. A report the engine has
    /// since overtaken (up while it asked for down, or the reverse) is
    /// stale and ignored.
    fn handle_tunnel_state(&mut self, state: TunnelState, error: Option<String>) {
        let wanted_up = self.tunnel_up.is_some();
        let current = matches!(state, TunnelState::Up | TunnelState::Failed) == wanted_up;
        if !current {
            return;
        }
        if let Some(reason) = &error {
            tracing::warn!(%reason, "the tunnel is not carrying traffic");
        }
        let new = (state, error);
        if new != self.tunnel_state {
            self.tunnel_state = new;
            self.tunnel_changed = true;
        }
    }

    fn set_tunnel_state(&mut self, state: TunnelState) {
        if self.tunnel_state != (state, None) {
            self.tunnel_state = (state, None);
            self.tunnel_changed = true;
        }
    }

    fn handle_command(&mut self, Command { id, request, queue }: Command) {
        let now = Instant::now();
        let reply = match request {
            Request::Start { url, token, ca } => {
                let url = url.trim().trim_end_matches('/').to_string();
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    error_reply(
                        id,
                        ErrorCode::BadRequest,
                        format!("the coordinator URL {url:?} must start with https://"),
                    )
                } else if token.is_empty() {
                    error_reply(
                        id,
                        ErrorCode::BadRequest,
                        "no token given; sign in with `warren login` first",
                    )
                } else {
                    let config = SessionConfig { url, token, ca };
                    if self.session.is_running_with(&config) {
                        tracing::info!("start requested for the running session; nothing to do");
                    } else {
                        tracing::info!(url = %config.url, "starting a session");
                        let delta = self.directory.clear();
                        self.broadcast_delta(&delta);
                        let keys = SessionKeys::generate();
                        self.session.start(now, config, keys.public_base64());
                        self.keys = Some(keys);
                    }
                    reply_frame(id, Reply::Ok)
                }
            }
            Request::Stop => {
                tracing::info!("stopping the session");
                self.session.stop(now);
                self.keys = None;
                let delta = self.directory.clear();
                self.broadcast_delta(&delta);
                reply_frame(id, Reply::Ok)
            }
            Request::Reconnect => {
                if self.session.reconnect(now) {
                    tracing::info!("reconnecting on request");
                    reply_frame(id, Reply::Ok)
                } else {
                    error_reply(
                        id,
                        ErrorCode::BadRequest,
                        "not signed in: there is no session to reconnect; run `warren up` first",
                    )
                }
            }
            Request::Status => reply_frame(
                id,
                Reply::Status(StatusReport {
                    helper_version: crate::VERSION.to_string(),
                    session: self.session_info(),
                    workspace_count: self.directory.workspace_count(),
                    agent_count: self.directory.agent_count(),
                }),
            ),
            Request::Ping { target, timeout_ms } => {
                match self.start_ping(&target, timeout_ms, id, &queue) {
                    Ok(()) => return,
                    Err(e) => error_reply(id, e.code, e.message),
                }
            }
            Request::Subscribe => {
                if !queue.set_subscribed() {
                    error_reply(
                        id,
                        ErrorCode::BadRequest,
                        "this connection is already subscribed",
                    )
                } else {
                    self.subscribe(id, queue);
                    return;
                }
            }
        };
        if let Some(frame) = reply {
            queue.push(Outgoing::Frame(frame));
        }
    }

    fn subscribe(&mut self, id: u64, queue: Arc<SubscriberQueue>) {
        let started = Instant::now();
        let mut workspaces: Vec<_> = self.directory.workspaces().collect();
        workspaces.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        let agents: Vec<_> = self.directory.agents().collect();
        let stats = self.peer_stats.values().map(|(_, s)| s);
        let state = match events::state_events(&self.session_info(), workspaces, agents, stats) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, "could not encode the state");
                if let Some(frame) = error_reply(
                    id,
                    ErrorCode::Internal,
                    "the helper could not encode its state",
                ) {
                    queue.push(Outgoing::Frame(frame));
                }
                return;
            }
        };
        let Some(ok) = reply_frame(id, Reply::Ok) else {
            return;
        };
        let mut open = queue.push(Outgoing::Frame(ok));
        for part in &state {
            open = open && queue.push_event(part);
        }
        tracing::debug!(
            parts = state.len(),
            agents = self.directory.agent_count(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "new subscriber"
        );
        if open {
            self.subscribers.push(queue);
            // The state carries figures up to 10 s old; fresh ones follow.
            if let (Some(manager), Some(_)) = (&self.tunnel, &self.tunnel_up) {
                manager.send(TunnelCommand::ReportStats);
            }
        }
    }

    fn handle_control(&mut self, event: ControlEvent) {
        let now = Instant::now();
        match event {
            ControlEvent::Connected {
                generation,
                welcome,
            } => {
                if generation == self.session.generation() {
                    self.directory.begin_stream();
                    self.pending_welcome = Some((generation, welcome));
                }
            }
            ControlEvent::Update {
                generation,
                update,
                received,
            } => {
                if generation != self.session.generation() {
                    return;
                }
                let kind = update.kind;
                let seq = update.seq;
                match self.directory.apply(update) {
                    Ok(delta) => {
                        let applied = received.elapsed();
                        self.broadcast_delta(&delta);
                        if self.directory.is_synced() {
                            if let Some((g, welcome)) = self.pending_welcome.take() {
                                if g == generation {
                                    self.session.on_connected(now, generation, &welcome);
                                }
                            }
                        }
                        tracing::debug!(
                            ?kind,
                            seq,
                            agents = self.directory.agent_count(),
                            upserted = delta.upserted_agents.len(),
                            deleted = delta.deleted_agents.len(),
                            apply_us = applied.as_micros() as u64,
                            total_us = received.elapsed().as_micros() as u64,
                            "applied a workspace update"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "workspace stream out of step");
                        self.stop_task(generation);
                        self.session.on_failure(
                            now,
                            generation,
                            ConnectFailure::Resync(e.to_string()),
                        );
                    }
                }
            }
            ControlEvent::Failed {
                generation,
                failure,
            } => {
                self.tasks.remove(&generation);
                if self
                    .pending_welcome
                    .as_ref()
                    .is_some_and(|(g, _)| *g == generation)
                {
                    self.pending_welcome = None;
                }
                self.session.on_failure(now, generation, failure);
            }
        }
    }

    /// Carries out the session's actions and publishes its changes.
    fn after_step(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect { generation } => self.start_task(generation),
                Action::Disconnect { generation } => self.stop_task(generation),
            }
        }
        let session_changed =
            self.session.take_changed() | std::mem::take(&mut self.tunnel_changed);
        if session_changed {
            let info = self.session_info();
            tracing::info!(
                state = %info.state,
                reason = info.reason.as_deref().unwrap_or(""),
                "session changed"
            );
            match events::session_event(&info) {
                Ok(event) => self.broadcast(std::slice::from_ref(&event)),
                Err(e) => tracing::error!(error = %e, "could not encode the session"),
            }
        }
        // Only a session change (state, key, device) or a directory change
        // can change what the tunnel should run; log lines and requests
        // that changed neither cost nothing here.
        if session_changed || self.peers_dirty {
            self.reconcile_tunnel();
        }
    }

    /// Brings the data plane in line with the session: up while connected
    /// (kept through a reconnect, so open connections survive a blip), down
    /// once the session stops, fails or starts over with a new key.
    fn reconcile_tunnel(&mut self) {
        // Whatever happens below, the tunnel ends up with the current peers
        // (an `Up` carries them all), so the flag is spent here.
        let peers_dirty = std::mem::take(&mut self.peers_dirty);
        let Some(manager) = self.tunnel.clone() else {
            return;
        };
        if peers_dirty {
            self.rebuild_key_index();
        }
        let info = self.session_info();
        let want = match info.state {
            SessionState::Reconnecting => self.tunnel_up.clone(),
            SessionState::Connected => match (&self.keys, &info.device, &info.deployment) {
                (Some(keys), Some(device), Some(deployment)) => {
                    match tunnel_driver::net_plan(
                        manager.tun_name(),
                        device,
                        deployment,
                        Some(manager.dns()),
                    ) {
                        Ok(plan) => Some((keys.public_base64(), plan)),
                        Err(e) => {
                            tracing::error!(error = %e, "the tunnel can't start");
                            None
                        }
                    }
                }
                _ => None,
            },
            _ => None,
        };
        if want != self.tunnel_up {
            match (&want, &self.keys) {
                (Some((_, plan)), Some(keys)) => {
                    manager.send(TunnelCommand::Up {
                        secret: keys.tunnel_secret(),
                        plan: plan.clone(),
                        peers: tunnel_driver::peer_configs(self.directory.agents()),
                        names: tunnel_driver::dns_names(self.directory.agents()),
                    });
                    self.set_tunnel_state(TunnelState::Starting);
                }
                _ => {
                    // The state turns Down when the manager reports the OS
                    // restored, so `warren down` can wait for exactly that.
                    manager.send(TunnelCommand::Down(None));
                    self.clear_stats();
                }
            }
            self.tunnel_up = want;
        } else if peers_dirty && self.tunnel_up.is_some() {
            manager.send(TunnelCommand::Directory {
                peers: tunnel_driver::peer_configs(self.directory.agents()),
                names: tunnel_driver::dns_names(self.directory.agents()),
            });
        }
    }

    fn start_task(&mut self, generation: u64) {
        let endpoints = match &self.tunnel {
            Some(t) => tunnel_driver::local_endpoints(t.port(), t.tun_name()),
            None => Vec::new(),
        };
        self.session.set_endpoints(endpoints.clone());
        let (Some(config), Some(keys)) = (self.session.config(), self.keys.as_ref()) else {
            return;
        };
        let control = ControlConfig {
            url: config.url.clone(),
            token: config.token.clone(),
            ca_pem: config.ca.clone(),
            register: Register {
                protocol_version: CONTROL_VERSION,
                public_key: keys.public_base64(),
                endpoints: endpoints.clone(),
                hostname: self.config.hostname.clone(),
                app_version: self.config.app_version.clone(),
            },
        };
        let task = control_task::spawn(generation, control, self.control_tx.clone());
        self.tasks.insert(generation, task);
    }

    fn stop_task(&mut self, generation: u64) {
        if let Some(task) = self.tasks.remove(&generation) {
            task.abort();
        }
    }

    fn broadcast_delta(&mut self, delta: &warren_session::Delta) {
        self.peers_dirty = true;
        for id in &delta.deleted_agents {
            self.peer_stats.remove(id);
        }
        self.subscribers.retain(|queue| !queue.is_closed());
        if self.subscribers.is_empty() {
            return;
        }
        match events::update_events(delta) {
            Ok(events) => self.broadcast(&events),
            Err(e) => tracing::error!(error = %e, "could not encode an update"),
        }
    }

    fn broadcast_log(&mut self, line: &LogLine) {
        if self.subscribers.is_empty() {
            return;
        }
        if let Ok(event) = events::log_event(line) {
            self.broadcast(std::slice::from_ref(&event));
        }
    }

    /// Pushes to every subscriber without waiting; forgets closed ones.
    fn broadcast(&mut self, events: &[EncodedEvent]) {
        if events.is_empty() {
            return;
        }
        self.subscribers.retain(|queue| {
            let open = events.iter().all(|e| queue.push_event(e));
            if !open {
                tracing::debug!("dropping a closed or lagging subscriber");
            }
            open
        });
    }
}

impl Engine {
    /// Which agent each WireGuard key belongs to; stats of an agent whose
    /// key changed (it was re-created) are dropped with the old key.
    fn rebuild_key_index(&mut self) {
        self.key_index.clear();
        for agent in self.directory.agents() {
            if let Some(key) = &agent.public_key {
                self.key_index.insert(key.clone(), agent.id.clone());
            }
        }
        let index = &self.key_index;
        self.peer_stats
            .retain(|agent, (key, _)| index.get(key) == Some(agent));
    }

    /// Forgets all statistics (the tunnel went down) and tells subscribers
    /// the figures are gone by sending every agent as "never".
    fn clear_stats(&mut self) {
        if self.peer_stats.is_empty() {
            return;
        }
        let cleared: Vec<PeerStats> = self
            .peer_stats
            .drain()
            .map(|(agent_id, _)| PeerStats {
                agent_id,
                last_handshake_ms: None,
                rx_bytes: 0,
                tx_bytes: 0,
                rtt_us: None,
                endpoint: None,
            })
            .collect();
        self.broadcast_stats(&cleared);
    }

    fn handle_stats(&mut self, reports: Vec<PeerReport>) {
        let mut changed = Vec::with_capacity(reports.len());
        for r in reports {
            let key = base64::engine::general_purpose::STANDARD.encode(r.key);
            let Some(agent_id) = self.key_index.get(&key) else {
                continue;
            };
            let stats = PeerStats {
                agent_id: agent_id.clone(),
                last_handshake_ms: r.last_handshake_ms,
                rx_bytes: r.rx_bytes,
                tx_bytes: r.tx_bytes,
                rtt_us: r.rtt_us,
                endpoint: r.endpoint,
            };
            self.peer_stats
                .insert(agent_id.clone(), (key, stats.clone()));
            changed.push(stats);
        }
        self.broadcast_stats(&changed);
    }

    fn broadcast_stats(&mut self, stats: &[PeerStats]) {
        self.subscribers.retain(|queue| !queue.is_closed());
        if self.subscribers.is_empty() || stats.is_empty() {
            return;
        }
        match events::stats_events(stats) {
            Ok(events) => self.broadcast(&events),
            Err(e) => tracing::error!(error = %e, "could not encode tunnel statistics"),
        }
    }

    /// Resolves the target and hands an echo request to the tunnel; a task
    /// answers the client when the reply (or the timeout) comes, so the
    /// engine never waits for it.
    fn start_ping(
        &mut self,
        target: &str,
        timeout_ms: Option<u64>,
        id: u64,
        queue: &Arc<SubscriberQueue>,
    ) -> Result<(), IpcError> {
        let Some(manager) = self.tunnel.clone() else {
            return Err(IpcError::new(
                ErrorCode::Unreachable,
                "this helper runs without a tunnel (--no-tunnel), so it can't ping",
            ));
        };
        if self.tunnel_up.is_none() {
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
        let name = best_name(agent).to_string();
        let agent_id = agent.id.clone();
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(PING_TIMEOUT_MS).clamp(1, 60_000));
        let (tx, rx) = tokio::sync::oneshot::channel();
        manager.send(TunnelCommand::Ping(PingRequest {
            dst: address,
            timeout,
            reply: tx,
        }));
        let queue = Arc::clone(queue);
        tokio::spawn(async move {
            // The observer answers by its own deadline; this bound only
            // guards against a data plane that vanished with the request.
            let outcome = tokio::time::timeout(timeout + Duration::from_secs(1), rx).await;
            let reply = match outcome {
                Ok(Ok(Ok(pong))) => Reply::Pong(PingReport {
                    agent_id,
                    name,
                    address,
                    rtt_us: pong.rtt.as_micros() as u64,
                    endpoint: pong.endpoint,
                }),
                Ok(Ok(Err(e))) => Reply::Error(ping_error(&name, address, e)),
                Ok(Err(_)) | Err(_) => {
                    Reply::Error(ping_error(&name, address, PingError::TunnelDown))
                }
            };
            if let Some(frame) = reply_frame(id, reply) {
                queue.push(Outgoing::Frame(frame));
            }
        });
        Ok(())
    }
}

fn ping_error(name: &str, address: std::net::IpAddr, e: PingError) -> IpcError {
    let message = match e {
        PingError::Timeout(_) => format!(
            "{name} ({address}): {e} — check `warren status` for its handshake; the agent may be offline"
        ),
        other => format!("{name} ({address}): {other}"),
    };
    IpcError::new(ErrorCode::Unreachable, message)
}

/// The shortest DNS name (what people type), else the agent's name.
fn best_name(agent: &Agent) -> &str {
    agent
        .dns_names
        .iter()
        .min_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)))
        .map(String::as_str)
        .unwrap_or(&agent.name)
}

/// Finds the agent `target` names — a tunnel address, a DNS name
/// (case-insensitive, trailing dot allowed), `workspace/agent`, an agent id
/// or a unique agent name — and the address to ping (IPv4 first, unless the
/// target is an address).
pub fn resolve_target<'a>(
    agents: &[&'a Agent],
    target: &str,
) -> Result<(&'a Agent, std::net::IpAddr), String> {
    let target = target.trim();
    if target.is_empty() {
        return Err("no target given: name an agent, e.g. `warren ping main.myws.warren`".into());
    }
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return agents
            .iter()
            .find(|a| a.addresses.contains(&ip))
            .map(|a| (*a, ip))
            .ok_or_else(|| format!("no agent has the tunnel address {ip}; see `warren status`"));
    }
    let name = target.trim_end_matches('.').to_ascii_lowercase();
    let mut found: Vec<&Agent> = agents
        .iter()
        .copied()
        .filter(|a| a.dns_names.iter().any(|d| d.eq_ignore_ascii_case(&name)))
        .collect();
    if found.is_empty() {
        found = agents.iter().copied().filter(|a| a.id == target).collect();
    }
    if found.is_empty() {
        // `workspace/agent` is `agent.workspace.` at the front of a DNS name.
        let prefix = match name.split_once('/') {
            Some((ws, agent)) => format!("{agent}.{ws}."),
            None => String::new(),
        };
        found = agents
            .iter()
            .copied()
            .filter(|a| {
                if prefix.is_empty() {
                    a.name.eq_ignore_ascii_case(&name)
                } else {
                    a.dns_names
                        .iter()
                        .any(|d| d.to_ascii_lowercase().starts_with(&prefix))
                }
            })
            .collect();
    }
    match found.as_slice() {
        [] => Err(format!(
            "no agent called {target:?}; `warren status` lists them"
        )),
        [agent] => {
            let address = agent
                .addresses
                .iter()
                .find(|a| a.is_ipv4())
                .or_else(|| agent.addresses.first())
                .copied()
                .ok_or_else(|| format!("agent {} has no tunnel address yet", agent.name))?;
            Ok((agent, address))
        }
        many => {
            let mut names: Vec<&str> = many.iter().map(|a| best_name(a)).collect();
            names.sort_unstable();
            Err(format!(
                "{target:?} could mean any of {}; use the full name",
                names.join(", ")
            ))
        }
    }
}

async fn recv_report(reports: &mut Option<StatsReceiver>) -> Option<Report> {
    match reports {
        Some(rx) => {
            let report = rx.recv().await;
            if report.is_none() {
                *reports = None;
            }
            report
        }
        None => std::future::pending().await,
    }
}

async fn recv_log(logs: &mut Option<broadcast::Receiver<LogLine>>) -> Option<LogLine> {
    match logs {
        Some(rx) => match rx.recv().await {
            Ok(line) => Some(line),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => {
                *logs = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, name: &str, dns: &[&str], addrs: &[&str]) -> Agent {
        Agent {
            id: id.into(),
            name: name.into(),
            workspace_id: "w".into(),
            public_key: Some("k".into()),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: vec![],
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            online: true,
        }
    }

    #[test]
    fn ping_targets_resolve_by_address_name_and_path() {
        let a = agent(
            "id-1",
            "main",
            &["main.api.alice.warren", "api.warren"],
            &["fd00::5", "100.64.0.5"],
        );
        let b = agent("id-2", "main", &["main.web.alice.warren"], &["100.64.0.6"]);
        let c = agent("id-3", "db", &["db.web.alice.warren"], &["fd00::7"]);
        let all = [&a, &b, &c];
        let ok = |t: &str| {
            let (agent, addr) = resolve_target(&all, t).unwrap_or_else(|e| panic!("{t}: {e}"));
            (agent.id.clone(), addr.to_string())
        };
        assert_eq!(ok("api.warren"), ("id-1".into(), "100.64.0.5".into()));
        assert_eq!(
            ok("MAIN.API.Alice.warren."),
            ("id-1".into(), "100.64.0.5".into())
        );
        assert_eq!(ok("fd00::5"), ("id-1".into(), "fd00::5".into()));
        assert_eq!(ok("web/main"), ("id-2".into(), "100.64.0.6".into()));
        assert_eq!(ok("id-2"), ("id-2".into(), "100.64.0.6".into()));
        // Only an IPv6 address: that one.
        assert_eq!(ok("db"), ("id-3".into(), "fd00::7".into()));

        let err = resolve_target(&all, "main").unwrap_err();
        assert!(
            err.contains("api.warren") && err.contains("main.web.alice.warren"),
            "{err}"
        );
        assert!(resolve_target(&all, "nope")
            .unwrap_err()
            .contains("warren status"));
        assert!(resolve_target(&all, "100.64.9.9")
            .unwrap_err()
            .contains("100.64.9.9"));
        assert!(resolve_target(&all, "  ").is_err());
    }
}
