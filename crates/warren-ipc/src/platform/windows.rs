//! Windows: the `warrend` service (LocalSystem) with its files under
//! `%ProgramData%\Warren` and a named pipe whose access list decides who
//! may connect.

use std::path::{Path, PathBuf};
use tokio::signal::windows::{ctrl_c, ctrl_close, ctrl_shutdown, CtrlC, CtrlClose, CtrlShutdown};

pub const START_HINT: &str =
    "Start the Warren service: `sc start warrend` in an administrator prompt (or reinstall Warren).";
pub const STOP_HINT: &str = "stop it first with `sc stop warrend` in an administrator prompt";

/// `%ProgramData%` (normally `C:\ProgramData`), where services keep data.
fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
}

pub fn helper_log_dir() -> PathBuf {
    program_data().join("Warren").join("logs")
}

pub fn helper_state_dir() -> PathBuf {
    program_data().join("Warren").join("state")
}

pub fn helper_policy_path() -> PathBuf {
    program_data().join("Warren").join("policy.toml")
}

pub fn default_endpoint() -> PathBuf {
    PathBuf::from(crate::DEFAULT_PIPE)
}

/// `%ProgramData%\Warren` is created by the installer with an access list
/// that lets only administrators write; the file inherits it.
pub fn admin_only_file(path: &Path) -> Result<(), String> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| format!("can't read {}: {e}", path.display()))
}

pub fn endpoint_group(_path: &Path) -> Option<String> {
    None
}

pub fn join_group_hint(_group: &str) -> String {
    "Run Warren from your own desktop session (not a service or remote shell), or ask an administrator.".to_string()
}

/// Ctrl-C, the console closing, or the machine shutting down: a helper run
/// in a console. Run as the Windows service (`warrend --service`), the
/// service manager's stop and shutdown controls end it instead.
#[derive(Debug)]
pub struct Shutdown {
    c: CtrlC,
    close: CtrlClose,
    shutdown: CtrlShutdown,
}

impl Shutdown {
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Self {
            c: ctrl_c()?,
            close: ctrl_close()?,
            shutdown: ctrl_shutdown()?,
        })
    }

    /// Waits until the OS asks the process to stop. Cancel-safe.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.c.recv() => {}
            _ = self.close.recv() => {}
            _ = self.shutdown.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::platform::{
        admin_only_file, default_endpoint, endpoint_group, helper_log_dir, helper_policy_path,
        helper_state_dir, join_group_hint, stop_hint, HelperUnavailable,
    };
    use std::path::{Path, PathBuf};

    #[test]
    fn windows_paths_and_hints() {
        // Where the service keeps its files: under %ProgramData%\Warren, and
        // C:\ProgramData when a bare environment lacks the variable.
        let saved = std::env::var_os("ProgramData");
        std::env::set_var("ProgramData", r"D:\Data");
        let under_data = (helper_log_dir(), helper_state_dir(), helper_policy_path());
        std::env::remove_var("ProgramData");
        let bare = helper_log_dir();
        std::env::set_var("ProgramData", "");
        let empty = helper_state_dir();
        if let Some(saved) = saved {
            std::env::set_var("ProgramData", saved);
        }
        assert_eq!(
            under_data,
            (
                PathBuf::from(r"D:\Data\Warren\logs"),
                PathBuf::from(r"D:\Data\Warren\state"),
                PathBuf::from(r"D:\Data\Warren\policy.toml"),
            )
        );
        assert_eq!(bare, Path::new(r"C:\ProgramData\Warren\logs"));
        assert_eq!(empty, Path::new(r"C:\ProgramData\Warren\state"));

        assert_eq!(default_endpoint(), Path::new(r"\\.\pipe\warren-helper"));
        assert_eq!(default_endpoint(), Path::new(crate::DEFAULT_PIPE));
        assert!(HelperUnavailable::NotRunning
            .hint()
            .contains("sc start warrend"));
        assert!(stop_hint().contains("sc stop warrend"));
        // The pipe's access list decides, not a group: no group to name,
        // and no unix advice.
        assert_eq!(endpoint_group(&default_endpoint()), None);
        assert!(!join_group_hint("warren").contains("usermod"));

        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, b"").unwrap();
        assert_eq!(admin_only_file(&policy), Ok(()));
        let missing = dir.path().join("missing.toml");
        let err = admin_only_file(&missing).unwrap_err();
        assert!(err.contains("missing.toml"), "{err}");
    }
}
