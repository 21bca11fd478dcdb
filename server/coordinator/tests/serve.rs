//! End-to-end tests of `warren-coord`: the real binary serving on
//! 127.0.0.1, admin commands run as separate processes, and WebSocket
//! clients speaking the control protocol.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use warren_proto::control::{
    ClientMessage, PeerUpdate, Register, ServerMessage, TokenKind, UpdateKind, Welcome,
    WorkspaceUpdate, CONTROL_VERSION,
};

const BIN: &str = env!("CARGO_BIN_EXE_warren-coord");

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A database in a temporary directory, and optionally `serve` running on it.
struct Coord {
    dir: tempfile::TempDir,
    server: Option<Child>,
    base: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Coord {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            server: None,
            base: String::new(),
            stderr: None,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("coord.db")
    }

    /// Runs an admin command; returns stdout. Panics (with stderr) on failure.
    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--db")
            .arg(self.db())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn admin_fails(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--db")
            .arg(self.db())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn user_with_token(&self, name: &str) -> String {
        self.admin(&["user", "add", name]);
        let out = self.admin(&["token", "create", name]);
        assert_eq!(out.lines().count(), 1, "{out:?}");
        out.trim().to_string()
    }

    /// Adds agent `name` to `owner`'s `workspace`; returns its token.
    fn agent_token(&self, owner: &str, workspace: &str, name: &str) -> String {
        self.admin(&[
            "agent",
            "add",
            "--owner",
            owner,
            "--workspace",
            workspace,
            name,
        ])
        .trim()
        .to_string()
    }

    fn serve(&mut self, extra: &[&str], rust_log: &str) {
        self.serve_env(extra, rust_log, &[]);
    }

    fn serve_env(&mut self, extra: &[&str], rust_log: &str, env: &[(&str, &str)]) {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--db")
            .arg(self.db())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        self.stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        }));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        self.base = url;
        self.server = Some(child);
    }

    fn ws_url(&self) -> String {
        format!("{}/api/v1/connect", self.base.replacen("http", "ws", 1))
    }

    /// Stops the server with SIGTERM, waits for its graceful shutdown (it
    /// finishes with the connections it has, then logs "stopped") and
    /// returns everything it logged: a barrier, so a check of the log sees
    /// all the server did.
    fn stop_gracefully(&mut self) -> String {
        if let Some(c) = &mut self.server {
            let term = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            assert!(term.success(), "kill -TERM failed");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while c.try_wait().unwrap().is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the coordinator did not stop within 15 s of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let log = self.stop();
        assert!(log.contains("stopped"), "no graceful stop in the log");
        log
    }

    /// Stops the server and returns everything it logged.
    fn stop(&mut self) -> String {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn random_key() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn register(key: &str) -> ClientMessage {
    ClientMessage::Register(Register {
        protocol_version: CONTROL_VERSION,
        public_key: key.into(),
        endpoints: vec!["127.0.0.1:51820".parse().unwrap()],
        hostname: Some("laptop".into()),
        app_version: "test".into(),
    })
}

async fn open(url: &str, token: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn send(ws: &mut Ws, msg: &ClientMessage) {
    ws.send(Message::text(serde_json::to_string(msg).unwrap()))
        .await
        .unwrap();
}

/// The next server message within `within`, or `None` on timeout/close.
async fn next_within(ws: &mut Ws, within: Duration) -> Option<ServerMessage> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match msg.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn next(ws: &mut Ws) -> ServerMessage {
    next_within(ws, Duration::from_secs(5))
        .await
        .expect("no message from the coordinator")
}

async fn connect(url: &str, token: &str, key: &str) -> (Ws, Welcome) {
    let mut ws = open(url, token).await.unwrap();
    send(&mut ws, &register(key)).await;
    match next(&mut ws).await {
        ServerMessage::Welcome(w) => (ws, w),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn workspace_update(ws: &mut Ws, within: Duration) -> WorkspaceUpdate {
    match next_within(ws, within).await {
        Some(ServerMessage::WorkspaceUpdate(u)) => u,
        other => panic!("expected a workspace update, got {other:?}"),
    }
}

async fn peer_update(ws: &mut Ws) -> PeerUpdate {
    match next(ws).await {
        ServerMessage::PeerUpdate(u) => u,
        other => panic!("expected a peer update, got {other:?}"),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn user_gets_snapshot_then_diffs_from_admin_commands() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let agent_token = c.agent_token("alice", "api", "main");
    assert!(agent_token.starts_with("wat_"));
    c.serve(&[], "info");

    let (mut ws, welcome) = connect(&c.ws_url(), &token, &random_key()).await;
    assert_eq!(welcome.kind, TokenKind::User);
    assert_eq!(welcome.user, "alice");
    assert_eq!(welcome.protocol_version, CONTROL_VERSION);
    assert_eq!(welcome.deployment.suffix, "warren");
    assert_eq!(welcome.deployment.ipv4_prefix, "100.64.0.0/10");
    assert_eq!(welcome.addresses.len(), 2);

    let snap = workspace_update(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(snap.kind, UpdateKind::Snapshot);
    assert_eq!(snap.seq, 0);
    assert_eq!(snap.upserted_workspaces.len(), 1);
    let api = snap.upserted_workspaces[0].clone();
    assert_eq!((api.name.as_str(), api.owner.as_str()), ("api", "alice"));
    assert_eq!(snap.upserted_agents.len(), 1);
    let main = snap.upserted_agents[0].clone();
    assert_eq!(main.workspace_id, api.id);
    assert_eq!(main.dns_names, vec!["main.api.alice.warren", "api.warren"]);
    assert!(!main.online);
    assert_eq!(main.addresses.len(), 2);

    // An admin command in another process reaches us within a second.
    let started = std::time::Instant::now();
    c.admin(&["workspace", "add", "--owner", "alice", "web"]);
    let d = workspace_update(&mut ws, Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((d.kind, d.seq), (UpdateKind::Diff, 1));
    assert_eq!(d.upserted_workspaces.len(), 1);
    assert_eq!(d.upserted_workspaces[0].name, "web");
    assert!(d.upserted_agents.is_empty() && d.deleted_workspaces.is_empty());

    c.admin(&[
        "agent",
        "add",
        "--owner",
        "alice",
        "--workspace",
        "web",
        "w1",
    ]);
    let d = workspace_update(&mut ws, Duration::from_secs(1)).await;
    assert_eq!(d.seq, 2);
    assert_eq!(d.upserted_agents.len(), 1);
    assert_eq!(
        d.upserted_agents[0].dns_names,
        vec!["w1.web.alice.warren", "web.warren"]
    );

    c.admin(&["workspace", "rm", "--owner", "alice", "api"]);
    let d = workspace_update(&mut ws, Duration::from_secs(1)).await;
    assert_eq!(d.seq, 3);
    assert_eq!(d.deleted_workspaces, vec![api.id.clone()]);
    assert_eq!(d.deleted_agents, vec![main.id.clone()]);
    assert!(d.upserted_workspaces.is_empty() && d.upserted_agents.is_empty());
}

#[tokio::test]
async fn other_users_workspaces_are_absent() {
    let mut c = Coord::new();
    let alice = c.user_with_token("alice");
    c.user_with_token("bob");
    c.admin(&["workspace", "add", "--owner", "alice", "mine"]);
    c.admin(&["workspace", "add", "--owner", "bob", "secret"]);
    c.admin(&[
        "agent",
        "add",
        "--owner",
        "bob",
        "--workspace",
        "secret",
        "main",
    ]);
    c.serve(&[], "info");

    let (mut ws, _) = connect(&c.ws_url(), &alice, &random_key()).await;
    let snap = workspace_update(&mut ws, Duration::from_secs(5)).await;
    let names: Vec<_> = snap
        .upserted_workspaces
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(names, vec!["mine"]);
    assert!(snap.upserted_agents.is_empty());

    // Bob's changes send alice nothing.
    c.admin(&["workspace", "add", "--owner", "bob", "more"]);
    assert_eq!(next_within(&mut ws, Duration::from_millis(700)).await, None);
    // Her own still arrive.
    c.admin(&["workspace", "add", "--owner", "alice", "two"]);
    let d = workspace_update(&mut ws, Duration::from_secs(1)).await;
    assert_eq!(d.seq, 1);
    assert_eq!(d.upserted_workspaces[0].name, "two");
}

#[tokio::test]
async fn bad_tokens_get_the_same_401() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.serve(&[], "info");
    let me = format!("{}/api/v1/me", c.base);

    let ok = http().get(&me).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: warren_proto::control::Me = ok.json().await.unwrap();
    assert_eq!((body.kind, body.user.as_str()), (TokenKind::User, "alice"));

    let other = warren_coord::token::generate(TokenKind::User);
    let wrong_secret = format!("{}{}", &token[..21], &other.token.expose()[21..]);
    let unknown_id = other.token.expose().to_string();
    let malformed = "wut_nothex_abc".to_string();
    let mut bodies = Vec::new();
    for bad in [wrong_secret, unknown_id, malformed] {
        let r = http().get(&me).bearer_auth(&bad).send().await.unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains(&bad));
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    // The WebSocket refuses before the upgrade, with the same JSON.
    match open(&c.ws_url(), &token.replacen("wut_", "wat_", 1)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn json_errors_for_unknown_paths_and_bad_requests() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.serve(&[], "info");
    let health: serde_json::Value = http()
        .get(format!("{}/api/v1/health", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, serde_json::json!({"ok": true}));

    let r = http().get(format!("{}/nope", c.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: warren_proto::control::ApiError = r.json().await.unwrap();
    assert_eq!(body.error, "not_found");

    let r = http()
        .post(format!("{}/api/v1/me", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: warren_proto::control::ApiError = r.json().await.unwrap();
    assert_eq!(body.error, "method_not_allowed");

    // A plain GET on the WebSocket path: authenticated, but not an upgrade.
    let r = http()
        .get(format!("{}/api/v1/connect", c.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: warren_proto::control::ApiError = r.json().await.unwrap();
    assert_eq!(body.error, "bad_request");
}

#[tokio::test]
async fn bad_register_messages_are_refused_with_a_reason() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.serve(&[], "info");

    let mut ws = open(&c.ws_url(), &token).await.unwrap();
    let mut reg = register(&random_key());
    if let ClientMessage::Register(r) = &mut reg {
        r.protocol_version = CONTROL_VERSION + 1;
    }
    send(&mut ws, &reg).await;
    match next(&mut ws).await {
        ServerMessage::Error(e) => {
            assert_eq!(e.error, "version_mismatch");
            assert!(e.message.contains("install a matching"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(next_within(&mut ws, Duration::from_secs(2)).await, None);

    let mut ws = open(&c.ws_url(), &token).await.unwrap();
    send(&mut ws, &register("bm90IGEga2V5")).await;
    match next(&mut ws).await {
        ServerMessage::Error(e) => assert!(e.message.contains("WireGuard key"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }

    let mut ws = open(&c.ws_url(), &token).await.unwrap();
    send(
        &mut ws,
        &ClientMessage::Endpoints {
            endpoints: Vec::new(),
        },
    )
    .await;
    match next(&mut ws).await {
        ServerMessage::Error(e) => assert!(e.message.contains("register"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn agents_go_online_see_devices_and_are_closed_when_removed() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let agent_token = c.agent_token("alice", "api", "main");
    c.serve(&[], "info");

    let user_key = random_key();
    let (mut user, device) = connect(&c.ws_url(), &token, &user_key).await;
    let snap = workspace_update(&mut user, Duration::from_secs(5)).await;
    assert!(!snap.upserted_agents[0].online);
    let agent_id = snap.upserted_agents[0].id.clone();

    let agent_key = random_key();
    let (mut agent, welcome) = connect(&c.ws_url(), &agent_token, &agent_key).await;
    assert_eq!(welcome.kind, TokenKind::Agent);
    assert_eq!(welcome.id, agent_id);
    assert_eq!(welcome.addresses, snap.upserted_agents[0].addresses);
    let peers = peer_update(&mut agent).await;
    assert_eq!((peers.kind, peers.seq), (UpdateKind::Snapshot, 0));
    assert_eq!(peers.upserted.len(), 1);
    assert_eq!(peers.upserted[0].id, device.id);
    assert_eq!(peers.upserted[0].public_key, user_key);
    assert_eq!(peers.upserted[0].addresses, device.addresses);

    // The user sees the agent come online with its key, at once.
    let d = workspace_update(&mut user, Duration::from_millis(500)).await;
    assert_eq!(d.seq, 1);
    assert!(d.upserted_agents[0].online);
    assert_eq!(
        d.upserted_agents[0].public_key.as_deref(),
        Some(agent_key.as_str())
    );

    // New endpoints from the user reach the agent.
    send(
        &mut user,
        &ClientMessage::Endpoints {
            endpoints: vec!["127.0.0.1:4000".parse().unwrap()],
        },
    )
    .await;
    let p = peer_update(&mut agent).await;
    assert_eq!((p.kind, p.seq), (UpdateKind::Diff, 1));
    assert_eq!(
        p.upserted[0].endpoints,
        vec!["127.0.0.1:4000".parse().unwrap()]
    );

    // A second device of the same user shows up for the agent.
    let (mut laptop2, device2) = connect(&c.ws_url(), &token, &random_key()).await;
    let _ = workspace_update(&mut laptop2, Duration::from_secs(5)).await;
    let p = peer_update(&mut agent).await;
    assert_eq!(p.seq, 2);
    assert_eq!(p.upserted[0].id, device2.id);
    drop(laptop2);
    let p = peer_update(&mut agent).await;
    assert_eq!(p.seq, 3);
    assert_eq!(p.deleted, vec![device2.id.clone()]);

    // Removing the agent closes its connection with a reason.
    c.admin(&[
        "agent",
        "rm",
        "--owner",
        "alice",
        "--workspace",
        "api",
        "main",
    ]);
    match next_within(&mut agent, Duration::from_secs(1)).await {
        Some(ServerMessage::Error(e)) => assert!(e.message.contains("removed"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }
    let d = workspace_update(&mut user, Duration::from_secs(1)).await;
    assert_eq!(d.deleted_agents, vec![agent_id]);
}

#[tokio::test]
async fn newer_agent_connection_wins_and_disconnect_goes_offline() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let agent_token = c.agent_token("alice", "api", "main");
    c.serve(&[], "info");
    let (mut user, _) = connect(&c.ws_url(), &token, &random_key()).await;
    let _ = workspace_update(&mut user, Duration::from_secs(5)).await;

    let (mut first, _) = connect(&c.ws_url(), &agent_token, &random_key()).await;
    let _ = peer_update(&mut first).await;
    assert!(
        workspace_update(&mut user, Duration::from_secs(1))
            .await
            .upserted_agents[0]
            .online
    );

    let second_key = random_key();
    let (mut second, _) = connect(&c.ws_url(), &agent_token, &second_key).await;
    let _ = peer_update(&mut second).await;
    match next_within(&mut first, Duration::from_secs(1)).await {
        Some(ServerMessage::Error(e)) => assert_eq!(e.error, "replaced"),
        other => panic!("expected an error, got {other:?}"),
    }
    let d = workspace_update(&mut user, Duration::from_secs(1)).await;
    assert_eq!(
        d.upserted_agents[0].public_key.as_deref(),
        Some(second_key.as_str())
    );
    assert!(d.upserted_agents[0].online);

    second.close(None).await.unwrap();
    let d = workspace_update(&mut user, Duration::from_secs(1)).await;
    assert!(!d.upserted_agents[0].online);
}

#[tokio::test]
async fn revoked_token_closes_the_connection() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.serve(&[], "info");
    let (mut ws, _) = connect(&c.ws_url(), &token, &random_key()).await;
    let _ = workspace_update(&mut ws, Duration::from_secs(5)).await;
    let list = c.admin(&["token", "list", "--owner", "alice"]);
    // The first line is the header.
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(&token[4..20], id);
    // The positional form of earlier versions still works.
    assert_eq!(c.admin(&["token", "list", "alice"]), list);
    c.admin(&["token", "revoke", &id]);
    match next_within(&mut ws, Duration::from_secs(1)).await {
        Some(ServerMessage::Error(e)) => {
            assert_eq!(e.error, "unauthorized");
            assert!(e.message.contains("sign in again"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let r = http()
        .get(format!("{}/api/v1/me", c.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn static_wireguard_peers_are_always_online() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "db"]);
    let key = random_key();
    let out = c.admin(&[
        "agent",
        "add",
        "--owner",
        "alice",
        "--workspace",
        "db",
        "wg",
        "--public-key",
        &key,
        "--endpoint",
        "127.0.0.1:51820",
        "--endpoint",
        "[::1]:51821",
    ]);
    assert_eq!(out, "", "no token is printed for a static peer");
    c.serve(&["--suffix", "dev.test"], "info");
    let (mut ws, w) = connect(&c.ws_url(), &token, &random_key()).await;
    assert_eq!(w.deployment.suffix, "dev.test");
    let snap = workspace_update(&mut ws, Duration::from_secs(5)).await;
    let a = &snap.upserted_agents[0];
    assert!(a.online);
    assert_eq!(a.public_key.as_deref(), Some(key.as_str()));
    assert_eq!(a.endpoints.len(), 2);
    assert_eq!(a.dns_names, vec!["wg.db.alice.dev.test", "db.dev.test"]);
}

#[tokio::test]
async fn secrets_never_reach_the_log_even_at_trace() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let agent_token = c.agent_token("alice", "api", "main");
    c.serve(&[], "trace");
    let r = http()
        .get(format!("{}/api/v1/me", c.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = format!("{}AAAA", &token[..token.len() - 4]);
    let r = http()
        .get(format!("{}/api/v1/me", c.base))
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (mut user, _) = connect(&c.ws_url(), &token, &random_key()).await;
    let _ = workspace_update(&mut user, Duration::from_secs(5)).await;
    let (mut agent, _) = connect(&c.ws_url(), &agent_token, &random_key()).await;
    let _ = peer_update(&mut agent).await;
    drop((user, agent));
    let log = c.stop_gracefully();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging is on"
    );
    for secret in [&token[21..], &agent_token[21..], &bad[21..]] {
        let leaks: Vec<String> = log
            .lines()
            .filter(|l| l.contains(secret))
            .map(|l| l.replace(secret, "<SECRET>").chars().take(400).collect())
            .collect();
        assert!(
            leaks.is_empty(),
            "a token secret appeared in the log: {leaks:#?}"
        );
    }
    assert!(!log.to_ascii_lowercase().contains("bearer wut_"));
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused() {
    let c = Coord::new();
    let out = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(c.db())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}

fn write_cert(dir: &Path) -> (PathBuf, PathBuf, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path, cert_pem)
}

#[tokio::test]
async fn tls_serve_works() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    let (cert, key, pem) = write_cert(c.dir.path());
    c.serve(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "info",
    );
    assert!(c.base.starts_with("https://127.0.0.1:"), "{}", c.base);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let me: warren_proto::control::Me = client
        .get(format!("{}/api/v1/me", c.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me.user, "alice");

    // And the WebSocket over TLS.
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pemfile_free_der(&pem);
    roots.add(der.into()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut req = c.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            config,
        ))),
    )
    .await
    .unwrap();
    send(&mut ws, &register(&random_key())).await;
    assert!(matches!(next(&mut ws).await, ServerMessage::Welcome(_)));
    assert_eq!(
        workspace_update(&mut ws, Duration::from_secs(5)).await.kind,
        UpdateKind::Snapshot
    );

    // A TLS server still refuses bad files with a clear error.
    let out = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(c.db())
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&key)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PEM"));
}

/// The DER bytes of the single certificate in `pem`.
fn rustls_pemfile_free_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_workspaces_snapshot() {
    let mut c = Coord::new();
    c.admin(&[
        "seed",
        "--owner",
        "bench",
        "--workspaces",
        "10000",
        "--agents-per-workspace",
        "2",
    ]);
    let token = c.admin(&["token", "create", "bench"]).trim().to_string();
    c.serve(&[], "info");
    let (mut ws, _) = connect(&c.ws_url(), &token, &random_key()).await;
    // A snapshot this large arrives in parts; gather them.
    let mut snap = workspace_update(&mut ws, Duration::from_secs(30)).await;
    let mut parts = 1;
    while snap.more {
        let next = workspace_update(&mut ws, Duration::from_secs(30)).await;
        assert_eq!(next.kind, UpdateKind::Snapshot);
        assert_eq!(next.seq, snap.seq);
        snap.upserted_workspaces.extend(next.upserted_workspaces);
        snap.upserted_agents.extend(next.upserted_agents);
        snap.more = next.more;
        parts += 1;
    }
    assert!(parts > 1, "30,000 items come in several parts");
    assert_eq!(snap.upserted_workspaces.len(), 10_000);
    assert_eq!(snap.upserted_agents.len(), 20_000);
    let mut v4: Vec<_> = snap
        .upserted_agents
        .iter()
        .map(|a| a.addresses[0])
        .collect();
    v4.sort();
    v4.dedup();
    assert_eq!(v4.len(), 20_000, "every agent has its own address");
    let a0 = snap
        .upserted_agents
        .iter()
        .find(|a| a.dns_names[0] == "a0.ws-00042.bench.warren")
        .unwrap();
    assert_eq!(a0.dns_names[1], "ws-00042.warren");
    // A one-agent change is a small diff.
    c.admin(&[
        "agent",
        "rm",
        "--owner",
        "bench",
        "--workspace",
        "ws-00042",
        "a0",
    ]);
    let d = workspace_update(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(d.deleted_agents, vec![a0.id.clone()]);
    // The next agent takes over the workspace's short name.
    assert_eq!(d.upserted_agents.len(), 1);
    assert_eq!(
        d.upserted_agents[0].dns_names,
        vec!["a1.ws-00042.bench.warren", "ws-00042.warren"]
    );
}

#[test]
fn admin_commands_validate_and_explain() {
    let c = Coord::new();
    let err = c.admin_fails(&["user", "add", "Alice"]);
    assert!(err.contains("lowercase"), "{err}");
    let err = c.admin_fails(&["workspace", "add", "--owner", "ghost", "ws"]);
    assert!(err.contains("user add ghost"), "{err}");
    c.admin(&["user", "add", "alice"]);
    let err = c.admin_fails(&["user", "add", "alice"]);
    assert!(err.contains("already exists"), "{err}");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let err = c.admin_fails(&["workspace", "add", "--owner", "alice", "api"]);
    assert!(err.contains("already has"), "{err}");
    let t1 = c.admin(&[
        "agent",
        "add",
        "--owner",
        "alice",
        "--workspace",
        "api",
        "main",
    ]);
    let err = c.admin_fails(&[
        "agent",
        "add",
        "--owner",
        "alice",
        "--workspace",
        "api",
        "main",
    ]);
    assert!(err.contains("agent rm"), "{err}");
    assert!(!err.contains(&t1.trim()[21..]));
    let err = c.admin_fails(&[
        "agent",
        "add",
        "--owner",
        "alice",
        "--workspace",
        "api",
        "x_y",
    ]);
    assert!(err.contains("not valid"), "{err}");
    let err = c.admin_fails(&["token", "create", "nobody"]);
    assert!(err.contains("no user"), "{err}");
    assert_eq!(c.admin(&["workspace", "list", "--owner", "alice"]), "api\n");
}

#[tokio::test]
async fn silent_connections_are_pinged_then_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.serve_env(&[], "info", &[("WARREN_COORD_PING_MS", "200")]);
    let addr = c.base.trim_start_matches("http://").to_string();

    // A client that answers nothing, not even pings: a raw socket.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let handshake = format!(
        "GET /api/v1/connect HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let payload = serde_json::to_vec(&register(&random_key())).unwrap();
    let len = u16::try_from(payload.len()).unwrap();
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&payload); // all-zero mask
    tcp.write_all(&frame).await.unwrap();

    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the silent connection was not dropped")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    // Dropped after about three ping intervals, not at once.
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("101 Switching Protocols"), "{text}");
    assert!(text.contains("\"welcome\""), "{text}");
    assert!(
        received.windows(2).any(|w| w == [0x89, 0x00]),
        "no ping was sent"
    );
}

fn register_with(key: &str, endpoints: &[&str]) -> ClientMessage {
    ClientMessage::Register(Register {
        protocol_version: CONTROL_VERSION,
        public_key: key.into(),
        endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        hostname: Some("laptop".into()),
        app_version: "test".into(),
    })
}

/// The error a registration gets, after which the connection closes.
async fn refused(url: &str, token: &str, msg: &ClientMessage) -> warren_proto::control::ApiError {
    let mut ws = open(url, token).await.unwrap();
    send(&mut ws, msg).await;
    let err = match next(&mut ws).await {
        ServerMessage::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(next_within(&mut ws, Duration::from_secs(2)).await, None);
    err
}

#[tokio::test]
async fn unusable_endpoints_taken_keys_and_oversized_messages_are_refused() {
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let agent = |name: &str| {
        c.admin(&[
            "agent",
            "add",
            "--owner",
            "alice",
            "--workspace",
            "api",
            name,
        ])
        .trim()
        .to_string()
    };
    let (main_token, aux_token) = (agent("main"), agent("aux"));
    // Static peers too (loopback allowed: the operator knows where it runs).
    let err = c.admin_fails(&[
        "agent",
        "add",
        "--owner",
        "alice",
        "--workspace",
        "api",
        "wg",
        "--public-key",
        &random_key(),
        "--endpoint",
        "224.0.0.1:51820",
    ]);
    assert!(
        err.contains("224.0.0.1:51820 is a multicast address"),
        "{err}"
    );
    c.serve(&[], "info");
    let url = c.ws_url();

    // Endpoints no peer can use, or too many of them.
    let e = refused(
        &url,
        &token,
        &register_with(&random_key(), &["224.0.0.1:51820"]),
    )
    .await;
    assert_eq!(e.error, "invalid_endpoint");
    assert!(
        e.message
            .starts_with("endpoint 224.0.0.1:51820 is a multicast address"),
        "{}",
        e.message
    );
    let e = refused(
        &url,
        &main_token,
        &register_with(&random_key(), &["0.0.0.0:51820"]),
    )
    .await;
    assert_eq!(e.error, "invalid_endpoint");
    assert!(e.message.contains("--endpoint"), "{}", e.message);
    let many: Vec<String> = (1..=17).map(|p| format!("192.0.2.1:{p}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let e = refused(&url, &main_token, &register_with(&random_key(), &many)).await;
    assert_eq!(e.error, "too_many_endpoints");
    // Loopback endpoints are fine beside a loopback coordinator (the demo).
    let main_key = random_key();
    let (mut main, _) = connect(&url, &main_token, &main_key).await;
    let _ = peer_update(&mut main).await;

    // A sibling agent, or any device, can't take main's key; main itself
    // can come back with it.
    let e = refused(&url, &aux_token, &register(&main_key)).await;
    assert_eq!(e.error, "key_in_use");
    assert!(e.message.contains("--key-file"), "{}", e.message);
    let e = refused(&url, &token, &register(&main_key)).await;
    assert_eq!(e.error, "key_in_use");
    drop(main);
    let (mut main, _) = connect(&url, &main_token, &main_key).await;
    let _ = peer_update(&mut main).await;

    // A message over 1 MiB is refused with the limit named.
    let mut ws = open(&url, &token).await.unwrap();
    let mut big = register_with(&random_key(), &[]);
    if let ClientMessage::Register(r) = &mut big {
        r.hostname = Some("h".repeat(2 * 1024 * 1024));
    }
    let _ = ws
        .send(Message::text(serde_json::to_string(&big).unwrap()))
        .await;
    match next_within(&mut ws, Duration::from_secs(5)).await {
        Some(ServerMessage::Error(e)) => assert!(e.message.contains("1024 KiB"), "{}", e.message),
        other => panic!("expected an error, got {other:?}"),
    }

    // New endpoints mid-session are checked like the registered ones: a bad
    // list ends the connection with the reason.
    send(
        &mut main,
        &ClientMessage::Endpoints {
            endpoints: vec!["255.255.255.255:51820".parse().unwrap()],
        },
    )
    .await;
    match next_within(&mut main, Duration::from_secs(5)).await {
        Some(ServerMessage::Error(e)) => {
            assert_eq!(e.error, "invalid_endpoint");
            assert!(e.message.contains("broadcast"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(next_within(&mut main, Duration::from_secs(2)).await, None);
}

#[tokio::test]
async fn loopback_endpoints_are_refused_unless_the_coordinator_is_on_loopback() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = Coord::new();
    let token = c.user_with_token("alice");
    let (cert, key, pem) = write_cert(c.dir.path());
    // TLS on every interface: not a loopback coordinator.
    let mut child = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(c.db())
        .args(["--listen", "0.0.0.0:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    let url = format!("wss://127.0.0.1:{port}/api/v1/connect");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pemfile_free_der(&pem).into()).unwrap();
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let attempt = |endpoints: &'static [&'static str]| {
        let (url, token, config) = (url.clone(), token.clone(), config.clone());
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
                req,
                None,
                false,
                Some(tokio_tungstenite::Connector::Rustls(config)),
            )
            .await
            .unwrap();
            send(&mut ws, &register_with(&random_key(), endpoints)).await;
            next(&mut ws).await
        }
    };
    for local in [&["127.0.0.1:22"][..], &["[fe80::1]:51820"][..]] {
        match attempt(local).await {
            ServerMessage::Error(e) => {
                assert_eq!(e.error, "invalid_endpoint");
                assert!(e.message.contains(local[0]), "{}", e.message);
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    assert!(matches!(
        attempt(&["192.0.2.1:51820"]).await,
        ServerMessage::Welcome(_)
    ));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_address_and_token() {
    let mut c = Coord::new();
    let alice = c.user_with_token("alice");
    let bob = c.user_with_token("bob");
    c.serve(
        &[
            "--auth-failures-burst",
            "3",
            "--auth-failures-per-minute",
            "1",
        ],
        "info",
    );
    let me = format!("{}/api/v1/me", c.base);
    let from = |a: &str| {
        reqwest::Client::builder()
            .local_address(a.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let (guesser, owner) = (from("127.0.0.7"), from("127.0.0.8"));
    let wrong = |t: &str| {
        let other = warren_coord::token::generate(TokenKind::User);
        format!("{}{}", &t[..21], &other.token.expose()[21..])
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = guesser
            .get(&me)
            .bearer_auth(wrong(&alice))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
            let body: warren_proto::control::ApiError = r.json().await.unwrap();
            assert_eq!(body.error, "too_many_attempts");
            assert!(body.message.contains("wait"), "{}", body.message);
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // That token from that address waits, even with the right secret...
    let r = guesser.get(&me).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 429);
    // ...but its owner elsewhere and another token there are served.
    let r = owner.get(&me).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = guesser.get(&me).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Made-up ids and malformed tokens share one bucket per address.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let made_up = warren_coord::token::generate(TokenKind::User);
        let r = guesser
            .get(&me)
            .bearer_auth(made_up.token.expose())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    let r = guesser
        .get(&me)
        .bearer_auth("nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = guesser.get(&me).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A TURN secret file readable by its owner only.
fn turn_secret_file(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("turn-secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

#[test]
fn turn_flags_are_validated_with_a_way_out() {
    let c = Coord::new();
    let secret = turn_secret_file(c.dir.path(), "s3cret-turn");
    let secret = secret.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        c.admin_fails(&args)
    };
    let err = serve(&["--turn", "127.0.0.1:3478"]);
    assert!(err.contains("--turn-secret-file"), "{err}");
    let err = serve(&["--turn-secret-file", secret]);
    assert!(err.contains("--turn"), "{err}");
    let err = serve(&["--turn", "turn1.example.com", "--turn-secret-file", secret]);
    assert!(err.contains("is not HOST:PORT"), "{err}");
    let err = serve(&["--turn", "0.0.0.0:3478", "--turn-secret-file", secret]);
    assert!(err.contains("unspecified"), "{err}");
    let err = serve(&[
        "--turn",
        "t:1",
        "--turn-secret-file",
        secret,
        "--turn-credential-ttl",
        "30",
    ]);
    assert!(err.contains("60-86400"), "{err}");
    let err = serve(&[
        "--turn",
        "t:1",
        "--turn",
        "t:1",
        "--turn-secret-file",
        secret,
    ]);
    assert!(err.contains("twice"), "{err}");
    let missing = c.dir.path().join("nope");
    let err = serve(&[
        "--turn",
        "t:1",
        "--turn-secret-file",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains("cannot read the TURN secret file"), "{err}");
    let empty = c.dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = c.dir.path().join("open");
        std::fs::write(&open, "s3cret-turn\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = serve(&[
            "--turn",
            "t:1",
            "--turn-secret-file",
            open.to_str().unwrap(),
        ]);
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("s3cret-turn"), "{err}");
    }
    let err = serve(&[
        "--turn",
        "t:1",
        "--turn-secret-file",
        empty.to_str().unwrap(),
    ]);
    assert!(err.contains("is empty"), "{err}");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn turn_credentials_come_with_the_welcome_are_refreshed_and_never_logged() {
    const SECRET: &str = "shared-with-coturn-7f3a9";
    let mut c = Coord::new();
    let token = c.user_with_token("alice");
    c.admin(&["workspace", "add", "--owner", "alice", "api"]);
    let agent_token = c.agent_token("alice", "api", "main");
    let secret = turn_secret_file(c.dir.path(), SECRET);
    c.serve_env(
        &[
            "--turn",
            "127.0.0.1:3478",
            "--turn",
            "turn2.example.com:3479",
            "--turn-secret-file",
            secret.to_str().unwrap(),
        ],
        "trace",
        &[("WARREN_COORD_TURN_TTL_SECS", "3")],
    );
    let before = unix_now();
    let (mut user, welcome) = connect(&c.ws_url(), &token, &random_key()).await;
    let addrs: Vec<&str> = welcome.relays.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:3478", "turn2.example.com:3479"]);
    let mut passwords = Vec::new();
    for r in &welcome.relays {
        assert!(
            (before + 3..=unix_now() + 3).contains(&r.expires_at),
            "{r:?}"
        );
        assert_eq!(r.username, format!("{}:{}", r.expires_at, welcome.id));
        let (_, want) =
            warren_coord::turn::credentials(SECRET.as_bytes(), &welcome.id, r.expires_at);
        assert_eq!(r.password, want);
        passwords.push(r.password.expose().to_string());
    }
    // Agents get credentials for their own id.
    let (mut agent, agent_welcome) = connect(&c.ws_url(), &agent_token, &random_key()).await;
    assert_eq!(agent_welcome.relays.len(), 2);
    assert!(agent_welcome.relays[0]
        .username
        .ends_with(&format!(":{}", agent_welcome.id)));
    passwords.push(agent_welcome.relays[0].password.expose().to_string());

    // With a 3 s lifetime, fresh credentials come after 2 s, on the live
    // connection, between the workspace updates.
    let started = std::time::Instant::now();
    let fresh = loop {
        match next_within(&mut user, Duration::from_secs(5)).await {
            Some(ServerMessage::Relays { relays }) => break relays,
            Some(ServerMessage::WorkspaceUpdate(_)) => continue,
            other => panic!("expected relays within 5 s, got {other:?}"),
        }
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "refreshed after {waited:?}"
    );
    assert_eq!(fresh.len(), 2);
    assert!(fresh[0].expires_at > welcome.relays[0].expires_at);
    let (_, want) =
        warren_coord::turn::credentials(SECRET.as_bytes(), &welcome.id, fresh[0].expires_at);
    assert_eq!(fresh[0].password, want);
    passwords.push(fresh[0].password.expose().to_string());
    let agent_fresh = loop {
        match next_within(&mut agent, Duration::from_secs(5)).await {
            Some(ServerMessage::Relays { relays }) => break relays,
            Some(ServerMessage::PeerUpdate(_)) => continue,
            other => panic!("expected relays within 5 s, got {other:?}"),
        }
    };
    assert!(agent_fresh[0].expires_at > agent_welcome.relays[0].expires_at);

    drop((user, agent));
    let log = c.stop_gracefully();
    assert!(log.contains("TURN relays configured"), "{log}");
    for secret in std::iter::once(SECRET.to_string()).chain(passwords) {
        assert!(
            !log.contains(&secret),
            "a TURN secret or password appeared in the log"
        );
    }
}
