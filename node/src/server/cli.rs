//! The `causeway` client commands: `get`, `put`, `delete`, `list`, `status`, and `backup` and
//! `restore` ([`super::backup_cli`]).
//!
//! Every client command flattens [`ClientOpts`] (where to send requests, where the session
//! lives), so those options exist on the client commands only; an option every client needs is
//! added there once. Client commands keep the causal context in a small session file (the merge
//! of every token received, see [`crate::core::token::merge`]) and send it with each request, so
//! consecutive commands are causally consistent even when they go to different nodes.

use super::http::{CONTEXT_HEADER, SERVED_BY_HEADER, encode_component};
use crate::core::token;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where client commands send requests and keep their session.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Any node: a base URL or host:port (http:// is assumed)
    #[arg(long, env = "CAUSEWAY_NODE", default_value = "http://127.0.0.1:8080")]
    pub node: String,
    /// File holding this session's causal context
    #[arg(long, env = "CAUSEWAY_SESSION", default_value = ".causeway-session")]
    pub session: PathBuf,
    /// Bearer token for nodes that require one (`causeway tokens add`; `causeway cluster` writes causeway-data/admin.token)
    #[arg(long, env = "CAUSEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to trust for https:// nodes (e.g. causeway-data/tls/ca.pem)
    #[arg(long, env = "CAUSEWAY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl ClientOpts {
    /// An HTTP client builder that sends the token and trusts `--ca-cert`.
    pub fn http_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        http_builder(self.token.as_deref(), self.ca_cert.as_deref())
    }
}

/// An HTTP client builder that sends `token` as a bearer token and trusts the CA in `ca`.
pub fn http_builder(
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    {
        let mut b = reqwest::Client::builder();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            v.set_sensitive(true);
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::AUTHORIZATION, v);
            b = b.default_headers(h);
        }
        if let Some(ca) = ca {
            b = b.use_preconfigured_tls(super::tls::client_trusting(ca)?);
        }
        Ok(b)
    }
}

/// The base URL of `node` without a trailing slash; `host:port` means `http://host:port`.
pub fn base_url(node: &str) -> anyhow::Result<String> {
    let node = node.trim().trim_end_matches('/');
    let url = if node.contains("://") {
        node.to_owned()
    } else {
        format!("http://{node}")
    };
    let parsed = reqwest::Url::parse(&url).with_context(|| format!("--node {node:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("--node {node:?} must be host:port or an http(s):// URL");
    }
    Ok(url)
}

/// A client command.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Print a key's value; siblings (concurrent values) are counted and separated
    Get(GetArgs),
    /// Write a value
    Put(PutArgs),
    /// Delete a key
    Delete(DeleteArgs),
    /// List keys in key order
    List(ListArgs),
    /// Summarise the cluster as the node sees it
    Status(StatusArgs),
    /// Write every key's version set (siblings, tombstones, contexts) to a checksummed file while the cluster serves (admin role)
    Backup(super::backup_cli::BackupArgs),
    /// Verify a backup file, then merge its version sets into a cluster (admin role)
    Restore(super::backup_cli::RestoreArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// Replicas to read from: 1, 2, …, quorum or all
    #[arg(long)]
    pub r: Option<String>,
    /// Print the node's JSON reply (values in base64, deleted flag, context)
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// The value; `-` reads it from standard input
    pub value: String,
    /// Replicas that must acknowledge: 1, 2, …, quorum or all
    #[arg(long)]
    pub w: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// Replicas that must acknowledge: 1, 2, …, quorum or all
    #[arg(long)]
    pub w: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// First key of the range
    #[arg(long)]
    pub start: Option<String>,
    /// Key after the range (exclusive)
    #[arg(long)]
    pub end: Option<String>,
    /// Only keys that start with this
    #[arg(long)]
    pub prefix: Option<String>,
    /// The cursor a previous page printed: list from there on
    #[arg(long)]
    pub after: Option<String>,
    /// Keys per page (1..=1000)
    #[arg(long)]
    pub limit: Option<u32>,
    /// Walk every page to the end of the range
    #[arg(long)]
    pub all: bool,
    /// Print each page as the node's JSON, one line per page
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// Print the node's raw JSON (`GET /v1/cluster`)
    #[arg(long)]
    pub json: bool,
}

impl ClientCommand {
    fn conn(&self) -> &ClientOpts {
        match self {
            ClientCommand::Get(a) => &a.conn,
            ClientCommand::Put(a) => &a.conn,
            ClientCommand::Delete(a) => &a.conn,
            ClientCommand::List(a) => &a.conn,
            ClientCommand::Status(a) => &a.conn,
            ClientCommand::Backup(a) => &a.conn,
            ClientCommand::Restore(a) => &a.conn,
        }
    }
}

/// A node's reply, read in full.
struct Reply {
    status: StatusCode,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the node's reply is not JSON")
    }

    fn fail(&self) -> anyhow::Error {
        anyhow::anyhow!("{}: {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

/// The connection to one node, with the session's causal context.
struct Client {
    http: reqwest::Client,
    base: String,
    session: PathBuf,
}

impl Client {
    fn new(opts: &ClientOpts) -> anyhow::Result<Client> {
        Ok(Client {
            http: opts
                .http_builder()?
                .timeout(Duration::from_secs(30))
                .build()?,
            base: base_url(&opts.node)?,
            session: opts.session.clone(),
        })
    }

    fn key_url(&self, key: &str, param: (&str, &Option<String>)) -> String {
        let mut url = format!("{}/v1/kv/{}", self.base, encode_component(key.as_bytes()));
        if let (name, Some(v)) = param {
            url.push_str(&format!("?{name}={}", encode_component(v.as_bytes())));
        }
        url
    }

    /// Sends `req` with the session's context and merges the context of the reply into it.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
        let resp = req
            .header(CONTEXT_HEADER, load_session(&self.session))
            .send()
            .await
            .with_context(|| format!("no answer from {}", self.base))?;
        let status = resp.status();
        if let Some(t) = resp
            .headers()
            .get(CONTEXT_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            save_session(&self.session, t)?;
        }
        if let Some(by) = resp
            .headers()
            .get(SERVED_BY_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            tracing::debug!("served by {by}");
        }
        Ok(Reply {
            status,
            body: resp.bytes().await?,
        })
    }
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

/// Runs one client command; prints its result to stdout.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    let client = Client::new(cmd.conn())?;
    match cmd {
        ClientCommand::Get(a) => get(&client, a).await,
        ClientCommand::Put(a) => {
            let value = if a.value == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading the value from standard input")?;
                buf
            } else {
                a.value.into_bytes()
            };
            let req = client
                .http
                .put(client.key_url(&a.key, ("w", &a.w)))
                .body(value);
            written(client.send(req).await?)
        }
        ClientCommand::Delete(a) => {
            let req = client.http.delete(client.key_url(&a.key, ("w", &a.w)));
            written(client.send(req).await?)
        }
        ClientCommand::List(a) => list(&client, a).await,
        ClientCommand::Backup(a) => super::backup_cli::backup(a).await.map(drop),
        ClientCommand::Restore(a) => super::backup_cli::restore(a).await.map(drop),
        ClientCommand::Status(a) => {
            let reply = client
                .send(client.http.get(format!("{}/v1/cluster", client.base)))
                .await?;
            if !reply.status.is_success() {
                return Err(reply.fail());
            }
            let v = reply.json()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", status_summary(&v));
            }
            Ok(())
        }
    }
}

fn written(reply: Reply) -> anyhow::Result<()> {
    if reply.status != StatusCode::NO_CONTENT {
        return Err(reply.fail());
    }
    println!("ok");
    Ok(())
}

async fn get(client: &Client, a: GetArgs) -> anyhow::Result<()> {
    let req = client
        .http
        .get(client.key_url(&a.key, ("r", &a.r)))
        .header("accept", "application/json");
    let reply = client.send(req).await?;
    if !matches!(
        reply.status,
        StatusCode::OK | StatusCode::MULTIPLE_CHOICES | StatusCode::NOT_FOUND
    ) {
        return Err(reply.fail());
    }
    let v = reply.json()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let values = v["values"]
        .as_array()
        .map(|vals| {
            vals.iter()
                .map(|b| B64.decode(b.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .context("the node sent a value that is not base64")?
        .unwrap_or_default();
    if values.is_empty() {
        let what = if v["deleted"] == true {
            "deleted"
        } else {
            "not found"
        };
        bail!("{}: {what}", a.key);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&render_values(&values))?;
    out.flush()?;
    Ok(())
}

/// A value and a newline; for siblings, a count line and a separator line before each one.
fn render_values(values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    if let [one] = values {
        out.extend_from_slice(one);
        out.push(b'\n');
        return out;
    }
    let n = values.len();
    out.extend_from_slice(
        format!("{n} siblings (concurrent values; a put now replaces them all)\n").as_bytes(),
    );
    for (i, v) in values.iter().enumerate() {
        out.extend_from_slice(format!("--- sibling {} of {n}\n", i + 1).as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

async fn list(client: &Client, a: ListArgs) -> anyhow::Result<()> {
    let mut base = format!("{}/v1/kv?", client.base);
    for (n, v) in [("start", &a.start), ("end", &a.end), ("prefix", &a.prefix)] {
        if let Some(v) = v {
            base.push_str(&format!("{n}={}&", encode_component(v.as_bytes())));
        }
    }
    if let Some(l) = a.limit {
        base.push_str(&format!("limit={l}&"));
    }
    let mut after = a.after.clone();
    let mut out = std::io::stdout().lock();
    loop {
        let mut url = base.clone();
        if let Some(c) = &after {
            // The cursor is URL-safe as the node issued it.
            url.push_str(&format!("after={c}"));
        }
        let reply = client.send(client.http.get(url)).await?;
        if !reply.status.is_success() {
            return Err(reply.fail());
        }
        let page = reply.json()?;
        if a.json {
            writeln!(out, "{page}")?;
        } else {
            for e in page["entries"].as_array().into_iter().flatten() {
                writeln!(out, "{}", printable_key(e))?;
            }
        }
        let next = page["next"].as_str().map(str::to_owned);
        match next {
            None => return Ok(out.flush()?),
            Some(n) if a.all => {
                if after.as_deref() == Some(n.as_str()) {
                    bail!("the node returned the cursor it was given ({n}); stopping");
                }
                after = Some(n);
            }
            Some(n) => {
                out.flush()?;
                if !a.json {
                    eprintln!("more keys: causeway list --after {n} (or --all)");
                }
                return Ok(());
            }
        }
    }
}

/// A listed key as text: control characters escaped, bytes that are not UTF-8 replaced (the
/// exact bytes are in `--json`'s `key_base64`).
fn printable_key(entry: &Value) -> String {
    let key = entry["key_base64"]
        .as_str()
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_default();
    let mut out = String::new();
    for c in String::from_utf8_lossy(&key).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
        s.push_str(&format!("  {node}  shard {}  {state}{here}\n", m["shard"]));
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
    fn node_addresses_without_a_scheme_mean_http() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("https://h:1").unwrap(), "https://h:1");
        assert!(base_url("ftp://h:1").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn siblings_are_counted_and_separated() {
        assert_eq!(render_values(&[b"one".to_vec()]), b"one\n");
        let text = String::from_utf8(render_values(&[b"a".to_vec(), b"b\nc".to_vec()])).unwrap();
        assert_eq!(
            text,
            "2 siblings (concurrent values; a put now replaces them all)\n\
             --- sibling 1 of 2\na\n--- sibling 2 of 2\nb\nc\n"
        );
    }

    #[test]
    fn keys_print_with_control_characters_escaped() {
        let e = |k: &[u8]| serde_json::json!({"key_base64": B64.encode(k)});
        assert_eq!(printable_key(&e(b"plain key/1")), "plain key/1");
        assert_eq!(printable_key(&e(b"a\nb\tc")), "a\\nb\\tc");
        assert_eq!(printable_key(&e(b"\xff")), "\u{fffd}");
    }

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
            "nodes": [{"node": "b:1", "reachable": false, "error": "refused"}],
        });
        let s = status_summary(&v);
        for want in [
            "node a:1: epoch 3, 2 members, 1 shard(s) x 2 replicas, 4 partitions",
            "  a:1  shard 0  up  (this node)",
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
