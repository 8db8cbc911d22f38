//! The real runner against our proxy as a process: every scenario gives the same verdict as in
//! the simulator, and per area the scenarios' mutants (a wrong proxy setting or backend
//! behaviour) turn the verdict to FAIL for real too.

mod common;

use conformance::real::{self, Target};
use conformance::report::Verdict;
use conformance::scenario::Scenario;
use conformance::sim::suite;

#[test]
fn simulated_and_real_verdicts_agree_for_our_proxy() {
    let opts = common::real_options();
    let files = common::all_scenarios();
    let results = suite::par_map(&files, 2, |f| {
        let s = &f.scenario;
        if real::unsupported(s).is_some() {
            return None;
        }
        let sim = suite::run_one(s, conformance::sim::DEFAULT_SEED, false);
        let sim_verdict = sim.judgement.verdict(s.level);
        let real = real::run(s, Target::Ours, &opts);
        Some((s.id.clone(), sim_verdict, real.verdict, real.detail))
    });
    let compared: Vec<_> = results.into_iter().flatten().collect();
    assert!(
        compared.len() >= 40,
        "only {} scenarios ran for real",
        compared.len()
    );
    let differ: Vec<String> = compared
        .iter()
        .filter(|(_, sim, real, _)| sim != real)
        .map(|(id, sim, real, detail)| format!("{id}: sim {sim:?}, real {real:?} ({detail})"))
        .collect();
    assert!(differ.is_empty(), "verdicts differ:\n{}", differ.join("\n"));
}

#[test]
fn mutants_fail_for_real_in_every_area() {
    let opts = common::real_options();
    let files = common::all_scenarios();
    // One mutant per area is enough to show the real runner can fail there.
    let mut picked: Vec<(String, Scenario)> = Vec::new();
    for f in &files {
        let area = f.scenario.id.split('/').next().unwrap_or("").to_string();
        if picked.iter().any(|(a, _)| *a == area) || real::unsupported(&f.scenario).is_some() {
            continue;
        }
        let Some(m) = f.scenario.mutants.first() else {
            continue;
        };
        let mutated =
            Scenario::mutated(&f.text, &f.path.display().to_string(), m).expect("mutant applies");
        picked.push((area, mutated));
    }
    let areas: Vec<&str> = picked.iter().map(|(a, _)| a.as_str()).collect();
    for want in [
        "balance",
        "cgi",
        "disablereuse",
        "faults",
        "pathinfo",
        "reuse",
        "saturation",
        "security",
    ] {
        assert!(
            areas.contains(&want),
            "no runnable mutant in {want}: {areas:?}"
        );
    }
    let verdicts = suite::par_map(&picked, 2, |(area, s)| {
        (
            area.clone(),
            s.id.clone(),
            real::run(s, Target::Ours, &opts).verdict,
        )
    });
    for (area, id, v) in verdicts {
        assert_eq!(
            v,
            Verdict::Fail,
            "{area}: mutant of {id} did not fail for real"
        );
    }
}
