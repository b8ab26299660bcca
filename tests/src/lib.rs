//! Support for end-to-end tests of the real `causeway` binary: loopback clusters of child
//! processes (killed on drop), `kill -9` and restart, and a small blocking HTTP client.
//!
//! Clusters are secure by default, as a deployment would run: every node gets a certificate of
//! one test CA (`causeway certs`) and reads one tokens file, both shared by every cluster of the
//! test process ([`credentials`]); [`client`] carries the admin token. A cluster started with
//! `--insecure` among its flags runs without either.
//!
//! The binary is `$CAUSEWAY_BIN`, else `$CARGO_TARGET_DIR/release/causeway`, else
//! `target/release/causeway` in the workspace (`ci/test` builds it before the tests run).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use reqwest::blocking::{Client, Response};

pub mod netns;
pub mod peer;
pub mod workload;

/// Ports handed out in this process, so parallel tests never share one.
static USED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The `causeway` binary under test.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CAUSEWAY_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("causeway");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p causeway --bin causeway` first",
        bin.display()
    );
    bin
}

/// A free 127.0.0.1 port not yet handed out by this process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding an ephemeral port")
            .port();
        if USED_PORTS.lock().expect("port registry").insert(port) {
            return port;
        }
    }
}

/// `n` free consecutive 127.0.0.1 ports not yet handed out by this process (for `causeway
/// cluster`, whose nodes listen on `--base-port` and the ports after it).
pub fn free_ports(n: usize) -> Vec<u16> {
    loop {
        let base = free_port();
        let Some(ports) = (0..n as u16)
            .map(|i| base.checked_add(i))
            .collect::<Option<Vec<u16>>>()
        else {
            continue;
        };
        let bindable = ports[1..]
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok());
        let mut used = USED_PORTS.lock().expect("port registry");
        if bindable && ports[1..].iter().all(|p| !used.contains(p)) {
            used.extend(&ports);
            return ports;
        }
    }
}

/// Runs the `causeway` binary with `args` (and `stdin` as its input) and returns its output.
pub fn run_cli(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("CAUSEWAY_NODE")
        .env_remove("CAUSEWAY_SESSION")
        .env("CAUSEWAY_TOKEN", &credentials().admin_token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting causeway");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A command that does not read its input may exit first: a broken pipe is its answer.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("running causeway")
}

/// The test process's CA, node certificates and tokens file.
pub struct Credentials {
    /// `causeway certs --out` directory: `ca.pem` and one certificate per node address.
    pub tls_dir: PathBuf,
    pub tokens_file: PathBuf,
    /// A token with the admin role.
    pub admin_token: String,
}

/// The shared credentials, created on first use in a directory removed by nothing (it is small
/// and lives in the temporary directory).
pub fn credentials() -> &'static Credentials {
    static CREDS: OnceLock<Credentials> = OnceLock::new();
    CREDS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("causeway-e2e-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the credentials directory");
        let creds = Credentials {
            tls_dir: dir.join("tls"),
            tokens_file: dir.join("tokens.json"),
            admin_token: String::new(),
        };
        let admin_token = add_token_to(&creds.tokens_file, "admin");
        Credentials {
            admin_token,
            ..creds
        }
    })
}

fn add_token_to(file: &Path, role: &str) -> String {
    let out = Command::new(binary())
        .arg("tokens")
        .arg("--tokens-file")
        .arg(file)
        .args(["add", "--role", role])
        .output()
        .expect("running causeway tokens add");
    assert!(
        out.status.success(),
        "causeway tokens add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("the token is text")
        .trim()
        .to_owned()
}

/// Creates a token with `role` in the shared tokens file. Running nodes accept it within about a
/// second (they reload the file when it changes): wait for that with [`wait_token`].
pub fn add_token(role: &str) -> String {
    add_token_to(&credentials().tokens_file, role)
}

/// Waits (bounded) until `url` (a node's `/v1/cluster?scope=local`) accepts `token`.
pub fn wait_token(url: &str, token: &str) {
    let c = client_with(Some(token));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if c.get(url).send().is_ok_and(|r| r.status() != 401) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not accept a new token within 10 s");
}

/// Issues (once per address) a certificate of the shared CA for `addr`; returns the `serve`
/// flags that use it and the tokens file.
pub fn secure_flags(addr: &str) -> Vec<String> {
    secure_flags_in(&credentials().tls_dir, addr)
}

/// Like [`secure_flags`] with the CA of `tls_dir` (`causeway certs --out`; created there on
/// first use), e.g. another cluster's; the tokens file is the shared one.
pub fn secure_flags_in(tls_dir: &Path, addr: &str) -> Vec<String> {
    let creds = credentials();
    let stem = format!("node-{}", addr.replace(':', "_"));
    let cert = tls_dir.join(format!("{stem}.pem"));
    // One `causeway certs` at a time: parallel tests would otherwise race to create (and read
    // half-written) the shared CA.
    static ISSUING: Mutex<()> = Mutex::new(());
    let _issuing = ISSUING.lock().unwrap_or_else(|e| e.into_inner());
    if !cert.exists() {
        let out = Command::new(binary())
            .arg("certs")
            .arg("--out")
            .arg(tls_dir)
            .arg(addr)
            .output()
            .expect("running causeway certs");
        assert!(
            out.status.success(),
            "causeway certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    vec![
        "--tls-ca".into(),
        path(tls_dir.join("ca.pem")),
        "--tls-cert".into(),
        path(cert),
        "--tls-key".into(),
        path(tls_dir.join(format!("{stem}.key"))),
        "--tokens-file".into(),
        path(creds.tokens_file.clone()),
    ]
}

/// A blocking HTTP client with a bounded timeout that sends the admin token.
pub fn client() -> Client {
    client_with(Some(&credentials().admin_token))
}

/// A blocking HTTP client sending `token` (none: an anonymous client).
pub fn client_with(token: Option<&str>) -> Client {
    client_builder(token)
        .build()
        .expect("building the HTTP client")
}

/// A blocking HTTPS client that trusts the shared test CA and sends the admin token: secure
/// nodes off loopback serve only HTTPS.
pub fn https_client() -> Client {
    let pem = std::fs::read(credentials().tls_dir.join("ca.pem"))
        .expect("the test CA exists once a secure node was started");
    let ca = reqwest::Certificate::from_pem(&pem).expect("the test CA parses");
    client_builder(Some(&credentials().admin_token))
        .add_root_certificate(ca)
        .build()
        .expect("building the HTTPS client")
}

fn client_builder(token: Option<&str>) -> reqwest::blocking::ClientBuilder {
    // reqwest is built without a bundled crypto provider: use ring, as the nodes do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = Client::builder().timeout(Duration::from_secs(15));
    if let Some(t) = token {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("a header value"),
        );
        b = b.default_headers(h);
    }
    b
}

/// A `causeway-client` client of `nodes` (base URLs or host:port), tried in order, sending
/// `token` (none: anonymous).
pub fn library_client(nodes: &[String], token: Option<&str>) -> causeway_client::Client {
    let mut b = causeway_client::Client::builder()
        .nodes(nodes.iter().cloned())
        .timeout(Duration::from_secs(15));
    if let Some(t) = token {
        b = b.token(t);
    }
    b.build().expect("building the client")
}

/// A local cluster of `causeway serve` processes. Dropping it kills every node and removes its
/// data (kept, with the logs, when the test failed).
pub struct Cluster {
    pub addrs: Vec<String>,
    pub repl: usize,
    dir: PathBuf,
    /// Each node's `serve` flags besides `--listen`, `--data-dir`, `--instance-id` and its
    /// credentials.
    args: Vec<Vec<String>>,
    opts: Opts,
    /// False when the cluster runs `--insecure` (no certificates or tokens).
    pub secure: bool,
    /// Each node's `--grpc-listen` address, with [`Opts::grpc`].
    pub grpc: Vec<String>,
    nodes: Vec<Option<Child>>,
    /// The instance id each node's current process was started with.
    instances: Vec<String>,
    /// Processes started so far, for unique instance ids.
    spawned: usize,
}

/// How [`Cluster::start_with`] runs its nodes besides their flags.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Open-files limit (soft and hard) of every node, set through `prlimit`.
    pub nofile: Option<u64>,
    /// Where the nodes' data directories go (default: the cluster's test directory).
    pub data_root: Option<PathBuf>,
    /// Extra environment variables of every node.
    pub env: Vec<(String, String)>,
    /// Each node's address (default: a free loopback port each).
    pub addrs: Option<Vec<String>>,
    /// Per node, a command that runs the node's process (e.g. `ip netns exec NS`, from
    /// [`netns::Fabric::wrapper`]); nodes beyond the list run directly.
    pub wrappers: Vec<Vec<String>>,
    /// Serve the gRPC API too, each node on a fresh port ([`Cluster::grpc`]).
    pub grpc: bool,
    /// The `causeway certs` directory of a secure cluster's CA and certificates (default: the
    /// shared one of [`credentials`]).
    pub tls_dir: Option<PathBuf>,
}

impl Cluster {
    /// Starts `n` nodes with `repl` replicas per shard and extra `serve` flags, and waits until
    /// every node's own process answers ready on `/readyz`.
    /// Secure (TLS between peers, tokens for clients) unless `extra` holds `--insecure`.
    pub fn start(name: &str, n: usize, repl: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(name, n, repl, extra, Opts::default())
    }

    /// Like [`Cluster::start`], with the given [`Opts`].
    pub fn start_with(name: &str, n: usize, repl: usize, extra: &[&str], opts: Opts) -> Cluster {
        let addrs: Vec<String> = opts.addrs.clone().unwrap_or_else(|| {
            (0..n)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect()
        });
        assert_eq!(addrs.len(), n, "one address per node");
        let dir = std::env::temp_dir().join(format!(
            "causeway-e2e-{name}-{}-{}",
            std::process::id(),
            addrs[0].rsplit(':').next().unwrap_or("0")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let mut args = vec![
            "--view".to_string(),
            addrs.join(","),
            "--repl-factor".into(),
            repl.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let secure = !extra.contains(&"--insecure");
        let grpc: Vec<String> = match opts.grpc {
            true => (0..n)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            false => Vec::new(),
        };
        let mut args = vec![args; n];
        for (a, g) in args.iter_mut().zip(&grpc) {
            a.extend(["--grpc-listen".to_owned(), g.clone()]);
        }
        let mut c = Cluster {
            secure,
            grpc,
            addrs,
            repl,
            dir,
            args,
            opts,
            nodes: (0..n).map(|_| None).collect(),
            instances: vec![String::new(); n],
            spawned: 0,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_ready(i);
        }
        c
    }

    /// Node `i`'s base URL: HTTPS for a secure node off loopback (which refuses plaintext).
    pub fn url(&self, i: usize) -> String {
        let scheme = if self.https() { "https" } else { "http" };
        format!("{scheme}://{}", self.addrs[i])
    }

    /// True when the nodes serve clients only over HTTPS.
    fn https(&self) -> bool {
        self.secure && !self.addrs[0].starts_with("127.0.0.1:")
    }

    /// A client for this cluster's URLs (with the admin token).
    pub fn client(&self) -> Client {
        if self.https() {
            https_client()
        } else {
            client()
        }
    }

    /// Starts one more node on a fresh port with these `serve` flags (e.g. `--join ADDR` or
    /// `--await-join`) instead of the cluster's view, waits until it answers `/healthz` (it is
    /// ready only once a member admits it), and returns its index. It is as
    /// secure as the cluster.
    pub fn add_node(&mut self, args: &[&str]) -> usize {
        let i = self.addrs.len();
        self.addrs.push(format!("127.0.0.1:{}", free_port()));
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !self.secure {
            args.push("--insecure".into());
        }
        self.args.push(args);
        self.nodes.push(None);
        self.instances.push(String::new());
        self.spawn(i);
        self.wait_healthy(i);
        i
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{i}.log")))
            .expect("opening the node log");
        self.spawned += 1;
        self.instances[i] = format!("e2e-{}-{}", std::process::id(), self.spawned);
        let mut line: Vec<std::ffi::OsString> = self
            .opts
            .wrappers
            .get(i)
            .into_iter()
            .flatten()
            .map(Into::into)
            .collect();
        if let Some(n) = self.opts.nofile {
            line.extend(["prlimit".into(), format!("--nofile={n}:{n}").into()]);
        }
        line.push(binary().into());
        let mut cmd = Command::new(&line[0]);
        cmd.args(&line[1..]);

        let creds = if self.secure {
            match &self.opts.tls_dir {
                Some(dir) => secure_flags_in(dir, &self.addrs[i]),
                None => secure_flags(&self.addrs[i]),
            }
        } else {
            Vec::new()
        };
        let child = cmd
            .arg("serve")
            .args(["--listen", &self.addrs[i]])
            .args(["--instance-id", &self.instances[i]])
            .arg("--data-dir")
            .arg(
                self.opts
                    .data_root
                    .as_ref()
                    .unwrap_or(&self.dir)
                    .join(format!("node{i}")),
            )
            .args(&self.args[i])
            .args(&creds)
            .env("RUST_LOG", "info,fjall=warn,lsm_tree=warn")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting causeway serve");
        self.nodes[i] = Some(child);
    }

    /// The directory of the cluster's data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits (bounded) until node `i`'s current process answers `/healthz`: it is alive, not
    /// necessarily ready.
    pub fn wait_healthy(&self, i: usize) {
        self.wait_for(i, "healthz");
    }

    /// Waits (bounded) until node `i`'s current process answers ready on `/readyz`: it is in a
    /// view, its core has started and it serves keys.
    pub fn wait_ready(&self, i: usize) {
        self.wait_for(i, "readyz");
    }

    /// Waits until `/{probe}` of node `i` answers 200 naming this node's current instance id
    /// (another process on the port does not count).
    fn wait_for(&self, i: usize, probe: &str) {
        let c = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ours = c
                .get(format!("{}/{probe}", self.url(i)))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|j| j["instance"] == self.instances[i].as_str());
            if ours {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "node {i} ({}) did not answer {probe}; logs in {}",
            self.addrs[i],
            self.dir.display()
        );
    }

    /// `kill -9` of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its data directory and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].as_ref().map(Child::id)
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    /// Node `i`'s `serve` flags besides `--listen` and `--data-dir`, to change before a restart.
    pub fn args_mut(&mut self, i: usize) -> &mut Vec<String> {
        &mut self.args[i]
    }

    /// Starts node `i` again (after [`Cluster::kill`]) without waiting for it to be healthy.
    pub fn start_again(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits up to `within` for node `i`'s process to exit; its status, or `None` if it runs on.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.nodes[i].as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes[i] = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default()
    }

    /// Peak resident memory of node `i` so far in bytes (`VmHWM` in `/proc/PID/status`).
    pub fn peak_rss(&self, i: usize) -> u64 {
        let pid = self.pid(i).expect("node is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("reading the node's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/PID/status")
            * 1024
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.pid(i).expect("node is running");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }

    /// True while node `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!("node logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The causal-context token of a reply (empty if none).
pub fn context_of(r: &Response) -> String {
    r.headers()
        .get("x-causal-context")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The node that served a reply.
pub fn served_by(r: &Response) -> String {
    r.headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Merges causal-context tokens as a client of several sessions would.
pub fn merge(tokens: &[&str]) -> String {
    causeway::core::token::merge(tokens.iter().copied()).expect("tokens from the server decode")
}

/// The sibling values of a `multipart/mixed` body, in order.
pub fn multipart_values(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("multipart reply names its boundary");
    let delim = format!("--{boundary}");
    let text = body;
    let mut out = Vec::new();
    let mut parts = split_bytes(text, delim.as_bytes());
    parts.remove(0);
    for p in parts {
        if p.starts_with(b"--") {
            break;
        }
        let start = find(p, b"\r\n\r\n").expect("part headers end") + 4;
        let end = p.len() - 2;
        out.push(p[start..end].to_vec());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(mut hay: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(hay, delim) {
        out.push(&hay[..i]);
        hay = &hay[i + delim.len()..];
    }
    out.push(hay);
    out
}

/// Sends raw bytes over a fresh connection and returns the reply's status code (0 when the
/// connection closed without a status line).
/// The admin token is added as a header after the request line, so the request reaches the
/// handler on a secure node.
pub fn raw_status(addr: &str, request: &[u8], half_close: bool) -> u16 {
    use std::io::{Read, Write};
    let request = match request.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            let mut r = request[..i + 2].to_vec();
            r.extend_from_slice(
                format!("Authorization: Bearer {}\r\n", credentials().admin_token).as_bytes(),
            );
            r.extend_from_slice(&request[i + 2..]);
            r
        }
        None => request.to_vec(),
    };
    let request = request.as_slice();
    let mut s = std::net::TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("sending");
    if half_close {
        s.shutdown(std::net::Shutdown::Write).expect("half-closing");
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `len` incompressible (xorshift) bytes, distinct per `seed`: a value that fills memory, disks
/// and links as fast as it is written.
pub fn incompressible(seed: usize, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed as u64 + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
