//! The public vocabulary of the tunnel core: peer configuration, what the
//! driver must send, why a packet was dropped, events, statistics and counters.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A WireGuard public key (Curve25519, 32 bytes). Public keys are not secret
/// and may be logged; private keys never leave [`crate::Tunnel`].
pub type PeerKey = [u8; 32];

/// Short printable form of a public key for log lines: the first 8 characters
/// of its standard base64 encoding, as `wg show` users recognise it.
pub fn key_id(key: &PeerKey) -> String {
    use base64::Engine as _;
    let mut s = base64::engine::general_purpose::STANDARD.encode(key);
    s.truncate(8);
    s
}

/// Parses a public key in the standard base64 form the coordinator and `wg`
/// use (surrounding whitespace ignored); `None` unless it is exactly 32 bytes.
pub fn parse_key(b64: &str) -> Option<PeerKey> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    raw.try_into().ok()
}

/// What the table knows about one peer (one agent on the helper, one client
/// device on the agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's WireGuard public key; the table is keyed by it.
    pub public_key: PeerKey,
    /// The peer's tunnel addresses. Each one is a host route (/32 or /128):
    /// packets to it go to this peer, and packets from this peer must come from
    /// one of them.
    pub addresses: Vec<IpAddr>,
    /// Where to send to, if known. Replaced by the source address of every
    /// authenticated datagram from the peer (roaming).
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive after this many seconds without sending anything
    /// (keeps NAT mappings open). `None` or `Some(0)` disables it.
    pub persistent_keepalive: Option<u16>,
    /// Every address the directory lists for the peer (`endpoint` is the
    /// first). The table itself sends only to `endpoint`; the path layer
    /// checks all of them and then pins `endpoint` to the one that works.
    pub candidates: Vec<SocketAddr>,
}

/// A datagram to send, borrowing the caller's buffer (data path, no allocation).
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The peer's UDP endpoint.
    pub dst: SocketAddr,
    /// The WireGuard message.
    pub payload: &'a [u8],
}

/// A datagram to send that the tunnel produced on its own (handshakes,
/// keepalives, cookie replies, packets queued before a handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTransmit {
    /// The peer's UDP endpoint (or, for a cookie reply, the sender's address).
    pub dst: SocketAddr,
    /// The WireGuard message.
    pub payload: Vec<u8>,
}

/// Why a packet or datagram was not passed on. Every drop is also counted in
/// [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// The packet (from the TUN, or decrypted from a peer) is not a
    /// well-formed IPv4 or IPv6 packet.
    #[error("the packet is not a valid IPv4 or IPv6 packet")]
    MalformedPacket,
    /// No peer has the packet's destination address.
    #[error("no peer has the packet's destination address")]
    UnknownDestination,
    /// The peer has no known endpoint yet, so there is nowhere to send to.
    #[error("the peer has no known endpoint yet")]
    NoEndpoint,
    /// The output buffer is smaller than [`crate::min_out_len`] requires.
    #[error("the output buffer is too small; size it with Tunnel::min_out_len")]
    BufferTooSmall,
    /// The datagram is not a WireGuard message for this tunnel (garbage, wrong
    /// size, bad MAC, unknown receiver index).
    #[error("the datagram is not a WireGuard message for this tunnel")]
    Invalid,
    /// A handshake from a public key that is not in the peer table.
    #[error("handshake from a public key that is not a configured peer")]
    UnknownPeer,
    /// The message failed authentication or is a replay (duplicate counter,
    /// old handshake timestamp, no session for it).
    #[error("the message failed authentication or is a replay")]
    Rejected,
    /// The decrypted packet's source address is not one of the sending peer's
    /// addresses.
    #[error("the decrypted packet's source is not one of the peer's addresses")]
    SourceNotAllowed,
    /// The decrypted packet's destination is not one of this side's own
    /// tunnel addresses ([`crate::Tunnel::set_local_addresses`]): a peer may
    /// only talk to this device, never through it (a laptop with IP
    /// forwarding on would otherwise pass the packet into its LAN or
    /// containers).
    #[error("the decrypted packet's destination is not one of this side's tunnel addresses")]
    DestinationNotLocal,
}

/// Something that happened to a peer, for the driver to report (status,
/// notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// A handshake completed and a fresh session is in use.
    HandshakeCompleted {
        /// The peer.
        peer: PeerKey,
        /// Whether this side sent the initiation.
        initiator: bool,
    },
    /// The latest session is older than 180 s (REJECT_AFTER_TIME) and no newer
    /// handshake happened: the peer is stale until traffic re-handshakes.
    SessionExpired {
        /// The peer.
        peer: PeerKey,
    },
    /// All keys of the peer were dropped: handshake attempts gave up after
    /// 90 s, or 540 s passed without a new handshake. Packets still queued for
    /// it were dropped.
    ConnectionExpired {
        /// The peer.
        peer: PeerKey,
        /// How many queued packets were dropped.
        dropped: usize,
    },
    /// An authenticated datagram came from a new address; replies go there now.
    EndpointChanged {
        /// The peer.
        peer: PeerKey,
        /// The new endpoint.
        endpoint: SocketAddr,
    },
}

/// Per-peer statistics. Times are in the caller's clock (the `now` it passes);
/// the driver converts them to wall-clock time for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// When the latest handshake completed, if any.
    pub last_handshake: Option<Instant>,
    /// Inner (decrypted) bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Round-trip time of the latest handshake this side initiated.
    pub rtt: Option<Duration>,
    /// Where datagrams to the peer go.
    pub endpoint: Option<SocketAddr>,
    /// Packets waiting for a handshake.
    pub queued: usize,
    /// Handshakes completed since the peer was added.
    pub handshakes: u64,
}

/// Table-wide counters of dropped packets. They only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets from the TUN that were not IPv4/IPv6.
    pub dropped_malformed: u64,
    /// Packets from the TUN to an address no peer has.
    pub dropped_unknown_destination: u64,
    /// Datagrams that could not be sent because the peer has no endpoint.
    pub dropped_no_endpoint: u64,
    /// Calls with an output buffer that was too small.
    pub dropped_buffer_too_small: u64,
    /// Queued packets pushed out by newer ones (the queue holds
    /// [`crate::MAX_QUEUED_PER_PEER`] per peer).
    pub dropped_queue_full: u64,
    /// Queued packets dropped because their peer was removed.
    pub dropped_on_peer_removal: u64,
    /// Queued packets dropped because the peer's connection expired.
    pub dropped_on_expiry: u64,
    /// Datagrams that were not WireGuard messages for us.
    pub dropped_invalid: u64,
    /// Handshakes from keys not in the table.
    pub dropped_unknown_peer: u64,
    /// Datagrams that failed authentication or were replays.
    pub dropped_rejected: u64,
    /// Decrypted packets whose source is not one of the peer's addresses.
    pub dropped_source_not_allowed: u64,
    /// Decrypted packets whose destination is not one of this side's own
    /// tunnel addresses.
    pub dropped_destination_not_local: u64,
    /// Events discarded because the driver did not drain `poll_event`.
    pub dropped_events: u64,
    /// Datagrams discarded because the driver did not drain `poll_transmit`.
    pub dropped_transmits: u64,
}

/// Why a peer configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The peer's key is this tunnel's own public key.
    #[error("peer {0} has this device's own public key; the coordinator sent a bad peer list — reconnect, and report it if it persists")]
    OwnKey(String),
    /// The table is full.
    #[error("the peer table is full ({0} peers); remove peers before adding more")]
    TooManyPeers(usize),
}

impl DropReason {
    /// The counter this reason increments.
    pub(crate) fn count(self, c: &mut Counters) {
        let slot = match self {
            DropReason::MalformedPacket => &mut c.dropped_malformed,
            DropReason::UnknownDestination => &mut c.dropped_unknown_destination,
            DropReason::NoEndpoint => &mut c.dropped_no_endpoint,
            DropReason::BufferTooSmall => &mut c.dropped_buffer_too_small,
            DropReason::Invalid => &mut c.dropped_invalid,
            DropReason::UnknownPeer => &mut c.dropped_unknown_peer,
            DropReason::Rejected => &mut c.dropped_rejected,
            DropReason::SourceNotAllowed => &mut c.dropped_source_not_allowed,
            DropReason::DestinationNotLocal => &mut c.dropped_destination_not_local,
        };
        *slot += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_key_takes_exactly_32_bytes_of_base64() {
        let key = [7u8; 32];
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(parse_key(&format!(" {b64}\n")), Some(key));
        assert_eq!(parse_key("not base64!"), None);
        assert_eq!(parse_key("AAAA"), None);
        assert_eq!(parse_key(""), None);
    }
}
