//! The WireGuard UDP socket with batched sends (GSO) and receives
//! (`recvmmsg`, GRO) through `quinn-udp`, and the reusable receive buffers.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::{
    sys, to_socket, unmap, MAX_GSO_SEGMENTS, SOCKET_BUFFER, UDP_RECV_BUF, UDP_RECV_MESSAGES,
};

/// The WireGuard UDP socket with batched sends and receives.
#[derive(Debug)]
pub struct UdpBatch {
    sock: UdpSocket,
    state: UdpSocketState,
    /// Whether the socket is IPv6 (dual-stack from [`crate::bind_udp`]), so
    /// that IPv4 destinations must be written v4-mapped.
    v6: bool,
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
        sys::set_buffers(&sock, &state, SOCKET_BUFFER);
        let v6 = sock.local_addr()?.is_ipv6();
        Ok(UdpBatch {
            sock,
            state,
            v6,
            gso_cap: MAX_GSO_SEGMENTS,
            gso_off_logged: false,
        })
    }

    /// Turns both offloads off: one datagram per send, and the kernel stops
    /// coalescing what it delivers. For kernels whose offload misbehaves and
    /// for tests of the fallback path.
    pub fn disable_offload(&mut self) -> io::Result<()> {
        self.gso_cap = 1;
        sys::disable_gro(&self.sock, &self.state)
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

    /// Sends every datagram queued in `tx`, one system call per GSO group
    /// (a run to one peer), and empties it. A failed send is logged and the
    /// rest still go: datagrams are allowed to be lost.
    pub async fn send_batch(&mut self, tx: &mut crate::TxBatch) {
        let max = self.max_segments();
        for group in tx.groups(max) {
            if let Err(e) = self
                .send(group.dst, group.contents, group.segment_size)
                .await
            {
                tracing::debug!(dst = %group.dst, segments = group.segments, error = %e, "UDP send failed");
            }
        }
        tx.clear();
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
        let destination = if self.v6 { to_socket(dst) } else { dst };
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
        loop {
            self.sock.readable().await?;
            match self.try_recv(batch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Receives what is ready without waiting, like [`UdpBatch::recv`];
    /// `WouldBlock` when nothing is.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.count = 0;
        let mut chunks = batch.storage.chunks_mut(UDP_RECV_BUF);
        let mut iovs: [IoSliceMut<'_>; UDP_RECV_MESSAGES] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
        let n = self.sock.try_io(Interest::READABLE, || {
            self.state
                .recv(UdpSockRef::from(&self.sock), &mut iovs, &mut batch.meta)
        })?;
        batch.count = n;
        Ok(n)
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

    #[tokio::test]
    async fn a_v4_only_socket_sends_to_plain_v4_addresses() {
        let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        let mut tx = UdpBatch::new(UdpSocket::from_std(std).unwrap()).unwrap();
        let rx = dual_stack().await;
        let dst = SocketAddr::from(([127, 0, 0, 1], rx.local_addr().unwrap().port()));
        tx.send(dst, b"v4 only", 7).await.unwrap();
        let (got, _) = collect(&rx, 1).await;
        assert_eq!(got, vec![(tx.local_addr().unwrap(), b"v4 only".to_vec())]);
    }

    #[tokio::test]
    async fn try_recv_says_would_block_when_nothing_waits() {
        let rx = dual_stack().await;
        let mut batch = RecvBatch::new();
        let err = rx.try_recv(&mut batch).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.messages(), 0);
    }
}
