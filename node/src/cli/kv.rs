//! `causeway get`, `put`, `delete` and `list`: one key, or a range of keys, through a
//! [`Session`] of the client crate.

use super::conn::ClientOpts;
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use causeway_client::{ListOptions, Quorum, Session, Versions};
use std::io::{Read, Write};

#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// Replicas to read from: 1, 2, …, quorum or all
    #[arg(long)]
    pub r: Option<Quorum>,
    /// Print the read as JSON: values (base64), each sibling (value, dot, expiry, tombstone flag), deleted flag, context token
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// The value; `-` reads it from standard input
    pub value: String,
    /// Replicas that must acknowledge: 1, 2, …, quorum or all
    #[arg(long)]
    pub w: Option<Quorum>,
    /// Seconds until the value expires (1 s to 10 years): reads stop returning it then, by
    /// each serving node's clock
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    pub key: String,
    /// Replicas that must acknowledge: 1, 2, …, quorum or all
    #[arg(long)]
    pub w: Option<Quorum>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// First key of the range
    #[arg(long)]
    pub start: Option<String>,
    /// Key after the range (exclusive)
    #[arg(long)]
    pub end: Option<String>,
    /// Only keys that start with this
    #[arg(long)]
    pub prefix: Option<String>,
    /// The cursor a previous page printed: list from there on
    #[arg(long)]
    pub after: Option<String>,
    /// Keys per page (1..=1000)
    #[arg(long)]
    pub limit: Option<u32>,
    /// Walk every page to the end of the range
    #[arg(long)]
    pub all: bool,
    /// Print each page as the node's JSON, one line per page
    #[arg(long)]
    pub json: bool,
}

/// `causeway get`: the value, the siblings counted and separated, or the JSON reply.
pub async fn get(session: &Session, a: GetArgs) -> anyhow::Result<()> {
    let read = session.get_with(&a.key, a.r).await?;
    if a.json {
        let siblings: Vec<_> = read
            .siblings
            .iter()
            .map(|s| {
                serde_json::json!({
                    "value": s.value.as_ref().map(|v| B64.encode(v)),
                    "content_type": s.content_type,
                    "dot": s.dot,
                    "expires_us": s.expires_us,
                    "tombstone": s.is_tombstone(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "values": read.values().iter().map(|v| B64.encode(v)).collect::<Vec<_>>(),
            "siblings": siblings,
            "deleted": read.versions == Versions::Deleted,
            "context": read.context,
            "served_by": read.served_by,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let what = match &read.versions {
        Versions::Missing => "not found",
        Versions::Deleted => "deleted",
        Versions::Value(_) | Versions::Siblings(_) => "",
    };
    if !what.is_empty() {
        bail!("{}: {what}", a.key);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&render_values(read.values()))?;
    out.flush()?;
    Ok(())
}

/// `causeway put`: the value from the argument, or standard input for `-`.
pub async fn put(session: &Session, a: PutArgs) -> anyhow::Result<()> {
    let value = if a.value == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the value from standard input")?;
        buf
    } else {
        a.value.into_bytes()
    };
    match a.ttl {
        Some(secs) => {
            let ttl = std::time::Duration::from_secs(secs);
            session.put_expiring_with(&a.key, value, ttl, a.w).await?
        }
        None => session.put_with(&a.key, value, a.w).await?,
    }
    println!("ok");
    Ok(())
}

/// `causeway delete`.
pub async fn delete(session: &Session, a: DeleteArgs) -> anyhow::Result<()> {
    session.delete_with(&a.key, a.w).await?;
    println!("ok");
    Ok(())
}

/// A value and a newline; for siblings, a count line and a separator line before each one.
fn render_values(values: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    if let [one] = values {
        out.extend_from_slice(one.as_ref());
        out.push(b'\n');
        return out;
    }
    let n = values.len();
    out.extend_from_slice(
        format!("{n} siblings (concurrent values; a put now replaces them all)\n").as_bytes(),
    );
    for (i, v) in values.iter().enumerate() {
        out.extend_from_slice(format!("--- sibling {} of {n}\n", i + 1).as_bytes());
        out.extend_from_slice(v.as_ref());
        out.push(b'\n');
    }
    out
}

/// `causeway list`: one page (and the command for the next), or every page with `--all`.
pub async fn list(session: &Session, a: ListArgs) -> anyhow::Result<()> {
    let bytes = |s: &Option<String>| s.as_ref().map(|s| s.as_bytes().to_vec());
    let mut listing = session.list(ListOptions {
        start: bytes(&a.start),
        end: bytes(&a.end),
        prefix: bytes(&a.prefix),
        after: a.after.clone(),
        limit: a.limit,
    });
    let mut out = std::io::stdout().lock();
    while let Some(page) = listing.next_page().await? {
        if a.json {
            writeln!(out, "{}", page.raw)?;
        } else {
            for e in &page.entries {
                writeln!(out, "{}", printable_key(&e.key))?;
            }
        }
        match page.next {
            Some(n) if !a.all => {
                out.flush()?;
                if !a.json {
                    eprintln!("more keys: causeway list --after {n} (or --all)");
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(out.flush()?)
}

/// A listed key as text: control characters escaped, bytes that are not UTF-8 replaced (the
/// exact bytes are in `--json`'s `key_base64`).
fn printable_key(key: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(key).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_counted_and_separated() {
        assert_eq!(render_values(&[b"one"]), b"one\n");
        let text = String::from_utf8(render_values(&[&b"a"[..], b"b\nc"])).unwrap();
        assert_eq!(
            text,
            "2 siblings (concurrent values; a put now replaces them all)\n\
             --- sibling 1 of 2\na\n--- sibling 2 of 2\nb\nc\n"
        );
    }

    #[test]
    fn keys_print_with_control_characters_escaped() {
        assert_eq!(printable_key(b"plain key/1"), "plain key/1");
        assert_eq!(printable_key(b"a\nb\tc"), "a\\nb\\tc");
        assert_eq!(printable_key(b"\xff"), "\u{fffd}");
    }
}
