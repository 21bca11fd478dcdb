//! `warren-agent`: runs inside a workspace, without root.
//!
//! Registers its WireGuard key with the coordinator, stays connected (so its
//! owner sees it online) and keeps the table of client devices it should
//! accept, reconnecting with backoff when the coordinator goes away.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use warren_agent::keys::AgentKey;
use warren_agent::peers::PeerTable;
use warren_control::{ConnectError, ControlConfig, ControlConnection};
use warren_proto::control::{Register, ServerMessage, CONTROL_VERSION};
use warren_proto::Secret;
use warren_session::Backoff;

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
    /// UDP endpoint(s) to advertise to clients (repeatable).
    #[arg(long = "endpoint")]
    endpoints: Vec<SocketAddr>,
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

enum Outcome {
    /// The connection ended; try again after a pause.
    Retry(String),
}

async fn run(args: Args) -> Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("can't read the token file {}", args.token_file.display()))?;
    let token = Secret::new(token.trim());
    if token.is_empty() {
        bail!(
            "the token file {} is empty; put the token from `warren-coord agent add` in it",
            args.token_file.display()
        );
    }
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
    let config = ControlConfig {
        url: args.coordinator.trim_end_matches('/').to_string(),
        token,
        ca_pem,
        register: Register {
            protocol_version: CONTROL_VERSION,
            public_key: key.public_base64(),
            endpoints: args.endpoints.clone(),
            hostname: std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string()),
            app_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    tracing::info!(public_key = %key.public_base64(), coordinator = %config.url, "warren-agent starting");

    let cap = std::env::var("WARREN_BACKOFF_MAX_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Backoff::DEFAULT_CAP);
    let mut backoff = Backoff::new(Backoff::DEFAULT_BASE.min(cap), cap, rand::random());
    let mut attempt = 0u32;
    let mut peers = PeerTable::default();
    loop {
        let outcome = tokio::select! {
            outcome = session(&config, &mut peers, &mut attempt) => outcome?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("stopping");
                return Ok(());
            }
        };
        let Outcome::Retry(reason) = outcome;
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "disconnected from the coordinator");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One connection. Errors only for what retrying cannot fix.
async fn session(
    config: &ControlConfig,
    peers: &mut PeerTable,
    attempt: &mut u32,
) -> Result<Outcome> {
    let mut conn = match ControlConnection::connect(config).await {
        Ok(conn) => conn,
        Err(ConnectError::Unauthorized(_)) => bail!(
            "the coordinator rejected this agent's token: the agent was removed or the token revoked. Create a new one with `warren-coord agent add` and restart the agent"
        ),
        Err(ConnectError::Rejected(m)) | Err(ConnectError::Config(m)) => {
            bail!("the coordinator refused this agent: {m}")
        }
        Err(ConnectError::Unreachable(m)) => {
            return Ok(Outcome::Retry(format!("can't reach the coordinator: {m}")))
        }
    };
    let welcome = conn.welcome().clone();
    *attempt = 0;
    peers.begin_stream();
    tracing::info!(
        agent = %welcome.id,
        user = %welcome.user,
        addresses = ?welcome.addresses,
        "registered with the coordinator"
    );
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    loop {
        tokio::select! {
            msg = conn.next() => match msg {
                Ok(Some(ServerMessage::PeerUpdate(update))) => {
                    if let Err(e) = peers.apply(update) {
                        return Ok(Outcome::Retry(format!("peer stream out of step ({e:?}); resubscribing")));
                    }
                    tracing::info!(clients = peers.len(), "client devices updated");
                }
                Ok(Some(ServerMessage::Error(e))) => {
                    if e.error == "unauthorized" {
                        bail!("the coordinator revoked this agent: {}. Create a new one with `warren-coord agent add`", e.message);
                    }
                    return Ok(Outcome::Retry(e.message));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Outcome::Retry("the coordinator closed the connection".into())),
                Err(e) => return Ok(Outcome::Retry(e.to_string())),
            },
            _ = ping.tick() => {
                if conn.last_activity().elapsed() > Duration::from_secs(45) {
                    return Ok(Outcome::Retry("no answer from the coordinator for 45 s".into()));
                }
                if let Err(e) = conn.ping().await {
                    return Ok(Outcome::Retry(e.to_string()));
                }
            }
        }
    }
}
