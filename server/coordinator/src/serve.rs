//! `warren-coord serve`: binds the listener (TLS, or plain HTTP on loopback
//! only), raises the descriptor limit and derives the connection limits from
//! it, starts the world task and serves the API until SIGINT/SIGTERM.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warren_coord::addr::IPV4_PREFIX;
use warren_coord::api::{self, AppState};
use warren_coord::db::Db;
use warren_coord::guard::{AuthThrottle, ConnLimits};
use warren_coord::hub::Hub;
use warren_coord::listener::{self, ListenConfig};
use warren_coord::names;
use warren_coord::turn::{self, TurnConfig};
use warren_proto::model::DeploymentInfo;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8443 or [::]:443.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// TLS certificate chain (PEM). Required unless listening on loopback.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// DNS suffix of workspace names (stored on first serve; default `warren`).
    #[arg(long)]
    suffix: Option<String>,
    /// Most open connections, WebSockets included (default: the descriptor
    /// limit, raised to its hard limit at start, less a reserve).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections from one address (an IPv6 /64) that are not yet
    /// WebSockets; raise it for many clients behind one NAT address.
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_connections_per_address: usize,
    /// Seconds a connection that is not a WebSocket may wait for a request
    /// to begin (new, or kept alive after a response) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a request head may take from its first byte to its end.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Failed authentications one address may make with one token id (or
    /// with made-up ones) before that gets 429 (0 turns the throttle off).
    #[arg(long, value_name = "N", default_value_t = 10)]
    auth_failures_burst: u32,
    /// Failed authentications per minute after that, per address and token id.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    auth_failures_per_minute: u32,
    /// A TURN server (coturn with `use-auth-secret`) clients may relay
    /// through, as HOST:PORT (repeatable, at most 8). Each client gets
    /// short-lived credentials for every one.
    #[arg(long = "turn", value_name = "HOST:PORT", requires = "turn_secret_file")]
    turn: Vec<String>,
    /// File holding the TURN servers' `static-auth-secret` (readable by
    /// its owner only). Required with --turn.
    #[arg(long, value_name = "FILE", requires = "turn")]
    turn_secret_file: Option<PathBuf>,
    /// The TURN servers' realm (default: the DNS suffix).
    #[arg(long, value_name = "REALM", requires = "turn")]
    turn_realm: Option<String>,
    /// Seconds TURN credentials stay valid (60-86400); clients get new ones
    /// after two thirds of that.
    #[arg(long, value_name = "SECS", default_value_t = turn::DEFAULT_TTL.as_secs(), requires = "turn")]
    turn_credential_ttl: u64,
    #[command(flatten)]
    oidc: warren_coord::oidc::OidcArgs,
}

/// Descriptors kept for everything but client sockets: the database (each
/// pooled connection holds the file, its WAL and shared memory), the
/// listener, stdio, the runtime's own; plus a share of the limit for
/// sockets evicted but not yet closed.
fn descriptor_reserve(limit: u64) -> u64 {
    64 + limit / 16
}

/// The global connection cap: the asked one, or what the descriptor limit
/// allows; never more than that.
fn global_cap(asked: Option<usize>, descriptors: Option<u64>) -> Result<usize> {
    let Some(limit) = descriptors else {
        return Ok(asked.unwrap_or(10_000));
    };
    let allowed = limit.saturating_sub(descriptor_reserve(limit)) as usize;
    if allowed == 0 {
        bail!(
            "the file descriptor limit is {limit}, too low to serve; raise it (ulimit -n, or LimitNOFILE= in the service unit) to at least 1024"
        );
    }
    match asked {
        Some(n) if n > allowed => {
            tracing::warn!(
                "--max-connections {n} is above what the descriptor limit {limit} allows; using {allowed} (raise the limit to allow more)"
            );
            Ok(allowed)
        }
        Some(0) => bail!("--max-connections must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(allowed),
    }
}

/// Raises the soft descriptor limit to the hard one and returns the soft
/// limit in force.
#[cfg(unix)]
// `rlim_t` is u64 on Linux and macOS but signed on some BSDs.
#[allow(clippy::unnecessary_cast)]
fn raise_descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write or read only the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            "cannot read the file descriptor limit: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = hard;
        } else {
            tracing::warn!(
                soft,
                hard,
                "cannot raise the file descriptor limit to the hard limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    // `RLIM_INFINITY` and other huge values: far more than will be used.
    let in_force = (lim.rlim_cur as u64).min(1 << 24);
    tracing::info!(
        soft_was = soft as u64,
        hard = hard as u64,
        soft = in_force,
        "file descriptor limit"
    );
    Some(in_force)
}

#[cfg(not(unix))]
fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// A TLS acceptor from PEM files, speaking HTTP/1.1 (the control WebSocket
/// is HTTP/1.1).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let help = || {
        format!(
            "cannot load the TLS certificate {} and key {}; both must be PEM files",
            cert.display(),
            key.display()
        )
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(help)?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(help)?;
    if certs.is_empty() {
        bail!("{}: no certificate in {}", help(), cert.display());
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(help)?,
    ))
    .with_context(help)?
    .with_context(|| format!("{}: no private key in {}", help(), key.display()))?;
    // Installing twice fails harmlessly; only the first call counts.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(help)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub async fn serve(db: Db, args: ServeArgs) -> Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to serve plain HTTP on {}: tokens would cross the network unencrypted; pass --tls-cert and --tls-key (PEM files), or listen on a loopback address such as 127.0.0.1",
            args.listen
        );
    }
    let meta = db.meta().await?;
    let suffix = match (args.suffix.clone(), meta.suffix) {
        (Some(s), stored) => {
            names::validate_suffix(&s).context("the --suffix is not a valid DNS suffix")?;
            if stored.as_deref() != Some(s.as_str()) {
                if let Some(old) = stored {
                    tracing::warn!("changing the DNS suffix from {old} to {s}");
                }
                db.set_suffix(&s).await?;
            }
            s
        }
        (None, Some(stored)) => stored,
        (None, None) => {
            db.set_suffix("warren").await?;
            "warren".to_string()
        }
    };
    let deployment = DeploymentInfo {
        suffix: suffix.clone(),
        ipv4_prefix: IPV4_PREFIX.into(),
        ipv6_prefix: meta.ipv6_prefix.to_string(),
    };
    let turn = turn_config(&args, &suffix)?;
    let descriptors = raise_descriptor_limit();
    let limits = ConnLimits {
        global: global_cap(args.max_connections, descriptors)?,
        per_source: args.max_connections_per_address.max(1),
    };
    let listen_config = ListenConfig {
        limits,
        idle_timeout: Duration::from_secs(args.idle_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
    };
    tracing::info!(
        max_connections = limits.global,
        max_connections_per_address = limits.per_source,
        idle_timeout_s = args.idle_timeout,
        header_timeout_s = args.header_timeout,
        "connection limits"
    );
    let hub = Hub::start(db.clone(), suffix)
        .await
        .context("cannot load the world from the database")?;
    let state = Arc::new(AppState {
        db,
        hub,
        deployment,
        prefix: meta.ipv6_prefix,
        ping_interval: ping_interval(),
        allow_local_endpoints: args.listen.ip().is_loopback(),
        throttle: AuthThrottle::new(args.auth_failures_burst, args.auth_failures_per_minute),
        turn,
    });
    let oidc = warren_coord::oidc::setup(&args.oidc, state.db.clone()).await?;
    let app = api::router(state).merge(warren_coord::oidc::router(oidc));

    let tls = match tls {
        Some((cert, key)) => Some(tls_acceptor(&cert, &key)?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {}; is another process using that port, or does it need privileges?",
            args.listen
        )
    })?;
    listener
        .set_nonblocking(true)
        .context("cannot make the listener non-blocking")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("cannot use the listener")?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{local}");
    tracing::info!("listening on {url}");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {url}").context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
    }
    listener::run(listener, tls, app, listen_config, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The TURN relays from the flags, or `None` without `--turn`. The secret
/// is read here, once; it is never logged.
fn turn_config(args: &ServeArgs, suffix: &str) -> Result<Option<TurnConfig>> {
    if args.turn.is_empty() {
        return Ok(None);
    }
    let Some(path) = &args.turn_secret_file else {
        bail!("--turn needs --turn-secret-file FILE, a file holding coturn's static-auth-secret");
    };
    let secret = turn::read_secret_file(path)?;
    let ttl = match test_turn_ttl() {
        Some(ttl) => {
            tracing::warn!(
                ttl_s = ttl.as_secs(),
                "WARREN_COORD_TURN_TTL_SECS is set: TURN credentials use a lifetime meant for tests"
            );
            ttl
        }
        None => turn::check_ttl(args.turn_credential_ttl)?,
    };
    let realm = args
        .turn_realm
        .clone()
        .unwrap_or_else(|| suffix.to_string());
    let config = TurnConfig::new(&args.turn, secret, realm, ttl)?;
    tracing::info!(
        servers = ?config.servers(),
        realm = config.realm(),
        credential_ttl_s = config.ttl().as_secs(),
        "TURN relays configured"
    );
    Ok(Some(config))
}

/// A TURN credential lifetime below the operator's minimum, for tests that
/// watch credentials being refreshed and expiring: `WARREN_COORD_TURN_TTL_SECS`
/// (at least 2).
fn test_turn_ttl() -> Option<Duration> {
    std::env::var("WARREN_COORD_TURN_TTL_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .filter(|ttl| (turn::MIN_TEST_TTL..=turn::MAX_TTL).contains(ttl))
}

/// The WebSocket ping interval: 15 s, or `WARREN_COORD_PING_MS` (for tests
/// that check that silent connections are dropped after three intervals).
fn ping_interval() -> Duration {
    std::env::var("WARREN_COORD_PING_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(api::PING_INTERVAL)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    tracing::info!("shutting down");
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_cap_stays_below_the_descriptor_limit() {
        assert_eq!(global_cap(None, Some(1024)).unwrap(), 1024 - 64 - 64);
        assert_eq!(global_cap(Some(100), Some(1024)).unwrap(), 100);
        assert_eq!(global_cap(Some(5000), Some(1024)).unwrap(), 896);
        assert!(global_cap(None, Some(64)).is_err());
        assert_eq!(global_cap(None, None).unwrap(), 10_000);
    }
}
