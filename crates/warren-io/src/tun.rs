//! Batched reads and writes on the TUN device: with the OS's offload one
//! read is a TCP super-segment split into MTU packets and a batch of
//! packets is written per flow as coalesced super-packets; without it, one
//! packet per call and a drain of what is ready without waiting. How each
//! OS does it is `sys::TunRead` / `sys::TunWrite`.

use std::io;

use crate::{sys, UdpBatch, TUN_BATCH, TUN_WRITE_BATCH};

/// The TUN device the data plane reads and writes (what `warren-netcfg`
/// creates).
pub type TunDevice = tun_rs::AsyncDevice;

/// The offload header in front of every packet read or written with
/// offload (Linux's virtio-net header); 0 where there is none.
pub const TUN_OFFSET: usize = sys::TUN_OFFSET;

/// A [`TunWriter`] slot's capacity: tun-rs coalesces a flow into its first
/// packet's buffer only if that can take a whole super-packet without
/// reallocating (and room for the header twice, as it asks).
const TUN_WRITE_SLOT: usize = 2 * TUN_OFFSET + 65535;

/// The largest packet the TUN hands over: its MTU (offload splits
/// super-segments to it), never less than Ethernet's.
pub fn max_packet(tun: &TunDevice) -> usize {
    match tun.mtu() {
        Ok(mtu) => usize::from(mtu).max(1500),
        Err(e) => {
            tracing::debug!(error = %e, "couldn't read the TUN's MTU");
            65535
        }
    }
}

/// Which offloads this machine gives the data plane, for the log line that
/// explains its throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    /// The TUN hands over TCP super-segments and takes coalesced writes.
    pub tun: bool,
    /// Datagrams one UDP send may carry (1: no GSO).
    pub udp_gso_segments: usize,
    /// The kernel coalesces received datagrams.
    pub udp_gro: bool,
}

impl Offloads {
    /// What `tun` and `udp` have.
    pub fn of(tun: &TunDevice, udp: &UdpBatch) -> Self {
        Offloads {
            tun: sys::tun_offload(tun),
            udp_gso_segments: udp.max_segments(),
            udp_gro: udp.gro(),
        }
    }

    /// Whether every path moves many packets per system call.
    pub fn all(&self) -> bool {
        self.tun && self.udp_gso_segments > 1 && self.udp_gro
    }
}

/// Batched reads from the TUN device.
pub struct TunReader {
    os: sys::TunRead,
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
            os: sys::TunRead::new(),
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
        self.count = self.os.read(tun, &mut self.bufs, &mut self.sizes).await?;
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
    os: sys::TunWrite,
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
            os: sys::TunWrite::new(),
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
        self.os.write(tun, &mut self.slots[..used]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
