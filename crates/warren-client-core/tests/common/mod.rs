//! The shared harness of the client-state tests: fixtures (workspaces,
//! agents, updates, a Welcome) and [`Sim`], a client state with a data plane
//! and a simulated clock.

#![allow(dead_code)]

use std::time::Instant;

use base64::Engine as _;
use warren_client_core::{ClientConfig, ClientState, Command, Event, SessionKeys, TunnelFacts};
use warren_netcfg::dns::DnsMode;
use warren_proto::control::{TokenKind, UpdateKind, Welcome, WorkspaceUpdate, CONTROL_VERSION};
use warren_proto::ipc::{SessionState, TunnelState};
use warren_proto::model::{Agent, DeploymentInfo, Workspace};
use warren_proto::Secret;

pub fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

pub fn b64(k: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

pub fn ws(id: &str) -> Workspace {
    Workspace {
        id: id.into(),
        name: id.into(),
        owner: "alice".into(),
    }
}

/// Agent `id` (n picks its key and address) in workspace `w`.
pub fn agent(id: &str, w: &str, n: u8) -> Agent {
    Agent {
        id: id.into(),
        name: "main".into(),
        workspace_id: w.into(),
        public_key: Some(b64(key(n))),
        addresses: vec![
            format!("100.64.1.{n}").parse().unwrap(),
            format!("fd00::1:{n}").parse().unwrap(),
        ],
        endpoints: vec![format!("10.9.0.{n}:51820").parse().unwrap()],
        dns_names: vec![format!("main.{w}.alice.warren"), format!("{w}.warren")],
        online: true,
    }
}

pub fn snapshot(seq: u64, more: bool, wss: Vec<Workspace>, agents: Vec<Agent>) -> WorkspaceUpdate {
    WorkspaceUpdate {
        kind: UpdateKind::Snapshot,
        seq,
        more,
        upserted_workspaces: wss,
        upserted_agents: agents,
        deleted_workspaces: vec![],
        deleted_agents: vec![],
    }
}

pub fn diff(seq: u64, up: Vec<Agent>, del: Vec<&str>) -> WorkspaceUpdate {
    WorkspaceUpdate {
        kind: UpdateKind::Diff,
        seq,
        more: false,
        upserted_workspaces: vec![],
        upserted_agents: up,
        deleted_workspaces: vec![],
        deleted_agents: del.into_iter().map(String::from).collect(),
    }
}

pub fn welcome() -> Welcome {
    Welcome {
        protocol_version: CONTROL_VERSION,
        coordinator_version: "test".into(),
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

pub fn facts() -> TunnelFacts {
    TunnelFacts {
        tun_name: "warren0".into(),
        listen_port: 51820,
        dns_mode: DnsMode::Off,
        resolv_conf: "/etc/resolv.conf".into(),
    }
}

/// A client with a data plane, and the simulated clock.
pub struct Sim {
    pub c: ClientState,
    pub now: Instant,
}

impl Sim {
    pub fn new() -> Self {
        Sim {
            c: ClientState::new(ClientConfig {
                seed: 42,
                tunnel: Some(facts()),
                ..ClientConfig::default()
            }),
            now: Instant::now(),
        }
    }

    pub fn commands(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.c.poll_command()).collect()
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.c.poll_event()).collect()
    }

    pub fn state(&self) -> SessionState {
        self.c.session_info(self.now).state
    }

    pub fn tunnel_state(&self) -> TunnelState {
        self.c.session_info(self.now).tunnel.unwrap().state
    }

    /// Starts a session and returns the control generation to answer.
    pub fn start(&mut self) -> u64 {
        self.start_with("https://coord.example/", None)
    }

    /// Starts a session against `url`, with the deployment accepted at
    /// sign-in, and returns the control generation to answer.
    pub fn start_with(&mut self, url: &str, accepted: Option<DeploymentInfo>) -> u64 {
        self.c
            .handle_start(
                self.now,
                url,
                Secret::new("wut_id_secret"),
                None,
                SessionKeys::from_secret([9; 32]),
                accepted,
            )
            .unwrap();
        self.next_connection().expect("a connection is opened")
    }

    /// The generation of the next `ConnectControl` among the commands.
    pub fn next_connection(&mut self) -> Option<u64> {
        self.commands().into_iter().find_map(|c| match c {
            Command::ConnectControl(cc) => Some(cc.generation),
            _ => None,
        })
    }

    /// Waits out the reconnect backoff; the new connection's generation.
    pub fn retry(&mut self) -> u64 {
        let at = self.c.poll_timeout().expect("a retry is scheduled");
        self.now = self.now.max(at);
        self.c.handle_timeout(self.now);
        self.next_connection().expect("reconnects")
    }

    /// Connects with `agents` in one snapshot; returns the tunnel's `Up`.
    pub fn connect(&mut self, agents: Vec<Agent>) -> (u64, u64) {
        let g = self.start();
        self.c.handle_control_connected(self.now, g, welcome());
        let mut ids: Vec<&str> = agents.iter().map(|a| a.workspace_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let wss = ids.into_iter().map(ws).collect();
        self.c
            .handle_control_update(self.now, g, snapshot(0, false, wss, agents));
        let up = self
            .commands()
            .into_iter()
            .find_map(|c| match c {
                Command::TunnelUp(up) => Some(up.generation),
                _ => None,
            })
            .expect("the tunnel is started once connected");
        self.c
            .handle_tunnel_report(self.now, up, TunnelState::Up, None);
        self.events();
        (g, up)
    }
}
