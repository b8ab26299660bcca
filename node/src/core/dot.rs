//! Actors and dots: the identities of writes.
//!
//! An [`Actor`] is one incarnation of one node within one view epoch: the node's address hash
//! ([`crate::core::ring::node_hash`]), the [`Epoch`] of the view it coordinated writes under,
//! and a random incarnation. A node takes a fresh actor whenever it installs a new view, and
//! whenever it loses its disk or cannot prove its counter survived a crash, so a dot is never
//! issued twice (SPEC G7) and every dot of an actor is a write to a partition the actor's node
//! owned in that one epoch's view. A [`Dot`] `(actor, counter)` names exactly one write; counters
//! of one actor start at 1 and are issued without gaps by that actor.

use super::ring::Epoch;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One incarnation of one node in one view epoch. Invariants: `node` is the hash of the node's
/// address; the node was a replica in the view of `epoch` when it issued the actor's dots.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    node: u32,
    epoch: Epoch,
    incarnation: u32,
}

impl Actor {
    /// The actor of incarnation `incarnation` of the node whose address hashes to `node`, issuing
    /// writes under the view of `epoch`.
    pub fn new(node: u32, epoch: Epoch, incarnation: u32) -> Self {
        Actor {
            node,
            epoch,
            incarnation,
        }
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
        )
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
