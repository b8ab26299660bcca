//! The proposer side of CASPaxos: one [`Round`] per client operation in flight at this node.
//!
//! A round prepares its ballot at every acceptor of the key, takes the accepted state with the
//! highest ballot among a majority of promises, applies the operation and asks every acceptor to
//! accept the result; a majority of accepts decides it. A refusal naming a higher ballot makes
//! the round start over above it (after a jittered pause, so contending proposers do not starve
//! each other); the node answers 503 once the round's deadline passes.

use super::{Ballot, StrongCall, StrongOutcome, StrongState, apply};
use crate::core::node::Origin;
use crate::core::ring::{Epoch, NodeId};
use crate::core::time::Time;
use bytes::Bytes;
use std::collections::BTreeSet;

/// Where a round stands.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for promises; `best` is the accepted state with the highest ballot seen so far.
    Prepare {
        promised: BTreeSet<NodeId>,
        best: Option<(Ballot, StrongState)>,
    },
    /// Waiting for accepts of `state`; `outcome` is the answer once a majority accepted.
    Accept {
        state: StrongState,
        outcome: StrongOutcome,
        accepted: BTreeSet<NodeId>,
    },
    /// Refused by a higher ballot: start over at `retry_at`.
    Backoff { retry_at: Time },
    /// Behind an earlier round of the same key on this node: starts when that one ends. A
    /// node runs at most one round per key at a time, so its own clients never duel each
    /// other's ballots (16 local CAS clients on one key would otherwise livelock into 503s).
    Queued,
}

/// One client operation being decided.
#[derive(Debug)]
pub struct Round {
    pub origin: Origin,
    pub key: Bytes,
    pub call: StrongCall,
    pub ballot: Ballot,
    /// The configuration of the key's partition this attempt addresses, its acceptors (the
    /// configuration's replicas) and how many make a majority. Each attempt takes them anew
    /// from the node's newest view.
    pub config: Epoch,
    pub acceptors: Vec<NodeId>,
    pub need: usize,
    pub phase: Phase,
    pub deadline: Time,
    /// When the current attempt started (an attempt that gathers no majority of promises
    /// within a while starts over: its acceptors may have been handing over).
    pub started: Time,
    /// The highest ballot any acceptor reported: the next attempt goes above it.
    pub highest_seen: Ballot,
    /// Attempts started (for the backoff and the 503's detail).
    pub attempts: u32,
    /// This operation's write tag (unique per operation; see [`StrongState::recent`]).
    pub tag: u64,
    /// Once accepts of a write were sent: the version the write was applied to. A later
    /// attempt must not apply it again if it took effect.
    pub applied_to: Option<u64>,
}

/// What a round needs done after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet.
    Wait,
    /// A majority promised: send accepts of this state.
    SendAccept(StrongState),
    /// A retried write cannot tell whether its earlier accepts took effect: indeterminate.
    Indeterminate,
    /// A majority accepted: answer the client.
    Decided(StrongOutcome),
    /// Refused by a higher ballot: the round backs off.
    Refused,
}

impl Round {
    /// Records a promise (`Ok(accepted state)`) or refusal (`Err(promised ballot)`) from `from`
    /// for `ballot`. Replies for an older ballot or from a non-acceptor are ignored.
    pub fn on_promise(
        &mut self,
        from: &NodeId,
        ballot: Ballot,
        reply: Result<Option<(Ballot, StrongState)>, Ballot>,
    ) -> Step {
        if ballot != self.ballot || !self.acceptors.contains(from) {
            return Step::Wait;
        }
        let Phase::Prepare { promised, best } = &mut self.phase else {
            return Step::Wait;
        };
        match reply {
            Err(higher) => {
                self.highest_seen = self.highest_seen.max(higher);
                Step::Refused
            }
            Ok(acc) => {
                if let Some((b, s)) = acc
                    && best.as_ref().is_none_or(|(bb, _)| b > *bb)
                {
                    *best = Some((b, s));
                }
                promised.insert(from.clone());
                if promised.len() < self.need {
                    return Step::Wait;
                }
                let current = best.take().map(|(_, s)| s).unwrap_or_default();
                let mine = current.recent.iter().find(|(t, _)| *t == self.tag);
                let (state, outcome) = match (self.applied_to, mine) {
                    // The earlier attempt's write took effect: finish with the state as it is.
                    (Some(_), Some(&(_, version))) => {
                        (current.clone(), StrongOutcome::Written { version })
                    }
                    // Writes since the one this write was applied to may have pushed its tag
                    // out of the recent list: it cannot tell whether it took effect.
                    (Some(base), None)
                        if current.version.saturating_sub(base) >= super::RECENT as u64 =>
                    {
                        return Step::Indeterminate;
                    }
                    _ => apply(&self.call, &current, self.tag),
                };
                if !matches!(self.call, StrongCall::Get) && self.applied_to.is_none() {
                    self.applied_to = Some(current.version);
                }
                self.phase = Phase::Accept {
                    state: state.clone(),
                    outcome,
                    accepted: BTreeSet::new(),
                };
                Step::SendAccept(state)
            }
        }
    }

    /// Records an accept (`Ok`) or refusal (`Err(promised ballot)`) from `from` for `ballot`.
    pub fn on_accepted(
        &mut self,
        from: &NodeId,
        ballot: Ballot,
        reply: Result<(), Ballot>,
    ) -> Step {
        if ballot != self.ballot || !self.acceptors.contains(from) {
            return Step::Wait;
        }
        let Phase::Accept {
            outcome, accepted, ..
        } = &mut self.phase
        else {
            return Step::Wait;
        };
        match reply {
            Err(higher) => {
                self.highest_seen = self.highest_seen.max(higher);
                Step::Refused
            }
            Ok(()) => {
                accepted.insert(from.clone());
                if accepted.len() >= self.need {
                    Step::Decided(outcome.clone())
                } else {
                    Step::Wait
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::strong::Cond;

    fn round() -> Round {
        Round {
            origin: Origin::Client(1),
            key: Bytes::from_static(b"k"),
            call: StrongCall::Put {
                value: Bytes::from_static(b"v"),
                cond: Cond::IfVersion(4),
            },
            ballot: Ballot {
                counter: 5,
                proposer: 1,
            },
            config: 1,
            acceptors: vec!["a".into(), "b".into(), "c".into()],
            need: 2,
            phase: Phase::Prepare {
                promised: BTreeSet::new(),
                best: None,
            },
            deadline: Time::ZERO,
            started: Time::ZERO,
            highest_seen: Ballot::ZERO,
            attempts: 1,
            tag: 77,
            applied_to: None,
        }
    }

    fn st(version: u64) -> StrongState {
        StrongState {
            value: None,
            version,
            recent: Vec::new(),
        }
    }

    #[test]
    fn the_highest_accepted_state_of_a_majority_is_the_one_changed() {
        let mut r = round();
        let b = r.ballot;
        let low = Ballot {
            counter: 1,
            proposer: 9,
        };
        let high = Ballot {
            counter: 3,
            proposer: 0,
        };
        assert_eq!(
            r.on_promise(&"a".into(), b, Ok(Some((high, st(4))))),
            Step::Wait
        );
        // A duplicate promise does not make a majority.
        assert_eq!(r.on_promise(&"a".into(), b, Ok(None)), Step::Wait);
        let want = StrongState {
            value: Some(Bytes::from_static(b"v")),
            version: 5,
            recent: vec![(77, 5)],
        };
        let step = r.on_promise(&"b".into(), b, Ok(Some((low, st(2)))));
        assert_eq!(step, Step::SendAccept(want));
        assert_eq!(r.on_accepted(&"c".into(), b, Ok(())), Step::Wait);
        assert_eq!(r.on_accepted(&"c".into(), b, Ok(())), Step::Wait);
        assert_eq!(
            r.on_accepted(&"a".into(), b, Ok(())),
            Step::Decided(StrongOutcome::Written { version: 5 })
        );
    }

    #[test]
    fn a_refusal_records_the_higher_ballot_and_stale_replies_are_ignored() {
        let mut r = round();
        let high = Ballot {
            counter: 9,
            proposer: 2,
        };
        let stale = Ballot {
            counter: 4,
            proposer: 1,
        };
        assert_eq!(r.on_promise(&"a".into(), stale, Err(high)), Step::Wait);
        assert_eq!(r.on_promise(&"x".into(), r.ballot, Ok(None)), Step::Wait);
        assert_eq!(
            r.on_promise(&"a".into(), r.ballot, Err(high)),
            Step::Refused
        );
        assert_eq!(r.highest_seen, high);
    }
}
