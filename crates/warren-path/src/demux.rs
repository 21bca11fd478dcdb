//! [`classify`]: which protocol one datagram on the shared UDP socket is.
//!
//! The three protocols share the socket and their first bytes overlap
//! (WireGuard's message types 1–4 and STUN's first byte are both small
//! numbers), so each is recognised by its full header rule, not by one byte:
//!
//! * WireGuard: type 1–4 followed by three zero bytes, and the exact size of
//!   its type (148, 92, 64 bytes; data: at least 32 — the protocol allows
//!   padding to 16, but boringtun and others don't pad, so any length).
//! * STUN (RFC 8489): the two top bits zero, the magic cookie 0x2112A442 at
//!   bytes 4–8, and a length field (a multiple of 4) that matches the size.
//! * TURN ChannelData (RFC 8656): a channel number 0x4000–0x4FFF, then a
//!   length no larger than what follows (UDP may pad it to 4 bytes).
//!
//! A WireGuard message can never pass the STUN rule (its bytes 2–3 are zero,
//! so a STUN reading would need exactly 20 bytes, shorter than any WireGuard
//! message), and a 20-byte STUN message never passes WireGuard's size rule,
//! so each datagram has at most one reading.
//! Anything else is a typed error: the caller counts and drops it.

/// STUN's magic cookie (RFC 8489 §5).
pub const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
/// A STUN header's size.
pub const STUN_HEADER: usize = 20;
/// A ChannelData header's size.
pub const CHANNEL_HEADER: usize = 4;
/// The channel numbers TURN may bind (RFC 8656 §12).
pub const CHANNEL_NUMBERS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;

/// WireGuard message sizes by type.
const WG_INIT_LEN: usize = 148;
const WG_RESPONSE_LEN: usize = 92;
const WG_COOKIE_LEN: usize = 64;
/// A data message: 16-byte header, payload (not necessarily padded), 16-byte tag.
const WG_DATA_MIN: usize = 32;

/// One datagram, by protocol. The slices borrow the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A whole WireGuard message, for the peer table.
    WireGuard(&'a [u8]),
    /// A whole STUN message (header included), for the ICE agent or the
    /// TURN client.
    Stun(&'a [u8]),
    /// Relayed data from a TURN server: the channel and the payload (padding
    /// removed), which is itself a WireGuard or STUN datagram of the peer.
    ChannelData { channel: u16, payload: &'a [u8] },
}

/// Why a datagram is none of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    #[error("empty datagram")]
    Empty,
    #[error("first byte {0:#04x} starts no WireGuard, STUN or ChannelData message")]
    UnknownKind(u8),
    #[error("a WireGuard message of type {kind} can't be {len} bytes long")]
    WireGuardLength { kind: u8, len: usize },
    #[error("a STUN message of {len} bytes doesn't match its header (length field {field})")]
    StunLength { len: usize, field: usize },
    #[error("a STUN-like header without STUN's magic cookie")]
    NoMagicCookie,
    #[error("ChannelData for channel {channel:#06x} says {field} bytes but {len} follow")]
    ChannelLength {
        channel: u16,
        field: usize,
        len: usize,
    },
}

/// Which protocol `datagram` is; see the module documentation for the rules.
pub fn classify(datagram: &[u8]) -> Result<Datagram<'_>, DemuxError> {
    let first = *datagram.first().ok_or(DemuxError::Empty)?;
    if (1..=4).contains(&first) && datagram.len() >= 4 && datagram[1..4] == [0, 0, 0] {
        // A header that reads as both (a 20-byte STUN message of type
        // 0x0100–0x0400 with an empty body) is STUN when WireGuard's size
        // rule fails; otherwise the WireGuard error says more.
        return wireguard(first, datagram).or_else(|wg| stun(datagram).map_err(|_| wg));
    }
    match first {
        0x00..=0x3F => stun(datagram),
        0x40..=0x4F => channel_data(datagram),
        other => Err(DemuxError::UnknownKind(other)),
    }
}

fn wireguard(kind: u8, datagram: &[u8]) -> Result<Datagram<'_>, DemuxError> {
    let len = datagram.len();
    let fits = match kind {
        1 => len == WG_INIT_LEN,
        2 => len == WG_RESPONSE_LEN,
        3 => len == WG_COOKIE_LEN,
        _ => len >= WG_DATA_MIN,
    };
    if fits {
        Ok(Datagram::WireGuard(datagram))
    } else {
        Err(DemuxError::WireGuardLength { kind, len })
    }
}

fn stun(datagram: &[u8]) -> Result<Datagram<'_>, DemuxError> {
    let len = datagram.len();
    if len < STUN_HEADER {
        return Err(DemuxError::StunLength { len, field: 0 });
    }
    let field = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let cookie = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    if cookie != STUN_MAGIC_COOKIE {
        return Err(DemuxError::NoMagicCookie);
    }
    if !field.is_multiple_of(4) || STUN_HEADER + field != len {
        return Err(DemuxError::StunLength { len, field });
    }
    Ok(Datagram::Stun(datagram))
}

fn channel_data(datagram: &[u8]) -> Result<Datagram<'_>, DemuxError> {
    let channel = u16::from_be_bytes([datagram[0], *datagram.get(1).unwrap_or(&0)]);
    let len = datagram.len().saturating_sub(CHANNEL_HEADER);
    if datagram.len() < CHANNEL_HEADER {
        return Err(DemuxError::ChannelLength {
            channel,
            field: 0,
            len,
        });
    }
    let field = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    // Over UDP the payload may be padded to a multiple of 4; nothing more.
    if field > len || len - field >= 4 {
        return Err(DemuxError::ChannelLength {
            channel,
            field,
            len,
        });
    }
    Ok(Datagram::ChannelData {
        channel,
        payload: &datagram[CHANNEL_HEADER..CHANNEL_HEADER + field],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wg(kind: u8, len: usize) -> Vec<u8> {
        let mut m = vec![0xAB; len];
        m[0] = kind;
        m[1..4].copy_from_slice(&[0, 0, 0]);
        m
    }

    fn stun_message(method: u16, body: usize) -> Vec<u8> {
        let mut m = Vec::with_capacity(STUN_HEADER + body);
        m.extend_from_slice(&method.to_be_bytes());
        m.extend_from_slice(&(body as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        m.extend(std::iter::repeat_n(0x11, body));
        m
    }

    fn channel(number: u16, payload: &[u8], pad: usize) -> Vec<u8> {
        let mut m = number.to_be_bytes().to_vec();
        m.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        m.extend_from_slice(payload);
        m.extend(std::iter::repeat_n(0, pad));
        m
    }

    #[test]
    fn wireguard_messages_by_type_and_size() {
        for (kind, len) in [(1, 148), (2, 92), (3, 64), (4, 32), (4, 116), (4, 1456)] {
            let m = wg(kind, len);
            assert_eq!(classify(&m), Ok(Datagram::WireGuard(&m)), "{kind} {len}");
        }
        for (kind, len) in [(1, 147), (2, 148), (3, 65), (4, 16), (4, 31)] {
            assert_eq!(
                classify(&wg(kind, len)),
                Err(DemuxError::WireGuardLength { kind, len })
            );
        }
    }

    #[test]
    fn stun_binding_and_allocate_messages() {
        // Binding request 0x0001 and success 0x0101 share their first byte
        // with WireGuard's types; the cookie and length tell them apart.
        for (method, body) in [(0x0001, 0), (0x0101, 12), (0x0003, 40), (0x0113, 8)] {
            let m = stun_message(method, body);
            assert_eq!(classify(&m), Ok(Datagram::Stun(&m)), "{method:#06x}");
        }
        let mut m = stun_message(0x0001, 8);
        m.truncate(24);
        assert_eq!(
            classify(&m),
            Err(DemuxError::StunLength { len: 24, field: 8 })
        );
        let mut m = stun_message(0x0001, 0);
        m[4] = 0;
        assert_eq!(classify(&m), Err(DemuxError::NoMagicCookie));
        let mut m = stun_message(0x0001, 4);
        m[3] = 2;
        m.truncate(22);
        assert!(matches!(classify(&m), Err(DemuxError::StunLength { .. })));
    }

    #[test]
    fn a_stun_message_whose_header_reads_like_wireguard_is_stun() {
        let m = stun_message(0x0100, 0);
        assert_eq!(&m[..4], &[1, 0, 0, 0]);
        assert_eq!(classify(&m), Ok(Datagram::Stun(&m)));
    }

    #[test]
    fn a_wireguard_message_with_the_stun_cookie_is_still_wireguard() {
        // A receiver index that happens to equal the magic cookie.
        let mut m = wg(4, 64);
        m[4..8].copy_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        assert_eq!(classify(&m), Ok(Datagram::WireGuard(&m)));
    }

    #[test]
    fn channel_data_with_and_without_padding() {
        let inner = wg(4, 32);
        let m = channel(0x4001, &inner, 0);
        assert_eq!(
            classify(&m),
            Ok(Datagram::ChannelData {
                channel: 0x4001,
                payload: &inner
            })
        );
        let m = channel(0x4FFF, &[1, 2, 3], 1);
        assert_eq!(
            classify(&m),
            Ok(Datagram::ChannelData {
                channel: 0x4FFF,
                payload: &[1, 2, 3]
            })
        );
        assert!(matches!(
            classify(&channel(0x4001, &[1, 2, 3], 4)),
            Err(DemuxError::ChannelLength { .. })
        ));
        let mut short = channel(0x4001, &[1, 2, 3, 4], 0);
        short.truncate(6);
        assert!(matches!(
            classify(&short),
            Err(DemuxError::ChannelLength {
                field: 4,
                len: 2,
                ..
            })
        ));
        assert!(matches!(
            classify(&[0x40]),
            Err(DemuxError::ChannelLength { .. })
        ));
    }

    #[test]
    fn everything_else_is_refused() {
        assert_eq!(classify(&[]), Err(DemuxError::Empty));
        assert_eq!(
            classify(&[0x80, 0, 0, 0]),
            Err(DemuxError::UnknownKind(0x80))
        );
        assert_eq!(classify(&[0x50; 40]), Err(DemuxError::UnknownKind(0x50)));
    }

    proptest! {
        /// Any bytes: a typed answer, never a panic; what is accepted obeys
        /// its protocol's rule.
        #[test]
        fn any_bytes_get_a_typed_answer(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            match classify(&bytes) {
                Ok(Datagram::WireGuard(m)) => {
                    prop_assert_eq!(m.len(), bytes.len());
                    prop_assert!((1..=4).contains(&m[0]));
                }
                Ok(Datagram::Stun(m)) => {
                    prop_assert_eq!(m.len() % 4, 0);
                    prop_assert!(m[0] < 0x40);
                }
                Ok(Datagram::ChannelData { channel, payload }) => {
                    prop_assert!(CHANNEL_NUMBERS.contains(&channel));
                    prop_assert!(bytes.len() - CHANNEL_HEADER - payload.len() < 4);
                }
                Err(_) => {}
            }
        }

        /// A relayed WireGuard message classifies twice: ChannelData, then
        /// the WireGuard message inside.
        #[test]
        fn relayed_wireguard_unwraps(len in 2usize..90, number in 0x4000u16..=0x4FFF, pad in 0usize..4) {
            let inner = wg(4, len * 16);
            let m = channel(number, &inner, pad);
            let Ok(Datagram::ChannelData { channel: c, payload }) = classify(&m) else {
                return Err(TestCaseError::fail("not ChannelData"));
            };
            prop_assert_eq!(c, number);
            prop_assert_eq!(classify(payload), Ok(Datagram::WireGuard(&inner[..])));
        }
    }
}
