//! The Prometheus recorder behind `GET /metrics`: every family is described here (its `# HELP`),
//! whoever records it. The driver sets the node's gauges and counters every second
//! (`driver.rs`), HTTP handlers and storage record their own, and [`install`]'s upkeep task sets
//! build and process metrics.
//!
//! No series outlives what it describes: per-peer gauges are set for the view's members only,
//! and the exporter removes a gauge series not set for [`IDLE`] (the exporter cannot delete a
//! series on demand, so a removed peer's series disappears within [`IDLE`] of its removal).
//! Counters carry no peer label for the same reason.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::time::Duration;

/// Latency buckets in seconds, 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets of `causeway_siblings_per_read`.
const SIBLING_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0];
/// A gauge series not set for this long is removed from the output.
pub const IDLE: Duration = Duration::from_secs(15);
const UPKEEP: Duration = Duration::from_secs(5);
/// Linux reports process CPU time in clock ticks of `USER_HZ`, which is 100 on every
/// architecture Rust supports.
const USER_HZ: f64 = 100.0;

/// Installs the global recorder, describes every family and starts the upkeep task (idle
/// series removal, build and process metrics). Call once per process, on a Tokio runtime.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("causeway_siblings_per_read".into()),
            SIBLING_BUCKETS,
        )?
        .idle_timeout(MetricKindMask::GAUGE, Some(IDLE))
        .install_recorder()?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            every.tick().await;
            metrics::gauge!("causeway_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            record_process();
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Sets the `process_*` gauges from `/proc/self` (Linux; elsewhere they are absent).
fn record_process() {
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let pages: Vec<f64> = statm
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if let [virt, rss, ..] = pages[..] {
            const PAGE: f64 = 4096.0;
            metrics::gauge!("process_virtual_memory_bytes").set(virt * PAGE);
            metrics::gauge!("process_resident_memory_bytes").set(rss * PAGE);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(14), ticks(15)) {
            metrics::gauge!("process_cpu_seconds_total").set((user + system) / USER_HZ);
        }
    }
}

/// `# HELP` and unit of every family this process exports.
fn describe() {
    let c = |name: &'static str, unit: Option<Unit>, help: &'static str| match unit {
        Some(u) => describe_counter!(name, u, help),
        None => describe_counter!(name, help),
    };
    let g = |name: &'static str, unit: Option<Unit>, help: &'static str| match unit {
        Some(u) => describe_gauge!(name, u, help),
        None => describe_gauge!(name, help),
    };
    let secs = Some(Unit::Seconds);
    let bytes = Some(Unit::Bytes);
    // HTTP and storage.
    c(
        "causeway_http_requests_total",
        None,
        "HTTP requests answered, by route, method and status.",
    );
    describe_histogram!(
        "causeway_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route and method."
    );
    c(
        "causeway_proxied_requests_total",
        None,
        "Client requests another node executed.",
    );
    describe_histogram!(
        "causeway_storage_sync_seconds",
        Unit::Seconds,
        "Time the driver spent making storage durable (fsync) per turn."
    );
    describe_histogram!(
        "causeway_storage_background_sync_seconds",
        Unit::Seconds,
        "Time of each journal fsync of the background syncer (sync = batch)."
    );
    describe_histogram!(
        "causeway_siblings_per_read",
        "Live sibling values per successful native read."
    );
    c(
        "causeway_sibling_warnings_total",
        None,
        "Writes that left a key with 25 or more siblings.",
    );
    c(
        "causeway_sibling_refusals_total",
        None,
        "Writes refused because they would leave a key with more than max_siblings siblings.",
    );
    // Replication and peers.
    g(
        "causeway_replication_unacked",
        None,
        "Keys whose replication a peer has not acknowledged, per view member.",
    );
    c(
        "causeway_replication_dropped_total",
        None,
        "Replications given up because a peer's outbox was full (anti-entropy repairs them).",
    );
    g(
        "causeway_peer_queue_depth",
        None,
        "Messages waiting in the outbound queue to a peer, per view member.",
    );
    c(
        "causeway_peer_messages_dropped_total",
        None,
        "Messages dropped because a peer's outbound queue was full.",
    );
    g(
        "causeway_suspected_peers",
        None,
        "View members this node has not heard from within suspect_after.",
    );
    g(
        "causeway_replication_unacked_bytes",
        bytes,
        "Bytes of replication copies a peer has not acknowledged (bounded by peer_buffer_bytes).",
    );
    c(
        "causeway_replication_resent_total",
        None,
        "Replication copies sent again after their acknowledgement timed out.",
    );
    c(
        "causeway_http_connections_shed_total",
        None,
        "Client connections refused with 503 because the connection cap was reached.",
    );
    c(
        "causeway_storage_errors_total",
        None,
        "Storage commits or syncs that failed (writes get 507 until one succeeds).",
    );
    g(
        "causeway_storage_free_bytes",
        bytes,
        "Free bytes on the data directory's file system.",
    );
    c(
        "causeway_peer_rejected_total",
        None,
        "Peer links and messages refused (preamble, framing, sender, validation, or a node of another cluster sending a non-mesh message: mesh_only, outsider, not_in_mesh) before reaching the core, by reason.",
    );
    c(
        "causeway_auth_rejected_total",
        None,
        "Client requests refused for a missing or invalid token (unauthenticated) or a role too weak (forbidden).",
    );
    c(
        "causeway_forwarded_total",
        None,
        "Client requests this node forwarded to a replica of another shard.",
    );
    c(
        "causeway_failovers_total",
        None,
        "Forwarded requests retried at the next replica.",
    );
    // Requests in flight and data.
    g(
        "causeway_causal_waits",
        None,
        "Reads and writes waiting for this replica to apply the writes their context names.",
    );
    g(
        "causeway_pending_writes",
        None,
        "Writes waiting for their w acknowledgements.",
    );
    g(
        "causeway_pending_client_requests",
        None,
        "Client requests the driver has not answered yet.",
    );
    g(
        "causeway_live_keys",
        None,
        "Keys with a live value stored at this node.",
    );
    g(
        "causeway_view_epoch",
        None,
        "Epoch number of the view this node runs with.",
    );
    // Anti-entropy.
    c(
        "causeway_aae_exchanges_total",
        None,
        "Anti-entropy exchanges this node completed.",
    );
    c(
        "causeway_aae_exchanges_in_sync_total",
        None,
        "Completed anti-entropy exchanges that found the replicas in sync.",
    );
    c(
        "causeway_aae_exchanges_failed_total",
        None,
        "Anti-entropy exchanges abandoned (timeout or view change).",
    );
    c(
        "causeway_aae_keys_repaired_total",
        None,
        "Keys anti-entropy exchanges repaired.",
    );
    c(
        "causeway_aae_bytes_total",
        bytes,
        "Bytes of anti-entropy messages this node sent.",
    );
    c(
        "causeway_tombstones_reaped_total",
        None,
        "Tombstones removed after every replica held them.",
    );
    // Mesh (docs/mesh.md); the upstream label is a configured name, fixed for the process.
    c(
        "causeway_mesh_keys_pushed_total",
        None,
        "Keys received from an upstream cluster's real-time feed.",
    );
    c(
        "causeway_mesh_keys_applied_total",
        None,
        "Keys an upstream's real-time feed changed here.",
    );
    c(
        "causeway_mesh_full_syncs_total",
        None,
        "Completed full syncs (one partition each) with an upstream cluster.",
    );
    c(
        "causeway_mesh_full_syncs_failed_total",
        None,
        "Full syncs with an upstream that timed out, were refused or were truncated.",
    );
    c(
        "causeway_mesh_keys_repaired_total",
        None,
        "Keys full syncs with an upstream repaired here (what the feed missed).",
    );
    c(
        "causeway_mesh_bytes_total",
        bytes,
        "Bytes of full-sync messages exchanged with an upstream.",
    );
    g(
        "causeway_mesh_upstream_refused",
        None,
        "1 while an upstream is refused (partition-count mismatch, this cluster's own id); see GET /v1/mesh.",
    );
    g(
        "causeway_mesh_subscribers",
        None,
        "Downstream nodes this node feeds in real time.",
    );
    g(
        "causeway_mesh_subscriber_queued",
        None,
        "Keys queued for downstream subscribers.",
    );
    c(
        "causeway_mesh_subscriber_queue_drops_total",
        None,
        "Keys dropped from full downstream subscriber queues (left to the full sync).",
    );
    // Handoff.
    g(
        "causeway_handoff_retained_partitions",
        None,
        "Partitions held but no longer owned, not yet handed to all their replicas.",
    );
    g(
        "causeway_handoff_awaiting_partitions",
        None,
        "Partitions gained and not yet received in full.",
    );
    g(
        "causeway_handoff_pushing_streams",
        None,
        "Handoff streams to new replicas still running.",
    );
    g(
        "causeway_handoff_held_keys",
        None,
        "Keys held as hints or for lost partitions, not yet handed off.",
    );
    c(
        "causeway_handoff_keys_sent_total",
        None,
        "Keys sent in handoff batches (a batch sent again counts again).",
    );
    c(
        "causeway_handoff_keys_received_total",
        None,
        "Keys received in handoff batches and applied.",
    );
    c(
        "causeway_hints_accepted_total",
        None,
        "Writes accepted as hints for an unreachable shard.",
    );
    // Build and process.
    g(
        "causeway_build_info",
        None,
        "Always 1; the version label is the running build's.",
    );
    g(
        "process_resident_memory_bytes",
        bytes,
        "Resident memory of the process.",
    );
    g(
        "process_virtual_memory_bytes",
        bytes,
        "Virtual memory of the process.",
    );
    g(
        "process_open_fds",
        None,
        "Open file descriptors of the process.",
    );
    g(
        "process_cpu_seconds_total",
        secs,
        "User and system CPU time the process used.",
    );
}
