//! `POST /v1/batch`: up to [`MAX_BATCH_OPS`] gets, puts and deletes in one request, each with
//! its own result.
//!
//! Every operation is the same [`Op`] the single-key endpoints send into the core, with the same
//! validation, limits and causal semantics: an operation's context is its own `"context"` or
//! else the request's `X-Causal-Context`, so operations do not see each other's writes unless
//! the client chains them through contexts. Operations run concurrently and independently; the
//! reply lists their results in request order, and its top-level `context` joins the contexts
//! of every operation that succeeded (a session that continues with it has seen them all).
//!
//! Limits are checked before anything is allocated for the operations: the body is read up to
//! [`MAX_BATCH_BYTES`] (413 beyond), then the operations are counted without being decoded (413
//! beyond [`MAX_BATCH_OPS`]), and only then decoded. A malformed operation is that
//! operation's 400; a malformed body is the request's.

use super::app::{AppState, CONTEXT_HEADER, decode_context, req_error, unexpected, with_headers};
use super::input::parse_quorum;
use super::input::{ApiError, parse_query, read_body};
use super::values::{live_versions, read_json, read_status};
use crate::core::{NodeId, Op, Quorum, Reply, Response as CoreResponse, VersionVector, token};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use std::fmt;

/// Most operations in one batch.
pub const MAX_BATCH_OPS: usize = 1000;
/// Largest batch body, in bytes (values travel base64-encoded inside it).
pub const MAX_BATCH_BYTES: usize = 32 << 20;

/// One operation as the client sends it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOp {
    op: String,
    key: Option<String>,
    key_base64: Option<String>,
    /// The value of a put, base64.
    value: Option<String>,
    content_type: Option<String>,
    context: Option<String>,
    r: Option<String>,
    w: Option<String>,
    /// Time to live of a put, in seconds (1 to 315360000; docs/ttl.md).
    #[schema(minimum = 1, maximum = 315360000)]
    ttl: Option<u64>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    ops: Vec<BatchOp>,
}

/// The number of operations, counted without decoding them; stops past [`MAX_BATCH_OPS`].
struct OpCount(usize);

impl<'de> serde::Deserialize<'de> for OpCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = OpCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of operations")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OpCount, A::Error> {
                let mut n = 0;
                while n <= MAX_BATCH_OPS && seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(OpCount(n))
            }
        }
        d.deserialize_seq(Count)
    }
}

#[derive(serde::Deserialize)]
struct Counted {
    ops: OpCount,
}

/// The result of one operation: its status and JSON fields.
type OpResult = (StatusCode, serde_json::Value);

fn failed(e: ApiError) -> OpResult {
    (
        e.status,
        serde_json::json!({"error": e.error, "detail": e.detail}),
    )
}

/// Turns a client operation into the core's, with the checks the single-key endpoints make.
fn to_op(
    o: BatchOp,
    default_ctx: &VersionVector,
    max_key: usize,
    max_value: usize,
) -> Result<Op, ApiError> {
    let key = match (o.key, o.key_base64) {
        (Some(k), None) => Bytes::from(k),
        (None, Some(k)) => Bytes::from(
            B64.decode(k)
                .map_err(|_| ApiError::bad_request("key_base64 is not base64"))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "an operation needs exactly one of key and key_base64",
            ));
        }
    };
    if key.is_empty() {
        return Err(ApiError::bad_request("the key must not be empty"));
    }
    if key.len() > max_key {
        return Err(ApiError::bad_request(format!(
            "the key is {} bytes long; the limit is {max_key}",
            key.len()
        )));
    }
    let context = match &o.context {
        Some(t) => decode_context(t)?,
        None => default_ctx.clone(),
    };
    let quorum = |q: Option<String>, name: &str| match q {
        None => Ok(Quorum::default()),
        Some(t) => parse_quorum(&t, name),
    };
    let only = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "{what} is not allowed on a {} operation",
                o.op
            )))
        }
    };
    match o.op.as_str() {
        "get" => {
            only(o.value.is_none() && o.content_type.is_none(), "value")?;
            only(o.w.is_none(), "w")?;
            only(o.ttl.is_none(), "ttl")?;
            Ok(Op::Get {
                key,
                context,
                r: quorum(o.r, "r")?,
            })
        }
        "put" | "delete" => {
            only(o.r.is_none(), "r")?;
            let value = match (o.op.as_str(), o.value) {
                ("put", Some(v)) => {
                    // Decoded size is at most 3/4 of the text: refuse before decoding.
                    if v.len() / 4 * 3 > max_value + 2 {
                        return Err(too_large(max_value));
                    }
                    let v = B64
                        .decode(v)
                        .map_err(|_| ApiError::bad_request("value is not base64"))?;
                    if v.len() > max_value {
                        return Err(too_large(max_value));
                    }
                    Some(Bytes::from(v))
                }
                ("put", None) => return Err(ApiError::bad_request("a put needs a value")),
                (_, v) => {
                    only(v.is_none() && o.content_type.is_none(), "value")?;
                    only(o.ttl.is_none(), "ttl")?;
                    None
                }
            };
            Ok(Op::Put {
                key,
                value,
                content_type: o.content_type.map(Bytes::from),
                context,
                w: quorum(o.w, "w")?,
                ttl: o.ttl,
            })
        }
        other => Err(ApiError::bad_request(format!(
            "op must be get, put or delete; got {other:?}"
        ))),
    }
}

/// The error of a value longer than `max` bytes.
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload too large",
        format!("the value is longer than {max} bytes"),
    )
}

/// The result of one operation the core answered, and the context it returned.
fn render(reply: Reply) -> (OpResult, Option<VersionVector>) {
    let served_by: NodeId = reply.served_by;
    let (status, mut body, ctx) = match reply.result {
        Ok(CoreResponse::Read { versions, context }) => {
            let live = live_versions(&versions);
            metrics::histogram!("causeway_siblings_per_read").record(live.len() as f64);
            let body = read_json(&versions, &live, &context);
            (read_status(&live), body, Some(context))
        }
        Ok(CoreResponse::Written { context, .. }) => (
            StatusCode::NO_CONTENT,
            serde_json::json!({"context": token::encode(&context)}),
            Some(context),
        ),
        Ok(_) => {
            let (s, b) = failed(unexpected());
            (s, b, None)
        }
        Err(e) => {
            let (s, b) = failed(req_error(e));
            (s, b, None)
        }
    };
    body["served_by"] = served_by.into();
    ((status, body), ctx)
}

/// Runs the valid operations among `ops` concurrently and independently; returns, in order, each
/// one's reply, or its error (its validation error, or the error of a task that did not finish).
pub async fn run(st: &AppState, ops: Vec<Result<Op, ApiError>>) -> Vec<Result<Reply, ApiError>> {
    let mut results: Vec<Option<Result<Reply, ApiError>>> = Vec::with_capacity(ops.len());
    let mut running = tokio::task::JoinSet::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Ok(op) => {
                let st = st.clone();
                running.spawn(async move { (i, st.node.call(op).await) });
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    while let Some(done) = running.join_next().await {
        if let Ok((i, reply)) = done {
            results[i] = Some(Ok(reply));
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(unexpected())))
        .collect()
}

/// `POST /v1/batch` `{"ops":[{"op","key"|"key_base64","value"?,"content_type"?,"context"?,
/// "r"?,"w"?}]}` → 200 `{"results":[{"status",…}],"context"}`.
#[utoipa::path(post, path = "/v1/batch", tag = "kv",
    params(("X-Causal-Context" = Option<String>, Header, description = "causal-context token of the session")),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "one result per operation", body = crate::server::schema::BatchReply),
        (status = 400, description = "malformed body", body = crate::server::schema::ErrorBody),
        (status = 413, description = "too many operations or too large", body = crate::server::schema::ErrorBody)))]
pub async fn batch(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    let default_ctx = match headers.get(CONTEXT_HEADER) {
        None => VersionVector::new(),
        Some(v) => decode_context(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Causal-Context is not ASCII"))?,
        )?,
    };
    let body = read_body(&headers, body, MAX_BATCH_BYTES).await?;
    let invalid = |e: serde_json::Error| ApiError::bad_request(format!("invalid JSON: {e}"));
    let Counted { ops: OpCount(n) } = serde_json::from_slice(&body).map_err(invalid)?;
    if n > MAX_BATCH_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too many operations",
            format!("a batch holds at most {MAX_BATCH_OPS} operations"),
        ));
    }
    let req: BatchRequest = serde_json::from_slice(&body).map_err(invalid)?;
    drop(body);
    let (max_key, max_value) = (st.node.max_key_bytes, st.node.max_value_bytes);
    let ops = req
        .ops
        .into_iter()
        .map(|o| to_op(o, &default_ctx, max_key, max_value))
        .collect();
    let mut merged = default_ctx;
    let results: Vec<serde_json::Value> = run(&st, ops)
        .await
        .into_iter()
        .map(|r| {
            let (status, mut body) = match r {
                Ok(reply) => {
                    let (result, ctx) = render(reply);
                    if let Some(c) = ctx {
                        merged.merge(&c);
                    }
                    result
                }
                Err(e) => failed(e),
            };
            body["status"] = status.as_u16().into();
            body
        })
        .collect();
    let body = serde_json::json!({"results": results, "context": token::encode(&merged)});
    Ok(with_headers(
        &st,
        Json(body).into_response(),
        &st.node.me,
        Some(&merged),
    ))
}
