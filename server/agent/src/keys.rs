//! The agent's WireGuard key: fresh at every start, or kept in a file when
//! asked to (`--key-file`), so a restarted agent keeps its identity only if
//! the operator wants that.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use std::io::Write;
use std::path::Path;
use x25519_dalek::{PublicKey, StaticSecret};

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
