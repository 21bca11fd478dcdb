//! What a deployment may do to this machine: the local [`Policy`] (from a
//! root-owned file, never from the coordinator) and the check that turns a
//! coordinator's [`DeploymentInfo`] into a [`Confined`] deployment — or
//! refuses it with a reason a person can act on.
//!
//! A deployment may route only its own private ranges (inside 100.64.0.0/10
//! and fc00::/7 unless the policy allows more, no wider than /10 and /48),
//! none of which may overlap a network this machine already has (the LAN,
//! another VPN), and may answer DNS only under a suffix where no public name
//! can exist. Signing in must never cost a person their internet, their LAN
//! or their DNS.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use warren_netcfg::HostNetwork;
use warren_proto::model::DeploymentInfo;

/// The private IPv4 range deployments use by default (RFC 6598).
pub const DEFAULT_IPV4_RANGE: &str = "100.64.0.0/10";
/// The IPv6 unique-local range (RFC 4193).
pub const DEFAULT_IPV6_RANGE: &str = "fc00::/7";
/// Most agents a helper keeps for one deployment.
pub const DEFAULT_MAX_AGENTS: usize = 50_000;

/// How much of the name tree under a [`RESERVED_SUFFIXES`] entry a
/// deployment may not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserved {
    /// The name and every name under it: special-use names that this
    /// machine resolves some other way, or that never exist.
    Tree,
    /// The name itself: a LAN or an office uses the names directly under it
    /// for its own hosts, so taking it all would hide them. A name of the
    /// deployment's own under it (`warren.internal`) is fine and, because
    /// no public name can exist there, passes without the public list.
    Name,
}

/// Suffixes a deployment may not have, because the helper's stub answering
/// for them would shadow names this machine or its LAN already resolves
/// (signing in must never cost a person their DNS), unless the machine's
/// policy names them in `allow_suffixes`. The one list of them, with why:
///
/// - RFC 6761 §6 special-use names: `localhost` (loopback), `invalid`
///   (never exists), `test` and `example` (testing, documentation);
/// - RFC 6762 (multicast DNS): `local`, answered by the LAN's devices;
/// - RFC 9476: `alt`, names outside the DNS;
/// - RFC 3172 `arpa`, the infrastructure zone, whose reverse zones
///   (`in-addr.arpa`, `ip6.arpa`, RFC 6761 §6.1) the LAN's resolver
///   answers for private addresses; `home.arpa` (RFC 8375) is a home
///   network's own zone;
/// - names in common private use: `internal` (reserved by ICANN in 2024)
///   and RFC 6762 appendix G's `intranet`, `private`, `corp`, `home`, `lan`.
///
/// Each entry: the name, its scope and the phrase a refusal uses for it.
const RESERVED_SUFFIXES: &[(&str, Reserved, &str)] = &[
    ("local", Reserved::Tree, "multicast DNS (RFC 6762), which finds the LAN's printers and computers"),
    ("localhost", Reserved::Tree, "this machine's own loopback names (RFC 6761)"),
    ("invalid", Reserved::Tree, "names reserved never to exist (RFC 6761)"),
    ("test", Reserved::Tree, "names reserved for local testing (RFC 6761)"),
    ("example", Reserved::Tree, "names reserved for documentation (RFC 6761)"),
    ("alt", Reserved::Tree, "names outside the DNS (RFC 9476)"),
    ("arpa", Reserved::Tree, "the DNS's infrastructure zone (RFC 3172)"),
    ("in-addr.arpa", Reserved::Tree, "IPv4 reverse lookups, which the LAN's resolver answers for its addresses"),
    ("ip6.arpa", Reserved::Tree, "IPv6 reverse lookups, which the LAN's resolver answers for its addresses"),
    ("home.arpa", Reserved::Tree, "home networks' own names (RFC 8375)"),
    ("internal", Reserved::Name, "the top-level name reserved for private networks (ICANN), which offices use for their own hosts"),
    ("intranet", Reserved::Name, "a top-level name offices use for their own hosts (RFC 6762)"),
    ("private", Reserved::Name, "a top-level name private networks use for their own hosts (RFC 6762)"),
    ("corp", Reserved::Name, "a top-level name offices use for their own hosts (RFC 6762)"),
    ("home", Reserved::Name, "a top-level name home routers use for the LAN's hosts (RFC 6762)"),
    ("lan", Reserved::Name, "a top-level name home routers use for the LAN's hosts (RFC 6762)"),
];

/// The machine owner's limits on what any deployment may do. Loaded by the
/// helper from its policy file; the defaults suit almost everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Ranges a deployment's IPv4 prefix must lie in.
    pub ipv4_ranges: Vec<Ipv4Net>,
    /// Ranges a deployment's IPv6 prefix must lie in.
    pub ipv6_ranges: Vec<Ipv6Net>,
    /// Shortest IPv4 prefix accepted (a /10 at most).
    pub min_ipv4_len: u8,
    /// Shortest IPv6 prefix accepted (a /48 at most).
    pub min_ipv6_len: u8,
    /// Suffixes (and names under them) this machine's owner allows even
    /// though they are public (a domain their company owns) or reserved
    /// (`RESERVED_SUFFIXES` in this module: `lan` where the LAN uses none).
    pub allow_suffixes: Vec<String>,
    /// Most agents kept for one deployment.
    pub max_agents: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            // Invariant: the constants above parse.
            ipv4_ranges: vec![DEFAULT_IPV4_RANGE.parse().expect("valid constant")],
            ipv6_ranges: vec![DEFAULT_IPV6_RANGE.parse().expect("valid constant")],
            min_ipv4_len: 10,
            min_ipv6_len: 48,
            allow_suffixes: Vec::new(),
            max_agents: DEFAULT_MAX_AGENTS,
        }
    }
}

/// The policy file's shape (TOML). Every key is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// Extra ranges (IPv4 or IPv6) deployments may use, besides the defaults.
    #[serde(default)]
    allow_ranges: Vec<String>,
    min_ipv4_prefix_len: Option<u8>,
    min_ipv6_prefix_len: Option<u8>,
    #[serde(default)]
    allow_suffixes: Vec<String>,
    max_agents: Option<usize>,
}

/// Why a policy file can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not valid TOML: {0}")]
    Syntax(String),
    #[error("allow_ranges: {0:?} is not an address range such as 10.200.0.0/16")]
    BadRange(String),
    #[error("{key} = {value} is out of range ({min}–{max})")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("allow_suffixes: {0:?} is not a DNS name")]
    BadSuffix(String),
}

impl Policy {
    /// Parses a policy file's text (TOML; see `docs/policy.md`).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_string()))?;
        let mut policy = Policy::default();
        for range in &file.allow_ranges {
            match range.trim().parse::<IpNet>() {
                Ok(IpNet::V4(net)) => policy.ipv4_ranges.push(net.trunc()),
                Ok(IpNet::V6(net)) => policy.ipv6_ranges.push(net.trunc()),
                Err(_) => return Err(PolicyError::BadRange(range.clone())),
            }
        }
        if let Some(len) = file.min_ipv4_prefix_len {
            policy.min_ipv4_len = bounded("min_ipv4_prefix_len", len.into(), 1, 32)? as u8;
        }
        if let Some(len) = file.min_ipv6_prefix_len {
            policy.min_ipv6_len = bounded("min_ipv6_prefix_len", len.into(), 1, 128)? as u8;
        }
        if let Some(max) = file.max_agents {
            policy.max_agents = bounded("max_agents", max as u64, 1, 1_000_000)? as usize;
        }
        for suffix in &file.allow_suffixes {
            let normal = normalize_name(suffix);
            if !is_dns_name(&normal) {
                return Err(PolicyError::BadSuffix(suffix.clone()));
            }
            policy.allow_suffixes.push(normal);
        }
        Ok(policy)
    }

    fn ranges_text(&self, v4: bool) -> String {
        let list: Vec<String> = if v4 {
            self.ipv4_ranges.iter().map(ToString::to_string).collect()
        } else {
            self.ipv6_ranges.iter().map(ToString::to_string).collect()
        };
        list.join(", ")
    }
}

fn bounded(key: &'static str, value: u64, min: u64, max: u64) -> Result<u64, PolicyError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(PolicyError::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}

/// A deployment that passed the checks: its ranges and suffix, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confined {
    pub ipv4: Ipv4Net,
    pub ipv6: Ipv6Net,
    /// Lower case, no trailing dot.
    pub suffix: String,
}

impl Confined {
    /// Whether `ip` lies inside one of the deployment's ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ipv4.contains(&v4),
            IpAddr::V6(v6) => self.ipv6.contains(&v6),
        }
    }

    /// Whether `name` is a valid DNS name strictly under the suffix.
    pub fn owns_name(&self, name: &str) -> bool {
        let name = normalize_name(name);
        is_dns_name(&name)
            && name
                .strip_suffix(self.suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
    }

    /// "100.64.0.0/10 and fd12:3456:789a::/48", for messages.
    pub fn ranges_text(&self) -> String {
        format!("{} and {}", self.ipv4, self.ipv6)
    }
}

/// Whether two deployment descriptions name the same ranges and suffix
/// (however they are spelled).
pub fn same_network(a: &DeploymentInfo, b: &DeploymentInfo) -> bool {
    fn net(s: &str) -> Option<IpNet> {
        s.trim().parse::<IpNet>().ok().map(|n| n.trunc())
    }
    net(&a.ipv4_prefix) == net(&b.ipv4_prefix)
        && net(&a.ipv6_prefix) == net(&b.ipv6_prefix)
        && normalize_name(&a.suffix) == normalize_name(&b.suffix)
}

/// Why a deployment is refused. Each message says what the deployment asked
/// for, why Warren won't do it, and who can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfineError {
    #[error("the deployment sent {0:?} as its {1} range, which is not an address range; ask its administrator to fix the coordinator")]
    Unparsable(String, &'static str),
    #[error("the deployment asked to route {asked}, which is outside the ranges Warren allows ({allowed}); ask its administrator to use a range inside them, or allow it in this machine's Warren policy")]
    OutsideRanges { asked: String, allowed: String },
    #[error("the deployment asked to route {asked}, wider than the /{min} Warren allows; ask its administrator to use a smaller range")]
    TooWide { asked: String, min: u8 },
    #[error("the deployment asked to route {asked}, which overlaps {existing} on {interface}, a network this machine already uses; ask its administrator for another range, or leave the other network")]
    Overlap {
        asked: String,
        existing: String,
        interface: String,
    },
    #[error("the deployment gave this device the address {0}, outside its own ranges {1}; ask its administrator to fix the coordinator")]
    DeviceOutside(IpAddr, String),
    #[error("the deployment gave this device no tunnel address; ask its administrator to fix the coordinator")]
    NoDeviceAddress,
    #[error("the deployment's DNS suffix {0:?} is not a DNS name; ask its administrator to fix the coordinator")]
    BadSuffix(String),
    #[error("the deployment's DNS suffix {0:?} is a public suffix: names under it are on the internet and belong to others, so Warren won't answer for them; ask its administrator to use a private suffix such as `warren` or `warren.internal`")]
    PublicSuffix(String),
    #[error("the deployment's DNS suffix {suffix:?} is under the public suffix {public:?}: names there are on the internet, so Warren answers for them only if this machine's Warren policy allows the suffix (allow_suffixes); ask its administrator to use a private suffix such as `warren` or `warren.internal`")]
    PublicName { suffix: String, public: String },
    #[error("the deployment's DNS suffix {suffix:?} would take over {what} (`{reserved}`): while connected, this machine could no longer resolve them. Ask its administrator to use a suffix of the deployment's own, such as `warren` or `warren.internal`; or, if this is intended, allow {suffix:?} in this machine's Warren policy (allow_suffixes)")]
    Reserved {
        suffix: String,
        reserved: &'static str,
        what: &'static str,
    },
}

/// Checks `deployment` against `policy` and this machine's `networks`.
pub fn confine(
    deployment: &DeploymentInfo,
    policy: &Policy,
    networks: &[HostNetwork],
) -> Result<Confined, ConfineError> {
    let ipv4 = match deployment.ipv4_prefix.trim().parse::<IpNet>() {
        Ok(IpNet::V4(net)) => net.trunc(),
        _ => {
            return Err(ConfineError::Unparsable(
                deployment.ipv4_prefix.clone(),
                "IPv4",
            ))
        }
    };
    let ipv6 = match deployment.ipv6_prefix.trim().parse::<IpNet>() {
        Ok(IpNet::V6(net)) => net.trunc(),
        _ => {
            return Err(ConfineError::Unparsable(
                deployment.ipv6_prefix.clone(),
                "IPv6",
            ))
        }
    };
    if !policy.ipv4_ranges.iter().any(|r| r.contains(&ipv4)) {
        return Err(ConfineError::OutsideRanges {
            asked: ipv4.to_string(),
            allowed: policy.ranges_text(true),
        });
    }
    if !policy.ipv6_ranges.iter().any(|r| r.contains(&ipv6)) {
        return Err(ConfineError::OutsideRanges {
            asked: ipv6.to_string(),
            allowed: policy.ranges_text(false),
        });
    }
    if ipv4.prefix_len() < policy.min_ipv4_len {
        return Err(ConfineError::TooWide {
            asked: ipv4.to_string(),
            min: policy.min_ipv4_len,
        });
    }
    if ipv6.prefix_len() < policy.min_ipv6_len {
        return Err(ConfineError::TooWide {
            asked: ipv6.to_string(),
            min: policy.min_ipv6_len,
        });
    }
    for asked in [IpNet::V4(ipv4), IpNet::V6(ipv6)] {
        if let Some(clash) = networks
            .iter()
            .find(|n| n.network.prefix_len() > 0 && overlaps(&asked, &n.network))
        {
            return Err(ConfineError::Overlap {
                asked: asked.to_string(),
                existing: clash.network.to_string(),
                interface: clash.interface.clone(),
            });
        }
    }
    let suffix = check_suffix(&deployment.suffix, policy)?;
    Ok(Confined { ipv4, ipv6, suffix })
}

/// Checks the addresses the coordinator gave this device.
pub fn check_device_addresses(
    addresses: &[IpAddr],
    confined: &Confined,
) -> Result<(), ConfineError> {
    if addresses.is_empty() {
        return Err(ConfineError::NoDeviceAddress);
    }
    match addresses.iter().find(|a| !confined.contains(**a)) {
        Some(outside) => Err(ConfineError::DeviceOutside(
            *outside,
            confined.ranges_text(),
        )),
        None => Ok(()),
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The suffix, normalized, if no public name can exist under it.
fn check_suffix(raw: &str, policy: &Policy) -> Result<String, ConfineError> {
    let suffix = normalize_name(raw);
    if !is_dns_name(&suffix) {
        return Err(ConfineError::BadSuffix(raw.to_string()));
    }
    let under = |allowed: &str| suffix.ends_with(&format!(".{allowed}"));
    if policy
        .allow_suffixes
        .iter()
        .any(|p| suffix == *p || under(p))
    {
        return Ok(suffix);
    }
    // The longest reserved name the suffix is, or is under, decides, so the
    // refusal names the most specific reason (`ip6.arpa` before `arpa`).
    let reserved = RESERVED_SUFFIXES
        .iter()
        .filter(|(name, _, _)| suffix == *name || under(name))
        .max_by_key(|(name, _, _)| name.len());
    match reserved {
        Some((name, scope, what)) if suffix == *name || *scope == Reserved::Tree => {
            return Err(ConfineError::Reserved {
                suffix,
                reserved: name,
                what,
            });
        }
        // A name of the deployment's own under a private-use one.
        Some(_) => return Ok(suffix),
        None => {}
    }
    match psl::suffix(suffix.as_bytes()) {
        Some(public) if public.is_known() => {
            let public = String::from_utf8_lossy(public.as_bytes()).into_owned();
            if public == suffix {
                Err(ConfineError::PublicSuffix(suffix))
            } else {
                Err(ConfineError::PublicName { suffix, public })
            }
        }
        // Not under any suffix the public list knows (a name such as
        // `warren`): nothing public can be there.
        _ => Ok(suffix),
    }
}

/// Lower case, without a trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Letters, digits and hyphens in labels of 1–63 bytes, not starting or
/// ending with a hyphen, at most 253 bytes in all. (Underscores are allowed
/// inside labels, as service names use them.)
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= warren_proto::limits::MAX_DNS_NAME_BYTES
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(v4: &str, v6: &str, suffix: &str) -> DeploymentInfo {
        DeploymentInfo {
            suffix: suffix.into(),
            ipv4_prefix: v4.into(),
            ipv6_prefix: v6.into(),
        }
    }

    fn ok() -> DeploymentInfo {
        deployment("100.64.0.0/10", "fd12:3456:789a::/48", "warren")
    }

    fn lan() -> Vec<HostNetwork> {
        vec![
            HostNetwork {
                network: "0.0.0.0/0".parse().unwrap(),
                interface: "eth0".into(),
            },
            HostNetwork {
                network: "192.168.1.0/24".parse().unwrap(),
                interface: "eth0".into(),
            },
            HostNetwork {
                network: "fd00::/64".parse().unwrap(),
                interface: "eth0".into(),
            },
        ]
    }

    #[test]
    fn a_private_deployment_is_accepted_beside_the_lan() {
        let c = confine(&ok(), &Policy::default(), &lan()).unwrap();
        assert_eq!(c.ipv4.to_string(), "100.64.0.0/10");
        assert_eq!(c.ipv6.to_string(), "fd12:3456:789a::/48");
        assert_eq!(c.suffix, "warren");
        assert!(c.contains("100.64.0.7".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        assert!(c.owns_name("Main.API.alice.warren."));
        assert!(!c.owns_name("warren"));
        assert!(!c.owns_name("www.example.com"));
        assert!(!c.owns_name("xwarren"));
    }

    #[test]
    fn ranges_outside_the_private_ones_are_refused() {
        let policy = Policy::default();
        for (v4, v6, asked) in [
            ("0.0.0.0/1", "fd12::/48", "0.0.0.0/1"),
            ("100.64.0.0/10", "2000::/3", "2000::/3"),
            ("10.9.0.0/25", "fd12::/48", "10.9.0.0/25"),
            ("100.0.0.0/8", "fd12::/48", "100.0.0.0/8"),
        ] {
            let err = confine(&deployment(v4, v6, "warren"), &policy, &[]).unwrap_err();
            assert!(
                matches!(&err, ConfineError::OutsideRanges { asked: a, .. } if a == asked),
                "{v4} {v6}: {err}"
            );
            assert!(err.to_string().contains("ask its administrator"));
        }
        let err = confine(
            &deployment("100.64.0.0/10", "fc00::/7", "warren"),
            &policy,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            ConfineError::TooWide {
                asked: "fc00::/7".into(),
                min: 48
            }
        );
        // What the tunnel plan once parsed for itself is refused here.
        for bad in ["", "100.64.0.0", "fd12::/48", "100.64.0.0/33", "x/8"] {
            assert!(
                matches!(
                    confine(&deployment(bad, "fd12::/48", "warren"), &policy, &[]),
                    Err(ConfineError::Unparsable(..))
                ),
                "{bad} accepted"
            );
        }
        for bad in ["fd00::/129", "100.64.0.0/10", "fd00::"] {
            assert!(
                matches!(
                    confine(&deployment("100.64.0.0/10", bad, "warren"), &policy, &[]),
                    Err(ConfineError::Unparsable(..))
                ),
                "{bad} accepted"
            );
        }
        assert!(matches!(
            confine(
                &deployment("0.0.0.0/0", "fd12::/48", "warren"),
                &policy,
                &[]
            ),
            Err(ConfineError::OutsideRanges { .. })
        ));
    }

    #[test]
    fn a_range_overlapping_this_machines_networks_is_refused_naming_it() {
        let mut networks = lan();
        networks.push(HostNetwork {
            network: "100.100.7.0/24".parse().unwrap(),
            interface: "wlan0".into(),
        });
        let err = confine(&ok(), &Policy::default(), &networks).unwrap_err();
        assert_eq!(
            err,
            ConfineError::Overlap {
                asked: "100.64.0.0/10".into(),
                existing: "100.100.7.0/24".into(),
                interface: "wlan0".into()
            }
        );
        assert!(err.to_string().contains("100.100.7.0/24 on wlan0"));
        // The default route is no conflict, and a range inside another
        // VPN's wider one is.
        let vpn = vec![HostNetwork {
            network: "fd00::/8".parse().unwrap(),
            interface: "tun9".into(),
        }];
        assert!(matches!(
            confine(&ok(), &Policy::default(), &vpn),
            Err(ConfineError::Overlap { .. })
        ));
    }

    #[test]
    fn public_suffixes_and_public_names_are_refused() {
        let policy = Policy::default();
        for suffix in ["com", "co.uk", "CO.UK.", "github.io"] {
            let err = confine(
                &deployment("100.64.0.0/10", "fd12::/48", suffix),
                &policy,
                &[],
            )
            .unwrap_err();
            assert!(
                matches!(err, ConfineError::PublicSuffix(_)),
                "{suffix}: {err}"
            );
        }
        let err = confine(
            &deployment("100.64.0.0/10", "fd12::/48", "corp.example.com"),
            &policy,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            ConfineError::PublicName {
                suffix: "corp.example.com".into(),
                public: "com".into()
            }
        );
        for bad in ["", "a..b", "-x", "a b", &"x".repeat(64)] {
            assert!(matches!(
                confine(&deployment("100.64.0.0/10", "fd12::/48", bad), &policy, &[]),
                Err(ConfineError::BadSuffix(_))
            ));
        }
    }

    #[test]
    fn private_suffixes_and_allowed_names_pass() {
        let policy = Policy::default();
        for suffix in [
            "warren",
            "warren.internal",
            "dev.internal",
            "warren.lan",
            "ws.corp",
            "Warren.",
        ] {
            let c = confine(
                &deployment("100.64.0.0/10", "fd12::/48", suffix),
                &policy,
                &[],
            )
            .unwrap_or_else(|e| panic!("{suffix}: {e}"));
            assert_eq!(c.suffix, normalize_name(suffix));
        }
        let policy = Policy::from_toml("allow_suffixes = [\"example.com\"]").unwrap();
        assert!(confine(
            &deployment("100.64.0.0/10", "fd12::/48", "ws.example.com"),
            &policy,
            &[]
        )
        .is_ok());
        assert!(confine(
            &deployment("100.64.0.0/10", "fd12::/48", "com"),
            &policy,
            &[]
        )
        .is_err());
    }

    #[test]
    fn special_use_and_lan_suffixes_are_refused_unless_the_policy_allows_them() {
        let policy = Policy::default();
        let refused = |suffix: &str, policy: &Policy| match confine(
            &deployment("100.64.0.0/10", "fd12::/48", suffix),
            policy,
            &[],
        ) {
            Err(ConfineError::Reserved { reserved, .. }) => reserved,
            other => panic!("{suffix}: {other:?}"),
        };
        for (name, _, _) in RESERVED_SUFFIXES {
            assert_eq!(refused(name, &policy), *name);
            assert_eq!(refused(&name.to_ascii_uppercase(), &policy), *name);
        }
        // Whole trees: anything under them, named by the most specific.
        for (suffix, reserved) in [
            ("printer.local", "local"),
            ("a.localhost", "localhost"),
            ("x.test", "test"),
            ("ws.example", "example"),
            ("10.in-addr.arpa", "in-addr.arpa"),
            ("168.192.in-addr.arpa", "in-addr.arpa"),
            ("d.f.ip6.arpa", "ip6.arpa"),
            ("warren.home.arpa", "home.arpa"),
            ("e164.arpa", "arpa"),
        ] {
            assert_eq!(refused(suffix, &policy), reserved, "{suffix}");
        }
        let err = confine(
            &deployment("100.64.0.0/10", "fd12::/48", "lan"),
            &policy,
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("home routers") && err.contains("allow_suffixes"),
            "{err}"
        );
        // The policy may allow one, and names under it, as for public ones.
        let policy = Policy::from_toml("allow_suffixes = [\"lan\", \"local\"]").unwrap();
        for suffix in ["lan", "local", "office.local"] {
            assert!(
                confine(
                    &deployment("100.64.0.0/10", "fd12::/48", suffix),
                    &policy,
                    &[]
                )
                .is_ok(),
                "{suffix}"
            );
        }
        assert_eq!(refused("home", &policy), "home");
    }

    #[test]
    fn the_policy_file_widens_ranges_and_limits() {
        let policy = Policy::from_toml(
            "allow_ranges = [\"10.200.0.0/16\", \"2001:db8::/32\"]\nmin_ipv4_prefix_len = 16\nmax_agents = 10\n",
        )
        .unwrap();
        assert_eq!(policy.max_agents, 10);
        let c = confine(
            &deployment("10.200.0.0/16", "2001:db8:1::/48", "warren"),
            &policy,
            &[],
        )
        .unwrap();
        assert_eq!(c.ipv4.to_string(), "10.200.0.0/16");
        // The minimum applies to the default range too now.
        assert!(matches!(
            confine(&ok(), &policy, &[]),
            Err(ConfineError::TooWide { min: 16, .. })
        ));
        for bad in [
            "allow_ranges = [\"nonsense\"]",
            "max_agents = 0",
            "min_ipv6_prefix_len = 200",
            "surprise = 1",
            "allow_suffixes = [\"a b\"]",
            "[[",
        ] {
            assert!(Policy::from_toml(bad).is_err(), "{bad}");
        }
        assert_eq!(Policy::from_toml("").unwrap(), Policy::default());
    }

    #[test]
    fn device_addresses_must_lie_inside_the_ranges() {
        let c = confine(&ok(), &Policy::default(), &[]).unwrap();
        assert!(check_device_addresses(
            &[
                "100.64.0.9".parse().unwrap(),
                "fd12:3456:789a::9".parse().unwrap()
            ],
            &c
        )
        .is_ok());
        assert_eq!(
            check_device_addresses(&["192.168.1.1".parse().unwrap()], &c),
            Err(ConfineError::DeviceOutside(
                "192.168.1.1".parse().unwrap(),
                "100.64.0.0/10 and fd12:3456:789a::/48".into()
            ))
        );
        assert_eq!(
            check_device_addresses(&[], &c),
            Err(ConfineError::NoDeviceAddress)
        );
    }
}
