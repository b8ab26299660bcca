//! The multi-cluster mesh (docs/mesh.md): this node's side of replication between clusters.
//!
//! Each node of a receiving cluster pulls, for every partition it owns, from each upstream
//! cluster listed in [`crate::core::Config::mesh_upstreams`]:
//! - **layout**: the configured upstream node tells its cluster id, partition count and each
//!   partition's owners (`MeshLayoutReq`/`MeshLayout`). Partition counts must match (a key's
//!   partition is then the same in both clusters, whatever their shard layouts); a mismatch is
//!   refused, reported in [`MeshStatus`], and nothing is exchanged with that upstream.
//! - **real-time feed**: the node subscribes (a lease, renewed every second) at one owner of each
//!   of its partitions there; that owner queues every key of those partitions it stores, in a
//!   bounded queue per subscriber (a key beyond [`crate::core::Config::mesh_queue`] is dropped and
//!   counted, never blocking a write), and pushes the keys' current version sets each tick.
//! - **full sync**: on a timer, one partition against one upstream owner, Merkle tree top-down
//!   (root, branches, segments, key digests) over the same per-partition trees and stored digests
//!   as the cluster's own anti-entropy, so traffic grows with the difference. A step left
//!   unanswered for one `mesh_sync_interval` (or three measured round trips to that cluster,
//!   when longer) abandons the sync, so one lost in a cut never holds back the next round past a
//!   heal for longer than that. The upstream's
//!   vouched clock of the partition ([`Node::vouched`], plus its own mesh floor) is taken before
//!   the comparison; once every difference was repaired, this node reflects all of it and joins
//!   it into its *mesh floor* of the partition.
//!
//! - **pull**: an operator's `POST /v1/admin/aae/pull` naming a node of an upstream
//!   ([`Node::mesh_pull`], e.g. to bootstrap a new cluster) runs one full sync of every
//!   partition this node owns against that upstream at once, and answers the sums once all ended.
//!
//! Received version sets are merged with the DVV join as they are (their dots are never
//! re-stamped), stored and indexed like any copy, and sent to the shard's other replicas as a
//! repair. Causality: a context entry of another cluster's actor is held for a partition only
//! through the mesh floor ([`Node::mesh_holds`]), so a token from another cluster waits here
//! until a full sync covered it, then 503s; never a stale answer. Tokens returned here name the
//! floor ([`Node::mesh_floor`]), so a context read here supersedes the foreign versions it covers. Floors live in memory only:
//! a restart or a view change forgets them (a later sync rebuilds them), which is conservative.

use super::{Node, Origin};
use crate::core::aae::encoded_len;
use crate::core::clock::VersionVector;
use crate::core::config::Canary;
use crate::core::dot::Actor;
use crate::core::dvv::VersionSet;
use crate::core::merkle::{BRANCHES, PartitionTree, SEGMENTS};
use crate::core::message::PeerMsg;
use crate::core::outbox;
use crate::core::request::{ReqError, ReqId, Response, Rid};
use crate::core::ring::{Epoch, NodeId};
use crate::core::storage::Storage;
use crate::core::time::Time;
use crate::core::validate::Rejection;
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a subscription lasts unless renewed.
const LEASE: Duration = Duration::from_secs(3);
/// How often a node renews its subscriptions and refreshes upstream layouts.
const RENEW: Duration = Duration::from_secs(1);
/// Most keys one push carries.
const PUSH_BATCH: usize = 256;

/// An upstream cluster's layout as its configured node reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub cluster: u32,
    /// The epoch of the upstream view the owners are of: an actor of that cluster issued under
    /// it wrote only to the partitions its node owns there ([`Node::mesh_never_wrote`]).
    pub epoch: Epoch,
    pub partitions: u32,
    /// Owners of each partition, in the upstream's view order.
    pub owners: Vec<Vec<NodeId>>,
}

/// Mesh counters of one upstream, as `GET /v1/mesh` shows them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub node: NodeId,
    /// The upstream's cluster id, once its layout arrived.
    pub cluster: Option<u32>,
    /// Why the upstream is refused (a partition-count mismatch, a cluster id equal to ours).
    pub refused: Option<String>,
    /// Driver time (µs) of the last message received from the upstream; 0 for never.
    pub last_heard_us: u64,
    /// Keys received through the real-time feed.
    pub keys_pushed: u64,
    /// Keys the feed changed here.
    pub keys_applied: u64,
    pub full_syncs: u64,
    pub full_syncs_failed: u64,
    /// Keys a full sync repaired here (what the feed had missed).
    pub keys_repaired: u64,
    pub bytes: u64,
    /// Driver time (µs) of the last completed full sync, per partition.
    pub last_full_sync_us: BTreeMap<u32, u64>,
}

/// The mesh as this node sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MeshStatus {
    pub cluster: u32,
    pub upstreams: Vec<UpstreamStatus>,
    /// Downstream subscribers fed from here, with the keys queued and dropped for each.
    pub subscribers: BTreeMap<NodeId, (usize, u64)>,
    /// Keys dropped from every subscriber's full queue since this node started (never
    /// decreases, unlike the per-subscriber counts, which go with an expired subscription).
    pub queue_drops: u64,
}

/// A downstream node fed from here.
#[derive(Debug)]
struct Subscriber {
    partitions: BTreeSet<u32>,
    until: Time,
    queue: BTreeSet<Bytes>,
    drops: u64,
}

/// The full sync this node runs, if any.
#[derive(Debug)]
struct Sync {
    upstream: usize,
    peer: NodeId,
    partition: u32,
    /// When the sync is abandoned: a step timeout ([`Node::mesh_step_timeout`]) after its last
    /// step was sent, so a sync whose messages a cut lost never holds back the next round for
    /// longer than that.
    deadline: Time,
    /// When its last step was sent (an answer measures the round trip).
    sent: Time,
    /// The upstream's vouched clock of the partition as of its branch hashes.
    vouched: Option<VersionVector>,
    truncated: bool,
    /// Bytes of the sync's messages both ways.
    bytes: u64,
    /// Keys the sync changed here.
    repaired: u64,
}

/// A pull an operator asked for ([`Node::mesh_pull`]): one full sync of every partition this
/// node owns against one upstream, answered once every one of them ended.
#[derive(Debug)]
struct Pull {
    id: ReqId,
    peer: NodeId,
    /// The pull's syncs still running (a subset of [`Mesh::syncs`]).
    running: BTreeSet<Rid>,
    keys_repaired: u64,
    bytes: u64,
    /// False once one of its syncs failed or was cut short by its key budget.
    complete: bool,
}

/// The measured round trip to one upstream cluster (see [`Node::mesh_step_timeout`]).
#[derive(Debug, Default)]
struct RoundTrip {
    /// The layout request in flight: its rid and when it left.
    asked: Option<(Rid, Time)>,
    /// Smoothed round trip (RFC 6298's SRTT), µs; 0 until one is measured.
    srtt_us: u64,
}

impl RoundTrip {
    fn sample(&mut self, rtt: Duration) {
        let us = rtt.as_micros() as u64;
        self.srtt_us = match self.srtt_us {
            0 => us.max(1),
            s => (7 * s + us) / 8,
        };
    }
}

/// The node's mesh state (see the module documentation).
#[derive(Debug, Default)]
pub struct Mesh {
    upstreams: Vec<(UpstreamStatus, Option<Layout>)>,
    /// Round trips to each upstream, by the index of `upstreams`.
    rtt: Vec<RoundTrip>,
    /// Per owned partition: every dot of other clusters this node holds (see [`Node::mesh_holds`]).
    floors: BTreeMap<u32, VersionVector>,
    /// The view epoch the floors were gathered under.
    epoch: Epoch,
    subscribers: BTreeMap<NodeId, Subscriber>,
    /// Keys dropped from full subscriber queues since start.
    queue_drops: u64,
    /// Running full syncs: one per owned partition at most, and those of a pull.
    syncs: BTreeMap<Rid, Sync>,
    /// The operator's pull, if one runs (one at a time).
    pull: Option<Pull>,
    next_renew: Time,
    next_sync: Time,
    /// Full-sync rounds started: partition `p` of round `turn` syncs against usable upstream
    /// `(turn + p) % usable`, so every partition meets every upstream in turn (a counter bumped
    /// per partition instead gave a partition the same upstream every round whenever a round
    /// started as many syncs as a multiple of the upstream count, and a cluster it reached
    /// only through another one's floor never synced it directly).
    turn: usize,
}

impl Mesh {
    pub fn new(cfg: &crate::core::Config, now: Time) -> Self {
        Mesh {
            upstreams: cfg
                .mesh_upstreams
                .iter()
                .map(|u| {
                    let s = UpstreamStatus {
                        name: u.name.clone(),
                        node: u.node.clone(),
                        ..UpstreamStatus::default()
                    };
                    (s, None)
                })
                .collect(),
            rtt: cfg
                .mesh_upstreams
                .iter()
                .map(|_| RoundTrip::default())
                .collect(),
            epoch: cfg.view.epoch,
            next_renew: now,
            next_sync: now + cfg.mesh_sync_interval,
            ..Mesh::default()
        }
    }

    fn upstream_of(&self, from: &NodeId) -> Option<usize> {
        self.upstreams.iter().position(|(s, l)| {
            s.node == *from
                || l.as_ref()
                    .is_some_and(|l| l.owners.iter().flatten().any(|n| n == from))
        })
    }
}

impl<S: Storage> Node<S> {
    /// Whether this node takes `msg` from `from` (docs/mesh.md, "Security"); [`Node::handle`]
    /// drops what it refuses, and a driver may ask first to count and log the refusal.
    /// - A mesh message only in a mesh (`mesh_member` or upstreams set): a cluster outside any
    ///   mesh reaps tombstones, so feeding another cluster from it would resurrect deleted keys.
    /// - In a mesh, a node outside every view this node knows (a node of another cluster, as far
    ///   as this node can tell) may send only mesh messages and the join handshake: a `Join`
    ///   naming itself, or the `JoinAnswer` to a probe this node sent it. A node in no view
    ///   (joining) takes everything, as outside a mesh.
    pub fn admits(&self, from: &NodeId, msg: &PeerMsg) -> Result<(), Rejection> {
        let in_mesh = self.mesh_keeps_tombstones();
        if msg.is_mesh() {
            if in_mesh {
                return Ok(());
            }
            return Err(Rejection {
                reason: "not_in_mesh",
                detail: format!(
                    "a {} message, but this node is in no mesh (no --mesh-member or --mesh-upstream)",
                    msg.kind()
                ),
            });
        }
        if !in_mesh || self.cfg.view.is_joining() || *from == self.me {
            return Ok(());
        }
        if self.history.views().any(|v| v.nodes.contains(from)) {
            return Ok(());
        }
        let handshake = match msg {
            PeerMsg::Join { node } => node == from,
            PeerMsg::JoinAnswer { .. } => self.probing(from),
            _ => false,
        };
        if handshake {
            return Ok(());
        }
        Err(Rejection {
            reason: "outsider",
            detail: format!(
                "a {} message from {from}, which is in none of this node's views: a node of \
                 another cluster may send only mesh messages",
                msg.kind()
            ),
        })
    }

    /// Whether `node` is a node of an upstream cluster: its configured node, or an owner in the
    /// layout it reported.
    pub(super) fn mesh_upstream_of(&self, node: &NodeId) -> bool {
        self.mesh.upstream_of(node).is_some()
    }

    /// Whether `actor` was issued by another cluster of the mesh.
    pub(super) fn foreign(&self, actor: Actor) -> bool {
        actor.cluster() != self.cfg.cluster
    }

    /// Whether this replica holds every dot of the foreign actor `actor` up to `n` (and, as a
    /// context entry does, the older actors of its lineage) to `partition`: its mesh floor,
    /// built only by completed full syncs, covers them.
    /// An actor that never wrote to `partition` holds nothing there: once the floor covers its
    /// lineage's older actors, any counter of it is held ([`Node::mesh_never_wrote`]). Without
    /// that, a token naming a write of another cluster to one partition could never be served
    /// for a key of a partition the writing node does not own: the upstream's vouched clock
    /// names only the actors that wrote to a partition, so the floor never reached the token.
    pub(super) fn mesh_holds(&self, partition: u32, actor: Actor, n: u64) -> bool {
        self.mesh.floors.get(&partition).is_some_and(|f| {
            f.covers_older(actor) && (f.get(actor) >= n || self.mesh_never_wrote(partition, actor))
        })
    }

    /// Whether the foreign `actor` wrote nothing to `partition`, by the layout of its cluster
    /// when that is a direct upstream: an actor is issued under one view and coordinates writes
    /// only to the partitions its node owns in it, so an actor of the layout's epoch whose node
    /// is not among the partition's owners there never wrote to it. Unknown (false) for an
    /// actor of another epoch or of a cluster this node does not pull from directly, for hint
    /// and loader actors, and when a node's address hash matches an owner's.
    pub(super) fn mesh_never_wrote(&self, partition: u32, actor: Actor) -> bool {
        if actor.hinted_partition().is_some() || actor.is_loader() {
            return false;
        }
        self.mesh.upstreams.iter().any(|(s, l)| {
            l.as_ref().is_some_and(|l| {
                s.refused.is_none()
                    && l.cluster == actor.cluster()
                    && l.epoch == actor.epoch()
                    && l.owners.get(partition as usize).is_some_and(|o| {
                        !o.iter()
                            .any(|n| crate::core::ring::node_hash(n) == actor.node())
                    })
            })
        })
    }

    /// The dots of other clusters this replica holds to `partition` (its mesh floor), which
    /// a token it returns names, so a write with a context read here supersedes those
    /// clusters' versions it saw. Empty outside a mesh.
    pub(super) fn mesh_floor(&self, partition: u32) -> VersionVector {
        self.mesh
            .floors
            .get(&partition)
            .cloned()
            .unwrap_or_default()
    }

    /// Tombstones are never reaped in a mesh: no node can tell that every cluster holds one.
    pub(super) fn mesh_keeps_tombstones(&self) -> bool {
        self.cfg.mesh_member || !self.cfg.mesh_upstreams.is_empty()
    }

    pub(super) fn mesh_status(&self) -> MeshStatus {
        MeshStatus {
            cluster: self.cfg.cluster,
            upstreams: self.mesh.upstreams.iter().map(|(s, _)| s.clone()).collect(),
            subscribers: self
                .mesh
                .subscribers
                .iter()
                .map(|(n, s)| (n.clone(), (s.queue.len(), s.drops)))
                .collect(),
            queue_drops: self.mesh.queue_drops,
        }
    }

    /// Queues `key` (just stored) for every subscriber of its partition. Never blocks: a full
    /// queue drops the key and counts it.
    pub(super) fn mesh_note(&mut self, key: &[u8], partition: u32) {
        if self.mesh.subscribers.is_empty() {
            return;
        }
        let cap = self.cfg.mesh_queue;
        let mut dropped = 0;
        for s in self.mesh.subscribers.values_mut() {
            if !s.partitions.contains(&partition) || s.queue.contains(key) {
                continue;
            }
            if s.queue.len() >= cap {
                s.drops += 1;
                dropped += 1;
            } else {
                s.queue.insert(Bytes::copy_from_slice(key));
            }
        }
        self.mesh.queue_drops += dropped;
        if dropped > 0 {
            self.probes.hit(crate::core::Probe::MeshQueueDropped);
        }
    }

    /// The clock this node vouches for on `partition` to a downstream cluster: its own vouched
    /// clock and its mesh floor (so a chain of clusters passes coverage on).
    fn mesh_vouched(&self, partition: u32) -> VersionVector {
        let mut v = self.vouched(partition);
        if let Some(f) = self.mesh.floors.get(&partition) {
            v.merge(f);
        }
        v
    }

    pub(super) fn mesh_tick(&mut self) {
        let now = self.now;
        if self.mesh.epoch != self.cfg.view.epoch {
            self.mesh.floors.clear();
            self.mesh.epoch = self.cfg.view.epoch;
        }
        self.mesh.subscribers.retain(|_, s| s.until > now);
        self.mesh_push();
        if self.mesh.upstreams.is_empty() {
            return;
        }
        if now >= self.mesh.next_renew {
            self.mesh.next_renew = now + RENEW;
            self.mesh_renew();
        }
        let late: Vec<Rid> = self
            .mesh
            .syncs
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for rid in late {
            let s = self.mesh.syncs.remove(&rid).expect("listed above");
            self.mesh_end_sync(rid, &s, false);
        }
        if now >= self.mesh.next_sync && self.mesh.syncs.is_empty() {
            let interval = self.cfg.mesh_sync_interval.as_micros() as u64;
            let jitter = self.rng.random_range(0..=interval / 2);
            self.mesh.next_sync = now + Duration::from_micros(interval * 3 / 4 + jitter);
            self.mesh.turn = self.mesh.turn.wrapping_add(1);
            if self.cfg.canary != Some(Canary::MeshDropQueueNoSync) {
                for p in self.shard_partitions() {
                    self.mesh_start_sync(p);
                }
            }
        }
    }

    /// Sends each subscriber up to a batch of its queued keys' current version sets.
    fn mesh_push(&mut self) {
        let names: Vec<NodeId> = self.mesh.subscribers.keys().cloned().collect();
        for to in names {
            let s = self.mesh.subscribers.get_mut(&to).expect("listed above");
            let keys: Vec<Bytes> = (0..PUSH_BATCH).map_while(|_| s.queue.pop_first()).collect();
            if keys.is_empty() {
                continue;
            }
            let sets: Vec<(Bytes, VersionSet)> = keys
                .into_iter()
                .filter_map(|k| self.storage.get(&k).map(|s| (k, s)))
                .collect();
            if !sets.is_empty() {
                self.send(&to, PeerMsg::MeshPush { sets });
            }
        }
    }

    /// Asks each upstream for its layout, and renews this node's subscriptions there: one owner
    /// per owned partition (the first, rotating when syncs with it fail).
    fn mesh_renew(&mut self) {
        let mine = self.shard_partitions();
        let mut asks = Vec::new();
        let mut subs: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        for (i, (s, layout)) in self.mesh.upstreams.iter().enumerate() {
            asks.push((i, s.node.clone()));
            let Some(l) = layout.as_ref().filter(|_| s.refused.is_none()) else {
                continue;
            };
            for p in &mine {
                let owners = &l.owners[*p as usize];
                if !owners.is_empty() {
                    let pick = (s.full_syncs_failed as usize + i) % owners.len();
                    subs.entry(owners[pick].clone()).or_default().push(*p);
                }
            }
        }
        for (i, node) in asks {
            let rid = self.rid();
            self.mesh.rtt[i].asked = Some((rid, self.now));
            self.send(&node, PeerMsg::MeshLayoutReq { rid });
        }
        for (node, partitions) in subs {
            self.send(&node, PeerMsg::MeshSubscribe { partitions });
        }
    }

    /// Starts a full sync of `partition` against the next usable upstream.
    fn mesh_start_sync(&mut self, partition: u32) {
        let usable: Vec<usize> = (0..self.mesh.upstreams.len())
            .filter(|i| {
                let (s, l) = &self.mesh.upstreams[*i];
                s.refused.is_none() && l.is_some()
            })
            .collect();
        if usable.is_empty() {
            return;
        }
        let turn = self.mesh.turn.wrapping_add(partition as usize);
        let upstream = usable[turn % usable.len()];
        let (s, l) = &self.mesh.upstreams[upstream];
        let owners = &l.as_ref().expect("usable").owners[partition as usize];
        if owners.is_empty() {
            return;
        }
        let peer = owners[(turn + s.full_syncs_failed as usize) % owners.len()].clone();
        self.mesh_sync_with(upstream, partition, peer);
    }

    /// Starts a full sync of `partition` against `peer`, an owner of it at `upstream`.
    fn mesh_sync_with(&mut self, upstream: usize, partition: u32, peer: NodeId) -> Rid {
        let rid = self.rid();
        let msg = PeerMsg::MeshSyncRoot {
            rid,
            partitions: self.cfg.view.partitions,
            partition,
            root: self.merkle.root(partition),
        };
        let bytes = encoded_len(&msg);
        self.mesh.upstreams[upstream].0.bytes += bytes;
        self.mesh.syncs.insert(
            rid,
            Sync {
                upstream,
                peer: peer.clone(),
                partition,
                deadline: self.now + self.mesh_step_timeout(upstream),
                sent: self.now,
                vouched: None,
                truncated: false,
                bytes,
                repaired: 0,
            },
        );
        self.send(&peer, msg);
        rid
    }

    /// Starts the operator's pull (`Op::AntiEntropy` naming `peer`, a node of an upstream, see
    /// [`Node::mesh_upstream_of`]): a full sync of every partition this node owns against that
    /// upstream, at `peer` for the partitions it owns there and at their first owner otherwise.
    /// Answers [`Response::AntiEntropy`] with the sums once every sync ended; `complete` when
    /// each repaired every difference it found. A pull while another runs, or before the
    /// upstream's layout arrived, or from a refused upstream, is answered `Unavailable`.
    pub(super) fn mesh_pull(&mut self, id: ReqId, peer: NodeId) {
        let unavailable = |msg: String| Err(ReqError::Unavailable(msg));
        if let Some(p) = &self.mesh.pull {
            let msg = format!("a mesh pull from {} is already running", p.peer);
            return self.finish(Origin::Client(id), unavailable(msg));
        }
        let u = self
            .mesh
            .upstream_of(&peer)
            .expect("validated: a node of an upstream");
        let (s, layout) = &self.mesh.upstreams[u];
        let layout = match (layout, &s.refused) {
            (_, Some(why)) => {
                let msg = format!("upstream {} is refused: {why}", s.name);
                return self.finish(Origin::Client(id), unavailable(msg));
            }
            (None, None) => {
                let msg = format!("upstream {} has not told its layout yet", s.name);
                return self.finish(Origin::Client(id), unavailable(msg));
            }
            (Some(l), None) => l,
        };
        let mut picks = Vec::new();
        let mut complete = true;
        for p in self.shard_partitions() {
            let owners = &layout.owners[p as usize];
            match owners.iter().find(|o| **o == peer).or(owners.first()) {
                Some(o) => picks.push((p, o.clone())),
                None => complete = false,
            }
        }
        let running = picks
            .into_iter()
            .map(|(p, o)| self.mesh_sync_with(u, p, o))
            .collect();
        self.mesh.pull = Some(Pull {
            id,
            peer,
            running,
            keys_repaired: 0,
            bytes: 0,
            complete,
        });
        self.mesh_answer_pull();
    }

    /// Answers the pull once none of its syncs runs any more.
    fn mesh_answer_pull(&mut self) {
        if !self
            .mesh
            .pull
            .as_ref()
            .is_some_and(|p| p.running.is_empty())
        {
            return;
        }
        let p = self.mesh.pull.take().expect("checked above");
        let resp = Response::AntiEntropy {
            peer: p.peer,
            keys_repaired: p.keys_repaired,
            bytes: p.bytes,
            complete: p.complete,
        };
        self.finish(Origin::Client(p.id), Ok(resp));
    }

    /// Counts the ended sync `s` (`complete`: it repaired every difference it found) in its
    /// upstream's counters and in the pull it belongs to, if any.
    fn mesh_end_sync(&mut self, rid: Rid, s: &Sync, complete: bool) {
        let st = &mut self.mesh.upstreams[s.upstream].0;
        if complete {
            st.full_syncs += 1;
            st.last_full_sync_us
                .insert(s.partition, self.wall.as_micros());
        } else {
            st.full_syncs_failed += 1;
        }
        if let Some(p) = self.mesh.pull.as_mut()
            && p.running.remove(&rid)
        {
            p.keys_repaired += s.repaired;
            p.bytes += s.bytes;
            p.complete &= complete;
            self.mesh_answer_pull();
        }
    }

    /// The running sync if `rid` from `from` belongs to it; counts the message's bytes.
    fn sync_matches(&mut self, from: &NodeId, rid: Rid, msg: &PeerMsg) -> bool {
        let Some(s) = self.mesh.syncs.get_mut(&rid) else {
            return false;
        };
        if s.peer != *from {
            return false;
        }
        let bytes = encoded_len(msg);
        s.bytes += bytes;
        let u = s.upstream;
        let rtt = self.now.since(s.sent);
        self.mesh.rtt[u].sample(rtt);
        self.mesh.upstreams[u].0.bytes += bytes;
        self.mesh.upstreams[u].0.last_heard_us = self.wall.as_micros();
        true
    }

    /// How long a full-sync step against upstream `u` may go unanswered before the sync is
    /// abandoned: one `mesh_sync_interval` (at most `aae_timeout`, so an operator's pull with
    /// rare periodic syncs is not stalled by one lost message), or three measured round trips
    /// to that cluster when longer. A fixed interval alone abandoned every sync over a WAN whose
    /// round trip exceeds it (the simulator's `mesh-*` scenarios, 50–200 ms each way), so the
    /// floors never grew and every token from that cluster 503ed.
    fn mesh_step_timeout(&self, u: usize) -> Duration {
        let rtt = Duration::from_micros(3 * self.mesh.rtt[u].srtt_us);
        self.cfg
            .mesh_sync_interval
            .min(self.cfg.aae_timeout)
            .max(rtt)
    }

    /// Sends the running sync's next step, which has one step timeout to be answered.
    fn mesh_send_sync(&mut self, rid: Rid, msg: PeerMsg) {
        let timeout = match self.mesh.syncs.get(&rid) {
            Some(s) => self.mesh_step_timeout(s.upstream),
            None => return,
        };
        if let Some(s) = self.mesh.syncs.get_mut(&rid) {
            s.deadline = self.now + timeout;
            s.sent = self.now;
            let bytes = encoded_len(&msg);
            s.bytes += bytes;
            let (u, peer) = (s.upstream, s.peer.clone());
            self.mesh.upstreams[u].0.bytes += bytes;
            self.send(&peer, msg);
        }
    }

    /// Merges version sets received from another cluster as they are, and repairs the shard's
    /// other replicas with the result; returns how many keys changed here.
    fn mesh_absorb(&mut self, sets: Vec<(Bytes, VersionSet)>) -> u64 {
        let mut changed = 0;
        for (key, set) in sets {
            if !self.owns(&key) {
                continue;
            }
            let set = if self.cfg.canary == Some(Canary::MeshRestamp) {
                self.restamped(&set)
            } else {
                set
            };
            if self.absorb(&key, &set, None) {
                changed += 1;
                let merged = self.storage.get(&key).unwrap_or_default();
                for peer in self.peers() {
                    let msg = PeerMsg::Repair {
                        key: key.clone(),
                        set: merged.clone(),
                    };
                    self.send(&peer, msg);
                }
            }
        }
        changed
    }

    /// The planted bug of [`Canary::MeshRestamp`]: every foreign version is re-issued under a
    /// fresh dot of this node's actor, as if it were a local write.
    fn restamped(&mut self, set: &VersionSet) -> VersionSet {
        let mut out = VersionSet::new();
        for v in set.versions() {
            let mut v = v.clone();
            if self.foreign(v.dot.actor) {
                self.counter += 1;
                v.dot = crate::core::dot::Dot::new(self.actor, self.counter);
                self.clock.add(v.dot);
                self.clock_dirty = true;
            }
            out.write(&VersionVector::new(), v);
        }
        out
    }

    pub(super) fn on_mesh(&mut self, from: NodeId, msg: PeerMsg) {
        match msg {
            // Upstream side: stateless answers from this node's view, trees and storage.
            PeerMsg::MeshLayoutReq { rid } => {
                let v = &self.cfg.view;
                let layout = Layout {
                    cluster: self.cfg.cluster,
                    epoch: v.epoch,
                    partitions: v.partitions,
                    owners: (0..v.partitions).map(|p| v.owners(p).to_vec()).collect(),
                };
                self.send(&from, PeerMsg::MeshLayout { rid, layout });
            }
            PeerMsg::MeshSubscribe { partitions } => {
                let mine: BTreeSet<u32> = self.shard_partitions().into_iter().collect();
                let partitions: BTreeSet<u32> = partitions
                    .into_iter()
                    .filter(|p| mine.contains(p))
                    .collect();
                if partitions.is_empty() {
                    return;
                }
                let until = self.now + LEASE;
                let s = self.mesh.subscribers.entry(from).or_insert(Subscriber {
                    partitions: BTreeSet::new(),
                    until,
                    queue: BTreeSet::new(),
                    drops: 0,
                });
                s.until = until;
                s.partitions = partitions;
            }
            PeerMsg::MeshSyncRoot {
                rid,
                partitions,
                partition,
                root,
            } => {
                let reply = if partitions != self.cfg.view.partitions {
                    PeerMsg::MeshSyncRefused {
                        rid,
                        reason: format!(
                            "partition counts differ: {} here, {partitions} downstream",
                            self.cfg.view.partitions
                        ),
                    }
                } else if !self.shard_partitions().contains(&partition) {
                    PeerMsg::MeshSyncRefused {
                        rid,
                        reason: format!("partition {partition} is not owned here"),
                    }
                } else {
                    let branches = (self.merkle.root(partition) != root).then(|| {
                        self.merkle
                            .get(partition)
                            .map_or_else(|| vec![0; BRANCHES], |t| t.branches().to_vec())
                    });
                    PeerMsg::MeshSyncBranches {
                        rid,
                        vouched: self.mesh_vouched(partition),
                        branches,
                    }
                };
                self.send(&from, reply);
            }
            PeerMsg::MeshSyncSegReq {
                rid,
                partition,
                branches,
            } => {
                let empty = PartitionTree::default();
                let tree = self.merkle.get(partition).unwrap_or(&empty);
                let segments = branches
                    .into_iter()
                    .filter(|b| usize::from(*b) < BRANCHES)
                    .map(|b| (b, tree.branch_segments(usize::from(b))))
                    .collect();
                self.send(&from, PeerMsg::MeshSyncSegs { rid, segments });
            }
            PeerMsg::MeshSyncKeys {
                rid,
                partition,
                segments,
                keys,
            } => {
                let theirs: BTreeMap<Bytes, u64> = keys.into_iter().collect();
                let mut sets = Vec::new();
                let mut truncated = false;
                let mut bytes = 0;
                for seg in segments.into_iter().filter(|s| usize::from(*s) < SEGMENTS) {
                    for (_, k, d) in
                        self.storage
                            .index_range(partition, seg..=seg, None, usize::MAX)
                    {
                        if theirs.get(&k) == Some(&d) {
                            continue;
                        }
                        if sets.len() >= self.cfg.aae_max_keys
                            || bytes >= self.cfg.peer_buffer_bytes
                        {
                            truncated = true;
                            break;
                        }
                        if let Some(s) = self.storage.get(&k) {
                            bytes += outbox::copy_bytes(&k, &s);
                            sets.push((k, s));
                        }
                    }
                }
                self.send(
                    &from,
                    PeerMsg::MeshSyncDiff {
                        rid,
                        sets,
                        truncated,
                    },
                );
            }
            PeerMsg::MeshPush { sets } => {
                let Some(u) = self.mesh.upstream_of(&from) else {
                    return;
                };
                let n = sets.len() as u64;
                let applied = self.mesh_absorb(sets);
                let st = &mut self.mesh.upstreams[u].0;
                st.keys_pushed += n;
                st.keys_applied += applied;
                self.probes
                    .add(crate::core::Probe::MeshFeedApplied, applied);
                st.last_heard_us = self.wall.as_micros();
            }
            // Downstream side.
            PeerMsg::MeshLayout { rid, layout } => {
                let Some(u) = self.mesh.upstreams.iter().position(|(s, _)| s.node == from) else {
                    return;
                };
                if let Some((asked, at)) = self.mesh.rtt[u].asked
                    && asked == rid
                {
                    self.mesh.rtt[u].asked = None;
                    let rtt = self.now.since(at);
                    self.mesh.rtt[u].sample(rtt);
                }
                let refused = if layout.partitions != self.cfg.view.partitions {
                    Some(format!(
                        "partition counts differ: {} upstream, {} here; a mesh needs equal counts",
                        layout.partitions, self.cfg.view.partitions
                    ))
                } else if layout.cluster == self.cfg.cluster {
                    Some(format!(
                        "the upstream has this cluster's own id {}",
                        layout.cluster
                    ))
                } else if layout.owners.len() != layout.partitions as usize {
                    Some("malformed layout".to_string())
                } else {
                    None
                };
                let (st, l) = &mut self.mesh.upstreams[u];
                st.cluster = Some(layout.cluster);
                st.refused = refused;
                st.last_heard_us = self.wall.as_micros();
                *l = Some(layout);
            }
            ref m @ PeerMsg::MeshSyncRefused { rid, .. } if self.sync_matches(&from, rid, m) => {
                let PeerMsg::MeshSyncRefused { reason, .. } = msg else {
                    unreachable!("matched above")
                };
                let s = self.mesh.syncs.remove(&rid).expect("matched");
                if reason.starts_with("partition counts") {
                    self.mesh.upstreams[s.upstream].0.refused = Some(reason);
                }
                self.mesh_end_sync(rid, &s, false);
            }
            ref m @ PeerMsg::MeshSyncBranches { rid, .. } if self.sync_matches(&from, rid, m) => {
                let PeerMsg::MeshSyncBranches {
                    vouched, branches, ..
                } = msg
                else {
                    unreachable!("matched above")
                };
                let s = self.mesh.syncs.get_mut(&rid).expect("matched");
                s.vouched = Some(vouched);
                let partition = s.partition;
                let Some(theirs) = branches else {
                    return self.mesh_finish_sync(rid);
                };
                let want = self.differing_branches(partition, &theirs);
                if want.is_empty() {
                    return self.mesh_finish_sync(rid);
                }
                self.mesh_send_sync(
                    rid,
                    PeerMsg::MeshSyncSegReq {
                        rid,
                        partition,
                        branches: want,
                    },
                );
            }
            ref m @ PeerMsg::MeshSyncSegs { rid, .. } if self.sync_matches(&from, rid, m) => {
                let PeerMsg::MeshSyncSegs { segments, .. } = msg else {
                    unreachable!("matched above")
                };
                let partition = self.mesh.syncs.get(&rid).expect("matched").partition;
                let mut chosen = Vec::new();
                let mut keys = Vec::new();
                let mut truncated = false;
                for (b, theirs) in segments {
                    truncated |=
                        self.choose_differing(partition, b, &theirs, &mut chosen, &mut keys);
                }
                let chosen: Vec<u16> = chosen.into_iter().map(|(_, seg)| seg).collect();
                self.mesh.syncs.get_mut(&rid).expect("matched").truncated |= truncated;
                if chosen.is_empty() {
                    return self.mesh_finish_sync(rid);
                }
                self.mesh_send_sync(
                    rid,
                    PeerMsg::MeshSyncKeys {
                        rid,
                        partition,
                        segments: chosen,
                        keys,
                    },
                );
            }
            ref m @ PeerMsg::MeshSyncDiff { rid, .. } if self.sync_matches(&from, rid, m) => {
                let PeerMsg::MeshSyncDiff {
                    sets, truncated, ..
                } = msg
                else {
                    unreachable!("matched above")
                };
                let repaired = self.mesh_absorb(sets);
                let s = self.mesh.syncs.get_mut(&rid).expect("matched");
                s.truncated |= truncated;
                s.repaired += repaired;
                self.mesh.upstreams[s.upstream].0.keys_repaired += repaired;
                self.probes
                    .add(crate::core::Probe::MeshSyncRepaired, repaired);
                self.mesh_finish_sync(rid);
            }
            _ => {}
        }
    }

    /// Ends the running sync; a complete one (every difference repaired) joins the upstream's
    /// vouched clock into this partition's mesh floor.
    fn mesh_finish_sync(&mut self, rid: Rid) {
        let Some(mut s) = self.mesh.syncs.remove(&rid) else {
            return;
        };
        let complete = !s.truncated;
        if complete && let Some(v) = s.vouched.take() {
            self.mesh.floors.entry(s.partition).or_default().merge(&v);
            self.probes.hit(crate::core::Probe::MeshFullSync);
            self.wake_parked();
        }
        self.mesh_end_sync(rid, &s, complete);
    }
}
