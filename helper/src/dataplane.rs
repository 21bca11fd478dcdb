//! The helper's data-plane manager: carries out the client state's tunnel
//! commands (`Up`, `Changes`, `Down`, each for one generation) in order on
//! one task: configures the OS through `warren-netcfg`, owns the WireGuard
//! UDP socket for the helper's lifetime, starts and stops the packet loop
//! (`packet_loop`) and the DNS stub, hands them peer and name diffs, and
//! reports back where each generation got to, including a loop that died
//! by itself.
//!
//! What to run is decided in `warren-client-core`; all WireGuard logic
//! (routing, handshakes, timers, counters) lives in `warren-tunnel`;
//! statistics and pings in `observe`. `warrend --no-tunnel` runs without any
//! of it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use warren_client_core::{NameChange, PeerChange, TunnelUp};
use warren_netcfg::dns::DnsMode;
use warren_netcfg::{Change, NetConfig};
use warren_path::{Paths, RelayServer, Role};
use warren_proto::ipc::TunnelState;
use warren_tunnel::Tunnel;

use crate::dns_driver::{self, DnsDriverConfig};
use crate::observe::{
    LoopRequest, Observer, PingError, PingRequest, Report, ReportReceiver, ReportSender,
    MAX_PENDING_PINGS,
};
use crate::packet_loop::{self, LoopExit, LoopParts};

/// Why the data plane could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// TUN, address or route configuration failed.
    #[error("couldn't configure the tunnel device: {0}")]
    Net(#[from] warren_netcfg::NetError),
    /// The packet loop's thread could not be started.
    #[error("couldn't start the data plane's thread ({0}) — the system may be out of threads or memory; restart the helper")]
    Thread(#[source] std::io::Error),
    /// The UDP socket could not be opened.
    #[error("couldn't open the WireGuard UDP socket ({0}) — check that the helper runs as root and IPv6 is not disabled")]
    Udp(#[source] std::io::Error),
}

/// Driver settings taken from `warrend`'s command line.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// TUN interface name (`--tun-name`).
    pub tun_name: String,
    /// Journal of OS changes (`<--state-dir>/netstate.json`).
    pub journal: PathBuf,
    /// Local UDP port; 0 lets the OS choose.
    pub listen_port: u16,
    /// How the OS is told about the DNS stub (a concrete mode, not `Auto`).
    pub dns_mode: DnsMode,
    /// The file the resolv.conf mode manages.
    pub resolv_conf: PathBuf,
}

/// A running data plane. Dropping it without [`TunnelHandle::stop`] still
/// stops the loop, which tears the configuration down on its way out.
#[derive(Debug)]
pub struct TunnelHandle {
    generation: u64,
    peers: mpsc::UnboundedSender<Vec<PeerChange>>,
    /// `None` when the tunnel runs without its DNS stub.
    names: Option<mpsc::UnboundedSender<Vec<NameChange>>>,
    pings: mpsc::Sender<LoopRequest>,
    relays: mpsc::UnboundedSender<Vec<RelayServer>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TunnelHandle {
    /// New relays or credentials for the path layer.
    pub fn set_relays(&self, relays: Vec<RelayServer>) {
        let _ = self.relays.send(relays);
    }

    /// Edits the peer table and the DNS names (one directory change).
    pub fn apply(&self, peers: Vec<PeerChange>, names: Vec<NameChange>) {
        if !peers.is_empty() {
            let _ = self.peers.send(peers);
        }
        if let (Some(tx), false) = (&self.names, names.is_empty()) {
            let _ = tx.send(names);
        }
    }

    /// Hands a ping to the loop; answers it at once if the loop is gone or
    /// swamped.
    pub fn ping(&self, req: PingRequest) {
        if let Err(e) = self.pings.try_send(LoopRequest::Ping(req)) {
            let (probe, error) = match e {
                mpsc::error::TrySendError::Full(p) => (p, PingError::Busy),
                mpsc::error::TrySendError::Closed(p) => (p, PingError::TunnelDown),
            };
            if let LoopRequest::Ping(req) = probe {
                let _ = req.reply.send(Err(error));
            }
        }
    }

    /// Asks the loop for current figures (dropped if its queue is full: a
    /// report is on its way anyway).
    pub fn report_stats(&self) {
        let _ = self.pings.try_send(LoopRequest::Report);
    }

    /// Stops the loop and waits until the OS configuration is undone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Undoes whatever a previous helper left (call once at start).
pub fn recover(config: &DriverConfig) -> Result<(), DriverError> {
    Ok(warren_netcfg::recover(&config.journal)?)
}

/// Configures the OS and starts the loop on (a handle to) the helper's
/// WireGuard socket, and the DNS stub if the plan has split DNS. A stub that
/// can't start leaves the tunnel running; the returned note says why.
///
/// If the loop later dies by itself (the TUN failed or was deleted), the
/// configuration is undone and `Failed` is reported for this generation, so
/// the client state can show it and try again.
pub async fn start(
    config: &DriverConfig,
    udp: &std::net::UdpSocket,
    up: TunnelUp,
    relays: Vec<RelayServer>,
    reports: ReportSender,
) -> Result<(TunnelHandle, Option<String>), DriverError> {
    let TunnelUp {
        generation,
        secret,
        plan,
        peers,
        names,
    } = up;
    let mut net = warren_netcfg::platform_configurator(&config.journal)?;
    // The loop runs on a thread of its own; its TUN and socket must be
    // registered with that thread's runtime.
    let loop_thread = packet_loop::LoopThread::new().map_err(DriverError::Thread)?;
    let tun = {
        let _in_loop = loop_thread.enter();
        net.apply(&plan)?
    };
    let mut dns_problem = None;
    let mut names_tx = None;
    let dns = match &plan.dns {
        Some(dns) => {
            let state_dir = config
                .journal
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            let resolv_conf = match dns.change(&plan.tun_name, &state_dir) {
                Some(Change::ResolvConf { path, backup }) => Some((path, backup)),
                _ => None,
            };
            let driver = DnsDriverConfig {
                suffix: dns.suffix.clone(),
                listen: dns.servers.clone(),
                resolv_conf,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            match dns_driver::start(driver, names, rx).await {
                Ok(handle) => {
                    names_tx = Some(tx);
                    Some(handle)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the DNS stub could not start; workspace names won't resolve");
                    dns_problem = Some(format!("DNS: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let cloned = {
        let _in_loop = loop_thread.enter();
        udp.try_clone().and_then(UdpSocket::from_std)
    };
    let udp = match cloned {
        Ok(s) => s,
        Err(e) => {
            abandon(dns, &mut net).await;
            return Err(DriverError::Udp(e));
        }
    };
    let now = Instant::now();
    let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut paths = Paths::new(Role::Device, secret.to_bytes());
    for peer in &peers {
        paths.upsert_peer(now, peer.public_key, &peer.candidates);
    }
    paths.set_host_candidates(now, local_endpoints(port, &plan.tun_name));
    paths.set_relays(now, relays);
    let sources: Vec<IpAddr> = plan.addresses.iter().map(|(a, _)| *a).collect();
    let mut tunnel = Tunnel::new(secret);
    // Agents may address this device only, never route through it (into
    // the LAN or containers when the OS forwards).
    tunnel.set_local_addresses(sources.iter().copied());
    if let Err(e) = tunnel.set_peers(now, peers) {
        tracing::warn!(error = %e, "some agents could not be added to the tunnel");
    }
    let observer = Observer::new(now, &sources, reports.clone(), rand::random(), generation);
    let (peers_tx, peers_rx) = mpsc::unbounded_channel();
    let (pings_tx, pings_rx) = mpsc::channel(MAX_PENDING_PINGS);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (relays_tx, relays_rx) = mpsc::unbounded_channel();
    tracing::info!(
        generation,
        peers = tunnel.peer_count(),
        "tunnel data plane started"
    );
    let dp = LoopParts {
        tunnel,
        tun,
        udp,
        peers: peers_rx,
        pings: pings_rx,
        observer,
        paths,
        relays: relays_rx,
        reports: reports.clone(),
        port,
        tun_name: plan.tun_name.clone(),
        stop: stop_rx,
    };
    let ended = match loop_thread.spawn(dp) {
        Ok(ended) => ended,
        Err(e) => {
            abandon(dns, &mut net).await;
            return Err(DriverError::Thread(e));
        }
    };
    let task = tokio::spawn(async move {
        let exit = ended.await.unwrap_or_else(|_| {
            LoopExit::Failed("the data plane stopped unexpectedly; see the helper's log".into())
        });
        if let Some(dns) = dns {
            dns.stop().await;
        }
        match net.teardown() {
            Ok(()) => tracing::info!(
                generation,
                "tunnel data plane stopped, network configuration undone"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "couldn't undo all of the tunnel configuration; the next start will retry")
            }
        }
        if let LoopExit::Failed(reason) = exit {
            // Reported only now, with the OS restored: the retry that
            // follows starts from a clean machine.
            let _ = reports.send(Report::Tunnel {
                generation,
                state: TunnelState::Failed,
                error: Some(reason),
            });
        }
    });
    Ok((
        TunnelHandle {
            generation,
            peers: peers_tx,
            names: names_tx,
            pings: pings_tx,
            relays: relays_tx,
            stop: Some(stop_tx),
            task: Some(task),
        },
        dns_problem,
    ))
}

/// Undoes a start that failed half-way: the DNS stub, then the OS changes.
async fn abandon(dns: Option<dns_driver::DnsHandle>, net: &mut impl NetConfig) {
    if let Some(dns) = dns {
        dns.stop().await;
    }
    if let Err(t) = net.teardown() {
        tracing::warn!(error = %t, "couldn't undo the tunnel configuration");
    }
}

/// What the engine asks of the data plane. Carried out in order by one
/// manager task, so the engine never waits for the OS.
pub enum TunnelCommand {
    /// Bring the tunnel up as this generation (restarting it if it runs).
    Up(TunnelUp),
    /// Edit the running tunnel of this generation (ignored for any other:
    /// a newer `Up` carried the full lists).
    Changes {
        generation: u64,
        peers: Vec<PeerChange>,
        names: Vec<NameChange>,
    },
    /// The coordinator's TURN relays (with fresh credentials) for the path
    /// layer of this and later tunnels of the session.
    Relays(Vec<RelayServer>),
    /// Ping through the running tunnel.
    Ping(PingRequest),
    /// Report current per-peer figures of this generation now.
    ReportStats { generation: u64 },
    /// Stop the tunnel and undo the OS configuration, then report `Down`
    /// for `generation`; the sender, if any, is told when that is done.
    Down {
        generation: u64,
        done: Option<oneshot::Sender<()>>,
    },
}

// By hand: `TunnelUp` hides its key, and a ping's reply channel says nothing.
impl std::fmt::Debug for TunnelCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelCommand::Up(up) => up.fmt(f),
            TunnelCommand::Changes {
                generation,
                peers,
                names,
            } => f
                .debug_struct("Changes")
                .field("generation", generation)
                .field("peers", &peers.len())
                .field("names", &names.len())
                .finish(),
            TunnelCommand::Ping(req) => f.debug_tuple("Ping").field(&req.dst).finish(),
            TunnelCommand::Relays(relays) => write!(f, "Relays({})", relays.len()),
            TunnelCommand::ReportStats { generation } => {
                write!(f, "ReportStats({generation})")
            }
            TunnelCommand::Down { generation, .. } => write!(f, "Down({generation})"),
        }
    }
}

/// The engine's and `main`'s handle on the manager task.
#[derive(Debug, Clone)]
pub struct TunnelManager {
    tx: mpsc::UnboundedSender<TunnelCommand>,
    tun_name: String,
    port: u16,
    dns_mode: DnsMode,
    resolv_conf: PathBuf,
}

impl TunnelManager {
    /// Recovers leftovers of a dead predecessor, binds the WireGuard socket
    /// and starts the manager. The receiver gets the data plane's reports.
    pub fn spawn(config: DriverConfig) -> Result<(Self, ReportReceiver), DriverError> {
        if let Some(dir) = config.journal.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "couldn't create the state directory");
            }
        }
        recover(&config)?;
        let udp = packet_loop::bind_udp(config.listen_port).map_err(DriverError::Udp)?;
        let port = udp.local_addr().map_err(DriverError::Udp)?.port();
        tracing::info!(port, "WireGuard socket bound");
        let tun_name = config.tun_name.clone();
        let dns_mode = config.dns_mode;
        let resolv_conf = config.resolv_conf.clone();
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut running: Option<TunnelHandle> = None;
            let mut relays: Vec<RelayServer> = Vec::new();
            while let Some(command) = rx.recv().await {
                match command {
                    TunnelCommand::Up(up) => {
                        if let Some(old) = running.take() {
                            old.stop().await;
                        }
                        let generation = up.generation;
                        let started =
                            start(&config, &udp, up, relays.clone(), reports_tx.clone()).await;
                        let (state, error) = match started {
                            Ok((handle, note)) => {
                                running = Some(handle);
                                (TunnelState::Up, note)
                            }
                            Err(e) => {
                                tracing::error!(generation, error = %e, "the tunnel could not start");
                                (TunnelState::Failed, Some(e.to_string()))
                            }
                        };
                        let _ = reports_tx.send(Report::Tunnel {
                            generation,
                            state,
                            error,
                        });
                    }
                    TunnelCommand::Changes {
                        generation,
                        peers,
                        names,
                    } => {
                        if let Some(handle) =
                            running.as_ref().filter(|h| h.generation == generation)
                        {
                            handle.apply(peers, names);
                        }
                    }
                    TunnelCommand::Relays(list) => {
                        relays = list;
                        if let Some(handle) = &running {
                            handle.set_relays(relays.clone());
                        }
                    }
                    TunnelCommand::ReportStats { generation } => {
                        if let Some(handle) =
                            running.as_ref().filter(|h| h.generation == generation)
                        {
                            handle.report_stats();
                        }
                    }
                    TunnelCommand::Ping(req) => match &running {
                        Some(handle) => handle.ping(req),
                        None => {
                            let _ = req.reply.send(Err(PingError::TunnelDown));
                        }
                    },
                    TunnelCommand::Down { generation, done } => {
                        if let Some(old) = running.take() {
                            old.stop().await;
                        }
                        // The next session's coordinator hands out its own.
                        relays.clear();
                        let _ = reports_tx.send(Report::Tunnel {
                            generation,
                            state: TunnelState::Down,
                            error: None,
                        });
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                }
            }
            if let Some(old) = running.take() {
                old.stop().await;
            }
        });
        Ok((
            TunnelManager {
                tx,
                tun_name,
                port,
                dns_mode,
                resolv_conf,
            },
            reports_rx,
        ))
    }

    /// The TUN name the plans should use.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// How plans configure DNS: the mode and the resolv.conf it would manage.
    pub fn dns(&self) -> (DnsMode, PathBuf) {
        (self.dns_mode, self.resolv_conf.clone())
    }

    /// The WireGuard socket's local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queues a command; never waits.
    pub fn send(&self, command: TunnelCommand) {
        if let Err(mpsc::error::SendError(command)) = self.tx.send(command) {
            tracing::warn!("the tunnel manager has stopped");
            if let TunnelCommand::Ping(req) = command {
                let _ = req.reply.send(Err(PingError::TunnelDown));
            }
        }
    }

    /// Stops the tunnel and waits (bounded) until the OS is restored.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(TunnelCommand::Down {
            generation: 0,
            done: Some(tx),
        });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await;
    }
}

/// Where agents can reach this device's WireGuard socket (the shared
/// rule of `warren_io::local_endpoints`, skipping the tunnel's own device).
pub fn local_endpoints(port: u16, tun_name: &str) -> Vec<SocketAddr> {
    warren_io::local_endpoints(port, Some(tun_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_endpoints_are_ones_the_coordinator_accepts() {
        // The rule itself is tested in warren-proto; here: whatever this
        // machine has, what the helper registers passes it, with the port.
        let endpoints = local_endpoints(51820, "lo");
        assert!(endpoints.len() <= warren_proto::limits::MAX_ENDPOINTS);
        for ep in endpoints {
            assert_eq!(
                warren_proto::limits::check_endpoint(ep, false),
                Ok(()),
                "{ep}"
            );
            assert_eq!(ep.port(), 51820);
        }
    }
}
