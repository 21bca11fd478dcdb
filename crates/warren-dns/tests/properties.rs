//! Property tests: no input panics the stub, every valid query gets a valid
//! reply to the same question, and truncation always leaves a valid message
//! within the client's limit. `hickory-proto` builds the queries and judges
//! the replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;
use warren_dns::{Config, Outcome, Stub, Transport, EDNS_UDP_SIZE};

fn client() -> SocketAddr {
    "127.0.0.1:5353".parse().unwrap()
}

fn upstream() -> SocketAddr {
    "192.0.2.1:53".parse().unwrap()
}

fn stub(forward: bool) -> Stub {
    let mut config = Config::new("warren");
    if forward {
        config.upstreams = Some(vec![upstream()]);
    }
    let mut stub = Stub::with_seed(config, 3).unwrap();
    stub.set_names([
        (
            "main.ws.alice.warren",
            vec![
                IpAddr::V4(Ipv4Addr::new(100, 64, 0, 5)),
                IpAddr::V6(Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, 5)),
            ],
        ),
        ("ws.warren", vec![IpAddr::V4(Ipv4Addr::new(100, 64, 0, 5))]),
    ]);
    stub
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Udp), Just(Transport::Tcp)]
}

/// A DNS name built from labels that hit every branch of the lookup: known
/// names, empty non-terminals, the apex, unknown names and outside names.
fn name() -> impl Strategy<Value = String> {
    let label = prop_oneof![
        Just("main".to_string()),
        Just("ws".to_string()),
        Just("alice".to_string()),
        Just("warren".to_string()),
        Just("com".to_string()),
        "[a-zA-Z0-9-]{1,20}",
        "[a-z]{63}",
    ];
    prop::collection::vec(label, 0..6).prop_map(|labels| {
        let mut name = labels.join(".");
        name.push('.');
        name
    })
}

fn rtype() -> impl Strategy<Value = RecordType> {
    prop_oneof![
        Just(RecordType::A),
        Just(RecordType::AAAA),
        Just(RecordType::HTTPS),
        Just(RecordType::SVCB),
        Just(RecordType::MX),
        Just(RecordType::TXT),
        Just(RecordType::ANY),
        Just(RecordType::SOA),
        Just(RecordType::NS),
        any::<u16>().prop_map(RecordType::from),
    ]
}

/// Changes `name`'s letters' case at random, which must not change the
/// answer but must be echoed.
fn recase(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn question_len(bytes: &[u8]) -> usize {
    let mut at = 12;
    while bytes[at] != 0 {
        at += 1 + bytes[at] as usize;
    }
    at + 1 + 4 - 12
}

fn valid_query(
    name: &str,
    rtype: RecordType,
    id: u16,
    rd: bool,
    edns: Option<(u16, bool)>,
) -> Option<Vec<u8>> {
    let name = Name::from_ascii(name).ok()?;
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(rd)
        .add_query(Query::query(name, rtype));
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload).set_dnssec_ok(dnssec_ok);
        msg.set_edns(e);
    }
    msg.to_vec().ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        transport in transport(),
        forward in any::<bool>(),
    ) {
        let mut stub = stub(forward);
        let now = Instant::now();
        match stub.handle_query(now, &bytes, transport, client()) {
            Outcome::Reply(reply) => {
                prop_assert!(bytes.len() >= 12);
                prop_assert_eq!(&reply[..2], &bytes[..2]);
                prop_assert!(reply[2] & 0x80 != 0, "QR set");
                // Never more than the header and the question come back
                // unless there are records to answer with, and the reply
                // parses.
                prop_assert!(Message::from_vec(&reply).is_ok());
            }
            Outcome::Forward => {
                let tx = stub.poll_transmit().expect("a forward queues a transmit");
                prop_assert_eq!(&tx.bytes[2..], &bytes[2..]);
            }
            Outcome::Drop => {}
        }
        // Whatever arrived from upstream is survived too.
        prop_assert!(stub.handle_upstream(now, upstream(), &bytes).is_none()
            || forward);
        stub.handle_timeout(now + Duration::from_secs(10));
        prop_assert_eq!(stub.pending_forwards(), 0);
    }

    #[test]
    fn mutated_queries_never_panic(
        name in name(),
        rtype in rtype(),
        edns in prop::option::of((any::<u16>(), any::<bool>())),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        transport in transport(),
    ) {
        let Some(mut bytes) = valid_query(&name, rtype, 1, true, edns) else {
            return Ok(());
        };
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        for bytes in [&bytes[..], &bytes[..keep]] {
            let mut stub = stub(true);
            if let Outcome::Reply(reply) = stub.handle_query(Instant::now(), bytes, transport, client()) {
                prop_assert_eq!(&reply[..2], &bytes[..2]);
                prop_assert!(Message::from_vec(&reply).is_ok());
            }
        }
    }

    #[test]
    fn valid_queries_get_a_valid_reply_to_the_same_question(
        name in name(),
        mask in any::<u64>(),
        rtype in rtype(),
        id in any::<u16>(),
        rd in any::<bool>(),
        edns in prop::option::of((any::<u16>(), any::<bool>())),
        transport in transport(),
    ) {
        let name = recase(&name, mask);
        let Some(bytes) = valid_query(&name, rtype, id, rd, edns) else {
            return Ok(());
        };
        let mut stub = stub(false);
        let Outcome::Reply(reply) = stub.handle_query(Instant::now(), &bytes, transport, client()) else {
            return Err(TestCaseError::fail("a valid query is answered when not forwarding"));
        };
        let msg = Message::from_vec(&reply).expect("reply parses");
        prop_assert_eq!(msg.id(), id);
        prop_assert_eq!(msg.message_type(), MessageType::Response);
        prop_assert_eq!(msg.recursion_desired(), rd);
        prop_assert_eq!(msg.queries().len(), 1);
        let qlen = question_len(&bytes);
        prop_assert_eq!(&reply[12..12 + qlen], &bytes[12..12 + qlen]);
        prop_assert_eq!(msg.extensions().is_some(), edns.is_some());
        if transport == Transport::Udp {
            let limit = edns.map_or(512, |(p, _)| p.clamp(512, EDNS_UDP_SIZE));
            prop_assert!(reply.len() <= usize::from(limit));
        }
    }

    #[test]
    fn truncation_leaves_a_valid_message_within_the_limit(
        v4 in 0usize..200,
        v6 in 0usize..200,
        long_name in any::<bool>(),
        aaaa in any::<bool>(),
        edns in prop::option::of(any::<u16>()),
        transport in transport(),
    ) {
        let mut stub = stub(false);
        let name = if long_name {
            format!("{}.{}.ws.alice.warren", "a".repeat(63), "b".repeat(63))
        } else {
            "big.ws.alice.warren".to_string()
        };
        let addrs = (0..v4)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i as u32)))
            .chain((0..v6).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, i as u16))));
        stub.upsert(&name, addrs).unwrap();
        let rtype = if aaaa { RecordType::AAAA } else { RecordType::A };
        let bytes = valid_query(&format!("{name}."), rtype, 9, true, edns.map(|p| (p, false))).unwrap();
        let Outcome::Reply(reply) = stub.handle_query(Instant::now(), &bytes, transport, client()) else {
            return Err(TestCaseError::fail("answered"));
        };
        let msg = Message::from_vec(&reply).expect("reply parses");
        let wanted = if aaaa { v6 } else { v4 };
        let limit = match transport {
            Transport::Udp => usize::from(edns.map_or(512, |p| p.clamp(512, EDNS_UDP_SIZE))),
            Transport::Tcp => 65535,
        };
        prop_assert!(reply.len() <= limit);
        prop_assert_eq!(msg.id(), 9);
        prop_assert_eq!(msg.queries().len(), 1);
        if msg.truncated() {
            prop_assert_eq!(transport, Transport::Udp);
            prop_assert!(msg.answers().is_empty());
            prop_assert!(msg.name_servers().is_empty());
            prop_assert_eq!(msg.extensions().is_some(), edns.is_some());
        } else {
            prop_assert_eq!(msg.answers().len(), wanted);
        }
    }
}
