//! systemd-resolved: the TUN link gets the stub as its DNS server and
//! `~SUFFIX` as a routing-only domain, and is never the default route for
//! DNS, so resolved sends exactly the suffix's lookups there. The settings
//! belong to the link and vanish with it; `resolvectl revert` clears them
//! earlier on a clean disconnect.
//!
//! Done with `resolvectl` (fixed argument lists, no shell): it is what an
//! administrator would type, and its arguments are tested here exactly.

use std::net::IpAddr;
use std::path::Path;

use super::DnsPlan;
use crate::cmd::{run, run_ok};
use crate::error::Result;

const RESOLVECTL: &str = "resolvectl";

/// Whether systemd-resolved runs here (its stub resolv.conf exists).
pub fn is_running() -> bool {
    Path::new("/run/systemd/resolve/stub-resolv.conf").exists()
        || Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
}

/// The `resolvectl` invocations that configure `ifname`, in order.
pub fn commands(ifname: &str, servers: &[IpAddr], suffix: &str) -> Vec<Vec<String>> {
    let mut dns = vec!["dns".to_string(), ifname.to_string()];
    dns.extend(servers.iter().map(IpAddr::to_string));
    vec![
        dns,
        vec!["domain".into(), ifname.into(), format!("~{suffix}")],
        vec!["default-route".into(), ifname.into(), "false".into()],
        vec!["llmnr".into(), ifname.into(), "false".into()],
        vec!["mdns".into(), ifname.into(), "false".into()],
    ]
}

/// The invocation that undoes them.
pub fn revert_command(ifname: &str) -> Vec<String> {
    vec!["revert".into(), ifname.into()]
}

pub(super) fn apply(ifname: &str, plan: &DnsPlan) -> Result<()> {
    for args in commands(ifname, &plan.servers, &plan.suffix) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(
            RESOLVECTL,
            &args,
            &format!("configuring split DNS for {} on {ifname}", plan.suffix),
        )?;
    }
    tracing::info!(%ifname, suffix = %plan.suffix, "systemd-resolved sends the suffix's lookups to the Warren DNS stub");
    Ok(())
}

pub(super) fn undo(ifname: &str) -> Result<()> {
    let args = revert_command(ifname);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = run(RESOLVECTL, &args, "reverting split DNS")?;
    // The link (and with it the settings) is usually gone already.
    if ran.ok
        || ran.text.contains("Failed to resolve interface")
        || ran.text.contains("No such device")
    {
        return Ok(());
    }
    run_ok(
        RESOLVECTL,
        &args,
        &format!("reverting split DNS on {ifname}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvectl_arguments_route_only_the_suffix_to_the_link() {
        let servers: Vec<IpAddr> = vec!["100.64.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        let got = commands("warren0", &servers, "warren");
        let want: Vec<Vec<&str>> = vec![
            vec!["dns", "warren0", "100.64.0.7", "fd00::7"],
            vec!["domain", "warren0", "~warren"],
            vec!["default-route", "warren0", "false"],
            vec!["llmnr", "warren0", "false"],
            vec!["mdns", "warren0", "false"],
        ];
        assert_eq!(got, want);
        assert_eq!(revert_command("warren0"), ["revert", "warren0"]);
    }
}
