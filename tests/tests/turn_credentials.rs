//! TURN credentials end to end: a real coturn with `use-auth-secret`, the
//! real `warren-coord serve --turn … --turn-secret-file …`, and a client on
//! the real control link. coturn itself (through its `turnutils_uclient`)
//! must accept the credentials the welcome carries, refuse them with a wrong
//! password and once they have expired, and accept the fresh ones the
//! coordinator sends on the live connection before the first expire.

use base64::Engine as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use warren_control::{ControlConfig, Link};
use warren_e2e::coturn::{self, Coturn};
use warren_e2e::{run_or_skip, set_mode, Coordinator, TestDir};
use warren_proto::control::{Register, Relay, ServerMessage, CONTROL_VERSION};
use warren_proto::Secret;

const SECRET: &str = "e2e-turn-secret-5d1c0b";
/// The credential lifetime forced for this test: long enough for one
/// allocation, short enough to watch a refresh (after 6 s) and an expiry.
const TTL_SECS: u64 = 9;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Connects as a device on the real control link and forwards every
/// `relays` message until the test ends; returns the welcome's relays and
/// the device id.
fn connect_device(
    rt: &tokio::runtime::Runtime,
    url: &str,
    token: &str,
) -> (Vec<Relay>, String, mpsc::Receiver<Vec<Relay>>) {
    let config = ControlConfig {
        url: url.to_string(),
        token: Secret::new(token),
        ca_pem: None,
        register: Register {
            protocol_version: CONTROL_VERSION,
            public_key: base64::engine::general_purpose::STANDARD
                .encode(rand::random::<[u8; 32]>()),
            endpoints: vec![],
            hostname: Some("laptop".into()),
            app_version: "e2e".into(),
        },
    };
    let mut link = rt
        .block_on(Link::connect(&config))
        .unwrap_or_else(|e| panic!("the control link did not open: {e}"));
    let welcome = link.welcome().clone();
    let (tx, rx) = mpsc::channel();
    rt.spawn(async move {
        loop {
            match link.next().await {
                Ok(ServerMessage::Relays { relays }) => {
                    if tx.send(relays).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the control link ended: {e}"),
            }
        }
    });
    (welcome.relays, welcome.id, rx)
}

/// coturn answers an allocation with `username`/`password` with an error
/// (not silence: the client gives up with "Cannot complete Allocation").
fn refused(turn: &Coturn, username: &str, password: &str, what: &str) {
    match turn.allocate(username, password) {
        Ok(()) => panic!("coturn accepted {what}"),
        Err(e) => assert!(
            e.contains("Cannot complete Allocation"),
            "coturn did not refuse {what} the expected way: {e}"
        ),
    }
}

#[test]
fn coturn_accepts_the_issued_credentials_until_they_expire_and_the_fresh_ones_after() {
    if !run_or_skip("turn_credentials", coturn::missing().as_deref()) {
        return;
    }
    // Every coordinator this test binary starts inherits it; this file has
    // only this test.
    std::env::set_var("WARREN_COORD_TURN_TTL_SECS", TTL_SECS.to_string());
    let dir = TestDir::new("turn-credentials");
    let turn = Coturn::start(dir.path(), "coturn", SECRET, "warren");
    let secret_file = dir.join("turn-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    set_mode(&secret_file, 0o600);
    let turn_addr = turn.addr.to_string();
    let coord = Coordinator::start_with_args(
        dir.path(),
        "debug",
        &[
            "--turn",
            &turn_addr,
            "--turn-secret-file",
            secret_file.to_str().unwrap(),
        ],
        None,
    );
    let token = coord.user_with_token("alice");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let connected = unix_now();
    let (relays, device_id, fresh_rx) = connect_device(&rt, &coord.url, &token);
    assert_eq!(relays.len(), 1, "{relays:?}");
    let first = relays[0].clone();
    assert_eq!(first.addr, turn_addr);
    assert_eq!(first.username, format!("{}:{device_id}", first.expires_at));
    assert!(
        (connected + TTL_SECS..=unix_now() + TTL_SECS).contains(&first.expires_at),
        "expires at {} (connected at {connected})",
        first.expires_at
    );

    // coturn takes them, and refuses them with a wrong password.
    if let Err(e) = turn.allocate(&first.username, first.password.expose()) {
        panic!(
            "coturn refused the issued credentials: {e}\ncoturn log:\n{}",
            turn.log_text()
        );
    }
    let wrong = format!("x{}", first.password.expose());
    refused(&turn, &first.username, &wrong, "a wrong password");

    // Fresh credentials arrive on the live connection after two thirds of
    // the lifetime, before the first ones expire.
    let fresh = fresh_rx
        .recv_timeout(Duration::from_secs(TTL_SECS + 5))
        .expect("no `relays` message within the credential lifetime");
    let arrived = unix_now();
    assert!(
        arrived < first.expires_at,
        "fresh credentials came at {arrived}, after the first expired at {}",
        first.expires_at
    );
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].addr, turn_addr);
    assert!(fresh[0].expires_at > first.expires_at);

    // Once the first expire, coturn refuses them but takes the fresh ones.
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS + 5);
    while unix_now() <= first.expires_at {
        assert!(Instant::now() < deadline, "the clock does not move");
        std::thread::sleep(Duration::from_millis(100));
    }
    refused(
        &turn,
        &first.username,
        first.password.expose(),
        "expired credentials",
    );
    assert!(
        unix_now() < fresh[0].expires_at,
        "this machine is too slow for the test's lifetime"
    );
    if let Err(e) = turn.allocate(&fresh[0].username, fresh[0].password.expose()) {
        panic!(
            "coturn refused the refreshed credentials: {e}\ncoturn log:\n{}",
            turn.log_text()
        );
    }

    // Neither the secret nor a password reached the coordinator's log.
    let mut log = String::new();
    for p in coord.stderr_paths() {
        log.push_str(&std::fs::read_to_string(p).unwrap_or_default());
    }
    assert!(log.contains("TURN relays configured"), "{log}");
    for secret in [SECRET, first.password.expose(), fresh[0].password.expose()] {
        assert!(
            !log.contains(secret),
            "a TURN secret or password is in the coordinator's log"
        );
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}
