//! Floor checks: how replicas come to vouch for the older actors a token entry folds.
//!
//! A context entry of actor `a` stands for `a`'s dots and for every dot of the older actors of
//! `a`'s lineage ([`crate::core::clock`]). A replica relies on the second part for a partition
//! only through a *floor* it verified itself: the lineage's node, once it took `a`, sends each
//! replica in `a`'s view a floor check naming every older actor since its last completed floor
//! check with its final counter (the node's own contiguous clock base: that actor issues no more
//! dots). The replica verifies, per partition it holds, that it holds each of those actors' dots
//! to the partition exactly as it would for a context entry of that actor, and the floor of the
//! last completed check; only then does it record the floor `(a, 0)`, durably before answering.
//!
//! Invariants:
//! - a floor `(a, 0)` of partition `p` at a replica means it holds every dot of `a`'s lineage's
//!   older actors to `p` (a fixed set: those actors are retired); it is dropped with `p`;
//! - floors travel only as claims made under the same rule: handoff clocks and anti-entropy
//!   claims carry them ([`Node::partition_clock`]), nothing a replica did not verify or receive so;
//! - this node writes with its actor to a partition only once it holds its own lineage's floor
//!   there (`may_write`), so every reply's token is true of the replica that made it.
//!
//! A floor check never blocks a replica's answers: a context entry whose floor is missing waits
//! like any write the replica has not applied yet, and the check's retries end the wait.

use super::*;

/// The floor check of this node's current actor, until every replica of its view passed it.
#[derive(Debug)]
pub(crate) struct FloorRound {
    /// The epoch of this lineage's last actor whose floor check completed (`None`: none did).
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
    /// Starts the floor check of the current actor, unless it passed already or this node
    /// serves no shard. Sent from the next [`Node::floor_tick`].
    pub(super) fn start_floor_check(&mut self) {
        self.floor_round = None;
        let me = self.actor;
        if self.shard.is_none() || me.epoch() != self.cfg.view.epoch || self.floored == Some(me) {
            return;
        }
        let since = self
            .floored
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
        self.floor_round = Some(FloorRound {
            since,
            olds,
            pending,
            next: self.now,
        });
    }

    /// Checks this node's own partitions and sends the floor check to the replicas that have
    /// not passed it yet, at most every few ticks.
    pub(super) fn floor_tick(&mut self) {
        let Some(round) = &self.floor_round else {
            return;
        };
        if round.next > self.now {
            return;
        }
        let actor = self.actor;
        let (since, olds) = (round.since, round.olds.clone());
        let mine: Vec<u32> = round
            .pending
            .get(&self.me)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if !mine.is_empty() {
            let ok = self.check_floor(actor, since, &olds, &mine);
            let me = self.me.clone();
            self.on_floor_ack(&me, actor, &ok);
        }
        let me = self.me.clone();
        let Some(round) = &mut self.floor_round else {
            return;
        };
        round.next = self.now + self.cfg.tick_interval * 3;
        let checks: Vec<(NodeId, PeerMsg)> = round
            .pending
            .iter()
            .filter(|(n, _)| **n != me)
            .map(|(n, ps)| {
                let msg = PeerMsg::FloorCheck {
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

    /// A peer's floor check: verifies it on the partitions this node holds and answers with
    /// those that passed (their floors are stored first; the answer leaves after the sync).
    pub(super) fn on_floor_check(
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
        let ok = self.check_floor(actor, since, olds, partitions);
        if !ok.is_empty() {
            self.send(
                from,
                PeerMsg::FloorAck {
                    actor,
                    partitions: ok,
                },
            );
        }
    }

    /// The partitions among `partitions` on which this node holds every dot `actor` folds (the
    /// floor at `since` and each of `olds` up to its final counter); records their floors.
    fn check_floor(
        &mut self,
        actor: Actor,
        since: Option<Epoch>,
        olds: &[(Actor, u64)],
        partitions: &[u32],
    ) -> Vec<u32> {
        let base = since.map(|e| {
            Actor::from_parts(actor.node(), e, actor.incarnation(), 0).in_cluster(actor.cluster())
        });
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

    /// A replica passed the floor check of `actor` on `partitions`; the round completes once every
    /// replica passed it on all of its partitions.
    pub(super) fn on_floor_ack(&mut self, from: &NodeId, actor: Actor, partitions: &[u32]) {
        if actor != self.actor {
            return;
        }
        let Some(round) = &mut self.floor_round else {
            return;
        };
        if let Some(ps) = round.pending.get_mut(from) {
            for p in partitions {
                ps.remove(p);
            }
            if ps.is_empty() {
                round.pending.remove(from);
            }
        }
        if round.pending.is_empty() {
            self.floor_round = None;
            self.floored = Some(actor);
            // Stored as the actor itself: what `Node::new` decodes.
            self.storage.meta_put(META_FLOORED, &encode(&actor));
        }
    }
}
