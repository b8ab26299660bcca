//! Configuration of `causeway serve`. Precedence, lowest first: built-in defaults < TOML file
//! (`--config`) < the seed's `ADDRESS`/`PORT`/`VIEW`/`REPL_FACTOR` < `CAUSEWAY_*` environment <
//! command-line flags. clap merges the last two; [`ServeArgs::resolve`] applies the rest.

use super::tls::TlsFiles;
use crate::core::config::MeshUpstream;
use crate::core::{Config, ConflictMode, SyncMode, View};
use anyhow::{Context, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Address of the single-node dev store (`causeway serve` with no flags).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "causeway-data";
pub const DEFAULT_BATCH_SYNC_MS: u64 = 50;
/// Default free space the data directory must keep before writes are refused.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;
/// Replication factor when only a view is given: every node up to three.
pub const DEFAULT_MAX_REPL: usize = 3;

/// When acknowledged writes are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncArg {
    /// fsync before acknowledging; concurrent writes share one fsync (group commit).
    Always,
    /// acknowledge at once; fsync every --batch-sync-ms.
    Batch,
    /// never fsync explicitly (the OS decides).
    Never,
}

impl From<SyncArg> for SyncMode {
    fn from(s: SyncArg) -> SyncMode {
        match s {
            SyncArg::Always => SyncMode::Always,
            SyncArg::Batch => SyncMode::Batch,
            SyncArg::Never => SyncMode::Never,
        }
    }
}

/// How concurrent writes to one key are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictsArg {
    /// keep concurrent writes as siblings: nothing is lost.
    Siblings,
    /// last writer wins by hybrid timestamp: loses concurrent writes, and under clock skew even
    /// writes that came later in real time.
    Lww,
}

impl From<ConflictsArg> for ConflictMode {
    fn from(c: ConflictsArg) -> ConflictMode {
        match c {
            ConflictsArg::Siblings => ConflictMode::Siblings,
            ConflictsArg::Lww => ConflictMode::Lww,
        }
    }
}

/// Flags of `causeway serve`; each also reads `CAUSEWAY_<NAME>` and a key of the config file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on for clients and peers [default: 127.0.0.1:8080, or 0.0.0.0:$PORT]
    #[arg(long, env = "CAUSEWAY_LISTEN")]
    pub listen: Option<String>,
    /// Address to serve the gRPC API on (proto/causeway.proto, docs/grpc.md), with the same TLS and tokens as HTTP [default: none, no gRPC]
    #[arg(long, env = "CAUSEWAY_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// Address peers and clients reach this node at; must appear in the view [default: ADDRESS, else the listen address]
    #[arg(long, env = "CAUSEWAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// Every node of the cluster, comma-separated, in shard order [default: VIEW, else this node alone]
    #[arg(long, env = "CAUSEWAY_VIEW", value_delimiter = ',')]
    pub view: Option<Vec<String>>,
    /// Join a running cluster through this member (host:port) instead of starting from a view; the node starts outside any view and asks until a member admits it [exclusive with --view]
    #[arg(long, env = "CAUSEWAY_JOIN")]
    pub join: Option<String>,
    /// Start outside any view and wait until a member adds this node (POST /v1/cluster/join on any member) [exclusive with --view and --join]
    #[arg(long, env = "CAUSEWAY_AWAIT_JOIN")]
    pub await_join: bool,
    /// Replicas per shard [default: REPL_FACTOR, else min(3, nodes in the view)]
    #[arg(long, env = "CAUSEWAY_REPL_FACTOR")]
    pub repl_factor: Option<usize>,
    /// Directory of this node's data [default: ./causeway-data]
    #[arg(long, env = "CAUSEWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// MiB of fjall's block cache (shared by the keyspaces) [default: 32]
    #[arg(long, env = "CAUSEWAY_CACHE_MIB")]
    pub cache_mib: Option<u64>,
    /// MiB of each fjall keyspace's memtable (four keyspaces) [default: 16]
    #[arg(long, env = "CAUSEWAY_MEMTABLE_MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memtable_mib: Option<u64>,
    /// Durability of acknowledged writes [default: batch]
    #[arg(long, env = "CAUSEWAY_SYNC", value_enum)]
    pub sync: Option<SyncArg>,
    /// Milliseconds between fsyncs with --sync batch [default: 50]
    #[arg(long, env = "CAUSEWAY_BATCH_SYNC_MS")]
    pub batch_sync_ms: Option<u64>,
    /// Largest accepted value in bytes [default: 8388608]
    #[arg(long, env = "CAUSEWAY_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Most siblings a write may leave on a key; beyond it writes get 409 until a write with a read's context resolves them [default: 100]
    #[arg(long, env = "CAUSEWAY_MAX_SIBLINGS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_siblings: Option<u32>,
    /// Largest total of one key's sibling values in bytes; a write above it gets 413 [default: 33554432]
    #[arg(long, env = "CAUSEWAY_MAX_SIBLING_BYTES")]
    pub max_sibling_bytes: Option<usize>,
    /// Replication bytes in flight to one peer before further replication to it waits; bounds the memory a slow or paused replica costs [default: 67108864]
    #[arg(long, env = "CAUSEWAY_PEER_BUFFER_BYTES")]
    pub peer_buffer_bytes: Option<u64>,
    /// Free bytes the data directory's file system must keep; below it writes are refused with 507 [default: 67108864]
    #[arg(long, env = "CAUSEWAY_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Resolution of concurrent writes; lww loses writes (see README) [default: siblings]
    #[arg(long, env = "CAUSEWAY_CONFLICTS", value_enum)]
    pub conflicts: Option<ConflictsArg>,
    /// Accept w=1 writes for a shard whose replicas are all down as durable hints, delivered when they return (sloppy quorum; only for writes whose context names none of the partition's writes)
    #[arg(long, env = "CAUSEWAY_HINTED_HANDOFF")]
    pub hinted_handoff: bool,
    /// Name of this process in `/readyz`, so a launcher can tell its own child from another server on the port (1 to 64 of A-Z a-z 0-9 - _) [default: random, chosen at start]
    #[arg(long, env = "CAUSEWAY_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// The cluster CA's certificate (PEM): peers must present a certificate it signed
    #[arg(long, env = "CAUSEWAY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the cluster CA, naming its address (`causeway certs`)
    #[arg(long, env = "CAUSEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM)
    #[arg(long, env = "CAUSEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A certificate for HTTPS clients instead of the node certificate (e.g. one of a public CA)
    #[arg(long, env = "CAUSEWAY_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The key of --tls-client-cert
    #[arg(long, env = "CAUSEWAY_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// Bearer tokens clients must present (`causeway tokens add`); without it a loopback node serves everyone
    #[arg(long, env = "CAUSEWAY_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Turn TLS and tokens off: anyone who reaches the port can read, write and reconfigure the cluster (needed to listen on a non-loopback address without them)
    #[arg(long, env = "CAUSEWAY_INSECURE")]
    pub insecure: bool,
    /// Keyring for encryption at rest: every stored value is sealed with its newest key (XChaCha20-Poly1305); see docs/security-at-rest.md
    #[arg(long, env = "CAUSEWAY_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// This cluster's id in a multi-cluster mesh (docs/mesh.md), 1 to 4294967295, distinct per cluster; recorded in the data directory at first start, and a restart with another id is refused [default: none, outside any mesh]
    #[arg(long, env = "CAUSEWAY_CLUSTER_ID", value_parser = clap::value_parser!(u32).range(1..))]
    pub cluster_id: Option<u32>,
    /// An upstream cluster this cluster receives the writes of, as NAME=HOST:PORT (one of its nodes); repeatable (env: comma-separated). Needs --cluster-id
    #[arg(
        long = "mesh-upstream",
        env = "CAUSEWAY_MESH_UPSTREAM",
        value_delimiter = ','
    )]
    pub mesh_upstream: Vec<String>,
    /// Other clusters pull from this one: keep tombstones forever (no node can tell that every cluster holds them). Needs --cluster-id
    #[arg(long, env = "CAUSEWAY_MESH_MEMBER")]
    pub mesh_member: bool,
    /// Keys queued per downstream subscriber before further ones are dropped (and left to the full sync) [default: 10000]
    #[arg(long, env = "CAUSEWAY_MESH_QUEUE", value_parser = clap::value_parser!(u64).range(1..))]
    pub mesh_queue: Option<u64>,
    /// Milliseconds between full syncs with the upstreams, ±25% [default: 500]
    #[arg(long, env = "CAUSEWAY_MESH_SYNC_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(10..))]
    pub mesh_sync_interval_ms: Option<u64>,
    /// The CA certificate(s) of other clusters' nodes (PEM; repeatable, or one file of several): trusted for peer links that may carry mesh messages only. Needs TLS (env: comma-separated)
    #[arg(long = "mesh-ca", env = "CAUSEWAY_MESH_CA", value_delimiter = ',')]
    pub mesh_ca: Vec<PathBuf>,
    /// Test-only planted fault: a request for this key panics the node (proves fail-stop)
    #[arg(long, env = "CAUSEWAY_TEST_PANIC_ON_KEY", hide = true)]
    pub test_panic_on_key: Option<String>,
    /// TOML file with any of the keys above (listen, grpc_listen, advertise, view, join, await_join, repl_factor, data_dir, sync, batch_sync_ms, max_value_bytes, conflicts, hinted_handoff, encryption_key_file, max_siblings, max_sibling_bytes, peer_buffer_bytes, min_free_bytes, tls_ca, tls_cert, tls_key, tls_client_cert, tls_client_key, tokens_file, insecure, cluster_id; and a [mesh] table: member, queue, sync_interval_ms, ca = [PATH…], [[mesh.upstream]] name, addr)
    #[arg(long, env = "CAUSEWAY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    grpc_listen: Option<String>,
    advertise: Option<String>,
    view: Option<Vec<String>>,
    join: Option<String>,
    await_join: Option<bool>,
    repl_factor: Option<usize>,
    data_dir: Option<PathBuf>,
    sync: Option<SyncArg>,
    batch_sync_ms: Option<u64>,
    max_value_bytes: Option<usize>,
    max_siblings: Option<u32>,
    max_sibling_bytes: Option<usize>,
    peer_buffer_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    conflicts: Option<ConflictsArg>,
    hinted_handoff: Option<bool>,
    encryption_key_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_cert: Option<PathBuf>,
    tls_client_key: Option<PathBuf>,
    tokens_file: Option<PathBuf>,
    insecure: Option<bool>,
    cluster_id: Option<u32>,
    mesh: Option<MeshFile>,
}

/// The config file's `[mesh]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    member: Option<bool>,
    queue: Option<u64>,
    sync_interval_ms: Option<u64>,
    #[serde(default)]
    ca: Vec<PathBuf>,
    #[serde(default)]
    upstream: Vec<UpstreamFile>,
}

/// One `[[mesh.upstream]]` of the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    name: String,
    addr: String,
}

/// Longest accepted mesh upstream name.
pub const MAX_UPSTREAM_NAME_BYTES: usize = 64;

/// Parses a `--mesh-upstream` value `NAME=HOST:PORT`: NAME is 1 to
/// [`MAX_UPSTREAM_NAME_BYTES`] of A-Z a-z 0-9 - _ . (it labels metrics), HOST:PORT a node
/// address ([`check_address`]).
pub fn parse_upstream(spec: &str) -> anyhow::Result<MeshUpstream> {
    let Some((name, addr)) = spec.split_once('=') else {
        bail!("--mesh-upstream {spec:?} must be NAME=HOST:PORT (e.g. east=10.0.1.1:13800)");
    };
    upstream(name.trim(), addr.trim()).with_context(|| format!("--mesh-upstream {spec:?}"))
}

fn upstream(name: &str, addr: &str) -> anyhow::Result<MeshUpstream> {
    if name.is_empty()
        || name.len() > MAX_UPSTREAM_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        bail!(
            "the upstream name {name:?} must be 1 to {MAX_UPSTREAM_NAME_BYTES} characters of \
             A-Z a-z 0-9 - _ ."
        );
    }
    check_address(addr)?;
    Ok(MeshUpstream {
        name: name.to_owned(),
        node: addr.to_owned(),
    })
}

/// How a node protects its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// `--insecure`: no TLS, no tokens.
    Insecure,
    /// The loopback dev store without credentials configured: plaintext, no tokens.
    LoopbackDev,
    /// TLS for peers (and HTTPS for clients) when `tls` is set; tokens when `tokens` is set.
    /// Off loopback both are set.
    Secure {
        tls: Option<TlsFiles>,
        tokens: Option<PathBuf>,
    },
}

/// True when `listen` binds only loopback addresses.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Everything `serve` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    /// Where the gRPC API listens, if anywhere.
    pub grpc_listen: Option<String>,
    pub advertise: String,
    pub data_dir: PathBuf,
    pub batch_sync: Duration,
    /// This process's instance id (`--instance-id`, else random); it names the process, not the
    /// node, so a restart on the same data gets a new one.
    pub instance: String,
    pub security: Security,
    /// Keyring sealing stored values, if encryption at rest is on.
    pub encryption_key_file: Option<PathBuf>,
    /// Free space below which writes are refused (507).
    pub min_free_bytes: u64,
    /// fjall's cache and memtable sizes.
    pub storage: super::storage::Tuning,
    pub core: Config,
}

/// The seed system's environment (`ADDRESS`, `PORT`, `VIEW`, `REPL_FACTOR`).
#[derive(Debug, Default)]
pub struct SeedEnv {
    pub address: Option<String>,
    pub port: Option<u16>,
    pub view: Option<Vec<String>>,
    pub repl_factor: Option<usize>,
}

impl SeedEnv {
    pub fn from_env() -> anyhow::Result<SeedEnv> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        Ok(SeedEnv {
            address: var("ADDRESS"),
            port: var("PORT")
                .map(|p| p.trim().parse().context("PORT must be a port number"))
                .transpose()?,
            view: var("VIEW").map(|v| split_list(&v)),
            repl_factor: var("REPL_FACTOR")
                .map(|r| r.trim().parse().context("REPL_FACTOR must be a number"))
                .transpose()?,
        })
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks that `addr` looks like `host:port` (a node address as peers dial it).
pub fn check_address(addr: &str) -> anyhow::Result<()> {
    let bad = |why: &str| anyhow::anyhow!("{addr:?} is not a node address (host:port): {why}");
    if addr.len() > MAX_ADDRESS_BYTES {
        return Err(bad("too long"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '/' | '?' | '#' | '@'))
    {
        return Err(bad("it contains a character that cannot appear in one"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port must be a number in 1..=65535")),
    }
}

/// Longest accepted instance id.
pub const MAX_INSTANCE_ID_BYTES: usize = 64;

/// Checks an `--instance-id`: 1 to [`MAX_INSTANCE_ID_BYTES`] URL- and JSON-safe characters.
pub fn check_instance_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id.len() > MAX_INSTANCE_ID_BYTES
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!(
            "--instance-id {id:?} must be 1 to {MAX_INSTANCE_ID_BYTES} characters of A-Z a-z 0-9 - _"
        );
    }
    Ok(())
}

/// Longest accepted node address.
pub const MAX_ADDRESS_BYTES: usize = 255;

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// The security keys of the config file, as flags would give them.
fn file_security(f: &FileConfig) -> ServeArgs {
    ServeArgs {
        tls_ca: f.tls_ca.clone(),
        tls_cert: f.tls_cert.clone(),
        tls_key: f.tls_key.clone(),
        tls_client_cert: f.tls_client_cert.clone(),
        tls_client_key: f.tls_client_key.clone(),
        tokens_file: f.tokens_file.clone(),
        insecure: f.insecure.unwrap_or(false),
        mesh_ca: f.mesh.as_ref().map(|m| m.ca.clone()).unwrap_or_default(),
        ..ServeArgs::default()
    }
}

impl ServeArgs {
    /// Decides [`Security`]: flags over the file's keys; off loopback TLS and tokens are required
    /// unless `--insecure`.
    fn security(&self, file: ServeArgs, listen: &str) -> anyhow::Result<Security> {
        let mesh_ca = if self.mesh_ca.is_empty() {
            file.mesh_ca.clone()
        } else {
            self.mesh_ca.clone()
        };
        if self.insecure || file.insecure {
            if !mesh_ca.is_empty() {
                bail!("--mesh-ca needs TLS: with --insecure peer links are plaintext");
            }
            return Ok(Security::Insecure);
        }
        let ca = self.tls_ca.clone().or(file.tls_ca);
        let cert = self.tls_cert.clone().or(file.tls_cert);
        let key = self.tls_key.clone().or(file.tls_key);
        let client_cert = match (
            self.tls_client_cert.clone().or(file.tls_client_cert),
            self.tls_client_key.clone().or(file.tls_client_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("--tls-client-cert and --tls-client-key go together"),
        };
        let tls = match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca,
                cert,
                key,
                client_cert,
                mesh_ca,
            }),
            (None, None, None) if client_cert.is_none() && mesh_ca.is_empty() => None,
            _ => bail!("TLS needs all of --tls-ca, --tls-cert and --tls-key"),
        };
        let tokens = self.tokens_file.clone().or(file.tokens_file);
        if !is_loopback(listen) && (tls.is_none() || tokens.is_none()) {
            bail!(
                "refusing to listen on {listen} without {}: anyone who reaches a non-loopback \
                 port could read, overwrite and reconfigure the cluster. Generate credentials \
                 with `causeway certs ADDR…` and `causeway tokens add --role admin`, or pass \
                 --insecure (CAUSEWAY_INSECURE=true) to run without TLS and tokens on a trusted \
                 network",
                match (&tls, &tokens) {
                    (None, None) =>
                        "TLS (--tls-ca/--tls-cert/--tls-key) and tokens (--tokens-file)",
                    (None, Some(_)) => "TLS (--tls-ca/--tls-cert/--tls-key)",
                    _ => "tokens (--tokens-file)",
                }
            );
        }
        Ok(match (tls, tokens) {
            (None, None) => Security::LoopbackDev,
            (tls, tokens) => Security::Secure { tls, tokens },
        })
    }

    /// Sets the mesh fields of `core` (flags over the file's `cluster_id` and `[mesh]`) and
    /// checks them: upstreams and `--mesh-member` need a cluster id; upstream names are
    /// distinct, and no upstream address is this node or a member of its view.
    fn mesh(
        &self,
        file_cluster: Option<u32>,
        file: MeshFile,
        core: &mut Config,
        advertise: &str,
    ) -> anyhow::Result<()> {
        let cluster = match self.cluster_id.or(file_cluster) {
            Some(0) => bail!("cluster_id must be 1 to 4294967295 (0 means outside any mesh)"),
            c => c,
        };
        let upstreams = if self.mesh_upstream.is_empty() {
            file.upstream
                .iter()
                .map(|u| {
                    upstream(u.name.trim(), u.addr.trim())
                        .with_context(|| format!("[[mesh.upstream]] {:?}", u.name))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            self.mesh_upstream
                .iter()
                .map(|u| parse_upstream(u))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        for (i, u) in upstreams.iter().enumerate() {
            if upstreams[..i].iter().any(|o| o.name == u.name) {
                bail!("two mesh upstreams are named {:?}", u.name);
            }
            if u.node == advertise || core.view.nodes.contains(&u.node) {
                bail!(
                    "the mesh upstream {}={} is a node of this cluster; an upstream names a \
                     node of another cluster",
                    u.name,
                    u.node
                );
            }
        }
        let member = self.mesh_member || file.member.unwrap_or(false);
        if cluster.is_none() && (member || !upstreams.is_empty()) {
            bail!(
                "--mesh-upstream and --mesh-member need --cluster-id N (CAUSEWAY_CLUSTER_ID, file \
                 key cluster_id): every cluster of a mesh needs a distinct nonzero id"
            );
        }
        core.cluster = cluster.unwrap_or(0);
        core.mesh_upstreams = upstreams;
        core.mesh_member = member;
        match self.mesh_queue.or(file.queue) {
            Some(0) => bail!("mesh queue must be at least 1"),
            Some(q) => core.mesh_queue = usize::try_from(q).context("mesh queue")?,
            None => {}
        }
        match self.mesh_sync_interval_ms.or(file.sync_interval_ms) {
            Some(ms) if ms < 10 => bail!("mesh sync_interval_ms must be at least 10"),
            Some(ms) => core.mesh_sync_interval = Duration::from_millis(ms),
            None => {}
        }
        Ok(())
    }

    /// Applies the precedence rules and checks the result.
    pub fn resolve(&self, seed: SeedEnv) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let seed_listen = seed
            .address
            .as_deref()
            .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_owned()))
            .or(seed.port.map(|p| p.to_string()))
            .map(|p| format!("0.0.0.0:{p}"));
        let listen = self
            .listen
            .clone()
            .or(seed_listen)
            .or(file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let security = self.security(file_security(&file), &listen)?;
        let grpc_listen = self.grpc_listen.clone().or(file.grpc_listen.clone());
        if let Some(grpc) = &grpc_listen {
            self.security(file_security(&file), grpc)
                .context("--grpc-listen")?;
        }
        let advertise = self
            .advertise
            .clone()
            .or(seed.address)
            .or(file.advertise)
            .unwrap_or_else(|| listen.clone());
        if advertise.starts_with("0.0.0.0:") || advertise.starts_with("[::]:") {
            bail!("--advertise must name a reachable address when listening on {listen}");
        }
        let join = self
            .join
            .as_deref()
            .or(file.join.as_deref())
            .map(str::trim)
            .filter(|j| !j.is_empty())
            .map(str::to_owned);
        let await_join = self.await_join || file.await_join.unwrap_or(false);
        if await_join && join.is_some() {
            bail!("--await-join and --join exclude each other");
        }
        if await_join && self.view.is_some() {
            bail!("--await-join and --view (CAUSEWAY_VIEW) exclude each other");
        }
        let view = match &join {
            None if await_join => View::joining(),
            Some(member) => {
                if self.view.is_some() {
                    bail!(
                        "--join and --view (CAUSEWAY_VIEW) exclude each other: a joining node \
                         learns the view from the cluster"
                    );
                }
                check_address(member).context("--join")?;
                if *member == advertise {
                    bail!("--join names this node itself ({member}); name a running member");
                }
                // VIEW and the file's view are ignored: the member's view is the cluster's.
                View::joining()
            }
            None => {
                let nodes = self
                    .view
                    .clone()
                    .map(|v| v.iter().flat_map(|s| split_list(s)).collect())
                    .or(seed.view)
                    .or(file.view)
                    .unwrap_or_else(|| vec![advertise.clone()]);
                if !nodes.contains(&advertise) {
                    bail!("the view {nodes:?} does not list this node's address {advertise}");
                }
                let repl = self
                    .repl_factor
                    .or(seed.repl_factor)
                    .or(file.repl_factor)
                    .unwrap_or_else(|| nodes.len().min(DEFAULT_MAX_REPL));
                View::new(nodes, repl).context("invalid view")?
            }
        };
        let mut core = Config::new(view);
        core.join = join;
        core.sync = self.sync.or(file.sync).unwrap_or(SyncArg::Batch).into();
        core.hinted_handoff = self.hinted_handoff || file.hinted_handoff.unwrap_or(false);
        core.conflicts = self
            .conflicts
            .or(file.conflicts)
            .unwrap_or(ConflictsArg::Siblings)
            .into();
        core.panic_on_key = self
            .test_panic_on_key
            .as_ref()
            .map(|k| bytes::Bytes::copy_from_slice(k.as_bytes()));
        if let Some(m) = self.max_value_bytes.or(file.max_value_bytes) {
            core.max_value_bytes = m;
        }
        match self.max_siblings.or(file.max_siblings) {
            Some(0) => bail!("max_siblings must be at least 1"),
            Some(m) => core.max_siblings = m as usize,
            None => {}
        }
        if let Some(b) = self.max_sibling_bytes.or(file.max_sibling_bytes) {
            core.max_sibling_bytes = b;
        }
        if let Some(b) = self.peer_buffer_bytes.or(file.peer_buffer_bytes) {
            core.peer_buffer_bytes = b;
        }
        self.mesh(
            file.cluster_id,
            file.mesh.unwrap_or_default(),
            &mut core,
            &advertise,
        )?;
        let batch_ms = self
            .batch_sync_ms
            .or(file.batch_sync_ms)
            .unwrap_or(DEFAULT_BATCH_SYNC_MS)
            .max(1);
        let instance = match &self.instance_id {
            Some(id) => {
                check_instance_id(id)?;
                id.clone()
            }
            None => format!("{:016x}", super::driver::random_u64()),
        };
        Ok(Settings {
            security,
            listen,
            grpc_listen,
            advertise,
            instance,
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            batch_sync: Duration::from_millis(batch_ms),
            encryption_key_file: self
                .encryption_key_file
                .clone()
                .or(file.encryption_key_file),
            min_free_bytes: self
                .min_free_bytes
                .or(file.min_free_bytes)
                .unwrap_or(DEFAULT_MIN_FREE_BYTES),
            storage: super::storage::Tuning {
                cache_mib: self.cache_mib.unwrap_or(super::storage::DEFAULT_CACHE_MIB),
                memtable_mib: self
                    .memtable_mib
                    .unwrap_or(super::storage::DEFAULT_MEMTABLE_MIB),
            },
            core,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_is_a_single_node_dev_store() {
        let s = ServeArgs::default()
            .resolve(SeedEnv::default())
            .expect("defaults");
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert_eq!(s.advertise, DEFAULT_LISTEN);
        assert_eq!(s.core.view.nodes, vec![DEFAULT_LISTEN.to_owned()]);
        assert_eq!(s.core.view.repl_factor, 1);
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(s.instance.len(), 16, "a random instance id: {}", s.instance);
    }

    #[test]
    fn instance_ids_are_checked() {
        let named = |id: &str| {
            ServeArgs {
                instance_id: Some(id.into()),
                ..ServeArgs::default()
            }
            .resolve(SeedEnv::default())
        };
        assert_eq!(named("cluster-1_a").expect("valid").instance, "cluster-1_a");
        for bad in ["", "a b", "x\"", &"a".repeat(65)] {
            assert!(named(bad).is_err(), "--instance-id {bad:?}");
        }
    }

    #[test]
    fn seed_environment_and_precedence() {
        let seed = SeedEnv {
            address: Some("10.0.0.2:13800".into()),
            port: None,
            view: Some(split_list("10.0.0.2:13800,10.0.0.3:13800")),
            repl_factor: Some(2),
        };
        let insecure = ServeArgs {
            insecure: true,
            ..ServeArgs::default()
        };
        let s = insecure.resolve(seed).expect("seed env");
        assert_eq!(s.security, Security::Insecure);
        assert_eq!(s.listen, "0.0.0.0:13800");
        assert_eq!(s.advertise, "10.0.0.2:13800");
        assert_eq!(s.core.view.repl_factor, 2);
        let flags = ServeArgs {
            repl_factor: Some(1),
            insecure: true,
            ..ServeArgs::default()
        };
        let seed = SeedEnv {
            address: Some("10.0.0.2:13800".into()),
            view: Some(split_list("10.0.0.2:13800,10.0.0.3:13800")),
            repl_factor: Some(2),
            ..SeedEnv::default()
        };
        assert_eq!(flags.resolve(seed).expect("flags").core.view.repl_factor, 1);
        let bad = ServeArgs {
            view: Some(vec!["10.0.0.9:1".into()]),
            ..ServeArgs::default()
        };
        assert!(bad.resolve(SeedEnv::default()).is_err());
    }

    #[test]
    fn off_loopback_needs_tls_and_tokens_or_insecure() {
        let public = |extra: ServeArgs| ServeArgs {
            listen: Some("0.0.0.0:13800".into()),
            advertise: Some("10.0.0.2:13800".into()),
            ..extra
        };
        let err = public(ServeArgs::default())
            .resolve(SeedEnv::default())
            .expect_err("plaintext off loopback");
        assert!(err.to_string().contains("--insecure"), "{err}");
        let tls_only = ServeArgs {
            tls_ca: Some("ca.pem".into()),
            tls_cert: Some("n.pem".into()),
            tls_key: Some("n.key".into()),
            ..ServeArgs::default()
        };
        let err = public(tls_only.clone())
            .resolve(SeedEnv::default())
            .expect_err("no tokens");
        assert!(err.to_string().contains("--tokens-file"), "{err}");
        let both = ServeArgs {
            tokens_file: Some("tokens.json".into()),
            ..tls_only
        };
        let s = public(both).resolve(SeedEnv::default()).expect("secure");
        assert!(matches!(
            s.security,
            Security::Secure {
                tls: Some(_),
                tokens: Some(_)
            }
        ));
        let partial = ServeArgs {
            tls_ca: Some("ca.pem".into()),
            ..ServeArgs::default()
        };
        assert!(
            partial.resolve(SeedEnv::default()).is_err(),
            "half a TLS setup"
        );
        let dev = ServeArgs::default()
            .resolve(SeedEnv::default())
            .expect("dev");
        assert_eq!(dev.security, Security::LoopbackDev);
        assert!(
            is_loopback("127.0.0.1:8080") && is_loopback("[::1]:1") && is_loopback("localhost:1")
        );
        assert!(!is_loopback("0.0.0.0:8080") && !is_loopback("10.0.0.1:1"));
    }

    #[test]
    fn join_starts_outside_any_view() {
        let seed = SeedEnv {
            address: Some("10.0.0.4:13800".into()),
            view: Some(split_list("10.0.0.2:13800,10.0.0.3:13800")),
            ..SeedEnv::default()
        };
        let args = ServeArgs {
            join: Some("10.0.0.2:13800".into()),
            insecure: true,
            ..ServeArgs::default()
        };
        let s = args.resolve(seed).expect("join ignores VIEW");
        assert!(s.core.view.is_joining());
        assert_eq!(s.core.join.as_deref(), Some("10.0.0.2:13800"));
        let both = ServeArgs {
            join: Some("10.0.0.2:13800".into()),
            view: Some(vec!["10.0.0.2:13800".into()]),
            ..ServeArgs::default()
        };
        assert!(
            both.resolve(SeedEnv::default()).is_err(),
            "--join with --view"
        );
        for bad in [
            "10.0.0.2",
            "10.0.0.2:0",
            ":80",
            "a b:1",
            "h:99999",
            "127.0.0.1:8080",
        ] {
            let a = ServeArgs {
                join: Some(bad.into()),
                ..ServeArgs::default()
            };
            assert!(a.resolve(SeedEnv::default()).is_err(), "--join {bad}");
        }
        let waiting = ServeArgs {
            await_join: true,
            ..ServeArgs::default()
        };
        let s = waiting.resolve(SeedEnv::default()).expect("await-join");
        assert!(s.core.view.is_joining());
        assert_eq!(s.core.join, None);
        let conflicting = ServeArgs {
            await_join: true,
            join: Some("10.0.0.2:13800".into()),
            ..ServeArgs::default()
        };
        assert!(conflicting.resolve(SeedEnv::default()).is_err());
    }

    #[test]
    fn mesh_flags_map_into_the_core_config() {
        let args = ServeArgs {
            cluster_id: Some(7),
            mesh_upstream: vec!["east=10.0.1.1:13800".into(), "west = 10.0.2.1:13800".into()],
            mesh_queue: Some(50),
            mesh_sync_interval_ms: Some(200),
            ..ServeArgs::default()
        };
        let s = args.resolve(SeedEnv::default()).expect("mesh flags");
        assert_eq!(s.core.cluster, 7);
        assert_eq!(
            s.core.mesh_upstreams,
            vec![
                MeshUpstream {
                    name: "east".into(),
                    node: "10.0.1.1:13800".into()
                },
                MeshUpstream {
                    name: "west".into(),
                    node: "10.0.2.1:13800".into()
                }
            ]
        );
        assert_eq!(s.core.mesh_queue, 50);
        assert_eq!(s.core.mesh_sync_interval, Duration::from_millis(200));
        assert!(!s.core.mesh_member);
        let plain = ServeArgs::default()
            .resolve(SeedEnv::default())
            .expect("dev");
        assert_eq!(plain.core.cluster, 0);
        assert!(plain.core.mesh_upstreams.is_empty());
        let err = |args: ServeArgs| {
            args.resolve(SeedEnv::default())
                .expect_err("refused")
                .to_string()
        };
        let no_id = ServeArgs {
            mesh_member: true,
            ..ServeArgs::default()
        };
        assert!(err(no_id).contains("--cluster-id"));
        let no_id = ServeArgs {
            mesh_upstream: vec!["east=10.0.1.1:13800".into()],
            ..ServeArgs::default()
        };
        assert!(err(no_id).contains("--cluster-id"));
        for bad in [
            "east",
            "=10.0.1.1:1",
            "east=10.0.1.1",
            "e ast=10.0.1.1:1",
            "east=h:0",
        ] {
            let a = ServeArgs {
                cluster_id: Some(1),
                mesh_upstream: vec![bad.into()],
                ..ServeArgs::default()
            };
            let e = a.resolve(SeedEnv::default()).expect_err(bad);
            assert!(format!("{e:#}").contains("--mesh-upstream"), "{bad}: {e:#}");
        }
        let twice = ServeArgs {
            cluster_id: Some(1),
            mesh_upstream: vec!["a=10.0.1.1:1".into(), "a=10.0.1.2:1".into()],
            ..ServeArgs::default()
        };
        assert!(err(twice).contains("two mesh upstreams"));
        let own = ServeArgs {
            cluster_id: Some(1),
            mesh_upstream: vec![format!("self={DEFAULT_LISTEN}")],
            ..ServeArgs::default()
        };
        assert!(err(own).contains("a node of this cluster"));
        let insecure_ca = ServeArgs {
            insecure: true,
            mesh_ca: vec!["other-ca.pem".into()],
            ..ServeArgs::default()
        };
        assert!(err(insecure_ca).contains("--mesh-ca needs TLS"));
        let ca_without_tls = ServeArgs {
            mesh_ca: vec!["other-ca.pem".into()],
            ..ServeArgs::default()
        };
        assert!(err(ca_without_tls).contains("TLS needs"));
    }

    #[test]
    fn the_mesh_table_of_the_config_file() {
        let path =
            std::env::temp_dir().join(format!("causeway-mesh-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "cluster_id = 3\n[mesh]\nmember = true\nqueue = 9\nsync_interval_ms = 300\n\
             [[mesh.upstream]]\nname = \"east\"\naddr = \"10.0.1.1:13800\"\n",
        )
        .expect("writing");
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let s = from_file.resolve(SeedEnv::default()).expect("file");
        assert_eq!(s.core.cluster, 3);
        assert!(s.core.mesh_member);
        assert_eq!(s.core.mesh_queue, 9);
        assert_eq!(s.core.mesh_sync_interval, Duration::from_millis(300));
        assert_eq!(s.core.mesh_upstreams[0].node, "10.0.1.1:13800");
        let flagged = ServeArgs {
            cluster_id: Some(4),
            mesh_upstream: vec!["west=10.0.2.1:13800".into()],
            ..from_file
        };
        let s = flagged.resolve(SeedEnv::default()).expect("flags");
        assert_eq!(s.core.cluster, 4);
        assert_eq!(s.core.mesh_upstreams[0].name, "west");
        assert_eq!(s.core.mesh_upstreams.len(), 1);
        std::fs::write(
            &path,
            "cluster_id = 3\n[[mesh.upstream]]\nname = \"east\"\naddr = \"nope\"\n",
        )
        .expect("writing");
        let bad = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let e = bad.resolve(SeedEnv::default()).expect_err("bad address");
        assert!(format!("{e:#}").contains("mesh.upstream"), "{e:#}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn file_keys_yield_to_flags() {
        let path =
            std::env::temp_dir().join(format!("causeway-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "conflicts = \"lww\"\nsync = \"always\"\nhinted_handoff = true\nmax_siblings = 7\n",
        )
        .expect("writing");
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let s = from_file.resolve(SeedEnv::default()).expect("file");
        assert_eq!(s.core.conflicts, ConflictMode::Lww);
        assert!(s.core.hinted_handoff);
        assert_eq!(s.core.sync, SyncMode::Always);
        assert_eq!(s.core.max_siblings, 7);
        let flagged = ServeArgs {
            conflicts: Some(ConflictsArg::Siblings),
            max_siblings: Some(9),
            ..from_file
        };
        let s = flagged.resolve(SeedEnv::default()).expect("flags");
        assert_eq!(s.core.conflicts, ConflictMode::Siblings);
        assert_eq!(s.core.max_siblings, 9);
        std::fs::write(&path, "conflict = \"lww\"\n").expect("writing");
        let typo = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        assert!(
            typo.resolve(SeedEnv::default()).is_err(),
            "unknown keys are rejected"
        );
        let _ = std::fs::remove_file(path);
    }
}
