//! Windows: a Name Resolution Policy Table rule sends lookups under
//! `.SUFFIX` to the stub and leaves every other name to the normal resolver.
//!
//! The rule is a registry key under the DNS client's local policy
//! (`HKLM\SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig`)
//! named by a GUID derived from the suffix, so the same deployment always
//! maps to the same key and a crashed helper's rule is found again. The
//! values are built and unit-tested on every OS; writing and removing them
//! is tested on Windows (under Wine in CI) against a scratch key, because
//! the real key changes the machine's DNS. Whether the DNS client obeys the
//! rule is not tested: Wine's resolver has no NRPT.

use std::net::IpAddr;

use super::DnsPlan;
#[cfg(not(windows))]
use crate::error::NetError;
use crate::error::Result;

/// Where local NRPT rules live, under `HKEY_LOCAL_MACHINE`.
pub const POLICY_KEY: &str =
    r"SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig";

/// A registry value of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    Dword(u32),
    Sz(String),
    MultiSz(Vec<String>),
}

/// `ConfigOptions` flag: the rule names generic DNS servers.
pub const CONFIG_GENERIC_DNS_SERVERS: u32 = 0x8;

/// The rule's key name: a GUID in braces, stable per suffix.
pub fn rule_name(suffix: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in suffix.to_ascii_lowercase().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{{7761726e-656e-4e52-5054-{:012x}}}",
        hash & 0xffff_ffff_ffff
    )
}

/// The rule's values: names under `.SUFFIX` go to `servers`.
pub fn values(suffix: &str, servers: &[IpAddr]) -> Vec<(&'static str, RegValue)> {
    let servers = servers
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(";");
    vec![
        ("Version", RegValue::Dword(2)),
        ("Name", RegValue::MultiSz(vec![format!(".{suffix}")])),
        ("GenericDNSServers", RegValue::Sz(servers)),
        ("ConfigOptions", RegValue::Dword(CONFIG_GENERIC_DNS_SERVERS)),
        ("IPSECCARestriction", RegValue::Sz(String::new())),
        ("Comment", RegValue::Sz("Warren split DNS".into())),
    ]
}

#[cfg(windows)]
pub(super) fn apply(rule: &str, plan: &DnsPlan) -> Result<()> {
    use winreg::enums::HKEY_LOCAL_MACHINE;
    write_rule(&winreg::RegKey::predef(HKEY_LOCAL_MACHINE), rule, plan)?;
    // The DNS client reads the policy on its own schedule; flushing its
    // cache makes the rule apply to names looked up before.
    let _ = crate::cmd::run("ipconfig", &["/flushdns"], "flushing the DNS cache");
    tracing::info!(%rule, suffix = %plan.suffix, "NRPT rule added");
    Ok(())
}

/// Writes the rule's key under `root` (HKLM for real; a scratch key in the
/// tests, which must not change the machine's DNS).
#[cfg(windows)]
fn write_rule(root: &winreg::RegKey, rule: &str, plan: &DnsPlan) -> Result<()> {
    use crate::error::NetError;
    use winreg::enums::KEY_ALL_ACCESS;
    let what = format!("adding the NRPT rule for .{}", plan.suffix);
    let (key, _) = root
        .create_subkey_with_flags(format!(r"{POLICY_KEY}\{rule}"), KEY_ALL_ACCESS)
        .map_err(|e| NetError::os(what.clone(), e))?;
    for (name, value) in values(&plan.suffix, &plan.servers) {
        let set = match value {
            RegValue::Dword(v) => key.set_value(name, &v),
            RegValue::Sz(v) => key.set_value(name, &v),
            RegValue::MultiSz(v) => key.set_value(name, &v),
        };
        set.map_err(|e| NetError::os(what.clone(), e))?;
    }
    Ok(())
}

#[cfg(windows)]
pub(super) fn undo(rule: &str) -> Result<()> {
    use winreg::enums::HKEY_LOCAL_MACHINE;
    if remove_rule(&winreg::RegKey::predef(HKEY_LOCAL_MACHINE), rule)? {
        let _ = crate::cmd::run("ipconfig", &["/flushdns"], "flushing the DNS cache");
    }
    Ok(())
}

/// Deletes the rule's key under `root`; `false` when it was already gone.
#[cfg(windows)]
fn remove_rule(root: &winreg::RegKey, rule: &str) -> Result<bool> {
    use crate::error::NetError;
    match root.delete_subkey_all(format!(r"{POLICY_KEY}\{rule}")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(NetError::os(format!("removing the NRPT rule {rule}"), e)),
    }
}

#[cfg(not(windows))]
pub(super) fn apply(_rule: &str, _plan: &DnsPlan) -> Result<()> {
    Err(NetError::InvalidPlan(
        "NRPT rules exist only on Windows; pick another DNS mode".into(),
    ))
}

#[cfg(not(windows))]
pub(super) fn undo(_rule: &str) -> Result<()> {
    // No registry here, so no rule to remove.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_stable_guids_per_suffix() {
        let a = rule_name("warren");
        assert_eq!(a, rule_name("WARREN"));
        assert_ne!(a, rule_name("corp.example"));
        assert_eq!(a.len(), 38, "{a}");
        assert!(a.starts_with('{') && a.ends_with('}'));
        let hex: String = a[1..37].chars().filter(|c| *c != '-').collect();
        assert_eq!(hex.len(), 32);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn rule_values_name_the_suffix_and_the_stub() {
        let servers: Vec<IpAddr> = vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        let v = values("warren", &servers);
        assert_eq!(
            v,
            vec![
                ("Version", RegValue::Dword(2)),
                ("Name", RegValue::MultiSz(vec![".warren".into()])),
                (
                    "GenericDNSServers",
                    RegValue::Sz("100.64.0.7;fd00::7".into())
                ),
                ("ConfigOptions", RegValue::Dword(8)),
                ("IPSECCARestriction", RegValue::Sz(String::new())),
                ("Comment", RegValue::Sz("Warren split DNS".into())),
            ]
        );
    }

    /// The rule as the registry holds it: each value read back with its
    /// Windows type, rewriting it (a restarted helper) leaves one rule, and
    /// removing it twice is fine. Written under a scratch key in HKCU, so
    /// the test never changes this machine's DNS.
    #[cfg(windows)]
    #[test]
    fn the_rule_is_written_to_and_removed_from_the_registry() {
        use winreg::enums::{RegType, HKEY_CURRENT_USER};
        use winreg::RegKey;

        /// Deletes the scratch key even when an assertion fails.
        struct Scratch(String);
        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = RegKey::predef(HKEY_CURRENT_USER).delete_subkey_all(&self.0);
            }
        }
        let guard = Scratch(format!(
            r"Software\Warren\tests\nrpt-{}",
            std::process::id()
        ));
        let (root, _) = RegKey::predef(HKEY_CURRENT_USER)
            .create_subkey(&guard.0)
            .unwrap();

        let plan = DnsPlan {
            suffix: "warren".into(),
            servers: vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
            mode: super::super::DnsMode::Nrpt,
            resolv_conf: std::path::PathBuf::new(),
        };
        let rule = rule_name(&plan.suffix);
        let path = format!(r"{POLICY_KEY}\{rule}");
        write_rule(&root, &rule, &plan).unwrap();
        write_rule(&root, &rule, &plan).unwrap();

        let policy = root.open_subkey(POLICY_KEY).unwrap();
        let rules: Vec<String> = policy.enum_keys().collect::<Result<_, _>>().unwrap();
        assert_eq!(rules, vec![rule.clone()]);
        let key = root.open_subkey(&path).unwrap();
        let kind = |name: &str| key.get_raw_value(name).unwrap().vtype;
        assert_eq!(key.get_value::<u32, _>("Version").unwrap(), 2);
        assert_eq!(kind("Version"), RegType::REG_DWORD);
        assert_eq!(
            key.get_value::<Vec<String>, _>("Name").unwrap(),
            vec![".warren".to_string()]
        );
        assert_eq!(kind("Name"), RegType::REG_MULTI_SZ);
        assert_eq!(
            key.get_value::<String, _>("GenericDNSServers").unwrap(),
            "100.64.0.7;fd00::7"
        );
        assert_eq!(kind("GenericDNSServers"), RegType::REG_SZ);
        assert_eq!(
            key.get_value::<u32, _>("ConfigOptions").unwrap(),
            CONFIG_GENERIC_DNS_SERVERS
        );
        assert_eq!(kind("ConfigOptions"), RegType::REG_DWORD);
        assert_eq!(
            key.get_value::<String, _>("IPSECCARestriction").unwrap(),
            ""
        );
        assert_eq!(
            key.enum_values().count(),
            values("warren", &plan.servers).len()
        );
        drop(key);

        assert!(remove_rule(&root, &rule).unwrap(), "the rule was there");
        assert!(root.open_subkey(&path).is_err(), "the rule is gone");
        assert!(!remove_rule(&root, &rule).unwrap(), "already gone is fine");
    }
}
