//! The production node: a tokio driver around the sans-IO core, fjall storage, the peer
//! transport, the HTTP APIs (native `/v1` and the seed-compatible `/kv-store`), configuration,
//! metrics, the `causeway` client commands and the local-cluster launcher.
//!
//! Start reading at [`serve`]: it opens storage, starts the driver thread ([`driver`]), and serves
//! HTTP and peer links on one listening socket ([`transport::SplitListener`]).

pub mod cli;
pub mod compat;
pub mod config;
pub mod driver;
pub mod fail_stop;
pub mod http;
pub mod http_server;
pub mod input;
pub mod launcher;
pub mod listing;
pub mod membership;
pub mod metrics;
pub mod seal;
pub mod storage;
pub mod transport;
pub mod ui;
pub mod values;

use anyhow::Context;
use config::Settings;
use tokio::sync::oneshot;

/// Runs one node until SIGTERM or Ctrl-C, then drains in-flight requests, stops the driver
/// (which delivers what is pending and records a clean shutdown) and returns.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let nofile = http_server::raise_nofile_limit();
    let limits = http_server::HttpLimits::for_nofile(nofile);
    let prometheus = metrics::install()?;
    if settings.core.panic_on_key.is_some() {
        tracing::warn!("TEST BUILD SWITCH: --test-panic-on-key is set; a request panics the node");
    }
    let keyring = match &settings.encryption_key_file {
        Some(path) => Some(std::sync::Arc::new(seal::Keyring::load(path)?)),
        None => None,
    };
    let storage = storage::FjallStorage::open_sealed(&settings.data_dir, keyring)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let (node, thread) = driver::spawn(
        settings.core.clone(),
        settings.advertise.clone(),
        storage,
        settings.batch_sync,
        settings.min_free_bytes,
        stop_rx,
    )?;
    let slots = http_server::connection_slots(&limits);
    let listener = transport::SplitListener::new(listener, node.inbox(), node.links(), slots);
    tracing::info!(
        listen = %settings.listen,
        advertise = %settings.advertise,
        view = ?settings.core.view.nodes,
        repl_factor = settings.core.view.repl_factor,
        join = ?settings.core.join,
        sync = ?settings.core.sync,
        data = %settings.data_dir.display(),
        instance = %settings.instance,
        nofile,
        max_connections = limits.max_connections,
        "serving"
    );
    let app =
        http::router(http::AppState::new(node, prometheus, &settings.instance)).merge(ui::routes());
    let app = http_server::with_limits(app, &limits);
    http_server::serve(listener, app, limits, shutdown_signal()).await;
    tracing::info!("HTTP drained; stopping the node");
    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the node thread panicked"))?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
