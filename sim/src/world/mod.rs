//! The simulated world: every core node, the network between them, their disks and clocks, the
//! client sessions and the fault schedule, run as one discrete-event loop. This module holds the
//! loop, its randomness and trace, and the fault dispatcher; each concern has its own file:
//! `net` (delivery), `slot` (each node's core or disk, and its Ready), `clients` (sessions),
//! `registry` (which write served which operation), `membership` (view changes) and `settle`
//! (heal, convergence, final states).
//!
//! Invariants:
//! - events run in `(time, sequence)` order; the only randomness is [`Draws`] (streams keyed by
//!   purpose and entity, so cutting one event does not shift the others' draws), and every draw
//!   is folded into the trace hash, so equal seeds give equal traces;
//! - a node's outputs are released only as `Ready::apply` orders them: the early lists, then
//!   (after its disk synced, when its `Ready` asked for it) the rest; a `crash-before-sync` fault
//!   stops it at that sync, after the early lists left;
//! - the core sees `now + offset + drift + jumps` (per node), never the simulator's clock;
//! - only `BTreeMap`/`BTreeSet`/`Vec` orders reach any output.

mod avail;
mod clients;
mod membership;
mod net;
mod registry;
mod repair;
mod settle;
mod slot;
mod strong;

use crate::disk::SimDisk;
use bytes::Bytes;
use causeway::core::config::MeshUpstream;
use causeway::core::{
    Canary, Config, Dot, Effects, Executed, Identity, Input, Node, NodeId, Op, Origin, PeerMsg,
    Persisted, Probes, Quorum, Reply, Request, Response, SyncMode, Time, VersionSet, VersionVector,
    View,
};
use causeway_harness::draws::{Draws, Purpose, link};
use causeway_harness::generate::cluster_view;
use causeway_harness::history::{History, OpRecord, Outcome, WriteRecord};
use causeway_harness::plan::{Fault, OpKind, Plan, PlannedOp, key_name, node_addr};
use causeway_harness::scenario::Scenario;
use clients::Session;
use registry::AwaitedWrite;
use slot::{Outputs, Slot};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// Microseconds of the simulated wall clock at time zero (2022-01-01T00:00:00Z).
const EPOCH_US: i128 = 1_640_995_200_000_000;

/// A driver-side sync of `sync = "batch"` disks happens every this many ticks.
const BATCH_SYNC_TICKS: u64 = 5;

/// How often a quiesced world checks whether its replicas agree yet.
const CONVERGENCE_POLL: Duration = Duration::from_millis(250);

/// Pause before a failed probe is retried.
const PROBE_RETRY: Duration = Duration::from_millis(500);

/// What a client waits beyond the core's request timeout before giving up on a reply.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// Request ids of membership requests (view changes) start here, above every client op id.
const ADMIN_BASE: u64 = 1 << 62;

enum Event {
    /// Boxed: events move inside the heap, and messages are large.
    Deliver {
        from: usize,
        to: usize,
        msg: Box<PeerMsg>,
    },
    Tick {
        node: usize,
        generation: u64,
    },
    Fault(usize),
    Session(usize),
    /// A strong-key client issues its next operation.
    Strong(usize),
    StrongTimeout {
        client: usize,
        op: usize,
    },
    ClientTimeout {
        session: usize,
        op: u64,
    },
    Heal,
    Probe,
    /// Judge the replicas that answered a read of several replicas (`repair`).
    RepairCheck(usize),
    /// Quiesced: end now if every key's replicas agree (or the G3 bound is reached), else later.
    Settled,
}

/// What a trace line records; its code is folded into the trace hash with the time, so the
/// values are part of every recorded trace hash: never renumber them.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
enum TraceCode {
    /// A message reaches its node.
    Deliver = 1,
    /// The probe phase begins.
    Probe = 4,
    /// The run ends.
    End = 5,
    /// A node executed a client write (the registry records it).
    Execute = 6,
    Start = 7,
    Wipe = 8,
    Crash = 9,
    /// A planned fault applies.
    Fault = 10,
    Heal = 11,
    /// A client sends an operation.
    Invoke = 12,
    /// A client operation completes.
    Complete = 13,
    /// The network drops a message.
    Drop = 14,
    /// A node installed a new view.
    ViewInstalled = 15,
    /// A membership request, its answer, or why it was skipped or lost.
    Membership = 16,
    /// A node crashes at a sync, after its turn's early release (`crash-before-sync`).
    CrashBeforeSync = 17,
    /// A write a crash lost before anyone learnt of it leaves the registry.
    WriteVanished = 18,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest event, ties in scheduling order.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Chaos,
    Settle,
    Probe,
    Done,
}

/// Counters of one run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub messages: u64,
    pub dropped: u64,
    pub events: u64,
    pub crashes: u64,
    /// Membership requests (view changes, forced removals) the world made, and those refused.
    pub view_changes: u64,
    pub view_errors: u64,
    /// Writes the nodes accepted as hints (`NodeStatus::handoff.hints_accepted`, summed over
    /// every incarnation of every node).
    pub hints_accepted: u64,
    /// The rare paths the nodes reached (`NodeStatus::probes`, summed like `hints_accepted`).
    pub probes: Probes,
}

/// Everything a run produced.
pub struct RunOutput {
    pub history: History,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub sim_us: u64,
    pub stats: Stats,
    /// The invariant a node's core found broken (its panic under debug assertions), at which
    /// event; the run stopped there.
    pub broken: Option<String>,
}

pub struct World<'a, A: FnMut(u64)> {
    scenario: &'a Scenario,
    plan: &'a Plan,
    /// The first cluster's configuration; its timings are every cluster's.
    config: Config,
    /// Each cluster's configuration (one entry outside a mesh): its view, id and upstreams.
    configs: Vec<Config>,
    /// One-way WAN latency between clusters `(a, b)`, `a < b`, µs (empty outside a mesh).
    wan_us: BTreeMap<(usize, usize), u64>,
    index: BTreeMap<NodeId, usize>,
    /// Every random decision, keyed by purpose and entity (see `causeway_harness::draws`).
    draws: Draws,
    /// Called with the simulated time before each event (keeps madsim's clock in step).
    advance: A,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    slots: Vec<Slot>,
    sessions: Vec<Session>,
    strong: Vec<strong::StrongClient>,
    /// Strong operations awaiting an answer: index in `history.strong` -> client.
    strong_pending: BTreeMap<usize, usize>,
    clogged: BTreeSet<(usize, usize)>,
    /// Incarnations (node, incarnation of its actor) that a wipe ended.
    wiped: Vec<(u32, u32)>,
    /// Nodes whose outbound links are cut: what they sent before is lost on arrival too.
    cut: BTreeSet<usize>,
    loss: f64,
    dup: f64,
    phase: Phase,
    chaos_end: u64,
    /// Heal + `liveness_s`: probes failing before it are retried (G4), and the run waits until
    /// then at most for replicas to agree (G3).
    liveness_end: u64,
    /// Some node moved from one view to another: from then on replicas vouch for partitions
    /// through handoff clocks the driver cannot see, so G1's applied-clock check stops.
    views_changed: bool,
    r: Quorum,
    w: Quorum,
    history: History,
    /// Ops by (node they were sent to, key), for attributing forwarded writes.
    sent: BTreeMap<(usize, Bytes), Vec<u64>>,
    /// Membership requests awaiting their reply: request id -> node asked.
    admin: BTreeMap<u64, usize>,
    hash: u64,
    trace: Option<Vec<String>>,
    stats: Stats,
    broken: Option<String>,
    /// Session requests judged for availability during chaos (`avail`), by op id.
    watches: BTreeMap<u64, avail::Watch>,
    /// A membership fault fired: availability is no longer judged.
    membership_started: bool,
    /// How many replicas a proxy may try before a servable one within a request's deadline.
    max_ahead: Option<u64>,
    /// Reads ask several replicas (`r` above one): read repair is judged (`repair`).
    follow_repairs: bool,
    /// Fetches of reads in progress, by (coordinator, rid).
    fetching: BTreeMap<(usize, u64), repair::Fetching>,
    /// The fetch answer being fed to its coordinator now.
    answering: Option<(usize, u64)>,
    repairs: Vec<repair::RepairDue>,
    /// When a message was last dropped on each link (kept only while `follow_repairs`).
    last_drop: BTreeMap<(usize, usize), u64>,
}

/// The most two nodes' clocks can differ during a run of `plan`, µs: twice the largest initial
/// offset, twice the largest drift over the whole run, and every clock step of a jump fault.
fn skew_bound(scenario: &Scenario, plan: &Plan) -> u64 {
    let p = &scenario.phases;
    let run_us = ((p.chaos_s + p.settle_s + p.liveness_s + p.quiesce_s) * 1e6) as u64;
    let offset = plan
        .clocks
        .iter()
        .map(|c| c.offset_ms.unsigned_abs() * 1000);
    let drift = plan
        .clocks
        .iter()
        .map(|c| c.drift_ppm.unsigned_abs() * run_us / 1_000_000);
    let jumps: u64 = plan
        .faults
        .iter()
        .filter_map(|f| match f.fault {
            Fault::Jump { ms, .. } => Some(ms.unsigned_abs() * 1000),
            _ => None,
        })
        .sum();
    2 * offset.max().unwrap_or(0) + 2 * drift.max().unwrap_or(0) + jumps
}

impl<'a, A: FnMut(u64)> World<'a, A> {
    pub fn new(
        scenario: &'a Scenario,
        plan: &'a Plan,
        canary: Option<Canary>,
        seed: u64,
        advance: A,
        trace: bool,
    ) -> Self {
        let view = cluster_view(scenario, 0);
        let mut config = Config::new(view.clone());
        config.sync = scenario.cluster.sync;
        config.conflicts = scenario.cluster.conflicts;
        config.canary = canary;
        config.hinted_handoff = scenario.cluster.hinted_handoff;
        if let Some(g) = scenario.cluster.tombstone_grace_s {
            config.tombstone_grace = Duration::from_secs_f64(g);
        }
        if let Some(i) = scenario.cluster.aae_interval_s {
            config.aae_interval = Duration::from_secs_f64(i);
        }
        let (configs, wan_us) = mesh_configs(scenario, &config, seed);
        let members = view.nodes.len() * scenario.cluster.clusters;
        let slots = (0..scenario.cluster.slots())
            .map(|i| {
                let c = plan.clocks.get(i).copied().unwrap_or_default();
                let member = i < members;
                Slot {
                    cluster: scenario.cluster.cluster_of(i),
                    id: node_addr(i),
                    node: None,
                    disk: Some(SimDisk::new()),
                    paused: false,
                    held: Vec::new(),
                    generation: 0,
                    offset_us: c.offset_ms * 1000,
                    drift_ppm: c.drift_ppm,
                    ticks: 0,
                    pending: BTreeMap::new(),
                    awaited: Vec::new(),
                    recorded: BTreeSet::new(),
                    started: false,
                    crash_before_sync: false,
                    dead: false,
                    spare: !member,
                    join: None,
                    epoch: 0,
                    member,
                }
            })
            .collect::<Vec<Slot>>();
        let deadline_us = (config.request_timeout.as_micros() as u64).min(
            scenario
                .workload
                .timeout_ms
                .map_or(u64::MAX, |ms| ms * 1000),
        );
        let max_ahead = avail::max_ahead(&config, deadline_us, scenario.net.delay_us[1]);
        World {
            config,
            configs,
            wan_us,
            index: slots.iter().map(|s| s.id.clone()).zip(0..).collect(),
            draws: Draws::new(seed),
            advance,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            slots,
            sessions: plan.sessions.iter().map(|_| Session::default()).collect(),
            strong: (0..scenario.strong.as_ref().map_or(0, |s| s.clients))
                .map(|_| strong::StrongClient::default())
                .collect(),
            strong_pending: BTreeMap::new(),
            clogged: BTreeSet::new(),
            cut: BTreeSet::new(),
            wiped: Vec::new(),
            loss: scenario.net.loss,
            dup: scenario.net.dup,
            phase: Phase::Chaos,
            chaos_end: (scenario.phases.chaos_s * 1e6) as u64,
            liveness_end: ((scenario.phases.chaos_s + scenario.phases.liveness_s) * 1e6) as u64,
            views_changed: false,
            r: scenario.workload.r().expect("validated on load"),
            w: scenario.workload.w().expect("validated on load"),
            history: History {
                nodes: scenario.cluster.slots(),
                skew_us: skew_bound(scenario, plan),
                ..History::default()
            },
            sent: BTreeMap::new(),
            admin: BTreeMap::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            trace: trace.then(Vec::new),
            stats: Stats::default(),
            broken: None,
            watches: BTreeMap::new(),
            membership_started: false,
            max_ahead,
            follow_repairs: scenario.workload.r().is_ok_and(|r| r != Quorum::N(1)),
            fetching: BTreeMap::new(),
            answering: None,
            repairs: Vec::new(),
            last_drop: BTreeMap::new(),
            scenario,
            plan,
        }
    }

    /// Runs chaos, heal, settle, probe and quiesce, then waits until every key's replicas agree
    /// or `liveness_s` after heal has passed (the G3 bound); returns the history and final states.
    pub fn run(mut self) -> RunOutput {
        for n in 0..self.slots.len() {
            if !self.slots[n].spare {
                self.start(n);
            }
        }
        for (i, f) in self.plan.faults.iter().enumerate() {
            let at = f.at_ms * 1000;
            if at < self.chaos_end {
                self.schedule(at, Event::Fault(i));
            }
        }
        for s in 0..self.sessions.len() {
            let first = self.plan.sessions[s].ops.first();
            self.schedule(first.map_or(0, |o| o.issue_at(0)), Event::Session(s));
        }
        self.start_strong();
        self.schedule(self.chaos_end, Event::Heal);
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            self.now = at;
            (self.advance)(at);
            self.stats.events += 1;
            if self.dispatch(event) || self.broken.is_some() {
                break;
            }
        }
        self.capture_finals();
        self.finish_strong();
        for slot in &self.slots {
            if let Some(node) = &slot.node {
                let st = node.status();
                self.stats.hints_accepted += st.handoff.hints_accepted;
                self.stats.probes.merge(&st.probes);
            }
        }
        for op in &self.history.ops {
            let h = xxhash_rust::xxh3::xxh3_64(op.to_string().as_bytes());
            self.hash = mix(self.hash, h);
        }
        for (k, reps) in &self.history.finals {
            for (n, s) in reps {
                let h = xxhash_rust::xxh3::xxh3_64(format!("{k:?}{n}{s:?}").as_bytes());
                self.hash = mix(self.hash, h);
            }
        }
        RunOutput {
            history: self.history,
            trace_hash: self.hash,
            trace: self.trace.unwrap_or_default(),
            sim_us: self.now,
            stats: self.stats,
            broken: self.broken,
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    /// A draw of stream `(purpose, entity)`, folded into the trace hash.
    fn rand(&mut self, purpose: Purpose, entity: u64) -> u64 {
        let x = self.draws.u64(purpose, entity);
        self.hash = mix(self.hash, x);
        x
    }

    fn chance(&mut self, purpose: Purpose, entity: u64, p: f64) -> bool {
        let hit = self.draws.chance(purpose, entity, p);
        self.hash = mix(self.hash, hit as u64);
        hit
    }

    fn range(&mut self, purpose: Purpose, entity: u64, lo: u64, hi: u64) -> u64 {
        let x = self.draws.range(purpose, entity, lo, hi);
        self.hash = mix(self.hash, x);
        x
    }

    /// Folds an event into the trace hash and, when tracing, records a line describing it.
    fn note(&mut self, code: TraceCode, what: impl FnOnce(&Self) -> String) {
        self.hash = mix(self.hash, self.now ^ ((code as u64) << 56));
        if self.trace.is_some() {
            let line = format!("{:>12} {}", self.now, what(self));
            if let Some(t) = &mut self.trace {
                t.push(line);
            }
        }
    }

    /// The time node `n`'s core sees.
    fn local(&self, n: usize) -> Time {
        let s = &self.slots[n];
        let now = i128::from(self.now);
        let t =
            EPOCH_US + now + i128::from(s.offset_us) + now * i128::from(s.drift_ppm) / 1_000_000;
        Time::from_micros(t.max(0) as u64)
    }

    /// Returns true when the run is over.
    fn dispatch(&mut self, event: Event) -> bool {
        match event {
            Event::Deliver { from, to, msg } => self.deliver(from, to, *msg),
            Event::Tick { node, generation } => self.tick(node, generation),
            Event::Fault(i) => self.fault(self.plan.faults[i].fault.clone()),
            Event::Session(s) => self.session_next(s),
            Event::Strong(c) => self.strong_next(c),
            Event::StrongTimeout { client, op } => self.strong_timeout(client, op),
            Event::ClientTimeout { session, op } => {
                if self.sessions[session].current == Some(op) {
                    let node = self.history.ops[op as usize].node;
                    self.slots[node].pending.remove(&op);
                    let o = self.history.ops[op as usize].unavailable("client timeout".into());
                    self.complete(session, op, o);
                }
            }
            Event::Heal => self.heal(),
            Event::RepairCheck(i) => self.repair_check(i),
            Event::Probe => {
                self.phase = Phase::Probe;
                self.note(TraceCode::Probe, |_| "probe".into());
                for s in 0..self.sessions.len() {
                    self.session_next(s);
                }
            }
            Event::Settled => {
                if self.converged() || self.now >= self.liveness_end {
                    self.note(TraceCode::End, |_| "end".into());
                    if self.trace.is_some() {
                        self.trace_node_states();
                    }
                    return true;
                }
                self.schedule(
                    self.now + CONVERGENCE_POLL.as_micros() as u64,
                    Event::Settled,
                );
            }
        }
        false
    }

    fn fault(&mut self, f: Fault) {
        self.note(TraceCode::Fault, |_| format!("fault {f:?}"));
        let applied = f.clone();
        let n = self.slots.len();
        match f {
            Fault::Partition { groups } => {
                for (i, a) in groups.iter().enumerate() {
                    for b in groups.iter().skip(i + 1) {
                        for &x in a {
                            for &y in b {
                                self.clogged.insert((x, y));
                                self.clogged.insert((y, x));
                            }
                        }
                    }
                }
            }
            Fault::Clog { from, to } => {
                self.clogged.insert((from, to));
            }
            Fault::Isolate { node } => {
                for m in (0..n).filter(|&m| m != node) {
                    self.clogged.insert((node, m));
                    self.clogged.insert((m, node));
                }
            }
            Fault::Cut { node } => {
                for m in (0..n).filter(|&m| m != node) {
                    self.clogged.insert((node, m));
                }
                self.cut.insert(node);
            }
            Fault::Rejoin { node } => {
                self.clogged.retain(|&(a, b)| a != node && b != node);
                self.cut.remove(&node);
            }
            Fault::HealNet => {
                self.clogged.clear();
                self.cut.clear();
            }
            Fault::Crash { node } => self.stop(node, false),
            Fault::CrashBeforeSync { node } => {
                self.slots[node].crash_before_sync = self.slots[node].node.is_some();
            }
            Fault::Wipe { node } => self.stop(node, true),
            Fault::Restart { node } => {
                self.slots[node].crash_before_sync = false;
                let slot = &self.slots[node];
                if slot.node.is_none() && slot.started && !slot.dead {
                    self.start(node);
                }
            }
            Fault::Pause { node } => {
                if self.slots[node].node.is_some() {
                    self.slots[node].paused = true;
                }
            }
            Fault::Resume { node } => self.resume(node),
            Fault::Jump { node, ms } => self.slots[node].offset_us += ms * 1000,
            Fault::Loss { rate } => self.loss = rate,
            Fault::Dup { rate } => self.dup = rate,
            Fault::Join { node, via } => self.join(node, via),
            Fault::View { nodes, rf, via } => {
                if let Some(v) = self.pick_member(via, None) {
                    let nodes = match nodes {
                        Some(list) => list.into_iter().map(node_addr).collect(),
                        None => self.view_at(v).nodes,
                    };
                    self.propose(v, nodes, rf);
                }
            }
            Fault::Remove { node, via } => self.remove(node, via, false),
            Fault::ForceRemove { node, via } => self.remove(node, via, true),
        }
        self.watch_fault(&applied);
    }
}

/// Each cluster's configuration, from the first cluster's `base`, and the WAN latency between
/// each pair of clusters (drawn from the seed's `Wan` streams). Outside a mesh: `base` alone.
fn mesh_configs(
    scenario: &Scenario,
    base: &Config,
    seed: u64,
) -> (Vec<Config>, BTreeMap<(usize, usize), u64>) {
    let c = &scenario.cluster;
    if !c.is_mesh() {
        return (vec![base.clone()], BTreeMap::new());
    }
    let m = &scenario.mesh;
    let configs = (0..c.clusters)
        .map(|k| {
            let mut cfg = base.clone();
            cfg.view = cluster_view(scenario, k);
            cfg.cluster = k as u32 + 1;
            cfg.mesh_member = true;
            cfg.mesh_queue = m.queue;
            cfg.mesh_sync_interval = Duration::from_secs_f64(m.sync_interval_s);
            cfg.mesh_upstreams = (0..c.clusters)
                .filter(|&u| u != k)
                .map(|u| MeshUpstream {
                    name: format!("c{}", u + 1),
                    node: node_addr(c.members_of(u).start),
                })
                .collect();
            cfg
        })
        .collect();
    let mut draws = Draws::new(seed);
    let [lo, hi] = m.wan_delay_ms;
    let mut wan = BTreeMap::new();
    for a in 0..c.clusters {
        for b in a + 1..c.clusters {
            let ms = draws.range(Purpose::Wan, link(a, b), lo, hi);
            wan.insert((a, b), ms * 1000);
        }
    }
    (configs, wan)
}

/// The entity whose streams a message's network draws (loss, duplication, delay) come from: its
/// link, its kind and, for a message about one key, that key. Cutting operations on other keys
/// (or other kinds of traffic) then leaves this message's draws where they were.
fn message_stream(from: usize, to: usize, msg: &PeerMsg) -> u64 {
    let key: &[u8] = match msg {
        PeerMsg::Forward { op, .. } => op.key().map_or(&[], |k| k.as_ref()),
        PeerMsg::Replicate { key, .. }
        | PeerMsg::ReplicateAck { key, .. }
        | PeerMsg::Fetch { key, .. }
        | PeerMsg::Repair { key, .. }
        | PeerMsg::Reap { key, .. } => key,
        _ => &[],
    };
    let kind = xxhash_rust::xxh3::xxh3_64(msg.kind().as_bytes());
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, kind) ^ link(from, to).rotate_left(32)) >> 8
}

fn mix(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SHARDS: &str = r#"
        name = "two-shards"
        description = "Two nodes, one replica each."
        [cluster]
        nodes = 2
        rf = 1
        [workload]
        sessions = 1
        keys = 1
        ops_per_session = 0
        read = 1.0
        write = 1.0
        delete = 0.0
    "#;

    /// A forward the replica refused is not awaited there: the write a later forward under the
    /// same proxy and rid carries (a restarted proxy may reuse a rid) is recorded as itself.
    #[test]
    fn a_refused_forward_leaves_nothing_awaited() {
        let scenario = Scenario::from_toml(TWO_SHARDS).unwrap();
        let plan = Plan::default();
        let mut w = World::new(&scenario, &plan, None, 0, |_| {}, false);
        w.start(0);
        w.start(1);
        // Its first tick verifies node 1's own floor: only then does it write.
        w.feed(1, Input::Tick);
        let view = w.config.view.clone();
        let mine = view.shard_of_node(&node_addr(1)).unwrap();
        let key = |owned: bool| {
            (0..)
                .map(key_name)
                .find(|k| (view.shard_of_key(k.as_bytes()) == mine) == owned)
                .map(Bytes::from)
                .unwrap()
        };
        let forward = |key: Bytes, value: &'static str| Input::Peer {
            from: node_addr(0),
            msg: PeerMsg::Forward {
                rid: 9,
                op: Op::Put {
                    key,
                    value: Some(Bytes::from_static(value.as_bytes())),
                    content_type: None,
                    context: VersionVector::new(),
                    w: Quorum::N(1),
                    ttl: None,
                },
                epoch: view.epoch,
            },
        };
        w.feed(1, forward(key(false), "refused"));
        assert!(w.history.writes.is_empty());
        w.feed(1, forward(key(true), "executed"));
        let recorded: Vec<(&Bytes, Option<&Bytes>)> = w
            .history
            .writes
            .iter()
            .map(|r| (&r.key, r.value.as_ref()))
            .collect();
        assert_eq!(
            recorded,
            [(&key(true), Some(&Bytes::from_static(b"executed")))]
        );
    }
}
