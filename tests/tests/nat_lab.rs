//! The NAT lab the path layer's tests stand on behaves like the NATs it
//! stands for: behind plain masquerade a socket keeps one public mapping for
//! every destination and two such hosts can punch a hole to each other;
//! behind `masquerade random` every destination sees another port and hole
//! punching fails; the lab leaves nothing behind.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use warren_e2e::nat_lab::{
    Nat, NatLab, Side, LAPTOP_ROUTER_WAN, SERVER1, SERVER2, WORKSPACE_ROUTER_WAN,
};
use warren_e2e::netns::{can_run, in_netns};

const PORT: u16 = 3478;

/// A UDP socket bound in namespace `ns`.
fn socket_in(ns: &str, bind: &str) -> UdpSocket {
    let bind = bind.to_string();
    let socket = in_netns(ns, move || {
        UdpSocket::bind(bind).expect("bind a lab socket")
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set a read timeout");
    socket
}

/// Answers every datagram with the address it came from, for `for_how_long`.
fn observer(ns: &str, addr: std::net::Ipv4Addr, for_how_long: Duration) {
    let socket = socket_in(ns, &format!("{addr}:{PORT}"));
    std::thread::spawn(move || {
        let end = Instant::now() + for_how_long;
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(from.to_string().as_bytes(), from);
            }
        }
    });
}

/// The public address the observer at `server` sees `socket` as.
fn mapped(socket: &UdpSocket, server: std::net::Ipv4Addr) -> SocketAddr {
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        socket
            .send_to(b"who am i", (server, PORT))
            .expect("send to the observer");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return std::str::from_utf8(&buf[..n])
                .expect("the observer answers text")
                .parse()
                .expect("the observer answers an address");
        }
    }
    panic!("no answer from the observer at {server}");
}

/// Whether `a` and `b` can exchange datagrams by sending to each other's
/// mapped address at the same time (hole punching), within about 2 s.
fn punch(a: &UdpSocket, a_public: SocketAddr, b: &UdpSocket, b_public: SocketAddr) -> bool {
    let mut buf = [0u8; 64];
    let (mut a_got, mut b_got) = (false, false);
    for _ in 0..10 {
        let _ = a.send_to(b"punch", b_public);
        let _ = b.send_to(b"punch", a_public);
        a_got |= a.recv_from(&mut buf).is_ok();
        b_got |= b.recv_from(&mut buf).is_ok();
        if a_got && b_got {
            return true;
        }
    }
    false
}

#[test]
fn the_lab_nats_map_and_filter_like_the_nats_they_stand_for() {
    if !can_run("nat_lab", &["nft", "conntrack", "sysctl"]) {
        return;
    }
    let names;
    {
        let lab = NatLab::create(Nat::EndpointIndependent, Nat::EndpointIndependent);
        names = [
            lab.public.clone(),
            lab.laptop.clone(),
            lab.laptop_router.clone(),
            lab.workspace.clone(),
            lab.workspace_router.clone(),
            lab.server1.clone(),
            lab.server2.clone(),
        ];
        observer(&lab.server1, SERVER1, Duration::from_secs(30));
        observer(&lab.server2, SERVER2, Duration::from_secs(30));

        // Endpoint-independent: one mapping, whatever the destination.
        let laptop = socket_in(&lab.laptop, "0.0.0.0:0");
        let l1 = mapped(&laptop, SERVER1);
        let l2 = mapped(&laptop, SERVER2);
        assert_eq!(
            l1.ip(),
            LAPTOP_ROUTER_WAN,
            "the laptop is seen at its router"
        );
        assert_eq!(l1, l2, "plain masquerade keeps one mapping per socket");
        let workspace = socket_in(&lab.workspace, "0.0.0.0:0");
        let w1 = mapped(&workspace, SERVER1);
        assert_eq!(w1.ip(), WORKSPACE_ROUTER_WAN);

        // Unsolicited datagrams don't get in: the workspace can't reach the
        // laptop's mapping before the laptop has sent to it.
        let stranger = socket_in(&lab.workspace, "0.0.0.0:0");
        stranger.send_to(b"hello", l1).expect("send");
        let mut buf = [0u8; 64];
        assert!(
            laptop.recv_from(&mut buf).is_err(),
            "the laptop's router drops what nobody asked for"
        );

        // Two endpoint-independent NATs: hole punching works.
        assert!(
            punch(&laptop, l1, &workspace, w1),
            "hole punching between two plain-masquerade NATs"
        );

        // Symmetric on the laptop's side: a new port per destination, and
        // the hole the workspace punches toward the mapping the server saw
        // leads nowhere.
        lab.set_nat(Side::Laptop, Nat::Symmetric);
        let laptop = socket_in(&lab.laptop, "0.0.0.0:0");
        let s1 = mapped(&laptop, SERVER1);
        let s2 = mapped(&laptop, SERVER2);
        assert_eq!(s1.ip(), LAPTOP_ROUTER_WAN);
        assert_ne!(
            s1.port(),
            s2.port(),
            "masquerade random maps per destination"
        );
        let workspace = socket_in(&lab.workspace, "0.0.0.0:0");
        let w = mapped(&workspace, SERVER1);
        assert!(
            !punch(&laptop, s1, &workspace, w),
            "hole punching through a symmetric NAT must fail (only a relay helps)"
        );
    }
    let list = warren_e2e::netns::ip(&["netns", "list"]);
    for name in &names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "namespace {name} left behind"
        );
    }
}
