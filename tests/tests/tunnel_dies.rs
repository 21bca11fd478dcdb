//! A data plane that dies by itself is reported, not hidden: the TUN device
//! is deleted under a connected helper; `warren status` shows the tunnel as
//! failed with the reason within 2 s, the helper undoes what it set up and
//! brings the tunnel back by itself (a new generation), and `warren down` +
//! `up` works afterwards. Laptop and workspace namespaces, real binaries.

use std::time::{Duration, Instant};
use warren_e2e::helper::Status;
use warren_e2e::netns::{ip, AgentOptions, HelperOptions, TunnelLab};
use warren_e2e::poll_until;
use warren_proto::ipc::{SessionState, TunnelInfo, TunnelState};

fn tunnel(status: &Status) -> TunnelInfo {
    status
        .session
        .tunnel
        .clone()
        .expect("a helper with a data plane reports its tunnel")
}

#[test]
fn a_deleted_tun_is_reported_failed_and_the_tunnel_comes_back() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-dies", &[]) else {
        return;
    };
    let (_http, page) = lab.serve_page("www", 8080);
    let _agent = lab.agent(AgentOptions::new("ws", "api").allow_ports("8080"));
    let helper = lab.helper(HelperOptions::default());
    let status = lab.login_up(&helper);
    let v4 = lab.wait_agent(&helper, "ws", "api").v4();
    let url = format!("http://{v4}:8080/");
    assert!(
        lab.wait_page(&url, &page, Duration::from_secs(10))
            .is_some(),
        "the page never came through the tunnel"
    );
    let before = tunnel(&status);
    assert_eq!(before.state, TunnelState::Up);

    // Pull the device out from under the running data plane.
    let deleted = Instant::now();
    ip(&[
        "-n",
        &lab.net.laptop,
        "link",
        "del",
        &helper.options.tun_name,
    ]);
    let failed = poll_until(Duration::from_secs(2), || {
        let t = tunnel(&helper.cli.status());
        (t.state == TunnelState::Failed && t.generation == before.generation).then_some(t)
    });
    let Some(failed) = failed else {
        helper.print_log_tail(40);
        panic!(
            "2 s after the TUN was deleted, status still says {:?}",
            tunnel(&helper.cli.status())
        );
    };
    eprintln!(
        "failure shown after {:?}: {:?}",
        deleted.elapsed(),
        failed.error
    );
    let reason = failed.error.unwrap_or_default();
    assert!(
        reason.contains("tunnel device"),
        "the reason should say what broke: {reason:?}"
    );
    // `warren status` in words too.
    let text = helper.cli.run_ok(&["status"]);
    assert!(text.contains("failed"), "{text}");
    assert_eq!(
        helper.cli.status().session.state,
        SessionState::Connected,
        "the session outlives its data plane"
    );

    // The helper sets it up again by itself, as a new generation.
    let back = poll_until(Duration::from_secs(15), || {
        let t = tunnel(&helper.cli.status());
        (t.state == TunnelState::Up && t.generation > before.generation).then_some(t)
    });
    assert!(
        back.is_some(),
        "the tunnel never came back: {:?}",
        tunnel(&helper.cli.status())
    );
    assert!(lab.tun_exists(&helper), "no TUN after the retry");
    assert!(
        lab.wait_page(&url, &page, Duration::from_secs(10))
            .is_some(),
        "no traffic after the tunnel came back"
    );

    // And down + up works.
    helper.cli.run_ok(&["down"]);
    helper
        .cli
        .wait_state(SessionState::Disconnected, Duration::from_secs(10));
    let gone = poll_until(Duration::from_secs(5), || {
        (!lab.tun_exists(&helper) && !helper.journal().exists()).then_some(())
    });
    assert!(gone.is_some(), "`warren down` left the TUN or the journal");
    helper.cli.up();
    helper
        .cli
        .wait_state(SessionState::Connected, Duration::from_secs(15));
    assert!(
        lab.wait_page(&url, &page, Duration::from_secs(15))
            .is_some(),
        "no traffic after down + up"
    );
}
