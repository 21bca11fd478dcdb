//! Fuzz target: arbitrary bytes as the coordinator's side of the control
//! WebSocket, one text message per line, into the two clients that trust it
//! least: the helper's `ClientState` (a `Welcome`, then workspace updates,
//! screened and confined before they become routes, WireGuard peers and DNS
//! answers) and the agent's device table (`PeerUpdate`s into its WireGuard
//! peer table).
//!
//! Nothing may panic, and whatever the coordinator says, everything the
//! helper is told to configure stays inside the local policy: routes and
//! device addresses inside 100.64.0.0/10 and fc00::/7 and never a default
//! route, every peer address inside the deployment's own prefixes, every DNS
//! name under the accepted suffix, no unusable endpoint, and no more agents
//! than the policy's cap.

#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libfuzzer_sys::fuzz_target;
use warren_agent::dataplane::peer_config;
use warren_agent::peers::PeerTable as AgentPeers;
use warren_client_core::confine::Policy;
use warren_client_core::{
    ClientConfig, ClientState, Command, NameChange, PeerChange, SessionKeys, TunnelFacts,
};
use warren_netcfg::dns::DnsMode;
use warren_proto::control::{ServerMessage, TokenKind, Welcome, CONTROL_VERSION};
use warren_proto::ipc::TunnelState;
use warren_proto::limits::check_endpoint;
use warren_proto::model::DeploymentInfo;
use warren_proto::Secret;
use warren_tunnel::{PeerConfig, StaticSecret, Tunnel};

/// Small, so the fuzzer reaches the cap with a few agents.
const MAX_AGENTS: usize = 8;
const MAX_MESSAGES: usize = 64;

fn welcome() -> Welcome {
    Welcome {
        protocol_version: CONTROL_VERSION,
        coordinator_version: "fuzz".into(),
        deployment: DeploymentInfo {
            suffix: "warren".into(),
            ipv4_prefix: "100.64.0.0/10".into(),
            ipv6_prefix: "fd00::/48".into(),
        },
        user: "alice".into(),
        kind: TokenKind::User,
        id: "device-1".into(),
        addresses: vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
        relays: vec![],
    }
}

/// What the accepted deployment allows; checked against every command.
struct Bounds {
    prefixes: Vec<IpNet>,
    suffix: String,
}

impl Bounds {
    fn of(deployment: &DeploymentInfo) -> Option<Bounds> {
        let v4: Ipv4Net = deployment.ipv4_prefix.parse().ok()?;
        let v6: Ipv6Net = deployment.ipv6_prefix.parse().ok()?;
        Some(Bounds {
            prefixes: vec![IpNet::V4(v4), IpNet::V6(v6)],
            suffix: deployment.suffix.trim_end_matches('.').to_ascii_lowercase(),
        })
    }

    fn address(&self, addr: &IpAddr) {
        assert!(
            self.prefixes.iter().any(|p| p.contains(addr)),
            "{addr} is outside the deployment's prefixes {:?}",
            self.prefixes
        );
    }

    fn name(&self, name: &str) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        assert!(
            name.ends_with(&format!(".{}", self.suffix)) || name == self.suffix,
            "{name} is not under .{}",
            self.suffix
        );
    }

    fn peer(&self, peer: &PeerConfig) {
        for a in &peer.addresses {
            self.address(a);
        }
        for ep in peer.endpoint.iter().chain(&peer.candidates) {
            assert!(check_endpoint(*ep, false).is_ok(), "unusable endpoint {ep}");
        }
    }
}

/// The local policy's own bounds, whatever the deployment: never outside
/// 100.64.0.0/10 or fc00::/7.
fn inside_policy(addr: &IpAddr, len: u8) {
    let cgnat: IpNet = "100.64.0.0/10".parse().unwrap();
    let ula: IpNet = "fc00::/7".parse().unwrap();
    let net = IpNet::new(*addr, len).expect("valid prefix length");
    assert!(
        cgnat.contains(&net) || ula.contains(&net),
        "{addr}/{len} is outside the local policy"
    );
}

fn check_commands(c: &mut ClientState, bounds: Option<&Bounds>, now: Instant) {
    while let Some(command) = c.poll_command() {
        match command {
            Command::TunnelUp(up) => {
                let bounds = bounds.expect("no tunnel before a deployment is accepted");
                for (addr, len) in up.plan.addresses.iter().chain(&up.plan.routes) {
                    inside_policy(addr, *len);
                }
                for peer in &up.peers {
                    bounds.peer(peer);
                }
                for (name, addrs) in &up.names {
                    bounds.name(name);
                    addrs.iter().for_each(|a| bounds.address(a));
                }
                c.handle_tunnel_report(now, up.generation, TunnelState::Up, None);
            }
            Command::TunnelChanges { peers, names, .. } => {
                let bounds = bounds.expect("no tunnel before a deployment is accepted");
                for change in &peers {
                    if let PeerChange::Upsert(peer) = change {
                        bounds.peer(peer);
                    }
                }
                for change in &names {
                    if let NameChange::Upsert { name, addresses } = change {
                        bounds.name(name);
                        addresses.iter().for_each(|a| bounds.address(a));
                    }
                }
            }
            Command::TunnelDown { generation } => {
                c.handle_tunnel_report(now, generation, TunnelState::Down, None);
            }
            Command::ConnectControl(_)
            | Command::DisconnectControl { .. }
            | Command::ReportStats { .. } => {}
        }
    }
    while c.poll_event().is_some() {}
    assert!(
        c.agent_count() <= MAX_AGENTS,
        "{} agents kept",
        c.agent_count()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data
        .split(|b| *b == b'\n')
        .take(MAX_MESSAGES)
        .map(|line| serde_json::from_slice::<ServerMessage>(line).ok())
        .peekable();

    let mut now = Instant::now();
    let mut client = ClientState::new(ClientConfig {
        seed: 7,
        tunnel: Some(TunnelFacts {
            tun_name: "warren0".into(),
            listen_port: 51820,
            dns_mode: DnsMode::ResolvConf,
            resolv_conf: "/etc/resolv.conf".into(),
        }),
        policy: Policy {
            max_agents: MAX_AGENTS,
            ..Policy::default()
        },
        ..ClientConfig::default()
    });
    client
        .handle_start(
            now,
            "https://coord.example",
            Secret::new("wut_id_secret"),
            None,
            SessionKeys::from_secret([9; 32]),
            None,
        )
        .expect("a valid start");
    let mut generation = None;
    while let Some(c) = client.poll_command() {
        if let Command::ConnectControl(cc) = c {
            generation = Some(cc.generation);
        }
    }
    let generation = generation.expect("a start opens a connection");

    // The first line may be the coordinator's own Welcome; otherwise a
    // valid one, so the fuzzer spends its time on the updates.
    let welcome = match lines.peek() {
        Some(Some(ServerMessage::Welcome(w))) => {
            let w = w.clone();
            lines.next();
            w
        }
        _ => welcome(),
    };
    let bounds = Bounds::of(&welcome.deployment);
    client.handle_control_connected(now, generation, welcome);
    check_commands(&mut client, bounds.as_ref(), now);

    let mut agent_peers = AgentPeers::default();
    agent_peers.begin_stream();
    let mut agent_tunnel = Tunnel::new(StaticSecret::from([3; 32]));

    for msg in lines.flatten() {
        now += Duration::from_millis(250);
        match msg {
            ServerMessage::WorkspaceUpdate(update) => {
                client.handle_control_update(now, generation, update);
            }
            ServerMessage::PeerUpdate(update) => {
                if agent_peers.apply(update).is_ok() {
                    let configs: Vec<PeerConfig> = agent_peers
                        .peers()
                        .filter_map(|p| peer_config(p).ok())
                        .collect();
                    // Duplicate keys or addresses are refused, never a panic.
                    let _ = agent_tunnel.set_peers(now, configs);
                    assert!(agent_tunnel.peer_count() <= warren_tunnel::MAX_PEERS);
                } else {
                    agent_peers.begin_stream();
                }
            }
            ServerMessage::Welcome(_)
            | ServerMessage::Error(_)
            | ServerMessage::Relays { .. }
            | ServerMessage::Unknown => {}
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        check_commands(&mut client, bounds.as_ref(), now);
        // Status is what a person sees; building it must hold up too.
        let _ = client.status(now, "fuzz");
    }
});
