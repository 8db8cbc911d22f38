//! Builds the scenarios, the peers' expected deviations and the reference documents their
//! requirements quote into the `fcgi-conformance` binary, so that an installed copy runs
//! without the repository: `$OUT_DIR/embedded.rs` lists them as `include_str!`s (the compiler
//! then rebuilds whatever includes it when one of the files changes).
//!
//! The files live outside the crate (`../scenarios`, `../docs/reference`): a build from a
//! checkout (`cargo install --path conformance`) finds them; a build from a packaged copy of
//! the crate alone would not, and then embeds nothing (the binary says so and takes
//! `--scenarios DIR`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
    let scenarios = root.join("scenarios");
    let reference = root.join("docs/reference");
    println!("cargo:rerun-if-changed={}", scenarios.display());
    println!("cargo:rerun-if-changed={}", reference.display());

    let mut scenario_files = Vec::new();
    let mut expected_files = Vec::new();
    if scenarios.is_dir() {
        walk(&scenarios, &mut scenario_files);
    } else {
        println!(
            "cargo:warning={} not found: fcgi-conformance is built without its scenarios",
            scenarios.display()
        );
    }
    scenario_files.sort();
    let (expected, own): (Vec<PathBuf>, Vec<PathBuf>) = scenario_files.into_iter().partition(|p| {
        p.strip_prefix(&scenarios)
            .is_ok_and(|r| r.starts_with("expected"))
    });
    expected_files.extend(expected);
    let mut docs: Vec<PathBuf> = std::fs::read_dir(&reference)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        })
        .unwrap_or_default();
    if scenarios.join("README.md").is_file() {
        docs.push(scenarios.join("README.md"));
    }
    docs.sort();

    let mut out = String::new();
    table(&mut out, "SCENARIOS", &own, &scenarios);
    table(
        &mut out,
        "EXPECTED",
        &expected_files,
        &scenarios.join("expected"),
    );
    table(&mut out, "DOCS", &docs, &root);
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("embedded.rs");
    std::fs::write(&dest, out).expect("write embedded.rs");
}

/// Every `*.toml` under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

/// `pub static NAME: &[(&str, &str)]`: each file's path below `base` ('/'-separated) and text.
fn table(out: &mut String, name: &str, files: &[PathBuf], base: &Path) {
    let _ = writeln!(out, "pub static {name}: &[(&str, &str)] = &[");
    for f in files {
        let rel: Vec<String> = f
            .strip_prefix(base)
            .unwrap_or(f)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let _ = writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            rel.join("/"),
            f.display().to_string()
        );
    }
    let _ = writeln!(out, "];");
}
