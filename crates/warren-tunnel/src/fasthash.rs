//! A small unkeyed hasher for the per-packet lookups (destination address,
//! receiver index). std's SipHash costs a noticeable share of a packet's
//! budget; its protection against collision flooding is not needed here
//! because only the coordinator's configuration inserts keys — datagrams and
//! packets from the network only look them up.

use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style multiply-and-rotate hasher (as used inside rustc).
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn maps_keyed_by_address_and_index_work() {
        let mut m: FastMap<IpAddr, usize> = FastMap::default();
        for i in 0..1000u32 {
            m.insert(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)), i as usize);
            m.insert(IpAddr::V6(Ipv6Addr::from(u128::from(i))), i as usize + 1000);
        }
        assert_eq!(m.len(), 2000);
        assert_eq!(m[&IpAddr::V4(Ipv4Addr::from(0x6440_0000 + 7))], 7);
        assert_eq!(m[&IpAddr::V6(Ipv6Addr::from(7u128))], 1007);
        let mut n: FastMap<u32, usize> = FastMap::default();
        n.extend((0..1000u32).map(|i| (i << 3, i as usize)));
        assert_eq!(n[&(999 << 3)], 999);
    }
}
