//! The data plane's IO layer: batched UDP and TUN, per OS. The per-packet
//! system call, not the cipher, is what limits a userspace WireGuard, so
//! every crossing of the kernel boundary here moves many packets. The
//! helper's packet loop and the agent's driver both run on it.
//!
//! - [`UdpBatch`]: the WireGuard socket through `quinn-udp`. Sends a run of
//!   equal-size datagrams to one destination with one `sendmsg` (UDP GSO,
//!   `UDP_SEGMENT`) and receives with `recvmmsg` into reusable buffers
//!   ([`RecvBatch`]), each of which may hold many coalesced datagrams (UDP
//!   GRO). [`bind_udp`] opens it dual-stack.
//! - [`TxBatch`]: an arena that encrypted datagrams are written into one
//!   after another, and that cuts them into GSO groups (same destination,
//!   same size, contiguous).
//! - [`TunReader`] / [`TunWriter`] (feature `tun`, on by default): the TUN
//!   device with offload: one read yields a TCP super-segment split into MTU
//!   packets; a batch of packets is coalesced per flow (GRO) and written as
//!   a few super-packets. Without offload they read and write one packet
//!   per call and drain what is ready without waiting.
//!
//! Everything falls back on its own: a kernel without GSO/GRO gets one
//! datagram per call, a TUN without a vnet header one packet per read.
//! Buffers are allocated once; the data path allocates nothing.
//!
//! What differs per OS lives in one file each: `linux.rs` (socket buffers
//! past the sysctl cap, GRO off, the TUN's virtio-net offload), `windows.rs`
//! (URO off through quinn-udp), `macos.rs`, and `portable.rs`, the fallback
//! the others build on where they have nothing better.

use std::io;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use warren_proto::limits::{check_endpoint, MAX_ENDPOINTS};

mod tx;
mod udp;

#[cfg(feature = "tun")]
mod tun;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(windows)]
mod windows;

#[cfg(target_os = "linux")]
use linux as sys;
#[cfg(target_os = "macos")]
use macos as sys;
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
use portable as sys;
#[cfg(windows)]
use windows as sys;

pub use tx::{Group, Groups, TxBatch};
pub use udp::{RecvBatch, UdpBatch};

#[cfg(feature = "tun")]
pub use tun::{max_packet, Offloads, TunDevice, TunReader, TunWriter, TUN_OFFSET};

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

/// Socket buffers the kernel should give the WireGuard socket: a burst of
/// a few super-segments must not overflow them (what wireguard-go asks too).
const SOCKET_BUFFER: usize = 7 << 20;

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

/// The WireGuard socket on `port` (0 picks a free one), non-blocking: one
/// socket for both families (`[::]:port` with `IPV6_V6ONLY` off, which is
/// not every OS's default), or IPv4 only on a host without IPv6. A port
/// already taken is an error, not a reason to fall back.
pub fn bind_udp(port: u16) -> io::Result<std::net::UdpSocket> {
    match bind_dual_stack(port) {
        Ok(sock) => Ok(sock),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "no dual-stack UDP socket; using IPv4 only");
            let sock =
                std::net::UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))?;
            sock.set_nonblocking(true)?;
            Ok(sock)
        }
    }
}

fn bind_dual_stack(port: u16) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    socket.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port).into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Where peers can reach a WireGuard socket on `port`: every address of an
/// interface that is up, except loopback, link-local, multicast and the
/// interface `skip_interface` (the tunnel's own), at most
/// [`MAX_ENDPOINTS`], IPv4 first. These are the host candidates of the
/// path layer on the helper and the agent alike.
pub fn local_endpoints(port: u16, skip_interface: Option<&str>) -> Vec<SocketAddr> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces,
        Err(e) => {
            tracing::warn!(error = %e, "couldn't list this device's addresses");
            return Vec::new();
        }
    };
    let mut out: Vec<SocketAddr> = interfaces
        .iter()
        .filter(|ifa| Some(ifa.name.as_str()) != skip_interface && ifa.is_oper_up())
        .map(|ifa| SocketAddr::new(ifa.ip(), port))
        .filter(|endpoint| check_endpoint(*endpoint, false).is_ok())
        .collect();
    out.sort();
    out.dedup();
    // The coordinator refuses more; a machine with many bridges keeps the
    // first few (IPv4 sorts first, which most networks reach).
    out.truncate(MAX_ENDPOINTS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_the_dual_stack_socket() {
        let v4: SocketAddr = "10.1.0.2:51820".parse().unwrap();
        assert!(to_socket(v4).is_ipv6());
        assert_eq!(unmap(to_socket(v4)), v4);
        let v6: SocketAddr = "[fd00::2]:51820".parse().unwrap();
        assert_eq!(to_socket(v6), v6);
        assert_eq!(unmap(v6), v6);
    }

    #[tokio::test]
    async fn dual_stack_socket_binds_an_os_chosen_port_and_hears_v4() {
        let sock = tokio::net::UdpSocket::from_std(bind_udp(0).unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(
            addr.is_ipv6(),
            "this host has IPv6, so the socket is dual-stack"
        );
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

    #[test]
    fn a_taken_port_is_an_error_not_a_v4_fallback() {
        let first = bind_udp(0).unwrap();
        let port = first.local_addr().unwrap().port();
        let err = bind_udp(port).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
