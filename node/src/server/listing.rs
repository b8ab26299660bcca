//! `GET /v1/kv?start=&end=&prefix=&after=&limit=`: range listing in key order across all shards.
//!
//! The page's `next` is an opaque cursor: the URL-safe base64 (no padding) of the page's last
//! key. Its alphabet (`A-Z a-z 0-9 - _`) is left alone by every URL and form encoder, so a client
//! that passes it back as `after` — encoded by its HTTP library or not — sends the same cursor.
//! A cursor that is not one the server could have issued is a 400.

use super::app::{
    AppState, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, req_error, unexpected, with_headers,
};
use super::input::{ApiError, parse_query, text};
use crate::core::{Op, Response as CoreResponse};
use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as CURSOR};
use bytes::Bytes;

/// A listing's `limit=` parameter: `default` when absent, else a number in
/// `1..=MAX_LIST_LIMIT` (400 otherwise).
pub fn page_limit(v: Option<&[u8]>, default: u32) -> Result<u32, ApiError> {
    let Some(v) = v else {
        return Ok(default);
    };
    let bad = || ApiError::bad_request(format!("limit must be a number in 1..={MAX_LIST_LIMIT}"));
    let limit = text("limit", v)?.parse::<u32>().map_err(|_| bad())?;
    check_limit(limit).ok_or_else(bad)
}

/// `limit` when it is a page size the server serves (`1..=MAX_LIST_LIMIT`).
pub fn check_limit(limit: u32) -> Option<u32> {
    Some(limit).filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
}

/// The cursor naming the position after `key`.
pub fn encode_cursor(key: &[u8]) -> String {
    CURSOR.encode(key)
}

/// The key a cursor names. The length is checked before decoding, so a hostile cursor costs no
/// more than the longest key; the empty cursor means "from the start".
pub fn decode_cursor(cursor: &[u8], max_key_bytes: usize) -> Result<Option<Bytes>, ApiError> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        ApiError::bad_request(
            "after must be the next cursor of a previous page, passed back unchanged",
        )
    };
    if cursor.len() > max_key_bytes.div_ceil(3) * 4 {
        return Err(malformed());
    }
    match CURSOR.decode(cursor) {
        Ok(key) if !key.is_empty() && key.len() <= max_key_bytes => Ok(Some(Bytes::from(key))),
        _ => Err(malformed()),
    }
}

/// The smallest byte string above every key that starts with `prefix`, or `None` when no such
/// bound exists (the prefix is empty or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let keep = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=keep].to_vec();
    end[keep] += 1;
    Some(Bytes::from(end))
}

/// `[start, end)` narrowed to the keys that start with `prefix`.
fn with_prefix(
    start: Option<Bytes>,
    end: Option<Bytes>,
    prefix: Option<Bytes>,
) -> (Option<Bytes>, Option<Bytes>) {
    let Some(prefix) = prefix.filter(|p| !p.is_empty()) else {
        return (start, end);
    };
    let start = match start {
        Some(s) if s > prefix => s,
        _ => prefix.clone(),
    };
    let end = match (end, prefix_end(&prefix)) {
        (Some(e), Some(p)) => Some(e.min(p)),
        (e, p) => e.or(p),
    };
    (Some(start), end)
}

/// The core's operation for one page of the keys in `[start, end)` that start with `prefix`,
/// after the cursor `after`.
pub fn list_op(
    (start, end, prefix): (Option<Bytes>, Option<Bytes>, Option<Bytes>),
    after: Option<&[u8]>,
    limit: u32,
    st: &AppState,
) -> Result<Op, ApiError> {
    let after = match after {
        Some(c) => decode_cursor(c, st.node.max_key_bytes)?,
        None => None,
    };
    let (start, end) = with_prefix(start, end, prefix);
    Ok(Op::List {
        start,
        end,
        after,
        limit,
        full: false,
    })
}

/// One page of the keys in `[start, end)` that start with `prefix`, in key order.
#[utoipa::path(get, path = "/v1/kv", tag = "kv",
    params(("start" = Option<String>, Query, description = "first key (inclusive)"),
        ("end" = Option<String>, Query, description = "last key (exclusive)"),
        ("prefix" = Option<String>, Query, description = "only keys with this prefix"),
        ("after" = Option<String>, Query, description = "the `next` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "page size, 1..=1000 (default 100)")),
    responses(
        (status = 200, description = "a page", body = crate::server::schema::ListPage),
        (status = 400, description = "bad request", body = crate::server::schema::ErrorBody),
        (status = 503, description = "a shard could not answer", body = crate::server::schema::ErrorBody)))]
pub async fn kv_list(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let q = parse_query(uri.query(), &["start", "end", "prefix", "after", "limit"])?;
    let limit = page_limit(q.get("limit").map(|v| &v[..]), DEFAULT_LIST_LIMIT)?;
    let get = |n: &str| q.get(n).map(|v| Bytes::copy_from_slice(v));
    let range = (get("start"), get("end"), get("prefix"));
    let op = list_op(range, q.get("after").map(Vec::as_slice), limit, &st)?;
    let reply = st.node.call(op).await;
    match reply.result {
        Ok(CoreResponse::Listed { entries, next }) => {
            let entries: Vec<_> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "key": String::from_utf8_lossy(&e.key),
                        "key_base64": B64.encode(&e.key),
                        "values": e.values.iter().map(|v| B64.encode(v)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let body = serde_json::json!({
                "entries": entries,
                "next": next.map(|n| encode_cursor(&n)),
            });
            Ok(with_headers(
                &st,
                Json(body).into_response(),
                &reply.served_by,
                None,
            ))
        }
        Ok(_) => Err(unexpected()),
        Err(e) => Err(req_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_survive_url_encoding() {
        for key in [
            &b"bench-0000000002"[..],
            b"a/b?c=d&e",
            b"\x00\xff %2D",
            b"k",
        ] {
            let c = encode_cursor(key);
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{c}"
            );
            let encoded: String = url_encoded(&c);
            assert_eq!(encoded, c, "no URL encoder changes a cursor");
            let back = decode_cursor(c.as_bytes(), 1024).expect("decodes");
            assert_eq!(back.as_deref(), Some(key));
        }
        let longest = encode_cursor(&[0xab; 1024]);
        assert!(decode_cursor(longest.as_bytes(), 1024).is_ok());
    }

    fn url_encoded(s: &str) -> String {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%5F", "_")
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let too_long = encode_cursor(&[1; 1025]);
        for bad in [
            "bench%2D0000000002",
            "a=",
            "YQ==",
            "a",
            "+/+/",
            "YR",
            too_long.as_str(),
        ] {
            let e = decode_cursor(bad.as_bytes(), 1024).expect_err(bad);
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(decode_cursor(b"", 1024).expect("empty"), None);
    }

    #[test]
    fn prefixes_narrow_the_range() {
        let b = |s: &[u8]| Some(Bytes::copy_from_slice(s));
        assert_eq!(with_prefix(None, None, b(b"ab")), (b(b"ab"), b(b"ac")));
        assert_eq!(
            with_prefix(b(b"abc"), b(b"b"), b(b"ab")),
            (b(b"abc"), b(b"ac"))
        );
        assert_eq!(
            with_prefix(b(b"a"), b(b"abc"), b(b"ab")),
            (b(b"ab"), b(b"abc"))
        );
        assert_eq!(
            with_prefix(None, None, b(b"a\xff\xff")),
            (b(b"a\xff\xff"), b(b"b"))
        );
        assert_eq!(with_prefix(None, None, b(b"\xff")), (b(b"\xff"), None));
        assert_eq!(with_prefix(b(b"x"), None, b(b"")), (b(b"x"), None));
    }
}
