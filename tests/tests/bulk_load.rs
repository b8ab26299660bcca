//! `causeway bulk-load` writes keys straight into a stopped node's data directory; the node then
//! serves them, takes writes over them, and repairs a replica that lacks them by anti-entropy,
//! like keys written through the API.

use causeway_e2e::{Cluster, context_of, run_cli};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEYS: u64 = 20_000;

fn value() -> String {
    (0..100).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

#[test]
fn bulk_loaded_keys_are_served_and_repaired_to_a_replica() {
    let mut c = Cluster::start("bulk-load", 2, 2, &["--insecure"]);
    let http = c.client();
    c.kill(0);
    let dir = c.data_dir(0);
    let keys = KEYS.to_string();
    let out = run_cli(
        &[
            "bulk-load",
            "--data-dir",
            dir.to_str().expect("utf-8 path"),
            "--keys",
            &keys,
        ],
        b"",
    );
    assert!(out.status.success(), "bulk-load: {out:?}");
    c.restart(0);

    // Served by the loaded node: every sample, at r=1 (the other replica has none of them).
    let samples = [0, 1, 777, 12_345, KEYS - 1];
    for i in samples {
        let r = http
            .get(format!("{}/v1/kv/bench-{i:010}?r=1", c.url(0)))
            .send()
            .expect("get");
        assert_eq!(r.status(), 200, "key {i}");
        assert_eq!(r.text().expect("body"), value(), "key {i}");
    }
    // A write with the read's context replaces the loaded version: no sibling, at the loaded
    // node now and at the replica once repaired.
    let key = format!("{}/v1/kv/bench-{:010}", c.url(0), 777);
    let ctx = context_of(&http.get(format!("{key}?r=1")).send().expect("get"));
    let r = http
        .put(&key)
        .header("x-causal-context", ctx)
        .body("new")
        .send()
        .expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    let r = http.get(format!("{key}?r=1")).send().expect("get");
    assert_eq!(r.status(), 200, "the overwritten key has one version");
    assert_eq!(r.text().expect("body"), "new");

    // Anti-entropy repairs the replica that lacks them (the nodes' own exchanges may take part):
    // pulled until it holds every key.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value = http
            .post(format!("{}/v1/admin/aae/pull", c.url(1)))
            .json(&json!({"peer": c.addrs[0]}))
            .send()
            .expect("aae pull")
            .json()
            .expect("json");
        assert!(r["keys_repaired"].is_u64(), "{r}");
        let local: Value = http
            .get(format!("{}/v1/cluster?scope=local", c.url(1)))
            .send()
            .expect("cluster")
            .json()
            .expect("json");
        let status = &local["status"];
        if status["live_keys"].as_u64() == Some(KEYS) {
            break;
        }
        assert!(Instant::now() < deadline, "replica not repaired: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The replica serves them on its own.
    c.kill(0);
    for i in samples {
        let r = http
            .get(format!("{}/v1/kv/bench-{i:010}?r=1", c.url(1)))
            .send()
            .expect("get");
        assert_eq!(r.status(), 200, "key {i} at the repaired replica");
        let want = if i == 777 { "new".to_owned() } else { value() };
        assert_eq!(r.text().expect("body"), want, "key {i}");
    }
}
