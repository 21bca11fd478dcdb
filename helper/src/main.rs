//! `warrend`: the Warren helper service.
//!
//! Listens on the helper socket for GUIs and the CLI, and keeps the session
//! with the coordinator. Runs as root (a systemd service in production) or,
//! on Windows, as the `warrend` service (`--service`, see windows_service.rs).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use warren_ipc::platform;
use warren_ipc::server::{Listener, ListenerOptions};
use warrend::engine::{self, EngineConfig};
use warrend::log_forward::ForwardLayer;
use warrend::subscribers::QueueLimits;

#[cfg(windows)]
mod windows_service;

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
    /// The machine's Warren policy (TOML): extra address ranges and DNS
    /// suffixes deployments may use, and the cap on agents. Must be
    /// writable only by root; a missing file means the defaults.
    #[arg(long, default_value_os_t = platform::helper_policy_path())]
    policy: PathBuf,
    /// Windows only: run under the service control manager (the installed
    /// service's command line has it).
    #[arg(long)]
    service: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Windows only: register the `warrend` service (LocalSystem, automatic
    /// start, restart on failure), or update it. Arguments after `--` are
    /// added to the service's command line after `--service`.
    InstallService {
        #[arg(last = true)]
        service_args: Vec<OsString>,
    },
    /// Windows only: stop the `warrend` service and remove it.
    UninstallService,
}

/// The policy at `path`, or the defaults if there is no file. A file that
/// others could change, or that does not parse, stops the helper: running
/// with a policy other than the one the administrator meant is worse.
fn load_policy(path: &std::path::Path) -> Result<warren_client_core::confine::Policy> {
    use warren_client_core::confine::Policy;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no policy file; deployments get the default limits");
            return Ok(Policy::default());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("can't read the policy file {}", path.display()))
        }
    };
    platform::admin_only_file(path).map_err(anyhow::Error::msg)?;
    let policy = Policy::from_toml(&text).with_context(|| {
        format!(
            "the policy file {} is not valid; fix it or remove it",
            path.display()
        )
    })?;
    tracing::info!(path = %path.display(), ?policy, "loaded the policy");
    Ok(policy)
}

fn main() {
    let args = Args::parse();
    if let Err(e) = dispatch(args) {
        eprintln!("warrend: error: {e:#}");
        std::process::exit(1);
    }
}

/// The service commands, the service, or the helper in the foreground
/// until a signal.
fn dispatch(args: Args) -> Result<()> {
    #[cfg(windows)]
    {
        match &args.command {
            Some(Command::InstallService { service_args }) => {
                return windows_service::install(service_args)
            }
            Some(Command::UninstallService) => return windows_service::uninstall(),
            None if args.service => return windows_service::run_dispatcher(args),
            None => {}
        }
    }
    #[cfg(not(windows))]
    {
        let what = match &args.command {
            Some(Command::InstallService { .. }) => Some("install-service"),
            Some(Command::UninstallService) => Some("uninstall-service"),
            None if args.service => Some("--service"),
            None => None,
        };
        if let Some(what) = what {
            anyhow::bail!(
                "`warrend {what}` is for Windows only; here the OS's service manager starts the helper (the package's systemd unit: `systemctl enable --now warrend`; on macOS its launchd daemon)"
            );
        }
    }
    tokio::runtime::Runtime::new()
        .context("can't start the async runtime")?
        .block_on(async {
            let mut terminate =
                platform::shutdown_signal().context("installing the shutdown signal handlers")?;
            run(args, async move { terminate.recv().await }).await
        })
}

/// The helper until `shutdown` completes (a signal, or the service
/// manager's stop request): serves the socket, then undoes its network
/// changes.
async fn run(args: Args, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
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
    let policy = load_policy(&args.policy)?;
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
        policy,
        ..EngineConfig::default()
    };
    let mut listener = Listener::bind(ListenerOptions {
        path: args.socket.clone(),
        group: args.group.clone(),
    })
    .context("the helper could not open its socket")?;
    let (engine, _engine_task) = engine::spawn(config, Some(log_rx));
    tracing::info!(version = warrend::VERSION, socket = %args.socket.display(), "warrend started");
    warrend::service_manager::ready();
    #[cfg(windows)]
    windows_service::ready();

    tokio::pin!(shutdown);
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
            () = &mut shutdown => {
                tracing::info!("shutting down");
                warrend::service_manager::stopping();
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
