//! Messages between nodes. Every message is idempotent to apply: duplicates and reordering
//! change nothing (replication merges version sets; acks and replies are matched by id and
//! ignored when no longer pending).

use super::aae::Claims;
use super::clock::{PartitionClock, VersionVector};
use super::dot::{Actor, Dot};
use super::dvv::VersionSet;
use super::node::mesh::Layout;
use super::request::{Op, ReqError, Response};
use super::ring::{Epoch, NodeId, View};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::request::Rid;
use super::strong::acceptor::Record;
use super::strong::{Ballot, StrongState};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Execute `op` for a proxy routing by the view of `epoch`; answer with `ForwardReply`, or
    /// `NotReplica` when the key is not this node's to serve.
    Forward {
        rid: Rid,
        op: Op,
        epoch: Epoch,
    },
    /// The answer to a `Forward` this node cannot serve: it is not a replica of the key in its
    /// view of `epoch`. Nothing was executed, so the proxy may route the request again.
    NotReplica {
        rid: Rid,
        epoch: Epoch,
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
    /// [`PeerMsg::Repair`] of many keys at once (a restored batch); no answer.
    RepairBatch {
        sets: Vec<(Bytes, VersionSet)>,
    },
    /// List up to `limit` live keys in `[start, end)` after `after` from your shard (with
    /// `full`, tombstone-only keys too).
    ListPart {
        rid: Rid,
        start: Option<Bytes>,
        end: Option<Bytes>,
        after: Option<Bytes>,
        limit: u32,
        full: bool,
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
        epoch: Epoch,
        roots: Vec<(u32, u64)>,
        clock: Claims,
    },
    /// Step 2 (responder): branch hashes of the partitions whose roots differ (none: in sync),
    /// and the responder's clock as of the trees it compared.
    AaeBranches {
        rid: Rid,
        clock: Claims,
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
        clock: Option<Claims>,
    },
    /// Liveness probe with the sender's view epoch and number of known views; answered with
    /// `Pong`. A node that sees an older epoch, or fewer views, than its own answers with
    /// `Views` too, so every node ends up knowing every view (older views decide which
    /// partitions an old actor's writes concern).
    Ping {
        epoch: Epoch,
        views: u32,
    },
    Pong {
        epoch: Epoch,
        views: u32,
    },
    /// The floor check of `actor`, a node's new actor continuing its lineage: for each of
    /// `partitions`, does the receiver hold every dot of the lineage's older actors to it — the
    /// floor at `since` (none: the lineage began later) and the dots `(a, 1..=final)` of each of
    /// `olds`, the lineage's actors of epochs from `since` below `actor`'s with their final
    /// counters? Answered with `FloorAck` naming the partitions it verified (and now floors).
    FloorCheck {
        actor: Actor,
        since: Option<Epoch>,
        olds: Vec<(Actor, u64)>,
        partitions: Vec<u32>,
    },
    FloorAck {
        actor: Actor,
        partitions: Vec<u32>,
    },
    /// Views the receiver may lack, oldest first.
    Views {
        views: Vec<View>,
    },
    /// A node outside the view asks to be added to it; answered with `Views`.
    Join {
        node: NodeId,
    },
    /// A member about to admit the receiver asks whether it is a Causeway node that may join:
    /// answered with `JoinAnswer`. Only an answer admits a node, so an address nothing listens
    /// on never becomes a replica.
    JoinProbe {
        rid: Rid,
    },
    /// The view the receiver runs with (a joining view lists no nodes: it is in no cluster).
    JoinAnswer {
        rid: Rid,
        epoch: Epoch,
        nodes: Vec<NodeId>,
    },
    /// Part of a partition the sender no longer owns, for one of its replicas in the sender's
    /// view of `epoch`. Batch `seq` of stream `stream`; the first batch carries the sender's
    /// claims on the partition taken before it read any key, so every write they name is
    /// reflected in the stream. Answered with `HandoffAck` once the batch is durable.
    HandoffBatch {
        partition: u32,
        epoch: Epoch,
        stream: u64,
        seq: u32,
        clock: Option<PartitionClock>,
        sets: Vec<(Bytes, VersionSet)>,
        last: bool,
    },
    /// Batch `seq` of `stream` is durable at the receiver (`ok`), or the receiver cannot take the
    /// stream (not a replica of the partition in its view, or it lost the stream's start) and the
    /// sender must start over later.
    HandoffAck {
        partition: u32,
        stream: u64,
        seq: u32,
        ok: bool,
    },
    /// CASPaxos phase 1 for strong key `key`: promise `ballot` and report your accepted state.
    /// Answered with `StrongPromise` once the promise is durable; a node that may not vote for
    /// the key (see `core::strong`) does not answer.
    StrongPrepare {
        rid: Rid,
        key: Bytes,
        /// The configuration of the key's partition the proposer addresses (its first epoch,
        /// see `core::strong::handoff`); only its acceptors answer.
        config: Epoch,
        ballot: Ballot,
    },
    /// `Ok`: promised, with the accepted state (if any) and its ballot; `Err`: a higher ballot
    /// was promised. `acceptor` is the answering acceptor's identity.
    StrongPromise {
        rid: Rid,
        ballot: Ballot,
        acceptor: u64,
        result: Result<Option<(Ballot, StrongState)>, Ballot>,
    },
    /// CASPaxos phase 2: accept `state` at `ballot`; answered with `StrongAccepted` once durable.
    StrongAccept {
        rid: Rid,
        key: Bytes,
        config: Epoch,
        ballot: Ballot,
        state: StrongState,
    },
    StrongAccepted {
        rid: Rid,
        ballot: Ballot,
        acceptor: u64,
        result: Result<(), Ballot>,
    },
    /// A node with a new acceptor identity asks whether the receiver knows it under another
    /// one (then its disk was wiped and it must not vote). Answered with `StrongHelloReply`.
    StrongHello {
        acceptor: u64,
    },
    /// The identity the receiver first recorded for the sender, if any.
    StrongHelloReply {
        acceptor: u64,
        known: Option<u64>,
    },
    /// A replica of `partition`'s configuration `new` asks a member of its predecessor `old` to
    /// stop voting in `old` and hand over its acceptor records of the partition. Answered with
    /// `StrongSealed` once the seal is durable; a node that may not hand over does not answer.
    StrongSeal {
        partition: u32,
        old: Epoch,
        new: Epoch,
    },
    /// Every acceptor record of `partition` the sender holds, by key.
    StrongSealed {
        partition: u32,
        new: Epoch,
        acceptor: u64,
        records: Vec<(Bytes, Record)>,
    },
    /// Mesh (docs/mesh.md; `core/node/mesh.rs`), downstream to an upstream cluster's node: what
    /// is your cluster's layout? Answered with `MeshLayout`.
    MeshLayoutReq {
        rid: Rid,
    },
    MeshLayout {
        rid: Rid,
        layout: Layout,
    },
    /// Feed the sender, for a lease, every key of `partitions` (those the receiver owns) that
    /// the receiver stores.
    MeshSubscribe {
        partitions: Vec<u32>,
    },
    /// Real-time feed: current version sets of keys the sender stored.
    MeshPush {
        sets: Vec<(Bytes, VersionSet)>,
    },
    /// Full sync step 1: the downstream's partition count and root of `partition`.
    MeshSyncRoot {
        rid: Rid,
        partitions: u32,
        partition: u32,
        root: u64,
    },
    /// Step 2: the upstream's vouched clock of the partition (taken before the comparison) and
    /// its branch hashes, `None` when the roots agree.
    MeshSyncBranches {
        rid: Rid,
        vouched: VersionVector,
        branches: Option<Vec<u64>>,
    },
    /// The upstream cannot sync this partition (not an owner, or partition counts differ).
    MeshSyncRefused {
        rid: Rid,
        reason: String,
    },
    /// Step 3: which branches differ.
    MeshSyncSegReq {
        rid: Rid,
        partition: u32,
        branches: Vec<u8>,
    },
    /// Step 4: the segment hashes under those branches.
    MeshSyncSegs {
        rid: Rid,
        segments: Vec<(u8, Vec<u64>)>,
    },
    /// Step 5: the downstream's key digests of the differing segments.
    MeshSyncKeys {
        rid: Rid,
        partition: u32,
        segments: Vec<u16>,
        keys: Vec<(Bytes, u64)>,
    },
    /// Step 6: the upstream's version sets of the keys that differ; `truncated` when the
    /// per-round cap held some back (the sync then does not complete).
    MeshSyncDiff {
        rid: Rid,
        sets: Vec<(Bytes, VersionSet)>,
        truncated: bool,
    },
}

/// Largest peer frame (the bincode body after the length prefix) accepted or sent.
pub const MAX_FRAME: usize = 256 << 20;

/// Decodes the body of one peer frame, `bincode((from, PeerMsg))`, allocating at most
/// [`MAX_FRAME`] bytes whatever lengths the bytes claim. Pure: the server's transport and the
/// fuzz tests run exactly this.
pub fn decode_frame(body: &[u8]) -> Result<(NodeId, PeerMsg), bincode::error::DecodeError> {
    let cfg = bincode::config::standard().with_limit::<{ MAX_FRAME }>();
    bincode::serde::decode_from_slice(body, cfg).map(|(m, _)| m)
}

/// Encodes the body of one peer frame as [`decode_frame`] reads it (the transport adds the
/// length prefix).
pub fn encode_frame(from: &str, msg: &PeerMsg) -> Vec<u8> {
    bincode::serde::encode_to_vec((from, msg), bincode::config::standard())
        .expect("in-memory encoding cannot fail")
}

impl PeerMsg {
    /// Whether this is one of the mesh messages (docs/mesh.md): the only messages a node of
    /// another cluster may send (see [`crate::core::Node::admits`]).
    pub fn is_mesh(&self) -> bool {
        matches!(
            self,
            PeerMsg::MeshLayoutReq { .. }
                | PeerMsg::MeshLayout { .. }
                | PeerMsg::MeshSubscribe { .. }
                | PeerMsg::MeshPush { .. }
                | PeerMsg::MeshSyncRoot { .. }
                | PeerMsg::MeshSyncBranches { .. }
                | PeerMsg::MeshSyncRefused { .. }
                | PeerMsg::MeshSyncSegReq { .. }
                | PeerMsg::MeshSyncSegs { .. }
                | PeerMsg::MeshSyncKeys { .. }
                | PeerMsg::MeshSyncDiff { .. }
        )
    }

    /// Short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMsg::Forward { .. } => "forward",
            PeerMsg::NotReplica { .. } => "not_replica",
            PeerMsg::ForwardReply { .. } => "forward_reply",
            PeerMsg::Replicate { .. } => "replicate",
            PeerMsg::ReplicateAck { .. } => "replicate_ack",
            PeerMsg::Fetch { .. } => "fetch",
            PeerMsg::FetchReply { .. } => "fetch_reply",
            PeerMsg::Repair { .. } => "repair",
            PeerMsg::RepairBatch { .. } => "repair_batch",
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
            PeerMsg::Ping { .. } => "ping",
            PeerMsg::Pong { .. } => "pong",
            PeerMsg::Views { .. } => "views",
            PeerMsg::FloorCheck { .. } => "floor_check",
            PeerMsg::FloorAck { .. } => "floor_ack",
            PeerMsg::Join { .. } => "join",
            PeerMsg::JoinProbe { .. } => "join_probe",
            PeerMsg::JoinAnswer { .. } => "join_answer",
            PeerMsg::HandoffBatch { .. } => "handoff_batch",
            PeerMsg::HandoffAck { .. } => "handoff_ack",
            PeerMsg::StrongPrepare { .. } => "strong_prepare",
            PeerMsg::StrongPromise { .. } => "strong_promise",
            PeerMsg::StrongAccept { .. } => "strong_accept",
            PeerMsg::StrongAccepted { .. } => "strong_accepted",
            PeerMsg::StrongHello { .. } => "strong_hello",
            PeerMsg::StrongHelloReply { .. } => "strong_hello_reply",
            PeerMsg::StrongSeal { .. } => "strong_seal",
            PeerMsg::StrongSealed { .. } => "strong_sealed",
            PeerMsg::MeshLayoutReq { .. } => "mesh_layout_req",
            PeerMsg::MeshLayout { .. } => "mesh_layout",
            PeerMsg::MeshSubscribe { .. } => "mesh_subscribe",
            PeerMsg::MeshPush { .. } => "mesh_push",
            PeerMsg::MeshSyncRoot { .. } => "mesh_sync_root",
            PeerMsg::MeshSyncBranches { .. } => "mesh_sync_branches",
            PeerMsg::MeshSyncRefused { .. } => "mesh_sync_refused",
            PeerMsg::MeshSyncSegReq { .. } => "mesh_sync_seg_req",
            PeerMsg::MeshSyncSegs { .. } => "mesh_sync_segs",
            PeerMsg::MeshSyncKeys { .. } => "mesh_sync_keys",
            PeerMsg::MeshSyncDiff { .. } => "mesh_sync_diff",
        }
    }
}
