//! The harness's checkers (G1, G2, G3, G6, G7) judge histories of the real binary: sessions
//! with merged tokens read, write and delete a few keys on a 3-node loopback cluster while one
//! node is paused (SIGSTOP/SIGCONT) and another is `kill -9`ed and restarted; after heal every
//! replica's final state is read and the recorded history is checked. A planted server bug
//! (`CAUSEWAY_TEST_PLANTED_BUG`) must be reported by the same checkers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use causeway::core::{Response, Version, VersionSet, VersionVector, token};
use causeway_e2e::{Cluster, Opts, client};
use causeway_harness::real::{build, dot_from_token, replica_state};
use causeway_harness::{Checker, History, OpKind, OpRecord, Outcome, Violation, check};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SESSIONS: usize = 6;
const KEYS: usize = 3;
const CHECKERS: [Checker; 5] = [
    Checker::G1,
    Checker::G2,
    Checker::G3,
    Checker::G6,
    Checker::G7,
];

/// A small xorshift generator: the workload need not replay, only vary.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// The versions and context of a read's JSON form.
fn parse_read(body: &serde_json::Value) -> Option<(Vec<Version>, VersionVector)> {
    let mut versions = Vec::new();
    for s in body["siblings"].as_array()? {
        let value = match s["value"].as_str() {
            Some(v) => Some(Bytes::from(B64.decode(v).ok()?)),
            None => None,
        };
        versions.push(Version {
            dot: dot_from_token(s["dot"].as_str()?)?,
            value,
            ts: 0,
            content_type: None,
        });
    }
    versions.sort_by_key(|v| v.dot);
    let context = token::decode(body["context"].as_str()?).ok()?;
    Some((versions, context))
}

/// One session: random reads (r=1 or quorum), puts of distinct values and deletes on few keys,
/// sometimes merging another session's latest token into its own, until `until`.
fn session(
    s: usize,
    urls: Vec<String>,
    shared: Arc<Mutex<Vec<VersionVector>>>,
    t0: Instant,
    until: Duration,
) -> Vec<OpRecord> {
    let http = client();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((s as u64 + 1) * 0x1000_0001));
    let mut ctx = VersionVector::new();
    let mut ops = Vec::new();
    let mut n = 0;
    while t0.elapsed() < until {
        if rng.below(10) == 0 {
            let other = shared.lock().unwrap()[rng.below(SESSIONS as u64) as usize].clone();
            ctx.merge(&other);
        }
        let node = if rng.below(4) == 0 {
            rng.below(3) as usize
        } else {
            s % 3
        };
        let key = format!("k{}", rng.below(KEYS as u64));
        let kind = match (rng.below(10), ctx.is_empty()) {
            (_, true) | (0..=3, _) => OpKind::Put,
            (4..=7, _) => OpKind::Get,
            _ => OpKind::Delete,
        };
        n += 1;
        let value = (kind == OpKind::Put).then(|| format!("s{s}-{n}"));
        let url = format!("{}/v1/kv/{key}", urls[node]);
        let req = match kind {
            OpKind::Get if rng.below(3) == 0 => http.get(format!("{url}?r=quorum")),
            OpKind::Get => http.get(&url),
            OpKind::Put => http.put(&url).body(value.clone().unwrap_or_default()),
            OpKind::Delete => http.delete(&url),
        };
        let mut op = OpRecord {
            id: 0,
            session: s,
            node,
            kind,
            key: Bytes::from(key),
            value: value.map(Bytes::from),
            context: ctx.clone(),
            blind: false,
            invoked_us: micros(t0),
            completed_us: None,
            outcome: Outcome::Pending,
            probe: false,
            replier_applied: None,
        };
        let reply = req
            .header("x-causal-context", token::encode(&ctx))
            .header("accept", "application/json")
            .timeout(Duration::from_secs(10))
            .send();
        op.completed_us = Some(micros(t0));
        op.outcome = match reply {
            Err(e) => op.unavailable(e.to_string()),
            Ok(r) => {
                let status = r.status().as_u16();
                let dot = r
                    .headers()
                    .get("x-causeway-dot")
                    .and_then(|v| v.to_str().ok())
                    .and_then(dot_from_token);
                let reply_ctx = r
                    .headers()
                    .get("x-causal-context")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|t| token::decode(t).ok());
                match (kind, status) {
                    (OpKind::Get, 200 | 300 | 404) => {
                        let body: serde_json::Value = r.json().unwrap_or_default();
                        match parse_read(&body) {
                            Some((versions, context)) => {
                                Outcome::Ok(Response::Read { versions, context })
                            }
                            None => Outcome::Failed(format!("unreadable read reply: {body}")),
                        }
                    }
                    (_, 204) => match (dot, reply_ctx) {
                        (Some(dot), Some(context)) => Outcome::Ok(Response::Written {
                            dot,
                            context,
                            replaced: false,
                            coordinator_context: None,
                        }),
                        _ => Outcome::Indeterminate("204 without a dot or context".into()),
                    },
                    (_, 400 | 409) => Outcome::Failed(format!("status {status}")),
                    _ => op.unavailable(format!("status {status}")),
                }
            }
        };
        if let Outcome::Ok(Response::Read { context, .. } | Response::Written { context, .. }) =
            &op.outcome
        {
            ctx.merge(context);
            shared.lock().unwrap()[s] = ctx.clone();
        }
        ops.push(op);
    }
    ops
}

/// Every replica's versions of every key by an r=1 read at it, once all replicas agree or
/// after a bounded wait (then G3 judges the disagreement).
fn final_states(c: &Cluster) -> BTreeMap<Bytes, Vec<(usize, VersionSet)>> {
    let http = client();
    let read = |node: usize, key: &str| -> Option<Vec<Version>> {
        let r = http
            .get(format!("{}/v1/kv/{key}", c.url(node)))
            .header("accept", "application/json")
            .send()
            .ok()?;
        if !matches!(r.status().as_u16(), 200 | 300 | 404) {
            return None;
        }
        parse_read(&r.json().ok()?).map(|(v, _)| v)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut finals = BTreeMap::new();
        let mut agree = true;
        for k in 0..KEYS {
            let key = format!("k{k}");
            let states: Vec<(usize, Vec<Version>)> = (0..3)
                .map(|n| (n, read(n, &key).unwrap_or_default()))
                .collect();
            agree &= states.iter().all(|(_, s)| *s == states[0].1);
            finals.insert(
                Bytes::from(key),
                states
                    .into_iter()
                    .map(|(n, s)| (n, replica_state(s)))
                    .collect(),
            );
        }
        if agree || Instant::now() > deadline {
            return finals;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the workload under a pause of node 1 and a `kill -9` and restart of node 2, heals,
/// reads the final states and checks the history.
fn run(name: &str, env: Vec<(String, String)>) -> (History, Vec<Violation>) {
    let opts = Opts {
        env,
        ..Opts::default()
    };
    let mut c = Cluster::start_with(name, 3, 3, &["--sync", "always"], opts);
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    let shared = Arc::new(Mutex::new(vec![VersionVector::new(); SESSIONS]));
    let t0 = Instant::now();
    let until = Duration::from_secs(14);
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let (urls, shared) = (urls.clone(), shared.clone());
            std::thread::spawn(move || session(s, urls, shared, t0, until))
        })
        .collect();
    let at = |secs: f64| {
        let when = Duration::from_secs_f64(secs);
        if let Some(rest) = when.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    };
    at(2.0);
    c.signal(1, "STOP");
    at(5.0);
    c.signal(1, "CONT");
    at(6.0);
    c.kill(2);
    at(8.0);
    c.restart(2);
    let ops: Vec<OpRecord> = sessions
        .into_iter()
        .flat_map(|h| h.join().expect("session"))
        .collect();
    let finals = final_states(&c);
    let h = build(ops, finals, c.addrs.len()).expect("the workload sends no blind deletes");
    let v = check(&h, &CHECKERS, false);
    let count = |f: fn(&OpRecord) -> bool| h.ops.iter().filter(|o| f(o)).count();
    eprintln!(
        "{name}: {} ops ({} acked writes, {} ok reads, {} indeterminate, {} failed), {} registry entries, {} violations",
        h.ops.len(),
        count(|o| o.acked_dot().is_some()),
        count(|o| matches!(o.outcome, Outcome::Ok(Response::Read { .. }))),
        count(|o| matches!(o.outcome, Outcome::Indeterminate(_))),
        count(|o| matches!(o.outcome, Outcome::Failed(_))),
        h.writes.len(),
        v.len()
    );
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for o in &h.ops {
        if let Outcome::Failed(e) | Outcome::Indeterminate(e) = &o.outcome {
            *why.entry(e.chars().take(60).collect()).or_default() += 1;
        }
    }
    eprintln!("{name}: failures {why:?}");
    (h, v)
}

#[test]
fn checkers_pass_on_a_real_cluster_under_kill_9_and_pauses() {
    let (h, v) = run("checked", Vec::new());
    let acked = h.ops.iter().filter(|o| o.acked_dot().is_some()).count();
    let reads = h
        .ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok(Response::Read { .. })))
        .count();
    assert!(
        acked > 100 && reads > 100,
        "the workload ran: {acked} writes, {reads} reads"
    );
    let shown: Vec<String> = v.iter().take(10).map(|x| x.to_string()).collect();
    assert!(
        v.is_empty(),
        "{} violations:\n{}",
        v.len(),
        shown.join("\n")
    );
}

#[test]
fn checkers_catch_a_planted_stale_write_context() {
    let env = vec![(
        "CAUSEWAY_TEST_PLANTED_BUG".to_string(),
        "stale-write-context".to_string(),
    )];
    let (_, v) = run("checked-bug", env);
    assert!(
        v.iter()
            .any(|x| x.checker == Checker::G1 && x.detail.contains("own dot")),
        "the planted bug went unnoticed: {v:?}"
    );
    eprintln!("planted bug caught: {}", v[0]);
}
