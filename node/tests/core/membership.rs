//! View changes in the in-process world (issue 7): joins, removals and replication-factor
//! changes move partitions to their new replicas without losing a write, and causal contexts
//! from before a change stay valid after it.

use super::world::{World, addr, ctx_of, get, put, values};
use causeway::core::{
    Canary, Config, MemStorage, NodeId, Op, PeerMsg, Quorum, ReqError, Response, VersionVector,
    View,
};
use std::time::Duration;

const KEYS: usize = 300;

/// A world of `n` nodes with replication factor `rf` holding `KEYS` keys (`k{i}` = `v{i}`),
/// written through every node; returns the merged session context.
fn loaded(n: usize, rf: usize, canary: Option<Canary>) -> (World, VersionVector) {
    let mut cfg = Config::new(View::new((0..n).map(addr).collect(), rf).unwrap());
    cfg.canary = canary;
    cfg.handoff_batch = 16;
    let mut w = World::with_config(cfg, 11);
    let mut ctx = VersionVector::new();
    for i in 0..KEYS {
        let at = addr(i % n);
        let r = w.call(
            &at,
            put(&format!("k{i}"), &format!("v{i}"), &ctx, Quorum::All),
        );
        ctx.merge(&ctx_of(&r));
    }
    (w, ctx)
}

/// Starts `id` as a node outside the cluster that joins through `member`.
fn join(w: &mut World, id: &NodeId, member: &NodeId) {
    let mut cfg = w.config.clone();
    cfg.view = View::joining();
    cfg.join = Some(member.clone());
    w.start_with(id, MemStorage::new(), cfg);
}

/// Runs until every node is settled (nothing retained, nothing awaited) and all agree on the
/// view; panics after a minute of simulated time.
fn settle(w: &mut World) {
    for _ in 0..600 {
        w.run_for(Duration::from_millis(100));
        let epochs: std::collections::BTreeSet<u64> =
            w.nodes.values().map(|n| n.view().epoch).collect();
        let quiet = w.nodes.values().all(|n| {
            let h = n.status().handoff;
            h.retained.is_empty() && h.awaiting.is_empty()
        });
        if quiet && epochs.len() == 1 {
            return;
        }
    }
    let state: Vec<_> = w
        .nodes
        .values()
        .map(|n| (n.id().clone(), n.view().epoch, n.status().handoff))
        .collect();
    panic!("the cluster did not settle: {state:?}");
}

/// Every key reads back its value through every node, with the session's context (so each
/// read waits until its replica holds everything the session wrote).
fn assert_all_readable(w: &mut World, ctx: &VersionVector) {
    let ids: Vec<NodeId> = w.nodes.keys().cloned().collect();
    for i in 0..KEYS {
        let at = &ids[i % ids.len()];
        let r = w.call(at, get(&format!("k{i}"), ctx, Quorum::N(1)));
        assert_eq!(values(&r), vec![format!("v{i}")], "k{i} through {at}");
    }
}

/// Keys held by nodes that do not own them: what handoff left behind.
fn stray_keys(w: &World) -> usize {
    w.nodes
        .values()
        .map(|n| {
            (0..KEYS)
                .filter(|i| {
                    let k = format!("k{i}");
                    let p = n.view().partition_of(k.as_bytes());
                    !n.view().owns(n.id(), p) && n.local_state(k.as_bytes()).is_some()
                })
                .count()
        })
        .sum()
}

#[test]
fn joined_nodes_receive_their_partitions_and_old_owners_drop_them() {
    let (mut w, ctx) = loaded(2, 1, None);
    join(&mut w, &addr(2), &addr(0));
    settle(&mut w);
    join(&mut w, &addr(3), &addr(1));
    settle(&mut w);
    let view = w.nodes[&addr(0)].view().clone();
    assert_eq!(view.nodes.len(), 4);
    assert_eq!(view.shard_count(), 4);
    for id in [addr(2), addr(3)] {
        let held = (0..KEYS)
            .filter(|i| {
                w.nodes[&id]
                    .local_state(format!("k{i}").as_bytes())
                    .is_some()
            })
            .count();
        assert!(held > KEYS / 8, "{id} holds {held} keys after joining");
    }
    assert_eq!(stray_keys(&w), 0, "old owners dropped what they handed off");
    assert_all_readable(&mut w, &ctx);
}

#[test]
fn handoff_batches_of_large_values_stay_within_the_byte_budget() {
    let mut cfg = Config::new(View::new(vec![addr(0)], 1).unwrap());
    cfg.peer_buffer_bytes = 8 << 10;
    let mut w = World::with_config(cfg, 5);
    // ~10 keys per partition of 64: one key-count batch each would carry ~20 KiB.
    let value = "x".repeat(2 << 10);
    let mut ctx = VersionVector::new();
    for i in 0..600 {
        let r = w.call(&addr(0), put(&format!("k{i}"), &value, &ctx, Quorum::N(1)));
        ctx.merge(&ctx_of(&r));
    }
    join(&mut w, &addr(1), &addr(0));
    settle(&mut w);
    assert!(w.max_handoff_batch_bytes > 0, "a handoff ran");
    assert!(
        w.max_handoff_batch_bytes <= 8 << 10,
        "a batch carried {} bytes",
        w.max_handoff_batch_bytes
    );
    for i in 0..600 {
        let r = w.call(&addr(1), get(&format!("k{i}"), &ctx, Quorum::N(1)));
        assert_eq!(values(&r), vec![value.clone()], "k{i}");
    }
}

#[test]
fn removal_and_replication_change_keep_every_key() {
    let (mut w, ctx) = loaded(4, 1, None);
    let three: Vec<NodeId> = (0..3).map(addr).collect();
    let r = w.call(
        &addr(0),
        Op::ChangeView {
            nodes: three.clone(),
            repl_factor: None,
        },
    );
    assert!(
        matches!(r.result, Ok(Response::ViewChanged { .. })),
        "{r:?}"
    );
    settle(&mut w);
    let gone = (0..KEYS)
        .filter(|i| {
            w.nodes[&addr(3)]
                .local_state(format!("k{i}").as_bytes())
                .is_some()
        })
        .count();
    assert_eq!(gone, 0, "the removed node handed everything off");
    w.crash(&addr(3));
    assert_all_readable(&mut w, &ctx);
    let r = w.call(
        &addr(1),
        Op::ChangeView {
            nodes: three,
            repl_factor: Some(3),
        },
    );
    assert!(
        matches!(r.result, Ok(Response::ViewChanged { .. })),
        "{r:?}"
    );
    settle(&mut w);
    for id in (0..3).map(addr) {
        for i in 0..KEYS {
            let s = w.nodes[&id].local_state(format!("k{i}").as_bytes());
            assert!(s.is_some(), "k{i} on {id} with every node a replica");
        }
    }
    assert_all_readable(&mut w, &ctx);
}

/// A context from before the change names writes of the old owners. A new owner that has not
/// received the partition yet must not answer without them: it waits, and answers 503 if they
/// cannot arrive in time; once the handoff lands, the same read succeeds with the value.
#[test]
fn old_contexts_wait_for_the_handoff_never_answer_stale() {
    let (mut w, ctx) = loaded(2, 1, None);
    let mut cfg = w.config.clone();
    cfg.view = View::joining();
    w.start_with(&addr(2), MemStorage::new(), cfg);
    for i in 0..2 {
        w.cut(&addr(i), &addr(2), true);
    }
    let members = vec![addr(0), addr(1), addr(2)];
    let r = w.call(
        &addr(0),
        Op::ChangeView {
            nodes: members,
            repl_factor: None,
        },
    );
    let Ok(Response::ViewChanged { view }) = r.result else {
        panic!("view change failed: {r:?}");
    };
    // The new node learns the view, but no handoff batch reaches it.
    let views = vec![w.config.view.clone(), view.clone()];
    w.deliver(&addr(0), &addr(2), PeerMsg::Views { views });
    let key = (0..KEYS)
        .map(|i| format!("k{i}"))
        .find(|k| view.owns(&addr(2), view.partition_of(k.as_bytes())))
        .expect("the new node owns some key");
    let r = w.call(&addr(2), get(&key, &ctx, Quorum::N(1)));
    assert_eq!(
        r.result,
        Err(ReqError::Unsatisfiable),
        "never a stale answer"
    );
    let i: usize = key[1..].parse().unwrap();
    for i in 0..2 {
        w.cut(&addr(i), &addr(2), false);
    }
    // Before the handoff lands, a read without context goes through to the previous owner.
    assert!(!w.nodes[&addr(2)].status().handoff.awaiting.is_empty());
    let r = w.call(&addr(2), get(&key, &VersionVector::new(), Quorum::N(1)));
    assert_eq!(
        values(&r),
        vec![format!("v{i}")],
        "read through the old owner"
    );
    assert!(!w.nodes[&addr(2)].status().handoff.awaiting.is_empty());
    let id = w.submit(&addr(2), get(&key, &ctx, Quorum::N(1)));
    let r = w.wait(id, Duration::from_secs(10)).expect("an answer");
    assert_eq!(
        values(&r),
        vec![format!("v{i}")],
        "the handoff ended the wait"
    );
    settle(&mut w);
    assert_all_readable(&mut w, &ctx);
}

/// With lost messages during the handoff, a sender that drops a partition before its new
/// replica acknowledged it loses keys; the real rule (drop only after every acknowledgement)
/// loses none.
#[test]
fn dropping_before_the_new_owner_synced_loses_keys() {
    fn missing(canary: Option<Canary>) -> usize {
        let (mut w, _) = loaded(2, 1, canary);
        w.faults.drop = 0.3;
        join(&mut w, &addr(2), &addr(0));
        w.run_for(Duration::from_secs(20));
        w.faults.drop = 0.0;
        w.run_for(Duration::from_secs(20));
        (0..KEYS)
            .filter(|i| {
                let k = format!("k{i}");
                let owners = w.nodes[&addr(0)]
                    .view()
                    .owners(w.nodes[&addr(0)].view().partition_of(k.as_bytes()))
                    .to_vec();
                owners
                    .iter()
                    .all(|o| w.nodes[o].local_state(k.as_bytes()).is_none())
            })
            .count()
    }
    assert_eq!(missing(None), 0);
    assert!(
        missing(Some(Canary::DropBeforeSynced)) > 0,
        "the canary must lose keys"
    );
}

/// Four nodes in two shards with hinted handoff on; shard 1 (`addr(2)`, `addr(3)`) goes down
/// and 40 blind `w=1` writes to it are taken by `addr(0)` as hints. If `restart_fallback`, the
/// node holding the hints restarts while the shard is down. Returns the world, the keys with
/// the token of their write, and the hints accepted.
fn hinted(
    canary: Option<Canary>,
    restart_fallback: bool,
) -> (World, Vec<(String, VersionVector)>, u64) {
    let mut cfg = Config::new(View::new((0..4).map(addr).collect(), 2).unwrap());
    cfg.hinted_handoff = true;
    cfg.canary = canary;
    let mut w = World::with_config(cfg, 3);
    w.run_for(Duration::from_secs(2));
    let disks: Vec<_> = [addr(2), addr(3)]
        .iter()
        .map(|a| (a.clone(), w.crash(a)))
        .collect();
    w.run_for(Duration::from_secs(2));
    let view = w.config.view.clone();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("h{i}"))
        .filter(|k| view.shard_of_key(k.as_bytes()) == 1)
        .take(40)
        .collect();
    let mut written = Vec::new();
    for k in keys {
        let r = w.call(
            &addr(0),
            put(&k, &format!("v-{k}"), &VersionVector::new(), Quorum::N(1)),
        );
        written.push((k, ctx_of(&r)));
    }
    let accepted = w.nodes[&addr(0)].status().handoff.hints_accepted;
    if restart_fallback {
        let disk = w.crash(&addr(0));
        w.start(&addr(0), disk);
    }
    for (a, d) in disks {
        w.start(&a, d);
    }
    (w, written, accepted)
}

#[test]
fn hints_reach_the_replicas_when_they_return() {
    let (mut w, written, accepted) = hinted(None, true);
    assert_eq!(accepted, 40, "every blind w=1 write was taken as a hint");
    settle(&mut w);
    for (k, ctx) in &written {
        let r = w.call(&addr(1), get(k, ctx, Quorum::All));
        assert_eq!(
            values(&r),
            vec![format!("v-{k}")],
            "{k} after its shard returned"
        );
    }
    assert_eq!(
        w.nodes[&addr(0)].status().handoff.held_keys,
        0,
        "hints dropped once delivered"
    );
}

#[test]
fn hints_are_refused_for_writes_that_depend_on_the_partition_and_forgetting_them_loses_writes() {
    let (mut w, written, _) = hinted(None, false);
    // A write whose context names the partition's writes cannot be a hint.
    let (k, ctx) = written[0].clone();
    let disk = w.crash(&addr(2));
    let disk3 = w.crash(&addr(3));
    w.run_for(Duration::from_secs(2));
    let r = w.call(&addr(0), put(&k, "dependent", &ctx, Quorum::N(1)));
    assert!(matches!(r.result, Err(ReqError::Unavailable(_))), "{r:?}");
    w.start(&addr(2), disk);
    w.start(&addr(3), disk3);
    settle(&mut w);
    let (mut w, written, _) = hinted(Some(Canary::ForgetHints), true);
    settle(&mut w);
    let lost = written
        .iter()
        .filter(|(k, _)| {
            let r = w.call(&addr(1), get(k, &VersionVector::new(), Quorum::All));
            values(&r).is_empty()
        })
        .count();
    assert_eq!(lost, written.len(), "the canary forgets every hint");
}

/// Issue 18, defect 5: a join is installed only once the candidate answers as a Causeway node
/// that may join; an address nothing answers on is refused in bounded time and leaves no trace.
#[test]
fn join_admits_only_a_node_that_answers_as_a_joining_node() {
    let mut w = World::new(3, 3, 5);
    let epoch = w.nodes[&addr(0)].view().epoch;
    let silent = addr(9);
    let started = w.now;
    let r = w.call(
        &addr(0),
        Op::Join {
            node: silent.clone(),
        },
    );
    match &r.result {
        Err(ReqError::BadRequest(m)) => {
            assert!(
                m.contains("did not answer as a joining causeway node"),
                "{m}"
            )
        }
        other => panic!("a silent address was not refused: {other:?}"),
    }
    assert!(
        w.now.since(started) <= Duration::from_secs(3),
        "refused in bounded time"
    );
    assert_eq!(
        w.nodes[&addr(0)].view().epoch,
        epoch,
        "no view was installed"
    );
    let s = w.nodes[&addr(0)].status();
    assert!(!s.unacked.contains_key(&silent), "{:?}", s.unacked);
    let r = w.call(
        &addr(1),
        put("after", "v", &VersionVector::new(), Quorum::All),
    );
    assert!(r.result.is_ok(), "w=all still works: {:?}", r.result);

    // A node serving a cluster of its own is refused with a conflict.
    let mut own = w.config.clone();
    own.view = View::new(vec![addr(7)], 1).unwrap();
    w.start_with(&addr(7), MemStorage::new(), own);
    let r = w.call(&addr(0), Op::Join { node: addr(7) });
    assert!(
        matches!(r.result, Err(ReqError::Conflict(_))),
        "{:?}",
        r.result
    );

    // A node waiting to be added (in no view, asking no one) answers the probe and is taken.
    let mut waiting = w.config.clone();
    waiting.view = View::joining();
    w.start_with(&addr(3), MemStorage::new(), waiting);
    let r = w.call(&addr(0), Op::Join { node: addr(3) });
    match &r.result {
        Ok(Response::ViewChanged { view }) => assert!(view.nodes.contains(&addr(3))),
        other => panic!("a waiting node was not admitted: {other:?}"),
    }
    w.run_for(Duration::from_secs(2));
    assert!(
        w.nodes[&addr(3)].view().nodes.contains(&addr(3)),
        "it learned the view"
    );
}

/// Issue 18, defect 5: a member that never sent a single message is suspected after
/// `suspect_after` from when this node started expecting it, like one that went silent.
#[test]
fn members_never_heard_from_are_suspected() {
    let mut w = World::new(3, 3, 6);
    w.crash(&addr(2));
    w.run_for(Duration::from_millis(500));
    assert!(
        w.nodes[&addr(0)].status().suspects.is_empty(),
        "not before the timeout"
    );
    w.run_for(Duration::from_secs(2));
    for i in [0, 1] {
        assert_eq!(
            w.nodes[&addr(i)].status().suspects,
            vec![addr(2)],
            "at {}",
            addr(i)
        );
    }
}

/// Issue 18, defect 5: removing a node drops what its former peers kept about it.
#[test]
fn removal_drops_per_peer_state() {
    let mut w = World::new(3, 3, 7);
    w.run_for(Duration::from_millis(500));
    w.crash(&addr(2));
    for i in 0..20 {
        w.call(
            &addr(0),
            put(&format!("k{i}"), "v", &VersionVector::new(), Quorum::N(1)),
        );
    }
    assert!(
        w.nodes[&addr(0)]
            .status()
            .unacked
            .get(&addr(2))
            .is_some_and(|d| *d > 0)
    );
    let r = w.call(
        &addr(0),
        Op::ChangeView {
            nodes: vec![addr(0), addr(1)],
            repl_factor: Some(2),
        },
    );
    assert!(r.result.is_ok(), "{:?}", r.result);
    w.run_for(Duration::from_secs(3));
    for i in [0, 1] {
        let s = w.nodes[&addr(i)].status();
        assert!(
            !s.unacked.contains_key(&addr(2)),
            "{}: {:?}",
            addr(i),
            s.unacked
        );
        assert!(s.suspects.is_empty(), "{}: {:?}", addr(i), s.suspects);
    }
}

/// Duplicated, reordered handoff messages during a join, with batches of one key: a late copy
/// of an earlier batch's acknowledgement never counts for the batch in flight (taking it would
/// skip that batch, the new owner would refuse the next one and the stream would start over).
/// The join settles with every key readable, and batches sent again (an acknowledgement that
/// came later than the retry interval) stay a small fraction.
#[test]
fn duplicated_handoff_acks_never_skip_a_batch() {
    let mut cfg = Config::new(View::new((0..2).map(addr).collect(), 1).unwrap());
    cfg.handoff_batch = 1;
    let mut w = World::with_config(cfg, 11);
    let mut ctx = VersionVector::new();
    for i in 0..KEYS {
        let r = w.call(
            &addr(i % 2),
            put(&format!("k{i}"), &format!("v{i}"), &ctx, Quorum::All),
        );
        ctx.merge(&ctx_of(&r));
    }
    w.faults = super::world::Faults {
        drop: 0.0,
        dup: 0.5,
        jitter_ms: 30,
    };
    join(&mut w, &addr(2), &addr(0));
    settle(&mut w);
    w.faults = super::world::Faults::default();
    let (sent, received) = w.nodes.values().fold((0, 0), |(s, r), n| {
        let h = n.status().handoff;
        (s + h.keys_sent, r + h.keys_received)
    });
    assert!(received > 0, "a handoff ran");
    assert!(
        sent * 10 <= received * 11,
        "{sent} keys sent for {received} applied: streams started over"
    );
    assert_all_readable(&mut w, &ctx);
}
