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
use crate::subscribers::{Outgoing, SubscriberQueue};
use crate::tunnel_driver::{self, TunnelCommand, TunnelManager};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use warren_control::ControlConfig;
use warren_proto::control::{Register, Welcome, CONTROL_VERSION};
use warren_proto::frame::encode;
use warren_proto::ipc::{
    ErrorCode, HelperMessage, IpcError, LogLine, Reply, Request, SessionInfo, SessionState,
    StatusReport,
};
use warren_session::{Action, Backoff, ConnectFailure, Directory, Session, SessionConfig};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Cap of the reconnect backoff.
    pub backoff_cap: Duration,
    /// Initial reconnect delay.
    pub backoff_base: Duration,
    pub app_version: String,
    pub hostname: Option<String>,
    /// The data plane, when `warrend` runs with `--tunnel`.
    pub tunnel: Option<TunnelManager>,
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
}

/// Starts the engine task.
pub fn spawn(
    config: EngineConfig,
    logs: Option<broadcast::Receiver<LogLine>>,
) -> (EngineHandle, JoinHandle<()>) {
    let (tx, commands) = mpsc::channel(256);
    let (control_tx, control_rx) = mpsc::channel(64);
    let seed = rand::random::<u64>();
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
        self.session.info(Instant::now())
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
        let state = match events::state_events(&self.session_info(), workspaces, agents) {
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
        let session_changed = self.session.take_changed();
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
        let Some(manager) = self.config.tunnel.clone() else {
            return;
        };
        let info = self.session_info();
        let want = match info.state {
            SessionState::Reconnecting => self.tunnel_up.clone(),
            SessionState::Connected => match (&self.keys, &info.device, &info.deployment) {
                (Some(keys), Some(device), Some(deployment)) => {
                    match tunnel_driver::net_plan(manager.tun_name(), device, deployment) {
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
                    });
                }
                _ => manager.send(TunnelCommand::Down(None)),
            }
            self.tunnel_up = want;
        } else if peers_dirty && self.tunnel_up.is_some() {
            manager.send(TunnelCommand::Peers(tunnel_driver::peer_configs(
                self.directory.agents(),
            )));
        }
    }

    fn start_task(&mut self, generation: u64) {
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
                endpoints: Vec::new(),
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
