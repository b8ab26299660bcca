//! The web UI as a person sees it: headless Chromium loads `/ui/` from a running cluster, runs
//! its script, and the rendered page must show the nodes, the shards and the keys (siblings
//! flagged) — and a click on Delete must delete. Chromium comes from Debian's `chromium` package,
//! which `ci/test` installs.

use causeway_e2e::{Cluster, client, free_port};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

fn chromium() -> String {
    let path = std::env::var("CAUSEWAY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "the UI test needs Chromium at {path} (apt-get install chromium; ci/test does it)"
    );
    path
}

/// The DOM of `url` after its scripts ran.
fn rendered(url: &str, profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ui_shows_nodes_shards_and_keys() {
    let c = Cluster::start("ui", 4, 2, &[]);
    let http = client();
    for key in ["apple", "banana"] {
        let r = http
            .put(format!("{}/v1/kv/{key}", c.url(0)))
            .body("fruit")
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    for (node, value) in [(0, "one"), (1, "two")] {
        let r = http
            .put(format!("{}/v1/kv/clash", c.url(node)))
            .body(value)
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let page = http.get(format!("{}/ui", c.url(2))).send().unwrap();
    assert_eq!(page.status(), 200, "/ui redirects to the page");
    let profile = std::env::temp_dir().join(format!("causeway-ui-{}", std::process::id()));
    // Without a token the page loads but its API calls are refused: it asks for one.
    let anonymous = rendered(&format!("{}/ui/", c.url(2)), &profile);
    assert!(
        anonymous.contains("needs a token") && !anonymous.contains("apple"),
        "the page asks for a token and shows no data"
    );
    // The token passed once in the fragment is kept in the tab's sessionStorage.
    let token = &causeway_e2e::credentials().admin_token;
    let dom = rendered(&format!("{}/ui/#token={token}", c.url(2)), &profile);
    let _ = std::fs::remove_dir_all(&profile);
    for a in &c.addrs {
        assert!(dom.contains(a.as_str()), "the nodes table lists {a}");
    }
    assert!(dom.contains(&format!("{} (this node)", c.addrs[2])));
    assert!(
        dom.contains("epoch 1, 64 partitions, replication factor 2"),
        "the shard panel rendered"
    );
    assert!(
        dom.contains(">settled<"),
        "the handoff column shows each node's state"
    );
    for key in ["apple", "banana", "clash (2 siblings)"] {
        assert!(dom.contains(key), "the key browser lists {key}");
    }
    // Liveness is rendered per node ("up" or "unreachable"); which one depends on timing.
    assert!(dom.contains(">up<"), "the liveness column rendered");
    // This node's load and anti-entropy progress.
    // Every node's load, as that node reported it: nodes 0 and 1 routed the writes above.
    for (node, at_least) in [(0, 3), (1, 1), (2, 0), (3, 0)] {
        let row = load_row(&dom, &c.addrs[node]);
        assert_eq!(row.len(), 8, "node, keys and six load figures: {row:?}");
        let requests: u64 = row[2].parse().expect("a request count");
        assert!(
            requests >= at_least,
            "{} routed at least {at_least} requests: {row:?}",
            c.addrs[node]
        );
        assert!(row[5].ends_with(" B"), "replication in flight in bytes");
    }
    for row in [
        "live keys",
        "forwarded requests",
        "anti-entropy exchanges",
        "keys repaired by anti-entropy",
    ] {
        assert!(dom.contains(row), "the node panel shows {row}");
    }
}

/// The cells of `node`'s row in the rendered Load table.
fn load_row(dom: &str, node: &str) -> Vec<String> {
    let table = dom
        .split_once(r#"<table id="load">"#)
        .and_then(|(_, t)| t.split_once("</table>"))
        .expect("the page has a Load table")
        .0;
    let row = table
        .split("<tr>")
        .find(|r| r.contains(&format!(">{node}</td>")))
        .unwrap_or_else(|| panic!("the Load table has a row for {node}: {table}"));
    row.split("</td>")
        .filter_map(|c| c.rsplit_once('>').map(|(_, v)| v.to_owned()))
        .filter(|c| !c.is_empty())
        .collect()
}

/// A headless Chromium driven over the DevTools protocol (a WebSocket to one page target), for
/// tests that click: `--dump-dom` only renders. Killed on drop.
struct Browser {
    child: std::process::Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium and opens `url` in a new page.
    ///
    /// Chromium picks its own DevTools port (`--remote-debugging-port=0`) and names it on stderr
    /// ("DevTools listening on ws://127.0.0.1:PORT/…"): a port chosen here could be taken by a
    /// node another test starts before Chromium binds it.
    fn open(url: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "causeway-ui-cdp-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium");
        let (lines, line) = mpsc::channel();
        let stderr = child.stderr.take().expect("chromium's stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(l).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut said = Vec::new();
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line.recv_timeout(left) {
                Ok(l) => match l.strip_prefix("DevTools listening on ws://127.0.0.1:") {
                    Some(rest) => {
                        break rest
                            .split_once('/')
                            .and_then(|(p, _)| p.parse::<u16>().ok())
                            .expect("a DevTools port");
                    }
                    None => said.push(l),
                },
                Err(e) => panic!(
                    "Chromium's DevTools did not come up ({e}; exit: {:?}); it said:\n{}",
                    child.try_wait(),
                    said.join("\n")
                ),
            }
        };
        let target: Value = client()
            .put(format!("http://127.0.0.1:{port}/json/new?{url}"))
            .send()
            .and_then(|r| r.error_for_status())
            .expect("DevTools opens a page")
            .json()
            .expect("DevTools target JSON");
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("page WebSocket URL");
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("DevTools connect");
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let (ws, _) = tungstenite::client(ws_url, tcp).expect("DevTools WebSocket handshake");
        Browser {
            child,
            ws,
            next_id: 0,
            profile,
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expr, "awaitPromise": true, "returnByValue": true},
        });
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("DevTools send");
        loop {
            let Message::Text(text) = self.ws.read().expect("DevTools reply") else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{reply}");
                assert!(reply["result"]["exceptionDetails"].is_null(), "{reply}");
                return reply["result"]["result"]["value"].clone();
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn ui_delete_button_deletes_a_key_written_elsewhere() {
    let c = Cluster::start("ui-delete", 3, 3, &[]);
    let http = client();
    let r = http
        .put(format!("{}/v1/kv/doomed", c.url(0)))
        .query(&[("w", "all")])
        .body("soon gone")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    // A fresh page (empty session but the admin token) at another node: type the key, press
    // Delete, and read what the page then shows for the key.
    let token = &causeway_e2e::credentials().admin_token;
    let mut b = Browser::open(&format!("{}/ui/#token={token}", c.url(1)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.eval(r#"document.readyState === "complete" && location.pathname === "/ui/""#) != true {
        assert!(Instant::now() < deadline, "the UI page did not load");
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = b.eval(
        &r#"(async () => {
            const until = async (f) => { for (let i = 0; i < 600 && !f(); i++) await new Promise(r => setTimeout(r, 50)); };
            await until(() => document.getElementById("del"));
            document.getElementById("token").value = "TOKEN";
            document.getElementById("login").click();
            document.getElementById("key").value = "doomed";
            document.getElementById("del").click();
            const shown = () => document.getElementById("value").textContent || document.getElementById("error").textContent;
            await until(shown);
            return "value=[" + document.getElementById("value").textContent + "] error=[" + document.getElementById("error").textContent + "]";
        })()"#
            .replace("TOKEN", token),
    );
    assert_eq!(
        shown, "value=[not found] error=[]",
        "after Delete the UI shows the key as gone"
    );
    let r = http
        .get(format!("{}/v1/kv/doomed", c.url(2)))
        .query(&[("r", "all")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "the key is deleted for every client");
}
