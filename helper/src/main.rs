//! `warrend`: the Warren helper service.
//!
//! Listens on the helper socket for GUIs and the CLI, and keeps the session
//! with the coordinator. Runs as root (a systemd service in production).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use warren_ipc::platform;
use warren_ipc::server::{Listener, ListenerOptions};
use warrend::engine::{self, EngineConfig};
use warrend::log_forward::ForwardLayer;
use warrend::subscribers::QueueLimits;

#[derive(Debug, Parser)]
#[command(name = "warrend", version, about = "The Warren helper service")]
struct Args {
    /// Where to listen for the app and the CLI.
    #[arg(long, env = "WARREN_SOCKET", default_value_os_t = platform::default_endpoint())]
    socket: PathBuf,
    /// Members of this group (and root) may control the helper.
    #[arg(long, default_value = warren_ipc::DEFAULT_GROUP)]
    group: String,
    /// Directory for the rotating log file.
    #[arg(long, default_value_os_t = platform::helper_log_dir())]
    log_dir: PathBuf,
    /// Run the control plane only: no TUN device, routes or WireGuard (for
    /// tests and for hosts that only want to list workspaces).
    #[arg(long)]
    no_tunnel: bool,
    /// Name of the TUN device.
    #[arg(long, default_value = warren_netcfg::DEFAULT_TUN_NAME)]
    tun_name: String,
    /// Where the record of network changes is kept, so a
    /// crashed helper's leftovers are undone at the next start.
    #[arg(long, default_value_os_t = platform::helper_state_dir())]
    state_dir: PathBuf,
    /// Local UDP port for WireGuard; 0 lets the OS choose.
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
    /// How workspace names reach the helper's DNS stub: auto (systemd-resolved
    /// if it runs, else /etc/resolv.conf on Linux; NRPT on Windows;
    /// /etc/resolver on macOS), resolved, resolv-conf, nrpt, mac-resolver or
    /// off.
    #[arg(long, env = "WARREN_DNS_MODE", default_value = "auto")]
    dns_mode: warren_netcfg::dns::DnsMode,
    /// The resolver configuration the resolv-conf mode manages.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("warrend: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = Args::parse();
    let (forward, log_rx) = ForwardLayer::new(1024);
    let _log_guard = match warren_telemetry::init(
        "info",
        Some(&args.log_dir),
        "warrend",
        Some(Box::new(forward)),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("warrend: warning: {e}; logging to stderr only");
            let (forward, _) = ForwardLayer::new(1);
            warren_telemetry::init("info", None, "warrend", Some(Box::new(forward)))
                .map_err(anyhow::Error::msg)?
        }
    };

    let cap = warren_session::backoff_cap_from_env()?;
    let tunnel = if !args.no_tunnel {
        let manager = warrend::dataplane::TunnelManager::spawn(
            warrend::dataplane::DriverConfig {
                tun_name: args.tun_name.clone(),
                journal: args.state_dir.join("netstate.json"),
                listen_port: args.listen_port,
                dns_mode: match args.dns_mode {
                    warren_netcfg::dns::DnsMode::Auto => warren_netcfg::dns::detect_mode(),
                    mode => mode,
                },
                resolv_conf: args.resolv_conf.clone(),
            },
        )
        .context("the helper could not set up its data plane (undo the previous run's network changes, bind the WireGuard port) — check the journal in --state-dir, that --listen-port is free and that warrend runs as root")?;
        Some(manager)
    } else {
        None
    };
    let manager = tunnel.as_ref().map(|(m, _)| m.clone());
    let config = EngineConfig {
        backoff_cap: cap,
        backoff_base: warren_session::Backoff::DEFAULT_BASE.min(cap),
        hostname: platform::hostname(),
        tunnel,
        ..EngineConfig::default()
    };
    let mut listener = Listener::bind(ListenerOptions {
        path: args.socket.clone(),
        group: args.group.clone(),
    })
    .context("the helper could not open its socket")?;
    let (engine, _engine_task) = engine::spawn(config, Some(log_rx));
    tracing::info!(version = warrend::VERSION, socket = %args.socket.display(), "warrend started");

    let mut terminate =
        platform::shutdown_signal().context("installing the shutdown signal handlers")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    let engine = engine.clone();
                    tokio::spawn(warrend::connection::serve(accepted, engine, QueueLimits::default()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = terminate.recv() => {
                tracing::info!("shutting down");
                break;
            }
        }
    }
    drop(listener);
    if let Some(manager) = &manager {
        manager.shutdown().await;
    }
    Ok(())
}
