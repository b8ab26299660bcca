//! Version vectors and the node clock.
//!
//! A [`VersionVector`] is both the per-key causal context inside a
//! [`crate::core::dvv::VersionSet`] and the session token a client carries
//! ([`crate::core::token`]). It holds one entry per *lineage*: the actors one incarnation of one
//! node takes in successive view epochs (see [`crate::core::dot`]). Entry `a -> n` stands for the
//! dots `(a, 1..=n)` **and every dot of the lineage's actors of epochs below `a`'s** — the
//! lineage's retired actors are folded into its newest one. `n` may be 0: the entry then stands
//! for the older actors' dots only (a *floor*). So a vector has at most one entry per node
//! incarnation that ever wrote, however many view changes the cluster went through.
//!
//! Why the fold is sound: a node's actors are used one after another (a node takes its actor of
//! epoch `e` only once it stopped issuing dots with every earlier one), so the dots a folded entry
//! stands for are a fixed set once the entry exists: the causal past of `a`'s dots includes them
//! all, as a single actor's counter would. A replica checks them exactly before it relies on
//! them: it vouches for the older actors of a lineage on a partition only through a *floor*
//! it verified against each older actor's final counter (the floor check in
//! [`crate::core::node`]) or a handoff claim made under the same rule. Hint actors are never
//! folded: each is its own lineage, covered by its exact entry only.
//!
//! A [`NodeClock`] records which dots a replica has *applied*: per actor a contiguous base plus
//! the dots applied out of order above it. Only the contiguous base may be handed to clients:
//! a token never claims a write its issuer had not applied (docs/guarantees.md, "Tokens").

use super::dot::{Actor, Dot};
use super::ring::Epoch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What identifies a lineage: node hash, incarnation, hint code, and for a hint actor its epoch
/// (hint actors fold into nothing, so each epoch's is a lineage of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Lineage {
    node: u32,
    incarnation: u32,
    hint: u64,
    hint_epoch: Epoch,
}

impl Lineage {
    fn of(a: Actor) -> Self {
        Lineage {
            node: a.node(),
            incarnation: a.incarnation(),
            hint: a.hint_code(),
            hint_epoch: if a.hinted_partition().is_none() {
                0
            } else {
                a.epoch()
            },
        }
    }
}

/// Lineage -> (newest epoch, counter of that epoch's actor; 0 for a floor). Invariant: at most
/// one entry per lineage (so `len()` is bounded by the node incarnations and hint actors
/// that wrote, never by the number of view changes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<Lineage, (Epoch, u64)>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest counter of `actor` covered: the entry's counter for the lineage's newest actor,
    /// `u64::MAX` for an older (folded) actor of the lineage, 0 when not covered.
    pub fn get(&self, actor: Actor) -> u64 {
        match self.0.get(&Lineage::of(actor)) {
            Some(&(e, n)) if e == actor.epoch() => n,
            Some(&(e, _)) if e > actor.epoch() => u64::MAX,
            _ => 0,
        }
    }

    /// True when `dot` is among the dots this vector stands for.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Raises the vector so that it covers `(actor, 1..=counter)`: a newer actor of the lineage
    /// replaces (and folds) an older one; an older one than the lineage's entry adds nothing.
    pub fn raise(&mut self, actor: Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        let e = self
            .0
            .entry(Lineage::of(actor))
            .or_insert((actor.epoch(), 0));
        if actor.epoch() > e.0 {
            *e = (actor.epoch(), counter);
        } else if actor.epoch() == e.0 {
            e.1 = e.1.max(counter);
        }
    }

    /// Raises the vector so that it covers every dot of the lineage's actors of epochs below
    /// `actor`'s (a floor at `actor`'s epoch).
    pub fn raise_floor(&mut self, actor: Actor) {
        let e = self
            .0
            .entry(Lineage::of(actor))
            .or_insert((actor.epoch(), 0));
        if actor.epoch() > e.0 {
            *e = (actor.epoch(), 0);
        }
    }

    /// True when the vector covers every dot of the lineage's actors of epochs below `actor`'s.
    pub fn covers_older(&self, actor: Actor) -> bool {
        self.0
            .get(&Lineage::of(actor))
            .is_some_and(|&(e, _)| e >= actor.epoch())
    }

    /// Raises the entry of the dot's actor so that the dot is covered.
    pub fn add(&mut self, dot: Dot) {
        self.raise(dot.actor, dot.counter);
    }

    /// Adds the entry `actor -> n` as [`VersionVector::iter`] yields it (a floor when `n` is 0).
    pub fn insert_entry(&mut self, actor: Actor, n: u64) {
        if n == 0 {
            self.raise_floor(actor);
        } else {
            self.raise(actor, n);
        }
    }

    /// The join of the lattice: covers exactly what either side covers.
    pub fn merge(&mut self, other: &VersionVector) {
        for (a, n) in other.iter() {
            self.insert_entry(a, n);
        }
    }

    /// True when every dot of `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(l, &(e, n))| {
            self.0
                .get(l)
                .is_some_and(|&(me, mn)| me > e || (me == e && mn >= n))
        })
    }

    /// The entries: each lineage's newest actor and its counter (0 for a floor).
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.0
            .iter()
            .map(|(l, &(e, n))| (Actor::from_parts(l.node, e, l.incarnation, l.hint), n))
    }

    /// Number of entries (lineages).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Collects `(actor, counter)` pairs as by [`VersionVector::raise`]: a zero counter adds nothing
/// (a floor is only ever added on purpose, by [`VersionVector::insert_entry`]).
impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (a, n) in iter {
            v.raise(a, n);
        }
        v
    }
}

/// Applied dots of one actor. Invariant: every element of `above` is `> base + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    base: u64,
    above: BTreeSet<u64>,
}

/// The set of dots a replica has applied, compactly: a contiguous base per actor plus exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeClock(BTreeMap<Actor, Applied>);

impl NodeClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `dot` as applied; returns false when it already was.
    pub fn add(&mut self, dot: Dot) -> bool {
        let e = self.0.entry(dot.actor).or_default();
        if dot.counter <= e.base || e.above.contains(&dot.counter) {
            return false;
        }
        if dot.counter == e.base + 1 {
            e.base += 1;
            while e.above.remove(&(e.base + 1)) {
                e.base += 1;
            }
        } else {
            e.above.insert(dot.counter);
        }
        true
    }

    /// Records every dot `(actor, 1..=n)` of `vv` as applied.
    pub fn add_all(&mut self, vv: &VersionVector) {
        for (a, n) in vv.iter() {
            self.add_upto(a, n);
        }
    }

    /// Records the dots `(actor, 1..=n)` as applied.
    pub fn add_upto(&mut self, actor: Actor, n: u64) {
        if n == 0 {
            return;
        }
        let e = self.0.entry(actor).or_default();
        if n > e.base {
            e.base = n;
            e.above = e.above.split_off(&(n + 1));
            while e.above.remove(&(e.base + 1)) {
                e.base += 1;
            }
        }
    }

    /// Adds every dot `other` records as applied (the union of both sets of dots).
    pub fn join(&mut self, other: &NodeClock) {
        for (&a, o) in &other.0 {
            self.add_all(&[(a, o.base)].into_iter().collect());
            for &n in &o.above {
                self.add(Dot::new(a, n));
            }
        }
    }

    pub fn contains(&self, dot: Dot) -> bool {
        self.0
            .get(&dot.actor)
            .is_some_and(|e| dot.counter <= e.base || e.above.contains(&dot.counter))
    }

    /// Contiguous applied counter of `actor`: every dot `(actor, 1..=base)` has been applied.
    pub fn base(&self, actor: Actor) -> u64 {
        self.0.get(&actor).map_or(0, |e| e.base)
    }

    /// The contiguous bases of the actors `keep` selects, as a version vector.
    pub fn bases(&self, mut keep: impl FnMut(Actor) -> bool) -> VersionVector {
        self.0
            .iter()
            .filter(|(a, _)| keep(**a))
            .map(|(&a, e)| (a, e.base))
            .collect()
    }

    /// The applied dots of the actors `keep` selects.
    pub fn restricted(&self, mut keep: impl FnMut(Actor) -> bool) -> NodeClock {
        NodeClock(
            self.0
                .iter()
                .filter(|(a, _)| keep(**a))
                .map(|(a, e)| (*a, e.clone()))
                .collect(),
        )
    }

    /// Highest applied counter of `actor`, gaps included.
    pub fn max(&self, actor: Actor) -> u64 {
        self.0
            .get(&actor)
            .map_or(0, |e| e.above.last().copied().unwrap_or(e.base).max(e.base))
    }

    /// Number of dots applied out of order (waiting for a gap below them to fill).
    /// Number of actors the clock has an entry for.
    pub fn actors(&self) -> usize {
        self.0.len()
    }

    /// Each actor's contiguous base and the counters applied above it (for validation).
    pub fn entries(&self) -> impl Iterator<Item = (Actor, u64, &BTreeSet<u64>)> + '_ {
        self.0.iter().map(|(&a, e)| (a, e.base, &e.above))
    }

    pub fn gaps(&self) -> usize {
        self.0.values().map(|e| e.above.len()).sum()
    }
}

/// What a replica vouches for on one partition beyond its own node clock (a handoff clock, and
/// the claims handoff and anti-entropy carry): exact contiguous dots per actor, which need no
/// fold, and floors (entries `(a, 0)` of a [`VersionVector`]: every dot of `a`'s lineage's older
/// actors to the partition). Kept apart so a claim on an actor never depends on a floor of its
/// lineage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    pub dots: NodeClock,
    pub floors: VersionVector,
}

impl PartitionClock {
    /// Highest counter of `actor` vouched for: its exact dots, or all of them when a floor
    /// folds it.
    pub fn get(&self, actor: Actor) -> u64 {
        self.dots.base(actor).max(self.floors.get(actor))
    }

    /// Whether a floor vouches for every dot of the actors older than `actor` in its lineage.
    pub fn covers_older(&self, actor: Actor) -> bool {
        self.floors.covers_older(actor)
    }

    /// The union of both claims.
    pub fn merge(&mut self, other: &PartitionClock) {
        self.dots.join(&other.dots);
        self.floors.merge(&other.floors);
    }

    pub fn is_empty(&self) -> bool {
        self.dots.actors() == 0 && self.floors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Actor of node `n` in epoch `e` of incarnation 1; hint actors of partition 0 when `h`.
    fn act(n: u32, e: u64, h: bool) -> Actor {
        let a = Actor::new(n, e, 1);
        if h { a.hint(0, 0) } else { a }
    }

    proptest! {
        /// However many epochs a lineage goes through, a vector holds one entry per lineage; the
        /// fold never loses a dot either side covered (merge covers the union), and covers an
        /// older epoch's dots only through a newer entry of the same lineage.
        #[test]
        fn folding_is_bounded_and_never_weakens(
            xs in prop::collection::vec((0u32..3, 1u64..300, any::<bool>(), 1u64..9), 0..60),
            ys in prop::collection::vec((0u32..3, 1u64..300, any::<bool>(), 1u64..9), 0..60),
            probe in prop::collection::vec((0u32..3, 1u64..300, any::<bool>(), 1u64..9), 0..40),
        ) {
            let vv = |v: &Vec<(u32, u64, bool, u64)>| -> VersionVector {
                v.iter().map(|&(n, e, h, c)| (act(n, e, h), c)).collect()
            };
            let (a, b) = (vv(&xs), vv(&ys));
            let hints: std::collections::BTreeSet<_> =
                xs.iter().filter(|x| x.2).map(|x| (x.0, x.1)).collect();
            prop_assert!(a.len() <= 3 + hints.len(), "one entry per node lineage");
            let mut m = a.clone();
            m.merge(&b);
            prop_assert!(m.dominates(&a) && m.dominates(&b));
            for &(n, e, h, c) in &probe {
                let d = Dot::new(act(n, e, h), c);
                prop_assert_eq!(m.covers(d), a.covers(d) || b.covers(d), "{:?}", d);
                // What covers it: an entry of the same epoch, or (not for hints) a newer one.
                let direct = xs.iter().any(|&(xn, xe, xh, xc)| {
                    xn == n && xh == h && ((xe == e && xc >= c) || (!h && xe > e))
                });
                prop_assert_eq!(a.covers(d), direct, "{:?}", d);
            }
            let mut again = m.clone();
            again.merge(&a);
            prop_assert_eq!(again, m, "merge is idempotent");
        }
    }

    fn d(n: u64) -> Dot {
        Dot::new(Actor::new(1, 1, 1), n)
    }

    #[test]
    fn floors_fold_only_the_older_actors_of_their_lineage() {
        let (old, new) = (Actor::new(1, 5, 1), Actor::new(1, 9, 1));
        let mut v = VersionVector::new();
        v.raise_floor(new);
        assert!(
            v.covers(Dot::new(old, 1000)),
            "a floor covers every older actor's dots"
        );
        assert!(!v.covers(Dot::new(new, 1)), "but none of its own actor's");
        assert!(v.covers_older(new) && !v.covers_older(Actor::new(1, 10, 1)));
        assert!(
            !v.covers(Dot::new(Actor::new(1, 5, 2), 1)),
            "another incarnation is another lineage"
        );
        let mut w: VersionVector = [(new, 3)].into_iter().collect();
        assert!(w.dominates(&v) && !v.dominates(&w));
        w.merge(&v);
        assert_eq!(w.get(new), 3);
        let mut x = v.clone();
        x.merge(&[(old, 4)].into_iter().collect());
        assert_eq!(x, v, "an older actor adds nothing below a floor");
        let zero: VersionVector = [(new, 0)].into_iter().collect();
        assert!(zero.is_empty(), "a zero clock base never becomes a floor");
        let mut h = PartitionClock::default();
        h.dots.add_upto(old, 4);
        assert_eq!(h.get(old), 4);
        assert!(!h.covers_older(old) && !h.covers_older(new));
        h.floors.raise_floor(new);
        assert_eq!(h.get(old), u64::MAX);
        assert!(h.covers_older(new));
    }

    #[test]
    fn node_clock_fills_gaps() {
        let mut c = NodeClock::new();
        assert!(c.add(d(2)));
        assert_eq!(c.base(d(1).actor), 0);
        assert!(c.add(d(3)));
        assert!(c.add(d(1)));
        assert_eq!(c.base(d(1).actor), 3);
        assert!(!c.add(d(2)), "re-adding an applied dot reports it as old");
        assert_eq!(c.gaps(), 0);
    }

    #[test]
    fn join_is_union() {
        let a = Actor::new(1, 1, 1);
        let mut x = NodeClock::new();
        x.add(d(1));
        x.add(d(4));
        let mut y = NodeClock::new();
        y.add(d(2));
        y.add(d(3));
        y.add(Dot::new(Actor::new(2, 1, 1), 1));
        x.join(&y);
        assert_eq!(x.base(a), 4);
        assert_eq!(x.base(Actor::new(2, 1, 1)), 1);
        assert_eq!(x.gaps(), 0);
    }

    #[test]
    fn add_all_absorbs_exceptions() {
        let mut c = NodeClock::new();
        c.add(d(5));
        c.add(d(7));
        c.add_all(&[(d(1).actor, 5)].into_iter().collect());
        assert_eq!(c.base(d(1).actor), 5);
        assert!(c.contains(d(7)));
        c.add(d(6));
        assert_eq!(c.base(d(1).actor), 7);
    }
}
