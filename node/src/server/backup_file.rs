//! The backup file format (`causeway backup` writes it, `causeway restore` reads it).
//!
//! ```text
//! magic    "CAUSEWAY-BACKUP\n"              16 bytes
//! version  u32 LE (= FORMAT_VERSION)
//! frames   { count: u32 LE > 0, len: u32 LE, bytes: [u8; len] }*   len <= MAX_FRAME_BYTES
//! end      count = 0, len = 0
//! total    u64 LE: the number of keys in all frames
//! digest   SHA-256 of every byte above                   32 bytes
//! ```
//!
//! A frame's bytes are the bincode (standard configuration, serde) encoding of
//! `Vec<(Bytes, VersionSet)>`: `count` keys, each with its whole version set (siblings,
//! tombstones and the set's causal context) exactly as a replica stored it. They are one page
//! of `GET /v1/admin/backup` and one body of `POST /v1/admin/restore`, passed through
//! unchanged. [`verify`] reads the whole file and checks its structure, key count and digest
//! before a restore sends anything, so a damaged or truncated file applies nothing.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 16] = b"CAUSEWAY-BACKUP\n";
/// 2: versions carry their expiry (TTL). A version-1 file (versions without one, written
/// before TTL existed) still restores: [`Reader`] converts its frames to version 2 as it reads
/// them, every version never expiring.
pub const FORMAT_VERSION: u32 = 2;
/// Largest frame: a backup page (at most `max_list_bytes`, 16 MiB by default) with room to spare.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Writes a backup to `FILE.partial` and renames it to `FILE` once complete, so a backup that
/// fails half-way leaves no file that looks whole.
pub struct Writer {
    out: BufWriter<File>,
    hash: Sha256,
    keys: u64,
    partial: PathBuf,
    path: PathBuf,
}

impl Writer {
    pub fn create(path: &Path) -> anyhow::Result<Writer> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut w = Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            keys: 0,
            partial,
            path: path.to_owned(),
        };
        w.put(MAGIC)?;
        w.put(&FORMAT_VERSION.to_le_bytes())?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> anyhow::Result<()> {
        self.hash.update(b);
        self.out.write_all(b).context("writing the backup")
    }

    /// Appends one frame of `count` keys (`count > 0`).
    pub fn frame(&mut self, count: u32, bytes: &[u8]) -> anyhow::Result<()> {
        if count == 0 || bytes.len() > MAX_FRAME_BYTES {
            bail!("a backup page of {count} keys in {} bytes", bytes.len());
        }
        self.put(&count.to_le_bytes())?;
        self.put(&(bytes.len() as u32).to_le_bytes())?;
        self.put(bytes)?;
        self.keys += u64::from(count);
        Ok(())
    }

    /// Writes the end marker, key count and digest, syncs and renames the file into place;
    /// returns the number of keys.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.put(&[0; 8])?;
        let keys = self.keys;
        self.put(&keys.to_le_bytes())?;
        let digest = self.hash.finalize_reset();
        self.out.write_all(&digest).context("writing the backup")?;
        let file = self.out.into_inner().context("writing the backup")?;
        file.sync_all().context("syncing the backup")?;
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("renaming the backup to {}", self.path.display()))?;
        Ok(keys)
    }
}

/// What [`verify`] found in an intact backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub keys: u64,
    pub frames: u64,
}

/// Reads frames in order from an opened backup; every call after [`verify`] accepted the file.
pub struct Reader {
    input: BufReader<File>,
    hash: Sha256,
    /// The file's format version (1 or [`FORMAT_VERSION`]).
    version: u32,
}

impl Reader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> anyhow::Result<Reader> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut r = Reader {
            input: BufReader::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            version: FORMAT_VERSION,
        };
        let mut magic = [0; 16];
        r.exact(&mut magic)?;
        if &magic != MAGIC {
            bail!("{} is not a causeway backup (bad magic)", path.display());
        }
        let version = r.u32()?;
        r.version = version;
        if version != FORMAT_VERSION && version != 1 {
            bail!(
                "{} is a backup of format version {version}; this causeway reads versions 1 \
                 to {FORMAT_VERSION}",
                path.display()
            );
        }
        Ok(r)
    }

    fn exact(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.hash.update(&*buf);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                bail!("the backup is truncated (it ends before its end marker and checksum)")
            }
            Err(e) => Err(e).context("reading the backup"),
        }
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        let mut b = [0; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The next frame (`count`, bytes), or `None` at the end marker.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<(u32, Vec<u8>)>> {
        let count = self.u32()?;
        let len = self.u32()? as usize;
        if count == 0 && len == 0 {
            return Ok(None);
        }
        if count == 0 || len == 0 || len > MAX_FRAME_BYTES {
            bail!("the backup is damaged: a frame of {count} keys claims {len} bytes");
        }
        let mut bytes = vec![0; len];
        self.exact(&mut bytes)?;
        if self.version == 1 {
            bytes = upgrade_v1_frame(&bytes)?;
        }
        Ok(Some((count, bytes)))
    }

    /// After the end marker: checks the key count against `keys` and the digest, and that
    /// nothing follows.
    fn trailer(mut self, keys: u64) -> anyhow::Result<()> {
        let mut total = [0; 8];
        self.exact(&mut total)?;
        let total = u64::from_le_bytes(total);
        let expected = self.hash.finalize_reset();
        let mut digest = [0; 32];
        self.input
            .read_exact(&mut digest)
            .map_err(|_| anyhow::anyhow!("the backup is truncated (its checksum is cut off)"))?;
        if digest[..] != expected[..] {
            bail!("the backup is damaged: its SHA-256 checksum does not match its contents");
        }
        if total != keys {
            bail!("the backup is damaged: it records {total} keys but its frames hold {keys}");
        }
        if self.input.read(&mut [0; 1]).context("reading the backup")? != 0 {
            bail!("the backup is damaged: bytes follow its checksum");
        }
        Ok(())
    }
}

/// Re-encodes a version-1 frame (`Vec<(Bytes, format-1 version set)>`) as a version-2 one.
fn upgrade_v1_frame(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use crate::core::VersionSet;
    use crate::core::dvv::v1;
    let cfg = bincode::config::standard().with_limit::<{ MAX_FRAME_BYTES }>();
    let (old, used): (Vec<(bytes::Bytes, v1::VersionSet)>, usize) =
        bincode::serde::decode_from_slice(bytes, cfg)
            .map_err(|e| anyhow::anyhow!("the backup is damaged: a version-1 frame: {e}"))?;
    if used != bytes.len() {
        bail!("the backup is damaged: a version-1 frame has trailing bytes");
    }
    let new: Vec<(bytes::Bytes, VersionSet)> =
        old.into_iter().map(|(k, set)| (k, set.into())).collect();
    bincode::serde::encode_to_vec(&new, bincode::config::standard())
        .map_err(|e| anyhow::anyhow!("re-encoding a version-1 frame: {e}"))
}

/// Reads the whole backup at `path` and checks it: header, frame structure, key count and
/// SHA-256 digest. `progress` is told the bytes read so far.
pub fn verify(path: &Path, mut progress: impl FnMut(u64)) -> anyhow::Result<Summary> {
    let mut r = Reader::open(path)?;
    let (mut keys, mut frames, mut bytes) = (0u64, 0u64, 0u64);
    while let Some((count, frame)) = r.next_frame()? {
        keys += u64::from(count);
        frames += 1;
        bytes += frame.len() as u64 + 8;
        progress(bytes);
    }
    r.trailer(keys)?;
    Ok(Summary { keys, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("b.cwbk");
        let mut w = Writer::create(&path).unwrap();
        w.frame(2, b"two keys").unwrap();
        w.frame(1, b"one").unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        path
    }

    /// A backup written before TTL (format 1: versions without an expiry) restores: its
    /// frames come out in the current encoding, every version never expiring.
    #[test]
    fn a_version_1_backup_reads_as_never_expiring_versions() {
        use crate::core::{Actor, Dot, VersionSet, VersionVector};
        #[derive(serde::Serialize)]
        struct V1Version {
            dot: Dot,
            value: Option<bytes::Bytes>,
            ts: u64,
            content_type: Option<bytes::Bytes>,
        }
        #[derive(serde::Serialize)]
        struct V1Set {
            context: VersionVector,
            versions: Vec<V1Version>,
        }
        let dot = Dot::new(Actor::new(7, 1, 1), 3);
        let mut context = VersionVector::new();
        context.add(dot);
        let old = vec![(
            bytes::Bytes::from_static(b"k"),
            V1Set {
                context,
                versions: vec![V1Version {
                    dot,
                    value: Some(bytes::Bytes::from_static(b"v")),
                    ts: 42,
                    content_type: None,
                }],
            },
        )];
        let frame = bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap();
        let mut file = Vec::new();
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&1u64.to_le_bytes());
        let digest = Sha256::digest(&file);
        file.extend_from_slice(&digest);
        let dir = std::env::temp_dir().join(format!("causeway-backup-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.cwbk");
        std::fs::write(&path, &file).unwrap();
        assert_eq!(verify(&path, |_| {}).unwrap().keys, 1);
        let mut r = Reader::open(&path).unwrap();
        let (count, bytes) = r.next_frame().unwrap().expect("one frame");
        assert_eq!(count, 1);
        let (entries, _): (Vec<(bytes::Bytes, VersionSet)>, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        let v = &entries[0].1.versions()[0];
        assert_eq!((v.dot, v.ts, v.expires), (dot, 42, None));
        assert_eq!(v.value.as_deref(), Some(&b"v"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn intact_files_verify_and_damaged_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("causeway-backup-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = sample(&dir);
        assert_eq!(
            verify(&path, |_| {}).unwrap(),
            Summary { keys: 3, frames: 2 }
        );
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.next_frame().unwrap(), Some((2, b"two keys".to_vec())));
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                verify(&path, |_| {}).is_err(),
                "flipped byte {i} went unnoticed"
            );
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(verify(&path, |_| {}).is_err(), "truncated to {len} bytes");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
