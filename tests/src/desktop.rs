//! The real desktop app (`warren-desktop`) under test: a private X server
//! (Xvfb on a display it picks itself), a private D-Bus session bus (so the
//! app's single-instance lock and notifications touch nothing else on the
//! machine), `tauri-driver` + `WebKitWebDriver` on free loopback ports, and a
//! small blocking WebDriver client over plain HTTP/1.1 on loopback.
//!
//! Everything started here is killed on drop, also when the test panics:
//! the WebDriver session is deleted, then every process below `tauri-driver`
//! (WebKitWebDriver, the app, its WebKit helpers) is killed by pid before
//! `tauri-driver` itself, because `tauri-driver` only stops its native
//! driver and the app would outlive both. When the test process is killed
//! outright (no Drop), parent-death signals take the chain down instead:
//! the native driver and the app are started through `setpriv --pdeathsig`
//! wrappers.
//!
//! Missing tools are a failure with the package to install, never a skip.

use crate::proc::{die_with_parent, Proc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long WebKit may take to start the app and open a WebDriver session
/// (slow on a loaded 2-core machine).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(90);
/// Default deadline of one WebDriver command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Debian packages that provide the tools, for the failure messages.
pub const APT_PACKAGES: &str = "xvfb dbus-daemon webkit2gtk-driver xclip";

/// The external programs the desktop fixtures drive.
#[derive(Debug, Clone)]
pub struct Tools {
    pub xvfb: PathBuf,
    pub dbus_daemon: PathBuf,
    pub tauri_driver: PathBuf,
    pub webkit_driver: PathBuf,
}

/// `name` in `$PATH`, or `None`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `$var` if set, else `name` in `$PATH`, else the first of `extra` that
/// exists.
fn find_tool(var: &str, name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        // Set but wrong is missing too, not a fallback to another copy.
        let p = PathBuf::from(p);
        return is_executable(&p).then_some(p);
    }
    which(name).or_else(|| extra.iter().find(|p| is_executable(p)).cloned())
}

impl Tools {
    /// Finds every tool, or names what is missing and how to install it.
    pub fn find() -> Result<Tools, String> {
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|d| d.join("bin").join("tauri-driver"))
            .into_iter()
            .collect::<Vec<_>>();
        let xvfb = find_tool("WARREN_XVFB", "Xvfb", &[]);
        let dbus = find_tool("WARREN_DBUS_DAEMON", "dbus-daemon", &[]);
        let tauri = find_tool("TAURI_DRIVER", "tauri-driver", &cargo_bin);
        let webkit = find_tool(
            "WEBKIT_DRIVER",
            "WebKitWebDriver",
            &[PathBuf::from("/usr/bin/WebKitWebDriver")],
        );
        let mut missing = Vec::new();
        if xvfb.is_none() {
            missing.push("Xvfb (Debian: apt-get install xvfb)");
        }
        if dbus.is_none() {
            missing.push("dbus-daemon (Debian: apt-get install dbus-daemon)");
        }
        if tauri.is_none() {
            missing.push("tauri-driver (cargo install tauri-driver --locked --version 2.1.0; or set TAURI_DRIVER)");
        }
        if webkit.is_none() {
            missing.push(
                "WebKitWebDriver (Debian: apt-get install webkit2gtk-driver; or set WEBKIT_DRIVER)",
            );
        }
        match (xvfb, dbus, tauri, webkit) {
            (Some(xvfb), Some(dbus_daemon), Some(tauri_driver), Some(webkit_driver)) => Ok(Tools {
                xvfb,
                dbus_daemon,
                tauri_driver,
                webkit_driver,
            }),
            _ => Err(format!(
                "the desktop app tests need tools that are missing: {}",
                missing.join("; ")
            )),
        }
    }

    /// [`Tools::find`] that panics with the reason: a GUI test that can't
    /// run fails, it does not skip.
    pub fn require() -> Tools {
        Tools::find().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The built app binary (`target/<profile>/warren-desktop`); panics with how
/// to build it. `WARREN_DESKTOP_BIN` overrides.
pub fn app_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WARREN_DESKTOP_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "WARREN_DESKTOP_BIN={} is not a file",
            p.display()
        );
        return p;
    }
    let path = crate::bin_dir().join("warren-desktop");
    assert!(
        path.is_file(),
        "the desktop app is not built: run `npm --prefix ui ci && npm --prefix ui run build && cargo build -p warren-desktop` (looked for {})",
        path.display()
    );
    path
}

/// Where screenshots go: `$WARREN_SCREENSHOT_DIR`, else `target/screenshots`
/// (next to the profile directory the binaries are in).
pub fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("WARREN_SCREENSHOT_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let bins = crate::bin_dir();
            bins.parent().unwrap_or(&bins).join("screenshots")
        }
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create the screenshot dir {}: {e}", dir.display()));
    dir
}

/// Wall-clock milliseconds since the Unix epoch: the browser's `Date.now()`
/// reads the same clock, so the two can be subtracted.
pub fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A free loopback TCP port (bound and released; the caller retries if
/// someone takes it in between).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Reads the first line a child prints on its piped stdout, within
/// `timeout`; the rest of its output is copied to `copy_to`.
fn first_stdout_line(proc: &mut Proc, copy_to: PathBuf, timeout: Duration) -> Option<String> {
    let stdout = proc.take_stdout();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(copy_to).ok();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = &mut file {
                let _ = writeln!(f, "{line}");
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}

/// A shell script at `path` that runs `program` with its arguments and
/// SIGKILL as its parent-death signal (util-linux `setpriv`), so the chain
/// tauri-driver → WebKitWebDriver → app dies with the test even when the
/// test process is killed outright and no Drop runs. Without `setpriv` it
/// just runs `program`.
pub fn dies_with_parent_wrapper(path: &Path, program: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let quoted = format!("'{}'", program.display().to_string().replace('\'', "'\\''"));
    let body = match which("setpriv") {
        Some(setpriv) => format!(
            "#!/bin/sh\nexec '{}' --pdeathsig KILL -- {quoted} \"$@\"\n",
            setpriv.display()
        ),
        None => format!("#!/bin/sh\nexec {quoted} \"$@\"\n"),
    };
    std::fs::write(path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path.to_path_buf()
}

/// A private X server.
pub struct Xvfb {
    /// `:N`.
    pub display: String,
    proc: Proc,
}

impl Xvfb {
    /// Starts Xvfb on a display number it picks itself (`-displayfd`), so
    /// parallel tests and a desktop on `:0` never collide.
    pub fn start(tools: &Tools, dir: &Path) -> Xvfb {
        let mut cmd = Command::new(&tools.xvfb);
        cmd.args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ])
        .stdout(Stdio::piped());
        let mut proc = Proc::spawn("xvfb", dir, cmd, true);
        let line = first_stdout_line(&mut proc, dir.join("xvfb.stdout"), Duration::from_secs(20));
        let Some(n) = line.and_then(|l| l.trim().parse::<u32>().ok()) else {
            proc.print_log_tail(40);
            panic!(
                "Xvfb did not report its display number within 20 s (exit: {:?})",
                proc.try_wait()
            );
        };
        Xvfb {
            display: format!(":{n}"),
            proc,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A private D-Bus session bus.
pub struct SessionBus {
    /// For `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    proc: Proc,
}

impl SessionBus {
    pub fn start(tools: &Tools, dir: &Path) -> SessionBus {
        let socket = dir.join("dbus-session.sock");
        // No <servicedir>: nothing is activated on demand, so no portal,
        // secret service or accessibility bus of this machine starts here.
        let config = dir.join("dbus-session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write the D-Bus config");
        let mut cmd = Command::new(&tools.dbus_daemon);
        cmd.arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .arg("--print-address=1")
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("dbus-daemon", dir, cmd, true);
        let line = first_stdout_line(
            &mut proc,
            dir.join("dbus-daemon.stdout"),
            Duration::from_secs(20),
        );
        let Some(address) = line.map(|l| l.trim().to_string()).filter(|l| !l.is_empty()) else {
            proc.print_log_tail(40);
            panic!(
                "dbus-daemon did not print its address within 20 s (exit: {:?})",
                proc.try_wait()
            );
        };
        SessionBus { address, proc }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A display and a session bus, and the environment every GUI process
/// started in them gets.
pub struct Desktop {
    pub tools: Tools,
    pub dir: PathBuf,
    // Dropped in declaration order: the bus before the X server.
    pub bus: SessionBus,
    pub xvfb: Xvfb,
}

impl Desktop {
    /// Starts Xvfb and dbus-daemon with their files under `dir`.
    pub fn start(dir: &Path) -> Desktop {
        let tools = Tools::require();
        let dir = dir.join("desktop");
        std::fs::create_dir_all(&dir).expect("create the desktop dir");
        let xvfb = Xvfb::start(&tools, &dir);
        let bus = SessionBus::start(&tools, &dir);
        Desktop {
            tools,
            dir,
            bus,
            xvfb,
        }
    }

    /// The environment of a GUI process here: the display and the bus, and
    /// private XDG directories so WebKit's caches and the app's data stay
    /// in the test's directory.
    pub fn env(&self) -> Vec<(String, OsString)> {
        let xdg = self.dir.join("xdg");
        let mut env = vec![
            ("DISPLAY".to_string(), OsString::from(&self.xvfb.display)),
            (
                "DBUS_SESSION_BUS_ADDRESS".to_string(),
                OsString::from(&self.bus.address),
            ),
            ("GDK_BACKEND".to_string(), "x11".into()),
            // No accessibility bus on this private session.
            ("NO_AT_BRIDGE".to_string(), "1".into()),
            // Xvfb has no GPU: WebKit's DMA-BUF renderer can't start there.
            ("WEBKIT_DISABLE_DMABUF_RENDERER".to_string(), "1".into()),
            ("LIBGL_ALWAYS_SOFTWARE".to_string(), "1".into()),
            ("WEBKIT_DISABLE_COMPOSITING_MODE".to_string(), "1".into()),
        ];
        for (var, sub) in [
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_DATA_HOME", "data"),
            ("XDG_CACHE_HOME", "cache"),
            ("XDG_STATE_HOME", "state"),
            ("XDG_RUNTIME_DIR", "runtime"),
        ] {
            let d = xdg.join(sub);
            std::fs::create_dir_all(&d).expect("create an XDG dir");
            crate::set_mode(&d, 0o700);
            env.push((var.to_string(), d.into_os_string()));
        }
        env
    }

    /// Spawns `program` directly (no WebDriver) in this display, with
    /// `extra_env` on top of [`Desktop::env`]; stderr and stdout go to
    /// `<name>.stderr` / `.stdout` in the desktop dir.
    pub fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[OsString],
        extra_env: &[(String, OsString)],
    ) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in self.env().into_iter().chain(extra_env.iter().cloned()) {
            cmd.env(k, v);
        }
        Proc::spawn(name, &self.dir, cmd, false)
    }

    /// Starts the app at `app` with `args` under tauri-driver and opens a
    /// WebDriver session on it (waits until WebKit is up).
    pub fn launch(&self, app: &Path, args: &[OsString], extra_env: &[(String, OsString)]) -> App {
        let mut last_error = String::new();
        // A port taken between free_port() and tauri-driver's bind is the
        // only expected failure; a few attempts cover it.
        for attempt in 1..=3 {
            let driver = match Driver::start(self, attempt, extra_env) {
                Ok(d) => d,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let args: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let caps = json!({
                "capabilities": {
                    "alwaysMatch": {
                        "tauri:options": {
                            "application": dies_with_parent_wrapper(
                                &self.dir.join("app-wrapper.sh"),
                                app,
                            ),
                            "args": args,
                        }
                    }
                }
            });
            let started = Instant::now();
            let res = http(
                driver.port,
                "POST",
                "/session",
                Some(&caps),
                SESSION_TIMEOUT,
            );
            match res {
                Ok(v) => {
                    let Some(id) = v["value"]["sessionId"].as_str() else {
                        driver.print_logs();
                        panic!("WebDriver answered a new session without a sessionId: {v}");
                    };
                    let wd = WebDriver {
                        port: driver.port,
                        session: id.to_string(),
                    };
                    return App {
                        wd,
                        display: self.xvfb.display.clone(),
                        session_took: started.elapsed(),
                        driver,
                    };
                }
                Err(e) => {
                    driver.print_logs();
                    panic!(
                        "tauri-driver/WebKitWebDriver could not start {} within {SESSION_TIMEOUT:?}: {e}",
                        app.display()
                    );
                }
            }
        }
        panic!("tauri-driver did not start in 3 attempts: {last_error}");
    }
}

/// `tauri-driver` and, below it, WebKitWebDriver and the app.
pub struct Driver {
    pub port: u16,
    proc: Proc,
    dir: PathBuf,
}

impl Driver {
    fn start(
        desktop: &Desktop,
        attempt: u32,
        extra_env: &[(String, OsString)],
    ) -> Result<Driver, String> {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let mut native_port = free_port();
        while native_port == port {
            native_port = free_port();
        }
        let mut cmd = Command::new(&desktop.tools.tauri_driver);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--native-port")
            .arg(native_port.to_string())
            .arg("--native-driver")
            .arg(dies_with_parent_wrapper(
                &desktop.dir.join("webkit-driver-wrapper.sh"),
                &desktop.tools.webkit_driver,
            ))
            // Its own process group, so what it starts can be found and
            // killed as a group even if a pid walk misses something.
            .process_group(0);
        for (k, v) in desktop.env().into_iter().chain(extra_env.iter().cloned()) {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn(&format!("tauri-driver{attempt}"), &desktop.dir, cmd, false);
        // Up when both it and the native driver answer /status.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = proc.try_wait() {
                let log = proc.stderr();
                return Err(format!("tauri-driver exited ({status}): {}", log.trim()));
            }
            if let Ok(v) = http(port, "GET", "/status", None, Duration::from_secs(2)) {
                if v["value"]["ready"].as_bool() == Some(true) {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let d = Driver {
                    port,
                    proc,
                    dir: desktop.dir.clone(),
                };
                d.print_logs();
                return Err("tauri-driver did not answer /status within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Driver {
            port,
            proc,
            dir: desktop.dir.clone(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn print_logs(&self) {
        self.proc.print_log_tail(80);
        let _ = &self.dir;
    }

    /// Kills everything below tauri-driver (by pid, deepest first), then
    /// its process group, then tauri-driver itself.
    fn kill_all(&mut self) {
        let root = self.pid();
        if root == 0 {
            return;
        }
        kill_descendants(root);
        // SAFETY: the group tauri-driver leads (process_group(0) above).
        unsafe {
            libc::kill(-(root as libc::pid_t), libc::SIGKILL);
        }
        self.proc.kill();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        self.kill_all();
    }
}

/// SIGKILLs every process below `root`, deepest first (WebKit's web and
/// network processes below the app, the app below its driver).
pub fn kill_descendants(root: u32) {
    for pid in descendants(root).into_iter().rev() {
        // SAFETY: kill(2) on a pid that is a descendant of our child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Every process below `root`, breadth first, from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields
            // start after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if !out.contains(&c) {
                out.push(c);
                queue.push(c);
            }
        }
    }
    out
}

/// The app in a WebDriver session.
pub struct App {
    pub wd: WebDriver,
    /// The X display the app runs on (`:N`).
    pub display: String,
    /// How long the new-session request took (app start included).
    pub session_took: Duration,
    driver: Driver,
}

impl App {
    /// Saves a PNG of the whole X screen (the app's window as X shows it)
    /// as `<screenshot dir>/<name>`, with ImageMagick's `import`.
    /// WebKitWebDriver's own screenshot command never answers under Xvfb
    /// here (WebKitGTK 2.50), so the X server is asked instead.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        // Without a window manager the window sits at 0,0 undecorated:
        // cut the screen to its size.
        let size = self
            .try_execute("return [window.outerWidth, window.outerHeight]", json!([]))
            .ok()
            .and_then(|v| Some((v[0].as_u64()?, v[1].as_u64()?)))
            .filter(|&(w, h)| w > 0 && h > 0);
        screenshot_x(&self.display, name, size)
    }

    /// Pids below tauri-driver whose executable is `exe` (the app).
    pub fn app_pids(&self, exe: &Path) -> Vec<u32> {
        let want = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
        descendants(self.driver.pid())
            .into_iter()
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == want))
            .collect()
    }
}

impl std::ops::Deref for App {
    type Target = WebDriver;
    fn deref(&self) -> &WebDriver {
        &self.wd
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // Bounded: a hung WebKit must not hang the test's teardown.
        let _ = http(
            self.wd.port,
            "DELETE",
            &format!("/session/{}", self.wd.session),
            None,
            Duration::from_secs(5),
        );
        self.driver.kill_all();
    }
}

/// A WebDriver error answer, or a transport failure.
#[derive(Debug, Clone)]
pub struct WdError {
    /// The W3C error code (`no such element`, …) or `transport`.
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// One HTTP/1.1 request to the driver on 127.0.0.1:`port`; the parsed JSON
/// answer, or the WebDriver error it carries.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, WdError> {
    let transport = |m: String| WdError {
        error: "transport".into(),
        message: m,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| transport(format!("connect to {addr}: {e}")))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| transport(e.to_string()))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    // No `Connection: close`: tauri-driver forwards request headers to the
    // native driver, and with it there its pooled connection to
    // WebKitWebDriver breaks now and then (an empty answer). The answer is
    // read by its length instead, and the connection dropped after it.
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n"
    );
    if body.is_some() || method == "POST" {
        let payload_len = if body.is_some() { payload.len() } else { 2 };
        req.push_str(&format!(
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {payload_len}\r\n"
        ));
    }
    req.push_str("\r\n");
    if body.is_some() {
        req.push_str(&payload);
    } else if method == "POST" {
        req.push_str("{}");
    }
    s.write_all(req.as_bytes())
        .map_err(|e| transport(format!("send {method} {path}: {e}")))?;
    let (head, body) = read_response(&mut s)
        .map_err(|e| transport(format!("read the answer to {method} {path}: {e}")))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| transport(format!("bad status line: {head}")))?;
    let v: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            transport(format!(
                "{method} {path} answered {status} with non-JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            ))
        })?
    };
    if status >= 400 {
        return Err(WdError {
            error: v["value"]["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string(),
            message: v["value"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}: {v}")),
        });
    }
    Ok(v)
}

/// Reads one HTTP/1.1 response: the head, and the body by its
/// Content-Length, chunked encoding, or up to the end of the connection.
fn read_response(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(bad(if raw.is_empty() {
                "the connection closed without an answer"
            } else {
                "the connection closed inside the answer's header"
            }));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        while body.len() < len {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(bad("the connection closed inside the answer's body"));
            }
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(len);
    } else if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        while !body.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else {
        s.read_to_end(&mut body)?;
    }
    Ok((head, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A WebDriver session (blocking; one command at a time).
pub struct WebDriver {
    pub port: u16,
    pub session: String,
}

impl WebDriver {
    /// One command on this session; the answer's `value`.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        self.cmd_with_timeout(method, path, body, COMMAND_TIMEOUT)
    }

    fn cmd_with_timeout(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, WdError> {
        let full = format!("/session/{}{path}", self.session);
        http(self.port, method, &full, body.as_ref(), timeout).map(|mut v| v["value"].take())
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn try_execute(&self, script: &str, args: Value) -> Result<Value, WdError> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// [`WebDriver::try_execute`] that panics on an error.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.try_execute(script, args)
            .unwrap_or_else(|e| panic!("script failed: {e}\nscript: {script}"))
    }

    /// Runs an async script: it resolves by calling the last argument.
    pub fn execute_async(
        &self,
        script: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, WdError> {
        let ms = timeout.as_millis() as u64;
        self.cmd("POST", "/timeouts", Some(json!({"script": ms})))?;
        self.cmd_with_timeout(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
            timeout + Duration::from_secs(10),
        )
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        match self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        ) {
            Ok(v) => v[ELEMENT_KEY].as_str().map(str::to_string),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css}: {e}"),
        }
    }

    /// Polls (every 50 ms, up to `timeout`) for an element matching `css`.
    pub fn wait_element(&self, css: &str, timeout: Duration) -> String {
        crate::poll_until(timeout, || self.find(css)).unwrap_or_else(|| {
            panic!(
                "no element matches {css} within {timeout:?}; page text: {}",
                self.page_text()
            )
        })
    }

    /// Clicks the element matching `css` as a person would (WebDriver
    /// element click); an input hidden behind its styled label (the Connect
    /// switch) is clicked through that label.
    pub fn click(&self, css: &str) {
        let el = self.wait_element(css, Duration::from_secs(10));
        match self.cmd("POST", &format!("/element/{el}/click"), Some(json!({}))) {
            Ok(_) => {}
            Err(e)
                if e.error == "element not interactable"
                    || e.error == "element click intercepted" =>
            {
                eprintln!("click {css}: {e}; clicking its label instead");
                let label = self
                    .execute(
                        "const e = document.querySelector(arguments[0]); const l = e && e.closest('label'); if (!l) return null; return l;",
                        json!([css]),
                    );
                let Some(lid) = label[ELEMENT_KEY].as_str() else {
                    panic!("click {css}: {e} (and it has no label to click)");
                };
                self.cmd("POST", &format!("/element/{lid}/click"), Some(json!({})))
                    .unwrap_or_else(|e2| panic!("click {css}: {e}; its label: {e2}"));
            }
            Err(e) => panic!("click {css}: {e}"),
        }
    }

    /// Replaces the text of the input matching `css` by typing `text`.
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_element(css, Duration::from_secs(10));
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})))
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// The visible text of the whole page (for failure messages).
    pub fn page_text(&self) -> String {
        self.try_execute(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|e| format!("<can't read the page: {e}>"))
    }

    /// Evaluates the JS expression `expr` every 50 ms until it is truthy
    /// (not null/false/0/""/undefined); returns its value and the time it
    /// took. Panics naming `what` and showing the page after `timeout`.
    pub fn wait_js(&self, timeout: Duration, what: &str, expr: &str) -> (Value, Duration) {
        let script = format!("return ({expr});");
        let start = Instant::now();
        let mut last_err = None;
        loop {
            match self.try_execute(&script, json!([])) {
                Ok(v) if truthy(&v) => return (v, start.elapsed()),
                Ok(_) => {}
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() >= timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({expr}); last error: {last_err:?}; page text:\n{}",
                    self.page_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Arms a MutationObserver that records `Date.now()` in the page the
    /// first time the JS expression `cond` is truthy (also at once, if it
    /// already is). Read it with [`WebDriver::wait_mark`]: polling adds no
    /// error, the time is taken in the page when the DOM changed.
    pub fn mark_when(&self, key: &str, cond: &str) {
        let script = format!(
            r#"
const key = arguments[0];
const cond = () => {{ try {{ return !!({cond}); }} catch (e) {{ return false; }} }};
window.__warrenMarks = window.__warrenMarks || {{}};
const marks = window.__warrenMarks;
delete marks[key];
if (cond()) {{ marks[key] = Date.now(); return true; }}
const obs = new MutationObserver(() => {{
  if (marks[key] === undefined && cond()) {{ marks[key] = Date.now(); obs.disconnect(); }}
}});
obs.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
return false;
"#
        );
        self.execute(&script, json!([key]));
    }

    /// Waits (up to `timeout`) for the mark `key`; returns its page time
    /// (Unix ms).
    pub fn wait_mark(&self, key: &str, timeout: Duration, what: &str) -> f64 {
        let expr = format!("(window.__warrenMarks || {{}})[{}]", json!(key));
        let (v, _) = self.wait_js(timeout, what, &expr);
        v.as_f64()
            .unwrap_or_else(|| panic!("mark {key} is not a number: {v}"))
    }

    /// WebDriver's screenshot of the page, saved as `<screenshot dir>/<name>`
    /// (bounded to 10 s: WebKitGTK 2.50 under Xvfb never answers it; see
    /// [`App::screenshot`]).
    pub fn webdriver_screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let v = self
            .cmd_with_timeout("GET", "/screenshot", None, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let b64 = v
            .as_str()
            .unwrap_or_else(|| panic!("screenshot {name}: not a string"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("screenshot {name}: bad base64: {e}"));
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        let path = screenshot_dir().join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// Saves a PNG of X display `display` as `<screenshot dir>/<name>`.
/// `crop` (width, height) cuts it to that size from the top left.
pub fn screenshot_x(display: &str, name: &str, crop: Option<(u64, u64)>) -> PathBuf {
    let path = screenshot_dir().join(name);
    let import = which("import").unwrap_or_else(|| {
        panic!("screenshots need ImageMagick's `import` (Debian: apt-get install imagemagick)")
    });
    let mut cmd = Command::new(import);
    cmd.args(["-display", display, "-window", "root"]);
    if let Some((w, h)) = crop {
        cmd.arg("-crop").arg(format!("{w}x{h}+0+0"));
    }
    cmd.arg(format!("png:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start import for {name}: {e}"));
    let status = crate::poll_until(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("screenshot {name}: import did not finish within 20 s");
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "screenshot {name}: import failed ({status}): {err}"
    );
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG"),
        "screenshot {name} is not a PNG"
    );
    eprintln!("screenshot: {}", path.display());
    path
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `s` as a JS string literal.
pub fn js_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// The X clipboard's text on `display` (xclip), `None` if empty or xclip failed.
pub fn read_clipboard(display: &str) -> Option<String> {
    let xclip = which("xclip")?;
    let mut cmd = Command::new(xclip);
    cmd.args(["-o", "-selection", "clipboard"])
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().ok()?;
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    // xclip waits for the owner's answer; bound it.
    let status = crate::poll_until(Duration::from_secs(3), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let text = reader.join().ok()?;
    (status?.success() && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").as_deref(),
            Some(&b"Wikipedia"[..])
        );
        assert_eq!(dechunk(b"4\r\nWi"), None);
    }

    #[test]
    fn truthiness_follows_javascript() {
        assert!(!truthy(&Value::Null));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!(12.5)));
        assert!(truthy(&json!([])));
    }

    #[test]
    fn descendants_of_this_process_include_a_child() {
        let mut c = Command::new("sleep").arg("5").spawn().unwrap();
        let d = descendants(std::process::id());
        let _ = c.kill();
        let _ = c.wait();
        assert!(d.contains(&c.id()), "{d:?}");
    }
}
