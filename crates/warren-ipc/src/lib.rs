//! Warren's local IPC transport between the GUI/CLI and the helper.
//!
//! - [`framed`]: length-prefixed JSON frames over any tokio stream.
//! - [`server`]: the helper's listener (unix socket `0660 root:warren`, or a
//!   Windows named pipe with an explicit DACL), peer authorization and the
//!   server half of the Hello exchange.
//! - [`client`]: connect, Hello, requests and the event stream, with errors a
//!   person can act on.
//! - [`mirror`]: sans-IO application of the event stream (snapshot, then diffs).
//! - [`peer`] and [`sddl`]: the pure authorization rules, tested on every OS.
//! - [`platform`]: per-OS paths, endpoint, host name, shutdown signal and
//!   the hints that tell a person what to do.

pub mod client;
pub mod framed;
pub mod mirror;
pub mod peer;
pub mod platform;
pub mod sddl;
pub mod server;
#[cfg(all(test, windows))]
mod wintest;

pub use client::{Client, ClientError, Subscription};
pub use framed::{BoxedReader, BoxedWriter, FramedReader, FramedWriter, ReadError, WriteError};
pub use mirror::{MirrorError, StateMirror};
pub use peer::{is_authorized, PeerCredentials};
pub use platform::{default_endpoint, HelperUnavailable};
pub use server::{
    server_handshake, Accepted, BindError, HandshakeError, Listener, ListenerOptions,
};

/// The helper's socket on Linux (see [`platform::default_endpoint`] for
/// every OS).
pub const DEFAULT_SOCKET: &str = "/run/warren/helper.sock";
/// The helper's named pipe on Windows.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\warren-helper";
/// The group whose members may control the helper (unix).
pub const DEFAULT_GROUP: &str = "warren";
