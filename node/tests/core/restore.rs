//! Batched restores: one `Op::MergeBatch` leaves every key — and every replica — exactly as
//! merging the same sets one `Op::Merge` at a time does (siblings and tombstones included).

use super::world::{World, addr, del, put};
use bytes::Bytes;
use causeway::core::{
    MAX_MERGE_BATCH, Op, Quorum, ReqError, Response, Storage, VersionSet, VersionVector,
};
use std::time::Duration;

const KEYS: usize = 24;

fn key(i: usize) -> String {
    format!("key-{i}")
}

fn written_ctx(w: &mut World, at: usize, op: Op) -> VersionVector {
    match w.call(&addr(at), op).result.expect("write succeeded") {
        Response::Written { context, .. } => context,
        other => panic!("unexpected response {other:?}"),
    }
}

/// The version sets to restore: plain values, siblings (two concurrent writes) and tombstones.
fn backed_up() -> Vec<(Bytes, VersionSet)> {
    let mut src = World::new(3, 3, 11);
    let none = VersionVector::new();
    for i in 0..KEYS {
        let ctx = written_ctx(
            &mut src,
            0,
            put(&key(i), &format!("a{i}"), &none, Quorum::N(1)),
        );
        match i % 3 {
            1 => {
                written_ctx(
                    &mut src,
                    1,
                    put(&key(i), &format!("b{i}"), &none, Quorum::N(1)),
                );
            }
            2 => {
                written_ctx(&mut src, 0, del(&key(i), &ctx));
            }
            _ => {}
        }
    }
    src.run_for(Duration::from_secs(2));
    let node = &src.nodes[&addr(0)];
    (0..KEYS)
        .map(|i| {
            let k = Bytes::from(key(i));
            let set = node.storage().get(&k).expect("the source holds every key");
            (k, set)
        })
        .collect()
}

/// A cluster that already holds writes of its own to some of the keys (values to join as
/// siblings, tombstones), the same in every call.
fn target() -> World {
    let mut w = World::new(3, 3, 22);
    let none = VersionVector::new();
    for i in (0..KEYS).filter(|i| i % 4 < 2) {
        let ctx = written_ctx(
            &mut w,
            2,
            put(&key(i), &format!("t{i}"), &none, Quorum::N(1)),
        );
        if i % 4 == 1 {
            written_ctx(&mut w, 2, del(&key(i), &ctx));
        }
    }
    w.run_for(Duration::from_secs(2));
    w
}

fn state(w: &World, node: usize) -> Vec<Option<VersionSet>> {
    let s = w.nodes[&addr(node)].storage();
    (0..KEYS).map(|i| s.get(key(i).as_bytes())).collect()
}

#[test]
fn a_merge_batch_equals_the_same_merges_one_by_one_on_every_replica() {
    let sets = backed_up();
    assert!(
        sets.iter().any(|(_, s)| s.versions().len() == 2),
        "siblings"
    );
    assert!(sets.iter().any(|(_, s)| s.is_deleted()), "tombstones");

    let mut single = target();
    let mut changed_single = 0;
    for (n, (k, set)) in sets.iter().enumerate() {
        let op = Op::Merge {
            key: k.clone(),
            set: set.clone(),
        };
        match single.call(&addr(n % 3), op).result {
            Ok(Response::Merged { changed }) => changed_single += u64::from(changed),
            other => panic!("unexpected merge result {other:?}"),
        }
    }
    single.run_for(Duration::from_secs(2));

    let mut batched = target();
    assert_eq!(
        state(&batched, 0),
        state(&target(), 0),
        "targets start equal"
    );
    let reply = batched.call(&addr(1), Op::MergeBatch { sets: sets.clone() });
    assert_eq!(
        reply.result,
        Ok(Response::MergedBatch {
            changed: changed_single
        })
    );
    batched.run_for(Duration::from_secs(2));

    let expected = state(&single, 0);
    assert!(
        expected.iter().flatten().any(|s| s.versions().len() >= 2)
            && expected.iter().flatten().any(|s| s.is_deleted()),
        "the merged state keeps siblings and tombstones"
    );
    for node in 0..3 {
        assert_eq!(
            state(&single, node),
            expected,
            "per-key merges, node {node}"
        );
        assert_eq!(
            state(&batched, node),
            expected,
            "batched merge, node {node}"
        );
    }

    // Idempotent: the same batch again changes nothing.
    let again = batched.call(&addr(2), Op::MergeBatch { sets });
    assert_eq!(again.result, Ok(Response::MergedBatch { changed: 0 }));
}

#[test]
fn a_merge_batch_spanning_shards_or_too_large_is_refused() {
    let mut w = World::new(6, 3, 5);
    let view = w.config.view.clone();
    let set = VersionSet::new();
    let mut by_shard: Vec<Bytes> = Vec::new();
    for i in 0.. {
        let k = Bytes::from(key(i));
        if by_shard
            .iter()
            .all(|o| view.shard_of_key(o) != view.shard_of_key(&k))
        {
            by_shard.push(k);
        }
        if by_shard.len() == 2 {
            break;
        }
    }
    let sets = by_shard.into_iter().map(|k| (k, set.clone())).collect();
    let reply = w.call(&addr(0), Op::MergeBatch { sets });
    assert!(
        matches!(reply.result, Err(ReqError::Unavailable(_))),
        "{reply:?}"
    );

    let k = Bytes::from(key(0));
    let sets = vec![(k, set); MAX_MERGE_BATCH + 1];
    let reply = w.call(&addr(0), Op::MergeBatch { sets });
    assert!(
        matches!(reply.result, Err(ReqError::BadRequest(_))),
        "{reply:?}"
    );
    let reply = w.call(&addr(0), Op::MergeBatch { sets: Vec::new() });
    assert!(
        matches!(reply.result, Err(ReqError::BadRequest(_))),
        "{reply:?}"
    );
}
