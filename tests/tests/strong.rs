//! Strong keys on real processes: 16 clients increment one counter by compare-and-set on a
//! 3-node cluster while one node is `kill -9`ed and restarted; the final value must equal the
//! number of CAS writes that took effect, and the recorded history (wall-clock invoke and
//! completion in µs from a common instant) must pass the harness's linearizability checker.
//! Plus hostile input on `/v1/strong`: a bad `If-Match` is 400, an oversized value 413, no token
//! 401.

use causeway_client::{Client, Cond, Error, StrongWrite};
use causeway_e2e::{Cluster, client_with, credentials, library_client};
use causeway_harness::linearizable::{self, StrongCall, StrongOp, StrongResult};
use std::time::{Duration, Instant};

const KEY: &[u8] = b"counter";
const CLIENTS: u64 = 16;

/// What one client's loop did: its history and counts.
#[derive(Default)]
struct Tally {
    ops: Vec<StrongOp>,
    /// CAS writes acknowledged as written.
    written: u64,
    /// CAS writes whose outcome is unknown (503 or a broken connection after sending).
    unknown: u64,
    /// CAS writes refused by the precondition (412).
    conflicts: u64,
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Get, parse, `If-Match` put of value + 1, until `until`; every answered call is recorded.
async fn increment_loop(client: Client, id: u64, t0: Instant, until: Duration) -> Tally {
    let mut t = Tally::default();
    let op = |invoke_us, complete_us, call, result| StrongOp {
        key: KEY.to_vec(),
        client: id,
        invoke_us,
        complete_us,
        call,
        result,
    };
    while t0.elapsed() < until {
        let invoke = micros(t0);
        let (found, version) = match client.strong_get_versioned(KEY).await {
            Ok(r) => r,
            // A read without an answer constrains nothing: leave it out, pause, retry.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let value = found.as_ref().map(|(v, _)| v.to_vec());
        t.ops.push(op(
            invoke,
            Some(micros(t0)),
            StrongCall::Get,
            StrongResult::Read {
                value: value.clone(),
                version,
            },
        ));
        let current: u64 = match &value {
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("the counter holds a number"),
            None => 0,
        };
        let next = (current + 1).to_string().into_bytes();
        let call = StrongCall::Put {
            value: next.clone(),
            cond: linearizable::Cond::IfVersion(version),
        };
        let invoke = micros(t0);
        let result = match client.strong_put(KEY, next, Cond::IfVersion(version)).await {
            Ok(StrongWrite::Written { version }) => {
                t.written += 1;
                StrongResult::Written { version }
            }
            Ok(StrongWrite::PreconditionFailed { version }) => {
                t.conflicts += 1;
                StrongResult::PreconditionFailed { version }
            }
            Err(Error::Indeterminate { .. }) => {
                t.unknown += 1;
                t.ops.push(op(invoke, None, call, StrongResult::Unknown));
                continue;
            }
            // Not sent to any node: no effect, nothing to record.
            Err(Error::Unavailable { .. }) => continue,
            Err(e) => panic!("client {id}: unexpected strong put error: {e}"),
        };
        t.ops.push(op(invoke, Some(micros(t0)), call, result));
    }
    t
}

#[test]
fn cas_counter_is_linearizable_through_kill_9_and_restart() {
    let mut c = Cluster::start("strong-cas", 3, 3, &["--sync", "always"]);
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let t0 = Instant::now();
    let run_for = Duration::from_secs(20);
    let handles: Vec<_> = (0..CLIENTS)
        .map(|id| {
            // Each client starts at a different node, failing over to the others.
            let mut nodes = urls.clone();
            nodes.rotate_left(id as usize % urls.len());
            let client = library_client(&nodes, Some(&credentials().admin_token));
            rt.spawn(increment_loop(client, id, t0, run_for))
        })
        .collect();
    let at = |secs: u64| {
        if let Some(rest) = Duration::from_secs(secs).checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    };
    at(7);
    c.kill(1);
    at(12);
    c.restart(1);
    let tallies: Vec<Tally> = rt.block_on(async {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("client task"));
        }
        out
    });
    let written: u64 = tallies.iter().map(|t| t.written).sum();
    let unknown: u64 = tallies.iter().map(|t| t.unknown).sum();
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    let mut history: Vec<StrongOp> = tallies.into_iter().flat_map(|t| t.ops).collect();

    // The final state, read once everything has settled (a definite read, recorded too).
    let reader = library_client(&urls, Some(&credentials().admin_token));
    let invoke = micros(t0);
    let (found, version) = rt
        .block_on(reader.strong_get_versioned(KEY))
        .expect("final read");
    let value = found.map(|(v, _)| v.to_vec());
    history.push(StrongOp {
        key: KEY.to_vec(),
        client: CLIENTS,
        invoke_us: invoke,
        complete_us: Some(micros(t0)),
        call: StrongCall::Get,
        result: StrongResult::Read {
            value: value.clone(),
            version,
        },
    });
    let final_value: u64 = value
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .expect("the counter holds a number");
    println!(
        "strong CAS counter: {written} written, {conflicts} precondition failures, {unknown} \
         indeterminate, final value {final_value} at version {version}, {} ops recorded",
        history.len()
    );
    assert!(written > 100, "the cluster made progress: {written} CAS");
    // Every write of the counter is a CAS increment, so value and version move together; each
    // CAS that took effect is an acknowledged one or one of the indeterminate ones.
    assert_eq!(final_value, version);
    assert!(
        (written..=written + unknown).contains(&final_value),
        "final value {final_value}: {written} acknowledged CAS, {unknown} indeterminate"
    );
    if unknown == 0 {
        assert_eq!(final_value, written);
    }
    let checked = Instant::now();
    let stats = linearizable::check(&history).unwrap_or_else(|v| panic!("{v}"));
    println!(
        "linearizability check: {stats:?} in {:?}",
        checked.elapsed()
    );
}

#[test]
fn hostile_strong_requests_get_clear_errors() {
    let c = Cluster::start("strong-hostile", 1, 1, &["--max-value-bytes", "1024"]);
    let url = format!("{}/v1/strong/k", c.url(0));
    let admin = c.client();
    let status_and_error = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    };
    for bad in ["\"abc\"", "-1", "1.5", "99999999999999999999999", "W/\"x\""] {
        let r = admin
            .put(&url)
            .header("if-match", bad)
            .body("v")
            .send()
            .expect("put");
        let (status, error) = status_and_error(r);
        assert_eq!(status, 400, "If-Match {bad:?}");
        assert!(!error.is_empty(), "a JSON error for If-Match {bad:?}");
    }
    for (name, value) in [("if-none-match", "\"3\""), ("if-none-match", "")] {
        let r = admin
            .put(&url)
            .header(name, value)
            .body("v")
            .send()
            .expect("put");
        assert_eq!(status_and_error(r).0, 400, "{name}: {value:?}");
    }
    let both = admin
        .put(&url)
        .header("if-match", "0")
        .header("if-none-match", "*")
        .body("v")
        .send()
        .expect("put");
    assert_eq!(status_and_error(both).0, 400, "both preconditions");
    let r = admin
        .put(&url)
        .body(vec![b'x'; 4096])
        .send()
        .expect("oversized put");
    assert_eq!(status_and_error(r).0, 413);
    let anonymous = client_with(None);
    assert_eq!(
        status_and_error(anonymous.get(&url).send().expect("get")).0,
        401
    );
    assert_eq!(
        status_and_error(anonymous.put(&url).body("v").send().expect("put")).0,
        401
    );
    // None of them wrote: the key is still at version 0.
    let r = admin.get(&url).send().expect("get");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["etag"].to_str().unwrap().trim_matches('"'), "0");
}
