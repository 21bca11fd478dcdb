//! Who is on the other end of an IPC connection, and may they control the helper.
//!
//! The rule is the design's "narrow door": root, or a member of the helper's
//! group (`warren` by default). The decision itself is the pure
//! [`is_authorized`]; the OS lookups that feed it live next to it.

/// Credentials of a connected peer.
///
/// Unix: from `SO_PEERCRED` (Linux) / `getpeereid` (macOS), taken by the
/// kernel at connect time, so a client cannot lie about them.
///
/// Windows: there is no uid/gid; both are [`PeerCredentials::UNKNOWN_ID`] and
/// only `pid` (from `GetNamedPipeClientProcessId`) is filled. Access on Windows
/// is decided by the pipe's DACL when the client opens it (see
/// [`crate::sddl`]), before the helper ever sees the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCredentials {
    /// Placeholder uid/gid where the OS has none (Windows).
    pub const UNKNOWN_ID: u32 = u32::MAX;
}

/// Whether a peer may control the helper: root (uid 0), or a member of the
/// group `group_gid` by primary gid or by one of its `supplementary` groups.
pub fn is_authorized(peer: &PeerCredentials, group_gid: u32, supplementary: &[u32]) -> bool {
    peer.uid == 0 || peer.gid == group_gid || supplementary.contains(&group_gid)
}

/// Parses the `Groups:` line of a `/proc/<pid>/status` file, but only if its
/// `Uid:` line shows `uid` as the effective uid (the pid may have been reused
/// by another process since the peer connected).
pub fn groups_from_proc_status(status: &str, uid: u32) -> Option<Vec<u32>> {
    let mut uid_ok = false;
    let mut groups = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            // Real, effective, saved, filesystem.
            let effective = rest.split_whitespace().nth(1)?.parse::<u32>().ok()?;
            uid_ok = effective == uid;
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            let parsed: Result<Vec<u32>, _> = rest.split_whitespace().map(str::parse).collect();
            groups = Some(parsed.ok()?);
        }
    }
    if uid_ok {
        groups
    } else {
        None
    }
}

#[cfg(unix)]
pub(crate) mod unix {
    use super::PeerCredentials;
    use nix::unistd::{Gid, Group, Uid, User};

    /// The gid of group `name`, or `None` if no such group exists.
    pub(crate) fn group_gid(name: &str) -> std::io::Result<Option<u32>> {
        Group::from_name(name)
            .map(|g| g.map(|g| g.gid.as_raw()))
            .map_err(std::io::Error::from)
    }

    /// The peer's supplementary groups, best effort (empty if unknown).
    pub(crate) fn supplementary_groups(peer: &PeerCredentials, group_gid: u32) -> Vec<u32> {
        #[cfg(target_os = "linux")]
        if let Some(pid) = peer.pid {
            // The live process's groups are what the kernel enforces for it,
            // so they are better than the user database (a fresh `usermod
            // -aG` only counts after logging in again, for both).
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(groups) = super::groups_from_proc_status(&status, peer.uid) {
                    return groups;
                }
            }
        }
        from_user_database(peer, group_gid)
    }

    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    fn from_user_database(peer: &PeerCredentials, _group_gid: u32) -> Vec<u32> {
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) else {
            return Vec::new();
        };
        let Ok(name) = std::ffi::CString::new(user.name) else {
            return Vec::new();
        };
        nix::unistd::getgrouplist(&name, Gid::from_raw(peer.gid))
            .map(|gs| gs.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_default()
    }

    /// macOS: nix has no `getgrouplist` there; the group's member list from
    /// Directory Services answers the only question we ask.
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    fn from_user_database(peer: &PeerCredentials, group_gid: u32) -> Vec<u32> {
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(peer.uid)) else {
            return Vec::new();
        };
        match Group::from_gid(Gid::from_raw(group_gid)) {
            Ok(Some(g)) if g.mem.contains(&user.name) => vec![group_gid],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCredentials {
        PeerCredentials {
            uid,
            gid,
            pid: Some(42),
        }
    }

    #[test]
    fn authorization_table() {
        let warren = 990;
        let cases: &[(PeerCredentials, &[u32], bool)] = &[
            (peer(0, 0), &[], true),          // root
            (peer(0, 5), &[7], true),         // root, whatever its groups
            (peer(1000, 990), &[], true),     // primary group
            (peer(1000, 1000), &[990], true), // supplementary group
            (peer(1000, 1000), &[4, 27, 990, 1000], true),
            (peer(1000, 1000), &[], false), // plain user
            (peer(1000, 1000), &[4, 27], false),
            (peer(990, 1000), &[], false), // uid equal to the gid means nothing
            (
                peer(PeerCredentials::UNKNOWN_ID, PeerCredentials::UNKNOWN_ID),
                &[],
                false,
            ),
        ];
        for (p, sup, want) in cases {
            assert_eq!(is_authorized(p, warren, sup), *want, "{p:?} {sup:?}");
        }
    }

    const STATUS: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t256\nGroups:\t4 27 990 1000 \nNStgid:\t1\n";

    #[test]
    fn proc_status_groups() {
        assert_eq!(
            groups_from_proc_status(STATUS, 1000),
            Some(vec![4, 27, 990, 1000])
        );
        // A reused pid now belonging to someone else is not trusted.
        assert_eq!(groups_from_proc_status(STATUS, 1001), None);
        let empty = STATUS.replace("Groups:\t4 27 990 1000 ", "Groups:\t");
        assert_eq!(groups_from_proc_status(&empty, 1000), Some(vec![]));
        let garbled = STATUS.replace("990", "x");
        assert_eq!(groups_from_proc_status(&garbled, 1000), None);
        assert_eq!(groups_from_proc_status("", 0), None);
    }
}
