//! The agent's data plane against a simulated laptop: a second WireGuard
//! table plus a smoltcp client stack, joined to the agent either through
//! in-memory queues (sans-IO tests) or through real UDP sockets on 127.0.0.1
//! with the tokio driver forwarding to real `TcpListener`s.

use base64::Engine as _;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    HardwareAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr,
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use warren_agent::dataplane::{Dataplane, QueueDevice, StackConfig, StackEvent, WorkspaceStack};
use warren_proto::control::ClientPeer;
use warren_tunnel::{OwnedTransmit, PeerConfig, StaticSecret, Tunnel};

const AGENT_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const AGENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const LAPTOP_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const LAPTOP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

fn agent_ep() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
fn laptop_ep() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

/// The laptop: a WireGuard table with the agent as its only peer, and a
/// smoltcp interface for TCP clients (or raw packets for crafted tests).
struct Laptop {
    tunnel: Tunnel,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    epoch: Instant,
    transmits: VecDeque<OwnedTransmit>,
    buf: Vec<u8>,
}

impl Laptop {
    fn new(now: Instant, agent_key: [u8; 32], agent_endpoint: SocketAddr) -> Self {
        let mut tunnel = Tunnel::generate();
        tunnel.set_local_addresses([LAPTOP_V4.into(), LAPTOP_V6.into()]);
        tunnel
            .upsert_peer(
                now,
                PeerConfig {
                    public_key: agent_key,
                    addresses: vec![AGENT_V4.into(), AGENT_V6.into()],
                    endpoint: Some(agent_endpoint),
                    persistent_keepalive: None,
                    candidates: Vec::new(),
                },
            )
            .unwrap();
        let mut device = QueueDevice::new();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            SmolInstant::ZERO,
        );
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(LAPTOP_V4), 32)).unwrap();
            a.push(IpCidr::new(IpAddress::Ipv6(LAPTOP_V6), 128))
                .unwrap();
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(LAPTOP_V4)
            .unwrap();
        iface
            .routes_mut()
            .add_default_ipv6_route(LAPTOP_V6)
            .unwrap();
        Self {
            tunnel,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            epoch: now,
            transmits: VecDeque::new(),
            buf: vec![0; 70_000],
        }
    }

    fn peer_config(&self, endpoint: Option<SocketAddr>) -> PeerConfig {
        PeerConfig {
            public_key: self.tunnel.public_key(),
            addresses: vec![LAPTOP_V4.into(), LAPTOP_V6.into()],
            endpoint,
            persistent_keepalive: None,
            candidates: Vec::new(),
        }
    }

    fn client_peer(&self, endpoint: SocketAddr) -> ClientPeer {
        ClientPeer {
            id: "laptop".into(),
            user: "alice".into(),
            public_key: base64::engine::general_purpose::STANDARD.encode(self.tunnel.public_key()),
            addresses: vec![LAPTOP_V4.into(), LAPTOP_V6.into()],
            endpoints: vec![endpoint],
        }
    }

    fn input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if let Ok(Some(p)) = self.tunnel.decapsulate(now, from, datagram, &mut self.buf) {
            self.device.rx.push_back(p.to_vec());
        }
        self.drain();
    }

    fn send_packet(&mut self, now: Instant, packet: &[u8]) {
        if let Ok(Some(t)) = self.tunnel.encapsulate(now, packet, &mut self.buf) {
            self.transmits.push_back(OwnedTransmit {
                dst: t.dst,
                payload: t.payload.to_vec(),
            });
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(t) = self.tunnel.poll_transmit() {
            self.transmits.push_back(t);
        }
    }

    /// Runs the client stack and the tunnel's timers, then encrypts what the
    /// stack produced.
    fn poll(&mut self, now: Instant) {
        if self.tunnel.poll_timeout().is_some_and(|t| t <= now) {
            self.tunnel.handle_timeout(now);
        }
        let ts = SmolInstant::from_micros(now.duration_since(self.epoch).as_micros() as i64);
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        while let Some(p) = self.device.tx.pop_front() {
            self.send_packet(now, &p);
        }
        self.drain();
    }

    fn connect(&mut self, dst: IpAddr, port: u16, local_port: u16) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        s.connect(
            self.iface.context(),
            (IpAddress::from(dst), port),
            local_port,
        )
        .unwrap();
        self.sockets.add(s)
    }
}

fn agent_stack(now: Instant, allow_ports: Vec<u16>) -> WorkspaceStack {
    WorkspaceStack::new(
        now,
        StackConfig {
            private_key: StaticSecret::random_from_rng(rand::thread_rng()),
            addresses: vec![AGENT_V4.into(), AGENT_V6.into()],
            allow_ports,
        },
    )
    .unwrap()
}

/// Moves datagrams both ways until neither side has anything to send.
fn shuttle(now: Instant, laptop: &mut Laptop, agent: &mut WorkspaceStack) {
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = laptop.transmits.pop_front() {
            assert_eq!(t.dst, agent_ep());
            agent.handle_datagram(now, laptop_ep(), &t.payload);
            moved = true;
        }
        while let Some(t) = agent.poll_transmit() {
            assert_eq!(t.dst, laptop_ep());
            laptop.input(now, agent_ep(), &t.payload);
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("the two sides kept exchanging datagrams");
}

fn echo_v4(ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    ipv4_from_laptop(IpProtocol::Icmp, icmp.buffer_len(), |payload, caps| {
        icmp.emit(&mut Icmpv4Packet::new_unchecked(payload), caps)
    })
}

/// An IPv4 packet from the laptop to the agent whose payload (`len` bytes)
/// `emit` writes.
fn ipv4_from_laptop(
    next_header: IpProtocol,
    len: usize,
    emit: impl FnOnce(&mut [u8], &ChecksumCapabilities),
) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: LAPTOP_V4,
        dst_addr: AGENT_V4,
        next_header,
        payload_len: len,
        hop_limit: 64,
    };
    let mut buf = vec![0; ip.buffer_len() + len];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut buf);
    ip.emit(&mut packet, &caps);
    emit(packet.payload_mut(), &caps);
    buf
}

fn echo_v6(ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv6Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let ip = Ipv6Repr {
        src_addr: LAPTOP_V6,
        dst_addr: AGENT_V6,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0; ip.buffer_len() + icmp.buffer_len()];
    let mut packet = Ipv6Packet::new_unchecked(&mut buf);
    ip.emit(&mut packet);
    icmp.emit(
        &LAPTOP_V6,
        &AGENT_V6,
        &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

fn syn_v4(src_port: u16, dst_port: u16) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 64_000,
        window_scale: None,
        max_seg_size: Some(1200),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    ipv4_from_laptop(IpProtocol::Tcp, tcp.buffer_len(), |payload, caps| {
        tcp.emit(
            &mut TcpPacket::new_unchecked(payload),
            &IpAddress::Ipv4(LAPTOP_V4),
            &IpAddress::Ipv4(AGENT_V4),
            caps,
        )
    })
}

/// The TCP flags (SYN, ACK, RST) and ports of an IPv4 TCP packet.
fn tcp_reply(packet: &[u8]) -> (bool, bool, bool, u16, u16) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Tcp);
    assert_eq!(ip.src_addr(), AGENT_V4);
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    (
        tcp.syn(),
        tcp.ack(),
        tcp.rst(),
        tcp.src_port(),
        tcp.dst_port(),
    )
}

fn connected_pair(now: Instant, allow_ports: Vec<u16>) -> (Laptop, WorkspaceStack) {
    let mut agent = agent_stack(now, allow_ports);
    let laptop = Laptop::new(now, agent.public_key(), agent_ep());
    agent
        .set_peers(now, [laptop.peer_config(Some(laptop_ep()))])
        .unwrap();
    (laptop, agent)
}

#[test]
fn ping_to_either_tunnel_address_gets_an_echo_reply() {
    let now = Instant::now();
    let (mut laptop, mut agent) = connected_pair(now, vec![]);

    laptop.send_packet(now, &echo_v4(7, 1, b"hello warren"));
    shuttle(now, &mut laptop, &mut agent);
    let reply = laptop.device.rx.pop_front().expect("an IPv4 echo reply");
    let ip = Ipv4Packet::new_checked(&reply).unwrap();
    assert_eq!(ip.src_addr(), AGENT_V4);
    assert_eq!(ip.dst_addr(), LAPTOP_V4);
    let icmp = Icmpv4Repr::parse(
        &Icmpv4Packet::new_checked(ip.payload()).unwrap(),
        &ChecksumCapabilities::default(),
    )
    .unwrap();
    assert_eq!(
        icmp,
        Icmpv4Repr::EchoReply {
            ident: 7,
            seq_no: 1,
            data: b"hello warren"
        }
    );

    laptop.send_packet(now, &echo_v6(8, 2, b"over six"));
    shuttle(now, &mut laptop, &mut agent);
    let reply = laptop.device.rx.pop_front().expect("an IPv6 echo reply");
    let ip = Ipv6Packet::new_checked(&reply).unwrap();
    assert_eq!(ip.src_addr(), AGENT_V6);
    let icmp = Icmpv6Repr::parse(
        &AGENT_V6,
        &LAPTOP_V6,
        &Icmpv6Packet::new_checked(ip.payload()).unwrap(),
        &ChecksumCapabilities::default(),
    )
    .unwrap();
    assert_eq!(
        icmp,
        Icmpv6Repr::EchoReply {
            ident: 8,
            seq_no: 2,
            data: b"over six"
        }
    );
    assert!(laptop.device.rx.is_empty());
}

#[test]
fn an_idle_stack_does_not_ask_to_be_woken_soon() {
    let now = Instant::now();
    let (mut laptop, mut agent) = connected_pair(now, vec![22, 8080]);
    // Listening sockets need no timer; the tunnel's are far away.
    assert!(agent
        .poll_timeout()
        .is_none_or(|t| t >= now + Duration::from_secs(1)));
    laptop.send_packet(now, &echo_v4(1, 1, b"wake"));
    shuttle(now, &mut laptop, &mut agent);
    assert_eq!(laptop.device.rx.len(), 1);
    // After a handshake only WireGuard's own timers remain, seconds away.
    let next = agent.poll_timeout().expect("the session has timers");
    assert!(next >= now + Duration::from_secs(1), "{:?}", next - now);
}

#[test]
fn allowed_port_is_accepted_and_others_are_reset() {
    let now = Instant::now();
    let (mut laptop, mut agent) = connected_pair(now, vec![8080]);

    laptop.send_packet(now, &syn_v4(50_000, 8080));
    laptop.send_packet(now, &syn_v4(50_001, 8080));
    laptop.send_packet(now, &syn_v4(50_002, 22));
    shuttle(now, &mut laptop, &mut agent);

    let replies: Vec<_> = laptop.device.rx.drain(..).map(|p| tcp_reply(&p)).collect();
    // Two back-to-back SYNs to one port both get a SYN-ACK (the listener is
    // re-armed between them); the SYN to a port not allowed gets a RST.
    assert!(
        replies.contains(&(true, true, false, 8080, 50_000)),
        "{replies:?}"
    );
    assert!(
        replies.contains(&(true, true, false, 8080, 50_001)),
        "{replies:?}"
    );
    assert!(
        replies
            .iter()
            .any(|&(syn, _, rst, src, dst)| !syn && rst && src == 22 && dst == 50_002),
        "{replies:?}"
    );
    assert_eq!(replies.len(), 3, "{replies:?}");

    let mut new = Vec::new();
    while let Some(e) = agent.poll_event() {
        if let StackEvent::NewConnection { port, remote, .. } = e {
            new.push((port, remote));
        }
    }
    new.sort();
    assert_eq!(
        new,
        vec![
            (8080, SocketAddr::from((LAPTOP_V4, 50_000))),
            (8080, SocketAddr::from((LAPTOP_V4, 50_001))),
        ]
    );
    assert_eq!(agent.connection_count(), 2);
}

#[test]
fn a_peer_removed_by_set_peers_can_no_longer_connect() {
    let now = Instant::now();
    let (mut laptop, mut agent) = connected_pair(now, vec![8080]);
    laptop.send_packet(now, &echo_v4(1, 1, b"before"));
    shuttle(now, &mut laptop, &mut agent);
    assert_eq!(
        laptop.device.rx.drain(..).count(),
        1,
        "works before removal"
    );

    agent.set_peers(now, []).unwrap();
    let before = agent.counters();

    // With the session it already has, and with a fresh handshake.
    laptop.send_packet(now, &syn_v4(50_000, 8080));
    shuttle(now, &mut laptop, &mut agent);
    let later = now + Duration::from_secs(1);
    let mut fresh = Laptop::new(later, agent.public_key(), agent_ep());
    // Same key as the removed laptop would be refused too; a new device key
    // that was never authorized is refused the same way.
    fresh.send_packet(later, &syn_v4(50_001, 8080));
    for _ in 0..10 {
        while let Some(t) = fresh.transmits.pop_front() {
            agent.handle_datagram(later, laptop_ep(), &t.payload);
        }
        while let Some(t) = agent.poll_transmit() {
            fresh.input(later, agent_ep(), &t.payload);
        }
    }

    assert!(laptop.device.rx.is_empty(), "no reply after removal");
    assert!(fresh.device.rx.is_empty(), "an unknown key gets nothing");
    assert_eq!(agent.connection_count(), 0);
    let after = agent.counters();
    assert!(
        after.dropped_invalid + after.dropped_rejected
            > before.dropped_invalid + before.dropped_rejected
    );
    assert!(after.dropped_unknown_peer > before.dropped_unknown_peer);
}

#[test]
fn a_packet_to_an_address_that_is_not_the_agents_is_dropped_and_counted() {
    let now = Instant::now();
    let (mut laptop, mut agent) = connected_pair(now, vec![]);
    laptop.send_packet(now, &echo_v4(1, 1, b"handshake"));
    shuttle(now, &mut laptop, &mut agent);
    assert_eq!(laptop.device.rx.drain(..).count(), 1, "the session works");

    // A device that routes a LAN address to the agent, as if the agent's
    // host were its router.
    let lan = Ipv4Addr::new(10, 0, 0, 5);
    let mut cfg = laptop.peer_config(Some(agent_ep()));
    cfg.public_key = agent.public_key();
    cfg.addresses = vec![AGENT_V4.into(), AGENT_V6.into(), lan.into()];
    laptop.tunnel.upsert_peer(now, cfg).unwrap();
    let mut packet = echo_v4(1, 2, b"through");
    let mut ip = Ipv4Packet::new_unchecked(&mut packet);
    ip.set_dst_addr(lan);
    ip.fill_checksum();
    laptop.send_packet(now, &packet);
    shuttle(now, &mut laptop, &mut agent);

    assert_eq!(agent.counters().dropped_destination_not_local, 1);
    assert!(laptop.device.rx.is_empty(), "nothing answers for the LAN");
}

// ---- through the tokio driver, real UDP on 127.0.0.1, real local services ----

fn checksum(data: &[u8]) -> u64 {
    // FNV-1a: order-sensitive, so a reordered or corrupted byte shows.
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A bound agent data plane, its stack settings and its public key.
async fn start_agent(allow_ports: Vec<u16>) -> (Dataplane, StackConfig, [u8; 32], SocketAddr) {
    let dp = Dataplane::bind(0).await.unwrap();
    let port = dp.local_addr().unwrap().port();
    let private_key = StaticSecret::random_from_rng(rand::thread_rng());
    let public = Tunnel::new(private_key.clone()).public_key();
    let config = StackConfig {
        private_key,
        addresses: vec![AGENT_V4.into(), AGENT_V6.into()],
        allow_ports,
    };
    (dp, config, public, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Drives the laptop over a real UDP socket until `step` says it is done
/// (or panics after `limit`).
async fn drive(
    laptop: &mut Laptop,
    udp: &UdpSocket,
    limit: Duration,
    step: impl FnMut(&mut Laptop) -> bool,
) {
    assert!(
        drive_for(laptop, udp, limit, step).await,
        "the laptop side timed out"
    );
}

/// Drives the laptop until `step` says it is done (true) or `limit` passes
/// (false).
async fn drive_for(
    laptop: &mut Laptop,
    udp: &UdpSocket,
    limit: Duration,
    mut step: impl FnMut(&mut Laptop) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 70_000];
    loop {
        if Instant::now() >= deadline {
            return false;
        }
        let now = Instant::now();
        laptop.poll(now);
        let done = step(laptop);
        laptop.poll(now);
        while let Some(t) = laptop.transmits.pop_front() {
            udp.send_to(&t.payload, t.dst).await.unwrap();
        }
        if done {
            return true;
        }
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(2), udp.recv_from(&mut buf)).await
        {
            laptop.input(Instant::now(), from, &buf[..n]);
            for _ in 0..256 {
                match udp.try_recv_from(&mut buf) {
                    Ok((n, from)) => laptop.input(Instant::now(), from, &buf[..n]),
                    Err(_) => break,
                }
            }
        }
    }
}

/// One client connection sending `data` and collecting the echo.
struct Transfer {
    handle: SocketHandle,
    data: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    closed: bool,
}

impl Transfer {
    fn step(&mut self, laptop: &mut Laptop) -> bool {
        let s = laptop.sockets.get_mut::<tcp::Socket>(self.handle);
        if s.can_send() && self.sent < self.data.len() {
            self.sent += s.send_slice(&self.data[self.sent..]).unwrap();
        }
        if self.sent == self.data.len() && !self.closed && s.may_send() {
            s.close();
            self.closed = true;
        }
        while s.can_recv() {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = s.recv_slice(&mut chunk).unwrap();
            self.received.extend_from_slice(&chunk[..n]);
        }
        self.received.len() == self.data.len() && !s.may_recv()
    }
}

async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn mebibyte_round_trips_byte_exact_through_the_driver() {
    let (port, server) = echo_server().await;
    let (dp, config, agent_key, agent_addr) = start_agent(vec![port]).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut laptop = Laptop::new(Instant::now(), agent_key, agent_addr);
    let (peers_tx, peers_rx) =
        tokio::sync::watch::channel(vec![laptop.client_peer(udp.local_addr().unwrap())]);
    let agent = tokio::spawn(dp.run(config, peers_rx));

    let mib: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut transfers = vec![
        Transfer {
            handle: laptop.connect(AGENT_V4.into(), port, 41_000),
            data: mib.clone(),
            sent: 0,
            received: Vec::new(),
            closed: false,
        },
        Transfer {
            handle: laptop.connect(AGENT_V4.into(), port, 41_001),
            data: mib[..300_000].to_vec(),
            sent: 0,
            received: Vec::new(),
            closed: false,
        },
        Transfer {
            handle: laptop.connect(AGENT_V6.into(), port, 41_002),
            data: mib[..100_000].to_vec(),
            sent: 0,
            received: Vec::new(),
            closed: false,
        },
    ];
    drive(&mut laptop, &udp, Duration::from_secs(60), |l| {
        let mut all = true;
        for t in transfers.iter_mut() {
            all &= t.step(l);
        }
        all
    })
    .await;
    for t in &transfers {
        assert_eq!(t.received.len(), t.data.len());
        assert_eq!(checksum(&t.received), checksum(&t.data));
        assert!(t.received == t.data);
    }

    drop(peers_tx);
    tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .expect("the data plane stops when its peer list goes away")
        .unwrap()
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn allowed_port_with_nothing_listening_is_reset() {
    // A port that was free a moment ago: nothing accepts on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (dp, config, agent_key, agent_addr) = start_agent(vec![port]).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut laptop = Laptop::new(Instant::now(), agent_key, agent_addr);
    let (_peers_tx, peers_rx) =
        tokio::sync::watch::channel(vec![laptop.client_peer(udp.local_addr().unwrap())]);
    let agent = tokio::spawn(dp.run(config, peers_rx));

    let handle = laptop.connect(AGENT_V4.into(), port, 42_000);
    let mut got_data = false;
    drive(&mut laptop, &udp, Duration::from_secs(10), |l| {
        let s = l.sockets.get_mut::<tcp::Socket>(handle);
        got_data |= s.can_recv();
        // Closed after a RST; never a clean, open connection.
        s.state() == tcp::State::Closed
    })
    .await;
    assert!(!got_data);
    agent.abort();
}

#[tokio::test]
async fn local_service_closing_closes_the_tunnel_side() {
    // The service writes a greeting and hangs up; the laptop sees the
    // greeting and then a FIN.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"SSH-2.0-warren-test\r\n").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        // The laptop closes too, so this read ends.
        s.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let (dp, config, agent_key, agent_addr) = start_agent(vec![port]).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut laptop = Laptop::new(Instant::now(), agent_key, agent_addr);
    let (_peers_tx, peers_rx) =
        tokio::sync::watch::channel(vec![laptop.client_peer(udp.local_addr().unwrap())]);
    let agent = tokio::spawn(dp.run(config, peers_rx));

    let handle = laptop.connect(AGENT_V4.into(), port, 43_000);
    let mut received = Vec::new();
    let mut sent = false;
    drive(&mut laptop, &udp, Duration::from_secs(10), |l| {
        let s = l.sockets.get_mut::<tcp::Socket>(handle);
        if s.can_send() && !sent {
            s.send_slice(b"bye").unwrap();
            s.close();
            sent = true;
        }
        while s.can_recv() {
            let mut buf = [0u8; 256];
            let n = s.recv_slice(&mut buf).unwrap();
            received.extend_from_slice(&buf[..n]);
        }
        sent && !s.may_recv() && !s.is_open()
    })
    .await;
    assert_eq!(received, b"SSH-2.0-warren-test\r\n");
    let rest = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"bye");
    agent.abort();
}

#[tokio::test]
async fn a_device_dropped_from_the_peer_list_is_cut_off() {
    let (port, server) = echo_server().await;
    let (dp, config, agent_key, agent_addr) = start_agent(vec![port]).await;
    let mut applied = dp.peer_lists_applied();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut laptop = Laptop::new(Instant::now(), agent_key, agent_addr);
    let (peers_tx, peers_rx) =
        tokio::sync::watch::channel(vec![laptop.client_peer(udp.local_addr().unwrap())]);
    let agent = tokio::spawn(dp.run(config, peers_rx));

    let first = laptop.connect(AGENT_V4.into(), port, 44_000);
    drive(&mut laptop, &udp, Duration::from_secs(10), |l| {
        l.sockets.get::<tcp::Socket>(first).state() == tcp::State::Established
    })
    .await;

    assert_eq!(*applied.borrow(), 1, "the first peer list is in force");
    peers_tx.send_replace(Vec::new());
    // Barrier: the driver has applied the empty list before the laptop
    // tries again (otherwise the attempt could race the update).
    let second_list =
        tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|n| *n >= 2)).await;
    assert!(
        matches!(second_list, Ok(Ok(_))),
        "the data plane never applied the empty peer list"
    );
    // The negative check spans a window on purpose: the removed device
    // must not get through at any point, including its retransmissions.
    let second = laptop.connect(AGENT_V4.into(), port, 44_001);
    let connected = drive_for(&mut laptop, &udp, Duration::from_secs(3), |l| {
        l.sockets.get::<tcp::Socket>(second).state() == tcp::State::Established
    })
    .await;
    assert!(!connected, "a removed device must not reach the workspace");
    agent.abort();
    server.abort();
}

#[tokio::test]
async fn a_local_service_that_stops_reading_pushes_back_to_the_laptop() {
    const TOTAL: usize = 16 * 1024 * 1024;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // Small kernel buffers so the stall shows quickly; accepted sockets
    // inherit them.
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        start_rx.await.unwrap();
        let mut all = Vec::with_capacity(TOTAL);
        s.read_to_end(&mut all).await.unwrap();
        all
    });
    let (dp, config, agent_key, agent_addr) = start_agent(vec![port]).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut laptop = Laptop::new(Instant::now(), agent_key, agent_addr);
    let (_peers_tx, peers_rx) =
        tokio::sync::watch::channel(vec![laptop.client_peer(udp.local_addr().unwrap())]);
    let agent = tokio::spawn(dp.run(config, peers_rx));

    let data: Vec<u8> = (0..TOTAL as u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let handle = laptop.connect(AGENT_V4.into(), port, 45_000);
    let mut sent = 0usize;
    let send = |l: &mut Laptop, sent: &mut usize| {
        let s = l.sockets.get_mut::<tcp::Socket>(handle);
        if s.can_send() && *sent < TOTAL {
            *sent += s.send_slice(&data[*sent..]).unwrap();
        }
    };

    // The service reads nothing: the laptop's sending must stall.
    drive_for(&mut laptop, &udp, Duration::from_secs(2), |l| {
        send(l, &mut sent);
        false
    })
    .await;
    let stalled_at = sent;
    drive_for(&mut laptop, &udp, Duration::from_secs(1), |l| {
        send(l, &mut sent);
        false
    })
    .await;
    assert!(stalled_at > 0, "nothing was sent at all");
    assert!(
        stalled_at < TOTAL,
        "a service that reads nothing took it all"
    );
    // Bytes the agent acknowledged must stop growing too.
    let acked_before = sent - laptop.sockets.get::<tcp::Socket>(handle).send_queue();
    eprintln!("stalled after {acked_before} bytes acknowledged");
    drive_for(&mut laptop, &udp, Duration::from_millis(500), |l| {
        send(l, &mut sent);
        false
    })
    .await;
    let acked_after = sent - laptop.sockets.get::<tcp::Socket>(handle).send_queue();
    assert_eq!(acked_before, acked_after, "the agent kept accepting bytes");

    // Once the service reads, everything arrives intact.
    start_tx.send(()).unwrap();
    let mut closed = false;
    drive(&mut laptop, &udp, Duration::from_secs(60), |l| {
        send(l, &mut sent);
        let s = l.sockets.get_mut::<tcp::Socket>(handle);
        if sent == TOTAL && !closed {
            s.close();
            closed = true;
        }
        closed && s.send_queue() == 0
    })
    .await;
    let got = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the service gets the end of the stream")
        .unwrap();
    assert_eq!(got.len(), TOTAL);
    assert_eq!(checksum(&got), checksum(&data));
    agent.abort();
}

#[tokio::test]
async fn a_laptop_reaching_the_agent_over_ipv6_udp_connects() {
    let (port, server) = echo_server().await;
    let (dp, config, agent_key, agent_v4) = start_agent(vec![port]).await;
    let agent_addr = SocketAddr::from((Ipv6Addr::LOCALHOST, agent_v4.port()));
    let udp = UdpSocket::bind("[::1]:0").await.unwrap();
    let mut laptop = Laptop::new(Instant::now(), agent_key, agent_addr);
    let (_peers_tx, peers_rx) =
        tokio::sync::watch::channel(vec![laptop.client_peer(udp.local_addr().unwrap())]);
    let agent = tokio::spawn(dp.run(config, peers_rx));

    let mut t = Transfer {
        handle: laptop.connect(AGENT_V6.into(), port, 46_000),
        data: b"over an IPv6 underlay".to_vec(),
        sent: 0,
        received: Vec::new(),
        closed: false,
    };
    drive(&mut laptop, &udp, Duration::from_secs(10), |l| t.step(l)).await;
    assert_eq!(t.received, t.data);
    agent.abort();
    server.abort();
}
