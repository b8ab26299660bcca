//! `causeway bulk-load`: writes keys straight into a stopped node's data directory with fjall's
//! sorted-table ingestion (no journal, no memtable, no compaction on the way in), storing what
//! [`crate::core::node::bulk`] says a loaded key needs, so the node then serves, replicates and
//! repairs them like keys written through the API.
//!
//! Two kinds of pass over the generated keys, which ascend (`{prefix}{i:010}`): one writes the
//! data in key order, adding each key to the in-memory trees; then the index is written in its
//! own order (partition, segment, key) by passes that each collect, sort and write the entries
//! of a run of partitions holding at most [`INDEX_PASS_ENTRIES`] keys. Memory stays bounded
//! whatever the key count (the trees are O(partitions × segments)). A directory that already
//! holds keys is loaded over: each loaded key replacing a stored one takes that key's old digest
//! out of its segment (a point read of the index, only when the index was not empty).

use super::seal::Keyring;
use super::storage::{FjallStorage, Tuning};
use crate::core::Actor;
use crate::core::merkle::{digest, segment_of};
use crate::core::node::bulk::BulkLoad;
use crate::core::ring::{DEFAULT_PARTITIONS, MAX_PARTITIONS, node_hash, partition_of};
use crate::core::{Storage, VersionSet};
use bytes::Bytes;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Index entries one pass collects before sorting them (24 bytes each: ~24 MiB).
const INDEX_PASS_ENTRIES: u64 = 1 << 20;
/// Key indexes stay below this, so `{i:010}` has ten digits and keys ascend with `i`.
const KEY_INDEX_LIMIT: u64 = 10_000_000_000;
/// The node's default `max_value_bytes`.
const MAX_VALUE_BYTES: usize = 8 << 20;
/// The node's default `max_key_bytes`.
const MAX_KEY_BYTES: usize = 1024;

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

/// The key `{prefix}{i:010}`, written into one reused buffer.
struct Keys {
    buf: Vec<u8>,
    prefix: usize,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            buf: prefix.as_bytes().to_vec(),
            prefix: prefix.len(),
        }
    }

    fn at(&mut self, i: u64) -> &[u8] {
        self.buf.truncate(self.prefix);
        write!(self.buf, "{i:010}").expect("writing to a Vec cannot fail");
        &self.buf
    }
}

pub fn run(args: &BulkLoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_PARTITIONS).contains(&args.partitions),
        "--partitions must be between 1 and {MAX_PARTITIONS}"
    );
    anyhow::ensure!(
        args.value_bytes <= MAX_VALUE_BYTES,
        "--value-bytes exceeds the node's default value limit ({MAX_VALUE_BYTES})"
    );
    anyhow::ensure!(
        args.prefix.len() + 10 <= MAX_KEY_BYTES,
        "--prefix makes keys longer than the node's default key limit ({MAX_KEY_BYTES})"
    );
    let end = args
        .first
        .checked_add(args.keys)
        .filter(|e| *e <= KEY_INDEX_LIMIT)
        .ok_or_else(|| anyhow::anyhow!("--first + --keys must be at most {KEY_INDEX_LIMIT}"))?;
    let keyring = match &args.encryption_key_file {
        Some(p) => Some(Arc::new(Keyring::load(p)?)),
        None => None,
    };
    let started = Instant::now();
    let mut storage = FjallStorage::open_tuned(&args.data_dir, keyring, Tuning::default())?;
    let mut load = BulkLoad::begin(&mut storage, args.partitions, loader_actor(), args.first)
        .map_err(anyhow::Error::msg)?;
    let value = Bytes::from(
        (0..args.value_bytes)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let keys = args.first..end;
    let per_partition = load_data(&storage, &mut load, &args.prefix, keys.clone(), &value)?;
    load_index(&storage, &load, &args.prefix, keys, &value, &per_partition)?;
    storage.put_summaries(&load.summaries());
    load.finish(&mut storage);
    println!(
        "bulk-load: keys={} ms={}",
        args.keys,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The data pass: writes every key's version set in key order, adding it to the load's trees;
/// returns how many keys each partition got.
fn load_data(
    storage: &FjallStorage,
    load: &mut BulkLoad,
    prefix: &str,
    range: Range<u64>,
    value: &Bytes,
) -> anyhow::Result<Vec<u64>> {
    let replace = !load.started_empty();
    let mut keys = Keys::new(prefix);
    let mut per_partition = vec![0u64; load.partitions() as usize];
    storage.ingest_data(|write| {
        for i in range {
            let key = keys.at(i);
            let (_, set) = load.next_set(value.clone());
            let slot = load.slot(key);
            let old = if replace {
                old_entry(storage, slot.partition, slot.segment, key)
            } else {
                None
            };
            load.add(key, digest(&set), old);
            per_partition[slot.partition as usize] += 1;
            write(key, &set)?;
        }
        Ok(())
    })?;
    Ok(per_partition)
}

/// The index pass: the loaded keys' index entries in (partition, segment, key) order, by passes
/// over runs of partitions holding at most [`INDEX_PASS_ENTRIES`] keys each (or one partition).
fn load_index(
    storage: &FjallStorage,
    load: &BulkLoad,
    prefix: &str,
    range: Range<u64>,
    value: &Bytes,
    per_partition: &[u64],
) -> anyhow::Result<()> {
    let (actor, partitions) = (load.actor(), load.partitions());
    let mut keys = Keys::new(prefix);
    storage.ingest_index(|write| {
        let mut lo = 0;
        while lo < per_partition.len() {
            let mut hi = lo + 1;
            let mut n = per_partition[lo];
            while hi < per_partition.len() && n + per_partition[hi] <= INDEX_PASS_ENTRIES {
                n += per_partition[hi];
                hi += 1;
            }
            let mut entries: Vec<(u32, u16, u64)> = Vec::with_capacity(n as usize);
            for i in range.clone() {
                let key = keys.at(i);
                let p = partition_of(key, partitions);
                if (lo..hi).contains(&(p as usize)) {
                    entries.push((p, segment_of(key), i));
                }
            }
            entries.sort_unstable();
            for (p, s, i) in entries {
                // The data pass gave key i the loader's dot i + 1.
                let set = BulkLoad::set_of(actor, i + 1, value.clone());
                write(p, s, keys.at(i), digest(&set))?;
            }
            lo = hi;
        }
        Ok(())
    })
}

/// The stored digest of `key` and whether its stored version set holds a value.
fn old_entry(
    storage: &FjallStorage,
    partition: u32,
    segment: u16,
    key: &[u8],
) -> Option<(u64, bool)> {
    let d = storage.digest(partition, segment, key)?;
    let live = storage.get(key).is_some_and(|s: VersionSet| s.has_value());
    Some((d, live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ring::View;
    use crate::core::{Config, Identity, Node, Time};

    fn args(dir: &std::path::Path, keys: u64) -> BulkLoadArgs {
        BulkLoadArgs {
            data_dir: dir.to_path_buf(),
            keys,
            first: 0,
            prefix: "bulk-".into(),
            value_bytes: 10,
            partitions: 8,
            encryption_key_file: None,
        }
    }

    /// A node over `dir` (8 partitions, one replica): starting it rebuilds an untrusted index.
    fn start(dir: &std::path::Path) -> Node<FjallStorage> {
        let me = "127.0.0.1:1".to_string();
        let view = View::with_partitions(vec![me.clone()], 1, 8).expect("a valid view");
        let id = Identity { node: me, nonce: 1 };
        let storage = FjallStorage::open(dir).expect("opening the data directory");
        Node::new(Config::new(view), id, storage, Time::ZERO)
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("causeway-bulk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A whole load: the node starts over the ingested index (no rebuild) and it matches the
    /// data; a second load continues the first.
    #[test]
    fn a_finished_load_is_indexed() {
        let d = dir("whole");
        run(&args(&d, 3000)).expect("loading");
        let more = BulkLoadArgs {
            first: 3000,
            ..args(&d, 500)
        };
        run(&more).expect("loading more");
        let n = start(&d);
        n.check_stored().expect("the index matches the data");
        assert_eq!(n.status().live_keys, 3500);
        drop(n);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A loader stopped after the data pass, before the index (killed, out of disk), over a
    /// directory whose index was valid: the index marker `BulkLoad::begin` wrote makes the node
    /// rebuild the index from the data at start.
    #[test]
    fn a_load_stopped_after_the_data_makes_the_node_rebuild_the_index() {
        let d = dir("stopped");
        let a = args(&d, 1000);
        run(&a).expect("a first, whole load");
        {
            let mut storage = FjallStorage::open(&d).expect("opening");
            let mut load = BulkLoad::begin(&mut storage, 8, loader_actor(), 1000).expect("begin");
            let value = Bytes::from_static(b"0123456789");
            load_data(&storage, &mut load, &a.prefix, 1000..3000, &value).expect("data");
        }
        let n = start(&d);
        n.check_stored()
            .expect("the index was rebuilt from the data");
        assert_eq!(n.status().live_keys, 3000);
        drop(n);
        let _ = std::fs::remove_dir_all(&d);
    }
}
