//! Fuzz target: STUN and TURN from the network into the path layer. Two
//! receivers: a TURN `Allocation` talking to its server, and `Paths` (the
//! agent's role: connectivity checks with a peer, one relay, the shared
//! socket).
//!
//! Operations are `[op][len: u16 BE][bytes]`. The server's answers come raw,
//! or (op bit 2) with the transaction id of the client's latest request, or
//! (op bit 3) decoded, re-addressed to that transaction and signed with the
//! client's long-term credential (realm `fuzz`), so the fuzzer gets past
//! MESSAGE-INTEGRITY into the allocation's state machine. Nothing may panic;
//! the allocation only ever sends to its server; the client's own messages
//! decode; relayed data comes only from a peer with a channel or permission;
//! state stays bounded.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stun_codec::rfc5389::attributes::{Nonce, Realm, Username};
use stun_codec::{Message, TransactionId};
use warren_path::turn::msg::{self, Attr, Key};
use warren_path::turn::{Allocation, Credentials};
use warren_path::{classify, Datagram, Incoming, Paths, RelayServer, Role};

const USER: &str = "4102444800:device-1";
const PASSWORD: &str = "fuzz-password";

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 3478);
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), 51820);
const STRANGER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 9999);

fn credentials() -> Credentials {
    Credentials::new(USER, PASSWORD).expect("a short username")
}

fn key() -> Key {
    Key {
        username: Username::new(USER.into()).expect("a short username"),
        realm: Realm::new("fuzz".into()).expect("a short realm"),
        password: PASSWORD.into(),
    }
}

/// `bytes` decoded as a STUN message, moved to transaction `id` and signed
/// as the server would sign it; `None` if they don't decode.
fn signed_answer(bytes: &[u8], id: TransactionId) -> Option<Vec<u8>> {
    let decoded = msg::decode(bytes).ok()?;
    let mut answer: msg::Msg = Message::new(decoded.class(), decoded.method(), id);
    let mut nonce = None;
    for attr in decoded.attributes() {
        match attr {
            Attr::MessageIntegrity(_)
            | Attr::Fingerprint(_)
            | Attr::Username(_)
            | Attr::Realm(_) => {}
            Attr::Nonce(n) => nonce = Some(n.clone()),
            other => answer.add_attribute(other.clone()),
        }
    }
    let nonce = nonce.unwrap_or_else(|| Nonce::new("nonce".into()).expect("a short nonce"));
    msg::sign_and_encode(answer, Some((&key(), &nonce))).ok()
}

/// The transaction id of a STUN message we sent.
fn transaction(payload: &[u8]) -> Option<TransactionId> {
    match classify(payload) {
        Ok(Datagram::Stun(m)) => msg::decode(m).ok().map(|m| m.transaction_id()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut turn = Allocation::new(now, SERVER, credentials());
    let mut paths = Paths::new(Role::Agent, [2; 32]);
    paths.set_host_candidates(now, vec![SocketAddr::from(([192, 0, 2, 1], 51820))]);
    paths.set_relays(
        now,
        vec![RelayServer {
            name: "relay.fuzz:3478".into(),
            server: SERVER,
            credentials: credentials(),
        }],
    );
    let peer_key =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([1; 32])).to_bytes();
    paths.upsert_peer(now, peer_key, &[PEER]);

    let mut last_request: Option<TransactionId> = None;
    for (op, bytes) in warren_fuzz::ops(data) {
        // What the client sent so far: only to its server, and its own STUN
        // messages decode (a peer-facing bug would show here first).
        while let Some(t) = turn.poll_transmit() {
            assert_eq!(t.dst, SERVER, "the allocation sent elsewhere");
            if let Some(id) = transaction(&t.payload) {
                last_request = Some(id);
            } else {
                assert!(
                    matches!(classify(&t.payload), Ok(Datagram::ChannelData { .. })),
                    "the allocation sent something that is neither STUN nor ChannelData"
                );
            }
        }

        match op % 4 {
            // From the TURN server.
            0 => {
                let mut datagram = bytes.to_vec();
                if op & 8 != 0 {
                    if let Some(signed) = last_request.and_then(|id| signed_answer(bytes, id)) {
                        datagram = signed;
                    }
                } else if op & 4 != 0 && datagram.len() >= 20 {
                    if let Some(id) = last_request {
                        datagram[8..20].copy_from_slice(id.as_bytes());
                    }
                }
                if let Ok(Some(relayed)) = turn.handle_input(now, SERVER, &datagram) {
                    let ip = relayed.peer.ip();
                    assert!(
                        turn.has_permission(ip) || turn.is_channel_bound(relayed.peer),
                        "relayed data from {} with no permission",
                        relayed.peer
                    );
                }
            }
            // The client's own requests: permissions, channels, refresh, close.
            1 => {
                let peer = SocketAddr::from((
                    [203, 0, 113, bytes.first().copied().unwrap_or(5) % 4],
                    51820,
                ));
                match op >> 2 & 3 {
                    0 => {
                        let _ = turn.create_permission(now, peer.ip());
                    }
                    1 => {
                        let _ = turn.bind_channel(now, peer);
                    }
                    2 => turn.refresh(now),
                    _ => turn.remove_peer(now, peer.ip()),
                }
                if op & 0x40 != 0 {
                    turn.close(now);
                }
                if let Ok(t) = turn.encapsulate(peer, bytes) {
                    assert_eq!(t.dst, SERVER);
                }
            }
            // The shared socket of the path layer, from the relay, the peer or
            // a stranger.
            2 => {
                let from = [SERVER, PEER, STRANGER][usize::from(op >> 2) % 3];
                let mut datagram = bytes.to_vec();
                if op & 0x20 != 0 && datagram.len() >= 20 {
                    if let Some(id) = last_request {
                        datagram[8..20].copy_from_slice(id.as_bytes());
                    }
                }
                if let Incoming::WireGuard {
                    from: peer,
                    payload,
                } = paths.handle_datagram(now, from, &datagram)
                {
                    assert!(payload.len() <= datagram.len());
                    // WireGuard comes straight from a peer, or unwrapped from
                    // the relay on behalf of one.
                    assert!(peer != SERVER || from != SERVER);
                }
            }
            // Time passes.
            _ => {
                let secs = u64::from(bytes.first().copied().unwrap_or(1));
                now += Duration::from_secs(secs);
                turn.handle_timeout(now);
                paths.handle_timeout(now);
            }
        }
        while turn.poll_event().is_some() {}
        while paths.poll_event().is_some() {}
        while let Some(t) = paths.poll_transmit() {
            // The path layer sends to the relay, the peer, or its candidates.
            assert!(
                t.dst == SERVER || t.dst == PEER,
                "the path layer sent to {}",
                t.dst
            );
        }
    }
});
