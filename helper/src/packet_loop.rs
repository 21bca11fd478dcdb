//! The packet loop: moves packets between the TUN device and the
//! WireGuard UDP socket through the sans-IO [`Tunnel`], and lets the
//! [`Observer`] see events, time pings and report statistics.
//!
//! Everything here is IO plumbing; what to do with a packet is decided by
//! `warren-tunnel` and `observe`. The plumbing is batched (`warren-io`): one
//! TUN read yields a TCP super-segment's worth of packets, each is
//! encrypted into its own slot of a reusable arena, and consecutive
//! datagrams to one peer leave in one GSO `sendmsg`; the other way one
//! `recvmmsg` yields many (GRO-coalesced) datagrams, decrypted straight into
//! the TUN batch, which is written per flow as coalesced super-packets.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use warren_client_core::PeerChange;
use warren_io::{
    max_packet, Offloads, RecvBatch, TunReader, TunWriter, TxBatch, UdpBatch, TUN_BATCH,
};
use warren_netcfg::TunDevice;
use warren_path::{Incoming, Path, PathEvent, Paths, RelayServer, Route};
use warren_tunnel::{min_out_len, Tunnel, MIN_BUFFER};

use crate::observe::{wall_clock_ms, LoopRequest, Observer, Report, ReportSender};

/// The WireGuard socket: one for both families, kept by the manager for
/// the helper's lifetime, so the port registered with the coordinator stays
/// valid across tunnel restarts.
pub use warren_io::bind_udp;

/// What the loop runs on.
pub struct LoopParts {
    pub tunnel: Tunnel,
    pub tun: TunDevice,
    pub udp: UdpSocket,
    /// The latest peer table from the directory.
    /// Edits of the peer table, one batch per directory change.
    pub peers: mpsc::UnboundedReceiver<Vec<PeerChange>>,
    pub pings: mpsc::Receiver<LoopRequest>,
    pub observer: Observer,
    /// The path layer: which way each agent's datagrams go.
    pub paths: Paths,
    /// New TURN relays or credentials from the coordinator.
    pub relays: mpsc::UnboundedReceiver<Vec<RelayServer>>,
    /// Where new candidates are reported (to be announced).
    pub reports: ReportSender,
    /// The socket's port and the TUN's name, to read the host candidates
    /// again when the network seems to have changed.
    pub port: u16,
    pub tun_name: String,
    /// Fires (or drops) when the loop should end.
    pub stop: oneshot::Receiver<()>,
}

/// Sends one datagram the tunnel made on its own (or a ping).
async fn send(udp: &mut UdpBatch, dst: SocketAddr, payload: &[u8]) {
    if let Err(e) = udp.send(dst, payload, payload.len()).await {
        tracing::debug!(%dst, error = %e, "UDP send failed");
    }
}

/// The path layer and what it needs from the loop.
struct PathIo {
    paths: Paths,
    /// A relayed datagram, wrapped for its TURN server.
    wrapped: Vec<u8>,
    /// Relayed datagrams of one TUN read, sent together (runs of equal
    /// size to one TURN server leave in one GSO send, like direct ones).
    relay_tx: TxBatch,
    reports: ReportSender,
    port: u16,
    tun_name: String,
}

/// Sends one WireGuard datagram along the path the path layer chose.
async fn send_wireguard(
    now: Instant,
    io: &mut PathIo,
    udp: &mut UdpBatch,
    dst: SocketAddr,
    payload: &[u8],
) {
    match io.paths.route(now, dst, payload, &mut io.wrapped) {
        Route::Direct => send(udp, dst, payload).await,
        Route::Relay(server) => send(udp, server, &io.wrapped).await,
    }
}

/// Sends what the tunnel and the path layer queued (handshakes,
/// keepalives, checks, TURN requests), carries out the path layer's
/// decisions and lets the observer see the tunnel's events.
async fn flush(tunnel: &mut Tunnel, observer: &mut Observer, io: &mut PathIo, udp: &mut UdpBatch) {
    let now = Instant::now();
    // Bounded: a path change can make the tunnel send, which can make the
    // path layer notice a peer, and so on, but only a few rounds deep.
    for _ in 0..8 {
        let mut progressed = false;
        while let Some(t) = tunnel.poll_transmit() {
            progressed = true;
            send_wireguard(now, io, udp, t.dst, &t.payload).await;
        }
        while let Some(e) = tunnel.poll_event() {
            observer.on_event(&e);
        }
        while let Some(event) = io.paths.poll_event() {
            progressed = true;
            match event {
                PathEvent::Candidates(candidates) => {
                    let _ = io.reports.send(Report::Candidates(candidates));
                }
                PathEvent::PathChanged { peer, path } => {
                    if let Path::Direct { remote } | Path::Relayed { remote, .. } = path {
                        tunnel.set_path_endpoint(now, &peer, remote);
                    }
                    let relay = io.paths.path_info(&peer).and_then(|i| i.relay);
                    let name = relay.map(|server| {
                        io.paths
                            .relay_name(server)
                            .map_or_else(|| server.to_string(), str::to_string)
                    });
                    observer.set_path(peer, name, path == Path::None);
                }
                PathEvent::NetworkChanged => {
                    let _ = io.reports.send(Report::NetworkChanged);
                }
                PathEvent::RecheckNetwork => {
                    let host = crate::dataplane::local_endpoints(io.port, &io.tun_name);
                    io.paths.set_host_candidates(now, host);
                }
            }
        }
        while let Some(t) = io.paths.poll_transmit() {
            progressed = true;
            send(udp, t.dst, &t.payload).await;
        }
        if !progressed {
            break;
        }
    }
    observer.flush(now, wall_clock_ms(), tunnel);
}

/// Encrypts every packet of the last TUN read into the batch, then sends.
async fn outbound(
    now: Instant,
    tunnel: &mut Tunnel,
    io: &mut PathIo,
    reader: &TunReader,
    tx: &mut TxBatch,
    udp: &mut UdpBatch,
) {
    for packet in reader.packets() {
        if tx.space(packet.len()).is_none() {
            // Sized for a whole read, so only a batch that somehow
            // overflowed gets here; send what we have and go on.
            udp.send_batch(tx).await;
        }
        let Some(space) = tx.space(packet.len()) else {
            tracing::debug!(
                len = packet.len(),
                "a TUN packet larger than the batch dropped"
            );
            continue;
        };
        let base = space.as_ptr() as usize;
        match tunnel.encapsulate(now, packet, space) {
            Ok(Some(t)) => {
                // The datagram lies inside `space` (the tunnel writes only
                // into the buffer it is given); where exactly is up to it.
                let (dst, offset, len) =
                    (t.dst, t.payload.as_ptr() as usize - base, t.payload.len());
                match io.paths.route(now, dst, t.payload, &mut io.wrapped) {
                    Route::Direct => tx.commit(dst, offset, len),
                    // Wrapped for the TURN server into a batch of their own.
                    Route::Relay(server) => {
                        if !io.relay_tx.push(server, &io.wrapped) {
                            udp.send_batch(&mut io.relay_tx).await;
                            if !io.relay_tx.push(server, &io.wrapped) {
                                send(udp, server, &io.wrapped).await;
                            }
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(reason) => tracing::trace!(%reason, "outbound packet dropped"),
        }
    }
    udp.send_batch(tx).await;
    if !io.relay_tx.is_empty() {
        udp.send_batch(&mut io.relay_tx).await;
    }
}

/// Decrypts every datagram of the last UDP receive into the TUN batch
/// (unless it answers one of our pings), then writes the batch.
async fn inbound(
    now: Instant,
    tunnel: &mut Tunnel,
    observer: &mut Observer,
    paths: &mut Paths,
    rx: &RecvBatch,
    writer: &mut TunWriter,
    tun: &TunDevice,
) {
    for (from, datagram) in rx.datagrams() {
        let (from, datagram) = match paths.handle_datagram(now, from, datagram) {
            Incoming::WireGuard { from, payload } => (from, payload),
            Incoming::Handled => continue,
            Incoming::Dropped(why) => {
                tracing::trace!(%from, why, "datagram dropped");
                continue;
            }
        };
        if writer.is_full() {
            write_tun(writer, tun).await;
        }
        let space = writer.space(datagram.len().max(MIN_BUFFER));
        let base = space.as_ptr() as usize;
        match tunnel.decapsulate(now, from, &datagram, space) {
            Ok(Some(packet)) => {
                if !observer.intercept(now, packet, tunnel) {
                    let (offset, len) = (packet.as_ptr() as usize - base, packet.len());
                    writer.commit(offset, len);
                }
            }
            Ok(None) => {}
            Err(reason) => tracing::trace!(%reason, "datagram dropped"),
        }
    }
    write_tun(writer, tun).await;
}

async fn write_tun(writer: &mut TunWriter, tun: &TunDevice) {
    if let Err(e) = writer.flush(tun).await {
        tracing::debug!(error = %e, "writing to the TUN failed");
    }
}

/// Says once, at start, which offloads this machine gives us.
fn log_offloads(tun: &TunDevice, udp: &UdpBatch) {
    let offloads = Offloads::of(tun, udp);
    tracing::info!(
        tun_offload = offloads.tun,
        udp_gso_segments = offloads.udp_gso_segments,
        udp_gro = offloads.udp_gro,
        "data plane batching"
    );
    if !offloads.all() {
        tracing::info!(
            "some offloads are unavailable; those paths move one packet per system call"
        );
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopExit {
    /// Asked to (`stop` fired, or the manager dropped the handle).
    Stopped,
    /// By itself: the TUN or the socket failed. The reason is for a person.
    Failed(String),
}

/// Applies one batch of peer-table edits.
fn apply_peer_changes(
    tunnel: &mut Tunnel,
    paths: &mut Paths,
    now: Instant,
    changes: Vec<PeerChange>,
) {
    for change in changes {
        match change {
            PeerChange::Upsert(cfg) => {
                paths.upsert_peer(now, cfg.public_key, &cfg.candidates);
                if let Err(e) = tunnel.upsert_peer(now, cfg) {
                    tracing::warn!(error = %e, "an agent could not be added to the tunnel");
                }
            }
            PeerChange::Remove(key) => {
                paths.remove_peer(&key);
                tunnel.remove_peer(&key);
            }
        }
    }
}

/// Runs until `stop` fires, the TUN fails or the peer table's sender goes.
pub async fn run(dp: LoopParts) -> LoopExit {
    let LoopParts {
        mut tunnel,
        tun,
        udp,
        mut peers,
        mut pings,
        mut observer,
        paths,
        mut relays,
        reports,
        port,
        tun_name,
        mut stop,
    } = dp;
    let max_packet = max_packet(&tun);
    let mut io = PathIo {
        paths,
        wrapped: Vec::with_capacity(2048),
        relay_tx: TxBatch::new(TUN_BATCH, max_packet + 64),
        reports,
        port,
        tun_name,
    };
    let mut udp = match UdpBatch::new(udp) {
        Ok(udp) => udp,
        Err(e) => {
            tracing::error!(error = %e, "couldn't set up the WireGuard socket; the data plane is not running");
            return LoopExit::Failed(format!(
                "couldn't set up the WireGuard socket ({e}); restart the helper"
            ));
        }
    };
    log_offloads(&tun, &udp);
    let mut reader = TunReader::new(max_packet);
    let mut writer = TunWriter::new();
    let mut tx = TxBatch::new(TUN_BATCH, max_packet);
    let mut rx = RecvBatch::new();
    // Pings only; their packets are small.
    let mut out = vec![0u8; min_out_len(1500)];
    flush(&mut tunnel, &mut observer, &mut io, &mut udp).await;
    let exit = loop {
        let paths_due = io.paths.poll_timeout();
        let mut deadline = match tunnel.poll_timeout() {
            Some(t) => t.min(observer.poll_timeout()),
            None => observer.poll_timeout(),
        };
        if let Some(t) = paths_due {
            deadline = deadline.min(t);
        }
        tokio::select! {
            _ = &mut stop => break LoopExit::Stopped,
            read = reader.read(&tun) => match read {
                Ok(_) => outbound(Instant::now(), &mut tunnel, &mut io, &reader, &mut tx, &mut udp).await,
                Err(e) => {
                    tracing::warn!(error = %e, "reading from the TUN failed; stopping the data plane");
                    break LoopExit::Failed(format!(
                        "the tunnel device stopped working ({e}); it was removed or reset — Warren sets it up again"
                    ));
                }
            },
            recv = udp.recv(&mut rx) => match recv {
                Ok(_) => {
                    inbound(Instant::now(), &mut tunnel, &mut observer, &mut io.paths, &rx, &mut writer, &tun).await;
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            Some(probe) = pings.recv() => {
                if let Some(t) = observer.probe(Instant::now(), probe, &mut tunnel, &mut out) {
                    let dst = t.dst;
                    let len = t.payload.len();
                    send_wireguard(Instant::now(), &mut io, &mut udp, dst, &out[..len]).await;
                }
            }
            changes = peers.recv() => match changes {
                Some(changes) => apply_peer_changes(&mut tunnel, &mut io.paths, Instant::now(), changes),
                None => break LoopExit::Stopped,
            },
            Some(list) = relays.recv() => io.paths.set_relays(Instant::now(), list),
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if tunnel.poll_timeout().is_some_and(|t| t <= now) {
                    tunnel.handle_timeout(now);
                }
                if paths_due.is_some_and(|t| t <= now) {
                    io.paths.handle_timeout(now);
                }
                observer.handle_timeout(now, wall_clock_ms(), &tunnel);
            }
        }
        flush(&mut tunnel, &mut observer, &mut io, &mut udp).await;
    };
    exit
}

/// A thread of the loop's own with a single-threaded runtime. On the
/// helper's shared multi-threaded runtime every TUN or socket wake-up of the
/// loop also wakes the other worker to look for work to steal; on its own
/// thread the loop polls its reactor itself (measured: about a quarter of
/// the context switches and 15–25 % less CPU per GB).
///
/// The TUN and the UDP socket belong to whichever runtime they were
/// registered with, so create them inside [`LoopThread::enter`], then hand
/// the [`LoopParts`] to [`LoopThread::spawn`]:
///
/// ```text
/// let thread = LoopThread::new()?;
/// let (tun, udp) = {
///     let _in_loop = thread.enter();
///     (net.apply(plan)?, UdpSocket::from_std(udp.try_clone()?)?)
/// };
/// let ended = thread.spawn(LoopParts { tun, udp, .. })?;
/// ended.await; // the loop has stopped and closed the TUN
/// net.teardown()?;
/// ```
#[derive(Debug)]
pub struct LoopThread {
    /// Taken by [`LoopThread::spawn`]; dropped without blocking otherwise.
    rt: Option<tokio::runtime::Runtime>,
}

impl LoopThread {
    /// A runtime for the loop (no thread yet).
    pub fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(LoopThread { rt: Some(rt) })
    }

    /// While the guard lives, TUN devices and sockets created on this
    /// thread register with the loop's runtime. Don't hold it across an
    /// `.await`.
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        match &self.rt {
            Some(rt) => rt.enter(),
            // Only `spawn` takes the runtime, and it consumes `self`.
            None => unreachable!("LoopThread without a runtime"),
        }
    }

    /// Runs [`run`] on a new thread. The receiver completes (with `Ok` or,
    /// if the loop panicked, `Err`) once the loop has ended and dropped the
    /// TUN, so the caller may undo the network configuration.
    pub fn spawn(mut self, dp: LoopParts) -> std::io::Result<oneshot::Receiver<LoopExit>> {
        let (done, ended) = oneshot::channel::<LoopExit>();
        let Some(rt) = self.rt.take() else {
            unreachable!("LoopThread without a runtime");
        };
        std::thread::Builder::new()
            .name("warren-datapath".into())
            .spawn(move || {
                let exit = rt.block_on(run(dp));
                let _ = done.send(exit);
            })?;
        Ok(ended)
    }
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        // Unused (setup failed before `spawn`), possibly inside the helper's
        // async code, where a blocking runtime shutdown is not allowed.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unused_loop_thread_can_be_dropped_in_async_code() {
        let thread = LoopThread::new().unwrap();
        let sock = {
            let _in_loop = thread.enter();
            UdpSocket::from_std(bind_udp(0).unwrap()).unwrap()
        };
        drop(sock);
        drop(thread);
    }
}
