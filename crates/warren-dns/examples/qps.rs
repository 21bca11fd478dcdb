//! Queries per second of `Stub::handle_query` on one core, in process: an A
//! query for a known name (with and without EDNS), an NXDOMAIN, and a
//! forwarded query (query in, transmit out, upstream answer back). For
//! comparison it also times the same A answer done by round-tripping a
//! `hickory_proto::op::Message` (parse, build a response, encode), the
//! approach the stub's hand-written reply path replaces.
//!
//! Run: `cargo run --release -p warren-dns --example qps [seconds-per-case]`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{rdata, Name, RData, Record, RecordType};
use warren_dns::{Config, Outcome, Stub, Transport};

fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(0x1234)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii(name).expect("valid name"),
            rtype,
        ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg.to_vec().expect("encodes")
}

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    // Warm up caches and the allocator.
    for _ in 0..10_000 {
        f();
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The A answer built by round-tripping hickory's `Message`.
fn hickory_answer(bytes: &[u8], addr: Ipv4Addr) -> Vec<u8> {
    let q = Message::from_vec(bytes).expect("parses");
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .add_query(q.queries()[0].clone())
        .add_answer(Record::from_rdata(
            q.queries()[0].name().clone(),
            5,
            RData::A(rdata::A(addr)),
        ));
    r.to_vec().expect("encodes")
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let upstream: SocketAddr = "127.0.0.1:5300".parse().expect("addr");

    let mut config = Config::new("warren");
    config.upstreams = Some(vec![upstream]);
    let mut stub = Stub::new(config).expect("valid suffix");
    // The control bench's deployment: 10,000 workspaces of 2 agents.
    let names = (0..10_000u32).flat_map(|w| {
        (0..2u32).map(move |a| {
            let i = w * 2 + a;
            (
                format!("agent{a}.ws{w}.alice.warren"),
                vec![
                    IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)),
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd7a,
                        0,
                        0,
                        0,
                        0,
                        0,
                        (i >> 16) as u16,
                        i as u16,
                    )),
                ],
            )
        })
    });
    assert!(stub.set_names(names).is_empty());

    let now = Instant::now();
    let cases = [
        (
            "A",
            query("agent1.ws4242.alice.warren.", RecordType::A, false),
        ),
        (
            "A+EDNS",
            query("agent1.ws4242.alice.warren.", RecordType::A, true),
        ),
        (
            "NXDOMAIN",
            query("nope.ws4242.alice.warren.", RecordType::A, false),
        ),
    ];
    for (label, bytes) in &cases {
        let qps = rate(budget, || {
            let out = stub.handle_query(now, black_box(bytes), Transport::Udp, client);
            assert!(matches!(out, Outcome::Reply(_)));
            black_box(out);
        });
        println!("{label:<10} {:>12.0} queries/s", qps);
    }

    // Forwarded: the query goes out with a fresh ID and its answer comes
    // back; one full round per iteration keeps the pending table steady.
    let fwd = query("example.com.", RecordType::A, false);
    let mut answer = hickory_answer(&fwd, Ipv4Addr::new(93, 184, 215, 14));
    let qps = rate(budget, || {
        let out = stub.handle_query(now, black_box(&fwd), Transport::Udp, client);
        assert_eq!(out, Outcome::Forward);
        let tx = stub.poll_transmit().expect("transmit");
        answer[..2].copy_from_slice(&tx.bytes[..2]);
        let back = stub
            .handle_upstream(now, upstream, &answer)
            .expect("matched");
        black_box(back);
    });
    println!("{:<10} {:>12.0} queries/s", "forwarded", qps);

    let a = &cases[0].1;
    let qps = rate(budget, || {
        black_box(hickory_answer(black_box(a), Ipv4Addr::new(100, 64, 0, 5)));
    });
    println!(
        "{:<10} {:>12.0} queries/s (hickory Message round trip, for comparison)",
        "A/hickory", qps
    );
}
