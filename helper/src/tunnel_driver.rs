//! The helper's data-plane driver: a thin tokio loop that connects the
//! sans-IO [`warren_tunnel::Tunnel`] to the TUN device (configured through
//! `warren-netcfg`) and one dual-stack UDP socket.
//!
//! All WireGuard logic (routing, handshakes, timers, counters) lives in
//! `warren-tunnel`; this module only translates the session's facts into a
//! [`NetPlan`] and [`PeerConfig`]s and moves bytes. It is only started when
//! `warrend` runs with `--tunnel`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use warren_netcfg::{NetConfig, NetPlan, TunDevice, DEFAULT_MTU};
use warren_proto::ipc::DeviceInfo;
use warren_proto::model::{Agent, DeploymentInfo};
use warren_tunnel::{min_out_len, PeerConfig, StaticSecret, Tunnel};

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
    Ok(NetPlan {
        tun_name: tun_name.to_string(),
        mtu: DEFAULT_MTU,
        addresses,
        routes,
    })
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
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The UDP address the socket is bound to.
    pub local_addr: SocketAddr,
}

impl TunnelHandle {
    /// Replaces the peer table (a directory snapshot or after any diff).
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        self.peers.send_replace(peers);
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

/// Configures the OS, opens the socket and starts the loop.
pub fn start(
    config: &DriverConfig,
    secret: StaticSecret,
    plan: &NetPlan,
    peers: Vec<PeerConfig>,
) -> Result<TunnelHandle, DriverError> {
    let mut net = warren_netcfg::platform_configurator(&config.journal)?;
    let tun = net.apply(plan)?;
    let udp = match bind_udp(config.listen_port) {
        Ok(s) => s,
        Err(e) => {
            if let Err(t) = net.teardown() {
                tracing::warn!(error = %t, "couldn't undo the tunnel configuration");
            }
            return Err(DriverError::Udp(e));
        }
    };
    let local_addr = udp.local_addr().map_err(DriverError::Udp)?;
    let mut tunnel = Tunnel::new(secret);
    if let Err(e) = tunnel.set_peers(Instant::now(), peers.clone()) {
        tracing::warn!(error = %e, "some agents could not be added to the tunnel");
    }
    let (peers_tx, peers_rx) = watch::channel(peers);
    let (stop_tx, stop_rx) = oneshot::channel();
    tracing::info!(%local_addr, "tunnel data plane started");
    let task = tokio::spawn(async move {
        run(tunnel, tun, udp, peers_rx, stop_rx).await;
        match net.teardown() {
            Ok(()) => tracing::info!("tunnel data plane stopped, network configuration undone"),
            Err(e) => {
                tracing::warn!(error = %e, "couldn't undo all of the tunnel configuration; the next start will retry")
            }
        }
    });
    Ok(TunnelHandle {
        peers: peers_tx,
        stop: Some(stop_tx),
        task: Some(task),
        local_addr,
    })
}

/// What the engine asks of the data plane. Carried out in order by one
/// manager task, so the engine never waits for the OS.
pub enum TunnelCommand {
    /// Bring the tunnel up with this key and plan (restarting it if it runs).
    Up {
        secret: StaticSecret,
        plan: NetPlan,
        peers: Vec<PeerConfig>,
    },
    /// Replace the peer table of the running tunnel.
    Peers(Vec<PeerConfig>),
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
            TunnelCommand::Peers(peers) => f.debug_tuple("Peers").field(&peers.len()).finish(),
            TunnelCommand::Down(_) => f.write_str("Down"),
        }
    }
}

/// The engine's and `main`'s handle on the manager task.
#[derive(Debug, Clone)]
pub struct TunnelManager {
    tx: mpsc::UnboundedSender<TunnelCommand>,
    tun_name: String,
}

impl TunnelManager {
    /// Recovers leftovers of a dead predecessor, then starts the manager.
    pub fn spawn(config: DriverConfig) -> Result<Self, DriverError> {
        if let Some(dir) = config.journal.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "couldn't create the state directory");
            }
        }
        recover(&config)?;
        let tun_name = config.tun_name.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut running: Option<TunnelHandle> = None;
            while let Some(command) = rx.recv().await {
                match command {
                    TunnelCommand::Up {
                        secret,
                        plan,
                        peers,
                    } => {
                        if let Some(old) = running.take() {
                            old.stop().await;
                        }
                        match start(&config, secret, &plan, peers) {
                            Ok(handle) => running = Some(handle),
                            Err(e) => tracing::error!(error = %e, "the tunnel could not start"),
                        }
                    }
                    TunnelCommand::Peers(peers) => {
                        if let Some(handle) = &running {
                            handle.set_peers(peers);
                        }
                    }
                    TunnelCommand::Down(done) => {
                        if let Some(old) = running.take() {
                            old.stop().await;
                        }
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
        Ok(TunnelManager { tx, tun_name })
    }

    /// The TUN name the plans should use.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// Queues a command; never waits.
    pub fn send(&self, command: TunnelCommand) {
        if self.tx.send(command).is_err() {
            tracing::warn!("the tunnel manager has stopped");
        }
    }

    /// Stops the tunnel and waits (bounded) until the OS is restored.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(TunnelCommand::Down(Some(tx)));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rx).await;
    }
}

/// One socket for both families: `[::]:port` with IPV6_V6ONLY off.
fn bind_udp(port: u16) -> std::io::Result<UdpSocket> {
    let std_sock =
        std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))?;
    std_sock.set_nonblocking(true)?;
    UdpSocket::from_std(std_sock)
}

/// IPv4 peers are reached through the dual-stack socket as v4-mapped
/// addresses, and their datagrams arrive that way; the table speaks plain v4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn to_socket(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        SocketAddr::V6(_) => addr,
    }
}

async fn send(udp: &UdpSocket, dst: SocketAddr, payload: &[u8]) {
    if let Err(e) = udp.send_to(payload, to_socket(dst)).await {
        tracing::debug!(%dst, error = %e, "UDP send failed");
    }
}

async fn flush(tunnel: &mut Tunnel, udp: &UdpSocket) {
    while let Some(t) = tunnel.poll_transmit() {
        send(udp, t.dst, &t.payload).await;
    }
    while let Some(e) = tunnel.poll_event() {
        tracing::debug!(event = ?e, "tunnel event");
    }
}

async fn run(
    mut tunnel: Tunnel,
    tun: TunDevice,
    udp: UdpSocket,
    mut peers: watch::Receiver<Vec<PeerConfig>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tun_buf = vec![0u8; 65536];
    let mut udp_buf = vec![0u8; 65536];
    let mut out = vec![0u8; min_out_len(65536)];
    flush(&mut tunnel, &udp).await;
    loop {
        let deadline = tunnel.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            read = tun.recv(&mut tun_buf) => match read {
                Ok(n) if n > 0 => {
                    let n = n.min(tun_buf.len());
                    match tunnel.encapsulate(Instant::now(), &tun_buf[..n], &mut out) {
                        Ok(Some(t)) => {
                            let dst = t.dst;
                            let len = t.payload.len();
                            send(&udp, dst, &out[..len]).await;
                        }
                        Ok(None) => {}
                        Err(reason) => tracing::trace!(%reason, "outbound packet dropped"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading from the TUN failed; stopping the data plane");
                    break;
                }
            },
            recv = udp.recv_from(&mut udp_buf) => match recv {
                Ok((n, from)) => {
                    match tunnel.decapsulate(Instant::now(), unmap(from), &udp_buf[..n], &mut out) {
                        Ok(Some(packet)) => {
                            if let Err(e) = tun.send(packet).await {
                                tracing::debug!(error = %e, "writing to the TUN failed");
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => tracing::trace!(%reason, "datagram dropped"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            changed = peers.changed() => {
                if changed.is_err() {
                    break;
                }
                let list = peers.borrow_and_update().clone();
                if let Err(e) = tunnel.set_peers(Instant::now(), list) {
                    tracing::warn!(error = %e, "some agents could not be added to the tunnel");
                }
            }
            _ = sleep => tunnel.handle_timeout(Instant::now()),
        }
        flush(&mut tunnel, &udp).await;
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
        };
        let deployment = DeploymentInfo {
            suffix: "warren".into(),
            ipv4_prefix: "100.64.0.0/10".into(),
            ipv6_prefix: "fd12:3456:789a::/48".into(),
        };
        let plan = net_plan("warren0", &device, &deployment).unwrap();
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
            net_plan("warren0", &empty, &deployment),
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
    fn v4_endpoints_round_trip_through_the_dual_stack_socket() {
        let v4: SocketAddr = "10.1.0.2:51820".parse().unwrap();
        let mapped = to_socket(v4);
        assert!(mapped.is_ipv6());
        assert_eq!(unmap(mapped), v4);
        let v6: SocketAddr = "[fd00::2]:51820".parse().unwrap();
        assert_eq!(to_socket(v6), v6);
        assert_eq!(unmap(v6), v6);
    }

    #[tokio::test]
    async fn dual_stack_socket_binds_an_os_chosen_port() {
        let sock = bind_udp(0).unwrap();
        let addr = sock.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // A v4 loopback sender reaches it through the v4-mapped path.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"ping", ("127.0.0.1", addr.port())).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(unmap(from), sender.local_addr().unwrap());
    }
}
