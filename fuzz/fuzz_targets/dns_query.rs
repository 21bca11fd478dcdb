//! Fuzz target: arbitrary bytes as a DNS query (over UDP and TCP, with and
//! without forwarding), as an upstream reply, and as a TCP byte stream
//! through the RFC 7766 framer (in two uneven reads) into the stub. Nothing
//! may panic; every reply must keep the query's ID, parse as a DNS response,
//! and stay within the transport's size limit; a forwarded query must leave
//! byte-identical but for its ID; the framer takes out exactly the messages
//! the stream holds and keeps no more than one partial frame.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use warren_dns::{frame, Config, Outcome, Stub, TcpFramer, Transport, EDNS_UDP_SIZE};

fn stub(forward: bool) -> Stub {
    let mut config = Config::new("warren");
    if forward {
        config.upstreams = Some(vec![SocketAddr::from(([192, 0, 2, 1], 53))]);
    }
    let mut stub = Stub::with_seed(config, 1).expect("valid suffix");
    let many: Vec<IpAddr> = (0..100u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, i)))
        .chain([IpAddr::V4(Ipv4Addr::new(100, 64, 0, 5))])
        .collect();
    stub.set_names([("main.ws.alice.warren", many.clone()), ("ws.warren", many)]);
    stub
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let client = SocketAddr::from(([127, 0, 0, 1], 5353));
    for forward in [false, true] {
        let mut stub = stub(forward);
        for transport in [Transport::Udp, Transport::Tcp] {
            match stub.handle_query(now, data, transport, client) {
                Outcome::Reply(reply) => {
                    assert!(data.len() >= 12);
                    assert_eq!(reply[..2], data[..2], "same ID");
                    let limit = match transport {
                        Transport::Udp => usize::from(EDNS_UDP_SIZE),
                        Transport::Tcp => 65535,
                    };
                    assert!(reply.len() <= limit);
                    let msg = Message::from_vec(&reply).expect("reply parses");
                    assert_eq!(msg.message_type(), MessageType::Response);
                    // Only the header and question may come from the input.
                    if msg.query_count() == 0 {
                        assert_eq!(reply.len(), 12);
                    }
                }
                Outcome::Forward => {
                    assert!(forward);
                    let tx = stub.poll_transmit().expect("a forward queues a transmit");
                    assert_eq!(tx.bytes[2..], data[2..]);
                    assert_eq!(tx.transport, transport);
                    // The same bytes as a reply: no match (QR=0), no panic.
                    let _ = stub.handle_upstream(now, tx.to, &tx.bytes);
                }
                Outcome::Drop => assert!(data.len() < 12 || data[2] & 0x80 != 0),
            }
        }
        let _ = stub.handle_upstream(now, SocketAddr::from(([192, 0, 2, 1], 53)), data);
        stub.handle_timeout(now + Duration::from_secs(60));
        assert_eq!(stub.pending_forwards(), 0);
        assert!(stub.poll_timeout().is_none());
    }

    // The input as a TCP stream: every whole frame becomes one query, and
    // each reply survives framing.
    let mut stub = stub(false);
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let mut framer = TcpFramer::new();
    let mut taken = 0usize;
    for piece in [&data[..split], &data[split..]] {
        framer.push(piece);
        while let Some(query) = framer.next_message() {
            taken += 2 + query.len();
            if let Outcome::Reply(reply) = stub.handle_query(now, &query, Transport::Tcp, client) {
                let framed = frame(&reply).expect("a TCP reply fits its prefix");
                let mut back = TcpFramer::new();
                back.push(&framed);
                assert_eq!(back.next_message().as_deref(), Some(&reply[..]));
                assert_eq!(back.pending(), 0);
            }
        }
        assert!(
            framer.pending() < 2 + 65535,
            "more than one partial frame kept"
        );
    }
    assert_eq!(
        taken + framer.pending(),
        data.len(),
        "bytes lost or invented"
    );
});
