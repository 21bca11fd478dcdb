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
//! inherited entry can widen it, and read/write is [`PIPE_READ_WRITE`],
//! not SDDL's `GRGW`: generic write on a pipe includes `FILE_APPEND_DATA`,
//! which on a pipe is `FILE_CREATE_PIPE_INSTANCE`, and a user holding it
//! could add an instance of the helper's pipe (owned by SYSTEM like the
//! rest) and answer other users' clients in its place.

/// SDDL SID alias of LocalSystem.
pub const SYSTEM: &str = "SY";
/// SDDL SID alias of BUILTIN\Administrators.
pub const ADMINISTRATORS: &str = "BA";
/// SDDL SID alias of the Interactive logon group.
pub const INTERACTIVE: &str = "IU";

/// What a client may do with the pipe, and exactly what it asks for when
/// it opens it: `FILE_GENERIC_READ | FILE_GENERIC_WRITE` (winnt.h) without
/// `FILE_APPEND_DATA` (0x4), which on a pipe is `FILE_CREATE_PIPE_INSTANCE`.
pub const PIPE_READ_WRITE: u32 = (0x0012_0089 | 0x0012_0116) & !0x4;

/// Builds `O:<owner>D:P` followed by one allow entry per SID: generic-all for
/// `full_access`, [`PIPE_READ_WRITE`] for `read_write`.
pub fn pipe_sddl(owner: &str, full_access: &[&str], read_write: &[&str]) -> String {
    let mut s = format!("O:{owner}D:P");
    for sid in full_access {
        s.push_str(&format!("(A;;GA;;;{sid})"));
    }
    for sid in read_write {
        s.push_str(&format!("(A;;{PIPE_READ_WRITE:#x};;;{sid})"));
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
            "O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12019b;;;IU)"
        );
    }

    #[test]
    fn builder_orders_entries() {
        assert_eq!(pipe_sddl("BA", &[], &[]), "O:BAD:P");
        assert_eq!(
            pipe_sddl("SY", &["SY"], &["AU", "IU"]),
            "O:SYD:P(A;;GA;;;SY)(A;;0x12019b;;;AU)(A;;0x12019b;;;IU)"
        );
        // No entry ever grants everyone or anonymous logons.
        let d = helper_pipe_sddl();
        assert!(!d.contains(";WD)") && !d.contains(";AN)"), "{d}");
        // People may read and write but not add pipe instances
        // (FILE_CREATE_PIPE_INSTANCE = 0x4), nor change the descriptor.
        assert_eq!(PIPE_READ_WRITE & 0x4, 0);
        assert_eq!(
            PIPE_READ_WRITE & (0x0004_0000 | 0x0008_0000),
            0,
            "WRITE_DAC, WRITE_OWNER"
        );
        assert_eq!(PIPE_READ_WRITE & 0x3, 0x3, "read and write data");
        assert!(!d.contains("GW") && !d.contains("GR"), "{d}");
    }

    /// Windows itself reads the string as meant: owner LocalSystem, a
    /// protected list of exactly these three entries, nobody else.
    #[cfg(windows)]
    #[test]
    fn windows_parses_the_helper_descriptor() {
        use crate::wintest::{describe, Descriptor, LocalSd, Who};
        use windows_sys::Win32::Foundation::GENERIC_ALL;
        use windows_sys::Win32::Security::Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
        };
        // ACCESS_ALLOWED_ACE_TYPE.
        const ALLOWED: u8 = 0;

        fn parse(sddl: &str) -> Option<LocalSd> {
            let wide: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
            let mut sd = LocalSd(std::ptr::null_mut());
            // SAFETY: NUL-terminated input; `sd` frees what is returned.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    wide.as_ptr(),
                    SDDL_REVISION_1,
                    &mut sd.0,
                    std::ptr::null_mut(),
                )
            };
            (ok != 0).then_some(sd)
        }

        let sd = parse(&helper_pipe_sddl()).expect("Windows parses the helper's SDDL");
        // SAFETY: a descriptor Windows just built.
        let got = unsafe { describe(sd.0) };
        assert_eq!(
            got,
            Descriptor {
                owner: Some(Who::System),
                protected: true,
                dacl: Some(vec![
                    (ALLOWED, Who::System, GENERIC_ALL),
                    (ALLOWED, Who::Administrators, GENERIC_ALL),
                    (ALLOWED, Who::Interactive, PIPE_READ_WRITE),
                ]),
            }
        );
        // A principal Windows does not know is an error, not a dropped entry.
        assert!(parse(&pipe_sddl("SY", &["XX"], &[])).is_none());
    }
}
