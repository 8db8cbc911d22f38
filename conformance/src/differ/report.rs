//! The differential run's reports: the terminal, `report.md` and `report.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::Outcome;

/// Disagreements per target and kind: how many, how many of them no known entry accepts, a
/// reason of an accepted one, the first unexplained (else first) case's request.
struct Group {
    n: usize,
    unexplained: usize,
    reason: Option<String>,
    first: String,
}

fn groups(o: &Outcome, target: &str) -> BTreeMap<String, Group> {
    let mut g: BTreeMap<String, Group> = BTreeMap::new();
    for f in o.findings.iter().filter(|f| f.target == target) {
        let e = g.entry(f.diff.kind.clone()).or_insert_with(|| Group {
            n: 0,
            unexplained: 0,
            reason: None,
            first: f.request.clone(),
        });
        e.n += 1;
        match &f.accepted {
            None => {
                if e.unexplained == 0 {
                    e.first = f.request.clone();
                }
                e.unexplained += 1;
            }
            Some(r) => {
                if e.reason.is_none() {
                    e.reason = Some(r.clone());
                }
            }
        }
    }
    g
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// A summary for the terminal.
pub fn terminal(o: &Outcome) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "differ: {} cases (seed {}, area {:?}) over {} route configurations against {}, {:.0}s",
        o.cases,
        o.seed,
        o.area,
        o.routes.len(),
        o.oracle,
        o.seconds
    );
    for target in &o.targets {
        let g = groups(o, target);
        let unexplained = o.unexplained(target);
        let _ = writeln!(
            t,
            "  {target}: {} cases, {} disagreements ({} unexplained) in {} kinds",
            o.run.get(target).copied().unwrap_or(0),
            o.findings.iter().filter(|f| &f.target == target).count(),
            unexplained,
            g.len()
        );
        for (kind, x) in &g {
            if x.unexplained > 0 {
                let _ = writeln!(t, "    {:>5}  {kind}", x.unexplained);
            }
        }
    }
    for s in &o.shrunk {
        let _ = writeln!(
            t,
            "  shrunk {} [{}]: {}{}",
            s.target,
            s.kind,
            cut(&s.request, 160),
            s.scenario
                .as_ref()
                .map(|p| format!("  -> {p}"))
                .unwrap_or_default()
        );
    }
    t
}

/// The Markdown report.
pub fn markdown(o: &Outcome) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Differential run against {}\n", o.oracle);
    let _ = writeln!(
        t,
        "{} generated requests, seed {}, area `{:?}`, {} route configurations, {:.0} s.\n",
        o.cases,
        o.seed,
        o.area,
        o.routes.len(),
        o.seconds
    );
    let _ = writeln!(t, "Route configurations: {}.\n", o.routes.join(", "));
    let _ = writeln!(
        t,
        "| target | cases run | disagreements | unexplained | kinds |\n|---|---|---|---|---|"
    );
    for target in &o.targets {
        let _ = writeln!(
            t,
            "| {target} | {} | {} | {} | {} |",
            o.run.get(target).copied().unwrap_or(0),
            o.findings.iter().filter(|f| &f.target == target).count(),
            o.unexplained(target),
            groups(o, target).len()
        );
    }
    for target in &o.targets {
        let _ = writeln!(t, "\n## {target}\n");
        let g = groups(o, target);
        if g.is_empty() {
            t.push_str("No disagreement.\n");
        }
        for (kind, x) in &g {
            let shrunk = o
                .shrunk
                .iter()
                .find(|s| &s.target == target && &s.kind == kind);
            let _ = writeln!(
                t,
                "- **{kind}** ({} cases, {} unexplained){}",
                x.n,
                x.unexplained,
                x.reason
                    .as_ref()
                    .map(|r| format!("; known: {r}"))
                    .unwrap_or_default()
            );
            match shrunk {
                Some(s) => {
                    let _ = writeln!(
                        t,
                        "  - shrunk ({} steps): `{}`\n  - {}: {}; {target}: {}",
                        s.steps,
                        cut(&s.request, 300),
                        o.oracle,
                        cut(&s.oracle, 200),
                        cut(&s.behaviour, 200)
                    );
                    if let Some(p) = &s.scenario {
                        let _ = writeln!(t, "  - scenario: `{p}`");
                    }
                }
                None => {
                    let _ = writeln!(t, "  - first case: `{}`", cut(&x.first, 300));
                }
            }
        }
    }
    if !o.skipped.is_empty() {
        t.push_str("\n## Not run\n\n");
        for (target, route, why) in &o.skipped {
            let _ = writeln!(t, "- {target} on {route}: {why}");
        }
    }
    t
}

/// Writes `report.md` and `report.json` into `dir`.
pub fn write(o: &Outcome, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(o)).map_err(|e| format!("{}: {e}", md.display()))?;
    let json = dir.join("report.json");
    let text = serde_json::to_string_pretty(o).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(|e| format!("{}: {e}", json.display()))
}
