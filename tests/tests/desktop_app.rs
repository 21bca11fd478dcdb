//! The real desktop app (`warren-desktop`, its embedded web UI in WebKit)
//! under Xvfb, driven through tauri-driver + WebKitWebDriver, against a real
//! `warrend --no-tunnel` and a real `warren-coord`.
//!
//! One app start walks the whole story, because WebKit starts slowly on a
//! small machine: the sign-in screen; a wrong token is refused with a
//! message; a real token signs in; Connect lists the user's workspaces and
//! agents; an agent added with the admin CLI appears within 2 s; the copy
//! button puts its DNS name on the X clipboard (read with xclip); a killed
//! helper shows the "helper missing" screen; a new helper on the same socket
//! is found within 3 s and connected again by the app itself (the session was
//! on); About shows both versions; Disconnect;
//! a second launch hands over to the running app and exits; Start on login
//! writes and removes the autostart entry; Sign out removes the saved sign-in
//! and the token.
//! A screenshot of each step goes to `$WARREN_SCREENSHOT_DIR` (default
//! `target/screenshots`, `real-*.png`).
//!
//! Needs Xvfb, dbus-daemon, tauri-driver, WebKitWebDriver and the built app
//! (`npm --prefix ui run build && cargo build -p warren-desktop`); without
//! them it fails and says what to install.

use serde_json::json;
use std::ffi::OsString;
use std::time::{Duration, Instant};
use warren_e2e::desktop::{self, js_str, unix_ms, Desktop};
use warren_e2e::{fake_token, Coordinator, Helper, TestDir};

/// The most an admin change may take to show in the window.
const AGENT_VISIBLE_LIMIT: Duration = Duration::from_secs(2);
/// The most the app may take to find a restarted helper.
const HELPER_FOUND_LIMIT: Duration = Duration::from_secs(3);

/// JS: the agent row named `name` in the workspace whose id the JS
/// expression `ws_id_expr` gives.
fn agent_row_expr(ws_id_expr: &str, name: &str) -> String {
    format!(
        "[...document.querySelectorAll('[data-testid=workspace][data-workspace-id=\"' + {ws_id_expr} + '\"] [data-testid=agent-row]')].find(r => r.querySelector('.agent-name')?.textContent === {})",
        js_str(name)
    )
}

/// JS: the set of workspace names shown, sorted, comma-joined.
const WORKSPACE_NAMES: &str = "[...document.querySelectorAll('[data-testid=workspace]')].filter(w => !w.hidden).map(w => w.querySelector('.workspace-name')?.textContent ?? '').sort().join(',')";

fn session_state_is(state: &str) -> String {
    format!(
        "document.querySelector('[data-testid=session-state]')?.dataset.state === {}",
        js_str(state)
    )
}

#[test]
fn desktop_app_signs_in_connects_follows_the_helper_and_disconnects() {
    // Fail first, and clearly, if the machine can't run the app at all.
    let tools = desktop::Tools::require();
    let app_bin = desktop::app_binary();
    let clipboard_tool = desktop::which("xclip");
    if clipboard_tool.is_none() && !warren_e2e::skip_allowed() {
        panic!("xclip is missing (Debian: apt-get install xclip), so the clipboard check can't run; install it, or set WARREN_ALLOW_SKIP=1 to skip that check on purpose");
    }
    drop(tools);

    let dir = TestDir::new("desktop");
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let coord = Coordinator::start(dir.path());
    let token = coord.user_with_token("alice");
    coord.user_with_token("bob");
    coord.add_workspace("alice", "api");
    coord.add_workspace("alice", "web");
    coord.add_workspace("bob", "secret");
    coord.add_agent("alice", "api", "main");
    coord.add_agent("alice", "api", "db");
    coord.add_agent("alice", "web", "main");
    coord.add_agent("bob", "secret", "main");
    let mut helper = Some(Helper::start(dir.path(), "root"));
    let socket = helper.as_ref().map(|h| h.socket.clone()).unwrap();

    let desktop = Desktop::start(dir.path());
    // Notifications are D-Bus calls to org.freedesktop.Notifications; the
    // private bus has no notification server, but a monitor sees each call.
    let notifications = dir.join("notifications.stdout");
    let mut monitor_cmd = std::process::Command::new("dbus-monitor");
    monitor_cmd
        .arg("--address")
        .arg(&desktop.bus.address)
        .arg("interface='org.freedesktop.Notifications'");
    let _monitor = warren_e2e::Proc::spawn("notifications", dir.path(), monitor_cmd, false);
    let notified = |title: &str| {
        std::fs::read_to_string(&notifications)
            .unwrap_or_default()
            .contains(&format!("string \"{title}\""))
    };
    assert!(
        warren_e2e::poll_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&notifications)
                .is_ok_and(|t| t.contains("NameAcquired"))
                .then_some(())
        })
        .is_some(),
        "dbus-monitor did not start on the test's bus"
    );
    let ready_file = dir.join("app-ready");
    let env: Vec<(String, OsString)> = vec![
        ("WARREN_CONFIG_DIR".into(), dir.join("app-config").into()),
        // A private home: the autostart entry goes to ~/.config/autostart.
        ("HOME".into(), dir.join("home").into()),
        ("WARREN_KEYRING".into(), "file".into()),
        ("WARREN_DESKTOP_LOG_DIR".into(), dir.join("app-logs").into()),
        (
            "WARREN_DESKTOP_READY_FILE".into(),
            ready_file.clone().into(),
        ),
        ("RUST_LOG".into(), "info".into()),
    ];
    let spawned_at = unix_ms();
    let app = desktop.launch(
        &app_bin,
        &["--socket".into(), socket.clone().into_os_string()],
        &env,
    );
    eprintln!("WebDriver session open after {:?}", app.session_took);
    assert_eq!(
        app.app_pids(&app_bin).len(),
        1,
        "exactly one warren-desktop runs under the driver"
    );

    // 1. A fresh config: the sign-in screen, and the app said it painted.
    app.wait_element("[data-testid=signin-url]", Duration::from_secs(30));
    let ready = warren_e2e::poll_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&ready_file)
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .expect(
        "the app did not write WARREN_DESKTOP_READY_FILE within 10 s of showing the sign-in form",
    );
    let mut fields = ready.split_whitespace();
    let ready_at: f64 = fields.next().and_then(|f| f.parse().ok()).expect("unix ms");
    let since_start: f64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .expect("ms since start");
    eprintln!(
        "first paint: {:.0} ms after the session request, {since_start:.0} ms after the app's own start",
        ready_at - spawned_at
    );
    app.screenshot("real-signin.png");

    // 2. A token no coordinator issued is refused, with a sentence.
    app.type_into("[data-testid=signin-url]", &coord.url);
    app.type_into("[data-testid=signin-token]", &fake_token());
    app.click("[data-testid=signin-submit]");
    let (err, _) = app.wait_js(
        Duration::from_secs(15),
        "the sign-in error",
        "document.querySelector('[data-testid=signin-error]')?.textContent",
    );
    let err = err.as_str().unwrap_or_default().to_string();
    assert!(
        err.to_lowercase().contains("token") || err.to_lowercase().contains("rejected"),
        "the wrong-token message should say the token was rejected: {err:?}"
    );
    assert!(
        app.find("[data-testid=session-state]").is_none(),
        "a wrong token must not sign in"
    );
    app.screenshot("real-signin-error.png");

    // 3. The real token signs in: the main window, disconnected.
    app.type_into("[data-testid=signin-token]", &token);
    app.click("[data-testid=signin-submit]");
    app.wait_js(
        Duration::from_secs(15),
        "the main window after sign-in",
        &session_state_is("disconnected"),
    );
    let config = std::fs::read_to_string(dir.join("app-config").join("config.json"))
        .expect("the sign-in is saved");
    assert!(config.contains(&coord.url), "{config}");
    assert!(
        !config.contains(warren_e2e::secret_part(&token)),
        "the token must not be in config.json"
    );

    // 4. Connect: Connected, and exactly alice's workspaces and agents.
    app.click("[data-testid=connect-toggle]");
    let (_, took) = app.wait_js(
        Duration::from_secs(15),
        "the session to show Connected",
        &session_state_is("connected"),
    );
    eprintln!("connect → Connected shown in {took:?}");
    app.wait_js(
        Duration::from_secs(10),
        "3 agents listed",
        "document.querySelectorAll('[data-testid=agent-row]').length === 3",
    );
    let (names, _) = app.wait_js(
        Duration::from_secs(5),
        "the workspace names",
        WORKSPACE_NAMES,
    );
    assert_eq!(names, json!("api,web"), "exactly alice's workspaces");
    let text = app.page_text();
    assert!(
        !text.contains("secret"),
        "bob's workspace is in alice's window: {text}"
    );
    assert!(
        text.contains("main.api.alice.warren") || text.contains("api.warren"),
        "{text}"
    );
    app.screenshot("real-main.png");
    assert!(
        warren_e2e::poll_until(Duration::from_secs(5), || notified("Connected")
            .then_some(()))
        .is_some(),
        "no \"Connected\" notification after connecting"
    );

    // 5. An agent added with the admin CLI appears within 2 s.
    let web_id = app.execute(
        "return [...document.querySelectorAll('[data-testid=workspace]')].find(w => w.querySelector('.workspace-name')?.textContent === 'web')?.dataset.workspaceId",
        json!([]),
    );
    let web_id = web_id
        .as_str()
        .expect("the web workspace is listed")
        .to_string();
    let cache_row = agent_row_expr(&js_str(&web_id), "cache");
    app.mark_when("cache", &cache_row);
    let before_admin = unix_ms();
    coord.add_agent("alice", "web", "cache");
    let after_admin = unix_ms();
    let seen = app.wait_mark(
        "cache",
        Duration::from_secs(5),
        "agent web/cache in the window",
    );
    let took = Duration::from_secs_f64(((seen - after_admin).max(0.0)) / 1000.0);
    eprintln!(
        "agent add → row in the window: {:.0} ms after the admin command exited ({:.0} ms after it started)",
        seen - after_admin,
        seen - before_admin
    );
    assert!(
        took <= AGENT_VISIBLE_LIMIT,
        "the new agent took {took:?} to appear (limit {AGENT_VISIBLE_LIMIT:?})"
    );
    app.screenshot("real-agent-added.png");

    // 5b. The round trip is a ping button; this helper runs without a
    // tunnel, so the answer is "no reply" with the helper's reason.
    let rtt_css = format!(
        "[data-testid=agent-row][data-agent-id={}] [data-testid=rtt]",
        js_str(
            app.execute(&format!("return ({cache_row})?.dataset.agentId"), json!([]))
                .as_str()
                .expect("the cache row has an id")
        )
    );
    app.click(&rtt_css);
    let (title, _) = app.wait_js(
        Duration::from_secs(10),
        "the ping's answer in the row",
        &format!(
            "(e => e?.textContent === 'no reply' && e.title)(document.querySelector({}))",
            js_str(&rtt_css)
        ),
    );
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.contains("without a tunnel")),
        "the ping failure should carry the helper's reason: {title}"
    );

    // 6. Copy puts the DNS name on the X clipboard.
    let cache_id = app.execute(&format!("return ({cache_row})?.dataset.agentId"), json!([]));
    let cache_id = cache_id
        .as_str()
        .expect("the cache row has an id")
        .to_string();
    let copy_css = format!(
        "[data-testid=agent-row][data-agent-id={}] [data-testid=copy-name]",
        js_str(&cache_id)
    );
    app.click(&copy_css);
    app.wait_js(
        Duration::from_secs(5),
        "the copy button to say Copied",
        &format!(
            "document.querySelector({})?.classList.contains('copied')",
            js_str(&copy_css)
        ),
    );
    match clipboard_tool {
        Some(_) => {
            let text = warren_e2e::poll_until(Duration::from_secs(5), || {
                desktop::read_clipboard(&desktop.xvfb.display)
            });
            assert_eq!(
                text.as_deref().map(str::trim),
                Some("cache.web.alice.warren"),
                "the clipboard should hold the agent's DNS name"
            );
            eprintln!("clipboard: {:?}", text.unwrap_or_default());
        }
        None => eprintln!("clipboard not checked: xclip is missing (apt-get install xclip)"),
    }

    // 7. The helper goes away: the "helper missing" screen.
    let before_kill = unix_ms();
    app.mark_when(
        "missing",
        "document.querySelector('[data-testid=helper-trouble]')?.dataset.state === 'missing'",
    );
    drop(helper.take());
    let missing_at = app.wait_mark(
        "missing",
        Duration::from_secs(10),
        "the helper-missing screen",
    );
    eprintln!(
        "helper killed → missing screen: {:.0} ms",
        missing_at - before_kill
    );
    let message = app.execute(
        "return document.querySelector('[data-testid=helper-message]')?.textContent ?? ''",
        json!([]),
    );
    assert!(
        message.as_str().is_some_and(|m| !m.is_empty()),
        "the missing screen says what to do"
    );
    app.screenshot("real-helper-missing.png");

    // 8. A new helper on the same socket is found within 3 s.
    app.mark_when(
        "back",
        "!!document.querySelector('[data-testid=session-state]')",
    );
    let restart_at = unix_ms();
    let started = Instant::now();
    helper = Some(Helper::start(dir.path(), "root"));
    let socket_up = unix_ms();
    eprintln!("new helper's socket accepts after {:?}", started.elapsed());
    let back_at = app.wait_mark(
        "back",
        Duration::from_secs(10),
        "the main window after the helper came back",
    );
    let took = Duration::from_secs_f64(((back_at - restart_at).max(0.0)) / 1000.0);
    eprintln!(
        "helper restarted → app found it: {:.0} ms after the restart began ({:.0} ms after its socket was up)",
        back_at - restart_at,
        back_at - socket_up
    );
    assert!(
        took <= HELPER_FOUND_LIMIT,
        "the app took {took:?} to find the new helper (limit {HELPER_FOUND_LIMIT:?})"
    );
    app.screenshot("real-helper-back.png");

    // 9. A new helper starts without a session; the person was connected
    // and didn't ask to stop, so the app hands it the token again by itself.
    let (_, resumed) = app.wait_js(
        Duration::from_secs(15),
        "Connected again through the new helper, without a click",
        &session_state_is("connected"),
    );
    eprintln!("helper found → connected again: {resumed:?}");
    assert!(
        !notified("Disconnected"),
        "a helper back within seconds should not be reported as a drop"
    );
    let connected_notices = || {
        std::fs::read_to_string(&notifications)
            .unwrap_or_default()
            .matches("string \"Connected\"")
            .count()
    };
    assert!(
        warren_e2e::poll_until(Duration::from_secs(5), || (connected_notices() >= 2)
            .then_some(()))
        .is_some(),
        "no second \"Connected\" notification after the app reconnected the new helper"
    );
    app.wait_js(
        Duration::from_secs(10),
        "4 agents listed",
        "document.querySelectorAll('[data-testid=agent-row]').length === 4",
    );
    app.screenshot("real-reconnected.png");

    // 10. About names the app's and the helper's versions.
    app.click("[data-testid=nav-about]");
    let (app_version, _) = app.wait_js(
        Duration::from_secs(5),
        "the app version on About",
        "document.querySelector('[data-testid=about-app-version]')?.textContent?.match(/^\\d+\\.\\d+/) && document.querySelector('[data-testid=about-app-version]').textContent",
    );
    let (helper_version, _) = app.wait_js(
        Duration::from_secs(5),
        "the helper version on About",
        "document.querySelector('[data-testid=about-helper-version]')?.textContent?.match(/^\\d+\\.\\d+/) && document.querySelector('[data-testid=about-helper-version]').textContent",
    );
    eprintln!("About: app {app_version}, helper {helper_version}");
    app.screenshot("real-about.png");
    app.click("[data-testid=nav-workspaces]");

    // 11. Disconnect.
    app.click("[data-testid=connect-toggle]");
    app.wait_js(
        Duration::from_secs(15),
        "Disconnected",
        &session_state_is("disconnected"),
    );
    app.screenshot("real-disconnected.png");
    // The tray follows the same change within milliseconds; a second is
    // ample for a wrong notification to show up.
    assert!(
        warren_e2e::poll_until(Duration::from_secs(1), || notified("Disconnected")
            .then_some(()))
        .is_none(),
        "a disconnect the person asked for was notified as a drop"
    );

    // 12. One instance only: a second launch in the same session hands over
    // to the running app (which shows its window) and exits.
    let mut second = desktop.spawn(
        "second-instance",
        &app_bin,
        &["--socket".into(), socket.clone().into_os_string()],
        &env,
    );
    let exited = warren_e2e::poll_until(Duration::from_secs(20), || second.try_wait());
    let status = exited.unwrap_or_else(|| {
        second.kill();
        panic!("a second warren-desktop kept running next to the first")
    });
    assert!(status.success(), "the second launch exited with {status}");
    let shown = warren_e2e::poll_until(Duration::from_secs(10), || {
        warren_e2e::read_all_files(&dir.join("app-logs"))
            .iter()
            .any(|(_, text)| text.contains("second launch: showing the window"))
            .then_some(())
    });
    assert!(
        shown.is_some(),
        "the running app did not hear of the second launch"
    );
    assert_eq!(
        app.app_pids(&app_bin).len(),
        1,
        "still exactly one warren-desktop"
    );

    // 13. Start on login writes the session's autostart entry, and taking
    // it back removes it; the setting is saved.
    app.click("[data-testid=nav-settings]");
    let autostart_dir = dir.join("home").join(".config").join("autostart");
    let entry = || {
        std::fs::read_dir(&autostart_dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("warren-desktop")))
    };
    app.click("[data-testid=settings-autostart]");
    let written = warren_e2e::poll_until(Duration::from_secs(10), entry)
        .expect("Start on login wrote no autostart entry naming warren-desktop");
    eprintln!("autostart entry: {}", written.display());
    let saved = std::fs::read_to_string(dir.join("app-config").join("desktop.json"))
        .expect("the settings are saved");
    assert!(saved.contains("\"start_on_login\": true"), "{saved}");
    app.click("[data-testid=settings-autostart]");
    assert!(
        warren_e2e::poll_until(Duration::from_secs(10), || entry().is_none().then_some(()))
            .is_some(),
        "turning Start on login off left {}",
        written.display()
    );

    // 14. Sign out: back to the sign-in form, the saved sign-in and the
    // token are gone.
    app.click("[data-testid=sign-out]");
    app.click("[data-testid=sign-out-confirm]");
    app.wait_element("[data-testid=signin-url]", Duration::from_secs(10));
    let config_dir = dir.join("app-config");
    assert!(
        !config_dir.join("config.json").exists(),
        "sign-out left the saved sign-in"
    );
    assert!(
        !config_dir.join("token").exists(),
        "sign-out left the token file"
    );
    app.screenshot("real-signed-out.png");

    // The app's log names no token.
    let logs = warren_e2e::read_all_files(&dir.join("app-logs"));
    assert!(
        !logs.is_empty(),
        "the app writes its log to WARREN_DESKTOP_LOG_DIR"
    );
    for (path, text) in &logs {
        assert!(
            !text.contains(warren_e2e::secret_part(&token)),
            "the token is in {}",
            path.display()
        );
    }
    drop(app);
    drop(helper);
}
