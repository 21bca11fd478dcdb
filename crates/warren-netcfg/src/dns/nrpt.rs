//! Windows: a Name Resolution Policy Table rule sends lookups under
//! `.SUFFIX` to the stub and leaves every other name to the normal resolver.
//!
//! The rule is a registry key under the DNS client's local policy
//! (`HKLM\SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig`)
//! named by a GUID derived from the suffix, so the same deployment always
//! maps to the same key and a crashed helper's rule is found again. The
//! values are built and unit-tested on every OS; writing them compiles for
//! Windows in CI but has not run on Windows.

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
    use crate::error::NetError;
    use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_ALL_ACCESS};
    use winreg::RegKey;
    let what = format!("adding the NRPT rule for .{}", plan.suffix);
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    let (key, _) = hklm
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
    // The DNS client reads the policy on its own schedule; flushing its
    // cache makes the rule apply to names looked up before.
    let _ = crate::cmd::run("ipconfig", &["/flushdns"], "flushing the DNS cache");
    tracing::info!(%rule, suffix = %plan.suffix, "NRPT rule added");
    Ok(())
}

#[cfg(windows)]
pub(super) fn undo(rule: &str) -> Result<()> {
    use crate::error::NetError;
    use winreg::enums::HKEY_LOCAL_MACHINE;
    use winreg::RegKey;
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    match hklm.delete_subkey_all(format!(r"{POLICY_KEY}\{rule}")) {
        Ok(()) => {
            let _ = crate::cmd::run("ipconfig", &["/flushdns"], "flushing the DNS cache");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
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
}
