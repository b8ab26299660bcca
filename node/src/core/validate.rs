//! Admission of decoded peer messages: [`validate`] refuses any message a correct peer could not
//! have sent, before it reaches [`crate::core::Node::handle`]. Pure (a function of the message and
//! [`Limits`]), so the production driver and the simulator run the same check.
//!
//! What it guarantees to the core, for an accepted message:
//! - every view is usable ([`View::check`]) and its epoch is at most [`MAX_EPOCH_STEP`] view
//!   changes above the receiver's, so no message can push a node's epoch to the end of the epoch
//!   space (where the next view change would have nowhere to go);
//! - every key is non-empty and at most `max_key_bytes`, every value at most `max_value_bytes`;
//! - every version set is well formed: versions sorted by dot without duplicates, each dot covered
//!   by the set's context, counters in `1..=MAX_COUNTER`, bounded counts;
//! - every list, partition, branch and segment number is in range and every vector is bounded.
//!
//! What it cannot guarantee: that a well-formed message is *true*. A context may claim writes
//! that never happened (up to [`MAX_COUNTER`] per actor, [`MAX_CONTEXT_ACTORS`] actors per
//! message), and such a claim supersedes the versions it covers. Only the sender's identity can
//! rule that out, which is what authenticated peer links (mutual TLS) provide; the bounds here
//! limit what one message can do and keep every counter far from overflow.

use super::aae::Claims;
use super::clock::{NodeClock, PartitionClock, VersionVector};
use super::dot::{Actor, Dot};
use super::dvv::VersionSet;
use super::merkle::{BRANCHES, SEGMENTS};
use super::message::PeerMsg;
use super::request::{Op, ReqError, Response};
use super::ring::{Epoch, MAX_PARTITIONS, View, epoch_number};
use super::strong::StrongOutcome;
use bytes::Bytes;

/// Most view changes a peer's epoch may be ahead of the receiver's. A legitimate peer is ahead by
/// the view changes the receiver missed; 65,536 of them is far beyond any real outage, while
/// the epoch number (32 bits) leaves room for 65,536 such jumps.
pub const MAX_EPOCH_STEP: u64 = 1 << 16;
/// Most nodes in a view (and the largest replication factor).
pub const MAX_NODES: usize = 1024;
/// Longest node address.
pub const MAX_NODE_BYTES: usize = 255;
/// Largest counter of any dot or context entry: 2^48 writes by one actor (nine years at a
/// million writes per second) while staying far from `u64` overflow in clock arithmetic.
pub const MAX_COUNTER: u64 = 1 << 48;
/// Most actors in one context or clock.
pub const MAX_CONTEXT_ACTORS: usize = 4096;
/// Most versions (siblings) of one key in one message.
pub const MAX_VERSIONS: usize = 1024;
/// Most out-of-order dots one clock entry may list.
pub const MAX_CLOCK_GAPS: usize = 1 << 16;
/// Most elements of any other vector in a message (keys, sets, dots, views, partitions).
pub const MAX_ITEMS: usize = 1 << 16;
/// Largest list page a peer may ask for.
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// What the receiver knows when it checks a message.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Epoch of the view the receiver routes by.
    pub epoch: Epoch,
    /// The receiver's current actor and the last counter it issued: no correct peer knows of a
    /// later write by it, so a context or dot claiming one is forged.
    pub own: (Actor, u64),
}

/// Why a message was refused: `reason` is a short label (metrics), `detail` says what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Result<(), Rejection> {
    Err(Rejection {
        reason,
        detail: detail.into(),
    })
}

/// Checks `msg` against `limits`; `Ok` means the core may handle it.
pub fn validate(msg: &PeerMsg, limits: &Limits) -> Result<(), Rejection> {
    let c = Checker(limits);
    match msg {
        PeerMsg::Forward { op, epoch, .. } => {
            c.epoch(*epoch)?;
            c.op(op)
        }
        PeerMsg::NotReplica { epoch, .. } => c.epoch(*epoch),
        PeerMsg::JoinProbe { .. } => Ok(()),
        PeerMsg::JoinAnswer { nodes, .. } => {
            c.count("join answer nodes", nodes.len())?;
            nodes.iter().try_for_each(|n| c.node(n))
        }
        PeerMsg::ForwardReply {
            served_by, result, ..
        } => {
            c.node(served_by)?;
            match result {
                Ok(r) => c.response(r),
                Err(
                    ReqError::BadRequest(m)
                    | ReqError::Unavailable(m)
                    | ReqError::Conflict(m)
                    | ReqError::InsufficientStorage(m)
                    | ReqError::TooLarge(m),
                ) => c.text(m),
                Err(ReqError::Unsatisfiable) => Ok(()),
            }
        }
        PeerMsg::Replicate { key, set, dots } => {
            c.key(key)?;
            c.set(set)?;
            c.dots(dots)
        }
        PeerMsg::ReplicateAck { key, dots } | PeerMsg::Reap { key, dots } => {
            c.key(key)?;
            c.dots(dots)
        }
        PeerMsg::Fetch { key, .. } => c.key(key),
        PeerMsg::FetchReply { set, .. } => c.set(set),
        PeerMsg::Repair { key, set } => {
            c.key(key)?;
            c.set(set)
        }
        PeerMsg::ListPart {
            start,
            end,
            after,
            limit,
            ..
        } => {
            for bound in [start, end, after].into_iter().flatten() {
                c.bound(bound)?;
            }
            if *limit == 0 || *limit > MAX_LIST_LIMIT {
                return reject(
                    "list",
                    format!("limit {limit} outside 1..={MAX_LIST_LIMIT}"),
                );
            }
            Ok(())
        }
        PeerMsg::ListPartReply { entries, .. } | PeerMsg::RepairBatch { sets: entries } => {
            c.keyed_sets(entries)
        }
        PeerMsg::AaeRoots {
            epoch,
            roots,
            clock,
            ..
        } => {
            c.epoch(*epoch)?;
            c.count("roots", roots.len())?;
            roots.iter().try_for_each(|(p, _)| c.partition(*p))?;
            c.claims(clock)
        }
        PeerMsg::AaeBranches {
            clock, branches, ..
        } => {
            c.claims(clock)?;
            c.count("branches", branches.len())?;
            for (p, hashes) in branches {
                c.partition(*p)?;
                if hashes.len() > BRANCHES {
                    return reject("aae", format!("{} branch hashes", hashes.len()));
                }
            }
            Ok(())
        }
        PeerMsg::AaeSegmentsReq { want, .. } => {
            c.count("want", want.len())?;
            for (p, branches) in want {
                c.partition(*p)?;
                if branches.len() > BRANCHES || branches.iter().any(|b| usize::from(*b) >= BRANCHES)
                {
                    return reject("aae", "branch number out of range");
                }
            }
            Ok(())
        }
        PeerMsg::AaeSegments { segments, .. } => {
            c.count("segments", segments.len())?;
            for (p, b, hashes) in segments {
                c.partition(*p)?;
                if usize::from(*b) >= BRANCHES || hashes.len() > SEGMENTS / BRANCHES {
                    return reject("aae", "branch number or segment count out of range");
                }
            }
            Ok(())
        }
        PeerMsg::AaeKeys { segments, keys, .. } => {
            c.count("segments", segments.len())?;
            for (p, s) in segments {
                c.partition(*p)?;
                if usize::from(*s) >= SEGMENTS {
                    return reject("aae", format!("segment {s} out of range"));
                }
            }
            c.count("keys", keys.len())?;
            keys.iter().try_for_each(|(k, _)| c.key(k))
        }
        PeerMsg::AaeDiff { sets, want, .. } => {
            c.keyed_sets(sets)?;
            c.count("want", want.len())?;
            want.iter().try_for_each(|k| c.key(k))
        }
        PeerMsg::AaeFinish { sets, clock, .. } => {
            c.keyed_sets(sets)?;
            clock.as_ref().map_or(Ok(()), |cl| c.claims(cl))
        }
        PeerMsg::Ping { epoch, views } | PeerMsg::Pong { epoch, views } => {
            c.epoch(*epoch)?;
            c.count("views", *views as usize)
        }
        PeerMsg::Views { views } => {
            c.count("views", views.len())?;
            views.iter().try_for_each(|v| c.view(v))
        }
        PeerMsg::Join { node } => c.node(node),
        PeerMsg::HandoffBatch {
            partition,
            epoch,
            clock,
            sets,
            ..
        } => {
            c.partition(*partition)?;
            c.epoch(*epoch)?;
            if let Some(cl) = clock {
                c.partition_clock(cl)?;
            }
            c.keyed_sets(sets)
        }
        PeerMsg::HandoffAck { partition, .. } => c.partition(*partition),
        PeerMsg::FloorCheck {
            actor,
            since,
            olds,
            partitions,
        } => {
            c.epoch(actor.epoch())?;
            if let Some(e) = since {
                c.epoch(*e)?;
            }
            c.count("olds", olds.len())?;
            for (a, n) in olds {
                c.epoch(a.epoch())?;
                c.counter(*n)?;
            }
            c.count("partitions", partitions.len())?;
            partitions.iter().try_for_each(|p| c.partition(*p))
        }
        PeerMsg::StrongPrepare { key, .. } => c.key(key),
        PeerMsg::StrongAccept { key, state, .. } => {
            c.key(key)?;
            c.value(&state.value)
        }
        PeerMsg::StrongPromise { result, .. } => match result {
            Ok(Some((_, state))) => c.value(&state.value),
            _ => Ok(()),
        },
        PeerMsg::StrongSeal {
            partition,
            old,
            new,
        } => {
            c.partition(*partition)?;
            c.epoch(*old)?;
            c.epoch(*new)
        }
        PeerMsg::StrongSealed {
            partition, records, ..
        } => {
            c.partition(*partition)?;
            c.count("records", records.len())?;
            records.iter().try_for_each(|(key, rec)| {
                c.key(key)?;
                rec.accepted
                    .as_ref()
                    .map_or(Ok(()), |(_, state)| c.value(&state.value))
            })
        }
        PeerMsg::StrongAccepted { .. }
        | PeerMsg::StrongHello { .. }
        | PeerMsg::StrongHelloReply { .. } => Ok(()),
        PeerMsg::FloorAck { actor, partitions } => {
            c.epoch(actor.epoch())?;
            c.count("partitions", partitions.len())?;
            partitions.iter().try_for_each(|p| c.partition(*p))
        }
        // Mesh messages come from another cluster, whose partition count may differ: the
        // handler refuses a mismatch; here only sizes and ranges are checked.
        PeerMsg::MeshLayoutReq { .. } | PeerMsg::MeshSyncRoot { .. } => Ok(()),
        PeerMsg::MeshLayout { layout, .. } => {
            c.count("layout partitions", layout.owners.len())?;
            for owners in &layout.owners {
                c.count("owners", owners.len())?;
                owners.iter().try_for_each(|n| c.node(n))?;
            }
            Ok(())
        }
        PeerMsg::MeshSubscribe { partitions } => c.count("partitions", partitions.len()),
        PeerMsg::MeshPush { sets } | PeerMsg::MeshSyncDiff { sets, .. } => c.keyed_sets(sets),
        PeerMsg::MeshSyncBranches {
            vouched, branches, ..
        } => {
            c.context(vouched)?;
            match branches {
                Some(b) if b.len() > BRANCHES => {
                    reject("mesh", format!("{} branch hashes", b.len()))
                }
                _ => Ok(()),
            }
        }
        PeerMsg::MeshSyncRefused { reason, .. } => c.text(reason),
        PeerMsg::MeshSyncSegReq { branches, .. } => {
            if branches.len() > BRANCHES || branches.iter().any(|b| usize::from(*b) >= BRANCHES) {
                return reject("mesh", "branch number out of range");
            }
            Ok(())
        }
        PeerMsg::MeshSyncSegs { segments, .. } => {
            c.count("segments", segments.len())?;
            if segments
                .iter()
                .any(|(b, h)| usize::from(*b) >= BRANCHES || h.len() > SEGMENTS / BRANCHES)
            {
                return reject("mesh", "branch number or segment count out of range");
            }
            Ok(())
        }
        PeerMsg::MeshSyncKeys { segments, keys, .. } => {
            c.count("segments", segments.len())?;
            if segments.iter().any(|s| usize::from(*s) >= SEGMENTS) {
                return reject("mesh", "segment out of range");
            }
            c.count("keys", keys.len())?;
            keys.iter().try_for_each(|(k, _)| c.key(k))
        }
    }
}

/// Checks a version set a client supplies (a restore) as strictly as one from a peer.
pub fn validate_set(set: &VersionSet, limits: &Limits) -> Result<(), Rejection> {
    Checker(limits).set(set)
}

struct Checker<'a>(&'a Limits);

impl Checker<'_> {
    fn count(&self, what: &str, n: usize) -> Result<(), Rejection> {
        if n > MAX_ITEMS {
            return reject("too_many", format!("{n} {what} (at most {MAX_ITEMS})"));
        }
        Ok(())
    }

    /// A non-joining epoch at most [`MAX_EPOCH_STEP`] view changes above the receiver's.
    fn epoch(&self, epoch: Epoch) -> Result<(), Rejection> {
        let mine = epoch_number(self.0.epoch);
        // A joining receiver (epoch 0) accepts any cluster's first views' numbers as a step
        // from number 1.
        let highest = mine.max(1).saturating_add(MAX_EPOCH_STEP);
        if epoch_number(epoch) > highest {
            return reject(
                "epoch",
                format!(
                    "epoch {} is more than {MAX_EPOCH_STEP} view changes ahead of {mine}",
                    epoch_number(epoch)
                ),
            );
        }
        Ok(())
    }

    fn key(&self, key: &[u8]) -> Result<(), Rejection> {
        if key.is_empty() {
            return reject("key", "empty key");
        }
        self.bound(key)
    }

    /// A key or list bound: at most `max_key_bytes` (empty allowed).
    fn bound(&self, key: &[u8]) -> Result<(), Rejection> {
        if key.len() > self.0.max_key_bytes {
            return reject(
                "key",
                format!(
                    "key of {} bytes (at most {})",
                    key.len(),
                    self.0.max_key_bytes
                ),
            );
        }
        Ok(())
    }

    fn value(&self, value: &Option<Bytes>) -> Result<(), Rejection> {
        match value {
            Some(v) if v.len() > self.0.max_value_bytes => reject(
                "value",
                format!(
                    "value of {} bytes (at most {})",
                    v.len(),
                    self.0.max_value_bytes
                ),
            ),
            _ => Ok(()),
        }
    }

    fn text(&self, text: &str) -> Result<(), Rejection> {
        if text.len() > 4096 {
            return reject("too_many", format!("message text of {} bytes", text.len()));
        }
        Ok(())
    }

    fn node(&self, node: &str) -> Result<(), Rejection> {
        if node.is_empty() || node.len() > MAX_NODE_BYTES {
            return reject("node", format!("node address of {} bytes", node.len()));
        }
        Ok(())
    }

    fn partition(&self, p: u32) -> Result<(), Rejection> {
        if p >= MAX_PARTITIONS {
            return reject("partition", format!("partition {p} out of range"));
        }
        Ok(())
    }

    fn counter(&self, n: u64) -> Result<(), Rejection> {
        if n == 0 || n > MAX_COUNTER {
            return reject("context", format!("counter {n} outside 1..={MAX_COUNTER}"));
        }
        Ok(())
    }

    /// A dot counter in range that names no write the receiver has not issued yet.
    fn dot(&self, d: Dot) -> Result<(), Rejection> {
        self.counter(d.counter)?;
        let (me, issued) = self.0.own;
        if d.actor == me && d.counter > issued {
            return reject(
                "context",
                format!(
                    "claims write {} of this node, which issued {issued}",
                    d.counter
                ),
            );
        }
        Ok(())
    }

    fn dots(&self, dots: &[Dot]) -> Result<(), Rejection> {
        self.count("dots", dots.len())?;
        dots.iter().try_for_each(|d| self.dot(*d))
    }

    fn context(&self, ctx: &VersionVector) -> Result<(), Rejection> {
        if ctx.len() > MAX_CONTEXT_ACTORS {
            return reject(
                "context",
                format!("{} actors (at most {MAX_CONTEXT_ACTORS})", ctx.len()),
            );
        }
        ctx.iter().try_for_each(|(a, n)| {
            self.epoch(a.epoch())?;
            // A zero counter is a floor: the lineage's older actors only.
            if n == 0 {
                Ok(())
            } else {
                self.dot(Dot::new(a, n))
            }
        })
    }

    fn clock(&self, clock: &NodeClock) -> Result<(), Rejection> {
        if clock.actors() > MAX_CONTEXT_ACTORS {
            return reject("context", format!("clock of {} actors", clock.actors()));
        }
        for (a, base, above) in clock.entries() {
            self.epoch(a.epoch())?;
            if base > MAX_COUNTER || above.len() > MAX_CLOCK_GAPS {
                return reject("context", "clock entry out of range");
            }
            if above.first().is_some_and(|f| *f <= base + 1)
                || above.last().is_some_and(|l| *l > MAX_COUNTER)
            {
                return reject("context", "clock entry out of range");
            }
        }
        Ok(())
    }

    fn partition_clock(&self, h: &PartitionClock) -> Result<(), Rejection> {
        self.clock(&h.dots)?;
        self.context(&h.floors)
    }

    fn claims(&self, claims: &Claims) -> Result<(), Rejection> {
        self.epoch(claims.epoch)?;
        self.clock(&claims.clock)?;
        self.count("handoff clocks", claims.handoff.len())?;
        self.count("awaiting", claims.awaiting.len())?;
        claims
            .awaiting
            .iter()
            .try_for_each(|p| self.partition(*p))?;
        for (p, h) in &claims.handoff {
            self.partition(*p)?;
            self.partition_clock(h)?;
        }
        Ok(())
    }

    /// Sorted unique dots, each covered by the context, values within limits.
    fn set(&self, set: &VersionSet) -> Result<(), Rejection> {
        self.context(set.context())?;
        let versions = set.versions();
        if versions.len() > MAX_VERSIONS {
            return reject("version_set", format!("{} versions", versions.len()));
        }
        for (i, v) in versions.iter().enumerate() {
            self.dot(v.dot)?;
            self.value(&v.value)?;
            if v.content_type
                .as_ref()
                .is_some_and(|t| t.len() > crate::core::request::MAX_CONTENT_TYPE_BYTES)
            {
                return reject("version_set", "content type too long");
            }
            if !set.context().covers(v.dot) {
                return reject("version_set", format!("dot {:?} not in the context", v.dot));
            }
            if i > 0 && versions[i - 1].dot >= v.dot {
                return reject("version_set", "versions not sorted by dot or duplicated");
            }
        }
        Ok(())
    }

    fn keyed_sets(&self, sets: &[(Bytes, VersionSet)]) -> Result<(), Rejection> {
        self.count("sets", sets.len())?;
        sets.iter().try_for_each(|(k, s)| {
            self.key(k)?;
            self.set(s)
        })
    }

    fn view(&self, view: &View) -> Result<(), Rejection> {
        if view.is_joining() {
            // Only the joining view itself: epoch 0, nothing assigned.
            if view.epoch != 0 || !view.assignment.is_empty() {
                return reject("view", "a view without nodes must be the joining view");
            }
            return Ok(());
        }
        if view.nodes.len() > MAX_NODES || view.repl_factor > MAX_NODES {
            return reject("view", format!("more than {MAX_NODES} nodes or replicas"));
        }
        view.nodes.iter().try_for_each(|n| self.node(n))?;
        if epoch_number(view.epoch) == 0 {
            return reject("view", "epoch number 0 belongs to the joining view");
        }
        self.epoch(view.epoch)?;
        view.check().or_else(|e| reject("view", e.to_string()))
    }

    fn op(&self, op: &Op) -> Result<(), Rejection> {
        match op {
            Op::Get { key, context, .. } => {
                self.key(key)?;
                self.context(context)
            }
            Op::Put {
                key,
                value,
                context,
                ..
            } => {
                self.key(key)?;
                self.value(value)?;
                self.context(context)
            }
            Op::Merge { key, set } => {
                self.key(key)?;
                self.set(set)
            }
            Op::MergeBatch { sets } => self.keyed_sets(sets),
            Op::Strong { key, call } => {
                self.key(key)?;
                self.value(&call.value().cloned())
            }
            // Only keyed operations are forwarded; the core refuses the rest (`NotReplica`).
            Op::List { .. } | Op::KeyCount { .. } => Ok(()),
            Op::AntiEntropy { peer } | Op::Join { node: peer } => self.node(peer),
            Op::ChangeView { nodes, .. } => {
                self.count("nodes", nodes.len())?;
                nodes.iter().try_for_each(|n| self.node(n))
            }
        }
    }

    fn response(&self, r: &Response) -> Result<(), Rejection> {
        match r {
            Response::Read { versions, context } => {
                self.context(context)?;
                if versions.len() > MAX_VERSIONS {
                    return reject("version_set", format!("{} versions", versions.len()));
                }
                versions.iter().try_for_each(|v| {
                    self.dot(v.dot)?;
                    self.value(&v.value)
                })
            }
            Response::Written { dot, context, .. } => {
                self.counter(dot.counter)?;
                self.context(context)
            }
            Response::Listed { entries, next } => {
                self.count("entries", entries.len())?;
                next.as_ref().map_or(Ok(()), |n| self.bound(n))
            }
            Response::KeyCount { .. }
            | Response::AntiEntropy { .. }
            | Response::Merged { .. }
            | Response::MergedBatch { .. } => Ok(()),
            Response::ViewChanged { view } => self.view(view),
            Response::Strong(StrongOutcome::Read { value, .. }) => self.value(value),
            Response::Strong(_) => Ok(()),
        }
    }
}
