//! The acceptor side of CASPaxos: per strong key, the highest ballot promised and the last
//! state accepted, kept in storage's metadata records under [`record_name`] (a namespace no
//! causal key, listing, Merkle tree, handoff or backup reads).
//!
//! Invariant: a record is written through storage in the turn that changes it and the driver
//! syncs it before that turn's promise or accepted message leaves (the messages go in the
//! Ready's ordinary lists, which follow the sync).

use super::{Ballot, StrongState};
use serde::{Deserialize, Serialize};

/// Prefix of the metadata records holding acceptor state; the rest of the name is the key in hex.
pub const RECORD_PREFIX: &str = "strong/";

/// One key's acceptor state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub promised: Ballot,
    pub accepted: Option<(Ballot, StrongState)>,
}

/// The metadata record name of `key`'s acceptor state.
pub fn record_name(key: &[u8]) -> String {
    let mut name = String::with_capacity(RECORD_PREFIX.len() + key.len() * 2);
    name.push_str(RECORD_PREFIX);
    for b in key {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// The answer to a prepare of `ballot`: `Ok` with the accepted state to report when the
/// promise is made (the record changed and must be stored), `Err` with the higher ballot
/// already promised otherwise.
pub fn prepare(rec: &mut Record, ballot: Ballot) -> Result<Option<(Ballot, StrongState)>, Ballot> {
    if ballot <= rec.promised {
        return Err(rec.promised);
    }
    rec.promised = ballot;
    Ok(rec.accepted.clone())
}

/// The answer to an accept of `state` at `ballot`: `Ok` once accepted (store the record),
/// `Err` with the higher ballot promised otherwise. Accepting at the promised ballot itself is
/// the normal case (the proposer's own prepare).
pub fn accept(rec: &mut Record, ballot: Ballot, state: StrongState) -> Result<(), Ballot> {
    if ballot < rec.promised {
        return Err(rec.promised);
    }
    rec.promised = ballot;
    rec.accepted = Some((ballot, state));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(counter: u64) -> Ballot {
        Ballot {
            counter,
            proposer: 7,
        }
    }

    #[test]
    fn a_promise_refuses_lower_ballots_and_reports_the_accepted_state() {
        let mut rec = Record::default();
        assert_eq!(prepare(&mut rec, b(2)), Ok(None));
        assert_eq!(prepare(&mut rec, b(2)), Err(b(2)));
        assert_eq!(accept(&mut rec, b(1), StrongState::default()), Err(b(2)));
        let s = StrongState {
            value: None,
            version: 3,
        };
        assert_eq!(accept(&mut rec, b(2), s.clone()), Ok(()));
        assert_eq!(prepare(&mut rec, b(3)), Ok(Some((b(2), s))));
    }

    #[test]
    fn record_names_are_prefixed_hex() {
        assert_eq!(record_name(b"a\x00"), "strong/6100");
    }
}
