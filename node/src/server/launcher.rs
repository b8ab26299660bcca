//! `causeway cluster`: runs a local N-node cluster on loopback as child processes and supervises
//! them.
//!
//! Each child gets an instance id of its own (`serve --instance-id`), and a child counts as up
//! only when *its* `/readyz` answers ready with that id, so another server holding the port can
//! never pass for a child. A child that exits before it is ready, or does not become ready in
//! time, fails the whole start: the children already started are stopped and the command exits
//! non-zero. Once running, a child that exits is reported and restarted, at most
//! [`MAX_RESTARTS`] times per node; past that the cluster stops with an error.

use super::config::DEFAULT_MAX_REPL;
use super::driver::random_u64;
use super::{auth, certs};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Restarts of one node before the cluster gives up on it.
pub const MAX_RESTARTS: u32 = 3;
/// How often running children are checked for exits.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// Pause between readiness probes while a child starts.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Log filter of the children when `--log` is not given: the cluster's terminal stays readable.
const CHILD_LOG: &str = "warn";

/// Options of `causeway cluster`.
/// Without `--grpc-base-port`, node *i*'s gRPC port is its HTTP port plus this.
const GRPC_PORT_OFFSET: u16 = 1000;

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
    /// Port of the first node's gRPC API (docs/grpc.md); the others follow; 0 for no gRPC
    /// [default: --base-port + 1000, so clusters on different base ports never collide]
    #[arg(long)]
    pub grpc_base_port: Option<u16>,
    /// Durability of acknowledged writes: always, batch or never
    #[arg(long, default_value = "batch")]
    pub sync: String,
    /// Seconds a node may take to become ready (at start and after a restart)
    #[arg(long, default_value_t = 60)]
    pub start_timeout: u64,
    /// Run the nodes without TLS and tokens (see `serve --insecure`)
    #[arg(long)]
    pub insecure: bool,
}

/// The credentials `cluster` runs its nodes with, created under its data directory on first use:
/// the CA and node certificates in `tls/`, `tokens.json`, and the admin token in `admin.token`.
struct ClusterCredentials {
    tls_dir: PathBuf,
    tokens_file: PathBuf,
    token_file: PathBuf,
    token: String,
}

fn credentials(data: &std::path::Path, addrs: &[String]) -> anyhow::Result<ClusterCredentials> {
    let tls_dir = data.join("tls");
    for a in addrs {
        if !certs::node_files(&tls_dir, a).cert.exists() {
            certs::issue(&tls_dir, a)?;
        }
    }
    let tokens_file = data.join("tokens.json");
    let token_file = data.join("admin.token");
    let mut tokens = auth::TokensFile::read(&tokens_file)?;
    let kept = std::fs::read_to_string(&token_file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && tokens.tokens.iter().any(|e| e.name == "admin"));
    let token = match kept {
        Some(t) => t,
        None => {
            tokens.tokens.retain(|e| e.name != "admin");
            let t = tokens.add("admin", auth::Role::Admin)?;
            tokens.write(&tokens_file)?;
            certs::write_private(&token_file, &format!("{t}\n"))?;
            t
        }
    };
    Ok(ClusterCredentials {
        tls_dir,
        tokens_file,
        token_file,
        token,
    })
}

/// How the children log: the `--log` filter and `--log-format` the cluster was given, if any.
#[derive(Debug, Clone, Default)]
pub struct ChildLogs {
    pub filter: Option<String>,
    pub format: Option<String>,
}

/// What every child is started with.
struct Plan {
    exe: PathBuf,
    addrs: Vec<String>,
    /// Each node's gRPC address (empty: no gRPC).
    grpc: Vec<String>,
    repl: usize,
    args: ClusterArgs,
    logs: ChildLogs,
    /// None with `--insecure`.
    creds: Option<ClusterCredentials>,
}

/// One supervised child process.
struct Member {
    addr: String,
    /// The instance id the running process was given.
    instance: String,
    proc: Child,
    restarts: u32,
}

impl Plan {
    /// Starts node `i` with a fresh instance id.
    fn spawn(&self, i: usize) -> anyhow::Result<(String, Child)> {
        let addr = &self.addrs[i];
        let instance = format!("cluster-{i}-{:016x}", random_u64());
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .args(["--listen", addr, "--view", &self.addrs.join(",")])
            .args(["--repl-factor", &self.repl.to_string()])
            .args(["--sync", &self.args.sync])
            .args(["--instance-id", &instance])
            .arg("--data-dir")
            .arg(self.args.data.join(format!("node{i}")))
            .args(["--log", self.logs.filter.as_deref().unwrap_or(CHILD_LOG)])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(g) = self.grpc.get(i) {
            cmd.args(["--grpc-listen", g]);
        }
        if let Some(f) = &self.logs.format {
            cmd.args(["--log-format", f]);
        }
        match &self.creds {
            None => {
                cmd.arg("--insecure");
            }
            Some(c) => {
                let files = certs::node_files(&c.tls_dir, addr);
                cmd.arg("--tls-ca")
                    .arg(&files.ca)
                    .arg("--tls-cert")
                    .arg(&files.cert)
                    .arg("--tls-key")
                    .arg(&files.key)
                    .arg("--tokens-file")
                    .arg(&c.tokens_file);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting node {addr}"))?;
        Ok((instance, child))
    }

    fn start_timeout(&self) -> Duration {
        Duration::from_secs(self.args.start_timeout.max(1))
    }
}

/// Refuses ports another process already listens on, before any child starts.
fn check_ports_free(addrs: &[String]) -> anyhow::Result<()> {
    for addr in addrs {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!(
                "cannot start node {addr}: the address is not available ({e}); another process \
                 holds the port — stop it or choose another --base-port or --grpc-base-port"
            );
        }
    }
    Ok(())
}

/// Waits until `m`'s own process answers ready on `/readyz`; fails when the process exits first
/// or the deadline passes (naming what answered instead, e.g. another server on the port).
async fn wait_ready(
    http: &reqwest::Client,
    m: &mut Member,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let url = format!("http://{}/readyz", m.addr);
    loop {
        if let Some(status) = m.proc.try_wait()? {
            bail!(
                "node {} exited ({status}) before it was ready; its log above says why",
                m.addr
            );
        }
        let last = match http.get(&url).send().await {
            Err(e) => format!("no answer ({e})"),
            Ok(r) => {
                let code = r.status();
                match r.json::<serde_json::Value>().await {
                    Ok(j) if j["instance"].as_str() != Some(m.instance.as_str()) => format!(
                        "the port is answered by another server (instance {}, expected {}): \
                         another process holds it",
                        j["instance"], m.instance
                    ),
                    Ok(j) if code.is_success() && j["ready"] == true => return Ok(()),
                    Ok(j) => format!("not ready: {}", j["detail"]),
                    Err(_) => format!(
                        "the port answers {code} without a Causeway readiness reply: another \
                         program holds it"
                    ),
                }
            }
        };
        if Instant::now() >= deadline {
            bail!(
                "node {} did not become ready within {} s: {last}",
                m.addr,
                within.as_secs()
            );
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Stops every child: SIGTERM, then a kill after 10 s.
async fn stop_all(members: Vec<Member>) {
    for m in &members {
        if let Some(pid) = m.proc.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for mut m in members {
        if tokio::time::timeout(Duration::from_secs(10), m.proc.wait())
            .await
            .is_err()
        {
            let _ = m.proc.kill().await;
        }
    }
}

/// Starts every node and waits until each is ready; on failure stops the ones started.
async fn start_all(plan: &Plan, http: &reqwest::Client) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::new();
    for i in 0..plan.addrs.len() {
        match plan.spawn(i) {
            Ok((instance, proc)) => members.push(Member {
                addr: plan.addrs[i].clone(),
                instance,
                proc,
                restarts: 0,
            }),
            Err(e) => {
                stop_all(members).await;
                return Err(e);
            }
        }
    }
    for i in 0..members.len() {
        if let Err(e) = wait_ready(http, &mut members[i], plan.start_timeout()).await {
            stop_all(members).await;
            return Err(e.context("the cluster did not start; the nodes that did were stopped"));
        }
    }
    Ok(members)
}

/// One round of supervision: restarts every child that exited (bounded), waiting until the
/// new process is ready. A restart that does not become ready is killed, so the next round
/// sees it exited again and counts another restart.
async fn supervise(
    plan: &Plan,
    http: &reqwest::Client,
    members: &mut [Member],
) -> anyhow::Result<()> {
    for (i, m) in members.iter_mut().enumerate() {
        let Some(status) = m.proc.try_wait()? else {
            continue;
        };
        eprintln!("causeway cluster: node {} exited ({status})", m.addr);
        if m.restarts == MAX_RESTARTS {
            bail!(
                "node {} exited again after {MAX_RESTARTS} restarts; stopping the cluster",
                m.addr
            );
        }
        m.restarts += 1;
        let (instance, proc) = plan.spawn(i)?;
        (m.instance, m.proc) = (instance, proc);
        eprintln!(
            "causeway cluster: restarting node {} (restart {} of {MAX_RESTARTS}, pid {})",
            m.addr,
            m.restarts,
            m.proc.id().unwrap_or(0)
        );
        match wait_ready(http, m, plan.start_timeout()).await {
            Ok(()) => eprintln!("causeway cluster: node {} is ready again", m.addr),
            Err(e) => {
                eprintln!("causeway cluster: {e:#}");
                let _ = m.proc.kill().await;
            }
        }
    }
    Ok(())
}

/// Runs the cluster until Ctrl-C or SIGTERM, then stops the children (SIGTERM, then kill).
pub async fn run(args: ClusterArgs, logs: ChildLogs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let ports = |base: u16, flag: &str| -> anyhow::Result<Vec<String>> {
        if usize::from(base) + args.nodes - 1 > usize::from(u16::MAX) {
            bail!("{flag} {base} leaves no room for {} nodes", args.nodes);
        }
        Ok((0..args.nodes)
            .map(|i| format!("127.0.0.1:{}", usize::from(base) + i))
            .collect())
    };
    if args.base_port == 0 {
        bail!("--base-port must not be 0");
    }
    let addrs = ports(args.base_port, "--base-port")?;
    let grpc_base = match args.grpc_base_port {
        Some(p) => p,
        None => args
            .base_port
            .checked_add(GRPC_PORT_OFFSET)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--base-port {} leaves no room for gRPC ports {GRPC_PORT_OFFSET} above it: \
                 choose a lower --base-port or set --grpc-base-port (0 for none)",
                    args.base_port
                )
            })?,
    };
    let grpc = match grpc_base {
        0 => Vec::new(),
        base => ports(base, "--grpc-base-port")?,
    };
    let repl = args.repl.unwrap_or(args.nodes.min(DEFAULT_MAX_REPL));
    if repl == 0 || repl > args.nodes {
        bail!("--repl must be in 1..={}", args.nodes);
    }
    check_ports_free(&addrs)?;
    check_ports_free(&grpc)?;
    let creds = if args.insecure {
        None
    } else {
        Some(credentials(&args.data, &addrs).context("creating the cluster's credentials")?)
    };
    let plan = Plan {
        creds,
        exe: std::env::current_exe().context("locating the causeway binary")?,
        addrs,
        grpc,
        repl,
        args,
        logs,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut members = start_all(&plan, &http).await?;
    print_banner(&plan, &members);
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    let outcome = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            r = async {
                tokio::time::sleep(WATCH_EVERY).await;
                supervise(&plan, &http, &mut members).await
            } => if let Err(e) = r { break Err(e) },
        }
    };
    println!("stopping…");
    stop_all(members).await;
    outcome
}

fn print_banner(plan: &Plan, members: &[Member]) {
    let n = plan.addrs.len();
    let shards = (n / plan.repl).max(1);
    println!(
        "causeway cluster: {n} nodes, {shards} shard(s) x {} replicas, data in {}",
        plan.repl,
        plan.args.data.display()
    );
    for (i, m) in members.iter().enumerate() {
        let grpc = plan
            .grpc
            .get(i)
            .map_or(String::new(), |g| format!("  gRPC {g}"));
        println!(
            "  http://{}{grpc}  (pid {})",
            m.addr,
            m.proc.id().unwrap_or(0)
        );
    }
    let first = &plan.addrs[0];
    let last = &plan.addrs[n - 1];
    let auth = match &plan.creds {
        Some(c) => {
            println!(
                "\nPeers talk mutual TLS (CA and certificates in {}); clients need a token.",
                c.tls_dir.display()
            );
            println!(
                "Admin token (kept in {}): {}",
                c.token_file.display(),
                c.token
            );
            println!(
                "\n  export CAUSEWAY_TOKEN=$(cat {})",
                c.token_file.display()
            );
            "-H \"Authorization: Bearer $CAUSEWAY_TOKEN\" "
        }
        None => {
            println!("\nRunning INSECURE: no TLS, no tokens.");
            ""
        }
    };
    println!("\nTry it (write through one node, read through another):");
    println!("  curl -i {auth}-X PUT --data-binary 'hello' http://{first}/v1/kv/greeting");
    println!("  curl -i {auth}http://{last}/v1/kv/greeting");
    println!("  curl -s {auth}http://{last}/v1/cluster");
    if plan.creds.is_some() {
        println!(
            "  web UI: http://{first}/ui/#token=$CAUSEWAY_TOKEN (or paste the token into its login field)"
        );
    }
    println!("\nPress Ctrl-C to stop all nodes.");
}
