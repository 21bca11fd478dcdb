//! Fuzz target: arbitrary bytes through the shared socket's demultiplexer.
//! Every datagram gets a typed answer, never a panic; what is accepted obeys
//! its protocol's header rule, and relayed data unwraps to an answer too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_path::demux::{classify, Datagram, CHANNEL_HEADER, CHANNEL_NUMBERS, STUN_HEADER};

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        Ok(Datagram::WireGuard(m)) => {
            assert_eq!(m.len(), data.len());
            assert!((1..=4).contains(&m[0]) && m[1..4] == [0, 0, 0]);
        }
        Ok(Datagram::Stun(m)) => {
            assert!(m.len() >= STUN_HEADER && m.len() % 4 == 0);
            assert!(m[0] < 0x40);
        }
        Ok(Datagram::ChannelData { channel, payload }) => {
            assert!(CHANNEL_NUMBERS.contains(&channel));
            assert!(data.len() - CHANNEL_HEADER - payload.len() < 4);
            // The relayed datagram is the peer's own: classify it as well.
            let _ = classify(payload);
        }
        Err(e) => {
            // Every refusal can be shown.
            let _ = e.to_string();
        }
    }
});
