//! CPU accounting from `/proc/PID/stat`: how many CPU seconds a process
//! (all its threads) has used, for the benchmarks' CPU-per-work figures.

use crate::child::run_ok;
use anyhow::{anyhow, bail, Context, Result};
use std::process::Command;

/// Clock ticks per second for /proc/PID/stat times.
pub fn clock_ticks() -> Result<f64> {
    let mut c = Command::new("getconf");
    c.arg("CLK_TCK");
    let out = run_ok(c)?;
    out.trim()
        .parse::<f64>()
        .with_context(|| format!("getconf CLK_TCK printed {out:?}"))
}

/// Whether `pid` still runs (an exited child stays a zombie until reaped).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| matches!(parse_stat(&stat), Some(s) if !s.exited))
}

/// utime + stime of a whole process (all threads), in seconds; fails if it
/// has exited: a zombie's frozen counters would read as free work.
pub fn cpu_seconds(pid: u32, ticks: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (did the process exit?)"))?;
    let s = parse_stat(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat:?}"))?;
    if s.exited {
        bail!("pid {pid} has exited");
    }
    Ok(s.cpu_ticks as f64 / ticks)
}

/// How often the process's threads have been switched out so far
/// (voluntary and involuntary context switches, summed over
/// `/proc/PID/task/*/status`): each voluntary one is a wait that ended, so
/// their growth over an idle window counts its wake-ups.
pub fn context_switches(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let path = entry?.path().join("status");
        // A thread that ended between the listing and the read counts 0.
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// What the benchmarks read from one /proc/PID/stat.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    /// State Z (zombie) or X (dead).
    pub exited: bool,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses the text of /proc/PID/stat.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name may contain spaces and parentheses; fields resume
    // after its last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After `)` comes field 3 (state), so utime (14) and stime (15) are at
    // indices 11 and 12.
    let exited = matches!(*f.first()?, "Z" | "X");
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Stat {
        exited,
        cpu_ticks: utime + stime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_a_command_name_with_spaces_and_parens() {
        let stat = "1234 (my (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 12345 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                exited: false,
                cpu_ticks: 325
            })
        );
        assert_eq!(parse_stat("1234 (cut"), None);
        assert_eq!(parse_stat("1234 (x) S 1 2"), None);
        // And this very process, which has run a little by now.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some_and(|s| !s.exited), "{own}");
        assert!(process_alive(std::process::id()));
        assert!(cpu_seconds(std::process::id(), clock_ticks().unwrap()).is_ok());
    }

    #[test]
    fn a_zombie_is_not_free() {
        let zombie = "77 (warrend) Z 1 77 77 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 12345 0 0";
        assert!(parse_stat(zombie).unwrap().exited);
        // A real one: an exited child nobody has reaped yet.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let gone = warren_e2e::poll_until(std::time::Duration::from_secs(10), || {
            (!process_alive(pid)).then_some(())
        });
        assert!(gone.is_some(), "pid {pid} still runs");
        let err = cpu_seconds(pid, 100.0).unwrap_err().to_string();
        assert!(err.contains("exited"), "{err}");
        child.wait().unwrap();
    }
}
