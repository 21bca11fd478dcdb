//! Per-device tokens (issue 14, must-have 5): a token named after its
//! device is listed with its last use, and revoking it — by the
//! administrator or by its user through the API — disconnects that device
//! within a second with "sign in again". Users see and revoke only their
//! own tokens.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use warren_e2e::{Cli, Coordinator, Helper, TestDir};
use warren_proto::ipc::{ReasonCode, SessionState};

/// Longest time a revocation may take to close the device's connection.
const REVOKE_LIMIT: Duration = Duration::from_secs(1);

/// The public id inside a `wut_<id>_<secret>` token.
fn token_id(token: &str) -> &str {
    &token[4..20]
}

/// One plain HTTP/1.1 request to the coordinator; returns status and body.
fn http(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// `token list --owner OWNER` rows (header checked and dropped), split
/// into columns.
fn token_rows(coord: &Coordinator, owner: &str) -> Vec<Vec<String>> {
    let out = coord.admin(&["token", "list", "--owner", owner]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("ID\tOWNER\tDEVICE\tCREATED\tLAST USED"),
        "token list starts with its header: {out}"
    );
    lines
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z' && s.starts_with("20")
}

/// Polls `warren status --json` until the session leaves Connected for
/// "sign in again"; returns its reason, reason code and how long it took.
/// Gives up at 5 s so a slow close fails with its actual latency.
fn wait_signed_out(cli: &Cli, since: Instant) -> (String, Option<ReasonCode>, Duration) {
    loop {
        if let Some(st) = cli.try_status() {
            let reason = st.session.reason.clone().unwrap_or_default();
            if st.session.state != SessionState::Connected && reason.contains("sign in again") {
                assert_eq!(
                    st.session.state,
                    SessionState::Failed,
                    "a revoked token is not retried: {:?}",
                    st.session
                );
                return (reason, st.session.reason_code, since.elapsed());
            }
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "the device was not signed out within 5 s; last session: {:?}",
                st.session
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn revoking_a_device_token_signs_that_device_out_within_a_second() {
    let dir = TestDir::new("devtok-revoke");
    let coord = Coordinator::start(dir.path());
    coord.add_user("alice");
    let laptop = coord.admin(&[
        "token",
        "create",
        "alice",
        "--device",
        "alice-laptop (Linux)",
    ]);
    assert!(laptop.starts_with("wut_") && !laptop.contains(char::is_whitespace));
    let spare = coord.admin(&["token", "create", "alice", "--device", "alice-phone"]);
    let admin_made = coord.create_token("alice");
    coord.add_workspace("alice", "api");

    let helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());
    let st = cli.login_up_connected(&coord.url, &laptop);
    assert_eq!(st.session.user.as_deref(), Some("alice"));

    // The admin sees the device by name, with its last use once it signed
    // in; the unused ones say "never".
    let (rows, _) = warren_e2e::wait_until(
        Duration::from_secs(3),
        "the laptop token's last use in `token list`",
        || {
            let rows = token_rows(&coord, "alice");
            let used = rows
                .iter()
                .any(|r| r[0] == token_id(&laptop) && r[4] != "never");
            used.then_some(rows)
        },
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    let row = |t: &str| rows.iter().find(|r| r[0] == token_id(t)).cloned().unwrap();
    let l = row(&laptop);
    assert_eq!(l.len(), 5, "{l:?}");
    assert_eq!(
        (l[1].as_str(), l[2].as_str()),
        ("alice", "alice-laptop (Linux)")
    );
    assert!(is_rfc3339_utc(&l[3]) && is_rfc3339_utc(&l[4]), "{l:?}");
    assert!(l[3] <= l[4], "used before it was created: {l:?}");
    let p = row(&spare);
    assert_eq!((p[2].as_str(), p[4].as_str()), ("alice-phone", "never"));
    let a = row(&admin_made);
    assert_eq!((a[2].as_str(), a[4].as_str()), ("-", "never"));
    // No secret in the listing.
    let listing = coord.admin(&["token", "list"]);
    for t in [&laptop, &spare, &admin_made] {
        assert!(!listing.contains(&t[21..]), "a secret in `token list`");
    }

    // Revoking another token leaves the device connected.
    coord.admin(&["token", "revoke", token_id(&spare)]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cli.status().session.state, SessionState::Connected);

    let started = Instant::now();
    coord.admin(&["token", "revoke", token_id(&laptop)]);
    let (reason, code, took) = wait_signed_out(&cli, started);
    assert!(
        took <= REVOKE_LIMIT,
        "the revoked device was signed out after {took:?}, more than {REVOKE_LIMIT:?}"
    );
    assert_eq!(code, Some(ReasonCode::SignInRequired), "{reason}");
    assert!(!reason.contains(&laptop[21..]), "the token in the reason");
    let rows = token_rows(&coord, "alice");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], token_id(&admin_made));
    // A revoked id is gone for good.
    assert!(!coord
        .try_admin(&["token", "revoke", token_id(&laptop)])
        .status
        .success());
}

#[test]
fn users_list_and_revoke_only_their_own_tokens() {
    let dir = TestDir::new("devtok-api");
    let coord = Coordinator::start(dir.path());
    coord.add_user("alice");
    let a1 = coord.admin(&["token", "create", "alice", "--device", "alice-laptop"]);
    let a2 = coord.create_token("alice");
    let bob = coord.user_with_token("bob");
    coord.add_workspace("alice", "api");
    let agent = coord.add_agent("alice", "api", "main");
    let addr = coord.addr;
    // Alice's second device is signed in with a2.
    let helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());
    cli.login_up_connected(&coord.url, &a2);

    let (status, body) = http(addr, "GET", "/api/v1/tokens", Some(&a1));
    assert_eq!(status, 200, "{body}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("a JSON array");
    let ids: Vec<&str> = list.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{body}");
    assert!(
        ids.contains(&token_id(&a1)) && ids.contains(&token_id(&a2)),
        "{body}"
    );
    for t in &list {
        let mine = t["id"] == token_id(&a1);
        assert_eq!(t["current"], mine, "{t}");
        assert_eq!(
            t["device_name"],
            if mine {
                serde_json::json!("alice-laptop")
            } else {
                serde_json::Value::Null
            }
        );
        assert!(is_rfc3339_utc(t["created_at"].as_str().unwrap()), "{t}");
    }
    for secret in [&a1, &a2, &bob, &agent] {
        assert!(!body.contains(&secret[21..]), "a secret in the list");
    }
    assert!(!body.contains(token_id(&bob)) && !body.contains(token_id(&agent)));

    // Someone else's token, an agent token and a made-up id: all 404.
    for id in [token_id(&bob), token_id(&agent), "0123456789abcdef"] {
        let (status, body) = http(addr, "DELETE", &format!("/api/v1/tokens/{id}"), Some(&a1));
        assert_eq!(status, 404, "{id}: {body}");
        assert!(body.contains("GET /api/v1/tokens"), "{body}");
    }
    assert_eq!(http(addr, "GET", "/api/v1/me", Some(&bob)).0, 200);
    assert_eq!(http(addr, "GET", "/api/v1/me", Some(&agent)).0, 200);

    // Agent tokens and no token at all can't use the tokens API.
    assert_eq!(http(addr, "GET", "/api/v1/tokens", Some(&agent)).0, 403);
    let (status, _) = http(
        addr,
        "DELETE",
        &format!("/api/v1/tokens/{}", token_id(&agent)),
        Some(&agent),
    );
    assert_eq!(status, 403);
    assert_eq!(http(addr, "GET", "/api/v1/tokens", None).0, 401);

    // Revoking one's other device's token signs that device out within a
    // second, then the token in use.
    let started = Instant::now();
    let (status, body) = http(
        addr,
        "DELETE",
        &format!("/api/v1/tokens/{}", token_id(&a2)),
        Some(&a1),
    );
    assert_eq!((status, body.as_str()), (204, ""));
    let (reason, code, took) = wait_signed_out(&cli, started);
    assert!(
        took <= REVOKE_LIMIT,
        "the device was signed out {took:?} after its user revoked its token"
    );
    assert_eq!(code, Some(ReasonCode::SignInRequired), "{reason}");
    assert_eq!(http(addr, "GET", "/api/v1/me", Some(&a2)).0, 401);
    let (_, body) = http(addr, "GET", "/api/v1/tokens", Some(&a1));
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1, "{body}");
    // Its use through the API is recorded too.
    assert!(
        list[0]["last_used_at"].as_str().is_some_and(is_rfc3339_utc),
        "{body}"
    );
    let (status, _) = http(
        addr,
        "DELETE",
        &format!("/api/v1/tokens/{}", token_id(&a1)),
        Some(&a1),
    );
    assert_eq!(status, 204);
    assert_eq!(http(addr, "GET", "/api/v1/tokens", Some(&a1)).0, 401);
}
