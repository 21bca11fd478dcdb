//! End-to-end tests of the unix socket transport: a real `Listener` in a
//! temporary directory, the real `Client`, and (when run as root) client
//! processes running as other users to exercise peer authorization.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use warren_ipc::framed::boxed;
use warren_ipc::{
    server_handshake, Client, ClientError, FramedReader, FramedWriter, HandshakeError, Listener,
    ListenerOptions, StateMirror,
};
use warren_proto::ipc::{
    ClientMessage, ErrorCode, Event, Hello, HelperMessage, ProtocolVersion, Reply, Request,
    SessionInfo, SessionState, StatusReport,
};
use warren_proto::model::{Agent, Workspace};

const HELPER_VERSION: &str = "9.8.7";

/// Name of the current process's primary group, so the tests pass as any user.
fn my_group() -> String {
    let gid = nix::unistd::getgid();
    nix::unistd::Group::from_gid(gid)
        .unwrap()
        .expect("primary group has a name")
        .name
}

fn bind(dir: &Path) -> Listener {
    Listener::bind(ListenerOptions {
        path: dir.join("run/helper.sock"),
        group: my_group(),
    })
    .unwrap()
}

fn ws(id: &str, name: &str) -> Workspace {
    Workspace {
        id: id.into(),
        name: name.into(),
        owner: "alice".into(),
    }
}

fn agent(id: &str, ws: &str) -> Agent {
    Agent {
        id: id.into(),
        name: "main".into(),
        workspace_id: ws.into(),
        public_key: None,
        addresses: vec![],
        endpoints: vec![],
        dns_names: vec![format!("main.{ws}.alice.warren")],
        online: true,
    }
}

/// A tiny stand-in for warrend: handshake, answer requests, stream a state.
fn serve(mut listener: Listener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok(mut acc) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if server_handshake(&mut acc.reader, &mut acc.writer, HELPER_VERSION)
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(msg)) = acc.reader.read::<ClientMessage>().await {
                    let ClientMessage::Request { id, request } = msg else {
                        return;
                    };
                    let reply = match &request {
                        Request::Status => Reply::Status(StatusReport {
                            helper_version: HELPER_VERSION.into(),
                            session: SessionInfo::disconnected(),
                            workspace_count: 0,
                            agent_count: 0,
                        }),
                        Request::Reconnect => Reply::Error(warren_proto::ipc::IpcError::new(
                            ErrorCode::BadRequest,
                            "not signed in",
                        )),
                        _ => Reply::Ok,
                    };
                    // An event before the reply must not confuse `request`.
                    let noise = HelperMessage::Event {
                        seq: 99,
                        event: Event::SessionChanged {
                            session: SessionInfo::disconnected(),
                        },
                    };
                    if request != Request::Subscribe {
                        acc.writer.write(&noise).await.unwrap();
                    }
                    acc.writer
                        .write(&HelperMessage::Reply {
                            reply_to: id,
                            reply,
                        })
                        .await
                        .unwrap();
                    if request == Request::Subscribe {
                        let connected = SessionInfo {
                            state: SessionState::Connected,
                            ..SessionInfo::disconnected()
                        };
                        let events = vec![
                            Event::State {
                                part: 0,
                                last: false,
                                session: connected.clone(),
                                workspaces: vec![ws("w1", "api"), ws("w2", "web")],
                                agents: vec![],
                                stats: vec![],
                            },
                            Event::State {
                                part: 1,
                                last: true,
                                session: connected,
                                workspaces: vec![],
                                agents: vec![agent("a1", "w1"), agent("a2", "w2")],
                                stats: vec![],
                            },
                            Event::PeerUpdate {
                                upserted_workspaces: vec![],
                                upserted_agents: vec![],
                                deleted_workspaces: vec!["w2".into()],
                                deleted_agents: vec![],
                            },
                        ];
                        for (seq, event) in events.into_iter().enumerate() {
                            acc.writer
                                .write(&HelperMessage::Event {
                                    seq: seq as u64,
                                    event,
                                })
                                .await
                                .unwrap();
                        }
                    }
                }
            });
        }
    })
}

#[tokio::test]
async fn bind_sets_mode_and_drop_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let listener = bind(dir.path());
    let path = listener.path().to_path_buf();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o755);
    drop(listener);
    assert!(!path.exists());
}

#[tokio::test]
async fn connect_request_and_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let listener = bind(dir.path());
    let path = listener.path().to_path_buf();
    let server = serve(listener);

    let mut client = Client::connect(&path, "0.1.0").await.unwrap();
    assert_eq!(client.helper_hello().app_version, HELPER_VERSION);
    let status = client.status().await.unwrap();
    assert_eq!(status.helper_version, HELPER_VERSION);
    client.request_ok(Request::Stop).await.unwrap();
    match client.request_ok(Request::Reconnect).await {
        Err(ClientError::Helper(e)) => assert_eq!(e.message, "not signed in"),
        other => panic!("expected a helper error, got {other:?}"),
    }

    let mut sub = client.subscribe().await.unwrap();
    let mut mirror = StateMirror::new();
    for _ in 0..3 {
        let (seq, event) = sub.next().await.unwrap().unwrap();
        mirror.apply(seq, &event).unwrap();
    }
    assert!(mirror.is_complete());
    assert_eq!(mirror.workspaces.keys().collect::<Vec<_>>(), vec!["w1"]);
    assert_eq!(mirror.agents.keys().collect::<Vec<_>>(), vec!["a1"]);
    server.abort();
}

#[tokio::test]
async fn version_mismatch_names_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut listener = bind(dir.path());
    let path = listener.path().to_path_buf();
    let server = tokio::spawn(async move {
        let mut acc = listener.accept().await.unwrap();
        server_handshake(&mut acc.reader, &mut acc.writer, HELPER_VERSION).await
    });

    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = boxed(r, w);
    let mut future = Hello::new("42.0.0");
    future.version = ProtocolVersion {
        major: 99,
        minor: 0,
    };
    writer.write(&ClientMessage::Hello(future)).await.unwrap();
    match reader.read::<HelperMessage>().await.unwrap() {
        Some(HelperMessage::Error(e)) => {
            assert_eq!(e.code, ErrorCode::VersionMismatch);
            assert!(e.message.contains("42.0.0"), "{}", e.message);
            assert!(e.message.contains(HELPER_VERSION), "{}", e.message);
            assert!(e.message.contains("99.0"), "{}", e.message);
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    match server.await.unwrap() {
        Err(HandshakeError::VersionMismatch(e)) => assert!(e.message.contains("42.0.0")),
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

/// A fake helper that answers Hello with `reply` and then waits.
async fn fake_helper(path: PathBuf, reply: HelperMessage) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, w) = stream.into_split();
        let mut reader = FramedReader::new(r);
        let mut writer = FramedWriter::new(w);
        let _ = reader.read::<ClientMessage>().await;
        writer.write(&reply).await.unwrap();
        let _ = reader.read::<ClientMessage>().await;
    })
}

#[tokio::test]
async fn client_refuses_a_helper_of_another_major_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sock");
    let mut old = Hello::new("0.0.1");
    old.version = ProtocolVersion { major: 0, minor: 3 };
    let task = fake_helper(path.clone(), HelperMessage::Hello(old)).await;
    let err = Client::connect(&path, "0.1.0").await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ClientError::VersionMismatch { .. }),
        "{err:?}"
    );
    assert!(text.contains("0.0.1") && text.contains("0.1.0"), "{text}");
    assert!(
        text.contains("protocol 0.3") && text.contains("protocol 1.0"),
        "{text}"
    );
    task.abort();
}

#[tokio::test]
async fn client_maps_a_permission_denied_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sock");
    let err = warren_proto::ipc::IpcError::new(
        ErrorCode::PermissionDenied,
        "not in group; run `sudo usermod -aG staff $USER`",
    );
    let task = fake_helper(path.clone(), HelperMessage::Error(err)).await;
    match Client::connect(&path, "0.1.0").await {
        Err(e @ ClientError::PermissionDenied { .. }) => {
            assert!(e.to_string().contains("usermod -aG staff"), "{e}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    task.abort();
}

#[tokio::test]
async fn helper_not_running_is_actionable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.sock");
    let err = Client::connect(&path, "0.1.0").await.unwrap_err();
    assert!(
        matches!(err, ClientError::HelperNotRunning { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("isn't running"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("systemctl start warrend"), "{text}");

    // A socket file with nobody listening is "not running" too.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = Client::connect(&path, "0.1.0").await.unwrap_err();
    assert!(
        matches!(err, ClientError::HelperNotRunning { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn stale_socket_is_replaced_but_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("helper.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let opts = ListenerOptions {
        path: path.clone(),
        group: my_group(),
    };
    // Another test in this binary may fork a child at any moment; until the
    // child execs, it holds a copy of the dropped listener's descriptor and
    // the stale socket briefly answers. Retry for a moment.
    let mut attempts = 0;
    let live = loop {
        match Listener::bind(opts.clone()) {
            Ok(l) => break l,
            Err(warren_ipc::BindError::AlreadyRunning { .. }) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("stale socket not replaced: {e}"),
        }
    };
    match Listener::bind(opts.clone()) {
        Err(e @ warren_ipc::BindError::AlreadyRunning { .. }) => {
            assert!(e.to_string().contains("already running"), "{e}")
        }
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    assert!(path.exists(), "a live helper's socket must survive");
    drop(live);

    std::fs::write(&path, b"not a socket").unwrap();
    assert!(matches!(
        Listener::bind(opts),
        Err(warren_ipc::BindError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[tokio::test]
async fn unknown_group_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Listener::bind(ListenerOptions {
        path: dir.path().join("h.sock"),
        group: "warren-no-such-group-xyz".into(),
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sudo groupadd warren-no-such-group-xyz"),
        "{text}"
    );
}

#[tokio::test]
async fn handshake_refuses_a_request_before_hello() {
    let dir = tempfile::tempdir().unwrap();
    let mut listener = bind(dir.path());
    let path = listener.path().to_path_buf();
    let server = tokio::spawn(async move {
        let mut acc = listener.accept().await.unwrap();
        server_handshake(&mut acc.reader, &mut acc.writer, HELPER_VERSION).await
    });
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = boxed(r, w);
    writer
        .write(&ClientMessage::Request {
            id: 1,
            request: Request::Status,
        })
        .await
        .unwrap();
    match reader.read::<HelperMessage>().await.unwrap() {
        Some(HelperMessage::Error(e)) => assert_eq!(e.code, ErrorCode::Protocol),
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert!(matches!(
        server.await.unwrap(),
        Err(HandshakeError::Protocol(_))
    ));
}

// ---- peer authorization with real processes of other users (needs root) ----

#[cfg(target_os = "linux")]
const CHILD_ENV: &str = "WARREN_IPC_TEST_CHILD_SOCKET";

/// Child half of the authorization tests: when started by `run_child` as
/// another user, connects with the real client and prints the outcome.
#[cfg(target_os = "linux")]
#[test]
fn child_client() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Not started as a child: nothing to do.
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt.block_on(Client::connect(Path::new(&path), "0.1.0"));
    match outcome {
        Ok(c) => println!("RESULT:ok:{}", c.helper_hello().app_version),
        Err(ClientError::PermissionDenied { detail, .. }) => {
            println!("RESULT:denied:{detail}")
        }
        Err(e) => println!("RESULT:other:{e}"),
    }
}

/// Runs `child_client` as uid/gid 65534 with the given supplementary groups.
#[cfg(target_os = "linux")]
fn run_child(path: &Path, gid: u32, groups: &'static [u32]) -> String {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", "child_client", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path);
    // SAFETY: only async-signal-safe credential syscalls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let gs: Vec<nix::unistd::Gid> = groups
                .iter()
                .map(|g| nix::unistd::Gid::from_raw(*g))
                .collect();
            nix::unistd::setgroups(&gs)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT:").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "child printed no result: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn peers_are_authorized_by_credentials() {
    if !nix::unistd::geteuid().is_root() {
        // A skipped check would report the door as checked: fail unless
        // skipping was asked for.
        assert!(
            std::env::var_os("WARREN_ALLOW_SKIP").is_some_and(|v| v == "1"),
            "peers_are_authorized_by_credentials needs root to run clients as other users: run the tests as root, or set WARREN_ALLOW_SKIP=1 to skip it on purpose"
        );
        eprintln!("skipping peers_are_authorized_by_credentials (WARREN_ALLOW_SKIP=1): needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let listener = bind(dir.path());
    let path = listener.path().to_path_buf();
    let group_gid = nix::unistd::getgid().as_raw();
    let server = serve(listener);
    let p = path.clone();

    let results = tokio::task::spawn_blocking(move || {
        // 0660 root:group: the kernel already turns outsiders away.
        let fs_denied = run_child(&p, 65534, &[]);
        // Open the file mode up, as during the bind/chmod window, so that the
        // peer-credential check is what decides.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let cred_denied = run_child(&p, 65534, &[]);
        (fs_denied, cred_denied)
    })
    .await
    .unwrap();
    assert!(results.0.starts_with("denied:"), "{}", results.0);
    assert!(results.1.starts_with("denied:"), "{}", results.1);
    let group = my_group();
    assert!(
        results.1.contains(&format!("sudo usermod -aG {group}")),
        "{}",
        results.1
    );

    // Members by supplementary group and by primary group are let in.
    let p = path.clone();
    let by_primary = tokio::task::spawn_blocking(move || run_child(&p, group_gid, &[]))
        .await
        .unwrap();
    assert_eq!(by_primary, format!("ok:{HELPER_VERSION}"));
    let supplementary: &'static [u32] = Box::leak(vec![group_gid].into_boxed_slice());
    let p = path.clone();
    let by_supplementary = tokio::task::spawn_blocking(move || run_child(&p, 65534, supplementary))
        .await
        .unwrap();
    assert_eq!(by_supplementary, format!("ok:{HELPER_VERSION}"));
    server.abort();
}
