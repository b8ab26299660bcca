//! Strong keys: linearizable per-key reads, writes and compare-and-set by CASPaxos.
//!
//! Each strong key is one register whose state is a [`StrongState`] (value and version). Every
//! operation is one round of single-decree Paxos over the replicas of the key's partition: the
//! proposer (`proposer.rs`) prepares a [`Ballot`], takes the accepted state with the highest
//! ballot from a majority of promises, applies the operation's change function ([`apply`]) and
//! has a majority accept the result. A read applies the identity, so it is a full round too.
//! Acceptors (`acceptor.rs`) keep their promise and accepted state durable (synced) before any
//! promise or accepted message leaves.
//!
//! Who may act as an acceptor (`docs/strong-keys.md`): a replica of the key's partition in the
//! configuration the message names, once it holds that configuration's state (`handoff.rs`:
//! the partition's first configuration starts with it; a later one copies it from a sealed
//! majority of the previous one), until it is sealed for the next, and whose acceptor identity
//! no peer knows under another id (an amnesiac, wiped node never votes again).

pub mod acceptor;
pub mod handoff;
pub mod proposer;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Paxos ballot: ordered by `counter`, then by the proposer's actor id, so two proposers
/// never share one. `Ballot::ZERO` is below every ballot a proposer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ballot {
    pub counter: u64,
    /// The proposer's actor (node hash, epoch, incarnation packed), unique per incarnation.
    pub proposer: u64,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        proposer: 0,
    };
}

/// A strong key's state. A never-written key is `(None, 0)`; each successful write adds one to
/// `version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrongState {
    pub value: Option<Bytes>,
    pub version: u64,
    /// The tags of the last [`RECENT`] writes with the versions they made, newest last: a
    /// proposer that retries after sending accepts finds here whether its write already took
    /// effect (so no write is applied twice).
    #[serde(default)]
    pub recent: Vec<(u64, u64)>,
}

/// How many recent write tags a state keeps.
pub const RECENT: usize = 8;

/// A write's precondition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    Always,
    /// The current version is exactly this one (`If-Match`).
    IfVersion(u64),
    /// The key holds no value (`If-None-Match: *`).
    IfAbsent,
}

/// What a client asks of a strong key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrongCall {
    Get,
    Put { value: Bytes, cond: Cond },
    Delete { cond: Cond },
}

impl StrongCall {
    /// The value a put writes.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            StrongCall::Put { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// The definite outcome of a strong operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrongOutcome {
    Read { value: Option<Bytes>, version: u64 },
    Written { version: u64 },
    PreconditionFailed { version: u64 },
}

/// The change function of a round: the state to have accepted and the answer to give.
/// Reads and failed preconditions leave the state as it is.
pub fn apply(call: &StrongCall, state: &StrongState, tag: u64) -> (StrongState, StrongOutcome) {
    let holds = |cond: &Cond| match cond {
        Cond::Always => true,
        Cond::IfVersion(v) => state.version == *v,
        Cond::IfAbsent => state.value.is_none(),
    };
    let write = |value: Option<Bytes>| {
        let version = state.version + 1;
        let mut recent = state.recent.clone();
        recent.push((tag, version));
        if recent.len() > RECENT {
            recent.remove(0);
        }
        let next = StrongState {
            value,
            version,
            recent,
        };
        (next, StrongOutcome::Written { version })
    };
    let refuse = || {
        let version = state.version;
        (state.clone(), StrongOutcome::PreconditionFailed { version })
    };
    match call {
        StrongCall::Get => {
            let read = StrongOutcome::Read {
                value: state.value.clone(),
                version: state.version,
            };
            (state.clone(), read)
        }
        StrongCall::Put { value, cond } if holds(cond) => write(Some(value.clone())),
        StrongCall::Delete { cond } if holds(cond) => write(None),
        _ => refuse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(value: Option<&str>, version: u64) -> StrongState {
        StrongState {
            value: value.map(|v| Bytes::from(v.to_string())),
            version,
            recent: Vec::new(),
        }
    }

    #[test]
    fn writes_count_versions_and_preconditions_leave_the_state() {
        let put = |cond| StrongCall::Put {
            value: Bytes::from_static(b"x"),
            cond,
        };
        assert_eq!(
            apply(&put(Cond::Always), &st(None, 0), 9),
            (
                StrongState {
                    recent: vec![(9, 1)],
                    ..st(Some("x"), 1)
                },
                StrongOutcome::Written { version: 1 }
            )
        );
        assert_eq!(
            apply(&put(Cond::IfVersion(2)), &st(Some("a"), 3), 9),
            (
                st(Some("a"), 3),
                StrongOutcome::PreconditionFailed { version: 3 }
            )
        );
        assert_eq!(
            apply(&put(Cond::IfAbsent), &st(None, 4), 9).1,
            StrongOutcome::Written { version: 5 }
        );
        let del = StrongCall::Delete { cond: Cond::Always };
        assert_eq!(apply(&del, &st(None, 5), 9).0.version, 6);
        assert_eq!(
            apply(&StrongCall::Get, &st(Some("a"), 2), 9).1,
            StrongOutcome::Read {
                value: Some(Bytes::from_static(b"a")),
                version: 2
            }
        );
    }

    #[test]
    fn ballots_order_by_counter_then_proposer() {
        let b = |counter, proposer| Ballot { counter, proposer };
        assert!(b(1, 9) < b(2, 0));
        assert!(b(2, 1) < b(2, 3));
        assert!(Ballot::ZERO < b(1, 0));
    }
}
