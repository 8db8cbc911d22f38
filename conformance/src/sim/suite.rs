//! Running many scenario files over many seeds, in parallel threads (each simulation is
//! independent and single-threaded), and the `cargo xtask sim` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use tabled::settings::Style;
use tabled::{Table, Tabled};

use crate::check::{self, Judgement};
use crate::scenario::{self, Level, Scenario, ScenarioError};

/// The workspace's root directory: requirement sources that are files are relative to it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The workspace's `scenarios/` directory.
pub fn scenarios_dir() -> PathBuf {
    workspace_root().join("scenarios")
}

/// A loaded scenario file.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    pub path: PathBuf,
    pub text: String,
    pub scenario: Scenario,
}

/// Loads every scenario under `paths` (files or directories), checking that each id matches
/// its path and that a requirement quoted from a file of this repository is in that file
/// ([`scenario::Requirement::check_against`]).
pub fn load(paths: &[PathBuf]) -> Result<Vec<ScenarioFile>, Vec<ScenarioError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match scenario::find_files(p) {
            Ok(found) => files.extend(found),
            Err(e) => errors.push(ScenarioError {
                origin: p.display().to_string(),
                message: e.to_string(),
            }),
        }
    }
    files.sort();
    files.dedup();
    // The repository files requirements are quoted from, read once each.
    let mut docs: std::collections::BTreeMap<String, std::io::Result<String>> =
        std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for path in files {
        let origin = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ScenarioError {
                    origin,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match Scenario::parse(&text, &origin) {
            Ok(s) => {
                if let Some(id) = scenario::id_from_path(&path)
                    && id != s.id
                {
                    errors.push(ScenarioError {
                        origin,
                        message: format!("id {:?} does not match the path ({id:?})", s.id),
                    });
                    continue;
                }
                if let Some(file) = s.requirement.repository_file() {
                    let doc = docs
                        .entry(file.to_string())
                        .or_insert_with(|| std::fs::read_to_string(workspace_root().join(file)));
                    let checked = match doc {
                        Ok(doc) => s.requirement.check_against(doc),
                        Err(e) => Err(format!("requirement.source {file}: {e}")),
                    };
                    if let Err(message) = checked {
                        errors.push(ScenarioError { origin, message });
                        continue;
                    }
                }
                out.push(ScenarioFile {
                    path,
                    text,
                    scenario: s,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// One seed of one scenario.
#[derive(Debug, Clone)]
pub struct SeedResult {
    pub seed: u64,
    pub judgement: Judgement,
    pub virtual_time: Duration,
    pub wall_time: Duration,
    /// The trace, kept only when asked for.
    pub trace: Option<String>,
}

/// All seeds of one scenario.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: String,
    pub level: Level,
    pub results: Vec<SeedResult>,
}

impl Report {
    pub fn pass(&self) -> bool {
        self.results.iter().all(|r| r.judgement.pass())
    }

    pub fn first_failure(&self) -> Option<&SeedResult> {
        self.results.iter().find(|r| !r.judgement.pass())
    }
}

/// Runs one scenario with one seed and judges it.
pub fn run_one(s: &Scenario, seed: u64, keep_trace: bool) -> SeedResult {
    let run = crate::sim::run(s, seed);
    let judgement = check::judge(s, &run);
    SeedResult {
        seed,
        judgement,
        virtual_time: run.virtual_time,
        wall_time: run.wall_time,
        trace: keep_trace.then(|| run.trace_text()),
    }
}

/// `f` over `items` on `threads` threads; results in input order.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let r = f(item);
                    done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    done.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// The machine's parallelism (at least 1).
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs every scenario with every seed on `threads` threads.
pub fn run_all(
    files: &[ScenarioFile],
    seeds: &[u64],
    threads: usize,
    keep_failed_traces: bool,
) -> Vec<Report> {
    let jobs: Vec<(usize, u64)> = (0..files.len())
        .flat_map(|f| seeds.iter().map(move |&s| (f, s)))
        .collect();
    let done = par_map(&jobs, threads, |&(f, seed)| {
        let mut r = run_one(&files[f].scenario, seed, keep_failed_traces);
        if r.judgement.pass() {
            r.trace = None;
        }
        r
    });
    let mut reports: Vec<Report> = files
        .iter()
        .map(|f| Report {
            id: f.scenario.id.clone(),
            level: f.scenario.level,
            results: Vec::new(),
        })
        .collect();
    for ((f, _), r) in jobs.iter().zip(done) {
        reports[*f].results.push(r);
    }
    reports
}

#[derive(Tabled)]
struct Row {
    scenario: String,
    level: String,
    verdict: String,
    seeds: String,
    #[tabled(rename = "virtual time")]
    virtual_time: String,
    #[tabled(rename = "wall time")]
    wall_time: String,
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The summary table: one row per scenario. With several seeds, the virtual time is the
/// longest and the wall time the sum.
pub fn table(reports: &[Report]) -> String {
    let rows: Vec<Row> = reports
        .iter()
        .map(|r| {
            let failed = r.results.iter().filter(|x| !x.judgement.pass()).count();
            Row {
                scenario: r.id.clone(),
                level: r.level.to_string(),
                verdict: if failed == 0 { "PASS" } else { "FAIL" }.to_string(),
                seeds: if r.results.len() == 1 {
                    format!("seed {}", r.results[0].seed)
                } else {
                    format!("{}/{} pass", r.results.len() - failed, r.results.len())
                },
                virtual_time: secs(
                    r.results
                        .iter()
                        .map(|x| x.virtual_time)
                        .max()
                        .unwrap_or_default(),
                ),
                wall_time: secs(r.results.iter().map(|x| x.wall_time).sum()),
            }
        })
        .collect();
    Table::new(rows).with(Style::rounded()).to_string()
}

const AFTER_HELP: &str = "\
Runs scenario files (default: scenarios/) in the deterministic simulator and prints a table of
scenario, verdict, virtual time and wall time. --seed N runs seed N (default 1); --seeds N runs
seeds 1..=N, checking the invariants on every one. --trace prints the trace of each failing run.
--mutants runs every [[mutant]] of the files instead, each of which must FAIL, and prints the
first reason each one failed for. Exit status 1 when a scenario fails (a mutant passes).
";

/// `cargo xtask sim`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Run scenario files in the deterministic simulator",
    after_help = AFTER_HELP,
    args_override_self = true
)]
pub struct SimArgs {
    /// Run this seed (default 1)
    #[arg(long, value_name = "N", conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run seeds 1..=N
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: Option<u64>,
    /// Scenarios run at once (default: the available cores)
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: Option<usize>,
    /// Print the trace of each failing run
    #[arg(long)]
    pub trace: bool,
    /// Run every [[mutant]] of the files instead; each must FAIL
    #[arg(long)]
    pub mutants: bool,
    /// Scenario files or directories (default: scenarios/)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `cargo xtask sim ...`: `root` is the workspace root (default paths and relative paths that
/// do not exist from the current directory are taken from there).
pub fn cli(root: &Path, args: &SimArgs) -> ExitCode {
    let mut paths: Vec<PathBuf> = args
        .paths
        .iter()
        .map(|p| {
            if p.exists() || p.is_absolute() {
                p.clone()
            } else {
                root.join(p)
            }
        })
        .collect();
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (_, Some(n)) => (1..=n).collect(),
        (Some(n), None) => vec![n],
        (None, None) => vec![crate::sim::DEFAULT_SEED],
    };
    let threads = args.threads.unwrap_or_else(threads);
    let show_trace = args.trace;
    let mutants = args.mutants;
    if paths.is_empty() {
        paths.push(root.join("scenarios"));
    }
    let files = match load(&paths) {
        Ok(f) if f.is_empty() => {
            eprintln!("xtask sim: no scenario files under {paths:?}");
            return ExitCode::from(2);
        }
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    if mutants {
        return mutants_cli(&files, threads);
    }
    let wall = std::time::Instant::now();
    let reports = run_all(&files, &seeds, threads, show_trace);
    println!("{}", table(&reports));
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.pass()).collect();
    for r in &failed {
        if let Some(f) = r.first_failure() {
            println!("\n{} FAILED with seed {}:", r.id, f.seed);
            for reason in f.judgement.reasons().iter().take(12) {
                println!("  - {reason}");
            }
            if let Some(t) = &f.trace {
                println!("  trace:\n{t}");
            }
        }
    }
    let runs: usize = reports.iter().map(|r| r.results.len()).sum();
    println!(
        "\n{} scenarios, {} runs, {} passed, {} failed, {:.1}s wall on {threads} threads",
        reports.len(),
        runs,
        reports.len() - failed.len(),
        failed.len(),
        wall.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every mutant of `files`; each must fail.
fn mutants_cli(files: &[ScenarioFile], threads: usize) -> ExitCode {
    let mut jobs = Vec::new();
    for f in files {
        for m in &f.scenario.mutants {
            match Scenario::mutated(&f.text, &f.path.display().to_string(), m) {
                Ok(s) => jobs.push((f.scenario.id.clone(), m.why.clone(), Some(s))),
                Err(e) => {
                    eprintln!("{}: mutant {:?} does not apply: {e}", f.scenario.id, m.why);
                    jobs.push((f.scenario.id.clone(), m.why.clone(), None));
                }
            }
        }
    }
    let results = par_map(&jobs, threads, |(_, _, s)| {
        s.as_ref()
            .map(|s| run_one(s, crate::sim::DEFAULT_SEED, false).judgement)
    });
    let mut survivors = 0;
    for ((id, why, _), j) in jobs.iter().zip(results) {
        match j {
            Some(j) if !j.pass() => {
                let first = j.reasons().into_iter().next().unwrap_or_default();
                println!("FAIL as required  {id}  [{why}]  {first}");
            }
            Some(_) => {
                survivors += 1;
                println!("PASSES (wrong)    {id}  [{why}]");
            }
            None => survivors += 1,
        }
    }
    println!("\n{} mutants, {survivors} did not fail", jobs.len());
    if survivors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
