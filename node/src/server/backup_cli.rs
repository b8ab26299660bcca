//! `causeway backup --node URL --out FILE` and `causeway restore FILE --node URL`.
//!
//! A backup walks `GET /v1/admin/backup` page by page while the cluster serves and writes each
//! page as a frame of a checksummed file ([`super::backup_file`]); it is a *fuzzy* snapshot:
//! every key's version set as one replica held it when its page was read, so writes made during
//! the backup may or may not be in it. A restore first reads the whole file and checks its
//! structure and SHA-256 digest — a damaged or truncated file is refused before anything is
//! sent — then posts its frames to `POST /v1/admin/restore`, a few at a time. Restoring joins
//! the backed-up version sets into what the cluster holds (never overwriting newer writes); it
//! is idempotent, so a restore that stopped half-way (a node went away) is completed by running
//! it again.

use super::backup::{COUNT_HEADER, NEXT_HEADER};
use super::backup_file::{self, Writer};
use super::cli::{ClientOpts, base_url};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
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
}

#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// The backup file to restore
    pub file: PathBuf,
    /// Frames sent at once
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

/// How many times a frame is sent before the restore gives up (a node restarting, a 503).
const ATTEMPTS: u32 = 5;

fn http(conn: &ClientOpts) -> anyhow::Result<reqwest::Client> {
    Ok(conn
        .http_builder()?
        .timeout(Duration::from_secs(120))
        .build()?)
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
    let client = http(&a.conn)?;
    let base = base_url(&a.conn.node)?;
    let started = Instant::now();
    let mut file = Writer::create(&a.out)?;
    let pb = bar(None, "backup");
    let mut after: Option<String> = None;
    loop {
        let mut req = client
            .get(format!("{base}/v1/admin/backup"))
            .query(&[("limit", a.page.to_string())]);
        if let Some(c) = &after {
            req = req.query(&[("after", c)]);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("no answer from {base}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("{status}: {}", resp.text().await.unwrap_or_default());
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let count: u32 = header(COUNT_HEADER)
            .and_then(|c| c.parse().ok())
            .context("the node's backup page has no key count")?;
        let next = header(NEXT_HEADER);
        let body = resp.bytes().await.context("reading a backup page")?;
        if count > 0 {
            file.frame(count, &body)?;
        }
        pb.inc(u64::from(count));
        match next {
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

/// Sends one frame, retrying what may pass on a later attempt (no answer, 503).
async fn send_frame(
    client: &reqwest::Client,
    url: &str,
    frame: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let frame = bytes::Bytes::from(frame);
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt.min(3))).await;
        }
        let resp = match client.post(url).body(frame.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                last = format!("no answer: {e}");
                continue;
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str(&text).context("the node's restore reply is not JSON");
        }
        last = format!("{status}: {text}");
        if !status.is_server_error() {
            break;
        }
    }
    bail!("restoring a frame failed: {last}")
}

/// Restores a backup after verifying it; returns (keys, keys whose state changed).
pub async fn restore(a: RestoreArgs) -> anyhow::Result<(u64, u64)> {
    let client = http(&a.conn)?;
    let url = format!("{}/v1/admin/restore", base_url(&a.conn.node)?);
    let size = std::fs::metadata(&a.file)
        .with_context(|| format!("opening {}", a.file.display()))?
        .len();
    let check = ProgressBar::new(size);
    let summary = backup_file::verify(&a.file, |b| check.set_position(b))
        .with_context(|| format!("{} was not restored", a.file.display()))?;
    check.finish_and_clear();
    let started = Instant::now();
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
    while let Some((count, frame)) = reader.next_frame()? {
        if running.len() >= a.parallel.max(1)
            && let Some(done) = running.join_next().await
        {
            collect(done)?;
        }
        let (client, url) = (client.clone(), url.clone());
        running.spawn(async move { Ok((count, send_frame(&client, &url, frame).await?)) });
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
