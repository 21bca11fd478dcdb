//! A string that never shows itself in `Debug` or `Display` output.
//!
//! Tokens travel inside request types that are routinely logged with `{:?}`;
//! wrapping them here makes "never log a secret" the default instead of a
//! thing every call site has to remember. Files secrets are read from
//! follow one permission rule, [`check_secret_file_mode`].

use serde::{Deserialize, Serialize};

/// A secret string (a bearer token). Serializes transparently, prints as
/// `[redacted]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// A file holding a secret that other users can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} {path} is readable by other users (mode {mode:03o}); restrict it with `chmod 600 {path}` (and own it by the user that runs this program)")]
pub struct SecretFileTooOpen {
    /// What the file holds, e.g. "TURN secret file".
    pub what: &'static str,
    pub path: String,
    /// Its permission bits.
    pub mode: u32,
}

/// The rule for every file a Warren program reads a secret from (the
/// coordinator's TURN and OIDC client secrets, an agent's token): no
/// permission at all for group or others, since whoever can read it can
/// act as its owner. `mode` is the file's Unix mode (`PermissionsExt::mode`);
/// Windows, whose files carry ACLs instead, has no such check. A pure
/// function, so every program applies the same rule and message.
pub fn check_secret_file_mode(
    what: &'static str,
    path: &std::path::Path,
    mode: u32,
) -> Result<(), SecretFileTooOpen> {
    if mode & 0o077 == 0 {
        Ok(())
    } else {
        Err(SecretFileTooOpen {
            what,
            path: path.display().to_string(),
            mode: mode & 0o777,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_must_be_private_to_their_owner() {
        let path = std::path::Path::new("/etc/warren/secret");
        for private in [0o100600, 0o600, 0o400, 0o700] {
            assert_eq!(check_secret_file_mode("secret file", path, private), Ok(()));
        }
        for open in [0o644, 0o640, 0o604, 0o660, 0o100601, 0o610] {
            let err = check_secret_file_mode("token file", path, open).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("chmod 600 /etc/warren/secret") && text.contains("the token file"),
                "{text}"
            );
        }
        assert!(check_secret_file_mode("x", path, 0o100644)
            .unwrap_err()
            .to_string()
            .contains("mode 644"));
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("wut_abc.supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"wut_abc.supersecret\""
        );
    }
}
