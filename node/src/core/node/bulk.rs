//! Bulk loading: many keys written straight into a stopped node's storage, through the same
//! indexed write as every other write ([`Storage::put_indexed`]), so the node then serves,
//! replicates and repairs them like keys written through the API.
//!
//! Every key gets one version with a dot of one loader actor, counters 1, 2, … in load order
//! and a fixed timestamp: two replicas loaded with the same keys and values hold identical
//! version sets (anti-entropy finds them equal). The loader's dots are added to the node clock,
//! so the node vouches for the writes it holds.

use super::{META_CLOCK, Storage, decode, encode, index};
use crate::core::clock::{NodeClock, VersionVector};
use crate::core::dot::{Actor, Dot};
use crate::core::dvv::{Version, VersionSet};
use crate::core::merkle::{self, Merkle};
use crate::core::ring::partition_of;
use crate::core::storage::IndexWrite;
use bytes::Bytes;

/// Timestamp of every loaded version (µs since the epoch: 2026-01-01).
const LOAD_TS: u64 = 1_767_225_600_000_000;

/// An open bulk load over `storage`.
pub struct BulkLoad<'a, S: Storage> {
    storage: &'a mut S,
    partitions: u32,
    merkle: Merkle,
    actor: Actor,
    counter: u64,
}

impl<'a, S: Storage> BulkLoad<'a, S> {
    /// Starts loading under `partitions` partitions (the cluster's); the loader's dots continue
    /// after `first` (the number of keys an earlier load with the same actor wrote). The stored
    /// index is brought to `partitions` first.
    pub fn new(storage: &'a mut S, partitions: u32, actor: Actor, first: u64) -> Self {
        let (merkle, _) = index(storage, partitions);
        BulkLoad {
            storage,
            partitions,
            merkle,
            actor,
            counter: first,
        }
    }

    /// Stores `value` under `key` as the loader's next dot, replacing whatever `key` held.
    pub fn put(&mut self, key: &[u8], value: Bytes) {
        self.counter += 1;
        let mut set = VersionSet::new();
        let version = Version {
            dot: Dot::new(self.actor, self.counter),
            value: Some(value),
            ts: LOAD_TS,
            content_type: None,
            expires: None,
        };
        set.write(&VersionVector::new(), version);
        let partition = partition_of(key, self.partitions);
        let segment = merkle::segment_of(key);
        let old = self.storage.digest(partition, segment, key);
        let had = old.is_some() && self.storage.get(key).is_some_and(|s| s.has_value());
        let digest = Some(merkle::digest(&set));
        let summary = self.merkle.update(partition, key, old, digest, had, true);
        let index = IndexWrite {
            partition,
            segment,
            digest,
            summary,
        };
        self.storage.put_indexed(key, Some(&set), &index);
    }

    /// Makes the keys loaded so far durable (and hands them to the disk: bounds staging).
    pub fn sync(&mut self) {
        self.storage.sync();
    }

    /// Dots issued so far (the `first` of a later load continuing this one).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Records the loader's dots in the node clock and syncs.
    pub fn finish(self) {
        let mut clock: NodeClock = self
            .storage
            .meta_get(META_CLOCK)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        clock.add_upto(self.actor, self.counter);
        self.storage.meta_put(META_CLOCK, &encode(&clock));
        self.storage.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Config, Identity, MemStorage, Node, Time};

    /// A loaded store restarts into a node whose trees and counts match the data, and two
    /// stores loaded alike have equal roots.
    #[test]
    fn loaded_keys_are_indexed_like_written_ones() {
        let actor = Actor::new(7, 0, 1);
        let load = |n: u64| {
            let mut s = MemStorage::new();
            let mut b = BulkLoad::new(&mut s, 8, actor, 0);
            for i in 0..n {
                b.put(format!("k{i}").as_bytes(), Bytes::from_static(b"v"));
            }
            b.finish();
            s
        };
        let (a, b, c) = (load(300), load(300), load(301));
        let start = |s: MemStorage| {
            let me = "127.0.0.1:1".to_string();
            let view = crate::core::ring::View::with_partitions(vec![me.clone()], 1, 8).unwrap();
            let cfg = Config::new(view);
            let id = Identity { node: me, nonce: 1 };
            Node::new(cfg, id, s, Time::ZERO)
        };
        let (na, nb, nc) = (start(a), start(b), start(c));
        na.check_stored().expect("index matches the data");
        let roots = |n: &Node<MemStorage>| (0..8).map(|p| n.merkle.root(p)).collect::<Vec<_>>();
        assert_eq!(roots(&na), roots(&nb));
        assert_ne!(roots(&na), roots(&nc));
        assert_eq!(na.live.values().sum::<u64>(), 300);
        assert!(na.clock.contains(Dot::new(actor, 300)));
    }
}
