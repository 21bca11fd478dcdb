//! The helper's side of the IPC channel: bind the socket or pipe, accept only
//! authorized peers, and run the opening `Hello` exchange.

use crate::framed::{BoxedReader, BoxedWriter, ReadError, WriteError};
use crate::peer::PeerCredentials;
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren_proto::ipc::{ClientMessage, ErrorCode, Hello, HelperMessage, IpcError};

/// How long a new client has to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we wait to deliver a refusal or handshake error before giving up.
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and for whom the helper listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOptions {
    /// Unix socket path, or on Windows the pipe name (`\\.\pipe\...`).
    pub path: PathBuf,
    /// Unix group whose members may control the helper (e.g. `warren`).
    /// Unused on Windows, where the pipe's DACL decides.
    pub group: String,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            path: crate::default_endpoint(),
            group: crate::DEFAULT_GROUP.to_string(),
        }
    }
}

/// Why the helper could not start listening. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another Warren helper is already running and answering at {path}; {} or pass a different --socket", crate::platform::stop_hint())]
    AlreadyRunning { path: PathBuf },
    #[error("the group `{group}` does not exist; create it with `sudo groupadd {group}` (and add users with `sudo usermod -aG {group} USER`), or pass --group with an existing group")]
    UnknownGroup { group: String },
    #[error("{path} exists and is not a socket; refusing to delete it. Remove it yourself if it is stale, or pass a different --socket")]
    NotASocket { path: PathBuf },
    #[error("could not {action} {path}: {source}; check that the helper runs as root (or pass a --socket in a directory you own)")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An authorized connection.
pub struct Accepted {
    pub peer: PeerCredentials,
    pub reader: BoxedReader,
    pub writer: BoxedWriter,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Why the opening exchange failed. The client has already been sent an
/// error frame where that made sense.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the client sent no Hello within {} s", HELLO_TIMEOUT.as_secs())]
    Timeout,
    #[error("the client closed the connection before saying Hello")]
    Closed,
    #[error("{0}")]
    VersionMismatch(IpcError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The message sent to a peer that may not control the helper.
pub fn permission_denied_message(peer: &PeerCredentials, group: &str) -> String {
    format!(
        "You may not control the Warren helper: your user (uid {}) is neither root nor a member of the group `{group}`. {}",
        peer.uid,
        crate::platform::join_group_hint(group)
    )
}

async fn send_error(writer: &mut BoxedWriter, error: IpcError) -> Result<(), WriteError> {
    match tokio::time::timeout(
        ERROR_WRITE_TIMEOUT,
        writer.write(&HelperMessage::Error(error)),
    )
    .await
    {
        Ok(res) => res,
        Err(_) => Err(WriteError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client is not reading",
        ))),
    }
}

/// Reads the client's `Hello` (within [`HELLO_TIMEOUT`]), checks it, and
/// replies with ours. On failure the client gets a `HelperMessage::Error`
/// (`VersionMismatch`, `Protocol`, `Malformed` or `FrameTooLarge`) and the
/// caller should close the connection.
pub async fn server_handshake(
    reader: &mut BoxedReader,
    writer: &mut BoxedWriter,
    app_version: &str,
) -> Result<Hello, HandshakeError> {
    let ours = Hello::new(app_version);
    let first = match tokio::time::timeout(HELLO_TIMEOUT, reader.read::<ClientMessage>()).await {
        Err(_) => {
            let msg = format!(
                "no Hello received within {} s; a client must open with Hello",
                HELLO_TIMEOUT.as_secs()
            );
            let _ = send_error(writer, IpcError::new(ErrorCode::Protocol, msg)).await;
            return Err(HandshakeError::Timeout);
        }
        Ok(res) => res,
    };
    match first {
        Ok(Some(ClientMessage::Hello(theirs))) => {
            if let Err(e) = ours.check_compatible(&theirs) {
                // Phrase it from the helper's side so the client can show it as is.
                let message = if theirs.protocol == warren_proto::ipc::PROTOCOL {
                    format!(
                        "Version mismatch: the Warren helper is {} (IPC protocol {}) but this client is {} (IPC protocol {}). Install matching versions of the Warren app/CLI and helper.",
                        ours.app_version, ours.version, theirs.app_version, theirs.version
                    )
                } else {
                    e.message.clone()
                };
                let err = IpcError::new(e.code, message);
                let _ = send_error(writer, err.clone()).await;
                return Err(HandshakeError::VersionMismatch(err));
            }
            writer.write(&HelperMessage::Hello(ours)).await?;
            Ok(theirs)
        }
        Ok(Some(ClientMessage::Request { .. })) => {
            let msg = "the first message must be Hello".to_string();
            let _ = send_error(writer, IpcError::new(ErrorCode::Protocol, msg.clone())).await;
            Err(HandshakeError::Protocol(msg))
        }
        Ok(None) => Err(HandshakeError::Closed),
        Err(e) => {
            let code = match &e {
                ReadError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                ReadError::Malformed(_) => Some(ErrorCode::Malformed),
                ReadError::Truncated | ReadError::Io(_) => None,
            };
            if let Some(code) = code {
                let _ = send_error(writer, IpcError::new(code, e.to_string())).await;
            }
            Err(HandshakeError::Read(e))
        }
    }
}

#[cfg(unix)]
pub use unix::Listener;
#[cfg(windows)]
pub use windows::Listener;

#[cfg(unix)]
mod unix {
    use super::*;
    use crate::framed::boxed;
    use crate::peer::{self, unix as pu};
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// The helper's listening unix socket. Dropping it removes the socket
    /// file (if it is still ours).
    pub struct Listener {
        path: PathBuf,
        group: String,
        group_gid: u32,
        own_uid: u32,
        /// Bound synchronously; handed to tokio on the first `accept`, so
        /// `bind` also works outside a runtime.
        pending: Option<std::os::unix::net::UnixListener>,
        listener: Option<tokio::net::UnixListener>,
        /// Device and inode of the socket we created, so Drop never removes
        /// a socket another helper created in its place.
        identity: (u64, u64),
    }

    impl std::fmt::Debug for Listener {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Listener")
                .field("path", &self.path)
                .field("group", &self.group)
                .finish_non_exhaustive()
        }
    }

    fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BindError {
        let path = path.to_path_buf();
        move |source| BindError::Io {
            action,
            path,
            source,
        }
    }

    impl Listener {
        /// Creates the parent directory if missing (0755), removes a stale
        /// socket (only a socket nobody answers on), binds, sets mode 0660
        /// and owner root:group (when root; otherwise keeps our own ids and
        /// warns).
        pub fn bind(opts: ListenerOptions) -> Result<Listener, BindError> {
            let ListenerOptions { path, group } = opts;
            let group_gid = pu::group_gid(&group)
                .map_err(io_err("look up the group for", &path))?
                .ok_or_else(|| BindError::UnknownGroup {
                    group: group.clone(),
                })?;

            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.exists() {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err("create the directory", parent))?;
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
                        .map_err(io_err("set permissions on", parent))?;
                }
            }

            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_socket() => {
                    match std::os::unix::net::UnixStream::connect(&path) {
                        Ok(_) => return Err(BindError::AlreadyRunning { path }),
                        Err(e) => {
                            tracing::info!(path = %path.display(), error = %e, "removing stale helper socket");
                            std::fs::remove_file(&path)
                                .map_err(io_err("remove the stale socket", &path))?;
                        }
                    }
                }
                Ok(_) => return Err(BindError::NotASocket { path }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspect", &path)(e)),
            }

            // Between bind and chmod the socket briefly has umask-derived
            // permissions; that is harmless because every connection is also
            // checked by peer credentials in `accept`.
            let std_listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(io_err("listen on", &path))?;
            std_listener
                .set_nonblocking(true)
                .map_err(io_err("configure", &path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
                .map_err(io_err("set permissions on", &path))?;

            let own_uid = nix::unistd::geteuid().as_raw();
            if own_uid == 0 {
                nix::unistd::chown(
                    &path,
                    Some(nix::unistd::Uid::from_raw(0)),
                    Some(nix::unistd::Gid::from_raw(group_gid)),
                )
                .map_err(|e| io_err("change the owner of", &path)(e.into()))?;
            } else {
                tracing::warn!(
                    path = %path.display(),
                    uid = own_uid,
                    group = %group,
                    "not running as root: the socket keeps our own owner and group; root, uid {own_uid} and members of `{group}` are still the only ones accepted"
                );
            }

            let meta = std::fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
            tracing::info!(path = %path.display(), group = %group, "listening for Warren clients");
            Ok(Listener {
                path,
                group,
                group_gid,
                own_uid,
                pending: Some(std_listener),
                listener: None,
                identity: (meta.dev(), meta.ino()),
            })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        fn authorize(&self, peer: &PeerCredentials) -> bool {
            // A process with our own uid could ptrace the helper anyway.
            if peer.uid == self.own_uid || peer::is_authorized(peer, self.group_gid, &[]) {
                return true;
            }
            let groups = pu::supplementary_groups(peer, self.group_gid);
            peer::is_authorized(peer, self.group_gid, &groups)
        }

        /// Waits for the next authorized client. Unauthorized peers get one
        /// `PermissionDenied` error frame from a spawned task and are closed.
        ///
        /// Cancel-safe: it can sit in `tokio::select!` next to a shutdown signal.
        pub async fn accept(&mut self) -> std::io::Result<Accepted> {
            if let Some(std_listener) = self.pending.take() {
                self.listener = Some(tokio::net::UnixListener::from_std(std_listener)?);
            }
            let Some(listener) = self.listener.as_ref() else {
                // Only reachable if `from_std` failed on an earlier call.
                return Err(std::io::Error::other("the helper socket is no longer open"));
            };
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionAborted
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::Interrupted
                        ) {
                            continue;
                        }
                        if matches!(e.raw_os_error(), Some(c) if c == nix::libc::EMFILE || c == nix::libc::ENFILE)
                        {
                            // Out of descriptors: back off instead of spinning.
                            tracing::warn!(error = %e, "cannot accept IPC clients right now");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                        return Err(e);
                    }
                };
                let cred = match stream.peer_cred() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read IPC peer credentials; closing");
                        continue;
                    }
                };
                let peer = PeerCredentials {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                };
                let (r, w) = stream.into_split();
                let (reader, mut writer) = boxed(r, w);
                if self.authorize(&peer) {
                    tracing::debug!(uid = peer.uid, pid = ?peer.pid, "IPC client connected");
                    return Ok(Accepted {
                        peer,
                        reader,
                        writer,
                    });
                }
                tracing::info!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, group = %self.group, "refused IPC client: not root and not in the helper's group");
                let message = permission_denied_message(&peer, &self.group);
                tokio::spawn(async move {
                    let _ = send_error(
                        &mut writer,
                        IpcError::new(ErrorCode::PermissionDenied, message),
                    )
                    .await;
                    let _ = writer.shutdown().await;
                    // Read (and discard) what the client sends until it
                    // hangs up, briefly: closing with its Hello unread would
                    // reset the connection before it reads our refusal.
                    let mut reader = reader;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        for _ in 0..4 {
                            if !matches!(reader.read_payload().await, Ok(Some(_))) {
                                break;
                            }
                        }
                    })
                    .await;
                });
            }
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
                if (meta.dev(), meta.ino()) == self.identity {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
    }
}

#[cfg(windows)]
mod windows {
    use super::*;
    use crate::framed::boxed;
    use std::os::windows::io::AsRawHandle;
    use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
    use windows_sys::Win32::Foundation::{LocalFree, ERROR_ACCESS_DENIED};
    use windows_sys::Win32::Security::Authorization::{
        ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
    use windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId;

    /// The helper's named pipe. Always keeps one instance waiting for the
    /// next client. Must be created inside a tokio runtime.
    pub struct Listener {
        path: PathBuf,
        next: NamedPipeServer,
    }

    impl std::fmt::Debug for Listener {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Listener")
                .field("path", &self.path)
                .finish_non_exhaustive()
        }
    }

    /// Creates one pipe instance with the DACL from [`crate::sddl`].
    fn create_instance(path: &Path, first: bool) -> std::io::Result<NamedPipeServer> {
        let sddl: Vec<u16> = crate::sddl::helper_pipe_sddl()
            .encode_utf16()
            .chain(std::iter::once(0))
            .collect();
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is a NUL-terminated UTF-16 string that outlives the
        // call; `sd` receives a LocalAlloc'ed descriptor we free below.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut attrs = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: sd,
            bInheritHandle: 0,
        };
        // SAFETY: `attrs` points to a valid SECURITY_ATTRIBUTES whose
        // descriptor stays alive until after the call returns.
        let res = unsafe {
            ServerOptions::new()
                .first_pipe_instance(first)
                .reject_remote_clients(true)
                .create_with_security_attributes_raw(
                    path,
                    &mut attrs as *mut SECURITY_ATTRIBUTES as *mut std::ffi::c_void,
                )
        };
        // SAFETY: `sd` came from ConvertStringSecurityDescriptor... (LocalAlloc).
        unsafe { LocalFree(sd) };
        res
    }

    impl Listener {
        /// Creates the first pipe instance (`first_pipe_instance`, so a
        /// squatter or a second helper makes this fail), with an explicit
        /// DACL, refusing remote clients. `opts.group` is not used.
        pub fn bind(opts: ListenerOptions) -> Result<Listener, BindError> {
            let path = opts.path;
            match create_instance(&path, true) {
                Ok(next) => {
                    tracing::info!(path = %path.display(), "listening for Warren clients");
                    Ok(Listener { path, next })
                }
                Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
                    Err(BindError::AlreadyRunning { path })
                }
                Err(source) => Err(BindError::Io {
                    action: "create the pipe",
                    path,
                    source,
                }),
            }
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Waits for the next client. The DACL already decided who may open
        /// the pipe, so every connection is authorized.
        ///
        /// Cancel-safe: it can sit in `tokio::select!` next to a shutdown signal.
        pub async fn accept(&mut self) -> std::io::Result<Accepted> {
            self.next.connect().await?;
            let fresh = create_instance(&self.path, false)?;
            let connected = std::mem::replace(&mut self.next, fresh);
            let mut pid: u32 = 0;
            // SAFETY: the handle is a live pipe handle owned by `connected`.
            let ok =
                unsafe { GetNamedPipeClientProcessId(connected.as_raw_handle() as _, &mut pid) };
            let peer = PeerCredentials {
                uid: PeerCredentials::UNKNOWN_ID,
                gid: PeerCredentials::UNKNOWN_ID,
                pid: (ok != 0).then_some(pid as i32),
            };
            let (r, w) = tokio::io::split(connected);
            let (reader, writer) = boxed(r, w);
            Ok(Accepted {
                peer,
                reader,
                writer,
            })
        }
    }
}
