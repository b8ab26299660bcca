//! Read repair: after a read that asked several replicas (`r` above one), every replica that
//! answered holds what the read returned.
//!
//! The world follows each coordinator's `Fetch` by request id and notes which replicas' answers
//! reached it; the turn that answers the read with a version set completes it (a fetch answer
//! completes at most the read it belongs to). One network delay and a tick later, each replica
//! that answered (and the coordinator) must hold every returned version with a value, or a
//! version that superseded it (its copy's context covers the dot: later writes are allowed for).
//! A replica is not judged if it crashed or is paused by then, or if a message from the
//! coordinator to it was dropped since the read completed (the repair may be lost: anti-entropy
//! makes up for it, G3). Not judged once a membership change began. A replica found lacking is
//! recorded in [`History::unrepaired`] (G3 flags it).

use super::*;

/// A coordinator's read that fetched from its peers, by (coordinator, rid).
pub(super) struct Fetching {
    key: Bytes,
    /// The replicas whose answer reached the coordinator, with their generation then.
    answered: Vec<usize>,
}

/// A completed read whose answering replicas are judged later.
pub(super) struct RepairDue {
    coordinator: usize,
    key: Bytes,
    dots: Vec<Dot>,
    /// Each replica judged and its generation when the read completed.
    replicas: Vec<(usize, u64)>,
    completed: u64,
}

impl<A: FnMut(u64)> World<'_, A> {
    /// Node `n` sends `msg` to `to`: a fetch of a read starts being followed.
    pub(super) fn repair_sent(&mut self, n: usize, msg: &PeerMsg) {
        if let PeerMsg::Fetch { rid, key } = msg
            && !self.membership_started
        {
            self.fetching.entry((n, *rid)).or_insert_with(|| Fetching {
                key: key.clone(),
                answered: Vec::new(),
            });
        }
    }

    /// `from`'s fetch answer is about to reach coordinator `to`.
    pub(super) fn repair_answer(&mut self, from: usize, to: usize, msg: &PeerMsg) {
        if let PeerMsg::FetchReply { rid, .. } = msg
            && let Some(f) = self.fetching.get_mut(&(to, *rid))
        {
            if !f.answered.contains(&from) {
                f.answered.push(from);
            }
            self.answering = Some((to, *rid));
        }
    }

    /// Node `n`'s turn after a fetch answer: if it answered a read, the read completed.
    pub(super) fn repair_turn(&mut self, n: usize, turn: &Outputs) {
        let Some((c, rid)) = self.answering.take() else {
            return;
        };
        if c != n {
            return;
        }
        let read = |r: &Result<Response, causeway::core::ReqError>| match r {
            Ok(Response::Read { versions, .. }) => Some(versions.clone()),
            _ => None,
        };
        let forwarded = turn.messages.iter().filter_map(|(_, m)| match m {
            PeerMsg::ForwardReply { result, .. } => Some(result),
            _ => None,
        });
        let Some(versions) = turn
            .replies
            .iter()
            .map(|r| &r.result)
            .chain(forwarded)
            .find_map(read)
        else {
            return;
        };
        let Some(f) = self.fetching.remove(&(c, rid)) else {
            return;
        };
        let replicas = std::iter::once(c)
            .chain(f.answered)
            .map(|r| (r, self.slots[r].generation))
            .collect();
        let dots = versions
            .iter()
            .filter(|v| v.value.is_some())
            .map(|v| v.dot)
            .collect();
        self.repairs.push(RepairDue {
            coordinator: c,
            key: f.key,
            dots,
            replicas,
            completed: self.now,
        });
        let tick = self.config.tick_interval.as_micros() as u64;
        let at = self.now + self.scenario.net.delay_us[1] + tick;
        self.schedule(at, Event::RepairCheck(self.repairs.len() - 1));
    }

    /// Judges the replicas that answered read `i`.
    pub(super) fn repair_check(&mut self, i: usize) {
        if self.membership_started {
            return;
        }
        let due = &self.repairs[i];
        let c = due.coordinator;
        let mut lacking = Vec::new();
        for &(r, generation) in &due.replicas {
            let slot = &self.slots[r];
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            let dropped = self
                .last_drop
                .get(&(c, r))
                .is_some_and(|&t| t >= due.completed);
            if slot.generation != generation || slot.paused || dropped {
                continue;
            }
            let held = node.local_state(&due.key).unwrap_or_default();
            let missing: Vec<&Dot> = due
                .dots
                .iter()
                .filter(|d| !held.context().covers(**d))
                .collect();
            if !missing.is_empty() {
                lacking.push(format!("n{r} lacks {missing:?}"));
            }
        }
        if !lacking.is_empty() {
            let what = format!(
                "read of {} at n{c} ({} ms) returned versions its answering replicas do not hold {} ms later: {}",
                String::from_utf8_lossy(&due.key),
                due.completed / 1000,
                (self.now - due.completed) / 1000,
                lacking.join("; ")
            );
            self.history.unrepaired.push(what);
        }
    }
}
