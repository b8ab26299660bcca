//! The trust boundary with real processes (docs/security.md): each attack from issue 12 is scripted
//! against a cluster started with the default secure settings and must fail, with the data read
//! back unchanged; the same forged frame against an `--insecure` cluster succeeds, which shows the
//! attack is real and the test able to fail.

use bytes::Bytes;
use causeway::core::{Actor, Dot, PeerMsg, Version, VersionSet, VersionVector};
use causeway_e2e::{
    Client, Cluster, add_token, binary, client, client_with, credentials, free_port, wait_token,
};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 20;

/// The peer preamble of this build: magic and protocol version 2.
fn preamble() -> Vec<u8> {
    causeway_e2e::peer::preamble().to_vec()
}

/// A frame claiming to come from `from`: a repair that adds a forged sibling to `key`.
fn forged_frame(from: &str, key: &str) -> Vec<u8> {
    let mut set = VersionSet::new();
    let dot = Dot::new(Actor::new(7, 1, 1), 1_000_000);
    set.write(
        &VersionVector::new(),
        Version {
            dot,
            value: Some(Bytes::from_static(b"forged")),
            ts: 1,
            content_type: None,
            expires: None,
        },
    );
    let msg = PeerMsg::Repair {
        key: Bytes::copy_from_slice(key.as_bytes()),
        set,
    };
    let body =
        bincode::serde::encode_to_vec((from, &msg), bincode::config::standard()).expect("encoding");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn load(c: &Cluster, http: &Client) {
    for i in 0..KEYS {
        let r = http
            .put(format!("{}/v1/kv/key{i}?w=all", c.url(i % c.addrs.len())))
            .body(format!("value{i}"))
            .send()
            .expect("put");
        assert_eq!(r.status(), 204, "put key{i}");
    }
}

/// Every key read through every node: exactly its value; and no forged key exists.
fn assert_unchanged(c: &Cluster, http: &Client) {
    for n in 0..c.addrs.len() {
        for i in 0..KEYS {
            let r = http
                .get(format!("{}/v1/kv/key{i}", c.url(n)))
                .header("accept", "application/json")
                .send()
                .expect("get");
            assert_eq!(r.status(), 200, "key{i} through node {n}");
            let v: Value = r.json().expect("json");
            assert_eq!(
                v["values"],
                json!([base64_of(&format!("value{i}"))]),
                "key{i} through node {n}"
            );
        }
        let r = http
            .get(format!("{}/v1/kv/forged-key", c.url(n)))
            .send()
            .expect("get");
        assert_eq!(r.status(), 404, "a forged key appeared on node {n}");
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Sends `bytes` on a fresh plaintext connection and waits briefly for the node to act on them.
fn send_plain(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).expect("connecting");
    let _ = s.write_all(bytes);
    let _ = s.flush();
    std::thread::sleep(Duration::from_millis(300));
}

/// The sum of `causeway_peer_rejected_total` on a node, by reason.
fn rejected(http: &Client, url: &str, reason: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("causeway_peer_rejected_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_forged_plaintext_frame_rewrites_an_insecure_cluster() {
    let c = Cluster::start("sec-insecure", 3, 3, &["--insecure"]);
    let http = client_with(None);
    load(&c, &http);
    let mut bytes = preamble();
    bytes.extend(forged_frame(&c.addrs[1], "forged-key"));
    send_plain(&c.addrs[0], &bytes);
    wait_for(Duration::from_secs(5), "the forged key", || {
        http.get(format!("{}/v1/kv/forged-key", c.url(0)))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
}

/// A TLS connection presenting `cert`/`key` (or no certificate), trusting the cluster CA.
fn tls_peer(addr: &str, client_cert: Option<(&Path, &Path)>) -> std::io::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(credentials().tls_dir.join("ca.pem")).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .map(|c| c.expect("cert"))
                    .collect(),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"causeway-peer".to_vec()];
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("connection");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let from = addr.to_owned();
    let mut bytes = preamble();
    bytes.extend(forged_frame(&from, "forged-key"));
    bytes.extend(forged_frame(&from, "key0"));
    tls.write_all(&bytes)?;
    tls.flush()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn forged_peer_frames_are_refused_by_a_secure_cluster() {
    let c = Cluster::start("sec-frames", 3, 3, &[]);
    let http = client();
    load(&c, &http);

    // Plaintext peer link (what rewrote the insecure cluster above).
    let mut bytes = preamble();
    bytes.extend(forged_frame(&c.addrs[1], "forged-key"));
    bytes.extend(forged_frame(&c.addrs[1], "key0"));
    send_plain(&c.addrs[0], &bytes);
    assert!(rejected(&http, &c.url(0), "plaintext") >= 1);

    // TLS with a certificate of another CA (issued for a cluster member's address).
    let other = c.dir().join("other-ca");
    let out = Command::new(binary())
        .arg("certs")
        .arg("--out")
        .arg(&other)
        .arg(&c.addrs[1])
        .output()
        .expect("causeway certs");
    assert!(out.status.success());
    let stem = format!("node-{}", c.addrs[1].replace(':', "_"));
    let (cert, key) = (
        other.join(format!("{stem}.pem")),
        other.join(format!("{stem}.key")),
    );
    let res = tls_peer(&c.addrs[0], Some((&cert, &key)));
    assert!(
        !res.as_ref().is_ok_and(|got| !got.is_empty()),
        "the node answered a peer with a foreign certificate: {res:?}"
    );
    assert!(rejected(&http, &c.url(0), "handshake") >= 1);

    // TLS without any client certificate, asking for a peer link.
    let res = tls_peer(&c.addrs[0], None);
    assert!(!res.as_ref().is_ok_and(|got| !got.is_empty()), "{res:?}");
    assert!(rejected(&http, &c.url(0), "no_certificate") >= 1);

    // A member's real certificate (node 2's), but frames claiming to come from node 0.
    let creds = credentials();
    let stem2 = format!("node-{}", c.addrs[2].replace(':', "_"));
    let res = tls_peer(
        &c.addrs[0],
        Some((
            &creds.tls_dir.join(format!("{stem2}.pem")),
            &creds.tls_dir.join(format!("{stem2}.key")),
        )),
    );
    assert!(!res.as_ref().is_ok_and(|got| !got.is_empty()), "{res:?}");
    wait_for(Duration::from_secs(5), "the sender rejection", || {
        rejected(&http, &c.url(0), "sender") >= 1
    });

    std::thread::sleep(Duration::from_secs(1));
    assert_unchanged(&c, &http);
}

fn status_and_json(r: reqwest::blocking::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

#[test]
fn clients_need_a_token_with_the_right_role() {
    let c = Cluster::start("sec-roles", 1, 1, &[]);
    let url = c.url(0);
    let anonymous = client_with(None);
    let forged = client_with(Some("cw_not-a-token"));
    let reader_token = add_token("read");
    let writer_token = add_token("write");
    wait_token(&format!("{url}/v1/cluster?scope=local"), &writer_token);
    let reader = client_with(Some(&reader_token));
    let writer = client_with(Some(&writer_token));
    let admin = client();

    assert_eq!(
        anonymous
            .get(format!("{url}/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        anonymous.get(format!("{url}/ui/")).send().unwrap().status(),
        200
    );
    for http in [&anonymous, &forged] {
        let (s, j) = status_and_json(http.get(format!("{url}/v1/kv/a")).send().unwrap());
        assert_eq!(s, 401, "{j}");
        assert_eq!(j["error"], "unauthorized", "{j}");
        let (s, _) = status_and_json(http.get(format!("{url}/metrics")).send().unwrap());
        assert_eq!(s, 401);
    }
    let join = json!({"node": "127.0.0.1:1"});
    let view = json!({"nodes": [c.addrs[0]], "repl_factor": 1});
    let (s, _) = status_and_json(
        anonymous
            .post(format!("{url}/v1/cluster/join"))
            .json(&join)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 401, "join without a token");
    let (s, _) = status_and_json(
        anonymous
            .put(format!("{url}/v1/cluster/view"))
            .json(&view)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 401, "view change without a token");

    // read: GET yes, PUT no.
    assert_eq!(
        reader
            .get(format!("{url}/v1/kv/a"))
            .send()
            .unwrap()
            .status(),
        404
    );
    let (s, j) = status_and_json(
        reader
            .put(format!("{url}/v1/kv/a"))
            .body("x")
            .send()
            .unwrap(),
    );
    assert_eq!(s, 403, "{j}");
    assert_eq!(j["error"], "forbidden");
    // write: PUT and the compat API's writes yes; membership and admin routes no.
    assert_eq!(
        writer
            .put(format!("{url}/v1/kv/a"))
            .body("x")
            .send()
            .unwrap()
            .status(),
        204
    );
    let r = writer
        .put(format!("{url}/kv-store/keys/b"))
        .json(&json!({"value": "1"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    for (what, req) in [
        (
            "join",
            writer.post(format!("{url}/v1/cluster/join")).json(&join),
        ),
        (
            "view",
            writer.put(format!("{url}/v1/cluster/view")).json(&view),
        ),
        (
            "compat view change",
            writer
                .put(format!("{url}/kv-store/view-change"))
                .json(&json!({"view": c.addrs[0], "repl-factor": 1})),
        ),
        (
            "aae pull",
            writer
                .post(format!("{url}/v1/admin/aae/pull"))
                .json(&json!({"peer": c.addrs[0]})),
        ),
    ] {
        let (s, j) = status_and_json(req.send().unwrap());
        assert_eq!(s, 403, "{what} with a write token: {j}");
    }
    // admin: the view change goes through.
    let (s, j) = status_and_json(
        admin
            .put(format!("{url}/v1/cluster/view"))
            .json(&view)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(
        admin
            .get(format!("{url}/v1/kv/a"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "x"
    );
}

#[test]
fn a_join_of_an_address_that_is_not_a_cluster_node_is_refused() {
    let c = Cluster::start("sec-join", 2, 2, &[]);
    let http = client();
    // A TCP listener that answers like a web server: not a node of this cluster.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
    });
    // Nobody listening at all.
    let nobody = format!("127.0.0.1:{}", free_port());
    // An insecure causeway node: plaintext, so not a member of this cluster either.
    let plain = Cluster::start("sec-join-plain", 1, 1, &["--insecure"]);
    let join = |node: &str| {
        status_and_json(
            http.post(format!("{}/v1/cluster/join", c.url(0)))
                .json(&json!({"node": node}))
                .send()
                .unwrap(),
        )
    };
    for node in [fake, plain.addrs[0].clone()] {
        let (s, j) = join(&node);
        assert_eq!(s, 409, "join of {node}: {j}");
        assert_eq!(j["error"], "not a cluster node", "{j}");
    }
    // Where nothing answers, the handshake check has nothing to ask: the core's join probe
    // refuses the address as not answering.
    let (s, j) = join(&nobody);
    assert_eq!(s, 400, "join of {nobody}: {j}");
    assert!(
        j["detail"]
            .as_str()
            .is_some_and(|d| d.contains("did not answer as a joining causeway node")),
        "{j}"
    );
    let v: Value = http
        .get(format!("{}/v1/cluster?scope=local", c.url(0)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{v}");
}

/// Runs `causeway serve` with `args` and `env`, and returns its exit status and stderr if it
/// exits within 10 s (None: it kept running, and was killed).
fn serve_exits(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Option<(bool, String)> {
    let log = dir.join("serve.log");
    let mut child = Command::new(binary())
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some((
                status.success(),
                std::fs::read_to_string(&log).unwrap_or_default(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_non_loopback_node_without_tls_and_tokens_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("causeway-e2e-nonloop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let advertise = format!("127.0.0.1:{port}");
    let (ok, err) = serve_exits(&["--listen", &listen, "--advertise", &advertise], &[], &dir)
        .expect("a plaintext node on 0.0.0.0 must exit");
    assert!(!ok, "it must exit with an error");
    assert!(
        err.contains("--insecure") && err.contains("refusing"),
        "{err}"
    );
    // The seed's environment deployment, with the one extra variable, starts.
    let env = [
        ("ADDRESS", advertise.as_str()),
        ("VIEW", advertise.as_str()),
        ("REPL_FACTOR", "1"),
        ("CAUSEWAY_INSECURE", "true"),
    ];
    let mut child = Command::new(binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("seed"))
        .envs(env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("seed.log")).expect("log"))
        .spawn()
        .expect("spawn");
    let http = client_with(None);
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http.put(format!("http://{advertise}/v1/kv/k"))
            .body("v")
            .send()
            .is_ok_and(|r| r.status() == 204)
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("seed.log")).unwrap_or_default();
    assert!(
        up,
        "the seed's env deployment with CAUSEWAY_INSECURE=true serves: {log}"
    );
    assert!(
        log.contains("RUNNING INSECURE"),
        "--insecure is logged loudly: {log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_frames_cost_bounded_memory_and_never_stop_the_node() {
    // Plaintext peers (--insecure) so the test can speak frames without a certificate; the
    // framing code is the same over TLS.
    let c = Cluster::start("sec-framing", 1, 1, &["--insecure"]);
    let http = client_with(None);
    let url = c.url(0);
    let pid = c.pid(0).expect("running");
    let before = rss_kib(pid);
    // Four links claim 256 MiB frames, send 1 MiB of each, and stall.
    let started = Instant::now();
    let mut links: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&c.addrs[0]).expect("connect");
            s.write_all(&preamble()).expect("preamble");
            s.write_all(&(256u32 << 20).to_be_bytes()).expect("length");
            s.write_all(&vec![0xAB; 1 << 20]).expect("bytes");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 50 << 10, "RSS grew by {grown} KiB");
    for s in &mut links {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut b = [0u8; 1];
        let closed = matches!(s.read(&mut b), Ok(0) | Err(_));
        assert!(closed, "a stalled link stays open");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(16), "closed after {took:?}");
    assert!(rejected(&http, &url, "timeout") >= 4);

    // A 4 GiB length, a truncated frame, random bytes after the preamble.
    let mut huge = preamble();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    send_plain(&c.addrs[0], &huge);
    let mut truncated = preamble();
    truncated.extend_from_slice(&100u32.to_be_bytes());
    truncated.extend_from_slice(&[1u8; 10]);
    send_plain(&c.addrs[0], &truncated);
    let mut random = preamble();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    random.extend_from_slice(&64u32.to_be_bytes());
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push(x as u8);
    }
    send_plain(&c.addrs[0], &random);
    let mut old_version = b"\0CWPEER".to_vec();
    old_version.extend_from_slice(&1u16.to_be_bytes());
    send_plain(&c.addrs[0], &old_version);
    wait_for(Duration::from_secs(5), "the rejections", || {
        rejected(&http, &url, "oversize") >= 1
            && rejected(&http, &url, "truncated") >= 1
            && rejected(&http, &url, "malformed") >= 1
            && rejected(&http, &url, "version") >= 1
    });
    let r = http
        .put(format!("{url}/v1/kv/still"))
        .body("serving")
        .send()
        .expect("put");
    assert_eq!(r.status(), 204);
    let r = http.get(format!("{url}/v1/kv/still")).send().expect("get");
    assert_eq!(r.text().expect("body"), "serving");
}
