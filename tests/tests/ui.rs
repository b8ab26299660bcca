//! The web UI as a person sees it: headless Chromium loads `/ui/` from a running cluster, runs
//! its script, and the rendered page must show the nodes, the shards and the keys (siblings
//! flagged) — and a click on Delete must delete. Chromium comes from Debian's `chromium` package,
//! which `ci/test` installs.

use causeway_e2e::{Cluster, client, free_port};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    for row in [
        "live keys",
        "forwarded requests",
        "anti-entropy exchanges",
        "keys repaired by anti-entropy",
    ] {
        assert!(dom.contains(row), "the node panel shows {row}");
    }
}

/// A headless Chromium driven over the DevTools protocol (a WebSocket to one page target), for
/// tests that click: `--dump-dom` only renders. Killed on drop.
struct Browser {
    child: std::process::Child,
    ws: TcpStream,
    next_id: u64,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium and opens `url` in a new page.
    fn open(url: &str) -> Browser {
        let port = free_port();
        let profile =
            std::env::temp_dir().join(format!("causeway-ui-cdp-{}-{port}", std::process::id()));
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromium");
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        let target: Value = loop {
            let r = http
                .put(format!("http://127.0.0.1:{port}/json/new?{url}"))
                .send();
            if let Ok(r) = r.and_then(|r| r.error_for_status()) {
                break r.json().expect("DevTools target JSON");
            }
            assert!(
                Instant::now() < deadline,
                "Chromium's DevTools did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("page WebSocket URL");
        let path = ws_url
            .split_once(&format!("127.0.0.1:{port}"))
            .map(|(_, p)| p.to_owned())
            .expect("a local DevTools URL");
        let mut ws = TcpStream::connect(("127.0.0.1", port)).expect("DevTools connect");
        ws.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            ws,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            ws.read_exact(&mut byte).expect("WebSocket handshake");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
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
        self.send(msg.to_string().as_bytes());
        loop {
            let reply: Value = serde_json::from_slice(&self.recv()).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{reply}");
                assert!(reply["result"]["exceptionDetails"].is_null(), "{reply}");
                return reply["result"]["result"]["value"].clone();
            }
        }
    }

    /// Sends one masked text frame (clients must mask; the zero mask keeps the bytes as they are).
    fn send(&mut self, payload: &[u8]) {
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(payload);
        self.ws.write_all(&frame).expect("DevTools send");
    }

    /// Reads one message (joining continuation frames).
    fn recv(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.ws.read_exact(&mut h).expect("DevTools frame");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.ws.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.ws.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.ws.read_exact(&mut payload).expect("DevTools payload");
            out.extend_from_slice(&payload);
            if h[0] & 0x80 != 0 {
                return out;
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.eval(r#"document.readyState === "complete" && location.pathname === "/ui/""#) != true {
        assert!(Instant::now() < deadline, "the UI page did not load");
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = b.eval(
        &r#"(async () => {
            const until = async (f) => { for (let i = 0; i < 200 && !f(); i++) await new Promise(r => setTimeout(r, 50)); };
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
