//! Deletes without a causal context, as a new user sends them (docs/guarantees.md): `curl -X DELETE`, the
//! `causeway delete` command with a fresh session, and the compatibility API. Each deletes what
//! the coordinating replica holds, so the next read answers 404.

use causeway_e2e::{Cluster, binary, client, context_of, credentials};
use serde_json::Value;
use std::process::Command;

#[test]
fn blind_http_delete_deletes_what_the_coordinator_holds() {
    let c = Cluster::start("blind-delete", 3, 3, &[]);
    let http = client();
    let url = |i: usize| format!("{}/v1/kv/k", c.url(i));
    let w = http.put(url(0)).query(&[("w", "all")]).body("v").send();
    assert_eq!(w.expect("put").status(), 204);
    // No X-Causal-Context at all, at another replica than the writer's.
    let d = http.delete(url(1)).send().expect("delete");
    assert_eq!(d.status(), 204);
    let delete_ctx = context_of(&d);
    for i in 0..3 {
        let r = http
            .get(url(i))
            .query(&[("r", "all")])
            .header("x-causal-context", &delete_ctx)
            .send()
            .expect("get");
        assert_eq!(r.status(), 404, "node {i} after the blind delete");
        let j: Value = r.json().expect("json error");
        assert_eq!(j["detail"], "the key was deleted", "{j}");
    }
    // A delete with a context still deletes only what that context covers: a concurrent write
    // the context did not see stays as a sibling.
    let a = http.put(url(0)).body("a").send().expect("put a");
    let a_ctx = context_of(&a);
    let b = http.put(url(2)).body("b").send().expect("put b");
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (204, 204));
    let d = http
        .delete(url(0))
        .header("x-causal-context", &a_ctx)
        .send()
        .expect("delete with a's context");
    assert_eq!(d.status(), 204);
    let both = causeway_e2e::merge(&[&context_of(&d), &context_of(&b)]);
    let r = http
        .get(url(0))
        .header("x-causal-context", &both)
        .send()
        .expect("get");
    assert_eq!(r.status(), 200, "b survives a delete that did not see it");
    assert_eq!(r.text().expect("body"), "b");
}

/// Runs `causeway ARGS` against `node` with the session file `session`.
fn cli(node: &str, session: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env("CAUSEWAY_NODE", node)
        .env("CAUSEWAY_SESSION", session)
        .env("CAUSEWAY_TOKEN", &credentials().admin_token)
        .output()
        .expect("running the causeway CLI")
}

#[test]
fn cli_delete_with_a_fresh_session_deletes() {
    let c = Cluster::start("cli-delete", 1, 1, &[]);
    let dir = std::env::temp_dir().join(format!("causeway-cli-delete-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("session dir");
    let (writer, fresh) = (dir.join("writer"), dir.join("fresh"));
    let out = cli(&c.url(0), &writer, &["put", "greeting", "hello"]);
    assert!(out.status.success(), "put: {out:?}");
    let out = cli(&c.url(0), &fresh, &["delete", "greeting"]);
    assert!(out.status.success(), "delete: {out:?}");
    for session in [&fresh, &writer] {
        let out = cli(&c.url(0), session, &["get", "greeting"]);
        assert!(
            !out.status.success(),
            "get after the delete must not find the key: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("greeting: deleted"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compat_delete_without_context_deletes() {
    let c = Cluster::start("compat-delete", 2, 2, &[]);
    let http = client();
    let url = |i: usize| format!("{}/kv-store/keys/x", c.url(i));
    let call = |r: reqwest::blocking::RequestBuilder| {
        let r = r.send().expect("request");
        (r.status().as_u16(), r.json::<Value>().expect("json body"))
    };
    let (s, _) = call(http.put(url(0)).json(&serde_json::json!({"value": "1"})));
    assert_eq!(s, 201);
    // Ask the replica that executed the write, so the coordinator has it without waiting.
    let (s, j) = call(http.delete(url(0)));
    assert_eq!(
        (s, j["message"].as_str()),
        (200, Some("Deleted successfully"))
    );
    let ctx = j["causal-context"].as_str().expect("context").to_owned();
    for i in 0..2 {
        let (s, j) = call(
            http.get(url(i))
                .json(&serde_json::json!({"causal-context": ctx})),
        );
        assert_eq!(s, 404, "node {i}: {j}");
        assert_eq!(j["error"], "Key does not exist");
    }
}
