//! `/healthz` is liveness and `/readyz` readiness: a node started with `--await-join` answers
//! `/healthz` 200 and `/readyz` 503 (with the reason) until a member admits it, then `/readyz`
//! 200 naming the node and its instance.

use causeway_e2e::{Cluster, client};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn an_await_join_node_is_live_but_not_ready_until_admitted() {
    let mut c = Cluster::start("readiness", 1, 1, &[]);
    let http = client();
    let r = http
        .get(format!("{}/readyz", c.url(0)))
        .send()
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let j: Value = r.json().expect("json");
    assert_eq!(j["ready"], true, "{j}");
    assert_eq!(j["node"], c.addrs[0].as_str(), "{j}");
    let first = j["instance"].as_str().expect("an instance id").to_owned();

    let w = c.add_node(&["--await-join"]);
    for _ in 0..3 {
        let h = http
            .get(format!("{}/healthz", c.url(w)))
            .send()
            .expect("healthz");
        assert_eq!(h.status(), 200, "a waiting node is alive");
        let r = http
            .get(format!("{}/readyz", c.url(w)))
            .send()
            .expect("readyz");
        assert_eq!(r.status(), 503, "a node in no view is not ready");
        let j: Value = r.json().expect("json");
        assert_eq!(
            (&j["ready"], &j["error"]),
            (&json!(false), &json!("not ready"))
        );
        assert!(
            j["detail"].as_str().is_some_and(|d| d.contains("no view")),
            "{j}"
        );
        assert_eq!(j["node"], c.addrs[w].as_str());
        assert_ne!(j["instance"], first.as_str(), "each process has its own id");
        std::thread::sleep(Duration::from_millis(200));
    }

    let r = http
        .post(format!("{}/v1/cluster/join", c.url(0)))
        .json(&json!({"node": c.addrs[w]}))
        .send()
        .expect("join");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http
            .get(format!("{}/readyz", c.url(w)))
            .send()
            .expect("readyz");
        if r.status() == 200 {
            let j: Value = r.json().expect("json");
            assert_eq!(j["ready"], true, "{j}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the admitted node never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait_ready(w);
}
