//! What the unix family shares: the shutdown signals, the socket's group
//! and (where the system follows the FHS) the helper's directories.

use std::path::{Path, PathBuf};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM (the service manager) or SIGINT (Ctrl-C in a terminal).
#[derive(Debug)]
pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits until the OS asks the process to stop. Cancel-safe.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

pub fn endpoint_group(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata(path).ok()?.gid();
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// Whether the user database lists this process's user in `group` while
/// the process itself is not in it: the person was added (the package's
/// installer does that) but is still in a login that started before, and
/// only a new login picks the group up. (macOS resolves memberships
/// through its directory service, so a new login is not the fix there.)
#[cfg(not(target_os = "macos"))]
pub fn added_but_not_logged_in(group: &str) -> bool {
    use nix::unistd::{getegid, geteuid, getgroups, Group, User};
    let Ok(Some(group)) = Group::from_name(group) else {
        return false;
    };
    let Ok(Some(user)) = User::from_uid(geteuid()) else {
        return false;
    };
    let live = getegid() == group.gid || getgroups().is_ok_and(|gs| gs.contains(&group.gid));
    pending_membership(
        live,
        user.gid == group.gid || group.mem.contains(&user.name),
    )
}

#[cfg(target_os = "macos")]
pub fn added_but_not_logged_in(_group: &str) -> bool {
    false
}

/// The rule of [`added_but_not_logged_in`]: listed, yet not in effect.
#[cfg_attr(target_os = "macos", allow(dead_code))]
fn pending_membership(in_process: bool, in_database: bool) -> bool {
    in_database && !in_process
}

/// What a user who may not use the helper does, for the user asking: a
/// new login if they were added already, else joining the group.
pub fn membership_hint(group: &str, join_hint: String) -> String {
    if added_but_not_logged_in(group) {
        format!("You are in the group `{group}` now, but this login started before you were added: log out and back in (or run `newgrp {group}` in a terminal) to use Warren.")
    } else {
        join_hint
    }
}

pub fn admin_only_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("can't read {}: {e}", path.display()))?;
    let fix = format!(
        "only root may be able to change it: `sudo chown root {0} && sudo chmod go-w {0}`",
        path.display()
    );
    if meta.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}; {fix}",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by its group or others; {fix}",
            path.display()
        ));
    }
    Ok(())
}

/// The FHS places of the helper's files (Linux and the BSDs; macOS has its
/// own).
#[cfg_attr(target_os = "macos", allow(dead_code))]
pub mod fhs {
    use super::PathBuf;

    pub fn helper_log_dir() -> PathBuf {
        PathBuf::from("/var/log/warren")
    }

    pub fn helper_state_dir() -> PathBuf {
        PathBuf::from("/var/lib/warren")
    }

    pub fn helper_policy_path() -> PathBuf {
        PathBuf::from("/etc/warren/policy.toml")
    }

    pub fn default_endpoint() -> PathBuf {
        PathBuf::from(crate::DEFAULT_SOCKET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_but_not_live_membership_is_pending() {
        assert!(pending_membership(false, true));
        assert!(!pending_membership(true, true));
        assert!(!pending_membership(false, false));
        assert!(!pending_membership(true, false));
    }

    #[test]
    fn a_group_that_does_not_exist_is_never_pending() {
        assert!(!added_but_not_logged_in("warren-no-such-group-x"));
        let hint = membership_hint("warren-no-such-group-x", "join it".into());
        assert_eq!(hint, "join it");
    }
}
