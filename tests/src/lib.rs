//! Harness for Warren's end-to-end tests: finds the real binaries, starts a
//! coordinator, a helper, agents and CLI invocations in a private temp dir,
//! and tears everything down on drop, printing every process's log when the
//! test failed.
//!
//! Every test builds its own [`TestDir`] (own socket, DB, ports and names), so
//! tests run in parallel. Nothing here talks to anything but loopback and
//! the throwaway network namespaces of [`netns`], which are deleted on drop.

pub mod container;
pub mod coord;
pub mod coturn;
pub mod desktop;
pub mod fake_coordinator;
pub mod helper;
pub mod ipc;
pub mod nat_lab;
pub mod netns;
pub mod oidc;
pub mod path_lab;
pub mod proc;
pub mod tls_front;
pub mod users;
pub mod watch;
pub mod wire;

pub use coord::Coordinator;
pub use helper::{Cli, Helper, Status};
pub use ipc::{Mirror, RawIpc, RawSubscriber, Recv};
pub use proc::{start_agent, Proc};
pub use users::{ThrowawayGroup, ThrowawayUser};
pub use watch::{block_on, ipc_request, MirrorWatcher};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The directory holding the workspace's built binaries (`target/debug` for
/// tests, `target/release` for the release bench). Derived from this test
/// executable's own path, so it follows `CARGO_TARGET_DIR`;
/// `WARREN_BIN_DIR` overrides it.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARREN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let mut dir = exe.parent().expect("executable has a parent").to_path_buf();
    // Test executables live in `target/<profile>/deps`.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one of Warren's binaries; panics with the fix if it isn't built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built — run `cargo build --workspace --bins` first (looked in {})",
        name,
        bin_dir().display()
    );
    path
}

/// A unique lowercase name (valid as a Warren name and a Unix user name):
/// `prefix` plus a random suffix.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    format!("{prefix}{:x}{n}", r & 0xff_ffff)
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
/// Returns the value and how long it took; panics naming `what` on timeout.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`wait_until`] but returns `None` instead of panicking on timeout.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The opt-out for tests this machine can't run (not root, no
/// `/dev/net/tun`, a missing tool): only with `WARREN_ALLOW_SKIP=1` may such
/// a test pass by skipping. Without it the test fails and says why, because a
/// skipped data-plane test would report a broken tunnel as a green run.
pub const ALLOW_SKIP_VAR: &str = "WARREN_ALLOW_SKIP";

/// Whether the opt-out is set ([`ALLOW_SKIP_VAR`] is exactly `1`).
pub fn skip_allowed() -> bool {
    std::env::var_os(ALLOW_SKIP_VAR).is_some_and(|v| v == "1")
}

/// What a test does, given why it can't run here (`None`: it can) and
/// whether skipping is allowed: `Ok(true)` run, `Ok(false)` skip, `Err` fail
/// with the message. Pure, so the rule itself is unit-tested.
pub fn run_skip_or_fail(
    test: &str,
    cannot_run: Option<&str>,
    skip_allowed: bool,
) -> Result<bool, String> {
    match (cannot_run, skip_allowed) {
        (None, _) => Ok(true),
        (Some(_), true) => Ok(false),
        (Some(reason), false) => Err(format!(
            "{test} cannot run on this machine: {reason}. Run the tests as root on a machine with /dev/net/tun and the tools installed (scripts/test.sh installs them), or set {ALLOW_SKIP_VAR}=1 to skip such tests on purpose"
        )),
    }
}

/// `true` if `test` can run. If it can't (`cannot_run` says why), it fails
/// unless [`skip_allowed`], in which case it prints why and returns `false`.
pub fn run_or_skip(test: &str, cannot_run: Option<&str>) -> bool {
    match run_skip_or_fail(test, cannot_run, skip_allowed()) {
        Ok(true) => true,
        Ok(false) => {
            eprintln!(
                "skipping {test} ({ALLOW_SKIP_VAR}=1): {}",
                cannot_run.unwrap_or_default()
            );
            false
        }
        Err(message) => panic!("{message}"),
    }
}

/// A test's private directory. Kept (and its path printed) when the test
/// fails, so the logs can be read afterwards; removed when it passes.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("warren-e2e-{name}-"))
            .tempdir()
            .expect("create the test's temp dir");
        // Other users (the access test's throwaway user) must reach the
        // socket inside; the files themselves keep their own modes.
        set_mode(dir.path(), 0o755);
        let path = dir.path().to_path_buf();
        Self {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test failed: its files are kept in {}", kept.display());
            }
        }
    }
}

/// chmod that panics with the path on failure.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Every file under `dir` (recursively) with its text, lossily decoded.
pub fn read_all_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&p) {
                        out.push((p, String::from_utf8_lossy(&bytes).into_owned()));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The secret part of a `wut_<id>_<secret>` / `wat_<id>_<secret>` token
/// (the id is public and may be logged); the whole text if it has no id.
pub fn secret_part(token: &str) -> &str {
    let mut parts = token.splitn(3, '_');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(secret)) if !secret.is_empty() => secret,
        _ => token,
    }
}

/// A token of the coordinator's shape (`wut_<16 hex>_<43 base64url>`) that no
/// coordinator issued.
pub fn fake_token() -> String {
    use rand::Rng;
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut r = rand::thread_rng();
    let id: String = (0..16)
        .map(|_| char::from(b"0123456789abcdef"[r.gen_range(0..16)]))
        .collect();
    let secret: String = (0..43)
        .map(|_| char::from(B64URL[r.gen_range(0..64)]))
        .collect();
    format!("wut_{id}_{secret}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_part_keeps_underscores_of_the_secret() {
        assert_eq!(secret_part("wut_0123456789abcdef_ab_cd-ef"), "ab_cd-ef");
        assert_eq!(secret_part("opaque"), "opaque");
        let t = fake_token();
        assert_eq!(t.len(), 4 + 16 + 1 + 43);
        assert_eq!(secret_part(&t).len(), 43);
    }

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique("warrentest");
        let b = unique("warrentest");
        assert_ne!(a, b);
        assert!(a.len() <= 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn a_test_that_cannot_run_fails_unless_skipping_is_allowed() {
        assert_eq!(run_skip_or_fail("t", None, false), Ok(true));
        assert_eq!(run_skip_or_fail("t", None, true), Ok(true));
        assert_eq!(run_skip_or_fail("t", Some("not root"), true), Ok(false));
        let err = run_skip_or_fail("tunnel-x", Some("not root"), false).unwrap_err();
        assert!(
            err.contains("tunnel-x") && err.contains("not root"),
            "{err}"
        );
        assert!(err.contains("WARREN_ALLOW_SKIP=1"), "{err}");
        // The real entry point panics with that message (the opt-out is
        // not set in the test command).
        if !skip_allowed() {
            let r = std::panic::catch_unwind(|| run_or_skip("tunnel-x", Some("no TUN")));
            assert!(r.is_err(), "a test that cannot run passed");
        }
        assert!(run_or_skip("tunnel-x", None));
    }

    #[test]
    fn wait_until_is_bounded() {
        let r = std::panic::catch_unwind(|| {
            wait_until(Duration::from_millis(50), "never", || None::<()>)
        });
        assert!(r.is_err());
        let (v, _) = wait_until(Duration::from_secs(1), "now", || Some(7));
        assert_eq!(v, 7);
    }
}
