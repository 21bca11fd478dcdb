//! Linux: the TUN device through tun-rs (`/dev/net/tun`), addresses and routes
//! through rtnetlink messages we send and acknowledge ourselves, so every
//! error comes back as the kernel's errno and "already gone" can be told from
//! a real failure.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::constants::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::error::{NetError, Result};
use crate::journal::Change;
use crate::plan::NetPlan;
use crate::{Backend, TunDevice};

/// The Linux [`Backend`]. Creates a non-persistent TUN: the kernel removes it
/// (and its addresses and routes) when the last file descriptor closes, so a
/// crashed helper leaves at most a journal to clear.
#[derive(Debug)]
pub struct LinuxBackend {
    offload: bool,
}

impl Default for LinuxBackend {
    fn default() -> Self {
        // Offload on: one read per TCP super-segment instead of one per
        // packet is most of the helper's throughput (issue 3).
        LinuxBackend { offload: true }
    }
}

impl LinuxBackend {
    /// A backend for the current network namespace, creating TUNs with
    /// offload (see [`LinuxBackend::with_offload`]).
    pub fn new() -> Self {
        LinuxBackend::default()
    }

    /// Whether to create the TUN with `IFF_VNET_HDR` so the kernel hands over
    /// and takes GSO/GRO super-packets (TSO/USO on reads, coalesced writes).
    /// With it every read and write carries a virtio header, so the data
    /// plane must use tun-rs's `recv_multiple`/`send_multiple` (as the
    /// helper's does); plain `recv`/`send` see the header. On by default;
    /// `with_offload(false)` gives a plain one-packet-per-read TUN.
    pub fn with_offload(mut self, offload: bool) -> Self {
        self.offload = offload;
        self
    }
}

/// Interface index of `name`, or `None` if there is no such interface.
fn if_index(name: &str) -> Result<Option<u32>> {
    let c = std::ffi::CString::new(name).map_err(|_| {
        NetError::InvalidPlan(format!("interface name {name:?} contains a NUL byte"))
    })?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(NetError::os(format!("looking up interface {name}"), e));
    }
    Ok(Some(index))
}

fn require_index(name: &str) -> Result<u32> {
    if_index(name)?.ok_or_else(|| {
        NetError::os(
            format!("finding interface {name}"),
            io::Error::from_raw_os_error(libc::ENODEV),
        )
    })
}

/// Sends one rtnetlink request with NLM_F_ACK and waits for the kernel's
/// answer, handing every non-ACK reply to `on_reply`; returns the errno the
/// kernel reported, if any.
fn request_with(
    message: RouteNetlinkMessage,
    extra_flags: u16,
    mut on_reply: impl FnMut(RouteNetlinkMessage),
) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    set_recv_timeout(&socket, NETLINK_TIMEOUT)?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(message));
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;

    // A single (non-dump) request gets its answer and then one ACK/NACK; the
    // loop is bounded in case the kernel ever splits them oddly.
    for _ in 0..16 {
        let (reply, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < reply.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Error(err) => {
                    return match err.code {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::InnerMessage(inner) => on_reply(inner),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the kernel sent no acknowledgement for a netlink request",
    ))
}

/// The kernel answers at once; this only bounds the wait if it never does.
const NETLINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn set_recv_timeout(socket: &Socket, timeout: std::time::Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: the fd is a live socket owned by `socket`, and `tv` is a valid
    // timeval whose size we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn request(message: RouteNetlinkMessage, extra_flags: u16) -> io::Result<()> {
    request_with(message, extra_flags, |_| {})
}

/// Whether interface `index` is a TUN device. Recovery deletes only TUN
/// devices, so an unrelated interface that took the journalled name is safe.
fn is_tun(index: u32) -> Result<bool> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    let mut tun = false;
    let res = request_with(RouteNetlinkMessage::GetLink(m), 0, |reply| {
        if let RouteNetlinkMessage::NewLink(link) = reply {
            for attr in &link.attributes {
                if let LinkAttribute::LinkInfo(infos) = attr {
                    tun |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Tun)));
                }
            }
        }
    });
    match res {
        Ok(()) => Ok(tun),
        Err(e) if is_errno(&e, &[libc::ENODEV]) => Ok(false),
        Err(e) => Err(NetError::os("inspecting a network interface", e)),
    }
}

fn family(addr: &IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn address_message(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&addr);
    m.header.prefix_len = prefix;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Address(addr));
    if addr.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(addr));
    } else {
        // Nobody else can hold this address on a point-to-point TUN, and
        // duplicate-address detection would keep it unusable for a second.
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    m
}

fn route_message(index: u32, dest: IpAddr, prefix: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&dest);
    m.header.destination_prefix_length = prefix;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    // What `ip route add PREFIX dev warren0` does: a device route with no
    // gateway is link-scoped for IPv4; IPv6 routes are always universe.
    m.header.scope = if dest.is_ipv4() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dest)));
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

fn is_errno(e: &io::Error, codes: &[i32]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

impl Backend for LinuxBackend {
    type Tun = TunDevice;

    fn create_tun(&mut self, plan: &NetPlan) -> Result<(TunDevice, String)> {
        let what = format!("creating the TUN device {}", plan.tun_name);
        if if_index(&plan.tun_name)?.is_some() {
            // Attaching to a foreign interface of the same name would make its
            // later removal ours; refuse instead.
            return Err(NetError::NameInUse {
                name: plan.tun_name.clone(),
            });
        }
        let offload = self.offload;
        let dev = tun_rs::DeviceBuilder::new()
            .name(plan.tun_name.clone())
            .mtu(plan.mtu)
            .enable(true)
            .with(|opt| {
                opt.offload(offload);
            })
            .build_async()
            .map_err(|e| {
                if is_errno(&e, &[libc::EBUSY]) {
                    NetError::NameInUse {
                        name: plan.tun_name.clone(),
                    }
                } else {
                    NetError::os(what.clone(), e)
                }
            })?;
        let name = dev.name().map_err(|e| NetError::os(what, e))?;
        Ok((dev, name))
    }

    fn add_address(&mut self, ifname: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let what = format!("adding address {addr}/{prefix} to {ifname}");
        let index = require_index(ifname)?;
        match request(
            RouteNetlinkMessage::NewAddress(address_message(index, addr, prefix)),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(()) => Ok(()),
            // Already there (e.g. re-applied after a partial rollback): the
            // state we want.
            Err(e) if is_errno(&e, &[libc::EEXIST]) => Ok(()),
            Err(e) => Err(NetError::os(what, e)),
        }
    }

    fn add_route(&mut self, ifname: &str, dest: IpAddr, prefix: u8) -> Result<()> {
        let what = format!("routing {dest}/{prefix} into {ifname}");
        let index = require_index(ifname)?;
        request(
            RouteNetlinkMessage::NewRoute(route_message(index, dest, prefix)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| {
            if is_errno(&e, &[libc::EEXIST]) {
                NetError::Os {
                    what: format!(
                        "{what}: another route for {dest}/{prefix} already exists (another VPN?) — \
                         remove it (`ip route del {dest}/{prefix}`) and reconnect"
                    ),
                    source: e,
                }
            } else {
                NetError::os(what, e)
            }
        })
    }

    fn undo(&mut self, change: &Change) -> Result<()> {
        match change {
            Change::Tun { name, .. } => {
                let Some(index) = if_index(name)? else {
                    return Ok(());
                };
                if !is_tun(index)? {
                    tracing::warn!(
                        interface = %name,
                        "journalled TUN name now belongs to another kind of interface; leaving it alone"
                    );
                    return Ok(());
                }
                let mut m = LinkMessage::default();
                m.header.index = index;
                match request(RouteNetlinkMessage::DelLink(m), 0) {
                    Ok(()) => Ok(()),
                    Err(e) if is_errno(&e, &[libc::ENODEV]) => Ok(()),
                    Err(e) => Err(NetError::os(format!("removing interface {name}"), e)),
                }
            }
            Change::Address {
                ifname,
                addr,
                prefix,
            } => {
                // The address went with its interface.
                let Some(index) = if_index(ifname)? else {
                    return Ok(());
                };
                match request(
                    RouteNetlinkMessage::DelAddress(address_message(index, *addr, *prefix)),
                    0,
                ) {
                    Ok(()) => Ok(()),
                    Err(e) if is_errno(&e, &[libc::EADDRNOTAVAIL, libc::ENODEV]) => Ok(()),
                    Err(e) => Err(NetError::os(
                        format!("removing address {addr}/{prefix} from {ifname}"),
                        e,
                    )),
                }
            }
            Change::Route {
                ifname,
                dest,
                prefix,
            } => {
                // A device route goes with its device; and with the interface
                // gone we must not delete some other interface's route.
                let Some(index) = if_index(ifname)? else {
                    return Ok(());
                };
                match request(
                    RouteNetlinkMessage::DelRoute(route_message(index, *dest, *prefix)),
                    0,
                ) {
                    Ok(()) => Ok(()),
                    Err(e) if is_errno(&e, &[libc::ESRCH, libc::ENOENT, libc::ENODEV]) => Ok(()),
                    Err(e) => Err(NetError::os(
                        format!("removing route {dest}/{prefix} from {ifname}"),
                        e,
                    )),
                }
            }
            // DNS changes are undone by `dns::undo`, for every OS alike.
            Change::ResolvedLink { .. }
            | Change::ResolvConf { .. }
            | Change::Nrpt { .. }
            | Change::MacResolver { .. } => crate::dns::undo(change),
        }
    }
}
