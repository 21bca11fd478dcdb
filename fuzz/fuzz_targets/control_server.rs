//! Fuzz target: arbitrary bytes as a control WebSocket text message from a
//! device or an agent to the coordinator (`ClientMessage`), through the
//! decoder and the checks the coordinator applies before it stores anything
//! and pushes it to other peers (`warren_proto::checks`). Nothing may panic;
//! what the checks accept obeys every limit (a WireGuard key, short text, at
//! most `MAX_ENDPOINTS` usable endpoints); a refusal is short (it never echoes
//! the input back) and names what to do; a decoded message survives a round
//! trip.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use warren_proto::checks::{check_endpoints, check_register, Sender};
use warren_proto::control::{ApiError, ClientMessage};
use warren_proto::limits::{check_endpoint, MAX_ENDPOINTS, MAX_TEXT_BYTES};

const SENDERS: [Sender; 3] = [Sender::Agent, Sender::Device, Sender::Admin];

/// A refusal is a fixed reason plus at most one endpoint or a length: never
/// the client's text.
fn check_refusal(e: &ApiError) {
    assert!(!e.error.is_empty());
    assert!(e.message.len() < 512, "refusal too long: {}", e.message);
}

fn check_accepted_endpoints(endpoints: &[SocketAddr], allow_local: bool) {
    assert!(endpoints.len() <= MAX_ENDPOINTS);
    for ep in endpoints {
        assert!(check_endpoint(*ep, allow_local).is_ok());
        // Nothing accepted is ever unusable, even on loopback.
        let ip = ep.ip().to_canonical();
        assert!(!ip.is_unspecified() && !ip.is_multicast() && ep.port() != 0);
        if !allow_local {
            assert!(!ip.is_loopback(), "{ep} accepted off loopback");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time the coordinator sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = serde_json::from_str::<ClientMessage>(text) else {
        return;
    };
    let again: ClientMessage =
        serde_json::from_str(&serde_json::to_string(&msg).expect("encodes")).expect("decodes");
    assert_eq!(msg, again, "round trip changed the message");
    for sender in SENDERS {
        for allow_local in [false, true] {
            match &msg {
                ClientMessage::Register(reg) => match check_register(reg, sender, allow_local) {
                    Ok(()) => {
                        let key = base64::engine::general_purpose::STANDARD
                            .decode(&reg.public_key)
                            .expect("an accepted key is base64");
                        assert_eq!(key.len(), 32);
                        assert!(reg.hostname.as_deref().unwrap_or("").len() <= MAX_TEXT_BYTES);
                        assert!(reg.app_version.len() <= MAX_TEXT_BYTES);
                        check_accepted_endpoints(&reg.endpoints, allow_local);
                    }
                    Err(e) => check_refusal(&e),
                },
                ClientMessage::Endpoints { endpoints } => {
                    match check_endpoints(endpoints, sender, allow_local) {
                        Ok(()) => check_accepted_endpoints(endpoints, allow_local),
                        Err(e) => check_refusal(&e),
                    }
                }
            }
        }
    }
});
