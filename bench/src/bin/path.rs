//! The path benchmark (`bench/run path`): how fast the path layer finds,
//! keeps and improves a path between a laptop and a workspace that are both
//! behind NAT, in `warren_e2e::path_lab::PathLab` (nftables NAT routers, two
//! coturn relays and the coordinator on a "public" bridge), with the release
//! builds of `warrend`, `warren`, `warren-agent` and `warren-coord`.
//!
//! Every run is a fresh lab (new namespaces, relays, coordinator, agent and
//! helper), so no figure profits from state an earlier one left behind:
//!
//! - **direct runs** (both routers plain `masquerade`): `warren up` → `warren
//!   status --json` shows the agent's path `direct` (`time_to_direct_ms`).
//! - **relayed runs** (the workspace's router `masquerade random`, i.e.
//!   symmetric): `warren up` → path `relayed` (`time_to_relayed_ms`); ping
//!   RTT and a download through the relay; the relay in use killed with
//!   SIGKILL while pings go every 100 ms → the first ping answered through
//!   the other relay (`relay_failover_ms`); the router switched to plain
//!   masquerade (conntrack flushed) → path `direct` (`upgrade_to_direct_ms`);
//!   ping RTT and the same download on the direct path. The relayed and the
//!   direct figures of one run come from the same processes, minutes apart
//!   at most (`relayed_throughput_ratio`, `relay_rtt_added_ms`).
//!
//! While a path is awaited, a pinger sends one ICMP echo every 100 ms to the
//! agent's tunnel address: the path layer finds and keeps paths for peers in
//! use, and WireGuard handshakes only for traffic, as for a person using it.
//! `warren status --json` is polled every 50 ms.
//!
//! Prints one JSON object per metric on stdout (DESIGN.md, "Tests and
//! measurements"); progress and a summary go to stderr. Needs root, nftables,
//! conntrack and coturn. A failure panics with the logs' tails and keeps the
//! run's directory; Ctrl-C removes the namespaces.
//!
//! Knobs (environment): `WARREN_BENCH_PATH_RUNS` (runs of each kind; 5),
//! `WARREN_BENCH_PATH_MIB` (size of each download; 16),
//! `WARREN_BENCH_PATH_PINGS` (pings per RTT figure; 20).

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use warren_bench::child::run_ok;
use warren_bench::cleanup::{cleanup_on_signal, register_guard, Leftover, Registered};
use warren_bench::report::{emit, env_num, median, print_load_at_start, round, Better, Metric};
use warren_e2e::nat_lab::{Nat, Side};
use warren_e2e::netns::icmp_ping;
use warren_e2e::path_lab::{PathLab, PathView, TURN_HOSTS};

const BENCH: &str = "path";
const MIB: u64 = 1024 * 1024;
/// How long any path may take before the run counts as failed (the
/// targets are 2 s, 3 s and 10 s; this only bounds the loops).
const PATH_LIMIT: Duration = Duration::from_secs(30);
/// The pinger's interval, and how long one echo waits for its answer.
const PING_EVERY: Duration = Duration::from_millis(100);
const PING_WAIT: Duration = Duration::from_millis(250);
const STATUS_EVERY: Duration = Duration::from_millis(50);

struct Config {
    runs: usize,
    download: u64,
    pings: usize,
}

impl Config {
    fn from_env() -> Result<Config> {
        let runs = env_num("WARREN_BENCH_PATH_RUNS", 5)? as usize;
        let mib = env_num("WARREN_BENCH_PATH_MIB", 16)?;
        let pings = env_num("WARREN_BENCH_PATH_PINGS", 20)? as usize;
        if runs == 0 || mib == 0 || pings == 0 {
            bail!("WARREN_BENCH_PATH_RUNS, WARREN_BENCH_PATH_MIB and WARREN_BENCH_PATH_PINGS must be at least 1");
        }
        Ok(Config {
            runs,
            download: mib * MIB,
            pings,
        })
    }
}

/// Fails with the reason when this machine can't run the lab.
fn preflight() -> Result<()> {
    match PathLab::skip_reason() {
        Some(reason) => bail!(
            "{reason} (bench/run path runs as root; Debian: apt-get install iproute2 nftables conntrack coturn curl openssl)"
        ),
        None => Ok(()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `v` as "a, b, c" with one decimal, for the notes.
fn list(v: &[f64]) -> String {
    list_with(v, 1)
}

/// `v` as "a, b, c" with `decimals` decimals.
fn list_with(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// The lab around one run

/// Starts a lab with the routers doing `laptop` / `workspace`, registers its
/// namespaces and directory for Ctrl-C, brings the helper up and runs `f`.
/// A failure of `f` prints the logs' tails and panics while the lab still
/// stands, so its directory (every log) is kept.
fn with_lab<T>(
    name: &str,
    laptop: Nat,
    workspace: Nat,
    f: impl FnOnce(&mut PathLab) -> Result<T>,
) -> T {
    let started = Instant::now();
    let mut lab = PathLab::start(&format!("bench-{name}"), laptop, workspace);
    let n = &lab.nat;
    let mut guards: Vec<Registered> = [
        &n.public,
        &n.laptop,
        &n.laptop_router,
        &n.workspace,
        &n.workspace_router,
        &n.server1,
        &n.server2,
        &n.server3,
    ]
    .into_iter()
    .map(|ns| register_guard(Leftover::Netns(ns.clone())))
    .collect();
    guards.push(register_guard(Leftover::Dir(PathBuf::from(lab.dir.path()))));
    eprintln!(
        "bench {BENCH}: {name}: lab up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    lab.up();
    match f(&mut lab) {
        Ok(v) => {
            // Unregistered first: the namespaces go the ordinary way now.
            drop(guards);
            v
        }
        Err(e) => {
            lab.print_logs(80);
            panic!("bench {BENCH} failed in {name}: {e:#}");
        }
    }
}

// ---------------------------------------------------------------------------
// Traffic

/// One echo of the [`Pinger`]: when it left and its RTT if answered.
#[derive(Clone, Copy, Debug)]
struct Echo {
    sent: Instant,
    rtt: Option<Duration>,
}

/// Pings the agent's tunnel address every [`PING_EVERY`] from the laptop
/// namespace on its own thread, until dropped (which must happen before
/// the lab's namespaces go).
struct Pinger {
    stop: Arc<AtomicBool>,
    echoes: Arc<Mutex<Vec<Echo>>>,
    thread: Option<JoinHandle<()>>,
}

impl Pinger {
    fn start(lab: &PathLab) -> Pinger {
        let ns = lab.nat.laptop.clone();
        let addr: IpAddr = lab.agent_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let echoes = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let echoes = echoes.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let rtt = icmp_ping(&ns, addr, PING_WAIT);
                    if let Ok(mut v) = echoes.lock() {
                        v.push(Echo { sent, rtt });
                    }
                    std::thread::sleep(PING_EVERY.saturating_sub(sent.elapsed()));
                }
            }
        });
        Pinger {
            stop,
            echoes,
            thread: Some(thread),
        }
    }

    fn echoes(&self) -> Vec<Echo> {
        self.echoes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// When the answer came to the first echo sent at or after `t`.
    fn first_answer_after(&self, t: Instant) -> Option<Instant> {
        self.echoes()
            .iter()
            .filter(|e| e.sent >= t)
            .find_map(|e| e.rtt.map(|rtt| e.sent + rtt))
    }

    /// Echoes sent in `from..to`: (sent, unanswered).
    fn lost_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let v: Vec<Echo> = self
            .echoes()
            .into_iter()
            .filter(|e| e.sent >= from && e.sent < to)
            .collect();
        (v.len(), v.iter().filter(|e| e.rtt.is_none()).count())
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `warren status --json` every [`STATUS_EVERY`] until `accept` takes
/// the agent's path; the path and when it was seen.
fn poll_path(
    lab: &PathLab,
    limit: Duration,
    what: &str,
    mut accept: impl FnMut(&PathView) -> bool,
) -> Result<(PathView, Instant)> {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(p) = lab.agent_path() {
            if accept(&p) {
                return Ok((p, Instant::now()));
            }
            last = Some(p);
        }
        if start.elapsed() >= limit {
            bail!("the agent's path did not become {what} within {limit:?}; last seen: {last:?}");
        }
        std::thread::sleep(STATUS_EVERY);
    }
}

/// Direct, and not to a relay's address: the status also says `direct`
/// for a remote that is the agent's relayed address on a lab relay (no
/// relay of the helper's own named), which is a relayed path.
fn direct(p: &PathView) -> bool {
    let to_relay = p
        .remote
        .as_deref()
        .and_then(|r| r.parse::<SocketAddr>().ok())
        .is_some_and(|r| TURN_HOSTS.iter().any(|h| r.ip() == IpAddr::V4(*h)));
    p.path == "direct" && p.relay.is_none() && !to_relay
}

fn relayed_via_lab_relay(p: &PathView) -> bool {
    p.path == "relayed" && p.relay_index().is_some()
}

/// The median RTT in ms of `n` pings 100 ms apart (one second each to
/// answer), and how many went unanswered (most must be answered).
fn rtt_ms(lab: &PathLab, n: usize) -> Result<(f64, usize)> {
    let mut rtts = Vec::new();
    for _ in 0..n {
        if let Some(rtt) = lab.ping(Duration::from_secs(1)) {
            rtts.push(ms(rtt));
        }
        std::thread::sleep(PING_EVERY);
    }
    if rtts.len() * 2 < n {
        bail!("only {} of {n} pings were answered", rtts.len());
    }
    Ok((median(&rtts), n - rtts.len()))
}

/// Field `name` of table `table` (`Udp`, `Tcp`, ...) in the text of a
/// `/proc/net/snmp`.
fn snmp_field(snmp: &str, table: &str, name: &str) -> Option<u64> {
    let prefix = format!("{table}:");
    let mut rows = snmp
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(&prefix));
    let (names, values) = (rows.next()?, rows.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The drops (last column) of the sockets bound to local port `port` in
/// the text of a `/proc/net/udp`.
fn udp_socket_drops(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port).then(|| f.last()?.parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// UDP counters so far: datagrams dropped at full receive buffers in the
/// laptop's, the workspace's and both relays' namespaces (where a tunnel
/// through a userspace relay loses packets under load), and datagrams the
/// relays received (which shows whether a "direct" download went through
/// a relay after all).
fn udp_counters(lab: &PathLab) -> Result<[u64; 5]> {
    let cat = |ns: &str, file: &str| -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "cat", file]);
        run_ok(cmd)
    };
    let read = |ns: &str, name: &str| -> Result<u64> {
        snmp_field(&cat(ns, "/proc/net/snmp")?, "Udp", name)
            .with_context(|| format!("no Udp {name} in /proc/net/snmp of {ns}"))
    };
    let listener_drops = |ns: &str| -> Result<u64> {
        Ok(udp_socket_drops(
            &cat(ns, "/proc/net/udp")?,
            warren_e2e::path_lab::TURN_PORT,
        ))
    };
    let n = &lab.nat;
    let relays =
        |name: &str| -> Result<u64> { Ok(read(&n.server1, name)? + read(&n.server2, name)?) };
    Ok([
        read(&n.laptop, "RcvbufErrors")?,
        read(&n.workspace, "RcvbufErrors")?,
        relays("RcvbufErrors")?,
        relays("InDatagrams")?,
        listener_drops(&n.server1)? + listener_drops(&n.server2)?,
    ])
}

/// A download's speed and the UDP counters (see [`udp_counters`]) during
/// it.
#[derive(Clone, Copy, Debug)]
struct Download {
    mbit: f64,
    counters: [u64; 5],
}

impl Download {
    /// "drops laptop/workspace/relays (of which at the relays' listening
    /// sockets), datagrams into the relays".
    fn counters_text(&self) -> String {
        let [l, w, r, relayed, listener] = self.counters;
        format!("{l}/{w}/{r} ({listener}), {relayed}")
    }
}

/// Downloads `size` bytes through the tunnel as fast as they go (checked
/// byte for byte by the lab), with the UDP counters around it.
fn download(lab: &PathLab, size: u64) -> Result<Download> {
    let before = udp_counters(lab)?;
    let mbit = download_mbit(lab, size)?;
    let after = udp_counters(lab)?;
    let mut counters = [0; 5];
    for (c, (a, b)) in counters.iter_mut().zip(after.iter().zip(before)) {
        *c = a.saturating_sub(b);
    }
    Ok(Download { mbit, counters })
}

/// Waits (bounded by `limit`) until ten pings 100 ms apart pass with fewer
/// than five datagrams into the relays: the agent's side of the path can
/// stay on a relay after the helper's went direct. When that was.
fn relays_quiet(lab: &PathLab, limit: Duration) -> Result<Instant> {
    let start = Instant::now();
    loop {
        let before = udp_counters(lab)?[3];
        for _ in 0..10 {
            let _ = lab.ping(Duration::from_millis(100));
            std::thread::sleep(PING_EVERY);
        }
        let into_relays = udp_counters(lab)?[3].saturating_sub(before);
        if into_relays < 5 {
            return Ok(Instant::now());
        }
        if start.elapsed() >= limit {
            bail!("the relays still received {into_relays} datagrams during ten pings {limit:?} after the path was direct: the agent's side still sends through a relay");
        }
    }
}

/// Mbit/s of one download, from its first body byte to the last.
fn download_mbit(lab: &PathLab, size: u64) -> Result<f64> {
    let dl = lab.start_download(size, u64::MAX / 2);
    let first = warren_e2e::poll_until(Duration::from_secs(20), || {
        if dl.bytes() > 0 {
            return Some(Ok((Instant::now(), dl.bytes())));
        }
        match dl.outcome() {
            Some(Err(e)) => Some(Err(e)),
            _ => None,
        }
    });
    let (t0, b0) = match first {
        Some(Ok(v)) => v,
        Some(Err(e)) => bail!("the download failed before its first byte: {e}"),
        None => bail!("no byte of the download arrived within 20 s"),
    };
    let total = dl
        .wait(Duration::from_secs(180))
        .map_err(anyhow::Error::msg)
        .context("the download through the tunnel")?;
    let end = dl.started + total;
    let secs = end.saturating_duration_since(t0).as_secs_f64();
    if secs <= 0.0 || b0 >= size {
        bail!("the download was too short to time ({size} bytes); raise WARREN_BENCH_PATH_MIB");
    }
    Ok((size - b0) as f64 * 8.0 / secs / 1e6)
}

// ---------------------------------------------------------------------------
// The runs

/// `warren up` → path `direct`, both routers plain masquerade; also when
/// the first ping was answered.
fn direct_run(i: usize) -> (f64, f64) {
    with_lab(
        &format!("direct-{i}"),
        Nat::EndpointIndependent,
        Nat::EndpointIndependent,
        |lab| {
            let up_at = lab
                .up_at
                .context("the lab records when `warren up` returned")?;
            let pinger = Pinger::start(lab);
            let (path, seen) = poll_path(lab, PATH_LIMIT, "direct", direct)?;
            if path.relay.is_some() {
                bail!("a direct path names a relay: {path:?}");
            }
            let pinged = warren_e2e::poll_until(Duration::from_secs(10), || {
                pinger.first_answer_after(up_at)
            })
            .context("no ping was answered on the direct path")?;
            let t = ms(seen - up_at);
            let p = ms(pinged.saturating_duration_since(up_at));
            eprintln!("bench {BENCH}: direct-{i}: direct after {t:.0} ms ({path:?}), first ping answered after {p:.0} ms");
            Ok((t, p))
        },
    )
}

/// What one relayed run measured.
struct RelayedRun {
    to_relayed_ms: f64,
    relayed_first_ping_ms: f64,
    rtt_relayed_ms: f64,
    rtt_relayed_lost: usize,
    dl_relayed: Download,
    failover_ms: f64,
    failover_status_ms: f64,
    failover_lost: (usize, usize),
    upgrade_ms: f64,
    upgrade_status_ms: f64,
    relays_quiet_ms: f64,
    upgrade_lost: (usize, usize),
    rtt_direct_ms: f64,
    rtt_direct_lost: usize,
    dl_direct: Download,
}

fn relayed_run(i: usize, cfg: &Config) -> RelayedRun {
    let name = format!("relayed-{i}");
    with_lab(&name, Nat::EndpointIndependent, Nat::Symmetric, |lab| {
        let up_at = lab
            .up_at
            .context("the lab records when `warren up` returned")?;
        let pinger = Pinger::start(lab);
        let (path, seen) = poll_path(lab, PATH_LIMIT, "relayed", relayed_via_lab_relay)?;
        let to_relayed_ms = ms(seen - up_at);
        warren_e2e::poll_until(Duration::from_secs(10), || pinger.first_answer_after(seen))
            .context("no ping was answered on the relayed path")?;
        let relayed_first_ping_ms = pinger
            .first_answer_after(up_at)
            .map_or(f64::NAN, |t| ms(t.saturating_duration_since(up_at)));
        drop(pinger);
        eprintln!("bench {BENCH}: {name}: relayed after {to_relayed_ms:.0} ms ({path:?}), first ping answered after {relayed_first_ping_ms:.0} ms");

        let (rtt_relayed_ms, rtt_relayed_lost) =
            rtt_ms(lab, cfg.pings).context("RTT on the relayed path")?;
        let dl_relayed = download(lab, cfg.download).context("download on the relayed path")?;
        let still = lab.agent_path().context("the agent is no longer listed")?;
        if !relayed_via_lab_relay(&still) {
            bail!("the path left the relay during the relayed measurements: {still:?}");
        }
        eprintln!("bench {BENCH}: {name}: relayed RTT {rtt_relayed_ms:.2} ms, download {:.1} Mbit/s, UDP receive-buffer drops laptop/workspace/relays (of which at port 3478), datagrams into the relays: {}", dl_relayed.mbit, dl_relayed.counters_text());

        // Failover: the relay in use dies while pings flow.
        let used = still.relay_index().context("a lab relay is in use")?;
        let other = 1 - used;
        let pinger = Pinger::start(lab);
        let armed = Instant::now();
        warren_e2e::poll_until(Duration::from_secs(5), || pinger.first_answer_after(armed))
            .context("no ping answered through the relay before killing it")?;
        let killed = Instant::now();
        lab.kill_relay(used);
        let answered = warren_e2e::poll_until(PATH_LIMIT, || pinger.first_answer_after(killed))
            .with_context(|| {
                format!(
                    "no ping answered within {PATH_LIMIT:?} after relay {} was killed",
                    PathLab::relay_addr(used)
                )
            })?;
        let failover_ms = ms(answered - killed);
        let (after, shown) = poll_path(lab, PATH_LIMIT, "relayed via the other relay", |p| {
            p.path == "relayed" && p.relay_index() == Some(other)
        })?;
        let failover_status_ms = ms(shown - killed);
        let failover_lost = pinger.lost_between(killed, answered);
        drop(pinger);
        eprintln!(
                "bench {BENCH}: {name}: relay {used} killed → ping answered after {failover_ms:.0} ms, status {after:?} after {failover_status_ms:.0} ms"
            );

        // Upgrade: the workspace's NAT turns plain while pings flow.
        // The status shows `direct` whenever the last handshake is recent
        // and no relay is named, also while the path layer has no path at
        // all (as after the conntrack flush), so the upgrade counts as done
        // only once a ping sent after the status said so is answered.
        let pinger = Pinger::start(lab);
        let opened = Instant::now();
        lab.set_nat(Side::Workspace, Nat::EndpointIndependent);
        let (now_direct, shown) = poll_path(lab, PATH_LIMIT, "direct", direct)?;
        let works = warren_e2e::poll_until(PATH_LIMIT, || pinger.first_answer_after(shown))
            .with_context(|| {
                format!("the status showed direct ({now_direct:?}) but no ping sent after that was answered within {PATH_LIMIT:?}")
            })?;
        let upgrade_ms = ms(works - opened);
        let upgrade_status_ms = ms(shown - opened);
        let upgrade_lost = pinger.lost_between(opened, works);
        drop(pinger);
        if now_direct.relay.is_some() {
            bail!("a direct path names a relay: {now_direct:?}");
        }
        eprintln!("bench {BENCH}: {name}: status direct {upgrade_status_ms:.0} ms after the NAT opened ({now_direct:?}), a ping through it answered after {upgrade_ms:.0} ms; pings lost meanwhile: {} of {}", upgrade_lost.1, upgrade_lost.0);

        let quiet = relays_quiet(lab, PATH_LIMIT)?;
        let relays_quiet_ms = ms(quiet - opened);
        eprintln!("bench {BENCH}: {name}: the relays stopped carrying the pings by {relays_quiet_ms:.0} ms after the NAT opened");

        let (rtt_direct_ms, rtt_direct_lost) =
            rtt_ms(lab, cfg.pings).context("RTT on the direct path")?;
        let dl_direct = download(lab, cfg.download).context("download on the direct path")?;
        let still = lab.agent_path().context("the agent is no longer listed")?;
        if !direct(&still) {
            bail!("the path left direct during the direct measurements: {still:?}");
        }
        eprintln!("bench {BENCH}: {name}: direct RTT {rtt_direct_ms:.2} ms, download {:.1} Mbit/s, UDP receive-buffer drops laptop/workspace/relays (of which at port 3478), datagrams into the relays: {}", dl_direct.mbit, dl_direct.counters_text());
        if !lab.processes_alive() {
            bail!("the helper or the agent died");
        }
        Ok(RelayedRun {
            to_relayed_ms,
            relayed_first_ping_ms,
            rtt_relayed_ms,
            rtt_relayed_lost,
            dl_relayed,
            failover_ms,
            failover_status_ms,
            failover_lost,
            upgrade_ms,
            upgrade_status_ms,
            relays_quiet_ms,
            upgrade_lost,
            rtt_direct_ms,
            rtt_direct_lost,
            dl_direct,
        })
    })
}

// ---------------------------------------------------------------------------
// Reporting

fn report(cfg: &Config, direct: &[(f64, f64)], relayed: &[RelayedRun]) -> Vec<String> {
    let runs = cfg.runs;
    let mut summary = Vec::new();
    let mut line = |name: &str, value: f64, unit: &str, goal: &str| {
        summary.push(format!("{name}: {value:.1} {unit} ({goal})"));
    };

    let to_direct: Vec<f64> = direct.iter().map(|r| r.0).collect();
    let first_ping: Vec<f64> = direct.iter().map(|r| r.1).collect();
    let v = median(&to_direct);
    emit(
        BENCH,
        Metric::new("time_to_direct_ms", round(v, 0), "ms", Better::Lower)
            .with_target(2000.0)
            .with_note(format!(
                "both routers plain masquerade; `warren up` returned → `warren status --json` shows path direct (polled every 50 ms, one ping every 100 ms from when the agent is listed); median of {runs} runs, each a fresh lab; runs: {} ms; first ping answered after: {} ms",
                list(&to_direct),
                list(&first_ping)
            )),
    );
    line("time_to_direct_ms", v, "ms", "target ≤ 2000");

    let to_relayed: Vec<f64> = relayed.iter().map(|r| r.to_relayed_ms).collect();
    let relayed_ping: Vec<f64> = relayed.iter().map(|r| r.relayed_first_ping_ms).collect();
    let v = median(&to_relayed);
    emit(
        BENCH,
        Metric::new("time_to_relayed_ms", round(v, 0), "ms", Better::Lower)
            .with_target(3000.0)
            .with_note(format!(
                "workspace router symmetric (masquerade random); `warren up` returned → path relayed via a lab relay; median of {runs} runs, each a fresh lab; runs: {} ms; first ping answered after: {} ms",
                list(&to_relayed),
                list(&relayed_ping)
            )),
    );
    line("time_to_relayed_ms", v, "ms", "target ≤ 3000");

    let failover: Vec<f64> = relayed.iter().map(|r| r.failover_ms).collect();
    let status: Vec<f64> = relayed.iter().map(|r| r.failover_status_ms).collect();
    let lost: Vec<String> = relayed
        .iter()
        .map(|r| format!("{}/{}", r.failover_lost.1, r.failover_lost.0))
        .collect();
    let v = median(&failover);
    emit(
        BENCH,
        Metric::new("relay_failover_ms", round(v, 0), "ms", Better::Lower)
            .with_target(10000.0)
            .with_note(format!(
                "relayed (symmetric NAT), one ping every 100 ms; SIGKILL to the relay in use → the answer to the first ping sent after it (through the other relay); median of {runs} runs: {} ms; status showed the other relay after {} ms; pings unanswered/sent until then: {}",
                list(&failover),
                list(&status),
                lost.join(", ")
            )),
    );
    line("relay_failover_ms", v, "ms", "target ≤ 10000");

    let upgrade: Vec<f64> = relayed.iter().map(|r| r.upgrade_ms).collect();
    let shown: Vec<f64> = relayed.iter().map(|r| r.upgrade_status_ms).collect();
    let quiet: Vec<f64> = relayed.iter().map(|r| r.relays_quiet_ms).collect();
    let lost: Vec<String> = relayed
        .iter()
        .map(|r| format!("{}/{}", r.upgrade_lost.1, r.upgrade_lost.0))
        .collect();
    let v = median(&upgrade);
    emit(
        BENCH,
        Metric::new("upgrade_to_direct_ms", round(v, 0), "ms", Better::Lower)
            .with_target(10000.0)
            .with_note(format!(
                "relayed (symmetric NAT, after the failover above, so one relay left), one ping every 100 ms; the workspace router switched to plain masquerade and its conntrack flushed → the status shows path direct (to an address that is not a relay's) and a ping sent after that is answered (the status alone can show direct while no path works: it says direct for any recent handshake without a relay of the helper's); median of {runs} runs: {} ms; status showed direct after {} ms; the relays stopped carrying the pings (the agent's side direct too; checked in 1 s windows) after {} ms; pings unanswered/sent until it worked: {} (the flush also breaks the relayed path: the workspace's mapping to the relay changes)",
                list(&upgrade),
                list(&shown),
                list(&quiet),
                lost.join(", ")
            )),
    );
    line("upgrade_to_direct_ms", v, "ms", "target ≤ 10000");

    let mb = cfg.download / MIB;
    let r_mbit: Vec<f64> = relayed.iter().map(|r| r.dl_relayed.mbit).collect();
    let d_mbit: Vec<f64> = relayed.iter().map(|r| r.dl_direct.mbit).collect();
    let ratios: Vec<f64> = relayed
        .iter()
        .map(|r| r.dl_relayed.mbit / r.dl_direct.mbit)
        .collect();
    let drops = |f: fn(&RelayedRun) -> &Download| {
        relayed
            .iter()
            .map(|r| f(r).counters_text())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (rm, dm) = (median(&r_mbit), median(&d_mbit));
    emit(
        BENCH,
        Metric::new("relayed_throughput_ratio", rm, "Mbit/s", Better::Higher)
            .against("direct", dm)
            .with_target_ratio(Some(0.7))
            .with_note(format!(
                "one {mb} MiB HTTP download (one TCP connection, laptop ← warren-agent, every byte checked) per path and run, relayed before the failover and direct after the upgrade, in the same lab and processes; medians of {runs} runs; per-run relayed/direct: {}",
                list_with(&ratios, 3)
            )),
    );
    emit(
        BENCH,
        Metric::new("download_relayed", rm, "Mbit/s", Better::Higher).with_note(format!(
            "the relayed side of relayed_throughput_ratio; runs: {} Mbit/s; UDP datagrams dropped at full receive buffers (laptop/workspace/relays, in parentheses those at the relays' listening port 3478), and datagrams the relays received, per run: {}",
            list(&r_mbit),
            drops(|r| &r.dl_relayed)
        )),
    );
    emit(
        BENCH,
        Metric::new("download_direct", dm, "Mbit/s", Better::Higher).with_note(format!(
            "the direct side of relayed_throughput_ratio; runs: {} Mbit/s; UDP datagrams dropped at full receive buffers (laptop/workspace/relays, in parentheses those at the relays' listening port 3478), and datagrams the relays received, per run: {}",
            list(&d_mbit),
            drops(|r| &r.dl_direct)
        )),
    );
    line(
        "relayed_throughput_ratio",
        rm / dm,
        &format!("(relayed {rm:.0} / direct {dm:.0} Mbit/s)"),
        "target ≥ 0.7",
    );

    let r_rtt: Vec<f64> = relayed.iter().map(|r| r.rtt_relayed_ms).collect();
    let d_rtt: Vec<f64> = relayed.iter().map(|r| r.rtt_direct_ms).collect();
    let added: Vec<f64> = relayed
        .iter()
        .map(|r| r.rtt_relayed_ms - r.rtt_direct_ms)
        .collect();
    let v = median(&added);
    emit(
        BENCH,
        Metric::new("relay_rtt_added_ms", round(v, 3), "ms", Better::Lower).with_note(format!(
            "median ICMP RTT through the tunnel over {} pings 100 ms apart, relayed minus direct, same lab; median of {runs} runs: {}; direct RTT {:.3} ms (runs: {}), relayed RTT {:.3} ms (runs: {}); pings unanswered relayed/direct per run: {}",
            cfg.pings,
            list_with(&added, 3),
            median(&d_rtt),
            list_with(&d_rtt, 3),
            median(&r_rtt),
            list_with(&r_rtt, 3),
            relayed
                .iter()
                .map(|r| format!("{}/{}", r.rtt_relayed_lost, r.rtt_direct_lost))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    );
    line(
        "relay_rtt_added_ms",
        v,
        &format!("ms (direct {:.2} ms)", median(&d_rtt)),
        "no target",
    );
    summary
}

fn main() {
    if let Err(e) = preflight().and_then(|_| cleanup_on_signal(BENCH)) {
        eprintln!("bench {BENCH}: {e:#}");
        std::process::exit(1);
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench {BENCH}: {e:#}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    print_load_at_start(BENCH);
    eprintln!(
        "bench {BENCH}: binaries from {}",
        warren_e2e::bin_dir().display()
    );
    let direct: Vec<(f64, f64)> = (0..cfg.runs).map(direct_run).collect();
    let relayed: Vec<RelayedRun> = (0..cfg.runs).map(|i| relayed_run(i, &cfg)).collect();
    let summary = report(&cfg, &direct, &relayed);
    eprintln!(
        "\n== bench {BENCH}: results against targets ({:.0} s) ==",
        started.elapsed().as_secs_f64()
    );
    for l in &summary {
        eprintln!("  {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_field_reads_the_named_table_and_column() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 2 7 11 5 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 99 0\n";
        assert_eq!(snmp_field(snmp, "Udp", "RcvbufErrors"), Some(5));
        assert_eq!(snmp_field(snmp, "UdpLite", "RcvbufErrors"), Some(99));
        assert_eq!(snmp_field(snmp, "Ip", "DefaultTTL"), Some(64));
        assert_eq!(snmp_field(snmp, "Udp", "Nope"), None);
        assert_eq!(snmp_field(snmp, "Tcp", "RetransSegs"), None);
    }

    #[test]
    fn udp_socket_drops_sums_the_sockets_on_a_port() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 12: 0A71CB0A:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
                     \x20 13: 0A71CB0A:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 3\n\
                     \x20 14: 0A71CB0A:C350 0B71CB0A:0D96 01 00000000:00000000 00:00000000 00000000     0        0 4244 2 0000000000000000 900\n";
        assert_eq!(udp_socket_drops(table, 3478), 20);
        assert_eq!(udp_socket_drops(table, 50000), 900);
        assert_eq!(udp_socket_drops(table, 53), 0);
        assert_eq!(udp_socket_drops("", 3478), 0);
    }
}
