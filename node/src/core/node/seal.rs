//! Seal checks: how replicas come to vouch for the older actors a token entry folds.
//!
//! A context entry of actor `a` stands for `a`'s dots and for every dot of the older actors of
//! `a`'s lineage ([`crate::core::clock`]). A replica relies on the second part for a partition
//! only through a *floor* it verified itself: the lineage's node, once it took `a`, sends each
//! replica in `a`'s view a seal check naming every older actor since its last completed seal
//! with its final counter (the node's own, contiguous clock base: the actor issues no more dots).
//! The replica verifies, per partition it holds, that it holds each of those actors' dots to the
//! partition exactly as it would for a context entry of that actor, and the floor of the last
//! completed seal; only then does it record the floor `(a, 0)`, durably before answering.
//!
//! Invariants:
//! - a floor `(a, 0)` of partition `p` at a replica means it holds every dot of `a`'s lineage's
//!   older actors to `p` (they are fixed: those actors are retired); it is dropped with `p`;
//! - floors travel only as claims of the same rule: handoff clocks and anti-entropy claims carry
//!   them ([`Node::vouched`]), never anything a replica did not verify or receive so;
//! - this node writes with its actor to a partition only once it holds its own lineage's floor
//!   there (`may_write`), so every reply's token is true of the replica that made it.
//!
//! The seal never blocks a replica's answers: a context entry whose floor is missing waits, like
//! any write a replica has not applied yet; the seal check's retries end the wait.

use super::*;

/// The seal check of this node's current actor, until every replica of its view passed it.
#[derive(Debug)]
pub(crate) struct Seal {
    /// The epoch of this lineage's last actor whose seal completed (`None`: none did).
    since: Option<Epoch>,
    /// The lineage's actors of epochs from `since` below the current actor's, with their final
    /// counters.
    olds: Vec<(Actor, u64)>,
    /// Replicas (this node included) and their partitions in the actor's view not yet verified.
    pending: BTreeMap<NodeId, BTreeSet<u32>>,
    /// When to send the checks again.
    next: Time,
}

/// Whether `a` and `b` are ordinary (non-hint) actors of one lineage: one node incarnation.
fn same_lineage(a: Actor, b: Actor) -> bool {
    a.node() == b.node()
        && a.incarnation() == b.incarnation()
        && a.hinted_partition().is_none()
        && b.hinted_partition().is_none()
}

impl<S: Storage> Node<S> {
    /// Starts the seal check of the current actor, unless it passed already or this node
    /// serves no shard. Sent from the next [`Node::seal_tick`].
    pub(super) fn start_seal(&mut self) {
        self.seal = None;
        let me = self.actor;
        if self.shard.is_none() || me.epoch() != self.cfg.view.epoch || self.sealed == Some(me) {
            return;
        }
        let since = self
            .sealed
            .filter(|s| same_lineage(*s, me) && s.epoch() < me.epoch())
            .map(|s| s.epoch());
        let olds = self
            .clock
            .entries()
            .filter(|(a, base, _)| {
                *base > 0
                    && same_lineage(*a, me)
                    && a.epoch() < me.epoch()
                    && since.is_none_or(|s| a.epoch() >= s)
            })
            .map(|(a, base, _)| (a, base))
            .collect();
        let mut pending: BTreeMap<NodeId, BTreeSet<u32>> = BTreeMap::new();
        for p in 0..self.cfg.view.partitions {
            for o in self.cfg.view.owners(p) {
                pending.entry(o.clone()).or_default().insert(p);
            }
        }
        self.seal = Some(Seal {
            since,
            olds,
            pending,
            next: self.now,
        });
    }

    /// Checks this node's own partitions and sends the seal check to the replicas that have
    /// not passed it yet, at most every few ticks.
    pub(super) fn seal_tick(&mut self) {
        let Some(seal) = &self.seal else {
            return;
        };
        if seal.next > self.now {
            return;
        }
        let actor = self.actor;
        let (since, olds) = (seal.since, seal.olds.clone());
        let mine: Vec<u32> = seal
            .pending
            .get(&self.me)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if !mine.is_empty() {
            let ok = self.check_seal(actor, since, &olds, &mine);
            let me = self.me.clone();
            self.on_seal_ack(&me, actor, &ok);
        }
        let me = self.me.clone();
        let Some(seal) = &mut self.seal else {
            return;
        };
        seal.next = self.now + self.cfg.tick_interval * 3;
        let checks: Vec<(NodeId, PeerMsg)> = seal
            .pending
            .iter()
            .filter(|(n, _)| **n != me)
            .map(|(n, ps)| {
                let msg = PeerMsg::SealCheck {
                    actor,
                    since,
                    olds: olds.clone(),
                    partitions: ps.iter().copied().collect(),
                };
                (n.clone(), msg)
            })
            .collect();
        for (n, msg) in checks {
            self.send(&n, msg);
        }
    }

    /// A peer's seal check: verifies it on the partitions this node holds and answers with
    /// those that passed (their floors are stored first; the answer leaves after the sync).
    pub(super) fn on_seal_check(
        &mut self,
        from: &NodeId,
        actor: Actor,
        since: Option<Epoch>,
        olds: &[(Actor, u64)],
        partitions: &[u32],
    ) {
        if actor.node() != node_hash(from) || actor.hinted_partition().is_some() {
            return;
        }
        let ok = self.check_seal(actor, since, olds, partitions);
        if !ok.is_empty() {
            self.send(
                from,
                PeerMsg::SealAck {
                    actor,
                    partitions: ok,
                },
            );
        }
    }

    /// The partitions among `partitions` on which this node holds every dot `actor` folds (the
    /// floor at `since` and each of `olds` up to its final counter); records their floors.
    fn check_seal(
        &mut self,
        actor: Actor,
        since: Option<Epoch>,
        olds: &[(Actor, u64)],
        partitions: &[u32],
    ) -> Vec<u32> {
        let base = since.map(|e| Actor::from_parts(actor.node(), e, actor.incarnation(), 0));
        let ok: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|&p| {
                let held = self.cfg.view.owns(&self.me, p) || self.retained.contains(&p);
                held && base.is_none_or(|b| self.holds_older(p, b))
                    && olds.iter().all(|&(a, n)| {
                        same_lineage(a, actor) && a.epoch() < actor.epoch() && self.holds(p, a, n)
                    })
            })
            .collect();
        if std::env::var("TOKDBG").is_ok() && self.now.as_micros() > 29_000_000 {
            for &p in partitions.iter().filter(|p| !ok.contains(p)) {
                let held = self.cfg.view.owns(&self.me, p) || self.retained.contains(&p);
                let bad: Vec<String> = olds.iter().filter(|&&(a, n)| !self.holds(p, a, n)).map(|(a, n)| format!("{a:?}:{n} rel={:?} trusts={} base={} ho={:?}", self.history.relevant(*a, p), self.trusts(p, *a), self.clock.base(*a), self.handoff.get(&p).map(|h| h.get(*a)))).collect();
                eprintln!("SEALDBG {} checks {actor:?} p{p} held={held} since={:?} base_ok={} window={:?} bad={bad:?}", self.me, since.map(|e| e >> 32), base.is_none_or(|b| self.holds_older(p, b)), self.windows.get(p as usize));
            }
        }
        if !ok.is_empty() {
            for p in &ok {
                self.floors.entry(*p).or_default().raise_floor(actor);
            }
            self.storage.meta_put(META_FLOORS, &encode(&self.floors));
            self.needs_sync = true;
            self.wake_parked();
        }
        ok
    }

    /// A replica passed the seal check of `actor` on `partitions`; the seal completes once every
    /// replica passed it on all of its partitions.
    pub(super) fn on_seal_ack(&mut self, from: &NodeId, actor: Actor, partitions: &[u32]) {
        if actor != self.actor {
            return;
        }
        let Some(seal) = &mut self.seal else {
            return;
        };
        if let Some(ps) = seal.pending.get_mut(from) {
            for p in partitions {
                ps.remove(p);
            }
            if ps.is_empty() {
                seal.pending.remove(from);
            }
        }
        if seal.pending.is_empty() {
            self.seal = None;
            self.sealed = Some(actor);
            self.storage.meta_put(META_SEALED, &encode(&self.sealed));
        }
    }
}
