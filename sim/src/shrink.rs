//! Shrinking a failing seed into a small scenario that fails the same way.
//!
//! A candidate is kept only when the *same* checker fires with the *same kind* of anomaly (the
//! violation's wording, minus the details: "write reply context does not cover its own dot",
//! "request after heal did not succeed", …) on the same seed. Because every random draw is keyed
//! by its purpose and entity (`causeway_harness::draws`), cutting an operation or a fault leaves
//! the other events' draws where they were, so one seed is enough: no candidate is "rescued" by
//! trying other seeds.
//!
//! Passes, repeated until a round changes nothing (or the test budget is spent):
//! 0. (exact, once) every operation is pinned to the simulated time the failing run issued it,
//!    so cutting one operation does not move the ones after it;
//! 1. (exact, once) a G1 violation depends only on what happened before its operations
//!    completed (a G7 one on what happened before its second execution), so later operations
//!    and faults are cut and chaos ends right after;
//!    then (once) a candidate with only the operations on the violation's key;
//! 2. delta debugging (ddmin) over fault events, whole sessions, then single operations;
//! 3. weakening what remains, one change at a time: faults that end something (heal, rejoin,
//!    restart, resume) move earlier, loss and duplication rates and clock jumps halve, clock
//!    offsets and drifts go to zero, operations lose their context merges and blind flags and
//!    move to node 0, keys fold onto fewer keys, unpinned think times halve.

use crate::run::{SeedResult, run_seed};
use causeway::core::Canary;
use causeway_harness::Violation;
use causeway_harness::history::OpRecord;
use causeway_harness::plan::{Fault, Plan, SessionPlan};
use causeway_harness::scenario::{Checker, Scenario};
use causeway_harness::shrink::ddmin;

/// A shrunk failure: a scenario with an embedded plan, the seed that makes it fail, and what
/// the shrinker did.
pub struct Shrunk {
    pub scenario: Scenario,
    pub seed: u64,
    /// Plan events (faults + operations) of the original seed and of the result.
    pub before: usize,
    pub after: usize,
    /// Runs the shrinker made.
    pub tests: usize,
    /// The anomaly both the original and the result show.
    pub anomaly: String,
}

/// Runs allowed in one shrink (each is one simulated seed: milliseconds to a second).
const BUDGET: usize = 4000;

/// What must still fail: a checker and the kind of its violation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Anomaly {
    checker: Checker,
    kind: String,
}

impl Anomaly {
    fn of(v: &Violation) -> Self {
        Anomaly {
            checker: v.checker,
            kind: kind(&v.detail),
        }
    }
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.checker, self.kind)
    }
}

/// The wording of a violation without its particulars: its leading words made of lowercase
/// letters only (an actor such as `fb9008ad.1` or a key `k3` ends it).
fn kind(detail: &str) -> String {
    let mut words = Vec::new();
    for word in detail.split(' ') {
        let w = word.trim_end_matches([':', ',']);
        if w.is_empty() || !w.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            break;
        }
        words.push(w);
        if w.len() != word.len() {
            break;
        }
    }
    words.join(" ")
}

/// The search state: the scenario and plan that still fail, and the budget left.
struct Search {
    seed: u64,
    canary: Option<Canary>,
    want: Anomaly,
    base: Scenario,
    plan: Plan,
    tests: usize,
}

impl Search {
    fn fails_with(&mut self, base: &Scenario, plan: &Plan) -> bool {
        if self.tests >= BUDGET {
            return false;
        }
        self.tests += 1;
        let r = run_seed(base, self.seed, self.canary, false, Some(plan));
        r.violations.iter().any(|v| Anomaly::of(v) == self.want)
    }

    /// Keeps `plan` (under the current scenario) if it still fails.
    fn try_plan(&mut self, plan: Plan) -> bool {
        let base = self.base.clone();
        let ok = plan != self.plan && self.fails_with(&base, &plan);
        if ok {
            self.plan = plan;
        }
        ok
    }

    /// Keeps `base` (with the current plan) if it still fails.
    fn try_base(&mut self, base: Scenario) -> bool {
        let plan = self.plan.clone();
        let ok = self.fails_with(&base, &plan);
        if ok {
            self.base = base;
        }
        ok
    }

    fn ddmin_pass(&mut self) {
        let left = |s: &Self| BUDGET.saturating_sub(s.tests);
        let plan = self.plan.clone();
        let faults = ddmin(plan.faults.clone(), left(self), |f| {
            self.fails_with(
                &self.base.clone(),
                &Plan {
                    faults: f.to_vec(),
                    ..plan.clone()
                },
            )
        });
        self.plan.faults = faults;
        let plan = self.plan.clone();
        let keep = ddmin((0..plan.sessions.len()).collect(), left(self), |k| {
            self.fails_with(
                &self.base.clone(),
                &Plan {
                    sessions: mask_sessions(&plan, k),
                    ..plan.clone()
                },
            )
        });
        self.plan.sessions = mask_sessions(&plan, &keep);
        let plan = self.plan.clone();
        let items = ddmin(op_ids(&plan), left(self), |o| {
            self.fails_with(&self.base.clone(), &keep_ops(&plan, o))
        });
        self.plan = keep_ops(&plan, &items);
    }

    /// One weakening round; true when something was weakened.
    fn weaken_pass(&mut self) -> bool {
        let mut changed = false;
        // Faults that end something happen earlier: shorter partitions, crashes and pauses.
        for i in 0..self.plan.faults.len() {
            let ends = matches!(
                self.plan.faults[i].fault,
                Fault::HealNet
                    | Fault::Rejoin { .. }
                    | Fault::Restart { .. }
                    | Fault::Resume { .. }
            );
            let prev = if i == 0 {
                0
            } else {
                self.plan.faults[i - 1].at_ms
            };
            let at = self.plan.faults[i].at_ms;
            if ends && at > prev + 10 {
                let mut p = self.plan.clone();
                p.faults[i].at_ms = prev + (at - prev) / 2;
                changed |= self.try_plan(p);
            }
        }
        // Milder rates and clock jumps.
        for i in 0..self.plan.faults.len() {
            let mut p = self.plan.clone();
            let milder = match &mut p.faults[i].fault {
                Fault::Loss { rate } | Fault::Dup { rate } if *rate > 0.01 => {
                    *rate /= 2.0;
                    true
                }
                Fault::Jump { ms, .. } if ms.abs() > 10 => {
                    *ms /= 2;
                    true
                }
                _ => false,
            };
            if milder {
                changed |= self.try_plan(p);
            }
        }
        for (loss, dup) in [(true, false), (false, true)] {
            let mut b = self.base.clone();
            if loss && b.net.loss > 0.0 {
                b.net.loss = if b.net.loss > 0.01 {
                    b.net.loss / 2.0
                } else {
                    0.0
                };
                changed |= self.try_base(b);
            } else if dup && b.net.dup > 0.0 {
                b.net.dup = if b.net.dup > 0.01 {
                    b.net.dup / 2.0
                } else {
                    0.0
                };
                changed |= self.try_base(b);
            }
        }
        // Clocks without skew.
        for i in 0..self.plan.clocks.len() {
            if self.plan.clocks[i] != Default::default() {
                let mut p = self.plan.clone();
                p.clocks[i] = Default::default();
                changed |= self.try_plan(p);
            }
        }
        // Simpler operations: no context merge, not blind, at node 0, quicker.
        let ops: Vec<(usize, bool, usize)> = op_ids(&self.plan);
        for &(s, probe, i) in &ops {
            let edits: [fn(&mut causeway_harness::PlannedOp) -> bool; 4] = [
                |o| o.merge_from.take().is_some(),
                |o| std::mem::replace(&mut o.blind, false),
                |o| std::mem::replace(&mut o.node, 0) != 0,
                |o| {
                    let t = o.think_ms;
                    o.think_ms /= 2;
                    t > 1 && o.at_us.is_none()
                },
            ];
            for edit in edits {
                let mut p = self.plan.clone();
                let sp = &mut p.sessions[s];
                let op = if probe {
                    &mut sp.probe[i]
                } else {
                    &mut sp.ops[i]
                };
                if edit(op) {
                    changed |= self.try_plan(p);
                }
            }
        }
        // Fewer keys: fold each key onto a smaller one in use.
        let mut keys: Vec<u32> = ops
            .iter()
            .map(|&(s, probe, i)| op_at(&self.plan, s, probe, i).key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for (j, &hi) in keys.iter().enumerate().skip(1) {
            for &lo in &keys[..j] {
                let mut p = self.plan.clone();
                for sp in &mut p.sessions {
                    for o in sp.ops.iter_mut().chain(sp.probe.iter_mut()) {
                        if o.key == hi {
                            o.key = lo;
                        }
                    }
                }
                if self.try_plan(p) {
                    changed = true;
                    break;
                }
            }
        }
        changed
    }
}

/// Reduces a failing seed to a small scenario that fails with the same anomaly.
pub fn shrink(scenario: &Scenario, seed: u64, canary: Option<Canary>) -> Result<Shrunk, String> {
    let first = run_seed(scenario, seed, canary, false, None);
    let Some(v) = first.violations.first().cloned() else {
        return Err(format!("{} seed {seed} does not fail", scenario.name));
    };
    let mut search = Search {
        seed,
        canary,
        want: Anomaly::of(&v),
        base: scenario.clone(),
        plan: first.plan.clone(),
        tests: 0,
    };
    let before = first.plan.size();
    let pinned = pin_times(&first);
    if search.fails_with(&scenario.clone(), &pinned) {
        search.plan = pinned;
    }
    cut_after_failure(&mut search, &first, &v);
    slice_to_key(&mut search, &v.key);
    loop {
        let size = search.plan.size();
        search.ddmin_pass();
        let weakened = search.weaken_pass();
        if (!weakened && search.plan.size() == size) || search.tests >= BUDGET {
            break;
        }
    }
    let Search {
        base, plan, tests, ..
    } = search;
    let after = plan.size();
    let mut out = base;
    out.name = format!("{}-s{seed}", scenario.name);
    out.description = format!(
        "Shrunk from {} seed {seed}{} ({before} -> {after} events; fails {}). {}",
        scenario.name,
        canary
            .map(|c| format!(" with canary {}", c.name()))
            .unwrap_or_default(),
        Anomaly::of(&v),
        scenario.description
    );
    out.faults.events.clear();
    out.faults.kinds.clear();
    // What the original scenario exists to reach is not what its one failing run reaches: the
    // shrunk file declares no probes and plants no canaries (edit them in by hand if it is kept).
    out.expect.sometimes.clear();
    out.expect.canaries.clear();
    out.plan = Some(plan);
    Ok(Shrunk {
        scenario: out,
        seed,
        before,
        after,
        tests,
        anomaly: Anomaly::of(&v).to_string(),
    })
}

/// Pass 1: for a G1 or G7 violation during chaos, everything after it is irrelevant.
fn cut_after_failure(search: &mut Search, first: &SeedResult, v: &Violation) {
    let ops: Vec<&OpRecord> = v
        .ops
        .iter()
        .filter_map(|&id| first.history.op(id))
        .collect();
    let chaos_us = (search.base.phases.chaos_s * 1e6) as u64;
    let end = match v.checker {
        Checker::G1 => ops.iter().filter_map(|o| o.completed_us).max(),
        Checker::G7 => first
            .history
            .writes
            .iter()
            .filter(|w| v.ops.contains(&w.op))
            .map(|w| w.at_us)
            .max(),
        _ => None,
    };
    let Some(t) = end.filter(|&t| t < chaos_us && !ops.iter().any(|o| o.probe)) else {
        return;
    };
    let mut cut = search.plan.clone();
    cut.faults.retain(|f| f.at_ms * 1000 <= t);
    for (s, sp) in cut.sessions.iter_mut().enumerate() {
        let issued = first
            .history
            .ops
            .iter()
            .filter(|o| o.session == s && !o.probe && o.invoked_us <= t)
            .count();
        sp.ops.truncate(issued);
        sp.probe.clear();
    }
    let mut short = search.base.clone();
    short.phases.chaos_s = (t + 1000) as f64 / 1e6;
    short.phases.settle_s = 0.5;
    short.phases.quiesce_s = 0.5;
    short.phases.probe_ops = 0;
    if search.fails_with(&short, &cut) {
        search.base = short;
        search.plan = cut;
    }
}

/// One cheap candidate before delta debugging: only the operations on the violation's key.
fn slice_to_key(search: &mut Search, key: &str) {
    let Some(k) = key.strip_prefix('k').and_then(|k| k.parse::<u32>().ok()) else {
        return;
    };
    let mut p = search.plan.clone();
    for sp in &mut p.sessions {
        sp.ops.retain(|o| o.key == k);
        sp.probe.retain(|o| o.key == k);
    }
    search.try_plan(p);
}

/// The failing run's plan with every chaos operation it issued pinned to the time it was issued
/// (`PlannedOp::at_us`): the same run, but one whose operations stay put when others are cut.
fn pin_times(first: &SeedResult) -> Plan {
    let mut plan = first.plan.clone();
    for (s, sp) in plan.sessions.iter_mut().enumerate() {
        let issued = first
            .history
            .ops
            .iter()
            .filter(|o| o.session == s && !o.probe)
            .map(|o| o.invoked_us);
        for (op, at) in sp.ops.iter_mut().zip(issued) {
            op.at_us = Some(at);
        }
    }
    plan
}

fn op_ids(plan: &Plan) -> Vec<(usize, bool, usize)> {
    plan.sessions
        .iter()
        .enumerate()
        .flat_map(|(s, sp)| {
            (0..sp.ops.len())
                .map(move |i| (s, false, i))
                .chain((0..sp.probe.len()).map(move |i| (s, true, i)))
        })
        .collect()
}

fn op_at(plan: &Plan, s: usize, probe: bool, i: usize) -> &causeway_harness::PlannedOp {
    let sp = &plan.sessions[s];
    if probe { &sp.probe[i] } else { &sp.ops[i] }
}

/// Sessions not in `keep` issue nothing (indices stay stable for `merge_from`).
fn mask_sessions(plan: &Plan, keep: &[usize]) -> Vec<SessionPlan> {
    plan.sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if keep.contains(&i) {
                s.clone()
            } else {
                Default::default()
            }
        })
        .collect()
}

fn keep_ops(plan: &Plan, keep: &[(usize, bool, usize)]) -> Plan {
    let mut p = plan.clone();
    for (s, sp) in p.sessions.iter_mut().enumerate() {
        let src = &plan.sessions[s];
        sp.ops = (0..src.ops.len())
            .filter(|i| keep.contains(&(s, false, *i)))
            .map(|i| src.ops[i].clone())
            .collect();
        sp.probe = (0..src.probe.len())
            .filter(|i| keep.contains(&(s, true, *i)))
            .map(|i| src.probe[i].clone())
            .collect();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_harness::generate::generate;
    use std::path::Path;

    fn short(name: &str) -> Scenario {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut s = crate::run::load_scenarios(&dir, name).unwrap().remove(0);
        s.phases.chaos_s = s.phases.chaos_s.min(6.0);
        s
    }

    #[test]
    fn an_anomaly_kind_drops_the_particulars() {
        assert_eq!(
            kind("write reply context does not cover its own dot: op#0 s4 n5"),
            "write reply context does not cover its own dot"
        );
        assert_eq!(
            kind("reply context claims fb9008ad.1:3, a dot never issued"),
            "reply context claims"
        );
        assert_eq!(kind("read misses fb9008ad.1:2"), "read misses");
        assert_eq!(kind("replicas differ: n0=[..]"), "replicas differ");
    }

    #[test]
    fn shrinking_keeps_the_failure_and_reduces_the_plan() {
        let s = short("lww-skew");
        let seed = (1..20)
            .find(|&seed| !run_seed(&s, seed, None, false, None).violations.is_empty())
            .expect("lww-skew loses writes on some seed");
        let before = generate(&s, seed).size();
        let shrunk = shrink(&s, seed, None).expect("fails, so it shrinks");
        let plan = shrunk.scenario.plan.clone().expect("embedded plan");
        assert_eq!(shrunk.before, before);
        assert!(plan.size() < before / 4, "{} of {before}", plan.size());
        let again = run_seed(&shrunk.scenario, shrunk.seed, None, false, None);
        assert!(
            again
                .violations
                .iter()
                .any(|v| Anomaly::of(v).to_string() == shrunk.anomaly),
            "the shrunk plan no longer shows {}",
            shrunk.anomaly
        );
        let reparsed = Scenario::from_toml(&shrunk.scenario.to_toml()).expect("round-trips");
        assert_eq!(reparsed.plan, Some(plan));
    }
}
