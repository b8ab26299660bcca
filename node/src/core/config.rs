//! Configuration of one core node. Durations are plain [`Duration`]s; the core never reads a clock.

use super::ring::View;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When an acknowledged write is durable (G5; docs/operations.md, "Durability").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Sync before acknowledging (concurrent writes share one sync). Survives `kill -9` and power loss.
    Always,
    /// Acknowledge from the write buffer; the driver syncs on a short timer. A crash may lose the
    /// last moments of acknowledged writes that no other replica holds yet.
    #[default]
    Batch,
    /// Never sync explicitly; leave it to the storage engine.
    Never,
}

/// How concurrent writes to one key are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Keep concurrent versions as siblings (no write is lost).
    #[default]
    Siblings,
    /// Last writer wins by hybrid timestamp, then actor. Loses concurrent writes, and under clock
    /// skew loses even writes that happened later in real time.
    Lww,
}

/// A planted bug, for proving that the checkers catch what they claim to (docs/simulator.md).
/// Test-only: never set in production configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Canary {
    /// Reads answer at once even when the replica has not applied the context.
    SkipCausalWait,
    /// Replication is sent once, never retried, and anti-entropy is off: lost replication stays lost.
    NoReplicationRetry,
    /// Anti-entropy never runs (replication retries still do, but die with a crash).
    NoAntiEntropy,
    /// Concurrent writes collapse to the last writer instead of becoming siblings.
    LwwWithoutSiblings,
    /// A restarted node reuses its actor and restarts its counter from zero.
    ForgetCounterOnRestart,
    /// Tombstones are dropped as soon as they are written, without the reaping rule's guards.
    EarlyTombstoneReap,
    /// Replies return the request's context without the operation's own effects.
    StaleContext,
    /// A node that loses a partition in a view change drops it as soon as it has sent it, without
    /// waiting for the new replicas to acknowledge holding it durably.
    DropBeforeSynced,
    /// A restarted node forgets the hints it held (its writes accepted for unreachable shards).
    ForgetHints,
    /// Every view change starts a new actor lineage (a fresh incarnation), so tokens keep one
    /// entry per retired actor and grow with every view change.
    NoTokenPruning,
    /// Replicas trust a context entry's folded older actors without a floor (no floor check):
    /// a replica that lacks an older actor's writes answers as if it held them.
    FoldWithoutFloor,
    /// Reply contexts name, per actor, the highest dot this replica applied rather than its
    /// contiguous base: they claim the dots in its clock's gaps, which it has not applied.
    ContextBeyondApplied,
    /// Joining a copy from a peer drops one of the resulting siblings (the lowest dot): a merge
    /// that loses a concurrent version.
    MergeDropsSibling,
    /// A coordinator's reply to a write it alone acknowledges (`w = 1`) goes in the Ready's early
    /// lists: it may leave before the write is synced, so a crash before the sync loses an
    /// acknowledged write.
    ReplyBeforeDurable,
    /// A write over a live key forgets to take the old value out of the partition's live-key
    /// count: caught only by the invariant checks (the recount), at the write that does it.
    MiscountLiveKeys,
    /// A strong-key proposer takes one promise and one accept as a majority.
    AcceptWithoutMajority,
    /// A strong-key acceptor keeps its promises in memory only (its durable record holds what
    /// it accepted, at the ballot it accepted it): a restart forgets every later promise.
    ForgetPromiseOnRestart,
    /// A strong-key acceptor stores an accepted state without asking for the turn's sync: its
    /// accepted answer leaves before the state is durable, and a crash loses an accept that was
    /// counted.
    ReplyBeforeAcceptDurable,
    /// A replica of a partition's new configuration becomes a strong-key acceptor at once,
    /// without sealing the previous configuration or copying its records: the new majority
    /// knows nothing of what the old one decided (and the old one keeps deciding).
    HandoffWithoutCopy,
    /// A key's anti-entropy index entry is written in a storage write of its own, before its
    /// data: a crash between the two leaves the index describing data the disk lost, so
    /// anti-entropy believes the replicas agree where they differ (caught by G3).
    IndexOutsideBatch,
    /// Reads and listings return versions whose expiry (TTL) has passed.
    TtlIgnored,
    /// An expiry tombstone removes every version of the key, not only the expired ones: a
    /// concurrent or later write without a TTL is lost with them.
    ExpireWithWideContext,
    /// A proxy never tries a second replica: a forward that times out, or that its replica
    /// could not satisfy, fails the request although another replica could serve it.
    NoProxyFailover,
    /// A read of several replicas answers with their merged set but repairs none of them.
    NoReadRepair,
    /// A mesh node never runs full syncs with its upstreams: what the real-time feed drops
    /// (a full queue, a lapsed subscription, a partition between clusters) stays lost.
    MeshDropQueueNoSync,
    /// Version sets received from another cluster are re-stamped with dots of the receiving
    /// node, as if they were its own writes: the same write then has two identities.
    MeshRestamp,
}

impl Canary {
    /// The canaries the simulator's sweep must catch (the mesh ones by the `mesh-*` scenarios).
    pub const ALL: [Canary; 26] = [
        Canary::SkipCausalWait,
        Canary::NoReplicationRetry,
        Canary::NoAntiEntropy,
        Canary::LwwWithoutSiblings,
        Canary::ForgetCounterOnRestart,
        Canary::EarlyTombstoneReap,
        Canary::StaleContext,
        Canary::DropBeforeSynced,
        Canary::ForgetHints,
        Canary::NoTokenPruning,
        Canary::FoldWithoutFloor,
        Canary::ContextBeyondApplied,
        Canary::MergeDropsSibling,
        Canary::ReplyBeforeDurable,
        Canary::MiscountLiveKeys,
        Canary::AcceptWithoutMajority,
        Canary::ForgetPromiseOnRestart,
        Canary::ReplyBeforeAcceptDurable,
        Canary::HandoffWithoutCopy,
        Canary::IndexOutsideBatch,
        Canary::TtlIgnored,
        Canary::ExpireWithWideContext,
        Canary::NoProxyFailover,
        Canary::NoReadRepair,
        Canary::MeshDropQueueNoSync,
        Canary::MeshRestamp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Canary::SkipCausalWait => "skip-causal-wait",
            Canary::NoReplicationRetry => "no-replication-retry",
            Canary::NoAntiEntropy => "no-anti-entropy",
            Canary::LwwWithoutSiblings => "lww-without-siblings",
            Canary::ForgetCounterOnRestart => "forget-counter-on-restart",
            Canary::EarlyTombstoneReap => "early-tombstone-reap",
            Canary::StaleContext => "stale-context",
            Canary::DropBeforeSynced => "drop-partition-before-synced",
            Canary::ForgetHints => "forget-hints-on-restart",
            Canary::NoTokenPruning => "no-token-pruning",
            Canary::FoldWithoutFloor => "fold-without-floor",
            Canary::ContextBeyondApplied => "context-beyond-applied",
            Canary::MergeDropsSibling => "merge-drops-sibling",
            Canary::ReplyBeforeDurable => "reply-before-durable",
            Canary::MiscountLiveKeys => "miscount-live-keys",
            Canary::AcceptWithoutMajority => "accept-without-majority",
            Canary::ForgetPromiseOnRestart => "forget-promise-on-restart",
            Canary::ReplyBeforeAcceptDurable => "reply-before-accept-durable",
            Canary::HandoffWithoutCopy => "strong-handoff-without-copy",
            Canary::IndexOutsideBatch => "index-outside-batch",
            Canary::TtlIgnored => "ttl-ignored",
            Canary::ExpireWithWideContext => "expire-with-wide-context",
            Canary::NoProxyFailover => "no-proxy-failover",
            Canary::NoReadRepair => "no-read-repair",
            Canary::MeshDropQueueNoSync => "mesh-drop-queue-no-sync",
            Canary::MeshRestamp => "mesh-restamp",
        }
    }

    pub fn from_name(name: &str) -> Option<Canary> {
        Canary::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One upstream cluster of a mesh (docs/mesh.md): a name for status and the address of one of
/// its nodes, which tells this node the upstream's layout; the partitions' owners there then
/// feed this node and answer its full syncs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshUpstream {
    pub name: String,
    pub node: super::ring::NodeId,
}

/// A write that leaves a key with at least this many siblings logs a warning naming the key and
/// counts in [`crate::core::NodeStatus::sibling_warnings`] (Riak's warning threshold).
pub const WARN_SIBLINGS: usize = 25;

/// Everything a core node needs to know besides its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The view to start from. A node restarting over storage that recorded a newer view uses
    /// that one; a node joining a running cluster starts from [`View::joining`].
    pub view: View,
    /// A member to ask for admission while this node is in no view (`serve --join`).
    pub join: Option<super::ring::NodeId>,
    pub sync: SyncMode,
    pub conflicts: ConflictMode,
    /// Longest a read waits for its replica to cover the request's context (G1).
    pub causal_wait: Duration,
    /// Longest a coordinator waits for `w` acknowledgements or `r` answers.
    pub quorum_timeout: Duration,
    /// Longest a proxy waits for one replica before failing over to the next.
    pub forward_timeout: Duration,
    /// Longest a request may take in all; then it answers 503.
    pub request_timeout: Duration,
    /// Unacknowledged replication is re-sent after this long.
    pub retry_interval: Duration,
    /// Interval of liveness pings between nodes.
    pub heartbeat_interval: Duration,
    /// A peer not heard from for this long is tried last when proxying.
    pub suspect_after: Duration,
    /// The driver calls `handle(now, Input::Tick)` at least this often.
    pub tick_interval: Duration,
    /// Largest accepted key, in bytes.
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes.
    pub max_value_bytes: usize,
    /// Most siblings a client write may leave on a key; a write that would leave more is
    /// refused ([`crate::core::ReqError::Conflict`]) until a write with a read's context
    /// resolves them.
    pub max_siblings: usize,
    /// Cap on the value bytes of one key's siblings; a write that would exceed it is refused.
    pub max_sibling_bytes: usize,
    /// Cap on keys awaiting replication acknowledgement per peer; beyond it anti-entropy repairs.
    pub max_unacked_per_peer: usize,
    /// Cap on replication messages re-sent per peer per tick.
    pub retry_batch: usize,
    /// Budget of replication bytes in flight to one peer (sent, not yet acknowledged): a slow
    /// or paused replica costs at most this plus one version set of memory (see `outbox.rs`).
    pub peer_buffer_bytes: u64,
    /// Cap on the bytes of one listing page (and of each shard's part of it); a page that
    /// reaches it ends early with a `next` cursor.
    pub max_list_bytes: u64,
    /// Interval between anti-entropy exchanges a node starts (±25% jitter).
    pub aae_interval: Duration,
    /// Cap on keys whose digests one exchange compares; the rest waits for the next round.
    pub aae_max_keys: usize,
    /// Longest an exchange may take before it is abandoned.
    pub aae_timeout: Duration,
    /// A tombstone every replica acknowledged is reaped this long after the last acknowledgement.
    pub tombstone_grace: Duration,
    /// Keys per handoff batch when a partition moves to new replicas.
    pub handoff_batch: usize,
    /// Hinted handoff (sloppy quorum, opt-in): a `w=1` write whose every replica is suspected
    /// down, and whose context names no write of the key's partition, is kept by the receiving
    /// node as a durable hint and delivered to the replicas when they return.
    pub hinted_handoff: bool,
    /// Most keys a node holds as hints; beyond it such writes are refused (503).
    pub max_hint_keys: usize,
    /// This cluster's id, part of every actor it issues (see [`crate::core::Actor::cluster`]):
    /// the clusters of a mesh must have distinct ids. 0 for a cluster outside any mesh.
    pub cluster: u32,
    /// Clusters whose writes this cluster receives (docs/mesh.md); none outside a mesh.
    pub mesh_upstreams: Vec<MeshUpstream>,
    /// This cluster is an upstream of another (or has upstreams): tombstones are never reaped,
    /// since no node can tell that every cluster of the mesh holds them (G6 across clusters).
    pub mesh_member: bool,
    /// Cap on keys queued for one downstream subscriber's real-time feed; a key beyond it is
    /// dropped (counted) and left to the full sync.
    pub mesh_queue: usize,
    /// Interval between full syncs (one partition against one upstream each, ±25%); a sync step
    /// unanswered for this long abandons the sync. Keep it well below `causal_wait`: a token
    /// from another cluster waits for a full sync, which follows a heal within about 1.25 times
    /// this interval.
    pub mesh_sync_interval: Duration,
    /// Planted bug for checker canaries. `None` in every real deployment.
    pub canary: Option<Canary>,
    /// Planted fault for the fail-stop test: a client request for this key panics the core.
    /// `None` in every real deployment.
    pub panic_on_key: Option<bytes::Bytes>,
}

impl Config {
    /// Defaults for a cluster with the given view.
    pub fn new(view: View) -> Self {
        Config {
            view,
            join: None,
            sync: SyncMode::default(),
            conflicts: ConflictMode::default(),
            causal_wait: Duration::from_secs(2),
            quorum_timeout: Duration::from_secs(2),
            forward_timeout: Duration::from_millis(2500),
            request_timeout: Duration::from_secs(6),
            retry_interval: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(250),
            suspect_after: Duration::from_secs(1),
            tick_interval: Duration::from_millis(20),
            max_key_bytes: 1024,
            max_value_bytes: 8 << 20,
            max_siblings: 100,
            max_sibling_bytes: 32 << 20,
            max_unacked_per_peer: 200_000,
            retry_batch: 512,
            peer_buffer_bytes: 64 << 20,
            max_list_bytes: 16 << 20,
            aae_interval: Duration::from_secs(5),
            aae_max_keys: 5_000,
            aae_timeout: Duration::from_secs(10),
            tombstone_grace: Duration::from_secs(30),
            handoff_batch: 500,
            hinted_handoff: false,
            max_hint_keys: 100_000,
            cluster: 0,
            mesh_upstreams: Vec::new(),
            mesh_member: false,
            mesh_queue: 10_000,
            mesh_sync_interval: Duration::from_millis(500),
            canary: None,
            panic_on_key: None,
        }
    }
}
