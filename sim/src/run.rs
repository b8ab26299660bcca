//! Running one seed of a scenario and judging it; sweeps, canaries and shrinking build on this.
//!
//! Under `--cfg madsim` each seed runs inside its own madsim runtime: madsim's seeded global RNG
//! is the world's only entropy and madsim's clock follows the world's simulated time. Without
//! madsim (plain `cargo test`) a seeded SplitMix64 stands in, so unit tests can run worlds too.

use crate::world::{Entropy, RunOutput, Stats, World};
use causeway::core::Canary;
use causeway_harness::generate::generate;
use causeway_harness::history::OpRecord;
use causeway_harness::plan::Plan;
use causeway_harness::scenario::{Checker, Outcome, Scenario};
use causeway_harness::shrink::ddmin;
use causeway_harness::{History, Violation, check};
use std::path::{Path, PathBuf};

/// The verdict on one seed.
pub struct SeedResult {
    pub seed: u64,
    /// Violations of enforced checkers.
    pub violations: Vec<Violation>,
    /// Violations of checkers the scenario lists as known gaps of the core.
    pub known: Vec<Violation>,
    /// Why the run did not test what its scenario is for (fewer hints than `expect.min_hints`).
    pub shortfall: Option<String>,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub sim_us: u64,
    pub stats: Stats,
    pub plan: Plan,
    pub history: History,
}

impl SeedResult {
    /// Whether this seed is a failure of its scenario: a violation where none is expected.
    /// (An expected-to-fail scenario is judged over a whole sweep: some seed must fail.)
    pub fn failed(&self, s: &Scenario) -> bool {
        (s.expect.outcome == Outcome::Pass && !self.violations.is_empty())
            || self.shortfall.is_some()
    }
}

/// Runs `seed` of `scenario` (with `plan` instead of the generated one when given).
pub fn run_seed(
    scenario: &Scenario,
    seed: u64,
    canary: Option<Canary>,
    trace: bool,
    plan: Option<&Plan>,
) -> SeedResult {
    let plan = plan.cloned().unwrap_or_else(|| generate(scenario, seed));
    let out = execute(scenario, &plan, seed, canary, trace);
    let all = check(&out.history, &scenario.expect.checks, true);
    let (known, mut violations): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|v| scenario.expect.known_gaps.contains(&v.checker));
    if let Some(what) = &out.broken {
        // First: the rest of the run never happened, so later checkers judge a cut history.
        let broken = Violation {
            checker: Checker::Invariant,
            key: String::new(),
            ops: Vec::new(),
            detail: what.clone(),
        };
        violations.insert(0, broken);
    }
    let min = scenario.expect.min_hints;
    let shortfall = (out.stats.hints_accepted < min).then(|| {
        format!(
            "only {} writes were accepted as hints, expect.min_hints = {min}: the run did not test hinted handoff",
            out.stats.hints_accepted
        )
    });
    SeedResult {
        seed,
        violations,
        known,
        shortfall,
        trace_hash: out.trace_hash,
        trace: out.trace,
        sim_us: out.sim_us,
        stats: out.stats,
        plan,
        history: out.history,
    }
}

#[cfg(madsim)]
fn execute(
    scenario: &Scenario,
    plan: &Plan,
    seed: u64,
    canary: Option<Canary>,
    trace: bool,
) -> RunOutput {
    struct MadsimRng(madsim::rand::GlobalRng);
    impl Entropy for MadsimRng {
        fn next_u64(&mut self) -> u64 {
            madsim::rand::RngCore::next_u64(&mut self.0)
        }
    }
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(async move {
        let start = madsim::time::Instant::now();
        let mut at = 0u64;
        let advance = |t: u64| {
            if t > at {
                madsim::time::advance(std::time::Duration::from_micros(t - at));
                at = t;
            }
        };
        let out = World::new(
            scenario,
            plan,
            canary,
            MadsimRng(madsim::rand::thread_rng()),
            advance,
            trace,
        )
        .run();
        debug_assert_eq!(start.elapsed().as_micros() as u64, out.sim_us);
        out
    })
}

#[cfg(not(madsim))]
fn execute(
    scenario: &Scenario,
    plan: &Plan,
    seed: u64,
    canary: Option<Canary>,
    trace: bool,
) -> RunOutput {
    World::new(scenario, plan, canary, SplitMix(seed), |_| {}, trace).run()
}

/// SplitMix64: the stand-in entropy outside madsim.
#[cfg(not(madsim))]
pub struct SplitMix(pub u64);

#[cfg(not(madsim))]
impl Entropy for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Scenario files: `dir/*.toml` then `dir/regressions/*.toml`, each group sorted by name.
pub fn scenario_paths(dir: &Path) -> Vec<PathBuf> {
    let list = |d: &Path| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        v
    };
    let mut v = list(dir);
    v.extend(list(&dir.join("regressions")));
    v
}

/// Loads the scenario called `name` (or every scenario for `all`).
pub fn load_scenarios(dir: &Path, name: &str) -> Result<Vec<Scenario>, String> {
    let all: Vec<Scenario> = scenario_paths(dir)
        .iter()
        .map(|p| Scenario::load(p))
        .collect::<Result<_, _>>()?;
    if name == "all" {
        if all.is_empty() {
            return Err(format!("no scenarios in {}", dir.display()));
        }
        return Ok(all);
    }
    let found: Vec<Scenario> = all.into_iter().filter(|s| s.name == name).collect();
    if found.is_empty() {
        return Err(format!("no scenario named {name:?} in {}", dir.display()));
    }
    Ok(found)
}

/// A shrunk failure: a scenario with an embedded plan, and the seed that makes it fail.
pub struct Shrunk {
    pub scenario: Scenario,
    pub seed: u64,
}

/// Seeds tried per shrink step: removing events shifts the network's random draws, so a step
/// is kept when the reduced plan fails on any of these seeds (the one that did is recorded).
const SHRINK_SEEDS: u64 = 4;
/// Tests per delta-debugging pass.
const SHRINK_BUDGET: usize = 2000;

/// Reduces a failing seed to a small scenario that fails the same checker:
/// 1. (exact) a G1 violation depends only on what happened before its operations completed (a
///    G7 one on what happened before its second execution), so later operations and faults are
///    cut and chaos ends right after;
/// 2. delta debugging over fault events, whole sessions, then single operations.
pub fn shrink(scenario: &Scenario, seed: u64, canary: Option<Canary>) -> Result<Shrunk, String> {
    let first = run_seed(scenario, seed, canary, false, None);
    let Some(v) = first.violations.first().cloned() else {
        return Err(format!("{} seed {seed} does not fail", scenario.name));
    };
    let checker = v.checker;
    let mut base = scenario.clone();
    let mut plan = first.plan.clone();
    let ops: Vec<&OpRecord> = v
        .ops
        .iter()
        .filter_map(|&id| first.history.op(id))
        .collect();
    let chaos_us = (scenario.phases.chaos_s * 1e6) as u64;
    let end = match checker {
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
    if let Some(t) = end.filter(|&t| t < chaos_us && !ops.iter().any(|o| o.probe)) {
        let mut cut = plan.clone();
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
        let mut short = base.clone();
        short.phases.chaos_s = (t + 1000) as f64 / 1e6;
        short.phases.settle_s = 0.5;
        short.phases.quiesce_s = 0.5;
        short.phases.probe_ops = 0;
        let again = run_seed(&short, seed, canary, false, Some(&cut));
        if again.violations.iter().any(|x| x.checker == checker) {
            base = short;
            plan = cut;
        }
    }
    let mut best = seed;
    let mut fails = |p: &Plan| {
        let tries = std::iter::once(best).chain((seed..seed + SHRINK_SEEDS).filter(|&x| x != best));
        for s in tries.collect::<Vec<_>>() {
            let r = run_seed(&base, s, canary, false, Some(p));
            if r.violations.iter().any(|x| x.checker == checker) {
                best = s;
                return true;
            }
        }
        false
    };
    let faults = ddmin(plan.faults.clone(), SHRINK_BUDGET, |f| {
        fails(&Plan {
            faults: f.to_vec(),
            ..plan.clone()
        })
    });
    plan.faults = faults;
    let keep: Vec<usize> = (0..plan.sessions.len()).collect();
    let keep = ddmin(keep, SHRINK_BUDGET, |k| {
        fails(&Plan {
            sessions: mask_sessions(&plan, k),
            ..plan.clone()
        })
    });
    plan.sessions = mask_sessions(&plan, &keep);
    let items: Vec<(usize, bool, usize)> = plan
        .sessions
        .iter()
        .enumerate()
        .flat_map(|(s, sp)| {
            (0..sp.ops.len())
                .map(move |i| (s, false, i))
                .chain((0..sp.probe.len()).map(move |i| (s, true, i)))
        })
        .collect();
    let items = ddmin(items, SHRINK_BUDGET, |o| fails(&keep_ops(&plan, o)));
    let plan = keep_ops(&plan, &items);
    // The recorded seed must fail the final plan (the last accepted step set it).
    let seed_used = best;
    let mut out = base;
    out.name = format!("{}-s{seed}", scenario.name);
    out.description = format!(
        "Shrunk from {} seed {seed}{} (fails {checker} with seed {seed_used}, {} events). {}",
        scenario.name,
        canary
            .map(|c| format!(" with canary {}", c.name()))
            .unwrap_or_default(),
        plan.size(),
        scenario.description
    );
    out.faults.events.clear();
    out.faults.kinds.clear();
    out.plan = Some(plan);
    Ok(Shrunk {
        scenario: out,
        seed: seed_used,
    })
}

/// Sessions not in `keep` issue nothing (indices stay stable for `merge_from`).
fn mask_sessions(plan: &Plan, keep: &[usize]) -> Vec<causeway_harness::SessionPlan> {
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
    use causeway_harness::plan::Fault;

    fn scenario(name: &str) -> Scenario {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        load_scenarios(&dir, name)
            .expect("scenario loads")
            .remove(0)
    }

    fn short(name: &str) -> Scenario {
        let mut s = scenario(name);
        s.phases.chaos_s = 4.0;
        s.workload.ops_per_session = 40;
        s
    }

    #[test]
    fn same_seed_same_trace_and_no_violation() {
        let s = short("partition-heal");
        let a = run_seed(&s, 3, None, false, None);
        let b = run_seed(&s, 3, None, false, None);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert!(a.history.ops.len() > 100 && !a.history.writes.is_empty());
        assert_ne!(a.trace_hash, run_seed(&s, 4, None, false, None).trace_hash);
    }

    #[test]
    fn a_joined_node_becomes_an_entry_point_and_a_replica() {
        let mut s = scenario("join-one");
        s.phases.chaos_s = 9.0;
        s.workload.ops_per_session = 100;
        let r = run_seed(&s, 2, None, false, None);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let at_new: Vec<&OpRecord> = r.history.ops.iter().filter(|o| o.node == 5).collect();
        assert!(!at_new.is_empty(), "sessions never used the joined node");
        assert!(
            at_new.iter().all(|o| o.invoked_us > 5_000_000),
            "used before its join"
        );
        assert!(
            at_new
                .iter()
                .any(|o| matches!(o.outcome, causeway_harness::Outcome::Ok(_))),
            "the joined node served nothing"
        );
        let replica_of = r
            .history
            .finals
            .values()
            .filter(|reps| reps.iter().any(|(n, _)| *n == 5))
            .count();
        assert!(
            replica_of > 0,
            "the joined node owns no key in the final view"
        );
        assert!(r.history.unsettled.is_empty(), "{:?}", r.history.unsettled);
    }

    #[test]
    fn a_force_removed_node_stays_dead_and_leaves_the_final_view() {
        let mut s = scenario("force-remove");
        s.phases.chaos_s = 9.0;
        s.workload.ops_per_session = 100;
        s.faults.kinds.clear();
        let r = run_seed(&s, 1, None, false, None);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.history.finals.values().flatten().all(|(n, _)| *n != 1));
        // From its death on, no session sends to node 1 (not even probes), and node 2, which
        // took its place in shard {0,2}, replicates keys in the final view.
        let late = r
            .history
            .ops
            .iter()
            .filter(|o| o.node == 1 && o.invoked_us >= 6_000_000);
        assert_eq!(late.count(), 0);
        // Shard {0,2} exists only in the final view; node 2 holds data there that node 0 fed it.
        let rebuilt = r.history.finals.values().filter(|reps| {
            reps.iter().map(|(n, _)| *n).collect::<Vec<_>>() == [0, 2]
                && !reps[1].1.versions().is_empty()
        });
        assert!(rebuilt.count() > 0, "node 2 holds nothing of shard {{0,2}}");
    }

    #[test]
    fn every_scheduled_view_change_is_accepted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut changes = 0;
        for mut s in load_scenarios(&dir, "all").unwrap() {
            let membership = s.faults.events.iter().any(|e| {
                matches!(
                    e.fault,
                    Fault::View { .. } | Fault::Remove { .. } | Fault::ForceRemove { .. }
                )
            });
            if !membership {
                continue;
            }
            s.phases.chaos_s = s.phases.chaos_s.min(10.0);
            s.workload.ops_per_session = 60;
            let r = run_seed(&s, 1, None, false, None);
            assert_eq!(
                r.stats.view_errors, 0,
                "{}: a view change was refused",
                s.name
            );
            changes += r.stats.view_changes;
        }
        assert!(changes >= 4, "only {changes} view changes ran");
    }

    #[test]
    fn a_node_that_never_settles_is_a_liveness_failure() {
        // rf 1: the only replica of half the partitions dies and is removed by force, so the
        // survivor awaits a handoff nobody can send.
        let s = Scenario::from_toml(
            r#"
            name = "t"
            [cluster]
            nodes = 2
            rf = 1
            [phases]
            chaos_s = 3.0
            liveness_s = 4.0
            [workload]
            sessions = 2
            keys = 8
            ops_per_session = 20
            read = 1.0
            write = 1.0
            [[faults.events]]
            at_ms = 1500
            fault = { kind = "force-remove", node = 1 }
            "#,
        )
        .unwrap();
        let r = run_seed(&s, 1, None, false, None);
        let g4: Vec<&Violation> = r
            .violations
            .iter()
            .filter(|v| v.checker == Checker::G4)
            .collect();
        assert!(
            g4.iter()
                .any(|v| v.detail.starts_with("n0 never settled") && v.detail.contains("awaits")),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn hints_are_accepted_survive_their_holders_restart_and_are_delivered() {
        let s = scenario("hints");
        assert!(s.cluster.hinted_handoff && s.expect.min_hints > 0);
        let r = run_seed(&s, 1, None, false, None);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.shortfall.is_none(), "{:?}", r.shortfall);
        let hinted = |d: &causeway::core::Dot| d.actor.hinted_partition().is_some();
        // Acknowledged hints, some of them before their holder crashed (every holder restarts
        // between 7.0 and 9.1 s; the shard returns at 11 s).
        let acked: Vec<&OpRecord> = r
            .history
            .ops
            .iter()
            .filter(|o| o.acked_dot().is_some_and(|d| hinted(&d)))
            .collect();
        assert!(r.stats.hints_accepted > 0);
        assert_eq!(acked.len() as u64, r.stats.hints_accepted);
        assert!(acked.iter().all(|o| o.blind));
        assert!(acked.iter().any(|o| o.completed_us.unwrap() < 7_000_000));
        // Delivered: after the shard returned, reads (which only its replicas serve) returned
        // hint dots, and every holder let go of them (no node retains a partition at the end).
        let read_back = r
            .history
            .ops
            .iter()
            .filter(|o| o.invoked_us > 11_000_000)
            .filter_map(|o| match &o.outcome {
                causeway_harness::Outcome::Ok(causeway::core::Response::Read {
                    versions, ..
                }) => Some(versions.iter().filter(|v| hinted(&v.dot)).count()),
                _ => None,
            })
            .sum::<usize>();
        assert!(read_back > 0, "no hint was read back from a replica");
        assert!(r.history.unsettled.is_empty(), "{:?}", r.history.unsettled);
        // The planted bug (a restarted node forgets its hints) loses acknowledged writes.
        let bad = run_seed(&s, 1, Some(Canary::ForgetHints), false, None);
        assert!(
            bad.violations.iter().any(|v| v.checker == Checker::G2),
            "{:?}",
            bad.violations
        );
    }

    #[test]
    fn a_planted_bug_is_caught() {
        let s = short("steady");
        let r = run_seed(&s, 1, Some(Canary::StaleContext), false, None);
        assert!(r.violations.iter().any(|v| v.checker == Checker::G1));
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
        assert!(plan.size() < before / 4, "{} of {before}", plan.size());
        let again = run_seed(&shrunk.scenario, shrunk.seed, None, false, None);
        assert!(!again.violations.is_empty());
        let reparsed = Scenario::from_toml(&shrunk.scenario.to_toml()).expect("round-trips");
        assert_eq!(reparsed.plan, Some(plan));
    }
}
