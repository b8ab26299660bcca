//! The gRPC API (`proto/causeway.proto`, docs/grpc.md): get, put, delete, list, batch and the
//! strong-key get, put and delete, on their own listener (`--grpc-listen`).
//!
//! Every call goes into the core exactly as its `/v1` counterpart does: the same [`Op`]s, the
//! same validation ([`parse_quorum`], [`decode_context`], [`listing::list_op`], the core's own
//! checks), batches through [`batch::run`], and the same roles ([`required_role`] of the
//! equivalent HTTP request, checked by [`authorize`] against the `authorization` metadata).
//! Errors are the HTTP API's `{error, detail}` as the status message `error: detail`, with the
//! gRPC code of the HTTP status ([`status`]).
//!
//! The listener is a [`SplitListener`] like the HTTP port's: the same TLS configuration (ALPN
//! `h2` only, so no peer link or node HTTP is accepted over TLS), plaintext only where the HTTP
//! port allows it, and connections counted under the same cap. Request messages are bounded by
//! [`max_message_bytes`] before they are read, and batches by their operation count before they
//! are decoded ([`super::grpc_codec`]).

use super::app::{AppState, decode_context, req_error, unexpected};
use super::auth::{Tokens, authorize, required_role};
use super::batch::{self, MAX_BATCH_BYTES, too_large};
use super::http_server::{HttpLimits, StallLimited};
use super::input::ApiError;
use super::input::parse_quorum;
use super::listing::{self, check_limit, encode_cursor};
use super::transport::Accepted;
use super::transport::{Accepting, Conn, ConnInfo, PeerSecurity, SplitListener};
use super::values::{DEFAULT_CONTENT_TYPE, dot_token, live_versions};
use crate::core::strong::{Cond, StrongCall, StrongOutcome};
use crate::core::{Op, Quorum, Reply, Response as CoreResponse, Version, VersionVector, token};
use axum::http::Method;
use bytes::Bytes;
use proto::batch_op::Op as BatchOpKind;
use proto::batch_result::Result as BatchOutcome;
use proto::causeway_server::{Causeway, CausewayServer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::{Code, Request, Response, Status};

/// The messages and service generated from `proto/causeway.proto`.
pub mod proto {
    tonic::include_proto!("causeway.v1");
}

/// Room in a request message beyond its key and value (context token, content type, framing).
const MESSAGE_OVERHEAD: usize = 64 << 10;
/// Longest a call may run before it is answered `CANCELLED`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent calls on one connection.
const STREAMS_PER_CONNECTION: u32 = 256;

/// The largest request message: a value of `max_value_bytes` with its key and context, or a
/// batch as large as `POST /v1/batch` accepts, whichever is larger.
pub fn max_message_bytes(max_key_bytes: usize, max_value_bytes: usize) -> usize {
    (max_value_bytes + max_key_bytes + MESSAGE_OVERHEAD).max(MAX_BATCH_BYTES)
}

/// The gRPC code of an HTTP API error, and its `error: detail` as the message.
pub fn status(e: ApiError) -> Status {
    let code = match e.status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::FailedPrecondition,
        413 | 507 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, format!("{}: {}", e.error, e.detail))
}

/// The service: the node's HTTP state and, when it has one, its tokens file.
pub struct Service {
    st: AppState,
    tokens: Option<Arc<Tokens>>,
}

impl Service {
    /// Checks the call's token against the role of the equivalent HTTP request.
    fn allow<T>(&self, req: &Request<T>, method: Method, path: &str) -> Result<(), Status> {
        let (Some(tokens), Some(needed)) = (&self.tokens, required_role(&method, path)) else {
            return Ok(());
        };
        let from_node = req
            .extensions()
            .get::<ConnInfo>()
            .is_some_and(|c| c.node.is_some());
        let authorization = req.metadata().get("authorization").map(|v| v.as_bytes());
        authorize(tokens, authorization, from_node, needed, || {
            format!("the gRPC equivalent of {method} {path}")
        })
        .map_err(status)
    }

    async fn call(&self, op: Result<Op, ApiError>) -> Result<BatchOutcome, Status> {
        let reply = self.st.node.call(op.map_err(status)?).await;
        outcome(reply).map_err(status)
    }
}

/// A context token of a request; the empty token is `default`.
fn context(t: &str, default: &VersionVector) -> Result<VersionVector, ApiError> {
    if t.is_empty() {
        Ok(default.clone())
    } else {
        decode_context(t)
    }
}

/// A quorum of a request; empty is the default quorum.
fn quorum(t: &str, name: &str) -> Result<Quorum, ApiError> {
    if t.is_empty() {
        Ok(Quorum::default())
    } else {
        parse_quorum(t, name)
    }
}

fn get_op(g: proto::GetRequest, default: &VersionVector) -> Result<Op, ApiError> {
    Ok(Op::Get {
        key: g.key,
        context: context(&g.context, default)?,
        r: quorum(&g.r, "r")?,
    })
}

fn put_op(p: proto::PutRequest, default: &VersionVector, max_value: usize) -> Result<Op, ApiError> {
    if p.value.len() > max_value {
        return Err(too_large(max_value));
    }
    Ok(Op::Put {
        key: p.key,
        value: Some(p.value),
        content_type: p.content_type.map(Bytes::from),
        context: context(&p.context, default)?,
        w: quorum(&p.w, "w")?,
        ttl: p.ttl,
    })
}

fn delete_op(d: proto::DeleteRequest, default: &VersionVector) -> Result<Op, ApiError> {
    Ok(Op::Put {
        key: d.key,
        value: None,
        content_type: None,
        context: context(&d.context, default)?,
        w: quorum(&d.w, "w")?,
        ttl: None,
    })
}

fn sibling(v: &Version) -> proto::Sibling {
    let content_type = match (&v.value, &v.content_type) {
        (None, _) => String::new(),
        (Some(_), Some(c)) => String::from_utf8_lossy(c).into_owned(),
        (Some(_), None) => DEFAULT_CONTENT_TYPE.to_owned(),
    };
    proto::Sibling {
        value: v.value.clone().unwrap_or_default(),
        content_type,
        deleted: v.value.is_none(),
        vtag: v.vtag(),
        dot: dot_token(v.dot),
        timestamp_micros: v.ts,
    }
}

/// The result of one get, put or delete the core answered.
fn outcome(reply: Reply) -> Result<BatchOutcome, ApiError> {
    let served_by = reply.served_by;
    match reply.result {
        Ok(CoreResponse::Read { versions, context }) => {
            let live = live_versions(&versions);
            metrics::histogram!("causeway_siblings_per_read").record(live.len() as f64);
            Ok(BatchOutcome::Get(proto::GetResponse {
                values: live.iter().filter_map(|v| v.value.clone()).collect(),
                deleted: !versions.is_empty() && live.is_empty(),
                siblings: versions.iter().map(sibling).collect(),
                context: token::encode(&context),
                served_by,
            }))
        }
        Ok(CoreResponse::Written { dot, context, .. }) => {
            Ok(BatchOutcome::Write(proto::WriteResponse {
                context: token::encode(&context),
                dot: dot_token(dot),
                served_by,
            }))
        }
        Ok(_) => Err(unexpected()),
        Err(e) => Err(req_error(e)),
    }
}

/// The condition of a strong write: at most one of `if_version` and `if_absent`.
fn strong_cond(if_version: Option<u64>, if_absent: bool) -> Result<Cond, ApiError> {
    match (if_version, if_absent) {
        (Some(_), true) => Err(ApiError::bad_request(
            "give if_version or if_absent, not both",
        )),
        (Some(v), false) => Ok(Cond::IfVersion(v)),
        (None, true) => Ok(Cond::IfAbsent),
        (None, false) => Ok(Cond::Always),
    }
}

/// The answer to a strong operation the core decided.
fn strong_outcome(reply: Reply) -> Result<proto::StrongResponse, ApiError> {
    let served_by = reply.served_by;
    let outcome = match reply.result {
        Ok(CoreResponse::Strong(o)) => o,
        Ok(_) => return Err(unexpected()),
        Err(e) => return Err(req_error(e)),
    };
    let r = match outcome {
        StrongOutcome::Read { value, version } => proto::StrongResponse {
            version,
            found: value.is_some(),
            value: value.unwrap_or_default(),
            ..Default::default()
        },
        StrongOutcome::Written { version } => proto::StrongResponse {
            version,
            ..Default::default()
        },
        StrongOutcome::PreconditionFailed { version } => proto::StrongResponse {
            version,
            precondition_failed: true,
            ..Default::default()
        },
    };
    Ok(proto::StrongResponse { served_by, ..r })
}

/// The context an outcome carries.
fn outcome_context(o: &BatchOutcome) -> Option<&str> {
    match o {
        BatchOutcome::Get(g) => Some(&g.context),
        BatchOutcome::Write(w) => Some(&w.context),
        BatchOutcome::Error(_) => None,
    }
}

#[tonic::async_trait]
impl Causeway for Service {
    async fn get(
        &self,
        req: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        self.allow(&req, Method::GET, "/v1/kv")?;
        match self
            .call(get_op(req.into_inner(), &VersionVector::new()))
            .await?
        {
            BatchOutcome::Get(g) => Ok(Response::new(g)),
            _ => Err(status(unexpected())),
        }
    }

    async fn put(
        &self,
        req: Request<proto::PutRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        self.allow(&req, Method::PUT, "/v1/kv")?;
        let op = put_op(
            req.into_inner(),
            &VersionVector::new(),
            self.st.node.max_value_bytes,
        );
        match self.call(op).await? {
            BatchOutcome::Write(w) => Ok(Response::new(w)),
            _ => Err(status(unexpected())),
        }
    }

    async fn delete(
        &self,
        req: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        self.allow(&req, Method::DELETE, "/v1/kv")?;
        match self
            .call(delete_op(req.into_inner(), &VersionVector::new()))
            .await?
        {
            BatchOutcome::Write(w) => Ok(Response::new(w)),
            _ => Err(status(unexpected())),
        }
    }

    async fn list(
        &self,
        req: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        self.allow(&req, Method::GET, "/v1/kv")?;
        let l = req.into_inner();
        let limit = match l.limit {
            0 => super::app::DEFAULT_LIST_LIMIT,
            n => check_limit(n).ok_or_else(|| {
                status(ApiError::bad_request(format!(
                    "limit must be 0 (the default) or in 1..={}",
                    super::app::MAX_LIST_LIMIT
                )))
            })?,
        };
        let some = |b: Bytes| Some(b).filter(|b| !b.is_empty());
        let range = (some(l.start), some(l.end), some(l.prefix));
        let after = Some(l.after.as_bytes()).filter(|a| !a.is_empty());
        let op = listing::list_op(range, after, limit, &self.st).map_err(status)?;
        let reply = self.st.node.call(op).await;
        match reply.result {
            Ok(CoreResponse::Listed { entries, next }) => Ok(Response::new(proto::ListResponse {
                entries: entries
                    .into_iter()
                    .map(|e| proto::ListEntry {
                        key: e.key,
                        values: e.values,
                    })
                    .collect(),
                next: next.map(|n| encode_cursor(&n)).unwrap_or_default(),
                served_by: reply.served_by,
            })),
            Ok(_) => Err(status(unexpected())),
            Err(e) => Err(status(req_error(e))),
        }
    }

    async fn batch(
        &self,
        req: Request<proto::BatchRequest>,
    ) -> Result<Response<proto::BatchResponse>, Status> {
        self.allow(&req, Method::POST, "/v1/batch")?;
        let b = req.into_inner();
        let default = context(&b.context, &VersionVector::new()).map_err(status)?;
        let max_value = self.st.node.max_value_bytes;
        let ops = b
            .ops
            .into_iter()
            .map(|o| match o.op {
                Some(BatchOpKind::Get(g)) => get_op(g, &default),
                Some(BatchOpKind::Put(p)) => put_op(p, &default, max_value),
                Some(BatchOpKind::Delete(d)) => delete_op(d, &default),
                None => Err(ApiError::bad_request(
                    "an operation needs one of get, put and delete",
                )),
            })
            .collect();
        let mut merged = default;
        let results = batch::run(&self.st, ops)
            .await
            .into_iter()
            .map(|r| {
                let o = r.and_then(outcome).unwrap_or_else(|e| {
                    BatchOutcome::Error(proto::OpError {
                        http_status: e.status.as_u16().into(),
                        error: e.error.to_owned(),
                        detail: e.detail,
                    })
                });
                if let Some(c) = outcome_context(&o).and_then(|t| token::decode(t).ok()) {
                    merged.merge(&c);
                }
                proto::BatchResult { result: Some(o) }
            })
            .collect();
        Ok(Response::new(proto::BatchResponse {
            results,
            context: token::encode(&merged),
        }))
    }

    async fn strong_get(
        &self,
        req: Request<proto::StrongGetRequest>,
    ) -> Result<Response<proto::StrongResponse>, Status> {
        self.allow(&req, Method::GET, "/v1/strong")?;
        let key = req.into_inner().key;
        self.strong(key, StrongCall::Get).await
    }

    async fn strong_put(
        &self,
        req: Request<proto::StrongPutRequest>,
    ) -> Result<Response<proto::StrongResponse>, Status> {
        self.allow(&req, Method::PUT, "/v1/strong")?;
        let p = req.into_inner();
        let max_value = self.st.node.max_value_bytes;
        if p.value.len() > max_value {
            return Err(status(too_large(max_value)));
        }
        let cond = strong_cond(p.if_version, p.if_absent).map_err(status)?;
        let value = p.value;
        self.strong(p.key, StrongCall::Put { value, cond }).await
    }

    async fn strong_delete(
        &self,
        req: Request<proto::StrongDeleteRequest>,
    ) -> Result<Response<proto::StrongResponse>, Status> {
        self.allow(&req, Method::DELETE, "/v1/strong")?;
        let d = req.into_inner();
        let cond = strong_cond(d.if_version, d.if_absent).map_err(status)?;
        self.strong(d.key, StrongCall::Delete { cond }).await
    }
}

impl Service {
    /// Runs a strong operation as `/v1/strong/{key}` does (the core checks the key).
    async fn strong(
        &self,
        key: Bytes,
        call: StrongCall,
    ) -> Result<Response<proto::StrongResponse>, Status> {
        let reply = self.st.node.call(Op::Strong { key, call }).await;
        strong_outcome(reply).map(Response::new).map_err(status)
    }
}

/// An accepted gRPC connection, holding its slot under the connection cap.
struct Connection {
    io: StallLimited<Conn>,
    info: ConnInfo,
    _permit: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the gRPC port accepts: the HTTP port's policy, with TLS offering only ALPN `h2`.
pub fn accepting(http: &Accepting) -> Accepting {
    let security = match &http.security {
        PeerSecurity::Plain => PeerSecurity::Plain,
        PeerSecurity::Tls(tls) => PeerSecurity::Tls(Arc::new(tls.offering(vec![b"h2".to_vec()]))),
    };
    Accepting {
        security,
        plain_http: http.plain_http,
    }
}

/// Serves the gRPC API on every connection `listener` yields until `shutdown` resolves, then
/// lets in-flight calls finish.
pub async fn serve(
    mut listener: SplitListener,
    st: AppState,
    tokens: Option<Arc<Tokens>>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let max_message = max_message_bytes(st.node.max_key_bytes, st.node.max_value_bytes);
    let service =
        CausewayServer::new(Service { st, tokens }).max_decoding_message_size(max_message);
    let (tx, rx) = mpsc::channel(64);
    let write_timeout = limits.write_timeout;
    tokio::spawn(async move {
        while let Some(Accepted { conn, info, permit }) = listener.accept().await {
            let conn = Connection {
                io: StallLimited::new(conn, write_timeout),
                info,
                _permit: permit,
            };
            if tx.send(Ok::<_, std::io::Error>(conn)).await.is_err() {
                break;
            }
        }
    });
    tonic::transport::Server::builder()
        .timeout(CALL_TIMEOUT)
        .load_shed(true)
        .concurrency_limit_per_connection(STREAMS_PER_CONNECTION as usize)
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_requests,
        ))
        .add_service(service)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
        .await?;
    Ok(())
}
