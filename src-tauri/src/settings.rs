//! The app's own settings (`desktop.json` beside the sign-in in Warren's
//! configuration directory): start on login, start minimized, log level.
//! A missing or damaged file means defaults; the damage is logged, not fatal,
//! because a person can't fix a settings file from a window that won't open.

use std::path::{Path, PathBuf};
use warren_client::{config, StoreError};
use warren_proto::app::Settings;

const FILE: &str = "desktop.json";

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

pub fn load(dir: &Path) -> Settings {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "settings file is damaged; using defaults");
            Settings::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "can't read the settings; using defaults");
            Settings::default()
        }
    }
}

pub fn save(dir: &Path, settings: &Settings) -> Result<(), StoreError> {
    config::ensure_dir(dir)?;
    // Invariant: a struct of bools and a unit enum always serializes.
    let json = serde_json::to_vec_pretty(settings).expect("Settings serialize");
    config::write_private(&path(dir), &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::app::LogLevel;

    #[test]
    fn round_trip_and_defaults_for_missing_or_damaged_files() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(load(tmp.path()), Settings::default());
        let s = Settings {
            start_on_login: true,
            start_minimized: true,
            log_level: LogLevel::Debug,
        };
        save(tmp.path(), &s).unwrap();
        assert_eq!(load(tmp.path()), s);
        std::fs::write(path(tmp.path()), b"{\"start_on_login\": tr").unwrap();
        assert_eq!(load(tmp.path()), Settings::default());
        // Fields added later default instead of failing older files.
        std::fs::write(path(tmp.path()), b"{\"start_minimized\": true}").unwrap();
        assert!(load(tmp.path()).start_minimized);
    }
}
