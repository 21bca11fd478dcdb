//! A sans-IO TURN client: one allocation on one TURN server (RFC 8656 over
//! UDP), for relayed candidates and the relayed path.
//!
//! [`Allocation`] does no IO and reads no clock, like the tunnel: the driver
//! passes `now` into every call, sends what [`Allocation::poll_transmit`]
//! returns to [`Allocation::server`] from the shared UDP socket, hands every
//! datagram that comes from the server to [`Allocation::handle_input`], and
//! sleeps until [`Allocation::poll_timeout`].
//!
//! # What it does
//!
//! * Allocate with long-term credentials: the first request goes out
//!   unauthenticated, the 401 names the realm and nonce, the retry carries
//!   USERNAME, REALM, NONCE, MESSAGE-INTEGRITY and FINGERPRINT. A 438 (stale
//!   nonce) is retried with the new nonce. The answer gives the relayed
//!   address, our server-reflexive address (a candidate too) and the
//!   lifetime.
//! * Refresh the allocation at 80 % of its lifetime or 60 s before its end,
//!   whichever is earlier; permissions (300 s) at 240 s; channel bindings
//!   (600 s) at 540 s.
//! * [`Allocation::encapsulate`] wraps a payload for a peer: ChannelData
//!   once the peer's channel is bound, a Send indication before that.
//!   Incoming ChannelData and Data indications come back from
//!   [`Allocation::handle_input`] as [`Relayed`] (peer, payload).
//! * Requests are retransmitted (500 ms, doubling, 7 sends, then 8 s); a
//!   server that never answers ends the allocation with
//!   [`TurnEvent::AllocationFailed`] (before it existed) or
//!   [`TurnEvent::AllocationLost`] (after), so the caller can fail over.
//! * Credentials are short-lived (coturn's `use-auth-secret`): a 401 to a
//!   signed request with no newer credentials parks the request and emits
//!   [`TurnEvent::CredentialsNeeded`]; [`Allocation::update_credentials`]
//!   sends it again. [`Allocation::close`] deallocates (Refresh, lifetime 0).
//! * A 437 to the Allocate (this 5-tuple still has an allocation, e.g. the
//!   helper restarted on the same port) deallocates the old one once and
//!   allocates again a second later (coturn needs that moment).
//!
//! # What it trusts
//!
//! Only datagrams from the server's address are looked at. Answers must
//! match an outstanding transaction (random 96-bit ids) and its method. Once
//! a request is signed, a success answer without a valid MESSAGE-INTEGRITY
//! is ignored (the request keeps retransmitting), and so is an error answer
//! without one, except 400, 401 and 438, which a server sends when it could
//! not check our signature (RFC 8489 §9.2.5), and 437 and 441, which coturn
//! sends unsigned when the credentials don't match the allocation's (it
//! ties a 5-tuple to the first username it saw there). A relayed or mapped address
//! that is unspecified, multicast, broadcast or port 0 is refused. A Data
//! indication is accepted only from a peer we gave a permission, ChannelData
//! only on a channel we asked for. Passwords and keys are never logged, nor
//! shown by `Debug`.

#[cfg(not(fuzzing))]
pub(crate) mod msg;
/// Public only to the `stun_turn` fuzz target, which signs its answers with
/// the same code the client verifies them with.
#[cfg(fuzzing)]
pub mod msg;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_codec::rfc5389::attributes::{
    ErrorCode, MessageIntegrity, Nonce, Realm, Username, XorMappedAddress,
};
use stun_codec::rfc5766::attributes::{
    ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayAddress,
};
use stun_codec::rfc5766::methods::{
    ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND,
};
use stun_codec::{MessageClass, Method, TransactionId};

use crate::demux::{classify, Datagram, DemuxError, CHANNEL_NUMBERS};
use msg::{Key, Msg};

/// The first retransmission timeout (RFC 8489 §6.2.1).
pub const RTO: Duration = Duration::from_millis(500);
/// How many times a request is sent before it is given up (Rc).
pub const MAX_SENDS: u32 = 7;
/// A permission's lifetime on the server, and when we refresh it.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// A channel binding's lifetime on the server, and when we refresh it.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// The lifetime asked for in a Refresh (the server may grant less).
pub const REQUESTED_LIFETIME: u32 = 600;
/// How long an Allocate whose credentials were refused waits for new ones
/// before the allocation fails.
pub const CREDENTIAL_WAIT: Duration = Duration::from_secs(30);
/// A channel number is not bound to another peer until this long after its
/// old binding can have expired (RFC 8656 §12).
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(600 + 300);
/// 438 answers in a row to one request before it counts as refused: a
/// server that hands out stale nonces forever must not keep us busy.
const MAX_STALE_NONCE: u8 = 3;
/// The pause between deallocating an old allocation and allocating anew.
const RECLAIM_PAUSE: Duration = Duration::from_secs(1);
/// REQUESTED-TRANSPORT's value for UDP.
const UDP: u8 = 17;
/// The largest payload a ChannelData message or a DATA attribute carries.
pub const MAX_PAYLOAD: usize = 65535 - 64;

/// Short-lived TURN credentials (coturn's `use-auth-secret` scheme: username
/// `expiry:id`, password `base64(HMAC-SHA1(secret, username))`). `Debug`
/// never shows the password.
#[derive(Clone)]
pub struct Credentials {
    username: Username,
    password: String,
}

impl Credentials {
    /// Fails when the username is too long for STUN (513 bytes).
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Self, TurnError> {
        let username = Username::new(username.into()).map_err(|_| TurnError::BadCredentials)?;
        Ok(Self {
            username,
            password: password.into(),
        })
    }

    pub fn username(&self) -> &str {
        self.username.name()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.name())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A datagram to send to the TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Relayed data from a peer, out of a ChannelData message (borrowed) or a
/// Data indication (owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub peer: SocketAddr,
    pub payload: Cow<'a, [u8]>,
}

/// What happened to the allocation; drain with [`Allocation::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation exists: `relayed` is the relayed candidate, `mapped`
    /// our server-reflexive address as the server saw it.
    Allocated {
        relayed: SocketAddr,
        mapped: SocketAddr,
        lifetime: Duration,
    },
    /// A Refresh succeeded.
    Refreshed { lifetime: Duration },
    /// The server installed the permission for this peer IP (first time).
    PermissionCreated { peer: IpAddr },
    /// The server refused the permission; it is forgotten.
    PermissionFailed { peer: IpAddr, reason: Failure },
    /// The channel is bound: [`Allocation::encapsulate`] now sends
    /// ChannelData to this peer (first time).
    ChannelBound { peer: SocketAddr, channel: u16 },
    /// The server refused the binding; it is forgotten.
    ChannelBindFailed { peer: SocketAddr, reason: Failure },
    /// The server refused the credentials: pass fresh ones to
    /// [`Allocation::update_credentials`]. Emitted once per refusal episode.
    CredentialsNeeded,
    /// The allocation could not be made; the `Allocation` is finished.
    AllocationFailed(Failure),
    /// The allocation existed and is gone (or unreachable); the `Allocation`
    /// is finished: fail over to another relay.
    AllocationLost(Failure),
    /// [`Allocation::close`] finished (deallocated, or nothing to do).
    Closed,
}

/// Why an allocation, permission or channel binding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the TURN server did not answer {method} after {tries} tries; use another relay or check that the server is up and UDP to it is allowed")]
    NoResponse { method: &'static str, tries: u32 },
    #[error("the TURN server refused {method} with {code} ({reason}); check its configuration or use another relay")]
    Rejected {
        method: &'static str,
        code: u16,
        reason: String,
    },
    #[error("the TURN server refused the credentials and no new ones came; fetch fresh TURN credentials from the coordinator")]
    Unauthorized,
    #[error("the TURN server's answer to {method} lacks {attribute}; it is not a working TURN server, use another relay")]
    MissingAttribute {
        method: &'static str,
        attribute: &'static str,
    },
    #[error("the TURN server offered {0} as relayed address, which no peer can reach; fix its relay-ip or use another relay")]
    BadRelayedAddress(SocketAddr),
    #[error("the TURN server reported {0} as our address, which can't be; use another relay")]
    BadMappedAddress(SocketAddr),
    #[error("the TURN server granted a lifetime of 0 s to {method}; use another relay")]
    BadLifetime { method: &'static str },
    #[error("the allocation's lifetime ran out before a refresh succeeded; allocate again")]
    Expired,
    #[error("{0}; this is a bug in the TURN client, report it")]
    Encode(String),
}

/// Why [`Allocation::handle_input`] did not use a datagram. The caller
/// counts and drops it; none of these changes the allocation's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("a datagram from {0}, not from the TURN server")]
    NotFromServer(SocketAddr),
    #[error("not a STUN or ChannelData message: {0}")]
    Demux(#[from] DemuxError),
    #[error("a WireGuard message from the TURN server's address")]
    NotTurn,
    #[error("a STUN message that does not decode")]
    Undecodable,
    #[error("a STUN message with a malformed attribute or a wrong FINGERPRINT")]
    BrokenAttribute,
    #[error("a STUN message with the unknown comprehension-required attribute {0:#06x}")]
    UnknownRequiredAttribute(u16),
    #[error("an answer to no request of ours (late, duplicate or forged)")]
    UnknownTransaction,
    #[error("an answer of the wrong method for its transaction")]
    WrongMethod,
    #[error("an answer to a signed request without MESSAGE-INTEGRITY")]
    MissingIntegrity,
    #[error("an answer whose MESSAGE-INTEGRITY does not match our credentials")]
    BadIntegrity,
    #[error("a STUN {0} the client does not expect from a TURN server")]
    Unexpected(String),
    #[error("ChannelData on channel {0:#06x}, which we did not bind")]
    UnknownChannel(u16),
    #[error("ChannelData on channel {0:#06x}, whose binding the server has not confirmed")]
    ChannelNotBound(u16),
    #[error("a Data indication from {0}, which has no permission")]
    NoPermission(IpAddr),
    #[error("a Data indication without {0}")]
    MissingAttribute(&'static str),
    #[error("the allocation is finished")]
    Finished,
}

/// Why a call on the allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error("the TURN allocation does not exist yet; wait for TurnEvent::Allocated")]
    NotAllocated,
    #[error("the TURN allocation is finished or closing; make a new one")]
    Finished,
    #[error("no permission for {0} on the relay; call create_permission or bind_channel first")]
    NoPermission(IpAddr),
    #[error("{0} can't be a peer (unspecified, multicast or broadcast)")]
    BadPeer(IpAddr),
    #[error("peer {peer} and relayed address {relayed} are of different address families; use a relay of the peer's family")]
    AddressFamily { peer: IpAddr, relayed: SocketAddr },
    #[error("a payload of {0} bytes is more than a TURN message carries")]
    TooLarge(usize),
    #[error("all 4096 channel numbers are in use; remove peers first")]
    NoFreeChannel,
    #[error("a TURN username is at most 513 bytes; check the coordinator's credentials")]
    BadCredentials,
}

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh,
    Deallocate,
    /// Deallocating what an earlier run left on this 5-tuple (a 437 to our
    /// Allocate, e.g. after a restart on the same port), then allocating.
    Reclaim,
    Permission(IpAddr),
    Channel(SocketAddr),
}

impl Kind {
    fn method(self) -> Method {
        match self {
            Kind::Allocate => ALLOCATE,
            Kind::Refresh | Kind::Deallocate | Kind::Reclaim => REFRESH,
            Kind::Permission(_) => CREATE_PERMISSION,
            Kind::Channel(_) => CHANNEL_BIND,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Allocate => "Allocate",
            Kind::Refresh => "Refresh",
            Kind::Deallocate => "Refresh (deallocate)",
            Kind::Reclaim => "Refresh (reclaim)",
            Kind::Permission(_) => "CreatePermission",
            Kind::Channel(_) => "ChannelBind",
        }
    }
}

struct Transaction {
    id: TransactionId,
    kind: Kind,
    bytes: Vec<u8>,
    sends: u32,
    /// When to retransmit, or give up after the last send.
    next: Instant,
    /// The first send: the server's timers started no earlier.
    first_sent: Instant,
    /// The credential it was signed with, if any.
    key: Option<Key>,
    /// Which credentials it was signed with ([`Allocation::generation`]).
    generation: u64,
    /// 438 answers so far in this request's chain.
    stale: u8,
}

/// The realm and nonce of the server's last challenge.
struct Challenge {
    realm: Realm,
    nonce: Nonce,
}

struct Relay {
    relayed: SocketAddr,
    mapped: SocketAddr,
    expires: Instant,
    /// `None` while a Refresh is in flight or waits for credentials.
    refresh_at: Option<Instant>,
}

enum Phase {
    Allocating,
    Allocated(Relay),
    Closing,
    Done,
}

struct Permission {
    installed: bool,
    /// `None` while a request is in flight or not yet sent.
    refresh_at: Option<Instant>,
}

struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Option<Instant>,
}

/// One TURN allocation on one server. See the module documentation.
pub struct Allocation {
    server: SocketAddr,
    /// The credentials requests are signed with.
    credentials: Credentials,
    /// Newer credentials, held back while the server still takes the
    /// current ones: coturn ties an allocation (and even a 5-tuple that only
    /// tried to allocate) to the first username it saw and answers another
    /// one with 441/437, so switching early would lose the allocation.
    next_credentials: Option<Credentials>,
    /// Bumped whenever `credentials` changes.
    generation: u64,
    challenge: Option<Challenge>,
    phase: Phase,
    transactions: Vec<Transaction>,
    /// Requests waiting for new credentials, and since when.
    parked: Vec<Kind>,
    parked_since: Option<Instant>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
    /// Channel numbers of removed peers, free again at the instant given.
    quarantine: Vec<(u16, Instant)>,
    close_requested: bool,
    /// Whether an old allocation on this 5-tuple was already deallocated.
    reclaimed: bool,
    retransmission: Retransmission,
    /// When to send the Allocate after reclaiming.
    allocate_at: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TurnEvent>,
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("server", &self.server)
            .field("relayed", &self.relayed_address())
            .field("mapped", &self.mapped_address())
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Allocation {
    /// Starts allocating on `server`: the first Allocate is queued for
    /// [`Allocation::poll_transmit`].
    pub fn new(now: Instant, server: SocketAddr, credentials: Credentials) -> Self {
        Self::with_retransmission(now, server, credentials, Retransmission::default())
    }

    /// [`Allocation::new`] with another retransmission budget (at least one
    /// send).
    pub fn with_retransmission(
        now: Instant,
        server: SocketAddr,
        credentials: Credentials,
        retransmission: Retransmission,
    ) -> Self {
        let retransmission = Retransmission {
            rto: retransmission.rto.max(Duration::from_millis(10)),
            max_sends: retransmission.max_sends.max(1),
        };
        let mut allocation = Self {
            server,
            credentials,
            next_credentials: None,
            generation: 0,
            challenge: None,
            phase: Phase::Allocating,
            transactions: Vec::new(),
            parked: Vec::new(),
            parked_since: None,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_peers: HashMap::new(),
            quarantine: Vec::new(),
            close_requested: false,
            reclaimed: false,
            retransmission,
            allocate_at: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        allocation.start(now, Kind::Allocate, 0);
        allocation
    }

    /// The TURN server this allocation is on.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address (a relayed candidate), once allocated.
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Allocated(relay) => Some(relay.relayed),
            _ => None,
        }
    }

    /// Our address as the server saw it (a server-reflexive candidate), once
    /// allocated.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Allocated(relay) => Some(relay.mapped),
            _ => None,
        }
    }

    /// Whether the allocation exists and is usable.
    pub fn is_allocated(&self) -> bool {
        matches!(self.phase, Phase::Allocated(_))
    }

    /// Whether the allocation is over (failed, lost or closed): it sends
    /// nothing more.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The channel number bound (or being bound) for `peer`.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels.get(&peer).map(|c| c.number)
    }

    /// Whether `peer`'s channel is bound, so data goes as ChannelData.
    pub fn is_channel_bound(&self, peer: SocketAddr) -> bool {
        self.channels.get(&peer).is_some_and(|c| c.bound)
    }

    /// Whether the server confirmed a permission for `peer`.
    pub fn has_permission(&self, peer: IpAddr) -> bool {
        self.permissions.get(&peer).is_some_and(|p| p.installed)
    }

    /// New credentials. Requests parked after a 401 are sent again with
    /// them at once. Otherwise they are kept until the server refuses the
    /// current ones (a 401, e.g. once their expiry passed): a server like
    /// coturn refuses a different username on an existing allocation, so an
    /// allocation lasts at most until its username's expiry plus one
    /// lifetime, and the caller re-allocates (on another relay first) before
    /// then.
    pub fn update_credentials(&mut self, now: Instant, credentials: Credentials) {
        if self.parked.is_empty() && self.is_allocated() {
            self.next_credentials = Some(credentials);
            return;
        }
        self.next_credentials = None;
        self.credentials = credentials;
        self.generation += 1;
        self.parked_since = None;
        for kind in std::mem::take(&mut self.parked) {
            self.start(now, kind, 0);
        }
    }

    /// Asks the server to let `peer`'s datagrams through to the relayed
    /// address, and keeps the permission refreshed until
    /// [`Allocation::remove_peer`]. Sent once allocated.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), TurnError> {
        self.check_peer(peer)?;
        if self.permissions.contains_key(&peer) {
            return Ok(());
        }
        self.permissions.insert(
            peer,
            Permission {
                installed: false,
                refresh_at: None,
            },
        );
        if self.is_allocated() {
            self.start(now, Kind::Permission(peer), 0);
        }
        Ok(())
    }

    /// Binds a channel to `peer` (and creates its IP's permission), kept
    /// refreshed until [`Allocation::remove_peer`]. Returns the channel
    /// number; data goes as ChannelData once [`TurnEvent::ChannelBound`].
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, TurnError> {
        self.check_peer(peer.ip())?;
        if let Some(channel) = self.channels.get(&peer) {
            return Ok(channel.number);
        }
        self.quarantine.retain(|(_, free_at)| *free_at > now);
        let mut numbers = CHANNEL_NUMBERS;
        let number = numbers
            .find(|n| {
                !self.channel_peers.contains_key(n) && !self.quarantine.iter().any(|(q, _)| q == n)
            })
            .ok_or(TurnError::NoFreeChannel)?;
        self.create_permission(now, peer.ip())?;
        self.channels.insert(
            peer,
            Channel {
                number,
                bound: false,
                refresh_at: None,
            },
        );
        self.channel_peers.insert(number, peer);
        if self.is_allocated() {
            self.start(now, Kind::Channel(peer), 0);
        }
        Ok(number)
    }

    /// Stops refreshing the permission and channels of `peer` (they expire
    /// on the server; TURN has no way to delete them). Its channel numbers
    /// are not reused for another peer until they surely expired.
    pub fn remove_peer(&mut self, now: Instant, peer: IpAddr) {
        self.permissions.remove(&peer);
        let gone: Vec<SocketAddr> = self
            .channels
            .keys()
            .filter(|p| p.ip() == peer)
            .copied()
            .collect();
        for p in gone {
            if let Some(channel) = self.channels.remove(&p) {
                self.channel_peers.remove(&channel.number);
                self.quarantine
                    .push((channel.number, now + CHANNEL_QUARANTINE));
            }
        }
        self.transactions.retain(|t| match t.kind {
            Kind::Permission(ip) => ip != peer,
            Kind::Channel(p) => p.ip() != peer,
            _ => true,
        });
        self.parked.retain(|k| match *k {
            Kind::Permission(ip) => ip != peer,
            Kind::Channel(p) => p.ip() != peer,
            _ => true,
        });
    }

    /// Wraps `payload` for `peer`: ChannelData if its channel is bound,
    /// otherwise a Send indication (the peer needs a permission).
    pub fn encapsulate(&self, peer: SocketAddr, payload: &[u8]) -> Result<Transmit, TurnError> {
        let mut out = Vec::with_capacity(payload.len() + 40);
        self.encapsulate_into(peer, payload, &mut out)?;
        Ok(Transmit {
            dst: self.server,
            payload: out,
        })
    }

    /// [`Allocation::encapsulate`] into a reused buffer (cleared first), to
    /// [`Allocation::server`]: on a bound channel this allocates nothing
    /// once `out` has grown.
    pub fn encapsulate_into(
        &self,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TurnError> {
        let relayed = match &self.phase {
            Phase::Allocated(relay) => relay.relayed,
            Phase::Allocating => return Err(TurnError::NotAllocated),
            Phase::Closing | Phase::Done => return Err(TurnError::Finished),
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(TurnError::TooLarge(payload.len()));
        }
        if peer.is_ipv4() != relayed.is_ipv4() {
            return Err(TurnError::AddressFamily {
                peer: peer.ip(),
                relayed,
            });
        }
        out.clear();
        if let Some(channel) = self.channels.get(&peer).filter(|c| c.bound) {
            out.extend_from_slice(&channel.number.to_be_bytes());
            // MAX_PAYLOAD keeps this in u16.
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
            return Ok(());
        }
        if !self.permissions.contains_key(&peer.ip()) {
            return Err(TurnError::NoPermission(peer.ip()));
        }
        let mut message = Msg::new(MessageClass::Indication, SEND, random_id());
        message.add_attribute(XorPeerAddress::new(peer));
        let data = Data::new(payload.to_vec()).map_err(|_| TurnError::TooLarge(payload.len()))?;
        message.add_attribute(data);
        let bytes =
            msg::sign_and_encode(message, None).map_err(|_| TurnError::TooLarge(payload.len()))?;
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Sends a Refresh now, e.g. when the relayed path seems dead: a server
    /// that is gone then shows as [`TurnEvent::AllocationLost`] within the
    /// retransmission budget instead of at the next scheduled refresh.
    pub fn refresh(&mut self, now: Instant) {
        if !self.is_allocated() || self.pending(Kind::Refresh) {
            return;
        }
        if let Phase::Allocated(relay) = &mut self.phase {
            relay.refresh_at = None;
        }
        self.start(now, Kind::Refresh, 0);
    }

    /// Deallocates: a Refresh with LIFETIME 0, then [`TurnEvent::Closed`].
    /// An Allocate still in flight is deallocated once it succeeds.
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Done | Phase::Closing => {}
            Phase::Allocating => {
                if self.transactions.iter().any(|t| t.kind == Kind::Allocate) {
                    self.close_requested = true;
                } else {
                    self.finish(TurnEvent::Closed);
                }
            }
            Phase::Allocated(_) => {
                if self.parked_since.is_some() {
                    // Without accepted credentials the server can't take
                    // the Refresh; the allocation simply expires.
                    self.finish(TurnEvent::Closed);
                    return;
                }
                self.transactions.clear();
                self.phase = Phase::Closing;
                self.start(now, Kind::Deallocate, 0);
            }
        }
    }

    /// One datagram that arrived from `from`. `Ok(Some)` is relayed data
    /// from a peer; `Ok(None)` a server message that was used.
    pub fn handle_input<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Result<Option<Relayed<'a>>, InputError> {
        if from != self.server {
            return Err(InputError::NotFromServer(from));
        }
        if matches!(self.phase, Phase::Done) {
            return Err(InputError::Finished);
        }
        match classify(datagram)? {
            Datagram::WireGuard(_) => Err(InputError::NotTurn),
            Datagram::ChannelData { channel, payload } => {
                let peer = *self
                    .channel_peers
                    .get(&channel)
                    .ok_or(InputError::UnknownChannel(channel))?;
                // A server relays on a channel only once its ChannelBind
                // succeeded; before that, the datagram is not the server's.
                if !self.is_channel_bound(peer) {
                    return Err(InputError::ChannelNotBound(channel));
                }
                Ok(Some(Relayed {
                    peer,
                    payload: Cow::Borrowed(payload),
                }))
            }
            Datagram::Stun(bytes) => {
                let message = msg::decode(bytes).map_err(|e| match e {
                    msg::DecodeError::Undecodable => InputError::Undecodable,
                    msg::DecodeError::BrokenAttribute => InputError::BrokenAttribute,
                })?;
                if let Some(code) = msg::unknown_required(&message) {
                    return Err(InputError::UnknownRequiredAttribute(code));
                }
                match message.class() {
                    MessageClass::Indication if message.method() == DATA => {
                        self.data_indication(message).map(Some)
                    }
                    MessageClass::SuccessResponse | MessageClass::ErrorResponse => {
                        self.response(now, message).map(|()| None)
                    }
                    class => Err(InputError::Unexpected(format!(
                        "{class} of method {:#05x}",
                        message.method().as_u16()
                    ))),
                }
            }
        }
    }

    /// Retransmits, refreshes and expiries that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        let mut given_up = Vec::new();
        for t in &mut self.transactions {
            if t.next > now {
                continue;
            }
            if t.sends >= self.retransmission.max_sends {
                given_up.push(t.id);
                continue;
            }
            t.sends += 1;
            t.next = now + self.retransmission.wait(t.sends);
            self.transmits.push_back(Transmit {
                dst: self.server,
                payload: t.bytes.clone(),
            });
        }
        for id in given_up {
            let Some(i) = self.transactions.iter().position(|t| t.id == id) else {
                continue;
            };
            let t = self.transactions.remove(i);
            tracing::debug!(server = %self.server, request = t.kind.name(), "TURN server does not answer");
            let failure = Failure::NoResponse {
                method: t.kind.name(),
                tries: t.sends,
            };
            // A server that lets any request go unanswered through all
            // retransmissions is gone for every purpose.
            match t.kind {
                Kind::Deallocate => self.finish(TurnEvent::Closed),
                _ => self.end(failure),
            }
            if matches!(self.phase, Phase::Done) {
                return;
            }
        }
        if self.allocate_at.is_some_and(|at| at <= now) {
            self.allocate_at = None;
            self.start(now, Kind::Allocate, 0);
        }
        if let Some(since) = self.parked_since {
            let allocating = matches!(self.phase, Phase::Allocating);
            if allocating && now >= since + CREDENTIAL_WAIT {
                self.end(Failure::Unauthorized);
                return;
            }
        }
        let (expires, refresh_at) = match &self.phase {
            Phase::Allocated(relay) => (relay.expires, relay.refresh_at),
            _ => return,
        };
        if now >= expires {
            let failure = if self.parked.contains(&Kind::Refresh) {
                Failure::Unauthorized
            } else {
                Failure::Expired
            };
            self.end(failure);
            return;
        }
        if refresh_at.is_some_and(|at| at <= now) {
            if let Phase::Allocated(relay) = &mut self.phase {
                relay.refresh_at = None;
            }
            if !self.pending(Kind::Refresh) {
                self.start(now, Kind::Refresh, 0);
            }
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| p.refresh_at.is_some_and(|at| at <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            if let Some(p) = self.permissions.get_mut(&ip) {
                p.refresh_at = None;
            }
            if !self.pending(Kind::Permission(ip)) {
                self.start(now, Kind::Permission(ip), 0);
            }
        }
        let due: Vec<SocketAddr> = self
            .channels
            .iter()
            .filter(|(_, c)| c.refresh_at.is_some_and(|at| at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            if let Some(c) = self.channels.get_mut(&peer) {
                c.refresh_at = None;
            }
            if !self.pending(Kind::Channel(peer)) {
                self.start(now, Kind::Channel(peer), 0);
            }
        }
    }

    /// When [`Allocation::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Done) {
            return None;
        }
        let transactions = self.transactions.iter().map(|t| t.next);
        let relay = match &self.phase {
            Phase::Allocated(relay) => [Some(relay.expires), relay.refresh_at],
            _ => [None, None],
        };
        // Permission and channel refreshes run only while allocated.
        let allocated = self.is_allocated();
        let permissions = self
            .permissions
            .values()
            .filter_map(|p| p.refresh_at)
            .filter(|_| allocated);
        let channels = self
            .channels
            .values()
            .filter_map(|c| c.refresh_at)
            .filter(|_| allocated);
        let parked = self
            .parked_since
            .filter(|_| matches!(self.phase, Phase::Allocating))
            .map(|since| since + CREDENTIAL_WAIT);
        transactions
            .chain(relay.into_iter().flatten())
            .chain(permissions)
            .chain(channels)
            .chain(parked)
            .chain(self.allocate_at)
            .min()
    }

    /// The next datagram to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    fn check_peer(&self, peer: IpAddr) -> Result<(), TurnError> {
        match self.phase {
            Phase::Closing | Phase::Done => return Err(TurnError::Finished),
            _ if self.close_requested => return Err(TurnError::Finished),
            _ => {}
        }
        if !usable(peer) {
            return Err(TurnError::BadPeer(peer));
        }
        if let Phase::Allocated(relay) = &self.phase {
            if peer.is_ipv4() != relay.relayed.is_ipv4() {
                return Err(TurnError::AddressFamily {
                    peer,
                    relayed: relay.relayed,
                });
            }
        }
        Ok(())
    }

    fn pending(&self, kind: Kind) -> bool {
        self.transactions.iter().any(|t| t.kind == kind) || self.parked.contains(&kind)
    }

    /// Sends a new request of `kind` (or parks it while credentials are
    /// awaited).
    fn start(&mut self, now: Instant, kind: Kind, stale: u8) {
        if self.parked_since.is_some() && self.challenge.is_some() {
            if !self.parked.contains(&kind) {
                self.parked.push(kind);
            }
            return;
        }
        let id = random_id();
        let mut message = Msg::new(MessageClass::Request, kind.method(), id);
        match kind {
            Kind::Allocate => message.add_attribute(RequestedTransport::new(UDP)),
            Kind::Refresh => message.add_attribute(Lifetime::from_u32(REQUESTED_LIFETIME)),
            Kind::Deallocate | Kind::Reclaim => message.add_attribute(Lifetime::from_u32(0)),
            Kind::Permission(ip) => {
                message.add_attribute(XorPeerAddress::new(SocketAddr::new(ip, 0)))
            }
            Kind::Channel(peer) => {
                let Some(number) = self.channels.get(&peer).map(|c| c.number) else {
                    return;
                };
                let Ok(channel) = ChannelNumber::new(number) else {
                    // Numbers come from CHANNEL_NUMBERS only.
                    return;
                };
                message.add_attribute(channel);
                message.add_attribute(XorPeerAddress::new(peer));
            }
        }
        let key = self.challenge.as_ref().map(|c| Key {
            username: self.credentials.username.clone(),
            realm: c.realm.clone(),
            password: self.credentials.password.clone(),
        });
        let nonce = self.challenge.as_ref().map(|c| c.nonce.clone());
        let signing = key.as_ref().zip(nonce.as_ref());
        let bytes = match msg::sign_and_encode(message, signing) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.end(Failure::Encode(e.0));
                return;
            }
        };
        self.transmits.push_back(Transmit {
            dst: self.server,
            payload: bytes.clone(),
        });
        self.transactions.push(Transaction {
            id,
            kind,
            bytes,
            sends: 1,
            next: now + self.retransmission.wait(1),
            first_sent: now,
            key,
            generation: self.generation,
            stale,
        });
    }

    fn data_indication<'a>(&self, message: Msg) -> Result<Relayed<'a>, InputError> {
        if !self.is_allocated() {
            return Err(InputError::Unexpected(
                "Data indication before allocation".into(),
            ));
        }
        let peer = message
            .get_attribute::<XorPeerAddress>()
            .ok_or(InputError::MissingAttribute("XOR-PEER-ADDRESS"))?
            .address();
        let data = message
            .get_attribute::<Data>()
            .ok_or(InputError::MissingAttribute("DATA"))?;
        // Only a permission the server confirmed lets a peer's data through
        // it; one we merely asked for does not.
        if !self.has_permission(peer.ip()) {
            return Err(InputError::NoPermission(peer.ip()));
        }
        Ok(Relayed {
            peer,
            payload: Cow::Owned(data.data().to_vec()),
        })
    }

    fn response(&mut self, now: Instant, message: Msg) -> Result<(), InputError> {
        let index = self
            .transactions
            .iter()
            .position(|t| t.id == message.transaction_id())
            .ok_or(InputError::UnknownTransaction)?;
        let t = &self.transactions[index];
        if message.method() != t.kind.method() {
            return Err(InputError::WrongMethod);
        }
        let code = message.get_attribute::<ErrorCode>().map(|e| e.code());
        if let Some(key) = &t.key {
            match message.get_attribute::<MessageIntegrity>() {
                Some(mi) => mi
                    .check_long_term_credential(&key.username, &key.realm, &key.password)
                    .map_err(|_| InputError::BadIntegrity)?,
                None => {
                    let unsigned_ok = message.class() == MessageClass::ErrorResponse
                        && matches!(code, Some(400 | 401 | 437 | 438 | 441));
                    if !unsigned_ok {
                        return Err(InputError::MissingIntegrity);
                    }
                }
            }
        }
        let t = self.transactions.remove(index);
        if message.class() == MessageClass::SuccessResponse {
            self.success(now, t, &message);
        } else {
            self.error(now, t, &message);
        }
        Ok(())
    }

    fn success(&mut self, now: Instant, t: Transaction, message: &Msg) {
        let method = t.kind.name();
        let missing = |attribute| Failure::MissingAttribute { method, attribute };
        match t.kind {
            Kind::Allocate => {
                let Some(relayed) = message.get_attribute::<XorRelayAddress>() else {
                    return self.end(missing("XOR-RELAYED-ADDRESS"));
                };
                let Some(mapped) = message.get_attribute::<XorMappedAddress>() else {
                    return self.end(missing("XOR-MAPPED-ADDRESS"));
                };
                let Some(lifetime) = message.get_attribute::<Lifetime>() else {
                    return self.end(missing("LIFETIME"));
                };
                let (relayed, mapped, lifetime) =
                    (relayed.address(), mapped.address(), lifetime.lifetime());
                if !usable(relayed.ip()) || relayed.port() == 0 {
                    return self.end(Failure::BadRelayedAddress(relayed));
                }
                if !usable(mapped.ip()) || mapped.port() == 0 {
                    return self.end(Failure::BadMappedAddress(mapped));
                }
                if lifetime.is_zero() {
                    return self.end(Failure::BadLifetime { method });
                }
                tracing::debug!(server = %self.server, %relayed, %mapped, ?lifetime, "TURN allocation made");
                self.phase = Phase::Allocated(Relay {
                    relayed,
                    mapped,
                    expires: t.first_sent + lifetime,
                    refresh_at: Some(t.first_sent + refresh_after(lifetime)),
                });
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
                if self.close_requested {
                    self.close_requested = false;
                    return self.close(now);
                }
                // Peers added while allocating, except those of the other
                // address family, which can never be reached from here.
                let wrong_family: Vec<IpAddr> = self
                    .permissions
                    .keys()
                    .filter(|ip| ip.is_ipv4() != relayed.is_ipv4())
                    .copied()
                    .collect();
                for ip in wrong_family {
                    self.remove_peer(now, ip);
                    self.events.push_back(TurnEvent::PermissionFailed {
                        peer: ip,
                        reason: Failure::Rejected {
                            method: "CreatePermission",
                            code: 443,
                            reason: "peer address family mismatch".into(),
                        },
                    });
                }
                let ips: Vec<IpAddr> = self.permissions.keys().copied().collect();
                for ip in ips {
                    self.start(now, Kind::Permission(ip), 0);
                }
                let peers: Vec<SocketAddr> = self.channels.keys().copied().collect();
                for peer in peers {
                    self.start(now, Kind::Channel(peer), 0);
                }
            }
            Kind::Refresh => {
                let Some(lifetime) = message.get_attribute::<Lifetime>() else {
                    return self.end(missing("LIFETIME"));
                };
                let lifetime = lifetime.lifetime();
                if lifetime.is_zero() {
                    return self.end(Failure::BadLifetime { method });
                }
                if let Phase::Allocated(relay) = &mut self.phase {
                    relay.expires = t.first_sent + lifetime;
                    relay.refresh_at = Some(t.first_sent + refresh_after(lifetime));
                }
                self.events.push_back(TurnEvent::Refreshed { lifetime });
            }
            Kind::Deallocate => self.finish(TurnEvent::Closed),
            // coturn keeps the old session a moment after deallocating;
            // an Allocate at once meets the same 437.
            Kind::Reclaim => self.allocate_at = Some(now + RECLAIM_PAUSE),
            Kind::Permission(ip) => {
                if let Some(p) = self.permissions.get_mut(&ip) {
                    p.refresh_at = Some(t.first_sent + PERMISSION_REFRESH);
                    if !p.installed {
                        p.installed = true;
                        self.events
                            .push_back(TurnEvent::PermissionCreated { peer: ip });
                    }
                }
            }
            Kind::Channel(peer) => {
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.refresh_at = Some(t.first_sent + CHANNEL_REFRESH);
                    if !c.bound {
                        c.bound = true;
                        let channel = c.number;
                        self.events
                            .push_back(TurnEvent::ChannelBound { peer, channel });
                    }
                }
            }
        }
    }

    fn error(&mut self, now: Instant, t: Transaction, message: &Msg) {
        let Some(error) = message.get_attribute::<ErrorCode>() else {
            let failure = Failure::MissingAttribute {
                method: t.kind.name(),
                attribute: "ERROR-CODE",
            };
            return self.request_failed(now, t.kind, failure);
        };
        let realm = message.get_attribute::<Realm>();
        let nonce = message.get_attribute::<Nonce>();
        match error.code() {
            401 => {
                if t.key.is_none() {
                    let (Some(realm), Some(nonce)) = (realm, nonce) else {
                        let failure = Failure::MissingAttribute {
                            method: t.kind.name(),
                            attribute: if realm.is_none() { "REALM" } else { "NONCE" },
                        };
                        return self.request_failed(now, t.kind, failure);
                    };
                    self.challenge = Some(Challenge {
                        realm: realm.clone(),
                        nonce: nonce.clone(),
                    });
                    return self.start(now, t.kind, 0);
                }
                self.update_challenge(realm, nonce);
                if let Some(next) = self.next_credentials.take() {
                    self.credentials = next;
                    self.generation += 1;
                }
                if t.generation != self.generation {
                    return self.start(now, t.kind, 0);
                }
                self.park(now, t.kind);
            }
            438 => {
                if nonce.is_none() || t.stale >= MAX_STALE_NONCE {
                    let failure = Failure::Rejected {
                        method: t.kind.name(),
                        code: 438,
                        reason: "stale nonce, and no usable new one".into(),
                    };
                    return self.request_failed(now, t.kind, failure);
                }
                self.update_challenge(realm, nonce);
                self.start(now, t.kind, t.stale + 1);
            }
            437 if t.kind == Kind::Allocate && !self.reclaimed => {
                // Our 5-tuple still has an allocation (a restart on the same
                // port): deallocate it once, then allocate afresh.
                tracing::debug!(server = %self.server, "TURN server has an old allocation for this address; deallocating it");
                self.reclaimed = true;
                self.start(now, Kind::Reclaim, 0);
            }
            code => {
                let failure = Failure::Rejected {
                    method: t.kind.name(),
                    code,
                    // coturn pads the phrase with NULs.
                    reason: error
                        .reason_phrase()
                        .trim_end_matches('\0')
                        .chars()
                        .take(128)
                        .collect(),
                };
                self.request_failed(now, t.kind, failure);
            }
        }
    }

    fn update_challenge(&mut self, realm: Option<&Realm>, nonce: Option<&Nonce>) {
        if let Some(challenge) = &mut self.challenge {
            if let Some(realm) = realm {
                challenge.realm = realm.clone();
            }
            if let Some(nonce) = nonce {
                challenge.nonce = nonce.clone();
            }
        }
    }

    /// A request whose credentials were refused waits for new ones.
    fn park(&mut self, now: Instant, kind: Kind) {
        if kind == Kind::Deallocate {
            return self.finish(TurnEvent::Closed);
        }
        if !self.parked.contains(&kind) {
            self.parked.push(kind);
        }
        if self.parked_since.is_none() {
            self.parked_since = Some(now);
            tracing::debug!(server = %self.server, "TURN server refused the credentials; asking for new ones");
            self.events.push_back(TurnEvent::CredentialsNeeded);
        }
    }

    fn request_failed(&mut self, _now: Instant, kind: Kind, failure: Failure) {
        match kind {
            Kind::Allocate | Kind::Refresh | Kind::Reclaim => self.end(failure),
            Kind::Deallocate => self.finish(TurnEvent::Closed),
            Kind::Permission(ip) => {
                if matches!(
                    failure,
                    Failure::Rejected {
                        code: 437 | 441,
                        ..
                    }
                ) {
                    return self.end(failure);
                }
                self.permissions.remove(&ip);
                self.events.push_back(TurnEvent::PermissionFailed {
                    peer: ip,
                    reason: failure,
                });
            }
            Kind::Channel(peer) => {
                if matches!(
                    failure,
                    Failure::Rejected {
                        code: 437 | 441,
                        ..
                    }
                ) {
                    return self.end(failure);
                }
                if let Some(c) = self.channels.remove(&peer) {
                    self.channel_peers.remove(&c.number);
                }
                self.events.push_back(TurnEvent::ChannelBindFailed {
                    peer,
                    reason: failure,
                });
            }
        }
    }

    /// The allocation failed (never existed) or was lost.
    fn end(&mut self, failure: Failure) {
        let event = match self.phase {
            Phase::Allocating => TurnEvent::AllocationFailed(failure),
            Phase::Allocated(_) => TurnEvent::AllocationLost(failure),
            Phase::Closing => TurnEvent::Closed,
            Phase::Done => return,
        };
        tracing::debug!(server = %self.server, ?event, "TURN allocation ended");
        self.finish(event);
    }

    fn finish(&mut self, event: TurnEvent) {
        self.phase = Phase::Done;
        self.transactions.clear();
        self.parked.clear();
        self.parked_since = None;
        self.transmits.clear();
        self.events.push_back(event);
    }
}

/// The wait after the `sends`-th send of a request.
/// How requests are retransmitted: the first timeout, doubling after each
/// send, `max_sends` sends, then 16 × `rto` for the last answer. The
/// default is RFC 8489's (500 ms, 7 sends: given up after 39.5 s); a caller
/// that keeps a second relay can choose a tighter budget to fail over
/// sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmission {
    pub rto: Duration,
    pub max_sends: u32,
}

impl Default for Retransmission {
    fn default() -> Self {
        Self {
            rto: RTO,
            max_sends: MAX_SENDS,
        }
    }
}

impl Retransmission {
    /// The wait after the `sends`-th send of a request.
    fn wait(self, sends: u32) -> Duration {
        if sends >= self.max_sends {
            self.rto * 16
        } else {
            // Capped so a silly max_sends can't overflow the shift.
            self.rto * (1 << (sends - 1).min(16))
        }
    }

    /// How long a request lives without an answer before it is given up.
    pub fn budget(self) -> Duration {
        (1..=self.max_sends.max(1)).map(|n| self.wait(n)).sum()
    }
}

/// When to refresh something that lives `lifetime`: at 80 % or 60 s before
/// the end, whichever is earlier (for very short lifetimes, half-way).
fn refresh_after(lifetime: Duration) -> Duration {
    let eighty = lifetime * 4 / 5;
    match lifetime.checked_sub(Duration::from_secs(60)) {
        Some(before) if !before.is_zero() => eighty.min(before),
        _ => lifetime / 2,
    }
}

/// An address a peer or relay may have.
pub(crate) fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fn random_id() -> TransactionId {
    TransactionId::new(rand::random())
}
