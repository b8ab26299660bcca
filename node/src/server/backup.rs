//! The node's side of backups and restores (admin role, like every `/v1/admin` route).
//!
//! - `GET /v1/admin/backup?after=CURSOR&limit=N` returns one page of whole version sets in key
//!   order across all shards (tombstone-only keys included), read from one replica per shard
//!   while the cluster serves: the body is a backup frame ([`super::backup_file`]), with the
//!   number of keys in `X-Backup-Count` and, when more may follow, the cursor of the next page
//!   in `X-Backup-Next` (the listing's cursor: pass it back unchanged as `after`).
//! - `POST /v1/admin/restore` takes one frame and joins every set into its key, at a replica of
//!   the key: one [`Op::MergeBatch`] per shard the frame's keys fall in (the DVV merge
//!   anti-entropy uses, so nothing newer is overwritten and a restore applied twice changes
//!   nothing the second time). 200 `{"keys": n, "changed": m}`; the first failing shard's error
//!   otherwise (nothing is undone: merges are idempotent, so the frame can be sent again).

use super::app::{AppState, MAX_LIST_LIMIT, req_error, unexpected};
use super::backup_file::MAX_FRAME_BYTES;
use super::input::{ApiError, parse_query, read_body};
use super::listing::{decode_cursor, encode_cursor, page_limit};
use crate::core::{Op, Response as CoreResponse, VersionSet};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;

pub const COUNT_HEADER: &str = "x-backup-count";
pub const NEXT_HEADER: &str = "x-backup-next";

/// A frame's contents: keys with their version sets.
pub type Entries = Vec<(Bytes, VersionSet)>;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_FRAME_BYTES }>()
}

/// Encodes a frame.
pub fn encode_entries(entries: &Entries) -> Vec<u8> {
    bincode::serde::encode_to_vec(entries, bincode::config::standard())
        .expect("encoding bytes and integers cannot fail")
}

/// Most keys in one frame (a backup page holds at most 1,000).
pub const MAX_FRAME_KEYS: u64 = crate::core::MAX_MERGE_BATCH as u64;

/// The number of keys a frame claims (the encoding's length prefix), read without decoding
/// anything else.
pub fn claimed_keys(b: &[u8]) -> Result<u64, String> {
    let (keys, _): (u64, usize) = bincode::serde::decode_from_slice(b, bincode_config())
        .map_err(|e| format!("not a backup frame: {e}"))?;
    Ok(keys)
}

fn too_many_keys(keys: u64) -> String {
    format!("the frame claims {keys} keys; a frame holds at most {MAX_FRAME_KEYS}")
}

/// Decodes a frame, refusing trailing bytes. The key count is checked against
/// [`MAX_FRAME_KEYS`] ([`claimed_keys`]) before anything is decoded, and decoding is bounded by
/// [`MAX_FRAME_BYTES`], so a hostile frame cannot make it allocate more than a real one.
pub fn decode_entries(b: &[u8]) -> Result<Entries, String> {
    let keys = claimed_keys(b)?;
    if keys > MAX_FRAME_KEYS {
        return Err(too_many_keys(keys));
    }
    let (entries, used): (Entries, usize) = bincode::serde::decode_from_slice(b, bincode_config())
        .map_err(|e| format!("not a backup frame: {e}"))?;
    if used != b.len() {
        return Err(format!("{} bytes follow the frame", b.len() - used));
    }
    Ok(entries)
}

pub async fn backup_page(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let q = parse_query(uri.query(), &["after", "limit"])?;
    let limit = page_limit(q.get("limit").map(|v| &v[..]), MAX_LIST_LIMIT)?;
    let after = match q.get("after") {
        Some(c) => decode_cursor(c, st.node.max_key_bytes)?,
        None => None,
    };
    let op = Op::List {
        start: None,
        end: None,
        after,
        limit,
        full: true,
    };
    let reply = st.node.call(op).await;
    let (entries, next) = match reply.result {
        Ok(CoreResponse::Listed { entries, next }) => (entries, next),
        Ok(_) => return Err(unexpected()),
        Err(e) => return Err(req_error(e)),
    };
    let entries: Entries = entries
        .into_iter()
        .filter_map(|e| Some((e.key, e.set?)))
        .collect();
    let mut resp = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        encode_entries(&entries),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(COUNT_HEADER, HeaderValue::from(entries.len()));
    if let Some(Ok(v)) = next.map(|n| HeaderValue::from_str(&encode_cursor(&n))) {
        h.insert(NEXT_HEADER, v);
    }
    Ok(resp)
}

/// Restores one frame: its keys grouped by shard (by this node's view), each group joined by
/// ONE [`Op::MergeBatch`] (the core merges, stores and repairs the group in one turn), the
/// groups in parallel. A frame of more than [`MAX_FRAME_KEYS`] keys or [`MAX_FRAME_BYTES`]
/// bytes is refused with 413 before it is decoded.
pub async fn restore_page(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    parse_query(uri.query(), &[])?;
    let body = read_body(&headers, body, MAX_FRAME_BYTES).await?;
    let claimed = claimed_keys(&body).map_err(ApiError::bad_request)?;
    if claimed > MAX_FRAME_KEYS {
        let why = too_many_keys(claimed);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
            why,
        ));
    }
    let entries = decode_entries(&body).map_err(ApiError::bad_request)?;
    drop(body);
    let keys = entries.len();
    let view = st.node.view();
    let mut shards: BTreeMap<u32, Entries> = BTreeMap::new();
    for (key, set) in entries {
        shards
            .entry(view.shard_of_key(&key))
            .or_default()
            .push((key, set));
    }
    let mut running = tokio::task::JoinSet::new();
    for sets in shards.into_values() {
        let st = st.clone();
        running.spawn(async move { st.node.call(Op::MergeBatch { sets }).await });
    }
    let mut changed = 0;
    let mut failure = None;
    while let Some(done) = running.join_next().await {
        let reply = done.map_err(|_| unexpected())?;
        match reply.result {
            Ok(CoreResponse::MergedBatch { changed: c }) => changed += c,
            Ok(_) => failure = failure.or(Some(unexpected())),
            Err(e) => failure = failure.or(Some(req_error(e))),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Json(serde_json::json!({"keys": keys, "changed": changed})).into_response()),
    }
}
