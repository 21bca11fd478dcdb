//! Warren's WireGuard data plane core: a sans-IO peer table over boringtun.
//!
//! [`Tunnel`] holds one boringtun `Tunn` per peer (one per agent on the
//! helper, one per client device on the agent), keyed by public key. It does
//! no IO and reads no clock: the driver passes `now` into every call, moves
//! packets between the TUN (or a userspace stack) and one UDP socket, and
//! sleeps until [`Tunnel::poll_timeout`].
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     select! {
//!         packet from TUN     => match tunnel.encapsulate(now, &packet, &mut buf) {
//!                                    Ok(Some(t)) => udp.send_to(t.payload, t.dst),
//!                                    Ok(None)    => {}          // queued until the handshake
//!                                    Err(reason) => {}          // dropped and counted
//!                                },
//!         (datagram, from)    => if let Ok(Some(packet)) =
//!                                    tunnel.decapsulate(now, from, &datagram, &mut buf) {
//!                                    tun.write(packet)
//!                                },
//!         sleep_until(tunnel.poll_timeout()) => tunnel.handle_timeout(now),
//!         coordinator update  => tunnel.set_peers(now, snapshot) / upsert_peer / remove_peer,
//!     }
//!     while let Some(t) = tunnel.poll_transmit() { udp.send_to(&t.payload, t.dst) }
//!     while let Some(e) = tunnel.poll_event()    { report(e) }
//! }
//! ```
//!
//! Buffers are the caller's and are reused: size them with [`min_out_len`].
//! On the data path (a peer with a session) `encapsulate` and `decapsulate`
//! allocate nothing and take no lock of ours (boringtun itself takes one
//! uncontended mutex for the replay window of each received packet). The
//! allocating [`Tunnel::poll_transmit`] queue only carries handshakes,
//! keepalives, cookie replies and packets that waited for a handshake.
//!
//! # Routing
//!
//! * Outbound: by the packet's destination address, which must be one of a
//!   peer's [`PeerConfig::addresses`] (host routes). Anything else is
//!   [`DropReason::UnknownDestination`].
//! * Inbound: handshake responses, cookies and data by the receiver index
//!   (its upper 24 bits name the peer's `Tunn`); initiations by the
//!   initiator's static key, after the MAC and load check. A decrypted packet
//!   must come from one of the sending peer's addresses and go to one of this
//!   side's own ([`Tunnel::set_local_addresses`]; none set drops them all),
//!   so a peer can never use this device as a router.
//! * Roaming: every authenticated datagram moves the peer's endpoint to its
//!   source address ([`TunnelEvent::EndpointChanged`]); garbage and replays
//!   never do.
//!
//! # Timers
//!
//! boringtun expects `update_timers` every 250 ms. Instead the table mirrors
//! boringtun's timer state and schedules each peer at the next instant one of
//! WireGuard's rules can fire (handshake retry 5 s, passive keepalive 10 s,
//! rekey 120 s, session expiry 180 s, key zeroing 540 s, persistent
//! keepalive). After a handshake with no traffic the next deadline is the
//! session expiry, 180 s later. While traffic flows, boringtun's clock is
//! refreshed at most every 250 ms from the data path itself.
//!
//! boringtun reads its own clock (`CLOCK_BOOTTIME`, which counts suspend);
//! pass `std::time::Instant::now()` as `now`. Its timers then come due no
//! later than ours, which is the safe direction.
//!
//! # Tests
//!
//! `cargo test -p warren-tunnel` covers what needs no time travel (routing,
//! queuing, drops and counters, snapshots, keys, an allocation-free data
//! path). The timer behaviour (retries, give-up, rekey, expiry, roaming,
//! keepalives, idle wake-ups) runs in simulated time in the separate crate
//! `crates/warren-tunnel/simtests`, which builds boringtun with its
//! `mock-instant` clock; it has its own workspace so that feature can never
//! reach a real binary: `cargo test --manifest-path
//! crates/warren-tunnel/simtests/Cargo.toml`. Throughput:
//! `cargo run --release -p warren-tunnel --example throughput`.
//!
//! # Keys
//!
//! [`Tunnel::generate`] makes a fresh key pair; the helper builds a new table
//! whenever its session resets, so each session registers a new public key.
//! The private key never leaves the table and never appears in its `Debug`
//! output or logs.

mod fasthash;
mod peer;
mod timers;
mod tunnel;
mod types;

pub use boringtun::x25519::StaticSecret;
pub use timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
    ZERO_KEYS_AFTER,
};
pub use tunnel::{
    min_out_len, Tunnel, DATA_OVERHEAD, HANDSHAKE_RATE_LIMIT, MAX_PEERS, MAX_QUEUED_PER_PEER,
    MIN_BUFFER,
};
pub use types::{
    key_id, parse_key, ConfigError, Counters, DropReason, OwnedTransmit, PeerConfig, PeerKey,
    PeerStats, Transmit, TunnelEvent,
};
