//! The `causeway` client commands (`get`, `put`, `delete`, `list`, `status`) and `cluster`, which
//! runs a local N-node cluster on loopback.
//!
//! Client commands keep the causal context in a small session file (the merge of every token
//! received, see [`crate::core::token::merge`]) and send it with each request, so consecutive
//! commands are causally consistent even when they go to different nodes.

use super::config::DEFAULT_MAX_REPL;
use super::http::{CONTEXT_HEADER, SERVED_BY_HEADER, encode_component};
use crate::core::token;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where client commands send requests and keep their session.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Base URL of any node
    #[arg(
        long,
        global = true,
        env = "CAUSEWAY_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub node: String,
    /// File holding this session's causal context
    #[arg(
        long,
        global = true,
        env = "CAUSEWAY_SESSION",
        default_value = ".causeway-session"
    )]
    pub session: PathBuf,
}

/// A client command.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Print a key's value (one line per sibling when there are several)
    Get {
        key: String,
        /// Replicas to read from: 1, 2, …, quorum or all
        #[arg(long)]
        r: Option<String>,
    },
    /// Write a value
    Put {
        key: String,
        value: String,
        /// Replicas that must acknowledge: 1, 2, …, quorum or all
        #[arg(long)]
        w: Option<String>,
    },
    /// Delete a key
    Delete {
        key: String,
        #[arg(long)]
        w: Option<String>,
    },
    /// List keys in key order
    List {
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show the node's view of the cluster
    Status,
}

fn load_session(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Merges `received` into the session file.
fn save_session(path: &Path, received: &str) -> anyhow::Result<()> {
    let merged = token::merge([load_session(path).as_str(), received])
        .context("the node returned a malformed causal context")?;
    std::fs::write(path, merged + "\n")
        .with_context(|| format!("writing session file {}", path.display()))
}

fn key_url(node: &str, key: &str, param: Option<(&str, &Option<String>)>) -> String {
    let mut url = format!(
        "{}/v1/kv/{}",
        node.trim_end_matches('/'),
        encode_component(key.as_bytes())
    );
    if let Some((name, Some(v))) = param {
        url.push_str(&format!("?{name}={}", encode_component(v.as_bytes())));
    }
    url
}

/// Runs one client command; prints its result to stdout.
pub async fn run(opts: &ClientOpts, cmd: ClientCommand) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let ctx = load_session(&opts.session);
    let node = opts.node.trim_end_matches('/');
    let req = match &cmd {
        ClientCommand::Get { key, r } => client
            .get(key_url(node, key, Some(("r", r))))
            .header("accept", "application/json"),
        ClientCommand::Put { key, value, w } => client
            .put(key_url(node, key, Some(("w", w))))
            .body(value.clone()),
        ClientCommand::Delete { key, w } => client.delete(key_url(node, key, Some(("w", w)))),
        ClientCommand::List {
            start,
            end,
            after,
            limit,
        } => {
            let mut q: Vec<String> = Vec::new();
            for (n, v) in [("start", start), ("end", end), ("after", after)] {
                if let Some(v) = v {
                    q.push(format!("{n}={}", encode_component(v.as_bytes())));
                }
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            client.get(format!("{node}/v1/kv?{}", q.join("&")))
        }
        ClientCommand::Status => client.get(format!("{node}/v1/cluster")),
    };
    let resp = req
        .header(CONTEXT_HEADER, ctx)
        .send()
        .await
        .with_context(|| format!("no answer from {node}"))?;
    let status = resp.status();
    if let Some(t) = resp
        .headers()
        .get(CONTEXT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        save_session(&opts.session, t)?;
    }
    let served_by = resp
        .headers()
        .get(SERVED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await?;
    if let Some(by) = served_by {
        tracing::debug!("served by {by}");
    }
    match cmd {
        ClientCommand::Get { key, .. } => {
            if status != StatusCode::OK
                && status != StatusCode::MULTIPLE_CHOICES
                && status != StatusCode::NOT_FOUND
            {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let values = v["values"].as_array().cloned().unwrap_or_default();
            if values.is_empty() {
                bail!("{key}: not found");
            }
            if values.len() > 1 {
                eprintln!(
                    "{key}: {} concurrent values (siblings); a put now replaces them all",
                    values.len()
                );
            }
            for value in values {
                let raw = B64.decode(value.as_str().unwrap_or_default())?;
                println!("{}", String::from_utf8_lossy(&raw));
            }
        }
        ClientCommand::Put { .. } | ClientCommand::Delete { .. } => {
            if status != StatusCode::NO_CONTENT {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            println!("ok");
        }
        ClientCommand::List { .. } | ClientCommand::Status => {
            if !status.is_success() {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

/// Options of `causeway cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of nodes
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Replicas per shard [default: min(3, nodes)]
    #[arg(long)]
    pub repl: Option<usize>,
    /// Directory holding one data directory per node
    #[arg(long, default_value = "causeway-data")]
    pub data: PathBuf,
    /// Port of the first node; the others follow
    #[arg(long, default_value_t = 8080)]
    pub base_port: u16,
    /// Durability of acknowledged writes: always, batch or never
    #[arg(long, default_value = "batch")]
    pub sync: String,
}

/// Starts the nodes as child processes, waits until they answer, prints how to use them, and
/// stops them (SIGTERM, then kill) on Ctrl-C or SIGTERM.
pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let repl = args.repl.unwrap_or(args.nodes.min(DEFAULT_MAX_REPL));
    let addrs: Vec<String> = (0..args.nodes)
        .map(|i| format!("127.0.0.1:{}", usize::from(args.base_port) + i))
        .collect();
    let exe = std::env::current_exe().context("locating the causeway binary")?;
    let mut children = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let data = args.data.join(format!("node{i}"));
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("serve")
            .args(["--listen", addr, "--view", &addrs.join(",")])
            .args(["--repl-factor", &repl.to_string(), "--sync", &args.sync])
            .arg("--data-dir")
            .arg(&data)
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("starting node {addr}"))?,
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for addr in &addrs {
        let mut up = false;
        for _ in 0..100 {
            if client
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            bail!("node {addr} did not come up; see its log above");
        }
    }
    let shards = (args.nodes / repl).max(1);
    println!(
        "causeway cluster: {} nodes, {shards} shard(s) x {repl} replicas, data in {}",
        args.nodes,
        args.data.display()
    );
    for a in &addrs {
        println!("  http://{a}");
    }
    let last = addrs.last().unwrap_or(&addrs[0]);
    println!("\nTry it (write through one node, read through another):");
    println!(
        "  curl -i -X PUT --data-binary 'hello' http://{}/v1/kv/greeting",
        addrs[0]
    );
    println!("  curl -i http://{last}/v1/kv/greeting");
    println!("  curl -s http://{last}/v1/cluster");
    println!("\nPress Ctrl-C to stop all nodes.");
    super::shutdown_signal().await;
    println!("stopping…");
    for child in &children {
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for mut child in children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
    Ok(())
}
