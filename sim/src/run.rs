//! Running one seed of a scenario and judging it; sweeps, canaries and shrinking build on this.
//!
//! Under `--cfg madsim` each seed runs inside its own madsim runtime: madsim's seeded global RNG
//! is the world's only entropy and madsim's clock follows the world's simulated time. Without
//! madsim (plain `cargo test`) a seeded SplitMix64 stands in, so unit tests can run worlds too.

use crate::world::{Entropy, RunOutput, Stats, World};
use causeway::core::Canary;
use causeway_harness::plan::{Plan, generate};
use causeway_harness::scenario::{Checker, Outcome, Scenario};
use causeway_harness::{Violation, check};
use std::path::{Path, PathBuf};

/// The verdict on one seed.
pub struct SeedResult {
    pub seed: u64,
    /// Violations of enforced checkers.
    pub violations: Vec<Violation>,
    /// Violations of checkers the scenario lists as known gaps of the core.
    pub known: Vec<Violation>,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub sim_us: u64,
    pub stats: Stats,
    pub plan: Plan,
}

impl SeedResult {
    /// Whether this seed is a failure of its scenario: a violation where none is expected.
    /// (Expected-to-fail scenarios are judged over a whole sweep, see [`expected_failure_seen`].)
    pub fn failed(&self, s: &Scenario) -> bool {
        s.expect.outcome == Outcome::Pass && !self.violations.is_empty()
    }
}

/// An expected-to-fail scenario must fail on at least one of the seeds run.
pub fn expected_failure_seen(results: &[&SeedResult]) -> bool {
    results.iter().any(|r| !r.violations.is_empty())
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
    let (known, violations) = all
        .into_iter()
        .partition(|v| scenario.expect.known_gaps.contains(&v.checker));
    SeedResult {
        seed,
        violations,
        known,
        trace_hash: out.trace_hash,
        trace: out.trace,
        sim_us: out.sim_us,
        stats: out.stats,
        plan,
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

/// The checker a shrink must keep failing: the first violation's.
pub fn first_checker(r: &SeedResult) -> Option<Checker> {
    r.violations.first().map(|v| v.checker)
}

/// Reduces a failing seed's plan (fault events, then whole sessions, then single operations)
/// while the same checker keeps failing; returns the shrunk scenario.
pub fn shrink(scenario: &Scenario, seed: u64, canary: Option<Canary>) -> Result<Scenario, String> {
    let first = run_seed(scenario, seed, canary, false, None);
    let Some(checker) = first_checker(&first) else {
        return Err(format!("{} seed {seed} does not fail", scenario.name));
    };
    let fails = |p: &Plan| {
        run_seed(scenario, seed, canary, false, Some(p))
            .violations
            .iter()
            .any(|v| v.checker == checker)
    };
    let budget = 400;
    let mut plan = first.plan.clone();
    let faults = causeway_harness::shrink::ddmin(plan.faults.clone(), budget, |f| {
        fails(&Plan {
            faults: f.to_vec(),
            ..plan.clone()
        })
    });
    plan.faults = faults;
    let keep: Vec<usize> = (0..plan.sessions.len()).collect();
    let keep = causeway_harness::shrink::ddmin(keep, budget, |k| {
        fails(&Plan {
            sessions: mask_sessions(&plan, k),
            ..plan.clone()
        })
    });
    plan.sessions = mask_sessions(&plan, &keep);
    let ops: Vec<(usize, bool, usize)> = plan
        .sessions
        .iter()
        .enumerate()
        .flat_map(|(s, sp)| {
            (0..sp.ops.len())
                .map(move |i| (s, false, i))
                .chain((0..sp.probe.len()).map(move |i| (s, true, i)))
        })
        .collect();
    let ops = causeway_harness::shrink::ddmin(ops, budget, |o| fails(&keep_ops(&plan, o)));
    let plan = keep_ops(&plan, &ops);
    let mut out = scenario.clone();
    out.name = format!("{}-s{seed}", scenario.name);
    out.description = format!(
        "Shrunk from {} seed {seed}{}: fails {checker} with {} events. {}",
        scenario.name,
        canary
            .map(|c| format!(" (canary {})", c.name()))
            .unwrap_or_default(),
        plan.size(),
        scenario.description
    );
    out.faults.events.clear();
    out.faults.kinds.clear();
    out.plan = Some(plan);
    Ok(out)
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
