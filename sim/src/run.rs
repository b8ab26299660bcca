//! Running one seed of a scenario and judging it; sweeps, canaries and shrinking build on this.
//!
//! Every random decision comes from the seed's keyed streams (`causeway_harness::draws`), under
//! madsim or not: the same seed gives the same run in `cargo test` and in `ci/sweep`. Under
//! `--cfg madsim` each seed also runs inside its own madsim runtime, whose clock follows the
//! world's simulated time.

use crate::world::{RunOutput, Stats, World};
use causeway::core::Canary;
use causeway_harness::generate::generate;
use causeway_harness::plan::Plan;
use causeway_harness::scenario::{Checker, Outcome, Scenario};
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
        let out = World::new(scenario, plan, canary, seed, advance, trace).run();
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
    World::new(scenario, plan, canary, seed, |_| {}, trace).run()
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

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_harness::history::OpRecord;
    use causeway_harness::plan::Fault;
    use causeway_harness::scenario::Checker;

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
}
