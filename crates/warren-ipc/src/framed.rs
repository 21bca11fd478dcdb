//! Async length-prefixed JSON framing over any byte stream.
//!
//! Wraps [`warren_proto::frame`] for tokio readers and writers. The reader
//! keeps its partial input inside the struct, so [`FramedReader::read`] is
//! cancel-safe: it can sit in a `tokio::select!` next to a shutdown signal or
//! an event queue without ever losing half a frame.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warren_proto::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The header announced more than the cap. The stream is out of sync and
    /// unusable afterwards: reply with an error and close.
    #[error("the other side sent a frame of {len} bytes, more than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// A whole frame arrived but is not a message we understand. The stream is
    /// still in sync: the caller may reply and carry on. The text never quotes
    /// the payload (which may hold a token).
    #[error("the other side sent a malformed message: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("the connection closed in the middle of a message")]
    Truncated,
    #[error("could not read from the connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The message would exceed the frame cap; nothing was written.
    #[error("message of {len} bytes is larger than the {max}-byte frame limit")]
    TooLarge { len: usize, max: usize },
    /// The message could not be serialized, or a pre-encoded frame's header
    /// does not match its length; nothing was written.
    #[error("could not encode the message: {0}")]
    Encode(String),
    #[error("could not write to the connection: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for WriteError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => WriteError::TooLarge { len, max },
            FrameError::Malformed(m) => WriteError::Encode(m),
        }
    }
}

/// Reads whole frames from a byte stream.
pub struct FramedReader<R> {
    inner: R,
    /// Bytes received but not yet returned as a frame.
    buf: Vec<u8>,
    /// Set after an oversize header: the stream can no longer be parsed.
    desynced: Option<(usize, usize)>,
}

impl<R> std::fmt::Debug for FramedReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedReader")
            .field("buffered", &self.buf.len())
            .field("desynced", &self.desynced.is_some())
            .finish()
    }
}

/// How much to ask the OS for when we don't yet know the frame's size.
const READ_CHUNK: usize = 8 * 1024;

impl<R: AsyncRead + Unpin> FramedReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            desynced: None,
        }
    }

    /// Reads the next message. `Ok(None)` on clean EOF at a frame boundary.
    ///
    /// Cancel-safe: dropping the future keeps any partial frame buffered.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        match self.read_payload().await? {
            Some(payload) => match frame::decode_payload(&payload) {
                Ok(msg) => Ok(Some(msg)),
                Err(FrameError::Malformed(m)) => Err(ReadError::Malformed(m)),
                Err(FrameError::TooLarge { len, max }) => Err(ReadError::TooLarge { len, max }),
            },
            None => Ok(None),
        }
    }

    /// Reads the next raw payload (without header). `Ok(None)` on clean EOF.
    pub async fn read_payload(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some((len, max)) = self.desynced {
                return Err(ReadError::TooLarge { len, max });
            }
            let mut wanted = HEADER_LEN;
            if self.buf.len() >= HEADER_LEN {
                let mut header = [0u8; HEADER_LEN];
                header.copy_from_slice(&self.buf[..HEADER_LEN]);
                let len = match frame::payload_len(header) {
                    Ok(len) => len,
                    Err(FrameError::TooLarge { len, max }) => {
                        self.desynced = Some((len, max));
                        self.buf = Vec::new();
                        return Err(ReadError::TooLarge { len, max });
                    }
                    Err(FrameError::Malformed(m)) => return Err(ReadError::Malformed(m)),
                };
                wanted = HEADER_LEN + len;
                if self.buf.len() >= wanted {
                    let payload = self.buf[HEADER_LEN..wanted].to_vec();
                    self.buf.drain(..wanted);
                    return Ok(Some(payload));
                }
            }
            // Room for the rest of this frame (bounded by the cap) or a chunk.
            let missing = wanted - self.buf.len();
            self.buf.reserve(missing.max(READ_CHUNK));
            // `read_buf` is cancel-safe: if it doesn't complete, nothing was read.
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes whole frames to a byte stream.
///
/// A write is not cancel-safe (a cancelled write may leave half a frame on
/// the wire); callers that need a timeout should drop the connection when it
/// fires.
pub struct FramedWriter<W> {
    inner: W,
}

impl<W> std::fmt::Debug for FramedWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedWriter").finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin> FramedWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    /// Encodes and sends one message, then flushes.
    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), WriteError> {
        let bytes = frame::encode(msg)?;
        self.send(&bytes).await
    }

    /// Sends an already-encoded frame (header included), e.g. one produced
    /// once by [`warren_proto::frame::encode`] and fanned out to many
    /// subscribers. The header must match the payload length.
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), WriteError> {
        if frame.len() < HEADER_LEN {
            return Err(WriteError::Encode(format!(
                "a frame needs a {HEADER_LEN}-byte header, got {} bytes",
                frame.len()
            )));
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&frame[..HEADER_LEN]);
        let announced = u32::from_be_bytes(header) as usize;
        let actual = frame.len() - HEADER_LEN;
        if actual > MAX_FRAME_LEN {
            return Err(WriteError::TooLarge {
                len: actual,
                max: MAX_FRAME_LEN,
            });
        }
        if announced != actual {
            return Err(WriteError::Encode(format!(
                "frame header says {announced} bytes but {actual} follow"
            )));
        }
        self.send(frame).await
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.inner.write_all(bytes).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Shuts down the write half (the peer sees EOF).
    pub async fn shutdown(&mut self) -> Result<(), WriteError> {
        self.inner.shutdown().await?;
        Ok(())
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Reader half of an accepted or connected IPC stream, whatever the OS.
pub type BoxedReader = FramedReader<Box<dyn AsyncRead + Send + Unpin>>;
/// Writer half of an accepted or connected IPC stream, whatever the OS.
pub type BoxedWriter = FramedWriter<Box<dyn AsyncWrite + Send + Unpin>>;

/// Boxes the two halves of a stream into the OS-independent framed types.
pub fn boxed<R, W>(reader: R, writer: W) -> (BoxedReader, BoxedWriter)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    (
        FramedReader::new(Box::new(reader) as Box<dyn AsyncRead + Send + Unpin>),
        FramedWriter::new(Box::new(writer) as Box<dyn AsyncWrite + Send + Unpin>),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::{ClientMessage, Hello, Request};
    use warren_proto::Secret;

    fn start() -> ClientMessage {
        ClientMessage::Request {
            id: 3,
            request: Request::Start {
                url: "https://c.example".into(),
                token: Secret::new("wut_x.y"),
                ca: None,
                deployment: None,
            },
        }
    }

    #[tokio::test]
    async fn round_trip_over_duplex_in_tiny_pieces() {
        // A 7-byte pipe forces every frame to arrive in many reads.
        let (a, b) = tokio::io::duplex(7);
        let (ra, wa) = tokio::io::split(a);
        drop(ra);
        let (rb, _wb) = tokio::io::split(b);
        let mut w = FramedWriter::new(wa);
        let mut r = FramedReader::new(rb);
        let msgs = vec![
            ClientMessage::Hello(Hello::new("0.1.0")),
            start(),
            ClientMessage::Request {
                id: 4,
                request: Request::Subscribe,
            },
        ];
        let sent = msgs.clone();
        let writer = tokio::spawn(async move {
            for m in &sent {
                w.write(m).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        for m in &msgs {
            assert_eq!(r.read::<ClientMessage>().await.unwrap().as_ref(), Some(m));
        }
        assert!(r.read::<ClientMessage>().await.unwrap().is_none());
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn oversize_header_is_too_large_and_stays_failed() {
        let mut input = (2u32 * 1024 * 1024).to_be_bytes().to_vec();
        input.extend_from_slice(b"{}");
        let mut r = FramedReader::new(&input[..]);
        match r.read::<ClientMessage>().await {
            Err(ReadError::TooLarge { len, max }) => {
                assert_eq!(len, 2 * 1024 * 1024);
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            r.read::<ClientMessage>().await,
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn malformed_frame_keeps_the_stream_in_sync() {
        let bad = b"{\"type\":\"nope\"}";
        let mut input = (bad.len() as u32).to_be_bytes().to_vec();
        input.extend_from_slice(bad);
        input.extend_from_slice(&frame::encode(&start()).unwrap());
        let mut r = FramedReader::new(&input[..]);
        assert!(matches!(
            r.read::<ClientMessage>().await,
            Err(ReadError::Malformed(_))
        ));
        assert_eq!(r.read::<ClientMessage>().await.unwrap(), Some(start()));
        assert!(r.read::<ClientMessage>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_frame_is_reported() {
        let full = frame::encode(&start()).unwrap();
        for cut in [1, HEADER_LEN, HEADER_LEN + 1, full.len() - 1] {
            let mut r = FramedReader::new(&full[..cut]);
            assert!(
                matches!(r.read::<ClientMessage>().await, Err(ReadError::Truncated)),
                "cut at {cut}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_error_does_not_echo_the_token() {
        let bad =
            br#"{"type":"request","id":1,"request":{"op":"start","url":"u","token":98765432}}"#;
        let mut input = (bad.len() as u32).to_be_bytes().to_vec();
        input.extend_from_slice(bad);
        let mut r = FramedReader::new(&input[..]);
        let err = r.read::<ClientMessage>().await.unwrap_err();
        assert!(!err.to_string().contains("98765432"), "{err}");
    }

    /// Deterministic pseudo-random bytes (xorshift) so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        for seed in 1..300u64 {
            let mut input = noise(seed, (seed as usize * 37) % 600);
            // Half the cases get a plausible small header so payload parsing runs too.
            if seed % 2 == 0 && input.len() > 8 {
                let len = (input.len() - HEADER_LEN) as u32;
                input[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            }
            let mut r = FramedReader::new(&input[..]);
            for _ in 0..50 {
                match r.read::<ClientMessage>().await {
                    Ok(None) | Err(ReadError::TooLarge { .. }) | Err(ReadError::Truncated) => break,
                    Ok(Some(_)) | Err(ReadError::Malformed(_)) => continue,
                    Err(ReadError::Io(e)) => panic!("io error from a slice: {e}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn cancelled_read_loses_nothing() {
        let (client, server) = tokio::io::duplex(4096);
        let (_cr, mut cw) = tokio::io::split(client);
        let (sr, _sw) = tokio::io::split(server);
        let mut r = FramedReader::new(sr);
        let bytes = frame::encode(&start()).unwrap();
        // Half a frame, then a read that gets cancelled by a timeout.
        cw.write_all(&bytes[..10]).await.unwrap();
        let res = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            r.read::<ClientMessage>(),
        )
        .await;
        assert!(res.is_err(), "read should still be waiting");
        cw.write_all(&bytes[10..]).await.unwrap();
        assert_eq!(r.read::<ClientMessage>().await.unwrap(), Some(start()));
    }

    #[tokio::test]
    async fn write_frame_checks_the_header() {
        let mut out = Vec::new();
        let mut w = FramedWriter::new(&mut out);
        let good = frame::encode(&start()).unwrap();
        w.write_frame(&good).await.unwrap();
        let mut bad = good.clone();
        bad[3] ^= 1;
        assert!(matches!(
            w.write_frame(&bad).await,
            Err(WriteError::Encode(_))
        ));
        assert!(matches!(
            w.write_frame(&[0, 0]).await,
            Err(WriteError::Encode(_))
        ));
        assert_eq!(out, good);
    }

    #[tokio::test]
    async fn writer_refuses_oversize_messages() {
        let mut out = Vec::new();
        let mut w = FramedWriter::new(&mut out);
        let hello = ClientMessage::Hello(Hello::new("x".repeat(MAX_FRAME_LEN)));
        assert!(matches!(
            w.write(&hello).await,
            Err(WriteError::TooLarge { .. })
        ));
        assert!(out.is_empty());
    }
}
