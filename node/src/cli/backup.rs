//! `causeway backup --node URL --out FILE` and `causeway restore FILE --node URL`.
//!
//! A backup walks `GET /v1/admin/backup` page by page while the cluster serves and writes each
//! page as a frame of a checksummed file ([`crate::server::backup_file`]); it is a *fuzzy* snapshot:
//! every key's version set as one replica held it when its page was read, so writes made during
//! the backup may or may not be in it. A restore first reads the whole file and checks its
//! structure and SHA-256 digest — a damaged or truncated file is refused before anything is
//! sent — then posts its frames to `POST /v1/admin/restore`, a few at a time, each split into one
//! request per shard sent to a replica of that shard (by the view `--node` reports), so keys
//! are not forwarded one by one. Restoring joins
//! the backed-up version sets into what the cluster holds (never overwriting newer writes); it
//! is idempotent, so a restore that stopped half-way (a node went away) is completed by running
//! it again.

use super::conn::ClientOpts;
use crate::server::backup::{Entries, decode_entries, encode_entries};
use crate::server::backup_file::{self, Writer};
use anyhow::Context;
use causeway_client::{Client, Scope};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// The backup file to write (written as FILE.partial, renamed when complete)
    #[arg(long)]
    pub out: PathBuf,
    /// Keys per page (1..=1000)
    #[arg(long, default_value_t = 1000)]
    pub page: u32,
    /// Read at most this many keys per second, leaving the cluster room to serve (0: as fast as it answers)
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// After each page, wait this many times as long as the page took (0..=10): the cluster
    /// spends at most 1 / (1 + PAUSE) of its time on the backup, so it keeps serving at load
    #[arg(long, default_value_t = DEFAULT_PAUSE, value_parser = pause_ratio)]
    pub pause: f64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// The backup file to restore
    pub file: PathBuf,
    /// Requests in flight at once (a frame is split into one request per shard)
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

/// The default `--pause`: a backup takes at most two thirds of the time of the replicas it
/// reads, so GETs during a backup keep at least 0.7x of their throughput without one
/// (`ci/bench backup`) while the backup still reads well over 50,000 keys/s.
pub const DEFAULT_PAUSE: f64 = 0.5;

fn pause_ratio(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=10.0).contains(p))
        .ok_or_else(|| format!("{s:?} is not a number from 0 to 10"))
}

/// How many times a request is sent before the command gives up (a node restarting, a 503).
const ATTEMPTS: u32 = 5;

fn client(conn: &ClientOpts) -> anyhow::Result<Client> {
    conn.client(Duration::from_secs(120), ATTEMPTS)
}

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = match len {
        Some(_) => format!("{what} [{{bar:40}}] {{pos}}/{{len}} keys, {{per_sec}}, {{eta}} left"),
        None => format!("{what} {{spinner}} {{pos}} keys, {{per_sec}}, {{elapsed}}"),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Writes a backup of the whole cluster; returns the number of keys.
pub async fn backup(a: BackupArgs) -> anyhow::Result<u64> {
    let client = client(&a.conn)?;
    let started = Instant::now();
    let mut file = Writer::create(&a.out)?;
    let pb = bar(None, "backup");
    let mut after: Option<String> = None;
    loop {
        let asked = Instant::now();
        let page = client.backup_page(after.as_deref(), a.page).await?;
        let took = asked.elapsed();
        if page.keys > 0 {
            file.frame(page.keys, &page.frame)?;
        }
        pb.inc(u64::from(page.keys));
        if a.rate > 0 {
            let due = Duration::from_secs_f64(pb.position() as f64 / a.rate as f64);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
        }
        if a.pause > 0.0 && page.next.is_some() {
            tokio::time::sleep(took.mul_f64(a.pause)).await;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let keys = file.finish()?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "backed up {keys} keys to {} in {secs:.1} s ({:.0} keys/s)",
        a.out.display(),
        keys as f64 / secs.max(1e-9)
    );
    Ok(keys)
}

/// One request of a restore: the replica to send it to (`None`: `--node`), its key count and
/// its frame.
type Part = (Option<String>, u32, Vec<u8>);

/// Where a restore sends each key: a replica of its shard in the view `--node` reported, so
/// keys reach a replica without being forwarded one at a time. A replica the restore cannot
/// reach is replaced by `--node`, which forwards (as it does for keys of a later view).
struct Routes {
    partitions: u32,
    /// Per partition, the base URLs of its shard's replicas.
    replicas: Vec<Vec<String>>,
}

impl Routes {
    async fn load(client: &Client) -> anyhow::Result<Routes> {
        let v = client.cluster(Scope::Local).await?;
        let partitions = v["partitions"].as_u64().unwrap_or(0) as u32;
        let mut replicas = vec![Vec::new(); partitions as usize];
        for shard in v["shards"].as_array().into_iter().flatten() {
            let urls: Vec<String> = shard["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().and_then(|a| client.url_like(a).ok()))
                .collect();
            for p in shard["partitions"].as_array().into_iter().flatten() {
                if let Some(slot) = p.as_u64().and_then(|p| replicas.get_mut(p as usize)) {
                    slot.clone_from(&urls);
                }
            }
        }
        Ok(Routes {
            partitions,
            replicas,
        })
    }

    /// Splits a frame into one part per replica to send it to (`None`: `--node`, for keys
    /// whose partition the view did not name), the `n`th frame using the `n`th replica of each
    /// shard.
    fn split(&self, frame: Vec<u8>, n: usize) -> anyhow::Result<Vec<Part>> {
        if self.partitions == 0 {
            return Ok(vec![(None, 0, frame)]);
        }
        let entries =
            decode_entries(&frame).map_err(|e| anyhow::anyhow!("the backup is damaged: {e}"))?;
        let mut parts: BTreeMap<Option<String>, Entries> = BTreeMap::new();
        for (key, set) in entries {
            let p = crate::core::ring::partition_of(&key, self.partitions) as usize;
            let to = self
                .replicas
                .get(p)
                .filter(|r| !r.is_empty())
                .map(|r| r[n % r.len()].clone());
            parts.entry(to).or_default().push((key, set));
        }
        Ok(parts
            .into_iter()
            .map(|(to, e)| (to, e.len() as u32, encode_entries(&e)))
            .collect())
    }
}

/// Restores a backup after verifying it; returns (keys, keys whose state changed).
pub async fn restore(a: RestoreArgs) -> anyhow::Result<(u64, u64)> {
    let client = client(&a.conn)?;
    let size = std::fs::metadata(&a.file)
        .with_context(|| format!("opening {}", a.file.display()))?
        .len();
    let check = ProgressBar::new(size);
    let summary = backup_file::verify(&a.file, |b| check.set_position(b))
        .with_context(|| format!("{} was not restored", a.file.display()))?;
    check.finish_and_clear();
    let started = Instant::now();
    let routes = Routes::load(&client).await?;
    let pb = bar(Some(summary.keys), "restore");
    let mut reader = backup_file::Reader::open(&a.file)?;
    let mut running = tokio::task::JoinSet::new();
    let (mut keys, mut changed) = (0u64, 0u64);
    let mut collect = |done: Result<anyhow::Result<(u32, serde_json::Value)>, _>| {
        let (count, reply) = done.context("a restore task failed")??;
        keys += u64::from(count);
        changed += reply["changed"].as_u64().unwrap_or(0);
        pb.inc(u64::from(count));
        anyhow::Ok(())
    };
    let mut n = 0;
    while let Some((_, frame)) = reader.next_frame()? {
        for (to, count, part) in routes.split(frame, n)? {
            if running.len() >= a.parallel.max(1)
                && let Some(done) = running.join_next().await
            {
                collect(done)?;
            }
            let client = client.clone();
            running.spawn(async move {
                let reply = client.restore_frame(to.as_deref(), part.into()).await;
                Ok((count, reply.context("restoring a frame failed")?))
            });
        }
        n += 1;
    }
    while let Some(done) = running.join_next().await {
        collect(done)?;
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "restored {keys} keys from {} in {secs:.1} s ({:.0} keys/s; {changed} changed the \
         cluster's state)",
        a.file.display(),
        keys as f64 / secs.max(1e-9)
    );
    Ok((keys, changed))
}
