//! The `/etc/resolv.conf` mode, for Linux without systemd-resolved: the file
//! names the helper's stub as the only nameserver, and the stub forwards
//! every outside query to the nameservers the file named before.
//!
//! The original is copied to a backup (atomically, next to the journal)
//! before the file is touched, and written back on disconnect, so the file
//! ends byte-identical to what it was. The file itself is always rewritten
//! in place (truncate + write), never replaced by a rename: it is often a
//! bind mount (containers, `ip netns exec`), where a rename fails, and other
//! programs may hold it open.
//!
//! If another program rewrites the file while we are connected (a DHCP
//! client, NetworkManager), [`reassert`] takes their version as the new
//! backup and puts our entry back, so disconnecting restores their latest
//! configuration, not a stale one.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::MARKER;
use crate::error::{NetError, Result};

/// The file's content while connected: the marker, the stub, and the
/// original's `search`, `domain` and `options` lines (so short names and
/// resolver options behave as before).
pub fn render(original: &str, servers: &[IpAddr]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(MARKER);
    out.push('\n');
    let mut ordered: Vec<&IpAddr> = servers.iter().filter(|a| a.is_ipv4()).collect();
    ordered.extend(servers.iter().filter(|a| a.is_ipv6()));
    for server in ordered {
        out.push_str(&format!("nameserver {server}\n"));
    }
    for line in original.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        if matches!(word, "search" | "domain" | "options") {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Whether `content` is the file as Warren wrote it.
pub fn is_ours(content: &str) -> bool {
    content.lines().any(|l| l.trim_end() == MARKER)
}

/// The nameservers a resolv.conf names, on port 53 (the stub forwards to
/// them). Link-local IPv6 servers with a zone (`fe80::1%eth0`) are kept
/// without it only if they are not link-local, since a zone-less link-local
/// address can't be reached.
pub fn nameservers(content: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in content.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        if let IpAddr::V6(v6) = ip {
            if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                continue;
            }
        }
        out.push(SocketAddr::new(ip, 53));
    }
    out
}

/// Rewrites `path` in place with `content`, flushed to disk.
fn write_in_place(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(true)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

/// Writes `content` to `path` atomically (temp file, fsync, rename).
fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetError::os(format!("reading {}", path.display()), e)),
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError::os(what, source)
}

/// Backs up `path` (unless it is already ours and backed up) and points it
/// at `servers`.
pub fn apply(path: &Path, backup: &Path, servers: &[IpAddr]) -> Result<()> {
    let current = read(path)?.unwrap_or_default();
    let text = String::from_utf8_lossy(&current).into_owned();
    let original = if is_ours(&text) {
        // Our own file from a run that is still journalled: the backup holds
        // the real original.
        match read(backup)? {
            Some(b) => String::from_utf8_lossy(&b).into_owned(),
            None => String::new(),
        }
    } else {
        write_atomic(backup, &current).map_err(io_err(format!(
            "backing up {} to {}",
            path.display(),
            backup.display()
        )))?;
        text
    };
    write_in_place(path, render(&original, servers).as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))?;
    tracing::info!(file = %path.display(), ?servers, "pointed the system resolver at the Warren DNS stub");
    Ok(())
}

/// Puts the original back if the file is still ours, then drops the backup.
/// A file someone else rewrote since is theirs, and stays.
pub fn undo(path: &Path, backup: &Path) -> Result<()> {
    let Some(saved) = read(backup)? else {
        // The backup is written before the file is touched: no backup, no
        // change.
        return Ok(());
    };
    let current = read(path)?.unwrap_or_default();
    if is_ours(&String::from_utf8_lossy(&current)) {
        write_in_place(path, &saved).map_err(io_err(format!("restoring {}", path.display())))?;
        tracing::info!(file = %path.display(), "restored the system resolver configuration");
    } else {
        tracing::info!(file = %path.display(), "resolv.conf was rewritten by another program; leaving its version");
    }
    match fs::remove_file(backup) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::os(format!("removing {}", backup.display()), e)),
    }
}

/// Called when the file changed while connected: if another program
/// replaced our content, its version becomes the backup and ours goes back.
/// Returns whether anything was rewritten.
pub fn reassert(path: &Path, backup: &Path, servers: &[IpAddr]) -> Result<bool> {
    let current = read(path)?.unwrap_or_default();
    if is_ours(&String::from_utf8_lossy(&current)) {
        return Ok(false);
    }
    tracing::info!(file = %path.display(), "another program rewrote resolv.conf; keeping its version for later and putting the Warren entry back");
    apply(path, backup, servers)?;
    Ok(true)
}

/// The nameservers the stub should forward to: those of the backup (the
/// configuration before Warren).
pub fn previous_nameservers(backup: &Path) -> Vec<SocketAddr> {
    match fs::read(backup) {
        Ok(bytes) => nameservers(&String::from_utf8_lossy(&bytes)),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = "# from DHCP\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\nsearch corp.example\noptions ndots:2 edns0\n";

    fn servers() -> Vec<IpAddr> {
        vec!["fd00::7".parse().unwrap(), "100.64.0.7".parse().unwrap()]
    }

    #[test]
    fn ours_names_the_stub_and_keeps_search_and_options() {
        let ours = render(ORIGINAL, &servers());
        assert_eq!(
            ours,
            format!("{MARKER}\nnameserver 100.64.0.7\nnameserver fd00::7\nsearch corp.example\noptions ndots:2 edns0\n")
        );
        assert!(is_ours(&ours));
        assert!(!is_ours(ORIGINAL));
        assert_eq!(
            nameservers(ORIGINAL),
            vec![
                "10.0.0.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert!(nameservers("nameserver\nnameserver bogus\n").is_empty());
    }

    #[test]
    fn apply_then_undo_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backup = dir.path().join("state").join("backup");
        fs::create_dir_all(backup.parent().unwrap()).unwrap();
        // No trailing newline and odd spacing must survive too.
        let original = "nameserver 10.0.0.53\n  # comment\nsearch a b";
        fs::write(&path, original).unwrap();
        apply(&path, &backup, &servers()).unwrap();
        let during = fs::read_to_string(&path).unwrap();
        assert!(is_ours(&during));
        assert!(during.contains("nameserver 100.64.0.7"));
        assert_eq!(
            previous_nameservers(&backup),
            vec!["10.0.0.53:53".parse().unwrap()]
        );
        // Applying again (a journalled run) keeps the real original.
        apply(&path, &backup, &servers()).unwrap();
        undo(&path, &backup).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), original);
        assert!(!backup.exists());
        // Undo twice is fine.
        undo(&path, &backup).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), original);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_keeps_its_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backup = dir.path().join("backup");
        fs::write(&path, ORIGINAL).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        apply(&path, &backup, &servers()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        undo(&path, &backup).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    }

    #[test]
    fn a_rewrite_by_someone_else_is_reasserted_and_theirs_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backup = dir.path().join("backup");
        fs::write(&path, ORIGINAL).unwrap();
        apply(&path, &backup, &servers()).unwrap();
        assert!(!reassert(&path, &backup, &servers()).unwrap(), "still ours");
        let dhcp = "nameserver 192.0.2.1\n";
        fs::write(&path, dhcp).unwrap();
        assert!(reassert(&path, &backup, &servers()).unwrap());
        assert!(is_ours(&fs::read_to_string(&path).unwrap()));
        assert_eq!(
            previous_nameservers(&backup),
            vec!["192.0.2.1:53".parse().unwrap()]
        );
        undo(&path, &backup).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), dhcp);
    }

    #[test]
    fn undo_leaves_a_file_someone_else_wrote_after_us() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backup = dir.path().join("backup");
        fs::write(&path, ORIGINAL).unwrap();
        apply(&path, &backup, &servers()).unwrap();
        fs::write(&path, "nameserver 192.0.2.9\n").unwrap();
        undo(&path, &backup).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.9\n");
        assert!(!backup.exists());
    }

    #[test]
    fn a_missing_file_comes_back_missing_in_spirit() {
        // No resolv.conf at all: the backup is empty and so is the restore.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backup = dir.path().join("backup");
        apply(&path, &backup, &servers()).unwrap();
        assert!(is_ours(&fs::read_to_string(&path).unwrap()));
        undo(&path, &backup).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
    }
}
