//! The helper (`warrend`) on a private socket, and the `warren` CLI pointed at
//! it with a private config dir and the file keyring.

use crate::proc::{child_rust_log, die_with_parent, Proc};
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use warren_proto::ipc::{SessionInfo, SessionState};
use warren_proto::model::{Agent, Workspace};

/// Backoff cap handed to the helper so reconnects happen within a second.
pub const TEST_BACKOFF_MAX_MS: &str = "1000";

pub struct Helper {
    pub socket: PathBuf,
    pub log_dir: PathBuf,
    pub group: String,
    proc: Proc,
}

/// Waits (up to 15 s) until `warrend` accepts connections on `socket`;
/// panics with its log tail if it exits or never does.
pub fn wait_for_socket(proc: &mut Proc, socket: &Path) {
    let ready = crate::poll_until(Duration::from_secs(15), || {
        if !proc.is_running() {
            return Some(false);
        }
        std::os::unix::net::UnixStream::connect(socket)
            .ok()
            .map(|_| true)
    });
    if ready != Some(true) {
        proc.print_log_tail(60);
        panic!(
            "warrend did not open its socket {} within 15 s (exit: {:?})",
            socket.display(),
            proc.try_wait()
        );
    }
}

impl Helper {
    /// Starts `warrend` with its socket and logs in `dir`, controllable by
    /// root and `group`; waits until the socket accepts connections.
    pub fn start(dir: &Path, group: &str) -> Self {
        Self::start_with_log(dir, group, &child_rust_log())
    }

    pub fn start_with_log(dir: &Path, group: &str, rust_log: &str) -> Self {
        let socket = dir.join("helper.sock");
        let log_dir = dir.join("helper-logs");
        std::fs::create_dir_all(&log_dir).expect("create helper log dir");
        let mut cmd = Command::new(crate::bin("warrend"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--group")
            .arg(group)
            .arg("--log-dir")
            .arg(&log_dir)
            // These helpers share the root namespace and test the control
            // plane; the tunnel tests start their own inside namespaces.
            .arg("--no-tunnel")
            .env("RUST_LOG", rust_log)
            .env("WARREN_BACKOFF_MAX_MS", TEST_BACKOFF_MAX_MS);
        let mut proc = Proc::spawn("warrend", dir, cmd, false);
        wait_for_socket(&mut proc, &socket);
        Helper {
            socket,
            log_dir,
            group: group.to_string(),
            proc,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn stderr_path(&self) -> &Path {
        &self.proc.stderr_path
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// A CLI talking to this helper, with its config in `<dir>/cli-config`.
    pub fn cli(&self, dir: &Path) -> Cli {
        Cli::new(&self.socket, &dir.join("cli-config"))
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        vm_hwm_kib(self.pid())
    }

    pub fn terminate(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }
}

/// `VmHWM` of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `warren status --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub helper_version: String,
    pub session: SessionInfo,
    pub workspaces: Vec<Workspace>,
    pub agents: Vec<Agent>,
}

impl Status {
    pub fn agent_ids(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.id.clone()).collect()
    }

    pub fn agent_named(&self, ws_name: &str, agent: &str) -> Option<&Agent> {
        let ws = self.workspaces.iter().find(|w| w.name == ws_name)?;
        self.agents
            .iter()
            .find(|a| a.workspace_id == ws.id && a.name == agent)
    }

    pub fn workspace_names(&self) -> Vec<String> {
        self.workspaces.iter().map(|w| w.name.clone()).collect()
    }
}

/// The `warren` CLI with a fixed socket and config dir.
#[derive(Debug, Clone)]
pub struct Cli {
    pub socket: PathBuf,
    pub config_dir: PathBuf,
    /// Run as this (uid, gid, supplementary groups) via setpriv.
    pub as_user: Option<(u32, u32, Vec<u32>)>,
}

impl Cli {
    pub fn new(socket: &Path, config_dir: &Path) -> Self {
        std::fs::create_dir_all(config_dir).expect("create CLI config dir");
        Cli {
            socket: socket.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            as_user: None,
        }
    }

    /// The same CLI run as another user (config dir owned by that user).
    pub fn as_user(&self, uid: u32, gid: u32, groups: Vec<u32>, config_dir: &Path) -> Cli {
        std::fs::create_dir_all(config_dir).expect("create CLI config dir");
        let c = std::ffi::CString::new(config_dir.as_os_str().as_encoded_bytes())
            .expect("path without NUL");
        // SAFETY: chown(2) on a path we just created.
        unsafe {
            libc::chown(c.as_ptr(), uid, gid);
        }
        Cli {
            socket: self.socket.clone(),
            config_dir: config_dir.to_path_buf(),
            as_user: Some((uid, gid, groups)),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let warren = crate::bin("warren");
        let mut cmd = match &self.as_user {
            None => Command::new(warren),
            Some((uid, gid, groups)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"));
                if groups.is_empty() {
                    c.arg("--clear-groups");
                } else {
                    let list: Vec<String> = groups.iter().map(u32::to_string).collect();
                    c.arg(format!("--groups={}", list.join(",")));
                }
                c.arg("--").arg(warren);
                c
            }
        };
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("WARREN_CONFIG_DIR", &self.config_dir)
            .env("WARREN_KEYRING", "file")
            .env("RUST_LOG", child_rust_log());
        die_with_parent(&mut cmd);
        cmd
    }

    /// Runs `warren ARGS` with `stdin` as its input; bounded to 30 s.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start warren {args:?}: {e}"));
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        wait_output(child, args)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start warren {args:?}: {e}"));
        wait_output(child, args)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn login(&self, url: &str, token: &str) {
        let args = ["login", "--url", url, "--token-stdin"];
        let out = self.run_with_stdin(&args, &format!("{token}\n"));
        assert_success(&out, &args);
    }

    pub fn up(&self) {
        self.run_ok(&["up"]);
    }

    /// `warren status --json`, parsed; panics if it fails or is not the
    /// documented object.
    pub fn status(&self) -> Status {
        let out = self.run_ok(&["status", "--json"]);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("`warren status --json` printed {out:?}: {e}"))
    }

    /// `status --json` if it succeeds and parses.
    pub fn try_status(&self) -> Option<Status> {
        let out = self.run(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `login` + `up`, then waits until the session is connected.
    pub fn login_up_connected(&self, url: &str, token: &str) -> Status {
        self.login(url, token);
        self.up();
        self.wait_state(SessionState::Connected, Duration::from_secs(15))
    }

    pub fn wait_state(&self, state: SessionState, timeout: Duration) -> Status {
        let mut last = None;
        let found = crate::poll_until(timeout, || {
            let s = self.try_status()?;
            if s.session.state == state {
                Some(s)
            } else {
                last = Some(s.session);
                None
            }
        });
        found.unwrap_or_else(|| {
            panic!("session did not reach {state} within {timeout:?}; last session: {last:?}")
        })
    }
}

fn wait_output(mut child: std::process::Child, args: &[&str]) -> Output {
    // Read both pipes on threads so a chatty child can't block on a full pipe.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut v);
        }
        v
    });
    let status = crate::poll_until(Duration::from_secs(30), || child.try_wait().ok().flatten());
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("warren {args:?} did not finish within 30 s");
        }
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "warren {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
