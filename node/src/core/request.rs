//! Client-facing requests and replies of the core.
//!
//! Drivers translate HTTP (native or compatibility API) into [`Request`]s and the core's
//! [`Reply`]s back. A reply always names the node that served it.

use super::clock::VersionVector;
use super::dot::Dot;
use super::dvv::{Version, VersionSet};
use super::ring::{NodeId, View};
use super::strong::{StrongCall, StrongOutcome};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest accepted content type of a value, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

/// Longest accepted time to live of a write, in seconds (10 years of 365 days).
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// Most version sets one [`Op::MergeBatch`] carries.
pub const MAX_MERGE_BATCH: usize = 10_000;

/// Driver-chosen id that pairs a [`Reply`] with its [`Request`]; unique per node while pending.
pub type ReqId = u64;

/// Id a node assigns to a request it sent to a peer; unique per sender while pending, across the
/// sender's restarts too (each incarnation counts from a random start).
pub type Rid = u64;

/// How many replicas must take part in a read (`r`) or acknowledge a write (`w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    /// Exactly this many (`1..=replication factor`).
    N(u8),
    /// A majority of the shard's replicas.
    Majority,
    /// Every replica of the shard.
    All,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::N(1)
    }
}

impl Quorum {
    /// Parses `1|2|…|quorum|all`.
    pub fn parse(s: &str) -> Option<Quorum> {
        match s {
            "quorum" => Some(Quorum::Majority),
            "all" => Some(Quorum::All),
            n => n.parse::<u8>().ok().filter(|&n| n >= 1).map(Quorum::N),
        }
    }

    /// Number of replicas required in a shard of `replicas` nodes, or `None` if more than exist.
    pub fn resolve(self, replicas: usize) -> Option<usize> {
        match self {
            Quorum::N(n) if usize::from(n) <= replicas => Some(usize::from(n)),
            Quorum::N(_) => None,
            Quorum::Majority => Some(replicas / 2 + 1),
            Quorum::All => Some(replicas),
        }
    }
}

/// An operation a client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: Bytes,
        context: VersionVector,
        r: Quorum,
    },
    /// A write; `value: None` is a delete (a tombstone). It supersedes the versions `context`
    /// covers — except a delete with an empty context (a *blind delete*), which supersedes
    /// what the coordinating replica holds of the key when it executes it (docs/guarantees.md, blind deletes).
    Put {
        key: Bytes,
        value: Option<Bytes>,
        /// The value's media type (see [`Version::content_type`]); ignored for a delete.
        content_type: Option<Bytes>,
        context: VersionVector,
        w: Quorum,
        /// Time to live in seconds (`1..=MAX_TTL_SECS`): the value expires that long after the
        /// coordinator's clock at execution (docs/ttl.md). `None`: never expires. Not for deletes.
        ttl: Option<u64>,
    },
    /// Keys in `[start, end)` after `after`, in key order, across all shards. With `full`,
    /// every entry carries its whole version set and tombstone-only keys are listed too
    /// (backups); otherwise only keys with a live value, with their values.
    List {
        start: Option<Bytes>,
        end: Option<Bytes>,
        after: Option<Bytes>,
        limit: u32,
        full: bool,
    },
    /// Join `set` into the key's version set as is (never re-stamped: the DVV merge anti-entropy
    /// uses), at a replica of the key, which repairs the shard's other replicas (restores).
    Merge { key: Bytes, set: VersionSet },
    /// [`Op::Merge`] for many keys of ONE shard in one request (a restore page's part of that
    /// shard): every set is joined into its key exactly as a lone merge would join it, the
    /// changes are stored in the same turn (one storage batch) and repaired to the shard's
    /// other replicas batched per peer. At most [`MAX_MERGE_BATCH`] sets.
    MergeBatch { sets: Vec<(Bytes, VersionSet)> },
    /// Number of live keys held by a shard (the compatibility API's key counts).
    KeyCount { shard: u32 },
    /// Run one anti-entropy exchange with `peer` now, when it shares this node's shard; when it
    /// is a node of a mesh upstream, one full sync of every partition this node owns against
    /// that upstream (docs/mesh.md, "Bootstrapping a cluster").
    AntiEntropy { peer: NodeId },
    /// Install a new view with these nodes (and replication factor, default unchanged); the
    /// partitions that change shard are handed off to their new replicas in the background.
    ChangeView {
        nodes: Vec<NodeId>,
        repl_factor: Option<usize>,
    },
    /// Add `node` to the view (no change if it is already a member).
    Join { node: NodeId },
    /// A linearizable operation on strong key `key` (a namespace of its own, see
    /// [`crate::core::strong`]), decided by CASPaxos at a replica of the key.
    Strong { key: Bytes, call: StrongCall },
}

impl Op {
    /// The causal context a read or write was issued with.
    pub fn context(&self) -> Option<&VersionVector> {
        match self {
            Op::Get { context, .. } | Op::Put { context, .. } => Some(context),
            _ => None,
        }
    }

    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Op::Get { key, .. }
            | Op::Put { key, .. }
            | Op::Merge { key, .. }
            | Op::Strong { key, .. } => Some(key),
            Op::MergeBatch { sets } => sets.first().map(|(k, _)| k),
            _ => None,
        }
    }
}

/// A request as the driver hands it to the core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: ReqId,
    pub op: Op,
}

/// One listed key and its live values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: Bytes,
    pub values: Vec<Bytes>,
    /// The key's whole version set, for a `full` listing.
    pub set: Option<VersionSet>,
}

/// A successful outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The key's current versions (values and tombstones; empty if never written).
    Read {
        versions: Vec<Version>,
        context: VersionVector,
    },
    /// The write was applied as `dot`; `context` covers it. `replaced`: the key held a live
    /// value at the coordinator just before (the compatibility API's "Updated" vs "Added").
    Written {
        dot: Dot,
        context: VersionVector,
        replaced: bool,
        /// For a blind delete: the coordinator's context of the key, which the delete
        /// superseded (its effective context). `None` for every other write.
        coordinator_context: Option<VersionVector>,
    },
    Listed {
        entries: Vec<ListEntry>,
        /// Cursor for the next page (`after=`), when more keys may follow.
        next: Option<Bytes>,
    },
    /// Live keys of the shard's partitions at the replica that answered. `settled`: that replica
    /// has received a complete handoff of every partition it gained in a view change.
    /// `context` names the writes to those partitions the replica holds (the join of the
    /// contexts a read of a key of each would return): the writes the count reflects.
    KeyCount {
        shard: u32,
        count: u64,
        settled: bool,
        context: VersionVector,
    },
    /// The view now installed at the node that made the change.
    ViewChanged { view: View },
    /// The decided outcome of an [`Op::Strong`] (a failed precondition included).
    Strong(StrongOutcome),
    /// A [`Op::Merge`] was applied at `served_by`; `changed`: the key's version set grew.
    Merged { changed: bool },
    /// A [`Op::MergeBatch`] was applied at `served_by`; `changed` of its keys' sets grew.
    MergedBatch { changed: u64 },
    /// An anti-entropy exchange finished.
    AntiEntropy {
        peer: NodeId,
        keys_repaired: u64,
        bytes: u64,
        /// False when the per-round key cap left differences for a later round.
        complete: bool,
    },
}

/// Why a request failed. `BadRequest` (400) and `Conflict` (409) are the caller's to fix; the
/// others are 503s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReqError {
    #[error("{0}")]
    BadRequest(String),
    /// No reachable replica covered the request's causal context within `causal_wait`.
    #[error("unable to satisfy request")]
    Unsatisfiable,
    /// Not enough replicas answered in time. For a write this is indeterminate: it may apply.
    #[error("{0}")]
    Unavailable(String),
    /// The request conflicts with the state of the key or the cluster (a write that would leave
    /// the key with more than `max_siblings` versions; joining a node that serves a cluster of
    /// its own); nothing applied, and retrying it unchanged fails again (409).
    #[error("{0}")]
    Conflict(String),
    /// The replica's storage is full or failing: the write was refused, or (when the failure
    /// came after it was applied in memory) is indeterminate and may still become durable.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The write would make the key's siblings exceed `max_sibling_bytes`; nothing was written.
    #[error("{0}")]
    TooLarge(String),
}

/// The core's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub id: ReqId,
    /// The node that executed the request (differs from the receiving node when proxied).
    pub served_by: NodeId,
    pub result: Result<Response, ReqError>,
}
