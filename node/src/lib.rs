//! Causeway: a replicated, sharded, causally consistent key-value store.
//!
//! [`core`] is the sans-IO node logic shared by every driver; [`server`] is the production driver
//! and [`cli`] the commands that talk to a running cluster, the load generator among them (both
//! behind the default `server` feature).

#[cfg(feature = "server")]
pub mod cli;
pub mod core;
#[cfg(feature = "server")]
pub mod server;
