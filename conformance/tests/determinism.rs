//! Determinism: every scenario run twice with the same seed gives byte-identical traces (client
//! events, the proxy's connections and log lines, the mocks' journals, faults, all in virtual
//! time). Another seed may differ, and over the whole suite it must differ somewhere, or the
//! seed would not reach the simulation.

mod common;

use conformance::sim;
use conformance::sim::suite;

#[test]
fn same_seed_same_trace() {
    let files = common::all_scenarios();
    let seed = 7;
    let outcomes = suite::par_map(&files, suite::threads(), |f| {
        let a = sim::run(&f.scenario, seed);
        let b = sim::run(&f.scenario, seed);
        let c = sim::run(&f.scenario, seed + 1);
        let same = a.trace == b.trace;
        let first_diff = a
            .trace
            .iter()
            .zip(&b.trace)
            .position(|(x, y)| x != y)
            .map(|i| format!("line {i}:\n  {}\n  {}", a.trace[i], b.trace[i]));
        (
            f.scenario.id.clone(),
            same,
            first_diff,
            a.trace != c.trace,
            a.trace.len(),
        )
    });
    let mut differ_by_seed = 0;
    for (id, same, diff, seed_matters, lines) in &outcomes {
        assert!(*lines > 0, "{id}: empty trace");
        assert!(
            *same,
            "{id}: two runs with seed {seed} differ at {}",
            diff.clone()
                .unwrap_or_else(|| "the end (lengths differ)".into())
        );
        if *seed_matters {
            differ_by_seed += 1;
        }
    }
    assert!(
        differ_by_seed > 0,
        "no scenario's trace depends on the seed: is the seed reaching turmoil?"
    );
    eprintln!(
        "{} scenarios deterministic; {differ_by_seed} traces differ between seeds {seed} and {}",
        outcomes.len(),
        seed + 1
    );
}
