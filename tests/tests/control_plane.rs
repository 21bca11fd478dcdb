//! A signed-in user sees exactly their own workspaces and agents through
//! `warren status --json`, with the documented DNS names and online flags,
//! and admin changes reach them within a second.

use std::time::{Duration, Instant};
use warren_e2e::{start_agent, Coordinator, Helper, Status, TestDir};
use warren_proto::ipc::SessionState;

/// Longest time an admin change may take to show up in `warren status`.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);

/// Polls `status --json` until `pred` holds; returns the status and the
/// time since `since`. Gives up after 5 s so a slow change fails with its
/// actual latency instead of a bare timeout.
fn wait_status(
    cli: &warren_e2e::Cli,
    since: Instant,
    what: &str,
    pred: impl Fn(&Status) -> bool,
) -> (Status, Duration) {
    loop {
        let s = cli.status();
        if pred(&s) {
            return (s, since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(5) {
            panic!("{what}: not seen within 5 s; last status: {s:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn names(s: &Status) -> Vec<(String, String)> {
    s.agents
        .iter()
        .map(|a| {
            let ws = s
                .workspaces
                .iter()
                .find(|w| w.id == a.workspace_id)
                .map_or_else(
                    || format!("<unknown {}>", a.workspace_id),
                    |w| w.name.clone(),
                );
            (ws, a.name.clone())
        })
        .collect()
}

#[test]
fn user_sees_own_workspaces_and_changes_within_a_second() {
    let dir = TestDir::new("control");
    let coord = Coordinator::start(dir.path());
    let alice_token = coord.user_with_token("alice");
    coord.user_with_token("bob");
    coord.add_workspace("alice", "api");
    coord.add_workspace("alice", "web");
    coord.add_workspace("bob", "secret");
    // Added first, so `main` is the first agent of `api`.
    let api_main = coord.add_agent("alice", "api", "main");
    coord.add_agent("alice", "api", "db");
    coord.add_agent("alice", "web", "main");
    let bob_agent = coord.add_agent("bob", "secret", "main");
    let _agent = start_agent(dir.path(), "api-main", &coord.url, &api_main);
    let _bob_agent = start_agent(dir.path(), "bob-main", &coord.url, &bob_agent);

    let helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());
    let st = cli.login_up_connected(&coord.url, &alice_token);
    assert_eq!(st.session.user.as_deref(), Some("alice"));
    assert_eq!(st.session.url.as_deref(), Some(coord.url.as_str()));
    assert!(!st.helper_version.is_empty());

    // The running agent registers and shows online.
    let (st, _) = wait_status(&cli, Instant::now(), "api/main online", |s| {
        s.agent_named("api", "main").is_some_and(|a| a.online)
    });

    // Exactly alice's workspaces, sorted by (owner, name).
    let ws: Vec<(String, String)> = st
        .workspaces
        .iter()
        .map(|w| (w.owner.clone(), w.name.clone()))
        .collect();
    assert_eq!(
        ws,
        vec![
            ("alice".to_string(), "api".to_string()),
            ("alice".to_string(), "web".to_string())
        ]
    );
    // Exactly her agents, sorted by (workspace name, agent name).
    assert_eq!(
        names(&st),
        vec![
            ("api".to_string(), "db".to_string()),
            ("api".to_string(), "main".to_string()),
            ("web".to_string(), "main".to_string()),
        ]
    );
    let main = st.agent_named("api", "main").expect("api/main listed");
    let db = st.agent_named("api", "db").expect("api/db listed");
    let web = st.agent_named("web", "main").expect("web/main listed");
    let mut main_names = main.dns_names.clone();
    main_names.sort();
    assert_eq!(main_names, vec!["api.warren", "main.api.alice.warren"]);
    assert_eq!(db.dns_names, vec!["db.api.alice.warren"]);
    let mut web_names = web.dns_names.clone();
    web_names.sort();
    assert_eq!(web_names, vec!["main.web.alice.warren", "web.warren"]);
    assert!(main.online, "api/main runs an agent");
    assert!(
        main.public_key.is_some(),
        "a registered agent has a public key"
    );
    assert!(
        !db.online && !web.online,
        "no agent runs for api/db or web/main"
    );
    // Every agent has tunnel addresses from the deployment's ranges.
    for a in &st.agents {
        assert!(
            a.addresses.iter().any(|ip| ip.is_ipv4()) && a.addresses.iter().any(|ip| ip.is_ipv6()),
            "agent {} has one IPv4 and one IPv6 address: {:?}",
            a.name,
            a.addresses
        );
    }
    // Nothing of bob's, not even by id.
    let text = cli.run_ok(&["status", "--json"]);
    assert!(!text.contains("secret"), "bob's workspace leaked: {text}");
    assert!(!text.contains("\"bob\""), "bob leaked: {text}");

    // agent add → visible within a second of the admin command's exit.
    coord.add_agent("alice", "web", "cache");
    let t = Instant::now();
    let (st, took) = wait_status(&cli, t, "agent add web/cache", |s| {
        s.agent_named("web", "cache").is_some()
    });
    assert!(took <= PROPAGATION_LIMIT, "agent add took {took:?}");
    assert_eq!(
        st.agent_named("web", "cache").map(|a| a.dns_names.clone()),
        Some(vec!["cache.web.alice.warren".to_string()])
    );

    // agent rm → gone within a second.
    coord.rm_agent("alice", "api", "db");
    let t = Instant::now();
    let (_, took) = wait_status(&cli, t, "agent rm api/db", |s| {
        s.agent_named("api", "db").is_none() && s.agents.len() == 3
    });
    assert!(took <= PROPAGATION_LIMIT, "agent rm took {took:?}");

    // workspace rm → the workspace and its agents gone within a second.
    let web_id = st
        .workspaces
        .iter()
        .find(|w| w.name == "web")
        .expect("web listed")
        .id
        .clone();
    coord.rm_workspace("alice", "web");
    let t = Instant::now();
    let (st, took) = wait_status(&cli, t, "workspace rm web", |s| {
        !s.workspace_names().contains(&"web".to_string())
    });
    assert!(took <= PROPAGATION_LIMIT, "workspace rm took {took:?}");
    assert!(
        st.agents.iter().all(|a| a.workspace_id != web_id),
        "agents of a removed workspace stay listed: {:?}",
        st.agents
    );
    assert_eq!(names(&st), vec![("api".to_string(), "main".to_string())]);

    // Bob's changes never reach alice.
    coord.add_workspace("bob", "other");
    coord.add_agent("bob", "other", "x");
    coord.add_agent("alice", "api", "marker");
    let t = Instant::now();
    let (st, _) = wait_status(&cli, t, "alice's marker agent", |s| {
        s.agent_named("api", "marker").is_some()
    });
    assert_eq!(st.workspace_names(), vec!["api".to_string()]);
    assert!(st.agents.iter().all(|a| a.name != "x"));
    assert_eq!(st.session.state, SessionState::Connected);
}
