//! Replication not yet acknowledged, per peer, coalesced by key, with at most one copy of a key
//! in flight to a peer and a byte budget per peer.
//!
//! Invariants:
//! - A key is in a peer's outbox exactly while some of its dots were written here and not yet
//!   acknowledged by that peer.
//! - A key is never *re-sent* to a peer while a copy of it is in flight (sent, not acknowledged)
//!   unless that copy is presumed lost (below). A new write goes at once when the peer's budget
//!   has room (its copy is the key's current version set, reflecting every pending dot); when
//!   the budget is full it only adds its dot and the key waits, to go once, with its then
//!   current set, as acknowledgements free room.
//! - A copy is re-sent only when it is presumed lost: its acknowledgement is overdue (exponential
//!   backoff from `retry_interval`, doubling up to [`MAX_BACKOFF_DOUBLINGS`], plus up to 25%
//!   seeded jitter, plus the transfer time of the bytes in flight to the peer at
//!   [`MIN_LINK_BYTES_PER_SEC`]) **and** the driver reports that its link to the peer has nothing queued
//!   ([`Outbox::set_backlog`]), i.e. the copy is not still waiting to be written. A re-sent copy
//!   replaces the lost one in the byte count.
//! - The bytes of the copies in flight to a peer stay below the peer budget plus one message: a
//!   copy is sent only while the count is under the budget. A key that cannot be sent yet waits
//!   (it is sent as acknowledgements free room). So a slow or paused replica costs this node at
//!   most `budget + one version set` of replication memory for that peer — the copies are either
//!   in the driver's link queue or already handed to the kernel.

use super::dot::Dot;
use super::dvv::VersionSet;
use super::ring::NodeId;
use super::time::Time;
use bytes::Bytes;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A re-send waits `retry_interval * 2^attempt`, with the exponent capped at this.
pub const MAX_BACKOFF_DOUBLINGS: u32 = 5;
/// Throughput a peer link is assumed to reach at least: a copy's acknowledgement is awaited
/// for its backoff plus the time the bytes in flight to the peer (its own included) take at
/// this rate, so a large value is not presumed lost while it is still being written.
pub const MIN_LINK_BYTES_PER_SEC: u64 = 8 << 20;

/// What a `Replicate` of `set` costs in memory, approximately (values, keys, per-version
/// overhead), for the byte budget.
pub fn copy_bytes(key: &[u8], set: &VersionSet) -> u64 {
    let values: usize = set
        .versions()
        .iter()
        .map(|v| 32 + v.value.as_ref().map_or(0, |b| b.len()))
        .sum();
    (64 + key.len() + values) as u64
}

/// The copy of a key in flight to a peer.
#[derive(Debug)]
struct Flight {
    /// The dots the copy carried; it is acknowledged once none of them is pending.
    dots: BTreeSet<Dot>,
    /// Estimated size of the copy (what it holds in memory until it leaves).
    bytes: u64,
    /// Re-sends of this key so far, for the backoff.
    attempt: u32,
    /// When the copy is presumed lost.
    resend_at: Time,
}

#[derive(Debug, Default)]
struct Entry {
    dots: BTreeSet<Dot>,
    flight: Option<Flight>,
}

#[derive(Debug, Default)]
struct PeerOutbox {
    keys: BTreeMap<Bytes, Entry>,
    /// Keys with pending dots and no copy in flight (to send when the budget allows).
    waiting: BTreeSet<Bytes>,
    /// The flights' re-send times.
    timers: BTreeSet<(Time, Bytes)>,
    /// Sum of the in-flight copies' sizes.
    bytes: u64,
    /// The driver's link to this peer still holds queued messages.
    backlog: bool,
}

impl PeerOutbox {
    /// Puts a first copy of waiting `key` in flight, to be presumed lost `delay` plus its
    /// transfer time from `now`; returns the dots it carries.
    fn fly(&mut self, key: &Bytes, bytes: u64, now: Time, delay: Duration) -> Vec<Dot> {
        self.waiting.remove(key);
        self.bytes += bytes;
        let resend_at = now + delay + transfer(self.bytes);
        let e = self.keys.get_mut(key).expect("waiting keys are pending");
        e.flight = Some(Flight {
            dots: e.dots.clone(),
            bytes,
            attempt: 0,
            resend_at,
        });
        self.timers.insert((resend_at, key.clone()));
        e.dots.iter().copied().collect()
    }

    /// Ends the flight of `key` (acknowledged, or no longer this peer's), releasing its bytes.
    fn land(&mut self, key: &[u8]) {
        if let Some(f) = self.keys.get_mut(key).and_then(|e| e.flight.take()) {
            self.bytes -= f.bytes;
            self.timers
                .remove(&(f.resend_at, Bytes::copy_from_slice(key)));
        }
    }
}

/// Unacknowledged replication for every peer.
#[derive(Debug, Default)]
pub struct Outbox {
    peers: BTreeMap<NodeId, PeerOutbox>,
    /// Dots given up on because a peer's outbox was full (anti-entropy repairs those keys).
    pub dropped: u64,
    /// Copies re-sent because their acknowledgement was overdue.
    pub resent: u64,
}

impl Outbox {
    /// Records that `dot` of `key` must reach `peer`. Returns false (and counts a drop) when the
    /// peer already has `cap` keys pending.
    pub fn push(&mut self, peer: &NodeId, key: &Bytes, dot: Dot, cap: usize) -> bool {
        let p = self.peers.entry(peer.clone()).or_default();
        if let Some(e) = p.keys.get_mut(key) {
            e.dots.insert(dot);
            return true;
        }
        if p.keys.len() >= cap {
            self.dropped += 1;
            return false;
        }
        p.keys.insert(
            key.clone(),
            Entry {
                dots: BTreeSet::from([dot]),
                flight: None,
            },
        );
        p.waiting.insert(key.clone());
        true
    }

    /// True when `peer`'s in-flight bytes are under `budget`, so a new write may go at once.
    pub fn has_room(&self, peer: &str, budget: u64) -> bool {
        self.peers.get(peer).is_none_or(|p| p.bytes < budget)
    }

    /// Records that a new write's copy of `key`, `bytes` large (the key's current set, so it
    /// reflects every pending dot, returned for the message), left for `peer`. A copy already in
    /// flight stays charged with it until the acknowledgement covering both lands. The caller
    /// checked [`Outbox::has_room`] and pushed the write's dot.
    pub fn launch(
        &mut self,
        peer: &str,
        key: &Bytes,
        bytes: u64,
        now: Time,
        interval: Duration,
        rng: &mut impl Rng,
    ) -> Vec<Dot> {
        let p = self.peers.get_mut(peer).expect("the caller pushed the dot");
        let earlier = p.keys.get_mut(key).and_then(|e| e.flight.take());
        if let Some(f) = earlier {
            p.timers.remove(&(f.resend_at, key.clone()));
            p.waiting.insert(key.clone());
            // Still charged: the earlier copy may be queued or in transit.
            let dots = p.fly(key, bytes + f.bytes, now, backoff(interval, 0, rng));
            p.bytes -= f.bytes;
            return dots;
        }
        p.fly(key, bytes, now, backoff(interval, 0, rng))
    }

    /// Removes acknowledged dots. A key whose copy in flight is thereby acknowledged but that
    /// has newer dots pending waits to be sent again.
    pub fn ack(&mut self, peer: &str, key: &[u8], dots: &[Dot]) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(e) = p.keys.get_mut(key) else {
            return;
        };
        for d in dots {
            e.dots.remove(d);
        }
        let landed = e
            .flight
            .as_ref()
            .is_some_and(|f| f.dots.iter().all(|d| !e.dots.contains(d)));
        let empty = e.dots.is_empty();
        if landed {
            p.land(key);
        }
        if empty {
            p.keys.remove(key);
            p.waiting.remove(key);
        } else if landed {
            p.waiting.insert(Bytes::copy_from_slice(key));
        }
    }

    /// Tells whether the driver's link to `peer` holds messages not yet written; while it does,
    /// nothing is presumed lost (a paused peer is not sent the same value again and again).
    pub fn set_backlog(&mut self, peer: &str, queued: bool) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.backlog = queued;
        }
    }

    /// Up to `batch` copies per peer presumed lost, to send again with the payload `load(key)`
    /// gives (and its size, charged in place of the lost copy's); each gets a longer backoff.
    pub fn overdue<T>(
        &mut self,
        now: Time,
        interval: Duration,
        batch: usize,
        rng: &mut impl Rng,
        mut load: impl FnMut(&[u8]) -> (T, u64),
    ) -> Vec<(NodeId, Bytes, Vec<Dot>, T)> {
        let mut out = Vec::new();
        for (peer, p) in &mut self.peers {
            if p.backlog {
                continue;
            }
            let due: Vec<(Time, Bytes)> = p
                .timers
                .iter()
                .take_while(|(t, _)| *t <= now)
                .take(batch)
                .cloned()
                .collect();
            for (t, k) in due {
                p.timers.remove(&(t, k.clone()));
                let e = p.keys.get_mut(&k).expect("timers are of pending keys");
                let f = e.flight.as_mut().expect("timers are of flights");
                let (payload, bytes) = load(&k);
                f.attempt += 1;
                f.dots = e.dots.clone();
                p.bytes = p.bytes - f.bytes + bytes;
                f.bytes = bytes;
                f.resend_at = now + backoff(interval, f.attempt, rng) + transfer(p.bytes);
                p.timers.insert((f.resend_at, k.clone()));
                self.resent += 1;
                out.push((peer.clone(), k, e.dots.iter().copied().collect(), payload));
            }
        }
        out
    }

    /// Up to `batch` waiting keys of `peer` (every peer when `None`) to send now while the
    /// peer's in-flight bytes are under `budget`, with the payload `load(key)` gives and its size.
    #[allow(clippy::too_many_arguments)]
    pub fn ready<T>(
        &mut self,
        only: Option<&str>,
        now: Time,
        interval: Duration,
        batch: usize,
        budget: u64,
        rng: &mut impl Rng,
        mut load: impl FnMut(&[u8]) -> (T, u64),
    ) -> Vec<(NodeId, Bytes, Vec<Dot>, T)> {
        let mut out = Vec::new();
        for (peer, p) in &mut self.peers {
            if only.is_some_and(|o| o != peer) {
                continue;
            }
            for _ in 0..batch {
                if p.bytes >= budget {
                    break;
                }
                let Some(k) = p.waiting.first().cloned() else {
                    break;
                };
                let (payload, bytes) = load(&k);
                let dots = p.fly(&k, bytes, now, backoff(interval, 0, rng));
                out.push((peer.clone(), k, dots, payload));
            }
        }
        out
    }

    /// Keeps only the pending keys `keep(peer, key)` selects (after a view change: replication
    /// to a node that no longer replicates the key is handed off instead).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        for (peer, p) in &mut self.peers {
            let gone: Vec<Bytes> = p.keys.keys().filter(|k| !keep(peer, k)).cloned().collect();
            for k in gone {
                p.land(&k);
                p.keys.remove(&k);
                p.waiting.remove(&k);
            }
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

    /// Bytes of replication in flight, per peer.
    pub fn bytes(&self) -> BTreeMap<NodeId, u64> {
        self.peers
            .iter()
            .map(|(n, p)| (n.clone(), p.bytes))
            .collect()
    }

    /// Checks this module's invariants: a key is pending only with unacknowledged dots, a flight
    /// carries only dots written here, waiting keys have no flight, every flight has exactly its
    /// re-send timer, and each peer's byte count is the sum of its flights.
    pub fn check(&self) -> Result<(), String> {
        for (peer, p) in &self.peers {
            let mut bytes = 0;
            let mut timers = BTreeSet::new();
            for (k, e) in &p.keys {
                if e.dots.is_empty() {
                    return Err(format!("outbox of {peer}: key {k:?} has no pending dot"));
                }
                if let Some(f) = &e.flight {
                    if p.waiting.contains(k) {
                        return Err(format!("outbox of {peer}: key {k:?} waits while in flight"));
                    }
                    bytes += f.bytes;
                    timers.insert((f.resend_at, k.clone()));
                } else if !p.waiting.contains(k) {
                    return Err(format!(
                        "outbox of {peer}: key {k:?} neither flies nor waits"
                    ));
                }
            }
            if let Some(k) = p.waiting.iter().find(|k| !p.keys.contains_key(*k)) {
                return Err(format!("outbox of {peer}: waiting key {k:?} has no dots"));
            }
            if timers != p.timers {
                return Err(format!(
                    "outbox of {peer}: re-send timers differ from the flights"
                ));
            }
            if bytes != p.bytes {
                return Err(format!(
                    "outbox of {peer}: {} bytes counted in flight, the flights hold {bytes}",
                    p.bytes
                ));
            }
        }
        Ok(())
    }
}

/// How long `bytes` take at [`MIN_LINK_BYTES_PER_SEC`].
fn transfer(bytes: u64) -> Duration {
    Duration::from_micros(bytes.saturating_mul(1_000_000) / MIN_LINK_BYTES_PER_SEC)
}

/// `interval * 2^min(attempt, MAX_BACKOFF_DOUBLINGS)` plus up to 25% jitter.
fn backoff(interval: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let base = interval * (1 << attempt.min(MAX_BACKOFF_DOUBLINGS));
    let jitter = rng.random_range(0..=base.as_micros() as u64 / 4);
    base + Duration::from_micros(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dot::Actor;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const MS: Duration = Duration::from_millis(1);

    fn dot(c: u64) -> Dot {
        Dot::new(Actor::new(1, 1, 1), c)
    }

    fn key(k: &str) -> Bytes {
        Bytes::copy_from_slice(k.as_bytes())
    }

    fn sizes(_: &[u8]) -> ((), u64) {
        ((), 100)
    }

    #[test]
    fn new_writes_go_at_once_with_every_pending_dot_and_stay_charged_until_acknowledged() {
        let (mut o, mut rng, p) = (
            Outbox::default(),
            SmallRng::seed_from_u64(1),
            "b".to_string(),
        );
        let t = Time::ZERO;
        assert!(o.push(&p, &key("k"), dot(1), 10));
        assert!(o.has_room(&p, 1000));
        assert_eq!(
            o.launch(&p, &key("k"), 100, t, 300 * MS, &mut rng),
            [dot(1)]
        );
        assert!(o.push(&p, &key("k"), dot(2), 10));
        assert_eq!(
            o.launch(&p, &key("k"), 100, t, 300 * MS, &mut rng),
            [dot(1), dot(2)]
        );
        assert_eq!(o.bytes()[&p], 200, "both copies may still be queued");
        // Nothing is waiting: the copy in flight is not sent again by the tick.
        assert!(
            o.ready(None, t, 300 * MS, 10, 1000, &mut rng, sizes)
                .is_empty()
        );
        // The first copy's acknowledgement does not land the flight; the second's does.
        o.ack(&p, b"k", &[dot(1)]);
        assert_eq!(o.bytes()[&p], 200);
        o.ack(&p, b"k", &[dot(1), dot(2)]);
        assert_eq!(o.depths().get(&p).copied().unwrap_or(0), 0);
        assert_eq!(o.bytes()[&p], 0);
    }

    #[test]
    fn the_byte_budget_holds_keys_back_until_acknowledgements_free_room() {
        let (mut o, mut rng, p) = (
            Outbox::default(),
            SmallRng::seed_from_u64(1),
            "b".to_string(),
        );
        let t = Time::ZERO;
        for i in 0..10 {
            assert!(o.push(&p, &key(&format!("k{i}")), dot(i + 1), 100));
        }
        let first = o.ready(None, t, 300 * MS, 100, 250, &mut rng, sizes);
        assert_eq!(
            first.len(),
            3,
            "under the budget of 250, 100-byte copies go until 300"
        );
        assert!(
            o.ready(None, t, 300 * MS, 100, 250, &mut rng, sizes)
                .is_empty()
        );
        o.ack(&p, b"k0", &[dot(1)]);
        let next = o.ready(Some(&p), t, 300 * MS, 100, 250, &mut rng, sizes);
        assert_eq!(next.len(), 1);
        assert_eq!(o.bytes()[&p], 300);
    }

    #[test]
    fn a_lost_copy_is_resent_with_backoff_but_not_while_the_link_is_backlogged() {
        let (mut o, mut rng, p) = (
            Outbox::default(),
            SmallRng::seed_from_u64(1),
            "b".to_string(),
        );
        assert!(o.push(&p, &key("k"), dot(1), 10));
        o.launch(&p, &key("k"), 100, Time::ZERO, 300 * MS, &mut rng);
        let at = |ms| Time::from_millis(ms);
        assert!(o.overdue(at(299), 300 * MS, 10, &mut rng, sizes).is_empty());
        o.set_backlog(&p, true);
        assert!(
            o.overdue(at(10_000), 300 * MS, 10, &mut rng, sizes)
                .is_empty()
        );
        o.set_backlog(&p, false);
        assert_eq!(
            o.overdue(at(10_000), 300 * MS, 10, &mut rng, sizes).len(),
            1
        );
        // The next attempt waits at least twice the interval, and the copy is charged once.
        assert!(
            o.overdue(at(10_599), 300 * MS, 10, &mut rng, sizes)
                .is_empty()
        );
        assert_eq!(
            o.overdue(at(10_751), 300 * MS, 10, &mut rng, sizes).len(),
            1
        );
        assert_eq!(o.bytes()[&p], 100);
        assert_eq!(o.resent, 2);
    }

    #[test]
    fn the_checks_hold_through_pushes_flights_acks_and_resends_and_catch_a_stray_entry() {
        let (mut o, mut rng) = (Outbox::default(), SmallRng::seed_from_u64(1));
        let (b, c) = ("b".to_string(), "c".to_string());
        let at = |ms| Time::from_millis(ms);
        for (i, k) in ["k", "l", "m"].into_iter().enumerate() {
            for p in [&b, &c] {
                assert!(o.push(p, &key(k), dot(i as u64 + 1), 10));
                o.check().unwrap();
            }
        }
        o.launch(&b, &key("k"), 100, at(0), 300 * MS, &mut rng);
        o.check().unwrap();
        o.ready(None, at(0), 300 * MS, 10, 250, &mut rng, sizes);
        o.check().unwrap();
        o.overdue(at(5000), 300 * MS, 10, &mut rng, sizes);
        o.check().unwrap();
        o.ack(&b, &key("k"), &[dot(1)]);
        o.ack(&c, &key("l"), &[dot(2)]);
        o.check().unwrap();
        o.retain(|peer, _| peer == "b");
        o.check().unwrap();
        // A key left pending with no dot (what a lost acknowledgement bookkeeping would do).
        o.peers
            .get_mut("b")
            .unwrap()
            .keys
            .get_mut(&key("l"))
            .unwrap()
            .dots
            .clear();
        assert!(o.check().unwrap_err().contains("no pending dot"));
    }
}
