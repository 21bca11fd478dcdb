//! The path layer: how datagrams reach a peer when neither side has a
//! public address. It shares the tunnel's one UDP socket, so the first job
//! is telling apart what arrives on it ([`demux`]): STUN (connectivity
//! checks and server answers), TURN ChannelData (relayed traffic) and
//! WireGuard. Sans-IO like the rest of the client core.

pub mod demux;
pub mod paths;
pub mod select;
pub mod turn;

pub use demux::{classify, Datagram, DemuxError};
pub use paths::{Incoming, PathEvent, PathInfo, Paths, RelayServer, Role, Route};
pub use select::{Path, PathSelector};
