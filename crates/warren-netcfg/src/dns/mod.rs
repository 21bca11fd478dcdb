//! Split DNS: the OS sends lookups under the deployment's suffix (and, in
//! the `/etc/resolv.conf` mode that has no per-domain routing, every lookup)
//! to the helper's DNS stub, and nothing else changes.
//!
//! One mode per OS family, chosen automatically and overridable:
//!
//! | mode | OS | what changes | undone by |
//! | --- | --- | --- | --- |
//! | [`DnsMode::Resolved`] | Linux with systemd-resolved | per-link DNS server and routing domain `~SUFFIX` on the TUN | `resolvectl revert`, and the link's removal |
//! | [`DnsMode::ResolvConf`] | Linux without it | `/etc/resolv.conf` rewritten in place, original kept as a backup | restoring the backup |
//! | [`DnsMode::Nrpt`] | Windows | an NRPT rule for `.SUFFIX` | deleting the rule |
//! | [`DnsMode::MacResolver`] | macOS | `/etc/resolver/SUFFIX` | deleting the file |
//!
//! Every change is a [`crate::Change`] journalled before it is made, like
//! the routes, so a crash is undone at the next start. The pure parts (file
//! contents, command arguments, registry values) live in the submodules and
//! are unit-tested on every OS.

pub mod nrpt;
pub mod resolv_conf;
pub mod resolved;
pub mod resolver_file;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::journal::Change;

/// The marker that says a file (or rule) is Warren's. Never remove or
/// restore something without it: it may be another program's.
pub const MARKER: &str = "# Managed by Warren (warrend) while connected; restored on disconnect.";

/// How the OS is told about the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsMode {
    /// Pick the OS's best mode ([`detect_mode`]).
    Auto,
    /// systemd-resolved: per-link server and `~SUFFIX` routing domain.
    Resolved,
    /// `/etc/resolv.conf` points at the stub, which forwards everything else.
    ResolvConf,
    /// Windows Name Resolution Policy Table rule.
    Nrpt,
    /// macOS `/etc/resolver/SUFFIX`.
    MacResolver,
    /// Leave the OS's DNS alone.
    Off,
}

impl std::str::FromStr for DnsMode {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DnsMode::Auto),
            "resolved" | "systemd-resolved" => Ok(DnsMode::Resolved),
            "resolv-conf" | "resolvconf" | "resolv.conf" => Ok(DnsMode::ResolvConf),
            "nrpt" => Ok(DnsMode::Nrpt),
            "mac-resolver" | "resolver" => Ok(DnsMode::MacResolver),
            "off" | "none" => Ok(DnsMode::Off),
            other => Err(NetError::InvalidPlan(format!(
                "unknown DNS mode {other:?}: use auto, resolved, resolv-conf, nrpt, mac-resolver or off"
            ))),
        }
    }
}

impl std::fmt::Display for DnsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DnsMode::Auto => "auto",
            DnsMode::Resolved => "resolved",
            DnsMode::ResolvConf => "resolv-conf",
            DnsMode::Nrpt => "nrpt",
            DnsMode::MacResolver => "mac-resolver",
            DnsMode::Off => "off",
        })
    }
}

/// What the OS should send where while connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsPlan {
    /// The deployment's DNS suffix, e.g. `warren` (no dots at either end).
    pub suffix: String,
    /// The stub's addresses (one IPv4, one IPv6 tunnel address).
    pub servers: Vec<IpAddr>,
    /// A concrete mode (not [`DnsMode::Auto`]; resolve it first).
    pub mode: DnsMode,
    /// The file the `ResolvConf` mode rewrites (normally `/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
}

impl DnsPlan {
    /// Checks the plan: the suffix becomes a file name (macOS), a registry
    /// value (Windows) and a command argument (Linux), so it is held to DNS
    /// label characters.
    pub fn validate(&self) -> Result<()> {
        let s = &self.suffix;
        let ok_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.is_empty() || s.len() > 200 || !s.split('.').all(ok_label) {
            return Err(NetError::InvalidPlan(format!(
                "DNS suffix {s:?} must be DNS labels (letters, digits, '-') joined by dots, e.g. \"warren\""
            )));
        }
        if self.servers.is_empty() && self.mode != DnsMode::Off {
            return Err(NetError::InvalidPlan(
                "no address for the DNS stub; the tunnel has no address yet".into(),
            ));
        }
        if self.mode == DnsMode::Auto {
            return Err(NetError::InvalidPlan(
                "DNS mode must be resolved to a concrete one before applying".into(),
            ));
        }
        Ok(())
    }

    /// The journal entry for this plan on interface `ifname`; the backup
    /// of a rewritten file goes next to the journal (`state_dir`).
    pub fn change(&self, ifname: &str, state_dir: &Path) -> Option<Change> {
        match self.mode {
            DnsMode::Auto | DnsMode::Off => None,
            DnsMode::Resolved => Some(Change::ResolvedLink {
                ifname: ifname.to_string(),
            }),
            DnsMode::ResolvConf => Some(Change::ResolvConf {
                path: self.resolv_conf.clone(),
                backup: state_dir.join("resolv.conf.before-warren"),
            }),
            DnsMode::Nrpt => Some(Change::Nrpt {
                rule: nrpt::rule_name(&self.suffix),
            }),
            DnsMode::MacResolver => Some(Change::MacResolver {
                path: resolver_file::path_for(&self.suffix),
            }),
        }
    }
}

/// The mode this machine should use: Linux picks systemd-resolved when it
/// runs (its stub file exists) and the resolv.conf mode otherwise; Windows
/// NRPT; macOS `/etc/resolver`.
pub fn detect_mode() -> DnsMode {
    if cfg!(windows) {
        DnsMode::Nrpt
    } else if cfg!(target_os = "macos") {
        DnsMode::MacResolver
    } else if resolved::is_running() {
        DnsMode::Resolved
    } else {
        DnsMode::ResolvConf
    }
}

/// Makes the change `change` describes for `plan` (already journalled).
pub fn apply(change: &Change, plan: &DnsPlan) -> Result<()> {
    match change {
        Change::ResolvedLink { ifname } => resolved::apply(ifname, plan),
        Change::ResolvConf { path, backup } => resolv_conf::apply(path, backup, &plan.servers),
        Change::Nrpt { rule } => nrpt::apply(rule, plan),
        Change::MacResolver { path } => resolver_file::apply(path, &plan.servers),
        _ => Ok(()),
    }
}

/// Undoes a DNS change; `Ok` if it is gone already. Non-DNS changes are
/// not this module's and are left alone.
pub fn undo(change: &Change) -> Result<()> {
    match change {
        Change::ResolvedLink { ifname } => resolved::undo(ifname),
        Change::ResolvConf { path, backup } => resolv_conf::undo(path, backup),
        Change::Nrpt { rule } => nrpt::undo(rule),
        Change::MacResolver { path } => resolver_file::undo(path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: DnsMode) -> DnsPlan {
        DnsPlan {
            suffix: "warren".into(),
            servers: vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()],
            mode,
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for (text, mode) in [
            ("auto", DnsMode::Auto),
            ("resolved", DnsMode::Resolved),
            ("resolv-conf", DnsMode::ResolvConf),
            ("NRPT", DnsMode::Nrpt),
            ("mac-resolver", DnsMode::MacResolver),
            ("off", DnsMode::Off),
        ] {
            assert_eq!(text.parse::<DnsMode>().unwrap(), mode);
            assert_eq!(mode.to_string().parse::<DnsMode>().unwrap(), mode);
        }
        let err = "dnsmasq".parse::<DnsMode>().unwrap_err().to_string();
        assert!(err.contains("resolv-conf"), "{err}");
    }

    #[test]
    fn suffixes_are_dns_labels_only() {
        plan(DnsMode::ResolvConf).validate().unwrap();
        for bad in [
            "",
            "war ren",
            "../etc",
            "a..b",
            "-x",
            "x-",
            "warren;rm",
            "a/b",
        ] {
            let mut p = plan(DnsMode::ResolvConf);
            p.suffix = bad.into();
            assert!(p.validate().is_err(), "{bad:?} accepted");
        }
        let mut p = plan(DnsMode::ResolvConf);
        p.suffix = "corp.example".into();
        p.validate().unwrap();
        assert!(plan(DnsMode::Auto).validate().is_err());
        let mut p = plan(DnsMode::Resolved);
        p.servers.clear();
        assert!(p.validate().is_err());
    }

    #[test]
    fn each_mode_journals_what_it_will_touch() {
        let dir = Path::new("/var/lib/warren");
        assert_eq!(plan(DnsMode::Off).change("warren0", dir), None);
        assert_eq!(
            plan(DnsMode::Resolved).change("warren0", dir),
            Some(Change::ResolvedLink {
                ifname: "warren0".into()
            })
        );
        assert_eq!(
            plan(DnsMode::ResolvConf).change("warren0", dir),
            Some(Change::ResolvConf {
                path: "/etc/resolv.conf".into(),
                backup: "/var/lib/warren/resolv.conf.before-warren".into()
            })
        );
        assert_eq!(
            plan(DnsMode::MacResolver).change("utun4", dir),
            Some(Change::MacResolver {
                path: "/etc/resolver/warren".into()
            })
        );
        assert!(matches!(
            plan(DnsMode::Nrpt).change("warren0", dir),
            Some(Change::Nrpt { .. })
        ));
    }
}
