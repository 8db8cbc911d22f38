//! Every scenario file loads, and every requirement quoted from a file of this repository
//! (`docs/reference/*.md`, ...) is in that file, under the sections it names: the loader checks
//! them (`Requirement::check_against`), so a stale quote or a mistyped section is an error.

mod common;

#[test]
fn requirements_quoted_from_repository_files_are_in_them() {
    let files = common::all_scenarios();
    let from_files: Vec<&str> = files
        .iter()
        .filter_map(|f| f.scenario.requirement.repository_file())
        .collect();
    // The catalogues the scenarios are written from.
    for doc in ["docs/reference/apache.md", "docs/reference/security.md"] {
        assert!(
            from_files.contains(&doc),
            "no scenario quotes {doc}: {from_files:?}"
        );
    }
}
