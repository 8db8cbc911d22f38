//! Every snapshot file in `tests/snapshots/` belongs to a check that still produces it: a test
//! target or a named snapshot renamed or removed would otherwise leave a file that nothing
//! compares any more (insta reports those only under `cargo insta test --unreferenced=reject`;
//! this runs with `cargo test`).
//!
//! A file is `<test target>__<name>.snap`. The test target must exist and name the snapshot in
//! an `assert_..._snapshot!("<name>", ...)` call, except `apache_parity`, whose names are its
//! request shapes: `apache_parity.rs` checks those against its shape table.

use std::path::Path;

/// Test targets whose snapshot names are computed, with the test that checks their files.
const CHECKED_BY_THEIR_TARGET: &[(&str, &str)] = &[("apache_parity", "every_snapshot_is_a_shape")];

#[test]
fn every_snapshot_is_named_by_its_test() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let dir = tests.join("snapshots");
    let mut problems = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let file = entry.expect("dir entry").file_name();
        let file = file.to_string_lossy();
        // insta's `.snap.new` and `.pending-snap` are not snapshots.
        let Some(stem) = file.strip_suffix(".snap") else {
            continue;
        };
        seen += 1;
        let Some((target, name)) = stem.split_once("__") else {
            problems.push(format!("{file}: not <test target>__<name>.snap"));
            continue;
        };
        let Ok(source) = std::fs::read_to_string(tests.join(format!("{target}.rs"))) else {
            problems.push(format!("{file}: there is no test target tests/{target}.rs"));
            continue;
        };
        if let Some((_, check)) = CHECKED_BY_THEIR_TARGET.iter().find(|(t, _)| *t == target) {
            assert!(
                source.contains(&format!("fn {check}()")),
                "{target}.rs no longer has {check}: update this test"
            );
            continue;
        }
        if !source.contains(&format!("_snapshot!(\"{name}\"")) {
            problems.push(format!(
                "{file}: tests/{target}.rs asserts no snapshot named {name:?} (delete the file)"
            ));
        }
    }
    assert!(seen > 0, "no snapshots in {}", dir.display());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
