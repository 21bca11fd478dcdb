//! macOS: a LaunchDaemon (`system/warrend`) with Apple's directories. `/run`
//! does not exist on macOS (the system volume is read-only), so the socket
//! lives under `/var/run`.

use std::path::PathBuf;

pub use super::unix::{admin_only_file, endpoint_group, Shutdown};

pub const START_HINT: &str =
    "Start it with `sudo launchctl kickstart -k system/warrend` (or reinstall Warren).";
pub const STOP_HINT: &str = "stop it first with `sudo launchctl bootout system/warrend`";

pub fn helper_log_dir() -> PathBuf {
    PathBuf::from("/Library/Logs/Warren")
}

pub fn helper_state_dir() -> PathBuf {
    PathBuf::from("/Library/Application Support/Warren")
}

pub fn helper_policy_path() -> PathBuf {
    PathBuf::from("/Library/Application Support/Warren/policy.toml")
}

pub fn default_endpoint() -> PathBuf {
    PathBuf::from("/var/run/warren/helper.sock")
}

pub fn join_group_hint(group: &str) -> String {
    format!("Only root and members of the group `{group}` may; join it with `sudo dseditgroup -o edit -a $USER -t user {group}`, then log out and back in.")
}
