//! Differential conformance: generated requests through a real Apache httpd (the oracle) and
//! every other target at once, each in front of its own `fcgi-mock`, compared on the status, the
//! CGI params and STDIN each backend received, after the documented normalisations
//! ([`compare::IDENTITY_PARAMS`]).
//!
//! Cases come from proptest strategies ([`gen`]) seeded by `--seed`; they are grouped by route
//! configuration, and each target process is started once per configuration. A disagreement
//! that no `scenarios/expected/differ-<target>.toml` entry accepts is shrunk against the still
//! running processes (each step keeps the same kind of disagreement) and written as a scenario
//! file ([`found`]). Reports: the terminal, `target/differ/report.md` and `report.json`.

pub mod cases;
pub mod compare;
pub mod found;
pub mod harness;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::home::Home;
use crate::real::{RealOptions, Target};
use crate::scenario::Scenario;
use cases::{Area, Case, RouteConfig};
use compare::{Diff, KnownList};
use harness::{Obs, Session};

/// Arguments of `differ` (`cargo xtask differ`, `fcgi-conformance differ`).
#[derive(Debug, Clone, Args)]
pub struct DifferArgs {
    /// The oracle every target is compared with.
    #[arg(long, default_value = "apache", value_parser = parse_target)]
    pub against: Target,
    /// Targets compared with the oracle, comma-separated, or `all` (every target but the
    /// oracle).
    #[arg(long, default_value = "ours", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// How many generated requests.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub cases: u64,
    /// The seed of the generated route configurations and requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What varies: request paths and queries, headers, bodies, route configurations, or all.
    #[arg(long, value_enum, default_value_t = Area::All)]
    pub area: Area,
    /// Requests in flight per target at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=32))]
    pub lanes: u64,
    /// Disagreements shrunk and written per target (one per kind, first found first).
    #[arg(long, default_value_t = 15)]
    pub max_found: usize,
    /// The longest shrinking one disagreement may take, in seconds (a target that never
    /// answers costs a whole exchange timeout per try).
    #[arg(long, default_value_t = 15)]
    pub shrink_seconds: u64,
    /// Where the reports go (default: target/differ).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the scenario files of disagreements go (default: scenarios/found; `-`: none).
    #[arg(long)]
    pub found: Option<PathBuf>,
    /// The known differences (default: scenarios/expected; files differ-<target>.toml).
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// The fcgi-proxy binary (default: target/debug/fcgi-proxy in a checkout).
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse(s)
        .filter(|t| *t != Target::External)
        .ok_or_else(|| format!("unknown target {s:?}"))
}

impl DifferArgs {
    /// The targets compared with the oracle, in the suite's order.
    pub fn target_list(&self) -> Result<Vec<Target>, String> {
        let mut out = Vec::new();
        for name in &self.targets {
            let add: Vec<Target> = if name == "all" {
                Target::ALL.to_vec()
            } else {
                vec![parse_target(name)?]
            };
            for t in add {
                if t != self.against && !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out.sort();
        if out.is_empty() {
            return Err("no target to compare with the oracle".into());
        }
        Ok(out)
    }
}

/// One disagreement of one target on one case.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub target: String,
    pub route: String,
    pub case: usize,
    pub request: String,
    pub diff: Diff,
    /// The reason from the known list when accepted.
    pub accepted: Option<String>,
}

/// A disagreement shrunk to a minimal request, and its scenario file.
#[derive(Debug, Clone, Serialize)]
pub struct Shrunk {
    pub target: String,
    pub kind: String,
    pub route: String,
    pub from_case: usize,
    pub request: String,
    pub oracle: String,
    pub behaviour: String,
    pub steps: usize,
    pub scenario: Option<String>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub oracle: String,
    pub targets: Vec<String>,
    pub seed: u64,
    pub area: Area,
    pub cases: usize,
    pub routes: Vec<String>,
    /// Cases run per target (cases on routes it cannot express are not).
    pub run: BTreeMap<String, usize>,
    /// Why a target skipped a route configuration or all of them.
    pub skipped: Vec<(String, String, String)>,
    pub findings: Vec<Finding>,
    pub shrunk: Vec<Shrunk>,
    pub seconds: f64,
}

impl Outcome {
    /// Disagreements no known list accepts.
    pub fn unexplained(&self, target: &str) -> usize {
        self.findings
            .iter()
            .filter(|f| f.target == target && f.accepted.is_none())
            .count()
    }
}

/// The scenario text of a route configuration (no expectations: the differential run reads
/// observations directly).
pub fn route_scenario(route: &RouteConfig) -> Result<Scenario, String> {
    let text = format!(
        "id = \"differ/{}\"\ndescription = \"differential run\"\nlevel = \"INFO\"\n\
         [requirement]\nquote = \"-\"\nsource = \"differential run\"\nsection = \"-\"\n\n{}\n\
         [[client]]\nname = \"c1\"\n[[client.request]]\ntarget = \"/app/x.php\"\n\n[expect]\n",
        route.name(),
        route.topology_toml()
    );
    Scenario::parse(&text, &route.name()).map_err(|e| e.to_string())
}

/// Where the known differences of each target are read from.
#[derive(Debug, Clone)]
pub enum KnownSource {
    /// `differ-<target>.toml` files in a directory.
    Dir(PathBuf),
    /// The `scenarios/expected` files built into the program (file name, text).
    BuiltIn(&'static [(&'static str, &'static str)]),
}

impl KnownSource {
    /// The known differences of `target` (none when it has no list).
    pub fn load(&self, target: &str) -> Result<KnownList, String> {
        match self {
            KnownSource::Dir(dir) => KnownList::load(dir, target),
            KnownSource::BuiltIn(files) => {
                let file = format!("differ-{target}.toml");
                match files.iter().find(|(name, _)| *name == file) {
                    Some((_, text)) => {
                        let origin = format!("scenarios/expected/{file} (built in)");
                        let mut list = KnownList::parse(text, &origin)?;
                        list.file = Some(origin);
                        Ok(list)
                    }
                    None => Ok(KnownList::default()),
                }
            }
        }
    }
}

/// Files and options of a run.
#[derive(Debug)]
pub struct Setup {
    pub opts: RealOptions,
    /// Where the known differences come from: `--expected DIR`, else the checkout's
    /// `scenarios/expected`, or the copies built into an installed program.
    pub expected: KnownSource,
    pub found_dir: Option<PathBuf>,
    pub out_dir: PathBuf,
}

impl Setup {
    /// The defaults for a checkout at `root` (or the current directory for an installed
    /// program), with the arguments' overrides.
    pub fn new(home: &Home, args: &DifferArgs) -> Setup {
        let root = match home {
            Home::Repo(r) => r.clone(),
            Home::Installed(_) => PathBuf::from("."),
        };
        let proxy_bin = args.proxy_bin.clone().unwrap_or_else(|| match home {
            Home::Repo(r) => r.join("target/debug/fcgi-proxy"),
            Home::Installed(_) => PathBuf::from("fcgi-proxy"),
        });
        Setup {
            opts: RealOptions {
                proxy_bin,
                external: None,
                keep: None,
                backend: Default::default(),
            },
            expected: match (&args.expected, home) {
                (Some(dir), _) => KnownSource::Dir(dir.clone()),
                (None, Home::Repo(r)) => KnownSource::Dir(r.join("scenarios/expected")),
                (None, Home::Installed(e)) => KnownSource::BuiltIn(e.expected),
            },
            found_dir: match &args.found {
                Some(p) if p == Path::new("-") => None,
                Some(p) => Some(p.clone()),
                None => Some(root.join("scenarios/found")),
            },
            out_dir: args
                .out
                .clone()
                .unwrap_or_else(|| root.join("target/differ")),
        }
    }
}

/// `differ`: runs, reports, exits 1 when a disagreement is unexplained (2: the run could not be
/// made).
pub fn cli(home: &Home, args: &DifferArgs) -> ExitCode {
    let setup = Setup::new(home, args);
    match run(args, &setup) {
        Err(e) => {
            eprintln!("differ: {e}");
            ExitCode::from(2)
        }
        Ok(o) => {
            print!("{}", report::terminal(&o));
            if let Err(e) = report::write(&o, &setup.out_dir) {
                eprintln!("differ: {e}");
                return ExitCode::from(2);
            }
            println!(
                "reports: {} and report.json",
                setup.out_dir.join("report.md").display()
            );
            if o.targets.iter().any(|t| o.unexplained(t) > 0) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Runs the cases of `args` and returns what they showed (scenario files of shrunk
/// disagreements are written on the way).
pub fn run(args: &DifferArgs, setup: &Setup) -> Result<Outcome, String> {
    let started = Instant::now();
    let targets = args.target_list()?;
    let oracle = args.against;
    if let Some(why) = oracle.unavailable(&setup.opts) {
        return Err(format!("the oracle {}: {why}", oracle.name()));
    }
    let mut known = BTreeMap::new();
    for t in &targets {
        known.insert(*t, setup.expected.load(t.name())?);
    }
    let (routes, all_cases) = cases::generate(args.seed, args.cases as usize, args.area);
    for list in known.values_mut() {
        list.routes = routes.clone();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut out = Outcome {
        oracle: oracle.name().into(),
        targets: targets.iter().map(|t| t.name().to_string()).collect(),
        seed: args.seed,
        area: args.area,
        cases: all_cases.len(),
        routes: routes.iter().map(RouteConfig::name).collect(),
        run: targets.iter().map(|t| (t.name().to_string(), 0)).collect(),
        skipped: Vec::new(),
        findings: Vec::new(),
        shrunk: Vec::new(),
        seconds: 0.0,
    };
    let mut present = Vec::new();
    for t in &targets {
        match t.unavailable(&setup.opts) {
            Some(why) => out
                .skipped
                .push((t.name().into(), "every route".into(), why)),
            None => present.push(*t),
        }
    }
    // Kinds already shrunk, per target: one scenario per kind.
    let mut shrunk_kinds: BTreeMap<Target, Vec<String>> = BTreeMap::new();
    for (ri, route) in routes.iter().enumerate() {
        let s = route_scenario(route)?;
        let group: Vec<(usize, Case)> = all_cases
            .iter()
            .enumerate()
            .filter(|(_, (r, _))| *r == ri)
            .map(|(i, (_, c))| (i, c.clone()))
            .collect();
        let mut runnable = Vec::new();
        for t in &present {
            match t.cannot_express(&s) {
                Some(why) => out.skipped.push((t.name().into(), route.name(), why)),
                None => runnable.push(*t),
            }
        }
        if runnable.is_empty() || group.is_empty() {
            continue;
        }
        eprintln!(
            "differ: route {} ({} cases): {} and {}",
            route.name(),
            group.len(),
            oracle.name(),
            runnable
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        rt.block_on(run_group(
            args,
            setup,
            oracle,
            &runnable,
            route,
            &s,
            &group,
            &known,
            &mut shrunk_kinds,
            &mut out,
        ))?;
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn run_group(
    args: &DifferArgs,
    setup: &Setup,
    oracle: Target,
    targets: &[Target],
    route: &RouteConfig,
    s: &Scenario,
    group: &[(usize, Case)],
    known: &BTreeMap<Target, KnownList>,
    shrunk_kinds: &mut BTreeMap<Target, Vec<String>>,
    out: &mut Outcome,
) -> Result<(), String> {
    // The oracle first, then the targets; a target that does not start is reported, the
    // oracle not starting ends the run.
    let mut sessions: Vec<Session> = vec![Session::start(s, oracle, &setup.opts).await?];
    let mut started = Vec::new();
    for t in targets {
        match Session::start(s, *t, &setup.opts).await {
            Ok(x) => {
                sessions.push(x);
                started.push(*t);
            }
            Err(e) => {
                out.skipped
                    .push((t.name().into(), route.name(), format!("did not start: {e}")))
            }
        }
    }
    let sessions = Arc::new(sessions);
    let cases = Arc::new(group.to_vec());
    let results: Arc<Mutex<Vec<Vec<Option<Obs>>>>> =
        Arc::new(Mutex::new(vec![vec![None; group.len()]; sessions.len()]));
    let lanes = args.lanes as usize;
    let lanes_started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for si in 0..sessions.len() {
        for lane in 0..lanes {
            let (sessions, cases, results) = (sessions.clone(), cases.clone(), results.clone());
            tasks.spawn(async move {
                for (k, (i, case)) in cases.iter().enumerate().skip(lane).step_by(lanes) {
                    let o = sessions[si].exchange(case, &format!("d{i}")).await;
                    results.lock().unwrap_or_else(|e| e.into_inner())[si][k] = Some(o);
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| format!("a lane failed: {e}"))?;
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let ran = lanes_started.elapsed();
    let rname = route.name();
    // Per session index: the disagreements to shrink, in case order.
    let mut to_shrink: Vec<(usize, Target, usize, Diff)> = Vec::new();
    for (ti, t) in started.iter().enumerate() {
        let si = ti + 1;
        if let Some(how) = sessions[si].exited() {
            out.skipped.push((
                t.name().into(),
                rname.clone(),
                format!("exited during the run ({how}); its cases are not compared"),
            ));
            continue;
        }
        *out.run.entry(t.name().into()).or_default() += group.len();
        let list = &known[t];
        for (k, (i, case)) in group.iter().enumerate() {
            let (Some(a), Some(b)) = (&results[0][k], &results[si][k]) else {
                continue;
            };
            for d in compare::diff(a, b) {
                let reached = a.backend.is_some() || b.backend.is_some();
                let accepted = list.accepts(&d, case, &rname, reached).map(str::to_string);
                let done = shrunk_kinds.entry(*t).or_default();
                if accepted.is_none() && !done.contains(&d.kind) && done.len() < args.max_found {
                    done.push(d.kind.clone());
                    to_shrink.push((si, *t, k, d.clone()));
                }
                out.findings.push(Finding {
                    target: t.name().into(),
                    route: rname.clone(),
                    case: *i,
                    request: case.one_line(),
                    diff: d,
                    accepted,
                });
            }
        }
    }
    eprintln!(
        "differ:   {} cases in {:.1}s; shrinking {} disagreements",
        group.len(),
        ran.as_secs_f64(),
        to_shrink.len()
    );
    // Shrinking: the targets at once (each against the shared oracle), each target's
    // disagreements one after the other.
    let shrink_started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for si in 1..sessions.len() {
        let mine: Vec<(usize, Target, usize, Diff)> =
            to_shrink.iter().filter(|x| x.0 == si).cloned().collect();
        if mine.is_empty() {
            continue;
        }
        let (sessions, cases) = (sessions.clone(), cases.clone());
        let limit = std::time::Duration::from_secs(args.shrink_seconds);
        tasks.spawn(async move {
            let mut done = Vec::new();
            for (si, t, k, d) in mine {
                let (_, case) = &cases[k];
                let r = shrink(&sessions[0], &sessions[si], case, &d.kind, k, limit).await;
                done.push((t, k, d, r));
            }
            done
        });
    }
    let mut shrunk = Vec::new();
    while let Some(r) = tasks.join_next().await {
        shrunk.extend(r.map_err(|e| format!("shrinking failed: {e}"))?);
    }
    shrunk.sort_by(|a, b| (a.0, a.1, &a.2.kind).cmp(&(b.0, b.1, &b.2.kind)));
    eprintln!(
        "differ:   shrunk in {:.1}s",
        shrink_started.elapsed().as_secs_f64()
    );
    for (t, k, d, (small, a, b, dd, steps)) in shrunk {
        let (i, _) = &group[k];
        let n = out.shrunk.iter().filter(|s| s.target == t.name()).count() + 1;
        let scenario = match &setup.found_dir {
            None => None,
            Some(dir) => {
                let slug = found::slug(t.name(), &d.kind, n);
                let id = format!("found/{slug}");
                found::scenario(
                    &id,
                    oracle.name(),
                    t.name(),
                    route,
                    &small,
                    &dd,
                    &a,
                    &b,
                    args.seed,
                )
                .and_then(|text| {
                    std::fs::create_dir_all(dir).ok()?;
                    let path = dir.join(format!("{slug}.toml"));
                    std::fs::write(&path, text).ok()?;
                    Some(path.display().to_string())
                })
            }
        };
        out.shrunk.push(Shrunk {
            target: t.name().into(),
            kind: d.kind.clone(),
            route: rname.clone(),
            from_case: *i,
            request: small.one_line(),
            oracle: dd.oracle.clone(),
            behaviour: dd.target.clone(),
            steps,
            scenario,
        });
    }
    drop(sessions);
    Ok(())
}

/// Greatest number of candidate requests tried while shrinking one disagreement.
const SHRINK_BUDGET: usize = 300;

/// Shrinks `case` while the oracle and the target keep disagreeing with the same kind: each
/// step takes the first smaller candidate that does. Returns the smallest case, both
/// observations of it, the disagreement and how many steps were taken.
async fn shrink(
    oracle: &Session,
    target: &Session,
    case: &Case,
    kind: &str,
    n: usize,
    limit: std::time::Duration,
) -> (Case, Obs, Obs, Diff, usize) {
    let begun = std::time::Instant::now();
    let mut tries = 0usize;
    let mut tag = 0usize;
    let mut check = async |c: &Case| -> Option<(Obs, Obs, Diff)> {
        tag += 1;
        let t = format!("s{n}-{tag}");
        let (a, b) = tokio::join!(oracle.exchange(c, &t), target.exchange(c, &t));
        let d = compare::diff(&a, &b).into_iter().find(|d| d.kind == kind)?;
        Some((a, b, d))
    };
    let Some((mut a, mut b, mut d)) = check(case).await else {
        // Not reproduced (a timing-dependent difference): kept as found.
        let none = Obs {
            status: None,
            responses: 0,
            backend: None,
            note: Some("not reproduced".into()),
        };
        let d = Diff {
            kind: kind.to_string(),
            oracle: "not reproduced".into(),
            target: "not reproduced".into(),
        };
        return (case.clone(), none.clone(), none, d, 0);
    };
    let mut best = case.clone();
    let mut steps = 0;
    'outer: loop {
        for cand in candidates(&best) {
            if tries >= SHRINK_BUDGET || begun.elapsed() > limit {
                break 'outer;
            }
            tries += 1;
            if let Some((x, y, z)) = check(&cand).await {
                (best, a, b, d) = (cand, x, y, z);
                steps += 1;
                continue 'outer;
            }
        }
        break;
    }
    (best, a, b, d, steps)
}

/// Smaller versions of `c`, the biggest cuts first.
pub fn candidates(c: &Case) -> Vec<Case> {
    use cases::Body;
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Case)| {
        let mut x = c.clone();
        f(&mut x);
        x
    };
    if !c.headers.is_empty() {
        out.push(with(&|x| x.headers.clear()));
        for i in 0..c.headers.len() {
            out.push(with(&|x| {
                x.headers.remove(i);
            }));
        }
        for i in 0..c.headers.len() {
            if c.headers[i].1.len() > 8 {
                out.push(with(&|x| {
                    let v = &x.headers[i].1;
                    x.headers[i].1 = v.chars().take(v.chars().count() / 2).collect();
                }));
            }
        }
    }
    if c.body != Body::None {
        out.push(with(&|x| {
            x.body = Body::None;
            if x.method == "POST" {
                x.method = "GET".into();
            }
        }));
        out.push(with(&|x| x.body = Body::None));
        // Smaller sizes, from nothing to one byte less, halving the step towards `size` (a
        // boundary is found in a few steps).
        let sizes = |size: usize| {
            let mut v = vec![0, 1];
            v.extend((1..24).map(|k| size - (size >> k)));
            v.push(size.saturating_sub(1));
            v.dedup();
            v.into_iter().filter(move |s| *s < size)
        };
        match c.body.clone() {
            Body::Length { size, sent } => {
                if sent < size {
                    out.push(with(&|x| x.body = Body::Length { size, sent: size }));
                    for s in sizes(size) {
                        out.push(with(&|x| {
                            x.body = Body::Length {
                                size: s,
                                sent: sent.min(s.saturating_sub(1)),
                            }
                        }));
                    }
                } else {
                    for s in sizes(size) {
                        out.push(with(&|x| x.body = Body::Length { size: s, sent: s }));
                    }
                }
            }
            Body::Chunked {
                size,
                chunk,
                ext,
                trailer,
                early_close,
            } => {
                let b = |size, chunk, ext, trailer, early_close| Body::Chunked {
                    size,
                    chunk,
                    ext,
                    trailer,
                    early_close,
                };
                out.push(with(&|x| x.body = Body::Length { size, sent: size }));
                for s in sizes(size) {
                    out.push(with(&|x| {
                        x.body = b(s, chunk.min(s.max(1)), ext, trailer, early_close)
                    }));
                }
                if ext {
                    out.push(with(&|x| {
                        x.body = b(size, chunk, false, trailer, early_close)
                    }));
                }
                if trailer {
                    out.push(with(&|x| x.body = b(size, chunk, ext, false, early_close)));
                }
                if early_close {
                    out.push(with(&|x| x.body = b(size, chunk, ext, trailer, false)));
                }
                if chunk < size {
                    out.push(with(&|x| x.body = b(size, size, ext, trailer, early_close)));
                }
            }
            Body::None => {}
        }
    }
    if c.method != "GET" && c.body == Body::None {
        out.push(with(&|x| x.method = "GET".into()));
    }
    // The target: the query, then path segments, then long runs, then single characters.
    let (path, query) = match c.target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (c.target.clone(), None),
    };
    let join = |p: &str, q: &Option<String>| match q {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    if let Some(q) = &query {
        out.push(with(&|x| x.target = path.clone()));
        if !q.is_empty() {
            out.push(with(&|x| x.target = format!("{path}?")));
        }
        for cut in shorter(q) {
            out.push(with(&|x| x.target = format!("{path}?{cut}")));
        }
    }
    let segs: Vec<&str> = path.split('/').collect();
    for i in 1..segs.len() {
        let mut s = segs.clone();
        s.remove(i);
        let p = s.join("/");
        if p.starts_with('/') {
            out.push(with(&|x| x.target = join(&p, &query)));
        }
    }
    for cut in shorter(&path) {
        if cut.starts_with('/') {
            out.push(with(&|x| x.target = join(&cut, &query)));
        }
    }
    out.retain(|x| x != c);
    out
}

/// Shorter versions of `s`: long runs halved, then each `%XX` escape or character left out.
fn shorter(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    // Runs of one character longer than 8, halved.
    let mut i = 0;
    while i < chars.len() {
        let mut j = i;
        while j < chars.len() && chars[j] == chars[i] {
            j += 1;
        }
        if j - i > 8 {
            let mut v = chars.clone();
            v.drain(i..i + (j - i) / 2);
            out.push(v.into_iter().collect());
        }
        i = j;
    }
    if chars.len() <= 200 {
        let mut i = 0;
        while i < chars.len() {
            let len = if chars[i] == '%' && i + 2 < chars.len() {
                3
            } else {
                1
            };
            let mut v = chars.clone();
            v.drain(i..(i + len).min(chars.len()));
            out.push(v.into_iter().collect());
            i += len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cases::Body;

    #[test]
    fn candidates_are_smaller_and_reach_a_one_line_request() {
        let c = Case {
            method: "POST".into(),
            target: "/app/a/%2fb/x.php?q=1".into(),
            headers: vec![("X-A".into(), "1".into()), ("X-B".into(), "v".repeat(40))],
            body: Body::Chunked {
                size: 100,
                chunk: 7,
                ext: true,
                trailer: true,
                early_close: false,
            },
        };
        let cands = candidates(&c);
        assert!(!cands.is_empty());
        assert!(cands.iter().all(|x| x != &c));
        assert!(cands.iter().all(|x| x.raw().len() <= c.raw().len()));
        // Greedy shrinking with "the path holds %2f" as the property ends at one short line.
        let keeps = |x: &Case| x.target.contains("%2f");
        let mut best = c;
        while let Some(next) = candidates(&best).into_iter().find(keeps) {
            best = next;
        }
        assert_eq!(best.target, "/%2f");
        assert_eq!(best.method, "GET");
        assert!(best.headers.is_empty());
        assert_eq!(best.body, Body::None);
        // A body-size boundary (over 8192 bytes) is found in a few dozen steps.
        let mut best = Case {
            method: "POST".into(),
            target: "/app/x.php".into(),
            headers: Vec::new(),
            body: Body::Length {
                size: 1 << 20,
                sent: 1 << 20,
            },
        };
        let mut steps = 0;
        while let Some(next) = candidates(&best).into_iter().find(|x| x.body_len() > 8192) {
            best = next;
            steps += 1;
        }
        assert_eq!(best.body_len(), 8193);
        assert_eq!(best.target, "/");
        assert!(steps < 80, "{steps}");
    }

    #[test]
    fn all_means_every_target_but_the_oracle() {
        let args = DifferArgs {
            against: Target::Apache,
            targets: vec!["all".into()],
            cases: 1,
            seed: 1,
            area: Area::All,
            lanes: 1,
            max_found: 1,
            shrink_seconds: 15,
            out: None,
            found: None,
            expected: None,
            proxy_bin: None,
        };
        let t = args.target_list().unwrap();
        assert_eq!(t.len(), 6);
        assert!(!t.contains(&Target::Apache));
    }

    #[test]
    fn every_route_configuration_is_a_valid_scenario() {
        let (routes, _) = cases::generate(3, 5000, Area::All);
        for r in &routes {
            route_scenario(r).unwrap_or_else(|e| panic!("{}: {e}", r.name()));
        }
    }
}
