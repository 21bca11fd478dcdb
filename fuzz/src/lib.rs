//! What the fuzz targets share: reading an input as a sequence of
//! operations, `[op][len: u16 BE][bytes]`, so the fuzzer can grow, cut and
//! splice whole steps (a datagram, a packet, time passing) independently.

/// At most this many operations are read from one input, which bounds
/// every target's work per input.
pub const MAX_OPS: usize = 64;

/// The operations in `data`: each an op byte and its bytes. A length past
/// the end takes what is left; fewer than three bytes end the sequence.
pub fn ops(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 3 {
            return None;
        }
        let op = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        Some((op, bytes))
    })
    .take(MAX_OPS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_read_in_order_and_a_long_length_takes_the_rest() {
        let data = [7, 0, 2, b'a', b'b', 9, 0, 0, 1, 0xff, 0xff, b'z'];
        let got: Vec<_> = ops(&data).collect();
        assert_eq!(got, vec![(7, &b"ab"[..]), (9, &b""[..]), (1, &b"z"[..])]);
        assert_eq!(ops(&[1, 0]).count(), 0);
        assert_eq!(ops(&[0u8; 3 * 100]).count(), MAX_OPS);
    }
}
