//! Split DNS through systemd-resolved (issue 4). resolved is one daemon per
//! machine and sees only the root namespace's links, so it can't be given
//! a throwaway laptop namespace like the resolv.conf tests. Where it runs,
//! this test applies the exact `resolvectl` invocations warrend makes
//! ([`warren_netcfg::dns::resolved::commands`]) to a throwaway dummy link
//! whose DNS server is a `dnsmasq` on that link, with a unique suffix (so
//! the host's own lookups are never affected), and checks that resolved
//! sends the suffix — and only the suffix — there, and that the revert
//! command removes it. Where resolved does not run (as on the Debian test
//! machines, which have no systemd-resolved), it says why on stderr and
//! checks the arguments instead.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Duration;
use warren_e2e::netns::{ip, ip_try, tool_exists, Dnsmasq};
use warren_e2e::{poll_until, unique, TestDir};
use warren_netcfg::dns::resolved;

/// Why resolved can't be tested end to end here, if it can't.
fn why_resolved_cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: configuring resolved's links needs root".into());
    }
    if !tool_exists("resolvectl") {
        return Some(
            "`resolvectl` is not installed (systemd-resolved is not part of this machine)".into(),
        );
    }
    if !resolved::is_running() {
        return Some(
            "systemd-resolved is not running (neither /run/systemd/resolve/stub-resolv.conf nor its varlink socket exists)"
                .into(),
        );
    }
    let status = Command::new("resolvectl")
        .arg("status")
        .stdin(Stdio::null())
        .output();
    match status {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "`resolvectl status` fails: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Some(format!("`resolvectl status` can't run: {e}")),
    }
    if !tool_exists("/usr/sbin/dnsmasq") {
        return Some("dnsmasq (the test's DNS server on the link) is not installed".into());
    }
    None
}

/// The arguments warrend passes to resolvectl, exactly.
fn assert_the_arguments() {
    let servers: Vec<IpAddr> = vec![
        "100.64.0.7".parse().expect("literal"),
        "fd00:1:2::7".parse().expect("literal"),
    ];
    let got = resolved::commands("warren0", &servers, "warren");
    let want: Vec<Vec<&str>> = vec![
        vec!["dns", "warren0", "100.64.0.7", "fd00:1:2::7"],
        vec!["domain", "warren0", "~warren"],
        vec!["default-route", "warren0", "false"],
        vec!["llmnr", "warren0", "false"],
        vec!["mdns", "warren0", "false"],
    ];
    assert_eq!(got, want, "resolvectl invocations for warren0");
    assert_eq!(resolved::revert_command("warren0"), ["revert", "warren0"]);
    // A multi-label suffix becomes one routing domain.
    let got = resolved::commands("wt0", &servers[..1], "dev.example.com");
    assert_eq!(got[0], ["dns", "wt0", "100.64.0.7"]);
    assert_eq!(got[1], ["domain", "wt0", "~dev.example.com"]);
}

/// A dummy link in the root namespace, deleted on drop (with resolved's
/// settings for it).
struct DummyLink(String);

impl Drop for DummyLink {
    fn drop(&mut self) {
        let _ = ip_try(&["link", "del", &self.0]);
    }
}

fn resolvectl(args: &[String]) -> String {
    let out = Command::new("resolvectl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run resolvectl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "resolvectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `resolvectl query NAME` through resolved; `Some(addresses)` on success.
fn query(name: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args(["5", "resolvectl", "query", "--legend=no", name])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn end_to_end() {
    let dir = TestDir::new("dns-resolved");
    let link = DummyLink(format!("wdr{:06x}", rand_u32() & 0xff_ffff));
    // A benchmarking-range address (198.18.0.0/15): never a real network.
    let server = Ipv4Addr::new(198, 18, (rand_u32() & 0xff) as u8, 53);
    ip(&["link", "add", &link.0, "type", "dummy"]);
    ip(&["addr", "add", &format!("{server}/32"), "dev", &link.0]);
    ip(&["link", "set", &link.0, "up"]);
    // A unique suffix, so the host's own lookups never reach this link.
    let suffix = unique("wdrtest");
    let probe = format!("main.ws.alice.{suffix}");
    let probe_addr = IpAddr::V4(Ipv4Addr::new(100, 64, 7, 7));
    let dnsmasq = Dnsmasq::start_in_root(dir.path(), server, &[(&probe, probe_addr)]);

    for args in resolved::commands(&link.0, &[IpAddr::V4(server)], &suffix) {
        resolvectl(&args);
    }
    let domains = resolvectl(&["domain".into(), link.0.clone()]);
    assert!(
        domains.contains(&format!("~{suffix}")),
        "resolved does not list ~{suffix} on {}: {domains}",
        link.0
    );
    let answered = poll_until(Duration::from_secs(10), || query(&probe));
    let answered = answered.unwrap_or_else(|| {
        dnsmasq.print_log_tail(20);
        panic!("resolved did not answer {probe} through {}", link.0)
    });
    assert!(
        answered.contains(&probe_addr.to_string()),
        "resolvectl query {probe}: {answered}"
    );
    assert!(dnsmasq.queries_for(&probe) >= 1, "{}", dnsmasq.log());
    // Outside the suffix, resolved never asks this link's server.
    let _ = query("outside.invalid");
    assert_eq!(
        dnsmasq.queries_for("outside.invalid"),
        0,
        "resolved sent a name outside ~{suffix} to the link:\n{}",
        dnsmasq.log()
    );
    eprintln!("resolved mode end to end: {probe} answered via {}", link.0);

    resolvectl(&resolved::revert_command(&link.0));
    let domains = resolvectl(&["domain".into(), link.0.clone()]);
    assert!(
        !domains.contains(&suffix),
        "resolvectl revert left ~{suffix} on {}: {domains}",
        link.0
    );
}

fn rand_u32() -> u32 {
    rand::random()
}

#[test]
fn resolved_mode_end_to_end_or_else_the_exact_resolvectl_arguments() {
    assert_the_arguments();
    match why_resolved_cannot_run() {
        None => end_to_end(),
        Some(reason) => eprintln!(
            "systemd-resolved mode NOT tested end to end on this machine: {reason}; checked the exact resolvectl arguments warrend uses instead"
        ),
    }
}
