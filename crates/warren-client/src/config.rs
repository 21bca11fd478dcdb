//! Where the CLI and the desktop app keep the sign-in (`config.json`) and,
//! when the OS keyring is unavailable, the fallback token file. Both read the
//! same directory, so signing in with one signs in the other.
//!
//! The directory is `$WARREN_CONFIG_DIR` if set, else `<config dir>/warren/`;
//! it is created `0700` and both files are written `0600`, because the
//! fallback file holds a bearer token.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a sign-in remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Normalized coordinator URL, e.g. `https://warren.example.com`.
    pub url: String,
    /// Extra trusted CA certificate (PEM text), for a self-hosted coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The user the token belongs to, as the coordinator said at sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The deployment's ranges and suffix as accepted at sign-in: the
    /// helper refuses a coordinator that later announces others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<warren_proto::model::DeploymentInfo>,
}

const CONFIG_FILE: &str = "config.json";

/// The CLI's configuration directory.
pub fn config_dir() -> Result<PathBuf, StoreError> {
    if let Some(dir) = std::env::var_os("WARREN_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let base = dirs::config_dir().ok_or(StoreError::NoConfigDir)?;
    Ok(base.join("warren"))
}

/// Creates the directory (mode 0700 on unix) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    let res = {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    };
    #[cfg(not(unix))]
    let res = std::fs::create_dir_all(dir);
    res.map_err(|e| {
        StoreError::io(
            format!("can't create the configuration directory {}", dir.display()),
            e,
        )
    })
}

/// Writes `contents` to `path` readable only by the owner, replacing it
/// atomically so a crash never leaves half a file.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(&tmp)
        .map_err(|e| StoreError::io(format!("can't write {}", tmp.display()), e))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|e| StoreError::io(format!("can't write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| StoreError::io(format!("can't write {}", path.display()), e))
}

/// The saved configuration, or `None` when not signed in.
pub fn load(dir: &Path) -> Result<Option<Config>, StoreError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| StoreError::Damaged(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("can't read {}", path.display()), e)),
    }
}

pub fn save(dir: &Path, config: &Config) -> Result<(), StoreError> {
    ensure_dir(dir)?;
    // Invariant: a struct of strings always serializes.
    let json = serde_json::to_vec_pretty(config).expect("Config serializes");
    write_private(&dir.join(CONFIG_FILE), &json)
}

/// Deletes the configuration; a missing file is fine.
pub fn remove(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(
            format!("can't delete {}", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("warren");
        assert_eq!(load(&dir).unwrap(), None);
        let cfg = Config {
            url: "https://c.example".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
            user: Some("alice".into()),
            deployment: Some(warren_proto::model::DeploymentInfo {
                suffix: "warren".into(),
                ipv4_prefix: "100.64.0.0/10".into(),
                ipv6_prefix: "fd12::/48".into(),
            }),
        };
        save(&dir, &cfg).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(cfg));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(CONFIG_FILE)), 0o600);
        }
        remove(&dir).unwrap();
        remove(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), None);
    }

    #[test]
    fn damaged_config_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(CONFIG_FILE), b"{nope").unwrap();
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("sign in again"), "{err}");
    }
}
