//! The sans-IO TURN client against a real coturn (`turnserver`, Debian
//! package `coturn`) on 127.0.0.1, driven over real UDP sockets: allocate
//! with `use-auth-secret` credentials, relay to a plain UDP "peer" by Send
//! indication and by ChannelData and back, refuse expired credentials,
//! keep a live allocation on its username, take back an allocation left on
//! the same port by an earlier run.
//!
//! Each test runs its own coturn (`warren_e2e::coturn`) on a free port with
//! its config, database, pid file and log in the test's directory, killed on
//! drop even when the test fails. Without coturn installed the tests fail,
//! unless `WARREN_ALLOW_SKIP=1` allows skipping them on purpose.
//! `TURN_TRACE=1` prints the first bytes of every datagram each way.

#![cfg(target_os = "linux")]

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use warren_e2e::coturn::{self, Coturn};
use warren_e2e::TestDir;
use warren_path::turn::{Allocation, Credentials, Failure, TurnEvent};

const SECRET: &str = "coturn-test-secret";
const REALM: &str = "warren.test";

/// A coturn of this test's own in `dir` (see `warren_e2e::coturn`), or
/// `None` when coturn is missing and skipping is allowed.
fn start_coturn(dir: &TestDir, test: &str) -> Option<Coturn> {
    if !warren_e2e::run_or_skip(test, coturn::missing().as_deref()) {
        return None;
    }
    Some(Coturn::start(dir.path(), "coturn", SECRET, REALM))
}

/// coturn's `use-auth-secret` credentials valid until `expiry` (Unix s).
fn credentials(expiry: u64, id: &str) -> Credentials {
    let username = format!("{expiry}:{id}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Credentials::new(username, password).unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The client side: the allocation and its real socket.
struct Client {
    allocation: Allocation,
    sock: UdpSocket,
    relayed: Vec<(SocketAddr, Vec<u8>)>,
    seen: Vec<TurnEvent>,
}

impl Client {
    fn new(server: SocketAddr, credentials: Credentials) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Self {
            allocation: Allocation::new(Instant::now(), server, credentials),
            sock,
            relayed: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Runs the allocation over the socket until `done` says so (for an
    /// event or relayed data), for at most `limit`.
    fn drive(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            while let Some(t) = self.allocation.poll_transmit() {
                if std::env::var_os("TURN_TRACE").is_some() {
                    eprintln!("-> {:02x?}", &t.payload[..2]);
                }
                self.sock.send_to(&t.payload, t.dst).unwrap();
            }
            while let Some(e) = self.allocation.poll_event() {
                self.seen.push(e);
            }
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = self
                .allocation
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(50))
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            self.sock.set_read_timeout(Some(wait)).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if std::env::var_os("TURN_TRACE").is_some() {
                        eprintln!("<- {:02x?}", &buf[..n.min(40)]);
                    }
                    match self
                        .allocation
                        .handle_input(Instant::now(), from, &buf[..n])
                    {
                        Ok(Some(r)) => self.relayed.push((r.peer, r.payload.into_owned())),
                        Ok(None) => {}
                        Err(e) => eprintln!("dropped a datagram: {e}"),
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("recv: {e}"),
            }
            let now = Instant::now();
            if self.allocation.poll_timeout().is_some_and(|t| t <= now) {
                self.allocation.handle_timeout(now);
            }
        }
    }

    fn wait_event(
        &mut self,
        what: &str,
        coturn: &Coturn,
        pred: impl Fn(&TurnEvent) -> bool,
    ) -> TurnEvent {
        let found = self.drive(Duration::from_secs(10), |c| c.seen.iter().any(&pred));
        assert!(
            found,
            "no {what} within 10 s; events {:?}; coturn log:\n{}",
            self.seen,
            coturn.log_text()
        );
        let i = self.seen.iter().position(&pred).unwrap();
        self.seen.remove(i)
    }
}

fn recv_on(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = peer
        .recv_from(&mut buf)
        .expect("the peer received nothing from the relay within 5 s");
    (buf[..n].to_vec(), from)
}

#[test]
fn relays_both_ways_through_coturn() {
    let dir = TestDir::new("relays_both_ways_through_coturn");
    let Some(coturn) = start_coturn(&dir, "relays_both_ways_through_coturn") else {
        return;
    };
    let mut client = Client::new(coturn.addr, credentials(unix_now() + 3600, "device-1"));
    let TurnEvent::Allocated {
        relayed, mapped, ..
    } = client.wait_event("allocation", &coturn, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    })
    else {
        unreachable!()
    };
    assert_eq!(relayed.ip(), coturn.addr.ip());
    assert_ne!(relayed.port(), coturn.addr.port());
    assert_eq!(
        mapped,
        client.sock.local_addr().unwrap(),
        "XOR-MAPPED-ADDRESS is our socket"
    );

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();

    // Permission only: a Send indication out, a Data indication back.
    client
        .allocation
        .create_permission(Instant::now(), peer_addr.ip())
        .unwrap();
    client.wait_event("permission", &coturn, |e| {
        matches!(e, TurnEvent::PermissionCreated { .. })
    });
    let t = client
        .allocation
        .encapsulate(peer_addr, b"via send")
        .unwrap();
    assert_eq!(t.payload[0] & 0xC0, 0, "a STUN Send indication");
    client.sock.send_to(&t.payload, t.dst).unwrap();
    assert_eq!(recv_on(&peer), (b"via send".to_vec(), relayed));
    peer.send_to(b"back via data", relayed).unwrap();
    assert!(
        client.drive(Duration::from_secs(5), |c| !c.relayed.is_empty()),
        "no Data indication came back"
    );
    assert_eq!(
        client.relayed.remove(0),
        (peer_addr, b"back via data".to_vec())
    );

    // A channel: ChannelData both ways.
    let channel = client
        .allocation
        .bind_channel(Instant::now(), peer_addr)
        .unwrap();
    client.wait_event("channel binding", &coturn, |e| {
        matches!(e, TurnEvent::ChannelBound { .. })
    });
    let t = client
        .allocation
        .encapsulate(peer_addr, b"via channel")
        .unwrap();
    assert_eq!(u16::from_be_bytes([t.payload[0], t.payload[1]]), channel);
    client.sock.send_to(&t.payload, t.dst).unwrap();
    assert_eq!(recv_on(&peer), (b"via channel".to_vec(), relayed));
    // An odd length: coturn pads ChannelData over UDP or not; both parse.
    peer.send_to(b"back via channel", relayed).unwrap();
    peer.send_to(b"odd", relayed).unwrap();
    assert!(
        client.drive(Duration::from_secs(5), |c| c.relayed.len() >= 2),
        "no ChannelData came back"
    );
    assert_eq!(
        client.relayed,
        vec![
            (peer_addr, b"back via channel".to_vec()),
            (peer_addr, b"odd".to_vec())
        ]
    );

    // Deallocate: the relayed port stops relaying.
    client.allocation.close(Instant::now());
    client.wait_event("close", &coturn, |e| *e == TurnEvent::Closed);
    assert!(client.allocation.is_finished());
    assert!(!has_any_error(&coturn.log));
}

/// Whether coturn logged an internal error (not a refused client).
fn has_any_error(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("ERROR") && !l.contains("401") && !l.contains("438"))
}

#[test]
fn expired_credentials_are_refused() {
    let dir = TestDir::new("expired_credentials_are_refused");
    let Some(coturn) = start_coturn(&dir, "expired_credentials_are_refused") else {
        return;
    };
    let mut client = Client::new(coturn.addr, credentials(unix_now() - 60, "device-2"));
    client.wait_event("credentials request", &coturn, |e| {
        *e == TurnEvent::CredentialsNeeded
    });
    assert!(!client.allocation.is_allocated());
    // coturn ties this 5-tuple to the expired username: fresh credentials
    // from the same socket are refused (437), and say so.
    client
        .allocation
        .update_credentials(Instant::now(), credentials(unix_now() + 3600, "device-2"));
    let e = client.wait_event("the answer to fresh credentials", &coturn, |e| {
        matches!(
            e,
            TurnEvent::Allocated { .. } | TurnEvent::AllocationFailed(_)
        )
    });
    assert!(
        matches!(
            &e,
            TurnEvent::AllocationFailed(Failure::Rejected {
                code: 437 | 441,
                ..
            })
        ),
        "{e:?}"
    );
    // From a new socket they work.
    let mut client = Client::new(coturn.addr, credentials(unix_now() + 3600, "device-2"));
    client.wait_event("allocation", &coturn, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    });
    client.allocation.close(Instant::now());
    client.wait_event("close", &coturn, |e| *e == TurnEvent::Closed);
}

#[test]
fn a_restart_on_the_same_port_takes_the_allocation_back() {
    let dir = TestDir::new("a_restart_on_the_same_port_takes_the_allocation_back");
    let Some(coturn) = start_coturn(&dir, "a_restart_on_the_same_port_takes_the_allocation_back")
    else {
        return;
    };
    let mut client = Client::new(coturn.addr, credentials(unix_now() + 3600, "device-4"));
    client.wait_event("allocation", &coturn, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    });
    // The process "crashes": the allocation is dropped unclosed, and a new
    // one starts on the same socket (the same 5-tuple).
    client.allocation = Allocation::new(
        Instant::now(),
        coturn.addr,
        credentials(unix_now() + 3600, "device-4"),
    );
    client.seen.clear();
    client.wait_event("allocation after the restart", &coturn, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    });
    client.allocation.close(Instant::now());
    client.wait_event("close", &coturn, |e| *e == TurnEvent::Closed);
}

#[test]
fn new_credentials_do_not_disturb_a_live_allocation() {
    let dir = TestDir::new("new_credentials_do_not_disturb_a_live_allocation");
    let Some(coturn) = start_coturn(&dir, "new_credentials_do_not_disturb_a_live_allocation")
    else {
        return;
    };
    let mut client = Client::new(coturn.addr, credentials(unix_now() + 3600, "device-3"));
    client.wait_event("allocation", &coturn, |e| {
        matches!(e, TurnEvent::Allocated { .. })
    });
    // coturn answers a new username on this allocation with 441; the
    // client keeps signing with the one the allocation was made with.
    client
        .allocation
        .update_credentials(Instant::now(), credentials(unix_now() + 7200, "device-3"));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .allocation
        .create_permission(Instant::now(), peer.local_addr().unwrap().ip())
        .unwrap();
    client.wait_event("permission", &coturn, |e| {
        matches!(e, TurnEvent::PermissionCreated { .. })
    });
    client.allocation.close(Instant::now());
    client.wait_event("close", &coturn, |e| *e == TurnEvent::Closed);
}
