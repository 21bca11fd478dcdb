//! A two-host lab for the data plane's end-to-end tests and the tunnel bench:
//! a "laptop" and a "workspace" network namespace joined by a veth pair (IPv4
//! and IPv6 on both ends), a coordinator serving TLS from a throwaway CA in
//! the workspace namespace, `warren-agent`s and plain WireGuard peers in the
//! workspace, and `warrend` with its TUN in the laptop namespace.
//!
//! Everything is torn down on drop, also when the test panics: processes are
//! killed by their [`Proc`] guards and the namespaces deleted by
//! [`Namespaces`] (which takes their veth ends and any TUN inside with them).
//! Names come from [`crate::unique`], so tests run in parallel. A machine
//! that can't run them (not root, no `/dev/net/tun`, a missing tool) fails
//! them, unless `WARREN_ALLOW_SKIP=1` says skipping is fine there.
//!
//! ```no_run
//! use warren_e2e::netns::{TunnelLab, AgentOptions, HelperOptions};
//! if let Some(lab) = TunnelLab::start_or_skip("example", &[]) {
//!     let (_http, page) = lab.serve_page("www", 8080);
//!     let _agent = lab.agent(AgentOptions::new("ws", "api").allow_ports("8080"));
//!     let helper = lab.helper(HelperOptions::default());
//!     lab.login_up(&helper);
//!     let v4 = lab.wait_agent(&helper, "ws", "api").v4();
//!     let r = lab.curl(&["-s", "--max-time", "3", &format!("http://{v4}:8080/")]);
//!     assert_eq!(r.text(), page);
//! }
//! ```

use crate::helper::{assert_success, Cli, Status};
use crate::proc::{child_rust_log, die_with_parent, Proc};
use crate::{bin, poll_until, unique, TestDir};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use warren_proto::ipc::SessionState;
use warren_proto::model::Agent;

/// The user every lab signs in as.
pub const USER: &str = "alice";

/// Why this machine can't run namespace tests, if it can't: not root, no
/// `/dev/net/tun`, or a missing tool (`ip`, `curl`, `python3`, `openssl`
/// plus `extra_tools`).
pub fn skip_reason(extra_tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces and a TUN".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for tool in ["ip", "curl", "python3", "openssl"]
        .iter()
        .chain(extra_tools)
    {
        if !tool_exists(tool) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// `true` if the test can run. Otherwise it fails with the reason, unless
/// `WARREN_ALLOW_SKIP=1` is set ([`crate::run_or_skip`]): then it prints why
/// and returns `false`.
pub fn can_run(test: &str, extra_tools: &[&str]) -> bool {
    crate::run_or_skip(test, skip_reason(extra_tools).as_deref())
}

/// Whether `tool` is on the PATH.
pub fn tool_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip ARGS`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = ip_try(args);
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip ARGS` and returns whatever happened.
pub fn ip_try(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"))
}

/// `warren login --url URL --token-stdin --ca CA` inside `ns` (it checks
/// the token with the coordinator, which only the namespace reaches),
/// handing it `token` on stdin; panics unless it succeeds.
pub fn login_in_netns(ns: &str, cli: &Cli, url: &str, ca: &std::path::Path, token: &str) {
    let ca = ca.to_string_lossy().into_owned();
    let login = ["login", "--url", url, "--token-stdin", "--ca", &ca];
    let inner = cli.command(&login);
    let mut cmd = ns_command(ns, inner.get_program());
    cmd.args(inner.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("start warren login");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{token}").expect("hand the token to warren login");
    }
    let out = child.wait_with_output().expect("run warren login");
    assert_success(&out, &login);
}

/// `program` run inside namespace `ns` (via `ip netns exec`).
pub fn ns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Runs `wg ARGS` inside `ns`, feeding it `stdin` if given; panics with
/// wg's stderr on failure. Returns its trimmed stdout.
pub fn wg_in(ns: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = ns_command(ns, "wg")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run wg {args:?}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("feed wg {args:?}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("run wg {args:?}: {e}"));
    assert!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ip -n NS ARGS`, which must succeed.
pub fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all);
}

/// Runs `f` on a fresh thread that has entered network namespace `ns` and
/// returns its result. Sockets created inside stay in `ns` wherever they are
/// used afterwards, so a test can own a UDP socket in the workspace
/// namespace (a relay, a fake peer) without a helper process.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a namespace fd we hold open; it only changes this
        // thread's network namespace, and the thread ends after `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns into {path}: {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A random port in 20000..60000 (free in a fresh namespace, where nothing
/// else listens).
pub fn random_port() -> u16 {
    20_000 + (rand::random::<u16>() % 40_000)
}

/// Two namespaces joined by a veth pair with an IPv4 /30 and an IPv6 /64
/// (documentation range, so it never overlaps the deployment's ULA); both
/// deleted on drop, even on failure.
pub struct Namespaces {
    pub laptop: String,
    pub workspace: String,
    pub laptop_veth: String,
    pub workspace_veth: String,
    pub laptop_ip: Ipv4Addr,
    pub workspace_ip: Ipv4Addr,
    pub laptop_ip6: Ipv6Addr,
    pub workspace_ip6: Ipv6Addr,
}

impl Namespaces {
    pub fn create() -> Namespaces {
        let r: u32 = rand::random();
        let (a, b) = (((r >> 8) & 0xff) as u8, (r & 0xfc) as u8);
        let h: u16 = rand::random();
        let suffix = format!("{:06x}", r >> 8);
        let ns = Namespaces {
            laptop: unique("wlap"),
            workspace: unique("wws"),
            laptop_veth: format!("wva{suffix}"),
            workspace_veth: format!("wvb{suffix}"),
            laptop_ip: Ipv4Addr::new(10, a, b, 1),
            workspace_ip: Ipv4Addr::new(10, a, b, 2),
            laptop_ip6: Ipv6Addr::new(0x2001, 0xdb8, h, (r >> 16) as u16, 0, 0, 0, 1),
            workspace_ip6: Ipv6Addr::new(0x2001, 0xdb8, h, (r >> 16) as u16, 0, 0, 0, 2),
        };
        // From here on, drop deletes whatever part already exists.
        ip(&["netns", "add", &ns.laptop]);
        ip(&["netns", "add", &ns.workspace]);
        ip(&[
            "link",
            "add",
            &ns.laptop_veth,
            "netns",
            &ns.laptop,
            "type",
            "veth",
            "peer",
            "name",
            &ns.workspace_veth,
            "netns",
            &ns.workspace,
        ]);
        for (n, dev, v4, v6) in [
            (&ns.laptop, &ns.laptop_veth, ns.laptop_ip, ns.laptop_ip6),
            (
                &ns.workspace,
                &ns.workspace_veth,
                ns.workspace_ip,
                ns.workspace_ip6,
            ),
        ] {
            ip(&["-n", n, "addr", "add", &format!("{v4}/30"), "dev", dev]);
            // nodad: usable at once instead of after duplicate detection.
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// `program` inside the laptop namespace.
    pub fn laptop_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        ns_command(&self.laptop, program)
    }

    /// `program` inside the workspace namespace.
    pub fn workspace_cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        ns_command(&self.workspace, program)
    }

    /// Gives the laptop namespace its own `/etc/resolv.conf` with `content`:
    /// `ip netns exec` bind-mounts `/etc/netns/<ns>/resolv.conf` over it, so
    /// a helper there can manage DNS without touching the host's file.
    /// Returns the file's path on the host.
    pub fn own_resolv_conf(&self, content: &str) -> PathBuf {
        let dir = Path::new("/etc/netns").join(&self.laptop);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        let path = dir.join("resolv.conf");
        std::fs::write(&path, content).expect("write the namespace's resolv.conf");
        path
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.laptop, &self.workspace] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(n));
        }
    }
}

/// Writes `value` to a new 0600 file.
pub fn write_secret(path: &Path, value: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    writeln!(f, "{value}").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA in `dir` (`ca.pem`) and a server certificate
/// (`server.pem`, `server.key`) for the addresses `ips` (the coordinator
/// refuses plain HTTP off loopback). Returns the CA file clients trust.
pub fn make_tls(dir: &Path, ips: &[IpAddr]) -> PathBuf {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=warren-test-ca",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=warren-test",
    ]);
    openssl(dir, &csr);
    let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .expect("write the certificate extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    dir.join("ca.pem")
}

/// The outcome of one `curl` run in a namespace.
#[derive(Debug)]
pub struct CurlResult {
    /// curl's exit code (0 ok, 7 could not connect, 28 timed out, ...);
    /// -1 if it died from a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CurlResult {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `curl ARGS` inside `ns` (callers pass `--max-time`; curl's own
/// limit bounds the run).
pub fn curl_in(ns: &str, args: &[&str]) -> CurlResult {
    let start = Instant::now();
    let out = ns_command(ns, "curl")
        .arg("-g")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run curl {args:?} in {ns}: {e}"));
    CurlResult {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// `http://ADDR:PORT/PATH` with IPv6 addresses bracketed.
pub fn http_url(addr: IpAddr, port: u16, path: &str) -> String {
    let path = path.trim_start_matches('/');
    format!("http://{}/{path}", SocketAddr::new(addr, port))
}

/// Whether a link named `name` exists in `ns`.
pub fn link_exists(ns: &str, name: &str) -> bool {
    ip_try(&["-n", ns, "link", "show", name]).status.success()
}

/// The IPv4 and IPv6 routes in `ns` (all tables) that go through `dev` or
/// cover one of `prefixes` (e.g. the deployment's `100.64.0.0/10` and ULA
/// /48); empty means the helper left no route behind.
pub fn routes_matching(ns: &str, dev: &str, prefixes: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for family in ["-4", "-6"] {
        let out = ip_try(&["-n", ns, family, "route", "show", "table", "all"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let via_dev = words.windows(2).any(|w| w[0] == "dev" && w[1] == dev);
            let covers = prefixes.iter().any(|p| {
                let p = p.trim();
                !p.is_empty() && words.contains(&p)
            });
            if via_dev || covers {
                found.push(format!("{family} {line}"));
            }
        }
    }
    found
}

/// A process serving a directory over HTTP on `127.0.0.1:PORT` inside a
/// namespace (`python3 -m http.server`); ready once it accepts.
pub fn http_server(dir: &Path, name: &str, ns: &str, port: u16, root: &Path) -> Proc {
    http_server_on(dir, name, ns, IpAddr::V4(Ipv4Addr::LOCALHOST), port, root)
}

/// Like [`http_server`], on any local address of `ns` (e.g. a WireGuard
/// interface's tunnel address).
pub fn http_server_on(
    dir: &Path,
    name: &str,
    ns: &str,
    bind: IpAddr,
    port: u16,
    root: &Path,
) -> Proc {
    let mut cmd = ns_command(ns, "python3");
    cmd.args(["-m", "http.server"])
        .arg(port.to_string())
        .arg("--bind")
        .arg(bind.to_string())
        .arg("--directory")
        .arg(root);
    let mut p = Proc::spawn(name, dir, cmd, false);
    let probe = http_url(bind, port, "");
    let up = poll_until(Duration::from_secs(10), || {
        curl_in(ns, &["-s", "-o", "/dev/null", "--max-time", "1", &probe])
            .ok()
            .then_some(())
    });
    if up.is_none() {
        p.print_log_tail(20);
        panic!("the HTTP server {name} did not start on {probe} in {ns}");
    }
    assert!(p.is_running(), "{name} exited");
    p
}

/// Sends one ICMP echo request (v4 or v6, raw socket) from namespace `ns`
/// to `dst` and waits up to `timeout` for its reply; returns the round trip.
/// In-process, so the tests need no `ping` binary.
pub fn icmp_ping(ns: &str, dst: IpAddr, timeout: Duration) -> Option<Duration> {
    in_netns(ns, move || icmp_ping_here(dst, timeout))
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn icmp_ping_here(dst: IpAddr, timeout: Duration) -> Option<Duration> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (domain, proto, request, reply) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    // SAFETY: plain socket(2); the fd is owned (and closed) by `sock`.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(
        fd >= 0,
        "open a raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: setsockopt with a timeval of the size we pass.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let id: u16 = rand::random();
    let mut msg = vec![request, 0, 0, 0];
    msg.extend(id.to_be_bytes());
    msg.extend(1u16.to_be_bytes());
    msg.extend(b"warren-e2e-ping!");
    if dst.is_ipv4() {
        // The kernel fills the ICMPv6 checksum itself, not the ICMPv4 one.
        let c = icmp_checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    // SAFETY: zeroed sockaddr_storage is a valid "unspecified" address that
    // we fill for the right family below.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match dst {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    let start = Instant::now();
    // SAFETY: msg and ss outlive the call; len matches the address family.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        )
    };
    if sent < 0 {
        return None;
    }
    let mut buf = [0u8; 2048];
    while start.elapsed() < timeout {
        // SAFETY: recv into a buffer of the length we pass.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let pkt = &buf[..n as usize];
        // Raw IPv4 sockets deliver the IP header too (and every ICMP packet
        // the namespace receives, so check the source).
        let icmp = match dst {
            IpAddr::V4(a) => {
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                if pkt.len() < ihl.max(20) || pkt[12..16] != a.octets() {
                    continue;
                }
                &pkt[ihl..]
            }
            IpAddr::V6(_) => pkt,
        };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() {
            return Some(start.elapsed());
        }
    }
    None
}

/// `wireguard-go` running in the foreground in a namespace, with its UAPI
/// socket in `/var/run/wireguard`. Dropping it sends SIGTERM first so
/// wireguard-go removes its interface and socket itself; the socket file of
/// one that had to be killed is removed too.
pub struct WireguardGo {
    pub ifname: String,
    pub ns: String,
    proc: Proc,
}

impl WireguardGo {
    /// Starts `wireguard-go IFNAME` in `ns` (a unique `wgt…` name) and waits
    /// until the interface and its control socket exist.
    pub fn start(dir: &Path, ns: &str) -> WireguardGo {
        let ifname = format!("wgt{:06x}", rand::random::<u32>() & 0xff_ffff);
        let mut cmd = ns_command(ns, "wireguard-go");
        cmd.arg(&ifname)
            .env("WG_PROCESS_FOREGROUND", "1")
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .env("LOG_LEVEL", "verbose");
        let wg = WireguardGo {
            proc: Proc::spawn(&format!("wireguard-go-{ifname}"), dir, cmd, false),
            ns: ns.to_string(),
            ifname,
        };
        let up = poll_until(Duration::from_secs(10), || {
            (link_exists(ns, &wg.ifname) && wg.uapi_socket().exists()).then_some(())
        });
        if up.is_none() {
            wg.proc.print_log_tail(40);
            panic!("wireguard-go did not create {}", wg.ifname);
        }
        wg
    }

    /// The UAPI socket `wg` talks to.
    pub fn uapi_socket(&self) -> PathBuf {
        Path::new("/var/run/wireguard").join(format!("{}.sock", self.ifname))
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn print_log_tail(&self, lines: usize) {
        self.proc.print_log_tail(lines);
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(3));
        let _ = std::fs::remove_file(self.uapi_socket());
    }
}

/// The coordinator serving TLS on the workspace's veth address.
pub struct LabCoordinator {
    pub db: PathBuf,
    /// `https://WORKSPACE_IP:PORT`.
    pub url: String,
    /// The CA the coordinator's certificate chains to.
    pub ca: PathBuf,
    pub proc: Proc,
}

impl LabCoordinator {
    /// Runs an admin command (`warren-coord --db DB ARGS`) that must succeed;
    /// returns its trimmed stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(bin("warren-coord"));
        cmd.arg("--db")
            .arg(&self.db)
            .args(args)
            .env("RUST_LOG", child_rust_log())
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run warren-coord {args:?}: {e}"));
        assert!(
            out.status.success(),
            "warren-coord {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// How to start a `warren-agent` (see [`TunnelLab::agent`]).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub workspace: String,
    pub name: String,
    /// The agent's UDP port.
    pub listen_port: u16,
    /// `--allow-ports`.
    pub allow_ports: String,
    /// `--endpoint`s; empty means the workspace's veth IPv4 and `listen_port`.
    pub endpoints: Vec<SocketAddr>,
}

impl AgentOptions {
    pub fn new(workspace: &str, name: &str) -> Self {
        AgentOptions {
            workspace: workspace.to_string(),
            name: name.to_string(),
            listen_port: 51820,
            allow_ports: "8080".to_string(),
            endpoints: Vec::new(),
        }
    }

    pub fn allow_ports(mut self, ports: &str) -> Self {
        self.allow_ports = ports.to_string();
        self
    }

    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    pub fn endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoints.push(endpoint);
        self
    }
}

/// A `warren-agent` in the workspace namespace, with its own token and key
/// files; can be stopped and started again, with the same or a new key.
pub struct LabAgent {
    pub options: AgentOptions,
    pub token_file: PathBuf,
    /// Where the agent keeps its WireGuard key across restarts.
    pub key_file: PathBuf,
    dir: PathBuf,
    workspace_ns: String,
    coordinator: String,
    ca: PathBuf,
    starts: u32,
    proc: Option<Proc>,
}

impl LabAgent {
    /// Starts the agent (again); its log is `agent-<name>-<n>.stderr`.
    pub fn start(&mut self) {
        assert!(
            self.proc.is_none(),
            "agent {} already runs",
            self.options.name
        );
        self.starts += 1;
        let mut cmd = ns_command(&self.workspace_ns, bin("warren-agent"));
        cmd.arg("--coordinator")
            .arg(&self.coordinator)
            .arg("--token-file")
            .arg(&self.token_file)
            .arg("--key-file")
            .arg(&self.key_file)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--listen-port")
            .arg(self.options.listen_port.to_string())
            .arg("--allow-ports")
            .arg(&self.options.allow_ports);
        for e in &self.options.endpoints {
            cmd.arg("--endpoint").arg(e.to_string());
        }
        cmd.env("RUST_LOG", child_rust_log());
        let name = format!("agent-{}-{}", self.options.name, self.starts);
        self.proc = Some(Proc::spawn(&name, &self.dir, cmd, false));
    }

    /// SIGTERM (then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(5));
        }
    }

    /// Stops and starts it with the same key.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Stops it, deletes its key file and starts it: it comes back with a
    /// new WireGuard key, as a rebuilt workspace would.
    pub fn restart_with_new_key(&mut self) {
        self.stop();
        match std::fs::remove_file(&self.key_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("delete {}: {e}", self.key_file.display()),
        }
        self.start();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    /// The current run's process, if started.
    pub fn proc(&self) -> Option<&Proc> {
        self.proc.as_ref()
    }

    pub fn print_log_tail(&self, lines: usize) {
        if let Some(p) = &self.proc {
            p.print_log_tail(lines);
        }
    }
}

/// How to start `warrend` (see [`TunnelLab::helper`]).
#[derive(Debug, Clone)]
pub struct HelperOptions {
    pub tun_name: String,
    /// `--listen-port` (0: the OS picks).
    pub listen_port: u16,
    /// Directory name under the lab dir for `--state-dir`; a helper started
    /// with the same one finds its predecessor's journal.
    pub state_dir: String,
    /// `--dns-mode`. Off by default: in `auto` a helper whose namespace has
    /// no `/etc/netns/<ns>/resolv.conf` would rewrite the host's own
    /// `/etc/resolv.conf`, which parallel tests must never touch.
    pub dns_mode: String,
}

impl Default for HelperOptions {
    fn default() -> Self {
        HelperOptions {
            tun_name: "warren0".to_string(),
            listen_port: 0,
            state_dir: "helper-state".to_string(),
            dns_mode: "off".to_string(),
        }
    }
}

impl HelperOptions {
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    /// `--dns-mode` (e.g. `resolv-conf` once the laptop namespace has its
    /// own resolv.conf, see [`Netns::own_resolv_conf`]).
    pub fn dns_mode(mut self, mode: &str) -> Self {
        self.dns_mode = mode.to_string();
        self
    }
}

/// `warrend` with its data plane in the laptop namespace.
pub struct LabHelper {
    pub options: HelperOptions,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    /// The CLI pointed at this helper (runs in the root namespace; only
    /// `login` needs the laptop's network, see [`TunnelLab::login_up`]).
    pub cli: Cli,
    proc: Proc,
}

impl LabHelper {
    /// `<state-dir>/netstate.json`, the record of the helper's OS changes.
    pub fn journal(&self) -> PathBuf {
        self.state_dir.join("netstate.json")
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn print_log_tail(&self, lines: usize) {
        self.proc.print_log_tail(lines);
    }

    /// SIGTERM, SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        self.proc.terminate(grace);
    }

    /// SIGKILL: the helper crashes with its TUN, routes and journal in place.
    pub fn kill9(&mut self) {
        self.proc.kill();
    }
}

/// One agent's entry in `warren status --json`, with the tunnel figures
/// the typed [`Status`] leaves out.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub agent: Agent,
    /// The `tunnel` object (`handshake`, `last_handshake_ms`, `rx_bytes`,
    /// ...), once the helper reported figures.
    pub tunnel: Option<serde_json::Value>,
}

impl AgentView {
    /// The agent's IPv4 tunnel address (panics if it has none).
    pub fn v4(&self) -> IpAddr {
        self.agent
            .addresses
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .expect("the coordinator gives every agent an IPv4 tunnel address")
    }

    /// The agent's IPv6 tunnel address (panics if it has none).
    pub fn v6(&self) -> IpAddr {
        self.agent
            .addresses
            .iter()
            .copied()
            .find(IpAddr::is_ipv6)
            .expect("the coordinator gives every agent an IPv6 tunnel address")
    }

    /// `tunnel.handshake`: `"recent"`, `"stale"` or `"never"`.
    pub fn handshake(&self) -> Option<String> {
        Some(
            self.tunnel
                .as_ref()?
                .get("handshake")?
                .as_str()?
                .to_string(),
        )
    }

    /// `tunnel.last_handshake_ms`.
    pub fn last_handshake_ms(&self) -> Option<u64> {
        self.tunnel.as_ref()?.get("last_handshake_ms")?.as_u64()
    }
}

/// `warren status --json` as raw JSON (keeps the `tunnel` objects).
pub fn status_json(cli: &Cli) -> Option<serde_json::Value> {
    let out = cli.run(&["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The agent `ws/name` in a raw status.
pub fn agent_view(status: &serde_json::Value, ws: &str, name: &str) -> Option<AgentView> {
    let typed: Status = serde_json::from_value(status.clone()).ok()?;
    let agent = typed.agent_named(ws, name)?.clone();
    let tunnel = status
        .get("agents")?
        .as_array()?
        .iter()
        .find(|a| a.get("id").and_then(|v| v.as_str()) == Some(agent.id.as_str()))?
        .get("tunnel")
        .filter(|t| !t.is_null())
        .cloned();
    Some(AgentView { agent, tunnel })
}

/// The lab: a test dir, the two namespaces, a TLS coordinator in the
/// workspace namespace and a user ([`USER`]) with a token.
///
/// Field order is drop order: processes die before the namespaces go.
pub struct TunnelLab {
    pub coord: LabCoordinator,
    pub user_token: String,
    workspaces: std::sync::Mutex<std::collections::HashSet<String>>,
    pub net: Namespaces,
    pub dir: TestDir,
}

impl TunnelLab {
    /// [`can_run`] and then [`TunnelLab::start`]; `None` only when the
    /// machine can't run it and `WARREN_ALLOW_SKIP=1` allows the skip.
    pub fn start_or_skip(name: &str, extra_tools: &[&str]) -> Option<TunnelLab> {
        can_run(name, extra_tools).then(|| TunnelLab::start(name))
    }

    /// Creates the namespaces, starts the coordinator and adds [`USER`].
    pub fn start(name: &str) -> TunnelLab {
        let dir = TestDir::new(name);
        let net = Namespaces::create();
        let ca = make_tls(
            dir.path(),
            &[IpAddr::V4(net.workspace_ip), IpAddr::V6(net.workspace_ip6)],
        );
        let db = dir.join("coord.db");
        let mut cmd = net.workspace_cmd(bin("warren-coord"));
        cmd.arg("serve")
            .arg("--db")
            .arg(&db)
            .arg("--listen")
            .arg(format!("{}:0", net.workspace_ip))
            .arg("--tls-cert")
            .arg(dir.join("server.pem"))
            .arg("--tls-key")
            .arg(dir.join("server.key"))
            .env("RUST_LOG", child_rust_log())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("coord", dir.path(), cmd, true);
        let url = crate::coord::listening_url(&mut proc, &dir.join("coord.stdout"));
        let coord = LabCoordinator { db, url, ca, proc };
        coord.admin(&["user", "add", USER]);
        let user_token = coord.admin(&["token", "create", USER]);
        TunnelLab {
            coord,
            user_token,
            workspaces: Default::default(),
            net,
            dir,
        }
    }

    /// Adds a workspace of [`USER`] (idempotent within a lab).
    pub fn ensure_workspace(&self, ws: &str) {
        let mut added = self
            .workspaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if added.insert(ws.to_string()) {
            self.coord.admin(&["workspace", "add", "--owner", USER, ws]);
        }
    }

    /// Registers `warren-agent` `options.name` in `options.workspace` (added
    /// if needed) and starts it in the workspace namespace.
    pub fn agent(&self, mut options: AgentOptions) -> LabAgent {
        self.ensure_workspace(&options.workspace);
        let token = self.coord.admin(&[
            "agent",
            "add",
            "--owner",
            USER,
            "--workspace",
            &options.workspace,
            &options.name,
        ]);
        if options.endpoints.is_empty() {
            options.endpoints.push(SocketAddr::new(
                IpAddr::V4(self.net.workspace_ip),
                options.listen_port,
            ));
        }
        let token_file = self.dir.join(&format!("agent-{}.token", options.name));
        write_secret(&token_file, &token);
        let mut agent = LabAgent {
            key_file: self.dir.join(&format!("agent-{}.key", options.name)),
            token_file,
            dir: self.dir.path().to_path_buf(),
            workspace_ns: self.net.workspace.clone(),
            coordinator: self.coord.url.clone(),
            ca: self.coord.ca.clone(),
            starts: 0,
            proc: None,
            options,
        };
        agent.start();
        agent
    }

    /// Registers a plain WireGuard peer (not `warren-agent`) as agent
    /// `ws/name` with `public_key` and `endpoints`.
    pub fn add_wireguard_peer(
        &self,
        ws: &str,
        name: &str,
        public_key: &str,
        endpoints: &[SocketAddr],
    ) {
        self.ensure_workspace(ws);
        let mut args = vec![
            "agent".to_string(),
            "add".into(),
            "--owner".into(),
            USER.into(),
            "--workspace".into(),
            ws.into(),
            name.into(),
            "--public-key".into(),
            public_key.into(),
        ];
        for e in endpoints {
            args.push("--endpoint".into());
            args.push(e.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.coord.admin(&args);
    }

    /// Starts `warrend` in the laptop namespace and waits for its socket.
    /// One helper at a time per lab: they share `<dir>/helper.sock` and the
    /// CLI config (a successor started after [`LabHelper::kill9`] or
    /// [`LabHelper::terminate`] finds the CLI still signed in).
    pub fn helper(&self, options: HelperOptions) -> LabHelper {
        // A helper managing DNS in a namespace without its own resolv.conf
        // would rewrite the host's /etc/resolv.conf: refuse before starting.
        let own = Path::new("/etc/netns")
            .join(&self.net.laptop)
            .join("resolv.conf");
        assert!(
            options.dns_mode == "off" || own.is_file(),
            "a helper with --dns-mode {} needs the laptop namespace's own resolv.conf first (Namespaces::own_resolv_conf); it would change the host's /etc/resolv.conf",
            options.dns_mode
        );
        let socket = self.dir.join("helper.sock");
        let log_dir = self.dir.join("helper-logs");
        let state_dir = self.dir.join(&options.state_dir);
        std::fs::create_dir_all(&log_dir).expect("create the helper log dir");
        // A stale socket file of a killed predecessor must not count as ready.
        let _ = std::fs::remove_file(&socket);
        let n = (1..)
            .find(|i| !self.dir.join(&format!("warrend-{i}.stderr")).exists())
            .expect("some free log name");
        let mut cmd = self.net.laptop_cmd(bin("warrend"));
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--group", "root", "--log-dir"])
            .arg(&log_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--tun-name")
            .arg(&options.tun_name)
            .arg("--listen-port")
            .arg(options.listen_port.to_string())
            .arg("--dns-mode")
            .arg(&options.dns_mode)
            .env("RUST_LOG", child_rust_log())
            .env("WARREN_BACKOFF_MAX_MS", crate::helper::TEST_BACKOFF_MAX_MS);
        let mut proc = Proc::spawn(&format!("warrend-{n}"), self.dir.path(), cmd, false);
        crate::helper::wait_for_socket(&mut proc, &socket);
        let cli = Cli::new(&socket, &self.dir.join("cli-config"));
        LabHelper {
            options,
            socket,
            state_dir,
            log_dir,
            cli,
            proc,
        }
    }

    /// `warren login` (run in the laptop namespace: it checks the token with
    /// the coordinator), `warren up`, and waits until connected.
    pub fn login_up(&self, helper: &LabHelper) -> Status {
        let cli = &helper.cli;
        login_in_netns(
            &self.net.laptop,
            cli,
            &self.coord.url,
            &self.coord.ca,
            &self.user_token,
        );
        cli.up();
        cli.wait_state(SessionState::Connected, Duration::from_secs(15))
    }

    /// Waits (15 s) until the helper lists agent `ws/name` with a key, an
    /// endpoint and tunnel addresses.
    pub fn wait_agent(&self, helper: &LabHelper, ws: &str, name: &str) -> AgentView {
        let found = poll_until(Duration::from_secs(15), || {
            let v = agent_view(&status_json(&helper.cli)?, ws, name)?;
            let a = &v.agent;
            (a.public_key.is_some() && !a.endpoints.is_empty() && a.addresses.len() >= 2)
                .then_some(v)
        });
        found.unwrap_or_else(|| {
            helper.print_log_tail(40);
            panic!("agent {ws}/{name} never showed up with a key, an endpoint and addresses")
        })
    }

    /// `curl ARGS` in the laptop namespace.
    pub fn curl(&self, args: &[&str]) -> CurlResult {
        curl_in(&self.net.laptop, args)
    }

    /// Polls (`timeout`) a `curl -s --max-time 3 URL` from the laptop until
    /// it returns `expected`; returns how long that took.
    pub fn wait_page(&self, url: &str, expected: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        poll_until(timeout, || {
            let r = self.curl(&["-s", "--max-time", "3", url]);
            (r.ok() && r.text() == expected).then_some(())
        })
        .map(|()| start.elapsed())
    }

    /// Whether the helper's TUN exists in the laptop namespace.
    pub fn tun_exists(&self, helper: &LabHelper) -> bool {
        link_exists(&self.net.laptop, &helper.options.tun_name)
    }

    /// Routes in the laptop namespace through the helper's TUN or to the
    /// deployment's prefixes (from `status`).
    pub fn helper_routes(&self, helper: &LabHelper, status: &Status) -> Vec<String> {
        let dep = status.session.deployment.as_ref();
        let prefixes: Vec<&str> = dep
            .map(|d| vec![d.ipv4_prefix.as_str(), d.ipv6_prefix.as_str()])
            .unwrap_or_default();
        routes_matching(&self.net.laptop, &helper.options.tun_name, &prefixes)
    }

    /// Writes a page into a fresh web root `<dir>/<name>` and serves it on
    /// the workspace's `127.0.0.1:port`; returns the server and the page.
    pub fn serve_page(&self, name: &str, port: u16) -> (Proc, String) {
        let root = self.dir.join(name);
        std::fs::create_dir_all(&root).expect("create the web root");
        let page = format!("hello from the workspace {}\n", unique("page"));
        std::fs::write(root.join("index.html"), &page).expect("write the page");
        let p = http_server(self.dir.path(), name, &self.net.workspace, port, &root);
        (p, page)
    }
}

/// A WireGuard public key nobody holds the private half of: 32 random bytes
/// in standard base64, for registering plain peers (`agent add
/// --public-key`) whose only job is to have a name and addresses.
pub fn random_wireguard_key() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: [u8; 32] = rand::random();
    let mut out = String::with_capacity(44);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What one `dig` run printed, parsed.
#[derive(Debug, Clone)]
pub struct DigAnswer {
    /// dig's exit code: 0 when a reply came (NXDOMAIN included), 9 when no
    /// server answered.
    pub code: i32,
    /// The reply's RCODE (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...); empty if
    /// there was no reply.
    pub status: String,
    /// A and AAAA records of the answer section.
    pub addresses: Vec<IpAddr>,
    /// The `;; SERVER:` line's address: who actually answered.
    pub server: Option<IpAddr>,
    /// Whether the `;; SERVER:` line says TCP.
    pub tcp: bool,
    pub output: String,
    pub elapsed: Duration,
}

impl DigAnswer {
    /// Parses dig's default output.
    pub fn parse(code: i32, output: &str, elapsed: Duration) -> DigAnswer {
        let mut status = String::new();
        let mut addresses = Vec::new();
        let mut server = None;
        let mut tcp = false;
        let mut in_answer = false;
        for line in output.lines() {
            if let Some(pos) = line.find("status: ") {
                status = line[pos + "status: ".len()..]
                    .split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
            }
            if let Some(rest) = line.strip_prefix(";; SERVER: ") {
                // `100.64.0.2#53(100.64.0.2) (UDP)`
                server = rest.split('#').next().and_then(|a| a.trim().parse().ok());
                tcp = rest.contains("(TCP)");
            }
            if line.starts_with(";; ANSWER SECTION") {
                in_answer = true;
                continue;
            }
            if in_answer {
                if line.trim().is_empty() || line.starts_with(";;") {
                    in_answer = false;
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.len() >= 5 && matches!(words[3], "A" | "AAAA") {
                    if let Ok(ip) = words[4].parse() {
                        addresses.push(ip);
                    }
                }
            }
        }
        DigAnswer {
            code,
            status,
            addresses,
            server,
            tcp,
            output: output.to_string(),
            elapsed,
        }
    }

    /// A reply came with RCODE NOERROR.
    pub fn noerror(&self) -> bool {
        self.code == 0 && self.status == "NOERROR"
    }

    /// A reply came with RCODE NXDOMAIN.
    pub fn nxdomain(&self) -> bool {
        self.code == 0 && self.status == "NXDOMAIN"
    }
}

/// Runs `dig ARGS` inside `ns` with one try of one second (so every call
/// is bounded), using the namespace's own `/etc/resolv.conf` unless the
/// arguments name a server (`@ADDR`).
pub fn dig_in(ns: &str, args: &[&str]) -> DigAnswer {
    dig_at(Some(ns), args)
}

/// `program` in namespace `ns`, or in the root namespace for `None`.
fn command_in(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => ns_command(ns, program),
        None => Command::new(program),
    }
}

/// [`dig_in`] for `ns`, or in the root namespace for `None`.
fn dig_at(ns: Option<&str>, args: &[&str]) -> DigAnswer {
    let start = Instant::now();
    let out = command_in(ns, "dig")
        .args(["+time=1", "+tries=1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run dig {args:?} in {ns:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    DigAnswer::parse(out.status.code().unwrap_or(-1), &text, start.elapsed())
}

/// `getent DATABASE KEY` inside `ns` (through the namespace's
/// `/etc/resolv.conf`, as every program using the system resolver): the
/// addresses in the first column, or `None` if getent found nothing (exit
/// status 2) or failed.
pub fn getent_in(ns: &str, database: &str, key: &str) -> Option<Vec<IpAddr>> {
    let out = ns_command(ns, "getent")
        .args([database, key])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run getent {database} {key} in {ns}: {e}"));
    if !out.status.success() {
        return None;
    }
    let mut addrs: Vec<IpAddr> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    addrs.sort();
    addrs.dedup();
    Some(addrs)
}

/// `dnsmasq` serving fixed records on one loopback address of a namespace:
/// the "resolver that was there before" in the split DNS tests. Logs every
/// query (`--log-queries`) to its stderr file, so a test can tell it was
/// asked; killed on drop.
pub struct Dnsmasq {
    pub listen: IpAddr,
    /// Its namespace; `None` for the root namespace.
    pub ns: Option<String>,
    proc: Proc,
}

impl Dnsmasq {
    /// Starts dnsmasq in `ns` on `listen:53` (IPv4 or IPv6) answering `name -> addr` for
    /// each record (and every name below it), nothing else (no upstreams,
    /// no hosts file), and waits until it answers the first record.
    pub fn start(
        dir: &Path,
        ns: &str,
        listen: impl Into<IpAddr>,
        records: &[(&str, IpAddr)],
    ) -> Dnsmasq {
        Self::spawn(dir, Some(ns), listen.into(), records)
    }

    /// Like [`Dnsmasq::start`] in the root namespace (for the
    /// systemd-resolved test, whose daemon sees only the root namespace);
    /// `listen` must be an address no other service uses.
    pub fn start_in_root(
        dir: &Path,
        listen: impl Into<IpAddr>,
        records: &[(&str, IpAddr)],
    ) -> Dnsmasq {
        Self::spawn(dir, None, listen.into(), records)
    }

    fn spawn(dir: &Path, ns: Option<&str>, listen: IpAddr, records: &[(&str, IpAddr)]) -> Dnsmasq {
        assert!(!records.is_empty(), "dnsmasq needs a record to probe");
        let mut cmd = command_in(ns, "/usr/sbin/dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--log-queries",
            "--log-facility=-",
            // Stay root: the `dnsmasq` user need not exist, and the pid
            // file would collide between parallel tests.
            "--user=root",
            "--group=root",
            "--pid-file=",
        ])
        .arg(format!("--listen-address={listen}"));
        for (name, addr) in records {
            cmd.arg(format!("--address=/{name}/{addr}"));
        }
        let name = format!("dnsmasq-{listen}");
        let mut proc = Proc::spawn(&name, dir, cmd, false);
        let probe_name = records[0].0.to_string();
        let server = format!("@{listen}");
        let up = poll_until(Duration::from_secs(10), || {
            if !proc.is_running() {
                return Some(false);
            }
            dig_at(ns, &[&server, &probe_name, "A"])
                .noerror()
                .then_some(true)
        });
        let ns = ns.map(str::to_string);
        if up != Some(true) {
            proc.print_log_tail(20);
            panic!("dnsmasq did not start answering on {listen} in {ns:?}");
        }
        Dnsmasq { listen, ns, proc }
    }

    /// Its log: one `query[A] NAME from ADDR` line per query.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// How many queries for `name` it has logged (any type).
    pub fn queries_for(&self, name: &str) -> usize {
        let needle = format!("] {name} from ");
        self.log()
            .lines()
            .filter(|l| l.contains("query[") && l.contains(&needle))
            .count()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn print_log_tail(&self, lines: usize) {
        self.proc.print_log_tail(lines);
    }
}

/// The host's own `/etc/resolv.conf`, read at the start of a DNS test, so
/// the test can prove at its end that nothing it ran touched the host's
/// file (only the namespace's bind-mounted copy may change).
pub struct HostResolvConf {
    before: Option<Vec<u8>>,
}

impl HostResolvConf {
    pub const PATH: &'static str = "/etc/resolv.conf";

    pub fn snapshot() -> HostResolvConf {
        HostResolvConf {
            before: std::fs::read(Self::PATH).ok(),
        }
    }

    /// Panics if the host's file differs from the snapshot.
    pub fn assert_unchanged(&self) {
        let now = std::fs::read(Self::PATH).ok();
        assert!(
            now == self.before,
            "the host's {} changed during the test:\nbefore: {:?}\nnow: {:?}",
            Self::PATH,
            self.before.as_deref().map(String::from_utf8_lossy),
            now.as_deref().map(String::from_utf8_lossy)
        );
    }
}

impl TunnelLab {
    /// `dig ARGS` in the laptop namespace (see [`dig_in`]).
    pub fn dig(&self, args: &[&str]) -> DigAnswer {
        dig_in(&self.net.laptop, args)
    }

    /// `getent DATABASE KEY` in the laptop namespace (see [`getent_in`]).
    pub fn getent(&self, database: &str, key: &str) -> Option<Vec<IpAddr>> {
        getent_in(&self.net.laptop, database, key)
    }

    /// Starts a [`Dnsmasq`] in the laptop namespace on `listen`.
    pub fn dnsmasq(&self, listen: impl Into<IpAddr>, records: &[(&str, IpAddr)]) -> Dnsmasq {
        Dnsmasq::start(self.dir.path(), &self.net.laptop, listen, records)
    }
}
