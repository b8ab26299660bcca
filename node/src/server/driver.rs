//! The driver: one thread owns the core [`Node`] and runs its event loop.
//!
//! Handlers and peer links send [`Event`]s over a bounded queue (back-pressure). Each turn the
//! loop handles one event, then everything else already queued (up to [`MAX_TURN`]), takes one
//! [`crate::core::Ready`], syncs storage once if it asks (group commit: every write of the turn
//! shares that fsync), and only then sends its messages and replies. Ticks come every
//! `tick_interval`. With `sync = "batch"` a thread of its own fsyncs the committed writes every
//! `batch_sync` ([`super::storage::JournalSyncer`]): nothing waits for that fsync, so the loop
//! does not either.
//!
//! The loop runs on its own single-threaded runtime so blocking storage calls (fsync) stall only
//! the node, never the HTTP server; HTTP connections run on the main runtime. The peer links run
//! on the loop's runtime: after a turn that queued messages for peers the loop yields, so they
//! are written, and the peers' messages read, on this thread without waking another for every
//! batch (measured on a 3-node cluster on 2 cores: 7-11% less CPU per put, 11-15% more puts/s).

use super::inbox::Event;
use super::planted;
use super::storage::FjallStorage;
use super::transport::{PeerSecurity, Transport};
use crate::core::ring::epoch_number;
use crate::core::{
    Config, Effects, Identity, Input, Node, NodeId, NodeStatus, Op, PeerMsg, Persisted, Rejection,
    Reply, ReqError, ReqId, Request, Storage, SyncMode, Time, View, validate,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Most queued events handled before the loop syncs and delivers.
pub const MAX_TURN: usize = 4096;
/// Capacity of the driver's input queue.
pub const QUEUE: usize = 8192;
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// How long writes stay refused after a failed storage commit.
const STORAGE_FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Longest wait at shutdown for the peer links to write what is queued.
const LINK_DRAIN: Duration = Duration::from_secs(1);
/// Least time between two warnings about refused peer messages (the rest are counted).
const REJECT_WARN_EVERY: Duration = Duration::from_secs(5);

/// Wall-clock time as the core wants it; the server is the only place that reads clocks.
pub fn now() -> Time {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u128::from(u64::MAX)) as u64);
    Time::from_micros(us)
}

/// A cheap, cloneable way to talk to the driver.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Event>,
    /// This node's address.
    pub me: NodeId,
    /// The newest view the node has installed, published by the driver after every turn.
    view: watch::Receiver<Arc<View>>,
    /// Largest accepted key and value, in bytes.
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    timeout: Duration,
    /// The driver thread's runtime, which also runs the peer links (see [`spawn`]).
    links: tokio::runtime::Handle,
    /// Set once the core has been built from storage and its event loop runs; never cleared.
    started: Arc<AtomicBool>,
}

impl NodeHandle {
    /// Runs `op` on the node. A driver that is gone or silent past the request timeout gives
    /// `Unavailable` (for a write: indeterminate).
    pub async fn call(&self, op: Op) -> Reply {
        let (reply, rx) = oneshot::channel();
        let unavailable = |why: &str| Reply {
            id: 0,
            served_by: self.me.clone(),
            result: Err(ReqError::Unavailable(why.to_owned())),
        };
        if self.tx.send(Event::Client { op, reply }).await.is_err() {
            return unavailable("the node is shutting down");
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => unavailable("the node is shutting down"),
            Err(_) => unavailable("the request timed out"),
        }
    }

    /// The node's counters and queue depths, if it is running.
    pub async fn status(&self) -> Option<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Event::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The view the node routes by now (it changes with joins, view changes and gossip).
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// True once the core has recovered from storage and the driver handles events.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The sender peer links feed.
    pub fn inbox(&self) -> mpsc::Sender<Event> {
        self.tx.clone()
    }

    /// Where peer link tasks run: on the driver's own thread.
    pub fn links(&self) -> tokio::runtime::Handle {
        self.links.clone()
    }
}

/// Starts the driver thread. It runs until `stop` fires, then delivers what is pending and
/// records a clean shutdown in storage.
pub fn spawn(
    cfg: Config,
    me: NodeId,
    storage: FjallStorage,
    batch_sync: Duration,
    min_free_bytes: u64,
    security: PeerSecurity,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<(NodeHandle, std::thread::JoinHandle<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let (view_tx, view_rx) = watch::channel(Arc::new(cfg.view.clone()));
    let handle = NodeHandle {
        tx,
        me: me.clone(),
        view: view_rx,
        max_key_bytes: cfg.max_key_bytes,
        max_value_bytes: cfg.max_value_bytes,
        timeout: cfg.request_timeout + Duration::from_secs(2),
        links: rt.handle().clone(),
        started: Arc::new(AtomicBool::new(false)),
    };
    let started = handle.started.clone();
    let nonce = random_u64();
    let syncer = match cfg.sync {
        SyncMode::Batch => Some(storage.journal_syncer().spawn(batch_sync)?),
        SyncMode::Always | SyncMode::Never => None,
    };
    let thread = std::thread::Builder::new()
        .name("causeway-node".into())
        .spawn(move || {
            let tick = cfg.tick_interval;
            let transport = Transport::new(me.clone(), security);
            let node = Node::new(cfg, Identity { node: me, nonce }, storage, now());
            tracing::info!(
                actor = ?node.actor(),
                epoch = epoch_number(node.view().epoch),
                view = ?node.view().nodes,
                "node started"
            );
            let driver = Driver {
                node,
                rx,
                transport,
                pending: HashMap::new(),
                next_id: 0,
                loopback: VecDeque::new(),
                links_pending: false,
                view: view_tx,
                rejections: RejectLog::default(),
                min_free_bytes,
                storage_failed_at: None,
                held_since: None,
            };
            driver.publish_view();
            started.store(true, Ordering::Release);
            rt.block_on(driver.run(tick, stop));
            drop(syncer);
        })?;
    Ok((handle, thread))
}

/// A random number from the std hasher's random keys, the clock and the process id: the seed of
/// the node's incarnation choice and of its instance id.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now().as_micros());
    h.write_u32(std::process::id());
    h.finish()
}

struct Driver {
    node: Node<FjallStorage>,
    rx: mpsc::Receiver<Event>,
    transport: Transport,
    /// Client requests awaiting their reply, by request id.
    pending: HashMap<ReqId, oneshot::Sender<Reply>>,
    next_id: ReqId,
    /// Messages the node addressed to itself, handled in the next turn.
    loopback: VecDeque<PeerMsg>,
    /// True when messages were queued for peer links since the loop last yielded.
    links_pending: bool,
    /// Where handlers read the node's current view.
    view: watch::Sender<Arc<View>>,
    /// Below this much free space in the data directory, writes are refused (507).
    min_free_bytes: u64,
    /// When a storage commit or sync last failed (writes are refused for a while after).
    storage_failed_at: Option<Instant>,
    rejections: RejectLog,
    /// With [`planted::Bug::AckBeforeDurable`]: since when acknowledged writes are held in
    /// memory only.
    held_since: Option<Instant>,
}

/// Rate limit of the warnings about refused peer messages.
#[derive(Default)]
struct RejectLog {
    last_warn: Option<Instant>,
    /// Refusals since the last warning.
    suppressed: u64,
}

impl RejectLog {
    /// Counts a refused message in `causeway_peer_rejected_total{reason}` and warns about it
    /// unless a warning went out less than [`REJECT_WARN_EVERY`] ago.
    fn record(&mut self, from: &str, kind: &str, why: &Rejection) {
        metrics::counter!("causeway_peer_rejected_total", "reason" => why.reason).increment(1);
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < REJECT_WARN_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            peer = %from,
            kind,
            suppressed = self.suppressed,
            "refused an invalid peer message: {why}"
        );
        self.last_warn = Some(now);
        self.suppressed = 0;
    }
}

impl Driver {
    async fn run(mut self, tick: Duration, mut stop: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = tokio::time::interval(METRICS_EVERY);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = ticks.tick() => {
                    for (peer, depth) in self.transport.depths() {
                        self.node.set_link_backlog(peer, depth > 0);
                    }
                    self.watch_storage();
                    self.node.handle(now(), Input::Tick)
                }
                _ = metrics.tick() => self.export_metrics(),
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
            }
            for _ in 1..MAX_TURN {
                match self.rx.try_recv() {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                }
            }
            self.flush().await;
            self.publish_view();
            self.let_links_run().await;
        }
        self.flush().await;
        self.node.shutdown();
        self.transport.close(LINK_DRAIN).await;
        tracing::info!("node stopped cleanly");
    }

    fn on_event(&mut self, ev: Event) {
        let now = now();
        match ev {
            Event::Client { op, reply } => {
                self.next_id += 1;
                let id = self.next_id;
                self.pending.insert(id, reply);
                self.node.handle(now, Input::Client(Request { id, op }));
            }
            Event::Peer { from, msg } => match validate(&msg, &self.node.peer_limits())
                .and_then(|()| self.node.admits(&from, &msg))
            {
                Ok(()) => self.node.handle(now, Input::Peer { from, msg }),
                Err(why) => self.rejections.record(&from, msg.kind(), &why),
            },
            Event::Status(tx) => {
                let _ = tx.send(self.node.status());
            }
        }
    }

    /// Yields to the runtime if messages were queued for peers since the last yield, so their
    /// links write them now (they run on this thread). Readers of incoming links also run then,
    /// or whenever the loop waits for its queue.
    async fn let_links_run(&mut self) {
        if std::mem::take(&mut self.links_pending) {
            tokio::task::yield_now().await;
        }
    }

    /// Takes the node's Ready and carries it out ([`crate::core::Ready::apply`]'s order): releases
    /// what depends on none of its writes, lets the links write it before an fsync blocks this
    /// thread, persists, then delivers the rest; repeats while the node keeps messaging itself.
    async fn flush(&mut self) {
        loop {
            let late = self.node.take_ready().release_early(self);
            if late.syncs() {
                self.let_links_run().await;
            }
            late.finish(self);
            if self.loopback.is_empty() {
                return;
            }
            let me = self.node.id().clone();
            while let Some(msg) = self.loopback.pop_front() {
                let from = me.clone();
                self.node.handle(now(), Input::Peer { from, msg });
            }
        }
    }

    /// Whether this turn skips storage for [`planted::Bug::AckBeforeDurable`]: from a turn that
    /// asks for a sync until [`planted::HOLD`] later. Always false unless the bug is planted.
    fn planted_hold(&mut self, sync: bool) -> bool {
        if !planted::on(planted::Bug::AckBeforeDurable) {
            return false;
        }
        match self.held_since {
            None if sync => {
                self.held_since = Some(Instant::now());
                true
            }
            Some(t) if t.elapsed() < planted::HOLD => true,
            _ => {
                self.held_since = None;
                false
            }
        }
    }

    /// Tells the node to refuse writes while the data directory is short of free space, or a
    /// commit failed within the last [`STORAGE_FAILURE_HOLD`].
    fn watch_storage(&mut self) {
        let free = self.node.storage().free_bytes();
        if let Some(free) = free {
            metrics::gauge!("causeway_storage_free_bytes").set(free as f64);
        }
        let failing = self
            .storage_failed_at
            .is_some_and(|t| t.elapsed() < STORAGE_FAILURE_HOLD);
        let short = free.is_some_and(|f| f < self.min_free_bytes);
        self.node.set_storage_full(short || failing);
    }

    /// Publishes the node's view to the handlers when its epoch changed.
    fn publish_view(&self) {
        let view = self.node.view();
        if self.view.borrow().epoch != view.epoch {
            tracing::info!(
                epoch = epoch_number(view.epoch),
                nodes = ?view.nodes,
                repl_factor = view.repl_factor,
                "installed a new view"
            );
            self.view.send_replace(Arc::new(view.clone()));
        }
    }

    /// Sets every gauge. Per-peer gauges are set for the view's members only: the series of a
    /// node that left stops being set and the exporter removes it ([`super::metrics::IDLE`]).
    fn export_metrics(&self) {
        let s = self.node.status();
        let queued: HashMap<&NodeId, usize> = self.transport.depths().collect();
        for peer in s.view.nodes.iter().filter(|n| **n != s.node) {
            let unacked = s.unacked.get(peer).copied().unwrap_or(0);
            metrics::gauge!("causeway_replication_unacked", "peer" => peer.clone())
                .set(unacked as f64);
            let bytes = s.unacked_bytes.get(peer).copied().unwrap_or(0);
            metrics::gauge!("causeway_replication_unacked_bytes", "peer" => peer.clone())
                .set(bytes as f64);
            let depth = queued.get(peer).copied().unwrap_or(0);
            metrics::gauge!("causeway_peer_queue_depth", "peer" => peer.clone()).set(depth as f64);
        }
        metrics::gauge!("causeway_causal_waits").set(s.causal_waits as f64);
        metrics::gauge!("causeway_pending_writes").set(s.pending_writes as f64);
        metrics::gauge!("causeway_live_keys").set(s.live_keys as f64);
        metrics::gauge!("causeway_view_epoch").set(epoch_number(s.view.epoch) as f64);
        metrics::gauge!("causeway_handoff_retained_partitions")
            .set(s.handoff.retained.len() as f64);
        metrics::gauge!("causeway_handoff_awaiting_partitions")
            .set(s.handoff.awaiting.len() as f64);
        metrics::gauge!("causeway_pending_client_requests").set(self.pending.len() as f64);
        metrics::counter!("causeway_forwarded_total").absolute(s.forwarded);
        metrics::counter!("causeway_failovers_total").absolute(s.failovers);
        metrics::counter!("causeway_replication_dropped_total").absolute(s.unacked_dropped);
        metrics::counter!("causeway_sibling_warnings_total").absolute(s.sibling_warnings);
        metrics::counter!("causeway_sibling_refusals_total").absolute(s.sibling_refusals);
        metrics::gauge!("causeway_suspected_peers").set(s.suspects.len() as f64);
        let a = &s.aae;
        metrics::counter!("causeway_aae_exchanges_total").absolute(a.exchanges);
        metrics::counter!("causeway_aae_exchanges_in_sync_total").absolute(a.exchanges_in_sync);
        metrics::counter!("causeway_aae_exchanges_failed_total").absolute(a.exchanges_failed);
        metrics::counter!("causeway_aae_keys_repaired_total").absolute(a.keys_repaired);
        metrics::counter!("causeway_aae_bytes_total").absolute(a.bytes);
        metrics::counter!("causeway_tombstones_reaped_total").absolute(a.tombstones_reaped);
        let h = &s.handoff;
        metrics::gauge!("causeway_handoff_pushing_streams").set(h.pushing as f64);
        metrics::gauge!("causeway_handoff_held_keys").set(h.held_keys as f64);
        metrics::counter!("causeway_handoff_keys_sent_total").absolute(h.keys_sent);
        metrics::counter!("causeway_handoff_keys_received_total").absolute(h.keys_received);
        metrics::counter!("causeway_hints_accepted_total").absolute(h.hints_accepted);
        metrics::counter!("causeway_replication_resent_total").absolute(s.replication_resent);
        let m = &s.mesh;
        for u in &m.upstreams {
            let name = || u.name.clone();
            metrics::counter!("causeway_mesh_keys_pushed_total", "upstream" => name())
                .absolute(u.keys_pushed);
            metrics::counter!("causeway_mesh_keys_applied_total", "upstream" => name())
                .absolute(u.keys_applied);
            metrics::counter!("causeway_mesh_full_syncs_total", "upstream" => name())
                .absolute(u.full_syncs);
            metrics::counter!("causeway_mesh_full_syncs_failed_total", "upstream" => name())
                .absolute(u.full_syncs_failed);
            metrics::counter!("causeway_mesh_keys_repaired_total", "upstream" => name())
                .absolute(u.keys_repaired);
            metrics::counter!("causeway_mesh_bytes_total", "upstream" => name()).absolute(u.bytes);
            metrics::gauge!("causeway_mesh_upstream_refused", "upstream" => name())
                .set(if u.refused.is_some() { 1.0 } else { 0.0 });
        }
        metrics::gauge!("causeway_mesh_subscribers").set(m.subscribers.len() as f64);
        metrics::gauge!("causeway_mesh_subscriber_queued")
            .set(m.subscribers.values().map(|(q, _)| *q).sum::<usize>() as f64);
        metrics::counter!("causeway_mesh_subscriber_queue_drops_total").absolute(m.queue_drops);
    }
}

/// The server's effects: messages go to the peer links (to this node itself through the loopback
/// queue), replies to the waiting HTTP handlers, writes to fjall.
impl Effects for Driver {
    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        if to == *self.node.id() {
            self.loopback.push_back(msg);
        } else {
            self.transport.send(&to, msg);
            self.links_pending = true;
        }
    }

    fn reply(&mut self, reply: Reply) {
        if let Some(tx) = self.pending.remove(&reply.id) {
            let _ = tx.send(reply);
        }
    }

    /// Syncs if asked, else hands the turn's writes to fjall as one batch (they must be in the
    /// OS before anything that depends on them leaves). After a failed commit or sync, refuses
    /// writes for [`STORAGE_FAILURE_HOLD`].
    fn persist(&mut self, sync: bool) -> Persisted {
        if self.planted_hold(sync) {
            // The planted bug: the turn's writes stay staged while their acks leave.
        } else if sync {
            self.node.storage_mut().sync();
        } else {
            self.node.storage().commit();
        }
        if !self.node.storage().take_failure() {
            return Persisted::Stored;
        }
        self.storage_failed_at = Some(std::time::Instant::now());
        self.node.set_storage_full(true);
        Persisted::Failed
    }

    fn forget(&mut self, peer: NodeId) {
        self.transport.forget(&peer);
    }
}
