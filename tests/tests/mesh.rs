//! Two 3-node clusters meshed both ways through `causeway serve` (docs/mesh.md): each is the
//! other's upstream, with distinct cluster ids. Writes at either reach every node of both; a
//! cluster stopped while the other takes writes catches up through full syncs once restarted;
//! over TLS, clusters with CAs of their own mesh through `--mesh-ca`.

use causeway_e2e::{
    Client, Cluster, Opts, context_of, credentials, free_port, run_cli, secure_flags,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest wait for both clusters to agree on every key.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long cluster B stays down while A takes writes.
const DOWN: Duration = Duration::from_secs(10);

fn loopback() -> Vec<String> {
    (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect()
}

/// A cluster with cluster id `id` on `addrs` pulling from the cluster of `upstream`.
fn meshed(name: &str, id: u32, addrs: &[String], upstream: &str) -> Cluster {
    let id = id.to_string();
    let up = format!("other={upstream}");
    let flags = [
        "--insecure",
        "--cluster-id",
        &id,
        "--mesh-member",
        "--mesh-upstream",
        &up,
        "--mesh-sync-interval-ms",
        "200",
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

/// Waits until every key of `want` reads its value at every node of `nodes`; panics naming
/// what is still missing after [`CONVERGE`].
fn converge(c: &Client, nodes: &[String], want: &[(String, String)]) -> Duration {
    let started = Instant::now();
    let mut pending: BTreeSet<(usize, usize)> = (0..nodes.len())
        .flat_map(|n| (0..want.len()).map(move |k| (n, k)))
        .collect();
    while !pending.is_empty() && started.elapsed() < CONVERGE {
        pending.retain(|&(n, k)| {
            let (key, value) = &want[k];
            let read = c
                .get(format!("http://{}/v1/kv/{key}?r=1", nodes[n]))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.text().ok());
            read.as_deref() != Some(value.as_str())
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let missing: Vec<String> = pending
        .iter()
        .take(10)
        .map(|&(n, k)| format!("{} at {}", want[k].0, nodes[n]))
        .collect();
    assert!(
        pending.is_empty(),
        "{} key reads still differ after {CONVERGE:?}, e.g. {missing:?}",
        pending.len()
    );
    started.elapsed()
}

fn mesh_status(c: &Client, node: &str) -> serde_json::Value {
    c.get(format!("http://{node}/v1/mesh"))
        .send()
        .expect("GET /v1/mesh")
        .json()
        .expect("JSON")
}

#[test]
fn two_clusters_converge_and_a_stopped_one_catches_up() {
    let (a_addrs, b_addrs) = (loopback(), loopback());
    let a = meshed("mesh-a", 1, &a_addrs, &b_addrs[0]);
    let mut b = meshed("mesh-b", 2, &b_addrs, &a_addrs[0]);
    let c = a.client();
    let all: Vec<String> = a_addrs.iter().chain(&b_addrs).cloned().collect();

    let mut want: Vec<(String, String)> = Vec::new();
    for k in 0..1000 {
        let (key, value) = (format!("k{k}"), format!("v{k}"));
        let at = if k % 2 == 0 { &a_addrs } else { &b_addrs };
        put(&c, &at[k % 3], &key, &value);
        want.push((key, value));
    }
    let took = converge(&c, &all, &want);
    eprintln!("1,000 keys at all 6 nodes {took:?} after the last write");

    for i in 0..3 {
        b.kill(i);
    }
    let down = Instant::now();
    let mut k = 1000;
    while down.elapsed() < DOWN {
        let (key, value) = (format!("k{k}"), format!("v{k}"));
        put(&c, &a_addrs[k % 3], &key, &value);
        want.push((key, value));
        k += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for (key, value) in want.iter_mut().take(100) {
        let read = c
            .get(format!("http://{}/v1/kv/{key}", a_addrs[0]))
            .send()
            .expect("GET");
        *value = format!("{value}-again");
        let r = c
            .put(format!("http://{}/v1/kv/{key}", a_addrs[0]))
            .header("x-causal-context", context_of(&read))
            .body(value.clone())
            .send()
            .expect("PUT");
        assert!(r.status().is_success(), "overwriting {key}: {}", r.status());
    }
    for i in 0..3 {
        b.start_again(i);
    }
    for i in 0..3 {
        b.wait_ready(i);
    }
    let took = converge(&c, &all, &want);
    eprintln!(
        "{} keys ({} written while B was down) at all 6 nodes {took:?} after B's restart",
        want.len(),
        k - 1000
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = c
            .get(format!("http://{}/metrics", b_addrs[0]))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let exported = metrics
            .lines()
            .any(|l| l.starts_with("causeway_mesh_full_syncs_total{upstream=\"other\"}"));
        if exported {
            break;
        }
        assert!(Instant::now() < deadline, "no mesh metrics:\n{metrics}");
        std::thread::sleep(Duration::from_millis(200));
    }
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
    let mut want = Vec::new();
    for k in 0..100 {
        let (key, value) = (format!("t{k}"), format!("v{k}"));
        put(&c, if k % 2 == 0 { &a_addr } else { &b_addr }, &key, &value);
        want.push((key, value));
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
