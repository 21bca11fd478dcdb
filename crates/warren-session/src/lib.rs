//! The sans-IO core of the helper's control session.
//!
//! Nothing here touches a socket, a clock or a task: the driver feeds inputs
//! with the current [`std::time::Instant`], asks what to do next
//! ([`session::Session::poll_action`]) and when to wake
//! ([`session::Session::poll_timeout`]). That makes every path — backoff,
//! stale connections, a snapshot that replaces a laptop's view after sleep —
//! testable deterministically with simulated time.

pub mod backoff;
pub mod directory;
pub mod replica;
pub mod session;

pub use backoff::{backoff_cap_from_env, Backoff, BackoffCapError};
pub use directory::{Delta, Directory, DirectoryError};
pub use replica::{Replica, SeqGap, Sequence};
pub use session::{Action, ConnectFailure, Session, SessionConfig};
