//! Siblings as a client meets them: bounded (warned at 25, refused beyond `max_siblings` with a
//! 409 that says how to resolve), and told apart by their metadata — each value keeps its
//! Content-Type, and every sibling has a Last-Modified date and a stable vtag that fetches it.

use causeway_e2e::{Cluster, client, context_of};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The headers and body of each part of a `multipart/mixed` reply.
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("multipart reply names its boundary");
    let values = causeway_e2e::multipart_values(content_type, body);
    let text = String::from_utf8_lossy(body);
    let heads: Vec<String> = text
        .split(&format!("--{boundary}\r\n"))
        .skip(1)
        .map(|p| p.split("\r\n\r\n").next().unwrap_or_default().to_owned())
        .collect();
    heads.into_iter().zip(values).collect()
}

/// The value of header `name` (case-insensitive) in a part's header block.
fn header_line<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[test]
fn sibling_count_is_bounded_and_resolvable() {
    let c = Cluster::start("siblings", 1, 1, &[]);
    let http = client();
    let url = format!("{}/v1/kv/crowded", c.url(0));
    let mut refused = None;
    for i in 1..=200 {
        let r = http.put(&url).body(format!("v{i}")).send().expect("put");
        if r.status() == 409 {
            let j: Value = r.json().expect("json error");
            refused = Some((i, j));
            break;
        }
        assert_eq!(r.status(), 204, "blind put {i}");
    }
    let (i, j) = refused.expect("a blind put beyond 100 siblings is refused");
    assert_eq!(i, 101, "the 101st sibling is refused");
    let detail = j["detail"].as_str().expect("detail");
    assert!(detail.contains("\"crowded\""), "names the key: {detail}");
    assert!(detail.contains("context"), "says how to resolve: {detail}");
    assert_eq!(j["error"], "conflict");
    // The compatibility API refuses it too.
    let r = http
        .put(format!("{}/kv-store/keys/crowded", c.url(0)))
        .json(&serde_json::json!({"value": "more"}))
        .send()
        .expect("compat put");
    assert_eq!(r.status(), 409);
    // The warning shows in the metrics (exported every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metric = loop {
        let m = http
            .get(format!("{}/metrics", c.url(0)))
            .send()
            .expect("metrics")
            .text()
            .expect("text");
        let line = m
            .lines()
            .find(|l| l.starts_with("causeway_sibling_warnings_total "))
            .map(str::to_owned);
        if let Some(l) = line.filter(|l| !l.ends_with(" 0")) {
            break l;
        }
        assert!(Instant::now() < deadline, "no sibling warning metric:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let warned: u64 = metric.rsplit(' ').next().unwrap().parse().expect("count");
    assert_eq!(
        warned,
        100 - 25 + 1,
        "writes leaving 25..=100 siblings warn"
    );
    // A write with a read's context replaces them all.
    let read = http.get(&url).send().expect("read");
    assert_eq!(read.status(), 300);
    let ctx = context_of(&read);
    let w = http
        .put(&url)
        .header("x-causal-context", &ctx)
        .body("resolved")
        .send()
        .expect("resolving put");
    assert_eq!(w.status(), 204);
    let r = http.get(&url).send().expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().expect("body"), "resolved");
}

#[test]
fn values_keep_content_type_and_siblings_are_told_apart() {
    let c = Cluster::start("metadata", 1, 1, &[]);
    let http = client();
    let url = format!("{}/v1/kv/doc", c.url(0));
    let a = http
        .put(&url)
        .header("content-type", "application/json")
        .body(r#"{"n":1}"#)
        .send()
        .expect("put a");
    assert_eq!(a.status(), 204);
    let a_ctx = context_of(&a);
    let r = http.get(&url).send().expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let date = r.headers()["last-modified"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(date.ends_with(" GMT"), "an HTTP date: {date}");
    let vtag_a = r.headers()["x-vtag"].to_str().expect("ascii").to_owned();
    // A concurrent write without a type, and a delete that saw only the first.
    let b = http.put(&url).body("plain").send().expect("put b");
    assert_eq!(b.status(), 204);
    let r = http.get(&url).send().expect("siblings");
    assert_eq!(r.status(), 300);
    let ct = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let got = parts(&ct, &r.bytes().expect("body"));
    assert_eq!(got.len(), 2, "{got:?}");
    let mut vtags = Vec::new();
    for (head, value) in &got {
        let want = if value == br#"{"n":1}"# {
            "application/json"
        } else {
            "application/octet-stream"
        };
        assert_eq!(header_line(head, "content-type"), Some(want), "{head}");
        assert!(header_line(head, "last-modified").is_some_and(|d| d.ends_with(" GMT")));
        vtags.push(header_line(head, "x-vtag").expect("vtag").to_owned());
    }
    assert_ne!(vtags[0], vtags[1], "siblings have distinct vtags");
    assert!(
        vtags.contains(&vtag_a),
        "a's vtag is stable: {vtags:?} vs {vtag_a}"
    );
    let d = http
        .delete(&url)
        .header("x-causal-context", &a_ctx)
        .send()
        .expect("delete a");
    assert_eq!(d.status(), 204);
    // One sibling by its tag: the value with its type, or 404 once superseded or unknown.
    let one = http
        .get(&url)
        .query(&[("vtag", vtag_a.as_str())])
        .send()
        .expect("vtag get");
    assert_eq!(one.status(), 404, "a was deleted");
    let j: Value = http
        .get(&url)
        .header("accept", "application/json")
        .send()
        .expect("json")
        .json()
        .expect("json body");
    assert_eq!(j["values"].as_array().map(Vec::len), Some(1), "{j}");
    let siblings = j["siblings"].as_array().expect("siblings");
    assert_eq!(siblings.len(), 2, "b and the tombstone: {j}");
    let live = siblings
        .iter()
        .find(|s| s.get("value").is_some())
        .expect("b");
    assert_eq!(live["content_type"], "application/octet-stream");
    assert!(
        live["last_modified"]
            .as_str()
            .is_some_and(|d| d.ends_with(" GMT"))
    );
    let tomb = siblings
        .iter()
        .find(|s| s["deleted"] == true)
        .expect("tombstone");
    assert!(
        tomb.get("value").is_none() && tomb["vtag"].is_string(),
        "{tomb}"
    );
    let vtag_b = live["vtag"].as_str().expect("vtag").to_owned();
    let one = http
        .get(&url)
        .query(&[("vtag", vtag_b.as_str())])
        .send()
        .expect("vtag get");
    assert_eq!(one.status(), 200);
    assert_eq!(one.headers()["x-vtag"], vtag_b.as_str());
    assert_eq!(one.text().expect("body"), "plain");
    let none = http
        .get(&url)
        .query(&[("vtag", "AAAAAAAAAAA")])
        .send()
        .expect("unknown vtag");
    assert_eq!(none.status(), 404);
    // Content types are bounded.
    let long = format!("text/{}", "x".repeat(300));
    let r = http
        .put(&url)
        .header("content-type", long)
        .body("x")
        .send()
        .expect("long type");
    assert_eq!(r.status(), 400);
    let j: Value = r.json().expect("json error");
    assert!(
        j["detail"]
            .as_str()
            .is_some_and(|d| d.contains("content type")),
        "{j}"
    );
}
