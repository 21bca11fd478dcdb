//! The helper's engine: the thin driver of [`ClientState`].
//!
//! All of the helper's decisions live in the sans-IO client state
//! (`warren-client-core`). This task feeds it its inputs — client requests,
//! coordinator events, data-plane reports, its own timer — with the current
//! time, carries out its commands (coordinator connections, the data
//! plane's manager) and fans its events out to subscribers through their
//! bounded queues. It never awaits a client or the network, so a hung GUI
//! cannot stall the coordinator stream and a slow coordinator cannot stall a
//! `Status` request.

use crate::control_task::{self, ControlEvent};
use crate::dataplane::{self, TunnelCommand, TunnelManager};
use crate::events::{self, EncodedEvent};
use crate::observe::{PingError, PingRequest, Report, ReportReceiver};
use crate::subscribers::{Outgoing, SubscriberQueue};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use warren_client_core::confine::Policy;
use warren_client_core::{
    ClientConfig, ClientState, Command as CoreCommand, ConnectControl, Event as CoreEvent,
    SessionKeys, TunnelFacts,
};
use warren_control::ControlConfig;
use warren_proto::control::{ClientMessage, Register, CONTROL_VERSION};
use warren_proto::frame::encode;
use warren_proto::ipc::{ErrorCode, HelperMessage, IpcError, LogLine, PingReport, Reply, Request};
use warren_session::{Backoff, ConnectFailure};

#[derive(Debug)]
pub struct EngineConfig {
    /// Cap of the reconnect backoff.
    pub backoff_cap: Duration,
    /// Initial reconnect delay.
    pub backoff_base: Duration,
    pub app_version: String,
    pub hostname: Option<String>,
    /// The data plane, unless `warrend` runs with `--no-tunnel`, and its
    /// reports.
    pub tunnel: Option<(TunnelManager, ReportReceiver)>,
    /// What any deployment may do to this machine.
    pub policy: Policy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            backoff_cap: Backoff::DEFAULT_CAP,
            backoff_base: Backoff::DEFAULT_BASE,
            app_version: crate::VERSION.to_string(),
            hostname: None,
            tunnel: None,
            policy: Policy::default(),
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
    app_version: String,
    hostname: Option<String>,
    client: ClientState,
    subscribers: Vec<Arc<SubscriberQueue>>,
    /// Coordinator connection per session generation.
    tasks: HashMap<u64, JoinHandle<()>>,
    /// Messages for the coordinator, per session generation.
    outgoing: HashMap<u64, mpsc::UnboundedSender<ClientMessage>>,
    /// The path layer's latest candidates: announced on every registration
    /// and whenever they change.
    candidates: Vec<std::net::SocketAddr>,
    control_tx: mpsc::Sender<ControlEvent>,
    control_rx: mpsc::Receiver<ControlEvent>,
    commands: mpsc::Receiver<Command>,
    logs: Option<broadcast::Receiver<LogLine>>,
    tunnel: Option<TunnelManager>,
    reports: Option<ReportReceiver>,
}

/// Starts the engine task.
pub fn spawn(
    config: EngineConfig,
    logs: Option<broadcast::Receiver<LogLine>>,
) -> (EngineHandle, JoinHandle<()>) {
    let (tx, commands) = mpsc::channel(256);
    let (control_tx, control_rx) = mpsc::channel(64);
    let (tunnel, reports) = match config.tunnel {
        Some((manager, reports)) => (Some(manager), Some(reports)),
        None => (None, None),
    };
    let facts = tunnel.as_ref().map(|m| {
        let (dns_mode, resolv_conf) = m.dns();
        TunnelFacts {
            tun_name: m.tun_name().to_string(),
            listen_port: m.port(),
            dns_mode,
            resolv_conf,
        }
    });
    let client = ClientState::new(ClientConfig {
        backoff_base: config.backoff_base,
        backoff_cap: config.backoff_cap,
        seed: rand::random(),
        tunnel: facts,
        policy: config.policy,
    });
    let engine = Engine {
        app_version: config.app_version,
        hostname: config.hostname,
        client,
        subscribers: Vec::new(),
        tasks: HashMap::new(),
        outgoing: HashMap::new(),
        candidates: Vec::new(),
        control_tx,
        control_rx,
        commands,
        logs,
        tunnel,
        reports,
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

fn error_reply(id: u64, error: IpcError) -> Option<Vec<u8>> {
    reply_frame(id, Reply::Error(error))
}

impl Engine {
    async fn run(mut self) {
        loop {
            let deadline = self.client.poll_timeout();
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
                report = recv_report(&mut self.reports) => match report {
                    Some(Report::Stats { generation, peers }) => {
                        self.client.handle_stats(Instant::now(), generation, peers);
                    }
                    Some(Report::Tunnel { generation, state, error }) => {
                        self.client.handle_tunnel_report(Instant::now(), generation, state, error);
                    }
                    Some(Report::Candidates(candidates)) => self.announce(candidates),
                    Some(Report::NetworkChanged) => self.network_changed(),
                    None => {}
                },
                _ = sleep_until(deadline) => self.client.handle_timeout(Instant::now()),
            }
            self.carry_out();
        }
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }

    fn handle_command(&mut self, Command { id, request, queue }: Command) {
        let now = Instant::now();
        let reply = match request {
            Request::Start {
                url,
                token,
                ca,
                deployment,
            } => {
                match self.client.handle_start(
                    now,
                    &url,
                    token,
                    ca,
                    SessionKeys::generate(),
                    deployment,
                ) {
                    Ok(()) => reply_frame(id, Reply::Ok),
                    Err(e) => error_reply(id, e),
                }
            }
            Request::Stop => {
                self.client.handle_stop(now);
                reply_frame(id, Reply::Ok)
            }
            Request::Reconnect => match self.client.handle_reconnect(now) {
                Ok(()) => reply_frame(id, Reply::Ok),
                Err(e) => error_reply(id, e),
            },
            Request::Status => {
                reply_frame(id, Reply::Status(self.client.status(now, crate::VERSION)))
            }
            Request::Ping { target, timeout_ms } => {
                match self.start_ping(&target, timeout_ms, id, &queue) {
                    Ok(()) => return,
                    Err(e) => error_reply(id, e),
                }
            }
            Request::Subscribe => {
                if !queue.set_subscribed() {
                    error_reply(
                        id,
                        IpcError::new(
                            ErrorCode::BadRequest,
                            "this connection is already subscribed",
                        ),
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
        let mut workspaces: Vec<_> = self.client.workspaces().collect();
        workspaces.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        let agents: Vec<_> = self.client.agents().collect();
        let info = self.client.session_info(started);
        let state = match events::state_events(&info, workspaces, agents, self.client.peer_stats())
        {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, "could not encode the state");
                if let Some(frame) = error_reply(
                    id,
                    IpcError::new(ErrorCode::Internal, "the helper could not encode its state"),
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
            agents = self.client.agent_count(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "new subscriber"
        );
        if open {
            self.subscribers.push(queue);
            self.client.handle_subscriber();
        }
    }

    fn handle_control(&mut self, event: ControlEvent) {
        let now = Instant::now();
        match event {
            ControlEvent::Connected {
                generation,
                welcome,
            } => {
                // Read now, not at start: the machine may have joined a
                // network (or another VPN) since. Only a data plane routes.
                if let Some(manager) = &self.tunnel {
                    self.client
                        .handle_host_networks(warren_netcfg::host_networks(manager.tun_name()));
                }
                self.client
                    .handle_control_connected(now, generation, welcome)
            }
            ControlEvent::Update {
                generation,
                update,
                received,
            } => {
                self.client.handle_control_update(now, generation, update);
                tracing::trace!(
                    total_us = received.elapsed().as_micros() as u64,
                    "workspace update handled"
                );
            }
            ControlEvent::Relays { generation, relays } => {
                // Only the live connection's: an older generation's relays
                // may be another deployment's.
                if self.tasks.contains_key(&generation) && self.tunnel.is_some() {
                    self.to_tunnel(TunnelCommand::Relays(relays));
                }
            }
            ControlEvent::Failed {
                generation,
                failure,
            } => {
                self.tasks.remove(&generation);
                self.outgoing.remove(&generation);
                self.client.handle_control_failed(now, generation, failure);
            }
        }
    }

    /// Carries out what the client state asked for and publishes what it
    /// said, until it has nothing more.
    fn carry_out(&mut self) {
        while let Some(command) = self.client.poll_command() {
            match command {
                CoreCommand::ConnectControl(connect) => self.start_task(connect),
                CoreCommand::DisconnectControl { generation } => {
                    if let Some(task) = self.tasks.remove(&generation) {
                        task.abort();
                    }
                    self.outgoing.remove(&generation);
                }
                CoreCommand::TunnelUp(up) => self.to_tunnel(TunnelCommand::Up(up)),
                CoreCommand::TunnelChanges {
                    generation,
                    peers,
                    names,
                } => self.to_tunnel(TunnelCommand::Changes {
                    generation,
                    peers,
                    names,
                }),
                CoreCommand::TunnelDown { generation } => {
                    // The next session (maybe another deployment's) finds
                    // its own relays and addresses.
                    self.candidates.clear();
                    self.to_tunnel(TunnelCommand::Down {
                        generation,
                        done: None,
                    })
                }
                CoreCommand::ReportStats { generation } => {
                    self.to_tunnel(TunnelCommand::ReportStats { generation })
                }
            }
        }
        while let Some(event) = self.client.poll_event() {
            let encoded = match &event {
                CoreEvent::SessionChanged(info) => events::session_event(info).map(|e| vec![e]),
                CoreEvent::Directory(delta) => {
                    self.subscribers.retain(|queue| !queue.is_closed());
                    if self.subscribers.is_empty() {
                        continue;
                    }
                    events::update_events(delta)
                }
                CoreEvent::Stats(stats) => {
                    self.subscribers.retain(|queue| !queue.is_closed());
                    if self.subscribers.is_empty() || stats.is_empty() {
                        continue;
                    }
                    events::stats_events(stats)
                }
            };
            match encoded {
                Ok(events) => self.broadcast(&events),
                Err(e) => tracing::error!(error = %e, "could not encode an event"),
            }
        }
    }

    fn to_tunnel(&self, command: TunnelCommand) {
        match &self.tunnel {
            Some(manager) => manager.send(command),
            // The client state has no tunnel facts then, so it never asks.
            None => tracing::warn!(?command, "no data plane for a tunnel command"),
        }
    }

    /// The machine moved to another network: a coordinator connection
    /// from the old address would only be noticed dead after its silence
    /// limit (45 s), so it is ended now and the session reconnects with the
    /// same key (the tunnel and its paths stay).
    fn network_changed(&mut self) {
        let now = Instant::now();
        let generations: Vec<u64> = self.tasks.keys().copied().collect();
        for generation in generations {
            if let Some(task) = self.tasks.remove(&generation) {
                task.abort();
            }
            self.outgoing.remove(&generation);
            tracing::info!(
                generation,
                "this machine's network changed; reconnecting to the coordinator"
            );
            self.client.handle_control_failed(
                now,
                generation,
                ConnectFailure::Lost("this machine's network changed; reconnecting".into()),
            );
        }
    }

    /// The path layer found new candidates: every live connection
    /// announces them.
    fn announce(&mut self, candidates: Vec<std::net::SocketAddr>) {
        if candidates == self.candidates {
            return;
        }
        self.candidates = candidates.clone();
        self.client.handle_local_endpoints(candidates.clone());
        self.outgoing.retain(|_, tx| {
            tx.send(ClientMessage::Endpoints {
                endpoints: candidates.clone(),
            })
            .is_ok()
        });
    }

    fn start_task(&mut self, connect: ConnectControl) {
        let endpoints = match &self.tunnel {
            Some(_) if !self.candidates.is_empty() => self.candidates.clone(),
            Some(t) => dataplane::local_endpoints(t.port(), t.tun_name()),
            None => Vec::new(),
        };
        self.client.handle_local_endpoints(endpoints.clone());
        let ConnectControl {
            generation,
            url,
            token,
            ca,
            public_key,
        } = connect;
        let control = ControlConfig {
            url,
            token,
            ca_pem: ca,
            register: Register {
                protocol_version: CONTROL_VERSION,
                public_key,
                endpoints,
                hostname: self.hostname.clone(),
                app_version: self.app_version.clone(),
            },
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let task = control_task::spawn(generation, control, self.control_tx.clone(), out_rx);
        self.tasks.insert(generation, task);
        self.outgoing.insert(generation, out_tx);
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
        let ping = self.client.resolve_ping(target, timeout_ms)?;
        let Some(manager) = self.tunnel.clone() else {
            // resolve_ping refuses without a data plane.
            return Err(IpcError::new(ErrorCode::Internal, "no data plane"));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        manager.send(TunnelCommand::Ping(PingRequest {
            dst: ping.address,
            timeout: ping.timeout,
            reply: tx,
        }));
        let queue = Arc::clone(queue);
        tokio::spawn(async move {
            // The observer answers by its own deadline; this bound only
            // guards against a data plane that vanished with the request.
            let outcome = tokio::time::timeout(ping.timeout + Duration::from_secs(1), rx).await;
            let reply = match outcome {
                Ok(Ok(Ok(pong))) => Reply::Pong(PingReport {
                    agent_id: ping.agent_id,
                    name: ping.name,
                    address: ping.address,
                    rtt_us: pong.rtt.as_micros() as u64,
                    endpoint: pong.endpoint,
                }),
                Ok(Ok(Err(e))) => Reply::Error(ping_error(&ping.name, ping.address, e)),
                Ok(Err(_)) | Err(_) => {
                    Reply::Error(ping_error(&ping.name, ping.address, PingError::TunnelDown))
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

async fn recv_report(reports: &mut Option<ReportReceiver>) -> Option<Report> {
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
