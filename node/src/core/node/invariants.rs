//! The node's invariants as code: what the module headers state, checked after every input
//! when debug assertions are on (the simulator's profile), and callable from tests.
//!
//! [`Node::check_invariants`] is cheap (proportional to the pending tables) and runs after every
//! input; [`Node::check_stored`] re-reads and re-hashes all of storage, so it runs only under the
//! simulator (`cfg(madsim)`), after every `STORED_CHECK_TICKS`th tick (a break is reported at
//! most that many tick intervals late), or when a test calls it.

use super::{Node, Storage};
use crate::core::Canary;
use crate::core::merkle;
use crate::core::message::PeerMsg;
use crate::core::ring::partition_of;
use std::collections::{BTreeMap, BTreeSet};

/// Under the simulator, storage is recounted after every this many ticks of a node: often
/// enough to name the moment of a break within 160 ms (at the default 20 ms tick), rarely
/// enough to keep sweeps fast.
#[cfg(debug_assertions)]
const STORED_CHECK_TICKS: u64 = 8;

impl<S: Storage> Node<S> {
    /// Checks the invariants that need no storage scan:
    /// - the outbox's own ([`crate::core::outbox::Outbox::check`]), and every key pending for a
    ///   peer is one that peer replicates;
    /// - `retained ∩ owned = ∅` and `awaiting ⊆ owned`;
    /// - `counter` is at least every dot of the current actor in the clock, and every write
    ///   awaiting acknowledgements has its dot in the clock;
    /// - the early lists of the Ready being built hold only answers (forward replies).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.outbox.check()?;
        let view = &self.cfg.view;
        for p in &self.retained {
            if view.owns(&self.me, *p) {
                return Err(format!("partition {p} is both retained and owned"));
            }
        }
        for p in &self.awaiting {
            if !view.owns(&self.me, *p) {
                return Err(format!("partition {p} is awaited but not owned"));
            }
        }
        let issued = self.clock.max(self.actor);
        if issued > self.counter {
            return Err(format!(
                "the clock holds dot {issued} of the current actor {:?}, above its counter {}",
                self.actor, self.counter
            ));
        }
        if let Some(d) = self
            .requests
            .awaited_dots()
            .find(|d| !self.clock.contains(**d))
        {
            return Err(format!("pending write {d:?} is not in the clock"));
        }
        let not_answer = |m: &&(_, PeerMsg)| !matches!(m.1, PeerMsg::ForwardReply { .. });
        if let Some((to, m)) = self.out.early_messages.iter().find(not_answer) {
            return Err(format!("early message to {to} is not an answer: {m:?}"));
        }
        Ok(())
    }

    /// Checks the invariants over everything stored (O(keys)): each version set is sorted,
    /// unique and covered by its context, tombstones awaiting acknowledgement or reaping are of
    /// keys this node owns, and the live-key counts and partition trees (roots
    /// and sizes) equal a recount from storage.
    pub fn check_stored(&self) -> Result<(), String> {
        let partitions = self.cfg.view.partitions;
        // Per partition: live keys, tree root, keys.
        let mut recount: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
        let mut bad = None;
        // The planted index-outside-batch bug is left to the end-to-end checkers (G3).
        let index_checked = self.cfg.canary != Some(Canary::IndexOutsideBatch);
        self.storage.for_each(&mut |k, s| {
            if bad.is_none()
                && let Err(e) = s.check()
            {
                bad = Some(format!("key {k:?}: {e}"));
            }
            let p = partition_of(k, partitions);
            let d = merkle::digest(s);
            let stored = self.storage.digest(p, merkle::segment_of(k), k);
            if bad.is_none() && index_checked && stored != Some(d) {
                bad = Some(format!(
                    "key {k:?}: the index holds digest {stored:?}, not {d:#x}"
                ));
            }
            let e = recount.entry(p).or_default();
            e.0 += u64::from(s.has_value());
            e.1 ^= merkle::contribution(k, d);
            e.2 += 1;
        });
        if let Some(e) = bad {
            return Err(e);
        }
        let view = &self.cfg.view;
        let owned = |k: &[u8]| view.owns(&self.me, view.partition_of(k));
        let stray = self.tombstones.values().map(|(k, _)| k);
        if let Some(k) = stray
            .chain(self.reaps.values().map(|(k, _)| k))
            .find(|k| !owned(k))
        {
            return Err(format!(
                "tombstone of key {k:?} kept for a partition not owned"
            ));
        }
        let parts: BTreeSet<u32> = recount
            .keys()
            .copied()
            .chain(self.merkle.partitions())
            .chain(self.live.keys().copied())
            .collect();
        for p in parts {
            let (live, root, len) = recount.get(&p).copied().unwrap_or_default();
            let kept_live = self.live.get(&p).copied().unwrap_or_default();
            if index_checked && kept_live != live {
                return Err(format!(
                    "partition {p} counts {kept_live} live keys, storage holds {live}"
                ));
            }
            let kept_len = self.merkle.get(p).map_or(0, |t| t.len());
            if index_checked && (self.merkle.root(p) != root || kept_len != len) {
                return Err(format!(
                    "partition {p}'s tree ({kept_len} keys, root {:#x}) differs from storage \
                     ({len} keys, root {root:#x})",
                    self.merkle.root(p)
                ));
            }
        }
        Ok(())
    }

    /// Runs the checks after an input (see the module header); panics on a broken invariant,
    /// naming the node and its time. The simulator reports such a panic as a violation at the
    /// event that caused it (a planted `miscount-live-keys` canary shows it).
    #[cfg(debug_assertions)]
    pub(super) fn assert_invariants(&self, tick: bool) {
        let mut r = self.check_invariants();
        if cfg!(madsim) && tick && self.ticks.is_multiple_of(STORED_CHECK_TICKS) {
            r = r.and_then(|()| self.check_stored());
        }
        if let Err(e) = r {
            panic!("invariant broken at {}: {e}", self.me);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Identity, Input};
    use crate::core::config::{Canary, Config};
    use crate::core::request::{Op, Quorum, Request};
    use crate::core::ring::View;
    use crate::core::storage::MemStorage;
    use crate::core::time::Time;
    use crate::core::{Node, VersionVector};
    use bytes::Bytes;

    /// A one-node cluster that writes, overwrites and deletes a few keys, checking every
    /// invariant after each input; returns the first broken one.
    fn run(canary: Option<Canary>) -> Result<(), String> {
        let me = "10.0.0.1:7000".to_string();
        let mut cfg = Config::new(View::new(vec![me.clone()], 1).unwrap());
        cfg.canary = canary;
        let id = Identity { node: me, nonce: 7 };
        let mut now = Time::from_millis(1_000);
        let mut node = Node::new(cfg, id, MemStorage::new(), now);
        let put = |i: u64, key: &str, value: Option<&str>| {
            Op::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                content_type: None,
                context: VersionVector::new(),
                w: Quorum::N(1),
                ttl: None,
            }
            .with_id(i)
        };
        let inputs = [
            Input::Tick,
            put(1, "a", Some("1")),
            put(2, "b", Some("1")),
            put(3, "a", Some("2")),
            put(4, "b", None),
            Input::Tick,
        ];
        for input in inputs {
            now = now + std::time::Duration::from_millis(20);
            node.handle(now, input);
            node.check_invariants()?;
            node.check_stored()?;
            node.take_ready();
        }
        Ok(())
    }

    trait WithId {
        fn with_id(self, id: u64) -> Input;
    }

    impl WithId for Op {
        fn with_id(self, id: u64) -> Input {
            Input::Client(Request { id, op: self })
        }
    }

    #[test]
    fn writes_overwrites_and_deletes_keep_every_invariant() {
        run(None).unwrap();
    }

    #[test]
    fn a_miscounted_live_key_is_caught_by_the_storage_recount() {
        let e = run(Some(Canary::MiscountLiveKeys)).unwrap_err();
        assert!(e.contains("live keys"), "{e}");
    }
}
