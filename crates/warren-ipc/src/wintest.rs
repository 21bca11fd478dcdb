//! Helpers for the Windows unit tests (compiled only for them): whether the
//! tests run under Wine, which leaves out some of Windows' security checks,
//! whether this process is LocalSystem (as the helper service is), unique
//! pipe names, and reading a descriptor's owner and access list back.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::{
    GetAce, GetSecurityDescriptorControl, GetSecurityDescriptorDacl, GetSecurityDescriptorOwner,
    GetTokenInformation, IsWellKnownSid, TokenUser, WinBuiltinAdministratorsSid, WinInteractiveSid,
    WinLocalSystemSid, WinWorldSid, ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, PSECURITY_DESCRIPTOR,
    PSID, SE_DACL_PROTECTED, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Whether this process runs under Wine: its ntdll exports
/// `wine_get_version`, which Windows' never does.
pub(crate) fn under_wine() -> bool {
    let ntdll: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
    // SAFETY: NUL-terminated strings; ntdll is loaded in every process and
    // the module handle needs no release.
    unsafe {
        let module = GetModuleHandleW(ntdll.as_ptr());
        !module.is_null() && GetProcAddress(module, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

/// Whether this process's user is LocalSystem (the account of the helper
/// service; only it may create a pipe whose descriptor names SYSTEM as owner).
pub(crate) fn running_as_system() -> bool {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo handle of the current process needs no closing;
    // `token` is closed below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return false;
    }
    // TOKEN_USER plus its SID fits easily; u64s keep it aligned.
    let mut buf = [0u64; 64];
    let mut len = 0u32;
    // SAFETY: `buf` is writable for the size given; the SID it returns
    // points into `buf`, which outlives its use.
    let is_system = unsafe {
        let ok = GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            std::mem::size_of_val(&buf) as u32,
            &mut len,
        );
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        ok != 0 && IsWellKnownSid(user.User.Sid, WinLocalSystemSid) != 0
    };
    // SAFETY: `token` was opened above.
    unsafe { CloseHandle(token) };
    is_system
}

/// A pipe name no other test (or test run) uses.
pub(crate) fn unique_pipe(tag: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    PathBuf::from(format!(
        r"\\.\pipe\warren-test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A well-known account, as the tests name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    System,
    Administrators,
    Interactive,
    Everyone,
    Other,
}

/// # Safety
/// `sid` must point to a valid SID.
unsafe fn who(sid: PSID) -> Who {
    for (kind, who) in [
        (WinLocalSystemSid, Who::System),
        (WinBuiltinAdministratorsSid, Who::Administrators),
        (WinInteractiveSid, Who::Interactive),
        (WinWorldSid, Who::Everyone),
    ] {
        if IsWellKnownSid(sid, kind) != 0 {
            return who;
        }
    }
    Who::Other
}

/// A security descriptor as the tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    /// `None` when the descriptor names no owner.
    pub owner: Option<Who>,
    /// No inherited entry can be added to the access list.
    pub protected: bool,
    /// `None` for no access list at all (everyone allowed); otherwise
    /// (ACE type, who, access mask) per entry, in order.
    pub dacl: Option<Vec<(u8, Who, u32)>>,
}

/// Reads `sd` (a self-relative or absolute descriptor).
///
/// # Safety
/// `sd` must point to a valid security descriptor.
pub(crate) unsafe fn describe(sd: PSECURITY_DESCRIPTOR) -> Descriptor {
    let mut owner: PSID = std::ptr::null_mut();
    let mut defaulted = 0;
    assert_ne!(
        GetSecurityDescriptorOwner(sd, &mut owner, &mut defaulted),
        0
    );
    let mut control = 0u16;
    let mut revision = 0u32;
    assert_ne!(
        GetSecurityDescriptorControl(sd, &mut control, &mut revision),
        0
    );
    let mut present = 0;
    let mut acl: *mut ACL = std::ptr::null_mut();
    assert_ne!(
        GetSecurityDescriptorDacl(sd, &mut present, &mut acl, &mut defaulted),
        0
    );
    let dacl = (present != 0 && !acl.is_null()).then(|| {
        (0..u32::from((*acl).AceCount))
            .map(|i| {
                let mut ace: *mut c_void = std::ptr::null_mut();
                assert_ne!(GetAce(acl, i, &mut ace), 0);
                let header = &*(ace as *const ACE_HEADER);
                // Allowed and denied entries share this layout.
                let entry = &*(ace as *const ACCESS_ALLOWED_ACE);
                let sid = std::ptr::addr_of!(entry.SidStart) as PSID;
                (header.AceType, who(sid), entry.Mask)
            })
            .collect()
    });
    Descriptor {
        owner: (!owner.is_null()).then(|| who(owner)),
        protected: control & SE_DACL_PROTECTED != 0,
        dacl,
    }
}

/// A descriptor allocated by the system with LocalAlloc, freed on drop.
pub(crate) struct LocalSd(pub PSECURITY_DESCRIPTOR);

impl Drop for LocalSd {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the descriptor came from a LocalAlloc'ing API.
            unsafe { LocalFree(self.0) };
        }
    }
}
