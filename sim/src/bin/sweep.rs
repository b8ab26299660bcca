//! The simulator's command line (wrapped by `ci/sweep`; `ci/sweep --help` lists every flag):
//!
//! ```text
//! sweep [--scenario NAME|all] [--seeds N] [--first-seed S] [--jobs J]
//! sweep --replay NAME SEED [--trace FILE] [--canary C]
//! sweep --determinism NAME SEED
//! sweep --shrink NAME SEED [--canary C] [--out DIR]
//! sweep --shrink-canaries [--out DIR]
//! sweep --canary C [--seeds N] [--first-seed S]
//! sweep --list-canaries
//! ```
//! A sweep ends with `sweep: <seeds> seeds, <scenarios> scenarios, <failures> failures,
//! <sim_s> simulated s in <wall_s> wall s (<rate> seeds/s)` (after one line per scenario with hinted handoff on:
//! hints accepted in all and fewest in one seed, and one coverage line per scenario: how many
//! seeds reached each probe, and the probes none reached) and exits non-zero on any failure,
//! including a probe a scenario declares in `expect.sometimes` that none of at least
//! `COVERAGE_MIN_SEEDS` seeds reached. With `--jobs J`
//! the sweep runs in J worker processes (no threads: madsim forbids them) and sums their lines.
//! Wall-clock time is read only here, outside every simulation.

use causeway::core::{Canary, Probe};
use causeway_harness::scenario::{Outcome, Scenario};
use causeway_sim::run::{SeedResult, load_scenarios, run_seed};
use causeway_sim::shrink::{Shrunk, shrink};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Violations printed per failing seed; the rest are counted.
const SHOWN: usize = 4;
/// Seeds of a scenario a sweep must run before a `sometimes` probe that no seed reached fails it.
const COVERAGE_MIN_SEEDS: u64 = 100;
/// The scenario directory, relative to the repository root (where `ci/sweep` runs).
const DEFAULT_DIR: &str = "scenarios";

/// Deterministic simulation of Causeway clusters: sweeps scenarios over seeds, replays, checks
/// determinism, shrinks failures and proves that the checkers catch planted bugs (canaries).
#[derive(Parser)]
#[command(
    name = "sweep",
    bin_name = "ci/sweep",
    after_help = "Without --replay, --determinism, --shrink, --canary or \
--list-canaries: a sweep of --scenario over --seeds seeds. Every failure prints the command that \
replays it. Scenario format: scenarios/README.md."
)]
struct Args {
    /// Directory of scenario files (`*.toml`, then `regressions/*.toml`)
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Scenario to sweep (its `name`), or `all`
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Seeds per scenario (a sweep), or seeds to try (--canary)
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// First seed of a sweep or canary run
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Worker processes of a sweep (ci/sweep sets it to the CPU count)
    #[arg(long, env = "SWEEP_JOBS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    jobs: usize,
    /// Internal: this process is worker I of N of a sweep
    #[arg(long, hide = true, value_name = "I/N", value_parser = parse_worker)]
    worker: Option<(usize, usize)>,
    /// Rerun one seed of a scenario and print its verdict
    #[arg(long, num_args = 2, value_names = ["NAME", "SEED"], group = "mode")]
    replay: Option<Vec<String>>,
    /// Run one seed twice and compare the trace hashes
    #[arg(long, num_args = 2, value_names = ["NAME", "SEED"], group = "mode")]
    determinism: Option<Vec<String>>,
    /// Minimise a failing seed into a scenario file under --out
    #[arg(long, num_args = 2, value_names = ["NAME", "SEED"], group = "mode")]
    shrink: Option<Vec<String>>,
    /// Plant this bug: alone, run its scenarios until a checker catches it; with --replay or
    /// --shrink, plant it in that run
    #[arg(long, value_parser = canary_parser())]
    canary: Option<Canary>,
    /// With --replay: write the seed's event trace to FILE
    #[arg(long, value_name = "FILE", requires = "replay")]
    trace: Option<PathBuf>,
    /// Where --shrink writes its scenario (outside the scenario directory, so later sweeps do not
    /// pick it up until it is moved to `scenarios/regressions/`)
    #[arg(long, value_name = "DIR", default_value = "target/shrunk")]
    out: PathBuf,
    /// Print the name of every canary, one a line
    #[arg(long, group = "mode")]
    list_canaries: bool,
    /// For every canary: find the first seed that catches it, shrink it (writing the scenario
    /// under --out) and print one row of the shrink table (events before -> after, time)
    #[arg(long, group = "mode")]
    shrink_canaries: bool,
}

fn canary_parser() -> impl TypedValueParser<Value = Canary> {
    PossibleValuesParser::new(Canary::ALL.map(Canary::name))
        .map(|name| Canary::from_name(&name).expect("a possible value names a canary"))
}

fn parse_worker(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: expected I/N with I < N");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.parse::<usize>().map_err(|_| bad())?,
        n.parse::<usize>().map_err(|_| bad())?,
    );
    if i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// A `NAME SEED` pair of --replay, --determinism or --shrink.
fn name_seed(flag: &str, v: &Option<Vec<String>>) -> Result<Option<(String, u64)>, String> {
    let Some(v) = v else { return Ok(None) };
    let [name, seed] = v.as_slice() else {
        return Err(format!(
            "--{flag} needs a scenario and a seed: --{flag} NAME SEED"
        ));
    };
    let seed = seed
        .parse()
        .map_err(|_| format!("--{flag} {name} {seed}: the seed is not a number"))?;
    Ok(Some((name.clone(), seed)))
}

/// The command that replays `seed` of scenario `name` from scenario directory `dir`.
fn replay_cmd(dir: &Path, name: &str, seed: u64, canary: Option<Canary>) -> String {
    let d = if dir == Path::new(DEFAULT_DIR) {
        String::new()
    } else {
        format!(" --dir {}", dir.display())
    };
    let c = canary
        .map(|c| format!(" --canary {}", c.name()))
        .unwrap_or_default();
    format!("ci/sweep{d} --replay {name} {seed}{c}")
}

/// One line per violation (at most [`SHOWN`] per seed), each naming the command that replays it.
fn report(dir: &Path, s: &Scenario, r: &SeedResult, canary: Option<Canary>) -> Vec<String> {
    let tag = if s.expect.outcome == Outcome::Fail {
        "expected-fail"
    } else {
        "FAIL"
    };
    let replay = replay_cmd(dir, &s.name, r.seed, canary);
    let mut lines: Vec<String> = r
        .violations
        .iter()
        .take(SHOWN)
        .map(|v| format!("{tag} {} seed {} [{replay}]: {v}", s.name, r.seed))
        .collect();
    if let Some(why) = &r.shortfall {
        lines.push(format!("FAIL {} seed {} [{replay}]: {why}", s.name, r.seed));
    }
    lines.extend(r.known.iter().take(SHOWN).map(|v| {
        format!(
            "known-gap {} seed {} [{replay}]: {v} ({})",
            s.name, r.seed, s.expect.reason
        )
    }));
    let more = r.violations.len().saturating_sub(SHOWN) + r.known.len().saturating_sub(SHOWN);
    if more > 0 {
        lines.push(format!(
            "  … {more} more violations on {} seed {}",
            s.name, r.seed
        ));
    }
    lines
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_canaries {
        for c in Canary::ALL {
            println!("{}", c.name());
        }
        return ExitCode::SUCCESS;
    }
    if !cfg!(madsim) {
        eprintln!("sweep: built without --cfg madsim; run it through ci/sweep or `cargo sim`");
        return ExitCode::from(2);
    }
    match dispatch(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sweep: {e}");
            ExitCode::from(2)
        }
    }
}

fn one(args: &Args, name: &str) -> Result<Scenario, String> {
    let mut v = load_scenarios(&args.dir, name)?;
    Ok(v.remove(0))
}

fn dispatch(args: &Args) -> Result<bool, String> {
    if let Some((name, seed)) = &name_seed("replay", &args.replay)? {
        let s = one(args, name)?;
        let r = run_seed(&s, *seed, args.canary, args.trace.is_some(), None);
        if let Some(path) = &args.trace {
            let mut text = r.trace.join("\n");
            text.push('\n');
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!(
                "trace: {} lines written to {}",
                r.trace.len(),
                path.display()
            );
        }
        for l in report(&args.dir, &s, &r, args.canary) {
            println!("{l}");
        }
        println!(
            "replay {name} seed {seed}: trace hash {:016x}, {} violations, {} known gaps, {:.1} simulated s, {} messages, {} view changes ({} refused), {} hints accepted",
            r.trace_hash,
            r.violations.len(),
            r.known.len(),
            r.sim_us as f64 / 1e6,
            r.stats.messages,
            r.stats.view_changes,
            r.stats.view_errors,
            r.stats.hints_accepted
        );
        return Ok(!r.failed(&s));
    }
    if let Some((name, seed)) = &name_seed("determinism", &args.determinism)? {
        let s = one(args, name)?;
        let a = run_seed(&s, *seed, args.canary, false, None);
        let b = run_seed(&s, *seed, args.canary, false, None);
        let same = a.trace_hash == b.trace_hash;
        println!(
            "determinism {name} seed {seed}: {:016x} vs {:016x}: {}",
            a.trace_hash,
            b.trace_hash,
            if same { "match" } else { "MISMATCH" }
        );
        return Ok(same);
    }
    if let Some((name, seed)) = &name_seed("shrink", &args.shrink)? {
        let s = one(args, name)?;
        let started = Instant::now();
        let out = shrink(&s, *seed, args.canary)?;
        let path = save_shrunk(args, &out)?;
        println!(
            "shrunk {name} seed {seed} from {} to {} events in {:.1} s ({} runs; {}): {}",
            out.before,
            out.after,
            started.elapsed().as_secs_f64(),
            out.tests,
            out.anomaly,
            path.display()
        );
        println!(
            "  replay: {}",
            replay_cmd(&args.out, &out.scenario.name, out.seed, args.canary)
        );
        println!(
            "  to keep it as a regression test, move it to {}/regressions/ (every sweep runs those)",
            args.dir.display()
        );
        return Ok(true);
    }
    if args.shrink_canaries {
        return shrink_canaries(args);
    }
    if let Some(c) = args.canary {
        return canary(args, c);
    }
    sweep(args)
}

/// The first (seed, scenario) of the scenarios designed for canary `c` on which a checker catches
/// it, with the first violation; `Err` when no scenario lists the canary.
fn catch(args: &Args, c: Canary) -> Result<Option<(Scenario, u64, String)>, String> {
    let all = load_scenarios(&args.dir, "all")?;
    let tagged: Vec<Scenario> = all
        .into_iter()
        .filter(|s| s.expect.canaries.iter().any(|n| n == c.name()))
        .collect();
    if tagged.is_empty() {
        return Err(format!("no scenario lists canary {}", c.name()));
    }
    for seed in args.first_seed..args.first_seed + args.seeds {
        for s in &tagged {
            let r = run_seed(s, seed, Some(c), false, None);
            if let Some(v) = r.violations.first() {
                return Ok(Some((s.clone(), seed, v.to_string())));
            }
        }
    }
    println!(
        "canary {}: NOT caught in {} seeds of {:?}",
        c.name(),
        args.seeds,
        tagged.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    Ok(None)
}

/// Runs seeds of the scenarios designed for canary `c` until a checker catches it.
fn canary(args: &Args, c: Canary) -> Result<bool, String> {
    let Some((s, seed, v)) = catch(args, c)? else {
        return Ok(false);
    };
    println!("canary {}: caught on {} seed {seed}: {v}", c.name(), s.name);
    println!(
        "  replay: {}",
        replay_cmd(&args.dir, &s.name, seed, Some(c))
    );
    Ok(true)
}

/// Writes a shrunk scenario under --out; returns its path.
fn save_shrunk(args: &Args, out: &Shrunk) -> Result<PathBuf, String> {
    let dir = &args.out;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.toml", out.scenario.name));
    std::fs::write(&path, out.scenario.to_toml())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The shrink table: every canary's first catching seed, shrunk; false if one is not caught or
/// its shrunk scenario no longer fails.
fn shrink_canaries(args: &Args) -> Result<bool, String> {
    let mut ok = true;
    for c in Canary::ALL {
        let Some((s, seed, _)) = catch(args, c)? else {
            ok = false;
            continue;
        };
        let started = Instant::now();
        let out = shrink(&s, seed, Some(c))?;
        let secs = started.elapsed().as_secs_f64();
        let replays = !run_seed(&out.scenario, out.seed, Some(c), false, None)
            .violations
            .is_empty();
        let passes = run_seed(&out.scenario, out.seed, None, false, None)
            .violations
            .is_empty();
        ok &= replays;
        let path = save_shrunk(args, &out)?;
        println!(
            "shrink-table {:<30} {:<16} seed {seed:<4} {:>4} -> {:<3} events {:>6.1} s {:>5} runs  {}{}{}  {}",
            c.name(),
            s.name,
            out.before,
            out.after,
            secs,
            out.tests,
            out.anomaly,
            if replays { "" } else { "  [DOES NOT REPLAY]" },
            if passes {
                ""
            } else {
                "  [FAILS WITHOUT THE CANARY]"
            },
            path.display()
        );
    }
    Ok(ok)
}

/// Totals over (part of) a sweep.
#[derive(Default)]
struct Totals {
    seeds: u64,
    failures: u64,
    sim_us: u64,
    /// Per expected-to-fail scenario: whether some seed failed.
    xfail: BTreeMap<String, bool>,
    /// Per scenario: the first seed with expected or known-gap violations, and how many seeds had
    /// them. Only the first seed's lines are printed; the rest are counted.
    quiet: BTreeMap<String, (u64, BTreeSet<u64>)>,
    /// Per scenario whose nodes accepted hints: seeds, hints in all, fewest in one seed.
    hints: BTreeMap<String, (u64, u64, u64)>,
    /// Per scenario: seeds run, and per probe the seeds that reached it.
    coverage: BTreeMap<String, (u64, BTreeMap<Probe, u64>)>,
}

impl Totals {
    fn hints(&mut self, s: &Scenario, n: u64) {
        if s.cluster.hinted_handoff {
            let e = self.hints.entry(s.name.clone()).or_insert((0, 0, u64::MAX));
            *e = (e.0 + 1, e.1 + n, e.2.min(n));
        }
    }

    fn coverage(&mut self, scenario: &str, reached: impl IntoIterator<Item = Probe>) {
        let e = self.coverage.entry(scenario.to_string()).or_default();
        e.0 += 1;
        for p in reached {
            *e.1.entry(p).or_default() += 1;
        }
    }

    /// An expected-failure or known-gap line: printed for one seed per scenario, else counted.
    fn quiet(&mut self, scenario: &str, seed: u64, line: &str) {
        let e = self
            .quiet
            .entry(scenario.to_string())
            .or_insert((seed, BTreeSet::new()));
        e.1.insert(seed);
        if e.0 == seed {
            println!("{line}");
        }
    }
}

fn sweep(args: &Args) -> Result<bool, String> {
    let scenarios = load_scenarios(&args.dir, &args.scenario)?;
    let wall = Instant::now();
    let mut t = Totals::default();
    if args.jobs > 1 && args.worker.is_none() {
        run_workers(args, &scenarios, &mut t)?;
    } else {
        let (me, of) = args.worker.unwrap_or((0, 1));
        let out = std::io::stdout();
        let mut out = out.lock();
        let mut k = 0usize;
        for seed in args.first_seed..args.first_seed + args.seeds {
            for s in &scenarios {
                k += 1;
                if (k - 1) % of != me {
                    continue;
                }
                let r = run_seed(s, seed, None, false, None);
                let failed = r.failed(s);
                let quiet = !failed;
                for l in report(&args.dir, s, &r, None) {
                    if args.worker.is_some() && quiet {
                        writeln!(out, "@quiet {} {seed} {l}", s.name).map_err(|e| e.to_string())?;
                    } else if quiet {
                        t.quiet(&s.name, seed, &l);
                    } else {
                        writeln!(out, "{l}").map_err(|e| e.to_string())?;
                    }
                }
                if args.worker.is_some() {
                    let xf = s.expect.outcome == Outcome::Fail;
                    let reached: Vec<&str> = r.stats.probes.iter().map(|(p, _)| p.name()).collect();
                    writeln!(
                        out,
                        "@seed {} {} {} {} {} {} {}",
                        s.name,
                        u8::from(failed),
                        r.sim_us,
                        u8::from(xf),
                        u8::from(!r.violations.is_empty()),
                        r.stats.hints_accepted,
                        if reached.is_empty() {
                            "-".to_string()
                        } else {
                            reached.join(",")
                        }
                    )
                    .map_err(|e| e.to_string())?;
                }
                t.seeds += 1;
                t.failures += u64::from(failed);
                t.sim_us += r.sim_us;
                t.hints(s, r.stats.hints_accepted);
                t.coverage(&s.name, r.stats.probes.iter().map(|(p, _)| p));
                if s.expect.outcome == Outcome::Fail {
                    *t.xfail.entry(s.name.clone()).or_default() |= !r.violations.is_empty();
                }
            }
        }
        if args.worker.is_some() {
            return Ok(t.failures == 0);
        }
    }
    for (name, (_, seeds)) in &t.quiet {
        if seeds.len() > 1 {
            println!(
                "  ({name}: expected or known-gap violations on {} seeds in all)",
                seeds.len()
            );
        }
    }
    for (name, (seeds, all, fewest)) in &t.hints {
        println!(
            "  ({name}: {all} writes accepted as hints over {seeds} seeds, fewest in one seed {fewest})"
        );
    }
    for s in &scenarios {
        let Some((seeds, reached)) = t.coverage.get(&s.name) else {
            continue;
        };
        let hit: Vec<String> = reached.iter().map(|(p, n)| format!("{p} {n}")).collect();
        let never: Vec<&str> = Probe::ALL
            .iter()
            .filter(|p| !reached.contains_key(p))
            .map(|p| p.name())
            .collect();
        println!(
            "  coverage {} ({seeds} seeds): {}; never: {}",
            s.name,
            hit.join(", "),
            if never.is_empty() {
                "-".to_string()
            } else {
                never.join(", ")
            }
        );
        for p in &s.expect.sometimes {
            if !reached.contains_key(p) && *seeds >= COVERAGE_MIN_SEEDS {
                println!(
                    "FAIL {}: expect.sometimes names {p}, which none of its {seeds} seeds reached",
                    s.name
                );
                t.failures += 1;
            }
        }
    }
    for (name, seen) in &t.xfail {
        if !seen {
            println!("FAIL {name}: expected to fail, but no seed of this sweep failed");
            t.failures += 1;
        }
    }
    let wall_s = wall.elapsed().as_secs_f64();
    println!(
        "sweep: {} seeds, {} scenarios, {} failures, {:.1} simulated s in {:.1} wall s ({:.1} seeds/s)",
        t.seeds,
        scenarios.len(),
        t.failures,
        t.sim_us as f64 / 1e6,
        wall_s,
        t.seeds as f64 / wall_s.max(1e-9)
    );
    Ok(t.failures == 0)
}

fn run_workers(args: &Args, scenarios: &[Scenario], t: &mut Totals) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let children: Vec<_> = (0..args.jobs)
        .map(|i| {
            Command::new(&exe)
                .args(std::env::args().skip(1))
                .arg("--worker")
                .arg(format!("{i}/{}", args.jobs))
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("@quiet ") {
                let mut f = rest.splitn(3, ' ');
                let (Some(name), Some(seed), Some(text)) = (f.next(), f.next(), f.next()) else {
                    return Err(format!("bad worker line {line:?}"));
                };
                t.quiet(
                    name,
                    seed.parse()
                        .map_err(|_| format!("bad worker line {line:?}"))?,
                    text,
                );
                continue;
            }
            let Some(rest) = line.strip_prefix("@seed ") else {
                println!("{line}");
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let [name, failed, sim_us, xf, violated, hints, probes] = f[..] else {
                return Err(format!("bad worker line {line:?}"));
            };
            let reached = probes
                .split(',')
                .filter(|p| *p != "-")
                .map(|p| Probe::parse(p).ok_or_else(|| format!("bad worker line {line:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            t.coverage(name, reached);
            if let Some(s) = scenarios.iter().find(|s| s.name == name) {
                t.hints(
                    s,
                    hints
                        .parse()
                        .map_err(|_| format!("bad worker line {line:?}"))?,
                );
            }
            t.seeds += 1;
            t.failures += u64::from(failed == "1");
            t.sim_us += sim_us.parse::<u64>().map_err(|e| e.to_string())?;
            if xf == "1" {
                *t.xfail.entry(name.to_string()).or_default() |= violated == "1";
            }
        }
        if !out.status.success() && out.status.code() != Some(1) {
            return Err(format!("a worker died: {}", out.status));
        }
    }
    Ok(())
}
