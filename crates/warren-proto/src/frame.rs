//! Length-prefixed JSON framing for the IPC channel.
//!
//! A frame is a 4-byte big-endian payload length followed by one JSON object.
//! Frames whose payload exceeds [`MAX_FRAME_LEN`] are refused on both sides:
//! the encoder will not produce one and the decoder rejects the header before
//! buffering the payload, so a hostile peer cannot make us allocate more.

use serde::{de::DeserializeOwned, Serialize};

/// Largest payload accepted or produced (1 MiB).
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The payload is not a valid message. The text names only the kind of
    /// problem and where it is, never the payload's content (which may hold a
    /// token).
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Serializes `msg` into one complete frame (header + payload).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut out, msg).map_err(|e| FrameError::Malformed(describe(&e)))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // len <= MAX_FRAME_LEN < u32::MAX, so the cast is lossless.
    out[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Parses a frame's payload (without the header) into a message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME_LEN,
        });
    }
    serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(describe(&e)))
}

/// Reads the payload length from a header, refusing oversize frames.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// A serde_json error described without echoing any input.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "invalid JSON",
        Category::Data => "JSON does not match any known message",
        Category::Eof => "JSON ends early",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// Incremental decoder: feed bytes as they arrive, take whole frames out.
///
/// After an error the stream is out of sync and the decoder stays failed;
/// the caller reports the error and closes the connection.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Takes the next complete payload, if one has arrived.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.buf[..HEADER_LEN]);
        let len = match payload_len(header) {
            Ok(len) => len,
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                return Err(e);
            }
        };
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(payload))
    }

    /// Takes and parses the next complete message, if one has arrived. A
    /// malformed payload is reported but does not desynchronize the stream.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_payload()? {
            Some(p) => decode_payload(&p).map(Some),
            None => Ok(None),
        }
    }

    /// Bytes received but not yet returned as a frame (a truncated frame at
    /// end of stream leaves this non-zero).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{ClientMessage, Hello, Request};
    use crate::Secret;

    #[test]
    fn round_trip_one_frame() {
        let msg = ClientMessage::Request {
            id: 7,
            request: Request::Start {
                url: "https://c.example".into(),
                token: Secret::new("t"),
                ca: None,
                deployment: None,
            },
        };
        let bytes = encode(&msg).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&bytes[..3]);
        assert_eq!(d.next_message::<ClientMessage>().unwrap(), None);
        d.push(&bytes[3..]);
        assert_eq!(d.next_message::<ClientMessage>().unwrap(), Some(msg));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversize_header_is_refused_before_buffering() {
        let mut d = FrameDecoder::new();
        d.push(&(2u32 * 1024 * 1024).to_be_bytes());
        assert!(matches!(
            d.next_payload(),
            Err(FrameError::TooLarge { len, .. }) if len == 2 * 1024 * 1024
        ));
        // Stays failed: the stream is out of sync.
        d.push(b"{}");
        assert!(d.next_payload().is_err());
    }

    #[test]
    fn encoder_refuses_oversize_messages() {
        let hello = Hello::new("x".repeat(MAX_FRAME_LEN));
        assert!(matches!(
            encode(&ClientMessage::Hello(hello)),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_error_never_echoes_input() {
        let payload =
            br#"{"type":"request","id":1,"request":{"op":"start","url":"u","token":12345678}}"#;
        let err = decode_payload::<ClientMessage>(payload).unwrap_err();
        assert!(!err.to_string().contains("12345678"), "{err}");
        let payload = br#"{"type":"hello","protocol":"sekrit-token-value"}"#;
        let err = decode_payload::<ClientMessage>(payload).unwrap_err();
        assert!(!err.to_string().contains("sekrit"), "{err}");
    }
}
