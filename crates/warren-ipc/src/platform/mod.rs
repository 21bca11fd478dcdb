//! Per-OS facts about where and how the helper runs: its log and state
//! directories, the socket or pipe it listens on, the host's name, how it
//! learns to shut down, and what to tell a person who must start it or be
//! let in. The helper, the CLI and the desktop app all ask here, so the
//! binaries carry no OS-specific code and every hint matches the OS.
//!
//! One file per OS (`linux.rs`, `macos.rs`, `windows.rs`, and `other.rs`
//! for the remaining unix systems); `unix.rs` holds what the unix family
//! shares.

use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;
#[cfg(all(unix, not(any(target_os = "linux", target_os = "macos"))))]
#[path = "other.rs"]
mod imp;

#[cfg(unix)]
mod unix;

pub use imp::Shutdown;

/// Where the helper writes its rotating log (its `--log-dir` default and
/// where the app's "Export logs" looks).
pub fn helper_log_dir() -> PathBuf {
    imp::helper_log_dir()
}

/// Where the helper keeps its journal of network changes (its
/// `--state-dir` default), so a crashed helper's leftovers are undone at
/// the next start.
pub fn helper_state_dir() -> PathBuf {
    imp::helper_state_dir()
}

/// The machine owner's Warren policy (the helper's `--policy` default):
/// which ranges and DNS suffixes any deployment may use. Only an
/// administrator can write it.
pub fn helper_policy_path() -> PathBuf {
    imp::helper_policy_path()
}

/// Whether only an administrator can change the file at `path` (the policy
/// file: a user who could edit it could widen what deployments may do to
/// the machine). The error says what is wrong and how to fix it.
pub fn admin_only_file(path: &Path) -> Result<(), String> {
    imp::admin_only_file(path)
}

/// Where the helper listens: a unix socket, or a named pipe on Windows.
pub fn default_endpoint() -> PathBuf {
    imp::default_endpoint()
}

/// This machine's name as people know it, registered with the coordinator
/// so a device list reads "alice-laptop" rather than a key. `None` when the
/// OS has no usable name.
pub fn hostname() -> Option<String> {
    let name = gethostname::gethostname();
    let name = name.to_str()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Starts listening for the OS's request to stop (SIGTERM or SIGINT on
/// unix; Ctrl-C, the console closing or the machine shutting down on
/// Windows). Await [`Shutdown::recv`] for it.
pub fn shutdown_signal() -> std::io::Result<Shutdown> {
    imp::Shutdown::install()
}

/// The group that owns the helper's socket, which a person must join to
/// use it (the helper may run with `--group`, so the default name is only a
/// fallback). `None` on Windows, where the pipe's access list decides.
pub fn endpoint_group(path: &Path) -> Option<String> {
    imp::endpoint_group(path)
}

/// Why the helper can't be used right now, as a kind a program can act on
/// (the app picks a screen, the CLI a sentence); [`HelperUnavailable::hint`]
/// says what a person does about it on this OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperUnavailable {
    /// Nothing is listening where the helper should be.
    NotRunning,
    /// The helper (or the OS) does not let this user in.
    NotPermitted,
    /// The helper speaks another major protocol version.
    VersionMismatch,
    /// Something that is not the helper service holds its endpoint.
    Untrusted,
    /// The helper is there but did not answer in time or hung up.
    Unresponsive,
}

impl HelperUnavailable {
    /// What to do about it, as a sentence for this OS.
    pub fn hint(self) -> String {
        match self {
            HelperUnavailable::NotRunning => imp::START_HINT.to_string(),
            HelperUnavailable::NotPermitted => join_group_hint(crate::DEFAULT_GROUP),
            HelperUnavailable::VersionMismatch => {
                "Install matching versions of the Warren app/CLI and helper.".to_string()
            }
            HelperUnavailable::Untrusted => format!(
                "Restart the Warren helper and check for other software using its name. {}",
                imp::START_HINT
            ),
            HelperUnavailable::Unresponsive => {
                format!("Restart the helper and try again. {}", imp::START_HINT)
            }
        }
    }
}

/// How to let a user in when only members of `group` (and root) may use
/// the helper; on Windows, where the pipe's access list decides, what to
/// check instead.
pub fn join_group_hint(group: &str) -> String {
    imp::join_group_hint(group)
}

/// What this user does about being refused by a helper whose socket
/// belongs to `group`: on unix, a new login when they were added to the
/// group after this login started (the user database lists them, the
/// process lacks the group), else [`join_group_hint`].
pub fn membership_hint(group: &str) -> String {
    #[cfg(unix)]
    {
        unix::membership_hint(group, join_group_hint(group))
    }
    #[cfg(not(unix))]
    {
        join_group_hint(group)
    }
}

/// How to stop a helper that is already running (when a second one finds
/// its endpoint taken).
pub fn stop_hint() -> &'static str {
    imp::STOP_HINT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_the_os_name_trimmed() {
        let name = hostname().expect("every test machine has a host name");
        assert_eq!(name, name.trim());
        assert!(!name.is_empty());
        assert_eq!(
            Some(name.as_str()),
            gethostname::gethostname().to_str().map(str::trim)
        );
    }

    #[test]
    fn every_kind_has_a_hint_that_says_what_to_do() {
        for kind in [
            HelperUnavailable::NotRunning,
            HelperUnavailable::NotPermitted,
            HelperUnavailable::VersionMismatch,
            HelperUnavailable::Untrusted,
            HelperUnavailable::Unresponsive,
        ] {
            let hint = kind.hint();
            assert!(hint.ends_with('.'), "{kind:?}: {hint}");
            assert!(hint.len() > 20, "{kind:?}: {hint}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_paths_and_hints() {
        assert_eq!(helper_log_dir(), Path::new("/var/log/warren"));
        assert_eq!(helper_state_dir(), Path::new("/var/lib/warren"));
        assert_eq!(default_endpoint(), Path::new(crate::DEFAULT_SOCKET));
        assert!(HelperUnavailable::NotRunning
            .hint()
            .contains("sudo systemctl start warrend"));
        assert!(join_group_hint("staff").contains("sudo usermod -aG staff $USER"));
        assert!(stop_hint().contains("systemctl stop warrend"));
    }

    #[cfg(unix)]
    #[test]
    fn the_socket_group_is_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"").unwrap();
        let gid = nix::unistd::getegid();
        let mine = nix::unistd::Group::from_gid(gid).unwrap().map(|g| g.name);
        assert_eq!(endpoint_group(&path), mine);
        assert_eq!(endpoint_group(&dir.path().join("missing")), None);
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_signal() {
        let mut shutdown = shutdown_signal().unwrap();
        // Nothing was sent: still waiting.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), shutdown.recv())
                .await
                .is_err()
        );
        #[cfg(unix)]
        {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(5), shutdown.recv())
                .await
                .expect("SIGTERM ends the wait");
        }
    }
}
