//! Tunnel address allocation.
//!
//! A deployment has one random IPv6 ULA /48 (picked when its database is
//! created) and uses IPv4 100.64.0.0/10. Every agent and every client device
//! gets an index `n` from one persistent counter and with it the pair
//! `100.64.0.0 + n` and `<ula prefix>::n`. Index 0 would be the network
//! address of the /10, so counting starts at 1.

use rand::RngCore;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 range every deployment uses.
pub const IPV4_PREFIX: &str = "100.64.0.0/10";
const IPV4_BASE: u32 = u32::from_be_bytes([100, 64, 0, 0]);
/// First index handed out.
pub const FIRST_INDEX: i64 = 1;
/// Last index handed out: one below the /10's broadcast address.
pub const LAST_INDEX: i64 = (1 << 22) - 2;

/// The address index counter ran out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the deployment has used all {LAST_INDEX} tunnel addresses of 100.64.0.0/10; remove unused agents or devices")]
pub struct Exhausted;

/// A deployment's IPv6 /48: the first 48 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ula48([u8; 6]);

impl Ula48 {
    /// A random ULA prefix: `fd` followed by 40 random bits (RFC 4193).
    pub fn random() -> Self {
        let mut b = [0u8; 6];
        b[0] = 0xfd;
        rand::rngs::OsRng.fill_bytes(&mut b[1..]);
        Self(b)
    }

    /// Parses `fdXX:XXXX:XXXX::/48`.
    pub fn parse(s: &str) -> Option<Self> {
        let addr = s.strip_suffix("/48")?.parse::<Ipv6Addr>().ok()?;
        let o = addr.octets();
        if o[0] != 0xfd || o[6..].iter().any(|b| *b != 0) {
            return None;
        }
        let mut b = [0u8; 6];
        b.copy_from_slice(&o[..6]);
        Some(Self(b))
    }

    /// The address of index `n` inside this prefix.
    pub fn address(&self, n: i64) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o[..6].copy_from_slice(&self.0);
        o[8..].copy_from_slice(&(n as u64).to_be_bytes());
        Ipv6Addr::from(o)
    }
}

impl std::fmt::Display for Ula48 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut o = [0u8; 16];
        o[..6].copy_from_slice(&self.0);
        write!(f, "{}/48", Ipv6Addr::from(o))
    }
}

/// The IPv4 address of index `n`.
pub fn ipv4(n: i64) -> Result<Ipv4Addr, Exhausted> {
    if !(FIRST_INDEX..=LAST_INDEX).contains(&n) {
        return Err(Exhausted);
    }
    // n <= 2^22 - 2, so the sum stays inside 100.64.0.0/10.
    Ok(Ipv4Addr::from(IPV4_BASE + n as u32))
}

/// Both addresses of index `n`: IPv4 first, then IPv6.
pub fn addresses(prefix: &Ula48, n: i64) -> Result<Vec<IpAddr>, Exhausted> {
    Ok(vec![IpAddr::V4(ipv4(n)?), IpAddr::V6(prefix.address(n))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_prefixes_are_ula_48s() {
        let a = Ula48::random();
        let s = a.to_string();
        assert!(s.starts_with("fd"), "{s}");
        assert!(s.ends_with("::/48"), "{s}");
        assert_eq!(Ula48::parse(&s), Some(a));
        assert_ne!(Ula48::random(), a, "40 random bits should differ");
    }

    #[test]
    fn parse_refuses_non_ula_or_longer_prefixes() {
        assert_eq!(Ula48::parse("fc00::/48"), None);
        assert_eq!(Ula48::parse("fd12:3456:789a:1::/48"), None);
        assert_eq!(Ula48::parse("fd12:3456:789a::/64"), None);
        assert_eq!(Ula48::parse("nonsense"), None);
    }

    #[test]
    fn index_maps_to_both_families() {
        let p = Ula48::parse("fd12:3456:789a::/48").unwrap();
        assert_eq!(
            addresses(&p, 1).unwrap(),
            vec![
                "100.64.0.1".parse::<IpAddr>().unwrap(),
                "fd12:3456:789a::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(ipv4(256).unwrap(), Ipv4Addr::new(100, 64, 1, 0));
        assert_eq!(p.address(0x1_0001).to_string(), "fd12:3456:789a::1:1");
        assert_eq!(ipv4(LAST_INDEX).unwrap(), Ipv4Addr::new(100, 127, 255, 254));
    }

    #[test]
    fn network_and_broadcast_are_never_handed_out() {
        assert_eq!(ipv4(0), Err(Exhausted));
        assert_eq!(ipv4(LAST_INDEX + 1), Err(Exhausted));
        assert!(addresses(&Ula48::random(), -1).is_err());
    }
}
