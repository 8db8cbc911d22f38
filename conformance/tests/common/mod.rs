//! Shared by the scenario test targets.

#![allow(dead_code)] // each test target uses a part of this module

use std::path::{Path, PathBuf};

use conformance::real::RealOptions;
use conformance::scenario::Scenario;
use conformance::sim::suite::{self, ScenarioFile};
use conformance::sim::{self, params};

/// Every scenario file, loaded and validated.
pub fn all_scenarios() -> Vec<ScenarioFile> {
    suite::load(&[suite::scenarios_dir()]).unwrap_or_else(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("scenario files do not load:\n{}", text.join("\n"))
    })
}

/// What a scenario's snapshot holds: the CGI params each backend received, per request (run
/// with the default seed), and the insta settings that describe it.
pub fn received(path: &Path) -> (insta::Settings, Vec<params::Received>) {
    let s = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    let run = sim::run(&s, sim::DEFAULT_SEED);
    assert!(run.error.is_none(), "{}: {:?}", s.id, run.error);
    let mut settings = insta::Settings::clone_current();
    settings.set_description(format!(
        "{} ({} {}): CGI params each backend received, seed {}",
        s.id,
        s.requirement.anchor(),
        s.level,
        sim::DEFAULT_SEED
    ));
    settings.set_omit_expression(true);
    (settings, params::received(&run))
}

/// The debug fcgi-proxy binary, built first (the real runner starts it as a process).
pub fn proxy_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-q", "-p", "fcgi-proxy", "--bin", "fcgi-proxy"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building fcgi-proxy failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/fcgi-proxy")
}

/// Options for running our proxy for real: the binary built by [`proxy_bin`].
pub fn real_options() -> RealOptions {
    RealOptions {
        proxy_bin: proxy_bin(),
        external: None,
        keep: None,
        backend: Default::default(),
    }
}
