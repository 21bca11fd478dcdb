//! Real-OS tests of the Linux backend. Each test runs in its own network
//! namespace (`wnc-<pid>-<n>`), removed by a Drop guard even when the test
//! panics, so nothing here touches the host's interfaces or routes. They need
//! root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and fail otherwise, unless
//! `WARREN_ALLOW_SKIP=1` allows them to skip with a message.

#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use warren_netcfg::{platform_configurator, recover, Journal, NetConfig, NetError, NetPlan};

/// Environment variable that turns [`crash_child`] into the child process of
/// [`kill_dash_nine_then_recover`].
const CHILD_JOURNAL_ENV: &str = "WARREN_NETCFG_TEST_CHILD_JOURNAL";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Only with this set to `1` may a test this machine can't run (not root,
/// no iproute2) pass by skipping; otherwise it fails and says why, so a run
/// without root can't report the backend as working.
const ALLOW_SKIP_VAR: &str = "WARREN_ALLOW_SKIP";

/// What a test does, given why it can't run (`None`: it can) and whether
/// skipping is allowed: `Ok(true)` run, `Ok(false)` skip, `Err` fail.
fn run_skip_or_fail(cannot_run: Option<&str>, skip_allowed: bool) -> Result<bool, String> {
    match (cannot_run, skip_allowed) {
        (None, _) => Ok(true),
        (Some(_), true) => Ok(false),
        (Some(reason), false) => Err(format!(
            "{reason}. Run the tests as root, or set {ALLOW_SKIP_VAR}=1 to skip them on purpose"
        )),
    }
}

/// `true` if the test can run; fails when it can't, unless skipping is
/// allowed (then it prints why and returns `false`).
fn run_or_skip(cannot_run: Option<&str>) -> bool {
    let allowed = std::env::var_os(ALLOW_SKIP_VAR).is_some_and(|v| v == "1");
    match run_skip_or_fail(cannot_run, allowed) {
        Ok(run) => {
            if !run {
                eprintln!(
                    "skipping ({ALLOW_SKIP_VAR}=1): {}",
                    cannot_run.unwrap_or_default()
                );
            }
            run
        }
        Err(message) => panic!("{message}"),
    }
}

fn can_run() -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("network-namespace tests need root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` command (iproute2) is not installed")
    } else {
        None
    };
    run_or_skip(reason)
}

#[test]
fn a_test_that_cannot_run_fails_unless_skipping_is_allowed() {
    assert_eq!(run_skip_or_fail(None, false), Ok(true));
    assert_eq!(run_skip_or_fail(Some("not root"), true), Ok(false));
    let err = run_skip_or_fail(Some("not root"), false).unwrap_err();
    assert!(
        err.contains("not root") && err.contains("WARREN_ALLOW_SKIP=1"),
        "{err}"
    );
}

/// What every test starts from, if this machine can run it: a temp dir
/// (kept alive by the caller), the journal path in it, and a fresh
/// namespace.
fn setup() -> Option<(tempfile::TempDir, PathBuf, Netns)> {
    if !can_run() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("netstate.json");
    Some((dir, journal, Netns::new()))
}

/// A network namespace that exists for the guard's lifetime.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "wnc-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run_ip(&["netns", "add", &name]);
        let ns = Netns { name };
        // IPv6 might be disabled by default on the host; the plan needs it.
        ns.ip(&["link", "set", "lo", "up"]);
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
            .arg("net.ipv6.conf.all.disable_ipv6=0")
            .status();
        ns
    }

    /// Runs `f` on a thread that has entered the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let file = File::open(&path).expect("open netns file");
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns into the test namespace");
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `f` with a tokio runtime inside the namespace (tun-rs's async
    /// device registers with the runtime).
    fn run_async<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let _guard = rt.enter();
            f()
        })
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ip {args:?} gave bad JSON {e}: {out}"))
    }

    fn has_link(&self, name: &str) -> bool {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ifname"] == name)
    }

    /// Every route in the main tables of both families, as "dst dev proto".
    fn routes(&self) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for fam in ["-4", "-6"] {
            for r in self
                .ip_json(&[fam, "route", "show", "table", "main"])
                .as_array()
                .unwrap()
            {
                set.insert(format!(
                    "{} dev {} proto {} via {}",
                    r["dst"].as_str().unwrap_or("?"),
                    r["dev"].as_str().unwrap_or("?"),
                    r["protocol"].as_str().unwrap_or("boot"),
                    r["gateway"].as_str().unwrap_or("-"),
                ));
            }
        }
        set
    }

    /// Gives the namespace a default route of its own so tests can show it
    /// is left alone.
    fn add_default_route(&self) {
        self.ip(&[
            "link", "add", "dum0", "type", "veth", "peer", "name", "dum1",
        ]);
        self.ip(&["addr", "add", "10.9.0.1/24", "dev", "dum0"]);
        self.ip(&["link", "set", "dum0", "up"]);
        self.ip(&["link", "set", "dum1", "up"]);
        self.ip(&["route", "add", "default", "via", "10.9.0.2", "dev", "dum0"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn plan() -> NetPlan {
    NetPlan {
        addresses: vec![
            ("100.64.0.7".parse().unwrap(), 32),
            ("fd7a:115c:a1e0::7".parse().unwrap(), 128),
        ],
        routes: vec![
            ("100.64.0.0".parse().unwrap(), 10),
            ("fd7a:115c:a1e0::".parse().unwrap(), 48),
        ],
        ..NetPlan::default()
    }
}

/// The two routes the plan adds, in [`Netns::routes`] form.
fn our_routes() -> BTreeSet<String> {
    [
        "100.64.0.0/10 dev warren0 proto static via -",
        "fd7a:115c:a1e0::/48 dev warren0 proto static via -",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn assert_configured(ns: &Netns, before: &BTreeSet<String>) {
    let link = ns.ip_json(&["link", "show", "warren0"]);
    assert_eq!(link[0]["mtu"], 1280, "{link}");
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "TUN is not up: {link}"
    );

    let addrs = ns.ip_json(&["addr", "show", "dev", "warren0"]);
    let got: BTreeSet<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    let want: BTreeSet<String> = ["100.64.0.7/32", "fd7a:115c:a1e0::7/128"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want, "{addrs}");

    // Exactly our two routes were added besides what the kernel derives from
    // the addresses themselves; everything that was there is still there.
    let after = ns.routes();
    assert!(
        after.is_superset(before),
        "routes went missing: before {before:?} after {after:?}"
    );
    let added: BTreeSet<String> = after
        .difference(before)
        .filter(|r| !r.contains("proto kernel"))
        .cloned()
        .collect();
    assert_eq!(added, our_routes());
    assert!(
        after.iter().filter(|r| r.starts_with("default")).count() == 1
            && after.contains("default dev dum0 proto boot via 10.9.0.2"),
        "default route touched: {after:?}"
    );
}

fn assert_clean(ns: &Netns, before: &BTreeSet<String>, journal: &Path) {
    assert!(!ns.has_link("warren0"), "TUN left behind");
    assert_eq!(&ns.routes(), before, "routes not restored");
    assert!(
        Journal::open(journal).unwrap().is_empty(),
        "journal not empty"
    );
    assert!(!journal.exists(), "empty journal left a file");
}

#[test]
fn apply_then_teardown_leaves_nothing() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    ns.add_default_route();
    let before = ns.routes();

    let (mut cfg, tun) = ns.run_async(|| {
        let mut cfg = platform_configurator(&journal).unwrap();
        let tun = cfg.apply(&plan()).unwrap();
        (cfg, tun)
    });
    assert_eq!(tun.name().unwrap(), "warren0");
    assert_eq!(cfg.journal().changes().len(), 5);
    assert_configured(&ns, &before);

    // Teardown while the data plane still holds the device: it must go anyway.
    ns.run(|| cfg.teardown().unwrap());
    assert_clean(&ns, &before, &journal);
    drop(tun);
    assert_clean(&ns, &before, &journal);
}

#[test]
fn offload_device_is_configured_the_same_way() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    ns.add_default_route();
    let before = ns.routes();
    let (mut cfg, tun) = ns.run_async(|| {
        let backend = warren_netcfg::PlatformBackend::new().with_offload(true);
        let mut cfg = warren_netcfg::Configurator::new(backend, &journal).unwrap();
        let tun = cfg.apply(&plan()).unwrap();
        (cfg, tun)
    });
    assert!(
        tun.tcp_gso(),
        "offload was asked for but the device has no vnet header"
    );
    assert_configured(&ns, &before);
    drop(tun);
    ns.run(|| cfg.teardown().unwrap());
    assert_clean(&ns, &before, &journal);
}

#[test]
fn teardown_after_the_device_is_dropped() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    let before = ns.routes();
    ns.run_async(|| {
        let mut cfg = platform_configurator(&journal).unwrap();
        let tun = cfg.apply(&plan()).unwrap();
        drop(tun);
        cfg.teardown().unwrap();
    });
    assert_clean(&ns, &before, &journal);
}

#[test]
fn default_route_is_refused_and_nothing_changes() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    ns.add_default_route();
    let before = ns.routes();
    for default in ["0.0.0.0", "::"] {
        let err = ns.run_async(|| {
            let mut p = plan();
            p.routes.push((default.parse().unwrap(), 0));
            let mut cfg = platform_configurator(&journal).unwrap();
            cfg.apply(&p).map(|_| ()).unwrap_err()
        });
        assert!(matches!(err, NetError::DefaultRoute(_)), "{err}");
        assert_clean(&ns, &before, &journal);
    }
}

#[test]
fn a_foreign_interface_with_our_name_is_never_touched() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    ns.ip(&[
        "link", "add", "warren0", "type", "veth", "peer", "name", "wnc-peer",
    ]);
    let err = ns.run_async(|| {
        let mut cfg = platform_configurator(&journal).unwrap();
        cfg.apply(&plan()).map(|_| ()).unwrap_err()
    });
    assert!(matches!(err, NetError::NameInUse { .. }), "{err}");
    assert!(err.to_string().contains("ip link del warren0"), "{err}");
    assert!(ns.has_link("warren0"), "the foreign interface was removed");
    assert!(!journal.exists());

    // Even a journal that names it (a helper that died before creating its
    // TUN) must not make recovery delete a non-TUN interface.
    std::fs::write(
        &journal,
        r#"{"version":1,"changes":[{"kind":"tun","name":"warren0","persistent":true}]}"#,
    )
    .unwrap();
    ns.run(|| recover(&journal).unwrap());
    assert!(
        ns.has_link("warren0"),
        "recovery removed a non-TUN interface"
    );
    assert!(!journal.exists());
}

#[test]
fn recover_removes_a_persistent_tun_and_its_routes() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    let before = ns.routes();
    // What a helper that used a persistent TUN would leave after dying.
    ns.ip(&["tuntap", "add", "dev", "warren0", "mode", "tun"]);
    ns.ip(&["link", "set", "warren0", "up"]);
    ns.ip(&["addr", "add", "100.64.0.7/32", "dev", "warren0"]);
    ns.ip(&[
        "route",
        "add",
        "100.64.0.0/10",
        "dev",
        "warren0",
        "proto",
        "static",
    ]);
    std::fs::write(
        &journal,
        r#"{"version":1,"changes":[
            {"kind":"tun","name":"warren0","persistent":true},
            {"kind":"address","ifname":"warren0","addr":"100.64.0.7","prefix":32},
            {"kind":"route","ifname":"warren0","dest":"100.64.0.0","prefix":10},
            {"kind":"route","ifname":"warren0","dest":"fd7a:115c:a1e0::","prefix":48}]}"#,
    )
    .unwrap();
    ns.run(|| recover(&journal).unwrap());
    assert_clean(&ns, &before, &journal);
    // A second recovery with nothing to do is a no-op.
    ns.run(|| recover(&journal).unwrap());
}

/// Child side of [`kill_dash_nine_then_recover`]: applies the plan, says
/// READY, and waits to be killed. Without the environment variable it is a
/// no-op so a normal test run passes through it.
#[test]
fn crash_child() {
    let Some(journal) = std::env::var_os(CHILD_JOURNAL_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cfg = platform_configurator(PathBuf::from(journal)).unwrap();
    let _tun = cfg.apply(&plan()).unwrap();
    println!("READY");
    // Bounded: the parent kills us long before this.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn kill_dash_nine_then_recover() {
    let Some((_dir, journal, ns)) = setup() else {
        return;
    };
    ns.add_default_route();
    let before = ns.routes();

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_JOURNAL_ENV, &journal)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Kill the child whatever happens below.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("READY") {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the child never configured the network");
    assert_configured(&ns, &before);

    // SIGKILL: no destructor, no teardown.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let left = Journal::open(&journal).unwrap();
    assert_eq!(
        left.changes().len(),
        5,
        "the dead helper's journal should name its TUN, addresses and routes: {:?}",
        left.changes()
    );
    ns.run(|| recover(&journal).unwrap());
    assert_clean(&ns, &before, &journal);
}

/// Environment variable that turns [`unprivileged_child`] into the child of
/// [`without_cap_net_admin_the_error_says_run_as_root`].
const NOPRIV_JOURNAL_ENV: &str = "WARREN_NETCFG_TEST_NOPRIV_JOURNAL";

/// Child side of [`without_cap_net_admin_the_error_says_run_as_root`]: tries
/// to apply without CAP_NET_ADMIN and prints what it got. A no-op otherwise.
#[test]
fn unprivileged_child() {
    let Some(journal) = std::env::var_os(NOPRIV_JOURNAL_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cfg = platform_configurator(PathBuf::from(journal)).unwrap();
    match cfg.apply(&plan()) {
        Ok(_) => println!("RESULT applied"),
        Err(e @ NetError::NeedsPrivilege { .. }) => println!("RESULT needs-privilege: {e}"),
        Err(e) => println!("RESULT other: {e}"),
    }
}

#[test]
fn without_cap_net_admin_the_error_says_run_as_root() {
    if !can_run() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err()
        && !run_or_skip(Some("setpriv (util-linux) is not installed"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("netstate.json");
    let ns = Netns::new();
    let exe = std::env::current_exe().unwrap();
    // Dropping the capability from the bounding set takes it away from the
    // exec'd test binary even though it runs as uid 0.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args([
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "unprivileged_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NOPRIV_JOURNAL_ENV, &journal)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("child printed no result: {stdout}"));
    assert!(line.starts_with("RESULT needs-privilege"), "{line}");
    assert!(line.contains("run the helper as root"), "{line}");
    assert!(!ns.has_link("warren0"));
    assert!(
        !journal.exists(),
        "a refused creation must leave no journal"
    );
}
