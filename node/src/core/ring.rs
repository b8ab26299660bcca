//! Placement: keys to partitions, partitions to shards, shards to nodes.
//!
//! - A key's partition is `xxh3_64(key) % partitions` (xxHash3, 64-bit, seed 0: stable across
//!   platforms and releases).
//! - Shards are formed as in the key-value-store seed: the view's nodes in order, in groups of
//!   `repl_factor`; `shards = max(1, nodes / repl_factor)` and any remainder joins the last shard.
//! - Partition `p` belongs to shard `p % shards`.
//!
//! Everything here is a pure function of the [`View`], so every node that holds the same view
//! places every key identically.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// A node's address as peers and clients reach it, e.g. `"127.0.0.1:8080"`.
pub type NodeId = String;
/// Index of a shard within a view.
pub type ShardId = u32;

/// Default number of partitions in a cluster.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// 32-bit hash of a node address; the high half of every [`Actor`] of that node.
pub fn node_hash(node: &str) -> u32 {
    (xxh3_64(node.as_bytes()) >> 32) as u32
}

/// Partition of a key among `partitions`.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (xxh3_64(key) % u64::from(partitions)) as u32
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
    #[error("partitions must be at least 1")]
    ZeroPartitions,
}

/// Cluster membership and shape. Invariants (checked by [`View::new`]): nodes non-empty, unique,
/// with distinct [`node_hash`]es; `repl_factor >= 1`; `partitions >= 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub epoch: u64,
    pub nodes: Vec<NodeId>,
    pub repl_factor: usize,
    pub partitions: u32,
}

impl View {
    pub fn new(nodes: Vec<NodeId>, repl_factor: usize) -> Result<View, ViewError> {
        View::with_partitions(nodes, repl_factor, DEFAULT_PARTITIONS)
    }

    pub fn with_partitions(
        nodes: Vec<NodeId>,
        repl_factor: usize,
        partitions: u32,
    ) -> Result<View, ViewError> {
        if nodes.is_empty() {
            return Err(ViewError::Empty);
        }
        if repl_factor == 0 {
            return Err(ViewError::ZeroReplication);
        }
        if partitions == 0 {
            return Err(ViewError::ZeroPartitions);
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
        Ok(View {
            epoch: 1,
            nodes,
            repl_factor,
            partitions,
        })
    }

    pub fn shard_count(&self) -> u32 {
        (self.nodes.len() / self.repl_factor).max(1) as u32
    }

    /// The replicas of `shard`, in view order.
    pub fn shard_members(&self, shard: ShardId) -> &[NodeId] {
        let s = shard as usize;
        let start = s * self.repl_factor;
        let end = if shard + 1 == self.shard_count() {
            self.nodes.len()
        } else {
            start + self.repl_factor
        };
        &self.nodes[start.min(self.nodes.len())..end]
    }

    /// The shard `node` is a replica of, if it is in the view.
    pub fn shard_of_node(&self, node: &str) -> Option<ShardId> {
        let i = self.nodes.iter().position(|n| n == node)?;
        Some(((i / self.repl_factor) as u32).min(self.shard_count() - 1))
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key, self.partitions)
    }

    pub fn shard_of_partition(&self, partition: u32) -> ShardId {
        partition % self.shard_count()
    }

    pub fn shard_of_key(&self, key: &[u8]) -> ShardId {
        self.shard_of_partition(self.partition_of(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

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
    fn rejects_bad_views() {
        assert_eq!(View::new(vec![], 1), Err(ViewError::Empty));
        assert_eq!(View::new(nodes(2), 0), Err(ViewError::ZeroReplication));
        let mut n = nodes(2);
        n.push(n[0].clone());
        assert!(matches!(View::new(n, 1), Err(ViewError::Duplicate(_))));
    }
}
