//! [`Tunnel`]: the sans-IO peer table. Routes packets from the TUN to peers by
//! destination address, routes datagrams from the network to peers by receiver
//! index (or, for handshake initiations, by the initiator's static key), and
//! schedules boringtun's timers from real deadlines.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::fasthash::FastMap;
use crate::peer::{Outputs, Peer, MSG_COOKIE, MSG_DATA, MSG_RESPONSE};
use crate::timers::Mirror;
use crate::types::{
    key_id, ConfigError, Counters, DropReason, OwnedTransmit, PeerConfig, PeerKey, PeerStats,
    Transmit, TunnelEvent,
};

/// Packets kept per peer while its handshake is pending; when full, the
/// oldest is dropped and counted in [`Counters::dropped_queue_full`].
pub const MAX_QUEUED_PER_PEER: usize = 128;

/// Most peers one table holds. boringtun's receiver index has 24 bits for the
/// peer; staying far below keeps index allocation a short search.
pub const MAX_PEERS: usize = 1 << 20;

/// Handshake messages per second the table verifies before it answers with
/// cookies (WireGuard's load defence). Each initiation passes the shared limiter
/// twice (once to gate the static-key lookup, once inside boringtun), so this
/// admits about 100 handshakes per second, like boringtun's own device.
pub const HANDSHAKE_RATE_LIMIT: u64 = 200;

/// WireGuard adds this many bytes to a packet (header and tag).
pub const DATA_OVERHEAD: usize = 32;

/// The largest WireGuard message (a handshake initiation); output buffers must
/// hold at least this much.
pub const MIN_BUFFER: usize = 148;

/// The largest IP packet.
const MAX_PACKET: usize = 65535;

/// The table. One per session: it owns the private key and every peer. See
/// the crate documentation for how a driver uses it.
pub struct Tunnel {
    private_key: StaticSecret,
    public_key: PublicKey,
    rate_limiter: Arc<RateLimiter>,
    peers: Vec<Option<Peer>>,
    free_slots: Vec<usize>,
    by_key: HashMap<PeerKey, usize>,
    by_index: FastMap<u32, usize>,
    by_addr: FastMap<IpAddr, usize>,
    /// This side's own tunnel addresses: the only destinations a decrypted
    /// packet may have. Empty until [`Tunnel::set_local_addresses`], and
    /// then every decrypted packet is dropped (fail closed). A handful of
    /// addresses, so a linear search beats hashing.
    local: Vec<IpAddr>,
    next_index: u32,
    next_generation: u64,
    /// Per-peer deadlines with lazy deletion: an entry counts only if the
    /// peer in `slot` still has `generation` and is scheduled at that time.
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    out: Outputs,
    /// Reused for everything the table encrypts on its own (handshakes,
    /// keepalives, flushed packets), so only the copy into an
    /// [`OwnedTransmit`] allocates.
    scratch: Vec<u8>,
}

impl fmt::Debug for Tunnel {
    // By hand, so the private key can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("public_key", &key_id(self.public_key.as_bytes()))
            .field("peers", &self.by_key.len())
            .field("counters", &self.out.counters)
            .finish_non_exhaustive()
    }
}

/// The output buffer [`Tunnel::encapsulate`] needs for a packet of `len`
/// bytes. A buffer of `min_out_len(mtu)` also fits [`Tunnel::decapsulate`]
/// of any datagram carrying an `mtu`-sized packet, so one size serves both.
pub const fn min_out_len(len: usize) -> usize {
    let n = len + DATA_OVERHEAD;
    if n < MIN_BUFFER {
        MIN_BUFFER
    } else {
        n
    }
}

impl Tunnel {
    /// A table with this private key, no peers and no local addresses.
    /// Until [`Tunnel::set_local_addresses`] names this side's tunnel
    /// addresses, every decrypted packet is dropped
    /// ([`DropReason::DestinationNotLocal`]), so a driver that forgets it
    /// fails closed instead of passing on packets to anywhere.
    pub fn new(private_key: StaticSecret) -> Self {
        let public_key = PublicKey::from(&private_key);
        let pk = public_key.to_bytes();
        // Index numbering starts at a point derived from the (random) public
        // key so a restarted helper does not reuse the indices of its previous
        // life, whose stale datagrams may still be in flight.
        let next_index = u32::from_le_bytes([pk[0], pk[1], pk[2], 0]);
        Tunnel {
            rate_limiter: Arc::new(RateLimiter::new(&public_key, HANDSHAKE_RATE_LIMIT)),
            private_key,
            public_key,
            peers: Vec::new(),
            free_slots: Vec::new(),
            by_key: HashMap::new(),
            by_index: FastMap::default(),
            by_addr: FastMap::default(),
            local: Vec::new(),
            next_index,
            next_generation: 0,
            heap: BinaryHeap::new(),
            out: Outputs::default(),
            scratch: vec![0; MAX_PACKET + DATA_OVERHEAD],
        }
    }

    /// A table with a freshly generated key pair: what the helper creates
    /// whenever its session resets, so every session registers a new key.
    pub fn generate() -> Self {
        Self::new(StaticSecret::random())
    }

    /// This device's public key, to register with the coordinator.
    pub fn public_key(&self) -> PeerKey {
        self.public_key.to_bytes()
    }

    /// Sets this side's own tunnel addresses (the device's addresses from
    /// the coordinator on the helper, the stack's addresses on the agent),
    /// replacing earlier ones. A decrypted packet is passed on only if its
    /// destination is one of them: peers may reach this side, never
    /// anything behind it. An empty set drops every decrypted packet.
    pub fn set_local_addresses(&mut self, addresses: impl IntoIterator<Item = IpAddr>) {
        let mut local: Vec<IpAddr> = addresses.into_iter().collect();
        local.sort_unstable();
        local.dedup();
        self.local = local;
    }

    /// This side's own tunnel addresses, as last set.
    pub fn local_addresses(&self) -> &[IpAddr] {
        &self.local
    }

    /// Number of peers in the table.
    pub fn peer_count(&self) -> usize {
        self.by_key.len()
    }

    /// The public keys of all peers, in no particular order.
    pub fn peer_keys(&self) -> impl Iterator<Item = &PeerKey> + '_ {
        self.by_key.keys()
    }

    /// The peer a packet to `addr` would go to.
    pub fn route(&self, addr: IpAddr) -> Option<PeerKey> {
        let slot = *self.by_addr.get(&addr)?;
        Some(self.peers.get(slot)?.as_ref()?.key)
    }

    /// Adds a peer, or updates one with the same key in place: new
    /// addresses, keepalive and (if the configured endpoint changed) endpoint
    /// take effect without a new handshake. An address another peer holds
    /// moves to this one (the latest configuration wins).
    pub fn upsert_peer(&mut self, now: Instant, cfg: PeerConfig) -> Result<(), ConfigError> {
        if cfg.public_key == self.public_key.to_bytes() {
            return Err(ConfigError::OwnKey(key_id(&cfg.public_key)));
        }
        let keepalive = cfg
            .persistent_keepalive
            .filter(|&s| s > 0)
            .map(|s| Duration::from_secs(u64::from(s)));
        let slot = match self.by_key.get(&cfg.public_key) {
            Some(&slot) => {
                let Some(peer) = self.peers[slot].as_mut() else {
                    // by_key only names occupied slots; nothing to update otherwise.
                    return Ok(());
                };
                if cfg.endpoint != peer.configured_endpoint {
                    peer.configured_endpoint = cfg.endpoint;
                    if cfg.endpoint.is_some() && !peer.pinned {
                        peer.endpoint = cfg.endpoint;
                    }
                }
                peer.persistent_keepalive = keepalive;
                let old = std::mem::take(&mut peer.addresses);
                for addr in old {
                    if self.by_addr.get(&addr) == Some(&slot) {
                        self.by_addr.remove(&addr);
                    }
                }
                slot
            }
            None => {
                if self.by_key.len() >= MAX_PEERS {
                    return Err(ConfigError::TooManyPeers(MAX_PEERS));
                }
                let index = self.allocate_index();
                let generation = self.next_generation;
                self.next_generation += 1;
                let tunn = Tunn::new(
                    self.private_key.clone(),
                    PublicKey::from(cfg.public_key),
                    None,
                    // Persistent keepalive is ours (see Peer::persistent_keepalive).
                    None,
                    index,
                    Some(self.rate_limiter.clone()),
                );
                let peer = Peer {
                    key: cfg.public_key,
                    tunn,
                    index,
                    generation,
                    addresses: Vec::new(),
                    configured_endpoint: cfg.endpoint,
                    endpoint: cfg.endpoint,
                    pinned: false,
                    persistent_keepalive: keepalive,
                    queue: VecDeque::new(),
                    timers: Mirror::new(now),
                    scheduled: None,
                    handshakes: 0,
                };
                let slot = match self.free_slots.pop() {
                    Some(slot) => {
                        self.peers[slot] = Some(peer);
                        slot
                    }
                    None => {
                        self.peers.push(Some(peer));
                        self.peers.len() - 1
                    }
                };
                self.by_key.insert(cfg.public_key, slot);
                self.by_index.insert(index, slot);
                tracing::debug!(peer = %key_id(&cfg.public_key), "peer added");
                slot
            }
        };
        let mut addresses = cfg.addresses;
        addresses.sort_unstable();
        addresses.dedup();
        for &addr in &addresses {
            if let Some(other) = self.by_addr.insert(addr, slot) {
                if other != slot {
                    if let Some(o) = self.peers[other].as_mut() {
                        tracing::warn!(
                            address = %addr,
                            from = %key_id(&o.key),
                            to = %key_id(&cfg.public_key),
                            "tunnel address moved to another peer"
                        );
                        o.addresses.retain(|a| *a != addr);
                    }
                }
            }
        }
        if let Some(peer) = self.peers[slot].as_mut() {
            peer.addresses = addresses;
            reschedule(&mut self.heap, peer, slot);
        }
        self.prune_heap();
        Ok(())
    }

    /// The path layer's choice of where the peer's datagrams go. From now on
    /// neither the source of the peer's datagrams (roaming) nor the
    /// directory's endpoint moves it; only the next call does. If no fresh
    /// session exists, a handshake is started again at once towards the new
    /// endpoint instead of waiting out the retry timer on a dead one (also
    /// when the endpoint is the same: the path layer calls again when a
    /// path that went silent answers again).
    /// `false` if the peer is unknown.
    pub fn set_path_endpoint(&mut self, now: Instant, key: &PeerKey, endpoint: SocketAddr) -> bool {
        let Some(&slot) = self.by_key.get(key) else {
            return false;
        };
        let Some(peer) = self.peers[slot].as_mut() else {
            return false;
        };
        peer.pinned = true;
        let moved = peer.endpoint != Some(endpoint);
        if moved {
            peer.endpoint = Some(endpoint);
            tracing::debug!(peer = %key_id(key), %endpoint, "endpoint set by the path layer");
            self.out.event(TunnelEvent::EndpointChanged {
                peer: *key,
                endpoint,
            });
        }
        let stale = peer
            .tunn
            .time_since_last_handshake()
            .is_none_or(|age| age >= crate::timers::REKEY_AFTER_TIME);
        if stale
            && (!peer.queue.is_empty()
                || peer.timers.handshake_in_progress
                // A session whose last answer went to the old endpoint
                // (a responder waiting for its confirmation) starts over.
                || (moved && peer.handshakes > 0))
        {
            peer.reinitiate(now, &mut self.out, &mut self.scratch);
            reschedule(&mut self.heap, peer, slot);
            self.prune_heap();
        }
        true
    }

    /// Removes a peer. Packets queued for it are dropped, counted in
    /// [`Counters::dropped_on_peer_removal`], and their number returned.
    pub fn remove_peer(&mut self, key: &PeerKey) -> usize {
        let Some(slot) = self.by_key.remove(key) else {
            return 0;
        };
        let Some(peer) = self.peers[slot].take() else {
            return 0;
        };
        self.by_index.remove(&peer.index);
        for addr in &peer.addresses {
            if self.by_addr.get(addr) == Some(&slot) {
                self.by_addr.remove(addr);
            }
        }
        self.free_slots.push(slot);
        let dropped = peer.queue.len();
        self.out.counters.dropped_on_peer_removal += dropped as u64;
        tracing::debug!(peer = %key_id(key), dropped, "peer removed");
        self.prune_heap();
        dropped
    }

    /// Replaces the whole table with a snapshot: peers not named are removed
    /// (their queued packets dropped and counted), the others upserted.
    /// Invalid entries are skipped; the first error is returned after the
    /// rest of the snapshot has been applied.
    pub fn set_peers(
        &mut self,
        now: Instant,
        peers: impl IntoIterator<Item = PeerConfig>,
    ) -> Result<(), ConfigError> {
        let peers: Vec<PeerConfig> = peers.into_iter().collect();
        let keep: HashSet<PeerKey> = peers.iter().map(|p| p.public_key).collect();
        let gone: Vec<PeerKey> = self
            .by_key
            .keys()
            .filter(|k| !keep.contains(*k))
            .copied()
            .collect();
        for key in &gone {
            self.remove_peer(key);
        }
        let mut first_error = None;
        for cfg in peers {
            if let Err(e) = self.upsert_peer(now, cfg) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Encrypts one IP packet from the TUN for the peer owning its
    /// destination address, into `out` (at least
    /// [`min_out_len`]`(packet.len())` bytes).
    ///
    /// * `Ok(Some(t))`: send `t.payload` to `t.dst`.
    /// * `Ok(None)`: no session yet; the packet is queued and a handshake
    ///   initiation is waiting in [`Tunnel::poll_transmit`].
    /// * `Err(reason)`: dropped and counted.
    ///
    /// With a session this allocates nothing and takes no lock of ours.
    pub fn encapsulate<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> Result<Option<Transmit<'a>>, DropReason> {
        let result = self.encapsulate_inner(now, packet, out);
        if let Err(reason) = result {
            reason.count(&mut self.out.counters);
        }
        result
    }

    fn encapsulate_inner<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> Result<Option<Transmit<'a>>, DropReason> {
        if packet.len() > MAX_PACKET {
            return Err(DropReason::MalformedPacket);
        }
        let dst = Tunn::dst_address(packet).ok_or(DropReason::MalformedPacket)?;
        let slot = *self
            .by_addr
            .get(&dst)
            .ok_or(DropReason::UnknownDestination)?;
        let peer = self.peers[slot]
            .as_mut()
            .ok_or(DropReason::UnknownDestination)?;
        if out.len() < min_out_len(packet.len()) {
            return Err(DropReason::BufferTooSmall);
        }
        peer.refresh(now, &mut self.out, &mut self.scratch);
        let result = if peer.has_session() {
            match peer.endpoint {
                None => Err(DropReason::NoEndpoint),
                Some(endpoint) => match peer.tunn.encapsulate(packet, out) {
                    TunnResult::WriteToNetwork(msg) => {
                        peer.timers.on_sent(now, true);
                        Ok(Some(Transmit {
                            dst: endpoint,
                            payload: msg,
                        }))
                    }
                    // has_session() checked the slot encapsulate uses, so it
                    // always encrypts; nothing was queued if it ever did not.
                    _ => Ok(None),
                },
            }
        } else {
            if peer.queue.len() >= MAX_QUEUED_PER_PEER {
                peer.queue.pop_front();
                self.out.counters.dropped_queue_full += 1;
            }
            peer.queue.push_back(packet.to_vec());
            peer.initiate(now, &mut self.out, &mut self.scratch);
            reschedule(&mut self.heap, peer, slot);
            self.prune_heap();
            return Ok(None);
        };
        schedule(&mut self.heap, peer, slot);
        result
    }

    /// Handles one datagram from the network, received from `from`, into
    /// `out` (at least as long as the datagram, and at least [`MIN_BUFFER`]).
    ///
    /// * `Ok(Some(packet))`: write `packet` to the TUN.
    /// * `Ok(None)`: nothing for the TUN (handshake, keepalive, cookie);
    ///   replies wait in [`Tunnel::poll_transmit`].
    /// * `Err(reason)`: dropped and counted; the peer's session is unaffected.
    ///
    /// Only authenticated datagrams move a peer's endpoint (roaming). A data
    /// datagram allocates nothing and takes no lock of ours.
    pub fn decapsulate<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Result<Option<&'a mut [u8]>, DropReason> {
        let result = self.decapsulate_inner(now, from, datagram, out);
        if let Err(reason) = result {
            reason.count(&mut self.out.counters);
        }
        result
    }

    fn decapsulate_inner<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Result<Option<&'a mut [u8]>, DropReason> {
        if out.len() < datagram.len().max(MIN_BUFFER) {
            return Err(DropReason::BufferTooSmall);
        }
        let packet = Tunn::parse_incoming_packet(datagram).map_err(|_| DropReason::Invalid)?;
        let slot = match packet {
            Packet::HandshakeInit(ref init) => {
                // Check MAC1 and load before the Diffie-Hellman that finds the
                // initiator's key, so a flood costs a hash each, not a DH.
                self.rate_limiter.reset_count();
                match self
                    .rate_limiter
                    .verify_packet(Some(from.ip()), datagram, &mut *out)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.out.transmit(Some(from), cookie);
                        return Ok(None);
                    }
                    Err(_) => return Err(DropReason::Invalid),
                }
                let half = parse_handshake_anon(&self.private_key, &self.public_key, init)
                    .map_err(|_| DropReason::Invalid)?;
                *self
                    .by_key
                    .get(&half.peer_static_public)
                    .ok_or(DropReason::UnknownPeer)?
            }
            Packet::HandshakeResponse(ref r) => {
                self.rate_limiter.reset_count();
                self.slot_for_index(r.receiver_idx)?
            }
            Packet::PacketCookieReply(ref c) => self.slot_for_index(c.receiver_idx)?,
            Packet::PacketData(ref d) => self.slot_for_index(d.receiver_idx)?,
        };
        let kind = datagram[0];
        let peer = self.peers[slot].as_mut().ok_or(DropReason::Invalid)?;
        peer.refresh(now, &mut self.out, &mut self.scratch);

        // Data packets only bring deadlines forward; anything else (handshakes,
        // cookies, keepalives) is rare and reschedules exactly.
        let mut exact = true;
        let result = match peer.tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::WriteToNetwork(msg) => {
                if msg.first() == Some(&MSG_COOKIE) {
                    // We are under load: the sender must retry with a cookie.
                    // Nothing was authenticated, so the endpoint stays.
                    self.out.transmit(Some(from), msg);
                } else {
                    // A handshake completed: we answered an initiation
                    // (responder) or got the response to ours (initiator; msg
                    // is the confirming keepalive).
                    let initiator = kind == MSG_RESPONSE;
                    peer.timers.on_session_established(now, initiator);
                    peer.handshakes += 1;
                    peer.roam(from, &mut self.out);
                    self.out.transmit(peer.endpoint, msg);
                    tracing::debug!(peer = %key_id(&peer.key), initiator, "handshake completed");
                    self.out.event(TunnelEvent::HandshakeCompleted {
                        peer: peer.key,
                        initiator,
                    });
                    peer.drain_boringtun_queue(now, &mut self.out, &mut self.scratch);
                    peer.flush(now, &mut self.out, &mut self.scratch);
                }
                Ok(None)
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                exact = false;
                accept_data(peer, now, from, &mut self.out, &mut self.scratch);
                check_source(&self.by_addr, slot, IpAddr::V4(src))
                    .and_then(|()| check_well_formed(packet))
                    .and_then(|()| check_destination(&self.local, packet))
                    .map(|()| Some(packet))
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                exact = false;
                accept_data(peer, now, from, &mut self.out, &mut self.scratch);
                check_source(&self.by_addr, slot, IpAddr::V6(src))
                    .and_then(|()| check_well_formed(packet))
                    .and_then(|()| check_destination(&self.local, packet))
                    .map(|()| Some(packet))
            }
            TunnResult::Done => {
                if kind == MSG_DATA {
                    // An authenticated keepalive. For a responder, the first
                    // one is what makes the new session current.
                    peer.timers.on_received(now, false);
                    peer.roam(from, &mut self.out);
                    if !peer.queue.is_empty() {
                        peer.flush(now, &mut self.out, &mut self.scratch);
                    }
                } else if kind == MSG_COOKIE {
                    peer.timers.cookie_received = Some(now);
                    peer.timers.on_received(now, false);
                }
                Ok(None)
            }
            TunnResult::Err(e) => {
                exact = false;
                Err(classify(e))
            }
        };
        if exact {
            reschedule(&mut self.heap, peer, slot);
            self.prune_heap();
        } else {
            schedule(&mut self.heap, peer, slot);
        }
        result
    }

    fn slot_for_index(&self, receiver_idx: u32) -> Result<usize, DropReason> {
        self.by_index
            .get(&(receiver_idx >> 8))
            .copied()
            .ok_or(DropReason::Invalid)
    }

    /// Runs every peer timer due at `now` (retransmissions, rekeys,
    /// keepalives, expiry). Call it when [`Tunnel::poll_timeout`] passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(peer) = self.peers.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if peer.generation != generation || peer.scheduled != Some(at) {
                continue;
            }
            peer.scheduled = None;
            peer.tick(now, &mut self.out, &mut self.scratch);
            peer.persistent_keepalive(now, &mut self.out, &mut self.scratch);
            // The tick just ran, so every deadline it yields lies after `now`
            // and this loop ends.
            schedule(&mut self.heap, peer, slot);
        }
        self.prune_heap();
    }

    /// The next instant [`Tunnel::handle_timeout`] has work, if any. Computed
    /// from WireGuard's timer rules (retry 5 s, keepalive 10 s, rekey 120 s,
    /// session expiry 180 s, key zeroing 540 s, persistent keepalive), never
    /// a fixed tick: an idle peer after its handshake next needs attention when
    /// its session expires 180 s later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next datagram the table wants sent (handshakes, keepalives, cookie
    /// replies, packets that waited for a handshake). Drain it after every call.
    pub fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.out.transmits.pop_front()
    }

    /// The next peer event. Drain it after every call.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.out.events.pop_front()
    }

    /// Statistics of one peer.
    pub fn peer_stats(&self, key: &PeerKey) -> Option<PeerStats> {
        let slot = *self.by_key.get(key)?;
        let peer = self.peers.get(slot)?.as_ref()?;
        let (_, tx, rx, _, rtt_ms) = peer.tunn.stats();
        Some(PeerStats {
            last_handshake: peer.timers.session_established,
            rx_bytes: rx as u64,
            tx_bytes: tx as u64,
            rtt: rtt_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            endpoint: peer.endpoint,
            queued: peer.queue.len(),
            handshakes: peer.handshakes,
        })
    }

    /// Table-wide drop counters.
    pub fn counters(&self) -> Counters {
        self.out.counters.clone()
    }

    fn allocate_index(&mut self) -> u32 {
        // MAX_PEERS is far below 2^24, so a free index is found quickly.
        loop {
            let index = self.next_index & 0x00ff_ffff;
            self.next_index = self.next_index.wrapping_add(1);
            if !self.by_index.contains_key(&index) {
                return index;
            }
        }
    }

    /// Drops heap entries at the top that no longer count, so
    /// `poll_timeout` does not report deadlines of removed peers.
    fn prune_heap(&mut self) {
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            let live = self
                .peers
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.generation == generation && p.scheduled == Some(at));
            if live {
                break;
            }
            self.heap.pop();
        }
    }
}

/// Brings a peer's deadline forward if its latest event needs it earlier.
/// Later deadlines are left alone: the peer then wakes a little early and
/// reschedules. This is what the data path uses, so a packet costs a few
/// comparisons and no heap push.
fn schedule(heap: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>, peer: &mut Peer, slot: usize) {
    if let Some(at) = peer.timers.next_deadline(peer.persistent_keepalive) {
        if !matches!(peer.scheduled, Some(s) if s <= at) {
            peer.scheduled = Some(at);
            heap.push(Reverse((at, slot, peer.generation)));
        }
    }
}

/// Sets a peer's deadline to exactly what its timers need, later or earlier.
/// Used after handshakes and configuration changes (not per packet), so an
/// idle peer is not woken by a deadline that no longer applies.
fn reschedule(heap: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>, peer: &mut Peer, slot: usize) {
    let at = peer.timers.next_deadline(peer.persistent_keepalive);
    if at != peer.scheduled {
        peer.scheduled = at;
        if let Some(at) = at {
            heap.push(Reverse((at, slot, peer.generation)));
        }
    }
}

/// Bookkeeping for an authenticated data packet.
fn accept_data(
    peer: &mut Peer,
    now: Instant,
    from: SocketAddr,
    out: &mut Outputs,
    scratch: &mut [u8],
) {
    peer.timers.on_received(now, true);
    peer.roam(from, out);
    if !peer.queue.is_empty() {
        peer.flush(now, out, scratch);
    }
}

fn check_source(
    by_addr: &FastMap<IpAddr, usize>,
    slot: usize,
    src: IpAddr,
) -> Result<(), DropReason> {
    if by_addr.get(&src) == Some(&slot) {
        Ok(())
    } else {
        Err(DropReason::SourceNotAllowed)
    }
}

/// A peer may address only this side: without this check a hostile peer
/// could use a laptop with IP forwarding on (Docker, libvirt) as a router
/// into its LAN, containers or other workspaces.
/// boringtun trims a decrypted packet to the length its IP header states,
/// which may be shorter than the header itself (an IPv4 total length of 0
/// gives an empty "packet"); found by the `wireguard_peers` fuzz target.
/// Only whole headers reach the TUN.
fn check_well_formed(packet: &[u8]) -> Result<(), DropReason> {
    let ok = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            header >= 20 && packet.len() >= header
        }
        Some(6) => packet.len() >= 40,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(DropReason::MalformedPacket)
    }
}

fn check_destination(local: &[IpAddr], packet: &[u8]) -> Result<(), DropReason> {
    match Tunn::dst_address(packet) {
        Some(dst) if local.contains(&dst) => Ok(()),
        _ => Err(DropReason::DestinationNotLocal),
    }
}

fn classify(e: WireGuardError) -> DropReason {
    match e {
        WireGuardError::InvalidPacket
        | WireGuardError::IncorrectPacketLength
        | WireGuardError::WrongPacketType
        | WireGuardError::WrongIndex
        | WireGuardError::InvalidMac
        | WireGuardError::DestinationBufferTooSmall => DropReason::Invalid,
        _ => DropReason::Rejected,
    }
}
