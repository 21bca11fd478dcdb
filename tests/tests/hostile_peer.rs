//! A hostile agent, end to end: `wireguard-go` holding a registered agent's
//! key (as in `interop_wireguard_go.rs`) routes through the tunnel whatever
//! it likes. The helper must pass on only packets addressed to the device's
//! own tunnel addresses: a ping to another address of the laptop (one off
//! the tunnel, which the kernel would answer on any interface) gets no
//! reply while one to the device's address does. And in the resolv.conf
//! mode the DNS stub must answer the peer's query for a name outside the
//! suffix with REFUSED over UDP and TCP, never forward it, while names
//! under the suffix are still answered and the laptop's own queries still
//! reach the previous resolver (dnsmasq). Needs root, `wireguard-go`, `wg`,
//! `dig` and `dnsmasq`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use warren_e2e::netns::{
    dig_in, icmp_ping, ip_in, random_port, wg_in, write_secret, HelperOptions, TunnelLab,
    WireguardGo, USER,
};
use warren_e2e::poll_until;

/// The laptop's resolv.conf before Warren: dnsmasq on 127.0.0.1.
const ORIGINAL: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n";
/// The name dnsmasq answers, and its address.
const OUTSIDE: &str = "intranet.test";
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// An address the laptop has on another interface (its LAN, say).
const LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

#[test]
fn a_hostile_peer_reaches_only_the_device_address_and_gets_no_outside_dns() {
    let Some(lab) = TunnelLab::start_or_skip(
        "hostile-peer",
        &["wireguard-go", "wg", "dig", "/usr/sbin/dnsmasq"],
    ) else {
        return;
    };
    let ws_ns = lab.net.workspace.clone();
    let laptop_ns = lab.net.laptop.clone();

    // The laptop: a previous resolver, and an address on another interface.
    let _dnsmasq = lab.dnsmasq(Ipv4Addr::LOCALHOST, &[(OUTSIDE, OUTSIDE_ADDR.into())]);
    let _resolv = lab.net.own_resolv_conf(ORIGINAL);
    // On loopback: a local address off the tunnel, as a LAN address is (the
    // lab's kernel has no dummy interfaces).
    ip_in(
        &laptop_ns,
        &["addr", "add", &format!("{LAN_ADDR}/32"), "dev", "lo"],
    );

    // The hostile peer, registered as agent ws/wgo.
    let private = wg_in(&ws_ns, &["genkey"], None);
    let public = wg_in(&ws_ns, &["pubkey"], Some(&format!("{private}\n")));
    let key_file = lab.dir.join("wg.key");
    write_secret(&key_file, &private);
    let wg_port = random_port();
    let wg_endpoint = SocketAddr::new(IpAddr::V4(lab.net.workspace_ip), wg_port);
    lab.add_wireguard_peer("ws", "wgo", &public, &[wg_endpoint]);

    let helper_port = random_port();
    let helper = lab.helper(
        HelperOptions::default()
            .listen_port(helper_port)
            .dns_mode("resolv-conf"),
    );
    let status = lab.login_up(&helper);
    let device = status
        .session
        .device
        .clone()
        .expect("a connected session has a device");
    let dev_v4 = *device
        .addresses
        .iter()
        .find(|a| a.is_ipv4())
        .expect("the device has an IPv4 tunnel address");
    let peer_v4 = lab.wait_agent(&helper, "ws", "wgo").v4();

    // The peer routes the device's address and the laptop's LAN address
    // into the tunnel, and accepts replies from both.
    let mut wgo = WireguardGo::start(lab.dir.path(), &ws_ns);
    let ifname = wgo.ifname.clone();
    let allowed = format!("{dev_v4}/32,{LAN_ADDR}/32");
    let helper_endpoint = SocketAddr::new(IpAddr::V4(lab.net.laptop_ip), helper_port);
    let key_s = key_file.to_string_lossy().into_owned();
    let port_s = wg_port.to_string();
    let endpoint_s = helper_endpoint.to_string();
    wg_in(
        &ws_ns,
        &[
            "set",
            &ifname,
            "private-key",
            &key_s,
            "listen-port",
            &port_s,
            "peer",
            &device.public_key,
            "allowed-ips",
            &allowed,
            "endpoint",
            &endpoint_s,
        ],
        None,
    );
    ip_in(
        &ws_ns,
        &["addr", "add", &format!("{peer_v4}/32"), "dev", &ifname],
    );
    ip_in(&ws_ns, &["link", "set", &ifname, "up"]);
    ip_in(
        &ws_ns,
        &["route", "add", &format!("{dev_v4}/32"), "dev", &ifname],
    );
    ip_in(
        &ws_ns,
        &["route", "add", &format!("{LAN_ADDR}/32"), "dev", &ifname],
    );

    // The device's own address answers: the session works.
    let rtt = poll_until(Duration::from_secs(10), || {
        icmp_ping(&ws_ns, dev_v4, Duration::from_secs(1))
    });
    assert!(rtt.is_some(), "no echo reply from the device's {dev_v4}");
    // Another address of the laptop does not: the helper drops the packet.
    for _ in 0..3 {
        let reply = icmp_ping(&ws_ns, LAN_ADDR.into(), Duration::from_secs(1));
        assert!(
            reply.is_none(),
            "the laptop's {LAN_ADDR} answered a peer through the tunnel"
        );
    }

    // The laptop itself still has outside names forwarded (its queries come
    // from the device's address, where the stub listens).
    let local = poll_until(Duration::from_secs(10), || {
        let d = lab.dig(&[OUTSIDE, "A"]);
        (d.noerror() && d.addresses == [IpAddr::V4(OUTSIDE_ADDR)]).then_some(d)
    });
    assert!(
        local.is_some(),
        "the laptop's own query for {OUTSIDE} was not forwarded:\n{}",
        lab.dig(&[OUTSIDE, "A"]).output
    );

    // The peer asking the stub: names under the suffix yes, outside no.
    let at = format!("@{dev_v4}");
    let inside = format!("wgo.ws.{USER}.warren");
    let d = dig_in(&ws_ns, &[&at, &inside, "A"]);
    assert!(
        d.noerror() && d.addresses == [peer_v4],
        "the stub did not answer {inside} for the peer:\n{}",
        d.output
    );
    for extra in [None, Some("+tcp")] {
        let mut args = vec![at.as_str(), OUTSIDE, "A"];
        args.extend(extra);
        let d = dig_in(&ws_ns, &args);
        assert_eq!(
            d.status, "REFUSED",
            "dig {args:?} from the peer should be REFUSED:\n{}",
            d.output
        );
        assert!(d.addresses.is_empty());
    }
    assert!(wgo.is_running(), "wireguard-go exited");
}
