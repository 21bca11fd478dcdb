//! One live control connection with its keep-alive, shared by the helper
//! and the agent: connect, then yield the coordinator's messages while
//! pinging every [`PING_INTERVAL`] and declaring the link lost after
//! [`SILENCE_LIMIT`] without a frame. Every way it can end is sorted into
//! a [`LinkError`] ("sign in again", "refused", "retry"), so both callers
//! make the same decision for the same failure and only word it their own
//! way. Reconnecting with backoff stays with the caller (the helper's
//! session state machine, the agent's loop), both on
//! `warren_session::Backoff` and `warren_session::backoff_cap_from_env`.

use crate::{ControlConfig, ControlConnection};
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use warren_proto::control::{ClientMessage, ServerMessage, Welcome};
use warren_session::ConnectFailure;

/// How often the coordinator is pinged (keeps NAT mappings open and shows
/// a dead peer).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which the link counts as lost.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// The coordinator's error code for a token it no longer accepts.
const UNAUTHORIZED: &str = "unauthorized";

/// How often to ping and how much silence to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub ping_interval: Duration,
    pub silence_limit: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self {
            ping_interval: PING_INTERVAL,
            silence_limit: SILENCE_LIMIT,
        }
    }
}

/// Why a link could not be opened or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The coordinator no longer accepts the token (401 when connecting, or
    /// an `unauthorized` error later): retrying cannot help.
    #[error("the coordinator rejected the token: {0}")]
    Unauthorized(String),
    /// The coordinator refuses this client for another reason retrying
    /// cannot fix (an incompatible version).
    #[error("the coordinator refused the connection: {0}")]
    Rejected(String),
    /// The URL or CA given cannot be used at all.
    #[error("{0}")]
    Config(String),
    /// The coordinator could not be reached: worth retrying.
    #[error("{0}")]
    Unreachable(String),
    /// An established link ended (closed, reset, silent, or an error the
    /// coordinator reported): worth retrying.
    #[error("{0}")]
    Lost(String),
}

impl From<LinkError> for ConnectFailure {
    fn from(err: LinkError) -> Self {
        match err {
            LinkError::Unauthorized(_) => ConnectFailure::Unauthorized,
            LinkError::Rejected(m) | LinkError::Config(m) => ConnectFailure::Rejected(m),
            LinkError::Unreachable(m) => ConnectFailure::Unreachable(m),
            LinkError::Lost(m) => ConnectFailure::Lost(m),
        }
    }
}

/// An open, registered control connection that keeps itself alive.
#[derive(Debug)]
pub struct Link {
    conn: ControlConnection,
    keep_alive: KeepAlive,
    ping: Interval,
}

impl Link {
    /// Connects and registers (see [`ControlConnection::connect`]) with the
    /// default keep-alive.
    pub async fn connect(config: &ControlConfig) -> Result<Link, LinkError> {
        Self::connect_with(config, KeepAlive::default()).await
    }

    /// Like [`Link::connect`] with another keep-alive (tests shorten it).
    pub async fn connect_with(
        config: &ControlConfig,
        keep_alive: KeepAlive,
    ) -> Result<Link, LinkError> {
        let conn = ControlConnection::connect(config).await?;
        let mut ping = tokio::time::interval_at(
            Instant::now() + keep_alive.ping_interval,
            keep_alive.ping_interval,
        );
        // After a stall (a laptop waking up) one ping is enough.
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Link {
            conn,
            keep_alive,
            ping,
        })
    }

    /// Who the coordinator says we are.
    pub fn welcome(&self) -> &Welcome {
        self.conn.welcome()
    }

    /// The next message from the coordinator, pinging while it waits; `Err`
    /// once the link has ended (an error message from the coordinator ends
    /// it too, and is never yielded). Message types this build does not know
    /// (a newer coordinator's) are skipped, so they never end a link.
    /// Safe to cancel between messages: the only work lost is a ping being
    /// sent.
    pub async fn next(&mut self) -> Result<ServerMessage, LinkError> {
        loop {
            tokio::select! {
                msg = self.conn.next() => return match msg {
                    Ok(Some(ServerMessage::Unknown)) => {
                        tracing::debug!("skipping a message type this version does not know");
                        continue;
                    }
                    Ok(Some(ServerMessage::Error(e))) => {
                        tracing::warn!(code = %e.error, message = %e.message, "the coordinator reported an error");
                        Err(if e.error == UNAUTHORIZED {
                            LinkError::Unauthorized(e.message)
                        } else {
                            LinkError::Lost(e.message)
                        })
                    }
                    Ok(Some(msg)) => Ok(msg),
                    Ok(None) => Err(LinkError::Lost("the coordinator closed the connection".into())),
                    Err(e) => Err(LinkError::Lost(e.to_string())),
                },
                _ = self.ping.tick() => {
                    let silent = self.conn.last_activity().elapsed();
                    if silent > self.keep_alive.silence_limit {
                        return Err(LinkError::Lost(format!(
                            "no answer from the coordinator for {}",
                            describe(self.keep_alive.silence_limit)
                        )));
                    }
                    if let Err(e) = self.conn.ping().await {
                        return Err(LinkError::Lost(e.to_string()));
                    }
                }
            }
        }
    }

    /// Sends one message (new endpoints, for example).
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), LinkError> {
        self.conn
            .send(msg)
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))
    }

    /// Closes the link politely.
    pub async fn close(self) {
        self.conn.close().await
    }
}

/// "45 s", or milliseconds for the short limits tests use.
fn describe(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::plain_config;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use warren_proto::control::{
        ApiError, ClientMessage, TokenKind, UpdateKind, WorkspaceUpdate, CONTROL_VERSION,
    };
    use warren_proto::model::DeploymentInfo;
    use warren_proto::Secret;

    fn welcome() -> Welcome {
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
            id: "dev1".into(),
            addresses: vec![],
            relays: vec![],
        }
    }

    fn text(msg: &ServerMessage) -> Message {
        Message::text(serde_json::to_string(msg).unwrap())
    }

    fn update(seq: u64) -> ServerMessage {
        ServerMessage::WorkspaceUpdate(WorkspaceUpdate {
            kind: UpdateKind::Snapshot,
            seq,
            more: false,
            upserted_workspaces: vec![],
            upserted_agents: vec![],
            deleted_workspaces: vec![],
            deleted_agents: vec![],
        })
    }

    /// After the registration, the fake coordinator either keeps reading
    /// (so it answers pings) or goes quiet.
    #[derive(Clone, Copy)]
    enum After {
        KeepReading,
        GoQuiet,
    }

    /// A one-connection coordinator: accepts, checks the registration,
    /// welcomes, sends `then`, and behaves as `after` says.
    async fn coordinator(then: Vec<ServerMessage>, after: After) -> ControlConfig {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let Some(Ok(Message::Text(reg))) = ws.next().await else {
                panic!("expected a registration");
            };
            assert!(matches!(
                serde_json::from_str::<ClientMessage>(reg.as_str()).unwrap(),
                ClientMessage::Register(_)
            ));
            ws.send(text(&ServerMessage::Welcome(welcome())))
                .await
                .unwrap();
            for msg in &then {
                ws.send(text(msg)).await.unwrap();
            }
            match after {
                // Reading is what answers the client's pings.
                After::KeepReading => while let Some(Ok(_)) = ws.next().await {},
                After::GoQuiet => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(ws);
                }
            }
        });
        plain_config(port, "wut_test_secret")
    }

    const QUICK: KeepAlive = KeepAlive {
        ping_interval: Duration::from_millis(40),
        silence_limit: Duration::from_millis(150),
    };

    #[tokio::test]
    async fn yields_messages_and_stays_up_while_pongs_come_back() {
        let config = coordinator(vec![update(1), update(2)], After::KeepReading).await;
        let mut link = Link::connect_with(&config, QUICK).await.unwrap();
        assert_eq!(link.welcome().user, "alice");
        for seq in [1, 2] {
            match link.next().await.unwrap() {
                ServerMessage::WorkspaceUpdate(u) => assert_eq!(u.seq, seq),
                other => panic!("expected an update, got {other:?}"),
            }
        }
        // Several silence limits pass: the pongs keep the link alive.
        let quiet = tokio::time::timeout(QUICK.silence_limit * 4, link.next()).await;
        assert!(quiet.is_err(), "the link ended: {quiet:?}");
    }

    #[tokio::test]
    async fn a_silent_coordinator_is_declared_lost() {
        let config = coordinator(vec![], After::GoQuiet).await;
        let mut link = Link::connect_with(&config, QUICK).await.unwrap();
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), link.next())
            .await
            .expect("the silence limit ends the wait")
            .unwrap_err();
        assert_eq!(
            err,
            LinkError::Lost("no answer from the coordinator for 150 ms".into())
        );
        assert!(started.elapsed() >= QUICK.silence_limit);
        assert_eq!(
            ConnectFailure::from(err),
            ConnectFailure::Lost("no answer from the coordinator for 150 ms".into())
        );
    }

    #[tokio::test]
    async fn an_unauthorized_error_means_sign_in_again_and_others_retry() {
        let revoked = ServerMessage::Error(ApiError {
            error: "unauthorized".into(),
            message: "token revoked".into(),
        });
        let config = coordinator(vec![revoked], After::KeepReading).await;
        let mut link = Link::connect_with(&config, QUICK).await.unwrap();
        let err = link.next().await.unwrap_err();
        assert_eq!(err, LinkError::Unauthorized("token revoked".into()));
        assert_eq!(ConnectFailure::from(err), ConnectFailure::Unauthorized);

        let busy = ServerMessage::Error(ApiError {
            error: "slow_consumer".into(),
            message: "fell behind".into(),
        });
        let config = coordinator(vec![busy], After::KeepReading).await;
        let mut link = Link::connect_with(&config, QUICK).await.unwrap();
        assert_eq!(
            link.next().await.unwrap_err(),
            LinkError::Lost("fell behind".into())
        );
    }

    #[tokio::test]
    async fn relays_pass_through_and_unknown_types_are_skipped() {
        let relays = ServerMessage::Relays {
            relays: vec![warren_proto::control::Relay {
                addr: "turn.example.com:3478".into(),
                username: "1700000000:dev1".into(),
                password: Secret::new("c2VjcmV0"),
                expires_at: 1_700_000_000,
            }],
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = relays.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _register = ws.next().await;
            ws.send(text(&ServerMessage::Welcome(welcome())))
                .await
                .unwrap();
            // What a newer coordinator might send; it must not end the link.
            ws.send(Message::text(r#"{"type":"from_the_future","x":[1,2]}"#))
                .await
                .unwrap();
            ws.send(text(&sent)).await.unwrap();
            ws.send(text(&update(1))).await.unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        });
        let config = plain_config(port, "wut_test_secret");
        let mut link = Link::connect_with(&config, QUICK).await.unwrap();
        assert_eq!(link.next().await.unwrap(), relays);
        assert!(matches!(
            link.next().await.unwrap(),
            ServerMessage::WorkspaceUpdate(_)
        ));
    }

    #[test]
    fn every_end_sorts_into_the_session_failure() {
        let cases = [
            (
                LinkError::Unauthorized("401".into()),
                ConnectFailure::Unauthorized,
            ),
            (
                LinkError::Rejected("old".into()),
                ConnectFailure::Rejected("old".into()),
            ),
            (
                LinkError::Config("bad URL".into()),
                ConnectFailure::Rejected("bad URL".into()),
            ),
            (
                LinkError::Unreachable("refused".into()),
                ConnectFailure::Unreachable("refused".into()),
            ),
            (
                LinkError::Lost("reset".into()),
                ConnectFailure::Lost("reset".into()),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(ConnectFailure::from(err), want);
        }
    }
}
