//! The checkers of the guarantees G1–G7 (docs/guarantees.md), run on a [`History`].
//!
//! Supersession is derived from recorded contexts only: write `x` supersedes write `w` when
//! the context `x` was applied with (its request context; for a blind delete its coordinator's
//! context of the key) covers `w`'s dot, and transitively. For every write the index holds its
//! *ancestry*: the version vector of everything it supersedes, transitively. No checker trusts a
//! context or a version set the system reports about itself beyond what it returned to a client
//! or holds as its final state.

use crate::history::{History, OpRecord, Outcome, WriteRecord};
use crate::merge::merged_versions;
use crate::plan::OpKind;
use crate::scenario::Checker;
use bytes::Bytes;
use causeway::core::{Actor, Dot, Response, Version, VersionVector, token};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    /// The key involved (empty when none).
    pub key: String,
    /// Ids of the client operations involved.
    pub ops: Vec<u64>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} key={} ops={:?}: {}",
            self.checker, self.key, self.ops, self.detail
        )
    }
}

/// The writes to one key, in execution order, with their ancestries.
#[derive(Default)]
struct KeyWrites<'a> {
    writes: Vec<&'a WriteRecord>,
    /// `anc[i]`: everything `writes[i]` supersedes, transitively (closed: it covers the context
    /// of every write it covers).
    anc: Vec<VersionVector>,
    by_dot: BTreeMap<Dot, Vec<usize>>,
    /// Dots some expiry tombstone removed. A version vector cannot name one dot without the
    /// lower counters of its actor, so an expiry tombstone's ancestry holds only what the
    /// removed writes superseded, and the removed dots themselves are listed here (the TTL
    /// checker judges each removal).
    expired: BTreeSet<Dot>,
}

impl<'a> KeyWrites<'a> {
    /// Computes ancestries in one pass. A context covers only writes executed before it (tokens
    /// cover applied dots), so the ancestry of a write is its context joined with the ancestries
    /// of the earlier writes it covers; a write already covered by a merged (closed) ancestry
    /// adds nothing and is skipped.
    fn new(mut writes: Vec<&'a WriteRecord>) -> Self {
        writes.sort_by_key(|w| (w.at_us, w.dot));
        let mut anc: Vec<VersionVector> = Vec::with_capacity(writes.len());
        let mut by_dot: BTreeMap<Dot, Vec<usize>> = BTreeMap::new();
        let mut expired = BTreeSet::new();
        for (i, w) in writes.iter().enumerate() {
            let mut acc = if w.expired.is_empty() {
                w.supersedes.clone()
            } else {
                let mut acc = VersionVector::new();
                for j in (0..i).filter(|&j| w.expired.contains(&writes[j].dot)) {
                    acc.merge(&anc[j]);
                }
                expired.extend(w.expired.iter().copied());
                acc
            };
            let mut merged = VersionVector::new();
            for j in (0..i).rev() {
                let x = writes[j];
                if !merged.covers(x.dot) && acc.covers(x.dot) {
                    merged.merge(&anc[j]);
                    acc.merge(&anc[j]);
                }
            }
            anc.push(acc);
            by_dot.entry(w.dot).or_default().push(i);
        }
        KeyWrites {
            writes,
            anc,
            by_dot,
            expired,
        }
    }

    /// Indices of the executions of `dot`.
    fn at(&self, dot: Dot) -> &[usize] {
        self.by_dot.get(&dot).map_or(&[], |v| v.as_slice())
    }

    /// Everything the writes of `versions` supersede.
    fn superseded_by(&self, versions: &[Version]) -> VersionVector {
        let mut vv = VersionVector::new();
        for v in versions {
            for &i in self.at(v.dot) {
                vv.merge(&self.anc[i]);
            }
        }
        vv
    }

    /// Whether a delete executed by `before` supersedes `dot`: once every replica holds a
    /// tombstone it may be reaped (G6), and then neither it nor what it superseded is
    /// anywhere.
    fn reapable(&self, dot: Dot, before: u64) -> bool {
        self.writes
            .iter()
            .zip(&self.anc)
            .any(|(w, a)| w.value.is_none() && w.at_us <= before && a.covers(dot))
    }
}

/// The registry indexed by key and by dot.
struct Index<'a> {
    by_key: BTreeMap<&'a Bytes, KeyWrites<'a>>,
    by_dot: BTreeMap<Dot, Vec<&'a WriteRecord>>,
    max_counter: BTreeMap<Actor, u64>,
    empty: KeyWrites<'a>,
}

impl<'a> Index<'a> {
    fn new(h: &'a History) -> Self {
        let mut keys: BTreeMap<&'a Bytes, Vec<&'a WriteRecord>> = BTreeMap::new();
        let mut by_dot: BTreeMap<Dot, Vec<&'a WriteRecord>> = BTreeMap::new();
        let mut max_counter: BTreeMap<Actor, u64> = BTreeMap::new();
        for w in &h.writes {
            keys.entry(&w.key).or_default().push(w);
            by_dot.entry(w.dot).or_default().push(w);
            let m = max_counter.entry(w.dot.actor).or_insert(0);
            *m = (*m).max(w.dot.counter);
        }
        Index {
            by_key: keys
                .into_iter()
                .map(|(k, v)| (k, KeyWrites::new(v)))
                .collect(),
            by_dot,
            max_counter,
            empty: KeyWrites::default(),
        }
    }

    fn key(&self, key: &Bytes) -> &KeyWrites<'a> {
        self.by_key.get(key).unwrap_or(&self.empty)
    }
}

fn show(key: &Bytes) -> String {
    String::from_utf8_lossy(key).into_owned()
}
/// Runs the `enabled` checkers. `complete_registry`: the history lists every executed write
/// (true in the simulator), so a token naming an unlisted dot claims a write that never happened.
pub fn check(h: &History, enabled: &[Checker], complete_registry: bool) -> Vec<Violation> {
    let ix = Index::new(h);
    let mut out = Vec::new();
    let on = |c: Checker| enabled.contains(&c);
    // First: a reused dot breaks the premise of every other checker (one dot, one write).
    if on(Checker::G7) {
        for (dot, ws) in &ix.by_dot {
            let first = ws[0];
            if let Some(other) = ws[1..].iter().find(|w| !w.same_write(first)) {
                out.push(Violation {
                    checker: Checker::G7,
                    key: show(&first.key),
                    ops: vec![first.op, other.op],
                    detail: format!(
                        "dot {dot:?} issued for two different writes (node {} at {}ms and node {} at {}ms)",
                        first.node,
                        first.at_us / 1000,
                        other.node,
                        other.at_us / 1000
                    ),
                });
            }
        }
    }
    if on(Checker::G1) {
        g1(h, &ix, complete_registry, &mut out);
    }
    // The join of the final replica states, by the checkers' own model (not the core's merge).
    let merged: BTreeMap<&Bytes, Vec<Version>> = h
        .finals
        .iter()
        .map(|(k, reps)| (k, merged_versions(reps.iter().map(|(_, s)| s))))
        .collect();
    if on(Checker::G2) {
        g2(h, &ix, &merged, &mut out);
    }
    if on(Checker::G3) {
        g3(h, &mut out);
    }
    if on(Checker::G4) {
        for op in h.ops.iter().filter(|o| o.probe) {
            if !matches!(op.outcome, Outcome::Ok(_)) {
                out.push(Violation {
                    checker: Checker::G4,
                    key: show(&op.key),
                    ops: vec![op.id],
                    detail: format!("request after heal did not succeed: {op}"),
                });
            }
        }
        for op in h
            .ops
            .iter()
            .filter(|o| !matches!(o.outcome, Outcome::Ok(_)))
        {
            if let Some(why) = &op.servable {
                out.push(Violation {
                    checker: Checker::G4,
                    key: show(&op.key),
                    ops: vec![op.id],
                    detail: format!("request failed while a replica could serve it ({why}): {op}"),
                });
            }
        }
        for what in &h.unsettled {
            out.push(Violation {
                checker: Checker::G4,
                key: String::new(),
                ops: Vec::new(),
                detail: what.clone(),
            });
        }
    }
    if on(Checker::G6) {
        g6(h, &ix, &merged, &mut out);
    }
    if on(Checker::Token) {
        token_size(h, &mut out);
    }
    if on(Checker::Linearizable)
        && let Err(v) = crate::linearizable::check(&h.strong)
    {
        out.push(Violation {
            checker: Checker::Linearizable,
            key: String::from_utf8_lossy(&v.key).into_owned(),
            ops: Vec::new(),
            detail: v.explanation,
        });
    }
    if on(Checker::Ttl) {
        ttl(h, &ix, &mut out);
    }
    out
}

/// When `w` (a write with a TTL) may have expired by some node's clock: its expiry on the true
/// clock, less the skew bound. `None` for a write without a TTL.
fn expiry_floor(h: &History, w: &WriteRecord) -> Option<u64> {
    w.ttl_s
        .map(|t| (w.at_us + t * 1_000_000).saturating_sub(h.skew_us))
}

/// The TTL checker (docs/ttl.md): reads do not return a version more than the skew bound after
/// its expiry, and an expiry tombstone removes only tombstones and expired versions.
fn ttl(h: &History, ix: &Index, out: &mut Vec<Violation>) {
    for op in &h.ops {
        let Outcome::Ok(Response::Read { versions, .. }) = &op.outcome else {
            continue;
        };
        let kw = ix.key(&op.key);
        for ver in versions.iter().filter(|v| v.value.is_some()) {
            let late = kw.at(ver.dot).iter().map(|&i| kw.writes[i]).find(|w| {
                w.ttl_s
                    .is_some_and(|t| op.invoked_us > w.at_us + t * 1_000_000 + h.skew_us)
            });
            if let Some(w) = late {
                out.push(Violation {
                    checker: Checker::Ttl,
                    key: show(&op.key),
                    ops: vec![op.id, w.op],
                    detail: format!(
                        "returned {:?} (ttl {} s, written at {} ms) more than the skew bound of {} ms after it expired: {op}",
                        ver.dot,
                        w.ttl_s.unwrap_or_default(),
                        w.at_us / 1000,
                        h.skew_us / 1000
                    ),
                });
            }
        }
    }
    for e in h.writes.iter().filter(|w| !w.expired.is_empty()) {
        let kw = ix.key(&e.key);
        for &d in &e.expired {
            for &i in kw.at(d) {
                let w = kw.writes[i];
                let early =
                    w.value.is_some() && expiry_floor(h, w).is_none_or(|floor| e.at_us < floor);
                if early {
                    out.push(Violation {
                        checker: Checker::Ttl,
                        key: show(&e.key),
                        ops: vec![w.op],
                        detail: format!(
                            "expiry tombstone {:?} (node {} at {} ms) removed {d:?} (op#{}), {}",
                            e.dot,
                            e.node,
                            e.at_us / 1000,
                            w.op,
                            match w.ttl_s {
                                None => "a write without a ttl".to_string(),
                                Some(t) => format!(
                                    "written at {} ms with ttl {t} s: before it expired",
                                    w.at_us / 1000
                                ),
                            }
                        ),
                    });
                }
            }
        }
    }
}

/// Every reply's context encodes within [`token::max_chars`] of one entry per node.
fn token_size(h: &History, out: &mut Vec<Violation>) {
    let limit = token::max_chars(h.nodes);
    for op in &h.ops {
        let (Outcome::Ok(Response::Read { context, .. })
        | Outcome::Ok(Response::Written { context, .. })) = &op.outcome
        else {
            continue;
        };
        let len = token::encode(context).len();
        if len > limit {
            out.push(Violation {
                checker: Checker::Token,
                key: show(&op.key),
                ops: vec![op.id],
                detail: format!(
                    "reply token is {len} characters ({} entries), above the bound of {limit} for {} nodes: {op}",
                    context.len(),
                    h.nodes
                ),
            });
            return;
        }
    }
}

fn g1(h: &History, ix: &Index, complete: bool, out: &mut Vec<Violation>) {
    let mut v = |key: &Bytes, ops: Vec<u64>, detail: String| {
        out.push(Violation {
            checker: Checker::G1,
            key: show(key),
            ops,
            detail,
        })
    };
    // Per session: everything it has seen (its requests' and replies' contexts).
    let mut last_ctx: BTreeMap<usize, VersionVector> = BTreeMap::new();
    for op in &h.ops {
        let key = &op.key;
        if op.reset {
            last_ctx.remove(&op.session);
        }
        let prev = last_ctx.get(&op.session);
        // A blind write names nothing on purpose; the session's context lives on past it.
        if let Some(prev) = prev
            && !op.blind
            && !op.context.dominates(prev)
        {
            v(
                key,
                vec![op.id],
                format!("session context went backwards: {op}"),
            );
        }
        let mut seen = op.context.clone();
        if op.blind
            && let Some(prev) = prev
        {
            seen.merge(prev);
        }
        let reply_ctx = match &op.outcome {
            Outcome::Ok(Response::Read { context, .. } | Response::Written { context, .. }) => {
                context
            }
            _ => {
                last_ctx.insert(op.session, seen);
                continue;
            }
        };
        seen.merge(reply_ctx);
        last_ctx.insert(op.session, seen);
        if !reply_ctx.dominates(&op.context) {
            v(
                key,
                vec![op.id],
                format!("reply context drops part of the request context: {op}"),
            );
        }
        // A floor entry (counter 0) claims only the dots of its lineage's older actors, all
        // issued: it names no dot of its own actor.
        if complete
            && let Some((a, n)) = reply_ctx
                .iter()
                .find(|(a, n)| *n > 0 && ix.max_counter.get(a).is_none_or(|m| m < n))
        {
            v(
                key,
                vec![op.id],
                format!("reply context claims {a:?}:{n}, a dot never issued: {op}"),
            );
        }
        if let Some(applied) = &op.replier_applied
            && let Some((a, n)) = reply_ctx
                .iter()
                .find(|&(a, n)| n > op.context.get(a) && n > applied.get(a))
        {
            v(
                key,
                vec![op.id],
                format!(
                    "reply context claims {a:?}:{n}, beyond what the replying replica had applied ({a:?}:{}): {op}",
                    applied.get(a)
                ),
            );
        }
        match &op.outcome {
            Outcome::Ok(Response::Written { dot, context, .. }) => {
                if !context.covers(*dot) {
                    v(
                        key,
                        vec![op.id],
                        format!("write reply context does not cover its own dot: {op}"),
                    );
                }
                if complete
                    && ix
                        .key(key)
                        .at(*dot)
                        .iter()
                        .all(|&i| !ix.key(key).writes[i].serves(op))
                {
                    v(
                        key,
                        vec![op.id],
                        format!("acknowledged dot {dot:?} was not issued for this write: {op}"),
                    );
                }
            }
            Outcome::Ok(Response::Read { versions, .. }) => g1_read(h, op, versions, ix, &mut v),
            _ => {}
        }
    }
}

fn g1_read(
    h: &History,
    op: &OpRecord,
    versions: &[Version],
    ix: &Index,
    v: &mut impl FnMut(&Bytes, Vec<u64>, String),
) {
    let key = &op.key;
    let kw = ix.key(key);
    for ver in versions {
        let execs = kw.at(ver.dot);
        if execs.is_empty() {
            v(
                key,
                vec![op.id],
                format!(
                    "returned {:?}, which no write to this key issued: {op}",
                    ver.dot
                ),
            );
        } else if execs.iter().all(|&i| kw.writes[i].value != ver.value) {
            v(
                key,
                vec![op.id],
                format!(
                    "returned {:?} with a value its write did not write: {op}",
                    ver.dot
                ),
            );
        }
    }
    let returned: BTreeSet<Dot> = versions.iter().map(|x| x.dot).collect();
    let by_versions = kw.superseded_by(versions);
    let done = op.completed_us.unwrap_or(u64::MAX);
    let covered: Vec<usize> = (0..kw.writes.len())
        .filter(|&i| op.context.covers(kw.writes[i].dot))
        .collect();
    // Writes of this key whose TTL may have passed by the read's end (none without TTLs, which
    // keeps the check linear in the key's writes for histories without them).
    let lapsed: Vec<usize> = (0..kw.writes.len())
        .filter(|&x| expiry_floor(h, kw.writes[x]).is_some_and(|floor| done >= floor))
        .collect();
    for &i in &covered {
        let w = kw.writes[i];
        // A read hides a write whose TTL passed by its replica's clock (docs/ttl.md), and what
        // a write that expired superseded.
        let expired = || {
            kw.expired.contains(&w.dot)
                || expiry_floor(h, w).is_some_and(|floor| done >= floor)
                || lapsed.iter().any(|&x| kw.anc[x].covers(w.dot))
        };
        if returned.contains(&w.dot)
            || by_versions.covers(w.dot)
            || w.value.is_none()
            || expired()
            || kw.reapable(w.dot, done)
        {
            continue;
        }
        v(
            key,
            vec![op.id, w.op],
            format!(
                "read misses {:?} (op#{}) that its context covers: {op}",
                w.dot, w.op
            ),
        );
    }
    for ver in versions {
        let by_covered = covered.iter().find(|&&i| kw.anc[i].covers(ver.dot));
        if by_versions.covers(ver.dot) || by_covered.is_some() {
            let by: Vec<u64> = versions
                .iter()
                .flat_map(|x| kw.at(x.dot))
                .chain(by_covered)
                .filter(|&&i| kw.anc[i].covers(ver.dot))
                .map(|&i| kw.writes[i].op)
                .take(3)
                .collect();
            let mut ops = vec![op.id];
            ops.extend(by);
            v(
                key,
                ops,
                format!(
                    "returned {:?}, superseded by a returned or covered write: {op}",
                    ver.dot
                ),
            );
        }
    }
}

fn g2(h: &History, ix: &Index, merged: &BTreeMap<&Bytes, Vec<Version>>, out: &mut Vec<Violation>) {
    let empty = Vec::new();
    for op in h.ops.iter().filter(|o| o.kind == OpKind::Put) {
        let Some(dot) = op.acked_dot() else { continue };
        let m = merged.get(&op.key).unwrap_or(&empty);
        if m.iter().any(|x| x.dot == dot) {
            continue;
        }
        let kw = ix.key(&op.key);
        if kw.expired.contains(&dot) {
            // Removed by an expiry tombstone: the TTL checker judges whether it had expired.
            continue;
        }
        if !kw.superseded_by(m).covers(dot) && !kw.reapable(dot, u64::MAX) {
            out.push(Violation {
                checker: Checker::G2,
                key: show(&op.key),
                ops: vec![op.id],
                detail: format!(
                    "acknowledged write {dot:?} is neither on any replica nor superseded by one that is: {op}"
                ),
            });
        }
    }
}

fn g3(h: &History, out: &mut Vec<Violation>) {
    for what in &h.unrepaired {
        out.push(Violation {
            checker: Checker::G3,
            key: String::new(),
            ops: Vec::new(),
            detail: what.clone(),
        });
    }
    for (key, reps) in &h.finals {
        let Some((_, first)) = reps.first() else {
            continue;
        };
        if reps.iter().any(|(_, s)| s.versions() != first.versions()) {
            let states: Vec<String> = reps
                .iter()
                .map(|(n, s)| {
                    let dots: Vec<String> = s
                        .versions()
                        .iter()
                        .map(|x| format!("{:?}", x.dot))
                        .collect();
                    format!("n{n}=[{}]", dots.join(" "))
                })
                .collect();
            out.push(Violation {
                checker: Checker::G3,
                key: show(key),
                ops: Vec::new(),
                detail: format!(
                    "replicas differ after heal and quiesce: {}",
                    states.join(" ")
                ),
            });
        }
    }
}

fn g6(h: &History, ix: &Index, merged: &BTreeMap<&Bytes, Vec<Version>>, out: &mut Vec<Violation>) {
    for op in &h.ops {
        let Some(dot) = op.acked_dot() else { continue };
        let Some(m) = merged.get(&op.key) else {
            continue;
        };
        let kw = ix.key(&op.key);
        let Some(&i) = kw.at(dot).first() else {
            continue;
        };
        for ver in m.iter().filter(|x| x.dot != dot && kw.anc[i].covers(x.dot)) {
            let what = if kw.writes[i].value.is_none() {
                "delete"
            } else {
                "write"
            };
            out.push(Violation {
                checker: Checker::G6,
                key: show(&op.key),
                ops: vec![op.id],
                detail: format!(
                    "{:?} is back in the final state although acknowledged {what} {dot:?} superseded it",
                    ver.dot
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WriteRecord;
    use causeway::core::VersionSet;

    fn actor(n: u32) -> Actor {
        Actor::new(n, 1, 1)
    }
    fn dot(a: u32, c: u64) -> Dot {
        Dot::new(actor(a), c)
    }
    fn vv(dots: &[Dot]) -> VersionVector {
        let mut v = VersionVector::new();
        for d in dots {
            v.add(*d);
        }
        v
    }
    fn key() -> Bytes {
        Bytes::from_static(b"k0")
    }
    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }
    fn write(op: u64, d: Dot, value: Option<Bytes>, ctx: VersionVector) -> WriteRecord {
        WriteRecord {
            dot: d,
            key: key(),
            value,
            supersedes: ctx.clone(),
            context: ctx,
            node: 0,
            at_us: op * 1000,
            ttl_s: None,
            expired: Vec::new(),
            op,
        }
    }
    fn put_op(id: u64, session: usize, value: &str, ctx: VersionVector, d: Dot) -> OpRecord {
        let mut reply = ctx.clone();
        reply.add(d);
        OpRecord {
            id,
            session,
            node: 0,
            kind: OpKind::Put,
            key: key(),
            value: val(value),
            context: ctx,
            invoked_us: id * 1000,
            completed_us: Some(id * 1000 + 1),
            outcome: Outcome::Ok(Response::Written {
                dot: d,
                context: reply,
                replaced: false,
                coordinator_context: None,
            }),
            probe: false,
            blind: false,
            replier_applied: None,
            servable: None,
            reset: false,
        }
    }
    fn get_op(
        id: u64,
        session: usize,
        ctx: VersionVector,
        versions: Vec<Version>,
        reply: VersionVector,
    ) -> OpRecord {
        OpRecord {
            id,
            session,
            node: 1,
            kind: OpKind::Get,
            key: key(),
            value: None,
            context: ctx,
            invoked_us: id * 1000,
            completed_us: Some(id * 1000 + 1),
            outcome: Outcome::Ok(Response::Read {
                versions,
                context: reply,
            }),
            probe: false,
            blind: false,
            replier_applied: None,
            servable: None,
            reset: false,
        }
    }
    fn ver(d: Dot, v: &str) -> Version {
        Version {
            dot: d,
            value: val(v),
            ts: 0,
            content_type: None,
            expires: None,
        }
    }
    fn set_of(writes: &[(&VersionVector, Version)]) -> VersionSet {
        let mut s = VersionSet::new();
        for (ctx, v) in writes {
            s.write(ctx, v.clone());
        }
        s
    }
    fn checkers(h: &History, c: Checker) -> Vec<Violation> {
        check(h, &[c], true)
    }

    /// Two sequential writes a -> b (b's context covers a); a read after both returns b.
    fn good() -> History {
        let a = dot(1, 1);
        let b = dot(1, 2);
        let ctx_b = vv(&[a]);
        let final_set = set_of(&[(&VersionVector::new(), ver(a, "a")), (&ctx_b, ver(b, "b"))]);
        History {
            ops: vec![
                put_op(1, 0, "a", VersionVector::new(), a),
                put_op(2, 0, "b", ctx_b.clone(), b),
                get_op(3, 1, vv(&[b]), vec![ver(b, "b")], vv(&[b])),
            ],
            writes: vec![
                write(1, a, val("a"), VersionVector::new()),
                write(2, b, val("b"), ctx_b),
            ],
            finals: BTreeMap::from([(key(), vec![(0, final_set.clone()), (1, final_set)])]),
            unsettled: Vec::new(),
            unrepaired: Vec::new(),
            strong: Vec::new(),
            nodes: 0,
            skew_us: 0,
        }
    }

    #[test]
    fn good_history_passes_every_checker() {
        assert_eq!(check(&good(), &Checker::ALL, true), Vec::new());
    }

    /// A failed request the simulator judged servable during chaos is a G4 violation; one it
    /// did not judge servable, or a success, is not.
    #[test]
    fn g4_flags_failed_requests_a_reachable_replica_could_serve() {
        let mut h = good();
        h.ops[2].outcome = Outcome::Failed("unable to satisfy request".into());
        assert_eq!(checkers(&h, Checker::G4), Vec::new());
        h.ops[2].servable = Some("n1 could serve it".into());
        let v = checkers(&h, Checker::G4);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("n1 could serve it"), "{}", v[0]);
        h.ops[2] = good().ops[2].clone();
        h.ops[2].servable = Some("n1 could serve it".into());
        assert_eq!(checkers(&h, Checker::G4), Vec::new());
    }

    /// A read repair the simulator found missing is a G3 violation.
    #[test]
    fn g3_flags_missing_read_repairs() {
        let mut h = good();
        h.unrepaired.push("n1 lacks [a]".into());
        let v = checkers(&h, Checker::G3);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("n1 lacks"));
    }

    /// After a session drops its context (a reset), G1 does not call its next, smaller,
    /// context a step backwards.
    #[test]
    fn g1_accepts_a_reset_session_context() {
        let mut h = good();
        h.ops[2].session = 0;
        h.ops[2].context = VersionVector::new();
        h.ops[2].outcome = Outcome::Ok(Response::Read {
            versions: vec![ver(dot(1, 2), "b")],
            context: vv(&[dot(1, 2)]),
        });
        let backwards = |v: Vec<Violation>| v.iter().any(|x| x.detail.contains("backwards"));
        assert!(backwards(checkers(&h, Checker::G1)));
        h.ops[2].reset = true;
        assert!(!backwards(checkers(&h, Checker::G1)));
    }

    #[test]
    fn g1_catches_stale_read_superseded_version_and_thin_air() {
        let (a, b) = (dot(1, 1), dot(1, 2));
        let mut h = good();
        // Context covers b, but only a comes back: misses b, and a is superseded by b.
        h.ops[2] = get_op(3, 1, vv(&[b]), vec![ver(a, "a")], vv(&[b]));
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("misses")), "{v:?}");
        assert!(v.iter().any(|x| x.detail.contains("superseded")), "{v:?}");
        // A value nobody wrote.
        h.ops[2] = get_op(3, 1, VersionVector::new(), vec![ver(b, "zzz")], vv(&[b]));
        let v = checkers(&h, Checker::G1);
        assert!(
            v.iter().any(|x| x.detail.contains("did not write")),
            "{v:?}"
        );
        h.ops[2] = get_op(
            3,
            1,
            VersionVector::new(),
            vec![ver(dot(7, 1), "b")],
            vv(&[b]),
        );
        assert!(
            checkers(&h, Checker::G1)
                .iter()
                .any(|x| x.detail.contains("no write"))
        );
    }

    #[test]
    fn g1_catches_bad_reply_contexts() {
        let mut h = good();
        let Outcome::Ok(Response::Written { context, .. }) = &mut h.ops[1].outcome else {
            unreachable!()
        };
        *context = vv(&[dot(1, 1)]);
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("own dot")), "{v:?}");
        let mut h = good();
        h.ops[2] = get_op(
            3,
            1,
            vv(&[dot(1, 2)]),
            vec![ver(dot(1, 2), "b")],
            vv(&[dot(1, 9)]),
        );
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("never issued")), "{v:?}");
        let mut h = good();
        h.ops[1].context = VersionVector::new();
        h.ops[1].session = 0;
        h.ops[0].context = vv(&[dot(1, 1)]);
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("backwards")), "{v:?}");
    }

    #[test]
    fn g1_catches_reply_context_beyond_the_replicas_applied_clock() {
        // The replica answering the read had applied a:1 only, yet its reply claims a:2 (which
        // was issued, so only the applied clock shows the lie).
        let mut h = good();
        h.ops[2] = get_op(
            3,
            1,
            VersionVector::new(),
            vec![ver(dot(1, 1), "a")],
            vv(&[dot(1, 2)]),
        );
        h.ops[2].replier_applied = Some(vv(&[dot(1, 1)]));
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("had applied")), "{v:?}");
        // What the request context already named is the client's, not the replica's, claim.
        h.ops[2].context = vv(&[dot(1, 2)]);
        h.ops[2].outcome = Outcome::Ok(Response::Read {
            versions: vec![ver(dot(1, 2), "b")],
            context: vv(&[dot(1, 2)]),
        });
        assert!(checkers(&h, Checker::G1).is_empty());
        h.ops[2].replier_applied = Some(vv(&[dot(1, 2)]));
        assert!(checkers(&h, Checker::G1).is_empty());
    }

    #[test]
    fn g1_allows_reaped_deletes_but_not_missing_puts() {
        // a -> delete d (covers a); then the tombstone is reaped: an empty read is right.
        let (a, d) = (dot(1, 1), dot(1, 2));
        let mut del = put_op(2, 0, "", vv(&[a]), d);
        del.kind = OpKind::Delete;
        del.value = None;
        let mut h = History {
            ops: vec![put_op(1, 0, "a", VersionVector::new(), a), del],
            writes: vec![
                write(1, a, val("a"), VersionVector::new()),
                write(2, d, None, vv(&[a])),
            ],
            finals: BTreeMap::new(),
            unsettled: Vec::new(),
            unrepaired: Vec::new(),
            strong: Vec::new(),
            nodes: 0,
            skew_us: 0,
        };
        h.ops.push(get_op(3, 1, vv(&[d]), vec![], vv(&[d])));
        assert!(checkers(&h, Checker::G1).is_empty());
        // A later put covered by the context must still be there.
        let b = dot(1, 3);
        h.ops.insert(2, put_op(3, 0, "b", vv(&[d]), b));
        h.writes.push(write(3, b, val("b"), vv(&[d])));
        h.ops[3] = get_op(4, 1, vv(&[b]), vec![], vv(&[b]));
        let v = checkers(&h, Checker::G1);
        assert!(
            v.iter()
                .any(|x| x.detail.contains("misses") && x.ops == vec![4, 3]),
            "{v:?}"
        );
    }

    #[test]
    fn g2_catches_lost_acknowledged_write() {
        let mut h = good();
        // Only a survives: b (acked) is lost.
        let only_a = set_of(&[(&VersionVector::new(), ver(dot(1, 1), "a"))]);
        h.finals
            .insert(key(), vec![(0, only_a.clone()), (1, only_a)]);
        let v = checkers(&h, Checker::G2);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].ops, vec![2]);
    }

    #[test]
    fn g2_accepts_concurrent_siblings_and_rejects_lww_loss() {
        let (a, c) = (dot(1, 1), dot(2, 1));
        let both = set_of(&[
            (&VersionVector::new(), ver(a, "a")),
            (&VersionVector::new(), ver(c, "c")),
        ]);
        let mut h = History {
            ops: vec![
                put_op(1, 0, "a", VersionVector::new(), a),
                put_op(2, 1, "c", VersionVector::new(), c),
            ],
            writes: vec![
                write(1, a, val("a"), VersionVector::new()),
                write(2, c, val("c"), VersionVector::new()),
            ],
            finals: BTreeMap::from([(key(), vec![(0, both)])]),
            unsettled: Vec::new(),
            unrepaired: Vec::new(),
            strong: Vec::new(),
            nodes: 0,
            skew_us: 0,
        };
        assert!(checkers(&h, Checker::G2).is_empty());
        let mut lww = VersionSet::new();
        lww.write(&VersionVector::new(), ver(c, "c"));
        h.finals.insert(key(), vec![(0, lww)]);
        assert_eq!(checkers(&h, Checker::G2).len(), 1);
    }

    #[test]
    fn blind_writes_keep_the_session_context_and_supersede_nothing() {
        // Session 0 writes a, then blindly writes c (empty context): c is a sibling of a, and
        // the session's next request still carries a (and c).
        let (a, c, b) = (dot(1, 1), dot(2, 1), dot(1, 2));
        let mut blind = put_op(2, 0, "c", VersionVector::new(), c);
        blind.blind = true;
        let both = set_of(&[
            (&VersionVector::new(), ver(a, "a")),
            (&VersionVector::new(), ver(c, "c")),
        ]);
        let mut h = History {
            ops: vec![
                put_op(1, 0, "a", VersionVector::new(), a),
                blind,
                get_op(3, 0, vv(&[a, c]), both.versions().to_vec(), vv(&[a, c])),
            ],
            writes: vec![
                write(1, a, val("a"), VersionVector::new()),
                write(2, c, val("c"), VersionVector::new()),
            ],
            finals: BTreeMap::from([(key(), vec![(0, both.clone()), (1, both)])]),
            unsettled: Vec::new(),
            unrepaired: Vec::new(),
            strong: Vec::new(),
            nodes: 0,
            skew_us: 0,
        };
        assert_eq!(check(&h, &Checker::ALL, true), Vec::new());
        // Not blind, the same empty context is a session going backwards.
        h.ops[1].blind = false;
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("backwards")), "{v:?}");
        // After a blind write the session must still carry what it saw before it.
        h.ops[1].blind = true;
        h.ops[2] = get_op(3, 0, vv(&[c]), vec![ver(c, "c")], vv(&[c]));
        let v = checkers(&h, Checker::G1);
        assert!(v.iter().any(|x| x.detail.contains("backwards")), "{v:?}");
        // A write that names a supersedes it; a blind one never does, so losing a is G2.
        h.ops.truncate(2);
        h.ops.push(put_op(3, 0, "b", vv(&[a, c]), b));
        h.writes.push(write(3, b, val("b"), vv(&[a, c])));
        let only_b = set_of(&[(&vv(&[a, c]), ver(b, "b"))]);
        h.finals.insert(key(), vec![(0, only_b)]);
        assert_eq!(check(&h, &Checker::ALL, true), Vec::new());
        let only_c = set_of(&[(&VersionVector::new(), ver(c, "c"))]);
        h.finals.insert(key(), vec![(0, only_c)]);
        let v = checkers(&h, Checker::G2);
        assert!(
            v.iter().any(|x| x.ops == vec![1]) && !v.iter().any(|x| x.ops == vec![2]),
            "{v:?}"
        );
    }

    #[test]
    fn g3_catches_divergent_replicas() {
        let mut h = good();
        let only_a = set_of(&[(&VersionVector::new(), ver(dot(1, 1), "a"))]);
        h.finals.get_mut(&key()).unwrap()[1].1 = only_a;
        assert_eq!(checkers(&h, Checker::G3).len(), 1);
    }

    #[test]
    fn g4_catches_failed_probe() {
        let mut h = good();
        assert!(checkers(&h, Checker::G4).is_empty());
        h.ops[2].probe = true;
        h.ops[2].outcome = Outcome::Failed("unable to satisfy request".into());
        assert_eq!(checkers(&h, Checker::G4).len(), 1);
        // A node that never settled its handoffs is a liveness failure too.
        let mut h = good();
        h.unsettled.push("n3 never settled: awaiting [4]".into());
        let v = checkers(&h, Checker::G4);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("never settled"));
    }

    #[test]
    fn g6_catches_resurrection_after_delete() {
        let (a, d) = (dot(1, 1), dot(1, 2));
        let ctx_d = vv(&[a]);
        let mut del = put_op(2, 0, "", ctx_d.clone(), d);
        del.kind = OpKind::Delete;
        del.value = None;
        let resurrected = set_of(&[(&VersionVector::new(), ver(a, "a"))]);
        let h = History {
            ops: vec![put_op(1, 0, "a", VersionVector::new(), a), del],
            writes: vec![
                write(1, a, val("a"), VersionVector::new()),
                write(2, d, None, ctx_d),
            ],
            finals: BTreeMap::from([(key(), vec![(0, resurrected)])]),
            unsettled: Vec::new(),
            unrepaired: Vec::new(),
            strong: Vec::new(),
            nodes: 0,
            skew_us: 0,
        };
        let v = checkers(&h, Checker::G6);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("delete"));
        assert!(checkers(&good(), Checker::G6).is_empty());
    }

    #[test]
    fn blind_deletes_supersede_what_their_coordinator_held() {
        // A blind delete (empty request context) executed where a was held supersedes a: the
        // final tombstone alone is no lost write, a coming back is a resurrection.
        let (a, d) = (dot(1, 1), dot(2, 1));
        let mut del = put_op(2, 1, "", VersionVector::new(), d);
        del.kind = OpKind::Delete;
        del.value = None;
        del.blind = true;
        let mut blind = write(2, d, None, VersionVector::new());
        blind.supersedes = vv(&[a]);
        let tomb = Version {
            value: None,
            ..ver(d, "")
        };
        let deleted = set_of(&[
            (&VersionVector::new(), ver(a, "a")),
            (&vv(&[a]), tomb.clone()),
        ]);
        let mut h = History {
            ops: vec![put_op(1, 0, "a", VersionVector::new(), a), del],
            writes: vec![write(1, a, val("a"), VersionVector::new()), blind],
            finals: BTreeMap::from([(key(), vec![(0, deleted)])]),
            unsettled: Vec::new(),
            unrepaired: Vec::new(),
            strong: Vec::new(),
            nodes: 0,
            skew_us: 0,
        };
        assert_eq!(check(&h, &Checker::ALL, true), Vec::new());
        let back = set_of(&[
            (&VersionVector::new(), ver(a, "a")),
            (&VersionVector::new(), tomb.clone()),
        ]);
        h.finals.insert(key(), vec![(0, back)]);
        let v = checkers(&h, Checker::G6);
        assert_eq!(v.len(), 1, "{v:?}");
        // Judged by its request context alone, the delete would have lost a (G2).
        h.writes[1].supersedes = VersionVector::new();
        h.finals
            .insert(key(), vec![(0, set_of(&[(&vv(&[a]), tomb)]))]);
        let v = checkers(&h, Checker::G2);
        assert!(v.len() == 1 && v[0].ops == vec![1], "{v:?}");
    }

    #[test]
    fn g7_catches_reused_dot() {
        let mut h = good();
        h.writes
            .push(write(9, dot(1, 1), val("other"), VersionVector::new()));
        let v = checkers(&h, Checker::G7);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].ops, vec![1, 9]);
    }

    #[test]
    fn ancestry_is_transitive() {
        let (a, b, c, d) = (dot(1, 1), dot(2, 1), dot(3, 1), dot(4, 1));
        let ws = [
            write(1, a, val("a"), VersionVector::new()),
            write(2, b, val("b"), vv(&[a])),
            write(3, c, val("c"), vv(&[b])),
            write(4, d, val("d"), VersionVector::new()),
        ];
        let kw = KeyWrites::new(ws.iter().collect());
        let anc_c = &kw.anc[2];
        assert!(anc_c.covers(a) && anc_c.covers(b) && !anc_c.covers(c) && !anc_c.covers(d));
        assert!(kw.anc[3].is_empty());
    }
}
