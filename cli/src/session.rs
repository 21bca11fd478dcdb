//! The commands that talk to the helper: `up`, `down`, `reconnect`,
//! `logout`, `status` and `watch`.

use crate::render;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use warren_client::{config, token};
use warren_ipc::{Client, ClientError, StateMirror, Subscription};
use warren_proto::ipc::{ErrorCode, Request, SessionInfo, SessionState, TunnelState};

pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long `up` and `reconnect` wait for the session to connect.
const CONNECT_WAIT: Duration = Duration::from_secs(20);
/// How long `down` waits for the helper to restore the network.
const TEARDOWN_WAIT: Duration = Duration::from_secs(10);
/// How long `status` waits for the full state.
const STATE_WAIT: Duration = Duration::from_secs(10);
/// Resubscribes allowed while waiting (gaps, dropped connections).
const MAX_RESUBSCRIBES: u32 = 5;

async fn subscribe(socket: &Path) -> Result<Subscription, ClientError> {
    Client::connect(socket, APP_VERSION)
        .await?
        .subscribe()
        .await
}

/// `warren up`: hand the stored token to the helper and wait for Connected.
pub async fn up(socket: &Path) -> Result<()> {
    let dir = config::config_dir()?;
    let Some(cfg) = config::load(&dir)? else {
        bail!("not signed in — run `warren login --url https://YOUR-COORDINATOR` first");
    };
    let Some(tok) = token::load(&dir, &cfg.url).await? else {
        bail!(
            "no token stored for {} — sign in again with `warren login --url {}`",
            cfg.url,
            cfg.url
        );
    };
    let mut client = Client::connect(socket, APP_VERSION).await?;
    client
        .request_ok(Request::Start {
            url: cfg.url.clone(),
            token: tok,
            ca: cfg.ca_pem.clone(),
            deployment: cfg.deployment.clone(),
        })
        .await?;
    wait_connected(socket).await
}

/// `warren down`.
pub async fn down(socket: &Path) -> Result<()> {
    let mut client = Client::connect(socket, APP_VERSION).await?;
    client.request_ok(Request::Stop).await?;
    // The helper undoes the tunnel's routes and DNS after it answered;
    // wait until it has, so scripts can rely on the network being back.
    let deadline = Instant::now() + TEARDOWN_WAIT;
    loop {
        let report = client.status().await?;
        let up = report
            .session
            .tunnel
            .is_some_and(|t| matches!(t.state, TunnelState::Up | TunnelState::Starting));
        if !up {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "disconnected, but the helper has not finished removing the tunnel after {} s; check `warren status` and {}",
                TEARDOWN_WAIT.as_secs(),
                helper_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!("Disconnected.");
    Ok(())
}

/// `warren reconnect`.
pub async fn reconnect(socket: &Path) -> Result<()> {
    let mut client = Client::connect(socket, APP_VERSION).await?;
    client.request_ok(Request::Reconnect).await?;
    wait_connected(socket).await
}

/// `warren logout`: stop the session, forget the token and the config.
pub async fn logout(socket: &Path) -> Result<()> {
    match Client::connect(socket, APP_VERSION).await {
        Ok(mut client) => {
            if let Err(e) = client.request_ok(Request::Stop).await {
                eprintln!("warning: couldn't stop the helper's session: {e}");
            }
        }
        Err(ClientError::HelperNotRunning { .. }) => {}
        Err(e) => eprintln!("warning: couldn't stop the helper's session: {e}"),
    }
    let dir = config::config_dir()?;
    match config::load(&dir)? {
        Some(cfg) => {
            token::delete(&dir, &cfg.url).await?;
            config::remove(&dir)?;
            println!("Signed out of {}.", cfg.url);
        }
        None => {
            // Still clear a stray token file.
            token::delete(&dir, "").await?;
            println!("Not signed in.");
        }
    }
    Ok(())
}

/// Where to look for the helper's side of a failure, with the place it
/// logs on this OS.
fn helper_log() -> String {
    format!(
        "the helper's log (in {})",
        warren_ipc::platform::helper_log_dir().display()
    )
}

fn progress_key(s: &SessionInfo) -> (SessionState, Option<String>) {
    (s.state, s.reason.clone())
}

/// Follows the session until it is Connected (Ok) or Failed (Err with the
/// helper's reason), printing progress to stderr; gives up after
/// [`CONNECT_WAIT`].
async fn wait_connected(socket: &Path) -> Result<()> {
    let deadline = Instant::now() + CONNECT_WAIT;
    let mut shown: Option<(SessionState, Option<String>)> = None;
    let mut last: Option<SessionInfo> = None;
    let mut resubscribes = 0;
    'subscription: loop {
        let mut sub = tokio::time::timeout_at(deadline, subscribe(socket))
            .await
            .map_err(|_| timeout_error(last.as_ref()))??;
        let mut mirror = StateMirror::new();
        loop {
            let next = tokio::time::timeout_at(deadline, sub.next())
                .await
                .map_err(|_| timeout_error(last.as_ref()))?;
            let problem = match next {
                Ok(Some((seq, event))) => match mirror.apply(seq, &event) {
                    Ok(()) => None,
                    Err(e) => Some(e.to_string()),
                },
                Ok(None) => Some("the helper closed the connection".to_string()),
                Err(ClientError::Helper(e)) if e.code == ErrorCode::SlowSubscriber => {
                    Some(e.message)
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(problem) = problem {
                resubscribes += 1;
                if resubscribes > MAX_RESUBSCRIBES {
                    bail!("lost track of the helper's state too often ({problem}); check `warren status`");
                }
                tracing::debug!(%problem, "resubscribing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'subscription;
            }
            if !mirror.is_complete() {
                continue;
            }
            let Some(session) = mirror.session.clone() else {
                continue;
            };
            match session.state {
                // Connected means the list is real; with a data plane, the
                // workspaces are reachable once the tunnel is up too.
                SessionState::Connected => {
                    let tunnel = session.tunnel.as_ref().map(|t| t.state);
                    if tunnel == Some(TunnelState::Starting) {
                        last = Some(session);
                        continue;
                    }
                    println!(
                        "Connected as {} to {}",
                        session.user.as_deref().unwrap_or("(unknown user)"),
                        session.url.as_deref().unwrap_or("(unknown coordinator)")
                    );
                    if let Some(t) = &session.tunnel {
                        if t.state == TunnelState::Failed {
                            bail!(
                                "connected, but the tunnel could not start, so workspaces are not reachable: {}",
                                t.error.clone().unwrap_or_else(|| format!("see {}", helper_log()))
                            );
                        }
                    }
                    return Ok(());
                }
                SessionState::Failed => {
                    bail!(
                        "{}",
                        session.reason.clone().unwrap_or_else(|| format!(
                            "the helper could not connect; see `warren status` and {}",
                            helper_log()
                        ))
                    );
                }
                SessionState::Connecting | SessionState::Reconnecting
                    if shown.as_ref() != Some(&progress_key(&session)) =>
                {
                    shown = Some(progress_key(&session));
                    if session.state == SessionState::Connecting {
                        eprintln!("Connecting…");
                    } else {
                        eprintln!(
                            "Reconnecting: {}",
                            session
                                .reason
                                .as_deref()
                                .unwrap_or("the connection dropped")
                        );
                    }
                }
                _ => {}
            }
            last = Some(session);
        }
    }
}

fn timeout_error(last: Option<&SessionInfo>) -> anyhow::Error {
    let state = last
        .map(render::session_line)
        .unwrap_or_else(|| "Session: unknown".into());
    anyhow!(
        "still not connected after {} s ({state}). The helper keeps trying in the background; check `warren status`, or `warren down` to stop",
        CONNECT_WAIT.as_secs()
    )
}

/// Subscribes and applies events until the state is complete.
async fn fetch_state(socket: &Path) -> Result<(String, StateMirror)> {
    let deadline = Instant::now() + STATE_WAIT;
    let timeout = || {
        anyhow!(
            "the helper didn't send its state within {} s; it may be stuck — restart it and try again",
            STATE_WAIT.as_secs()
        )
    };
    let mut resubscribes = 0;
    'subscription: loop {
        let mut sub = tokio::time::timeout_at(deadline, subscribe(socket))
            .await
            .map_err(|_| timeout())??;
        let version = sub.helper_hello().app_version.clone();
        let mut mirror = StateMirror::new();
        while !mirror.is_complete() {
            let next = tokio::time::timeout_at(deadline, sub.next())
                .await
                .map_err(|_| timeout())?;
            let problem = match next? {
                Some((seq, event)) => mirror.apply(seq, &event).err().map(|e| e.to_string()),
                None => Some("the helper closed the connection".into()),
            };
            if let Some(problem) = problem {
                resubscribes += 1;
                if resubscribes > MAX_RESUBSCRIBES {
                    bail!("couldn't get a consistent state from the helper ({problem}); try again");
                }
                continue 'subscription;
            }
        }
        return Ok((version, mirror));
    }
}

/// `warren status [--json]`.
pub async fn status(socket: &Path, json: bool) -> Result<()> {
    let (version, mirror) = fetch_state(socket).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let v = render::status_json(&version, &mirror, wall_clock_ms());
        serde_json::to_writer(&mut out, &v).context("can't write to standard output")?;
        writeln!(out).context("can't write to standard output")?;
    } else {
        write!(out, "{}", render::render_table(&mirror, wall_clock_ms()))
            .context("can't write to standard output")?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (handshake ages are wall-clock).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits between reconnect attempts in `watch`.
const WATCH_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Consecutive failed reconnects before `watch` gives up.
const WATCH_MAX_RETRIES: u32 = 30;

fn draw(mirror: &StateMirror, tty: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let table = render::render_table(mirror, wall_clock_ms());
    if tty {
        // Clear the screen and go home, then draw.
        write!(out, "\x1b[2J\x1b[H{table}")
    } else {
        write!(out, "----\n{table}")
    }
    .and_then(|_| out.flush())
    .context("can't write to standard output")
}

/// `warren watch`: redraw on every event until Ctrl-C.
pub async fn watch(socket: &Path) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut sub = subscribe(socket).await?;
    let mut failures = 0u32;
    let mut mirror = StateMirror::new();
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            next = sub.next() => next,
        };
        let problem = match next {
            Ok(Some((seq, event))) => match mirror.apply(seq, &event) {
                Ok(()) => {
                    failures = 0;
                    if mirror.is_complete() {
                        draw(&mirror, tty)?;
                    }
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Ok(None) => Some("lost the connection to the helper; reconnecting".into()),
            Err(ClientError::Helper(e)) => Some(format!("{e}; resubscribing")),
            Err(e) => Some(format!("{e}")),
        };
        let Some(problem) = problem else { continue };
        eprintln!("{problem}");
        // Reconnect, bounded; Ctrl-C still works while waiting.
        loop {
            failures += 1;
            if failures > WATCH_MAX_RETRIES {
                bail!("gave up after {WATCH_MAX_RETRIES} attempts to reach the helper; check that it is running and run `warren watch` again");
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(WATCH_RETRY_DELAY) => {}
            }
            match subscribe(socket).await {
                Ok(s) => {
                    sub = s;
                    mirror.reset();
                    eprintln!("resubscribed to the helper");
                    break;
                }
                Err(e) => eprintln!("{e}"),
            }
        }
    }
}
