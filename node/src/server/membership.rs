//! Membership endpoints (`PUT /v1/cluster/view`, `POST /v1/cluster/join`). View changes with
//! data handoff are not built yet, so both answer 501 with the reason rather than 404.

use super::input::ApiError;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{post, put};

/// Why membership changes are refused, shared with the compatibility API's view-change.
pub const NOT_YET: &str = "membership changes (join, view change with data handoff) are not \
implemented in this version; do not restart nodes with a different view: keys whose partitions \
would move are not handed off";

fn not_implemented() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not implemented", NOT_YET)
}

pub fn routes() -> Router {
    Router::new()
        .route("/v1/cluster/view", put(|| async { not_implemented() }))
        .route("/v1/cluster/join", post(|| async { not_implemented() }))
}
