//! Crashes of real processes: acknowledged writes survive `kill -9` with `--sync always`, and a
//! restarted node catches up through replication retry.

use causeway_e2e::{Cluster, client};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut c = Cluster::start("kill9", 3, 3, &["--sync", "always"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let url = c.url(t % 3);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let http = client();
                let mut acked = BTreeMap::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{t}-{i}");
                    let value = format!("value {t} {i}");
                    let r = http
                        .put(format!("{url}/v1/kv/{key}"))
                        .timeout(Duration::from_secs(2))
                        .body(value.clone())
                        .send();
                    if r.is_ok_and(|r| r.status() == 204) {
                        acked.insert(key, value);
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        c.kill(i);
    }
    stop.store(true, Ordering::Relaxed);
    let acked: BTreeMap<String, String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    assert!(
        acked.len() > 50,
        "the load ran: {} acknowledged writes",
        acked.len()
    );
    for i in 0..3 {
        c.restart(i);
    }
    let http = client();
    let mut missing = Vec::new();
    // Peers may still be starting: a 503 (not a wrong answer) is retried within a bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (n, (key, value)) in acked.iter().enumerate() {
        let read = || {
            http.get(format!("{}/v1/kv/{key}?r=all", c.url(n % 3)))
                .send()
                .expect("read after restart")
        };
        let mut r = read();
        while r.status() == 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            r = read();
        }
        if r.status() != 200 || r.text().expect("body") != *value {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost after kill -9: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!("{} acknowledged writes all survived kill -9", acked.len());
}

#[test]
fn restarted_node_catches_up_by_replication_retry() {
    let mut c = Cluster::start("catchup", 3, 3, &[]);
    let http = client();
    c.kill(2);
    assert!(!c.is_running(2));
    let keys: Vec<String> = (0..50).map(|i| format!("late-{i}")).collect();
    for k in &keys {
        let r = http
            .put(format!("{}/v1/kv/{k}?w=2", c.url(0)))
            .body(k.clone())
            .send()
            .expect("put while a replica is down");
        assert_eq!(r.status(), 204, "w=2 succeeds with two replicas up");
    }
    c.restart(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending: Vec<&String> = keys.iter().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|k| {
            let r = http.get(format!("{}/v1/kv/{k}", c.url(2))).send();
            !r.is_ok_and(|r| r.status() == 200 && r.text().is_ok_and(|t| t == **k))
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        pending.is_empty(),
        "the restarted replica still lacks {} keys, e.g. {:?}",
        pending.len(),
        pending.first()
    );
}
