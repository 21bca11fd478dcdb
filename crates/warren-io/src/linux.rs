//! Linux: socket buffers past `net.core.*mem_max` (the helper runs as
//! root), UDP GRO switched off on request, and the TUN's virtio-net offload:
//! reads split TCP super-segments (`recv_multiple`), writes coalesce per
//! flow (`send_multiple` with a GRO table).

use std::io;
use std::os::fd::AsRawFd;

use quinn_udp::UdpSocketState;
use tokio::net::UdpSocket;

/// Sets an integer socket option.
fn set_int(
    sock: &UdpSocket,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd is our live socket, and the option value is a c_int
    // whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Larger kernel socket buffers; root may exceed `net.core.*mem_max` with
/// the `FORCE` options, everyone else gets what the cap allows.
pub(crate) fn set_buffers(sock: &UdpSocket, _state: &UdpSocketState, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(sock, libc::SOL_SOCKET, force, size).is_err() {
            let _ = set_int(sock, libc::SOL_SOCKET, plain, size);
        }
    }
}

/// Stops the kernel coalescing received datagrams (quinn-udp turned it on).
pub(crate) fn disable_gro(sock: &UdpSocket, _state: &UdpSocketState) -> io::Result<()> {
    set_int(sock, libc::SOL_UDP, libc::UDP_GRO, 0)
}

#[cfg(feature = "tun")]
pub(crate) use self::tun::{tun_offload, TunRead, TunWrite, TUN_OFFSET};

#[cfg(feature = "tun")]
mod tun {
    use std::io;

    use crate::TunDevice;

    /// The virtio-net header in front of every packet read or written with
    /// offload.
    pub(crate) const TUN_OFFSET: usize = tun_rs::VIRTIO_NET_HDR_LEN;

    /// Free packet buffers needed before another super-segment is read in
    /// the same batch: a 64 KiB segment with a 512-byte MSS splits into 128.
    const TUN_SPLIT_ROOM: usize = 128;

    /// TUN packets in a row that may fail to split before a read gives up.
    const MAX_UNSPLITTABLE: u32 = 1024;

    /// Whether the TUN does TCP segmentation offload (IFF_VNET_HDR, TSO).
    pub(crate) fn tun_offload(tun: &TunDevice) -> bool {
        tun.tcp_gso()
    }

    /// Reads super-segments into one buffer and splits them into packets.
    pub(crate) struct TunRead {
        original: Vec<u8>,
    }

    impl TunRead {
        pub(crate) fn new() -> Self {
            TunRead {
                original: vec![0; TUN_OFFSET + 65535],
            }
        }

        /// At least one read (waiting for it), then more without waiting
        /// while a whole super-segment still fits; returns the packets in
        /// `bufs`/`sizes`.
        pub(crate) async fn read(
            &mut self,
            tun: &TunDevice,
            bufs: &mut [Vec<u8>],
            sizes: &mut [usize],
        ) -> io::Result<usize> {
            let mut unsplittable = 0;
            let mut count = loop {
                match tun.recv_multiple(&mut self.original, bufs, sizes, 0).await {
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
            let room = if tun.tcp_gso() { TUN_SPLIT_ROOM } else { 1 };
            while bufs.len() - count >= room {
                match tun.try_recv_multiple(
                    &mut self.original,
                    &mut bufs[count..],
                    &mut sizes[count..],
                    0,
                ) {
                    Ok(n) => count += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Keep what we have; a persistent error shows up on the
                    // next blocking read.
                    Err(e) => {
                        tracing::debug!(error = %e, "TUN read failed");
                        break;
                    }
                }
            }
            Ok(count)
        }
    }

    /// Coalesces a batch per flow before writing it.
    pub(crate) struct TunWrite {
        gro: tun_rs::GROTable,
    }

    impl TunWrite {
        pub(crate) fn new() -> Self {
            TunWrite {
                gro: tun_rs::GROTable::new(),
            }
        }

        /// Writes `slots` (each a packet after [`TUN_OFFSET`] bytes of room
        /// for the header), coalesced.
        pub(crate) async fn write(
            &mut self,
            tun: &TunDevice,
            slots: &mut [Vec<u8>],
        ) -> io::Result<()> {
            tun.send_multiple(&mut self.gro, slots, TUN_OFFSET)
                .await
                .map(|_| ())
        }
    }
}
