//! `warrend`, the Warren helper, as a library so its pieces can be tested.
//!
//! Every decision is made by the sans-IO `ClientState`
//! (`warren-client-core`); these modules are its thin drivers:
//!
//! - [`engine`]: the single task that feeds the client state (requests,
//!   coordinator events, data-plane reports, its timer), carries out its
//!   commands and fans its events out to subscribers; it never awaits a
//!   client or the network, so nothing can stall it.
//! - [`control_task`]: one coordinator connection (one session generation).
//! - [`subscribers`]: per-client bounded, coalescing outgoing queues.
//! - [`events`]: pre-serialized events, chunked under the IPC frame cap.
//! - [`connection`]: one GUI/CLI connection: handshake, requests, writer.
//! - [`log_forward`]: log lines to subscribed GUIs.
//! - [`dataplane`]: the data plane's manager (OS configuration, the UDP
//!   socket, start/stop per tunnel generation, peer and name diffs, reports);
//!   off with `--no-tunnel`.
//! - [`packet_loop`]: the packet loop between the TUN and the UDP socket,
//!   on its own thread.
//! - [`observe`]: per-peer statistics and `warren ping`, sans-IO.
//! - [`dns_driver`]: the DNS stub's sockets (port 53 on the tunnel
//!   addresses) and the resolv.conf mode's forwarding.
//! - [`service_manager`]: READY and STOPPING for systemd's `Type=notify`.

pub mod connection;
pub mod control_task;
pub mod dataplane;
pub mod dns_driver;
pub mod engine;
pub mod events;
pub mod log_forward;
pub mod observe;
pub mod packet_loop;
pub mod service_manager;
pub mod subscribers;

/// The helper's version, sent in `Hello` and shown by `warren status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
