//! Views: learning them by gossip, proposing them (view change, join), and switching to a new
//! one. See [`crate::core::history`] for why a replica's claims are scoped by ownership windows.
//!
//! Gossip: every ping and pong carries the sender's epoch; a node that sees an older epoch than
//! its own answers with the views the other lacks, so the newest view spreads within a heartbeat
//! or two. A view change is made at whichever node receives it, with an epoch above every epoch
//! that node knows; concurrent changes get distinct epochs and the higher one wins everywhere.
//!
//! Joins: a node is admitted only once it has answered as a Causeway node that may join — it
//! asked to join itself ([`PeerMsg::Join`]), or it answered a [`PeerMsg::JoinProbe`] with a view
//! that is empty (it is in no cluster) or shares a member with this node's (it is one of ours).
//! A candidate that does not answer within `quorum_timeout` is refused and forgotten.

use super::*;

/// A join waiting for its candidate to answer a [`PeerMsg::JoinProbe`].
#[derive(Debug)]
pub(super) struct PendingJoin {
    client: Option<ReqId>,
    node: NodeId,
    deadline: Time,
    next_probe: Time,
}

impl<S: Storage> Node<S> {
    /// Whether a join probe this node sent to `node` awaits its answer.
    pub(super) fn probing(&self, node: &NodeId) -> bool {
        self.joins.values().any(|j| j.node == *node)
    }

    /// Sends `to` the views newer than `epoch`.
    pub(super) fn send_views(&mut self, to: &NodeId, epoch: Epoch) {
        let views = self.history.after(epoch);
        if !views.is_empty() {
            self.send(to, PeerMsg::Views { views });
        }
    }

    /// Sends a peer every view when it is behind: an older epoch or fewer known views.
    pub(super) fn compare_views(&mut self, peer: &NodeId, epoch: Epoch, views: u32) {
        if epoch < self.cfg.view.epoch || views < self.history.count() {
            self.send_views(peer, 0);
        }
    }

    /// Records views from a peer, switching to the newest if it is newer than the current one.
    pub(super) fn learn(&mut self, views: Vec<View>) {
        let mut changed = false;
        for v in views {
            if (v.is_joining() && v.epoch == 0) || v.check().is_ok() {
                changed |= self.history.insert(v);
            }
        }
        if !changed {
            return;
        }
        let latest = self.history.latest().clone();
        if latest.epoch > self.cfg.view.epoch {
            self.switch(latest);
        } else {
            // An older view only shortens ownership windows.
            self.windows = self.compute_windows();
            self.persist_membership();
        }
    }

    /// `PUT /v1/cluster/view`: proposes and installs the next view.
    pub(super) fn change_view(
        &mut self,
        id: ReqId,
        nodes: Vec<NodeId>,
        repl_factor: Option<usize>,
    ) {
        if self.cfg.view.is_joining() {
            let msg = "this node is not in a cluster; change the view through a member".into();
            return self.finish(Origin::Client(id), Err(ReqError::BadRequest(msg)));
        }
        let rf = repl_factor.unwrap_or(self.cfg.view.repl_factor);
        match self.propose(nodes, rf) {
            Ok(view) => self.finish(Origin::Client(id), Ok(Response::ViewChanged { view })),
            Err(e) => self.finish(Origin::Client(id), Err(ReqError::BadRequest(e.to_string()))),
        }
    }

    /// Adds `node` to the view unless it is a member already; answers `client` if given. A
    /// node that has not `answered` as a joining node yet is probed first (see the module doc).
    pub(super) fn admit(&mut self, client: Option<ReqId>, node: NodeId, answered: bool) {
        let probe = !answered
            && !self.cfg.view.is_joining()
            && !self.cfg.view.nodes.contains(&node)
            && node != self.me;
        if probe {
            let rid = self.rid();
            self.send(&node, PeerMsg::JoinProbe { rid });
            let join = PendingJoin {
                client,
                node,
                deadline: self.now + self.cfg.quorum_timeout,
                next_probe: self.now + self.cfg.retry_interval,
            };
            self.joins.insert(rid, join);
            return;
        }
        let result = if self.cfg.view.is_joining() {
            Err(ReqError::Unavailable(
                "this node has not joined a cluster yet".into(),
            ))
        } else if self.cfg.view.nodes.contains(&node) {
            Ok(self.cfg.view.clone())
        } else {
            let mut nodes = self.cfg.view.nodes.clone();
            nodes.push(node);
            self.propose(nodes, self.cfg.view.repl_factor)
                .map_err(|e| ReqError::BadRequest(e.to_string()))
        };
        if let Some(id) = client {
            let result = result.map(|view| Response::ViewChanged { view });
            self.finish(Origin::Client(id), result);
        }
    }

    /// A join candidate's answer to its probe: admit it, or refuse a node serving a cluster of
    /// its own (it would bring that cluster's views and data along).
    pub(super) fn on_join_answer(
        &mut self,
        from: &NodeId,
        rid: Rid,
        epoch: Epoch,
        nodes: Vec<NodeId>,
    ) {
        if self.joins.get(&rid).is_none_or(|j| j.node != *from) {
            return;
        }
        let join = self.joins.remove(&rid).expect("checked above");
        let ours = &self.cfg.view.nodes;
        let joinable = nodes.is_empty() || nodes.iter().any(|n| n != from && ours.contains(n));
        if joinable {
            return self.admit(join.client, join.node, true);
        }
        if let Some(id) = join.client {
            let msg = format!(
                "{} already runs with a view of its own (epoch {}); start it with an empty data \
                 directory and --await-join (or --join MEMBER) to add it",
                join.node,
                super::super::ring::epoch_number(epoch)
            );
            self.finish(Origin::Client(id), Err(ReqError::Conflict(msg)));
        }
        self.forget(join.node);
    }

    /// Probes again the join candidates that have not answered yet; refuses those whose time is
    /// up.
    pub(super) fn join_tick(&mut self) {
        let now = self.now;
        let late: Vec<Rid> = self
            .joins
            .iter()
            .filter(|(_, j)| j.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for rid in late {
            let join = self.joins.remove(&rid).expect("listed above");
            if let Some(id) = join.client {
                let msg = format!(
                    "{} did not answer as a joining causeway node within {:?}; start it with \
                     --await-join (or --join MEMBER) and try again",
                    join.node, self.cfg.quorum_timeout
                );
                self.finish(Origin::Client(id), Err(ReqError::BadRequest(msg)));
            }
            self.forget(join.node);
        }
        let mut again = Vec::new();
        for (rid, j) in &mut self.joins {
            if j.next_probe <= now {
                j.next_probe = now + self.cfg.retry_interval;
                again.push((j.node.clone(), *rid));
            }
        }
        for (node, rid) in again {
            self.send(&node, PeerMsg::JoinProbe { rid });
        }
    }

    /// Starts expecting to hear from members this node has no record of, and stops expecting
    /// anything of nodes that left the view (see [`Node::is_suspect`]).
    pub(super) fn expect_members(&mut self) {
        let members: BTreeSet<&NodeId> = self.cfg.view.nodes.iter().collect();
        self.expecting.retain(|n, _| members.contains(n));
        for n in members {
            if *n != self.me {
                self.expecting.entry(n.clone()).or_insert(self.now);
            }
        }
    }

    /// Drops every state kept about `node`, which is no member of the view and no pending join
    /// candidate, and tells the driver to drop its own ([`Ready::forget`]). Forwards waiting
    /// for it fail over at the next tick.
    pub(super) fn forget(&mut self, node: NodeId) {
        let pending = self.joins.values().any(|j| j.node == node);
        if pending || node == self.me || self.cfg.view.nodes.contains(&node) {
            return;
        }
        self.last_heard.remove(&node);
        self.expecting.remove(&node);
        self.outbox.forget(&node);
        let now = self.now;
        for f in self.proxy.pending.values_mut() {
            if *f.current() == node {
                f.attempt_deadline = now;
            }
        }
        self.out.forget.push(node);
    }

    fn propose(
        &mut self,
        nodes: Vec<NodeId>,
        rf: usize,
    ) -> Result<View, super::super::ring::ViewError> {
        let mut view = self.cfg.view.change(nodes, rf, &self.me)?;
        // Above every epoch this node knows, so it wins over views it has only heard of.
        let known = self.history.latest().epoch;
        if view.epoch <= known {
            let number = super::super::ring::epoch_number(known) + 1;
            view.epoch = super::super::ring::next_epoch(number, &self.me)?;
        }
        self.history.insert(view.clone());
        self.switch(view.clone());
        Ok(view)
    }

    /// Installs `view` (newer than the current one): new ownership, a fresh actor for the new
    /// epoch, lost partitions kept for handoff, gained ones awaited, and every in-flight request
    /// routed again by the new view.
    fn switch(&mut self, view: View) {
        let old = std::mem::replace(&mut self.cfg.view, view);
        self.probes.hit(Probe::ViewInstalled);
        let me = self.me.clone();
        self.shard = self.cfg.view.shard_of_node(&me);
        if old.partitions != self.cfg.view.partitions {
            let (merkle, live) = index(&mut self.storage, self.cfg.view.partitions);
            self.merkle = merkle;
            self.live = live;
        }
        for p in 0..self.cfg.view.partitions {
            let (had, has) = (old.owns(&me, p), self.cfg.view.owns(&me, p));
            if has {
                self.retained.remove(&p);
            } else {
                self.awaiting.remove(&p);
            }
            if had && !has {
                self.retained.insert(p);
            }
            if !had && has {
                self.awaiting.insert(p);
            }
        }
        self.windows = self.compute_windows();
        self.feeds = self.compute_feeds();
        if self.shard.is_some() {
            // The same incarnation continues its lineage under the new epoch; replicas vouch
            // for the older actors it folds once they passed its floor check (`floor.rs`).
            let inc = if self.cfg.canary == Some(Canary::NoTokenPruning) {
                self.rng.random()
            } else {
                self.actor.incarnation()
            };
            self.actor =
                Actor::new(node_hash(&me), self.cfg.view.epoch, inc).in_cluster(self.cfg.cluster);
            self.counter = 0;
            self.storage.meta_put(META_ACTOR, &encode(&self.actor));
        }
        self.start_floor_check();
        // Replication to a node that no longer replicates the key becomes part of the handoff.
        let view = &self.cfg.view;
        self.outbox
            .retain(|peer, key| view.owns(peer, view.partition_of(key)));
        let owned = |k: &Bytes| view.owns(&me, view.partition_of(k));
        self.tombstones.retain(|_, (k, _)| owned(k));
        self.reaps.retain(|_, (k, _)| owned(k));
        self.pushes.clear();
        self.incoming.clear();
        if let Some(ex) = self.aae.take() {
            self.aae_stats.exchanges_failed += 1;
            if let Some(id) = ex.requested_by {
                let msg = "the view changed during the exchange".to_string();
                self.finish(Origin::Client(id), Err(ReqError::Unavailable(msg)));
            }
        }
        self.persist_membership();
        self.needs_sync = true;
        let mut peers: BTreeSet<NodeId> = old.nodes.iter().cloned().collect();
        peers.extend(self.cfg.view.nodes.iter().cloned());
        peers.remove(&me);
        for p in &peers {
            self.send_views(p, 0);
        }
        self.expect_members();
        self.reroute_all();
        self.floor_tick();
        // After the views above: the driver writes what it queued for a removed node first.
        for p in peers {
            self.forget(p);
        }
    }

    /// Routes again what waited under the previous view: parked operations on keys this node no
    /// longer serves, and forwards a replica refused.
    fn reroute_all(&mut self) {
        for p in self.requests.take_parked() {
            let mine = p.op.key().is_some_and(|k| self.owns(k));
            match p.origin {
                _ if mine => self.requests.park(p),
                Origin::Client(id) => {
                    let deadline = p.deadline.max(self.now + self.cfg.causal_wait);
                    self.route(id, p.op, deadline);
                }
                Origin::Proxy { from, rid } => {
                    let epoch = self.cfg.view.epoch;
                    self.send(&from, PeerMsg::NotReplica { rid, epoch });
                }
            }
        }
        self.wake_parked();
        let waiting = std::mem::take(&mut self.rerouting);
        for (f, _) in waiting {
            self.reroute(f);
        }
    }

    /// A replica refused a forwarded request: it is not a replica of the key in its view.
    pub(super) fn on_not_replica(&mut self, rid: Rid, epoch: Epoch) {
        let Some(f) = self.proxy.pending.remove(&rid) else {
            return;
        };
        if epoch <= self.cfg.view.epoch && f.can_fail_over(self.now) {
            self.proxy.failovers += 1;
            self.probes.hit(Probe::ProxyFailover);
            return self.attempt(f);
        }
        // Either this node's view is behind (the newer one is on its way by gossip) or the
        // replicas have not installed it yet: try again shortly.
        let at = self.now + self.cfg.retry_interval;
        self.rerouting.push((f, at));
    }

    /// Routes a refused forward by the current view, or gives up at its deadline.
    fn reroute(&mut self, f: Forwarding) {
        if self.now >= f.deadline {
            let msg = "no replica of the key's shard accepted the request in time".to_string();
            return self.out.replies.push(Reply {
                id: f.client,
                served_by: self.me.clone(),
                result: Err(ReqError::Unavailable(msg)),
            });
        }
        self.route(f.client, f.op, f.deadline);
    }

    /// Join requests while outside the view, and forwards due to be routed again.
    pub(super) fn membership_tick(&mut self) {
        // Only a node that was never in a view asks: one that was removed stays out.
        if let Some(member) = self.cfg.join.clone()
            && self.cfg.view.is_joining()
            && self.now >= self.next_join
        {
            self.next_join = self.now + self.cfg.heartbeat_interval * 4;
            let node = self.me.clone();
            self.send(&member, PeerMsg::Join { node });
        }
        if self.rerouting.iter().any(|(_, at)| *at <= self.now) {
            let (due, kept) = std::mem::take(&mut self.rerouting)
                .into_iter()
                .partition(|(_, at)| *at <= self.now);
            self.rerouting = kept;
            for (f, _) in due {
                self.reroute(f);
            }
        }
    }

    pub(super) fn compute_windows(&self) -> Vec<Option<(Epoch, Epoch)>> {
        (0..self.cfg.view.partitions)
            .map(|p| self.history.window(&self.me, p))
            .collect()
    }

    /// For a key of a partition this node gained and has not received in full yet: the owners
    /// of the previous view (they hold it until it is handed off).
    pub(super) fn previous_owners(&self, key: &[u8]) -> Vec<NodeId> {
        let p = self.cfg.view.partition_of(key);
        if !self.awaiting.contains(&p) {
            return Vec::new();
        }
        self.history
            .before(self.cfg.view.epoch)
            .map(|v| v.owners(p).to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| *n != self.me)
            .collect()
    }

    /// Partitions this node owned before the current view and still owns, with the replicas
    /// whose current stretch of ownership started after this node's and that this node has not
    /// fed during that stretch: they need the partition from an old owner. (Not only those whose
    /// stretch starts with the current view: one still awaiting the partition when the next
    /// view came would otherwise never receive it.)
    pub(super) fn compute_feeds(&self) -> BTreeMap<u32, BTreeSet<NodeId>> {
        let epoch = self.cfg.view.epoch;
        let mut feeds = BTreeMap::new();
        for p in 0..self.cfg.view.partitions {
            let Some((mine, _)) = self.windows[p as usize] else {
                continue;
            };
            // A node that owned the partition before, lost it and regains it now still holds
            // its data if it had not dropped it yet: it feeds the replicas of older stretches
            // too (one of them may still await the partition from the stretch it lost).
            let regained = mine == epoch && self.history.owned_between(&self.me, p, 0, mine);
            if (mine >= epoch && !regained) || !self.cfg.view.owns(&self.me, p) {
                continue;
            }
            let gained: BTreeSet<NodeId> = self
                .cfg
                .view
                .owners(p)
                .iter()
                .filter(|t| {
                    let since = self.history.window(t, p).map(|w| w.0);
                    **t != self.me
                        && since.is_some_and(|s| s > mine || (regained && s < mine))
                        && self.fed.get(&(p, (*t).clone())) != since.as_ref()
                })
                .cloned()
                .collect();
            if !gained.is_empty() {
                feeds.insert(p, gained);
            }
        }
        feeds
    }

    /// What this node vouches for on every partition of its shard, for anti-entropy.
    pub(super) fn claims(&self) -> Claims {
        let parts = self.shard_partitions();
        let clock = self
            .clock
            .restricted(|a| match self.history.actor_shard(a) {
                None => false,
                Some((view, s)) => parts
                    .iter()
                    .all(|p| view.shard_of_partition(*p) != s || self.trusts(*p, a)),
            });
        // Handoff clocks, plus this node's own hints of the shard's partitions (accepted while
        // it did not own them): hint actors belong to no shard, so the clock above leaves them out.
        let handoff = parts
            .iter()
            .filter_map(|p| {
                let mut h = self.handoff.get(p).cloned().unwrap_or_default();
                if let Some(f) = self.floors.get(p) {
                    h.floors.merge(f);
                }
                for (a, n, _) in self.clock.entries() {
                    if a.hinted_partition() == Some(*p) && self.trusts(*p, a) {
                        h.dots.add_upto(a, n);
                    }
                }
                (!h.is_empty()).then_some((*p, h))
            })
            .collect();
        Claims {
            epoch: self.cfg.view.epoch,
            clock,
            handoff,
            awaiting: self.awaiting.iter().copied().collect(),
        }
    }

    /// Joins a shard peer's claims whose every write this node's state now reflects.
    pub(super) fn adopt(&mut self, claims: &Claims) {
        if claims.epoch != self.cfg.view.epoch || self.shard.is_none() {
            return;
        }
        self.clock.join(&claims.clock);
        self.clock_dirty = true;
        for (p, h) in &claims.handoff {
            if self.cfg.view.owns(&self.me, *p) {
                self.handoff.entry(*p).or_default().merge(h);
            }
        }
        // A partition the peer holds in full is now held in full here too: nothing more to
        // await (its previous owners may consider this node an owner since before it last
        // installed a view, and never feed it).
        let before = self.awaiting.len();
        let parts = self.shard_partitions();
        self.awaiting
            .retain(|p| !parts.contains(p) || claims.awaiting.contains(p));
        if !claims.handoff.is_empty() || self.awaiting.len() != before {
            self.persist_membership();
        }
        self.wake_parked();
    }

    /// Writes views, handoff clocks and the partitions on the move to storage metadata.
    pub(super) fn persist_membership(&mut self) {
        self.storage
            .meta_put(META_VIEWS, &encode(&self.history.all()));
        self.storage.meta_put(META_HANDOFF, &encode(&self.handoff));
        self.storage
            .meta_put(META_RETAINED, &encode(&self.retained));
        self.storage
            .meta_put(META_AWAITING, &encode(&self.awaiting));
        self.storage.meta_put(META_DROPPED, &encode(&self.dropped));
        self.storage.meta_put(META_FLOORS, &encode(&self.floors));
    }
}
