//! Fuzz target: arbitrary bytes as a DNS query (over UDP and TCP, with and
//! without forwarding) and as an upstream reply. Nothing may panic; every
//! reply must keep the query's ID, parse as a DNS response, and stay within
//! the transport's size limit; a forwarded query must leave byte-identical
//! but for its ID.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use warren_dns::{Config, Outcome, Stub, Transport, EDNS_UDP_SIZE};

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
});
