//! Verdicts and reports: one results model (checks x targets), rendered as a terminal matrix,
//! Markdown, JSON and JUnit XML. Expected deviations per target come from
//! `scenarios/expected/<target>.toml` and turn a FAIL into XFAIL (shown, never hidden); a listed
//! deviation that no longer fails is an XPASS, which also fails the run (the list is stale).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tabled::builder::Builder;
use tabled::settings::Style;

use crate::scenario::Level;

/// The outcome of one check against one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    /// Failed, and listed as an expected deviation of this target.
    Xfail,
    /// Listed as an expected deviation, but passed.
    Xpass,
    /// Not run: the target cannot express it, or is not installed.
    Skip,
    /// Observed and reported, not judged.
    Info,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Xfail => "XFAIL",
            Verdict::Xpass => "XPASS",
            Verdict::Skip => "SKIP",
            Verdict::Info => "INFO",
        }
    }

    /// Whether this verdict makes the run fail.
    pub fn is_unexpected(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Xpass)
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `<area>/<slug>`.
    pub check: String,
    pub target: String,
    /// The check's level: whether its failure fails the run ([`Gate`]).
    pub level: Level,
    pub verdict: Verdict,
    /// What was observed, or why it was skipped or expected to fail.
    pub detail: String,
}

/// Which failures fail the run: MUST and SHOULD always, COMPAT (Apache's behaviour without a
/// specification behind it) only when strict, INFO never. A proxy that is not Apache can then
/// run the suite in its CI and fail only for what makes it wrong or unsafe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gate {
    /// COMPAT failures count too (`--strict`).
    pub strict: bool,
}

impl Gate {
    /// Whether a failure at `level` fails the run.
    pub fn counts(self, level: Level) -> bool {
        match level {
            Level::Must | Level::Should => true,
            Level::Compat => self.strict,
            Level::Info => false,
        }
    }

    /// Whether `r` fails the run.
    pub fn fails(self, r: &CheckResult) -> bool {
        r.verdict.is_unexpected() && self.counts(r.level)
    }

    /// What a failure at `level` that does not count is, in words.
    fn not_counted(self, level: Level) -> &'static str {
        match level {
            Level::Compat => "COMPAT: not counted (--strict counts it)",
            _ => "INFO: never counted",
        }
    }
}

/// What each level means, in a line.
pub fn level_meaning(level: Level) -> &'static str {
    match level {
        Level::Must => "required by a specification, or what makes the feature work at all",
        Level::Should => "recommended by a specification",
        Level::Compat => {
            "what Apache httpd's mod_proxy_fcgi does, with no specification behind it \
             (counted only with --strict)"
        }
        Level::Info => "observed and reported, never counted",
    }
}

/// Every level, in the order reports show them.
pub const LEVELS: [Level; 4] = [Level::Must, Level::Should, Level::Compat, Level::Info];

/// A listed deviation: checks matching `check` (a glob with `*`) are expected to fail on this
/// target, for `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deviation {
    pub check: String,
    pub reason: String,
    /// The target fails this check only sometimes (a race it does not guard against): a pass is
    /// then PASS, not XPASS.
    #[serde(default)]
    pub intermittent: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    #[serde(default, rename = "deviation")]
    pub deviations: Vec<Deviation>,
}

impl Expected {
    /// `dir/<target>.toml`, or no deviations when the file does not exist.
    pub fn load(dir: &Path, target: &str) -> Result<Expected, String> {
        let path = dir.join(format!("{target}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Expected::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn deviation(&self, check: &str) -> Option<&Deviation> {
        self.deviations.iter().find(|d| glob_match(&d.check, check))
    }

    /// Applies the list to a raw verdict.
    pub fn resolve(&self, check: &str, raw: Verdict, detail: String) -> (Verdict, String) {
        match (self.deviation(check), raw) {
            (Some(d), Verdict::Fail) => (Verdict::Xfail, format!("{} ({detail})", d.reason)),
            (Some(d), Verdict::Pass) if d.intermittent => (Verdict::Pass, detail),
            (Some(d), Verdict::Pass) => (
                Verdict::Xpass,
                format!("listed as a deviation ({}) but passed", d.reason),
            ),
            (_, v) => (v, detail),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Verdict counts per target.
pub type Summary = BTreeMap<String, BTreeMap<Verdict, usize>>;

/// All results of a run, in the order checks and targets were first seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub results: Vec<CheckResult>,
}

impl Results {
    pub fn push(&mut self, r: CheckResult) {
        self.results.push(r);
    }

    fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut seen = Vec::new();
        for i in items {
            if !seen.iter().any(|s: &String| s == i) {
                seen.push(i.to_string());
            }
        }
        seen
    }

    pub fn checks(&self) -> Vec<String> {
        Self::ordered(self.results.iter().map(|r| r.check.as_str()))
    }

    pub fn targets(&self) -> Vec<String> {
        Self::ordered(self.results.iter().map(|r| r.target.as_str()))
    }

    pub fn get(&self, check: &str, target: &str) -> Option<&CheckResult> {
        self.results
            .iter()
            .find(|r| r.check == check && r.target == target)
    }

    /// Every FAIL and XPASS, counted or not.
    pub fn unexpected(&self) -> Vec<&CheckResult> {
        self.results
            .iter()
            .filter(|r| r.verdict.is_unexpected())
            .collect()
    }

    /// The results that fail the run under `gate`.
    pub fn failing(&self, gate: Gate) -> Vec<&CheckResult> {
        self.results.iter().filter(|r| gate.fails(r)).collect()
    }

    /// The process exit status under `gate`: 0, or 1 when a counted check failed.
    pub fn exit_status(&self, gate: Gate) -> u8 {
        u8::from(!self.failing(gate).is_empty())
    }

    /// The levels present, in report order.
    pub fn levels(&self) -> Vec<Level> {
        LEVELS
            .into_iter()
            .filter(|l| self.results.iter().any(|r| r.level == *l))
            .collect()
    }

    /// The results at `level` only.
    pub fn at_level(&self, level: Level) -> Results {
        Results {
            results: self
                .results
                .iter()
                .filter(|r| r.level == level)
                .cloned()
                .collect(),
        }
    }

    /// Verdict counts per target.
    pub fn summary(&self) -> Summary {
        let mut m = Summary::new();
        for r in &self.results {
            *m.entry(r.target.clone())
                .or_default()
                .entry(r.verdict)
                .or_default() += 1;
        }
        m
    }

    /// The matrix of these results, its columns `targets` (all of the run's, so that every
    /// level's matrix has the same columns).
    fn matrix(&self, targets: &[String]) -> Builder {
        let mut b = Builder::default();
        b.push_record(std::iter::once("check".to_string()).chain(targets.iter().cloned()));
        for c in self.checks() {
            let row = targets.iter().map(|t| {
                self.get(&c, t)
                    .map_or("-", |r| r.verdict.as_str())
                    .to_string()
            });
            b.push_record(std::iter::once(c.clone()).chain(row));
        }
        b
    }

    fn counts(counts: &BTreeMap<Verdict, usize>) -> String {
        let parts: Vec<String> = counts
            .iter()
            .map(|(v, n)| format!("{n} {}", v.as_str()))
            .collect();
        parts.join(", ")
    }

    /// A line per target: the counts, then per level.
    fn summary_lines(&self) -> Vec<String> {
        let per_level: Vec<(Level, Summary)> = self
            .levels()
            .into_iter()
            .map(|l| (l, self.at_level(l).summary()))
            .collect();
        self.summary()
            .into_iter()
            .map(|(t, counts)| {
                let levels: Vec<String> = per_level
                    .iter()
                    .filter_map(|(l, m)| m.get(&t).map(|c| format!("{l} {}", Self::counts(c))))
                    .collect();
                format!("{t}: {} ({})", Self::counts(&counts), levels.join("; "))
            })
            .collect()
    }

    /// The run's verdict under `gate`, in a line: what failed it, and the failures that did
    /// not count.
    pub fn verdict_line(&self, gate: Gate) -> String {
        let count = |rs: &[&CheckResult]| {
            let parts: Vec<String> = LEVELS
                .iter()
                .filter_map(|l| {
                    let n = rs.iter().filter(|r| r.level == *l).count();
                    (n > 0).then(|| format!("{n} {l}"))
                })
                .collect();
            parts.join(", ")
        };
        let failing = self.failing(gate);
        let ignored: Vec<&CheckResult> = self
            .unexpected()
            .into_iter()
            .filter(|r| !gate.fails(r))
            .collect();
        let mut line = if failing.is_empty() {
            "verdict: PASS (no MUST or SHOULD check failed".to_string()
                + if gate.strict {
                    ", nor any COMPAT one)"
                } else {
                    ")"
                }
        } else {
            format!(
                "verdict: FAIL ({} failed: {})",
                failing.len(),
                count(&failing)
            )
        };
        if !ignored.is_empty() {
            let _ = write!(
                line,
                "; not counted: {}{}",
                count(&ignored),
                if gate.strict {
                    ""
                } else {
                    " (--strict counts COMPAT)"
                }
            );
        }
        line
    }

    /// The terminal report: a matrix per level, a summary line per target and the verdict.
    pub fn to_table(&self, gate: Gate) -> String {
        let targets = self.targets();
        let mut out = String::new();
        for level in self.levels() {
            let at = self.at_level(level);
            let mut t = at.matrix(&targets).build();
            t.with(Style::rounded());
            let _ = writeln!(
                out,
                "{level} ({}): {}\n{t}",
                checks(at.checks().len()),
                level_meaning(level)
            );
        }
        for l in self.summary_lines() {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out, "{}", self.verdict_line(gate));
        out
    }

    /// A matrix per level under `heading` headings (`## MUST (100 checks)`), each with what the
    /// level means.
    fn level_matrices(&self, heading: &str) -> String {
        let targets = self.targets();
        let mut out = String::new();
        for level in self.levels() {
            let at = self.at_level(level);
            let mut t = at.matrix(&targets).build();
            t.with(Style::markdown());
            let _ = writeln!(
                out,
                "{heading} {level} ({})\n\n{}.\n\n{t}\n",
                checks(at.checks().len()),
                capitalised(level_meaning(level))
            );
        }
        out
    }

    /// The details of `notes`, a list per level under `heading` headings.
    fn level_details(&self, out: &mut String, heading: &str, notes: &[&CheckResult]) {
        for level in self.levels() {
            let at: Vec<&CheckResult> =
                notes.iter().copied().filter(|r| r.level == level).collect();
            write_details(out, &format!("\n{heading} {level}\n\n"), &at);
        }
    }

    /// The matrix as a section of a Markdown document (`## title`), between markers that
    /// [`merge_section`] finds again: the command that generated it, `intro`, the matrices by
    /// level, the summary, and the detail of every cell that has one (PASS cells included: with
    /// a real backend they say what was not judged).
    pub fn to_markdown_section(&self, key: &str, title: &str, intro: &str) -> String {
        let (begin, end) = section_markers(key);
        let mut out = format!(
            "{begin}\n## {title}\n\n{intro}\n\n{}### Summary\n\n",
            self.level_matrices("###")
        );
        for l in self.summary_lines() {
            let _ = writeln!(out, "- {l}");
        }
        let notes: Vec<&CheckResult> = self
            .results
            .iter()
            .filter(|r| !r.detail.is_empty())
            .collect();
        if !notes.is_empty() {
            out.push_str("\n### Details\n");
            self.level_details(&mut out, "####", &notes);
        }
        out.push_str(&end);
        out.push('\n');
        out
    }

    /// The matrices by level as Markdown, with the details of every non-PASS cell below them.
    pub fn to_markdown(&self, gate: Gate) -> String {
        let mut out = String::from("# FastCGI proxy conformance\n\n");
        out.push_str(
            "Checks are grouped by level. A FAIL at MUST or SHOULD fails the run; at COMPAT only \
             with `--strict`; INFO never.\n\n",
        );
        out.push_str(&self.level_matrices("##"));
        out.push_str("## Summary\n\n");
        for l in self.summary_lines() {
            let _ = writeln!(out, "- {l}");
        }
        let _ = writeln!(out, "\n{}", self.verdict_line(gate));
        let notes: Vec<&CheckResult> = self
            .results
            .iter()
            .filter(|r| r.verdict != Verdict::Pass)
            .collect();
        if !notes.is_empty() {
            out.push_str("\n## Details\n");
            self.level_details(&mut out, "###", &notes);
        }
        out
    }

    /// JSON: the verdict under `gate` and the results grouped by level.
    pub fn to_json(&self, gate: Gate) -> String {
        let levels: Vec<serde_json::Value> = self
            .levels()
            .into_iter()
            .map(|l| {
                json!({
                    "level": l,
                    "counted": gate.counts(l),
                    "results": self.at_level(l).results,
                })
            })
            .collect();
        let doc = json!({
            "strict": gate.strict,
            "passed": self.failing(gate).is_empty(),
            "verdict": self.verdict_line(gate),
            "levels": levels,
        });
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
    }

    /// JUnit XML: a test suite per target and level (`nginx: MUST`), a test case per check.
    /// Failures that do not count under `gate` (COMPAT without --strict) are skipped test
    /// cases saying so, so that a CI that reads the file agrees with the exit status.
    pub fn to_junit(&self, gate: Gate) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
        for t in self.targets() {
            for level in self.levels() {
                let rs: Vec<&CheckResult> = self
                    .results
                    .iter()
                    .filter(|r| r.target == t && r.level == level)
                    .collect();
                if rs.is_empty() {
                    continue;
                }
                let failures = rs.iter().filter(|r| gate.fails(r)).count();
                let skipped = rs
                    .iter()
                    .filter(|r| {
                        r.verdict == Verdict::Skip || (r.verdict.is_unexpected() && !gate.fails(r))
                    })
                    .count();
                let _ = writeln!(
                    out,
                    "  <testsuite name=\"{}: {level}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
                    xml(&t),
                    rs.len()
                );
                for r in rs {
                    let _ = write!(
                        out,
                        "    <testcase classname=\"{}.{level}\" name=\"{}\"",
                        xml(&t),
                        xml(&r.check)
                    );
                    match r.verdict {
                        Verdict::Fail | Verdict::Xpass if gate.fails(r) => {
                            let _ = writeln!(
                                out,
                                "><failure message=\"{} ({level})\">{}</failure></testcase>",
                                r.verdict.as_str(),
                                xml(&r.detail)
                            );
                        }
                        Verdict::Fail | Verdict::Xpass => {
                            let _ = writeln!(
                                out,
                                "><skipped message=\"{} {}: {}\"/></testcase>",
                                r.verdict.as_str(),
                                gate.not_counted(level),
                                xml(&r.detail)
                            );
                        }
                        Verdict::Skip => {
                            let _ = writeln!(
                                out,
                                "><skipped message=\"{}\"/></testcase>",
                                xml(&r.detail)
                            );
                        }
                        _ => {
                            let _ = writeln!(out, "/>");
                        }
                    }
                }
                out.push_str("  </testsuite>\n");
            }
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// `1 check`, `3 checks`.
fn checks(n: usize) -> String {
    if n == 1 {
        "1 check".into()
    } else {
        format!("{n} checks")
    }
}

/// `text` with its first letter upper-case.
fn capitalised(text: &str) -> String {
    let mut c = text.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The lines that open and close the generated section `key` of a Markdown document.
pub fn section_markers(key: &str) -> (String, String) {
    (
        format!("<!-- section {key}: generated, do not edit -->"),
        format!("<!-- end of section {key} -->"),
    )
}

/// `doc` with its section `key` replaced by `section` (from [`Results::to_markdown_section`]),
/// or with `section` appended when it has none.
pub fn merge_section(doc: &str, key: &str, section: &str) -> String {
    let (begin, end) = section_markers(key);
    if let Some(a) = doc.find(&begin)
        && let Some(len) = doc[a..].find(&end)
    {
        let mut b = a + len + end.len();
        if doc[b..].starts_with('\n') {
            b += 1;
        }
        return format!("{}{section}{}", &doc[..a], &doc[b..]);
    }
    let mut out = doc.trim_end().to_string();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(section);
    out
}

/// Every generated section of `doc`, markers included, in order.
pub fn sections(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(a) = rest.find("<!-- section ") {
        let Some(key) = rest[a + "<!-- section ".len()..].split(':').next() else {
            break;
        };
        let (_, end) = section_markers(key);
        let Some(len) = rest[a..].find(&end) else {
            break;
        };
        let b = a + len + end.len();
        out.push(format!("{}\n", &rest[a..b]));
        rest = &rest[b..];
    }
    out
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|&c| c == '\t' || c == '\n' || c >= ' ')
        .flat_map(|c| match c {
            '&' => "&amp;".chars().collect::<Vec<_>>(),
            '<' => "&lt;".chars().collect(),
            '>' => "&gt;".chars().collect(),
            '"' => "&quot;".chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// A Markdown list of results with their details under `heading`; nothing when there are none.
fn write_details(out: &mut String, heading: &str, notes: &[&CheckResult]) {
    if notes.is_empty() {
        return;
    }
    out.push_str(heading);
    for r in notes {
        let _ = writeln!(
            out,
            "- `{}` on {}: {} - {}",
            r.check,
            r.target,
            r.verdict.as_str(),
            r.detail.replace('\n', " ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("reuse/*", "reuse/keep-conn"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("cgi/*-dot", "cgi/first-dot"));
        assert!(!glob_match("cgi/*-dot", "cgi/first-dots"));
        assert!(!glob_match("reuse/a", "reuse/ab"));
    }

    #[test]
    fn deviations_turn_fail_into_xfail_and_stale_ones_into_xpass() {
        let e: Expected = toml::from_str(
            "[[deviation]]\ncheck = \"pathinfo/*\"\nreason = \"splits differently\"\n",
        )
        .unwrap();
        assert_eq!(
            e.resolve("pathinfo/first-dot", Verdict::Fail, "x".into()).0,
            Verdict::Xfail
        );
        assert_eq!(
            e.resolve("pathinfo/first-dot", Verdict::Pass, String::new())
                .0,
            Verdict::Xpass
        );
        assert_eq!(
            e.resolve("reuse/a", Verdict::Fail, String::new()).0,
            Verdict::Fail
        );
        assert!(Verdict::Xpass.is_unexpected() && !Verdict::Xfail.is_unexpected());
    }

    fn result(check: &str, target: &str, level: Level, verdict: Verdict) -> CheckResult {
        CheckResult {
            check: check.into(),
            target: target.into(),
            level,
            verdict,
            detail: "d&".into(),
        }
    }

    #[test]
    fn renders_every_format_from_one_model_grouped_by_level() {
        let mut r = Results::default();
        for (c, t, l, v) in [
            ("reuse/a", "ours", Level::Must, Verdict::Pass),
            ("reuse/a", "nginx", Level::Must, Verdict::Xfail),
            ("cgi/<b>", "ours", Level::Must, Verdict::Fail),
            ("cgi/<b>", "nginx", Level::Must, Verdict::Skip),
            ("pathinfo/c", "ours", Level::Compat, Verdict::Pass),
            ("pathinfo/c", "nginx", Level::Compat, Verdict::Fail),
        ] {
            r.push(result(c, t, l, v));
        }
        assert_eq!(r.targets(), ["ours", "nginx"]);
        assert_eq!(r.levels(), [Level::Must, Level::Compat]);
        let gate = Gate::default();
        let table = r.to_table(gate);
        let (must, compat) = (
            table.find("MUST (2 checks)"),
            table.find("COMPAT (1 check)"),
        );
        assert!(must.is_some() && must < compat, "{table}");
        // pathinfo/c is in the COMPAT matrix, not the MUST one.
        assert!(table.find("pathinfo/c") > compat, "{table}");
        assert!(
            table.contains("ours: 2 PASS, 1 FAIL (MUST 1 PASS, 1 FAIL; COMPAT 1 PASS)"),
            "{table}"
        );
        assert!(
            table.contains("verdict: FAIL (1 failed: 1 MUST); not counted: 1 COMPAT"),
            "{table}"
        );
        let md = r.to_markdown(gate);
        assert!(md.contains("| reuse/a |"), "{md}");
        assert!(md.find("## MUST") < md.find("## COMPAT"), "{md}");
        assert!(
            md.contains("### COMPAT\n\n- `pathinfo/c` on nginx: FAIL"),
            "{md}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json(gate)).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["levels"][0]["level"], "MUST");
        assert_eq!(json["levels"][0]["results"][2]["verdict"], "FAIL");
        assert_eq!(json["levels"][1]["level"], "COMPAT");
        assert_eq!(json["levels"][1]["counted"], false);
        let junit = r.to_junit(gate);
        assert!(junit.contains("name=\"cgi/&lt;b&gt;\""), "{junit}");
        assert!(
            junit.contains("<testsuite name=\"ours: MUST\" tests=\"2\" failures=\"1\""),
            "{junit}"
        );
        // The COMPAT failure is reported, but not as a failure.
        assert!(
            junit.contains(
                "<testsuite name=\"nginx: COMPAT\" tests=\"1\" failures=\"0\" skipped=\"1\">"
            ),
            "{junit}"
        );
        assert!(junit.contains("FAIL COMPAT: not counted"), "{junit}");
        let strict = r.to_junit(Gate { strict: true });
        assert!(
            strict.contains("<testsuite name=\"nginx: COMPAT\" tests=\"1\" failures=\"1\""),
            "{strict}"
        );
        assert_eq!(r.unexpected().len(), 2);
        assert_eq!(r.failing(gate).len(), 1);
    }

    #[test]
    fn the_exit_status_counts_must_and_should_and_compat_only_when_strict() {
        let (lax, strict) = (Gate { strict: false }, Gate { strict: true });
        let run = |cells: &[(Level, Verdict)]| {
            let mut r = Results::default();
            for (i, (l, v)) in cells.iter().enumerate() {
                r.push(result(&format!("a/c{i}"), "external", *l, *v));
            }
            (r.exit_status(lax), r.exit_status(strict))
        };
        use Level::{Compat, Must, Should};
        use Verdict::{Fail, Pass, Skip, Xfail, Xpass};
        assert_eq!(run(&[(Must, Pass), (Compat, Pass)]), (0, 0));
        // Only COMPAT fails: the proxy is not Apache, which is no failure unless asked for.
        assert_eq!(run(&[(Must, Pass), (Compat, Fail)]), (0, 1));
        assert_eq!(run(&[(Must, Fail), (Compat, Pass)]), (1, 1));
        assert_eq!(run(&[(Should, Fail)]), (1, 1));
        assert_eq!(run(&[(Must, Xpass)]), (1, 1));
        assert_eq!(run(&[(Compat, Xpass)]), (0, 1));
        // XFAIL and SKIP never fail a run; INFO is never counted.
        assert_eq!(
            run(&[(Must, Xfail), (Must, Skip), (Level::Info, Fail)]),
            (0, 0)
        );
    }

    #[test]
    fn sections_are_replaced_in_place_and_found_again() {
        let mut r = Results::default();
        r.push(CheckResult {
            check: "reuse/a".into(),
            target: "ours (php-fpm)".into(),
            level: Level::Must,
            verdict: Verdict::Pass,
            detail: "not judged: connections".into(),
        });
        let section = r.to_markdown_section("php-fpm", "With php-fpm", "Run with `x`.");
        assert!(section.contains("| ours (php-fpm) |"), "{section}");
        assert!(section.contains("not judged: connections"), "{section}");
        let doc = "# Report\n\n| a |\n";
        let once = merge_section(doc, "php-fpm", &section);
        assert!(once.starts_with(doc) && once.ends_with(&section), "{once}");
        let again = merge_section(&once, "php-fpm", &section);
        assert_eq!(again, once);
        let other = merge_section(
            &once,
            "libfcgi",
            "<!-- section libfcgi: generated, do not edit -->\nL\n<!-- end of section libfcgi -->\n",
        );
        assert_eq!(sections(&other).len(), 2);
        assert_eq!(sections(&other)[0], section);
    }
}
