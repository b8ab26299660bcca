//! The storage the core writes through, and an in-memory implementation.
//!
//! The core reads and writes key version sets and a few metadata records synchronously through
//! [`Storage`]. Writes may sit in a buffer until [`Storage::sync`]; the driver calls `sync` when a
//! [`crate::core::Ready`] says so, *before* releasing that Ready's messages and replies, which is
//! what makes an acknowledgement durable (and lets many writes share one fsync: group commit).
//!
//! Implementations must be *prefix-durable*: after a crash, the surviving writes are a prefix of
//! the issued ones, and everything issued before the last completed `sync` survives. An
//! implementation that cannot complete an operation must stop the process (fail-stop); the core
//! never sees a partial failure.
//!
//! Besides the data, storage holds the anti-entropy index ([`super::merkle`]): each key's digest
//! under (partition, segment, key), and each segment's [`Summary`]. [`Storage::put_indexed`]
//! writes a key's data and its index entry as *one* atomic write, so after a crash both or neither
//! survive and the index always describes the data. Only the summaries are read at start-up
//! (at most partitions × [`super::merkle::SEGMENTS`] records); an exchange that narrows to a
//! segment reads that segment's digests with [`Storage::index_range`].

use super::dvv::VersionSet;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};

/// What storage keeps of one index segment: the XOR of its keys' contributions
/// ([`super::merkle::contribution`]), how many keys it holds, and how many of them hold a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub hash: u64,
    pub keys: u64,
    pub live: u64,
}

/// The index half of a key's write: the key's new digest (`None`: the key is gone) and its
/// segment's summary after the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexWrite {
    pub partition: u32,
    pub segment: u16,
    pub digest: Option<u64>,
    pub summary: Summary,
}

/// One index entry as read back: segment, key, digest.
pub type IndexEntry = (u16, Bytes, u64);

/// Key-ordered store of version sets, their anti-entropy index, and named metadata records.
pub trait Storage {
    fn get(&self, key: &[u8]) -> Option<VersionSet>;
    /// Writes the data alone (no index entry): only for planted bugs and tests.
    fn put(&mut self, key: &[u8], set: &VersionSet);
    /// Removes the data alone (no index entry): only for planted bugs and tests.
    fn remove(&mut self, key: &[u8]);
    /// Stores (`Some`) or removes (`None`) `key`'s version set together with its index entry and
    /// segment summary, as one atomic write: after a crash both halves survive or neither does.
    fn put_indexed(&mut self, key: &[u8], set: Option<&VersionSet>, index: &IndexWrite);
    /// Writes only the index half (index rebuilds, which leave the data as it is).
    fn put_index(&mut self, key: &[u8], index: &IndexWrite);
    /// The stored digest of `key` in the index.
    fn digest(&self, partition: u32, segment: u16, key: &[u8]) -> Option<u64>;
    /// Up to `limit` index entries of `partition` with segments in `segments`, in (segment, key)
    /// order, strictly after `after` when given.
    fn index_range(
        &self,
        partition: u32,
        segments: RangeInclusive<u16>,
        after: Option<(u16, &[u8])>,
        limit: usize,
    ) -> Vec<IndexEntry>;
    /// Every stored segment summary: (partition, segment, summary).
    fn summaries(&self) -> Vec<(u32, u16, Summary)>;
    /// Deletes the whole index (before a rebuild under another partition count).
    fn reset_index(&mut self);
    /// Up to `limit` entries with keys in `(start, end)`, in key order.
    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Bytes, VersionSet)>;
    /// Visits every stored entry in key order (index rebuilds and the simulator's recounts).
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &VersionSet));
    fn meta_get(&self, name: &str) -> Option<Vec<u8>>;
    fn meta_put(&mut self, name: &str, value: &[u8]);
    /// Makes every write issued so far durable.
    fn sync(&mut self);
}

/// True when no key can lie between `start` and `end` (ordered maps panic on some such ranges,
/// e.g. equal excluded bounds), so implementations answer it without asking their map.
pub fn empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
            s >= e
        }
        _ => false,
    }
}

/// A [`Storage`] in memory: durable only as long as the value lives. For tests and embedding.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    data: BTreeMap<Bytes, VersionSet>,
    index: BTreeMap<(u32, u16, Bytes), u64>,
    summaries: BTreeMap<(u32, u16), Summary>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemStorage {
    fn get(&self, key: &[u8]) -> Option<VersionSet> {
        self.data.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], set: &VersionSet) {
        self.data.insert(Bytes::copy_from_slice(key), set.clone());
    }

    fn remove(&mut self, key: &[u8]) {
        self.data.remove(key);
    }

    fn put_indexed(&mut self, key: &[u8], set: Option<&VersionSet>, index: &IndexWrite) {
        match set {
            Some(s) => self.put(key, s),
            None => self.remove(key),
        }
        self.put_index(key, index);
    }

    fn put_index(&mut self, key: &[u8], index: &IndexWrite) {
        let slot = (index.partition, index.segment, Bytes::copy_from_slice(key));
        match index.digest {
            Some(d) => self.index.insert(slot, d),
            None => self.index.remove(&slot),
        };
        let seg = (index.partition, index.segment);
        if index.summary == Summary::default() {
            self.summaries.remove(&seg);
        } else {
            self.summaries.insert(seg, index.summary);
        }
    }

    fn digest(&self, partition: u32, segment: u16, key: &[u8]) -> Option<u64> {
        let slot = (partition, segment, Bytes::copy_from_slice(key));
        self.index.get(&slot).copied()
    }

    fn index_range(
        &self,
        partition: u32,
        segments: RangeInclusive<u16>,
        after: Option<(u16, &[u8])>,
        limit: usize,
    ) -> Vec<IndexEntry> {
        let start = match after {
            Some((s, k)) if s >= *segments.start() => {
                Bound::Excluded((partition, s, Bytes::copy_from_slice(k)))
            }
            _ => Bound::Included((partition, *segments.start(), Bytes::new())),
        };
        self.index
            .range((start, Bound::Unbounded))
            .take_while(|((p, s, _), _)| *p == partition && *s <= *segments.end())
            .take(limit)
            .map(|((_, s, k), d)| (*s, k.clone(), *d))
            .collect()
    }

    fn summaries(&self) -> Vec<(u32, u16, Summary)> {
        self.summaries
            .iter()
            .map(|((p, s), m)| (*p, *s, *m))
            .collect()
    }

    fn reset_index(&mut self) {
        self.index.clear();
        self.summaries.clear();
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Bytes, VersionSet)> {
        if empty_range(start, end) {
            return Vec::new();
        }
        let owned = |b: Bound<&[u8]>| b.map(Bytes::copy_from_slice);
        self.data
            .range((owned(start), owned(end)))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &VersionSet)) {
        for (k, v) in &self.data {
            f(k, v);
        }
    }

    fn meta_get(&self, name: &str) -> Option<Vec<u8>> {
        self.meta.get(name).cloned()
    }

    fn meta_put(&mut self, name: &str, value: &[u8]) {
        self.meta.insert(name.to_owned(), value.to_vec());
    }

    fn sync(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_ranges_are_empty_not_panics() {
        let mut m = MemStorage::new();
        m.put(b"k", &VersionSet::new());
        let (x, k) = (b"x".as_slice(), b"k".as_slice());
        assert!(
            m.range(Bound::Excluded(k), Bound::Excluded(k), 10)
                .is_empty()
        );
        assert!(
            m.range(Bound::Included(k), Bound::Excluded(k), 10)
                .is_empty()
        );
        assert!(
            m.range(Bound::Included(x), Bound::Included(k), 10)
                .is_empty()
        );
        assert_eq!(m.range(Bound::Included(k), Bound::Included(k), 10).len(), 1);
        assert_eq!(m.range(Bound::Unbounded, Bound::Excluded(x), 10).len(), 1);
    }
}
