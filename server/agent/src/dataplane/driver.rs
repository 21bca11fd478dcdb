//! The tokio driver around [`WorkspaceStack`]: one UDP socket for WireGuard
//! (IPv6 and IPv4 when the host allows), and for every accepted tunnel
//! connection a task that connects to `127.0.0.1:<port>` and bridges bytes.
//! The socket is `warren-io`'s, the helper's too: many datagrams per
//! receive call (`recvmmsg`, GRO) and runs of datagrams to one peer in one
//! send (GSO).
//!
//! Backpressure: each direction of a connection holds at most
//! [`CHANNEL_CHUNKS`] chunks of [`CHUNK`] bytes in flight between the stack
//! and the local socket, plus the stack's own bounded TCP buffers. When a
//! side stops reading, the other side's TCP window closes; nothing grows.

use super::stack::{ConnectionId, StackConfig, StackEvent, WorkspaceStack};
use super::{peer_config, DataplaneError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use warren_io::{bind_udp, RecvBatch, TxBatch, UdpBatch};
use warren_path::RelayServer;
use warren_proto::control::ClientPeer;
use warren_tunnel::{key_id, TunnelEvent};

use super::device::TUNNEL_MTU;

/// Bytes moved per chunk between the stack and a local socket.
pub const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction of one connection.
pub const CHANNEL_CHUNKS: usize = 4;
/// How long a local connect may take before the tunnel side is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Open forwarded connections at most; each holds two bounded TCP buffers
/// and a task, so this caps the agent's memory whatever peers do.
const MAX_CONNECTIONS: usize = 1024;
/// Receive calls per wake-up before the connections get their turn (each
/// takes up to `warren_io::UDP_RECV_MESSAGES` buffers of possibly many
/// coalesced datagrams).
const RECV_CALLS: usize = 4;
/// Datagrams the stack's output is gathered into before it is sent.
const TX_BATCH: usize = 64;

/// The data plane's UDP socket, bound but not yet running. Bind it before
/// registering with the coordinator (its port is the endpoint to announce);
/// run it once the `Welcome` has named the tunnel addresses.
pub struct Dataplane {
    udp: UdpBatch,
    /// How many peer lists the running stack has applied (the first one
    /// included), for whoever must know a new list is in force.
    applied: watch::Sender<u64>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("local_addr", &self.udp.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// What a local connection's task tells the driver.
enum FromLocal {
    Data(Vec<u8>),
    Eof,
    Failed,
}

struct Conn {
    to_local: Option<mpsc::Sender<Vec<u8>>>,
    from_local: mpsc::Receiver<FromLocal>,
    pending: Vec<u8>,
    pending_off: usize,
    local_eof: bool,
    closing: bool,
    task: JoinHandle<()>,
}

/// How the data plane's path layer talks to the control side: relays in,
/// candidates out.
#[derive(Debug)]
pub struct PathWiring {
    /// The coordinator's TURN relays, latest list.
    pub relays: watch::Receiver<Vec<RelayServer>>,
    /// The path layer's candidates, to announce to the coordinator.
    pub candidates: watch::Sender<Vec<SocketAddr>>,
    /// Host candidates given on the command line (`--endpoint`); empty:
    /// read them from the interfaces.
    pub endpoints: Vec<SocketAddr>,
}

impl Dataplane {
    /// Opens the WireGuard UDP socket on `listen_port` (0 picks a free
    /// one): dual-stack IPv6 + IPv4 where the host allows, else IPv4 only.
    pub async fn bind(listen_port: u16) -> Result<Self, DataplaneError> {
        let port = listen_port;
        let bind_error = |source| DataplaneError::Bind { port, source };
        let socket =
            UdpSocket::from_std(bind_udp(port).map_err(bind_error)?).map_err(bind_error)?;
        let udp = UdpBatch::new(socket).map_err(bind_error)?;
        Ok(Self {
            udp,
            applied: watch::channel(0).0,
        })
    }

    /// Counts the peer lists the data plane has applied: once it reads `n`,
    /// the `n`th list sent to [`Dataplane::run`] is in force.
    pub fn peer_lists_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Where the WireGuard socket listens (to announce as an endpoint).
    pub fn local_addr(&self) -> Result<SocketAddr, DataplaneError> {
        self.udp.local_addr().map_err(DataplaneError::Io)
    }

    /// Builds the stack and runs until `peers`' sender is dropped. Every
    /// value on `peers` is the complete list of client devices the
    /// coordinator authorizes (apply `PeerUpdate`s to a `PeerTable` first and
    /// send its contents).
    pub async fn run(
        self,
        config: StackConfig,
        peers: watch::Receiver<Vec<ClientPeer>>,
    ) -> Result<(), DataplaneError> {
        self.run_with_paths(config, peers, None).await
    }

    /// [`Dataplane::run`] with the path layer wired to the coordinator:
    /// TURN relays come in, candidates go out.
    pub async fn run_with_paths(
        self,
        config: StackConfig,
        mut peers: watch::Receiver<Vec<ClientPeer>>,
        wiring: Option<PathWiring>,
    ) -> Result<(), DataplaneError> {
        let Self { mut udp, applied } = self;
        let mut stack = WorkspaceStack::new(Instant::now(), config)?;
        let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
        let host_candidates = |wiring: &PathWiring| {
            if wiring.endpoints.is_empty() {
                warren_io::local_endpoints(port, None)
            } else {
                wiring.endpoints.clone()
            }
        };
        let (mut relays, candidates) = match wiring {
            Some(mut wiring) => {
                let now = Instant::now();
                stack.set_host_candidates(now, host_candidates(&wiring));
                let list = wiring.relays.borrow_and_update().clone();
                stack.set_relays(now, list);
                (Some(wiring.relays.clone()), Some(wiring))
            }
            None => (None, None),
        };
        info!(
            addresses = ?stack.addresses(),
            local = ?udp.local_addr().ok(),
            udp_gso_segments = udp.max_segments(),
            udp_gro = udp.gro(),
            "data plane running"
        );
        let notify = Arc::new(Notify::new());
        let mut conns: HashMap<ConnectionId, Conn> = HashMap::new();
        let mut refused: Vec<ConnectionId> = Vec::new();
        let mut rx = RecvBatch::new();
        let mut tx = TxBatch::new(TX_BATCH, TUNNEL_MTU);
        let initial = peers.borrow_and_update().clone();
        apply_peers(&mut stack, &initial);
        applied.send_modify(|n| *n += 1);
        loop {
            let deadline = stack.poll_timeout();
            let sleep = tokio::time::sleep_until(
                deadline
                    .map(tokio::time::Instant::from_std)
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                received = udp.recv(&mut rx) => {
                    match received {
                        Ok(_) => {
                            queue_datagrams(&mut stack, &rx);
                            // Drain what is already queued without waiting.
                            for _ in 1..RECV_CALLS {
                                match udp.try_recv(&mut rx) {
                                    Ok(_) => queue_datagrams(&mut stack, &rx),
                                    Err(_) => break,
                                }
                            }
                            stack.poll(Instant::now());
                        }
                        Err(e) if transient(&e) => debug!(error = %e, "UDP receive error"),
                        Err(e) => return Err(DataplaneError::Io(e)),
                    }
                }
                _ = sleep => stack.handle_timeout(Instant::now()),
                changed = peers.changed() => {
                    if changed.is_err() {
                        info!("data plane stopping");
                        return Ok(());
                    }
                    let list = peers.borrow_and_update().clone();
                    apply_peers(&mut stack, &list);
                    applied.send_modify(|n| *n += 1);
                }
                _ = notify.notified() => {}
                changed = async {
                    match relays.as_mut() {
                        Some(r) => r.changed().await,
                        None => std::future::pending().await,
                    }
                } => match changed {
                    Ok(()) => {
                        let list = relays
                            .as_mut()
                            .map(|r| r.borrow_and_update().clone())
                            .unwrap_or_default();
                        stack.set_relays(Instant::now(), list);
                    }
                    // The control side is gone; the last relays stay.
                    Err(_) => relays = None,
                },
            }
            while let Some(event) = stack.poll_event() {
                match event {
                    StackEvent::NewConnection { conn, port, remote } => {
                        if conns.len() >= MAX_CONNECTIONS {
                            warn!(port, %remote, "refusing a tunnel connection: {MAX_CONNECTIONS} are already open");
                            stack.abort(conn);
                            refused.push(conn);
                            continue;
                        }
                        debug!(port, %remote, "forwarding a tunnel connection to 127.0.0.1");
                        conns.insert(conn, spawn_bridge(port, notify.clone()));
                    }
                    StackEvent::Tunnel(event) => log_tunnel_event(&event),
                    StackEvent::Candidates(list) => {
                        if let Some(wiring) = &candidates {
                            wiring.candidates.send_replace(list);
                        }
                    }
                    StackEvent::RecheckNetwork => {
                        if let Some(wiring) = &candidates {
                            stack.set_host_candidates(Instant::now(), host_candidates(wiring));
                        }
                    }
                }
            }
            for (&id, conn) in conns.iter_mut() {
                pump(&mut stack, id, conn);
            }
            stack.poll(Instant::now());
            // Released only after the poll above so an abort's RST goes out.
            for conn in refused.drain(..) {
                stack.release(conn);
            }
            conns.retain(|&id, conn| {
                if stack.is_closed(id) {
                    conn.task.abort();
                    stack.release(id);
                    false
                } else {
                    true
                }
            });
            while let Some(t) = stack.poll_transmit() {
                if tx.push(t.dst, &t.payload) {
                    continue;
                }
                udp.send_batch(&mut tx).await;
                if !tx.push(t.dst, &t.payload) {
                    // Larger than the whole batch: on its own.
                    if let Err(e) = udp.send(t.dst, &t.payload, t.payload.len()).await {
                        debug!(dst = %t.dst, error = %e, "UDP send failed");
                    }
                }
            }
            udp.send_batch(&mut tx).await;
        }
    }
}

/// Hands every datagram of the last receive to the stack.
fn queue_datagrams(stack: &mut WorkspaceStack, rx: &RecvBatch) {
    let now = Instant::now();
    for (from, datagram) in rx.datagrams() {
        stack.queue_datagram(now, from, datagram);
    }
}

fn apply_peers(stack: &mut WorkspaceStack, list: &[ClientPeer]) {
    let configs = list.iter().filter_map(|p| match peer_config(p) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!("{e}");
            None
        }
    });
    let configs: Vec<_> = configs.collect();
    let count = configs.len();
    if let Err(e) = stack.set_peers(Instant::now(), configs) {
        warn!("{e}");
    }
    info!(peers = count, "client devices updated");
}

fn log_tunnel_event(event: &TunnelEvent) {
    match event {
        TunnelEvent::HandshakeCompleted { peer, initiator } => {
            info!(peer = %key_id(peer), initiator, "WireGuard handshake completed")
        }
        TunnelEvent::EndpointChanged { peer, endpoint } => {
            debug!(peer = %key_id(peer), %endpoint, "peer endpoint changed")
        }
        TunnelEvent::SessionExpired { peer } => debug!(peer = %key_id(peer), "session expired"),
        TunnelEvent::ConnectionExpired { peer, dropped } => {
            debug!(peer = %key_id(peer), dropped, "connection expired")
        }
    }
}

/// Moves what can move without waiting between one connection's stack
/// buffers and its local task.
fn pump(stack: &mut WorkspaceStack, id: ConnectionId, conn: &mut Conn) {
    // Tunnel to local, only as far as the channel has room.
    if let Some(tx) = &conn.to_local {
        let mut closed = false;
        while stack.recv_queue(id) > 0 {
            match tx.try_reserve() {
                Ok(permit) => {
                    let mut chunk = vec![0u8; stack.recv_queue(id).min(CHUNK)];
                    let n = stack.recv(id, &mut chunk);
                    chunk.truncate(n);
                    permit.send(chunk);
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed || stack.recv_finished(id) {
            // Dropping the sender lets the task shut the local write side.
            conn.to_local = None;
        }
    }
    // Local to tunnel, only as far as the send buffer has room.
    loop {
        if conn.pending_off < conn.pending.len() {
            conn.pending_off += stack.send(id, &conn.pending[conn.pending_off..]);
            if conn.pending_off < conn.pending.len() {
                break;
            }
        }
        if conn.local_eof || conn.closing {
            break;
        }
        match conn.from_local.try_recv() {
            Ok(FromLocal::Data(data)) => {
                conn.pending = data;
                conn.pending_off = 0;
            }
            Ok(FromLocal::Eof) | Err(mpsc::error::TryRecvError::Disconnected) => {
                conn.local_eof = true;
            }
            Ok(FromLocal::Failed) => {
                stack.abort(id);
                conn.closing = true;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
        }
    }
    if conn.local_eof && !conn.closing && conn.pending_off >= conn.pending.len() {
        stack.close(id);
        conn.closing = true;
    }
}

fn spawn_bridge(port: u16, notify: Arc<Notify>) -> Conn {
    let (to_local, mut to_local_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (from_local_tx, from_local) = mpsc::channel::<FromLocal>(CHANNEL_CHUNKS);
    let task = tokio::spawn(async move {
        let stream = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(port, error = %e, "nothing accepts on 127.0.0.1; resetting the tunnel connection");
                let _ = from_local_tx.send(FromLocal::Failed).await;
                notify.notify_one();
                return;
            }
            Err(_) => {
                debug!(
                    port,
                    "local connect timed out; resetting the tunnel connection"
                );
                let _ = from_local_tx.send(FromLocal::Failed).await;
                notify.notify_one();
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let reader_tx = from_local_tx.clone();
        let reader_notify = notify.clone();
        let reader = async move {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let msg = match rd.read(&mut chunk).await {
                    Ok(0) => FromLocal::Eof,
                    Ok(n) => {
                        chunk.truncate(n);
                        FromLocal::Data(chunk)
                    }
                    Err(_) => FromLocal::Failed,
                };
                let last = !matches!(msg, FromLocal::Data(_));
                if reader_tx.send(msg).await.is_err() {
                    return;
                }
                reader_notify.notify_one();
                if last {
                    return;
                }
            }
        };
        let writer = async move {
            while let Some(chunk) = to_local_rx.recv().await {
                // A slot freed: the driver may read more from the stack.
                notify.notify_one();
                if wr.write_all(&chunk).await.is_err() {
                    let _ = from_local_tx.send(FromLocal::Failed).await;
                    notify.notify_one();
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::join!(reader, writer);
    });
    Conn {
        to_local: Some(to_local),
        from_local,
        pending: Vec::new(),
        pending_off: 0,
        local_eof: false,
        closing: false,
        task,
    }
}

/// Errors an unconnected UDP socket may report for an earlier send (ICMP
/// unreachable) that say nothing about the socket itself.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock
    )
}
