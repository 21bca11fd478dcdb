//! A 10 MiB download through the tunnel arrives intact (same SHA-256 as the
//! file the workspace serves), and a port the agent does not forward is
//! refused at once (curl exit 7, connection refused) rather than left to time
//! out. Laptop and workspace namespaces, real binaries; needs root.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use warren_e2e::netns::{http_server, http_url, in_netns, AgentOptions, HelperOptions, TunnelLab};

const SIZE: usize = 10 * 1024 * 1024;

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run sha256sum {}: {e}", path.display()));
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_large_file_arrives_intact_and_a_closed_port_is_refused() {
    let Some(lab) = TunnelLab::start_or_skip("tunnel-download", &["sha256sum"]) else {
        return;
    };
    // Random bytes: compressible or repeated content could hide corruption.
    let root = lab.dir.join("www");
    std::fs::create_dir_all(&root).expect("create the web root");
    let file = root.join("big.bin");
    let mut data = vec![0u8; SIZE];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    std::fs::write(&file, &data).expect("write the 10 MiB file");
    let want = sha256(&file);
    let _http = http_server(lab.dir.path(), "http", &lab.net.workspace, 8080, &root);
    // Listening, but not in --allow-ports: the agent must refuse it.
    let other = lab.dir.join("other");
    std::fs::create_dir_all(&other).expect("create the second web root");
    let _other = http_server(lab.dir.path(), "http9090", &lab.net.workspace, 9090, &other);

    let agent = lab.agent(AgentOptions::new("ws", "api").allow_ports("8080"));
    let helper = lab.helper(HelperOptions::default());
    lab.login_up(&helper);
    let v4 = lab.wait_agent(&helper, "ws", "api").v4();

    let url = http_url(v4, 8080, "big.bin");
    let out = lab.dir.join("downloaded.bin");
    let out_s = out.to_string_lossy().into_owned();
    // The first try may meet the handshake; retry a few times (bounded).
    let mut last = None;
    for _ in 0..3 {
        let r = lab.curl(&["-s", "-S", "--max-time", "60", "-o", &out_s, &url]);
        let ok = r.ok();
        last = Some(r);
        if ok {
            break;
        }
    }
    let r = last.expect("at least one try");
    if !r.ok() {
        helper.print_log_tail(40);
        agent.print_log_tail(40);
        panic!(
            "downloading {url} failed (curl exit {}): {}",
            r.code, r.stderr
        );
    }
    let got = sha256(&out);
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let secs = r.elapsed.as_secs_f64();
    eprintln!(
        "downloaded {len} bytes in {:.3} s ({:.1} Mbit/s) through the tunnel; sha256 {got}",
        secs,
        len as f64 * 8.0 / secs / 1e6
    );
    assert_eq!(len as usize, SIZE, "the download has the wrong length");
    assert_eq!(
        got, want,
        "the download's SHA-256 differs from the served file"
    );

    // Port 9090 listens in the workspace, but only 8080 is forwarded.
    let closed = http_url(v4, 9090, "");
    let r = lab.curl(&["-sS", "--max-time", "10", &closed]);
    eprintln!(
        "curl to the unforwarded port: exit {} after {:?}: {}",
        r.code,
        r.elapsed,
        r.stderr.trim()
    );
    assert_eq!(
        r.code, 7,
        "curl {closed} should fail with `connection refused` (7), got exit {}: {}",
        r.code, r.stderr
    );
    // curl says only "Couldn't connect"; a plain connect tells a reset
    // (refused) from an unreachable or a timeout.
    let target = SocketAddr::new(v4, 9090);
    let err = in_netns(&lab.net.laptop, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)).err()
    });
    eprintln!("TCP connect to {target}: {err:?}");
    assert_eq!(
        err.as_ref().map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionRefused),
        "connecting to the unforwarded port should be refused"
    );
    assert!(
        r.elapsed < Duration::from_secs(2),
        "the refusal took {:?}: it should be a reset, not a timeout",
        r.elapsed
    );
    // And 8080 still works after the refusal.
    let again = lab.curl(&["-s", "--max-time", "10", "-o", "/dev/null", &url]);
    assert!(
        again.ok(),
        "8080 stopped working after the refused connection"
    );
}
