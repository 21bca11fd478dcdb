//! One coordinator connection: one generation of the session.
//!
//! Connects, reports `Welcome`, forwards workspace updates, keeps the link
//! alive with pings and declares it lost when the coordinator goes silent.
//! It reports everything to the engine through a channel and never touches
//! session state itself; the engine aborts it when the generation ends.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use warren_control::{ConnectError, ControlConfig, ControlConnection};
use warren_proto::control::{ServerMessage, Welcome, WorkspaceUpdate};
use warren_session::ConnectFailure;

/// How often the coordinator is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which the connection counts as lost.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);

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
    Failed {
        generation: u64,
        failure: ConnectFailure,
    },
}

pub fn classify(err: ConnectError) -> ConnectFailure {
    match err {
        ConnectError::Unauthorized(_) => ConnectFailure::Unauthorized,
        ConnectError::Rejected(m) | ConnectError::Config(m) => ConnectFailure::Rejected(m),
        ConnectError::Unreachable(m) => ConnectFailure::Unreachable(m),
    }
}

pub fn spawn(
    generation: u64,
    config: ControlConfig,
    events: mpsc::Sender<ControlEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let failure = run(generation, &config, &events).await;
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
) -> ConnectFailure {
    tracing::info!(generation, url = %config.url, "connecting to the coordinator");
    let mut conn = match ControlConnection::connect(config).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(generation, error = %e, "could not connect to the coordinator");
            return classify(e);
        }
    };
    let welcome = conn.welcome().clone();
    tracing::info!(
        generation,
        user = %welcome.user,
        device = %welcome.id,
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
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            msg = conn.next() => match msg {
                Ok(Some(ServerMessage::WorkspaceUpdate(update))) => {
                    let event = ControlEvent::Update {
                        generation,
                        update,
                        received: std::time::Instant::now(),
                    };
                    if events.send(event).await.is_err() {
                        return ConnectFailure::Lost("helper shutting down".into());
                    }
                }
                Ok(Some(ServerMessage::Error(e))) => {
                    tracing::warn!(generation, code = %e.error, message = %e.message, "coordinator reported an error");
                    return if e.error == "unauthorized" {
                        ConnectFailure::Unauthorized
                    } else {
                        ConnectFailure::Lost(e.message)
                    };
                }
                Ok(Some(other)) => {
                    tracing::debug!(generation, ?other, "ignoring a message meant for agents");
                }
                Ok(None) => return ConnectFailure::Lost("the coordinator closed the connection".into()),
                Err(e) => return ConnectFailure::Lost(e.to_string()),
            },
            _ = ping.tick() => {
                if conn.last_activity().elapsed() > SILENCE_LIMIT {
                    return ConnectFailure::Lost(format!(
                        "no answer from the coordinator for {} s",
                        SILENCE_LIMIT.as_secs()
                    ));
                }
                if let Err(e) = conn.ping().await {
                    return ConnectFailure::Lost(e.to_string());
                }
            }
        }
    }
}
