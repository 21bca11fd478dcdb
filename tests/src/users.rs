//! Throwaway Unix users and groups for the access tests, removed on drop
//! even when the test fails.

use std::process::Command;
use std::time::Duration;

/// Runs an account-management command, retrying while another process holds
/// the passwd/group lock (tests run in parallel).
fn run_admin(program: &str, args: &[&str]) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("run {program}: {e} (is the passwd package installed?)"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{program} {args:?} failed: {last}"))
}

fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id")
        .arg(flag)
        .arg(name)
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no id {flag} for {name}"))
}

fn gid_of_group(name: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", name])
        .output()
        .expect("run getent");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("group {name} has no gid: {line:?}"))
}

pub struct ThrowawayGroup {
    pub name: String,
    pub gid: u32,
}

impl ThrowawayGroup {
    pub fn create(prefix: &str) -> Self {
        let name = crate::unique(prefix);
        run_admin("groupadd", &[&name]).expect("create throwaway group");
        let gid = gid_of_group(&name);
        ThrowawayGroup { name, gid }
    }
}

impl Drop for ThrowawayGroup {
    fn drop(&mut self) {
        if let Err(e) = run_admin("groupdel", &[&self.name]) {
            eprintln!("could not remove group {}: {e}", self.name);
        }
    }
}

pub struct ThrowawayUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl ThrowawayUser {
    /// A user with no home and no login shell, in no extra group.
    pub fn create(prefix: &str) -> Self {
        let name = crate::unique(prefix);
        run_admin(
            "useradd",
            &[
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                &name,
            ],
        )
        .expect("create throwaway user");
        let uid = id_of("-u", &name);
        let gid = id_of("-g", &name);
        ThrowawayUser { name, uid, gid }
    }

    pub fn add_to_group(&self, group: &ThrowawayGroup) {
        run_admin("usermod", &["-a", "-G", &group.name, &self.name]).expect("add user to group");
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        // userdel also removes the user's own group (--user-group above).
        if let Err(e) = run_admin("userdel", &[&self.name]) {
            eprintln!("could not remove user {}: {e}", self.name);
        }
    }
}
