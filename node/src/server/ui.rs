//! The web UI (`GET /ui/`): one self-contained page showing the nodes, the shards, this node's
//! counters, and a key browser that reads and writes through the native API with a session
//! causal context.

use axum::Router;
use axum::response::{Html, Redirect};
use axum::routing::get;

const PAGE: &str = include_str!("ui.html");

pub fn routes() -> Router {
    Router::new()
        .route("/ui/", get(|| async { Html(PAGE) }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
}
