//! [`NatLab`]: a laptop and a workspace, each behind its own NAT router, on a
//! "public" bridge that also holds two server hosts (for the coordinator and
//! the TURN relays). Everything lives in throwaway network namespaces that
//! are deleted on drop, even on failure; traffic never leaves them.
//!
//! ```text
//!   laptop 10.0.1.2 ─ lan│router-l│wan 203.0.113.2 ─┐
//!                                                  ├─ bridge (public) ─ server1 203.0.113.10
//!   workspace 10.0.2.2 ─ lan│router-w│wan 203.0.113.3 ─┘                ├ server2 203.0.113.11
//!                                                                      └ server3 203.0.113.12
//! ```
//!
//! The routers translate with nftables ([`Nat::EndpointIndependent`] is
//! Linux's plain `masquerade`, port-preserving with address-and-port
//! dependent filtering; [`Nat::Symmetric`] is `masquerade random`, a new
//! port per destination) and let in only replies, like a home router. The
//! router itself drops unsolicited datagrams too (its input chain): a packet
//! that reached it would leave a conntrack entry on the very tuple the
//! router's own mapping needs when both sides punch at once, and make
//! masquerade pick another port.
//! [`NatLab::set_nat`] changes a router's behaviour mid-test.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::netns::{ip, ns_command};
use crate::unique;

/// The public network's prefix length and the addresses on it.
pub const PUBLIC_PREFIX_LEN: u8 = 24;
pub const LAPTOP_ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const WORKSPACE_ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
pub const SERVER1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const SERVER2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
/// A third public host, so the coordinator need not share an address with a
/// relay that a test takes away.
pub const SERVER3: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);
/// The hosts behind the routers, and their routers' LAN addresses.
pub const LAPTOP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const LAPTOP_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const WORKSPACE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const WORKSPACE_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);

/// How a router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade`: one mapping per inside socket, whatever the
    /// destination; hole punching works between two of these.
    EndpointIndependent,
    /// `masquerade random`: a new mapping per destination; hole punching
    /// with it fails, only a relay helps.
    Symmetric,
}

/// Which router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Laptop,
    Workspace,
}

/// See the module documentation.
pub struct NatLab {
    pub public: String,
    pub laptop: String,
    pub laptop_router: String,
    pub workspace: String,
    pub workspace_router: String,
    pub server1: String,
    pub server2: String,
    pub server3: String,
}

impl NatLab {
    /// Builds the lab with both routers doing `laptop_nat` / `workspace_nat`.
    pub fn create(laptop_nat: Nat, workspace_nat: Nat) -> NatLab {
        let lab = NatLab {
            public: unique("wpub"),
            laptop: unique("wlap"),
            laptop_router: unique("wrtl"),
            workspace: unique("wwsp"),
            workspace_router: unique("wrtw"),
            server1: unique("wsv1"),
            server2: unique("wsv2"),
            server3: unique("wsv3"),
        };
        // From here on, drop deletes whatever part already exists.
        for ns in lab.all() {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &lab.public, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.public, "link", "set", "br0", "up"]);
        // Each public host: a veth whose far end is a bridge port. The port
        // names only need to be unique inside the public namespace.
        for (i, (ns, dev, addr)) in [
            (&lab.laptop_router, "wan", LAPTOP_ROUTER_WAN),
            (&lab.workspace_router, "wan", WORKSPACE_ROUTER_WAN),
            (&lab.server1, "eth0", SERVER1),
            (&lab.server2, "eth0", SERVER2),
            (&lab.server3, "eth0", SERVER3),
        ]
        .into_iter()
        .enumerate()
        {
            let port = format!("p{i}");
            ip(&[
                "-n",
                &lab.public,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                dev,
                "netns",
                ns,
            ]);
            ip(&["-n", &lab.public, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &lab.public, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/{PUBLIC_PREFIX_LEN}"),
                "dev",
                dev,
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        for (host, router, host_addr, gateway) in [
            (&lab.laptop, &lab.laptop_router, LAPTOP, LAPTOP_GATEWAY),
            (
                &lab.workspace,
                &lab.workspace_router,
                WORKSPACE,
                WORKSPACE_GATEWAY,
            ),
        ] {
            ip(&[
                "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                "netns", host,
            ]);
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                "lan",
            ]);
            ip(&["-n", router, "link", "set", "lan", "up"]);
            ip(&[
                "-n",
                host,
                "addr",
                "add",
                &format!("{host_addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", host, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                host,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ]);
            sysctl(router, "net.ipv4.ip_forward=1");
        }
        lab.set_nat(Side::Laptop, laptop_nat);
        lab.set_nat(Side::Workspace, workspace_nat);
        lab
    }

    fn all(&self) -> [&String; 8] {
        [
            &self.public,
            &self.laptop,
            &self.laptop_router,
            &self.workspace,
            &self.workspace_router,
            &self.server1,
            &self.server2,
            &self.server3,
        ]
    }

    /// The router namespace of `side`.
    pub fn router(&self, side: Side) -> &str {
        match side {
            Side::Laptop => &self.laptop_router,
            Side::Workspace => &self.workspace_router,
        }
    }

    /// Makes `side`'s router translate as `nat`, and forgets its existing
    /// mappings (old ones would otherwise linger for minutes).
    pub fn set_nat(&self, side: Side, nat: Nat) {
        let router = self.router(side);
        let masquerade = match nat {
            Nat::EndpointIndependent => "masquerade",
            Nat::Symmetric => "masquerade random",
        };
        // Chains on several lines: a one-line body needs `;` before `}`.
        let rules = format!(
            "flush ruleset\n\
             table ip lab {{\n\
               chain post {{\n\
                 type nat hook postrouting priority srcnat;\n\
                 oifname \"wan\" {masquerade}\n\
               }}\n\
               chain fw {{\n\
                 type filter hook forward priority filter; policy drop;\n\
                 ct state established,related accept\n\
                 iifname \"lan\" accept\n\
               }}\n\
               chain inbound {{\n\
                 type filter hook input priority filter; policy drop;\n\
                 ct state established,related accept\n\
                 iifname {{ \"lan\", \"lo\" }} accept\n\
               }}\n\
             }}\n"
        );
        let mut child = ns_command(router, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run nft in {router}: {e}"));
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("nft's stdin");
            stdin
                .write_all(rules.as_bytes())
                .expect("write the NAT rules to nft");
        }
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft in {router} failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `conntrack -F` fails harmlessly when the table is empty.
        let _ = ns_command(router, "conntrack")
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// `program` inside namespace `ns` (one of this lab's).
    pub fn cmd(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        ns_command(ns, program)
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn sysctl(ns: &str, setting: &str) {
    let out = ns_command(ns, "sysctl")
        .args(["-q", "-w", setting])
        .output()
        .unwrap_or_else(|e| panic!("run sysctl in {ns}: {e}"));
    assert!(
        out.status.success(),
        "sysctl {setting} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
