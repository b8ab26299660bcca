//! `cargo sim`: every scenario over a few seeds, inside madsim. Replay one seed with
//! `SIM_SCENARIO=<name> MADSIM_TEST_SEED=<seed> MADSIM_TEST_NUM=1 cargo sim`.
#![cfg(madsim)]

use causeway_harness::scenario::Outcome;
use causeway_sim::run::{load_scenarios, run_seed};
use std::path::Path;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn scenarios_hold_on_a_few_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let name = std::env::var("SIM_SCENARIO").unwrap_or_else(|_| "all".into());
    let first = env("MADSIM_TEST_SEED", 1);
    let count = env("MADSIM_TEST_NUM", 2);
    let mut ran = 0;
    let mut failures = Vec::new();
    for s in load_scenarios(&dir, &name).expect("scenarios load") {
        let mut failed_any = false;
        for seed in first..first + count {
            let r = run_seed(&s, seed, None, false, None);
            ran += 1;
            failed_any |= !r.violations.is_empty();
            if r.failed(&s) {
                failures.push(format!(
                    "{} seed {seed}: {} (replay: ci/sweep --replay {} {seed})",
                    s.name, r.violations[0], s.name
                ));
            }
        }
        if s.expect.outcome == Outcome::Fail && !failed_any && count >= 3 {
            failures.push(format!("{}: expected to fail on some seed", s.name));
        }
    }
    assert!(ran > 0, "no seed ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
