//! Strict parsing of client input shared by the native and compatibility APIs: percent-decoding,
//! query strings with a fixed set of parameters, bounded body reads, and JSON errors.
//!
//! Every function here turns malformed input into an [`ApiError`] (a 4xx); none panics.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;

/// An error answered as JSON `{"error": ..., "detail": ...}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = super::schema::ErrorBody {
            error: self.error,
            detail: &self.detail,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is an error. Other bytes are
/// taken as they are (`+` stays `+`).
pub fn percent_decode(s: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid percent-encoding at byte {i} of {s:?}"
                    )));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Parses a query string whose parameter names must all be in `allowed`, each at most once.
pub fn parse_query(
    raw: Option<&str>,
    allowed: &[&'static str],
) -> Result<HashMap<&'static str, Vec<u8>>, ApiError> {
    let mut out = HashMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let Some(&known) = allowed.iter().find(|a| a.as_bytes() == name.as_slice()) else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {:?}; allowed: {}",
                String::from_utf8_lossy(&name),
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        };
        if out.insert(known, percent_decode(value)?).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {known} given twice"
            )));
        }
    }
    Ok(out)
}

/// A query value as UTF-8 text.
pub fn text(name: &str, v: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(v.to_vec())
        .map_err(|_| ApiError::bad_request(format!("query parameter {name} is not UTF-8")))
}

/// Parses a JSON body of at most `max` bytes, for a request that takes no query parameters.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<T, ApiError> {
    parse_query(uri.query(), &[])?;
    let body = read_body(headers, body, max).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// How far beyond a body limit the server still reads (and discards) a request body before it
/// answers 413, so the client's connection survives.
const DRAIN_EXTRA: usize = 2 << 20;

/// Reads a body of at most `max` bytes. A declared `Content-Length` above `max` is refused
/// without keeping anything (a body at most [`DRAIN_EXTRA`] over the limit is read and
/// discarded first); a body that grows past `max` is cut off; a body the client did not finish
/// is a 400.
pub async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            format!("the body is longer than {max} bytes"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?;
        if len > max as u64 {
            // Read and discard a moderately oversized body before answering, so a client still
            // sending it gets the 413 instead of a reset connection; beyond the bound, stop.
            if len <= (max + DRAIN_EXTRA) as u64 {
                let _ = axum::body::to_bytes(body, max + DRAIN_EXTRA).await;
            }
            return Err(too_large());
        }
    }
    match axum::body::to_bytes(body, max).await {
        Ok(b) => Ok(b),
        Err(e) => {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(
                    "the body ended before its declared length or could not be read",
                ))
            }
        }
    }
}

/// Parses a time to live in seconds: a whole number from 1 to [`crate::core::MAX_TTL_SECS`].
pub fn parse_ttl(t: &str) -> Result<u64, ApiError> {
    let max = crate::core::MAX_TTL_SECS;
    t.parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "ttl must be a whole number of seconds from 1 to {max}; got {t:?}"
            ))
        })
}

/// Parses the quorum parameter `name` (`r` or `w`): a number, `quorum` or `all`.
pub fn parse_quorum(t: &str, name: &str) -> Result<crate::core::Quorum, ApiError> {
    crate::core::Quorum::parse(t).ok_or_else(|| {
        ApiError::bad_request(format!("{name} must be a number, quorum or all; got {t:?}"))
    })
}
