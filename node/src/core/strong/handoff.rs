//! Handing a partition's strong keys to a new replica set (freeze and copy).
//!
//! A partition's acceptors form a **configuration**: its replica set over a run of consecutive
//! views in which that set did not change, named by the epoch of the run's first view. Each
//! node keeps, durably and per partition, a [`PartCfg`]: the configuration it is an acceptor of
//! (`active`) and whether that configuration was sealed (`sealed_for`).
//!
//! A replica of a new configuration `new` becomes an acceptor only after it has **sealed** a
//! majority of the previous configuration `old`: each sealed acceptor durably stops voting in
//! `old` (it never activates any configuration below `new` either) and hands over its records
//! of the partition. The new replica merges them ([`merge`]: highest promise, accepted state
//! with the highest ballot), stores the result and its new `active` durably, and only then
//! votes. Two majorities never decide independently: once a majority of `old` is sealed no
//! majority of `old` can vote any more, and every decision of `old` was accepted by a majority
//! that intersects the sealed majority, so each new acceptor starts with that decision or a
//! state derived from it.

use super::Ballot;
use super::acceptor::Record;
use crate::core::ring::Epoch;
use serde::{Deserialize, Serialize};

/// A node's acceptor standing for one partition. Epoch 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartCfg {
    /// The configuration this node is an acceptor of.
    pub active: Epoch,
    /// When non-zero: `active` was sealed for its successor configuration `sealed_for` (this
    /// node votes no more in it).
    pub sealed_for: Epoch,
}

impl PartCfg {
    /// Whether this node votes in configuration `config`.
    pub fn votes_in(&self, config: Epoch) -> bool {
        config != 0 && self.active == config && self.sealed_for == 0
    }

    /// Whether this node may still become an acceptor of configuration `config` (a newer one
    /// than it is, and not older than the one its configuration was sealed for).
    pub fn may_activate(&self, config: Epoch) -> bool {
        self.active < config && self.sealed_for <= config
    }
}

/// Seals `cfg`, an acceptor of `old`, for its successor `new`: `Some(changed)` when this node
/// may hand over its records (`changed`: the standing was updated, store it and sync before the
/// records leave), `None` when it may not (yet). It hands over only as an acceptor of `old`
/// (sealed now or before for `new`) or of `new` itself (whose records hold a majority of
/// `old`'s); a member of `old` that has not finished its own handoff into `old` answers once it
/// has, since its records may lack `old`'s decisions.
pub fn seal(cfg: &mut PartCfg, old: Epoch, new: Epoch) -> Option<bool> {
    if cfg.active == new || (cfg.active == old && cfg.sealed_for == new) {
        return Some(false);
    }
    if cfg.active != old || cfg.sealed_for != 0 {
        return None;
    }
    cfg.sealed_for = new;
    Some(true)
}

/// Folds `other` into `into`: the higher promise, and the accepted state with the higher
/// ballot. Both are states some acceptor of the key really held, so a proposer that reads the
/// merge sees what it would have seen at one of them, or newer.
pub fn merge(into: &mut Record, other: &Record) {
    into.promised = into.promised.max(other.promised);
    let ballot = |r: &Record| r.accepted.as_ref().map_or(Ballot::ZERO, |(b, _)| *b);
    if other.accepted.is_some() && (into.accepted.is_none() || ballot(other) > ballot(into)) {
        into.accepted = other.accepted.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::strong::StrongState;

    #[test]
    fn sealing_is_idempotent_for_one_successor_and_needs_an_acceptor_of_the_old_configuration() {
        let mut c = PartCfg {
            active: 1,
            sealed_for: 0,
        };
        assert!(c.votes_in(1));
        assert_eq!(seal(&mut c, 1, 5), Some(true));
        assert!(!c.votes_in(1));
        assert_eq!(seal(&mut c, 1, 5), Some(false));
        assert_eq!(seal(&mut c, 1, 3), None, "sealed for another successor");
        assert!(!c.may_activate(3));
        assert!(c.may_activate(5));
        // A member that never became an acceptor of `old` hands nothing over (yet).
        let mut fresh = PartCfg::default();
        assert_eq!(seal(&mut fresh, 5, 9), None);
        assert_eq!(fresh, PartCfg::default());
        // A node already active in `new` hands over what it holds.
        let mut done = PartCfg {
            active: 9,
            sealed_for: 0,
        };
        assert_eq!(seal(&mut done, 5, 9), Some(false));
        assert!(done.votes_in(9));
        // A node active in a configuration the requester does not know hands nothing over.
        let mut ahead = PartCfg {
            active: 7,
            sealed_for: 0,
        };
        assert_eq!(seal(&mut ahead, 5, 9), None);
    }

    #[test]
    fn merge_keeps_the_highest_promise_and_ballot() {
        let b = |counter| Ballot {
            counter,
            proposer: 1,
        };
        let st = |version| StrongState {
            value: None,
            version,
            recent: Vec::new(),
        };
        let mut r = Record {
            promised: b(4),
            accepted: Some((b(3), st(2))),
        };
        merge(
            &mut r,
            &Record {
                promised: b(9),
                accepted: Some((b(2), st(1))),
            },
        );
        assert_eq!(r.promised, b(9));
        assert_eq!(r.accepted, Some((b(3), st(2))));
        merge(
            &mut r,
            &Record {
                promised: b(5),
                accepted: Some((b(5), st(3))),
            },
        );
        assert_eq!(r.accepted, Some((b(5), st(3))));
    }
}
