//! Simulated-time tests of warren-tunnel live in `tests/`; this library is empty.
