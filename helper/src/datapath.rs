//! The data-plane loop: moves packets between the TUN device and the
//! WireGuard UDP socket through the sans-IO [`Tunnel`], and lets the
//! [`Observer`] see events, time pings and report statistics.
//!
//! Everything here is IO plumbing; what to do with a packet is decided by
//! `warren-tunnel` and `observe`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use warren_netcfg::TunDevice;
use warren_tunnel::{min_out_len, PeerConfig, Tunnel};

use crate::observe::{wall_clock_ms, Observer, PingRequest};

/// What the loop runs on.
pub struct DataPlane {
    pub tunnel: Tunnel,
    pub tun: TunDevice,
    pub udp: UdpSocket,
    /// The latest peer table from the directory.
    pub peers: watch::Receiver<Vec<PeerConfig>>,
    pub pings: mpsc::Receiver<PingRequest>,
    pub observer: Observer,
    /// Fires (or drops) when the loop should end.
    pub stop: oneshot::Receiver<()>,
}

/// One socket for both families: `[::]:port` with IPV6_V6ONLY off. Kept by
/// the manager for the helper's lifetime, so the port registered with the
/// coordinator stays valid across tunnel restarts.
pub fn bind_udp(port: u16) -> std::io::Result<std::net::UdpSocket> {
    let sock = std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// IPv4 peers are reached through the dual-stack socket as v4-mapped
/// addresses, and their datagrams arrive that way; the table speaks plain v4.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The socket's form of a table address (v4 becomes v4-mapped).
pub fn to_socket(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        SocketAddr::V6(_) => addr,
    }
}

async fn send(udp: &UdpSocket, dst: SocketAddr, payload: &[u8]) {
    if let Err(e) = udp.send_to(payload, to_socket(dst)).await {
        tracing::debug!(%dst, error = %e, "UDP send failed");
    }
}

/// Sends what the tunnel queued (handshakes, keepalives, packets that
/// waited for a handshake) and lets the observer see its events.
async fn flush(tunnel: &mut Tunnel, observer: &mut Observer, udp: &UdpSocket) {
    while let Some(t) = tunnel.poll_transmit() {
        send(udp, t.dst, &t.payload).await;
    }
    while let Some(e) = tunnel.poll_event() {
        observer.on_event(&e);
    }
    observer.flush(Instant::now(), wall_clock_ms(), tunnel);
}

/// Runs until `stop` fires, the TUN fails or the peer table's sender goes.
pub async fn run(dp: DataPlane) {
    let DataPlane {
        mut tunnel,
        tun,
        udp,
        mut peers,
        mut pings,
        mut observer,
        mut stop,
    } = dp;
    let mut tun_buf = vec![0u8; 65536];
    let mut udp_buf = vec![0u8; 65536];
    let mut out = vec![0u8; min_out_len(65536)];
    flush(&mut tunnel, &mut observer, &udp).await;
    loop {
        let deadline = match tunnel.poll_timeout() {
            Some(t) => t.min(observer.poll_timeout()),
            None => observer.poll_timeout(),
        };
        tokio::select! {
            _ = &mut stop => break,
            read = tun.recv(&mut tun_buf) => match read {
                Ok(n) if n > 0 => {
                    let n = n.min(tun_buf.len());
                    match tunnel.encapsulate(Instant::now(), &tun_buf[..n], &mut out) {
                        Ok(Some(t)) => {
                            let dst = t.dst;
                            let len = t.payload.len();
                            send(&udp, dst, &out[..len]).await;
                        }
                        Ok(None) => {}
                        Err(reason) => tracing::trace!(%reason, "outbound packet dropped"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading from the TUN failed; stopping the data plane");
                    break;
                }
            },
            recv = udp.recv_from(&mut udp_buf) => match recv {
                Ok((n, from)) => {
                    let now = Instant::now();
                    match tunnel.decapsulate(now, unmap(from), &udp_buf[..n], &mut out) {
                        Ok(Some(packet)) => {
                            if !observer.intercept(now, packet, &tunnel) {
                                if let Err(e) = tun.send(packet).await {
                                    tracing::debug!(error = %e, "writing to the TUN failed");
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => tracing::trace!(%reason, "datagram dropped"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            Some(req) = pings.recv() => {
                if let Some(t) = observer.ping(Instant::now(), req, &mut tunnel, &mut out) {
                    let dst = t.dst;
                    let len = t.payload.len();
                    send(&udp, dst, &out[..len]).await;
                }
            }
            changed = peers.changed() => {
                if changed.is_err() {
                    break;
                }
                let list = peers.borrow_and_update().clone();
                if let Err(e) = tunnel.set_peers(Instant::now(), list) {
                    tracing::warn!(error = %e, "some agents could not be added to the tunnel");
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if tunnel.poll_timeout().is_some_and(|t| t <= now) {
                    tunnel.handle_timeout(now);
                }
                observer.handle_timeout(now, wall_clock_ms(), &tunnel);
            }
        }
        flush(&mut tunnel, &mut observer, &udp).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_endpoints_round_trip_through_the_dual_stack_socket() {
        let v4: SocketAddr = "10.1.0.2:51820".parse().unwrap();
        let mapped = to_socket(v4);
        assert!(mapped.is_ipv6());
        assert_eq!(unmap(mapped), v4);
        let v6: SocketAddr = "[fd00::2]:51820".parse().unwrap();
        assert_eq!(to_socket(v6), v6);
        assert_eq!(unmap(v6), v6);
    }

    #[tokio::test]
    async fn dual_stack_socket_binds_an_os_chosen_port() {
        let sock = UdpSocket::from_std(bind_udp(0).unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
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
}
