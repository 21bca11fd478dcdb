//! The DNS benchmark (`bench/run dns`): the helper's DNS stub against
//! `dnsmasq` serving the same names from a hosts file, measured with
//! `dnsperf` in one run so both meet the same machine noise.
//!
//! Setup: the shared `warren_e2e::netns::TunnelLab` (a laptop and a workspace
//! namespace, a TLS coordinator in the workspace). The coordinator is seeded
//! with `WARREN_BENCH_DNS_WORKSPACES` workspaces of one agent each (two names
//! per agent: `a0.ws-NNNNN.alice.SUFFIX` and `ws-NNNNN.SUFFIX`, each with an
//! IPv4 and an IPv6 address). `warrend` runs in the laptop namespace in the
//! `/etc/resolv.conf` DNS mode, on the namespace's own resolv.conf (the
//! host's file is never touched), so its stub listens on port 53 of the
//! device's tunnel addresses. `dnsmasq` runs in the same namespace on
//! `127.0.0.2:53` with a hosts file written from the names and addresses the
//! helper itself reports (`warren status --json`), and `--local=/SUFFIX/` so
//! an unknown name under the suffix is NXDOMAIN there too. Both are reached
//! over the namespace's loopback path (a TUN address is a local address).
//!
//! The query file mixes A and AAAA for every name with about 10 % NXDOMAIN
//! names, shuffled. Before measuring, `dig` checks that both servers give
//! the same answers for a sample of names; after each run, that the share of
//! NXDOMAIN replies is what the file asks for and nothing was lost, refused
//! or failed (a fast wrong answer is not a result).
//!
//! Measures, interleaving the two servers:
//! - `qps`: saturated throughput (`dnsperf -l SECS -c CLIENTS -T THREADS`,
//!   its own statistics; median of the runs);
//! - `cpu_us_per_query`: CPU time of the serving process per answered query
//!   during those runs (`/proc/PID/stat`), which doesn't depend on who the
//!   bottleneck was;
//! - `p50_ms`, `p99_ms`: per-query latency (`dnsperf -v`) at a low fixed rate
//!   (`-Q`, default 1,000 qps), where latency is the servers', not a queue's;
//! - `p99_ms_loaded`: the same at a higher fixed rate (default 10,000 qps).
//!
//! Saturated percentiles are not reported: under saturation they measure
//! dnsperf's outstanding-query window, and `-v` (which gives per-query
//! latencies) halves dnsperf's own rate on this machine.
//!
//! Prints one JSON object per metric on stdout (DESIGN.md, "Tests and
//! measurements"); progress and a summary go to stderr. Needs root; a
//! failure panics with the processes' log tails and keeps the run's
//! directory; Ctrl-C removes the namespaces.
//!
//! Knobs (environment): `WARREN_BENCH_DNS_WORKSPACES` (1000),
//! `WARREN_BENCH_DNS_SECS` (10, per saturated run), `WARREN_BENCH_DNS_RUNS`
//! (3 per server), `WARREN_BENCH_DNS_CLIENTS` (2; dnsperf threads are
//! min(clients, 2)), `WARREN_BENCH_DNS_OUTSTANDING` (100, dnsperf `-q`),
//! `WARREN_BENCH_DNS_LOW_QPS` (1000), `WARREN_BENCH_DNS_LOADED_QPS` (10000),
//! `WARREN_BENCH_DNS_LAT_SECS` (4, per fixed-rate run),
//! `WARREN_BENCH_DNS_LAT_RUNS` (5 per server and rate).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use warren_bench::child::run_cmd;
use warren_bench::cleanup::{register_guard, Leftover};
use warren_bench::cpu::{clock_ticks, cpu_seconds};
use warren_bench::report::{emit, env_num, loadavg, median, percentile, Better, Metric};
use warren_e2e::netns::{self, HelperOptions, LabHelper, TunnelLab, USER};

const BENCH: &str = "dns";
const BASELINE: &str = "dnsmasq";
/// Where dnsmasq listens in the laptop namespace (loopback, like the stub's
/// tunnel address as seen from a local client).
const DNSMASQ_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Where the stub's core runs behind a plain blocking loop (warren-dns's
/// `serve` example), for scale.
const CORE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// dnsperf's per-query timeout in seconds; a lost query counts as this long
/// in the percentiles.
const QUERY_TIMEOUT_S: f64 = 2.0;
/// One in this many queries asks for a name that doesn't exist.
const NXDOMAIN_EVERY: usize = 10;
/// How far (in percentage points) a run's NXDOMAIN share may stray from the
/// query file's before the answers are called wrong. dnsperf cycles through
/// the file, so a run that ends mid-file differs a little.
const NXDOMAIN_TOLERANCE_PCT: f64 = 2.0;

/// Fails with the reason when this machine can't run the benchmark.
fn preflight() -> Result<()> {
    warren_bench::child::preflight(
        BENCH,
        &["dnsperf", "dnsmasq", "dig", "getconf"],
        "iproute2 dnsperf dnsmasq-base bind9-dnsutils curl python3 openssl",
    )
}

// ---------------------------------------------------------------------------
// Names and query file

/// Every name the helper serves with its addresses, from `status --json`.
struct Zone {
    suffix: String,
    names: Vec<(String, Vec<IpAddr>)>,
}

/// The zone once the helper lists `agents` agents that all have addresses
/// and names, plus the stub's IPv4 address (the device's).
fn zone_from_status(status: &Value, agents: usize) -> Option<(Zone, IpAddr)> {
    let session = status.get("session")?;
    if session.get("state")?.as_str()? != "connected" {
        return None;
    }
    let stub = session
        .get("device")?
        .get("addresses")?
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)?;
    let suffix = session
        .get("deployment")?
        .get("suffix")?
        .as_str()?
        .to_string();
    let list = status.get("agents")?.as_array()?;
    if list.len() != agents {
        return None;
    }
    let mut names = Vec::new();
    for a in list {
        let addrs: Vec<IpAddr> = a
            .get("addresses")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect();
        let dns: Vec<&str> = a
            .get("dns_names")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if addrs.len() < 2 || dns.is_empty() {
            return None;
        }
        for n in dns {
            names.push((n.to_string(), addrs.clone()));
        }
    }
    Some((Zone { suffix, names }, stub))
}

/// dnsmasq's hosts file for the zone: one line per address with its names.
fn hosts_file(zone: &Zone) -> String {
    let mut s = String::new();
    for (name, addrs) in &zone.names {
        for a in addrs {
            s.push_str(&format!("{a} {name}\n"));
        }
    }
    s
}

/// A small deterministic generator, so every run asks the same questions
/// in the same order.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The query file (`NAME TYPE` per line): A and AAAA for every name, and
/// one in [`NXDOMAIN_EVERY`] for a name that doesn't exist (under an agent's
/// workspace or right under the suffix), shuffled. Returns the text and
/// the share of NXDOMAIN queries in percent.
fn query_file(zone: &Zone) -> (String, f64) {
    let mut q: Vec<String> = Vec::new();
    for (name, _) in &zone.names {
        q.push(format!("{name} A"));
        q.push(format!("{name} AAAA"));
    }
    let missing = q.len() / (NXDOMAIN_EVERY - 1);
    for i in 0..missing {
        let (name, _) = &zone.names[i % zone.names.len()];
        if i % 2 == 0 {
            q.push(format!("gone{i}.{name} A"));
        } else {
            q.push(format!("nope{i}.{} AAAA", zone.suffix));
        }
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in (1..q.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        q.swap(i, j);
    }
    let share = missing as f64 * 100.0 / q.len() as f64;
    (q.join("\n") + "\n", share)
}

// ---------------------------------------------------------------------------
// dig

/// One `dig` answer: the status and the sorted RDATA of the answer section.
#[derive(Debug, PartialEq)]
struct DigAnswer {
    status: String,
    rdata: Vec<String>,
}

fn dig(ns: &str, server: IpAddr, name: &str, rtype: &str) -> Result<DigAnswer> {
    let mut c = netns::ns_command(ns, "dig");
    c.arg(format!("@{server}"))
        .args([name, rtype, "+noall", "+comments", "+answer"])
        .args(["+time=2", "+tries=1", "+norecurse"]);
    let out = run_cmd(c, None, Duration::from_secs(10))?;
    parse_dig(&out).with_context(|| format!("dig @{server} {name} {rtype} printed {out:?}"))
}

fn parse_dig(out: &str) -> Result<DigAnswer> {
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .ok_or_else(|| anyhow!("no status in dig's output"))?
        .trim()
        .to_string();
    let mut rdata: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    rdata.sort();
    Ok(DigAnswer { status, rdata })
}

/// Both servers give the zone's addresses for a sample of names and
/// NXDOMAIN for a missing one.
fn check_answers(ns: &str, servers: &[IpAddr], zone: &Zone) -> Result<()> {
    let step = (zone.names.len() / 10).max(1);
    for (name, addrs) in zone.names.iter().step_by(step) {
        for (rtype, v4) in [("A", true), ("AAAA", false)] {
            let mut want: Vec<String> = addrs
                .iter()
                .filter(|a| a.is_ipv4() == v4)
                .map(IpAddr::to_string)
                .collect();
            want.sort();
            for &server in servers {
                let got = dig(ns, server, name, rtype)?;
                if got.status != "NOERROR" || got.rdata != want {
                    bail!(
                        "{server} answered {name} {rtype} with {got:?}; the helper lists {want:?}"
                    );
                }
            }
        }
    }
    let missing = format!("gone.{}", zone.names[0].0);
    for &server in servers {
        let got = dig(ns, server, &missing, "A")?;
        if got.status != "NXDOMAIN" {
            bail!("{server} answered {missing} with {got:?}, not NXDOMAIN");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// dnsperf

/// dnsperf's closing statistics.
#[derive(Debug, Default, PartialEq)]
struct PerfStats {
    sent: u64,
    completed: u64,
    lost: u64,
    qps: f64,
    avg_latency_ms: f64,
    /// `(rcode, count)` as in "Response codes:".
    rcodes: Vec<(String, u64)>,
    /// Per-query latencies in ms (with `-v`), lost queries as the timeout.
    latencies_ms: Vec<f64>,
}

impl PerfStats {
    fn rcode_pct(&self, rcode: &str) -> f64 {
        let n = self
            .rcodes
            .iter()
            .find(|(r, _)| r == rcode)
            .map_or(0, |(_, n)| *n);
        n as f64 * 100.0 / self.completed.max(1) as f64
    }
}

fn first_number(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

fn parse_dnsperf(out: &str) -> Result<PerfStats> {
    let mut st = PerfStats::default();
    let mut seen_qps = false;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("> ") {
            // `> RCODE NAME TYPE SECONDS`; `> T ...` is a timeout.
            let mut w = rest.split_whitespace();
            let rcode = w.next().unwrap_or("");
            let secs: Option<f64> = rest.split_whitespace().last().and_then(|s| s.parse().ok());
            match (rcode, secs) {
                ("T", _) => st.latencies_ms.push(QUERY_TIMEOUT_S * 1000.0),
                (_, Some(s)) => st.latencies_ms.push(s * 1000.0),
                _ => {}
            }
            continue;
        }
        let line = line.trim();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Queries sent" => st.sent = first_number(value).unwrap_or(0.0) as u64,
            "Queries completed" => st.completed = first_number(value).unwrap_or(0.0) as u64,
            "Queries lost" => st.lost = first_number(value).unwrap_or(0.0) as u64,
            "Queries per second" => {
                st.qps = first_number(value).ok_or_else(|| anyhow!("bad qps {value:?}"))?;
                seen_qps = true;
            }
            "Average Latency (s)" => {
                st.avg_latency_ms = first_number(value).unwrap_or(f64::NAN) * 1000.0
            }
            "Response codes" => {
                // `NOERROR 73999 (80.00%), NXDOMAIN 18497 (20.00%)`
                for part in value.split(',') {
                    let mut w = part.split_whitespace();
                    if let (Some(r), Some(n)) = (w.next(), w.next().and_then(|n| n.parse().ok())) {
                        st.rcodes.push((r.to_string(), n));
                    }
                }
            }
            _ => {}
        }
    }
    if !seen_qps {
        bail!("dnsperf printed no statistics");
    }
    Ok(st)
}

/// How dnsperf drives a server.
#[derive(Clone, Copy)]
enum Load {
    /// As fast as the server answers, for `secs`.
    Saturate { secs: u64 },
    /// A fixed rate for `secs`, with per-query latencies.
    Rate { qps: u64, secs: u64 },
}

struct Perf<'a> {
    ns: &'a str,
    queries: &'a Path,
    clients: u64,
    outstanding: u64,
    nxdomain_pct: f64,
}

impl Perf<'_> {
    fn run(&self, server: IpAddr, load: Load) -> Result<PerfStats> {
        let threads = self.clients.clamp(1, 2);
        let mut c = netns::ns_command(self.ns, "dnsperf");
        c.arg("-s")
            .arg(server.to_string())
            .arg("-d")
            .arg(self.queries)
            .args(["-c", &self.clients.to_string(), "-T", &threads.to_string()])
            .args(["-q", &self.outstanding.to_string()])
            .args(["-t", &QUERY_TIMEOUT_S.to_string()]);
        let secs = match load {
            Load::Saturate { secs } => secs,
            Load::Rate { qps, secs } => {
                c.args(["-Q", &qps.to_string(), "-v"]);
                secs
            }
        };
        c.args(["-l", &secs.to_string()]);
        let out = run_cmd(c, None, Duration::from_secs(secs + 30))
            .with_context(|| format!("dnsperf against {server}"))?;
        let st = parse_dnsperf(&out).with_context(|| format!("dnsperf against {server}"))?;
        self.check(server, &st)?;
        Ok(st)
    }

    /// A run counts only if every query got the answer the file asks for.
    fn check(&self, server: IpAddr, st: &PerfStats) -> Result<()> {
        if st.completed == 0 {
            bail!("{server} answered no query");
        }
        // dnsperf reports queries still in flight at the time limit as lost;
        // allow that window, not more.
        if st.lost > self.clients * self.outstanding {
            bail!("{server}: {} of {} queries lost", st.lost, st.sent);
        }
        for (r, n) in &st.rcodes {
            if r != "NOERROR" && r != "NXDOMAIN" {
                bail!("{server} answered {n} queries with {r}");
            }
        }
        let nx = st.rcode_pct("NXDOMAIN");
        if (nx - self.nxdomain_pct).abs() > NXDOMAIN_TOLERANCE_PCT {
            bail!(
                "{server} answered {nx:.1} % NXDOMAIN where the query file has {:.1} % missing names",
                self.nxdomain_pct
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The run

struct Config {
    workspaces: u64,
    secs: u64,
    runs: u64,
    clients: u64,
    outstanding: u64,
    low_qps: u64,
    loaded_qps: u64,
    lat_secs: u64,
    lat_runs: u64,
}

impl Config {
    fn from_env() -> Result<Config> {
        let c = Config {
            workspaces: env_num("WARREN_BENCH_DNS_WORKSPACES", 1000)?,
            secs: env_num("WARREN_BENCH_DNS_SECS", 10)?,
            runs: env_num("WARREN_BENCH_DNS_RUNS", 3)?,
            clients: env_num("WARREN_BENCH_DNS_CLIENTS", 2)?,
            outstanding: env_num("WARREN_BENCH_DNS_OUTSTANDING", 100)?,
            low_qps: env_num("WARREN_BENCH_DNS_LOW_QPS", 1000)?,
            loaded_qps: env_num("WARREN_BENCH_DNS_LOADED_QPS", 10_000)?,
            lat_secs: env_num("WARREN_BENCH_DNS_LAT_SECS", 4)?,
            lat_runs: env_num("WARREN_BENCH_DNS_LAT_RUNS", 5)?,
        };
        if [
            c.workspaces,
            c.runs,
            c.secs,
            c.clients,
            c.lat_runs,
            c.lat_secs,
        ]
        .contains(&0)
        {
            bail!("WARREN_BENCH_DNS_WORKSPACES, _RUNS, _SECS, _CLIENTS, _LAT_RUNS and _LAT_SECS must be at least 1");
        }
        Ok(c)
    }
}

/// The baseline: dnsmasq on [`DNSMASQ_ADDR`]:53 in the laptop namespace.
fn start_dnsmasq(lab: &TunnelLab, hosts: &Path, suffix: &str) -> Result<warren_e2e::Proc> {
    let mut cmd = lab.net.laptop_cmd("dnsmasq");
    cmd.args(["--keep-in-foreground", "--conf-file=/dev/null"])
        .args(["--no-resolv", "--no-hosts", "--user=root", "--pid-file="])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--local=/{suffix}/"))
        .arg(format!("--listen-address={DNSMASQ_ADDR}"))
        .args(["--bind-interfaces", "--port=53"]);
    let mut proc = warren_e2e::Proc::spawn("dnsmasq", lab.dir.path(), cmd, false);
    wait_answering(lab, &mut proc, DNSMASQ_ADDR, suffix, "dnsmasq")?;
    Ok(proc)
}

/// Waits until the server `proc` started answers on `addr`:53 (any answer,
/// here NXDOMAIN for a name under `suffix`); on failure prints its log tail.
fn wait_answering(
    lab: &TunnelLab,
    proc: &mut warren_e2e::Proc,
    addr: Ipv4Addr,
    suffix: &str,
    what: &str,
) -> Result<()> {
    let probe = format!("gone.{suffix}");
    let up = warren_e2e::poll_until(Duration::from_secs(10), || {
        if !proc.is_running() {
            return Some(false);
        }
        dig(&lab.net.laptop, IpAddr::V4(addr), &probe, "A")
            .ok()
            .map(|_| true)
    });
    if up != Some(true) {
        proc.print_log_tail(20);
        bail!("{what} did not answer on {addr}:53 within 10 s");
    }
    Ok(())
}

/// For scale: the same `warren_dns::Stub` behind warren-dns's `serve`
/// example (one UDP socket, blocking `recv_from`/`send_to`, no tokio) on
/// [`CORE_ADDR`]:53, serving the zone's names. `None` when turned off with
/// `WARREN_BENCH_DNS_CORE=0` or when the deployment's suffix isn't the
/// example's fixed `warren`.
fn start_core(lab: &TunnelLab, zone: &Zone) -> Result<Option<warren_e2e::Proc>> {
    if std::env::var("WARREN_BENCH_DNS_CORE").is_ok_and(|v| v.trim() == "0") {
        return Ok(None);
    }
    if zone.suffix != "warren" {
        eprintln!(
            "bench dns: no blocking-loop run: the serve example answers only under `warren`, the deployment uses {:?}",
            zone.suffix
        );
        return Ok(None);
    }
    let exe = warren_e2e::bin_dir().join("examples").join("serve");
    if !exe.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p warren-dns --example serve` (bench/run dns does), or set WARREN_BENCH_DNS_CORE=0",
            exe.display()
        );
    }
    let mut cmd = lab.net.laptop_cmd(&exe);
    cmd.arg(format!("{CORE_ADDR}:53"));
    for (name, addrs) in &zone.names {
        let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
        cmd.arg(format!("{name}={}", list.join(",")));
    }
    let mut proc = warren_e2e::Proc::spawn("stub-serve", lab.dir.path(), cmd, false);
    wait_answering(lab, &mut proc, CORE_ADDR, &zone.suffix, "the serve example")?;
    Ok(Some(proc))
}

/// Throughput and CPU of one server over the interleaved saturated runs.
#[derive(Default)]
struct Side {
    qps: Vec<f64>,
    avg_ms: Vec<f64>,
    cpu_us_per_query: Vec<f64>,
}

fn saturated(
    perf: &Perf,
    server: IpAddr,
    pid: u32,
    ticks: f64,
    secs: u64,
    side: &mut Side,
    label: &str,
) -> Result<()> {
    let before = cpu_seconds(pid, ticks)?;
    let st = perf.run(server, Load::Saturate { secs })?;
    let after = cpu_seconds(pid, ticks)?;
    let cpu_us = (after - before) * 1e6 / st.completed as f64;
    eprintln!(
        "bench dns: {label:8} {:>9.0} qps, avg {:.3} ms, {:.2} µs CPU/query, lost {}, NXDOMAIN {:.1} %",
        st.qps,
        st.avg_latency_ms,
        cpu_us,
        st.lost,
        st.rcode_pct("NXDOMAIN")
    );
    side.qps.push(st.qps);
    side.avg_ms.push(st.avg_latency_ms);
    side.cpu_us_per_query.push(cpu_us);
    Ok(())
}

/// One server's per-query latencies (ms) of the interleaved fixed-rate
/// runs, each run sorted.
struct Latencies(Vec<Vec<f64>>);

impl Latencies {
    /// The median over the runs of each run's percentile `p`: a burst of
    /// other work on the machine lands in one run and moves this less than
    /// a pooled percentile.
    fn median_of_runs(&self, p: f64) -> f64 {
        let per_run: Vec<f64> = self.0.iter().map(|r| percentile(r, p)).collect();
        median(&per_run)
    }

    fn per_run(&self, p: f64) -> Vec<f64> {
        self.0.iter().map(|r| percentile(r, p)).collect()
    }

    fn queries(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }
}

/// Per-query latencies of the stub and dnsmasq at a fixed rate.
fn fixed_rate(perf: &Perf, stub: IpAddr, qps: u64, cfg: &Config) -> Result<(Latencies, Latencies)> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let load = Load::Rate {
        qps,
        secs: cfg.lat_secs,
    };
    for _ in 0..cfg.lat_runs {
        for (server, runs) in [(stub, &mut ours), (IpAddr::V4(DNSMASQ_ADDR), &mut theirs)] {
            let mut st = perf.run(server, load)?;
            if st.latencies_ms.is_empty() {
                bail!("dnsperf -v against {server} reported no per-query latency");
            }
            st.latencies_ms.sort_by(|a, b| a.total_cmp(b));
            runs.push(st.latencies_ms);
        }
    }
    let (ours, theirs) = (Latencies(ours), Latencies(theirs));
    eprintln!(
        "bench dns: at {qps} qps: stub p50 {:.3} p99 {:.3} ms ({} queries), dnsmasq p50 {:.3} p99 {:.3} ms ({} queries); p99 per run {:.3?} vs {:.3?}",
        ours.median_of_runs(50.0),
        ours.median_of_runs(99.0),
        ours.queries(),
        theirs.median_of_runs(50.0),
        theirs.median_of_runs(99.0),
        theirs.queries(),
        ours.per_run(99.0),
        theirs.per_run(99.0),
    );
    Ok((ours, theirs))
}

fn check_helper(helper: &mut LabHelper) -> Result<()> {
    if !helper.is_running() {
        helper.print_log_tail(40);
        bail!("warrend exited");
    }
    Ok(())
}

fn measure(lab: &TunnelLab, cfg: &Config) -> Result<Vec<String>> {
    let ticks = clock_ticks()?;
    let dir = lab.dir.path();
    eprintln!(
        "bench dns: seeding {} workspaces with one agent each",
        cfg.workspaces
    );
    lab.coord.admin(&[
        "seed",
        "--owner",
        USER,
        "--workspaces",
        &cfg.workspaces.to_string(),
        "--agents-per-workspace",
        "1",
    ]);
    // The stub forwards outside names to what the file named before; this
    // bench asks none, so nothing needs to listen there.
    lab.net.own_resolv_conf("nameserver 127.0.0.1\n");
    let mut helper = lab.helper(HelperOptions::default().dns_mode("resolv-conf"));
    lab.login_up(&helper);
    let agents = cfg.workspaces as usize;
    let (zone, stub) = warren_e2e::poll_until(Duration::from_secs(60), || {
        zone_from_status(&netns::status_json(&helper.cli)?, agents)
    })
    .ok_or_else(|| {
        helper.print_log_tail(40);
        anyhow!("the helper did not list {agents} agents with names and addresses within 60 s")
    })?;
    eprintln!(
        "bench dns: the helper lists {agents} agents, {} names; stub on {stub}:53",
        zone.names.len()
    );
    // The status lists the directory; the stub gets the same names with
    // the same diff, but give it a moment rather than assume.
    let (last, _) = zone
        .names
        .last()
        .ok_or_else(|| anyhow!("the zone is empty"))?;
    let seen = warren_e2e::poll_until(Duration::from_secs(10), || {
        dig(&lab.net.laptop, stub, last, "A")
            .ok()
            .filter(|a| a.status == "NOERROR" && !a.rdata.is_empty())
    });
    if seen.is_none() {
        helper.print_log_tail(40);
        bail!("the stub on {stub} does not answer {last}");
    }

    let hosts = dir.join("dnsmasq.hosts");
    std::fs::write(&hosts, hosts_file(&zone)).context("write dnsmasq's hosts file")?;
    let mut dnsmasq = start_dnsmasq(lab, &hosts, &zone.suffix)?;
    // dnsmasq drops capabilities, which clears PR_SET_PDEATHSIG: on Ctrl-C
    // it would live on in the deleted namespace unless killed by pid.
    let _dnsmasq_leftover = register_guard(Leftover::Process(dnsmasq.pid()));
    let mut core = start_core(lab, &zone)?;
    let mut servers = vec![stub, IpAddr::V4(DNSMASQ_ADDR)];
    if core.is_some() {
        servers.push(IpAddr::V4(CORE_ADDR));
    }
    check_answers(&lab.net.laptop, &servers, &zone)?;
    let queries = dir.join("queries.txt");
    let (text, nxdomain_pct) = query_file(&zone);
    std::fs::write(&queries, &text).context("write the query file")?;
    eprintln!(
        "bench dns: {} queries in the file ({nxdomain_pct:.1} % NXDOMAIN); the servers agree on a sample",
        text.lines().count()
    );

    let perf = Perf {
        ns: &lab.net.laptop,
        queries: &queries,
        clients: cfg.clients,
        outstanding: cfg.outstanding,
        nxdomain_pct,
    };
    let (mut ours, mut theirs, mut core_side) = (Side::default(), Side::default(), Side::default());
    for run in 0..cfg.runs {
        eprintln!("bench dns: saturated run {}/{}", run + 1, cfg.runs);
        saturated(
            &perf,
            stub,
            helper.pid(),
            ticks,
            cfg.secs,
            &mut ours,
            "stub",
        )?;
        check_helper(&mut helper)?;
        let dm = IpAddr::V4(DNSMASQ_ADDR);
        saturated(
            &perf,
            dm,
            dnsmasq.pid(),
            ticks,
            cfg.secs,
            &mut theirs,
            BASELINE,
        )?;
        if !dnsmasq.is_running() {
            bail!("dnsmasq exited");
        }
        if let Some(core) = &mut core {
            let at = IpAddr::V4(CORE_ADDR);
            saturated(
                &perf,
                at,
                core.pid(),
                ticks,
                cfg.secs,
                &mut core_side,
                "stub-loop",
            )?;
            if !core.is_running() {
                bail!("the serve example exited");
            }
        }
    }
    let (low_ours, low_theirs) = fixed_rate(&perf, stub, cfg.low_qps, cfg)?;
    check_helper(&mut helper)?;
    let (loaded_ours, loaded_theirs) = fixed_rate(&perf, stub, cfg.loaded_qps, cfg)?;
    check_helper(&mut helper)?;

    let setup = format!(
        "{} names ({} workspaces × 1 agent, A+AAAA each), {:.0} % NXDOMAIN queries, dnsperf -c {} -q {} over UDP in the laptop namespace; stub on the helper's tunnel address, dnsmasq on {DNSMASQ_ADDR} with the same names from a hosts file",
        zone.names.len(),
        cfg.workspaces,
        nxdomain_pct,
        cfg.clients,
        cfg.outstanding
    );
    let pairs = |a: &[f64], b: &[f64]| -> String {
        a.iter()
            .zip(b)
            .map(|(x, y)| format!("{x:.0}/{y:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut summary = Vec::new();
    let (q_ours, q_theirs) = (median(&ours.qps), median(&theirs.qps));
    summary.push(format!(
        "qps: stub {q_ours:.0} vs dnsmasq {q_theirs:.0} → {:.2}× (target ≥ 1×)",
        q_ours / q_theirs
    ));
    emit(BENCH, Metric {
        name: "qps",
        value: q_ours,
        unit: "queries/s",
        better: Better::Higher,
        baseline: Some((BASELINE, q_theirs)),
        target: None,
        target_ratio: Some(1.0),
        note: Some(format!(
            "saturated, median of {} interleaved {} s runs (stub/dnsmasq per run: {}); dnsperf and the server share 2 cores, so this is partly dnsperf's limit; mean latency under saturation {:.2} vs {:.2} ms; load average at the end {}; {setup}",
            cfg.runs,
            cfg.secs,
            pairs(&ours.qps, &theirs.qps),
            median(&ours.avg_ms),
            median(&theirs.avg_ms),
            loadavg()
        )),
    });
    let (c_ours, c_theirs) = (
        median(&ours.cpu_us_per_query),
        median(&theirs.cpu_us_per_query),
    );
    summary.push(format!(
        "CPU per query: stub {c_ours:.2} µs vs dnsmasq {c_theirs:.2} µs → {:.2}×",
        c_theirs / c_ours
    ));
    emit(BENCH, Metric {
        name: "cpu_us_per_query",
        value: c_ours,
        unit: "us",
        better: Better::Lower,
        baseline: Some((BASELINE, c_theirs)),
        target: None,
        target_ratio: None,
        note: Some("utime+stime of the whole serving process (warrend with its idle tunnel, dnsmasq) per answered query during the saturated runs; median".into()),
    });
    if core.is_some() {
        let (q_core, c_core) = (median(&core_side.qps), median(&core_side.cpu_us_per_query));
        summary.push(format!(
            "for scale, the stub behind a blocking loop: {q_core:.0} qps ({:.2}× dnsmasq), {c_core:.2} µs CPU/query ({:.2}×)",
            q_core / q_theirs,
            c_theirs / c_core
        ));
        let why = "for scale, not the product: warren-dns's `serve` example (the same Stub behind one blocking UDP socket, no tokio) in the same namespace with the same names, interleaved with the runs above; the gap to `qps`/`cpu_us_per_query` is the helper's driver, not the stub";
        emit(
            BENCH,
            Metric {
                name: "qps_stub_blocking_loop",
                value: q_core,
                unit: "queries/s",
                better: Better::Higher,
                baseline: Some((BASELINE, q_theirs)),
                target: None,
                target_ratio: None,
                note: Some(format!(
                    "{why}; per run: {}",
                    core_side
                        .qps
                        .iter()
                        .map(|q| format!("{q:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        );
        emit(
            BENCH,
            Metric {
                name: "cpu_us_per_query_stub_blocking_loop",
                value: c_core,
                unit: "us",
                better: Better::Lower,
                baseline: Some((BASELINE, c_theirs)),
                target: None,
                target_ratio: None,
                note: Some(why.into()),
            },
        );
    }
    let pairs3 = |a: &[f64], b: &[f64]| -> String {
        a.iter()
            .zip(b)
            .map(|(x, y)| format!("{x:.3}/{y:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, p, o, t, qps, target) in [
        ("p50_ms", 50.0, &low_ours, &low_theirs, cfg.low_qps, None),
        (
            "p99_ms",
            99.0,
            &low_ours,
            &low_theirs,
            cfg.low_qps,
            Some(1.0),
        ),
        (
            "p99_ms_loaded",
            99.0,
            &loaded_ours,
            &loaded_theirs,
            cfg.loaded_qps,
            None,
        ),
    ] {
        let (v_ours, v_theirs) = (o.median_of_runs(p), t.median_of_runs(p));
        summary.push(format!(
            "{name} at {qps} qps: stub {v_ours:.3} ms vs dnsmasq {v_theirs:.3} ms → {:.2}×{}",
            v_theirs / v_ours,
            if target.is_some() {
                " (target ≤ 1 ms)"
            } else {
                ""
            }
        ));
        emit(BENCH, Metric {
            name,
            value: v_ours,
            unit: "ms",
            better: Better::Lower,
            baseline: Some((BASELINE, v_theirs)),
            target,
            target_ratio: None,
            note: Some(format!(
                "dnsperf -v per-query latency at a fixed {qps} queries/s: median over {} interleaved {} s runs of each run's percentile (stub/dnsmasq per run: {}; {} / {} queries); a lost query counts as {QUERY_TIMEOUT_S} s; load average at the end {}",
                cfg.lat_runs,
                cfg.lat_secs,
                pairs3(&o.per_run(p), &t.per_run(p)),
                o.queries(),
                t.queries(),
                loadavg(),
            )),
        });
    }
    dnsmasq.terminate(Duration::from_secs(3));
    if let Some(mut core) = core {
        core.terminate(Duration::from_secs(3));
    }
    helper.terminate(Duration::from_secs(10));
    Ok(summary)
}

fn main() {
    warren_bench::lab::run_in_lab(BENCH, preflight, Config::from_env, measure);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dnsperf_statistics_and_verbose_lines_parse() {
        let out = "\
[Status] Testing complete (time limit)
> NOERROR a0.ws-00001.alice.warren A 0.000218
> NXDOMAIN nope1.warren AAAA 0.001212
> T ws-00002.warren A
Statistics:

  Queries sent:         92496
  Queries completed:    92490 (99.99%)
  Queries lost:         6 (0.01%)

  Response codes:       NOERROR 73999 (80.00%), NXDOMAIN 18491 (20.00%)
  Average packet size:  request 36, response 53
  Run time (s):         3.023319
  Queries per second:   30594.191351

  Average Latency (s):  0.002773 (min 0.000027, max 0.072203)
  Latency StdDev (s):   0.003421
";
        let st = parse_dnsperf(out).unwrap();
        assert_eq!((st.sent, st.completed, st.lost), (92496, 92490, 6));
        assert!((st.qps - 30594.19).abs() < 0.01);
        assert!((st.avg_latency_ms - 2.773).abs() < 1e-9);
        assert_eq!(
            st.rcodes,
            vec![("NOERROR".into(), 73999), ("NXDOMAIN".into(), 18491)]
        );
        assert!((st.rcode_pct("NXDOMAIN") - 19.993).abs() < 0.01);
        assert_eq!(st.latencies_ms.len(), 3);
        assert!((st.latencies_ms[0] - 0.218).abs() < 1e-9);
        assert_eq!(st.latencies_ms[2], QUERY_TIMEOUT_S * 1000.0);
        assert!(parse_dnsperf("dnsperf: error").is_err());
    }

    #[test]
    fn latency_figures_are_the_median_of_each_runs_percentile() {
        let quiet: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
        let mut burst = quiet.clone();
        // A compile job lands in one run: its tail is ten times worse.
        for v in burst.iter_mut().skip(90) {
            *v *= 10.0;
        }
        let l = Latencies(vec![quiet.clone(), burst, quiet]);
        assert_eq!(l.per_run(99.0), vec![0.99, 9.9, 0.99]);
        assert_eq!(l.median_of_runs(99.0), 0.99);
        assert_eq!(l.median_of_runs(50.0), 0.5);
        assert_eq!(l.queries(), 300);
    }

    #[test]
    fn dig_output_gives_status_and_sorted_rdata() {
        let out = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

ws-00001.warren.\t60\tIN\tA\t100.64.0.9
ws-00001.warren.\t60\tIN\tA\t100.64.0.3
";
        let a = parse_dig(out).unwrap();
        assert_eq!(a.status, "NOERROR");
        assert_eq!(a.rdata, vec!["100.64.0.3", "100.64.0.9"]);
        assert!(parse_dig("connection timed out").is_err());
    }

    fn zone() -> Zone {
        Zone {
            suffix: "warren".into(),
            names: (0..50)
                .flat_map(|i| {
                    let addrs = vec![
                        IpAddr::V4(Ipv4Addr::new(100, 64, 0, i as u8 + 1)),
                        format!("fd00::{:x}", i + 1).parse().unwrap(),
                    ];
                    [
                        (format!("a0.ws-{i:05}.alice.warren"), addrs.clone()),
                        (format!("ws-{i:05}.warren"), addrs),
                    ]
                })
                .collect(),
        }
    }

    #[test]
    fn query_file_asks_every_name_both_ways_and_some_missing_ones() {
        let z = zone();
        let (text, pct) = query_file(&z);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200 + 200 / (NXDOMAIN_EVERY - 1));
        for (name, _) in &z.names {
            assert!(lines.contains(&format!("{name} A").as_str()));
            assert!(lines.contains(&format!("{name} AAAA").as_str()));
        }
        let missing = lines
            .iter()
            .filter(|l| l.starts_with("gone") || l.starts_with("nope"))
            .count();
        assert!((pct - missing as f64 * 100.0 / lines.len() as f64).abs() < 1e-9);
        assert!(pct > 9.0 && pct < 11.0, "{pct}");
        // Shuffled, and the same every time.
        assert_ne!(lines[0], "a0.ws-00000.alice.warren A");
        assert_eq!(query_file(&z).0, text);
    }

    #[test]
    fn hosts_file_has_a_line_per_address_and_name() {
        let z = zone();
        let h = hosts_file(&z);
        assert_eq!(h.lines().count(), 200);
        assert!(h.contains("100.64.0.1 a0.ws-00000.alice.warren\n"));
        assert!(h.contains("fd00::1 ws-00000.warren\n"));
    }

    #[test]
    fn zone_waits_for_every_agent_with_names_and_addresses() {
        let agent = |addrs: Vec<&str>| json!({"id": "a", "addresses": addrs, "dns_names": ["a0.ws-00000.alice.warren", "ws-00000.warren"]});
        let status = |agents: Vec<Value>| {
            json!({
                "session": {"state": "connected",
                            "device": {"addresses": ["fd00::9", "100.64.0.9"]},
                            "deployment": {"suffix": "warren"}},
                "agents": agents,
            })
        };
        let full = status(vec![agent(vec!["100.64.0.1", "fd00::1"])]);
        let (z, stub) = zone_from_status(&full, 1).unwrap();
        assert_eq!(stub, IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9)));
        assert_eq!(z.suffix, "warren");
        assert_eq!(z.names.len(), 2);
        assert!(zone_from_status(&full, 2).is_none());
        assert!(zone_from_status(&status(vec![agent(vec![])]), 1).is_none());
        let mut connecting = full.clone();
        connecting["session"]["state"] = json!("connecting");
        assert!(zone_from_status(&connecting, 1).is_none());
    }
}
