//! Two clusters meshed both ways in the in-process world (issue 19): real-time feed, full sync
//! after a cut longer than the queue holds, tokens carried between clusters, siblings across
//! clusters, kept tombstones and a refused partition-count mismatch.

use super::world::{World, ctx_of, del, get, put, values};
use causeway::core::config::MeshUpstream;
use causeway::core::{
    Canary, Config, NodeId, Op, Quorum, ReqError, Response, SyncMode, VersionVector, View,
};
use std::time::Duration;

fn a(i: usize) -> NodeId {
    format!("10.0.1.{}:7000", i + 1)
}

fn b(i: usize) -> NodeId {
    format!("10.0.2.{}:7000", i + 1)
}

fn cluster_cfg(
    nodes: Vec<NodeId>,
    rf: usize,
    id: u32,
    upstream: NodeId,
    partitions: u32,
) -> Config {
    let mut cfg = Config::new(View::with_partitions(nodes, rf, partitions).unwrap());
    cfg.sync = SyncMode::Always;
    cfg.cluster = id;
    cfg.mesh_member = true;
    cfg.mesh_queue = 8;
    cfg.mesh_upstreams = vec![MeshUpstream {
        name: "other".into(),
        node: upstream,
    }];
    cfg
}

/// Cluster A (id 1, `a(0..3)`) and cluster B (id 2, `b(0..3)`), each the other's upstream.
fn meshed(canary: Option<Canary>, b_partitions: u32) -> World {
    meshed_with(3, 3, |c| {
        c.canary = canary;
        if c.cluster == 2 {
            c.view = View::with_partitions((0..3).map(b).collect(), 3, b_partitions).unwrap();
        }
    })
}

/// Cluster A (id 1, `a(0..n)`) and cluster B (id 2, `b(0..n)`) with replication factor `rf`,
/// each the other's upstream, every configuration passed through `tune` first.
fn meshed_with(n: usize, rf: usize, tune: impl Fn(&mut Config)) -> World {
    let mut ca = cluster_cfg((0..n).map(a).collect(), rf, 1, b(0), 64);
    tune(&mut ca);
    let mut w = World::with_config(ca, 11);
    let mut cb = cluster_cfg((0..n).map(b).collect(), rf, 2, a(0), 64);
    tune(&mut cb);
    for i in 0..n {
        w.start_with(&b(i), causeway::core::MemStorage::new(), cb.clone());
    }
    w.run_for(Duration::from_secs(2));
    w
}

fn cut_clusters(w: &mut World, cut: bool) {
    for i in 0..3 {
        for j in 0..3 {
            w.cut(&a(i), &b(j), cut);
        }
    }
}

fn missing_at_b(w: &World, keys: usize) -> usize {
    (0..keys)
        .map(|k| {
            (0..3)
                .filter(|i| {
                    w.nodes[&b(*i)]
                        .local_state(format!("k{k}").as_bytes())
                        .is_none()
                })
                .count()
        })
        .sum()
}

#[test]
fn writes_reach_the_other_cluster_with_their_own_dots() {
    let mut w = meshed(None, 64);
    let r = w.call(&a(1), put("k0", "x", &VersionVector::new(), Quorum::N(1)));
    let Ok(Response::Written { dot, .. }) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(dot.actor.cluster(), 1);
    w.run_for(Duration::from_millis(300));
    for i in 0..3 {
        let set = w.nodes[&b(i)]
            .local_state(b"k0")
            .expect("fed to every replica of B");
        assert_eq!(
            set.versions()[0].dot,
            dot,
            "received as is, never re-stamped"
        );
    }
    let st = w.nodes[&b(0)].status().mesh;
    assert_eq!(st.upstreams[0].cluster, Some(1));
    assert!(st.upstreams[0].full_syncs > 0);
}

#[test]
fn full_sync_repairs_what_a_cut_longer_than_the_queue_lost() {
    fn run(canary: Option<Canary>) -> usize {
        let mut w = meshed(canary, 64);
        cut_clusters(&mut w, true);
        for k in 0..100 {
            w.call(
                &a(k % 3),
                put(&format!("k{k}"), "v", &VersionVector::new(), Quorum::N(1)),
            );
        }
        w.run_for(Duration::from_secs(5));
        cut_clusters(&mut w, false);
        w.run_for(Duration::from_secs(60));
        missing_at_b(&w, 100)
    }
    assert_eq!(run(None), 0);
    assert!(
        run(Some(Canary::MeshDropQueueNoSync)) > 0,
        "without full sync the cut loses keys"
    );
}

#[test]
fn a_token_from_the_other_cluster_waits_then_503s_never_stale() {
    let mut w = meshed(None, 64);
    cut_clusters(&mut w, true);
    let r = w.call(&a(0), put("k", "new", &VersionVector::new(), Quorum::N(1)));
    let token = ctx_of(&r);
    let id = w.submit(&b(0), get("k", &token, Quorum::N(1)));
    let r = w.wait(id, Duration::from_secs(5)).unwrap();
    assert_eq!(
        r.result,
        Err(ReqError::Unsatisfiable),
        "no stale answer at B"
    );
    cut_clusters(&mut w, false);
    let id = w.submit(&b(1), get("k", &token, Quorum::N(1)));
    let r = w.wait(id, Duration::from_secs(5)).unwrap();
    assert_eq!(values(&r), vec!["new"]);
}

/// Found by the simulator (`mesh-3`): an upstream vouches, for a partition, only the actors that
/// wrote to it, so a token naming a write of another shard's node never reached the floor of
/// the partitions that node does not own, and every read with it there 503ed, forever.
#[test]
fn a_token_is_served_in_partitions_its_writer_never_wrote_to() {
    let mut w = meshed_with(4, 2, |_| {});
    let view = w.nodes[&a(0)].view().clone();
    let shard = view.shard_of_node(&a(0)).unwrap();
    let key = |mine: bool| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| (view.shard_of_key(k.as_bytes()) == shard) == mine)
            .unwrap()
    };
    let (written, other) = (key(true), key(false));
    let r = w.call(
        &a(0),
        put(&written, "x", &VersionVector::new(), Quorum::N(1)),
    );
    let token = ctx_of(&r);
    w.run_for(Duration::from_secs(3));
    for i in 0..4 {
        let r = w.call(&b(i), get(&other, &token, Quorum::N(1)));
        assert!(r.result.is_ok(), "at {}: {:?}", b(i), r.result);
        let r = w.call(&b(i), get(&written, &token, Quorum::N(1)));
        assert_eq!(values(&r), vec!["x"], "at {}", b(i));
    }
}

/// Found by the simulator (`mesh-2`, 50–200 ms each way): a full-sync step had one
/// `mesh_sync_interval` to be answered, so over a round trip longer than that every sync with
/// a difference to repair was abandoned, and what a cut had lost stayed lost.
#[test]
fn full_syncs_complete_over_a_round_trip_longer_than_the_sync_interval() {
    let mut w = meshed_with(3, 3, |c| c.mesh_sync_interval = Duration::from_millis(60));
    w.faults.jitter_ms = 120;
    cut_clusters(&mut w, true);
    for k in 0..40 {
        w.call(
            &a(k % 3),
            put(&format!("k{k}"), "v", &VersionVector::new(), Quorum::N(1)),
        );
    }
    w.run_for(Duration::from_secs(5));
    cut_clusters(&mut w, false);
    w.run_for(Duration::from_secs(30));
    assert_eq!(missing_at_b(&w, 40), 0);
    let st = w.nodes[&b(0)].status().mesh;
    assert!(st.upstreams[0].keys_repaired > 0, "{:?}", st.upstreams[0]);
}

#[test]
fn concurrent_writes_in_two_clusters_become_siblings_and_a_read_context_resolves_them() {
    let mut w = meshed(None, 64);
    cut_clusters(&mut w, true);
    w.call(
        &a(0),
        put("k", "from-a", &VersionVector::new(), Quorum::N(1)),
    );
    w.call(
        &b(0),
        put("k", "from-b", &VersionVector::new(), Quorum::N(1)),
    );
    cut_clusters(&mut w, false);
    w.run_for(Duration::from_secs(3));
    let r = w.call(&b(2), get("k", &VersionVector::new(), Quorum::N(1)));
    let mut v = values(&r);
    v.sort();
    assert_eq!(v, vec!["from-a", "from-b"]);
    let r = w.call(&b(2), put("k", "merged", &ctx_of(&r), Quorum::N(1)));
    let token = ctx_of(&r);
    w.run_for(Duration::from_secs(3));
    for n in [a(0), a(1), a(2), b(0)] {
        let r = w.call(&n, get("k", &token, Quorum::N(1)));
        assert_eq!(values(&r), vec!["merged"], "at {n}");
    }
}

#[test]
fn tombstones_are_kept_in_a_mesh() {
    let mut w = meshed(None, 64);
    let r = w.call(&a(0), put("k", "v", &VersionVector::new(), Quorum::N(1)));
    w.call(&a(0), del("k", &ctx_of(&r)));
    w.run_for(Duration::from_secs(40));
    for n in [a(0), b(0)] {
        let set = w.nodes[&n].local_state(b"k").expect("tombstone kept");
        assert!(set.is_deleted());
    }
}

#[test]
fn a_partition_count_mismatch_is_refused() {
    let mut w = meshed(None, 32);
    w.run_for(Duration::from_secs(2));
    let st = w.nodes[&b(0)].status().mesh;
    let why = st.upstreams[0].refused.clone().expect("refused");
    assert!(why.contains("partition counts differ"), "{why}");
    assert_eq!(st.upstreams[0].full_syncs, 0);
}

#[test]
fn nodes_of_another_cluster_may_send_only_mesh_messages() {
    let mut w = meshed(None, 64);
    let r = w.call(&b(0), put("k", "v", &VersionVector::new(), Quorum::N(1)));
    let Ok(Response::Written { dot, .. }) = r.result else {
        panic!("{r:?}")
    };
    let set = w.nodes[&b(0)].local_state(b"k").expect("written");
    cut_clusters(&mut w, true);
    let replicate = causeway::core::PeerMsg::Replicate {
        key: bytes::Bytes::from_static(b"other"),
        set: set.clone(),
        dots: vec![dot],
    };
    let why = w.nodes[&a(0)]
        .admits(&b(0), &replicate)
        .expect_err("a node of B is in none of A's views");
    assert_eq!(why.reason, "outsider");
    w.deliver(&b(0), &a(0), replicate.clone());
    assert!(
        w.nodes[&a(0)].local_state(b"other").is_none(),
        "refused replication is not stored"
    );
    let push = causeway::core::PeerMsg::MeshPush {
        sets: vec![(bytes::Bytes::from_static(b"other"), set)],
    };
    assert_eq!(w.nodes[&a(0)].admits(&b(0), &push), Ok(()));
    w.deliver(&b(0), &a(0), push);
    assert!(
        w.nodes[&a(0)].local_state(b"other").is_some(),
        "a push from the upstream is taken"
    );
    assert_eq!(w.nodes[&a(0)].admits(&a(1), &replicate), Ok(()));

    // Outside a mesh nothing changes for non-mesh messages, and mesh messages are refused.
    let plain = super::world::World::new(3, 3, 5);
    let node = &plain.nodes[&super::world::addr(0)];
    assert_eq!(node.admits(&b(0), &replicate), Ok(()));
    let ask = causeway::core::PeerMsg::MeshLayoutReq { rid: 1 };
    assert_eq!(
        node.admits(&b(0), &ask).expect_err("no mesh").reason,
        "not_in_mesh"
    );
}

#[test]
fn a_data_directory_keeps_its_cluster_id() {
    use causeway::core::{MemStorage, claim_cluster};
    let mut fresh = MemStorage::new();
    assert_eq!(claim_cluster(&mut fresh, 3), Ok(()));
    assert_eq!(claim_cluster(&mut fresh, 3), Ok(()), "the same id again");
    let why = claim_cluster(&mut fresh, 4).expect_err("another id");
    assert!(why.contains("cluster id 3"), "{why}");
    let mut w = super::world::World::new(1, 1, 3);
    let mut old = w.crash(&super::world::addr(0));
    let why = claim_cluster(&mut old, 5).expect_err("data written without an id is cluster 0");
    assert!(why.contains("cluster id 0"), "{why}");
    assert_eq!(claim_cluster(&mut old, 0), Ok(()));
}

fn c(i: usize) -> NodeId {
    format!("10.0.3.{}:7000", i + 1)
}

#[test]
fn a_new_cluster_bootstraps_by_pulling_from_its_upstream() {
    let mut ca = cluster_cfg((0..3).map(a).collect(), 3, 1, b(0), 64);
    ca.mesh_upstreams.clear();
    let mut w = World::with_config(ca, 5);
    for k in 0..300 {
        w.call(
            &a(k % 3),
            put(&format!("k{k}"), "v", &VersionVector::new(), Quorum::All),
        );
    }
    // Cluster C: its periodic full syncs are an hour apart, so only the pull brings the keys.
    let mut cc = cluster_cfg((0..3).map(c).collect(), 3, 3, a(0), 64);
    cc.mesh_sync_interval = Duration::from_secs(3600);
    for i in 0..3 {
        w.start_with(&c(i), causeway::core::MemStorage::new(), cc.clone());
    }
    w.run_for(Duration::from_secs(2));
    let held = |w: &World| {
        (0..300)
            .flat_map(|k| (0..3).map(move |i| (k, i)))
            .filter(|(k, i)| {
                w.nodes[&c(*i)]
                    .local_state(format!("k{k}").as_bytes())
                    .is_some()
            })
            .count()
    };
    assert_eq!(held(&w), 0, "nothing arrives before the pull");

    let unknown = w.call(&c(0), Op::AntiEntropy { peer: b(0) });
    assert!(
        matches!(&unknown.result, Err(ReqError::BadRequest(m)) if m.contains("mesh upstream")),
        "{unknown:?}"
    );
    let first = w.submit(&c(0), Op::AntiEntropy { peer: a(1) });
    let second = w.submit(&c(0), Op::AntiEntropy { peer: a(1) });
    let busy = w.wait(second, Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&busy.result, Err(ReqError::Unavailable(m)) if m.contains("already running")),
        "{busy:?}"
    );
    let r = w.wait(first, Duration::from_secs(10)).unwrap();
    let Ok(Response::AntiEntropy {
        keys_repaired,
        bytes,
        complete,
        ..
    }) = r.result
    else {
        panic!("{r:?}")
    };
    assert!(complete);
    assert_eq!(keys_repaired, 300);
    assert!(bytes > 0);
    w.run_for(Duration::from_secs(1));
    assert_eq!(
        held(&w),
        900,
        "the puller repaired its shard's other replicas"
    );
    let st = w.nodes[&c(0)].status().mesh;
    assert_eq!(
        st.upstreams[0].full_syncs, 64,
        "one full sync per partition"
    );

    let again = w.call(&c(0), Op::AntiEntropy { peer: a(2) });
    assert!(
        matches!(
            again.result,
            Ok(Response::AntiEntropy {
                keys_repaired: 0,
                complete: true,
                ..
            })
        ),
        "{again:?}"
    );
}
