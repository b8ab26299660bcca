//! Time to live in the in-process world (docs/ttl.md): expired versions are hidden from reads,
//! turned into tombstones that remove only them, and replicas agree on their digests.

use super::world::{World, addr, get, put};
use causeway::core::merkle::digest;
use causeway::core::{Config, Op, Quorum, SyncMode, VersionVector, View};
use std::time::Duration;

fn trio() -> World {
    let mut cfg = Config::new(View::new((0..3).map(addr).collect(), 3).unwrap());
    cfg.sync = SyncMode::Always;
    cfg.aae_interval = Duration::from_secs(1);
    cfg.tombstone_grace = Duration::from_secs(2);
    World::with_config(cfg, 7)
}

fn put_ttl(key: &str, value: &str, ctx: &VersionVector, ttl: u64) -> Op {
    match put(key, value, ctx, Quorum::N(1)) {
        Op::Put {
            key,
            value,
            content_type,
            context,
            w,
            ..
        } => Op::Put {
            key,
            value,
            content_type,
            context,
            w,
            ttl: Some(ttl),
        },
        _ => unreachable!(),
    }
}

fn values(w: &mut World, node: usize, key: &str) -> Vec<String> {
    let r = w.call(&addr(node), get(key, &VersionVector::new(), Quorum::N(1)));
    super::world::values(&r)
}

/// A TTL write is readable at every replica until it expires, with the same digest everywhere;
/// then hidden at every replica, turned into a tombstone and reaped, while a plain key stays.
#[test]
fn expired_values_are_hidden_converted_and_reaped_with_equal_digests() {
    let mut w = trio();
    assert!(
        w.call(&addr(0), put_ttl("t", "short", &VersionVector::new(), 2))
            .result
            .is_ok()
    );
    assert!(
        w.call(
            &addr(1),
            put("p", "plain", &VersionVector::new(), Quorum::All)
        )
        .result
        .is_ok()
    );
    w.run_for(Duration::from_millis(200));
    let states: Vec<_> = (0..3)
        .map(|i| w.nodes[&addr(i)].local_state(b"t").unwrap())
        .collect();
    assert!(states[0].versions()[0].expires.is_some());
    assert!(states.iter().all(|s| digest(s) == digest(&states[0])));
    for i in 0..3 {
        assert_eq!(values(&mut w, i, "t"), ["short"]);
    }
    w.run_for(Duration::from_secs(2));
    for i in 0..3 {
        assert!(
            values(&mut w, i, "t").is_empty(),
            "node {i} still returns the value"
        );
        assert_eq!(values(&mut w, i, "p"), ["plain"]);
    }
    w.run_for(Duration::from_secs(8));
    for i in 0..3 {
        assert_eq!(
            w.nodes[&addr(i)].local_state(b"t"),
            None,
            "node {i} did not reap"
        );
        assert!(w.nodes[&addr(i)].local_state(b"p").is_some());
    }
}

/// A TTL write and a concurrent plain write are siblings; expiry removes only the TTL one, at
/// every replica.
#[test]
fn expiry_keeps_a_concurrent_plain_write() {
    let mut w = trio();
    w.isolate(&addr(2), true);
    assert!(
        w.call(&addr(0), put_ttl("k", "ttl", &VersionVector::new(), 1))
            .result
            .is_ok()
    );
    let id = w.submit(
        &addr(2),
        put("k", "plain", &VersionVector::new(), Quorum::N(1)),
    );
    assert!(w.wait(id, Duration::from_secs(1)).unwrap().result.is_ok());
    w.isolate(&addr(2), false);
    w.run_for(Duration::from_secs(6));
    for i in 0..3 {
        assert_eq!(values(&mut w, i, "k"), ["plain"], "node {i}");
        let set = w.nodes[&addr(i)].local_state(b"k").unwrap();
        assert!(set.versions().iter().all(|v| v.expires.is_none()));
        assert!(
            set.versions().iter().any(|v| v.value.is_none()),
            "the expiry tombstone"
        );
    }
    let sets: Vec<_> = (0..3)
        .map(|i| w.nodes[&addr(i)].local_state(b"k").unwrap())
        .collect();
    assert!(sets.iter().all(|s| digest(s) == digest(&sets[0])));
}

/// A ttl of 0 or above the maximum, or on a delete, is refused.
#[test]
fn bad_ttls_are_refused() {
    let mut w = trio();
    for ttl in [0, causeway::core::MAX_TTL_SECS + 1] {
        let r = w.call(&addr(0), put_ttl("k", "v", &VersionVector::new(), ttl));
        assert!(
            matches!(r.result, Err(causeway::core::ReqError::BadRequest(_))),
            "{r:?}"
        );
    }
}
