//! Where client commands send requests ([`ClientOpts`]) and the session file that keeps their
//! causal context between runs.
//!
//! Every client command flattens [`ClientOpts`], so those options exist on the client commands
//! only; an option every client needs is added there once. The session file holds the merge of
//! every token received (joined with [`crate::core::token::merge`], so a command run alongside
//! another one with the same file loses neither's context), and each command starts its
//! [`Session`] from it: consecutive commands are causally consistent even when they go to
//! different nodes.

use crate::core::token;
use anyhow::Context;
use causeway_client::{Client, Session};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where client commands send requests and keep their session.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Nodes to use, comma separated, tried in order when one does not answer: base URLs or host:port (http:// is assumed)
    #[arg(
        long,
        env = "CAUSEWAY_NODE",
        default_value = "http://127.0.0.1:8080",
        value_delimiter = ','
    )]
    pub node: Vec<String>,
    /// File holding this session's causal context
    #[arg(long, env = "CAUSEWAY_SESSION", default_value = ".causeway-session")]
    pub session: PathBuf,
    /// Bearer token for nodes that require one (`causeway tokens add`; `causeway cluster` writes causeway-data/admin.token)
    #[arg(long, env = "CAUSEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to trust for https:// nodes (e.g. causeway-data/tls/ca.pem)
    #[arg(long, env = "CAUSEWAY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl ClientOpts {
    /// A client of `--node` with the token and CA, a `timeout` per attempt and `attempts`
    /// attempts per request.
    pub fn client(&self, timeout: Duration, attempts: u32) -> anyhow::Result<Client> {
        let mut b = Client::builder()
            .nodes(self.node.iter().cloned())
            .timeout(timeout)
            .attempts(attempts);
        if let Some(t) = &self.token {
            b = b.token(t.clone());
        }
        if let Some(ca) = &self.ca_cert {
            b = b.ca_file(ca)?;
        }
        Ok(b.build()?)
    }

    /// A session of `client` starting from the session file's context.
    pub fn session(&self, client: Client) -> Session {
        Session::with_context(client, &load_session(&self.session))
    }

    /// Joins what `session` learnt into the session file (left alone, or not created, when the
    /// session learnt nothing: a listing carries no context).
    pub async fn save(&self, session: &Session) -> anyhow::Result<()> {
        let learnt = session.context().await?;
        if learnt.is_empty() || learnt == load_session(&self.session) {
            return Ok(());
        }
        save_session(&self.session, &learnt)
    }
}

fn load_session(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Merges `received` into the session file.
fn save_session(path: &Path, received: &str) -> anyhow::Result<()> {
    let merged = token::merge([load_session(path).as_str(), received])
        .context("the node returned a malformed causal context")?;
    std::fs::write(path, merged + "\n")
        .with_context(|| format!("writing session file {}", path.display()))
}
