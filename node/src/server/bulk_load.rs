//! `causeway bulk-load`: writes keys straight into a stopped node's data directory through
//! [`crate::core::node::bulk`] (the same indexed writes as the running node), for benchmarks
//! that need millions of keys without minutes of HTTP load.

use super::seal::Keyring;
use super::storage::{FjallStorage, Tuning};
use crate::core::Actor;
use crate::core::node::bulk::BulkLoad;
use crate::core::ring::{DEFAULT_PARTITIONS, node_hash};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Keys staged between two storage syncs: bounds the loader's memory.
const SYNC_EVERY: u64 = 50_000;
/// The node's default `max_value_bytes`.
const MAX_VALUE_BYTES: usize = 8 << 20;

#[derive(clap::Args, Debug, Clone)]
pub struct BulkLoadArgs {
    /// The node's data directory (the node must be stopped)
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Keys to write: `{prefix}{i:010}` for i in first..first+keys
    #[arg(long)]
    pub keys: u64,
    /// Index of the first key (a later load continues an earlier one)
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    #[arg(long, default_value = "bench-")]
    pub prefix: String,
    /// Bytes of every value (deterministic filler)
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Partitions of the cluster the node belongs to
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Encryption-at-rest key file of the node, if it uses one
    #[arg(long)]
    pub encryption_key_file: Option<PathBuf>,
}

/// The loader's actor: one fixed actor, so replicas loaded alike hold identical version sets.
fn loader_actor() -> Actor {
    Actor::new(node_hash("causeway bulk-load"), 0, 1)
}

pub fn run(args: &BulkLoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.partitions > 0, "--partitions must be positive");
    anyhow::ensure!(
        args.value_bytes <= MAX_VALUE_BYTES,
        "--value-bytes exceeds the node's default value limit ({MAX_VALUE_BYTES})"
    );
    let keyring = match &args.encryption_key_file {
        Some(p) => Some(Arc::new(Keyring::load(p)?)),
        None => None,
    };
    let started = Instant::now();
    let mut storage = FjallStorage::open_tuned(&args.data_dir, keyring, Tuning::default())?;
    let mut load = BulkLoad::new(&mut storage, args.partitions, loader_actor(), args.first);
    let value = Bytes::from(
        (0..args.value_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    for i in args.first..args.first + args.keys {
        load.put(format!("{}{i:010}", args.prefix).as_bytes(), value.clone());
        if (i + 1 - args.first).is_multiple_of(SYNC_EVERY) {
            load.sync();
        }
    }
    load.finish();
    println!(
        "bulk-load: keys={} ms={}",
        args.keys,
        started.elapsed().as_millis()
    );
    Ok(())
}
