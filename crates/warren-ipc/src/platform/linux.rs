//! Linux: a systemd service (`warrend.service`) with the FHS directories.

use std::path::PathBuf;

pub use super::unix::{endpoint_group, Shutdown};

pub const START_HINT: &str = "Start it with `sudo systemctl start warrend`.";
pub const STOP_HINT: &str = "stop it first with `sudo systemctl stop warrend`";

pub fn helper_log_dir() -> PathBuf {
    PathBuf::from("/var/log/warren")
}

pub fn helper_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/warren")
}

pub fn default_endpoint() -> PathBuf {
    PathBuf::from(crate::DEFAULT_SOCKET)
}

pub fn join_group_hint(group: &str) -> String {
    format!("Only root and members of the group `{group}` may; join it with `sudo usermod -aG {group} $USER`, then log out and back in.")
}
