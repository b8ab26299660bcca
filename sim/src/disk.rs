//! A simulated disk: the [`Storage`] each simulated node writes through.
//!
//! Invariants: reads see every write issued (the current state); the durable state is the
//! current state as of the last [`Storage::sync`] plus, after a crash, a prefix of the writes
//! issued since (prefix-durable). A torn last write is detected and dropped, so it never
//! surfaces. A wipe loses everything (amnesia).
//!
//! A key's data and its anti-entropy index entry ([`Storage::put_indexed`]) are one write, as
//! they are one batch on the real disk: a crash keeps or loses (or tears) them together. Writes
//! issued separately are separate writes, which a crash can split.

use bytes::Bytes;
use causeway::core::{IndexEntry, IndexWrite, MemStorage, Storage, Summary, VersionSet};
use std::ops::{Bound, RangeInclusive};

#[derive(Clone, Debug)]
enum DiskWrite {
    Put(Bytes, VersionSet),
    Remove(Bytes),
    /// Data and index entry of one key: atomic.
    Indexed(Bytes, Option<VersionSet>, IndexWrite),
    Index(Bytes, IndexWrite),
    ResetIndex,
    Meta(String, Vec<u8>),
}

fn apply(state: &mut MemStorage, w: DiskWrite) {
    match w {
        DiskWrite::Put(k, s) => state.put(&k, &s),
        DiskWrite::Remove(k) => state.remove(&k),
        DiskWrite::Indexed(k, s, i) => state.put_indexed(&k, s.as_ref(), &i),
        DiskWrite::Index(k, i) => state.put_index(&k, &i),
        DiskWrite::ResetIndex => state.reset_index(),
        DiskWrite::Meta(k, v) => state.meta_put(&k, &v),
    }
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    /// What reads see: every write issued.
    current: MemStorage,
    /// What survives power loss: the writes up to the last sync.
    durable: MemStorage,
    /// Writes issued since the last sync, oldest first.
    unsynced: Vec<DiskWrite>,
    pub syncs: u64,
}

/// What a crash did to the unsynced writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashLoss {
    pub kept: usize,
    pub lost: usize,
    pub torn: bool,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes issued but not yet synced.
    pub fn unsynced(&self) -> usize {
        self.unsynced.len()
    }

    /// Power loss: the first `kept` unsynced writes reach the platter, the rest are lost; with
    /// `torn` the write after them was half-written and is discarded on recovery.
    pub fn crash(&mut self, kept: usize, torn: bool) -> CrashLoss {
        let total = self.unsynced.len();
        let kept = kept.min(total);
        for w in self.unsynced.drain(..).take(kept) {
            apply(&mut self.durable, w);
        }
        self.current = self.durable.clone();
        CrashLoss {
            kept,
            lost: total - kept,
            torn: torn && kept < total,
        }
    }
}

impl Storage for SimDisk {
    fn get(&self, key: &[u8]) -> Option<VersionSet> {
        self.current.get(key)
    }

    fn put(&mut self, key: &[u8], set: &VersionSet) {
        self.current.put(key, set);
        let w = DiskWrite::Put(Bytes::copy_from_slice(key), set.clone());
        self.unsynced.push(w);
    }

    fn remove(&mut self, key: &[u8]) {
        self.current.remove(key);
        let w = DiskWrite::Remove(Bytes::copy_from_slice(key));
        self.unsynced.push(w);
    }

    fn put_indexed(&mut self, key: &[u8], set: Option<&VersionSet>, index: &IndexWrite) {
        self.current.put_indexed(key, set, index);
        let w = DiskWrite::Indexed(Bytes::copy_from_slice(key), set.cloned(), *index);
        self.unsynced.push(w);
    }

    fn put_index(&mut self, key: &[u8], index: &IndexWrite) {
        self.current.put_index(key, index);
        let w = DiskWrite::Index(Bytes::copy_from_slice(key), *index);
        self.unsynced.push(w);
    }

    fn digest(&self, partition: u32, segment: u16, key: &[u8]) -> Option<u64> {
        self.current.digest(partition, segment, key)
    }

    fn index_range(
        &self,
        partition: u32,
        segments: RangeInclusive<u16>,
        after: Option<(u16, &[u8])>,
        limit: usize,
    ) -> Vec<IndexEntry> {
        self.current.index_range(partition, segments, after, limit)
    }

    fn summaries(&self) -> Vec<(u32, u16, Summary)> {
        self.current.summaries()
    }

    fn reset_index(&mut self) {
        self.current.reset_index();
        self.unsynced.push(DiskWrite::ResetIndex);
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Bytes, VersionSet)> {
        self.current.range(start, end, limit)
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &VersionSet)) {
        self.current.for_each(f)
    }

    fn meta_get(&self, name: &str) -> Option<Vec<u8>> {
        self.current.meta_get(name)
    }

    fn meta_put(&mut self, name: &str, value: &[u8]) {
        self.current.meta_put(name, value);
        let w = DiskWrite::Meta(name.to_owned(), value.to_vec());
        self.unsynced.push(w);
    }

    fn sync(&mut self) {
        self.syncs += 1;
        for w in self.unsynced.drain(..) {
            apply(&mut self.durable, w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> VersionSet {
        VersionSet::new()
    }

    #[test]
    fn crash_keeps_synced_and_a_prefix() {
        let mut d = SimDisk::new();
        d.put(b"a", &set());
        d.sync();
        d.put(b"b", &set());
        d.put(b"c", &set());
        d.remove(b"a");
        let loss = d.crash(1, true);
        assert_eq!(
            loss,
            CrashLoss {
                kept: 1,
                lost: 2,
                torn: true
            }
        );
        assert!(d.get(b"a").is_some() && d.get(b"b").is_some() && d.get(b"c").is_none());
        assert_eq!(d.unsynced(), 0);
    }

    fn index(digest: Option<u64>, keys: u64) -> IndexWrite {
        IndexWrite {
            partition: 0,
            segment: 3,
            digest,
            summary: Summary {
                hash: digest.unwrap_or(0),
                keys,
                live: 0,
            },
        }
    }

    /// A key's data and index entry survive a crash together or not at all, torn or not.
    #[test]
    fn crash_keeps_or_loses_data_and_index_together() {
        for torn in [false, true] {
            for kept in 0..3 {
                let mut d = SimDisk::new();
                d.put_indexed(b"a", Some(&set()), &index(Some(1), 1));
                d.put_indexed(b"b", Some(&set()), &index(Some(2), 2));
                d.crash(kept, torn);
                for (n, k) in [b"a", b"b"].into_iter().enumerate() {
                    let data = d.get(k).is_some();
                    let indexed = d.digest(0, 3, k).is_some();
                    assert_eq!(data, n < kept, "kept {kept} torn {torn}");
                    assert_eq!(data, indexed, "kept {kept} torn {torn}");
                }
                let keys = d.summaries().first().map_or(0, |s| s.2.keys);
                assert_eq!(keys, kept as u64);
            }
        }
        // Written apart, a crash can split them (what the index-outside-batch canary plants).
        let mut d = SimDisk::new();
        d.put_index(b"a", &index(Some(1), 1));
        d.put(b"a", &set());
        d.crash(1, false);
        assert!(d.digest(0, 3, b"a").is_some() && d.get(b"a").is_none());
    }

    #[test]
    fn crash_with_everything_synced_loses_nothing() {
        let mut d = SimDisk::new();
        d.meta_put("m", b"1");
        d.sync();
        assert_eq!(
            d.crash(0, true),
            CrashLoss {
                kept: 0,
                lost: 0,
                torn: false
            }
        );
        assert_eq!(d.meta_get("m"), Some(b"1".to_vec()));
    }
}
