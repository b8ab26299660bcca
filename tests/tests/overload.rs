//! Overload of real processes: large values replicate without amplification, so a node's memory
//! stays bounded by configuration, also while a replica is paused (SIGSTOP), and every
//! acknowledged write reads back from all replicas afterwards.

use causeway_e2e::{Cluster, client, incompressible};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 8 << 20;
const WRITERS: usize = 25;
/// The documented bound on one node's peak RSS under this load (docs/limits.md).
const RSS_BOUND: u64 = 1536 << 20;

/// 25 concurrent 8 MiB PUTs through the nodes in `via`; returns the acknowledged writers.
fn put_all(c: &Cluster, via: &[usize], w: &str) -> Vec<usize> {
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let url = format!("{}/v1/kv/big-{i}?w={w}", c.url(via[i % via.len()]));
            std::thread::spawn(move || {
                let r = client()
                    .put(url)
                    .timeout(Duration::from_secs(30))
                    .body(incompressible(i, VALUE_BYTES))
                    .send();
                match r {
                    Ok(r) if r.status() == 204 => Some(i),
                    Ok(r) => {
                        eprintln!("writer {i}: {}", r.status());
                        None
                    }
                    Err(e) => {
                        eprintln!("writer {i}: {e}");
                        None
                    }
                }
            })
        })
        .collect();
    writers
        .into_iter()
        .filter_map(|w| w.join().expect("writer thread"))
        .collect()
}

/// Waits (at most 30 s) until every acknowledged key reads back whole with `r=all`.
fn read_back_all(c: &Cluster, acked: &[usize]) {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    for &i in acked {
        let want = incompressible(i, VALUE_BYTES);
        loop {
            let r = http
                .get(format!("{}/v1/kv/big-{i}?r=all", c.url(i % 3)))
                .timeout(Duration::from_secs(10))
                .send();
            let last = match r {
                Ok(r) if r.status() == 200 => {
                    let body = r.bytes().expect("reading the value");
                    if body.as_ref() == want.as_slice() {
                        break;
                    }
                    format!("a {}-byte body that differs", body.len())
                }
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "big-{i} did not read back with r=all within 30 s: {last}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Kills (SIGKILL) any node whose peak RSS passes the bound, so an unbounded node fails the
/// test instead of exhausting the machine. The flag tells whether it had to.
struct Watchdog {
    stop: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn new(c: &Cluster) -> Watchdog {
        let pids: Vec<u32> = (0..3).map(|n| c.pid(n).expect("node runs")).collect();
        let (stop, fired) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, f) = (stop.clone(), fired.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for pid in &pids {
                    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|st| {
                            st.lines()
                                .find_map(|l| l.strip_prefix("VmHWM:"))
                                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        })
                        .unwrap_or(0u64)
                        * 1024;
                    if hwm > RSS_BOUND {
                        eprintln!("watchdog: pid {pid} passed {} MiB", hwm >> 20);
                        f.store(true, Ordering::Relaxed);
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watchdog { stop, fired }
    }

    fn assert_quiet(&self) {
        assert!(
            !self.fired.load(Ordering::Relaxed),
            "a node passed {} MiB of RSS and was killed",
            RSS_BOUND >> 20
        );
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn assert_rss_bounded(c: &Cluster, label: &str) {
    for n in 0..3 {
        let peak = c.peak_rss(n);
        eprintln!("{label}: node {n} peak RSS {} MiB", peak >> 20);
        assert!(
            peak <= RSS_BOUND,
            "{label}: node {n} peaked at {} MiB (bound {} MiB)",
            peak >> 20,
            RSS_BOUND >> 20
        );
    }
}

#[test]
fn concurrent_big_puts_stay_bounded() {
    let c = Cluster::start("big-puts", 3, 3, &[]);
    let dog = Watchdog::new(&c);
    let acked = put_all(&c, &[0, 1, 2], "1");
    assert!(
        acked.len() >= WRITERS - 2,
        "most big writes were acknowledged: {acked:?}"
    );
    dog.assert_quiet();
    read_back_all(&c, &acked);
    dog.assert_quiet();
    assert_rss_bounded(&c, "25 x 8 MiB");
}

#[test]
fn big_puts_with_a_paused_replica_stay_bounded() {
    let c = Cluster::start("big-puts-paused", 3, 3, &[]);
    let dog = Watchdog::new(&c);
    c.signal(2, "STOP");
    let paused = Instant::now();
    let acked = put_all(&c, &[0, 1], "1");
    // The coordinators hold what the paused replica has not taken for the rest of the pause.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(paused.elapsed()));
    c.signal(2, "CONT");
    assert!(
        acked.len() >= WRITERS - 2,
        "most big writes were acknowledged with a replica paused: {acked:?}"
    );
    dog.assert_quiet();
    read_back_all(&c, &acked);
    dog.assert_quiet();
    assert_rss_bounded(&c, "25 x 8 MiB, one replica paused 20 s");
}

#[test]
fn a_listing_over_large_values_pages_by_bytes() {
    // Three shards of one replica each: the page merges parts that stop early at different keys.
    let c = Cluster::start("list-bytes", 3, 1, &[]);
    let http = client();
    let keys: Vec<String> = (0..40).map(|i| format!("mb-{i:02}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let r = http
            .put(format!("{}/v1/kv/{k}", c.url(i % 3)))
            .body(vec![i as u8; 1 << 20])
            .send()
            .expect("put");
        assert_eq!(r.status(), 204, "{k}");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/v1/kv?limit=1000", c.url(0));
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let r = http.get(url).send().expect("list");
        assert_eq!(r.status(), 200, "a page over 1 MiB values is served");
        let body: serde_json::Value = r.json().expect("JSON page");
        let entries = body["entries"].as_array().expect("entries");
        assert!(
            entries.len() <= 17,
            "a page holds at most 16 MiB of values (+1): {} entries",
            entries.len()
        );
        seen.extend(
            entries
                .iter()
                .map(|e| e["key"].as_str().expect("key").to_owned()),
        );
        pages += 1;
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
        assert!(pages < 20, "the listing ends");
    }
    eprintln!("listing 40 x 1 MiB: {pages} pages");
    assert!(pages >= 3, "the byte cap split the listing: {pages} pages");
    assert_eq!(seen, keys, "every key once, in order");
}
