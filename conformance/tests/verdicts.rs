//! Every scenario passes with the default seed: the proxy meets what the scenario files
//! require. (`cargo xtask sim --seeds N` checks more seeds.)

mod common;

use conformance::sim::{self, suite};

#[test]
fn every_scenario_passes() {
    let files = common::all_scenarios();
    let reports = suite::run_all(&files, &[sim::DEFAULT_SEED], suite::threads(), false);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.pass())
        .map(|r| {
            let reasons = r
                .first_failure()
                .map(|f| f.judgement.reasons().join("\n    "))
                .unwrap_or_default();
            format!("{}:\n    {reasons}", r.id)
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} scenarios FAIL:\n{}\n\n{}",
        failed.len(),
        reports.len(),
        failed.join("\n"),
        suite::table(&reports)
    );
}
