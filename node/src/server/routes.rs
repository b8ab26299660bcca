//! The HTTP surface of a node: every route and the handler module that serves it, assembled
//! in one place so that handler modules never import each other for routing (the OpenAPI
//! description, which names the handlers, is one of the routes).

use super::app::AppState;
use super::input::ApiError;
use super::{backup, batch, compat, http, listing, membership, openapi, strong};
use axum::Router;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};

/// The whole HTTP surface of a node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(http::kv_get).put(http::kv_put).delete(http::kv_delete),
        )
        .route("/v1/kv", get(listing::kv_list))
        .route(
            "/v1/strong/{*key}",
            get(strong::strong_get)
                .put(strong::strong_put)
                .delete(strong::strong_delete),
        )
        .route("/v1/batch", post(batch::batch))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/v1/cluster", get(http::cluster))
        .route("/v1/mesh", get(http::mesh))
        .route("/v1/context/merge", post(http::merge_contexts))
        .route("/v1/admin/aae/pull", post(http::aae_pull))
        .route("/v1/admin/backup", get(backup::backup_page))
        .route("/v1/admin/restore", post(backup::restore_page))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .merge(compat::routes())
        .merge(membership::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found", "no such route") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                format!("{method} is not supported on this route"),
            )
        })
        .layer(axum::middleware::from_fn(http::track))
        .with_state(state)
}
