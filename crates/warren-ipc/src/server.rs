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
        /// The descriptor every instance is created with.
        sddl: String,
        next: NamedPipeServer,
    }

    impl std::fmt::Debug for Listener {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Listener")
                .field("path", &self.path)
                .finish_non_exhaustive()
        }
    }

    /// Creates one pipe instance with the descriptor `sddl` (the helper's is
    /// [`crate::sddl::helper_pipe_sddl`]).
    fn create_instance(path: &Path, sddl: &str, first: bool) -> std::io::Result<NamedPipeServer> {
        let sddl: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
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
            Self::bind_with_sddl(opts.path, crate::sddl::helper_pipe_sddl())
        }

        /// [`Listener::bind`] with another descriptor: the tests' pipes when
        /// they do not run as SYSTEM, which only SYSTEM may name as owner.
        pub(crate) fn bind_with_sddl(path: PathBuf, sddl: String) -> Result<Listener, BindError> {
            match create_instance(&path, &sddl, true) {
                Ok(next) => {
                    tracing::info!(path = %path.display(), "listening for Warren clients");
                    Ok(Listener { path, sddl, next })
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
            let fresh = create_instance(&self.path, &self.sddl, false)?;
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

    /// The helper's pipe for real: its descriptor as Windows applied it,
    /// Hello and a request over it, and the client's owner check both ways.
    /// Under Wine, what it does not enforce is skipped with a note.
    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::client::{Client, ClientError};
        use crate::wintest::{
            describe, running_as_system, under_wine, unique_pipe, Descriptor, LocalSd, Who,
        };
        use tokio::net::windows::named_pipe::ClientOptions;
        use warren_proto::ipc::{Reply, Request, SessionInfo, StatusReport};
        use windows_sys::Win32::Foundation::{
            ERROR_INVALID_OWNER, GENERIC_ALL, GENERIC_READ, GENERIC_WRITE, HANDLE,
        };
        use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_KERNEL_OBJECT};
        use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION};

        use windows_sys::Win32::Storage::FileSystem::{
            FILE_ALL_ACCESS, FILE_CREATE_PIPE_INSTANCE, FILE_GENERIC_READ, FILE_GENERIC_WRITE,
        };

        const HELPER_VERSION: &str = "9.8.7";
        /// A pipe only its owner (this process's user) may use: what the
        /// tests listen on where Windows refuses them the helper's.
        const OWN_SDDL: &str = "D:P(A;;GA;;;OW)";
        // ACCESS_ALLOWED_ACE_TYPE.
        const ALLOWED: u8 = 0;

        fn opts(path: &Path) -> ListenerOptions {
            ListenerOptions {
                path: path.to_path_buf(),
                group: String::new(),
            }
        }

        /// The helper's own pipe where this process may create it (as
        /// SYSTEM, or under Wine); as a plain user on Windows, which refuses
        /// it a descriptor naming SYSTEM as owner, a pipe of its own.
        /// The flag says which.
        fn bind_helper(path: &Path) -> (Listener, bool) {
            match Listener::bind(opts(path)) {
                Ok(listener) => (listener, true),
                Err(BindError::Io { source, .. })
                    if source.raw_os_error() == Some(ERROR_INVALID_OWNER as i32)
                        && !running_as_system() =>
                {
                    let listener = Listener::bind_with_sddl(path.to_path_buf(), OWN_SDDL.into())
                        .expect("a pipe only we may use");
                    (listener, false)
                }
                Err(e) => panic!("binding {}: {e}", path.display()),
            }
        }

        /// The owner and access list of the pipe behind `handle`.
        fn descriptor_of(handle: HANDLE) -> Descriptor {
            let mut sd = LocalSd(std::ptr::null_mut());
            // SAFETY: a live pipe handle; owner and DACL pointers are not
            // asked for (they would point into `sd`), `sd` frees the rest.
            let status = unsafe {
                GetSecurityInfo(
                    handle,
                    SE_KERNEL_OBJECT,
                    OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut sd.0,
                )
            };
            assert_eq!(status, 0, "reading the pipe's descriptor");
            // SAFETY: GetSecurityInfo succeeded, so `sd` is a descriptor.
            unsafe { describe(sd.0) }
        }

        /// Generic rights as Windows maps them for files and pipes.
        fn mapped(mask: u32) -> u32 {
            let mut out = mask & 0x0fff_ffff;
            for (generic, specific) in [
                (GENERIC_ALL, FILE_ALL_ACCESS),
                (GENERIC_READ, FILE_GENERIC_READ),
                (GENERIC_WRITE, FILE_GENERIC_WRITE),
            ] {
                if mask & generic != 0 {
                    out |= specific;
                }
            }
            out
        }

        /// A stand-in helper: Hello, then one Status reply per request.
        fn serve(mut listener: Listener) -> tokio::task::JoinHandle<Vec<PeerCredentials>> {
            tokio::spawn(async move {
                let mut peers = Vec::new();
                for _ in 0..2 {
                    let mut acc = listener.accept().await.expect("accept");
                    peers.push(acc.peer);
                    tokio::spawn(async move {
                        server_handshake(&mut acc.reader, &mut acc.writer, HELPER_VERSION)
                            .await
                            .expect("handshake");
                        while let Ok(Some(ClientMessage::Request { id, .. })) =
                            acc.reader.read::<ClientMessage>().await
                        {
                            let reply = Reply::Status(StatusReport {
                                helper_version: HELPER_VERSION.into(),
                                session: SessionInfo::disconnected(),
                                workspace_count: 3,
                                agent_count: 0,
                            });
                            acc.writer
                                .write(&HelperMessage::Reply {
                                    reply_to: id,
                                    reply,
                                })
                                .await
                                .expect("reply");
                        }
                    });
                }
                peers
            })
        }

        #[tokio::test]
        async fn only_system_may_create_the_helper_pipe() {
            let path = unique_pipe("owner");
            let system = running_as_system();
            match Listener::bind(opts(&path)) {
                Ok(_) if system => {}
                Err(BindError::Io { source, .. })
                    if !system && source.raw_os_error() == Some(ERROR_INVALID_OWNER as i32) => {}
                Ok(_) if under_wine() => eprintln!(
                    "only_system_may_create_the_helper_pipe: refusal skipped under Wine: \
                     wineserver lets any process name SYSTEM as a new object's owner"
                ),
                other => panic!("running as SYSTEM: {system}; bind gave {other:?}"),
            }
        }

        #[tokio::test]
        async fn the_pipe_carries_the_helper_descriptor() {
            let path = unique_pipe("dacl");
            let (listener, helper) = bind_helper(&path);
            let got = descriptor_of(listener.next.as_raw_handle() as HANDLE);
            let masks = |got: &Descriptor| -> Vec<(u8, Who, u32)> {
                got.dacl
                    .iter()
                    .flatten()
                    .map(|&(kind, who, mask)| (kind, who, mapped(mask)))
                    .collect()
            };
            if !helper {
                // Our own pipe: only the owner's entry, and it is not SYSTEM.
                assert_ne!(got.owner, Some(Who::System));
                assert!(got.protected, "{got:?}");
                assert_eq!(masks(&got), vec![(ALLOWED, Who::Other, FILE_ALL_ACCESS)]);
                return;
            }
            assert_eq!(got.owner, Some(Who::System), "{got:?}");
            assert!(got.protected, "the access list must not inherit: {got:?}");
            assert_eq!(
                masks(&got),
                vec![
                    (ALLOWED, Who::System, FILE_ALL_ACCESS),
                    (ALLOWED, Who::Administrators, FILE_ALL_ACCESS),
                    (ALLOWED, Who::Interactive, crate::sddl::PIPE_READ_WRITE),
                ]
            );
            // People may not add instances of the helper's pipe.
            let people = masks(&got)[2].2;
            assert_eq!(people & FILE_CREATE_PIPE_INSTANCE, 0, "{people:#x}");
            assert_eq!(
                people,
                (FILE_GENERIC_READ | FILE_GENERIC_WRITE) & !FILE_CREATE_PIPE_INSTANCE
            );
        }

        #[tokio::test]
        async fn a_client_says_hello_and_asks_over_the_pipe() {
            let path = unique_pipe("hello");
            let (listener, helper) = bind_helper(&path);
            let server = serve(listener);

            let mut clients = Vec::new();
            for _ in 0..2 {
                if helper {
                    // The real client, owner check included: the pipe is
                    // SYSTEM's, so it talks.
                    let mut client = Client::connect(&path, HELPER_VERSION)
                        .await
                        .expect("the client accepts a SYSTEM-owned pipe");
                    assert_eq!(client.helper_hello().app_version, HELPER_VERSION);
                    let status = client.status().await.expect("status over the pipe");
                    assert_eq!(status.workspace_count, 3);
                    clients.push(client);
                } else {
                    // Not SYSTEM's pipe: the real client refuses it, so
                    // the frames go by hand.
                    let refused = Client::connect(&path, HELPER_VERSION).await;
                    assert!(
                        matches!(refused, Err(ClientError::Untrusted { .. })),
                        "{refused:?}"
                    );
                    let pipe = ClientOptions::new().open(&path).expect("open our pipe");
                    let (r, w) = tokio::io::split(pipe);
                    let (mut reader, mut writer) = crate::framed::boxed(r, w);
                    writer
                        .write(&ClientMessage::Hello(warren_proto::ipc::Hello::new(
                            "1.0.0",
                        )))
                        .await
                        .unwrap();
                    let hello = reader.read::<HelperMessage>().await.unwrap();
                    assert!(
                        matches!(&hello, Some(HelperMessage::Hello(h)) if h.app_version == HELPER_VERSION),
                        "{hello:?}"
                    );
                    writer
                        .write(&ClientMessage::Request {
                            id: 7,
                            request: Request::Status,
                        })
                        .await
                        .unwrap();
                    let reply = reader.read::<HelperMessage>().await.unwrap();
                    assert!(
                        matches!(&reply, Some(HelperMessage::Reply { reply_to: 7, .. })),
                        "{reply:?}"
                    );
                }
            }
            let peers = tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("both clients accepted")
                .unwrap();
            for peer in peers {
                assert_eq!(peer.uid, PeerCredentials::UNKNOWN_ID);
                assert_eq!(peer.gid, PeerCredentials::UNKNOWN_ID);
                if peer.pid.is_none() && under_wine() {
                    eprintln!(
                        "a_client_says_hello_and_asks_over_the_pipe: client pid check skipped \
                         under Wine: GetNamedPipeClientProcessId failed"
                    );
                    continue;
                }
                assert_eq!(peer.pid, Some(std::process::id() as i32));
            }
        }

        #[tokio::test]
        async fn a_pipe_owned_by_another_account_is_refused() {
            let path = unique_pipe("squat");
            // SYSTEM names the Administrators group as owner instead; any
            // other account gets itself.
            let sddl = if running_as_system() {
                "O:BAD:P(A;;GA;;;SY)"
            } else {
                OWN_SDDL
            };
            let _squatter = Listener::bind_with_sddl(path.clone(), sddl.into()).unwrap();
            match Client::connect(&path, HELPER_VERSION).await {
                Err(ClientError::Untrusted { path: p, detail }) => {
                    assert_eq!(p, path);
                    assert!(detail.contains("owner"), "{detail}");
                }
                other => panic!("expected Untrusted, got {other:?}"),
            }
            // Nothing there at all is a different story.
            let missing = unique_pipe("missing");
            assert!(matches!(
                Client::connect(&missing, HELPER_VERSION).await,
                Err(ClientError::HelperNotRunning { .. })
            ));
        }

        #[tokio::test]
        async fn a_second_helper_is_refused() {
            let path = unique_pipe("twice");
            let (_first, helper) = bind_helper(&path);
            let second = if helper {
                Listener::bind(opts(&path))
            } else {
                Listener::bind_with_sddl(path.clone(), OWN_SDDL.into())
            };
            match second {
                Err(BindError::AlreadyRunning { path: p }) => assert_eq!(p, path),
                Ok(_) if under_wine() => eprintln!(
                    "a_second_helper_is_refused: refusal skipped under Wine: Wine 8 ignores \
                     FILE_FLAG_FIRST_PIPE_INSTANCE and adds a second instance"
                ),
                other => panic!("a second helper on {}: {other:?}", path.display()),
            }
        }
    }
}
