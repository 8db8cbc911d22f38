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
use crate::home::{Home, Source};
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

/// Loads every scenario under `paths` (files or directories) of this checkout, checking that
/// each id matches its path and that a requirement quoted from a file of this repository is
/// in that file ([`scenario::Requirement::check_against`]).
pub fn load(paths: &[PathBuf]) -> Result<Vec<ScenarioFile>, Vec<ScenarioError>> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match crate::home::read_path_sources(p) {
            Ok(found) => sources.extend(found),
            Err(message) => errors.push(ScenarioError {
                origin: p.display().to_string(),
                message,
            }),
        }
    }
    let loaded = load_sources(sources, &Home::workspace());
    match (loaded, errors.is_empty()) {
        (Ok(files), true) => Ok(files),
        (Ok(_), false) => Err(errors),
        (Err(more), _) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Parses and checks scenario texts: the id each must carry, no id twice, and a requirement
/// that quotes a document of the repository ([`Home::doc`]) is in it. Sorted by path.
pub fn load_sources(
    mut sources: Vec<Source>,
    home: &Home,
) -> Result<Vec<ScenarioFile>, Vec<ScenarioError>> {
    sources.sort();
    sources.dedup();
    let mut errors = Vec::new();
    // The documents requirements are quoted from, read once each.
    let mut docs: std::collections::BTreeMap<String, Option<Result<String, String>>> =
        std::collections::BTreeMap::new();
    let mut out: Vec<ScenarioFile> = Vec::new();
    for src in sources {
        let origin = src.origin();
        match Scenario::parse(&src.text, &origin) {
            Ok(s) => {
                if let Some(id) = &src.id
                    && *id != s.id
                {
                    errors.push(ScenarioError {
                        origin,
                        message: format!("id {:?} does not match the path ({id:?})", s.id),
                    });
                    continue;
                }
                if let Some(other) = out.iter().find(|f| f.scenario.id == s.id) {
                    errors.push(ScenarioError {
                        origin,
                        message: format!(
                            "id {:?} is also the id of {}: ids must be unique",
                            s.id,
                            other.path.display()
                        ),
                    });
                    continue;
                }
                if let Some(file) = s.requirement.repository_file() {
                    let doc = docs
                        .entry(file.to_string())
                        .or_insert_with(|| home.doc(file));
                    let checked = match doc {
                        Some(Ok(doc)) => s.requirement.check_against(doc),
                        Some(Err(e)) => Err(format!("requirement.source {file}: {e}")),
                        None if scenario::Requirement::names_reference_doc(file) => Err(format!(
                            "requirement.source {file:?} names no document of the suite \
                             (those are docs/reference/*.md and scenarios/README.md); \
                             another document is cited in free text, e.g. \"RFC 9110\""
                        )),
                        None => Ok(()),
                    };
                    if let Err(message) = checked {
                        errors.push(ScenarioError { origin, message });
                        continue;
                    }
                }
                out.push(ScenarioFile {
                    path: src.path,
                    text: src.text,
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

/// The scenarios a command line picks. `selectors` are files or directories on disk (relative
/// to the current directory, else to `home`'s base), or ids and areas of the built-in and
/// added scenarios (`security`, `cgi/meta-variables`, `scenarios/security`); none picks every
/// built-in scenario (those of `default_areas` only, when given) and every added one. `added`
/// are directories (or files) of the user's own scenarios (`--scenarios DIR`), their ids the
/// paths below the directory.
pub fn select(
    home: &Home,
    selectors: &[PathBuf],
    added: &[PathBuf],
    default_areas: Option<&[&str]>,
) -> Result<Vec<ScenarioFile>, Vec<String>> {
    let base = home.base();
    let on_disk = |p: &Path| -> Option<PathBuf> {
        if p.exists() {
            Some(p.to_path_buf())
        } else {
            let q = base.join(p);
            q.exists().then_some(q)
        }
    };
    let mut errors = Vec::new();
    let mut extra = Vec::new();
    for dir in added {
        match on_disk(dir) {
            Some(d) => match crate::home::read_dir_sources(&d) {
                Ok(found) => extra.extend(found),
                Err(e) => errors.push(e),
            },
            None => errors.push(format!("--scenarios {}: no such directory", dir.display())),
        }
    }
    let builtin = || home.builtin();
    let mut sources = Vec::new();
    if selectors.is_empty() {
        match builtin() {
            Ok(all) => sources.extend(all.into_iter().filter(|s| {
                default_areas.is_none_or(|areas| {
                    s.id.as_deref()
                        .is_some_and(|id| areas.iter().any(|a| crate::home::selects(a, id)))
                })
            })),
            Err(e) => {
                if extra.is_empty() {
                    errors.push(e);
                }
            }
        }
        sources.extend(extra);
    } else {
        let mut pool: Option<Vec<Source>> = None;
        for sel in selectors {
            if let Some(p) = on_disk(sel) {
                match crate::home::read_path_sources(&p) {
                    Ok(found) => sources.extend(found),
                    Err(e) => errors.push(e),
                }
                continue;
            }
            let pool = pool.get_or_insert_with(|| {
                let mut all = builtin().unwrap_or_default();
                all.extend(extra.iter().cloned());
                all
            });
            let text = sel.to_string_lossy();
            let picked: Vec<Source> = pool
                .iter()
                .filter(|s| {
                    s.id.as_deref()
                        .is_some_and(|id| crate::home::selects(&text, id))
                })
                .cloned()
                .collect();
            if picked.is_empty() {
                errors.push(format!(
                    "{text}: no such file, and no scenario id or area of that name (`{} explain` \
                     with no id lists them)",
                    home.command()
                ));
            }
            sources.extend(picked);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    load_sources(sources, home).map_err(|es| es.iter().map(ToString::to_string).collect())
}

/// `files` at the given levels only (all when none are given).
pub fn at_levels(mut files: Vec<ScenarioFile>, levels: &[Level]) -> Vec<ScenarioFile> {
    if !levels.is_empty() {
        files.retain(|f| levels.contains(&f.scenario.level));
    }
    files
}

/// Parses a `--level` value: `must`, `should`, `compat`, `info` (any case).
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s.trim().to_ascii_uppercase().as_str() {
        "MUST" => Ok(Level::Must),
        "SHOULD" => Ok(Level::Should),
        "COMPAT" => Ok(Level::Compat),
        "INFO" => Ok(Level::Info),
        _ => Err("must, should, compat or info".into()),
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
Runs scenarios (default: every built-in one, and those added with --scenarios DIR) in the
deterministic simulator, in front of fcgi-proxy (built in), and prints a table of scenario,
level, verdict, virtual time and wall time. A PATH is a scenario file or directory, or the id
or area of a scenario (security, cgi/meta-variables). --seed N runs seed N (default 1); --seeds
N runs seeds 1..=N, checking the invariants on every one. --trace prints the trace of each
failing run. --mutants runs every [[mutant]] of the files instead, each of which must FAIL, and
prints the first reason each one failed for. Exit status 1 when a scenario fails (a mutant
passes), 2 when the scenarios do not load.
";

/// `sim`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Run scenarios in the deterministic simulator (in front of fcgi-proxy)",
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
    /// Only scenarios of these levels (must, should, compat, info; comma-separated)
    #[arg(long, value_name = "LEVEL[,LEVEL...]", value_delimiter = ',', value_parser = parse_level)]
    pub level: Vec<Level>,
    /// Also run the scenario files under DIR (ids: their paths below DIR)
    #[arg(long = "scenarios", value_name = "DIR")]
    pub scenarios: Vec<PathBuf>,
    /// Scenario files or directories, or scenario ids or areas (default: all)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `sim ...`: scenarios from `home` (and the paths given).
pub fn cli(home: &Home, args: &SimArgs) -> ExitCode {
    let seeds: Vec<u64> = match (args.seed, args.seeds) {
        (_, Some(n)) => (1..=n).collect(),
        (Some(n), None) => vec![n],
        (None, None) => vec![crate::sim::DEFAULT_SEED],
    };
    let threads = args.threads.unwrap_or_else(threads);
    let show_trace = args.trace;
    let mutants = args.mutants;
    let files = match select(home, &args.paths, &args.scenarios, None) {
        Ok(f) => at_levels(f, &args.level),
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    if files.is_empty() {
        eprintln!("sim: no scenario to run");
        return ExitCode::from(2);
    }
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
