//! The deployment files under `packaging/` checked against the real binary, so they cannot drift
//! from it: the Dockerfile builds what CI builds and runs unprivileged, its entrypoint serves,
//! the systemd unit passes `systemd-analyze verify`, the Kubernetes manifest parses and its
//! start-up command forms one cluster (and keeps it across restarts), and every metric the
//! Grafana dashboard queries is exported by a node. What cannot run here (a Docker engine, a
//! Kubernetes cluster, Grafana itself) is listed in docs/packaging.md.

use causeway_e2e::{Cluster, binary, client, free_port, served_by};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("causeway-pack-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// `PATH` with the binary under test first, as in the image (`/usr/local/bin/causeway`).
fn path_with_binary() -> String {
    let bin = binary();
    let dir = bin.parent().expect("the binary has a directory");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A shell process started from a packaging file (killed on drop).
struct Proc(Child);

impl Proc {
    /// Runs `sh ARGS` with only `env`, `HOME`, `RUST_LOG` and a `PATH` that finds the binary.
    fn sh(args: &[&str], env: &[(String, String)], log: &Path) -> Proc {
        let log = std::fs::File::create(log).expect("creating the log");
        let child = Command::new("sh")
            .args(args)
            .env_clear()
            .env("PATH", path_with_binary())
            .env("HOME", std::env::temp_dir())
            .env("RUST_LOG", "info,fjall=warn,lsm_tree=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sh");
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // `exec` made the shell the node: this kills the node itself.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` (bounded) until it returns `Some`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when `GET http://addr{path}` answers 2xx (`/healthz`: alive, `/readyz`: serving keys).
fn answers(addr: &str, path: &str) -> bool {
    client()
        .get(format!("http://{addr}{path}"))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

fn cluster_json(addr: &str) -> Option<Value> {
    client()
        .get(format!("http://{addr}/v1/cluster?scope=local"))
        .send()
        .ok()?
        .json()
        .ok()
}

/// The environment variables `causeway serve` reads (its `[env: NAME=]` help lines).
fn serve_env_names() -> BTreeSet<String> {
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("running causeway serve --help");
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    help.split("[env: ")
        .skip(1)
        .filter_map(|s| s.split('=').next().map(str::to_owned))
        .collect()
}

/// The Dockerfile's instructions as (keyword, arguments) with continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("packaging/Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, rest) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

/// The command the image builds the binary with: the release build of the `causeway` package.
/// `ci/test` tests the release binary that `cargo test --workspace --release` builds from the
/// same sources and profile; the workspace build enables a few more features in dependencies
/// (the e2e tests' blocking reqwest and tonic client channel), none of them on the server's paths.
const CI_BUILD: &str = "cargo build --release -p causeway --bin causeway";

#[test]
fn dockerfile_builds_the_ci_binary_and_runs_it_unprivileged() {
    assert!(
        read("ci/test")
            .lines()
            .any(|l| l.trim().starts_with("cargo test --workspace --release")),
        "ci/test no longer tests the release build: update the Dockerfile and this test"
    );
    let ins = dockerfile();
    let stages: Vec<usize> = (0..ins.len()).filter(|&i| ins[i].0 == "FROM").collect();
    assert!(stages.len() >= 2, "multi-stage: a builder and a runtime");
    let (build, runtime) = (&ins[stages[0]..stages[1]], &ins[*stages.last().unwrap()..]);
    assert!(build[0].1.starts_with("rust:"), "builder: {}", build[0].1);
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.ends_with(CI_BUILD)),
        "the build stage runs `{CI_BUILD}`"
    );
    assert!(
        runtime[0].1.starts_with("debian:") && runtime[0].1.ends_with("-slim"),
        "small runtime image: {}",
        runtime[0].1
    );
    let (builder, stage) = build[0]
        .1
        .split_once(" AS ")
        .expect("the build stage is named");
    let builder_release = builder.rsplit('-').next().unwrap_or_default();
    let minor = |v: &str| -> u32 {
        v.split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("a Rust version: {v}"))
    };
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("the workspace's rust-version");
    let image_rust = builder
        .trim_start_matches("rust:")
        .split('-')
        .next()
        .unwrap_or_default();
    assert!(
        minor(image_rust) >= minor(&msrv),
        "the builder's Rust ({image_rust}) is at least the workspace's rust-version ({msrv})"
    );
    assert!(
        runtime[0].1.contains(builder_release),
        "the runtime's Debian release ({}) is the builder's ({builder_release}): same glibc",
        runtime[0].1
    );
    let get = |key: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let user = get("USER");
    let user = user.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "the runtime user is not root: {user}"
    );
    assert!(
        get("COPY")
            .iter()
            .any(|c| c.contains(&format!("--from={stage} /src/target/release/causeway"))),
        "the runtime copies the release binary"
    );

    let env_names = serve_env_names();
    let mut data_dir = None;
    for env in get("ENV") {
        let (k, v) = env.split_once('=').expect("ENV KEY=VALUE");
        assert!(
            env_names.contains(k),
            "ENV {k} is not a `causeway serve` setting"
        );
        if k == "CAUSEWAY_DATA_DIR" {
            data_dir = Some(v.to_owned());
        }
    }
    let data_dir = data_dir.expect("the image sets CAUSEWAY_DATA_DIR");
    assert!(
        get("VOLUME").iter().any(|v| v.contains(&data_dir)),
        "the data directory {data_dir} is a volume"
    );
    assert_eq!(
        get("EXPOSE"),
        ["8080"],
        "the port the entrypoint listens on"
    );
    let health = get("HEALTHCHECK");
    assert!(
        health.len() == 1 && health[0].contains("/readyz"),
        "a health check on /readyz: {health:?}"
    );
    assert!(
        get("ENTRYPOINT")
            .iter()
            .any(|e| e.contains("causeway-entrypoint"))
            && read("packaging/entrypoint.sh").contains("exec causeway serve \"$@\""),
        "the entrypoint is `causeway serve`"
    );
    let ignore = read("packaging/Dockerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves out target/"
    );
}

#[test]
fn container_entrypoint_listens_everywhere_and_advertises_the_hostname() {
    let dir = scratch("entrypoint");
    let port = free_port();
    let entrypoint = repo().join("packaging/entrypoint.sh");
    let node = Proc::sh(
        &[entrypoint.to_str().expect("UTF-8 path")],
        &[
            // The image's listen address but on a free port; no advertise address given.
            ("CAUSEWAY_LISTEN".into(), format!("0.0.0.0:{port}")),
            (
                "CAUSEWAY_DATA_DIR".into(),
                dir.join("data").display().to_string(),
            ),
            // Off loopback a node needs TLS and tokens or this opt-out (docs/security.md); a
            // build without that rule ignores the variable.
            ("CAUSEWAY_INSECURE".into(), "true".into()),
        ],
        &dir.join("node.log"),
    );
    let addr = format!("127.0.0.1:{port}");
    // The image's health check.
    eventually("the entrypoint's node to be ready", || {
        answers(&addr, "/readyz").then_some(())
    });
    let hostname = String::from_utf8(
        Command::new("hostname")
            .output()
            .expect("running hostname")
            .stdout,
    )
    .expect("hostname is UTF-8");
    let r = client()
        .put(format!("http://{addr}/v1/kv/k"))
        .body("v")
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 204);
    assert_eq!(served_by(&r), format!("{}:{port}", hostname.trim()));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("packaging/causeway.service");
    for line in [
        "User=causeway",
        "StateDirectory=causeway",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/causeway",
        "ExecStart=/usr/local/bin/causeway serve",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line}");
    }
    assert!(unit.lines().any(|l| l.starts_with("LimitNOFILE=")));
    let env_names = serve_env_names();
    for env in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        let name = env.split('=').next().unwrap_or_default();
        assert!(
            env_names.contains(name),
            "{name} is not a `causeway serve` setting"
        );
    }
    if Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (Debian package `systemd`); the unit was \
             not verified"
        );
        return;
    }
    // verify checks that ExecStart is executable: point it at the binary under test.
    let dir = scratch("systemd");
    let path = dir.join("causeway.service");
    let local = unit.replace(
        "ExecStart=/usr/local/bin/causeway",
        &format!("ExecStart={}", binary().display()),
    );
    std::fs::write(&path, local).expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("running systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and bad values (it ignores them), so any complaint about
    // this unit fails; complaints about the host's own units (none here) are not ours.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("causeway.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Kubernetes manifest's documents, parsed by PyYAML (installed with pip if missing).
fn k8s_documents() -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let run = || {
        Command::new("python3")
            .args(["-c", script])
            .arg(repo().join("packaging/k8s/statefulset.yaml"))
            .output()
            .expect("running python3")
    };
    let mut out = run();
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No module named") {
        eprintln!("installing PyYAML (pip) to parse the manifest");
        let pip = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "pyyaml"])
            .status()
            .expect("running pip");
        assert!(pip.success(), "pip install pyyaml failed");
        out = run();
    }
    assert!(
        out.status.success(),
        "the manifest does not parse as YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

#[test]
fn statefulset_parses_and_its_start_command_forms_and_keeps_one_cluster() {
    let docs = k8s_documents();
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"] == k);
    let sts = kind("StatefulSet").next().expect("a StatefulSet");
    let name = sts["metadata"]["name"].as_str().expect("named");
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 3);
    let headless = kind("Service")
        .find(|s| s["metadata"]["name"] == spec["serviceName"])
        .expect("the StatefulSet's service");
    assert_eq!(headless["spec"]["clusterIP"], "None", "a headless service");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "a joining pod is reachable by name before it is ready"
    );
    let claims = spec["volumeClaimTemplates"]
        .as_array()
        .expect("PVC per pod");
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let mount = c["volumeMounts"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["name"] == claims[0]["metadata"]["name"])
        })
        .expect("the claim is mounted");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // The container's environment, and the seed: pod 0's advertised name.
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let value = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the container sets {k}"))
    };
    assert_eq!(
        value("SEED_MEMBER"),
        value("CAUSEWAY_ADVERTISE").replace("$(POD_NAME)", &format!("{name}-0")),
        "every pod joins through pod 0's stable DNS name"
    );
    assert_eq!(
        value("CAUSEWAY_DATA_DIR"),
        mount["mountPath"].as_str().unwrap()
    );
    let env_names = serve_env_names();
    for (k, _) in env.iter().filter(|(k, _)| k.starts_with("CAUSEWAY_")) {
        assert!(
            env_names.contains(k),
            "{k} is not a `causeway serve` setting"
        );
    }
    let command: Vec<&str> = c["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command[..2], ["/bin/sh", "-c"]);

    // Run the pods' command on loopback: DNS names become 127.0.0.1 ports, the rest is as is.
    let dir = scratch("k8s");
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let pod_env = |i: usize| -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "SEED_MEMBER" => addrs[0].clone(),
                    "CAUSEWAY_ADVERTISE" | "CAUSEWAY_LISTEN" => addrs[i].clone(),
                    "CAUSEWAY_DATA_DIR" => dir.join(format!("pod{i}")).display().to_string(),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect()
    };
    let start = |i: usize, run: usize| {
        let p = Proc::sh(
            &command[1..],
            &pod_env(i),
            &dir.join(format!("pod{i}-run{run}.log")),
        );
        eventually(&format!("pod {i} to be alive"), || {
            answers(&addrs[i], "/healthz").then_some(())
        });
        p
    };
    let one_shard_of_three = |i: usize| {
        eventually(&format!("pod {i} to see a 3-node view"), || {
            let v = cluster_json(&addrs[i])?;
            let shards = v["shards"].as_array()?;
            let replicas: BTreeSet<&str> = shards
                .first()?
                .get("replicas")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            (shards.len() == 1 && replicas == addrs.iter().map(String::as_str).collect())
                .then_some(())
        });
        // The readiness probe passes once the pod is a member.
        eventually(&format!("pod {i} to be ready"), || {
            answers(&addrs[i], "/readyz").then_some(())
        })
    };
    let mut pods: Vec<Option<Proc>> = (0..3).map(|i| Some(start(i, 0))).collect();
    for i in 0..3 {
        one_shard_of_three(i);
    }
    let http = client();
    let r = http
        .put(format!("http://{}/v1/kv/k?w=all", addrs[2]))
        .body("v")
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 204);

    // Restarts run the same command on the same volume: pod 0 (whose --view names only itself)
    // and a joined pod come back as members of the same cluster, with the data.
    for i in [0, 1] {
        pods[i] = None;
        pods[i] = Some(start(i, 1));
        one_shard_of_three(i);
    }
    let r = http
        .get(format!("http://{}/v1/kv/k", addrs[0]))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().expect("body"), "v");
    drop(pods);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `causeway_*` metric names a PromQL expression queries.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("causeway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

#[test]
fn grafana_dashboard_queries_only_metrics_a_node_exports() {
    let dash: Value =
        serde_json::from_str(&read("packaging/grafana/causeway.json")).expect("dashboard JSON");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "unique ids"
        );
        assert!(p["gridPos"]["w"].is_u64() && p["gridPos"]["h"].is_u64());
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has a query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["type"], "prometheus");
            metric_names(t["expr"].as_str().expect("PromQL expr"), &mut queried);
        }
    }
    for v in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["definition"].as_str() {
            metric_names(q, &mut queried);
        }
    }
    assert!(queried.len() >= 10, "the dashboard covers the exporter");

    // Two shards of two replicas: requests are proxied and replicated, so every family exists.
    let c = Cluster::start("grafana", 4, 2, &[]);
    let http = client();
    for i in 0..20 {
        let url = format!("{}/v1/kv/key{i}", c.url(0));
        assert_eq!(http.put(&url).body("v").send().expect("PUT").status(), 204);
        assert_eq!(http.get(&url).send().expect("GET").status(), 200);
    }
    // The driver exports its gauges every second.
    std::thread::sleep(Duration::from_millis(1500));
    let mut exported = BTreeSet::new();
    for i in 0..c.addrs.len() {
        let text = http
            .get(format!("{}/metrics", c.url(i)))
            .send()
            .and_then(|r| r.text())
            .expect("GET /metrics");
        exported.extend(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned)),
        );
    }
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node exports: {missing:?}"
    );
}
