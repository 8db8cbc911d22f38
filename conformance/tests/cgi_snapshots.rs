//! Per target, run for real: the CGI params every backend request of the `scenarios/cgi`
//! scenarios received, as YAML snapshots in `snapshots/cgi_real/` (one per target and
//! scenario), so that a change in a peer's behaviour (a new version, another default) shows up
//! as a snapshot diff to review.
//!
//! Params are sorted by name (Caddy sends them in random order); a repeated name keeps its
//! values in the order received (`NAME #2`). Ports that change from run to run (the proxy's
//! listening port, REMOTE_PORT, backend ports) read `[port]`; the PATH and LD_LIBRARY_PATH a
//! proxy copies from its environment are redacted.
//! A target whose program is not installed is skipped with the reason printed, or fails the
//! test when `FCGI_REQUIRE` (or `CI`) requires it (see the `programs` crate); a scenario the
//! target cannot express is skipped. `snapshot_files.rs` checks that every snapshot here
//! belongs to a target and scenario that still produce it.

mod common;

use std::sync::LazyLock;

use conformance::real::{self, Target};
use conformance::report::Verdict;
use conformance::sim::params::{self, Params};
use conformance::sim::suite;

/// Params whose value a target picks at random from run to run, with what it picks from.
const UNSTABLE: &[(&str, &str, &str)] = &[(
    // Caddy builds the params in a Go map: the client's `X_Forwarded_For` and Caddy's own
    // X-Forwarded-For both become this name, and either may win.
    "caddy",
    "HTTP_X_FORWARDED_FOR",
    "[random: Caddy's own or the client's X_Forwarded_For]",
)];

/// `127.0.0.1:PORT` anywhere in a value, and a whole value that is a port of this machine's
/// run (10000 and up: listening ports are 20000-29999, ephemeral ones 32768 and up; ports
/// the scenarios put in Host headers, such as 8080, stay).
fn redact(target: Target, name: &str, value: &str) -> String {
    if let Some((_, _, why)) = UNSTABLE
        .iter()
        .find(|(t, n, _)| *t == target.name() && *n == name)
    {
        return (*why).to_string();
    }
    if name.ends_with("_PORT") && value.parse::<u32>().is_ok_and(|p| p >= 10_000) {
        return "[port]".into();
    }
    static LOOPBACK: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"127\.0\.0\.1:\d+").expect("regex"));
    LOOPBACK.replace_all(value, "127.0.0.1:[port]").into_owned()
}

#[test]
fn cgi_params_per_target() {
    let opts = common::real_options();
    let files = suite::load(&[suite::scenarios_dir().join("cgi")]).expect("scenarios load");
    assert!(!files.is_empty(), "no cgi scenarios");
    for target in Target::ALL {
        let installed = target
            .program()
            .is_none_or(|(program, package)| programs::require_program(program, package).is_some());
        if !installed {
            continue;
        }
        if let Some(why) = target.unavailable(&opts) {
            panic!("{}: {why}", target.name());
        }
        let mut outcomes = suite::par_map(&files, 2, |f| real::run(&f.scenario, target, &opts));
        // Every scenario here sends the backend at least one request through every target.
        // A peer's run that got none through was an accident of the run (Caddy, once, on a
        // loaded CI machine), not what the peer does with the request: it runs once more, and
        // the first run's verdict is printed. fcgi-proxy gets no second run: there it would
        // be a fault of ours.
        for (f, o) in files.iter().zip(outcomes.iter_mut()) {
            let none_through = o
                .run
                .as_ref()
                .is_some_and(|r| params::received(r).is_empty());
            if none_through && target != Target::Ours {
                eprintln!(
                    "{} on {}: no request reached the backend ({:?}: {}); running it again",
                    f.scenario.id,
                    target.name(),
                    o.verdict,
                    o.detail
                );
                *o = real::run(&f.scenario, target, &opts);
            }
        }
        for (f, o) in files.iter().zip(outcomes) {
            let s = &f.scenario;
            let Some(run) = o.run else {
                assert_eq!(
                    o.verdict,
                    Verdict::Skip,
                    "{} on {}: the run failed: {}",
                    s.id,
                    target.name(),
                    o.detail
                );
                eprintln!("{} on {}: skipped: {}", s.id, target.name(), o.detail);
                continue;
            };
            let mut received = params::received(&run);
            for r in &mut received {
                let mut p = std::mem::take(&mut r.params.0);
                // Stable: repeated names keep the order they were received in.
                p.sort_by(|a, b| a.0.cmp(&b.0));
                r.params = Params(
                    p.into_iter()
                        .map(|(n, v)| {
                            let v = redact(target, &n, &v);
                            (n, v)
                        })
                        .collect(),
                );
            }
            let slug = s.id.rsplit('/').next().unwrap_or(&s.id);
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path("snapshots/cgi_real");
            settings.set_prepend_module_to_snapshot(false);
            settings.set_omit_expression(true);
            settings.set_description(format!(
                "{} on {}: CGI params each backend request received, sorted by name, run for real",
                s.id,
                target.name()
            ));
            settings.bind(|| {
                insta::assert_yaml_snapshot!(format!("{}__{slug}", target.name()), received);
            });
        }
    }
}
