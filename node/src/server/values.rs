//! How the native API renders a read's versions (docs/guarantees.md): 200 with the one value and its
//! metadata, 300 `multipart/mixed` with one part per sibling, 404, or the JSON form; and
//! `?vtag=` selection of one sibling.
//!
//! Every value carries its metadata: `Content-Type` (as written; `application/octet-stream`
//! when none was given), `Last-Modified` (the version's hybrid timestamp) and `X-Vtag` (a
//! stable tag derived from the version's dot, the same on every replica).

use super::input::ApiError;
use crate::core::{Dot, Version, VersionVector, token};
use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::time::{Duration, SystemTime};

/// Header naming a sibling's version tag, on single values and on every multipart part.
pub const VTAG_HEADER: &str = "x-vtag";
/// Media type of a value written without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The `Content-Type` of a value written with `content_type`.
fn content_type(v: &Version) -> HeaderValue {
    v.content_type
        .as_ref()
        .and_then(|c| HeaderValue::from_maybe_shared(c.clone()).ok())
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE))
}

/// `Last-Modified` of a version: its timestamp (microseconds since the Unix epoch) as an HTTP date.
fn last_modified(v: &Version) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_micros(v.ts))
}

/// The live versions among `versions` with distinct content (value and content type), in dot
/// order: the first of equal ones stands for them.
pub fn live_versions(versions: &[Version]) -> Vec<&Version> {
    let mut out: Vec<&Version> = Vec::new();
    for v in versions.iter().filter(|v| v.value.is_some()) {
        if !out
            .iter()
            .any(|o| o.value == v.value && o.content_type == v.content_type)
        {
            out.push(v);
        }
    }
    out
}

/// The one sibling tagged `vtag`, or a 404 naming the tag.
pub fn select_vtag(versions: Vec<Version>, vtag: &str) -> Result<Vec<Version>, ApiError> {
    let found: Vec<Version> = versions.into_iter().filter(|v| v.vtag() == vtag).collect();
    if found.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("the key has no sibling with vtag {vtag:?}"),
        ));
    }
    Ok(found)
}

/// The status of a read that found the live versions `live`: 404, 200 or 300.
pub fn read_status(live: &[&Version]) -> StatusCode {
    match live.len() {
        0 => StatusCode::NOT_FOUND,
        1 => StatusCode::OK,
        _ => StatusCode::MULTIPLE_CHOICES,
    }
}

/// The JSON form of a read (`values`, `siblings`, `deleted`, `context`); `live` is
/// [`live_versions`] of `versions`.
pub fn read_json(
    versions: &[Version],
    live: &[&Version],
    ctx: &VersionVector,
) -> serde_json::Value {
    let values: Vec<String> = live
        .iter()
        .filter_map(|v| v.value.as_ref().map(|b| B64.encode(b)))
        .collect();
    let siblings: Vec<_> = versions.iter().map(sibling_json).collect();
    serde_json::json!({
        "values": values,
        "siblings": siblings,
        "deleted": !versions.is_empty() && live.is_empty(),
        "context": token::encode(ctx),
    })
}

/// 200 with the value, 300 with `multipart/mixed` siblings, or 404; or the JSON form.
pub fn render_read(versions: &[Version], ctx: &VersionVector, json: bool) -> Response {
    let live = live_versions(versions);
    metrics::histogram!("causeway_siblings_per_read").record(live.len() as f64);
    let deleted = !versions.is_empty() && live.is_empty();
    if json {
        return (read_status(&live), Json(read_json(versions, &live, ctx))).into_response();
    }
    match live.as_slice() {
        [] => {
            let detail = if deleted {
                "the key was deleted"
            } else {
                "the key does not exist"
            };
            ApiError::new(StatusCode::NOT_FOUND, "not found", detail).into_response()
        }
        [one] => {
            let mut resp = (StatusCode::OK, one.value.clone().unwrap_or_default()).into_response();
            let h = resp.headers_mut();
            for (name, value) in metadata(one) {
                h.insert(name, value);
            }
            resp
        }
        many => {
            let (boundary, body) = multipart(many);
            (
                StatusCode::MULTIPLE_CHOICES,
                [(
                    header::CONTENT_TYPE,
                    format!("multipart/mixed; boundary={boundary}"),
                )],
                body,
            )
                .into_response()
        }
    }
}

/// The headers describing one value.
fn metadata(v: &Version) -> [(HeaderName, HeaderValue); 3] {
    let date = HeaderValue::from_str(&last_modified(v)).expect("an HTTP date is a header value");
    let vtag = HeaderValue::from_str(&v.vtag()).expect("a vtag is URL-safe base64");
    [
        (header::CONTENT_TYPE, content_type(v)),
        (header::LAST_MODIFIED, date),
        (HeaderName::from_static(VTAG_HEADER), vtag),
    ]
}

/// A dot as the token of the one-entry context `{actor: counter}` (docs/guarantees.md, "Dots").
pub fn dot_token(dot: Dot) -> String {
    let mut one = VersionVector::new();
    one.add(dot);
    token::encode(&one)
}

/// One sibling in the JSON form: value (base64) and metadata, or `deleted` for a tombstone;
/// `expires` (HTTP date) and `expires_us` (microseconds since the Unix epoch) for a TTL write.
fn sibling_json(v: &Version) -> serde_json::Value {
    let mut o = serde_json::json!({
        "last_modified": last_modified(v),
        "vtag": v.vtag(),
        "dot": dot_token(v.dot),
    });
    if let Some(us) = v.expires {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(us);
        o["expires"] = httpdate::fmt_http_date(at).into();
        o["expires_us"] = us.into();
    }
    match &v.value {
        Some(value) => {
            o["value"] = B64.encode(value).into();
            o["content_type"] = String::from_utf8_lossy(content_type(v).as_bytes()).into();
        }
        None => o["deleted"] = true.into(),
    }
    o
}

/// A `multipart/mixed` body with one part per version, each with its metadata, and its boundary
/// (which occurs in no value).
fn multipart(versions: &[&Version]) -> (String, Vec<u8>) {
    let values: Vec<&[u8]> = versions
        .iter()
        .map(|v| v.value.as_deref().unwrap_or_default())
        .collect();
    let mut n: u64 = 0x9e37_79b9_7f4a_7c15;
    let boundary = loop {
        let b = format!("causeway-{n:016x}");
        if !values
            .iter()
            .any(|v| v.windows(b.len()).any(|w| w == b.as_bytes()))
        {
            break b;
        }
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    };
    let mut body = Vec::new();
    for (v, value) in versions.iter().zip(values) {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        for (name, header) in metadata(v) {
            body.extend_from_slice(name.as_str().as_bytes());
            body.extend_from_slice(b": ");
            body.extend_from_slice(header.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("Content-Length: {}\r\n\r\n", value.len()).as_bytes());
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Actor;
    use bytes::Bytes;

    fn ver(counter: u64, value: &'static str, ct: Option<&'static str>) -> Version {
        Version {
            dot: Dot::new(Actor::new(1, 1, 1), counter),
            value: Some(Bytes::from_static(value.as_bytes())),
            ts: 1_700_000_000_000_000 + counter,
            content_type: ct.map(|c| Bytes::from_static(c.as_bytes())),
            expires: None,
        }
    }

    #[test]
    fn parts_carry_content_type_last_modified_and_vtag() {
        let a = ver(1, "{}", Some("application/json"));
        let b = ver(2, "hi", None);
        let (boundary, body) = multipart(&[&a, &b]);
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);
        assert!(
            text.contains("content-type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("content-type: application/octet-stream\r\n"));
        assert!(text.contains("last-modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"));
        assert!(text.contains(&format!("x-vtag: {}\r\n", a.vtag())));
        assert!(text.contains(&format!("x-vtag: {}\r\n", b.vtag())));
    }

    #[test]
    fn equal_values_of_different_types_stay_apart() {
        let vs = [
            ver(1, "x", None),
            ver(2, "x", None),
            ver(3, "x", Some("text/plain")),
        ];
        let live = live_versions(&vs);
        assert_eq!(live.len(), 2);
        assert_eq!(live[0].dot, vs[0].dot);
        assert_eq!(live[1].dot, vs[2].dot);
    }
}
