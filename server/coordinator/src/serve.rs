//! `warren-coord serve`: binds the listener (TLS, or plain HTTP on loopback
//! only), starts the world task and serves the API until SIGINT/SIGTERM.

use anyhow::{bail, Context, Result};
use axum_server::tls_rustls::RustlsConfig;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use warren_coord::addr::IPV4_PREFIX;
use warren_coord::api::{self, AppState};
use warren_coord::db::Db;
use warren_coord::hub::Hub;
use warren_coord::names;
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
    let suffix = match (args.suffix, meta.suffix) {
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
    let hub = Hub::start(db.clone(), suffix)
        .await
        .context("cannot load the world from the database")?;
    let state = Arc::new(AppState {
        db,
        hub,
        deployment,
        prefix: meta.ipv6_prefix,
        ping_interval: ping_interval(),
    });
    let app = api::router(state);

    let tls = match tls {
        Some((cert, key)) => {
            // Installing twice fails harmlessly; only the first call counts.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                RustlsConfig::from_pem_file(&cert, &key)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot load the TLS certificate {} and key {}; both must be PEM files",
                            cert.display(),
                            key.display()
                        )
                    })?,
            )
        }
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
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{local}");
    tracing::info!("listening on {url}");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {url}").context("cannot write to stdout")?;
        out.flush().context("cannot write to stdout")?;
    }
    let service = app.into_make_service();
    match tls {
        Some(config) => {
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(service)
                .await
                .context("the server stopped with an error")?;
        }
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(service)
                .await
                .context("the server stopped with an error")?;
        }
    }
    tracing::info!("stopped");
    Ok(())
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

async fn shutdown_on_signal(handle: axum_server::Handle) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    handle.graceful_shutdown(Some(Duration::from_secs(5)));
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
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
}
