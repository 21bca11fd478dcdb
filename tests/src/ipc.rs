//! A deliberately plain, blocking IPC client written straight from the wire
//! format in `warren-proto`, independent of `warren-ipc`: it can send broken
//! frames, refuse to read, and check the helper's event numbering itself.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use warren_proto::frame::{encode, FrameDecoder};
use warren_proto::ipc::{
    ClientMessage, Event, Hello, HelperMessage, IpcError, Reply, Request, SessionInfo,
};
use warren_proto::model::{Agent, Workspace};

/// What one receive attempt produced.
// Unboxed so tests can match `Recv::Message(HelperMessage::Error(e))`
// directly; a few hundred bytes on a test's stack don't matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Recv {
    Message(HelperMessage),
    /// The helper closed the connection (EOF or reset).
    Closed,
    /// Nothing complete arrived in time.
    Timeout,
    /// Bytes arrived that are not a valid frame or message.
    Garbage(String),
}

pub struct RawIpc {
    pub stream: UnixStream,
    decoder: FrameDecoder,
    next_id: u64,
}

// `Result<_, Recv>` hands "what came instead" to the test's panic message.
#[allow(clippy::result_large_err)]
impl RawIpc {
    pub fn connect(socket: &Path) -> std::io::Result<Self> {
        Ok(Self::from_stream(UnixStream::connect(socket)?))
    }

    /// Wraps a stream the test already wrote to by hand.
    pub fn from_stream(stream: UnixStream) -> Self {
        RawIpc {
            stream,
            decoder: FrameDecoder::new(),
            next_id: 1,
        }
    }

    /// Connects and exchanges `Hello`; panics if the helper refuses.
    pub fn connect_hello(socket: &Path) -> Self {
        let mut c = Self::connect(socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        match c.hello() {
            Ok(_) => c,
            Err(e) => panic!("helper refused Hello: {e:?}"),
        }
    }

    /// Sends our `Hello`; returns the helper's, or its error / what came
    /// instead.
    pub fn hello(&mut self) -> Result<Hello, Recv> {
        self.send(&ClientMessage::Hello(Hello::new("warren-e2e")));
        match self.recv(Duration::from_secs(10)) {
            Recv::Message(HelperMessage::Hello(h)) => Ok(h),
            other => Err(other),
        }
    }

    pub fn send(&mut self, msg: &ClientMessage) {
        let bytes = encode(msg).expect("test messages fit in a frame");
        self.send_raw(&bytes).expect("write to helper socket");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a request; returns its id.
    pub fn send_request(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientMessage::Request { id, request });
        id
    }

    /// Sends a request and waits for its reply, skipping events.
    pub fn request(&mut self, request: Request, timeout: Duration) -> Reply {
        let id = self.send_request(request);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Message(HelperMessage::Reply { reply_to, reply }) if reply_to == id => {
                    return reply
                }
                Recv::Message(_) => continue,
                other => panic!("no reply to request {id}: {other:?}"),
            }
        }
    }

    /// Receives one message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Recv {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.decoder.next_payload() {
                Ok(Some(payload)) => {
                    return match warren_proto::frame::decode_payload(&payload) {
                        Ok(m) => Recv::Message(m),
                        Err(e) => Recv::Garbage(e.to_string()),
                    }
                }
                Ok(None) => {}
                Err(e) => return Recv::Garbage(e.to_string()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::Timeout;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => return Recv::Closed,
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Recv::Timeout
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Recv::Closed,
            }
        }
    }

    /// Reads until an `Error` frame or the connection closes, skipping
    /// other messages. `Ok(error)` or `Err(what ended it instead)`.
    pub fn expect_error(&mut self, timeout: Duration) -> Result<IpcError, Recv> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Message(HelperMessage::Error(e)) => return Ok(e),
                Recv::Message(_) => continue,
                other => return Err(other),
            }
        }
    }
}

/// The state a subscriber rebuilds from `State` parts and diffs.
#[derive(Debug, Default, Clone)]
pub struct Mirror {
    pub session: Option<SessionInfo>,
    pub workspaces: BTreeMap<String, Workspace>,
    pub agents: BTreeMap<String, Agent>,
    /// A full state has arrived (the `State` part with `last`).
    pub complete: bool,
    next_seq: u64,
    /// How many `State` part 0s were seen (resyncs).
    pub resets: u32,
}

impl Mirror {
    /// Applies one event; `Err` on a sequence gap or a part out of order.
    pub fn apply(&mut self, seq: u64, event: Event) -> Result<(), String> {
        if let Event::State { part: 0, .. } = &event {
            if seq != 0 {
                return Err(format!("State part 0 carries seq {seq}, expected 0"));
            }
        } else if seq != self.next_seq {
            return Err(format!("event seq {seq}, expected {}", self.next_seq));
        }
        self.next_seq = seq + 1;
        match event {
            Event::State {
                part,
                last,
                session,
                workspaces,
                agents,
                ..
            } => {
                if part == 0 {
                    self.workspaces.clear();
                    self.agents.clear();
                    self.complete = false;
                    self.resets += 1;
                } else if self.complete {
                    return Err(format!("State part {part} after the last part"));
                }
                self.session = Some(session);
                self.workspaces
                    .extend(workspaces.into_iter().map(|w| (w.id.clone(), w)));
                self.agents
                    .extend(agents.into_iter().map(|a| (a.id.clone(), a)));
                if last {
                    self.complete = true;
                }
            }
            Event::PeerUpdate {
                upserted_workspaces,
                upserted_agents,
                deleted_workspaces,
                deleted_agents,
            } => {
                for id in deleted_agents {
                    self.agents.remove(&id);
                }
                for id in &deleted_workspaces {
                    self.workspaces.remove(id);
                    self.agents.retain(|_, a| &a.workspace_id != id);
                }
                self.workspaces
                    .extend(upserted_workspaces.into_iter().map(|w| (w.id.clone(), w)));
                self.agents
                    .extend(upserted_agents.into_iter().map(|a| (a.id.clone(), a)));
            }
            Event::SessionChanged { session } => self.session = Some(session),
            Event::Log { .. } | Event::PeerStats { .. } => {}
        }
        Ok(())
    }

    pub fn workspace_named(&self, name: &str) -> Option<&Workspace> {
        self.workspaces.values().find(|w| w.name == name)
    }

    pub fn agent_named(&self, ws_name: &str, agent: &str) -> Option<&Agent> {
        let ws = self.workspace_named(ws_name)?;
        self.agents
            .values()
            .find(|a| a.workspace_id == ws.id && a.name == agent)
    }
}

/// A subscribed raw client that keeps a [`Mirror`].
pub struct RawSubscriber {
    pub ipc: RawIpc,
    pub mirror: Mirror,
}

impl RawSubscriber {
    /// Connects, says hello and subscribes (the `Ok` reply is checked).
    pub fn subscribe(socket: &Path) -> Self {
        let mut ipc = RawIpc::connect_hello(socket);
        let id = ipc.send_request(Request::Subscribe);
        let mut me = RawSubscriber {
            ipc,
            mirror: Mirror::default(),
        };
        // Events may come before or after the reply; take them all.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut replied = false;
        while !replied {
            let left = deadline.saturating_duration_since(Instant::now());
            match me.ipc.recv(left) {
                Recv::Message(HelperMessage::Reply { reply_to, reply }) if reply_to == id => {
                    assert_eq!(reply, Reply::Ok, "Subscribe must be answered Ok");
                    replied = true;
                }
                Recv::Message(HelperMessage::Event { seq, event }) => me
                    .mirror
                    .apply(seq, event)
                    .unwrap_or_else(|e| panic!("subscriber stream broken: {e}")),
                other => panic!("no reply to Subscribe: {other:?}"),
            }
        }
        me
    }

    /// Processes events for at most `timeout`, until `done(mirror)` holds.
    /// Returns whether it held. Panics on a sequence gap, error or close.
    pub fn pump_until(&mut self, timeout: Duration, mut done: impl FnMut(&Mirror) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.mirror) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.ipc.recv(left) {
                Recv::Message(HelperMessage::Event { seq, event }) => self
                    .mirror
                    .apply(seq, event)
                    .unwrap_or_else(|e| panic!("subscriber stream broken: {e}")),
                Recv::Message(_) => {}
                Recv::Timeout => return done(&self.mirror),
                other => panic!("subscriber stream ended: {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::ipc::SessionInfo;

    fn state(part: u32, last: bool, agents: &[&str]) -> Event {
        Event::State {
            part,
            last,
            session: SessionInfo::disconnected(),
            workspaces: vec![],
            agents: agents
                .iter()
                .map(|id| Agent {
                    id: id.to_string(),
                    name: id.to_string(),
                    workspace_id: "w".into(),
                    public_key: None,
                    addresses: vec![],
                    endpoints: vec![],
                    dns_names: vec![],
                    online: false,
                })
                .collect(),
            stats: vec![],
        }
    }

    #[test]
    fn mirror_replaces_on_part_zero_and_catches_gaps() {
        let mut m = Mirror::default();
        m.apply(0, state(0, false, &["a"])).unwrap();
        assert!(!m.complete);
        m.apply(1, state(1, true, &["b"])).unwrap();
        assert!(m.complete);
        assert_eq!(m.agents.len(), 2);
        // A new part 0 replaces, it does not add.
        m.apply(0, state(0, true, &["c"])).unwrap();
        assert_eq!(m.agents.keys().collect::<Vec<_>>(), vec!["c"]);
        let diff = Event::PeerUpdate {
            upserted_workspaces: vec![],
            upserted_agents: vec![],
            deleted_workspaces: vec![],
            deleted_agents: vec!["c".into()],
        };
        assert!(m.apply(2, diff.clone()).is_err(), "seq 2 after 0 is a gap");
        m.apply(1, diff).unwrap();
        assert!(m.agents.is_empty());
    }
}
