//! Anti-entropy benchmark (`ci/bench aae`): two replicas of `--keys` keys of which `--diff`
//! differ; one exchange repairs them. Prints the bytes exchanged and the wall time of the repair,
//! against the bytes a naive exchange of every key with its digest would need.
//!
//! Usage: `cargo run --release -p causeway --example aae [KEYS] [DIFF]` (it uses only the core; the
//! release build `cargo test` already made serves it, where `--no-default-features` would rebuild
//! the crate)

use bytes::Bytes;
use causeway::core::{
    Actor, Config, Dot, Identity, Input, MemStorage, Node, Op, Request, Response, Storage, Time,
    Version, VersionSet, VersionVector, View,
};
use std::time::Instant;

fn set_of(actor: Actor, counter: u64, value: &[u8]) -> VersionSet {
    let mut s = VersionSet::new();
    let version = Version {
        dot: Dot::new(actor, counter),
        value: Some(Bytes::copy_from_slice(value)),
        ts: counter,
        content_type: None,
        expires: None,
    };
    s.write(&VersionVector::new(), version);
    s
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("KEYS is a number"));
    let diff: u64 = args
        .next()
        .map_or(100, |a| a.parse().expect("DIFF is a number"));
    let nodes = vec!["10.0.0.1:7000".to_string(), "10.0.0.2:7000".to_string()];
    let view = View::new(nodes.clone(), 2).expect("valid view");
    let writer = Actor::new(causeway::core::ring::node_hash(&nodes[0]), view.epoch, 1);
    let other = Actor::new(causeway::core::ring::node_hash(&nodes[1]), view.epoch, 1);

    let mut a = MemStorage::new();
    let mut naive_bytes = 0u64;
    for i in 0..keys {
        let key = format!("user:{i:010}");
        let set = set_of(writer, i + 1, format!("value-{i}").as_bytes());
        naive_bytes += key.len() as u64 + 8;
        a.put(key.as_bytes(), &set);
    }
    let mut b = a.clone();
    let stride = (keys / diff.max(1)).max(1);
    for j in 0..diff {
        let key = format!("user:{:010}", j * stride);
        b.put(key.as_bytes(), &set_of(other, j + 1, b"divergent"));
    }

    let cfg = Config::new(view);
    let now = Time::from_millis(1);
    let start_build = Instant::now();
    let mut na = Node::new(
        cfg.clone(),
        Identity {
            node: nodes[0].clone(),
            nonce: 1,
        },
        a,
        now,
    );
    let mut nb = Node::new(
        cfg,
        Identity {
            node: nodes[1].clone(),
            nonce: 2,
        },
        b,
        now,
    );
    let build_ms = start_build.elapsed().as_millis();

    let start = Instant::now();
    nb.handle(
        now,
        Input::Client(Request {
            id: 1,
            op: Op::AntiEntropy {
                peer: nodes[0].clone(),
            },
        }),
    );
    let mut reply = None;
    while reply.is_none() {
        let ready = nb.take_ready();
        let out_b = ready.collect(nb.storage_mut());
        reply = out_b.replies.into_iter().find(|r| r.id == 1);
        for (_, msg) in out_b.messages {
            na.handle(
                now,
                Input::Peer {
                    from: nodes[1].clone(),
                    msg,
                },
            );
        }
        let ready = na.take_ready();
        for (_, msg) in ready.collect(na.storage_mut()).messages {
            nb.handle(
                now,
                Input::Peer {
                    from: nodes[0].clone(),
                    msg,
                },
            );
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let Some(Ok(Response::AntiEntropy {
        keys_repaired,
        bytes,
        complete,
        ..
    })) = reply.map(|r| r.result)
    else {
        panic!("the exchange failed");
    };
    assert!(complete, "one round repairs {diff} differences");
    let converged = (0..diff).all(|j| {
        let key = format!("user:{:010}", j * stride);
        na.local_state(key.as_bytes()) == nb.local_state(key.as_bytes())
    });
    assert!(converged, "both replicas hold the merged version sets");
    println!("trees built for 2 x {keys} keys in {build_ms} ms; repaired {keys_repaired} keys");
    println!(
        "ratio aae_bytes_vs_naive={:.4}",
        bytes as f64 / naive_bytes as f64
    );
    println!("aae: keys={keys} diff={diff} bytes={bytes} ms={ms:.1} naive_bytes={naive_bytes}");
}
