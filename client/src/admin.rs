//! Cluster administration (admin role): the view and its status, membership changes,
//! anti-entropy, metrics, and the pages of a backup or restore. Replies are the node's JSON, as
//! the repository's README documents it.

use crate::client::{Client, Reply, Request, Retry};
use crate::error::{Error, Result};
use bytes::Bytes;

/// Header of a backup page: the number of keys in it.
pub const BACKUP_COUNT_HEADER: &str = "x-backup-count";
/// Header of a backup page: the cursor of the next page (absent on the last).
pub const BACKUP_NEXT_HEADER: &str = "x-backup-next";

/// How much of the cluster `GET /v1/cluster` reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The answering node only.
    Local,
    /// The answering node, plus every member's epoch and handoff state.
    Cluster,
}

/// One page of a backup: its key count, the cursor of the next page, and the frame itself.
#[derive(Clone, Debug)]
pub struct BackupPage {
    pub keys: u32,
    pub next: Option<String>,
    pub frame: Bytes,
}

impl Client {
    /// `GET /v1/cluster` at the first node that answers.
    pub async fn cluster(&self, scope: Scope) -> Result<serde_json::Value> {
        self.cluster_at(None, scope).await
    }

    /// `GET /v1/cluster` at `node` (`host:port` or a base URL; the configured nodes if it does
    /// not answer), or at the first configured node that answers.
    pub async fn cluster_at(&self, node: Option<&str>, scope: Scope) -> Result<serde_json::Value> {
        let path = match scope {
            Scope::Local => "/v1/cluster?scope=local",
            Scope::Cluster => "/v1/cluster",
        };
        let first = node.map(|n| self.url_like(n)).transpose()?;
        let reply = self
            .send_preferring(first.as_deref(), &Request::get(path))
            .await?
            .success()?;
        reply.json()
    }

    /// `GET /v1/cluster?scope=local` at exactly `node`, without failing over: the way to ask
    /// each member for its own state.
    pub async fn node_status(&self, node: &str) -> Result<serde_json::Value> {
        self.only(&self.url_like(node)?).cluster(Scope::Local).await
    }

    /// `PUT /v1/cluster/view`: installs the next view (never resent once it may have been
    /// applied). Returns the view the node installed.
    pub async fn change_view(
        &self,
        nodes: &[String],
        repl_factor: Option<usize>,
    ) -> Result<serde_json::Value> {
        let mut body = serde_json::json!({ "nodes": nodes });
        if let Some(r) = repl_factor {
            body["repl_factor"] = r.into();
        }
        let req = Request::new(reqwest::Method::PUT, "/v1/cluster/view", Retry::Never).json(&body);
        self.send(&req).await?.success()?.json()
    }

    /// `POST /v1/cluster/join`: admits `node` (`host:port`, started with `--await-join`).
    pub async fn join(&self, node: &str) -> Result<serde_json::Value> {
        let req = Request::new(reqwest::Method::POST, "/v1/cluster/join", Retry::Never)
            .json(&serde_json::json!({ "node": node }));
        self.send(&req).await?.success()?.json()
    }

    /// `POST /v1/admin/aae/pull` at `at` (`host:port` or a base URL; the configured nodes when
    /// `None`): one anti-entropy exchange with `peer` now, or with `until_complete` exchanges
    /// until one completes (bounded by the node). An exchange only copies what one side lacks,
    /// so it is safe to repeat.
    pub async fn aae_pull(
        &self,
        at: Option<&str>,
        peer: &str,
        until_complete: bool,
    ) -> Result<serde_json::Value> {
        let req = Request::new(reqwest::Method::POST, "/v1/admin/aae/pull", Retry::Safe)
            .json(&serde_json::json!({ "peer": peer, "until_complete": until_complete }));
        let reply = match at {
            Some(n) => self.only(&self.url_like(n)?).send(&req).await?,
            None => self.send(&req).await?,
        };
        reply.success()?.json()
    }

    /// `GET /metrics`: the Prometheus text of the first node that answers.
    pub async fn metrics(&self) -> Result<String> {
        let reply = self.send(&Request::get("/metrics")).await?.success()?;
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// `GET /v1/admin/backup`: the page of at most `limit` keys after the cursor `after`.
    pub async fn backup_page(&self, after: Option<&str>, limit: u32) -> Result<BackupPage> {
        let mut path = format!("/v1/admin/backup?limit={limit}");
        if let Some(c) = after {
            path.push_str(&format!("&after={c}"));
        }
        let reply = self.send(&Request::get(path)).await?.success()?;
        let keys = reply
            .header(BACKUP_COUNT_HEADER)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| protocol(&reply, "the backup page has no key count"))?;
        Ok(BackupPage {
            keys,
            next: reply.header(BACKUP_NEXT_HEADER).map(str::to_owned),
            frame: reply.body,
        })
    }

    /// `POST /v1/admin/restore` of one frame, to `first` (a base URL) and then the configured
    /// nodes: restoring joins version sets into what the cluster holds, so it is safe to
    /// repeat. Returns the node's summary (`{"keys","changed"}`).
    pub async fn restore_frame(
        &self,
        first: Option<&str>,
        frame: Bytes,
    ) -> Result<serde_json::Value> {
        let req = Request::new(reqwest::Method::POST, "/v1/admin/restore", Retry::Safe)
            .header("content-type", "application/octet-stream")?
            .body(frame);
        self.send_preferring(first, &req).await?.success()?.json()
    }

    /// `node` as a base URL with the scheme of the first configured node (`host:port` names a
    /// member as the view does).
    pub fn url_like(&self, node: &str) -> Result<String> {
        if node.contains("://") {
            return crate::client::base_url(node);
        }
        let scheme = self.nodes()[0].split("://").next().unwrap_or("http");
        crate::client::base_url(&format!("{scheme}://{node}"))
    }
}

fn protocol(reply: &Reply, detail: &str) -> Error {
    Error::Protocol {
        node: reply.node.clone(),
        detail: detail.to_owned(),
    }
}
