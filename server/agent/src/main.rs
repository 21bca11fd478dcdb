//! `warren-agent`: runs inside a workspace, without root.
//!
//! Registers its WireGuard key and UDP endpoint with the coordinator, stays
//! connected (so its owner sees it online), keeps the table of client devices
//! it should accept, and runs the userspace data plane (WireGuard + smoltcp)
//! that answers ping and forwards allowed TCP ports to `127.0.0.1`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::watch;
use warren_agent::dataplane::{parse_allow_ports, Dataplane, PathWiring, StackConfig};
use warren_agent::keys::AgentKey;
use warren_agent::peers::PeerTable;
use warren_control::{ControlConfig, Link, LinkError};
use warren_path::RelayServer;
use warren_proto::control::ClientPeer;
use warren_proto::control::{ClientMessage, Register, ServerMessage, CONTROL_VERSION};
use warren_session::Backoff;
use x25519_dalek::StaticSecret;

#[derive(Debug, Parser)]
#[command(name = "warren-agent", version, about = "The Warren workspace agent")]
struct Args {
    /// Coordinator URL, e.g. https://warren.example.com
    #[arg(long)]
    coordinator: String,
    /// File holding this agent's token (from `warren-coord agent add`).
    #[arg(long)]
    token_file: PathBuf,
    /// Keep the WireGuard key in this file across restarts (created if missing).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for the coordinator.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// UDP endpoint(s) clients should send WireGuard to (repeatable),
    /// e.g. the workspace's reachable IP and --listen-port.
    #[arg(long = "endpoint")]
    endpoints: Vec<SocketAddr>,
    /// UDP port for WireGuard (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
    /// TCP ports forwarded to 127.0.0.1, e.g. `22,8080,3000-3010`; others are refused.
    #[arg(long, default_value = "")]
    allow_ports: String,
}

/// The data plane: bound before registering (its port is announced), started
/// once the coordinator has said which tunnel addresses are ours.
struct DataplaneSlot {
    pending: Option<Dataplane>,
    key: StaticSecret,
    allow_ports: Vec<u16>,
    addresses: Option<Vec<IpAddr>>,
    peers: watch::Sender<Vec<ClientPeer>>,
    /// The coordinator's TURN relays, for the path layer.
    relays: watch::Sender<Vec<RelayServer>>,
    /// The path layer's candidates (host, server-reflexive, relayed).
    candidates: watch::Sender<Vec<SocketAddr>>,
    /// `--endpoint`: fixed host candidates.
    endpoints: Vec<SocketAddr>,
}

impl DataplaneSlot {
    fn on_welcome(&mut self, addresses: &[IpAddr]) {
        if let Some(running) = &self.addresses {
            if running.as_slice() != addresses {
                tracing::warn!(
                    ?running,
                    new = ?addresses,
                    "the coordinator moved this agent to new addresses; restart the agent to use them"
                );
            }
            return;
        }
        let Some(dataplane) = self.pending.take() else {
            return;
        };
        self.addresses = Some(addresses.to_vec());
        let config = StackConfig {
            private_key: self.key.clone(),
            addresses: addresses.to_vec(),
            allow_ports: self.allow_ports.clone(),
        };
        let peers = self.peers.subscribe();
        let wiring = PathWiring {
            relays: self.relays.subscribe(),
            candidates: self.candidates.clone(),
            endpoints: self.endpoints.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = dataplane.run_with_paths(config, peers, Some(wiring)).await {
                tracing::error!("the data plane stopped: {e}");
            }
        });
    }
}

#[tokio::main]
async fn main() {
    let _guard = match warren_telemetry::init("info", None, "warren-agent", None) {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("warren-agent: warning: {e}");
            None
        }
    };
    if let Err(e) = run(Args::parse()).await {
        tracing::error!("{e:#}");
        eprintln!("warren-agent: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let token = warren_agent::keys::read_token_file(&args.token_file)?;
    let ca_pem = match &args.ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("can't read the CA file {}", path.display()))?,
        ),
        None => None,
    };
    let key = match &args.key_file {
        Some(path) => AgentKey::load_or_create(path)?,
        None => AgentKey::generate(),
    };
    let allow_ports = parse_allow_ports(&args.allow_ports)
        .map_err(|e| anyhow::anyhow!("--allow-ports {:?}: {e}", args.allow_ports))?;
    let dataplane = Dataplane::bind(args.listen_port).await.with_context(|| {
        format!(
            "can't open UDP port {} for WireGuard; pick another with --listen-port",
            args.listen_port
        )
    })?;
    let local = dataplane
        .local_addr()
        .context("reading the WireGuard UDP port")?;
    let endpoints = if args.endpoints.is_empty() {
        let found = warren_io::local_endpoints(local.port(), None);
        tracing::info!(
            port = local.port(),
            ?found,
            "no --endpoint given: announcing this machine's addresses, and the relayed and server-reflexive ones once the coordinator names TURN relays"
        );
        found
    } else {
        args.endpoints.clone()
    };
    let (peers_tx, _) = watch::channel(Vec::new());
    let (relays_tx, _) = watch::channel(Vec::new());
    let (candidates_tx, _) = watch::channel(Vec::new());
    let mut slot = DataplaneSlot {
        pending: Some(dataplane),
        key: key.secret(),
        allow_ports,
        addresses: None,
        peers: peers_tx,
        relays: relays_tx,
        candidates: candidates_tx,
        endpoints: args.endpoints.clone(),
    };
    let config = ControlConfig {
        url: args.coordinator.trim_end_matches('/').to_string(),
        token,
        ca_pem,
        register: Register {
            protocol_version: CONTROL_VERSION,
            public_key: key.public_base64(),
            endpoints,
            hostname: warren_ipc::platform::hostname(),
            app_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    tracing::info!(public_key = %key.public_base64(), coordinator = %config.url, "warren-agent starting");

    let cap = warren_session::backoff_cap_from_env()?;
    let mut backoff = Backoff::with_cap(cap, rand::random());
    let mut attempt = 0u32;
    let mut peers = PeerTable::default();
    loop {
        let reason = tokio::select! {
            ended = session(&config, &mut peers, &mut attempt, &mut slot) => ended?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("stopping");
                return Ok(());
            }
        };
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "disconnected from the coordinator");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One connection. `Ok(reason)` when it ended and is worth retrying after a
/// pause; `Err` only for what retrying cannot fix. The keep-alive and the
/// sorting of failures are [`Link`]'s, the same as the helper's.
async fn session(
    config: &ControlConfig,
    peers: &mut PeerTable,
    attempt: &mut u32,
    slot: &mut DataplaneSlot,
) -> Result<String> {
    // A reconnection announces what the path layer found, not only the
    // host addresses.
    let mut config = config.clone();
    let mut announced = slot.candidates.subscribe();
    let found = announced.borrow_and_update().clone();
    if !found.is_empty() {
        config.register.endpoints = found;
    }
    let config = &config;
    let mut link = match Link::connect(config).await {
        Ok(link) => link,
        Err(LinkError::Unauthorized(_)) => bail!(
            "the coordinator rejected this agent's token: the agent was removed or the token revoked. Create a new one with `warren-coord agent add` and restart the agent"
        ),
        Err(LinkError::Rejected(m) | LinkError::Config(m)) => {
            bail!("the coordinator refused this agent: {m}")
        }
        Err(LinkError::Unreachable(m) | LinkError::Lost(m)) => {
            return Ok(format!("can't reach the coordinator: {m}"))
        }
    };
    let welcome = link.welcome().clone();
    *attempt = 0;
    peers.begin_stream();
    tracing::info!(
        agent = %welcome.id,
        user = %welcome.user,
        addresses = ?welcome.addresses,
        relays = welcome.relays.len(),
        "registered with the coordinator"
    );
    slot.on_welcome(&welcome.addresses);
    if !welcome.relays.is_empty() {
        slot.relays
            .send_replace(warren_control::resolve_relays(&welcome.relays, &config.url).await);
    }
    loop {
        let next = tokio::select! {
            next = link.next() => next,
            changed = announced.changed() => {
                if changed.is_ok() {
                    let endpoints = announced.borrow_and_update().clone();
                    tracing::info!(?endpoints, "announcing new endpoints");
                    if let Err(e) = link.send(&ClientMessage::Endpoints { endpoints }).await {
                        return Ok(e.to_string());
                    }
                }
                continue;
            }
        };
        match next {
            Ok(ServerMessage::PeerUpdate(update)) => {
                if let Err(e) = peers.apply(update) {
                    return Ok(format!("peer stream out of step ({e:?}); resubscribing"));
                }
                tracing::info!(clients = peers.len(), "client devices updated");
                slot.peers.send_replace(peers.peers().cloned().collect());
            }
            Ok(ServerMessage::Relays { relays }) => {
                tracing::debug!(
                    relays = relays.len(),
                    expires_at = relays.iter().map(|r| r.expires_at).min(),
                    "fresh TURN credentials"
                );
                slot.relays
                    .send_replace(warren_control::resolve_relays(&relays, &config.url).await);
            }
            Ok(_) => {}
            Err(LinkError::Unauthorized(m)) => bail!(
                "the coordinator revoked this agent: {m}. Create a new one with `warren-coord agent add`"
            ),
            Err(e) => return Ok(e.to_string()),
        }
    }
}
