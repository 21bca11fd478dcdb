//! The `main` of a benchmark that runs in `warren_e2e::netns::TunnelLab`
//! (a laptop and a workspace namespace): the checks before, the Ctrl-C
//! cleanup, the lab around the measurements and the summary after, the
//! same for every such benchmark.

use crate::cleanup::{cleanup_on_signal, register, Leftover};
use crate::report::print_load_at_start;
use anyhow::Result;
use std::path::Path;
use std::time::Instant;
use warren_e2e::netns::TunnelLab;

/// Runs benchmark `bench`: `preflight` (exit 1 if it fails), `config` from
/// the environment (exit 2), then `measure` in a fresh lab, whose summary
/// lines go to stderr. A failed measurement panics while the lab is still
/// up, so the harness prints the coordinator's log tail and keeps the run's
/// directory with every log.
pub fn run_in_lab<C>(
    bench: &str,
    preflight: impl FnOnce() -> Result<()>,
    config: impl FnOnce() -> Result<C>,
    measure: impl FnOnce(&TunnelLab, &C) -> Result<Vec<String>>,
) {
    if let Err(e) = preflight().and_then(|_| cleanup_on_signal(bench)) {
        eprintln!("bench {bench}: {e:#}");
        std::process::exit(1);
    }
    let cfg = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench {bench}: {e:#}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    print_load_at_start(bench);
    let lab = TunnelLab::start(&format!("bench-{bench}"));
    for ns in [&lab.net.laptop, &lab.net.workspace] {
        register(Leftover::Netns(ns.clone()));
        // A namespace's own resolv.conf lives here (the DNS bench uses it).
        register(Leftover::Dir(Path::new("/etc/netns").join(ns)));
    }
    register(Leftover::Dir(lab.dir.path().to_path_buf()));
    let summary = measure(&lab, &cfg).unwrap_or_else(|e| panic!("bench {bench} failed: {e:#}"));
    drop(lab);
    eprintln!(
        "\n== bench {bench}: results against targets ({:.0} s) ==",
        started.elapsed().as_secs_f64()
    );
    for l in &summary {
        eprintln!("  {l}");
    }
}
