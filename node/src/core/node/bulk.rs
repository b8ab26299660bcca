//! Bulk loading: what a loader that writes a stopped node's storage directly (e.g. fjall's
//! sorted-table ingestion, `causeway bulk-load`) must store so the node then serves, replicates
//! and repairs the loaded keys like keys written through the API: each key's version set, its
//! index entry (digest under partition and segment), every segment's summary, and the loader's
//! dots in the node clock.
//!
//! Every key gets one version with a dot of one loader actor, counters 1, 2, … in load order
//! and a fixed timestamp: two replicas loaded with the same keys and values hold identical
//! version sets (anti-entropy finds them equal). The loader's dots are added to the node clock,
//! so the node vouches for the writes it holds.
//!
//! Consistency without one atomic write: [`BulkLoad::begin`] first makes the index marker
//! invalid (durably), and only [`BulkLoad::finish`] writes it back, together with the summaries
//! and the clock. A loader that stops part-way leaves the invalid marker, and the node's next
//! start rebuilds the index from the data, so the index never disagrees with the data it serves.

use super::{META_CLOCK, META_INDEX, Storage, decode, encode};
use crate::core::clock::{NodeClock, VersionVector};
use crate::core::dot::{Actor, Dot};
use crate::core::dvv::{Version, VersionSet};
use crate::core::merkle::{self, Merkle};
use crate::core::ring::partition_of;
use crate::core::storage::Summary;
use bytes::Bytes;
use std::ops::Bound;

/// Timestamp of every loaded version (µs since the epoch: 2026-01-01).
const LOAD_TS: u64 = 1_767_225_600_000_000;

/// The index marker while a load runs: no partition count is 0, so a node starting over it
/// rebuilds the index from the data.
const LOADING: u32 = 0;

/// An open bulk load: the trees of the stored index plus the keys added so far.
pub struct BulkLoad {
    partitions: u32,
    actor: Actor,
    merkle: Merkle,
    /// The highest dot counter of the loader actor used so far.
    counter: u64,
}

/// Where a loaded key's index entry goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub partition: u32,
    pub segment: u16,
}

impl BulkLoad {
    /// Starts loading into `storage` under `partitions` partitions (the cluster's), the loader's
    /// dots continuing after `first` (the keys an earlier load with the same actor wrote).
    /// Refuses a directory whose index was built under another partition count, or that holds
    /// data but no index (written before the index existed): starting the node once with the
    /// cluster's partitions rebuilds it. Invalidates the index marker durably before returning.
    pub fn begin<S: Storage>(
        storage: &mut S,
        partitions: u32,
        actor: Actor,
        first: u64,
    ) -> Result<Self, String> {
        if partitions == 0 {
            return Err("the partition count must be positive".into());
        }
        let built: Option<u32> = storage.meta_get(META_INDEX).and_then(|b| decode(&b));
        let empty = || {
            storage
                .range(Bound::Unbounded, Bound::Unbounded, 1)
                .is_empty()
        };
        match built {
            Some(p) if p == partitions => {}
            None if empty() => {}
            Some(LOADING) => {
                return Err("an earlier load stopped part-way: start the node once (it \
                            rebuilds the index from the data), then load again"
                    .into());
            }
            Some(p) => {
                return Err(format!(
                    "the directory's index is built under {p} partitions, not {partitions}: \
                     start the node once under {partitions} partitions first"
                ));
            }
            None => {
                return Err(
                    "the directory holds data but no anti-entropy index: start the \
                            node once first"
                        .into(),
                );
            }
        }
        let merkle = Merkle::from_summaries(&storage.summaries());
        storage.meta_put(META_INDEX, &encode(&LOADING));
        storage.sync();
        Ok(BulkLoad {
            partitions,
            actor,
            merkle,
            counter: first,
        })
    }

    /// Whether the stored index held any key when the load began (if not, no loaded key can
    /// replace a stored one and the loader need not look them up).
    pub fn started_empty(&self) -> bool {
        self.merkle
            .partitions()
            .all(|p| self.merkle.get(p).is_none_or(|t| t.is_empty()))
    }

    /// The version set stored for the key that got the loader's dot `counter` (a pure function:
    /// a loader that writes the index in another order than the data recomputes it).
    pub fn set_of(actor: Actor, counter: u64, value: Bytes) -> VersionSet {
        let mut set = VersionSet::new();
        let version = Version {
            dot: Dot::new(actor, counter),
            value: Some(value),
            ts: LOAD_TS,
            content_type: None,
            expires: None,
        };
        set.write(&VersionVector::new(), version);
        set
    }

    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The partition count the load indexes under.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The next key's version set: the loader's next dot.
    pub fn next_set(&mut self, value: Bytes) -> (u64, VersionSet) {
        self.counter += 1;
        (self.counter, Self::set_of(self.actor, self.counter, value))
    }

    /// Where `key`'s index entry belongs.
    pub fn slot(&self, key: &[u8]) -> Slot {
        Slot {
            partition: partition_of(key, self.partitions),
            segment: merkle::segment_of(key),
        }
    }

    /// Adds `key`, now stored with version-set digest `digest`, to the trees; `old` is the
    /// digest and value flag of what it replaces (from the index and data as the load began).
    pub fn add(&mut self, key: &[u8], digest: u64, old: Option<(u64, bool)>) {
        let p = partition_of(key, self.partitions);
        let (old_digest, had) = old.map_or((None, false), |(d, h)| (Some(d), h));
        self.merkle
            .update(p, key, old_digest, Some(digest), had, true);
    }

    /// Every non-empty segment summary of the loaded trees: what storage must hold after the
    /// load (O(partitions × segments), whatever the keys).
    pub fn summaries(&self) -> Vec<(u32, u16, Summary)> {
        let mut out = Vec::new();
        for p in self.merkle.partitions() {
            let Some(tree) = self.merkle.get(p) else {
                continue;
            };
            for s in 0..merkle::SEGMENTS as u16 {
                let summary = tree.segment(s);
                if summary != Summary::default() {
                    out.push((p, s, summary));
                }
            }
        }
        out
    }

    /// Dots issued so far (the `first` of a later load continuing this one).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Records the loader's dots in the node clock and the valid index marker, and syncs. Call
    /// only once the data, the index entries and the [`BulkLoad::summaries`] are written (the
    /// summaries in the same write as this, or before it).
    pub fn finish<S: Storage>(self, storage: &mut S) {
        let mut clock: NodeClock = storage
            .meta_get(META_CLOCK)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        clock.add_upto(self.actor, self.counter);
        storage.meta_put(META_CLOCK, &encode(&clock));
        storage.meta_put(META_INDEX, &encode(&self.partitions));
        storage.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Config, Identity, MemStorage, Node, Time};

    fn start(s: MemStorage) -> Node<MemStorage> {
        let me = "127.0.0.1:1".to_string();
        let view = crate::core::ring::View::with_partitions(vec![me.clone()], 1, 8).unwrap();
        let id = Identity { node: me, nonce: 1 };
        Node::new(Config::new(view), id, s, Time::ZERO)
    }

    fn load(n: u64) -> MemStorage {
        let mut s = MemStorage::new();
        load_into(&mut s, 0..n, true);
        s
    }

    /// What a loader stores for keys `range`, each step as [`BulkLoad`] prescribes; `finish:
    /// false` stops after the data, as a loader killed before writing the index would.
    fn load_into(s: &mut MemStorage, range: std::ops::Range<u64>, finish: bool) {
        let actor = Actor::new(7, 0, 1);
        let mut b = BulkLoad::begin(s, 8, actor, range.start).expect("the store loads");
        let mut entries = Vec::new();
        for i in range {
            let key = format!("k{i:04}");
            let (_, set) = b.next_set(Bytes::from_static(b"v"));
            let d = merkle::digest(&set);
            b.add(key.as_bytes(), d, None);
            s.put(key.as_bytes(), &set);
            entries.push((b.slot(key.as_bytes()), key, d));
        }
        if !finish {
            return;
        }
        // Each entry goes with its segment's final summary (the loader writes them last).
        let summaries: std::collections::BTreeMap<(u32, u16), Summary> = b
            .summaries()
            .into_iter()
            .map(|(p, seg, m)| ((p, seg), m))
            .collect();
        for (slot, key, d) in entries {
            let index = crate::core::storage::IndexWrite {
                partition: slot.partition,
                segment: slot.segment,
                digest: Some(d),
                summary: summaries[&(slot.partition, slot.segment)],
            };
            s.put_index(key.as_bytes(), &index);
        }
        b.finish(s);
    }

    /// A loaded store starts a node whose trees and counts match the data, and two stores
    /// loaded alike have equal roots.
    #[test]
    fn loaded_keys_are_indexed_like_written_ones() {
        let (a, b, c) = (load(300), load(300), load(301));
        let (na, nb, nc) = (start(a), start(b), start(c));
        na.check_stored().expect("index matches the data");
        let roots = |n: &Node<MemStorage>| (0..8).map(|p| n.merkle.root(p)).collect::<Vec<_>>();
        assert_eq!(roots(&na), roots(&nb));
        assert_ne!(roots(&na), roots(&nc));
        assert_eq!(na.live.values().sum::<u64>(), 300);
        assert!(na.clock.contains(Dot::new(Actor::new(7, 0, 1), 300)));
    }

    /// A read of a loaded key returns a token naming every loaded dot (the loader is vouched
    /// for on every partition the node has not dropped), so a write with that token replaces
    /// the loaded version instead of becoming its sibling; a node that was not loaded covers
    /// no such token.
    #[test]
    fn read_tokens_over_loaded_keys_name_the_loaders_dots() {
        let n = start(load(300));
        let loader = Actor::new(7, 0, 1);
        for key in ["k0000", "k0123", "k0299"] {
            let ctx = n.reply_context(&VersionVector::new(), key.as_bytes());
            assert_eq!(ctx.get(loader), 300, "{key}: {ctx:?}");
            assert!(n.covers(&ctx, key.as_bytes()), "{key}");
            assert!(
                !start(MemStorage::new()).covers(&ctx, key.as_bytes()),
                "{key}"
            );
        }
    }

    /// A load over a store with a valid index, stopped after the data, before the index: the
    /// marker `begin` left makes the next start rebuild the index from the data, so the node's
    /// trees and counts match what it holds, and another load is refused until the node has
    /// started once.
    #[test]
    fn a_load_stopped_part_way_makes_the_node_rebuild_the_index() {
        let mut s = load(100);
        load_into(&mut s, 100..300, false);
        let again = BulkLoad::begin(&mut s, 8, Actor::new(7, 0, 1), 300);
        assert!(again.is_err_and(|e| e.contains("part-way")));
        let n = start(s);
        n.check_stored().expect("index rebuilt from the data");
        assert_eq!(n.live.values().sum::<u64>(), 300);
        let full = start(load(300));
        let roots = |n: &Node<MemStorage>| (0..8).map(|p| n.merkle.root(p)).collect::<Vec<_>>();
        assert_eq!(roots(&n), roots(&full));
    }
}
