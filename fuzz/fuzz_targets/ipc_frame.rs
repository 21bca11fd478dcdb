//! Fuzz target: arbitrary bytes through the IPC frame decoder (the helper's
//! socket or pipe, as a byte stream in two uneven pieces) and both sides'
//! message decoders (`ClientMessage` from a GUI or CLI, `HelperMessage` from
//! the helper). Nothing may panic, and any message that decodes must
//! re-encode to a frame that decodes to the same message (so the helper and
//! the GUI can never disagree about what was said). The control messages
//! have targets of their own: `control_client` and `control_server`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use warren_proto::frame::{decode_payload, encode, FrameDecoder, FrameError, MAX_FRAME_LEN};
use warren_proto::ipc;

/// Decodes `payload` as `T`; if it is a message, checks the round trip.
fn check<T>(payload: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok(msg) = decode_payload::<T>(payload) else {
        return;
    };
    let frame = match encode(&msg) {
        Ok(frame) => frame,
        // Re-encoding may grow the text (escapes), past the cap; that is
        // a refusal, not a bug.
        Err(FrameError::TooLarge { .. }) => return,
        Err(e) => panic!("decoded message does not re-encode: {e}"),
    };
    let mut decoder = FrameDecoder::new();
    decoder.push(&frame);
    let again: T = decoder
        .next_message()
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is complete");
    assert_eq!(msg, again, "round trip changed the message");
    assert_eq!(decoder.pending(), 0);
}

fn check_all(payload: &[u8]) {
    check::<ipc::ClientMessage>(payload);
    check::<ipc::HelperMessage>(payload);
}

fuzz_target!(|data: &[u8]| {
    // The raw input as one payload.
    check_all(data);

    // The raw input as a byte stream, fed in two uneven pieces, as it would
    // arrive from a socket.
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut decoder = FrameDecoder::new();
    decoder.push(&data[..split]);
    let mut frames = 0usize;
    let mut fed_rest = false;
    loop {
        match decoder.next_payload() {
            Ok(Some(payload)) => {
                assert!(payload.len() <= MAX_FRAME_LEN);
                check_all(&payload);
                frames += 1;
                // Each frame is at least a header; bounds the loop.
                assert!(frames <= data.len() / 4 + 1);
            }
            Ok(None) if !fed_rest => {
                decoder.push(&data[split..]);
                fed_rest = true;
            }
            Ok(None) => break,
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > max);
                // A failed decoder stays failed.
                assert!(decoder.next_payload().is_err());
                break;
            }
            Err(e) => panic!("next_payload only fails on size: {e}"),
        }
    }
    assert!(decoder.pending() <= data.len());
});
