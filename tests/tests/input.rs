//! Bad input: every malformed request gets the right 4xx as JSON, and the node keeps serving.

use causeway_e2e::{Cluster, client, raw_status};

#[test]
fn bad_input_table() {
    let c = Cluster::start("input", 1, 1, &["--max-value-bytes", "1024"]);
    let addr = c.addrs[0].clone();
    let long_key = "k".repeat(1025);
    let big = "v".repeat(2000);
    let table: Vec<(&str, String, bool, u16)> = vec![
        (
            "oversized key",
            format!("GET /v1/kv/{long_key} HTTP/1.1\r\nHost: x\r\n\r\n"),
            false,
            400,
        ),
        (
            "oversized value (declared)",
            format!("PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{big}"),
            false,
            413,
        ),
        (
            "oversized value (chunked)",
            format!(
                "PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{big}\r\n0\r\n\r\n"
            ),
            false,
            413,
        ),
        (
            "invalid token",
            "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Causal-Context: !!notbase64!!\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "malformed token",
            "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Causal-Context: AAAA\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "bad percent-encoding",
            "GET /v1/kv/a%zz HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "truncated escape",
            "GET /v1/kv/a% HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "bad query escape",
            "GET /v1/kv?start=%G1 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "unknown parameter",
            "GET /v1/kv/a?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "bad quorum",
            "PUT /v1/kv/a?w=9 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv".into(),
            false,
            400,
        ),
        (
            "bad limit",
            "GET /v1/kv?limit=0 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            400,
        ),
        (
            "wrong method",
            "POST /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            false,
            405,
        ),
        (
            "wrong method (compat)",
            "POST /kv-store/keys/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
            false,
            405,
        ),
        (
            "truncated body",
            "PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b".into(),
            true,
            400,
        ),
        (
            "bad JSON (compat)",
            "PUT /kv-store/keys/a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"value\":"
                .into(),
            false,
            400,
        ),
        (
            "bad JSON (merge)",
            "POST /v1/context/merge HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n[1]".into(),
            false,
            400,
        ),
        (
            "unknown route",
            "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            404,
        ),
        (
            "empty key",
            "GET /v1/kv/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            false,
            404,
        ),
    ];
    let http = client();
    for (name, req, half_close, want) in &table {
        let got = raw_status(&addr, req.as_bytes(), *half_close);
        assert_eq!(got, *want, "{name}");
        let h = http
            .get(format!("{}/healthz", c.url(0)))
            .send()
            .unwrap_or_else(|e| panic!("node stopped serving after {name}: {e}"));
        assert!(h.status().is_success(), "healthz after {name}");
    }
    // Errors are JSON with a message.
    let r = http
        .get(format!("{}/v1/kv/a?x=1", c.url(0)))
        .send()
        .expect("request");
    let j: serde_json::Value = r.json().expect("json error");
    assert_eq!(j["error"], "bad request");
    assert!(j["detail"].as_str().is_some_and(|d| d.contains("x")));
    // A value of exactly the limit is accepted.
    let r = http
        .put(format!("{}/v1/kv/a", c.url(0)))
        .body("v".repeat(1024))
        .send()
        .expect("put at the limit");
    assert_eq!(r.status(), 204);
}
