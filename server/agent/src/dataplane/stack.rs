//! The sans-IO heart of the agent's data plane: a WireGuard peer table
//! (`warren_tunnel::Tunnel`) in front of a userspace TCP/IP stack (smoltcp)
//! that owns the agent's tunnel addresses.
//!
//! Datagrams go in through [`WorkspaceStack::handle_datagram`], timers through
//! [`WorkspaceStack::handle_timeout`]; datagrams to send come out of
//! [`WorkspaceStack::poll_transmit`] and accepted connections out of
//! [`WorkspaceStack::poll_event`]. Nothing here reads a clock or does IO.
//!
//! smoltcp answers ICMP and ICMPv6 echo requests to the tunnel addresses by
//! itself and answers a SYN to a port nobody listens on with a RST, which is
//! exactly the refusal `--allow-ports` promises. Each allowed port has one
//! listening socket; it is replaced by a fresh one after every single ingress
//! packet, so back-to-back SYNs to one port each find a listener.

use super::device::{QueueDevice, TUNNEL_MTU};
use super::DataplaneError;
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::{debug, trace};
use warren_path::{Incoming, Path, PathEvent, Paths, RelayServer, Role, Route};
use warren_tunnel::{
    min_out_len, ConfigError, Counters, OwnedTransmit, PeerConfig, PeerKey, StaticSecret, Tunnel,
    TunnelEvent, MIN_BUFFER,
};

/// Receive and send buffer of each TCP connection. Bounded, so a slow local
/// service or a slow laptop pushes back through the TCP window instead of
/// growing memory.
pub const TCP_BUFFER: usize = 128 * 1024;

/// Idle time after which a tunnel connection is probed.
const KEEPALIVE_SECS: u64 = 60;
/// Time without an answer after which a tunnel connection is dropped.
const DEAD_PEER_SECS: u64 = 180;

/// Largest datagram the stack accepts from the network.
const MAX_DATAGRAM: usize = 65_535;

/// One TCP connection accepted on the tunnel side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(SocketHandle);

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackEvent {
    /// A peer opened a TCP connection to an allowed port; connect to
    /// `127.0.0.1:port` and bridge.
    NewConnection {
        /// The tunnel-side connection.
        conn: ConnectionId,
        /// The port the peer connected to (and the local port to use).
        port: u16,
        /// The peer's tunnel address and port.
        remote: SocketAddr,
    },
    /// A tunnel event worth reporting (handshakes, roaming, expiry).
    Tunnel(TunnelEvent),
    /// The path layer's candidates changed: announce them to the
    /// coordinator.
    Candidates(Vec<SocketAddr>),
    /// The network may have changed: read the host candidates again and
    /// pass them to [`WorkspaceStack::set_host_candidates`].
    RecheckNetwork,
}

/// What the stack needs to start.
pub struct StackConfig {
    /// The agent's WireGuard private key.
    pub private_key: StaticSecret,
    /// The agent's tunnel addresses from the coordinator's `Welcome`: at most
    /// one IPv4 and one IPv6 address are used.
    pub addresses: Vec<IpAddr>,
    /// TCP ports forwarded to `127.0.0.1:<port>`; SYNs to others get a RST.
    pub allow_ports: Vec<u16>,
}

impl std::fmt::Debug for StackConfig {
    // The private key is left out on purpose: it must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackConfig")
            .field("addresses", &self.addresses)
            .field("allow_ports", &self.allow_ports)
            .finish_non_exhaustive()
    }
}

/// The agent's tunnel endpoint and userspace TCP/IP stack.
pub struct WorkspaceStack {
    tunnel: Tunnel,
    /// Which way each device's datagrams go (checks, relays).
    paths: Paths,
    path_peers: HashSet<PeerKey>,
    wrapped: Vec<u8>,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    listeners: Vec<(u16, SocketHandle)>,
    connections: HashMap<SocketHandle, u16>,
    events: VecDeque<StackEvent>,
    transmits: VecDeque<OwnedTransmit>,
    epoch: Instant,
    /// The latest `now` seen, for poll_timeout (which takes no clock).
    now: Instant,
    decap_buf: Vec<u8>,
    encap_buf: Vec<u8>,
    /// The path layer's wake-up as last handed out.
    paths_due: Option<Instant>,
}

impl std::fmt::Debug for WorkspaceStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceStack")
            .field("listeners", &self.listeners.len())
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl WorkspaceStack {
    /// Builds the stack. `now` is the driver's clock (`Instant::now()`).
    pub fn new(now: Instant, config: StackConfig) -> Result<Self, DataplaneError> {
        let v4 = config.addresses.iter().find(|a| a.is_ipv4()).copied();
        let v6 = config.addresses.iter().find(|a| a.is_ipv6()).copied();
        if v4.is_none() && v6.is_none() {
            return Err(DataplaneError::NoAddresses);
        }
        let mut device = QueueDevice::new();
        let mut iface_config = Config::new(HardwareAddress::Ip);
        // Fixed under fuzzing, so a finding replays byte for byte.
        iface_config.random_seed = if cfg!(fuzzing) { 0 } else { rand::random() };
        let mut iface = Interface::new(iface_config, &mut device, SmolInstant::ZERO);
        iface.update_ip_addrs(|addrs| {
            // Capacity is smoltcp's IFACE_MAX_ADDR_COUNT (2): one address per
            // family fits by construction, so a failed push cannot happen.
            for addr in [v4, v6].into_iter().flatten() {
                let prefix = if addr.is_ipv4() { 32 } else { 128 };
                let _ = addrs.push(IpCidr::new(IpAddress::from(addr), prefix));
            }
        });
        // Peers' addresses are in no subnet of ours; with an IP-medium device
        // the gateway is never used, but smoltcp needs a route to send at all.
        if let Some(IpAddr::V4(a)) = v4 {
            let _ = iface.routes_mut().add_default_ipv4_route(a);
        }
        if let Some(IpAddr::V6(a)) = v6 {
            let _ = iface.routes_mut().add_default_ipv6_route(a);
        }
        let paths = Paths::new(Role::Agent, config.private_key.to_bytes());
        let mut tunnel = Tunnel::new(config.private_key);
        // Only what smoltcp answers on may come out of the tunnel: a device
        // addressing anything else is dropped by the table, counted.
        tunnel.set_local_addresses([v4, v6].into_iter().flatten());
        let mut stack = Self {
            paths,
            path_peers: HashSet::new(),
            wrapped: Vec::with_capacity(2048),
            tunnel,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            listeners: Vec::new(),
            connections: HashMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            epoch: now,
            now,
            paths_due: None,
            decap_buf: vec![0; MAX_DATAGRAM.max(MIN_BUFFER)],
            encap_buf: vec![0; min_out_len(TUNNEL_MTU).max(MIN_BUFFER)],
        };
        let mut ports = config.allow_ports;
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            if port == 0 {
                return Err(DataplaneError::BadPort);
            }
            let handle = stack.listen(port)?;
            stack.listeners.push((port, handle));
        }
        Ok(stack)
    }

    /// The tunnel addresses the stack answers on.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.iface
            .ip_addrs()
            .iter()
            .map(|cidr| IpAddr::from(cidr.address()))
            .collect()
    }

    /// This agent's WireGuard public key.
    pub fn public_key(&self) -> PeerKey {
        self.tunnel.public_key()
    }

    /// Replaces the peer table (a snapshot): peers not named are removed and
    /// can no longer reach the agent.
    pub fn set_peers(
        &mut self,
        now: Instant,
        peers: impl IntoIterator<Item = PeerConfig>,
    ) -> Result<(), ConfigError> {
        let peers: Vec<PeerConfig> = peers.into_iter().collect();
        let keys: HashSet<PeerKey> = peers.iter().map(|p| p.public_key).collect();
        for gone in self.path_peers.difference(&keys) {
            self.paths.remove_peer(gone);
        }
        for peer in &peers {
            self.paths
                .upsert_peer(now, peer.public_key, &peer.candidates);
        }
        self.path_peers = keys;
        let result = self.tunnel.set_peers(now, peers);
        self.drain_tunnel(now);
        result
    }

    /// This machine's addresses for the WireGuard socket (host candidates).
    pub fn set_host_candidates(&mut self, now: Instant, host: Vec<SocketAddr>) {
        self.paths.set_host_candidates(now, host);
        self.drain_tunnel(now);
    }

    /// The coordinator's TURN relays with fresh credentials.
    pub fn set_relays(&mut self, now: Instant, relays: Vec<RelayServer>) {
        self.paths.set_relays(now, relays);
        self.drain_tunnel(now);
    }

    /// How a device's datagrams travel, as a person would see it.
    pub fn path_info(&self, key: &PeerKey) -> Option<warren_path::PathInfo> {
        self.paths.path_info(key)
    }

    /// Handles one UDP datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.queue_datagram(now, from, datagram);
        self.poll(now);
    }

    /// Decrypts one datagram without running the TCP/IP stack yet: for a
    /// batch of datagrams, queue each and then call
    /// [`WorkspaceStack::poll`] once.
    pub fn queue_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let (from, datagram) = match self.paths.handle_datagram(now, from, datagram) {
            Incoming::WireGuard { from, payload } => (from, payload),
            Incoming::Handled => return,
            Incoming::Dropped(why) => {
                trace!(%from, why, "dropped a datagram");
                return;
            }
        };
        match self
            .tunnel
            .decapsulate(now, from, &datagram, &mut self.decap_buf)
        {
            Ok(Some(packet)) => self.device.rx.push_back(packet.to_vec()),
            Ok(None) => {}
            Err(reason) => trace!(%from, %reason, "dropped a datagram"),
        }
    }

    /// An IP packet as if the tunnel had just decrypted it from a device:
    /// the `agent_tun` fuzz target's way into the TCP/IP stack without a
    /// handshake per input (the tunnel's own checks have a target of their
    /// own, `wireguard_peers`).
    #[cfg(fuzzing)]
    pub fn fuzz_packet_from_tunnel(&mut self, now: Instant, packet: &[u8]) {
        self.device.rx.push_back(packet.to_vec());
        self.poll(now);
    }

    /// Runs the tunnel's and the TCP/IP stack's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tunnel.handle_timeout(now);
        if self.paths_due.is_some_and(|t| t <= now) {
            self.paths.handle_timeout(now);
        }
        self.poll(now);
    }

    /// When [`WorkspaceStack::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.paths_due = self.paths.poll_timeout();
        let tunnel = match (self.tunnel.poll_timeout(), self.paths_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ts = self.smol_now(self.last_now());
        let stack = self
            .iface
            .poll_at(ts, &self.sockets)
            .map(|at| self.epoch + Duration::from_micros(at.total_micros().max(0) as u64));
        match (tunnel, stack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<StackEvent> {
        self.events.pop_front()
    }

    /// Moves packets the sockets produced (after reads, writes and closes)
    /// out to the tunnel. Call after a batch of connection calls.
    pub fn poll(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let ts = self.smol_now(now);
        loop {
            let result = self
                .iface
                .poll_ingress_single(ts, &mut self.device, &mut self.sockets);
            self.rearm();
            if result == PollIngressSingleResult::None {
                break;
            }
        }
        self.iface
            .poll_egress(ts, &mut self.device, &mut self.sockets);
        self.rearm();
        while let Some(packet) = self.device.tx.pop_front() {
            match self.tunnel.encapsulate(now, &packet, &mut self.encap_buf) {
                Ok(Some(t)) => {
                    let transmit = match self.paths.route(now, t.dst, t.payload, &mut self.wrapped)
                    {
                        Route::Direct => OwnedTransmit {
                            dst: t.dst,
                            payload: t.payload.to_vec(),
                        },
                        Route::Relay(server) => OwnedTransmit {
                            dst: server,
                            payload: self.wrapped.clone(),
                        },
                    };
                    self.transmits.push_back(transmit);
                }
                Ok(None) => {}
                Err(reason) => trace!(%reason, "dropped an outgoing packet"),
            }
        }
        self.drain_tunnel(now);
    }

    /// Copies received bytes into `buf`; 0 when nothing is buffered.
    pub fn recv(&mut self, conn: ConnectionId, buf: &mut [u8]) -> usize {
        let socket = self.sockets.get_mut::<tcp::Socket>(conn.0);
        socket.recv_slice(buf).unwrap_or(0)
    }

    /// Bytes waiting to be read.
    pub fn recv_queue(&self, conn: ConnectionId) -> usize {
        self.sockets.get::<tcp::Socket>(conn.0).recv_queue()
    }

    /// Whether the peer finished sending (FIN or reset) and everything it
    /// sent has been read.
    pub fn recv_finished(&self, conn: ConnectionId) -> bool {
        let socket = self.sockets.get::<tcp::Socket>(conn.0);
        !socket.may_recv() && socket.recv_queue() == 0 && socket.state() != tcp::State::SynReceived
    }

    /// Queues bytes to send; returns how many fit in the send buffer.
    pub fn send(&mut self, conn: ConnectionId, data: &[u8]) -> usize {
        let socket = self.sockets.get_mut::<tcp::Socket>(conn.0);
        socket.send_slice(data).unwrap_or(0)
    }

    /// Room left in the send buffer (0 when the connection can't send).
    pub fn send_capacity(&self, conn: ConnectionId) -> usize {
        let socket = self.sockets.get::<tcp::Socket>(conn.0);
        if socket.may_send() || socket.state() == tcp::State::SynReceived {
            socket.send_capacity() - socket.send_queue()
        } else {
            0
        }
    }

    /// Sends a FIN once the queued bytes are out.
    pub fn close(&mut self, conn: ConnectionId) {
        self.sockets.get_mut::<tcp::Socket>(conn.0).close();
    }

    /// Resets the connection (the local service refused or failed).
    pub fn abort(&mut self, conn: ConnectionId) {
        self.sockets.get_mut::<tcp::Socket>(conn.0).abort();
    }

    /// Whether the connection is over (both sides closed, reset, or timed
    /// out) and can be released.
    pub fn is_closed(&self, conn: ConnectionId) -> bool {
        matches!(
            self.sockets.get::<tcp::Socket>(conn.0).state(),
            // A half-open connection that got a RST goes back to Listen.
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
        )
    }

    /// Forgets a connection; a later packet for it gets a RST.
    pub fn release(&mut self, conn: ConnectionId) {
        if self.connections.remove(&conn.0).is_some() {
            self.sockets.remove(conn.0);
        }
    }

    /// Open connections on the tunnel side.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// The tunnel's drop counters.
    pub fn counters(&self) -> Counters {
        self.tunnel.counters()
    }

    /// The tunnel's statistics for one peer.
    pub fn peer_stats(&self, key: &PeerKey) -> Option<warren_tunnel::PeerStats> {
        self.tunnel.peer_stats(key)
    }

    fn listen(&mut self, port: u16) -> Result<SocketHandle, DataplaneError> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        socket.listen(port).map_err(|_| DataplaneError::BadPort)?;
        // Bulk transfers: don't hold small writes back.
        socket.set_nagle_enabled(false);
        // A laptop that vanished (sleep, network change, new session key)
        // never sends its FIN; probe idle connections and drop the ones
        // that stop answering, so they cannot pile up.
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(KEEPALIVE_SECS)));
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(DEAD_PEER_SECS)));
        Ok(self.sockets.add(socket))
    }

    /// Turns listeners that took a SYN into connections and puts fresh
    /// listeners in their place.
    fn rearm(&mut self) {
        for i in 0..self.listeners.len() {
            let (port, handle) = self.listeners[i];
            let socket = self.sockets.get::<tcp::Socket>(handle);
            if socket.state() == tcp::State::Listen {
                continue;
            }
            let remote = socket
                .remote_endpoint()
                .map(endpoint_to_std)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            // listen() only fails for port 0 or an open socket; the port was
            // accepted when the first listener was made and this socket is new.
            match self.listen(port) {
                Ok(fresh) => self.listeners[i] = (port, fresh),
                Err(_) => continue,
            }
            debug!(port, %remote, "new tunnel connection");
            self.connections.insert(handle, port);
            self.events.push_back(StackEvent::NewConnection {
                conn: ConnectionId(handle),
                port,
                remote,
            });
        }
    }

    /// Moves what the tunnel and the path layer produced out: datagrams
    /// along each device's path, path decisions into the tunnel, events to
    /// the driver.
    fn drain_tunnel(&mut self, now: Instant) {
        // Bounded: a path change makes the tunnel send, which the path
        // layer routes, but only a few rounds deep.
        for _ in 0..8 {
            let mut progressed = false;
            while let Some(t) = self.tunnel.poll_transmit() {
                progressed = true;
                let t = match self.paths.route(now, t.dst, &t.payload, &mut self.wrapped) {
                    Route::Direct => t,
                    Route::Relay(server) => OwnedTransmit {
                        dst: server,
                        payload: self.wrapped.clone(),
                    },
                };
                self.transmits.push_back(t);
            }
            while let Some(e) = self.tunnel.poll_event() {
                self.events.push_back(StackEvent::Tunnel(e));
            }
            while let Some(event) = self.paths.poll_event() {
                progressed = true;
                match event {
                    PathEvent::Candidates(c) => self.events.push_back(StackEvent::Candidates(c)),
                    PathEvent::RecheckNetwork => self.events.push_back(StackEvent::RecheckNetwork),
                    // The new candidates (announced through the coordinator
                    // link) are what the devices need.
                    PathEvent::NetworkChanged => {}
                    PathEvent::PathChanged { peer, path } => {
                        if let Path::Direct { remote } | Path::Relayed { remote, .. } = path {
                            self.tunnel.set_path_endpoint(now, &peer, remote);
                        }
                    }
                }
            }
            while let Some(t) = self.paths.poll_transmit() {
                progressed = true;
                self.transmits.push_back(OwnedTransmit {
                    dst: t.dst,
                    payload: t.payload,
                });
            }
            if !progressed {
                break;
            }
        }
    }

    fn smol_now(&self, now: Instant) -> SmolInstant {
        SmolInstant::from_micros(now.saturating_duration_since(self.epoch).as_micros() as i64)
    }

    fn last_now(&self) -> Instant {
        self.now
    }
}

fn endpoint_to_std(e: IpEndpoint) -> SocketAddr {
    SocketAddr::new(IpAddr::from(e.addr), e.port)
}
