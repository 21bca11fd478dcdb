//! Keeping the user's token: the OS keyring first (service `warren`, user =
//! the coordinator URL), a `0600` file in the config directory when there is
//! no keyring (a headless box without Secret Service) or when
//! `WARREN_KEYRING=file` asks for it.

use crate::{config, StoreError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren_proto::Secret;

const SERVICE: &str = "warren";
const TOKEN_FILE: &str = "token";
/// A keyring that hangs (a locked collection waiting for a prompt nobody
/// sees) must not hang the CLI.
const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the token ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Keyring,
    /// In the fallback file; `keyring_error` says why the keyring was not
    /// used (`None` when `WARREN_KEYRING=file` asked for the file).
    File {
        path: PathBuf,
        keyring_error: Option<String>,
    },
}

fn keyring_disabled() -> bool {
    std::env::var("WARREN_KEYRING").is_ok_and(|v| v.eq_ignore_ascii_case("file"))
}

/// Runs a keyring call off the async runtime, with a timeout. The error is
/// the keyring's own description (it never contains the secret).
async fn with_keyring<T, F>(url: &str, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&keyring::Entry) -> Result<T, keyring::Error> + Send + 'static,
{
    let url = url.to_string();
    let job = tokio::task::spawn_blocking(move || {
        let entry = keyring::Entry::new(SERVICE, &url).map_err(|e| e.to_string())?;
        f(&entry).map_err(|e| e.to_string())
    });
    match tokio::time::timeout(KEYRING_TIMEOUT, job).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => Err(format!("the keyring call failed: {e}")),
        Err(_) => Err("the keyring did not answer in time".into()),
    }
}

pub fn token_file(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// Writes the fallback token file (directory 0700, file 0600).
pub fn write_token_file(dir: &Path, token: &Secret) -> Result<PathBuf, StoreError> {
    config::ensure_dir(dir)?;
    let path = token_file(dir);
    config::write_private(&path, token.expose().as_bytes())?;
    Ok(path)
}

fn read_token_file(dir: &Path) -> Result<Option<Secret>, StoreError> {
    let path = token_file(dir);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(Secret::new(s.trim()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("can't read {}", path.display()), e)),
    }
}

fn remove_token_file(dir: &Path) -> Result<(), StoreError> {
    let path = token_file(dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(
            format!("can't delete {}", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}

/// Stores the token, falling back to the file; the caller tells the person
/// when that happened ([`Stored::File`] carries the keyring's error).
pub async fn store(dir: &Path, url: &str, token: &Secret) -> Result<Stored, StoreError> {
    if !keyring_disabled() {
        let value = token.expose().to_string();
        match with_keyring(url, move |e| e.set_password(&value)).await {
            Ok(()) => {
                // A token file from an earlier keyring-less login is stale now.
                remove_token_file(dir)?;
                return Ok(Stored::Keyring);
            }
            Err(why) => {
                let path = write_token_file(dir, token)?;
                tracing::warn!(%why, path = %path.display(), "keyring unavailable; token stored in the fallback file");
                return Ok(Stored::File {
                    path,
                    keyring_error: Some(why),
                });
            }
        }
    }
    Ok(Stored::File {
        path: write_token_file(dir, token)?,
        keyring_error: None,
    })
}

/// The stored token for `url`, from the keyring or the fallback file.
pub async fn load(dir: &Path, url: &str) -> Result<Option<Secret>, StoreError> {
    if !keyring_disabled() {
        match with_keyring(url, |e| match e.get_password() {
            Ok(p) => Ok(Some(p)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e),
        })
        .await
        {
            Ok(Some(p)) => return Ok(Some(Secret::new(p))),
            Ok(None) => {}
            Err(why) => tracing::debug!(%why, "keyring unavailable; trying the token file"),
        }
    }
    read_token_file(dir)
}

/// Deletes the token from the keyring and the file; missing is fine.
pub async fn delete(dir: &Path, url: &str) -> Result<(), StoreError> {
    if !keyring_disabled() {
        match with_keyring(url, |e| match e.delete_credential() {
            Err(keyring::Error::NoEntry) => Ok(()),
            other => other,
        })
        .await
        {
            Ok(()) => {}
            Err(why) => tracing::debug!(%why, "could not delete the keyring entry"),
        }
    }
    remove_token_file(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        let path = write_token_file(&dir, &Secret::new("wut_a.b")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "wut_a.b");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        // Overwriting keeps the mode and replaces the content.
        write_token_file(&dir, &Secret::new("wut_c.d")).unwrap();
        assert_eq!(read_token_file(&dir).unwrap().unwrap().expose(), "wut_c.d");
        remove_token_file(&dir).unwrap();
        assert!(read_token_file(&dir).unwrap().is_none());
    }

    #[tokio::test]
    async fn file_mode_round_trip() {
        // WARREN_KEYRING=file is how tests and headless installs opt out;
        // this test is the only one in the crate touching the variable.
        std::env::set_var("WARREN_KEYRING", "file");
        let tmp = tempfile::tempdir().unwrap();
        let url = "https://c.example";
        let stored = store(tmp.path(), url, &Secret::new("wut_x.y"))
            .await
            .unwrap();
        assert_eq!(
            stored,
            Stored::File {
                path: token_file(tmp.path()),
                keyring_error: None
            }
        );
        assert_eq!(
            load(tmp.path(), url).await.unwrap().unwrap().expose(),
            "wut_x.y"
        );
        delete(tmp.path(), url).await.unwrap();
        assert!(load(tmp.path(), url).await.unwrap().is_none());
    }
}
