//! [`Storage`] over fjall: a `data` keyspace of bincode-encoded [`VersionSet`]s, a `meta`
//! keyspace of the core's named records, and the anti-entropy index: `index` (key
//! `partition u32 BE ‖ segment u16 BE ‖ key` → digest u64 LE) and `segments` (key `partition u32
//! BE ‖ segment u16 BE` → [`Summary`], three u64 LE). A key's data and index entry are staged
//! together and always reach fjall in the same batch (see below), so they are atomic.
//!
//! Memory: fjall's block cache (shared by the keyspaces) and each keyspace's memtable are sized
//! by [`Tuning`] (`--cache-mib`, `--memtable-mib`; defaults [`DEFAULT_CACHE_MIB`] and
//! [`DEFAULT_MEMTABLE_MIB`]; four keyspaces), so the resident set does not grow with the data.
//!
//! A `data` record is `[0xFE, 2]` followed by the bincode of the version set (format 2: every
//! version carries its expiry, docs/ttl.md). Records without that prefix are format 1, written
//! before expiries existed, and read as version sets whose versions never expire; they are
//! rewritten in format 2 the next time their key changes.
//!
//! Writes of one driver turn are staged in memory (reads see them) and reach fjall as one batch
//! when the driver calls [`FjallStorage::commit`] — before it releases any message or reply of the
//! turn — or at [`Storage::sync`]. The batch is committed with `PersistMode::Buffer`, so like a
//! plain insert it is in the OS before anything depending on it leaves the node and survives a
//! process kill (docs/design.md), but a turn of N writes costs one journal write instead of
//! N. [`Storage::sync`] makes everything durable against power loss with `PersistMode::SyncAll`.
//! The journal is ordered and a batch is atomic, so the surviving writes are always a prefix of
//! the issued ones (the core's prefix-durability requirement). A failed commit or sync (e.g. a
//! full disk) keeps the staged writes for the next commit and is reported to the driver
//! ([`FjallStorage::take_failure`]), which then acknowledges none of that turn's writes; any
//! other I/O or decoding failure stops the process (fail-stop).
//!
//! With a [`Keyring`] (encryption at rest) every stored version set is sealed
//! ([`super::seal`]) before it reaches fjall, with its key as associated data, and so is every
//! strong key's acceptor record (`strong/…` in `meta`, which holds the key's value); keys and
//! the other meta records stay plaintext. A sealed `meta` record, [`META_SEAL_CHECK`], lets [`FjallStorage::open_sealed`]
//! refuse at start a directory sealed with a key the ring lacks, or an encrypted directory opened
//! without a keyring. A record that does not open later stops the node (fail-stop), so a wrong
//! key never returns garbage.
//!
//! With `sync = "batch"` the periodic fsync runs on its own thread ([`JournalSyncer`]), so a slow
//! disk stalls no request.

use super::seal::{Keyring, is_sealed};
use crate::core::storage::empty_range;
use crate::core::strong;
use crate::core::{IndexEntry, IndexWrite, Storage, Summary, VersionSet};
use anyhow::Context;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::ops::{Bound, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The node's on-disk state.
pub struct FjallStorage {
    db: Database,
    data: Keyspace,
    meta: Keyspace,
    index: Keyspace,
    segments: Keyspace,
    /// Writes not yet handed to fjall (see the module docs). Interior mutability because the
    /// range reads of [`Storage`] take `&self` and commit the staged writes first.
    staged: RefCell<Staged>,
    dir: PathBuf,
    /// Set after every commit; a [`JournalSyncer`] clears it before it fsyncs.
    committed: Arc<AtomicBool>,
    /// Seals stored values when encryption at rest is on.
    keyring: Option<Arc<Keyring>>,
    /// A commit or sync failed since the driver last asked.
    failed: std::cell::Cell<bool>,
}

/// Most bytes of journals fjall keeps before it flushes the memtables that pin the oldest
/// (its own minimum; fjall's default is 512 MiB). The `meta` keyspace takes a few records per
/// turn and would otherwise pin every journal until 512 MiB of them piled up: 2M keys of
/// 100 bytes took 728 MiB on disk, 395 MiB of it journals; 402 MiB with this cap
/// (docs/storage.md).
const MAX_JOURNALS_BYTES: u64 = 64 << 20;

/// Meta record sealed with the keyring when a directory is first opened with one.
pub const META_SEAL_CHECK: &str = "seal-check";
const SEAL_CHECK_PLAIN: &[u8] = b"causeway encryption at rest";

/// The latest staged state of each key written since the last commit (`None`: removed).
#[derive(Default)]
struct Staged {
    data: HashMap<Box<[u8]>, Option<VersionSet>>,
    /// Index entries by encoded index key.
    index: HashMap<Box<[u8]>, Option<u64>>,
    /// Segment summaries by encoded segment key (`None`: an empty segment, removed).
    segments: HashMap<[u8; 6], Option<Summary>>,
    meta: HashMap<Box<str>, Box<[u8]>>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.index.is_empty()
            && self.segments.is_empty()
            && self.meta.is_empty()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.index.clear();
        self.segments.clear();
        self.meta.clear();
    }
}

/// Default size of fjall's block cache, MiB.
pub const DEFAULT_CACHE_MIB: u64 = 32;
/// Default size of one keyspace's memtable, MiB (fjall's own default is 64).
pub const DEFAULT_MEMTABLE_MIB: u64 = 16;

/// fjall's memory settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub cache_mib: u64,
    pub memtable_mib: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            cache_mib: DEFAULT_CACHE_MIB,
            memtable_mib: DEFAULT_MEMTABLE_MIB,
        }
    }
}

/// `partition ‖ segment`, big-endian: segment keys sort by partition, then segment.
fn segment_key(partition: u32, segment: u16) -> [u8; 6] {
    let mut k = [0; 6];
    k[..4].copy_from_slice(&partition.to_be_bytes());
    k[4..].copy_from_slice(&segment.to_be_bytes());
    k
}

/// `partition ‖ segment ‖ key`.
fn index_key(partition: u32, segment: u16, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(6 + key.len());
    k.extend_from_slice(&segment_key(partition, segment));
    k.extend_from_slice(key);
    k
}

fn encode_summary(s: &Summary) -> [u8; 24] {
    let mut b = [0; 24];
    b[..8].copy_from_slice(&s.hash.to_le_bytes());
    b[8..16].copy_from_slice(&s.keys.to_le_bytes());
    b[16..].copy_from_slice(&s.live.to_le_bytes());
    b
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn decode_summary(b: &[u8]) -> Option<Summary> {
    Some(Summary {
        hash: le_u64(b, 0)?,
        keys: le_u64(b, 8)?,
        live: le_u64(b, 16)?,
    })
}

/// Logs `what` and aborts: storage that cannot complete an operation must stop the node.
fn fail_stop(what: &str, err: impl std::fmt::Display) -> ! {
    tracing::error!("storage failure ({what}): {err}; stopping the node");
    eprintln!("causeway: storage failure ({what}): {err}");
    std::process::abort()
}

/// First byte of a record in format 2 or later, followed by the format number. A format-1
/// record (bincode of a version set without expiries) never starts with it: it starts with a
/// bincode varint, whose first byte is below 254 for any length that fits a `u64`.
const FORMAT_TAG: u8 = 0xFE;
/// The record format written: 2 = versions carry an expiry (TTL).
const FORMAT: u8 = 2;

fn encode(set: &VersionSet) -> Vec<u8> {
    let mut out = vec![FORMAT_TAG, FORMAT];
    bincode::serde::encode_into_std_write(set, &mut out, bincode::config::standard())
        .unwrap_or_else(|e| fail_stop("encode", e));
    out
}

/// Decodes a plaintext record of any format this build reads (1 or 2).
fn decode_record(plain: &[u8]) -> Result<VersionSet, String> {
    let cfg = bincode::config::standard();
    match plain {
        [FORMAT_TAG, FORMAT, rest @ ..] => bincode::serde::decode_from_slice(rest, cfg)
            .map(|(set, _)| set)
            .map_err(|e| e.to_string()),
        [FORMAT_TAG, other, ..] => Err(format!("record format {other} is newer than this build")),
        old => bincode::serde::decode_from_slice::<crate::core::dvv::v1::VersionSet, _>(old, cfg)
            .map(|(set, _)| set.into())
            .map_err(|e| e.to_string()),
    }
}

impl FjallStorage {
    /// Opens (or creates) the database in `dir` without encryption at rest.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        FjallStorage::open_sealed(dir, None)
    }

    /// Opens (or creates) the database in `dir`, replaying its journal; with a keyring, values
    /// are sealed. Fails when the directory was sealed with a key `keyring` lacks, or is
    /// encrypted and no keyring is given.
    pub fn open_sealed(dir: &Path, keyring: Option<Arc<Keyring>>) -> anyhow::Result<Self> {
        FjallStorage::open_tuned(dir, keyring, Tuning::default())
    }

    /// [`FjallStorage::open_sealed`] with fjall's memory sized by `tuning`.
    pub fn open_tuned(
        dir: &Path,
        keyring: Option<Arc<Keyring>>,
        tuning: Tuning,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let memtable = tuning.memtable_mib.max(1) << 20;
        let db = Database::builder(dir)
            .max_journaling_size(MAX_JOURNALS_BYTES)
            .cache_size(tuning.cache_mib << 20)
            .open()
            .with_context(|| format!("opening database in {}", dir.display()))?;
        let opts = || KeyspaceCreateOptions::default().max_memtable_size(memtable);
        let data = db.keyspace("data", opts)?;
        let meta = db.keyspace("meta", opts)?;
        let index = db.keyspace("index", opts)?;
        let segments = db.keyspace("segments", opts)?;
        Ok(FjallStorage {
            db,
            data,
            meta,
            index,
            segments,
            staged: RefCell::default(),
            dir: dir.to_owned(),
            committed: Arc::default(),
            keyring,
            failed: std::cell::Cell::new(false),
        })
        .and_then(FjallStorage::check_keyring)
    }

    /// Refuses a keyring that cannot open this directory's records, and an encrypted directory
    /// without one; records the check for the next start.
    fn check_keyring(self) -> anyhow::Result<Self> {
        let check = self.meta.get(META_SEAL_CHECK)?;
        match (&self.keyring, check) {
            (None, None) => {}
            (None, Some(_)) => anyhow::bail!(
                "the data directory {} is encrypted at rest; start with --encryption-key-file",
                self.dir.display()
            ),
            (Some(ring), Some(sealed)) => {
                let opened = ring.open(META_SEAL_CHECK.as_bytes(), &sealed);
                if opened.as_deref() != Ok(SEAL_CHECK_PLAIN) {
                    let why = opened
                        .err()
                        .map_or("unexpected content".into(), |e| e.to_string());
                    anyhow::bail!(
                        "the encryption key file cannot open the data directory {}: {why}",
                        self.dir.display()
                    );
                }
            }
            (Some(ring), None) => {
                let sealed = ring.seal(META_SEAL_CHECK.as_bytes(), SEAL_CHECK_PLAIN);
                self.meta.insert(META_SEAL_CHECK, sealed)?;
                self.db.persist(PersistMode::SyncAll)?;
            }
        }
        Ok(self)
    }

    /// The stored form of `set` at `key`: sealed when a keyring is set.
    fn encode(&self, key: &[u8], set: &VersionSet) -> Vec<u8> {
        let plain = encode(set);
        match &self.keyring {
            Some(ring) => ring.seal(key, &plain),
            None => plain,
        }
    }

    /// Decodes a stored record; a sealed one is opened first (a plaintext record is read as
    /// such: written before the keyring was configured). Any failure stops the node.
    fn decode(&self, key: &[u8], bytes: &[u8]) -> VersionSet {
        let opened;
        let plain = if is_sealed(bytes) {
            let Some(ring) = &self.keyring else {
                fail_stop(
                    &format!("read key {key:?}"),
                    "the record is encrypted and no --encryption-key-file is configured",
                )
            };
            opened = ring
                .open(key, bytes)
                .unwrap_or_else(|e| fail_stop(&format!("decrypt key {key:?}"), e));
            &opened[..]
        } else {
            bytes
        };
        decode_record(plain).unwrap_or_else(|e| fail_stop(&format!("decode key {key:?}"), e))
    }

    /// The stored form of meta record `name`: a strong key's acceptor record (it holds the
    /// key's value) is sealed like a value when a keyring is set, with its name as associated
    /// data; every other meta record stays plaintext.
    fn seal_meta(&self, name: &str, value: &[u8]) -> Vec<u8> {
        match &self.keyring {
            Some(ring) if name.starts_with(strong::acceptor::RECORD_PREFIX) => {
                ring.seal(name.as_bytes(), value)
            }
            _ => value.to_vec(),
        }
    }

    /// Reads back a stored meta record: a sealed one is opened first (any failure stops the
    /// node, as for values).
    fn open_meta(&self, name: &str, stored: Vec<u8>) -> Vec<u8> {
        if !(name.starts_with(strong::acceptor::RECORD_PREFIX) && is_sealed(&stored)) {
            return stored;
        }
        let Some(ring) = &self.keyring else {
            fail_stop(
                &format!("read meta record {name}"),
                "the record is encrypted and no --encryption-key-file is configured",
            )
        };
        ring.open(name.as_bytes(), &stored)
            .unwrap_or_else(|e| fail_stop(&format!("decrypt meta record {name}"), e))
    }

    /// A handle that makes this database's committed writes durable from another thread.
    pub fn journal_syncer(&self) -> JournalSyncer {
        JournalSyncer {
            dir: self.dir.clone(),
            committed: self.committed.clone(),
            open: None,
        }
    }

    /// Hands the staged writes to fjall as one atomic batch that reaches the OS (survives a
    /// process kill). The driver calls it before releasing a turn's messages and replies.
    pub fn commit(&self) {
        let mut staged = self.staged.borrow_mut();
        if staged.is_empty() {
            return;
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        for (key, set) in &staged.data {
            match set {
                Some(set) => batch.insert(&self.data, &**key, self.encode(key, set)),
                None => batch.remove(&self.data, &**key),
            }
        }
        for (key, digest) in &staged.index {
            match digest {
                Some(d) => batch.insert(&self.index, &**key, d.to_le_bytes()),
                None => batch.remove(&self.index, &**key),
            }
        }
        for (key, summary) in &staged.segments {
            match summary {
                Some(s) => batch.insert(&self.segments, key, encode_summary(s)),
                None => batch.remove(&self.segments, key),
            }
        }
        for (name, value) in &staged.meta {
            batch.insert(&self.meta, name.as_bytes(), self.seal_meta(name, value));
        }
        match batch.commit() {
            Ok(()) => {
                staged.clear();
                self.committed.store(true, Ordering::Release);
            }
            Err(e) => self.fail("commit", e),
        }
    }

    /// Writes the version sets `fill` passes to its writer, keys strictly ascending, straight
    /// into new tables of the `data` keyspace (fjall's ingestion: no journal, no memtable), for
    /// `causeway bulk-load` on a stopped node. The keys become visible, shadowing what they held,
    /// once `fill` returns and the tables are registered. Panics on keys out of order (fjall's
    /// check): callers generate them in order.
    pub fn ingest_data<F>(&self, fill: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut dyn FnMut(&[u8], &VersionSet) -> anyhow::Result<()>) -> anyhow::Result<()>,
    {
        let mut ingestion = self.data.start_ingestion()?;
        fill(&mut |key, set| {
            anyhow::ensure!(!key.is_empty(), "an empty key");
            Ok(ingestion.write(key, self.encode(key, set))?)
        })?;
        ingestion.finish()?;
        Ok(())
    }

    /// [`FjallStorage::ingest_data`] for the anti-entropy `index` keyspace: `fill` passes
    /// (partition, segment, key, digest) in (partition, segment, key) order.
    pub fn ingest_index<F>(&self, fill: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut dyn FnMut(u32, u16, &[u8], u64) -> anyhow::Result<()>) -> anyhow::Result<()>,
    {
        let mut ingestion = self.index.start_ingestion()?;
        fill(&mut |partition, segment, key, digest| {
            anyhow::ensure!(!key.is_empty(), "an empty key");
            let k = index_key(partition, segment, key);
            Ok(ingestion.write(k, digest.to_le_bytes())?)
        })?;
        ingestion.finish()?;
        Ok(())
    }

    /// Stages segment summaries alone (a bulk load writes the index entries by ingestion and
    /// the summaries it computed after them); they reach fjall with the next commit.
    pub fn put_summaries(&mut self, summaries: &[(u32, u16, Summary)]) {
        let staged = self.staged.get_mut();
        for (p, s, summary) in summaries {
            let summary = (*summary != Summary::default()).then_some(*summary);
            staged.segments.insert(segment_key(*p, *s), summary);
        }
    }

    /// Records a failed commit or sync; the staged writes stay for the next commit.
    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        tracing::warn!("storage {what} failed: {e}; writes are refused until it succeeds");
        metrics::counter!("causeway_storage_errors_total").increment(1);
        self.failed.set(true);
    }

    /// True when a commit or sync failed since the last call: the writes of the turn may not
    /// have reached the disk, so the driver must not acknowledge them.
    pub fn take_failure(&self) -> bool {
        self.failed.replace(false)
    }

    /// Free bytes of the file system holding the data directory (`statvfs`).
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes only into the zeroed struct it is given; `path` is a valid
        // NUL-terminated string for the duration of the call.
        unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut st) != 0 {
                return None;
            }
            Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
        }
    }
}

/// Fsyncs the journal of a [`FjallStorage`] without taking fjall's journal lock, so the node's
/// commits go on while the fsync runs.
///
/// Why this is enough: a commit leaves its batch in the OS (`PersistMode::Buffer`); fjall appends
/// to one journal at a time, `{id}.jnl` in the database folder with `id` rising, and fsyncs a
/// journal and the folder when it rotates to the next. So an fsync of the highest-numbered
/// journal, through a handle of our own (fsync is per file, not per handle), makes every batch
/// committed before it durable.
pub struct JournalSyncer {
    dir: PathBuf,
    committed: Arc<AtomicBool>,
    open: Option<(u64, File)>,
}

impl JournalSyncer {
    /// Fsyncs the active journal if anything was committed since the last call; returns whether
    /// it did.
    pub fn sync_committed(&mut self) -> std::io::Result<bool> {
        if !self.committed.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let started = Instant::now();
        let Some(id) = newest_journal(&self.dir)? else {
            return Err(std::io::Error::other("no journal in the database folder"));
        };
        if self.open.as_ref().is_none_or(|(open, _)| *open != id) {
            match File::open(self.dir.join(format!("{id}.jnl"))) {
                Ok(f) => self.open = Some((id, f)),
                // Rotated and removed since the listing: the rotation synced it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        if let Some((_, f)) = &self.open {
            f.sync_all()?;
        }
        metrics::histogram!("causeway_storage_background_sync_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Runs [`JournalSyncer::sync_committed`] every `every` on a thread of its own until the
    /// returned sender is dropped. A failed fsync stops the node, like every storage failure.
    pub fn spawn(mut self, every: Duration) -> std::io::Result<std::sync::mpsc::Sender<()>> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("causeway-sync".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    if let Err(e) = self.sync_committed() {
                        fail_stop("background sync", e)
                    }
                }
            })?;
        Ok(stop)
    }
}

/// The id of the highest-numbered journal (`{id}.jnl`) in `dir`.
fn newest_journal(dir: &Path) -> std::io::Result<Option<u64>> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        newest = newest.max(id);
    }
    Ok(newest)
}

impl Drop for FjallStorage {
    fn drop(&mut self) {
        self.commit();
    }
}

/// fjall asserts that keys are non-empty (a panic); the core validates every key it stores, so
/// an empty one here is a bug elsewhere: it is logged and refused, never handed to fjall.
fn empty_key(op: &str) -> bool {
    tracing::error!("storage refused an empty key ({op})");
    true
}

impl Storage for FjallStorage {
    fn get(&self, key: &[u8]) -> Option<VersionSet> {
        if key.is_empty() && empty_key("get") {
            return None;
        }
        if let Some(staged) = self.staged.borrow().data.get(key) {
            return staged.clone();
        }
        match self.data.get(key) {
            Ok(v) => v.map(|v| self.decode(key, &v)),
            Err(e) => fail_stop("get", e),
        }
    }

    fn put(&mut self, key: &[u8], set: &VersionSet) {
        if key.is_empty() && empty_key("put") {
            return;
        }
        let staged = &mut self.staged.get_mut().data;
        match staged.get_mut(key) {
            Some(slot) => *slot = Some(set.clone()),
            None => {
                staged.insert(key.into(), Some(set.clone()));
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if key.is_empty() && empty_key("remove") {
            return;
        }
        self.staged.get_mut().data.insert(key.into(), None);
    }

    fn put_indexed(&mut self, key: &[u8], set: Option<&VersionSet>, index: &IndexWrite) {
        if key.is_empty() && empty_key("put") {
            return;
        }
        // Staged together, so they reach fjall in the same batch (commit takes all of them).
        match set {
            Some(s) => self.put(key, s),
            None => self.remove(key),
        }
        self.put_index(key, index);
    }

    fn put_index(&mut self, key: &[u8], index: &IndexWrite) {
        if key.is_empty() && empty_key("index") {
            return;
        }
        let staged = self.staged.get_mut();
        let ikey = index_key(index.partition, index.segment, key);
        staged.index.insert(ikey.into(), index.digest);
        let summary = (index.summary != Summary::default()).then_some(index.summary);
        let skey = segment_key(index.partition, index.segment);
        staged.segments.insert(skey, summary);
    }

    fn digest(&self, partition: u32, segment: u16, key: &[u8]) -> Option<u64> {
        let ikey = index_key(partition, segment, key);
        if let Some(staged) = self.staged.borrow().index.get(&ikey[..]) {
            return *staged;
        }
        match self.index.get(&ikey) {
            Ok(v) => v.and_then(|v| le_u64(&v, 0)),
            Err(e) => fail_stop("index get", e),
        }
    }

    fn index_range(
        &self,
        partition: u32,
        segments: RangeInclusive<u16>,
        after: Option<(u16, &[u8])>,
        limit: usize,
    ) -> Vec<IndexEntry> {
        if segments.is_empty() {
            return Vec::new();
        }
        self.commit();
        let start = match after {
            Some((s, k)) if s >= *segments.start() => Bound::Excluded(index_key(partition, s, k)),
            _ => Bound::Included(segment_key(partition, *segments.start()).to_vec()),
        };
        let end = match segments.end().checked_add(1) {
            Some(next) => Bound::Excluded(segment_key(partition, next).to_vec()),
            None => match partition.checked_add(1) {
                Some(p) => Bound::Excluded(segment_key(p, 0).to_vec()),
                None => Bound::Unbounded,
            },
        };
        let mut out = Vec::new();
        for guard in self.index.range((start, end)).take(limit) {
            match guard.into_inner() {
                Ok((k, v)) if k.len() >= 6 => {
                    let seg = u16::from_be_bytes([k[4], k[5]]);
                    let digest = le_u64(&v, 0).unwrap_or_else(|| {
                        fail_stop("index range", format!("a digest of {} bytes", v.len()))
                    });
                    out.push((seg, Bytes::copy_from_slice(&k[6..]), digest));
                }
                Ok((k, _)) => {
                    fail_stop("index range", format!("an index key of {} bytes", k.len()))
                }
                Err(e) => fail_stop("index range", e),
            }
        }
        out
    }

    fn summaries(&self) -> Vec<(u32, u16, Summary)> {
        self.commit();
        let mut out = Vec::new();
        for guard in self.segments.iter() {
            match guard.into_inner() {
                Ok((k, v)) => {
                    let (Ok(p), Ok(s), Some(sum)) = (
                        k.get(..4)
                            .unwrap_or_default()
                            .try_into()
                            .map(u32::from_be_bytes),
                        k.get(4..6)
                            .unwrap_or_default()
                            .try_into()
                            .map(u16::from_be_bytes),
                        decode_summary(&v),
                    ) else {
                        fail_stop("segments", format!("a malformed record under {k:?}"))
                    };
                    out.push((p, s, sum));
                }
                Err(e) => fail_stop("segments", e),
            }
        }
        out
    }

    fn reset_index(&mut self) {
        self.commit();
        let staged = self.staged.get_mut();
        for guard in self.index.iter() {
            match guard.key() {
                Ok(k) => {
                    staged.index.insert(k.to_vec().into(), None);
                }
                Err(e) => fail_stop("index reset", e),
            }
        }
        for guard in self.segments.iter() {
            match guard.key() {
                Ok(k) => {
                    let Ok(k) = <[u8; 6]>::try_from(&k[..]) else {
                        fail_stop("index reset", format!("a segment key {k:?}"))
                    };
                    staged.segments.insert(k, None);
                }
                Err(e) => fail_stop("index reset", e),
            }
        }
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Vec<(Bytes, VersionSet)> {
        if empty_range(start, end) {
            return Vec::new();
        }
        self.commit();
        let mut out = Vec::new();
        for guard in self.data.range::<&[u8], _>((start, end)).take(limit) {
            match guard.into_inner() {
                Ok((k, v)) => {
                    let set = self.decode(&k, &v);
                    out.push((Bytes::copy_from_slice(&k), set));
                }
                Err(e) => fail_stop("range", e),
            }
        }
        out
    }

    fn for_each(&self, f: &mut dyn FnMut(&[u8], &VersionSet)) {
        self.commit();
        for guard in self.data.iter() {
            match guard.into_inner() {
                Ok((k, v)) => f(&k, &self.decode(&k, &v)),
                Err(e) => fail_stop("scan", e),
            }
        }
    }

    fn meta_get(&self, name: &str) -> Option<Vec<u8>> {
        if let Some(value) = self.staged.borrow().meta.get(name) {
            return Some(value.to_vec());
        }
        match self.meta.get(name) {
            Ok(v) => v.map(|v| self.open_meta(name, v.to_vec())),
            Err(e) => fail_stop("meta get", e),
        }
    }

    fn meta_put(&mut self, name: &str, value: &[u8]) {
        self.staged.get_mut().meta.insert(name.into(), value.into());
    }

    fn sync(&mut self) {
        let started = Instant::now();
        self.commit();
        if let Err(e) = self.db.persist(PersistMode::SyncAll) {
            self.fail("sync", e);
        }
        metrics::histogram!("causeway_storage_sync_seconds")
            .record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Actor, Dot, Version, VersionVector};

    fn set(v: &str) -> VersionSet {
        let mut s = VersionSet::new();
        let version = Version {
            dot: Dot::new(Actor::new(1, 1, 1), 1),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            ts: 0,
            content_type: Some(Bytes::from_static(b"text/plain")),
            expires: None,
        };
        s.write(&VersionVector::new(), version);
        s
    }

    #[test]
    fn format_1_records_read_and_format_2_keeps_expiries() {
        #[derive(serde::Serialize)]
        struct OldVersion {
            dot: Dot,
            value: Option<Bytes>,
            ts: u64,
            content_type: Option<Bytes>,
        }
        #[derive(serde::Serialize)]
        struct OldSet {
            context: VersionVector,
            versions: Vec<OldVersion>,
        }
        let new = set("v");
        let v = &new.versions()[0];
        let old = OldSet {
            context: new.context().clone(),
            versions: vec![OldVersion {
                dot: v.dot,
                value: v.value.clone(),
                ts: v.ts,
                content_type: v.content_type.clone(),
            }],
        };
        let bytes = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        assert_ne!(bytes[0], FORMAT_TAG);
        assert_eq!(decode_record(&bytes), Ok(new.clone()));
        let mut expiring = VersionSet::new();
        let version = Version {
            expires: Some(42),
            ..v.clone()
        };
        expiring.write(&VersionVector::new(), version);
        assert_eq!(decode_record(&encode(&expiring)), Ok(expiring));
        assert!(
            decode_record(&[FORMAT_TAG, 9, 0])
                .unwrap_err()
                .contains("newer")
        );
    }

    #[test]
    fn round_trips_and_ranges() {
        let dir = std::env::temp_dir().join(format!("causeway-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = FjallStorage::open(&dir).expect("open");
            for k in ["a", "b", "c", "d"] {
                s.put(k.as_bytes(), &set(k));
            }
            s.remove(b"c");
            s.meta_put("m", b"1");
            s.sync();
            let keys: Vec<Bytes> = s
                .range(Bound::Excluded(b"a"), Bound::Unbounded, 10)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys, vec![Bytes::from("b"), Bytes::from("d")]);
            assert!(
                s.range(Bound::Included(b"d"), Bound::Excluded(b"a"), 10)
                    .is_empty()
            );
        }
        let s = FjallStorage::open(&dir).expect("reopen");
        assert_eq!(s.get(b"a"), Some(set("a")));
        drop(s);
        {
            // Staged writes are visible before they reach fjall, and range reads commit them.
            let mut s = FjallStorage::open(&dir).expect("reopen");
            s.put(b"e", &set("e"));
            s.remove(b"a");
            s.meta_put("m", b"2");
            assert_eq!(s.get(b"e"), Some(set("e")));
            assert_eq!(s.get(b"a"), None);
            assert_eq!(s.meta_get("m"), Some(b"2".to_vec()));
            assert_eq!(s.range(Bound::Unbounded, Bound::Unbounded, 10).len(), 3);
            s.put(b"a", &set("a"));
            s.meta_put("m", b"1");
            s.commit();
        }
        let s = FjallStorage::open(&dir).expect("reopen");
        assert_eq!(s.get(b"a"), Some(set("a")));
        assert_eq!(s.get(b"c"), None);
        assert_eq!(s.meta_get("m"), Some(b"1".to_vec()));
        let mut n = 0;
        s.for_each(&mut |_, _| n += 1);
        assert_eq!(n, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn keyring(byte: u8) -> Option<Arc<Keyring>> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        Some(Arc::new(
            Keyring::parse(&format!("1 {key}")).expect("keyring"),
        ))
    }

    /// Every byte of every file under `dir`.
    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("list").flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_bytes(&p));
            } else {
                out.extend(std::fs::read(&p).expect("read"));
            }
        }
        out
    }

    #[test]
    fn sealed_values_never_reach_disk_in_plaintext() {
        let dir = std::env::temp_dir().join(format!("causeway-sealed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = FjallStorage::open_sealed(&dir, keyring(1)).expect("open");
            s.put(b"k", &set("plaintext-marker-1234"));
            s.sync();
        }
        let bytes = all_bytes(&dir);
        assert!(!bytes.windows(21).any(|w| w == b"plaintext-marker-1234"));
        let s = FjallStorage::open_sealed(&dir, keyring(1)).expect("reopen");
        assert_eq!(s.get(b"k"), Some(set("plaintext-marker-1234")));
        drop(s);
        let wrong = FjallStorage::open_sealed(&dir, keyring(2))
            .err()
            .expect("wrong key");
        assert!(wrong.to_string().contains("cannot open"), "{wrong}");
        let none = FjallStorage::open(&dir).err().expect("no key");
        assert!(none.to_string().contains("encrypted"), "{none}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sealed_strong_records_never_reach_disk_in_plaintext() {
        let dir =
            std::env::temp_dir().join(format!("causeway-sealed-strong-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let name = strong::acceptor::record_name(b"lock");
        {
            let mut s = FjallStorage::open_sealed(&dir, keyring(1)).expect("open");
            s.meta_put(&name, b"strong-plaintext-marker-5678");
            s.meta_put("other", b"plain-meta-marker");
            s.sync();
        }
        let bytes = all_bytes(&dir);
        let has = |m: &[u8]| bytes.windows(m.len()).any(|w| w == m);
        assert!(!has(b"strong-plaintext-marker-5678"));
        assert!(
            has(b"plain-meta-marker"),
            "other meta records stay plaintext"
        );
        let s = FjallStorage::open_sealed(&dir, keyring(1)).expect("reopen");
        assert_eq!(
            s.meta_get(&name),
            Some(b"strong-plaintext-marker-5678".to_vec())
        );
        assert_eq!(s.meta_get("other"), Some(b"plain-meta-marker".to_vec()));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_keys_are_refused_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("causeway-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = FjallStorage::open(&dir).expect("open");
        s.put(b"", &set("v"));
        s.remove(b"");
        s.sync();
        assert_eq!(s.get(b""), None);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_newest_journal_is_the_highest_number() {
        let dir = std::env::temp_dir().join(format!("causeway-journals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(newest_journal(&dir).expect("list"), None);
        for name in ["2.jnl", "10.jnl", "9.jnl", "x.jnl", "11.tmp", "lock"] {
            std::fs::write(dir.join(name), b"").expect("write");
        }
        assert_eq!(newest_journal(&dir).expect("list"), Some(10));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_syncer_syncs_only_after_commits() {
        let dir = std::env::temp_dir().join(format!("causeway-syncer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = FjallStorage::open(&dir).expect("open");
        let mut syncer = s.journal_syncer();
        assert!(
            newest_journal(&dir).expect("list").is_some(),
            "fjall keeps its journals as {{id}}.jnl in the database folder"
        );
        s.commit();
        assert!(!syncer.sync_committed().expect("sync"), "nothing committed");
        s.put(b"k", &set("v"));
        assert!(
            !syncer.sync_committed().expect("sync"),
            "staged, not committed"
        );
        s.commit();
        assert!(syncer.sync_committed().expect("sync"));
        assert!(!syncer.sync_committed().expect("sync"), "already synced");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
