pub mod core;
#[cfg(feature = "server")]
pub mod server;
