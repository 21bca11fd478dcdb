//! `warren login` through the browser and with a device code, end to end
//! (docs/signin.md): the real coordinator with `--oidc-*` against the test
//! OpenID Provider (tests/oidc), the real `warren` binary as a child
//! process, and headless Chromium playing the person. The CLI's loopback
//! listener refuses a forged callback and keeps waiting for the real one;
//! the stored token then works for `warren up` / `status` through a helper;
//! the device code flow polls to a working token; a sign-in that never
//! arrives ends with the message that says what to do.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use warren_e2e::helper::Cli;
use warren_e2e::oidc::{
    drive_browser_with, http_request, query_param, BrowserOptions, ProviderConfig, TestClient,
    TestProvider, TestUser,
};
use warren_e2e::proc::Proc;
use warren_e2e::{Helper, TestDir};
use warren_proto::ipc::SessionState;

const CLIENT_ID: &str = "warren-coord";
const CLIENT_SECRET: &str = "client-secret-cli-signin";

/// A provider, and a coordinator signing people in through it, with alice
/// linked to her provider subject and owning workspace `api`.
struct Deployment {
    dir: TestDir,
    _provider: TestProvider,
    _coord: Proc,
    url: String,
    alice: TestUser,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

fn admin(db: &std::path::Path, args: &[&str]) {
    let out = Command::new(warren_e2e::bin("warren-coord"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run warren-coord");
    assert!(
        out.status.success(),
        "warren-coord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(name: &str) -> Deployment {
    let dir = TestDir::new(name);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let alice = TestUser::new("alice");
    let config = ProviderConfig::new()
        .client(TestClient::new(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("{url}/oidc/callback"),
        ))
        .user(alice.clone());
    let provider = TestProvider::start(dir.path(), &config);
    let db = dir.join("coord.db");
    let secret_file = dir.join("client-secret");
    // 0600: the coordinator refuses a secret file others can read.
    warren_e2e::netns::write_secret(&secret_file, CLIENT_SECRET);
    admin(&db, &["user", "add", "alice"]);
    admin(
        &db,
        &[
            "user",
            "link-oidc",
            "alice",
            "--issuer",
            &provider.issuer,
            "--subject",
            &alice.subject,
        ],
    );
    admin(&db, &["workspace", "add", "--owner", "alice", "api"]);
    let mut cmd = Command::new(warren_e2e::bin("warren-coord"));
    cmd.arg("serve")
        .arg("--db")
        .arg(&db)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--public-url", &url])
        .args(["--oidc-issuer", &provider.issuer])
        .args(["--oidc-client-id", CLIENT_ID])
        .arg("--oidc-client-secret-file")
        .arg(&secret_file)
        .stdout(Stdio::piped());
    let mut coord = Proc::spawn("coord", dir.path(), cmd, true);
    let printed = warren_e2e::coord::listening_url(&mut coord, &dir.join("coord.stdout"));
    assert_eq!(printed, url);
    Deployment {
        dir,
        _provider: provider,
        _coord: coord,
        url,
        alice,
    }
}

/// `warren login …` running in the background; its stderr arrives line by
/// line. Killed if the test ends early.
struct Login {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Login {
    fn spawn(cli: &Cli, args: &[&str]) -> Login {
        let mut cmd = cli.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start warren login");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Login {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line (trimmed) for which `pick` says yes.
    fn line(&mut self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pick(l.trim()) {
                        return l.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "warren login printed no {what}; stderr so far: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the exit; returns (success, stdout, the rest of stderr).
    fn finish(mut self, within: Duration) -> (bool, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for warren login") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "warren login still running after {within:?}; stderr: {:?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let mut err: Vec<String> = std::mem::take(&mut self.seen);
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            err.push(l);
        }
        (status.success(), out, err.join("\n"))
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn browser_sign_in_refuses_a_forged_callback_and_the_token_works() {
    let d = start("cli-signin-browser");
    let mut helper = Helper::start(d.dir.path(), "root");
    let cli = helper.cli(d.dir.path());
    let mut login = Login::spawn(
        &cli,
        &["login", "--url", &d.url, "--no-browser", "--timeout", "120"],
    );
    let signin_url = login.line("sign-in address", |l| {
        l.starts_with(&format!("{}/signin?", d.url))
    });
    assert_eq!(query_param(&signin_url, "client").as_deref(), Some("cli"));
    assert_eq!(
        query_param(&signin_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let redirect = query_param(&signin_url, "redirect_uri").expect("a redirect_uri");
    assert!(
        redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/callback"),
        "{redirect}"
    );
    let device = query_param(&signin_url, "device").expect("a device name");
    assert!(device.ends_with("(Linux)"), "{device}");

    // Someone else's answer arriving first is refused, and the CLI keeps
    // waiting for its own.
    let forged = http_request(
        "GET",
        &format!("{redirect}?code=forged-code&state=forged-state"),
        &[],
        b"",
    );
    assert_eq!(forged.status, 400, "{}", forged.text());
    assert!(
        forged.text().contains("another sign-in"),
        "{}",
        forged.text()
    );
    let other = http_request(
        "GET",
        &redirect.replace("/callback", "/favicon.ico"),
        &[],
        b"",
    );
    assert_eq!(other.status, 404);

    let r = drive_browser_with(
        &BrowserOptions::new(&signin_url)
            .login(&d.alice.username, &d.alice.password)
            .stop_at(&redirect)
            .deliver()
            .screenshots(&d.dir.join("screenshots")),
    );
    assert!(r.text.contains("you can close this tab"), "{r:?}");
    assert!(r.text.contains("alice"), "{r:?}");
    let (ok, out, err) = login.finish(Duration::from_secs(30));
    assert!(ok, "warren login failed: {err}");
    assert!(
        out.contains(&format!("Signed in as alice on {}", d.url)),
        "{out}"
    );
    assert!(
        err.contains("not this sign-in's") || err.contains("another sign-in"),
        "the forged answer was not reported: {err}"
    );
    // Nothing secret on the terminal: the code and token stay out.
    assert!(
        !out.contains("wut_") && !err.contains("wut_"),
        "{out}\n{err}"
    );

    // The stored token is a working user token.
    cli.run_ok(&["up"]);
    let status = cli.wait_state(SessionState::Connected, Duration::from_secs(15));
    assert!(
        status.workspace_names().contains(&"api".to_string()),
        "{:?}",
        status.workspace_names()
    );
    cli.run_ok(&["down"]);
    helper.terminate();
}

#[test]
fn device_code_sign_in_polls_to_a_working_token() {
    let d = start("cli-signin-device");
    let cli = Cli::new(&d.dir.join("no-helper.sock"), &d.dir.join("cli-config"));
    let mut login = Login::spawn(&cli, &["login", "--url", &d.url, "--device"]);
    let code = login.line("user code", |l| {
        l.len() == 9
            && l.as_bytes()[4] == b'-'
            && l.chars().all(|c| c == '-' || c.is_ascii_alphanumeric())
    });
    let complete = login.line("verification address", |l| l.starts_with("(or open "));
    let complete = complete
        .trim_start_matches("(or open ")
        .split(',')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(complete, format!("{}/device?code={code}", d.url));
    let r = drive_browser_with(
        &BrowserOptions::new(&complete)
            .login(&d.alice.username, &d.alice.password)
            .stop_at("http://127.0.0.1:1/never"),
    );
    assert!(r.text.contains("is now signed in"), "{r:?}");
    let (ok, out, err) = login.finish(Duration::from_secs(40));
    assert!(ok, "warren login --device failed: {err}");
    assert!(
        out.contains(&format!("Signed in as alice on {}", d.url)),
        "{out}"
    );
    // The token was stored where the token path stores it.
    let token_file = std::fs::read_dir(d.dir.join("cli-config"))
        .expect("config dir")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .any(|text| text.contains("wut_"));
    assert!(token_file, "no token stored in the config dir");
}

#[test]
fn a_sign_in_that_never_arrives_says_what_to_do() {
    let d = start("cli-signin-timeout");
    let cli = Cli::new(&d.dir.join("no-helper.sock"), &d.dir.join("cli-config"));
    let login = Login::spawn(
        &cli,
        &["login", "--url", &d.url, "--no-browser", "--timeout", "2"],
    );
    let (ok, _, err) = login.finish(Duration::from_secs(20));
    assert!(!ok, "login without a sign-in succeeded");
    assert!(
        err.contains(
            "no sign-in arrived within 2 seconds; run `warren login` again, or use --device"
        ),
        "{err}"
    );
}

#[test]
fn without_an_identity_provider_login_says_to_use_a_token() {
    let dir = TestDir::new("cli-signin-no-oidc");
    let coord = warren_e2e::Coordinator::start(dir.path());
    let cli = Cli::new(&dir.join("no-helper.sock"), &dir.join("cli-config"));
    let started = Instant::now();
    for args in [
        vec!["login", "--url", &coord.url, "--no-browser"],
        vec!["login", "--url", &coord.url, "--device"],
    ] {
        let out = cli.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("doesn't offer browser sign-in") && err.contains("--token-stdin"),
            "{args:?}: {err}"
        );
    }
    // It says so at once instead of waiting for a browser that can't sign in.
    assert!(started.elapsed() < Duration::from_secs(10));
}
