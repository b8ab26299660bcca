//! `causeway status`: the cluster as one node sees it, summarised.

use super::conn::ClientOpts;
use causeway_client::{Client, Scope};
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// Print the node's raw JSON (`GET /v1/cluster`)
    #[arg(long)]
    pub json: bool,
}

/// `causeway status`: the summary, or the raw JSON with `--json`.
pub async fn run(client: &Client, a: StatusArgs) -> anyhow::Result<()> {
    let v = client.cluster(Scope::Cluster).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", status_summary(&v));
    }
    Ok(())
}

/// The human summary of a `GET /v1/cluster` reply: the view, members, shards, this node's
/// handoff state and anti-entropy counters, and whether the cluster has settled.
pub fn status_summary(v: &Value) -> String {
    let mut s = String::new();
    let me = v["node"].as_str().unwrap_or("?");
    if v["joining"] == true {
        s.push_str(&format!(
            "node {me}: in no view yet (waiting to be admitted to a cluster)\n"
        ));
        return s;
    }
    let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
    s.push_str(&format!(
        "node {me}: epoch {}, {} members, {} shard(s) x {} replicas, {} partitions\n",
        v["epoch"],
        count("members"),
        count("shards"),
        v["repl_factor"],
        v["partitions"]
    ));
    s.push_str("members:\n");
    for m in v["members"].as_array().into_iter().flatten() {
        let node = m["node"].as_str().unwrap_or("?");
        let state = if m["suspect"] == true {
            "SUSPECT"
        } else {
            "up"
        };
        let here = if node == me { "  (this node)" } else { "" };
        let load = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["node"] == node && n["load"].is_object())
            .map_or(String::new(), |n| {
                format!(
                    "  {} keys, {} requests",
                    n["live_keys"], n["load"]["requests"]
                )
            });
        s.push_str(&format!(
            "  {node}  shard {}  {state}{load}{here}\n",
            m["shard"]
        ));
    }
    s.push_str("shards:\n");
    for sh in v["shards"].as_array().into_iter().flatten() {
        let replicas: Vec<&str> = sh["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let parts = sh["partitions"].as_array().map_or_else(
            || sh["partition_count"].to_string(),
            |p| p.len().to_string(),
        );
        s.push_str(&format!(
            "  {}: {} ({parts} partitions)\n",
            sh["id"],
            replicas.join(", ")
        ));
    }
    let h = &v["handoff"];
    let len = |x: &Value| x.as_array().map_or(0, Vec::len);
    if v["settled"] == true {
        s.push_str("handoff: settled (nothing to hand off or receive)\n");
    } else {
        s.push_str(&format!(
            "handoff: {} partitions retained for new owners, {} streams pushing, {} partitions awaited\n",
            len(&h["retained"]),
            h["pushing"],
            len(&h["awaiting"])
        ));
    }
    let aae = &v["status"]["aae"];
    s.push_str(&format!(
        "anti-entropy: {} exchanges ({} in sync, {} failed), {} keys repaired, {} bytes\n",
        aae["exchanges"],
        aae["exchanges_in_sync"],
        aae["exchanges_failed"],
        aae["keys_repaired"],
        aae["bytes"]
    ));
    match v["cluster_settled"].as_bool() {
        Some(true) => s.push_str("cluster: settled\n"),
        Some(false) => {
            s.push_str("cluster: not settled\n");
            for n in v["nodes"].as_array().into_iter().flatten() {
                if n["reachable"] == false {
                    s.push_str(&format!("  {} unreachable: {}\n", n["node"], n["error"]));
                } else if n["settled"] == false {
                    s.push_str(&format!("  {} handing off\n", n["node"]));
                }
            }
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_summary_names_members_shards_handoff_and_aae() {
        let v = serde_json::json!({
            "node": "a:1", "joining": false, "epoch": 3, "repl_factor": 2, "partitions": 4,
            "members": [
                {"node": "a:1", "shard": 0, "suspect": false},
                {"node": "b:1", "shard": 0, "suspect": true},
            ],
            "shards": [{"id": 0, "replicas": ["a:1", "b:1"], "partitions": [0, 1, 2, 3]}],
            "handoff": {"retained": [2], "pushing": 1, "awaiting": []},
            "settled": false,
            "status": {"aae": {"exchanges": 5, "exchanges_in_sync": 4, "exchanges_failed": 1,
                               "keys_repaired": 7, "bytes": 900}},
            "cluster_settled": false,
            "nodes": [
                {"node": "a:1", "reachable": true, "live_keys": 12, "load": {"requests": 40}},
                {"node": "b:1", "reachable": false, "error": "refused"},
            ],
        });
        let s = status_summary(&v);
        for want in [
            "node a:1: epoch 3, 2 members, 1 shard(s) x 2 replicas, 4 partitions",
            "  a:1  shard 0  up  12 keys, 40 requests  (this node)",
            "  b:1  shard 0  SUSPECT",
            "  0: a:1, b:1 (4 partitions)",
            "handoff: 1 partitions retained for new owners, 1 streams pushing, 0 partitions awaited",
            "anti-entropy: 5 exchanges (4 in sync, 1 failed), 7 keys repaired, 900 bytes",
            "cluster: not settled",
            "\"b:1\" unreachable: \"refused\"",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }
}
