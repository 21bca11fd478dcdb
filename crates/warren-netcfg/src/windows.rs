//! Windows: the TUN device is a Wintun adapter through tun-rs (`wintun.dll`
//! next to the helper); addresses and routes through `netsh` with
//! `store=active`, so even a change that is never undone is gone after a
//! reboot. The adapter is removed when the helper's handle closes.

use std::net::IpAddr;

use crate::cmd::{run, run_ok};
use crate::error::{NetError, Result};
use crate::journal::Change;
use crate::plan::NetPlan;
use crate::{Backend, TunDevice};

const NETSH: &str = "netsh";

/// The Windows [`Backend`].
#[derive(Debug, Default)]
pub struct WindowsBackend {
    _private: (),
}

impl WindowsBackend {
    /// A backend for this machine.
    pub fn new() -> Self {
        WindowsBackend::default()
    }
}

fn ip_version(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// `netsh` fails with "Element not found" / "The filename, directory name…"
/// (localized) for things already gone; we check existence instead of
/// parsing, by asking whether the interface is still there.
fn interface_exists(ifname: &str) -> Result<bool> {
    let name = format!("name={ifname}");
    Ok(run(
        NETSH,
        &["interface", "show", "interface", &name],
        "looking up an interface",
    )?
    .ok)
}

impl Backend for WindowsBackend {
    type Tun = TunDevice;

    fn create_tun(&mut self, plan: &NetPlan) -> Result<(TunDevice, String)> {
        let what = format!(
            "creating the Wintun adapter {} (needs Administrator rights and wintun.dll next to \
             warrend.exe — reinstall Warren if it is missing)",
            plan.tun_name
        );
        let dev = tun_rs::DeviceBuilder::new()
            .name(plan.tun_name.clone())
            .mtu(plan.mtu)
            .enable(true)
            .build_async()
            .map_err(|e| NetError::os(what.clone(), e))?;
        let name = dev.name().map_err(|e| NetError::os(what, e))?;
        Ok((dev, name))
    }

    fn add_address(&mut self, ifname: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let what = format!("adding address {addr}/{prefix} to {ifname}");
        let iface = format!("interface={ifname}");
        let address = format!("address={addr}/{prefix}");
        run_ok(
            NETSH,
            &[
                "interface",
                ip_version(&addr),
                "add",
                "address",
                &iface,
                &address,
                "store=active",
            ],
            &what,
        )
    }

    fn add_route(&mut self, ifname: &str, dest: IpAddr, prefix: u8) -> Result<()> {
        let what = format!("routing {dest}/{prefix} into {ifname}");
        let iface = format!("interface={ifname}");
        let net = format!("prefix={dest}/{prefix}");
        run_ok(
            NETSH,
            &[
                "interface",
                ip_version(&dest),
                "add",
                "route",
                &net,
                &iface,
                "store=active",
            ],
            &what,
        )
    }

    fn undo(&mut self, change: &Change) -> Result<()> {
        let (args, what): (Vec<String>, String) = match change {
            // The adapter goes when its handle closes.
            Change::Tun { .. } => return Ok(()),
            // DNS changes are undone by `dns::undo`, for every OS alike.
            Change::ResolvedLink { .. }
            | Change::ResolvConf { .. }
            | Change::Nrpt { .. }
            | Change::MacResolver { .. } => return crate::dns::undo(change),
            Change::Address {
                ifname,
                addr,
                prefix,
            } => (
                vec![
                    "interface".into(),
                    ip_version(addr).into(),
                    "delete".into(),
                    "address".into(),
                    format!("interface={ifname}"),
                    format!("address={addr}"),
                ],
                format!("removing address {addr}/{prefix} from {ifname}"),
            ),
            Change::Route {
                ifname,
                dest,
                prefix,
            } => (
                vec![
                    "interface".into(),
                    ip_version(dest).into(),
                    "delete".into(),
                    "route".into(),
                    format!("prefix={dest}/{prefix}"),
                    format!("interface={ifname}"),
                    "store=active".into(),
                ],
                format!("removing route {dest}/{prefix} from {ifname}"),
            ),
        };
        let ifname = match change {
            Change::Address { ifname, .. } | Change::Route { ifname, .. } => ifname,
            // Returned above; listed so a new kind of change can't slip by.
            Change::Tun { name, .. } => name,
            Change::ResolvedLink { .. }
            | Change::ResolvConf { .. }
            | Change::Nrpt { .. }
            | Change::MacResolver { .. } => return Ok(()),
        };
        if !interface_exists(ifname)? {
            return Ok(());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = run(NETSH, &args, &what)?;
        if ran.ok {
            return Ok(());
        }
        // Still listed after the failed delete means it really is stuck.
        Err(NetError::Os {
            what,
            source: std::io::Error::other(format!("netsh said: {}", ran.text)),
        })
    }
}
