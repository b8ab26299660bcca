//! `causeway strong get|put|cas|delete`: linearizable reads and conditional writes of strong
//! keys (`/v1/strong/{key}`), a namespace apart from the causal keys of `get`/`put`.
//!
//! Every command prints the key's version on success. A failed precondition exits non-zero
//! naming the current version (so a script can retry its compare-and-set); a write without a
//! majority behind it says its outcome is unknown.

use super::conn::ClientOpts;
use anyhow::{Context, anyhow, bail};
use causeway_client::{Client, Cond, Error, StrongWrite};
use std::io::{Read, Write};

#[derive(clap::Args, Debug, Clone)]
pub struct StrongArgs {
    #[command(subcommand)]
    pub cmd: StrongCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum StrongCommand {
    /// Print a strong key's value (its version goes to standard error)
    Get(GetArgs),
    /// Write a strong key, unconditionally or only if it is absent
    Put(PutArgs),
    /// Compare-and-set: write only if the key is at version VERSION
    Cas(CasArgs),
    /// Delete a strong key, unconditionally or only at a version
    Delete(DeleteArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// The value; `-` reads it from standard input
    pub value: String,
    /// Write only if the key has no value (If-None-Match: *)
    #[arg(long)]
    pub if_absent: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CasArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// The version the key must be at (0 for a never-written key)
    #[arg(long)]
    pub expect: u64,
    /// The new value; `-` reads it from standard input
    pub value: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// Delete only if the key is at this version
    #[arg(long)]
    pub expect: Option<u64>,
}

/// Runs a `strong` subcommand against a client built by `client`.
pub async fn run(
    a: StrongArgs,
    client: impl Fn(&ClientOpts) -> anyhow::Result<Client>,
) -> anyhow::Result<()> {
    match a.cmd {
        StrongCommand::Get(a) => {
            let c = client(&a.conn)?;
            let (found, version) = c.strong_get_versioned(&a.key).await.map_err(explain)?;
            match found {
                Some((value, _)) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value)?;
                    if !value.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                    out.flush()?;
                    eprintln!("version {version}");
                    Ok(())
                }
                None => bail!("{}: not found (version {version})", a.key),
            }
        }
        StrongCommand::Put(a) => {
            let cond = if a.if_absent {
                Cond::IfAbsent
            } else {
                Cond::Always
            };
            let value = value_arg(a.value)?;
            let r = client(&a.conn)?.strong_put(&a.key, value, cond).await;
            report(&a.key, r)
        }
        StrongCommand::Cas(a) => {
            let value = value_arg(a.value)?;
            let r = client(&a.conn)?
                .strong_put(&a.key, value, Cond::IfVersion(a.expect))
                .await;
            report(&a.key, r)
        }
        StrongCommand::Delete(a) => {
            let cond = a.expect.map_or(Cond::Always, Cond::IfVersion);
            let r = client(&a.conn)?.strong_delete(&a.key, cond).await;
            report(&a.key, r)
        }
    }
}

/// The value argument, or standard input for `-`.
fn value_arg(value: String) -> anyhow::Result<Vec<u8>> {
    if value != "-" {
        return Ok(value.into_bytes());
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading the value from standard input")?;
    Ok(buf)
}

/// Prints a write's new version, or fails naming the current one.
fn report(key: &str, r: causeway_client::Result<StrongWrite>) -> anyhow::Result<()> {
    match r.map_err(explain)? {
        StrongWrite::Written { version } => {
            println!("ok version {version}");
            Ok(())
        }
        StrongWrite::PreconditionFailed { version } => {
            bail!("{key}: precondition failed: the key is at version {version}")
        }
    }
}

/// Client errors worded for strong keys: no majority is the usual cause of a 503.
fn explain(e: Error) -> anyhow::Error {
    match &e {
        Error::Indeterminate { cause, .. } if cause.contains("503") => anyhow!(
            "no majority of the key's replicas answered in time; the write may or may not have \
             taken effect (read the key to find out): {e}"
        ),
        Error::Api { status: 503, .. } => {
            anyhow!("no majority of the key's replicas answered in time: {e}")
        }
        Error::Unavailable { attempts } if attempts.iter().any(|a| a.contains("503")) => {
            anyhow!("no majority of the key's replicas answered in time: {e}")
        }
        _ => e.into(),
    }
}
