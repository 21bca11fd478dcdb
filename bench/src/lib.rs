//! Shared code of Warren's benchmark binaries (`bench/run NAME`).
//!
//! [`report`] is the output format of DESIGN.md's "Tests and measurements":
//! one JSON object per metric and line on stdout, with the baseline and a
//! ratio where above 1 always means Warren is ahead. The other modules are
//! what every benchmark needs around its measurements: running child
//! commands with a deadline ([`child`]), reading a process's CPU time from
//! `/proc` ([`cpu`]), removing namespaces and files when a run is
//! interrupted ([`cleanup`]), and the `main` of a benchmark in the
//! two-namespace lab ([`lab`]). [`soak`] holds the chaos soak's schedule
//! and invariant arithmetic.

pub mod child;
pub mod cleanup;
pub mod cpu;
pub mod lab;
pub mod report;
pub mod soak;
