//! The version set of one key: concurrent versions (siblings) identified by dots, plus the key's
//! causal context — a dotted-version-vector set in the sense of Preguiça et al. and Riak 2.0.
//!
//! Invariants:
//! - every version's dot is covered by `context`;
//! - `context` entry `a -> n` means the set reflects every write to this key by `a` with counter
//!   `<= n`: such a write is either present as a version or was superseded by one that is. This
//!   holds because the coordinator of a write owns its actor's counter and has applied all of that
//!   actor's earlier writes, and because client contexts cover only writes they may supersede.
//! - versions are sorted by dot and no two share a dot.
//!
//! Given those invariants `merge` is the lattice join (commutative, associative, idempotent): a
//! version survives unless the other side's context covers its dot without holding it.

use super::clock::VersionVector;
use super::dot::Dot;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One version of a key: a value, or a tombstone (`value == None`), written as event `dot`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    pub dot: Dot,
    /// `None` marks a deletion (a tombstone).
    pub value: Option<Bytes>,
    /// Hybrid timestamp (microseconds since the Unix epoch on the coordinator's clock, moved
    /// forward past every earlier write of its node): `Last-Modified`, and the winner in LWW
    /// mode. No correctness decision depends on it.
    pub ts: u64,
    /// The media type the value was written with, as the client sent it (at most
    /// [`super::request::MAX_CONTENT_TYPE_BYTES`]); `None` for tombstones and for values
    /// written without one, which read as `application/octet-stream`.
    pub content_type: Option<Bytes>,
    /// When the version expires (TTL): microseconds since the Unix epoch on the coordinator's
    /// clock, its `ts` plus the requested time to live. Part of the version, so every replica
    /// holds (and digests) the same expiry. `None`: never expires.
    pub expires: Option<u64>,
}

impl Version {
    /// Whether the version has expired at `now` (by the clock of the node asking).
    pub fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// A stable tag naming this sibling (Riak's vtag): derived from the dot alone, so every
    /// replica gives the same version the same tag. URL-safe, 11 characters.
    pub fn vtag(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let a = self.dot.actor;
        h.update(&a.node().to_le_bytes());
        h.update(&a.epoch().to_le_bytes());
        h.update(&a.incarnation().to_le_bytes());
        h.update(&(a.hint_code() as u32).to_le_bytes());
        if a.cluster() != 0 {
            h.update(&a.cluster().to_le_bytes());
        }
        h.update(&self.dot.counter.to_le_bytes());
        URL_SAFE_NO_PAD.encode(h.digest().to_be_bytes())
    }
}

/// All versions of one key that no other known version supersedes, and what the key has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionSet {
    context: VersionVector,
    versions: Vec<Version>,
}

impl VersionSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's causal context: every write to the key it covers is present or superseded.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The current siblings (values and tombstones), sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// True when the key has versions and all of them are tombstones.
    pub fn is_deleted(&self) -> bool {
        !self.versions.is_empty() && self.versions.iter().all(|v| v.value.is_none())
    }

    /// True when at least one sibling holds a value.
    pub fn has_value(&self) -> bool {
        self.versions.iter().any(|v| v.value.is_some())
    }

    /// How many versions the set holds after a write with `context`: those `context` does not
    /// cover, plus the write's own.
    pub fn siblings_after_write(&self, context: &VersionVector) -> usize {
        self.versions
            .iter()
            .filter(|v| !context.covers(v.dot))
            .count()
            + 1
    }

    /// Applies a write issued with client context `context`: removes exactly the versions that
    /// `context` covers and adds `version`. Versions the context does not cover stay as siblings.
    pub fn write(&mut self, context: &VersionVector, version: Version) {
        self.versions.retain(|v| !context.covers(v.dot));
        self.context.merge(context);
        self.context.add(version.dot);
        let pos = self.versions.partition_point(|v| v.dot < version.dot);
        if self.versions.get(pos).map(|v| v.dot) != Some(version.dot) {
            self.versions.insert(pos, version);
        }
    }

    /// Joins `other` into `self`; returns true when `self` changed.
    pub fn merge(&mut self, other: &VersionSet) -> bool {
        if self == other {
            return false;
        }
        let mut out = Vec::with_capacity(self.versions.len() + other.versions.len());
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.versions, &other.versions);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.dot == y.dot => {
                    out.push(x.clone());
                    i += 1;
                    j += 1;
                }
                (Some(x), y) if y.is_none_or(|y| x.dot < y.dot) => {
                    if !other.context.covers(x.dot) {
                        out.push(x.clone());
                    }
                    i += 1;
                }
                (_, Some(y)) => {
                    if !self.context.covers(y.dot) {
                        out.push(y.clone());
                    }
                    j += 1;
                }
                (_, None) => unreachable!("loop condition keeps one side non-empty"),
            }
        }
        let before = (self.context.clone(), self.versions.len());
        self.context.merge(&other.context);
        let changed = before.0 != self.context || before.1 != out.len() || out != self.versions;
        self.versions = out;
        changed
    }

    /// Expires the versions `expired` accepts: removes exactly those and adds `tombstone`
    /// (written by the node that expires them). The context keeps covering the removed dots, so
    /// they stay superseded in every later merge, while versions it does not remove — a
    /// concurrent or later write, expiring or not — survive here and in every merge.
    pub fn expire(&mut self, expired: impl Fn(&Version) -> bool, tombstone: Version) {
        self.versions.retain(|v| !expired(v));
        self.write(&VersionVector::new(), tombstone);
    }

    /// Keeps only the versions `keep` accepts; the context is unchanged, so dropped versions
    /// stay superseded in every later merge.
    pub fn retain_versions(&mut self, keep: impl FnMut(&Version) -> bool) {
        self.versions.retain(keep);
    }

    /// Checks the module's invariants: versions sorted by dot, no two sharing one, and every
    /// dot covered by the context.
    pub fn check(&self) -> Result<(), String> {
        if let Some(w) = self.versions.windows(2).find(|w| w[0].dot >= w[1].dot) {
            return Err(format!(
                "versions not sorted and unique: {:?} before {:?}",
                w[0].dot, w[1].dot
            ));
        }
        if let Some(v) = self.versions.iter().find(|v| !self.context.covers(v.dot)) {
            return Err(format!("version {:?} is not covered by the context", v.dot));
        }
        Ok(())
    }

    /// Keeps only the version with the highest `(ts, dot)`: last-writer-wins collapse.
    pub fn collapse_lww(&mut self) {
        if let Some(winner) = self.versions.iter().max_by_key(|v| (v.ts, v.dot)).cloned() {
            self.versions = vec![winner];
        }
    }
}

/// The encoding of version sets written before versions carried an expiry (storage format 1):
/// decoded only to read old data, converted into [`VersionSet`]s without expiries.
pub mod v1 {
    use super::{Dot, VersionVector};
    use bytes::Bytes;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Version {
        dot: Dot,
        value: Option<Bytes>,
        ts: u64,
        content_type: Option<Bytes>,
    }

    /// A version set as format 1 stored it.
    #[derive(Deserialize)]
    pub struct VersionSet {
        context: VersionVector,
        versions: Vec<Version>,
    }

    impl From<VersionSet> for super::VersionSet {
        fn from(old: VersionSet) -> Self {
            let versions = old
                .versions
                .into_iter()
                .map(|v| super::Version {
                    dot: v.dot,
                    value: v.value,
                    ts: v.ts,
                    content_type: v.content_type,
                    expires: None,
                })
                .collect();
            super::VersionSet {
                context: old.context,
                versions,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dot::Actor;
    use proptest::prelude::*;

    fn ver(actor: u32, counter: u64, value: Option<&'static str>) -> Version {
        Version {
            dot: Dot::new(Actor::new(actor, 1, 1), counter),
            value: value.map(|s| Bytes::from_static(s.as_bytes())),
            ts: counter,
            content_type: None,
            expires: None,
        }
    }

    #[test]
    fn expire_removes_exactly_the_expired_versions() {
        let mut set = VersionSet::new();
        set.write(&VersionVector::new(), ver(1, 1, Some("plain")));
        let mut ttl = ver(1, 2, Some("ttl"));
        ttl.expires = Some(10);
        set.write(&VersionVector::new(), ttl.clone());
        set.write(&VersionVector::new(), ver(2, 1, Some("concurrent")));
        let before = set.clone();
        set.expire(|v| v.expired(10), ver(3, 1, None));
        let dots: Vec<Dot> = set.versions().iter().map(|v| v.dot).collect();
        assert_eq!(
            dots,
            [
                ver(1, 1, None).dot,
                ver(2, 1, None).dot,
                ver(3, 1, None).dot
            ]
        );
        set.check().unwrap();
        // A replica that still holds the expired version drops it on merge and keeps the rest.
        let mut other = before;
        other.merge(&set);
        assert_eq!(other, set);
    }

    #[test]
    fn check_accepts_written_sets_and_rejects_unsorted_duplicate_or_uncovered_versions() {
        let mut set = VersionSet::new();
        set.write(&VersionVector::new(), ver(2, 1, Some("b")));
        set.write(&VersionVector::new(), ver(1, 1, Some("a")));
        set.check().unwrap();
        let mut unsorted = set.clone();
        unsorted.versions.swap(0, 1);
        assert!(unsorted.check().unwrap_err().contains("sorted"));
        let mut twice = set.clone();
        twice.versions.push(twice.versions[1].clone());
        assert!(twice.check().is_err());
        let mut uncovered = set.clone();
        uncovered.versions.push(ver(3, 7, None));
        assert!(uncovered.check().unwrap_err().contains("not covered"));
    }

    /// A history of writes to one key, replayed at two "replicas" that saw different prefixes,
    /// produces version sets whose merges must obey the lattice laws.
    fn arb_set() -> impl Strategy<Value = VersionSet> {
        // Each write: which actor coordinates, and which of the earlier writes its context covers.
        prop::collection::vec((0u32..3, any::<u64>()), 0..8).prop_map(|writes| {
            let mut counters = [0u64; 3];
            let mut issued: Vec<Dot> = Vec::new();
            let mut set = VersionSet::new();
            for (actor, mask) in writes {
                counters[actor as usize] += 1;
                let mut ctx = VersionVector::new();
                for (i, d) in issued.iter().enumerate() {
                    if mask >> (i % 64) & 1 == 1 {
                        ctx.raise(d.actor, d.counter);
                    }
                }
                let v = ver(actor, counters[actor as usize], Some("x"));
                issued.push(v.dot);
                set.write(&ctx, v);
            }
            set
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arb_set(), b in arb_set()) {
            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn merge_is_associative(a in arb_set(), b in arb_set(), c in arb_set()) {
            let mut l = a.clone();
            l.merge(&b);
            l.merge(&c);
            let mut bc = b.clone();
            bc.merge(&c);
            let mut r = a.clone();
            r.merge(&bc);
            prop_assert_eq!(l, r);
        }

        #[test]
        fn merge_is_idempotent(a in arb_set()) {
            let mut aa = a.clone();
            prop_assert!(!aa.merge(&a));
            prop_assert_eq!(aa, a);
        }

        #[test]
        fn write_supersedes_exactly_covered(a in arb_set(), mask in any::<u64>()) {
            let mut ctx = VersionVector::new();
            let mut covered = Vec::new();
            for (i, v) in a.versions().iter().enumerate() {
                if mask >> i & 1 == 1 {
                    ctx.add(v.dot);
                }
            }
            for v in a.versions() {
                if ctx.covers(v.dot) {
                    covered.push(v.dot);
                }
            }
            let mut w = a.clone();
            let new = ver(9, 1, Some("new"));
            w.write(&ctx, new.clone());
            for v in a.versions() {
                let kept = w.versions().iter().any(|x| x.dot == v.dot);
                prop_assert_eq!(kept, !covered.contains(&v.dot), "version {:?}", v.dot);
            }
            prop_assert!(w.versions().contains(&new));
            prop_assert!(w.context().dominates(a.context()));
        }

        #[test]
        fn merge_never_resurrects_superseded(a in arb_set(), mask in any::<u64>()) {
            // A replica that applied a later write must not get back what that write replaced.
            let mut ctx = VersionVector::new();
            for (i, v) in a.versions().iter().enumerate() {
                if mask >> i & 1 == 1 {
                    ctx.add(v.dot);
                }
            }
            let mut newer = a.clone();
            newer.write(&ctx, ver(9, 1, None));
            let mut m = newer.clone();
            m.merge(&a);
            prop_assert_eq!(m, newer);
        }
    }

    #[test]
    fn concurrent_writes_are_siblings_and_merged_context_resolves() {
        let mut s = VersionSet::new();
        s.write(&VersionVector::new(), ver(1, 1, Some("a")));
        s.write(&VersionVector::new(), ver(2, 1, Some("b")));
        assert_eq!(s.versions().len(), 2);
        let ctx = s.context().clone();
        s.write(&ctx, ver(1, 2, Some("c")));
        assert_eq!(s.versions(), &[ver(1, 2, Some("c"))]);
    }

    #[test]
    fn lww_keeps_highest_timestamp() {
        let mut s = VersionSet::new();
        s.write(&VersionVector::new(), ver(1, 5, Some("late")));
        s.write(&VersionVector::new(), ver(2, 3, Some("early")));
        s.collapse_lww();
        assert_eq!(s.versions(), &[ver(1, 5, Some("late"))]);
    }
}
