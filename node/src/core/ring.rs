//! Placement: keys to partitions, partitions to shards, shards to nodes.
//!
//! - A key's partition is `xxh3_64(key) % partitions` (xxHash3, 64-bit, seed 0: stable across
//!   platforms and releases). The partition count is fixed for the life of a cluster.
//! - Shards are formed as in the key-value-store seed: the view's nodes in order, in groups of
//!   `repl_factor`; `shards = max(1, nodes / repl_factor)` and any remainder joins the last shard.
//! - Each view carries its partition → shard `assignment`. A cluster's first view assigns
//!   partition `p` to shard `p % shards`; every later view is derived from the one before by
//!   [`View::change`], which moves as few partitions as balance allows (about `1/S` of them when
//!   a shard is added).
//! - Views are ordered by [`Epoch`]; the newest view a node has seen is the one it routes by.
//!
//! Everything here is a pure function of the [`View`], so every node that holds the same view
//! places every key identically.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// A node's address as peers and clients reach it, e.g. `"127.0.0.1:8080"`.
pub type NodeId = String;
/// Index of a shard within a view.
pub type ShardId = u32;
/// Identity and order of a view: `number << 32 | proposer`, where `number` counts view changes
/// and `proposer` is the address hash of the node that made the change. A cluster's first view
/// has number 1 and, instead of a proposer, a hash of its contents: every node started with the
/// same initial view agrees on it, and two clusters' first views differ. Two views proposed
/// concurrently get distinct epochs; the higher one wins everywhere.
pub type Epoch = u64;

/// Most partitions a cluster may have (hint actors encode a partition in 20 bits).
pub const MAX_PARTITIONS: u32 = (1 << 20) - 2;

/// Default number of partitions in a cluster.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// The view-change count of an epoch (what operators see as "epoch N").
pub fn epoch_number(epoch: Epoch) -> u64 {
    epoch >> 32
}

/// The epoch of view change number `number` proposed by `proposer`, if `number` fits in the
/// 32 bits of an epoch's number (checked: an epoch never wraps).
pub fn next_epoch(number: u64, proposer: &str) -> Result<Epoch, ViewError> {
    if number > u64::from(u32::MAX) {
        return Err(ViewError::EpochsExhausted);
    }
    Ok((number << 32) | u64::from(node_hash(proposer)))
}

/// 32-bit hash of a node address; identifies the node in every [`crate::core::Actor`].
pub fn node_hash(node: &str) -> u32 {
    (xxh3_64(node.as_bytes()) >> 32) as u32
}

/// Partition of a key among `partitions` (a count of 0, never valid in a view, acts as 1).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

/// Why a view is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("the view lists no nodes")]
    Empty,
    #[error("replication factor must be at least 1")]
    ZeroReplication,
    #[error("node {0} appears twice in the view")]
    Duplicate(String),
    #[error("nodes {0} and {1} have colliding address hashes; rename one")]
    HashCollision(String, String),
    #[error("partitions must be between 1 and {MAX_PARTITIONS}")]
    BadPartitions,
    #[error("the epoch number is at its maximum; no later view can be made")]
    EpochsExhausted,
    #[error("the assignment does not map each of the view's partitions to one of its shards")]
    BadAssignment,
}

/// Cluster membership and shape. Invariants (checked by [`View::new`] and [`View::change`]):
/// nodes non-empty, unique, with distinct [`node_hash`]es; `repl_factor >= 1`; `partitions >= 1`;
/// `assignment` maps every partition to a shard below `shard_count()`. The only exception is
/// [`View::joining`], the empty view of a node that has not joined a cluster yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub epoch: Epoch,
    pub nodes: Vec<NodeId>,
    pub repl_factor: usize,
    pub partitions: u32,
    /// Shard of each partition.
    pub assignment: Vec<ShardId>,
}

fn check_nodes(nodes: &[NodeId], repl_factor: usize) -> Result<(), ViewError> {
    if nodes.is_empty() {
        return Err(ViewError::Empty);
    }
    if repl_factor == 0 {
        return Err(ViewError::ZeroReplication);
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[..i] {
            if a == b {
                return Err(ViewError::Duplicate(a.clone()));
            }
            if node_hash(a) == node_hash(b) {
                return Err(ViewError::HashCollision(b.clone(), a.clone()));
            }
        }
    }
    Ok(())
}

/// Shards of a view; a replication factor of 0 (never valid in a view) acts as 1.
fn shards_for(nodes: usize, repl_factor: usize) -> u32 {
    (nodes / repl_factor.max(1)).max(1) as u32
}

impl View {
    pub fn new(nodes: Vec<NodeId>, repl_factor: usize) -> Result<View, ViewError> {
        View::with_partitions(nodes, repl_factor, DEFAULT_PARTITIONS)
    }

    /// A cluster's first view: partition `p` on shard `p % shards`.
    pub fn with_partitions(
        nodes: Vec<NodeId>,
        repl_factor: usize,
        partitions: u32,
    ) -> Result<View, ViewError> {
        check_nodes(&nodes, repl_factor)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(ViewError::BadPartitions);
        }
        let shards = shards_for(nodes.len(), repl_factor);
        let contents = format!("{}|{repl_factor}|{partitions}", nodes.join(","));
        Ok(View {
            epoch: (1 << 32) | (xxh3_64(contents.as_bytes()) >> 32),
            assignment: (0..partitions).map(|p| p % shards).collect(),
            nodes,
            repl_factor,
            partitions,
        })
    }

    /// Checks the invariants of a non-joining view received from elsewhere (a peer, storage):
    /// what [`View::new`] and [`View::change`] guarantee for views made here.
    pub fn check(&self) -> Result<(), ViewError> {
        check_nodes(&self.nodes, self.repl_factor)?;
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return Err(ViewError::BadPartitions);
        }
        let shards = self.shard_count();
        if self.assignment.len() != self.partitions as usize
            || self.assignment.iter().any(|s| *s >= shards)
        {
            return Err(ViewError::BadAssignment);
        }
        Ok(())
    }

    /// The view of a node that has not joined a cluster yet: epoch 0, no nodes, owns nothing.
    pub fn joining() -> View {
        View {
            epoch: 0,
            nodes: Vec::new(),
            repl_factor: 1,
            partitions: DEFAULT_PARTITIONS,
            assignment: Vec::new(),
        }
    }

    /// True for [`View::joining`].
    pub fn is_joining(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The next view: `nodes` in `repl_factor`-sized shards, proposed by `proposer`. Partitions
    /// stay on their shard index where balance allows; each shard ends with `partitions / shards`
    /// or one more, and only the excess of over-full or removed shards moves.
    pub fn change(
        &self,
        nodes: Vec<NodeId>,
        repl_factor: usize,
        proposer: &str,
    ) -> Result<View, ViewError> {
        check_nodes(&nodes, repl_factor)?;
        let shards = shards_for(nodes.len(), repl_factor) as usize;
        let p_count = self.partitions as usize;
        let mut held: Vec<Vec<u32>> = vec![Vec::new(); shards];
        let mut loose = Vec::new();
        for (p, s) in self.assignment.iter().enumerate() {
            match held.get_mut(*s as usize) {
                Some(h) => h.push(p as u32),
                None => loose.push(p as u32),
            }
        }
        // The fullest shards get the `partitions % shards` larger quotas, so fewer partitions move.
        let mut order: Vec<usize> = (0..shards).collect();
        order.sort_by_key(|s| (std::cmp::Reverse(held[*s].len()), *s));
        let mut quota = vec![p_count / shards; shards];
        for s in order.iter().take(p_count % shards) {
            quota[*s] += 1;
        }
        for (s, h) in held.iter_mut().enumerate() {
            while h.len() > quota[s] {
                loose.push(h.pop().expect("longer than its quota"));
            }
        }
        loose.sort_unstable();
        let mut assignment = self.assignment.clone();
        if assignment.len() != p_count {
            assignment = vec![0; p_count];
        }
        let mut s = 0;
        for p in loose {
            while held[s].len() >= quota[s] {
                s += 1;
            }
            held[s].push(p);
            assignment[p as usize] = s as ShardId;
        }
        Ok(View {
            epoch: next_epoch(epoch_number(self.epoch) + 1, proposer)?,
            nodes,
            repl_factor,
            partitions: self.partitions,
            assignment,
        })
    }

    pub fn shard_count(&self) -> u32 {
        shards_for(self.nodes.len(), self.repl_factor)
    }

    /// The replicas of `shard`, in view order.
    pub fn shard_members(&self, shard: ShardId) -> &[NodeId] {
        let s = shard as usize;
        let start = s.saturating_mul(self.repl_factor);
        let end = if shard + 1 == self.shard_count() {
            self.nodes.len()
        } else {
            start.saturating_add(self.repl_factor)
        };
        &self.nodes[start.min(self.nodes.len())..end.min(self.nodes.len())]
    }

    /// The shard `node` is a replica of, if it is in the view.
    pub fn shard_of_node(&self, node: &str) -> Option<ShardId> {
        let i = self.nodes.iter().position(|n| n == node)?;
        Some(((i / self.repl_factor.max(1)) as u32).min(self.shard_count() - 1))
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key, self.partitions)
    }

    pub fn shard_of_partition(&self, partition: u32) -> ShardId {
        self.assignment
            .get(partition as usize)
            .copied()
            .unwrap_or(partition % self.shard_count())
    }

    pub fn shard_of_key(&self, key: &[u8]) -> ShardId {
        self.shard_of_partition(self.partition_of(key))
    }

    /// The replicas of `partition` (empty in a joining view).
    pub fn owners(&self, partition: u32) -> &[NodeId] {
        if self.is_joining() {
            return &[];
        }
        self.shard_members(self.shard_of_partition(partition))
    }

    /// The partitions of `shard`, ascending.
    pub fn partitions_of(&self, shard: ShardId) -> Vec<u32> {
        if self.is_joining() {
            return Vec::new();
        }
        (0..self.partitions)
            .filter(|p| self.shard_of_partition(*p) == shard)
            .collect()
    }

    /// True when `node` is a replica of `partition` in this view.
    pub fn owns(&self, node: &str, partition: u32) -> bool {
        !self.is_joining() && self.shard_of_node(node) == Some(self.shard_of_partition(partition))
    }
}

/// `n` distinct node addresses, for tests.
#[cfg(test)]
pub(crate) fn nodes(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_view_order() {
        let v = View::new(nodes(6), 3).unwrap();
        assert_eq!(v.shard_count(), 2);
        assert_eq!(v.shard_members(0), &nodes(6)[..3]);
        assert_eq!(v.shard_members(1), &nodes(6)[3..]);
        assert_eq!(v.shard_of_node("10.0.0.4:8080"), Some(1));
        let v = View::new(nodes(5), 2).unwrap();
        assert_eq!(
            v.shard_members(1).len(),
            3,
            "remainder joins the last shard"
        );
        assert_eq!(v.shard_of_node("10.0.0.4:8080"), Some(1));
        let v = View::new(nodes(2), 3).unwrap();
        assert_eq!(v.shard_count(), 1);
        assert_eq!(v.shard_members(0).len(), 2);
    }

    #[test]
    fn placement_is_stable() {
        // Pinned values (cross-checked with Python's xxhash): changing the hash would silently
        // move every key of every existing cluster.
        assert_eq!(partition_of(b"hello", 64), 61);
        assert_eq!(partition_of(b"user:42", 64), 42);
        assert_eq!(node_hash("10.0.0.1:7000"), 1_829_922_558);
        let v = View::new(nodes(6), 3).unwrap();
        let spread: std::collections::BTreeSet<_> = (0..200)
            .map(|i| v.shard_of_key(format!("k{i}").as_bytes()))
            .collect();
        assert_eq!(spread.len(), 2, "keys spread over both shards");
    }

    #[test]
    fn view_change_moves_few_partitions() {
        let v = View::new(nodes(6), 3).unwrap();
        let w = v.change(nodes(9), 3, "10.0.0.0:8080").unwrap();
        assert!(w.epoch > v.epoch);
        assert_eq!(epoch_number(w.epoch), 2);
        let moved = (0..64).filter(|p| v.shard_of_partition(*p) != w.shard_of_partition(*p));
        assert_eq!(moved.count(), 21, "only the new shard's share moves");
        let mut load = [0; 3];
        for p in 0..64 {
            load[w.shard_of_partition(p) as usize] += 1;
        }
        assert_eq!(load, [22, 21, 21]);
        let back = w.change(nodes(6), 3, "10.0.0.1:8080").unwrap();
        let load = (0..64).filter(|p| back.shard_of_partition(*p) == 0).count();
        assert_eq!(
            load, 32,
            "a removed shard's partitions spread over the rest"
        );
        assert!((0..64).all(|p| back.shard_of_partition(p) < 2));
        let other = v.change(nodes(9), 3, "10.0.0.1:8080").unwrap();
        assert_ne!(
            other.epoch, w.epoch,
            "concurrent proposals get distinct epochs"
        );
        assert!(View::joining().owners(3).is_empty());
    }

    #[test]
    fn rejects_bad_views() {
        assert_eq!(View::new(vec![], 1), Err(ViewError::Empty));
        assert_eq!(View::new(nodes(2), 0), Err(ViewError::ZeroReplication));
        let mut n = nodes(2);
        n.push(n[0].clone());
        assert!(matches!(View::new(n, 1), Err(ViewError::Duplicate(_))));
    }
}
