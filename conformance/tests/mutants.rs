//! Every scenario can fail: each carries `[[mutant]]`s (a wrong proxy setting or a different
//! backend behaviour, written as edits of the scenario) and each mutant must turn the verdict
//! to FAIL. Every area must have such proofs.

mod common;

use std::collections::BTreeSet;

use conformance::scenario::Scenario;
use conformance::sim::suite::{self, ScenarioFile};

#[test]
fn every_mutant_fails() {
    let files = common::all_scenarios();
    let mut mutated: Vec<(String, String, ScenarioFile)> = Vec::new();
    let mut missing = Vec::new();
    for f in &files {
        if f.scenario.mutants.is_empty() {
            missing.push(f.scenario.id.clone());
        }
        for m in &f.scenario.mutants {
            let origin = f.path.display().to_string();
            let s = Scenario::mutated(&f.text, &origin, m).unwrap_or_else(|e| panic!("{e}"));
            mutated.push((
                f.scenario.id.clone(),
                m.why.clone(),
                ScenarioFile {
                    path: f.path.clone(),
                    text: String::new(),
                    scenario: s,
                },
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "scenarios without a mutant: {missing:?}"
    );
    let judged = suite::par_map(&mutated, suite::threads(), |(_, _, f)| {
        suite::run_one(&f.scenario, conformance::sim::DEFAULT_SEED, false)
    });
    let mut survivors = Vec::new();
    let mut areas = BTreeSet::new();
    for ((id, why, _), r) in mutated.iter().zip(&judged) {
        if r.judgement.pass() {
            survivors.push(format!("{id}: {why}"));
        } else {
            areas.insert(id.split('/').next().unwrap_or("").to_string());
            let first = r.judgement.reasons().into_iter().next().unwrap_or_default();
            eprintln!("FAIL as required  {id}  [{why}]  {first}");
        }
    }
    assert!(
        survivors.is_empty(),
        "mutants that still PASS:\n{}",
        survivors.join("\n")
    );
    for area in [
        "reuse",
        "disablereuse",
        "saturation",
        "balance",
        "pathinfo",
        "cgi",
        "faults",
        "security",
    ] {
        assert!(areas.contains(area), "no failing mutant proves area {area}");
    }
}
