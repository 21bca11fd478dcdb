//! The agent's WireGuard key: fresh at every start, or kept in a file when
//! asked to (`--key-file`), so a restarted agent keeps its identity only if
//! the operator wants that. And its token, read from `--token-file`, which
//! must be private to the agent's user like every Warren secret file.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use std::io::Write;
use std::path::Path;
use x25519_dalek::{PublicKey, StaticSecret};

/// The agent's token from `path`: the file's text without surrounding
/// whitespace. Refused when group or others can read it (the rule of
/// `warren_proto::secret::check_secret_file_mode`), with the `chmod` that
/// fixes it: whoever reads the token can register as this agent.
pub fn read_token_file(path: &Path) -> Result<warren_proto::Secret> {
    let cannot_read = || format!("can't read the token file {}", path.display());
    let meta = std::fs::metadata(path).with_context(cannot_read)?;
    if !meta.is_file() {
        bail!(
            "the token file {} is not a regular file; point --token-file at the file holding the token from `warren-coord agent add`",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        warren_proto::secret::check_secret_file_mode(
            "token file",
            path,
            meta.permissions().mode(),
        )?;
    }
    let text = std::fs::read_to_string(path).with_context(cannot_read)?;
    let token = warren_proto::Secret::new(text.trim());
    if token.is_empty() {
        bail!(
            "the token file {} is empty; put the token from `warren-coord agent add` in it",
            path.display()
        );
    }
    Ok(token)
}

pub struct AgentKey {
    secret: StaticSecret,
}

impl AgentKey {
    pub fn generate() -> Self {
        Self {
            secret: StaticSecret::random(),
        }
    }

    /// Loads the key from `path`, or creates it there (mode 0600) if the
    /// file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .with_context(|| {
                        format!(
                            "{} does not hold a base64 WireGuard private key; delete it to make a new one",
                            path.display()
                        )
                    })?;
                let Ok(bytes) = <[u8; 32]>::try_from(raw.as_slice()) else {
                    bail!(
                        "{} holds {} bytes, not a 32-byte WireGuard private key; delete it to make a new one",
                        path.display(),
                        raw.len()
                    );
                };
                Ok(Self {
                    secret: StaticSecret::from(bytes),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("can't read the key file {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .with_context(|| format!("can't create the key file {}", path.display()))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(self.secret.to_bytes());
        writeln!(file, "{encoded}")
            .with_context(|| format!("can't write the key file {}", path.display()))?;
        Ok(())
    }

    /// The private key, for the data plane that encrypts with it.
    pub fn secret(&self) -> StaticSecret {
        self.secret.clone()
    }

    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(PublicKey::from(&self.secret).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_keeps_the_identity_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let first = AgentKey::load_or_create(&path).unwrap().public_base64();
        let second = AgentKey::load_or_create(&path).unwrap().public_base64();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(first, AgentKey::generate().public_base64());
    }

    #[test]
    fn the_token_file_must_be_private_to_the_agents_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.token");
        std::fs::write(&path, "wat_0123_secret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for open in [0o644, 0o640, 0o604, 0o660] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
                let err = format!("{:#}", read_token_file(&path).unwrap_err());
                assert!(
                    err.contains(&format!("chmod 600 {}", path.display()))
                        && err.contains("token file"),
                    "{open:o}: {err}"
                );
                assert!(!err.contains("wat_0123_secret"), "{err}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(read_token_file(&path).unwrap().expose(), "wat_0123_secret");
        std::fs::write(&path, " \n").unwrap();
        assert!(read_token_file(&path)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(read_token_file(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        assert!(read_token_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("can't read"));
    }

    #[test]
    fn a_corrupt_key_file_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        std::fs::write(&path, "not base64!").unwrap();
        let err = AgentKey::load_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("delete it"), "{err}");
        std::fs::write(&path, "AAAA").unwrap();
        assert!(AgentKey::load_or_create(&path).is_err());
    }
}
