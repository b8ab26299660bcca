//! The scenario model, loaded from `scenarios/*.toml`.
//!
//! A scenario describes a cluster, a workload, network conditions, clock skew and a fault
//! schedule (explicit events and/or seeded random faults), the phases of a run, and which
//! guarantees must hold. A scenario may embed a fully recorded [`Plan`] (a shrunk failure): then
//! the seed no longer generates the workload and faults, it only drives network randomness.

use crate::plan::{Fault, Plan, TimedFault};
use causeway::core::{ConflictMode, Probe, Quorum, SyncMode};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A guarantee (docs/guarantees.md) that a checker verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Checker {
    /// Causal consistency of every read and every reply context.
    G1,
    /// No lost acknowledged writes, judged on the final replica states.
    G2,
    /// Convergence: every replica of a key holds the same versions after heal and quiesce.
    G3,
    /// Liveness after heal: probe requests succeed.
    G4,
    /// No resurrection: no final version is superseded by an acknowledged write.
    G6,
    /// Identity: no dot is ever issued for two different writes.
    G7,
    /// Time to live (docs/ttl.md): no read returns a version more than the clock-skew bound
    /// after its expiry, and an expiry tombstone removes only tombstones and versions whose
    /// expiry passed, by that bound, before it was written (so no unexpired write is lost).
    Ttl,
    /// Token size (docs/guarantees): every context a reply carries encodes within the bound of one
    /// entry per node of the cluster, however many view changes and restarts it went through.
    /// Opt-in (not in [`Checker::ALL`]): a node that loses its disk or its counter rightly
    /// starts a new lineage.
    Token,
    /// Linearizability of the strong-key history (`crate::linearizable::check`); passes
    /// trivially in scenarios without strong clients.
    Linearizable,
    /// A core invariant (`Node::check_invariants`) broken during the run. Always enforced by the
    /// simulator, which stops the run at the event that broke it; never listed in a scenario.
    Invariant,
}

impl Checker {
    pub const ALL: [Checker; 8] = [
        Checker::G1,
        Checker::G2,
        Checker::G3,
        Checker::G4,
        Checker::G6,
        Checker::G7,
        Checker::Linearizable,
        Checker::Ttl,
    ];
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// One whole scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub cluster: Cluster,
    #[serde(default)]
    pub phases: Phases,
    pub workload: Workload,
    /// Strong-key clients running beside the causal workload (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strong: Option<StrongWorkload>,
    #[serde(default)]
    pub net: Net,
    #[serde(default)]
    pub clocks: Clocks,
    #[serde(default)]
    pub faults: Faults,
    #[serde(default)]
    pub expect: Expect,
    /// How the clusters of a mesh (`cluster.clusters` above one) reach each other.
    #[serde(default)]
    pub mesh: Mesh,
    /// A recorded workload and fault schedule; when present it replaces generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

/// Cluster shape and node configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Nodes of each cluster's first view.
    pub nodes: usize,
    /// Clusters in the run (docs/mesh.md): above one, cluster `c` is the node slots
    /// `c * nodes .. (c + 1) * nodes`, its id is `c + 1`, and every cluster is a mesh member and
    /// lists every other as an upstream (through its first node). Each has its own view of
    /// `nodes` nodes with this `rf` and `partitions`. No spares, membership faults, strong
    /// clients or `non-owner` clients in a mesh.
    #[serde(default = "one_cluster")]
    pub clusters: usize,
    pub rf: usize,
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    #[serde(default)]
    pub sync: SyncMode,
    #[serde(default)]
    pub conflicts: ConflictMode,
    /// Node slots outside the first view (numbered after its `nodes`) that `join` and `view`
    /// events can bring into the cluster.
    #[serde(default)]
    pub spares: usize,
    /// Hinted handoff (`Config::hinted_handoff`) on every node: a `w = 1` write reaching a
    /// non-replica while every replica of its key's shard is suspected, whose context names no
    /// write of the key's partition, is kept there as a durable hint and handed to the replicas
    /// when they return.
    #[serde(default)]
    pub hinted_handoff: bool,
    /// How long a tombstone every replica holds is kept before it is reaped
    /// (`Config::tombstone_grace`; default the core's 30 s, longer than most runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone_grace_s: Option<f64>,
    /// The anti-entropy round interval (`Config::aae_interval`; default the core's 5 s). A long
    /// one keeps anti-entropy from repairing what replication retries must deliver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aae_interval_s: Option<f64>,
}

impl Cluster {
    /// Every node slot: each cluster's first view's nodes, then the spares.
    pub fn slots(&self) -> usize {
        self.nodes * self.clusters + self.spares
    }

    /// The cluster (0-based) node slot `n` belongs to; spares belong to cluster 0.
    pub fn cluster_of(&self, n: usize) -> usize {
        if n < self.nodes * self.clusters {
            n / self.nodes
        } else {
            0
        }
    }

    /// The node slots of cluster `c`'s first view.
    pub fn members_of(&self, c: usize) -> std::ops::Range<usize> {
        if self.clusters == 1 {
            0..self.nodes
        } else {
            c * self.nodes..(c + 1) * self.nodes
        }
    }

    /// Several clusters meshed in one run.
    pub fn is_mesh(&self) -> bool {
        self.clusters > 1
    }
}

fn one_cluster() -> usize {
    1
}

/// The links between the clusters of a mesh and the mesh settings of every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mesh {
    /// Each pair of clusters gets a one-way WAN latency drawn once per seed from
    /// `[min, max]` ms (the same both ways); inside a cluster `net.delay_us` applies.
    pub wan_delay_ms: [u64; 2],
    /// Each message between clusters takes up to this many ms more than its pair's latency
    /// (jitter, which reorders).
    pub wan_jitter_ms: u64,
    /// Keys queued per downstream subscriber (`Config::mesh_queue`): small, so a cut between
    /// clusters overflows it and only the full sync can repair what it dropped.
    pub queue: usize,
    /// Between full syncs (`Config::mesh_sync_interval`), seconds.
    pub sync_interval_s: f64,
    /// Largest absolute clock offset of a whole cluster, ms, on top of each node's own
    /// (`clocks`): clusters whose clocks disagree by seconds.
    pub skew_ms: u64,
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh {
            wan_delay_ms: [50, 200],
            wan_jitter_ms: 20,
            queue: 16,
            sync_interval_s: 0.5,
            skew_ms: 0,
        }
    }
}

fn default_partitions() -> u32 {
    64
}

/// Phase lengths. A run is: chaos (workload + faults), heal everything, settle, probe (each
/// session's probe operations must succeed within `liveness_s` of heal: G4), quiesce, then
/// final states.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Phases {
    pub chaos_s: f64,
    pub settle_s: f64,
    pub probe_ops: usize,
    /// The liveness bound after heal (a few anti-entropy rounds): a failed probe is retried until
    /// then (G4), and the run waits until then at most for all replicas to agree (G3).
    pub liveness_s: f64,
    pub quiesce_s: f64,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            chaos_s: 20.0,
            settle_s: 5.0,
            probe_ops: 3,
            liveness_s: 20.0,
            quiesce_s: 3.0,
        }
    }
}

/// Where a session sends each operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clients {
    /// Each session sticks to one node (sessions spread round-robin).
    #[default]
    Sticky,
    /// Each operation goes to a random node.
    Roaming,
    /// Each operation goes to a random node outside the key's shard (proxying).
    NonOwner,
}

/// The seeded workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub sessions: usize,
    pub keys: u32,
    /// Operations each session issues during chaos (fewer if chaos ends first).
    pub ops_per_session: usize,
    /// Think time between a reply and the session's next operation, `[min, max]` ms.
    #[serde(default = "default_think")]
    pub think_ms: [u64; 2],
    /// Relative weights of reads, writes and deletes.
    pub read: f64,
    pub write: f64,
    #[serde(default)]
    pub delete: f64,
    /// Read quorum: `1|2|…|quorum|all`.
    #[serde(default = "one")]
    pub r: String,
    /// Write quorum.
    #[serde(default = "one")]
    pub w: String,
    /// Probability that a session merges another session's context before an operation.
    #[serde(default)]
    pub merge_contexts: f64,
    #[serde(default)]
    pub clients: Clients,
    /// Probability that a put is *blind*: sent with an empty context instead of the session's
    /// (a client that writes without having read). It supersedes nothing, so it is concurrent
    /// with every write it did not name; the session keeps its context and merges the reply's.
    /// Blind writes are what hinted handoff can accept (a hint's context may name no write of
    /// its partition).
    #[serde(default)]
    pub blind_writes: f64,
    /// Probability that a delete is *blind* (sent with an empty context): it deletes what its
    /// coordinating replica holds at that moment (docs/guarantees.md, blind deletes); versions the coordinator had not
    /// seen survive as siblings. The session keeps its context as for a blind write.
    #[serde(default)]
    pub blind_deletes: f64,
    /// How long a client waits for a reply before giving up (the operation then counts as
    /// unavailable: failed for a read, indeterminate for a write), ms. Default: the core's
    /// request timeout plus a grace period, so only a lost reply times out. Shorter keeps
    /// sessions moving while requests to an unreachable shard wait out the core's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Probability that a put carries a time to live (docs/ttl.md), drawn from `ttl_s`.
    #[serde(default)]
    pub ttl: f64,
    /// Range of the time to live of such puts, `[min, max]` seconds.
    #[serde(default = "default_ttl")]
    pub ttl_s: [u64; 2],
}

fn default_ttl() -> [u64; 2] {
    [1, 3]
}

/// What strong-key clients do ([`StrongWorkload::pattern`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrongPattern {
    /// A contended counter: read the version, then compare-and-set the next value on it.
    Counter,
    /// A lock: acquire with `If-None-Match: *`, release with a delete `If-Match` the version
    /// the acquire wrote.
    Lock,
    /// Unique names: create keys with `If-None-Match: *`, read them now and then.
    Unique,
    /// All three at once: client `c` follows the `c % 3`th of the above, on its own keys.
    Mixed,
}

/// Strong-key clients: each issues one strong operation at a time to a random node (any node
/// proxies), recorded as a `linearizable::StrongOp` and judged by [`Checker::Linearizable`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrongWorkload {
    pub clients: usize,
    /// Strong keys (`sk<i>`).
    pub keys: u32,
    /// Operations each client issues during chaos (fewer if chaos ends first).
    pub ops_per_client: usize,
    pub pattern: StrongPattern,
    #[serde(default = "default_think")]
    pub think_ms: [u64; 2],
    /// How long a client waits for an answer, ms (then a write is indeterminate and a read is
    /// left out). Default: the core's strong round deadline plus the proxy's slack and a second.
    #[serde(default = "default_strong_timeout")]
    pub timeout_ms: u64,
    /// The node slots the clients send their operations to (default: any node). Leaving a
    /// node out makes it a pure acceptor for the clients' keys: faults on it never cost a
    /// client its answer.
    #[serde(default)]
    pub entry: Vec<usize>,
}

fn default_strong_timeout() -> u64 {
    3_500
}

fn default_think() -> [u64; 2] {
    [20, 120]
}

fn one() -> String {
    "1".into()
}

impl Workload {
    pub fn r(&self) -> Result<Quorum, String> {
        Quorum::parse(&self.r).ok_or_else(|| format!("bad r {:?}", self.r))
    }

    pub fn w(&self) -> Result<Quorum, String> {
        Quorum::parse(&self.w).ok_or_else(|| format!("bad w {:?}", self.w))
    }
}

/// Network conditions during chaos (after heal: no loss, no duplication).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Net {
    /// One-way delay, `[min, max]` µs; random delays reorder messages.
    pub delay_us: [u64; 2],
    pub loss: f64,
    pub dup: f64,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            delay_us: [200, 3000],
            loss: 0.0,
            dup: 0.0,
        }
    }
}

/// Per-node clock skew injected into the time each core sees.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Clocks {
    /// Largest absolute initial offset, ms.
    pub offset_ms: u64,
    /// Largest absolute drift, parts per million.
    pub drift_ppm: u64,
    /// Largest absolute step of a `jump` fault, ms.
    pub jump_ms: u64,
}

/// A kind of random fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Symmetric partition into two sides.
    Partition,
    /// A few one-way link clogs.
    Asymmetric,
    /// Isolate nodes one by one, heal them in another order.
    Swizzle,
    /// Crash (losing unsynced writes), restart later.
    Crash,
    /// Crash inside a turn, between its early answers and its sync; restart later.
    CrashBeforeSync,
    /// Crash and lose the whole disk, restart under the same address.
    Wipe,
    /// Cut a node's outbound links (what it sent that had not arrived is lost), wipe it a
    /// moment later (what it stored is gone), restart it and restore its links later. Counts
    /// against `max_wipes`.
    CutWipe,
    /// Crash two replicas of one shard at the same instant, restart both later: a write
    /// neither had synced is lost at both (correlated loss). Counts two against `max_down`.
    CrashPair,
    /// Freeze a node, resume later.
    Pause,
    /// Step one node's clock.
    Jump,
    /// Heavy packet loss for a while.
    Loss,
    /// Heavy duplication for a while.
    Dup,
    /// A spare that never ran joins through a random member (no repair: it stays).
    Join,
    /// A random member is decommissioned (while more than `max(rf, 2)` members remain).
    Leave,
    /// A view change that keeps the members but shuffles their order and picks a random
    /// replication factor: shards reshape and partitions move, and every node takes a new actor.
    Reshape,
    /// Mesh: one random cluster is cut off from every other (its own links stay up), healed
    /// later; long enough, it overflows the feed queues and outlasts the subscriptions.
    ClusterPartition,
    /// Mesh: every node of one random cluster crashes at the same instant and restarts later
    /// (its nodes restart one by one within a second). Counts as that many against `max_down`.
    ClusterCrash,
}

/// The fault schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Random faults start at intervals drawn from `[min, max]` seconds; empty `kinds` = none.
    pub every_s: [f64; 2],
    pub kinds: Vec<FaultKind>,
    /// How long a random fault lasts before its repair, `[min, max]` seconds.
    pub lasts_s: [f64; 2],
    /// Most nodes down (crashed, wiped or paused) at once.
    pub max_down: usize,
    /// Most disk wipes per run.
    pub max_wipes: usize,
    /// The node slots random crash, crash-before-sync, wipe and pause faults may hit
    /// (default: any).
    pub down_nodes: Vec<usize>,
    /// Explicit events, in addition to the random ones.
    pub events: Vec<TimedFault>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            every_s: [2.0, 5.0],
            kinds: Vec::new(),
            lasts_s: [1.0, 4.0],
            max_down: 1,
            max_wipes: 1,
            down_nodes: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// Whether a seed must pass, and what is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[default]
    Pass,
    /// The scenario demonstrates a documented loss: some seed of every sweep must fail.
    Fail,
}

/// The expected outcome and the checkers that apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    pub outcome: Outcome,
    pub checks: Vec<Checker>,
    /// Checkers whose failures are reported as known gaps of the core, not as failures.
    pub known_gaps: Vec<Checker>,
    /// Why the known gaps exist (shown with every known-gap line).
    pub reason: String,
    /// Canaries this scenario is designed to catch (`ci/sweep --canary`).
    pub canaries: Vec<String>,
    /// Fewest writes the nodes must accept as hints in every seed (counted by the cores): a
    /// seed with fewer fails, so a hinted-handoff scenario cannot silently test nothing.
    pub min_hints: u64,
    /// The rare paths this scenario exists to reach ([`Probe`]): a sweep of at least
    /// `COVERAGE_MIN_SEEDS` seeds in which one of them is never reached fails.
    pub sometimes: Vec<Probe>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            outcome: Outcome::Pass,
            checks: Checker::ALL.to_vec(),
            known_gaps: Vec::new(),
            reason: String::new(),
            canaries: Vec::new(),
            min_hints: 0,
            sometimes: Vec::new(),
        }
    }
}

impl Scenario {
    /// Parses and validates a scenario.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Loads `path` and checks that its `name` matches the file stem.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let s = Scenario::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if s.name != stem {
            return Err(format!(
                "{}: name {:?} differs from the file name",
                path.display(),
                s.name
            ));
        }
        Ok(s)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario always serialises")
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.cluster;
        if c.nodes == 0 || c.rf == 0 {
            return Err("cluster needs nodes >= 1 and rf >= 1".into());
        }
        let w = &self.workload;
        if w.sessions == 0 || w.keys == 0 {
            return Err("workload needs sessions >= 1 and keys >= 1".into());
        }
        if w.read + w.write + w.delete <= 0.0 {
            return Err("workload weights must not all be zero".into());
        }
        w.r()?;
        w.w()?;
        if w.think_ms[0] > w.think_ms[1] || self.net.delay_us[0] > self.net.delay_us[1] {
            return Err("ranges must be [min, max]".into());
        }
        if ![w.blind_writes, w.blind_deletes, w.merge_contexts]
            .iter()
            .all(|p| (0.0..=1.0).contains(p))
        {
            return Err(
                "blind_writes, blind_deletes and merge_contexts are probabilities within [0, 1]"
                    .into(),
            );
        }
        if let Some(s) = &self.strong
            && (s.clients == 0 || s.keys == 0 || s.timeout_ms == 0 || s.think_ms[0] > s.think_ms[1])
        {
            return Err(
                "strong needs clients, keys and timeout_ms >= 1 and think_ms [min, max]".into(),
            );
        }
        if let Some(s) = &self.strong
            && s.entry.iter().any(|&n| n >= c.slots())
        {
            return Err("strong.entry names a node slot the cluster does not have".into());
        }
        if self.faults.down_nodes.iter().any(|&n| n >= c.slots()) {
            return Err("faults.down_nodes names a node slot the cluster does not have".into());
        }
        let positive = |x: Option<f64>| x.is_none_or(|x| x > 0.0 && x.is_finite());
        if !positive(c.tombstone_grace_s) || !positive(c.aae_interval_s) {
            return Err("cluster.tombstone_grace_s and aae_interval_s must be positive".into());
        }
        if w.timeout_ms == Some(0) {
            return Err("workload.timeout_ms must be positive".into());
        }
        if self.expect.min_hints > 0 && !c.hinted_handoff {
            return Err("expect.min_hints needs cluster.hinted_handoff = true".into());
        }
        if w.clients == Clients::NonOwner && c.nodes / c.rf < 2 {
            return Err("clients = \"non-owner\" needs at least two shards".into());
        }
        if c.is_mesh() {
            self.validate_mesh()?;
        }
        let node_ok = |n: usize| n < c.slots();
        for e in self
            .faults
            .events
            .iter()
            .chain(self.plan.iter().flat_map(|p| p.faults.iter()))
        {
            if !e.fault.nodes().into_iter().all(node_ok) {
                return Err(format!(
                    "fault {:?} names a node outside the cluster",
                    e.fault
                ));
            }
        }
        if let Some(p) = &self.plan {
            if p.clocks.len() != c.slots() {
                return Err("plan.clocks needs one entry per node".into());
            }
            for s in &p.sessions {
                for op in s.ops.iter().chain(&s.probe) {
                    if !node_ok(op.node) || op.key >= w.keys {
                        return Err(format!(
                            "plan op {op:?} is outside the cluster or key space"
                        ));
                    }
                }
            }
        }
        for e in &self.faults.events {
            match &e.fault {
                Fault::Join { node, .. } if *node < c.nodes => {
                    return Err(format!("join of node {node}, which is in the first view"));
                }
                Fault::View { nodes: Some(n), .. } if n.is_empty() => {
                    return Err("a view event lists no nodes".into());
                }
                Fault::View { rf: Some(0), .. } => return Err("a view event with rf = 0".into()),
                _ => {}
            }
        }
        if self
            .faults
            .events
            .iter()
            .any(|e| matches!(e.fault, Fault::Loss { rate } | Fault::Dup { rate } if !(0.0..=1.0).contains(&rate)))
        {
            return Err("loss and dup rates must be within [0, 1]".into());
        }
        Ok(())
    }

    /// What a run of several clusters supports (docs/simulator.md, "Meshes").
    fn validate_mesh(&self) -> Result<(), String> {
        let (c, m) = (&self.cluster, &self.mesh);
        let membership = |f: &Fault| {
            matches!(
                f,
                Fault::Join { .. }
                    | Fault::View { .. }
                    | Fault::Remove { .. }
                    | Fault::ForceRemove { .. }
            )
        };
        let membership_kind = self.faults.kinds.iter().any(|k| {
            matches!(
                k,
                FaultKind::Join | FaultKind::Leave | FaultKind::Reshape | FaultKind::CrashPair
            )
        });
        if c.spares > 0
            || self.strong.is_some()
            || self.workload.clients == Clients::NonOwner
            || membership_kind
            || self.faults.events.iter().any(|e| membership(&e.fault))
        {
            return Err(
                "a mesh (cluster.clusters > 1) runs no spares, membership faults, crash-pair, strong clients or non-owner clients"
                    .into(),
            );
        }
        if m.wan_delay_ms[0] > m.wan_delay_ms[1] || m.queue == 0 || m.sync_interval_s <= 0.0 {
            return Err(
                "mesh.wan_delay_ms must be [min, max], mesh.queue and sync_interval_s positive"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_round_trips() {
        let s = Scenario::from_toml(
            r#"
            name = "t"
            [cluster]
            nodes = 3
            rf = 3
            [workload]
            sessions = 2
            keys = 4
            ops_per_session = 10
            read = 1.0
            write = 1.0
            [[faults.events]]
            at_ms = 1000
            fault = { kind = "crash", node = 1 }
            "#,
        )
        .unwrap();
        assert_eq!(s.expect.checks, Checker::ALL.to_vec());
        let again = Scenario::from_toml(&s.to_toml()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn rejects_out_of_range_nodes() {
        let err = Scenario::from_toml(
            r#"
            name = "t"
            [cluster]
            nodes = 3
            rf = 3
            [workload]
            sessions = 1
            keys = 1
            ops_per_session = 1
            read = 1.0
            write = 0.0
            [[faults.events]]
            at_ms = 1
            fault = { kind = "crash", node = 7 }
            "#,
        )
        .unwrap_err();
        assert!(err.contains("outside the cluster"), "{err}");
    }

    #[test]
    fn probes_and_timing_knobs_parse_and_are_checked() {
        let base = r#"
            name = "t"
            [cluster]
            nodes = 3
            rf = 3
            tombstone_grace_s = 2.5
            [workload]
            sessions = 1
            keys = 1
            ops_per_session = 1
            read = 1.0
            write = 1.0
            [expect]
            sometimes = ["read-repair", "tombstone-reaped"]
        "#;
        let s = Scenario::from_toml(base).unwrap();
        assert_eq!(
            s.expect.sometimes,
            [Probe::ReadRepair, Probe::TombstoneReaped]
        );
        assert_eq!(s.cluster.tombstone_grace_s, Some(2.5));
        assert_eq!(s.cluster.aae_interval_s, None);
        let err = Scenario::from_toml(&base.replace("read-repair", "read-repairs")).unwrap_err();
        assert!(err.contains("read-repairs"), "{err}");
        let err = Scenario::from_toml(&base.replace("2.5", "0.0")).unwrap_err();
        assert!(err.contains("tombstone_grace_s"), "{err}");
    }

    #[test]
    fn hint_options_parse_and_are_checked() {
        let base = r#"
            name = "t"
            [cluster]
            nodes = 4
            rf = 2
            hinted_handoff = true
            [workload]
            sessions = 1
            keys = 1
            ops_per_session = 1
            read = 1.0
            write = 1.0
            blind_writes = 0.5
            timeout_ms = 300
            [expect]
            min_hints = 2
        "#;
        let s = Scenario::from_toml(base).unwrap();
        assert!(s.cluster.hinted_handoff);
        assert_eq!(s.workload.timeout_ms, Some(300));
        assert_eq!(s.expect.min_hints, 2);
        assert_eq!(Scenario::from_toml(&s.to_toml()).unwrap(), s);
        let bad = |from: &str, to: &str| Scenario::from_toml(&base.replace(from, to)).unwrap_err();
        assert!(bad("blind_writes = 0.5", "blind_writes = 1.5").contains("probabilities"));
        assert!(bad("timeout_ms = 300", "timeout_ms = 0").contains("positive"));
        assert!(bad("hinted_handoff = true", "").contains("min_hints"));
    }

    #[test]
    fn membership_events_parse_and_are_checked() {
        let base = r#"
            name = "t"
            [cluster]
            nodes = 3
            rf = 3
            spares = 2
            [workload]
            sessions = 1
            keys = 1
            ops_per_session = 1
            read = 1.0
            write = 0.0
        "#;
        let ok = format!(
            "{base}{}",
            r#"
            [[faults.events]]
            at_ms = 1
            fault = { kind = "join", node = 3 }
            [[faults.events]]
            at_ms = 2
            fault = { kind = "view", nodes = [0, 1, 2, 3, 4], rf = 2, via = 1 }
            [[faults.events]]
            at_ms = 3
            fault = { kind = "remove", node = 0 }
            [[faults.events]]
            at_ms = 4
            fault = { kind = "force-remove", node = 1, via = 2 }
            "#
        );
        let s = Scenario::from_toml(&ok).unwrap();
        assert_eq!(
            s.faults.events[1].fault,
            Fault::View {
                nodes: Some(vec![0, 1, 2, 3, 4]),
                rf: Some(2),
                via: Some(1)
            }
        );
        assert_eq!(Scenario::from_toml(&s.to_toml()).unwrap(), s);
        let bad = |event: &str| {
            Scenario::from_toml(&format!("{base}[[faults.events]]\nat_ms = 1\n{event}\n"))
                .unwrap_err()
        };
        assert!(bad(r#"fault = { kind = "join", node = 1 }"#).contains("first view"));
        assert!(bad(r#"fault = { kind = "join", node = 5 }"#).contains("outside"));
        assert!(bad(r#"fault = { kind = "view", nodes = [] }"#).contains("no nodes"));
        assert!(bad(r#"fault = { kind = "view", rf = 0 }"#).contains("rf = 0"));
    }
}
