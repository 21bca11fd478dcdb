//! Simulated-time tests of the path layer ([`warren_path::Paths`]) through
//! its public API: a device (A) and an agent (B) on a scripted network
//! (latency; cone and symmetric NATs; links, address families and relays
//! that die and come back; a machine that sleeps; a device that moves) with
//! fake TURN servers that speak enough RFC 8656 for the TURN client, expire
//! what isn't refreshed and, if asked, treat credentials the way coturn's
//! `use-auth-secret` does. The simulator drives both layers the way the
//! helper does: datagrams are delivered when due, `handle_timeout` runs
//! when `poll_timeout` says, transmits and events are drained after every
//! call, WireGuard goes out through `route`, and the candidates each side
//! announces reach the other as the coordinator would pass them on.
//!
//! Every loop is bounded: a timer that stays due forever fails the test
//! instead of hanging it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytecodec::{DecodeExt, EncodeExt};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use stun_codec::rfc5389::attributes::{
    AlternateServer, ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm,
    Software, UnknownAttributes, Username, XorMappedAddress,
};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedTransport, ReservationToken,
    XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5766::methods::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};
use warren_path::paths::{
    ACTIVE_FOR, BUSY_FOR, BUSY_KEEPALIVE, KEEPALIVE, MAX_LOCAL_CANDIDATES, MAX_REMOTE_CANDIDATES,
};
use warren_path::select::DIRECT_GRACE;
use warren_path::turn::Credentials;
use warren_path::{Incoming, Path, PathEvent, PathInfo, Paths, RelayServer, Role, Route};
use x25519_dalek::{PublicKey, StaticSecret};

stun_codec::define_attribute_enums!(
    Attr,
    AttrDecoder,
    AttrEncoder,
    [
        MappedAddress,
        Username,
        MessageIntegrity,
        ErrorCode,
        UnknownAttributes,
        Realm,
        Nonce,
        XorMappedAddress,
        Software,
        AlternateServer,
        Fingerprint,
        ChannelNumber,
        Lifetime,
        XorPeerAddress,
        Data,
        XorRelayAddress,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken
    ]
);

type Msg = Message<Attr>;

/// The device (the helper).
const A: usize = 0;
/// The agent.
const B: usize = 1;
const LATENCY: Duration = Duration::from_millis(20);
const REALM: &str = "warren.test";
const TURN_USER: &str = "1700000000:device";
const TURN_PASSWORD: &str = "turn-password";
/// Steps one run may take.
const MAX_STEPS: usize = 2_000_000;
/// Steps in a row at one instant before a timer counts as stuck.
const MAX_SPINS: usize = 10_000;
/// The check key's label, as the module documents the scheme (SHA-256 over
/// the X25519 agreement of the two WireGuard keys).
const CHECK_LABEL: &[u8] = b"warren path check v1";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn public_key(secret: [u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(secret)).to_bytes()
}

/// The key two peers sign their checks with, as one of them derives it.
fn check_password(secret: [u8; 32], peer: [u8; 32]) -> String {
    let shared = StaticSecret::from(secret).diffie_hellman(&PublicKey::from(peer));
    let mut h = Sha256::new();
    h.update(CHECK_LABEL);
    h.update(shared.as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn b64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn encode(m: Msg) -> Vec<u8> {
    MessageEncoder::<Attr>::new()
        .encode_into_bytes(m)
        .expect("a test message encodes")
}

fn decode(bytes: &[u8]) -> Option<Msg> {
    MessageDecoder::<Attr>::new()
        .decode_from_bytes(bytes)
        .ok()?
        .ok()
}

/// A connectivity check: a Binding request from `sender`, signed with
/// `password` (short-term MESSAGE-INTEGRITY, then FINGERPRINT).
fn check_request(id: [u8; 12], sender: &[u8; 32], password: &str) -> Vec<u8> {
    let mut m = Msg::new(MessageClass::Request, BINDING, TransactionId::new(id));
    m.add_attribute(Username::new(b64(sender)).expect("a short username"));
    let mi = MessageIntegrity::new_short_term_credential(&m, password).expect("signs");
    m.add_attribute(mi);
    let fp = Fingerprint::new(&m).expect("fingerprints");
    m.add_attribute(fp);
    encode(m)
}

/// An answer to a check, signed with `password`.
fn check_answer(id: [u8; 12], mapped: SocketAddr, password: &str) -> Vec<u8> {
    let mut m = Msg::new(
        MessageClass::SuccessResponse,
        BINDING,
        TransactionId::new(id),
    );
    m.add_attribute(XorMappedAddress::new(mapped));
    let mi = MessageIntegrity::new_short_term_credential(&m, password).expect("signs");
    m.add_attribute(mi);
    let fp = Fingerprint::new(&m).expect("fingerprints");
    m.add_attribute(fp);
    encode(m)
}

fn is_stun_of(bytes: &[u8], class: MessageClass) -> bool {
    decode(bytes).is_some_and(|m| m.method() == BINDING && m.class() == class)
}

/// The STUN message a datagram carries: itself, or the payload of a Send
/// indication or ChannelData message on its way through a relay.
fn unwrap_relayed(payload: &[u8]) -> Option<Vec<u8>> {
    let first = *payload.first()?;
    if (0x40..=0x4F).contains(&first) {
        let len = usize::from(u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]));
        return payload.get(4..4 + len).map(<[u8]>::to_vec);
    }
    let m = decode(payload)?;
    if m.class() == MessageClass::Indication && (m.method() == SEND || m.method() == DATA) {
        return m.get_attribute::<Data>().map(|d| d.data().to_vec());
    }
    Some(payload.to_vec())
}

/// Whether a datagram is (or carries) a connectivity check.
fn is_check(payload: &[u8]) -> bool {
    unwrap_relayed(payload).is_some_and(|inner| is_stun_of(&inner, MessageClass::Request))
}

/// A WireGuard data message of `len` bytes (a multiple of 16, at least 32)
/// that says who sent it and its sequence number.
fn wireguard(sender: usize, seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0] = 4;
    p[4] = sender as u8;
    p[8..16].copy_from_slice(&seq.to_be_bytes());
    p
}

fn wireguard_shaped(payload: &[u8]) -> bool {
    matches!(payload, [4, 0, 0, 0, ..])
}

// ---- the fake TURN server --------------------------------------------------

/// What a fake TURN server did, for assertions.
#[derive(Debug, Default, Clone)]
struct TurnStats {
    allocations: usize,
    refreshes: usize,
    /// Datagrams sent out of a relayed address to a peer.
    to_peers: usize,
    /// Datagrams from peers passed to a client (Data indication or
    /// ChannelData).
    to_clients: usize,
}

#[derive(Debug)]
struct TurnAllocation {
    relayed: SocketAddr,
    username: String,
    expires: Instant,
    /// Permissions live 300 s, channel bindings 600 s (RFC 8656).
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
}

const ALLOCATION_LIFETIME: Duration = Duration::from_secs(600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// A TURN server with one realm and one password: allocations keyed by the
/// client's address as seen here, relayed addresses on the server's IP.
#[derive(Debug)]
struct FakeTurn {
    addr: SocketAddr,
    /// Drops everything to and from it.
    dead: bool,
    /// Clients whose Allocate is refused (486, quota reached).
    refuse: HashSet<SocketAddr>,
    next_port: u16,
    allocations: HashMap<SocketAddr, TurnAllocation>,
    stats: TurnStats,
    now: Instant,
    /// coturn's `use-auth-secret`: a username `EXPIRY:ID` (EXPIRY in seconds
    /// since `t0`) is refused once expired, and an allocation answers only
    /// the username that made it (441 to another, 437 to an Allocate).
    rest_api: Option<Instant>,
}

type Out = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;

impl FakeTurn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            dead: false,
            refuse: HashSet::new(),
            next_port: 49152,
            allocations: HashMap::new(),
            stats: TurnStats::default(),
            now: Instant::now(),
            rest_api: None,
        }
    }

    fn expired(&self, m: &Msg) -> bool {
        let Some(t0) = self.rest_api else {
            return false;
        };
        let expiry = m
            .get_attribute::<Username>()
            .and_then(|u| u.name().split(':').next()?.parse::<u64>().ok());
        expiry.is_none_or(|e| t0 + Duration::from_secs(e) <= self.now)
    }

    fn other_user(&self, client: SocketAddr, m: &Msg) -> bool {
        let user = m.get_attribute::<Username>().map(|u| u.name());
        self.rest_api.is_some()
            && self
                .allocations
                .get(&client)
                .is_some_and(|a| Some(a.username.as_str()) != user)
    }

    fn relayed_of(&self, client: SocketAddr) -> Option<SocketAddr> {
        self.allocations.get(&client).map(|a| a.relayed)
    }

    /// One datagram to `dst` (the server's port or a relayed address):
    /// what it sends in return, as (source, destination, payload).
    fn handle(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> Out {
        // What the client failed to refresh in time is gone.
        self.now = now;
        self.allocations.retain(|_, a| a.expires > now);
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, t| *t > now);
            a.channels.retain(|_, (_, t)| *t > now);
        }
        if dst == self.addr {
            self.client_datagram(src, bytes)
        } else {
            self.peer_datagram(src, dst, bytes)
        }
    }

    fn peer_datagram(&mut self, peer: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> Out {
        let Some((client, alloc)) = self.allocations.iter().find(|(_, a)| a.relayed == dst) else {
            return vec![];
        };
        if !alloc.permissions.contains_key(&peer.ip()) {
            return vec![];
        }
        let payload = match alloc.channels.iter().find(|(_, (p, _))| *p == peer) {
            Some((channel, _)) => {
                let mut out = channel.to_be_bytes().to_vec();
                out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(bytes);
                out
            }
            None => {
                let mut m = Msg::new(
                    MessageClass::Indication,
                    DATA,
                    TransactionId::new(rand::random()),
                );
                m.add_attribute(XorPeerAddress::new(peer));
                m.add_attribute(Data::new(bytes.to_vec()).expect("small data"));
                let fp = Fingerprint::new(&m).expect("fingerprints");
                m.add_attribute(fp);
                encode(m)
            }
        };
        self.stats.to_clients += 1;
        vec![(self.addr, *client, payload)]
    }

    fn client_datagram(&mut self, client: SocketAddr, bytes: &[u8]) -> Out {
        let Some(&first) = bytes.first() else {
            return vec![];
        };
        if (0x40..=0x4F).contains(&first) {
            if bytes.len() < 4 {
                return vec![];
            }
            let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
            let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            let (Some(data), Some(alloc)) = (bytes.get(4..4 + len), self.allocations.get(&client))
            else {
                return vec![];
            };
            let Some((peer, _)) = alloc.channels.get(&channel) else {
                return vec![];
            };
            self.stats.to_peers += 1;
            return vec![(alloc.relayed, *peer, data.to_vec())];
        }
        let Some(m) = decode(bytes) else {
            return vec![];
        };
        let answer = |body: Vec<u8>| vec![(self.addr, client, body)];
        match (m.class(), m.method()) {
            (MessageClass::Indication, SEND) => {
                let (Some(peer), Some(data), Some(alloc)) = (
                    m.get_attribute::<XorPeerAddress>(),
                    m.get_attribute::<Data>(),
                    self.allocations.get(&client),
                ) else {
                    return vec![];
                };
                if !alloc.permissions.contains_key(&peer.address().ip()) {
                    return vec![];
                }
                self.stats.to_peers += 1;
                vec![(alloc.relayed, peer.address(), data.data().to_vec())]
            }
            (MessageClass::Request, _) if m.get_attribute::<MessageIntegrity>().is_none() => {
                answer(error(&m, 401))
            }
            (MessageClass::Request, _) if !authentic(&m) || self.expired(&m) => {
                answer(error(&m, 401))
            }
            (MessageClass::Request, method) if self.other_user(client, &m) => {
                answer(error(&m, if method == ALLOCATE { 437 } else { 441 }))
            }
            (MessageClass::Request, ALLOCATE) if self.refuse.contains(&client) => {
                answer(signed_error(&m, 486))
            }
            (MessageClass::Request, ALLOCATE) => {
                let relayed = match self.allocations.get(&client) {
                    // A retransmission of the request that made it.
                    Some(a) => a.relayed,
                    None => {
                        let relayed = SocketAddr::new(self.addr.ip(), self.next_port);
                        self.next_port += 1;
                        self.allocations.insert(
                            client,
                            TurnAllocation {
                                relayed,
                                username: m
                                    .get_attribute::<Username>()
                                    .map(|u| u.name().to_owned())
                                    .unwrap_or_default(),
                                expires: self.now + ALLOCATION_LIFETIME,
                                permissions: HashMap::new(),
                                channels: HashMap::new(),
                            },
                        );
                        self.stats.allocations += 1;
                        relayed
                    }
                };
                answer(success(
                    &m,
                    vec![
                        XorRelayAddress::new(relayed).into(),
                        XorMappedAddress::new(client).into(),
                        Lifetime::from_u32(600).into(),
                    ],
                ))
            }
            (MessageClass::Request, REFRESH) => {
                if !self.allocations.contains_key(&client) {
                    return answer(signed_error(&m, 437));
                }
                self.stats.refreshes += 1;
                let asked = m
                    .get_attribute::<Lifetime>()
                    .map_or(600, |l| l.lifetime().as_secs());
                if asked == 0 {
                    self.allocations.remove(&client);
                } else if let Some(a) = self.allocations.get_mut(&client) {
                    a.expires = self.now + ALLOCATION_LIFETIME;
                }
                let granted = if asked == 0 { 0 } else { 600 };
                answer(success(&m, vec![Lifetime::from_u32(granted).into()]))
            }
            (MessageClass::Request, CREATE_PERMISSION) => {
                let Some(alloc) = self.allocations.get_mut(&client) else {
                    return answer(signed_error(&m, 437));
                };
                for a in m.attributes() {
                    if let Attr::XorPeerAddress(p) = a {
                        alloc
                            .permissions
                            .insert(p.address().ip(), self.now + PERMISSION_LIFETIME);
                    }
                }
                answer(success(&m, vec![]))
            }
            (MessageClass::Request, CHANNEL_BIND) => {
                let (Some(alloc), Some(channel), Some(peer)) = (
                    self.allocations.get_mut(&client),
                    m.get_attribute::<ChannelNumber>(),
                    m.get_attribute::<XorPeerAddress>(),
                ) else {
                    return answer(signed_error(&m, 400));
                };
                alloc
                    .permissions
                    .insert(peer.address().ip(), self.now + PERMISSION_LIFETIME);
                alloc.channels.insert(
                    channel.value(),
                    (peer.address(), self.now + CHANNEL_LIFETIME),
                );
                answer(success(&m, vec![]))
            }
            _ => vec![],
        }
    }
}

fn authentic(m: &Msg) -> bool {
    let (Some(user), Some(realm), Some(mi)) = (
        m.get_attribute::<Username>(),
        m.get_attribute::<Realm>(),
        m.get_attribute::<MessageIntegrity>(),
    ) else {
        return false;
    };
    mi.check_long_term_credential(user, realm, &password_for(user.name()))
        .is_ok()
}

/// The password the fake server expects for `user`: the fixed one, or (for
/// coturn's REST API credentials, `EXPIRY:ID`) one derived from the name.
fn password_for(user: &str) -> String {
    if user == TURN_USER {
        TURN_PASSWORD.into()
    } else {
        format!("pw-{user}")
    }
}

fn reply(request: &Msg, class: MessageClass, attrs: Vec<Attr>, sign: bool) -> Vec<u8> {
    let mut m = Msg::new(class, request.method(), request.transaction_id());
    for a in attrs {
        m.add_attribute(a);
    }
    if sign {
        let user = request
            .get_attribute::<Username>()
            .cloned()
            .expect("a signed request has a USERNAME");
        let realm = Realm::new(REALM.into()).expect("a short realm");
        let password = password_for(user.name());
        let mi = MessageIntegrity::new_long_term_credential(&m, &user, &realm, &password)
            .expect("signs");
        m.add_attribute(mi);
    }
    let fp = Fingerprint::new(&m).expect("fingerprints");
    m.add_attribute(fp);
    encode(m)
}

fn success(request: &Msg, attrs: Vec<Attr>) -> Vec<u8> {
    reply(request, MessageClass::SuccessResponse, attrs, true)
}

fn error(request: &Msg, code: u16) -> Vec<u8> {
    let attrs = vec![
        ErrorCode::new(code, "refused".into())
            .expect("a valid code")
            .into(),
        Realm::new(REALM.into()).expect("a short realm").into(),
        Nonce::new("nonce-1".into()).expect("a short nonce").into(),
    ];
    reply(request, MessageClass::ErrorResponse, attrs, false)
}

fn signed_error(request: &Msg, code: u16) -> Vec<u8> {
    let attrs = vec![ErrorCode::new(code, "refused".into())
        .expect("a valid code")
        .into()];
    reply(request, MessageClass::ErrorResponse, attrs, true)
}

// ---- the simulator ---------------------------------------------------------

/// What a node's NAT lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Open,
    /// Only datagrams from an IP the node sent to (a "restricted cone").
    AddressDependent,
    /// Only datagrams from an address (IP and port) the node sent to (a
    /// "port-restricted cone").
    AddressAndPortDependent,
}

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    from: SocketAddr,
    payload: Vec<u8>,
}

struct Node {
    paths: Paths,
    secret: [u8; 32],
    key: [u8; 32],
    /// The socket's address (its host candidate).
    host: SocketAddr,
    /// The address the rest of the network sees (the NAT's, or `host`).
    public: SocketAddr,
    /// More host candidates (other interfaces), never reachable.
    extra_hosts: Vec<SocketAddr>,
    /// An IPv6 address (host and public alike), the source of everything
    /// the node sends to IPv6.
    v6: Option<SocketAddr>,
    filter: Filter,
    /// A symmetric NAT: each destination gets its own public port, which
    /// lets in only that destination.
    symmetric: bool,
    nat_ports: HashMap<SocketAddr, SocketAddr>,
    /// Asleep: no timers, nothing received.
    frozen: bool,
    /// A plain WireGuard peer: no path layer (its `paths` is never driven),
    /// STUN to it is dropped.
    plain: bool,
    sent_to: HashSet<SocketAddr>,
    /// The tunnel's endpoint for the other node.
    endpoint: Option<SocketAddr>,
    pinned: bool,
    wireguard: Vec<Received>,
    dropped: Vec<&'static str>,
    events: Vec<(Instant, PathEvent)>,
    wakeups: Vec<Instant>,
    /// Checks this node sent (also through a relay): when, and where the
    /// datagram went.
    checks: Vec<(Instant, SocketAddr)>,
    routes: Vec<(Instant, SocketAddr, Route)>,
    seq: u64,
    buf: Vec<u8>,
}

impl Node {
    fn new(role: Role, host: SocketAddr) -> Self {
        let secret: [u8; 32] = rand::random();
        Node {
            paths: Paths::new(role, secret),
            secret,
            key: public_key(secret),
            host,
            public: host,
            extra_hosts: Vec::new(),
            v6: None,
            filter: Filter::Open,
            symmetric: false,
            nat_ports: HashMap::new(),
            frozen: false,
            plain: false,
            sent_to: HashSet::new(),
            endpoint: None,
            pinned: false,
            wireguard: Vec::new(),
            dropped: Vec::new(),
            events: Vec::new(),
            wakeups: Vec::new(),
            checks: Vec::new(),
            routes: Vec::new(),
            seq: 0,
            buf: Vec::new(),
        }
    }

    fn hosts(&self) -> Vec<SocketAddr> {
        let mut hosts = vec![self.host];
        hosts.extend(self.v6);
        hosts.extend(self.extra_hosts.iter().copied());
        hosts
    }

    fn path_changes(&self) -> Vec<(Instant, Path)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                PathEvent::PathChanged { path, .. } => Some((*at, *path)),
                _ => None,
            })
            .collect()
    }

    fn rechecks(&self) -> Vec<Instant> {
        self.events
            .iter()
            .filter(|(_, e)| *e == PathEvent::RecheckNetwork)
            .map(|(at, _)| *at)
            .collect()
    }
}

struct Packet {
    at: Instant,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

struct Flow {
    from: usize,
    every: Duration,
    next: Instant,
}

struct Sim {
    t0: Instant,
    now: Instant,
    latency: Duration,
    nodes: Vec<Node>,
    turns: Vec<FakeTurn>,
    queue: VecDeque<Packet>,
    /// Drops every datagram between the two nodes (not through a relay).
    block_direct: bool,
    flows: Vec<Flow>,
    /// Whether the candidates a node announces reach the other one.
    coordinator: bool,
    /// Addresses nothing reaches and nothing leaves.
    blocked: HashSet<IpAddr>,
}

impl Sim {
    /// A (device, no NAT) and B (agent, no NAT), and `turns` TURN servers
    /// nobody uses yet.
    fn new(turns: u8) -> Self {
        let now = Instant::now();
        Sim {
            t0: now,
            now,
            latency: LATENCY,
            nodes: vec![
                Node::new(Role::Device, addr("198.51.100.10:51820")),
                Node::new(Role::Agent, addr("203.0.113.20:51820")),
            ],
            turns: (0..turns)
                .map(|i| {
                    FakeTurn::new(SocketAddr::new(
                        Ipv4Addr::new(192, 0, 2, 1 + i).into(),
                        3478,
                    ))
                })
                .collect(),
            queue: VecDeque::new(),
            block_direct: false,
            flows: Vec::new(),
            coordinator: true,
            blocked: HashSet::new(),
        }
    }

    fn relay(&self, turn: usize) -> RelayServer {
        RelayServer {
            name: self.turns[turn].addr.to_string(),
            server: self.turns[turn].addr,
            credentials: Credentials::new(TURN_USER, TURN_PASSWORD).expect("short credentials"),
        }
    }

    /// Fresh REST API credentials for every server, valid for `ttl`, to
    /// `node`, as the coordinator sends them.
    fn rotate_credentials(&mut self, node: usize, turns: &[usize], ttl: Duration) {
        let expiry = (self.now - self.t0 + ttl).as_secs();
        let user = format!("{expiry}:node-{node}");
        let relays = turns
            .iter()
            .map(|t| RelayServer {
                name: self.turns[*t].addr.to_string(),
                server: self.turns[*t].addr,
                credentials: Credentials::new(user.clone(), password_for(&user))
                    .expect("short credentials"),
            })
            .collect();
        let now = self.now;
        self.nodes[node].paths.set_relays(now, relays);
        self.drain_all();
    }

    /// The longest time `node` went without WireGuard from `sender` in
    /// `[from, to]`.
    fn longest_gap(&self, node: usize, sender: usize, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for r in self.wireguard_from(node, sender) {
            if r.at >= from && r.at <= to {
                gap = gap.max(r.at - last);
                last = r.at;
            }
        }
        gap.max(to - last)
    }

    /// Gives `node` these TURN servers.
    fn use_relays(&mut self, node: usize, turns: &[usize]) {
        let relays = turns.iter().map(|t| self.relay(*t)).collect();
        let now = self.now;
        self.nodes[node].paths.set_relays(now, relays);
        self.drain_all();
    }

    /// Gives `node` these TURN servers, which refuse to allocate for it: the
    /// coordinator hands every client the same relays, but this one can't
    /// use them.
    fn refused_relays(&mut self, node: usize, turns: &[usize]) {
        let public = self.nodes[node].public;
        for t in turns {
            self.turns[*t].refuse.insert(public);
        }
        self.use_relays(node, turns);
    }

    /// The first check `node` sent at or after `since`.
    fn first_check(&self, node: usize, since: Instant) -> Option<Instant> {
        self.nodes[node]
            .checks
            .iter()
            .map(|(t, _)| *t)
            .find(|t| *t >= since)
    }

    /// Both sides read their interfaces; what they announce reaches the
    /// other side.
    fn start(&mut self) {
        let now = self.now;
        for node in &mut self.nodes {
            let hosts = node.hosts();
            node.paths.set_host_candidates(now, hosts);
        }
        self.drain_all();
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn key(&self, node: usize) -> [u8; 32] {
        self.nodes[node].key
    }

    fn path(&self, node: usize) -> Path {
        self.nodes[node].paths.path(&self.key(1 - node))
    }

    fn info(&self, node: usize) -> PathInfo {
        self.nodes[node]
            .paths
            .path_info(&self.key(1 - node))
            .expect("the other node is a known peer")
    }

    fn public(&self, node: usize) -> SocketAddr {
        self.nodes[node].public
    }

    fn is_direct_to(&self, node: usize, remote: SocketAddr) -> bool {
        self.path(node) == Path::Direct { remote }
    }

    fn flow(&mut self, from: usize, every: Duration) {
        self.flows.push(Flow {
            from,
            every,
            next: self.now,
        });
    }

    fn stop_flows(&mut self) {
        self.flows.clear();
    }

    fn push(&mut self, packet: Packet) {
        let at = packet.at;
        let index = self.queue.partition_point(|p| p.at <= at);
        self.queue.insert(index, packet);
    }

    fn send_from(&mut self, node: usize, dst: SocketAddr, payload: Vec<u8>) {
        let now = self.now;
        let n = &mut self.nodes[node];
        n.sent_to.insert(dst);
        if is_check(&payload) {
            n.checks.push((now, dst));
        }
        let src = if dst.is_ipv6() {
            let Some(v6) = n.v6 else {
                return;
            };
            v6
        } else if n.symmetric {
            let port = 40000 + n.nat_ports.len() as u16;
            let public = n.public.ip();
            *n.nat_ports
                .entry(dst)
                .or_insert_with(|| SocketAddr::new(public, port))
        } else {
            n.public
        };
        self.push(Packet {
            at: now + self.latency,
            src,
            dst,
            payload,
        });
    }

    /// The tunnel sends one WireGuard datagram to the other node.
    fn send_wireguard(&mut self, from: usize) -> Route {
        let now = self.now;
        let n = &mut self.nodes[from];
        let dst = n
            .endpoint
            .expect("the tunnel knows an endpoint for its peer");
        n.seq += 1;
        let payload = wireguard(from, n.seq);
        if n.plain {
            self.send_from(from, dst, payload);
            return Route::Direct;
        }
        let mut buf = std::mem::take(&mut n.buf);
        let route = n.paths.route(now, dst, &payload, &mut buf);
        n.routes.push((now, dst, route));
        match route {
            Route::Direct => self.send_from(from, dst, payload),
            Route::Relay(server) => self.send_from(from, server, buf.clone()),
        }
        self.nodes[from].buf = buf;
        self.drain_all();
        route
    }

    fn on_event(&mut self, node: usize, event: PathEvent) {
        let now = self.now;
        match &event {
            PathEvent::Candidates(_) if !self.coordinator => {}
            PathEvent::Candidates(candidates) => {
                // The coordinator passes them on.
                let key = self.nodes[node].key;
                let other = &mut self.nodes[1 - node];
                other.paths.upsert_peer(now, key, candidates);
                if !other.pinned {
                    other.endpoint = candidates.first().copied();
                }
            }
            PathEvent::PathChanged { path, .. } => match path {
                Path::Direct { remote } | Path::Relayed { remote, .. } => {
                    self.nodes[node].endpoint = Some(*remote);
                    self.nodes[node].pinned = true;
                }
                Path::None => {}
            },
            // Only the driver's coordinator link cares; recorded below.
            PathEvent::NetworkChanged => {}
            PathEvent::RecheckNetwork => {
                let n = &mut self.nodes[node];
                let hosts = n.hosts();
                n.paths.set_host_candidates(now, hosts);
            }
        }
        self.nodes[node].events.push((now, event));
    }

    fn drain_all(&mut self) {
        for _ in 0..1000 {
            let mut busy = false;
            for node in 0..self.nodes.len() {
                while let Some(t) = self.nodes[node].paths.poll_transmit() {
                    busy = true;
                    if !self.nodes[node].plain {
                        self.send_from(node, t.dst, t.payload);
                    }
                }
                while let Some(e) = self.nodes[node].paths.poll_event() {
                    busy = true;
                    self.on_event(node, e);
                }
            }
            if !busy {
                return;
            }
        }
        panic!(
            "the path layers keep producing output at {:?}",
            self.elapsed()
        );
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        if self.blocked.contains(&p.src.ip()) || self.blocked.contains(&p.dst.ip()) {
            return;
        }
        let owns = |n: &Node, addr: SocketAddr| {
            if n.v6 == Some(addr) {
                true
            } else if n.symmetric {
                n.nat_ports.values().any(|a| *a == addr)
            } else {
                n.public == addr
            }
        };
        if let Some(node) = self.nodes.iter().position(|n| owns(n, p.dst)) {
            let from_node = self.nodes.iter().any(|n| owns(n, p.src));
            let n = &mut self.nodes[node];
            let let_in = match n.filter {
                _ if n.symmetric => n.nat_ports.get(&p.src) == Some(&p.dst),
                Filter::Open => true,
                Filter::AddressDependent => n.sent_to.iter().any(|a| a.ip() == p.src.ip()),
                Filter::AddressAndPortDependent => n.sent_to.contains(&p.src),
            };
            if (self.block_direct && from_node) || n.frozen || !let_in {
                return;
            }
            if n.plain {
                if wireguard_shaped(&p.payload) {
                    n.wireguard.push(Received {
                        at: now,
                        from: p.src,
                        payload: p.payload,
                    });
                }
                return;
            }
            match n.paths.handle_datagram(now, p.src, &p.payload) {
                Incoming::WireGuard { from, payload } => n.wireguard.push(Received {
                    at: now,
                    from,
                    payload: payload.into_owned(),
                }),
                Incoming::Handled => {}
                Incoming::Dropped(why) => n.dropped.push(why),
            }
            self.drain_all();
            return;
        }
        if let Some(turn) = self.turns.iter().position(|t| t.addr.ip() == p.dst.ip()) {
            let src_dead = self
                .turns
                .iter()
                .any(|t| t.dead && t.addr.ip() == p.src.ip());
            if self.turns[turn].dead || src_dead {
                return;
            }
            let out = self.turns[turn].handle(now, p.src, p.dst, &p.payload);
            for (src, dst, payload) in out {
                self.push(Packet {
                    at: now + self.latency,
                    src,
                    dst,
                    payload,
                });
            }
        }
    }

    fn next_time(&mut self) -> Option<Instant> {
        let mut next = self.queue.front().map(|p| p.at);
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for n in &mut self.nodes {
            if !n.frozen && !n.plain {
                if let Some(t) = n.paths.poll_timeout() {
                    at(t);
                }
            }
        }
        for f in &self.flows {
            at(f.next);
        }
        next
    }

    /// Runs until `done` holds (true) or `deadline` passes (`done` then).
    fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let mut spins = 0;
        for _ in 0..MAX_STEPS {
            self.drain_all();
            if done(self) {
                return true;
            }
            let Some(next) = self.next_time().filter(|t| *t <= deadline) else {
                self.now = self.now.max(deadline);
                return done(self);
            };
            if next <= self.now {
                spins += 1;
                assert!(
                    spins < MAX_SPINS,
                    "a timer stays due at {:?}: poll_timeout keeps returning {:?} ago",
                    self.elapsed(),
                    self.now - next
                );
            } else {
                spins = 0;
                self.now = next;
            }
            let now = self.now;
            while self.queue.front().is_some_and(|p| p.at <= now) {
                let p = self.queue.pop_front().expect("a packet is due");
                self.deliver(p);
            }
            for node in 0..self.nodes.len() {
                let n = &mut self.nodes[node];
                if n.frozen || n.plain || n.paths.poll_timeout().is_none_or(|t| t > now) {
                    continue;
                }
                n.wakeups.push(now);
                n.paths.handle_timeout(now);
                self.drain_all();
            }
            for f in 0..self.flows.len() {
                if self.flows[f].next <= now {
                    self.flows[f].next = now + self.flows[f].every;
                    let from = self.flows[f].from;
                    self.send_wireguard(from);
                }
            }
        }
        panic!("the simulation took more than {MAX_STEPS} steps");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| false);
    }

    /// A datagram from `from` straight into `node`'s layer; what it sent in
    /// return is put on the network as usual and returned.
    fn inject(
        &mut self,
        node: usize,
        from: SocketAddr,
        bytes: &[u8],
    ) -> (String, Vec<(SocketAddr, Vec<u8>)>) {
        let now = self.now;
        let n = &mut self.nodes[node];
        let what = format!("{:?}", n.paths.handle_datagram(now, from, bytes));
        let mut sent = Vec::new();
        while let Some(t) = n.paths.poll_transmit() {
            sent.push((t.dst, t.payload));
        }
        for (dst, payload) in sent.clone() {
            self.send_from(node, dst, payload);
        }
        self.drain_all();
        (what, sent)
    }

    /// WireGuard `node` got from `sender`.
    fn wireguard_from(&self, node: usize, sender: usize) -> Vec<Received> {
        self.nodes[node]
            .wireguard
            .iter()
            .filter(|r| r.payload[0] == 4 && r.payload[4] == sender as u8)
            .cloned()
            .collect()
    }
}

/// Both sides on a direct path, with traffic from A for a moment.
fn direct_pair() -> Sim {
    let mut sim = Sim::new(0);
    sim.start();
    sim.send_wireguard(A);
    let (a, b) = (sim.public(A), sim.public(B));
    let until = sim.now + secs(2);
    let up = sim.run_until(until, |s| s.is_direct_to(A, b) && s.is_direct_to(B, a));
    assert!(
        up,
        "no direct path within 2 s: A {:?}, B {:?}; A dropped {:?}",
        sim.path(A),
        sim.path(B),
        sim.nodes[A].dropped
    );
    sim
}

// ---- 1. direct -----------------------------------------------------------

#[test]
fn both_sides_go_direct_within_100_ms_of_the_first_datagram() {
    let mut sim = Sim::new(0);
    sim.start();
    let (a, b) = (sim.public(A), sim.public(B));
    assert_eq!(sim.nodes[B].endpoint, Some(a), "the directory lists A");
    assert_eq!(sim.nodes[A].endpoint, Some(b), "the directory lists B");
    let start = sim.now;
    assert_eq!(sim.send_wireguard(A), Route::Direct);
    let up = sim.run_until(start + ms(100), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(
        up,
        "after 100 ms: A {:?}, B {:?}; what A dropped: {:?}; what A passed up as WireGuard: {:?}",
        sim.path(A),
        sim.path(B),
        sim.nodes[A].dropped,
        sim.nodes[A]
            .wireguard
            .iter()
            .map(|r| r.payload.len())
            .collect::<Vec<_>>()
    );
    for node in [A, B] {
        let info = sim.info(node);
        assert!(!info.relayed, "{node}: {info:?}");
        assert_eq!(info.relay, None);
        assert_eq!(info.remote, Some(sim.public(1 - node)));
    }
    assert_eq!(sim.send_wireguard(A), Route::Direct);
    assert_eq!(sim.send_wireguard(B), Route::Direct);
    sim.run_for(ms(100));
    let got = sim.wireguard_from(B, A);
    assert_eq!(got.len(), 2, "B got both of A's datagrams");
    assert!(got.iter().all(|r| r.from == a));
    assert_eq!(sim.wireguard_from(A, B).len(), 1);
    // Only WireGuard was passed up: no check or answer came out as one.
    assert_eq!(
        sim.nodes[A].wireguard.len(),
        1,
        "A: {:?}",
        sim.nodes[A].wireguard
    );
    assert_eq!(
        sim.nodes[B].wireguard.len(),
        2,
        "B: {:?}",
        sim.nodes[B].wireguard
    );
}

#[test]
fn an_answer_to_a_check_is_never_passed_up_as_wireguard() {
    // A Binding success response starts with 0x01 like a WireGuard
    // initiation; it must reach the check machinery, not the tunnel.
    let mut sim = Sim::new(0);
    sim.start();
    sim.send_wireguard(A);
    sim.run_for(ms(1));
    let (a, b) = (sim.public(A), sim.public(B));
    let check = sim
        .queue
        .iter()
        .find(|p| p.src == a && p.dst == b && is_check(&p.payload))
        .map(|p| p.payload.clone())
        .expect("A checks B once it has traffic for it");
    let id: [u8; 12] = check[8..20].try_into().expect("a 12-byte id");
    let password = check_password(sim.nodes[B].secret, sim.key(A));
    let answer = check_answer(id, a, &password);
    assert_eq!(answer[0], 0x01, "a Binding success response's first byte");
    let (what, _) = sim.inject(A, b, &answer);
    assert_eq!(what, "Handled");
    assert!(sim.is_direct_to(A, b), "A: {:?}", sim.path(A));
}

#[test]
fn a_device_checks_nobody_before_traffic_wants_the_peer() {
    let mut sim = Sim::new(0);
    // B is asleep: no check of B's wakes A up.
    sim.nodes[B].frozen = true;
    sim.start();
    sim.run_for(secs(5));
    assert!(sim.nodes[A].checks.is_empty(), "{:?}", sim.nodes[A].checks);
    assert_eq!(sim.nodes[A].paths.poll_timeout(), None, "nothing to do");
    let t = sim.now;
    sim.send_wireguard(A);
    sim.run_for(ms(1));
    assert!(
        sim.nodes[A]
            .checks
            .iter()
            .any(|(at, dst)| *at == t && *dst == sim.public(B)),
        "traffic starts the checks at once: {:?}",
        sim.nodes[A].checks
    );
}

// ---- 2. address-dependent filtering ---------------------------------------

#[test]
fn address_dependent_filtering_on_both_sides_still_goes_direct() {
    let mut sim = Sim::new(0);
    sim.nodes[A].filter = Filter::AddressAndPortDependent;
    sim.nodes[B].filter = Filter::AddressAndPortDependent;
    sim.start();
    // The agent checks at once; A's NAT drops those until A sends.
    sim.run_for(ms(1500));
    let (a, b) = (sim.public(A), sim.public(B));
    assert_eq!(sim.path(A), Path::None);
    assert!(
        !sim.nodes[B].checks.is_empty(),
        "an agent checks a device whose candidates arrive"
    );
    let start = sim.now;
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(start + secs(2), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
}

// ---- NATs --------------------------------------------------------------------

/// A and B behind NATs (private host addresses, one public address each),
/// both with a relay for their server-reflexive address.
fn behind_nats(a_symmetric: bool, b_filter: Filter) -> Sim {
    let mut sim = Sim::new(1);
    sim.nodes[A].host = addr("10.0.0.2:51820");
    sim.nodes[A].public = addr("198.51.100.10:51820");
    sim.nodes[A].symmetric = a_symmetric;
    sim.nodes[A].filter = Filter::AddressAndPortDependent;
    sim.nodes[B].host = addr("10.0.1.2:51820");
    sim.nodes[B].public = addr("203.0.113.20:51820");
    sim.nodes[B].filter = b_filter;
    sim.use_relays(A, &[0]);
    sim.use_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(500));
    sim
}

#[test]
fn behind_two_cone_nats_the_reflexive_addresses_make_it_direct() {
    let mut sim = behind_nats(false, Filter::AddressAndPortDependent);
    let (a, b) = (sim.public(A), sim.public(B));
    assert!(
        sim.nodes[B].paths.candidates().contains(&b),
        "B learnt its public address from the relay"
    );
    let start = sim.now;
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(start + secs(2), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
}

#[test]
fn a_symmetric_nat_against_a_restricted_cone_goes_direct_by_a_peer_reflexive_address() {
    let mut sim = behind_nats(true, Filter::AddressDependent);
    let b = sim.public(B);
    let start = sim.now;
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    // A's port towards B is one nobody announced: B learns it from A's
    // checks.
    let up = sim.run_until(start + secs(5), |s| {
        s.is_direct_to(A, b)
            && matches!(s.path(B), Path::Direct { remote } if s.nodes[A].nat_ports.get(&b) == Some(&remote))
    });
    assert!(
        up,
        "A {:?}, B {:?}; A's ports {:?}",
        sim.path(A),
        sim.path(B),
        sim.nodes[A].nat_ports
    );
    assert!(!sim.info(A).relayed && !sim.info(B).relayed);
}

#[test]
fn a_symmetric_nat_against_a_port_restricted_cone_is_relayed() {
    let mut sim = behind_nats(true, Filter::AddressAndPortDependent);
    let start = sim.now;
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(start + secs(3), |s| s.info(A).relayed && s.info(B).relayed);
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
    let (to_b, to_a) = (
        sim.wireguard_from(B, A).len(),
        sim.wireguard_from(A, B).len(),
    );
    sim.run_for(secs(20));
    assert!(sim.info(A).relayed && sim.info(B).relayed, "no flapping");
    assert!(sim.wireguard_from(B, A).len() > to_b + 150);
    assert!(sim.wireguard_from(A, B).len() > to_a + 150);
}

// ---- 3. forged, garbage and truncated input -------------------------------

#[test]
fn a_check_signed_with_another_key_gets_no_answer_and_changes_nothing() {
    let mut sim = direct_pair();
    let (a, b) = (sim.public(A), sim.public(B));
    let mallory_secret: [u8; 32] = rand::random();
    let mallory = addr("192.0.2.66:40000");
    // The best a third party can do: A's name, signed with the key it would
    // share with B.
    let wrong = check_password(mallory_secret, sim.key(B));
    let events_before = sim.nodes[B].events.len();
    for from in [mallory, a] {
        let forged = check_request(rand::random(), &sim.key(A), &wrong);
        let (_, sent) = sim.inject(B, from, &forged);
        assert!(
            sent.iter()
                .all(|(_, p)| !is_stun_of(p, MessageClass::SuccessResponse)),
            "a forged check from {from} was answered"
        );
        assert!(sent.iter().all(|(dst, _)| *dst != mallory), "{sent:?}");
    }
    // Mallory in its own name: not a peer of B.
    let own = check_password(mallory_secret, sim.key(B));
    let (_, sent) = sim.inject(
        B,
        mallory,
        &check_request(rand::random(), &public_key(mallory_secret), &own),
    );
    assert!(sent.is_empty(), "{sent:?}");
    sim.run_for(secs(3));
    assert!(sim.is_direct_to(B, a));
    assert!(sim.is_direct_to(A, b));
    assert_eq!(
        sim.nodes[B].events.len(),
        events_before,
        "{:?}",
        &sim.nodes[B].events[events_before..]
    );
    assert!(sim.nodes[B].checks.iter().all(|(_, dst)| *dst != mallory));

    // The control: the same check signed with the key A and B share is
    // answered, so the ones above failed for their key alone.
    let right = check_password(sim.nodes[A].secret, sim.key(B));
    let (_, sent) = sim.inject(
        B,
        mallory,
        &check_request(rand::random(), &sim.key(A), &right),
    );
    assert!(
        sent.iter()
            .any(|(dst, p)| *dst == mallory && is_stun_of(p, MessageClass::SuccessResponse)),
        "a check signed with the shared key is answered: {sent:?}"
    );
}

#[test]
fn an_answer_signed_with_another_key_changes_no_path() {
    let mut sim = Sim::new(0);
    sim.block_direct = true;
    sim.start();
    let (a, b) = (sim.public(A), sim.public(B));
    sim.send_wireguard(A);
    sim.run_for(ms(1));
    let check = sim
        .queue
        .iter()
        .find(|p| p.src == a && p.dst == b && is_check(&p.payload))
        .map(|p| p.payload.clone())
        .expect("A checks B");
    let id: [u8; 12] = check[8..20].try_into().expect("a 12-byte id");
    let wrong = check_password(rand::random(), sim.key(A));
    let (what, sent) = sim.inject(A, b, &check_answer(id, a, &wrong));
    assert!(sent.is_empty(), "{what}: {sent:?}");
    sim.run_for(ms(200));
    assert_eq!(sim.path(A), Path::None);
    // The control: signed right, the same answer makes the path.
    let right = check_password(sim.nodes[B].secret, sim.key(A));
    let (what, _) = sim.inject(A, b, &check_answer(id, a, &right));
    assert_eq!(what, "Handled");
    assert!(sim.is_direct_to(A, b), "A: {:?}", sim.path(A));
}

#[test]
fn truncated_and_corrupted_checks_are_never_answered() {
    let mut sim = direct_pair();
    let a = sim.public(A);
    let password = check_password(sim.nodes[A].secret, sim.key(B));
    let check = check_request(rand::random(), &sim.key(A), &password);
    for len in 0..check.len() {
        let (_, sent) = sim.inject(B, a, &check[..len]);
        assert!(
            sent.iter()
                .all(|(_, p)| !is_stun_of(p, MessageClass::SuccessResponse)),
            "a check cut to {len} bytes was answered"
        );
    }
    // Every byte up to the end of MESSAGE-INTEGRITY (the FINGERPRINT after
    // it is optional to a receiver).
    for i in 0..check.len() - 8 {
        let mut bad = check.clone();
        bad[i] ^= 0x5A;
        let (_, sent) = sim.inject(B, a, &bad);
        assert!(
            sent.iter()
                .all(|(_, p)| !is_stun_of(p, MessageClass::SuccessResponse)),
            "a check with byte {i} flipped was answered"
        );
    }
    assert!(sim.is_direct_to(B, a));
}

/// Both sides with a relay each and an established path, for the fuzzing.
fn relayed_pair() -> Sim {
    let mut sim = Sim::new(1);
    sim.use_relays(A, &[0]);
    sim.use_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(200));
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(2));
    sim.stop_flows();
    sim
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_datagrams_never_panic_nor_change_a_path(
        datagrams in prop::collection::vec(
            (0usize..5, prop::collection::vec(any::<u8>(), 0..160), any::<bool>()),
            1..24,
        )
    ) {
        let mut sim = relayed_pair();
        let before = (sim.path(A), sim.path(B));
        let turn = sim.turns[0].addr;
        let relayed = sim.turns[0].relayed_of(sim.public(A)).unwrap_or(turn);
        for (who, mut bytes, stun_shaped) in datagrams {
            if stun_shaped && bytes.len() >= 20 {
                // A valid STUN header, so the decoder is reached.
                let body = (bytes.len() - 20) / 4 * 4;
                bytes.truncate(20 + body);
                bytes[0] &= 0x01;
                bytes[2..4].copy_from_slice(&(body as u16).to_be_bytes());
                bytes[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            let from = [sim.public(B), turn, relayed, addr("192.0.2.66:40000"), sim.public(A)][who];
            let now = sim.now;
            let _ = sim.nodes[A].paths.handle_datagram(now, from, &bytes);
            let _ = sim.nodes[B].paths.handle_datagram(now, from, &bytes);
            sim.drain_all();
        }
        sim.run_for(ms(300));
        prop_assert_eq!((sim.path(A), sim.path(B)), before);
    }
}

// ---- 4. dead direct paths and relays ---------------------------------------

#[test]
fn a_dead_direct_path_is_given_up_within_seconds() {
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(3));
    let dead = sim.now;
    sim.block_direct = true;
    let gone = sim.run_until(dead + secs(6), |s| s.path(A) == Path::None);
    assert!(gone, "A still on {:?} 6 s after the path died", sim.path(A));
    eprintln!("direct path given up after {:?}", sim.now - dead);
    // The tunnel keeps WireGuard's own endpoint meanwhile.
    assert_eq!(sim.send_wireguard(A), Route::Direct);
}

#[test]
fn a_dead_direct_path_falls_back_to_the_relay() {
    let mut sim = Sim::new(1);
    sim.use_relays(A, &[0]);
    sim.refused_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(200));
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let (a, b) = (sim.public(A), sim.public(B));
    let up = sim.run_until(sim.now + secs(2), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
    sim.run_for(secs(3));
    let dead = sim.now;
    sim.block_direct = true;
    let moved = sim.run_until(dead + secs(6), |s| s.info(A).relayed && s.info(B).relayed);
    assert!(
        moved,
        "6 s after the direct path died: A {:?}, B {:?}",
        sim.path(A),
        sim.path(B)
    );
    eprintln!("moved to the relay after {:?}", sim.now - dead);
    let received = sim.wireguard_from(B, A).len();
    sim.run_for(secs(1));
    assert!(
        sim.wireguard_from(B, A).len() >= received + 8,
        "traffic flows through the relay"
    );
}

#[test]
fn with_direct_blocked_the_devices_relay_carries_it_after_the_grace() {
    let mut sim = Sim::new(1);
    sim.block_direct = true;
    sim.use_relays(A, &[0]);
    sim.refused_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(500));
    let turn = sim.turns[0].addr;
    let (a, b) = (sim.public(A), sim.public(B));
    let relayed = sim.turns[0].relayed_of(a).expect("A allocated");
    assert!(sim.nodes[A].paths.candidates().contains(&relayed));
    let start = sim.now;
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(start + secs(3), |s| {
        matches!(s.path(A), Path::Relayed { .. }) && s.is_direct_to(B, relayed)
    });
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
    let (at, _) = *sim.nodes[A]
        .path_changes()
        .iter()
        .find(|(_, p)| matches!(p, Path::Relayed { .. }))
        .expect("a change to the relay");
    assert!(
        at >= start + DIRECT_GRACE,
        "relayed after {:?}, before the grace",
        at - start
    );
    assert_eq!(
        sim.path(A),
        Path::Relayed {
            relay: 0,
            server: turn,
            remote: b
        }
    );
    assert_eq!(
        sim.info(A),
        PathInfo {
            relayed: true,
            relay: Some(turn),
            remote: Some(b)
        }
    );
    assert_eq!(
        sim.info(B),
        PathInfo {
            relayed: true,
            relay: Some(turn),
            remote: Some(relayed)
        },
        "straight to A's relayed address is relayed too"
    );
    // Through the relay both ways.
    let from_a = sim.wireguard_from(B, A).len();
    let from_b = sim.wireguard_from(A, B).len();
    assert_eq!(sim.send_wireguard(A), Route::Relay(turn));
    sim.run_for(secs(1));
    let got = sim.wireguard_from(B, A);
    assert!(got.len() > from_a + 5);
    assert!(
        got[from_a..].iter().all(|r| r.from == relayed),
        "B hears A at its relayed address"
    );
    let got = sim.wireguard_from(A, B);
    assert!(got.len() > from_b + 5);
    assert!(
        got[from_b..].iter().all(|r| r.from == b),
        "A hears B at B's own address"
    );
    assert!(sim.turns[0].stats.to_peers > 10 && sim.turns[0].stats.to_clients > 10);
}

#[test]
fn with_direct_blocked_and_a_relay_each_both_sides_are_relayed() {
    let mut sim = Sim::new(1);
    sim.block_direct = true;
    sim.use_relays(A, &[0]);
    sim.use_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(500));
    let turn = sim.turns[0].addr;
    let (a, b) = (sim.public(A), sim.public(B));
    let start = sim.now;
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(start + secs(3), |s| s.info(A).relayed && s.info(B).relayed);
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
    for node in [A, B] {
        let info = sim.info(node);
        assert_eq!(info.relay, Some(turn), "{node}: {info:?}");
        // The change came a grace after the checks began unless it is
        // straight to the peer's relayed address (a direct pair to the
        // selector). The agent began when A's candidates arrived.
        let began = sim.first_check(node, sim.t0).expect("checks");
        let (at, path) = sim.nodes[node].path_changes()[0];
        if matches!(path, Path::Relayed { .. }) {
            assert!(
                at >= began + DIRECT_GRACE,
                "{node}: relayed {:?} after its checks began",
                at - began
            );
        }
    }
    let from_a = sim.wireguard_from(B, A).len();
    sim.run_for(secs(1));
    let got = sim.wireguard_from(B, A);
    assert!(got.len() > from_a + 5, "A's WireGuard reaches B");
    // Whichever relay carries it, B sees A where the relay saw it.
    let relayed_a = sim.turns[0].relayed_of(a).expect("A allocated");
    assert!(
        got[from_a..]
            .iter()
            .all(|r| r.from == a || r.from == relayed_a),
        "{:?}",
        got[from_a..].iter().map(|r| r.from).collect::<HashSet<_>>()
    );
    let relayed_b = sim.turns[0].relayed_of(b).expect("B allocated");
    if sim.path(A) == (Path::Direct { remote: relayed_b }) {
        assert!(
            got[from_a..].iter().all(|r| r.from == a),
            "out of B's own allocation: from A's address"
        );
    }
}

// ---- 5. relay failover -----------------------------------------------------

#[test]
fn a_relay_that_stops_answering_fails_over_to_the_other_within_10_s() {
    let mut sim = Sim::new(2);
    sim.block_direct = true;
    sim.use_relays(A, &[0, 1]);
    sim.refused_relays(B, &[0, 1]);
    sim.start();
    sim.run_for(ms(500));
    let b = sim.public(B);
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(sim.now + secs(3), |s| {
        matches!(s.path(A), Path::Relayed { .. })
    });
    assert!(up, "A {:?}", sim.path(A));
    sim.run_for(secs(5));
    let Path::Relayed { relay, server, .. } = sim.path(A) else {
        panic!("A left the relay: {:?}", sim.path(A));
    };
    let dead = sim
        .turns
        .iter()
        .position(|t| t.addr == server)
        .expect("one of ours");
    let other = 1 - dead;
    sim.turns[dead].dead = true;
    let died = sim.now;
    let moved = sim.run_until(
        died + secs(10),
        |s| matches!(s.path(A), Path::Relayed { server, .. } if server == s.turns[other].addr),
    );
    assert!(moved, "10 s after relay {relay} died: A {:?}", sim.path(A));
    eprintln!("failed over after {:?}", sim.now - died);
    assert_eq!(
        sim.path(A),
        Path::Relayed {
            relay: other,
            server: sim.turns[other].addr,
            remote: b
        }
    );
    // B follows to A's other relayed address, and traffic flows again.
    let relayed = sim.turns[other]
        .relayed_of(sim.public(A))
        .expect("A allocated");
    let follows = sim.run_until(died + secs(10), |s| s.is_direct_to(B, relayed));
    assert!(follows, "B {:?}", sim.path(B));
    let (to_b, to_a) = (
        sim.wireguard_from(B, A).len(),
        sim.wireguard_from(A, B).len(),
    );
    sim.run_for(secs(1));
    assert!(sim.wireguard_from(B, A).len() > to_b + 5);
    assert!(sim.wireguard_from(A, B).len() > to_a + 5);
}

#[test]
fn a_relay_the_coordinator_drops_is_closed_and_the_path_moves_at_once() {
    let mut sim = Sim::new(2);
    sim.block_direct = true;
    sim.use_relays(A, &[0, 1]);
    sim.refused_relays(B, &[0, 1]);
    sim.start();
    sim.run_for(ms(500));
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    let Path::Relayed { server, .. } = sim.path(A) else {
        panic!("A {:?}", sim.path(A));
    };
    let gone = sim
        .turns
        .iter()
        .position(|t| t.addr == server)
        .expect("ours");
    let kept = 1 - gone;
    let a = sim.public(A);
    assert!(sim.turns[gone].relayed_of(a).is_some());
    let now = sim.now;
    let list = vec![sim.relay(kept)];
    sim.nodes[A].paths.set_relays(now, list);
    sim.drain_all();
    let kept_server = sim.turns[kept].addr;
    assert!(
        matches!(sim.path(A), Path::Relayed { server, .. } if server == kept_server),
        "A {:?}",
        sim.path(A)
    );
    sim.run_for(secs(2));
    assert_eq!(sim.turns[gone].relayed_of(a), None, "deallocated");
    let relayed = sim.turns[kept].relayed_of(a).expect("allocated");
    assert!(sim.is_direct_to(B, relayed), "B {:?}", sim.path(B));
    assert!(!sim.nodes[A]
        .paths
        .candidates()
        .iter()
        .any(|c| c.ip() == server.ip()));
}

#[test]
fn a_removed_peer_is_no_longer_checked() {
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(3));
    sim.stop_flows();
    let key = sim.key(A);
    sim.nodes[B].paths.remove_peer(&key);
    let removed = sim.now;
    assert_eq!(sim.nodes[B].paths.path_info(&key), None);
    assert_eq!(sim.path(B), Path::None);
    sim.run_for(secs(60));
    assert!(
        sim.nodes[B].checks.iter().all(|(t, _)| *t < removed),
        "B checks a peer it no longer has"
    );
    // A's checks are not answered: B doesn't know it any more.
    let a = sim.public(A);
    assert!(sim.nodes[A].checks.iter().any(|(t, _)| *t > removed));
    let (a_secret, b_key) = (sim.nodes[A].secret, sim.key(B));
    let check = check_request(rand::random(), &key, &check_password(a_secret, b_key));
    let (_, sent) = sim.inject(B, a, &check);
    assert!(sent.is_empty(), "{sent:?}");
}

#[test]
fn a_plain_wireguard_peer_is_checked_once_then_left_to_wireguard() {
    let mut sim = Sim::new(0);
    sim.nodes[B].plain = true;
    sim.start();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(120));
    let checks = sim.nodes[A].checks.len();
    assert!(
        checks <= 6,
        "A checked a peer that never answers {checks} times in 2 min"
    );
    assert_eq!(sim.path(A), Path::None);
    assert!(
        sim.nodes[A].rechecks().is_empty(),
        "{:?}",
        sim.nodes[A].rechecks()
    );
    assert!(sim.wireguard_from(A, B).len() > 1000 && sim.wireguard_from(B, A).len() > 1000);
}

#[test]
fn a_way_that_opens_after_the_first_round_failed_is_found_while_traffic_flows() {
    // No relay, nothing gets through at first: neither side has heard the
    // other, yet both run a path layer.
    let mut sim = Sim::new(0);
    sim.block_direct = true;
    sim.start();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(30));
    assert_eq!(sim.path(A), Path::None);
    sim.block_direct = false;
    let opened = sim.now;
    let (a, b) = (sim.public(A), sim.public(B));
    let up = sim.run_until(opened + secs(10), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(
        up,
        "10 s after the way opened: A {:?}, B {:?}",
        sim.path(A),
        sim.path(B)
    );
}

#[test]
fn a_relayed_path_stays_up_for_an_hour() {
    // The fake server expires what isn't refreshed: the allocation (600 s),
    // permissions (300 s) and channel bindings (600 s).
    let mut sim = Sim::new(1);
    sim.block_direct = true;
    sim.use_relays(A, &[0]);
    sim.refused_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(500));
    sim.flow(A, secs(1));
    sim.flow(B, secs(1));
    sim.run_for(secs(10));
    let path = sim.path(A);
    assert!(matches!(path, Path::Relayed { .. }), "A {path:?}");
    let changes = (
        sim.nodes[A].path_changes().len(),
        sim.nodes[B].path_changes().len(),
    );
    for minute in 0..60 {
        let (to_b, to_a) = (
            sim.wireguard_from(B, A).len(),
            sim.wireguard_from(A, B).len(),
        );
        sim.run_for(secs(60));
        assert!(
            sim.wireguard_from(B, A).len() >= to_b + 55
                && sim.wireguard_from(A, B).len() >= to_a + 55,
            "minute {minute}: traffic stalled; A {:?}, B {:?}",
            sim.path(A),
            sim.path(B)
        );
    }
    assert_eq!(sim.path(A), path);
    assert_eq!(
        (
            sim.nodes[A].path_changes().len(),
            sim.nodes[B].path_changes().len()
        ),
        changes,
        "the path never moved"
    );
    assert_eq!(
        sim.turns[0].stats.allocations, 1,
        "one allocation all along"
    );
}

#[test]
fn a_relayed_path_survives_credential_rotation() {
    rotation(2, secs(1));
}

#[test]
fn a_relayed_path_on_one_relay_survives_credential_rotation_with_a_blip() {
    rotation(1, secs(3));
}

/// coturn's REST API credentials: an hour's lifetime, fresh ones from the
/// coordinator every 40 minutes (two thirds of it), an allocation tied to
/// the username that made it. Over four rotations WireGuard stops for at
/// most `most`.
fn rotation(relays: usize, most: Duration) {
    let ttl = secs(3600);
    let mut sim = Sim::new(relays as u8);
    for t in &mut sim.turns {
        t.rest_api = Some(sim.t0);
    }
    sim.block_direct = true;
    let b = sim.public(B);
    let all: Vec<usize> = (0..relays).collect();
    for t in &all {
        sim.turns[*t].refuse.insert(b);
    }
    sim.rotate_credentials(A, &all, ttl);
    sim.rotate_credentials(B, &all, ttl);
    sim.start();
    sim.run_for(ms(500));
    sim.flow(A, ms(200));
    sim.flow(B, ms(200));
    sim.run_for(secs(10));
    assert!(
        matches!(sim.path(A), Path::Relayed { .. }),
        "A {:?}",
        sim.path(A)
    );
    let start = sim.now;
    for _ in 0..4 {
        sim.run_for(ttl * 2 / 3);
        sim.rotate_credentials(A, &all, ttl);
        sim.rotate_credentials(B, &all, ttl);
    }
    let end = sim.now;
    let gaps = (
        sim.longest_gap(B, A, start, end),
        sim.longest_gap(A, B, start, end),
    );
    eprintln!("{relays} relays: longest gaps A to B, B to A: {gaps:?}");
    assert!(
        gaps.0 <= most && gaps.1 <= most,
        "traffic stopped for {gaps:?} over {:?} of rotations; A {:?}, B {:?}",
        end - start,
        sim.path(A),
        sim.path(B)
    );
}

#[test]
fn a_dead_address_family_moves_the_path_to_the_other_one() {
    let mut sim = Sim::new(0);
    sim.nodes[A].v6 = Some(addr("[2001:db8:a::10]:51820"));
    sim.nodes[B].v6 = Some(addr("[2001:db8:b::20]:51820"));
    sim.start();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    let Path::Direct { remote } = sim.path(A) else {
        panic!("A {:?}", sim.path(A));
    };
    // The family in use dies (an IPv6 uplink going away, say).
    let (a, b) = if remote.is_ipv6() {
        (sim.public(A), sim.public(B))
    } else {
        (sim.nodes[A].v6.expect("v6"), sim.nodes[B].v6.expect("v6"))
    };
    sim.blocked.insert(remote.ip());
    let died = sim.now;
    let moved = sim.run_until(died + secs(6), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(
        moved,
        "6 s after {remote} died: A {:?}, B {:?}",
        sim.path(A),
        sim.path(B)
    );
    eprintln!("moved to {b} after {:?}", sim.now - died);
    let got = sim.wireguard_from(B, A).len();
    sim.run_for(secs(1));
    assert!(sim.wireguard_from(B, A).len() > got + 5);
}

// ---- 6. upgrade ------------------------------------------------------------

#[test]
fn a_relayed_path_becomes_direct_within_10_s_once_the_way_opens() {
    let mut sim = Sim::new(1);
    sim.block_direct = true;
    sim.use_relays(A, &[0]);
    sim.refused_relays(B, &[0]);
    sim.start();
    sim.run_for(ms(500));
    let (a, b) = (sim.public(A), sim.public(B));
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(15));
    assert!(
        matches!(sim.path(A), Path::Relayed { .. }),
        "A {:?}",
        sim.path(A)
    );
    sim.block_direct = false;
    let opened = sim.now;
    let up = sim.run_until(opened + secs(10), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(
        up,
        "10 s after the way opened: A {:?}, B {:?}",
        sim.path(A),
        sim.path(B)
    );
    eprintln!("direct after {:?}", sim.now - opened);
    assert_eq!(sim.send_wireguard(A), Route::Direct);
    assert!(!sim.info(A).relayed && !sim.info(B).relayed);
}

#[test]
fn checks_stay_at_the_keepalive_rate_on_an_established_pair() {
    // A check that arrives on a pair that just succeeded must not trigger
    // one back, or the two sides answer each other's checks forever.
    let mut sim = relayed_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    let from = sim.now;
    sim.run_for(secs(60));
    for node in [A, B] {
        let checks = sim.nodes[node]
            .checks
            .iter()
            .filter(|(t, _)| *t >= from)
            .count();
        // Four pairs each (two addresses of the peer, two ways out), one
        // check per KEEPALIVE, plus the pair carrying the traffic once per
        // BUSY_KEEPALIVE, plus slack for realignment.
        let carrying = (60 / BUSY_KEEPALIVE.as_secs()) as usize;
        assert!(
            checks <= 4 * 4 + carrying + 8,
            "{node} sent {checks} checks in 60 s"
        );
    }
}

#[test]
fn one_way_traffic_on_a_working_path_does_not_keep_asking_for_the_network() {
    // A sends; B only sends WireGuard's keepalive every 10 s. The path works
    // (every check is answered), so nothing suggests the network changed.
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.flow(B, secs(10));
    let from = sim.now;
    sim.run_for(secs(60));
    let b = sim.public(B);
    assert!(sim.is_direct_to(A, b));
    let rechecks = sim.nodes[A]
        .rechecks()
        .iter()
        .filter(|t| **t >= from)
        .count();
    assert!(
        rechecks <= 1,
        "A asked to read the interfaces {rechecks} times in 60 s on a working path"
    );
}

// ---- roaming ------------------------------------------------------------------

/// A moves to another network (Wi-Fi to LTE) while sending.
fn roam(coordinator: bool) -> (Sim, Instant) {
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    sim.coordinator = coordinator;
    let moved = addr("198.51.100.77:51820");
    sim.nodes[A].host = moved;
    sim.nodes[A].public = moved;
    sim.nodes[A].sent_to.clear();
    let now = sim.now;
    sim.nodes[A].paths.set_host_candidates(now, vec![moved]);
    sim.drain_all();
    (sim, now)
}

#[test]
fn a_device_that_moves_is_reached_at_its_new_address_within_2_s() {
    let (mut sim, moved) = roam(true);
    let (a, b) = (sim.public(A), sim.public(B));
    let up = sim.run_until(moved + secs(2), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
    let got = sim.wireguard_from(A, B).len();
    sim.run_for(secs(1));
    assert!(
        sim.wireguard_from(A, B).len() > got + 5,
        "B's traffic reaches A again"
    );
}

#[test]
fn a_device_that_moves_is_found_by_its_checks_when_the_coordinator_is_slow() {
    // The new candidates don't arrive; A's checks from its new address are
    // the only news (a peer-reflexive address).
    let (mut sim, moved) = roam(false);
    let (a, b) = (sim.public(A), sim.public(B));
    let up = sim.run_until(moved + secs(5), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(
        up,
        "5 s after A moved: A {:?}, B {:?}",
        sim.path(A),
        sim.path(B)
    );
    eprintln!("B follows after {:?}", sim.now - moved);
}

// ---- 7. idle ---------------------------------------------------------------

/// Wake-ups of `node` in `[from, to)`, counting those within a second of
/// each other as one.
fn wakeup_bursts(sim: &Sim, node: usize, from: Instant, to: Instant) -> usize {
    let mut bursts = 0;
    let mut last: Option<Instant> = None;
    for t in sim.nodes[node]
        .wakeups
        .iter()
        .copied()
        .filter(|t| *t >= from && *t < to)
    {
        if last.is_none_or(|l| t - l > secs(1)) {
            bursts += 1;
        }
        last = Some(t);
    }
    bursts
}

#[test]
fn an_idle_pair_wakes_once_per_keepalive_then_goes_quiet() {
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    sim.stop_flows();
    let quiet = sim.now;
    // While traffic is recent (BUSY_FOR) the pair carrying it is checked
    // every BUSY_KEEPALIVE; the idle rate is what follows.
    sim.run_for(BUSY_FOR + BUSY_KEEPALIVE + secs(1));
    let from = sim.now;
    sim.run_for(secs(150));
    for node in [A, B] {
        let wakeups = sim.nodes[node]
            .wakeups
            .iter()
            .filter(|t| **t >= from)
            .count();
        let most = (150 / KEEPALIVE.as_secs() + 1) as usize;
        assert!(
            wakeups <= most,
            "{node} woke {wakeups} times in 150 s with one pair (at most {most}): {:?}",
            sim.nodes[node]
                .wakeups
                .iter()
                .filter(|t| **t >= from)
                .map(|t| *t - quiet)
                .collect::<Vec<_>>()
        );
    }
    // Past ACTIVE_FOR (and the agent's short window for announced
    // candidates) without traffic: nothing left to do.
    sim.run_until(quiet + ACTIVE_FOR + secs(40), |_| false);
    let checks_from = sim.now;
    sim.run_for(secs(300));
    for node in [A, B] {
        let late: Vec<Duration> = sim.nodes[node]
            .checks
            .iter()
            .filter(|(t, _)| *t >= checks_from)
            .map(|(t, _)| *t - quiet)
            .take(10)
            .collect();
        assert!(
            late.is_empty(),
            "{node} still checks {:?} after the traffic stopped",
            late
        );
        assert_eq!(
            sim.nodes[node].paths.poll_timeout(),
            None,
            "{node} has timers left"
        );
    }
    // The path stays for the next datagram.
    assert!(sim.is_direct_to(A, sim.public(B)));
}

#[test]
fn an_idle_relayed_pair_keeps_only_the_relays_timers() {
    let mut sim = relayed_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    sim.stop_flows();
    let quiet = sim.now;
    sim.run_until(quiet + ACTIVE_FOR + secs(40), |_| false);
    let from = sim.now;
    sim.run_for(secs(1200));
    for node in [A, B] {
        let late: Vec<Duration> = sim.nodes[node]
            .checks
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(t, _)| *t - quiet)
            .take(10)
            .collect();
        assert!(
            late.is_empty(),
            "{node} still checks {late:?} after the traffic stopped"
        );
        // Permission refreshes (240 s), channel and allocation refreshes:
        // a burst every few minutes, not a keepalive.
        let bursts = wakeup_bursts(&sim, node, from, sim.now);
        assert!(
            bursts <= 20,
            "{node}: {bursts} wake-up bursts in 20 idle minutes"
        );
        if let Some(t) = sim.nodes[node].paths.poll_timeout() {
            assert!(t > sim.now, "{node}: a timer in the past");
        }
    }
    assert!(
        sim.turns[0].allocations.len() == 2,
        "both allocations stay refreshed"
    );
}

// ---- 8. sleep ----------------------------------------------------------------

#[test]
fn a_long_sleep_asks_for_the_network_and_checks_again() {
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    sim.run_for(secs(5));
    sim.stop_flows();
    sim.run_for(ms(100));
    // A sleeps 200 s: no timer runs, nothing arrives; B carries on.
    sim.nodes[A].frozen = true;
    let asleep = sim.now;
    sim.run_for(secs(200));
    let rechecks_before = sim.nodes[A].rechecks().len();
    sim.nodes[A].frozen = false;
    let woke = sim.now;
    // The first timer on waking is long overdue.
    let due = sim.nodes[A].paths.poll_timeout().expect("A has a timer");
    assert!(
        due < woke,
        "A's timer {:?} after the sleep began",
        due - asleep
    );
    sim.nodes[A].wakeups.push(woke);
    sim.nodes[A].paths.handle_timeout(woke);
    sim.drain_all();
    let rechecks = sim.nodes[A].rechecks();
    assert_eq!(
        rechecks.len(),
        rechecks_before + 1,
        "one RecheckNetwork on waking"
    );
    assert_eq!(*rechecks.last().expect("one"), woke);
    let b = sim.public(B);
    assert!(
        sim.nodes[A]
            .checks
            .iter()
            .any(|(t, dst)| *t == woke && *dst == b),
        "A checks B again on waking: {:?}",
        sim.nodes[A]
            .checks
            .iter()
            .map(|(t, d)| (*t - asleep, *d))
            .collect::<Vec<_>>()
    );
    // Traffic resumes: both sides are direct again within a second.
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let a = sim.public(A);
    let up = sim.run_until(woke + secs(1), |s| {
        s.is_direct_to(A, b) && s.is_direct_to(B, a)
    });
    assert!(up, "A {:?}, B {:?}", sim.path(A), sim.path(B));
}

#[test]
fn a_short_sleep_with_traffic_before_it_rechecks_at_once() {
    let mut sim = direct_pair();
    sim.flow(A, ms(100));
    sim.run_for(secs(5));
    sim.stop_flows();
    sim.nodes[A].frozen = true;
    sim.run_for(secs(60));
    sim.nodes[A].frozen = false;
    let woke = sim.now;
    sim.run_for(ms(1));
    assert!(
        sim.nodes[A].rechecks().contains(&woke),
        "{:?}",
        sim.nodes[A].events
    );
    assert!(
        sim.nodes[A]
            .checks
            .iter()
            .any(|(t, dst)| *t == woke && *dst == sim.public(B)),
        "A checks B again on waking"
    );
}

// ---- 9. candidates -----------------------------------------------------------

#[test]
fn candidates_list_relayed_and_reflexive_addresses_first_and_at_most_16() {
    let mut sim = Sim::new(2);
    // A behind a NAT, with many interfaces.
    sim.nodes[A].host = addr("10.0.0.2:51820");
    sim.nodes[A].public = addr("198.51.100.10:40001");
    sim.nodes[A].extra_hosts = (0..20)
        .map(|i| SocketAddr::new(Ipv4Addr::new(10, 1, 0, 10 + i).into(), 51820))
        .chain([addr("0.0.0.0:51820"), addr("10.9.9.9:0")])
        .collect();
    sim.use_relays(A, &[0, 1]);
    sim.start();
    sim.run_for(ms(500));
    let announced: Vec<Vec<SocketAddr>> = sim.nodes[A]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            PathEvent::Candidates(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let last = announced.last().expect("A announced candidates").clone();
    assert_eq!(sim.nodes[A].paths.candidates(), &last[..]);
    let public = sim.public(A);
    let relayed: Vec<SocketAddr> = sim
        .turns
        .iter()
        .map(|t| t.relayed_of(public).expect("allocated"))
        .collect();
    for list in &announced {
        assert!(
            list.len() <= MAX_LOCAL_CANDIDATES,
            "{} candidates",
            list.len()
        );
        let distinct: HashSet<_> = list.iter().collect();
        assert_eq!(distinct.len(), list.len(), "no duplicates: {list:?}");
        assert!(
            list.iter()
                .all(|a| !a.ip().is_unspecified() && a.port() != 0),
            "{list:?}"
        );
    }
    assert!(
        last.contains(&public),
        "the server-reflexive address: {last:?}"
    );
    for r in &relayed {
        assert!(last.contains(r), "relayed {r}: {last:?}");
    }
    let first_host = last
        .iter()
        .position(|a| a.ip().to_string().starts_with("10."))
        .expect("some host candidates");
    assert_eq!(
        first_host, 3,
        "reflexive and relayed before every host: {last:?}"
    );
    assert!(last[first_host..]
        .iter()
        .all(|a| a.ip().to_string().starts_with("10.")));
    // B got them and checks them (the relayed ones reach A).
    sim.flow(A, ms(100));
    sim.flow(B, ms(100));
    let up = sim.run_until(sim.now + secs(3), |s| s.is_direct_to(A, s.public(B)));
    assert!(up, "A {:?}", sim.path(A));
}

// ---- bounds --------------------------------------------------------------------

#[test]
fn a_peer_listing_many_addresses_is_checked_at_a_capped_number() {
    let mut sim = Sim::new(0);
    sim.nodes[A].frozen = true;
    sim.start();
    let many: Vec<SocketAddr> = (0..100)
        .map(|i| {
            SocketAddr::new(
                Ipv4Addr::new(198, 51, 100, 100 + (i % 100) as u8).into(),
                40000 + i,
            )
        })
        .collect();
    let now = sim.now;
    let key = sim.key(A);
    sim.nodes[B].paths.upsert_peer(now, key, &many);
    sim.run_for(secs(20));
    let targets: HashSet<SocketAddr> = sim.nodes[B].checks.iter().map(|(_, d)| *d).collect();
    assert!(!targets.is_empty());
    // The coordinator lists at most 16; the rest of the cap is for
    // addresses learned from checks.
    assert!(targets.len() <= 16, "{} addresses checked", targets.len());
    assert!(targets.len() <= MAX_REMOTE_CANDIDATES);
}

#[test]
fn a_third_relay_waiting_to_be_retried_does_not_spin_the_timer() {
    // Three relays, the first dead: it fails, the third takes its place,
    // and the first's retry time passes while two allocations live.
    let mut sim = Sim::new(3);
    sim.turns[0].dead = true;
    sim.use_relays(A, &[0, 1, 2]);
    sim.start();
    sim.run_for(secs(60));
    assert!(sim.turns[1].allocations.len() == 1 && sim.turns[2].allocations.len() == 1);
    let wakeups = sim.nodes[A].wakeups.len();
    assert!(wakeups < 200, "A woke {wakeups} times in a minute");
}

#[test]
fn moving_to_another_network_is_told_once_and_the_first_addresses_are_not_a_move() {
    let t0 = Instant::now();
    let mut paths = Paths::new(Role::Device, [7; 32]);
    let changed = |p: &mut Paths| {
        std::iter::from_fn(|| p.poll_event())
            .filter(|e| *e == PathEvent::NetworkChanged)
            .count()
    };
    paths.set_host_candidates(t0, vec!["10.0.1.2:51820".parse().unwrap()]);
    assert_eq!(changed(&mut paths), 0, "the first addresses are no move");
    paths.set_host_candidates(t0, vec!["10.0.1.2:51820".parse().unwrap()]);
    assert_eq!(changed(&mut paths), 0, "the same addresses are no move");
    paths.set_host_candidates(t0, vec!["10.0.1.3:51820".parse().unwrap()]);
    assert_eq!(changed(&mut paths), 1);
}

/// Found by the `stun_turn` fuzz target: while a relay's allocation was
/// gone (failed, waiting to be retried), a WireGuard-shaped datagram from
/// the relay's address went up to the tunnel as WireGuard from a peer.
#[test]
fn wireguard_from_a_relay_is_never_passed_up_even_between_allocations() {
    let t0 = Instant::now();
    let server = addr("198.51.100.1:3478");
    let mut paths = Paths::new(Role::Agent, [2; 32]);
    paths.set_host_candidates(t0, vec![addr("192.0.2.1:51820")]);
    paths.set_relays(
        t0,
        vec![RelayServer {
            name: "relay.test:3478".into(),
            server,
            credentials: Credentials::new("4102444800:dev", "pw").unwrap(),
        }],
    );
    // A transport data message of a plausible size.
    let mut shaped = vec![0u8; 64];
    shaped[0] = 4;
    // The server never answers: the allocation fails after its few
    // retransmissions and is retried seconds later. Probe all along.
    let mut now = t0;
    while now < t0 + secs(20) {
        while paths.poll_transmit().is_some() {}
        while paths.poll_event().is_some() {}
        match paths.handle_datagram(now, server, &shaped) {
            Incoming::WireGuard { from, .. } => {
                panic!("WireGuard from the relay {from} at {:?}", now - t0)
            }
            Incoming::Handled | Incoming::Dropped(_) => {}
        }
        // As a driver does: ask when, then run the timers.
        let _ = paths.poll_timeout();
        now += ms(100);
        paths.handle_timeout(now);
    }
}
