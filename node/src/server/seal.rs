//! Encryption at rest: a keyring of XChaCha20-Poly1305 keys that seals stored values.
//!
//! Keyring file (`--encryption-key-file`), text, one key per line: `<id> <key>` where `id` is a
//! number in `1..=4294967295` and `key` is 32 random bytes in standard base64 (make one with
//! `head -c 32 /dev/urandom | base64`). Blank lines and lines starting with `#` are ignored. The
//! key with the highest id seals every new record; any key of the ring opens the records it
//! sealed, so a key is rotated by adding one with a higher id (keep the old ones while records
//! sealed by them may remain).
//!
//! A sealed record is `0xFF, 0x01, key id (u32, big-endian), nonce (24 random bytes),
//! ciphertext, tag (16 bytes)`, with the record's storage key as associated data: a sealed value
//! opens only under the key it was stored at, and any change to it fails authentication. `0xFF`
//! never starts a plaintext record (a bincode varint), so the two cannot be confused.

use anyhow::{Context, bail};
use base64::Engine;
use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use std::path::Path;

/// First byte of every sealed record.
pub const SEALED: u8 = 0xFF;
const VERSION: u8 = 1;
const NONCE: usize = 24;
const TAG: usize = 16;
const HEADER: usize = 2 + 4 + NONCE;

/// Why a sealed record cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the record is not a sealed record of a known format")]
    Malformed,
    #[error("the record was sealed with key {0}, which the keyring does not hold")]
    UnknownKey(u32),
    #[error("the record does not authenticate under key {0} (wrong key, or corrupted data)")]
    Forged(u32),
}

/// The keys of one node: the newest seals, any opens.
pub struct Keyring {
    keys: BTreeMap<u32, XChaCha20Poly1305>,
}

impl Keyring {
    /// Reads a keyring file (see the module docs for the format).
    pub fn load(path: &Path) -> anyhow::Result<Keyring> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading encryption key file {}", path.display()))?;
        Keyring::parse(&text).with_context(|| format!("in encryption key file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Keyring> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = n + 1;
            let Some((id, key)) = line.split_once(char::is_whitespace) else {
                bail!("line {n}: expected `<id> <base64 key>`");
            };
            let id: u32 = id
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .with_context(|| format!("line {n}: the key id must be a number ≥ 1"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .with_context(|| format!("line {n}: the key is not base64"))?;
            if bytes.len() != 32 {
                bail!("line {n}: a key is 32 bytes, this one {}", bytes.len());
            }
            let cipher = XChaCha20Poly1305::new(Key::from_slice(&bytes));
            if keys.insert(id, cipher).is_some() {
                bail!("line {n}: key id {id} appears twice");
            }
        }
        if keys.is_empty() {
            bail!("no key (expected lines `<id> <base64 of 32 random bytes>`)");
        }
        Ok(Keyring { keys })
    }

    /// The id of the key that seals.
    pub fn newest(&self) -> u32 {
        *self.keys.keys().next_back().expect("never empty")
    }

    /// Seals `plain` as the value stored at `at`, with the newest key and a fresh random nonce.
    pub fn seal(&self, at: &[u8], plain: &[u8]) -> Vec<u8> {
        let id = self.newest();
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER + plain.len() + TAG);
        out.extend_from_slice(&[SEALED, VERSION]);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self.keys[&id]
            .encrypt_in_place_detached(&nonce, at, &mut out[HEADER..])
            .expect("XChaCha20-Poly1305 seals any length a record can have");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a record [`Keyring::seal`] made for the value stored at `at`.
    pub fn open(&self, at: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < HEADER + TAG || sealed[0] != SEALED || sealed[1] != VERSION {
            return Err(OpenError::Malformed);
        }
        let id = u32::from_be_bytes(sealed[2..6].try_into().expect("4 bytes"));
        let cipher = self.keys.get(&id).ok_or(OpenError::UnknownKey(id))?;
        let nonce = XNonce::from_slice(&sealed[6..HEADER]);
        let (body, tag) = sealed[HEADER..].split_at(sealed.len() - HEADER - TAG);
        let mut plain = body.to_vec();
        cipher
            .decrypt_in_place_detached(nonce, at, &mut plain, Tag::from_slice(tag))
            .map_err(|_| OpenError::Forged(id))?;
        Ok(plain)
    }
}

/// True when `record` is sealed (else it is plaintext).
pub fn is_sealed(record: &[u8]) -> bool {
    record.first() == Some(&SEALED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[(u32, u8)]) -> Keyring {
        let text: String = lines
            .iter()
            .map(|(id, b)| {
                let key = base64::engine::general_purpose::STANDARD.encode([*b; 32]);
                format!("{id} {key}\n")
            })
            .collect();
        Keyring::parse(&format!("# keys\n\n{text}")).expect("parse")
    }

    #[test]
    fn seals_with_the_newest_and_opens_with_any() {
        let old = ring(&[(1, 7)]);
        let rotated = ring(&[(1, 7), (2, 9)]);
        let a = old.seal(b"k", b"secret value");
        assert!(is_sealed(&a));
        assert!(!a.windows(6).any(|w| w == b"secret"), "no plaintext");
        assert_eq!(rotated.open(b"k", &a).as_deref(), Ok(&b"secret value"[..]));
        let b = rotated.seal(b"k", b"secret value");
        assert_eq!(b[2..6], 2u32.to_be_bytes(), "the newest key seals");
        assert_ne!(a[6..30], b[6..30], "a fresh nonce per seal");
        assert_eq!(old.open(b"k", &b), Err(OpenError::UnknownKey(2)));
    }

    #[test]
    fn wrong_key_other_slot_or_tampering_fail() {
        let r = ring(&[(1, 7)]);
        let s = r.seal(b"k", b"v");
        assert_eq!(ring(&[(1, 8)]).open(b"k", &s), Err(OpenError::Forged(1)));
        assert_eq!(r.open(b"other", &s), Err(OpenError::Forged(1)));
        let mut t = s.clone();
        *t.last_mut().expect("non-empty") ^= 1;
        assert_eq!(r.open(b"k", &t), Err(OpenError::Forged(1)));
        assert_eq!(r.open(b"k", &s[..10]), Err(OpenError::Malformed));
    }

    #[test]
    fn bad_files_are_refused() {
        for bad in [
            "",
            "# only a comment",
            "1",
            "0 AAAA",
            "x AAAA",
            "1 not-base64!",
            "1 AAAA",
        ] {
            assert!(Keyring::parse(bad).is_err(), "{bad:?}");
        }
        let key = base64::engine::general_purpose::STANDARD.encode([1; 32]);
        assert!(
            Keyring::parse(&format!("1 {key}\n1 {key}")).is_err(),
            "duplicate id"
        );
    }
}
