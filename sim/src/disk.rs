//! A simulated disk: the [`Storage`] each simulated node writes through.
//!
//! Invariants: reads see every write issued (the current state); the durable state is the
//! current state as of the last [`Storage::sync`] plus, after a crash, a prefix of the writes
//! issued since (prefix-durable). A torn last write is detected and dropped, so it never
//! surfaces. A wipe loses everything (amnesia).

use bytes::Bytes;
use causeway::core::{Storage, VersionSet};
use std::collections::BTreeMap;
use std::ops::Bound;

#[derive(Clone, Debug)]
enum DiskWrite {
    Put(Bytes, VersionSet),
    Remove(Bytes),
    Meta(String, Vec<u8>),
}

#[derive(Clone, Debug, Default)]
struct State {
    data: BTreeMap<Bytes, VersionSet>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl State {
    fn apply(&mut self, w: DiskWrite) {
        match w {
            DiskWrite::Put(k, s) => {
                self.data.insert(k, s);
            }
            DiskWrite::Remove(k) => {
                self.data.remove(&k);
            }
            DiskWrite::Meta(k, v) => {
                self.meta.insert(k, v);
            }
        }
    }
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    current: State,
    durable: State,
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
            self.durable.apply(w);
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
        self.current.data.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], set: &VersionSet) {
        let k = Bytes::copy_from_slice(key);
        self.current.data.insert(k.clone(), set.clone());
        self.unsynced.push(DiskWrite::Put(k, set.clone()));
    }

    fn remove(&mut self, key: &[u8]) {
        self.current.data.remove(key);
        self.unsynced
            .push(DiskWrite::Remove(Bytes::copy_from_slice(key)));
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Bytes, VersionSet)> {
        let owned = |b: Bound<&[u8]>| b.map(Bytes::copy_from_slice);
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (start, end)
            && s > e
        {
            return Vec::new();
        }
        self.current
            .data
            .range((owned(start), owned(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &VersionSet)) {
        for (k, v) in &self.current.data {
            f(k, v);
        }
    }

    fn meta_get(&self, name: &str) -> Option<Vec<u8>> {
        self.current.meta.get(name).cloned()
    }

    fn meta_put(&mut self, name: &str, value: &[u8]) {
        self.current.meta.insert(name.to_owned(), value.to_vec());
        self.unsynced
            .push(DiskWrite::Meta(name.to_owned(), value.to_vec()));
    }

    fn sync(&mut self) {
        self.syncs += 1;
        for w in self.unsynced.drain(..) {
            self.durable.apply(w);
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
