//! A fake coordinator that says whatever a test scripts: the hostile side of
//! the control protocol, for tests of what the helper refuses.
//!
//! It speaks just enough of the protocol in `warren_proto::control` over plain
//! HTTP: `GET /api/v1/me` and `GET /api/v1/connect` upgraded to a WebSocket
//! (RFC 6455, written here on blocking sockets so the harness needs no
//! WebSocket crate), with a bearer token. After the client's `Register` it
//! sends the current [`Script`]: a `Welcome` with the script's deployment and
//! device addresses, the snapshot in parts (`more: true` on all but the
//! last) and any diffs. The test can replace the script for the next
//! connection, push diffs into the live one and cut it
//! ([`FakeCoordinator::force_close`]) so the helper reconnects and gets the
//! next script.
//!
//! Nothing here checks what a real coordinator would: that is the point.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use warren_proto::control::{
    ApiError, ClientMessage, Me, Register, ServerMessage, TokenKind, UpdateKind, Welcome,
    WorkspaceUpdate, CONNECT_PATH, CONTROL_VERSION, ME_PATH,
};
use warren_proto::model::{Agent, DeploymentInfo, Workspace};

/// The user every script signs in as.
pub const FAKE_USER: &str = "alice";

/// Most bytes of one message the fake accepts from a client (a `Register`
/// is a few hundred).
const MAX_CLIENT_FRAME: u64 = 1024 * 1024;

/// What one connection gets after its `Register`.
#[derive(Debug, Clone)]
pub struct Script {
    pub deployment: DeploymentInfo,
    /// This device's tunnel addresses in the `Welcome`.
    pub addresses: Vec<IpAddr>,
    pub device_id: String,
    pub workspaces: Vec<Workspace>,
    pub agents: Vec<Agent>,
    /// Agents per snapshot part.
    pub part_size: usize,
    /// Sent after the snapshot, in order; their `seq` is set by the fake.
    pub diffs: Vec<WorkspaceUpdate>,
}

impl Script {
    /// A deployment with these prefixes and suffix, the device at
    /// `addresses`, and no workspaces yet.
    pub fn new(ipv4_prefix: &str, ipv6_prefix: &str, suffix: &str, addresses: &[IpAddr]) -> Self {
        Script {
            deployment: DeploymentInfo {
                suffix: suffix.to_string(),
                ipv4_prefix: ipv4_prefix.to_string(),
                ipv6_prefix: ipv6_prefix.to_string(),
            },
            addresses: addresses.to_vec(),
            device_id: "dev-fake".to_string(),
            workspaces: Vec::new(),
            agents: Vec::new(),
            part_size: 2_000,
            diffs: Vec::new(),
        }
    }

    /// Adds a workspace of [`FAKE_USER`] with id `ws-<name>`; returns the id.
    pub fn workspace(&mut self, name: &str) -> String {
        let id = format!("ws-{name}");
        if !self.workspaces.iter().any(|w| w.id == id) {
            self.workspaces.push(Workspace {
                id: id.clone(),
                name: name.to_string(),
                owner: FAKE_USER.to_string(),
            });
        }
        id
    }

    pub fn agent(mut self, agent: Agent) -> Self {
        self.agents.push(agent);
        self
    }

    pub fn diff(mut self, diff: WorkspaceUpdate) -> Self {
        self.diffs.push(diff);
        self
    }

    /// The snapshot as the messages the fake sends, all with `seq`.
    fn snapshot(&self, seq: u64) -> Vec<WorkspaceUpdate> {
        let size = self.part_size.max(1);
        let mut parts: Vec<WorkspaceUpdate> = self
            .agents
            .chunks(size)
            .map(|chunk| WorkspaceUpdate {
                kind: UpdateKind::Snapshot,
                seq,
                more: true,
                upserted_workspaces: Vec::new(),
                upserted_agents: chunk.to_vec(),
                deleted_workspaces: Vec::new(),
                deleted_agents: Vec::new(),
            })
            .collect();
        if parts.is_empty() {
            parts.push(WorkspaceUpdate {
                kind: UpdateKind::Snapshot,
                seq,
                more: true,
                upserted_workspaces: Vec::new(),
                upserted_agents: Vec::new(),
                deleted_workspaces: Vec::new(),
                deleted_agents: Vec::new(),
            });
        }
        parts[0].upserted_workspaces = self.workspaces.clone();
        if let Some(last) = parts.last_mut() {
            last.more = false;
        }
        parts
    }
}

/// An agent of workspace `workspace_id` with a key, addresses, one endpoint
/// and `name.<ws>.alice.<suffix>` style names given by the caller.
pub fn agent(
    id: &str,
    workspace_id: &str,
    public_key: &str,
    addresses: &[IpAddr],
    endpoints: &[SocketAddr],
    dns_names: &[&str],
) -> Agent {
    Agent {
        id: id.to_string(),
        name: id.to_string(),
        workspace_id: workspace_id.to_string(),
        public_key: Some(public_key.to_string()),
        addresses: addresses.to_vec(),
        endpoints: endpoints.to_vec(),
        dns_names: dns_names.iter().map(|n| n.to_string()).collect(),
        online: true,
    }
}

/// A valid-looking WireGuard public key (32 bytes, standard base64) that is
/// the same for the same `n` and differs between `n`s.
pub fn key_for(n: u64) -> String {
    use base64::Engine;
    let mut bytes = [0x5au8; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A diff (its `seq` is set when sent).
pub fn diff(upserted_agents: Vec<Agent>, deleted_agents: Vec<String>) -> WorkspaceUpdate {
    WorkspaceUpdate {
        kind: UpdateKind::Diff,
        seq: 0,
        more: false,
        upserted_workspaces: Vec::new(),
        upserted_agents,
        deleted_workspaces: Vec::new(),
        deleted_agents,
    }
}

/// One live WebSocket: the writing half and the last `seq` sent on it.
struct Live {
    id: u64,
    writer: Arc<Mutex<(TcpStream, u64)>>,
    /// Another handle on the socket, to cut it while a write is under way.
    cut: TcpStream,
}

struct Shared {
    token: String,
    script: Mutex<Arc<Script>>,
    live: Mutex<Vec<Live>>,
    /// Connections that registered and got a `Welcome`.
    welcomed: AtomicU64,
    next_id: AtomicU64,
    registers: Mutex<Vec<Register>>,
    /// What went wrong on the fake's side (a test can print it).
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// The fake, listening until dropped.
pub struct FakeCoordinator {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeCoordinator {
    /// Serves `listener` (bound wherever the test wants it, e.g. inside a
    /// namespace with [`bind_in_netns`]) for bearer `token`, starting with
    /// `script`.
    pub fn serve(listener: TcpListener, token: &str, script: Script) -> FakeCoordinator {
        let addr = listener.local_addr().expect("the listener has an address");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            script: Mutex::new(Arc::new(script)),
            live: Mutex::new(Vec::new()),
            welcomed: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            registers: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, sh));
        FakeCoordinator {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What every connection from now on gets.
    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = Arc::new(script);
    }

    /// Cuts every live connection (TCP shutdown, no close frame), as a
    /// coordinator restart or a network drop would.
    pub fn force_close(&self) {
        for live in lock(&self.shared.live).drain(..) {
            let _ = live.cut.shutdown(Shutdown::Both);
        }
    }

    /// Sends `update` on every live connection with the next `seq` of each;
    /// returns how many connections got it.
    pub fn push(&self, update: &WorkspaceUpdate) -> usize {
        let writers: Vec<_> = lock(&self.shared.live)
            .iter()
            .map(|l| (l.id, l.writer.clone()))
            .collect();
        let mut sent = 0;
        for (id, writer) in writers {
            let mut w = lock(&writer);
            let mut update = update.clone();
            w.1 += 1;
            update.seq = w.1;
            match send_message(&mut w.0, &ServerMessage::WorkspaceUpdate(update)) {
                Ok(()) => sent += 1,
                Err(e) => self.shared.error(format!("push to connection {id}: {e}")),
            }
        }
        sent
    }

    /// Connections that registered and were welcomed so far.
    pub fn welcomed(&self) -> u64 {
        self.shared.welcomed.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        lock(&self.shared.live).len()
    }

    /// Every `Register` received, oldest first.
    pub fn registers(&self) -> Vec<Register> {
        lock(&self.shared.registers).clone()
    }

    /// What went wrong on the fake's side (unreadable requests, writes
    /// that failed).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.force_close();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Binds a TCP listener to `addr` inside network namespace `ns`; the
/// listener stays in that namespace whichever thread uses it.
pub fn bind_in_netns(ns: &str, addr: SocketAddr) -> TcpListener {
    crate::netns::in_netns(ns, move || {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind the fake coordinator {addr}: {e}"))
    })
}

/// A lock that survives a test thread that panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn error(&self, e: String) {
        lock(&self.errors).push(e);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let sh = shared.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve_connection(stream, &sh) {
                        if !sh.stop.load(Ordering::SeqCst) {
                            sh.error(e);
                        }
                    }
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                shared.error(format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One HTTP request head.
struct RequestHead {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_head(stream: &mut TcpStream) -> Result<RequestHead, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the head (the first WebSocket frame)
    // is swallowed.
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            return Err("request head over 16 KiB".into());
        }
        match stream.read(&mut byte) {
            Ok(0) => return Err("closed before the request head ended".into()),
            Ok(_) => buf.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read the request head: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut words = first.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(RequestHead {
        method,
        path,
        headers,
    })
}

fn respond_json(
    stream: &mut TcpStream,
    status: &str,
    body: &impl serde::Serialize,
) -> Result<(), String> {
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .map_err(|e| format!("write the response: {e}"))
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) -> Result<(), String> {
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("make the connection blocking: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let head = read_head(&mut stream)?;
    let path = head.path.split('?').next().unwrap_or_default().to_string();
    let authorized = head
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.token);
    if head.method != "GET" || (path != CONNECT_PATH && path != ME_PATH) {
        return respond_json(
            &mut stream,
            "404 Not Found",
            &ApiError {
                error: "not_found".into(),
                message: format!("the fake coordinator has no {} {path}", head.method),
            },
        );
    }
    if !authorized {
        return respond_json(
            &mut stream,
            "401 Unauthorized",
            &ApiError {
                error: "unauthorized".into(),
                message: "the token is not valid; sign in again".into(),
            },
        );
    }
    let script = lock(&shared.script).clone();
    if path == ME_PATH {
        return respond_json(
            &mut stream,
            "200 OK",
            &Me {
                kind: TokenKind::User,
                user: FAKE_USER.into(),
                agent_id: None,
                deployment: script.deployment.clone(),
                coordinator_version: "fake".into(),
            },
        );
    }
    let Some(key) = head.header("sec-websocket-key") else {
        return respond_json(
            &mut stream,
            "400 Bad Request",
            &ApiError {
                error: "bad_request".into(),
                message: "expected a WebSocket upgrade".into(),
            },
        );
    };
    let accept = websocket_accept(key);
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|e| format!("write the upgrade: {e}"))?;

    // The client speaks first: its Register.
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let register = loop {
        match read_frame(&mut reader)? {
            Frame::Text(text) => match serde_json::from_slice::<ClientMessage>(&text) {
                Ok(ClientMessage::Register(r)) => break r,
                Ok(other) => return Err(format!("expected Register first, got {other:?}")),
                Err(e) => return Err(format!("unreadable first message: {e}")),
            },
            Frame::Ping(p) => write_frame(&mut stream, 0xA, &p).map_err(|e| e.to_string())?,
            Frame::Pong => {}
            Frame::Close => return Ok(()),
        }
    };
    lock(&shared.registers).push(register);
    reader.set_read_timeout(None).map_err(|e| e.to_string())?;

    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let cut = stream.try_clone().map_err(|e| e.to_string())?;
    let writer = Arc::new(Mutex::new((stream, 0u64)));
    {
        // Registered before anything is sent, so force_close can cut a
        // connection that is still sending its snapshot.
        lock(&shared.live).push(Live {
            id,
            writer: writer.clone(),
            cut,
        });
        let mut w = lock(&writer);
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: CONTROL_VERSION,
            coordinator_version: "fake".into(),
            deployment: script.deployment.clone(),
            user: FAKE_USER.into(),
            kind: TokenKind::User,
            id: script.device_id.clone(),
            addresses: script.addresses.clone(),
            relays: vec![],
        });
        let sent = send_message(&mut w.0, &welcome).and_then(|()| {
            shared.welcomed.fetch_add(1, Ordering::SeqCst);
            w.1 = 1;
            for part in script.snapshot(1) {
                send_message(&mut w.0, &ServerMessage::WorkspaceUpdate(part))?;
            }
            for d in &script.diffs {
                w.1 += 1;
                let mut d = d.clone();
                d.seq = w.1;
                send_message(&mut w.0, &ServerMessage::WorkspaceUpdate(d))?;
            }
            Ok(())
        });
        if let Err(e) = sent {
            drop(w);
            forget(shared, id);
            // The helper hanging up on a deployment it refused is expected.
            return if e.kind() == ErrorKind::BrokenPipe || e.kind() == ErrorKind::ConnectionReset {
                Ok(())
            } else {
                Err(format!("send the script: {e}"))
            };
        }
    }
    // Answer pings until the client goes or the test cuts the connection.
    let result = loop {
        match read_frame(&mut reader) {
            Ok(Frame::Ping(p)) => {
                let mut w = lock(&writer);
                if write_frame(&mut w.0, 0xA, &p).is_err() {
                    break Ok(());
                }
            }
            Ok(Frame::Text(_) | Frame::Pong) => {}
            Ok(Frame::Close) => {
                let mut w = lock(&writer);
                let _ = write_frame(&mut w.0, 0x8, &[]);
                let _ = w.0.shutdown(Shutdown::Both);
                break Ok(());
            }
            // The client or the test went away.
            Err(_) => break Ok(()),
        }
    };
    forget(shared, id);
    result
}

fn forget(shared: &Shared, id: u64) {
    lock(&shared.live).retain(|l| l.id != id);
}

fn send_message(stream: &mut TcpStream, msg: &ServerMessage) -> std::io::Result<()> {
    let text = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    write_frame(stream, 0x1, &text)
}

/// One unmasked, unfragmented frame (server to client).
fn write_frame(stream: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut head = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        head.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        head.push(126);
        head.extend((len as u16).to_be_bytes());
    } else {
        head.push(127);
        head.extend((len as u64).to_be_bytes());
    }
    stream.write_all(&head)?;
    stream.write_all(payload)?;
    stream.flush()
}

enum Frame {
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Reads one whole message (joining continuation frames), unmasking it.
fn read_frame(stream: &mut TcpStream) -> Result<Frame, String> {
    let mut message = Vec::new();
    let mut message_opcode = None;
    loop {
        let mut h = [0u8; 2];
        stream
            .read_exact(&mut h)
            .map_err(|e| format!("read a frame: {e}"))?;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).map_err(|e| e.to_string())?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).map_err(|e| e.to_string())?;
            len = u64::from_be_bytes(b);
        }
        if len > MAX_CLIENT_FRAME {
            return Err(format!("a client frame of {len} bytes"));
        }
        let mut mask = [0u8; 4];
        if masked {
            stream.read_exact(&mut mask).map_err(|e| e.to_string())?;
        }
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).map_err(|e| e.to_string())?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            0x8 => return Ok(Frame::Close),
            0x9 => return Ok(Frame::Ping(payload)),
            0xA => return Ok(Frame::Pong),
            0x0..=0x2 => {
                if opcode != 0 {
                    message_opcode = Some(opcode);
                }
                message.extend(payload);
                if u64::try_from(message.len()).unwrap_or(u64::MAX) > MAX_CLIENT_FRAME {
                    return Err("a client message over 1 MiB".into());
                }
                if fin {
                    return match message_opcode {
                        Some(_) => Ok(Frame::Text(message)),
                        None => Err("a continuation frame without a first frame".into()),
                    };
                }
            }
            other => return Err(format!("unknown opcode {other:#x}")),
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §4.2.2).
fn websocket_accept(key: &str) -> String {
    use base64::Engine;
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha1(&input))
}

/// SHA-1 (FIPS 180-4), only for the WebSocket handshake above, which
/// requires it; nothing here relies on it for security.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend(bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_answer_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let hex: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn a_snapshot_comes_in_parts_marked_more_but_the_last() {
        let mut s = Script::new("100.64.0.0/12", "fd00:beef:1::/48", "warren", &[]);
        let ws = s.workspace("w");
        for i in 0..5 {
            s.agents
                .push(agent(&format!("a{i}"), &ws, &key_for(i), &[], &[], &[]));
        }
        s.part_size = 2;
        let parts = s.snapshot(1);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts.iter().map(|p| p.more).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(parts[0].upserted_workspaces.len(), 1);
        assert!(parts[1].upserted_workspaces.is_empty());
        let empty = Script::new("100.64.0.0/12", "fd00:beef:1::/48", "warren", &[]).snapshot(1);
        assert_eq!(empty.len(), 1);
        assert!(!empty[0].more);
    }

    #[test]
    fn keys_are_32_bytes_and_distinct() {
        assert_eq!(key_for(1).len(), 44);
        assert_ne!(key_for(1), key_for(2));
    }
}
