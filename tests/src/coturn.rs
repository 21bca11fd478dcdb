//! A private coturn (`turnserver`, Debian package `coturn`) for tests: its
//! own config, database, pid file and log in the test's directory, on a free
//! loopback port, with `use-auth-secret` (the scheme `warren-coord` issues
//! credentials in), killed on drop. [`Coturn::allocate`] runs coturn's own
//! client, `turnutils_uclient`, to prove a set of credentials is accepted.
//! [`Coturn::start_in`] runs one on a lab host instead (a network namespace
//! of [`crate::nat_lab`]), relaying only to the peers the test allows.

use crate::netns::{in_netns, ns_command};
use crate::proc::Proc;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long coturn may take to answer its first STUN request. It answers
/// within a second on an idle machine, but once, in a full test run on two
/// busy cores, one stalled in its start-up for over 15 s; the wait is
/// bounded all the same.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `turnutils_uclient` run may take (it allocates at once, then
/// exchanges a few packets for a few seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

/// Why coturn's programs can't be used here, or `None` if they can.
pub fn missing() -> Option<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    ["turnserver", "turnutils_uclient"]
        .iter()
        .find(|n| !on_path(n))
        .map(|n| {
            format!("{n} is not installed (Debian package `coturn`: apt-get install -y coturn)")
        })
}

/// A running coturn owned by a test.
pub struct Coturn {
    /// `127.0.0.1:PORT` it listens on (UDP).
    pub addr: SocketAddr,
    pub log: PathBuf,
    dir: PathBuf,
    name: String,
    /// The namespace it runs in (`None`: the test's own).
    ns: Option<String>,
    proc: Proc,
}

/// A UDP port free right now on 127.0.0.1.
fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on loopback");
    s.local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// Whether something answers a STUN binding request at `addr`, asked from
/// namespace `ns` (the test's own for `None`).
fn answers_stun(ns: Option<&str>, addr: SocketAddr) -> bool {
    let bound = match ns {
        None => UdpSocket::bind("127.0.0.1:0"),
        Some(ns) => in_netns(ns, || UdpSocket::bind("0.0.0.0:0")),
    };
    let Ok(s) = bound else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    // Binding request: type 0x0001, length 0, magic cookie, transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&rand::random::<[u8; 12]>());
    if s.send_to(&req, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    // A binding success response is type 0x0101.
    matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 20 && buf[..2] == [0x01, 0x01])
}

impl Coturn {
    /// Starts coturn on 127.0.0.1 with `static-auth-secret=secret` and
    /// `realm`, and waits until it answers STUN. Loopback peers are allowed
    /// (this coturn only relays between test processes on this machine).
    pub fn start(dir: &Path, name: &str, secret: &str, realm: &str) -> Coturn {
        let port = free_udp_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = dir.join(format!("{name}.log"));
        let text = format!(
            "listening-ip=127.0.0.1\n\
             relay-ip=127.0.0.1\n\
             listening-port={port}\n\
             use-auth-secret\n\
             static-auth-secret={secret}\n\
             realm={realm}\n\
             no-tls\n\
             no-dtls\n\
             no-tcp-relay\n\
             no-cli\n\
             fingerprint\n\
             allow-loopback-peers\n\
             no-multicast-peers\n\
             userdb={db}\n\
             pidfile={pid}\n\
             log-file={log}\n\
             simple-log\n\
             no-stdout-log\n",
            db = dir.join(format!("{name}.db")).display(),
            pid = dir.join(format!("{name}.pid")).display(),
            log = log.display(),
        );
        Self::launch(dir, name, None, addr, &text)
    }

    /// Starts coturn in namespace `ns` on `ip:3478` (relaying from `ip`
    /// too), with `static-auth-secret=secret` and `realm`, relaying only to
    /// peers in the inclusive ranges `allowed_peers` (coturn refuses the
    /// rest, private ones included); waits until it answers STUN there.
    pub fn start_in(
        dir: &Path,
        name: &str,
        ns: &str,
        ip: Ipv4Addr,
        secret: &str,
        realm: &str,
        allowed_peers: &[(Ipv4Addr, Ipv4Addr)],
    ) -> Coturn {
        let addr: SocketAddr = (ip, 3478).into();
        let mut allowed = String::new();
        for (first, last) in allowed_peers {
            allowed.push_str(&format!("allowed-peer-ip={first}-{last}\n"));
        }
        let text = format!(
            "listening-ip={ip}\n\
             relay-ip={ip}\n\
             listening-port=3478\n\
             use-auth-secret\n\
             static-auth-secret={secret}\n\
             realm={realm}\n\
             no-tls\n\
             no-dtls\n\
             no-tcp-relay\n\
             no-cli\n\
             fingerprint\n\
             no-multicast-peers\n\
             denied-peer-ip=0.0.0.0-255.255.255.255\n\
             {allowed}\
             verbose\n\
             min-port=49152\n\
             max-port=65535\n\
             userdb={db}\n\
             pidfile={pid}\n\
             log-file={log}\n\
             simple-log\n\
             no-stdout-log\n",
            db = dir.join(format!("{name}.db")).display(),
            pid = dir.join(format!("{name}.pid")).display(),
            log = dir.join(format!("{name}.log")).display(),
        );
        Self::launch(dir, name, Some(ns), addr, &text)
    }

    /// Writes `text` as `<name>.conf`, runs `turnserver -c` on it (in `ns`
    /// if given) and waits until it answers STUN at `addr`.
    fn launch(dir: &Path, name: &str, ns: Option<&str>, addr: SocketAddr, text: &str) -> Coturn {
        let log = dir.join(format!("{name}.log"));
        let config = dir.join(format!("{name}.conf"));
        std::fs::write(&config, text).expect("write the coturn config");
        crate::set_mode(&config, 0o600);
        let mut cmd = match ns {
            None => Command::new("turnserver"),
            Some(ns) => ns_command(ns, "turnserver"),
        };
        cmd.arg("-c").arg(&config);
        let mut proc = Proc::spawn(name, dir, cmd, false);
        let started = Instant::now();
        while !answers_stun(ns, addr) {
            if let Some(status) = proc.try_wait() {
                panic!(
                    "coturn exited ({status}) before answering on {addr}; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "coturn did not answer STUN on {addr} within {START_TIMEOUT:?}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn {
            addr,
            log,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ns: ns.map(str::to_string),
            proc,
        }
    }

    /// Runs `turnutils_uclient` against this coturn with `username` and
    /// `password`: two relayed allocations that exchange a packet. `Ok` if
    /// coturn allocated, `Err` with the client's output if not.
    pub fn allocate(&self, username: &str, password: &str) -> Result<(), String> {
        self.allocate_from(None, username, password)
    }

    /// Like [`Coturn::allocate`], with the client run in namespace
    /// `client_ns` (e.g. a lab host behind a NAT); `None`: where coturn runs.
    pub fn allocate_from(
        &self,
        client_ns: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<(), String> {
        let client_ns = client_ns.or(self.ns.as_deref());
        // To a file, not a pipe: a client that fills a pipe nobody reads
        // would hang until the timeout.
        let out_path = self
            .dir
            .join(format!("{}-uclient-{}.out", self.name, crate::unique("")));
        let out = std::fs::File::create(&out_path).expect("create the client's output file");
        let err = out.try_clone().expect("clone the output file");
        let mut client = match client_ns {
            None => Command::new("turnutils_uclient"),
            Some(ns) => ns_command(ns, "turnutils_uclient"),
        };
        let mut child = client
            .args(["-u", username, "-w", password, "-y", "-c", "-n", "1", "-p"])
            .arg(self.addr.port().to_string())
            .arg(self.addr.ip().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start turnutils_uclient");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for turnutils_uclient") {
                break Some(status);
            }
            if started.elapsed() > CLIENT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text =
            String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned();
        match status {
            Some(s) if s.success() && !text.contains("Cannot complete Allocation") => Ok(()),
            Some(s) => Err(format!("turnutils_uclient exited with {s}: {text}")),
            None => Err(format!(
                "turnutils_uclient did not finish within {CLIENT_TIMEOUT:?}: {text}"
            )),
        }
    }

    /// coturn's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it answers STUN asked from namespace `ns` (tried for up to
    /// 5 s: the first datagrams through a fresh NAT may meet ARP).
    pub fn answers_from(&self, ns: &str) -> bool {
        crate::poll_until(Duration::from_secs(5), || {
            answers_stun(Some(ns), self.addr).then_some(())
        })
        .is_some()
    }

    /// SIGKILL: the relay vanishes without a word to its clients.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
}
