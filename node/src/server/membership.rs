//! Membership: `POST /v1/cluster/join`, `PUT /v1/cluster/view`, and what the compatibility API's
//! view change and `GET /v1/cluster` share with them: the JSON form of a view, each node's
//! handoff report, and the bounded wait until a view change has settled.
//!
//! A join or view change is made by the core of the node that receives it ([`Op::Join`],
//! [`Op::ChangeView`]); that node installs the new view and gossips it. The native endpoints
//! answer as soon as the view is installed there; moved partitions are handed off in the
//! background, and a cluster is *settled* when every node has installed the view, no node still
//! retains a partition it lost, and no node still awaits a partition it gained.

use super::app::{AppState, req_error};
use super::config::check_address;
use super::input::{ApiError, json_body};
use super::tls::NodeTls;
use super::transport::{dial_tls, preamble};
use crate::core::ring::{Epoch, epoch_number};
use crate::core::{
    NodeId, NodeStatus, Op, ReqError, Response as CoreResponse, VersionVector, View,
};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Largest membership request body. A view of [`MAX_NODES`] addresses fits easily.
pub const MAX_BODY_BYTES: usize = 256 << 10;
/// Most nodes a view may list.
pub const MAX_NODES: usize = 1000;
/// How long one node's handoff report may take before it counts as unreachable.
pub const REPORT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often a settle wait asks the nodes again.
const SETTLE_POLL: Duration = Duration::from_millis(200);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster/view", put(change_view))
        .route("/v1/cluster/join", post(join))
}

/// The HTTP client a node uses to ask other nodes for their reports; with TLS it presents the
/// node's certificate (which has the `read` role on other nodes) and trusts only the cluster CA.
pub fn peer_client(tls: Option<&NodeTls>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(REPORT_TIMEOUT)
        .connect_timeout(REPORT_TIMEOUT)
        .no_proxy();
    if let Some(tls) = tls {
        b = b.use_preconfigured_tls(tls.node_http_client.clone());
    }
    b.build().unwrap_or_default()
}

/// A view as the membership endpoints show it.
pub fn view_json(view: &View) -> Value {
    let shards: Vec<Value> = (0..if view.is_joining() {
        0
    } else {
        view.shard_count()
    })
        .map(|s| {
            json!({
                "id": s,
                "replicas": view.shard_members(s),
                "partition_count": view.partitions_of(s).len(),
            })
        })
        .collect();
    json!({
        "epoch": epoch_number(view.epoch),
        "epoch_id": view.epoch.to_string(),
        "nodes": view.nodes,
        "repl_factor": view.repl_factor,
        "partitions": view.partitions,
        "shards": shards,
    })
}

/// Checks a list of node addresses: 1..=[`MAX_NODES`] well-formed `host:port`s.
pub fn check_nodes(nodes: &[String]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err("the view lists no nodes".into());
    }
    if nodes.len() > MAX_NODES {
        return Err(format!(
            "the view lists {} nodes; at most {MAX_NODES} are supported",
            nodes.len()
        ));
    }
    for n in nodes {
        check_address(n).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewRequest {
    nodes: Vec<String>,
    repl_factor: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    node: String,
}

/// Runs a membership operation and answers with the view it installed.
async fn install(st: &AppState, op: Op) -> Result<Response, ApiError> {
    let reply = st.node.call(op).await;
    match reply.result {
        Ok(CoreResponse::ViewChanged { view }) => Ok(Json(view_json(&view)).into_response()),
        Ok(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "the node answered with an unexpected response",
        )),
        Err(ReqError::Conflict(m)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already in a cluster",
            m,
        )),
        Err(e) => Err(req_error(e)),
    }
}

/// `PUT /v1/cluster/view` `{"nodes": [...], "repl_factor": n}`: installs the next view.
async fn change_view(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ViewRequest = json_body(&uri, &headers, body, MAX_BODY_BYTES).await?;
    check_nodes(&req.nodes).map_err(ApiError::bad_request)?;
    let op = Op::ChangeView {
        nodes: req.nodes,
        repl_factor: req.repl_factor,
    };
    install(&st, op).await
}

/// `POST /v1/cluster/join` `{"node": "host:port"}`: adds a node to the view once it has
/// answered as a Causeway node that may join. Two checks, in order: on a TLS cluster a node that
/// accepts the connection must complete a mutual-TLS handshake as that address (409
/// otherwise); then the core
/// probes it over the peer link: 400 when it does not answer in time, 409 when it serves a
/// cluster of its own.
async fn join(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: JoinRequest = json_body(&uri, &headers, body, MAX_BODY_BYTES).await?;
    check_address(&req.node).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let view = st.node.view();
    if !view.nodes.contains(&req.node)
        && req.node != st.node.me
        && let Some(tls) = &st.tls
        && let Err(why) = probe(tls, &req.node).await
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not a cluster node",
            format!(
                "{} did not complete a mutual-TLS handshake as a node of this cluster ({why}); \
                 start it with a certificate of the cluster CA naming that address and \
                 --await-join (or --join MEMBER)",
                req.node
            ),
        ));
    }
    install(&st, Op::Join { node: req.node }).await
}

/// Admission: `node` must answer a peer-link handshake with a certificate of the cluster CA
/// that names it (and accept this node's). Only a TLS ClientHello is sent to an address that
/// fails. An address that refuses the connection passes this check: nothing answers there, and
/// the core's join probe (over a mutual-TLS link too) refuses it as not answering.
async fn probe(tls: &NodeTls, node: &str) -> Result<(), String> {
    let attempt = async {
        let Ok(tcp) = tokio::net::TcpStream::connect(node).await else {
            return Ok(());
        };
        let (mut s, of_cluster) = dial_tls(tls, node, tcp).await?;
        if !of_cluster {
            return Err(std::io::Error::other(
                "its certificate is of a mesh CA, not of this cluster's CA",
            ));
        }
        s.write_all(&preamble()).await?;
        s.shutdown().await
    };
    match tokio::time::timeout(REPORT_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// What a node reports of its membership: its epoch, shard, and partitions on the move.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeState {
    pub epoch: Epoch,
    /// The members of the view the node runs with.
    pub nodes: Vec<NodeId>,
    pub shard: Option<u32>,
    pub live_keys: u64,
    pub handoff: HandoffState,
    pub load: NodeLoad,
}

/// A node's load, counted since it started: what the web UI and `causeway status` show for
/// every member, so an operator sees which node takes the traffic or the repair work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct NodeLoad {
    /// Keyed client requests the node routed (served there, hinted or forwarded).
    pub requests: u64,
    /// Of those, forwarded to another node's replicas.
    pub forwarded: u64,
    /// Bytes of replication sent and not yet acknowledged, over all its peers.
    pub replication_in_flight_bytes: u64,
    pub aae_exchanges: u64,
    pub aae_keys_repaired: u64,
}

impl NodeLoad {
    /// From a node's status counters, its own or a remote node's report: `(requests, forwarded)`,
    /// its unacknowledged replication bytes per peer, and `(aae exchanges, keys repaired)`.
    fn counted(
        (requests, forwarded): (u64, u64),
        unacked_bytes: &BTreeMap<NodeId, u64>,
        (aae_exchanges, aae_keys_repaired): (u64, u64),
    ) -> Self {
        NodeLoad {
            requests,
            forwarded,
            replication_in_flight_bytes: unacked_bytes.values().sum(),
            aae_exchanges,
            aae_keys_repaired,
        }
    }
}

/// A node's partitions on the move (the core's `HandoffStatus`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HandoffState {
    pub retained: Vec<u32>,
    pub pushing: usize,
    pub awaiting: Vec<u32>,
}

impl NodeState {
    pub fn from_status(s: &NodeStatus) -> Self {
        NodeState {
            epoch: s.view.epoch,
            nodes: s.view.nodes.clone(),
            shard: s.shard,
            live_keys: s.live_keys,
            handoff: HandoffState {
                retained: s.handoff.retained.clone(),
                pushing: s.handoff.pushing,
                awaiting: s.handoff.awaiting.clone(),
            },
            load: NodeLoad::counted(
                (s.requests, s.forwarded),
                &s.unacked_bytes,
                (s.aae.exchanges, s.aae.keys_repaired),
            ),
        }
    }

    /// Neither retains a lost partition nor awaits a gained one.
    pub fn settled(&self) -> bool {
        self.handoff.retained.is_empty() && self.handoff.awaiting.is_empty()
    }
}

/// The parts of a remote `/v1/cluster` reply a [`NodeState`] is read from.
#[derive(Deserialize)]
struct RemoteCluster {
    status: RemoteStatus,
}

#[derive(Deserialize)]
struct RemoteStatus {
    view: RemoteView,
    shard: Option<u32>,
    live_keys: u64,
    handoff: HandoffState,
    // The load fields default to zero: a node of an older release does not report them.
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    forwarded: u64,
    #[serde(default)]
    unacked_bytes: BTreeMap<String, u64>,
    #[serde(default)]
    aae: RemoteAae,
}

#[derive(Default, Deserialize)]
struct RemoteAae {
    exchanges: u64,
    keys_repaired: u64,
}

#[derive(Deserialize)]
struct RemoteView {
    /// The view's unique epoch id ([`view_json`]), as a decimal string.
    epoch_id: String,
    nodes: Vec<NodeId>,
}

/// One node's membership state, as it reported it (or why it did not).
#[derive(Clone, Debug)]
pub struct NodeReport {
    pub node: NodeId,
    pub state: Result<NodeState, String>,
}

impl NodeReport {
    pub fn to_json(&self) -> Value {
        match &self.state {
            Err(e) => json!({
                "node": self.node,
                "reachable": false,
                "error": e,
            }),
            Ok(s) => json!({
                "node": self.node,
                "reachable": true,
                "epoch": epoch_number(s.epoch),
                "epoch_id": s.epoch.to_string(),
                "shard": s.shard,
                "live_keys": s.live_keys,
                "settled": s.settled(),
                "load": s.load,
                "handoff": {
                    "retained": s.handoff.retained,
                    "pushing": s.handoff.pushing,
                    "awaiting": s.handoff.awaiting,
                },
            }),
        }
    }
}

/// Asks `node` for its state: this node directly, others through `GET /v1/cluster?scope=local`.
pub async fn report(st: &AppState, node: &str) -> NodeReport {
    let state = if node == st.node.me {
        match st.node.status().await {
            Some(s) => Ok(NodeState::from_status(&s)),
            None => Err("the node is shutting down".to_string()),
        }
    } else {
        fetch_state(&st.peers, st.peer_scheme, node).await
    };
    NodeReport {
        node: node.to_owned(),
        state,
    }
}

async fn fetch_state(
    client: &reqwest::Client,
    scheme: &str,
    node: &str,
) -> Result<NodeState, String> {
    let resp = client
        .get(format!("{scheme}://{node}/v1/cluster?scope=local"))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let c: RemoteCluster = resp
        .json()
        .await
        .map_err(|e| format!("unreadable answer: {e}"))?;
    let epoch = c
        .status
        .view
        .epoch_id
        .parse()
        .map_err(|_| "unreadable answer: a malformed epoch_id".to_string())?;
    Ok(NodeState {
        epoch,
        nodes: c.status.view.nodes,
        shard: c.status.shard,
        live_keys: c.status.live_keys,
        handoff: c.status.handoff,
        load: NodeLoad::counted(
            (c.status.requests, c.status.forwarded),
            &c.status.unacked_bytes,
            (c.status.aae.exchanges, c.status.aae.keys_repaired),
        ),
    })
}

/// Reports of `nodes`, asked concurrently, in the order given.
pub async fn reports(st: &AppState, nodes: &[NodeId]) -> Vec<NodeReport> {
    let mut set = tokio::task::JoinSet::new();
    for (i, n) in nodes.iter().enumerate() {
        let (st, n) = (st.clone(), n.clone());
        set.spawn(async move { (i, report(&st, &n).await) });
    }
    let mut out: Vec<Option<NodeReport>> = vec![None; nodes.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, r)) = r {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .zip(nodes)
        .map(|(r, n)| {
            r.unwrap_or_else(|| NodeReport {
                node: n.clone(),
                state: Err("the report task failed".into()),
            })
        })
        .collect()
}

/// One shard's live key count, as a replica of it reported it.
#[derive(Clone, Debug)]
pub struct ShardCount {
    pub shard: u32,
    pub replicas: Vec<NodeId>,
    pub count: Option<u64>,
    /// The answering replica had received every partition it gained.
    pub settled: bool,
    /// The writes the count reflects (see [`CoreResponse::KeyCount`]).
    pub context: VersionVector,
}

/// The outcome of [`wait_settled`].
#[derive(Debug)]
pub struct Settlement {
    /// True when every check passed before the deadline.
    pub settled: bool,
    pub shards: Vec<ShardCount>,
    /// Nodes that held things up at the deadline, with why.
    pub pending: Vec<(NodeId, String)>,
}

/// Waits, up to `limit`, until the change from `old` to `view` has settled: every node of `view`
/// has installed it (or a newer one) and neither retains nor awaits a partition, every node
/// removed by it that still answers has handed off what it held, and every shard's key count
/// comes from a settled replica. Returns the last counts either way.
pub async fn wait_settled(st: &AppState, old: &View, view: &View, limit: Duration) -> Settlement {
    let deadline = Instant::now() + limit;
    let mut everyone: Vec<NodeId> = view.nodes.clone();
    let members: BTreeSet<&NodeId> = view.nodes.iter().collect();
    everyone.extend(old.nodes.iter().filter(|n| !members.contains(n)).cloned());
    loop {
        let mut pending = Vec::new();
        for r in reports(st, &everyone).await {
            let member = members.contains(&r.node);
            let why = match &r.state {
                Err(e) if member => Some(e.clone()),
                // A removed node that no longer answers has left (or died: anti-entropy rebuilds).
                Err(_) => None,
                Ok(s) if s.epoch < view.epoch => Some(format!(
                    "has not installed epoch {} yet (at {})",
                    epoch_number(view.epoch),
                    epoch_number(s.epoch)
                )),
                Ok(s) if !s.settled() => Some(format!(
                    "hands off {} partition(s), awaits {}",
                    s.handoff.retained.len(),
                    s.handoff.awaiting.len()
                )),
                Ok(_) => None,
            };
            if let Some(why) = why {
                pending.push((r.node, why));
            }
        }
        let shards = shard_counts(st, view).await;
        for s in &shards {
            if s.count.is_none() || !s.settled {
                pending.push((format!("shard {}", s.shard), "not settled".into()));
            }
        }
        let settled = pending.is_empty();
        if settled || Instant::now() + SETTLE_POLL >= deadline {
            return Settlement {
                settled,
                shards,
                pending,
            };
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Every shard's key count in `view`, asked through this node.
pub async fn shard_counts(st: &AppState, view: &View) -> Vec<ShardCount> {
    let mut out = Vec::new();
    for shard in 0..view.shard_count() {
        let (count, settled, context) = match st.node.call(Op::KeyCount { shard }).await.result {
            Ok(CoreResponse::KeyCount {
                count,
                settled,
                context,
                ..
            }) => (Some(count), settled, context),
            _ => (None, false, VersionVector::new()),
        };
        out.push(ShardCount {
            shard,
            replicas: view.shard_members(shard).to_vec(),
            count,
            settled,
            context,
        });
    }
    out
}
