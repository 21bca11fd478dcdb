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
