//! The fallback where an OS has nothing better: socket buffers through
//! quinn-udp (within the OS's cap), no receive coalescing to switch off,
//! and a TUN without offload, read and written one packet per call with
//! what is ready drained without waiting.

use std::io;

use quinn_udp::{UdpSockRef, UdpSocketState};
use tokio::net::UdpSocket;

/// Asks for larger kernel socket buffers; the OS may give less.
pub(crate) fn set_buffers(sock: &UdpSocket, state: &UdpSocketState, bytes: usize) {
    let _ = state.set_recv_buffer_size(UdpSockRef::from(sock), bytes);
    let _ = state.set_send_buffer_size(UdpSockRef::from(sock), bytes);
}

/// Nothing coalesces received datagrams here.
#[cfg_attr(windows, allow(dead_code))]
pub(crate) fn disable_gro(_sock: &UdpSocket, _state: &UdpSocketState) -> io::Result<()> {
    Ok(())
}

#[cfg(feature = "tun")]
pub(crate) use self::tun::{tun_offload, TunRead, TunWrite, TUN_OFFSET};

#[cfg(feature = "tun")]
mod tun {
    use std::io;

    use crate::TunDevice;

    /// No offload header.
    pub(crate) const TUN_OFFSET: usize = 0;

    /// No TUN offload here.
    pub(crate) fn tun_offload(_tun: &TunDevice) -> bool {
        false
    }

    /// One packet per read.
    pub(crate) struct TunRead;

    impl TunRead {
        pub(crate) fn new() -> Self {
            TunRead
        }

        /// One packet (waiting for it), then whatever else is ready.
        pub(crate) async fn read(
            &mut self,
            tun: &TunDevice,
            bufs: &mut [Vec<u8>],
            sizes: &mut [usize],
        ) -> io::Result<usize> {
            sizes[0] = tun.recv(&mut bufs[0]).await?;
            let mut count = 1;
            while count < bufs.len() {
                match tun.try_recv(&mut bufs[count]) {
                    Ok(n) => {
                        sizes[count] = n;
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            Ok(count)
        }
    }

    /// One packet per write.
    pub(crate) struct TunWrite;

    impl TunWrite {
        pub(crate) fn new() -> Self {
            TunWrite
        }

        /// Writes every packet; the last error, if any, is returned after
        /// all were tried.
        pub(crate) async fn write(
            &mut self,
            tun: &TunDevice,
            slots: &mut [Vec<u8>],
        ) -> io::Result<()> {
            let mut result = Ok(());
            for slot in slots.iter() {
                if let Err(e) = tun.send(&slot[TUN_OFFSET..]).await {
                    result = Err(e);
                }
            }
            result
        }
    }
}
