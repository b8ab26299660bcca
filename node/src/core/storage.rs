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

use super::dvv::VersionSet;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Key-ordered store of version sets plus named metadata records.
pub trait Storage {
    fn get(&self, key: &[u8]) -> Option<VersionSet>;
    fn put(&mut self, key: &[u8], set: &VersionSet);
    fn remove(&mut self, key: &[u8]);
    /// Up to `limit` entries with keys in `(start, end)`, in key order.
    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Bytes, VersionSet)>;
    /// Visits every stored entry in key order (start-up scans).
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
