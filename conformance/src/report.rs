//! Verdicts and reports: one results model (checks x targets), rendered as a terminal matrix,
//! Markdown, JSON and JUnit XML. Expected deviations per target come from
//! `scenarios/expected/<target>.toml` and turn a FAIL into XFAIL (shown, never hidden); a listed
//! deviation that no longer fails is an XPASS, which also fails the run (the list is stale).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tabled::builder::Builder;
use tabled::settings::Style;

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
    pub verdict: Verdict,
    /// What was observed, or why it was skipped or expected to fail.
    pub detail: String,
}

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

    pub fn unexpected(&self) -> Vec<&CheckResult> {
        self.results
            .iter()
            .filter(|r| r.verdict.is_unexpected())
            .collect()
    }

    /// Verdict counts per target.
    pub fn summary(&self) -> BTreeMap<String, BTreeMap<Verdict, usize>> {
        let mut m: BTreeMap<String, BTreeMap<Verdict, usize>> = BTreeMap::new();
        for r in &self.results {
            *m.entry(r.target.clone())
                .or_default()
                .entry(r.verdict)
                .or_default() += 1;
        }
        m
    }

    fn matrix(&self) -> Builder {
        let targets = self.targets();
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

    fn summary_lines(&self) -> Vec<String> {
        self.summary()
            .into_iter()
            .map(|(t, counts)| {
                let parts: Vec<String> = counts
                    .into_iter()
                    .map(|(v, n)| format!("{n} {}", v.as_str()))
                    .collect();
                format!("{t}: {}", parts.join(", "))
            })
            .collect()
    }

    /// The terminal matrix and a summary line per target.
    pub fn to_table(&self) -> String {
        let mut t = self.matrix().build();
        t.with(Style::rounded());
        let mut out = format!("{t}\n");
        for l in self.summary_lines() {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// The matrix as a section of a Markdown document (`## title`), between markers that
    /// [`merge_section`] finds again: the command that generated it, `intro`, the matrix, the
    /// summary, and the detail of every cell that has one (PASS cells included: with a real
    /// backend they say what was not judged).
    pub fn to_markdown_section(&self, key: &str, title: &str, intro: &str) -> String {
        let (begin, end) = section_markers(key);
        let mut t = self.matrix().build();
        t.with(Style::markdown());
        let mut out = format!("{begin}\n## {title}\n\n{intro}\n\n{t}\n\n### Summary\n\n");
        for l in self.summary_lines() {
            let _ = writeln!(out, "- {l}");
        }
        let notes: Vec<&CheckResult> = self
            .results
            .iter()
            .filter(|r| !r.detail.is_empty())
            .collect();
        write_details(&mut out, "\n### Details\n\n", &notes);
        out.push_str(&end);
        out.push('\n');
        out
    }

    /// The matrix as Markdown, with the details of every non-PASS cell below it.
    pub fn to_markdown(&self) -> String {
        let mut t = self.matrix().build();
        t.with(Style::markdown());
        let mut out = String::from("# FastCGI proxy conformance\n\n");
        let _ = writeln!(out, "{t}\n");
        out.push_str("## Summary\n\n");
        for l in self.summary_lines() {
            let _ = writeln!(out, "- {l}");
        }
        let notes: Vec<&CheckResult> = self
            .results
            .iter()
            .filter(|r| r.verdict != Verdict::Pass)
            .collect();
        write_details(&mut out, "\n## Details\n\n", &notes);
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.results).unwrap_or_else(|_| "[]".into())
    }

    /// JUnit XML: a test suite per target, a test case per check.
    pub fn to_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
        for t in self.targets() {
            let rs: Vec<&CheckResult> = self.results.iter().filter(|r| r.target == t).collect();
            let failures = rs.iter().filter(|r| r.verdict.is_unexpected()).count();
            let skipped = rs.iter().filter(|r| r.verdict == Verdict::Skip).count();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
                xml(&t),
                rs.len()
            );
            for r in rs {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\"",
                    xml(&t),
                    xml(&r.check)
                );
                match r.verdict {
                    Verdict::Fail | Verdict::Xpass => {
                        let _ = writeln!(
                            out,
                            "><failure message=\"{}\">{}</failure></testcase>",
                            r.verdict.as_str(),
                            xml(&r.detail)
                        );
                    }
                    Verdict::Skip => {
                        let _ =
                            writeln!(out, "><skipped message=\"{}\"/></testcase>", xml(&r.detail));
                    }
                    _ => {
                        let _ = writeln!(out, "/>");
                    }
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
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

    #[test]
    fn renders_every_format_from_one_model() {
        let mut r = Results::default();
        for (c, t, v) in [
            ("reuse/a", "ours", Verdict::Pass),
            ("reuse/a", "nginx", Verdict::Xfail),
            ("cgi/<b>", "ours", Verdict::Fail),
            ("cgi/<b>", "nginx", Verdict::Skip),
        ] {
            r.push(CheckResult {
                check: c.into(),
                target: t.into(),
                verdict: v,
                detail: "d&".into(),
            });
        }
        assert_eq!(r.targets(), ["ours", "nginx"]);
        let table = r.to_table();
        assert!(
            table.contains("XFAIL") && table.contains("ours: 1 PASS, 1 FAIL"),
            "{table}"
        );
        assert!(r.to_markdown().contains("| reuse/a |"));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json[2]["verdict"], "FAIL");
        let junit = r.to_junit();
        assert!(junit.contains("name=\"cgi/&lt;b&gt;\""), "{junit}");
        assert!(junit.contains("failures=\"1\""));
        assert_eq!(r.unexpected().len(), 1);
    }

    #[test]
    fn sections_are_replaced_in_place_and_found_again() {
        let mut r = Results::default();
        r.push(CheckResult {
            check: "reuse/a".into(),
            target: "ours (php-fpm)".into(),
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
