//! Hostile peer input: arbitrary frame bytes through the frame decoder and [`validate`], and
//! arbitrary well-typed [`PeerMsg`]s with hostile numbers (huge epochs and counters, zero
//! partitions and replication, empty and oversized keys, malformed version sets) through
//! `validate` and, when accepted, a core node's `handle`. Nothing may panic; a node that saw the
//! messages must go on serving.

use bytes::Bytes;
use causeway::core::clock::PartitionClock;
use causeway::core::message::decode_frame;
use causeway::core::ring::{Epoch, epoch_number};
use causeway::core::validate::MAX_EPOCH_STEP;
use causeway::core::{
    Actor, Config, Dot, Identity, Input, MemStorage, Node, Op, PeerMsg, Quorum, Request, Response,
    Time, Version, VersionSet, VersionVector, View, validate,
};
use proptest::prelude::*;
use serde::Serialize;
use std::time::Duration;

const ME: &str = "10.0.0.1:7000";

fn nodes() -> Vec<String> {
    (1..=3).map(|i| format!("10.0.0.{i}:7000")).collect()
}

fn node() -> Node<MemStorage> {
    let view = View::new(nodes(), 3).expect("view");
    let id = Identity {
        node: ME.into(),
        nonce: 7,
    };
    let mut n = Node::new(
        Config::new(view),
        id,
        MemStorage::new(),
        Time::from_millis(1_000_000),
    );
    for i in 0..8 {
        put(&mut n, i, &format!("k{i}"));
    }
    n.take_ready();
    n
}

fn put(n: &mut Node<MemStorage>, id: u64, key: &str) {
    let op = Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(Bytes::from_static(b"v")),
        content_type: None,
        context: VersionVector::new(),
        w: Quorum::N(1),
        ttl: None,
    };
    n.handle(
        Time::from_millis(1_000_000),
        Input::Client(Request { id, op }),
    );
}

/// Numbers an attacker picks: edge values more often than not.
fn hostile_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 62),
        Just(((1u64 << 32) - 1) << 32),
        0u64..16,
        any::<u64>(),
    ]
}

fn hostile_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 0u32..70, any::<u32>()]
}

fn epoch() -> impl Strategy<Value = Epoch> {
    prop_oneof![
        hostile_u64(),
        (0u64..4, any::<u32>()).prop_map(|(n, p)| (n << 32) | u64::from(p)),
        Just(((1u64 << 32) - 1) << 32),
    ]
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        Just(Bytes::from(vec![b'k'; 1025])),
        (0u8..8).prop_map(|i| Bytes::from(format!("k{i}"))),
        prop::collection::vec(any::<u8>(), 1..12).prop_map(Bytes::from),
    ]
}

fn actor() -> impl Strategy<Value = Actor> {
    (hostile_u32(), epoch(), hostile_u32(), hostile_u32())
        .prop_map(|(n, e, i, h)| Actor::from_parts(n, e, i, u64::from(h)))
}

fn dot() -> impl Strategy<Value = Dot> {
    (actor(), hostile_u64()).prop_map(|(a, c)| Dot::new(a, c))
}

fn context() -> impl Strategy<Value = VersionVector> {
    prop::collection::vec((actor(), hostile_u64()), 0..4).prop_map(|v| {
        let mut ctx = VersionVector::new();
        for (a, n) in v {
            ctx.insert_entry(a, n);
        }
        ctx
    })
}

/// A handoff claim: exact dots (any counters, gaps included) and floors.
fn partition_clock() -> impl Strategy<Value = PartitionClock> {
    (prop::collection::vec(dot(), 0..4), context()).prop_map(|(dots, floors)| {
        let mut clock = PartitionClock::default();
        for d in dots {
            clock.dots.add(d);
        }
        clock.floors = floors;
        clock
    })
}

/// The wire form of a version set, to build malformed ones (unsorted, uncovered dots).
#[derive(Serialize)]
struct RawSet {
    context: VersionVector,
    versions: Vec<Version>,
}

fn version_set() -> impl Strategy<Value = VersionSet> {
    let version = (
        dot(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
    )
        .prop_map(|(dot, v)| Version {
            dot,
            value: v.map(Bytes::from),
            ts: 0,
            content_type: None,
            expires: None,
        });
    (
        context(),
        prop::collection::vec(version, 0..4),
        any::<bool>(),
    )
        .prop_map(|(context, versions, cover)| {
            let mut context = context;
            if cover {
                for v in &versions {
                    context.add(v.dot);
                }
            }
            let raw = RawSet { context, versions };
            let cfg = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec(&raw, cfg).expect("encode");
            bincode::serde::decode_from_slice(&bytes, cfg)
                .expect("same wire form")
                .0
        })
}

fn view() -> impl Strategy<Value = View> {
    (
        epoch(),
        prop::collection::vec(0usize..5, 0..5),
        prop_oneof![Just(0usize), 1usize..4, Just(usize::MAX)],
        hostile_u32().prop_map(|p| p % 100),
        prop::collection::vec(hostile_u32(), 0..70),
    )
        .prop_map(|(epoch, ids, repl_factor, partitions, assignment)| View {
            epoch,
            nodes: ids
                .into_iter()
                .map(|i| format!("10.0.0.{i}:7000"))
                .collect(),
            repl_factor,
            partitions,
            assignment,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), context()).prop_map(|(key, context)| Op::Get {
            key,
            context,
            r: Quorum::N(1)
        }),
        (key(), context(), any::<u8>()).prop_map(|(key, context, w)| Op::Put {
            key,
            value: Some(Bytes::from_static(b"x")),
            content_type: None,
            context,
            w: Quorum::N(w),
            ttl: None,
        }),
        hostile_u32().prop_map(|shard| Op::KeyCount { shard }),
    ]
}

fn peer_msg() -> impl Strategy<Value = PeerMsg> {
    let rid = || hostile_u64();
    prop_oneof![
        (rid(), op(), epoch()).prop_map(|(rid, op, epoch)| PeerMsg::Forward { rid, op, epoch }),
        (rid(), epoch()).prop_map(|(rid, epoch)| PeerMsg::NotReplica { rid, epoch }),
        (key(), version_set(), prop::collection::vec(dot(), 0..3))
            .prop_map(|(key, set, dots)| PeerMsg::Replicate { key, set, dots }),
        (key(), prop::collection::vec(dot(), 0..3))
            .prop_map(|(key, dots)| PeerMsg::ReplicateAck { key, dots }),
        (rid(), key()).prop_map(|(rid, key)| PeerMsg::Fetch { rid, key }),
        (rid(), version_set()).prop_map(|(rid, set)| PeerMsg::FetchReply { rid, set }),
        (key(), version_set()).prop_map(|(key, set)| PeerMsg::Repair { key, set }),
        (key(), prop::collection::vec(dot(), 0..3))
            .prop_map(|(key, dots)| PeerMsg::Reap { key, dots }),
        (
            rid(),
            prop::option::of(key()),
            prop::option::of(key()),
            hostile_u32()
        )
            .prop_map(|(rid, start, after, limit)| PeerMsg::ListPart {
                rid,
                start,
                end: None,
                after,
                limit,
                full: false,
            }),
        (
            rid(),
            prop::collection::vec(
                (hostile_u32(), prop::collection::vec(any::<u8>(), 0..3)),
                0..3
            )
        )
            .prop_map(|(rid, want)| PeerMsg::AaeSegmentsReq { rid, want }),
        (
            rid(),
            prop::collection::vec(
                (
                    hostile_u32(),
                    any::<u8>(),
                    prop::collection::vec(any::<u64>(), 0..3)
                ),
                0..3
            )
        )
            .prop_map(|(rid, segments)| PeerMsg::AaeSegments { rid, segments }),
        (
            rid(),
            prop::collection::vec((hostile_u32(), any::<u16>()), 0..3),
            prop::collection::vec((key(), any::<u64>()), 0..3)
        )
            .prop_map(|(rid, segments, keys)| PeerMsg::AaeKeys {
                rid,
                segments,
                keys
            }),
        (epoch(), hostile_u32()).prop_map(|(epoch, views)| PeerMsg::Ping { epoch, views }),
        (epoch(), hostile_u32()).prop_map(|(epoch, views)| PeerMsg::Pong { epoch, views }),
        prop::collection::vec(view(), 0..3).prop_map(|views| PeerMsg::Views { views }),
        (
            actor(),
            prop::option::of(epoch()),
            prop::collection::vec((actor(), hostile_u64()), 0..3),
            prop::collection::vec(hostile_u32(), 0..3)
        )
            .prop_map(|(actor, since, olds, partitions)| PeerMsg::FloorCheck {
                actor,
                since,
                olds,
                partitions
            }),
        (actor(), prop::collection::vec(hostile_u32(), 0..3))
            .prop_map(|(actor, partitions)| PeerMsg::FloorAck { actor, partitions }),
        (0usize..6).prop_map(|i| PeerMsg::Join {
            node: format!("10.0.0.{i}:7000")
        }),
        (
            hostile_u32(),
            epoch(),
            hostile_u64(),
            hostile_u32(),
            prop::option::of(partition_clock()),
            prop::collection::vec((key(), version_set()), 0..3),
            any::<bool>()
        )
            .prop_map(|(partition, epoch, stream, seq, clock, sets, last)| {
                PeerMsg::HandoffBatch {
                    partition,
                    epoch,
                    stream,
                    seq,
                    clock,
                    sets,
                    last,
                }
            }),
        (hostile_u32(), hostile_u64(), hostile_u32(), any::<bool>()).prop_map(
            |(partition, stream, seq, ok)| PeerMsg::HandoffAck {
                partition,
                stream,
                seq,
                ok
            }
        ),
    ]
}

/// After hostile input the node still serves a write and a read of a fresh key, and its epoch
/// moved by no more than a legitimate jump.
fn still_serves(n: &mut Node<MemStorage>, before: Epoch) -> Result<(), TestCaseError> {
    let now = Time::from_millis(1_001_000);
    n.handle(now, Input::Tick);
    n.take_ready();
    prop_assert!(epoch_number(n.view().epoch) <= epoch_number(before) + MAX_EPOCH_STEP);
    let id = 1_000_000;
    let key = Bytes::from_static(b"fresh-after-hostile-input");
    let op = Op::Get {
        key,
        context: VersionVector::new(),
        r: Quorum::N(1),
    };
    n.handle(now, Input::Client(Request { id, op }));
    let ready = n.take_ready();
    let r = ready.collect(n.storage_mut());
    // A node whose view changed may forward instead of answering; it must not have panicked.
    if let Some(reply) = r.replies.iter().find(|r| r.id == id) {
        prop_assert!(
            matches!(reply.result, Ok(Response::Read { .. }) | Err(_)),
            "{reply:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_decode_or_fail_and_validate_without_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        let n = node();
        if let Ok((_, msg)) = decode_frame(&bytes) {
            let _ = validate(&msg, &n.peer_limits());
        }
    }

    #[test]
    fn arbitrary_messages_never_panic_the_core(
        msgs in prop::collection::vec((peer_msg(), 0usize..5), 1..6)
    ) {
        let mut n = node();
        let before = n.view().epoch;
        let mut now = Time::from_millis(1_000_000);
        for (msg, from) in msgs {
            // Round trip through the wire form, as the transport delivers it.
            let cfg = bincode::config::standard();
            let from = format!("10.0.0.{from}:7000");
            let body = bincode::serde::encode_to_vec((&from, &msg), cfg).expect("encode");
            let (from, msg) = decode_frame(&body).expect("decodes its own encoding");
            if validate(&msg, &n.peer_limits()).is_ok() {
                n.handle(now, Input::Peer { from, msg });
            }
            now = now + Duration::from_millis(30);
            n.handle(now, Input::Tick);
            n.take_ready();
        }
        still_serves(&mut n, before)?;
    }
}

#[test]
fn the_epoch_attack_is_refused_and_the_next_view_change_works() {
    let mut n = node();
    let attack = View {
        epoch: ((1u64 << 32) - 1) << 32,
        ..n.view().clone()
    };
    let msg = PeerMsg::Views {
        views: vec![attack],
    };
    let why = validate(&msg, &n.peer_limits()).expect_err("refused");
    assert_eq!(why.reason, "epoch");
    let before = epoch_number(n.view().epoch);
    let op = Op::ChangeView {
        nodes: nodes()[..2].to_vec(),
        repl_factor: Some(2),
    };
    n.handle(
        Time::from_millis(1_000_000),
        Input::Client(Request { id: 99, op }),
    );
    let ready = n.take_ready();
    let r = ready.collect(n.storage_mut());
    let reply = r.replies.iter().find(|r| r.id == 99).expect("answered");
    assert!(
        matches!(reply.result, Ok(Response::ViewChanged { .. })),
        "{reply:?}"
    );
    assert_eq!(epoch_number(n.view().epoch), before + 1);
}

#[test]
fn malformed_views_and_keys_are_refused() {
    let n = node();
    let limits = n.peer_limits();
    let good = n.view().clone();
    let cases = [
        View {
            partitions: 0,
            assignment: vec![],
            ..good.clone()
        },
        View {
            repl_factor: 0,
            ..good.clone()
        },
        View {
            assignment: vec![7; good.partitions as usize],
            ..good.clone()
        },
        View {
            nodes: vec![ME.into(), ME.into()],
            ..good.clone()
        },
    ];
    for v in cases {
        let msg = PeerMsg::Views {
            views: vec![v.clone()],
        };
        assert_eq!(
            validate(&msg, &limits).map_err(|r| r.reason),
            Err("view"),
            "{v:?}"
        );
    }
    let repair = PeerMsg::Repair {
        key: Bytes::new(),
        set: VersionSet::new(),
    };
    assert_eq!(validate(&repair, &limits).map_err(|r| r.reason), Err("key"));
    // A context claiming every write of an actor up to 2^62 is refused.
    let mut ctx = VersionVector::new();
    ctx.raise(Actor::new(1, good.epoch, 1), 1 << 62);
    let forged = PeerMsg::Forward {
        rid: 1,
        op: Op::Get {
            key: Bytes::from_static(b"k"),
            context: ctx,
            r: Quorum::N(1),
        },
        epoch: good.epoch,
    };
    assert_eq!(
        validate(&forged, &limits).map_err(|r| r.reason),
        Err("context")
    );
    // A write of this node's own actor that it never issued.
    let mut set = VersionSet::new();
    let (me, issued) = limits.own;
    let v = Version {
        dot: Dot::new(me, issued + 1),
        value: None,
        ts: 0,
        content_type: None,
        expires: None,
    };
    set.write(&VersionVector::new(), v);
    let replicate = PeerMsg::Replicate {
        key: Bytes::from_static(b"k"),
        set,
        dots: vec![],
    };
    assert_eq!(
        validate(&replicate, &limits).map_err(|r| r.reason),
        Err("context")
    );
    assert!(validate(&PeerMsg::Views { views: vec![good] }, &limits).is_ok());
}
