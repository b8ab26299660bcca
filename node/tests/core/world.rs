//! An in-process world of core nodes wired by a deterministic message queue that can drop,
//! duplicate, delay and reorder messages under a seeded RNG, and cut links. No I/O, no clocks.

use bytes::Bytes;
use causeway::core::{
    Config, Identity, Input, MemStorage, Node, NodeId, Op, PeerMsg, Quorum, Reply, ReqId, Request,
    Response, Time, VersionVector, View,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Link behaviour: each message is dropped, duplicated and delayed with these odds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub drop: f64,
    pub dup: f64,
    /// Extra delay drawn uniformly from `0..=jitter_ms`, which reorders messages.
    pub jitter_ms: u64,
}

pub struct World {
    pub nodes: BTreeMap<NodeId, Node<MemStorage>>,
    pub config: Config,
    queue: BTreeMap<(Time, u64), (NodeId, NodeId, PeerMsg)>,
    seq: u64,
    pub now: Time,
    rng: SmallRng,
    pub faults: Faults,
    cut: BTreeSet<(NodeId, NodeId)>,
    down: BTreeSet<NodeId>,
    /// Per-node clock offset in microseconds (negative: behind), added to the time it is given.
    pub skew: BTreeMap<NodeId, i64>,
    pub replies: BTreeMap<ReqId, Reply>,
    next_req: ReqId,
    next_tick: Time,
    pub delivered: u64,
    /// Most value bytes any one handoff batch carried.
    pub max_handoff_batch_bytes: usize,
    /// Keys shipped in listing parts (`ListPartReply`), summed over every part sent.
    pub list_part_keys: usize,
    /// Messages each node sent, by sender and [`PeerMsg::kind`] (dropped ones included).
    pub sent: BTreeMap<(NodeId, &'static str), u64>,
}

pub fn addr(i: usize) -> NodeId {
    format!("10.0.0.{}:7000", i + 1)
}

impl World {
    /// `n` nodes named `addr(0..n)` with replication factor `rf` and default configuration.
    pub fn new(n: usize, rf: usize, seed: u64) -> World {
        let view = View::new((0..n).map(addr).collect(), rf).unwrap();
        World::with_config(Config::new(view), seed)
    }

    pub fn with_config(config: Config, seed: u64) -> World {
        let mut w = World {
            nodes: BTreeMap::new(),
            config: config.clone(),
            queue: BTreeMap::new(),
            seq: 0,
            now: Time::from_millis(1_000_000_000),
            rng: SmallRng::seed_from_u64(seed),
            faults: Faults::default(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            skew: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_req: 1,
            next_tick: Time::ZERO,
            delivered: 0,
            max_handoff_batch_bytes: 0,
            list_part_keys: 0,
            sent: BTreeMap::new(),
        };
        for id in config.view.nodes.clone() {
            w.start(&id, MemStorage::new());
        }
        w
    }

    /// The time node `id` reads: the world's time plus its skew.
    pub fn clock(&self, id: &NodeId) -> Time {
        let off = self.skew.get(id).copied().unwrap_or(0);
        Time::from_micros(self.now.as_micros().saturating_add_signed(off))
    }

    /// (Re)starts `id` over `storage`.
    pub fn start(&mut self, id: &NodeId, storage: MemStorage) {
        self.start_with(id, storage, self.config.clone());
    }

    /// (Re)starts `id` over `storage` with its own configuration (e.g. a node joining).
    pub fn start_with(&mut self, id: &NodeId, storage: MemStorage, config: Config) {
        let nonce = self.rng.random();
        let ident = Identity {
            node: id.clone(),
            nonce,
        };
        let node = Node::new(config, ident, storage, self.clock(id));
        self.nodes.insert(id.clone(), node);
        self.down.remove(id);
        self.flush(id);
    }

    /// Stops `id` abruptly; its in-memory storage is returned (everything was "synced").
    pub fn crash(&mut self, id: &NodeId) -> MemStorage {
        self.down.insert(id.clone());
        self.nodes.remove(id).unwrap().into_storage()
    }

    /// Hands `msg` from `from` to `to` now, bypassing the network.
    pub fn deliver(&mut self, from: &NodeId, to: &NodeId, msg: PeerMsg) {
        let now = self.clock(to);
        let node = self.nodes.get_mut(to).expect("node is up");
        node.handle(
            now,
            Input::Peer {
                from: from.clone(),
                msg,
            },
        );
        self.flush(to);
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    pub fn cut(&mut self, a: &NodeId, b: &NodeId, cut: bool) {
        for pair in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
            if cut {
                self.cut.insert(pair);
            } else {
                self.cut.remove(&pair);
            }
        }
    }

    /// Cuts `a` off from every other node.
    pub fn isolate(&mut self, a: &NodeId, cut: bool) {
        for b in self.config.view.nodes.clone() {
            if &b != a {
                self.cut(a, &b, cut);
            }
        }
    }

    pub fn submit(&mut self, at: &NodeId, op: Op) -> ReqId {
        let id = self.next_req;
        self.next_req += 1;
        let now = self.clock(at);
        let node = self.nodes.get_mut(at).expect("node is up");
        node.handle(now, Input::Client(Request { id, op }));
        self.flush(at);
        id
    }

    /// Runs until request `id` has a reply or `limit` of simulated time passed.
    pub fn wait(&mut self, id: ReqId, limit: Duration) -> Option<Reply> {
        let end = self.now + limit;
        while !self.replies.contains_key(&id) && self.now < end {
            self.step();
        }
        self.replies.remove(&id)
    }

    /// Submits and waits up to 30 simulated seconds.
    pub fn call(&mut self, at: &NodeId, op: Op) -> Reply {
        let id = self.submit(at, op);
        self.wait(id, Duration::from_secs(30))
            .expect("a reply within 30 s")
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Delivers the next message due, or advances time to the next tick.
    fn step(&mut self) {
        let next_msg = self.queue.keys().next().map(|k| k.0);
        if let Some(t) = next_msg.filter(|t| *t <= self.next_tick) {
            let key = *self.queue.keys().next().unwrap();
            let (from, to, msg) = self.queue.remove(&key).unwrap();
            self.now = self.now.max(t);
            let now = self.clock(&to);
            if let Some(node) = self.nodes.get_mut(&to) {
                self.delivered += 1;
                node.handle(now, Input::Peer { from, msg });
                self.flush(&to);
            }
        } else {
            self.now = self.now.max(self.next_tick);
            self.next_tick = self.now + self.config.tick_interval;
            let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
            for id in ids {
                let now = self.clock(&id);
                self.nodes.get_mut(&id).unwrap().handle(now, Input::Tick);
                self.flush(&id);
            }
        }
    }

    /// Checks the node's invariants (the release-mode tests have no debug assertions to do it),
    /// then carries out its Ready.
    fn flush(&mut self, id: &NodeId) {
        let node = self.nodes.get_mut(id).unwrap();
        if let Err(e) = node.check_invariants().and_then(|()| node.check_stored()) {
            panic!("invariant broken at {id}: {e}");
        }
        let out = node.take_ready().collect(node.storage_mut());
        for r in out.replies {
            self.replies.insert(r.id, r);
        }
        for (to, msg) in out.messages {
            *self.sent.entry((id.clone(), msg.kind())).or_default() += 1;
            if let PeerMsg::ListPartReply { entries, .. } = &msg {
                self.list_part_keys += entries.len();
            }
            if let PeerMsg::HandoffBatch { sets, .. } = &msg {
                let bytes = sets
                    .iter()
                    .flat_map(|(_, s)| s.versions())
                    .filter_map(|v| v.value.as_ref().map(|b| b.len()))
                    .sum();
                self.max_handoff_batch_bytes = self.max_handoff_batch_bytes.max(bytes);
            }
            if self.cut.contains(&(id.clone(), to.clone())) || self.down.contains(&to) {
                continue;
            }
            if self.rng.random_bool(self.faults.drop) {
                continue;
            }
            let copies = if self.rng.random_bool(self.faults.dup) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = 1 + self.rng.random_range(0..=self.faults.jitter_ms);
                self.seq += 1;
                let at = self.now + Duration::from_millis(delay);
                self.queue
                    .insert((at, self.seq), (id.clone(), to.clone(), msg.clone()));
            }
        }
    }
}

pub fn put(key: &str, value: &str, ctx: &VersionVector, w: Quorum) -> Op {
    Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        content_type: None,
        context: ctx.clone(),
        w,
        ttl: None,
    }
}

pub fn del(key: &str, ctx: &VersionVector) -> Op {
    Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: None,
        content_type: None,
        context: ctx.clone(),
        w: Quorum::N(1),
        ttl: None,
    }
}

pub fn get(key: &str, ctx: &VersionVector, r: Quorum) -> Op {
    Op::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
        context: ctx.clone(),
        r,
    }
}

/// The causal context a write's or read's reply returns; panics on any other reply.
pub fn ctx_of(r: &Reply) -> VersionVector {
    match &r.result {
        Ok(Response::Written { context, .. } | Response::Read { context, .. }) => context.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// The values a read returned (tombstones left out); panics on any other reply.
pub fn values(r: &Reply) -> Vec<String> {
    match &r.result {
        Ok(Response::Read { versions, .. }) => versions
            .iter()
            .filter_map(|v| v.value.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}
