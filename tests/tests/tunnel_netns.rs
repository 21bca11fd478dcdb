//! The data plane end to end, in two network namespaces: a "laptop" running
//! `warrend` and a "workspace" running the coordinator, an agent and
//! a plain HTTP server on its loopback. From the laptop, `curl` to the
//! agent's tunnel address must get the page, through the helper's TUN and
//! WireGuard; `warren down` must leave no TUN behind. Needs root (skipped
//! with a printed reason otherwise).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use warren_e2e::helper::Cli;
use warren_e2e::proc::{child_rust_log, Proc};
use warren_e2e::{bin, poll_until, unique, TestDir};
use warren_proto::ipc::SessionState;

/// Why this machine can't run the test, if it can't.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces and a TUN".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for tool in ["ip", "curl", "python3", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; deleted on drop, even on failure
/// (deleting a namespace also removes its veth end and any TUN inside).
struct Netns {
    laptop: String,
    workspace: String,
    laptop_ip: String,
    workspace_ip: String,
}

impl Netns {
    fn create() -> Netns {
        let r: u32 = rand::random();
        let (a, b) = (((r >> 8) & 0xff) as u8, (r & 0xfc) as u8);
        let ns = Netns {
            laptop: unique("wlap"),
            workspace: unique("wws"),
            laptop_ip: format!("10.{a}.{b}.1"),
            workspace_ip: format!("10.{a}.{b}.2"),
        };
        ip(&["netns", "add", &ns.laptop]);
        ip(&["netns", "add", &ns.workspace]);
        let (va, vb) = (format!("wva{:06x}", r >> 8), format!("wvb{:06x}", r >> 8));
        ip(&[
            "link",
            "add",
            &va,
            "netns",
            &ns.laptop,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            &ns.workspace,
        ]);
        for (n, dev, addr) in [
            (&ns.laptop, &va, &ns.laptop_ip),
            (&ns.workspace, &vb, &ns.workspace_ip),
        ] {
            ip(&["-n", n, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn exec(ns: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.laptop, &self.workspace] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn admin(db: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("warren-coord"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run warren-coord {args:?}: {e}"));
    assert!(
        out.status.success(),
        "warren-coord {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write_secret(path: &Path, value: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write a token file");
    writeln!(f, "{value}").expect("write a token file");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a server certificate for `ip` (the coordinator refuses
/// plain HTTP off loopback). Returns the CA file the clients trust.
fn make_tls(dir: &Path, ip: &str) -> std::path::PathBuf {
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
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
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

fn curl(ns: &str, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tun_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn laptop_reaches_a_workspace_http_server_through_the_tunnel() {
    if let Some(reason) = skip_reason() {
        // CI runs as root with the tools installed by scripts/test.sh: a skip
        // there would hide a broken data plane, so it is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "tunnel_netns cannot run in CI: {reason}"
        );
        eprintln!("skipping tunnel_netns: {reason}");
        return;
    }
    let dir = TestDir::new("tunnel-netns");
    let net = Netns::create();

    // The coordinator, on the workspace side of the veth.
    let db = dir.join("coord.db");
    let ca = make_tls(dir.path(), &net.workspace_ip);
    let mut cmd = Netns::exec(&net.workspace, &bin("warren-coord"));
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
    let mut coord = Proc::spawn("coord", dir.path(), cmd, true);
    let stdout = coord.take_stdout();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(pos) = line.find("listening on ") {
                let _ = tx.send(line[pos + "listening on ".len()..].trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            coord.print_log_tail(40);
            panic!("the coordinator did not start in the workspace namespace")
        })
        .trim_end_matches('/')
        .to_string();

    admin(&db, &["user", "add", "alice"]);
    let user_token = admin(&db, &["token", "create", "alice"]);
    admin(&db, &["workspace", "add", "--owner", "alice", "ws"]);
    let agent_token = admin(
        &db,
        &[
            "agent",
            "add",
            "--owner",
            "alice",
            "--workspace",
            "ws",
            "api",
        ],
    );

    // A plain HTTP server on the workspace's loopback.
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("create the web root");
    let page = format!("hello from the workspace {}\n", unique("page"));
    std::fs::write(www.join("index.html"), &page).expect("write the page");
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &net.workspace,
        "python3",
        "-m",
        "http.server",
    ])
    .args(["8080", "--bind", "127.0.0.1", "--directory"])
    .arg(&www);
    let _http = Proc::spawn("http", dir.path(), cmd, false);

    // The agent, announcing its veth address as the WireGuard endpoint.
    let token_file = dir.join("agent.token");
    write_secret(&token_file, &agent_token);
    let mut cmd = Netns::exec(&net.workspace, &bin("warren-agent"));
    cmd.arg("--coordinator")
        .arg(&url)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--key-file")
        .arg(dir.join("agent.key"))
        .arg("--ca")
        .arg(&ca)
        .args(["--listen-port", "51820", "--allow-ports", "8080"])
        .arg("--endpoint")
        .arg(format!("{}:51820", net.workspace_ip))
        .env("RUST_LOG", child_rust_log());
    let agent = Proc::spawn("agent", dir.path(), cmd, false);

    // The helper with its data plane, on the laptop side.
    let socket = dir.join("helper.sock");
    let log_dir = dir.join("helper-logs");
    std::fs::create_dir_all(&log_dir).expect("create the helper log dir");
    let state_dir = dir.join("helper-state");
    let mut cmd = Netns::exec(&net.laptop, &bin("warrend"));
    cmd.arg("--socket")
        .arg(&socket)
        .args(["--group", "root", "--log-dir"])
        .arg(&log_dir)
        .arg("--state-dir")
        .arg(&state_dir)
        .env("RUST_LOG", child_rust_log())
        .env("WARREN_BACKOFF_MAX_MS", "1000");
    let mut helper = Proc::spawn("warrend", dir.path(), cmd, false);
    let ready = poll_until(Duration::from_secs(15), || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });
    if ready.is_none() {
        helper.print_log_tail(40);
        panic!("warrend did not open its socket");
    }

    // The CLI talks to the helper over its socket, from any namespace.
    let cli = Cli::new(&socket, &dir.join("cli-config"));
    let ca_arg = ca.to_string_lossy().into_owned();
    let login = ["login", "--url", &url, "--token-stdin", "--ca", &ca_arg];
    // `login` checks the token with the coordinator, so it runs on the laptop.
    let inner = cli.command(&login);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.laptop])
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().expect("start warren login");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{user_token}").expect("hand the token to warren login");
    }
    let out = child.wait_with_output().expect("run warren login");
    warren_e2e::helper::assert_success(&out, &login);
    cli.up();
    cli.wait_state(SessionState::Connected, Duration::from_secs(15));
    let agent_v4 = poll_until(Duration::from_secs(15), || {
        let status = cli.try_status()?;
        let a = status.agent_named("ws", "api")?;
        if a.public_key.is_none() || a.endpoints.is_empty() {
            return None;
        }
        a.addresses.iter().find(|a| a.is_ipv4()).copied()
    })
    .unwrap_or_else(|| {
        agent.print_log_tail(40);
        panic!("the agent never showed up with a key, an endpoint and an IPv4 address")
    });
    assert!(tun_exists(&net.laptop, "warren0"), "no TUN while connected");
    let journal = state_dir.join("netstate.json");
    assert!(
        journal.is_file(),
        "the helper changed the network without recording it in {}",
        journal.display()
    );

    let target = format!("http://{agent_v4}:8080/index.html");
    let got = poll_until(Duration::from_secs(20), || {
        curl(&net.laptop, &target).filter(|body| *body == page)
    });
    if got.is_none() {
        helper.print_log_tail(60);
        agent.print_log_tail(60);
        panic!("curl {target} from the laptop namespace never returned the page");
    }

    // `warren down` removes the TUN (and with it its addresses and routes).
    cli.run_ok(&["down"]);
    cli.wait_state(SessionState::Disconnected, Duration::from_secs(10));
    let gone = poll_until(Duration::from_secs(5), || {
        (!tun_exists(&net.laptop, "warren0")).then_some(())
    });
    assert!(gone.is_some(), "warren0 still exists after `warren down`");
    let cleared = poll_until(Duration::from_secs(5), || (!journal.exists()).then_some(()));
    assert!(
        cleared.is_some(),
        "the journal still lists changes after `warren down`: {:?}",
        std::fs::read_to_string(&journal)
    );
    assert!(
        curl(&net.laptop, &target).is_none(),
        "the page is still reachable with the tunnel down: it did not go through the tunnel"
    );
    let log = helper.stderr();
    assert!(log.contains("tunnel data plane started"), "{log}");
    assert!(helper.is_running(), "the helper died");
    helper.terminate(Duration::from_secs(5));
    drop(net);
}
