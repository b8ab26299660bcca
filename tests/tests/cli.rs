//! The `causeway` command line as a user meets it: `cluster` fails loudly when its nodes cannot
//! start and restarts one that dies; client options live on client commands only; `--node`
//! takes host:port; `put KEY -` reads stdin; `get` shows siblings unambiguously; `status`
//! summarises; `put --ttl` writes a value that expires and `get --json` shows each sibling's
//! value, dot, expiry and tombstone flag with the context; logs carry no colour codes when stderr is not a terminal, and `cluster --log`
//! reaches the nodes.

use causeway_e2e::{Cluster, binary, client, free_port, free_ports, run_cli};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first of `n` free consecutive ports.
fn consecutive_ports(n: usize) -> u16 {
    free_ports(n)[0]
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("causeway-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A running `causeway cluster` whose stdout and stderr are collected; SIGTERM (then kill) on
/// drop, so its nodes stop with it.
struct Launched {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn collect(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut b = b.lock().expect("output buffer");
            b.push_str(&line);
            b.push('\n');
        }
    });
    buf
}

impl Launched {
    fn start(args: &[&str]) -> Launched {
        let mut child = Command::new(binary())
            .arg("cluster")
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting causeway cluster");
        let out = collect(child.stdout.take().expect("piped"));
        let err = collect(child.stderr.take().expect("piped"));
        Launched { child, out, err }
    }

    fn stdout(&self) -> String {
        self.out.lock().expect("stdout").clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().expect("stderr").clone()
    }

    /// Waits until `check(stdout, stderr)` holds or the process exits; panics after `limit`.
    fn wait_for(&mut self, limit: Duration, what: &str, check: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if check(&self.stdout(), &self.stderr()) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                if check(&self.stdout(), &self.stderr()) {
                    return;
                }
                panic!(
                    "cluster exited ({s}) before {what}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {limit:?} waiting for {what}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    /// Waits (bounded) for the process to exit.
    fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(200));
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "cluster still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.exit_within(Duration::from_secs(20))
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Someone else's server: answers every request with 200 and a health-like JSON body.
fn impostor(port: u16) -> TcpListener {
    let l = TcpListener::bind(("127.0.0.1", port)).expect("binding the impostor");
    let accept = l.try_clone().expect("clone");
    std::thread::spawn(move || {
        for mut s in accept.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = br#"{"status":"ok","ready":true}"#;
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = s.write_all(body);
        }
    });
    l
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn cluster_fails_when_another_server_holds_its_ports() {
    let base = consecutive_ports(2);
    let _held = [impostor(base), impostor(base + 1)];
    let dir = scratch("taken");
    let mut c = Launched::start(&[
        "--nodes",
        "2",
        "--base-port",
        &base.to_string(),
        "--data",
        dir.to_str().expect("utf-8 path"),
    ]);
    let status = c.exit_within(Duration::from_secs(20));
    assert!(!status.success(), "exit status {status}");
    let err = c.stderr();
    assert!(
        err.contains(&format!("127.0.0.1:{base}")) && err.contains("another process"),
        "the message names the address and the cause: {err}"
    );
    assert!(
        !c.stdout().contains("Press Ctrl-C"),
        "no success banner: {}",
        c.stdout()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cluster_stops_the_nodes_it_started_when_one_cannot_start() {
    let base = consecutive_ports(3);
    let dir = scratch("broken");
    // Node 1's data directory is a file: that node cannot open its storage.
    std::fs::write(dir.join("node1"), b"not a directory").expect("writing");
    let mut c = Launched::start(&[
        "--nodes",
        "3",
        "--base-port",
        &base.to_string(),
        "--data",
        dir.to_str().expect("utf-8 path"),
    ]);
    let status = c.exit_within(Duration::from_secs(30));
    assert!(!status.success(), "exit status {status}");
    let err = c.stderr();
    assert!(
        err.contains(&format!("node 127.0.0.1:{} exited", base + 1)),
        "names the node that failed: {err}"
    );
    assert!(!c.stdout().contains("Press Ctrl-C"), "{}", c.stdout());
    for p in [base, base + 2] {
        assert!(!answers(p), "node on port {p} was left running");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The pid the banner printed for `addr`.
fn banner_pid(stdout: &str, addr: &str) -> Option<u32> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("http://{addr} ")))?;
    line.split("(pid ")
        .nth(1)?
        .trim_end_matches(')')
        .parse()
        .ok()
}

#[test]
fn cluster_restarts_a_node_that_dies_and_passes_its_log_options() {
    let base = consecutive_ports(2);
    let dir = scratch("restart");
    let mut c = Launched::start(&[
        "--nodes",
        "2",
        "--base-port",
        &base.to_string(),
        "--data",
        dir.to_str().expect("utf-8 path"),
        "--log",
        "info,fjall=warn,lsm_tree=warn",
        "--log-format",
        "json",
    ]);
    c.wait_for(Duration::from_secs(60), "the banner", |out, _| {
        out.contains("Press Ctrl-C")
    });
    // `--log` and `--log-format` reached the nodes: their info lines, as JSON, on stderr.
    let err = c.stderr();
    let serving: Vec<Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["fields"]["message"] == "serving")
        .collect();
    assert_eq!(serving.len(), 2, "each node logs `serving` as JSON: {err}");

    let addr = format!("127.0.0.1:{}", base + 1);
    let http = client();
    let instance_of = |want_ready: bool| -> Option<String> {
        let r = http.get(format!("http://{addr}/readyz")).send().ok()?;
        let j: Value = r.json().ok()?;
        (j["ready"] == want_ready).then(|| j["instance"].as_str().map(str::to_owned))?
    };
    let before = instance_of(true).expect("node 1 is ready");
    let pid = banner_pid(&c.stdout(), &addr).expect("the banner names node 1's pid");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    c.wait_for(Duration::from_secs(30), "the restart", |_, err| {
        err.contains(&format!("node {addr} exited"))
            && err.contains(&format!("node {addr} is ready again"))
    });
    let after = instance_of(true).expect("the restarted node is ready");
    assert_ne!(after, before, "a new process serves node 1");
    assert!(c.stderr().contains("restart 1 of 3"), "{}", c.stderr());

    let status = c.terminate();
    assert!(status.success(), "a stopped cluster exits 0: {status}");
    for p in [base, base + 1] {
        assert!(!answers(p), "node on port {p} outlived the cluster");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn client_options_live_on_client_commands_only() {
    for cmd in ["serve", "cluster", "bench"] {
        let out = run_cli(&[cmd, "--help"], b"");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd} --help");
        for flag in ["--node <", "--session <"] {
            assert!(
                !help.contains(flag),
                "`{cmd} --help` offers {flag}:\n{help}"
            );
        }
    }
    for cmd in ["get", "put", "delete", "list", "status"] {
        let out = run_cli(&[cmd, "--help"], b"");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--node <") && help.contains("--session <"),
            "{cmd}:\n{help}"
        );
    }
}

#[test]
fn client_commands_read_stdin_show_siblings_and_summarise() {
    let c = Cluster::start("cli-client", 1, 1, &[]);
    let dir = scratch("client");
    let session = dir.join("session");
    let session = session.to_str().expect("utf-8 path");
    let node = c.addrs[0].as_str();
    let cli = |args: &[&str], stdin: &[u8]| {
        let mut all = args.to_vec();
        all.extend(["--node", node, "--session", session]);
        let out = run_cli(&all, stdin);
        assert!(
            out.status.success(),
            "causeway {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };

    // `put KEY -` takes the value from stdin, bytes as they are; `--node` is host:port.
    let value = b"line one\nline two\x00\xffend";
    assert_eq!(cli(&["put", "piped", "-"], value), b"ok\n");
    let mut want = value.to_vec();
    want.push(b'\n');
    assert_eq!(cli(&["get", "piped"], b""), want);

    // Two blind writes are siblings: counted and separated in text, both in --json.
    let http = client();
    for v in ["left", "right"] {
        let r = http
            .put(format!("{}/v1/kv/both", c.url(0)))
            .body(v)
            .send()
            .expect("put");
        assert_eq!(r.status(), 204);
    }
    let text = String::from_utf8(cli(&["get", "both"], b"")).expect("utf-8");
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("2 siblings"), "{text}");
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        (lines[1], lines[3]),
        ("--- sibling 1 of 2", "--- sibling 2 of 2")
    );
    let mut values = vec![lines.remove(2), lines.remove(3)];
    values.sort();
    assert_eq!(values, ["left", "right"]);
    let j: Value = serde_json::from_slice(&cli(&["get", "both", "--json"], b"")).expect("json");
    assert_eq!(j["values"].as_array().map(Vec::len), Some(2), "{j}");

    // `status` summarises; `status --json` is the raw form.
    let summary = String::from_utf8(cli(&["status"], b"")).expect("utf-8");
    for want in [
        "members:",
        &format!("{node}  shard 0  up"),
        "shards:",
        "handoff:",
        "anti-entropy:",
    ] {
        assert!(summary.contains(want), "missing {want:?}:\n{summary}");
    }
    let raw: Value = serde_json::from_slice(&cli(&["status", "--json"], b"")).expect("json");
    assert_eq!(raw["node"], node, "{raw}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn put_ttl_expires_and_get_json_details_every_sibling() {
    let c = Cluster::start("cli-ttl", 1, 1, &[]);
    let dir = scratch("ttl");
    let session = dir.join("session");
    let session = session.to_str().expect("utf-8 path");
    let node = c.addrs[0].as_str();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--node", node, "--session", session]);
        run_cli(&all, b"")
    };
    let json = |key: &str| -> Value {
        let out = cli(&["get", key, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros() as u64
    };

    // `put --ttl` writes a value whose sibling carries its expiry, ~ttl after the write.
    let before = now_us();
    let out = cli(&["put", "brief", "short-lived", "--ttl", "2", "--w", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json("brief");
    let sib = &j["siblings"][0];
    assert_eq!(sib["value"], "c2hvcnQtbGl2ZWQ=", "{j}");
    assert_eq!(sib["tombstone"], false, "{j}");
    assert!(sib["dot"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
    let expires = sib["expires_us"].as_u64().expect("an expiry");
    assert!(
        expires >= before + 1_000_000 && expires <= now_us() + 3_000_000,
        "expiry {expires} not ~2 s after {before}: {j}"
    );
    assert!(j["context"].as_str().is_some_and(|t| !t.is_empty()), "{j}");
    // A plain put has no expiry; a delete shows as a tombstone.
    assert!(cli(&["put", "kept", "v"]).status.success());
    assert_eq!(json("kept")["siblings"][0]["expires_us"], Value::Null);
    assert!(cli(&["delete", "kept"]).status.success());
    let gone = json("kept");
    assert_eq!(gone["deleted"], true, "{gone}");
    assert_eq!(gone["siblings"][0]["tombstone"], true, "{gone}");
    // The value is gone once its TTL passed.
    std::thread::sleep(Duration::from_millis(2_500));
    let out = cli(&["get", "brief"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(json("brief")["values"], serde_json::json!([]));
    // A TTL the server refuses fails the command with its error.
    let out = cli(&["put", "bad", "v", "--ttl", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ttl"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let port = free_port();
    let dir = scratch("plain-logs");
    let log = dir.join("serve.log");
    let mut child = Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--log", "info"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve");
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "serve never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("serving"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in a log file:\n{text:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
