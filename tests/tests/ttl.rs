//! Time to live on a real three-node cluster (docs/ttl.md): a value written with `?ttl=1` is
//! served until it expires and then gone from every node, including the replicas that did not
//! coordinate it, while a plain key beside it stays; malformed ttls are refused with a 400.

use causeway_client::Session;
use causeway_e2e::{Cluster, client, credentials, library_client};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn an_expired_value_disappears_from_every_node_and_a_plain_one_stays() {
    let c = Cluster::start("ttl", 3, 3, &[]);
    let http = client();
    let url = |i: usize, key: &str| format!("{}/v1/kv/{key}", c.url(i));
    let put = http
        .put(url(0, "brief"))
        .query(&[("ttl", "1"), ("w", "all")])
        .body("soon gone")
        .send()
        .expect("put with ttl");
    assert_eq!(put.status(), 204);
    let plain = http
        .put(url(0, "lasting"))
        .query(&[("w", "all")])
        .body("stays")
        .send()
        .expect("plain put");
    assert_eq!(plain.status(), 204);
    // The client library's expiring put, through node 0 (a replica: rf 3 of 3).
    let library = library_client(&[c.url(0)], Some(&credentials().admin_token));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(Session::new(library).put_expiring("brief-too", "gone", Duration::from_secs(1)))
        .expect("put_expiring");
    // Before the expiry every replica serves it.
    for i in 0..3 {
        let r = http.get(url(i, "brief")).send().expect("get");
        assert_eq!(r.status(), 200, "node {i} before the expiry");
    }
    let r = http.get(url(0, "brief-too")).send().expect("get");
    assert_eq!(
        r.status(),
        200,
        "the library's expiring put before the expiry"
    );
    // After it, every node answers 404 within a bound (the expiry plus the conversion's
    // rank delay and a margin for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, key) in [
        (0, "brief"),
        (1, "brief"),
        (2, "brief"),
        (0, "brief-too"),
        (2, "brief-too"),
    ] {
        loop {
            let r = http.get(url(i, key)).send().expect("get");
            if r.status() == 404 {
                break;
            }
            assert_eq!(r.status(), 200, "node {i} {key}");
            assert!(
                Instant::now() < deadline,
                "node {i} still serves {key} 10 s after a 1 s ttl"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The plain key is untouched on every node.
    for i in 0..3 {
        let r = http.get(url(i, "lasting")).send().expect("get");
        assert_eq!(r.status(), 200, "node {i} lost the plain key");
        assert_eq!(r.text().expect("body"), "stays");
    }
}

#[test]
fn malformed_ttls_are_refused_and_write_nothing() {
    let c = Cluster::start("ttl-bad", 1, 1, &[]);
    let http = client();
    for ttl in ["0", "abc", "-5", "315360001"] {
        let r = http
            .put(format!("{}/v1/kv/k", c.url(0)))
            .query(&[("ttl", ttl)])
            .body("v")
            .send()
            .expect("put");
        assert_eq!(r.status(), 400, "ttl={ttl}");
        let j: Value = r.json().expect("json error");
        assert!(j["error"].is_string() && j["detail"].is_string(), "{j}");
    }
    let r = http
        .get(format!("{}/v1/kv/k", c.url(0)))
        .send()
        .expect("get");
    assert_eq!(r.status(), 404, "a refused put wrote nothing");
}
