//! Hostile input against real processes: malformed but well-framed peer messages leave every
//! node serving with its data unchanged and the refusals counted; a planted panic stops the
//! process (fail-stop); encryption at rest keeps values off the disk and refuses a wrong key.

use bytes::Bytes;
use causeway::core::{Actor, Op, PeerMsg, Quorum, Version, VersionSet, VersionVector, View};
use causeway_e2e::{Cluster, client, peer};
use std::time::Duration;

/// Writes `key` at every replica (`w=all`): each node holds it before the attack, so a read at
/// any node afterwards tells whether the attack changed it.
fn put(c: &Cluster, i: usize, key: &str, value: &str) {
    let r = client()
        .put(format!("{}/v1/kv/{key}?w=all", c.url(i)))
        .body(value.to_owned())
        .send()
        .expect("put");
    assert_eq!(r.status(), 204, "put {key}");
}

fn get(c: &Cluster, i: usize, key: &str) -> (u16, String) {
    let r = client()
        .get(format!("{}/v1/kv/{key}", c.url(i)))
        .send()
        .expect("get");
    (r.status().as_u16(), r.text().expect("body"))
}

/// Sum of `causeway_peer_rejected_total` over its reasons at node `i`.
fn rejected(c: &Cluster, i: usize) -> f64 {
    let text = client()
        .get(format!("{}/metrics", c.url(i)))
        .send()
        .expect("metrics")
        .text()
        .expect("body");
    text.lines()
        .filter(|l| l.starts_with("causeway_peer_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The malformed messages of issue 12, each claiming to come from a member.
fn malformed(view: &View) -> Vec<PeerMsg> {
    let with = |f: &dyn Fn(&mut View)| {
        let mut v = view.clone();
        f(&mut v);
        PeerMsg::Views { views: vec![v] }
    };
    let mut forged = VersionVector::new();
    forged.raise(Actor::new(1, view.epoch, 1), 1 << 62);
    let mut erase = VersionSet::new();
    let tomb = Version {
        dot: causeway::core::Dot::new(Actor::new(1, view.epoch, 1), 1 << 62),
        value: None,
        ts: 0,
        content_type: None,
        expires: None,
    };
    erase.write(&forged, tomb);
    vec![
        PeerMsg::Repair {
            key: Bytes::new(),
            set: VersionSet::new(),
        },
        with(&|v| {
            v.partitions = 0;
            v.assignment.clear();
            v.epoch += 1 << 32;
        }),
        with(&|v| {
            v.repl_factor = 0;
            v.epoch += 1 << 32;
        }),
        with(&|v| v.epoch = ((1u64 << 32) - 1) << 32),
        PeerMsg::Replicate {
            key: Bytes::from_static(b"k0"),
            set: erase,
            dots: vec![],
        },
        PeerMsg::Forward {
            rid: 1,
            op: Op::Put {
                key: Bytes::new(),
                value: Some(Bytes::from_static(b"x")),
                content_type: None,
                context: VersionVector::new(),
                w: Quorum::N(1),
                ttl: None,
            },
            epoch: view.epoch,
        },
    ]
}

#[test]
fn malformed_peer_messages_leave_every_node_serving() {
    // Plaintext peer links are accepted only by --insecure nodes; the validation under test
    // runs on every decoded frame, whatever secured the link (mutual TLS: security.rs).
    let c = Cluster::start("hostile-peer", 3, 3, &["--sync", "always", "--insecure"]);
    for k in 0..10 {
        put(&c, k % 3, &format!("k{k}"), &format!("value {k}"));
    }
    let view = View::new(c.addrs.clone(), 3).expect("the cluster's first view");
    let msgs = malformed(&view);
    for i in 0..3 {
        let mut link = peer::plain(&c.addrs[i]).expect("peer link");
        peer::send(&mut link, &c.addrs[(i + 1) % 3], &msgs).expect("send");
        // Garbage after the last frame: the link is dropped, the node keeps serving.
        use std::io::Write;
        let _ = link.write_all(&[
            0, 0, 0, 9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (0..3).any(|i| rejected(&c, i) < msgs.len() as f64) {
        assert!(
            std::time::Instant::now() < deadline,
            "refusals counted: {:?}",
            (0..3).map(|i| rejected(&c, i)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        for k in 0..10 {
            assert_eq!(
                get(&c, i, &format!("k{k}")),
                (200, format!("value {k}")),
                "node {i} key k{k}"
            );
        }
        let j: serde_json::Value = client()
            .get(format!("{}/v1/cluster", c.url(i)))
            .send()
            .expect("cluster")
            .json()
            .expect("json");
        assert_eq!(j["epoch"].as_u64(), Some(1), "node {i}: {j}");
    }
    // The operator's view change still works, and writes after it are kept.
    let r = client()
        .put(format!("{}/v1/cluster/view", c.url(0)))
        .json(&serde_json::json!({ "nodes": c.addrs, "repl_factor": 3 }))
        .send()
        .expect("view change");
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    put(&c, 1, "after", "kept");
    assert_eq!(get(&c, 1, "after"), (200, "kept".into()));
}

#[test]
fn a_panic_stops_the_process() {
    let mut c = Cluster::start("failstop", 1, 1, &["--test-panic-on-key", "boom"]);
    put(&c, 0, "fine", "ok");
    let _ = client()
        .put(format!("{}/v1/kv/boom", c.url(0)))
        .body("x")
        .timeout(Duration::from_secs(3))
        .send();
    let status = c
        .wait_exit(0, Duration::from_secs(10))
        .expect("the node exits after a panic instead of answering 503 forever");
    assert_eq!(status.code(), Some(101), "{status:?}");
    assert!(c.log(0).contains("fail-stop"), "{}", c.log(0));
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn keyring(path: &std::path::Path, byte: u8) {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    std::fs::write(path, format!("# test keyring\n1 {key}\n")).expect("key file");
}

#[test]
fn encryption_at_rest_keeps_values_off_the_disk() {
    let keys = std::env::temp_dir().join(format!("causeway-e2e-keys-{}", std::process::id()));
    std::fs::create_dir_all(&keys).expect("mkdir");
    let (good, wrong) = (keys.join("good"), keys.join("wrong"));
    keyring(&good, 1);
    keyring(&wrong, 2);
    let good_s = good.to_str().expect("utf-8").to_owned();
    let mut c = Cluster::start(
        "at-rest",
        1,
        1,
        &["--sync", "always", "--encryption-key-file", &good_s],
    );
    let values: Vec<String> = (0..20)
        .map(|i| format!("plaintext-canary-{i}-{}", "x".repeat(i * 10)))
        .collect();
    for (i, v) in values.iter().enumerate() {
        put(&c, 0, &format!("key{i}"), v);
    }
    c.kill(0);
    let needle = b"plaintext-canary-";
    for f in files(&c.data_dir(0)) {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} holds a plaintext value",
            f.display()
        );
    }
    c.restart(0);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(get(&c, 0, &format!("key{i}")), (200, v.clone()));
    }
    c.kill(0);
    // A wrong key, or none, is refused at start with a clear message.
    let at = c
        .args_mut(0)
        .iter()
        .position(|a| a == &good_s)
        .expect("key flag");
    c.args_mut(0)[at] = wrong.to_str().expect("utf-8").to_owned();
    c.start_again(0);
    let status = c.wait_exit(0, Duration::from_secs(10)).expect("refused");
    assert!(!status.success());
    assert!(
        c.log(0).contains("cannot open the data directory"),
        "{}",
        c.log(0)
    );
    c.args_mut(0).drain(at - 1..=at);
    c.start_again(0);
    let status = c.wait_exit(0, Duration::from_secs(10)).expect("refused");
    assert!(!status.success());
    assert!(c.log(0).contains("encrypted at rest"), "{}", c.log(0));
    let _ = std::fs::remove_dir_all(&keys);
}
