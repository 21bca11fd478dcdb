//! Validation of user, workspace and agent names.
//!
//! Names become DNS labels (`agent.workspace.owner.suffix`), so they are held
//! to the rules of a hostname label, a little stricter than DNS itself:
//! lowercase ASCII letters, digits and hyphens, 1 to 32 characters, starting
//! with a letter or digit and not ending with a hyphen.

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 32;

/// A name that cannot be used, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} name {name:?} is not valid: {reason}; use 1 to 32 lowercase letters, digits and hyphens, starting with a letter or digit (for example `api-2`)")]
pub struct InvalidName {
    pub what: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// Checks a name of kind `what` ("user", "workspace", "agent").
pub fn validate(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            what,
            // Names are public (they end up in DNS), but cap what we echo.
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return fail("it is empty");
    }
    if bytes.len() > MAX_NAME_LEN {
        return fail("it is longer than 32 characters");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return fail("it contains a character other than a-z, 0-9 or -");
    }
    if bytes[0] == b'-' {
        return fail("it starts with a hyphen");
    }
    if bytes[bytes.len() - 1] == b'-' {
        return fail("it ends with a hyphen");
    }
    Ok(())
}

/// Checks a DNS suffix such as `warren` or `dev.example.com`: one or more
/// labels, each a valid name.
pub fn validate_suffix(suffix: &str) -> Result<(), InvalidName> {
    let trimmed = suffix.strip_suffix('.').unwrap_or(suffix);
    if trimmed.is_empty() {
        return Err(InvalidName {
            what: "suffix",
            name: suffix.to_string(),
            reason: "it is empty",
        });
    }
    for label in trimmed.split('.') {
        validate("suffix", label).map_err(|mut e| {
            e.name = suffix.chars().take(64).collect();
            e
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "0", "alice", "api-2", "a-b-c", "x".repeat(32).as_str()] {
            assert_eq!(validate("user", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "x".repeat(33);
        for bad in [
            "",
            "-a",
            "a-",
            "Alice",
            "a_b",
            "a.b",
            "a b",
            "é",
            long.as_str(),
            "a/b",
        ] {
            let err = validate("workspace", bad).unwrap_err();
            assert_eq!(err.what, "workspace");
            assert!(err.to_string().contains("lowercase"), "{err}");
        }
    }

    #[test]
    fn suffixes_are_dotted_labels() {
        assert!(validate_suffix("warren").is_ok());
        assert!(validate_suffix("dev.example.com").is_ok());
        assert!(validate_suffix("warren.").is_ok());
        assert!(validate_suffix("").is_err());
        assert!(validate_suffix("a..b").is_err());
        assert!(validate_suffix("Warren").is_err());
    }
}
