//! Child processes that die with the test: stderr captured to a file, killed
//! on drop (also when the test panics, when the log is printed), and killed
//! by the kernel if the test process itself dies.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running child process owned by a test.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub stderr_path: PathBuf,
}

/// Makes the child get SIGKILL when the thread that spawned it (the test)
/// goes away, so a crashed test run leaves no helper or coordinator behind.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Proc {
    /// Spawns `cmd` with stderr (and stdout, unless the caller already set
    /// it) going to `<dir>/<name>.stderr` / `.stdout`.
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command, stdout_set: bool) -> Proc {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).expect("create stderr capture file");
        cmd.stderr(Stdio::from(stderr)).stdin(Stdio::null());
        if !stdout_set {
            let out = File::create(dir.join(format!("{name}.stdout"))).expect("create stdout file");
            cmd.stdout(Stdio::from(out));
        }
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            stderr_path,
        }
    }

    pub fn from_child(name: &str, child: Child, stderr_path: PathBuf) -> Proc {
        Proc {
            name: name.to_string(),
            child: Some(child),
            stderr_path,
        }
    }

    /// The child's piped stdout (set with `Stdio::piped()` before spawning).
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("stdout was piped")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Some(exit status) once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// The captured stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it hasn't exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(c) = &mut self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = crate::poll_until(grace, || c.try_wait().ok().flatten());
        }
        self.kill();
    }

    /// Prints the last `lines` lines of the captured stderr.
    pub fn print_log_tail(&self, lines: usize) {
        let text = self.stderr();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        eprintln!(
            "----- {} stderr ({}, last {} of {} lines) -----",
            self.name,
            self.stderr_path.display(),
            all.len() - from,
            all.len()
        );
        for l in &all[from..] {
            eprintln!("{l}");
        }
        eprintln!("----- end of {} -----", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if std::thread::panicking() {
            let exited = self.try_wait();
            if let Some(status) = exited {
                eprintln!("{} had exited: {status}", self.name);
            }
            self.print_log_tail(80);
        }
        self.kill();
    }
}

/// The `RUST_LOG` for children: the test's own if set, else `info`.
pub fn child_rust_log() -> String {
    std::env::var("WARREN_E2E_RUST_LOG").unwrap_or_else(|_| "info".to_string())
}

/// Starts `warren-agent` for `token` (written to a 0600 file in `dir`).
pub fn start_agent(dir: &Path, name: &str, coordinator_url: &str, token: &str) -> Proc {
    start_agent_with_log(dir, name, coordinator_url, token, &child_rust_log())
}

pub fn start_agent_with_log(
    dir: &Path,
    name: &str,
    coordinator_url: &str,
    token: &str,
    rust_log: &str,
) -> Proc {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token_file = dir.join(format!("{name}.token"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&token_file)
        .expect("write agent token file");
    writeln!(f, "{token}").expect("write agent token file");
    let mut cmd = Command::new(crate::bin("warren-agent"));
    cmd.arg("--coordinator")
        .arg(coordinator_url)
        .arg("--token-file")
        .arg(&token_file)
        .arg("--key-file")
        .arg(dir.join(format!("{name}.key")))
        .env("RUST_LOG", rust_log);
    Proc::spawn(&format!("agent-{name}"), dir, cmd, false)
}
