//! Every answering and forwarding rule of the stub, checked by building
//! queries and parsing replies with `hickory-proto` as an independent
//! implementation of the wire format.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use warren_dns::{
    Config, Outcome, Stub, Transport, ANSWER_TTL, EDNS_UDP_SIZE, FORWARD_TIMEOUT, NEGATIVE_TTL,
};

const V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 5);
const V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x1, 0, 0, 0, 0, 0, 5);

fn client() -> SocketAddr {
    "100.64.0.1:40000".parse().unwrap()
}

fn upstream(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 53)
}

fn stub() -> Stub {
    stub_with(Config::new("warren"))
}

fn stub_with(config: Config) -> Stub {
    let mut stub = Stub::with_seed(config, 7).unwrap();
    let addrs = vec![IpAddr::V4(V4), IpAddr::V6(V6)];
    let rejected = stub.set_names([
        ("main.ws.alice.warren", addrs.clone()),
        ("ws.warren", addrs),
        (
            "v4only.ws.alice.warren",
            vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, 6))],
        ),
    ]);
    assert!(rejected.is_empty());
    stub
}

fn query_msg(name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::new();
    msg.set_id(0xBEEF)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    msg
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    query_msg(name, rtype).to_vec().unwrap()
}

fn with_edns(name: &str, rtype: RecordType, payload: u16, version: u8) -> Vec<u8> {
    let mut msg = query_msg(name, rtype);
    let mut edns = Edns::new();
    edns.set_max_payload(payload).set_version(version);
    msg.set_edns(edns);
    msg.to_vec().unwrap()
}

fn reply_bytes(stub: &mut Stub, bytes: &[u8], transport: Transport) -> Vec<u8> {
    match stub.handle_query(Instant::now(), bytes, transport, client()) {
        Outcome::Reply(reply) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask_over(stub: &mut Stub, bytes: &[u8], transport: Transport) -> Message {
    let reply = reply_bytes(stub, bytes, transport);
    let msg = Message::from_vec(&reply).expect("reply parses");
    // The question is echoed byte for byte.
    if msg.query_count() == 1 {
        let qlen = question_len(bytes);
        assert_eq!(reply[12..12 + qlen], bytes[12..12 + qlen]);
    }
    msg
}

/// The reply to a query from `from`, parsed.
fn ask_from(stub: &mut Stub, bytes: &[u8], transport: Transport, from: SocketAddr) -> Message {
    match stub.handle_query(Instant::now(), bytes, transport, from) {
        Outcome::Reply(reply) => Message::from_vec(&reply).expect("reply parses"),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(stub: &mut Stub, bytes: &[u8]) -> Message {
    ask_over(stub, bytes, Transport::Udp)
}

fn question_len(bytes: &[u8]) -> usize {
    let mut at = 12;
    while bytes[at] != 0 {
        at += 1 + bytes[at] as usize;
    }
    at + 1 + 4 - 12
}

fn addrs(msg: &Message) -> Vec<IpAddr> {
    msg.answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

/// Checks the shape every authoritative answer has.
fn assert_authoritative(msg: &Message) {
    assert_eq!(msg.id(), 0xBEEF);
    assert_eq!(msg.message_type(), MessageType::Response);
    assert!(msg.authoritative());
    assert!(msg.recursion_available());
    assert!(msg.recursion_desired());
    assert!(!msg.truncated());
}

/// Checks a negative answer's SOA.
fn assert_soa(msg: &Message) {
    assert!(msg.answers().is_empty());
    assert_eq!(msg.name_servers().len(), 1);
    let soa = &msg.name_servers()[0];
    assert_eq!(
        soa.name().to_lowercase(),
        Name::from_ascii("warren.").unwrap()
    );
    assert_eq!(soa.ttl(), NEGATIVE_TTL);
    match soa.data() {
        RData::SOA(soa) => {
            assert_eq!(soa.minimum(), NEGATIVE_TTL);
            assert_eq!(
                soa.rname().to_lowercase(),
                Name::from_ascii("hostmaster.warren.").unwrap()
            );
        }
        other => panic!("expected SOA, got {other:?}"),
    }
}

#[test]
fn a_and_aaaa_of_a_known_name() {
    let mut stub = stub();
    let a = ask(&mut stub, &query("main.ws.alice.warren.", RecordType::A));
    assert_authoritative(&a);
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert_eq!(addrs(&a), vec![IpAddr::V4(V4)]);
    assert_eq!(a.answers()[0].ttl(), ANSWER_TTL);
    assert!(a.name_servers().is_empty());
    assert!(a.extensions().is_none());

    let aaaa = ask(&mut stub, &query("ws.warren.", RecordType::AAAA));
    assert_authoritative(&aaaa);
    assert_eq!(addrs(&aaaa), vec![IpAddr::V6(V6)]);
}

#[test]
fn names_are_case_insensitive_and_the_case_is_echoed() {
    let mut stub = stub();
    let bytes = query("MaIn.WS.alice.WARREN.", RecordType::A);
    let reply = ask(&mut stub, &bytes);
    assert_eq!(addrs(&reply), vec![IpAddr::V4(V4)]);
    // The owner of the answer is the question's name, case included (0x20).
    assert_eq!(
        reply.answers()[0].name().to_ascii(),
        "MaIn.WS.alice.WARREN."
    );
    assert_eq!(
        reply.queries()[0].name().to_ascii(),
        "MaIn.WS.alice.WARREN."
    );
}

#[test]
fn rd_clear_is_echoed() {
    let mut stub = stub();
    let mut msg = query_msg("ws.warren.", RecordType::A);
    msg.set_recursion_desired(false);
    let reply = ask(&mut stub, &msg.to_vec().unwrap());
    assert!(!reply.recursion_desired());
    assert!(reply.recursion_available());
}

#[test]
fn other_types_of_a_known_name_are_nodata() {
    let mut stub = stub();
    for rtype in [
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::NS,
        RecordType::CNAME,
    ] {
        let reply = ask(&mut stub, &query("main.ws.alice.warren.", rtype));
        assert_authoritative(&reply);
        assert_eq!(reply.response_code(), ResponseCode::NoError, "{rtype}");
        assert_soa(&reply);
    }
    // A name without IPv6 addresses has no AAAA: NODATA, not NXDOMAIN.
    let reply = ask(
        &mut stub,
        &query("v4only.ws.alice.warren.", RecordType::AAAA),
    );
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert_soa(&reply);
}

#[test]
fn unknown_names_under_the_suffix_are_nxdomain_with_soa() {
    let mut stub = stub();
    for name in [
        "nope.warren.",
        "other.ws.alice.warren.",
        "x.main.ws.alice.warren.",
        "bob.warren.",
    ] {
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::HTTPS] {
            let reply = ask(&mut stub, &query(name, rtype));
            assert_authoritative(&reply);
            assert_eq!(reply.response_code(), ResponseCode::NXDomain, "{name}");
            assert_soa(&reply);
        }
    }
}

#[test]
fn empty_non_terminals_and_the_apex_are_nodata() {
    let mut stub = stub();
    for name in ["alice.warren.", "ws.alice.warren.", "WARREN.", "warren."] {
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            let reply = ask(&mut stub, &query(name, rtype));
            assert_authoritative(&reply);
            assert_eq!(
                reply.response_code(),
                ResponseCode::NoError,
                "{name} {rtype}"
            );
            assert_soa(&reply);
        }
    }
}

#[test]
fn soa_at_the_apex_is_answered() {
    let mut stub = stub();
    let reply = ask(&mut stub, &query("warren.", RecordType::SOA));
    assert_authoritative(&reply);
    assert_eq!(reply.answers().len(), 1);
    assert!(matches!(reply.answers()[0].data(), RData::SOA(_)));
    assert!(reply.name_servers().is_empty());
}

#[test]
fn diffs_and_snapshots_change_answers_at_once() {
    let mut stub = stub();
    let q = query("new.ws.alice.warren.", RecordType::A);
    assert_eq!(ask(&mut stub, &q).response_code(), ResponseCode::NXDomain);

    stub.upsert(
        "New.WS.alice.warren",
        [IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9))],
    )
    .unwrap();
    let reply = ask(&mut stub, &q);
    assert_eq!(
        addrs(&reply),
        vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, 9))]
    );

    assert!(stub.remove("new.ws.alice.warren."));
    assert_eq!(ask(&mut stub, &q).response_code(), ResponseCode::NXDomain);

    // A snapshot replaces everything: old names are gone, their empty
    // non-terminals too.
    stub.set_names([("api.bob.warren", vec![IpAddr::V4(V4)])]);
    let old = ask(&mut stub, &query("main.ws.alice.warren.", RecordType::A));
    assert_eq!(old.response_code(), ResponseCode::NXDomain);
    let ent = ask(&mut stub, &query("alice.warren.", RecordType::A));
    assert_eq!(ent.response_code(), ResponseCode::NXDomain);
    let ent = ask(&mut stub, &query("bob.warren.", RecordType::A));
    assert_eq!(ent.response_code(), ResponseCode::NoError);
    assert_eq!(stub.name_count(), 1);
}

#[test]
fn other_suffixes_work_too() {
    let mut stub = Stub::with_seed(Config::new("Dev.Example."), 1).unwrap();
    stub.upsert("api.dev.example", [IpAddr::V4(V4)]).unwrap();
    let reply = ask(&mut stub, &query("API.dev.example.", RecordType::A));
    assert_eq!(addrs(&reply), vec![IpAddr::V4(V4)]);
    let nx = ask(&mut stub, &query("x.dev.example.", RecordType::A));
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(
        nx.name_servers()[0].name().to_lowercase(),
        Name::from_ascii("dev.example.").unwrap()
    );
    let outside = ask(&mut stub, &query("example.", RecordType::A));
    assert_eq!(outside.response_code(), ResponseCode::Refused);
}

#[test]
fn outside_the_suffix_is_refused_without_forwarding() {
    let mut stub = stub();
    for name in ["example.com.", "warren.com.", "xwarren.", "."] {
        let reply = ask(&mut stub, &query(name, RecordType::A));
        assert_eq!(reply.response_code(), ResponseCode::Refused, "{name}");
        assert!(!reply.authoritative());
        assert!(reply.answers().is_empty());
        assert!(reply.name_servers().is_empty());
    }
    assert!(stub.poll_transmit().is_none());
}

#[test]
fn classes_other_than_in_are_refused_inside_the_suffix() {
    let mut stub = stub();
    let mut msg = Message::new();
    let mut q = Query::query(
        Name::from_ascii("main.ws.alice.warren.").unwrap(),
        RecordType::A,
    );
    q.set_query_class(DNSClass::CH);
    msg.set_id(0xBEEF).add_query(q);
    let reply = ask(&mut stub, &msg.to_vec().unwrap());
    assert_eq!(reply.response_code(), ResponseCode::Refused);
    assert!(reply.answers().is_empty());
}

// ---------------------------------------------------------------- malformed

#[test]
fn short_messages_and_responses_are_dropped() {
    let mut stub = stub();
    for len in 0..12 {
        let bytes = vec![0xAB; len];
        assert_eq!(
            stub.handle_query(Instant::now(), &bytes, Transport::Udp, client()),
            Outcome::Drop
        );
    }
    let mut response = query_msg("main.ws.alice.warren.", RecordType::A);
    response.set_message_type(MessageType::Response);
    assert_eq!(
        stub.handle_query(
            Instant::now(),
            &response.to_vec().unwrap(),
            Transport::Udp,
            client()
        ),
        Outcome::Drop
    );
}

fn assert_header_only(reply: &[u8], id: u16, rcode: ResponseCode) {
    assert_eq!(reply.len(), 12, "nothing beyond the header is echoed");
    let msg = Message::from_vec(reply).unwrap();
    assert_eq!(msg.id(), id);
    assert_eq!(msg.message_type(), MessageType::Response);
    assert_eq!(msg.response_code(), rcode);
    assert_eq!(msg.query_count(), 0);
}

#[test]
fn junk_after_a_header_is_formerr_without_echo() {
    let mut stub = stub();
    // A header claiming one question, then junk that is not a name.
    let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0x3F, b'x', b'y']);
    let reply = reply_bytes(&mut stub, &bytes, Transport::Udp);
    assert_header_only(&reply, 0x1234, ResponseCode::FormErr);

    // Just a header.
    let reply = reply_bytes(&mut stub, &bytes[..12], Transport::Udp);
    assert_header_only(&reply, 0x1234, ResponseCode::FormErr);

    // A question cut off in its type/class.
    let good = query("main.ws.alice.warren.", RecordType::A);
    let reply = reply_bytes(&mut stub, &good[..good.len() - 2], Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);
}

#[test]
fn qdcount_other_than_one_is_formerr() {
    let mut stub = stub();
    let mut none = Message::new();
    none.set_id(0xBEEF);
    let reply = reply_bytes(&mut stub, &none.to_vec().unwrap(), Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);

    let mut two = query_msg("main.ws.alice.warren.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("ws.warren.").unwrap(),
        RecordType::A,
    ));
    let reply = reply_bytes(&mut stub, &two.to_vec().unwrap(), Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);
}

#[test]
fn compression_pointer_in_the_question_is_formerr() {
    let mut stub = stub();
    let mut bytes = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let reply = reply_bytes(&mut stub, &bytes, Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);
}

#[test]
fn broken_records_after_the_question_are_formerr() {
    let mut stub = stub();
    // ARCOUNT says one record, none follows.
    let mut bytes = query("main.ws.alice.warren.", RecordType::A);
    bytes[11] = 1;
    let reply = reply_bytes(&mut stub, &bytes, Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);

    // Two OPT records (RFC 6891 §6.1.1).
    let mut bytes = with_edns("main.ws.alice.warren.", RecordType::A, 1232, 0);
    let opt = bytes[bytes.len() - 11..].to_vec();
    bytes.extend_from_slice(&opt);
    bytes[11] = 2;
    let reply = reply_bytes(&mut stub, &bytes, Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);
}

/// A query for `name` in raw wire form, built by hand so that names hickory
/// would refuse to build can be sent.
fn raw_query(name_wire: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(name_wire);
    bytes.extend_from_slice(&[0, 1, 0, 1]);
    bytes
}

#[test]
fn the_longest_names_are_answered_and_longer_ones_are_formerr() {
    let mut stub = stub();
    // 122 one-letter labels, "ab", "warren" and the root: exactly 255
    // octets, the most a name may have.
    let mut name = Vec::new();
    for _ in 0..122 {
        name.extend_from_slice(b"\x01a");
    }
    name.extend_from_slice(b"\x02ab\x06warren\x00");
    assert_eq!(name.len(), 255);
    let msg = ask(&mut stub, &raw_query(&name));
    assert_eq!(msg.response_code(), ResponseCode::NXDomain);

    // The most labels a name can have: 127 one-letter labels and the root.
    let mut most = Vec::new();
    for _ in 0..127 {
        most.extend_from_slice(b"\x01a");
    }
    most.push(0);
    assert_eq!(most.len(), 255);
    let msg = ask(&mut stub, &raw_query(&most));
    assert_eq!(msg.response_code(), ResponseCode::Refused);

    // One more label: 257 octets.
    let mut longer = b"\x01b".to_vec();
    longer.extend_from_slice(&name);
    let reply = reply_bytes(&mut stub, &raw_query(&longer), Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);

    // A label longer than the message.
    let reply = reply_bytes(&mut stub, &raw_query(b"\x3fabc"), Transport::Udp);
    assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);
    // Extended label types (0x40, 0x80) are not labels.
    for first in [0x41u8, 0x81] {
        let mut bad = vec![first, b'a'];
        bad.extend_from_slice(b"\x06warren\x00");
        let reply = reply_bytes(&mut stub, &raw_query(&bad), Transport::Udp);
        assert_header_only(&reply, 0xBEEF, ResponseCode::FormErr);
    }
}

#[test]
fn opcodes_other_than_query_are_notimp() {
    let mut stub = stub();
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut msg = query_msg("main.ws.alice.warren.", RecordType::A);
        msg.set_op_code(op);
        let reply = reply_bytes(&mut stub, &msg.to_vec().unwrap(), Transport::Udp);
        assert_header_only(&reply, 0xBEEF, ResponseCode::NotImp);
        assert_eq!(Message::from_vec(&reply).unwrap().op_code(), op);
    }
}

// --------------------------------------------------------------------- EDNS

#[test]
fn edns_queries_get_our_opt_back() {
    let mut stub = stub();
    let reply = ask(
        &mut stub,
        &with_edns("main.ws.alice.warren.", RecordType::A, 4096, 0),
    );
    assert_eq!(addrs(&reply), vec![IpAddr::V4(V4)]);
    let edns = reply.extensions().as_ref().expect("OPT in the reply");
    assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
    assert_eq!(edns.version(), 0);
    assert!(!edns.flags().dnssec_ok);

    // Negative answers carry it too, with the SOA.
    let reply = ask(
        &mut stub,
        &with_edns("nope.warren.", RecordType::A, 1232, 0),
    );
    assert_eq!(reply.response_code(), ResponseCode::NXDomain);
    assert_soa(&reply);
    assert!(reply.extensions().is_some());
}

#[test]
fn dnssec_ok_is_echoed() {
    let mut stub = stub();
    let mut msg = query_msg("main.ws.alice.warren.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    msg.set_edns(edns);
    let reply = ask(&mut stub, &msg.to_vec().unwrap());
    assert!(reply.extensions().as_ref().unwrap().flags().dnssec_ok);
}

#[test]
fn unsupported_edns_version_is_badvers() {
    let mut stub = stub();
    let reply = ask(
        &mut stub,
        &with_edns("main.ws.alice.warren.", RecordType::A, 1232, 1),
    );
    // 16 is both BADVERS and BADSIG in the IANA registry; hickory names it
    // the latter.
    assert_eq!(u16::from(reply.response_code()), 16);
    assert!(reply.answers().is_empty());
    let edns = reply.extensions().as_ref().expect("BADVERS travels in OPT");
    assert_eq!(edns.version(), 0);
}

// --------------------------------------------------------------- truncation

fn stub_with_many(count: usize) -> Stub {
    let mut stub = stub();
    let many: Vec<IpAddr> = (0..count)
        .map(|i| {
            IpAddr::V6(Ipv6Addr::new(
                0xfd7a,
                0,
                0,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ))
        })
        .chain(
            (0..count.min(60_000)).map(|i| IpAddr::V4(Ipv4Addr::from(0x6440_0000u32 + i as u32))),
        )
        .collect();
    stub.upsert("big.ws.alice.warren", many).unwrap();
    stub
}

#[test]
fn udp_replies_over_512_without_edns_are_truncated() {
    let mut stub = stub_with_many(100);
    let bytes = query("big.ws.alice.warren.", RecordType::AAAA);
    let reply = reply_bytes(&mut stub, &bytes, Transport::Udp);
    assert!(reply.len() <= 512);
    let msg = Message::from_vec(&reply).unwrap();
    assert!(msg.truncated());
    assert!(msg.answers().is_empty());
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert_eq!(msg.queries().len(), 1);
    assert_eq!(reply[12..], bytes[12..]);
}

#[test]
fn udp_limit_follows_edns_up_to_our_size() {
    let mut stub = stub_with_many(40);
    // 40 AAAA records: 12 + 24 + 40 * 28 + 11 = 1167 bytes.
    let small = with_edns("big.ws.alice.warren.", RecordType::AAAA, 1000, 0);
    let msg = ask(&mut stub, &small);
    assert!(msg.truncated());
    assert!(msg.answers().is_empty());
    let fits = with_edns("big.ws.alice.warren.", RecordType::AAAA, 1232, 0);
    let msg = ask(&mut stub, &fits);
    assert!(!msg.truncated());
    assert_eq!(msg.answers().len(), 40);
    // A payload size under 512 counts as 512 (RFC 6891 §6.2.3).
    let tiny = with_edns("big.ws.alice.warren.", RecordType::A, 100, 0);
    let reply = reply_bytes(&mut stub, &tiny, Transport::Udp);
    let msg = Message::from_vec(&reply).unwrap();
    assert!(msg.truncated());
    assert!(reply.len() <= 512);

    let mut stub = stub_with_many(60);
    let huge = with_edns("big.ws.alice.warren.", RecordType::AAAA, 65000, 0);
    let reply = reply_bytes(&mut stub, &huge, Transport::Udp);
    assert!(reply.len() <= usize::from(EDNS_UDP_SIZE));
    assert!(Message::from_vec(&reply).unwrap().truncated());
}

#[test]
fn tcp_replies_are_not_truncated() {
    let mut stub = stub_with_many(1000);
    let bytes = query("big.ws.alice.warren.", RecordType::AAAA);
    let msg = ask_over(&mut stub, &bytes, Transport::Tcp);
    assert!(!msg.truncated());
    assert_eq!(msg.answers().len(), 1000);
}

#[test]
fn a_reply_too_large_even_for_tcp_is_servfail() {
    let mut stub = stub_with_many(3000);
    let bytes = query("big.ws.alice.warren.", RecordType::AAAA);
    let msg = ask_over(&mut stub, &bytes, Transport::Tcp);
    assert_eq!(msg.response_code(), ResponseCode::ServFail);
    assert!(msg.answers().is_empty());
    // Over UDP the same answer is merely truncated.
    let msg = ask_over(&mut stub, &bytes, Transport::Udp);
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert!(msg.truncated());
}

// --------------------------------------------------------------- forwarding

/// A forwarding stub whose machine owns `client()`'s address (the device's
/// tunnel address, where the stub listens).
fn forwarding(upstreams: Vec<SocketAddr>) -> Stub {
    let mut config = Config::new("warren");
    config.upstreams = Some(upstreams);
    config.local_addresses = vec![
        client().ip(),
        IpAddr::V6(Ipv6Addr::new(0xfd7a, 1, 0, 0, 0, 0, 0, 1)),
    ];
    stub_with(config)
}

#[test]
fn outside_names_are_forwarded_only_for_this_machine() {
    let mut stub = forwarding(vec![upstream(1)]);
    let now = Instant::now();
    let outside = query("intranet.corp.example.", RecordType::A);
    // An agent through the tunnel, another peer a coordinator added, a LAN
    // neighbour: none may use the laptop as a resolver.
    for stranger in [
        "100.64.0.9:5353",
        "[fd7a:1::9]:5353",
        "192.168.1.20:5353",
        "[::ffff:100.64.0.9]:5353",
    ] {
        let from: SocketAddr = stranger.parse().unwrap();
        for transport in [Transport::Udp, Transport::Tcp] {
            let reply = ask_from(&mut stub, &outside, transport, from);
            assert_eq!(reply.response_code(), ResponseCode::Refused, "{from}");
            assert!(reply.answers().is_empty());
            // Names under the suffix are still answered for anyone: agents
            // learn them from the coordinator anyway.
            let inside = ask_from(
                &mut stub,
                &query("main.ws.alice.warren.", RecordType::A),
                transport,
                from,
            );
            assert_eq!(addrs(&inside), vec![IpAddr::V4(V4)], "{from}");
        }
    }
    assert!(stub.poll_transmit().is_none(), "nothing went upstream");
    assert_eq!(stub.pending_forwards(), 0);

    // This machine: loopback of either family, and its own addresses.
    for local in [
        "127.0.0.1:40000",
        "127.0.0.53:40000",
        "[::1]:40000",
        "[::ffff:127.0.0.1]:40000",
        "100.64.0.1:40001",
        "[fd7a:1::1]:40000",
    ] {
        let from: SocketAddr = local.parse().unwrap();
        assert_eq!(
            stub.handle_query(now, &outside, Transport::Udp, from),
            Outcome::Forward,
            "{from}"
        );
        let tx = stub.poll_transmit().expect("forwarded");
        let back = stub
            .handle_upstream(now, tx.to, &upstream_answer(&tx.bytes))
            .expect("answered");
        assert_eq!(back.client, from);
    }
}

#[test]
fn without_local_addresses_only_loopback_is_forwarded() {
    let mut config = Config::new("warren");
    config.upstreams = Some(vec![upstream(1)]);
    let mut stub = stub_with(config);
    let now = Instant::now();
    let outside = query("example.com.", RecordType::A);
    let reply = ask_from(&mut stub, &outside, Transport::Udp, client());
    assert_eq!(reply.response_code(), ResponseCode::Refused);
    assert_eq!(
        stub.handle_query(
            now,
            &outside,
            Transport::Udp,
            "127.0.0.1:1".parse().unwrap()
        ),
        Outcome::Forward
    );
}

/// A plausible upstream answer to `sent`.
fn upstream_answer(sent: &[u8]) -> Vec<u8> {
    let q = Message::from_vec(sent).unwrap();
    let mut msg = Message::new();
    msg.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .add_query(q.queries()[0].clone())
        .add_answer(hickory_proto::rr::Record::from_rdata(
            q.queries()[0].name().clone(),
            300,
            RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::new(93, 184, 215, 14))),
        ));
    msg.to_vec().unwrap()
}

#[test]
fn outside_queries_are_forwarded_with_a_fresh_id_and_answered_unchanged() {
    let mut stub = forwarding(vec![upstream(1), upstream(2)]);
    let now = Instant::now();
    let sent = with_edns("example.com.", RecordType::A, 1232, 0);
    assert_eq!(
        stub.handle_query(now, &sent, Transport::Udp, client()),
        Outcome::Forward
    );
    let tx = stub.poll_transmit().expect("a transmit");
    assert!(stub.poll_transmit().is_none());
    assert_eq!(tx.to, upstream(1));
    assert_eq!(tx.transport, Transport::Udp);
    assert_eq!(tx.bytes[2..], sent[2..], "only the ID changes");
    assert_ne!(tx.bytes[..2], sent[..2]);
    assert_eq!(stub.pending_forwards(), 1);
    assert_eq!(stub.poll_timeout(), Some(now + FORWARD_TIMEOUT));

    let answer = upstream_answer(&tx.bytes);
    let back = stub
        .handle_upstream(now, upstream(1), &answer)
        .expect("the answer goes back");
    assert_eq!(back.client, client());
    assert_eq!(back.transport, Transport::Udp);
    assert_eq!(back.bytes[..2], sent[..2], "client's ID restored");
    assert_eq!(back.bytes[2..], answer[2..], "otherwise byte-identical");
    assert_eq!(stub.pending_forwards(), 0);
    assert_eq!(stub.poll_timeout(), None);

    // A duplicate of the same answer finds nothing pending.
    assert!(stub.handle_upstream(now, upstream(1), &answer).is_none());
}

#[test]
fn answers_from_the_wrong_place_or_for_another_question_are_ignored() {
    let mut stub = forwarding(vec![upstream(1)]);
    let now = Instant::now();
    let sent = query("example.com.", RecordType::A);
    assert_eq!(
        stub.handle_query(now, &sent, Transport::Udp, client()),
        Outcome::Forward
    );
    let tx = stub.poll_transmit().unwrap();
    let answer = upstream_answer(&tx.bytes);

    assert!(stub.handle_upstream(now, upstream(9), &answer).is_none());
    let mut other_id = answer.clone();
    other_id[0] ^= 0xFF;
    assert!(stub.handle_upstream(now, upstream(1), &other_id).is_none());
    let mut other_q = Message::from_vec(&answer).unwrap();
    other_q.queries_mut()[0].set_name(Name::from_ascii("evil.com.").unwrap());
    assert!(stub
        .handle_upstream(now, upstream(1), &other_q.to_vec().unwrap())
        .is_none());
    assert!(stub
        .handle_upstream(now, upstream(1), &answer[..11])
        .is_none());
    // A query (QR=0) with the right ID is not an answer.
    assert!(stub.handle_upstream(now, upstream(1), &tx.bytes).is_none());
    assert_eq!(stub.pending_forwards(), 1);

    // An upstream that changes the case of the name is still matched.
    let mut upper = answer.clone();
    for b in &mut upper[13..20] {
        b.make_ascii_uppercase();
    }
    assert!(stub.handle_upstream(now, upstream(1), &upper).is_some());
}

#[test]
fn a_timed_out_forward_stays_a_timeout_and_rotates_upstreams() {
    let mut stub = forwarding(vec![upstream(1), upstream(2)]);
    let t0 = Instant::now();
    let sent = query("example.com.", RecordType::A);
    assert_eq!(
        stub.handle_query(t0, &sent, Transport::Udp, client()),
        Outcome::Forward
    );
    let tx = stub.poll_transmit().unwrap();
    let deadline = stub.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + FORWARD_TIMEOUT);

    stub.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(stub.pending_forwards(), 1);
    stub.handle_timeout(deadline);
    assert_eq!(stub.pending_forwards(), 0);
    assert_eq!(stub.poll_timeout(), None);
    // Nothing is sent to the client, and a late answer is dropped.
    assert!(stub.poll_transmit().is_none());
    assert!(stub
        .handle_upstream(deadline, upstream(1), &upstream_answer(&tx.bytes))
        .is_none());

    // The next query goes to the second upstream, and after it times out
    // too, back to the first.
    let t1 = deadline + Duration::from_secs(1);
    stub.handle_query(t1, &sent, Transport::Udp, client());
    assert_eq!(stub.poll_transmit().unwrap().to, upstream(2));
    stub.handle_timeout(t1 + FORWARD_TIMEOUT);
    stub.handle_query(t1 + FORWARD_TIMEOUT, &sent, Transport::Udp, client());
    assert_eq!(stub.poll_transmit().unwrap().to, upstream(1));
}

#[test]
fn answered_forwards_do_not_leave_wakeups_behind() {
    let mut stub = forwarding(vec![upstream(1)]);
    let t0 = Instant::now();
    let mut sent = Vec::new();
    for i in 0..3u64 {
        let now = t0 + Duration::from_millis(i);
        stub.handle_query(
            now,
            &query("example.com.", RecordType::A),
            Transport::Udp,
            client(),
        );
        sent.push(stub.poll_transmit().unwrap());
    }
    // Answer the middle one: the first deadline still stands.
    stub.handle_upstream(t0, upstream(1), &upstream_answer(&sent[1].bytes))
        .unwrap();
    assert_eq!(stub.poll_timeout(), Some(t0 + FORWARD_TIMEOUT));
    stub.handle_upstream(t0, upstream(1), &upstream_answer(&sent[0].bytes))
        .unwrap();
    assert_eq!(
        stub.poll_timeout(),
        Some(t0 + Duration::from_millis(2) + FORWARD_TIMEOUT)
    );
    stub.handle_upstream(t0, upstream(1), &upstream_answer(&sent[2].bytes))
        .unwrap();
    assert_eq!(stub.poll_timeout(), None);
}

#[test]
fn replies_seen_through_a_dual_stack_socket_match() {
    let mut stub = forwarding(vec![upstream(1)]);
    let now = Instant::now();
    let sent = query("example.com.", RecordType::A);
    stub.handle_query(now, &sent, Transport::Udp, client());
    let tx = stub.poll_transmit().unwrap();
    let mapped: SocketAddr = "[::ffff:192.0.2.1]:53".parse().unwrap();
    assert!(stub
        .handle_upstream(now, mapped, &upstream_answer(&tx.bytes))
        .is_some());
}

#[test]
fn tcp_queries_are_forwarded_over_tcp() {
    let mut stub = forwarding(vec![upstream(1)]);
    let now = Instant::now();
    let sent = query("example.com.", RecordType::A);
    assert_eq!(
        stub.handle_query(now, &sent, Transport::Tcp, client()),
        Outcome::Forward
    );
    let tx = stub.poll_transmit().unwrap();
    assert_eq!(tx.transport, Transport::Tcp);
    let back = stub
        .handle_upstream(now, upstream(1), &upstream_answer(&tx.bytes))
        .unwrap();
    assert_eq!(back.transport, Transport::Tcp);
}

#[test]
fn forwarded_ids_are_not_predictable_or_reused() {
    let mut stub = forwarding(vec![upstream(1)]);
    let now = Instant::now();
    let sent = query("example.com.", RecordType::A);
    let mut ids = std::collections::HashSet::new();
    for _ in 0..1000 {
        stub.handle_query(now, &sent, Transport::Udp, client());
        let tx = stub.poll_transmit().unwrap();
        assert!(ids.insert(u16::from_be_bytes([tx.bytes[0], tx.bytes[1]])));
    }
    assert!(!ids.contains(&0xBEEF) || ids.len() == 1000);
    assert_eq!(stub.pending_forwards(), 1000);
}

#[test]
fn the_pending_table_is_bounded() {
    let mut config = Config::new("warren");
    config.upstreams = Some(vec![upstream(1)]);
    config.local_addresses = vec![client().ip()];
    config.max_pending = 3;
    let mut stub = stub_with(config);
    let now = Instant::now();
    let sent = query("example.com.", RecordType::A);
    for _ in 0..3 {
        assert_eq!(
            stub.handle_query(now, &sent, Transport::Udp, client()),
            Outcome::Forward
        );
    }
    let reply = ask(&mut stub, &sent);
    assert_eq!(reply.response_code(), ResponseCode::ServFail);
    assert_eq!(stub.pending_forwards(), 3);
    // Names under the suffix are still answered.
    let inside = ask(&mut stub, &query("ws.warren.", RecordType::A));
    assert_eq!(addrs(&inside), vec![IpAddr::V4(V4)]);
}

#[test]
fn no_upstream_is_servfail_and_forwarding_can_be_switched() {
    let mut stub = forwarding(vec![]);
    let sent = query("example.com.", RecordType::A);
    assert_eq!(
        ask(&mut stub, &sent).response_code(),
        ResponseCode::ServFail
    );
    stub.set_upstreams(Some(vec![upstream(3)]));
    assert_eq!(
        stub.handle_query(Instant::now(), &sent, Transport::Udp, client()),
        Outcome::Forward
    );
    assert_eq!(stub.poll_transmit().unwrap().to, upstream(3));
    stub.set_upstreams(None);
    assert_eq!(ask(&mut stub, &sent).response_code(), ResponseCode::Refused);
    assert_eq!(stub.pending_forwards(), 0);
}

#[test]
fn other_classes_and_edns_versions_outside_are_forwarded_untouched() {
    let mut stub = forwarding(vec![upstream(1)]);
    let mut msg = Message::new();
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    msg.set_id(0xBEEF).add_query(q);
    let sent = msg.to_vec().unwrap();
    assert_eq!(
        stub.handle_query(Instant::now(), &sent, Transport::Udp, client()),
        Outcome::Forward
    );
    assert_eq!(stub.poll_transmit().unwrap().bytes[2..], sent[2..]);
    let sent = with_edns("example.com.", RecordType::A, 1232, 1);
    assert_eq!(
        stub.handle_query(Instant::now(), &sent, Transport::Udp, client()),
        Outcome::Forward
    );
}
