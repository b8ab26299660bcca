//! Causal-context tokens stay bounded through hundreds of view changes (issue 18, defect 2):
//! a session that keeps its token across 210 view changes of a 3-node cluster (alternating
//! replication factor 1 and 3, rotating the node order, so every change moves partitions) never
//! carries more than one entry per node, and every read with it succeeds; a fresh session reads
//! everything afterwards.

use causeway::core::token;
use causeway_e2e::{Cluster, client, context_of, merge};
use serde_json::json;
use std::time::{Duration, Instant};

const CHANGES: usize = 210;
const KEYS: usize = 5;

/// Sends `req` until it is not a 503 (a write waits until its node holds its own floor on the
/// key's partition, at most the causal wait per try); panics after 20 s.
fn until_served(
    mut req: impl FnMut() -> reqwest::blocking::Response,
) -> reqwest::blocking::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = req();
        if r.status() != 503 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to 20 s) until every node installed the view and finished its handoffs.
fn settled(http: &reqwest::blocking::Client, url: &str, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let j: Option<serde_json::Value> = http
            .get(format!("{url}/v1/cluster?scope=cluster"))
            .send()
            .ok()
            .and_then(|r| r.json().ok());
        if j.is_some_and(|j| j["cluster_settled"] == true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("view change {i} did not settle");
}

#[test]
fn a_session_token_stays_bounded_through_hundreds_of_view_changes() {
    let c = Cluster::start("tokens", 3, 3, &[]);
    let http = client();
    let bound = token::max_chars(c.addrs.len());
    let mut ctx = String::new();
    let mut latest = vec![String::new(); KEYS];
    for i in 0..CHANGES {
        let mut nodes = c.addrs.clone();
        nodes.rotate_left(i % 3);
        let rf = if i % 2 == 0 { 1 } else { 3 };
        let r = http
            .put(format!("{}/v1/cluster/view", c.url(i % 3)))
            .json(&json!({"nodes": nodes, "repl_factor": rf}))
            .send()
            .expect("view change");
        assert_eq!(r.status(), 200, "view change {i}");
        settled(&http, &c.url(i % 3), i);
        let key = format!("k{}", i % KEYS);
        let value = format!("v{i}");
        let w = until_served(|| {
            http.put(format!("{}/v1/kv/{key}", c.url((i + 1) % 3)))
                .header("X-Causal-Context", &ctx)
                .body(value.clone())
                .send()
                .expect("put")
        });
        assert_eq!(w.status(), 204, "put {key} after view change {i}");
        ctx = merge(&[&ctx, &context_of(&w)]);
        latest[i % KEYS] = value.clone();
        let r = http
            .get(format!("{}/v1/kv/{key}", c.url((i + 2) % 3)))
            .header("X-Causal-Context", &ctx)
            .send()
            .expect("get");
        assert_eq!(
            r.status(),
            200,
            "get {key} with the session token after view change {i}"
        );
        ctx = merge(&[&ctx, &context_of(&r)]);
        assert_eq!(
            r.text().expect("body"),
            value,
            "read-your-writes after view change {i}"
        );
        assert!(
            ctx.len() <= bound,
            "after {} view changes the token is {} characters, above {bound}",
            i + 1,
            ctx.len()
        );
    }
    eprintln!(
        "token after {CHANGES} view changes: {} characters (bound {bound})",
        ctx.len()
    );
    // A fresh session (no token) reads every key and writes.
    for (k, v) in latest.iter().enumerate() {
        let r = until_served(|| {
            http.get(format!("{}/v1/kv/k{k}", c.url(k % 3)))
                .send()
                .expect("get")
        });
        assert_eq!(r.status(), 200, "fresh read of k{k}");
        assert!(context_of(&r).len() <= bound);
        assert_eq!(r.text().expect("body"), *v);
    }
    let r = until_served(|| {
        http.put(format!("{}/v1/kv/fresh", c.url(1)))
            .body("x")
            .send()
            .expect("put")
    });
    assert_eq!(r.status(), 204);
}
