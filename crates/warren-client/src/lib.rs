//! What the Warren CLI (`warren`) and the desktop app (`warren-desktop`)
//! share about the signed-in user: checking a coordinator URL and token
//! ([`signin`]), the saved sign-in ([`config`]) and the token in the OS
//! keyring or its fallback file ([`token`]); signing in through the browser
//! or a device code ([`browser_signin`]).

pub mod browser_signin;
pub mod config;
pub mod signin;
pub mod token;

use std::path::PathBuf;

/// Why the saved sign-in could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("can't find your configuration directory; set WARREN_CONFIG_DIR to a directory Warren may use")]
    NoConfigDir,
    #[error("{} is damaged; delete it and sign in again", .0.display())]
    Damaged(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        StoreError::Io { what, source }
    }
}
