//! The data path must not allocate: once a session exists, `encapsulate` and
//! `decapsulate` work in the caller's buffers. A counting global allocator
//! (armed only on the measuring thread) checks it over thousands of packets
//! in both directions, including the periodic refresh of boringtun's timers.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{ip_packet, no_clock, Net};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ARMED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: defers every operation to the system allocator unchanged; the
// counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encapsulate_and_decapsulate_do_not_allocate() {
    let mut net = Net::pair(no_clock);
    assert_eq!(net.send(0, 1, b"handshake"), Ok(false));
    net.deliver_all();
    assert_eq!(net.send(1, 0, b"confirm"), Ok(true));
    net.deliver_all();

    let (a_udp, b_udp) = (net.nodes[0].udp, net.nodes[1].udp);
    let to_b = ip_packet(net.nodes[0].ip, net.nodes[1].ip, &[7u8; 1260]);
    let to_a = ip_packet(net.nodes[1].ip, net.nodes[0].ip, &[9u8; 1260]);
    let mut wire = vec![0u8; 2048];
    let mut tun = vec![0u8; 2048];
    let [a, b] = &mut net.nodes[..] else {
        unreachable!("the pair has two nodes")
    };
    let mut now = net.now;
    let mut delivered = 0usize;

    // The counter sees allocations on this thread at all.
    ARMED.with(|armed| armed.set(true));
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    ARMED.with(|armed| armed.set(false));
    assert_eq!(ALLOCATIONS.swap(0, Ordering::Relaxed), 1);

    ARMED.with(|armed| armed.set(true));
    for _ in 0..5_000 {
        // 1 ms per round: 5 s in all, so boringtun's timers are refreshed
        // from the data path about 20 times.
        now += Duration::from_millis(1);
        let t = a
            .tunnel
            .encapsulate(now, &to_b, &mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(t.dst, b_udp);
        let len = t.payload.len();
        let p = b
            .tunnel
            .decapsulate(now, a_udp, &wire[..len], &mut tun)
            .unwrap();
        delivered += usize::from(p.is_some_and(|p| p.len() == to_b.len()));

        let t = b
            .tunnel
            .encapsulate(now, &to_a, &mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(t.dst, a_udp);
        let len = t.payload.len();
        let p = a
            .tunnel
            .decapsulate(now, b_udp, &wire[..len], &mut tun)
            .unwrap();
        delivered += usize::from(p.is_some_and(|p| p.len() == to_a.len()));
    }
    ARMED.with(|armed| armed.set(false));

    assert_eq!(delivered, 10_000);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the data path allocated"
    );
    assert!(a.tunnel.poll_transmit().is_none());
    assert!(b.tunnel.poll_transmit().is_none());
}
