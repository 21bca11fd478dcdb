//! [`PathLab`]: the NAT-traversal lab the path layer's end-to-end tests run
//! in. On a [`NatLab`] (laptop and workspace each behind an nftables NAT
//! router on a "public" bridge) it runs the real binaries:
//!
//! ```text
//!   laptop 10.0.1.2: warrend + TUN ─ router-l 203.0.113.2 ─┐
//!                                                         ├─ public ─ turn1 203.0.113.10 (coturn)
//!   workspace 10.0.2.2: warren-agent ─ router-w 203.0.113.3 ┘          ├ turn2 203.0.113.11 (coturn)
//!        + HTTP on 127.0.0.1:8080                                    └ coord 203.0.113.12 (TLS)
//! ```
//!
//! The coordinator has its own host, so taking a relay's address away never
//! cuts the control link. The agent runs without `--endpoint`: it has to
//! find and announce its own candidates. The workspace's HTTP server is in
//! this process (a socket made in the workspace namespace) and serves
//! deterministic bytes at a chosen rate, so a [`Download`] can last as long
//! as a test needs, check every byte it gets and report its progress.
//!
//! The lab's knobs: [`PathLab::set_nat`], [`PathLab::block_udp_except_relays`],
//! [`PathLab::kill_relay`], [`PathLab::blackhole`],
//! [`PathLab::move_laptop_address`], [`PathLab::sigstop_helper`]. Everything
//! (processes, namespaces with their links, the server thread) goes on drop,
//! also when the test panics; the test's directory with every log is kept
//! then.

use crate::coturn::Coturn;
use crate::helper::{Cli, Status};
use crate::nat_lab::{
    Nat, NatLab, Side, LAPTOP, LAPTOP_GATEWAY, LAPTOP_ROUTER_WAN, SERVER1, SERVER2, SERVER3,
    WORKSPACE as WORKSPACE_HOST, WORKSPACE_ROUTER_WAN,
};
use crate::netns::{
    agent_view, icmp_ping, in_netns, login_in_netns, make_tls, ns_command, status_json,
    write_secret, AgentView, LabCoordinator, USER,
};
use crate::proc::{child_rust_log, Proc};
use crate::{bin, poll_until, TestDir};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warren_proto::ipc::SessionState;

/// The shared secret of both relays and the coordinator (`use-auth-secret`).
pub const TURN_SECRET: &str = "path-lab-turn-secret-8f2e61";
pub const TURN_REALM: &str = "warren";
/// The relays' addresses (UDP port 3478 each).
pub const TURN_HOSTS: [Ipv4Addr; 2] = [SERVER1, SERVER2];
pub const TURN_PORT: u16 = 3478;
/// The coordinator's host: none of the relays'.
pub const COORD_HOST: Ipv4Addr = SERVER3;
/// The agent every lab registers, and what it forwards.
pub const WORKSPACE: &str = "ws";
pub const AGENT: &str = "api";
pub const HTTP_PORT: u16 = 8080;
pub const AGENT_PORT: u16 = 51820;
/// The TUN's name in the laptop namespace.
pub const TUN: &str = "warren0";

/// One agent's path as `warren status --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathView {
    /// `"direct"`, `"relayed"` or `"none"`.
    pub path: String,
    /// `HOST:PORT` of the relay in use.
    pub relay: Option<String>,
    /// `IP:PORT` WireGuard sends to.
    pub remote: Option<String>,
}

impl PathView {
    fn from_tunnel(tunnel: &serde_json::Value) -> PathView {
        let text = |k: &str| tunnel.get(k).and_then(|v| v.as_str()).map(str::to_string);
        PathView {
            path: text("path").unwrap_or_else(|| "none".to_string()),
            relay: text("relay"),
            remote: text("remote"),
        }
    }

    /// The index (0 or 1) of the relay in use, if it is one of the lab's.
    pub fn relay_index(&self) -> Option<usize> {
        let relay = self.relay.as_deref()?;
        TURN_HOSTS
            .iter()
            .position(|h| relay == SocketAddr::from((*h, TURN_PORT)).to_string())
    }
}

/// The workspace's HTTP server: `GET /SIZE/RATE` answers SIZE bytes of
/// [`pattern_byte`] at RATE bytes per second. Stops on drop.
struct PatternServer {
    stop: Arc<AtomicBool>,
}

impl Drop for PatternServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The byte at `offset` of every download: a mix of the offset, so a byte
/// delivered twice, out of order or corrupted shows.
pub fn pattern_byte(offset: u64) -> u8 {
    let mut x = (offset / 8).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> ((offset % 8) * 8)) as u8
}

impl PatternServer {
    fn start(ns: &str, port: u16) -> PatternServer {
        let listener =
            in_netns(ns, move || TcpListener::bind(("127.0.0.1", port))).unwrap_or_else(|e| {
                panic!("bind the workspace's HTTP server on 127.0.0.1:{port}: {e}")
            });
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_accept = stop.clone();
        std::thread::spawn(move || {
            // Polls so that the thread notices `stop` without a wake-up
            // connection (which would have to come from the namespace).
            while !stop_accept.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let stop = stop_accept.clone();
                        std::thread::spawn(move || serve_one(conn, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        PatternServer { stop }
    }
}

/// Answers one request on `conn` (errors just end the connection: the
/// client reports what it missed).
fn serve_one(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 16 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/");
    let mut parts = path.trim_start_matches('/').split('/');
    let size: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let rate: u64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let started = Instant::now();
    let mut sent = 0u64;
    let mut chunk = vec![0u8; 16 * 1024];
    while sent < size && !stop.load(Ordering::Relaxed) {
        // Paced by wall clock: after a stall the sender catches up.
        let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if allowed <= sent {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let n = (size - sent).min(chunk.len() as u64).min(allowed - sent) as usize;
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = pattern_byte(sent + i as u64);
        }
        if conn.write_all(&chunk[..n]).is_err() {
            return;
        }
        sent += n as u64;
    }
}

/// What a [`Download`] has got so far.
#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    /// Set once: `Ok(elapsed)` when every byte arrived intact, `Err(why)`.
    outcome: Mutex<Option<Result<Duration, String>>>,
}

/// One HTTP download from the laptop namespace through the tunnel, on one
/// TCP connection (never reconnected once the first byte came), checking
/// every byte; runs on its own thread.
pub struct Download {
    pub size: u64,
    pub started: Instant,
    progress: Arc<Progress>,
}

impl Download {
    /// Downloads `size` bytes served at `rate` bytes per second from
    /// `target`, connecting from namespace `ns` (retrying the connect for up
    /// to 15 s); a read that waits more than `stall_limit` fails it.
    pub fn start(
        ns: &str,
        target: SocketAddr,
        size: u64,
        rate: u64,
        stall_limit: Duration,
    ) -> Download {
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let ns = ns.to_string();
        let started = Instant::now();
        std::thread::spawn(move || {
            let result = in_netns(&ns, {
                let p = p.clone();
                move || download(target, size, rate, stall_limit, &p)
            });
            let result = result.map(|()| started.elapsed());
            *p.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        });
        Download {
            size,
            started,
            progress,
        }
    }

    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.progress.bytes.load(Ordering::Relaxed)
    }

    /// `None` while it runs; then how it ended.
    pub fn outcome(&self) -> Option<Result<Duration, String>> {
        self.progress
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether it ended with an error.
    pub fn failed(&self) -> bool {
        matches!(self.outcome(), Some(Err(_)))
    }

    /// Waits (bounded by `timeout`) until more than `bytes` arrived or the
    /// download ended; how long that took, `None` on timeout or failure.
    pub fn wait_beyond(&self, bytes: u64, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        poll_until(timeout, || {
            if self.bytes() > bytes {
                return Some(true);
            }
            match self.outcome() {
                Some(Ok(_)) => Some(true),
                Some(Err(_)) => Some(false),
                None => None,
            }
        })
        .filter(|ok| *ok)
        .map(|_| start.elapsed())
    }

    /// Waits (bounded) for the end: `Ok(total time)` if every byte arrived
    /// intact on the one connection.
    pub fn wait(&self, timeout: Duration) -> Result<Duration, String> {
        poll_until(timeout, || self.outcome()).unwrap_or_else(|| {
            Err(format!(
                "the download did not finish within {timeout:?} ({} of {} bytes)",
                self.bytes(),
                self.size
            ))
        })
    }
}

fn download(
    target: SocketAddr,
    size: u64,
    rate: u64,
    stall_limit: Duration,
    p: &Progress,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut conn = loop {
        match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("connect to {target}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    conn.set_read_timeout(Some(stall_limit))
        .map_err(|e| format!("set a read timeout: {e}"))?;
    let request = format!("GET /{size}/{rate} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("send the request: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut offset = 0u64;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(format!(
                    "reading at byte {offset} of {size} failed: {e} (a stall longer than {stall_limit:?} counts)"
                ))
            }
        };
        let mut body = &buf[..n];
        if head.len() < 4 || !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(body);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let status = String::from_utf8_lossy(&head[..end]).to_string();
            if !status.starts_with("HTTP/1.1 200") {
                return Err(format!("the server answered {status:?}"));
            }
            let rest = head.split_off(end + 4);
            head.truncate(end + 4);
            offset = check(&rest, offset, p)?;
            body = &[];
        }
        offset = check(body, offset, p)?;
        if offset >= size {
            break;
        }
    }
    if offset != size {
        return Err(format!(
            "the connection ended after {offset} of {size} bytes"
        ));
    }
    Ok(())
}

fn check(body: &[u8], offset: u64, p: &Progress) -> Result<u64, String> {
    for (i, b) in body.iter().enumerate() {
        let at = offset + i as u64;
        if *b != pattern_byte(at) {
            return Err(format!("byte {at} of the download is wrong"));
        }
    }
    let offset = offset + body.len() as u64;
    p.bytes.store(offset, Ordering::Relaxed);
    Ok(offset)
}

/// See the module documentation. Field order is drop order: processes and
/// the server thread first, then the namespaces, then the directory.
pub struct PathLab {
    helper: Option<Proc>,
    agent: Option<Proc>,
    http: Option<PatternServer>,
    pub coord: LabCoordinator,
    relays: Vec<Coturn>,
    pub nat: NatLab,
    pub dir: TestDir,
    pub user_token: String,
    /// The CLI pointed at the helper's socket (run from the root namespace;
    /// only `login` needs the laptop's network).
    pub cli: Cli,
    socket: PathBuf,
    /// When `warren up` returned.
    pub up_at: Option<Instant>,
    /// The agent's IPv4 tunnel address, once listed.
    pub agent_v4: Option<IpAddr>,
    /// The laptop's address on its uplink now (changes with roaming).
    laptop_addr: Ipv4Addr,
    blackholed: Vec<Ipv4Addr>,
    agent_starts: u32,
}

/// `RUST_LOG` for the lab's Warren processes: the test's choice
/// (`WARREN_E2E_RUST_LOG`) or `info` with the path layer's debug lines.
fn lab_rust_log() -> String {
    match std::env::var("WARREN_E2E_RUST_LOG") {
        Ok(v) => v,
        Err(_) => "info,warren_path=debug".to_string(),
    }
}

/// Feeds `script` to `nft -f -` in `ns`; panics with nft's complaint.
pub fn nft(ns: &str, script: &str) {
    let mut child = ns_command(ns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run nft in {ns}: {e}"));
    {
        let mut stdin = child.stdin.take().expect("nft's stdin");
        stdin
            .write_all(script.as_bytes())
            .expect("write the rules to nft");
    }
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PathLab {
    /// Why this machine can't run the lab, if it can't.
    pub fn skip_reason() -> Option<String> {
        crate::netns::skip_reason(&[
            "nft",
            "conntrack",
            "sysctl",
            "turnserver",
            "turnutils_uclient",
        ])
    }

    /// `None` only if the machine can't run the lab and
    /// `WARREN_ALLOW_SKIP=1` allows skipping; otherwise [`PathLab::start`].
    pub fn start_or_skip(name: &str, laptop_nat: Nat, workspace_nat: Nat) -> Option<PathLab> {
        crate::run_or_skip(name, Self::skip_reason().as_deref())
            .then(|| PathLab::start(name, laptop_nat, workspace_nat))
    }

    /// Builds the NAT lab, starts both relays, the coordinator (with both
    /// relays), the workspace's HTTP server and the agent, and checks that
    /// every public service answers from both sides of the NATs. The
    /// helper starts with [`PathLab::up`].
    pub fn start(name: &str, laptop_nat: Nat, workspace_nat: Nat) -> PathLab {
        let dir = TestDir::new(name);
        let nat = NatLab::create(laptop_nat, workspace_nat);
        let mut relays = Vec::new();
        for (i, (ns, host)) in [(&nat.server1, SERVER1), (&nat.server2, SERVER2)]
            .into_iter()
            .enumerate()
        {
            relays.push(Coturn::start_in(
                dir.path(),
                &format!("turn{}", i + 1),
                ns,
                host,
                TURN_SECRET,
                TURN_REALM,
                // The relays forward between the routers' public addresses
                // (and each other's relayed ones).
                &[(
                    Ipv4Addr::new(203, 0, 113, 0),
                    Ipv4Addr::new(203, 0, 113, 255),
                )],
            ));
        }
        let coord = start_coordinator(&dir, &nat);
        coord.admin(&["user", "add", USER]);
        let user_token = coord.admin(&["token", "create", USER]);
        coord.admin(&["workspace", "add", "--owner", USER, WORKSPACE]);
        let agent_token = coord.admin(&[
            "agent",
            "add",
            "--owner",
            USER,
            "--workspace",
            WORKSPACE,
            AGENT,
        ]);
        let token_file = dir.join("agent.token");
        write_secret(&token_file, &agent_token);
        let socket = dir.join("helper.sock");
        let cli = Cli::new(&socket, &dir.join("cli-config"));
        let mut lab = PathLab {
            helper: None,
            agent: None,
            http: None,
            coord,
            relays,
            nat,
            user_token,
            cli,
            socket,
            up_at: None,
            agent_v4: None,
            laptop_addr: LAPTOP,
            blackholed: Vec::new(),
            agent_starts: 0,
            dir,
        };
        for ns in [lab.nat.laptop.clone(), lab.nat.workspace.clone()] {
            assert!(
                lab.coordinator_answers_from(&ns),
                "the coordinator at {} does not answer from {ns} through its NAT",
                lab.coord.url
            );
            for relay in &lab.relays {
                assert!(
                    relay.answers_from(&ns),
                    "the relay at {} does not answer STUN from {ns} through its NAT",
                    relay.addr
                );
            }
        }
        lab.http = Some(PatternServer::start(&lab.nat.workspace, HTTP_PORT));
        lab.start_agent(None);
        lab
    }

    /// (Re)starts the agent, announcing `endpoint` with `--endpoint` if
    /// given (the lab's default is none: the agent finds its candidates).
    pub fn restart_agent(&mut self, endpoint: Option<SocketAddr>) {
        if let Some(mut p) = self.agent.take() {
            p.terminate(Duration::from_secs(5));
        }
        self.start_agent(endpoint);
    }

    fn start_agent(&mut self, endpoint: Option<SocketAddr>) {
        self.agent_starts += 1;
        let mut cmd = ns_command(&self.nat.workspace, bin("warren-agent"));
        cmd.arg("--coordinator")
            .arg(&self.coord.url)
            .arg("--token-file")
            .arg(self.dir.join("agent.token"))
            .arg("--key-file")
            .arg(self.dir.join("agent.key"))
            .arg("--ca")
            .arg(&self.coord.ca)
            .arg("--listen-port")
            .arg(AGENT_PORT.to_string())
            .arg("--allow-ports")
            .arg(HTTP_PORT.to_string())
            .env("RUST_LOG", lab_rust_log());
        if let Some(e) = endpoint {
            cmd.arg("--endpoint").arg(e.to_string());
        }
        let name = format!("agent-{}", self.agent_starts);
        self.agent = Some(Proc::spawn(&name, self.dir.path(), cmd, false));
    }

    /// Whether an HTTPS request from `ns` gets any answer from the
    /// coordinator.
    pub fn coordinator_answers_from(&self, ns: &str) -> bool {
        let ca = self.coord.ca.to_string_lossy().into_owned();
        let url = format!("{}/", self.coord.url);
        poll_until(Duration::from_secs(10), || {
            let r = crate::netns::curl_in(
                ns,
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "3",
                    "--cacert",
                    &ca,
                    &url,
                ],
            );
            r.ok().then_some(())
        })
        .is_some()
    }

    /// The relays, in the coordinator's `--turn` order.
    pub fn relay(&self, n: usize) -> &Coturn {
        &self.relays[n]
    }

    /// `HOST:PORT` of relay `n`, as the coordinator hands it out.
    pub fn relay_addr(n: usize) -> String {
        SocketAddr::from((TURN_HOSTS[n], TURN_PORT)).to_string()
    }

    /// Starts `warrend` (TUN [`TUN`]) in the laptop namespace, signs in,
    /// runs `warren up`, waits until connected and until the agent is listed
    /// with a key and tunnel addresses.
    pub fn up(&mut self) -> Status {
        let log_dir = self.dir.join("helper-logs");
        std::fs::create_dir_all(&log_dir).expect("create the helper log dir");
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = ns_command(&self.nat.laptop, bin("warrend"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(["--group", "root", "--log-dir"])
            .arg(&log_dir)
            .arg("--state-dir")
            .arg(self.dir.join("helper-state"))
            .args(["--tun-name", TUN, "--listen-port", "0", "--dns-mode", "off"])
            .env("RUST_LOG", lab_rust_log())
            .env("WARREN_BACKOFF_MAX_MS", crate::helper::TEST_BACKOFF_MAX_MS);
        let mut proc = Proc::spawn("warrend", self.dir.path(), cmd, false);
        crate::helper::wait_for_socket(&mut proc, &self.socket);
        self.helper = Some(proc);

        // `login` checks the token with the coordinator: from the laptop.
        login_in_netns(
            &self.nat.laptop,
            &self.cli,
            &self.coord.url,
            &self.coord.ca,
            &self.user_token,
        );
        self.cli.up();
        self.up_at = Some(Instant::now());
        let status = self
            .cli
            .wait_state(SessionState::Connected, Duration::from_secs(20));
        let view = poll_until(Duration::from_secs(20), || {
            let v = self.agent_view()?;
            (v.agent.public_key.is_some() && v.agent.addresses.len() >= 2).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "agent {WORKSPACE}/{AGENT} never showed up with a key and tunnel addresses; last status: {:?}",
                self.status_json()
            )
        });
        self.agent_v4 = Some(view.v4());
        status
    }

    /// `warren status --json`, raw (`None` if the CLI failed).
    pub fn status_json(&self) -> Option<serde_json::Value> {
        status_json(&self.cli)
    }

    /// The lab's agent in `warren status --json`.
    pub fn agent_view(&self) -> Option<AgentView> {
        agent_view(&self.status_json()?, WORKSPACE, AGENT)
    }

    /// The agent's path (`none` while the helper reports no tunnel figures).
    pub fn agent_path(&self) -> Option<PathView> {
        let view = self.agent_view()?;
        Some(match &view.tunnel {
            Some(t) => PathView::from_tunnel(t),
            None => PathView {
                path: "none".to_string(),
                relay: None,
                remote: None,
            },
        })
    }

    /// Polls the agent's path until `accept` takes it; the path and how long
    /// that took, or `Err` with the last path seen after `timeout`. Pings the
    /// agent between polls: paths are found and kept for peers in use, and
    /// WireGuard handshakes (which the path shown needs) only for traffic.
    pub fn wait_path(
        &self,
        timeout: Duration,
        mut accept: impl FnMut(&PathView) -> bool,
    ) -> Result<(PathView, Duration), Option<PathView>> {
        let start = Instant::now();
        let mut last = None;
        loop {
            if self.agent_v4.is_some() {
                let _ = self.ping(Duration::from_millis(300));
            }
            if let Some(p) = self.agent_path() {
                if accept(&p) {
                    return Ok((p, start.elapsed()));
                }
                last = Some(p);
            }
            if start.elapsed() >= timeout {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for path `kind` (`"direct"`, `"relayed"`); panics with the
    /// last path seen and the logs' tails if it does not come in time.
    pub fn expect_path(&self, kind: &str, timeout: Duration) -> (PathView, Duration) {
        match self.wait_path(timeout, |p| p.path == kind) {
            Ok(found) => found,
            Err(last) => {
                self.print_logs(60);
                panic!("the agent's path did not become {kind} within {timeout:?}; last seen: {last:?}")
            }
        }
    }

    /// The agent's IPv4 tunnel address (after [`PathLab::up`]).
    pub fn agent_addr(&self) -> IpAddr {
        self.agent_v4
            .expect("the agent's tunnel address is known after up()")
    }

    /// One ICMP echo from the laptop to the agent's tunnel address.
    pub fn ping(&self, timeout: Duration) -> Option<Duration> {
        icmp_ping(&self.nat.laptop, self.agent_addr(), timeout)
    }

    /// Pings (one second each) until one is answered, for at most
    /// `timeout`; how long until the answer.
    pub fn wait_ping(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let left = timeout.saturating_sub(start.elapsed());
            if self.ping(left.min(Duration::from_secs(1))).is_some() {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// A download of `size` bytes at `rate` bytes/s from the workspace's
    /// HTTP server through the tunnel (a read stalled for 60 s fails it).
    pub fn start_download(&self, size: u64, rate: u64) -> Download {
        Download::start(
            &self.nat.laptop,
            SocketAddr::new(self.agent_addr(), HTTP_PORT),
            size,
            rate,
            Duration::from_secs(60),
        )
    }

    /// SIGKILL to relay `n`'s coturn.
    pub fn kill_relay(&mut self, n: usize) {
        self.relays[n].kill();
    }

    /// Drops every frame to or from `addr` on the public bridge: the host
    /// is still there but unreachable, as a relay behind a dead link.
    pub fn blackhole(&mut self, addr: Ipv4Addr) {
        if self.blackholed.is_empty() {
            nft(
                &self.nat.public,
                "table bridge blackhole {\n\
                   chain fw {\n\
                     type filter hook forward priority filter; policy accept;\n\
                   }\n\
                 }\n",
            );
        }
        nft(
            &self.nat.public,
            &format!(
                "add rule bridge blackhole fw ip daddr {addr} drop\n\
                 add rule bridge blackhole fw ip saddr {addr} drop\n"
            ),
        );
        self.blackholed.push(addr);
    }

    /// Makes `side`'s router translate as `nat` and flushes its conntrack
    /// table (this also removes [`PathLab::block_udp_except_relays`]).
    pub fn set_nat(&self, side: Side, nat: Nat) {
        self.nat.set_nat(side, nat);
    }

    /// `side`'s router drops UDP from its LAN to anything but the relays
    /// and the coordinator's host: the peer's direct address can't be
    /// reached, the relays can.
    pub fn block_udp_except_relays(&self, side: Side) {
        let router = self.nat.router(side);
        nft(
            router,
            &format!(
                "table ip pathblock {{\n\
                   chain fw {{\n\
                     type filter hook forward priority filter - 10; policy accept;\n\
                     iifname \"lan\" meta l4proto udp ip daddr != {{ {}, {}, {} }} drop\n\
                   }}\n\
                 }}\n",
                TURN_HOSTS[0], TURN_HOSTS[1], COORD_HOST
            ),
        );
    }

    /// A port forward on the workspace's router, as an operator would set
    /// up for a static endpoint: UDP to its public address and
    /// [`AGENT_PORT`] goes to the agent. Returns that public endpoint.
    /// ([`PathLab::set_nat`] removes it.)
    pub fn forward_agent_port(&self) -> SocketAddr {
        let router = self.nat.router(Side::Workspace);
        nft(
            router,
            &format!(
                "table ip portfwd {{\n\
                   chain pre {{\n\
                     type nat hook prerouting priority dstnat;\n\
                     iifname \"wan\" udp dport {AGENT_PORT} dnat to {WORKSPACE_HOST}:{AGENT_PORT}\n\
                   }}\n\
                 }}\n\
                 add rule ip lab fw ct status dnat accept\n"
            ),
        );
        SocketAddr::from((WORKSPACE_ROUTER_WAN, AGENT_PORT))
    }

    /// Roaming: replaces the laptop's address on its uplink with the next
    /// one in its /24 and puts the default route back through the router.
    /// Returns the new address.
    pub fn move_laptop_address(&mut self) -> Ipv4Addr {
        let old = self.laptop_addr;
        let o = old.octets();
        let new = Ipv4Addr::new(o[0], o[1], o[2], o[3] + 1);
        let ns = self.nat.laptop.clone();
        // Delete first: a second address added before would be a secondary
        // that goes with the primary.
        crate::netns::ip_in(&ns, &["addr", "del", &format!("{old}/24"), "dev", "eth0"]);
        crate::netns::ip_in(&ns, &["addr", "add", &format!("{new}/24"), "dev", "eth0"]);
        crate::netns::ip_in(
            &ns,
            &[
                "route",
                "replace",
                "default",
                "via",
                &LAPTOP_GATEWAY.to_string(),
            ],
        );
        self.laptop_addr = new;
        new
    }

    /// The laptop's address on its uplink now.
    pub fn laptop_addr(&self) -> Ipv4Addr {
        self.laptop_addr
    }

    /// SIGSTOP to the helper, `duration` asleep, SIGCONT: a laptop's sleep.
    pub fn sigstop_helper(&self, duration: Duration) {
        let pid = self.helper_pid();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGSTOP);
        }
        std::thread::sleep(duration);
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGCONT);
        }
    }

    pub fn helper_pid(&self) -> u32 {
        self.helper
            .as_ref()
            .expect("the helper runs after up()")
            .pid()
    }

    /// Whether helper and agent still run.
    pub fn processes_alive(&mut self) -> bool {
        self.helper.as_mut().is_some_and(|p| p.is_running())
            && self.agent.as_mut().is_some_and(|p| p.is_running())
    }

    /// The helper's log so far.
    pub fn helper_log(&self) -> String {
        self.helper.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }

    /// Prints the tails of the helper's, the agent's and the relays' logs.
    pub fn print_logs(&self, lines: usize) {
        if let Some(p) = &self.helper {
            p.print_log_tail(lines);
        }
        if let Some(p) = &self.agent {
            p.print_log_tail(lines);
        }
        for r in &self.relays {
            let text = r.log_text();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines / 2);
            eprintln!("----- {} log (last lines) -----", r.addr);
            for l in &all[from..] {
                eprintln!("{l}");
            }
        }
    }

    /// The routers' public addresses, for checking a direct path's remote.
    pub fn router_wan(side: Side) -> Ipv4Addr {
        match side {
            Side::Laptop => LAPTOP_ROUTER_WAN,
            Side::Workspace => WORKSPACE_ROUTER_WAN,
        }
    }
}

/// `warren-coord serve` on [`COORD_HOST`] with TLS and both relays.
fn start_coordinator(dir: &TestDir, nat: &NatLab) -> LabCoordinator {
    let ca = make_tls(dir.path(), &[IpAddr::V4(COORD_HOST)]);
    let secret_file = dir.join("turn-secret");
    write_secret(&secret_file, TURN_SECRET);
    let db = dir.join("coord.db");
    let mut cmd = ns_command(&nat.server3, bin("warren-coord"));
    cmd.arg("serve")
        .arg("--db")
        .arg(&db)
        .arg("--listen")
        .arg(format!("{COORD_HOST}:0"))
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"));
    for n in 0..TURN_HOSTS.len() {
        cmd.arg("--turn").arg(PathLab::relay_addr(n));
    }
    cmd.arg("--turn-secret-file")
        .arg(&secret_file)
        .args(["--turn-realm", TURN_REALM])
        .env("RUST_LOG", child_rust_log())
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn("coord", dir.path(), cmd, true);
    let url = crate::coord::listening_url(&mut proc, &dir.join("coord.stdout"));
    LabCoordinator { db, url, ca, proc }
}

#[cfg(test)]
mod tests {
    use super::pattern_byte;

    #[test]
    fn the_pattern_differs_between_neighbours() {
        let bytes: Vec<u8> = (0..4096).map(pattern_byte).collect();
        let same = bytes.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(same < 64, "{same} equal neighbours in 4096 bytes");
        assert_eq!(pattern_byte(12345), pattern_byte(12345));
    }
}
