//! The data plane end to end, in two network namespaces: a "laptop" running
//! `warrend` and a "workspace" running the coordinator, an agent and
//! a plain HTTP server on its loopback. From the laptop, `curl` to the
//! agent's tunnel address must get the page, through the helper's TUN and
//! WireGuard; `warren down` must leave no TUN behind. Needs root and
//! `/dev/net/tun`: fails otherwise, unless `WARREN_ALLOW_SKIP=1` allows the
//! skip.

use std::time::Duration;
use warren_e2e::netns::{http_url, AgentOptions, HelperOptions, TunnelLab};
use warren_e2e::poll_until;
use warren_proto::ipc::SessionState;

#[test]
fn laptop_reaches_a_workspace_http_server_through_the_tunnel() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-netns", &[]) else {
        return;
    };
    let (_http, page) = lab.serve_page("www", 8080);
    let agent = lab.agent(AgentOptions::new("ws", "api").allow_ports("8080"));
    let mut helper = lab.helper(HelperOptions::default());
    lab.login_up(&helper);
    let view = lab.wait_agent(&helper, "ws", "api");
    assert!(lab.tun_exists(&helper), "no TUN while connected");
    let journal = helper.journal();
    assert!(
        journal.is_file(),
        "the helper changed the network without recording it in {}",
        journal.display()
    );

    let target = http_url(view.v4(), 8080, "index.html");
    let took = lab.wait_page(&target, &page, Duration::from_secs(20));
    let Some(took) = took else {
        helper.print_log_tail(60);
        agent.print_log_tail(60);
        panic!("curl {target} from the laptop namespace never returned the page");
    };
    eprintln!("first page through the tunnel after {took:?}");

    // `warren down` removes the TUN (and with it its addresses and routes).
    helper.cli.run_ok(&["down"]);
    helper
        .cli
        .wait_state(SessionState::Disconnected, Duration::from_secs(10));
    let gone = poll_until(Duration::from_secs(5), || {
        (!lab.tun_exists(&helper)).then_some(())
    });
    assert!(gone.is_some(), "warren0 still exists after `warren down`");
    let cleared = poll_until(Duration::from_secs(5), || (!journal.exists()).then_some(()));
    assert!(
        cleared.is_some(),
        "the journal still lists changes after `warren down`: {:?}",
        std::fs::read_to_string(&journal)
    );
    assert!(
        !lab.curl(&["-s", "--max-time", "3", &target]).ok(),
        "the page is still reachable with the tunnel down: it did not go through the tunnel"
    );
    let log = helper.stderr();
    assert!(log.contains("tunnel data plane started"), "{log}");
    assert!(helper.is_running(), "the helper died");
    helper.terminate(Duration::from_secs(5));
}
