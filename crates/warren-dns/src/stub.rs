//! The stub itself: the name table, query handling and, in the resolv.conf
//! mode, the forwarder, behind one sans-IO type.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::forward::{ForwardError, ForwardedReply, Forwarder, Transmit};
use crate::name::{Lookup, NameError, Node, Table};
use crate::wire::{
    encode_header_only, encode_reply, parse_query, Answers, Query, Reject, Reply, Soa, CLASS_ANY,
    CLASS_IN, HEADER_LEN, MAX_MESSAGE, TYPE_A, TYPE_AAAA, TYPE_SOA,
};
use crate::{
    Rcode, Transport, ANSWER_TTL, EDNS_UDP_SIZE, FORWARD_TIMEOUT, MAX_PENDING, NEGATIVE_TTL,
};

/// How the stub is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The deployment's DNS suffix (`warren` by default); any case, trailing
    /// dot optional.
    pub suffix: String,
    /// `Some(resolvers)`: forward every query outside the suffix to them (the
    /// `/etc/resolv.conf` mode, where this stub is the system's resolver).
    /// `None`: answer REFUSED (split DNS, where the OS sends only the
    /// suffix here). Only queries from this machine are forwarded; see
    /// `local_addresses`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// This machine's own addresses besides loopback (the device's tunnel
    /// addresses, where the stub listens): queries from them or from
    /// loopback may be forwarded; from anywhere else (an agent through the
    /// tunnel, a LAN neighbour) a name outside the suffix is REFUSED.
    pub local_addresses: Vec<IpAddr>,
    /// TTL of positive answers.
    pub answer_ttl: u32,
    /// TTL and SOA MINIMUM of negative answers.
    pub negative_ttl: u32,
    /// How long a forwarded query waits for its upstream.
    pub forward_timeout: Duration,
    /// Most forwarded queries in flight.
    pub max_pending: usize,
}

impl Config {
    /// Split-DNS defaults for `suffix`: no forwarding, the crate's TTLs and
    /// limits.
    pub fn new(suffix: impl Into<String>) -> Self {
        Config {
            suffix: suffix.into(),
            upstreams: None,
            local_addresses: Vec::new(),
            answer_ttl: ANSWER_TTL,
            negative_ttl: NEGATIVE_TTL,
            forward_timeout: FORWARD_TIMEOUT,
            max_pending: MAX_PENDING,
        }
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back to the client, the same way it asked.
    Reply(Vec<u8>),
    /// The query is outside the suffix and was queued for an upstream: drain
    /// [`Stub::poll_transmit`]; the answer comes from
    /// [`Stub::handle_upstream`].
    Forward,
    /// Send nothing (not a query, or too short to answer).
    Drop,
}

/// The DNS stub: a name table under one suffix, answering queries from it
/// and, if configured, forwarding the rest. See the crate docs for the rules.
#[derive(Debug)]
pub struct Stub {
    table: Table,
    forwarder: Option<Forwarder>,
    /// Who may have names outside the suffix forwarded, besides loopback.
    local_addresses: Vec<IpAddr>,
    answer_ttl: u32,
    negative_ttl: u32,
    forward_timeout: Duration,
    max_pending: usize,
    seed: u64,
    /// SOA serial, bumped on every change to the names.
    serial: u32,
}

impl Stub {
    /// A stub for `config`, with forwarded-query IDs drawn from a generator
    /// seeded by the OS.
    pub fn new(config: Config) -> Result<Self, NameError> {
        Self::with_seed(config, rand::random())
    }

    /// As [`Stub::new`] with a fixed seed for the forwarded-query IDs, for
    /// deterministic tests.
    pub fn with_seed(config: Config, seed: u64) -> Result<Self, NameError> {
        let table = Table::new(&config.suffix)?;
        let forwarder = config
            .upstreams
            .map(|up| Forwarder::new(up, config.forward_timeout, config.max_pending, seed));
        Ok(Stub {
            table,
            forwarder,
            local_addresses: config.local_addresses,
            answer_ttl: config.answer_ttl,
            negative_ttl: config.negative_ttl,
            forward_timeout: config.forward_timeout,
            max_pending: config.max_pending,
            seed,
            serial: 1,
        })
    }

    /// Replaces every name with `names` (a snapshot). Names that are invalid
    /// or not under the suffix are skipped and returned with the reason; a
    /// name listed twice gets the union of its addresses.
    pub fn set_names<N, A>(
        &mut self,
        names: impl IntoIterator<Item = (N, A)>,
    ) -> Vec<(String, NameError)>
    where
        N: AsRef<str>,
        A: IntoIterator<Item = IpAddr>,
    {
        self.serial = self.serial.wrapping_add(1);
        self.table.set_names(names)
    }

    /// Adds `name` or replaces its addresses (a diff).
    pub fn upsert(
        &mut self,
        name: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), NameError> {
        self.serial = self.serial.wrapping_add(1);
        self.table.upsert(name, addrs)
    }

    /// Removes `name` (a diff); true if it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.serial = self.serial.wrapping_add(1);
        self.table.remove(name)
    }

    /// How many names are served.
    pub fn name_count(&self) -> usize {
        self.table.len()
    }

    /// Turns forwarding on (`Some`, replacing the upstream list) or off
    /// (`None`; queries in flight are forgotten and time out at their
    /// clients).
    pub fn set_upstreams(&mut self, upstreams: Option<Vec<SocketAddr>>) {
        match (upstreams, &mut self.forwarder) {
            (None, _) => self.forwarder = None,
            (Some(up), Some(forwarder)) => forwarder.set_upstreams(up),
            (Some(up), None) => {
                self.forwarder = Some(Forwarder::new(
                    up,
                    self.forward_timeout,
                    self.max_pending,
                    self.seed,
                ))
            }
        }
    }

    /// Forwarded queries waiting for an upstream.
    pub fn pending_forwards(&self) -> usize {
        self.forwarder.as_ref().map_or(0, Forwarder::pending)
    }

    /// Handles one query from `client` that arrived over `transport` (for
    /// TCP: one message without its length prefix).
    pub fn handle_query(
        &mut self,
        now: Instant,
        bytes: &[u8],
        transport: Transport,
        client: SocketAddr,
    ) -> Outcome {
        let query = match parse_query(bytes) {
            Ok(query) => query,
            Err(Reject::Drop) => return Outcome::Drop,
            Err(Reject::HeaderOnly { id, flags, rcode }) => {
                return Outcome::Reply(encode_header_only(id, flags, rcode))
            }
        };
        let limit = match transport {
            Transport::Udp => query
                .edns
                .map_or(512, |e| usize::from(e.payload.min(EDNS_UDP_SIZE))),
            Transport::Tcp => MAX_MESSAGE,
        };
        let lookup = self.table.lookup(query.lower_name(), query.label_offsets());
        let negative = |rcode, suffix_at| Reply {
            rcode,
            authoritative: true,
            answers: Answers::None,
            answer_ttl: self.answer_ttl,
            soa: Some(Soa {
                suffix_at,
                serial: self.serial,
                minimum: self.negative_ttl,
            }),
        };
        let reply = match lookup {
            // Only this machine's own queries are forwarded: anyone else who
            // reaches the stub (an agent through the tunnel, a LAN neighbour
            // on Linux, which accepts a local address on any interface)
            // would otherwise use the laptop as a resolver into its LAN's
            // DNS. Names under the suffix are answered for everyone: agents
            // learn them from the coordinator anyway.
            Lookup::Outside if !is_local(&self.local_addresses, client.ip()) => {
                plain(Rcode::Refused)
            }
            Lookup::Outside => {
                if let Some(forwarder) = &mut self.forwarder {
                    let question_end = HEADER_LEN + query.question.len();
                    match forwarder.forward(now, bytes, question_end, client, transport) {
                        Ok(()) => return Outcome::Forward,
                        Err(ForwardError::NoUpstream | ForwardError::TooManyPending) => {
                            plain(Rcode::ServFail)
                        }
                    }
                } else {
                    plain(Rcode::Refused)
                }
            }
            _ if query.edns.is_some_and(|e| e.version != 0) => plain(Rcode::BadVers),
            Lookup::Inside { .. } if query.qclass != CLASS_IN && query.qclass != CLASS_ANY => {
                plain(Rcode::Refused)
            }
            Lookup::Inside { suffix_at, node } => match node {
                Node::Apex if query.qtype == TYPE_SOA => Reply {
                    answers: Answers::Soa(Soa {
                        suffix_at,
                        serial: self.serial,
                        minimum: self.negative_ttl,
                    }),
                    soa: None,
                    ..negative(Rcode::NoError, suffix_at)
                },
                Node::Name(entry) => {
                    let answers = match query.qtype {
                        TYPE_A if !entry.v4.is_empty() => Answers::V4(&entry.v4),
                        TYPE_AAAA if !entry.v6.is_empty() => Answers::V6(&entry.v6),
                        _ => Answers::None,
                    };
                    if matches!(answers, Answers::None) {
                        negative(Rcode::NoError, suffix_at)
                    } else {
                        Reply {
                            answers,
                            soa: None,
                            ..negative(Rcode::NoError, suffix_at)
                        }
                    }
                }
                Node::Apex | Node::EmptyNonTerminal => negative(Rcode::NoError, suffix_at),
                Node::NxDomain => negative(Rcode::NxDomain, suffix_at),
            },
        };
        Outcome::Reply(encode_or_servfail(&query, &reply, limit))
    }

    /// The next query to send upstream, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.forwarder.as_mut()?.poll_transmit()
    }

    /// Handles a message from upstream `from` (without a TCP length prefix).
    /// Returns the reply for the client if it answers a pending query;
    /// anything else (late, duplicate, spoofed, garbage) is ignored.
    pub fn handle_upstream(
        &mut self,
        _now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<ForwardedReply> {
        self.forwarder.as_mut()?.handle_upstream(from, bytes)
    }

    /// When [`Stub::handle_timeout`] next has work: the earliest deadline of
    /// a forwarded query; `None` when nothing is in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.forwarder.as_ref()?.poll_timeout()
    }

    /// Forgets forwarded queries whose time is up (their clients see a
    /// timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(forwarder) = &mut self.forwarder {
            forwarder.handle_timeout(now);
        }
    }
}

/// Whether a query from `ip` comes from this machine. The tunnel's own
/// source check keeps a peer from sending as one of the device's addresses.
fn is_local(local_addresses: &[IpAddr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || local_addresses.contains(&ip)
}

/// A reply with no records and no authority: errors and refusals.
fn plain(rcode: Rcode) -> Reply<'static> {
    Reply {
        rcode,
        authoritative: false,
        answers: Answers::None,
        answer_ttl: 0,
        soa: None,
    }
}

fn encode_or_servfail(query: &Query<'_>, reply: &Reply<'_>, limit: usize) -> Vec<u8> {
    match encode_reply(query, reply, limit) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "DNS reply could not be encoded; answering SERVFAIL");
            match encode_reply(query, &plain(Rcode::ServFail), limit) {
                Ok(bytes) => bytes,
                // A reply without records is at most header + question + OPT,
                // far below any limit; kept as a fallback all the same.
                Err(_) => encode_header_only(query.id, query.flags, Rcode::ServFail),
            }
        }
    }
}
