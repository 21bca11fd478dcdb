//! Telling the OS's service manager how the helper is doing.
//!
//! Under systemd (`Type=notify`) the unit counts as started only once the
//! helper says READY, which it does when its socket listens: an app or a
//! CLI started right after `systemctl start warrend` (or at login, right
//! after boot) then finds the helper instead of "not running". STOPPING
//! marks the orderly shutdown in `systemctl status`. Outside systemd (no
//! `NOTIFY_SOCKET`), and on other OSes, these do nothing; the Windows
//! service reports its states to the service control manager itself.

/// The helper listens and serves: the service has started.
pub fn ready() {
    notify(Notice::Ready);
}

/// The helper is undoing its network changes and will exit.
pub fn stopping() {
    notify(Notice::Stopping);
}

#[derive(Debug, Clone, Copy)]
enum Notice {
    Ready,
    Stopping,
}

#[cfg(target_os = "linux")]
fn notify(notice: Notice) {
    use sd_notify::NotifyState;
    let state = match notice {
        Notice::Ready => NotifyState::Ready,
        Notice::Stopping => NotifyState::Stopping,
    };
    // Not under systemd: the call finds no NOTIFY_SOCKET and does nothing.
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, ?notice, "could not notify systemd");
    }
}

#[cfg(not(target_os = "linux"))]
fn notify(_notice: Notice) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// The messages reach the socket systemd names, in systemd's format.
    #[test]
    fn ready_and_stopping_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // The only test in this binary that touches NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready();
        stopping();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
        // Without the variable nothing is sent and nothing fails.
        ready();
        socket.set_nonblocking(true).unwrap();
        assert!(socket.recv(&mut buf).is_err());
    }
}
