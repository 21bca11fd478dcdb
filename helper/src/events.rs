//! Events for subscribers, serialized once and shared by every subscriber.
//!
//! A frame is capped at 1 MiB, and a full state of 20,000 agents is several
//! MiB, so the state (and any large diff, such as the one a snapshot after a
//! reconnect produces) is cut into parts that each stay well under the cap.
//! Items are serialized one by one and the event JSON is assembled around
//! them, so the big lists are encoded exactly once.

use serde::Serialize;
use std::sync::Arc;
use warren_proto::frame::{FrameError, HEADER_LEN, MAX_FRAME_LEN};
use warren_proto::ipc::{Event, LogLine, PeerStats, SessionInfo};
use warren_proto::model::{Agent, Workspace};
use warren_session::Delta;

/// Most bytes of item JSON put in one event; the rest of the 1 MiB frame is
/// headroom for the envelope and the session info.
pub const CHUNK_BUDGET: usize = 512 * 1024;

/// How a queued event behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The first part of a full state: the receiver resets, and so does `seq`.
    StateStart,
    /// A later state part, or a diff.
    Ordered,
    /// Session state: a newer one replaces an unsent older one.
    Session,
    /// A log line: may be dropped first when the queue is long.
    Log,
}

/// One event as JSON (the `event` field of `HelperMessage::Event`).
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    pub kind: EventKind,
    pub json: Arc<str>,
}

fn to_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(value)
}

/// Serializes items straight into per-part lists of at most
/// [`CHUNK_BUDGET`] bytes (an oversize item gets a part of its own), with no
/// allocation per item.
struct Chunker {
    /// Per part: four comma-separated JSON lists (the caller says which).
    parts: Vec<[Vec<u8>; 4]>,
    size: usize,
    scratch: Vec<u8>,
}

impl Chunker {
    fn new() -> Self {
        Self {
            parts: vec![Default::default()],
            size: 0,
            scratch: Vec::with_capacity(1024),
        }
    }

    fn push<T: Serialize>(&mut self, list: usize, item: &T) -> Result<(), serde_json::Error> {
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, item)?;
        if self.size > 0 && self.size + self.scratch.len() > CHUNK_BUDGET {
            self.parts.push(Default::default());
            self.size = 0;
        }
        self.size += self.scratch.len() + 1;
        if let Some(part) = self.parts.last_mut() {
            let out = &mut part[list];
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(&self.scratch);
        }
        Ok(())
    }
}

/// `[` + items + `]` appended to `out`.
fn push_list(out: &mut Vec<u8>, items: &[u8]) {
    out.push(b'[');
    out.extend_from_slice(items);
    out.push(b']');
}

/// Bytes assembled from serde_json output and ASCII are UTF-8.
fn into_json(bytes: Vec<u8>) -> Result<Arc<str>, serde_json::Error> {
    String::from_utf8(bytes)
        .map(Arc::from)
        .map_err(|e| serde::ser::Error::custom(format!("event is not UTF-8: {e}")))
}

/// The full state as one or more `State` events.
pub fn state_events<'a>(
    session: &SessionInfo,
    workspaces: impl IntoIterator<Item = &'a Workspace>,
    agents: impl IntoIterator<Item = &'a Agent>,
    stats: impl IntoIterator<Item = &'a PeerStats>,
) -> Result<Vec<EncodedEvent>, serde_json::Error> {
    let session = to_json(session)?;
    let mut chunker = Chunker::new();
    for ws in workspaces {
        chunker.push(0, ws)?;
    }
    for agent in agents {
        chunker.push(1, agent)?;
    }
    // After the agents, so a receiver always knows the agent a stat is for.
    for s in stats {
        chunker.push(2, s)?;
    }
    let count = chunker.parts.len();
    let mut events = Vec::with_capacity(count);
    for (i, [ws, agents, stats, _]) in chunker.parts.into_iter().enumerate() {
        let mut out =
            Vec::with_capacity(ws.len() + agents.len() + stats.len() + session.len() + 128);
        out.extend_from_slice(
            format!(
                r#"{{"event":"state","part":{i},"last":{},"session":{session},"workspaces":"#,
                i + 1 == count
            )
            .as_bytes(),
        );
        push_list(&mut out, &ws);
        out.extend_from_slice(br#","agents":"#);
        push_list(&mut out, &agents);
        if !stats.is_empty() {
            out.extend_from_slice(br#","stats":"#);
            push_list(&mut out, &stats);
        }
        out.push(b'}');
        events.push(EncodedEvent {
            kind: if i == 0 {
                EventKind::StateStart
            } else {
                EventKind::Ordered
            },
            json: into_json(out)?,
        });
    }
    Ok(events)
}

/// A directory change as one or more `PeerUpdate` events (none if empty).
pub fn update_events(delta: &Delta) -> Result<Vec<EncodedEvent>, serde_json::Error> {
    if delta.is_empty() {
        return Ok(Vec::new());
    }
    let mut chunker = Chunker::new();
    for id in &delta.deleted_agents {
        chunker.push(2, id)?;
    }
    for id in &delta.deleted_workspaces {
        chunker.push(3, id)?;
    }
    for ws in &delta.upserted_workspaces {
        chunker.push(0, ws)?;
    }
    for agent in &delta.upserted_agents {
        chunker.push(1, agent)?;
    }
    let mut events = Vec::with_capacity(chunker.parts.len());
    for [ws, agents, del_agents, del_ws] in chunker.parts {
        let mut out =
            Vec::with_capacity(ws.len() + agents.len() + del_agents.len() + del_ws.len() + 128);
        out.extend_from_slice(br#"{"event":"peer_update","upserted_workspaces":"#);
        push_list(&mut out, &ws);
        out.extend_from_slice(br#","upserted_agents":"#);
        push_list(&mut out, &agents);
        out.extend_from_slice(br#","deleted_workspaces":"#);
        push_list(&mut out, &del_ws);
        out.extend_from_slice(br#","deleted_agents":"#);
        push_list(&mut out, &del_agents);
        out.push(b'}');
        events.push(EncodedEvent {
            kind: EventKind::Ordered,
            json: into_json(out)?,
        });
    }
    Ok(events)
}

/// Tunnel statistics as one or more `PeerStats` events (none if empty).
pub fn stats_events(stats: &[PeerStats]) -> Result<Vec<EncodedEvent>, serde_json::Error> {
    if stats.is_empty() {
        return Ok(Vec::new());
    }
    let mut chunker = Chunker::new();
    for s in stats {
        chunker.push(0, s)?;
    }
    let mut events = Vec::with_capacity(chunker.parts.len());
    for [list, _, _, _] in chunker.parts {
        let mut out = Vec::with_capacity(list.len() + 32);
        out.extend_from_slice(br#"{"event":"peer_stats","stats":"#);
        push_list(&mut out, &list);
        out.push(b'}');
        events.push(EncodedEvent {
            kind: EventKind::Ordered,
            json: into_json(out)?,
        });
    }
    Ok(events)
}

pub fn session_event(session: &SessionInfo) -> Result<EncodedEvent, serde_json::Error> {
    Ok(EncodedEvent {
        kind: EventKind::Session,
        json: to_json(&Event::SessionChanged {
            session: session.clone(),
        })?
        .into(),
    })
}

pub fn log_event(line: &LogLine) -> Result<EncodedEvent, serde_json::Error> {
    Ok(EncodedEvent {
        kind: EventKind::Log,
        json: to_json(&Event::Log { line: line.clone() })?.into(),
    })
}

/// The complete frame for `HelperMessage::Event { seq, event }`.
pub fn event_frame(seq: u64, event_json: &str) -> Result<Vec<u8>, FrameError> {
    let prefix = format!(r#"{{"type":"event","seq":{seq},"event":"#);
    let len = prefix.len() + event_json.len() + 1;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + len);
    // len <= MAX_FRAME_LEN, so it fits in u32.
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.extend_from_slice(prefix.as_bytes());
    frame.extend_from_slice(event_json.as_bytes());
    frame.push(b'}');
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_proto::frame::decode_payload;
    use warren_proto::ipc::HelperMessage;

    fn agent(i: usize) -> Agent {
        Agent {
            id: format!("agent-{i:05}-{}", "x".repeat(20)),
            name: format!("a{i}"),
            workspace_id: format!("ws-{}", i / 2),
            public_key: Some("kZ0aW4gd2lyZWd1YXJkIGtleSBmb3IgdGVzdGluZyE=".into()),
            addresses: vec!["100.64.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
            endpoints: vec!["192.0.2.1:51820".parse().unwrap()],
            dns_names: vec![format!("a{i}.ws-{}.alice.warren", i / 2)],
            online: i.is_multiple_of(3),
        }
    }

    fn ws(i: usize) -> Workspace {
        Workspace {
            id: format!("ws-{i}"),
            name: format!("ws-{i}"),
            owner: "alice".into(),
        }
    }

    fn decode(seq: u64, e: &EncodedEvent) -> (u64, Event) {
        let frame = event_frame(seq, &e.json).unwrap();
        assert!(frame.len() - HEADER_LEN <= MAX_FRAME_LEN);
        match decode_payload::<HelperMessage>(&frame[HEADER_LEN..]).unwrap() {
            HelperMessage::Event { seq, event } => (seq, event),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn large_state_is_split_into_valid_parts_under_the_frame_cap() {
        let workspaces: Vec<_> = (0..10_000).map(ws).collect();
        let agents: Vec<_> = (0..20_000).map(agent).collect();
        let session = SessionInfo::disconnected();
        let stats: Vec<_> = (0..20_000).map(stat).collect();
        let events = state_events(&session, &workspaces, &agents, &stats).unwrap();
        assert!(events.len() > 1, "20,000 agents need several parts");
        let (mut n_ws, mut n_agents, mut n_stats) = (0, 0, 0);
        for (i, e) in events.iter().enumerate() {
            let (_, event) = decode(i as u64, e);
            match event {
                Event::State {
                    part,
                    last,
                    workspaces,
                    agents,
                    stats,
                    ..
                } => {
                    assert_eq!(part as usize, i);
                    assert_eq!(last, i + 1 == events.len());
                    n_ws += workspaces.len();
                    n_agents += agents.len();
                    n_stats += stats.len();
                    if !stats.is_empty() {
                        assert_eq!(n_agents, 20_000, "stats came before their agents");
                    }
                }
                other => panic!("expected state, got {other:?}"),
            }
        }
        assert_eq!((n_ws, n_agents, n_stats), (10_000, 20_000, 20_000));
        assert_eq!(events[0].kind, EventKind::StateStart);
        assert!(events[1..].iter().all(|e| e.kind == EventKind::Ordered));
    }

    fn stat(i: u32) -> PeerStats {
        PeerStats {
            agent_id: format!("agent-{i}"),
            last_handshake_ms: Some(1_700_000_000_000 + u64::from(i)),
            rx_bytes: u64::from(i) * 1000,
            tx_bytes: 7,
            rtt_us: Some(420),
            endpoint: Some("10.0.0.2:51820".parse().unwrap()),
            relay: None,
            no_path: false,
        }
    }

    #[test]
    fn stats_round_trip_in_parts_under_the_cap() {
        assert!(stats_events(&[]).unwrap().is_empty());
        let stats: Vec<_> = (0..20_000).map(stat).collect();
        let events = stats_events(&stats).unwrap();
        assert!(events.len() > 1, "20,000 stats need several parts");
        let mut got = Vec::new();
        for (i, e) in events.iter().enumerate() {
            assert!(e.json.len() < MAX_FRAME_LEN);
            assert_eq!(e.kind, EventKind::Ordered);
            match decode(i as u64, e).1 {
                Event::PeerStats { stats } => got.extend(stats),
                other => panic!("expected stats, got {other:?}"),
            }
        }
        assert_eq!(got, stats);
    }

    #[test]
    fn empty_state_is_one_final_part() {
        let events = state_events(&SessionInfo::disconnected(), &[], &[], &[]).unwrap();
        assert_eq!(events.len(), 1);
        assert!(matches!(
            decode(0, &events[0]).1,
            Event::State {
                last: true,
                part: 0,
                ..
            }
        ));
    }

    #[test]
    fn update_round_trips_and_empty_delta_sends_nothing() {
        assert!(update_events(&Delta::default()).unwrap().is_empty());
        let delta = Delta {
            upserted_workspaces: vec![ws(1)],
            upserted_agents: vec![agent(1)],
            deleted_workspaces: vec!["ws-9".into()],
            deleted_agents: vec!["agent-old".into()],
        };
        let events = update_events(&delta).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            decode(5, &events[0]),
            (
                5,
                Event::PeerUpdate {
                    upserted_workspaces: delta.upserted_workspaces.clone(),
                    upserted_agents: delta.upserted_agents.clone(),
                    deleted_workspaces: delta.deleted_workspaces.clone(),
                    deleted_agents: delta.deleted_agents.clone(),
                }
            )
        );
    }
}
