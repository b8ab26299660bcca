//! The `causeway` commands that talk to a running cluster, all built on the `causeway-client`
//! crate: `get`, `put`, `delete`, `list` ([`kv`]), `strong …` ([`strong`]), `status` ([`status`]), `backup` and `restore`
//! ([`backup`]), `admin …` ([`admin`]), and the load generator `bench` ([`bench`]). Options every
//! one of them takes (nodes, token, CA, session file) are in [`conn`].

pub mod admin;
pub mod backup;
pub mod bench;
pub mod conn;
pub mod kv;
pub mod resp;
pub mod status;
pub mod strong;

use causeway_client::Session;
use std::time::Duration;

/// A client command.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Print a key's value; siblings (concurrent values) are counted and separated
    Get(kv::GetArgs),
    /// Write a value
    Put(kv::PutArgs),
    /// Delete a key
    Delete(kv::DeleteArgs),
    /// List keys in key order
    List(kv::ListArgs),
    /// Linearizable strong keys: get, put, compare-and-set (cas), delete
    Strong(strong::StrongArgs),
    /// Summarise the cluster as the node sees it
    Status(status::StatusArgs),
    /// Write every key's version set (siblings, tombstones, contexts) to a checksummed file while the cluster serves (admin role)
    Backup(backup::BackupArgs),
    /// Verify a backup file, then merge its version sets into a cluster (admin role)
    Restore(backup::RestoreArgs),
    /// Administer a cluster: status, members, anti-entropy, handoff (admin role)
    Admin(admin::AdminArgs),
}

/// How long one attempt of a key command may take.
const KEY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a key command across `--node`s (a write that was sent is never resent).
const KEY_ATTEMPTS: u32 = 3;

/// Runs one client command; prints its result to stdout.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Get(a) => {
            let (conn, s) = open(&a.conn)?;
            finish(&conn, &s, kv::get(&s, a).await).await
        }
        ClientCommand::Put(a) => {
            let (conn, s) = open(&a.conn)?;
            finish(&conn, &s, kv::put(&s, a).await).await
        }
        ClientCommand::Delete(a) => {
            let (conn, s) = open(&a.conn)?;
            finish(&conn, &s, kv::delete(&s, a).await).await
        }
        ClientCommand::List(a) => {
            let (conn, s) = open(&a.conn)?;
            finish(&conn, &s, kv::list(&s, a).await).await
        }
        ClientCommand::Strong(a) => strong::run(a, |c| c.client(KEY_TIMEOUT, KEY_ATTEMPTS)).await,
        ClientCommand::Status(a) => {
            let client = a.conn.client(KEY_TIMEOUT, KEY_ATTEMPTS)?;
            status::run(&client, a).await
        }
        ClientCommand::Backup(a) => backup::backup(a).await.map(drop),
        ClientCommand::Restore(a) => backup::restore(a).await.map(drop),
        ClientCommand::Admin(a) => admin::run(a).await,
    }
}

/// The session of a key command, from its session file.
fn open(conn: &conn::ClientOpts) -> anyhow::Result<(conn::ClientOpts, Session)> {
    let session = conn.session(conn.client(KEY_TIMEOUT, KEY_ATTEMPTS)?);
    Ok((conn.clone(), session))
}

/// Keeps what the session learnt, even when the command failed (a read before a failed write
/// still happened), and returns the command's outcome.
async fn finish(
    conn: &conn::ClientOpts,
    session: &Session,
    outcome: anyhow::Result<()>,
) -> anyhow::Result<()> {
    conn.save(session).await?;
    outcome
}
