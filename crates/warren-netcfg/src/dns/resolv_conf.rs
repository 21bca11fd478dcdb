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
//! configuration, not a stale one. [`Watch`] notices such rewrites (inotify
//! on Linux, the one OS with this mode), reasserts, and tells the stub's
//! driver the new upstreams.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

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

/// The upstreams of the stub in this mode: the backup's nameservers (the
/// configuration before Warren, or the latest another program wrote),
/// never one of `own` (the stub itself: forwarding there would loop).
pub fn upstreams(backup: &Path, own: &[IpAddr]) -> Vec<SocketAddr> {
    previous_nameservers(backup)
        .into_iter()
        .filter(|a| !own.contains(&a.ip()))
        .collect()
}

/// How long after a change the file is read again: writers often write in
/// several steps.
const SETTLE: Duration = Duration::from_millis(50);

/// Keeps the file pointing at the stub while connected: when another
/// program rewrites it (in place or by replacing it), [`Watch::rewritten`]
/// puts the Warren entry back and yields the new upstreams. Where the file
/// can't be watched (another OS, no inotify) it never fires; that is logged
/// once at start. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    backup: PathBuf,
    servers: Vec<IpAddr>,
    /// One message per burst of changes; `None` when nothing watches.
    changes: Option<mpsc::Receiver<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Watch {
    /// Starts watching `path` (whose backup is `backup`, and which should
    /// name `servers`). Call inside a tokio runtime.
    pub fn start(path: PathBuf, backup: PathBuf, servers: Vec<IpAddr>) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let task = watch_file(&path, tx);
        Watch {
            path,
            backup,
            servers,
            changes: task.is_some().then_some(rx),
            task,
        }
    }

    /// The nameservers the stub should forward to now ([`upstreams`]).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        upstreams(&self.backup, &self.servers)
    }

    /// Waits until another program has rewritten the file, puts the Warren
    /// entry back (their version becomes the backup) and returns the
    /// upstreams that follow from it. Our own writes and changes that left
    /// the file ours are passed over. Cancel-safe.
    pub async fn rewritten(&mut self) -> Vec<SocketAddr> {
        loop {
            let changed = match self.changes.as_mut() {
                Some(rx) => rx.recv().await.is_some(),
                None => false,
            };
            if !changed {
                // Nothing watches (or the watch ended): never fires.
                self.changes = None;
                return std::future::pending().await;
            }
            match reassert(&self.path, &self.backup, &self.servers) {
                Ok(true) => return self.upstreams(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "couldn't put the Warren entry back into resolv.conf; it is retried at the next change, or reconnect")
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Watches the file, and its directory for replacements by rename, and
/// sends one message per settled burst of changes.
#[cfg(target_os = "linux")]
fn watch_file(path: &Path, changes: mpsc::Sender<()>) -> Option<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    use inotify::{Inotify, WatchMask};
    let cannot = |e: &io::Error| {
        tracing::warn!(file = %path.display(), error = %e, "can't watch resolv.conf; a program that rewrites it wins until you reconnect");
    };
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            cannot(&e);
            return None;
        }
    };
    let file_mask = WatchMask::CLOSE_WRITE | WatchMask::MODIFY | WatchMask::ATTRIB;
    if let Err(e) = inotify.watches().add(path, file_mask) {
        cannot(&e);
    }
    if let Some(dir) = path.parent() {
        let _ = inotify.watches().add(
            dir,
            WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE,
        );
    }
    let name = path.file_name().map(|n| n.to_os_string());
    let mut stream = match inotify.into_event_stream(vec![0u8; 4096]) {
        Ok(s) => s,
        Err(e) => {
            cannot(&e);
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { break };
            // Directory events name a file; only ours matters.
            if event.name.is_some() && event.name.as_deref() != name.as_deref() {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            // Full: a change is already waiting, and it reads the file anew.
            if let Err(mpsc::error::TrySendError::Closed(())) = changes.try_send(()) {
                break;
            }
        }
    }))
}

/// Only Linux has the resolv.conf mode; nothing to watch elsewhere.
#[cfg(not(target_os = "linux"))]
fn watch_file(_path: &Path, _changes: mpsc::Sender<()>) -> Option<tokio::task::JoinHandle<()>> {
    let _ = SETTLE;
    None
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
        let (_dir, path, backup) = connected();
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
        let (_dir, path, backup) = connected();
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

    #[test]
    fn the_stub_never_forwards_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup");
        fs::write(
            &backup,
            "nameserver 100.64.0.7\nnameserver 10.0.0.53\nnameserver fd00::7\n",
        )
        .unwrap();
        let own: Vec<IpAddr> = vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        assert_eq!(
            upstreams(&backup, &own),
            vec!["10.0.0.53:53".parse::<SocketAddr>().unwrap()]
        );
    }

    /// A resolv.conf holding [`ORIGINAL`] that was pointed at the stub:
    /// the directory (kept alive by the caller), the file and its backup.
    fn connected() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let backup = dir.path().join("backup");
        fs::write(&path, ORIGINAL).unwrap();
        apply(&path, &backup, &servers()).unwrap();
        (dir, path, backup)
    }

    /// Waits (bounded) for the watch to report a rewrite.
    #[cfg(target_os = "linux")]
    async fn next_rewrite(watch: &mut Watch) -> Vec<SocketAddr> {
        tokio::time::timeout(Duration::from_secs(5), watch.rewritten())
            .await
            .expect("the rewrite was not noticed within 5 s")
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_watch_reasserts_rewrites_in_place_and_by_rename() {
        let (dir, path, backup) = connected();
        let mut watch = Watch::start(path.clone(), backup.clone(), servers());
        assert_eq!(
            watch.upstreams(),
            vec![
                "10.0.0.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        // A DHCP client rewriting the file in place.
        fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        assert_eq!(
            next_rewrite(&mut watch).await,
            vec!["192.0.2.1:53".parse().unwrap()]
        );
        assert!(is_ours(&fs::read_to_string(&path).unwrap()));
        // NetworkManager replacing it by rename.
        let tmp = dir.path().join("resolv.conf.nm");
        fs::write(&tmp, "nameserver 192.0.2.2\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert_eq!(
            next_rewrite(&mut watch).await,
            vec!["192.0.2.2:53".parse().unwrap()]
        );
        assert!(is_ours(&fs::read_to_string(&path).unwrap()));
        // Disconnecting restores the latest version another program wrote.
        drop(watch);
        undo(&path, &backup).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.2\n");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn our_own_writes_do_not_count_as_rewrites() {
        let (_dir, path, backup) = connected();
        let mut watch = Watch::start(path.clone(), backup.clone(), servers());
        // Rewriting our own content (a journalled re-apply) changes the
        // file but leaves it ours: no rewrite is reported.
        apply(&path, &backup, &servers()).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(500), watch.rewritten()).await;
        assert!(quiet.is_err(), "our own write was reported as a rewrite");
    }
}
