//! The client devices this agent accepts, from the coordinator's
//! `PeerUpdate` stream. A snapshot replaces the table; a diff must follow
//! the previous update's sequence number or the stream is resubscribed.

use std::collections::HashMap;
use warren_proto::control::{ClientPeer, PeerUpdate, UpdateKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    Gap {
        expected_prev: Option<u64>,
        got: u64,
    },
}

#[derive(Debug, Default)]
pub struct PeerTable {
    peers: HashMap<String, ClientPeer>,
    last_seq: Option<u64>,
}

impl PeerTable {
    pub fn begin_stream(&mut self) {
        self.last_seq = None;
    }

    pub fn apply(&mut self, update: PeerUpdate) -> Result<(), PeerError> {
        match update.kind {
            UpdateKind::Snapshot => {
                self.peers = update
                    .upserted
                    .into_iter()
                    .map(|p| (p.id.clone(), p))
                    .collect();
            }
            UpdateKind::Diff => {
                if self.last_seq.map(|s| s.wrapping_add(1)) != Some(update.seq) {
                    return Err(PeerError::Gap {
                        expected_prev: self.last_seq,
                        got: update.seq,
                    });
                }
                for id in update.deleted {
                    self.peers.remove(&id);
                }
                for peer in update.upserted {
                    self.peers.insert(peer.id.clone(), peer);
                }
            }
        }
        self.last_seq = Some(update.seq);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

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
}
