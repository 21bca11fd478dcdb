//! What the OS should look like for a connected session: the [`NetPlan`]
//! (TUN, this device's host addresses, exactly the deployment's two prefixes,
//! split DNS) derived from what the coordinator said. Pure; the data-plane
//! driver hands the plan to `warren-netcfg`.

use std::net::IpAddr;
use std::path::PathBuf;

use warren_netcfg::dns::{DnsMode, DnsPlan};
use warren_netcfg::{NetPlan, DEFAULT_MTU};
use warren_proto::ipc::DeviceInfo;
use warren_proto::model::DeploymentInfo;

/// Why no plan can be made from what the coordinator sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The coordinator sent a prefix we can't parse.
    #[error("the coordinator sent an unusable address prefix {0:?} — update the coordinator or report this to its operator")]
    BadPrefix(String),
    /// The session has no tunnel address for this device yet.
    #[error("this device has no tunnel address yet — reconnect with `warren reconnect`")]
    NoAddress,
}

/// Parses `"100.64.0.0/10"` into an address and prefix length.
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), PlanError> {
    let bad = || PlanError::BadPrefix(s.to_string());
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    let len: u8 = len.trim().parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len == 0 || len > max {
        return Err(bad());
    }
    Ok((addr, len))
}

/// The plan for this device and deployment. `dns` is how the OS is told
/// about the stub (a concrete mode) and the resolv.conf that mode manages;
/// `None`, `Off` or `Auto` mean no split DNS.
pub fn net_plan(
    tun_name: &str,
    device: &DeviceInfo,
    deployment: &DeploymentInfo,
    dns: Option<(DnsMode, PathBuf)>,
) -> Result<NetPlan, PlanError> {
    if device.addresses.is_empty() {
        return Err(PlanError::NoAddress);
    }
    let addresses = device
        .addresses
        .iter()
        .map(|a| (*a, if a.is_ipv4() { 32 } else { 128 }))
        .collect();
    let routes = vec![
        parse_prefix(&deployment.ipv4_prefix)?,
        parse_prefix(&deployment.ipv6_prefix)?,
    ];
    let dns = match dns {
        Some((mode, resolv_conf)) if mode != DnsMode::Off && mode != DnsMode::Auto => {
            Some(DnsPlan {
                suffix: deployment.suffix.clone(),
                servers: device.addresses.clone(),
                mode,
                resolv_conf,
            })
        }
        _ => None,
    };
    Ok(NetPlan {
        tun_name: tun_name.to_string(),
        mtu: DEFAULT_MTU,
        addresses,
        routes,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_reject_nonsense() {
        assert_eq!(
            parse_prefix("100.64.0.0/10").unwrap(),
            ("100.64.0.0".parse().unwrap(), 10)
        );
        assert_eq!(
            parse_prefix("fd12:3456:789a::/48").unwrap(),
            ("fd12:3456:789a::".parse().unwrap(), 48)
        );
        for bad in [
            "100.64.0.0",
            "100.64.0.0/33",
            "0.0.0.0/0",
            "x/8",
            "fd00::/129",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn plan_has_host_addresses_and_only_the_deployment_routes() {
        let device = DeviceInfo {
            id: "d".into(),
            public_key: "k".into(),
            addresses: vec![
                "100.64.0.7".parse().unwrap(),
                "fd12:3456:789a::7".parse().unwrap(),
            ],
            endpoints: vec![],
        };
        let deployment = DeploymentInfo {
            suffix: "warren".into(),
            ipv4_prefix: "100.64.0.0/10".into(),
            ipv6_prefix: "fd12:3456:789a::/48".into(),
        };
        let plan = net_plan("warren0", &device, &deployment, None).unwrap();
        assert_eq!(plan.mtu, 1280);
        assert_eq!(
            plan.addresses,
            vec![
                ("100.64.0.7".parse().unwrap(), 32),
                ("fd12:3456:789a::7".parse().unwrap(), 128)
            ]
        );
        assert_eq!(
            plan.routes,
            vec![
                ("100.64.0.0".parse().unwrap(), 10),
                ("fd12:3456:789a::".parse().unwrap(), 48)
            ]
        );
        assert!(plan.dns.is_none());
        plan.validate().unwrap();

        let with_dns = net_plan(
            "warren0",
            &device,
            &deployment,
            Some((DnsMode::ResolvConf, "/etc/resolv.conf".into())),
        )
        .unwrap();
        let dns = with_dns.dns.expect("split DNS planned");
        assert_eq!(dns.suffix, "warren");
        assert_eq!(dns.servers, device.addresses);

        let empty = DeviceInfo {
            addresses: vec![],
            ..device
        };
        assert_eq!(
            net_plan("warren0", &empty, &deployment, None),
            Err(PlanError::NoAddress)
        );
    }
}
