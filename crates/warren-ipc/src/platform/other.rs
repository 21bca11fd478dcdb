//! Other unix systems (the BSDs): no service definition ships for them, so
//! the hints name the binary itself; directories follow the FHS.

use std::path::PathBuf;

pub use super::unix::{endpoint_group, Shutdown};

pub const START_HINT: &str = "Start it with `sudo warrend`.";
pub const STOP_HINT: &str = "stop the other `warrend` process first";

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
    format!("Only root and members of the group `{group}` may; ask an administrator to add you to it, then log out and back in.")
}
