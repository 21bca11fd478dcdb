//! `warrend`, the Warren helper, as a library so its pieces can be tested.
//!
//! - [`engine`]: the single task that owns the session state machine, the
//!   workspace directory and the list of subscribers; it never awaits a
//!   client or the network, so nothing can stall it.
//! - [`control_task`]: one coordinator connection (one session generation).
//! - [`subscribers`]: per-client bounded, coalescing outgoing queues.
//! - [`events`]: pre-serialized events, chunked under the IPC frame cap.
//! - [`connection`]: one GUI/CLI connection: handshake, requests, writer.
//! - [`log_forward`]: log lines to subscribed GUIs.
//! - [`tunnel_driver`]: the WireGuard data plane's manager (OS
//!   configuration, the UDP socket, start/stop); off with `--no-tunnel`.
//! - [`datapath`]: the packet loop between the TUN and the UDP socket.
//! - [`observe`]: per-peer statistics and `warren ping`, sans-IO.
//! - [`dns_driver`]: the DNS stub's sockets (port 53 on the tunnel
//!   addresses) and the resolv.conf mode's forwarding and file watch.

pub mod connection;
pub mod control_task;
pub mod datapath;
pub mod dns_driver;
pub mod engine;
pub mod events;
pub mod log_forward;
pub mod observe;
pub mod subscribers;
pub mod tunnel_driver;

/// The helper's version, sent in `Hello` and shown by `warren status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
