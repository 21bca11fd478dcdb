//! A workspace rebuilt with a new WireGuard key (the agent restarted after
//! its key file was deleted): the helper learns the new key from the
//! coordinator and traffic resumes within 5 s of the agent's restart,
//! without restarting the helper. Laptop and workspace namespaces; needs root.

use std::time::{Duration, Instant};
use warren_e2e::netns::{
    agent_view, http_url, status_json, AgentOptions, HelperOptions, TunnelLab,
};
use warren_e2e::poll_until;

#[test]
fn traffic_resumes_within_5s_after_the_agent_restarts_with_a_new_key() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-agent-rekey", &[]) else {
        return;
    };
    let (_http, page) = lab.serve_page("www", 8080);
    let mut agent = lab.agent(AgentOptions::new("ws", "api").allow_ports("8080"));
    let mut helper = lab.helper(HelperOptions::default());
    lab.login_up(&helper);
    let view = lab.wait_agent(&helper, "ws", "api");
    let old_key = view
        .agent
        .public_key
        .clone()
        .expect("registered with a key");
    let url = http_url(view.v4(), 8080, "index.html");
    let first = lab.wait_page(&url, &page, Duration::from_secs(20));
    assert!(first.is_some(), "the page never came through the tunnel");
    let helper_pid = helper.pid();

    agent.restart_with_new_key();
    let restarted = Instant::now();
    // Fresh curls with short timeouts, so a dead try costs little.
    let mut tries = 0u32;
    let resumed = poll_until(Duration::from_secs(15), || {
        tries += 1;
        let r = lab.curl(&["-s", "--connect-timeout", "0.5", "--max-time", "0.5", &url]);
        (r.ok() && r.text() == page).then(|| restarted.elapsed())
    });
    let Some(took) = resumed else {
        helper.print_log_tail(60);
        agent.print_log_tail(60);
        panic!("traffic did not resume within 15 s of the agent's restart with a new key");
    };
    eprintln!("traffic resumed {took:?} after the agent restarted with a new key ({tries} curls)");

    let new_key = poll_until(Duration::from_secs(5), || {
        let v = agent_view(&status_json(&helper.cli)?, "ws", "api")?;
        v.agent.public_key.filter(|k| *k != old_key)
    });
    assert!(
        new_key.is_some(),
        "the helper still lists the agent's old key: the key file was not replaced"
    );
    assert!(helper.is_running(), "the helper died");
    assert_eq!(helper.pid(), helper_pid, "the helper was restarted");
    assert!(
        took <= Duration::from_secs(5),
        "traffic took {took:?} to resume after the agent's restart (limit 5 s)"
    );
}
