//! The Windows installer under Wine: the MSI that `installer/build.sh msi`
//! wrote (target/installer/warren-<version>-x86_64.msi) installs in a fresh
//! Wine prefix, its `warrend` service runs (reconfigured with the helper's
//! own `install-service -- --no-tunnel`, as Wine has no Wintun driver),
//! comes back after Wine's "reboot" (`wineserver -k` + `wineboot`), answers
//! `warren.exe status` over its named pipe, is removed and registered again
//! by `warrend uninstall-service` / `install-service`, and `msiexec /x`
//! removes the service and the files.
//!
//! Wine 8 lacks `bcryptprimitives.dll`, which Rust programs load at start;
//! the prefix gets the test-only stub from tests/wine/prefix.sh.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the MSI is, following `CARGO_TARGET_DIR` (the test binary is in
/// `<target>/debug/deps`).
fn msi_path() -> PathBuf {
    let target = warren_e2e::bin_dir()
        .parent()
        .expect("the binaries' directory is inside the target directory")
        .to_path_buf();
    let dir = std::env::var_os("WARREN_INSTALLER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("installer"));
    dir.join(format!("warren-{}-x86_64.msi", env!("CARGO_PKG_VERSION")))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// What a finished command printed.
struct Ran {
    status: ExitStatus,
    out: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status.success()
    }
}

/// A throwaway Wine prefix; its wineserver (and so every Windows process
/// in it, the service included) is killed on drop.
struct Prefix {
    dir: tempfile::TempDir,
    prefix: PathBuf,
    wine: PathBuf,
    wineserver: PathBuf,
    runs: std::cell::Cell<u32>,
}

impl Prefix {
    /// Makes the prefix with tests/wine/prefix.sh (wineboot, the
    /// bcryptprimitives stub) in a new temporary directory.
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("warren-msi-")
            .tempdir()
            .expect("create a temporary directory");
        let prefix = dir.path().join("prefix");
        let script = repo_root().join("tests/wine/prefix.sh");
        let wine = which("wine64")
            .or_else(|| Some(PathBuf::from("/usr/lib/wine/wine64")).filter(|p| p.is_file()))
            .expect("wine64 is not installed: apt-get install wine64");
        let wineserver = wine
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("wineserver")))
            .filter(|p| p.is_file())
            .or_else(|| which("wineserver"))
            .expect("wineserver is not installed: apt-get install wine64");
        let this = Prefix {
            dir,
            prefix,
            wine,
            wineserver,
            runs: std::cell::Cell::new(0),
        };
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(&this.prefix);
        let ran = this.run_bounded(cmd, Duration::from_secs(360), "tests/wine/prefix.sh");
        assert!(
            ran.ok(),
            "tests/wine/prefix.sh could not make a Wine prefix: {}",
            ran.out
        );
        this.start_server();
        this
    }

    /// A wineserver that stays up between commands. Without it the server
    /// exits a few seconds after the last ordinary program, killing the
    /// services, and the next `wine` command starts them afresh: a stop
    /// request would then meet a helper that was never told to stop.
    fn start_server(&self) {
        let mut cmd = Command::new(&self.wineserver);
        cmd.arg("-p");
        let ran = self.run_bounded(cmd, Duration::from_secs(30), "wineserver -p");
        assert!(ran.ok(), "wineserver -p: {}", ran.out);
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINELOADER", &self.wine)
            // No Gecko or Mono download prompts: nothing here needs them.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=");
    }

    /// Runs `cmd` for at most `timeout`, its output in a file (a pipe would
    /// be held open by wineserver and the services it starts).
    fn run_bounded(&self, mut cmd: Command, timeout: Duration, what: &str) -> Ran {
        self.env(&mut cmd);
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let log = self.dir.path().join(format!("cmd-{n}.log"));
        let file = File::create(&log).expect("create a log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log file"))
            .stderr(file);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({cmd:?}): {e}"));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for a child") {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not finish within {timeout:?}; it printed:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        Ran { status, out }
    }

    /// `wine64 args...`, bounded.
    fn wine(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut cmd = Command::new(&self.wine);
        cmd.args(args);
        self.run_bounded(cmd, timeout, &format!("wine64 {}", args.join(" ")))
    }

    fn drive_c(&self) -> PathBuf {
        self.prefix.join("drive_c")
    }

    fn install_dir(&self) -> PathBuf {
        self.drive_c().join("Program Files/Warren")
    }

    /// The service's state as `sc query` says it (RUNNING, STOPPED, ...), or
    /// `None` if there is no such service.
    fn service_state(&self) -> Option<String> {
        let ran = self.wine(&["sc", "query", "warrend"], Duration::from_secs(60));
        parse_sc_state(&ran.out)
    }

    fn wait_for_state(&self, want: &str, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            last = self.service_state();
            if last.as_deref() == Some(want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "the warrend service is not {want} after {timeout:?} (last state: {last:?}); {}",
            self.helper_logs()
        ))
    }

    /// The registry value `name` of the service's key, as `reg query`
    /// prints it.
    fn service_registry(&self, name: &str) -> String {
        let ran = self.wine(
            &[
                "reg",
                "query",
                r"HKLM\System\CurrentControlSet\Services\warrend",
                "/v",
                name,
            ],
            Duration::from_secs(60),
        );
        ran.out
    }

    /// Everything the helper logged. Wine gives services a different
    /// `%ProgramData%` (C:\users\Public) than programs and msiexec
    /// (C:\ProgramData), so both are read.
    fn helper_log_text(&self) -> String {
        let mut text = String::new();
        for dir in ["ProgramData/Warren/logs", "users/Public/Warren/logs"] {
            let dir = self.drive_c().join(dir);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                text.push_str(&format!("--- {}\n", path.display()));
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        text
    }

    /// The end of the helper's logs, for failure messages.
    fn helper_logs(&self) -> String {
        format!("helper logs:\n{}", tail(&self.helper_log_text(), 40))
    }

    /// Wine's shutdown: every process of the prefix, services included, is
    /// killed, as at a power cut.
    fn kill_server(&self) {
        let mut cmd = Command::new(&self.wineserver);
        cmd.arg("-k");
        let _ = self.run_bounded(cmd, Duration::from_secs(30), "wineserver -k");
        let mut cmd = Command::new(&self.wineserver);
        cmd.arg("-w");
        let _ = self.run_bounded(cmd, Duration::from_secs(30), "wineserver -w");
        self.start_server();
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let mut cmd = Command::new(&self.wineserver);
        cmd.arg("-k");
        self.env(&mut cmd);
        let _ = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The STATE of `sc query` output ("        STATE              : 4  RUNNING").
fn parse_sc_state(out: &str) -> Option<String> {
    out.lines()
        .find(|l| l.trim_start().starts_with("STATE"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
}

#[test]
fn sc_state_is_parsed() {
    let out = "SERVICE_NAME: warrend\n        TYPE               : 10  WIN32_OWN_PROCESS\n        STATE              : 4  RUNNING\n";
    assert_eq!(parse_sc_state(out).as_deref(), Some("RUNNING"));
    assert_eq!(parse_sc_state("[SC] OpenService FAILED 1060:\n"), None);
}

#[test]
fn msi_installs_runs_the_service_and_uninstalls_under_wine() {
    let missing = ["x86_64-w64-mingw32-gcc", "flock"]
        .into_iter()
        .find(|tool| which(tool).is_none())
        .map(|tool| {
            format!("{tool} is not installed (apt-get install gcc-mingw-w64-x86-64 util-linux)")
        })
        .or_else(|| {
            (which("wine64").is_none() && !Path::new("/usr/lib/wine/wine64").is_file())
                .then(|| "wine64 is not installed (apt-get install wine64)".to_string())
        });
    if !warren_e2e::run_or_skip("windows_msi", missing.as_deref()) {
        return;
    }
    let msi = msi_path();
    assert!(
        msi.is_file(),
        "{} is missing: build it first with `PROFILE=debug bash installer/build.sh msi` (scripts/test.sh does)",
        msi.display()
    );
    let started = Instant::now();
    let prefix = Prefix::new();
    eprintln!("wine prefix ready in {:?}", started.elapsed());

    // Install, as an administrator would: quiet, with a verbose log.
    let msi_log = prefix.dir.path().join("install.log");
    let msi_arg = msi.to_string_lossy().into_owned();
    let log_arg = msi_log.to_string_lossy().into_owned();
    let t = Instant::now();
    let ran = prefix.wine(
        &["msiexec", "/i", &msi_arg, "/qn", "/l*v", &log_arg],
        Duration::from_secs(300),
    );
    let install_log = String::from_utf8_lossy(&std::fs::read(&msi_log).unwrap_or_default())
        .chars()
        .filter(|c| *c != '\0')
        .collect::<String>();
    assert!(
        ran.ok(),
        "msiexec /i failed ({}): {}\n{}\n{}",
        ran.status,
        ran.out,
        tail(&install_log, 60),
        prefix.helper_logs()
    );
    eprintln!("msiexec /i took {:?}", t.elapsed());

    let dir = prefix.install_dir();
    for file in [
        "warrend.exe",
        "warren.exe",
        "warren-desktop.exe",
        "wintun.dll",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{file} was not installed in {}",
            dir.display()
        );
    }
    assert!(
        prefix.drive_c().join("ProgramData/Warren").is_dir(),
        "the installer did not create %ProgramData%\\Warren"
    );
    let url = prefix.wine(
        &["reg", "query", r"HKCR\warren\shell\open\command", "/ve"],
        Duration::from_secs(60),
    );
    assert!(
        url.out.contains("warren-desktop.exe") && url.out.contains("%1"),
        "the warren:// URL scheme is not registered: {}",
        url.out
    );
    // ALLUSERS=1 puts it in the common Start menu on Windows; Wine's msi
    // puts it in the installing user's.
    let mut start_menus = vec![prefix
        .drive_c()
        .join("ProgramData/Microsoft/Windows/Start Menu/Programs/Warren.lnk")];
    for user in std::fs::read_dir(prefix.drive_c().join("users"))
        .expect("the prefix has C:\\users")
        .flatten()
    {
        start_menus.push(
            user.path()
                .join("AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Warren.lnk"),
        );
    }
    let start_menu = start_menus
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no Start-menu entry in {start_menus:?}"))
        .clone();

    // The MSI started the service (`--service`, the tunnel mode: its
    // adapter is only made on `warren up`, so it runs without Wintun).
    prefix
        .wait_for_state("RUNNING", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("after install: {e}"));
    let image = prefix.service_registry("ImagePath");
    assert!(
        image.contains(r"Warren\warrend.exe") && image.contains("--service"),
        "the service's command line: {image}"
    );
    let start_type = prefix.service_registry("Start");
    assert!(
        start_type.contains("0x2"),
        "not automatic start: {start_type}"
    );
    let account = prefix.service_registry("ObjectName");
    assert!(
        account.contains("LocalSystem"),
        "not LocalSystem: {account}"
    );
    // The custom action ran `warrend install-service`: its description.
    let description = prefix.service_registry("Description");
    assert!(
        description.contains("Warren"),
        "install-service did not run after InstallServices: {description}"
    );

    // `install-service -- --no-tunnel` updates the installed service in place.
    let warrend = r"C:\Program Files\Warren\warrend.exe";
    let ran = prefix.wine(
        &[warrend, "install-service", "--", "--no-tunnel"],
        Duration::from_secs(60),
    );
    assert!(
        ran.ok(),
        "warrend install-service -- --no-tunnel: {}",
        ran.out
    );
    let image = prefix.service_registry("ImagePath");
    assert!(
        image.contains("--service --no-tunnel"),
        "install-service did not update the command line: {image}"
    );

    // The stop request reaches the helper's control handler: Stopped, not
    // killed (a service that ignores it stays STOP_PENDING).
    let stops_before = prefix.helper_log_text().matches("shutting down").count();
    let t = Instant::now();
    let ran = prefix.wine(&["sc", "stop", "warrend"], Duration::from_secs(60));
    assert!(ran.ok(), "sc stop warrend: {}", ran.out);
    prefix
        .wait_for_state("STOPPED", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("after sc stop: {e}"));
    eprintln!("service stopped in {:?}", t.elapsed());
    let stops = prefix.helper_log_text().matches("shutting down").count();
    assert_eq!(
        stops,
        stops_before + 1,
        "the stop request did not reach run's shutdown: {}",
        prefix.helper_logs()
    );
    let exit = prefix.wine(&["sc", "query", "warrend"], Duration::from_secs(60));
    assert!(
        exit.out.contains("WIN32_EXIT_CODE    : 0"),
        "an orderly stop reports exit code 0: {}",
        exit.out
    );
    let ran = prefix.wine(&["sc", "start", "warrend"], Duration::from_secs(60));
    assert!(
        ran.ok(),
        "sc start warrend: {}\n{}",
        ran.out,
        prefix.helper_logs()
    );
    prefix
        .wait_for_state("RUNNING", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("after sc start with --no-tunnel: {e}"));

    // Wine's reboot: every process dies, wineboot starts the auto-start
    // services again.
    let t = Instant::now();
    prefix.kill_server();
    let ran = prefix.wine(&["wineboot"], Duration::from_secs(120));
    assert!(ran.ok(), "wineboot: {}", ran.out);
    prefix
        .wait_for_state("RUNNING", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("after wineserver -k and wineboot: {e}"));
    eprintln!("service running again {:?} after the reboot", t.elapsed());
    assert!(
        warrend_command_lines()
            .iter()
            .any(|c| c.contains("warrend.exe --service --no-tunnel")),
        "no `warrend --service --no-tunnel` process after the reboot: {:?}",
        warrend_command_lines()
    );

    // The CLI reaches it over the named pipe, at the first try: the service
    // says RUNNING only once the pipe listens.
    let warren = r"C:\Program Files\Warren\warren.exe";
    let status = prefix.wine(&[warren, "status"], Duration::from_secs(60));
    eprintln!(
        "warren.exe status under Wine ({}):\n{}",
        status.status, status.out
    );
    assert!(
        status.ok(),
        "warren.exe status did not reach the service over the pipe: {}\n{}",
        status.out,
        prefix.helper_logs()
    );

    // The helper's own uninstall-service stops it in order and deletes the
    // service; install-service brings it back for the MSI to remove.
    let stops_before = prefix.helper_log_text().matches("shutting down").count();
    let ran = prefix.wine(&[warrend, "uninstall-service"], Duration::from_secs(90));
    assert!(ran.ok(), "warrend uninstall-service: {}", ran.out);
    assert_eq!(
        prefix.service_state(),
        None,
        "uninstall-service left the service"
    );
    assert_eq!(
        prefix.helper_log_text().matches("shutting down").count(),
        stops_before + 1,
        "uninstall-service did not stop the helper in order: {}",
        prefix.helper_logs()
    );
    let ran = prefix.wine(
        &[warrend, "install-service", "--", "--no-tunnel"],
        Duration::from_secs(60),
    );
    assert!(
        ran.ok(),
        "warrend install-service after uninstall: {}",
        ran.out
    );
    let ran = prefix.wine(&["sc", "start", "warrend"], Duration::from_secs(60));
    assert!(ran.ok(), "sc start warrend: {}", ran.out);
    prefix
        .wait_for_state("RUNNING", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("after install-service: {e}"));

    // Uninstall: the helper is stopped (so it undoes its network changes),
    // then the service and the files go.
    let stops_before = prefix.helper_log_text().matches("shutting down").count();
    let t = Instant::now();
    let ran = prefix.wine(
        &["msiexec", "/x", &msi_arg, "/qn"],
        Duration::from_secs(300),
    );
    assert!(ran.ok(), "msiexec /x failed: {}", ran.out);
    eprintln!("msiexec /x took {:?}", t.elapsed());
    assert_eq!(
        prefix.helper_log_text().matches("shutting down").count(),
        stops_before + 1,
        "uninstalling did not stop the helper in order: {}",
        prefix.helper_logs()
    );
    let gone = prefix.wine(&["sc", "query", "warrend"], Duration::from_secs(60));
    assert!(
        parse_sc_state(&gone.out).is_none(),
        "the service is still registered after uninstall: {}",
        gone.out
    );
    for file in [
        "warrend.exe",
        "warren.exe",
        "warren-desktop.exe",
        "wintun.dll",
    ] {
        assert!(
            !dir.join(file).exists(),
            "{file} is still in {}",
            dir.display()
        );
    }
    assert!(!start_menu.exists(), "the Start-menu entry is still there");
    let url = prefix.wine(&["reg", "query", r"HKCR\warren"], Duration::from_secs(60));
    assert!(
        !url.ok(),
        "the warren:// URL scheme is still registered: {}",
        url.out
    );
    eprintln!("whole test {:?}", started.elapsed());
}

/// The command lines of the Windows processes running warrend.exe (Wine
/// shows a Windows program's own command line in /proc).
fn warrend_command_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains("warrend.exe") {
                lines.push(line.trim().to_string());
            }
        }
    }
    lines
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
