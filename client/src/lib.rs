//! A client library for Causeway, the replicated, causally consistent key-value store.
//!
//! - A [`Client`] talks to a cluster through a list of nodes, with a bearer token and a custom
//!   CA for `https://` nodes (as `causeway cluster` and `causeway certs` generate them), failing
//!   over between nodes with bounded retries. A write whose outcome is unknown (sent, then a
//!   503 or a broken connection) is reported as [`Error::Indeterminate`], never resent.
//! - A [`Session`] carries the causal context (`X-Causal-Context`) from reply to request, so a
//!   session reads its own writes and never goes back in time, whichever node serves it.
//! - Reads return [`Versions`]: missing, deleted, one value, or siblings;
//!   [`Session::resolve`] merges siblings and writes the result in their place.
//! - [`Session::list`] walks a key range page by page ([`Listing`]); [`Session::batch`] runs up
//!   to 1,000 operations in one request.
//! - [`Client::strong_get`], [`Client::strong_put`] and [`Client::strong_delete`] reach strong
//!   keys: linearizable, versioned, with compare-and-set ([`strong`]).
//! - [`Client`]'s admin calls (`cluster`, `change_view`, `join`, `aae_pull`, `metrics`, backup
//!   pages) need the admin role.
//!
//! ```no_run
//! # async fn demo() -> causeway_client::Result<()> {
//! use causeway_client::{Client, Session, Versions};
//! let client = Client::builder()
//!     .nodes(["https://127.0.0.1:8080", "https://127.0.0.1:8081"])
//!     .token(std::fs::read_to_string("causeway-data/admin.token").unwrap_or_default())
//!     .ca_file("causeway-data/tls/ca.pem")?
//!     .build()?;
//! let session = Session::new(client);
//! session.put("greeting", "hello").await?;
//! match session.get("greeting").await?.versions {
//!     Versions::Value(v) => assert_eq!(v, "hello"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! The crate does not depend on the server package: it speaks the HTTP API only (the
//! repository's README documents it), and joins causal tokens on a node
//! (`POST /v1/context/merge`) in the rare case it has to (see [`session`]).

mod admin;
mod batch;
mod client;
mod error;
mod kv;
mod list;
pub mod session;
pub mod strong;

pub use admin::{BACKUP_COUNT_HEADER, BACKUP_NEXT_HEADER, BackupPage, Scope};
pub use batch::{BatchOp, BatchResult, MAX_BATCH_OPS};
pub use client::{
    CONTEXT_HEADER, Client, ClientBuilder, Reply, Request, Retry, SERVED_BY_HEADER, base_url,
    encode_component,
};
pub use error::{Error, Result};
pub use kv::{Quorum, Read, Sibling, Versions};
pub use list::{Entry, ListOptions, Listing, Page};
pub use reqwest::Method;
pub use session::Session;
pub use strong::{Cond, StrongWrite};
