//! A subscriber that stops reading must never hold anyone else up: with a
//! state large enough to fill the socket buffers, a fresh subscriber still
//! sees changes within a second, the helper cuts the stalled one off — with
//! a `SlowSubscriber` error that arrives before the close, so the client
//! learns why and resubscribes — and the coordinator stream keeps flowing.

use std::time::{Duration, Instant};
use warren_e2e::{ipc_request, Coordinator, Helper, MirrorWatcher, RawIpc, Recv, TestDir};
use warren_proto::frame::encode;
use warren_proto::ipc::{ClientMessage, ErrorCode, HelperMessage, Reply, Request, SessionState};
use warren_proto::Secret;

const SEED_WORKSPACES: usize = 3000;
const AGENTS_PER_WORKSPACE: usize = 2;
/// What the stalled subscriber is sent before the helper must have given up
/// on it (far beyond socket buffers; a bounded queue stays well below).
const PUSH_BYTES: usize = 64 * 1024 * 1024;

/// Seeds alice with many workspaces; returns how many agents she has.
fn seed(coord: &Coordinator) -> usize {
    let out = coord.try_admin(&[
        "seed",
        "--owner",
        "alice",
        "--workspaces",
        &SEED_WORKSPACES.to_string(),
        "--agents-per-workspace",
        &AGENTS_PER_WORKSPACE.to_string(),
    ]);
    if out.status.success() {
        return SEED_WORKSPACES * AGENTS_PER_WORKSPACE;
    }
    // No `seed` command: fall back to a smaller state made one by one.
    eprintln!(
        "`warren-coord seed` failed ({}), adding agents one by one",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let n = 150;
    for i in 0..n {
        let ws = format!("w{i}");
        coord.add_workspace("alice", &ws);
        for a in 0..AGENTS_PER_WORKSPACE {
            coord.add_agent("alice", &ws, &format!("a{a}"));
        }
    }
    n * AGENTS_PER_WORKSPACE
}

#[test]
fn stalled_subscriber_is_cut_off_and_others_keep_up() {
    let dir = TestDir::new("slow");
    let coord = Coordinator::start(dir.path());
    let token = coord.user_with_token("alice");
    let seeded = seed(&coord);
    coord.add_workspace("alice", "live");

    let mut helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());
    cli.login(&coord.url, &token);
    cli.up();
    warren_e2e::wait_until(Duration::from_secs(20), "the seeded state", || {
        cli.try_status()
            .filter(|s| s.session.state == SessionState::Connected && s.agents.len() == seeded)
    });

    // The stalled one: subscribes, then never reads.
    let mut slow = RawIpc::connect_hello(&helper.socket);
    slow.send_request(Request::Subscribe);
    slow.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("set write timeout");

    // A healthy subscriber gets the whole state and then each change fast.
    let fast = MirrorWatcher::start(&helper.socket);
    fast.wait(Duration::from_secs(20), "the full state", |m| {
        m.is_complete() && m.agents.len() == seeded
    });
    coord.add_agent("alice", "live", "one");
    let t = Instant::now();
    fast.wait(Duration::from_secs(5), "agent live/one", |m| {
        m.agents.values().any(|a| a.name == "one")
    });
    let took = t.elapsed();
    assert!(
        took <= Duration::from_secs(1),
        "with a stalled subscriber, agent add took {took:?} to reach another"
    );

    // Keep the stalled one falling further behind: the user disconnects and
    // connects again and again, and every new session streams the whole
    // state to every subscriber. Push at least PUSH_BYTES at it: a helper
    // whose per-subscriber queue is bounded must have cut it off by then.
    let m = fast.mirror();
    let state_bytes = serde_json::to_vec(&(
        m.workspaces.values().collect::<Vec<_>>(),
        m.agents.values().collect::<Vec<_>>(),
    ))
    .expect("encode the state")
    .len();
    let cycles_needed = PUSH_BYTES.div_ceil(state_bytes);
    let probe = encode(&ClientMessage::Request {
        id: 1000,
        request: Request::Status,
    })
    .expect("encode Status");
    let start = Instant::now();
    let mut cut_off = false;
    let mut cycles = 0;
    // Bounded well below the helper's 30 s: once it has cut the subscriber
    // off, the subscriber has that long to read the rest and the reason.
    while cycles < cycles_needed && start.elapsed() < Duration::from_secs(20) {
        // Writing to a socket the helper has closed fails (EPIPE). The
        // helper keeps a cut-off subscriber's socket open until it has read
        // the reason, so this is only an early way out.
        if slow.send_raw(&probe).is_err() {
            cut_off = true;
            break;
        }
        assert_eq!(
            ipc_request(&helper.socket, Request::Stop).expect("Stop"),
            Reply::Ok
        );
        fast.wait(Duration::from_secs(10), "the session to stop", |m| {
            m.session
                .as_ref()
                .is_some_and(|s| s.state != SessionState::Connected)
        });
        assert_eq!(
            ipc_request(
                &helper.socket,
                Request::Start {
                    url: coord.url.clone(),
                    token: Secret::new(token.clone()),
                    ca: None,
                    deployment: None,
                },
            )
            .expect("Start"),
            Reply::Ok
        );
        fast.wait(Duration::from_secs(10), "the state after a restart", |m| {
            m.agents.len() == seeded + 1
                && m.session
                    .as_ref()
                    .is_some_and(|s| s.state == SessionState::Connected)
        });
        cycles += 1;
    }
    eprintln!(
        "stalled subscriber: {} after {cycles} stop/start cycles of {state_bytes} bytes of state in {:?}; helper peak RSS {:?} KiB",
        if cut_off { "closed" } else { "not closed yet" },
        start.elapsed(),
        helper.peak_rss_kib()
    );

    // Read what the helper left for it: every frame whole, then the reason
    // DESIGN.md promises ("disconnected with a reason and can resubscribe"),
    // then the close. A close without the reason fails.
    let drain_start = Instant::now();
    let mut frames = 0u64;
    let reason = loop {
        match slow.recv(Duration::from_secs(3)) {
            Recv::Message(HelperMessage::Error(e)) => break e,
            Recv::Message(_) => frames += 1,
            Recv::Closed => panic!(
                "the helper closed the stalled subscriber's connection after {frames} frames without saying why (expected a SlowSubscriber error first)"
            ),
            Recv::Timeout => panic!(
                "the helper never cut off a subscriber that stopped reading ({frames} frames were waiting for it, all well-formed)"
            ),
            Recv::Garbage(e) => panic!("the stalled subscriber's stream was corrupted: {e}"),
        }
        assert!(
            drain_start.elapsed() < Duration::from_secs(30),
            "draining the stalled subscriber took over 30 s"
        );
    };
    assert_eq!(reason.code, ErrorCode::SlowSubscriber, "{reason:?}");
    assert!(
        reason.message.contains("subscribe again"),
        "the reason should say how to recover: {reason:?}"
    );
    match slow.recv(Duration::from_secs(5)) {
        Recv::Closed => {}
        other => panic!(
            "after the SlowSubscriber error the helper must close the connection, got {other:?}"
        ),
    }
    eprintln!("stalled subscriber: {frames} frames, then {reason:?}, then the close");

    // It can resubscribe: a new connection gets the whole state.
    let again = MirrorWatcher::start(&helper.socket);
    again.wait(
        Duration::from_secs(20),
        "the full state after resubscribing",
        |m| m.is_complete() && m.agents.len() == seeded + 1,
    );
    drop(again);

    // Everyone else is fine, and the coordinator stream still flows.
    assert!(helper.is_running(), "the helper died");
    assert!(
        fast.ended().is_none(),
        "the healthy subscriber was cut: {:?}",
        fast.ended()
    );
    coord.add_agent("alice", "live", "two");
    let t = Instant::now();
    fast.wait(Duration::from_secs(5), "agent live/two", |m| {
        m.agents.values().any(|a| a.name == "two")
    });
    assert!(t.elapsed() <= Duration::from_secs(1), "{:?}", t.elapsed());
    let st = cli.status();
    assert_eq!(st.session.state, SessionState::Connected);
    assert!(st.agents.iter().any(|a| a.name == "two"));
}
