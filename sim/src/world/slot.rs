//! Node slots: each node's core while it runs and its disk while it is down; starting, stopping
//! (a crash loses unsynced writes), pausing, ticking, and carrying out each Ready through the
//! core's one executor ([`causeway::core::Ready::apply`]) with the simulator's [`Effects`],
//! which can crash the node at the sync (`crash-before-sync`).

use super::*;

/// One node: its core while up, its disk while down.
pub(super) struct Slot {
    pub(super) id: NodeId,
    /// The cluster it belongs to (always 0 outside a mesh).
    pub(super) cluster: usize,
    pub(super) node: Option<Node<SimDisk>>,
    pub(super) disk: Option<SimDisk>,
    pub(super) paused: bool,
    /// Inputs that arrived while paused, delivered in order on resume.
    pub(super) held: Vec<Input>,
    /// Bumped on every stop and start; ticks of an older generation are dropped.
    pub(super) generation: u64,
    pub(super) offset_us: i64,
    pub(super) drift_ppm: i64,
    pub(super) ticks: u64,
    /// Client requests this node has not answered: request id -> session.
    pub(super) pending: BTreeMap<u64, usize>,
    /// Writes this node was asked to execute whose dot has not been seen yet.
    pub(super) awaited: Vec<AwaitedWrite>,
    /// Dots of this incarnation already in the registry.
    pub(super) recorded: BTreeSet<Dot>,
    /// Has run at least once (a spare starts at its `join` or `view` event).
    pub(super) started: bool,
    /// A `crash-before-sync` fault is armed: the node crashes at its next sync.
    pub(super) crash_before_sync: bool,
    /// Force-removed: crashed for good, never restarted (not even at heal).
    pub(super) dead: bool,
    /// Starts outside the cluster: an empty view, asking `join` (if any) to admit it.
    pub(super) spare: bool,
    pub(super) join: Option<NodeId>,
    /// Epoch of the view this node last reported, and whether that view lists it. Sessions use
    /// only members as entry points (a crashed member stays one: its requests are refused).
    pub(super) epoch: u64,
    pub(super) member: bool,
}

/// One simulated node's [`Effects`] for one Ready: collects the outputs, syncs the disk, and
/// crashes instead of syncing when a `crash-before-sync` fault is armed.
pub(super) struct Turn<'d> {
    pub(super) disk: &'d mut SimDisk,
    pub(super) crash: bool,
    pub(super) crashed: bool,
    pub(super) executed: Vec<Executed>,
    pub(super) messages: Vec<(NodeId, PeerMsg)>,
    pub(super) replies: Vec<Reply>,
}

impl Effects for Turn<'_> {
    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.messages.push((to, msg));
    }

    fn reply(&mut self, reply: Reply) {
        self.replies.push(reply);
    }

    fn persist(&mut self, sync: bool) -> Persisted {
        if !sync {
            return Persisted::Stored;
        }
        if self.crash {
            self.crashed = true;
            return Persisted::Crashed;
        }
        causeway::core::Storage::sync(self.disk);
        Persisted::Stored
    }

    /// The simulated network keeps no per-peer state.
    fn forget(&mut self, _peer: NodeId) {}

    fn executed(&mut self, write: Executed) {
        self.executed.push(write);
    }
}

/// What one turn of a node released, in order.
pub(super) struct Outputs {
    pub(super) executed: Vec<Executed>,
    pub(super) messages: Vec<(NodeId, PeerMsg)>,
    pub(super) replies: Vec<Reply>,
}

/// The dots of the writes `turn` answers (to a client, or to the proxy that forwarded them).
pub(super) fn answered_writes(turn: &Outputs) -> BTreeSet<Dot> {
    let replies = turn.replies.iter().map(|r| &r.result);
    let forwards = turn.messages.iter().filter_map(|(_, m)| match m {
        PeerMsg::ForwardReply { result, .. } => Some(result),
        _ => None,
    });
    replies
        .chain(forwards)
        .filter_map(|r| match r {
            Ok(Response::Written { dot, .. }) => Some(*dot),
            _ => None,
        })
        .collect()
}
impl<A: FnMut(u64)> World<'_, A> {
    pub(super) fn tick(&mut self, n: usize, generation: u64) {
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
    pub(super) fn feed(&mut self, n: usize, input: Input) {
        if let Some(w) = self.awaited_write(n, &input) {
            self.slots[n].awaited.push(w);
        }
        let now = self.local(n);
        let Some(node) = self.slots[n].node.as_mut() else {
            return;
        };
        // A broken invariant panics in the core (debug assertions): the run stops at this event.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            node.handle(now, input);
        }));
        if let Err(panic) = handled {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let at = (self.stats.events, self.now);
            self.broken = Some(format!("n{n} at event {} ({} µs): {what}", at.0, at.1));
            return;
        }
        self.flush(n);
    }

    /// Carries out node `n`'s Ready (`Ready::apply`); the outputs of the turn leave at one
    /// instant, messages before replies. When a `crash-before-sync` fault is armed and the Ready
    /// syncs, the node crashes at the sync: only the early lists leave, then it stops.
    pub(super) fn flush(&mut self, n: usize) {
        let crash = self.slots[n].crash_before_sync;
        let Some(node) = self.slots[n].node.as_mut() else {
            return;
        };
        let ready = node.take_ready();
        let mut turn = Turn {
            disk: node.storage_mut(),
            crash,
            crashed: false,
            executed: Vec::new(),
            messages: Vec::new(),
            replies: Vec::new(),
        };
        ready.apply(&mut turn);
        let Turn {
            crashed,
            executed,
            messages,
            replies,
            ..
        } = turn;
        let turn = Outputs {
            executed,
            messages,
            replies,
        };
        let (epoch, member) = (node.view().epoch, node.view().nodes.contains(node.id()));
        if epoch != self.slots[n].epoch {
            self.views_changed |= self.slots[n].epoch != 0;
            self.slots[n].epoch = epoch;
            self.slots[n].member = member;
            self.note(TraceCode::ViewInstalled, |_| {
                format!("n{n} installs view {epoch:#x} (member: {member})")
            });
        }
        self.observe_writes(n, &turn);
        if self.follow_repairs {
            self.repair_turn(n, &turn);
        }
        // What a crash at the sync may lose: the turn's writes whose answer did not leave.
        let unanswered: Vec<(Dot, Bytes)> = if crashed {
            let answered = answered_writes(&turn);
            let e = turn.executed.iter().filter(|e| !answered.contains(&e.dot));
            e.map(|e| (e.dot, e.key.clone())).collect()
        } else {
            Vec::new()
        };
        for (to, msg) in turn.messages {
            if self.follow_repairs {
                self.repair_sent(n, &msg);
            }
            match self.index.get(&to) {
                Some(&t) => self.send(n, t, msg),
                None => self.stats.dropped += 1,
            }
        }
        for reply in turn.replies {
            if reply.id >= ADMIN_BASE {
                self.admin_reply(reply.id, reply.result);
            } else if reply.id >= strong::STRONG_BASE {
                self.strong_reply(reply.id, reply.result);
            } else if let Some(s) = self.slots[n].pending.remove(&reply.id) {
                self.note_replier(n, reply.id);
                self.watch_answered(reply.id, &reply.result);
                let o = self.history.ops[reply.id as usize].outcome_of(reply.result);
                self.complete(s, reply.id, o);
            }
        }
        if crashed {
            self.note(TraceCode::CrashBeforeSync, |_| {
                format!("n{n} crashes before its sync")
            });
            self.stop(n, false);
            self.forget_vanished(n, &unanswered);
        }
    }

    pub(super) fn start(&mut self, n: usize) {
        let nonce = self.rand(Purpose::Nonce, n as u64);
        let now = self.local(n);
        let slot = &mut self.slots[n];
        let disk = slot.disk.take().unwrap_or_default();
        let id = Identity {
            node: slot.id.clone(),
            nonce,
        };
        let mut config = self.configs[slot.cluster].clone();
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
        self.note(TraceCode::Start, |_| format!("start n{n}"));
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

    pub(super) fn stop(&mut self, n: usize, wipe: bool) {
        let Some(node) = self.slots[n].node.take() else {
            return;
        };
        self.watch_stopped(n);
        self.stats.crashes += 1;
        let st = node.status();
        self.stats.hints_accepted += st.handoff.hints_accepted;
        self.stats.probes.merge(&st.probes);
        if wipe {
            let a = node.actor();
            self.wiped.push((a.node(), a.incarnation()));
        }
        let mut disk = node.into_storage();
        let (kept, torn) = (
            self.range(Purpose::Tear, n as u64, 0, disk.unsynced() as u64) as usize,
            self.chance(Purpose::Tear, n as u64, 0.5),
        );
        if wipe {
            disk = SimDisk::new();
            self.note(TraceCode::Wipe, |_| format!("wipe n{n}"));
        } else {
            let loss = disk.crash(kept, torn);
            self.note(TraceCode::Crash, |_| format!("crash n{n} {loss:?}"));
        }
        let slot = &mut self.slots[n];
        slot.disk = Some(disk);
        slot.crash_before_sync = false;
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
            self.note(TraceCode::Membership, |_| {
                format!("membership request {} lost: n{n} crashed", id - ADMIN_BASE)
            });
        }
        self.strong_crashed(n);
        let slot = &mut self.slots[n];
        for (op, s) in std::mem::take(&mut slot.pending) {
            let o =
                self.history.ops[op as usize].unavailable("connection reset: node crashed".into());
            self.complete(s, op, o);
        }
    }

    pub(super) fn resume(&mut self, n: usize) {
        if !self.slots[n].paused {
            return;
        }
        self.slots[n].paused = false;
        for input in std::mem::take(&mut self.slots[n].held) {
            self.feed(n, input);
        }
    }
}
