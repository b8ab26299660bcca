//! Histories recorded from real clusters, for [`crate::check`] with `complete_registry = false`.
//!
//! A real-cluster test sees only what clients see: each operation's request context and reply,
//! the dot of each acknowledged write (the `X-Causeway-Dot` reply header) and the dots of the
//! versions reads return (`"dot"` of each sibling in a read's JSON form), plus each replica's
//! final versions (an `r=1` read at that replica). [`build`] turns that into a [`History`]:
//!
//! - the write registry lists every acknowledged write, with its request context as what it
//!   supersedes, executed at its invocation (a write's context covers only writes whose
//!   execution completed before the write was sent, so invocation order respects supersession);
//! - a dot a read or a replica returns that no acknowledged write names is attributed to an
//!   unacknowledged operation of the same key that could have executed it (a put of the same
//!   value — tests write distinct values — or a delete), preferring an indeterminate one whose
//!   time fits the dot's place among its actor's acknowledged dots (an actor issues dots in
//!   order, so `(a, n)` was executed after the write of the largest acknowledged `(a, m < n)`
//!   was sent, and before the write of the smallest acknowledged `(a, m > n)` was answered); a
//!   dot nothing could have issued stays unlisted, for G1 to report.
//!
//! Deletes sent with an empty context (blind deletes) supersede whatever their coordinator held,
//! which no client sees: [`build`] refuses histories that contain one.

use crate::history::{History, OpRecord, Outcome, WriteRecord};
use crate::plan::OpKind;
use bytes::Bytes;
use causeway::core::{Actor, Dot, Response, Version, VersionSet, VersionVector, token};
use std::collections::BTreeMap;

/// The dot a server names in `X-Causeway-Dot` or a sibling's `"dot"`: the token of the
/// one-entry context `{actor: counter}`. `None` when the text is not such a token.
pub fn dot_from_token(text: &str) -> Option<Dot> {
    let vv = token::decode(text).ok()?;
    let mut entries = vv.iter();
    let (actor, counter) = entries.next()?;
    (entries.next().is_none() && counter > 0).then(|| Dot::new(actor, counter))
}

/// A replica's state as its `r=1` read returned it: its versions (values and tombstones), each
/// a sibling of the others. Only [`VersionSet::versions`] of it is meaningful.
pub fn replica_state(versions: Vec<Version>) -> VersionSet {
    let mut s = VersionSet::new();
    for v in versions {
        s.write(&VersionVector::new(), v);
    }
    s
}

/// The history of a real run of `nodes` nodes from its operations (any order; `id`s are
/// reassigned in invocation order) and every replica's final state by key.
pub fn build(
    mut ops: Vec<OpRecord>,
    finals: BTreeMap<Bytes, Vec<(usize, VersionSet)>>,
    nodes: usize,
) -> Result<History, String> {
    ops.sort_by_key(|o| (o.invoked_us, o.session));
    for (i, op) in ops.iter_mut().enumerate() {
        op.id = i as u64 + 1;
        if op.kind == OpKind::Delete && op.context.is_empty() && !op.blind {
            return Err(format!(
                "a delete with an empty context supersedes what no client saw: {op}"
            ));
        }
    }
    let record = |op: &OpRecord, dot: Dot| WriteRecord {
        dot,
        key: op.key.clone(),
        value: op.value.clone(),
        context: op.context.clone(),
        supersedes: op.context.clone(),
        node: op.node,
        at_us: op.invoked_us,
        ttl_s: None,
        expired: Vec::new(),
        op: op.id,
    };
    let mut writes: Vec<WriteRecord> = ops
        .iter()
        .filter_map(|op| op.acked_dot().map(|d| record(op, d)))
        .collect();
    // Every version some client or replica saw, with the time it was seen by.
    let mut seen: Vec<(&Bytes, &Version, u64)> = Vec::new();
    for op in &ops {
        if let Outcome::Ok(Response::Read { versions, .. }) = &op.outcome {
            let at = op.completed_us.unwrap_or(u64::MAX);
            seen.extend(versions.iter().map(|v| (&op.key, v, at)));
        }
    }
    for (key, reps) in &finals {
        for (_, set) in reps {
            seen.extend(set.versions().iter().map(|v| (key, v, u64::MAX)));
        }
    }
    // Per actor, the (counter, invoked, completed) of its acknowledged dots, by counter.
    let mut issued: BTreeMap<Actor, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
    for op in &ops {
        if let Some(d) = op.acked_dot() {
            let done = op.completed_us.unwrap_or(u64::MAX);
            issued
                .entry(d.actor)
                .or_default()
                .insert(d.counter, (op.invoked_us, done));
        }
    }
    // Whether `op` may have executed `dot` given when its actor's neighbouring acknowledged
    // dots were sent and answered (an op executes between its invocation and its reply).
    let fits = |op: &OpRecord, dot: Dot| {
        let Some(acked) = issued.get(&dot.actor) else {
            return true;
        };
        let after = acked
            .range(..dot.counter)
            .next_back()
            .is_none_or(|(_, &(invoked, _))| op.completed_us.is_none_or(|c| c >= invoked));
        let before = acked
            .range(dot.counter + 1..)
            .next()
            .is_none_or(|(_, &(_, done))| op.invoked_us <= done);
        after && before
    };
    for (key, ver, by) in seen {
        if writes.iter().any(|w| w.dot == ver.dot && w.key == *key) {
            continue;
        }
        let could = |op: &&OpRecord| {
            op.key == *key
                && op.invoked_us <= by
                && !matches!(op.outcome, Outcome::Failed(_))
                && match &ver.value {
                    None => op.kind == OpKind::Delete,
                    Some(v) => op.kind == OpKind::Put && op.value.as_ref() == Some(v),
                }
        };
        let indeterminate = |op: &&OpRecord| matches!(op.outcome, Outcome::Indeterminate(_));
        let by_op = ops
            .iter()
            .filter(could)
            .filter(|op| fits(op, ver.dot))
            .find(indeterminate)
            .or_else(|| ops.iter().filter(could).find(indeterminate))
            .or_else(|| ops.iter().find(could));
        if let Some(op) = by_op {
            writes.push(record(op, ver.dot));
        }
    }
    Ok(History {
        ops,
        writes,
        finals,
        unsettled: Vec::new(),
        unrepaired: Vec::new(),
        strong: Vec::new(),
        nodes,
        skew_us: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::scenario::Checker;
    use causeway::core::Actor;

    fn dot(c: u64) -> Dot {
        Dot::new(Actor::new(7, 1, 3), c)
    }
    fn vv(d: &[Dot]) -> VersionVector {
        let mut v = VersionVector::new();
        for x in d {
            v.add(*x);
        }
        v
    }
    fn ver(d: Dot, v: &str) -> Version {
        Version {
            dot: d,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            ts: 0,
            content_type: None,
            expires: None,
        }
    }
    fn op(
        session: usize,
        at: u64,
        kind: OpKind,
        value: Option<&str>,
        ctx: VersionVector,
    ) -> OpRecord {
        OpRecord {
            id: 0,
            session,
            node: 0,
            kind,
            key: Bytes::from_static(b"k"),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            context: ctx,
            blind: false,
            invoked_us: at,
            completed_us: Some(at + 1),
            outcome: Outcome::Pending,
            probe: false,
            replier_applied: None,
            servable: None,
            reset: false,
        }
    }
    fn written(d: Dot, ctx: VersionVector) -> Outcome {
        Outcome::Ok(Response::Written {
            dot: d,
            context: ctx,
            replaced: false,
            coordinator_context: None,
        })
    }

    #[test]
    fn dots_round_trip_through_their_token() {
        assert_eq!(dot_from_token(&token::encode(&vv(&[dot(5)]))), Some(dot(5)));
        let two = vv(&[dot(5), Dot::new(Actor::new(8, 1, 1), 1)]);
        assert_eq!(dot_from_token(&token::encode(&two)), None);
        assert_eq!(dot_from_token(""), None);
        assert_eq!(dot_from_token("!!"), None);
    }

    #[test]
    fn unacknowledged_writes_seen_by_reads_join_the_registry() {
        // s0 writes a (acked), then b (timed out, yet applied); s1 reads b.
        let (a, b) = (dot(1), dot(2));
        let mut put_a = op(0, 10, OpKind::Put, Some("a"), VersionVector::new());
        put_a.outcome = written(a, vv(&[a]));
        let mut put_b = op(0, 20, OpKind::Put, Some("b"), vv(&[a]));
        put_b.outcome = Outcome::Indeterminate("timeout".into());
        let mut get = op(1, 30, OpKind::Get, None, VersionVector::new());
        get.outcome = Outcome::Ok(Response::Read {
            versions: vec![ver(b, "b")],
            context: vv(&[b]),
        });
        let state = replica_state(vec![ver(b, "b")]);
        let finals = BTreeMap::from([(
            Bytes::from_static(b"k"),
            vec![(0, state.clone()), (1, state)],
        )]);
        let h = build(vec![get, put_b, put_a], finals.clone(), 3).unwrap();
        assert_eq!(
            h.ops.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(h.writes.len(), 2);
        let all = [
            Checker::G1,
            Checker::G2,
            Checker::G3,
            Checker::G6,
            Checker::G7,
        ];
        assert_eq!(check(&h, &all, false), Vec::new());
        // A version no operation could have written is reported.
        let mut h2 = h.clone();
        h2.ops.retain(|o| o.value.as_deref() != Some(b"b"));
        let h2 = build(h2.ops, finals, 3).unwrap();
        assert!(
            check(&h2, &all, false)
                .iter()
                .any(|v| v.checker == Checker::G1)
        );
    }

    #[test]
    fn unacknowledged_dots_go_to_the_operation_whose_time_fits() {
        // s0 deletes with an empty-ish context early (indeterminate), later writes b (acked,
        // dot 2) and deletes with a context covering b: that delete's reply is lost, yet its
        // tombstone (dot 3) is what the replica holds. The tombstone must be attributed to the
        // late delete (sent after dot 2 was), not the early one, or G2 would call b lost.
        let (a, b, t) = (dot(1), dot(2), dot(3));
        let mut put_a = op(0, 10, OpKind::Put, Some("a"), VersionVector::new());
        put_a.outcome = written(a, vv(&[a]));
        let mut early = op(0, 20, OpKind::Delete, None, vv(&[a]));
        early.completed_us = Some(25);
        early.outcome = Outcome::Indeterminate("timeout".into());
        let mut put_b = op(0, 30, OpKind::Put, Some("b"), vv(&[a]));
        put_b.outcome = written(b, vv(&[a, b]));
        let mut late = op(0, 40, OpKind::Delete, None, vv(&[a, b]));
        late.outcome = Outcome::Indeterminate("connection reset".into());
        let tomb = Version {
            dot: t,
            value: None,
            ts: 0,
            content_type: None,
            expires: None,
        };
        let state = replica_state(vec![tomb]);
        let finals = BTreeMap::from([(Bytes::from_static(b"k"), vec![(0, state)])]);
        let h = build(vec![put_a, early, put_b, late], finals, 1).unwrap();
        let w = h
            .writes
            .iter()
            .find(|w| w.dot == t)
            .expect("the tombstone is listed");
        assert_eq!(w.op, 4, "attributed to the late delete");
        assert_eq!(check(&h, &[Checker::G1, Checker::G2], false), Vec::new());
    }

    #[test]
    fn blind_deletes_are_refused() {
        let del = op(0, 1, OpKind::Delete, None, VersionVector::new());
        assert!(build(vec![del], BTreeMap::new(), 3).is_err());
    }
}
