//! Sans-IO DNS stub for a Warren deployment's names.
//!
//! The helper answers `<agent>.<workspace>.<owner>.<suffix>` and
//! `<workspace>.<suffix>` from this stub, on a tunnel address, over UDP and
//! TCP. There are no sockets, clocks or tasks in here: a driver hands in
//! bytes and the current [`Instant`](std::time::Instant) and sends what comes
//! out (the DESIGN's sans-IO principle), so every rule below is tested
//! deterministically.
//!
//! # What is answered, and why
//!
//! Inside the suffix (the zone, including the suffix itself) the stub is
//! authoritative (AA set):
//!
//! - `A`/`AAAA` of a known name: its addresses, TTL [`ANSWER_TTL`].
//! - Any other type of a known name (HTTPS, SVCB, MX, TXT, ANY, ...): NOERROR
//!   with no records ("NODATA"), so clients that try HTTPS/SVCB first fall
//!   back to A/AAAA at once instead of waiting or failing.
//! - An unknown name: NXDOMAIN.
//! - An empty non-terminal (`alice.warren` when only `main.ws.alice.warren`
//!   exists): NODATA, never NXDOMAIN, because RFC 8020 lets a resolver treat
//!   NXDOMAIN as "nothing exists below this name" and drop the whole subtree.
//! - Negative answers carry a synthetic SOA of the suffix in the authority
//!   section (RFC 2308 §3), with a short minimum TTL ([`NEGATIVE_TTL`]) so a
//!   caching resolver learns about new workspaces quickly.
//! - A class other than IN (or ANY): REFUSED; the zone only exists in IN.
//!
//! The reply echoes the question byte for byte (same case, which resolvers
//! using 0x20 randomisation check), the ID, RD and CD, and sets QR and RA.
//!
//! Outside the suffix the stub either forwards (the `/etc/resolv.conf` mode,
//! where it is the system's only resolver) or answers REFUSED (the
//! split-DNS modes, where the OS sends it only the suffix and anything else
//! is a mistake). It forwards only for this machine: queries from loopback
//! or from [`Config::local_addresses`]; anyone else reaching the stub (an
//! agent through the tunnel) gets REFUSED for names outside the suffix, so
//! the laptop is never an open resolver into its LAN's DNS.
//!
//! # Malformed and unusual messages
//!
//! - Shorter than the 12-byte header: dropped (there is no ID to answer).
//! - A response (QR=1): dropped, so two DNS speakers can never ping-pong.
//! - Opcode other than QUERY: NOTIMP (RFC 1035 §4.1.1).
//! - QDCOUNT other than 1, a question or record that does not parse, a
//!   compression pointer in the question, two OPT records: FORMERR with the
//!   same ID and only the header, so nothing of the junk is ever reflected.
//! - EDNS (RFC 6891): a query with OPT gets OPT back advertising
//!   [`EDNS_UDP_SIZE`]; an EDNS version other than 0 gets BADVERS.
//! - Over UDP a reply larger than the client's limit (its EDNS payload size,
//!   at least 512, at most [`EDNS_UDP_SIZE`]; 512 without EDNS) loses its
//!   answers and gets TC set (RFC 1035 §4.2.1, RFC 2181 §9): still a valid
//!   message, and the client retries over TCP. Over TCP the limit is 65535.
//! - A reply that cannot be encoded at all (over 65535 bytes): SERVFAIL.
//!
//! # Wire format
//!
//! Queries are parsed by hand up to the end of the question (the hot path;
//! the question is then copied into the reply verbatim), and any records
//! after it (normally just OPT) through `hickory-proto`'s record decoder.
//! Replies are written directly: header, the copied question, then records
//! whose owner is a compression pointer to the question name. `hickory-proto`
//! is also the independent parser every test checks replies with.
//!
//! # Driving it
//!
//! ```
//! use std::net::{IpAddr, SocketAddr};
//! use std::time::Instant;
//! use warren_dns::{Config, Outcome, Stub, Transport};
//!
//! let mut config = Config::new("warren");
//! // The resolv.conf mode; leave `None` for split DNS.
//! config.upstreams = Some(vec!["192.0.2.53:53".parse().unwrap()]);
//! let mut stub = Stub::new(config).unwrap();
//! // From the workspace directory: each agent's DNS names and addresses;
//! // a snapshot with `set_names`, diffs with `upsert` / `remove`.
//! let addr: IpAddr = "100.64.0.5".parse().unwrap();
//! stub.set_names([("main.api.alice.warren", vec![addr]), ("api.warren", vec![addr])]);
//!
//! # let datagram = [0u8; 12];
//! let client: SocketAddr = "100.64.0.1:40000".parse().unwrap();
//! match stub.handle_query(Instant::now(), &datagram, Transport::Udp, client) {
//!     Outcome::Reply(bytes) => { /* send `bytes` to `client` */ }
//!     Outcome::Forward => {
//!         while let Some(tx) = stub.poll_transmit() { /* send `tx.bytes` to `tx.to` */ }
//!     }
//!     Outcome::Drop => {}
//! }
//! // Datagrams from an upstream go to `handle_upstream`, which hands back
//! // the reply for the client; `poll_timeout` says when to call
//! // `handle_timeout`. `examples/serve.rs` is a complete (blocking, UDP
//! // only) driver.
//! ```

mod forward;
mod name;
mod stub;
pub mod tcp;
mod wire;

pub use forward::{ForwardedReply, Transmit};
pub use name::NameError;
pub use stub::{Config, Outcome, Stub};
pub use tcp::{frame, TcpFramer, MAX_TCP_MESSAGE};

use std::time::Duration;

/// TTL of positive answers. Short, because names follow workspace diffs and a
/// removed agent should stop resolving within seconds even through a cache.
pub const ANSWER_TTL: u32 = 5;

/// TTL and SOA MINIMUM of negative answers (RFC 2308). Shorter still: a
/// workspace created a moment ago must resolve at once, even through a
/// resolver that cached the NXDOMAIN.
pub const NEGATIVE_TTL: u32 = 1;

/// The UDP payload size this stub advertises in EDNS and the most it sends
/// over UDP: 1232 bytes fit an IPv6 minimum-MTU packet (1280) without
/// fragmentation (DNS Flag Day 2020) and the tunnel's MTU of 1280.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// A forwarded query with no answer after this long is forgotten; the client
/// sees a timeout, as it would have from the upstream itself.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Most forwarded queries waiting for an upstream at once; past it, new
/// outside queries get SERVFAIL so a flood cannot grow memory.
pub const MAX_PENDING: usize = 4096;

/// How a query arrived, which decides the reply's size limit and how a
/// forwarded query must travel upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One datagram: the reply is limited by the query's EDNS payload size
    /// (512 without EDNS) and truncated with TC set beyond it.
    Udp,
    /// A DNS-over-TCP stream (RFC 7766): bytes here exclude the 2-byte
    /// length prefix, which the driver adds and strips; limit 65535.
    Tcp,
}

/// DNS response codes used here (RFC 1035 §4.1.1, RFC 6891 §9 for BADVERS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Rcode {
    /// NOERROR
    NoError = 0,
    /// FORMERR
    FormErr = 1,
    /// SERVFAIL
    ServFail = 2,
    /// NXDOMAIN
    NxDomain = 3,
    /// NOTIMP
    NotImp = 4,
    /// REFUSED
    Refused = 5,
    /// BADVERS (extended, EDNS only)
    BadVers = 16,
}
