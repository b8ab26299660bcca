//! Messages between nodes. Every message is idempotent to apply: duplicates and reordering
//! change nothing (replication merges version sets; acks and replies are matched by id and
//! ignored when no longer pending).

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
            PeerMsg::Ping => "ping",
            PeerMsg::Pong => "pong",
        }
    }
}
