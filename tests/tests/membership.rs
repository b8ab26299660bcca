//! Membership with real processes: nodes join a loaded cluster (through `serve --join` and
//! `POST /v1/cluster/join`), the compatibility view change decommissions a node, and every key
//! stays readable through every node with the key counts adding up; restarted nodes keep the
//! newest view; bad membership requests are 4xx.

use causeway_e2e::{Client, Cluster, client, context_of, free_port, merge};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEYS: usize = 10_000;
const THREADS: usize = 8;

fn value_of(i: usize) -> String {
    format!("value-{i}")
}

fn key_of(i: usize) -> String {
    format!("key-{i:05}")
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting until {what}");
}

fn cluster_json(http: &Client, url: &str, scope: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}/v1/cluster?scope={scope}"))
        .send()
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().ok()
}

/// Writes keys `range` through the given nodes (round robin) from [`THREADS`] threads; returns
/// the merge of every write's causal context.
fn load(c: &Cluster, nodes: &[usize], range: std::ops::Range<usize>) -> String {
    let urls: Vec<String> = nodes.iter().map(|i| c.url(*i)).collect();
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (urls, range) = (&urls, range.clone());
                s.spawn(move || {
                    let http = client();
                    let mut ctx = String::new();
                    for i in range.filter(|i| i % THREADS == t) {
                        let url = &urls[i % urls.len()];
                        let r = http
                            .put(format!("{url}/v1/kv/{}", key_of(i)))
                            .body(value_of(i))
                            .send()
                            .expect("put");
                        assert_eq!(r.status(), 204, "put {} through {url}", key_of(i));
                        ctx = merge(&[&ctx, &context_of(&r)]);
                    }
                    ctx
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });
    merge(&tokens.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Reads every key of `range` through each of `nodes` with context `ctx` and checks its value;
/// returns the number of reads.
fn read_all(c: &Cluster, nodes: &[usize], range: std::ops::Range<usize>, ctx: &str) -> usize {
    let urls: Vec<String> = nodes.iter().map(|i| c.url(*i)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (urls, range) = (&urls, range.clone());
                s.spawn(move || {
                    let http = client();
                    let mut reads = 0;
                    for i in range.filter(|i| i % THREADS == t) {
                        for url in urls {
                            let r = http
                                .get(format!("{url}/v1/kv/{}", key_of(i)))
                                .header("x-causal-context", ctx)
                                .send()
                                .expect("get");
                            let status = r.status().as_u16();
                            let body = r.text().expect("body");
                            assert_eq!(
                                (status, body.as_str()),
                                (200, value_of(i).as_str()),
                                "read of {} through {url}",
                                key_of(i)
                            );
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader")).sum()
    })
}

/// The members and epoch a node reports (scope=local).
fn view_of(http: &Client, url: &str) -> Option<(u64, Vec<String>)> {
    let j = cluster_json(http, url, "local")?;
    let nodes = j["members"]
        .as_array()?
        .iter()
        .filter_map(|m| m["node"].as_str().map(str::to_owned))
        .collect();
    Some((j["epoch"].as_u64()?, nodes))
}

#[test]
fn joins_and_a_decommission_keep_every_key_readable_everywhere() {
    let started = Instant::now();
    let mut c = Cluster::start("grow", 2, 1, &[]);
    let http = client();
    let ctx = load(&c, &[0, 1], 0..KEYS);
    let loaded = started.elapsed();

    // Node 2 joins through node 0 by itself (`serve --join`).
    let a0 = c.addrs[0].clone();
    let n2 = c.add_node(&["--join", &a0]);
    wait_until(Duration::from_secs(15), "node 2 is in a view", || {
        view_of(&http, &c.url(n2)).is_some_and(|(_, nodes)| nodes.contains(&c.addrs[n2]))
    });
    // Node 3 waits outside any view until an operator adds it through node 1.
    let n3 = c.add_node(&["--await-join"]);
    let (_, nodes) = view_of(&http, &c.url(n3)).expect("node 3 answers");
    assert!(nodes.is_empty(), "an --await-join node starts in no view");
    let r = http
        .post(format!("{}/v1/cluster/join", c.url(1)))
        .json(&json!({"node": c.addrs[n3]}))
        .send()
        .expect("join");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().expect("view json");
    assert_eq!(v["nodes"], json!(c.addrs), "{v}");
    assert_eq!(v["repl_factor"], 1);
    let shards = v["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 4);
    let parts: u64 = shards
        .iter()
        .map(|s| s["partition_count"].as_u64().expect("count"))
        .sum();
    assert_eq!(parts, v["partitions"].as_u64().expect("partitions"));
    let join_epoch = v["epoch"].as_u64().expect("epoch");
    assert!(join_epoch >= 3, "two joins, two new views: {v}");
    // Every node installs the 4-node view and settles (handoff of the moved partitions).
    wait_until(
        Duration::from_secs(30),
        "the 4-node cluster settles",
        || {
            cluster_json(&http, &c.url(3), "cluster").is_some_and(|j| {
                j["cluster_settled"] == true && j["nodes"].as_array().is_some_and(|n| n.len() == 4)
            })
        },
    );
    let joined = started.elapsed();

    // The compatibility view change decommissions node 1 and reports every shard's key count.
    let view = [c.addrs[0].clone(), c.addrs[2].clone(), c.addrs[3].clone()];
    let view_str = view.join(",");
    let r = http
        .put(format!("{}/kv-store/view-change", c.url(n2)))
        .json(&json!({"view": view_str, "repl-factor": 1}))
        .timeout(Duration::from_secs(45))
        .send()
        .expect("view change");
    assert_eq!(r.status(), 200);
    let j: Value = r.json().expect("json");
    assert_eq!(j["message"], "View change successful", "{j}");
    assert_eq!(
        j["settled"], true,
        "the handoff settled within the wait: {j}"
    );
    let shards = j["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{j}");
    let mut total = 0;
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard-id"], i.to_string());
        assert_eq!(s["replicas"], json!([view[i]]));
        total += s["key-count"].as_u64().expect("key-count");
    }
    assert_eq!(total, KEYS as u64, "the shards' key counts add up: {j}");
    let changed = started.elapsed();

    // Node 1 handed everything off: it keeps no keys and retains no partition.
    let j = cluster_json(&http, &c.url(1), "local").expect("node 1 answers");
    assert_eq!(j["status"]["live_keys"], 0, "{}", j["status"]);
    assert_eq!(j["handoff"]["retained"], json!([]));
    let final_epoch = j["epoch"].as_u64().expect("epoch");
    assert!(final_epoch > join_epoch);
    // The native and compatibility views agree everywhere, and the key counts are per shard.
    for i in [0, 2, 3] {
        let (epoch, nodes) = view_of(&http, &c.url(i)).expect("answers");
        assert_eq!((epoch, nodes.as_slice()), (final_epoch, &view[..]));
    }
    let j: Value = http
        .get(format!("{}/kv-store/shards", c.url(0)))
        .send()
        .expect("shards")
        .json()
        .expect("json");
    assert_eq!(j["shards"], json!(["0", "1", "2"]));

    // Every key, through every node (the removed one forwards), with the loading session's context
    // from before the view changes.
    let reads = read_all(&c, &[0, 1, 2, 3], 0..KEYS, &ctx);
    assert_eq!(reads, 4 * KEYS);
    let read = started.elapsed();

    // Restarted nodes keep the newest view: node 0 was started with `--view` of the first two
    // nodes, node 2 with `--join`.
    for i in [0, n2] {
        c.restart(i);
        let (epoch, nodes) = view_of(&http, &c.url(i)).expect("answers after restart");
        assert_eq!(
            (epoch, nodes.as_slice()),
            (final_epoch, &view[..]),
            "node {i} after restart"
        );
    }
    assert_eq!(read_all(&c, &[0, n2], 0..KEYS / 10, &ctx), 2 * KEYS / 10);
    eprintln!(
        "membership e2e: loaded {KEYS} keys in {loaded:?}; joined and settled at {joined:?}; \
         view change answered at {changed:?}; {reads} reads done at {read:?}; total {:?}",
        started.elapsed()
    );
}

/// Raising the replication factor puts new replicas beside a partition's old owner; the view
/// change must settle (every replica holds the data) and fresh replicas must not answer stale.
#[test]
fn replication_factor_change_settles() {
    const N: usize = 2_000;
    let mut c = Cluster::start("rf-change", 2, 1, &[]);
    let http = client();
    load(&c, &[0, 1], 0..N);
    let a0 = c.addrs[0].clone();
    c.add_node(&["--join", &a0]);
    c.add_node(&["--join", &a0]);
    wait_until(Duration::from_secs(30), "4 nodes settled", || {
        cluster_json(&http, &c.url(0), "cluster").is_some_and(|j| {
            j["cluster_settled"] == true && j["members"].as_array().is_some_and(|m| m.len() == 4)
        })
    });
    let r = http
        .put(format!("{}/kv-store/view-change", c.url(0)))
        .json(&json!({"view": c.addrs.join(","), "repl-factor": 2}))
        .timeout(Duration::from_secs(45))
        .send()
        .expect("view change");
    assert_eq!(r.status(), 200);
    let j: Value = r.json().expect("json");
    assert_eq!(j["settled"], true, "{j}");
    let counts: Vec<u64> = j["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["key-count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts.iter().sum::<u64>(), N as u64, "{j}");
    // Each replica holds its whole shard, so context-free reads through any node are complete.
    let j = cluster_json(&http, &c.url(0), "cluster").expect("cluster");
    for n in j["nodes"].as_array().expect("nodes") {
        let shard = n["shard"].as_u64().expect("shard") as usize;
        assert_eq!(n["live_keys"].as_u64(), Some(counts[shard]), "{n}");
    }
    assert_eq!(read_all(&c, &[0, 1, 2, 3], 0..N, ""), 4 * N);
}

#[test]
fn membership_requests_are_checked() {
    let mut c = Cluster::start("membership-input", 1, 1, &[]);
    let http = client();
    let call = |r: reqwest::blocking::RequestBuilder| {
        let r = r.send().expect("request");
        let status = r.status().as_u16();
        (status, r.json::<Value>().expect("json body"))
    };
    let view = format!("{}/v1/cluster/view", c.url(0));
    let join = format!("{}/v1/cluster/join", c.url(0));
    let compat = format!("{}/kv-store/view-change", c.url(0));
    for body in [
        "",
        "{",
        "[]",
        r#"{"nodes": []}"#,
        r#"{"nodes": "a:1"}"#,
        r#"{"nodes": ["no-port"]}"#,
        r#"{"nodes": ["h:0"]}"#,
        r#"{"nodes": ["a:1", "a:1"]}"#,
        r#"{"nodes": ["a:1"], "repl_factor": 0}"#,
        r#"{"nodes": ["a:1"], "repl_factor": -1}"#,
        r#"{"nodes": ["a:1"], "extra": 1}"#,
    ] {
        let (s, j) = call(http.put(&view).body(body));
        assert_eq!(s, 400, "PUT /v1/cluster/view {body}: {j}");
        assert!(j["error"].is_string() && j["detail"].is_string(), "{j}");
    }
    for body in [
        "",
        r#"{"node": 7}"#,
        r#"{"node": "x y:1"}"#,
        r#"{"node": ""}"#,
    ] {
        let (s, j) = call(http.post(&join).body(body));
        assert_eq!(s, 400, "POST /v1/cluster/join {body}: {j}");
        assert!(j["detail"].is_string(), "{j}");
    }
    let huge = format!(r#"{{"nodes": ["{}:1"]}}"#, "h".repeat(1 << 20));
    let (s, _) = call(http.put(&view).body(huge));
    assert_eq!(s, 413, "bodies are size-limited");
    for (body, error) in [
        (json!({}), "View is missing"),
        (
            json!({"view": 5}),
            "view must be a comma-separated string of addresses",
        ),
        (json!({"view": ""}), "the view lists no nodes"),
        (
            json!({"view": c.addrs[0], "repl-factor": 0}),
            "repl-factor must be a whole number of at least 1",
        ),
        (
            json!({"view": c.addrs[0], "repl-factor": "two"}),
            "repl-factor must be a whole number of at least 1",
        ),
    ] {
        let (s, j) = call(http.put(&compat).json(&body));
        assert_eq!((s, j["error"].as_str()), (400, Some(error)), "{body}");
        assert_eq!(j["message"], "Error in PUT");
    }
    // A node serving a cluster of its own is refused; a node waiting to be added is taken.
    let other = Cluster::start("membership-other", 1, 1, &[]);
    let (s, j) = call(http.post(&join).json(&json!({"node": other.addrs[0]})));
    assert_eq!(
        (s, j["error"].as_str()),
        (409, Some("already in a cluster")),
        "{j}"
    );
    let waiting = c.add_node(&["--await-join"]);
    let (s, j) = call(
        http.put(format!("{}/v1/cluster/view", c.url(waiting)))
            .json(&json!({"nodes": [c.addrs[waiting]]})),
    );
    assert_eq!(s, 400, "a node in no view cannot change it: {j}");
    let (s, j) = call(http.post(&join).json(&json!({"node": c.addrs[waiting]})));
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["epoch"], 2);
    assert_eq!(j["nodes"], json!(c.addrs));
    // Joining twice changes nothing.
    let (s, again) = call(http.post(&join).json(&json!({"node": c.addrs[waiting]})));
    assert_eq!((s, &again["epoch"]), (200, &j["epoch"]));
    // An empty cluster view change through the compatibility API with the same nodes settles at
    // once and reports every shard.
    let (s, j) = call(
        http.put(&compat)
            .json(&json!({"view": c.addrs.join(","), "repl-factor": 1})),
    );
    assert_eq!(
        (s, j["message"].as_str()),
        (200, Some("View change successful")),
        "{j}"
    );
    assert_eq!(j["settled"], true, "{j}");
    assert_eq!(j["shards"].as_array().map(Vec::len), Some(2));
    // The native view change answers with the installed view at once, and every node learns it.
    let (s, j) = call(
        http.put(&view)
            .json(&json!({"nodes": [c.addrs[waiting], c.addrs[0]], "repl_factor": 2})),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["nodes"], json!([c.addrs[waiting], c.addrs[0]]));
    assert_eq!(j["repl_factor"], 2);
    assert_eq!(j["shards"][0]["partition_count"], 64);
    let epoch = j["epoch"].as_u64().expect("epoch");
    wait_until(
        Duration::from_secs(10),
        "the other node learns the view",
        || view_of(&http, &c.url(waiting)).is_some_and(|(e, _)| e == epoch),
    );
}

/// Issue 18, defect 5: a join of an address nothing answers on is refused (the view and `w=all`
/// stay as they were), and removing a node leaves no per-peer state behind at its former peers:
/// not in `/v1/cluster` (`unacked`) and not in `/metrics` (`peer` series).
#[test]
fn join_of_a_dead_address_is_refused_and_removal_leaves_nothing_behind() {
    let mut c = Cluster::start("join-dead", 3, 3, &[]);
    let http = client();
    let join = format!("{}/v1/cluster/join", c.url(0));
    let dead = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let r = http
        .post(&join)
        .json(&json!({"node": dead}))
        .send()
        .expect("join");
    let status = r.status().as_u16();
    let j: Value = r.json().expect("json");
    assert_eq!(status, 400, "{j}");
    let detail = j["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("did not answer as a joining causeway node"),
        "{j}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused in bounded time"
    );
    let (_, members) = view_of(&http, &c.url(0)).expect("view");
    assert_eq!(members, c.addrs, "no phantom replica");
    let put = |url: &str, key: &str, w: &str| {
        http.put(format!("{url}/v1/kv/{key}?w={w}"))
            .body("v")
            .send()
            .expect("put")
            .status()
            .as_u16()
    };
    assert_eq!(
        put(&c.url(1), "after-dead-join", "all"),
        204,
        "w=all keeps working"
    );

    // A fourth node joins, dies with replication pending to it, and is removed.
    let fourth = c.add_node(&["--await-join"]);
    let gone = c.addrs[fourth].clone();
    let r = http
        .post(&join)
        .json(&json!({"node": gone}))
        .send()
        .expect("join");
    assert_eq!(r.status(), 200, "{:?}", r.text());
    wait_until(
        Duration::from_secs(10),
        "the fourth node is a member",
        || view_of(&http, &c.url(fourth)).is_some_and(|(_, m)| m.contains(&gone)),
    );
    c.kill(fourth);
    for i in 0..50 {
        assert_eq!(put(&c.url(0), &format!("pending-{i}"), "1"), 204);
    }
    let unacked = |http: &Client| {
        cluster_json(http, &c.url(0), "local").expect("cluster")["status"]["unacked"].clone()
    };
    assert!(
        unacked(&http)[&gone].as_u64().is_some_and(|n| n > 0),
        "{}",
        unacked(&http)
    );
    let metrics = |http: &Client| {
        http.get(format!("{}/metrics", c.url(0)))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let label = format!("peer=\"{gone}\"");
    wait_until(
        Duration::from_secs(5),
        "the fourth node has metric series",
        || metrics(&http).contains(&label),
    );
    let r = http
        .put(format!("{}/v1/cluster/view", c.url(0)))
        .json(&json!({"nodes": c.addrs[..3], "repl_factor": 3}))
        .send()
        .expect("view change");
    assert_eq!(r.status(), 200, "{:?}", r.text());
    wait_until(
        Duration::from_secs(30),
        "the removed node's metric series are gone",
        || !metrics(&http).contains(&label),
    );
    let left = unacked(&http);
    assert!(
        left.get(&gone).is_none(),
        "unacked still lists {gone}: {left}"
    );
    assert_eq!(put(&c.url(0), "after-removal", "all"), 204);
}
