//! The Prometheus recorder behind `GET /metrics`. Metric names (all prefixed `causeway_`):
//! `http_requests_total{route,method,status}`, `http_request_duration_seconds{route,method}`,
//! `proxied_requests_total`, `storage_sync_seconds`, `storage_background_sync_seconds`
//! (`sync = "batch"`), `replication_unacked{peer}`, `peer_queue_depth{peer}`,
//! `peer_messages_dropped_total{peer}`, `causal_waits`, `pending_writes`,
//! `pending_client_requests`, `live_keys`, `view_epoch`, `handoff_retained_partitions`,
//! `handoff_awaiting_partitions`, `forwarded_total`, `failovers_total`,
//! `replication_dropped_total`, `replication_unacked_bytes{peer}`, `replication_resent_total`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Latency buckets in seconds, 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the global recorder and starts its upkeep task. Call once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
