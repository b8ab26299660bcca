//! Messages between nodes. Every message is idempotent to apply: duplicates and reordering
//! change nothing (replication merges version sets; acks and replies are matched by id and
//! ignored when no longer pending).

use super::clock::NodeClock;
use super::dot::Dot;
use super::dvv::VersionSet;
use super::request::{Op, ReqError, Response};
use super::ring::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Id a node assigns to a request it sent to a peer; unique per sender while pending.
pub type Rid = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Execute `op` for a proxy; answer with `ForwardReply`.
    Forward {
        rid: Rid,
        op: Op,
    },
    ForwardReply {
        rid: Rid,
        served_by: NodeId,
        result: Result<Response, ReqError>,
    },
    /// Merge `set` into `key` and record `dots` as applied; answer with `ReplicateAck`.
    /// `set` reflects every dot in `dots` (it is the key's state at or after those writes).
    Replicate {
        key: Bytes,
        set: VersionSet,
        dots: Vec<Dot>,
    },
    ReplicateAck {
        key: Bytes,
        dots: Vec<Dot>,
    },
    /// Send back your version set of `key` (reads with `r > 1`).
    Fetch {
        rid: Rid,
        key: Bytes,
    },
    FetchReply {
        rid: Rid,
        set: VersionSet,
    },
    /// Merge `set` into `key` (read repair); no answer.
    Repair {
        key: Bytes,
        set: VersionSet,
    },
    /// List up to `limit` live keys in `[start, end)` after `after` from your shard.
    ListPart {
        rid: Rid,
        start: Option<Bytes>,
        end: Option<Bytes>,
        after: Option<Bytes>,
        limit: u32,
    },
    ListPartReply {
        rid: Rid,
        entries: Vec<(Bytes, VersionSet)>,
        /// True when the replica stopped at `limit` and more keys may follow.
        more: bool,
    },
    /// Drop `key` if all its versions are tombstones among `dots`: every replica acknowledged
    /// them and the grace period passed.
    Reap {
        key: Bytes,
        dots: Vec<Dot>,
    },
    /// Anti-entropy, step 1 (initiator): the roots of the shard's partition trees.
    /// Also the initiator's clock as of those roots, adopted by a responder that is in sync.
    AaeRoots {
        rid: Rid,
        roots: Vec<(u32, u64)>,
        clock: NodeClock,
    },
    /// Step 2 (responder): branch hashes of the partitions whose roots differ (none: in sync),
    /// and the responder's clock as of the trees it compared.
    AaeBranches {
        rid: Rid,
        clock: NodeClock,
        branches: Vec<(u32, Vec<u64>)>,
    },
    /// Step 3 (initiator): which branches differ.
    AaeSegmentsReq {
        rid: Rid,
        want: Vec<(u32, Vec<u8>)>,
    },
    /// Step 4 (responder): the segment hashes under those branches.
    AaeSegments {
        rid: Rid,
        segments: Vec<(u32, u8, Vec<u64>)>,
    },
    /// Step 5 (initiator): its key digests in the differing segments.
    AaeKeys {
        rid: Rid,
        segments: Vec<(u32, u16)>,
        keys: Vec<(Bytes, u64)>,
    },
    /// Step 6 (responder): its version sets of the keys that differ, and the keys it lacks.
    /// `truncated` when the per-round key cap held some back.
    AaeDiff {
        rid: Rid,
        sets: Vec<(Bytes, VersionSet)>,
        want: Vec<Bytes>,
        truncated: bool,
    },
    /// Step 7 (initiator): the wanted sets, and — when the exchange covered every difference —
    /// the initiator's clock as of step 1, which the responder may now adopt.
    AaeFinish {
        rid: Rid,
        sets: Vec<(Bytes, VersionSet)>,
        clock: Option<NodeClock>,
    },
    /// Liveness probe; answered with `Pong`.
    Ping,
    Pong,
}

impl PeerMsg {
    /// Short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMsg::Forward { .. } => "forward",
            PeerMsg::ForwardReply { .. } => "forward_reply",
            PeerMsg::Replicate { .. } => "replicate",
            PeerMsg::ReplicateAck { .. } => "replicate_ack",
            PeerMsg::Fetch { .. } => "fetch",
            PeerMsg::FetchReply { .. } => "fetch_reply",
            PeerMsg::Repair { .. } => "repair",
            PeerMsg::ListPart { .. } => "list_part",
            PeerMsg::ListPartReply { .. } => "list_part_reply",
            PeerMsg::Reap { .. } => "reap",
            PeerMsg::AaeRoots { .. } => "aae_roots",
            PeerMsg::AaeBranches { .. } => "aae_branches",
            PeerMsg::AaeSegmentsReq { .. } => "aae_segments_req",
            PeerMsg::AaeSegments { .. } => "aae_segments",
            PeerMsg::AaeKeys { .. } => "aae_keys",
            PeerMsg::AaeDiff { .. } => "aae_diff",
            PeerMsg::AaeFinish { .. } => "aae_finish",
            PeerMsg::Ping => "ping",
            PeerMsg::Pong => "pong",
        }
    }
}
