//! The native HTTP API (`/v1`, README), `/healthz`, `/readyz`, `/metrics`, and the router that joins them
//! with the compatibility API.
//!
//! Keys are taken from the raw request path and percent-decoded strictly, so any byte string is a
//! key and malformed escapes are 400s. Every reply from the core carries `X-Served-By` (the node
//! that executed it; it differs from this node when the request was proxied) and, for key
//! operations, `X-Causal-Context`.

// The header names are part of this module's surface (the CLI and tests name them from here).
use super::app::{AppState, MAX_JSON_BYTES, decode_context, req_error, unexpected, with_headers};
pub use super::app::{CONTEXT_HEADER, DOT_HEADER, SERVED_BY_HEADER};
use super::input::{
    ApiError, json_body, parse_query, parse_quorum, parse_ttl, percent_decode, read_body, text,
};
use super::membership;
use super::planted;
use super::values::{dot_token, render_read, select_vtag};
use crate::core::{NodeStatus, Op, Quorum, Response as CoreResponse, VersionVector, token};
use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// The request counter and latency histogram of one (route, method, status).
struct RouteMetrics {
    route: Box<str>,
    method: Method,
    status: u16,
    requests: metrics::Counter,
    latency: metrics::Histogram,
}

thread_local! {
    /// Handles already registered by this worker thread: a handful of entries, searched linearly,
    /// so a request costs no label allocation and no registry lookup once its labels were seen.
    static ROUTE_METRICS: RefCell<Vec<RouteMetrics>> = const { RefCell::new(Vec::new()) };
}

/// Counts requests and records latency by route, method and status.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = resp.status().as_u16();
    ROUTE_METRICS.with_borrow_mut(|cache| {
        let i = match cache
            .iter()
            .position(|m| m.status == status && m.method == method && *m.route == *route)
        {
            Some(i) => i,
            None => {
                let labels = [("route", route.to_owned()), ("method", method.to_string())];
                let requests = metrics::counter!(
                    "causeway_http_requests_total",
                    &[
                        labels[0].clone(),
                        labels[1].clone(),
                        ("status", status.to_string()),
                    ]
                );
                let latency =
                    metrics::histogram!("causeway_http_request_duration_seconds", &labels);
                cache.push(RouteMetrics {
                    route: route.into(),
                    method: method.clone(),
                    status,
                    requests,
                    latency,
                });
                cache.len() - 1
            }
        };
        cache[i].requests.increment(1);
        cache[i].latency.record(elapsed);
    });
    resp
}

/// The key named by the path after `prefix`, percent-decoded and checked against `max` bytes.
pub fn key_from_path(uri: &Uri, prefix: &str, max: usize) -> Result<Bytes, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    let key = percent_decode(raw)?;
    if key.is_empty() {
        return Err(ApiError::bad_request("the key must not be empty"));
    }
    if key.len() > max {
        return Err(ApiError::bad_request(format!(
            "the key is {} bytes long; the limit is {max}",
            key.len()
        )));
    }
    Ok(Bytes::from(key))
}

fn context_header(headers: &HeaderMap) -> Result<VersionVector, ApiError> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(VersionVector::new()),
        Some(v) => decode_context(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Causal-Context is not ASCII"))?,
        ),
    }
}

fn quorum(q: Option<&Vec<u8>>, name: &str) -> Result<Quorum, ApiError> {
    match q {
        None => Ok(Quorum::default()),
        Some(v) => parse_quorum(&text(name, v)?, name),
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// Reads a key: 200 with its value, 300 `multipart/mixed` with its siblings, or 404 (with
/// `Accept: application/json`: the JSON read form for all three).
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "the key, percent-encoded"),
        ("r" = Option<String>, Query, pattern = "^([1-9][0-9]{0,2}|quorum|all)$", description = "read quorum: a number, quorum or all"),
        ("vtag" = Option<String>, Query, description = "return only the sibling with this tag"),
        ("X-Causal-Context" = Option<String>, Header, description = "causal-context token of the session")),
    responses(
        (status = 200, description = "the value", content(
            (Vec<u8> = "application/octet-stream"),
            (crate::server::schema::ReadJson = "application/json"))),
        (status = 300, description = "siblings", content(
            (Vec<u8> = "multipart/mixed"),
            (crate::server::schema::ReadJson = "application/json"))),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 404, description = "no live value", body = crate::server::schema::NotFound),
        (status = 503, description = "no replica could answer", body = crate::server::schema::ErrorBody)))]
pub async fn kv_get(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, "/v1/kv/", st.node.max_key_bytes)?;
    let q = parse_query(uri.query(), &["r", "vtag"])?;
    let r = quorum(q.get("r"), "r")?;
    let vtag = q.get("vtag").map(|v| text("vtag", v)).transpose()?;
    let context = context_header(&headers)?;
    let reply = st.node.call(Op::Get { key, context, r }).await;
    let (resp, ctx) = match reply.result {
        Ok(CoreResponse::Read { versions, context }) => {
            let resp = match vtag {
                None => render_read(&versions, &context, wants_json(&headers)),
                Some(t) => match select_vtag(versions, &t) {
                    Ok(one) => render_read(&one, &context, wants_json(&headers)),
                    Err(e) => e.into_response(),
                },
            };
            (resp, context)
        }
        Ok(_) => return Err(unexpected()),
        Err(e) => {
            return Ok(with_headers(
                &st,
                req_error(e).into_response(),
                &reply.served_by,
                None,
            ));
        }
    };
    Ok(with_headers(&st, resp, &reply.served_by, Some(&ctx)))
}

/// Writes a value; `X-Causal-Context` names the versions it replaces.
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "the key, percent-encoded"),
        ("w" = Option<String>, Query, pattern = "^([1-9][0-9]{0,2}|quorum|all)$", description = "write quorum: a number, quorum or all"),
        ("ttl" = Option<u64>, Query, minimum = 1, maximum = 315360000, description = "time to live in seconds (1 to 315360000, 10 years): the value expires that long after the coordinator's clock (docs/ttl.md)"),
        ("X-Causal-Context" = Option<String>, Header, description = "causal-context token of the session")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "written"),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 409, description = "too many siblings", body = crate::server::schema::ErrorBody),
        (status = 413, description = "value too large", body = crate::server::schema::ErrorBody),
        (status = 503, description = "not enough replicas acknowledged (indeterminate)", body = crate::server::schema::ErrorBody),
        (status = 507, description = "disk full", body = crate::server::schema::ErrorBody)))]
pub async fn kv_put(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, "/v1/kv/", st.node.max_key_bytes)?;
    let q = parse_query(uri.query(), &["w", "ttl"])?;
    let w = quorum(q.get("w"), "w")?;
    let ttl = match q.get("ttl") {
        Some(t) => Some(parse_ttl(&text("ttl", t)?)?),
        None => None,
    };
    let context = context_header(&headers)?;
    // Bounded by the core (MAX_CONTENT_TYPE_BYTES, a 400); a header is already bounded by hyper.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|c| Bytes::copy_from_slice(c.as_bytes()));
    let value = read_body(&headers, body, st.node.max_value_bytes).await?;
    write(&st, key, Some((value, content_type, ttl)), context, w).await
}

/// Deletes what `X-Causal-Context` names (without one: what the coordinating replica holds).
#[utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path, description = "the key, percent-encoded"),
        ("w" = Option<String>, Query, pattern = "^([1-9][0-9]{0,2}|quorum|all)$", description = "write quorum: a number, quorum or all"),
        ("X-Causal-Context" = Option<String>, Header, description = "causal-context token of the session")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 409, description = "too many siblings", body = crate::server::schema::ErrorBody),
        (status = 503, description = "not enough replicas acknowledged (indeterminate)", body = crate::server::schema::ErrorBody),
        (status = 507, description = "disk full", body = crate::server::schema::ErrorBody)))]
pub async fn kv_delete(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, "/v1/kv/", st.node.max_key_bytes)?;
    let q = parse_query(uri.query(), &["w"])?;
    let w = quorum(q.get("w"), "w")?;
    let context = context_header(&headers)?;
    write(&st, key, None, context, w).await
}

/// Writes `value` (with its content type) or, for `None`, deletes; a delete without a context
/// deletes what the coordinating replica holds (docs/guarantees.md).
async fn write(
    st: &AppState,
    key: Bytes,
    value: Option<(Bytes, Option<Bytes>, Option<u64>)>,
    context: VersionVector,
    w: Quorum,
) -> Result<Response, ApiError> {
    let (value, content_type, ttl) = value.map_or((None, None, None), |(v, c, t)| (Some(v), c, t));
    let request_context = context.clone();
    let reply = st
        .node
        .call(Op::Put {
            key,
            value,
            content_type,
            context,
            w,
            ttl,
        })
        .await;
    match reply.result {
        Ok(CoreResponse::Written { dot, context, .. }) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&dot_token(dot)) {
                resp.headers_mut().insert(DOT_HEADER, v);
            }
            let context = if planted::on(planted::Bug::StaleWriteContext) {
                &request_context
            } else {
                &context
            };
            Ok(with_headers(st, resp, &reply.served_by, Some(context)))
        }
        Ok(_) => Err(unexpected()),
        Err(e) => Ok(with_headers(
            st,
            req_error(e).into_response(),
            &reply.served_by,
            None,
        )),
    }
}

/// Percent-encodes bytes for use in a URL path or query value.
pub fn encode_component(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The core's status, or 503 once the node is shutting down.
async fn node_status(st: &AppState) -> Result<NodeStatus, ApiError> {
    st.node.status().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the node is shutting down",
        )
    })
}

/// `GET /v1/cluster[?scope=local|cluster]`: this node's view (epoch, members, shards and their
/// partitions) and status; with `scope=cluster` (the default) also every member's epoch and
/// handoff state, asked concurrently (an unreachable member is listed as such).
pub(super) async fn cluster(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let q = parse_query(uri.query(), &["scope"])?;
    let fan_out = match q.get("scope").map(Vec::as_slice) {
        None | Some(b"cluster") => true,
        Some(b"local") => false,
        Some(_) => return Err(ApiError::bad_request("scope must be local or cluster")),
    };
    let status = node_status(&st).await?;
    let view = &status.view;
    let shards: Vec<_> = (0..if view.is_joining() { 0 } else { view.shard_count() })
        .map(|s| {
            let partitions: Vec<u32> = (0..view.partitions)
                .filter(|p| view.shard_of_partition(*p) == s)
                .collect();
            serde_json::json!({"id": s, "replicas": view.shard_members(s), "partitions": partitions})
        })
        .collect();
    let members: Vec<_> = view
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "node": n,
                "shard": view.shard_of_node(n),
                "suspect": status.suspects.contains(n),
            })
        })
        .collect();
    let me = membership::NodeReport {
        node: st.node.me.clone(),
        state: Ok(membership::NodeState::from_status(&status)),
    };
    let mut body = serde_json::json!({
        "node": st.node.me,
        "joining": view.is_joining(),
        "epoch": crate::core::ring::epoch_number(view.epoch),
        "epoch_id": view.epoch.to_string(),
        "members": members,
        "shards": shards,
        "partitions": view.partitions,
        "repl_factor": view.repl_factor,
        "handoff": me.to_json()["handoff"].take(),
        "settled": me.state.as_ref().is_ok_and(membership::NodeState::settled),
        "status": status,
    });
    // Everywhere in this reply `epoch` is a view's epoch number and `epoch_id` its unique id
    // (the number with the proposer's hash), also in the status's view.
    body["status"]["view"] = membership::view_json(view);
    if fan_out {
        let mut nodes = view.nodes.clone();
        if !nodes.contains(&st.node.me) {
            nodes.push(st.node.me.clone());
        }
        let reports = membership::reports(&st, &nodes).await;
        let settled = reports.iter().all(|r| {
            r.state
                .as_ref()
                .is_ok_and(|s| s.settled() && s.epoch == view.epoch)
        });
        body["nodes"] = reports
            .iter()
            .map(membership::NodeReport::to_json)
            .collect();
        body["cluster_settled"] = settled.into();
    }
    Ok(Json(body).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    contexts: Vec<String>,
}

/// `POST /v1/context/merge` `{"contexts": [token, …]}` → `{"context": merged}`: the token naming
/// the union of several sessions' causal pasts.
#[utoipa::path(post, path = "/v1/context/merge", tag = "kv",
    request_body = MergeRequest,
    responses(
        (status = 200, description = "the merged token", body = crate::server::schema::MergedContext),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 413, description = "body too large", body = crate::server::schema::ErrorBody)))]
pub async fn merge_contexts(
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: MergeRequest = json_body(&uri, &headers, body, MAX_JSON_BYTES).await?;
    let merged = token::merge(req.contexts.iter().map(String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(serde_json::json!({"context": merged})).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    peer: String,
    /// Run exchanges until one completes (at most [`MAX_PULL_EXCHANGES`]), not just one.
    #[serde(default)]
    until_complete: bool,
}

/// Most exchanges one `until_complete` pull runs: each repairs up to the core's
/// `aae_max_keys` keys' worth of differing segments, so a pull repairs at least this many
/// times that before it answers.
const MAX_PULL_EXCHANGES: u64 = 64;

/// `POST /v1/admin/aae/pull` `{"peer": "host:port", "until_complete": false}`: one anti-entropy
/// exchange with a replica of this node's shard, now; or, when `peer` is a node of a mesh
/// upstream, one full sync of every partition this node owns against that cluster (how a new
/// cluster bootstraps, docs/mesh.md). With `until_complete`, further rounds while the last one
/// was cut short by its key budget and still repaired something. Answers the sums over the
/// rounds run.
pub(super) async fn aae_pull(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: PullRequest = json_body(&uri, &headers, body, MAX_JSON_BYTES).await?;
    let rounds = if req.until_complete {
        MAX_PULL_EXCHANGES
    } else {
        1
    };
    let (mut repaired, mut sent, mut exchanges, mut complete) = (0u64, 0u64, 0u64, false);
    let mut answered = req.peer.clone();
    while exchanges < rounds {
        let reply = st
            .node
            .call(Op::AntiEntropy {
                peer: req.peer.clone(),
            })
            .await;
        match reply.result {
            Ok(CoreResponse::AntiEntropy {
                peer,
                keys_repaired,
                bytes,
                complete: last,
            }) => {
                exchanges += 1;
                repaired += keys_repaired;
                sent += bytes;
                complete = last;
                answered = peer;
                if last || keys_repaired == 0 {
                    break;
                }
            }
            Ok(_) => return Err(unexpected()),
            // A later exchange that fails leaves the sums of those that ran, incomplete.
            Err(e) if exchanges == 0 => return Err(req_error(e)),
            Err(_) => break,
        }
    }
    Ok(Json(serde_json::json!({
        "peer": answered,
        "keys_repaired": repaired,
        "bytes": sent,
        "complete": complete,
        "exchanges": exchanges,
    }))
    .into_response())
}

/// `GET /v1/mesh`: this node's mesh status (docs/mesh.md): its cluster id, each upstream's
/// counters, and the downstream subscribers it feeds. Role `read`, like `/v1/cluster`.
#[utoipa::path(get, path = "/v1/mesh", tag = "cluster",
    responses(
        (status = 200, description = "the mesh as this node sees it", body = crate::server::schema::Mesh),
        (status = 503, description = "the node is shutting down", body = crate::server::schema::ErrorBody)))]
pub async fn mesh(State(st): State<AppState>) -> Result<Response, ApiError> {
    let status = node_status(&st).await?;
    Ok(Json(status.mesh).into_response())
}

/// Liveness: the process answers HTTP. It never asks the core, so a node that is starting,
/// waiting to join or overloaded still answers 200.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "the process is up", body = crate::server::schema::Health)))]
pub async fn healthz(State(st): State<AppState>) -> Response {
    Json(serde_json::json!({"status": "ok", "node": st.node.me, "instance": *st.instance}))
        .into_response()
}

/// Longest wait of `/readyz` for the core's answer.
const READY_PROBE: Duration = Duration::from_secs(1);

/// Why this node cannot serve keys now, or `None` when it can: its core has started, answers
/// within [`READY_PROBE`], and has installed a view that lists this node.
async fn not_ready(st: &AppState) -> Option<String> {
    if !st.node.started() {
        return Some("the core is still starting (recovering its state from storage)".into());
    }
    let status = match tokio::time::timeout(READY_PROBE, st.node.status()).await {
        Err(_) => {
            return Some(format!(
                "the core did not answer within {} ms",
                READY_PROBE.as_millis()
            ));
        }
        Ok(None) => return Some("the node is shutting down".into()),
        Ok(Some(s)) => s,
    };
    let view = &status.view;
    if view.is_joining() {
        Some("the node is in no view yet: it waits to be admitted to a cluster (--join or --await-join)".into())
    } else if !view.nodes.contains(&st.node.me) {
        Some(format!(
            "the node is not a member of its current view (epoch {})",
            crate::core::ring::epoch_number(view.epoch)
        ))
    } else {
        None
    }
}

/// Readiness: 200 `{"ready":true,"node","instance"}` when the node can serve keys;
/// 503 with `error`, `detail` (the reason), `node` and `instance` otherwise. `instance` is the id
/// this process chose (or was given) at start, so a launcher can tell its own child from another
/// server answering on the same port.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "ready to serve keys", body = crate::server::schema::Ready),
        (status = 503, description = "not ready, and why", body = crate::server::schema::Ready)))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let (node, instance) = (&st.node.me, &*st.instance);
    match not_ready(&st).await {
        None => Json(serde_json::json!({"ready": true, "node": node, "instance": instance}))
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "error": "not ready",
                "detail": reason,
                "node": node,
                "instance": instance,
            })),
        )
            .into_response(),
    }
}

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.prometheus.render(),
    )
        .into_response()
}
