//! The write registry the checkers trust: which client operation each executed write serves,
//! built from the core's `executed` events and the requests each node was handed.

use super::*;

/// A write a replica was handed and has not executed yet: the core may execute it at once or
/// later (after waiting for its context), and reports it in `Ready::executed` with the
/// request's origin, which names this entry.
pub(super) struct AwaitedWrite {
    pub(super) context: VersionVector,
    /// The client operation it serves (`UNATTRIBUTED` when no sent operation matches).
    pub(super) op: u64,
    pub(super) reply: ReplyTo,
}

/// Where the outcome of an awaited write is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyTo {
    Client(u64),
    /// A forward reply to proxy `from` with this rid.
    Forward {
        from: usize,
        rid: u64,
    },
}

/// `WriteRecord::op` of an execution no sent operation matches.
pub(super) const UNATTRIBUTED: u64 = u64::MAX;
impl<A: FnMut(u64)> World<'_, A> {
    /// The write `input` asks replica `n` to execute, if any.
    pub(super) fn awaited_write(&self, n: usize, input: &Input) -> Option<AwaitedWrite> {
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
    pub(super) fn forwarded_op(&self, proxy: usize, op: &Op) -> Option<u64> {
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

    /// Records the writes node `n`'s turn reports executed (`Ready::executed`), each under the
    /// client operation its request serves, and stops awaiting requests that were answered or
    /// refused.
    pub(super) fn observe_writes(&mut self, n: usize, turn: &Outputs) {
        if self.slots[n].node.is_none() {
            return;
        }
        let me = self.slots[n].id.clone();
        for e in &turn.executed {
            let to = match &e.origin {
                Some(Origin::Client(id)) => Some(ReplyTo::Client(*id)),
                Some(Origin::Proxy { from, rid }) => self
                    .index
                    .get(from)
                    .map(|&from| ReplyTo::Forward { from, rid: *rid }),
                None => None,
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
            self.note(TraceCode::Execute, |_| {
                format!("{me} executes {:?} for op#{op}", e.dot)
            });
            self.history.writes.push(WriteRecord {
                dot: e.dot,
                key: e.key.clone(),
                value: e.value.clone(),
                supersedes: e.supersedes.clone(),
                context,
                node: n,
                at_us: self.now,
                ttl_s: e.ttl,
                expired: e.expired.clone(),
                op,
            });
        }
        // A request answered here (or, for a forward, refused) is not executed here later.
        let answered = turn
            .replies
            .iter()
            .map(|r| Some(ReplyTo::Client(r.id)))
            .chain(turn.messages.iter().map(|(to, m)| match m {
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

    /// After node `n` crashed before the sync of a turn that executed the `unanswered` writes
    /// (their answers and replication were to leave after the sync): one its disk lost vanished
    /// without a trace, so it leaves the registry, and its dot may be issued again. (A write whose
    /// answer left early stays: losing it is a G2 violation.)
    pub(super) fn forget_vanished(&mut self, n: usize, unanswered: &[(Dot, Bytes)]) {
        let Some(disk) = self.slots[n].disk.as_ref() else {
            return;
        };
        let vanished: Vec<Dot> = unanswered
            .iter()
            .filter(|(dot, key)| {
                !causeway::core::Storage::get(disk, key).is_some_and(|s| s.context().covers(*dot))
            })
            .map(|(dot, _)| *dot)
            .collect();
        for dot in vanished {
            let writes = &self.history.writes;
            if let Some(i) = writes.iter().rposition(|w| w.dot == dot && w.node == n) {
                self.history.writes.remove(i);
                self.note(TraceCode::WriteVanished, |_| {
                    format!("n{n} lost {dot:?} before anyone saw it")
                });
            }
        }
    }

    /// Records what node `n` has applied on operation `id` it is answering — its applied clock
    /// joined with the context of its copy of the key — when `n` owns the key and no view has
    /// changed yet (else its answer may rest on a previous owner's state or a handoff clock).
    /// G1 checks that the reply context claims nothing beyond it (`harness::check`).
    pub(super) fn note_replier(&mut self, n: usize, id: u64) {
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
            // In a mesh: the other clusters' dots its full syncs vouched for (a floor that
            // claimed too much would fail G1's read checks at this cluster).
            applied.merge(&node.mesh_floor_of(&rec.key));
            rec.replier_applied = Some(applied);
        }
    }
}
