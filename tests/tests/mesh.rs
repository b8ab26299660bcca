//! Two 3-node clusters meshed both ways through `causeway serve` (docs/mesh.md): each is the
//! other's upstream, with distinct cluster ids. 10,000 writes split across both, one cluster
//! stopped for 30 s mid-load and restarted, then every key reads the same at every node of both;
//! a third cluster bootstraps every key with `causeway admin aae pull` from one of them; over
//! TLS, clusters with CAs of their own mesh through `--mesh-ca`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use causeway_e2e::{Client, Cluster, Opts, credentials, free_port, run_cli, secure_flags};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest wait for a set of nodes to agree on every key.
const CONVERGE: Duration = Duration::from_secs(60);
/// How long cluster B stays down while A takes writes.
const DOWN: Duration = Duration::from_secs(30);
/// Writes of the load, in all.
const WRITES: usize = 10_000;
/// Writes per `POST /v1/batch` of the load.
const BATCH: usize = 100;
/// Most gets per `POST /v1/batch` when reading keys back (the API's limit is 1,000).
const READ_BATCH: usize = 1000;

fn loopback() -> Vec<String> {
    (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect()
}

/// A cluster with cluster id `id` on `addrs` pulling from the cluster of `upstream`, with full
/// syncs `sync_ms` apart.
fn meshed(name: &str, id: u32, addrs: &[String], upstream: &str, sync_ms: u64) -> Cluster {
    let (id, sync_ms) = (id.to_string(), sync_ms.to_string());
    let up = format!("other={upstream}");
    let flags = [
        "--insecure",
        "--cluster-id",
        &id,
        "--mesh-member",
        "--mesh-upstream",
        &up,
        "--mesh-sync-interval-ms",
        &sync_ms,
    ];
    let opts = Opts {
        addrs: Some(addrs.to_vec()),
        ..Opts::default()
    };
    Cluster::start_with(name, 3, 3, &flags, opts)
}

fn put(c: &Client, node: &str, key: &str, value: &str) {
    let r = c
        .put(format!("http://{node}/v1/kv/{key}"))
        .body(value.to_owned())
        .send()
        .expect("PUT");
    assert!(
        r.status().is_success(),
        "PUT {key} at {node}: {}",
        r.status()
    );
}

/// Runs `ops` as one `POST /v1/batch` at `node` and returns each operation's result.
fn batch(c: &Client, node: &str, ops: Vec<Value>) -> Vec<Value> {
    let r = c
        .post(format!("http://{node}/v1/batch"))
        .json(&json!({ "ops": ops }))
        .send()
        .expect("POST /v1/batch");
    assert_eq!(r.status(), 200, "batch at {node}");
    let mut reply: Value = r.json().expect("JSON");
    match reply["results"].take() {
        Value::Array(results) => results,
        other => panic!("no results: {other}"),
    }
}

/// Writes `writes` (key, value, context of an earlier read or none) at `node` in one batch;
/// every write must succeed.
fn put_all(c: &Client, node: &str, writes: &[(String, String, Option<String>)]) {
    let ops = writes
        .iter()
        .map(|(k, v, ctx)| {
            let mut op = json!({"op": "put", "key": k, "value": B64.encode(v)});
            if let Some(ctx) = ctx {
                op["context"] = ctx.clone().into();
            }
            op
        })
        .collect();
    for (r, (k, _, _)) in batch(c, node, ops).iter().zip(writes) {
        assert_eq!(r["status"], 204, "PUT {k} at {node}: {r}");
    }
}

/// What `node`'s own replica holds for each of `keys` (r=1): its live values, decoded, and the
/// context it answered (None when the read failed).
fn read_all(c: &Client, node: &str, keys: &[&str]) -> Vec<Option<(Vec<String>, String)>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(READ_BATCH) {
        let ops = chunk
            .iter()
            .map(|k| json!({"op": "get", "key": k, "r": "1"}))
            .collect();
        for r in batch(c, node, ops) {
            let values = r["values"].as_array().map(|vs| {
                vs.iter()
                    .filter_map(|v| B64.decode(v.as_str()?).ok())
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .collect()
            });
            out.push(values.map(|vs| (vs, r["context"].as_str().unwrap_or("").to_owned())));
        }
    }
    out
}

/// Waits until every key of `want` reads exactly its value (one live version, no sibling) at
/// every node of `nodes`; panics naming what still differs after [`CONVERGE`].
fn converge(c: &Client, nodes: &[String], want: &BTreeMap<String, String>) -> Duration {
    let started = Instant::now();
    let mut pending: Vec<(usize, Vec<&str>)> = (0..nodes.len())
        .map(|n| (n, want.keys().map(String::as_str).collect()))
        .collect();
    loop {
        for (n, keys) in &mut pending {
            let reads = read_all(c, &nodes[*n], keys);
            let mut still = Vec::new();
            for (k, read) in keys.iter().zip(reads) {
                if read.map(|(vs, _)| vs) != Some(vec![want[*k].clone()]) {
                    still.push(*k);
                }
            }
            *keys = still;
        }
        pending.retain(|(_, keys)| !keys.is_empty());
        if pending.is_empty() || started.elapsed() >= CONVERGE {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let missing: Vec<String> = pending
        .iter()
        .flat_map(|(n, keys)| {
            keys.iter()
                .take(5)
                .map(move |k| format!("{k} at {}", nodes[*n]))
        })
        .collect();
    assert!(
        pending.is_empty(),
        "{} key reads still differ after {CONVERGE:?}, e.g. {missing:?}",
        pending.iter().map(|(_, k)| k.len()).sum::<usize>()
    );
    started.elapsed()
}

fn mesh_status(c: &Client, node: &str) -> Value {
    c.get(format!("http://{node}/v1/mesh"))
        .send()
        .expect("GET /v1/mesh")
        .json()
        .expect("JSON")
}

/// The load's next `BATCH` new keys, from `*next` on, with their values.
fn fresh(next: &mut usize) -> Vec<(String, String, Option<String>)> {
    let batch = (*next..*next + BATCH)
        .map(|k| (format!("k{k}"), format!("v{k}"), None))
        .collect();
    *next += BATCH;
    batch
}

#[test]
fn ten_thousand_writes_converge_across_a_30s_stop_and_a_new_cluster_pulls_them_all() {
    let test_started = Instant::now();
    let (a_addrs, b_addrs) = (loopback(), loopback());
    let a = meshed("mesh-a", 1, &a_addrs, &b_addrs[0], 200);
    let mut b = meshed("mesh-b", 2, &b_addrs, &a_addrs[0], 200);
    let c = a.client();
    let all: Vec<String> = a_addrs.iter().chain(&b_addrs).cloned().collect();
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let (mut next, mut writes, mut turn) = (0, 0, 0);
    // Alternating between the clusters, each batch at the next node of its cluster.
    let mut split = |want: &mut BTreeMap<String, String>, next: &mut usize, writes: &mut usize| {
        let at = if turn % 2 == 0 { &a_addrs } else { &b_addrs };
        let w = fresh(next);
        put_all(&c, &at[(turn / 2) % 3], &w);
        want.extend(w.into_iter().map(|(k, v, _)| (k, v)));
        *writes += BATCH;
        turn += 1;
    };

    // 4,000 writes split across both clusters.
    while writes < 4000 {
        split(&mut want, &mut next, &mut writes);
    }
    // B stopped for 30 s while A takes 3,000 writes, paced over the stop: 2,900 new keys and
    // 100 keys B wrote before, overwritten with the context A read.
    for i in 0..3 {
        b.kill(i);
    }
    let down = Instant::now();
    let rounds = 3000 / BATCH;
    for round in 0..rounds {
        let due = down + DOWN * round as u32 / rounds as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let at = &a_addrs[round % 3];
        let w = if round == rounds / 2 {
            let keys: Vec<String> = (BATCH..2 * BATCH).map(|k| format!("k{k}")).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let reads = read_all(&c, at, &refs);
            keys.iter()
                .zip(reads)
                .map(|(k, read)| {
                    let (vs, ctx) = read.unwrap_or_else(|| panic!("reading {k} at {at}"));
                    assert_eq!(vs, [want[k].clone()], "{k} at {at} before the overwrite");
                    (k.clone(), format!("{}-again", want[k]), Some(ctx))
                })
                .collect()
        } else {
            fresh(&mut next)
        };
        put_all(&c, at, &w);
        want.extend(w.into_iter().map(|(k, v, _)| (k, v)));
        writes += BATCH;
    }
    std::thread::sleep(DOWN.saturating_sub(down.elapsed()));
    for i in 0..3 {
        b.start_again(i);
    }
    for i in 0..3 {
        b.wait_ready(i);
    }
    eprintln!("B restarted {:?} after it stopped", down.elapsed());
    // The rest of the load, split across both again while B catches up.
    while writes < WRITES {
        split(&mut want, &mut next, &mut writes);
    }
    assert_eq!((writes, want.len()), (WRITES, WRITES - BATCH));
    let took = converge(&c, &all, &want);
    eprintln!(
        "{} keys ({WRITES} writes) read the same at all 6 nodes {took:?} after the last write",
        want.len()
    );

    let mut repaired = 0;
    for node in &b_addrs {
        let m = mesh_status(&c, node);
        assert_eq!(m["cluster"], 2, "{m}");
        let up = &m["upstreams"][0];
        assert_eq!(up["name"], "other", "{m}");
        assert_eq!(up["cluster"], 1, "{m}");
        assert!(up["refused"].is_null(), "{m}");
        assert!(up["full_syncs"].as_u64().unwrap_or(0) > 0, "{m}");
        repaired += up["keys_repaired"].as_u64().unwrap_or(0);
    }
    assert!(repaired > 0, "full syncs repaired what B missed while down");
    let a_side = mesh_status(&c, &a_addrs[0]);
    assert_eq!(a_side["upstreams"][0]["cluster"], 2, "{a_side}");
    let metrics = c
        .get(format!("http://{}/metrics", b_addrs[0]))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("causeway_mesh_full_syncs_total{upstream=\"other\"}")),
        "no mesh metrics:\n{metrics}"
    );

    // A new cluster C pulling from A, its periodic full syncs an hour apart: only the operator's
    // pull brings it the keys, which the pulling node repairs to its shard's other replicas.
    let c_addrs = loopback();
    let _c_cluster = meshed("mesh-c", 3, &c_addrs, &a_addrs[0], 3_600_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mesh_status(&c, &c_addrs[0])["upstreams"][0]["cluster"] != 1 {
        assert!(Instant::now() < deadline, "A's layout never reached C");
        std::thread::sleep(Duration::from_millis(100));
    }
    let node = format!("http://{}", c_addrs[0]);
    let pulled = Instant::now();
    let out = run_cli(
        &[
            "admin",
            "aae",
            "pull",
            "--node",
            &node,
            "--peer",
            &a_addrs[1],
            "--until-complete",
            "--json",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply["complete"], true, "{reply}");
    assert_eq!(reply["keys_repaired"], want.len(), "{reply}");
    let took = converge(&c, &c_addrs, &want);
    eprintln!(
        "C pulled {} keys ({} bytes) in {:?}; every node of C held them {took:?} later",
        want.len(),
        reply["bytes"],
        pulled.elapsed() - took
    );
    eprintln!("mesh test took {:?}", test_started.elapsed());
}

#[test]
fn clusters_with_their_own_cas_mesh_over_tls_through_mesh_ca() {
    let a_addr = format!("127.0.0.1:{}", free_port());
    let b_addr = format!("127.0.0.1:{}", free_port());
    // A's certificate from the shared CA, B's from a CA of its own, both issued up front so
    // each cluster can name the other's CA.
    secure_flags(&a_addr);
    let b_dir = std::env::temp_dir().join(format!("causeway-e2e-mesh-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&b_dir);
    let out = run_cli(&["certs", "--out", &b_dir.to_string_lossy(), &b_addr], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a_ca = credentials().tls_dir.join("ca.pem");
    let b_ca = b_dir.join("ca.pem");
    let start = |name: &str, id: &str, me: &str, upstream: &str, ca: &std::path::Path, dir| {
        let up = format!("other={upstream}");
        let ca = ca.to_string_lossy().into_owned();
        let flags = [
            "--cluster-id",
            id,
            "--mesh-member",
            "--mesh-upstream",
            &up,
            "--mesh-ca",
            &ca,
            "--mesh-sync-interval-ms",
            "200",
        ];
        let opts = Opts {
            addrs: Some(vec![me.to_owned()]),
            tls_dir: dir,
            ..Opts::default()
        };
        Cluster::start_with(name, 1, 1, &flags, opts)
    };
    let a = start("mesh-tls-a", "1", &a_addr, &b_addr, &b_ca, None);
    let b = start(
        "mesh-tls-b",
        "2",
        &b_addr,
        &a_addr,
        &a_ca,
        Some(b_dir.clone()),
    );
    assert!(a.secure && b.secure);
    let c = a.client();
    let mut want = BTreeMap::new();
    for k in 0..100 {
        let (key, value) = (format!("t{k}"), format!("v{k}"));
        put(&c, if k % 2 == 0 { &a_addr } else { &b_addr }, &key, &value);
        want.insert(key, value);
    }
    let took = converge(&c, &[a_addr.clone(), b_addr.clone()], &want);
    eprintln!("100 keys at both TLS clusters {took:?} after the last write");
    for (node, other) in [(&a_addr, 2), (&b_addr, 1)] {
        let m = mesh_status(&c, node);
        let up = &m["upstreams"][0];
        assert_eq!(up["cluster"], other, "{m}");
        assert!(up["full_syncs"].as_u64().unwrap_or(0) > 0, "{m}");
    }
    let _ = std::fs::remove_dir_all(&b_dir);
}
