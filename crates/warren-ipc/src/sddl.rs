//! The security descriptor of the helper's Windows named pipe, as SDDL.
//!
//! Kept free of `cfg(windows)` so the exact string is unit-tested on every OS.
//!
//! Choice of principals: the pipe is owned by LocalSystem (the helper runs as
//! the SYSTEM service, and clients refuse a pipe with any other owner). SYSTEM
//! and Administrators get full access. *Interactive* users (`IU`: people
//! logged on at the console or over Remote Desktop) get read/write, which is
//! what the GUI and CLI need; that is the Windows counterpart of the unix
//! group `warren`. We deliberately do not grant *Authenticated Users* (`AU`),
//! which would also admit service accounts and batch/network logons that
//! have no business driving the tunnel. The DACL is protected (`P`) so no
//! inherited entry can widen it, and read/write does not include
//! `FILE_CREATE_PIPE_INSTANCE`, so a user cannot squat a second instance.

/// SDDL SID alias of LocalSystem.
pub const SYSTEM: &str = "SY";
/// SDDL SID alias of BUILTIN\Administrators.
pub const ADMINISTRATORS: &str = "BA";
/// SDDL SID alias of the Interactive logon group.
pub const INTERACTIVE: &str = "IU";

/// Builds `O:<owner>D:P` followed by one allow entry per SID: generic-all for
/// `full_access`, generic-read|generic-write for `read_write`.
pub fn pipe_sddl(owner: &str, full_access: &[&str], read_write: &[&str]) -> String {
    let mut s = format!("O:{owner}D:P");
    for sid in full_access {
        s.push_str(&format!("(A;;GA;;;{sid})"));
    }
    for sid in read_write {
        s.push_str(&format!("(A;;GRGW;;;{sid})"));
    }
    s
}

/// The descriptor the helper's pipe is created with.
pub fn helper_pipe_sddl() -> String {
    pipe_sddl(SYSTEM, &[SYSTEM, ADMINISTRATORS], &[INTERACTIVE])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_pipe_descriptor() {
        assert_eq!(
            helper_pipe_sddl(),
            "O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)"
        );
    }

    #[test]
    fn builder_orders_entries() {
        assert_eq!(pipe_sddl("BA", &[], &[]), "O:BAD:P");
        assert_eq!(
            pipe_sddl("SY", &["SY"], &["AU", "IU"]),
            "O:SYD:P(A;;GA;;;SY)(A;;GRGW;;;AU)(A;;GRGW;;;IU)"
        );
        // No entry ever grants everyone or anonymous logons.
        let d = helper_pipe_sddl();
        assert!(!d.contains(";WD)") && !d.contains(";AN)"), "{d}");
    }
}
