//! Runs the real `warren` binary against a stand-in helper (a real
//! `warren_ipc::Listener` on a unix socket) and a stand-in coordinator (a
//! loopback HTTP server answering `/api/v1/me`): login, up, status, down,
//! logout, and the error paths people meet first.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use warren_ipc::{server_handshake, Listener, ListenerOptions};
use warren_proto::ipc::{
    ClientMessage, Event, HelperMessage, Reply, Request, SessionInfo, SessionState, StatusReport,
};
use warren_proto::model::{Agent, Workspace};

const GOOD_TOKEN: &str = "wut_good.secret-part";

fn my_group() -> String {
    // The primary group of this process, so the listener accepts us as any user.
    let out = std::process::Command::new("id")
        .arg("-gn")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[derive(Clone)]
struct Helper {
    session: Arc<Mutex<SessionInfo>>,
    changes: broadcast::Sender<SessionInfo>,
    starts: Arc<Mutex<Vec<(String, String)>>>,
    /// When set, the next event skips a sequence number (a lost event).
    skip_seq: Arc<std::sync::atomic::AtomicBool>,
}

impl Helper {
    fn set(&self, s: SessionInfo) {
        *self.session.lock().unwrap() = s.clone();
        let _ = self.changes.send(s);
    }
}

fn workspace() -> (Vec<Workspace>, Vec<Agent>) {
    (
        vec![Workspace {
            id: "w1".into(),
            name: "api".into(),
            owner: "alice".into(),
        }],
        vec![Agent {
            id: "a1".into(),
            name: "main".into(),
            workspace_id: "w1".into(),
            public_key: None,
            addresses: vec![],
            endpoints: vec![],
            dns_names: vec!["main.api.alice.warren".into(), "api.warren".into()],
            online: true,
        }],
    )
}

/// A stand-in for warrend: Start with the good token connects (after a
/// Connecting step), any other token fails like a 401 would.
fn start_helper(path: PathBuf) -> Helper {
    let (tx, _) = broadcast::channel(16);
    let helper = Helper {
        session: Arc::new(Mutex::new(SessionInfo::disconnected())),
        changes: tx,
        starts: Arc::new(Mutex::new(vec![])),
        skip_seq: Arc::default(),
    };
    let mut listener = Listener::bind(ListenerOptions {
        path,
        group: my_group(),
    })
    .unwrap();
    let h = helper.clone();
    tokio::spawn(async move {
        while let Ok(mut acc) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                if server_handshake(&mut acc.reader, &mut acc.writer, "7.7.7")
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(ClientMessage::Request { id, request })) =
                    acc.reader.read::<ClientMessage>().await
                {
                    let subscribe = request == Request::Subscribe;
                    if let Request::Start { url, token, .. } = &request {
                        h.starts
                            .lock()
                            .unwrap()
                            .push((url.clone(), token.expose().to_string()));
                        let mut s = SessionInfo::disconnected();
                        s.url = Some(url.clone());
                        s.state = SessionState::Connecting;
                        h.set(s.clone());
                        let good = token.expose() == GOOD_TOKEN;
                        let h2 = h.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                            if good {
                                s.state = SessionState::Connected;
                                s.user = Some("alice".into());
                            } else {
                                s.state = SessionState::Failed;
                                s.reason = Some("The coordinator rejected your token — sign in again with `warren login`.".into());
                            }
                            h2.set(s);
                        });
                    }
                    if request == Request::Stop {
                        h.set(SessionInfo::disconnected());
                    }
                    let mut changes = h.changes.subscribe();
                    let reply = if request == Request::Status {
                        Reply::Status(StatusReport {
                            helper_version: "0.1.0".into(),
                            session: h.session.lock().unwrap().clone(),
                            workspace_count: 0,
                            agent_count: 0,
                        })
                    } else {
                        Reply::Ok
                    };
                    acc.writer
                        .write(&HelperMessage::Reply {
                            reply_to: id,
                            reply,
                        })
                        .await
                        .unwrap();
                    if subscribe {
                        let (workspaces, agents) = workspace();
                        let session = h.session.lock().unwrap().clone();
                        let state = Event::State {
                            part: 0,
                            last: true,
                            session,
                            workspaces,
                            agents,
                            stats: vec![],
                        };
                        if acc
                            .writer
                            .write(&HelperMessage::Event {
                                seq: 0,
                                event: state,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        let mut seq = 1;
                        while let Ok(session) = changes.recv().await {
                            if h.skip_seq.swap(false, std::sync::atomic::Ordering::SeqCst) {
                                seq += 1;
                            }
                            let ev = HelperMessage::Event {
                                seq,
                                event: Event::SessionChanged { session },
                            };
                            if acc.writer.write(&ev).await.is_err() {
                                return;
                            }
                            seq += 1;
                        }
                        return;
                    }
                }
            });
        }
    });
    helper
}

/// Answers every HTTP request with `GET /api/v1/me` for the good token, 401 otherwise.
async fn start_coordinator() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let (status, body) = if req.contains(&format!(
                    "authorization: bearer {}",
                    GOOD_TOKEN.to_ascii_lowercase()
                )) {
                    (
                        "200 OK",
                        r#"{"kind":"user","user":"alice","deployment":{"suffix":"warren","ipv4_prefix":"100.64.0.0/10","ipv6_prefix":"fd00:1::/48"},"coordinator_version":"0.1.0"}"#,
                    )
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"error":"unauthorized","message":"bad token"}"#,
                    )
                };
                let resp = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

async fn warren(socket: &Path, config: &Path, args: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("WARREN_CONFIG_DIR", config)
        .env("WARREN_KEYRING", "file")
        .env_remove("WARREN_SOCKET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("warren finished in time")
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_up_status_down_logout() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("helper.sock");
    let config = tmp.path().join("config");
    let helper = start_helper(socket.clone());
    let url = start_coordinator().await;

    // Not signed in yet.
    let out = warren(&socket, &config, &["up"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: not signed in"),
        "{}",
        text(&out.stderr)
    );

    // A bad token is refused and nothing is stored.
    let out = warren(
        &socket,
        &config,
        &["login", "--url", &url, "--token-stdin"],
        "wut_bad.x\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("rejected this token"), "{err}");
    assert!(!err.contains("wut_bad"), "{err}");
    assert!(!config.join("config.json").exists());

    let out = warren(
        &socket,
        &config,
        &["login", "--url", &format!("{url}/"), "--token-stdin"],
        &format!("  {GOOD_TOKEN}\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "Signed in to {url} as alice. Run `warren up` to connect.\n\
             This deployment routes 100.64.0.0/10 and fd00:1::/48 into the tunnel and answers names under .warren."
        )
    );
    assert_eq!(
        std::fs::read_to_string(config.join("token")).unwrap(),
        GOOD_TOKEN
    );
    // The deployment accepted at sign-in is kept, for `up` to pin.
    let saved = std::fs::read_to_string(config.join("config.json")).unwrap();
    assert!(
        saved.contains("\"ipv6_prefix\": \"fd00:1::/48\""),
        "{saved}"
    );

    let out = warren(&socket, &config, &["up"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("Connected as alice to {url}")
    );
    assert_eq!(
        helper.starts.lock().unwrap().last().unwrap(),
        &(url.clone(), GOOD_TOKEN.to_string())
    );

    let out = warren(&socket, &config, &["status", "--json"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["helper_version"], "7.7.7");
    assert_eq!(v["session"]["state"], "connected");
    assert_eq!(v["workspaces"][0]["name"], "api");
    assert_eq!(v["agents"][0]["id"], "a1");
    assert!(!text(&out.stdout).contains(GOOD_TOKEN));

    let out = warren(&socket, &config, &["status"], "").await;
    let table = text(&out.stdout);
    assert!(
        table.starts_with(&format!("Session: connected as alice to {url}")),
        "{table}"
    );
    assert!(
        table.contains("api.warren") && table.contains("online"),
        "{table}"
    );

    let out = warren(&socket, &config, &["down"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        helper.session.lock().unwrap().state,
        SessionState::Disconnected
    );

    let out = warren(&socket, &config, &["logout"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!config.join("token").exists());
    assert!(!config.join("config.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_reports_the_helpers_failure_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("helper.sock");
    let config = tmp.path().join("config");
    let _helper = start_helper(socket.clone());
    // Stored credentials the coordinator no longer accepts.
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.json"), r#"{"url":"https://c.example"}"#).unwrap();
    std::fs::write(config.join("token"), "wut_revoked.x").unwrap();
    let out = warren(&socket, &config, &["up"], "").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Connecting…"), "{err}");
    assert!(
        err.contains("error: The coordinator rejected your token — sign in again"),
        "{err}"
    );
}

#[tokio::test]
async fn helper_not_running_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("nothing.sock");
    let out = warren(&socket, tmp.path(), &["status"], "").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: The Warren helper isn't running"),
        "{err}"
    );
    assert!(err.contains("systemctl start warrend"), "{err}");
}

/// Reads the child's stdout into `seen` until it contains `needle` (20 s at most).
async fn read_until(needle: &str, seen: &mut String, stdout: &mut tokio::process::ChildStdout) {
    use tokio::io::AsyncReadExt;
    let fut = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "watch exited early; got {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} from watch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_redraws_on_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("helper.sock");
    let helper = start_helper(socket.clone());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--socket")
        .arg(&socket)
        .arg("watch")
        .env("WARREN_CONFIG_DIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until("Session: disconnected", &mut seen, &mut stdout).await;
    assert!(seen.starts_with("----\n"), "{seen}");
    assert!(seen.contains("api.warren"), "{seen}");
    let mut s = SessionInfo::disconnected();
    s.state = SessionState::Reconnecting;
    s.reason = Some("can't reach the coordinator".into());
    helper.set(s);
    read_until("Session: reconnecting", &mut seen, &mut stdout).await;
    assert!(seen.matches("----\n").count() >= 2, "{seen}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_a_keyring_falls_back_to_a_private_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let url = start_coordinator().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["login", "--url", &url, "--token-file"])
        .arg({
            let f = tmp.path().join("tok");
            std::fs::write(&f, format!("{GOOD_TOKEN}\n")).unwrap();
            f
        })
        .env("WARREN_CONFIG_DIR", &config)
        .env_remove("WARREN_KEYRING")
        // No session bus: the keyring is unavailable, as on a headless server.
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/warren-test-bus",
        )
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: couldn't use the system keyring"),
        "{err}"
    );
    assert!(!err.contains(GOOD_TOKEN), "{err}");
    let token = config.join("token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), GOOD_TOKEN);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resubscribes_after_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("helper.sock");
    let helper = start_helper(socket.clone());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--socket")
        .arg(&socket)
        .arg("watch")
        .env("WARREN_CONFIG_DIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    read_until("Session: disconnected", &mut seen, &mut stdout).await;
    // Lose an event: watch must notice, say so, resubscribe and redraw.
    helper
        .skip_seq
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut s = SessionInfo::disconnected();
    s.state = SessionState::Reconnecting;
    helper.set(s);
    let mut said = String::new();
    read_until_err("resubscribed to the helper", &mut said, &mut stderr).await;
    assert!(said.contains("missed events"), "{said}");
    read_until("Session: reconnecting", &mut seen, &mut stdout).await;
    child.kill().await.unwrap();
}

async fn read_until_err(needle: &str, seen: &mut String, stderr: &mut tokio::process::ChildStderr) {
    use tokio::io::AsyncReadExt;
    let fut = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stderr.read(&mut buf).await.unwrap();
            assert!(n > 0, "watch exited early; said {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} from watch"));
}
