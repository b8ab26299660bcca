//! Linearizability checker for strong keys.
//!
//! The model of one strong key is a register with a version: state `(value, version)`, initially
//! `(None, 0)`. A put or delete succeeds iff its condition holds in the current state and then sets
//! `version + 1` (a delete sets the value to `None`); a read and a failed precondition leave the
//! state alone. Because versions count successful writes exactly, a `Written { version }` result
//! pins the write between states `version - 1` and `version`, which keeps the search narrow.
//!
//! Linearizability is local (a history is linearizable iff each key's sub-history is), so every
//! key is checked on its own. Per key the search is Wing & Gong's, made "just in time" as Lowe
//! describes and memoised as in Porcupine: events sit in one time-ordered list of invocations and
//! completions; the search linearizes (lifts) any pending operation whose invocation precedes the
//! first remaining completion and whose result the model allows, and backtracks when that first
//! completion belongs to an operation that could not be placed. A set of (linearized ops, model
//! state) pairs already explored prunes the repeats, so commuting reads are not permuted.
//!
//! Operations without a definite answer ([`StrongResult::Unknown`], Jepsen's `:info`) complete at
//! +infinity: a write among them may take effect at any point after its invocation, or never. A
//! read without an answer constrains nothing and is left out. Ties in time count as overlap (an
//! invocation at the instant of another's completion may be ordered either way), so clock
//! granularity never produces a false violation.
//!
//! The search is exponential in the worst case; it stops after a budget of model steps per key and
//! reports that as a distinct error ([`LinViolation::is_budget_exceeded`]), not as a violation.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

/// The precondition of a strong write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    /// Unconditional.
    Always,
    /// Only if the key's current version equals this (`If-Match`).
    IfVersion(u64),
    /// Only if the key has no value (`If-None-Match: *`), whatever its version.
    IfAbsent,
}

/// What a client asked of a strong key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrongCall {
    Get,
    Put { value: Vec<u8>, cond: Cond },
    Delete { cond: Cond },
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrongResult {
    /// Answer to a `Get`: the current value (None if absent) and version.
    Read {
        value: Option<Vec<u8>>,
        version: u64,
    },
    /// A put or delete took effect; `version` is the key's new version.
    Written { version: u64 },
    /// A put or delete's condition did not hold; `version` is the key's current version.
    PreconditionFailed { version: u64 },
    /// :info — no definite answer (timeout, 503 on a write): may have taken effect at any
    /// point after invoke, or never. A read without an answer is simply left out.
    Unknown,
}

/// One operation of a strong-key history, with real-time bounds in microseconds from a common
/// origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrongOp {
    pub key: Vec<u8>,
    pub client: u64,
    pub invoke_us: u64,
    /// `None` for `Unknown` results (completion at +infinity).
    pub complete_us: Option<u64>,
    pub call: StrongCall,
    pub result: StrongResult,
}

/// What a successful check covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinStats {
    /// Distinct keys checked.
    pub keys: usize,
    /// Operations checked (reads without an answer excluded).
    pub ops: usize,
    /// Model steps tried by the search, over all keys.
    pub states_explored: u64,
}

/// A key whose sub-history is not linearizable (or could not be decided within the budget, or is
/// malformed), with the operations that could not be ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinViolation {
    pub key: Vec<u8>,
    pub explanation: String,
}

/// The prefix of [`LinViolation::explanation`] when the search gave up rather than disproved.
pub const BUDGET_EXCEEDED: &str = "search budget exceeded";

/// Model steps allowed per key by [`check`]: a few seconds of search at worst.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

impl LinViolation {
    /// True when the search ran out of budget: the history is undecided, not proven wrong.
    pub fn is_budget_exceeded(&self) -> bool {
        self.explanation.starts_with(BUDGET_EXCEEDED)
    }
}

impl std::fmt::Display for LinViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "strong key {}: {}",
            String::from_utf8_lossy(&self.key),
            self.explanation
        )
    }
}

/// Checks that `history` is linearizable with respect to the strong-key model, key by key, with
/// [`DEFAULT_BUDGET`] model steps per key.
pub fn check(history: &[StrongOp]) -> Result<LinStats, LinViolation> {
    check_with_budget(history, DEFAULT_BUDGET)
}

/// [`check`] with an explicit per-key budget of model steps.
pub fn check_with_budget(history: &[StrongOp], budget: u64) -> Result<LinStats, LinViolation> {
    let mut by_key: BTreeMap<&[u8], Vec<&StrongOp>> = BTreeMap::new();
    for op in history {
        if op.call == StrongCall::Get && op.result == StrongResult::Unknown {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut stats = LinStats {
        keys: by_key.len(),
        ops: 0,
        states_explored: 0,
    };
    for (key, ops) in by_key {
        let violation = |explanation| LinViolation {
            key: key.to_vec(),
            explanation,
        };
        for op in &ops {
            validate(op).map_err(violation)?;
        }
        stats.ops += ops.len();
        stats.states_explored += KeySearch::new(&ops).run(budget).map_err(violation)?;
    }
    Ok(stats)
}

/// Rejects operations whose result cannot answer their call or whose times are inconsistent.
fn validate(op: &StrongOp) -> Result<(), String> {
    let shape_ok = matches!(
        (&op.call, &op.result),
        (StrongCall::Get, StrongResult::Read { .. })
            | (
                StrongCall::Put { .. } | StrongCall::Delete { .. },
                StrongResult::Written { .. }
                    | StrongResult::PreconditionFailed { .. }
                    | StrongResult::Unknown
            )
    );
    let time_ok = match (op.complete_us, &op.result) {
        (_, StrongResult::Unknown) => true,
        (Some(done), _) => done >= op.invoke_us,
        (None, _) => false,
    };
    if shape_ok && time_ok {
        Ok(())
    } else {
        Err(format!("malformed operation: {}", describe(op)))
    }
}

/// Model state with values interned per key: `(value id, version)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    value: Option<u32>,
    version: u64,
}

/// One operation prepared for the search.
struct Prepared<'a> {
    op: &'a StrongOp,
    /// Interned value of a put or of a read result.
    value: Option<u32>,
    unknown: bool,
}

impl Prepared<'_> {
    /// True for puts and deletes that may change the state (definite successes and unknowns).
    fn mutates(&self) -> bool {
        matches!(
            self.op.result,
            StrongResult::Written { .. } | StrongResult::Unknown
        )
    }

    /// The state after linearizing this operation in `s`, or None if the model forbids its result
    /// there. An unknown write is only placed where its condition holds: placing it where it fails
    /// changes nothing, which is the same as never placing it.
    fn step(&self, s: State) -> Option<State> {
        let cond_holds = |cond: &Cond| match cond {
            Cond::Always => true,
            Cond::IfVersion(v) => *v == s.version,
            Cond::IfAbsent => s.value.is_none(),
        };
        let (cond, new_value) = match &self.op.call {
            StrongCall::Get => {
                return match &self.op.result {
                    StrongResult::Read { version, .. }
                        if *version == s.version && self.value == s.value =>
                    {
                        Some(s)
                    }
                    _ => None,
                };
            }
            StrongCall::Put { cond, .. } => (cond, self.value),
            StrongCall::Delete { cond } => (cond, None),
        };
        let written = State {
            value: new_value,
            version: s.version.checked_add(1)?,
        };
        match self.op.result {
            StrongResult::Written { version } if cond_holds(cond) && version == written.version => {
                Some(written)
            }
            StrongResult::PreconditionFailed { version }
                if !cond_holds(cond) && version == s.version =>
            {
                Some(s)
            }
            StrongResult::Unknown if cond_holds(cond) => Some(written),
            _ => None,
        }
    }
}

/// A node of the event list: the invocation or completion of `op`.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// A (linearized set, state) pair of the memo. Hashing uses an incremental Zobrist hash of the
/// set so that it is O(1); equality compares the full bitset.
#[derive(Clone, PartialEq, Eq)]
struct Memo {
    zobrist: u64,
    bits: Vec<u64>,
    state: State,
}

impl Hash for Memo {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.zobrist.hash(h);
        self.state.hash(h);
    }
}

/// Deterministic per-operation Zobrist key (splitmix64 of the index).
fn zobrist_key(i: usize) -> u64 {
    let mut z = (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The search over one key's operations.
struct KeySearch<'a> {
    ops: Vec<Prepared<'a>>,
    /// Doubly linked event list; index 0 is the sentinel (head and tail).
    events: Vec<Event>,
    /// Index in `events` of each op's invocation and completion.
    call_event: Vec<usize>,
    ret_event: Vec<usize>,
    /// Interned values, for explanations.
    values: Vec<Vec<u8>>,
}

/// Deepest point reached by the search, kept for the explanation of a violation.
struct Stuck {
    prefix: Vec<usize>,
    state: State,
    blocking: usize,
    pending: Vec<usize>,
}

impl<'a> KeySearch<'a> {
    fn new(ops: &[&'a StrongOp]) -> Self {
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut intern = |bytes: &[u8]| -> u32 {
            match values.iter().position(|v| v == bytes) {
                Some(i) => i as u32,
                None => {
                    values.push(bytes.to_vec());
                    (values.len() - 1) as u32
                }
            }
        };
        let prepared: Vec<Prepared<'a>> = ops
            .iter()
            .map(|op| Prepared {
                op,
                value: match (&op.call, &op.result) {
                    (StrongCall::Put { value, .. }, _) => Some(intern(value)),
                    (_, StrongResult::Read { value: Some(v), .. }) => Some(intern(v)),
                    _ => None,
                },
                unknown: op.result == StrongResult::Unknown,
            })
            .collect();
        // (time, calls before completions at equal times, op index): ties count as overlap.
        let mut order: Vec<(u64, bool, usize, bool)> = Vec::with_capacity(2 * prepared.len());
        for (i, p) in prepared.iter().enumerate() {
            order.push((p.op.invoke_us, false, i, true));
            let done = if p.unknown {
                u64::MAX
            } else {
                p.op.complete_us.unwrap_or(u64::MAX)
            };
            order.push((done, true, i, false));
        }
        order.sort_unstable();
        let n = order.len();
        let mut events = Vec::with_capacity(n + 1);
        events.push(Event {
            op: usize::MAX,
            is_call: false,
            prev: n,
            next: if n == 0 { 0 } else { 1 },
        });
        let mut call_event = vec![0; prepared.len()];
        let mut ret_event = vec![0; prepared.len()];
        for (pos, &(_, _, op, is_call)) in order.iter().enumerate() {
            let idx = pos + 1;
            if is_call {
                call_event[op] = idx;
            } else {
                ret_event[op] = idx;
            }
            events.push(Event {
                op,
                is_call,
                prev: idx - 1,
                next: if idx == n { 0 } else { idx + 1 },
            });
        }
        KeySearch {
            ops: prepared,
            events,
            call_event,
            ret_event,
            values,
        }
    }

    fn unlink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.events[e];
        self.events[prev].next = next;
        self.events[next].prev = prev;
    }

    /// Re-inserts an unlinked event; valid when undoing unlinks in reverse order.
    fn relink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.events[e];
        self.events[prev].next = e;
        self.events[next].prev = e;
    }

    /// Tries to linearize `op` next from `state`, with `at` the current (linearized set, state).
    /// Returns the new state, or None, changing nothing, if the model forbids it or the
    /// resulting (set, state) pair was explored before.
    fn try_lift(
        &mut self,
        op: usize,
        state: State,
        at: &mut Memo,
        seen: &mut HashSet<Memo>,
    ) -> Option<State> {
        let next_state = self.ops[op].step(state)?;
        let (word, bit) = (op / 64, 1u64 << (op % 64));
        at.bits[word] |= bit;
        at.zobrist ^= zobrist_key(op);
        at.state = next_state;
        if seen.contains(at) {
            at.bits[word] &= !bit;
            at.zobrist ^= zobrist_key(op);
            at.state = state;
            return None;
        }
        seen.insert(at.clone());
        self.unlink(self.call_event[op]);
        self.unlink(self.ret_event[op]);
        Some(next_state)
    }

    /// Runs the search; Ok(model steps tried) or Err(explanation).
    ///
    /// Besides the memo, one rule prunes: a pending read or failed precondition that the model
    /// allows in the current state is linearized at once and never backtracked over on its own
    /// ("forced"). It is sound because such an operation leaves the state alone and demands this
    /// exact state (every write changes the version): in any linearization from here it sits
    /// among the non-mutating operations before the next write, and may move to their front, as
    /// every pending operation completes after its invocation.
    fn run(mut self, budget: u64) -> Result<u64, String> {
        let n = self.ops.len();
        let mut at = Memo {
            zobrist: 0,
            bits: vec![0u64; n.div_ceil(64)],
            state: State {
                value: None,
                version: 0,
            },
        };
        let mut seen: HashSet<Memo> = HashSet::new();
        // (op, state before it, forced)
        let mut stack: Vec<(usize, State, bool)> = Vec::new();
        let mut stuck: Option<Stuck> = None;
        let mut steps = 0u64;
        let mut cur = self.events[0].next;
        let mut at_head = true;
        let over_budget = |depth: usize| {
            format!(
                "{BUDGET_EXCEEDED}: {budget} model steps over {n} operations, {depth} linearized \
                 so far; undecided, not a violation"
            )
        };
        loop {
            // Every event before `cur` is an invocation; reaching the end, or a completion at
            // +infinity, means every definite operation is linearized.
            if cur == 0 || (!self.events[cur].is_call && self.ops[self.events[cur].op].unknown) {
                return Ok(steps);
            }
            let mut blocked = None;
            if at_head {
                at_head = false;
                // Forced candidates first.
                let mut e = cur;
                let mut forced = None;
                while e != 0 && self.events[e].is_call {
                    let op = self.events[e].op;
                    if !self.ops[op].mutates() {
                        steps += 1;
                        if self.ops[op].step(at.state).is_some() {
                            forced = Some(op);
                            break;
                        }
                    }
                    e = self.events[e].next;
                }
                if steps > budget {
                    return Err(over_budget(stack.len()));
                }
                if let Some(op) = forced {
                    let before = at.state;
                    match self.try_lift(op, before, &mut at, &mut seen) {
                        Some(_) => {
                            stack.push((op, before, true));
                            cur = self.events[0].next;
                            at_head = true;
                            continue;
                        }
                        // Explored before from here, and failed: so does this state.
                        None => blocked = Some(None),
                    }
                }
            }
            if blocked.is_none() {
                let ev = self.events[cur];
                if ev.is_call {
                    if self.ops[ev.op].mutates() {
                        steps += 1;
                        if steps > budget {
                            return Err(over_budget(stack.len()));
                        }
                        let before = at.state;
                        if self.try_lift(ev.op, before, &mut at, &mut seen).is_some() {
                            stack.push((ev.op, before, false));
                            cur = self.events[0].next;
                            at_head = true;
                            continue;
                        }
                    }
                    cur = ev.next;
                    continue;
                }
                blocked = Some(Some((ev.op, cur)));
            }
            if let Some(Some((op, event))) = blocked
                && stuck.as_ref().is_none_or(|s| stack.len() > s.prefix.len())
            {
                stuck = Some(Stuck {
                    prefix: stack.iter().map(|&(op, _, _)| op).collect(),
                    state: at.state,
                    blocking: op,
                    pending: self.pending_before(event),
                });
            }
            // Backtrack: undo the last choice that was not forced.
            loop {
                let Some((op, before, forced)) = stack.pop() else {
                    return Err(self.explain(stuck.expect("a completion blocked the search")));
                };
                at.bits[op / 64] &= !(1u64 << (op % 64));
                at.zobrist ^= zobrist_key(op);
                at.state = before;
                self.relink(self.ret_event[op]);
                self.relink(self.call_event[op]);
                if !forced {
                    cur = self.events[self.call_event[op]].next;
                    break;
                }
            }
        }
    }

    /// The operations invoked before event `until` and not yet linearized.
    fn pending_before(&self, until: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut e = self.events[0].next;
        while e != until && e != 0 {
            out.push(self.events[e].op);
            e = self.events[e].next;
        }
        out
    }

    fn explain(&self, stuck: Stuck) -> String {
        const SHOWN: usize = 5;
        let mut s = String::new();
        let total = self.ops.len();
        let _ = write!(
            s,
            "not linearizable: the longest linearizable prefix orders {} of {} operations",
            stuck.prefix.len(),
            total
        );
        if !stuck.prefix.is_empty() {
            let from = stuck.prefix.len().saturating_sub(SHOWN);
            let _ = write!(s, " (ending ");
            for (i, &op) in stuck.prefix[from..].iter().enumerate() {
                let sep = if i == 0 { "" } else { "; " };
                let _ = write!(s, "{sep}{}", describe(self.ops[op].op));
            }
            let _ = write!(s, ")");
        }
        let value = match stuck.state.value {
            Some(id) => show_bytes(&self.values[id as usize]),
            None => "absent".to_string(),
        };
        let _ = write!(
            s,
            ", reaching state (value {value}, version {}); then {} completed but neither it nor \
             any other pending operation can be linearized next",
            stuck.state.version,
            describe(self.ops[stuck.blocking].op)
        );
        let others: Vec<usize> = stuck
            .pending
            .iter()
            .copied()
            .filter(|&op| op != stuck.blocking)
            .collect();
        if !others.is_empty() {
            let _ = write!(s, "; pending:");
            for &op in others.iter().take(2 * SHOWN) {
                let _ = write!(s, " [{}]", describe(self.ops[op].op));
            }
            if others.len() > 2 * SHOWN {
                let _ = write!(s, " and {} more", others.len() - 2 * SHOWN);
            }
        }
        s
    }
}

/// Bytes as (truncated) lossy UTF-8 in quotes.
fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 32;
    let text = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
    if b.len() > MAX {
        format!("{text:?}…({} bytes)", b.len())
    } else {
        format!("{text:?}")
    }
}

/// One line describing an operation: client, time window, call and result.
fn describe(op: &StrongOp) -> String {
    let cond = |c: &Cond| match c {
        Cond::Always => String::new(),
        Cond::IfVersion(v) => format!(" if-version {v}"),
        Cond::IfAbsent => " if-absent".to_string(),
    };
    let call = match &op.call {
        StrongCall::Get => "get".to_string(),
        StrongCall::Put { value, cond: c } => format!("put {}{}", show_bytes(value), cond(c)),
        StrongCall::Delete { cond: c } => format!("delete{}", cond(c)),
    };
    let result = match &op.result {
        StrongResult::Read {
            value: Some(v),
            version,
        } => format!("read {} v{version}", show_bytes(v)),
        StrongResult::Read {
            value: None,
            version,
        } => format!("read absent v{version}"),
        StrongResult::Written { version } => format!("written v{version}"),
        StrongResult::PreconditionFailed { version } => {
            format!("precondition failed at v{version}")
        }
        StrongResult::Unknown => "unknown".to_string(),
    };
    let done = op
        .complete_us
        .filter(|_| op.result != StrongResult::Unknown)
        .map_or("∞".to_string(), |t| format!("{t}"));
    format!(
        "client {} {}..{}µs {call} -> {result}",
        op.client, op.invoke_us, done
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: &[u8] = b"k";

    fn op(client: u64, window: (u64, u64), call: StrongCall, result: StrongResult) -> StrongOp {
        let unknown = result == StrongResult::Unknown;
        StrongOp {
            key: K.to_vec(),
            client,
            invoke_us: window.0,
            complete_us: (!unknown).then_some(window.1),
            call,
            result,
        }
    }
    fn put(v: &str, cond: Cond) -> StrongCall {
        StrongCall::Put {
            value: v.as_bytes().to_vec(),
            cond,
        }
    }
    fn read(v: Option<&str>, version: u64) -> StrongResult {
        StrongResult::Read {
            value: v.map(|s| s.as_bytes().to_vec()),
            version,
        }
    }
    fn written(version: u64) -> StrongResult {
        StrongResult::Written { version }
    }
    fn failed(version: u64) -> StrongResult {
        StrongResult::PreconditionFailed { version }
    }
    fn assert_violation(h: &[StrongOp]) -> LinViolation {
        let v = check(h).expect_err("history must be rejected");
        assert!(!v.is_budget_exceeded(), "{v}");
        v
    }

    #[test]
    fn empty_and_sequential_histories_pass() {
        assert_eq!(check(&[]).unwrap().keys, 0);
        let h = [
            op(1, (0, 1), StrongCall::Get, read(None, 0)),
            op(1, (2, 3), put("a", Cond::IfAbsent), written(1)),
            op(1, (4, 5), put("b", Cond::IfVersion(1)), written(2)),
            op(1, (6, 7), put("c", Cond::IfVersion(1)), failed(2)),
            op(
                1,
                (8, 9),
                StrongCall::Delete { cond: Cond::Always },
                written(3),
            ),
            op(1, (10, 11), StrongCall::Get, read(None, 3)),
            op(1, (12, 13), put("d", Cond::IfAbsent), written(4)),
        ];
        let stats = check(&h).unwrap();
        assert_eq!((stats.keys, stats.ops), (1, 7));
    }

    #[test]
    fn concurrent_overlapping_cas_orders_by_version() {
        // Three CAS from version 0 overlap; one wins, the others see version 1 or 2. The
        // completions arrive in the opposite order of the linearization.
        let h = [
            op(1, (0, 30), put("x", Cond::IfVersion(0)), failed(2)),
            op(2, (1, 20), put("y", Cond::IfVersion(0)), written(1)),
            op(3, (2, 10), put("z", Cond::IfVersion(1)), written(2)),
            op(4, (3, 40), StrongCall::Get, read(Some("y"), 1)),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_write_that_took_effect_passes() {
        let h = [
            op(1, (0, 0), put("a", Cond::Always), StrongResult::Unknown),
            op(2, (100, 110), StrongCall::Get, read(Some("a"), 1)),
            op(2, (120, 130), put("b", Cond::IfVersion(1)), written(2)),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_write_that_never_took_effect_passes() {
        let h = [
            op(1, (0, 0), put("a", Cond::Always), StrongResult::Unknown),
            op(2, (100, 110), StrongCall::Get, read(None, 0)),
            op(2, (120, 130), put("b", Cond::IfVersion(0)), written(1)),
            op(2, (140, 150), StrongCall::Get, read(Some("b"), 1)),
            // A read without an answer is dropped, whatever it claims.
            op(3, (0, 0), StrongCall::Get, StrongResult::Unknown),
        ];
        assert_eq!(check(&h).unwrap().ops, 4);
    }

    #[test]
    fn unknown_write_may_take_effect_late() {
        // Invoked first, visible only after a later write: it took effect after that write.
        let h = [
            op(1, (0, 0), put("a", Cond::Always), StrongResult::Unknown),
            op(2, (10, 20), put("b", Cond::Always), written(1)),
            op(2, (30, 40), StrongCall::Get, read(Some("b"), 1)),
            op(2, (50, 60), StrongCall::Get, read(Some("a"), 2)),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_invocation() {
        let h = [
            op(2, (0, 10), StrongCall::Get, read(Some("a"), 1)),
            op(1, (20, 0), put("a", Cond::Always), StrongResult::Unknown),
        ];
        assert_violation(&h);
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let h = [
            op(1, (0, 10), put("a", Cond::Always), written(1)),
            op(2, (20, 30), StrongCall::Get, read(None, 0)),
        ];
        let v = assert_violation(&h);
        assert!(v.explanation.contains("read absent v0"), "{v}");
        assert!(v.explanation.contains("1 of 2"), "{v}");
    }

    #[test]
    fn two_cas_from_the_same_version_both_succeeding_fails() {
        let h = [
            op(1, (0, 10), put("a", Cond::IfVersion(0)), written(1)),
            op(2, (0, 10), put("b", Cond::IfVersion(0)), written(1)),
        ];
        assert_violation(&h);
        // Even if they claim distinct versions: the second cannot have seen version 0.
        let h = [
            op(1, (0, 10), put("a", Cond::IfVersion(0)), written(1)),
            op(2, (0, 10), put("b", Cond::IfVersion(0)), written(2)),
        ];
        assert_violation(&h);
    }

    #[test]
    fn read_of_a_value_never_written_fails() {
        let h = [
            op(1, (0, 10), put("a", Cond::Always), written(1)),
            op(2, (0, 20), StrongCall::Get, read(Some("ghost"), 1)),
        ];
        let v = assert_violation(&h);
        assert!(v.explanation.contains("ghost"), "{v}");
    }

    #[test]
    fn version_skipping_fails() {
        let h = [
            op(1, (0, 10), put("a", Cond::Always), written(1)),
            op(1, (20, 30), put("b", Cond::Always), written(3)),
        ];
        assert_violation(&h);
    }

    #[test]
    fn precondition_failure_must_be_justified() {
        // Key is absent at version 0: If-None-Match cannot fail, If-Match 0 cannot fail.
        let h = [op(1, (0, 10), put("a", Cond::IfAbsent), failed(0))];
        assert_violation(&h);
        let h = [op(1, (0, 10), put("a", Cond::IfVersion(0)), failed(0))];
        assert_violation(&h);
        // A failure must report the current version.
        let h = [
            op(1, (0, 10), put("a", Cond::Always), written(1)),
            op(1, (20, 30), put("b", Cond::IfVersion(0)), failed(0)),
        ];
        assert_violation(&h);
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = op(2, (20, 30), StrongCall::Get, read(None, 0));
        other.key = b"other".to_vec();
        let h = [op(1, (0, 10), put("a", Cond::Always), written(1)), other];
        assert_eq!(check(&h).unwrap().keys, 2);
    }

    #[test]
    fn malformed_operations_are_rejected() {
        let mut h = [op(1, (10, 5), StrongCall::Get, read(None, 0))];
        assert!(check(&h).unwrap_err().explanation.contains("malformed"));
        h[0] = op(1, (0, 5), StrongCall::Get, written(1));
        assert!(check(&h).unwrap_err().explanation.contains("malformed"));
    }

    #[test]
    fn budget_exhaustion_is_not_a_violation() {
        // Many unconditional unknown writes of distinct values, then a read of a value nobody
        // wrote: every subset and order of the unknown writes must be refuted.
        let mut h: Vec<StrongOp> = (0..20)
            .map(|i| {
                op(
                    i,
                    (0, 0),
                    put(&i.to_string(), Cond::Always),
                    StrongResult::Unknown,
                )
            })
            .collect();
        h.push(op(99, (10, 20), StrongCall::Get, read(Some("none"), 3)));
        let v = check_with_budget(&h, 10_000).unwrap_err();
        assert!(v.is_budget_exceeded(), "{v}");
    }

    /// A sequential execution of random calls on two keys, each op given a linearization point
    /// `10 * i` and a random real-time window around it (or, if `disjoint`, a window that
    /// overlaps no other); unless disjoint, some writes lose their answer (and then take effect
    /// or not, at random).
    fn sequential_history(draws: &[(u8, u8, u8, u16, u16, u8)], disjoint: bool) -> Vec<StrongOp> {
        let mut states: BTreeMap<Vec<u8>, (Option<Vec<u8>>, u64)> = BTreeMap::new();
        let mut out = Vec::new();
        for (i, &(key, kind, arg, before, after, fate)) in draws.iter().enumerate() {
            let key = vec![b'a' + key % 2];
            let state = states.entry(key.clone()).or_insert((None, 0));
            let cond = match arg % 3 {
                0 => Cond::Always,
                1 => Cond::IfVersion(state.1.saturating_sub(u64::from(arg % 2))),
                _ => Cond::IfAbsent,
            };
            let call = match kind % 3 {
                0 => StrongCall::Get,
                1 => StrongCall::Put {
                    value: vec![arg % 4],
                    cond,
                },
                _ => StrongCall::Delete { cond },
            };
            let holds = match &call {
                StrongCall::Get => false,
                StrongCall::Put { cond, .. } | StrongCall::Delete { cond } => match cond {
                    Cond::Always => true,
                    Cond::IfVersion(v) => *v == state.1,
                    Cond::IfAbsent => state.0.is_none(),
                },
            };
            let lost = !disjoint && call != StrongCall::Get && fate % 5 == 0;
            let result = match &call {
                StrongCall::Get => StrongResult::Read {
                    value: state.0.clone(),
                    version: state.1,
                },
                _ if lost => StrongResult::Unknown,
                _ if holds => StrongResult::Written {
                    version: state.1 + 1,
                },
                _ => StrongResult::PreconditionFailed { version: state.1 },
            };
            // A lost write whose condition held took effect iff `fate` says so.
            if holds && (!lost || fate % 2 == 0) {
                state.0 = match &call {
                    StrongCall::Put { value, .. } => Some(value.clone()),
                    _ => None,
                };
                state.1 += 1;
            }
            let point = 10_000 + 10 * i as u64;
            let (invoke, complete) = if disjoint {
                (point, point + 1)
            } else {
                (
                    point - u64::from(before % 80),
                    point + u64::from(after % 80),
                )
            };
            out.push(StrongOp {
                key,
                client: i as u64,
                invoke_us: invoke,
                complete_us: (!lost).then_some(complete),
                call,
                result,
            });
        }
        out
    }

    fn draws() -> impl Strategy<Value = Vec<(u8, u8, u8, u16, u16, u8)>> {
        proptest::collection::vec(any::<(u8, u8, u8, u16, u16, u8)>(), 1..60)
    }

    /// Corrupts one definite result: bumps the version it reports, or flips success/failure.
    fn corrupt(h: &mut [StrongOp], pick: usize, how: u8) -> bool {
        let definite: Vec<usize> = (0..h.len())
            .filter(|&i| h[i].result != StrongResult::Unknown)
            .collect();
        if definite.is_empty() {
            return false;
        }
        let target = &mut h[definite[pick % definite.len()]];
        target.result = match (&target.result, how % 2) {
            (StrongResult::Read { value, version }, 0) => StrongResult::Read {
                value: value.clone(),
                version: version + 1,
            },
            (StrongResult::Read { value, version }, _) => StrongResult::Read {
                value: match value {
                    Some(_) => None,
                    None => Some(b"never".to_vec()),
                },
                version: *version,
            },
            (StrongResult::Written { version }, 0) => StrongResult::Written {
                version: version + 1,
            },
            (StrongResult::Written { version }, _) => StrongResult::PreconditionFailed {
                version: version - 1,
            },
            (StrongResult::PreconditionFailed { version }, 0) => StrongResult::PreconditionFailed {
                version: version + 1,
            },
            (StrongResult::PreconditionFailed { version }, _) => StrongResult::Written {
                version: version + 1,
            },
            (StrongResult::Unknown, _) => unreachable!("filtered above"),
        };
        true
    }

    /// `clients` clients each running `per_client` get-then-CAS increments of one counter
    /// against the model, with random latencies (up to `lat` µs each side of the
    /// linearization point) and think times; a seeded xorshift keeps it reproducible.
    fn contended_counter(clients: u64, per_client: usize, lat: u64, seed: u64) -> Vec<StrongOp> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut rng = seed | 1;
        let mut next = move |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound.max(1)
        };
        // (linearization point, client, invoke, complete); per client the next op starts after
        // the previous one completed.
        let mut heap = BinaryHeap::new();
        let mut plan = |start: u64, client: u64, heap: &mut BinaryHeap<_>| {
            let invoke = start + next(lat);
            let point = invoke + next(lat);
            let complete = point + next(lat);
            heap.push(Reverse((point, client, invoke, complete)));
        };
        for c in 0..clients {
            plan(0, c, &mut heap);
        }
        let (mut value, mut version) = (0u64, 0u64);
        let mut seen = vec![None::<u64>; clients as usize];
        let mut done = vec![0usize; clients as usize];
        let mut out = Vec::new();
        while let Some(Reverse((_, c, invoke, complete))) = heap.pop() {
            let ci = c as usize;
            let (call, result) = match seen[ci].take() {
                None => {
                    seen[ci] = Some(version);
                    let v = (version > 0).then(|| value.to_string().into_bytes());
                    (StrongCall::Get, StrongResult::Read { value: v, version })
                }
                Some(read_version) => {
                    done[ci] += 1;
                    let new = (value + 1).to_string().into_bytes();
                    let call = StrongCall::Put {
                        value: new,
                        cond: Cond::IfVersion(read_version),
                    };
                    if read_version == version {
                        value += 1;
                        version += 1;
                        (call, StrongResult::Written { version })
                    } else {
                        (call, StrongResult::PreconditionFailed { version })
                    }
                }
            };
            out.push(StrongOp {
                key: K.to_vec(),
                client: c,
                invoke_us: invoke,
                complete_us: Some(complete),
                call,
                result,
            });
            if done[ci] < per_client {
                plan(complete, c, &mut heap);
            }
        }
        out
    }

    /// The speed check the issue asks for: 16 clients × 500 CAS increments (1,000 operations
    /// each: a get and a CAS) on one key. `cargo test --release -p causeway-harness --lib
    /// sixteen_clients -- --nocapture` prints the search size.
    #[test]
    fn sixteen_clients_contending_on_one_key_check_quickly() {
        let h = contended_counter(16, 500, 300, 7);
        assert_eq!(h.len(), 16_000);
        let stats = check(&h).unwrap();
        assert_eq!(stats.ops, 16_000);
        println!("16 clients x 1000 ops on one key: {stats:?}");
        // A planted lost update: one failed CAS claims success at the next version.
        let mut bad = h.clone();
        let i = bad
            .iter()
            .position(|o| matches!(o.result, StrongResult::PreconditionFailed { .. }))
            .unwrap();
        if let StrongResult::PreconditionFailed { version } = bad[i].result {
            bad[i].result = StrongResult::Written {
                version: version + 1,
            };
        }
        assert!(check(&bad).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn sequential_executions_with_overlapping_windows_pass(d in draws()) {
            let h = sequential_history(&d, false);
            let stats = check(&h).map_err(|v| TestCaseError::fail(v.to_string()))?;
            prop_assert!(stats.ops <= h.len());
        }

        /// Read values nobody wrote are detectable whatever the windows.
        #[test]
        fn a_read_of_an_unwritten_value_is_rejected(d in draws(), pick in any::<usize>()) {
            let mut h = sequential_history(&d, false);
            let reads: Vec<usize> = (0..h.len())
                .filter(|&i| matches!(h[i].result, StrongResult::Read { .. }))
                .collect();
            prop_assume!(!reads.is_empty());
            let i = reads[pick % reads.len()];
            if let StrongResult::Read { value, .. } = &mut h[i].result {
                *value = Some(b"never written".to_vec());
            }
            prop_assert!(check(&h).is_err());
        }

        /// Without overlap (every answer is known there) the linearization is the real-time order,
        /// so any change to one result is detectable.
        #[test]
        fn a_corrupted_result_in_a_sequential_history_is_rejected(
            d in draws(), pick in any::<usize>(), how in any::<u8>()
        ) {
            let mut h = sequential_history(&d, true);
            prop_assume!(corrupt(&mut h, pick, how));
            let v = check(&h).err();
            prop_assert!(v.is_some_and(|v| !v.is_budget_exceeded()));
        }
    }
}
