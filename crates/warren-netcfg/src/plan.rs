//! The network plan: what the helper wants the OS to look like while a
//! session is up. Validated before anything is touched, so a bad plan (above
//! all a default route) never reaches the OS.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::dns::DnsPlan;
use crate::error::{NetError, Result};

/// Default TUN device name (Linux and Windows; macOS assigns `utunN`).
pub const DEFAULT_TUN_NAME: &str = "warren0";
/// Default MTU: the IPv6 minimum, so nothing on the path ever needs to fragment
/// a tunnelled packet.
pub const DEFAULT_MTU: u16 = 1280;

/// What to configure: one TUN device, this device's tunnel addresses and the
/// deployment's prefixes routed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    /// Interface name (ignored on macOS, where the kernel names utun devices).
    pub tun_name: String,
    /// Interface MTU.
    pub mtu: u16,
    /// This device's tunnel addresses with prefix length (normally /32 and /128).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Prefixes routed into the tunnel (100.64.0.0/10 and the deployment's
    /// ULA /48). Never a default route.
    pub routes: Vec<(IpAddr, u8)>,
    /// Split DNS for the deployment's suffix, if wanted.
    #[serde(default)]
    pub dns: Option<DnsPlan>,
}

impl Default for NetPlan {
    fn default() -> Self {
        NetPlan {
            tun_name: DEFAULT_TUN_NAME.to_string(),
            mtu: DEFAULT_MTU,
            addresses: Vec::new(),
            routes: Vec::new(),
            dns: None,
        }
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `addr` with every bit past `prefix` cleared.
pub(crate) fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

impl NetPlan {
    /// Checks the plan; nothing reaches the OS unless this passes.
    pub fn validate(&self) -> Result<()> {
        let name = &self.tun_name;
        // Linux caps names at IFNAMSIZ - 1 = 15 bytes; keeping to the same
        // charset everywhere keeps the name safe to pass to OS tools.
        if name.is_empty()
            || name.len() > 15
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NetError::InvalidPlan(format!(
                "TUN name {name:?} must be 1–15 letters, digits, '-' or '_' (e.g. \"{DEFAULT_TUN_NAME}\")"
            )));
        }
        if self.mtu < DEFAULT_MTU {
            return Err(NetError::InvalidPlan(format!(
                "MTU {} is below {DEFAULT_MTU}, the IPv6 minimum — use at least {DEFAULT_MTU}",
                self.mtu
            )));
        }
        for (addr, prefix) in &self.addresses {
            if *prefix > max_prefix(addr) || *prefix == 0 {
                return Err(NetError::InvalidPlan(format!(
                    "address {addr}/{prefix} has an impossible prefix length — use /{} for a device address",
                    max_prefix(addr)
                )));
            }
        }
        for (dest, prefix) in &self.routes {
            if *prefix == 0 {
                return Err(NetError::DefaultRoute(format!("{dest}/0")));
            }
            if *prefix > max_prefix(dest) {
                return Err(NetError::InvalidPlan(format!(
                    "route {dest}/{prefix} has a prefix longer than /{}",
                    max_prefix(dest)
                )));
            }
            let net = network_of(*dest, *prefix);
            if net != *dest {
                return Err(NetError::InvalidPlan(format!(
                    "route {dest}/{prefix} has host bits set — use {net}/{prefix}"
                )));
            }
        }
        if let Some(dns) = &self.dns {
            dns.validate()?;
        }
        Ok(())
    }
}

/// A valid plan (two host addresses, the two deployment prefixes) for the
/// crate's unit tests.
#[cfg(test)]
pub(crate) fn sample_plan() -> NetPlan {
    NetPlan {
        addresses: vec![
            ("100.64.0.7".parse().unwrap(), 32),
            ("fd7a:1::7".parse().unwrap(), 128),
        ],
        routes: vec![
            ("100.64.0.0".parse().unwrap(), 10),
            ("fd7a:1::".parse().unwrap(), 48),
        ],
        ..NetPlan::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NetPlan {
        sample_plan()
    }

    #[test]
    fn defaults_and_good_plan() {
        let p = plan();
        assert_eq!(p.tun_name, "warren0");
        assert_eq!(p.mtu, 1280);
        p.validate().unwrap();
    }

    #[test]
    fn refuses_default_routes() {
        for dest in ["0.0.0.0", "::"] {
            let mut p = plan();
            p.routes.push((dest.parse().unwrap(), 0));
            let err = p.validate().unwrap_err();
            assert!(matches!(err, NetError::DefaultRoute(_)), "{err}");
            assert!(err
                .to_string()
                .contains("never takes over the default route"));
        }
        // Any /0 is a default route, whatever address it is written with.
        let mut p = plan();
        p.routes.push(("100.64.0.0".parse().unwrap(), 0));
        assert!(matches!(p.validate(), Err(NetError::DefaultRoute(_))));
    }

    #[test]
    fn refuses_bad_names_mtus_and_prefixes() {
        let mut p = plan();
        p.tun_name = "warren0; rm -rf /".into();
        assert!(matches!(p.validate(), Err(NetError::InvalidPlan(_))));
        let mut p = plan();
        p.tun_name = "a-name-that-is-far-too-long".into();
        assert!(matches!(p.validate(), Err(NetError::InvalidPlan(_))));
        let mut p = plan();
        p.mtu = 1000;
        assert!(matches!(p.validate(), Err(NetError::InvalidPlan(_))));
        let mut p = plan();
        p.addresses.push(("100.64.0.8".parse().unwrap(), 33));
        assert!(matches!(p.validate(), Err(NetError::InvalidPlan(_))));
        let mut p = plan();
        p.routes.push(("100.64.0.1".parse().unwrap(), 10));
        let err = p.validate().unwrap_err();
        assert!(err.to_string().contains("use 100.64.0.0/10"), "{err}");
    }
}
