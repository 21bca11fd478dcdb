//! The `warren-agent` binary against a fake coordinator: how it ends when
//! the coordinator no longer takes its token (at connect, or later on a
//! live link), and that a bad `WARREN_BACKOFF_MAX_MS` stops it with a
//! sentence instead of being ignored. These are the messages an operator
//! reads in the agent's log.

use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use warren_proto::control::{ApiError, ServerMessage, TokenKind, Welcome, CONTROL_VERSION};
use warren_proto::model::DeploymentInfo;

/// Runs the agent against `url` with a token file; kills it if it has not
/// ended within 20 s (it should end by itself).
fn run_agent(url: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wat_test_secret\n").unwrap();
    // The agent refuses a token file others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren-agent"));
    cmd.args(["--coordinator", url, "--token-file"])
        .arg(&token)
        .args(["--listen-port", "0", "--endpoint", "127.0.0.1:9"])
        .env_remove("WARREN_BACKOFF_MAX_MS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent did not stop by itself: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_token_refused_at_connect_stops_the_agent_with_what_to_do() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Every attempt (the agent must not retry, but be safe) gets a 401.
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = r#"{"error":"unauthorized","message":"unknown token"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let out = run_agent(&url, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("rejected this agent's token"), "{err}");
    assert!(err.contains("warren-coord agent add"), "{err}");
    assert!(!err.contains("wat_test_secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_on_a_live_link_stops_the_agent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _register = ws.next().await;
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: CONTROL_VERSION,
            coordinator_version: "test".into(),
            deployment: DeploymentInfo {
                suffix: "warren".into(),
                ipv4_prefix: "100.64.0.0/10".into(),
                ipv6_prefix: "fd00::/48".into(),
            },
            user: "alice".into(),
            kind: TokenKind::Agent,
            id: "agent-1".into(),
            addresses: vec![],
            relays: vec![],
        });
        let revoked = ServerMessage::Error(ApiError {
            error: "unauthorized".into(),
            message: "the agent was removed".into(),
        });
        for msg in [welcome, revoked] {
            let text = serde_json::to_string(&msg).unwrap();
            ws.send(Message::text(text)).await.unwrap();
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    let out = tokio::task::spawn_blocking(move || run_agent(&url, &[]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("revoked this agent: the agent was removed"),
        "{err}"
    );
}

#[test]
fn a_bad_backoff_cap_is_an_error_not_ignored() {
    // Nothing listens here; the agent must stop before trying anyway.
    let out = run_agent(
        "http://127.0.0.1:9",
        &[("WARREN_BACKOFF_MAX_MS", "thirty seconds")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"WARREN_BACKOFF_MAX_MS="thirty seconds" is not a whole number"#),
        "{err}"
    );
}
