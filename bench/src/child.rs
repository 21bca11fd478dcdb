//! Child commands for the benchmarks: run one to completion within a
//! deadline and collect its output, and check up front that the tools a
//! benchmark drives are installed.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `cmd` to completion within `timeout`, feeding it `stdin`; returns
/// its stdout, or an error with its stderr.
pub fn run_cmd(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> Result<String> {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // An interrupted run must not leave an iperf3 client or a dnsperf behind.
    warren_e2e::proc::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("start {what}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("write to {what}"))?;
    }
    // Read both pipes on threads so a chatty child (dnsperf -v prints a
    // line per query) never blocks on a full pipe.
    let t_out = read_on_thread(child.stdout.take());
    let t_err = read_on_thread(child.stderr.take());
    let status = warren_e2e::poll_until(timeout, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{what} did not finish within {timeout:?}");
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}): {}{}", err.trim(), out.trim());
    }
    Ok(out)
}

fn read_on_thread<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// [`run_cmd`] without input and with a 30 s deadline, for quick tools.
pub fn run_ok(cmd: Command) -> Result<String> {
    run_cmd(cmd, None, Duration::from_secs(30))
}

/// Fails with the reason when this machine can't run benchmark `bench`
/// (not root, or one of `tools` missing; `packages` says what to install):
/// a benchmark that silently measures nothing is worse than none.
pub fn preflight(bench: &str, tools: &[&str], packages: &str) -> Result<()> {
    match warren_e2e::netns::skip_reason(tools) {
        Some(reason) => {
            bail!("{reason} (bench/run {bench} runs as root; Debian: apt-get install {packages})")
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_input_failure_and_deadline() {
        let mut c = Command::new("cat");
        c.arg("-");
        let out = run_cmd(c, Some("hello\n"), Duration::from_secs(10)).unwrap();
        assert_eq!(out, "hello\n");

        let mut c = Command::new("sh");
        c.args(["-c", "echo oops >&2; exit 3"]);
        let err = run_ok(c).unwrap_err().to_string();
        assert!(err.contains("oops"), "{err}");

        let mut c = Command::new("sleep");
        c.arg("5");
        let err = run_cmd(c, None, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish"), "{err}");
    }
}
