//! IPv6 end to end: the agent's only WireGuard endpoint is on the workspace's
//! IPv6 veth address (an IPv6 underlay), and the laptop reaches the agent's
//! IPv6 tunnel address (`http://[fd..]:8080/`). Laptop and workspace
//! namespaces, real binaries; needs root.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use warren_e2e::netns::{
    agent_view, http_url, status_json, AgentOptions, HelperOptions, TunnelLab,
};
use warren_e2e::poll_until;

#[test]
fn ipv6_tunnel_address_over_an_ipv6_underlay() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-ipv6", &[]) else {
        return;
    };
    let (_http, page) = lab.serve_page("www", 8080);
    let endpoint = SocketAddr::new(IpAddr::V6(lab.net.workspace_ip6), 51820);
    let agent = lab.agent(
        AgentOptions::new("ws", "api")
            .allow_ports("8080")
            .endpoint(endpoint),
    );
    let helper = lab.helper(HelperOptions::default());
    lab.login_up(&helper);
    let view = lab.wait_agent(&helper, "ws", "api");
    assert_eq!(
        view.agent.endpoints,
        vec![endpoint],
        "the agent should announce only its IPv6 underlay endpoint"
    );
    let v6 = view.v6();
    assert!(
        matches!(v6, IpAddr::V6(a) if a.segments()[0] & 0xfe00 == 0xfc00),
        "the agent's IPv6 tunnel address {v6} is not a ULA"
    );

    let url = http_url(v6, 8080, "index.html");
    let Some(took) = lab.wait_page(&url, &page, Duration::from_secs(20)) else {
        helper.print_log_tail(60);
        agent.print_log_tail(60);
        panic!("curl {url} never returned the page over the IPv6 underlay");
    };
    eprintln!("curl {url} over the IPv6 underlay got the page after {took:?}");

    // The helper's figures name the IPv6 underlay endpoint it talks to.
    let seen = poll_until(Duration::from_secs(15), || {
        let v = agent_view(&status_json(&helper.cli)?, "ws", "api")?;
        let ep = v.tunnel.as_ref()?.get("endpoint")?.as_str()?.to_string();
        Some(ep)
    });
    eprintln!("status tunnel endpoint: {seen:?}");
    let seen = seen.expect("status --json never showed the agent's tunnel endpoint");
    let seen: SocketAddr = seen.parse().expect("the endpoint is ip:port");
    assert_eq!(
        seen.ip().to_canonical(),
        endpoint.ip(),
        "the tunnel does not run over the IPv6 underlay"
    );
}
