//! DNS over TCP framing (RFC 7766 §8, RFC 1035 §4.2.2): every message is
//! preceded by its length as two big-endian bytes. Sans-IO: the driver
//! pushes whatever a read returned and takes out whole messages, so a query
//! split across reads, several queries in one read (pipelining) and a
//! connection that ends mid-message all go through one tested path.

/// The largest message the 2-byte prefix can announce.
pub const MAX_TCP_MESSAGE: usize = 65535;

/// Splits a byte stream into DNS messages.
#[derive(Debug, Default)]
pub struct TcpFramer {
    buf: Vec<u8>,
    /// Where the next unread frame starts in `buf`.
    start: usize,
}

impl TcpFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what was already taken before growing, so a long-lived
        // connection keeps at most one partial frame plus one read.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, without its prefix; `None` until one is
    /// complete.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let rest = &self.buf[self.start..];
        let [hi, lo, body @ ..] = rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let message = body.get(..len)?.to_vec();
        self.start += 2 + len;
        Some(message)
    }

    /// Bytes received but not yet taken as a message (a partial frame).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// `message` with its length prefix; `None` if it is too long for TCP.
pub fn frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_split_across_reads_comes_out_once_whole() {
        let framed = frame(b"hello dns").unwrap();
        let mut f = TcpFramer::new();
        for byte in &framed[..framed.len() - 1] {
            f.push(std::slice::from_ref(byte));
            assert_eq!(f.next_message(), None);
        }
        f.push(&framed[framed.len() - 1..]);
        assert_eq!(f.next_message().as_deref(), Some(&b"hello dns"[..]));
        assert_eq!(f.next_message(), None);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn pipelined_messages_come_out_in_order_and_a_partial_one_waits() {
        let mut stream = frame(b"one").unwrap();
        stream.extend(frame(b"").unwrap());
        stream.extend(frame(&[7; 300]).unwrap());
        stream.extend(&[0x01, 0x00, 0xaa]);
        let mut f = TcpFramer::new();
        f.push(&stream);
        assert_eq!(f.next_message().as_deref(), Some(&b"one"[..]));
        assert_eq!(f.next_message().as_deref(), Some(&b""[..]));
        assert_eq!(f.next_message().map(|m| m.len()), Some(300));
        assert_eq!(f.next_message(), None);
        assert_eq!(f.pending(), 3);
        f.push(&[0xbb; 255]);
        assert_eq!(f.next_message().map(|m| m.len()), Some(256));
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn only_what_fits_the_prefix_is_framed() {
        assert_eq!(
            frame(&vec![0; MAX_TCP_MESSAGE]).map(|f| f.len()),
            Some(65537)
        );
        assert_eq!(frame(&vec![0; MAX_TCP_MESSAGE + 1]), None);
    }
}
