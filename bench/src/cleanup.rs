//! Cleanup when a benchmark is interrupted: a signal ends the process
//! without unwinding, so no `Drop` runs; what was registered here (network
//! namespaces, sockets, the run's directory, a child that outlives us) is
//! removed on SIGINT / SIGTERM before exiting. Most children die with us
//! through PR_SET_PDEATHSIG.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// What to remove if the run is interrupted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    Netns(String),
    File(PathBuf),
    /// A directory, e.g. the run's own: kept with its logs when a run
    /// fails, but an interrupted run is not a failure to read up on.
    Dir(PathBuf),
    /// A child that would outlive the run: one that changes its
    /// credentials (dnsmasq drops capabilities) loses PR_SET_PDEATHSIG.
    Process(u32),
}

/// Keeps a [`Leftover`] registered until dropped: declare it after what it
/// guards, so it is unregistered before that is cleaned up the ordinary way
/// (a reaped child's pid may be reused).
#[must_use = "the leftover is unregistered when this is dropped"]
pub struct Registered(Leftover);

impl Drop for Registered {
    fn drop(&mut self) {
        unregister(&self.0);
    }
}

/// [`register`]s `l` until the returned guard is dropped.
pub fn register_guard(l: Leftover) -> Registered {
    register(l.clone());
    Registered(l)
}

static LEFTOVERS: Mutex<Vec<Leftover>> = Mutex::new(Vec::new());

/// Removes `l` on an interrupt from now on.
pub fn register(l: Leftover) {
    if let Ok(mut v) = LEFTOVERS.lock() {
        v.push(l);
    }
}

/// Forgets `l` (it was cleaned up the ordinary way).
pub fn unregister(l: &Leftover) {
    if let Ok(mut v) = LEFTOVERS.lock() {
        v.retain(|x| x != l);
    }
}

fn registered() -> Vec<Leftover> {
    LEFTOVERS.lock().map(|v| v.clone()).unwrap_or_default()
}

fn remove_leftovers() {
    for l in registered() {
        match l {
            Leftover::Netns(n) => {
                let _ = Command::new("ip")
                    .args(["netns", "del", &n])
                    .stderr(Stdio::null())
                    .status();
            }
            Leftover::File(p) => {
                let _ = std::fs::remove_file(p);
            }
            Leftover::Dir(p) => {
                let _ = std::fs::remove_dir_all(p);
            }
            Leftover::Process(pid) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// On SIGINT / SIGTERM: remove what was registered, then exit with 130.
pub fn cleanup_on_signal(bench: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the signal runtime")?;
    let bench = bench.to_owned();
    std::thread::spawn(move || {
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("bench {bench}: interrupted; removing its namespaces and files");
            remove_leftovers();
            std::process::exit(130);
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_unregister_and_remove() {
        let dir = std::env::temp_dir().join(format!("warren-bench-cleanup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let file = dir.with_extension("sock");
        std::fs::write(&file, b"x").unwrap();
        let kept = Leftover::File(dir.with_extension("kept"));
        register(Leftover::Dir(dir.clone()));
        register(Leftover::File(file.clone()));
        register(kept.clone());
        unregister(&kept);
        assert!(!registered().contains(&kept));
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let guarded = Leftover::Process(child.id());
        {
            let _g = register_guard(guarded.clone());
            assert!(registered().contains(&guarded));
        }
        assert!(!registered().contains(&guarded));
        register(guarded.clone());
        remove_leftovers();
        assert!(!dir.exists());
        assert!(!file.exists());
        let killed = warren_e2e::poll_until(std::time::Duration::from_secs(10), || {
            child.try_wait().ok().flatten()
        });
        assert!(killed.is_some_and(|st| !st.success()), "{killed:?}");
        unregister(&guarded);
        unregister(&Leftover::Dir(dir));
        unregister(&Leftover::File(file));
    }
}
