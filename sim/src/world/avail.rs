//! Availability during chaos (G4): which failed requests a replica could have served.
//!
//! When a session's request with `r = 1` / `w = 1` starts, the world notes the replicas of its
//! key that could serve it *at once*: each is up and unpaused, its links with the request's
//! entry node are open both ways, and its core would run the request without a causal wait
//! ([`causeway::core::Node::serves_at_once`]). An entry node that is itself a replica serves
//! its own requests (it never forwards them), so then only it counts. Until the request
//! completes, every disturbance takes a replica off that list for good: a message between it and
//! the entry node dropped (clogged or lost), a clog of either direction, its crash or pause, a
//! clock jump at it. A request that then fails — for want of replicas, not for a bad request or
//! a full disk — while its entry node ran throughout and some listed replica remains, was
//! servable: the proxy tries at most the shard's other replicas first, each for at most one
//! forward timeout (or a causal wait and a round trip), and [`Watch::max_ahead`] says how many of
//! those fit in the request's deadline.
//!
//! Not judged: requests once any membership change began (ownership moves through handoffs the
//! world cannot follow), quorum requests (`r`/`w` above one), and requests whose entry node was
//! down, paused, restarted or had its clock jump while they ran.

use super::*;
use causeway::core::ReqError;

/// One running request the world judges.
pub(super) struct Watch {
    entry: usize,
    generation: u64,
    /// Replicas that could serve it at its start and stayed reachable since.
    good: Vec<usize>,
    /// The replicas the entry node may try (one when it is a replica itself).
    tried: usize,
}

/// How many other replicas a proxy may try before a servable one within `deadline_us`: each
/// costs at most a forward timeout, or a causal wait and a round trip, plus a tick of latency;
/// the servable one a round trip and two ticks. `None` when not even that round trip fits.
pub(super) fn max_ahead(config: &Config, deadline_us: u64, delay_max_us: u64) -> Option<u64> {
    let tick = config.tick_interval.as_micros() as u64;
    let attempt = (config.forward_timeout.as_micros() as u64)
        .max(config.causal_wait.as_micros() as u64 + 2 * delay_max_us)
        + 2 * tick;
    // Drift of the nodes' clocks and slack for the ticks that notice deadlines.
    let margin = 100_000;
    let service = 2 * delay_max_us + 2 * tick + margin;
    deadline_us.checked_sub(service).map(|left| left / attempt)
}

impl<A: FnMut(u64)> World<'_, A> {
    /// Starts judging session request `id` (op `op` at entry node `entry`), if it qualifies.
    pub(super) fn watch(&mut self, id: u64, entry: usize, op: &Op) {
        if self.membership_started || self.views_changed || self.max_ahead.is_none() {
            return;
        }
        let e = &self.slots[entry];
        if e.node.is_none() || e.paused {
            return;
        }
        let (key, quorum) = match op {
            Op::Get { key, r, .. } => (key, *r),
            Op::Put { key, w, .. } => (key, *w),
            _ => return,
        };
        let view = &self.configs[e.cluster].view;
        let members = view.shard_members(view.shard_of_key(key));
        if quorum.resolve(members.len()) != Some(1) {
            return;
        }
        let replicas: Vec<usize> = members
            .iter()
            .filter_map(|m| self.index.get(m))
            .copied()
            .collect();
        let candidates = if replicas.contains(&entry) {
            vec![entry]
        } else {
            replicas
        };
        let good: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&r| {
                self.reachable(entry, r)
                    && self.slots[r]
                        .node
                        .as_ref()
                        .is_some_and(|n| n.serves_at_once(op))
            })
            .collect();
        if good.is_empty() {
            return;
        }
        let w = Watch {
            entry,
            generation: e.generation,
            good,
            tried: candidates.len(),
        };
        self.watches.insert(id, w);
    }

    /// Node `r` is up and unpaused, and its links with `entry` are open both ways.
    fn reachable(&self, entry: usize, r: usize) -> bool {
        let s = &self.slots[r];
        s.node.is_some()
            && !s.paused
            && (r == entry
                || !(self.clogged.contains(&(entry, r)) || self.clogged.contains(&(r, entry))))
    }

    /// A message between `from` and `to` was dropped: neither is reachable from the other for
    /// the watched requests entering at either.
    pub(super) fn watch_dropped(&mut self, from: usize, to: usize) {
        for w in self.watches.values_mut() {
            if w.entry == from {
                w.good.retain(|&r| r != to);
            } else if w.entry == to {
                w.good.retain(|&r| r != from);
            }
        }
    }

    /// After a fault: replicas no longer reachable leave every list; a jump of a clock takes its
    /// node off (and ends the judging of requests entering there); a membership change ends all.
    pub(super) fn watch_fault(&mut self, f: &Fault) {
        if matches!(
            f,
            Fault::Join { .. }
                | Fault::View { .. }
                | Fault::Remove { .. }
                | Fault::ForceRemove { .. }
        ) {
            self.membership_started = true;
            self.watches.clear();
        }
        if self.watches.is_empty() {
            return;
        }
        let jumped = match f {
            Fault::Jump { node, .. } => Some(*node),
            _ => None,
        };
        let mut watches = std::mem::take(&mut self.watches);
        watches.retain(|_, w| Some(w.entry) != jumped && self.reachable(w.entry, w.entry));
        for w in watches.values_mut() {
            w.good
                .retain(|&r| Some(r) != jumped && self.reachable(w.entry, r));
        }
        self.watches = watches;
    }

    /// Node `n` stopped (crashed or wiped): it serves none of the watched requests.
    pub(super) fn watch_stopped(&mut self, n: usize) {
        for w in self.watches.values_mut() {
            w.good.retain(|&r| r != n);
        }
    }

    /// Request `id` was answered with `result`: an error that is no failure of availability (a
    /// bad request, a conflict, a full disk, too large siblings) ends its judging.
    pub(super) fn watch_answered(&mut self, id: u64, result: &Result<Response, ReqError>) {
        if let Err(
            ReqError::BadRequest(_)
            | ReqError::Conflict(_)
            | ReqError::InsufficientStorage(_)
            | ReqError::TooLarge(_),
        ) = result
        {
            self.watches.remove(&id);
        }
    }

    /// Request `id` completed: when it failed although a listed replica remained, the entry
    /// node ran throughout, and no more replicas than fit in its deadline came before, the
    /// history records why it was servable (G4 flags it).
    pub(super) fn watch_completed(&mut self, id: u64) {
        let Some(w) = self.watches.remove(&id) else {
            return;
        };
        let rec = &self.history.ops[id as usize];
        if matches!(rec.outcome, Outcome::Ok(_) | Outcome::Pending) || w.good.is_empty() {
            return;
        }
        let e = &self.slots[w.entry];
        if e.node.is_none() || e.paused || e.generation != w.generation {
            return;
        }
        let ahead = (w.tried - w.good.len()) as u64;
        if self.max_ahead.is_some_and(|m| ahead <= m) {
            let good: Vec<String> = w.good.iter().map(|r| format!("n{r}")).collect();
            let why = format!(
                "{} could serve it at once and stayed reachable from n{} throughout ({ahead} other replica(s) to try first)",
                good.join(", "),
                w.entry
            );
            self.history.ops[id as usize].servable = Some(why);
        }
    }
}
