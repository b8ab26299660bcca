//! The node state machine: [`Node::handle`] takes an [`Input`] with the current time and
//! [`Node::take_ready`] hands back what the driver must do.
//!
//! A PUT, end to end: the driver turns it into [`Input::Client`]; a node outside the key's shard
//! forwards it ([`PeerMsg::Forward`], see `proxy.rs`); the coordinating replica assigns a dot,
//! writes the new version set through [`Storage`], sends [`PeerMsg::Replicate`] to the shard's
//! other replicas and keeps the dot in its `outbox` until each acknowledges; once `w` replicas
//! hold the write, the reply goes out in a [`Ready`] — after the driver has synced storage if the
//! Ready says so.
//!
//! Invariants:
//! - every dot this node issues is above every dot its actor issued before (counters persist with
//!   the node clock; a node that cannot prove that takes a new incarnation);
//! - **floors** (see `floor.rs`): tokens fold a lineage's earlier actors into its newest one
//!   ([`crate::core::clock`]); a replica relies on that fold for a partition only through a floor
//!   it verified exactly (every older actor's dots to the partition, up to its final counter) or
//!   a handoff claim made under the same rule, and a node writes with a new actor only once it
//!   holds such a floor for its own lineage on the key's partition;
//! - a token this node returns covers only dots it applied (contiguous clock bases) plus the
//!   caller's own context;
//! - a read answers only once this replica's clock covers the caller's context for the shard.

use super::aae::{AaeStats, Claims, Exchange, encoded_len};
use super::clock::{NodeClock, PartitionClock, VersionVector};
use super::config::{Canary, Config, ConflictMode, SyncMode, WARN_SIBLINGS};
use super::dot::{Actor, Dot};
use super::dvv::{Version, VersionSet};
use super::history::History;
use super::merkle::{self, BRANCHES, Merkle, SEGMENTS_PER_BRANCH};
use super::message::PeerMsg;
use super::outbox::{self, Outbox};
use super::probe::{Probe, Probes};
use super::proxy::{Forwarding, Proxy};
use super::request::{
    ListEntry, MAX_CONTENT_TYPE_BYTES, MAX_MERGE_BATCH, MAX_TTL_SECS, Op, Quorum, Reply, ReqError,
    ReqId, Request, Response, Rid,
};
use super::ring::{Epoch, NodeId, ShardId, View, node_hash, partition_of};
use super::storage::{IndexWrite, Storage};
use super::time::Time;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use requests::{Parked, PendingList, PendingRead, PendingWrite, Requests};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

mod anti_entropy;
pub mod bulk;
mod expiry;
mod floor;
mod handoff;
mod invariants;
mod membership;
pub mod mesh;
mod requests;
mod restore;
mod strong;

use handoff::{Incoming, Push};

const META_ACTOR: &str = "actor";
const META_CLOCK: &str = "clock";
const META_CLEAN: &str = "clean";
const META_VIEWS: &str = "views";
const META_HANDOFF: &str = "handoff";
const META_RETAINED: &str = "retained";
const META_AWAITING: &str = "awaiting";
const META_DROPPED: &str = "dropped";
const META_FLOORED: &str = "floored";
const META_FLOORS: &str = "floors";
/// How much longer than a strong round's own deadline a proxy waits for its replica's answer.
const STRONG_FORWARD_SLACK: std::time::Duration = std::time::Duration::from_millis(500);
/// The partition count the stored anti-entropy index was built under.
const META_INDEX: &str = "index-partitions";
const META_CLUSTER: &str = "cluster";
/// Keys [`Node::erase_keys`] reads from the index at a time.
const ERASE_PAGE: usize = 1024;

/// Who a node is: its address, and a random nonce from the driver (seeds the choice of a new
/// incarnation and of jitter; the core draws no randomness of its own).
#[derive(Clone, Debug)]
pub struct Identity {
    pub node: NodeId,
    pub nonce: u64,
}

/// Something that happened to the node.
#[derive(Clone, Debug)]
pub enum Input {
    Client(Request),
    Peer {
        from: NodeId,
        msg: PeerMsg,
    },
    /// Time passed; due at least every [`Config::tick_interval`].
    Tick,
}

/// What the driver must do next, carried out by [`Ready::apply`] (`effects.rs`), in order: send `early_messages` and deliver `early_replies`
/// (they may also wait); if `sync`, make storage durable ([`Storage::sync`]); then send
/// `messages` and deliver `replies`; then drop whatever it keeps per peer (links, queues,
/// metrics) for the nodes in `forget`, after writing what it already queued for them.
///
/// Invariant: nothing in the early lists depends on a write of this Ready. They are answers to
/// writes that just reached their `w` acknowledgements: the write itself was stored by an
/// earlier Ready, whose sync came before its replication left. Releasing them before this
/// Ready's sync takes one fsync off a `w > 1` write's latency.
#[derive(Debug, Default)]
pub struct Ready {
    pub sync: bool,
    pub early_messages: Vec<(NodeId, PeerMsg)>,
    pub early_replies: Vec<Reply>,
    pub messages: Vec<(NodeId, PeerMsg)>,
    pub replies: Vec<Reply>,
    /// Nodes this node no longer talks to: removed from the view, or join candidates that did
    /// not answer. The core itself has dropped every state it kept about them.
    pub forget: Vec<NodeId>,
    /// The client writes this node executed, in order: what the simulator's write registry is
    /// built from. Drivers may ignore it; nothing else in the Ready depends on it.
    pub executed: Vec<Executed>,
}

/// A client write a node executed: the dot it issued, for which request, and exactly what the
/// write supersedes. `supersedes` covers `dot` only if a client context claimed dots this node
/// never issued (or a canary reuses counters); the write itself survives either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub dot: Dot,
    pub key: Bytes,
    /// The value written; `None` for a delete.
    pub value: Option<Bytes>,
    /// The request's context, or for a blind delete what the coordinator held of the key.
    pub supersedes: VersionVector,
    /// The time to live the write was issued with, in seconds.
    pub ttl: Option<u64>,
    /// For an expiry tombstone: exactly the versions it removed. Empty for a client write.
    pub expired: Vec<Dot>,
    /// The request it serves; `None` for an expiry tombstone, which this node wrote on its own
    /// and which supersedes exactly the expired versions it removed (`supersedes` names them).
    pub origin: Option<Origin>,
}

/// A value a client writes: its bytes, content type and time to live in seconds.
type NewValue = (Bytes, Option<Bytes>, Option<u64>);

/// Where the answer to an operation this node executes goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Client(ReqId),
    Proxy { from: NodeId, rid: Rid },
}

/// Counters and queue depths, for `/v1/cluster` and metrics.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub actor: String,
    pub shard: Option<ShardId>,
    pub view: View,
    pub live_keys: u64,
    pub unacked: BTreeMap<NodeId, usize>,
    pub unacked_dropped: u64,
    /// Bytes of replication in flight, per peer (bounded by `peer_buffer_bytes` + one set).
    pub unacked_bytes: BTreeMap<NodeId, u64>,
    /// Replication copies re-sent because their acknowledgement was overdue.
    pub replication_resent: u64,
    pub clock_gaps: usize,
    pub causal_waits: usize,
    pub pending_writes: usize,
    /// Keyed client requests this node routed since start (served here, hinted or forwarded).
    pub requests: u64,
    pub forwarded: u64,
    pub failovers: u64,
    pub suspects: Vec<NodeId>,
    pub tombstones_pending: usize,
    /// Client writes that left a key with at least [`WARN_SIBLINGS`] siblings.
    pub sibling_warnings: u64,
    /// Client writes refused because they would exceed `max_siblings`.
    pub sibling_refusals: u64,
    pub aae: AaeStats,
    pub mesh: mesh::MeshStatus,
    pub handoff: HandoffStatus,
    /// The rare paths this node took since it started ([`Probe`]).
    pub probes: Probes,
}

/// Partitions on the move at one node. The node is settled when both lists are empty.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HandoffStatus {
    /// Partitions this node holds but no longer owns, not yet handed to all their replicas.
    pub retained: Vec<u32>,
    /// Handoff streams to new replicas still running.
    pub pushing: usize,
    /// Keys this node holds as hints or for partitions it lost, not yet handed off.
    pub held_keys: usize,
    /// Writes accepted as hints since start.
    pub hints_accepted: u64,
    /// Keys sent in handoff batches since start (a batch sent again counts again).
    pub keys_sent: u64,
    /// Keys received in handoff batches and applied, since start.
    pub keys_received: u64,
    /// Partitions this node gained and has not yet received in full from a previous owner.
    pub awaiting: Vec<u32>,
}

/// One Causeway node's logic. `S` is the storage it writes through.
pub struct Node<S: Storage> {
    cfg: Config,
    me: NodeId,
    actor: Actor,
    counter: u64,
    /// The floor check of the current actor, until every replica in its view verified it.
    floor_round: Option<floor::FloorRound>,
    /// The newest actor of this node whose floor check every replica of its view passed.
    floored: Option<Actor>,
    /// Per partition, the floors this replica verified: entry `(a, 0)` says it holds every dot
    /// of `a`'s lineage's actors of epochs below `a`'s to the partition.
    floors: BTreeMap<u32, VersionVector>,
    shard: Option<ShardId>,
    /// Every view this node has seen; `cfg.view` is the newest.
    history: History,
    /// Per partition, this node's current stretch of ownership (see [`History::window`]).
    windows: Vec<Option<(Epoch, Epoch)>>,
    /// Per partition, the writes of earlier owners this node's data reflects, from completed
    /// handoffs (and adopted from shard peers).
    handoff: BTreeMap<u32, PartitionClock>,
    /// Partitions held but no longer owned, until every new replica has them durably.
    retained: BTreeSet<u32>,
    /// For each partition this node dropped: the epoch of the last drop, and how many times.
    dropped: BTreeMap<u32, (Epoch, u32)>,
    /// Gained partitions not yet received in full from any previous owner.
    awaiting: BTreeSet<u32>,
    /// Partitions this node keeps owning, with the replicas that gained them in the current view
    /// and still have to receive them from this node.
    feeds: BTreeMap<u32, BTreeSet<NodeId>>,
    /// Per fed (partition, replica): the start of the replica's stretch of ownership it was fed.
    fed: BTreeMap<(u32, NodeId), Epoch>,
    pushes: BTreeMap<(u32, NodeId), Push>,
    incoming: BTreeMap<(NodeId, u32), Incoming>,
    /// Forwarded requests to route again once this node's view catches up, with when to retry.
    rerouting: Vec<(Forwarding, Time)>,
    next_join: Time,
    hints_accepted: u64,
    sibling_warnings: u64,
    sibling_refusals: u64,
    /// Keys sent and received in handoff batches since start.
    handoff_keys: (u64, u64),
    storage: S,
    clock: NodeClock,
    clock_dirty: bool,
    needs_sync: bool,
    /// The node's jitter (retry backoff): ChaCha8, whose output is specified, seeded by the
    /// per-start nonce the driver chose — the core's only randomness.
    rng: ChaCha8Rng,
    /// Elapsed time: advanced by each input's forward step of the driver's clock, never moved
    /// back, so a clock stepped backwards delays no timer. All deadlines use it.
    now: Time,
    /// The driver's clock as last seen (wall time, possibly skewed); feeds only the HLC.
    wall: Time,
    hlc: u64,
    /// Live keys per partition.
    live: BTreeMap<u32, u64>,
    next_rid: Rid,
    out: Ready,
    outbox: Outbox,
    /// Set by the driver while storage is (nearly) full: client writes are refused.
    storage_full: bool,
    proxy: Proxy,
    requests: Requests,
    last_heard: BTreeMap<NodeId, Time>,
    /// For each member of the view: since when this node expects to hear from it (it started,
    /// or the member joined). A member not heard from for `suspect_after` since then is
    /// reported as suspected ([`Node::never_heard`]).
    expecting: BTreeMap<NodeId, Time>,
    /// Join candidates probed and not yet answered, by probe id.
    joins: BTreeMap<Rid, membership::PendingJoin>,
    next_heartbeat: Time,
    merkle: Merkle,
    aae: Option<Exchange>,
    aae_stats: AaeStats,
    next_aae: Time,
    aae_turn: usize,
    /// Replication with other clusters (`node/mesh.rs`).
    mesh: mesh::Mesh,
    /// Expiry index (see `expiry`): (when to look at the key, µs on this node's clock; key) for
    /// every expiring version this node stored since start or found at start. Entries may be
    /// stale (the version was superseded since); popping one re-checks the key.
    expiring: BTreeSet<(u64, Bytes)>,
    /// Tombstones this node wrote, with the peers that acknowledged them so far.
    tombstones: BTreeMap<Dot, (Bytes, BTreeSet<NodeId>)>,
    /// Tombstones every replica holds, with the time their grace period ends.
    reaps: BTreeMap<Dot, (Bytes, Time)>,
    /// The rare paths taken since start (reported in [`NodeStatus::probes`]; no effect on
    /// behaviour).
    probes: Probes,
    /// Ticks handled since start (paces the storage recount of the invariant checks).
    ticks: u64,
    /// Strong keys: the CASPaxos rounds this node proposes and its acceptor's standing.
    strong: strong::StrongNode,
}

impl<S: Storage> Node<S> {
    /// Starts a node over `storage`, recovering its actor and clock from it. A node whose storage
    /// holds no actor, or may have lost acknowledged dots (not `sync = always` and not shut down
    /// cleanly), starts a new incarnation so no dot is ever reused (G7).
    pub fn new(cfg: Config, id: Identity, mut storage: S, now: Time) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(id.nonce);
        let my_hash = node_hash(&id.node);
        let mut cfg = cfg;
        let mut history = History::new(cfg.view.clone(), cfg.cluster);
        let saved: Vec<View> = storage
            .meta_get(META_VIEWS)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        for v in saved
            .into_iter()
            .filter(|v| v.is_joining() || v.check().is_ok())
        {
            history.insert(v);
        }
        cfg.view = history.latest().clone();
        let epoch = cfg.view.epoch;
        let mut clock: NodeClock = storage
            .meta_get(META_CLOCK)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        let previous: Option<Actor> = storage.meta_get(META_ACTOR).and_then(|b| decode(&b));
        let clean = storage.meta_get(META_CLEAN).is_some_and(|b| b == [1]);
        let trusted = cfg.sync == SyncMode::Always || clean;
        let (actor, counter) = match previous {
            Some(a) if cfg.canary == Some(Canary::ForgetCounterOnRestart) => (a, 0),
            Some(a)
                if trusted
                    && a.node() == my_hash
                    && a.cluster() == cfg.cluster
                    && a.epoch() == epoch =>
            {
                if !clean {
                    recover_torn_turn(&storage, a, &mut clock);
                }
                (a, clock.base(a))
            }
            _ => {
                // A new incarnation is a new lineage: it claims nothing of the old one's.
                let mut inc: u32 = rng.random();
                while previous.is_some_and(|p| p.incarnation() == inc) {
                    inc = rng.random();
                }
                (Actor::new(my_hash, epoch, inc).in_cluster(cfg.cluster), 0)
            }
        };
        let floored: Option<Actor> = storage.meta_get(META_FLOORED).and_then(|b| decode(&b));
        let floors: BTreeMap<u32, VersionVector> = storage
            .meta_get(META_FLOORS)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        storage.meta_put(META_ACTOR, &encode(&actor));
        storage.meta_put(META_CLEAN, &[0]);
        let mut probes = Probes::default();
        if previous.is_some_and(|p| p != actor) {
            probes.hit(Probe::NewIncarnation);
        }
        let (merkle, live) = index(&mut storage, cfg.view.partitions);
        let strong = strong::StrongNode::load(&mut storage, &mut rng, now);
        let expiring = expiry::index_storage(&storage);
        let shard = cfg.view.shard_of_node(&id.node);
        let handoff: BTreeMap<u32, PartitionClock> = storage
            .meta_get(META_HANDOFF)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        let set = |name: &str| -> BTreeSet<u32> {
            storage
                .meta_get(name)
                .and_then(|b| decode(&b))
                .unwrap_or_default()
        };
        let mut retained = set(META_RETAINED);
        let dropped: BTreeMap<u32, (Epoch, u32)> = storage
            .meta_get(META_DROPPED)
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        let awaiting = set(META_AWAITING);
        retained.extend(live.keys().filter(|p| !cfg.view.owns(&id.node, **p)));
        let forget = if cfg.canary == Some(Canary::ForgetHints) {
            std::mem::take(&mut retained)
        } else {
            BTreeSet::new()
        };
        let mut node = Node {
            me: id.node,
            actor,
            counter,
            floor_round: None,
            floored,
            floors,
            shard,
            windows: Vec::new(),
            history,
            handoff,
            retained,
            dropped,
            awaiting,
            feeds: BTreeMap::new(),
            fed: BTreeMap::new(),
            pushes: BTreeMap::new(),
            incoming: BTreeMap::new(),
            rerouting: Vec::new(),
            next_join: now,
            hints_accepted: 0,
            sibling_warnings: 0,
            sibling_refusals: 0,
            handoff_keys: (0, 0),
            storage,
            clock,
            clock_dirty: true,
            needs_sync: true,
            rng,
            now,
            wall: now,
            hlc: now.as_micros(),
            live,
            next_rid: id.nonce,
            out: Ready::default(),
            outbox: Outbox::default(),
            storage_full: false,
            proxy: Proxy::default(),
            requests: Requests::default(),
            last_heard: BTreeMap::new(),
            expecting: BTreeMap::new(),
            joins: BTreeMap::new(),
            next_heartbeat: now,
            merkle,
            aae: None,
            aae_stats: AaeStats::default(),
            next_aae: now + cfg.aae_interval,
            aae_turn: 0,
            mesh: mesh::Mesh::new(&cfg, now),
            expiring,
            tombstones: BTreeMap::new(),
            reaps: BTreeMap::new(),
            probes,
            ticks: 0,
            strong,
            cfg,
        };
        for p in forget {
            node.erase_partition(p);
        }
        node.windows = node.compute_windows();
        node.feeds = node.compute_feeds();
        node.expect_members();
        node.persist_membership();
        node.start_floor_check();
        node
    }

    pub fn id(&self) -> &NodeId {
        &self.me
    }

    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// What [`crate::core::validate`] checks peer messages to this node against.
    pub fn peer_limits(&self) -> crate::core::Limits {
        crate::core::Limits {
            max_key_bytes: self.cfg.max_key_bytes,
            max_value_bytes: self.cfg.max_value_bytes,
            epoch: self.cfg.view.epoch,
            own: (self.actor, self.counter),
        }
    }

    /// The newest view this node has installed.
    pub fn view(&self) -> &View {
        &self.cfg.view
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Consumes the node, returning its storage (a crash or restart in a test world).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Records a clean shutdown: the next start may keep this incarnation. Call after the last
    /// Ready was delivered; syncs storage.
    pub fn shutdown(&mut self) {
        self.persist_clock();
        self.storage.meta_put(META_CLEAN, &[1]);
        self.storage.sync();
    }

    /// Feeds one input at time `now`.
    pub fn handle(&mut self, now: Time, input: Input) {
        self.now = self.now + now.since(self.wall);
        self.wall = now;
        #[cfg(debug_assertions)]
        let tick = matches!(input, Input::Tick);
        match input {
            Input::Client(req) => self.on_client(req),
            Input::Peer { from, msg } => {
                if self.admits(&from, &msg).is_ok() {
                    self.last_heard.insert(from.clone(), self.now);
                    self.on_peer(from, msg);
                }
            }
            Input::Tick => {
                self.ticks += 1;
                self.on_tick();
                self.strong_tick();
            }
        }
        #[cfg(debug_assertions)]
        self.assert_invariants(tick);
    }

    /// Drains what the driver must do (see [`Ready`]).
    pub fn take_ready(&mut self) -> Ready {
        if self.clock_dirty {
            self.persist_clock();
        }
        let mut ready = std::mem::take(&mut self.out);
        ready.sync = std::mem::take(&mut self.needs_sync);
        ready
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.me.clone(),
            actor: format!("{:?}", self.actor),
            shard: self.shard,
            view: self.cfg.view.clone(),
            live_keys: self.live.values().sum(),
            unacked: self.outbox.depths(),
            unacked_dropped: self.outbox.dropped,
            unacked_bytes: self.outbox.bytes(),
            replication_resent: self.outbox.resent,
            clock_gaps: self.clock.gaps(),
            causal_waits: self.requests.causal_waits(),
            pending_writes: self.requests.pending_writes(),
            requests: self.proxy.routed,
            forwarded: self.proxy.forwarded,
            failovers: self.proxy.failovers,
            suspects: self
                .cfg
                .view
                .nodes
                .iter()
                .filter(|n| self.is_suspect(n) || (**n != self.me && self.never_heard(n)))
                .cloned()
                .collect(),
            tombstones_pending: self.tombstones.len() + self.reaps.len(),
            sibling_warnings: self.sibling_warnings,
            sibling_refusals: self.sibling_refusals,
            aae: self.aae_stats.clone(),
            mesh: self.mesh_status(),
            handoff: HandoffStatus {
                retained: self.retained.iter().copied().collect(),
                // Feeds leave `feeds` when done; streams of retained partitions stay until the
                // partition is dropped, so only the unfinished ones count.
                pushing: self.feeds.values().map(|t| t.len()).sum::<usize>()
                    + self
                        .pushes
                        .iter()
                        .filter(|((p, _), x)| self.retained.contains(p) && !x.done)
                        .count(),
                held_keys: self.held_keys(),
                hints_accepted: self.hints_accepted,
                keys_sent: self.handoff_keys.0,
                keys_received: self.handoff_keys.1,
                awaiting: self.awaiting.iter().copied().collect(),
            },
            probes: {
                let mut p = self.probes.clone();
                p.add(Probe::ReplicationResent, self.outbox.resent);
                p
            },
        }
    }

    /// The version set this replica holds for `key` (for tests and checkers).
    pub fn local_state(&self, key: &[u8]) -> Option<VersionSet> {
        self.storage.get(key)
    }

    /// The dots of other clusters this replica holds to `key`'s partition through completed full
    /// syncs (its mesh floor, docs/mesh.md), which its reply contexts name; empty outside a mesh.
    /// The simulator's G1 check judges reply contexts against it with [`Node::applied`].
    pub fn mesh_floor_of(&self, key: &[u8]) -> VersionVector {
        self.mesh_floor(self.cfg.view.partition_of(key))
    }

    /// The contiguous applied counters this replica can vouch for.
    pub fn applied(&self) -> VersionVector {
        self.clock.bases(|_| true)
    }

    /// Whether this replica would run `op` (a keyed read or write) at once, without a causal
    /// wait: it owns the key, holds every write of the op's context, and, for a write, may issue
    /// a dot for the key and has room. Changes nothing; the simulator's availability check asks
    /// it of each replica when a request starts (docs/simulator.md, G4 during chaos).
    pub fn serves_at_once(&self, op: &Op) -> bool {
        match op {
            Op::Get { key, context, .. } => self.covers(context, key),
            Op::Put { key, context, .. } => {
                !self.storage_full && self.covers(context, key) && self.may_write(key)
            }
            _ => false,
        }
    }

    /// Issues the actor's next dot.
    fn next_dot(&mut self) -> Dot {
        assert!(
            !self.actor.is_loader(),
            "a node of the joining view owns no partition, so it coordinates no write"
        );
        self.counter += 1;
        Dot::new(self.actor, self.counter)
    }

    fn persist_clock(&mut self) {
        self.storage.meta_put(META_CLOCK, &encode(&self.clock));
        self.clock_dirty = false;
    }

    /// A fresh request id. Each incarnation counts from its own random start (the nonce), so an
    /// answer to a request of a previous incarnation — still in flight, or held by a replica in
    /// its causal wait — is not taken for one of this incarnation's (the chance that two
    /// incarnations' ranges of rids meet is negligible).
    fn rid(&mut self) -> Rid {
        self.next_rid = self.next_rid.wrapping_add(1);
        self.next_rid
    }

    /// Sends the replication waiting for room in `peer`'s budget (every peer's when `None`).
    fn replicate_ready(&mut self, peer: Option<&str>) {
        let storage = &self.storage;
        let ready = self.outbox.ready(
            peer,
            self.now,
            self.cfg.retry_interval,
            self.cfg.retry_batch,
            self.cfg.peer_buffer_bytes,
            &mut self.rng,
            |k| {
                let set = storage.get(k).unwrap_or_default();
                let bytes = outbox::copy_bytes(k, &set);
                (set, bytes)
            },
        );
        for (peer, key, dots, set) in ready {
            self.send(&peer, PeerMsg::Replicate { key, set, dots });
        }
    }

    /// The driver tells whether its link to `peer` still holds unwritten messages; while it
    /// does, no replication to that peer is presumed lost (see `outbox.rs`).
    pub fn set_link_backlog(&mut self, peer: &str, queued: bool) {
        self.outbox.set_backlog(peer, queued);
    }

    /// The driver tells whether storage is (nearly) full; while it is, this node refuses the
    /// writes it would coordinate (replication from peers is still stored).
    pub fn set_storage_full(&mut self, full: bool) {
        self.storage_full = full;
    }

    fn send(&mut self, to: &NodeId, msg: PeerMsg) {
        self.out.messages.push((to.clone(), msg));
    }

    fn finish(&mut self, origin: Origin, result: Result<Response, ReqError>) {
        self.answer(origin, result, false);
    }

    /// Like [`Node::finish`], for an answer that depends on no write of the current turn (see
    /// [`Ready`]): it may leave before the turn's sync.
    fn finish_early(&mut self, origin: Origin, result: Result<Response, ReqError>) {
        self.answer(origin, result, true);
    }

    /// Answers the client, or the proxy that forwarded the request, in the early or the
    /// ordinary lists of the Ready.
    fn answer(&mut self, origin: Origin, result: Result<Response, ReqError>, early: bool) {
        let served_by = self.me.clone();
        let (replies, messages) = if early {
            (&mut self.out.early_replies, &mut self.out.early_messages)
        } else {
            (&mut self.out.replies, &mut self.out.messages)
        };
        match origin {
            Origin::Client(id) => replies.push(Reply {
                id,
                served_by,
                result,
            }),
            Origin::Proxy { from, rid } => messages.push((
                from,
                PeerMsg::ForwardReply {
                    rid,
                    served_by,
                    result,
                },
            )),
        }
    }

    /// A member that never sent a message within `suspect_after` of when this node started
    /// expecting to hear from it. Reported as suspected; routing learns of it when a forward to
    /// it times out instead ([`Node::is_suspect`]), which keeps hinting as it was.
    fn never_heard(&self, node: &str) -> bool {
        !self.last_heard.contains_key(node)
            && self
                .expecting
                .get(node)
                .is_some_and(|t| self.now.since(*t) > self.cfg.suspect_after)
    }

    /// A peer not heard from for `suspect_after` since its last message (or whose forward timed
    /// out before it was ever heard from).
    fn is_suspect(&self, node: &str) -> bool {
        node != self.me
            && self
                .last_heard
                .get(node)
                .is_some_and(|t| self.now.since(*t) > self.cfg.suspect_after)
    }

    /// Replicas of `shard`, this node's preferred one first: view order rotated by this node's
    /// hash (spreading proxies over replicas), unsuspected peers before suspected ones.
    fn candidates(&self, shard: ShardId) -> Vec<NodeId> {
        let members = self.cfg.view.shard_members(shard);
        let start = self.actor.node() as usize % members.len();
        let mut c: Vec<NodeId> = members[start..]
            .iter()
            .chain(&members[..start])
            .cloned()
            .collect();
        c.sort_by_key(|n| self.is_suspect(n));
        c
    }

    /// Whether this node's clock vouches for `actor`'s writes to `partition`: the actor's epoch
    /// lies in this node's current stretch of ownership of the partition.
    fn trusts(&self, partition: u32, actor: Actor) -> bool {
        if self.foreign(actor) {
            // Another cluster's epochs say nothing about this cluster's views.
            return false;
        }
        if actor.is_loader() {
            // A load wrote its keys into this node's storage with its dots in the clock; a
            // partition dropped since then lost them (and one dropped before the load too, kept
            // out for simplicity: distrust only makes reads wait).
            return !self.dropped.contains_key(&partition);
        }
        if actor.node() == self.actor.node() {
            // This node applied its own writes and hints first; those made since it last
            // dropped the partition are all in its storage.
            let (epoch, drops) = self.dropped.get(&partition).copied().unwrap_or((0, 0));
            let since_drop = match actor.hinted_partition() {
                Some(p) => p == partition && actor.hint_episode() == drops,
                None => actor.epoch() > epoch,
            };
            if since_drop {
                return true;
            }
        }
        self.windows
            .get(partition as usize)
            .copied()
            .flatten()
            .is_some_and(|(from, until)| (from..=until).contains(&actor.epoch()))
    }

    /// True when this replica holds every write of `ctx` to `key`'s partition: each relevant
    /// entry is vouched for by the node clock (within the ownership window) or by the
    /// partition's handoff clock, and the older actors each entry folds are vouched for by a
    /// floor ([`Node::holds_older`]). An entry of an epoch this node has not seen is not covered.
    fn covers(&self, ctx: &VersionVector, key: &[u8]) -> bool {
        let p = self.cfg.view.partition_of(key);
        if self.shard != Some(self.cfg.view.shard_of_partition(p)) {
            return false;
        }
        ctx.iter()
            .all(|(a, n)| self.holds_older(p, a) && self.holds(p, a, n))
    }

    /// Whether this replica holds `actor`'s dots `1..=n` to `partition` (all of them when the
    /// actor did not write to it), by its node clock or the partition's handoff clock.
    fn holds(&self, partition: u32, actor: Actor, n: u64) -> bool {
        if self.foreign(actor) {
            return self.mesh_holds(partition, actor, n);
        }
        n == 0
            || match self.history.relevant(actor, partition) {
                Some(false) => true,
                None => false,
                Some(true) => {
                    (self.trusts(partition, actor) && self.clock.base(actor) >= n)
                        || self
                            .handoff
                            .get(&partition)
                            .is_some_and(|h| h.get(actor) >= n)
                }
            }
    }

    /// Whether this replica holds every dot to `partition` of the actors older than `actor` in
    /// its lineage (what a context entry of `actor` folds): a floor it verified, or a handoff
    /// claim. Hint actors fold nothing.
    fn holds_older(&self, partition: u32, actor: Actor) -> bool {
        if self.foreign(actor) {
            return self.mesh_holds(partition, actor, 0);
        }
        actor.hinted_partition().is_some()
            || actor.is_loader()
            || self.cfg.canary == Some(Canary::FoldWithoutFloor)
            || self
                .floors
                .get(&partition)
                .is_some_and(|f| f.covers_older(actor))
            || self
                .handoff
                .get(&partition)
                .is_some_and(|h| h.covers_older(actor))
    }

    /// The writes to `partition` this node's data reflects, exactly: the trusted actors'
    /// contiguous bases, its handoff clock and its floors (what handoff streams claim).
    fn partition_clock(&self, partition: u32) -> PartitionClock {
        let mut h = self.handoff.get(&partition).cloned().unwrap_or_default();
        h.dots.join(&self.clock.restricted(|a| {
            self.history.relevant(a, partition) == Some(true) && self.trusts(partition, a)
        }));
        if let Some(f) = self.floors.get(&partition) {
            h.floors.merge(f);
        }
        h
    }

    /// The writes to `partition` this node's data reflects, as a version vector (a token): its
    /// floors, and each vouched actor's contiguous base whose older actors it holds too (an
    /// entry folds them).
    fn vouched(&self, partition: u32) -> VersionVector {
        let h = self.partition_clock(partition);
        let mut v = h.floors.clone();
        for (a, base, _) in h.dots.entries() {
            if base > 0 && self.holds_older(partition, a) {
                v.raise(a, base);
            }
        }
        v
    }

    /// Whether this node may issue a dot of its current actor for `key`: it holds its own
    /// lineage's older dots to the key's partition, so the reply's token (which folds them) is
    /// true of this replica.
    fn may_write(&self, key: &[u8]) -> bool {
        self.holds_older(self.cfg.view.partition_of(key), self.actor)
    }

    /// The token to return: the caller's context joined with what this replica holds of the
    /// key's partition.
    fn reply_context(&self, ctx: &VersionVector, key: &[u8]) -> VersionVector {
        if self.cfg.canary == Some(Canary::StaleContext) {
            return ctx.clone();
        }
        let mut out = ctx.clone();
        let partition = self.cfg.view.partition_of(key);
        let vouched = self.vouched(partition);
        out.merge(&vouched);
        out.merge(&self.mesh_floor(partition));
        if self.cfg.canary == Some(Canary::ContextBeyondApplied) {
            for (a, _) in vouched.iter() {
                out.add(Dot::new(a, self.clock.max(a)));
            }
        }
        out
    }

    fn validate(&self, op: &Op) -> Result<(), ReqError> {
        let bad = |m: String| Err(ReqError::BadRequest(m));
        if let Some(key) = op.key() {
            if key.is_empty() {
                return bad("key must not be empty".into());
            }
            if key.len() > self.cfg.max_key_bytes {
                return bad(format!(
                    "key is longer than {} bytes",
                    self.cfg.max_key_bytes
                ));
            }
        }
        let replicas = |key: &[u8]| {
            let shard = self.cfg.view.shard_of_key(key);
            self.cfg.view.shard_members(shard).len()
        };
        match op {
            Op::Put {
                key,
                value,
                content_type,
                w,
                ttl,
                ..
            } => {
                match (ttl, value) {
                    (Some(_), None) => return bad("a delete takes no ttl".into()),
                    (Some(t), _) if !(1..=MAX_TTL_SECS).contains(t) => {
                        return bad(format!(
                            "ttl must be a whole number of seconds from 1 to {MAX_TTL_SECS}"
                        ));
                    }
                    _ => {}
                }
                if value
                    .as_ref()
                    .is_some_and(|v| v.len() > self.cfg.max_value_bytes)
                {
                    return bad(format!(
                        "value is longer than {} bytes",
                        self.cfg.max_value_bytes
                    ));
                }
                if content_type
                    .as_ref()
                    .is_some_and(|c| c.len() > MAX_CONTENT_TYPE_BYTES)
                {
                    return bad(format!(
                        "content type is longer than {MAX_CONTENT_TYPE_BYTES} bytes"
                    ));
                }
                if w.resolve(replicas(key)).is_none() {
                    return bad(format!(
                        "w exceeds the {} replicas of the key's shard",
                        replicas(key)
                    ));
                }
            }
            Op::Strong { call, .. }
                if call
                    .value()
                    .is_some_and(|v| v.len() > self.cfg.max_value_bytes) =>
            {
                return bad(format!(
                    "value is longer than {} bytes",
                    self.cfg.max_value_bytes
                ));
            }
            Op::Get { key, r, .. } if r.resolve(replicas(key)).is_none() => {
                return bad(format!(
                    "r exceeds the {} replicas of the key's shard",
                    replicas(key)
                ));
            }
            Op::List { limit, .. } if *limit == 0 => return bad("limit must be at least 1".into()),
            Op::Merge { set, .. } => {
                if let Err(e) = super::validate::validate_set(set, &self.peer_limits()) {
                    return bad(format!("malformed version set: {e}"));
                }
            }
            Op::MergeBatch { sets } => return self.check_merge_batch(sets),
            Op::KeyCount { shard } if *shard >= self.cfg.view.shard_count() => {
                return bad(format!("no shard {shard}"));
            }
            Op::AntiEntropy { peer }
                if !self.peers().contains(peer) && !self.mesh_upstream_of(peer) =>
            {
                return bad(format!(
                    "{peer} is neither another replica of this node's shard nor a node of a \
                     mesh upstream"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn target_shard(&self, op: &Op) -> Option<ShardId> {
        match op {
            Op::Get { key, .. }
            | Op::Put { key, .. }
            | Op::Merge { key, .. }
            | Op::Strong { key, .. } => Some(self.cfg.view.shard_of_key(key)),
            Op::MergeBatch { sets } => sets.first().map(|(k, _)| self.cfg.view.shard_of_key(k)),
            Op::KeyCount { shard } => Some(*shard),
            _ => None,
        }
    }

    fn on_client(&mut self, req: Request) {
        if self.cfg.panic_on_key.is_some() && req.op.key() == self.cfg.panic_on_key.as_ref() {
            panic!("planted panic on a request for the key named by --test-panic-on-key");
        }
        let admin = matches!(req.op, Op::ChangeView { .. } | Op::Join { .. });
        if self.cfg.view.is_joining() && !admin {
            let msg = "this node has not joined a cluster yet".to_string();
            return self.finish(Origin::Client(req.id), Err(ReqError::Unavailable(msg)));
        }
        if let Err(e) = self.validate(&req.op) {
            return self.finish(Origin::Client(req.id), Err(e));
        }
        match req.op {
            Op::AntiEntropy { peer } if self.peers().contains(&peer) => {
                return self.request_exchange(req.id, peer);
            }
            Op::AntiEntropy { peer } => return self.mesh_pull(req.id, peer),
            Op::ChangeView { nodes, repl_factor } => {
                return self.change_view(req.id, nodes, repl_factor);
            }
            Op::Join { node } => return self.admit(Some(req.id), node, false),
            _ => {}
        }
        match self.target_shard(&req.op) {
            None => self.start_list(req),
            Some(_) => {
                let wait = match req.op {
                    Op::Strong { .. } => self.cfg.quorum_timeout + STRONG_FORWARD_SLACK,
                    _ => self.cfg.request_timeout,
                };
                let deadline = self.now + wait;
                self.proxy.routed += 1;
                self.route(req.id, req.op, deadline);
            }
        }
    }

    /// Serves a client's read or write here if this node is a replica of its key, else
    /// forwards it to the key's replicas.
    fn route(&mut self, client: ReqId, op: Op, deadline: Time) {
        match self.target_shard(&op) {
            Some(s) if Some(s) == self.shard => self.execute(Origin::Client(client), op),
            Some(s) if self.hintable(s, &op) => {
                let Op::Put {
                    key,
                    value,
                    content_type,
                    context,
                    ttl,
                    ..
                } = op
                else {
                    unreachable!("only writes are hintable")
                };
                let value = value.map(|v| (v, content_type, ttl));
                self.write_hint(client, key, value, context);
            }
            Some(s) => {
                let candidates = self.candidates(s);
                let f = Forwarding {
                    client,
                    op,
                    candidates,
                    next: 0,
                    attempt_deadline: self.now,
                    deadline,
                };
                self.proxy.forwarded += 1;
                self.attempt(f);
            }
            None => unreachable!("only keyed operations are routed"),
        }
    }

    /// Sends `f` to its next candidate.
    fn attempt(&mut self, mut f: Forwarding) {
        let rid = self.rid();
        let to = f.candidates[f.next].clone();
        f.next += 1;
        // A strong operation is never sent to a second replica after a silent first one: the
        // first may have decided it, and deciding it twice would apply a write twice.
        f.attempt_deadline = if matches!(f.op, Op::Strong { .. }) {
            f.deadline
        } else {
            (self.now + self.cfg.forward_timeout).min(f.deadline)
        };
        self.send(
            &to,
            PeerMsg::Forward {
                rid,
                op: f.op.clone(),
                epoch: self.cfg.view.epoch,
            },
        );
        self.proxy.pending.insert(rid, f);
    }

    /// Runs an operation this replica is responsible for. Reads and writes first wait (up to
    /// `causal_wait`) until this replica has applied every write their context names: a read
    /// must not miss them, and a write must supersede what they superseded, transitively.
    fn execute(&mut self, origin: Origin, op: Op) {
        match op {
            Op::Get { .. } | Op::Put { .. } => {
                let skip = self.cfg.canary == Some(Canary::SkipCausalWait);
                let covered = match (op.context(), op.key()) {
                    (Some(c), Some(k)) => self.covers(c, k),
                    _ => false,
                };
                let writable =
                    matches!(op, Op::Get { .. }) || op.key().is_some_and(|k| self.may_write(k));
                if (skip || covered) && writable {
                    self.run(origin, op);
                } else {
                    let deadline = self.now + self.cfg.causal_wait;
                    self.probes.hit(Probe::CausalWait);
                    self.requests.park(Parked {
                        origin,
                        op,
                        deadline,
                    });
                }
            }
            Op::Merge { key, set } => self.merge_restored(origin, key, set),
            Op::MergeBatch { sets } => self.merge_batch(origin, sets),
            Op::Strong { key, call } => self.start_strong(origin, key, call),
            Op::KeyCount { shard } => {
                let partitions = self.cfg.view.partitions_of(shard);
                let count = partitions.iter().filter_map(|p| self.live.get(p)).sum();
                let settled = self.awaiting.is_empty();
                let mut context = VersionVector::new();
                for p in &partitions {
                    context.merge(&self.vouched(*p));
                }
                let resp = Response::KeyCount {
                    shard,
                    count,
                    settled,
                    context,
                };
                self.finish(origin, Ok(resp));
            }
            _ => unreachable!("only keyed operations and key counts run at a replica"),
        }
    }

    /// Executes a read or write whose context this replica covers.
    fn run(&mut self, origin: Origin, op: Op) {
        match op {
            Op::Get { key, context, r } => self.read(origin, key, context, r),
            Op::Put {
                key,
                value,
                content_type,
                context,
                w,
                ttl,
            } => {
                let value = value.map(|v| (v, content_type, ttl));
                self.write(origin, key, value, context, w)
            }
            _ => unreachable!("only reads and writes wait for their context"),
        }
    }

    /// Joins a restored version set into `key` here (the anti-entropy merge, so versions this
    /// replica already superseded or reaped stay gone) and sends the result to the shard's
    /// other replicas as a repair; anti-entropy backs up a repair that is lost. Answers once
    /// this replica stored it (with the next sync), like a `w=1` write.
    fn merge_restored(&mut self, origin: Origin, key: Bytes, set: VersionSet) {
        if self.storage_full {
            let why = "the replica's storage is full; the version set was not merged";
            return self.finish(origin, Err(ReqError::InsufficientStorage(why.into())));
        }
        let changed = self.absorb(&key, &set, None);
        if changed && let Some(merged) = self.storage.get(&key) {
            for peer in self.peers() {
                let msg = PeerMsg::Repair {
                    key: key.clone(),
                    set: merged.clone(),
                };
                self.send(&peer, msg);
            }
        }
        self.finish(origin, Ok(Response::Merged { changed }));
    }

    /// The other replicas of this node's shard.
    fn peers(&self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|p| *p != self.me)
            .collect()
    }

    fn members(&self) -> Vec<NodeId> {
        self.shard
            .map(|s| self.cfg.view.shard_members(s).to_vec())
            .unwrap_or_default()
    }

    /// Coordinates a client write (`value`: the value and its content type; `None` deletes).
    fn write(
        &mut self,
        origin: Origin,
        key: Bytes,
        value: Option<NewValue>,
        ctx: VersionVector,
        w: Quorum,
    ) {
        if self.storage_full {
            let why = "the replica's storage is full; the write was not applied";
            self.finish(origin, Err(ReqError::InsufficientStorage(why.into())));
            return;
        }
        let tombstone = value.is_none();
        let current = self.storage.get(&key).unwrap_or_default();
        let (ctx, blind) = match self.write_context(&key, &current, tombstone, ctx) {
            Ok(c) => c,
            Err(e) => return self.finish(origin, Err(e)),
        };
        if let Some((v, _, _)) = &value {
            let kept: usize = current
                .versions()
                .iter()
                .filter(|x| !ctx.covers(x.dot))
                .filter_map(|x| x.value.as_ref().map(Bytes::len))
                .sum();
            if kept + v.len() > self.cfg.max_sibling_bytes {
                let why = format!(
                    "the key's siblings would hold {} bytes, above the limit of {}; resolve them \
                     (write with the context of a read) first",
                    kept + v.len(),
                    self.cfg.max_sibling_bytes
                );
                self.finish(origin, Err(ReqError::TooLarge(why)));
                return;
            }
        }
        let dot = self.next_dot();
        self.executed(dot, &key, &value, &ctx, &origin);
        let (set, had_value) = self.apply_new(dot, &key, current, value, &ctx);
        if blind {
            self.probes.hit(Probe::BlindDelete);
        }
        if set.versions().iter().filter(|v| v.value.is_some()).count() > 1 {
            self.probes.hit(Probe::SiblingCreated);
        }
        let members = self.members();
        if tombstone && self.cfg.canary != Some(Canary::EarlyTombstoneReap) {
            if members.len() == 1 {
                let due = self.now + self.cfg.tombstone_grace;
                self.reaps.insert(dot, (key.clone(), due));
            } else {
                self.tombstones.insert(dot, (key.clone(), BTreeSet::new()));
            }
        }
        self.replicate(&key, dot, &set);
        let reply = Response::Written {
            dot,
            context: self.reply_context(&ctx, &key),
            replaced: had_value,
            coordinator_context: blind.then_some(ctx),
        };
        let need = w.resolve(members.len()).unwrap_or(members.len());
        if need <= 1 && self.cfg.canary == Some(Canary::ReplyBeforeDurable) {
            self.finish_early(origin, Ok(reply));
        } else if need <= 1 {
            self.finish(origin, Ok(reply));
        } else {
            let pending = PendingWrite {
                origin,
                need,
                acked: BTreeSet::from([self.me.clone()]),
                reply,
                deadline: self.now + self.cfg.quorum_timeout,
            };
            self.requests.await_acks(dot, pending);
        }
        self.wake_parked();
    }

    /// Sends write `dot`, now `set` at this coordinator, to the shard's other replicas through
    /// their outboxes (retried until acknowledged).
    fn replicate(&mut self, key: &Bytes, dot: Dot, set: &VersionSet) {
        let bytes = outbox::copy_bytes(key, set);
        let (interval, budget) = (self.cfg.retry_interval, self.cfg.peer_buffer_bytes);
        for peer in self.peers() {
            let dots = if self.cfg.canary == Some(Canary::NoReplicationRetry) {
                vec![dot]
            } else if !self
                .outbox
                .push(&peer, key, dot, self.cfg.max_unacked_per_peer)
                || !self.outbox.has_room(&peer, budget)
            {
                // Over the key cap (anti-entropy repairs), or waiting for room in the peer's
                // budget (sent from `on_tick` and acknowledgements).
                continue;
            } else {
                let now = self.now;
                self.outbox
                    .launch(&peer, key, bytes, now, interval, &mut self.rng)
            };
            let msg = PeerMsg::Replicate {
                key: key.clone(),
                set: set.clone(),
                dots,
            };
            self.send(&peer, msg);
        }
    }

    /// Reports a client write executed as `dot`, superseding `ctx`, in [`Ready::executed`].
    fn executed(
        &mut self,
        dot: Dot,
        key: &Bytes,
        value: &Option<NewValue>,
        ctx: &VersionVector,
        origin: &Origin,
    ) {
        self.out.executed.push(Executed {
            dot,
            key: key.clone(),
            value: value.as_ref().map(|(v, _, _)| v.clone()),
            supersedes: ctx.clone(),
            ttl: value.as_ref().and_then(|(_, _, t)| *t),
            expired: Vec::new(),
            origin: Some(origin.clone()),
        });
    }

    /// Whether a client's write for `shard` may be kept here as a hint: hinted handoff is on,
    /// it is a `w=1` write, every replica of the shard is suspected down, there is room, and its
    /// context names no write of the key's partition (a hint cannot wait for those writes, and
    /// without them it could not supersede what they superseded).
    fn hintable(&self, shard: ShardId, op: &Op) -> bool {
        let Op::Put {
            key, context, w, ..
        } = op
        else {
            return false;
        };
        let p = self.cfg.view.partition_of(key);
        self.cfg.hinted_handoff
            && *w == Quorum::N(1)
            && self
                .cfg
                .view
                .shard_members(shard)
                .iter()
                .all(|n| self.is_suspect(n))
            && context
                .iter()
                .all(|(a, _)| self.history.ever_relevant(a, p) == Some(false))
            && self.held_keys() < self.cfg.max_hint_keys
    }

    /// Keys held for partitions this node does not own (hints, and data not yet handed off).
    fn held_keys(&self) -> usize {
        self.retained
            .iter()
            .filter_map(|p| self.merkle.get(*p))
            .map(|t| t.len() as usize)
            .sum()
    }

    /// Accepts a write for an unreachable shard as a durable hint under this node's hint actor
    /// for the key's partition. The partition becomes retained, so handoff delivers it to the
    /// replicas when they answer again, and drops it once all of them hold it.
    fn write_hint(
        &mut self,
        client: ReqId,
        key: Bytes,
        value: Option<NewValue>,
        ctx: VersionVector,
    ) {
        let current = self.storage.get(&key).unwrap_or_default();
        let (ctx, blind) = match self.write_context(&key, &current, value.is_none(), ctx) {
            Ok(c) => c,
            Err(e) => return self.finish(Origin::Client(client), Err(e)),
        };
        let p = self.cfg.view.partition_of(&key);
        let episode = self.dropped.get(&p).map_or(0, |d| d.1);
        let actor = self.actor.hint(p, episode);
        let dot = Dot::new(actor, self.clock.max(actor) + 1);
        self.executed(dot, &key, &value, &ctx, &Origin::Client(client));
        let (_, had_value) = self.apply_new(dot, &key, current, value, &ctx);
        self.needs_sync = true;
        if self.retained.insert(p) {
            self.persist_membership();
        } else {
            // Streams of `p` already under way carry claims and keys from before this hint:
            // they start over, or their completion would drop the partition with the hint in it.
            self.pushes.retain(|(q, _), _| *q != p);
        }
        self.hints_accepted += 1;
        self.probes.hit(Probe::HintAccepted);
        let reply = Response::Written {
            dot,
            context: self.reply_context(&ctx, &key),
            replaced: had_value,
            coordinator_context: blind.then_some(ctx),
        };
        self.finish(Origin::Client(client), Ok(reply));
    }

    /// The context a client write to `key` supersedes with, and whether it is a blind delete;
    /// `current` is what this coordinator holds of the key. A delete without a context takes
    /// `current`'s context: it deletes everything this replica holds (docs/guarantees.md, blind deletes), and only
    /// versions it has not seen survive as siblings. A write that would leave more than
    /// `max_siblings` versions is refused; one that leaves [`WARN_SIBLINGS`] or more is logged.
    fn write_context(
        &mut self,
        key: &[u8],
        current: &VersionSet,
        tombstone: bool,
        ctx: VersionVector,
    ) -> Result<(VersionVector, bool), ReqError> {
        let blind = tombstone && ctx.is_empty();
        let ctx = if blind {
            current.context().clone()
        } else {
            ctx
        };
        let collapses = self.cfg.conflicts == ConflictMode::Lww
            || self.cfg.canary == Some(Canary::LwwWithoutSiblings);
        let siblings = if collapses {
            1
        } else {
            current.siblings_after_write(&ctx)
        };
        let shown = String::from_utf8_lossy(key);
        if siblings > self.cfg.max_siblings {
            self.sibling_refusals += 1;
            self.probes.hit(Probe::SiblingRefused);
            return Err(ReqError::Conflict(format!(
                "key {shown:?} has {} siblings and this write would leave {siblings}, more than \
                 the limit of {}: read the key and write (or delete) it with the read's causal \
                 context to replace them",
                siblings - 1,
                self.cfg.max_siblings
            )));
        }
        if siblings >= WARN_SIBLINGS {
            self.sibling_warnings += 1;
            tracing::warn!(
                key = %shown,
                siblings,
                "key has many siblings; write it with a read's causal context to resolve them"
            );
        }
        Ok((ctx, blind))
    }

    /// Applies a write this node coordinates as `dot` to `set`, the key's current version set:
    /// records the dot, stamps the hybrid time, supersedes what `ctx` covers and stores the
    /// result. Returns the key's new version set and whether it held a live value before.
    fn apply_new(
        &mut self,
        dot: Dot,
        key: &Bytes,
        mut set: VersionSet,
        value: Option<NewValue>,
        ctx: &VersionVector,
    ) -> (VersionSet, bool) {
        self.clock.add(dot);
        self.clock_dirty = true;
        self.hlc = (self.hlc + 1).max(self.wall.as_micros());
        let had_value = set.has_value();
        let ts = self.hlc;
        let (value, content_type, ttl) =
            value.map_or((None, None, None), |(v, c, t)| (Some(v), c, t));
        let version = Version {
            dot,
            value,
            ts,
            content_type,
            expires: ttl.map(|t| ts.saturating_add(t.saturating_mul(1_000_000))),
        };
        set.write(ctx, version);
        self.store(key, set.clone(), had_value);
        (set, had_value)
    }

    /// Stores `set` for `key`, applying the conflict mode and keeping the live-key count.
    fn store(&mut self, key: &[u8], mut set: VersionSet, had_value: bool) {
        if self.cfg.conflicts == ConflictMode::Lww
            || self.cfg.canary == Some(Canary::LwwWithoutSiblings)
        {
            set.collapse_lww();
        }
        let partition = self.cfg.view.partition_of(key);
        let miscount = self.cfg.canary == Some(Canary::MiscountLiveKeys);
        let live = self.live.entry(partition).or_default();
        *live = *live + u64::from(set.has_value()) - u64::from(had_value && !miscount);
        if self.cfg.canary == Some(Canary::EarlyTombstoneReap) && set.is_deleted() {
            return self.erase(key, partition, had_value);
        }
        self.index_expiries(key, &set);
        self.write_indexed(key, partition, Some(&set), had_value);
        self.mesh_note(key, partition);
    }

    /// Writes (or with `None` removes) `key`'s version set and its index entry and segment
    /// summary in one atomic storage write, updating the in-memory tree.
    fn write_indexed(
        &mut self,
        key: &[u8],
        partition: u32,
        set: Option<&VersionSet>,
        had_value: bool,
    ) {
        let segment = merkle::segment_of(key);
        let old = self.storage.digest(partition, segment, key);
        let digest = set.map(merkle::digest);
        let has = set.is_some_and(VersionSet::has_value);
        let summary = self
            .merkle
            .update(partition, key, old, digest, had_value, has);
        let index = IndexWrite {
            partition,
            segment,
            digest,
            summary,
        };
        if self.cfg.canary == Some(Canary::IndexOutsideBatch) {
            // The planted bug: the index goes first, in a write of its own.
            self.storage.put_index(key, &index);
            match set {
                Some(s) => self.storage.put(key, s),
                None => self.storage.remove(key),
            }
        } else {
            self.storage.put_indexed(key, set, &index);
        }
        if self.cfg.sync == SyncMode::Always {
            self.needs_sync = true;
        }
    }

    /// Deletes `key` and its context from storage (tombstone reaping).
    fn remove_key(&mut self, key: &[u8]) {
        let partition = self.cfg.view.partition_of(key);
        let had_value = self.storage.get(key).is_some_and(|s| s.has_value());
        if had_value {
            *self.live.entry(partition).or_default() -= 1;
        }
        self.erase(key, partition, had_value);
    }

    /// Removes `key` from storage and its partition tree; the live counts are the caller's.
    fn erase(&mut self, key: &[u8], partition: u32, had_value: bool) {
        self.write_indexed(key, partition, None, had_value);
    }

    /// Removes every key of `partition` held here, reading the stored index in pages of
    /// [`ERASE_PAGE`] keys (never the whole key list at once).
    pub(super) fn erase_keys(&mut self, partition: u32) {
        let last = (merkle::SEGMENTS - 1) as u16;
        let mut after: Option<(u16, Bytes)> = None;
        loop {
            let from = after.as_ref().map(|(s, k)| (*s, &k[..]));
            let page = self
                .storage
                .index_range(partition, 0..=last, from, ERASE_PAGE);
            let Some((s, k, _)) = page.last() else {
                return;
            };
            after = Some((*s, k.clone()));
            for (_, k, _) in &page {
                self.remove_key(k);
            }
        }
    }

    /// Removes every key of `partition` (its tree and live count go with them).
    pub(super) fn erase_partition(&mut self, partition: u32) {
        self.erase_keys(partition);
        self.live.remove(&partition);
        self.merkle.remove(partition);
    }

    /// Merges a version set received from `from`; returns true when the local state changed.
    ///
    /// Versions whose dots this node applied but no longer holds were superseded or reaped here,
    /// and are dropped before merging: a late copy cannot resurrect a reaped delete. When that
    /// leaves nothing of a tombstone-only set for an absent key, the sender is told to reap too.
    fn absorb(&mut self, key: &[u8], incoming: &VersionSet, from: Option<&NodeId>) -> bool {
        let local = self.storage.get(key);
        let mut set = local.clone().unwrap_or_default();
        let had_value = set.has_value();
        let partition = self.cfg.view.partition_of(key);
        let reaped_here = |v: &Version| {
            self.trusts(partition, v.dot.actor)
                && self.clock.contains(v.dot)
                && set.versions().iter().all(|x| x.dot != v.dot)
        };
        let guard = self.cfg.canary != Some(Canary::EarlyTombstoneReap);
        let stale = guard && incoming.versions().iter().any(reaped_here);
        let changed = if stale {
            let mut kept = incoming.clone();
            kept.retain_versions(|v| !reaped_here(v));
            let dead = local.is_none() && kept.is_empty() && incoming.is_deleted();
            if let (true, Some(peer)) = (dead, from) {
                let dots = incoming.versions().iter().map(|v| v.dot).collect();
                let msg = PeerMsg::Reap {
                    key: Bytes::copy_from_slice(key),
                    dots,
                };
                self.send(peer, msg);
            }
            set.merge(&kept)
        } else {
            set.merge(incoming)
        };
        if self.cfg.canary == Some(Canary::MergeDropsSibling) && set.versions().len() > 1 {
            let first = set.versions()[0].dot;
            set.retain_versions(|v| v.dot != first);
        }
        if stale {
            self.probes.hit(Probe::StaleCopyDropped);
        }
        if changed {
            self.store(key, set, had_value);
        }
        changed
    }

    fn owns(&self, key: &[u8]) -> bool {
        self.shard == Some(self.cfg.view.shard_of_key(key))
    }

    fn read(&mut self, origin: Origin, key: Bytes, ctx: VersionVector, r: Quorum) {
        let members = self.members();
        let need = r.resolve(members.len()).unwrap_or(members.len());
        let set = self.storage.get(&key).unwrap_or_default();
        let old = self.previous_owners(&key);
        if need <= 1 && old.is_empty() {
            let context = self.reply_context(&ctx, &key);
            let versions = self.unexpired(set.versions());
            return self.finish(origin, Ok(Response::Read { versions, context }));
        }
        let rid = self.rid();
        let peers = if need <= 1 { Vec::new() } else { self.peers() };
        for peer in peers.into_iter().chain(old.iter().cloned()) {
            self.send(
                &peer,
                PeerMsg::Fetch {
                    rid,
                    key: key.clone(),
                },
            );
        }
        let pending = PendingRead {
            origin,
            key,
            context: ctx,
            need,
            got: vec![(self.me.clone(), set)],
            old,
            deadline: self.now + self.cfg.quorum_timeout,
        };
        self.requests.await_copies(rid, pending);
    }

    fn complete_read(&mut self, p: PendingRead) {
        let mut merged = VersionSet::new();
        for (_, s) in &p.got {
            merged.merge(s);
        }
        let repair = self.cfg.canary != Some(Canary::NoReadRepair);
        for (node, s) in p.got.iter().filter(|_| repair) {
            if *s == merged {
                continue;
            }
            self.probes.hit(Probe::ReadRepair);
            if *node == self.me {
                self.absorb(&p.key, &merged, None);
            } else {
                let msg = PeerMsg::Repair {
                    key: p.key.clone(),
                    set: merged.clone(),
                };
                self.send(node, msg);
            }
        }
        let mut context = self.reply_context(&p.context, &p.key);
        if !p.old.is_empty() {
            // Versions from a previous owner are named in the token, so a write made with it
            // supersedes them rather than becoming their sibling.
            context.merge(merged.context());
        }
        let versions = self.unexpired(merged.versions());
        self.finish(p.origin, Ok(Response::Read { versions, context }));
    }

    /// Runs parked operations whose context is now covered.
    fn wake_parked(&mut self) {
        for p in self.requests.take_parked() {
            let covered = match (p.op.context(), p.op.key()) {
                (Some(c), Some(k)) => self.covers(c, k),
                _ => false,
            };
            let writable =
                matches!(p.op, Op::Get { .. }) || p.op.key().is_some_and(|k| self.may_write(k));
            let skip = self.cfg.canary == Some(Canary::SkipCausalWait);
            if (skip || covered) && writable {
                self.run(p.origin, p.op);
            } else {
                self.requests.park(p);
            }
        }
    }

    fn on_peer(&mut self, from: NodeId, msg: PeerMsg) {
        match msg {
            PeerMsg::Forward { rid, op, epoch } => {
                if epoch < self.cfg.view.epoch {
                    self.send_views(&from, epoch);
                }
                match self.target_shard(&op) {
                    Some(s) if Some(s) == self.shard => {
                        self.execute(Origin::Proxy { from, rid }, op);
                    }
                    _ => {
                        let epoch = self.cfg.view.epoch;
                        self.send(&from, PeerMsg::NotReplica { rid, epoch });
                    }
                }
            }
            PeerMsg::NotReplica { rid, epoch } => self.on_not_replica(rid, epoch),
            PeerMsg::ForwardReply {
                rid,
                served_by,
                result,
            } => self.on_forward_reply(rid, served_by, result),
            PeerMsg::Replicate { key, set, dots } => {
                if !self.owns(&key) {
                    return;
                }
                self.absorb(&key, &set, Some(&from));
                for d in &dots {
                    self.clock_dirty |= self.clock.add(*d);
                }
                self.send(&from, PeerMsg::ReplicateAck { key, dots });
                self.wake_parked();
            }
            PeerMsg::ReplicateAck { key, dots } => {
                self.outbox.ack(&from, &key, &dots);
                self.replicate_ready(Some(&from));
                let peers = self.peers();
                for d in &dots {
                    if let Some((k, acked)) = self.tombstones.get_mut(d) {
                        acked.insert(from.clone());
                        // Every replica of the current view, not merely as many acknowledgements.
                        if peers.iter().all(|p| acked.contains(p)) {
                            let due = self.now + self.cfg.tombstone_grace;
                            self.reaps.insert(*d, (k.clone(), due));
                            self.tombstones.remove(d);
                        }
                    }
                }
                for d in dots {
                    if let Some(w) = self.requests.ack(d, &from) {
                        self.finish_early(w.origin, Ok(w.reply));
                    }
                }
            }
            PeerMsg::Fetch { rid, key } => {
                if self.owns(&key) || self.retained.contains(&self.cfg.view.partition_of(&key)) {
                    let set = self.storage.get(&key).unwrap_or_default();
                    self.send(&from, PeerMsg::FetchReply { rid, set });
                }
            }
            PeerMsg::FetchReply { rid, set } => {
                if let Some(p) = self.requests.copy(rid, from, set) {
                    self.complete_read(p);
                }
            }
            PeerMsg::Repair { key, set } => {
                if self.owns(&key) {
                    self.absorb(&key, &set, None);
                }
            }
            PeerMsg::RepairBatch { sets } => self.on_repair_batch(sets),
            PeerMsg::Reap { key, dots } => {
                let reapable = self.storage.get(&key).is_some_and(|s| {
                    s.is_deleted() && s.versions().iter().all(|v| dots.contains(&v.dot))
                });
                if reapable {
                    self.remove_key(&key);
                    self.aae_stats.tombstones_reaped += 1;
                    self.probes.hit(Probe::TombstoneReaped);
                }
            }
            msg @ (PeerMsg::AaeRoots { .. }
            | PeerMsg::AaeBranches { .. }
            | PeerMsg::AaeSegmentsReq { .. }
            | PeerMsg::AaeSegments { .. }
            | PeerMsg::AaeKeys { .. }
            | PeerMsg::AaeDiff { .. }
            | PeerMsg::AaeFinish { .. }) => self.on_aae(from, msg),
            msg @ (PeerMsg::MeshLayoutReq { .. }
            | PeerMsg::MeshLayout { .. }
            | PeerMsg::MeshSubscribe { .. }
            | PeerMsg::MeshPush { .. }
            | PeerMsg::MeshSyncRoot { .. }
            | PeerMsg::MeshSyncBranches { .. }
            | PeerMsg::MeshSyncRefused { .. }
            | PeerMsg::MeshSyncSegReq { .. }
            | PeerMsg::MeshSyncSegs { .. }
            | PeerMsg::MeshSyncKeys { .. }
            | PeerMsg::MeshSyncDiff { .. }) => self.on_mesh(from, msg),
            PeerMsg::ListPart {
                rid,
                start,
                end,
                after,
                limit,
                full,
            } => {
                let (entries, more) = self.list_local(&start, &end, &after, limit, full);
                self.send(&from, PeerMsg::ListPartReply { rid, entries, more });
            }
            PeerMsg::ListPartReply { rid, entries, more } => self.on_list_part(rid, entries, more),
            PeerMsg::Ping { epoch, views } => {
                self.compare_views(&from, epoch, views);
                let (epoch, views) = (self.cfg.view.epoch, self.history.count());
                self.send(&from, PeerMsg::Pong { epoch, views });
            }
            PeerMsg::Pong { epoch, views } => self.compare_views(&from, epoch, views),
            PeerMsg::Views { views } => self.learn(views),
            PeerMsg::Join { node } => {
                // A node asking for itself has answered as a joining node by asking; a request
                // on behalf of another node is probed like a client's.
                let asked_itself = node == from;
                self.admit(None, node, asked_itself);
                self.send_views(&from, 0);
            }
            PeerMsg::JoinProbe { rid } => {
                let (epoch, nodes) = (self.cfg.view.epoch, self.cfg.view.nodes.clone());
                self.send(&from, PeerMsg::JoinAnswer { rid, epoch, nodes });
            }
            PeerMsg::JoinAnswer { rid, epoch, nodes } => {
                self.on_join_answer(&from, rid, epoch, nodes)
            }
            msg @ (PeerMsg::HandoffBatch { .. } | PeerMsg::HandoffAck { .. }) => {
                self.on_handoff(from, msg)
            }
            PeerMsg::FloorCheck {
                actor,
                since,
                olds,
                partitions,
            } => self.on_floor_check(&from, actor, since, &olds, &partitions),
            PeerMsg::FloorAck { actor, partitions } => self.on_floor_ack(&from, actor, &partitions),
            msg @ (PeerMsg::StrongPrepare { .. }
            | PeerMsg::StrongPromise { .. }
            | PeerMsg::StrongAccept { .. }
            | PeerMsg::StrongAccepted { .. }
            | PeerMsg::StrongHello { .. }
            | PeerMsg::StrongHelloReply { .. }
            | PeerMsg::StrongSeal { .. }
            | PeerMsg::StrongSealed { .. }) => self.on_strong(from, msg),
        }
    }

    /// Whether forwarding `f` goes on to its next replica (not under the `no-proxy-failover`
    /// canary, which gives up after the first).
    fn may_fail_over(&self, f: &Forwarding) -> bool {
        f.can_fail_over(self.now) && self.cfg.canary != Some(Canary::NoProxyFailover)
    }

    fn on_forward_reply(
        &mut self,
        rid: Rid,
        served_by: NodeId,
        result: Result<Response, ReqError>,
    ) {
        let Some(f) = self.proxy.pending.remove(&rid) else {
            return;
        };
        // Another replica may satisfy the context; a write refused for it never applied. A write
        // that was Unavailable may have applied, so it is not sent elsewhere.
        let retry = match (&f.op, &result) {
            (_, Err(ReqError::Unsatisfiable)) => true,
            (Op::Put { .. } | Op::Strong { .. }, _) => false,
            (_, Err(ReqError::Unavailable(_))) => true,
            _ => false,
        };
        if retry && self.may_fail_over(&f) {
            self.proxy.failovers += 1;
            self.probes.hit(Probe::ProxyFailover);
            return self.attempt(f);
        }
        self.out.replies.push(Reply {
            id: f.client,
            served_by,
            result,
        });
    }

    fn start_list(&mut self, req: Request) {
        let Op::List {
            start,
            end,
            after,
            limit,
            full,
        } = req.op
        else {
            unreachable!("only lists have no target shard")
        };
        let mut pending = PendingList {
            client: req.id,
            limit,
            full,
            waiting: BTreeSet::new(),
            entries: Vec::new(),
            more: false,
            cutoff: None,
            deadline: self.now + self.cfg.quorum_timeout,
        };
        // A full listing (a backup page) asks each shard for its share of the page only: keys
        // hash evenly over shards, so a shard's first `limit / shards` keys reach about as far
        // as the page does, and the cutoff of `PendingList::add` ends the page where the
        // shortest part ends. Asking each shard for `limit` keys scanned, shipped and dropped
        // (shards - 1) / shards of them, so a walk of every key read each key `shards` times.
        // A user's listing keeps asking for `limit` from each, so its pages stay full.
        let shards = self.cfg.view.shard_count();
        let part_limit = if full {
            limit.div_ceil(shards.max(1))
        } else {
            limit
        };
        for shard in 0..shards {
            if Some(shard) == self.shard {
                let (entries, more) = self.list_local(&start, &end, &after, part_limit, full);
                pending.add(entries, more);
            } else {
                let rid = self.rid();
                let to = self.candidates(shard)[0].clone();
                let msg = PeerMsg::ListPart {
                    rid,
                    start: start.clone(),
                    end: end.clone(),
                    after: after.clone(),
                    limit: part_limit,
                    full,
                };
                self.send(&to, msg);
                pending.waiting.insert(rid);
            }
        }
        if pending.waiting.is_empty() {
            self.complete_list(pending);
        } else {
            self.requests.await_pages(req.id, pending);
        }
    }

    fn on_list_part(&mut self, rid: Rid, entries: Vec<(Bytes, VersionSet)>, more: bool) {
        if let Some(l) = self.requests.page(rid, entries, more) {
            self.complete_list(l);
        }
    }

    /// Merges shard pages: the first `limit` keys overall, up to the cutoff of the parts that
    /// stopped early and within `max_list_bytes` (at least one key). Each shard returned its
    /// keys in order up to its own limits, so no key below the page's last one is missing.
    fn complete_list(&mut self, mut l: PendingList) {
        let full = l.full;
        l.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let limit = l.limit as usize;
        let before = l.entries.len();
        if let Some(cut) = &l.cutoff {
            l.entries.retain(|(k, _)| k <= cut);
        }
        l.entries.truncate(limit);
        let mut bytes = 0;
        let fit = l
            .entries
            .iter()
            .position(|(k, s)| {
                bytes += outbox::copy_bytes(k, s);
                bytes > self.cfg.max_list_bytes
            })
            .unwrap_or(l.entries.len())
            .max(1);
        l.entries.truncate(fit);
        let more = l.more || l.entries.len() < before;
        let next = if more {
            l.entries.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let entries = l
            .entries
            .into_iter()
            .map(|(key, s)| ListEntry {
                key,
                values: s
                    .versions()
                    .iter()
                    .filter_map(|v| v.value.clone())
                    .collect(),
                set: full.then_some(s),
            })
            .collect();
        self.out.replies.push(Reply {
            id: l.client,
            served_by: self.me.clone(),
            result: Ok(Response::Listed { entries, next }),
        });
    }

    /// Up to `limit` live keys (with `full`, also tombstone-only ones) of this replica in
    /// `[start, end)` after `after`, within `max_list_bytes` (at least one key); `more` when
    /// the scan stopped at either limit.
    fn list_local(
        &self,
        start: &Option<Bytes>,
        end: &Option<Bytes>,
        after: &Option<Bytes>,
        limit: u32,
        full: bool,
    ) -> (Vec<(Bytes, VersionSet)>, bool) {
        let limit = limit as usize;
        let mut lower: Bound<Bytes> = match (start, after) {
            (Some(s), Some(a)) if a >= s => Bound::Excluded(a.clone()),
            (_, Some(a)) if start.is_none() => Bound::Excluded(a.clone()),
            (Some(s), _) => Bound::Included(s.clone()),
            (None, None) => Bound::Unbounded,
            (None, Some(_)) => unreachable!("covered by the second arm"),
        };
        let upper = end
            .as_ref()
            .map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_ref()));
        let mut out = Vec::new();
        let mut bytes = 0;
        let chunk = (limit + 1).max(64);
        loop {
            let page = self
                .storage
                .range(lower.as_ref().map(|b| b.as_ref()), upper, chunk);
            let exhausted = page.len() < chunk;
            for (k, mut s) in page {
                lower = Bound::Excluded(k.clone());
                if !full {
                    // A listing of live values hides expired ones, as a read does.
                    let live = self.unexpired(s.versions());
                    s.retain_versions(|v| live.iter().any(|l| l.dot == v.dot));
                }
                if (full || s.has_value()) && self.owns(&k) {
                    bytes += outbox::copy_bytes(&k, &s);
                    if out.len() == limit || (!out.is_empty() && bytes > self.cfg.max_list_bytes) {
                        return (out, true);
                    }
                    out.push((k, s));
                }
            }
            if exhausted {
                return (out, false);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = self.now;
        let expired = self.requests.expire(now);
        // Causal waits that ran out.
        for p in expired.parked {
            self.probes.hit(Probe::CausalWaitExpired);
            self.finish(p.origin, Err(ReqError::Unsatisfiable));
        }
        // Writes still short of `w` acknowledgements: indeterminate.
        for w in expired.writes {
            self.probes.hit(Probe::WriteIndeterminate);
            let msg = format!(
                "only {} of {} replicas acknowledged in time; the write may still apply",
                w.acked.len(),
                w.need
            );
            self.finish(w.origin, Err(ReqError::Unavailable(msg)));
        }
        for r in expired.reads {
            let msg = format!(
                "only {} of {} replicas answered in time",
                r.got.len(),
                r.need
            );
            self.finish(r.origin, Err(ReqError::Unavailable(msg)));
        }
        for id in expired.lists {
            self.out.replies.push(Reply {
                id,
                served_by: self.me.clone(),
                result: Err(ReqError::Unavailable(
                    "a shard did not answer the listing in time".into(),
                )),
            });
        }
        // Forwarded requests whose replica is silent: next replica, or give up.
        for f in self.proxy.expired(now) {
            self.last_heard
                .entry(f.current().clone())
                .or_insert(Time::ZERO);
            if self.may_fail_over(&f) {
                self.proxy.failovers += 1;
                self.probes.hit(Probe::ProxyFailover);
                self.attempt(f);
            } else {
                self.out.replies.push(Reply {
                    id: f.client,
                    served_by: self.me.clone(),
                    result: Err(ReqError::Unavailable(
                        "no replica of the key's shard answered in time".into(),
                    )),
                });
            }
        }
        // Replication presumed lost, then replication waiting for room in a peer's budget.
        let storage = &self.storage;
        let resends = self.outbox.overdue(
            now,
            self.cfg.retry_interval,
            self.cfg.retry_batch,
            &mut self.rng,
            |k| {
                let set = storage.get(k).unwrap_or_default();
                let bytes = outbox::copy_bytes(k, &set);
                (set, bytes)
            },
        );
        for (peer, key, dots, set) in resends {
            self.send(&peer, PeerMsg::Replicate { key, set, dots });
        }
        self.replicate_ready(None);
        self.floor_tick();
        self.reap_due();
        self.expiry_tick();
        self.anti_entropy_tick();
        self.mesh_tick();
        self.membership_tick();
        self.join_tick();
        self.handoff_tick();
        // Liveness pings, with jitter so nodes do not beat in lockstep.
        if now >= self.next_heartbeat {
            let jitter = self
                .rng
                .random_range(0..=self.cfg.heartbeat_interval.as_micros() as u64 / 4);
            self.next_heartbeat =
                now + self.cfg.heartbeat_interval + std::time::Duration::from_micros(jitter);
            let peers: Vec<NodeId> = self
                .cfg
                .view
                .nodes
                .iter()
                .filter(|n| **n != self.me)
                .cloned()
                .collect();
            let (epoch, views) = (self.cfg.view.epoch, self.history.count());
            for p in peers {
                self.send(&p, PeerMsg::Ping { epoch, views });
            }
        }
    }
}

/// Partition trees and live-key counts of everything in `storage`; every partition holding a
/// key (live or tombstone) has an entry in the counts.
/// After an unclean stop with `sync = always`: a crash during a turn's sync can keep a prefix of
/// the turn's writes, so storage may hold dots of `actor` the persisted clock (written after the
/// data) does not record. Dots are issued, and their writes stored, in counter order: every dot
/// of `actor` up to the highest one stored was applied. The clock records them, so the counter
/// continues above them and no dot is issued twice (G7).
fn recover_torn_turn<S: Storage>(storage: &S, actor: Actor, clock: &mut NodeClock) {
    let mut top = 0;
    storage.for_each(&mut |_, s| {
        let own = s.versions().iter().filter(|v| v.dot.actor == actor);
        top = own.map(|v| v.dot.counter).fold(top, u64::max);
    });
    clock.add_upto(actor, top);
}

/// Records `cluster` as the cluster id of the data in `storage` at its first start, or checks
/// it against the recorded one: a node's dots carry its cluster id, so a directory written under
/// one id must never issue dots under another. A directory written before ids were recorded
/// holds cluster-0 data if it holds an actor (and no data otherwise). The record is staged with
/// the node's first turn.
pub fn claim_cluster<S: Storage>(storage: &mut S, cluster: u32) -> Result<(), String> {
    let recorded: Option<u32> = match storage.meta_get(META_CLUSTER) {
        Some(b) => Some(decode(&b).ok_or("the recorded cluster id is unreadable")?),
        None => storage.meta_get(META_ACTOR).map(|_| 0),
    };
    match recorded {
        Some(r) if r != cluster => Err(format!(
            "this data directory belongs to cluster id {r}, not {cluster}: its dots carry \
             that id; start with --cluster-id {r} (0: no --cluster-id) or an empty data directory"
        )),
        _ => {
            storage.meta_put(META_CLUSTER, &encode(&cluster));
            Ok(())
        }
    }
}

/// The partition trees and live-key counts, from the stored segment summaries (no scan of the
/// data). An index built under another partition count (or none: a directory written before
/// the index existed) is rebuilt from the data first; every partition holding a key (live or
/// tombstone) has an entry in the counts.
fn index<S: Storage>(storage: &mut S, partitions: u32) -> (Merkle, BTreeMap<u32, u64>) {
    let built: Option<u32> = storage.meta_get(META_INDEX).and_then(|b| decode(&b));
    if built != Some(partitions) {
        rebuild_index(storage, partitions);
    }
    let merkle = Merkle::from_summaries(&storage.summaries());
    let live = merkle
        .partitions()
        .filter_map(|p| {
            merkle
                .get(p)
                .filter(|t| !t.is_empty())
                .map(|t| (p, t.live()))
        })
        .collect();
    (merkle, live)
}

/// Rewrites the whole index from the data under `partitions` partitions (O(keys): only when the
/// partition count changed or the directory predates the index). The marker is written last:
/// storage is prefix-durable, so a crash part-way leaves no marker and the next start rebuilds.
fn rebuild_index<S: Storage>(storage: &mut S, partitions: u32) {
    storage.reset_index();
    let mut entries = Vec::new();
    storage.for_each(&mut |k, s| {
        entries.push((Bytes::copy_from_slice(k), merkle::digest(s), s.has_value()));
    });
    let mut merkle = Merkle::default();
    for (k, d, live) in entries {
        let partition = partition_of(&k, partitions);
        let summary = merkle.update(partition, &k, None, Some(d), false, live);
        let index = IndexWrite {
            partition,
            segment: merkle::segment_of(&k),
            digest: Some(d),
            summary,
        };
        storage.put_index(&k, &index);
    }
    storage.meta_put(META_INDEX, &encode(&partitions));
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("in-memory encoding cannot fail")
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}
