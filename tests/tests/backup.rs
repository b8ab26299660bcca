//! `causeway backup` and `causeway restore` against real clusters: a loaded three-shard cluster
//! (values, siblings, tombstones) is backed up while clients keep writing, the backup is
//! restored into a fresh three-node cluster, and every key's version set there — siblings,
//! tombstones and causal contexts — equals the backed-up one; restoring again changes nothing;
//! a damaged or truncated backup is refused with a clear error and restores nothing; the
//! endpoints need the admin role.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use causeway::core::VersionSet;
use causeway_e2e::{Cluster, add_token, client, client_with, run_cli, wait_token};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KEYS: usize = 3000;

fn batch(url: &str, ops: Vec<Value>) -> Value {
    let r = client()
        .post(format!("{url}/v1/batch"))
        .json(&json!({ "ops": ops }))
        .send()
        .expect("batch");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().expect("JSON");
    for res in v["results"].as_array().expect("results") {
        assert!(res["status"] == 204 || res["status"] == 200, "{res}");
    }
    v
}

fn put(key: &str, value: &str) -> Value {
    json!({"op": "put", "key": key, "value": B64.encode(value), "w": "all"})
}

/// Every key of a backup file with its version set, read by the format docs/operations.md
/// documents (magic, version, frames of bincode `(key, version set)` lists, end marker).
fn contents(path: &Path) -> BTreeMap<Vec<u8>, VersionSet> {
    let b = std::fs::read(path).expect("reading the backup");
    assert_eq!(&b[..16], b"CAUSEWAY-BACKUP\n");
    // Format 2: versions carry their expiry (TTL).
    assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 2);
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let (mut at, mut out) = (20, BTreeMap::new());
    loop {
        let (count, len) = (u32_at(at), u32_at(at + 4));
        at += 8;
        if count == 0 {
            break;
        }
        let (entries, used): (Vec<(Bytes, VersionSet)>, usize) =
            bincode::serde::decode_from_slice(&b[at..at + len], bincode::config::standard())
                .expect("a frame");
        assert_eq!((entries.len(), used), (count, len));
        for (k, s) in entries {
            assert!(out.insert(k.to_vec(), s).is_none(), "a key appears once");
        }
        at += len;
    }
    let total = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(total as usize, out.len());
    assert_eq!(b.len(), at + 8 + 32, "a SHA-256 digest ends the file");
    out
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = run_cli(args, b"");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_backup_taken_under_writes_restores_every_version_set() {
    let a = Cluster::start("backup-src", 3, 1, &[]);
    let url = a.url(0);
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        batch(
            &url,
            chunk
                .iter()
                .map(|i| put(&format!("k-{i:05}"), &format!("v{i}")))
                .collect(),
        );
    }
    // Siblings: two writes without a context, through different nodes.
    for (n, v) in [(1, "left"), (2, "right")] {
        batch(
            &a.url(n),
            (0..50).map(|i| put(&format!("sib-{i:02}"), v)).collect(),
        );
    }
    // Tombstones: deletes with the writes' context.
    let written = batch(
        &url,
        (0..50)
            .map(|i| put(&format!("del-{i:02}"), "doomed"))
            .collect(),
    );
    let ctx = written["context"].as_str().unwrap().to_owned();
    let dels = (0..50)
        .map(|i| json!({"op": "delete", "key": format!("del-{i:02}"), "context": ctx, "w": "all"}))
        .collect();
    batch(&url, dels);

    let dir = std::env::temp_dir().join(format!("causeway-backup-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.cwbk");
    let file_s = file.to_str().unwrap().to_owned();

    // Back up while a client keeps writing new keys and overwriting old ones.
    let stop = AtomicBool::new(false);
    let (ok, out) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let ops = (0..100)
                    .map(|i| put(&format!("live-{round:03}-{i:03}"), "during"))
                    .chain((0..20).map(|i| put(&format!("k-{:05}", round * 20 + i), "updated")))
                    .collect();
                batch(&a.url(round % 3), ops);
                round += 1;
            }
            round
        });
        let result = cli(&["backup", "--node", &url, "--out", &file_s, "--page", "200"]);
        stop.store(true, Ordering::Relaxed);
        let rounds = writer.join().expect("the writer");
        assert!(rounds > 0, "writes ran during the backup");
        result
    });
    assert!(ok, "backup failed: {out}");
    assert!(out.contains("backed up"), "{out}");
    assert!(!dir.join("cluster.cwbk.partial").exists());

    let backed = contents(&file);
    for i in 0..KEYS {
        let set = &backed[format!("k-{i:05}").as_bytes()];
        assert!(set.has_value(), "k-{i:05}");
    }
    for i in 0..50 {
        let sib = &backed[format!("sib-{i:02}").as_bytes()];
        assert_eq!(sib.versions().len(), 2, "sib-{i:02} keeps both siblings");
        let del = &backed[format!("del-{i:02}").as_bytes()];
        assert!(del.is_deleted(), "del-{i:02} is a tombstone in the backup");
    }

    // Restore into a fresh cluster of one shard with three replicas.
    let b = Cluster::start("backup-dst", 3, 3, &[]);
    let (ok, out) = cli(&["restore", &file_s, "--node", &b.url(0)]);
    assert!(ok, "restore failed: {out}");
    assert!(
        out.contains(&format!("restored {} keys", backed.len())),
        "{out}"
    );
    // Every replica holds the restored sets: back up through another node (its own replica).
    let again = dir.join("restored.cwbk");
    let again_s = again.to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = cli(&["backup", "--node", &b.url(2), "--out", &again_s]);
        assert!(ok, "backup of the restored cluster failed: {out}");
        let restored = contents(&again);
        if restored == backed {
            break;
        }
        if Instant::now() > deadline {
            let missing = backed.keys().filter(|k| !restored.contains_key(*k)).count();
            let differ = backed
                .iter()
                .filter(|(k, s)| restored.get(*k).is_some_and(|r| r != *s))
                .count();
            panic!("restored cluster differs: {missing} keys missing, {differ} differ");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = client()
        .get(format!("{}/v1/kv/sib-07", b.url(1)))
        .header("Accept", "application/json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 300, "siblings survive the restore");
    let r = client()
        .get(format!("{}/v1/kv/del-07", b.url(1)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Restoring the same backup again changes nothing.
    let (ok, out) = cli(&["restore", &file_s, "--node", &b.url(1)]);
    assert!(ok, "{out}");
    assert!(
        out.contains("; 0 changed"),
        "a second restore is a no-op: {out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_backups_are_refused_and_restore_nothing() {
    let a = Cluster::start("backup-damage", 1, 1, &[]);
    let url = a.url(0);
    batch(
        &url,
        (0..500).map(|i| put(&format!("d-{i:03}"), "x")).collect(),
    );
    let dir = std::env::temp_dir().join(format!("causeway-backup-damage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("good.cwbk");
    let (ok, out) = cli(&["backup", "--node", &url, "--out", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    let good = std::fs::read(&file).unwrap();

    let empty = Cluster::start("backup-damage-dst", 1, 1, &[]);
    let flipped = dir.join("flipped.cwbk");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x40;
    std::fs::write(&flipped, &bad).unwrap();
    let truncated = dir.join("truncated.cwbk");
    std::fs::write(&truncated, &good[..good.len() - 100]).unwrap();
    for (path, why) in [(&flipped, "checksum"), (&truncated, "truncated")] {
        let (ok, out) = cli(&["restore", path.to_str().unwrap(), "--node", &empty.url(0)]);
        assert!(!ok, "a damaged backup must fail: {out}");
        assert!(
            out.contains(why) && out.contains("was not restored"),
            "{out}"
        );
    }
    let listed: Value = client()
        .get(format!("{}/v1/kv", empty.url(0)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        listed["entries"],
        json!([]),
        "nothing of a damaged backup was applied"
    );

    // Both endpoints need the admin role; garbage frames are 400s.
    let writer = add_token("write");
    wait_token(&format!("{url}/v1/cluster?scope=local"), &writer);
    let w = client_with(Some(&writer));
    let r = w.get(format!("{url}/v1/admin/backup")).send().unwrap();
    assert_eq!(r.status(), 403);
    let r = w
        .post(format!("{url}/v1/admin/restore"))
        .body(vec![0u8; 8])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client()
        .post(format!("{url}/v1/admin/restore"))
        .body(vec![0xffu8; 64])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"], "bad request");
    // A frame claiming a million keys is refused (413) before they are decoded.
    let mut claim = vec![0xfc];
    claim.extend_from_slice(&1_000_000u32.to_le_bytes());
    claim.extend_from_slice(&[0; 64]);
    let r = client()
        .post(format!("{url}/v1/admin/restore"))
        .body(claim)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let body = r.json::<Value>().unwrap();
    assert_eq!(body["error"], "too large");
    let detail = body["detail"].to_string();
    assert!(detail.contains("at most 10000"), "{detail}");
    let _ = std::fs::remove_dir_all(&dir);
}
