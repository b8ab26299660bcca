//! The production node: a tokio driver around the sans-IO core, fjall storage, the peer
//! transport, the HTTP APIs (native `/v1` and the seed-compatible `/kv-store`), configuration,
//! metrics and the local-cluster launcher (the client commands are in [`crate::cli`]).
//!
//! Start reading at [`serve`]: it opens storage, starts the driver thread ([`driver`]), and serves
//! HTTP and peer links on one listening socket ([`transport::SplitListener`]), and gRPC on another
//! when `--grpc-listen` is set ([`grpc`]).

pub mod app;
pub mod auth;
pub mod backup;
pub mod backup_file;
pub mod batch;
pub mod bulk_load;
pub mod certs;
pub mod compat;
pub mod config;
pub mod driver;
pub mod fail_stop;
pub mod grpc;
pub mod grpc_codec;
pub mod http;
pub mod http_server;
pub mod inbox;
pub mod input;
pub mod launcher;
pub mod listing;
pub mod membership;
pub mod metrics;
pub mod openapi;
pub mod planted;
pub mod routes;
pub mod schema;
pub mod seal;
pub mod storage;
pub mod strong;
pub mod tls;
pub mod transport;
pub mod ui;
pub mod values;

use anyhow::Context;
use config::{Security, Settings, is_loopback};
use std::sync::Arc;
use tokio::sync::oneshot;
use transport::{Accepting, PeerSecurity};

/// What [`serve`] protects its port with, loaded from [`Security`].
struct Protection {
    accepting: Accepting,
    tls: Option<Arc<tls::NodeTls>>,
    tokens: Option<Arc<auth::Tokens>>,
}

impl Protection {
    /// No TLS and no tokens: plaintext peers and clients, unauthenticated.
    fn plaintext() -> Self {
        Protection {
            accepting: Accepting {
                security: PeerSecurity::Plain,
                plain_http: true,
            },
            tls: None,
            tokens: None,
        }
    }
}

fn protection(settings: &Settings) -> anyhow::Result<Protection> {
    Ok(match &settings.security {
        Security::Insecure => {
            tracing::warn!(
                "RUNNING INSECURE (--insecure / CAUSEWAY_INSECURE): no TLS between peers, no \
                 client tokens. Anyone who can reach {} can read, overwrite and delete every key \
                 and reconfigure the cluster. Use it only on a network you trust.",
                settings.listen
            );
            Protection::plaintext()
        }
        Security::LoopbackDev => {
            tracing::warn!(
                "no TLS and no tokens configured: serving plaintext without authentication on \
                 loopback only ({}); see docs/security.md",
                settings.listen
            );
            Protection::plaintext()
        }
        Security::Secure { tls, tokens } => {
            let tls = match tls {
                Some(files) => Some(Arc::new(
                    tls::NodeTls::load(files, &settings.advertise).context("loading TLS")?,
                )),
                None => None,
            };
            let tokens = match tokens {
                Some(path) => Some(auth::Tokens::load(path)?),
                None => None,
            };
            if tokens.is_none() {
                tracing::warn!("no --tokens-file: clients are not authenticated (loopback only)");
            }
            Protection {
                accepting: Accepting {
                    security: match &tls {
                        Some(t) => PeerSecurity::Tls(t.clone()),
                        None => PeerSecurity::Plain,
                    },
                    plain_http: tls.is_none() || is_loopback(&settings.listen),
                },
                tls,
                tokens,
            }
        }
    })
}

/// Runs one node until SIGTERM or Ctrl-C, then drains in-flight requests, stops the driver
/// (which delivers what is pending and records a clean shutdown) and returns.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let nofile = http_server::raise_nofile_limit();
    let limits = http_server::HttpLimits::for_nofile(nofile);
    tls::install_provider();
    let protection = protection(&settings)?;
    let prometheus = metrics::install()?;
    if settings.core.panic_on_key.is_some() {
        tracing::warn!("TEST BUILD SWITCH: --test-panic-on-key is set; a request panics the node");
    }
    let keyring = match &settings.encryption_key_file {
        Some(path) => Some(std::sync::Arc::new(seal::Keyring::load(path)?)),
        None => None,
    };
    let mut storage =
        storage::FjallStorage::open_tuned(&settings.data_dir, keyring, settings.storage)?;
    crate::core::claim_cluster(&mut storage, settings.core.cluster)
        .map_err(|e| anyhow::anyhow!("{}: {e}", settings.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let grpc_listener = match &settings.grpc_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (--grpc-listen)"))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let (node, thread) = driver::spawn(
        settings.core.clone(),
        settings.advertise.clone(),
        storage,
        settings.batch_sync,
        settings.min_free_bytes,
        protection.accepting.security.clone(),
        stop_rx,
    )?;
    let slots = http_server::connection_slots(&limits);
    let grpc_listener = grpc_listener.map(|l| {
        let accepting = grpc::accepting(&protection.accepting);
        transport::SplitListener::new(l, node.inbox(), node.links(), accepting, slots.clone())
    });
    let listener = transport::SplitListener::new(
        listener,
        node.inbox(),
        node.links(),
        protection.accepting.clone(),
        slots,
    );
    tracing::info!(
        listen = %settings.listen,
        grpc_listen = settings.grpc_listen.as_deref().unwrap_or("off"),
        advertise = %settings.advertise,
        view = ?settings.core.view.nodes,
        repl_factor = settings.core.view.repl_factor,
        join = ?settings.core.join,
        cluster_id = settings.core.cluster,
        mesh_upstreams = ?settings.core.mesh_upstreams,
        mesh_member = settings.core.mesh_member,
        sync = ?settings.core.sync,
        data = %settings.data_dir.display(),
        instance = %settings.instance,
        nofile,
        max_connections = limits.max_connections,
        tls = protection.tls.is_some(),
        tokens = protection.tokens.is_some(),
        "serving"
    );
    let peers = membership::peer_client(protection.tls.as_deref());
    let state = app::AppState::new(
        node,
        prometheus,
        &settings.instance,
        protection.tls.clone(),
        peers,
    );
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    });
    let stopped = |mut s: tokio::sync::watch::Receiver<bool>| async move {
        let _ = s.wait_for(|s| *s).await;
    };
    let grpc = grpc_listener.map(|l| {
        let serving = grpc::serve(
            l,
            state.clone(),
            protection.tokens.clone(),
            limits.clone(),
            stopped(stopping.clone()),
        );
        tokio::spawn(serving)
    });
    let mut app = routes::router(state).merge(ui::routes());
    if let Some(tokens) = protection.tokens {
        tokens.clone().watch();
        app = app.layer(axum::middleware::from_fn_with_state(tokens, auth::require));
    }
    let app = http_server::with_limits(app, &limits);
    http_server::serve(listener, app, limits, stopped(stopping)).await;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Err(e)) => tracing::warn!("the gRPC server failed: {e:#}"),
            Err(e) => tracing::warn!("the gRPC server panicked: {e}"),
            Ok(Ok(())) => {}
        }
    }
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
