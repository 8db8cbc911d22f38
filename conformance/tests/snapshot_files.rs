//! Every snapshot file in `tests/snapshots/` belongs to a check that still produces it, and every
//! such check has its file. A scenario renamed or removed, a target dropped or a test target
//! renamed would otherwise leave a file that nothing compares any more (insta reports those
//! only under `cargo insta test --unreferenced=reject`; this runs with `cargo test`).
//!
//! - `snap_<area>.rs` globs `scenarios/<area>/*.toml`: `snap_<area>__params@<file>.toml.snap`.
//! - `cgi_snapshots.rs`, per target and `scenarios/cgi` scenario it can run:
//!   `cgi_real/<target>__<scenario>.snap`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use conformance::real::{self, Target};
use conformance::scenario::Scenario;
use conformance::sim::suite;

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The `*.snap` file names in `dir` (insta's `.snap.new` and `.pending-snap` are not snapshots).
fn snap_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap"))
        .collect()
}

/// The `*.toml` file names directly in `dir`.
fn scenario_files(dir: &Path) -> Vec<String> {
    testkit::file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".toml"))
        .collect()
}

/// Files that no check produces, and checks without their file.
fn compare(what: &str, files: &BTreeSet<String>, expected: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for stale in files.difference(expected) {
        problems.push(format!(
            "{what}/{stale}: no check produces this snapshot any more (delete it)"
        ));
    }
    for absent in expected.difference(files) {
        problems.push(format!(
            "{what}/{absent}: a check produces this snapshot but the file is missing \
             (cargo insta test, then review)"
        ));
    }
    problems
}

#[test]
fn every_scenario_snapshot_has_its_check() {
    let tests = tests_dir();
    let scenarios = suite::scenarios_dir();
    let mut expected = BTreeSet::new();
    for target in std::fs::read_dir(&tests).expect("tests dir") {
        let name = target.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        let Some(area) = name
            .strip_prefix("snap_")
            .and_then(|n| n.strip_suffix(".rs"))
        else {
            continue;
        };
        // The mapping below assumes what the test target globs.
        let source = std::fs::read_to_string(tests.join(name.as_ref())).expect("read test");
        let glob = format!("insta::glob!(\"../../scenarios\", \"{area}/*.toml\"");
        assert!(
            source.contains(&glob),
            "{name} does not glob {area}/*.toml: update this test"
        );
        for file in scenario_files(&scenarios.join(area)) {
            expected.insert(format!("snap_{area}__params@{file}.snap"));
        }
    }
    assert!(!expected.is_empty(), "no snap_<area>.rs test targets found");
    let problems = compare(
        "tests/snapshots",
        &snap_files(&tests.join("snapshots")),
        &expected,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_real_cgi_snapshot_has_its_target_and_scenario() {
    let dir = suite::scenarios_dir().join("cgi");
    let mut expected = BTreeSet::new();
    for file in scenario_files(&dir) {
        let s = Scenario::load(&dir.join(&file)).unwrap_or_else(|e| panic!("{e}"));
        if real::unsupported(&s).is_some() {
            continue;
        }
        let slug = s.id.rsplit('/').next().unwrap_or(&s.id).to_string();
        for target in Target::ALL {
            if target.cannot_express(&s).is_none() {
                expected.insert(format!("{}__{slug}.snap", target.name()));
            }
        }
    }
    let problems = compare(
        "tests/snapshots/cgi_real",
        &snap_files(&tests_dir().join("snapshots/cgi_real")),
        &expected,
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
