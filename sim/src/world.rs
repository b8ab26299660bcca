//! The simulated world: every core node, the network between them, their disks and clocks, the
//! client sessions and the fault schedule, run as one discrete-event loop.
//!
//! Invariants:
//! - events run in `(time, sequence)` order; the only randomness is [`Draws`] (streams keyed by
//!   purpose and entity, so cutting one event does not shift the others' draws), and every draw
//!   is folded into the trace hash, so equal seeds give equal traces;
//! - a node's outputs are released only after its disk synced when its `Ready` asked for it;
//! - the core sees `now + offset + drift + jumps` (per node), never the simulator's clock;
//! - only `BTreeMap`/`BTreeSet`/`Vec` orders reach any output.

use crate::disk::SimDisk;
use bytes::Bytes;
use causeway::core::{
    Canary, Config, Dot, Identity, Input, Node, NodeId, Op, Origin, PeerMsg, Probes, Quorum, Ready,
    Request, Response, SyncMode, Time, VersionSet, VersionVector, View,
};
use causeway_harness::draws::{Draws, Purpose, link};
use causeway_harness::history::{History, OpRecord, Outcome, WriteRecord};
use causeway_harness::plan::{Fault, OpKind, Plan, PlannedOp, key_name, node_addr, view_of};
use causeway_harness::scenario::Scenario;
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
    ClientTimeout {
        session: usize,
        op: u64,
    },
    Heal,
    Probe,
    /// Quiesced: end now if every key's replicas agree (or the G3 bound is reached), else later.
    Settled,
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

/// One node: its core while up, its disk while down.
struct Slot {
    id: NodeId,
    node: Option<Node<SimDisk>>,
    disk: Option<SimDisk>,
    paused: bool,
    /// Inputs that arrived while paused, delivered in order on resume.
    held: Vec<Input>,
    /// Bumped on every stop and start; ticks of an older generation are dropped.
    generation: u64,
    offset_us: i64,
    drift_ppm: i64,
    ticks: u64,
    /// Client requests this node has not answered: request id -> session.
    pending: BTreeMap<u64, usize>,
    /// Writes this node was asked to execute whose dot has not been seen yet.
    awaited: Vec<AwaitedWrite>,
    /// Dots of this incarnation already in the registry.
    recorded: BTreeSet<Dot>,
    /// Has run at least once (a spare starts at its `join` or `view` event).
    started: bool,
    /// Force-removed: crashed for good, never restarted (not even at heal).
    dead: bool,
    /// Starts outside the cluster: an empty view, asking `join` (if any) to admit it.
    spare: bool,
    join: Option<NodeId>,
    /// Epoch of the view this node last reported, and whether that view lists it. Sessions use
    /// only members as entry points (a crashed member stays one: its requests are refused).
    epoch: u64,
    member: bool,
}

#[derive(Default)]
struct Session {
    ctx: VersionVector,
    next: usize,
    next_probe: usize,
    current: Option<u64>,
    done: bool,
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
}

/// A write a replica was handed and has not executed yet: the core may execute it at once or
/// later (after waiting for its context), and reports it in [`Ready::executed`] with the
/// request's origin, which names this entry.
struct AwaitedWrite {
    context: VersionVector,
    /// The client operation it serves (`UNATTRIBUTED` when no sent operation matches).
    op: u64,
    reply: ReplyTo,
}

/// Where the outcome of an awaited write is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    Client(u64),
    /// A forward reply to proxy `from` with this rid.
    Forward {
        from: usize,
        rid: u64,
    },
}

/// `WriteRecord::op` of an execution no sent operation matches.
const UNATTRIBUTED: u64 = u64::MAX;

pub struct World<'a, A: FnMut(u64)> {
    scenario: &'a Scenario,
    plan: &'a Plan,
    config: Config,
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
    clogged: BTreeSet<(usize, usize)>,
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
        let view = view_of(scenario);
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
        let slots = (0..scenario.cluster.slots())
            .map(|i| {
                let c = plan.clocks.get(i).copied().unwrap_or_default();
                let member = i < view.nodes.len();
                Slot {
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
                    dead: false,
                    spare: !member,
                    join: None,
                    epoch: 0,
                    member,
                }
            })
            .collect::<Vec<Slot>>();
        World {
            index: slots.iter().map(|s| s.id.clone()).zip(0..).collect(),
            config,
            draws: Draws::new(seed),
            advance,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            slots,
            sessions: plan.sessions.iter().map(|_| Session::default()).collect(),
            clogged: BTreeSet::new(),
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
                ..History::default()
            },
            sent: BTreeMap::new(),
            admin: BTreeMap::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            trace: trace.then(Vec::new),
            stats: Stats::default(),
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
        self.schedule(self.chaos_end, Event::Heal);
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            self.now = at;
            (self.advance)(at);
            self.stats.events += 1;
            if self.dispatch(event) {
                break;
            }
        }
        self.capture_finals();
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
    fn note(&mut self, code: u64, what: impl FnOnce(&Self) -> String) {
        self.hash = mix(self.hash, self.now ^ (code << 56));
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
            Event::ClientTimeout { session, op } => {
                if self.sessions[session].current == Some(op) {
                    let node = self.history.ops[op as usize].node;
                    self.slots[node].pending.remove(&op);
                    let o = self.history.ops[op as usize].unavailable("client timeout".into());
                    self.complete(session, op, o);
                }
            }
            Event::Heal => self.heal(),
            Event::Probe => {
                self.phase = Phase::Probe;
                self.note(4, |_| "probe".into());
                for s in 0..self.sessions.len() {
                    self.session_next(s);
                }
            }
            Event::Settled => {
                if self.converged() || self.now >= self.liveness_end {
                    self.note(5, |_| "end".into());
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

    fn deliver(&mut self, from: usize, to: usize, msg: PeerMsg) {
        let slot = &self.slots[to];
        if slot.node.is_none() {
            self.stats.dropped += 1;
            return;
        }
        self.note(1, |_| format!("deliver n{from}->n{to} {:?}", msg));
        let input = Input::Peer {
            from: self.slots[from].id.clone(),
            msg,
        };
        if self.slots[to].paused {
            self.slots[to].held.push(input);
        } else {
            self.feed(to, input);
        }
    }

    fn tick(&mut self, n: usize, generation: u64) {
        if self.slots[n].generation != generation || self.slots[n].node.is_none() {
            return;
        }
        let interval = self.config.tick_interval.as_micros() as u64;
        self.schedule(
            self.now + interval,
            Event::Tick {
                node: n,
                generation,
            },
        );
        if self.slots[n].paused {
            return;
        }
        self.feed(n, Input::Tick);
        let slot = &mut self.slots[n];
        slot.ticks += 1;
        if self.config.sync == SyncMode::Batch
            && slot.ticks.is_multiple_of(BATCH_SYNC_TICKS)
            && let Some(node) = &mut slot.node
        {
            causeway::core::Storage::sync(node.storage_mut());
        }
    }

    /// Hands `input` to node `n` and carries out the resulting `Ready`.
    fn feed(&mut self, n: usize, input: Input) {
        if let Some(w) = self.awaited_write(n, &input) {
            self.slots[n].awaited.push(w);
        }
        let now = self.local(n);
        let Some(node) = self.slots[n].node.as_mut() else {
            return;
        };
        node.handle(now, input);
        self.flush(n);
    }

    /// The write `input` asks replica `n` to execute, if any.
    fn awaited_write(&self, n: usize, input: &Input) -> Option<AwaitedWrite> {
        let (op, reply, client_op) = match input {
            Input::Client(Request { id, op }) => (op, ReplyTo::Client(*id), Some(*id)),
            Input::Peer {
                from,
                msg: PeerMsg::Forward { rid, op, .. },
            } => {
                let from = *self.index.get(from)?;
                let reply = ReplyTo::Forward { from, rid: *rid };
                (op, reply, self.forwarded_op(from, op))
            }
            _ => return None,
        };
        let Op::Put { context, .. } = op else {
            return None;
        };
        // Awaited at every node it reaches, owner or not: the node may execute it later (after
        // a causal wait, or once a view change made it the owner and the request was routed
        // again), and a node executes only writes it was handed.
        self.slots[n].node.as_ref()?;
        Some(AwaitedWrite {
            context: context.clone(),
            op: client_op.unwrap_or(UNATTRIBUTED),
            reply,
        })
    }

    /// The client operation a forwarded write serves: the latest one sent to the proxy with
    /// the same key, value and context.
    fn forwarded_op(&self, proxy: usize, op: &Op) -> Option<u64> {
        let Op::Put {
            key,
            value,
            context,
            ..
        } = op
        else {
            return None;
        };
        self.sent
            .get(&(proxy, key.clone()))?
            .iter()
            .rev()
            .copied()
            .find(|&id| {
                let r = &self.history.ops[id as usize];
                r.kind != OpKind::Get && r.value == *value && r.context == *context
            })
    }

    /// Records the writes `ready` reports executed ([`Ready::executed`]), each under the client
    /// operation its request serves, and stops awaiting requests that were answered or refused.
    fn observe_writes(&mut self, n: usize, ready: &Ready) {
        if self.slots[n].node.is_none() {
            return;
        }
        let me = self.slots[n].id.clone();
        for e in &ready.executed {
            let to = match &e.origin {
                Origin::Client(id) => Some(ReplyTo::Client(*id)),
                Origin::Proxy { from, rid } => self
                    .index
                    .get(from)
                    .map(|&from| ReplyTo::Forward { from, rid: *rid }),
            };
            // The newest with that address: a restarted proxy numbers its forwards from the
            // start again, so an older entry may carry the same one.
            let awaited = &mut self.slots[n].awaited;
            let a = to
                .and_then(|to| awaited.iter().rposition(|a| a.reply == to))
                .map(|i| awaited.remove(i));
            if !self.slots[n].recorded.insert(e.dot) {
                continue;
            }
            let (op, context) =
                a.map_or((UNATTRIBUTED, e.supersedes.clone()), |a| (a.op, a.context));
            self.note(6, |_| format!("{me} executes {:?} for op#{op}", e.dot));
            self.history.writes.push(WriteRecord {
                dot: e.dot,
                key: e.key.clone(),
                value: e.value.clone(),
                supersedes: e.supersedes.clone(),
                context,
                node: n,
                at_us: self.now,
                op,
            });
        }
        // A request answered here (or, for a forward, refused) is not executed here later.
        let answered = ready
            .replies
            .iter()
            .map(|r| Some(ReplyTo::Client(r.id)))
            .chain(ready.messages.iter().map(|(to, m)| match m {
                PeerMsg::ForwardReply { rid, .. } | PeerMsg::NotReplica { rid, .. } => {
                    let from = *self.index.get(to)?;
                    Some(ReplyTo::Forward { from, rid: *rid })
                }
                _ => None,
            }))
            .flatten()
            .collect::<Vec<_>>();
        for to in answered {
            let awaited = &mut self.slots[n].awaited;
            if let Some(i) = awaited.iter().rposition(|a| a.reply == to) {
                awaited.remove(i);
            }
        }
    }

    fn flush(&mut self, n: usize) {
        let Some(node) = self.slots[n].node.as_mut() else {
            return;
        };
        let mut ready = node.take_ready();
        // The simulated sync is instantaneous: early answers leave at the same instant.
        ready.merge_early();
        if ready.sync {
            causeway::core::Storage::sync(node.storage_mut());
        }
        let (epoch, member) = (node.view().epoch, node.view().nodes.contains(node.id()));
        if epoch != self.slots[n].epoch {
            self.views_changed |= self.slots[n].epoch != 0;
            self.slots[n].epoch = epoch;
            self.slots[n].member = member;
            self.note(15, |_| {
                format!("n{n} installs view {epoch:#x} (member: {member})")
            });
        }
        self.observe_writes(n, &ready);
        for (to, msg) in ready.messages {
            match self.index.get(&to) {
                Some(&t) => self.send(n, t, msg),
                None => self.stats.dropped += 1,
            }
        }
        for reply in ready.replies {
            if reply.id >= ADMIN_BASE {
                self.admin_reply(reply.id, reply.result);
            } else if let Some(s) = self.slots[n].pending.remove(&reply.id) {
                self.note_replier(n, reply.id);
                let o = self.history.ops[reply.id as usize].outcome_of(reply.result);
                self.complete(s, reply.id, o);
            }
        }
    }

    /// Records what node `n` has applied on operation `id` it is answering — its applied clock
    /// joined with the context of its copy of the key — when `n` owns the key and no view has
    /// changed yet (else its answer may rest on a previous owner's state or a handoff clock).
    /// G1 checks that the reply context claims nothing beyond it (`harness::check`).
    fn note_replier(&mut self, n: usize, id: u64) {
        if self.views_changed {
            return;
        }
        let Some(node) = self.slots[n].node.as_ref() else {
            return;
        };
        let rec = &mut self.history.ops[id as usize];
        let st = node.status();
        if rec.outcome == Outcome::Pending && st.shard == Some(st.view.shard_of_key(&rec.key)) {
            let mut applied = node.applied();
            if let Some(set) = node.local_state(&rec.key) {
                applied.merge(set.context());
            }
            rec.replier_applied = Some(applied);
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: PeerMsg) {
        self.stats.messages += 1;
        let l = message_stream(from, to, &msg);
        if self.clogged.contains(&(from, to)) || self.chance(Purpose::Loss, l, self.loss) {
            self.stats.dropped += 1;
            self.note(14, |_| format!("drop n{from}->n{to} {}", msg.kind()));
            return;
        }
        let [lo, hi] = self.scenario.net.delay_us;
        if self.chance(Purpose::Dup, l, self.dup) {
            let d = self.range(Purpose::Dup, l, lo, hi);
            self.schedule(
                self.now + d,
                Event::Deliver {
                    from,
                    to,
                    msg: Box::new(msg.clone()),
                },
            );
        }
        let d = self.range(Purpose::Delay, l, lo, hi);
        self.schedule(
            self.now + d,
            Event::Deliver {
                from,
                to,
                msg: Box::new(msg),
            },
        );
    }

    fn start(&mut self, n: usize) {
        let nonce = self.rand(Purpose::Nonce, n as u64);
        let now = self.local(n);
        let slot = &mut self.slots[n];
        let disk = slot.disk.take().unwrap_or_default();
        let id = Identity {
            node: slot.id.clone(),
            nonce,
        };
        let mut config = self.config.clone();
        if slot.spare {
            // Outside the cluster until admitted (a restart over a disk that recorded a view
            // resumes from that view instead).
            config.view = View::joining();
            config.view.partitions = self.scenario.cluster.partitions;
            config.join = slot.join.clone();
        }
        slot.node = Some(Node::new(config, id, disk, now));
        slot.started = true;
        slot.recorded.clear();
        slot.generation += 1;
        slot.paused = false;
        let generation = slot.generation;
        self.note(7, |_| format!("start n{n}"));
        let interval = self.config.tick_interval.as_micros() as u64;
        self.schedule(
            self.now + interval,
            Event::Tick {
                node: n,
                generation,
            },
        );
        self.flush(n);
    }

    fn stop(&mut self, n: usize, wipe: bool) {
        let Some(node) = self.slots[n].node.take() else {
            return;
        };
        self.stats.crashes += 1;
        let st = node.status();
        self.stats.hints_accepted += st.handoff.hints_accepted;
        self.stats.probes.merge(&st.probes);
        let mut disk = node.into_storage();
        let (kept, torn) = (
            self.range(Purpose::Tear, n as u64, 0, disk.unsynced() as u64) as usize,
            self.chance(Purpose::Tear, n as u64, 0.5),
        );
        if wipe {
            disk = SimDisk::new();
            self.note(8, |_| format!("wipe n{n}"));
        } else {
            let loss = disk.crash(kept, torn);
            self.note(9, |_| format!("crash n{n} {loss:?}"));
        }
        let slot = &mut self.slots[n];
        slot.disk = Some(disk);
        slot.generation += 1;
        slot.paused = false;
        slot.held.clear();
        slot.awaited.clear();
        let lost: Vec<u64> = self
            .admin
            .iter()
            .filter(|&(_, &at)| at == n)
            .map(|(&id, _)| id)
            .collect();
        for id in lost {
            self.admin.remove(&id);
            self.note(16, |_| {
                format!("membership request {} lost: n{n} crashed", id - ADMIN_BASE)
            });
        }
        let slot = &mut self.slots[n];
        for (op, s) in std::mem::take(&mut slot.pending) {
            let o =
                self.history.ops[op as usize].unavailable("connection reset: node crashed".into());
            self.complete(s, op, o);
        }
    }

    fn resume(&mut self, n: usize) {
        if !self.slots[n].paused {
            return;
        }
        self.slots[n].paused = false;
        for input in std::mem::take(&mut self.slots[n].held) {
            self.feed(n, input);
        }
    }

    fn fault(&mut self, f: Fault) {
        self.note(10, |_| format!("fault {f:?}"));
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
            Fault::Rejoin { node } => self.clogged.retain(|&(a, b)| a != node && b != node),
            Fault::HealNet => self.clogged.clear(),
            Fault::Crash { node } => self.stop(node, false),
            Fault::Wipe { node } => self.stop(node, true),
            Fault::Restart { node } => {
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
    }

    /// Trace lines with each running node's view, handoff state and applied counters.
    fn trace_node_states(&mut self) {
        let lines: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let n = s.node.as_ref()?;
                let st = n.status();
                Some(format!(
                    "{:>12} n{i} view {:#x} shard {:?} actor {} handoff {:?} applied {:?}",
                    self.now,
                    st.view.epoch,
                    st.shard,
                    st.actor,
                    st.handoff,
                    n.applied()
                ))
            })
            .collect();
        if let Some(t) = &mut self.trace {
            t.extend(lines);
        }
    }

    /// The view node `v` currently routes by.
    fn view_at(&self, v: usize) -> View {
        self.slots[v]
            .node
            .as_ref()
            .map(|x| x.view().clone())
            .unwrap_or_else(View::joining)
    }

    /// A running, unpaused member to send a membership request to: `want` if it is one, else a
    /// random one (never `except`). None (noted in the trace) when there is none.
    fn pick_member(&mut self, want: Option<usize>, except: Option<usize>) -> Option<usize> {
        let ok = |w: &Self, i: usize| {
            let s = &w.slots[i];
            Some(i) != except && s.node.is_some() && !s.paused && s.member
        };
        if let Some(w) = want.filter(|&w| ok(self, w)) {
            return Some(w);
        }
        let live: Vec<usize> = (0..self.slots.len()).filter(|&i| ok(self, i)).collect();
        if live.is_empty() {
            self.note(16, |_| "membership event skipped: no running member".into());
            return None;
        }
        let i = self.rand(Purpose::Pick, 0) as usize % live.len();
        Some(live[i])
    }

    /// A spare that never ran starts outside the cluster and asks a member to admit it.
    fn join(&mut self, node: usize, via: Option<usize>) {
        if self.slots[node].started {
            self.note(16, |_| format!("join of n{node} skipped: it already ran"));
            return;
        }
        let Some(v) = self.pick_member(via, Some(node)) else {
            return;
        };
        self.note(16, |_| format!("n{node} joins through n{v}"));
        let slot = &mut self.slots[node];
        slot.spare = true;
        slot.join = Some(node_addr(v));
        self.start(node);
    }

    /// Decommissions `node` (it keeps running and hands off), or force-removes it (it crashes
    /// for good first).
    fn remove(&mut self, node: usize, via: Option<usize>, force: bool) {
        if force {
            self.stop(node, false);
            self.slots[node].dead = true;
            self.note(16, |_| format!("n{node} is dead for good"));
        }
        let Some(v) = self.pick_member(via, Some(node)) else {
            return;
        };
        let gone = node_addr(node);
        let nodes = self
            .view_at(v)
            .nodes
            .into_iter()
            .filter(|x| *x != gone)
            .collect();
        self.propose(v, nodes, None);
    }

    /// Asks member `v` to install a view of `nodes` (replication factor `rf`, default unchanged).
    /// Listed nodes that never ran start outside the cluster and learn the view by gossip.
    fn propose(&mut self, v: usize, nodes: Vec<NodeId>, rf: Option<usize>) {
        for id in &nodes {
            if let Some(&i) = self.index.get(id)
                && !self.slots[i].started
            {
                self.slots[i].spare = true;
                self.start(i);
            }
        }
        self.stats.view_changes += 1;
        let id = ADMIN_BASE + self.stats.view_changes;
        self.note(16, |_| {
            format!("n{v} is asked for view {nodes:?} rf {rf:?}")
        });
        self.admin.insert(id, v);
        let op = Op::ChangeView {
            nodes,
            repl_factor: rf,
        };
        self.feed(v, Input::Client(Request { id, op }));
    }

    fn admin_reply(&mut self, id: u64, result: Result<Response, causeway::core::ReqError>) {
        let Some(v) = self.admin.remove(&id) else {
            return;
        };
        match result {
            Ok(Response::ViewChanged { view }) => self.note(16, |_| {
                format!("n{v} installed view {:#x}: {:?}", view.epoch, view.nodes)
            }),
            other => {
                self.stats.view_errors += 1;
                self.note(16, |_| format!("n{v} refused the view change: {other:?}"));
            }
        }
    }

    fn heal(&mut self) {
        self.phase = Phase::Settle;
        self.note(11, |_| "heal".into());
        self.clogged.clear();
        self.loss = 0.0;
        self.dup = 0.0;
        for n in 0..self.slots.len() {
            let slot = &self.slots[n];
            if slot.node.is_none() && slot.started && !slot.dead {
                self.start(n);
            }
            self.resume(n);
        }
        let settle = (self.scenario.phases.settle_s * 1e6) as u64;
        self.schedule(self.now + settle, Event::Probe);
    }

    fn session_next(&mut self, s: usize) {
        if self.sessions[s].current.is_some() || self.sessions[s].done {
            return;
        }
        let plan = &self.plan.sessions[s];
        match self.phase {
            Phase::Chaos if self.now < self.chaos_end && self.sessions[s].next < plan.ops.len() => {
                let op = plan.ops[self.sessions[s].next].clone();
                let value = format!("s{s}.{}", self.sessions[s].next);
                self.sessions[s].next += 1;
                self.issue(s, &op, value, false);
            }
            Phase::Probe if self.sessions[s].next_probe < plan.probe.len() => {
                let op = plan.probe[self.sessions[s].next_probe].clone();
                let value = format!("s{s}.p{}", self.sessions[s].next_probe);
                self.sessions[s].next_probe += 1;
                self.issue(s, &op, value, true);
            }
            Phase::Probe => {
                self.sessions[s].done = true;
                if self.sessions.iter().all(|x| x.done) {
                    self.phase = Phase::Done;
                    let quiesce = (self.scenario.phases.quiesce_s * 1e6) as u64;
                    self.schedule(self.now + quiesce, Event::Settled);
                }
            }
            _ => {}
        }
    }

    /// The node a session's operation planned for `planned` goes to: that node if it is a
    /// member (by its own view; a crashed member still counts), else the member that many places
    /// along, so spares serve clients once they have joined and decommissioned nodes stop.
    fn entry(&self, planned: usize) -> usize {
        let ok = |i: usize| {
            let s = &self.slots[i];
            s.started && !s.dead && s.member
        };
        if ok(planned) {
            return planned;
        }
        let members: Vec<usize> = (0..self.slots.len()).filter(|&i| ok(i)).collect();
        if members.is_empty() {
            return planned;
        }
        members[planned % members.len()]
    }

    fn issue(&mut self, s: usize, p: &PlannedOp, value: String, probe: bool) {
        let node = self.entry(p.node);
        if let Some(m) = p.merge_from.filter(|&m| m < self.sessions.len()) {
            let other = self.sessions[m].ctx.clone();
            self.sessions[s].ctx.merge(&other);
        }
        let id = self.history.ops.len() as u64;
        let key = Bytes::from(key_name(p.key));
        let value = (p.kind == OpKind::Put).then(|| Bytes::from(value));
        let blind = p.blind && p.kind != OpKind::Get;
        let context = if blind {
            VersionVector::new()
        } else {
            self.sessions[s].ctx.clone()
        };
        let op = match p.kind {
            OpKind::Get => Op::Get {
                key: key.clone(),
                context: context.clone(),
                r: self.r,
            },
            OpKind::Put | OpKind::Delete => Op::Put {
                key: key.clone(),
                value: value.clone(),
                content_type: None,
                context: context.clone(),
                w: self.w,
            },
        };
        self.history.ops.push(OpRecord {
            id,
            session: s,
            node,
            kind: p.kind,
            key: key.clone(),
            value,
            context,
            invoked_us: self.now,
            completed_us: None,
            outcome: Outcome::Pending,
            probe,
            blind,
            replier_applied: None,
        });
        self.sent.entry((node, key)).or_default().push(id);
        self.sessions[s].current = Some(id);
        self.note(12, |w| {
            let op = &w.history.ops[id as usize];
            format!("invoke {op} ctx {:?}", op.context)
        });
        if self.slots[node].node.is_none() {
            let o = Outcome::Failed("connection refused: node down".into());
            return self.complete(s, id, o);
        }
        self.slots[node].pending.insert(id, s);
        let timeout = match self.scenario.workload.timeout_ms {
            Some(ms) => ms * 1000,
            None => (self.config.request_timeout + CLIENT_GRACE).as_micros() as u64,
        };
        self.schedule(
            self.now + timeout,
            Event::ClientTimeout { session: s, op: id },
        );
        let input = Input::Client(Request { id, op });
        if self.slots[node].paused {
            self.slots[node].held.push(input);
        } else {
            self.feed(node, input);
        }
    }

    fn complete(&mut self, s: usize, id: u64, outcome: Outcome) {
        let rec = &mut self.history.ops[id as usize];
        if rec.outcome != Outcome::Pending {
            return;
        }
        if let Outcome::Ok(Response::Read { context, .. } | Response::Written { context, .. }) =
            &outcome
        {
            self.sessions[s].ctx.merge(context);
        }
        let retry = rec.probe && !matches!(outcome, Outcome::Ok(_)) && self.now < self.liveness_end;
        if retry {
            rec.probe = false;
            self.sessions[s].next_probe -= 1;
        }
        rec.outcome = outcome;
        rec.completed_us = Some(self.now);
        self.note(13, |w| format!("complete {}", w.history.ops[id as usize]));
        self.sessions[s].current = None;
        let sp = &self.plan.sessions[s];
        let next = match self.phase {
            Phase::Chaos => sp.ops.get(self.sessions[s].next),
            _ => sp.probe.get(self.sessions[s].next_probe),
        };
        let at = if retry {
            self.now + PROBE_RETRY.as_micros() as u64
        } else {
            next.map_or(self.now, |o| o.issue_at(self.now))
        };
        self.schedule(at, Event::Session(s));
    }

    /// The final view: the newest view any running node holds (after heal every node must
    /// learn it by gossip).
    fn final_view(&self) -> View {
        self.slots
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.view()))
            .max_by_key(|v| v.epoch)
            .cloned()
            .unwrap_or_else(View::joining)
    }

    /// Running nodes that have not installed `fv`, or have not settled their handoffs (they
    /// hold partitions they no longer own, or await partitions they gained), with why.
    fn unsettled(&self, fv: &View) -> Vec<String> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(node) = &slot.node else { continue };
            let epoch = node.view().epoch;
            if epoch != fv.epoch {
                out.push(format!(
                    "n{i} still routes by view {epoch:#x}, not the final view {:#x}",
                    fv.epoch
                ));
                continue;
            }
            let h = node.status().handoff;
            if !h.retained.is_empty() || !h.awaiting.is_empty() {
                out.push(format!(
                    "n{i} never settled: retains partitions {:?}, awaits partitions {:?}, {} handoff streams running",
                    h.retained, h.awaiting, h.pushing
                ));
            }
        }
        out
    }

    /// Every key's replicas in the final view, and each one's version set (from its disk when
    /// the node is down). Copies at nodes that no longer own a key are not final states.
    fn replica_states(&self, fv: &View, key: &Bytes) -> Vec<(usize, VersionSet)> {
        fv.owners(fv.partition_of(key))
            .iter()
            .filter_map(|id| self.index.get(id))
            .map(|&n| {
                let slot = &self.slots[n];
                let set = match (&slot.node, &slot.disk) {
                    (Some(node), _) => node.local_state(key),
                    (None, Some(d)) => causeway::core::Storage::get(d, key),
                    (None, None) => None,
                };
                (n, set.unwrap_or_else(VersionSet::new))
            })
            .collect()
    }

    /// Whether the run may end: every running node has installed the final view and settled its
    /// handoffs, and every replica of every key (in the final view) holds the same versions.
    fn converged(&self) -> bool {
        let fv = self.final_view();
        let same_view = self
            .slots
            .iter()
            .all(|s| s.node.as_ref().is_none_or(|n| n.view().epoch == fv.epoch));
        same_view
            && (0..self.scenario.workload.keys).all(|k| {
                let states = self.replica_states(&fv, &Bytes::from(key_name(k)));
                states
                    .split_first()
                    .is_none_or(|(a, rest)| rest.iter().all(|b| b.1.versions() == a.1.versions()))
            })
            && self.unsettled(&fv).is_empty()
    }

    /// Final states for the checkers, by the final view, and the nodes that never settled.
    fn capture_finals(&mut self) {
        let fv = self.final_view();
        for k in 0..self.scenario.workload.keys {
            let key = Bytes::from(key_name(k));
            let reps = self.replica_states(&fv, &key);
            self.history.finals.insert(key, reps);
        }
        let bound = self.scenario.phases.liveness_s;
        self.history.unsettled = self
            .unsettled(&fv)
            .into_iter()
            .map(|u| format!("{u} {bound}s after heal"))
            .collect();
    }
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
    let what = xxhash_rust::xxh3::xxh3_64_with_seed(
        key,
        xxhash_rust::xxh3::xxh3_64(msg.kind().as_bytes()),
    );
    (what ^ link(from, to).rotate_left(32)) >> 8
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
