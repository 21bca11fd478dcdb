//! The hot path's allocation budget: answering a query allocates exactly
//! the reply buffer, whatever the size of the name table, so a busy stub
//! does not lean on the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use warren_dns::{Config, Outcome, Stub, Transport};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(7)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    msg.to_vec().unwrap()
}

#[test]
fn answering_allocates_only_the_reply() {
    let mut stub = Stub::with_seed(Config::new("warren"), 1).unwrap();
    let names = (0..1000u32).map(|i| {
        (
            format!("main.ws{i}.alice.warren"),
            vec![IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))],
        )
    });
    assert!(stub.set_names(names).is_empty());
    let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let now = Instant::now();
    for (name, rtype) in [
        ("main.ws500.alice.warren.", RecordType::A),
        ("MAIN.ws999.Alice.warren.", RecordType::A),
        ("nope.warren.", RecordType::AAAA),
        ("ws1.alice.warren.", RecordType::HTTPS),
        ("example.com.", RecordType::A),
    ] {
        let bytes = query(name, rtype);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let out = stub.handle_query(now, &bytes, Transport::Udp, client);
        let count = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(matches!(out, Outcome::Reply(_)), "{name}");
        assert_eq!(count, 1, "allocations answering {name}");
    }
}
