//! Strong keys across a view change (issue 16): a moved partition's new replicas copy the
//! acceptor records of a sealed majority of the old ones before they vote, so every strong key
//! keeps its value and version, and compare-and-set carries on from it.

use super::world::{World, addr};
use bytes::Bytes;
use causeway::core::strong::{Cond, StrongCall, StrongOutcome};
use causeway::core::{Canary, Config, MemStorage, NodeId, Op, Response, View};
use std::time::Duration;

const KEYS: usize = 40;

fn strong(w: &mut World, at: &NodeId, key: &str, call: StrongCall) -> StrongOutcome {
    let op = Op::Strong {
        key: Bytes::from(key.to_string()),
        call,
    };
    match w.call(at, op).result {
        Ok(Response::Strong(o)) => o,
        other => panic!("strong op on {key} at {at}: {other:?}"),
    }
}

fn put(value: &str, version: u64) -> StrongCall {
    StrongCall::Put {
        value: Bytes::from(value.to_string()),
        cond: Cond::IfVersion(version),
    }
}

/// Writes versions 1 and 2 of `KEYS` strong keys on a 2-node cluster with replication factor
/// `rf`, joins a third node, and returns the keys whose partition moved and how many keys lost
/// their state (read through the joined node after the change).
fn join_and_count_lost(rf: usize, canary: Option<Canary>) -> (usize, usize) {
    let mut cfg = Config::new(View::new(vec![addr(0), addr(1)], rf).unwrap());
    cfg.canary = canary;
    let mut w = World::with_config(cfg, 5);
    for i in 0..KEYS {
        let at = addr(i % 2);
        let key = format!("s{i}");
        assert_eq!(
            strong(&mut w, &at, &key, put("a", 0)),
            StrongOutcome::Written { version: 1 }
        );
        assert_eq!(
            strong(&mut w, &at, &key, put("b", 1)),
            StrongOutcome::Written { version: 2 }
        );
    }
    let before = w.nodes[&addr(0)].view().clone();
    let mut jcfg = w.config.clone();
    jcfg.view = View::joining();
    jcfg.join = Some(addr(0));
    w.start_with(&addr(2), MemStorage::new(), jcfg);
    w.run_for(Duration::from_secs(10));
    let after = w.nodes[&addr(0)].view().clone();
    assert_eq!(after.nodes.len(), 3, "the node joined");
    let moved = (0..KEYS)
        .filter(|i| {
            let p = before.partition_of(format!("s{i}").as_bytes());
            let mut a = before.owners(p).to_vec();
            let mut b = after.owners(p).to_vec();
            a.sort();
            b.sort();
            a != b
        })
        .count();
    let mut lost = 0;
    for i in 0..KEYS {
        let key = format!("s{i}");
        let read = strong(&mut w, &addr(2), &key, StrongCall::Get);
        if read
            != (StrongOutcome::Read {
                value: Some(Bytes::from_static(b"b")),
                version: 2,
            })
        {
            lost += 1;
            continue;
        }
        // Compare-and-set continues from the handed-over version.
        assert_eq!(
            strong(&mut w, &addr(i % 3), &key, put("c", 2)),
            StrongOutcome::Written { version: 3 }
        );
    }
    (moved, lost)
}

#[test]
fn strong_keys_keep_their_state_across_a_view_change_that_moves_their_partition() {
    for rf in [1, 2] {
        let (moved, lost) = join_and_count_lost(rf, None);
        assert!(
            moved > KEYS / 4,
            "rf {rf}: only {moved} of {KEYS} keys moved"
        );
        assert_eq!(lost, 0, "rf {rf}: keys lost their state in the handoff");
    }
}

#[test]
fn new_replicas_that_vote_without_the_copy_lose_decided_state() {
    // With rf 1 a moved partition's new configuration is the joined node alone.
    let (moved, lost) = join_and_count_lost(1, Some(Canary::HandoffWithoutCopy));
    assert!(moved > 0);
    assert!(lost > 0, "the canary lost nothing: the test cannot tell");
}
