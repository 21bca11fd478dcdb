//! macOS: `/etc/resolver/SUFFIX` makes the system resolver send lookups
//! under the suffix to the stub (see `man 5 resolver`); other names are
//! untouched. The file carries our marker and is only ever removed when it
//! does. Built and unit-tested here; not run on a Mac.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::MARKER;
use crate::error::{NetError, Result};

/// The directory the macOS resolver reads per-domain files from.
pub const RESOLVER_DIR: &str = "/etc/resolver";

/// `/etc/resolver/SUFFIX`.
pub fn path_for(suffix: &str) -> PathBuf {
    Path::new(RESOLVER_DIR).join(suffix.to_ascii_lowercase())
}

/// The file's content.
pub fn render(servers: &[IpAddr]) -> String {
    let mut out = format!("{MARKER}\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out.push_str("port 53\ntimeout 2\n");
    out
}

pub(super) fn apply(path: &Path, servers: &[IpAddr]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| NetError::os(format!("creating {}", dir.display()), e))?;
    }
    if let Ok(existing) = fs::read_to_string(path) {
        if !existing.contains(MARKER) {
            return Err(NetError::InvalidPlan(format!(
                "{} exists and is not Warren's; remove it or choose another DNS suffix",
                path.display()
            )));
        }
    }
    fs::write(path, render(servers))
        .map_err(|e| NetError::os(format!("writing {}", path.display()), e))?;
    tracing::info!(file = %path.display(), "the macOS resolver sends the suffix's lookups to the Warren DNS stub");
    Ok(())
}

pub(super) fn undo(path: &Path) -> Result<()> {
    match fs::read_to_string(path) {
        Ok(content) if content.contains(MARKER) => fs::remove_file(path)
            .map_err(|e| NetError::os(format!("removing {}", path.display()), e)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::os(format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_the_stub() {
        assert_eq!(path_for("Warren"), PathBuf::from("/etc/resolver/warren"));
        let servers: Vec<IpAddr> = vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        assert_eq!(
            render(&servers),
            format!("{MARKER}\nnameserver 100.64.0.7\nnameserver fd00::7\nport 53\ntimeout 2\n")
        );
    }

    #[test]
    fn only_our_file_is_written_over_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolver").join("warren");
        let servers: Vec<IpAddr> = vec!["100.64.0.7".parse().unwrap()];
        apply(&path, &servers).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains(MARKER));
        apply(&path, &servers).unwrap();
        undo(&path).unwrap();
        assert!(!path.exists());
        undo(&path).unwrap();
        fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        assert!(apply(&path, &servers).is_err());
        undo(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 192.0.2.1\n");
    }
}
