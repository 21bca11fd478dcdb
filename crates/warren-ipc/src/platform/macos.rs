//! macOS: a LaunchDaemon (`system/dev.warren.warrend`, the label in
//! installer/macos/dev.warren.warrend.plist) with Apple's directories. `/run`
//! does not exist on macOS (the system volume is read-only), so the socket
//! lives under `/var/run`.

use std::path::PathBuf;

pub use super::unix::{admin_only_file, endpoint_group, Shutdown};

pub const START_HINT: &str =
    "Start it with `sudo launchctl kickstart -k system/dev.warren.warrend` (or reinstall Warren).";
pub const STOP_HINT: &str = "stop it first with `sudo launchctl bootout system/dev.warren.warrend`";

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The hints name the label the installer's LaunchDaemon plist has
    /// (tests/tests/macos_pkg.rs checks the plist against this file).
    #[test]
    fn hints_name_the_launchd_label() {
        assert!(START_HINT.contains("launchctl kickstart -k system/dev.warren.warrend"));
        assert!(STOP_HINT.contains("launchctl bootout system/dev.warren.warrend"));
        assert!(join_group_hint("warren").contains("dseditgroup -o edit -a $USER -t user warren"));
        assert_eq!(
            default_endpoint(),
            PathBuf::from("/var/run/warren/helper.sock")
        );
    }
}
