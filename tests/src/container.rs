//! Booted Debian containers for the package tests: a minimal bookworm rootfs
//! made once with `debootstrap` from the Debian source apt already uses and
//! cached between runs, copied per test (so tests stay independent and run
//! in parallel), and booted with `systemd-nspawn -b` inside one of the lab's
//! network namespaces ([`crate::netns`]), where the packaged `warrend` runs
//! under the real systemd with its real unit.
//!
//! Everything is bounded in time and torn down on drop, also when the test
//! panics: the container's PID 1 is killed (which ends its whole PID
//! namespace and with it `systemd-nspawn`) and the rootfs copy deleted. A
//! failing test prints the container's `journalctl -u warrend` first.
//!
//! Facts this relies on (checked on the test machines): `systemd-nspawn`
//! needs `--keep-unit --register=no` here (no machined, no system bus), the
//! container's `/tmp` is a fresh tmpfs (so files handed in live under
//! `/root` or `/usr/local/share`), and `nsenter -t <PID 1> -a` runs a
//! command inside it.

use crate::proc::{die_with_parent, Proc};
use crate::{poll_until, unique};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Debian release the rootfs is made of (the test machines' own).
pub const SUITE: &str = "bookworm";

/// Overrides where the cached rootfs and the per-test copies live.
pub const CACHE_VAR: &str = "WARREN_ROOTFS_CACHE";

/// Overrides the Debian mirror debootstrap downloads from.
pub const MIRROR_VAR: &str = "WARREN_DEBIAN_MIRROR";

/// Overrides where the built packages are looked for.
pub const PACKAGE_DIR_VAR: &str = "WARREN_INSTALLER_DIR";

/// What every rootfs has beyond `minbase`: an init that boots, the user
/// tools the maintainer scripts and the tests use.
const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "passwd",
    "adduser",
];

/// PATH inside the container and the chroot (the host's has tools the
/// container lacks, and nothing of the host's environment should leak in).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The two cached variants: without and with `systemd-resolved` (installing
/// it turns `/etc/resolv.conf` into a symlink to its stub, so one rootfs
/// can't serve both the resolv.conf and the resolved tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Plain,
    Resolved,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Plain => "plain",
            Flavor::Resolved => "resolved",
        }
    }
}

/// Why this machine can't boot containers, if it can't: not root, no
/// `/dev/net/tun`, or a tool missing.
pub fn skip_reason() -> Option<String> {
    if let Some(r) = crate::netns::skip_reason(&[]) {
        return Some(r);
    }
    for tool in ["debootstrap", "systemd-nspawn", "nsenter", "chroot", "cp"] {
        if !crate::netns::tool_exists(tool) {
            return Some(format!(
                "`{tool}` is not installed (apt-get install debootstrap systemd-container util-linux)"
            ));
        }
    }
    None
}

/// The cache directory: `$WARREN_ROOTFS_CACHE`, else
/// `/var/cache/warren-tests` (outside the target dir, so a `cargo clean`
/// or another checkout's CI does not pay for debootstrap again).
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/warren-tests"))
}

/// The Debian mirror apt on this machine uses (`$WARREN_DEBIAN_MIRROR`
/// overrides): the first `deb`/`URIs:` entry for `SUITE` that is not a
/// security or updates suite.
pub fn mirror() -> String {
    if let Some(m) = std::env::var_os(MIRROR_VAR).filter(|v| !v.is_empty()) {
        return m.to_string_lossy().into_owned();
    }
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if let Ok(t) = std::fs::read_to_string(&p) {
                texts.push(t);
            }
        }
    }
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .unwrap_or_else(|| {
            panic!(
                "found no Debian {SUITE} source in /etc/apt/sources.list(.d); set {MIRROR_VAR} to a Debian mirror URL"
            )
        })
}

/// The first mirror serving `SUITE` itself in one sources file, in either
/// the one-line or the deb822 format.
pub fn mirror_in(text: &str) -> Option<String> {
    // One-line format: `deb [opts] URI SUITE COMPONENTS`.
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        // `[a=b c=d]` options may span words: skip to the closing bracket.
        let rest: &[&str] = if words.get(1).is_some_and(|w| w.starts_with('[')) {
            match words[1..].iter().position(|w| w.ends_with(']')) {
                Some(i) => &words[2 + i..],
                None => continue,
            }
        } else {
            &words[1..]
        };
        if rest.len() >= 2 && rest[1] == SUITE {
            return Some(rest[0].to_string());
        }
    }
    // deb822: stanzas separated by blank lines.
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let (Some(types), Some(uris), Some(suites)) =
            (field("Types"), field("URIs"), field("Suites"))
        else {
            continue;
        };
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == SUITE)
        {
            if let Some(uri) = uris.split_whitespace().next() {
                return Some(uri.to_string());
            }
        }
    }
    None
}

/// Runs `cmd` for at most `timeout`, collecting its output; panics naming
/// `what` if it takes longer (after killing it).
pub fn run_bounded(mut cmd: Command, timeout: Duration, what: &str) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {what} ({cmd:?}): {e}"));
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let status = poll_until(timeout, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {timeout:?}");
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// stdout and stderr of `out`, for messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// An exclusive `flock` on a file, released on drop: parallel tests (and
/// parallel test binaries) wait for one debootstrap instead of racing.
struct CacheLock(std::fs::File);

impl CacheLock {
    fn take(path: &Path) -> CacheLock {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open the lock {}: {e}", path.display()));
        // SAFETY: flock on a descriptor we own; blocks until it is ours.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        CacheLock(f)
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking our own descriptor (closing it would too).
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// A cache entry's name: the suite, the flavor and a hash of the package
/// list, so changing the list makes a new rootfs instead of reusing a
/// stale one.
fn cache_key(flavor: Flavor) -> String {
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in BASE_PACKAGES.join(",").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{SUITE}-{}-{:08x}", flavor.name(), h as u32)
}

const COMPLETE: &str = ".warren-rootfs-complete";

/// The cached rootfs of `flavor`, made now if it isn't there (under a lock;
/// a half-made one from an interrupted run is thrown away). Returns its
/// path and how long making it took (zero when it was cached).
pub fn cached_rootfs(flavor: Flavor) -> (PathBuf, Duration) {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create the rootfs cache {}: {e}", dir.display()));
    let _lock = CacheLock::take(&dir.join("rootfs.lock"));
    let path = dir.join(cache_key(flavor));
    if path.join(COMPLETE).is_file() {
        return (path, Duration::ZERO);
    }
    let start = Instant::now();
    let tmp = dir.join(format!("{}.partial", cache_key(flavor)));
    remove_tree(&tmp);
    match flavor {
        Flavor::Plain => debootstrap(&dir, &tmp),
        Flavor::Resolved => {
            // Release the lock's scope only after both exist: the plain one
            // is made (under the same lock) first if needed.
            let plain = dir.join(cache_key(Flavor::Plain));
            if !plain.join(COMPLETE).is_file() {
                let plain_tmp = dir.join(format!("{}.partial", cache_key(Flavor::Plain)));
                remove_tree(&plain_tmp);
                debootstrap(&dir, &plain_tmp);
                finish(&plain_tmp, &plain);
            }
            copy_tree(&plain, &tmp);
            let _ = std::fs::remove_file(tmp.join(COMPLETE));
            add_resolved(&dir, &tmp);
        }
    }
    finish(&tmp, &path);
    let took = start.elapsed();
    eprintln!(
        "made the {} rootfs {} in {took:?}",
        flavor.name(),
        path.display()
    );
    (path, took)
}

fn finish(tmp: &Path, path: &Path) {
    // Downloaded .debs are not needed again and would be copied per test.
    if let Ok(entries) = std::fs::read_dir(tmp.join("var/cache/apt/archives")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    std::fs::write(tmp.join(COMPLETE), "").expect("mark the rootfs complete");
    remove_tree(path);
    std::fs::rename(tmp, path).unwrap_or_else(|e| {
        panic!(
            "move the rootfs {} to {}: {e}",
            tmp.display(),
            path.display()
        )
    });
}

fn debootstrap(cache: &Path, target: &Path) {
    let mirror = mirror();
    let log = cache.join("debootstrap.log");
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase"])
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(SUITE)
        .arg(target)
        .arg(&mirror)
        .env("PATH", PATH);
    eprintln!(
        "debootstrap {SUITE} from {mirror} into {} (once; cached)",
        target.display()
    );
    let out = run_bounded(cmd, Duration::from_secs(900), "debootstrap");
    let _ = std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat());
    assert!(
        out.status.success(),
        "debootstrap {SUITE} from {mirror} failed (log: {}); check that the mirror is reachable or set {MIRROR_VAR}:\n{}",
        log.display(),
        tail(&describe(&out), 40)
    );
}

fn add_resolved(cache: &Path, root: &Path) {
    // apt in the chroot resolves the mirror with the host's resolver.
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    std::fs::copy("/etc/resolv.conf", &resolv)
        .expect("copy the host's resolv.conf into the chroot");
    let out = chroot_sh(
        root,
        "apt-get update -q && apt-get install -y -q --no-install-recommends systemd-resolved",
        Duration::from_secs(600),
    );
    let _ = std::fs::write(
        cache.join("resolved-install.log"),
        [&out.stdout[..], &out.stderr[..]].concat(),
    );
    assert!(
        out.status.success(),
        "installing systemd-resolved into the rootfs failed:\n{}",
        tail(&describe(&out), 40)
    );
    // The package lists (100 MB) would be copied for every test; removing
    // a package (all the tests do with apt) does not need them.
    let _ = chroot_sh(root, "rm -rf /var/lib/apt/lists/*", Duration::from_secs(60));
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `sh -c SCRIPT` chrooted into `root` with a clean environment.
pub fn chroot_sh(root: &Path, script: &str, timeout: Duration) -> Output {
    let mut cmd = Command::new("chroot");
    cmd.arg(root)
        .args(["/usr/bin/env", "-i"])
        .arg(format!("PATH={PATH}"))
        .args(["LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"])
        .args(["/bin/sh", "-c", script]);
    run_bounded(
        cmd,
        timeout,
        &format!("chroot {}: {script}", root.display()),
    )
}

fn copy_tree(from: &Path, to: &Path) {
    let mut cmd = Command::new("cp");
    cmd.args(["-a", "--reflink=auto"]).arg(from).arg(to);
    let out = run_bounded(cmd, Duration::from_secs(300), "copy the rootfs");
    assert!(
        out.status.success(),
        "cp -a {} {} failed: {}",
        from.display(),
        to.display(),
        describe(&out)
    );
}

fn remove_tree(path: &Path) {
    if path.symlink_metadata().is_err() {
        return;
    }
    // `rm -rf --one-file-system`: never follows into anything mounted below.
    let mut cmd = Command::new("rm");
    cmd.args(["-rf", "--one-file-system"]).arg(path);
    let out = run_bounded(cmd, Duration::from_secs(300), "remove a rootfs");
    if !out.status.success() {
        eprintln!("could not remove {}: {}", path.display(), describe(&out));
    }
}

/// The built package `prefix<version>…suffix` (e.g. `warren_`,
/// `_amd64.deb`; the version starts with a digit) in `target/installer/`
/// (`$WARREN_INSTALLER_DIR` overrides), the newest if several; panics with
/// the command that builds it if there is none.
pub fn package(prefix: &str, suffix: &str) -> PathBuf {
    let dir = std::env::var_os(PACKAGE_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // bin_dir() is `target/<profile>`.
            let mut d = crate::bin_dir();
            d.pop();
            d.join("installer")
        });
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // The version follows the name: `warren-0.1…`, not `warren-desktop-0.1…`.
            let versioned = name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            (versioned && name.ends_with(suffix)).then(|| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (t, e.path())
            })
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "no package {prefix}*{suffix} in {}: run `bash installer/build.sh deb rpm` first (or set {PACKAGE_DIR_VAR})",
            dir.display()
        )
    })
}

/// A private copy of a cached rootfs, deleted on drop.
pub struct Rootfs {
    path: PathBuf,
    pub flavor: Flavor,
}

impl Rootfs {
    /// Copies the cached rootfs of `flavor` (making it first if needed).
    pub fn copy(flavor: Flavor) -> Rootfs {
        let (cached, _) = cached_rootfs(flavor);
        let instances = cache_dir().join("instances");
        std::fs::create_dir_all(&instances).expect("create the rootfs instances dir");
        remove_stale_instances(&instances);
        let path = instances.join(unique("root"));
        copy_tree(&cached, &path);
        // The cache's marker is no part of the system under test.
        let _ = std::fs::remove_file(path.join(COMPLETE));
        // `cp -a` kept the cache's age; the stale sweep goes by this one.
        touch(&path);
        Rootfs { path, flavor }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` (an absolute path inside the rootfs) on the host.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.path.join(rel.trim_start_matches('/'))
    }

    /// Writes `content` to `rel` inside the rootfs with `mode`, creating
    /// its directories; replaces a symlink there rather than following it.
    pub fn write(&self, rel: &str, content: &[u8], mode: u32) {
        let p = self.host_path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = std::fs::remove_file(&p);
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }

    /// Copies a host file into the rootfs at `rel` (mode 0644).
    pub fn put(&self, from: &Path, rel: &str) {
        let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        self.write(rel, &bytes, 0o644);
    }

    /// `sh -c SCRIPT` chrooted into the rootfs (not booted); bounded.
    pub fn chroot(&self, script: &str, timeout: Duration) -> Output {
        chroot_sh(&self.path, script, timeout)
    }

    /// Like [`Rootfs::chroot`], panicking unless it succeeds; returns stdout.
    pub fn chroot_ok(&self, script: &str) -> String {
        let out = self.chroot(script, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "in the chroot: {script}: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Sets `path`'s modification time to now.
fn touch(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .expect("a rootfs path has no NUL");
    // SAFETY: utimensat with a valid C path; NULL times means "now".
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    assert_eq!(
        rc,
        0,
        "touch {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Copies older than any test runs, left by a test process that was killed
/// before it could delete its own.
fn remove_stale_instances(instances: &Path) {
    const STALE: Duration = Duration::from_secs(6 * 3600);
    for e in std::fs::read_dir(instances).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if old {
            remove_tree(&e.path());
        }
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// A booted container: `systemd-nspawn -b` on a [`Rootfs`] in a network
/// namespace. Dropping it kills it and deletes the rootfs.
pub struct Container {
    pub name: String,
    pid1: u32,
    nspawn: Option<Proc>,
    log_dir: PathBuf,
    boots: u32,
    netns: String,
    /// When the current boot started (for "up within N s of boot").
    pub booted_at: Instant,
    rootfs: Option<Rootfs>,
}

impl Container {
    /// Boots `rootfs` joined to network namespace `netns` (its links,
    /// addresses and routes are the container's), with the console log in
    /// `log_dir`; returns once PID 1 exists (see [`Container::wait_booted`]).
    pub fn boot(rootfs: Rootfs, netns: &str, log_dir: &Path) -> Container {
        let mut c = Container {
            name: unique("wboot"),
            pid1: 0,
            nspawn: None,
            log_dir: log_dir.to_path_buf(),
            boots: 0,
            netns: netns.to_string(),
            booted_at: Instant::now(),
            rootfs: Some(rootfs),
        };
        c.start();
        c
    }

    fn start(&mut self) {
        self.boots += 1;
        let root = self.rootfs().path().to_path_buf();
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["-q", "-b", "-D"])
            .arg(&root)
            .args(["-M", &self.name])
            .args(["--register=no", "--keep-unit"])
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.netns
            ))
            // The tests set the container's DNS themselves (a file, or
            // resolved's stub symlink) and compare it byte for byte.
            .args(["--resolv-conf=off", "--timezone=off", "--link-journal=no"])
            // nspawn grants CAP_NET_ADMIN only with a network namespace of
            // its own making; the helper needs it for the TUN and routes.
            .arg("--capability=CAP_NET_ADMIN")
            .env("SYSTEMD_LOG_LEVEL", "info");
        self.booted_at = Instant::now();
        let name = format!("nspawn-{}-{}", self.name, self.boots);
        let mut proc = Proc::spawn(&name, &self.log_dir, cmd, false);
        let nspawn_pid = proc.pid();
        let pid1 = poll_until(Duration::from_secs(20), || {
            if !proc.is_running() {
                return Some(None);
            }
            container_init(nspawn_pid).map(Some)
        })
        .flatten();
        let Some(pid1) = pid1 else {
            proc.print_log_tail(40);
            panic!("systemd-nspawn did not start the container's init within 20 s");
        };
        self.pid1 = pid1;
        self.nspawn = Some(proc);
        watchdog(pid1);
    }

    fn rootfs(&self) -> &Rootfs {
        self.rootfs
            .as_ref()
            .expect("a container has its rootfs until dropped")
    }

    /// The rootfs on the host (the container's `/` is this directory).
    pub fn root(&self) -> &Rootfs {
        self.rootfs()
    }

    /// PID of the container's init, as the host sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// Waits until `systemctl is-system-running --wait` says boot is over
    /// (`running`, or `degraded` with the failed units printed).
    pub fn wait_booted(&self, timeout: Duration) {
        let start = Instant::now();
        // Right after PID 1 starts, systemctl can't reach it yet and fails
        // at once instead of waiting: ask again until it can.
        let mut out;
        loop {
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(1));
            out = self.sh("systemctl is-system-running --wait", left);
            let said = String::from_utf8_lossy(&out.stdout);
            // `offline`, or nothing and "Failed to connect to bus": too early.
            let early = matches!(said.trim(), "offline" | "");
            if !early || start.elapsed() >= timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match state.as_str() {
            "running" => {}
            "degraded" => {
                let failed = self.sh(
                    "systemctl --failed --no-legend --plain",
                    Duration::from_secs(10),
                );
                eprintln!(
                    "container {} booted degraded; failed units:\n{}",
                    self.name,
                    String::from_utf8_lossy(&failed.stdout)
                );
            }
            _ => panic!(
                "container {} did not finish booting within {timeout:?}: {}",
                self.name,
                describe(&out)
            ),
        }
    }

    fn nsenter(&self, timeout: Duration) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid1.to_string(), "-a", "--"])
            // `timeout` inside too: killing nsenter would not end the
            // command it forked into the container's PID namespace.
            .args(["/usr/bin/timeout", "-k", "3"])
            .arg(format!("{}", timeout.as_secs().max(1)))
            .args(["/usr/bin/env", "-i"])
            .arg(format!("PATH={PATH}"))
            .args(["LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"]);
        cmd
    }

    /// `sh -c SCRIPT` as root inside the container; bounded by `timeout`.
    pub fn sh(&self, script: &str, timeout: Duration) -> Output {
        let mut cmd = self.nsenter(timeout);
        cmd.args(["/bin/sh", "-c", script]);
        run_bounded(
            cmd,
            timeout + Duration::from_secs(10),
            &format!("in container {}: {script}", self.name),
        )
    }

    /// [`Container::sh`] that must succeed (30 s); returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "in container {}: {script}: {}",
            self.name,
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh -c SCRIPT` as `user` (its groups from the group database, as a
    /// fresh login would get them; its HOME, USER and PATH), bounded.
    pub fn sh_as(&self, user: &str, script: &str, timeout: Duration) -> Output {
        let mut cmd = self.nsenter(timeout);
        cmd.arg("/usr/bin/setpriv")
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .args([
                "--init-groups",
                "--reset-env",
                "--",
                "/bin/sh",
                "-c",
                script,
            ]);
        run_bounded(
            cmd,
            timeout + Duration::from_secs(10),
            &format!("as {user} in container {}: {script}", self.name),
        )
    }

    /// `systemctl is-active UNIT` (`active`, `inactive`, `activating`, ...).
    pub fn is_active(&self, unit: &str) -> String {
        let out = self.sh(
            &format!("systemctl is-active {unit}"),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The unit's `MainPID` (0 when it has none).
    pub fn main_pid(&self, unit: &str) -> u32 {
        let out = self.sh(
            &format!("systemctl show -p MainPID --value {unit}"),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// `journalctl -u UNIT` (the last 200 lines).
    pub fn journal(&self, unit: &str) -> String {
        let out = self.sh(
            &format!("journalctl -u {unit} --no-pager -n 200 -o short-monotonic"),
            Duration::from_secs(15),
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Prints the unit's status and journal (what a failing test shows).
    pub fn print_unit(&self, unit: &str) {
        let status = self.sh(
            &format!("systemctl status --no-pager -l {unit}"),
            Duration::from_secs(10),
        );
        eprintln!(
            "----- container {}: systemctl status {unit} -----\n{}{}",
            self.name,
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
        eprintln!(
            "----- container {}: journalctl -u {unit} -----\n{}----- end -----",
            self.name,
            self.journal(unit)
        );
    }

    /// `systemctl poweroff`, then waits (30 s) for systemd-nspawn to exit;
    /// the rootfs stays for [`Container::reboot`].
    pub fn poweroff(&mut self) {
        let _ = self.sh("systemctl poweroff --no-block", Duration::from_secs(10));
        let mut proc = self.nspawn.take().expect("the container runs");
        let off = poll_until(Duration::from_secs(30), || proc.try_wait());
        if off.is_none() {
            eprintln!(
                "container {} did not power off within 30 s; killing it",
                self.name
            );
            self.kill_init();
        }
        proc.kill();
        self.pid1 = 0;
    }

    /// Powers off and boots the same rootfs again (a reboot; nspawn itself
    /// only exits on one).
    pub fn reboot(&mut self) {
        self.poweroff();
        self.start();
    }

    fn kill_init(&self) {
        if self.pid1 != 0 {
            // SAFETY: kill(2) on the container's init, which we started;
            // SIGKILL to a PID namespace's init ends the whole namespace.
            unsafe {
                libc::kill(self.pid1 as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.pid1 != 0 {
            self.print_unit("warrend");
        }
        self.kill_init();
        if let Some(mut p) = self.nspawn.take() {
            let _ = poll_until(Duration::from_secs(10), || p.try_wait());
            if std::thread::panicking() {
                p.print_log_tail(60);
            }
            p.kill();
        }
        // nspawn's per-machine propagation directory (empty once it exits).
        let _ = std::fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
        drop(self.rootfs.take());
    }
}

/// Kills the container's init if this test process dies without unwinding
/// (killed by a timeout, aborted): systemd-nspawn dies with the test, but
/// the container it started would not. A detached `sh` in its own session
/// polls both once a second and exits once the container is gone.
fn watchdog(pid1: u32) {
    use std::os::unix::process::CommandExt;
    let test = std::process::id();
    let script = format!(
        "while kill -0 {test} 2>/dev/null && kill -0 {pid1} 2>/dev/null; do sleep 1; done; kill -9 {pid1} 2>/dev/null; true"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid in the child only; it must outlive the test's session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        // Not waited for: it is meant to outlive us (init reaps it then).
        Ok(child) => drop(child),
        Err(e) => eprintln!("could not start the container watchdog: {e}"),
    }
}

/// The init of the container systemd-nspawn `nspawn_pid` started: its child
/// that is PID 1 in its own PID namespace.
fn container_init(nspawn_pid: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
        };
        let ppid_ok =
            field("PPid:").is_some_and(|v| v.first() == Some(&nspawn_pid.to_string().as_str()));
        let nspid = field("NSpid:").unwrap_or_default();
        if ppid_ok && nspid.len() >= 2 && nspid.last() == Some(&"1") {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_both_source_formats() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one_line = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(one_line).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in("deb http://x/debian-security bookworm-security main\n"),
            None
        );
    }

    #[test]
    fn cache_keys_name_the_flavor_and_differ() {
        let p = cache_key(Flavor::Plain);
        let r = cache_key(Flavor::Resolved);
        assert!(p.starts_with("bookworm-plain-"), "{p}");
        assert!(r.starts_with("bookworm-resolved-"), "{r}");
        assert_ne!(p, r);
    }
}
