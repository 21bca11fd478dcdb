//! The app's standing link to the helper: connect, subscribe, feed the
//! [`Hub`], and when anything goes wrong say what (missing, not permitted,
//! another version) and look again every second, so a restarted helper is
//! found within a couple of seconds.
//!
//! The subscription comes first and its snapshot second (the helper sends
//! the snapshot as the first events of a subscription), so no change can
//! fall between the two.

use crate::hub::Hub;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use warren_ipc::{Client, ClientError, HelperUnavailable};
use warren_proto::app::{HelperLink, HelperLinkState};

/// How long to wait before looking for the helper again.
pub const RETRY: Duration = Duration::from_secs(1);

pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Maps a failure to talk to the helper to what the app shows, by its kind
/// (the error's text already carries the hint for this OS).
pub fn classify(err: &ClientError) -> HelperLinkState {
    match err.unavailable() {
        Some(HelperUnavailable::NotRunning) => HelperLinkState::Missing,
        Some(HelperUnavailable::NotPermitted) => HelperLinkState::NotPermitted,
        Some(HelperUnavailable::VersionMismatch) => HelperLinkState::VersionMismatch,
        Some(HelperUnavailable::Untrusted | HelperUnavailable::Unresponsive) | None => {
            HelperLinkState::Failed
        }
    }
}

fn trouble(socket: &str, err: &ClientError) -> HelperLink {
    HelperLink {
        state: classify(err),
        socket: socket.to_string(),
        message: Some(err.to_string()),
        helper_version: None,
        retry_in_ms: Some(RETRY.as_millis() as u64),
    }
}

/// Runs forever: keeps the hub fed from the helper at `socket`.
pub async fn run(hub: Arc<Hub>, socket: PathBuf) {
    let shown = socket.display().to_string();
    loop {
        match follow(&hub, &socket, &shown).await {
            Ok(()) => {
                tracing::info!("the helper closed our subscription; looking for it again");
                hub.set_link(HelperLink {
                    state: HelperLinkState::Searching,
                    socket: shown.clone(),
                    message: Some("The Warren helper went away; looking for it again.".into()),
                    helper_version: None,
                    retry_in_ms: None,
                });
                // A helper that is restarting is usually back at once.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                let link = trouble(&shown, &e);
                if hub.link() != link {
                    tracing::warn!(error = %e, "can't follow the helper");
                }
                hub.set_link(link);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// One subscription's life: `Ok` when the helper closed it, `Err` when it
/// could not be opened or broke.
async fn follow(hub: &Hub, socket: &std::path::Path, shown: &str) -> Result<(), ClientError> {
    let client = Client::connect(socket, APP_VERSION).await?;
    let helper_version = client.helper_hello().app_version.clone();
    let mut sub = client.subscribe().await?;
    tracing::info!(helper = %helper_version, "following the Warren helper");
    hub.set_link(HelperLink {
        state: HelperLinkState::Connected,
        socket: shown.to_string(),
        message: None,
        helper_version: Some(helper_version),
        retry_in_ms: None,
    });
    loop {
        match sub.next().await? {
            Some((seq, event)) => {
                if let Err(e) = hub.apply(seq, event) {
                    // Resubscribing starts a fresh snapshot.
                    tracing::warn!(error = %e, "lost track of the helper's events; resubscribing");
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::{ErrorCode, IpcError};

    #[test]
    fn failures_map_to_the_screens_that_explain_them() {
        let path = PathBuf::from("/run/warren/helper.sock");
        let cases = [
            (
                ClientError::HelperNotRunning { path: path.clone() },
                HelperLinkState::Missing,
            ),
            (
                ClientError::PermissionDenied {
                    path: path.clone(),
                    detail: "uid 1000 is not in group warren".into(),
                    by_helper: true,
                },
                HelperLinkState::NotPermitted,
            ),
            (
                ClientError::VersionMismatch {
                    ours: "1.0".into(),
                    theirs: "2.0".into(),
                },
                HelperLinkState::VersionMismatch,
            ),
            (
                ClientError::Helper(IpcError::new(ErrorCode::VersionMismatch, "major 2")),
                HelperLinkState::VersionMismatch,
            ),
            (
                ClientError::Helper(IpcError::new(ErrorCode::PermissionDenied, "not in group")),
                HelperLinkState::NotPermitted,
            ),
            (
                ClientError::Timeout(Duration::from_secs(10)),
                HelperLinkState::Failed,
            ),
            (ClientError::Disconnected, HelperLinkState::Failed),
        ];
        for (err, want) in cases {
            assert_eq!(classify(&err), want, "{err}");
            let link = trouble("s", &err);
            assert_eq!(link.retry_in_ms, Some(1000));
            assert!(!link.message.unwrap().is_empty());
        }
    }
}
