//! The user's token goes to the OS keyring, not to a file: `warren login`
//! (the same `warren-client` code the desktop app signs in with) against a
//! real coordinator, with a real Secret Service (gnome-keyring on a private
//! D-Bus session bus), read back with `secret-tool`; `warren logout` removes
//! it again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use warren_e2e::coord::Coordinator;
use warren_e2e::{bin, poll_until, TestDir};

/// A private session bus with an unlocked gnome-keyring on it; both are
/// killed on drop, even when the test fails.
struct SecretService {
    env: Vec<(&'static str, PathBuf)>,
    bus_address: String,
    children: Vec<Child>,
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn require(cmd: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{cmd} is missing: install the Debian package {package} (scripts/test.sh does)"
    );
}

impl SecretService {
    fn start(dir: &Path) -> Self {
        require("dbus-daemon", "dbus");
        require("gnome-keyring-daemon", "gnome-keyring");
        require("secret-tool", "libsecret-tools");
        let home = dir.join("home");
        let runtime = dir.join("run");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&runtime).unwrap();
        warren_e2e::set_mode(&runtime, 0o700);
        let bus = dir.join("bus");
        let bus_address = format!("unix:path={}", bus.display());
        let mut svc = SecretService {
            env: vec![
                ("HOME", home.clone()),
                ("XDG_RUNTIME_DIR", runtime),
                ("XDG_DATA_HOME", home.join(".local/share")),
            ],
            bus_address,
            children: Vec::new(),
        };
        let dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={}", svc.bus_address))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        svc.children.push(dbus);
        assert!(
            poll_until(Duration::from_secs(10), || bus.exists().then_some(())).is_some(),
            "dbus-daemon did not create {}",
            bus.display()
        );
        let mut keyring = svc
            .command("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        // The login keyring's password; a test keyring in a temporary home.
        let mut stdin = keyring.stdin.take().expect("piped stdin");
        stdin.write_all(b"warren-test").unwrap();
        drop(stdin);
        svc.children.push(keyring);
        let ready = poll_until(Duration::from_secs(15), || {
            let out = svc.secret_tool_store("probe", "probe", "x");
            out.status.success().then_some(())
        });
        assert!(ready.is_some(), "gnome-keyring never answered on the bus");
        svc
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn secret_tool_store(&self, service: &str, user: &str, secret: &str) -> Output {
        let mut child = self
            .command("secret-tool")
            .args(["store", "--label=warren test", "service", service])
            .args(["username", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run secret-tool");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(secret.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// The secret stored for (`service`, `user`), if any.
    fn lookup(&self, service: &str, user: &str) -> Option<String> {
        let out = self
            .command("secret-tool")
            .args(["lookup", "service", service, "username", user])
            .output()
            .expect("run secret-tool");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `warren ARGS` using this keyring (no `WARREN_KEYRING=file`).
    fn warren(&self, config: &Path, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(bin("warren"))
            .args(["--socket", "/nonexistent/warren-test.sock"])
            .args(args)
            .env("WARREN_CONFIG_DIR", config)
            .env_remove("WARREN_KEYRING")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run warren");
        let _ = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn login_keeps_the_token_in_the_os_keyring_and_logout_removes_it() {
    let dir = TestDir::new("os-keyring");
    let keyring = SecretService::start(&dir.join("keyring"));
    let coord_dir = dir.join("coord");
    std::fs::create_dir_all(&coord_dir).unwrap();
    let coord = Coordinator::start(&coord_dir);
    let token = coord.user_with_token("alice");
    let config = dir.join("config");

    let out = keyring.warren(
        &config,
        &["login", "--url", &coord.url, "--token-stdin"],
        &format!("{token}\n"),
    );
    assert!(out.status.success(), "login failed: {}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("keyring"),
        "login fell back from the keyring: {}",
        text(&out)
    );
    assert_eq!(
        keyring.lookup("warren", &coord.url).as_deref(),
        Some(token.as_str()),
        "the keyring has no (or another) token for {}",
        coord.url
    );
    assert!(
        !config.join("token").exists(),
        "a plain-text token file was written although the keyring worked"
    );
    let saved = std::fs::read_to_string(config.join("config.json")).unwrap();
    assert!(
        !saved.contains(warren_e2e::secret_part(&token)),
        "config.json holds the token: {saved}"
    );
    assert!(saved.contains("\"user\": \"alice\""), "{saved}");

    let out = keyring.warren(&config, &["logout"], "");
    assert!(out.status.success(), "logout failed: {}", text(&out));
    assert_eq!(
        keyring.lookup("warren", &coord.url),
        None,
        "logout left the token in the keyring"
    );
    assert!(!config.join("config.json").exists());
}
