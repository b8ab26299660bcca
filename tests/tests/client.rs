//! The `causeway-client` crate against a real cluster: sessions carry causality across nodes,
//! siblings come back typed and resolve, listings page, batches run, tokens and the cluster CA
//! are used, and failover retries what is safe and reports a write whose outcome is unknown as
//! indeterminate — exactly once sent.

use causeway_client::{
    BatchOp, BatchResult, Client, Error, ListOptions, Quorum, Session, Versions,
};
use causeway_e2e::{Cluster, credentials, free_port, library_client, merge};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn admin(nodes: &[String]) -> Client {
    library_client(nodes, Some(&credentials().admin_token))
}

#[test]
fn sessions_siblings_listing_and_batches_against_a_cluster() {
    let c = Cluster::start("client-kv", 3, 3, &[]);
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    rt().block_on(async {
        // A session carries its context from one node to another: what it wrote through
        // node 0 it reads through node 2 (the read waits for the write to arrive there).
        let s0 = Session::new(admin(&urls[..1]));
        s0.put_with("greeting", "hello", Some(Quorum::N(1)))
            .await
            .expect("put");
        let s2 = Session::with_context(admin(&urls[2..]), &s0.context().await.expect("ctx"));
        let read = s2.get("greeting").await.expect("get");
        assert_eq!(read.versions, Versions::Value("hello".into()));
        assert!(!read.context.is_empty());
        assert_eq!(
            s2.get("never-written").await.expect("get").versions,
            Versions::Missing
        );

        // Two sessions that have not seen each other write concurrently: siblings, typed; a
        // resolve writes the merge in their place.
        let (a, b) = (Session::new(admin(&urls[..1])), Session::new(admin(&urls[1..2])));
        a.put_with("cart", "milk", Some(Quorum::All)).await.expect("a");
        b.put_with("cart", "eggs", Some(Quorum::All)).await.expect("b");
        // Their causal pasts join (on a node, POST /v1/context/merge) as the core joins them.
        let (ta, tb) = (a.context().await.expect("a"), b.context().await.expect("b"));
        let joined = Session::with_context(admin(&urls), &ta);
        joined.absorb(&tb);
        assert_eq!(joined.context().await.expect("merged"), merge(&[&ta, &tb]));
        let r = Session::new(admin(&urls));
        match r.get("cart").await.expect("get").versions {
            Versions::Siblings(mut v) => {
                v.sort();
                assert_eq!(v, vec!["eggs", "milk"]);
            }
            other => panic!("expected siblings, got {other:?}"),
        }
        let merged = r
            .resolve("cart", |vals| {
                let mut v: Vec<_> = vals.iter().map(|b| String::from_utf8_lossy(b)).collect();
                v.sort();
                v.join(",").into_bytes().into()
            })
            .await
            .expect("resolve");
        assert_eq!(merged.as_deref(), Some(&b"eggs,milk"[..]));
        let after = Session::new(admin(&urls)).get_with("cart", Some(Quorum::All)).await;
        assert_eq!(after.expect("get").versions, Versions::Value("eggs,milk".into()));
        r.delete("cart").await.expect("delete");
        assert_eq!(r.get("cart").await.expect("get").versions, Versions::Deleted);

        // A listing pages through the range in key order.
        for i in 0..7 {
            s0.put(format!("list/{i}"), format!("v{i}")).await.expect("put");
        }
        let mut listing = s0.list(ListOptions {
            prefix: Some(b"list/".to_vec()),
            limit: Some(3),
            ..ListOptions::default()
        });
        let first = listing.next_page().await.expect("page").expect("a page");
        assert_eq!(first.entries.len(), 3);
        assert!(first.next.is_some());
        let mut keys: Vec<Vec<u8>> = first.entries.into_iter().map(|e| e.key).collect();
        while let Some(e) = listing.next().await.expect("entry") {
            keys.push(e.key);
        }
        let want: Vec<Vec<u8>> = (0..7).map(|i| format!("list/{i}").into_bytes()).collect();
        assert_eq!(keys, want);

        // A batch: each operation its own result, in order.
        let results = s0
            .batch(&[
                BatchOp::Put { key: b"b1".to_vec(), value: "one".into(), w: None },
                BatchOp::Get { key: b"greeting".to_vec(), r: None },
                BatchOp::Put { key: vec![b'k'; 100_000], value: "x".into(), w: None },
            ])
            .await
            .expect("batch");
        assert!(matches!(results[0], BatchResult::Written));
        assert!(
            matches!(&results[1], BatchResult::Read(r) if r.versions == Versions::Value("hello".into()))
        );
        assert!(
            matches!(&results[2], BatchResult::Failed(Error::Api { status: 400 | 413 | 414, .. })),
            "{:?}",
            results[2]
        );
        // The session took in the batch's context: it reads the batch's write.
        assert_eq!(s0.get("b1").await.expect("get").versions, Versions::Value("one".into()));
    });
}

#[test]
fn tokens_tls_and_failover_to_a_live_node() {
    let c = Cluster::start("client-net", 3, 3, &[]);
    let dead = format!("127.0.0.1:{}", free_port());
    rt().block_on(async {
        // No token: a typed 401, not retried into something else.
        let anon = Session::new(library_client(&[c.url(0)], None));
        let e = anon.get("k").await.expect_err("anonymous");
        assert!(matches!(e, Error::Unauthorized { .. }), "{e}");

        // A node that refuses connections is skipped, for reads and for writes (a write that
        // could not be sent is not in doubt).
        let s = Session::new(admin(&[dead.clone(), c.url(1)]));
        s.put("failover", "v").await.expect("put through the live node");
        assert_eq!(s.get("failover").await.expect("get").versions, Versions::Value("v".into()));
        let none = Session::new(admin(std::slice::from_ref(&dead)));
        assert!(matches!(none.get("k").await, Err(Error::Unavailable { attempts }) if attempts.len() == 3));

        // HTTPS with the cluster's CA.
        let https = Client::builder()
            .node(format!("https://{}", c.addrs[2]))
            .token(credentials().admin_token.clone())
            .ca_file(credentials().tls_dir.join("ca.pem"))
            .expect("ca")
            .build()
            .expect("client");
        let read = Session::new(https).get("failover").await.expect("https get");
        assert_eq!(read.versions, Versions::Value("v".into()));
        // Without it the certificate is not trusted.
        let untrusted = library_client(&[format!("https://{}", c.addrs[2])], None);
        assert!(matches!(
            Session::new(untrusted).get("failover").await,
            Err(Error::Unavailable { .. })
        ));
    });
}

/// A server that counts the requests it receives and answers each with 503, or (`silent`)
/// never answers.
fn fake_node(silent: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut len = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if silent {
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    let body = r#"{"error":"unavailable","detail":"test"}"#;
                    let reply = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if (&stream).write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn a_write_answered_503_is_indeterminate_and_sent_once_while_a_read_is_retried() {
    let (addr, seen) = fake_node(false);
    rt().block_on(async {
        let client = Client::builder()
            .nodes([addr.clone(), addr.clone()])
            .attempts(3)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let s = Session::new(client);
        let e = s.put("k", "v").await.expect_err("a 503");
        assert!(matches!(e, Error::Indeterminate { .. }), "{e}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "the write was sent exactly once"
        );
        let e = s
            .batch(&[BatchOp::Delete {
                key: b"k".to_vec(),
                w: None,
            }])
            .await
            .expect_err("a 503");
        assert!(matches!(e, Error::Indeterminate { .. }), "{e}");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        let e = s.get("k").await.expect_err("a 503");
        assert!(
            matches!(e, Error::Unavailable { ref attempts } if attempts.len() == 3),
            "{e}"
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            5,
            "a read is retried up to the bound"
        );
    });
}

#[test]
fn a_write_that_times_out_after_it_was_sent_is_indeterminate_and_not_resent() {
    let (addr, seen) = fake_node(true);
    rt().block_on(async {
        let client = Client::builder()
            .nodes([addr.clone(), addr.clone()])
            .attempts(3)
            .timeout(Duration::from_millis(500))
            .build()
            .expect("client");
        let e = Session::new(client.clone())
            .put("k", "v")
            .await
            .expect_err("a timeout");
        assert!(matches!(e, Error::Indeterminate { .. }), "{e}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "the write was sent exactly once"
        );
        let e = Session::new(client).get("k").await.expect_err("a timeout");
        assert!(
            matches!(e, Error::Unavailable { ref attempts } if attempts.len() == 3),
            "{e}"
        );
        assert_eq!(
            seen.load(Ordering::SeqCst),
            4,
            "a read is retried up to the bound"
        );
    });
}
