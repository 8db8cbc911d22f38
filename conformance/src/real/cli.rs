//! `cargo xtask conformance`: every scenario, for real, against each target; a matrix of checks
//! x targets with expected deviations shown as XFAIL; reports in target/conformance/.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::report::{CheckResult, Expected, Results, Verdict};
use crate::sim::suite::{self, par_map};

use super::{RealOptions, Target};

const USAGE: &str = "\
cargo xtask conformance [--target TARGET[,TARGET...]]... [--threads N] [--markdown FILE]
                        [--keep DIR] [PATH...]
cargo xtask conformance --target external --url http://127.0.0.1:PORT --backend 127.0.0.1:PORT2

TARGET: ours, apache, nginx, caddy, haproxy, lighttpd, h2o, all (= every one of these), or
external.

Runs the scenario files (default: scenarios/) for real against each target (default: ours):
the target proxy as a process with a config generated from each scenario's topology, fcgi-mock
backends on loopback, real HTTP. Prints the matrix of checks x targets; writes
target/conformance/{results.json,junit.xml,conformance.md}; with --markdown FILE also writes
the Markdown report there (docs/conformance.md is that report, committed). --keep DIR keeps
each run's generated config, the target's log and journal.txt (what the clients got and every
FastCGI record the backends saw: params, connections) in DIR/<target>/<area>/<check>/.

A target whose binary is missing is SKIP for the whole column with an install hint (cargo
xtask peers install gets the Debian packages). A check the target cannot express is SKIP with
the reason. A target that crashes during a check fails it, with the tail of its log; each check
starts a fresh target process. Listed deviations (scenarios/expected/<target>.toml) turn FAIL
into XFAIL; a listed deviation that passes is XPASS. Exit status 1 on any FAIL or XPASS.

External proxy (--target external): a proxy you run and configured yourself. Configure it to
send every request path, unchanged, to the one FastCGI backend at --backend (the suite starts
its mock backend there, so nothing else may listen on it), with its default settings otherwise,
e.g. nginx: `location / { include fastcgi_params; fastcgi_pass 127.0.0.1:PORT2; }`. --url is
where it listens for HTTP (http://HOST:PORT, no path). Scenarios that need more than one
backend, a balancer, regex routes, path-info modes, caps, timeouts, specific reuse settings or
other settings of the proxy are SKIP with the reason. The checks run one at a time.
";

pub fn cli(root: &Path, args: &[String]) -> ExitCode {
    let mut targets: Vec<Target> = Vec::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut threads = 2usize;
    let mut markdown: Option<PathBuf> = None;
    let mut url: Option<String> = None;
    let mut keep: Option<PathBuf> = None;
    let mut backend: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--target" => {
                let Some(v) = it.next() else {
                    eprintln!("--target needs a value\n\n{USAGE}");
                    return ExitCode::from(2);
                };
                for name in v.split(',') {
                    if name == "all" {
                        targets.extend(Target::ALL);
                    } else if let Some(t) = Target::parse(name) {
                        targets.push(t);
                    } else {
                        eprintln!("unknown target {name:?}\n\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            "--threads" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => threads = n,
                _ => {
                    eprintln!("--threads needs a positive number");
                    return ExitCode::from(2);
                }
            },
            "--keep" => match it.next() {
                Some(p) => keep = Some(root.join(p)),
                None => {
                    eprintln!("--keep needs a directory");
                    return ExitCode::from(2);
                }
            },
            "--url" => match it.next() {
                Some(v) => url = Some(v.clone()),
                None => {
                    eprintln!("--url needs a value");
                    return ExitCode::from(2);
                }
            },
            "--backend" => match it.next() {
                Some(v) => backend = Some(v.clone()),
                None => {
                    eprintln!("--backend needs a value");
                    return ExitCode::from(2);
                }
            },
            "--markdown" => match it.next() {
                Some(p) => markdown = Some(root.join(p)),
                None => {
                    eprintln!("--markdown needs a file");
                    return ExitCode::from(2);
                }
            },
            flag if flag.starts_with('-') => {
                eprintln!("unknown option {flag}\n\n{USAGE}");
                return ExitCode::from(2);
            }
            p => paths.push(root.join(p)),
        }
    }
    if targets.is_empty() {
        targets.push(Target::Ours);
    }
    // In the order given, each once (`all,ours` runs ours once).
    let mut seen = Vec::new();
    targets.retain(|t| {
        let first = !seen.contains(t);
        seen.push(*t);
        first
    });
    let external = match (targets.contains(&Target::External), url, backend) {
        (true, Some(u), Some(b)) => match super::External::parse(&u, &b) {
            Ok(e) => {
                // Every check would wait for it otherwise.
                if let Err(err) = std::net::TcpStream::connect_timeout(
                    &e.proxy,
                    std::time::Duration::from_secs(2),
                ) {
                    eprintln!("nothing accepts connections at {u} ({err}): start the proxy first");
                    return ExitCode::from(2);
                }
                Some(e)
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        (true, _, _) => {
            eprintln!("--target external needs --url and --backend\n\n{USAGE}");
            return ExitCode::from(2);
        }
        (false, None, None) => None,
        (false, _, _) => {
            eprintln!("--url and --backend go with --target external");
            return ExitCode::from(2);
        }
    };
    if paths.is_empty() {
        paths.push(suite::scenarios_dir());
    }
    let files = match suite::load(&paths) {
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    let opts = RealOptions {
        proxy_bin: target_dir.join("debug/fcgi-proxy"),
        external,
        keep,
    };
    let expected_dir = root.join("scenarios/expected");
    let started = Instant::now();
    let mut results = Results::default();
    for &target in &targets {
        let expected = match Expected::load(&expected_dir, target.name()) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let t0 = Instant::now();
        let done = std::sync::atomic::AtomicUsize::new(0);
        // The external proxy's one backend address can serve one check at a time.
        let threads = if target == Target::External {
            1
        } else {
            threads
        };
        let outcomes = par_map(&files, threads, |f| {
            let o = super::run(&f.scenario, target, &opts);
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            eprint!(
                "\r{}: {n}/{} {:<60}",
                target.name(),
                files.len(),
                f.scenario.id
            );
            o
        });
        eprintln!(
            "\r{}: {} scenarios in {:.1}s{:40}",
            target.name(),
            files.len(),
            t0.elapsed().as_secs_f64(),
            ""
        );
        for (f, o) in files.iter().zip(outcomes) {
            let (verdict, detail) = match o.verdict {
                Verdict::Pass | Verdict::Fail => {
                    expected.resolve(&f.scenario.id, o.verdict, o.detail)
                }
                v => (v, o.detail),
            };
            results.push(CheckResult {
                check: f.scenario.id.clone(),
                target: target.name().to_string(),
                verdict,
                detail,
            });
        }
    }
    print!("{}", results.to_table());
    let unexpected = results.unexpected();
    for r in &unexpected {
        println!(
            "{} {} on {}: {}",
            r.verdict.as_str(),
            r.check,
            r.target,
            r.detail
        );
    }
    println!(
        "{} checks x {} targets in {:.1}s",
        results.checks().len(),
        results.targets().len(),
        started.elapsed().as_secs_f64()
    );
    let out = root.join("target/conformance");
    let report = results.to_markdown();
    let written = std::fs::create_dir_all(&out)
        .and_then(|()| std::fs::write(out.join("results.json"), results.to_json()))
        .and_then(|()| std::fs::write(out.join("junit.xml"), results.to_junit()))
        .and_then(|()| std::fs::write(out.join("conformance.md"), &report))
        .and_then(|()| match &markdown {
            Some(p) => std::fs::write(p, &report),
            None => Ok(()),
        });
    if let Err(e) = written {
        eprintln!("writing reports: {e}");
    }
    if unexpected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
