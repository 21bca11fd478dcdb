//! A keyed collection kept in step with a snapshot-then-diff stream.
//!
//! Every stream Warren mirrors — the coordinator's workspace directory, the
//! agent's client devices, the helper's IPC state — has the same shape: a
//! snapshot (possibly in parts) *replaces* what the receiver holds, then
//! diffs edit it. [`Replica`] is that collection, once:
//!
//! * A snapshot is [`Replica::begin_snapshot`], any number of
//!   [`Replica::upsert`]s (the parts), then [`Replica::end_snapshot`], which
//!   deletes every entry the snapshot did not name and returns those keys. The
//!   receiver computes deletions itself; a snapshot is never applied as a diff,
//!   so after a laptop sleeps and every workspace restarts the old agents
//!   cannot linger beside the new ones. Until the end, the previous entries
//!   stay visible, so a reconnect does not blank a user's list.
//! * A diff is [`Replica::upsert`] / [`Replica::remove`], each reporting
//!   whether anything really changed, so an unchanged upsert produces nothing
//!   downstream.
//!
//! [`Sequence`] is the ordering rule those streams share: each update must
//! follow the previous one, and a gap means the receiver resubscribes.
//! Sans-IO: nothing here touches a socket, a clock or a task.

use std::borrow::Borrow;
use std::collections::btree_map::{self, BTreeMap};
use std::fmt;
use std::ops::Index;

/// One entry and the snapshot epoch that last named it. The epoch lets the
/// end of a snapshot find stale entries without a set of the ids it named.
#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    epoch: u64,
}

/// A keyed collection that a snapshot replaces and diffs edit.
///
/// Iteration is in key order, so what a caller derives from it (deleted keys,
/// rendered lists) is deterministic. Two replicas are equal when they hold the
/// same entries, whatever streams brought them there.
#[derive(Debug, Clone)]
pub struct Replica<K, V> {
    entries: BTreeMap<K, Slot<V>>,
    /// Epoch of the current (or last) snapshot; entries stamped with an older
    /// one are deleted when a snapshot ends.
    epoch: u64,
    staging: bool,
}

impl<K, V> Default for Replica<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            epoch: 0,
            staging: false,
        }
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for Replica<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(other.entries.iter())
                .all(|((ka, a), (kb, b))| ka == kb && a.value == b.value)
    }
}

impl<K: Eq, V: Eq> Eq for Replica<K, V> {}

impl<K: Ord + Clone, V: PartialEq> Replica<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a snapshot: the entries it names from now until
    /// [`Self::end_snapshot`] are kept, every other one is deleted then.
    /// Starting again abandons the previous, unfinished snapshot.
    pub fn begin_snapshot(&mut self) {
        self.epoch += 1;
        self.staging = true;
    }

    /// Ends the snapshot: deletes every entry it did not name and returns
    /// their keys in order. Without a snapshot in progress there is nothing
    /// to compare against, so nothing is deleted.
    pub fn end_snapshot(&mut self) -> Vec<K> {
        if !self.staging {
            return Vec::new();
        }
        self.staging = false;
        let epoch = self.epoch;
        let mut gone = Vec::new();
        self.entries.retain(|key, slot| {
            let keep = slot.epoch == epoch;
            if !keep {
                gone.push(key.clone());
            }
            keep
        });
        gone
    }

    /// Stops a snapshot without deleting anything (the stream broke off mid
    /// snapshot). What it named so far stays; the next snapshot's end
    /// settles the rest.
    pub fn cancel_snapshot(&mut self) {
        self.staging = false;
    }

    /// True between [`Self::begin_snapshot`] and its end.
    pub fn is_staging(&self) -> bool {
        self.staging
    }

    /// Inserts or replaces `key`, as a snapshot part or a diff alike (a
    /// snapshot in progress counts it as named). Returns the stored value
    /// when something changed — the key is new or its value differs — and
    /// `None` when the replica already held exactly this.
    pub fn upsert(&mut self, key: K, value: V) -> Option<&V> {
        let epoch = self.epoch;
        match self.entries.entry(key) {
            btree_map::Entry::Occupied(occupied) => {
                let slot = occupied.into_mut();
                slot.epoch = epoch;
                if slot.value == value {
                    None
                } else {
                    slot.value = value;
                    Some(&slot.value)
                }
            }
            btree_map::Entry::Vacant(vacant) => Some(&vacant.insert(Slot { value, epoch }).value),
        }
    }

    /// Removes `key` (a diff's deletion); `Some` only if it was there.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.remove(key).map(|slot| slot.value)
    }

    /// Removes every entry `doomed` picks and returns their keys in order
    /// (e.g. the agents of a deleted workspace).
    pub fn remove_where(&mut self, mut doomed: impl FnMut(&K, &V) -> bool) -> Vec<K> {
        let mut gone = Vec::new();
        self.entries.retain(|key, slot| {
            let remove = doomed(key, &slot.value);
            if remove {
                gone.push(key.clone());
            }
            !remove
        });
        gone
    }

    /// Forgets everything (and any snapshot in progress); returns the keys
    /// that were held, in order.
    pub fn clear(&mut self) -> Vec<K> {
        self.staging = false;
        std::mem::take(&mut self.entries).into_keys().collect()
    }
}

impl<K: Ord, V> Replica<K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.get(key).map(|slot| &slot.value)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, slot)| (k, &slot.value))
    }

    /// Keys in order.
    pub fn keys(&self) -> Keys<'_, K, V> {
        Keys(self.entries.keys())
    }

    /// Values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.values().map(|slot| &slot.value)
    }
}

impl<K, V, Q> Index<&Q> for Replica<K, V>
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = V;

    /// Panics if `key` is absent, like a map's index.
    fn index(&self, key: &Q) -> &V {
        &self.entries[key].value
    }
}

/// The keys of a [`Replica`], in order. Printable, so a failed assertion can
/// show which keys were there.
pub struct Keys<'a, K, V>(btree_map::Keys<'a, K, Slot<V>>);

// Derived Clone would needlessly require `K: Clone, V: Clone`.
impl<K, V> Clone for Keys<'_, K, V> {
    fn clone(&self) -> Self {
        Keys(self.0.clone())
    }
}

impl<'a, K, V> Iterator for Keys<'a, K, V> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Keys<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl<K, V> ExactSizeIterator for Keys<'_, K, V> {}

impl<K: fmt::Debug, V> fmt::Debug for Keys<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.clone()).finish()
    }
}

/// An update that does not follow the previous one on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("update {got} does not follow {expected_prev:?}")]
pub struct SeqGap {
    /// The last sequence number applied; `None` before the stream's first
    /// (snapshot) update.
    pub expected_prev: Option<u64>,
    pub got: u64,
}

/// The ordering rule of a snapshot-then-diff stream: the snapshot sets the
/// sequence number, and every later update must carry the next one. Anything
/// else means an update was lost (or replayed) and the receiver must
/// resubscribe rather than show a state that silently drifted. Where the
/// snapshot's own number comes from differs per protocol, so callers
/// [`Self::restart`] at it themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sequence {
    last: Option<u64>,
}

impl Sequence {
    /// The stream (re)started: only a snapshot may come next.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// A snapshot numbered `seq` arrived: later updates follow it.
    pub fn restart(&mut self, seq: u64) {
        self.last = Some(seq);
    }

    /// The last sequence number applied, if a snapshot started the stream.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Accepts `seq` if it follows the last one (and records it), or says
    /// what was expected. A refused update changes nothing.
    pub fn advance(&mut self, seq: u64) -> Result<(), SeqGap> {
        match self.last {
            Some(prev) if seq == prev.wrapping_add(1) => {
                self.last = Some(seq);
                Ok(())
            }
            expected_prev => Err(SeqGap {
                expected_prev,
                got: seq,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn from_snapshot(items: &[(u8, u8)]) -> Replica<u8, u8> {
        let mut r = Replica::new();
        r.begin_snapshot();
        for &(k, v) in items {
            r.upsert(k, v);
        }
        r.end_snapshot();
        r
    }

    #[test]
    fn snapshot_replaces_and_reports_only_real_changes() {
        let mut r = from_snapshot(&[(1, 10), (2, 20), (3, 30)]);
        r.begin_snapshot();
        assert_eq!(r.upsert(1, 10), None, "unchanged entry is not a change");
        assert_eq!(r.upsert(2, 21), Some(&21));
        assert_eq!(r.upsert(4, 40), Some(&40));
        // Until the end the old entries stay visible.
        assert_eq!(r.len(), 4);
        assert!(r.is_staging());
        assert_eq!(r.end_snapshot(), vec![3]);
        assert!(!r.is_staging());
        assert_eq!(
            r.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, 10), (2, 21), (4, 40)]
        );
    }

    #[test]
    fn diffs_report_only_real_changes() {
        let mut r = from_snapshot(&[(1, 10)]);
        assert_eq!(r.upsert(1, 10), None);
        assert_eq!(r.upsert(1, 11), Some(&11));
        assert_eq!(r.remove(&2), None);
        assert_eq!(r.remove(&1), Some(11));
        assert!(r.is_empty());
    }

    #[test]
    fn diff_upsert_between_snapshots_survives_only_if_the_next_names_it() {
        let mut r = from_snapshot(&[(1, 10)]);
        r.upsert(2, 20);
        r.begin_snapshot();
        r.upsert(1, 10);
        assert_eq!(r.end_snapshot(), vec![2]);
        // A diff during a snapshot is news the snapshot may predate: keep it.
        r.begin_snapshot();
        r.upsert(5, 50);
        assert_eq!(r.end_snapshot(), vec![1]);
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn cancelled_snapshot_deletes_nothing_until_the_next_one_ends() {
        let mut r = from_snapshot(&[(1, 10), (2, 20)]);
        r.begin_snapshot();
        r.upsert(1, 10);
        r.cancel_snapshot();
        assert_eq!(r.end_snapshot(), Vec::<u8>::new());
        assert_eq!(r.len(), 2);
        r.begin_snapshot();
        r.upsert(2, 20);
        assert_eq!(r.end_snapshot(), vec![1]);
    }

    #[test]
    fn remove_where_clear_index_and_keys_debug() {
        let mut r = from_snapshot(&[(1, 10), (2, 11), (3, 20)]);
        assert_eq!(r[&3], 20);
        assert_eq!(format!("{:?}", r.keys()), "[1, 2, 3]");
        assert_eq!(r.remove_where(|_, v| *v < 20), vec![1, 2]);
        assert_eq!(r.clear(), vec![3]);
        assert!(r.is_empty());
    }

    #[test]
    fn sequence_follows_the_snapshot_and_refuses_gaps() {
        let mut s = Sequence::default();
        assert_eq!(
            s.advance(1),
            Err(SeqGap {
                expected_prev: None,
                got: 1
            })
        );
        s.restart(5);
        s.advance(6).unwrap();
        assert_eq!(
            s.advance(8),
            Err(SeqGap {
                expected_prev: Some(6),
                got: 8
            })
        );
        assert_eq!(s.last(), Some(6), "a refused update changes nothing");
        assert!(s.advance(6).is_err(), "a replay is a gap too");
        s.restart(u64::MAX);
        s.advance(0).unwrap();
        s.reset();
        assert!(s.advance(1).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u8, u8),
        Remove(u8),
        /// A whole snapshot, finished or abandoned before its end.
        Snapshot(Vec<(u8, u8)>, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Small key and value spaces so operations collide and change things.
        prop_oneof![
            (0u8..16, 0u8..4).prop_map(|(k, v)| Op::Upsert(k, v)),
            (0u8..16).prop_map(Op::Remove),
            (
                prop::collection::vec((0u8..16, 0u8..4), 0..12),
                any::<bool>()
            )
                .prop_map(|(items, finish)| Op::Snapshot(items, finish)),
        ]
    }

    proptest! {
        #[test]
        fn a_snapshot_after_anything_equals_a_fresh_replica(
            history in prop::collection::vec(op(), 0..40),
            snapshot in prop::collection::btree_map(0u8..16, 0u8..4, 0..16),
        ) {
            let mut r: Replica<u8, u8> = Replica::new();
            for op in history {
                match op {
                    Op::Upsert(k, v) => { r.upsert(k, v); }
                    Op::Remove(k) => { r.remove(&k); }
                    Op::Snapshot(items, finish) => {
                        r.begin_snapshot();
                        for (k, v) in items {
                            r.upsert(k, v);
                        }
                        if finish { r.end_snapshot(); } else { r.cancel_snapshot(); }
                    }
                }
            }
            let before: BTreeMap<u8, u8> = r.iter().map(|(k, v)| (*k, *v)).collect();

            // One entry per key, as a snapshot names each once.
            let snapshot: Vec<(u8, u8)> = snapshot.into_iter().collect();
            r.begin_snapshot();
            let mut changed = BTreeSet::new();
            for &(k, v) in &snapshot {
                if r.upsert(k, v).is_some() {
                    changed.insert(k);
                }
            }
            let deleted = r.end_snapshot();

            let fresh = from_snapshot(&snapshot);
            prop_assert_eq!(&r, &fresh);
            let after: BTreeMap<u8, u8> = fresh.iter().map(|(k, v)| (*k, *v)).collect();
            // Deletions are exactly the keys that vanished, in order.
            let vanished: Vec<u8> =
                before.keys().filter(|k| !after.contains_key(*k)).copied().collect();
            prop_assert_eq!(deleted, vanished);
            // Exactly the keys that are new or hold a new value are reported.
            let really_changed: BTreeSet<u8> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, _)| *k)
                .collect();
            prop_assert_eq!(changed, really_changed);
        }
    }
}
