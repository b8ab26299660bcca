//! Strong-key clients (`[strong]` of a scenario): each runs its pattern one operation at a time
//! through a random member, and every operation is recorded as a `linearizable::StrongOp` with
//! the simulated invoke and completion times. A write without a definite answer (503, timeout,
//! crash of its node) is `Unknown`; a read without one is left out.

use super::*;
use causeway::core::strong::{Cond, StrongCall, StrongOutcome};
use causeway_harness::linearizable::{self as lin, StrongOp, StrongResult};
use causeway_harness::scenario::StrongPattern;

/// Request ids of strong operations start here (below [`ADMIN_BASE`], above every causal op id).
pub(super) const STRONG_BASE: u64 = 1 << 61;

/// One strong client's progress.
#[derive(Default)]
pub(super) struct StrongClient {
    issued: usize,
    /// The operation in flight: its index in `history.strong` and the node it went to.
    current: Option<(usize, usize)>,
    /// What the client learnt last of its key: the version it read or wrote.
    version: Option<u64>,
    /// The key and version of the lock it holds (lock pattern).
    holding: Option<(u32, u64)>,
    key: u32,
}

fn to_lin_cond(c: &Cond) -> lin::Cond {
    match c {
        Cond::Always => lin::Cond::Always,
        Cond::IfVersion(v) => lin::Cond::IfVersion(*v),
        Cond::IfAbsent => lin::Cond::IfAbsent,
    }
}

fn to_lin_call(c: &StrongCall) -> lin::StrongCall {
    match c {
        StrongCall::Get => lin::StrongCall::Get,
        StrongCall::Put { value, cond } => lin::StrongCall::Put {
            value: value.to_vec(),
            cond: to_lin_cond(cond),
        },
        StrongCall::Delete { cond } => lin::StrongCall::Delete {
            cond: to_lin_cond(cond),
        },
    }
}

pub(super) fn strong_key(k: u32) -> Bytes {
    Bytes::from(format!("sk{k}"))
}

impl<A: FnMut(u64)> World<'_, A> {
    /// Schedules every strong client's first operation.
    pub(super) fn start_strong(&mut self) {
        for c in 0..self.strong.len() {
            self.schedule(0, Event::Strong(c));
        }
    }

    /// The next call of client `c` by its pattern, and its key. Under [`StrongPattern::Mixed`]
    /// client `c` follows the `c % 3`th of counter, lock and unique names, on keys of its own
    /// (those `≡ c % 3` modulo 3).
    fn strong_call(&mut self, c: usize, pattern: StrongPattern, keys: u32) -> (u32, StrongCall) {
        let e = c as u64;
        let (pattern, stride, offset) = match pattern {
            StrongPattern::Mixed => {
                let all = [
                    StrongPattern::Counter,
                    StrongPattern::Lock,
                    StrongPattern::Unique,
                ];
                (all[c % 3], 3, c as u32 % 3)
            }
            p => (p, 1, 0),
        };
        let fresh = |w: &mut Self| {
            w.range(Purpose::Strong, e, 0, u64::from(keys) - 1) as u32 * stride + offset
        };
        let value = Bytes::from(format!("c{c}.{}", self.strong[c].issued));
        let cl = &self.strong[c];
        match pattern {
            StrongPattern::Counter => match cl.version {
                None => {
                    let k = fresh(self);
                    (k, StrongCall::Get)
                }
                Some(v) => {
                    let cond = Cond::IfVersion(v);
                    (cl.key, StrongCall::Put { value, cond })
                }
            },
            StrongPattern::Lock => match cl.holding {
                Some((k, v)) => (
                    k,
                    StrongCall::Delete {
                        cond: Cond::IfVersion(v),
                    },
                ),
                None => {
                    let k = fresh(self);
                    let cond = Cond::IfAbsent;
                    (k, StrongCall::Put { value, cond })
                }
            },
            StrongPattern::Unique | StrongPattern::Mixed => {
                let k = fresh(self);
                if self.chance(Purpose::Strong, e, 0.3) {
                    (k, StrongCall::Get)
                } else if self.chance(Purpose::Strong, e, 0.1) {
                    (k, StrongCall::Delete { cond: Cond::Always })
                } else {
                    (
                        k,
                        StrongCall::Put {
                            value,
                            cond: Cond::IfAbsent,
                        },
                    )
                }
            }
        }
    }

    /// Client `c` issues its next operation, if chaos still runs and it has some left.
    pub(super) fn strong_next(&mut self, c: usize) {
        let Some(w) = self.scenario.strong.clone() else {
            return;
        };
        let cl = &self.strong[c];
        if cl.current.is_some() || cl.issued >= w.ops_per_client || self.now >= self.chaos_end {
            return;
        }
        let (k, call) = self.strong_call(c, w.pattern, w.keys);
        let planned = if w.entry.is_empty() {
            self.range(Purpose::Strong, c as u64, 0, self.slots.len() as u64 - 1) as usize
        } else {
            w.entry[self.range(Purpose::Strong, c as u64, 0, w.entry.len() as u64 - 1) as usize]
        };
        let node = self.entry(planned);
        let idx = self.history.strong.len();
        let key = strong_key(k);
        self.history.strong.push(StrongOp {
            key: key.to_vec(),
            client: c as u64,
            invoke_us: self.now,
            complete_us: None,
            call: to_lin_call(&call),
            result: StrongResult::Unknown,
        });
        let cl = &mut self.strong[c];
        cl.issued += 1;
        cl.key = k;
        cl.current = Some((idx, node));
        let id = STRONG_BASE + idx as u64;
        self.note(TraceCode::Invoke, |_| {
            format!("invoke strong#{idx} c{c} n{node} {call:?} sk{k}")
        });
        if self.slots[node].node.is_none() {
            return self.strong_done(c, None);
        }
        self.strong_pending.insert(idx, c);
        self.schedule(
            self.now + w.timeout_ms * 1000,
            Event::StrongTimeout { client: c, op: idx },
        );
        let input = Input::Client(Request {
            id,
            op: Op::Strong { key, call },
        });
        if self.slots[node].paused {
            self.slots[node].held.push(input);
        } else {
            self.feed(node, input);
        }
    }

    /// A node answered strong request `id`.
    pub(super) fn strong_reply(
        &mut self,
        id: u64,
        result: Result<Response, causeway::core::ReqError>,
    ) {
        let idx = (id - STRONG_BASE) as usize;
        let Some(c) = self.strong_pending.remove(&idx) else {
            return;
        };
        let outcome = match result {
            Ok(Response::Strong(o)) => Some(o),
            _ => None,
        };
        self.strong_done(c, outcome);
    }

    /// Strong requests in flight at node `n`, which crashed: no definite answer.
    pub(super) fn strong_crashed(&mut self, n: usize) {
        let lost: Vec<(usize, usize)> = self
            .strong_pending
            .iter()
            .filter(|(_, c)| self.strong[**c].current.is_some_and(|(_, at)| at == n))
            .map(|(i, c)| (*i, *c))
            .collect();
        for (i, c) in lost {
            self.strong_pending.remove(&i);
            self.strong_done(c, None);
        }
    }

    /// The client's wait for `op` ran out.
    pub(super) fn strong_timeout(&mut self, c: usize, op: usize) {
        if self.strong_pending.remove(&op).is_some() {
            self.strong_done(c, None);
        }
    }

    /// Records the end of client `c`'s current operation (`None`: no definite answer) and
    /// schedules its next.
    fn strong_done(&mut self, c: usize, outcome: Option<StrongOutcome>) {
        let Some((idx, _)) = self.strong[c].current.take() else {
            return;
        };
        let now = self.now;
        let definite = outcome.is_some();
        let op = &mut self.history.strong[idx];
        let cl = &mut self.strong[c];
        match outcome {
            Some(o) => {
                op.complete_us = Some(now);
                op.result = match o {
                    StrongOutcome::Read { value, version } => {
                        cl.version = Some(version);
                        StrongResult::Read {
                            value: value.map(|v| v.to_vec()),
                            version,
                        }
                    }
                    StrongOutcome::Written { version } => {
                        cl.version = None;
                        cl.holding = match (&op.call, cl.holding) {
                            (lin::StrongCall::Put { .. }, None) => Some((cl.key, version)),
                            _ => None,
                        };
                        StrongResult::Written { version }
                    }
                    StrongOutcome::PreconditionFailed { version } => {
                        cl.version = Some(version);
                        if cl.holding.is_some() {
                            cl.holding = None;
                        }
                        StrongResult::PreconditionFailed { version }
                    }
                };
            }
            None if !definite => {
                // An answerless write may or may not have happened: the client forgets what it
                // knew (a lock holder gives up on its lock).
                cl.version = None;
                cl.holding = None;
                op.complete_us = None;
                op.result = StrongResult::Unknown;
            }
            None => unreachable!("definite means an outcome"),
        }
        self.note(TraceCode::Complete, |w| {
            format!("complete strong#{idx} {:?}", w.history.strong[idx].result)
        });
        let Some(w) = &self.scenario.strong else {
            return;
        };
        let think = self.range(Purpose::Strong, c as u64, w.think_ms[0], w.think_ms[1]);
        self.schedule(self.now + think * 1000, Event::Strong(c));
    }

    /// Drops the reads that got no answer (they constrain nothing) before the checkers run.
    pub(super) fn finish_strong(&mut self) {
        self.history.strong.retain(|o| {
            !(matches!(o.call, lin::StrongCall::Get) && o.result == StrongResult::Unknown)
        });
    }
}
