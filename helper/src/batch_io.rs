//! Batched IO for the data plane: the per-packet system call, not the
//! cipher, is what limits a userspace WireGuard, so every crossing of the
//! kernel boundary here moves many packets.
//!
//! - [`UdpBatch`]: the WireGuard socket through `quinn-udp`. Sends a run of
//!   equal-size datagrams to one destination with one `sendmsg` (UDP GSO,
//!   `UDP_SEGMENT`) and receives with `recvmmsg` into reusable buffers, each
//!   of which may hold many coalesced datagrams (UDP GRO).
//! - [`TxBatch`]: an arena that encrypted datagrams are written into one
//!   after another, and that cuts them into GSO groups (same destination,
//!   same size, contiguous).
//! - [`TunReader`] / [`TunWriter`]: the TUN device with offload: one read
//!   yields a TCP super-segment split into MTU packets; a batch of packets is
//!   coalesced per flow (GRO) and written as a few super-packets. Without
//!   offload (or off Linux) they read and write one packet per call and
//!   drain what is ready without waiting.
//!
//! Everything falls back on its own: a kernel without GSO/GRO gets one
//! datagram per call, a TUN without a vnet header one packet per read.
//! Buffers are allocated once; the data path allocates nothing.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use warren_netcfg::TunDevice;
use warren_tunnel::min_out_len;

/// Datagrams in one UDP receive call (`recvmmsg`).
pub const UDP_RECV_MESSAGES: usize = 16;

/// One receive buffer: the largest UDP payload, which bounds a GRO batch too
/// (the kernel never coalesces past 64 KiB).
pub const UDP_RECV_BUF: usize = 65536;

/// The most datagrams one GSO send may carry (the kernel's
/// `UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;

/// The most bytes one GSO send may carry: the UDP length field is 16 bits
/// and IPv4/IPv6 headers come off it; kept a little under to be safe on
/// both families.
pub const MAX_GSO_BYTES: usize = 65000;

/// Packets one [`TunReader::read`] may return.
pub const TUN_BATCH: usize = 256;

/// Packets a [`TunWriter`] holds before it must write.
pub const TUN_WRITE_BATCH: usize = 128;

/// A [`TunWriter`] slot's capacity: tun-rs coalesces a flow into its first
/// packet's buffer only if that can take a whole super-packet without
/// reallocating (and room for the header twice, as it asks).
const TUN_WRITE_SLOT: usize = 2 * TUN_OFFSET + 65535;

/// Free packet buffers needed before another super-segment is read in the
/// same batch: a 64 KiB segment with a 512-byte MSS splits into 128.
#[cfg(target_os = "linux")]
const TUN_SPLIT_ROOM: usize = 128;

/// TUN packets in a row that may fail to split before a read gives up.
#[cfg(target_os = "linux")]
const MAX_UNSPLITTABLE: u32 = 1024;

/// Socket buffers the kernel should give the WireGuard socket: a burst of
/// a few super-segments must not overflow them (what wireguard-go asks too).
const SOCKET_BUFFER: usize = 7 << 20;

/// The Linux TUN offload header in front of every packet read or written
/// with offload; absent elsewhere.
#[cfg(target_os = "linux")]
pub const TUN_OFFSET: usize = tun_rs::VIRTIO_NET_HDR_LEN;
#[cfg(not(target_os = "linux"))]
pub const TUN_OFFSET: usize = 0;

/// IPv4 peers are reached through the dual-stack socket as v4-mapped
/// addresses, and their datagrams arrive that way; the tunnel speaks plain v4.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The dual-stack socket's form of a tunnel address (v4 becomes v4-mapped).
pub fn to_socket(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        SocketAddr::V6(_) => addr,
    }
}

/// The WireGuard UDP socket with batched sends and receives.
#[derive(Debug)]
pub struct UdpBatch {
    sock: UdpSocket,
    state: UdpSocketState,
    /// Our own cap on segments per send (1 turns GSO off); the kernel's may
    /// fall lower later, see [`UdpBatch::max_segments`].
    gso_cap: usize,
    gso_off_logged: bool,
}

impl UdpBatch {
    /// Takes over `sock` (non-blocking, possibly dual-stack): turns on GRO
    /// where the kernel has it and asks for large socket buffers.
    pub fn new(sock: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        set_buffers(&sock, &state);
        let gso_cap = MAX_GSO_SEGMENTS;
        Ok(UdpBatch {
            sock,
            state,
            gso_cap,
            gso_off_logged: false,
        })
    }

    /// Turns both offloads off: one datagram per send, and the kernel stops
    /// coalescing what it delivers. For kernels whose offload misbehaves and
    /// for tests of the fallback path.
    pub fn disable_offload(&mut self) -> io::Result<()> {
        self.gso_cap = 1;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let off: libc::c_int = 0;
            // SAFETY: the fd is our live socket, and the option value is a
            // c_int whose size we pass.
            let rc = unsafe {
                libc::setsockopt(
                    self.sock.as_raw_fd(),
                    libc::SOL_UDP,
                    libc::UDP_GRO,
                    (&off as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Datagrams one [`UdpBatch::send`] may carry in a single system call
    /// (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().min(self.gso_cap).max(1)
    }

    /// Whether the kernel may hand over coalesced datagrams.
    pub fn gro(&self) -> bool {
        self.state.gro_segments() > 1
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sends `contents` to `dst` as datagrams of `segment_size` bytes (the
    /// last may be shorter). `contents` must hold at most
    /// [`UdpBatch::max_segments`] segments. Waits while the socket buffer is
    /// full. If the kernel refuses GSO, the datagrams go out one by one and
    /// later calls get `max_segments() == 1`.
    pub async fn send(
        &mut self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: usize,
    ) -> io::Result<()> {
        let destination = to_socket(dst);
        // A zero segment size would mean "no segmentation" to nobody.
        let segment_size = if segment_size == 0 {
            contents.len().max(1)
        } else {
            segment_size
        };
        let segmented = contents.len() > segment_size;
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segmented.then_some(segment_size),
            src_ip: None,
        };
        match self.send_one(&transmit).await {
            Err(e) if segmented && self.state.max_gso_segments() <= 1 => {
                // quinn-udp turned GSO off after this send failed (EIO or
                // EINVAL from a driver without it): the group is not lost.
                if !self.gso_off_logged {
                    self.gso_off_logged = true;
                    tracing::info!(error = %e, "UDP segmentation offload unavailable; sending one datagram per call");
                }
                for chunk in contents.chunks(segment_size) {
                    let single = Transmit {
                        destination,
                        ecn: None,
                        contents: chunk,
                        segment_size: None,
                        src_ip: None,
                    };
                    self.send_one(&single).await?;
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn send_one(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        loop {
            let sent = self.sock.try_io(Interest::WRITABLE, || {
                self.state.try_send(UdpSockRef::from(&self.sock), transmit)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sock.writable().await?,
                other => return other,
            }
        }
    }

    /// Waits for datagrams and receives as many as are ready (up to
    /// [`UDP_RECV_MESSAGES`] buffers, each possibly holding many coalesced
    /// datagrams) into `batch`. Cancel-safe: nothing is consumed until the
    /// socket is readable.
    pub async fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.count = 0;
        loop {
            self.sock.readable().await?;
            let mut chunks = batch.storage.chunks_mut(UDP_RECV_BUF);
            let mut iovs: [IoSliceMut<'_>; UDP_RECV_MESSAGES] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
            let got = self.sock.try_io(Interest::READABLE, || {
                self.state
                    .recv(UdpSockRef::from(&self.sock), &mut iovs, &mut batch.meta)
            });
            match got {
                Ok(n) => {
                    batch.count = n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Larger kernel socket buffers; root may exceed `net.core.*mem_max`.
fn set_buffers(sock: &UdpSocket, state: &UdpSocketState) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = state;
        let size = SOCKET_BUFFER as libc::c_int;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            for option in [force, plain] {
                // SAFETY: the fd is a live socket and the value a c_int whose
                // size we pass.
                let rc = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        option,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if rc == 0 {
                    break;
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = state.set_recv_buffer_size(UdpSockRef::from(sock), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size(UdpSockRef::from(sock), SOCKET_BUFFER);
    }
}

/// Reusable receive buffers and what the last [`UdpBatch::recv`] put in
/// them.
pub struct RecvBatch {
    storage: Vec<u8>,
    meta: [RecvMeta; UDP_RECV_MESSAGES],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// [`UDP_RECV_MESSAGES`] buffers of [`UDP_RECV_BUF`] bytes (zeroed pages
    /// are only backed by memory once a burst first fills them).
    pub fn new() -> Self {
        RecvBatch {
            storage: vec![0; UDP_RECV_MESSAGES * UDP_RECV_BUF],
            meta: [RecvMeta::default(); UDP_RECV_MESSAGES],
            count: 0,
        }
    }

    /// Buffers filled by the last receive.
    pub fn messages(&self) -> usize {
        self.count
    }

    /// The datagrams of buffer `i` (split at the GRO stride) and their
    /// sender, as the tunnel spells it (v4 unmapped).
    pub fn message(&self, i: usize) -> (SocketAddr, std::slice::Chunks<'_, u8>) {
        let meta = &self.meta[i];
        let start = i * UDP_RECV_BUF;
        let len = meta.len.min(UDP_RECV_BUF);
        let stride = if meta.stride == 0 {
            len.max(1)
        } else {
            meta.stride
        };
        (
            unmap(meta.addr),
            self.storage[start..start + len].chunks(stride),
        )
    }

    /// Every datagram of the last receive with its sender.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.count).flat_map(move |i| {
            let (from, chunks) = self.message(i);
            chunks.map(move |d| (from, d))
        })
    }
}

/// One datagram in a [`TxBatch`].
#[derive(Debug, Clone, Copy)]
struct Item {
    dst: SocketAddr,
    start: usize,
    len: usize,
}

/// A run of datagrams one GSO send can carry.
#[derive(Debug, PartialEq, Eq)]
pub struct Group<'a> {
    /// Where they all go.
    pub dst: SocketAddr,
    /// The datagrams back to back; every one but the last is
    /// `segment_size` long.
    pub contents: &'a [u8],
    /// The size of each datagram but the last.
    pub segment_size: usize,
    /// How many datagrams.
    pub segments: usize,
}

/// An arena of outgoing datagrams, written back to back so that
/// consecutive equal-size datagrams to one destination are one GSO send.
#[derive(Debug)]
pub struct TxBatch {
    arena: Vec<u8>,
    items: Vec<Item>,
    cursor: usize,
}

impl TxBatch {
    /// Room for `packets` datagrams made from packets of up to
    /// `max_packet` bytes.
    pub fn new(packets: usize, max_packet: usize) -> Self {
        TxBatch {
            arena: vec![0; packets * min_out_len(max_packet)],
            items: Vec::with_capacity(packets),
            cursor: 0,
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Where the datagram for a packet of `packet_len` bytes goes (exactly
    /// [`min_out_len`] of it), or `None` when the batch is full and must be
    /// sent first.
    pub fn space(&mut self, packet_len: usize) -> Option<&mut [u8]> {
        let need = min_out_len(packet_len);
        if self.items.len() == self.items.capacity() || self.cursor + need > self.arena.len() {
            return None;
        }
        Some(&mut self.arena[self.cursor..self.cursor + need])
    }

    /// Keeps the datagram just written into [`TxBatch::space`]: `len` bytes
    /// at `offset` into that space, for `dst`.
    pub fn commit(&mut self, dst: SocketAddr, offset: usize, len: usize) {
        let start = self.cursor;
        if offset != 0 {
            self.arena
                .copy_within(start + offset..start + offset + len, start);
        }
        self.items.push(Item { dst, start, len });
        self.cursor += len;
    }

    /// Queues a copy of `datagram` (for the rare ones the tunnel made on its
    /// own). False when full.
    pub fn push(&mut self, dst: SocketAddr, datagram: &[u8]) -> bool {
        let len = datagram.len();
        if self.items.len() == self.items.capacity() || self.cursor + len > self.arena.len() {
            return false;
        }
        self.arena[self.cursor..self.cursor + len].copy_from_slice(datagram);
        self.commit(dst, 0, len);
        true
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        self.items.clear();
        self.cursor = 0;
    }

    /// The queued datagrams cut into sends of at most `max_segments`
    /// datagrams and [`MAX_GSO_BYTES`], in order.
    pub fn groups(&self, max_segments: usize) -> Groups<'_> {
        Groups {
            batch: self,
            next: 0,
            max_segments: max_segments.clamp(1, MAX_GSO_SEGMENTS),
        }
    }
}

/// Iterator of [`TxBatch::groups`].
#[derive(Debug)]
pub struct Groups<'a> {
    batch: &'a TxBatch,
    next: usize,
    max_segments: usize,
}

impl<'a> Iterator for Groups<'a> {
    type Item = Group<'a>;

    fn next(&mut self) -> Option<Group<'a>> {
        let items = &self.batch.items;
        let first = *items.get(self.next)?;
        let segment_size = first.len;
        let mut end = first.start + first.len;
        let mut n = 1;
        // A shorter datagram closes its group: only the last may be short.
        let mut closed = false;
        while !closed && n < self.max_segments {
            let Some(item) = items.get(self.next + n) else {
                break;
            };
            if item.dst != first.dst
                || item.start != end
                || item.len > segment_size
                || end - first.start + item.len > MAX_GSO_BYTES
            {
                break;
            }
            closed = item.len < segment_size;
            end += item.len;
            n += 1;
        }
        self.next += n;
        Some(Group {
            dst: first.dst,
            contents: &self.batch.arena[first.start..end],
            segment_size,
            segments: n,
        })
    }
}

/// Batched reads from the TUN device.
pub struct TunReader {
    #[cfg(target_os = "linux")]
    original: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    count: usize,
    max_packet: usize,
}

impl std::fmt::Debug for TunReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunReader")
            .field("count", &self.count)
            .field("max_packet", &self.max_packet)
            .finish_non_exhaustive()
    }
}

impl TunReader {
    /// Buffers for [`TUN_BATCH`] packets of up to `max_packet` bytes (the
    /// TUN's MTU: offload splits super-segments to it).
    pub fn new(max_packet: usize) -> Self {
        TunReader {
            #[cfg(target_os = "linux")]
            original: vec![0; TUN_OFFSET + 65535],
            bufs: vec![vec![0; max_packet]; TUN_BATCH],
            sizes: vec![0; TUN_BATCH],
            count: 0,
            max_packet,
        }
    }

    /// The largest packet a buffer holds.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Waits for the TUN to have packets and reads what is ready: at least
    /// one read, then more without waiting while a whole super-segment
    /// still fits. Cancel-safe: nothing is consumed before the first read
    /// succeeds, and nothing after it awaits.
    pub async fn read(&mut self, tun: &TunDevice) -> io::Result<usize> {
        self.count = 0;
        #[cfg(target_os = "linux")]
        {
            let mut unsplittable = 0;
            let n = loop {
                match tun
                    .recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0)
                    .await
                {
                    Ok(n) => break n,
                    // A packet tun-rs could not split (malformed offload
                    // header, more segments than buffers) is gone, but the
                    // device is fine; only the OS's errors are the TUN's.
                    // Bounded, in case such an error ever came back without
                    // consuming a packet.
                    Err(e) if e.raw_os_error().is_none() && unsplittable < MAX_UNSPLITTABLE => {
                        unsplittable += 1;
                        tracing::debug!(error = %e, "dropped a TUN packet that could not be split");
                    }
                    Err(e) => return Err(e),
                }
            };
            self.count = n;
            let room = if tun.tcp_gso() { TUN_SPLIT_ROOM } else { 1 };
            while TUN_BATCH - self.count >= room {
                let at = self.count;
                match tun.try_recv_multiple(
                    &mut self.original,
                    &mut self.bufs[at..],
                    &mut self.sizes[at..],
                    0,
                ) {
                    Ok(n) => self.count += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Keep what we have; a persistent error shows up on the
                    // next blocking read.
                    Err(e) => {
                        tracing::debug!(error = %e, "TUN read failed");
                        break;
                    }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let n = tun.recv(&mut self.bufs[0]).await?;
            self.sizes[0] = n;
            self.count = 1;
            while self.count < TUN_BATCH {
                let at = self.count;
                match tun.try_recv(&mut self.bufs[at]) {
                    Ok(n) => {
                        self.sizes[at] = n;
                        self.count += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        Ok(self.count)
    }

    /// The packets of the last read.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.bufs[..self.count]
            .iter()
            .zip(&self.sizes)
            .map(|(b, &n)| &b[..n.min(b.len())])
    }
}

/// Batched writes to the TUN device: packets are decrypted straight into
/// its slots (after [`TUN_OFFSET`] bytes of room for the offload header)
/// and written per flow as coalesced super-packets.
pub struct TunWriter {
    slots: Vec<Vec<u8>>,
    used: usize,
    #[cfg(target_os = "linux")]
    gro: tun_rs::GROTable,
}

impl Default for TunWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TunWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunWriter")
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl TunWriter {
    /// [`TUN_WRITE_BATCH`] slots, each with room for a whole coalesced
    /// super-packet. Reserved, not touched: memory is only used as far as
    /// flows actually coalesce (at most 8 MiB).
    pub fn new() -> Self {
        TunWriter {
            slots: (0..TUN_WRITE_BATCH)
                .map(|_| Vec::with_capacity(TUN_WRITE_SLOT))
                .collect(),
            used: 0,
            #[cfg(target_os = "linux")]
            gro: tun_rs::GROTable::new(),
        }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether the next packet needs a [`TunWriter::flush`] first.
    pub fn is_full(&self) -> bool {
        self.used == self.slots.len()
    }

    /// The next slot's packet area, at least `len` bytes. Call only when not
    /// [`TunWriter::is_full`].
    pub fn space(&mut self, len: usize) -> &mut [u8] {
        let slot = &mut self.slots[self.used];
        // Only the part beyond the last packet written here is zeroed.
        slot.resize(TUN_OFFSET + len, 0);
        &mut slot[TUN_OFFSET..]
    }

    /// Keeps the packet just written into [`TunWriter::space`]: `len` bytes
    /// at `offset` into it.
    pub fn commit(&mut self, offset: usize, len: usize) {
        let slot = &mut self.slots[self.used];
        if offset != 0 {
            slot.copy_within(TUN_OFFSET + offset..TUN_OFFSET + offset + len, TUN_OFFSET);
        }
        slot.truncate(TUN_OFFSET + len);
        self.used += 1;
    }

    /// Writes every waiting packet (coalesced where the TUN has offload)
    /// and empties the batch, even if the write fails.
    pub async fn flush(&mut self, tun: &TunDevice) -> io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let used = std::mem::take(&mut self.used);
        #[cfg(target_os = "linux")]
        {
            tun.send_multiple(&mut self.gro, &mut self.slots[..used], TUN_OFFSET)
                .await
                .map(|_| ())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut result = Ok(());
            for slot in &self.slots[..used] {
                if let Err(e) = tun.send(&slot[TUN_OFFSET..]).await {
                    result = Err(e);
                }
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use std::time::{Duration, Instant};

    async fn dual_stack() -> UdpBatch {
        let std = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        std.set_nonblocking(true).unwrap();
        UdpBatch::new(UdpSocket::from_std(std).unwrap()).unwrap()
    }

    fn dg(seq: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq * 7 + i) as u8).collect()
    }

    /// Receives until `want` datagrams arrived (bounded in time); returns
    /// them with their senders and how many receive buffers they took.
    async fn collect(rx: &UdpBatch, want: usize) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        let mut messages = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, rx.recv(&mut batch))
                .await
                .expect("datagrams did not arrive in time")
                .unwrap();
            messages += n;
            got.extend(batch.datagrams().map(|(a, d)| (a, d.to_vec())));
        }
        (got, messages)
    }

    async fn gso_round_trip(sender: &mut UdpBatch, dst: SocketAddr, rx: &UdpBatch) -> usize {
        // 20 datagrams of 1312 bytes and a short last one, in one send.
        let mut contents = Vec::new();
        let mut expect = Vec::new();
        for seq in 0..21 {
            let d = dg(seq, if seq == 20 { 300 } else { 1312 });
            contents.extend_from_slice(&d);
            expect.push(d);
        }
        let max = sender.max_segments();
        for chunk in contents.chunks(1312 * max) {
            sender.send(dst, chunk, 1312).await.unwrap();
        }
        let (got, messages) = collect(rx, expect.len()).await;
        let from = unmap(sender.local_addr().unwrap());
        assert_eq!(got.len(), expect.len());
        for ((src, d), want) in got.iter().zip(&expect) {
            assert_eq!(src.port(), from.port());
            assert_eq!(d, want);
        }
        messages
    }

    #[tokio::test]
    async fn gso_send_arrives_as_separate_datagrams_over_v4_and_v6() {
        let mut tx = dual_stack().await;
        let rx = dual_stack().await;
        let port = rx.local_addr().unwrap().port();
        for dst in [
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ] {
            let messages = gso_round_trip(&mut tx, dst, &rx).await;
            eprintln!(
                "{dst}: gso {} segments, gro {}, 21 datagrams in {messages} buffers",
                tx.max_segments(),
                rx.gro()
            );
            assert!((1..=21).contains(&messages));
            if tx.max_segments() > 1 && rx.gro() {
                // Loopback passes the GSO super-datagram up whole, so GRO
                // hands it over in far fewer buffers than datagrams.
                assert!(messages < 21, "no coalescing: {messages} buffers");
            }
        }
    }

    #[tokio::test]
    async fn v4_senders_are_reported_unmapped() {
        let rx = dual_stack().await;
        let port = rx.local_addr().unwrap().port();
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        plain.send_to(b"one", ("127.0.0.1", port)).unwrap();
        plain.send_to(b"two!", ("127.0.0.1", port)).unwrap();
        let (got, _) = collect(&rx, 2).await;
        let from = plain.local_addr().unwrap();
        assert_eq!(got[0], (from, b"one".to_vec()));
        assert_eq!(got[1], (from, b"two!".to_vec()));
    }

    #[tokio::test]
    async fn without_offload_every_datagram_is_its_own_message() {
        let mut tx = dual_stack().await;
        tx.disable_offload().unwrap();
        assert_eq!(tx.max_segments(), 1);
        let mut rx = dual_stack().await;
        rx.disable_offload().unwrap();
        let port = rx.local_addr().unwrap().port();
        let dst = SocketAddr::from(([127, 0, 0, 1], port));
        let messages = gso_round_trip(&mut tx, dst, &rx).await;
        assert_eq!(messages, 21);
    }

    #[tokio::test]
    async fn many_senders_in_one_receive_keep_their_addresses() {
        let rx = dual_stack().await;
        let port = rx.local_addr().unwrap().port();
        let senders: Vec<_> = (0..4)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, s) in senders.iter().enumerate() {
            s.send_to(&dg(i, 100 + i), ("127.0.0.1", port)).unwrap();
        }
        let (got, _) = collect(&rx, 4).await;
        for (i, s) in senders.iter().enumerate() {
            let from = s.local_addr().unwrap();
            assert!(got.contains(&(from, dg(i, 100 + i))), "sender {i} missing");
        }
    }

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 51820))
    }

    fn put(batch: &mut TxBatch, dst: SocketAddr, len: usize) {
        batch.push(dst, &vec![len as u8; len]);
    }

    fn shapes(batch: &TxBatch, max: usize) -> Vec<(SocketAddr, usize, usize, usize)> {
        batch
            .groups(max)
            .map(|g| (g.dst, g.segment_size, g.segments, g.contents.len()))
            .collect()
    }

    #[test]
    fn groups_split_on_destination_size_and_short_datagrams() {
        let mut b = TxBatch::new(64, 1400);
        for _ in 0..3 {
            put(&mut b, a(1), 1312);
        }
        put(&mut b, a(1), 200); // short: ends the group
        put(&mut b, a(1), 1312);
        put(&mut b, a(2), 1312); // other peer
        put(&mut b, a(2), 1400); // larger: new group
        put(&mut b, a(2), 1400);
        assert_eq!(
            shapes(&b, 64),
            vec![
                (a(1), 1312, 4, 3 * 1312 + 200),
                (a(1), 1312, 1, 1312),
                (a(2), 1312, 1, 1312),
                (a(2), 1400, 2, 2800),
            ]
        );
        // Without GSO every datagram is its own send.
        assert_eq!(b.groups(1).count(), 8);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.groups(64).count(), 0);
    }

    #[test]
    fn groups_respect_the_segment_and_byte_caps() {
        let mut b = TxBatch::new(200, 1400);
        for _ in 0..150 {
            put(&mut b, a(1), 1312);
        }
        // 49 × 1312 = 64288 fits under MAX_GSO_BYTES, 50 would not.
        let g: Vec<_> = shapes(&b, 64).iter().map(|s| s.2).collect();
        assert_eq!(g, vec![49, 49, 49, 3]);
        let g: Vec<_> = shapes(&b, 10).iter().map(|s| s.2).collect();
        assert_eq!(g.iter().sum::<usize>(), 150);
        assert!(g.iter().all(|&n| n <= 10));
    }

    #[test]
    fn space_and_commit_pack_datagrams_back_to_back() {
        let mut b = TxBatch::new(4, 100);
        let space = b.space(100).unwrap();
        assert_eq!(space.len(), min_out_len(100));
        // A datagram written at an offset into its space is moved to the
        // cursor, so the next one follows it directly.
        space[5..15].copy_from_slice(&[9; 10]);
        b.commit(a(1), 5, 10);
        let space = b.space(100).unwrap();
        space[..10].copy_from_slice(&[9; 10]);
        b.commit(a(1), 0, 10);
        let groups: Vec<_> = b.groups(64).collect();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].contents, &[9; 20][..]);
        // Full by count.
        b.push(a(1), &[1; 10]);
        b.push(a(1), &[1; 10]);
        assert!(b.space(10).is_none());
        assert!(!b.push(a(1), &[1; 10]));
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn tun_writer_slots_keep_room_for_the_offload_header() {
        let mut w = TunWriter::new();
        assert!(w.is_empty());
        let space = w.space(1312);
        assert_eq!(space.len(), 1312);
        space[3..8].copy_from_slice(b"hello");
        w.commit(3, 5);
        assert_eq!(w.len(), 1);
        assert_eq!(
            &w.slots[0][..],
            &[&[0u8; TUN_OFFSET][..], b"hello"].concat()[..]
        );
        // A datagram larger than the slot grows it.
        assert_eq!(w.space(9000).len(), 9000);
        w.commit(0, 9000);
        assert_eq!(w.slots[1].len(), TUN_OFFSET + 9000);
    }

    /// The Internet checksum of `data` on top of `sum`.
    #[cfg(target_os = "linux")]
    fn csum(data: &[u8], mut sum: u32) -> u16 {
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An IPv4 TCP segment (ACK, timestamps option) with valid checksums.
    #[cfg(target_os = "linux")]
    fn tcp_segment(seq: u32, payload: usize) -> Vec<u8> {
        let (src, dst) = ([100, 64, 0, 1], [100, 64, 0, 2]);
        let total = 20 + 32 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let c = csum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&5201u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = 0x10;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        t[20..24].copy_from_slice(&[1, 1, 8, 10]);
        for (i, b) in t[32..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        let pseudo = [src, dst]
            .iter()
            .flat_map(|a| {
                [
                    u16::from_be_bytes([a[0], a[1]]),
                    u16::from_be_bytes([a[2], a[3]]),
                ]
            })
            .map(u32::from)
            .sum::<u32>()
            + 6
            + (32 + payload) as u32;
        let c = csum(t, pseudo);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tun_writer_slots_let_a_flow_coalesce_into_one_write() {
        let mut w = TunWriter::new();
        let mss = 1228;
        for i in 0..40u32 {
            let seg = tcp_segment(1000 + i * mss as u32, mss);
            let space = w.space(seg.len() + 32);
            space[..seg.len()].copy_from_slice(&seg);
            w.commit(0, seg.len());
        }
        // What `send_multiple` does before it writes.
        let used = w.len();
        tun_rs::GROTable::new()
            .apply_gro(&mut w.slots[..used], TUN_OFFSET, true)
            .unwrap();
        // The whole flow went into the first slot: one header, 40 payloads.
        assert_eq!(w.slots[0].len(), TUN_OFFSET + 20 + 32 + 40 * mss);
    }

    #[test]
    fn addresses_round_trip_through_the_dual_stack_socket() {
        let v4: SocketAddr = "10.1.0.2:51820".parse().unwrap();
        assert!(to_socket(v4).is_ipv6());
        assert_eq!(unmap(to_socket(v4)), v4);
        let v6: SocketAddr = "[fd00::2]:51820".parse().unwrap();
        assert_eq!(to_socket(v6), v6);
        assert_eq!(unmap(v6), v6);
    }
}
