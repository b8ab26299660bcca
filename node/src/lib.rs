//! Causeway: a replicated, sharded, causally consistent key-value store.
//!
//! [`core`] is the sans-IO node logic shared by every driver; [`server`] is the production driver
//! and [`bench`] the load generator (both behind the default `server` feature).

#[cfg(feature = "server")]
pub mod bench;
pub mod core;
#[cfg(feature = "server")]
pub mod server;
