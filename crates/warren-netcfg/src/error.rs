//! The crate's error type. Every message tells the person reading it what to
//! do next, and none carries a secret (this crate never sees one).

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while configuring or restoring the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The plan asked for a default route, which Warren never takes over.
    #[error(
        "refusing to route {0} through the tunnel: Warren never takes over the default route — \
         route only the deployment's prefixes (100.64.0.0/10 and its IPv6 /48)"
    )]
    DefaultRoute(String),

    /// The plan is malformed (bad name, prefix length, MTU…).
    #[error("invalid network plan: {0}")]
    InvalidPlan(String),

    /// The OS refused because the process lacks privileges.
    #[error("{what} needs root or CAP_NET_ADMIN — run the helper as root (e.g. `sudo systemctl start warrend`)")]
    NeedsPrivilege {
        /// The step that was refused, e.g. "creating the TUN device warren0".
        what: String,
    },

    /// The TUN device name is taken by something Warren does not own.
    #[error(
        "the network interface {name} already exists and can't be used as Warren's TUN device — \
         is another helper running? Stop it, or remove the interface (`sudo ip link del {name}`)"
    )]
    NameInUse {
        /// The interface name.
        name: String,
    },

    /// Any other OS failure.
    #[error("{what} failed: {source} — check the helper log (`warrend.log`) and that no other VPN manages this interface")]
    Os {
        /// The step that failed.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The journal could not be written; the change it would have recorded was not made.
    #[error(
        "couldn't write the network journal {path}: {source} — the change was not made; \
         check that the directory exists and is writable by the helper (root)"
    )]
    JournalWrite {
        /// The journal path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The journal exists but could not be read or parsed.
    #[error(
        "the network journal {path} can't be read ({reason}) — it lists the routes and devices a \
         previous helper changed; remove them by hand if they are still there (`ip route`, `ip link`), \
         then delete the file and restart the helper"
    )]
    JournalUnreadable {
        /// The journal path.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// `apply` was called while a configuration is in place.
    #[error(
        "the network journal still lists changes (from this helper or one that died) — \
         tear down or run recovery before applying a new plan; restarting the helper does both"
    )]
    AlreadyApplied,

    /// Some changes could not be undone; they stay in the journal for the next start.
    #[error(
        "{remaining} network change(s) could not be undone (first: {first}) — they stay in the \
         journal and the helper retries at its next start; restarting the helper usually clears them"
    )]
    Incomplete {
        /// How many journal entries remain.
        remaining: usize,
        /// The first error met.
        first: Box<NetError>,
    },
}

/// Result with [`NetError`].
pub type Result<T, E = NetError> = std::result::Result<T, E>;

impl NetError {
    /// Wraps an OS error, turning permission errors into [`NetError::NeedsPrivilege`].
    pub fn os(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        // EPERM (1) is how Linux refuses a missing CAP_NET_ADMIN; std maps
        // only EACCES to PermissionDenied. On Windows 1 means something else.
        let eperm = cfg!(unix) && source.raw_os_error() == Some(1);
        if eperm || source.kind() == io::ErrorKind::PermissionDenied {
            NetError::NeedsPrivilege { what }
        } else {
            NetError::Os { what, source }
        }
    }
}
