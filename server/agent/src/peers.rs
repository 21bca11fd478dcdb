//! The client devices this agent accepts, from the coordinator's
//! `PeerUpdate` stream. A snapshot replaces the table (devices it does not
//! name are dropped); a diff must follow the previous update's sequence
//! number or the stream is resubscribed. The table is a
//! [`warren_session::Replica`], the same snapshot-then-diff collection the
//! helper's directory uses.

use warren_proto::control::{ClientPeer, PeerUpdate, UpdateKind};
use warren_session::{Replica, Sequence};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    Gap {
        expected_prev: Option<u64>,
        got: u64,
    },
}

#[derive(Debug, Default)]
pub struct PeerTable {
    peers: Replica<String, ClientPeer>,
    seq: Sequence,
}

impl PeerTable {
    /// A new connection: its first update must be a snapshot. The devices
    /// stay accepted until that snapshot replaces them.
    pub fn begin_stream(&mut self) {
        self.seq.reset();
    }

    /// Applies one update; `Ok(true)` when the set of devices or one of them
    /// changed. A refused update changes nothing.
    pub fn apply(&mut self, update: PeerUpdate) -> Result<bool, PeerError> {
        let mut changed = false;
        match update.kind {
            UpdateKind::Snapshot => {
                self.peers.begin_snapshot();
                for peer in update.upserted {
                    changed |= self.peers.upsert(peer.id.clone(), peer).is_some();
                }
                changed |= !self.peers.end_snapshot().is_empty();
                self.seq.restart(update.seq);
            }
            UpdateKind::Diff => {
                self.seq.advance(update.seq).map_err(|gap| PeerError::Gap {
                    expected_prev: gap.expected_prev,
                    got: gap.got,
                })?;
                for id in update.deleted {
                    changed |= self.peers.remove(&id).is_some();
                }
                for peer in update.upserted {
                    changed |= self.peers.upsert(peer.id.clone(), peer).is_some();
                }
            }
        }
        Ok(changed)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The accepted devices, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &ClientPeer> {
        self.peers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> ClientPeer {
        ClientPeer {
            id: id.into(),
            user: "alice".into(),
            public_key: format!("key-{id}"),
            addresses: vec![],
            endpoints: vec![],
        }
    }

    fn update(kind: UpdateKind, seq: u64, up: &[&str], del: &[&str]) -> PeerUpdate {
        PeerUpdate {
            kind,
            seq,
            upserted: up.iter().map(|id| peer(id)).collect(),
            deleted: del.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn snapshot_replaces_and_diffs_follow_in_order() {
        let mut t = PeerTable::default();
        t.apply(update(UpdateKind::Snapshot, 0, &["a", "b"], &[]))
            .unwrap();
        t.apply(update(UpdateKind::Diff, 1, &["c"], &["a"]))
            .unwrap();
        let mut ids: Vec<_> = t.peers().map(|p| p.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, vec!["b", "c"]);
        assert!(t.apply(update(UpdateKind::Diff, 3, &[], &[])).is_err());
        t.begin_stream();
        assert!(t.apply(update(UpdateKind::Diff, 2, &[], &[])).is_err());
        t.apply(update(UpdateKind::Snapshot, 0, &["z"], &[]))
            .unwrap();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn only_real_changes_are_reported() {
        let mut t = PeerTable::default();
        assert!(t
            .apply(update(UpdateKind::Snapshot, 7, &["a", "b"], &[]))
            .unwrap());
        // The same devices again (a reconnect's snapshot, a repeated upsert,
        // a deletion of an unknown id) change nothing.
        t.begin_stream();
        assert!(!t
            .apply(update(UpdateKind::Snapshot, 0, &["b", "a"], &[]))
            .unwrap());
        assert!(!t
            .apply(update(UpdateKind::Diff, 1, &["a"], &["zz"]))
            .unwrap());
        // A snapshot that only drops a device is a change.
        assert!(t
            .apply(update(UpdateKind::Snapshot, 5, &["a"], &[]))
            .unwrap());
        assert_eq!(
            t.peers().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        let mut moved = peer("a");
        moved.endpoints = vec!["192.0.2.1:51820".parse().unwrap()];
        let diff = PeerUpdate {
            kind: UpdateKind::Diff,
            seq: 6,
            upserted: vec![moved.clone()],
            deleted: vec![],
        };
        assert!(t.apply(diff).unwrap());
        assert_eq!(t.peers().next(), Some(&moved));
        assert_eq!(
            t.apply(update(UpdateKind::Diff, 8, &[], &["a"])),
            Err(PeerError::Gap {
                expected_prev: Some(6),
                got: 8
            })
        );
        assert_eq!(t.len(), 1, "a refused diff changes nothing");
    }
}
