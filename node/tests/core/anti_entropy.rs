//! Anti-entropy and tombstone reaping in the in-process world (issue 4).

use super::world::{World, addr, ctx_of, del, get, put};
use bytes::Bytes;
use causeway::core::{
    Canary, Config, Input, Op, PeerMsg, Quorum, Response, SyncMode, VersionVector, View,
};
use std::time::Duration;

/// Three replicas of one shard, `sync = always`, fast anti-entropy and a short tombstone grace.
fn trio(canary: Option<Canary>) -> World {
    let mut cfg = Config::new(View::new((0..3).map(addr).collect(), 3).unwrap());
    cfg.sync = SyncMode::Always;
    cfg.aae_interval = Duration::from_secs(1);
    cfg.tombstone_grace = Duration::from_secs(2);
    cfg.canary = canary;
    World::with_config(cfg, 5)
}

/// Writes acknowledged by a coordinator that crashed before replicating them (its retry queue
/// died with it) reach the other replicas through anti-entropy alone, and the sessions holding
/// tokens for them can read at those replicas (clock adoption ends the causal wait).
#[test]
fn crash_lost_replication_is_repaired_by_anti_entropy() {
    fn run(canary: Option<Canary>) -> (usize, bool) {
        let mut w = trio(canary);
        w.isolate(&addr(2), true);
        let mut ctx = VersionVector::new();
        for i in 0..200 {
            let r = w.call(
                &addr(0),
                put(&format!("k{i}"), "v", &VersionVector::new(), Quorum::N(2)),
            );
            ctx.merge(&ctx_of(&r));
        }
        let disk = w.crash(&addr(0));
        w.start(&addr(0), disk);
        w.isolate(&addr(2), false);
        w.run_for(Duration::from_secs(8));
        let missing = (0..200)
            .filter(|i| {
                w.nodes[&addr(2)]
                    .local_state(format!("k{i}").as_bytes())
                    .is_none()
            })
            .count();
        let id = w.submit(&addr(2), get("k7", &ctx, Quorum::N(1)));
        let read = w.wait(id, Duration::from_secs(5)).unwrap();
        (missing, read.result.is_ok())
    }
    assert_eq!(
        run(None),
        (0, true),
        "anti-entropy repairs every key and the clock"
    );
    let (missing, readable) = run(Some(Canary::NoAntiEntropy));
    assert_eq!(
        missing, 200,
        "without anti-entropy the lost replication stays lost"
    );
    assert!(!readable);
}

#[test]
fn on_demand_exchange_reports_what_it_repaired() {
    let mut w = trio(Some(Canary::NoAntiEntropy));
    w.isolate(&addr(1), true);
    for i in 0..50 {
        w.call(
            &addr(0),
            put(&format!("k{i}"), "v", &VersionVector::new(), Quorum::N(1)),
        );
    }
    // The cut-off replica's retry queue is emptied by a restart of the writer.
    let disk = w.crash(&addr(0));
    w.start(&addr(0), disk);
    w.isolate(&addr(1), false);
    let r = w.call(&addr(1), Op::AntiEntropy { peer: addr(0) });
    let Ok(Response::AntiEntropy {
        keys_repaired,
        bytes,
        complete,
        ..
    }) = r.result
    else {
        panic!("{:?}", r.result)
    };
    assert_eq!(keys_repaired, 50);
    assert!(complete && bytes > 0);
    let again = w.call(&addr(1), Op::AntiEntropy { peer: addr(0) });
    let Ok(Response::AntiEntropy {
        keys_repaired: 0, ..
    }) = again.result
    else {
        panic!("a second exchange finds nothing: {:?}", again.result)
    };
    let bad = w.call(
        &addr(1),
        Op::AntiEntropy {
            peer: "nobody:1".into(),
        },
    );
    assert!(bad.result.is_err());
}

/// A divergent value (same key, different versions on two replicas) is found and merged.
#[test]
fn divergent_values_converge() {
    let mut w = trio(None);
    w.isolate(&addr(0), true);
    w.call(
        &addr(0),
        put("x", "left", &VersionVector::new(), Quorum::N(1)),
    );
    w.call(
        &addr(1),
        put("x", "right", &VersionVector::new(), Quorum::N(1)),
    );
    w.isolate(&addr(0), false);
    w.run_for(Duration::from_secs(6));
    let states: Vec<_> = (0..3)
        .map(|i| w.nodes[&addr(i)].local_state(b"x"))
        .collect();
    assert!(states.windows(2).all(|p| p[0] == p[1]));
    assert_eq!(
        states[0].as_ref().unwrap().versions().len(),
        2,
        "siblings, nothing lost"
    );
}

/// A delete every replica acknowledged is reaped after the grace period, everywhere, and a late
/// copy of the deleted value does not bring it back.
#[test]
fn reaped_tombstones_do_not_resurrect() {
    fn run(canary: Option<Canary>) -> bool {
        let mut w = trio(canary);
        let v = w.call(
            &addr(0),
            put("gone", "old", &VersionVector::new(), Quorum::All),
        );
        let old_state = w.nodes[&addr(1)].local_state(b"gone").unwrap();
        let Ok(Response::Written { dot, .. }) = v.result else {
            panic!()
        };
        let d = w.call(&addr(0), del("gone", &ctx_of(&v)));
        assert!(d.result.is_ok());
        w.run_for(Duration::from_secs(4));
        if canary.is_none() {
            for i in 0..3 {
                assert!(
                    w.nodes[&addr(i)].local_state(b"gone").is_none(),
                    "reaped at {}",
                    addr(i)
                );
            }
        }
        // A delayed replication message of the old value arrives at every replica.
        for i in 0..3 {
            let msg = PeerMsg::Replicate {
                key: Bytes::from_static(b"gone"),
                set: old_state.clone(),
                dots: vec![dot],
            };
            let now = w.now;
            w.nodes
                .get_mut(&addr(i))
                .unwrap()
                .handle(now, Input::Peer { from: addr(0), msg });
        }
        w.run_for(Duration::from_secs(4));
        let r = w.call(&addr(2), get("gone", &VersionVector::new(), Quorum::All));
        let Ok(Response::Read { versions, .. }) = r.result else {
            panic!()
        };
        versions.iter().any(|v| v.value.is_some())
    }
    assert!(!run(None), "the deleted value must stay deleted");
    assert!(
        run(Some(Canary::EarlyTombstoneReap)),
        "the planted early reap resurrects it"
    );
}

/// A tombstone one replica has not acknowledged is not reaped anywhere.
#[test]
fn tombstones_wait_for_every_replica() {
    let mut w = trio(None);
    let v = w.call(&addr(0), put("k", "v", &VersionVector::new(), Quorum::All));
    w.isolate(&addr(2), true);
    w.call(&addr(0), del("k", &ctx_of(&v)));
    w.run_for(Duration::from_secs(5));
    assert!(
        w.nodes[&addr(0)].local_state(b"k").is_some(),
        "not reaped while a replica lacks it"
    );
    w.isolate(&addr(2), false);
    // Retries to the isolated replica backed off (up to 32 retry intervals plus jitter, ~12 s):
    // the tombstone reaches it by the next retry or anti-entropy round, then every copy is reaped.
    w.run_for(Duration::from_secs(20));
    for i in 0..3 {
        assert!(w.nodes[&addr(i)].local_state(b"k").is_none());
    }
}

/// Anti-entropy answers only the replicas of the shard: a node outside it that asks for segment
/// hashes or a segment's keys gets nothing (the keys' values would leak), and the version sets
/// it offers are not merged. The shard's own replica, asking the same, gets its answers.
#[test]
fn anti_entropy_answers_and_merges_only_the_shards_replicas() {
    use causeway::core::merkle::{BRANCHES, segment_of};
    use causeway::core::{Dot, Version, VersionSet};
    let mut w = trio(None);
    w.call(
        &addr(0),
        put("secret", "v", &VersionVector::new(), Quorum::All),
    );
    w.run_for(Duration::from_millis(200));
    let p = w.nodes[&addr(0)].view().partition_of(b"secret");
    let seg = segment_of(b"secret");
    let mut forged = VersionSet::new();
    forged.write(
        &VersionVector::new(),
        Version {
            dot: Dot::new(causeway::core::Actor::new(9, 1, 1), 1),
            value: Some(Bytes::from_static(b"forged")),
            ts: 0,
            content_type: None,
            expires: None,
        },
    );
    let answers = |w: &mut World, from: &str| {
        let now = w.clock(&addr(0));
        let node = w.nodes.get_mut(&addr(0)).unwrap();
        node.take_ready();
        let asks = [
            PeerMsg::AaeSegmentsReq {
                rid: 77,
                want: vec![(p, (0..BRANCHES as u8).collect())],
            },
            PeerMsg::AaeKeys {
                rid: 78,
                segments: vec![(p, seg)],
                keys: Vec::new(),
            },
            PeerMsg::AaeFinish {
                rid: 79,
                sets: vec![(Bytes::from_static(b"secret"), forged.clone())],
                clock: None,
            },
        ];
        for msg in asks {
            node.handle(
                now,
                Input::Peer {
                    from: from.to_string(),
                    msg,
                },
            );
        }
        let ready = node.take_ready();
        let sent = ready
            .early_messages
            .iter()
            .chain(&ready.messages)
            .filter(|(to, m)| {
                to == from && matches!(m, PeerMsg::AaeSegments { .. } | PeerMsg::AaeDiff { .. })
            })
            .count();
        let merged = node.local_state(b"secret").is_some_and(|s| {
            s.versions()
                .iter()
                .any(|v| v.value.as_deref() == Some(b"forged"))
        });
        (sent, merged)
    };
    assert_eq!(answers(&mut w, "10.9.9.9:7000"), (0, false), "an outsider");
    assert_eq!(
        answers(&mut w, &addr(1)),
        (2, true),
        "the shard's own replica"
    );
}
