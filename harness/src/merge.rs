//! The checkers' own model of joining replica states, independent of the core's
//! `VersionSet::merge`, so that a bug in that merge cannot also change what G2 and G6 judge.
//!
//! The model is the definition of a dotted-version-vector-set join, written as plainly as
//! possible: a version survives the join of several sets when every set either holds its dot or
//! has a context that does not cover it (a set whose context covers a dot it does not hold has
//! seen that write superseded). Nothing is sorted in place or merged pairwise.

use causeway::core::{Dot, Version, VersionSet};
use std::collections::BTreeMap;

/// The versions of the join of `sets`, one per dot, ordered by dot.
pub fn merged_versions<'a>(sets: impl IntoIterator<Item = &'a VersionSet> + Clone) -> Vec<Version> {
    let mut candidates: BTreeMap<Dot, &Version> = BTreeMap::new();
    for s in sets.clone() {
        for v in s.versions() {
            candidates.entry(v.dot).or_insert(v);
        }
    }
    candidates
        .into_values()
        .filter(|v| {
            sets.clone()
                .into_iter()
                .all(|s| s.versions().iter().any(|x| x.dot == v.dot) || !s.context().covers(v.dot))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway::core::{Actor, VersionVector};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn dot(a: u32, c: u64) -> Dot {
        Dot::new(Actor::new(a, 1, 1), c)
    }
    fn ver(d: Dot) -> Version {
        Version {
            dot: d,
            value: Some(bytes::Bytes::from(format!("{d:?}"))),
            ts: 0,
            content_type: None,
            expires: None,
        }
    }

    #[test]
    fn keeps_concurrent_siblings_and_drops_superseded_versions() {
        let (a, b, c) = (dot(1, 1), dot(2, 1), dot(1, 2));
        let mut x = VersionSet::new();
        x.write(&VersionVector::new(), ver(a));
        let mut y = VersionSet::new();
        y.write(&VersionVector::new(), ver(b));
        let dots = |vs: Vec<Version>| vs.into_iter().map(|v| v.dot).collect::<BTreeSet<_>>();
        assert_eq!(dots(merged_versions([&x, &y])), BTreeSet::from([a, b]));
        // z saw a and replaced it with c: the join keeps b and c only.
        let mut z = x.clone();
        let mut ctx = VersionVector::new();
        ctx.add(a);
        z.write(&ctx, ver(c));
        assert_eq!(dots(merged_versions([&x, &y, &z])), BTreeSet::from([b, c]));
    }

    /// One replica's history: writes by three actors, each with a context covering some
    /// prefix of what that replica held.
    fn replica_state(writes: Vec<(u32, bool)>, counters: &mut [u64; 3]) -> VersionSet {
        let mut s = VersionSet::new();
        for (actor, sees) in writes {
            let i = actor as usize % 3;
            counters[i] += 1;
            let ctx = if sees {
                s.context().clone()
            } else {
                VersionVector::new()
            };
            s.write(&ctx, ver(dot(i as u32 + 1, counters[i])));
        }
        s
    }

    proptest! {
        /// The core's merge agrees with the model on states reached by writes and joins.
        #[test]
        fn core_merge_agrees_with_the_model(
            a in proptest::collection::vec((0u32..3, any::<bool>()), 0..6),
            b in proptest::collection::vec((0u32..3, any::<bool>()), 0..6),
            c in proptest::collection::vec((0u32..3, any::<bool>()), 0..6),
        ) {
            let mut counters = [0u64; 3];
            let x = replica_state(a, &mut counters);
            let y = replica_state(b, &mut counters);
            let mut z = replica_state(c, &mut counters);
            z.merge(&x);
            let mut core = x.clone();
            core.merge(&y);
            core.merge(&z);
            prop_assert_eq!(core.versions().to_vec(), merged_versions([&x, &y, &z]));
        }
    }
}
