//! The requests a node has in flight as coordinator: reads and writes parked until this replica
//! applies their context, writes waiting for `w` acknowledgements, reads waiting for `r`
//! copies, and listings waiting for every shard's page — each with its deadline.
//!
//! [`Requests`] owns them; the node asks it to record progress (an acknowledgement, a copy, a
//! page) and gets a request back exactly once, when it completes or when its deadline passes
//! ([`Requests::expire`]). A request is in at most one table and leaves it once.

use super::{Origin, Response};
use crate::core::clock::VersionVector;
use crate::core::dot::Dot;
use crate::core::dvv::VersionSet;
use crate::core::request::{Op, ReqId, Rid};
use crate::core::ring::NodeId;
use crate::core::time::Time;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// A read or write waiting for this replica to apply the writes its context names.
#[derive(Debug)]
pub(super) struct Parked {
    pub origin: Origin,
    pub op: Op,
    pub deadline: Time,
}

/// A write this node coordinated, applied here, waiting for `need` replicas to hold it.
#[derive(Debug)]
pub(super) struct PendingWrite {
    pub origin: Origin,
    pub need: usize,
    pub acked: BTreeSet<NodeId>,
    pub reply: Response,
    pub deadline: Time,
}

/// A quorum read waiting for copies of its key.
#[derive(Debug)]
pub(super) struct PendingRead {
    pub origin: Origin,
    pub key: Bytes,
    pub context: VersionVector,
    pub need: usize,
    /// One copy per replica that answered, in the order they came.
    pub got: Vec<(NodeId, VersionSet)>,
    /// Previous owners of a partition still being handed to this node; one of them must answer
    /// too, so the read sees data the handoff has not delivered yet.
    pub old: Vec<NodeId>,
    pub deadline: Time,
}

impl PendingRead {
    /// `need` current replicas answered, and one previous owner if there are any.
    fn complete(&self) -> bool {
        let from_old = self
            .got
            .iter()
            .filter(|(n, _)| self.old.contains(n))
            .count();
        let ok_old = self.old.is_empty() || from_old > 0;
        self.got.len() - from_old >= self.need && ok_old
    }
}

/// A listing waiting for the pages of the shards it asked.
#[derive(Debug)]
pub(super) struct PendingList {
    pub client: ReqId,
    pub limit: u32,
    /// Whole version sets, tombstone-only keys included ([`Op::List`]).
    pub full: bool,
    /// The shard requests not answered yet.
    pub waiting: BTreeSet<Rid>,
    pub entries: Vec<(Bytes, VersionSet)>,
    pub more: bool,
    /// The smallest last key of the shard parts that stopped early: such a part may lack keys
    /// after its last one, so the page ends there.
    pub cutoff: Option<Bytes>,
    pub deadline: Time,
}

impl PendingList {
    /// Adds one shard's page (`more`: that shard stopped before its end).
    pub fn add(&mut self, entries: Vec<(Bytes, VersionSet)>, more: bool) {
        if more
            && let Some((last, _)) = entries.last()
            && self.cutoff.as_ref().is_none_or(|c| last < c)
        {
            self.cutoff = Some(last.clone());
        }
        self.more |= more;
        self.entries.extend(entries);
    }
}

/// The requests whose deadline passed, taken out of their tables by [`Requests::expire`], each
/// kind in the order it is answered.
#[derive(Debug, Default)]
pub(super) struct Expired {
    pub parked: Vec<Parked>,
    pub writes: Vec<PendingWrite>,
    pub reads: Vec<PendingRead>,
    pub lists: Vec<ReqId>,
}

/// Every request this node coordinates and has not answered yet.
#[derive(Debug, Default)]
pub(super) struct Requests {
    parked: Vec<Parked>,
    writes: BTreeMap<Dot, PendingWrite>,
    reads: BTreeMap<Rid, PendingRead>,
    lists: BTreeMap<ReqId, PendingList>,
}

impl Requests {
    /// Parks a request until this replica's clock covers its context.
    pub fn park(&mut self, p: Parked) {
        self.parked.push(p);
    }

    /// Every parked request, in the order parked, for the node to retry or park again.
    pub fn take_parked(&mut self) -> Vec<Parked> {
        std::mem::take(&mut self.parked)
    }

    pub fn causal_waits(&self) -> usize {
        self.parked.len()
    }

    /// Waits for acknowledgements of the write `dot` (which no pending write holds yet).
    pub fn await_acks(&mut self, dot: Dot, w: PendingWrite) {
        let old = self.writes.insert(dot, w);
        assert!(old.is_none(), "{dot:?} is awaited twice");
    }

    /// Records `from`'s acknowledgement of `dot`; returns the write once `need` replicas hold
    /// it (a duplicated acknowledgement counts once).
    pub fn ack(&mut self, dot: Dot, from: &NodeId) -> Option<PendingWrite> {
        let w = self.writes.get_mut(&dot)?;
        w.acked.insert(from.clone());
        if w.acked.len() < w.need {
            return None;
        }
        self.writes.remove(&dot)
    }

    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// The dots of the writes awaiting acknowledgements.
    pub fn awaited_dots(&self) -> impl Iterator<Item = &Dot> {
        self.writes.keys()
    }

    /// Waits for the copies read `rid` asked for.
    pub fn await_copies(&mut self, rid: Rid, p: PendingRead) {
        let old = self.reads.insert(rid, p);
        assert!(old.is_none(), "read {rid} is awaited twice");
    }

    /// Adds `from`'s copy to read `rid` (a second copy from the same replica is ignored);
    /// returns the read once it is complete.
    pub fn copy(&mut self, rid: Rid, from: NodeId, set: VersionSet) -> Option<PendingRead> {
        let p = self.reads.get_mut(&rid)?;
        if p.got.iter().all(|(n, _)| *n != from) {
            p.got.push((from, set));
        }
        if !p.complete() {
            return None;
        }
        self.reads.remove(&rid)
    }

    /// Waits for the shard pages of listing `id` (`p.waiting` names them, at least one).
    pub fn await_pages(&mut self, id: ReqId, p: PendingList) {
        assert!(!p.waiting.is_empty(), "listing {id} waits for no page");
        let old = self.lists.insert(id, p);
        assert!(old.is_none(), "listing {id} is awaited twice");
    }

    /// Adds the page answering shard request `rid`; returns its listing once every page came.
    pub fn page(
        &mut self,
        rid: Rid,
        entries: Vec<(Bytes, VersionSet)>,
        more: bool,
    ) -> Option<PendingList> {
        let (&id, l) = self
            .lists
            .iter_mut()
            .find(|(_, l)| l.waiting.contains(&rid))?;
        l.waiting.remove(&rid);
        l.add(entries, more);
        if !l.waiting.is_empty() {
            return None;
        }
        self.lists.remove(&id)
    }

    /// Takes out every request whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Time) -> Expired {
        let (parked, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.parked = kept;
        Expired {
            parked,
            writes: take_due(&mut self.writes, now, |w| w.deadline)
                .into_values()
                .collect(),
            reads: take_due(&mut self.reads, now, |r| r.deadline)
                .into_values()
                .collect(),
            lists: take_due(&mut self.lists, now, |l| l.deadline)
                .into_keys()
                .collect(),
        }
    }
}

/// Removes and returns the entries of `map` due at `now`, in key order.
fn take_due<K: Ord + Clone, V>(
    map: &mut BTreeMap<K, V>,
    now: Time,
    deadline: impl Fn(&V) -> Time,
) -> BTreeMap<K, V> {
    let due: Vec<K> = map
        .iter()
        .filter(|(_, v)| deadline(v) <= now)
        .map(|(k, _)| k.clone())
        .collect();
    due.into_iter()
        .map(|k| {
            let v = map.remove(&k).expect("listed above");
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dot::Actor;

    fn written(dot: Dot) -> Response {
        Response::Written {
            dot,
            context: VersionVector::new(),
            replaced: false,
            coordinator_context: None,
        }
    }

    fn write(need: usize, deadline_ms: u64) -> PendingWrite {
        PendingWrite {
            origin: Origin::Client(1),
            need,
            acked: BTreeSet::new(),
            reply: written(dot(1)),
            deadline: Time::from_millis(deadline_ms),
        }
    }

    fn dot(counter: u64) -> Dot {
        Dot::new(Actor::new(1, 1, 1), counter)
    }

    fn read(need: usize, old: &[&str], deadline_ms: u64) -> PendingRead {
        PendingRead {
            origin: Origin::Client(2),
            key: Bytes::from_static(b"k"),
            context: VersionVector::new(),
            need,
            got: Vec::new(),
            old: old.iter().map(|n| n.to_string()).collect(),
            deadline: Time::from_millis(deadline_ms),
        }
    }

    fn list(waiting: &[Rid], deadline_ms: u64) -> PendingList {
        PendingList {
            client: 3,
            limit: 10,
            full: false,
            waiting: waiting.iter().copied().collect(),
            entries: Vec::new(),
            more: false,
            cutoff: None,
            deadline: Time::from_millis(deadline_ms),
        }
    }

    #[test]
    fn a_write_completes_at_need_distinct_acknowledgements() {
        let mut r = Requests::default();
        r.await_acks(dot(1), write(2, 100));
        assert!(r.ack(dot(1), &"a".into()).is_none());
        assert!(
            r.ack(dot(1), &"a".into()).is_none(),
            "a duplicate counts once"
        );
        let w = r.ack(dot(1), &"b".into()).expect("two replicas hold it");
        assert_eq!(w.acked.len(), 2);
        assert_eq!(r.pending_writes(), 0);
        assert!(r.ack(dot(1), &"c".into()).is_none(), "answered once");
    }

    #[test]
    fn a_read_during_handoff_needs_a_previous_owner_too() {
        let mut r = Requests::default();
        r.await_copies(7, read(1, &["old"], 100));
        assert!(r.copy(7, "a".into(), VersionSet::default()).is_none());
        assert!(r.copy(7, "a".into(), VersionSet::default()).is_none());
        let p = r
            .copy(7, "old".into(), VersionSet::default())
            .expect("complete");
        assert_eq!(p.got.len(), 2, "one copy per replica");
        assert!(r.copy(7, "b".into(), VersionSet::default()).is_none());
    }

    #[test]
    fn a_listing_completes_with_its_last_page_and_keeps_the_lowest_cutoff() {
        let mut r = Requests::default();
        r.await_pages(9, list(&[1, 2, 3], 100));
        let kv = |k: &'static str| (Bytes::from_static(k.as_bytes()), VersionSet::default());
        assert!(r.page(1, vec![kv("a"), kv("m")], true).is_none());
        assert!(r.page(2, vec![kv("b"), kv("f")], true).is_none());
        assert!(r.page(99, vec![kv("z")], true).is_none(), "unknown part");
        let l = r.page(3, vec![kv("c")], false).expect("every page came");
        assert_eq!(l.entries.len(), 5);
        assert!(l.more);
        assert_eq!(l.cutoff, Some(Bytes::from_static(b"f")));
    }

    #[test]
    fn expire_takes_only_what_is_due() {
        let mut r = Requests::default();
        r.await_acks(dot(1), write(3, 50));
        r.await_acks(dot(2), write(3, 200));
        r.await_copies(1, read(2, &[], 80));
        r.await_pages(4, list(&[5], 300));
        r.park(Parked {
            origin: Origin::Client(6),
            op: Op::Get {
                key: Bytes::from_static(b"k"),
                context: VersionVector::new(),
                r: crate::core::Quorum::N(1),
            },
            deadline: Time::from_millis(40),
        });
        let e = r.expire(Time::from_millis(80));
        assert_eq!((e.parked.len(), e.writes.len(), e.reads.len()), (1, 1, 1));
        assert!(e.lists.is_empty());
        assert_eq!(r.causal_waits(), 0);
        assert_eq!(r.awaited_dots().copied().collect::<Vec<_>>(), vec![dot(2)]);
        let e = r.expire(Time::from_millis(1000));
        assert_eq!((e.writes.len(), e.lists), (1, vec![4]));
        assert_eq!((r.pending_writes(), r.awaited_dots().count()), (0, 0));
    }
}
