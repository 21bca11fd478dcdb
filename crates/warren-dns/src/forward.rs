//! Forwarding outside queries to the resolvers configured before Warren (the
//! `/etc/resolv.conf` mode), sans-IO.
//!
//! # The contract with the driver
//!
//! - [`Stub::handle_query`](crate::Stub::handle_query) returns
//!   [`Outcome::Forward`](crate::Outcome::Forward) and queues a
//!   [`Transmit`]: the client's query, byte for byte, except for a fresh
//!   random ID (so replies cannot be confused between clients that chose the
//!   same ID, and an off-path attacker has to guess it, RFC 5452).
//! - The driver drains [`Stub::poll_transmit`](crate::Stub::poll_transmit)
//!   and sends each to `to`: over UDP from an unconnected socket with a
//!   random source port if `transport` is UDP; if it is TCP (the client
//!   asked over TCP, usually after a truncated UDP answer) it opens a TCP
//!   connection to `to`, writes the 2-byte length prefix and the bytes, and
//!   reads one length-prefixed reply.
//! - Whatever comes back goes to
//!   [`Stub::handle_upstream`](crate::Stub::handle_upstream) without the TCP
//!   length prefix. A reply that matches a pending query (ID, source address,
//!   question) yields a [`ForwardedReply`]: the upstream's bytes unchanged
//!   but for the client's own ID, for the driver to send to `client` over
//!   `transport` (for TCP: on the connection that client address came from).
//! - [`Stub::poll_timeout`](crate::Stub::poll_timeout) /
//!   [`Stub::handle_timeout`](crate::Stub::handle_timeout): a query without a
//!   reply after [`FORWARD_TIMEOUT`](crate::FORWARD_TIMEOUT) is forgotten and
//!   the client gets nothing: a timeout stays a timeout, as it would have
//!   been without Warren in the path (the client's resolver library retries).
//!
//! # Choosing an upstream
//!
//! Queries go to the current upstream, initially the first one listed (the
//! order resolv.conf gave them, which is the order glibc tries them). When a
//! query sent to the current upstream times out, the next one in the list
//! becomes current, wrapping around; there are no per-query retries, since
//! the client retries on its own and a second copy would double the load on
//! an upstream that is merely slow.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::wire::{read_u16, HEADER_LEN};
use crate::Transport;

/// A query for the driver to send to an upstream resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The upstream resolver.
    pub to: SocketAddr,
    /// Send over UDP, or over a TCP connection with a length prefix.
    pub transport: Transport,
    /// The DNS message, without a TCP length prefix.
    pub bytes: Vec<u8>,
}

/// An upstream's reply, ready to go back to the client that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedReply {
    /// The client that sent the query.
    pub client: SocketAddr,
    /// How the client asked; answer the same way.
    pub transport: Transport,
    /// The upstream's reply with the client's ID restored.
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct Pending {
    client: SocketAddr,
    client_id: u16,
    transport: Transport,
    upstream: SocketAddr,
    /// The question as sent: the reply must carry the same one.
    question: Box<[u8]>,
    generation: u64,
}

/// Forwarded queries waiting for a reply.
#[derive(Debug)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    current: usize,
    timeout: Duration,
    max_pending: usize,
    /// Keyed by the ID sent upstream.
    pending: HashMap<u16, Pending>,
    /// Deadlines in the order they were set; with one timeout that is also
    /// the order they fall due. Entries answered early stay here until they
    /// reach the front or a compaction, recognised by their generation.
    deadlines: VecDeque<(Instant, u16, u64)>,
    transmits: VecDeque<Transmit>,
    next_generation: u64,
    rng: StdRng,
}

/// Why a query could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardError {
    NoUpstream,
    TooManyPending,
}

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        max_pending: usize,
        seed: u64,
    ) -> Self {
        Forwarder {
            upstreams,
            current: 0,
            timeout,
            // IDs are 16 bits; more pending queries than IDs cannot be told
            // apart.
            max_pending: max_pending.min(usize::from(u16::MAX) / 2),
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            transmits: VecDeque::new(),
            next_generation: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn set_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.upstreams = upstreams;
        self.current = 0;
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Queues `query` (already known to parse, with its question ending at
    /// `question_end`) for the current upstream.
    pub fn forward(
        &mut self,
        now: Instant,
        query: &[u8],
        question_end: usize,
        client: SocketAddr,
        transport: Transport,
    ) -> Result<(), ForwardError> {
        let upstream = *self
            .upstreams
            .get(self.current)
            .ok_or(ForwardError::NoUpstream)?;
        if self.pending.len() >= self.max_pending {
            return Err(ForwardError::TooManyPending);
        }
        // At most half the ID space is in use, so a random pick is free with
        // probability over 1/2; the scan after 32 misses only bounds the
        // loop.
        let mut id: u16 = self.rng.gen();
        let mut tries = 0;
        while self.pending.contains_key(&id) {
            tries += 1;
            id = if tries < 32 {
                self.rng.gen()
            } else {
                id.wrapping_add(1)
            };
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.pending.insert(
            id,
            Pending {
                client,
                client_id: read_u16(query, 0),
                transport,
                upstream,
                question: query[HEADER_LEN..question_end].into(),
                generation,
            },
        );
        self.deadlines
            .push_back((now + self.timeout, id, generation));
        let mut bytes = query.to_vec();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        self.transmits.push_back(Transmit {
            to: upstream,
            transport,
            bytes,
        });
        Ok(())
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Matches an upstream reply to its pending query.
    pub fn handle_upstream(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<ForwardedReply> {
        if bytes.len() < HEADER_LEN || bytes[2] & 0x80 == 0 {
            return None;
        }
        let id = read_u16(bytes, 0);
        let pending = self.pending.get(&id)?;
        if !same_endpoint(pending.upstream, from) || !same_question(bytes, &pending.question) {
            // Not the reply we are waiting for (late, spoofed or confused);
            // keep waiting for the real one.
            tracing::debug!(%from, "DNS reply from upstream does not match a pending query");
            return None;
        }
        let pending = self.pending.remove(&id)?;
        self.drop_answered_front();
        let mut out = bytes.to_vec();
        out[..2].copy_from_slice(&pending.client_id.to_be_bytes());
        Some(ForwardedReply {
            client: pending.client,
            transport: pending.transport,
            bytes: out,
        })
    }

    fn is_live(&self, id: u16, generation: u64) -> bool {
        self.pending
            .get(&id)
            .is_some_and(|p| p.generation == generation)
    }

    /// Pops deadlines of queries already answered off the front, so
    /// `poll_timeout` names a real deadline and an idle stub does not wake
    /// for nothing. Answers usually come in order, which keeps the queue
    /// short; the compaction bounds it when they do not.
    fn drop_answered_front(&mut self) {
        while let Some(&(_, id, generation)) = self.deadlines.front() {
            if self.is_live(id, generation) {
                break;
            }
            self.deadlines.pop_front();
        }
        if self.deadlines.len() > 2 * self.max_pending + 16 {
            let pending = &self.pending;
            self.deadlines.retain(|&(_, id, generation)| {
                pending.get(&id).is_some_and(|p| p.generation == generation)
            });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.front().map(|&(deadline, _, _)| deadline)
    }

    /// Forgets every query whose deadline has passed; rotates upstreams if
    /// the current one let a query time out.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if !self.is_live(id, generation) {
                continue;
            }
            if let Some(expired) = self.pending.remove(&id) {
                if self.upstreams.get(self.current) == Some(&expired.upstream)
                    && self.upstreams.len() > 1
                {
                    self.current = (self.current + 1) % self.upstreams.len();
                    tracing::warn!(
                        timed_out = %expired.upstream,
                        next = %self.upstreams[self.current],
                        "upstream DNS resolver did not answer; trying the next one"
                    );
                }
            }
        }
        self.drop_answered_front();
    }
}

/// Whether two socket addresses are the same endpoint, counting an
/// IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4
/// peer) as the IPv4 address it maps.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Whether the reply's question is the one sent, names compared without
/// case (RFC 4343) in case the upstream does not preserve it. A reply with no
/// question at all is accepted only as an error (some servers send FORMERR or
/// SERVFAIL without one).
fn same_question(reply: &[u8], sent: &[u8]) -> bool {
    match read_u16(reply, 4) {
        0 => reply[3] & 0x0F != 0,
        1 => reply
            .get(HEADER_LEN..HEADER_LEN + sent.len())
            .is_some_and(|q| {
                // The last four bytes are type and class: binary, exact.
                let name = sent.len() - 4;
                q[..name].eq_ignore_ascii_case(&sent[..name]) && q[name..] == sent[name..]
            }),
        _ => false,
    }
}
