//! Other unix systems (the BSDs): no service definition ships for them, so
//! the hints name the binary itself; directories follow the FHS.

pub use super::unix::fhs::{
    default_endpoint, helper_log_dir, helper_policy_path, helper_state_dir,
};
pub use super::unix::{admin_only_file, endpoint_group, Shutdown};

pub const START_HINT: &str = "Start it with `sudo warrend`.";
pub const STOP_HINT: &str = "stop the other `warrend` process first";

pub fn join_group_hint(group: &str) -> String {
    format!("Only root and members of the group `{group}` may; ask an administrator to add you to it, then log out and back in.")
}
