//! The coordinator under test: `warren-coord serve` on a temp SQLite DB and
//! loopback port, plus its admin commands run against the same DB.

use crate::proc::{child_rust_log, die_with_parent, Proc};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a coordinator may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Coordinator {
    pub dir: PathBuf,
    pub db: PathBuf,
    /// `http://127.0.0.1:PORT`, as printed by the coordinator.
    pub url: String,
    pub addr: SocketAddr,
    pub rust_log: String,
    /// How many times it has been started (names the log files).
    starts: u32,
    proc: Option<Proc>,
}

/// Waits (up to [`START_TIMEOUT`]) for a `warren-coord serve` started with
/// piped stdout to print `listening on <url>` and returns the URL without a
/// trailing slash. Its stdout keeps being copied to `out_path`, so the pipe
/// never fills. Panics with the log tail if it never says so.
pub fn listening_url(proc: &mut Proc, out_path: &std::path::Path) -> String {
    let stdout = proc.take_stdout();
    let (tx, rx) = mpsc::channel();
    let out_path = out_path.to_path_buf();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(out_path).ok();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = &mut file {
                let _ = writeln!(f, "{line}");
            }
            if let Some(pos) = line.find("listening on ") {
                let url = line[pos + "listening on ".len()..].trim().to_string();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url);
                }
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => url.trim_end_matches('/').to_string(),
        Err(_) => {
            proc.print_log_tail(60);
            panic!(
                "warren-coord did not print `listening on <url>` within {START_TIMEOUT:?} (exit: {:?})",
                proc.try_wait()
            );
        }
    }
}

impl Coordinator {
    /// Starts a coordinator on a fresh DB in `dir`, on a free loopback port.
    pub fn start(dir: &Path) -> Self {
        Self::start_with_log(dir, &child_rust_log())
    }

    pub fn start_with_log(dir: &Path, rust_log: &str) -> Self {
        let mut c = Coordinator {
            dir: dir.to_path_buf(),
            db: dir.join("coord.db"),
            url: String::new(),
            addr: "127.0.0.1:0".parse().expect("literal address"),
            rust_log: rust_log.to_string(),
            starts: 0,
            proc: None,
        };
        c.spawn("127.0.0.1:0");
        c
    }

    fn spawn(&mut self, listen: &str) {
        self.starts += 1;
        let name = format!("coord{}", self.starts);
        let mut cmd = Command::new(crate::bin("warren-coord"));
        cmd.arg("serve")
            .arg("--db")
            .arg(&self.db)
            .arg("--listen")
            .arg(listen)
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn(&name, &self.dir, cmd, true);
        let url = listening_url(&mut proc, &self.dir.join(format!("{name}.stdout")));
        let url = url.trim_end_matches('/').to_string();
        let hostport = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .trim_end_matches('/');
        self.addr = hostport.parse().unwrap_or_else(|e| {
            panic!("coordinator printed a URL without host:port: {url:?}: {e}")
        });
        self.url = url;
        self.proc = Some(proc);
    }

    /// SIGKILL: the coordinator vanishes as if its machine went away.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts again on the same DB and the same port (after [`kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        self.spawn(&listen);
        assert_eq!(
            self.addr.to_string(),
            listen,
            "restarted on a different address"
        );
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, |p| p.pid())
    }

    pub fn stderr_paths(&self) -> Vec<PathBuf> {
        (1..=self.starts)
            .map(|i| self.dir.join(format!("coord{i}.stderr")))
            .collect()
    }

    /// Runs an admin command (`warren-coord --db DB ARGS...`).
    pub fn try_admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(crate::bin("warren-coord"));
        cmd.arg("--db")
            .arg(&self.db)
            .args(args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run warren-coord {args:?}: {e}"));
        // Keep admin stderr with the other logs (the secrets test greps it).
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("coord-admin.stderr"))
        {
            let _ = f.write_all(&out.stderr);
        }
        out
    }

    /// Runs an admin command that must succeed; returns its trimmed stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.try_admin(args);
        assert!(
            out.status.success(),
            "warren-coord {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn add_user(&self, name: &str) {
        self.admin(&["user", "add", name]);
    }

    /// Creates a user token; the coordinator prints only the token.
    pub fn create_token(&self, user: &str) -> String {
        let t = self.admin(&["token", "create", user]);
        assert!(
            !t.is_empty() && !t.contains(char::is_whitespace),
            "`token create` must print only the token, one line"
        );
        t
    }

    /// A user with a token.
    pub fn user_with_token(&self, name: &str) -> String {
        self.add_user(name);
        self.create_token(name)
    }

    pub fn add_workspace(&self, owner: &str, ws: &str) {
        self.admin(&["workspace", "add", "--owner", owner, ws]);
    }

    pub fn rm_workspace(&self, owner: &str, ws: &str) {
        self.admin(&["workspace", "rm", "--owner", owner, ws]);
    }

    /// Adds an agent; returns its token (the only thing printed).
    pub fn add_agent(&self, owner: &str, ws: &str, agent: &str) -> String {
        let t = self.admin(&["agent", "add", "--owner", owner, "--workspace", ws, agent]);
        assert!(
            !t.is_empty() && !t.contains(char::is_whitespace),
            "`agent add` must print only the agent token, one line"
        );
        t
    }

    pub fn rm_agent(&self, owner: &str, ws: &str, agent: &str) {
        self.admin(&["agent", "rm", "--owner", owner, "--workspace", ws, agent]);
    }
}

impl Coordinator {
    /// Starts a coordinator like [`Coordinator::start_with_log`], with extra
    /// `serve` flags and, if `nofile` is given, that descriptor limit (soft
    /// and hard) set in the child before it runs. [`Coordinator::restart`]
    /// starts it again without them.
    pub fn start_with_args(
        dir: &Path,
        rust_log: &str,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Self {
        let mut c = Self::first_start(
            dir,
            rust_log,
            "127.0.0.1:0".parse().expect("literal address"),
        );
        let mut cmd = serve_command(&c.db, rust_log, "127.0.0.1:0", extra);
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut proc = Proc::spawn("coord1", dir, cmd, true);
        let url = listening_url(&mut proc, &dir.join("coord1.stdout"));
        let hostport = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .to_string();
        c.addr = hostport.parse().unwrap_or_else(|e| {
            panic!("coordinator printed a URL without host:port: {url:?}: {e}")
        });
        c.url = url;
        c.proc = Some(proc);
        c
    }
}

/// `warren-coord serve` on `db`, listening on `listen`, with `extra` flags
/// and its stdout piped (for the `listening on` line).
fn serve_command(db: &Path, rust_log: &str, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(crate::bin("warren-coord"));
    cmd.arg("serve")
        .arg("--db")
        .arg(db)
        .args(["--listen", listen])
        .args(extra)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped());
    cmd
}

impl Coordinator {
    /// A coordinator about to start for the first time in `dir`.
    fn first_start(dir: &Path, rust_log: &str, addr: SocketAddr) -> Self {
        Coordinator {
            dir: dir.to_path_buf(),
            db: dir.join("coord.db"),
            url: String::new(),
            addr,
            rust_log: rust_log.to_string(),
            starts: 1,
            proc: None,
        }
    }

    /// Starts a coordinator on `listen` (a fixed port, for `--public-url`
    /// and an identity provider that must know the callback before the
    /// coordinator runs) with extra `serve` flags.
    pub fn start_at(dir: &Path, rust_log: &str, listen: SocketAddr, extra: &[&str]) -> Self {
        let mut c = Self::first_start(dir, rust_log, listen);
        let cmd = serve_command(&c.db, rust_log, &listen.to_string(), extra);
        let mut proc = Proc::spawn("coord1", dir, cmd, true);
        c.url = listening_url(&mut proc, &dir.join("coord1.stdout"));
        c.proc = Some(proc);
        c
    }
}
