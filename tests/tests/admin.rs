//! `causeway admin` against a real 3-node cluster: status (text and JSON), adding and removing a
//! member with the wait until the cluster settles, anti-entropy status and pull, handoff
//! status, and clear errors for a bad address, a node that does not answer and a missing token.

use causeway_e2e::{Cluster, binary, run_cli};
use serde_json::Value;
use std::process::{Command, Output};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "causeway failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "causeway should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn admin(node: &str, args: &[&str]) -> Output {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--node", node]);
    run_cli(&all, b"")
}

fn members(node: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&ok(&admin(node, &["status", "--json"]))).expect("json");
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["node"].as_str().expect("node").to_owned())
        .collect()
}

#[test]
fn admin_commands_against_a_three_node_cluster() {
    let mut c = Cluster::start("admin", 3, 3, &[]);
    let node = c.addrs[0].clone();

    // Status: members, shards, handoff and anti-entropy per member, suspects.
    let text = ok(&admin(&node, &["status"]));
    assert!(
        text.contains("cluster: epoch") && text.contains("3 members, 1 shard(s) x 3 replicas"),
        "{text}"
    );
    for a in &c.addrs {
        assert!(text.contains(&format!("  {a}  shard 0  up")), "{text}");
    }
    assert!(
        text.contains("aae: ") && text.contains("suspected: none"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&ok(&admin(&node, &["status", "--json"]))).expect("json");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["members"][0]["reachable"], true);
    assert!(v["members"][0]["aae"]["partitions_owned"].as_u64() > Some(0));

    // Anti-entropy: status per member, and one exchange on demand.
    let aae = ok(&admin(&node, &["aae", "status"]));
    assert_eq!(aae.matches(" exchanges (").count(), 3, "{aae}");
    let pulled = ok(&admin(&node, &["aae", "pull", "--peer", &c.addrs[1]]));
    assert!(
        pulled.contains(&format!("exchanged with {}", c.addrs[1])),
        "{pulled}"
    );
    let pull_json: Value = serde_json::from_str(&ok(&admin(
        &node,
        &["aae", "pull", "--peer", &c.addrs[2], "--json"],
    )))
    .expect("json");
    assert!(pull_json["keys_repaired"].is_u64(), "{pull_json}");

    // Handoff status.
    let h: Value =
        serde_json::from_str(&ok(&admin(&node, &["handoff", "status", "--json"]))).expect("json");
    assert_eq!(h["members"].as_array().map(Vec::len), Some(3));
    assert!(ok(&admin(&node, &["handoff", "status"])).contains("handoff settled"));

    // Some data, so the view changes below hand something off.
    for i in 0..50 {
        ok(&run_cli(
            &[
                "put",
                &format!("k{i}"),
                "v",
                "--node",
                &node,
                "--session",
                "/dev/null",
            ],
            b"",
        ));
    }

    // Add a member: it waits until the cluster has settled.
    let fourth = c.add_node(&["--await-join"]);
    let new = c.addrs[fourth].clone();
    let out = admin(&node, &["member", "add", &new]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{new} admitted")) && err.contains("cluster settled"),
        "{err}"
    );
    assert!(members(&node).contains(&new));

    // Remove it again.
    let out = admin(&node, &["member", "remove", &new]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster settled"));
    assert!(!members(&node).contains(&new));
    let v: Value = serde_json::from_str(&ok(&admin(&node, &["status", "--json"]))).expect("json");
    assert_eq!(v["settled"], true);

    // Clear errors: an address that is not a member, one that is not an address, a node that
    // does not answer, and no token.
    let e = failed(&admin(&node, &["member", "remove", "127.0.0.1:1"]));
    assert!(e.contains("127.0.0.1:1 is not a member"), "{e}");
    let e = failed(&admin(&node, &["member", "add", "not an address"]));
    assert!(e.contains("400"), "{e}");
    let e = failed(&admin("127.0.0.1:1", &["status"]));
    assert!(e.contains("no node could serve the request"), "{e}");
    let anonymous = Command::new(binary())
        .args(["admin", "status", "--node", &node])
        .env_remove("CAUSEWAY_TOKEN")
        .env_remove("CAUSEWAY_NODE")
        .output()
        .expect("causeway");
    let e = failed(&anonymous);
    assert!(e.contains("unauthorized"), "{e}");
}
