//! `warren-agent` as a library: key handling, the client-peer table and the
//! userspace data plane, kept apart from the binary's IO loop so they can be tested.

pub mod dataplane;
pub mod keys;
pub mod peers;
