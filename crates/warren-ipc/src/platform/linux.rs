//! Linux: a systemd service (`warrend.service`) with the FHS directories.

pub use super::unix::fhs::{
    default_endpoint, helper_log_dir, helper_policy_path, helper_state_dir,
};
pub use super::unix::{admin_only_file, endpoint_group, Shutdown};

pub const START_HINT: &str = "Start it with `sudo systemctl start warrend`.";
pub const STOP_HINT: &str = "stop it first with `sudo systemctl stop warrend`";

pub fn join_group_hint(group: &str) -> String {
    format!("Only root and members of the group `{group}` may; join it with `sudo usermod -aG {group} $USER`, then log out and back in.")
}
