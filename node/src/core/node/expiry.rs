//! Time to live (docs/ttl.md): hiding expired versions from reads, and turning them into
//! tombstones that are reaped like any delete.
//!
//! A version written with a TTL carries its expiry (the coordinator's clock at execution plus
//! the TTL), so every replica holds and digests the same version. Reads and listings hide a
//! version once the *serving* node's clock passes its expiry. Every replica indexes the expiries
//! of the keys it stores (`Node::expiring`, ordered by due time); each tick pops at most
//! [`EXPIRE_PER_TICK`] due entries, so a node with many expiring keys spreads the work over
//! ticks. The replica ranked first in the shard converts a due key at once, the others
//! [`EXPIRY_STAGGER`] per rank later (so an unreachable first replica delays conversion, never
//! prevents it); a replica that already received the tombstone finds nothing left to expire.
//!
//! Invariant: an expiry tombstone removes exactly the expired versions (and tombstones already
//! there), never a version that has not expired: a concurrent or later write survives here and
//! in every merge, because the tombstone's set keeps those versions while its context covers
//! only what the key's context already covered plus the tombstone's own dot.

use super::*;
use std::time::Duration;

/// Most due expiry entries one tick handles.
pub const EXPIRE_PER_TICK: usize = 64;
/// How much later each replica after the first converts a due key.
pub const EXPIRY_STAGGER: Duration = Duration::from_secs(2);

impl<S: Storage> Node<S> {
    /// The versions a read served at this node's clock returns: all but the expired ones.
    pub(super) fn unexpired(&self, versions: &[Version]) -> Vec<Version> {
        let now = self.now.as_micros();
        versions
            .iter()
            .filter(|v| self.cfg.canary == Some(Canary::TtlIgnored) || !v.expired(now))
            .cloned()
            .collect()
    }

    /// Records the expiries of `set`, just stored for `key`, in the expiry index.
    pub(super) fn index_expiries(&mut self, key: &[u8], set: &VersionSet) {
        if self.expiring.is_empty() && set.versions().iter().any(|v| v.expires.is_some()) {
            // Marks the data set as holding expiries, so start-ups build the index by a scan;
            // a node that never stored a TTL version starts without one.
            self.storage.meta_put(META_HAS_EXPIRIES, &[1]);
        }
        for e in set.versions().iter().filter_map(|v| v.expires) {
            if !self.expiring.contains(&(e, Bytes::copy_from_slice(key))) {
                self.expiring.insert((e, Bytes::copy_from_slice(key)));
            }
        }
    }

    /// Handles up to [`EXPIRE_PER_TICK`] due entries of the expiry index.
    pub(super) fn expiry_tick(&mut self) {
        let now = self.now.as_micros();
        if self.storage_full {
            return;
        }
        for _ in 0..EXPIRE_PER_TICK {
            match self.expiring.first() {
                Some((due, _)) if *due <= now => {}
                _ => return,
            }
            let (due, key) = self.expiring.pop_first().expect("checked above");
            let Some(rank) = self.members().iter().position(|m| *m == self.me) else {
                continue;
            };
            if !self.owns(&key) {
                continue;
            }
            let set = self.storage.get(&key).unwrap_or_default();
            let Some(oldest) = set
                .versions()
                .iter()
                .filter(|v| v.value.is_some() && v.expired(now))
                .filter_map(|v| v.expires)
                .min()
            else {
                continue;
            };
            let turn = Time::from_micros(oldest) + EXPIRY_STAGGER * rank as u32;
            if turn.as_micros() > now {
                self.expiring.insert((turn.as_micros().max(due + 1), key));
            } else {
                self.expire(key, set);
            }
        }
    }

    /// Writes a tombstone for `key` that removes its expired versions (and any tombstones), and
    /// replicates it like a delete; it is reaped like one.
    fn expire(&mut self, key: Bytes, current: VersionSet) {
        let now = self.now.as_micros();
        let wide = self.cfg.canary == Some(Canary::ExpireWithWideContext);
        let gone = |v: &Version| wide || v.value.is_none() || v.expired(now);
        let removed: Vec<Dot> = current
            .versions()
            .iter()
            .filter(|v| gone(v))
            .map(|v| v.dot)
            .collect();
        let dot = self.next_dot();
        self.clock.add(dot);
        self.clock_dirty = true;
        self.hlc = (self.hlc + 1).max(self.wall.as_micros());
        let mut supersedes = VersionVector::new();
        for d in &removed {
            supersedes.add(*d);
        }
        self.out.executed.push(Executed {
            dot,
            key: key.clone(),
            value: None,
            supersedes,
            ttl: None,
            expired: removed.clone(),
            origin: None,
        });
        let had_value = current.has_value();
        let mut set = current;
        let tombstone = Version {
            dot,
            value: None,
            ts: self.hlc,
            content_type: None,
            expires: None,
        };
        set.expire(|v| removed.contains(&v.dot), tombstone);
        self.store(&key, set.clone(), had_value);
        self.needs_sync = true;
        self.probes.hit(Probe::TtlExpired);
        if self.members().len() == 1 {
            let due = self.now + self.cfg.tombstone_grace;
            self.reaps.insert(dot, (key.clone(), due));
        } else {
            self.tombstones.insert(dot, (key.clone(), BTreeSet::new()));
        }
        self.replicate(&key, dot, &set);
    }
}

/// Set (to any value) once the node stored a version with an expiry, before that version's
/// own write; until then a start-up has no expiries to find and skips the scan.
const META_HAS_EXPIRIES: &str = "has-expiries";

/// The expiry index of everything in `storage` (start-up).
pub(super) fn index_storage<S: Storage>(storage: &S) -> BTreeSet<(u64, Bytes)> {
    let mut out = BTreeSet::new();
    if storage.meta_get(META_HAS_EXPIRIES).is_none() {
        return out;
    }
    storage.for_each(&mut |k, s| {
        for e in s.versions().iter().filter_map(|v| v.expires) {
            out.insert((e, Bytes::copy_from_slice(k)));
        }
    });
    out
}
