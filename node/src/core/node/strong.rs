//! The node's strong-key machinery: the CASPaxos proposer and acceptor of `core::strong`
//! wired to storage, peers and time, and the acceptor-identity check that keeps an amnesiac
//! node from voting.
//!
//! Safety rules (see `docs/strong-keys.md`):
//! - **Configurations, freeze and copy** (`core::strong::handoff`). A partition's acceptors are
//!   the replicas of one configuration; proposers address the newest configuration their view
//!   names, and a node votes only in the configuration it is active in. A replica of a new
//!   configuration becomes active only once it sealed a majority of the previous one (they stop
//!   voting in it) and stored the merge of their records; until then the partition's strong
//!   keys wait (a round retries until its deadline, then 503). So two majorities never decide
//!   independently.
//! - **Amnesia.** Each node's acceptor has a random identity, stored with its state. Peers
//!   record the identity they first see for each node (durably, before they act on it). A node
//!   starting with no identity (a new or wiped disk) asks every member of its view; if any
//!   knows it under another identity it was wiped, and it never votes again (it still proposes).
//!   Until every member has answered it does not vote either. Proposers also ignore votes from an
//!   identity other than the one recorded.
//! - **Durability.** Promise and accepted state is written before the reply and the turn
//!   syncs; the reply goes in the Ready's ordinary lists, which leave after the sync.

use super::Node;
use crate::core::config::Canary;
use crate::core::message::PeerMsg;
use crate::core::node::Origin;
use crate::core::request::{ReqError, Response, Rid};
use crate::core::ring::Epoch;
use crate::core::ring::NodeId;
use crate::core::storage::Storage;
use crate::core::strong::acceptor::{self, Record};
use crate::core::strong::handoff::{self, PartCfg};
use crate::core::strong::proposer::{Phase, Round, Step};
use crate::core::strong::{Ballot, StrongCall, StrongState};
use crate::core::time::Time;
use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

const META_IDENTITY: &str = "strong_identity";
const META_PEERS: &str = "strong_peers";
const META_BALLOTS: &str = "strong_ballots";
/// Every partition's [`PartCfg`] that differs from the implicit one.
const META_CFGS: &str = "strong_cfgs";
/// Prefix of the per-partition sets of keys that have an acceptor record (what a handoff copies).
const META_KEYS: &str = "strong_keys/";
/// How often a replica of a configuration it is not active in asks the previous one again.
const HANDOFF_INTERVAL: Duration = Duration::from_millis(100);
/// An attempt that gathered no majority of promises by then starts over with a new ballot.
const STALL: Duration = Duration::from_millis(300);
/// Ballot counters reserved per durable write of [`META_BALLOTS`].
const BALLOT_BLOCK: u64 = 1 << 16;
/// How often an unconfirmed acceptor asks its peers for its identity again.
const HELLO_INTERVAL: Duration = Duration::from_millis(500);

/// Whether this node's acceptor may vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// A new identity, not yet confirmed by every member of the view.
    Probing,
    /// Every member confirmed the identity (none knew this node under another one).
    Voter,
    /// A member knew this node under another identity: its acceptor state was lost (a wiped
    /// disk). It never votes again.
    Amnesiac,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Identity {
    id: u64,
    standing: Standing,
}

/// The strong-key state of one node.
#[derive(Debug)]
pub(super) struct StrongNode {
    identity: u64,
    pub(super) standing: Standing,
    /// Members that confirmed the identity (while probing).
    confirmed: BTreeSet<NodeId>,
    next_hello: Time,
    /// The acceptor identity first seen for each peer.
    known: BTreeMap<NodeId, u64>,
    /// The next ballot counter, and the first one not yet reserved durably.
    counter: u64,
    reserved: u64,
    rounds: BTreeMap<Rid, Round>,
    /// The proxied operations (proxy, its request id) this node decided lately, oldest first,
    /// at most [`RECENT_PROXIED`]: a duplicated `Forward` of one of them is dropped rather than
    /// decided a second time (which would apply the write twice). The proxy has the first
    /// round's answer, or gets it.
    recent_proxied: VecDeque<(NodeId, Rid)>,
    /// Keys whose acceptor record this incarnation wrote (at most [`TOUCHED`]; for the
    /// coverage probes only): a vote on any other key reads a record from before the restart.
    touched: BTreeSet<Bytes>,
    /// Promises kept in memory only (the `forget-promise-on-restart` canary).
    volatile: BTreeMap<Bytes, Ballot>,
    /// This node's standing per partition, where it differs from the implicit one (see
    /// [`Node::part_cfg`]); persisted whole in [`META_CFGS`].
    cfgs: BTreeMap<u32, PartCfg>,
    /// Per partition (loaded on first use), the keys with an acceptor record here.
    keys: BTreeMap<u32, BTreeSet<Bytes>>,
    /// Handoffs in progress into configurations this node is a replica of, by partition.
    gathers: BTreeMap<u32, Gather>,
    next_handoff: Time,
}

/// Collecting a partition's records from its previous configuration.
#[derive(Debug)]
struct Gather {
    old: Epoch,
    new: Epoch,
    /// The previous configuration's replicas, and those that handed over.
    members: Vec<NodeId>,
    from: BTreeSet<NodeId>,
    records: BTreeMap<Bytes, Record>,
}

/// How many keys [`StrongNode::touched`] tracks.
const TOUCHED: usize = 1024;

/// How many finished proxied operations a node remembers to drop duplicated forwards of.
const RECENT_PROXIED: usize = 4096;

impl StrongNode {
    /// Loads the strong-key state from `storage`; a node without an acceptor identity draws
    /// one and starts probing. Writes what it loaded back reserved (synced by the first Ready).
    pub(super) fn load(storage: &mut impl Storage, rng: &mut ChaCha8Rng, now: Time) -> Self {
        let ident: Identity = storage
            .meta_get(META_IDENTITY)
            .and_then(|b| super::decode(&b))
            .unwrap_or_else(|| Identity {
                id: rng.random(),
                standing: Standing::Probing,
            });
        storage.meta_put(META_IDENTITY, &super::encode(&ident));
        let known = storage
            .meta_get(META_PEERS)
            .and_then(|b| super::decode(&b))
            .unwrap_or_default();
        let counter: u64 = storage
            .meta_get(META_BALLOTS)
            .and_then(|b| super::decode(&b))
            .unwrap_or(0);
        let reserved = counter + BALLOT_BLOCK;
        storage.meta_put(META_BALLOTS, &super::encode(&reserved));
        let cfgs = storage
            .meta_get(META_CFGS)
            .and_then(|b| super::decode(&b))
            .unwrap_or_default();
        StrongNode {
            identity: ident.id,
            standing: ident.standing,
            confirmed: BTreeSet::new(),
            next_hello: now,
            known,
            counter,
            reserved,
            rounds: BTreeMap::new(),
            recent_proxied: VecDeque::new(),
            touched: BTreeSet::new(),
            volatile: BTreeMap::new(),
            cfgs,
            keys: BTreeMap::new(),
            gathers: BTreeMap::new(),
            next_handoff: now,
        }
    }
}

impl<S: Storage> Node<S> {
    /// The configurations of partition `p` in the views up to the current one, oldest first:
    /// each with the epoch of the first view of its run and its replicas (sorted).
    fn configs(&self, p: u32) -> Vec<(Epoch, Vec<NodeId>)> {
        let mut out: Vec<(Epoch, Vec<NodeId>)> = Vec::new();
        let genesis = self.history.genesis().map_or(Epoch::MAX, |g| g.epoch);
        for v in self.history.views() {
            if v.is_joining() || v.epoch < genesis || v.epoch > self.cfg.view.epoch {
                continue;
            }
            let mut owners = v.owners(p).to_vec();
            owners.sort();
            if out.last().is_none_or(|(_, o)| *o != owners) {
                out.push((v.epoch, owners));
            }
        }
        out
    }

    /// The configuration strong operations on `key` address: the newest one of its partition.
    fn strong_acceptors(&self, key: &[u8]) -> Result<(Epoch, Vec<NodeId>), String> {
        let p = self.cfg.view.partition_of(key);
        match self.configs(p).pop() {
            Some((epoch, owners)) if !owners.is_empty() => Ok((epoch, owners)),
            _ => Err("this node does not know the cluster's first view".into()),
        }
    }

    /// This node's acceptor standing for partition `p`: as stored, or else active in the
    /// partition's first configuration if it is one of its replicas.
    fn part_cfg(&self, p: u32) -> PartCfg {
        if let Some(c) = self.strong.cfgs.get(&p) {
            return *c;
        }
        match self.history.genesis() {
            Some(g) if g.owns(&self.me, p) => PartCfg {
                active: g.epoch,
                sealed_for: 0,
            },
            _ => PartCfg::default(),
        }
    }

    fn set_part_cfg(&mut self, p: u32, c: PartCfg) {
        self.strong.cfgs.insert(p, c);
        let all = super::encode(&self.strong.cfgs);
        self.storage.meta_put(META_CFGS, &all);
        self.needs_sync = true;
    }

    /// Whether this node's acceptor may answer for `key` in configuration `config` now.
    fn votes_for(&self, key: &[u8], config: Epoch) -> bool {
        self.strong.standing == Standing::Voter
            && self
                .part_cfg(self.cfg.view.partition_of(key))
                .votes_in(config)
    }

    /// Starts deciding a strong operation this node coordinates (it is a replica of the key).
    pub(super) fn start_strong(&mut self, origin: Origin, key: Bytes, call: StrongCall) {
        if let Origin::Proxy { from, rid } = &origin {
            let twin = (from.clone(), *rid);
            if self.strong.rounds.values().any(|r| r.origin == origin)
                || self.strong.recent_proxied.contains(&twin)
            {
                return;
            }
        }
        if let Err(why) = self.strong_acceptors(&key) {
            return self.finish(origin, Err(ReqError::Unavailable(why)));
        }
        let rid = self.rid();
        let busy = self.strong.rounds.values().any(|r| r.key == key);
        let round = Round {
            origin,
            key,
            call,
            ballot: Ballot::ZERO,
            config: 0,
            acceptors: Vec::new(),
            need: 0,
            phase: if busy {
                Phase::Queued
            } else {
                Phase::Backoff { retry_at: self.now }
            },
            deadline: self.now + self.cfg.quorum_timeout,
            started: self.now,
            highest_seen: Ballot::ZERO,
            attempts: 0,
            tag: rid,
            applied_to: None,
        };
        self.strong.rounds.insert(rid, round);
        if !busy {
            self.prepare_round(rid);
        }
    }

    /// Ends round `rid` (decided, given up or late) and starts the oldest round queued behind
    /// it on the same key.
    fn end_round(&mut self, rid: Rid) -> Round {
        let r = self
            .strong
            .rounds
            .remove(&rid)
            .expect("an ending round exists");
        if let Origin::Proxy { from, rid } = &r.origin {
            if self.strong.recent_proxied.len() == RECENT_PROXIED {
                self.strong.recent_proxied.pop_front();
            }
            self.strong.recent_proxied.push_back((from.clone(), *rid));
        }
        debug_assert!(
            self.strong
                .rounds
                .values()
                .filter(|o| o.key == r.key)
                .all(|o| matches!(o.phase, Phase::Queued)),
            "at most one round per key runs at a time"
        );
        let next = self
            .strong
            .rounds
            .iter()
            .find(|(_, o)| o.key == r.key && matches!(o.phase, Phase::Queued))
            .map(|(next, _)| *next);
        if let Some(next) = next {
            self.prepare_round(next);
        }
        r
    }

    /// A fresh ballot above `seen`, reserving counters durably before any is used.
    fn next_ballot(&mut self, seen: Ballot) -> Ballot {
        self.strong.counter = self.strong.counter.max(seen.counter) + 1;
        if self.strong.counter >= self.strong.reserved {
            self.strong.reserved = self.strong.counter + BALLOT_BLOCK;
            let r = super::encode(&self.strong.reserved);
            self.storage.meta_put(META_BALLOTS, &r);
            self.needs_sync = true;
        }
        let proposer = (u64::from(self.actor.node()) << 32) | u64::from(self.actor.incarnation());
        Ballot {
            counter: self.strong.counter,
            proposer,
        }
    }

    /// (Re)starts round `rid` with a new ballot: prepares at every acceptor of the key's
    /// newest configuration.
    fn prepare_round(&mut self, rid: Rid) {
        let Some(r) = self.strong.rounds.get(&rid) else {
            return;
        };
        let seen = r.highest_seen;
        let Ok((config, acceptors)) = self.strong_acceptors(&r.key) else {
            return;
        };
        let need = if self.cfg.canary == Some(Canary::AcceptWithoutMajority) {
            1
        } else {
            acceptors.len() / 2 + 1
        };
        let ballot = self.next_ballot(seen);
        let now = self.now;
        let r = self.strong.rounds.get_mut(&rid).expect("checked above");
        r.ballot = ballot;
        r.config = config;
        r.acceptors = acceptors;
        r.need = need;
        r.started = now;
        r.attempts += 1;
        r.phase = Phase::Prepare {
            promised: BTreeSet::new(),
            best: None,
        };
        let (key, to) = (r.key.clone(), r.acceptors.clone());
        for n in to {
            let msg = PeerMsg::StrongPrepare {
                rid,
                key: key.clone(),
                config,
                ballot,
            };
            self.send(&n, msg);
        }
    }

    fn record(&self, key: &[u8]) -> Record {
        let mut rec: Record = self
            .storage
            .meta_get(&acceptor::record_name(key))
            .and_then(|b| super::decode(&b))
            .unwrap_or_default();
        if let Some(b) = self.strong.volatile.get(key) {
            rec.promised = rec.promised.max(*b);
        }
        rec
    }

    fn store_record(&mut self, key: &[u8], rec: &Record) {
        let durable = if self.cfg.canary == Some(Canary::ForgetPromiseOnRestart) {
            let key = Bytes::copy_from_slice(key);
            self.strong.volatile.insert(key, rec.promised);
            let promised = rec.accepted.as_ref().map_or(Ballot::ZERO, |(b, _)| *b);
            &Record {
                promised,
                accepted: rec.accepted.clone(),
            }
        } else {
            rec
        };
        self.storage
            .meta_put(&acceptor::record_name(key), &super::encode(durable));
        self.needs_sync = true;
        let p = self.cfg.view.partition_of(key);
        if !self.strong_keys_of(p).contains(key) {
            let keys = self.strong.keys.get_mut(&p).expect("loaded above");
            keys.insert(Bytes::copy_from_slice(key));
            let keys = super::encode(keys);
            self.storage.meta_put(&format!("{META_KEYS}{p}"), &keys);
        }
    }

    /// The keys of partition `p` with an acceptor record here.
    fn strong_keys_of(&mut self, p: u32) -> &BTreeSet<Bytes> {
        let storage = &self.storage;
        self.strong.keys.entry(p).or_insert_with(|| {
            storage
                .meta_get(&format!("{META_KEYS}{p}"))
                .and_then(|b| super::decode(&b))
                .unwrap_or_default()
        })
    }

    /// Whether a vote from `from` under acceptor identity `id` counts: the identity first seen
    /// for it (recorded now, durably before this turn's messages, if it is the first).
    fn vote_counts(&mut self, from: &NodeId, id: u64) -> bool {
        match self.strong.known.get(from) {
            Some(k) => *k == id,
            None => {
                self.strong.known.insert(from.clone(), id);
                let known = super::encode(&self.strong.known);
                self.storage.meta_put(META_PEERS, &known);
                self.needs_sync = true;
                true
            }
        }
    }

    /// The acceptor's answer to a prepare or an accept: when this node votes for `key`, applies
    /// `vote` to the key's record, stores the record if the vote was granted (synced before the
    /// reply leaves) and sends `from` the reply `reply(identity, result)` builds.
    fn vote<T>(
        &mut self,
        from: NodeId,
        (key, config): (&[u8], Epoch),
        vote: impl FnOnce(&mut Record) -> Result<T, Ballot>,
        reply: impl FnOnce(u64, Result<T, Ballot>) -> PeerMsg,
    ) {
        if !self.votes_for(key, config) {
            return;
        }
        let mut rec = self.record(key);
        let before_restart = rec != Record::default() && !self.strong.touched.contains(key);
        let result = vote(&mut rec);
        let synced_before = self.needs_sync;
        if result.is_ok() {
            self.store_record(key, &rec);
            if self.strong.touched.len() < TOUCHED {
                self.strong.touched.insert(Bytes::copy_from_slice(key));
            }
        }
        let msg = reply(self.strong.identity, result);
        if before_restart {
            match &msg {
                PeerMsg::StrongPromise { result: Err(_), .. }
                | PeerMsg::StrongAccepted { result: Err(_), .. } => {
                    self.probes.hit(crate::core::Probe::StrongPromiseKept);
                }
                PeerMsg::StrongPromise {
                    result: Ok(Some(_)),
                    ..
                } => self.probes.hit(crate::core::Probe::StrongAcceptRecovered),
                _ => {}
            }
        }
        if self.cfg.canary == Some(Canary::ReplyBeforeAcceptDurable)
            && matches!(msg, PeerMsg::StrongAccepted { .. })
        {
            self.needs_sync = synced_before;
        }
        self.send(&from, msg);
    }

    /// Handles a strong-key peer message.
    pub(super) fn on_strong(&mut self, from: NodeId, msg: PeerMsg) {
        match msg {
            PeerMsg::StrongPrepare {
                rid,
                key,
                config,
                ballot,
            } => {
                self.vote(
                    from,
                    (&key, config),
                    |rec| acceptor::prepare(rec, ballot),
                    |acceptor, result| PeerMsg::StrongPromise {
                        rid,
                        ballot,
                        acceptor,
                        result,
                    },
                );
            }
            PeerMsg::StrongAccept {
                rid,
                key,
                config,
                ballot,
                state,
            } => {
                let vote = |rec: &mut Record| acceptor::accept(rec, ballot, state);
                self.vote(from, (&key, config), vote, |acceptor, result| {
                    PeerMsg::StrongAccepted {
                        rid,
                        ballot,
                        acceptor,
                        result,
                    }
                });
            }
            PeerMsg::StrongPromise {
                rid,
                ballot,
                acceptor,
                result,
            } => {
                if !self.strong.rounds.contains_key(&rid) || !self.vote_counts(&from, acceptor) {
                    return;
                }
                let r = self.strong.rounds.get_mut(&rid).expect("checked above");
                let step = r.on_promise(&from, ballot, result);
                self.strong_step(rid, step);
            }
            PeerMsg::StrongAccepted {
                rid,
                ballot,
                acceptor,
                result,
            } => {
                if !self.strong.rounds.contains_key(&rid) || !self.vote_counts(&from, acceptor) {
                    return;
                }
                let r = self.strong.rounds.get_mut(&rid).expect("checked above");
                let step = r.on_accepted(&from, ballot, result);
                self.strong_step(rid, step);
            }
            PeerMsg::StrongHello { acceptor } => {
                let known = match self.strong.known.get(&from) {
                    Some(k) => Some(*k),
                    None => {
                        self.vote_counts(&from, acceptor);
                        None
                    }
                };
                self.send(&from, PeerMsg::StrongHelloReply { acceptor, known });
            }
            PeerMsg::StrongHelloReply { acceptor, known } => {
                if acceptor != self.strong.identity || self.strong.standing != Standing::Probing {
                    return;
                }
                match known {
                    Some(k) if k != acceptor => self.set_standing(Standing::Amnesiac),
                    _ => {
                        self.strong.confirmed.insert(from);
                        self.check_confirmed();
                    }
                }
            }
            PeerMsg::StrongSeal {
                partition,
                old,
                new,
            } => self.on_seal(from, partition, old, new),
            PeerMsg::StrongSealed {
                partition,
                new,
                acceptor,
                records,
            } => self.on_sealed(from, partition, (new, acceptor), records),
            _ => unreachable!("only strong-key messages are routed here"),
        }
    }

    fn set_standing(&mut self, standing: Standing) {
        self.strong.standing = standing;
        let ident = Identity {
            id: self.strong.identity,
            standing,
        };
        self.storage.meta_put(META_IDENTITY, &super::encode(&ident));
        self.needs_sync = true;
        if standing == Standing::Amnesiac {
            self.probes.hit(crate::core::Probe::StrongAmnesiac);
        }
    }

    /// A probing acceptor becomes a voter once every other member of its view confirmed it.
    fn check_confirmed(&mut self) {
        let members = self.cfg.view.nodes.clone();
        let all = members
            .iter()
            .all(|m| *m == self.me || self.strong.confirmed.contains(m));
        if all && !self.cfg.view.is_joining() {
            self.set_standing(Standing::Voter);
        }
    }

    fn strong_step(&mut self, rid: Rid, step: Step) {
        match step {
            Step::Wait => {}
            Step::SendAccept(state) => self.send_accepts(rid, state),
            Step::Indeterminate => {
                let r = self.end_round(rid);
                let why = "the write was retried after concurrent writes and may have taken effect";
                self.finish(r.origin, Err(ReqError::Unavailable(why.into())));
            }
            Step::Decided(outcome) => {
                let r = self.end_round(rid);
                self.probes.hit(crate::core::Probe::StrongDecided);
                self.finish(r.origin, Ok(Response::Strong(outcome)));
            }
            Step::Refused => {
                let r = self.strong.rounds.get_mut(&rid).expect("a round refused");
                let cap = 10 * u64::from(r.attempts.min(8));
                let pause = Duration::from_millis(self.rng.random_range(0..=cap));
                r.phase = Phase::Backoff {
                    retry_at: self.now + pause,
                };
                self.probes.hit(crate::core::Probe::StrongRetried);
            }
        }
    }

    fn send_accepts(&mut self, rid: Rid, state: StrongState) {
        let r = &self.strong.rounds[&rid];
        let (key, ballot, to) = (r.key.clone(), r.ballot, r.acceptors.clone());
        let config = r.config;
        for n in to {
            let msg = PeerMsg::StrongAccept {
                rid,
                key: key.clone(),
                config,
                ballot,
                state: state.clone(),
            };
            self.send(&n, msg);
        }
    }

    /// Per tick: rounds past their deadline answer 503, backed-off rounds start over, and a
    /// probing acceptor asks its peers again.
    pub(super) fn strong_tick(&mut self) {
        let now = self.now;
        let late: Vec<Rid> = self
            .strong
            .rounds
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in late {
            let r = self.end_round(rid);
            let why = format!(
                "no majority of the key's {} acceptors decided within {:?} ({} attempts); a write may still take effect",
                r.acceptors.len(),
                self.cfg.quorum_timeout,
                r.attempts
            );
            self.finish(r.origin, Err(ReqError::Unavailable(why)));
        }
        let due: Vec<Rid> = self
            .strong
            .rounds
            .iter()
            .filter(|(_, r)| match r.phase {
                Phase::Backoff { retry_at } => retry_at <= now,
                Phase::Prepare { .. } => r.started + STALL <= now,
                _ => false,
            })
            .map(|(rid, _)| *rid)
            .collect();
        for rid in due {
            self.prepare_round(rid);
        }
        if now >= self.strong.next_handoff && self.strong.standing != Standing::Amnesiac {
            self.strong.next_handoff = now + HANDOFF_INTERVAL;
            self.strong_handoff_tick();
        }
        if self.strong.standing == Standing::Probing
            && now >= self.strong.next_hello
            && !self.cfg.view.is_joining()
        {
            self.strong.next_hello = now + HELLO_INTERVAL;
            self.check_confirmed();
            let acceptor = self.strong.identity;
            let members = self.cfg.view.nodes.clone();
            for m in members {
                if m != self.me && !self.strong.confirmed.contains(&m) {
                    self.send(&m, PeerMsg::StrongHello { acceptor });
                }
            }
        }
    }
}

impl<S: Storage> Node<S> {
    /// Per [`HANDOFF_INTERVAL`]: for each partition with a configuration this node is a replica
    /// of but not yet active in (the oldest such, so a chain of view changes is handed over in
    /// order), asks the previous configuration's replicas that have not answered to seal.
    fn strong_handoff_tick(&mut self) {
        for p in 0..self.cfg.view.partitions {
            let chain = self.configs(p);
            let cfg = self.part_cfg(p);
            let Some(k) = (1..chain.len())
                .find(|&k| chain[k].1.contains(&self.me) && cfg.may_activate(chain[k].0))
            else {
                self.strong.gathers.remove(&p);
                continue;
            };
            let ((old, members), new) = (chain[k - 1].clone(), chain[k].0);
            if self.cfg.canary == Some(Canary::HandoffWithoutCopy) {
                self.activate(p, new);
                continue;
            }
            let g = self.strong.gathers.entry(p).or_insert_with(|| Gather {
                old,
                new,
                members: Vec::new(),
                from: BTreeSet::new(),
                records: BTreeMap::new(),
            });
            if (g.old, g.new) != (old, new) {
                *g = Gather {
                    old,
                    new,
                    members: Vec::new(),
                    from: BTreeSet::new(),
                    records: BTreeMap::new(),
                };
            }
            g.members = members.clone();
            let ask: Vec<NodeId> = members
                .into_iter()
                .filter(|m| !g.from.contains(m))
                .collect();
            for m in ask {
                let msg = PeerMsg::StrongSeal {
                    partition: p,
                    old,
                    new,
                };
                self.send(&m, msg);
            }
        }
    }

    /// A replica of `new` asks this node, a replica of `old`, to seal partition `p` and hand
    /// over its records (after the seal is durable: the answer leaves after the turn's sync).
    fn on_seal(&mut self, from: NodeId, p: u32, old: Epoch, new: Epoch) {
        if self.strong.standing != Standing::Voter || p >= self.cfg.view.partitions {
            return;
        }
        let mut cfg = self.part_cfg(p);
        match handoff::seal(&mut cfg, old, new) {
            None => return,
            Some(true) => self.set_part_cfg(p, cfg),
            Some(false) => {}
        }
        let keys: Vec<Bytes> = self.strong_keys_of(p).iter().cloned().collect();
        let records = keys
            .into_iter()
            .map(|k| {
                let rec = self.record(&k);
                (k, rec)
            })
            .collect();
        let acceptor = self.strong.identity;
        let msg = PeerMsg::StrongSealed {
            partition: p,
            new,
            acceptor,
            records,
        };
        self.send(&from, msg);
    }

    /// A sealed replica of the previous configuration handed over its records of `p`; with a
    /// majority of them this node becomes an acceptor of `new`.
    fn on_sealed(
        &mut self,
        from: NodeId,
        p: u32,
        (new, acceptor): (Epoch, u64),
        records: Vec<(Bytes, Record)>,
    ) {
        let counts = match self.strong.gathers.get(&p) {
            Some(g) => g.new == new && g.members.contains(&from) && !g.from.contains(&from),
            None => false,
        };
        if !counts || !self.vote_counts(&from, acceptor) {
            return;
        }
        let g = self.strong.gathers.get_mut(&p).expect("checked above");
        for (key, rec) in records {
            handoff::merge(g.records.entry(key).or_default(), &rec);
        }
        g.from.insert(from);
        if g.from.len() <= g.members.len() / 2 {
            return;
        }
        let g = self.strong.gathers.remove(&p).expect("checked above");
        if !self.part_cfg(p).may_activate(new) {
            return;
        }
        for (key, rec) in &g.records {
            let mut mine = self.record(key);
            handoff::merge(&mut mine, rec);
            self.store_record(key, &mine);
        }
        self.activate(p, new);
        self.probes.hit(crate::core::Probe::StrongHandedOver);
    }

    /// Makes this node an acceptor of configuration `new` of partition `p` (durable with the
    /// records stored in the same turn, before any vote leaves).
    fn activate(&mut self, p: u32, new: Epoch) {
        let cfg = PartCfg {
            active: new,
            sealed_for: 0,
        };
        self.set_part_cfg(p, cfg);
    }
}
