//! The web UI as a person sees it: headless Chromium loads `/ui/` from a running cluster, runs
//! its script, and the rendered page must show the nodes, the shards and the keys (siblings
//! flagged). Chromium comes from Debian's `chromium` package, which `ci/test` installs.

use causeway_e2e::{Cluster, client};
use std::path::Path;
use std::process::Command;

fn chromium() -> String {
    let path = std::env::var("CAUSEWAY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "the UI test needs Chromium at {path} (apt-get install chromium; ci/test does it)"
    );
    path
}

/// The DOM of `url` after its scripts ran.
fn rendered(url: &str, profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ui_shows_nodes_shards_and_keys() {
    let c = Cluster::start("ui", 4, 2, &[]);
    let http = client();
    for key in ["apple", "banana"] {
        let r = http
            .put(format!("{}/v1/kv/{key}", c.url(0)))
            .body("fruit")
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    for (node, value) in [(0, "one"), (1, "two")] {
        let r = http
            .put(format!("{}/v1/kv/clash", c.url(node)))
            .body(value)
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let page = http.get(format!("{}/ui", c.url(2))).send().unwrap();
    assert_eq!(page.status(), 200, "/ui redirects to the page");
    let profile = std::env::temp_dir().join(format!("causeway-ui-{}", std::process::id()));
    // Without a token the page loads but its API calls are refused: it asks for one.
    let anonymous = rendered(&format!("{}/ui/", c.url(2)), &profile);
    assert!(
        anonymous.contains("needs a token") && !anonymous.contains("apple"),
        "the page asks for a token and shows no data"
    );
    // The token passed once in the fragment is kept in the tab's sessionStorage.
    let token = &causeway_e2e::credentials().admin_token;
    let dom = rendered(&format!("{}/ui/#token={token}", c.url(2)), &profile);
    let _ = std::fs::remove_dir_all(&profile);
    for a in &c.addrs {
        assert!(dom.contains(a.as_str()), "the nodes table lists {a}");
    }
    assert!(dom.contains(&format!("{} (this node)", c.addrs[2])));
    assert!(
        dom.contains("epoch 1, 64 partitions, replication factor 2"),
        "the shard panel rendered"
    );
    assert!(
        dom.contains(">settled<"),
        "the handoff column shows each node's state"
    );
    for key in ["apple", "banana", "clash (2 siblings)"] {
        assert!(dom.contains(key), "the key browser lists {key}");
    }
    // Liveness is rendered per node ("up" or "unreachable"); which one depends on timing.
    assert!(dom.contains(">up<"), "the liveness column rendered");
}
