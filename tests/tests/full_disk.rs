//! A node whose disk fills: writes are refused with 507, the node stays up and serves reads,
//! every acknowledged write reads back, and writes succeed again once space frees. Needs root
//! to mount a small tmpfs; skips (loudly) when it cannot.

use causeway_e2e::{Cluster, Opts, client, incompressible};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 256 << 10;

struct Tmpfs<'a>(&'a Path);

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_with_507_and_recovers() {
    let mnt = std::env::temp_dir().join(format!("causeway-e2e-tmpfs-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED a_full_disk_refuses_writes_with_507_and_recovers: cannot mount a tmpfs (needs root)"
        );
        return;
    }
    let _unmount = Tmpfs(&mnt);
    let opts = Opts {
        data_root: Some(mnt.join("data")),
        ..Opts::default()
    };
    let mut c = Cluster::start_with("full-disk", 1, 1, &["--min-free-bytes", "4194304"], opts);
    // A filler beside the data directory leaves the node about 12 MiB.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0u8; 18 << 20]).expect("writing the filler");
    let http = client();
    let url = c.url(0);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let r = http
            .put(format!("{url}/v1/kv/fill-{i}"))
            .body(incompressible(i, VALUE_BYTES))
            .send()
            .expect("the node answers every write");
        match r.status().as_u16() {
            204 => acked.push(i),
            507 => {
                let body: serde_json::Value = r.json().expect("a JSON error");
                assert_eq!(body["error"], "insufficient storage", "{body}");
                refused = Some(i);
                break;
            }
            s => panic!("write {i}: unexpected status {s}"),
        }
    }
    let refused = refused.expect("the writes hit 507 before 200 x 256 KiB on a 32 MiB disk");
    eprintln!(
        "full disk: {} writes acknowledged, 507 at write {refused}",
        acked.len()
    );
    assert!(!acked.is_empty(), "some writes fit");
    assert!(c.is_running(0), "the node stays up on a full disk");
    for &i in &acked {
        let r = http
            .get(format!("{url}/v1/kv/fill-{i}"))
            .send()
            .expect("reads are served on a full disk");
        assert_eq!(r.status(), 200, "fill-{i}");
        assert_eq!(
            r.bytes().expect("body").as_ref(),
            incompressible(i, VALUE_BYTES).as_slice(),
            "fill-{i}"
        );
    }
    std::fs::remove_file(&filler).expect("removing the filler");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http
            .put(format!("{url}/v1/kv/after"))
            .body("space again")
            .send()
            .expect("the node answers");
        if r.status() == 204 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes succeed once space frees: {}",
            r.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
