//! Actors and dots: the identities of writes.
//!
//! An [`Actor`] is one incarnation of one node within one view epoch: the node's address hash
//! ([`crate::core::ring::node_hash`]), the [`Epoch`] of the view it coordinated writes under,
//! and a random incarnation. A node takes a fresh actor whenever it installs a new view (same
//! incarnation, new epoch: the actors of one incarnation form a *lineage*, which contexts fold
//! into its newest actor, see [`crate::core::clock`]), and a fresh incarnation whenever it loses
//! its disk or cannot prove its counter survived a crash, so a dot is never issued twice
//! (G7) and every dot of an actor is a write to a partition the actor's node owned in that one
//! epoch's view. A *hint actor* ([`Actor::hint`]) is the exception: it names
//! writes a node accepted for one partition it does not own while that partition's replicas were
//! unreachable (hinted handoff), and its dots concern that partition only. A [`Dot`] `(actor, counter)` names exactly one write; counters
//! of one actor start at 1 and are issued without gaps by that actor.

use super::ring::{Epoch, MAX_PARTITIONS};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One incarnation of one node in one view epoch. Invariants: `node` is the hash of the node's
/// address; the node was a replica in the view of `epoch` when it issued the actor's dots.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    node: u32,
    epoch: Epoch,
    incarnation: u32,
    /// Bits 0..32: for a hint actor of partition `p`, `episode << 20 | (p + 1)`; 0 otherwise.
    /// Bits 32..64: the id of the actor's cluster (0, the default, for a cluster outside any
    /// mesh and for every actor written before clusters had ids). Encoded as one varint, so an
    /// actor of cluster 0 encodes byte for byte as the `u32` field stored before: old data and
    /// tokens stay readable.
    hint: u64,
}

impl Actor {
    /// The actor of incarnation `incarnation` of the node whose address hashes to `node`, issuing
    /// writes under the view of `epoch`.
    pub fn new(node: u32, epoch: Epoch, incarnation: u32) -> Self {
        Actor {
            node,
            epoch,
            incarnation,
            hint: 0,
        }
    }

    /// The hint actor of `self` for `partition` (below [`MAX_PARTITIONS`]) in `episode`: same
    /// node, epoch and incarnation (so it is renewed whenever `self` is), dots concerning
    /// `partition` only. The episode counts how often the node dropped the partition before, so
    /// hints accepted after a drop never share an actor with hints already handed off.
    pub fn hint(self, partition: u32, episode: u32) -> Self {
        Actor {
            hint: (self.hint & !0xffff_ffff) | u64::from((episode << 20) | (partition + 1)),
            ..self
        }
    }

    /// `self` as an actor of cluster `cluster` (see [`Actor::cluster`]).
    pub fn in_cluster(self, cluster: u32) -> Self {
        Actor {
            hint: (u64::from(cluster) << 32) | (self.hint & 0xffff_ffff),
            ..self
        }
    }

    /// The id of the cluster whose node issued this actor's dots: dots of different clusters of
    /// a mesh never collide, even between nodes of the same address.
    pub fn cluster(self) -> u32 {
        (self.hint >> 32) as u32
    }

    /// The partition of a hint actor; `None` for an ordinary actor.
    pub fn hinted_partition(self) -> Option<u32> {
        ((self.hint as u32) & (MAX_PARTITIONS + 1)).checked_sub(1)
    }

    /// The episode of a hint actor (0 for an ordinary actor).
    pub fn hint_episode(self) -> u32 {
        (self.hint as u32) >> 20
    }

    /// Rebuilds an actor from its four fields as encoded in tokens (`hint` as stored, cluster
    /// included).
    pub fn from_parts(node: u32, epoch: Epoch, incarnation: u32, hint: u64) -> Self {
        Actor {
            node,
            epoch,
            incarnation,
            hint,
        }
    }

    /// The `hint` field as encoded: the cluster id above bit 32, the hint code below.
    pub fn hint_code(self) -> u64 {
        self.hint
    }

    /// Whether this is a bulk loader's actor ([`crate::core::node::bulk`]): an ordinary actor of
    /// epoch 0, the epoch of [`crate::core::ring::View::joining`], under which no node owns a
    /// partition and so no node coordinates a write. A loader writes keys of any partition, has
    /// no older actors, and its dots reach a node only with the data they name.
    pub fn is_loader(self) -> bool {
        self.epoch == 0 && self.hinted_partition().is_none()
    }

    /// Hash of the address of the node this actor belongs to.
    pub fn node(self) -> u32 {
        self.node
    }

    /// Epoch of the view under which this actor coordinated its writes.
    pub fn epoch(self) -> Epoch {
        self.epoch
    }

    /// Incarnation number within the node and epoch.
    pub fn incarnation(self) -> u32 {
        self.incarnation
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}.{}.{:x}",
            self.node,
            super::ring::epoch_number(self.epoch),
            self.incarnation
        )?;
        if self.cluster() != 0 {
            write!(f, ".c{}", self.cluster())?;
        }
        match self.hinted_partition() {
            Some(p) => write!(f, ".h{p}"),
            None => Ok(()),
        }
    }
}

/// A single write event: the `counter`-th write coordinated by `actor`. Invariant: `counter >= 1`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: Actor,
    pub counter: u64,
}

impl Dot {
    pub fn new(actor: Actor, counter: u64) -> Self {
        Dot { actor, counter }
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}", self.actor, self.counter)
    }
}
