//! Interop with a WireGuard peer someone else wrote: `wireguard-go`,
//! configured with `wg`, stands in for an agent in the workspace namespace
//! (registered with `warren-coord agent add --public-key`). The helper must
//! handshake with it, and TCP and ICMP must work both ways: laptop → a server
//! on the peer's tunnel address (IPv4 and IPv6), and workspace → the laptop's
//! tunnel address. `warren ping` gets replies and `status --json` calls the
//! handshake recent. Needs root, `wireguard-go` and `wg`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use warren_e2e::netns::{
    agent_view, curl_in, http_server_on, http_url, icmp_ping, ip_in, random_port, status_json,
    wg_in, write_secret, HelperOptions, TunnelLab, WireguardGo,
};
use warren_e2e::poll_until;

fn host_prefix(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// A one-page web root.
fn web_root(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("create a web root");
    std::fs::write(root.join("index.html"), text).expect("write a page");
    root
}

#[test]
fn helper_and_wireguard_go_talk_both_ways() {
    let Some(lab) = TunnelLab::start_or_skip("interop-wireguard-go", &["wireguard-go", "wg"])
    else {
        return;
    };
    let ws_ns = lab.net.workspace.clone();

    // The peer's key, made by wg itself.
    let private = wg_in(&ws_ns, &["genkey"], None);
    let public = wg_in(&ws_ns, &["pubkey"], Some(&format!("{private}\n")));
    let key_file = lab.dir.join("wg.key");
    write_secret(&key_file, &private);
    let wg_port = random_port();
    let wg_endpoint = SocketAddr::new(IpAddr::V4(lab.net.workspace_ip), wg_port);
    lab.add_wireguard_peer("ws", "wgo", &public, &[wg_endpoint]);

    let helper_port = random_port();
    let helper = lab.helper(HelperOptions::default().listen_port(helper_port));
    let status = lab.login_up(&helper);
    let device = status
        .session
        .device
        .clone()
        .expect("a connected session has a device");
    let peer = lab.wait_agent(&helper, "ws", "wgo");
    assert_eq!(peer.agent.public_key.as_deref(), Some(public.as_str()));
    let (peer_v4, peer_v6) = (peer.v4(), peer.v6());
    let dev_v4 = *device
        .addresses
        .iter()
        .find(|a| a.is_ipv4())
        .expect("the device has an IPv4 tunnel address");
    let dev_v6 = *device
        .addresses
        .iter()
        .find(|a| a.is_ipv6())
        .expect("the device has an IPv6 tunnel address");
    eprintln!("device {dev_v4} {dev_v6}; wireguard-go peer {peer_v4} {peer_v6} on {wg_endpoint}");

    // wireguard-go in the foreground: the guard stops it on drop (its
    // interface goes with it, and with the namespace in any case).
    let mut wgo = WireguardGo::start(lab.dir.path(), &ws_ns);
    let ifname = wgo.ifname.clone();
    let allowed = format!("{},{}", host_prefix(dev_v4), host_prefix(dev_v6));
    let helper_endpoint = SocketAddr::new(IpAddr::V4(lab.net.laptop_ip), helper_port);
    let key_s = key_file.to_string_lossy().into_owned();
    wg_in(
        &ws_ns,
        &[
            "set",
            &ifname,
            "private-key",
            &key_s,
            "listen-port",
            &wg_port.to_string(),
            "peer",
            &device.public_key,
            "allowed-ips",
            &allowed,
            "endpoint",
            &helper_endpoint.to_string(),
        ],
        None,
    );
    ip_in(
        &ws_ns,
        &["addr", "add", &host_prefix(peer_v4), "dev", &ifname],
    );
    ip_in(
        &ws_ns,
        &[
            "addr",
            "add",
            &host_prefix(peer_v6),
            "dev",
            &ifname,
            "nodad",
        ],
    );
    ip_in(&ws_ns, &["link", "set", &ifname, "up"]);
    ip_in(
        &ws_ns,
        &["route", "add", &host_prefix(dev_v4), "dev", &ifname],
    );
    ip_in(
        &ws_ns,
        &["-6", "route", "add", &host_prefix(dev_v6), "dev", &ifname],
    );

    // Laptop → workspace: servers on the peer's tunnel addresses.
    let page = format!("served on wireguard-go {}\n", warren_e2e::unique("p"));
    let root = web_root(lab.dir.path(), "www-ws", &page);
    let _srv4 = http_server_on(lab.dir.path(), "http-wg4", &ws_ns, peer_v4, 8080, &root);
    let _srv6 = http_server_on(lab.dir.path(), "http-wg6", &ws_ns, peer_v6, 8080, &root);
    for addr in [peer_v4, peer_v6] {
        let url = http_url(addr, 8080, "index.html");
        let Some(took) = lab.wait_page(&url, &page, Duration::from_secs(20)) else {
            helper.print_log_tail(60);
            wgo.print_log_tail(60);
            panic!("curl {url} from the laptop never reached the server behind wireguard-go");
        };
        eprintln!("laptop → wireguard-go: curl {url} ok after {took:?}");
    }

    // Workspace → laptop: ICMP to the device's addresses (the laptop's kernel
    // answers on its TUN), and TCP to a server on the device's address.
    for addr in [dev_v4, dev_v6] {
        let rtt = poll_until(Duration::from_secs(10), || {
            icmp_ping(&ws_ns, addr, Duration::from_secs(1))
        });
        eprintln!("workspace → laptop: ping {addr} through wireguard-go: {rtt:?}");
        assert!(rtt.is_some(), "no echo reply from the laptop's {addr}");
    }
    let back = format!("served on the laptop {}\n", warren_e2e::unique("p"));
    let root = web_root(lab.dir.path(), "www-laptop", &back);
    let _srv_laptop = http_server_on(
        lab.dir.path(),
        "http-laptop",
        &lab.net.laptop,
        dev_v4,
        8081,
        &root,
    );
    let url = http_url(dev_v4, 8081, "index.html");
    let got = poll_until(Duration::from_secs(10), || {
        let r = curl_in(&ws_ns, &["-s", "--max-time", "3", &url]);
        (r.ok() && r.text() == back).then_some(r.elapsed)
    });
    eprintln!("workspace → laptop: curl {url}: {got:?}");
    assert!(
        got.is_some(),
        "curl {url} from the workspace through wireguard-go failed"
    );

    // wireguard-go saw a handshake.
    let hs = wg_in(&ws_ns, &["show", &ifname, "latest-handshakes"], None);
    let ts: u64 = hs
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    eprintln!("wg show latest-handshakes: {hs}");
    assert!(ts > 0, "wireguard-go reports no handshake: {hs:?}");

    // `warren ping` through the tunnel, and the handshake in `status --json`.
    let out = helper
        .cli
        .run(&["ping", "ws/wgo", "-c", "3", "--timeout-ms", "2000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("warren ping ws/wgo:\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("reply from"),
        "warren ping got no reply from wireguard-go ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let recent = poll_until(Duration::from_secs(15), || {
        let v = agent_view(&status_json(&helper.cli)?, "ws", "wgo")?;
        (v.handshake().as_deref() == Some("recent")).then_some(v.tunnel)
    });
    eprintln!("status tunnel for wireguard-go: {recent:?}");
    assert!(
        recent.is_some(),
        "status --json never showed a recent handshake with wireguard-go"
    );
    assert!(wgo.is_running(), "wireguard-go exited");
}
