//! The helper's door: only root and members of its group get in (socket mode
//! and, behind it, the peer-credential check); a wrong token is refused with
//! words a person can act on; malformed frames get an error and never take
//! the helper down.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use warren_e2e::{
    ipc_request, set_mode, Coordinator, Helper, RawIpc, Recv, TestDir, ThrowawayGroup,
    ThrowawayUser,
};
use warren_proto::ipc::{ErrorCode, HelperMessage, Reply, Request, SessionState};
use warren_proto::Secret;

/// Connects to `socket` from a thread running with another user's ids, and
/// returns what the helper answered to Hello. Raw syscalls change only this
/// thread's credentials (glibc's wrappers would change the whole process),
/// and SO_PEERCRED records the connecting thread's.
fn hello_as(socket: &std::path::Path, uid: u32, gid: u32) -> Result<Recv, std::io::Error> {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: plain credential syscalls on the current thread only.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut c = RawIpc::connect(&socket)?;
        Ok(match c.hello() {
            Ok(h) => Recv::Message(HelperMessage::Hello(h)),
            Err(other) => other,
        })
    })
    .join()
    .expect("credential thread does not panic")
}

/// A helper controllable by a fresh group, and a fresh user outside it.
struct Door {
    // Fields drop in order: the helper stops first, then the user and the
    // group are removed, then the directory.
    helper: Helper,
    user: ThrowawayUser,
    group: ThrowawayGroup,
    dir: TestDir,
}

impl Door {
    fn new(name: &str) -> Self {
        let dir = TestDir::new(name);
        let group = ThrowawayGroup::create("wgrp");
        let user = ThrowawayUser::create("warrentest");
        let helper = Helper::start(dir.path(), &group.name);
        Door {
            helper,
            user,
            group,
            dir,
        }
    }

    /// The CLI run as the throwaway user with these supplementary groups.
    fn cli_as_user(&self, groups: Vec<u32>) -> warren_e2e::Cli {
        let cfg = self.dir.join(&format!("cfg-{}", self.user.name));
        self.helper
            .cli(self.dir.path())
            .as_user(self.user.uid, self.user.gid, groups, &cfg)
    }
}

#[test]
fn outsider_is_kept_out_by_the_socket_mode_and_told_which_group() {
    let door = Door::new("access-mode");
    let out = door.cli_as_user(vec![]).run(&["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an outsider ran `warren status`");
    assert!(
        stderr.contains(&door.group.name),
        "the error should name the helper's group `{}`: {stderr}",
        door.group.name
    );
}

#[test]
fn outsider_is_refused_by_the_peer_check_when_the_mode_is_open() {
    let door = Door::new("access-peercred");
    set_mode(&door.helper.socket, 0o666);
    match hello_as(&door.helper.socket, door.user.uid, door.user.gid) {
        Ok(Recv::Message(HelperMessage::Error(e))) => {
            assert_eq!(e.code, ErrorCode::PermissionDenied, "{e:?}");
            assert!(
                e.message.contains(&door.group.name),
                "the refusal should name the group: {}",
                e.message
            );
        }
        other => panic!("an outsider with a 0666 socket got {other:?}, not PermissionDenied"),
    }
    let out = door.cli_as_user(vec![]).run(&["status"]);
    assert!(!out.status.success(), "the peer check let an outsider in");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&door.group.name),
        "the CLI should pass on which group to join: {stderr}"
    );
}

/// The package adds the installing user to the group, but their current
/// login keeps its old groups: the CLI must say to log in again, not to
/// join a group they are already in.
#[test]
fn a_user_added_to_the_group_in_an_old_login_is_told_to_log_in_again() {
    let door = Door::new("access-relogin");
    door.user.add_to_group(&door.group);
    // The process runs without the group, as a login from before would.
    let out = door.cli_as_user(vec![]).run(&["status"]);
    assert!(!out.status.success(), "a process without the group got in");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("log out and back in")
            && stderr.contains(&format!("newgrp {}", door.group.name)),
        "the error should say a new login is needed: {stderr}"
    );
    assert!(
        !stderr.contains("usermod"),
        "the user is in the group already; joining it is no advice: {stderr}"
    );
}

#[test]
fn member_of_the_group_may_control_the_helper() {
    let door = Door::new("access-member");
    door.user.add_to_group(&door.group);
    let member = door.cli_as_user(vec![door.group.gid]);
    let out = member.run(&["status"]);
    assert!(
        out.status.success(),
        "a member of {} could not run `warren status`: {}",
        door.group.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let st = member.status();
    assert_eq!(st.session.state, SessionState::Disconnected);
}

#[test]
fn wrong_token_is_refused_with_what_to_do() {
    let dir = TestDir::new("access-token");
    let coord = Coordinator::start(dir.path());
    coord.user_with_token("alice");
    let helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());
    let wrong = warren_e2e::fake_token();

    // Through the IPC client, as the GUI would.
    let reply = ipc_request(
        &helper.socket,
        Request::Start {
            url: coord.url.clone(),
            token: Secret::new(wrong.clone()),
            ca: None,
            deployment: None,
        },
    )
    .expect("Start is answered");
    assert!(
        matches!(reply, Reply::Ok | Reply::Error(_)),
        "unexpected reply {reply:?}"
    );
    let st = cli.wait_state(SessionState::Failed, Duration::from_secs(10));
    let reason = st.session.reason.unwrap_or_default();
    assert!(
        reason.contains("sign in again"),
        "a rejected token should ask to sign in again: {reason:?}"
    );
    assert!(!reason.contains(&wrong));

    // `warren login` checks the token and says it was rejected.
    let out = cli.run_with_stdin(
        &["login", "--url", &coord.url, "--token-stdin"],
        &format!("{wrong}\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "login with a wrong token succeeded");
    assert!(
        stderr.contains("rejected"),
        "login should say the token was rejected: {stderr}"
    );
    assert!(!stderr.contains(&wrong.to_lowercase()));
}

#[test]
fn malformed_frames_get_an_error_and_the_helper_keeps_serving() {
    let dir = TestDir::new("access-frames");
    let mut helper = Helper::start(dir.path(), "root");
    let cli = helper.cli(dir.path());

    // A 2 MiB frame header after Hello: refused before the payload.
    let mut c = RawIpc::connect_hello(&helper.socket);
    c.send_raw(&(2u32 * 1024 * 1024).to_be_bytes())
        .expect("write header");
    match c.expect_error(Duration::from_secs(5)) {
        Ok(e) => assert_eq!(e.code, ErrorCode::FrameTooLarge, "{e:?}"),
        Err(other) => panic!("a 2 MiB header got {other:?}, not an error frame"),
    }

    // 4 KiB of random bytes as the very first thing.
    let mut c = RawIpc::connect(&helper.socket).expect("connect");
    let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    // The helper may close before reading it all; that's fine.
    let _ = c.send_raw(&noise);
    match c.expect_error(Duration::from_secs(5)) {
        Ok(e) => assert!(
            matches!(
                e.code,
                ErrorCode::FrameTooLarge | ErrorCode::Malformed | ErrorCode::Protocol
            ),
            "{e:?}"
        ),
        Err(other) => panic!("random bytes got {other:?}, not an error frame"),
    }

    // Valid JSON that is not a message.
    let mut c = RawIpc::connect_hello(&helper.socket);
    let body = br#"{"type":"request","id":1,"request":{"op":"launch_missiles"}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    c.send_raw(&frame).expect("write frame");
    match c.recv(Duration::from_secs(5)) {
        Recv::Message(HelperMessage::Error(e)) => {
            assert!(
                matches!(e.code, ErrorCode::Malformed | ErrorCode::BadRequest),
                "{e:?}"
            )
        }
        Recv::Message(HelperMessage::Reply {
            reply: Reply::Error(e),
            ..
        }) => assert!(
            matches!(e.code, ErrorCode::Malformed | ErrorCode::BadRequest),
            "{e:?}"
        ),
        other => panic!("an unknown request got {other:?}, not an error"),
    }

    // A truncated frame: the header promises more than ever arrives.
    let mut s = UnixStream::connect(&helper.socket).expect("connect");
    let hello = warren_proto::frame::encode(&warren_proto::ipc::ClientMessage::Hello(
        warren_proto::ipc::Hello::new("warren-e2e"),
    ))
    .expect("encode hello");
    s.write_all(&hello).expect("write hello");
    s.write_all(&100u32.to_be_bytes()).expect("write header");
    s.write_all(b"{\"type\":\"requ").expect("write part");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut c = RawIpc::from_stream(s);
    match c.recv(Duration::from_secs(5)) {
        Recv::Message(HelperMessage::Hello(_)) => {}
        other => panic!("no Hello for the truncated-frame client: {other:?}"),
    }
    match c.recv(Duration::from_secs(5)) {
        Recv::Closed | Recv::Message(HelperMessage::Error(_)) => {}
        other => panic!("a truncated frame got {other:?}, not an error or a close"),
    }

    // Still serving.
    assert!(helper.is_running(), "the helper died: {}", helper.stderr());
    let st = cli.status();
    assert_eq!(st.session.state, SessionState::Disconnected);
}
