//! What every HTTP handler shares, whichever route module it is in: the application state, the
//! header names and request limits, and the mapping of core errors to HTTP errors. A leaf of the
//! server's HTTP modules: it imports none of them.

use super::driver::NodeHandle;
use super::input::ApiError;
use super::tls::NodeTls;
use crate::core::{ReqError, VersionVector, token};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// Header carrying the causal-context token, in both directions.
pub const CONTEXT_HEADER: &str = "x-causal-context";
/// Reply header naming the node that executed the request.
pub const SERVED_BY_HEADER: &str = "x-served-by";
/// Reply header of an acknowledged write or delete naming its dot, encoded as the token of the
/// one-entry context `{actor: counter}` (docs/guarantees.md, "Dots").
pub const DOT_HEADER: &str = "x-causeway-dot";
/// Default and largest page size of `GET /v1/kv`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Largest body of a small JSON request (token merge, compatibility API overhead).
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// What every handler can reach. axum clones it for every request, so it is two reference
/// counts, not a copy of the node's view and names.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<NodeHandle>,
    pub prometheus: PrometheusHandle,
    /// Client for asking other nodes about their state (cluster status, settle waits): over
    /// HTTPS with this node's certificate when TLS is on.
    pub peers: reqwest::Client,
    /// `http` or `https`: how [`Self::peers`] reaches other nodes.
    pub peer_scheme: &'static str,
    /// This node's TLS configuration (admission probes of joining nodes).
    pub tls: Option<Arc<NodeTls>>,
    /// `X-Served-By` for requests this node executed itself, built once.
    pub(super) me_header: Option<HeaderValue>,
    /// This process's instance id, named by `/healthz` and `/readyz`.
    pub instance: Arc<str>,
}

impl AppState {
    pub fn new(
        node: NodeHandle,
        prometheus: PrometheusHandle,
        instance: &str,
        tls: Option<Arc<NodeTls>>,
        peers: reqwest::Client,
    ) -> Self {
        let me_header = HeaderValue::from_str(&node.me).ok();
        AppState {
            node: Arc::new(node),
            prometheus,
            peers,
            peer_scheme: if tls.is_some() { "https" } else { "http" },
            tls,
            me_header,
            instance: instance.into(),
        }
    }
}

/// Decodes a causal-context token; malformed tokens are 400s.
pub fn decode_context(token_text: &str) -> Result<VersionVector, ApiError> {
    token::decode(token_text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Maps a core error to its HTTP form.
pub fn req_error(e: ReqError) -> ApiError {
    match e {
        ReqError::BadRequest(m) => ApiError::bad_request(m),
        ReqError::Unsatisfiable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unable to satisfy request",
            "no reachable replica covered the causal context in time",
        ),
        ReqError::Unavailable(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
        ReqError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        ReqError::InsufficientStorage(m) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient storage", m)
        }
        ReqError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too large", m),
    }
}

pub(crate) fn unexpected() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error",
        "the node answered with an unexpected response",
    )
}

/// Adds `X-Served-By` (and counts proxied requests) and, when given, `X-Causal-Context`.
pub(crate) fn with_headers(
    st: &AppState,
    mut resp: Response,
    served_by: &str,
    ctx: Option<&VersionVector>,
) -> Response {
    let served = if served_by == st.node.me {
        st.me_header.clone()
    } else {
        metrics::counter!("causeway_proxied_requests_total").increment(1);
        HeaderValue::from_str(served_by).ok()
    };
    let h = resp.headers_mut();
    if let Some(v) = served {
        h.insert(SERVED_BY_HEADER, v);
    }
    if let Some(Ok(v)) = ctx.map(|c| HeaderValue::from_maybe_shared(Bytes::from(token::encode(c))))
    {
        h.insert(CONTEXT_HEADER, v);
    }
    resp
}
