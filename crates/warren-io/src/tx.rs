//! Outgoing datagrams in one arena, cut into the runs one GSO send can
//! carry (same destination, same size, contiguous).

use std::net::SocketAddr;

use warren_tunnel::min_out_len;

use crate::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS};

/// One datagram in a [`TxBatch`].
#[derive(Debug, Clone, Copy)]
struct Item {
    dst: SocketAddr,
    start: usize,
    len: usize,
}

/// A run of datagrams one GSO send can carry.
#[derive(Debug, PartialEq, Eq)]
pub struct Group<'a> {
    /// Where they all go.
    pub dst: SocketAddr,
    /// The datagrams back to back; every one but the last is
    /// `segment_size` long.
    pub contents: &'a [u8],
    /// The size of each datagram but the last.
    pub segment_size: usize,
    /// How many datagrams.
    pub segments: usize,
}

/// An arena of outgoing datagrams, written back to back so that
/// consecutive equal-size datagrams to one destination are one GSO send.
#[derive(Debug)]
pub struct TxBatch {
    arena: Vec<u8>,
    items: Vec<Item>,
    cursor: usize,
}

impl TxBatch {
    /// Room for `packets` datagrams made from packets of up to
    /// `max_packet` bytes.
    pub fn new(packets: usize, max_packet: usize) -> Self {
        TxBatch {
            arena: vec![0; packets * min_out_len(max_packet)],
            items: Vec::with_capacity(packets),
            cursor: 0,
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Where the datagram for a packet of `packet_len` bytes goes (exactly
    /// [`min_out_len`] of it), or `None` when the batch is full and must be
    /// sent first.
    pub fn space(&mut self, packet_len: usize) -> Option<&mut [u8]> {
        let need = min_out_len(packet_len);
        if self.items.len() == self.items.capacity() || self.cursor + need > self.arena.len() {
            return None;
        }
        Some(&mut self.arena[self.cursor..self.cursor + need])
    }

    /// Keeps the datagram just written into [`TxBatch::space`]: `len` bytes
    /// at `offset` into that space, for `dst`.
    pub fn commit(&mut self, dst: SocketAddr, offset: usize, len: usize) {
        let start = self.cursor;
        if offset != 0 {
            self.arena
                .copy_within(start + offset..start + offset + len, start);
        }
        self.items.push(Item { dst, start, len });
        self.cursor += len;
    }

    /// Queues a copy of `datagram` (for the rare ones the tunnel made on its
    /// own). False when full.
    pub fn push(&mut self, dst: SocketAddr, datagram: &[u8]) -> bool {
        let len = datagram.len();
        if self.items.len() == self.items.capacity() || self.cursor + len > self.arena.len() {
            return false;
        }
        self.arena[self.cursor..self.cursor + len].copy_from_slice(datagram);
        self.commit(dst, 0, len);
        true
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        self.items.clear();
        self.cursor = 0;
    }

    /// The queued datagrams cut into sends of at most `max_segments`
    /// datagrams and [`MAX_GSO_BYTES`], in order.
    pub fn groups(&self, max_segments: usize) -> Groups<'_> {
        Groups {
            batch: self,
            next: 0,
            max_segments: max_segments.clamp(1, MAX_GSO_SEGMENTS),
        }
    }
}

/// Iterator of [`TxBatch::groups`].
#[derive(Debug)]
pub struct Groups<'a> {
    batch: &'a TxBatch,
    next: usize,
    max_segments: usize,
}

impl<'a> Iterator for Groups<'a> {
    type Item = Group<'a>;

    fn next(&mut self) -> Option<Group<'a>> {
        let items = &self.batch.items;
        let first = *items.get(self.next)?;
        let segment_size = first.len;
        let mut end = first.start + first.len;
        let mut n = 1;
        // A shorter datagram closes its group: only the last may be short.
        let mut closed = false;
        while !closed && n < self.max_segments {
            let Some(item) = items.get(self.next + n) else {
                break;
            };
            if item.dst != first.dst
                || item.start != end
                || item.len > segment_size
                || end - first.start + item.len > MAX_GSO_BYTES
            {
                break;
            }
            closed = item.len < segment_size;
            end += item.len;
            n += 1;
        }
        self.next += n;
        Some(Group {
            dst: first.dst,
            contents: &self.batch.arena[first.start..end],
            segment_size,
            segments: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 51820))
    }

    fn put(batch: &mut TxBatch, dst: SocketAddr, len: usize) {
        batch.push(dst, &vec![len as u8; len]);
    }

    fn shapes(batch: &TxBatch, max: usize) -> Vec<(SocketAddr, usize, usize, usize)> {
        batch
            .groups(max)
            .map(|g| (g.dst, g.segment_size, g.segments, g.contents.len()))
            .collect()
    }

    #[test]
    fn groups_split_on_destination_size_and_short_datagrams() {
        let mut b = TxBatch::new(64, 1400);
        for _ in 0..3 {
            put(&mut b, a(1), 1312);
        }
        put(&mut b, a(1), 200); // short: ends the group
        put(&mut b, a(1), 1312);
        put(&mut b, a(2), 1312); // other peer
        put(&mut b, a(2), 1400); // larger: new group
        put(&mut b, a(2), 1400);
        assert_eq!(
            shapes(&b, 64),
            vec![
                (a(1), 1312, 4, 3 * 1312 + 200),
                (a(1), 1312, 1, 1312),
                (a(2), 1312, 1, 1312),
                (a(2), 1400, 2, 2800),
            ]
        );
        // Without GSO every datagram is its own send.
        assert_eq!(b.groups(1).count(), 8);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.groups(64).count(), 0);
    }

    #[test]
    fn groups_respect_the_segment_and_byte_caps() {
        let mut b = TxBatch::new(200, 1400);
        for _ in 0..150 {
            put(&mut b, a(1), 1312);
        }
        // 49 × 1312 = 64288 fits under MAX_GSO_BYTES, 50 would not.
        let g: Vec<_> = shapes(&b, 64).iter().map(|s| s.2).collect();
        assert_eq!(g, vec![49, 49, 49, 3]);
        let g: Vec<_> = shapes(&b, 10).iter().map(|s| s.2).collect();
        assert_eq!(g.iter().sum::<usize>(), 150);
        assert!(g.iter().all(|&n| n <= 10));
    }

    #[test]
    fn space_and_commit_pack_datagrams_back_to_back() {
        let mut b = TxBatch::new(4, 100);
        let space = b.space(100).unwrap();
        assert_eq!(space.len(), min_out_len(100));
        // A datagram written at an offset into its space is moved to the
        // cursor, so the next one follows it directly.
        space[5..15].copy_from_slice(&[9; 10]);
        b.commit(a(1), 5, 10);
        let space = b.space(100).unwrap();
        space[..10].copy_from_slice(&[9; 10]);
        b.commit(a(1), 0, 10);
        let groups: Vec<_> = b.groups(64).collect();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].contents, &[9; 20][..]);
        // Full by count.
        b.push(a(1), &[1; 10]);
        b.push(a(1), &[1; 10]);
        assert!(b.space(10).is_none());
        assert!(!b.push(a(1), &[1; 10]));
        assert_eq!(b.len(), 4);
    }
}
