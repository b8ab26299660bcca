//! Loopback clusters of real processes: replication, proxying, siblings, listing, and the
//! compatibility API.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use causeway::core::View;
use causeway_e2e::{Cluster, client, context_of, merge, multipart_values, served_by};
use serde_json::Value;

#[test]
fn three_replicas_read_everywhere_and_resolve_siblings() {
    let c = Cluster::start("rf3", 3, 3, &[]);
    let http = client();
    // Write through node 0, read through every other node with the write's context.
    let put = http
        .put(format!("{}/v1/kv/greeting", c.url(0)))
        .body("hello")
        .send()
        .expect("put");
    assert_eq!(put.status(), 204);
    let ctx = context_of(&put);
    assert!(!ctx.is_empty(), "a write returns a causal context");
    for i in 1..3 {
        let r = http
            .get(format!("{}/v1/kv/greeting", c.url(i)))
            .header("x-causal-context", &ctx)
            .send()
            .expect("get");
        assert_eq!(r.status(), 200, "read through node {i}");
        assert_eq!(served_by(&r), c.addrs[i], "every node is a replica at rf 3");
        assert_eq!(r.text().expect("body"), "hello");
    }
    // Two sessions write concurrently (empty contexts) through different nodes: siblings.
    let a = http
        .put(format!("{}/v1/kv/fruit", c.url(1)))
        .body("apple")
        .send()
        .expect("put a");
    let b = http
        .put(format!("{}/v1/kv/fruit", c.url(2)))
        .body("banana")
        .send()
        .expect("put b");
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (204, 204));
    let both = merge(&[&context_of(&a), &context_of(&b)]);
    let r = http
        .get(format!("{}/v1/kv/fruit", c.url(0)))
        .header("x-causal-context", &both)
        .send()
        .expect("get siblings");
    assert_eq!(r.status(), 300, "concurrent writes are siblings");
    let ct = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(ct.starts_with("multipart/mixed"), "{ct}");
    let read_ctx = context_of(&r);
    let mut values = multipart_values(&ct, &r.bytes().expect("body"));
    values.sort();
    assert_eq!(values, vec![b"apple".to_vec(), b"banana".to_vec()]);
    // The JSON form lists both as well.
    let j: Value = http
        .get(format!("{}/v1/kv/fruit", c.url(0)))
        .header("x-causal-context", &both)
        .header("accept", "application/json")
        .send()
        .expect("get json")
        .json()
        .expect("json");
    assert_eq!(j["values"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["deleted"], false);
    // A write with the merged context replaces both.
    let w = http
        .put(format!("{}/v1/kv/fruit", c.url(2)))
        .header("x-causal-context", &read_ctx)
        .body("cherry")
        .send()
        .expect("resolve");
    assert_eq!(w.status(), 204);
    let ctx = context_of(&w);
    for i in 0..3 {
        let r = http
            .get(format!("{}/v1/kv/fruit", c.url(i)))
            .header("x-causal-context", &ctx)
            .send()
            .expect("get resolved");
        assert_eq!(r.status(), 200, "resolved through node {i}");
        assert_eq!(r.text().expect("body"), "cherry");
    }
    // Delete, then 404 everywhere with the delete's context; JSON says deleted.
    let d = http
        .delete(format!("{}/v1/kv/fruit", c.url(0)))
        .header("x-causal-context", &ctx)
        .send()
        .expect("delete");
    assert_eq!(d.status(), 204);
    let j: Value = http
        .get(format!("{}/v1/kv/fruit", c.url(1)))
        .header("x-causal-context", context_of(&d))
        .header("accept", "application/json")
        .send()
        .expect("get deleted")
        .json()
        .expect("json");
    assert_eq!(j["deleted"], true);
    assert_eq!(j["values"].as_array().map(Vec::len), Some(0));
    // Quorum writes and reads succeed while all replicas are up.
    let q = http
        .put(format!("{}/v1/kv/q?w=all", c.url(0)))
        .body("x")
        .send()
        .expect("put w=all");
    assert_eq!(q.status(), 204);
    let q = http
        .get(format!("{}/v1/kv/q?r=quorum", c.url(2)))
        .send()
        .expect("get r=quorum");
    assert_eq!(q.status(), 200);
}

#[test]
fn two_shards_proxy_list_and_compat() {
    let c = Cluster::start("shards", 4, 2, &[]);
    let view = View::new(c.addrs.clone(), 2).expect("view");
    assert_eq!(view.shard_count(), 2);
    let http = client();
    // /v1/cluster names every shard's replicas and the partitions it owns, as placement does.
    let cluster: serde_json::Value = http
        .get(format!("{}/v1/cluster", c.url(3)))
        .send()
        .expect("cluster")
        .json()
        .expect("json");
    let mut owned = Vec::new();
    for (s, shard) in cluster["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .enumerate()
    {
        assert_eq!(
            shard["replicas"],
            serde_json::json!(view.shard_members(s as u32))
        );
        for p in shard["partitions"].as_array().expect("partitions") {
            let p = p.as_u64().expect("a partition number") as u32;
            assert_eq!(view.shard_of_partition(p), s as u32);
            owned.push(p);
        }
    }
    owned.sort();
    assert_eq!(
        owned,
        (0..view.partitions).collect::<Vec<_>>(),
        "every partition owned once"
    );
    let mut ctx = String::new();
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i:02}")).collect();
    for k in &keys {
        let r = http
            .put(format!("{}/v1/kv/{k}", c.url(0)))
            .header("x-causal-context", &ctx)
            .body(format!("value of {k}"))
            .send()
            .expect("put");
        assert_eq!(r.status(), 204);
        let owners = view.shard_members(view.shard_of_key(k.as_bytes()));
        assert!(
            owners.contains(&served_by(&r)),
            "{k} written by a replica of its shard"
        );
        ctx = merge(&[&ctx, &context_of(&r)]);
    }
    let mut proxied = 0;
    for k in &keys {
        let owners = view.shard_members(view.shard_of_key(k.as_bytes()));
        for i in 0..4 {
            let r = http
                .get(format!("{}/v1/kv/{k}", c.url(i)))
                .header("x-causal-context", &ctx)
                .send()
                .expect("get");
            assert_eq!(r.status(), 200, "{k} through node {i}");
            let by = served_by(&r);
            assert!(owners.contains(&by), "{k} served by {by}, not a replica");
            if !owners.contains(&c.addrs[i]) {
                assert_ne!(by, c.addrs[i], "a non-owner proxies");
                proxied += 1;
            }
            assert_eq!(r.text().expect("body"), format!("value of {k}"));
        }
    }
    assert!(proxied >= 20, "every key was read through non-owners");
    // Range listing across both shards, paginated.
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/kv?limit=7", c.url(3));
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: Value = http.get(url).send().expect("list").json().expect("json");
        for e in page["entries"].as_array().expect("entries") {
            listed.push(e["key"].as_str().expect("key").to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, keys, "every key once, in order");
    // Compatibility API: proxied replies carry "address".
    let k = keys
        .iter()
        .find(|k| {
            !view
                .shard_members(view.shard_of_key(k.as_bytes()))
                .contains(&c.addrs[0])
        })
        .expect("some key lives on the other shard");
    let r = http
        .get(format!("{}/kv-store/keys/{k}", c.url(0)))
        .json(&serde_json::json!({"causal-context": ctx}))
        .send()
        .expect("compat get");
    assert_eq!(r.status(), 200);
    let j: Value = r.json().expect("json");
    assert_eq!(j["message"], "Retrieved successfully");
    assert_eq!(j["doesExist"], true);
    assert_eq!(j["value"], format!("value of {k}"));
    let addr = j["address"]
        .as_str()
        .expect("proxied reply names the server");
    assert!(
        view.shard_members(view.shard_of_key(k.as_bytes()))
            .iter()
            .any(|n| n == addr)
    );
    // Shards and key counts.
    let j: Value = http
        .get(format!("{}/kv-store/shards", c.url(1)))
        .send()
        .expect("shards")
        .json()
        .expect("json");
    assert_eq!(j["message"], "Shard membership retrieved successfully");
    assert_eq!(j["shards"], serde_json::json!(["0", "1"]));
    let mut total = 0;
    for s in 0..2 {
        let j: Value = http
            .get(format!("{}/kv-store/shards/{s}", c.url(0)))
            .send()
            .expect("shard")
            .json()
            .expect("json");
        assert_eq!(j["message"], "Shard information retrieved successfully");
        assert_eq!(j["replicas"], serde_json::json!(view.shard_members(s)));
        total += j["key-count"].as_u64().expect("count");
    }
    assert_eq!(total, 20, "key counts of the shards add up");
    let r = http
        .get(format!("{}/kv-store/shards/7", c.url(0)))
        .send()
        .expect("no shard");
    assert_eq!(r.status(), 404);
    // The JSON value form round-trips arbitrary bytes through base64.
    let r = http
        .put(format!("{}/v1/kv/bin%00%FF", c.url(2)))
        .body(vec![0u8, 255, 1])
        .send()
        .expect("binary put");
    assert_eq!(r.status(), 204);
    let j: Value = http
        .get(format!("{}/v1/kv/bin%00%FF", c.url(1)))
        .header("x-causal-context", context_of(&r))
        .header("accept", "application/json")
        .send()
        .expect("binary get")
        .json()
        .expect("json");
    assert_eq!(
        j["values"][0].as_str().map(|v| B64.decode(v).expect("b64")),
        Some(vec![0, 255, 1])
    );
}

#[test]
fn compatibility_api_codes_and_messages() {
    let c = Cluster::start("compat", 1, 1, &[]);
    let http = client();
    let url = |k: &str| format!("{}/kv-store/keys/{k}", c.url(0));
    let call = |r: reqwest::blocking::RequestBuilder| {
        let r = r.send().expect("request");
        let status = r.status().as_u16();
        (status, r.json::<Value>().expect("json body"))
    };
    let (s, j) = call(http.put(url("x")).json(&serde_json::json!({"value": "1"})));
    assert_eq!(
        (s, j["message"].as_str()),
        (201, Some("Added successfully"))
    );
    assert_eq!(j["replaced"], false);
    let ctx = j["causal-context"].as_str().expect("context").to_owned();
    assert!(j.get("address").is_none(), "not proxied");
    let (s, j) = call(
        http.put(url("x"))
            .json(&serde_json::json!({"value": "2", "causal-context": ctx})),
    );
    assert_eq!(
        (s, j["message"].as_str()),
        (200, Some("Updated successfully"))
    );
    assert_eq!(j["replaced"], true);
    let ctx = j["causal-context"].as_str().expect("context").to_owned();
    let (s, j) = call(
        http.get(url("x"))
            .json(&serde_json::json!({"causal-context": ctx})),
    );
    assert_eq!((s, j["value"].as_str()), (200, Some("2")));
    assert_eq!(j["doesExist"], true);
    assert_eq!(j["message"], "Retrieved successfully");
    let (s, j) = call(http.get(url("nope")));
    assert_eq!(s, 404);
    assert_eq!(j["doesExist"], false);
    assert_eq!(j["error"], "Key does not exist");
    assert_eq!(j["message"], "Error in GET");
    let long = "k".repeat(51);
    let (s, j) = call(
        http.put(url(&long))
            .json(&serde_json::json!({"value": "1"})),
    );
    assert_eq!((s, j["error"].as_str()), (400, Some("Key is too long")));
    assert_eq!(j["message"], "Error in PUT");
    let (s, j) = call(http.put(url("x")).json(&serde_json::json!({})));
    assert_eq!((s, j["error"].as_str()), (400, Some("Value is missing")));
    let (s, j) = call(
        http.delete(url("x"))
            .json(&serde_json::json!({"causal-context": ctx})),
    );
    assert_eq!(
        (s, j["message"].as_str()),
        (200, Some("Deleted successfully"))
    );
    let (s, j) = call(http.delete(url("x")));
    assert_eq!((s, j["error"].as_str()), (404, Some("Key does not exist")));
    assert_eq!(j["message"], "Error in DELETE");
    let (s, j) = call(http.get(format!("{}/kv-store/key-count", c.url(0))));
    assert_eq!(s, 200);
    assert_eq!(j["message"], "Key count retrieved successfully");
    assert_eq!(j["key-count"], 0);
    let (s, j) = call(http.put(format!("{}/kv-store/view-change", c.url(0))));
    assert_eq!((s, j["error"].as_str()), (400, Some("Invalid JSON")));
    assert_eq!(j["message"], "Error in PUT");
    // Native membership endpoints refuse a missing body with a reason.
    let (s, j) = call(http.put(format!("{}/v1/cluster/view", c.url(0))));
    assert_eq!((s, j["error"].as_str()), (400, Some("bad request")));
    let (s, _) = call(http.post(format!("{}/v1/cluster/join", c.url(0))));
    assert_eq!(s, 400);
}
