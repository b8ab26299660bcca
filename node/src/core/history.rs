//! Every view a node has seen, and what they say about which writes a replica must hold.
//!
//! Coverage across view changes rests on two facts:
//! - an actor coordinates writes only for partitions its node owned in the view of the actor's
//!   epoch ([`crate::core::dot`]), so a context entry `(actor, n)` concerns partition `p` only if
//!   [`History::relevant`] says so;
//! - a replica's node clock vouches for partition `p` only for actors of epochs inside the node's
//!   current, unbroken stretch of ownership of `p` ([`History::window`]). Data of an earlier
//!   stretch may have been dropped after a handoff, and claims adopted from peers were only ever
//!   checked against the partitions both held at the time. Older writes are vouched for by the
//!   partition's handoff clock instead.
//!
//! Learning a view can only shorten a window, never lengthen it, so a late view makes a replica
//! more cautious, never less.

use super::dot::Actor;
use super::ring::{Epoch, NodeId, ShardId, View, node_hash};
use std::collections::BTreeMap;

/// A view with its node-hash index.
#[derive(Debug, Clone)]
struct Known {
    view: View,
    shard_by_hash: BTreeMap<u32, ShardId>,
}

/// The views a node knows, by epoch. Invariant: holds at least one view.
#[derive(Debug, Clone)]
pub struct History {
    views: BTreeMap<Epoch, Known>,
    /// This cluster's id: actors of other clusters are in none of these views.
    cluster: u32,
}

impl History {
    pub fn new(view: View, cluster: u32) -> Self {
        let mut h = History {
            views: BTreeMap::new(),
            cluster,
        };
        h.insert(view);
        h
    }

    /// Adds `view`; returns false when its epoch was already known.
    pub fn insert(&mut self, view: View) -> bool {
        if self.views.contains_key(&view.epoch) {
            return false;
        }
        let shard_by_hash = view
            .nodes
            .iter()
            .filter_map(|n| Some((node_hash(n), view.shard_of_node(n)?)))
            .collect();
        self.views.insert(
            view.epoch,
            Known {
                view,
                shard_by_hash,
            },
        );
        true
    }

    /// Number of views known (never zero).
    pub fn count(&self) -> u32 {
        self.views.len() as u32
    }

    /// The newest view.
    pub fn latest(&self) -> &View {
        &self.views.values().next_back().expect("never empty").view
    }

    pub fn get(&self, epoch: Epoch) -> Option<&View> {
        self.views.get(&epoch).map(|k| &k.view)
    }

    /// The cluster's first view (epoch number 1), when known here.
    pub fn genesis(&self) -> Option<&View> {
        self.views
            .range(1 << 32..2 << 32)
            .next()
            .map(|(_, k)| &k.view)
    }

    /// The newest view older than `epoch`.
    pub fn before(&self, epoch: Epoch) -> Option<&View> {
        self.views.range(..epoch).next_back().map(|(_, k)| &k.view)
    }

    /// Views newer than `epoch`, oldest first.
    pub fn after(&self, epoch: Epoch) -> Vec<View> {
        self.views
            .range(epoch + 1..)
            .map(|(_, k)| k.view.clone())
            .collect()
    }

    /// Every view, oldest first, borrowed.
    pub fn views(&self) -> impl Iterator<Item = &View> {
        self.views.values().map(|k| &k.view)
    }

    /// Every view, oldest first.
    pub fn all(&self) -> Vec<View> {
        self.views.values().map(|k| k.view.clone()).collect()
    }

    /// Whether `actor`'s writes may include writes to `partition`: its node owned the partition
    /// in the view of its epoch. `None` when that view is unknown here.
    pub fn relevant(&self, actor: Actor, partition: u32) -> Option<bool> {
        if actor.cluster() != self.cluster {
            return None;
        }
        if let Some(p) = actor.hinted_partition() {
            return Some(p == partition);
        }
        if actor.is_loader() {
            return Some(true);
        }
        let k = self.views.get(&actor.epoch())?;
        Some(
            k.shard_by_hash
                .get(&actor.node())
                .is_some_and(|s| *s == k.view.shard_of_partition(partition)),
        )
    }

    /// Whether `actor` or an earlier actor of its lineage (folded into it, see
    /// [`crate::core::clock`]) may have written to `partition`: its node owned the partition in
    /// some known view up to the actor's epoch. `None` when the actor's own view is unknown.
    /// Hint actors fold nothing: as [`History::relevant`].
    pub fn ever_relevant(&self, actor: Actor, partition: u32) -> Option<bool> {
        if actor.hinted_partition().is_some()
            || actor.is_loader()
            || actor.cluster() != self.cluster
        {
            return self.relevant(actor, partition);
        }
        self.views.get(&actor.epoch())?;
        Some(self.views.range(..=actor.epoch()).any(|(_, k)| {
            k.shard_by_hash
                .get(&actor.node())
                .is_some_and(|s| *s == k.view.shard_of_partition(partition))
        }))
    }

    /// Whether `node` owned `partition` in some known view of an epoch in `from..until`.
    pub fn owned_between(&self, node: &NodeId, partition: u32, from: Epoch, until: Epoch) -> bool {
        self.views
            .range(from..until)
            .any(|(_, k)| k.view.owns(node, partition))
    }

    /// The shard `actor`'s node belonged to in the view of its epoch, with that view (`None`
    /// for hint actors, which belong to no shard).
    pub fn actor_shard(&self, actor: Actor) -> Option<(&View, ShardId)> {
        if actor.hinted_partition().is_some() {
            return None;
        }
        let k = self.views.get(&actor.epoch())?;
        Some((&k.view, *k.shard_by_hash.get(&actor.node())?))
    }

    /// First and last epoch of `node`'s latest unbroken run of known views in which it owns
    /// `partition`; `None` if it owns the partition in none of them.
    pub fn window(&self, node: &NodeId, partition: u32) -> Option<(Epoch, Epoch)> {
        let mut run: Option<(Epoch, Epoch)> = None;
        for (e, k) in self.views.iter().rev() {
            let owns = k.view.owns(node, partition);
            match (&mut run, owns) {
                (None, true) => run = Some((*e, *e)),
                (Some(r), true) => r.0 = *e,
                (Some(_), false) => break,
                (None, false) => {}
            }
        }
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ring::nodes;

    #[test]
    fn windows_and_relevance_follow_the_views() {
        let v1 = View::new(nodes(2), 1).unwrap();
        let v2 = v1.change(nodes(3), 1, &nodes(3)[0]).unwrap();
        let mut h = History::new(v1.clone(), 0);
        let first = v1.epoch;
        assert_eq!(crate::core::ring::epoch_number(first), 1);
        let other = View::new(nodes(3), 1).unwrap();
        assert_ne!(other.epoch, first, "two clusters' first views differ");
        h.insert(v2.clone());
        assert_eq!(h.latest(), &v2);
        let moved = (0..64)
            .find(|p| v2.shard_of_partition(*p) == 2)
            .expect("the new shard got partitions");
        let old_owner = &v1.owners(moved)[0];
        let new_owner = &nodes(3)[2];
        assert_eq!(h.window(old_owner, moved), Some((first, first)));
        assert_eq!(h.window(new_owner, moved), Some((v2.epoch, v2.epoch)));
        let old_actor = Actor::new(node_hash(old_owner), first, 1);
        assert_eq!(h.relevant(old_actor, moved), Some(true));
        let new_actor = Actor::new(node_hash(old_owner), v2.epoch, 1);
        assert_eq!(h.relevant(new_actor, moved), Some(false));
        assert_eq!(h.relevant(Actor::new(1, 99, 1), moved), None);
        let kept = (0..64)
            .find(|p| v2.shard_of_partition(*p) == v1.shard_of_partition(*p))
            .unwrap();
        let owner = &v1.owners(kept)[0];
        assert_eq!(h.window(owner, kept), Some((first, v2.epoch)));
    }
}
