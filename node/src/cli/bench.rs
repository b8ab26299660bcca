//! `causeway bench`: a closed-loop HTTP load generator with HdrHistogram latencies, and the bare
//! axum "ceiling" server it is compared against (README: figures are ratios measured in one run).
//!
//! `--concurrency` tasks each hold one keep-alive connection (targets assigned round-robin) and
//! issue requests back to back until `--duration` ends. Three APIs can be driven with the same
//! loop, so their figures compare like for like:
//! - `causeway`: `PUT`/`GET /v1/kv/{key}` with `w`/`r`;
//! - `etcd`: etcd's v3 JSON gateway, `POST /v3/kv/put` `{"key","value"}` (base64) and
//!   `POST /v3/kv/range` `{"key","serializable":true}` — a serializable get is served locally by
//!   the member, the closest etcd read to a causeway `r=1` read;
//! - `strong`: strong keys, `PUT`/`GET /v1/strong/{key}` (linearizable, through a majority);
//! - `ceiling`: any request to the ceiling server, which answers 200 without doing any work;
//! - `redis`: RESP2 over one TCP connection per task ([`super::resp`]), `SET key value` and
//!   `GET key`; with `--redis-wait N`, every SET is followed, in the same pipelined write, by
//!   `WAIT N TIMEOUT`, and counts as an error unless at least N replicas acknowledged it —
//!   the closest Redis write to a causeway `w=quorum` write.
//!
//! The `cas` workload increments counters by compare-and-set, the same way on both sides that
//! have it: read the counter and its version, then write value + 1 only if the version is
//! unchanged, again from the read until the write succeeds. One op is one successful increment
//! (its latency includes the retries); with `--keys 1` every client contends on one counter.
//! - `strong`: `GET /v1/strong/{key}` (value and `ETag`), then `PUT` with `If-Match`; a 412 retries;
//! - `etcd`: `POST /v3/kv/range` (value and `mod_revision`), then `POST /v3/kv/txn` comparing
//!   `mod_revision` (0 for a missing key) and putting on success; `"succeeded"` absent retries.
//!
//! The `lag` workload measures replication lag between clusters (docs/mesh.md), open loop:
//! `--rate` writes per second of new keys to the targets (at most `--concurrency` in flight),
//! and one observer per `--observe` node that asks its node, every [`LAG_POLL`], for the keys
//! it still waits for (one `POST /v1/batch` of `r=1` gets, answered from that node's own
//! replica). A key's lag runs from its write's acknowledgement to the first answer that holds
//! it, so it overstates the true lag by up to one poll and one batch round trip. The summary's
//! percentiles are lags; `ops` counts keys seen, `errors` failed writes and keys still unseen
//! [`LAG_GRACE`] after the last write, and `ops_per_sec` is the acknowledged write rate.

use super::resp;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use causeway_client::{Cond, Quorum, Request, Retry, Session, StrongWrite};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which HTTP API the targets speak.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Causeway,
    Etcd,
    Strong,
    Ceiling,
    Redis,
}

/// What the load consists of.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Reads of keys written by a load phase first.
    Get,
    /// Overwrites of random keys.
    Put,
    /// Reads and writes, `--read-ratio` of them reads.
    Mixed,
    /// Writes every key exactly once, then stops (bulk load; ignores --duration).
    Load,
    /// Compare-and-set increments of random counters (strong and etcd only; see the module doc).
    Cas,
    /// New keys at `--rate` per second, each timed until `--observe` nodes read it (causeway
    /// only; see the module doc).
    Lag,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Base URLs to load, comma separated (e.g. http://127.0.0.1:8080)
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    #[arg(long, value_enum, default_value = "causeway")]
    pub api: Api,
    #[arg(long, value_enum, default_value = "mixed")]
    pub workload: Workload,
    /// Number of distinct keys
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per value
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Concurrent closed-loop clients (one connection each)
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds of measured load
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Fraction of reads in the mixed workload
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Write quorum for causeway (1, 2, …, quorum, all)
    #[arg(long)]
    pub w: Option<Quorum>,
    /// Read quorum for causeway
    #[arg(long)]
    pub r: Option<Quorum>,
    /// Redis only: follow every SET with `WAIT N` and require N replica acknowledgements
    #[arg(long, default_value_t = 0)]
    pub redis_wait: u32,
    /// Redis only: the WAIT timeout in milliseconds
    #[arg(long, default_value_t = 5000)]
    pub redis_wait_ms: u64,
    /// Bearer token for nodes that require one
    #[arg(long, env = "CAUSEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to trust for https:// targets
    #[arg(long, env = "CAUSEWAY_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Seed of the key choice (and, for the lag workload, part of its key names)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lag workload: writes offered per second
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Lag workload: base URLs of the nodes that must read each key, comma separated (each key
    /// is watched at one of them, round-robin)
    #[arg(long, value_delimiter = ',')]
    pub observe: Vec<String>,
}

/// How often a lag observer asks its node for the keys it waits for.
const LAG_POLL: Duration = Duration::from_millis(2);
/// How long lag observers keep asking after the last write; keys unseen by then are errors.
const LAG_GRACE: Duration = Duration::from_secs(10);
/// Most keys one observer poll asks for (the batch API's limit).
const LAG_BATCH: usize = 1000;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub api: Api,
    pub workload: Workload,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// First error seen, if any, to tell a misconfiguration from overload.
    pub first_error: Option<String>,
}

/// One request the loop can issue.
enum Call {
    Get(u64),
    Put(u64),
    Cas(u64),
}

/// Attempts of one CAS increment before it counts as an error.
const CAS_ATTEMPTS: u32 = 10_000;

/// One target and how to load it. Bench clients make one attempt per request: a failure is
/// counted, never retried.
struct Target {
    client: causeway_client::Client,
    /// The target as given (a Redis address for [`Api::Redis`]).
    addr: String,
    api: Api,
    value: bytes::Bytes,
    w: Option<Quorum>,
    r: Option<Quorum>,
    /// Replicas a Redis SET must reach (`WAIT`), 0 for none, and the WAIT timeout in ms.
    redis_wait: (u32, u64),
}

/// A task's own connection state: a causeway session (HTTP APIs, whose client pools
/// keep-alive connections) or its own Redis connection.
enum Link {
    Http(Session),
    Resp(resp::Conn),
}

fn key_name(i: u64) -> String {
    format!("bench-{i:010}")
}

impl Target {
    /// Issues `call`. For causeway, `session` is the task's own session, as a client's: each
    /// request sends the context of the replies before it, so a put overwrites what the session
    /// has seen instead of piling up siblings. Reads take the raw value (not its JSON form), as
    /// an application reading a value would.
    async fn call(&self, call: &Call, link: &mut Link) -> anyhow::Result<()> {
        let session = match link {
            Link::Http(s) => s,
            Link::Resp(conn) => return self.call_redis(call, conn).await,
        };
        let post = |path: &str, body: serde_json::Value| {
            Request::new(causeway_client::Method::POST, path, Retry::Never).json(&body)
        };
        let reply = match (self.api, call) {
            (_, Call::Cas(i)) => return self.cas(*i).await,
            (Api::Strong, Call::Get(i)) => {
                let path = format!("/v1/strong/{}", key_name(*i));
                self.client.send(&Request::get(path)).await?
            }
            (Api::Strong, Call::Put(i)) => {
                self.client
                    .strong_put(key_name(*i), self.value.clone(), Cond::Always)
                    .await?;
                return Ok(());
            }
            (Api::Ceiling, Call::Get(_)) => self.client.send(&Request::get("/")).await?,
            (Api::Ceiling, Call::Put(_)) => {
                let req = Request::new(causeway_client::Method::PUT, "/", Retry::Never)
                    .body(self.value.clone());
                self.client.send(&req).await?
            }
            (Api::Causeway, Call::Get(i)) => {
                let mut path = format!("/v1/kv/{}", key_name(*i));
                if let Some(r) = self.r {
                    path.push_str(&format!("?r={r}"));
                }
                session.send(Request::get(path)).await?
            }
            (Api::Causeway, Call::Put(i)) => {
                return Ok(session
                    .put_with(key_name(*i), self.value.clone(), self.w)
                    .await?);
            }
            (Api::Etcd, Call::Get(i)) => {
                let body = serde_json::json!({
                    "key": B64.encode(key_name(*i)),
                    "serializable": true,
                });
                self.client.send(&post("/v3/kv/range", body)).await?
            }
            (Api::Redis, _) => unreachable!("redis targets have a RESP link"),
            (Api::Etcd, Call::Put(i)) => {
                let body = serde_json::json!({
                    "key": B64.encode(key_name(*i)),
                    "value": B64.encode(&self.value),
                });
                self.client.send(&post("/v3/kv/put", body)).await?
            }
        };
        // A causeway read of a key nobody wrote yet (404) or with siblings (300) is a success.
        if matches!(reply.status, 200..=299 | 300 | 404) {
            Ok(())
        } else {
            Err(reply.error().into())
        }
    }

    /// One compare-and-set increment of counter `i`: read, conditional write of value + 1,
    /// again until the write succeeds.
    async fn cas(&self, i: u64) -> anyhow::Result<()> {
        let key = key_name(i);
        let parse = |v: &[u8]| -> u64 {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        for _ in 0..CAS_ATTEMPTS {
            match self.api {
                Api::Strong => {
                    let (found, version) = self.client.strong_get_versioned(&key).await?;
                    let next = found.map_or(0, |(v, _)| parse(&v)) + 1;
                    let cond = Cond::IfVersion(version);
                    match self.client.strong_put(&key, next.to_string(), cond).await? {
                        StrongWrite::Written { .. } => return Ok(()),
                        StrongWrite::PreconditionFailed { .. } => {}
                    }
                }
                Api::Etcd => {
                    let post = |path: &str, body: serde_json::Value| {
                        Request::new(causeway_client::Method::POST, path, Retry::Never).json(&body)
                    };
                    let k = B64.encode(&key);
                    let read = self
                        .client
                        .send(&post("/v3/kv/range", serde_json::json!({ "key": k })))
                        .await?
                        .success()?
                        .json()?;
                    let kv = &read["kvs"][0];
                    // The gateway writes int64 as strings and leaves zero values out.
                    let revision = kv["mod_revision"].as_str().unwrap_or("0").to_owned();
                    let value = kv["value"]
                        .as_str()
                        .and_then(|v| B64.decode(v).ok())
                        .map_or(0, |v| parse(&v));
                    let txn = serde_json::json!({
                        "compare": [{"key": k, "target": "MOD", "result": "EQUAL",
                                     "mod_revision": revision}],
                        "success": [{"request_put": {"key": k,
                                     "value": B64.encode((value + 1).to_string())}}],
                    });
                    let reply = self
                        .client
                        .send(&post("/v3/kv/txn", txn))
                        .await?
                        .success()?;
                    if reply.json()?["succeeded"] == true {
                        return Ok(());
                    }
                }
                Api::Causeway | Api::Ceiling | Api::Redis => {
                    bail!("the cas workload needs --api strong or etcd")
                }
            }
        }
        bail!("{key}: no CAS succeeded in {CAS_ATTEMPTS} attempts")
    }
}

impl Target {
    async fn call_redis(&self, call: &Call, conn: &mut resp::Conn) -> anyhow::Result<()> {
        let replies = match call {
            Call::Get(i) => conn.pipeline(&[&[b"GET", key_name(*i).as_bytes()]]).await?,
            Call::Put(i) => {
                let key = key_name(*i);
                let set: &[&[u8]] = &[b"SET", key.as_bytes(), &self.value];
                let (n, ms) = self.redis_wait;
                if n == 0 {
                    conn.pipeline(&[set]).await?
                } else {
                    let (n, ms) = (n.to_string(), ms.to_string());
                    conn.pipeline(&[set, &[b"WAIT", n.as_bytes(), ms.as_bytes()]])
                        .await?
                }
            }
            Call::Cas(_) => bail!("the cas workload needs --api strong or etcd"),
        };
        for r in replies {
            match r {
                resp::Reply::Error(e) => bail!("redis: {e}"),
                // The only integer reply of these commands is WAIT's count of replicas.
                resp::Reply::Integer(acked) if acked < i64::from(self.redis_wait.0) => {
                    bail!(
                        "redis: WAIT saw {acked} of {} replicas in time",
                        self.redis_wait.0
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs the benchmark described by `args` and returns its summary (also printed).
pub async fn run(args: BenchArgs) -> anyhow::Result<Summary> {
    if args.concurrency == 0 || args.keys == 0 || args.target.is_empty() {
        bail!("--concurrency, --keys and --target must be non-empty");
    }
    if args.workload == Workload::Cas && !matches!(args.api, Api::Strong | Api::Etcd) {
        bail!("the cas workload needs --api strong or --api etcd");
    }
    if args.workload == Workload::Lag
        && (args.api != Api::Causeway || args.observe.is_empty() || args.rate == 0)
    {
        bail!("the lag workload needs --api causeway, --observe and a --rate of at least 1");
    }
    let value = bytes::Bytes::from(vec![b'x'; args.value_size]);
    let mut clients = Vec::with_capacity(args.target.len());
    for t in &args.target {
        // A Redis target (`redis://host:port` or `host:port`) gets an unused HTTP client too,
        // built from its bare address so the builder accepts it.
        clients.push(Arc::new(Target {
            client: http_client(&args, t.trim_start_matches("redis://"))?,
            addr: t.clone(),
            redis_wait: (args.redis_wait, args.redis_wait_ms),
            api: args.api,
            value: value.clone(),
            w: args.w,
            r: args.r,
        }));
    }
    if args.workload == Workload::Get && args.api != Api::Ceiling {
        let mut load = args.clone();
        load.workload = Workload::Load;
        load.json = false;
        eprintln!("loading {} keys before the read phase…", args.keys);
        drive(&load, &clients).await?;
    }
    let summary = if args.workload == Workload::Lag {
        lag(&args, &clients).await?
    } else {
        drive(&args, &clients).await?
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{:?} {:?} c={}: {:.0} ops/s, {} ops, {} errors, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
            summary.api,
            summary.workload,
            summary.concurrency,
            summary.ops_per_sec,
            summary.ops,
            summary.errors,
            summary.p50_us as f64 / 1000.0,
            summary.p99_us as f64 / 1000.0,
            summary.p999_us as f64 / 1000.0,
        );
        if let Some(e) = &summary.first_error {
            println!("first error: {e}");
        }
    }
    Ok(summary)
}

/// A client of `node` that makes one attempt per request, with the token and CA of `args`.
fn http_client(args: &BenchArgs, node: &str) -> anyhow::Result<causeway_client::Client> {
    let mut b = causeway_client::Client::builder()
        .node(node.to_string())
        .attempts(1)
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30));
    if let Some(token) = &args.token {
        b = b.token(token.clone());
    }
    if let Some(ca) = &args.ca_cert {
        b = b.ca_file(ca)?;
    }
    b.build().context("building the HTTP client")
}

/// Keys an observer waits for, with when their writes were acknowledged.
type Watched = Arc<Mutex<BTreeMap<String, Instant>>>;

/// The lag workload (see the module doc).
async fn lag(args: &BenchArgs, clients: &[Arc<Target>]) -> anyhow::Result<Summary> {
    let writing = Arc::new(AtomicBool::new(true));
    let mut watched: Vec<Watched> = Vec::new();
    let mut observers = Vec::new();
    for node in &args.observe {
        let client = http_client(args, node)?;
        let keys: Watched = Arc::default();
        watched.push(keys.clone());
        observers.push(tokio::spawn(observe(client, keys, writing.clone())));
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let failed = Arc::new(Mutex::new((0u64, None::<String>)));
    let acked = Arc::new(AtomicU64::new(0));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut writes = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        ticks.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let target = clients[i as usize % clients.len()].clone();
        let keys = watched[i as usize % watched.len()].clone();
        let (failed, acked) = (failed.clone(), acked.clone());
        let key = format!("lag-{}-{i:010}", args.seed);
        let mut path = format!("/v1/kv/{key}");
        if let Some(w) = target.w {
            path.push_str(&format!("?w={w}"));
        }
        writes.spawn(async move {
            let req = Request::new(causeway_client::Method::PUT, path, Retry::Never)
                .body(target.value.clone());
            match target.client.send(&req).await.and_then(|r| r.success()) {
                Ok(_) => {
                    let now = Instant::now();
                    keys.lock().expect("not poisoned").insert(key, now);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let mut f = failed.lock().expect("not poisoned");
                    f.0 += 1;
                    f.1.get_or_insert_with(|| e.to_string());
                }
            }
            drop(permit);
        });
        // Reaps finished writes so the set holds only those in flight.
        while writes.try_join_next().is_some() {}
        i += 1;
    }
    while writes.join_next().await.is_some() {}
    let seconds = start.elapsed().as_secs_f64();
    writing.store(false, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut errors, mut first_error) = std::mem::take(&mut *failed.lock().expect("not poisoned"));
    for o in observers {
        let (h, unseen, e) = o.await?;
        hist.add(h).expect("same bounds");
        errors += unseen;
        if first_error.is_none() {
            first_error = e;
        }
    }
    Ok(Summary {
        api: args.api,
        workload: args.workload,
        concurrency: args.concurrency,
        ops: hist.len(),
        errors,
        seconds,
        ops_per_sec: acked.load(Ordering::Relaxed) as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        first_error,
    })
}

/// One lag observer: every [`LAG_POLL`], reads the keys of `keys` at its node and records each
/// one found (and stops waiting for it). Ends once `writing` is over and no key is left, or
/// [`LAG_GRACE`] after it ended; returns the lags, the keys never seen and the first failed
/// poll's error.
async fn observe(
    client: causeway_client::Client,
    keys: Watched,
    writing: Arc<AtomicBool>,
) -> (Histogram<u64>, u64, Option<String>) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut first_error = None;
    let mut stopped: Option<Instant> = None;
    loop {
        if stopped.is_none() && !writing.load(Ordering::Relaxed) {
            stopped = Some(Instant::now());
        }
        let asked: Vec<String> = keys
            .lock()
            .expect("not poisoned")
            .keys()
            .take(LAG_BATCH)
            .cloned()
            .collect();
        let over = stopped.is_some_and(|t| t.elapsed() >= LAG_GRACE);
        if over || (asked.is_empty() && stopped.is_some()) {
            break;
        }
        if !asked.is_empty() {
            let ops: Vec<serde_json::Value> = asked
                .iter()
                .map(|k| serde_json::json!({"op": "get", "key": k, "r": "1"}))
                .collect();
            let req = Request::new(causeway_client::Method::POST, "/v1/batch", Retry::Never)
                .json(&serde_json::json!({ "ops": ops }));
            let reply = client.send(&req).await.and_then(|r| r.success());
            match reply.and_then(|r| r.json()) {
                Ok(body) => {
                    let now = Instant::now();
                    let results = body["results"].as_array().cloned().unwrap_or_default();
                    let mut keys = keys.lock().expect("not poisoned");
                    for (k, r) in asked.iter().zip(results) {
                        if r["status"] == 200
                            && let Some(acked) = keys.remove(k)
                        {
                            let us = now.saturating_duration_since(acked).as_micros() as u64;
                            hist.saturating_record(us.max(1));
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("observer poll: {e}"));
                }
            }
        }
        tokio::time::sleep(LAG_POLL).await;
    }
    let unseen = keys.lock().expect("not poisoned").len() as u64;
    (hist, unseen, first_error)
}

/// One measured phase: `concurrency` closed loops until the deadline (or the key space, for
/// `Load`), latencies merged into one histogram.
async fn drive(args: &BenchArgs, clients: &[Arc<Target>]) -> anyhow::Result<Summary> {
    let duration = Duration::from_secs_f64(args.duration);
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress(args, done.clone());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for t in 0..args.concurrency {
        let client = clients[t % clients.len()].clone();
        let done = done.clone();
        let (workload, keys, read_ratio, c) = (
            args.workload,
            args.keys,
            args.read_ratio,
            args.concurrency as u64,
        );
        let mut rng = SmallRng::seed_from_u64(args.seed.wrapping_mul(1_000_003) + t as u64);
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut errors, mut first_error) = (0u64, None);
            let mut next_load = t as u64;
            let mut link = match client.api {
                Api::Redis => match resp::Conn::connect(&client.addr).await {
                    Ok(c) => Link::Resp(c),
                    Err(e) => return (hist, 1, Some(format!("{e:#}"))),
                },
                _ => Link::Http(Session::new(client.client.clone())),
            };
            loop {
                let call = match workload {
                    Workload::Load if next_load >= keys => break,
                    Workload::Load => {
                        next_load += c;
                        Call::Put(next_load - c)
                    }
                    _ if Instant::now() >= deadline => break,
                    Workload::Get => Call::Get(rng.random_range(0..keys)),
                    Workload::Put => Call::Put(rng.random_range(0..keys)),
                    Workload::Mixed if rng.random_bool(read_ratio) => {
                        Call::Get(rng.random_range(0..keys))
                    }
                    Workload::Mixed => Call::Put(rng.random_range(0..keys)),
                    Workload::Cas => Call::Cas(rng.random_range(0..keys)),
                    Workload::Lag => unreachable!("the lag workload runs in lag(), not here"),
                };
                let began = Instant::now();
                match client.call(&call, &mut link).await {
                    Ok(()) => {
                        let us = began.elapsed().as_micros() as u64;
                        hist.saturating_record(us.max(1));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (hist, errors, first_error)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        let (h, e, f) = task.await?;
        hist.add(h).expect("same bounds");
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let ops = hist.len();
    Ok(Summary {
        api: args.api,
        workload: args.workload,
        concurrency: args.concurrency,
        ops,
        errors,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        first_error,
    })
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress(args: &BenchArgs, done: Arc<AtomicU64>) -> indicatif::ProgressBar {
    let bar = if args.workload == Workload::Load {
        indicatif::ProgressBar::new(args.keys)
    } else {
        indicatif::ProgressBar::new((args.duration * 10.0) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    let (b, load) = (bar.clone(), args.workload == Workload::Load);
    tokio::spawn(async move {
        let mut last = 0;
        while !b.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = done.load(Ordering::Relaxed);
            if load {
                b.set_position(now);
            } else {
                b.inc(1);
            }
            b.set_message(format!("{} ops/s", (now - last) * 10));
            last = now;
        }
    });
    bar
}

/// Serves the HTTP ceiling: every request gets an empty 200 from a handler that does no work.
pub async fn serve_ceiling(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    axum::serve(listener, app).await?;
    Ok(())
}
