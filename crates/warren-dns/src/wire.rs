//! Reading queries and writing replies in DNS wire format (RFC 1035 §4).
//!
//! The header and the question are read by hand: they are fixed-layout, and
//! keeping the question as a borrowed slice lets the reply copy it verbatim
//! (same case, same bytes) and point its records' owner names at it. Records
//! after the question, normally a single OPT, go through `hickory-proto`'s
//! record decoder, which validates them fully. Replies are written straight
//! into one buffer sized up front.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::Edns;
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::name::MAX_NAME_WIRE;
use crate::{Rcode, EDNS_UDP_SIZE};

pub(crate) const HEADER_LEN: usize = 12;

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const CLASS_ANY: u16 = 255;

/// The largest DNS message (the TCP length prefix is 16 bits).
pub(crate) const MAX_MESSAGE: usize = 65535;

/// What a query's EDNS OPT record said.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdnsInfo {
    /// Requestor's UDP payload size, already raised to at least 512.
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query that parsed, borrowing from the datagram.
#[derive(Debug)]
pub(crate) struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    /// The question section exactly as received: name, type, class.
    pub question: &'a [u8],
    /// Lowercase copy of the question name in wire form.
    pub lower: [u8; MAX_NAME_WIRE],
    pub name_len: usize,
    /// Offsets of each label in the name, the root label last.
    pub labels: [u8; 128],
    pub label_count: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsInfo>,
}

impl Query<'_> {
    pub fn lower_name(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }

    pub fn label_offsets(&self) -> &[u8] {
        &self.labels[..self.label_count]
    }
}

/// Why a message got no normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Not answerable at all: too short for a header, or a response.
    Drop,
    /// Answer with this code and only the header.
    HeaderOnly { id: u16, flags: u16, rcode: Rcode },
}

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Parses a query; see the crate docs for which rule gives which answer.
pub(crate) fn parse_query(bytes: &[u8]) -> Result<Query<'_>, Reject> {
    if bytes.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let id = read_u16(bytes, 0);
    let flags = read_u16(bytes, 2);
    if flags & QR != 0 {
        return Err(Reject::Drop);
    }
    let header_only = |rcode| Reject::HeaderOnly { id, flags, rcode };
    if flags & OPCODE_MASK != 0 {
        return Err(header_only(Rcode::NotImp));
    }
    if read_u16(bytes, 4) != 1 {
        return Err(header_only(Rcode::FormErr));
    }
    let formerr = header_only(Rcode::FormErr);

    let mut lower = [0u8; MAX_NAME_WIRE];
    let mut labels = [0u8; 128];
    let mut label_count = 0;
    let mut at = HEADER_LEN;
    loop {
        let len = *bytes.get(at).ok_or(formerr)? as usize;
        let offset = at - HEADER_LEN;
        // Compression pointers (0xC0) and the obsolete extended label types
        // have no business in a query's question: there is nothing before it
        // to point at.
        if len & 0xC0 != 0 || offset + 1 + len > MAX_NAME_WIRE {
            return Err(formerr);
        }
        let label = bytes.get(at + 1..at + 1 + len).ok_or(formerr)?;
        // At most 128 labels fit in 255 octets (127 one-octet labels + root).
        labels[label_count] = offset as u8;
        label_count += 1;
        lower[offset] = len as u8;
        for (dst, src) in lower[offset + 1..offset + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let name_len = at - HEADER_LEN;
    let fixed = bytes.get(at..at + 4).ok_or(formerr)?;
    let qtype = read_u16(fixed, 0);
    let qclass = read_u16(fixed, 2);
    at += 4;
    let question = &bytes[HEADER_LEN..at];

    let records = read_u16(bytes, 6) as usize + read_u16(bytes, 8) as usize;
    let additional = read_u16(bytes, 10) as usize;
    let edns = if records + additional == 0 {
        None
    } else {
        read_records(bytes, at, records, additional).map_err(|()| formerr)?
    };

    Ok(Query {
        id,
        flags,
        question,
        lower,
        name_len,
        labels,
        label_count,
        qtype,
        qclass,
        edns,
    })
}

/// Decodes every record after the question and returns the EDNS OPT, if
/// any. Each record takes at least 11 bytes, so the loop is bounded by the
/// message length whatever the counts claim.
fn read_records(
    bytes: &[u8],
    at: usize,
    records: usize,
    additional: usize,
) -> Result<Option<EdnsInfo>, ()> {
    let at = u16::try_from(at).map_err(|_| ())?;
    let mut decoder = BinDecoder::new(bytes).clone(at);
    let mut edns = None;
    for i in 0..records + additional {
        let record = Record::read(&mut decoder).map_err(|_| ())?;
        if record.record_type() == RecordType::OPT {
            // RFC 6891 §6.1.1: one OPT, in the additional section only.
            if i < records || edns.is_some() {
                return Err(());
            }
            let opt = Edns::from(&record);
            edns = Some(EdnsInfo {
                payload: opt.max_payload().max(512),
                version: opt.version(),
                dnssec_ok: opt.flags().dnssec_ok,
            });
        }
    }
    Ok(edns)
}

/// The SOA put in negative answers: owner is the suffix (a pointer into the
/// question), the rest synthetic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Soa {
    /// Offset of the suffix's first label within the question name.
    pub suffix_at: usize,
    pub serial: u32,
    pub minimum: u32,
}

/// Records of an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answers<'a> {
    None,
    V4(&'a [Ipv4Addr]),
    V6(&'a [Ipv6Addr]),
    /// The zone's SOA as the answer to an SOA query at the apex.
    Soa(Soa),
}

impl Answers<'_> {
    fn count(&self) -> usize {
        match self {
            Answers::None => 0,
            Answers::V4(a) => a.len(),
            Answers::V6(a) => a.len(),
            Answers::Soa(_) => 1,
        }
    }

    fn wire_len(&self) -> usize {
        match self {
            Answers::None => 0,
            Answers::V4(a) => a.len() * (12 + 4),
            Answers::V6(a) => a.len() * (12 + 16),
            Answers::Soa(_) => SOA_RR_LEN,
        }
    }
}

/// Owner pointer (2) + type, class, TTL, rdlength (10) + MNAME pointer (2)
/// + RNAME "hostmaster" label and pointer (1 + 10 + 2) + five counters (20).
const SOA_RR_LEN: usize = 2 + 10 + 2 + 13 + 20;
const OPT_RR_LEN: usize = 11;

/// A reply to a parsed query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply<'a> {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub answers: Answers<'a>,
    pub answer_ttl: u32,
    pub soa: Option<Soa>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    #[error("reply of {0} bytes exceeds the 65535-byte DNS message limit")]
    TooLarge(usize),
}

fn reply_flags(query_flags: u16, authoritative: bool, truncated: bool, rcode: Rcode) -> u16 {
    let mut flags = QR | RA | (query_flags & (RD | CD)) | ((rcode as u16) & 0x000F);
    if authoritative {
        flags |= AA;
    }
    if truncated {
        flags |= TC;
    }
    flags
}

fn push_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn push_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn push_header(buf: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    push_u16(buf, id);
    push_u16(buf, flags);
    for c in counts {
        push_u16(buf, c);
    }
}

/// Our OPT record: payload size, extended rcode bits, version 0, DO echoed
/// (RFC 3225 §3), no options.
fn push_opt(buf: &mut Vec<u8>, rcode: Rcode, dnssec_ok: bool) {
    buf.push(0);
    push_u16(buf, TYPE_OPT);
    push_u16(buf, EDNS_UDP_SIZE);
    buf.push(((rcode as u16) >> 4) as u8);
    buf.push(0);
    push_u16(buf, if dnssec_ok { 0x8000 } else { 0 });
    push_u16(buf, 0);
}

fn push_soa(buf: &mut Vec<u8>, soa: &Soa, ttl: u32) {
    let owner = 0xC000 | (HEADER_LEN + soa.suffix_at) as u16;
    push_u16(buf, owner);
    push_u16(buf, TYPE_SOA);
    push_u16(buf, CLASS_IN);
    push_u32(buf, ttl);
    push_u16(buf, (SOA_RR_LEN - 12) as u16);
    // MNAME: the zone itself (there is no real primary).
    push_u16(buf, owner);
    // RNAME: hostmaster.<zone>.
    buf.push(10);
    buf.extend_from_slice(b"hostmaster");
    push_u16(buf, owner);
    push_u32(buf, soa.serial);
    push_u32(buf, 3600); // refresh
    push_u32(buf, 600); // retry
    push_u32(buf, 86400); // expire
    push_u32(buf, soa.minimum);
}

/// Writes the reply to `query`, dropping the answers and setting TC if it
/// would exceed `limit` bytes.
pub(crate) fn encode_reply(
    query: &Query<'_>,
    reply: &Reply<'_>,
    limit: usize,
) -> Result<Vec<u8>, EncodeError> {
    let opt_len = if query.edns.is_some() { OPT_RR_LEN } else { 0 };
    let soa_len = if reply.soa.is_some() { SOA_RR_LEN } else { 0 };
    let base = HEADER_LEN + query.question.len() + opt_len;
    let full = base + reply.answers.wire_len() + soa_len;
    let count = reply.answers.count();
    // Counts are u16 on the wire; a count that does not fit can only come
    // with a message over the size limit, which is refused just below.
    let fits = full <= limit && count <= usize::from(u16::MAX);
    if !fits && limit >= MAX_MESSAGE {
        return Err(EncodeError::TooLarge(full));
    }
    // Truncation keeps header, question and OPT: at most 12 + 259 + 11
    // bytes, always under the 512-byte floor of every limit.
    let (answers, soa) = if fits {
        (reply.answers, reply.soa)
    } else {
        (Answers::None, None)
    };
    let mut buf = Vec::with_capacity(if fits { full } else { base });
    let flags = reply_flags(query.flags, reply.authoritative, !fits, reply.rcode);
    push_header(
        &mut buf,
        query.id,
        flags,
        [
            1,
            answers.count() as u16,
            u16::from(soa.is_some()),
            u16::from(query.edns.is_some()),
        ],
    );
    buf.extend_from_slice(query.question);
    let ttl_class = |buf: &mut Vec<u8>, rtype: u16, rdlen: u16| {
        push_u16(buf, 0xC000 | HEADER_LEN as u16);
        push_u16(buf, rtype);
        push_u16(buf, CLASS_IN);
        push_u32(buf, reply.answer_ttl);
        push_u16(buf, rdlen);
    };
    match answers {
        Answers::None => {}
        Answers::V4(addrs) => {
            for a in addrs {
                ttl_class(&mut buf, TYPE_A, 4);
                buf.extend_from_slice(&a.octets());
            }
        }
        Answers::V6(addrs) => {
            for a in addrs {
                ttl_class(&mut buf, TYPE_AAAA, 16);
                buf.extend_from_slice(&a.octets());
            }
        }
        Answers::Soa(soa) => push_soa(&mut buf, &soa, reply.answer_ttl),
    }
    if let Some(soa) = &soa {
        push_soa(&mut buf, soa, soa.minimum);
    }
    if let Some(edns) = &query.edns {
        push_opt(&mut buf, reply.rcode, edns.dnssec_ok);
    }
    Ok(buf)
}

/// A reply carrying only the header: for messages whose question cannot be
/// trusted, so nothing beyond the ID and flags is reflected.
pub(crate) fn encode_header_only(id: u16, query_flags: u16, rcode: Rcode) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    // Keep the opcode so a NOTIMP says which opcode it refuses.
    let flags = reply_flags(query_flags, false, false, rcode) | (query_flags & OPCODE_MASK);
    push_header(&mut buf, id, flags, [0; 4]);
    buf
}
