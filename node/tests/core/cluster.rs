//! Multi-node behaviour of the core in the in-process test world (issue 2 acceptance).

use super::world::{Faults, World, addr, ctx_of, del, get, put, values};
use causeway::core::ring::node_hash;
use causeway::core::{
    Config, Identity, Input, MemStorage, Node, NodeId, PeerMsg, ReqError, Request, Response,
    SyncMode, Time, VersionSet, VersionVector, View,
};
use causeway::core::{Quorum, Reply};
use std::time::Duration;

/// Six nodes, replication factor 3: two shards {0,1,2} and {3,4,5}.
fn six() -> World {
    World::new(6, 3, 7)
}

/// A key stored by the shard of `addr(owner_index)`.
fn key_in_shard_of(w: &World, owner: usize) -> String {
    let view = &w.config.view;
    let shard = view.shard_of_node(&addr(owner)).unwrap();
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| view.shard_of_key(k.as_bytes()) == shard)
        .unwrap()
}

/// Cuts replication from node 0 to node 2 (both replicas of shard 0), writes "new" through node 0
/// and returns the key and the write's token: node 2 lags behind that token.
fn write_node_2_misses(w: &mut World) -> (String, VersionVector) {
    let key = key_in_shard_of(w, 0);
    w.cut(&addr(0), &addr(2), true);
    let wr = w.call(
        &addr(0),
        put(&key, "new", &VersionVector::new(), Quorum::N(1)),
    );
    (key, ctx_of(&wr))
}

#[test]
fn put_through_non_owner_is_proxied_and_readable_everywhere() {
    let mut w = six();
    let key = key_in_shard_of(&w, 0);
    let r = w.call(
        &addr(4),
        put(&key, "v1", &VersionVector::new(), Quorum::N(1)),
    );
    let owners = w.config.view.shard_members(0).to_vec();
    assert!(
        owners.contains(&r.served_by),
        "served by a replica, not the proxy: {}",
        r.served_by
    );
    assert_ne!(r.served_by, addr(4));
    let ctx = ctx_of(&r);
    for i in 0..6 {
        let r = w.call(&addr(i), get(&key, &ctx, Quorum::N(1)));
        assert_eq!(values(&r), vec!["v1"], "read through {}", addr(i));
    }
    w.run_for(Duration::from_secs(1));
    let states: Vec<VersionSet> = owners
        .iter()
        .map(|o| w.nodes[o].local_state(key.as_bytes()).unwrap())
        .collect();
    assert!(
        states.windows(2).all(|p| p[0] == p[1]),
        "replicas converge: {states:?}"
    );
    for n in w.config.view.shard_members(1).to_vec() {
        assert!(
            w.nodes[&n].local_state(key.as_bytes()).is_none(),
            "other shard holds nothing"
        );
    }
}

#[test]
fn concurrent_writes_become_siblings_and_merged_context_resolves_them() {
    let mut w = six();
    let key = key_in_shard_of(&w, 0);
    let a = w.call(
        &addr(0),
        put(&key, "from-a", &VersionVector::new(), Quorum::N(1)),
    );
    let b = w.call(
        &addr(1),
        put(&key, "from-b", &VersionVector::new(), Quorum::N(1)),
    );
    let mut merged = ctx_of(&a);
    merged.merge(&ctx_of(&b));
    let r = w.call(&addr(2), get(&key, &merged, Quorum::N(1)));
    let mut vals = values(&r);
    vals.sort();
    assert_eq!(vals, vec!["from-a", "from-b"]);
    let resolved = w.call(
        &addr(5),
        put(&key, "resolved", &ctx_of(&r), Quorum::Majority),
    );
    let r = w.call(&addr(1), get(&key, &ctx_of(&resolved), Quorum::All));
    assert_eq!(values(&r), vec!["resolved"]);
}

#[test]
fn write_with_partial_context_keeps_uncovered_sibling() {
    let mut w = six();
    let key = key_in_shard_of(&w, 0);
    let a = w.call(&addr(0), put(&key, "a", &VersionVector::new(), Quorum::All));
    let _b = w.call(&addr(1), put(&key, "b", &VersionVector::new(), Quorum::All));
    // Only a's context: b stays as a sibling of the new write.
    let c = w.call(&addr(0), put(&key, "c", &ctx_of(&a), Quorum::All));
    let r = w.call(&addr(2), get(&key, &ctx_of(&c), Quorum::N(1)));
    let mut vals = values(&r);
    vals.sort();
    assert!(
        vals == vec!["b", "c"] || vals == vec!["c"],
        "a must be gone: {vals:?}"
    );
    assert!(!vals.contains(&"a".to_string()));
}

#[test]
fn read_waits_for_causal_context_then_succeeds() {
    let mut w = six();
    let (key, ctx) = write_node_2_misses(&mut w);
    let id = w.submit(&addr(2), get(&key, &ctx, Quorum::N(1)));
    w.run_for(Duration::from_millis(500));
    assert!(
        !w.replies.contains_key(&id),
        "the lagging replica must wait, not answer stale"
    );
    w.cut(&addr(0), &addr(2), false);
    let r = w
        .wait(id, Duration::from_secs(1))
        .expect("answers once replication delivers");
    assert_eq!(r.served_by, addr(2));
    assert_eq!(values(&r), vec!["new"]);
}

#[test]
fn read_that_cannot_be_satisfied_answers_503_after_causal_wait() {
    let mut w = six();
    let (key, ctx) = write_node_2_misses(&mut w);
    let start = w.now;
    let r = w.call(&addr(2), get(&key, &ctx, Quorum::N(1)));
    assert_eq!(r.result, Err(ReqError::Unsatisfiable));
    let waited = w.now.since(start);
    assert!(
        waited >= w.config.causal_wait
            && waited < w.config.causal_wait + Duration::from_millis(200),
        "{waited:?}"
    );
}

/// A write supersedes what its context's writes superseded, transitively: A, then a delete of
/// A, then B with the delete in its context. A replica that has not applied the delete must not
/// apply B next to A; it waits for the delete (or answers 503), like a read.
#[test]
fn write_waits_for_the_writes_its_context_names() {
    let mut w = six();
    let key = key_in_shard_of(&w, 0);
    let a = w.call(&addr(0), put(&key, "A", &VersionVector::new(), Quorum::All));
    w.cut(&addr(0), &addr(2), true);
    let d = w.call(&addr(0), del(&key, &ctx_of(&a)));
    let id = w.submit(&addr(2), put(&key, "B", &ctx_of(&d), Quorum::N(1)));
    w.run_for(Duration::from_millis(500));
    assert!(!w.replies.contains_key(&id), "B waits for the delete");
    let before = w.nodes[&addr(2)].local_state(key.as_bytes()).unwrap();
    assert_eq!(before.versions().len(), 1, "A alone, B not applied yet");
    w.cut(&addr(0), &addr(2), false);
    let b = w
        .wait(id, Duration::from_secs(2))
        .expect("B applies once the delete arrives");
    let r = w.call(&addr(2), get(&key, &ctx_of(&b), Quorum::N(1)));
    assert_eq!(values(&r), vec!["B"]);
    // Cut for good: the write is refused (it never applied), not applied stale.
    w.cut(&addr(0), &addr(1), true);
    let d2 = w.call(&addr(0), del(&key, &ctx_of(&r)));
    let refused = w.call(&addr(1), put(&key, "C", &ctx_of(&d2), Quorum::N(1)));
    assert_eq!(refused.result, Err(ReqError::Unsatisfiable));
}

/// A node whose clock steps back a minute still times out a causal wait after `causal_wait` of
/// elapsed time: timers follow elapsed time, not the clock's value.
#[test]
fn clock_stepping_back_does_not_stall_timers() {
    let mut w = six();
    let (key, ctx) = write_node_2_misses(&mut w);
    let id = w.submit(&addr(2), get(&key, &ctx, Quorum::N(1)));
    w.run_for(Duration::from_millis(100));
    w.skew.insert(addr(2), -60_000_000);
    let start = w.now;
    let r = w
        .wait(id, Duration::from_secs(10))
        .expect("answers within the causal wait");
    assert_eq!(r.result, Err(ReqError::Unsatisfiable));
    assert!(
        w.now.since(start) < w.config.causal_wait,
        "{:?}",
        w.now.since(start)
    );
}

#[test]
fn proxied_read_fails_over_to_a_replica_that_satisfies_the_context() {
    let mut w = six();
    let key = key_in_shard_of(&w, 0);
    let members = w.config.view.shard_members(0).to_vec();
    // The replica node 4 tries first lags: the writer's replication to it is cut.
    let first = members[node_hash(&addr(4)) as usize % members.len()].clone();
    let writer = members.iter().find(|m| **m != first).unwrap().clone();
    w.cut(&writer, &first, true);
    let wr = w.call(&writer, put(&key, "x", &VersionVector::new(), Quorum::N(2)));
    let r = w.call(&addr(4), get(&key, &ctx_of(&wr), Quorum::N(1)));
    assert_eq!(values(&r), vec!["x"]);
    assert_ne!(r.served_by, first, "the lagging replica must not answer");
    assert_eq!(w.nodes[&addr(4)].status().failovers, 1);
}

/// The first message of `kind` in what `node` has to send.
fn sent(node: &mut Node<MemStorage>, kind: &str) -> PeerMsg {
    let ready = node.take_ready();
    ready
        .collect(node.storage_mut())
        .messages
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} sent"))
}

#[test]
fn a_restarted_proxy_ignores_answers_to_its_previous_incarnation() {
    let view = View::new(vec![addr(0), addr(1)], 1).unwrap();
    let cfg = Config::new(view.clone());
    let shard = view.shard_of_node(&addr(1)).unwrap();
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| view.shard_of_key(k.as_bytes()) == shard)
        .unwrap();
    let now = Time::from_millis(1_000_000_000);
    let start = |id: NodeId, nonce: u64, storage: MemStorage| {
        Node::new(cfg.clone(), Identity { node: id, nonce }, storage, now)
    };
    let write = |id: u64, value: &str| {
        let op = put(&key, value, &VersionVector::new(), Quorum::N(1));
        Input::Client(Request { id, op })
    };
    // The replica answers a forward; returns the answer and the dot it issued.
    let answer = |replica: &mut Node<MemStorage>, forward: PeerMsg| {
        let from = addr(0);
        replica.handle(now, Input::Peer { from, msg: forward });
        let reply = sent(replica, "forward_reply");
        let PeerMsg::ForwardReply {
            result: Ok(Response::Written { dot, .. }),
            ..
        } = &reply
        else {
            panic!("the replica did not execute the write: {reply:?}");
        };
        (*dot, reply)
    };
    let mut replica = start(addr(1), 7, MemStorage::new());
    // Its first tick verifies its own floor on its partitions: only then does it write.
    replica.handle(now, Input::Tick);
    replica.take_ready();
    let mut proxy = start(addr(0), 1, MemStorage::new());
    proxy.handle(now, write(1, "old"));
    let old = sent(&mut proxy, "forward");
    // The proxy restarts before the answer arrives and forwards another client's write.
    let mut proxy = start(addr(0), 2, proxy.into_storage());
    proxy.handle(now, write(2, "new"));
    let new = sent(&mut proxy, "forward");
    let (_, late) = answer(&mut replica, old);
    proxy.handle(
        now,
        Input::Peer {
            from: addr(1),
            msg: late,
        },
    );
    let ready = proxy.take_ready();
    assert!(
        ready.collect(proxy.storage_mut()).replies.is_empty(),
        "the answer to the previous incarnation's write was taken for request 2"
    );
    let (dot, reply) = answer(&mut replica, new);
    proxy.handle(
        now,
        Input::Peer {
            from: addr(1),
            msg: reply,
        },
    );
    let ready = proxy.take_ready();
    let replies = ready.collect(proxy.storage_mut()).replies;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].id, 2);
    assert!(matches!(&replies[0].result, Ok(Response::Written { dot: d, .. }) if *d == dot));
}

#[test]
fn write_all_with_a_replica_cut_off_answers_503_in_bounded_time() {
    let mut w = six();
    let key = key_in_shard_of(&w, 0);
    w.isolate(&addr(2), true);
    let start = w.now;
    let r = w.call(&addr(0), put(&key, "v", &VersionVector::new(), Quorum::All));
    assert!(
        matches!(r.result, Err(ReqError::Unavailable(_))),
        "{:?}",
        r.result
    );
    assert!(w.now.since(start) <= w.config.quorum_timeout + Duration::from_millis(100));
    // A quorum is still reachable.
    let r = w.call(
        &addr(0),
        put(&key, "v2", &VersionVector::new(), Quorum::Majority),
    );
    assert!(r.result.is_ok());
    // After healing, retries bring the cut-off replica up to date.
    w.isolate(&addr(2), false);
    w.run_for(Duration::from_secs(2));
    let s0 = w.nodes[&addr(0)].local_state(key.as_bytes());
    assert_eq!(s0, w.nodes[&addr(2)].local_state(key.as_bytes()));
}

/// Runs the same client operations with a clean network and with a hostile one; replicas must end
/// in identical states: duplicated, delayed and reordered messages change nothing.
#[test]
fn duplicates_and_reordering_change_nothing() {
    /// A replica's state without write timestamps (those follow timing, which faults change).
    type State = Option<(
        VersionVector,
        Vec<(causeway::core::Dot, Option<bytes::Bytes>)>,
    )>;
    fn run(faults: Faults) -> Vec<(String, Vec<State>)> {
        let mut w = World::new(6, 3, 11);
        w.faults = faults;
        let mut ctx = VersionVector::new();
        for i in 0..40 {
            let key = format!("k{}", i % 7);
            let coordinator = addr(i % 6);
            let shard = w.config.view.shard_of_key(key.as_bytes());
            // Send directly to a replica so every run assigns the same dots.
            let at = if w.config.view.shard_members(shard).contains(&coordinator) {
                coordinator
            } else {
                w.config.view.shard_members(shard)[i % 3].clone()
            };
            let op = if i % 5 == 4 {
                del(&key, &ctx)
            } else {
                put(&key, &format!("v{i}"), &ctx, Quorum::N(1))
            };
            let r = w.call(&at, op);
            // Reply tokens include what the coordinator has applied, which depends on timing:
            // let replication settle so every run issues the same contexts.
            w.run_for(Duration::from_secs(3));
            if i % 3 == 0 {
                ctx = ctx_of(&r);
            }
        }
        w.faults = Faults::default();
        w.run_for(Duration::from_secs(5));
        (0..7)
            .map(|i| {
                let key = format!("k{i}");
                let states = w
                    .nodes
                    .values()
                    .map(|n| {
                        n.local_state(key.as_bytes()).map(|s| {
                            let versions = s.versions().iter().map(|v| (v.dot, v.value.clone()));
                            (s.context().clone(), versions.collect())
                        })
                    })
                    .collect();
                (key, states)
            })
            .collect()
    }
    let clean = run(Faults::default());
    let hostile = run(Faults {
        drop: 0.0,
        dup: 0.5,
        jitter_ms: 40,
    });
    assert_eq!(clean, hostile);
    let lossy = run(Faults {
        drop: 0.3,
        dup: 0.3,
        jitter_ms: 40,
    });
    assert_eq!(clean, lossy, "retries make lost messages harmless too");
}

#[test]
fn restart_with_synced_disk_keeps_actor_and_amnesia_takes_a_new_one() {
    let view = View::new((0..3).map(addr).collect(), 3).unwrap();
    let mut cfg = Config::new(view);
    cfg.sync = SyncMode::Always;
    let mut w = World::with_config(cfg, 3);
    let before = w.nodes[&addr(0)].actor();
    let r = w.call(&addr(0), put("k", "v1", &VersionVector::new(), Quorum::All));
    let disk = w.crash(&addr(0));
    w.start(&addr(0), disk);
    assert_eq!(
        w.nodes[&addr(0)].actor(),
        before,
        "synced counters survive: same incarnation"
    );
    let r2 = w.call(&addr(0), put("k", "v2", &VersionVector::new(), Quorum::All));
    let (Ok(Response::Written { dot: d1, .. }), Ok(Response::Written { dot: d2, .. })) =
        (&r.result, &r2.result)
    else {
        panic!("writes failed");
    };
    assert!(d2.counter > d1.counter, "no dot reuse after restart");

    w.crash(&addr(0));
    w.start(&addr(0), causeway::core::MemStorage::new());
    assert_ne!(
        w.nodes[&addr(0)].actor(),
        before,
        "an empty disk means a new incarnation"
    );
    let r3 = w.call(&addr(0), put("k", "v3", &VersionVector::new(), Quorum::All));
    let read = w.call(&addr(1), get("k", &ctx_of(&r3), Quorum::All));
    let mut vals = values(&read);
    vals.sort();
    assert_eq!(
        vals,
        vec!["v1", "v2", "v3"],
        "nothing the amnesiac node wrote shadows older writes"
    );
}

#[test]
fn deletes_are_tombstones_that_replace_covered_versions() {
    let mut w = six();
    let key = key_in_shard_of(&w, 3);
    let a = w.call(&addr(3), put(&key, "v", &VersionVector::new(), Quorum::All));
    let d = w.call(&addr(0), del(&key, &ctx_of(&a)));
    let r = w.call(&addr(5), get(&key, &ctx_of(&d), Quorum::All));
    assert!(values(&r).is_empty());
    let Ok(Response::Read { versions, .. }) = &r.result else {
        panic!()
    };
    assert_eq!(versions.len(), 1);
    assert!(versions[0].value.is_none(), "the tombstone is a version");
}

#[test]
fn listing_merges_shards_in_key_order_with_pagination() {
    let mut w = six();
    let ctx = VersionVector::new();
    for i in 0..25 {
        w.call(
            &addr(i % 6),
            put(&format!("item-{i:02}"), "x", &ctx, Quorum::N(1)),
        );
    }
    let item3 = w.call(&addr(0), get("item-03", &ctx, Quorum::All));
    w.call(&addr(0), del("item-03", &ctx_of(&item3)));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let r = w.call(
            &addr(2),
            causeway::core::Op::List {
                start: Some("item-".into()),
                end: Some("item-99".into()),
                after: after.clone(),
                limit: 7,
                full: false,
            },
        );
        let Ok(Response::Listed { entries, next }) = r.result else {
            panic!("{:?}", r.result)
        };
        assert!(entries.len() <= 7);
        seen.extend(
            entries
                .iter()
                .map(|e| String::from_utf8(e.key.to_vec()).unwrap()),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25)
        .filter(|i| *i != 3)
        .map(|i| format!("item-{i:02}"))
        .collect();
    assert_eq!(seen, expected);
}

/// A full listing (the pages a backup walks) reads every key once: each shard sends its share
/// of a page, not a whole page of which the merge keeps a third. Asking every shard for
/// `limit` keys shipped about `(shards - 1) × keys` between nodes over a walk of three shards.
#[test]
fn a_full_listing_walk_ships_each_key_about_once() {
    let mut w = World::new(3, 1, 7);
    let ctx = VersionVector::new();
    let n = 600;
    for i in 0..n {
        w.call(
            &addr(i % 3),
            put(&format!("key-{i:04}"), "x", &ctx, Quorum::N(1)),
        );
    }
    w.list_part_keys = 0;
    let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let r = w.call(
            &addr(0),
            causeway::core::Op::List {
                start: None,
                end: None,
                after: after.clone(),
                limit: 60,
                full: true,
            },
        );
        let Ok(Response::Listed { entries, next }) = r.result else {
            panic!("{:?}", r.result)
        };
        pages += 1;
        assert!(
            entries.iter().all(|e| e.set.is_some()),
            "a full listing has sets"
        );
        seen.extend(entries.iter().map(|e| e.key.clone()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let expected: Vec<bytes::Bytes> = (0..n).map(|i| format!("key-{i:04}").into()).collect();
    assert_eq!(seen, expected, "every key once, in order");
    assert!(
        pages <= 2 * n / 60,
        "{pages} pages of at most 60 keys for {n} keys"
    );
    // Two of the three shards are remote: about 2/3 of the keys cross, plus each page's
    // overshoot past the shortest part.
    assert!(
        w.list_part_keys <= n,
        "{} keys shipped in listing parts to walk {n} keys",
        w.list_part_keys
    );
}

#[test]
fn bad_requests_are_rejected_with_a_reason() {
    let mut w = six();
    let r = w.call(&addr(0), put("", "v", &VersionVector::new(), Quorum::N(1)));
    assert!(matches!(r.result, Err(ReqError::BadRequest(_))));
    let long = "k".repeat(1025);
    let r = w.call(
        &addr(0),
        put(&long, "v", &VersionVector::new(), Quorum::N(1)),
    );
    assert!(matches!(r.result, Err(ReqError::BadRequest(m)) if m.contains("1024")));
    let r = w.call(&addr(0), get("k", &VersionVector::new(), Quorum::N(4)));
    assert!(matches!(r.result, Err(ReqError::BadRequest(_))));
}

/// The tests above must catch the bugs they are about: with planted bugs they fail.
mod canaries {
    use super::*;
    use causeway::core::Canary;

    fn six_with(canary: Canary) -> World {
        let mut cfg = Config::new(View::new((0..6).map(addr).collect(), 3).unwrap());
        cfg.canary = Some(canary);
        World::with_config(cfg, 7)
    }

    #[test]
    fn skip_causal_wait_answers_stale() {
        let mut w = six_with(Canary::SkipCausalWait);
        let (key, ctx) = write_node_2_misses(&mut w);
        let r = w.call(&addr(2), get(&key, &ctx, Quorum::N(1)));
        assert!(
            values(&r).is_empty(),
            "the planted bug returns a stale (empty) read"
        );
    }

    #[test]
    fn lww_without_siblings_loses_a_concurrent_write() {
        let mut w = six_with(Canary::LwwWithoutSiblings);
        let key = key_in_shard_of(&w, 0);
        w.call(
            &addr(0),
            put(&key, "from-a", &VersionVector::new(), Quorum::All),
        );
        let b = w.call(
            &addr(1),
            put(&key, "from-b", &VersionVector::new(), Quorum::All),
        );
        let r = w.call(&addr(2), get(&key, &ctx_of(&b), Quorum::N(1)));
        assert_eq!(values(&r).len(), 1);
    }

    #[test]
    fn no_replication_retry_leaves_replicas_divergent() {
        let mut w = six_with(Canary::NoReplicationRetry);
        let key = key_in_shard_of(&w, 0);
        w.isolate(&addr(2), true);
        w.call(
            &addr(0),
            put(&key, "v", &VersionVector::new(), Quorum::N(1)),
        );
        w.isolate(&addr(2), false);
        w.run_for(Duration::from_secs(3));
        assert_ne!(
            w.nodes[&addr(0)].local_state(key.as_bytes()),
            w.nodes[&addr(2)].local_state(key.as_bytes())
        );
    }

    #[test]
    fn stale_context_does_not_cover_own_write() {
        let mut w = six_with(Canary::StaleContext);
        let key = key_in_shard_of(&w, 0);
        let r = w.call(
            &addr(0),
            put(&key, "v", &VersionVector::new(), Quorum::N(1)),
        );
        let Ok(Response::Written { dot, context, .. }) = r.result else {
            panic!()
        };
        assert!(!context.covers(dot));
    }
}

mod session {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A session that always passes back its latest token never sees that token shrink, and
        /// every write's token covers the write, under loss, duplication and reordering.
        #[test]
        fn context_never_shrinks_across_a_session(
            seed in any::<u64>(),
            ops in prop::collection::vec((0usize..6, 0u8..4, 0u8..3), 1..25),
        ) {
            let mut w = World::new(6, 3, seed);
            w.faults = Faults { drop: 0.1, dup: 0.1, jitter_ms: 20 };
            let mut ctx = VersionVector::new();
            for (i, (node, key, kind)) in ops.into_iter().enumerate() {
                let key = format!("k{key}");
                let op = match kind {
                    0 => get(&key, &ctx, Quorum::N(1)),
                    1 => put(&key, &format!("v{i}"), &ctx, Quorum::N(1)),
                    _ => del(&key, &ctx),
                };
                let r = w.call(&addr(node), op);
                if let Ok(resp) = &r.result {
                    let next = match resp {
                        Response::Read { context, .. } => context.clone(),
                        Response::Written { dot, context, .. } => {
                            prop_assert!(context.covers(*dot), "a write's token covers the write");
                            context.clone()
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    prop_assert!(next.dominates(&ctx), "context shrank: {ctx:?} -> {next:?}");
                    ctx = next;
                }
            }
        }
    }
}

/// A quorum write's answer does not wait for the sync of writes staged after it: the Ready that
/// handles the acknowledgement also holds a new write (so it asks for a sync), yet the first
/// write's reply is among the answers released before that sync.
#[test]
fn quorum_reply_leaves_before_the_sync_of_later_writes() {
    use causeway::core::{Identity, Input, MemStorage, Node, PeerMsg, Request, Time};
    let view = View::new((0..2).map(addr).collect(), 2).unwrap();
    let mut cfg = Config::new(view);
    cfg.sync = SyncMode::Always;
    let now = Time::from_millis(1_000);
    let start = |i: usize| {
        let id = Identity {
            node: addr(i),
            nonce: i as u64,
        };
        Node::new(cfg.clone(), id, MemStorage::new(), now)
    };
    let (mut a, mut b) = (start(0), start(1));
    // A first tick verifies each node's own floor on its partitions: only then does it write.
    a.handle(now, Input::Tick);
    b.handle(now, Input::Tick);
    a.take_ready();
    b.take_ready();
    let write = |id: u64, key: &str| {
        Input::Client(Request {
            id,
            op: put(key, "v", &VersionVector::new(), Quorum::N(2)),
        })
    };
    a.handle(now, write(1, "k1"));
    let first = a.take_ready();
    assert!(first.sync && first.replies.is_empty() && first.early_replies.is_empty());
    for (to, msg) in first.messages {
        assert_eq!(to, addr(1));
        b.handle(now, Input::Peer { from: addr(0), msg });
    }
    let acks = b.take_ready();
    assert!(acks.sync, "the replica syncs before it acknowledges");
    a.handle(now, write(2, "k2"));
    for (_, msg) in acks.messages {
        assert!(matches!(msg, PeerMsg::ReplicateAck { .. }));
        a.handle(now, Input::Peer { from: addr(1), msg });
    }
    let turn = a.take_ready();
    assert!(turn.sync, "the turn staged a new write");
    let early: Vec<u64> = turn.early_replies.iter().map(|r| r.id).collect();
    assert_eq!(
        early,
        vec![1],
        "the acknowledged write answers before the sync"
    );
    assert!(
        turn.replies.is_empty(),
        "the new write still waits for its quorum"
    );
}

#[test]
fn blind_delete_supersedes_what_its_coordinator_holds_and_nothing_else() {
    let mut w = World::new(3, 3, 11);
    let key = "blind".to_string();
    let a = w.call(&addr(0), put(&key, "a", &VersionVector::new(), Quorum::All));
    let a_dot = match a.result {
        Ok(Response::Written { dot, .. }) => dot,
        other => panic!("{other:?}"),
    };
    // Node 1 writes b concurrently while node 0 cannot hear from it.
    w.isolate(&addr(1), true);
    w.call(
        &addr(1),
        put(&key, "b", &VersionVector::new(), Quorum::N(1)),
    );
    let d = w.call(&addr(0), del(&key, &VersionVector::new()));
    let Ok(Response::Written {
        coordinator_context: Some(applied),
        ..
    }) = &d.result
    else {
        panic!("a blind delete reports the context it applied: {d:?}");
    };
    assert!(applied.covers(a_dot), "it superseded a, which node 0 held");
    let d_ctx = ctx_of(&d);
    w.isolate(&addr(1), false);
    w.run_for(Duration::from_secs(15));
    for i in 0..3 {
        let r = w.call(&addr(i), get(&key, &d_ctx, Quorum::All));
        assert_eq!(
            values(&r),
            vec!["b".to_string()],
            "node {i}: only b survives"
        );
    }
}

/// With `sync = always` a node trusts its persisted clock after a crash, but a crash during a
/// turn's sync can keep the turn's data writes without the clock written after them. The
/// restarted node must not issue the stored write's dot again (G7): a second write with that dot
/// would merge into the first one's version and be lost (found by the `crash-before-sync`
/// scenario).
#[test]
fn a_torn_turn_never_makes_a_restarted_node_reuse_a_stored_dot() {
    let view = View::new(vec![addr(0)], 1).unwrap();
    let mut cfg = Config::new(view);
    cfg.sync = SyncMode::Always;
    let now = Time::from_millis(1_000);
    let start = |storage: MemStorage| {
        let id = Identity {
            node: addr(0),
            nonce: 3,
        };
        Node::new(cfg.clone(), id, storage, now)
    };
    let write = |node: &mut Node<MemStorage>, id: u64, key: &str| {
        let op = put(key, "v", &VersionVector::new(), Quorum::N(1));
        node.handle(now, Input::Client(Request { id, op }));
    };
    let dot_of = |node: &mut Node<MemStorage>| {
        let ready = node.take_ready();
        match &ready.collect(node.storage_mut()).replies[..] {
            [
                Reply {
                    result: Ok(Response::Written { dot, .. }),
                    ..
                },
            ] => *dot,
            other => panic!("one write reply expected, got {other:?}"),
        }
    };
    let mut node = start(MemStorage::new());
    node.handle(now, Input::Tick);
    let ready = node.take_ready();
    ready.collect(node.storage_mut());
    write(&mut node, 1, "k1");
    let first = dot_of(&mut node);
    // The next turn's write reaches the disk, then the node crashes before its Ready (which
    // persists the clock and syncs) is taken: only a prefix of the turn survived.
    write(&mut node, 2, "k2");
    let torn = node.local_state(b"k2").expect("stored").versions()[0].dot;
    assert_eq!(torn.counter, first.counter + 1);
    let mut node = start(node.into_storage());
    node.handle(now, Input::Tick);
    let ready = node.take_ready();
    ready.collect(node.storage_mut());
    assert!(
        node.applied().covers(torn),
        "the stored write counts as applied"
    );
    write(&mut node, 3, "k3");
    let next = dot_of(&mut node);
    assert_eq!(
        next.actor, first.actor,
        "sync = always keeps the incarnation"
    );
    assert!(next.counter > torn.counter, "{next:?} reuses a stored dot");
}

/// A node checks the floor of each of its actors once: a restart over its synced disk (the
/// same actor, whose check passed) sends no floor check, a restart over an empty disk (a new
/// actor) checks again. (The passed actor was stored as an `Option` and read back as an
/// actor, so every restart checked again.)
#[test]
fn a_floor_check_runs_once_per_actor() {
    let view = View::new((0..3).map(addr).collect(), 3).unwrap();
    let mut cfg = Config::new(view);
    cfg.sync = SyncMode::Always;
    let mut w = World::with_config(cfg, 3);
    w.run_for(Duration::from_secs(2));
    let checks = |w: &World| w.sent.get(&(addr(0), "floor_check")).copied().unwrap_or(0);
    let first = checks(&w);
    assert!(first > 0, "the first actor's floor is checked");
    let disk = w.crash(&addr(0));
    w.start(&addr(0), disk);
    w.run_for(Duration::from_secs(2));
    assert_eq!(checks(&w), first, "the same actor is not checked again");
    w.crash(&addr(0));
    w.start(&addr(0), MemStorage::new());
    w.run_for(Duration::from_secs(2));
    assert!(checks(&w) > first, "a new actor is checked");
}
