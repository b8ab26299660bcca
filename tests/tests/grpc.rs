//! The gRPC API against a real three-shard cluster, through a client generated from
//! `proto/causeway.proto` (tests/build.rs), as another application would use it: puts, gets
//! with siblings and contexts, deletes, paged prefix listing and batches behave as `/v1` does
//! (and agree with it); tokens and roles apply; oversized values, oversized batches and bad
//! input get clear errors and the node keeps serving; TLS works with the cluster's CA.

use causeway_e2e::{Cluster, Opts, add_token, client, credentials, wait_token};
use pb::causeway_client::CausewayClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Status};

mod pb {
    tonic::include_proto!("causeway.v1");
}

use pb::batch_op::Op as BatchKind;
use pb::batch_result::Result as Outcome;

/// A request carrying `token` as a bearer token.
fn authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("metadata value"),
        );
    }
    r
}

struct Node {
    c: CausewayClient<Channel>,
    token: String,
}

impl Node {
    async fn connect(addr: &str) -> Node {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a URI")
            .connect()
            .await
            .expect("connecting over gRPC");
        let c = CausewayClient::new(channel);
        Node {
            c,
            token: credentials().admin_token.clone(),
        }
    }

    async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        ctx: &str,
    ) -> Result<pb::WriteResponse, Status> {
        let req = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            context: ctx.into(),
            ..Default::default()
        };
        Ok(self
            .c
            .put(authed(req, Some(&self.token)))
            .await?
            .into_inner())
    }

    async fn get(&mut self, key: &str, ctx: &str) -> pb::GetResponse {
        let req = pb::GetRequest {
            key: key.as_bytes().to_vec(),
            context: ctx.into(),
            r: String::new(),
        };
        self.c
            .get(authed(req, Some(&self.token)))
            .await
            .expect("get")
            .into_inner()
    }
}

fn values(g: &pb::GetResponse) -> Vec<String> {
    let mut v: Vec<String> = g
        .values
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    v.sort();
    v
}

fn put_op(key: String, value: &str) -> pb::BatchOp {
    pb::BatchOp {
        op: Some(BatchKind::Put(pb::PutRequest {
            key: key.into_bytes(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// A 3-node cluster serving gRPC (replication factor `rf`, extra node flags `args`), a
/// read-only token its nodes already accept, and a runtime for the async gRPC client.
fn grpc_cluster(
    name: &str,
    rf: usize,
    args: &[&str],
) -> (Cluster, String, tokio::runtime::Runtime) {
    let opts = Opts {
        grpc: true,
        ..Opts::default()
    };
    let c = Cluster::start_with(name, 3, rf, args, opts);
    let reader = add_token("read");
    wait_token(&format!("{}/v1/cluster?scope=local", c.url(0)), &reader);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    (c, reader, rt)
}

#[test]
fn grpc_serves_the_v1_operations_behind_the_same_auth_and_limits() {
    let (c, reader, rt) = grpc_cluster("grpc", 1, &["--max-value-bytes", "4096"]);
    let http = client();
    rt.block_on(async {
        let mut n0 = Node::connect(&c.grpc[0]).await;
        let mut n2 = Node::connect(&c.grpc[2]).await;

        // Put, then read it back through another node with the write's context.
        let w = n0.put("k", b"v1", "").await.expect("put");
        assert!(!w.context.is_empty() && !w.dot.is_empty(), "{w:?}");
        let g = n2.get("k", &w.context).await;
        assert_eq!(values(&g), ["v1"], "{g:?}");
        assert_eq!(g.siblings.len(), 1);
        assert_eq!(g.siblings[0].content_type, "application/octet-stream");
        assert_eq!(
            g.siblings[0].dot, w.dot,
            "the sibling is the write's version"
        );
        assert!(!g.deleted);
        // The HTTP API sees the same value.
        let r = http.get(format!("{}/v1/kv/k", c.url(1))).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), b"v1");

        // A put without a context is concurrent with v1: two siblings; a put with the read's
        // context resolves them.
        n2.put("k", b"v2", "").await.expect("put");
        let g = n0.get("k", &w.context).await;
        assert_eq!(values(&g), ["v1", "v2"], "{g:?}");
        assert_eq!(g.siblings.len(), 2);
        let w3 = n0.put("k", b"v3", &g.context).await.expect("put");
        let g = n2.get("k", &w3.context).await;
        assert_eq!(values(&g), ["v3"], "{g:?}");

        // Delete with the context and w=all: no values, deleted, tombstones among the siblings;
        // HTTP agrees (404).
        let del = pb::DeleteRequest {
            key: b"k".to_vec(),
            context: g.context.clone(),
            w: "all".into(),
        };
        let d =
            n0.c.delete(authed(del, Some(&n0.token)))
                .await
                .expect("delete")
                .into_inner();
        let g = n2.get("k", &d.context).await;
        assert!(g.values.is_empty() && g.deleted, "{g:?}");
        assert!(g.siblings.iter().all(|s| s.deleted), "{g:?}");
        let r = http.get(format!("{}/v1/kv/k", c.url(0))).send().unwrap();
        assert_eq!(r.status(), 404);
        // A key that never existed: no values, not deleted.
        let g = n0.get("never", "").await;
        assert!(
            g.values.is_empty() && !g.deleted && g.siblings.is_empty(),
            "{g:?}"
        );

        // A batch of 25 puts reaches every shard; gets, deletes and a bad operation in one
        // batch each get their own result.
        let ops: Vec<_> = (0..25).map(|i| put_op(format!("p-{i:03}"), "x")).collect();
        let b = pb::BatchRequest {
            ops,
            context: String::new(),
        };
        let b =
            n0.c.batch(authed(b, Some(&n0.token)))
                .await
                .expect("batch")
                .into_inner();
        assert_eq!(b.results.len(), 25);
        let served: std::collections::BTreeSet<String> = b
            .results
            .iter()
            .map(|r| match &r.result {
                Some(Outcome::Write(w)) => w.served_by.clone(),
                other => panic!("a put failed: {other:?}"),
            })
            .collect();
        assert_eq!(served.len(), 3, "the puts reached every shard: {served:?}");
        n0.put("q-1", b"other", "").await.expect("put");
        let ops = vec![
            pb::BatchOp {
                op: Some(BatchKind::Get(pb::GetRequest {
                    key: b"p-001".to_vec(),
                    ..Default::default()
                })),
            },
            put_op("p-100".into(), "y"),
            pb::BatchOp {
                op: Some(BatchKind::Delete(pb::DeleteRequest {
                    key: b"q-1".to_vec(),
                    ..Default::default()
                })),
            },
            pb::BatchOp {
                op: Some(BatchKind::Get(pb::GetRequest {
                    key: b"p-002".to_vec(),
                    r: "zero".into(),
                    ..Default::default()
                })),
            },
            pb::BatchOp { op: None },
        ];
        // No batch context: the delete deletes what its coordinator holds (a context without
        // q-1's write would leave that write as a sibling of the tombstone).
        let b = pb::BatchRequest {
            ops,
            context: String::new(),
        };
        let b =
            n2.c.batch(authed(b, Some(&n0.token)))
                .await
                .expect("batch")
                .into_inner();
        let r = &b.results;
        assert!(
            matches!(&r[0].result, Some(Outcome::Get(g)) if values(g) == ["x"]),
            "{r:?}"
        );
        assert!(matches!(&r[1].result, Some(Outcome::Write(_))), "{r:?}");
        assert!(matches!(&r[2].result, Some(Outcome::Write(_))), "{r:?}");
        for bad in &r[3..] {
            assert!(
                matches!(&bad.result, Some(Outcome::Error(e)) if e.http_status == 400),
                "{r:?}"
            );
        }
        let g = n0.get("q-1", &b.context).await;
        assert!(g.deleted, "the batch's delete took effect: {g:?}");

        // Paged prefix listing: 26 keys under p-, in order, 10 at a time.
        let mut keys = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let l = pb::ListRequest {
                prefix: b"p-".to_vec(),
                after: after.clone(),
                limit: 10,
                ..Default::default()
            };
            let page =
                n2.c.list(authed(l, Some(&n0.token)))
                    .await
                    .expect("list")
                    .into_inner();
            pages += 1;
            assert!(page.entries.len() <= 10);
            keys.extend(
                page.entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.key).into_owned()),
            );
            if page.next.is_empty() {
                break;
            }
            after = page.next;
        }
        let mut want: Vec<String> = (0..25).map(|i| format!("p-{i:03}")).collect();
        want.push("p-100".into());
        assert_eq!(keys, want);
        assert_eq!(pages, 3);

        // Auth: no token, an unknown token → UNAUTHENTICATED; a read token may read, not write.
        let get = || pb::GetRequest {
            key: b"p-001".to_vec(),
            ..Default::default()
        };
        let e = n0.c.get(authed(get(), None)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e =
            n0.c.get(authed(get(), Some("cw_not-a-token")))
                .await
                .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        n0.c.get(authed(get(), Some(&reader)))
            .await
            .expect("a reader reads");
        let put = pb::PutRequest {
            key: b"p-001".to_vec(),
            value: b"z".to_vec(),
            ..Default::default()
        };
        let e = n0.c.put(authed(put, Some(&reader))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("write role"), "{e:?}");
        let b = pb::BatchRequest {
            ops: vec![],
            context: String::new(),
        };
        let e = n0.c.batch(authed(b, Some(&reader))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

        // Limits: a value over --max-value-bytes, a message over the server's message limit,
        // more than 1,000 operations, a malformed context: clear errors, and the node serves on.
        let e = n0.put("big", &vec![7u8; 4097], "").await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("4096"), "{e:?}");
        let e = n0.put("huge", &vec![7u8; 33 << 20], "").await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        let ops: Vec<_> = (0..1001).map(|i| put_op(format!("o-{i}"), "x")).collect();
        let b = pb::BatchRequest {
            ops,
            context: String::new(),
        };
        let e = n0.c.batch(authed(b, Some(&n0.token))).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("1000 operations"), "{e:?}");
        let e = n0.put("k", b"v", "not a token!").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = n0.put("", b"v", "").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let g = n0.get("p-001", "").await;
        assert_eq!(values(&g), ["x"]);

        // TLS with the cluster CA, as the HTTP port serves it.
        let ca = std::fs::read(credentials().tls_dir.join("ca.pem")).expect("the CA");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("127.0.0.1");
        let channel = Channel::from_shared(format!("https://{}", c.grpc[1]))
            .unwrap()
            .tls_config(tls)
            .expect("TLS config")
            .connect()
            .await
            .expect("connecting over TLS");
        let mut secure = Node {
            c: CausewayClient::new(channel),
            token: n0.token.clone(),
        };
        let g = secure.get("p-002", "").await;
        assert_eq!(values(&g), ["x"]);
    });
    for i in 0..3 {
        assert!(
            !c.log(i).contains("panicked"),
            "node {i} panicked: {}",
            c.log(i)
        );
    }
}

/// Strong keys over gRPC: a create-if-absent, compare-and-set by version, a failed condition
/// answered with the current version, a delete, linearizable reads — the same key space and
/// versions as `/v1/strong/{key}` — behind the same roles (a reader reads, cannot write).
#[test]
fn grpc_serves_strong_keys_with_compare_and_set_behind_the_same_auth() {
    let (c, reader, rt) = grpc_cluster("grpc-strong", 3, &[]);
    let http = client();
    rt.block_on(async {
        let mut n0 = Node::connect(&c.grpc[0]).await;
        let mut n2 = Node::connect(&c.grpc[2]).await;
        let admin = Some(n0.token.clone());
        let put = |value: &str, if_version: Option<u64>, if_absent: bool| pb::StrongPutRequest {
            key: b"lock".to_vec(),
            value: value.as_bytes().to_vec(),
            if_version,
            if_absent,
        };
        let get = || pb::StrongGetRequest {
            key: b"lock".to_vec(),
        };

        let g =
            n0.c.strong_get(authed(get(), admin.as_deref()))
                .await
                .expect("get");
        let g = g.into_inner();
        assert!(
            !g.found && g.version == 0 && !g.precondition_failed,
            "{g:?}"
        );

        let w =
            n0.c.strong_put(authed(put("me", None, true), admin.as_deref()))
                .await;
        let w = w.expect("create if absent").into_inner();
        assert_eq!((w.version, w.precondition_failed), (1, false), "{w:?}");
        // A second create-if-absent fails its condition: OK, with the current version.
        let w =
            n2.c.strong_put(authed(put("you", None, true), admin.as_deref()))
                .await;
        let w = w.expect("a failed condition is an answer").into_inner();
        assert_eq!((w.version, w.precondition_failed), (1, true), "{w:?}");
        // Compare-and-set: a stale version fails, the current one succeeds.
        let w =
            n2.c.strong_put(authed(put("x", Some(7), false), admin.as_deref()))
                .await;
        assert!(w.expect("cas").into_inner().precondition_failed);
        let w =
            n2.c.strong_put(authed(put("you", Some(1), false), admin.as_deref()))
                .await;
        let w = w.expect("cas").into_inner();
        assert_eq!((w.version, w.precondition_failed), (2, false), "{w:?}");

        // Read through another node, over gRPC and over HTTP: the same value and version.
        let g =
            n0.c.strong_get(authed(get(), Some(&reader)))
                .await
                .expect("a reader reads");
        let g = g.into_inner();
        assert_eq!(
            (g.found, g.value.as_slice(), g.version),
            (true, &b"you"[..], 2),
            "{g:?}"
        );
        let r = http
            .get(format!("{}/v1/strong/lock", c.url(1)))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["etag"], "\"2\"");
        assert_eq!(r.bytes().unwrap().as_ref(), b"you");

        // Roles: a reader cannot write; bad conditions are INVALID_ARGUMENT.
        let e =
            n0.c.strong_put(authed(put("r", None, false), Some(&reader)))
                .await;
        assert_eq!(e.unwrap_err().code(), Code::PermissionDenied);
        let e =
            n0.c.strong_put(authed(put("r", Some(2), true), admin.as_deref()))
                .await;
        assert_eq!(e.unwrap_err().code(), Code::InvalidArgument);
        let e = n0.c.strong_get(authed(get(), None)).await;
        assert_eq!(e.unwrap_err().code(), Code::Unauthenticated);

        // Delete at the current version; the key then holds no value at version 3.
        let del = pb::StrongDeleteRequest {
            key: b"lock".to_vec(),
            if_version: Some(2),
            if_absent: false,
        };
        let d =
            n2.c.strong_delete(authed(del, admin.as_deref()))
                .await
                .expect("delete");
        assert_eq!(d.into_inner().version, 3);
        let g =
            n0.c.strong_get(authed(get(), admin.as_deref()))
                .await
                .expect("get");
        let g = g.into_inner();
        assert!(!g.found && g.version == 3, "{g:?}");
        let r = http
            .get(format!("{}/v1/strong/lock", c.url(2)))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
    });
}
