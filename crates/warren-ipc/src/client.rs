//! The GUI/CLI side of the IPC channel: connect, say Hello, send requests,
//! and turn a connection into an event stream.
//!
//! Every error is a sentence a person can act on, because the CLI and the GUI
//! show them as they are.

use crate::framed::{BoxedReader, BoxedWriter, ReadError, WriteError};
use crate::platform::{self, HelperUnavailable};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use warren_proto::ipc::{
    ClientMessage, ErrorCode, Event, Hello, HelperMessage, IpcError, PingReport, Reply, Request,
    StatusReport,
};

/// How long the helper has to answer our Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the helper has to answer a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why talking to the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("The Warren helper isn't running (nothing at {}). {}", .path.display(), HelperUnavailable::NotRunning.hint())]
    HelperNotRunning { path: PathBuf },
    /// `by_helper`: the helper itself refused us, and its `detail` already
    /// says what to do; otherwise the OS did, and the text adds how to get in.
    #[error("{}", permission_text(.path, .detail, *.by_helper))]
    PermissionDenied {
        path: PathBuf,
        detail: String,
        by_helper: bool,
    },
    #[error("This program is {ours} but the Warren helper is {theirs}; they can't talk to each other. {}", HelperUnavailable::VersionMismatch.hint())]
    VersionMismatch { ours: String, theirs: String },
    /// An error the helper reported (its message is already actionable).
    #[error("{0}")]
    Helper(IpcError),
    #[error("The Warren helper sent something unexpected ({0}). Make sure the app/CLI and helper versions match; if they do, please report a bug.")]
    Protocol(String),
    /// Windows: the pipe exists but is not owned by LocalSystem, so it is not
    /// the real helper (or someone is squatting its name).
    #[error("Refusing to talk to {}: the pipe is not owned by SYSTEM ({detail}), so it is not the Warren helper service. {}", .path.display(), HelperUnavailable::Untrusted.hint())]
    Untrusted { path: PathBuf, detail: String },
    #[error("The Warren helper did not answer within {} s. It may be stuck. {}", .0.as_secs(), HelperUnavailable::Unresponsive.hint())]
    Timeout(Duration),
    #[error("The Warren helper closed the connection; it may have stopped or restarted. {}", HelperUnavailable::Unresponsive.hint())]
    Disconnected,
    #[error("Could not talk to the Warren helper: {0}. Try again; if it keeps failing, restart the helper.")]
    Io(std::io::Error),
}

fn permission_text(path: &Path, detail: &str, by_helper: bool) -> String {
    let mut s = format!(
        "You may not use the Warren helper at {}: {detail}",
        path.display()
    );
    if !by_helper {
        let group =
            platform::endpoint_group(path).unwrap_or_else(|| crate::DEFAULT_GROUP.to_string());
        s.push_str(". ");
        s.push_str(&platform::membership_hint(&group));
    }
    s
}

impl ClientError {
    /// Why the helper can't be used, when that is the trouble (rather than
    /// a request the helper turned down): what the app shows and the kind
    /// whose [`HelperUnavailable::hint`] this error's text carries.
    pub fn unavailable(&self) -> Option<HelperUnavailable> {
        match self {
            ClientError::HelperNotRunning { .. } => Some(HelperUnavailable::NotRunning),
            ClientError::PermissionDenied { .. } => Some(HelperUnavailable::NotPermitted),
            ClientError::VersionMismatch { .. } => Some(HelperUnavailable::VersionMismatch),
            ClientError::Helper(e) if e.code == ErrorCode::VersionMismatch => {
                Some(HelperUnavailable::VersionMismatch)
            }
            ClientError::Helper(e) if e.code == ErrorCode::PermissionDenied => {
                Some(HelperUnavailable::NotPermitted)
            }
            ClientError::Untrusted { .. } => Some(HelperUnavailable::Untrusted),
            ClientError::Timeout(_) | ClientError::Disconnected => {
                Some(HelperUnavailable::Unresponsive)
            }
            ClientError::Helper(_) | ClientError::Protocol(_) | ClientError::Io(_) => None,
        }
    }
}

impl From<WriteError> for ClientError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => ClientError::Io(e),
            ReadError::Truncated => ClientError::Disconnected,
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

fn describe(hello: &Hello) -> String {
    format!(
        "version {} (IPC protocol {})",
        hello.app_version, hello.version
    )
}

fn from_helper_error(path: &Path, e: IpcError) -> ClientError {
    match e.code {
        ErrorCode::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
            detail: e.message,
            by_helper: true,
        },
        _ => ClientError::Helper(e),
    }
}

/// A connection to the helper, after the Hello exchange.
pub struct Client {
    reader: BoxedReader,
    writer: BoxedWriter,
    hello: Hello,
    path: PathBuf,
    next_id: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.path)
            .field("helper", &self.hello)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the helper at `path` and exchanges Hello.
    pub async fn connect(path: &Path, app_version: &str) -> Result<Client, ClientError> {
        let (mut reader, mut writer) = open(path).await?;
        let ours = Hello::new(app_version);
        if let Err(e) = writer.write(&ClientMessage::Hello(ours.clone())).await {
            // A helper that refuses us may close before reading our Hello;
            // its error frame is still waiting to be read, so read on.
            match e {
                WriteError::Io(ref io)
                    if matches!(
                        io.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) => {}
                other => return Err(other.into()),
            }
        }
        let first = tokio::time::timeout(HELLO_TIMEOUT, reader.read::<HelperMessage>())
            .await
            .map_err(|_| ClientError::Timeout(HELLO_TIMEOUT))?;
        let theirs = match first {
            Ok(Some(HelperMessage::Hello(h))) => h,
            Ok(Some(HelperMessage::Error(e))) => return Err(from_helper_error(path, e)),
            Ok(Some(_)) => {
                return Err(ClientError::Protocol(
                    "expected Hello as the first message".into(),
                ))
            }
            Ok(None) => return Err(ClientError::Disconnected),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Disconnected)
            }
            Err(e) => return Err(e.into()),
        };
        if ours.check_compatible(&theirs).is_err() {
            return Err(ClientError::VersionMismatch {
                ours: describe(&ours),
                theirs: describe(&theirs),
            });
        }
        tracing::debug!(helper = %theirs.app_version, "connected to the Warren helper");
        Ok(Client {
            reader,
            writer,
            hello: theirs,
            path: path.to_path_buf(),
            next_id: 1,
        })
    }

    /// The helper's Hello (its app version and protocol version).
    pub fn helper_hello(&self) -> &Hello {
        &self.hello
    }

    async fn send(&mut self, request: Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write(&ClientMessage::Request { id, request })
            .await?;
        Ok(id)
    }

    /// Sends a request and waits (up to [`REQUEST_TIMEOUT`]) for its reply.
    /// Events arriving meanwhile are discarded.
    pub async fn request(&mut self, request: Request) -> Result<Reply, ClientError> {
        let id = self.send(request).await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.reader.read::<HelperMessage>())
                .await
                .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))??;
            match msg {
                Some(HelperMessage::Reply { reply_to, reply }) if reply_to == id => {
                    return Ok(reply)
                }
                Some(HelperMessage::Reply { .. }) | Some(HelperMessage::Event { .. }) => {}
                Some(HelperMessage::Error(e)) => return Err(from_helper_error(&self.path, e)),
                Some(HelperMessage::Hello(_)) => {
                    return Err(ClientError::Protocol("a second Hello".into()))
                }
                None => return Err(ClientError::Disconnected),
            }
        }
    }

    /// Like [`Client::request`], but `Reply::Error` becomes
    /// `Err(ClientError::Helper)` and anything but `Reply::Ok` is a protocol error.
    pub async fn request_ok(&mut self, request: Request) -> Result<(), ClientError> {
        match self.request(request).await? {
            Reply::Ok => Ok(()),
            Reply::Error(e) => Err(from_helper_error(&self.path, e)),
            Reply::Status(_) | Reply::Pong(_) => Err(ClientError::Protocol(
                "a report where Ok was expected".into(),
            )),
        }
    }

    /// Sends one `Ping` through the helper's tunnel and returns its report.
    /// No answer in time is `Err(ClientError::Helper)` with code
    /// `Unreachable`.
    pub async fn ping(
        &mut self,
        target: &str,
        timeout_ms: Option<u64>,
    ) -> Result<PingReport, ClientError> {
        let request = Request::Ping {
            target: target.to_string(),
            timeout_ms,
        };
        match self.request(request).await? {
            Reply::Pong(report) => Ok(report),
            Reply::Error(e) => Err(from_helper_error(&self.path, e)),
            Reply::Ok | Reply::Status(_) => Err(ClientError::Protocol(
                "no ping report in answer to Ping".into(),
            )),
        }
    }

    /// Sends `Status` and returns the report.
    pub async fn status(&mut self) -> Result<StatusReport, ClientError> {
        match self.request(Request::Status).await? {
            Reply::Status(report) => Ok(report),
            Reply::Error(e) => Err(from_helper_error(&self.path, e)),
            Reply::Ok | Reply::Pong(_) => Err(ClientError::Protocol(
                "no status report in answer to Status".into(),
            )),
        }
    }

    /// Sends `Subscribe`, waits for `Reply::Ok`, and turns the connection
    /// into an event stream. Events that arrive before the reply are kept.
    pub async fn subscribe(mut self) -> Result<Subscription, ClientError> {
        let id = self.send(Request::Subscribe).await?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut pending = VecDeque::new();
        loop {
            let msg = tokio::time::timeout_at(deadline, self.reader.read::<HelperMessage>())
                .await
                .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))??;
            match msg {
                Some(HelperMessage::Reply { reply_to, reply }) if reply_to == id => match reply {
                    Reply::Ok => break,
                    Reply::Error(e) => return Err(from_helper_error(&self.path, e)),
                    Reply::Status(_) | Reply::Pong(_) => {
                        return Err(ClientError::Protocol(
                            "a report in answer to Subscribe".into(),
                        ))
                    }
                },
                Some(HelperMessage::Reply { .. }) => {}
                Some(HelperMessage::Event { seq, event }) => pending.push_back((seq, event)),
                Some(HelperMessage::Error(e)) => return Err(from_helper_error(&self.path, e)),
                Some(HelperMessage::Hello(_)) => {
                    return Err(ClientError::Protocol("a second Hello".into()))
                }
                None => return Err(ClientError::Disconnected),
            }
        }
        Ok(Subscription {
            reader: self.reader,
            _writer: self.writer,
            hello: self.hello,
            path: self.path,
            pending,
        })
    }
}

/// A connection that streams events (see [`Client::subscribe`]).
pub struct Subscription {
    reader: BoxedReader,
    /// Kept open: closing our half would look like "client gone" to the helper.
    _writer: BoxedWriter,
    hello: Hello,
    path: PathBuf,
    pending: VecDeque<(u64, Event)>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("path", &self.path)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next `(seq, event)`; `Ok(None)` when the helper closed the
    /// connection; a helper error frame becomes `Err(ClientError::Helper)`
    /// (e.g. `SlowSubscriber`: resubscribe).
    ///
    /// Cancel-safe, so it can be used in `tokio::select!`.
    pub async fn next(&mut self) -> Result<Option<(u64, Event)>, ClientError> {
        if let Some(item) = self.pending.pop_front() {
            return Ok(Some(item));
        }
        loop {
            match self.reader.read::<HelperMessage>().await {
                Ok(Some(HelperMessage::Event { seq, event })) => return Ok(Some((seq, event))),
                Ok(Some(HelperMessage::Reply { .. })) => {}
                Ok(Some(HelperMessage::Error(e))) => return Err(from_helper_error(&self.path, e)),
                Ok(Some(HelperMessage::Hello(_))) => {
                    return Err(ClientError::Protocol("a second Hello".into()))
                }
                Ok(None) => return Ok(None),
                Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The helper's Hello.
    pub fn helper_hello(&self) -> &Hello {
        &self.hello
    }
}

#[cfg(unix)]
async fn open(path: &Path) -> Result<(BoxedReader, BoxedWriter), ClientError> {
    match tokio::net::UnixStream::connect(path).await {
        Ok(stream) => {
            let (r, w) = stream.into_split();
            Ok(crate::framed::boxed(r, w))
        }
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::HelperNotRunning {
                    path: path.to_path_buf(),
                }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_path_buf(),
                detail: "the socket's permissions do not let you in".into(),
                by_helper: false,
            },
            _ => ClientError::Io(e),
        }),
    }
}

/// Opens the pipe asking for exactly [`crate::sddl::PIPE_READ_WRITE`], what
/// the helper's descriptor grants people: tokio's `ClientOptions` asks for
/// `GENERIC_WRITE`, which includes the right to create pipe instances that
/// the descriptor withholds, so Windows would refuse it. Identification-level
/// impersonation only, as tokio's default.
#[cfg(windows)]
fn open_pipe(path: &Path) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, SECURITY_IDENTIFICATION,
        SECURITY_SQOS_PRESENT,
    };
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: `wide` is NUL-terminated and outlives the call; no security
    // attributes or template.
    let handle = unsafe {
        CreateFileW(
            wide.as_ptr(),
            crate::sddl::PIPE_READ_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            std::ptr::null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a pipe handle we just opened for overlapped IO and own alone.
    unsafe { tokio::net::windows::named_pipe::NamedPipeClient::from_raw_handle(handle as _) }
}

#[cfg(windows)]
async fn open(path: &Path) -> Result<(BoxedReader, BoxedWriter), ClientError> {
    use windows_sys::Win32::Foundation::ERROR_PIPE_BUSY;

    // All instances busy is transient: the helper creates a new one right
    // after each connection. Bounded: 50 × 100 ms.
    let mut attempts = 0;
    let pipe = loop {
        match open_pipe(path) {
            Ok(pipe) => break pipe,
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound => ClientError::HelperNotRunning {
                        path: path.to_path_buf(),
                    },
                    std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                        path: path.to_path_buf(),
                        detail: "the pipe's access list does not include you".into(),
                        by_helper: false,
                    },
                    _ => ClientError::Io(e),
                })
            }
        }
    };
    verify_system_owner(&pipe).map_err(|detail| ClientError::Untrusted {
        path: path.to_path_buf(),
        detail,
    })?;
    let (r, w) = tokio::io::split(pipe);
    Ok(crate::framed::boxed(r, w))
}

/// Checks that the pipe's owner is LocalSystem; the error text describes
/// what was found instead.
#[cfg(windows)]
fn verify_system_owner(
    pipe: &tokio::net::windows::named_pipe::NamedPipeClient,
) -> Result<(), String> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_KERNEL_OBJECT};
    use windows_sys::Win32::Security::{
        IsWellKnownSid, WinLocalSystemSid, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    };

    let mut owner: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: the handle is a live pipe handle owned by `pipe`; the out
    // pointers are valid; `owner` points into `sd`, which we free after use.
    let status = unsafe {
        GetSecurityInfo(
            pipe.as_raw_handle() as _,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if status != 0 {
        return Err(format!(
            "could not read its owner: {}",
            std::io::Error::from_raw_os_error(status as i32)
        ));
    }
    // SAFETY: `owner` is a valid SID inside `sd` (checked status above).
    let is_system = unsafe { IsWellKnownSid(owner, WinLocalSystemSid) } != 0;
    // SAFETY: `sd` was allocated by GetSecurityInfo with LocalAlloc.
    unsafe { LocalFree(sd) };
    if is_system {
        Ok(())
    } else {
        Err("its owner is another account".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_kind_whose_hint_they_show() {
        let path = PathBuf::from("/nonexistent/helper.sock");
        let cases = [
            (
                ClientError::HelperNotRunning { path: path.clone() },
                Some(HelperUnavailable::NotRunning),
            ),
            (
                ClientError::VersionMismatch {
                    ours: "1.0".into(),
                    theirs: "2.0".into(),
                },
                Some(HelperUnavailable::VersionMismatch),
            ),
            (
                ClientError::Timeout(Duration::from_secs(10)),
                Some(HelperUnavailable::Unresponsive),
            ),
            (
                ClientError::Disconnected,
                Some(HelperUnavailable::Unresponsive),
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.unavailable(), kind, "{err}");
            let kind = kind.unwrap();
            assert!(err.to_string().contains(&kind.hint()), "{err}");
        }
        // The helper's own refusal is classified by its code (its message
        // says what to do in its own words).
        assert_eq!(
            ClientError::Helper(IpcError::new(ErrorCode::VersionMismatch, "major 2")).unavailable(),
            Some(HelperUnavailable::VersionMismatch)
        );
        assert_eq!(
            ClientError::Helper(IpcError::new(ErrorCode::Unreachable, "no answer")).unavailable(),
            None
        );
    }

    #[test]
    fn a_refusal_gets_the_join_hint_once() {
        let path = PathBuf::from("/nonexistent/helper.sock");
        let by_os = ClientError::PermissionDenied {
            path: path.clone(),
            detail: "the socket's permissions do not let you in".into(),
            by_helper: false,
        };
        assert_eq!(by_os.unavailable(), Some(HelperUnavailable::NotPermitted));
        // No socket to read a group from: the default group is named.
        let hint = platform::join_group_hint(crate::DEFAULT_GROUP);
        assert!(by_os.to_string().ends_with(&hint), "{by_os}");

        // The helper's own refusal already says what to do.
        let helper_says = "not in group; join it with `sudo usermod -aG staff $USER`";
        let by_helper = from_helper_error(
            &path,
            IpcError::new(ErrorCode::PermissionDenied, helper_says),
        );
        assert_eq!(
            by_helper.unavailable(),
            Some(HelperUnavailable::NotPermitted)
        );
        let text = by_helper.to_string();
        assert!(text.ends_with(helper_says), "{text}");
        assert!(!text.contains(&hint), "{text}");
    }

    /// Someone granted only what the helper's descriptor grants people gets
    /// in with the client's request, where tokio's default (generic write,
    /// which includes creating pipe instances) is refused.
    #[cfg(windows)]
    #[tokio::test]
    async fn the_client_asks_only_for_what_people_are_granted() {
        use crate::wintest::{under_wine, unique_pipe};
        use tokio::net::windows::named_pipe::ClientOptions;
        // OW: the owner, i.e. this process's user, with no other rights.
        let sddl = format!("D:P(A;;{:#x};;;OW)", crate::sddl::PIPE_READ_WRITE);
        let path = unique_pipe("rights");
        let _server = crate::server::Listener::bind_with_sddl(path.clone(), sddl).unwrap();
        // Tried first: a refusal takes no instance, a success would.
        match ClientOptions::new().open(&path) {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
            Ok(_) if under_wine() => {
                eprintln!(
                    "the_client_asks_only_for_what_people_are_granted: refusal of generic \
                     write skipped under Wine: Wine does not check a pipe's access list when \
                     a client opens it"
                );
                return;
            }
            Ok(_) => panic!("generic write was granted by an entry that withholds it"),
        }
        open_pipe(&path).expect("the client's own request is granted");
    }
}
