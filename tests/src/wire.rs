//! Raw HTTP/1.1 and WebSocket clients for tests that must choose their
//! source address (each loopback address is a throttle bucket and a
//! connection-limit source of its own at the coordinator) and see exactly
//! what came back: status, headers, body, the upgrade refused or accepted,
//! and the error message a WebSocket was closed with.

use base64::Engine;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use warren_proto::control::{ClientMessage, Register, CONTROL_VERSION};

/// How long any one step (connect, an answer, a message) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer (the same type as [`crate::oidc::http_request`]'s).
pub use crate::oidc::HttpResponse as Reply;

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// A TCP connection to `to` from `from` (any address of 127.0.0.0/8 reaches
/// a loopback listener).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(STEP_TIMEOUT, socket.connect(to))
        .await
        .map_err(|_| timed_out("connect"))?
}

/// Splits a response head into status and lowercased headers.
fn parse_head(head: &[u8]) -> io::Result<(u16, Vec<(String, String)>)> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no HTTP status in {status_line:?}"),
            )
        })?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Reads a response head (up to the blank line) byte by byte, so nothing
/// after it (a WebSocket's first frame) is consumed.
async fn read_head(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(STEP_TIMEOUT, s.read_exact(&mut b))
            .await
            .map_err(|_| timed_out("reading the answer's head"))??;
        head.push(b[0]);
        if head.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer head over 1 MiB",
            ));
        }
    }
    head.truncate(head.len() - 4);
    Ok(head)
}

/// Writes `req` (a whole request, head and body) on `s` and reads the
/// answer to the end (the request must say `Connection: close`).
///
/// A server may answer before it has read the whole request (413 to a body
/// over its limit) and close: the write then fails, but the answer that
/// came first is still returned.
pub async fn exchange(s: &mut TcpStream, req: &[u8]) -> io::Result<Reply> {
    let wrote = tokio::time::timeout(STEP_TIMEOUT, s.write_all(req))
        .await
        .map_err(|_| timed_out("sending the request"))
        .and_then(|r| r);
    let mut raw = Vec::new();
    // Whatever was read before an error stays in `raw`.
    let read = tokio::time::timeout(STEP_TIMEOUT, s.read_to_end(&mut raw))
        .await
        .map_err(|_| timed_out("reading the answer"))
        .and_then(|r| r);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        wrote?;
        read?;
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the connection closed without a whole answer ({} bytes)",
                raw.len()
            ),
        ));
    };
    let (status, headers) = parse_head(&raw[..split])?;
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = crate::oidc::dechunk(&body);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The bytes of one `Connection: close` request with a `Content-Length`.
pub fn request_bytes(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request from `from` on a new connection.
pub async fn request_from(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Reply> {
    let mut s = connect_from(from, to).await?;
    exchange(&mut s, &request_bytes(to, method, path, headers, body)).await
}

/// A client's (masked) WebSocket frame with `opcode`.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut f = vec![0x80 | (opcode & 0x0f)];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// What the server sent on a WebSocket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    Text(String),
    /// A close frame: its code, if any, and reason text.
    Close(Option<u16>, String),
    /// The connection ended without a close frame.
    Eof,
}

/// An open client WebSocket.
pub struct WsClient {
    pub stream: TcpStream,
}

/// The answer to a WebSocket upgrade.
pub enum Upgrade {
    Accepted(WsClient),
    Refused(Reply),
}

impl WsClient {
    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        tokio::time::timeout(STEP_TIMEOUT, self.stream.write_all(&ws_frame(1, payload)))
            .await
            .map_err(|_| timed_out("sending a message"))?
    }

    /// The next text or close frame (pings and pongs skipped), within
    /// `within`; `None` if nothing came.
    pub async fn next_event(&mut self, within: Duration) -> Option<WsEvent> {
        let s = &mut self.stream;
        let read = async {
            loop {
                let mut h = [0u8; 2];
                if s.read_exact(&mut h).await.is_err() {
                    return WsEvent::Eof;
                }
                let len = match h[1] & 0x7f {
                    126 => {
                        let mut b = [0u8; 2];
                        if s.read_exact(&mut b).await.is_err() {
                            return WsEvent::Eof;
                        }
                        u16::from_be_bytes(b) as usize
                    }
                    127 => {
                        let mut b = [0u8; 8];
                        if s.read_exact(&mut b).await.is_err() {
                            return WsEvent::Eof;
                        }
                        u64::from_be_bytes(b) as usize
                    }
                    n => n as usize,
                };
                let mut payload = vec![0u8; len];
                if s.read_exact(&mut payload).await.is_err() {
                    return WsEvent::Eof;
                }
                match h[0] & 0x0f {
                    1 => return WsEvent::Text(String::from_utf8_lossy(&payload).into_owned()),
                    8 => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
                            .into_owned();
                        return WsEvent::Close(code, reason);
                    }
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(within, read).await.ok()
    }

    /// The next text message parsed as JSON, skipping nothing else: a close
    /// or the end is `Err` with what came instead.
    pub async fn next_json(&mut self, within: Duration) -> Result<serde_json::Value, String> {
        match self.next_event(within).await {
            Some(WsEvent::Text(t)) => {
                serde_json::from_str(&t).map_err(|e| format!("not JSON ({e}): {t}"))
            }
            other => Err(format!("{other:?} instead of a message")),
        }
    }
}

/// Opens `path` as a WebSocket from `from` with `bearer` (if any).
pub async fn ws_open_from(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> io::Result<Upgrade> {
    let mut s = connect_from(from, to).await?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {to}\r\n{auth}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tokio::time::timeout(STEP_TIMEOUT, s.write_all(req.as_bytes()))
        .await
        .map_err(|_| timed_out("sending the upgrade"))??;
    let head = read_head(&mut s).await?;
    let (status, headers) = parse_head(&head)?;
    if status == 101 {
        return Ok(Upgrade::Accepted(WsClient { stream: s }));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(STEP_TIMEOUT, s.read_exact(&mut body))
        .await
        .map_err(|_| timed_out("reading the refusal"))??;
    Ok(Upgrade::Refused(Reply {
        status,
        headers,
        body,
    }))
}

/// A random WireGuard public key in base64.
pub fn random_public_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// A `register` message's JSON with `public_key` and `endpoints`, padded
/// with trailing spaces (valid JSON still) to `pad_to` bytes if given.
pub fn register_json(public_key: &str, endpoints: &[SocketAddr], pad_to: Option<usize>) -> Vec<u8> {
    let msg = ClientMessage::Register(Register {
        protocol_version: CONTROL_VERSION,
        public_key: public_key.to_string(),
        endpoints: endpoints.to_vec(),
        hostname: Some("authz-test".into()),
        app_version: "test".into(),
    });
    let mut json = serde_json::to_vec(&msg).expect("a register message serializes");
    if let Some(n) = pad_to {
        assert!(
            n >= json.len(),
            "cannot pad {} bytes down to {n}",
            json.len()
        );
        json.resize(n, b' ');
    }
    json
}
