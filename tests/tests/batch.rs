//! `POST /v1/batch` against a real three-shard cluster: 1,000 puts in one request land on every
//! shard and read back through the single-key API; gets, deletes, siblings and contexts behave
//! as they do one key at a time; a bad operation fails alone; more than 1,000 operations, an
//! oversized body or a malformed one is refused as a whole with a JSON error; roles apply.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use causeway_e2e::{Cluster, add_token, client, client_with, context_of, wait_token};
use serde_json::{Value, json};

fn batch(url: &str, body: &Value, ctx: Option<&str>) -> (u16, Value) {
    let mut req = client().post(format!("{url}/v1/batch")).json(body);
    if let Some(c) = ctx {
        req = req.header("X-Causal-Context", c);
    }
    let r = req.send().expect("batch");
    let status = r.status().as_u16();
    (status, r.json().expect("a JSON reply"))
}

fn statuses(reply: &Value) -> Vec<u64> {
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect()
}

#[test]
fn batches_run_every_operation_like_the_single_key_api() {
    let c = Cluster::start("batch", 3, 1, &["--max-value-bytes", "4096"]);
    let url = c.url(0);
    let http = client();

    // 1,000 puts, one request: every key on its shard, a binary one by key_base64.
    let mut ops: Vec<Value> = (0..999)
        .map(|i| json!({"op": "put", "key": format!("b-{i:04}"), "value": B64.encode(format!("v{i}"))}))
        .collect();
    ops.push(
        json!({"op": "put", "key_base64": B64.encode(b"\x00bin\xff"), "value": B64.encode("raw"),
                    "content_type": "text/plain", "w": "all"}),
    );
    let (status, reply) = batch(&url, &json!({"ops": ops}), None);
    assert_eq!(status, 200, "{reply}");
    assert!(statuses(&reply).iter().all(|s| *s == 204), "{reply}");
    let served: std::collections::BTreeSet<&str> = reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["served_by"].as_str().unwrap())
        .collect();
    assert_eq!(served.len(), 3, "the puts reached every shard: {served:?}");
    let batch_ctx = reply["context"].as_str().unwrap().to_owned();
    for i in [0, 417, 998] {
        let r = http
            .get(format!("{}/v1/kv/b-{i:04}", c.url(2)))
            .header("X-Causal-Context", &batch_ctx)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), format!("v{i}"));
    }
    let r = http
        .get(format!("{}/v1/kv/%00bin%FF", c.url(1)))
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().unwrap(), "raw");

    // Gets (one missing), a delete, and errors that fail only their own operation.
    let ops = json!({"ops": [
        {"op": "get", "key": "b-0005"},
        {"op": "get", "key": "absent"},
        {"op": "delete", "key": "b-0006"},
        {"op": "put", "key": "bad", "value": "not base64!"},
        {"op": "put", "key": "big", "value": B64.encode(vec![b'x'; 4097])},
        {"op": "get", "key": ""},
        {"op": "rename", "key": "b-0007"},
        {"op": "get", "key": "b-0007", "r": "9"},
        {"op": "get", "key": "b-0008", "context": "!!"},
    ]});
    let (status, reply) = batch(&url, &ops, Some(&batch_ctx));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        statuses(&reply),
        [200, 404, 204, 400, 413, 400, 400, 400, 400],
        "{reply}"
    );
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results[0]["values"], json!([B64.encode("v5")]));
    assert!(
        results[0]["context"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(results[3]["error"], "bad request");
    assert_eq!(results[4]["error"], "payload too large");
    assert!(
        results[7]["detail"].as_str().unwrap().contains("replicas"),
        "{reply}"
    );
    let r = http
        .get(format!("{}/v1/kv/b-0006", c.url(1)))
        .header("X-Causal-Context", reply["context"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "the batch's delete applied");
    let r = http.get(format!("{url}/v1/kv/big")).send().unwrap();
    assert_eq!(r.status(), 404, "the oversized put wrote nothing");

    // Concurrent writes (no context) become siblings; a put with the read's context replaces them.
    for v in ["apple", "banana"] {
        let (s, reply) = batch(
            &c.url(1),
            &json!({"ops": [{"op": "put", "key": "fruit", "value": B64.encode(v), "w": "all"}]}),
            None,
        );
        assert_eq!((s, statuses(&reply)), (200, vec![204]), "{reply}");
    }
    let (_, reply) = batch(&url, &json!({"ops": [{"op": "get", "key": "fruit"}]}), None);
    let read = &reply["results"][0];
    assert_eq!(read["status"], 300, "{reply}");
    assert_eq!(read["values"].as_array().unwrap().len(), 2);
    let ctx = read["context"].as_str().unwrap();
    let ops = json!({"ops": [{"op": "put", "key": "fruit", "value": B64.encode("cherry"),
                              "context": ctx, "w": "all"}]});
    assert_eq!(statuses(&batch(&url, &ops, None).1), [204]);
    let r = http
        .get(format!("{}/v1/kv/fruit", c.url(2)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!context_of(&r).is_empty());
    assert_eq!(r.text().unwrap(), "cherry");
}

#[test]
fn oversized_malformed_and_unauthorised_batches_are_refused_whole() {
    let c = Cluster::start("batch-limits", 1, 1, &[]);
    let url = c.url(0);
    let http = client();
    let ops: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "put", "key": format!("k{i}"), "value": ""}))
        .collect();
    let (status, reply) = batch(&url, &json!({"ops": ops}), None);
    assert_eq!(status, 413, "{}", reply["error"]);
    assert_eq!(reply["error"], "too many operations");
    assert!(reply["detail"].as_str().unwrap().contains("1000"));
    let r = http.get(format!("{url}/v1/kv/k0")).send().unwrap();
    assert_eq!(r.status(), 404, "nothing of a refused batch applied");

    let huge = format!(
        "{{\"ops\":[{{\"op\":\"put\",\"key\":\"k\",\"value\":\"{}\"}}]}}",
        "A".repeat(33 << 20)
    );
    let r = http
        .post(format!("{url}/v1/batch"))
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().unwrap()["error"], "payload too large");

    for body in [
        "{\"ops\":[",
        "{\"ops\":{}}",
        "[]",
        "{\"ops\":[{\"op\":\"get\",\"key\":\"k\",\"colour\":1}]}",
    ] {
        let r = http
            .post(format!("{url}/v1/batch"))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().unwrap()["error"], "bad request", "{body}");
    }

    let reader = add_token("read");
    wait_token(&format!("{url}/v1/cluster?scope=local"), &reader);
    let get = json!({"ops": [{"op": "get", "key": "k"}]});
    let r = client_with(Some(&reader))
        .post(format!("{url}/v1/batch"))
        .json(&get)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "a batch needs the write role");
    let r = client_with(None)
        .post(format!("{url}/v1/batch"))
        .json(&get)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}
