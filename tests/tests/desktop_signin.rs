//! The real desktop app's browser sign-in (docs/signin.md, flow 1 for the
//! app): `warren-desktop` under Xvfb (tauri-driver + WebKitWebDriver), a real
//! `warren-coord` with `--oidc-*` against the test identity provider, and
//! headless Chromium playing the person's browser.
//!
//! `BROWSER` points the app at a script that only writes down the URL it
//! was asked to open; Chromium signs in from there and stops at the
//! `warren://signin` link, which a second `warren-desktop` launch hands to
//! the running app, as the OS does. Checked: a link no sign-in of this app
//! started is refused with its message; a link with a wrong state is
//! refused while the real sign-in keeps waiting; the real link signs the
//! app in (main window, the sign-in saved, the helper connected), and no
//! link's code reaches the app's log. Cancel ends a sign-in; starting again
//! makes a new one. The new sign-in screen is saved to the screenshot dir
//! (`real-signin-browser*.png`), and with `WARREN_UPDATE_DOCS_SCREENSHOTS=1`
//! to `docs/screenshots/app-signin-browser.png`.
//!
//! Needs what `desktop_app` needs (Xvfb, dbus-daemon, tauri-driver,
//! WebKitWebDriver, the built app) and the npm packages in `tests/oidc`.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use warren_e2e::desktop::{self, Desktop};
use warren_e2e::oidc::{
    drive_browser_with, query_param, BrowserOptions, ProviderConfig, TestClient, TestProvider,
    TestUser,
};
use warren_e2e::proc::Proc;
use warren_e2e::{Helper, TestDir};

const CLIENT_ID: &str = "warren-coord";
const CLIENT_SECRET: &str = "client-secret-desktop-signin";

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

fn admin(db: &Path, args: &[&str]) {
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

/// Runs `warren-desktop <args>` beside the running one, as the OS does for
/// a clicked link, and waits for it to hand over and exit.
fn second_launch(desktop: &Desktop, app_bin: &Path, args: &[OsString], env: &[(String, OsString)]) {
    let mut second = desktop.spawn("second-instance", app_bin, args, env);
    let exited = warren_e2e::poll_until(Duration::from_secs(20), || second.try_wait());
    let status = exited.unwrap_or_else(|| {
        second.kill();
        panic!("a second launch with a link did not hand over to the running app and exit");
    });
    assert!(status.success(), "the second launch exited with {status}");
}

const BROWSER_ERROR: &str =
    "document.querySelector('[data-testid=signin-browser-error]')?.textContent ?? ''";

#[test]
fn the_app_signs_in_through_the_browser_and_refuses_links_it_did_not_start() {
    let tools = desktop::Tools::require();
    let app_bin = desktop::app_binary();
    drop(tools);

    let dir = TestDir::new("desktop-signin");
    std::fs::create_dir_all(dir.join("home")).unwrap();

    // The provider, then the coordinator signing in through it; alice is a
    // Warren user bound to her subject there.
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
            "sub-alice",
        ],
    );
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

    let helper = Helper::start(dir.path(), "root");
    let socket = helper.socket.clone();

    // The "browser" only writes down what it was asked to open.
    let opened = dir.join("browser-url");
    let browser = dir.join("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    warren_e2e::set_mode(&browser, 0o755);

    let desktop = Desktop::start(dir.path());
    let env: Vec<(String, OsString)> = vec![
        ("WARREN_CONFIG_DIR".into(), dir.join("app-config").into()),
        ("HOME".into(), dir.join("home").into()),
        ("WARREN_KEYRING".into(), "file".into()),
        ("WARREN_DESKTOP_LOG_DIR".into(), dir.join("app-logs").into()),
        ("BROWSER".into(), browser.clone().into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    let socket_args: Vec<OsString> = vec!["--socket".into(), socket.clone().into_os_string()];
    let app = desktop.launch(&app_bin, &socket_args, &env);

    // 1. The sign-in screen offers the browser first.
    app.wait_element("[data-testid=signin-browser]", Duration::from_secs(30));
    app.type_into("[data-testid=signin-url]", &url);
    let shot = app.screenshot("real-signin-browser.png");
    // The docs' copy changes with every run (the coordinator's port), so
    // it is rewritten only when asked for.
    if std::env::var_os("WARREN_UPDATE_DOCS_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::copy(&shot, docs.join("app-signin-browser.png")).expect("copy the screenshot");
    }

    // 2. A link before any sign-in was started is refused, with what to do.
    let forged = |state: &str| -> Vec<OsString> {
        let mut a = socket_args.clone();
        a.push(format!("warren://signin?code=forged-code&state={state}").into());
        a
    };
    second_launch(&desktop, &app_bin, &forged("nobody-asked"), &env);
    let (msg, _) = app.wait_js(
        Duration::from_secs(15),
        "the refusal of a link no sign-in started",
        &format!("({BROWSER_ERROR}).includes(\"wasn't started by this app\")"),
    );
    assert_eq!(msg, serde_json::Value::Bool(true));
    assert!(app.find("[data-testid=session-state]").is_none());

    // 3. Sign in with browser: the app opens the coordinator's sign-in page
    // and waits; Cancel returns to the form, and starting again makes a new
    // sign-in.
    let start = || {
        let _ = std::fs::remove_file(&opened);
        app.click("[data-testid=signin-browser]");
        warren_e2e::poll_until(Duration::from_secs(15), || {
            std::fs::read_to_string(&opened)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        })
        .expect("the app did not open the browser (BROWSER) within 15 s")
    };
    let cancelled_url = start();
    app.wait_element(
        "[data-testid=signin-browser-cancel]",
        Duration::from_secs(10),
    );
    app.click("[data-testid=signin-browser-cancel]");
    app.wait_element("[data-testid=signin-browser]", Duration::from_secs(10));
    let signin_url = start();
    assert_ne!(
        query_param(&signin_url, "state"),
        query_param(&cancelled_url, "state"),
        "a new sign-in must have a new state"
    );
    assert!(
        signin_url.starts_with(&format!("{url}/signin?client=app&")),
        "the app opened something else"
    );
    app.wait_js(
        Duration::from_secs(10),
        "the waiting card",
        "document.querySelector('[data-testid=signin-browser-waiting]')?.dataset.phase === 'waiting'",
    );
    assert!(app
        .page_text()
        .contains("Finish signing in in your browser"));
    app.screenshot("real-signin-browser-waiting.png");

    // 4. A link with another state is refused; the real sign-in still waits.
    second_launch(&desktop, &app_bin, &forged("not-the-right-state"), &env);
    app.wait_js(
        Duration::from_secs(15),
        "the refusal of a link with the wrong state",
        &format!("({BROWSER_ERROR}).includes(\"doesn't belong to the sign-in this app started\")"),
    );
    assert!(
        app.find("[data-testid=signin-browser-cancel]").is_some(),
        "a stray link must leave the app waiting for the real one"
    );
    app.screenshot("real-signin-browser-refused.png");

    // 5. The person signs in at the provider; the browser ends on the
    // warren:// link, which the OS hands to a second launch.
    let result = drive_browser_with(
        &BrowserOptions::new(&signin_url)
            .login("alice", &alice.password)
            .stop_at("warren:"),
    );
    assert!(
        result.stopped,
        "the browser did not reach the warren:// link: {}",
        result.text
    );
    let link = result.final_url.expect("the warren:// link");
    assert!(link.starts_with("warren://signin?"));
    let code = query_param(&link, "code").expect("the link's code");
    let mut args = socket_args.clone();
    args.push(link.into());
    second_launch(&desktop, &app_bin, &args, &env);

    // 6. Signed in: the main window, alice's account, the sign-in saved.
    app.wait_js(
        Duration::from_secs(20),
        "the main window after the browser sign-in",
        "!!document.querySelector('[data-testid=session-state]')",
    );
    let (account, _) = app.wait_js(
        Duration::from_secs(5),
        "the account in the header",
        "document.querySelector('[data-testid=header-account]')?.textContent",
    );
    assert!(
        account.as_str().unwrap_or_default().contains("alice"),
        "{account}"
    );
    let config = std::fs::read_to_string(dir.join("app-config").join("config.json"))
        .expect("the sign-in is saved");
    assert!(config.contains(&url), "{config}");
    app.screenshot("real-signin-browser-done.png");

    // 7. The app connects the helper with the new token, as after the token
    // form.
    app.wait_js(
        Duration::from_secs(20),
        "the session to connect",
        "document.querySelector('[data-testid=session-state]')?.dataset.state === 'connected'",
    );

    // 8. The links' codes never reach the app's log.
    let mut logged = String::new();
    for entry in std::fs::read_dir(dir.join("app-logs")).expect("the app's log dir") {
        logged.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(logged.contains("signed in through the browser"), "{logged}");
    for secret in [code.as_str(), "forged-code", "not-the-right-state"] {
        assert!(
            !logged.contains(secret),
            "the app logged a sign-in link's query"
        );
    }
    drop(app);
    drop(helper);
}
