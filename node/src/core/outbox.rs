//! Replication not yet acknowledged, per peer, coalesced by key.
//!
//! Invariant: a key is in a peer's outbox exactly while some of its dots were sent to that peer
//! and not acknowledged. Re-sending ships the key's *current* version set with the pending dots,
//! which reflects every one of them, so many writes to a hot key cost one message.

use super::dot::Dot;
use super::ring::NodeId;
use super::time::Time;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

#[derive(Debug, Default)]
struct PeerOutbox {
    keys: BTreeMap<Bytes, BTreeSet<Dot>>,
    /// Where the next retry round starts, so every key gets its turn under a per-round cap.
    cursor: Option<Bytes>,
    next_retry: Time,
}

/// Unacknowledged replication for every peer.
#[derive(Debug, Default)]
pub struct Outbox {
    peers: BTreeMap<NodeId, PeerOutbox>,
    /// Dots given up on because a peer's outbox was full (anti-entropy repairs those keys).
    pub dropped: u64,
}

impl Outbox {
    /// Records that `dot` of `key` was sent to `peer`. Returns false (and counts a drop) when the
    /// peer already has `cap` keys pending.
    pub fn push(
        &mut self,
        peer: &NodeId,
        key: &Bytes,
        dot: Dot,
        cap: usize,
        retry_at: Time,
    ) -> bool {
        let p = self.peers.entry(peer.clone()).or_default();
        if p.keys.is_empty() {
            p.next_retry = retry_at;
        }
        if let Some(dots) = p.keys.get_mut(key) {
            dots.insert(dot);
            return true;
        }
        if p.keys.len() >= cap {
            self.dropped += 1;
            return false;
        }
        p.keys.insert(key.clone(), BTreeSet::from([dot]));
        true
    }

    /// Removes acknowledged dots.
    pub fn ack(&mut self, peer: &str, key: &[u8], dots: &[Dot]) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(pending) = p.keys.get_mut(key) {
            for d in dots {
                pending.remove(d);
            }
            if pending.is_empty() {
                p.keys.remove(key);
            }
        }
    }

    /// Up to `batch` keys (with their pending dots) per peer whose retry time has come;
    /// schedules each such peer's next round at `now + interval`.
    pub fn due(
        &mut self,
        now: Time,
        interval: std::time::Duration,
        batch: usize,
    ) -> Vec<(NodeId, Bytes, Vec<Dot>)> {
        let mut out = Vec::new();
        for (peer, p) in &mut self.peers {
            if p.keys.is_empty() || now < p.next_retry {
                continue;
            }
            p.next_retry = now + interval;
            let start = match &p.cursor {
                Some(c) => Bound::Excluded(c.clone()),
                None => Bound::Unbounded,
            };
            let mut taken: Vec<_> = p
                .keys
                .range((start, Bound::Unbounded))
                .take(batch)
                .map(|(k, d)| (k.clone(), d.iter().copied().collect::<Vec<_>>()))
                .collect();
            if taken.len() < batch {
                let more = batch - taken.len();
                let wrapped: Vec<_> = p
                    .keys
                    .iter()
                    .take(more)
                    .filter(|(k, _)| taken.iter().all(|(t, _)| t != *k))
                    .map(|(k, d)| (k.clone(), d.iter().copied().collect()))
                    .collect();
                taken.extend(wrapped);
            }
            p.cursor = taken.last().map(|(k, _)| k.clone());
            out.extend(taken.into_iter().map(|(k, d)| (peer.clone(), k, d)));
        }
        out
    }

    /// Keeps only the pending keys `keep(peer, key)` selects (after a view change: replication
    /// to a node that no longer replicates the key is handed off instead).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        for (peer, p) in &mut self.peers {
            p.keys.retain(|k, _| keep(peer, k));
        }
    }

    /// True when some key `pred` selects awaits acknowledgement from some peer.
    pub fn any_key(&self, mut pred: impl FnMut(&[u8]) -> bool) -> bool {
        self.peers.values().any(|p| p.keys.keys().any(|k| pred(k)))
    }

    /// Drops everything pending for `peer` (it left the view: handoff delivers its keys).
    pub fn forget(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// Keys awaiting acknowledgement, per peer.
    pub fn depths(&self) -> BTreeMap<NodeId, usize> {
        self.peers
            .iter()
            .map(|(n, p)| (n.clone(), p.keys.len()))
            .collect()
    }
}
