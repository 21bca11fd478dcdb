//! The networks this machine already has — every interface's subnet, and on
//! Linux the routes of the main table — so a deployment whose ranges overlap
//! the LAN or another VPN can be refused before anything is routed.

use std::net::IpAddr;

use ipnet::IpNet;

/// A network this machine already uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNetwork {
    pub network: IpNet,
    /// The interface it is on, to name the conflict.
    pub interface: String,
}

/// The machine's networks, except loopback, link-local, multicast and
/// default routes, and except those on `skip_interface` (Warren's own TUN,
/// whose routes are the deployment's). Best effort: what can't be read is
/// logged and left out.
pub fn host_networks(skip_interface: &str) -> Vec<HostNetwork> {
    let mut out = Vec::new();
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => {
            for ifa in interfaces {
                let network = match &ifa.addr {
                    if_addrs::IfAddr::V4(v4) => IpNet::new(IpAddr::V4(v4.ip), v4.prefixlen),
                    if_addrs::IfAddr::V6(v6) => IpNet::new(IpAddr::V6(v6.ip), v6.prefixlen),
                };
                if let Ok(network) = network {
                    out.push(HostNetwork {
                        network: network.trunc(),
                        interface: ifa.name.clone(),
                    });
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "couldn't list this machine's addresses"),
    }
    #[cfg(target_os = "linux")]
    {
        for (path, parse) in [
            (
                "/proc/net/route",
                parse_route_v4 as fn(&str) -> Vec<HostNetwork>,
            ),
            ("/proc/net/ipv6_route", parse_route_v6),
        ] {
            match std::fs::read_to_string(path) {
                Ok(text) => out.extend(parse(&text)),
                Err(e) => tracing::warn!(error = %e, path, "couldn't read the routing table"),
            }
        }
    }
    out.retain(|n| n.interface != skip_interface && !ignorable(&n.network));
    out.sort_by(|a, b| (a.network, &a.interface).cmp(&(b.network, &b.interface)));
    out.dedup();
    out
}

/// `/proc/net/route`: interface, destination and mask in little-endian hex.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_route_v4(text: &str) -> Vec<HostNetwork> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            let dest = u32::from_str_radix(dest, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(mask, 16).ok()?.swap_bytes();
            let len = mask.leading_ones() as u8;
            let network = IpNet::new(IpAddr::V4(dest.into()), len).ok()?.trunc();
            Some(HostNetwork {
                network,
                interface: iface.to_string(),
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination (32 hex digits), its length (hex),
/// …, interface last.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_route_v6(text: &str) -> Vec<HostNetwork> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                return None;
            }
            let dest = u128::from_str_radix(fields[0], 16).ok()?;
            let len = u8::from_str_radix(fields[1], 16).ok()?;
            let network = IpNet::new(IpAddr::V6(dest.into()), len).ok()?.trunc();
            Some(HostNetwork {
                network,
                interface: fields[9].to_string(),
            })
        })
        .collect()
}

/// Networks no deployment range can meaningfully clash with.
fn ignorable(net: &IpNet) -> bool {
    let ip = net.network();
    net.prefix_len() == 0
        || ip.is_loopback()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_local_networks_are_ignored() {
        for net in [
            "0.0.0.0/0",
            "::/0",
            "127.0.0.0/8",
            "::1/128",
            "fe80::/64",
            "ff00::/8",
            "169.254.0.0/16",
        ] {
            assert!(ignorable(&net.parse().unwrap()), "{net}");
        }
        for net in ["192.168.1.0/24", "100.100.7.0/24", "fd00::/64"] {
            assert!(!ignorable(&net.parse().unwrap()), "{net}");
        }
    }

    #[test]
    fn linux_routing_tables_parse() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  tailscale0\t00004064\t00000000\t0001\t0\t0\t0\t0000C0FF\t0\t0\t0\n";
        let nets = parse_route_v4(v4);
        let shown: Vec<String> = nets
            .iter()
            .map(|n| format!("{} {}", n.network, n.interface))
            .collect();
        assert_eq!(
            shown,
            [
                "0.0.0.0/0 eth0",
                "192.0.2.0/24 eth0",
                "100.64.0.0/10 tailscale0"
            ]
        );
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0\n";
        let shown: Vec<String> = parse_route_v6(v6)
            .iter()
            .map(|n| format!("{} {}", n.network, n.interface))
            .collect();
        assert_eq!(shown, ["fd00::/64 eth0", "::/0 eth0"]);
        assert!(parse_route_v4("garbage").is_empty());
        assert!(parse_route_v6("zz 40 x").is_empty());
    }

    #[test]
    fn this_machine_has_no_loopback_in_its_list() {
        let nets = host_networks("none");
        assert!(nets.iter().all(|n| !n.network.network().is_loopback()));
    }
}
