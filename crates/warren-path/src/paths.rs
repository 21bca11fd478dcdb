//! [`Paths`]: how WireGuard reaches each peer of a tunnel — straight to one
//! of the peer's addresses, or through one of our TURN allocations — found
//! by connectivity checks and kept alive, sans-IO.
//!
//! It is ICE's job done the way a VPN needs it (the way Tailscale's magicsock
//! and Firezone's snownet do it), not an RFC 8445 agent:
//!
//! * **Candidates.** Ours are the socket's host addresses (the driver reads
//!   the interfaces), the server-reflexive address each TURN server sees and
//!   the relayed address of each allocation ([`PathEvent::Candidates`]: the
//!   driver announces them to the coordinator, which passes them on in the
//!   directory). A peer's are the endpoints the directory lists, plus any
//!   address a valid check arrives from (peer-reflexive).
//! * **Checks.** A STUN Binding request per pair (a way out: direct, or via
//!   relay `n`; and a peer address), authenticated with a key only the two
//!   peers share: SHA-256 over the X25519 agreement of their WireGuard keys,
//!   as a short-term MESSAGE-INTEGRITY. No ICE credentials travel through
//!   the coordinator and nobody else can make a peer answer or accept one.
//!   A check that arrives triggers checks back, so both NATs open at once.
//! * **Each side picks its own send path** ([`PathSelector`]'s rules: direct
//!   at once, a ready relay after a short grace, failover between relays,
//!   upgrade to direct). WireGuard doesn't need both directions to agree.
//! * **The path layer owns the endpoint.** Once a peer answers checks, the
//!   driver pins the tunnel's endpoint for it to the chosen path's remote
//!   ([`PathEvent::PathChanged`]); datagrams to a relayed remote are wrapped
//!   for the TURN server by [`Paths::route`]. Peers that never answer (a
//!   plain WireGuard peer) keep WireGuard's own roaming.
//! * **Quiet when idle.** Only peers with traffic in the last
//!   [`ACTIVE_FOR`] are checked; an established pair is re-checked every
//!   [`KEEPALIVE`] (which also keeps the NAT mapping open), a failed one
//!   every [`RECHECK_BUSY`] while traffic flows (so an opening NAT is
//!   noticed) and [`RECHECK_IDLE`] otherwise.
//! * **Dead paths are noticed by their silence.** Sending without hearing
//!   anything for [`SUSPECT_AFTER`] re-checks every pair at once and probes
//!   the relay in use; a timer that fires far too late (the machine slept)
//!   does the same for every active peer, and asks the driver to read the
//!   interfaces again ([`PathEvent::RecheckNetwork`]).
//!
//! Everything a peer or a server sends is validated and capped: remote
//! candidates ([`MAX_REMOTE_CANDIDATES`]), unusable addresses, STUN that is
//! not a Binding check signed by a known peer.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use stun_codec::rfc5389::attributes::{MessageIntegrity, Username, XorMappedAddress};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{MessageClass, TransactionId};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::demux::{classify, Datagram};
use crate::select::{Path, PathSelector, RelayId};
use crate::turn::msg::{self, Msg};
use crate::turn::{self, Allocation, Credentials, Retransmission, TurnEvent};

/// A WireGuard public key.
pub type PeerKey = [u8; 32];

/// An established pair is re-checked this often: the NAT keepalive (most
/// NATs keep a UDP mapping 30 s or more) and the proof it still works.
pub const KEEPALIVE: Duration = Duration::from_secs(25);
/// The pair carrying traffic is checked this often while traffic flows:
/// what we send may die on a path the peer's datagrams still arrive on
/// (a relay that stopped forwarding one way), and nothing else shows it.
pub const BUSY_KEEPALIVE: Duration = Duration::from_secs(2);
/// An unanswered check counts as a miss after this long.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// A pair that answered is given up after this many misses in a row (after
/// one while we send into silence: see `tick_peer`).
pub const MISSES_TO_FAIL: u32 = 2;
/// Waits before re-sending a check that got no answer while a pair is new.
const RETRIES: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// A failed pair is tried again this often while traffic flows, so a path
/// that opens (a NAT rule changed) is found within seconds.
pub const RECHECK_BUSY: Duration = Duration::from_secs(8);
/// ... and this often while the peer is active but quiet.
pub const RECHECK_IDLE: Duration = Duration::from_secs(60);
/// Traffic within this long makes a peer busy.
pub const BUSY_FOR: Duration = Duration::from_secs(10);
/// A peer is checked for this long after its last traffic.
pub const ACTIVE_FOR: Duration = Duration::from_secs(180);
/// On an agent, a device whose candidates changed is checked this long
/// even without traffic: its checks need ours to get through our NAT.
pub const ANNOUNCED_ACTIVE_FOR: Duration = Duration::from_secs(30);
/// Sending this long without hearing from the peer re-checks its pairs.
/// (Under traffic, WireGuard hears from the peer every round trip: TCP's
/// acknowledgements, keepalives, replies.)
pub const SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// At most this often per peer.
const SUSPECT_EVERY: Duration = Duration::from_secs(5);
/// A timer this late means the machine slept (or the process was stopped).
pub const SLEPT_AFTER: Duration = Duration::from_secs(5);
/// Allocations kept at once: a second one makes losing a relay a failover,
/// not a new allocation.
pub const MAX_ALLOCATIONS: usize = 2;
/// Relays considered at most (the coordinator sends at most this many).
pub const MAX_RELAYS: usize = 8;
/// A peer's addresses kept at most: the directory's (capped at 16 by the
/// coordinator) and the peer-reflexive ones learned from checks.
pub const MAX_REMOTE_CANDIDATES: usize = 24;
const MAX_PEER_REFLEXIVE: usize = 8;
/// Our own candidates announced at most (the coordinator refuses more).
pub const MAX_LOCAL_CANDIDATES: usize = 16;
/// TURN requests are given up after about six seconds, so a dead relay
/// shows quickly and the other one takes over.
const RELAY_RETRANSMISSION: Retransmission = Retransmission {
    rto: Duration::from_millis(250),
    max_sends: 4,
};
const RELAY_RETRY_MIN: Duration = Duration::from_secs(2);
const RELAY_RETRY_MAX: Duration = Duration::from_secs(60);
/// Transmits and events kept at most if the driver stops draining them.
const QUEUE_CAP: usize = 4096;

/// Which side of the tunnel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The helper: many agents, checked once traffic wants them.
    Device,
    /// The agent: few devices, checked as soon as their candidates arrive.
    Agent,
}

/// A TURN server with the credentials to allocate on it.
#[derive(Debug, Clone)]
pub struct RelayServer {
    /// How the coordinator named it (`HOST:PORT`), for people.
    pub name: String,
    pub server: SocketAddr,
    pub credentials: Credentials,
}

/// How a pair leaves this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    Direct,
    Relay(RelayId),
}

/// How one path looks to a person: the `PATH` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathInfo {
    /// Whether a relay carries it (ours, or the peer's relayed address).
    pub relayed: bool,
    /// The TURN server carrying it, when relayed.
    pub relay: Option<SocketAddr>,
    /// Where the datagrams go: the peer's address (direct), or the peer's
    /// address as the relay sees it.
    pub remote: Option<SocketAddr>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEvent {
    /// Our candidates changed: announce them to the coordinator.
    Candidates(Vec<SocketAddr>),
    /// The peer's path changed: point the tunnel's endpoint for it at the
    /// path's remote (and pin it there) unless the path is [`Path::None`].
    PathChanged { peer: PeerKey, path: Path },
    /// Something suggests the network changed (a long sleep, silence on
    /// every path): read the interfaces and call
    /// [`Paths::set_host_candidates`].
    RecheckNetwork,
    /// This machine's addresses changed (it moved to another network):
    /// connections bound to the old address, such as the coordinator's,
    /// are dead and worth replacing now rather than at their timeout.
    NetworkChanged,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What a received datagram was.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// WireGuard for the tunnel, from `from` (the peer's address, even when
    /// a relay carried it).
    WireGuard {
        from: SocketAddr,
        payload: Cow<'a, [u8]>,
    },
    /// A check, a TURN message or relayed STUN: handled here.
    Handled,
    /// Not for us; why, for a trace line.
    Dropped(&'static str),
}

/// Where [`Paths::route`] says a WireGuard datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Send it unchanged to its destination.
    Direct,
    /// Send the wrapped datagram (in the caller's buffer) to this TURN
    /// server.
    Relay(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairState {
    Waiting,
    Succeeded,
    Failed,
}

#[derive(Debug)]
struct Pair {
    via: Via,
    remote: SocketAddr,
    state: PairState,
    /// Unanswered checks in a row.
    misses: u32,
    /// Checks sent while the pair was waiting.
    attempts: u32,
    next_check: Option<Instant>,
    in_flight: Option<([u8; 12], Instant)>,
}

#[derive(Debug)]
struct Peer {
    /// The check key, hex; derived on first use. `None` inside means the
    /// peer's key is unusable (a low-order point).
    password: Option<Option<String>>,
    /// The directory's addresses.
    listed: Vec<SocketAddr>,
    /// Addresses checks came from that the directory doesn't list.
    reflexive: Vec<SocketAddr>,
    pairs: Vec<Pair>,
    selector: PathSelector,
    path: Path,
    last_tx: Option<Instant>,
    /// Anything heard from the peer (WireGuard or a check).
    last_rx: Option<Instant>,
    /// WireGuard heard from the peer: traffic, unlike checks, keeps a peer
    /// busy.
    last_wireguard_rx: Option<Instant>,
    active_until: Option<Instant>,
    suspected: Option<Instant>,
    /// The peer has answered or sent a check: it runs a path layer. A
    /// peer that never has (a plain WireGuard peer) is not re-checked
    /// once its first round of checks has failed.
    speaks_checks: bool,
    /// The address WireGuard last came from straight to our socket, and
    /// when: a direct pair to it is alive whatever its checks say (lost
    /// checks on a lossy link must not make the path flap).
    last_direct_rx: Option<(SocketAddr, Instant)>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Peer {
            password: None,
            listed: Vec::new(),
            reflexive: Vec::new(),
            pairs: Vec::new(),
            selector: PathSelector::new(now),
            path: Path::None,
            last_tx: None,
            last_rx: None,
            last_wireguard_rx: None,
            active_until: None,
            suspected: None,
            speaks_checks: false,
            last_direct_rx: None,
        }
    }

    fn remotes(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listed.iter().chain(self.reflexive.iter()).copied()
    }

    fn is_active(&self, now: Instant) -> bool {
        self.active_until.is_some_and(|t| t > now)
    }

    /// When a peer whose traffic we were receiving counts as gone quiet
    /// (nothing for [`SUSPECT_AFTER`]), if that is still to be looked at:
    /// its datagrams may be dying on the way (its NAT forgot the mapping
    /// our path uses), and only checks from our side find the new way.
    /// Once per quiet spell.
    fn went_quiet_at(&self) -> Option<Instant> {
        let rx = self.last_wireguard_rx?;
        let looked = self.suspected.is_some_and(|s| s >= rx);
        (!looked).then_some(rx + SUSPECT_AFTER)
    }

    fn is_busy(&self, now: Instant) -> bool {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < BUSY_FOR);
        recent(self.last_tx) || recent(self.last_wireguard_rx)
    }
}

#[derive(Debug)]
struct RelaySlot {
    config: RelayServer,
    /// Removed from the coordinator's list: kept only so ids stay stable.
    retired: bool,
    alloc: Option<Allocation>,
    failures: u32,
    retry_at: Option<Instant>,
    /// The allocation was made with credentials the coordinator has since
    /// replaced: it is made again, one relay at a time, before the old
    /// username expires (the server would refuse its refreshes then, and
    /// keep our address bound to it until its lifetime ran out).
    rotate: bool,
}

#[derive(Debug, Clone, Copy)]
struct Txn {
    peer: PeerKey,
    via: Via,
    remote: SocketAddr,
}

/// See the module documentation.
pub struct Paths {
    role: Role,
    secret: StaticSecret,
    public: PeerKey,
    public_b64: String,
    relays: Vec<RelaySlot>,
    host: Vec<SocketAddr>,
    announced: Vec<SocketAddr>,
    peers: HashMap<PeerKey, Peer>,
    /// Every remote address of every peer → the peer, for routing and for
    /// telling whose traffic a datagram is.
    routes: HashMap<SocketAddr, PeerKey>,
    active: HashSet<PeerKey>,
    txns: HashMap<[u8; 12], Txn>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PathEvent>,
    /// The wake-up last handed out, to notice one that came far too late.
    deadline: Option<Instant>,
    last_recheck_network: Option<Instant>,
}

impl std::fmt::Debug for Paths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of every debug print.
        f.debug_struct("Paths")
            .field("role", &self.role)
            .field("peers", &self.peers.len())
            .field("relays", &self.relays.len())
            .field("announced", &self.announced)
            .finish()
    }
}

impl Paths {
    /// A path layer for the tunnel whose WireGuard private key is `secret`.
    pub fn new(role: Role, secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Paths {
            role,
            public_b64: base64::engine::general_purpose::STANDARD.encode(public),
            secret,
            public,
            relays: Vec::new(),
            host: Vec::new(),
            announced: Vec::new(),
            peers: HashMap::new(),
            routes: HashMap::new(),
            active: HashSet::new(),
            txns: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            deadline: None,
            last_recheck_network: None,
        }
    }

    /// The candidates announced last.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.announced
    }

    /// The path to `peer` as a person sees it.
    pub fn path_info(&self, peer: &PeerKey) -> Option<PathInfo> {
        let path = self.peers.get(peer)?.path;
        Some(match path {
            Path::None => PathInfo {
                relayed: false,
                relay: None,
                remote: None,
            },
            Path::Relayed { server, remote, .. } => PathInfo {
                relayed: true,
                relay: Some(server),
                remote: Some(remote),
            },
            Path::Direct { remote } => {
                // Straight to the peer's relayed address: relayed all the same.
                let relay = self.relay_at(remote.ip());
                PathInfo {
                    relayed: relay.is_some(),
                    relay,
                    remote: Some(remote),
                }
            }
        })
    }

    /// The current path to `peer`.
    pub fn path(&self, peer: &PeerKey) -> Path {
        self.peers.get(peer).map_or(Path::None, |p| p.path)
    }

    /// The coordinator's name for the TURN server at `server` (`HOST:PORT`).
    pub fn relay_name(&self, server: SocketAddr) -> Option<&str> {
        self.relays
            .iter()
            .find(|s| s.config.server == server)
            .map(|s| s.config.name.as_str())
    }

    fn relay_at(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.relays
            .iter()
            .find(|s| s.config.server.ip() == ip)
            .map(|s| s.config.server)
    }

    /// The socket's host addresses. A change means the machine moved:
    /// allocations are made again and every active peer is re-checked.
    pub fn set_host_candidates(&mut self, now: Instant, mut host: Vec<SocketAddr>) {
        host.retain(|a| turn::usable(a.ip()) && a.port() != 0);
        host.sort();
        host.dedup();
        if host == self.host {
            return;
        }
        let moved = !self.host.is_empty();
        self.host = host;
        if moved {
            tracing::info!("this machine's addresses changed; finding paths again");
            self.push_event(PathEvent::NetworkChanged);
            for id in 0..self.relays.len() {
                if let Some(mut alloc) = self.relays[id].alloc.take() {
                    alloc.close(now);
                    self.drain_allocation(&mut alloc);
                    self.relay_gone(now, id);
                }
                self.relays[id].retry_at = None;
                self.relays[id].failures = 0;
            }
            self.restart_all(now);
        }
        self.start_allocations(now);
        self.announce();
    }

    /// The coordinator's relays with fresh credentials. A server already in
    /// use keeps its allocation (it gets the new credentials); one no
    /// longer listed is closed.
    pub fn set_relays(&mut self, now: Instant, relays: Vec<RelayServer>) {
        let mut seen = HashSet::new();
        let mut fresh = Vec::new();
        for relay in relays.into_iter().take(MAX_RELAYS) {
            if !turn::usable(relay.server.ip()) || relay.server.port() == 0 {
                tracing::warn!(server = %relay.server, "a relay with an unusable address was ignored");
                continue;
            }
            seen.insert(relay.server);
            match self
                .relays
                .iter_mut()
                .find(|s| s.config.server == relay.server)
            {
                Some(slot) => {
                    slot.retired = false;
                    if let Some(alloc) = slot.alloc.as_mut() {
                        alloc.update_credentials(now, relay.credentials.clone());
                        if relay.credentials.username() != slot.config.credentials.username() {
                            slot.rotate = true;
                        }
                    }
                    slot.config = relay;
                }
                None => fresh.push(relay),
            }
        }
        for relay in fresh {
            // Ids stay stable, so retired slots stay; a coordinator that
            // keeps changing servers is capped.
            if self.relays.len() < 4 * MAX_RELAYS {
                self.relays.push(RelaySlot {
                    config: relay,
                    retired: false,
                    alloc: None,
                    failures: 0,
                    retry_at: None,
                    rotate: false,
                });
            }
        }
        for id in 0..self.relays.len() {
            if !seen.contains(&self.relays[id].config.server) && !self.relays[id].retired {
                self.relays[id].retired = true;
                if let Some(mut alloc) = self.relays[id].alloc.take() {
                    alloc.close(now);
                    self.drain_allocation(&mut alloc);
                    self.relay_gone(now, id);
                }
            }
        }
        self.start_allocations(now);
        self.rotate_one(now);
        self.announce();
    }

    /// Makes one allocation with stale credentials again, unless another is
    /// being made: the path fails over to the other relay meanwhile.
    fn rotate_one(&mut self, now: Instant) {
        let allocating = self
            .relays
            .iter()
            .any(|s| s.alloc.as_ref().is_some_and(|a| !a.is_allocated()));
        if allocating {
            return;
        }
        let Some(id) = self
            .relays
            .iter()
            .position(|s| s.rotate && s.alloc.as_ref().is_some_and(|a| a.is_allocated()))
        else {
            return;
        };
        let slot = &mut self.relays[id];
        slot.rotate = false;
        let Some(mut old) = slot.alloc.take() else {
            return;
        };
        old.close(now);
        self.drain_allocation(&mut old);
        self.relay_gone(now, id);
        let slot = &mut self.relays[id];
        slot.alloc = Some(Allocation::with_retransmission(
            now,
            slot.config.server,
            slot.config.credentials.clone(),
            RELAY_RETRANSMISSION,
        ));
        self.drain_all_allocations(now);
        self.announce();
    }

    /// A peer and the addresses the directory lists for it.
    pub fn upsert_peer(&mut self, now: Instant, key: PeerKey, endpoints: &[SocketAddr]) {
        if key == self.public {
            return;
        }
        let mut listed: Vec<SocketAddr> = endpoints
            .iter()
            .copied()
            .filter(|a| turn::usable(a.ip()) && a.port() != 0)
            .collect();
        listed.dedup();
        listed.truncate(MAX_REMOTE_CANDIDATES - MAX_PEER_REFLEXIVE);
        let peer = self.peers.entry(key).or_insert_with(|| Peer::new(now));
        if peer.listed == listed {
            return;
        }
        for old in std::mem::take(&mut peer.listed) {
            if self.routes.get(&old) == Some(&key) {
                self.routes.remove(&old);
            }
        }
        peer.reflexive.retain(|a| !listed.contains(a));
        peer.listed = listed;
        for addr in peer.remotes().collect::<Vec<_>>() {
            self.routes.insert(addr, key);
        }
        self.rebuild_pairs(now, key);
        if self.role == Role::Agent {
            self.activate(now, key, ANNOUNCED_ACTIVE_FOR);
        }
    }

    /// A peer left the directory.
    pub fn remove_peer(&mut self, key: &PeerKey) {
        if let Some(peer) = self.peers.remove(key) {
            for addr in peer.remotes() {
                if self.routes.get(&addr) == Some(key) {
                    self.routes.remove(&addr);
                }
            }
        }
        self.active.remove(key);
        self.txns.retain(|_, t| t.peer != *key);
    }

    /// Where a WireGuard datagram the tunnel addressed to `dst` goes. For
    /// [`Route::Relay`] the datagram to send is in `buf`. Also how the
    /// layer learns which peers have traffic.
    pub fn route(
        &mut self,
        now: Instant,
        dst: SocketAddr,
        payload: &[u8],
        buf: &mut Vec<u8>,
    ) -> Route {
        let Some(key) = self.routes.get(&dst).copied() else {
            return Route::Direct;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return Route::Direct;
        };
        if !peer.is_busy(now) {
            // Traffic starts: the pair carrying it is watched closely.
            let carrying = in_use(peer.path);
            for pair in &mut peer.pairs {
                if Some((pair.via, pair.remote)) == carrying && pair.state == PairState::Succeeded {
                    let soon = now + BUSY_KEEPALIVE;
                    if pair.in_flight.is_none() && pair.next_check.is_none_or(|t| t > soon) {
                        pair.next_check = Some(soon);
                    }
                }
            }
        }
        peer.last_tx = Some(now);
        let silent = peer
            .last_rx
            .is_none_or(|rx| now.saturating_duration_since(rx) > SUSPECT_AFTER);
        let was_active = peer.is_active(now);
        let extend = peer
            .active_until
            .is_none_or(|t| t < now + ACTIVE_FOR - Duration::from_secs(1));
        if extend {
            peer.active_until = Some(now + ACTIVE_FOR);
        }
        let suspect = silent
            && was_active
            && peer
                .suspected
                .is_none_or(|t| now.saturating_duration_since(t) >= SUSPECT_EVERY);
        let path = peer.path;
        if !was_active {
            self.activate(now, key, ACTIVE_FOR);
        } else if suspect {
            self.suspect(now, key);
        }
        match path {
            Path::Relayed {
                relay,
                server,
                remote,
            } if remote == dst => {
                let Some(alloc) = self.relays.get(relay).and_then(|s| s.alloc.as_ref()) else {
                    return Route::Direct;
                };
                match alloc.encapsulate_into(dst, payload, buf) {
                    Ok(()) => Route::Relay(server),
                    Err(e) => {
                        tracing::trace!(error = %e, "couldn't wrap a datagram for the relay");
                        Route::Direct
                    }
                }
            }
            _ => Route::Direct,
        }
    }

    /// One datagram from the socket.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Incoming<'a> {
        // WireGuard from a peer is by far the commonest: its first four
        // bytes tell (a type of 1 to 4, then three zero bytes; no STUN
        // message starts so: a Binding success is 0x01 0x01).
        let wireguard = matches!(datagram, [1..=4, 0, 0, 0, ..]);
        if wireguard && !self.is_relay_server(from) {
            self.heard(now, from, true);
            return Incoming::WireGuard {
                from,
                payload: Cow::Borrowed(datagram),
            };
        }
        if let Some(id) = self.relay_slot(from) {
            return self.relay_datagram(now, id, from, datagram);
        }
        match classify(datagram) {
            Ok(Datagram::Stun(stun)) => {
                self.on_stun(now, Via::Direct, from, stun);
                Incoming::Handled
            }
            // A relay's address between allocations is still no peer's: what
            // comes from it is never WireGuard straight from a peer (found by
            // the stun_turn fuzz target).
            Ok(Datagram::WireGuard(_)) if self.is_relay_server(from) => {
                Incoming::Dropped("WireGuard from a relay with no allocation")
            }
            Ok(Datagram::WireGuard(_)) => Incoming::WireGuard {
                from,
                payload: Cow::Borrowed(datagram),
            },
            Ok(Datagram::ChannelData { .. }) => Incoming::Dropped("ChannelData from a non-relay"),
            Err(_) => Incoming::Dropped("neither WireGuard nor STUN"),
        }
    }

    fn is_relay_server(&self, addr: SocketAddr) -> bool {
        self.relays.iter().any(|s| s.config.server == addr)
    }

    fn relay_slot(&self, addr: SocketAddr) -> Option<RelayId> {
        self.relays
            .iter()
            .position(|s| s.config.server == addr && s.alloc.is_some())
    }

    /// WireGuard came from `from` (straight to our socket if `direct`).
    fn heard(&mut self, now: Instant, from: SocketAddr, direct: bool) {
        if let Some(key) = self.routes.get(&from) {
            if let Some(peer) = self.peers.get_mut(key) {
                peer.last_rx = Some(now);
                peer.last_wireguard_rx = Some(now);
                if direct {
                    peer.last_direct_rx = Some((from, now));
                }
            }
        }
    }

    fn relay_datagram<'a>(
        &mut self,
        now: Instant,
        id: RelayId,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Incoming<'a> {
        let Some(mut alloc) = self.relays[id].alloc.take() else {
            return Incoming::Dropped("no allocation");
        };
        let input = alloc.handle_input(now, from, datagram);
        let mut events = Vec::new();
        self.drain_allocation_into(&mut alloc, &mut events);
        self.relays[id].alloc = Some(alloc);
        self.apply_relay_events(now, id, events);
        let relayed = match input {
            Ok(Some(relayed)) => relayed,
            Ok(None) => return Incoming::Handled,
            Err(e) => {
                tracing::trace!(error = %e, "a datagram from the relay was refused");
                return Incoming::Dropped("refused by the TURN client");
            }
        };
        let is_stun = match classify(&relayed.payload) {
            Ok(Datagram::Stun(_)) => true,
            Ok(Datagram::WireGuard(_)) => false,
            _ => return Incoming::Dropped("relayed data is neither WireGuard nor STUN"),
        };
        if is_stun {
            self.on_stun(now, Via::Relay(id), relayed.peer, &relayed.payload);
            return Incoming::Handled;
        }
        self.heard(now, relayed.peer, false);
        Incoming::WireGuard {
            from: relayed.peer,
            payload: relayed.payload,
        }
    }

    /// Everything due at `now`: checks, their timeouts, the relays' timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.deadline.take() {
            if now > deadline + SLEPT_AFTER {
                tracing::info!(
                    late_ms = now.saturating_duration_since(deadline).as_millis() as u64,
                    "timers ran late (the machine slept?); checking every path again"
                );
                self.recheck_network(now);
                // Time asleep is not time without traffic.
                let slept = now.saturating_duration_since(deadline);
                for key in &self.active {
                    if let Some(peer) = self.peers.get_mut(key) {
                        peer.active_until = peer.active_until.map(|t| t + slept);
                    }
                }
                self.restart_all(now);
                for slot in &mut self.relays {
                    if let Some(alloc) = slot.alloc.as_mut() {
                        alloc.refresh(now);
                    }
                }
            }
        }
        for id in 0..self.relays.len() {
            let due = self.relays[id]
                .alloc
                .as_ref()
                .and_then(|a| a.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                if let Some(mut alloc) = self.relays[id].alloc.take() {
                    alloc.handle_timeout(now);
                    let mut events = Vec::new();
                    self.drain_allocation_into(&mut alloc, &mut events);
                    self.relays[id].alloc = Some(alloc);
                    self.apply_relay_events(now, id, events);
                }
            }
        }
        self.start_allocations(now);
        let active: Vec<PeerKey> = self.active.iter().copied().collect();
        for key in active {
            self.tick_peer(now, key);
        }
    }

    /// When [`Self::handle_timeout`] has work next; `None` when idle.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        let live = self.relays.iter().filter(|s| s.alloc.is_some()).count();
        for slot in &self.relays {
            if let Some(t) = slot.alloc.as_ref().and_then(|a| a.poll_timeout()) {
                at(t);
            }
            if slot.alloc.is_none() && !slot.retired && live < MAX_ALLOCATIONS {
                if let Some(t) = slot.retry_at {
                    at(t);
                }
            }
        }
        for key in &self.active {
            let Some(peer) = self.peers.get(key) else {
                continue;
            };
            if let Some(t) = peer.active_until {
                at(t);
            }
            if let Some(t) = peer.went_quiet_at() {
                at(t);
            }
            if let Some(t) = peer.selector.poll_timeout() {
                at(t);
            }
            for pair in &peer.pairs {
                if let Some((_, sent)) = pair.in_flight {
                    at(sent + CHECK_TIMEOUT);
                } else if let Some(t) = pair.next_check {
                    at(t);
                }
            }
        }
        self.deadline = next;
        next
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }

    fn push_transmit(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        if self.transmits.len() >= QUEUE_CAP {
            self.transmits.pop_front();
        }
        self.transmits.push_back(Transmit { dst, payload });
    }

    fn push_event(&mut self, event: PathEvent) {
        if self.events.len() >= QUEUE_CAP {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn recheck_network(&mut self, now: Instant) {
        let due = self
            .last_recheck_network
            .is_none_or(|t| now.saturating_duration_since(t) >= SUSPECT_EVERY);
        if due {
            self.last_recheck_network = Some(now);
            self.push_event(PathEvent::RecheckNetwork);
        }
    }

    // ---- peers and pairs -------------------------------------------------

    fn vias(&self) -> Vec<(Via, bool)> {
        let mut vias = vec![(Via::Direct, true)];
        for (id, slot) in self.relays.iter().enumerate() {
            if let Some(relayed) = slot.alloc.as_ref().and_then(|a| a.relayed_address()) {
                vias.push((Via::Relay(id), relayed.is_ipv4()));
            }
        }
        vias
    }

    /// Makes the pair list match the peer's remotes × our ways out.
    fn rebuild_pairs(&mut self, now: Instant, key: PeerKey) {
        let vias = self.vias();
        let active = self.active.contains(&key);
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let remotes: Vec<SocketAddr> = peer.remotes().collect();
        peer.pairs.retain(|p| {
            remotes.contains(&p.remote)
                && match p.via {
                    Via::Direct => true,
                    Via::Relay(id) => vias.iter().any(|(v, _)| *v == Via::Relay(id)),
                }
        });
        for remote in &remotes {
            for (via, v4) in &vias {
                if *via != Via::Direct && *v4 != remote.is_ipv4() {
                    continue;
                }
                if peer
                    .pairs
                    .iter()
                    .any(|p| p.via == *via && p.remote == *remote)
                {
                    continue;
                }
                peer.pairs.push(Pair {
                    via: *via,
                    remote: *remote,
                    state: PairState::Waiting,
                    misses: 0,
                    attempts: 0,
                    next_check: active.then_some(now),
                    in_flight: None,
                });
            }
        }
        if active {
            self.permit(now, key);
        }
        self.reselect(now, key);
    }

    /// Lets the peer's addresses through our allocations.
    fn permit(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let ips: Vec<IpAddr> = peer.remotes().map(|a| a.ip()).collect();
        for slot in &mut self.relays {
            if let Some(alloc) = slot.alloc.as_mut().filter(|a| a.is_allocated()) {
                let Some(relayed) = alloc.relayed_address() else {
                    continue;
                };
                for ip in &ips {
                    if ip.is_ipv4() == relayed.is_ipv4() {
                        let _ = alloc.create_permission(now, *ip);
                    }
                }
            }
        }
        self.drain_all_allocations(now);
    }

    fn activate(&mut self, now: Instant, key: PeerKey, for_: Duration) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let until = now + for_;
        if peer.active_until.is_none_or(|t| t < until) {
            peer.active_until = Some(until);
        }
        if self.active.insert(key) {
            peer.selector.restart_checks(now);
            for pair in &mut peer.pairs {
                pair.next_check = Some(now);
                pair.attempts = 0;
            }
            self.permit(now, key);
        }
    }

    fn suspect(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.suspected = Some(now);
        for pair in &mut peer.pairs {
            if pair.in_flight.is_none() {
                pair.next_check = Some(now);
            }
        }
        if let Path::Relayed { relay, .. } = peer.path {
            if let Some(alloc) = self.relays.get_mut(relay).and_then(|s| s.alloc.as_mut()) {
                alloc.refresh(now);
            }
        }
        // A re-check that loses a path asks for the network (tick_peer).
    }

    /// Every active peer's pairs are checked again from scratch; the paths
    /// in use stay until the checks say otherwise.
    fn restart_all(&mut self, now: Instant) {
        let keys: Vec<PeerKey> = self.active.iter().copied().collect();
        for key in keys {
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.selector.restart_checks(now);
                for pair in &mut peer.pairs {
                    pair.next_check = Some(now);
                    pair.attempts = 0;
                    if let Some((id, _)) = pair.in_flight.take() {
                        self.txns.remove(&id);
                    }
                }
            }
            self.rebuild_pairs(now, key);
        }
    }

    fn tick_peer(&mut self, now: Instant, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            self.active.remove(&key);
            return;
        };
        if !peer.is_active(now) {
            self.active.remove(&key);
            for pair in &mut peer.pairs {
                if let Some((id, _)) = pair.in_flight.take() {
                    self.txns.remove(&id);
                }
                pair.next_check = None;
            }
            return;
        }
        let busy = peer.is_busy(now);
        if peer.went_quiet_at().is_some_and(|t| t <= now) {
            if busy {
                // Every pair is checked now (suspect), in the round below.
                self.suspect(now, key);
            } else {
                // Quiet for long already: nothing to look at any more.
                peer.suspected = Some(now);
            }
        }
        self.tick_checks(now, key, busy);
    }

    fn tick_checks(&mut self, now: Instant, key: PeerKey, busy: bool) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        // Sending into silence and a check lost: that pair is dead, fail
        // over now (TCP's retransmission timer doubles while we wait).
        let silent = peer
            .last_tx
            .is_some_and(|t| now.saturating_duration_since(t) < SUSPECT_AFTER)
            && peer
                .last_rx
                .is_none_or(|t| now.saturating_duration_since(t) >= SUSPECT_AFTER);
        let misses_to_fail = if silent { 1 } else { MISSES_TO_FAIL };
        let later = |busy| peer.speaks_checks.then(|| now + recheck(busy));
        let mut changed = false;
        let mut to_send = Vec::new();
        for (index, pair) in peer.pairs.iter_mut().enumerate() {
            if let Some((id, sent)) = pair.in_flight {
                if now < sent + CHECK_TIMEOUT {
                    continue;
                }
                self.txns.remove(&id);
                pair.in_flight = None;
                let carrying = pair.via == Via::Direct
                    && peer.last_direct_rx.is_some_and(|(from, at)| {
                        from == pair.remote && now.saturating_duration_since(at) < 2 * CHECK_TIMEOUT
                    });
                if !carrying {
                    pair.misses += 1;
                }
                match pair.state {
                    PairState::Succeeded if pair.misses >= misses_to_fail => {
                        pair.state = PairState::Failed;
                        changed = true;
                        pair.next_check = later(busy);
                    }
                    PairState::Succeeded => pair.next_check = Some(now),
                    PairState::Waiting => {
                        match RETRIES.get(pair.attempts.saturating_sub(1) as usize) {
                            Some(wait) => pair.next_check = Some(sent + *wait),
                            None => {
                                pair.state = PairState::Failed;
                                pair.next_check = later(busy);
                            }
                        }
                    }
                    PairState::Failed => pair.next_check = later(busy),
                }
            }
            if pair.in_flight.is_none() && pair.next_check.is_some_and(|t| t <= now) {
                to_send.push(index);
            }
        }
        peer.selector.handle_timeout(now);
        for index in to_send {
            self.send_check(now, key, index);
        }
        if changed {
            // A path that worked went silent: maybe the network changed.
            self.recheck_network(now);
            self.reselect(now, key);
        } else {
            self.drain_selector(key);
        }
    }

    fn password(&mut self, key: &PeerKey) -> Option<String> {
        let peer = self.peers.get_mut(key)?;
        if peer.password.is_none() {
            let shared = self.secret.diffie_hellman(&PublicKey::from(*key));
            peer.password = Some(shared.was_contributory().then(|| {
                let mut h = Sha256::new();
                h.update(b"warren path check v1");
                h.update(shared.as_bytes());
                hex::encode(&h.finalize()[..16])
            }));
        }
        peer.password.clone().flatten()
    }

    fn send_check(&mut self, now: Instant, key: PeerKey, index: usize) {
        let Some(password) = self.password(&key) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(pair) = peer.pairs.get_mut(index) else {
            return;
        };
        let id: [u8; 12] = rand::random();
        let (via, remote) = (pair.via, pair.remote);
        pair.in_flight = Some((id, now));
        pair.next_check = None;
        if pair.state == PairState::Waiting {
            pair.attempts += 1;
        }
        let Some(bytes) = encode_request(id, &self.public_b64, &password) else {
            return;
        };
        self.txns.insert(
            id,
            Txn {
                peer: key,
                via,
                remote,
            },
        );
        self.send_via(now, via, remote, bytes);
    }

    fn send_via(&mut self, now: Instant, via: Via, remote: SocketAddr, bytes: Vec<u8>) {
        match via {
            Via::Direct => self.push_transmit(remote, bytes),
            Via::Relay(id) => {
                let Some(alloc) = self.relays.get_mut(id).and_then(|s| s.alloc.as_mut()) else {
                    return;
                };
                if !alloc.has_permission(remote.ip()) {
                    let _ = alloc.create_permission(now, remote.ip());
                }
                match alloc.encapsulate(remote, &bytes) {
                    Ok(t) => {
                        let t = Transmit {
                            dst: t.dst,
                            payload: t.payload,
                        };
                        self.drain_all_allocations(now);
                        self.push_transmit(t.dst, t.payload);
                    }
                    Err(e) => {
                        tracing::trace!(error = %e, "a check couldn't go through the relay");
                        self.drain_all_allocations(now);
                    }
                }
            }
        }
    }

    fn on_stun(&mut self, now: Instant, via: Via, from: SocketAddr, bytes: &[u8]) {
        let Ok(message) = msg::decode(bytes) else {
            return;
        };
        if message.method() != BINDING {
            return;
        }
        match message.class() {
            MessageClass::Request => self.on_check(now, via, from, &message, bytes),
            MessageClass::SuccessResponse => self.on_answer(now, via, from, &message),
            _ => {}
        }
    }

    fn on_check(&mut self, now: Instant, via: Via, from: SocketAddr, message: &Msg, _raw: &[u8]) {
        let Some(username) = message.get_attribute::<Username>() else {
            return;
        };
        let Some(key) = base64::engine::general_purpose::STANDARD
            .decode(username.name())
            .ok()
            .and_then(|k| <PeerKey>::try_from(k).ok())
        else {
            return;
        };
        if !self.peers.contains_key(&key) {
            return;
        }
        let Some(password) = self.password(&key) else {
            return;
        };
        let valid = message
            .get_attribute::<MessageIntegrity>()
            .is_some_and(|mi| mi.check_short_term_credential(&password).is_ok());
        if !valid {
            tracing::trace!(%from, "a check with a wrong signature was dropped");
            return;
        }
        let id = *message.transaction_id().as_bytes();
        if let Some(bytes) = encode_response(id, from, &password) {
            self.send_via(now, via, from, bytes);
        }
        // A new address of the peer: check it too (both ways out).
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.last_rx = Some(now);
        peer.speaks_checks = true;
        let known = peer.remotes().any(|a| a == from);
        if !known && turn::usable(from.ip()) {
            if peer.reflexive.len() >= MAX_PEER_REFLEXIVE {
                let old = peer.reflexive.remove(0);
                if self.routes.get(&old) == Some(&key) {
                    self.routes.remove(&old);
                }
            }
            if let Some(peer) = self.peers.get_mut(&key) {
                peer.reflexive.push(from);
            }
            self.routes.insert(from, key);
            self.rebuild_pairs(now, key);
            // The peer moved (or has a new way out): the path in use may be
            // dead, so every pair is checked now rather than at its keepalive.
            if let Some(peer) = self.peers.get_mut(&key) {
                for pair in &mut peer.pairs {
                    if pair.in_flight.is_none() {
                        pair.next_check = Some(now);
                    }
                }
            }
        }
        if !self.peers.get(&key).is_some_and(|p| p.is_active(now)) {
            self.activate(now, key, ANNOUNCED_ACTIVE_FOR);
        }
        // Triggered check: answer the peer's check with ours on the same
        // pair, so both NATs open now rather than at the next retry.
        if let Some(peer) = self.peers.get_mut(&key) {
            for pair in &mut peer.pairs {
                // A pair that works needs no answer: triggering one would
                // make the two sides check each other forever.
                if pair.via == via
                    && pair.remote == from
                    && pair.in_flight.is_none()
                    && pair.state != PairState::Succeeded
                {
                    pair.next_check = Some(now);
                }
            }
        }
    }

    fn on_answer(&mut self, now: Instant, via: Via, from: SocketAddr, message: &Msg) {
        let id = *message.transaction_id().as_bytes();
        let Some(txn) = self.txns.get(&id).copied() else {
            return;
        };
        if txn.via != via || txn.remote != from {
            return;
        }
        let Some(password) = self.password(&txn.peer) else {
            return;
        };
        let valid = message
            .get_attribute::<MessageIntegrity>()
            .is_some_and(|mi| mi.check_short_term_credential(&password).is_ok());
        if !valid {
            return;
        }
        self.txns.remove(&id);
        let Some(peer) = self.peers.get_mut(&txn.peer) else {
            return;
        };
        peer.last_rx = Some(now);
        peer.speaks_checks = true;
        let mut changed = false;
        let mut recovered = false;
        let in_use = in_use(peer.path);
        let busy = peer.is_busy(now);
        for pair in &mut peer.pairs {
            if pair.via == via && pair.remote == from {
                if pair.in_flight.is_some_and(|(i, _)| i == id) {
                    pair.in_flight = None;
                }
                changed |= pair.state != PairState::Succeeded;
                let carrying = in_use == Some((via, from));
                recovered |= pair.misses > 0 && carrying;
                pair.state = PairState::Succeeded;
                pair.misses = 0;
                pair.next_check = Some(now + keepalive(busy && carrying));
            }
        }
        if recovered && !changed {
            // The path in use answers again after a silence (a sleep, a NAT
            // that forgot us): the tunnel's handshake, lost meanwhile, may go
            // again now instead of at its next retry.
            let path = peer.path;
            self.push_event(PathEvent::PathChanged {
                peer: txn.peer,
                path,
            });
        }
        if let Via::Relay(relay) = via {
            // Data to this peer goes as ChannelData from now on.
            if let Some(alloc) = self.relays.get_mut(relay).and_then(|s| s.alloc.as_mut()) {
                let _ = alloc.bind_channel(now, from);
            }
            self.drain_all_allocations(now);
        }
        if changed {
            self.reselect(now, txn.peer);
        }
    }

    /// Tells the selector what the pairs say, and reports a new path.
    fn reselect(&mut self, now: Instant, key: PeerKey) {
        let relay_ips: Vec<IpAddr> = self.relays.iter().map(|s| s.config.server.ip()).collect();
        let servers: Vec<SocketAddr> = self.relays.iter().map(|s| s.config.server).collect();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let succeeded = |via: Via| {
            peer.pairs
                .iter()
                .filter(move |p| p.via == via && p.state == PairState::Succeeded)
                .map(|p| p.remote)
        };
        // A direct pair to the peer's own address beats everything. Sending
        // straight to the peer's relayed address is a relay hop too, and a
        // worse one than through our own relay: datagrams then enter the
        // TURN server on its listening socket (sized for it) rather than
        // on the allocation's relay socket, where a bulk sender's bursts
        // overflow the receive buffer (measured: a quarter of a download's
        // datagrams lost). So it is used only when no relay of ours works.
        let in_use = match peer.path {
            Path::Direct { remote } => Some(remote),
            _ => None,
        };
        let direct: Vec<SocketAddr> = succeeded(Via::Direct).collect();
        let own_relay_ready = servers
            .iter()
            .enumerate()
            .any(|(id, _)| succeeded(Via::Relay(id)).next().is_some());
        let best = direct
            .iter()
            .copied()
            .filter(|r| !relay_ips.contains(&r.ip()))
            .min_by_key(|r| Some(*r) != in_use)
            .or_else(|| {
                (!own_relay_ready)
                    .then(|| direct.iter().copied().min_by_key(|r| Some(*r) != in_use))
                    .flatten()
            });
        match best {
            Some(remote) => peer.selector.direct_ready(now, remote),
            None => peer.selector.direct_lost(now),
        }
        for (id, server) in servers.iter().enumerate() {
            let in_use = match peer.path {
                Path::Relayed { relay, remote, .. } if relay == id => Some(remote),
                _ => None,
            };
            let remotes: Vec<SocketAddr> = succeeded(Via::Relay(id)).collect();
            match remotes.iter().copied().min_by_key(|r| Some(*r) != in_use) {
                Some(remote) => peer.selector.relay_ready(now, id, *server, remote),
                None => peer.selector.relay_lost(now, id),
            }
        }
        self.drain_selector(key);
    }

    fn drain_selector(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let mut last = None;
        while let Some(path) = peer.selector.poll_change() {
            last = Some(path);
        }
        if let Some(path) = last {
            if path != peer.path {
                peer.path = path;
                tracing::info!(peer = %short(&key), ?path, "path changed");
                self.push_event(PathEvent::PathChanged { peer: key, path });
            }
        }
    }

    // ---- relays ----------------------------------------------------------

    fn start_allocations(&mut self, now: Instant) {
        if self.host.is_empty() {
            // No address yet: an allocation would be made for nothing.
            return;
        }
        let live = self.relays.iter().filter(|s| s.alloc.is_some()).count();
        let mut missing = MAX_ALLOCATIONS.saturating_sub(live);
        for slot in &mut self.relays {
            if missing == 0 {
                break;
            }
            if slot.retired || slot.alloc.is_some() || slot.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            slot.alloc = Some(Allocation::with_retransmission(
                now,
                slot.config.server,
                slot.config.credentials.clone(),
                RELAY_RETRANSMISSION,
            ));
            slot.retry_at = None;
            missing -= 1;
        }
        self.drain_all_allocations(now);
    }

    fn drain_allocation(&mut self, alloc: &mut Allocation) {
        while let Some(t) = alloc.poll_transmit() {
            self.push_transmit(t.dst, t.payload);
        }
        while alloc.poll_event().is_some() {}
    }

    fn drain_allocation_into(&mut self, alloc: &mut Allocation, events: &mut Vec<TurnEvent>) {
        while let Some(t) = alloc.poll_transmit() {
            self.push_transmit(t.dst, t.payload);
        }
        while let Some(e) = alloc.poll_event() {
            events.push(e);
        }
    }

    fn drain_all_allocations(&mut self, now: Instant) {
        for id in 0..self.relays.len() {
            let Some(mut alloc) = self.relays[id].alloc.take() else {
                continue;
            };
            let mut events = Vec::new();
            self.drain_allocation_into(&mut alloc, &mut events);
            self.relays[id].alloc = Some(alloc);
            if !events.is_empty() {
                self.apply_relay_events(now, id, events);
            }
        }
    }

    fn apply_relay_events(&mut self, now: Instant, id: RelayId, events: Vec<TurnEvent>) {
        let server = self.relays[id].config.server;
        for event in events {
            match event {
                TurnEvent::Allocated {
                    relayed, mapped, ..
                } => {
                    tracing::info!(%server, %relayed, %mapped, "relay allocated");
                    self.relays[id].failures = 0;
                    self.announce();
                    self.rotate_one(now);
                    let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                    for key in keys {
                        self.rebuild_pairs(now, key);
                    }
                }
                TurnEvent::PermissionCreated { peer } => {
                    // Checks through this relay to that address may go now.
                    for key in self.active.iter().copied().collect::<Vec<_>>() {
                        if let Some(p) = self.peers.get_mut(&key) {
                            for pair in &mut p.pairs {
                                if pair.via == Via::Relay(id)
                                    && pair.remote.ip() == peer
                                    && pair.state == PairState::Waiting
                                    && pair.in_flight.is_none()
                                {
                                    pair.next_check = Some(now);
                                }
                            }
                        }
                    }
                }
                TurnEvent::AllocationFailed(why) | TurnEvent::AllocationLost(why) => {
                    tracing::warn!(%server, reason = %why, "relay lost; using the others");
                    let slot = &mut self.relays[id];
                    slot.alloc = None;
                    slot.failures = slot.failures.saturating_add(1);
                    let wait = RELAY_RETRY_MIN
                        .saturating_mul(1 << slot.failures.min(5))
                        .min(RELAY_RETRY_MAX);
                    slot.retry_at = Some(now + wait);
                    self.relay_gone(now, id);
                    self.start_allocations(now);
                    self.announce();
                }
                TurnEvent::CredentialsNeeded => {
                    tracing::debug!(%server, "the relay wants fresh credentials; they come from the coordinator")
                }
                TurnEvent::PermissionFailed { .. }
                | TurnEvent::ChannelBindFailed { .. }
                | TurnEvent::ChannelBound { .. }
                | TurnEvent::Refreshed { .. }
                | TurnEvent::Closed => {}
            }
        }
    }

    /// Relay `id`'s allocation is gone: its pairs go, paths fail over.
    fn relay_gone(&mut self, now: Instant, id: RelayId) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            if let Some(peer) = self.peers.get_mut(&key) {
                let before = peer.pairs.len();
                peer.pairs.retain(|p| p.via != Via::Relay(id));
                if peer.pairs.len() != before
                    || matches!(peer.path, Path::Relayed { relay, .. } if relay == id)
                {
                    self.reselect(now, key);
                }
            }
        }
    }

    fn announce(&mut self) {
        let mut out = Vec::new();
        for slot in &self.relays {
            if let Some(alloc) = slot.alloc.as_ref() {
                if let Some(mapped) = alloc.mapped_address() {
                    out.push(mapped);
                }
                if let Some(relayed) = alloc.relayed_address() {
                    out.push(relayed);
                }
            }
        }
        out.extend(self.host.iter().copied());
        let mut seen = HashSet::new();
        out.retain(|a| seen.insert(*a));
        out.truncate(MAX_LOCAL_CANDIDATES);
        if out != self.announced {
            self.announced = out.clone();
            self.push_event(PathEvent::Candidates(out));
        }
    }
}

/// The pair a path uses.
fn in_use(path: Path) -> Option<(Via, SocketAddr)> {
    match path {
        Path::Direct { remote } => Some((Via::Direct, remote)),
        Path::Relayed { relay, remote, .. } => Some((Via::Relay(relay), remote)),
        Path::None => None,
    }
}

/// When a working pair is checked next: often while it carries traffic
/// (a path that dies under us only in our direction shows no other way),
/// at the NAT keepalive otherwise.
fn keepalive(carrying_traffic: bool) -> Duration {
    if carrying_traffic {
        BUSY_KEEPALIVE
    } else {
        KEEPALIVE
    }
}

fn recheck(busy: bool) -> Duration {
    if busy {
        RECHECK_BUSY
    } else {
        RECHECK_IDLE
    }
}

fn short(key: &PeerKey) -> String {
    let mut s = base64::engine::general_purpose::STANDARD.encode(key);
    s.truncate(8);
    s
}

fn encode_request(id: [u8; 12], sender: &str, password: &str) -> Option<Vec<u8>> {
    let mut m = Msg::new(MessageClass::Request, BINDING, TransactionId::new(id));
    m.add_attribute(Username::new(sender.to_owned()).ok()?);
    let mi = MessageIntegrity::new_short_term_credential(&m, password).ok()?;
    m.add_attribute(mi);
    msg::sign_and_encode(m, None).ok()
}

fn encode_response(id: [u8; 12], mapped: SocketAddr, password: &str) -> Option<Vec<u8>> {
    let mut m = Msg::new(
        MessageClass::SuccessResponse,
        BINDING,
        TransactionId::new(id),
    );
    m.add_attribute(XorMappedAddress::new(mapped));
    let mi = MessageIntegrity::new_short_term_credential(&m, password).ok()?;
    m.add_attribute(mi);
    msg::sign_and_encode(m, None).ok()
}
