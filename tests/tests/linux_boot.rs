//! The Linux packages in a booted Debian (issue 13): the `.deb` installed
//! into a minimal bookworm rootfs booted with `systemd-nspawn -b`, joined to
//! the "laptop" namespace of a [`TunnelLab`] whose "workspace" namespace
//! (across a veth) runs the coordinator, an agent serving a page, and a
//! dnsmasq as the container's upstream DNS. The packaged `warrend` runs
//! under the real systemd with the packaged, hardened unit, so these tests
//! prove what the unit tests of the maintainer scripts can't: it comes up
//! at boot, serves its group only, carries the tunnel and split DNS under
//! the hardening, comes back after a crash, is restarted (still enabled) by
//! an upgrade, and leaves nothing on purge.
//!
//! The `.rpm`'s scriptlets run in a copy of the same rootfs through
//! `rpm --root` (there is no rpm-based distribution source here to boot).
//!
//! Needs root, `/dev/net/tun`, `debootstrap`, `systemd-nspawn`, `rpm`, the
//! Debian mirror apt uses (once; the rootfs is cached, see
//! [`warren_e2e::container`]) and the packages: a missing package fails the
//! test with the command that builds it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};
use warren_e2e::container::{self, describe, Container, Flavor, Rootfs};
use warren_e2e::netns::{
    agent_view, http_url, ip, link_exists, AgentOptions, Dnsmasq, TunnelLab, USER,
};
use warren_e2e::proc::Proc;
use warren_e2e::{poll_until, Status};
use warren_proto::ipc::SessionState;

/// Where the coordinator's CA is handed into the container (readable by
/// the users; the container's /tmp is a fresh tmpfs).
const CA_IN: &str = "/usr/local/share/warren-test/ca.pem";
const SOCKET: &str = "/run/warren/helper.sock";
const TUN: &str = "warren0";
/// A member of `warren` (added by the package, as the installing user).
const INSIDE: &str = "inside";
/// A user the package never heard of.
const OUTSIDE: &str = "outside";
/// A name only the container's upstream (the lab's dnsmasq) knows.
const UPSTREAM_NAME: &str = "outside.test";
const UPSTREAM_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const UNIT: &str = "warrend";
/// The acceptance bound: active within this long after boot starts.
const UP_AT_BOOT: Duration = Duration::from_secs(30);

fn can_run(test: &str, extra: &[&str]) -> bool {
    let mut reason = container::skip_reason();
    for tool in extra {
        if reason.is_none() && !warren_e2e::netns::tool_exists(tool) {
            reason = Some(format!("`{tool}` is not installed"));
        }
    }
    warren_e2e::run_or_skip(test, reason.as_deref())
}

fn deb() -> PathBuf {
    container::package("warren_", "_amd64.deb")
}

fn rpm() -> PathBuf {
    container::package("warren-", ".x86_64.rpm")
}

/// A booted container in a lab. Field order is drop order: the container
/// dies before the lab's processes and namespaces.
struct Booted {
    c: Container,
    _page_server: Proc,
    _agent: warren_e2e::netns::LabAgent,
    upstream: Dnsmasq,
    page: String,
    lab: TunnelLab,
}

/// Makes the lab (coordinator, agent `main` in workspace `api` of
/// [`USER`], a page it forwards, an upstream DNS), a rootfs copy of
/// `flavor` with the package, CA, users and DNS set up, optionally
/// installs the `.deb` before boot (chrooted, as an image build would),
/// and boots it.
fn boot(test: &str, flavor: Flavor, install_before_boot: bool) -> Booted {
    let deb = deb();
    let lab = TunnelLab::start(test);
    let upstream = Dnsmasq::start(
        lab.dir.path(),
        &lab.net.workspace,
        lab.net.workspace_ip,
        &[(UPSTREAM_NAME, IpAddr::V4(UPSTREAM_ADDR))],
    );
    let (page_server, page) = lab.serve_page("www", 8080);
    let agent = lab.agent(AgentOptions::new("api", "main").allow_ports("8080"));

    let start = Instant::now();
    let root = Rootfs::copy(flavor);
    eprintln!("rootfs copy ready after {:?}", start.elapsed());
    root.put(&deb, "/root/warren.deb");
    root.put(&lab.coord.ca, CA_IN);
    root.chroot_ok(&format!(
        "useradd -m -s /bin/sh {INSIDE} && useradd -m -s /bin/sh {OUTSIDE}"
    ));
    let token = format!("/home/{INSIDE}/.warren-token");
    root.write(&token, format!("{}\n", lab.user_token).as_bytes(), 0o600);
    root.chroot_ok(&format!("chown {INSIDE}:{INSIDE} {token}"));
    let w = lab.net.workspace_ip;
    match flavor {
        Flavor::Plain => root.write(
            "/etc/resolv.conf",
            format!("# the lab's upstream\nnameserver {w}\noptions timeout:2 attempts:2\n")
                .as_bytes(),
            0o644,
        ),
        Flavor::Resolved => root.write(
            "/etc/systemd/resolved.conf.d/upstream.conf",
            format!("[Resolve]\nDNS={w}\nLLMNR=no\nMulticastDNS=no\n").as_bytes(),
            0o644,
        ),
    }
    if install_before_boot {
        let out = root.chroot(
            &format!("SUDO_USER={INSIDE} dpkg -i /root/warren.deb"),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "dpkg -i in the chroot: {}",
            describe(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("added {INSIDE} to the group 'warren'")) && text.contains("Log out"),
            "the install did not say it added the installing user and that a new login is needed:\n{text}"
        );
        assert!(
            root.host_path("/etc/systemd/system/multi-user.target.wants/warrend.service")
                .symlink_metadata()
                .is_ok(),
            "installed in a chroot, the unit is not enabled for the next boot"
        );
    }
    let c = Container::boot(root, &lab.net.laptop, lab.dir.path());
    c.wait_booted(Duration::from_secs(60));
    eprintln!("{test}: container booted after {:?}", c.booted_at.elapsed());
    Booted {
        c,
        _page_server: page_server,
        _agent: agent,
        upstream,
        page,
        lab,
    }
}

/// `warren ARGS` as `user` in the container (file keyring: there is no
/// desktop keyring in it).
fn warren_as(c: &Container, user: &str, args: &str) -> Output {
    c.sh_as(
        user,
        &format!("WARREN_KEYRING=file warren {args}"),
        Duration::from_secs(30),
    )
}

fn warren_ok(c: &Container, user: &str, args: &str) -> String {
    let out = warren_as(c, user, args);
    assert!(
        out.status.success(),
        "warren {args} as {user}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_json(c: &Container) -> Option<serde_json::Value> {
    let out = warren_as(c, INSIDE, "status --json");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_state(c: &Container, state: SessionState, timeout: Duration) -> Status {
    let mut last = None;
    let got = poll_until(timeout, || {
        let s: Status = serde_json::from_value(status_json(c)?).ok()?;
        if s.session.state == state {
            return Some(s);
        }
        last = Some(s.session);
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    got.unwrap_or_else(|| {
        panic!("the session did not reach {state} within {timeout:?}; last: {last:?}")
    })
}

/// Signs `INSIDE` in (token on stdin, the lab CA), `warren up`, and waits
/// until connected.
fn login_up(b: &Booted) -> Status {
    warren_ok(
        &b.c,
        INSIDE,
        &format!(
            "login --url {} --token-stdin --ca {CA_IN} < /home/{INSIDE}/.warren-token",
            b.lab.coord.url
        ),
    );
    up(b)
}

fn up(b: &Booted) -> Status {
    warren_ok(&b.c, INSIDE, "up");
    wait_state(&b.c, SessionState::Connected, Duration::from_secs(20))
}

/// Waits until the unit is active with a main PID; returns the PID.
fn wait_active(c: &Container, deadline: Instant, what: &str) -> u32 {
    let got = poll_until(deadline.saturating_duration_since(Instant::now()), || {
        let pid = c.main_pid(UNIT);
        (c.is_active(UNIT) == "active" && pid != 0).then_some(pid)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{UNIT} was not active {what} (is-active: {})",
            c.is_active(UNIT)
        )
    })
}

/// `systemctl kill -s KILL warrend`, then waits (30 s) until systemd has
/// it running again under a new PID with its socket answering.
fn kill_and_wait_restart(c: &Container) -> Duration {
    let before = c.main_pid(UNIT);
    assert_ne!(before, 0, "{UNIT} has no main PID to kill");
    c.sh_ok(&format!("systemctl kill -s KILL {UNIT}"));
    let start = Instant::now();
    let got = poll_until(Duration::from_secs(30), || {
        let pid = c.main_pid(UNIT);
        (c.is_active(UNIT) == "active" && pid != 0 && pid != before).then_some(pid)
    });
    assert!(
        got.is_some(),
        "{UNIT} did not come back within 30 s after SIGKILL"
    );
    let answered = poll_until(Duration::from_secs(10), || {
        warren_as(c, INSIDE, "status")
            .status
            .success()
            .then_some(())
    });
    assert!(
        answered.is_some(),
        "the restarted {UNIT} does not answer `warren status`"
    );
    start.elapsed()
}

fn getent_hosts(c: &Container, name: &str) -> Vec<IpAddr> {
    let out = c.sh(&format!("getent hosts {name}"), Duration::from_secs(15));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The agent `api/main` as the container's helper lists it, once it has
/// tunnel addresses.
fn wait_agent_addresses(c: &Container) -> Vec<IpAddr> {
    let got = poll_until(Duration::from_secs(15), || {
        let v = agent_view(&status_json(c)?, "api", "main")?;
        (v.agent.addresses.len() >= 2).then_some(v.agent.addresses)
    });
    got.expect("the helper never listed agent api/main with its tunnel addresses")
}

fn main_name() -> String {
    format!("main.api.{USER}.warren")
}

#[test]
fn deb_comes_up_at_boot_serves_its_group_carries_the_tunnel_and_purges_clean() {
    if !can_run("linux-boot-deb", &["curl"]) {
        return;
    }
    let test_start = Instant::now();
    let b = boot("linux-boot-deb", Flavor::Plain, true);
    let c = &b.c;

    // Up at boot, within the bound, from the enablement the chroot install made.
    wait_active(c, c.booted_at + UP_AT_BOOT, "within 30 s of boot");
    eprintln!(
        "{UNIT} active {:?} after the boot started",
        c.booted_at.elapsed()
    );
    let sock = c.sh_ok(&format!("stat -c '%U:%G %a %F' {SOCKET}"));
    assert_eq!(sock.trim(), "root:warren 660 socket", "the helper's socket");

    // The group decides who may use it.
    let groups = c.sh_ok(&format!("id -nG {INSIDE}; echo; id -nG {OUTSIDE}"));
    let mut lines = groups.lines();
    let (ins, outs) = (lines.next().unwrap_or(""), lines.nth(1).unwrap_or(""));
    assert!(
        ins.split_whitespace().any(|g| g == "warren"),
        "{INSIDE}: {ins}"
    );
    assert!(
        !outs.split_whitespace().any(|g| g == "warren"),
        "{OUTSIDE}: {outs}"
    );
    warren_ok(c, INSIDE, "status");
    let refused = warren_as(c, OUTSIDE, "status");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("`warren`")
            && err.contains("log out and back in"),
        "a user outside the group was not refused with what to do: {}",
        describe(&refused)
    );
    eprintln!("outside the group: {} — {}", refused.status, err.trim());

    // The tunnel under the hardened unit: the TUN with the device's
    // addresses, split DNS in resolv.conf, and a page through the agent.
    let resolv = c.root().host_path("/etc/resolv.conf");
    let resolv_before = std::fs::read(&resolv).expect("read the container's resolv.conf");
    let status = login_up(&b);
    let device = status
        .session
        .device
        .as_ref()
        .expect("a connected session has a device");
    assert!(
        link_exists(&b.lab.net.laptop, TUN),
        "no {TUN} in the container"
    );
    let addrs = ip(&["-n", &b.lab.net.laptop, "addr", "show", "dev", TUN]);
    for a in &device.addresses {
        assert!(addrs.contains(&a.to_string()), "{TUN} lacks {a}: {addrs}");
    }
    let agent = wait_agent_addresses(c);
    let v4 = *agent
        .iter()
        .find(|a| a.is_ipv4())
        .expect("an IPv4 tunnel address");
    let url = http_url(v4, 8080, "index.html");
    let took = b.lab.wait_page(&url, &b.page, Duration::from_secs(20));
    assert!(
        took.is_some(),
        "{url} never answered through the container's tunnel"
    );
    eprintln!("page through the container's tunnel after {took:?}");
    let resolv_up = std::fs::read(&resolv).expect("read the container's resolv.conf");
    assert_ne!(
        resolv_up, resolv_before,
        "warren up did not point resolv.conf at the stub"
    );
    let named = poll_until(Duration::from_secs(10), || {
        let got = getent_hosts(c, &main_name());
        got.iter().any(|a| agent.contains(a)).then_some(got)
    });
    assert!(
        named.is_some(),
        "getent hosts {} did not give the agent's address",
        main_name()
    );
    assert_eq!(
        getent_hosts(c, UPSTREAM_NAME),
        vec![IpAddr::V4(UPSTREAM_ADDR)],
        "a name outside the suffix no longer resolves through the upstream"
    );

    // A crash: systemd starts it again, and the new one undoes the dead
    // one's network changes from its journal.
    let took = kill_and_wait_restart(c);
    eprintln!("{UNIT} back after SIGKILL in {took:?}");
    let restored = poll_until(Duration::from_secs(10), || {
        (std::fs::read(&resolv).ok()? == resolv_before).then_some(())
    });
    assert!(
        restored.is_some(),
        "after the crash and restart resolv.conf is not as before: {:?}",
        std::fs::read_to_string(&resolv)
    );
    assert!(
        !link_exists(&b.lab.net.laptop, TUN),
        "{TUN} outlived the killed helper"
    );

    // An upgrade (the package again over itself: `configure` with the old
    // version): the helper is restarted on the new files and stays enabled.
    let before = c.main_pid(UNIT);
    let out = c.sh("dpkg -i /root/warren.deb", Duration::from_secs(120));
    assert!(
        out.status.success(),
        "dpkg -i over itself: {}",
        describe(&out)
    );
    let after = wait_active(c, Instant::now() + UP_AT_BOOT, "after the upgrade");
    assert_ne!(after, before, "the upgrade did not restart {UNIT}");
    let enabled = c.sh(
        &format!("systemctl is-enabled {UNIT}"),
        Duration::from_secs(10),
    );
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout).trim(),
        "enabled",
        "the upgrade changed enablement"
    );

    // Removal with the tunnel up: the helper stops and undoes it all.
    up(&b);
    assert!(
        link_exists(&b.lab.net.laptop, TUN),
        "no {TUN} after the second up"
    );
    let out = c.sh("apt-get remove -y warren", Duration::from_secs(120));
    assert!(
        out.status.success(),
        "apt-get remove warren: {}",
        describe(&out)
    );
    let after = std::fs::read(&resolv).expect("read the container's resolv.conf");
    assert!(
        after == resolv_before,
        "apt-get remove left resolv.conf changed:\nbefore: {}\nafter: {}",
        String::from_utf8_lossy(&resolv_before),
        String::from_utf8_lossy(&after)
    );
    assert!(
        !link_exists(&b.lab.net.laptop, TUN),
        "{TUN} outlived the removal"
    );
    let state = c.is_active(UNIT);
    assert!(
        state == "inactive" || state == "unknown",
        "after remove, {UNIT} is {state}"
    );
    let gone = c.sh(
        "pgrep -x warrend; test -e /run/warren/helper.sock && echo socket; test -e /usr/lib/systemd/system/warrend.service && echo unit; test -e /usr/bin/warrend && echo binary; true",
        Duration::from_secs(10),
    );
    assert_eq!(
        String::from_utf8_lossy(&gone.stdout).trim(),
        "",
        "left after remove"
    );

    // Purge: nothing of Warren anywhere but the users' own homes.
    let out = c.sh("apt-get purge -y warren", Duration::from_secs(120));
    assert!(
        out.status.success(),
        "apt-get purge warren: {}",
        describe(&out)
    );
    let left = c.sh(
        "find / \\( -path /proc -o -path /sys -o -path /dev -o -path /home -o -path /root -o -path /usr/local/share/warren-test \\) -prune -o -name '*warren*' -print; \
         grep -h '^warren:' /etc/group /etc/gshadow; getent group warren; \
         systemctl is-enabled warrend 2>/dev/null; \
         s=$(dpkg-query -W -f='${db:Status-Status}' warren 2>/dev/null); \
         [ -n \"$s\" ] && [ \"$s\" != not-installed ] && echo \"dpkg: $s\"; true",
        Duration::from_secs(60),
    );
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "purge left these behind (files named *warren*, the group, enablement, the package record)"
    );
    eprintln!("deb boot test took {:?} in all", test_start.elapsed());
}

/// resolved's view of the container's links: `resolvectl status`, `dns`
/// and `domain`, for before/after comparisons.
fn resolved_state(c: &Container) -> String {
    c.sh_ok("resolvectl status --no-pager; echo ---; resolvectl dns; echo ---; resolvectl domain")
}

/// Which sections of `resolvectl status` (`Global`, `Link 3 (warren0)`)
/// mention `needle`.
fn status_sections_with(status: &str, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in status.lines() {
        // Without a terminal the field names are right-aligned, some at
        // column 0: only `Global` and `Link N (name)` start a section.
        if line == "Global" || line.starts_with("Link ") {
            section = line.to_string();
        } else if line.contains(needle) && !out.contains(&section) {
            out.push(section.clone());
        }
    }
    out
}

fn assert_resolved_as_before(c: &Container, before: &str, when: &str) {
    let mut last = String::new();
    let same = poll_until(Duration::from_secs(15), || {
        last = resolved_state(c);
        (last == before).then_some(())
    });
    assert!(
        same.is_some(),
        "{when}, resolved's configuration is not as before:\n--- before ---\n{before}\n--- now ---\n{last}"
    );
}

#[test]
fn systemd_resolved_gets_the_suffix_on_the_tunnel_link_only_and_back_after_down_and_crash() {
    if !can_run("linux-boot-resolved", &[]) {
        return;
    }
    let test_start = Instant::now();
    let b = boot("linux-boot-resolved", Flavor::Resolved, false);
    let c = &b.c;
    assert_eq!(
        c.is_active("systemd-resolved"),
        "active",
        "resolved does not run"
    );
    let link = c.sh_ok("readlink /etc/resolv.conf");
    assert!(
        link.contains("stub-resolv.conf"),
        "resolv.conf is not resolved's stub: {link}"
    );
    // Warm-up: the upstream answers, so resolved has picked its server.
    let up_q = c.sh_ok(&format!("resolvectl query --legend=no {UPSTREAM_NAME}"));
    assert!(up_q.contains(&UPSTREAM_ADDR.to_string()), "{up_q}");

    // Installed on the running system: enabled and started at once.
    let out = c.sh(
        &format!("SUDO_USER={INSIDE} dpkg -i /root/warren.deb"),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "dpkg -i in the booted container: {}",
        describe(&out)
    );
    wait_active(c, Instant::now() + UP_AT_BOOT, "within 30 s of dpkg -i");
    let before = resolved_state(c);

    let status = login_up(&b);
    let stubs = status
        .session
        .device
        .as_ref()
        .expect("a device")
        .addresses
        .clone();
    let tun_domain = poll_until(Duration::from_secs(10), || {
        let d = c.sh_ok(&format!("resolvectl domain {TUN}"));
        d.contains("~warren").then_some(d)
    });
    assert!(tun_domain.is_some(), "resolved never got ~warren on {TUN}");
    let dns = c.sh_ok(&format!("resolvectl dns {TUN}"));
    assert!(
        stubs.iter().any(|s| dns.contains(&s.to_string())),
        "{TUN}'s DNS servers are not the helper's stub ({stubs:?}): {dns}"
    );
    let st = c.sh_ok("resolvectl status --no-pager");
    let with = status_sections_with(&st, "~warren");
    assert!(
        with.len() == 1 && with[0].contains(&format!("({TUN})")),
        "~warren should be on the {TUN} link only, it is in {with:?}:\n{st}"
    );

    let agent = wait_agent_addresses(c);
    let q = poll_until(Duration::from_secs(10), || {
        let out = c.sh(
            &format!("resolvectl query {}", main_name()),
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && agent.iter().any(|a| text.contains(&a.to_string())))
            .then_some(text)
    });
    let q = q.unwrap_or_else(|| {
        panic!(
            "resolvectl query {} never gave the agent's address",
            main_name()
        )
    });
    assert!(
        q.contains(&format!("link: {TUN}")),
        "not answered on {TUN}: {q}"
    );
    eprintln!(
        "resolvectl query {}: {}",
        main_name(),
        q.lines().next().unwrap_or("")
    );
    let got = getent_hosts(c, &main_name());
    assert!(
        got.iter().any(|a| agent.contains(a)),
        "getent hosts {}: {got:?}",
        main_name()
    );
    assert_eq!(
        getent_hosts(c, UPSTREAM_NAME),
        vec![IpAddr::V4(UPSTREAM_ADDR)]
    );
    let other = c.sh_ok(&format!("resolvectl query --legend=no {UPSTREAM_NAME}"));
    assert!(other.contains(&UPSTREAM_ADDR.to_string()), "{other}");
    assert_eq!(
        b.upstream.queries_for(&main_name()),
        0,
        "a workspace name went to the upstream:\n{}",
        b.upstream.log()
    );

    warren_ok(c, INSIDE, "down");
    wait_state(c, SessionState::Disconnected, Duration::from_secs(10));
    assert_resolved_as_before(c, &before, "after `warren down`");

    up(&b);
    let again = poll_until(Duration::from_secs(10), || {
        c.sh_ok(&format!("resolvectl domain {TUN}"))
            .contains("~warren")
            .then_some(())
    });
    assert!(again.is_some(), "the second up did not set ~warren");
    let took = kill_and_wait_restart(c);
    eprintln!("{UNIT} back after SIGKILL in {took:?}");
    assert_resolved_as_before(c, &before, "after SIGKILL and the restart");
    eprintln!("resolved test took {:?} in all", test_start.elapsed());
}

/// The `.rpm`'s scriptlets with `rpm --root` on a copy of the Debian rootfs:
/// install (group, installing user added, unit enabled), upgrade (still
/// enabled), erase (files and enablement gone). Not booted: nothing may
/// start, and the scriptlets must see that systemd does not run there.
#[test]
fn rpm_scriptlets_in_a_chroot() {
    if !can_run("linux-rpm-scriptlets", &["rpm"]) {
        return;
    }
    let rpm = rpm();
    let root = Rootfs::copy(Flavor::Plain);
    root.chroot_ok(&format!("useradd -m -s /bin/sh {INSIDE}"));
    let wants = root.host_path("/etc/systemd/system/multi-user.target.wants/warrend.service");
    let rpm_cmd = |args: &str| -> Output {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("rpm --root {} {args}", root.path().display()))
            .env("SUDO_USER", INSIDE);
        container::run_bounded(cmd, Duration::from_secs(120), &format!("rpm {args}"))
    };

    let out = rpm_cmd(&format!("-i --nodeps {}", rpm.display()));
    assert!(out.status.success(), "rpm -i: {}", describe(&out));
    eprintln!("rpm -i: {}", describe(&out));
    for f in [
        "/usr/bin/warrend",
        "/usr/bin/warren",
        "/usr/lib/systemd/system/warrend.service",
        "/usr/lib/sysusers.d/warren.conf",
    ] {
        assert!(root.host_path(f).is_file(), "rpm -i did not install {f}");
    }
    let group = std::fs::read_to_string(root.host_path("/etc/group")).expect("read /etc/group");
    let line = group.lines().find(|l| l.starts_with("warren:"));
    let line = line.unwrap_or_else(|| panic!("rpm -i made no group warren:\n{group}"));
    assert!(
        line.rsplit(':')
            .next()
            .is_some_and(|m| m.split(',').any(|u| u == INSIDE)),
        "the installing user ({INSIDE}, SUDO_USER) is not in the group: {line}"
    );
    assert!(
        wants.symlink_metadata().is_ok(),
        "rpm -i did not enable warrend.service"
    );

    // An upgrade (the same package again: $1 = 2 in %post, 1 in %postun)
    // keeps it enabled and the group.
    let out = rpm_cmd(&format!("-U --replacepkgs --nodeps {}", rpm.display()));
    assert!(out.status.success(), "rpm -U: {}", describe(&out));
    assert!(
        wants.symlink_metadata().is_ok(),
        "the upgrade disabled warrend.service"
    );
    assert!(
        root.host_path("/usr/bin/warrend").is_file(),
        "the upgrade lost warrend"
    );
    let group = std::fs::read_to_string(root.host_path("/etc/group")).expect("read /etc/group");
    assert!(
        group.lines().any(|l| l.starts_with("warren:")),
        "the upgrade lost the group"
    );

    // What a helper that ran would have left: its journal and its log.
    root.write("/var/lib/warren/netstate.json", b"{}", 0o600);
    root.write("/var/log/warren/warrend.log", b"a log line\n", 0o600);
    let out = rpm_cmd("-e --nodeps warren");
    assert!(out.status.success(), "rpm -e: {}", describe(&out));
    for f in [
        "/usr/bin/warrend",
        "/usr/bin/warren",
        "/usr/lib/systemd/system/warrend.service",
        "/var/lib/warren",
        "/var/log/warren",
        "/etc/systemd/system/warrend.service",
    ] {
        assert!(
            root.host_path(f).symlink_metadata().is_err(),
            "rpm -e left {f}"
        );
    }
    assert!(
        wants.symlink_metadata().is_err(),
        "rpm -e left warrend.service enabled"
    );
    let q = rpm_cmd("-q warren");
    assert!(
        !q.status.success(),
        "rpm still lists warren: {}",
        describe(&q)
    );
    // rpm has no purge: erasing is the last step, so the group goes too.
    let group = std::fs::read_to_string(root.host_path("/etc/group")).expect("read /etc/group");
    assert!(
        !group.lines().any(|l| l.starts_with("warren:")),
        "rpm -e left the group warren"
    );
}
