//! No token ever reaches a log: with every component at `RUST_LOG=trace`,
//! run the whole flow and grep every log for each token and its secret part.

use std::time::Duration;
use warren_e2e::proc::start_agent_with_log;
use warren_e2e::{
    fake_token, ipc_request, read_all_files, secret_part, Coordinator, Helper, TestDir,
};
use warren_proto::ipc::{Request, SessionState};
use warren_proto::Secret;

const TRACE: &str = "trace";

#[test]
fn no_token_in_any_log_at_trace_level() {
    let dir = TestDir::new("secrets");
    let mut coord = Coordinator::start_with_log(dir.path(), TRACE);
    let user_token = coord.user_with_token("alice");
    coord.add_workspace("alice", "api");
    let agent_token = coord.add_agent("alice", "api", "main");
    // A token of the right shape that the coordinator never issued, typed
    // by mistake: it is a secret too (it may be real somewhere else).
    let wrong_token = fake_token();

    let mut helper = Helper::start_with_log(dir.path(), "root", TRACE);
    let mut agent = start_agent_with_log(dir.path(), "api-main", &coord.url, &agent_token, TRACE);
    let cli = helper.cli(dir.path());
    let mut cli_stderr = String::new();

    // login, up, agent online, status.
    let out = cli.run_with_stdin(
        &["login", "--url", &coord.url, "--token-stdin"],
        &format!("{user_token}\n"),
    );
    cli_stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "login failed: {cli_stderr}");
    let out = cli.run(&["up"]);
    cli_stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "up failed: {cli_stderr}");
    cli.wait_state(SessionState::Connected, Duration::from_secs(15));
    warren_e2e::wait_until(Duration::from_secs(10), "the agent to come online", || {
        cli.status()
            .agent_named("api", "main")
            .filter(|a| a.online)
            .map(|_| ())
    });
    let out = cli.run(&["status"]);
    cli_stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    let status_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    let out = cli.run(&["status", "--json"]);
    let status_json = String::from_utf8_lossy(&out.stdout).into_owned();

    // The wrong token, through `warren login` and through a raw Start.
    let out = cli.run_with_stdin(
        &["login", "--url", &coord.url, "--token-stdin"],
        &format!("{wrong_token}\n"),
    );
    cli_stderr.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "login with a wrong token succeeded");
    ipc_request(
        &helper.socket,
        Request::Start {
            url: coord.url.clone(),
            token: Secret::new(wrong_token.clone()),
            ca: None,
            deployment: None,
        },
    )
    .expect("Start is answered");
    cli.wait_state(SessionState::Failed, Duration::from_secs(10));
    // Barrier instead of a pause: every process is stopped (and waited for)
    // before its logs are read, so each log is complete and final. The
    // helper's log files are flushed on its way out; the agent and the
    // coordinator log to stderr unbuffered, so SIGKILL loses nothing they
    // wrote.
    helper.terminate();
    agent.terminate(Duration::from_secs(5));
    coord.kill();

    // Every log the components wrote: stderr captures (coordinator, admin
    // commands, helper, agent), stdout captures, the helper's log dir. The
    // CLI's config dir and the agent's token file are where the tokens are
    // meant to be, so they are not logs.
    let mut logs: Vec<(String, String)> = read_all_files(dir.path())
        .into_iter()
        .filter(|(p, _)| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_helper_logs = p.starts_with(&helper.log_dir);
            in_helper_logs || name.ends_with(".stderr") || name.ends_with(".stdout")
        })
        .map(|(p, text)| (p.display().to_string(), text))
        .collect();
    logs.push(("warren CLI stderr".into(), cli_stderr));
    logs.push(("warren status".into(), status_text));
    logs.push(("warren status --json".into(), status_json));

    // The check is only worth something if trace logging happened.
    let helper_log_bytes: usize = logs
        .iter()
        .filter(|(p, _)| p.contains("helper-logs"))
        .map(|(_, t)| t.len())
        .sum();
    assert!(
        helper_log_bytes > 0,
        "the helper wrote nothing to its log dir"
    );
    for name in ["coord1.stderr", "warrend.stderr", "agent-api-main.stderr"] {
        let (_, text) = logs
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(
            text.contains("TRACE") || text.contains("DEBUG") || text.lines().count() > 3,
            "{name} does not look like a trace-level log"
        );
    }

    let mut leaks = Vec::new();
    for (label, token) in [
        ("user token", user_token.as_str()),
        ("agent token", agent_token.as_str()),
        ("wrong token", wrong_token.as_str()),
    ] {
        for (what, needle) in [("whole", token), ("secret part", secret_part(token))] {
            assert!(needle.len() >= 16, "{label} {what} is suspiciously short");
            for (path, text) in &logs {
                if text.contains(needle) {
                    let line = text.lines().find(|l| l.contains(needle)).unwrap_or("");
                    leaks.push(format!(
                        "{label} ({what}) in {path}: {}",
                        line.replace(needle, "<REDACTED-BY-TEST>")
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "tokens leaked:\n{}", leaks.join("\n"));

    // The coordinator keeps only salted hashes: its database files hold no
    // token secret either.
    for (path, text) in read_all_files(dir.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("coord.db") {
            for token in [&user_token, &agent_token] {
                assert!(
                    !text.contains(secret_part(token)),
                    "a token secret is stored in clear in {}",
                    path.display()
                );
            }
        }
    }
}
