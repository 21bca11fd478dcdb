//! The helper's whole behaviour as one sans-IO state machine.
//!
//! [`ClientState`] composes the session, the workspace directory, the
//! WireGuard peer table, the DNS name table, the tunnel's lifecycle,
//! statistics attribution and ping-target resolution. It takes `now` as a
//! parameter and has no sockets, clocks or tasks, so every rule is tested
//! deterministically with simulated time (see `tests/`). `warrend`'s engine
//! is the thin driver that connects it to IPC, the coordinator connection,
//! the TUN and the sockets.
//!
//! - [`state`]: the machine and its inputs, commands and events.
//! - [`lifecycle`]: the tunnel's Up / Failed / Down with generations and
//!   retries.
//! - [`peers`], [`names`]: directory diffs → peer and DNS-name diffs.
//! - [`stats`]: per-key figures → per-agent figures.
//! - [`ping`]: which agent `warren ping TARGET` means.
//! - [`plan`]: the OS network plan for a connected session.
//! - [`keys`]: the per-session WireGuard key pair.

pub mod confine;
pub mod keys;
pub mod lifecycle;
pub mod names;
pub mod peers;
pub mod ping;
pub mod plan;
pub mod screen;
pub mod state;
pub mod stats;

pub use keys::SessionKeys;
pub use names::NameChange;
pub use peers::PeerChange;
pub use state::{
    ClientConfig, ClientState, Command, ConnectControl, Event, PingTarget, TunnelFacts, TunnelUp,
};
pub use stats::PeerReport;
