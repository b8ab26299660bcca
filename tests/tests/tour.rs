//! The README's five-minute tour, run as written: the test extracts the tour's shell block from
//! `README.md`, starts a real `causeway cluster`, runs the block's commands in order in one bash
//! process (`set -euo pipefail`) and checks every expectation line the README shows.
//!
//! Tour format (what a README editor has to keep):
//! - the block is the first ```` ```sh ```` block after the `## Five-minute tour` heading;
//! - a line starting with `#   ` (hash, three spaces) is an expectation of the command above it:
//!   some line of that command's output (stdout and stderr) must match it, where `…` stands for
//!   any text; other comment lines and blank lines are prose;
//! - a command continues onto the next line after a trailing `\`;
//! - the cluster is the README's `cargo run --release -- cluster` on 127.0.0.1:8080–8082: the
//!   test runs it on three free consecutive ports instead and rewrites those addresses, and runs
//!   `cargo run --release --` as the built binary. Commands run in the cluster's working
//!   directory, so relative paths (`./causeway-data`, `./.causeway-session`) are the cluster's.

use causeway_e2e::{binary, free_ports};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The README's ports, in node order.
const README_PORTS: [u16; 3] = [8080, 8081, 8082];

/// Longest the whole tour may run.
const TOUR_TIMEOUT: Duration = Duration::from_secs(120);

/// One command of the tour and the output lines it promises.
#[derive(Debug)]
struct Step {
    command: String,
    expect: Vec<String>,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tour's shell block.
fn tour_block(readme: &str) -> Vec<String> {
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Five-minute tour"))
        .skip_while(|l| l.trim() != "```sh");
    assert!(
        lines.next().is_some(),
        "README.md has no ```sh block after its `## Five-minute tour` heading"
    );
    let block: Vec<String> = lines
        .take_while(|l| l.trim() != "```")
        .map(str::to_owned)
        .collect();
    assert!(!block.is_empty(), "the tour block is empty");
    block
}

fn steps(block: &[String]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in block {
        if continued {
            let last = steps.last_mut().expect("a continued command");
            last.command.push('\n');
            last.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(e) = line.strip_prefix("#   ") {
            steps
                .last_mut()
                .unwrap_or_else(|| panic!("expectation {e:?} before any command"))
                .expect
                .push(e.trim().to_owned());
        } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            steps.push(Step {
                command: line.clone(),
                expect: Vec::new(),
            });
            continued = line.ends_with('\\');
        }
    }
    steps
}

/// Rewrites the README's addresses to the test cluster's and `cargo run` to the binary.
fn localise(text: &str, ports: &[u16]) -> String {
    let mut out = text.replace(
        "cargo run --release --",
        &format!("'{}'", binary().display()),
    );
    for (from, to) in README_PORTS.iter().zip(ports) {
        out = out.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
    }
    out
}

/// Whether `line` matches `pattern`, where `…` in the pattern stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut rest = line;
    pattern.split('…').all(|piece| match rest.find(piece) {
        Some(at) => {
            rest = &rest[at + piece.len()..];
            true
        }
        None => false,
    })
}

/// `causeway cluster` as a child process; dropping it stops the cluster with SIGTERM (so it stops
/// its nodes) and kills it if it has not exited within 15 s.
struct LocalCluster {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl LocalCluster {
    fn start(dir: &Path, base_port: u16) -> LocalCluster {
        let mut child = Command::new(binary())
            .args(["cluster", "--base-port", &base_port.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting causeway cluster");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().expect("cluster output");
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let c = LocalCluster { child, output };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !c.output().contains("Ctrl-C") {
            assert!(
                Instant::now() < deadline,
                "causeway cluster did not report its nodes up within 60 s:\n{}",
                c.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn output(&self) -> String {
        self.output.lock().expect("cluster output").clone()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Marks the end of step `i`'s output in the script's output.
fn marker(i: usize) -> String {
    format!("@@tour-step-{i}-done")
}

/// Runs the steps in one bash process; returns its exit status and its output (stdout and
/// stderr, in order) split per step (the last part is what a failing step printed).
fn run(steps: &[Step], ports: &[u16], dir: &Path) -> (bool, Vec<String>) {
    let mut script = String::from("set -euo pipefail\nexec 2>&1\n");
    for (i, s) in steps.iter().enumerate() {
        script.push_str(&localise(&s.command, ports));
        script.push_str(&format!("\nprintf '\\n%s\\n' '{}'\n", marker(i)));
    }
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running bash");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + TOUR_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for bash") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("waiting for bash");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().expect("reading the tour's output");
    let mut parts = Vec::new();
    let mut rest = out.as_str();
    for i in 0..steps.len() {
        match rest.split_once(&marker(i)) {
            Some((part, after)) => {
                parts.push(part.to_owned());
                rest = after;
            }
            None => break,
        }
    }
    parts.push(rest.to_owned());
    (status.success(), parts)
}

fn scratch_dir(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("causeway-e2e-tour-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the tour directory");
    dir
}

#[test]
fn readme_tour_runs_as_written() {
    let steps = steps(&tour_block(&readme()));
    assert!(
        steps.iter().filter(|s| !s.expect.is_empty()).count() >= 10,
        "the tour states too few expectations to test anything: {steps:#?}"
    );
    let ports = free_ports(README_PORTS.len());
    let dir = scratch_dir(ports[0]);
    let cluster = LocalCluster::start(&dir, ports[0]);
    let (ok, parts) = run(&steps, &ports, &dir);
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let Some(out) = parts.get(i).filter(|_| i + 1 < parts.len()) else {
            failures.push(format!(
                "step {i} did not complete (bash exited {}):\n$ {}\n{}",
                if ok { "0" } else { "non-zero" },
                localise(&step.command, &ports),
                parts.last().map(String::as_str).unwrap_or_default()
            ));
            break;
        };
        for e in &step.expect {
            let e = localise(e, &ports);
            if out.lines().any(|l| matches(&e, l.trim_end_matches('\r'))) {
                continue;
            }
            failures.push(format!(
                "step {i} printed no line matching {e:?}:\n$ {}\n{out}",
                localise(&step.command, &ports)
            ));
        }
    }
    let cluster_log = cluster.output();
    drop(cluster);
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "the README tour does not run as written ({} in {}):\n{}\n-- causeway cluster output:\n{cluster_log}",
        failures.len(),
        dir.display(),
        failures.join("\n\n")
    );
}

#[test]
fn expectation_patterns() {
    assert!(matches(
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 204 No Content"
    ));
    assert!(matches("x-causal-context: …", "x-causal-context: Afyv6w"));
    assert!(matches(
        r#"{"entries":[{"key":"fruit",…}],"next":"…"}"#,
        r#"{"entries":[{"key":"fruit","values":["Y2hlcnJ5"]}],"next":"ZnJ1aXQ"}"#
    ));
    assert!(!matches("HTTP/1.1 204 No Content", "HTTP/1.1 200 OK"));
    assert!(!matches(r#"{"key":"fruit",…}"#, r#"{"key":"greeting"}"#));
    let s = steps(&[
        "# prose".into(),
        "curl a \\".into(),
        "  b".into(),
        "#   out".into(),
        "".into(),
        "echo c".into(),
    ]);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].command, "curl a \\\n  b");
    assert_eq!(s[0].expect, ["out"]);
    assert!(s[1].expect.is_empty());
}
