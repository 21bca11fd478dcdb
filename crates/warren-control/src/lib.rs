//! Client side of the control protocol, shared by the helper and the agent.
//!
//! Opens the long-lived WebSocket at `/api/v1/connect` with a bearer token,
//! registers the caller's WireGuard key and endpoints, waits for the
//! coordinator's `Welcome`, and then yields [`ServerMessage`]s. Failures are
//! classified ([`LinkError`]) so callers can tell "sign in again" from
//! "try again later". [`link::Link`] adds the keep-alive (ping, silence
//! limit) and the one classification of how a live connection ends, which
//! the helper and the agent both drive.

pub mod link;
pub mod relays;

pub use link::{KeepAlive, Link, LinkError, PING_INTERVAL, SILENCE_LIMIT};
pub use relays::resolve_relays;

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use warren_proto::control::{
    ApiError, ClientMessage, Register, ServerMessage, Welcome, CONNECT_PATH, CONTROL_VERSION,
};
use warren_proto::Secret;

/// Largest control message accepted: a snapshot of tens of thousands of
/// agents is several MiB.
pub const MAX_MESSAGE_BYTES: usize = warren_proto::limits::MAX_SERVER_MESSAGE_BYTES;
/// How long connecting (TCP + TLS + upgrade + Welcome) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Coordinator base URL, `https://host[:port]` (or `http://` on loopback).
    pub url: String,
    pub token: Secret,
    /// Extra trusted CA certificate(s), PEM.
    pub ca_pem: Option<String>,
    pub register: Register,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connection closed by the coordinator{}", .0.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    #[error("coordinator sent an unreadable message: {0}")]
    Malformed(String),
    #[error("the coordinator reported an error: {0}")]
    Server(String),
    #[error("{0}")]
    Transport(String),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An established, registered control connection.
pub struct ControlConnection {
    welcome: Welcome,
    ws: Ws,
    /// When any frame (pongs included) last arrived: the liveness signal.
    last_activity: Instant,
}

impl std::fmt::Debug for ControlConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConnection")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

/// `https://h` → `wss://h/api/v1/connect`. Refuses anything that is not a
/// bare http(s) origin.
pub fn connect_url(base: &str) -> Result<String, LinkError> {
    let base = base.trim().trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(LinkError::Config(format!(
            "coordinator URL {base:?} must start with https:// (or http:// for a local test deployment)"
        )));
    };
    Ok(format!("{rest}{CONNECT_PATH}"))
}

/// TLS client settings: the public web roots plus any extra CA given.
pub fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, LinkError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut reader = std::io::BufReader::new(pem.as_bytes());
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| {
                LinkError::Config(format!("the CA certificate is not valid PEM: {e}"))
            })?;
            roots
                .add(cert)
                .map_err(|e| LinkError::Config(format!("the CA certificate can't be used: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(LinkError::Config(
                "the CA file holds no PEM certificate".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LinkError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

impl ControlConnection {
    /// Connects, registers and waits for `Welcome`, all within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(config: &ControlConfig) -> Result<Self, LinkError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(config)).await {
            Ok(result) => result,
            Err(_) => Err(LinkError::Unreachable(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn connect_inner(config: &ControlConfig) -> Result<Self, LinkError> {
        let url = connect_url(&config.url)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| LinkError::Config(format!("bad coordinator URL: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.token.expose()))
            .map_err(|_| {
                LinkError::Config("the token contains characters a header can't carry".into())
            })?;
        auth.set_sensitive(true);
        request.headers_mut().insert(header::AUTHORIZATION, auth);

        let connector = if url.starts_with("wss://") {
            Some(Connector::Rustls(Arc::new(tls_config(
                config.ca_pem.as_deref(),
            )?)))
        } else {
            None
        };
        let (mut ws, _response) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config()),
            true,
            connector,
        )
        .await
        .map_err(classify_handshake_error)?;

        let register = ClientMessage::Register(config.register.clone());
        let text = serde_json::to_string(&register)
            .map_err(|e| LinkError::Config(format!("can't encode registration: {e}")))?;
        ws.send(Message::text(text))
            .await
            .map_err(|e| LinkError::Unreachable(format!("sending registration: {e}")))?;

        let mut conn = Self {
            welcome: placeholder_welcome(),
            ws,
            last_activity: Instant::now(),
        };
        match conn.next().await {
            Ok(Some(ServerMessage::Welcome(welcome))) => {
                if welcome.protocol_version != CONTROL_VERSION {
                    return Err(LinkError::Rejected(format!(
                        "the coordinator speaks control protocol {}, this client {}; update the one that is older",
                        welcome.protocol_version, CONTROL_VERSION
                    )));
                }
                conn.welcome = welcome;
                Ok(conn)
            }
            Ok(Some(ServerMessage::Error(e))) => Err(if e.error == "unauthorized" {
                LinkError::Unauthorized(e.message)
            } else {
                LinkError::Rejected(e.message)
            }),
            Ok(Some(other)) => Err(LinkError::Rejected(format!(
                "expected a welcome, got {}",
                kind_of(&other)
            ))),
            Ok(None) => Err(LinkError::Unreachable(
                "the coordinator closed the connection during registration".into(),
            )),
            Err(StreamError::Closed(Some(reason))) => Err(LinkError::Rejected(reason)),
            Err(e) => Err(LinkError::Unreachable(e.to_string())),
        }
    }

    /// When the coordinator was last heard from (any frame, pongs included).
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The next message; `Ok(None)` when the coordinator closed cleanly.
    /// WebSocket pings are answered inside.
    pub async fn next(&mut self) -> Result<Option<ServerMessage>, StreamError> {
        loop {
            let Some(msg) = self.ws.next().await else {
                return Ok(None);
            };
            let msg = msg.map_err(describe_stream_error)?;
            self.last_activity = Instant::now();
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str::<ServerMessage>(text.as_str())
                        .map(Some)
                        .map_err(|e| StreamError::Malformed(format!("{e}")));
                }
                Message::Binary(bytes) => {
                    return serde_json::from_slice::<ServerMessage>(&bytes)
                        .map(Some)
                        .map_err(|e| StreamError::Malformed(format!("{e}")));
                }
                Message::Close(frame) => {
                    let reason = frame
                        .map(|f| f.reason.to_string())
                        .filter(|r| !r.is_empty());
                    return Err(StreamError::Closed(reason));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), StreamError> {
        let text = serde_json::to_string(msg).map_err(|e| StreamError::Malformed(e.to_string()))?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| StreamError::Transport(e.to_string()))
    }

    /// Sends a WebSocket ping (keeps NAT mappings and detects dead peers).
    pub async fn ping(&mut self) -> Result<(), StreamError> {
        self.ws
            .send(Message::Ping(Vec::new().into()))
            .await
            .map_err(|e| StreamError::Transport(e.to_string()))
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn placeholder_welcome() -> Welcome {
    Welcome {
        protocol_version: CONTROL_VERSION,
        coordinator_version: String::new(),
        deployment: warren_proto::model::DeploymentInfo {
            suffix: String::new(),
            ipv4_prefix: String::new(),
            ipv6_prefix: String::new(),
        },
        user: String::new(),
        kind: warren_proto::control::TokenKind::User,
        id: String::new(),
        addresses: Vec::new(),
        relays: Vec::new(),
    }
}

fn kind_of(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Welcome(_) => "welcome",
        ServerMessage::WorkspaceUpdate(_) => "workspace update",
        ServerMessage::PeerUpdate(_) => "peer update",
        ServerMessage::Error(_) => "error",
        ServerMessage::Relays { .. } => "relays",
        ServerMessage::Unknown => "a message type this version does not know",
    }
}

/// Words for a broken stream that say what happened, not which frame was
/// missing.
fn describe_stream_error(err: tungstenite::Error) -> StreamError {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed => StreamError::Transport(
            "the coordinator went away without closing the connection (restarted, or the network dropped)".into(),
        ),
        tungstenite::Error::Io(e) => StreamError::Transport(format!("network error: {e}")),
        tungstenite::Error::Capacity(e) => {
            StreamError::Malformed(format!("the coordinator sent a message over the size limit: {e}"))
        }
        other => StreamError::Transport(other.to_string()),
    }
}

/// Sorts a failed upgrade into "sign in again", "refused" and "retry".
fn classify_handshake_error(err: tungstenite::Error) -> LinkError {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let message = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ApiError>(b).ok())
                .map(|e| e.message)
                .unwrap_or_else(|| format!("HTTP {status}"));
            if status == StatusCode::UNAUTHORIZED {
                LinkError::Unauthorized(message)
            } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                LinkError::Unreachable(format!("coordinator error {status}: {message}"))
            } else if status == StatusCode::NOT_FOUND {
                LinkError::Rejected(
                    "this URL has no Warren coordinator (404 on /api/v1/connect); check the URL"
                        .into(),
                )
            } else {
                LinkError::Rejected(format!("{status}: {message}"))
            }
        }
        tungstenite::Error::Io(e) => LinkError::Unreachable(e.to_string()),
        tungstenite::Error::Tls(e) => LinkError::Unreachable(format!(
            "TLS failed ({e}); if the coordinator uses a private CA, sign in again with `--ca`"
        )),
        tungstenite::Error::Url(e) => LinkError::Config(format!("bad coordinator URL: {e}")),
        other => LinkError::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test client registers with, against plain HTTP on loopback
    /// `port` with `token`.
    pub(crate) fn plain_config(port: u16, token: &str) -> ControlConfig {
        ControlConfig {
            url: format!("http://127.0.0.1:{port}"),
            token: Secret::new(token),
            ca_pem: None,
            register: Register {
                protocol_version: CONTROL_VERSION,
                public_key: "k".into(),
                endpoints: vec![],
                hostname: None,
                app_version: "test".into(),
            },
        }
    }

    #[test]
    fn connect_url_maps_schemes() {
        assert_eq!(
            connect_url("https://c.example:8443/").unwrap(),
            "wss://c.example:8443/api/v1/connect"
        );
        assert_eq!(
            connect_url("http://127.0.0.1:9").unwrap(),
            "ws://127.0.0.1:9/api/v1/connect"
        );
        assert!(matches!(connect_url("ftp://x"), Err(LinkError::Config(_))));
    }

    #[test]
    fn bad_ca_is_a_config_error() {
        assert!(matches!(
            tls_config(Some("not a certificate")),
            Err(LinkError::Config(_))
        ));
        assert!(tls_config(None).is_ok());
    }

    #[tokio::test]
    async fn unreachable_coordinator_is_retryable() {
        // Bind then drop a listener to get a loopback port nobody serves.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = plain_config(port, "wut_x_y");
        let err = ControlConnection::connect(&config).await.unwrap_err();
        assert!(matches!(err, LinkError::Unreachable(_)), "{err:?}");
        assert!(!err.to_string().contains("wut_x_y"));
    }
}
