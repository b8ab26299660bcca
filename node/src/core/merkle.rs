//! Merkle trees over one node's keys, one per partition, maintained incrementally (Riak's tictac
//! AAE): a key contributes `xxh3(key, seed = digest(version set))` to one of [`SEGMENTS`]
//! segments; a segment's hash is the XOR of its keys' contributions, a branch's the XOR of its
//! [`SEGMENTS_PER_BRANCH`] segments, the root the XOR of the branches. Updating a key XORs out its
//! old contribution and XORs in the new one: O(1) per apply, no rescans.
//!
//! Only the tree (root, branches, segment summaries: O(partitions × [`SEGMENTS`])) lives in
//! memory. Each key's digest is stored in the index of [`super::Storage`], written in the same
//! atomic write as the key's data together with the segment's new [`Summary`], so a restart
//! loads the summaries and never scans the data.
//!
//! Invariant: for every partition, `root == XOR(branches) == XOR(segment hashes)`, each segment's
//! hash is the XOR of the contributions of exactly the keys the stored index lists under it with
//! their stored digests, and those digests are the digests of the stored version sets.

use super::dot::Actor;
use super::dvv::VersionSet;
use super::storage::Summary;
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
    h.update(&(a.hint_code() as u32).to_le_bytes());
    if a.cluster() != 0 {
        // Only a cluster's id extends the digest: versions of cluster 0 keep their stored digests.
        h.update(&a.cluster().to_le_bytes());
    }
}

/// Segment of `key` within its partition tree (bits independent of the partition choice).
pub fn segment_of(key: &[u8]) -> u16 {
    ((xxh3_64(key) >> 40) % SEGMENTS as u64) as u16
}

/// What `key` with version-set digest `digest` adds (XOR) to its segment, branch and root.
pub fn contribution(key: &[u8], digest: u64) -> u64 {
    xxh3_64_with_seed(key, digest)
}

/// The in-memory tree of one partition: root, branch hashes and segment summaries. The keys and
/// their digests live in storage (see [`super::storage`]); RAM holds O(segments) per partition,
/// whatever the number of keys.
#[derive(Debug, Clone)]
pub struct PartitionTree {
    root: u64,
    branches: Vec<u64>,
    segments: Vec<Summary>,
    len: u64,
}

impl Default for PartitionTree {
    fn default() -> Self {
        PartitionTree {
            root: 0,
            branches: vec![0; BRANCHES],
            segments: vec![Summary::default(); SEGMENTS],
            len: 0,
        }
    }
}

impl PartitionTree {
    fn flip(&mut self, seg: u16, h: u64) {
        self.segments[seg as usize].hash ^= h;
        self.branches[seg as usize / SEGMENTS_PER_BRANCH] ^= h;
        self.root ^= h;
    }

    /// Replaces `key`'s digest `old` by `new` (`None`: absent) and its value flag `had` by
    /// `has`; returns the segment's new summary (what storage persists with the write).
    pub fn update(
        &mut self,
        key: &[u8],
        old: Option<u64>,
        new: Option<u64>,
        had: bool,
        has: bool,
    ) -> Summary {
        let seg = segment_of(key);
        if let Some(o) = old {
            self.flip(seg, contribution(key, o));
            self.segments[seg as usize].keys -= 1;
            self.len -= 1;
        }
        if let Some(d) = new {
            self.flip(seg, contribution(key, d));
            self.segments[seg as usize].keys += 1;
            self.len += 1;
        }
        let s = &mut self.segments[seg as usize];
        s.live = s.live + u64::from(has && new.is_some()) - u64::from(had && old.is_some());
        *s
    }

    /// Installs a stored summary of `segment` (start-up).
    fn load(&mut self, segment: u16, summary: Summary) {
        if usize::from(segment) >= SEGMENTS {
            return;
        }
        let old = self.segments[segment as usize];
        self.flip(segment, old.hash ^ summary.hash);
        self.len = self.len - old.keys + summary.keys;
        self.segments[segment as usize] = summary;
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn branches(&self) -> &[u64] {
        &self.branches
    }

    /// The segment hashes under `branch`.
    pub fn branch_segments(&self, branch: usize) -> Vec<u64> {
        self.segments[branch * SEGMENTS_PER_BRANCH..(branch + 1) * SEGMENTS_PER_BRANCH]
            .iter()
            .map(|s| s.hash)
            .collect()
    }

    pub fn segment(&self, segment: u16) -> Summary {
        self.segments
            .get(usize::from(segment))
            .copied()
            .unwrap_or_default()
    }

    /// Keys in the partition.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Keys holding a value.
    pub fn live(&self) -> u64 {
        self.segments.iter().map(|s| s.live).sum()
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
    /// The trees described by stored segment summaries ([`super::Storage::summaries`]).
    pub fn from_summaries(summaries: &[(u32, u16, Summary)]) -> Merkle {
        let mut m = Merkle::default();
        for (p, s, sum) in summaries {
            m.parts.entry(*p).or_default().load(*s, *sum);
        }
        m
    }

    /// See [`PartitionTree::update`].
    pub fn update(
        &mut self,
        partition: u32,
        key: &[u8],
        old: Option<u64>,
        new: Option<u64>,
        had: bool,
        has: bool,
    ) -> Summary {
        self.parts
            .entry(partition)
            .or_default()
            .update(key, old, new, had, has)
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

    /// Forgets `partition`'s tree (the partition was dropped and holds no key).
    pub fn remove(&mut self, partition: u32) {
        self.parts.remove(&partition);
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
            let mut fin: BTreeMap<u8, u64> = BTreeMap::new();
            let mut summaries = BTreeMap::new();
            for (k, d) in ops {
                let key = [k];
                let old = fin.get(&k).copied();
                let s = inc.update(&key, old, d, old.is_some_and(|o| o % 2 == 0), d.is_some_and(|n| n % 2 == 0));
                summaries.insert(segment_of(&key), s);
                match d {
                    Some(d) => { fin.insert(k, d); }
                    None => { fin.remove(&k); }
                }
            }
            let mut rebuilt = PartitionTree::default();
            for (k, d) in &fin {
                rebuilt.update(&[*k], None, Some(*d), false, d % 2 == 0);
            }
            prop_assert_eq!(inc.root(), rebuilt.root());
            prop_assert_eq!(inc.branches(), rebuilt.branches());
            prop_assert_eq!(inc.len(), fin.len() as u64);
            prop_assert_eq!(inc.live(), rebuilt.live());
            // The persisted summaries alone rebuild the same tree (a restart).
            let stored: Vec<(u32, u16, Summary)> = summaries.into_iter().map(|(s, m)| (0, s, m)).collect();
            let loaded = Merkle::from_summaries(&stored);
            prop_assert_eq!(loaded.root(0), inc.root());
            prop_assert_eq!(loaded.get(0).map_or(0, |t| t.len()), inc.len());
            let xor = inc.branches().iter().fold(0, |a, b| a ^ b);
            prop_assert_eq!(xor, inc.root());
        }
    }

    #[test]
    fn digest_sees_values_versions_content_types_expiries_and_context() {
        use crate::core::{Actor, Dot, Version, VersionVector};
        use bytes::Bytes;
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
        t.update(b"k", None, Some(1), false, true);
        let r = t.root();
        t.update(b"k", Some(1), Some(2), true, true);
        assert_ne!(t.root(), r);
        t.update(b"k", Some(2), None, true, false);
        assert_eq!(t.root(), 0);
        assert!(t.is_empty());
    }
}
