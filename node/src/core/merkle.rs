//! Merkle trees over one node's keys, one per partition, maintained incrementally (Riak's tictac
//! AAE): a key contributes `xxh3(key, seed = digest(version set))` to one of [`SEGMENTS`]
//! segments; a segment's hash is the XOR of its keys' contributions, a branch's the XOR of its
//! [`SEGMENTS_PER_BRANCH`] segments, the root the XOR of the branches. Updating a key XORs out its
//! old contribution and XORs in the new one: O(1) per apply, no rescans.
//!
//! Invariant: for every partition, `root == XOR(branches) == XOR(segments)` and each segment is
//! the XOR of the contributions of exactly the keys listed under it with their current digests.

use super::dot::Actor;
use super::dvv::VersionSet;
use bytes::Bytes;
use std::collections::BTreeMap;
use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_64_with_seed};

/// Segments per partition tree.
pub const SEGMENTS: usize = 1024;
/// Segments under one branch.
pub const SEGMENTS_PER_BRANCH: usize = 32;
/// Branches per partition tree.
pub const BRANCHES: usize = SEGMENTS / SEGMENTS_PER_BRANCH;

/// Digest of a version set: covers the context and every version's dot, timestamp, value bytes,
/// content type and expiry, fed field by field (little-endian, length-prefixed) into one
/// streaming xxh3, so equal sets hash equally on every node and no encoding is allocated.
pub fn digest(set: &VersionSet) -> u64 {
    let mut h = Xxh3::new();
    h.update(&(set.context().len() as u64).to_le_bytes());
    for (actor, n) in set.context().iter() {
        hash_actor(&mut h, actor);
        h.update(&n.to_le_bytes());
    }
    for v in set.versions() {
        hash_actor(&mut h, v.dot.actor);
        h.update(&v.dot.counter.to_le_bytes());
        h.update(&v.ts.to_le_bytes());
        match &v.value {
            Some(b) => {
                h.update(&[1]);
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(b);
            }
            None => h.update(&[0]),
        }
        match &v.content_type {
            Some(c) => {
                h.update(&[1]);
                h.update(&(c.len() as u64).to_le_bytes());
                h.update(c);
            }
            None => h.update(&[0]),
        }
        if let Some(e) = v.expires {
            // Only versions with an expiry feed it, so digests of older data are unchanged.
            h.update(&[2]);
            h.update(&e.to_le_bytes());
        }
    }
    h.digest()
}

fn hash_actor(h: &mut Xxh3, a: Actor) {
    h.update(&a.node().to_le_bytes());
    h.update(&a.epoch().to_le_bytes());
    h.update(&a.incarnation().to_le_bytes());
    h.update(&a.hint_code().to_le_bytes());
}

/// Segment of `key` within its partition tree (bits independent of the partition choice).
pub fn segment_of(key: &[u8]) -> u16 {
    ((xxh3_64(key) >> 40) % SEGMENTS as u64) as u16
}

/// What `key` with version-set digest `digest` adds (XOR) to its segment, branch and root.
pub fn contribution(key: &[u8], digest: u64) -> u64 {
    xxh3_64_with_seed(key, digest)
}

/// The tree of one partition plus the digests of its keys, grouped by segment.
#[derive(Debug, Clone)]
pub struct PartitionTree {
    root: u64,
    branches: Vec<u64>,
    segments: Vec<u64>,
    keys: BTreeMap<u16, BTreeMap<Bytes, u64>>,
    len: usize,
}

impl Default for PartitionTree {
    fn default() -> Self {
        PartitionTree {
            root: 0,
            branches: vec![0; BRANCHES],
            segments: vec![0; SEGMENTS],
            keys: BTreeMap::new(),
            len: 0,
        }
    }
}

impl PartitionTree {
    fn flip(&mut self, seg: u16, h: u64) {
        self.segments[seg as usize] ^= h;
        self.branches[seg as usize / SEGMENTS_PER_BRANCH] ^= h;
        self.root ^= h;
    }

    /// Sets (or with `None` removes) the digest of `key`.
    pub fn update(&mut self, key: &[u8], digest: Option<u64>) {
        let seg = segment_of(key);
        let keys = self.keys.entry(seg).or_default();
        let old = match digest {
            Some(d) => keys.insert(Bytes::copy_from_slice(key), d),
            None => keys.remove(key),
        };
        if keys.is_empty() {
            self.keys.remove(&seg);
        }
        if let Some(o) = old {
            self.flip(seg, contribution(key, o));
            self.len -= 1;
        }
        if let Some(d) = digest {
            self.flip(seg, contribution(key, d));
            self.len += 1;
        }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn branches(&self) -> &[u64] {
        &self.branches
    }

    /// The segment hashes under `branch`.
    pub fn branch_segments(&self, branch: usize) -> &[u64] {
        &self.segments[branch * SEGMENTS_PER_BRANCH..(branch + 1) * SEGMENTS_PER_BRANCH]
    }

    /// Keys (with digests) in `segment`.
    pub fn segment_keys(&self, segment: u16) -> impl Iterator<Item = (&Bytes, u64)> {
        self.keys
            .get(&segment)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, d)| (k, *d)))
    }

    /// Every key of the partition (by segment, then key).
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.keys.values().flat_map(|m| m.keys())
    }

    pub fn segment_len(&self, segment: u16) -> usize {
        self.keys.get(&segment).map_or(0, BTreeMap::len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One tree per partition.
#[derive(Debug, Default, Clone)]
pub struct Merkle {
    parts: BTreeMap<u32, PartitionTree>,
}

impl Merkle {
    pub fn update(&mut self, partition: u32, key: &[u8], digest: Option<u64>) {
        self.parts.entry(partition).or_default().update(key, digest);
    }

    pub fn get(&self, partition: u32) -> Option<&PartitionTree> {
        self.parts.get(&partition)
    }

    pub fn root(&self, partition: u32) -> u64 {
        self.parts.get(&partition).map_or(0, PartitionTree::root)
    }

    /// The partitions that have (or had) a tree, in order.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.parts.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order keys are inserted, updated and removed in, the tree equals one built
        /// from the final contents alone.
        #[test]
        fn incremental_equals_rebuilt(ops in prop::collection::vec((0u8..40, prop::option::of(any::<u64>())), 0..200)) {
            let mut inc = PartitionTree::default();
            let mut fin = BTreeMap::new();
            for (k, d) in ops {
                let key = [k];
                inc.update(&key, d);
                match d {
                    Some(d) => { fin.insert(k, d); }
                    None => { fin.remove(&k); }
                }
            }
            let mut rebuilt = PartitionTree::default();
            for (k, d) in &fin {
                rebuilt.update(&[*k], Some(*d));
            }
            prop_assert_eq!(inc.root(), rebuilt.root());
            prop_assert_eq!(inc.branches(), rebuilt.branches());
            prop_assert_eq!(inc.len(), fin.len());
            let xor = inc.branches().iter().fold(0, |a, b| a ^ b);
            prop_assert_eq!(xor, inc.root());
        }
    }

    #[test]
    fn digest_sees_values_versions_content_types_expiries_and_context() {
        use crate::core::{Actor, Dot, Version, VersionVector};
        let version = |counter, value: Option<&'static [u8]>| Version {
            dot: Dot::new(Actor::new(1, 1, 1), counter),
            value: value.map(Bytes::from_static),
            ts: 7,
            content_type: None,
            expires: None,
        };
        let mut a = VersionSet::new();
        a.write(&VersionVector::new(), version(1, Some(b"x")));
        let mut b = VersionSet::new();
        b.write(&VersionVector::new(), version(1, Some(b"y")));
        let mut c = VersionSet::new();
        c.write(&VersionVector::new(), version(1, None));
        let mut d = a.clone();
        d.write(
            &[(Actor::new(2, 1, 1), 3)].into_iter().collect(),
            version(2, Some(b"x")),
        );
        let mut e = VersionSet::new();
        let typed = Version {
            content_type: Some(Bytes::from_static(b"text/plain")),
            ..version(1, Some(b"x"))
        };
        e.write(&VersionVector::new(), typed);
        let mut f = VersionSet::new();
        let expiring = Version {
            expires: Some(9),
            ..version(1, Some(b"x"))
        };
        f.write(&VersionVector::new(), expiring);
        let digests = [
            digest(&a),
            digest(&b),
            digest(&c),
            digest(&d),
            digest(&e),
            digest(&f),
        ];
        for i in 0..digests.len() {
            for j in 0..i {
                assert_ne!(digests[i], digests[j], "sets {i} and {j}");
            }
        }
        assert_eq!(digest(&a), digest(&a.clone()));
    }

    #[test]
    fn a_changed_value_changes_the_root() {
        let mut t = PartitionTree::default();
        t.update(b"k", Some(1));
        let r = t.root();
        t.update(b"k", Some(2));
        assert_ne!(t.root(), r);
        t.update(b"k", None);
        assert_eq!(t.root(), 0);
        assert!(t.is_empty());
    }
}
