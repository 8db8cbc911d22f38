//! The differential run as a CI smoke: a few hundred generated requests through real Apache
//! httpd (the oracle) and our proxy, compared on status, CGI params and STDIN. Every
//! disagreement must be one `scenarios/expected/differ-ours.toml` explains; without that list
//! the same run must report the documented deviations (so the comparison can fail). The long
//! run is `cargo xtask differ`.

mod common;

use std::path::PathBuf;

use conformance::differ::{self, DifferArgs, Setup, cases::Area};
use conformance::home::Home;
use conformance::real::Target;

fn args(out: PathBuf, expected: Option<PathBuf>) -> DifferArgs {
    DifferArgs {
        against: Target::Apache,
        targets: vec!["ours".into()],
        cases: 300,
        seed: 11,
        area: Area::All,
        lanes: 3,
        max_found: 3,
        shrink_seconds: 15,
        out: Some(out),
        found: Some(PathBuf::from("-")),
        expected,
        proxy_bin: Some(common::proxy_bin()),
    }
}

#[test]
fn ours_agrees_with_apache_on_generated_requests() {
    if programs::require_program("apache2", "apache2").is_none() {
        return;
    }
    let root = conformance::sim::suite::workspace_root();
    let home = Home::Repo(root.to_path_buf());
    let tmp = tempfile::tempdir().expect("temp dir");

    let a = args(tmp.path().join("with-list"), None);
    let o = differ::run(&a, &Setup::new(&home, &a)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.run.get("ours"), Some(&300), "skipped: {:?}", o.skipped);
    let unexplained: Vec<String> = o
        .findings
        .iter()
        .filter(|f| f.accepted.is_none())
        .map(|f| format!("{} [{}]: {}", f.diff.kind, f.route, f.request))
        .collect();
    assert!(
        unexplained.is_empty(),
        "disagreements with Apache that differ-ours.toml does not explain:\n{}\nshrunk: {:#?}",
        unexplained.join("\n"),
        o.shrunk
    );
    assert!(
        o.findings.iter().any(|f| f.accepted.is_some()),
        "no documented deviation came up in 300 cases: the generator no longer reaches them"
    );

    // Without the list the same cases show the documented deviations, shrunk.
    let empty = tmp.path().join("no-list");
    std::fs::create_dir_all(&empty).expect("dir");
    let b = args(tmp.path().join("without"), Some(empty));
    let o = differ::run(&b, &Setup::new(&home, &b)).unwrap_or_else(|e| panic!("{e}"));
    assert!(o.unexplained("ours") > 0);
    assert!(!o.shrunk.is_empty());
    assert!(
        o.shrunk.iter().all(|s| s.request.len() < 400),
        "{:#?}",
        o.shrunk
    );
}
