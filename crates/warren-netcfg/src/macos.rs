//! macOS: a `utunN` device through tun-rs (the kernel picks N), addresses with
//! `ifconfig` and routes with `route`, the tools every macOS VPN client uses.
//! A utun device disappears with its file descriptor, taking its addresses
//! and routes with it, so recovery after a crash mostly clears the journal.

use std::net::IpAddr;

use crate::cmd::{run, run_ok};
use crate::error::{NetError, Result};
use crate::journal::Change;
use crate::plan::NetPlan;
use crate::{Backend, TunDevice};

/// The macOS [`Backend`].
#[derive(Debug, Default)]
pub struct MacBackend {
    _private: (),
}

impl MacBackend {
    /// A backend for this machine.
    pub fn new() -> Self {
        MacBackend::default()
    }
}

fn inet(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "-inet"
    } else {
        "-inet6"
    }
}

/// Whether `ifname` exists (ifconfig fails for an unknown interface).
fn exists(ifname: &str) -> Result<bool> {
    Ok(run("/sbin/ifconfig", &[ifname], "looking up an interface")?.ok)
}

impl Backend for MacBackend {
    type Tun = TunDevice;

    fn create_tun(&mut self, plan: &NetPlan) -> Result<(TunDevice, String)> {
        let what = "creating a utun device".to_string();
        // tun-rs would add a route for each address's subnet itself; the
        // routes here are exactly the journalled ones.
        let dev = tun_rs::DeviceBuilder::new()
            .mtu(plan.mtu)
            .enable(true)
            .with(|opt| {
                opt.associate_route(false);
            })
            .build_async()
            .map_err(|e| NetError::os(what.clone(), e))?;
        let name = dev.name().map_err(|e| NetError::os(what, e))?;
        Ok((dev, name))
    }

    fn add_address(&mut self, ifname: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let what = format!("adding address {addr}/{prefix} to {ifname}");
        let a = addr.to_string();
        let p = prefix.to_string();
        match addr {
            // utun is point-to-point: the destination is our own address.
            IpAddr::V4(_) => {
                let mask =
                    crate::plan::network_of(IpAddr::V4(std::net::Ipv4Addr::BROADCAST), prefix)
                        .to_string();
                run_ok(
                    "/sbin/ifconfig",
                    &[ifname, "inet", &a, &a, "netmask", &mask, "alias"],
                    &what,
                )
            }
            IpAddr::V6(_) => run_ok(
                "/sbin/ifconfig",
                &[ifname, "inet6", &a, "prefixlen", &p, "alias"],
                &what,
            ),
        }
    }

    fn add_route(&mut self, ifname: &str, dest: IpAddr, prefix: u8) -> Result<()> {
        let what = format!("routing {dest}/{prefix} into {ifname}");
        let net = format!("{dest}/{prefix}");
        run_ok(
            "/sbin/route",
            &["-q", "-n", "add", inet(&dest), &net, "-interface", ifname],
            &what,
        )
    }

    fn undo(&mut self, change: &Change) -> Result<()> {
        match change {
            // Nothing to do: a utun device lives as long as its descriptor.
            Change::Tun { .. } => Ok(()),
            // DNS changes are undone by `dns::undo`, for every OS alike.
            Change::ResolvedLink { .. }
            | Change::ResolvConf { .. }
            | Change::Nrpt { .. }
            | Change::MacResolver { .. } => crate::dns::undo(change),
            Change::Address {
                ifname,
                addr,
                prefix,
            } => {
                if !exists(ifname)? {
                    return Ok(());
                }
                let fam = if addr.is_ipv4() { "inet" } else { "inet6" };
                let a = addr.to_string();
                let ran = run(
                    "/sbin/ifconfig",
                    &[ifname, fam, &a, "-alias"],
                    &format!("removing address {addr}/{prefix}"),
                )?;
                if ran.ok || ran.text.contains("Can't assign requested address") {
                    Ok(())
                } else {
                    run_ok(
                        "/sbin/ifconfig",
                        &[ifname, fam, &a, "-alias"],
                        "removing an address",
                    )
                }
            }
            Change::Route {
                ifname,
                dest,
                prefix,
            } => {
                let net = format!("{dest}/{prefix}");
                let what = format!("removing route {net} from {ifname}");
                if !exists(ifname)? {
                    return Ok(());
                }
                let ran = run(
                    "/sbin/route",
                    &["-q", "-n", "delete", inet(dest), &net, "-interface", ifname],
                    &what,
                )?;
                if ran.ok || ran.text.contains("not in table") {
                    Ok(())
                } else {
                    Err(NetError::Os {
                        what,
                        source: std::io::Error::other(format!("route said: {}", ran.text)),
                    })
                }
            }
        }
    }
}
