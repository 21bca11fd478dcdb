//! One coordinator connection: one generation of the session.
//!
//! Connects, reports `Welcome`, forwards workspace updates and reports how
//! the connection ended. The keep-alive (ping, silence limit) and the
//! sorting of failures into "sign in again" / "refused" / "retry" are
//! `warren_control::Link`'s, shared with the agent. This task reports
//! everything to the engine through a channel and never touches session
//! state itself; the engine aborts it when the generation ends.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use warren_control::{ControlConfig, Link};
use warren_path::RelayServer;
use warren_proto::control::{ClientMessage, ServerMessage, Welcome, WorkspaceUpdate};
use warren_session::ConnectFailure;

#[derive(Debug)]
pub enum ControlEvent {
    Connected {
        generation: u64,
        welcome: Welcome,
    },
    Update {
        generation: u64,
        update: WorkspaceUpdate,
        received: std::time::Instant,
    },
    /// The coordinator's TURN relays, resolved and checked (from the
    /// welcome, then each refresh of the credentials).
    Relays {
        generation: u64,
        relays: Vec<RelayServer>,
    },
    Failed {
        generation: u64,
        failure: ConnectFailure,
    },
}

pub fn spawn(
    generation: u64,
    config: ControlConfig,
    events: mpsc::Sender<ControlEvent>,
    outgoing: mpsc::UnboundedReceiver<ClientMessage>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let failure = run(generation, &config, &events, outgoing).await;
        let _ = events
            .send(ControlEvent::Failed {
                generation,
                failure,
            })
            .await;
    })
}

async fn run(
    generation: u64,
    config: &ControlConfig,
    events: &mpsc::Sender<ControlEvent>,
    mut outgoing: mpsc::UnboundedReceiver<ClientMessage>,
) -> ConnectFailure {
    tracing::info!(generation, url = %config.url, "connecting to the coordinator");
    let mut link = match Link::connect(config).await {
        Ok(link) => link,
        Err(e) => {
            tracing::warn!(generation, error = %e, "could not connect to the coordinator");
            return e.into();
        }
    };
    let welcome = link.welcome().clone();
    let relays = welcome.relays.clone();
    tracing::info!(
        generation,
        user = %welcome.user,
        device = %welcome.id,
        relays = welcome.relays.len(),
        "connected to the coordinator"
    );
    if events
        .send(ControlEvent::Connected {
            generation,
            welcome,
        })
        .await
        .is_err()
    {
        return ConnectFailure::Lost("helper shutting down".into());
    }
    if !relays.is_empty() && !send_relays(generation, &relays, &config.url, events).await {
        return ConnectFailure::Lost("helper shutting down".into());
    }
    loop {
        let next = tokio::select! {
            next = link.next() => next,
            Some(msg) = outgoing.recv() => {
                if let ClientMessage::Endpoints { endpoints } = &msg {
                    tracing::info!(generation, ?endpoints, "announcing new endpoints");
                }
                if let Err(e) = link.send(&msg).await {
                    tracing::info!(generation, error = %e, "the coordinator connection ended");
                    return e.into();
                }
                continue;
            }
        };
        match next {
            Ok(ServerMessage::WorkspaceUpdate(update)) => {
                let event = ControlEvent::Update {
                    generation,
                    update,
                    received: std::time::Instant::now(),
                };
                if events.send(event).await.is_err() {
                    return ConnectFailure::Lost("helper shutting down".into());
                }
            }
            Ok(ServerMessage::Relays { relays }) => {
                tracing::debug!(
                    generation,
                    relays = relays.len(),
                    expires_at = relays.iter().map(|r| r.expires_at).min(),
                    "fresh TURN credentials"
                );
                if !send_relays(generation, &relays, &config.url, events).await {
                    return ConnectFailure::Lost("helper shutting down".into());
                }
            }
            Ok(other) => {
                tracing::debug!(generation, ?other, "ignoring a message meant for agents");
            }
            Err(e) => {
                tracing::info!(generation, error = %e, "the coordinator connection ended");
                return e.into();
            }
        }
    }
}

/// Resolves the relays the coordinator at `url` named and hands them to
/// the engine; `false` if it is gone. Loopback and link-local relays are
/// kept only for a coordinator on loopback (logged when refused).
async fn send_relays(
    generation: u64,
    relays: &[warren_proto::control::Relay],
    url: &str,
    events: &mpsc::Sender<ControlEvent>,
) -> bool {
    let relays = warren_control::resolve_relays(relays, url).await;
    events
        .send(ControlEvent::Relays { generation, relays })
        .await
        .is_ok()
}
