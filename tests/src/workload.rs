//! A causal workload whose history the harness's checkers judge (tests/tests/checked.rs,
//! tests/tests/partition.rs): sessions with merged tokens read (r=1 or quorum), put distinct
//! values and delete on a few keys, and record every operation as the harness's [`OpRecord`];
//! [`final_states`] reads every replica's versions after heal.

use crate::Client;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use causeway::core::{Response, Version, VersionSet, VersionVector, token};
use causeway_harness::real::{dot_from_token, replica_state};
use causeway_harness::{History, OpKind, OpRecord, Outcome, Violation};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which nodes session `s` uses `elapsed` into the workload: `None` for every node.
pub type Route = Arc<dyn Fn(usize, Duration) -> Option<Vec<usize>> + Send + Sync>;

/// What the sessions run against.
#[derive(Clone)]
pub struct Workload {
    /// Every node's base URL.
    pub urls: Vec<String>,
    pub client: Client,
    pub sessions: usize,
    /// Keys `k0`, `k1`, ….
    pub keys: usize,
    /// Longest wait for one reply (then the operation is unavailable, a write indeterminate).
    pub timeout: Duration,
    /// Where sessions may send requests over time (e.g. clients that see one side of a
    /// partition); `None`: every node throughout.
    pub route: Option<Route>,
}

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
pub fn parse_read(body: &serde_json::Value) -> Option<(Vec<Version>, VersionVector)> {
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
            expires: None,
        });
    }
    versions.sort_by_key(|v| v.dot);
    let context = token::decode(body["context"].as_str()?).ok()?;
    Some((versions, context))
}

impl Workload {
    /// Starts every session; each runs until `until` after `t0` and returns its operations.
    pub fn start(&self, t0: Instant, until: Duration) -> Vec<JoinHandle<Vec<OpRecord>>> {
        let shared = Arc::new(Mutex::new(vec![VersionVector::new(); self.sessions]));
        (0..self.sessions)
            .map(|s| {
                let (w, shared) = (self.clone(), shared.clone());
                std::thread::spawn(move || w.session(s, &shared, t0, until))
            })
            .collect()
    }

    /// The nodes session `s` may use now.
    fn nodes(&self, s: usize, t0: Instant) -> Vec<usize> {
        self.route
            .as_ref()
            .and_then(|r| r(s, t0.elapsed()))
            .unwrap_or_else(|| (0..self.urls.len()).collect())
    }

    /// One session: it sends three requests in four to its home node (the `s`-th of the nodes
    /// it may use, cyclically), the rest to any of them; reads (r=1 or quorum), puts of
    /// distinct values and deletes on few keys, sometimes merging into its own token the
    /// latest token of another session that uses the same nodes now.
    fn session(
        &self,
        s: usize,
        shared: &Mutex<Vec<VersionVector>>,
        t0: Instant,
        until: Duration,
    ) -> Vec<OpRecord> {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((s as u64 + 1) * 0x1000_0001));
        let mut ctx = VersionVector::new();
        let mut ops = Vec::new();
        let mut n = 0;
        while t0.elapsed() < until {
            let nodes = self.nodes(s, t0);
            if rng.below(10) == 0 {
                let other = rng.below(self.sessions as u64) as usize;
                if self.nodes(other, t0) == nodes {
                    ctx.merge(&shared.lock().unwrap()[other]);
                }
            }
            let node = if rng.below(4) == 0 {
                nodes[rng.below(nodes.len() as u64) as usize]
            } else {
                nodes[s % nodes.len()]
            };
            let key = format!("k{}", rng.below(self.keys as u64));
            let kind = match (rng.below(10), ctx.is_empty()) {
                (_, true) | (0..=3, _) => OpKind::Put,
                (4..=7, _) => OpKind::Get,
                _ => OpKind::Delete,
            };
            n += 1;
            let value = (kind == OpKind::Put).then(|| format!("s{s}-{n}"));
            let url = format!("{}/v1/kv/{key}", self.urls[node]);
            let http = &self.client;
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
                servable: None,
                reset: false,
            };
            let reply = req
                .header("x-causal-context", token::encode(&ctx))
                .header("accept", "application/json")
                .timeout(self.timeout)
                .send();
            op.completed_us = Some(micros(t0));
            op.outcome = outcome(&op, kind, reply);
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
    /// after `within` (then G3 judges the disagreement).
    pub fn final_states(&self, within: Duration) -> BTreeMap<Bytes, Vec<(usize, VersionSet)>> {
        let read = |node: usize, key: &str| -> Option<Vec<Version>> {
            let r = self
                .client
                .get(format!("{}/v1/kv/{key}", self.urls[node]))
                .header("accept", "application/json")
                .send()
                .ok()?;
            if !matches!(r.status().as_u16(), 200 | 300 | 404) {
                return None;
            }
            parse_read(&r.json().ok()?).map(|(v, _)| v)
        };
        let deadline = Instant::now() + within;
        loop {
            let mut finals = BTreeMap::new();
            let mut agree = true;
            for k in 0..self.keys {
                let key = format!("k{k}");
                let states: Vec<(usize, Vec<Version>)> = (0..self.urls.len())
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
}

/// What a reply (or its absence) means for the history.
fn outcome(op: &OpRecord, kind: OpKind, reply: reqwest::Result<crate::Response>) -> Outcome {
    let r = match reply {
        Err(e) => return op.unavailable(e.to_string()),
        Ok(r) => r,
    };
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
                Some((versions, context)) => Outcome::Ok(Response::Read { versions, context }),
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
        _ => {
            // The reason the server gave (`{"error": …}`), for the failure breakdowns.
            let body: serde_json::Value = r.json().unwrap_or_default();
            let why = format!("status {status}: {}", body["error"].as_str().unwrap_or("?"));
            match status {
                400 | 409 => Outcome::Failed(why),
                _ => op.unavailable(why),
            }
        }
    }
}

/// Prints what a checked run did: operations by outcome, the registry's size, the violations
/// and why operations failed.
pub fn report(name: &str, h: &History, v: &[Violation]) {
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
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for x in v {
        *by.entry(format!("{:?}", x.checker)).or_default() += 1;
    }
    eprintln!("{name}: violations by checker {by:?}");
    for x in v.iter().take(10) {
        eprintln!("{name}: {x}");
    }
}
