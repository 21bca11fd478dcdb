//! The crash-safe journal of OS changes (DESIGN principle 6). Each change is
//! written to disk (temp file, fsync, rename, fsync of the directory) BEFORE
//! it is made and forgotten only AFTER it is undone, so a helper that dies at
//! any point leaves a file naming everything it may have changed, and the
//! next start can put the machine back.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// One change to the OS, as recorded in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A TUN device. `persistent` devices outlive the helper and must be deleted.
    Tun {
        /// Interface name.
        name: String,
        /// Whether the device survives the helper's file descriptor.
        #[serde(default)]
        persistent: bool,
    },
    /// An address on an interface.
    Address {
        /// Interface name.
        ifname: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// A route into an interface.
    Route {
        /// Interface name.
        ifname: String,
        /// Destination network.
        dest: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// systemd-resolved link settings (DNS server, `~SUFFIX`) on the TUN.
    ResolvedLink {
        /// Interface name.
        ifname: String,
    },
    /// `resolv.conf` rewritten to name the stub; the original is in `backup`.
    ResolvConf {
        /// The file rewritten (normally `/etc/resolv.conf`).
        path: PathBuf,
        /// Where its original content is kept.
        backup: PathBuf,
    },
    /// A Windows NRPT rule (registry key name).
    Nrpt {
        /// The rule's key name.
        rule: String,
    },
    /// A macOS `/etc/resolver/SUFFIX` file.
    MacResolver {
        /// The file.
        path: PathBuf,
    },
}

impl Change {
    /// Whether this is a DNS change (undone by `dns::undo`, not the backend).
    pub fn is_dns(&self) -> bool {
        matches!(
            self,
            Change::ResolvedLink { .. }
                | Change::ResolvConf { .. }
                | Change::Nrpt { .. }
                | Change::MacResolver { .. }
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Tun { name, .. } => write!(f, "TUN device {name}"),
            Change::Address {
                ifname,
                addr,
                prefix,
            } => {
                write!(f, "address {addr}/{prefix} on {ifname}")
            }
            Change::Route {
                ifname,
                dest,
                prefix,
            } => write!(f, "route {dest}/{prefix} via {ifname}"),
            Change::ResolvedLink { ifname } => {
                write!(f, "split DNS on {ifname} (systemd-resolved)")
            }
            Change::ResolvConf { path, .. } => write!(f, "DNS servers in {}", path.display()),
            Change::Nrpt { rule } => write!(f, "NRPT rule {rule}"),
            Change::MacResolver { path } => write!(f, "resolver file {}", path.display()),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JournalFile {
    version: u32,
    changes: Vec<Change>,
}

const JOURNAL_VERSION: u32 = 1;

/// The journal file and its in-memory copy.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    changes: Vec<Change>,
}

/// Where the helper keeps the journal by default on this OS.
pub fn default_journal_path() -> PathBuf {
    if cfg!(windows) {
        // ProgramData is machine-wide and writable by SYSTEM only by default.
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("Warren").join("netstate.json")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Warren/netstate.json")
    } else {
        PathBuf::from("/var/lib/warren/netstate.json")
    }
}

impl Journal {
    /// Opens the journal at `path`; a missing file is an empty journal.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let changes = match fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Vec::new(),
            Ok(bytes) => {
                let file: JournalFile =
                    serde_json::from_slice(&bytes).map_err(|e| NetError::JournalUnreadable {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != JOURNAL_VERSION {
                    return Err(NetError::JournalUnreadable {
                        path,
                        reason: format!(
                            "format version {} but this helper knows {JOURNAL_VERSION}",
                            file.version
                        ),
                    });
                }
                file.changes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(NetError::JournalUnreadable {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Ok(Journal { path, changes })
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes recorded and not yet undone, oldest first.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Durably records `change`; call BEFORE making it. On error the change
    /// must not be made.
    pub fn record(&mut self, change: Change) -> Result<()> {
        if self.changes.contains(&change) {
            return Ok(());
        }
        self.changes.push(change);
        if let Err(e) = self.persist() {
            self.changes.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Replaces a recorded change (e.g. once the OS has told us the real
    /// interface name). Both old and new stay covered: the new entry is
    /// written in the same atomic rename that drops the old one.
    pub fn replace(&mut self, old: &Change, new: Change) -> Result<()> {
        let before = self.changes.clone();
        match self.changes.iter().position(|c| c == old) {
            Some(i) => self.changes[i] = new,
            None => self.changes.push(new),
        }
        if let Err(e) = self.persist() {
            self.changes = before;
            return Err(e);
        }
        Ok(())
    }

    /// Forgets `change`; call AFTER it has been undone.
    pub fn forget(&mut self, change: &Change) -> Result<()> {
        let before = self.changes.len();
        self.changes.retain(|c| c != change);
        if self.changes.len() == before {
            return Ok(());
        }
        self.persist()
    }

    fn persist(&self) -> Result<()> {
        self.write_atomically()
            .map_err(|source| NetError::JournalWrite {
                path: self.path.clone(),
                source,
            })
    }

    fn write_atomically(&self) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        if self.changes.is_empty() {
            // An empty journal leaves no file: nothing of Warren stays behind,
            // not even a temp file from a helper that died mid-write.
            let _ = fs::remove_file(&tmp);
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            return sync_dir(&dir);
        }
        fs::create_dir_all(&dir)?;
        let body = serde_json::to_vec_pretty(&JournalFile {
            version: JOURNAL_VERSION,
            changes: self.changes.clone(),
        })
        .map_err(io::Error::other)?;
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        sync_dir(&dir)
    }
}

/// Makes a rename or unlink in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; NTFS journals the rename itself.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(n: u8) -> Change {
        Change::Route {
            ifname: "warren0".into(),
            dest: format!("100.{n}.0.0").parse().unwrap(),
            prefix: 16,
        }
    }

    #[test]
    fn records_survive_reopen_and_empty_journal_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("netstate.json");
        let mut j = Journal::open(&path).unwrap();
        assert!(j.is_empty());
        j.record(Change::Tun {
            name: "warren0".into(),
            persistent: false,
        })
        .unwrap();
        j.record(route(1)).unwrap();
        j.record(route(1)).unwrap(); // recording twice keeps one entry
        let again = Journal::open(&path).unwrap();
        assert_eq!(again.changes(), j.changes());
        assert_eq!(again.changes().len(), 2);

        j.forget(&route(1)).unwrap();
        assert_eq!(Journal::open(&path).unwrap().changes().len(), 1);
        j.forget(&Change::Tun {
            name: "warren0".into(),
            persistent: false,
        })
        .unwrap();
        assert!(!path.exists(), "an empty journal must not leave a file");
        assert!(!dir.path().join("sub").join("netstate.json.tmp").exists());
    }

    #[test]
    fn replace_swaps_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netstate.json");
        let mut j = Journal::open(&path).unwrap();
        j.record(route(1)).unwrap();
        j.record(route(2)).unwrap();
        j.replace(&route(1), route(3)).unwrap();
        assert_eq!(
            Journal::open(&path).unwrap().changes(),
            &[route(3), route(2)]
        );
    }

    #[test]
    fn corrupt_journal_is_an_actionable_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netstate.json");
        fs::write(&path, b"{not json").unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, NetError::JournalUnreadable { .. }));
        assert!(err.to_string().contains("delete the file"), "{err}");
    }

    #[test]
    fn unwritable_journal_refuses_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        let mut j = Journal::open(blocker.join("netstate.json")).unwrap();
        // A regular file where the directory should be makes the write fail
        // (permissions would not stop root).
        fs::write(&blocker, b"").unwrap();
        let err = j.record(route(1)).unwrap_err();
        assert!(matches!(err, NetError::JournalWrite { .. }), "{err}");
        assert!(
            j.is_empty(),
            "a change that could not be recorded is not kept"
        );
    }

    #[test]
    fn file_format_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netstate.json");
        let mut j = Journal::open(&path).unwrap();
        j.record(route(1)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["changes"][0]["kind"], "route");
        assert_eq!(v["changes"][0]["dest"], "100.1.0.0");
        assert_eq!(v["changes"][0]["prefix"], 16);
    }
}
