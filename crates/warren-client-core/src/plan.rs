//! What the OS should look like for a connected session: the [`NetPlan`]
//! (TUN, this device's host addresses, exactly the deployment's two ranges,
//! split DNS) derived from the deployment as [`crate::confine`] accepted it.
//! Pure; the data-plane driver hands the plan to `warren-netcfg`.

use std::path::PathBuf;

use ipnet::IpNet;
use warren_netcfg::dns::{DnsMode, DnsPlan};
use warren_netcfg::{NetPlan, DEFAULT_MTU};
use warren_proto::ipc::DeviceInfo;

use crate::confine::Confined;

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The session has no tunnel address for this device yet.
    #[error("this device has no tunnel address yet — reconnect with `warren reconnect`")]
    NoAddress,
}

/// The plan for this device and the accepted deployment. `dns` is how the
/// OS is told about the stub (a concrete mode) and the resolv.conf that mode
/// manages; `None`, `Off` or `Auto` mean no split DNS.
pub fn net_plan(
    tun_name: &str,
    device: &DeviceInfo,
    deployment: &Confined,
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
    let routes = [IpNet::V4(deployment.ipv4), IpNet::V6(deployment.ipv6)]
        .iter()
        .map(|net| (net.network(), net.prefix_len()))
        .collect();
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
        let deployment = Confined {
            ipv4: "100.64.0.0/10".parse().unwrap(),
            ipv6: "fd12:3456:789a::/48".parse().unwrap(),
            suffix: "warren".into(),
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
