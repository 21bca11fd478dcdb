//! The coordinator survives connection floods: the real `warren-coord`
//! under a 1,024-descriptor limit takes 2,000 idle connections and 200
//! slowloris requests (one byte every 5 s) while a real client with a token
//! is served within a second throughout, and every idle or trickling
//! connection is closed within its timeout; then 200 wrong secrets for one
//! token id from one address get 429 while the token's owner, elsewhere,
//! and another user at that address keep working.
//!
//! Every source address is a loopback one (127.0.0.0/8 all reaches the
//! listener), so each role gets an address of its own.

use base64::Engine;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use warren_e2e::{Coordinator, TestDir};
use warren_proto::control::{ClientMessage, Register, CONTROL_VERSION};

const IDLE_S: u64 = 3;
const HEADER_S: u64 = 8;
const IDLE_CONNS: usize = 2_000;
const SLOWLORIS_CONNS: usize = 200;
const WRONG_SECRETS: usize = 200;
const NOFILE: u64 = 1_024;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// Raises this test process's own descriptor limit: it holds every flood
/// socket itself.
fn raise_own_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= need,
            "this test needs {need} file descriptors but the hard limit is {}; raise it (ulimit -Hn)",
            lim.rlim_max
        );
        if lim.rlim_cur < need {
            lim.rlim_cur = lim.rlim_max.min(need * 2);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// One `GET /api/v1/me` on a fresh connection from `from`: the status and
/// the response head.
async fn get_me(from: IpAddr, to: SocketAddr, token: &str) -> std::io::Result<(u16, String)> {
    let mut s = connect_from(from, to).await?;
    s.write_all(
        format!(
            "GET /api/v1/me HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no HTTP status in {text:?}"),
            )
        })?;
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    Ok((status, head))
}

/// Reads until EOF (or a reset: closed either way); `Err` if still open
/// after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Result<(), ()> {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// The next text frame from the server (pings and other control frames
/// skipped), within `within`.
async fn ws_next_text(s: &mut TcpStream, within: Duration) -> String {
    tokio::time::timeout(within, async {
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.expect("read a frame header");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    s.read_exact(&mut b).await.expect("read a frame length");
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    s.read_exact(&mut b).await.expect("read a frame length");
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.expect("read a frame");
            if h[0] & 0x0f == 1 {
                return String::from_utf8(payload).expect("text frame is UTF-8");
            }
        }
    })
    .await
    .expect("no message from the coordinator in time")
}

/// Opens the control WebSocket from `from` and registers; returns the
/// socket once the welcome has come.
async fn open_control(from: IpAddr, to: SocketAddr, token: &str) -> TcpStream {
    let mut s = connect_from(from, to)
        .await
        .expect("connect for the WebSocket");
    s.write_all(
        format!(
            "GET /api/v1/connect HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut b))
            .await
            .expect("the upgrade was answered within 1 s")
            .expect("read the upgrade answer");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    let key: [u8; 32] = rand::random();
    let register = ClientMessage::Register(Register {
        protocol_version: CONTROL_VERSION,
        public_key: base64::engine::general_purpose::STANDARD.encode(key),
        endpoints: vec!["127.0.0.2:51820".parse().expect("literal endpoint")],
        hostname: Some("flood-test".into()),
        app_version: "test".into(),
    });
    let json = serde_json::to_vec(&register).expect("serialize register");
    s.write_all(&warren_e2e::wire::ws_frame(1, &json))
        .await
        .expect("send register");
    let welcome = ws_next_text(&mut s, Duration::from_secs(1)).await;
    assert!(
        welcome.contains("\"welcome\""),
        "expected a welcome: {welcome}"
    );
    s
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What the real client saw while the flood went on.
#[derive(Default)]
struct Probes {
    count: usize,
    slowest: Duration,
    failures: Vec<String>,
    max_fds: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_survives_floods_under_1024_descriptors() {
    raise_own_nofile(4_096);
    let dir = TestDir::new("flood");
    let coord = Coordinator::start_with_args(
        dir.path(),
        "info",
        &[
            "--idle-timeout",
            &IDLE_S.to_string(),
            "--header-timeout",
            &HEADER_S.to_string(),
            "--max-connections-per-address",
            "400",
            "--auth-failures-burst",
            "5",
            "--auth-failures-per-minute",
            "6",
        ],
        Some(NOFILE),
    );
    let token = coord.user_with_token("alice");
    let neighbour = coord.user_with_token("bob");
    let addr = coord.addr;
    let pid = coord.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let nofile_line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    assert!(
        nofile_line
            .split_whitespace()
            .filter(|w| *w == "1024")
            .count()
            == 2,
        "the coordinator runs with another limit: {nofile_line}"
    );

    // The real client: a WebSocket held open through the flood, and a
    // GET /api/v1/me every 200 ms, each on a new connection, each within 1 s.
    let client = ip("127.0.0.2");
    let mut control = open_control(client, addr, &token).await;
    let probes = Arc::new(Mutex::new(Probes::default()));
    let flooding = Arc::new(AtomicBool::new(true));
    let prober = {
        let (probes, flooding, token) = (probes.clone(), flooding.clone(), token.clone());
        // Its own thread and runtime: the flood's thousands of sockets in
        // this test's runtime must not delay the probe's own clock.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("probe runtime");
            rt.block_on(async move {
                while flooding.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let r =
                        tokio::time::timeout(Duration::from_secs(1), get_me(client, addr, &token))
                            .await;
                    let took = started.elapsed();
                    let fds = open_fds(pid);
                    {
                        let mut p = probes.lock().expect("probe lock");
                        p.count += 1;
                        p.slowest = p.slowest.max(took);
                        p.max_fds = p.max_fds.max(fds);
                        match r {
                            Ok(Ok((200, _))) => {}
                            Ok(Ok((status, head))) => {
                                p.failures.push(format!("status {status}: {head}"))
                            }
                            Ok(Err(e)) => p.failures.push(format!("error after {took:?}: {e}")),
                            Err(_) => p.failures.push("no answer within 1 s".into()),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        })
    };

    // 2,000 idle connections from two addresses, 1,000 each: more than the
    // per-address limit and, with the slowloris below, the global one.
    let flood_started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE_CONNS);
    for i in 0..IDLE_CONNS {
        let from = if i % 2 == 0 {
            ip("127.0.0.1")
        } else {
            ip("127.0.0.4")
        };
        let s = connect_from(from, addr)
            .await
            .unwrap_or_else(|e| panic!("idle connection {i} could not connect: {e}"));
        idle.push((Instant::now(), s));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let idle_tasks: Vec<_> = idle
        .into_iter()
        .map(|(opened, mut s)| {
            tokio::spawn(async move {
                let left = (opened + Duration::from_secs(IDLE_S + 2))
                    .saturating_duration_since(Instant::now());
                closed_within(&mut s, left).await.map(|()| opened.elapsed())
            })
        })
        .collect();

    // 200 slowloris requests from a third address: a byte of a request
    // head at once and then one every 5 s.
    let head =
        format!("GET /api/v1/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
            .into_bytes();
    let mut slow_tasks = Vec::with_capacity(SLOWLORIS_CONNS);
    for i in 0..SLOWLORIS_CONNS {
        let mut s = connect_from(ip("127.0.0.3"), addr)
            .await
            .unwrap_or_else(|e| panic!("slowloris connection {i} could not connect: {e}"));
        let head = head.clone();
        slow_tasks.push(tokio::spawn(async move {
            let first = Instant::now();
            let mut sent = 0;
            let mut buf = [0u8; 1024];
            let limit = first + Duration::from_secs(HEADER_S + 3);
            loop {
                if sent < head.len() && s.write_all(&head[sent..sent + 1]).await.is_err() {
                    return Ok((first.elapsed(), sent));
                }
                sent += 1;
                let next = (first + Duration::from_secs(5 * sent as u64)).min(limit);
                match tokio::time::timeout_at(next.into(), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Ok((first.elapsed(), sent)),
                    Ok(Ok(n)) => {
                        return Err(format!(
                            "answered a half-sent request: {:?}",
                            String::from_utf8_lossy(&buf[..n])
                        ))
                    }
                    Err(_) if Instant::now() >= limit => {
                        return Err(format!("still open after {:?}", first.elapsed()))
                    }
                    Err(_) => {}
                }
            }
        }));
    }

    let mut idle_closed_after = Duration::ZERO;
    for t in idle_tasks {
        match t.await.expect("idle task") {
            Ok(after) => idle_closed_after = idle_closed_after.max(after),
            Err(()) => panic!(
                "an idle connection was still open {} s after it opened",
                IDLE_S + 2
            ),
        }
    }
    let mut slow_closed = Vec::new();
    for t in slow_tasks {
        match t.await.expect("slowloris task") {
            Ok(r) => slow_closed.push(r),
            Err(e) => panic!("slowloris connection: {e}"),
        }
    }
    flooding.store(false, Ordering::Relaxed);
    prober.join().expect("prober thread");
    let flood_took = flood_started.elapsed();

    let p = std::mem::take(&mut *probes.lock().expect("probe lock"));
    eprintln!(
        "flood over in {flood_took:?}: idle connections all closed within {idle_closed_after:?}; {} probes, slowest {:?}; at most {} descriptors open in the coordinator",
        p.count, p.slowest, p.max_fds
    );
    assert!(
        p.failures.is_empty(),
        "the real client was not served: {:?}",
        p.failures
    );
    assert!(p.count >= 20, "too few probes ran: {}", p.count);
    assert!(
        p.max_fds < NOFILE as usize,
        "descriptors ran out: {}",
        p.max_fds
    );
    // Each slowloris request kept trickling past the idle timeout, and the
    // header timeout (from its first byte) closed it.
    for (after, sent) in &slow_closed {
        assert!(
            *after <= Duration::from_secs(HEADER_S + 2),
            "a slowloris connection was closed only after {after:?}"
        );
        assert!(
            *after >= Duration::from_secs(IDLE_S) && *sent >= 2,
            "a slowloris connection was closed after {after:?} and {sent} bytes, before its header timeout"
        );
    }

    // The WebSocket outlived the idle timeout and still answers.
    control
        .write_all(&warren_e2e::wire::ws_frame(1, b"{}"))
        .await
        .expect("write to the WebSocket");
    let mut answer = ws_next_text(&mut control, Duration::from_secs(1)).await;
    while !answer.contains("\"error\"") {
        answer = ws_next_text(&mut control, Duration::from_secs(1)).await;
    }
    assert!(answer.contains("ignored"), "{answer}");

    // 200 wrong secrets for the owner's token id from one address.
    let attacker = ip("127.0.0.5");
    let id_part = &token[..21];
    let (mut unauthorized, mut throttled) = (0, 0);
    for i in 0..WRONG_SECRETS {
        // A well-formed secret (32 bytes, base64url), just not this token's.
        let secret: [u8; 32] = rand::random();
        let wrong = format!(
            "{id_part}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let (status, head) =
            tokio::time::timeout(Duration::from_secs(2), get_me(attacker, addr, &wrong))
                .await
                .unwrap_or_else(|_| panic!("wrong secret {i} got no answer within 2 s"))
                .unwrap_or_else(|e| panic!("wrong secret {i}: {e}"));
        match status {
            401 => unauthorized += 1,
            429 => {
                throttled += 1;
                let retry_after = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("retry-after")
                            .then(|| value.trim().parse::<u64>().ok())
                            .flatten()
                    })
                    .unwrap_or_else(|| panic!("a 429 without Retry-After: {head}"));
                assert!(retry_after >= 1, "{head}");
            }
            other => panic!("wrong secret {i} got {other}: {head}"),
        }
        if i % 50 == 0 {
            // The owner, from another address, is never locked out; nor is
            // another user's token from the guessing address.
            let (status, head) = get_me(client, addr, &token).await.expect("owner's request");
            assert_eq!(status, 200, "the owner was refused: {head}");
            let (status, head) = get_me(attacker, addr, &neighbour)
                .await
                .expect("neighbour's request");
            assert_eq!(
                status, 200,
                "a neighbour at that address was refused: {head}"
            );
        }
    }
    eprintln!("wrong secrets: {unauthorized} × 401, {throttled} × 429");
    // A burst of 5 gets a plain 401 (a sixth if a token came back meanwhile).
    assert!(
        (5..=6).contains(&unauthorized),
        "{unauthorized} wrong secrets got a plain 401"
    );
    assert!(
        throttled >= WRONG_SECRETS - 10,
        "only {throttled} of {WRONG_SECRETS} wrong secrets were throttled"
    );
    let (status, head) = get_me(client, addr, &token).await.expect("owner's request");
    assert_eq!(status, 200, "the owner was refused: {head}");

    // Refusals and evictions are logged, but not once per socket.
    let log = std::fs::read_to_string(&coord.stderr_paths()[0]).unwrap_or_default();
    let limit_lines = log.matches("connection limits reached").count()
        + log.matches("refusing connections over the limits").count();
    assert!(limit_lines >= 1, "the flood left no trace in the log");
    // Nothing else logs per socket either: far fewer lines than sockets.
    let lines = log.lines().count();
    assert!(
        lines < 100,
        "{lines} log lines for {} sockets:\n{log}",
        IDLE_CONNS + SLOWLORIS_CONNS + WRONG_SECRETS
    );
    let allowed = 2 * (flood_took.as_secs() / 10 + 2);
    assert!(
        (limit_lines as u64) <= allowed,
        "{limit_lines} log lines about limits in {flood_took:?}: not rate-limited"
    );
}
