//! Actors and dots: the identities of writes.
//!
//! An [`Actor`] is one incarnation of one node: the high 32 bits are the node's address hash
//! ([`crate::core::ring::node_hash`]), the low 32 bits its incarnation. A node that loses its disk,
//! or cannot prove its counter survived a crash, takes a fresh incarnation, so a dot is never
//! issued twice (SPEC G7). A [`Dot`] `(actor, counter)` names exactly one write; counters of one
//! actor start at 1 and are issued without gaps by that actor.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One incarnation of one node. Invariant: `node()` is the hash of the node's address in the view.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor(pub u64);

impl Actor {
    /// The actor of incarnation `incarnation` of the node whose address hashes to `node`.
    pub fn new(node: u32, incarnation: u32) -> Self {
        Actor((u64::from(node) << 32) | u64::from(incarnation))
    }

    /// Hash of the address of the node this actor belongs to.
    pub fn node(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Incarnation number within the node.
    pub fn incarnation(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}.{:x}", self.node(), self.incarnation())
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
