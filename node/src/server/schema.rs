//! The response and request bodies of the HTTP API as OpenAPI schemas (utoipa `ToSchema`).
//! [`ErrorBody`] is what every native error serializes; the others describe bodies the handlers
//! build with `serde_json` and are never constructed (hence `allow(dead_code)`): `ci/fuzz` holds
//! them to the truth by running schemathesis against the served description (see `openapi.rs`).

use utoipa::ToSchema;

/// Every error of the native API: `{"error", "detail"}` ([`super::input::ApiError`]).
#[derive(ToSchema, serde::Serialize)]
pub struct ErrorBody<'a> {
    /// A short, fixed description (`bad request`, `not found`, …).
    pub error: &'a str,
    /// What exactly went wrong.
    pub detail: &'a str,
}

/// One version of a key in the JSON read form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SiblingJson {
    /// The version's timestamp as an HTTP date.
    last_modified: String,
    vtag: String,
    /// The version's dot as a one-entry context token.
    dot: String,
    /// The value, base64 (absent for a tombstone).
    value: Option<String>,
    content_type: Option<String>,
    /// Present (true) for a tombstone.
    deleted: Option<bool>,
    /// When the version expires (TTL writes only), as an HTTP date.
    expires: Option<String>,
    /// The same expiry in microseconds since the Unix epoch.
    expires_us: Option<u64>,
}

/// A read in JSON form (`Accept: application/json`, batch gets).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadJson {
    /// The distinct live values, base64.
    values: Vec<String>,
    siblings: Vec<SiblingJson>,
    /// True when every version is a tombstone.
    deleted: bool,
    /// The causal-context token to write after this read.
    context: String,
}

/// A 404 of a read: the JSON read form when JSON was asked for, else an error.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum NotFound {
    Read(ReadJson),
    Error(ErrorBody<'static>),
}

/// One key of a listing page.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ListEntryJson {
    /// The key as UTF-8 (lossy).
    key: String,
    key_base64: String,
    /// The live values, base64.
    values: Vec<String>,
}

/// A listing page.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ListPage {
    entries: Vec<ListEntryJson>,
    /// Cursor of the next page (pass it as `after`); null on the last page.
    next: Option<String>,
}

/// The result of one batch operation: its `status` and the fields of the single-key reply
/// (the JSON read form for gets, `context` for writes, `error`/`detail` for failures).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchResultJson {
    status: u16,
    served_by: Option<String>,
    context: Option<String>,
    values: Option<Vec<String>>,
    siblings: Option<Vec<SiblingJson>>,
    deleted: Option<bool>,
    error: Option<String>,
    detail: Option<String>,
}

/// The reply of `POST /v1/batch`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchReply {
    results: Vec<BatchResultJson>,
    /// Joins the contexts of every operation that succeeded.
    context: String,
}

/// The reply of `POST /v1/context/merge`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MergedContext {
    context: String,
}

/// `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    status: String,
    node: String,
    instance: String,
}

/// `GET /readyz`: ready, or why not.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    ready: bool,
    node: String,
    instance: String,
    error: Option<String>,
    detail: Option<String>,
}

/// A reply of the compatibility API (the seed's fields; which appear depends on the request).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CompatReply {
    message: Option<String>,
    error: Option<String>,
    detail: Option<String>,
    #[serde(rename = "doesExist")]
    does_exist: Option<bool>,
    value: Option<String>,
    replaced: Option<bool>,
    #[serde(rename = "causal-context")]
    causal_context: Option<String>,
    /// The node that executed the request, when it was proxied.
    address: Option<String>,
    #[serde(rename = "key-count")]
    key_count: Option<u64>,
    #[serde(rename = "shard-id")]
    shard_id: Option<String>,
    shards: Option<Vec<String>>,
    replicas: Option<Vec<String>>,
}

/// The body of a compatibility-API request (all fields optional; GET and DELETE take only
/// `causal-context`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CompatRequest {
    value: Option<String>,
    #[serde(rename = "causal-context")]
    causal_context: Option<String>,
}

/// A successful strong-key write: the key's new version (also in `ETag`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StrongWritten {
    version: u64,
}

/// A strong-key write whose precondition failed: `error` is `precondition_failed` and
/// `version` the key's current version (also in `ETag`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PreconditionFailed {
    error: String,
    detail: String,
    version: u64,
}

/// `GET /v1/mesh`: this node's side of the multi-cluster mesh (docs/mesh.md), the core's
/// `MeshStatus`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Mesh {
    /// This cluster's id (0: outside any mesh).
    cluster: u32,
    upstreams: Vec<MeshUpstream>,
    /// Downstream nodes fed from here: `[keys queued, keys dropped]` per node address.
    subscribers: std::collections::HashMap<String, Vec<u64>>,
    /// Keys dropped from full subscriber queues since this node started.
    queue_drops: u64,
}

/// One upstream cluster in `GET /v1/mesh`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MeshUpstream {
    /// The name given with `--mesh-upstream NAME=HOST:PORT`.
    name: String,
    /// The configured upstream node.
    node: String,
    /// The upstream's cluster id, once its layout arrived.
    cluster: Option<u32>,
    /// Why the upstream is refused (a partition-count mismatch, this cluster's own id).
    refused: Option<String>,
    /// Wall-clock time (µs since the Unix epoch) of the last message from the upstream; 0: never.
    last_heard_us: u64,
    /// Keys received through the real-time feed.
    keys_pushed: u64,
    /// Keys the feed changed here.
    keys_applied: u64,
    /// Completed full syncs (one partition each).
    full_syncs: u64,
    full_syncs_failed: u64,
    /// Keys full syncs repaired here (what the feed had missed).
    keys_repaired: u64,
    /// Bytes of full-sync messages exchanged.
    bytes: u64,
    /// Wall-clock time (µs) of the last completed full sync, per partition number.
    last_full_sync_us: std::collections::HashMap<String, u64>,
}
