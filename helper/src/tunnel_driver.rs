//! The helper's data-plane manager: turns the session's facts into a
//! [`NetPlan`] and [`PeerConfig`]s, configures the OS through
//! `warren-netcfg`, owns the WireGuard UDP socket for the helper's lifetime
//! and starts/stops the packet loop (`datapath`) as the engine asks.
//!
//! All WireGuard logic (routing, handshakes, timers, counters) lives in
//! `warren-tunnel`; statistics and pings in `observe`. `warrend --no-tunnel`
//! runs without any of it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use warren_netcfg::dns::{DnsMode, DnsPlan};
use warren_netcfg::{Change, NetConfig, NetPlan, DEFAULT_MTU};
use warren_proto::ipc::DeviceInfo;
use warren_proto::model::{Agent, DeploymentInfo};
use warren_tunnel::{PeerConfig, StaticSecret, Tunnel};

use crate::datapath::{self, DataPlane};
use crate::dns_driver::{self, DnsDriverConfig, Names};
use crate::observe::{
    Observer, PingError, PingRequest, Probe, Report, StatsReceiver, StatsSender, MAX_PENDING_PINGS,
};
use warren_proto::ipc::TunnelState;

/// Why the data plane could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The coordinator sent a prefix we can't parse.
    #[error("the coordinator sent an unusable address prefix {0:?} — update the coordinator or report this to its operator")]
    BadPrefix(String),
    /// The session has no tunnel address for this device yet.
    #[error("this device has no tunnel address yet — reconnect with `warren reconnect`")]
    NoAddress,
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

/// Parses `"100.64.0.0/10"` into an address and prefix length.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), DriverError> {
    let bad = || DriverError::BadPrefix(s.to_string());
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let len: u8 = len.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len == 0 || len > max {
        return Err(bad());
    }
    Ok((addr, len))
}

/// What the OS should look like for this session: the device's host
/// addresses and exactly the deployment's two prefixes routed to the TUN.
pub fn net_plan(
    tun_name: &str,
    device: &DeviceInfo,
    deployment: &DeploymentInfo,
    dns: Option<(DnsMode, PathBuf)>,
) -> Result<NetPlan, DriverError> {
    if device.addresses.is_empty() {
        return Err(DriverError::NoAddress);
    }
    let addresses = device
        .addresses
        .iter()
        .map(|a| (*a, if a.is_ipv4() { 32 } else { 128 }))
        .collect();
    let routes = vec![
        parse_prefix(&deployment.ipv4_prefix)?,
        parse_prefix(&deployment.ipv6_prefix)?,
    ];
    let dns = match dns {
        Some((mode, resolv_conf)) if mode != DnsMode::Off && mode != DnsMode::Auto => {
            Some(DnsPlan {
                suffix: deployment.suffix.clone(),
                servers: device.addresses.clone(),
                mode,
                resolv_conf,
            })
        }
        _ => None,
    };
    Ok(NetPlan {
        tun_name: tun_name.to_string(),
        mtu: DEFAULT_MTU,
        addresses,
        routes,
        dns,
    })
}

/// What the DNS stub serves: every DNS name of every agent with an address.
pub fn dns_names<'a>(agents: impl IntoIterator<Item = &'a Agent>) -> Names {
    let mut names = Vec::new();
    for agent in agents {
        if agent.addresses.is_empty() {
            continue;
        }
        for name in &agent.dns_names {
            names.push((name.clone(), agent.addresses.clone()));
        }
    }
    std::sync::Arc::new(names)
}

/// The peer table for the directory's agents: every agent with a valid key
/// and at least one tunnel address; its first reported endpoint is where
/// handshakes go. Agents without a key (not registered yet) are skipped.
pub fn peer_configs<'a>(agents: impl IntoIterator<Item = &'a Agent>) -> Vec<PeerConfig> {
    agents
        .into_iter()
        .filter_map(|agent| {
            let key = agent.public_key.as_deref().and_then(warren_tunnel::parse_key);
            let Some(public_key) = key else {
                if agent.public_key.is_some() {
                    tracing::warn!(agent = %agent.name, "ignoring an agent with a malformed WireGuard key");
                }
                return None;
            };
            if agent.addresses.is_empty() {
                return None;
            }
            Some(PeerConfig {
                public_key,
                addresses: agent.addresses.clone(),
                endpoint: agent.endpoints.first().copied(),
                persistent_keepalive: None,
            })
        })
        .collect()
}

/// A running data plane. Dropping it without [`TunnelHandle::stop`] still
/// stops the task, which tears the configuration down on its way out.
#[derive(Debug)]
pub struct TunnelHandle {
    peers: watch::Sender<Vec<PeerConfig>>,
    names: watch::Sender<Names>,
    pings: mpsc::Sender<Probe>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TunnelHandle {
    /// Replaces the peer table (a directory snapshot or after any diff).
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        self.peers.send_replace(peers);
    }

    /// Replaces the names the DNS stub answers.
    pub fn set_names(&self, names: Names) {
        self.names.send_replace(names);
    }

    /// Hands a ping to the loop; answers it at once if the loop is gone or
    /// swamped.
    pub fn ping(&self, req: PingRequest) {
        if let Err(e) = self.pings.try_send(Probe::Ping(req)) {
            let (probe, error) = match e {
                mpsc::error::TrySendError::Full(p) => (p, PingError::Busy),
                mpsc::error::TrySendError::Closed(p) => (p, PingError::TunnelDown),
            };
            if let Probe::Ping(req) = probe {
                let _ = req.reply.send(Err(error));
            }
        }
    }

    /// Asks the loop for current figures (dropped if its queue is full: a
    /// report is on its way anyway).
    pub fn report_stats(&self) {
        let _ = self.pings.try_send(Probe::Report);
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
pub async fn start(
    config: &DriverConfig,
    udp: &std::net::UdpSocket,
    secret: StaticSecret,
    plan: &NetPlan,
    peers: Vec<PeerConfig>,
    names: Names,
    stats: StatsSender,
) -> Result<(TunnelHandle, Option<String>), DriverError> {
    let mut net = warren_netcfg::platform_configurator(&config.journal)?;
    // The loop runs on a thread of its own; its TUN and socket must be
    // registered with that thread's runtime.
    let loop_thread = datapath::LoopThread::new().map_err(DriverError::Thread)?;
    let tun = {
        let _in_loop = loop_thread.enter();
        net.apply(plan)?
    };
    let (names_tx, names_rx) = watch::channel(names);
    let mut dns_problem = None;
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
            match dns_driver::start(driver, names_rx).await {
                Ok(handle) => Some(handle),
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
            if let Err(t) = net.teardown() {
                tracing::warn!(error = %t, "couldn't undo the tunnel configuration");
            }
            return Err(DriverError::Udp(e));
        }
    };
    let now = Instant::now();
    let mut tunnel = Tunnel::new(secret);
    if let Err(e) = tunnel.set_peers(now, peers.clone()) {
        tracing::warn!(error = %e, "some agents could not be added to the tunnel");
    }
    let sources: Vec<IpAddr> = plan.addresses.iter().map(|(a, _)| *a).collect();
    let observer = Observer::new(now, &sources, stats, rand::random());
    let (peers_tx, peers_rx) = watch::channel(peers);
    let (pings_tx, pings_rx) = mpsc::channel(MAX_PENDING_PINGS);
    let (stop_tx, stop_rx) = oneshot::channel();
    tracing::info!(peers = tunnel.peer_count(), "tunnel data plane started");
    let dp = DataPlane {
        tunnel,
        tun,
        udp,
        peers: peers_rx,
        pings: pings_rx,
        observer,
        stop: stop_rx,
    };
    let ended = match loop_thread.spawn(dp) {
        Ok(ended) => ended,
        Err(e) => {
            if let Err(t) = net.teardown() {
                tracing::warn!(error = %t, "couldn't undo the tunnel configuration");
            }
            return Err(DriverError::Thread(e));
        }
    };
    let task = tokio::spawn(async move {
        let _ = ended.await;
        if let Some(dns) = dns {
            dns.stop().await;
        }
        match net.teardown() {
            Ok(()) => tracing::info!("tunnel data plane stopped, network configuration undone"),
            Err(e) => {
                tracing::warn!(error = %e, "couldn't undo all of the tunnel configuration; the next start will retry")
            }
        }
    });
    Ok((
        TunnelHandle {
            peers: peers_tx,
            names: names_tx,
            pings: pings_tx,
            stop: Some(stop_tx),
            task: Some(task),
        },
        dns_problem,
    ))
}

/// What the engine asks of the data plane. Carried out in order by one
/// manager task, so the engine never waits for the OS.
pub enum TunnelCommand {
    /// Bring the tunnel up with this key and plan (restarting it if it runs).
    Up {
        secret: StaticSecret,
        plan: NetPlan,
        peers: Vec<PeerConfig>,
        names: Names,
    },
    /// Replace the peer table and the DNS names of the running tunnel.
    Directory {
        peers: Vec<PeerConfig>,
        names: Names,
    },
    /// Ping through the running tunnel.
    Ping(PingRequest),
    /// Report current per-peer figures now.
    ReportStats,
    /// Stop the tunnel and undo the OS configuration; the sender, if any, is
    /// told when that is done.
    Down(Option<oneshot::Sender<()>>),
}

// By hand, so the private key can never reach a log line.
impl std::fmt::Debug for TunnelCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelCommand::Up { plan, peers, .. } => f
                .debug_struct("Up")
                .field("plan", plan)
                .field("peers", &peers.len())
                .finish_non_exhaustive(),
            TunnelCommand::Directory { peers, names } => f
                .debug_struct("Directory")
                .field("peers", &peers.len())
                .field("names", &names.len())
                .finish(),
            TunnelCommand::Ping(req) => f.debug_tuple("Ping").field(&req.dst).finish(),
            TunnelCommand::ReportStats => f.write_str("ReportStats"),
            TunnelCommand::Down(_) => f.write_str("Down"),
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
    /// and starts the manager. The receiver gets the tunnel's statistics.
    pub fn spawn(config: DriverConfig) -> Result<(Self, StatsReceiver), DriverError> {
        if let Some(dir) = config.journal.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "couldn't create the state directory");
            }
        }
        recover(&config)?;
        let udp = datapath::bind_udp(config.listen_port).map_err(DriverError::Udp)?;
        let port = udp.local_addr().map_err(DriverError::Udp)?.port();
        tracing::info!(port, "WireGuard socket bound");
        let tun_name = config.tun_name.clone();
        let dns_mode = config.dns_mode;
        let resolv_conf = config.resolv_conf.clone();
        let (stats_tx, stats_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut running: Option<TunnelHandle> = None;
            while let Some(command) = rx.recv().await {
                match command {
                    TunnelCommand::Up {
                        secret,
                        plan,
                        peers,
                        names,
                    } => {
                        if let Some(old) = running.take() {
                            old.stop().await;
                        }
                        let started =
                            start(&config, &udp, secret, &plan, peers, names, stats_tx.clone())
                                .await;
                        let report = match started {
                            Ok((handle, note)) => {
                                running = Some(handle);
                                Report::Tunnel(TunnelState::Up, note)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the tunnel could not start");
                                Report::Tunnel(TunnelState::Failed, Some(e.to_string()))
                            }
                        };
                        let _ = stats_tx.send(report);
                    }
                    TunnelCommand::Directory { peers, names } => {
                        if let Some(handle) = &running {
                            handle.set_peers(peers);
                            handle.set_names(names);
                        }
                    }
                    TunnelCommand::ReportStats => {
                        if let Some(handle) = &running {
                            handle.report_stats();
                        }
                    }
                    TunnelCommand::Ping(req) => match &running {
                        Some(handle) => handle.ping(req),
                        None => {
                            let _ = req.reply.send(Err(PingError::TunnelDown));
                        }
                    },
                    TunnelCommand::Down(done) => {
                        if let Some(old) = running.take() {
                            old.stop().await;
                        }
                        let _ = stats_tx.send(Report::Tunnel(TunnelState::Down, None));
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
            stats_rx,
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
        self.send(TunnelCommand::Down(Some(tx)));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await;
    }
}

/// Where agents can reach this device's WireGuard socket: every address of
/// an interface that is up, except loopback, link-local, multicast and the
/// tunnel's own.
pub fn local_endpoints(port: u16, tun_name: &str) -> Vec<SocketAddr> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces,
        Err(e) => {
            tracing::warn!(error = %e, "couldn't list this device's addresses");
            return Vec::new();
        }
    };
    let mut out: Vec<SocketAddr> = interfaces
        .iter()
        .filter(|ifa| ifa.name != tun_name && ifa.is_oper_up() && usable_endpoint(ifa.ip()))
        .map(|ifa| SocketAddr::new(ifa.ip(), port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an agent elsewhere could send to `ip`.
fn usable_endpoint(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_multicast() || v6.is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, key: Option<String>, addrs: &[&str], eps: &[&str]) -> Agent {
        Agent {
            id: name.to_string(),
            name: name.to_string(),
            workspace_id: "ws".to_string(),
            public_key: key,
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
            dns_names: vec![],
            online: true,
        }
    }

    #[test]
    fn prefixes_parse_and_reject_nonsense() {
        assert_eq!(
            parse_prefix("100.64.0.0/10").unwrap(),
            ("100.64.0.0".parse().unwrap(), 10)
        );
        assert_eq!(
            parse_prefix("fd12:3456:789a::/48").unwrap(),
            ("fd12:3456:789a::".parse().unwrap(), 48)
        );
        for bad in [
            "100.64.0.0",
            "100.64.0.0/33",
            "0.0.0.0/0",
            "x/8",
            "fd00::/129",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn plan_has_host_addresses_and_only_the_deployment_routes() {
        let device = DeviceInfo {
            id: "d".into(),
            public_key: "k".into(),
            addresses: vec![
                "100.64.0.7".parse().unwrap(),
                "fd12:3456:789a::7".parse().unwrap(),
            ],
            endpoints: vec![],
        };
        let deployment = DeploymentInfo {
            suffix: "warren".into(),
            ipv4_prefix: "100.64.0.0/10".into(),
            ipv6_prefix: "fd12:3456:789a::/48".into(),
        };
        let plan = net_plan("warren0", &device, &deployment, None).unwrap();
        assert_eq!(plan.mtu, 1280);
        assert_eq!(
            plan.addresses,
            vec![
                ("100.64.0.7".parse().unwrap(), 32),
                ("fd12:3456:789a::7".parse().unwrap(), 128)
            ]
        );
        assert_eq!(
            plan.routes,
            vec![
                ("100.64.0.0".parse().unwrap(), 10),
                ("fd12:3456:789a::".parse().unwrap(), 48)
            ]
        );
        plan.validate().unwrap();

        let empty = DeviceInfo {
            addresses: vec![],
            ..device
        };
        assert!(matches!(
            net_plan("warren0", &empty, &deployment, None),
            Err(DriverError::NoAddress)
        ));
    }

    #[test]
    fn peers_come_from_agents_with_a_valid_key_and_address() {
        use base64::Engine as _;
        let key = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let agents = [
            agent(
                "good",
                Some(b64.clone()),
                &["100.64.0.9", "fd12::9"],
                &["10.1.0.2:51820", "[fd00::2]:51820"],
            ),
            agent("unregistered", None, &["100.64.0.10"], &[]),
            agent("badkey", Some("not-a-key".into()), &["100.64.0.11"], &[]),
            agent("short", Some("AAAA".into()), &["100.64.0.12"], &[]),
            agent("noaddr", Some(b64.clone()), &[], &[]),
        ];
        let peers = peer_configs(&agents);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].public_key, key);
        assert_eq!(peers[0].addresses.len(), 2);
        assert_eq!(peers[0].endpoint, Some("10.1.0.2:51820".parse().unwrap()));
    }

    #[test]
    fn endpoints_skip_loopback_link_local_and_multicast() {
        for ok in ["10.1.0.2", "192.168.1.4", "2001:db8::1", "fd00::5"] {
            assert!(usable_endpoint(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "ff02::1",
            "::",
        ] {
            assert!(!usable_endpoint(bad.parse().unwrap()), "{bad}");
        }
        // Whatever this machine has, none of it is loopback or the TUN.
        for ep in local_endpoints(51820, "lo") {
            assert!(usable_endpoint(ep.ip()), "{ep}");
            assert_eq!(ep.port(), 51820);
        }
    }
}
