//! The compatibility API of the key-value-store seed (`/kv-store/...`), with that system's status
//! codes, messages and JSON fields, so its clients and deployments switch over unchanged.
//!
//! Mapping onto the core: a key holds one value for these clients; when concurrent writes left
//! siblings, GET returns the newest by write timestamp (the others stay stored and visible through
//! `/v1`). PUT answers "Added" or "Updated" from the coordinator's own report of whether the key
//! held a live value, so there is no read-before-write race; DELETE likewise answers 404 when the
//! key held none (its tombstone is then harmless and reaped later). Writes are issued with the
//! client's own `causal-context`, so they never replace versions the client has not seen — except
//! a DELETE without one, which deletes what the coordinating replica holds (docs/guarantees.md), as the
//! seed's clients expect. A write beyond `max_siblings` is a 409. Replies carry
//! `"causal-context"` (a token string) and, when another node executed the request, `"address"`.

use super::app::{AppState, MAX_JSON_BYTES, decode_context};
use super::input::{parse_query, percent_decode, read_body};
use super::membership;
use crate::core::{Op, Quorum, ReqError, Response as CoreResponse, VersionVector, token};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Longest key the seed accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 50;
const PREFIX: &str = "/kv-store/keys/";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/kv-store/keys/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/kv-store/key-count", get(key_count))
        .route("/kv-store/shards", get(shards))
        .route("/kv-store/shards/{id}", get(shard))
        .route("/kv-store/view-change", put(view_change))
}

/// A seed-style reply: `status` with a JSON object.
fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn seed_error(status: StatusCode, error: &str, verb: &str) -> Response {
    reply(
        status,
        json!({"error": error, "message": format!("Error in {verb}")}),
    )
}

fn core_error(e: ReqError, verb: &str) -> Response {
    match e {
        ReqError::BadRequest(m) => seed_error(StatusCode::BAD_REQUEST, &m, verb),
        ReqError::Conflict(m) => seed_error(StatusCode::CONFLICT, &m, verb),
        ReqError::InsufficientStorage(m) => seed_error(StatusCode::INSUFFICIENT_STORAGE, &m, verb),
        ReqError::TooLarge(m) => seed_error(StatusCode::PAYLOAD_TOO_LARGE, &m, verb),
        ReqError::Unsatisfiable | ReqError::Unavailable(_) => seed_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unable to satisfy request",
            verb,
        ),
    }
}

/// The request's key and parsed JSON body; a seed-style error response otherwise.
struct Parsed {
    key: Bytes,
    body: Map<String, Value>,
    context: VersionVector,
}

async fn parse(
    st: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    verb: &str,
) -> Result<Parsed, Response> {
    let bad = |m: &str| seed_error(StatusCode::BAD_REQUEST, m, verb);
    parse_query(uri.query(), &[]).map_err(IntoResponse::into_response)?;
    let raw = uri.path().strip_prefix(PREFIX).unwrap_or("");
    let key = percent_decode(raw).map_err(IntoResponse::into_response)?;
    if key.is_empty() {
        return Err(bad("Key is missing"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(bad("Key is too long"));
    }
    let body = read_body(headers, body, st.node.max_value_bytes + MAX_JSON_BYTES)
        .await
        .map_err(IntoResponse::into_response)?;
    let body: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(bad("Invalid JSON")),
        }
    };
    let context = match body.get("causal-context") {
        Some(Value::String(t)) => decode_context(t).map_err(IntoResponse::into_response)?,
        None | Some(Value::Null) => VersionVector::new(),
        Some(Value::Object(o)) if o.is_empty() => VersionVector::new(),
        Some(_) => return Err(bad("causal-context must be a token string")),
    };
    Ok(Parsed {
        key: Bytes::from(key),
        body,
        context,
    })
}

/// Adds `causal-context` and, when proxied, `address` to a reply body.
fn finish(
    st: &AppState,
    status: StatusCode,
    mut body: Value,
    served_by: &str,
    ctx: &VersionVector,
) -> Response {
    if let Some(o) = body.as_object_mut() {
        o.insert("causal-context".into(), Value::String(token::encode(ctx)));
        if served_by != st.node.me {
            metrics::counter!("causeway_proxied_requests_total").increment(1);
            o.insert("address".into(), Value::String(served_by.to_owned()));
        }
    }
    reply(status, body)
}

/// Reads `key`: its newest live value (if any), the reply's context and the serving node.
async fn read(
    st: &AppState,
    key: &Bytes,
    context: VersionVector,
) -> Result<(Option<Bytes>, VersionVector, String), ReqError> {
    let op = Op::Get {
        key: key.clone(),
        context,
        r: Quorum::default(),
    };
    let reply = st.node.call(op).await;
    match reply.result? {
        CoreResponse::Read { versions, context } => {
            let newest = versions
                .iter()
                .filter(|v| v.value.is_some())
                .max_by_key(|v| (v.ts, v.dot))
                .and_then(|v| v.value.clone());
            Ok((newest, context, reply.served_by))
        }
        _ => Err(ReqError::Unavailable("unexpected response".into())),
    }
}

async fn write(
    st: &AppState,
    key: Bytes,
    value: Option<Bytes>,
    context: VersionVector,
) -> Result<(VersionVector, String, bool), ReqError> {
    let op = Op::Put {
        key,
        value,
        content_type: None,
        context,
        w: Quorum::default(),
        ttl: None,
    };
    let reply = st.node.call(op).await;
    match reply.result? {
        CoreResponse::Written {
            context, replaced, ..
        } => Ok((context, reply.served_by, replaced)),
        _ => Err(ReqError::Unavailable("unexpected response".into())),
    }
}

#[utoipa::path(get, path = "/kv-store/keys/{key}", tag = "compat", params(("key" = String, Path, min_length = 1, max_length = 50, description = "the key (at most 50 bytes)")),
    request_body(content = Option<crate::server::schema::CompatRequest>, content_type = "application/json"),
    responses((status = 200, description = "the value", body = crate::server::schema::CompatReply),
        (status = 400, description = "bad request", body = crate::server::schema::CompatReply),
        (status = 404, description = "no such key", body = crate::server::schema::CompatReply),
        (status = 503, description = "unable to satisfy request", body = crate::server::schema::CompatReply)))]
pub async fn get_key(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match parse(&st, &uri, &headers, body, "GET").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match read(&st, &p.key, p.context).await {
        Ok((Some(v), ctx, by)) => {
            let body = json!({
                "doesExist": true,
                "message": "Retrieved successfully",
                "value": String::from_utf8_lossy(&v),
            });
            finish(&st, StatusCode::OK, body, &by, &ctx)
        }
        Ok((None, ctx, by)) => {
            let body = json!({"doesExist": false, "error": "Key does not exist", "message": "Error in GET"});
            finish(&st, StatusCode::NOT_FOUND, body, &by, &ctx)
        }
        Err(e) => core_error(e, "GET"),
    }
}

#[utoipa::path(put, path = "/kv-store/keys/{key}", tag = "compat", params(("key" = String, Path, min_length = 1, max_length = 50, description = "the key (at most 50 bytes)")),
    request_body(content = crate::server::schema::CompatRequest, content_type = "application/json"),
    responses((status = 200, description = "updated", body = crate::server::schema::CompatReply),
        (status = 201, description = "added", body = crate::server::schema::CompatReply),
        (status = 400, description = "bad request", body = crate::server::schema::CompatReply),
        (status = 409, description = "too many siblings", body = crate::server::schema::CompatReply),
        (status = 413, description = "too large", body = crate::server::schema::CompatReply),
        (status = 503, description = "unable to satisfy request", body = crate::server::schema::CompatReply),
        (status = 507, description = "disk full", body = crate::server::schema::CompatReply)))]
pub async fn put_key(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match parse(&st, &uri, &headers, body, "PUT").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let value = match p.body.get("value") {
        None | Some(Value::Null) => {
            return seed_error(StatusCode::BAD_REQUEST, "Value is missing", "PUT");
        }
        Some(Value::String(s)) => Bytes::copy_from_slice(s.as_bytes()),
        Some(other) => Bytes::from(other.to_string()),
    };
    match write(&st, p.key, Some(value), p.context).await {
        Ok((ctx, by, true)) => {
            let body = json!({"message": "Updated successfully", "replaced": true});
            finish(&st, StatusCode::OK, body, &by, &ctx)
        }
        Ok((ctx, by, false)) => {
            let body = json!({"message": "Added successfully", "replaced": false});
            finish(&st, StatusCode::CREATED, body, &by, &ctx)
        }
        Err(e) => core_error(e, "PUT"),
    }
}

#[utoipa::path(delete, path = "/kv-store/keys/{key}", tag = "compat", params(("key" = String, Path, min_length = 1, max_length = 50, description = "the key (at most 50 bytes)")),
    request_body(content = Option<crate::server::schema::CompatRequest>, content_type = "application/json"),
    responses((status = 200, description = "deleted", body = crate::server::schema::CompatReply),
        (status = 400, description = "bad request", body = crate::server::schema::CompatReply),
        (status = 404, description = "no such key", body = crate::server::schema::CompatReply),
        (status = 409, description = "too many siblings", body = crate::server::schema::CompatReply),
        (status = 503, description = "unable to satisfy request", body = crate::server::schema::CompatReply),
        (status = 507, description = "disk full", body = crate::server::schema::CompatReply)))]
pub async fn delete_key(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let p = match parse(&st, &uri, &headers, body, "DELETE").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match write(&st, p.key, None, p.context).await {
        Ok((ctx, by, false)) => {
            let body = json!({"doesExist": false, "error": "Key does not exist", "message": "Error in DELETE"});
            finish(&st, StatusCode::NOT_FOUND, body, &by, &ctx)
        }
        Ok((ctx, by, true)) => {
            let body = json!({"doesExist": true, "message": "Deleted successfully"});
            finish(&st, StatusCode::OK, body, &by, &ctx)
        }
        Err(e) => core_error(e, "DELETE"),
    }
}

async fn count(st: &AppState, shard: u32) -> Result<u64, ReqError> {
    match st.node.call(Op::KeyCount { shard }).await.result? {
        CoreResponse::KeyCount { count, .. } => Ok(count),
        _ => Err(ReqError::Unavailable("unexpected response".into())),
    }
}

#[utoipa::path(get, path = "/kv-store/key-count", tag = "compat",
    responses((status = 200, description = "keys in this node's shard", body = crate::server::schema::CompatReply),
        (status = 400, description = "bad request", body = crate::server::schema::CompatReply),
        (status = 503, description = "unable to satisfy request", body = crate::server::schema::CompatReply)))]
pub async fn key_count(State(st): State<AppState>, uri: Uri) -> Response {
    if let Err(e) = parse_query(uri.query(), &[]) {
        return e.into_response();
    }
    let Some(shard) = st.node.view().shard_of_node(&st.node.me) else {
        return seed_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not a member of any shard",
            "GET",
        );
    };
    match count(&st, shard).await {
        Ok(n) => reply(
            StatusCode::OK,
            json!({"message": "Key count retrieved successfully", "key-count": n, "shard-id": shard.to_string()}),
        ),
        Err(e) => core_error(e, "GET"),
    }
}

#[utoipa::path(get, path = "/kv-store/shards", tag = "compat",
    responses((status = 200, description = "the shard ids", body = crate::server::schema::CompatReply)))]
pub async fn shards(State(st): State<AppState>) -> Response {
    let ids: Vec<String> = (0..st.node.view().shard_count())
        .map(|s| s.to_string())
        .collect();
    reply(
        StatusCode::OK,
        json!({"message": "Shard membership retrieved successfully", "shards": ids}),
    )
}

#[utoipa::path(get, path = "/kv-store/shards/{id}", tag = "compat",
    params(("id" = String, Path, description = "a shard id")),
    responses((status = 200, description = "the shard's replicas and key count", body = crate::server::schema::CompatReply),
        (status = 404, description = "no such shard", body = crate::server::schema::CompatReply),
        (status = 503, description = "unable to satisfy request", body = crate::server::schema::CompatReply)))]
pub async fn shard(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let view = st.node.view();
    let Some(shard) = id.parse::<u32>().ok().filter(|s| *s < view.shard_count()) else {
        return seed_error(StatusCode::NOT_FOUND, "Shard does not exist", "GET");
    };
    match count(&st, shard).await {
        Ok(n) => reply(
            StatusCode::OK,
            json!({
                "message": "Shard information retrieved successfully",
                "shard-id": id,
                "key-count": n,
                "replicas": view.shard_members(shard),
            }),
        ),
        Err(e) => core_error(e, "GET"),
    }
}

/// How long `PUT /kv-store/view-change` waits for the handoff to finish before it reports the
/// key counts as they are.
pub const VIEW_CHANGE_WAIT: Duration = Duration::from_secs(30);

/// The seed's view change: `{"view": "host:port,host:port,...", "repl-factor": N}`. Installs the
/// view, waits (up to [`VIEW_CHANGE_WAIT`]) until every moved partition has been handed off, and
/// answers 200 `{"message": "View change successful", "shards": [{"shard-id", "key-count",
/// "replicas"}]}`. `"settled": false` (an addition to the seed's reply) says the wait ran out and
/// the counts may still change; the handoff goes on in the background. Its `causal-context` is
/// the request's joined with the writes the counts reflect.
async fn view_change(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bad = |m: &str| seed_error(StatusCode::BAD_REQUEST, m, "PUT");
    if let Err(e) = parse_query(uri.query(), &[]) {
        return e.into_response();
    }
    let body = match read_body(&headers, body, membership::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let body: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => m,
        _ => return bad("Invalid JSON"),
    };
    let nodes: Vec<String> = match body.get("view") {
        None | Some(Value::Null) => return bad("View is missing"),
        Some(Value::String(v)) => v
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(a)) => {
            let names: Option<Vec<String>> = a
                .iter()
                .map(|n| n.as_str().map(|n| n.trim().to_owned()))
                .collect();
            match names {
                Some(n) => n,
                None => return bad("view must be a comma-separated string of addresses"),
            }
        }
        Some(_) => return bad("view must be a comma-separated string of addresses"),
    };
    if let Err(m) = membership::check_nodes(&nodes) {
        return bad(&m);
    }
    let repl_factor = match body.get("repl-factor") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(r) if r >= 1 => Some(r as usize),
            _ => return bad("repl-factor must be a whole number of at least 1"),
        },
        Some(Value::String(t)) => match t.trim().parse::<usize>() {
            Ok(r) if r >= 1 => Some(r),
            _ => return bad("repl-factor must be a whole number of at least 1"),
        },
        Some(_) => return bad("repl-factor must be a whole number of at least 1"),
    };
    let mut context = match body.get("causal-context") {
        Some(Value::String(t)) => match decode_context(t) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        },
        _ => VersionVector::new(),
    };
    let old = st.node.view();
    let changed = st.node.call(Op::ChangeView { nodes, repl_factor }).await;
    let view = match changed.result {
        Ok(CoreResponse::ViewChanged { view }) => view,
        Ok(_) => return core_error(ReqError::Unavailable("unexpected".into()), "PUT"),
        Err(e) => return core_error(e, "PUT"),
    };
    let s = membership::wait_settled(&st, &old, &view, VIEW_CHANGE_WAIT).await;
    if !s.settled {
        tracing::warn!(pending = ?s.pending, "view change reported before its handoff settled");
    }
    // The writes the reported counts reflect: a client continuing with this context reads at
    // least what the counts counted, through any node of the new view.
    for c in &s.shards {
        context.merge(&c.context);
    }
    let shards: Vec<Value> = s
        .shards
        .iter()
        .map(|c| {
            json!({
                "shard-id": c.shard.to_string(),
                "key-count": c.count,
                "replicas": c.replicas,
            })
        })
        .collect();
    let mut out = json!({
        "message": "View change successful",
        "shards": shards,
        "settled": s.settled,
        "causal-context": token::encode(&context),
    });
    if !s.settled {
        let pending: Vec<String> = s.pending.iter().map(|(n, w)| format!("{n}: {w}")).collect();
        out["pending"] = pending.into();
    }
    reply(StatusCode::OK, out)
}
