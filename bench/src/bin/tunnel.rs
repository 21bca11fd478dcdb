//! The tunnel benchmark (`bench/run tunnel`): Warren's data plane against
//! `wireguard-go`, measured in one run on two network namespaces joined by a
//! veth pair, so both sides meet the same machine noise.
//!
//! A "laptop" namespace runs `warrend` (TUN + boringtun); a "workspace"
//! namespace runs the coordinator, a plain `wireguard-go` peer registered with
//! `warren-coord agent add --public-key`, optionally a `warren-agent`, and the
//! iperf3 servers (the shared `warren_e2e::netns::TunnelLab`). The baseline
//! swaps `warrend` for a second `wireguard-go` on the laptop side, talking to
//! the same workspace peer, in interleaved runs.
//!
//! Measures: `warren up` → handshake and → first TCP connect; iperf3 TCP
//! throughput and CPU seconds per GB laptop → workspace (the laptop side
//! encrypts) and workspace → laptop (it decrypts); for scale, throughput to a
//! `warren-agent`; CPU of an idle `warrend` holding 100 extra static peers.
//! Each iperf3 note also counts the UDP datagrams the receiving tunnel end's
//! full socket buffer dropped, which is where this setup loses packets.
//!
//! Prints one JSON object per metric on stdout (DESIGN.md, "Tests and
//! measurements"); progress and a summary against the targets go to stderr.
//! Needs root; any failure panics with the processes' log tails and keeps
//! the run's directory; Ctrl-C removes the namespaces.
//!
//! Knobs (environment): `WARREN_BENCH_IPERF_SECS` (10), `WARREN_BENCH_RUNS`
//! (iperf runs per side, interleaved; 3), `WARREN_BENCH_UP_CYCLES` (`warren
//! up` → connect samples; 4), `WARREN_BENCH_IDLE_PEERS` (100),
//! `WARREN_BENCH_IDLE_SECS` (60), `WARREN_BENCH_AGENT` (0 skips the
//! warren-agent runs), `WARREN_BENCH_BASELINE_MTU` (the laptop-side
//! wireguard-go's MTU; default its own 1420, while warrend's TUN has 1280),
//! `WARREN_BENCH_DOWNLOAD` (0 skips the workspace → laptop runs, which put
//! the laptop side on the receiving end).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use warren_bench::child::{run_cmd, run_ok};
use warren_bench::cleanup::{register, unregister, Leftover};
use warren_bench::cpu::{clock_ticks, context_switches, cpu_seconds, process_alive};
use warren_bench::report::{emit, env_num, median, ratio, round, unix_ms, Better, Metric};
use warren_e2e::netns::{self, AgentOptions, HelperOptions, LabHelper, TunnelLab};

const BENCH: &str = "tunnel";

/// Port of the plain TCP listener the connect probes aim at (in the
/// workspace namespace, all addresses).
const PROBE_PORT: u16 = 7001;
/// iperf3 server behind the wireguard-go workspace peer.
const IPERF_PORT: u16 = 5201;
/// iperf3 server on the workspace's loopback, reached through warren-agent.
const AGENT_IPERF_PORT: u16 = 5202;
const WG_PEER_PORT: u16 = 51820;
const AGENT_PORT: u16 = 51830;
/// The baseline laptop's tunnel address: RFC 2544's benchmarking range, so it
/// can never collide with what the coordinator allocates.
const BASELINE_ADDR: &str = "198.18.0.1";

fn ip(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_ok(cmd).map(|_| ())
}

/// Fails with the reason when this machine can't run the benchmark.
fn preflight() -> Result<()> {
    warren_bench::child::preflight(
        BENCH,
        &["wg", "wireguard-go", "iperf3", "ss", "getconf"],
        "iproute2 wireguard-tools wireguard-go iperf3 curl python3 openssl",
    )
}

// ---------------------------------------------------------------------------
// Keys

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(char::from(A[(n >> 18) as usize & 63]));
        s.push(char::from(A[(n >> 12) as usize & 63]));
        s.push(if c.len() > 1 {
            char::from(A[(n >> 6) as usize & 63])
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            char::from(A[n as usize & 63])
        } else {
            '='
        });
    }
    s
}

/// A random 32-byte WireGuard public key nobody holds the private half of
/// (every 32-byte string is an acceptable X25519 public key).
fn random_public_key() -> Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("read /dev/urandom")?;
    Ok(base64(&b))
}

// ---------------------------------------------------------------------------
// Connect probes

/// Connects to `addr` until it works (each attempt bounded to 300 ms);
/// returns the Unix-ms time of the first successful connect.
fn probe_connect(addr: SocketAddr, deadline: Duration) -> Result<u64> {
    let start = Instant::now();
    let mut last_err = String::from("no attempt");
    while start.elapsed() < deadline {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(_) => return Ok(unix_ms()),
            Err(e) => last_err = e.to_string(),
        }
        // Before the routes exist connect fails at once; don't spin.
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("no TCP connect to {addr} within {deadline:?}: {last_err}")
}

type Probe = std::thread::JoinHandle<Result<u64>>;

/// Waits for a probe; the Unix-ms time of its first connect.
fn probe_result(probe: Probe) -> Result<u64> {
    // The probe's own deadline bounds this join.
    probe
        .join()
        .map_err(|_| anyhow!("the connect probe panicked (could it enter the namespace?)"))?
}

/// A TCP listener on every address of namespace `ns` that accepts and drops
/// connections for the rest of the run (the probes' target).
fn probe_listener(ns: &str, port: u16) -> Result<()> {
    let listener = netns::in_netns(ns, move || TcpListener::bind(("0.0.0.0", port)))
        .with_context(|| format!("bind the probe listener on port {port} in {ns}"))?;
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// wireguard-go

/// A `wireguard-go` interface in a namespace, configured with `wg` and `ip`.
/// Stopped with SIGTERM on drop (so it removes its UAPI socket, which lives
/// in the shared /var/run/wireguard whatever the namespace).
struct WgGo {
    name: String,
    ns: String,
    public_key: String,
    proc: warren_e2e::Proc,
    socket: PathBuf,
}

impl WgGo {
    fn start(dir: &Path, ns: &str, name: &str, listen_port: u16) -> Result<WgGo> {
        let private = run_ok({
            let mut c = Command::new("wg");
            c.arg("genkey");
            c
        })?;
        let mut c = Command::new("wg");
        c.arg("pubkey");
        let public_key = run_cmd(c, Some(&private), Duration::from_secs(10))?
            .trim()
            .to_string();
        let key_file = dir.join(format!("{name}.key"));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&key_file)
                .with_context(|| format!("write {}", key_file.display()))?;
            f.write_all(private.as_bytes())?;
        }
        let socket = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
        register(Leftover::File(socket.clone()));
        let mut cmd = netns::ns_command(ns, "wireguard-go");
        cmd.arg("-f").arg(name).env("LOG_LEVEL", "error");
        let mut proc = warren_e2e::Proc::spawn(name, dir, cmd, false);
        let up = warren_e2e::poll_until(Duration::from_secs(10), || {
            if !proc.is_running() {
                return Some(false);
            }
            socket.exists().then_some(true)
        });
        if up != Some(true) {
            proc.print_log_tail(30);
            bail!(
                "wireguard-go {name} did not open {} within 10 s (exit: {:?})",
                socket.display(),
                proc.try_wait()
            );
        }
        let wg = WgGo {
            name: name.to_string(),
            ns: ns.to_string(),
            public_key,
            proc,
            socket,
        };
        let kf = key_file.to_string_lossy().into_owned();
        let mut args = vec!["set", name, "private-key", &kf];
        let port = listen_port.to_string();
        if listen_port != 0 {
            args.extend(["listen-port", &port]);
        }
        wg.wg(&args)?;
        ip(&["-n", ns, "link", "set", name, "up"])?;
        Ok(wg)
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn wg(&self, args: &[&str]) -> Result<String> {
        let mut c = netns::ns_command(&self.ns, "wg");
        c.args(args);
        run_ok(c)
    }

    fn set_peer(&self, key: &str, endpoint: Option<&str>, allowed: &[String]) -> Result<()> {
        let allowed = allowed.join(",");
        let mut args = vec!["set", &self.name, "peer", key, "allowed-ips", &allowed];
        if let Some(e) = endpoint {
            args.extend(["endpoint", e]);
        }
        self.wg(&args).map(|_| ())
    }

    fn remove_peer(&self, key: &str) -> Result<()> {
        self.wg(&["set", &self.name, "peer", key, "remove"])
            .map(|_| ())
    }

    /// Unix seconds of the latest handshake with `key` (0: none yet).
    fn latest_handshake(&self, key: &str) -> Result<u64> {
        let out = self.wg(&["show", &self.name, "latest-handshakes"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(k, _)| *k == key)
            .and_then(|(_, t)| t.trim().parse().ok())
            .unwrap_or(0))
    }

    fn mtu(&self) -> Option<u32> {
        link_mtu(&self.ns, &self.name)
    }
}

impl Drop for WgGo {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(3));
        let _ = std::fs::remove_file(&self.socket);
        unregister(&Leftover::File(self.socket.clone()));
    }
}

fn link_mtu(ns: &str, dev: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", dev])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// `a/32` or `a/128`.
fn host_prefix(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v) => format!("{v}/32"),
        IpAddr::V6(v) => format!("{v}/128"),
    }
}

// ---------------------------------------------------------------------------
// iperf3

/// Which way the bulk data flows.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Direction {
    /// Laptop → workspace (iperf3's default): the laptop side encrypts.
    Upload,
    /// Workspace → laptop (`iperf3 -R`): the laptop side decrypts.
    Download,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Direction::Upload => "laptop → workspace",
            Direction::Download => "workspace → laptop",
        }
    }
}

/// One iperf3 TCP run's result.
#[derive(Debug)]
struct IperfRun {
    /// Receiver's goodput, Gbit/s.
    gbps: f64,
    /// Bytes the sender wrote.
    bytes_sent: f64,
    retransmits: u64,
}

/// Runs `iperf3 -c ADDR -p PORT -t SECS -J [-R]` in `ns` and parses it.
fn iperf(ns: &str, addr: &IpAddr, port: u16, secs: u64, dir: Direction) -> Result<IperfRun> {
    let mut c = netns::ns_command(ns, "iperf3");
    c.args(["-c", &addr.to_string(), "-p", &port.to_string()])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "5000"]);
    if dir == Direction::Download {
        c.arg("-R");
    }
    // iperf3 -J prints its JSON even when it fails; run_cmd keeps it.
    let out = run_cmd(c, None, Duration::from_secs(secs + 30))
        .with_context(|| format!("iperf3 to {addr}:{port} from {ns}"))?;
    parse_iperf(&out)
}

fn parse_iperf(out: &str) -> Result<IperfRun> {
    let v: Value = serde_json::from_str(out).context("iperf3 -J printed no JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    // With -R the sums still describe the sender and the receiver.
    let end = &v["end"];
    let received = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON without end.sum_received"))?;
    let bytes = end["sum_sent"]["bytes"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON without end.sum_sent.bytes"))?;
    Ok(IperfRun {
        gbps: received / 1e9,
        bytes_sent: bytes,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was
/// full, in namespace `ns` (the receiving tunnel end falling behind).
fn udp_rcvbuf_errors(ns: &str) -> Result<u64> {
    let mut c = netns::ns_command(ns, "cat");
    c.arg("/proc/net/snmp");
    let snmp = run_ok(c)?;
    snmp_udp(&snmp, "RcvbufErrors")
        .ok_or_else(|| anyhow!("no Udp RcvbufErrors in {ns}'s /proc/net/snmp"))
}

/// One `Udp:` counter from the text of /proc/net/snmp (a line of names,
/// then a line of values).
fn snmp_udp(snmp: &str, name: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// One iperf run while watching processes' CPU time.
struct Measured {
    run: IperfRun,
    /// CPU seconds of the laptop-side tunnel process per GB (1e9 bytes) sent.
    cpu_s_per_gb: f64,
    /// The same for the workspace-side peer, to show which end limits the
    /// run.
    peer_cpu_s_per_gb: f64,
    /// UDP datagrams dropped at the receiving end's full socket buffer.
    rcvbuf_drops: u64,
}

/// The laptop side of one run: where it runs and which process carries it.
struct Side<'a> {
    laptop: &'a str,
    workspace: &'a str,
    pid: u32,
    peer_pid: u32,
    ticks: f64,
}

fn iperf_with_cpu(
    side: &Side,
    addr: &IpAddr,
    port: u16,
    secs: u64,
    dir: Direction,
) -> Result<Measured> {
    let (pid, peer_pid, ticks) = (side.pid, side.peer_pid, side.ticks);
    let receiver = match dir {
        Direction::Upload => side.workspace,
        Direction::Download => side.laptop,
    };
    let drops_before = udp_rcvbuf_errors(receiver)?;
    let before = (cpu_seconds(pid, ticks)?, cpu_seconds(peer_pid, ticks)?);
    let run = iperf(side.laptop, addr, port, secs, dir)?;
    let after = (cpu_seconds(pid, ticks)?, cpu_seconds(peer_pid, ticks)?);
    let drops_after = udp_rcvbuf_errors(receiver)?;
    // A dead process's frozen counters would read as a miracle of efficiency.
    for p in [pid, peer_pid] {
        if !process_alive(p) {
            bail!("pid {p} exited during the iperf3 run");
        }
    }
    if run.bytes_sent <= 0.0 {
        bail!("iperf3 sent nothing");
    }
    let gb = run.bytes_sent / 1e9;
    Ok(Measured {
        cpu_s_per_gb: (after.0 - before.0) / gb,
        peer_cpu_s_per_gb: (after.1 - before.1) / gb,
        rcvbuf_drops: drops_after.saturating_sub(drops_before),
        run,
    })
}

// ---------------------------------------------------------------------------
// The measurements

/// What the measurements need of the lab and the running helper.
struct World<'a> {
    lab: &'a TunnelLab,
    /// A subscriber on the helper's socket, as the app would have.
    watcher: &'a warren_e2e::MirrorWatcher,
    laptop: &'a str,
    workspace: &'a str,
    workspace_ip: String,
    cli: &'a warren_e2e::Cli,
    helper_pid: u32,
    tun_name: &'a str,
    ticks: f64,
}

impl<'a> World<'a> {
    fn new(
        lab: &'a TunnelLab,
        helper: &'a LabHelper,
        watcher: &'a warren_e2e::MirrorWatcher,
        ticks: f64,
    ) -> World<'a> {
        World {
            lab,
            watcher,
            laptop: &lab.net.laptop,
            workspace: &lab.net.workspace,
            workspace_ip: lab.net.workspace_ip.to_string(),
            cli: &helper.cli,
            helper_pid: helper.pid(),
            tun_name: &helper.options.tun_name,
            ticks,
        }
    }

    fn dir(&self) -> &Path {
        self.lab.dir.path()
    }

    /// Fails if warrend has exited (a crash explains any later error).
    fn check_helper(&self) -> Result<()> {
        if process_alive(self.helper_pid) {
            Ok(())
        } else {
            bail!(
                "warrend (pid {}) exited during the benchmark",
                self.helper_pid
            )
        }
    }

    /// Starts connecting to `target` from the laptop namespace.
    fn spawn_probe(&self, target: SocketAddr, deadline: Duration) -> Probe {
        let ns = self.laptop.to_string();
        std::thread::spawn(move || netns::in_netns(&ns, move || probe_connect(target, deadline)))
    }
}

/// The workspace-side `wireguard-go` peer, registered as agent `bench/wg`.
struct WsPeer {
    wg: WgGo,
    /// Its tunnel addresses, allocated by the coordinator.
    v4: Option<IpAddr>,
    addresses: Vec<IpAddr>,
    /// The helper key it currently accepts.
    device_key: Option<String>,
}

impl WsPeer {
    /// Makes the peer accept this session's device: its key and addresses
    /// (the key rotates with every session, as a warren-agent would learn
    /// from the coordinator). One `wg` call, so the bench's own part of
    /// `up_to_connect_ms` stays small.
    fn accept_device(&mut self, key: &str, addresses: &[IpAddr]) -> Result<()> {
        if self.device_key.as_deref() == Some(key) {
            return Ok(());
        }
        let allowed: Vec<String> = addresses.iter().map(host_prefix).collect();
        let allowed = allowed.join(",");
        let mut args = vec!["set", &self.wg.name];
        if let Some(old) = &self.device_key {
            args.extend(["peer", old, "remove"]);
        }
        args.extend(["peer", key, "allowed-ips", &allowed]);
        self.wg.wg(&args)?;
        self.device_key = Some(key.to_string());
        Ok(())
    }
}

struct UpSample {
    /// `warren up` → the helper's first handshake with the peer, ms.
    handshake_ms: f64,
    handshake_source: &'static str,
    /// `warren up` → first TCP connect to the wireguard-go peer, ms.
    connect_ms: f64,
    /// `warren up` → the CLI returned (it waits for the tunnel to start).
    up_ms: f64,
    /// `warren up` → a subscriber sees this session's device key.
    key_ms: f64,
    /// `warren up` → the peer accepts that key.
    configured_ms: f64,
    /// `warren up` → first TCP connect to warren-agent, when measured.
    agent_connect_ms: Option<f64>,
}

/// The agent `ws/name` in a subscriber's mirror.
fn mirror_agent<'m>(
    m: &'m warren_ipc::StateMirror,
    ws: &str,
    name: &str,
) -> Option<&'m warren_proto::model::Agent> {
    let ws = m.workspaces.values().find(|w| w.name == ws)?;
    m.agents
        .values()
        .find(|a| a.workspace_id == ws.id && a.name == name)
}

/// Polls the subscriber's mirror every 2 ms (cheap: no process per look, so
/// the bench's own reaction barely shows in the figures) until `f` holds.
fn watch_mirror<T>(
    w: &World,
    timeout: Duration,
    mut f: impl FnMut(&warren_ipc::StateMirror) -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f(&w.watcher.mirror()) {
            return Some(v);
        }
        if start.elapsed() >= timeout || w.watcher.ended().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One `warren up` from disconnected: how soon the tunnel carries a connect.
fn up_cycle(w: &World, peer: &mut WsPeer, agent_v4: Option<IpAddr>) -> Result<UpSample> {
    w.check_helper()?;
    let ms_since = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t0_ms = unix_ms();
    let t0 = Instant::now();
    w.cli.run_ok(&["up"]);
    let up_ms = ms_since(t0);
    // The agent learns the new device key through the coordinator by itself,
    // so its probe can start at once (its address is stable across sessions).
    let agent_probe =
        agent_v4.map(|a| w.spawn_probe(SocketAddr::new(a, PROBE_PORT), Duration::from_secs(20)));
    // The wireguard-go peer needs this session's key first, as a warren-agent
    // would get it from the coordinator.
    let old_key = peer.device_key.clone();
    let found = watch_mirror(w, Duration::from_secs(20), |m| {
        let s = m.session.as_ref()?;
        if s.state != warren_proto::ipc::SessionState::Connected {
            return None;
        }
        let dev = s.device.clone()?;
        if Some(&dev.public_key) == old_key.as_ref() {
            return None;
        }
        let a = mirror_agent(m, "bench", "wg")?;
        let dep = s.deployment.clone()?;
        (!a.addresses.is_empty()).then(|| (dev, dep, a.id.clone(), a.addresses.clone()))
    });
    let Some((device, deployment, wg_id, wg_addrs)) = found else {
        bail!(
            "after `warren up` no connected session with a new device key and agent bench/wg within 20 s (subscriber: {:?})",
            w.watcher.ended()
        );
    };
    let key_ms = ms_since(t0);
    if peer.addresses.is_empty() {
        for a in &wg_addrs {
            ip(&[
                "-n",
                w.workspace,
                "addr",
                "add",
                &host_prefix(a),
                "dev",
                &peer.wg.name,
            ])?;
        }
        // Replies to any device of the deployment go into the tunnel; which
        // device a packet is for is wg's allowed-ips business.
        for prefix in [&deployment.ipv4_prefix, &deployment.ipv6_prefix] {
            ip(&[
                "-n",
                w.workspace,
                "route",
                "replace",
                prefix,
                "dev",
                &peer.wg.name,
            ])?;
        }
        peer.v4 = wg_addrs.iter().find(|a| a.is_ipv4()).copied();
        peer.addresses = wg_addrs;
    }
    let v4 = peer
        .v4
        .ok_or_else(|| anyhow!("agent bench/wg has no IPv4 address"))?;
    peer.accept_device(&device.public_key, &device.addresses)?;
    let configured_ms = ms_since(t0);
    let probe = w.spawn_probe(SocketAddr::new(v4, PROBE_PORT), Duration::from_secs(20));
    let connect_at = probe_result(probe).with_context(|| {
        format!("`warren up` → TCP connect to the wireguard-go peer {v4}:{PROBE_PORT}")
    })?;

    // A connect means the handshake is done. The helper reports it at once
    // (PeerStats on a handshake change); the peer's own record only has
    // whole seconds, so it is the fallback.
    let stats = watch_mirror(w, Duration::from_secs(5), |m| {
        m.stats
            .get(&wg_id)?
            .last_handshake_ms
            .filter(|at| *at >= t0_ms)
    });
    let (handshake_ms, handshake_source) = match stats {
        Some(at) => (
            (at - t0_ms) as f64,
            "the helper's PeerStats, as in status tunnel.last_handshake_ms",
        ),
        None => {
            let secs = peer.wg.latest_handshake(&device.public_key)?;
            if secs == 0 {
                bail!("a TCP connect went through, yet neither the helper nor wireguard-go reports a handshake");
            }
            (
                (secs * 1000).saturating_sub(t0_ms) as f64,
                "the peer's `wg show latest-handshakes` (whole seconds)",
            )
        }
    };
    let agent_connect_ms = match agent_probe {
        Some(p) => match probe_result(p) {
            Ok(at) => Some(at.saturating_sub(t0_ms) as f64),
            Err(e) => {
                eprintln!("warren-agent: no connect after `warren up`: {e:#}");
                None
            }
        },
        None => None,
    };
    Ok(UpSample {
        handshake_ms,
        handshake_source,
        connect_ms: connect_at.saturating_sub(t0_ms) as f64,
        up_ms,
        key_ms,
        configured_ms,
        agent_connect_ms,
    })
}

fn down(w: &World) -> Result<()> {
    w.cli.run_ok(&["down"]);
    let gone = warren_e2e::poll_until(Duration::from_secs(10), || {
        let s = w.cli.try_status()?;
        (s.session.state == warren_proto::ipc::SessionState::Disconnected
            && link_mtu(w.laptop, w.tun_name).is_none())
        .then_some(())
    });
    if gone.is_none() {
        bail!(
            "`warren down` did not disconnect and remove {} within 10 s",
            w.tun_name
        );
    }
    Ok(())
}

/// Which device the laptop namespace routes `addr` through.
fn route_dev(ns: &str, addr: &IpAddr) -> Result<String> {
    let out = run_ok({
        let mut c = Command::new("ip");
        c.args(["-n", ns, "route", "get", &addr.to_string()]);
        c
    })?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "dev");
    words
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("`ip route get {addr}` in {ns} named no device: {out}"))
}

/// Waits until something listens on TCP `port` in `ns`.
fn wait_listening(ns: &str, port: u16, what: &str) -> Result<()> {
    let needle = format!(":{port} ");
    let ok = warren_e2e::poll_until(Duration::from_secs(10), || {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Htln"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains(&needle)
            .then_some(())
    });
    ok.ok_or_else(|| anyhow!("{what} is not listening on port {port} in {ns} after 10 s"))
}

/// Interleaved runs of one direction.
#[derive(Default)]
struct Runs {
    ours: Vec<Measured>,
    theirs: Vec<Measured>,
}

struct Throughput {
    upload: Runs,
    download: Runs,
    our_mtu: Option<u32>,
    their_mtu: Option<u32>,
}

/// iperf3 between the laptop and the workspace peer in `dirs`, alternating
/// warrend and a laptop-side wireguard-go so slow drifts of the machine hit
/// both alike.
fn throughput(w: &World, peer: &WsPeer, cfg: &Config, dirs: &[Direction]) -> Result<Throughput> {
    let (runs, secs) = (cfg.runs, cfg.iperf_secs);
    let v4 = peer
        .v4
        .ok_or_else(|| anyhow!("agent bench/wg has no IPv4 address"))?;
    // The baseline laptop: wireguard-go with the same workspace peer.
    let lap = WgGo::start(w.dir(), w.laptop, &warren_e2e::unique("wglap"), 0)?;
    let endpoint = format!("{}:{WG_PEER_PORT}", w.workspace_ip);
    lap.set_peer(&peer.wg.public_key, Some(&endpoint), &[host_prefix(&v4)])?;
    if let Some(mtu) = cfg.baseline_mtu {
        ip(&[
            "-n",
            w.laptop,
            "link",
            "set",
            &lap.name,
            "mtu",
            &mtu.to_string(),
        ])?;
    }
    let baseline_prefix = format!("{BASELINE_ADDR}/32");
    ip(&[
        "-n",
        w.laptop,
        "addr",
        "add",
        &baseline_prefix,
        "dev",
        &lap.name,
    ])?;
    peer.wg.set_peer(
        &lap.public_key,
        None,
        std::slice::from_ref(&baseline_prefix),
    )?;
    ip(&[
        "-n",
        w.workspace,
        "route",
        "replace",
        &baseline_prefix,
        "dev",
        &peer.wg.name,
    ])?;
    let host = host_prefix(&v4);

    let mut out = Throughput {
        upload: Runs::default(),
        download: Runs::default(),
        our_mtu: link_mtu(w.laptop, w.tun_name),
        their_mtu: lap.mtu(),
    };
    let ours = Side {
        laptop: w.laptop,
        workspace: w.workspace,
        pid: w.helper_pid,
        peer_pid: peer.wg.pid(),
        ticks: w.ticks,
    };
    let theirs = Side {
        pid: lap.pid(),
        ..ours
    };
    // One iperf3 run through one side's laptop tunnel end.
    let run_through = |side: &Side, what: &str, i: u64, dir: Direction| -> Result<Measured> {
        eprintln!(
            "[{}/{runs}] {} {secs} s through {what}…",
            i + 1,
            dir.arrow()
        );
        let m = iperf_with_cpu(side, &v4, IPERF_PORT, secs, dir)?;
        report_run(&m);
        Ok(m)
    };
    for i in 0..runs {
        for &dir in dirs {
            w.check_helper()?;
            let slot = match dir {
                Direction::Upload => &mut out.upload,
                Direction::Download => &mut out.download,
            };
            // Ours: the deployment route through the helper's TUN.
            let _ = ip(&["-n", w.laptop, "route", "del", &host, "dev", &lap.name]);
            let dev = route_dev(w.laptop, &v4)?;
            if dev != w.tun_name {
                bail!(
                    "the laptop routes {v4} via {dev}, not the helper's {}",
                    w.tun_name
                );
            }
            slot.ours.push(run_through(&ours, "warrend", i, dir)?);

            // Theirs: a more specific route through the laptop-side wireguard-go.
            ip(&[
                "-n",
                w.laptop,
                "route",
                "replace",
                &host,
                "dev",
                &lap.name,
                "src",
                BASELINE_ADDR,
            ])?;
            slot.theirs
                .push(run_through(&theirs, "wireguard-go", i, dir)?);
        }
    }
    ip(&["-n", w.laptop, "route", "del", &host, "dev", &lap.name])?;
    peer.wg.remove_peer(&lap.public_key)?;
    Ok(out)
}

fn report_run(m: &Measured) {
    eprintln!(
        "    {:.3} Gbit/s, {:.2} CPU s/GB (workspace peer {:.2}), {} retransmits, {} UDP receive-buffer drops",
        m.run.gbps, m.cpu_s_per_gb, m.peer_cpu_s_per_gb, m.run.retransmits, m.rcvbuf_drops
    );
}

/// An idle helper's CPU use: percent of one core, the CPU seconds and the
/// window's seconds behind it, and how many peers it held.
struct Idle {
    percent: f64,
    /// The helper's context switches per second over the window.
    wakeups_per_s: f64,
    cpu_s: f64,
    window_s: f64,
    peers: usize,
}

/// CPU% of an idle helper holding `peers` extra static peers.
fn idle_cpu(w: &World, peers: u64, secs: u64) -> Result<Idle> {
    w.lab.ensure_workspace("idle");
    eprintln!("registering {peers} static peers…");
    for i in 0..peers {
        let key = random_public_key()?;
        let endpoint = SocketAddr::new(IpAddr::V4(w.lab.net.workspace_ip), 52000 + i as u16);
        w.lab
            .add_wireguard_peer("idle", &format!("p{i:03}"), &key, &[endpoint]);
    }
    let idle_ws = |s: &warren_e2e::Status| -> Option<usize> {
        let ws = s.workspaces.iter().find(|x| x.name == "idle")?;
        Some(s.agents.iter().filter(|a| a.workspace_id == ws.id).count())
    };
    let listed = warren_e2e::poll_until(Duration::from_secs(30), || {
        let s = w.cli.try_status()?;
        (idle_ws(&s)? as u64 >= peers).then_some(s.agents.len())
    });
    let Some(total) = listed else {
        bail!("the helper did not list the {peers} idle peers within 30 s");
    };
    // Let the directory change settle (tunnel reconcile, the stats report
    // that follows it) before the idle window opens.
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("measuring warrend's CPU over {secs} s idle with {total} peers…");
    let before = cpu_seconds(w.helper_pid, w.ticks)?;
    let switches_before = context_switches(w.helper_pid)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_seconds(w.helper_pid, w.ticks)?;
    let switches_after = context_switches(w.helper_pid)?;
    // A crashed helper would read as a perfectly idle one.
    w.check_helper()?;
    let window_s = t.elapsed().as_secs_f64();
    Ok(Idle {
        percent: (after - before) / window_s * 100.0,
        wakeups_per_s: switches_after.saturating_sub(switches_before) as f64 / window_s,
        cpu_s: after - before,
        window_s,
        peers: total,
    })
}

// ---------------------------------------------------------------------------
// The run

struct Config {
    iperf_secs: u64,
    runs: u64,
    up_cycles: u64,
    idle_peers: u64,
    idle_secs: u64,
    agent: bool,
    /// MTU for the baseline's laptop-side wireguard-go (default: its own).
    baseline_mtu: Option<u64>,
    /// Also measure workspace → laptop.
    download: bool,
}

impl Config {
    fn from_env() -> Result<Config> {
        Ok(Config {
            iperf_secs: env_num("WARREN_BENCH_IPERF_SECS", 10)?.max(1),
            runs: env_num("WARREN_BENCH_RUNS", 3)?.max(1),
            up_cycles: env_num("WARREN_BENCH_UP_CYCLES", 4)?.max(1),
            idle_peers: env_num("WARREN_BENCH_IDLE_PEERS", 100)?,
            idle_secs: env_num("WARREN_BENCH_IDLE_SECS", 60)?.max(1),
            agent: env_num("WARREN_BENCH_AGENT", 1)? != 0,
            download: env_num("WARREN_BENCH_DOWNLOAD", 1)? != 0,
            baseline_mtu: match env_num("WARREN_BENCH_BASELINE_MTU", 0)? {
                0 => None,
                m => Some(m),
            },
        })
    }
}

/// Lines for the closing summary on stderr.
#[derive(Default)]
struct Summary(Vec<String>);

impl Summary {
    fn add(&mut self, line: String) {
        self.0.push(line);
    }
}

fn measure(lab: &TunnelLab, cfg: &Config) -> Result<Summary> {
    let ticks = clock_ticks()?;
    let dir = lab.dir.path();
    let ws = lab.net.workspace.clone();
    // Processes started here; dropped (killed) before the lab's namespaces.
    let mut procs: Vec<warren_e2e::Proc> = Vec::new();

    // The workspace's plain WireGuard peer, registered with its key only.
    let wg = WgGo::start(dir, &ws, &warren_e2e::unique("wgws"), WG_PEER_PORT)?;
    lab.add_wireguard_peer(
        "bench",
        "wg",
        &wg.public_key,
        &[SocketAddr::new(
            IpAddr::V4(lab.net.workspace_ip),
            WG_PEER_PORT,
        )],
    );
    let mut peer = WsPeer {
        wg,
        v4: None,
        addresses: Vec::new(),
        device_key: None,
    };

    // What the connect probes aim at, on every workspace address.
    probe_listener(&ws, PROBE_PORT)?;

    let agent = cfg.agent.then(|| {
        lab.agent(
            AgentOptions::new("bench", "api")
                .listen_port(AGENT_PORT)
                .allow_ports(&format!("{AGENT_IPERF_PORT},{PROBE_PORT}")),
        )
    });
    if agent.is_some() {
        let mut c = netns::ns_command(&ws, "iperf3");
        c.args(["-s", "-B", "127.0.0.1", "-p", &AGENT_IPERF_PORT.to_string()]);
        procs.push(warren_e2e::Proc::spawn("iperf-agent", dir, c, false));
    }

    let helper = lab.helper(HelperOptions::default());
    // Signed in and connected once; every measured `up` starts from `down`.
    lab.login_up(&helper);
    let watcher = warren_e2e::MirrorWatcher::start(&helper.socket);
    let w = World::new(lab, &helper, &watcher, ticks);
    let agent_pid = agent.as_ref().and_then(|a| a.proc().map(|p| p.pid()));
    let result = measure_connected(&w, cfg, &mut peer, &mut procs, agent_pid);
    if let Err(e) = &result {
        // Most failures are explained by the helper's last words.
        eprintln!("bench tunnel: {e:#}");
        let e = w.check_helper().err();
        if let Some(e) = e {
            eprintln!("{e:#}");
        }
        helper.print_log_tail(60);
        if let Some(a) = &agent {
            a.print_log_tail(20);
        }
    }
    result
}

/// The measurements, once the helper is signed in.
fn measure_connected(
    w: &World,
    cfg: &Config,
    peer: &mut WsPeer,
    procs: &mut Vec<warren_e2e::Proc>,
    agent_pid: Option<u32>,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let (dir, ws, ticks) = (w.dir(), w.workspace, w.ticks);
    down(w)?;

    // 1. `warren up` → handshake and first TCP connect.
    let mut samples = Vec::new();
    let mut agent_v4 = None;
    for i in 0..cfg.up_cycles {
        if i > 0 {
            down(w)?;
        }
        eprintln!(
            "[{}/{}] warren up → first TCP connect…",
            i + 1,
            cfg.up_cycles
        );
        let s = up_cycle(w, peer, agent_v4)?;
        eprintln!(
            "    `up` returned {:.0} ms, new key seen {:.0} ms, peer configured {:.0} ms, handshake {:.0} ms, connect {:.0} ms{}",
            s.up_ms,
            s.key_ms,
            s.configured_ms,
            s.handshake_ms,
            s.connect_ms,
            s.agent_connect_ms
                .map(|a| format!(", warren-agent connect {a:.0} ms"))
                .unwrap_or_default()
        );
        samples.push(s);
        if cfg.agent && agent_v4.is_none() {
            agent_v4 = mirror_agent(&w.watcher.mirror(), "bench", "api")
                .filter(|a| a.public_key.is_some())
                .and_then(|a| a.addresses.iter().copied().find(IpAddr::is_ipv4));
        }
    }
    let n = samples.len();
    let hs = median(&samples.iter().map(|s| s.handshake_ms).collect::<Vec<_>>());
    let m = Metric::new("handshake_ms", hs, "ms", Better::Lower);
    emit(BENCH, m.with_note(format!(
            "median of {n}: `warren up` → the helper's first handshake with a wireguard-go peer (from {}); the handshake follows the first packet, which the bench sends once it has handed the session's new key to the peer (see up_to_connect_ms)",
            samples[0].handshake_source
        )));
    let connect = median(&samples.iter().map(|s| s.connect_ms).collect::<Vec<_>>());
    let m = Metric::new("up_to_connect_ms", connect, "ms", Better::Lower).with_target(500.0);
    emit(BENCH, m.with_note(format!(
            "median of {n}: `warren up` → first TCP connect from the laptop to the wireguard-go peer; max {:.0} ms; of that, `warren up` itself returned after a median {:.0} ms, a subscriber saw the session's new key after {:.0} ms, and the bench's `wg set` had given it to the peer after {:.0} ms (a warren-agent gets the key from the coordinator instead)",
            samples.iter().map(|s| s.connect_ms).fold(0.0, f64::max),
            median(&samples.iter().map(|s| s.up_ms).collect::<Vec<_>>()),
            median(&samples.iter().map(|s| s.key_ms).collect::<Vec<_>>()),
            median(&samples.iter().map(|s| s.configured_ms).collect::<Vec<_>>())
        )));
    summary.add(format!(
        "up → connect       {connect:>8.0} ms        target ≤ 500 ms"
    ));
    let agent_connects: Vec<f64> = samples.iter().filter_map(|s| s.agent_connect_ms).collect();
    if !agent_connects.is_empty() {
        let m = Metric::new(
            "up_to_connect_agent_ms",
            median(&agent_connects),
            "ms",
            Better::Lower,
        )
        .with_target(500.0);
        emit(BENCH, m.with_note(format!(
                "median of {}: `warren up` → first TCP connect to a warren-agent (which learns the session key from the coordinator)",
                agent_connects.len()
            )));
    }

    // 2. Throughput and CPU per GB against wireguard-go.
    let v4 = peer
        .v4
        .ok_or_else(|| anyhow!("agent bench/wg has no IPv4 address"))?;
    let mut c = netns::ns_command(ws, "iperf3");
    c.args(["-s", "-B", &v4.to_string(), "-p", &IPERF_PORT.to_string()]);
    procs.push(warren_e2e::Proc::spawn("iperf-wg", dir, c, false));
    wait_listening(ws, IPERF_PORT, "iperf3")?;
    let dirs: &[Direction] = if cfg.download {
        &[Direction::Upload, Direction::Download]
    } else {
        &[Direction::Upload]
    };
    let t = throughput(w, peer, cfg, dirs)?;
    let mtus = format!(
        "MTU {} vs {}",
        t.our_mtu.map_or("?".into(), |m| m.to_string()),
        t.their_mtu.map_or("?".into(), |m| m.to_string())
    );
    let theirs = emit_runs(&t.upload, Direction::Upload, cfg, &mtus, &mut summary);
    if cfg.download {
        emit_runs(&t.download, Direction::Download, cfg, &mtus, &mut summary);
    }

    if let (Some(av4), Some(agent_pid)) = (agent_v4, agent_pid) {
        eprintln!(
            "iperf3 {} s through warrend to warren-agent…",
            cfg.iperf_secs
        );
        let side = Side {
            laptop: w.laptop,
            workspace: w.workspace,
            pid: w.helper_pid,
            peer_pid: agent_pid,
            ticks,
        };
        match iperf_with_cpu(
            &side,
            &av4,
            AGENT_IPERF_PORT,
            cfg.iperf_secs,
            Direction::Upload,
        ) {
            Ok(m) => {
                report_run(&m);
                emit(BENCH, Metric {
                    name: "throughput_agent",
                    value: m.run.gbps,
                    unit: "Gbit/s",
                    better: Better::Higher,
                    baseline: Some(("wireguard-go", theirs)),
                    target: None,
                    target_ratio: None,
                    note: Some(format!(
                        "for scale: one {} s iperf3 run laptop → workspace through warrend to warren-agent (userspace smoltcp, forwarding to the workspace's loopback); warrend {:.2} and warren-agent {:.2} CPU s/GB; baseline is wireguard-go ↔ wireguard-go laptop → workspace from the runs above",
                        cfg.iperf_secs, m.cpu_s_per_gb, m.peer_cpu_s_per_gb
                    )),
                });
            }
            Err(e) => eprintln!("warren-agent throughput skipped: {e:#}"),
        }
    }

    // 3. An idle helper with many peers.
    if cfg.idle_peers > 0 {
        let idle = idle_cpu(w, cfg.idle_peers, cfg.idle_secs)?;
        let (pct, total) = (idle.percent, idle.peers);
        let m = Metric::new("idle_cpu_percent", pct, "%", Better::Lower).with_target(1.0);
        emit(BENCH, m.with_note(format!(
                "warrend's CPU (% of one core) over {:.1} s with no traffic, {total} peers ({} static peers with random keys and unanswered endpoints) and one subscriber attached as the app would be, after the directory settled: {:.2} CPU s, measured in {:.0} ms clock ticks",
                idle.window_s, cfg.idle_peers, idle.cpu_s, 1000.0 / ticks
            )));
        summary.add(format!(
            "idle CPU           {pct:>8.3} %         target < 1 % ({total} peers, {} s)",
            cfg.idle_secs
        ));
        // The path layer checks a working path every 25 s while it has had
        // traffic in the last 3 minutes (the agent's, after the throughput
        // runs), and nothing for peers without traffic: an idle helper
        // should wake well under once a second.
        let m = Metric::new(
            "idle_wakeups_per_s",
            idle.wakeups_per_s,
            "1/s",
            Better::Lower,
        );
        emit(BENCH, m.with_note(format!(
            "context switches of all warrend threads per second over the same idle window: path-layer keepalive checks (one per 25 s per working path), WireGuard timers, the engine's and the IPC subscriber's waits; {total} peers of which only the agent had traffic (its path is direct and kept alive)"
        )));
        summary.add(format!("idle wake-ups      {:>8.2} /s", idle.wakeups_per_s));
    }
    Ok(summary)
}

/// Emits throughput and CPU/GB of one direction; returns the baseline's
/// median throughput.
fn emit_runs(runs: &Runs, dir: Direction, cfg: &Config, mtus: &str, summary: &mut Summary) -> f64 {
    let med =
        |f: &dyn Fn(&Measured) -> f64, v: &[Measured]| median(&v.iter().map(f).collect::<Vec<_>>());
    let list = |f: &dyn Fn(&Measured) -> f64, v: &[Measured]| {
        v.iter().map(|m| round(f(m), 3)).collect::<Vec<_>>()
    };
    let gbps = |m: &Measured| m.run.gbps;
    let cpu = |m: &Measured| m.cpu_s_per_gb;
    let peer_cpu = |m: &Measured| m.peer_cpu_s_per_gb;
    let counts = |f: &dyn Fn(&Measured) -> u64, v: &[Measured]| v.iter().map(f).collect::<Vec<_>>();
    let retrans = |m: &Measured| m.run.retransmits;
    let drops = |m: &Measured| m.rcvbuf_drops;
    let (suffix, receiver, laptop_role) = match dir {
        Direction::Upload => ("", "the workspace", "encrypting"),
        Direction::Download => ("_download", "the laptop", "decrypting"),
    };
    // One figure of this direction: the medians of both sides, emitted
    // against wireguard-go (the goal's ratio applies to uploads only).
    let emit_medians = |f: &dyn Fn(&Measured) -> f64,
                        stem: &str,
                        unit: &str,
                        better: Better,
                        upload_target: f64,
                        note: String| {
        let (ours, theirs) = (med(f, &runs.ours), med(f, &runs.theirs));
        let name = format!("{stem}{suffix}");
        let target = (dir == Direction::Upload).then_some(upload_target);
        let m = Metric::new(&name, ours, unit, better).against("wireguard-go", theirs);
        emit(BENCH, m.with_target_ratio(target).with_note(note));
        (ours, theirs)
    };
    let down_arrow = if suffix.is_empty() { "" } else { " ↓" };
    let (ours, theirs) = emit_medians(
        &gbps,
        "throughput",
        "Gbit/s",
        Better::Higher,
        1.5,
        format!(
            "median of {} interleaved {} s single-stream iperf3 TCP runs {} with a wireguard-go workspace peer, warrend vs wireguard-go {laptop_role} on the laptop; {mtus}; runs {:?} vs {:?} (ratio per pair {:?}); TCP retransmits {:?} vs {:?}; UDP receive-buffer drops at {receiver} {:?} vs {:?}",
            cfg.runs,
            cfg.iperf_secs,
            dir.arrow(),
            list(&gbps, &runs.ours),
            list(&gbps, &runs.theirs),
            runs.ours
                .iter()
                .zip(&runs.theirs)
                .map(|(o, t)| round(ratio(o.run.gbps, Better::Higher, t.run.gbps), 2))
                .collect::<Vec<_>>(),
            counts(&retrans, &runs.ours),
            counts(&retrans, &runs.theirs),
            counts(&drops, &runs.ours),
            counts(&drops, &runs.theirs),
        ),
    );
    let label = format!("throughput{down_arrow}");
    summary.add(format!(
        "{label:<18} {ours:>8.3} Gbit/s    wireguard-go {theirs:.3}: ×{:.2}{}",
        ours / theirs,
        if dir == Direction::Upload {
            ", target ≥ ×1.5"
        } else {
            ""
        }
    ));
    let (our_cpu, their_cpu) = emit_medians(
        &cpu,
        "cpu_per_gb",
        "CPU s/GB",
        Better::Lower,
        2.0,
        format!(
            "median of {}, {}: utime+stime of warrend vs the laptop-side wireguard-go during each iperf3 run ÷ GB (1e9 bytes) sent; the workspace wireguard-go used {:.2} vs {:.2} CPU s/GB in those runs (all on the same cores)",
            cfg.runs,
            dir.arrow(),
            med(&peer_cpu, &runs.ours),
            med(&peer_cpu, &runs.theirs)
        ),
    );
    let label = format!("CPU per GB{down_arrow}");
    summary.add(format!(
        "{label:<18} {our_cpu:>8.2} s         wireguard-go {their_cpu:.2}: ours is ×{:.2} of theirs{}",
        our_cpu / their_cpu,
        if dir == Direction::Upload { ", target ≤ ×0.5" } else { "" }
    ));
    theirs
}

fn main() {
    warren_bench::lab::run_in_lab(BENCH, preflight, Config::from_env, |lab, cfg| {
        measure(lab, cfg).map(|s| s.0)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
        let key = random_public_key().unwrap();
        assert_eq!(key.len(), 44, "a WireGuard key is 32 bytes: {key}");
        assert!(key.ends_with('='));
    }

    #[test]
    fn snmp_udp_reads_the_named_column() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 2 7 11 7 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 99 0\n";
        assert_eq!(snmp_udp(snmp, "RcvbufErrors"), Some(7));
        assert_eq!(snmp_udp(snmp, "OutDatagrams"), Some(11));
        assert_eq!(snmp_udp(snmp, "Nope"), None);
        assert_eq!(snmp_udp("Ip: 1\n", "RcvbufErrors"), None);
    }

    #[test]
    fn iperf_json_gives_receiver_goodput_and_sender_bytes() {
        let out = r#"{"start": {}, "end": {
            "sum_sent": {"bytes": 500000000, "bits_per_second": 400000000.0, "retransmits": 12},
            "sum_received": {"bytes": 499000000, "bits_per_second": 399000000.0}}}"#;
        let r = parse_iperf(out).unwrap();
        assert!((r.gbps - 0.399).abs() < 1e-9);
        assert_eq!(r.bytes_sent, 500_000_000.0);
        assert_eq!(r.retransmits, 12);
        let err =
            parse_iperf(r#"{"start": {}, "end": {}, "error": "unable to connect to server"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unable to connect"), "{err}");
        assert!(parse_iperf("not json").is_err());
    }
}
