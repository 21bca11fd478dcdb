//! Windows: UDP receive coalescing (URO) is switched off through quinn-udp,
//! which leaves it off by default anyway; socket buffers and the Wintun
//! device take the portable path (Wintun has no offload header).

use std::io;

use quinn_udp::{UdpSockRef, UdpSocketState};
use tokio::net::UdpSocket;

pub(crate) use crate::portable::set_buffers;
#[cfg(feature = "tun")]
pub(crate) use crate::portable::{tun_offload, TunRead, TunWrite, TUN_OFFSET};

/// Stops the stack coalescing received datagrams.
pub(crate) fn disable_gro(sock: &UdpSocket, state: &UdpSocketState) -> io::Result<()> {
    state.set_gro(UdpSockRef::from(sock), false)
}
