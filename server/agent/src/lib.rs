//! `warren-agent` as a library: key handling and the client-peer table,
//! kept apart from the binary's IO loop so they can be tested.

pub mod keys;
pub mod peers;
