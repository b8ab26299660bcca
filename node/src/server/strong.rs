//! `GET|PUT|DELETE /v1/strong/{key}`: linearizable strong keys (docs/strong-keys.md).
//!
//! Versions travel in `ETag: "N"`; `If-Match: "N"` (quotes optional) and `If-None-Match: *` are
//! the compare-and-set preconditions. A failed precondition is a 412 whose body and `ETag` carry
//! the current version; no majority within the bounded wait is a 503 (indeterminate for a write).
//! The strong namespace is disjoint from `/v1/kv`.

use super::app::{AppState, req_error, unexpected, with_headers};
use super::http::key_from_path;
use super::input::{ApiError, parse_query, read_body};
use crate::core::strong::{Cond, StrongCall, StrongOutcome};
use crate::core::{Op, Response as CoreResponse};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

const PREFIX: &str = "/v1/strong/";

/// The precondition of a write, from `If-Match` / `If-None-Match`.
fn condition(headers: &HeaderMap) -> Result<Cond, ApiError> {
    let if_match = headers.get(header::IF_MATCH);
    let if_none = headers.get(header::IF_NONE_MATCH);
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give If-Match or If-None-Match, not both",
        )),
        (None, None) => Ok(Cond::Always),
        (None, Some(v)) if v.as_bytes().trim_ascii() == b"*" => Ok(Cond::IfAbsent),
        (None, Some(_)) => Err(ApiError::bad_request(
            "If-None-Match must be * (create only if absent)",
        )),
        (Some(v), None) => {
            let raw = v.as_bytes().trim_ascii();
            let raw = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .unwrap_or(raw);
            std::str::from_utf8(raw)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .map(Cond::IfVersion)
                .ok_or_else(|| {
                    ApiError::bad_request("If-Match must be a version number, e.g. \"3\"")
                })
        }
    }
}

fn etag(resp: &mut Response, version: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
}

async fn run(st: &AppState, key: Bytes, call: StrongCall) -> Result<Response, ApiError> {
    let reply = st.node.call(Op::Strong { key, call }).await;
    let resp = match reply.result {
        Ok(CoreResponse::Strong(outcome)) => render(outcome),
        Ok(_) => return Err(unexpected()),
        Err(e) => req_error(e).into_response(),
    };
    Ok(with_headers(st, resp, &reply.served_by, None))
}

fn render(outcome: StrongOutcome) -> Response {
    let (mut resp, version) = match outcome {
        StrongOutcome::Read {
            value: Some(v),
            version,
        } => {
            let mut r = (StatusCode::OK, v).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            (r, version)
        }
        StrongOutcome::Read {
            value: None,
            version,
        } => {
            let e = ApiError::new(
                StatusCode::NOT_FOUND,
                "not found",
                "the strong key holds no value",
            );
            (e.into_response(), version)
        }
        StrongOutcome::Written { version } => (
            (
                StatusCode::OK,
                Json(serde_json::json!({ "version": version })),
            )
                .into_response(),
            version,
        ),
        StrongOutcome::PreconditionFailed { version } => {
            let body = serde_json::json!({
                "error": "precondition_failed",
                "detail": format!("the strong key is at version {version}"),
                "version": version,
            });
            (
                (StatusCode::PRECONDITION_FAILED, Json(body)).into_response(),
                version,
            )
        }
    };
    etag(&mut resp, version);
    resp
}

/// Reads a strong key (a linearizable read: one CASPaxos round at a majority).
#[utoipa::path(get, path = "/v1/strong/{key}", tag = "strong",
    params(("key" = String, Path, description = "the key, percent-encoded")),
    responses(
        (status = 200, description = "the value; ETag is its version", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("ETag" = String, description = "the version, quoted"))),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 404, description = "no value; ETag is the version (0 if never written)", body = crate::server::schema::ErrorBody,
            headers(("ETag" = String, description = "the version, quoted"))),
        (status = 503, description = "no majority of the key's replicas in time", body = crate::server::schema::ErrorBody)))]
pub async fn strong_get(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, PREFIX, st.node.max_key_bytes)?;
    parse_query(uri.query(), &[])?;
    run(&st, key, StrongCall::Get).await
}

/// Writes a strong key; `If-Match` / `If-None-Match: *` make it a compare-and-set.
#[utoipa::path(put, path = "/v1/strong/{key}", tag = "strong",
    params(("key" = String, Path, description = "the key, percent-encoded"),
        ("If-Match" = Option<String>, Header, description = "write only if the current version is this one"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: write only if the key holds no value")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "written", body = crate::server::schema::StrongWritten),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 412, description = "precondition failed; ETag is the current version", body = crate::server::schema::PreconditionFailed),
        (status = 413, description = "value too large", body = crate::server::schema::ErrorBody),
        (status = 503, description = "no majority in time (indeterminate)", body = crate::server::schema::ErrorBody)))]
pub async fn strong_put(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, PREFIX, st.node.max_key_bytes)?;
    parse_query(uri.query(), &[])?;
    let cond = condition(&headers)?;
    let value = read_body(&headers, body, st.node.max_value_bytes).await?;
    run(&st, key, StrongCall::Put { value, cond }).await
}

/// Deletes a strong key (a write: the version goes up by one even if it held no value).
#[utoipa::path(delete, path = "/v1/strong/{key}", tag = "strong",
    params(("key" = String, Path, description = "the key, percent-encoded"),
        ("If-Match" = Option<String>, Header, description = "delete only if the current version is this one"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if the key holds no value")),
    responses(
        (status = 200, description = "deleted", body = crate::server::schema::StrongWritten),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 412, description = "precondition failed; ETag is the current version", body = crate::server::schema::PreconditionFailed),
        (status = 503, description = "no majority in time (indeterminate)", body = crate::server::schema::ErrorBody)))]
pub async fn strong_delete(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(&uri, PREFIX, st.node.max_key_bytes)?;
    parse_query(uri.query(), &[])?;
    let cond = condition(&headers)?;
    run(&st, key, StrongCall::Delete { cond }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: header::HeaderName, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn preconditions_parse_and_malformed_ones_are_400s() {
        assert_eq!(condition(&HeaderMap::new()).unwrap(), Cond::Always);
        assert_eq!(
            condition(&h(header::IF_MATCH, "\"3\"")).unwrap(),
            Cond::IfVersion(3)
        );
        assert_eq!(
            condition(&h(header::IF_MATCH, "12")).unwrap(),
            Cond::IfVersion(12)
        );
        assert_eq!(
            condition(&h(header::IF_NONE_MATCH, "*")).unwrap(),
            Cond::IfAbsent
        );
        for bad in ["\"\"", "x", "-1", "99999999999999999999999"] {
            assert!(condition(&h(header::IF_MATCH, bad)).is_err(), "{bad}");
        }
        assert!(condition(&h(header::IF_NONE_MATCH, "\"3\"")).is_err());
    }
}
